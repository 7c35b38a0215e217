"""Run code under one of ffm_ext's hot-loop builds. The build is chosen once per process (from
FFM_ISA, else the CPU), so each build needs a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.testkit.paths import REPO_ROOT


def run_under_isa(isa: str, code: str) -> dict[str, Any]:
    """The JSON object that `code`'s last line of output prints, run with FFM_ISA=isa. `code`
    must print `_core.isa()` under the key "isa": a CPU that cannot run a SIMD build falls back
    to another one, and the test is skipped; the generic build runs everywhere."""
    done = subprocess.run(  # from the repository root, where `tests` imports as a package
        [sys.executable, "-c", code],
        env=dict(os.environ, FFM_ISA=isa), cwd=REPO_ROOT, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["isa"] != isa:
        assert isa != "generic", result
        pytest.skip(f"this CPU cannot run the {isa} build (runs {result['isa']})")
    return result
