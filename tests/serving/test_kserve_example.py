"""The KServe example (manifests/serving): it renders, runs the image's lean server with arguments
that server takes, on the probes it answers, and its pod follows the manifests' container policy.

No KServe here: the InferenceService's pod fields are validated against the official Kubernetes
Pod schema (KServe embeds a PodSpec in the predictor); KServe's own CRD fields are checked by
name only.
"""

from __future__ import annotations

import subprocess
import urllib.request
from importlib.metadata import entry_points
from typing import Any

import kubernetes_validate
import yaml

from ctrflow.components.serving.server import build_parser
from ctrflow.pipelines._image import DEFAULT_REGISTRY, default_image
from tests.manifests.render import tool as _tool
from tests.manifests.test_manifests import policy_violations
from tests.testkit.paths import REPO_ROOT

# Fields of KServe's predictor that are not PodSpec fields (serving.kserve.io/v1beta1).
KSERVE_FIELDS = {
    "minReplicas", "maxReplicas", "labels", "annotations", "scaleTarget", "scaleMetric",
    "containerConcurrency", "timeout", "canaryTrafficPercent",
}  # fmt: skip


def rendered() -> dict[str, Any]:
    proc = subprocess.run(
        [_tool("kubectl"), "kustomize", str(REPO_ROOT / "manifests" / "serving")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (doc,) = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return dict(doc)


def as_pod(service: dict[str, Any]) -> dict[str, Any]:
    predictor = service["spec"]["predictor"]
    assert set(predictor) - KSERVE_FIELDS <= {
        "containers", "volumes", "securityContext", "serviceAccountName",
    }  # fmt: skip
    labels = predictor["labels"]
    spec = {k: v for k, v in predictor.items() if k not in KSERVE_FIELDS}
    return {"apiVersion": "v1", "kind": "Pod", "spec": spec,
            "metadata": {"name": service["metadata"]["name"], "labels": labels}}  # fmt: skip


def test_kserve_example_runs_the_lean_server_of_the_image(lean_url: str) -> None:
    service = rendered()
    assert (service["apiVersion"], service["kind"]) == (
        "serving.kserve.io/v1beta1",
        "InferenceService",
    )
    pod = as_pod(service)
    kubernetes_validate.validate(pod, kubernetes_validate.utils.latest_version(), strict=True)
    assert policy_violations([pod]) == []
    assert pod["metadata"]["labels"] == {"app.kubernetes.io/part-of": "ctrflow"}
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "kserve-container"  # the name KServe routes to
    assert container["image"] == default_image(registry=DEFAULT_REGISTRY)
    # The command is the image's console script, and its arguments are ones the server takes.
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "ctrflow-serve"]
    assert container["command"] == [script.name]
    assert script.value == "ctrflow.components.serving.server:main"
    args = build_parser().parse_args(container["args"])
    assert args.model == "models:/ctr-ffm@champion" and args.port == 8080
    assert container["ports"] == [{"containerPort": args.port, "protocol": "TCP"}]
    # The probes ask what the server answers.
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] == args.port
        with urllib.request.urlopen(f"{lean_url}{get['path']}", timeout=10) as response:
            assert response.status == 200
