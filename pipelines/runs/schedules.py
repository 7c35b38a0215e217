"""Recurring runs kept by name: `ctrflow schedule apply` creates, replaces or leaves one alone.

KFP's v2beta1 API cannot update a recurring run, and each one is pinned to a pipeline version
id, so after an upgrade a schedule made earlier keeps running the old version. `apply_schedule`
looks the schedule up by its name, compares everything it would send (pipeline version, cron,
parameters, experiment, concurrency, catch-up, enabled) and, when anything differs, creates the
new recurring run first and only then deletes the old one: a failure leaves the old schedule
running, never none. The caller validates its input before calling, so nothing deployed changes
on bad input.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ctrflow.pipelines.runs.cron import next_run
from ctrflow.pipelines.runs.remote import (
    KfpError,
    KfpTarget,
    PipelineRef,
    _api_errors,
    _equals_filter,
    _experiment_id,
    _sdk_prints,
    create_schedule,
    list_schedules,
)

__all__ = ["ApplyResult", "DesiredSchedule", "ScheduleStatus", "apply_schedule", "schedule_status"]


@dataclass(frozen=True)
class DesiredSchedule:
    name: str
    experiment: str
    kfp_cron: str  # 6 fields, seconds first (cron.to_kfp_cron)
    params: Mapping[str, Any]
    service_account: str | None = None


@dataclass(frozen=True)
class ApplyResult:
    action: str  # "created", "replaced" or "unchanged"
    recurring_run_id: str
    replaced_id: str | None
    changes: tuple[str, ...]


def _same_value(a: Any, b: Any) -> bool:
    # Protobuf Struct numbers are doubles: 3 may come back as 3.0.
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    return bool(a == b)


def _differences(
    job: Any, ref: PipelineRef, desired: DesiredSchedule, experiment_id: str
) -> list[str]:
    changes: list[str] = []
    version = job.pipeline_version_reference
    old_version = (version.pipeline_version_id if version else None) or job.pipeline_version_id
    if old_version != ref.version_id:
        changes.append(
            f"pipeline version {old_version or 'none'} -> {ref.version_name} ({ref.version_id})"
        )
    trigger = job.trigger
    cron = trigger.cron_schedule.cron if trigger and trigger.cron_schedule else None
    if cron != desired.kfp_cron:
        changes.append(f"cron {cron!r} -> {desired.kfp_cron!r}")
    old = dict((job.runtime_config.parameters if job.runtime_config else None) or {})
    for name in sorted(set(old) | set(desired.params)):
        if name not in desired.params:
            changes.append(f"parameter {name} {old[name]!r} -> compiled default")
        elif name not in old or not _same_value(old[name], desired.params[name]):
            changes.append(
                f"parameter {name} {old.get(name, 'default')!r} -> {desired.params[name]!r}"
            )
    if job.experiment_id != experiment_id:
        changes.append(f"experiment {job.experiment_id} -> {desired.experiment} ({experiment_id})")
    if str(job.mode or "") != "ENABLE":
        changes.append(f"mode {job.mode} -> ENABLE")
    if str(job.max_concurrency or "") != "1" or job.no_catchup is not True:
        changes.append("one run at a time, no catch-up")
    if desired.service_account and job.service_account != desired.service_account:
        changes.append(f"service account {job.service_account!r} -> {desired.service_account!r}")
    return changes


def _named(client: Any, target: KfpTarget, name: str) -> list[Any]:
    found: list[Any] = []
    token = ""
    with _api_errors(target.host, f"looking up recurring runs named {name!r}"):
        while True:
            response = client.list_recurring_runs(
                page_token=token,
                page_size=100,
                namespace=target.namespace,
                filter=_equals_filter("display_name", name),
            )
            found += [j for j in response.recurring_runs or [] if j.display_name == name]
            token = response.next_page_token or ""
            if not token:
                return found


def apply_schedule(target: KfpTarget, ref: PipelineRef, desired: DesiredSchedule) -> ApplyResult:
    client = target.client()
    with _sdk_prints():
        existing = _named(client, target, desired.name)
        if len(existing) > 1:
            ids = ", ".join(str(j.recurring_run_id) for j in existing)
            raise KfpError(
                f"{len(existing)} recurring runs are named {desired.name!r} ({ids}); nothing "
                "changed: keep one, delete the others with `ctrflow schedule delete ID`"
            )
        experiment_id = _experiment_id(client, target, desired.experiment)
        changes: list[str] = []
        if existing:
            changes = _differences(existing[0], ref, desired, experiment_id)
            if not changes:
                return ApplyResult("unchanged", str(existing[0].recurring_run_id), None, ())
    new_id = create_schedule(
        target,
        ref,
        experiment=desired.experiment,
        name=desired.name,
        kfp_cron=desired.kfp_cron,
        params=desired.params,
        service_account=desired.service_account,
    )
    if not existing:
        return ApplyResult("created", new_id, None, ())
    old_id = str(existing[0].recurring_run_id)
    with _sdk_prints():
        try:
            with _api_errors(target.host, f"deleting the replaced recurring run {old_id}"):
                client.delete_recurring_run(old_id)
        except KfpError as exc:
            raise KfpError(
                f"{exc}; the new recurring run {new_id} exists, so {desired.name!r} runs twice "
                f"until you delete {old_id} (`ctrflow schedule delete {old_id}`)"
            ) from None
    return ApplyResult("replaced", new_id, old_id, tuple(changes))


@dataclass(frozen=True)
class ScheduleStatus:
    recurring_run_id: str
    name: str
    mode: str
    cron: str
    pipeline_version_id: str
    pipeline_version_name: str
    latest_version: bool | None  # None: the pipeline's versions could not be read
    next_run_utc: str | None  # ISO 8601, None when disabled or never


def _version_names(client: Any, target: KfpTarget, pipeline_id: str) -> tuple[dict[str, str], str]:
    """Every version of a pipeline, id -> name, and the newest one's id."""
    names: dict[str, str] = {}
    newest: tuple[str, str] = ("", "")
    token = ""
    with _api_errors(target.host, f"listing versions of pipeline {pipeline_id}"):
        while True:
            response = client.list_pipeline_versions(pipeline_id, page_token=token, page_size=100)
            for v in response.pipeline_versions or []:
                names[v.pipeline_version_id] = v.display_name or ""
                created = v.created_at.isoformat() if v.created_at else ""
                newest = max(newest, (created, v.pipeline_version_id))
            token = response.next_page_token or ""
            if not token:
                return names, newest[1]


def schedule_status(
    target: KfpTarget, experiment: str | None = None, now: datetime.datetime | None = None
) -> list[ScheduleStatus]:
    """Every recurring run with its version's name, whether that is the pipeline's newest
    version, and its next run time in UTC."""
    now = now or datetime.datetime.now(datetime.UTC)
    schedules = list_schedules(target, experiment)
    client = target.client()
    versions: dict[str, tuple[dict[str, str], str]] = {}
    out = []
    with _sdk_prints():
        for s in schedules:
            if s.pipeline_id and s.pipeline_id not in versions:
                versions[s.pipeline_id] = _version_names(client, target, s.pipeline_id)
            names, newest = versions.get(s.pipeline_id, ({}, ""))
            upcoming = next_run(s.cron, now) if s.cron and s.mode == "ENABLE" else None
            out.append(
                ScheduleStatus(
                    recurring_run_id=s.recurring_run_id,
                    name=s.name,
                    mode=s.mode,
                    cron=s.cron,
                    pipeline_version_id=s.pipeline_version_id,
                    pipeline_version_name=names.get(s.pipeline_version_id, "?"),
                    latest_version=(s.pipeline_version_id == newest) if newest else None,
                    next_run_utc=upcoming.strftime("%Y-%m-%dT%H:%M:%SZ") if upcoming else None,
                )
            )
    return out


def to_json(items: list[ScheduleStatus]) -> str:
    return json.dumps([i.__dict__ for i in items], indent=2)
