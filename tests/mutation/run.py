"""`make mutation`: cosmic-ray over the modules that hold the product's invariants.

Why cosmic-ray: it mutates the source file in place and runs a test command, so the mutant is
what `import ctrflow.components...` loads through meson-python's editable import hook. mutmut 3
writes its mutants to a copy of the tree (./mutants) that the hook never maps to, so its tests
would run the unmutated code and report every mutant as a survivor.

Each target (targets.toml) is one module, optionally narrowed to the functions that hold the
invariant, with the few fast tests that guard it. Targets run one after another: a mutant is a
change to the shared work tree, so two at once would see each other's. Survivors listed in
equivalent.toml (module, operator, the original and the mutated line, a reason) are judged
equivalent and leave the score's denominator. The run fails when a target kills less than
`--min-score`% of its non-equivalent mutants, or none at all (its tests never saw the mutant).

    python -m tests.mutation.run [--only NAME ...] [--min-score 90]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import pathlib
import shlex
import sqlite3
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
BUILD = ROOT / "build" / "mutation"

# Selective mutation: one or two alternatives per operator (the boundary and the opposite)
# instead of every operator of the class; cosmic-ray's full set is ~11 mutants per `+`, most of
# them TypeErrors that any test kills, at several seconds of pytest each.
_BINARY = "|".join(
    ["Add_Sub", "Sub_Add", "Mul_Div", "Div_Mul", "FloorDiv_Div", "Div_FloorDiv", "Mod_FloorDiv",
     "Pow_Mul", "BitOr_BitAnd", "BitAnd_BitOr", "BitXor_BitAnd", "LShift_RShift", "RShift_LShift"]
)  # fmt: skip
_COMPARISON = "|".join(
    ["Lt_LtE", "Lt_GtE", "LtE_Lt", "LtE_Gt", "Gt_GtE", "Gt_LtE", "GtE_Gt", "GtE_Lt", "Eq_NotEq",
     "NotEq_Eq", "Is_IsNot", "IsNot_Is", "In_NotIn", "NotIn_In"]
)  # fmt: skip
EXCLUDED_OPERATORS = [
    rf"core/ReplaceBinaryOperator_(?!(?:{_BINARY})$)",
    rf"core/ReplaceComparisonOperator_(?!(?:{_COMPARISON})$)",
    r"core/ReplaceUnaryOperator_(?!Delete_)",
    r"core/VariableReplacer",
    r"core/VariableInserter",
]


@dataclass
class Target:
    name: str
    module: str
    tests: list[str]
    functions: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    target: Target
    total: int = 0
    killed: int = 0
    equivalent: list[tuple[str, str]] = field(default_factory=list)  # (mutant, reason)
    survivors: list[str] = field(default_factory=list)
    pending: int = 0  # not run yet (an interrupted run)
    survivor_jobs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    load: str = ""

    @property
    def score(self) -> float:
        judged = self.total - len(self.equivalent)
        return 100.0 * self.killed / judged if judged else 100.0


def _targets() -> list[Target]:
    data = tomllib.loads((HERE / "targets.toml").read_text())
    return [Target(**t) for t in data["target"]]


def _equivalents() -> list[dict[str, str]]:
    entries: list[dict[str, str]] = tomllib.loads((HERE / "equivalent.toml").read_text()).get(
        "equivalent", []
    )
    return entries


def _function_lines(module: pathlib.Path, names: list[str]) -> list[str]:
    """Line ranges ("a-b") of the named functions ("f" or "Class.method") in module."""
    tree = ast.parse(module.read_text())
    found: dict[str, str] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qual = prefix + node.name
                start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
                found[qual] = f"{start}-{node.end_lineno}"
                if isinstance(node, ast.ClassDef):
                    visit(node.body, qual + ".")

    visit(tree.body, "")
    missing = [n for n in names if n not in found]
    if missing:
        sys.exit(f"targets.toml: {module}: no function {', '.join(missing)}")
    return [found[n] for n in names]


def _test_command(target: Target) -> list[str]:
    # -B: no .pyc of a mutant is written (one of the same size and second would be reused).
    return [sys.executable, "-B", "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
            "--no-header", "-W", "ignore", "-m", "not container", *target.tests]  # fmt: skip


def _config(target: Target, timeout: float) -> str:
    lines = [
        "[cosmic-ray]",
        f"module-path = {json.dumps(target.module)}",
        f"timeout = {timeout:.1f}",
        "excluded-modules = []",
        f"test-command = {json.dumps(shlex.join(_test_command(target)))}",
        "[cosmic-ray.distributor]",
        'name = "local"',
        "[cosmic-ray.filters.operators-filter]",
        f"exclude-operators = {json.dumps(EXCLUDED_OPERATORS)}",
    ]
    if target.functions:
        ranges = _function_lines(ROOT / target.module, target.functions)
        lines += [
            "[cosmic-ray.filters.line-filter.lines]",
            f"{json.dumps(target.module)} = {json.dumps(ranges)}",
        ]
    return "\n".join(lines) + "\n"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def _bin(tool: str) -> str:
    return str(pathlib.Path(sys.executable).with_name(tool))


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    # A mutant of the in-memory SQLite check in _trial_budget takes ":memory:" for a file name.
    for stray in ROOT.glob(":memory:*"):
        stray.unlink()


def _source_line(module: str, line: int) -> str:
    return (ROOT / module).read_text().splitlines()[line - 1].strip()


def _mutated_line(diff: str) -> str:
    added = [
        ln[1:].strip()
        for ln in diff.splitlines()
        if ln.startswith("+") and not ln.startswith("+++")
    ]
    return " / ".join(added)


def _session(target: Target) -> pathlib.Path:
    return BUILD / f"{_slug(target.name)}.sqlite"


def _baseline(target: Target) -> None:
    baseline = subprocess.run(
        _test_command(target), check=False, cwd=ROOT, capture_output=True, text=True
    )
    if baseline.returncode != 0:
        sys.exit(f"{target.name}: the tests fail without a mutant:\n{baseline.stdout[-3000:]}")


def run_target(target: Target) -> tuple[float, str]:
    """Run every mutant of the target; returns (seconds, load average at the start)."""
    load = f"{os.getloadavg()[0]:.1f}"
    started = time.monotonic()
    _baseline(target)
    timeout = max(60.0, 3 * (time.monotonic() - started))
    session = _session(target)
    config = session.with_suffix(".toml")
    config.write_text(_config(target, timeout))
    session.unlink(missing_ok=True)
    _run([_bin("cosmic-ray"), "init", str(config), str(session)])
    _run([_bin("cr-filter-operators"), str(session), str(config)])
    if target.functions:
        _run([_bin("cr-filter-lines"), str(session), "--config", str(config)])
    _run([_bin("cosmic-ray"), "exec", str(config), str(session)])
    seconds = time.monotonic() - started
    session.with_suffix(".time").write_text(f"{seconds:.0f} {load}\n")
    return seconds, load


def resume(target: Target) -> None:
    """Go on with the last run: its pending mutants and its non-equivalent survivors (after
    tests were added; kills stay kills, since tests are only ever added). The sources must be
    unchanged."""
    session = _session(target)
    config = session.with_suffix(".toml")
    timeout = tomllib.loads(config.read_text())["cosmic-ray"]["timeout"]
    config.write_text(_config(target, timeout))  # the target's tests as they are now
    _baseline(target)  # the added tests must pass on the unmutated code
    survivors = summarize(target).survivor_jobs
    with sqlite3.connect(session) as db:
        db.executemany("DELETE FROM work_results WHERE job_id = ?", [(j,) for j in survivors])
    started = time.monotonic()
    _run([_bin("cosmic-ray"), "exec", str(config), str(session)])
    timing = session.with_suffix(".time")
    seconds, load = timing.read_text().split() if timing.exists() else ("0", "")
    timing.write_text(f"{float(seconds) + time.monotonic() - started:.0f} {load}\n")


def _equivalent_reason(target: Target, operator: str, text: str, mutant: str) -> str | None:
    for e in _equivalents():
        if (e["module"], e["operator"], e["line"], e["mutant"]) == (
            target.module, operator, text, mutant
        ):  # fmt: skip
            return e["reason"]
    return None


def summarize(target: Target) -> Outcome:
    """The outcome of the target's last run, from its cosmic-ray session."""
    session = _session(target)
    outcome = Outcome(target)
    if not session.exists():
        return outcome
    timing = session.with_suffix(".time")
    if timing.exists():
        seconds, outcome.load = timing.read_text().split()
        outcome.seconds = float(seconds)
    dump = subprocess.run([_bin("cosmic-ray"), "dump", str(session)], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout  # fmt: skip
    for row in dump.splitlines():
        item, result = json.loads(row)
        if result is None:
            outcome.pending += 1
            continue
        if result["worker_outcome"] == "skipped":
            continue
        (mutation,) = item["mutations"]
        outcome.total += 1
        if result["test_outcome"] != "survived":
            outcome.killed += 1
            continue
        line = mutation["start_pos"][0]
        text = _source_line(target.module, line)
        mutant = _mutated_line(result.get("diff") or "")
        operator = mutation["operator_name"].removeprefix("core/")
        name = f"{target.module}:{line} {operator}: `{text}` -> `{mutant}`"
        reason = _equivalent_reason(target, operator, text, mutant)
        if reason is None:
            outcome.survivors.append(name)
            outcome.survivor_jobs.append(item["job_id"])
        else:
            outcome.equivalent.append((name, reason))
    return outcome


def report(outcomes: list[Outcome]) -> str:
    rows = [
        "| target | module | mutants | killed | equivalent | survived | score | not run | time "
        "| load |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for o in outcomes:
        rows.append(
            f"| {o.target.name} | `{o.target.module}` | {o.total} | {o.killed} | "
            f"{len(o.equivalent)} | {len(o.survivors)} | {o.score:.1f}% | {o.pending or ''} | "
            f"{o.seconds / 60:.1f} min | {o.load} |"
        )
    text = "\n".join(rows) + "\n"
    for o in outcomes:
        if o.equivalent:
            text += f"\n### {o.target.name}: equivalent survivors\n\n"
            text += "".join(f"- {name} - {reason}\n" for name, reason in o.equivalent)
        if o.survivors:
            text += f"\n### {o.target.name}: surviving non-equivalent mutants\n\n"
            text += "".join(f"- {s}\n" for s in o.survivors)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="target names (or substrings)")
    parser.add_argument("--min-score", type=float, default=90.0)
    parser.add_argument(
        "--summarize", action="store_true", help="report the last runs again, run nothing"
    )
    parser.add_argument(
        "--resume", action="store_true", help="run the last runs' pending mutants and survivors"
    )
    args = parser.parse_args(argv)
    BUILD.mkdir(parents=True, exist_ok=True)
    targets = _targets()
    if args.only:  # exact names, else substrings
        exact = [t for t in targets if t.name in args.only]
        targets = exact or [t for t in targets if any(o in t.name for o in args.only)]
    outcomes = []
    for target in targets:
        print(f"mutation: {target.name} ({target.module})", file=sys.stderr, flush=True)
        if args.resume:
            resume(target)
        elif not args.summarize:
            run_target(target)
        outcomes.append(summarize(target))
        (BUILD / f"{_slug(target.name)}.md").write_text(report(outcomes[-1:]))
        print(report(outcomes[-1:]).split("\n### ")[0], file=sys.stderr, flush=True)
    text = report(outcomes)
    print(text)
    if args.only is None:
        (BUILD / "report.md").write_text(text)
        print(f"report: {BUILD / 'report.md'}")
    bad = [
        o.target.name for o in outcomes if o.pending or o.killed == 0 or o.score < args.min_score
    ]
    if bad:
        print(f"mutation: unfinished, below {args.min_score:.0f}% or no kill: {', '.join(bad)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
