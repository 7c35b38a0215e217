"""Where things are: the repository root, and the optional data beside the checkout."""

from __future__ import annotations

import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# Criteo samples some developers keep beside the checkout; tests use them only as extra cases.
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
