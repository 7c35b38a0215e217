"""The KFP API stand-in (test_remote.py) refuses what a real KFP API server refuses.

A recorded contract: no KFP API server can run on this machine (it needs Kubernetes, Argo and
MySQL). What the server refuses, with which HTTP status and message, is ported from its source
(github.com/kubeflow/pipelines, backend/src/apiserver at commit 7b70c7b; the rules and file
names are in tests/testkit/kfp_rules.py and tests/testkit/kfp_models.py): request bodies are
decoded strictly into the v2beta1 models (the installed kfp_server_api), an uploaded spec is
parsed with the kfp PipelineSpec protobuf, and a run's or recurring run's runtime parameters
are checked against the spec's root inputs (validatePipelineJobInputs). Each refusal here has
an accepted twin, so a test fails if the stand-in refuses for another reason or accepts
anything.
"""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.pipelines.runs.test_remote import API, FakeKfp, serve
from tests.testkit.paths import REPO_ROOT

SPEC = (REPO_ROOT / "pipelines" / "ctr_pipeline.yaml").read_bytes()


def _send(url: str, body: bytes, content_type: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _post(url: str, path: str, body: Any) -> tuple[int, Any]:
    return _send(f"{url}{API}{path}", json.dumps(body).encode(), "application/json")


def _upload(
    url: str, query: str, content: bytes, filename: str = "pipeline.yaml"
) -> tuple[int, Any]:
    boundary = "ctrflow-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="uploadfile"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return _send(
        f"{url}{API}/pipelines/upload_version?{query}",
        body,
        f"multipart/form-data; boundary={boundary}",
    )


class Stand:
    """The stand-in with the committed pipeline uploaded and an experiment: ids to refer to."""

    def __init__(self, fake: FakeKfp, url: str) -> None:
        self.fake, self.url = fake, url
        status, pipeline = _post(url, "/pipelines", {"display_name": "ctrflow"})
        assert status == 200, pipeline
        self.pipeline_id = pipeline["pipeline_id"]
        status, version = _upload(url, f"pipelineid={self.pipeline_id}&name=v1", SPEC)
        assert status == 200, version
        self.version_id = version["pipeline_version_id"]
        status, experiment = _post(url, "/experiments", {"display_name": "weekly"})
        assert status == 200, experiment
        self.experiment_id = experiment["experiment_id"]

    def run(self) -> dict[str, Any]:
        """A run the stand-in accepts, as kfp.Client sends it."""
        return {
            "display_name": "ctrflow run",
            "experiment_id": self.experiment_id,
            "pipeline_version_reference": {
                "pipeline_id": self.pipeline_id,
                "pipeline_version_id": self.version_id,
            },
            "runtime_config": {"parameters": {"data_uri": "gs://logs/*.parquet", "n_workers": 3}},
            "service_account": "",
        }

    def recurring_run(self) -> dict[str, Any]:
        return {
            **self.run(),
            "display_name": "weekly ctr",
            "trigger": {"cron_schedule": {"cron": "0 0 3 * * 1"}},
            "max_concurrency": 1,
            "no_catchup": True,
            "mode": "ENABLE",
        }


@pytest.fixture
def stand() -> Iterator[Stand]:
    fake = FakeKfp(token=None)
    with serve(fake) as url:
        yield Stand(fake, url)


def _set(body: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with the field at `dotted` set to `value` (deleted when value is ...)."""
    body = copy.deepcopy(body)
    *parents, last = dotted.split(".")
    node = body
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return body


def test_the_well_formed_twins_are_accepted(stand: Stand) -> None:
    status, run = _post(stand.url, "/runs", stand.run())
    assert status == 200, run
    status, job = _post(stand.url, "/recurringruns", stand.recurring_run())
    assert status == 200, job
    # Every parameter type of the spec, at once: the checks accept what the spec declares.
    every = _set(stand.run(), "runtime_config.parameters", {
        "data_uri": "s3://x", "n_workers": 2, "trial_budget": 40.0, "promotion_margin": 0,
        "mirror_production_stage": True, "model_type": "ffm",
    })  # fmt: skip
    assert _post(stand.url, "/runs", every)[0] == 200
    assert len(stand.fake.runs) == 2 and len(stand.fake.recurring) == 1


RUN_REFUSALS = [
    ("display_nam", "x", 400, 'proto: ($): unknown field "display_nam"'),
    ("runtime_config.paramters", {}, 400, 'unknown field "paramters"'),
    ("display_name", 5, 400, "invalid value for string field display_name: 5"),
    ("pipeline_version_reference", "v1", 400, "invalid value for message field"),
    ("storage_state", "GONE", 400, 'invalid value for enum field storage_state: "GONE"'),
    ("created_at", "yesterday", 400, "invalid google.protobuf.Timestamp"),
    ("pipeline_spec", [1], 400, "invalid value for Struct field pipeline_spec"),
    ("runtime_config.parameters.n_worker", 3, 400,
     "parameter(s) provided are not required by pipeline: n_worker"),
    ("runtime_config.parameters.n_workers", "3", 400,
     "input parameter n_workers requires type double or integer"),
    ("runtime_config.parameters.model_type", 1, 400,
     "input parameter model_type requires type string"),
    ("runtime_config.parameters.mirror_production_stage", "true", 400,
     "input parameter mirror_production_stage requires type bool"),
    ("runtime_config.parameters.data_uri", ..., 400,
     "parameter data_uri is not optional, yet has neither default value nor user provided value"),
    ("runtime_config", ..., 400, "pipeline requiring input has no parameter(s) provided"),
    ("display_name", ..., 500, "Run name cannot be empty"),
    ("plugins_output", {}, 409, "plugins_output must not be set by the client"),
    ("experiment_id", "experiment-9999", 404, "Experiment experiment-9999 not found"),
    ("pipeline_version_reference.pipeline_version_id", "version-9999", 500,
     "pipeline version version-9999 not found"),
    ("pipeline_version_reference.pipeline_id", "pipeline-9999", 500,
     "belongs to pipeline pipeline-0001 (not pipeline-9999)"),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value", "status", "message"), RUN_REFUSALS)
def test_runs_are_refused_as_the_server_refuses_them(
    stand: Stand, field: str, value: Any, status: int, message: str
) -> None:
    code, answer = _post(stand.url, "/runs", _set(stand.run(), field, value))
    assert code == status, answer
    assert message in answer["message"]
    assert answer["code"] == {400: 3, 404: 5, 409: 10, 500: 13}[status]  # a google.rpc.Status
    assert stand.fake.runs == {}


RECURRING_REFUSALS = [
    ("mode", "ENABLED", 400, 'invalid value for enum field mode: "ENABLED"'),
    ("no_catchup", "yes", 400, "invalid value for bool field no_catchup"),
    ("max_concurrency", "one", 400, "invalid value for int64 field max_concurrency"),
    ("max_concurrency", 0, 400, "must be at least 1 and at most 10. Received 0"),
    ("max_concurrency", 11, 400, "must be at least 1 and at most 10. Received 11"),
    ("max_concurrency", ..., 400, "must be at least 1 and at most 10. Received 0"),
    ("trigger.cron_schedule.cron", "0 3 * * 1 * *", 400, "Expected 5 to 6 fields, found 7"),
    ("trigger.cron_schedule.cron", "0 0 3 * * 8", 400, "End of range (8) above maximum (6)"),
    ("trigger.cron_schedule.cron", "0 0 25 * * 1", 400, "End of range (25) above maximum (23)"),
    ("trigger.cron_schedule.cronn", "x", 400, 'unknown field "cronn"'),
    ("trigger.periodic_schedule", {"interval_second": "1h"}, 400,
     "invalid value for int64 field interval_second"),
    ("trigger", {"periodic_schedule": {"interval_second": "0"}}, 400,
     "Found invalid period schedule interval 0"),
    ("runtime_config.parameters.budget", 30, 400,
     "parameter(s) provided are not required by pipeline: budget"),
    ("display_name", "", 500, "Recurring run's name cannot be empty"),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value", "status", "message"), RECURRING_REFUSALS)
def test_recurring_runs_are_refused_as_the_server_refuses_them(
    stand: Stand, field: str, value: Any, status: int, message: str
) -> None:
    code, answer = _post(stand.url, "/recurringruns", _set(stand.recurring_run(), field, value))
    assert code == status, answer
    assert message in answer["message"]
    assert stand.fake.recurring == {}


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        (
            "/experiments",
            {"display_name": "w", "namespaces": "a"},
            400,
            'unknown field "namespaces"',
        ),
        ("/experiments", {"display_name": "w", "description": 5}, 400, "string field description"),
        ("/experiments", {"description": "no name"}, 500, "Experiment must have a non-empty name"),
        ("/pipelines", {"display_name": "p", "tag": {}}, 400, 'unknown field "tag"'),
        ("/pipelines", {"description": "no name"}, 400, "name is required"),
        ("/pipelines", ["not", "an", "object"], 400, "invalid value for message field"),
    ],
)
def test_experiments_and_pipelines_are_refused_as_the_server_refuses_them(
    stand: Stand, path: str, body: Any, status: int, message: str
) -> None:
    before = (len(stand.fake.experiments), len(stand.fake.pipelines))
    code, answer = _post(stand.url, path, body)
    assert code == status, answer
    assert message in answer["message"]
    assert (len(stand.fake.experiments), len(stand.fake.pipelines)) == before


def test_a_body_that_is_not_json_is_refused(stand: Stand) -> None:
    code, answer = _send(f"{stand.url}{API}/runs", b"{display_name: x}", "application/json")
    assert code == 400 and answer["message"].startswith("proto: syntax error")


def _spec_with(edit: Any) -> bytes:
    docs = list(yaml.load_all(SPEC, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    edit(docs)
    return yaml.dump_all(docs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)).encode()


def _unknown_spec_field(docs: list[Any]) -> None:
    docs[0]["root"]["dag"]["taskz"] = {}


def _unknown_input_type(docs: list[Any]) -> None:
    docs[0]["root"]["inputDefinitions"]["parameters"]["seed"]["parameterType"] = "INT"


def _old_schema(docs: list[Any]) -> None:
    docs[0]["schemaVersion"] = "2.0.0"


def _no_root(docs: list[Any]) -> None:
    del docs[0]["root"]


def _bad_platform(docs: list[Any]) -> None:
    docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executorz"] = {}


def _two_specs(docs: list[Any]) -> None:
    docs.append(docs[0])


@pytest.mark.parametrize(
    ("edit", "message", "details"),
    [
        (_unknown_spec_field, "unknown template format", 'no field named "taskz"'),
        (_unknown_input_type, "unknown template format", "INT"),
        (_no_root, "unknown template format", "no pipelineInfo.name or no root"),
        (_old_schema, "KFP only supports schema version 2.1.0, but the pipeline spec has "
                      "version 2.0.0", ""),
        (_bad_platform, "cannot unmarshal platform specific configs", "executorz"),
        (_two_specs, "multiple pipeline specs provided", ""),
    ],
)  # fmt: skip
def test_an_invalid_pipeline_spec_is_refused_on_upload(
    stand: Stand, edit: Any, message: str, details: str
) -> None:
    code, answer = _upload(stand.url, f"pipelineid={stand.pipeline_id}&name=v2", _spec_with(edit))
    assert code == 400, answer
    assert message in answer["error_message"] and details in answer["error_details"]
    assert len(stand.fake.versions[stand.pipeline_id]) == 1


def test_uploads_refused_for_their_request(stand: Stand) -> None:
    valid = _spec_with(lambda docs: None)
    query = f"pipelineid={stand.pipeline_id}"
    assert _upload(stand.url, f"{query}&name=v1", valid)[0] == 409  # the name exists
    assert _upload(stand.url, "name=v2", valid)[0] == 400  # no pipeline id
    assert _upload(stand.url, "pipelineid=pipeline-9999&name=v2", valid)[0] == 400
    assert _upload(stand.url, f"{query}&name=v2", valid, filename="spec.txt")[0] == 400
    assert _upload(stand.url, f"{query}&name=v2", b"a: [unclosed")[0] == 400
    assert len(stand.fake.versions[stand.pipeline_id]) == 1
    code, version = _upload(stand.url, f"{query}&name=v2", valid)  # and the twin passes
    assert code == 200, version


def test_submit_reports_a_refused_upload_with_the_servers_reason(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload endpoint's errors are not a google.rpc.Status: `ctrflow submit` still shows
    the server's reason, in one line, and starts no run."""
    from ctrflow.pipelines import ctr_pipeline
    from tests.pipelines.runs.test_remote import SUBMIT, _cli, cli_exit

    compile_pipeline = ctr_pipeline.compile_pipeline

    def old_schema(path: Any, image: str) -> Any:
        out = compile_pipeline(path, image)
        out.write_text(out.read_text().replace("schemaVersion: 2.1.0", "schemaVersion: 2.0.0"))
        return out

    monkeypatch.setattr(ctr_pipeline, "compile_pipeline", old_schema)
    monkeypatch.delenv("CTRFLOW_KFP_TOKEN", raising=False)
    fake = FakeKfp(token=None)
    with serve(fake) as url:
        code, out, err = _cli(capsys, "submit", "--host", url, *SUBMIT)
    assert code == cli_exit("EXIT_API"), err
    assert "uploading version" in err and "HTTP 400" in err
    assert "KFP only supports schema version 2.1.0, but the pipeline spec has version 2.0.0" in err
    assert len(err.strip().splitlines()) == 1 and out == ""
    assert fake.runs == {} and not fake.called("POST", f"{API}/runs")
