"""`ctrflow submit` and `ctrflow schedule` against a local stand-in of the KFP v2beta1 API.

This is a contract test: no Kubeflow Pipelines API server can run on this machine (it needs a
Kubernetes cluster, Argo and MySQL), so the real `kfp.Client` talks to a small HTTP server on
127.0.0.1 that implements the v2beta1 endpoints these commands call, with the API's wire format
(snake_case JSON, multipart pipeline upload, list filters, bearer-token auth), and records every
request. The tests check what reaches the server: pipeline and version upload, run creation
with its parameters, and the recurring run's 6-field cron, pinned version, max_concurrency and
no_catchup.

The stand-in refuses what the real server refuses (a recorded contract, ported from the KFP API
server's source; test_kfp_standin.py proves each refusal): every body is decoded strictly into
its kfp_server_api model (tests/testkit/kfp_models.py), an uploaded spec must parse as a
PipelineSpec protobuf, and a run's or recurring run's parameters must match the spec's root
inputs (tests/testkit/kfp_rules.py). So every request these tests make is one a real server
would take.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import itertools
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

import ctrflow
from ctrflow.pipelines import cli
from ctrflow.pipelines._image import default_image
from tests.testkit.kfp_models import ModelError, parse_model
from tests.testkit.kfp_rules import (
    INTERNAL,
    INVALID,
    Refusal,
    cron_error,
    parse_pipeline_file,
    runtime_parameter_error,
)

API = "/apis/v2beta1"
TOKEN = "kfp-test-token-1234"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any  # JSON, or for uploads {"file": bytes}
    authorization: str


@dataclass
class FakeKfp:
    """State and request log of the stand-in API server."""

    token: str | None = TOKEN
    multi_user: bool = False
    requests: list[Request] = field(default_factory=list)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    recurring: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (method, path) -> HTTP status the stand-in answers instead, to test failures mid-way.
    fail: dict[tuple[str, str], int] = field(default_factory=dict)
    # run id -> states GET /runs/{id} reports in turn (the last one repeats), as a run progresses.
    run_progress: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    progress_of_new_runs: list[dict[str, Any]] = field(default_factory=list)
    specs: dict[str, Any] = field(default_factory=dict)  # version id -> parsed PipelineSpec

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self.lock = threading.Lock()

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids):04d}"

    def called(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == path]

    # -- creation, with the checks of the real server (tests/testkit/kfp_rules.py) ---------
    def create_pipeline(self, body: Any) -> dict[str, Any]:
        parse_model(body, "V2beta1Pipeline")
        if not (body.get("name") or body.get("display_name")):
            raise Refusal(
                INVALID,
                "Failed to create a pipeline due to server error: Invalid input error: "
                "name is required",
            )
        pipeline = {**body, "pipeline_id": self.new_id("pipeline")}
        pipeline.setdefault("name", pipeline.get("display_name"))
        pipeline.setdefault("display_name", pipeline["name"])
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        self.versions[pipeline["pipeline_id"]] = []
        return pipeline

    def upload_version(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """POST /pipelines/upload_version: errors as the upload handler writes them (an
        apiv1beta1.Error body, not a google.rpc.Status)."""

        def refused(status: int, message: str, details: str = "") -> tuple[int, Any]:
            return status, {"error_message": message, "error_details": details or message}

        failed = "Failed to create a pipeline version"
        files = (body or {}).get("files", {}) if isinstance(body, dict) else {}
        if "uploadfile" not in files:
            return refused(400, failed, "http: no such file")
        pipeline_id = query.get("pipelineid", "")
        if pipeline_id not in self.pipelines:  # the server answers 400 for an unknown id, too
            return refused(400, failed, f"pipeline {pipeline_id!r} not found")
        filename = body["filenames"]["uploadfile"] or ""
        name = query.get("name") or query.get("display_name") or filename
        if any(v["name"] == name for v in self.versions[pipeline_id]):
            return refused(409, failed, f"pipeline version {name!r} already exists")
        try:
            spec = parse_pipeline_file(filename, files["uploadfile"])
        except Refusal as exc:
            return refused(exc.status, exc.message, exc.details)
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": self.new_id("version"),
            "display_name": query.get("display_name") or name,
            "name": name,
            "description": query.get("description", ""),
            "pipeline_spec": json_format.MessageToDict(spec),
            "created_at": f"2026-11-{len(self.versions[pipeline_id]) + 1:02d}T00:00:00Z",
        }
        self.specs[version["pipeline_version_id"]] = spec
        self.versions[pipeline_id].append(version)
        return 200, version

    def create_experiment(self, body: Any) -> dict[str, Any]:
        parse_model(body, "V2beta1Experiment")
        if not body.get("display_name"):
            raise Refusal(
                INTERNAL,
                "[ExperimentServer]: Failed to create a experiment due to conversion error: "
                "InternalServerError: Failed to convert API experiment to model experiment: "
                "Invalid input error: Experiment must have a non-empty name",
            )
        experiment = {**body, "experiment_id": self.new_id("experiment")}
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _spec_of(self, body: dict[str, Any], doing: str) -> Any:
        """The PipelineSpec a run or recurring run refers to (ResourceManager
        .fetchPipelineVersionFromPipelineSpec): the version, else the pipeline's latest
        version, else an inline spec."""
        ref = body.get("pipeline_version_reference") or {}
        version_id, pipeline_id = ref.get("pipeline_version_id"), ref.get("pipeline_id")
        if version_id:
            owners = [p for p, vs in self.versions.items() for v in vs
                      if v["pipeline_version_id"] == version_id]  # fmt: skip
            owner = owners[0] if owners else None
            if owner is None:
                raise Refusal(INTERNAL, f"{doing}: pipeline version {version_id} not found")
            if pipeline_id and pipeline_id != owner:
                raise Refusal(
                    INTERNAL,
                    f"{doing}: Invalid input error: Pipeline version {version_id} belongs to "
                    f"pipeline {owner} (not {pipeline_id})",
                )
            return self.specs[version_id]
        if pipeline_id:
            if not self.versions.get(pipeline_id):
                raise Refusal(INTERNAL, f"{doing}: pipeline {pipeline_id} has no version")
            return self.specs[self.versions[pipeline_id][-1]["pipeline_version_id"]]
        if body.get("pipeline_spec"):
            return parse_pipeline_file(".json", json.dumps(body["pipeline_spec"]).encode())
        raise Refusal(
            INTERNAL, f"{doing}: Failed to fetch a template with an empty pipeline spec manifest"
        )

    def _check_experiment(self, body: dict[str, Any], doing: str) -> None:
        experiment_id = body.get("experiment_id")
        if experiment_id and experiment_id not in self.experiments:
            raise Refusal(404, f"{doing}: Experiment {experiment_id} not found")

    def create_run(self, body: Any) -> dict[str, Any]:
        parse_model(body, "V2beta1Run")
        doing = "Failed to create a new run"
        if body.get("plugins_output") is not None:
            raise Refusal(409, "plugins_output must not be set by the client")
        if not body.get("display_name"):
            raise Refusal(
                INTERNAL,
                f"{doing}: InternalServerError: Failed to convert a API run detail to its "
                "internal representation: Invalid input error: Run name cannot be empty",
            )
        self._check_experiment(body, doing)
        spec = self._spec_of(body, doing)
        error = runtime_parameter_error(spec, body.get("runtime_config"))
        if error:
            raise Refusal(
                INVALID,
                f"{doing}: Failed to generate the ExecutionSpec: invalid pipeline job inputs: "
                f"Invalid input error: {error}",
            )
        run = {**body, "run_id": self.new_id("run"), "state": "PENDING"}
        self.runs[run["run_id"]] = run
        if self.progress_of_new_runs:
            self.run_progress[run["run_id"]] = list(self.progress_of_new_runs)
        return run

    def create_recurring_run(self, body: Any) -> dict[str, Any]:
        parse_model(body, "V2beta1RecurringRun")
        doing = "Failed to create a recurring run"
        if not body.get("display_name"):
            raise Refusal(
                INTERNAL,
                f"{doing} due to conversion error: InternalServerError: Failed to convert a "
                "API recurring run to its internal representation: Invalid input error: "
                "Recurring run's name cannot be empty",
            )
        concurrency = int(body.get("max_concurrency") or 0)
        if not 1 <= concurrency <= 10:
            raise Refusal(
                INVALID,
                f"{doing} due to conversion error: Invalid input error: Max concurrency of a "
                f"recurring run must be at least 1 and at most 10. Received {concurrency}",
            )
        trigger = body.get("trigger") or {}
        cron = (trigger.get("cron_schedule") or {}).get("cron")
        if cron is not None and cron_error(cron):
            raise Refusal(
                INVALID,
                f"{doing} due to conversion error: Invalid input error: Schedule cron is not a "
                "supported format(https://godoc.org/github.com/robfig/cron). Error: "
                + cron_error(cron),
            )
        interval = (trigger.get("periodic_schedule") or {}).get("interval_second")
        if interval is not None and int(interval) < 1:
            raise Refusal(
                INVALID,
                f"{doing} due to conversion error: Invalid input error: Found invalid period "
                f"schedule interval {int(interval)}. Set at interval to least 1 second",
            )
        self._check_experiment(body, doing)
        spec = self._spec_of(body, doing)
        error = runtime_parameter_error(spec, body.get("runtime_config"))
        if error:
            raise Refusal(
                INVALID,
                f"{doing}: Failed to create a recurring run during scheduled workflow "
                f"creation: invalid pipeline job inputs: Invalid input error: {error}",
            )
        job = {**body, "recurring_run_id": self.new_id("recurring")}
        self.recurring[job["recurring_run_id"]] = job
        return job


class _Unreadable:
    """A body that is not JSON: the server's decoder refuses it before any handler runs."""

    def __init__(self, message: str) -> None:
        self.message = message


def _matches(item: dict[str, Any], query: dict[str, str]) -> bool:
    """The subset of KFP's list filters the SDK sends: EQUALS on display_name; namespace."""
    if "namespace" in query and (item.get("namespace") or "") != query["namespace"]:
        return False
    if "filter" in query:
        for predicate in json.loads(query["filter"])["predicates"]:
            assert predicate["operation"] in ("EQUALS", 1), predicate
            value = predicate.get("stringValue", predicate.get("string_value"))
            if item.get(predicate["key"]) != value:
                return False
    return True


# gRPC status codes of the HTTP statuses the stand-in answers (grpc-gateway's mapping).
_GRPC_CODES = {400: 3, 401: 16, 404: 5, 409: 10, 500: 13}


def _status_body(status: int, message: str) -> dict[str, Any]:
    """grpc-gateway's error body: a google.rpc.Status."""
    code = _GRPC_CODES.get(status, 2)
    detail = {"@type": "type.googleapis.com/google.rpc.Status", "code": code, "message": message}
    return {"code": code, "message": message, "details": [detail]}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        kind = self.headers.get("Content-Type", "")
        if kind.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {kind}\r\n\r\n".encode() + raw
            )
            parts = list(message.iter_parts())
            key = "content-disposition"
            return {
                "files": {
                    p.get_param("name", header=key): p.get_payload(decode=True) for p in parts
                },
                "filenames": {p.get_param("name", header=key): p.get_filename() for p in parts},
            }
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            return _Unreadable(f"proto: syntax error: {exc}")

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        body = self._body()
        auth = self.headers.get("Authorization", "")
        with fake.lock:
            fake.requests.append(Request(method, url.path, query, body, auth))
            if fake.token is not None and auth != f"Bearer {fake.token}":
                self._reply(401, {"error": "unauthorized", "code": 16, "message": "bad token"})
                return
            failure = fake.fail.get((method, url.path))
            if failure:
                status, payload = failure, {"message": "injected failure", "code": 13}
            else:
                try:
                    status, payload = self._route(method, url.path.removeprefix(API), query, body)
                except ModelError as exc:
                    status, payload = 400, _status_body(400, str(exc))
                except Refusal as exc:
                    status, payload = exc.status, _status_body(exc.status, exc.message)
        self._reply(status, payload)

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        fake = self.server.fake
        parts = path.strip("/").split("/")
        if isinstance(body, _Unreadable):
            return 400, _status_body(400, body.message)
        if method == "GET" and path == "/healthz":
            return 200, {"multi_user": fake.multi_user}
        if path == "/pipelines" and method == "GET":
            found = [p for p in fake.pipelines.values() if _matches(p, query)]
            return 200, {"pipelines": found, "total_size": len(found)}
        if path == "/pipelines" and method == "POST":
            return 200, fake.create_pipeline(body)
        if path == "/pipelines/upload_version" and method == "POST":
            return fake.upload_version(query, body)
        if len(parts) == 3 and parts[0] == "pipelines" and parts[2] == "versions":
            if parts[1] not in fake.versions:
                return 404, _status_body(404, f"pipeline {parts[1]} not found")
            found = [v for v in fake.versions[parts[1]] if _matches(v, query)]
            return 200, {"pipeline_versions": found, "total_size": len(found)}
        if path == "/experiments" and method == "GET":
            found = [e for e in fake.experiments.values() if _matches(e, query)]
            return 200, {"experiments": found, "total_size": len(found)}
        if path == "/experiments" and method == "POST":
            return 200, fake.create_experiment(body)
        if path == "/runs" and method == "POST":
            return 200, fake.create_run(body)
        if parts[0] == "runs" and len(parts) == 2 and method == "GET":
            if parts[1] not in fake.runs:
                return 404, _status_body(404, f"run {parts[1]} not found")
            progress = fake.run_progress.get(parts[1])
            if progress:
                fake.runs[parts[1]].update(progress.pop(0) if len(progress) > 1 else progress[0])
            return 200, fake.runs[parts[1]]
        if path == "/recurringruns" and method == "POST":
            return 200, fake.create_recurring_run(body)
        if path == "/recurringruns" and method == "GET":
            found = [j for j in fake.recurring.values() if _matches(j, query)]
            # The one camelCase field of the v2beta1 list responses (proto json_name).
            return 200, {"recurringRuns": found, "total_size": len(found)}
        if parts[0] == "recurringruns" and len(parts) == 2:
            job_id, _, verb = parts[1].partition(":")
            if job_id not in fake.recurring:
                return 404, _status_body(404, f"recurring run {job_id} not found")
            if method == "POST" and verb == "disable":
                fake.recurring[job_id]["mode"] = "DISABLE"
                return 200, {}
            if method == "DELETE" and not verb:
                del fake.recurring[job_id]
                return 200, {}
        return 404, _status_body(404, f"no route {method} {path}")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


class _Server(ThreadingHTTPServer):
    fake: FakeKfp


@contextlib.contextmanager
def serve(fake: FakeKfp) -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = fake
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def kfp_api() -> Iterator[tuple[FakeKfp, str]]:
    fake = FakeKfp()
    with serve(fake) as url:
        yield fake, url


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


SUBMIT = (
    "--data",
    "gs://ads-logs/week-48/*.parquet",
    "--model-name",
    "ctr-test",
    "--workers",
    "3",
    "--budget",
    "30",
    "--promotion-margin",
    "0.001",
)


@pytest.fixture(autouse=True)
def _token_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The token reaches the CLI the one way it accepts besides a file: the environment."""
    monkeypatch.setenv("CTRFLOW_KFP_TOKEN", TOKEN)


def test_submit_uploads_the_pipeline_then_reuses_it(
    kfp_api: tuple[FakeKfp, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = kfp_api
    code, out, err = _cli(
        capsys, "submit", "--host", url, "--namespace", "team-a", "--experiment", "weekly",
        *SUBMIT, "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)

    created = fake.called("POST", f"{API}/pipelines")
    assert len(created) == 1
    assert created[0].body["display_name"] == "ctrflow"
    assert created[0].body["namespace"] == "team-a"
    uploads = fake.called("POST", f"{API}/pipelines/upload_version")
    assert len(uploads) == 1
    upload = uploads[0]
    assert upload.query["name"] == ctrflow.__version__
    assert upload.query["pipelineid"] == created[0].body.get("pipeline_id", result["pipeline_id"])
    assert f"image {default_image()}" in upload.query["description"]
    assert "spec sha256:" in upload.query["description"]
    spec = next(yaml.safe_load_all(upload.body["files"]["uploadfile"]))
    assert spec["pipelineInfo"]["name"] == "ctrflow"
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {default_image()}

    experiments = fake.called("POST", f"{API}/experiments")
    assert [e.body["display_name"] for e in experiments] == ["weekly"]
    assert experiments[0].body["namespace"] == "team-a"

    runs = fake.called("POST", f"{API}/runs")
    assert len(runs) == 1
    run = runs[0].body
    assert run["experiment_id"] == fake.experiments[next(iter(fake.experiments))]["experiment_id"]
    version = fake.versions[result["pipeline_id"]][0]
    assert run["pipeline_version_reference"] == {
        "pipeline_id": result["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert run["runtime_config"]["parameters"] == {
        "data_uri": "gs://ads-logs/week-48/*.parquet",
        "model_name": "ctr-test",
        "n_workers": 3,
        "trial_budget": 30,
        "promotion_margin": 0.001,
    }
    assert "pipeline_spec" not in run or run["pipeline_spec"] is None  # by reference only
    assert result["run_id"] in fake.runs
    assert result["uploaded_version"] is True
    assert all(r.authorization == f"Bearer {TOKEN}" for r in fake.requests)
    assert TOKEN not in out + err

    # Same ctrflow version, same spec: the pipeline and its version are reused.
    code, out, err = _cli(
        capsys, "submit", "--host", url, "--namespace", "team-a", "--experiment", "weekly",
        *SUBMIT, "--json",
    )  # fmt: skip
    assert code == 0, err
    again = json.loads(out)
    assert len(fake.called("POST", f"{API}/pipelines")) == 1
    assert len(fake.called("POST", f"{API}/pipelines/upload_version")) == 1
    assert len(fake.called("POST", f"{API}/experiments")) == 1
    assert again["version_id"] == result["version_id"]
    assert again["uploaded_version"] is False
    assert len(fake.runs) == 2


def test_same_version_name_with_another_spec_is_refused(
    kfp_api: tuple[FakeKfp, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = kfp_api
    assert _cli(capsys, "submit", "--host", url, *SUBMIT)[0] == 0
    code, _, err = _cli(
        capsys, "submit", "--host", url, *SUBMIT, "--image", "registry.example/ctrflow:patched"
    )
    assert code == cli_exit("EXIT_API")
    assert f"already has a version {ctrflow.__version__!r} with a different spec" in err
    assert "--version-name" in err
    assert len(fake.called("POST", f"{API}/pipelines/upload_version")) == 1
    assert len(fake.runs) == 1

    code, out, err = _cli(
        capsys, "submit", "--host", url, *SUBMIT, "--image", "registry.example/ctrflow:patched",
        "--version-name", "0.1.0-patched", "--json",
    )  # fmt: skip
    assert code == 0, err
    uploads = fake.called("POST", f"{API}/pipelines/upload_version")
    assert [u.query["name"] for u in uploads] == [ctrflow.__version__, "0.1.0-patched"]
    assert json.loads(out)["version_name"] == "0.1.0-patched"


def cli_exit(name: str) -> int:
    from ctrflow.pipelines.cli import pipeline as _cli_pipeline

    return int(getattr(_cli_pipeline, name))


def test_schedule_creates_a_pinned_recurring_run(
    kfp_api: tuple[FakeKfp, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = kfp_api
    code, out, err = _cli(
        capsys, "schedule", "apply", "--host", url, "--cron", "0 3 * * 1", "--name", "weekly ctr",
        *SUBMIT, "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    jobs = fake.called("POST", f"{API}/recurringruns")
    assert len(jobs) == 1
    job = jobs[0].body
    version = fake.versions[result["pipeline_id"]][0]
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert "periodic_schedule" not in job["trigger"]
    assert int(job["max_concurrency"]) == 1
    assert job["no_catchup"] is True
    assert job["mode"] == "ENABLE"
    assert job["display_name"] == "weekly ctr"
    assert job["pipeline_version_reference"] == {
        "pipeline_id": result["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert job["runtime_config"]["parameters"]["data_uri"] == "gs://ads-logs/week-48/*.parquet"
    assert job["runtime_config"]["parameters"]["n_workers"] == 3
    assert result["cron"] == "0 0 3 * * 1"
    assert not fake.runs  # a schedule starts no run by itself


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 3 * * 8", "day of week field: 8"),
        ("0 0 3 * * 1", "has 6 fields; expected 5"),
        ("every monday", "has 2 fields"),
    ],
)
def test_invalid_cron_is_rejected_before_any_request(
    kfp_api: tuple[FakeKfp, str], capsys: pytest.CaptureFixture[str], cron: str, message: str
) -> None:
    fake, url = kfp_api
    code, out, err = _cli(
        capsys, "schedule", "apply", "--name", "w", "--host", url, "--cron", cron, *SUBMIT
    )
    assert code == cli_exit("EXIT_BAD_INPUT")
    assert err.startswith("ctrflow schedule apply: ")
    assert message in err
    assert fake.requests == []
    assert out == ""


def test_schedule_list_disable_delete(
    kfp_api: tuple[FakeKfp, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = kfp_api
    auth = ("--host", url)
    code, out, _ = _cli(
        capsys, "schedule", "apply", "--name", "nightly", "--cron", "30 2 * * *", *SUBMIT,
        "--host", url, "--json",
    )  # fmt: skip
    assert code == 0
    job_id = json.loads(out)["recurring_run_id"]

    code, out, _ = _cli(capsys, "schedule", "list", *auth, "--json")
    assert code == 0
    listed = json.loads(out)
    assert [(s["recurring_run_id"], s["cron"], s["mode"]) for s in listed] == [
        (job_id, "0 30 2 * * *", "ENABLE")
    ]
    assert listed[0]["pipeline_version_name"] == ctrflow.__version__
    assert listed[0]["latest_version"] is True
    assert listed[0]["next_run_utc"].endswith("T02:30:00Z")

    code, out, _ = _cli(capsys, "schedule", "disable", job_id, *auth)
    assert code == 0
    assert fake.called("POST", f"{API}/recurringruns/{job_id}:disable")
    code, out, _ = _cli(capsys, "schedule", "list", *auth)
    assert job_id in out and "DISABLE" in out

    code, out, _ = _cli(capsys, "schedule", "delete", job_id, *auth)
    assert code == 0
    assert fake.called("DELETE", f"{API}/recurringruns/{job_id}")
    assert fake.recurring == {}

    code, _, err = _cli(capsys, "schedule", "delete", *auth)
    assert code == cli_exit("EXIT_BAD_INPUT")
    assert err.startswith("ctrflow schedule delete: ") and "required: ID" in err
    code, _, err = _cli(capsys, "schedule", "delete", "recurring-9999", *auth)
    assert code == cli_exit("EXIT_API")
    assert "HTTP 404" in err and "recurring run recurring-9999 not found" in err


def test_token_from_environment_and_rejected_token(
    kfp_api: tuple[FakeKfp, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = kfp_api
    args = ("submit", "--host", url, "--data", "s3://logs/x.csv")
    monkeypatch.setenv("CTRFLOW_KFP_TOKEN", TOKEN)
    assert _cli(capsys, *args)[0] == 0
    assert fake.requests and all(r.authorization == f"Bearer {TOKEN}" for r in fake.requests)

    monkeypatch.setenv("CTRFLOW_KFP_TOKEN", "wrong-token-5678")
    code, out, err = _cli(capsys, *args)
    assert code == cli_exit("EXIT_API")
    assert f"KFP API at {url}" in err and "HTTP 401" in err and "check the token" in err
    assert "wrong-token-5678" not in out + err


def test_submit_needs_data_and_valid_parameters(
    kfp_api: tuple[FakeKfp, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = kfp_api
    code, _, err = _cli(capsys, "submit", "--host", url)
    assert code == cli_exit("EXIT_BAD_INPUT")
    assert err.strip() == (
        "ctrflow submit: the following arguments are required: --data (see `ctrflow submit --help`)"
    )
    code, _, err = _cli(capsys, "submit", "--host", url, *SUBMIT, "--model-type", "lightgbm")
    assert code == cli_exit("EXIT_BAD_INPUT")
    assert "--model-type 'lightgbm'" in err and "ffm" in err
    code, _, err = _cli(capsys, "submit", "--host", url, *SUBMIT, "--workers", "51")
    assert code == cli_exit("EXIT_BAD_INPUT")
    assert "--workers must be between 1 and 50" in err
    assert fake.requests == []


def test_unreachable_host_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    with serve(FakeKfp()) as url:
        pass  # the port is closed again: nothing listens there now
    code, _, err = _cli(capsys, "submit", "--host", url, *SUBMIT)
    assert code == cli_exit("EXIT_API")
    assert f"KFP API at {url}" in err


def test_token_on_the_command_line_is_refused_and_a_token_file_works(
    kfp_api: tuple[FakeKfp, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    """A token in argv shows in `ps` and shell history: the CLI takes it from the environment
    or a file only."""
    fake, url = kfp_api
    code, out, err = _cli(capsys, "submit", "--host", url, *SUBMIT, "--token", TOKEN)
    assert code == cli_exit("EXIT_BAD_INPUT")
    assert "--token is refused" in err and "CTRFLOW_KFP_TOKEN" in err and "--token-file" in err
    assert TOKEN not in out + err
    assert fake.requests == []

    monkeypatch.delenv("CTRFLOW_KFP_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert _cli(capsys, "submit", "--host", url, *SUBMIT, "--token-file", str(token_file))[0] == 0
    assert fake.requests and all(r.authorization == f"Bearer {TOKEN}" for r in fake.requests)


@pytest.mark.parametrize(
    ("flag", "uri", "user"),
    [
        ("--mlflow-uri", "http://admin:s3cret@mlflow.example:5000", "admin"),
        ("--mlflow-uri", "https://tok3n@mlflow.example", "tok3n"),
        ("--data", "s3://AKIAEXAMPLE:s3cret@logs/week-48/*.parquet", "AKIAEXAMPLE"),
        ("--feature-spec", "https://u:s3cret@specs.example/criteo.json", "u"),
    ],
)
def test_uris_with_credentials_are_refused_before_any_request(
    kfp_api: tuple[FakeKfp, str],
    capsys: pytest.CaptureFixture[str],
    flag: str,
    uri: str,
    user: str,
) -> None:
    """Run parameters are stored and shown by KFP: a URI with user-info never becomes one."""
    fake, url = kfp_api
    args = [a for a in SUBMIT]
    if flag == "--data":
        args[args.index("--data") + 1] = uri
    else:
        args += [flag, uri]
    for command in (["submit"], ["schedule", "apply", "--name", "weekly", "--cron", "0 3 * * 1"]):
        code, out, err = _cli(capsys, *command, "--host", url, *args)
        assert code == cli_exit("EXIT_BAD_INPUT"), err
        assert f"{flag}: the URI carries credentials ({user}:***@)" in err
        assert "Secret" in err and "s3cret" not in out + err
    assert fake.requests == []


def test_uris_without_credentials_pass(
    kfp_api: tuple[FakeKfp, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = kfp_api
    code, _, err = _cli(
        capsys, "submit", "--host", url, *SUBMIT, "--mlflow-uri", "http://ctrflow-mlflow:5000",
        "--feature-spec", "gs://specs/v2@2026.json",
    )  # fmt: skip
    assert code == 0, err
    params = fake.called("POST", f"{API}/runs")[0].body["runtime_config"]["parameters"]
    assert params["mlflow_tracking_uri"] == "http://ctrflow-mlflow:5000"
    assert params["feature_spec_uri"] == "gs://specs/v2@2026.json"


def test_endpoint_from_kf_pipelines_endpoint_when_no_host(
    kfp_api: tuple[FakeKfp, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = kfp_api
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    code, _, err = _cli(capsys, "submit", *SUBMIT)
    assert code == cli_exit("EXIT_BAD_INPUT")
    assert err.strip() == (
        "ctrflow submit: no KFP endpoint: pass --host URL or set $KF_PIPELINES_ENDPOINT"
    )
    assert fake.requests == []
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", url)
    code, _, err = _cli(capsys, "submit", *SUBMIT)
    assert code == 0, err
    assert len(fake.runs) == 1
