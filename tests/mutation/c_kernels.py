"""Mutation spot-check of the C kernels: each mutation must make a test fail.

Run: ``python -m tests.mutation.c_kernels`` (or ``make mutation-c``) from the repository root,
in an editable install (importing ffm_ext rebuilds the changed C sources). Not a pytest module:
it edits the C sources in place, one mutation at a time, so it refuses to start when a file it
would edit has uncommitted changes, and puts every file back in a ``finally``.

For each mutation: apply it, rebuild (a mutant that does not compile is a broken entry here, an
error, not a kill), run the fast tests that guard that code, and report killed (some test
failed) or survived (all passed). The unmutated sources must pass the same tests first.
Exit status: 0 every mutation killed, 1 some survived, 2 the check could not run.

Mutations in code a CPU does not run (the AVX-512 build on a CPU without AVX-512) are reported
as not run rather than survived: a test that skips cannot kill them.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from xml.etree import ElementTree

REPO_ROOT = Path(__file__).resolve().parents[2]
HOT = "ffm_ext/ffm_hot_impl.h"
KERNELS = "ffm_ext/ffm_kernels.c"
PARSER = "ffm_ext/libffm_text.c"

# The tests that guard each part: the NumPy reference trainer (every ISA build, via FFM_ISA),
# training quality and the 2-thread replica folds, the LIBFFM text parser, freed memory.
KERNEL_TESTS = ("tests/ffm_ext/test_reference.py", "tests/ffm_ext/test_training.py")
FOLD_TESTS = ("tests/ffm_ext/test_training.py",)
PARSER_TESTS = ("tests/ffm_ext/test_parser.py",)
MEMORY_TESTS = ("tests/ffm_ext/test_memory.py",)
TEST_TIMEOUT = 900  # seconds; a mutant that hangs the tests counts as killed (by the timeout)


@dataclass(frozen=True)
class Mutation:
    name: str
    group: str
    path: str
    edits: tuple[tuple[str, str], ...]  # (original text, mutated text); each must occur once
    tests: tuple[str, ...]
    isa: str | None = None  # the hot-loop build the mutated code is in, when only one


# Hot-loop snippets as they are in ffm_hot_impl.h (checked before anything is changed).
_PAIR_W = (
    "        *w1 = x1 - d1 * eta_rsqrt4(s1, eta);\n        *w2 = x2 - d2 * eta_rsqrt4(s2, eta);\n"
)
_PAIR_G = "        const v4 s1 = *g1 + d1 * d1;\n        const v4 s2 = *g2 + d2 * d2;\n"
_AVX2_G = (
    "    const __m256 s1 = _mm256_fmadd_ps(d1, d1, *g1);\n"
    "    const __m256 s2 = _mm256_fmadd_ps(d2, d2, *g2);\n"
)
_AVX512_G = (
    "    const __m512 s1 = _mm512_fmadd_ps(d1, d1, load_four(p1, gs, adjacent));\n"
    "    const __m512 s2 = _mm512_fmadd_ps(d2, d2, load4(p2[0] + gs, p2[1] + gs, p2[2] + gs, "
    "p2[3] + gs));\n"
)
_FOLD = "            const float merged = shared[i] + (rep[i] - was[i]);\n"
_SCALE = "    *scale = (normalize && norm > 0.0f) ? 1.0f / norm : 1.0f;\n"
_GS = "    const int64_t gs = model->g - model->w;\n"
_KR = "        const float kr = kappa * r;\n"

MUTATIONS: tuple[Mutation, ...] = (
    # ---- AdaGrad update: w -= eta * g / sqrt(G), G += g * g, G starting at 1
    Mutation(
        "adagrad: no 1/sqrt(G) scaling (pair update)", "adagrad", HOT,
        ((_PAIR_W, _PAIR_W.replace("eta_rsqrt4(s1, eta)", "eta").replace("eta_rsqrt4(s2, eta)",
                                                                           "eta")),),
        KERNEL_TESTS,
    ),
    Mutation(
        "adagrad: 1/G instead of 1/sqrt(G) (pair update)", "adagrad", HOT,
        ((_PAIR_W, _PAIR_W.replace("eta_rsqrt4(s1, eta)", "(eta / s1)")
          .replace("eta_rsqrt4(s2, eta)", "(eta / s2)")),),
        KERNEL_TESTS,
    ),
    Mutation(
        "adagrad: no 1/sqrt(G) scaling (AVX2 two- and four-pair updates)", "adagrad", HOT,
        (("eta_rsqrt8(s1, eta), w1);", "eta, w1);"), ("eta_rsqrt8(s2, eta), w2);", "eta, w2);")),
        KERNEL_TESTS, isa="avx2",
    ),
    Mutation(
        "adagrad: no 1/sqrt(G) scaling (AVX-512 four-pair update)", "adagrad", HOT,
        (("eta_rsqrt16(s1, eta), x1)", "eta, x1)"), ("eta_rsqrt16(s2, eta), x2)", "eta, x2)")),
        KERNEL_TESTS, isa="avx512",
    ),
    Mutation(
        "adagrad: 1/x estimate instead of 1/sqrt(x) (AVX2 step sizes, every width)", "adagrad",
        HOT,
        (("return (v4)_mm_rsqrt_ps((__m128)x) * eta;", "return (v4)_mm_rcp_ps((__m128)x) * eta;"),
         ("_mm256_mul_ps(_mm256_rsqrt_ps(x), eta);", "_mm256_mul_ps(_mm256_rcp_ps(x), eta);")),
        KERNEL_TESTS, isa="avx2",
    ),
    Mutation(
        "adagrad: the 128-bit step sizes 0.05% too large (AVX2)", "adagrad", HOT,
        (("return (v4)_mm_rsqrt_ps((__m128)x) * eta;",
          "return (v4)_mm_rsqrt_ps((__m128)x) * (eta * 1.0005f);"),),
        KERNEL_TESTS, isa="avx2",
    ),
    Mutation(
        "adagrad: G += g instead of g*g (pair update)", "adagrad", HOT,
        ((_PAIR_G, _PAIR_G.replace("d1 * d1", "d1").replace("d2 * d2", "d2")),), KERNEL_TESTS,
    ),
    Mutation(
        "adagrad: G += g instead of g*g (AVX2 two- and four-pair updates)", "adagrad", HOT,
        ((_AVX2_G, _AVX2_G.replace("_mm256_fmadd_ps(d1, d1, ", "_mm256_add_ps(d1, ")
          .replace("_mm256_fmadd_ps(d2, d2, ", "_mm256_add_ps(d2, ")),),
        KERNEL_TESTS, isa="avx2",
    ),
    Mutation(
        "adagrad: G += g instead of g*g (AVX-512 four-pair update)", "adagrad", HOT,
        ((_AVX512_G, _AVX512_G.replace("_mm512_fmadd_ps(d1, d1, ", "_mm512_add_ps(d1, ")
          .replace("_mm512_fmadd_ps(d2, d2, ", "_mm512_add_ps(d2, ")),),
        KERNEL_TESTS, isa="avx512",
    ),
    Mutation(
        "adagrad: G never stored (pair update)", "adagrad", HOT,
        (("        *g1 = s1;\n        *g2 = s2;\n", ""),), KERNEL_TESTS,
    ),
    Mutation(
        "adagrad: accumulators start at 0, not 1", "adagrad", KERNELS,
        (("ffm_fill(state + 2 * j * block + block, block, 1.0f);",
          "ffm_fill(state + 2 * j * block + block, block, 0.0f);"),
         ("f * model->kp, model->kp, 1.0f);", "f * model->kp, model->kp, 0.0f);")),
        KERNEL_TESTS,
    ),
    Mutation(
        "adagrad: eta halved", "adagrad", HOT,
        ((_GS, _GS + "    eta *= 0.5f;\n"),),
        KERNEL_TESTS,
    ),
    Mutation(
        "adagrad: L2 term dropped from the gradient (pair update)", "adagrad", HOT,
        (("        const v4 d1 = lambda * x1 + kv * x2;\n", "        const v4 d1 = kv * x2;\n"),
         ("        const v4 d2 = lambda * x2 + kv * x1;\n", "        const v4 d2 = kv * x1;\n")),
        KERNEL_TESTS,
    ),
    # ---- the dense four-pair paths that move 128-bit lanes with loads and stores (Zen 1)
    Mutation(
        "dense update: two partners' weights stored swapped (AVX2 lane loads)", "lanes", HOT,
        (("    store2(pb, pb1, x2);\n", "    store2(pb1, pb, x2);\n"),),
        KERNEL_TESTS, isa="avx2_lanes",
    ),
    Mutation(
        "dense margin: two partners swapped (AVX2 lane loads)", "lanes", HOT,
        (("const __m256 lo = load2(q0, q1), hi", "const __m256 lo = load2(q1, q0), hi"),),
        KERNEL_TESTS, isa="avx2_lanes",
    ),
    # ---- instance normalisation: r = 1 / sum(v^2), in the margin and in the gradient
    Mutation(
        "normalisation: r = 1/sqrt(sum v^2) instead of 1/sum v^2", "normalisation", HOT,
        ((_SCALE, _SCALE.replace("1.0f / norm", "1.0f / sqrtf(norm)")),), KERNEL_TESTS,
    ),
    Mutation(
        "normalisation: r = 1/(token count) instead of 1/sum v^2", "normalisation", HOT,
        ((_SCALE, _SCALE.replace("1.0f / norm", "1.0f / (float)count")),), KERNEL_TESTS,
    ),
    Mutation(
        "normalisation: none (r = 1)", "normalisation", HOT,
        ((_SCALE, "    (void)normalize;\n    *scale = 1.0f;\n"),), KERNEL_TESTS,
    ),
    Mutation(
        "normalisation: r left out of the margin", "normalisation", HOT,
        (("    return r * sum;\n", "    (void)r;\n    return sum;\n"),),
        KERNEL_TESTS,
    ),
    Mutation(
        "normalisation: r left out of the gradient", "normalisation", HOT,
        ((_KR, _KR.replace("kappa * r", "kappa")),),
        KERNEL_TESTS,
    ),
    # ---- label parsing: exactly 0, 1, -1 (-> 0) and +1 (-> 1)
    Mutation(
        "labels: length check on -1 removed", "labels", PARSER,
        (("else if (llen == 2 && s[0] == '-' && s[1] == '1')",
          "else if (s[0] == '-' && s[1] == '1')"),),
        PARSER_TESTS,
    ),
    Mutation(
        "labels: length check on +1 removed", "labels", PARSER,
        (("else if (llen == 2 && s[0] == '+' && s[1] == '1')",
          "else if (s[0] == '+' && s[1] == '1')"),),
        PARSER_TESTS,
    ),
    Mutation(
        "labels: length check on 1 removed", "labels", PARSER,
        (("if (llen == 1 && *s == '1') label = 1.0f;", "if (*s == '1') label = 1.0f;"),),
        PARSER_TESTS,
    ),
    Mutation(
        "labels: length check on 0 removed", "labels", PARSER,
        (("else if (llen == 1 && *s == '0') label = 0.0f;", "else if (*s == '0') label = 0.0f;"),),
        PARSER_TESTS,
    ),
    Mutation(
        "labels: -1 read as 1", "labels", PARSER,
        (("== '-' && s[1] == '1') label = 0.0f;", "== '-' && s[1] == '1') label = 1.0f;"),),
        PARSER_TESTS,
    ),
    # ---- replica fold (2+ threads): shared += replica - base, then replica = base = shared
    Mutation(
        "fold: mean of the threads' changes instead of their sum", "fold", KERNELS,
        ((_FOLD, _FOLD.replace("shared[i] + (rep[i] - was[i])",
                               "shared[i] + 0.5f * (rep[i] - was[i])")),),
        FOLD_TESTS,
    ),
    Mutation(
        "fold: shared and replica averaged", "fold", KERNELS,
        ((_FOLD, _FOLD.replace("shared[i] + (rep[i] - was[i])", "0.5f * (shared[i] + rep[i])")),),
        FOLD_TESTS,
    ),
    Mutation(
        "fold: change applied with the wrong sign", "fold", KERNELS,
        ((_FOLD, _FOLD.replace("shared[i] + (rep[i] - was[i])", "shared[i] - (rep[i] - was[i])")),),
        FOLD_TESTS,
    ),
    Mutation(
        "fold: replica overwrites shared (other threads' changes lost)", "fold", KERNELS,
        ((_FOLD, _FOLD.replace("shared[i] + (rep[i] - was[i])", "rep[i]")),), FOLD_TESTS,
    ),
    Mutation(
        "fold: base not reset (a change folded again at every fold)", "fold", KERNELS,
        (("            was[i] = merged;\n", ""),), FOLD_TESTS,
    ),
    Mutation(
        "fold: the last fold of the epoch dropped", "fold", KERNELS,
        (("    if (n_hot > 0) fold_replica(model, hot, n_hot, mine, base, &job->lock, 1);\n",
          ""),),
        FOLD_TESTS,
    ),
    Mutation(
        "replicas: kept from epoch to epoch, never freed", "fold", KERNELS,
        (("    ffm_free(hot->replicas);\n", ""),), MEMORY_TESTS,
    ),
)  # fmt: skip


@dataclass
class Outcome:
    mutation: Mutation
    status: str  # killed | survived | not run | error
    detail: str
    seconds: float


class CheckError(Exception):
    """The check cannot run (dirty file, stale mutation, failing baseline, build error)."""


def _run(
    args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip


def _refuse_dirty(paths: Sequence[str]) -> None:
    done = _run(["git", "status", "--porcelain", "--", *paths])
    if done.returncode != 0:
        raise CheckError(f"git status failed: {done.stderr.strip()}")
    if done.stdout.strip():
        raise CheckError(
            "uncommitted changes in files this check edits in place (commit or stash them):\n"
            + done.stdout.rstrip()
        )


def _mutated(original: str, mutation: Mutation) -> str:
    text = original
    for old, new in mutation.edits:
        found = text.count(old)
        if found != 1:
            raise CheckError(
                f"mutation {mutation.name!r}: expected the text once in {mutation.path}, found "
                f"it {found} times (the source changed: update tests/mutation/c_kernels.py)\n"
                f"  text: {old!r}"
            )
        text = text.replace(old, new)
    return text


def _build(env: dict[str, str]) -> None:
    """Import the extension in a new process: the editable install rebuilds changed sources."""
    done = _run([sys.executable, "-c", "import ffm_ext._core"], env=env, timeout=1800)
    if done.returncode != 0:
        raise CheckError("the build failed:\n" + (done.stderr or done.stdout)[-3000:])


def _isa_runs(isa: str, env: dict[str, str]) -> bool:
    done = _run(
        [sys.executable, "-c", "from ffm_ext import _core; print(_core.isa())"],
        env={**env, "FFM_ISA": isa}, timeout=600,
    )  # fmt: skip
    return done.returncode == 0 and done.stdout.split()[-1:] == [isa]


def _pytest(tests: Sequence[str], env: dict[str, str]) -> tuple[int, list[str], str]:
    """(pytest exit code, the failing tests, output tail); exit code -1 on timeout. Failing
    tests come from a JUnit XML report (test ids with parameters hold spaces), one entry per
    test function with its number of failing cases."""
    with tempfile.TemporaryDirectory(prefix="ctrflow-mutation-") as tmp:
        report = Path(tmp) / "junit.xml"
        args = [sys.executable, "-m", "pytest", "-q", "--no-header", "-p", "no:cacheprovider",
                "-o", "addopts=", f"--junitxml={report}", *tests]  # fmt: skip
        try:
            done = _run(args, env=env, timeout=TEST_TIMEOUT)
        except subprocess.TimeoutExpired:
            return -1, [f"(timeout after {TEST_TIMEOUT} s)"], ""
        failed: Counter[str] = Counter()
        if report.exists():
            for case in ElementTree.parse(report).iter("testcase"):
                if case.find("failure") is not None or case.find("error") is not None:
                    module = case.get("classname", "").rsplit(".", 1)[-1]
                    failed[f"{module}::{case.get('name', '').split('[')[0]}"] += 1
    names = [f"{name} ({n} cases)" if n > 1 else name for name, n in failed.items()]
    return done.returncode, names, (done.stdout + done.stderr)[-3000:]


def _check_one(mutation: Mutation, env: dict[str, str], isas: dict[str, bool]) -> Outcome:
    started = time.monotonic()
    path = REPO_ROOT / mutation.path
    original = path.read_text()
    if mutation.isa is not None and not isas[mutation.isa]:
        return Outcome(mutation, "not run", f"this CPU does not run the {mutation.isa} build", 0.0)
    try:
        path.write_text(_mutated(original, mutation))
        _build(env)
        code, failed, tail = _pytest(mutation.tests, env)
    finally:
        path.write_text(original)
    seconds = time.monotonic() - started
    if code == 0:
        return Outcome(mutation, "survived", "every test passed", seconds)
    if code in (1, -1):
        return Outcome(mutation, "killed", ", ".join(failed), seconds)
    raise CheckError(f"pytest could not run the tests for {mutation.name!r} (exit {code}):\n{tail}")


def _report(outcomes: Sequence[Outcome]) -> str:
    width = max(len(o.mutation.name) for o in outcomes)
    lines = [f"{'mutation':<{width}}  {'result':<8}  {'s':>4}  killed by / why"]
    for o in outcomes:
        detail = o.detail if len(o.detail) < 400 else o.detail[:400] + "..."
        lines.append(f"{o.mutation.name:<{width}}  {o.status:<8}  {o.seconds:4.0f}  {detail}")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("killed", "survived", "not run")}
    lines.append(
        f"\n{counts['killed']} killed, {counts['survived']} survived, {counts['not run']} not run "
        f"(of {len(outcomes)})"
    )
    return "\n".join(lines)


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so the finally blocks put the sources back


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation.c_kernels", description=(
        "Apply each C-kernel mutation in turn and check that a test fails."))  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("-k", dest="only", default="", help="only mutations whose name has this")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.only in m.name]
    if args.list or not chosen:
        for m in MUTATIONS:
            print(f"{m.group:<14} {m.name}  [{m.path}]")
        return 0 if args.list else 2
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    env = {k: v for k, v in os.environ.items() if k != "FFM_ISA"}
    paths = sorted({m.path for m in chosen})
    originals = {p: (REPO_ROOT / p).read_text() for p in paths}
    try:
        _refuse_dirty(paths)
        for m in chosen:  # every mutation still matches the sources, before anything changes
            _mutated(originals[m.path], m)
        print("baseline: building and running the tests on the unmutated sources", flush=True)
        _build(env)
        tests = sorted({t for m in chosen for t in m.tests})
        code, _, tail = _pytest(tests, env)
        if code != 0:
            raise CheckError(f"the tests fail without any mutation (exit {code}):\n{tail}")
        isas = {isa: _isa_runs(isa, env) for isa in ("avx2_lanes", "avx2", "avx512")}
        outcomes = []
        for number, m in enumerate(chosen, 1):
            print(f"[{number}/{len(chosen)}] {m.name}", flush=True)
            outcome = _check_one(m, env, isas)
            print(f"    {outcome.status}: {outcome.detail}", flush=True)
            outcomes.append(outcome)
    except CheckError as exc:
        print(f"c_kernels mutation check: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("c_kernels mutation check: interrupted", file=sys.stderr)
        return 2
    finally:
        for p, text in originals.items():
            if (REPO_ROOT / p).read_text() != text:
                (REPO_ROOT / p).write_text(text)
        # Leave the build matching the restored sources.
        _run([sys.executable, "-c", "import ffm_ext._core"], env=env, timeout=1800)
    print()
    print(_report(outcomes))
    return 1 if any(o.status == "survived" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
