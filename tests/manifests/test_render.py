"""`ctrflow cluster render --require-digests`: the prod overlay cannot be rendered for deployment
while an image is pinned by the committed placeholder digest or by a tag alone."""

from __future__ import annotations

import pathlib
import re
import shutil

import pytest
import yaml

from ctrflow.pipelines import cli
from tests.manifests.render import WORKLOADS, docs, pod_template

REAL = "sha256:" + "ab12" * 16


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def prod(manifests_copy: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    work = tmp_path / "manifests"
    shutil.copytree(manifests_copy, work)
    return work / "overlays" / "prod"


def _set_digests(overlay: pathlib.Path, digest: str | None) -> None:
    path = overlay / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    for image in kustomization["images"]:
        if digest is None:
            image.pop("digest", None)
        else:
            image["digest"] = digest
    path.write_text(yaml.safe_dump(kustomization))


def test_prod_with_the_placeholder_digests_is_refused(
    prod: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(capsys, "cluster", "render", str(prod), "--require-digests")
    assert code == 1 and out == ""
    assert "Deployment/ctrflow-mlflow container mlflow: image" in err
    assert "StatefulSet/ctrflow-postgres container postgres: image 'postgres:17.6-bookworm@" in err
    assert "placeholder digest" in err and "images:" in err


def test_prod_with_tags_only_is_refused(
    prod: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _set_digests(prod, None)
    code, out, err = _cli(capsys, "cluster", "render", str(prod), "--require-digests")
    assert code == 1 and out == ""
    assert "'ghcr.io/ctrflow/ctrflow:0.1.0' is not pinned by digest" in err


def test_prod_with_real_digests_renders_every_image_by_digest(
    prod: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _set_digests(prod, REAL)
    code, out, err = _cli(capsys, "cluster", "render", str(prod), "--require-digests")
    assert code == 0, err
    images = [
        c["image"]
        for d in docs(out)
        if d["kind"] in WORKLOADS
        for c in pod_template(d)["spec"]["containers"]
        + pod_template(d)["spec"].get("initContainers", [])
    ]
    assert len(images) >= 8
    assert all(re.search(f"@{REAL}$", i) for i in images), images


def test_dev_renders_without_the_requirement_and_a_bad_overlay_names_the_error(
    manifests_copy: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(capsys, "cluster", "render", str(manifests_copy / "overlays" / "dev"))
    assert code == 0 and "kind: Deployment" in out
    code, out, err = _cli(capsys, "cluster", "render", str(tmp_path / "missing"))
    assert code == 1 and out == ""
    assert err.startswith("ctrflow cluster render: kubectl kustomize ")
