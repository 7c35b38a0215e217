"""The cluster-scoped admission policies (manifests/cluster): they validate against the official
schemas, and their CEL admits and rejects what the README says.

No API server can run here, so the policies' expressions are evaluated the way the API server
does for a ValidatingAdmissionPolicy (matchConditions, then variables in order, then each
validation) by an independent CEL implementation (common-expression-language, the Rust
cel-interpreter), on the objects ctrflow itself creates and on hostile variants of them. What this
cannot show: the API server's own CEL dialect and cost limits, and the policy being bound and
enforced (validationActions: Deny) on a real cluster.
"""

from __future__ import annotations

import copy
import pathlib
import subprocess
from typing import Any

import cel
import kubernetes_validate
import pytest
import yaml

from ctrflow.components import names
from ctrflow.pipelines._image import default_image
from ctrflow.pipelines.k8s.job import WorkerJobSpec, build_worker_job
from tests.manifests.render import docs, get, pod_template, tool
from tests.testkit.paths import REPO_ROOT as ROOT

NAMESPACE = "team-a"
LAUNCHER = f"system:serviceaccount:{NAMESPACE}:{names.SA_LAUNCHER}"


@pytest.fixture(scope="module")
def policies() -> list[dict[str, Any]]:
    proc = subprocess.run(
        [tool("kubectl"), "kustomize", str(ROOT / "manifests" / "cluster")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return docs(proc.stdout)


@pytest.mark.parametrize("version", ("1.30", kubernetes_validate.utils.latest_version()))
def test_policies_validate_strictly_and_are_bound(
    policies: list[dict[str, Any]], version: str, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(policies))
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kinds = {(d["kind"], d["metadata"]["name"]) for d in policies}
    for name in ("ctrflow-client-labels", "ctrflow-launcher-jobs"):
        assert ("ValidatingAdmissionPolicy", name) in kinds
        binding = get(policies, "ValidatingAdmissionPolicyBinding", name)["spec"]
        assert binding["policyName"] == name and binding["validationActions"] == ["Deny"]
        assert get(policies, "ValidatingAdmissionPolicy", name)["spec"]["failurePolicy"] == "Fail"
    assert all("namespace" not in d["metadata"] for d in policies)  # cluster-scoped


def admit(policy: dict[str, Any], obj: dict[str, Any], username: str) -> list[str]:
    """The messages of the validations `obj` fails, as the API server evaluates `policy` for a
    CREATE by `username` in NAMESPACE; [] when admitted (or when the policy does not apply)."""
    spec = policy["spec"]
    rule = spec["matchConstraints"]["resourceRules"][0]
    group = obj["apiVersion"].rpartition("/")[0]
    resource = obj["kind"].lower() + "s"
    if group not in rule["apiGroups"] or resource not in rule["resources"]:
        return []
    context: dict[str, Any] = {
        "object": obj,
        "request": {
            "namespace": NAMESPACE,
            "operation": "CREATE",
            "userInfo": {"username": username},
        },
    }
    if not all(cel.evaluate(c["expression"], context) for c in spec.get("matchConditions", [])):
        return []
    variables: dict[str, Any] = {}
    for variable in spec.get("variables", []):
        variables[variable["name"]] = cel.evaluate(
            variable["expression"], {**context, "variables": variables}
        )
    context["variables"] = variables
    failed = []
    for validation in spec["validations"]:
        result = cel.evaluate(validation["expression"], context)
        assert isinstance(result, bool), validation["expression"]
        if not result:
            if "messageExpression" in validation:
                failed.append(str(cel.evaluate(validation["messageExpression"], context)))
            else:
                failed.append(validation["message"])
    return failed


def _pod(labels: dict[str, str], service_account: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox:1"}]}
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": labels},
        "spec": spec,
    }


def test_client_labels_are_reserved_to_their_service_accounts(
    policies: list[dict[str, Any]],
) -> None:
    policy = get(policies, "ValidatingAdmissionPolicy", "ctrflow-client-labels")
    postgres = dict([names.POSTGRES_CLIENT_LABEL])
    mlflow = dict([names.MLFLOW_CLIENT_LABEL])
    every_sa = {
        getattr(names, n)
        for n in dir(names)
        if n.startswith("SA_") and isinstance(getattr(names, n), str)
    } | {"default", "someone-else"}
    for sa in sorted(every_sa):
        got = admit(policy, _pod({**postgres, "app": "x"}, sa), "alice")
        assert (got == []) == (sa in names.POSTGRES_CLIENTS), (sa, got)
        got = admit(policy, _pod(mlflow, sa), "alice")
        assert (got == []) == (sa in names.MLFLOW_CLIENTS), (sa, got)
        assert admit(policy, _pod({"app.kubernetes.io/part-of": "ctrflow"}, sa), "alice") == []
    denied = admit(policy, _pod(postgres, None), "alice")  # no serviceAccountName: `default`
    assert denied == [
        "label ctrflow.io/postgres-client is reserved for ctrflow's database clients, not "
        "ServiceAccount default"
    ]
    assert admit(policy, {**_pod({}, None), "metadata": {"name": "bare"}}, "alice") == []
    both = admit(policy, _pod({**postgres, **mlflow}, names.SA_HPO_WORKER), "alice")
    assert len(both) == 1 and "mlflow-client" in both[0]


def test_every_pod_ctrflow_creates_passes_the_label_policy(
    policies: list[dict[str, Any]], rendered: dict[str, str]
) -> None:
    policy = get(policies, "ValidatingAdmissionPolicy", "ctrflow-client-labels")
    pods = []
    for text in rendered.values():
        for doc in docs(text):
            if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
                template = pod_template(doc)
                pods.append({"apiVersion": "v1", "kind": "Pod", **template})
    launched = build_worker_job(
        WorkerJobSpec(study="s", workers=1, image=default_image(), launch_id="abc")
    )
    pods.append({"apiVersion": "v1", "kind": "Pod", **launched["spec"]["template"]})
    # A KFP step pod: the labels the compiled spec puts on it, under the run's ServiceAccount
    # (`ctrflow submit --service-account`, default ctrflow-pipeline).
    spec = list(yaml.safe_load_all((ROOT / "pipelines" / "ctr_pipeline.yaml").read_text()))[1]
    executors = spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor in executors.values():
        labels = executor["podMetadata"]["labels"]
        pods.append(_pod(labels, names.SA_PIPELINE))
    assert len(pods) > 15
    assert sum(names.POSTGRES_CLIENT_LABEL[0] in p["metadata"]["labels"] for p in pods) >= 6
    for pod in pods:
        assert admit(policy, pod, "system:serviceaccount:kube-system:job-controller") == [], pod[
            "metadata"
        ]


def _worker_job() -> dict[str, Any]:
    return build_worker_job(
        WorkerJobSpec(study="s", workers=2, image=default_image(), launch_id="abc")
    )


def _with(job: dict[str, Any], change: Any) -> dict[str, Any]:
    job = copy.deepcopy(job)
    change(job["spec"]["template"]["spec"])
    return job


def test_the_launcher_can_run_only_worker_pods(policies: list[dict[str, Any]]) -> None:
    policy = get(policies, "ValidatingAdmissionPolicy", "ctrflow-launcher-jobs")
    job = _worker_job()
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == names.SA_HPO_WORKER
    assert admit(policy, job, LAUNCHER) == []

    def mlflow_identity(pod: dict[str, Any]) -> None:
        pod["serviceAccountName"] = names.SA_MLFLOW

    def no_service_account(pod: dict[str, Any]) -> None:
        del pod["serviceAccountName"]

    def admin_secret(pod: dict[str, Any]) -> None:
        pod["containers"][0]["env"].append(
            {
                "name": "X",
                "valueFrom": {"secretKeyRef": {"name": names.MLFLOW_ADMIN_SECRET, "key": "k"}},
            }
        )

    def env_from_secret(pod: dict[str, Any]) -> None:
        pod["containers"][0]["envFrom"] = [{"secretRef": {"name": "ctrflow-postgres"}}]

    def secret_volume(pod: dict[str, Any]) -> None:
        pod["volumes"].append({"name": "s", "secret": {"secretName": "ctrflow-postgres"}})

    def token(pod: dict[str, Any]) -> None:
        pod["automountServiceAccountToken"] = True

    def init_container(pod: dict[str, Any]) -> None:
        pod["initContainers"] = [{"name": "i", "image": "busybox:1"}]

    for change, message in [
        (mlflow_identity, "only as ServiceAccount ctrflow-hpo-worker"),
        (no_service_account, "only as ServiceAccount ctrflow-hpo-worker"),
        (admin_secret, "may read only the Secret ctrflow-storage"),
        (env_from_secret, "may read only the Secret ctrflow-storage"),
        (secret_volume, "may not mount Secrets"),
        (token, "automountServiceAccountToken: false"),
        (init_container, "no init or ephemeral containers"),
    ]:
        got = admit(policy, _with(job, change), LAUNCHER)
        assert len(got) == 1 and message in got[0].replace("may not have", "no"), (change, got)
        # Only the launcher is held to this: a person or controller with their own rights is not.
        assert admit(policy, _with(job, change), "alice@example.com") == []
        # The launcher of another namespace is matched against its own namespace's name.
        other = f"system:serviceaccount:other-ns:{names.SA_LAUNCHER}"
        assert admit(policy, _with(job, change), other) == []


# -- KFP step pods: MutatingAdmissionPolicy (Kubernetes 1.36+) ----------------------------------
@pytest.fixture(scope="module")
def step_policy() -> list[dict[str, Any]]:
    proc = subprocess.run(
        [tool("kubectl"), "kustomize", str(ROOT / "manifests" / "cluster" / "pipeline-steps")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return docs(proc.stdout)


@pytest.mark.parametrize("version", ("1.36", kubernetes_validate.utils.latest_version()))
def test_step_policy_validates_strictly(
    step_policy: list[dict[str, Any]], version: str, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "steps.yaml"
    path.write_text(yaml.safe_dump_all(step_policy))
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_step_policy_matches_ctrflow_step_pods_only_and_sets_the_container_policy(
    step_policy: list[dict[str, Any]],
) -> None:
    """The match condition is evaluated here on the labels the compiled spec gives each step
    (plus the label KFP's backend adds); the mutation (a typed ApplyConfiguration) only the API
    server can evaluate, so its content is checked as data."""
    policy = get(step_policy, "MutatingAdmissionPolicy", "ctrflow-pipeline-step-security")
    get(step_policy, "MutatingAdmissionPolicyBinding", "ctrflow-pipeline-step-security")
    (condition,) = policy["spec"]["matchConditions"]

    def matches(labels: dict[str, str]) -> bool:
        obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": labels}}
        return bool(cel.evaluate(condition["expression"], {"object": obj}))

    spec = list(yaml.safe_load_all((ROOT / "pipelines" / "ctr_pipeline.yaml").read_text()))[1]
    executors = spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    kfp_label = {"pipelines.kubeflow.org/v2_component": "true"}
    for executor in executors.values():
        labels = executor["podMetadata"]["labels"]
        assert matches({**labels, **kfp_label})
        assert not matches(labels)  # not a KFP step pod (e.g. an HPO Job of ours)
    assert not matches(kfp_label)  # another team's pipeline
    assert not matches({})
    expression = policy["spec"]["mutations"][0]["applyConfiguration"]["expression"]
    flat = " ".join(expression.split())
    for needed in (
        'name: "main"',
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        'drop: ["ALL"]',
        'seccompProfile{type: "RuntimeDefault"}',
    ):
        assert needed in flat
