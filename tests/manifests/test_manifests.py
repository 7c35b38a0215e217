"""The kustomize manifests: both overlays render, validate against the Kubernetes schemas, lint
clean, and every container follows the security and resource policy.

The overlays' Secrets come from untracked env files (secretGenerator), so the tests render a copy
of manifests/ in which the committed `*.env.example` files stand in for them; a developer's real
`*.env` files are never copied or read.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml

import ctrflow
from ctrflow.components import names
from ctrflow.components.names import SA_LAUNCHER, SA_PIPELINE, STORAGE_SECRET
from ctrflow.components.names import STORAGE_URL_ENV as STORAGE_SECRET_KEY
from ctrflow.pipelines._image import DEFAULT_REGISTRY, default_image
from ctrflow.pipelines.k8s.job import WorkerJobSpec, build_worker_job
from tests.manifests.render import WORKLOADS
from tests.manifests.render import docs as _docs
from tests.manifests.render import get as _get
from tests.manifests.render import kubelet_expand as _kubelet_expand
from tests.manifests.render import pod_template as _pod_template
from tests.manifests.render import tool as _tool
from tests.testkit.paths import REPO_ROOT as ROOT

OVERLAYS = ("dev", "prod")
SCHEMA_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_KEY|CREDENTIAL", re.I)
SECRET_VALUE = re.compile(
    r"://[^/\s:@]+:[^/\s@]+@"  # a URL with user:password
    r"|(password|passwd|pwd|secret|token)\s*[=:]\s*\S"  # password=..., token: ...
    r"|^AKIA[0-9A-Z]{16}$"  # an AWS access key id
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----",
    re.I,
)

SERVICE_ACCOUNTS = (
    names.SA_POSTGRES,
    names.SA_MLFLOW,
    names.SA_MLFLOW_BOOTSTRAP,
    names.SA_DASHBOARD,
    names.SA_HPO_WORKER,
    names.SA_HPO_CREATE,
    names.SA_LAUNCHER,
    SA_PIPELINE,
    names.SA_SERVING,
)

pytestmark = pytest.mark.timeout(300)


# -- rendering and content ------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_component(overlay: str, rendered: dict[str, str]) -> None:
    docs = _docs(rendered[overlay])
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for expected in [
        ("StatefulSet", "ctrflow-postgres"),
        ("Service", "ctrflow-postgres"),
        ("Deployment", "ctrflow-mlflow"),
        ("Service", "ctrflow-mlflow"),
        ("Deployment", "ctrflow-optuna-dashboard"),
        ("Service", "ctrflow-optuna-dashboard"),
        *(("ServiceAccount", sa) for sa in SERVICE_ACCOUNTS),
        ("Role", "ctrflow-launcher"),
        ("RoleBinding", "ctrflow-launcher"),
        ("NetworkPolicy", "ctrflow-postgres"),
        ("NetworkPolicy", "ctrflow-mlflow"),
        ("Job", "ctrflow-hpo-create"),
        ("Job", "ctrflow-hpo-worker"),
        ("Secret", "ctrflow-postgres"),
        ("Secret", STORAGE_SECRET),
        ("Secret", "ctrflow-mlflow-admin"),
        ("Secret", "ctrflow-mlflow-auth"),
        ("Secret", "ctrflow-mlflow-reader"),
        ("Job", "ctrflow-mlflow-bootstrap"),
        ("Job", "ctrflow-optuna-schema"),
    ]:
        assert expected in names, f"{expected} missing from overlays/{overlay}"
    namespace = {d["metadata"].get("namespace") for d in docs}
    assert len(namespace) == 1 and None not in namespace
    binding = _get(docs, "RoleBinding", "ctrflow-launcher")
    ns = namespace.pop()
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SA_LAUNCHER, "namespace": ns}]
    pipeline = _get(docs, "RoleBinding", SA_PIPELINE)
    assert pipeline["subjects"] == [
        {"kind": "ServiceAccount", "name": SA_PIPELINE, "namespace": ns}
    ]
    # The run's pods only report their outputs to Argo: no Secrets, no pods, no Jobs.
    assert _get(docs, "Role", SA_PIPELINE)["rules"] == [
        {
            "apiGroups": ["argoproj.io"],
            "resources": ["workflowtaskresults"],
            "verbs": ["create", "patch"],
        }
    ]
    storage = _get(docs, "Secret", STORAGE_SECRET)
    assert set(storage["data"]) == {STORAGE_SECRET_KEY}
    postgres = _get(docs, "StatefulSet", "ctrflow-postgres")["spec"]["template"]["spec"]
    assert postgres["containers"][0]["readinessProbe"]["exec"]["command"][-1].startswith(
        "pg_isready"
    )
    for name in ("ctrflow-mlflow", "ctrflow-optuna-dashboard"):
        container = _get(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"] and container["livenessProbe"]
    worker = _get(docs, "Job", "ctrflow-hpo-worker")["spec"]
    assert worker["completionMode"] == "Indexed" and worker["suspend"] is True


def test_dev_keeps_artifacts_on_a_pvc_and_prod_in_an_object_store(rendered: dict[str, str]) -> None:
    dev, prod = _docs(rendered["dev"]), _docs(rendered["prod"])
    _get(dev, "PersistentVolumeClaim", "ctrflow-mlflow-artifacts")
    assert not [d for d in prod if d["metadata"]["name"] == "ctrflow-mlflow-artifacts"]

    def destination(docs: list[dict[str, Any]]) -> str:
        maps = [
            d
            for d in docs
            if d["kind"] == "ConfigMap" and "MLFLOW_ARTIFACTS_DESTINATION" in d.get("data", {})
        ]
        assert len(maps) == 1
        return str(maps[0]["data"]["MLFLOW_ARTIFACTS_DESTINATION"])

    assert destination(dev) == "/mlflow/artifacts"
    assert destination(prod).startswith("gs://")
    dev_mlflow = _get(dev, "Deployment", "ctrflow-mlflow")["spec"]
    prod_mlflow = _get(prod, "Deployment", "ctrflow-mlflow")["spec"]
    assert "artifacts" in {v["name"] for v in dev_mlflow["template"]["spec"]["volumes"]}
    assert "artifacts" not in {v["name"] for v in prod_mlflow["template"]["spec"]["volumes"]}
    assert prod_mlflow["replicas"] > dev_mlflow["replicas"]


def test_prod_runs_more_workers_with_more_resources_than_dev(rendered: dict[str, str]) -> None:
    def worker(overlay: str) -> dict[str, Any]:
        return dict(_get(_docs(rendered[overlay]), "Job", "ctrflow-hpo-worker")["spec"])

    dev, prod = worker("dev"), worker("prod")
    assert dev["parallelism"] == dev["completions"] == 2
    assert prod["parallelism"] == prod["completions"] == 8
    dev_c = dev["template"]["spec"]["containers"][0]
    prod_c = prod["template"]["spec"]["containers"][0]
    assert dev_c["resources"]["limits"]["memory"] == "1Gi"
    assert prod_c["resources"]["limits"]["memory"] == "4Gi"
    # As many training threads as whole cores granted.
    cores = prod_c["resources"]["limits"]["cpu"]
    assert prod_c["args"][prod_c["args"].index("--threads") + 1] == cores


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ctrflow_image_is_pinned_to_the_package_version(
    overlay: str, rendered: dict[str, str]
) -> None:
    images = set()
    for doc in _docs(rendered[overlay]):
        if doc["kind"] in WORKLOADS:
            spec = _pod_template(doc)["spec"]
            images |= {c["image"] for c in spec["containers"] + spec.get("initContainers", [])}
    # prod pins by tag and digest (tag@sha256:...): the tag is still the package version.
    ours = {i.split("@")[0] for i in images if "/ctrflow:" in i}
    assert ours == {default_image(registry=DEFAULT_REGISTRY)}
    assert all("@sha256:" in i for i in images) == (overlay == "prod")
    assert ours == {f"ghcr.io/ctrflow/ctrflow:{ctrflow.__version__}"}
    assert any(i.startswith("postgres:") for i in images)


# -- schemas and lint ------------------------------------------------------------------------
@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_validates_strictly(
    overlay: str, version: str, rendered: dict[str, str], tmp_path: pathlib.Path
) -> None:
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(rendered[overlay])
    proc = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_strict_validation_rejects_an_unknown_field(
    rendered: dict[str, str], tmp_path: pathlib.Path
) -> None:
    """The validator is really strict (so the test above can fail)."""
    docs = _docs(rendered["dev"])
    _get(docs, "Deployment", "ctrflow-mlflow")["spec"]["template"]["spec"]["containers"][0][
        "readinesProbe"
    ] = {"httpGet": {"path": "/health", "port": 5000}}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    proc = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", "--quiet", "-k", "1.30", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "readinesProbe" in proc.stdout + proc.stderr


def test_yaml_sources_are_yamllint_clean(tmp_path: pathlib.Path) -> None:
    config = ROOT / ".yamllint"
    proc = subprocess.run(
        [_tool("yamllint"), "--strict", "-c", str(config), str(ROOT / "manifests"), str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: value\nkey: again\nlist:\n    - indented:   oddly\n")
    proc = subprocess.run(
        [_tool("yamllint"), "--strict", "-c", str(config), str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0 and "duplication of key" in proc.stdout


# -- policy ----------------------------------------------------------------------------------
def _effective(container: dict[str, Any], pod: dict[str, Any], key: str) -> Any:
    own = (container.get("securityContext") or {}).get(key)
    return own if own is not None else (pod.get("securityContext") or {}).get(key)


def policy_violations(docs: list[dict[str, Any]]) -> list[str]:
    """Every breach of the container policy in `docs`, one line each."""
    found = []
    for doc in docs:
        if doc["kind"] not in WORKLOADS:
            continue
        template = _pod_template(doc)
        pod = template["spec"]
        meta = doc["metadata"]
        where = f"{doc['kind']}/{meta.get('name') or meta.get('generateName')}"
        if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
            found.append(f"{where}: shares a host namespace")
        tmp_volumes = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        if any("hostPath" in v for v in pod.get("volumes", [])):
            found.append(f"{where}: hostPath volume")
        for container in pod["containers"] + pod.get("initContainers", []):
            at = f"{where} container {container['name']}"
            resources = container.get("resources") or {}
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(kind) or {}):
                        found.append(f"{at}: no {resource} {kind[:-1]}")
            if _effective(container, pod, "runAsNonRoot") is not True:
                found.append(f"{at}: runAsNonRoot is not true")
            user = _effective(container, pod, "runAsUser")
            if user is None or user == 0:
                found.append(f"{at}: runs as root (runAsUser {user})")
            sc = container.get("securityContext") or {}
            if sc.get("allowPrivilegeEscalation") is not False:
                found.append(f"{at}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                found.append(f"{at}: privileged")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
                found.append(f"{at}: capabilities not dropped (drop ALL, add none)")
            if sc.get("readOnlyRootFilesystem") is not True:
                found.append(f"{at}: root filesystem is writable")
            elif not any(
                m["mountPath"] == "/tmp" and m["name"] in tmp_volumes
                for m in container.get("volumeMounts", [])
            ):
                found.append(f"{at}: read-only root without an emptyDir on /tmp")
            seccomp = _effective(container, pod, "seccompProfile") or {}
            if seccomp.get("type") != "RuntimeDefault":
                found.append(f"{at}: seccompProfile is not RuntimeDefault")
            image = str(container.get("image", ""))
            tag = image.rsplit("/", 1)[-1]
            if "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
                found.append(f"{at}: image {image!r} is not pinned (no tag, or latest)")
            for env in container.get("env", []):
                value = env.get("value")
                if value is None:
                    continue
                if SECRET_NAME.search(env["name"]) or SECRET_VALUE.search(str(value)):
                    found.append(f"{at}: env {env['name']} holds an inline secret")
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_follows_the_policy(overlay: str, rendered: dict[str, str]) -> None:
    docs = _docs(rendered[overlay])
    assert sum(d["kind"] in WORKLOADS for d in docs) >= 5
    assert policy_violations(docs) == []


def test_launched_worker_job_follows_the_policy() -> None:
    job = build_worker_job(
        WorkerJobSpec(
            study="s", workers=2, image=default_image(), launch_id="abc", data_pvc="ctrflow-data"
        )
    )
    assert policy_violations([job]) == []


def test_policy_catches_each_kind_of_breach() -> None:
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bad"},
        "spec": {
            "template": {
                "spec": {
                    "securityContext": {"runAsUser": 0},
                    "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
                    "containers": [
                        {
                            "name": "app",
                            "image": "busybox:latest",
                            "resources": {"limits": {"cpu": "1"}},
                            "securityContext": {
                                "allowPrivilegeEscalation": True,
                                "capabilities": {"add": ["NET_ADMIN"]},
                            },
                            "env": [
                                {"name": "DB_PASSWORD", "value": "hunter2"},
                                {"name": "STORAGE", "value": "postgresql://u:hunter2@db/x"},
                                {
                                    "name": "FROM_SECRET",
                                    "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                                },
                            ],
                        }
                    ],
                    "initContainers": [{"name": "init", "image": "registry.example/tool"}],
                }
            }
        },
    }
    found = "\n".join(policy_violations([bad]))
    for expected in [
        "hostPath volume",
        "container app: no memory limit",
        "container app: no cpu request",
        "container app: runAsNonRoot is not true",
        "container app: runs as root (runAsUser 0)",
        "allowPrivilegeEscalation is not false",
        "capabilities not dropped",
        "root filesystem is writable",
        "seccompProfile is not RuntimeDefault",
        "image 'busybox:latest' is not pinned",
        "env DB_PASSWORD holds an inline secret",
        "env STORAGE holds an inline secret",
        "image 'registry.example/tool' is not pinned",
        "container init: no memory limit",
    ]:
        assert expected in found
    assert "FROM_SECRET" not in found


# -- secrets are never committed -------------------------------------------------------------
def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
    )


def _tracked(pattern: str) -> list[pathlib.Path]:
    proc = _git("ls-files", "--", pattern)
    assert proc.returncode == 0, proc.stderr
    return [ROOT / line for line in proc.stdout.splitlines()]


def _kustomizations() -> Iterator[tuple[pathlib.Path, dict[str, Any]]]:
    for path in sorted((ROOT / "manifests").rglob("kustomization.yaml")):
        yield path, yaml.safe_load(path.read_text())


def test_no_secret_data_is_committed() -> None:
    tracked = _tracked("manifests")
    assert tracked, "manifests/ is not tracked by git"
    assert not [p for p in tracked if p.name.endswith(".env")]
    for path in tracked:
        if path.suffix not in (".yaml", ".yml"):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Secret":
                assert not doc.get("data") and not doc.get("stringData"), path
    generators = 0
    for path, kustomization in _kustomizations():
        for generator in kustomization.get("secretGenerator", []):
            generators += 1
            assert "literals" not in generator, f"{path}: secret literals are committed"
            for source in generator.get("envs", []) + generator.get("files", []):
                file = path.parent / source.split("=")[-1]
                rel = file.relative_to(ROOT)
                assert file.parent.name == "secrets", f"{rel}: keep secret sources in secrets/"
                assert _git("check-ignore", "-q", str(rel)).returncode == 0, f"{rel} not ignored"
                example = file.with_name(file.name + ".example")
                assert example in tracked, f"{rel}: no committed {example.name} documents it"
    assert generators >= 10  # five Secrets in each overlay


def test_generated_secret_keys_are_the_documented_ones(rendered: dict[str, str]) -> None:
    for overlay in OVERLAYS:
        docs = _docs(rendered[overlay])
        for example in (ROOT / "manifests/overlays" / overlay / "secrets").glob("*.env.example"):
            keys = {
                line.split("=", 1)[0]
                for line in example.read_text().splitlines()
                if line.strip() and not line.startswith("#")
            }
            name = f"ctrflow-{example.name.split('.')[0]}"
            assert set(_get(docs, "Secret", name)["data"]) == keys


# -- network policies ------------------------------------------------------------------------
def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _workload_pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod templates by workload, and the Job `ctrflow hpo launch` creates."""
    pods = {
        f"{d['kind']}/{d['metadata']['name']}": _pod_template(d)
        for d in docs
        if d["kind"] in WORKLOADS
    }
    launched = build_worker_job(
        WorkerJobSpec(study="s", workers=1, image=default_image(), launch_id="abc")
    )
    pods["launched worker"] = launched["spec"]["template"]
    return pods


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_exactly_the_allowed_service_accounts(
    overlay: str, rendered: dict[str, str]
) -> None:
    """PostgreSQL and MLflow admit the pods carrying their client label, and the pods that carry
    it are exactly those of the ServiceAccounts allowed that access (what the admission policy
    `ctrflow-client-labels` enforces on every other pod: test_admission.py)."""
    docs = _docs(rendered[overlay])
    pods = _workload_pods(docs)
    allowed = {"ctrflow-postgres": names.POSTGRES_CLIENTS, "ctrflow-mlflow": names.MLFLOW_CLIENTS}
    for name, service_accounts in allowed.items():
        policy = _get(docs, "NetworkPolicy", name)["spec"]
        assert policy["policyTypes"] == ["Ingress", "Egress"]
        protected = [
            p for p, t in pods.items() if _matches(policy["podSelector"], t["metadata"]["labels"])
        ]
        assert protected == [
            f"{'StatefulSet' if name.endswith('postgres') else 'Deployment'}/{name}"
        ]
        (rule,) = policy["ingress"]
        assert all(set(peer) == {"podSelector"} for peer in rule["from"])  # same namespace only
        admitted = {
            p
            for p, t in pods.items()
            if any(_matches(peer["podSelector"], t["metadata"]["labels"]) for peer in rule["from"])
        }
        expected = {
            p for p, t in pods.items() if t["spec"].get("serviceAccountName") in service_accounts
        }
        assert admitted == expected and admitted, f"{name}: admits {admitted}, expected {expected}"
        # The old, settable-by-anyone label admits nothing any more.
        assert not any(
            _matches(peer["podSelector"], {"app.kubernetes.io/part-of": "ctrflow"})
            for peer in rule["from"]
        )
    dashboard = _get(docs, "NetworkPolicy", "ctrflow-optuna-dashboard")["spec"]
    assert dashboard["ingress"] == []  # port-forward only


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ctrflow_pod_has_egress_limited_to_what_it_needs(
    overlay: str, rendered: dict[str, str]
) -> None:
    docs = _docs(rendered[overlay])
    policies = [d["spec"] for d in docs if d["kind"] == "NetworkPolicy"]
    pods = _workload_pods(docs)
    for where, template in pods.items():
        labels = template["metadata"]["labels"]
        egress = [
            p
            for p in policies
            if "Egress" in p["policyTypes"] and _matches(p["podSelector"], labels)
        ]
        assert egress, f"{where}: no egress policy selects it (all egress open)"
        rules = [r for p in egress for r in p.get("egress", [])]
        for rule in rules:  # every rule is narrowed by a peer or a port
            assert rule.get("to") or rule.get("ports"), f"{where}: an egress rule allows everything"
        targets = {
            peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
            for r in rules
            for peer in r.get("to", [])
        }
        assert ("ctrflow-postgres" in targets) == (names.POSTGRES_CLIENT_LABEL[0] in labels), where
        assert ("ctrflow-mlflow" in targets) == (names.MLFLOW_CLIENT_LABEL[0] in labels), where
    postgres = _get(docs, "NetworkPolicy", "ctrflow-postgres")["spec"]
    assert postgres["egress"] == []  # and DNS, from ctrflow-egress-dns-only


# -- the programs the manifests run, run here as configured --------------------------------------
@functools.cache
def _ctrflow_parser() -> argparse.ArgumentParser:
    from ctrflow.pipelines import cli

    return cli.build_parser()  # once: building it imports every command group


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("job", ["ctrflow-hpo-create", "ctrflow-hpo-worker"])
def test_job_templates_call_the_cli_with_valid_arguments(
    overlay: str, job: str, rendered: dict[str, str]
) -> None:
    """The templates' arguments, expanded from their ConfigMap as the kubelet would, parse with
    the real `ctrflow` command line (the image's entrypoint)."""
    docs = _docs(rendered[overlay])
    (container,) = _get(docs, "Job", job)["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(_get(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    args = [_kubelet_expand(a, env) for a in container["args"]]
    assert not [a for a in args if "$(" in a], f"unexpanded variable in {args}"
    parsed = _ctrflow_parser().parse_args(args)
    assert parsed.command == "hpo" and parsed.study == env["CTRFLOW_STUDY"]
    assert callable(parsed.func)
