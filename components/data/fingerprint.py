"""Content fingerprints: which data a model was trained and tested on, which feature spec it uses.

A dataset fingerprint hashes every file of the Dataset directories (names and bytes), so two runs
on the same prepared data carry the same tag whatever their paths. The spec fingerprint hashes the
fitted spec's canonical JSON: equal fingerprints mean equal feature ids for the same raw rows, so
two models can be compared on one prepared test Dataset.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Mapping

from ctrflow.components.data.feature_spec import FittedFeatureSpec

__all__ = ["dataset_fingerprint", "spec_fingerprint"]


def dataset_fingerprint(dirs: Mapping[str, str | pathlib.Path]) -> str:
    """``sha256:<hex>`` over the files of named Dataset directories (e.g. train/valid/test)."""
    digest = hashlib.sha256()
    for role in sorted(dirs):
        root = pathlib.Path(dirs[role])
        if not root.is_dir():
            raise FileNotFoundError(f"{role} dataset directory {root} does not exist")
        files = sorted(p for p in root.rglob("*") if p.is_file())
        if not files:
            raise ValueError(f"{role} dataset directory {root} is empty")
        for path in files:
            digest.update(f"{role}/{path.relative_to(root).as_posix()}\0".encode())
            with path.open("rb") as fh:
                digest.update(hashlib.file_digest(fh, "sha256").digest())
    return f"sha256:{digest.hexdigest()}"


def spec_fingerprint(spec: FittedFeatureSpec) -> str:
    canonical = json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"))
    return f"sha256:{hashlib.sha256(canonical.encode()).hexdigest()}"
