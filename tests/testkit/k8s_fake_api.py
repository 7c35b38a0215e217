"""A local stand-in for the Kubernetes API server, for contract tests of `ctrflow hpo launch` and
`ctrflow cluster check`.

No Kubernetes API server can run on this machine (no container runtime, no etcd), so the tests
run the real `kubernetes` client against this HTTP server on 127.0.0.1. It implements only the
endpoints those commands call, with the wire format of the real API (JSON objects, watch streams
of newline-delimited events, Status bodies on errors), records every request, authorizes with the
rules of an RBAC Role when given one, and moves the pods of a created Job through a scripted
scenario, one step per watch request.

Every POST body (a Job, a SelfSubjectAccessReview) is checked as the API server's admission
does, against the official OpenAPI schemas: kubernetes-validate's strict schemas of Kubernetes
1.30 and of the newest version it bundles, the check the launch tests apply to the Job. A body
that fails is answered 422 Invalid with a Status naming the field, like the real server; one
whose apiVersion or kind does not match the endpoint, or that is not a JSON object, 400
BadRequest. Stricter than a real server on one point, on purpose: the real one drops an unknown
field with a warning (fieldValidation=Warn, the default for API clients), which would be a
silently wrong object; here it is refused.

Loaded by path from the test modules (pytest runs with --import-mode=importlib).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import pathlib
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kubernetes_validate

TS = "2026-11-29T10:00:00Z"
SCHEMA_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())


def openapi_error(manifest: dict[str, Any]) -> tuple[str, str]:
    """(field, message) of the first violation of the strict OpenAPI schemas of every version
    in SCHEMA_VERSIONS, or ("", "") when `manifest` passes them all."""
    for version in SCHEMA_VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            field = "".join(
                f"[{step}]" if isinstance(step, int) else f".{step}" for step in exc.absolute_path
            ).lstrip(".")
            return field or "<root>", f"{exc.message} (Kubernetes {version} schema)"
        except kubernetes_validate.SchemaNotFoundError as exc:
            return "kind", exc.message
    return "", ""


# POST endpoints the stand-in serves: (path parts that identify it) -> (apiVersion, kind).
_POST_KINDS = {
    ("apis", "batch", "v1", "jobs"): ("batch/v1", "Job"),
    ("apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"): (
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
    ),
}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


# A scenario step: completion index -> state name (see FakeKubernetes._apply_state), or the
# string "expire" (answer the watch with 410 Gone, as when the resourceVersion is too old).
Step = dict[int, str] | str


@dataclass
class FakeKubernetes:
    namespace: str = "hpo-test"
    token: str = "fake-token"
    steps: list[Step] = field(default_factory=list)
    logs: dict[int, str] = field(default_factory=dict)  # completion index -> log text
    role_rules: list[dict[str, Any]] | None = None  # None: everything allowed
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    on_watch: Callable[[], None] | None = None  # called when a watch request arrives
    block_watch: bool = False  # hold watch requests open until stop() (for Ctrl-C tests)

    def __post_init__(self) -> None:
        self.requests: list[Recorded] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self._rv = itertools.count(100)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Where a test wrote this server's kubeconfig (write_kubeconfig): declared, not set.
        self.kubeconfig: pathlib.Path

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                fake._dispatch(self, "GET")

            def do_POST(self) -> None:
                fake._dispatch(self, "POST")

            def do_DELETE(self) -> None:
                fake._dispatch(self, "DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def write_kubeconfig(self, path: pathlib.Path, url: str, *, extra_context: str = "") -> None:
        """A kubeconfig whose current context points at this server with a bearer token;
        `extra_context` adds a second context of that name (namespace `<name>-ns`)."""
        contexts = [
            {
                "name": "fake",
                "context": {"cluster": "fake", "user": "tester", "namespace": self.namespace},
            }
        ]
        if extra_context:
            contexts.append(
                {
                    "name": extra_context,
                    "context": {
                        "cluster": "fake",
                        "user": "tester",
                        "namespace": f"{extra_context}-ns",
                    },
                }
            )
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": url}}],
            "users": [{"name": "tester", "user": {"token": self.token}}],
            "contexts": contexts,
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))  # JSON is YAML

    def requests_to(self, method: str, suffix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    # -- authorization --------------------------------------------------------------------
    def allowed(
        self, verb: str, group: str, resource: str, subresource: str = "", name: str = ""
    ) -> bool:
        """RBAC's rule matching for one namespaced request (no aggregation, no wildcards
        beyond `*`)."""
        if self.role_rules is None:
            return True
        full = f"{resource}/{subresource}" if subresource else resource
        for rule in self.role_rules:
            groups, resources = rule.get("apiGroups", []), rule.get("resources", [])
            verbs, names = rule.get("verbs", []), rule.get("resourceNames", [])
            if not ({group, "*"} & set(groups)):
                continue
            if not ({full, "*"} & set(resources)):
                continue
            if not ({verb, "*"} & set(verbs)):
                continue
            if names and name not in names:
                continue
            return True
        return False

    # -- HTTP -----------------------------------------------------------------------------
    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urllib.parse.urlsplit(handler.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw  # not JSON: a POST refuses it (400), as the server's decoder does
        with self._lock:
            self.requests.append(
                Recorded(
                    method,
                    parsed.path,
                    query,
                    body,
                    {k.lower(): v for k, v in handler.headers.items()},
                )
            )
        if handler.headers.get("Authorization") != f"Bearer {self.token}":
            self._status(handler, 401, "Unauthorized", "no or wrong bearer token")
            return
        parts = parsed.path.strip("/").split("/")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client went away
            self._route(handler, method, parts, query, body)

    def _route(
        self,
        handler: BaseHTTPRequestHandler,
        method: str,
        parts: list[str],
        query: dict[str, str],
        body: Any,
    ) -> None:
        ns = self.namespace
        if (
            parts[:2] == ["apis", "authorization.k8s.io"]
            and parts[-1] == "selfsubjectaccessreviews"
        ):
            if not self._admitted(handler, parts, body):
                return
            attrs = body["spec"].get("resourceAttributes") or {}
            ok = self.allowed(
                attrs.get("verb", ""),
                attrs.get("group", ""),
                attrs.get("resource", ""),
                attrs.get("subresource", ""),
                attrs.get("name", ""),
            )
            answer = copy.deepcopy(body)
            answer["status"] = {"allowed": ok}
            if not ok:
                answer["status"]["reason"] = "no RBAC rule matched"
            self._json(handler, 201, answer)
            return
        if "namespaces" in parts:
            asked = parts[parts.index("namespaces") + 1]
            if asked != ns:
                self._status(handler, 404, "NotFound", f'namespaces "{asked}" not found')
                return
        # /apis/batch/v1/namespaces/{ns}/jobs[/{name}[/status]]
        if parts[:2] == ["apis", "batch"] and parts[5:6] == ["jobs"]:
            name = parts[6] if len(parts) > 6 else ""
            verb = {"POST": "create", "DELETE": "delete"}.get(method, "get")
            if not self.allowed(verb, "batch", "jobs", name=name):
                self._status(handler, 403, "Forbidden", f"cannot {verb} jobs.batch")
                return
            if method == "POST":
                if self._admitted(handler, parts[:3] + parts[5:6], body):
                    self._json(handler, 201, self._create_job(body))
            elif name not in self.jobs:
                self._status(handler, 404, "NotFound", f'jobs.batch "{name}" not found')
            elif method == "DELETE":
                self._delete_job(name)
                self._json(
                    handler, 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
                )
            else:
                self._json(handler, 200, self._job_with_status(name))
            return
        # /api/v1/namespaces/{ns}/pods[/{name}/log]
        if parts[:2] == ["api", "v1"] and parts[4:5] == ["pods"]:
            if len(parts) == 7 and parts[6] == "log":
                if not self.allowed("get", "", "pods", "log", parts[5]):
                    self._status(handler, 403, "Forbidden", "cannot get pods/log")
                    return
                self._pod_log(handler, parts[5], query)
            elif query.get("watch") in ("true", "1", "True"):
                self._watch(handler, query)
            else:
                self._list_pods(handler, query)
            return
        # /api/v1/namespaces/{ns}/secrets/{name}
        if parts[:2] == ["api", "v1"] and parts[4:5] == ["secrets"] and len(parts) == 6:
            if not self.allowed("get", "", "secrets", name=parts[5]):
                self._status(handler, 403, "Forbidden", f'cannot get secrets "{parts[5]}"')
            elif parts[5] in self.secrets:
                self._json(handler, 200, self.secrets[parts[5]])
            else:
                self._status(handler, 404, "NotFound", f'secrets "{parts[5]}" not found')
            return
        self._status(handler, 404, "NotFound", f"fake API has no route for {'/'.join(parts)}")

    # -- admission ------------------------------------------------------------------------
    def _admitted(self, handler: BaseHTTPRequestHandler, parts: list[str], body: Any) -> bool:
        """Check a POST body as the API server decodes and validates it; answer the refusal
        and return False when it fails."""
        api_version, kind = _POST_KINDS[(parts[0], parts[1], parts[2], parts[-1])]
        if not isinstance(body, dict):
            self._status(handler, 400, "BadRequest", f"the body of the request is not a {kind}")
            return False
        # The server fills in apiVersion and kind from the endpoint when the body leaves them out.
        body.setdefault("apiVersion", api_version)
        body.setdefault("kind", kind)
        for key, expected in (("apiVersion", api_version), ("kind", kind)):
            if body[key] != expected:
                what = "API version" if key == "apiVersion" else "kind"
                self._status(
                    handler,
                    400,
                    "BadRequest",
                    f"the {what} in the data ({body[key]}) does not match the expected "
                    f"{what} ({expected})",
                )
                return False
        field, message = openapi_error(body)
        if not field:
            return True
        group = api_version.rpartition("/")[0]
        name = (body.get("metadata") or {}).get("name") or ""
        self._json(
            handler,
            422,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f'{kind}.{group} "{name}" is invalid: {field}: {message}',
                "reason": "Invalid",
                "details": {
                    "name": name,
                    "group": group,
                    "kind": kind,
                    "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}],
                },
                "code": 422,
            },
        )
        return False

    # -- responses ------------------------------------------------------------------------
    @staticmethod
    def _json(handler: BaseHTTPRequestHandler, code: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _status(
        self, handler: BaseHTTPRequestHandler, code: int, reason: str, message: str
    ) -> None:
        self._json(
            handler,
            code,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": message,
                "reason": reason,
                "code": code,
            },
        )

    # -- jobs and pods --------------------------------------------------------------------
    def _create_job(self, job: dict[str, Any]) -> dict[str, Any]:
        job = copy.deepcopy(job)
        name = job["metadata"].get("name") or job["metadata"]["generateName"] + "x7k2p"
        job["metadata"].update(
            name=name,
            namespace=self.namespace,
            uid=f"uid-{name}",
            resourceVersion=str(next(self._rv)),
            creationTimestamp=TS,
        )
        job["status"] = {}
        with self._lock:
            self.jobs[name] = job
            for index in range(int(job["spec"].get("completions") or 1)):
                self._new_pod(job, index)
        return job

    def _new_pod(self, job: dict[str, Any], index: int) -> None:
        template = job["spec"]["template"]
        name = f"{job['metadata']['name']}-{index}-p{index}q"
        marks = {"batch.kubernetes.io/job-completion-index": str(index)}
        labels = {
            **template["metadata"].get("labels", {}),
            **marks,
            "batch.kubernetes.io/job-name": job["metadata"]["name"],
            "job-name": job["metadata"]["name"],
        }
        self.pods[name] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "uid": f"uid-{name}",
                "resourceVersion": str(next(self._rv)),
                "creationTimestamp": TS,
                "labels": labels,
                "annotations": {**template["metadata"].get("annotations", {}), **marks},
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job["metadata"]["name"],
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": copy.deepcopy(template["spec"]),
            "status": {"phase": "Pending", "conditions": []},
            "_index": index,
            "_job": job["metadata"]["name"],
        }

    def _apply_state(self, pod: dict[str, Any], state: str) -> None:
        container = pod["spec"]["containers"][0]
        base = {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "started": False,
        }
        status: dict[str, Any] = {"phase": "Pending", "conditions": []}
        if state == "running":
            base.update(ready=True, started=True, state={"running": {"startedAt": TS}})
            status["phase"] = "Running"
        elif state == "succeeded":
            base["state"] = {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": TS,
                    "finishedAt": TS,
                }
            }
            status["phase"] = "Succeeded"
        elif state == "oom":
            base["state"] = {
                "terminated": {
                    "exitCode": 137,
                    "reason": "OOMKilled",
                    "startedAt": TS,
                    "finishedAt": TS,
                }
            }
            status["phase"] = "Failed"
        elif state == "error":
            base.update(
                restartCount=3,
                state={
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "startedAt": TS,
                        "finishedAt": TS,
                    }
                },
            )
            status["phase"] = "Failed"
        elif state == "crashloop":
            base.update(
                restartCount=3,
                state={
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": "back-off 40s restarting failed container",
                    }
                },
                lastState={
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "startedAt": TS,
                        "finishedAt": TS,
                    }
                },
            )
            status["phase"] = "Running"
        elif state in ("errimagepull", "imagepullbackoff"):
            reason = "ErrImagePull" if state == "errimagepull" else "ImagePullBackOff"
            base["state"] = {
                "waiting": {
                    "reason": reason,
                    "message": f'Back-off pulling image "{base["image"]}"',
                }
            }
        else:
            raise ValueError(f"unknown pod state {state!r}")
        status["containerStatuses"] = [base]
        pod["status"] = status
        pod["metadata"]["resourceVersion"] = str(next(self._rv))

    def _job_with_status(self, name: str) -> dict[str, Any]:
        with self._lock:
            job = copy.deepcopy(self.jobs[name])
            pods = [p for p in self.pods.values() if p["_job"] == name]
        succeeded = sum(p["status"]["phase"] == "Succeeded" for p in pods)
        failed = sum(p["status"]["phase"] == "Failed" for p in pods)
        active = len(pods) - succeeded - failed
        job["status"] = {"active": active, "succeeded": succeeded, "failed": failed}
        condition = None
        if failed > int(job["spec"].get("backoffLimit", 6)):
            condition = (
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )
        elif succeeded >= int(job["spec"].get("completions") or 1):
            condition = (
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            )
        if condition is not None:
            kind, reason, message = condition
            job["status"]["conditions"] = [
                {
                    "type": kind,
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastProbeTime": TS,
                    "lastTransitionTime": TS,
                }
            ]
        return job

    def _delete_job(self, name: str) -> None:
        with self._lock:
            del self.jobs[name]
            for pod_name in [n for n, p in self.pods.items() if p["_job"] == name]:
                del self.pods[pod_name]

    @staticmethod
    def _public(pod: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in pod.items() if not k.startswith("_")}

    def _selected(self, query: dict[str, str]) -> list[dict[str, Any]]:
        wanted = dict(
            term.split("=", 1) for term in query.get("labelSelector", "").split(",") if term
        )
        return [
            p
            for p in self.pods.values()
            if all(p["metadata"]["labels"].get(k) == v for k, v in wanted.items())
        ]

    def _list_pods(self, handler: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        if not self.allowed("list", "", "pods"):
            self._status(handler, 403, "Forbidden", "cannot list pods")
            return
        with self._lock:
            items = [self._public(p) for p in self._selected(query)]
            version = str(next(self._rv))
        self._json(
            handler,
            200,
            {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": version},
                "items": items,
            },
        )

    def _watch(self, handler: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        if not self.allowed("watch", "", "pods"):
            self._status(handler, 403, "Forbidden", "cannot watch pods")
            return
        if self.on_watch is not None:
            self.on_watch()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()  # no length: the stream ends when the connection closes
        if self.block_watch:
            self._stopping.wait(timeout=30)
            return
        with self._lock:
            step = self.steps.pop(0) if self.steps else None
            events: list[dict[str, Any]] = []
            if step == "expire":
                events.append(
                    {
                        "type": "ERROR",
                        "object": {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "status": "Failure",
                            "code": 410,
                            "reason": "Expired",
                            "message": "too old resource version",
                        },
                    }
                )
            elif isinstance(step, dict):
                selected = {p["metadata"]["name"]: p for p in self._selected(query)}
                for pod in selected.values():
                    if pod["_index"] in step:
                        self._apply_state(pod, step[pod["_index"]])
                        events.append({"type": "MODIFIED", "object": self._public(pod)})
        for event in events:
            handler.wfile.write(json.dumps(event).encode() + b"\n")
            handler.wfile.flush()
        if step is None:
            time.sleep(0.2)  # nothing scripted any more: an idle watch that times out

    def _pod_log(self, handler: BaseHTTPRequestHandler, name: str, query: dict[str, str]) -> None:
        pod = self.pods.get(name)
        if pod is None:
            self._status(handler, 404, "NotFound", f'pods "{name}" not found')
            return
        text = self.logs.get(pod["_index"], "")
        lines = text.splitlines()
        tail = int(query.get("tailLines") or len(lines) or 1)
        data = ("\n".join(lines[-tail:]) + "\n").encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
