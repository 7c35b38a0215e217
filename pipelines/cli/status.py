"""`ctrflow status RUN_ID`: a Kubeflow run's state, once; `submit --wait` follows it to its end.

Exit codes, for CI jobs that gate on a run: 0 the run succeeded, 4 it failed or was cancelled
(the failed task's name and error on stderr), 5 it has not finished yet (status only), 2 bad
input, 3 KFP API unreachable or refusing.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ctrflow.pipelines.cli._parsing import UsageError
from ctrflow.pipelines.cli.pipeline import EXIT_PIPELINE_FAILED, _add_target, _remote, _target

EXIT_NOT_FINISHED = 5
DEFAULT_POLL_SECONDS = 30.0


def exit_code(status: Any) -> int:
    if not status.finished:
        return EXIT_NOT_FINISHED
    return 0 if status.succeeded else EXIT_PIPELINE_FAILED


def check_poll(seconds: float) -> None:
    if not seconds > 0:
        raise UsageError(f"--poll must be > 0 seconds, got {seconds}")


def follow(target: Any, run_id: str, poll_seconds: float) -> Any:
    """Follow a run to its end, each new state as a line on stderr; returns its RunStatus."""
    from ctrflow.pipelines.runs.wait import follow_run

    def tell(status: Any) -> None:
        print(f"run {status.run_id}: {status.state}", file=sys.stderr, flush=True)

    return follow_run(target, run_id, poll_seconds=poll_seconds, on_change=tell)


def report(status: Any, as_json: bool) -> int:
    """Print the outcome (stdout; a failure's summary on stderr too) and return the exit code."""
    code = exit_code(status)
    if as_json:
        print(json.dumps(status.to_dict(), indent=2))
    else:
        print(status.summary())
    if code == EXIT_PIPELINE_FAILED:
        print(f"ctrflow: {status.summary()}", file=sys.stderr)
    return code


def _status(args: argparse.Namespace) -> int:
    from ctrflow.pipelines.runs.wait import run_status

    if not args.run_id.strip():
        raise UsageError("RUN_ID must not be empty")
    target = _target(args)
    if args.wait:
        check_poll(args.poll)
        return report(follow(target, args.run_id, args.poll), args.json)
    return report(run_status(target, args.run_id), args.json)


def add_wait_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--wait",
        action="store_true",
        help=f"{what}; exit 0 if the run succeeds, 4 naming the failed task if not",
    )
    parser.add_argument(
        "--poll",
        type=float,
        default=DEFAULT_POLL_SECONDS,
        metavar="S",
        help="seconds between two looks at the run while waiting",
    )


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = subparsers.add_parser(
        "status",
        help="a Kubeflow run's state; exit 0 succeeded, 4 failed, 5 not finished",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    status.add_argument("run_id", metavar="RUN_ID", help="as `ctrflow submit` prints it")
    _add_target(status)
    add_wait_options(status, "follow the run until it ends")
    status.add_argument("--json", action="store_true", help="print the outcome as JSON")
    status.set_defaults(func=_remote(_status, "status"))
