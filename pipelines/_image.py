"""The project image reference that compiled pipelines and launched Jobs use by default.

`make image` tags the image it builds with the same reference: `<registry>/ctrflow:<version>`, the
version being the package's (meson.build's project version), so a pipeline compiled by ctrflow X
runs on the image built from ctrflow X.
"""

from __future__ import annotations

import os

import ctrflow

__all__ = ["DEFAULT_REGISTRY", "REGISTRY_ENV", "default_image"]

DEFAULT_REGISTRY = "ghcr.io/ctrflow"
REGISTRY_ENV = "CTRFLOW_IMAGE_REGISTRY"


def default_image(registry: str | None = None) -> str:
    """`<registry>/ctrflow:<ctrflow version>`; registry from the argument, $CTRFLOW_IMAGE_REGISTRY
    or DEFAULT_REGISTRY, in that order."""
    chosen = registry or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY
    chosen = chosen.rstrip("/")
    if not chosen or any(c.isspace() for c in chosen):
        raise ValueError(f"invalid image registry {chosen!r} (from {REGISTRY_ENV} or argument)")
    return f"{chosen}/ctrflow:{ctrflow.__version__}"
