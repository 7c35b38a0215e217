"""`ctrflow schedule apply|list|disable|delete`: weekly runs on Kubeflow, kept by name.

- apply: create the recurring run NAME, or replace it when anything differs (a new pipeline
  version after an upgrade, the cron, a parameter); says which and why. Everything is validated
  before the first request, and a replacement is created before the old one is deleted.
- list: each recurring run with its pipeline version, whether that is the newest, and its next
  run time in UTC (KFP's scheduler evaluates cron in UTC).
- disable ID, delete ID.

Exit codes as for `submit`: 2 bad input (nothing changed), 3 KFP API unreachable or refusing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from typing import Any

from ctrflow.pipelines.cli._parsing import UsageError
from ctrflow.pipelines.cli.pipeline import _add_target, _add_upload, _remote, _run_params, _target
from ctrflow.pipelines.cli.pipeline import _upload as upload_pipeline


def _apply(args: argparse.Namespace) -> int:
    from ctrflow.pipelines.runs.cron import to_kfp_cron
    from ctrflow.pipelines.runs.schedules import DesiredSchedule, apply_schedule

    if not args.name.strip():
        raise UsageError("--name must not be empty")
    kfp_cron = to_kfp_cron(args.cron)  # bad input stops here, before any request
    params = _run_params(args)
    if "data_date" in params:
        raise UsageError(
            "--data-date would make every scheduled run read the same day; leave it out: each "
            "run fills the --data template from its own schedule time"
        )
    target = _target(args)
    with tempfile.TemporaryDirectory(prefix="ctrflow-schedule-") as tmp:
        ref = upload_pipeline(args, target, tmp)
    desired = DesiredSchedule(
        name=args.name,
        experiment=args.experiment,
        kfp_cron=kfp_cron,
        params=params,
        service_account=args.service_account,
    )
    result = apply_schedule(target, ref, desired)
    if args.json:
        print(
            json.dumps(
                {
                    **result.__dict__,
                    "name": args.name,
                    "cron": kfp_cron,
                    "pipeline_id": ref.pipeline_id,
                    "version_id": ref.version_id,
                    "version_name": ref.version_name,
                },
                indent=2,
            )
        )
        return 0
    where = (
        f"cron {kfp_cron!r} UTC (KFP's 6 fields), pipeline version {ref.version_name} "
        f"({ref.version_id})"
    )
    if result.action == "unchanged":
        print(f"unchanged: recurring run {result.recurring_run_id} ({args.name}) has {where}")
    elif result.action == "created":
        print(f"created recurring run {result.recurring_run_id} ({args.name}): {where}")
    else:
        print(
            f"replaced recurring run {result.replaced_id} with {result.recurring_run_id} "
            f"({args.name}): {'; '.join(result.changes)}"
        )
    return 0


def _list(args: argparse.Namespace) -> int:
    from ctrflow.pipelines.runs.schedules import schedule_status, to_json

    schedules = schedule_status(_target(args), args.experiment_filter)
    if args.json:
        print(to_json(schedules))
        return 0
    if not schedules:
        print("no recurring runs")
        return 0
    print(f"{'ID':24s}  {'MODE':8s}  {'CRON (UTC)':16s}  {'NEXT RUN (UTC)':20s}  VERSION  NAME")
    for s in schedules:
        latest = {True: "latest", False: "NOT latest", None: "?"}[s.latest_version]
        print(
            f"{s.recurring_run_id:24s}  {s.mode:8s}  {s.cron:16s}  {s.next_run_utc or '-':20s}  "
            f"{s.pipeline_version_name} ({latest})  {s.name}"
        )
    return 0


def _by_id(action: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        from ctrflow.pipelines.runs.remote import delete_schedule, disable_schedule

        (disable_schedule if action == "disable" else delete_schedule)(_target(args), args.id)
        print(f"{action}d recurring run {args.id}")
        return 0

    return run


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    schedule = subparsers.add_parser(
        "schedule",
        help="weekly runs on Kubeflow: apply NAME (create or replace), list, disable, delete",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    actions = schedule.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)

    apply = actions.add_parser(
        "apply",
        help="create the recurring run NAME, or replace it if anything differs",
        description="Idempotent: run it after every upgrade, the schedule follows the new "
        'pipeline version. The cron is the usual 5 fields, in UTC, e.g. "0 3 * * 1" '
        "(Mondays 03:00 UTC); runs go one at a time and missed runs are not backfilled.",
    )
    apply.add_argument("--name", required=True, help="the recurring run's name, its identity")
    apply.add_argument(
        "--cron", required=True, metavar="CRON", help='5-field cron in UTC, e.g. "0 3 * * 1"'
    )
    _add_target(apply)
    _add_upload(apply)
    apply.add_argument("--json", action="store_true", help="print the result as JSON")
    apply.set_defaults(func=_remote(_apply, "schedule apply"))

    listing = actions.add_parser(
        "list", help="recurring runs, their pipeline version and next run time (UTC)"
    )
    _add_target(listing)
    listing.add_argument(
        "--experiment",
        dest="experiment_filter",
        metavar="NAME",
        default=None,
        help="only this experiment's recurring runs (default: all)",
    )
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    listing.set_defaults(func=_remote(_list, "schedule list"))

    for action, text in (("disable", "stop a recurring run"), ("delete", "delete a recurring run")):
        one = actions.add_parser(action, help=text)
        one.add_argument("id", metavar="ID", help="recurring run id (`ctrflow schedule list`)")
        _add_target(one)
        one.set_defaults(func=_remote(_by_id(action), f"schedule {action}"))
