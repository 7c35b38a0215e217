"""Running `ctrflow` from a test: in a child process, as a user or a Kubernetes Job runs it, or in
this process through the real argument tree (fast, and monkeypatches apply)."""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
from collections.abc import Mapping

from ctrflow.pipelines import cli

# `python -m ctrflow.pipelines.cli` is the console script `ctrflow` of this virtualenv.
CTRFLOW = (sys.executable, "-m", "ctrflow.pipelines.cli")
# A child must not inherit a developer's stores: the command under test says which to use.
_STORE_VARIABLES = ("CTRFLOW_STORAGE_URL", "MLFLOW_TRACKING_URI")


def run_ctrflow(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """`ctrflow ARGS` in a child process; ``env`` adds to this process's environment, without
    its Optuna storage URL and MLflow tracking URI."""
    child_env = {k: v for k, v in os.environ.items() if k not in _STORE_VARIABLES}
    child_env.update(env or {})
    return subprocess.run(
        [*CTRFLOW, *args],
        capture_output=True, text=True, env=child_env, timeout=timeout, check=False,
    )  # fmt: skip


@functools.cache
def _parser() -> argparse.ArgumentParser:
    # The real `ctrflow` argument tree, built once (building it imports every command group).
    return cli.build_parser()


def ctrflow_in_process(argv: list[str]) -> int:
    """`ctrflow ARGV` in this process, as cli.main runs it, without main's logging setup."""
    args = _parser().parse_args(argv)
    return int(args.func(args))
