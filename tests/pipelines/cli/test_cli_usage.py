"""Issue #16, the CLI: usage errors are one line and exit 2, `-v` after the sub-command, help
with clean metavars and the defaults that apply, options checked before any step runs,
`ffm train` never discards its model, `hpo worker` logs one line per trial.

Everything runs `ctrflow` as a real subprocess (`python -m ctrflow.pipelines.cli`).
"""

from __future__ import annotations

import inspect
import os
import pathlib
import re
import socket
import subprocess
import sys

import pytest

from tests.testkit.hpo_data import tiny_dataset


def ctrflow(
    *args: str | pathlib.Path, cwd: pathlib.Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctrflow.pipelines.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
        env=env,
    )


def usage_error(proc: subprocess.CompletedProcess[str], command: str) -> str:
    """The one stderr line of a usage error (exit 2), after "ctrflow COMMAND: "."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "usage:" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    prefix = f"ctrflow {command}: "
    assert len(lines) == 1 and lines[0].startswith(prefix), proc.stderr
    return lines[0][len(prefix) :]


def test_verbose_is_accepted_after_the_subcommand(tmp_path: pathlib.Path) -> None:
    # -v is parsed (the error is about --workers, not "unrecognized arguments: -v"), and
    # the check of --workers comes before any step: the work directory is never made.
    work = tmp_path / "work"
    proc = ctrflow("run", "-v", "--workers", "0", "--workdir", work)
    assert usage_error(proc, "run") == "--workers must be between 1 and 50"
    assert not work.exists()
    from ctrflow.pipelines.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["run", "-v"]).verbose is True  # streams the steps' output
    assert parser.parse_args(["-v", "run"]).verbose is True
    assert parser.parse_args(["run"]).verbose is False


@pytest.mark.parametrize(
    ("args", "command", "words"),
    [
        (["run", "--bogus"], "run", "unrecognized arguments: --bogus"),
        (["run", "--workers", "many"], "run", "argument --workers: invalid int value: 'many'"),
        (
            ["submit", "--host", "http://x"],
            "submit",
            "the following arguments are required: --data",
        ),
        (["schedule", "list", "--cron", "0 3 * * 1"], "schedule list", "unrecognized arguments"),
        (["schedule", "apply", "--cron", "0 3 * * 1"], "schedule apply", "required: --name"),
        (["schedule", "delete"], "schedule delete", "required: ID"),
        (["ffm", "predict", "m"], "ffm predict", "required: data, -o/--output"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], command: str, words: str) -> None:
    assert words in usage_error(ctrflow(*args), command)


@pytest.mark.parametrize(
    ("storage", "words"),
    [
        ("mysql://u:secret@db/optuna", "backend 'mysql' is not supported"),
        ("postgresql+asyncpg://db/optuna", "driver 'postgresql+asyncpg' is not available"),
        ("not a url", "--storage is not a database URL"),
    ],
)
def test_run_checks_storage_before_any_step(
    storage: str, words: str, tmp_path: pathlib.Path
) -> None:
    work = tmp_path / "work"
    message = usage_error(ctrflow("run", "--storage", storage, "--workdir", work), "run")
    assert words in message
    assert "secret" not in message
    assert not work.exists()  # no data generated, no step started


def test_run_checks_data_and_mlflow_uri_before_any_step(tmp_path: pathlib.Path) -> None:
    work = tmp_path / "work"
    missing = tmp_path / "logs" / "*.csv"
    assert "no file matches" in usage_error(
        ctrflow("run", "--data", missing, "--workdir", work), "run"
    )
    assert "scheme 'ftp' is not a tracking store" in usage_error(
        ctrflow("run", "--mlflow-uri", "ftp://x/y", "--workdir", work), "run"
    )
    # Every step would log a password in the URI; MLflow takes it from the environment.
    message = usage_error(
        ctrflow("run", "--mlflow-uri", "http://u:s3cret@127.0.0.1:5000", "--workdir", work), "run"
    )
    assert "MLFLOW_TRACKING_PASSWORD" in message and "s3cret" not in message
    # Nothing listens: found now, not after minutes of MLflow's retries in each step.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert "no tracking server answers" in usage_error(
        ctrflow("run", "--mlflow-uri", f"http://127.0.0.1:{port}", "--workdir", work), "run"
    )
    assert not work.exists()


def test_help_shows_clean_metavars_and_the_defaults_that_apply() -> None:
    from ctrflow.pipelines.ctr_pipeline import build_pipeline

    submit = ctrflow("submit", "--help").stdout
    run = ctrflow("run", "--help").stdout
    assert "PARAM_" not in submit + run
    # submit: the compiled defaults, as the pipeline function declares them.
    compiled = {
        name: p.default
        for name, p in inspect.signature(build_pipeline().pipeline_func).parameters.items()
    }
    flat = " ".join(submit.split())
    for flag, name in (("--workers N", "n_workers"), ("--budget N", "trial_budget")):
        assert re.search(rf"{flag} .*?\(default: {compiled[name]}\)", flat), (flag, flat)
    assert "--data URI raw logs" in flat and "[--data " not in flat  # shown as required
    assert "ctrflow-config) (default" not in flat  # one default per option
    assert "(default: $KF_PIPELINES_ENDPOINT)" in flat
    # run: its smaller local defaults.
    flat = " ".join(run.split())
    assert re.search(r"--workers N .*?\(default: 2\)", flat)
    assert re.search(r"--budget N .*?\(default: 16\)", flat)
    assert re.search(r"--rows ROWS .*?\(default: 50000\)", flat)
    # schedule list offers only what it uses.
    listing = ctrflow("schedule", "list", "--help").stdout
    assert "--cron" not in listing and "--workers" not in listing and "--data" not in listing


def test_ffm_train_without_output_writes_a_default_path_and_never_overwrites(
    tmp_path: pathlib.Path,
) -> None:
    data = tiny_dataset(tmp_path / "train", 200, seed=1)
    proc = ctrflow("ffm", "train", data, "--epochs", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "model written to model.ffm (default path; -o to choose)" in proc.stdout
    written = (tmp_path / "model.ffm").read_bytes()
    proc = ctrflow("ffm", "train", data, "--epochs", "2", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "ctrflow ffm train: model.ffm exists: pass -o PATH to overwrite it or to write elsewhere"
    )
    assert (tmp_path / "model.ffm").read_bytes() == written


def test_hpo_worker_logs_each_trial_once(tmp_path: pathlib.Path) -> None:
    train = tiny_dataset(tmp_path / "train", 300, seed=1)
    valid = tiny_dataset(tmp_path / "valid", 150, seed=2)
    env = dict(os.environ, CTRFLOW_STORAGE_URL=f"sqlite:///{tmp_path / 'optuna.db'}")
    created = ctrflow(
        "hpo", "create", "--study", "s", "--model-type", "ffm", "--budget", "3", env=env
    )
    assert created.returncode == 0, created.stderr
    proc = ctrflow(
        "hpo", "worker", "--study", "s", "--train", train, "--valid", valid, "--progress", "off",
        env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    per_trial = [line for line in proc.stderr.splitlines() if re.search(r"[Tt]rial \d", line)]
    numbers = [re.search(r"[Tt]rial (\d+)", line).group(1) for line in per_trial]  # type: ignore[union-attr]
    assert sorted(numbers) == ["0", "1", "2"], proc.stderr


@pytest.mark.parametrize("margin", ["nan", "inf", "-inf", "-0.01"])
def test_run_refuses_a_promotion_margin_the_gate_would_refuse(
    margin: str, tmp_path: pathlib.Path
) -> None:
    # The register step, minutes later, would refuse it (or, for NaN and inf, keep every
    # champion forever). The missing --data would be the error if the margin were not checked.
    work = tmp_path / "work"
    proc = ctrflow(
        "run", f"--promotion-margin={margin}", "--data", tmp_path / "none.csv", "--workdir", work
    )
    message = usage_error(proc, "run")
    assert message == f"--promotion-margin must be a finite number >= 0, got {float(margin)}"
    assert not work.exists()


def test_run_and_submit_accept_a_zero_margin_and_submit_refuses_nan(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "none.csv"
    assert "no such file" in usage_error(
        ctrflow("run", "--promotion-margin", "0", "--data", missing, "--workdir", tmp_path / "w"),
        "run",
    )
    # Refused before any connection: nothing listens on this host.
    message = usage_error(
        ctrflow(
            "submit",
            "--promotion-margin",
            "nan",
            "--data",
            "gs://b/x",
            "--host",
            "http://127.0.0.1:9",
        ),
        "submit",
    )
    assert message == "--promotion-margin must be a finite number >= 0, got nan"


def test_building_the_command_line_imports_no_kubernetes_client() -> None:
    """Every `ctrflow` command builds the whole parser first; the Kubernetes client library
    (0.3 s of import) belongs to the commands that talk to a cluster, not to, say, `ffm train`."""
    probe = (
        "import sys; from ctrflow.pipelines.cli import build_parser; build_parser();"
        " print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == "[]", proc.stdout
    # ...and the commands that need it still have it: `cluster check` reaches its API call.
    check = ctrflow("cluster", "check", "--kubeconfig", "/nonexistent/kubeconfig")
    assert check.returncode == 1 and "does not exist" in check.stderr, check.stderr
