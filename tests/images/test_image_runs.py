"""The built image runs as the cluster runs it: user 10001, read-only root, /tmp the only
writable place; the CLI, the heavy imports and an FFM fit work there, and no build secret stayed.
"""

from __future__ import annotations

import json
import pathlib
import time

import pytest

import ctrflow
from tests.testkit.podman import Podman

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(600)]
CA = "/etc/ssl/certs/ca-certificates.crt"

_FIT = """
import json, os, numpy as np, ffm_ext
rng = np.random.default_rng(0)
rows, fields = 2000, 4
indptr = np.arange(0, rows * fields + 1, fields, dtype=np.int64)
field_ids = np.tile(np.arange(fields, dtype=np.int32), rows)
features = (rng.integers(0, 10, rows * fields) + field_ids * 10).astype(np.int32)
labels = (rng.random(rows) < 0.3).astype(np.float32)
data = ffm_ext.Dataset(indptr, field_ids, features, np.ones(rows * fields, np.float32), labels,
                       n_features=40, n_fields=fields)
model = ffm_ext.FFM(k=4, epochs=3, n_threads=2)
model.fit(data)
model.save("/tmp/model.ffm")
again = ffm_ext.FFM.load("/tmp/model.ffm").predict(data)
assert np.allclose(again, model.predict(data))
try:
    open("/usr/local/written", "w")
    root_writable = True
except OSError:
    root_writable = False
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "root_writable": root_writable,
                  "mean": float(again.mean())}))
"""


def test_cli_version_cold_start(podman: Podman) -> None:
    started = time.monotonic()
    proc = podman.run_image("--version")
    seconds = time.monotonic() - started
    assert ctrflow.__version__ in proc.stdout
    print(f"`podman run ... ctrflow --version`: {seconds:.2f} s")


def test_pipeline_imports_and_an_ffm_fit_work_read_only_as_user_10001(podman: Podman) -> None:
    imports = podman.run_image(
        "-c",
        "import ffm_ext, mlflow, optuna, kfp; print(ffm_ext.__file__)",
        options=["--entrypoint", "python"],
    )
    assert imports.stdout.strip().startswith("/usr/local/lib/python3.11/site-packages/ffm_ext/")
    fit = podman.run_image("-c", _FIT, options=["--entrypoint", "python"])
    result = json.loads(fit.stdout.strip().splitlines()[-1])
    assert (result["uid"], result["gid"]) == (10001, 10001)
    assert result["root_writable"] is False
    assert 0 < result["mean"] < 1


def test_image_config_runs_as_10001_and_carries_no_build_credentials(podman: Podman) -> None:
    inspect = podman.run(["image", "inspect", podman.image])
    (config,) = json.loads(inspect.stdout)
    assert config["Config"]["User"] == "10001:10001"
    env = "\n".join(config["Config"].get("Env") or [])
    for leaked in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_INDEX_URL"):
        assert leaked not in env
    # `make image-local` mounts the host's CA bundle over the image's during the build: the
    # image keeps its own, and no pip configuration or wheel directory stays behind.
    probe = podman.run_image(
        "-c",
        "import json, os; print(json.dumps({'found': [p for p in ('/etc/pip.conf', "
        "'/usr/local/pip.conf', '/etc/xdg/pip/pip.conf', '/wheels') if os.path.exists(p)], "
        f"'ca': open({CA!r}).read()}}))",
        options=["--entrypoint", "python"],
    )
    seen = json.loads(probe.stdout)
    assert seen["found"] == []
    host_ca = pathlib.Path(CA)
    if host_ca.exists():
        host = host_ca.read_text()
        extra = host.count("BEGIN CERTIFICATE") - seen["ca"].count("BEGIN CERTIFICATE")
        if extra > 0:  # this host trusts its own CAs; the image must not have them
            assert seen["ca"] != host
