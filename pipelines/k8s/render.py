"""`ctrflow cluster render`: an overlay rendered with kustomize, refused when an image is not
pinned by digest where that is required.

Tags move (anyone with push rights can re-point `0.1.0`); a digest names one build. The prod
overlay pins its images by digest under `images:`, committed as a placeholder (all zeros) until
the release's digests are filled in: rendering it with --require-digests fails until they are,
so `ctrflow cluster render manifests/overlays/prod --require-digests | kubectl apply -f -`
cannot deploy a placeholder or a bare tag. (`kubectl apply -k` does no such check.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import yaml

__all__ = ["RenderError", "image_problems", "render"]

_DIGEST = re.compile(r"@sha256:([0-9a-f]{64})$")
_WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}


class RenderError(RuntimeError):
    """The overlay did not render, or renders images that are not pinned as required."""


def _containers(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    spec = doc.get("spec") or {}
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod = spec if doc["kind"] == "Pod" else (spec.get("template") or {}).get("spec") or {}
    for key in ("initContainers", "containers"):
        for container in pod.get(key) or []:
            yield (
                f"{doc['kind']}/{doc['metadata'].get('name')} container {container['name']}",
                container,
            )


def image_problems(docs: list[dict[str, Any]]) -> list[str]:
    """One line per container whose image is not pinned by a real digest."""
    problems = []
    for doc in docs:
        if doc.get("kind") not in _WORKLOADS:
            continue
        for where, container in _containers(doc):
            image = str(container.get("image", ""))
            digest = _DIGEST.search(image)
            if digest is None:
                problems.append(f"{where}: image {image!r} is not pinned by digest (@sha256:...)")
            elif set(digest.group(1)) == {"0"}:
                problems.append(
                    f"{where}: image {image!r} has the placeholder digest: set the release's "
                    "digest under `images:` in the overlay's kustomization.yaml"
                )
    return problems


def render(overlay: str, *, require_digests: bool) -> str:
    """The overlay's manifests as YAML (kubectl kustomize)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RenderError("kubectl not found on PATH (1.27+, for kustomize v5)")
    proc = subprocess.run(
        [kubectl, "kustomize", overlay], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RenderError(f"kubectl kustomize {overlay}: {proc.stderr.strip()}")
    if require_digests:
        problems = image_problems([d for d in yaml.safe_load_all(proc.stdout) if d])
        if problems:
            raise RenderError(
                f"{overlay}: {len(problems)} image(s) not pinned by digest:\n  "
                + "\n  ".join(problems)
            )
    return proc.stdout
