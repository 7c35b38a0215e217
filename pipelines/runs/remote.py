"""Talk to a Kubeflow Pipelines API server: upload the pipeline, start runs, manage schedules.

Uploads are idempotent per ctrflow version: the pipeline (named ``ctrflow``) is created once and
reused; each ctrflow version adds one pipeline version named after it, whose description records
the image and a hash of the compiled spec. Submitting again with the same version and the same spec
reuses that version; the same version name with a different spec (another --image, an edited
pipeline) is refused rather than silently running something else.

Recurring runs are pinned to the pipeline id *and* the version id (KFP needs both when a run
refers to an uploaded pipeline), run one at a time (``max_concurrency=1``) and never backfill
missed slots (``no_catchup=True``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pathlib
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import ctrflow

__all__ = [
    "KfpError",
    "KfpTarget",
    "PipelineRef",
    "create_schedule",
    "delete_schedule",
    "disable_schedule",
    "ensure_pipeline_version",
    "list_schedules",
    "spec_digest",
    "start_run",
]


class KfpError(RuntimeError):
    """A KFP API call failed; the message names the host and what was being done."""


@dataclass(frozen=True)
class KfpTarget:
    host: str
    namespace: str | None = None  # multi-user Kubeflow: the profile namespace
    token: str | None = None  # bearer token (never printed)

    def client(self) -> Any:
        import kfp

        class Client(kfp.Client):  # type: ignore[misc]
            def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
                # kfp.Client retries a failing health check 5 times, 5 s apart, then raises
                # TimeoutError; a wrong token or URL should fail at once with the HTTP status.
                return self._healthz_api.healthz_service_get_healthz()

        with warnings.catch_warnings(), _sdk_prints():
            warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2+"
            with _api_errors(self.host, "connecting"):
                return Client(
                    host=self.host,
                    namespace=self.namespace or "kubeflow",
                    existing_token=self.token or None,
                )


@dataclass(frozen=True)
class PipelineRef:
    pipeline_id: str
    version_id: str
    version_name: str
    created_pipeline: bool
    created_version: bool


@contextlib.contextmanager
def _sdk_prints() -> Iterator[None]:
    """The KFP SDK prints links ("Run details: ...") on stdout: send them to stderr, so stdout
    carries only ctrflow's own output (and stays valid JSON with --json)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


@contextlib.contextmanager
def _api_errors(host: str, doing: str) -> Iterator[None]:
    import kfp_server_api
    import urllib3.exceptions

    try:
        yield
    except kfp_server_api.ApiException as exc:
        body = (exc.body or "").strip() if isinstance(exc.body, str) else ""
        try:
            # A google.rpc.Status ("message"), or the upload endpoint's error ("error_message").
            answer = json.loads(body)
            detail = answer.get("message") or answer.get("error_message") or body
        except (ValueError, AttributeError):
            detail = body
        hint = (
            " (check the token: $CTRFLOW_KFP_TOKEN or --token-file; and --namespace)"
            if exc.status in (401, 403)
            else ""
        )
        raise KfpError(
            f"KFP API at {host}: {doing} failed: HTTP {exc.status} {exc.reason}{hint}"
            + (f": {detail[:500]}" if detail else "")
        ) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KfpError(f"KFP API at {host}: {doing} failed: {exc}") from None


def spec_digest(package_path: str | pathlib.Path) -> str:
    return "sha256:" + hashlib.sha256(pathlib.Path(package_path).read_bytes()).hexdigest()


def _equals_filter(key: str, value: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": key, "stringValue": value}]})


def _find_pipeline(client: Any, target: KfpTarget, name: str) -> str | None:
    response = client.list_pipelines(
        filter=_equals_filter("display_name", name), namespace=target.namespace, page_size=100
    )
    found = [p for p in (response.pipelines or []) if p.display_name == name]
    if len(found) > 1:
        ids = ", ".join(p.pipeline_id for p in found)
        raise KfpError(f"KFP API at {target.host}: several pipelines are named {name!r}: {ids}")
    return found[0].pipeline_id if found else None


def _find_version(client: Any, pipeline_id: str, name: str) -> Any | None:
    response = client.list_pipeline_versions(
        pipeline_id, filter=_equals_filter("display_name", name), page_size=100
    )
    found = [v for v in (response.pipeline_versions or []) if v.display_name == name]
    return found[0] if found else None


def ensure_pipeline_version(
    target: KfpTarget,
    package_path: str | pathlib.Path,
    *,
    pipeline_name: str,
    version_name: str | None = None,
    image: str,
) -> PipelineRef:
    """The pipeline ``pipeline_name`` (created if missing) and its version ``version_name``
    (default: the ctrflow version; uploaded if missing, reused if its spec is the same)."""
    import kfp_server_api

    version_name = version_name or ctrflow.__version__
    digest = spec_digest(package_path)
    description = f"ctrflow {ctrflow.__version__}; image {image}; spec {digest}"
    client = target.client()
    with _sdk_prints():
        with _api_errors(target.host, f"looking up pipeline {pipeline_name!r}"):
            pipeline_id = _find_pipeline(client, target, pipeline_name)
        created_pipeline = pipeline_id is None
        if pipeline_id is None:
            body = kfp_server_api.V2beta1Pipeline(
                name=pipeline_name,
                display_name=pipeline_name,
                description="ctrflow: weekly CTR model training, HPO and promotion",
                namespace=target.namespace,
            )
            with _api_errors(target.host, f"creating pipeline {pipeline_name!r}"):
                pipeline_id = client.pipelines.pipeline_service_create_pipeline(
                    pipeline=body
                ).pipeline_id
        with _api_errors(target.host, f"looking up version {version_name!r}"):
            existing = _find_version(client, pipeline_id, version_name)
        if existing is not None:
            if digest not in (existing.description or ""):
                raise KfpError(
                    f"pipeline {pipeline_name!r} already has a version {version_name!r} with a "
                    f"different spec ({existing.description or 'no description'}); pass "
                    "--version-name to upload this one under another name"
                )
            return PipelineRef(
                pipeline_id, existing.pipeline_version_id, version_name, created_pipeline, False
            )
        with _api_errors(target.host, f"uploading version {version_name!r}"):
            version = client.upload_pipeline_version(
                str(package_path),
                pipeline_version_name=version_name,
                pipeline_id=pipeline_id,
                description=description,
            )
    return PipelineRef(
        pipeline_id, version.pipeline_version_id, version_name, created_pipeline, True
    )


def _experiment_id(client: Any, target: KfpTarget, name: str) -> str:
    with _api_errors(target.host, f"finding or creating experiment {name!r}"):
        return str(client.create_experiment(name, namespace=target.namespace).experiment_id)


def start_run(
    target: KfpTarget,
    ref: PipelineRef,
    *,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    service_account: str | None = None,
) -> str:
    """Start one run of the pinned version; returns the run id."""
    client = target.client()
    with _sdk_prints():
        experiment_id = _experiment_id(client, target, experiment)
        with _api_errors(target.host, "creating the run"):
            run = client.run_pipeline(
                experiment_id=experiment_id,
                job_name=run_name,
                params=dict(params),
                pipeline_id=ref.pipeline_id,
                version_id=ref.version_id,
                service_account=service_account,
            )
    return str(run.run_id)


def create_schedule(
    target: KfpTarget,
    ref: PipelineRef,
    *,
    experiment: str,
    name: str,
    kfp_cron: str,
    params: Mapping[str, Any],
    service_account: str | None = None,
) -> str:
    """A recurring run on ``kfp_cron`` (6 fields, seconds first); returns its id."""
    client = target.client()
    with _sdk_prints():
        experiment_id = _experiment_id(client, target, experiment)
        with _api_errors(target.host, "creating the recurring run"):
            job = client.create_recurring_run(
                experiment_id=experiment_id,
                job_name=name,
                description=f"ctrflow {ref.version_name} on cron {kfp_cron!r}",
                cron_expression=kfp_cron,
                max_concurrency=1,
                no_catchup=True,
                params=dict(params),
                pipeline_id=ref.pipeline_id,
                version_id=ref.version_id,
                enabled=True,
                service_account=service_account,
            )
    return str(job.recurring_run_id)


@dataclass(frozen=True)
class ScheduleInfo:
    recurring_run_id: str
    name: str
    cron: str
    mode: str
    pipeline_version_id: str
    pipeline_id: str = ""


def list_schedules(target: KfpTarget, experiment: str | None = None) -> list[ScheduleInfo]:
    client = target.client()
    out: list[ScheduleInfo] = []
    with _sdk_prints(), _api_errors(target.host, "listing recurring runs"):
        experiment_id = None
        if experiment:
            experiment_id = client.get_experiment(
                experiment_name=experiment, namespace=target.namespace
            ).experiment_id
        token = ""
        while True:
            response = client.list_recurring_runs(
                page_token=token,
                page_size=100,
                experiment_id=experiment_id,
                namespace=target.namespace,
            )
            for job in response.recurring_runs or []:
                trigger = job.trigger
                cron = ""
                if trigger is not None and trigger.cron_schedule is not None:
                    cron = trigger.cron_schedule.cron or ""
                version = job.pipeline_version_reference
                out.append(
                    ScheduleInfo(
                        recurring_run_id=str(job.recurring_run_id),
                        name=str(job.display_name or ""),
                        cron=cron,
                        mode=str(job.mode or ""),
                        pipeline_version_id=str(
                            (version.pipeline_version_id if version else None)
                            or job.pipeline_version_id
                            or ""
                        ),
                        pipeline_id=str((version.pipeline_id if version else None) or ""),
                    )
                )
            token = response.next_page_token or ""
            if not token:
                return out


def disable_schedule(target: KfpTarget, recurring_run_id: str) -> None:
    client = target.client()
    with _sdk_prints(), _api_errors(target.host, f"disabling recurring run {recurring_run_id}"):
        client.disable_recurring_run(recurring_run_id)


def delete_schedule(target: KfpTarget, recurring_run_id: str) -> None:
    client = target.client()
    with _sdk_prints(), _api_errors(target.host, f"deleting recurring run {recurring_run_id}"):
        client.delete_recurring_run(recurring_run_id)
