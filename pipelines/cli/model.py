"""`ctrflow model history|rollback NAME`: the champions over time, and moving back to one.

`history` lists every stint as champion, promotions and rollbacks alike, with the reason (read
from the registry: MLflow itself keeps no alias history). `rollback` moves alias champion back
under the register step's lock and records who, when and why (components/registry/rollback.py
says which versions qualify). Exit codes: 0 done, 2 bad input or a refused rollback (nothing
changed), 1 the registry failed (unreachable, lock held past --lock-wait).
`ctrflow registry history --model-name NAME` is the older spelling of `model history NAME`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Any

from ctrflow.pipelines.cli._parsing import UsageError

EXIT_REGISTRY_FAILED = 1


def default_tracking_uri(workdir: str) -> str:
    """$MLFLOW_TRACKING_URI, else the SQLite store `ctrflow run` writes under its work dir."""
    from ctrflow.components.names import MLFLOW_TRACKING_URI_ENV

    return os.environ.get(MLFLOW_TRACKING_URI_ENV) or (
        f"sqlite:///{(pathlib.Path(workdir) / 'mlflow.db').resolve()}"
    )


def _client(args: argparse.Namespace) -> Any:
    """An MlflowClient on the chosen registry, after checks that cost no writes: a missing
    SQLite file is not created, an unreachable server is not retried for minutes."""
    from mlflow.tracking import MlflowClient

    from ctrflow.pipelines.cli._checks import check_mlflow_uri

    uri = args.mlflow_uri or default_tracking_uri(args.workdir)
    check_mlflow_uri(uri)
    if uri.startswith("sqlite:///"):
        path = pathlib.Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise UsageError(
                f"no MLflow store at {path}: pass --mlflow-uri or set MLFLOW_TRACKING_URI"
            )
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def print_history(args: argparse.Namespace, model_name: str) -> int:

    from ctrflow.components.registry.model_names import check_model_name
    from ctrflow.components.registry.promotion import promotion_history, registered_model_exists

    try:
        check_model_name(model_name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    client = _client(args)
    if not registered_model_exists(client, model_name):
        raise UsageError(f"no registered model {model_name!r}")
    history = promotion_history(client, model_name)
    if args.json:
        print(json.dumps(history, indent=2))
        return 0
    if not history:
        print(f"{model_name}: no version has been champion yet")
    for entry in history:
        print(_line(entry))
    return 0


def _line(entry: dict[str, Any]) -> str:
    until = entry["until"] or "now"
    logloss = entry["test_logloss"]
    scored = f", test logloss {float(logloss):.6f}" if logloss not in (None, "None", "") else ""
    served = f"version {entry['version']}: champion {entry['since']} .. {until}{scored}"
    by = f" (by {entry['by']}{', forced' if entry.get('forced') else ''})" if entry["by"] else ""
    return f"{served}\n  {entry['reason']}{by}"


def _history(args: argparse.Namespace) -> int:
    return _registry_errors("model history", lambda: print_history(args, args.name))


def _rollback(args: argparse.Namespace) -> int:
    from ctrflow.components.registry.rollback import RollbackRefusedError, rollback

    def run() -> int:
        if args.lock_wait < 0:
            raise UsageError(f"--lock-wait must be >= 0 seconds, got {args.lock_wait}")
        client = _client(args)
        try:
            done = rollback(
                client, args.name, args.to, args.reason, by=args.by, force=args.force,
                lock_wait=args.lock_wait,
            )  # fmt: skip
        except RollbackRefusedError as exc:
            raise UsageError(f"{exc}; nothing changed") from None
        print(
            f"{done.model_name}: champion rolled back from version {done.from_version} to "
            f"{done.to_version} at {done.at} by {done.by}"
            + (" (Production stage moved too)" if done.stage_mirrored else "")
        )
        return 0

    return _registry_errors("model rollback", run)


def _registry_errors(command: str, run: Any) -> int:
    """A registry that fails (not the user's input) is one line and exit code 1."""
    from mlflow.exceptions import MlflowException

    from ctrflow.components.registry._registry_lock import LockTimeoutError

    try:
        return int(run())
    except (MlflowException, LockTimeoutError, RuntimeError) as exc:
        message = exc.message if isinstance(exc, MlflowException) else str(exc)
        print(f"ctrflow {command}: {message.splitlines()[0]}", file=sys.stderr)
        return EXIT_REGISTRY_FAILED


def add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mlflow-uri",
        metavar="URI",
        default=None,
        help="tracking URI (default: $MLFLOW_TRACKING_URI, else the SQLite store of --workdir)",
    )
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        default="ctrflow-work",
        help="`ctrflow run`'s work directory, for its SQLite store",
    )


def register(subparsers: Any) -> None:
    model = subparsers.add_parser(
        "model", help="a registered model: champion history, rollback to an earlier champion"
    )
    model_sub = model.add_subparsers(dest="model_command", metavar="COMMAND", required=True)

    history = model_sub.add_parser(
        "history",
        help="every stint as champion, oldest first, with the reason (promotions and rollbacks)",
    )
    history.add_argument("name", metavar="NAME", help="registered model, e.g. ctr-ffm")
    add_store_options(history)
    history.add_argument("--json", action="store_true", help="print the history as JSON")
    history.set_defaults(func=_history)

    back = model_sub.add_parser(
        "rollback",
        help="move alias champion back to an earlier champion, recording who, when and why",
        description="Move alias champion of NAME to --to VERSION under the register step's "
        "registry lock. VERSION must be READY and have served as champion before (--force: "
        "also one that never served but whose register step completed); never the current "
        "champion, nor a version whose register step failed or is in flight. On refusal "
        "nothing changes and the exit code is 2.",
    )
    back.add_argument("name", metavar="NAME", help="registered model, e.g. ctr-ffm")
    back.add_argument("--to", metavar="VERSION", required=True, help="version to make champion")
    back.add_argument("--reason", metavar="TEXT", required=True, help="why, for the history")
    back.add_argument(
        "--force",
        action="store_true",
        help="allow a READY version that never served as champion (its gate kept it out)",
    )
    back.add_argument(
        "--by", metavar="WHO", default=None, help="who asks, for the record (default: USER@HOST)"
    )
    back.add_argument(
        "--lock-wait",
        metavar="SECONDS",
        type=float,
        default=600.0,
        help="how long to wait for a register step holding the registry lock",
    )
    add_store_options(back)
    back.set_defaults(func=_rollback)
