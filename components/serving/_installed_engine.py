"""Import the ffm_ext installed beside ctrflow, not a folder of that name in the working directory.

Servers such as uvicorn (under `mlflow models serve`) put the directory they start in first on
sys.path. Started in a ctrflow checkout, `import ffm_ext` then found the checkout's ffm_ext/,
which has no compiled core, and the model failed to load. An editable install is not affected
(its import hook comes before sys.path), nor is a working directory without such a folder.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

__all__ = ["prefer_installed_ffm_ext"]


def prefer_installed_ffm_ext() -> None:
    """Put ctrflow's own install directory first on sys.path when ffm_ext would come from
    elsewhere and that directory has an ffm_ext of its own. Call before ffm_ext is imported."""
    if "ffm_ext" in sys.modules:
        return
    import ctrflow

    installed = pathlib.Path(ctrflow.__file__).resolve().parents[1]
    if not (installed / "ffm_ext").is_dir():
        return  # an editable install: its import hook already maps ffm_ext
    found = importlib.util.find_spec("ffm_ext")
    origin = found.origin if found is not None else None
    if origin is None or pathlib.Path(origin).resolve().parents[1] != installed:
        sys.path.insert(0, str(installed))
