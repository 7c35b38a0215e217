"""The project image (images/Dockerfile): lint, install steps shared with CI, tag, portability.

No Docker engine runs on this machine, so the image is not built here. Instead: hadolint lints
the Dockerfile; the Dockerfile's pip steps are checked to use the constraints file and build
tools that `make install` (hence CI) uses; every runtime dependency of the installed ctrflow is
pinned in that file at the version the tests run with; `make image` tags the image with the
reference `ctrflow compile` writes by default; and the builder stage's wheel build is run for
real, checking the wheel's contents and that nothing was compiled with -march=native.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import ctrflow
from ctrflow.pipelines._image import DEFAULT_REGISTRY, REGISTRY_ENV, default_image
from tests.testkit.paths import REPO_ROOT as ROOT

DOCKERFILE = ROOT / "images" / "Dockerfile"
BIN = pathlib.Path(sys.executable).parent

pytestmark = pytest.mark.timeout(600)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for keyword, args in _instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            current = args.split()[-1] if " AS " in args.upper() else args
            stages[current] = []
        elif current is not None:
            stages[current].append((keyword, args))
    return stages


def _pip_commands(run_args: str) -> list[list[str]]:
    """The `pip install|wheel ...` commands of one RUN instruction, as argument lists."""
    lexer = shlex.shlex(run_args, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = []
    words: list[str] = []
    for token in [*lexer, ";"]:
        if token in ("&&", "||", ";", "|", "{", "}"):
            if len(words) >= 2 and words[0] == "pip" and words[1] in ("install", "wheel"):
                commands.append(words)
            words = []
        elif not token.startswith("--mount="):
            words.append(token)
    return commands


def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail(f"{name} not found in {BIN} or on PATH")
    return found


# -- lint --------------------------------------------------------------------------------------
def test_hadolint_passes() -> None:
    proc = subprocess.run(
        [_tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_fails_on_a_bad_dockerfile(tmp_path: pathlib.Path) -> None:
    """The linter runs and would fail (so the test above can)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    proc = subprocess.run(
        [_tool("hadolint"), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout and "DL3013" in proc.stdout


# -- the image's install steps are CI's ------------------------------------------------------
def _makefile_variable(name: str) -> str:
    match = re.search(rf"^{name}\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, f"Makefile has no {name}"
    return match.group(1)


def test_dockerfile_installs_with_the_constraints_file_ci_uses() -> None:
    constraints = _makefile_variable("CONSTRAINTS")
    assert constraints == "constraints.txt"
    makefile = (ROOT / "Makefile").read_text()
    ci_installs = [
        line
        for line in re.findall(r"pip install ([^\n]*)", makefile)
        if "--upgrade pip" not in line
    ]
    assert ci_installs and all("-c $(CONSTRAINTS)" in line for line in ci_installs)

    stages = _stages()
    assert set(stages) == {"builder", "runtime"}
    # Where constraints.txt lives in each stage: copied into the builder, bind-mounted at run.
    mounted = {"constraints.txt"}
    for _, args in stages["builder"] + stages["runtime"]:
        for mount in re.findall(r"--mount=(\S+)", args):
            fields = dict(f.split("=", 1) for f in mount.split(",") if "=" in f)
            if fields.get("source") == constraints and "from" not in fields:
                mounted.add(fields["target"])
    commands = [
        cmd
        for stage in stages.values()
        for keyword, args in stage
        if keyword == "RUN"
        for cmd in _pip_commands(args)
    ]
    assert len(commands) == 4
    for cmd in commands:
        if "--no-deps" in cmd:
            continue  # builds the ctrflow wheel alone; its dependencies come next, constrained
        flag = cmd.index("-c")
        assert cmd[flag + 1] in mounted, f"{' '.join(cmd)} is not constrained by {constraints}"

    # The build tools: pyproject's build requirements, which `make install` installs too (with
    # ninja, which meson-python would otherwise fetch), and the same --no-build-isolation build.
    build_requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    tools = {canonicalize_name(Requirement(r).name) for r in build_requires["requires"]}
    tool_cmd = next(c for c in commands if "meson-python" in c)
    assert {canonicalize_name(t) for t in tool_cmd[4:]} == tools | {"ninja"}
    assert '"build-system"]["requires"]' in makefile and "ninja" in makefile
    assert "--no-build-isolation" in makefile
    assert any("--no-build-isolation" in c for c in commands)
    # The runtime stage installs offline, only from wheels the builder made.
    runtime_install = next(
        c for s in stages["runtime"] if s[0] == "RUN" for c in _pip_commands(s[1])
    )
    assert "--no-index" in runtime_install
    assert runtime_install[-1] == "ctrflow==${VERSION}"


def _runtime_closure() -> dict[str, str]:
    """Installed version of every distribution ctrflow needs at run time (no test/dev extras)."""
    found: dict[str, str] = {}
    pending: list[tuple[str, frozenset[str]]] = [("ctrflow", frozenset())]
    visited: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, extras = pending.pop()
        key = (canonicalize_name(name), extras)
        if key in visited:
            continue
        visited.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} (a runtime dependency of ctrflow) is not installed")
        found[canonicalize_name(dist.metadata["Name"])] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not any(
                req.marker.evaluate({"extra": e}) for e in (extras or {""})
            ):
                continue
            pending.append((req.name, frozenset(req.extras)))
    return found


def test_every_runtime_dependency_is_pinned_at_the_tested_version() -> None:
    """What the tests run with is what the image ships."""
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    closure: dict[str, str] = dict(_runtime_closure())
    closure.pop("ctrflow")
    assert {"kfp", "mlflow", "optuna", "optuna-dashboard", "kubernetes"} <= set(closure)
    unpinned = sorted(set(closure) - set(pins))
    assert not unpinned, f"not pinned in constraints.txt: {unpinned}"
    differs = {n: (v, pins[n]) for n, v in closure.items() if pins[n] != v}
    assert not differs, f"installed (tested) vs pinned: {differs}"


def test_runtime_stage_essentials() -> None:
    text = DOCKERFILE.read_text()
    assert not [a for _, a in _instructions(text) if "native" in a]  # no -march/-mtune=native
    default_base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M)
    assert default_base and default_base.group(1).startswith("python:3.11-slim")
    runtime = _stages()["runtime"]
    joined = "\n".join(f"{k} {a}" for k, a in runtime)
    assert re.search(r'org\.opencontainers\.image\.version="\$\{VERSION\}"', joined)
    assert re.search(r"PYTHONUNBUFFERED=1", joined)
    assert "libgomp1" in joined
    assert not re.search(r"\b(gcc|g\+\+|build-essential)\b", joined)
    users = [a for k, a in runtime if k == "USER"]
    assert users and re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[-1])
    assert runtime[-1][0] in ("CMD", "ENTRYPOINT")
    assert any(k == "ARG" and a == "VERSION" for k, a in runtime)


def test_dockerignore_lets_every_copied_path_through() -> None:
    ignore = (ROOT / "images" / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # everything else stays out of the build context
    for stage in _stages().values():
        for keyword, args in stage:
            if keyword == "COPY" and "--from" not in args:
                sources = args.split()[:-1]
                assert sources and all(s.rstrip("/") in allowed for s in sources), args


# -- the tag ---------------------------------------------------------------------------------
def _make(*args: str, registry: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in (REGISTRY_ENV, "REGISTRY", "IMAGE")}
    if registry is not None:
        env[REGISTRY_ENV] = registry
    proc = subprocess.run(
        ["make", "-s", "-C", str(ROOT), *args], capture_output=True, text=True, check=False, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("registry", [None, "registry.example:5000/ml-team"])
def test_make_image_tags_what_compile_writes_by_default(
    registry: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if registry is None:
        monkeypatch.delenv(REGISTRY_ENV, raising=False)
    else:
        monkeypatch.setenv(REGISTRY_ENV, registry)
    expected = default_image()
    assert expected == f"{registry or DEFAULT_REGISTRY}/ctrflow:{ctrflow.__version__}"
    assert _make("image-ref", registry=registry).strip() == expected
    build = _make("-n", "image", registry=registry)
    words = shlex.split(build.replace("\\\n", " "))
    # docker where its daemon runs, else podman or buildah: the same `build` flags.
    assert words[0] in ("docker", "podman", "buildah") and words[1] == "build"
    assert words[words.index("-f") + 1] == "images/Dockerfile"
    assert words[words.index("-t") + 1] == expected
    assert f"VERSION={ctrflow.__version__}" in words
    assert words[-1] == "."


def test_default_image_rejects_a_blank_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REGISTRY_ENV, "has space")
    with pytest.raises(ValueError, match="invalid image registry"):
        default_image()


# -- the builder stage, for real ---------------------------------------------------------------
@pytest.mark.slow
def test_builder_stage_wheel_is_complete_and_portable(tmp_path: pathlib.Path) -> None:
    """Runs the builder's wheel build (`pip wheel --no-build-isolation --no-deps`) on this
    checkout and inspects the result."""
    build_dir = tmp_path / "build"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-build-isolation",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            f"-Cbuild-dir={build_dir}",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = tmp_path.glob(f"ctrflow-{ctrflow.__version__}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        init = archive.read("ctrflow/__init__.py").decode()
        entry_points = archive.read(f"ctrflow-{ctrflow.__version__}.dist-info/entry_points.txt")
        wheel_metadata = archive.read(f"ctrflow-{ctrflow.__version__}.dist-info/METADATA")
    assert any(re.fullmatch(r"ffm_ext/_core\..*\.so", n) for n in names)
    for module in (
        "ctrflow/pipelines/cli/__init__.py",
        "ctrflow/pipelines/k8s/launch.py",
        "ctrflow/pipelines/_image.py",
        "ctrflow/components/__init__.py",
    ):
        assert module in names
    assert not [n for n in names if n.endswith((".pyx", ".c", "meson.build", ".in"))]
    assert f'__version__ = "{ctrflow.__version__}"' in init
    assert b"ctrflow = ctrflow.pipelines.cli:main" in entry_points
    assert b"Requires-Dist: kfp" in wheel_metadata

    commands = json.loads((build_dir / "compile_commands.json").read_text())
    assert commands
    for entry in commands:
        assert "-march=native" not in entry["command"], entry["file"]
        assert "-mtune=native" not in entry["command"], entry["file"]
