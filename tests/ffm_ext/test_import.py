"""Importing ffm_ext without its compiled core says what is missing and what to do."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import ffm_ext


def test_source_folder_without_core_fails_with_an_install_hint(tmp_path: pathlib.Path) -> None:
    # The Python files of the package, as a checkout has them before any build: no _core.
    # `-S`: no site-packages, so no installed ffm_ext (nor an editable install's import hook).
    source = pathlib.Path(ffm_ext.__file__).parent
    shutil.copytree(source, tmp_path / "ffm_ext", ignore=shutil.ignore_patterns("_core*", "*.so"))
    proc = subprocess.run(
        [sys.executable, "-S", "-c", "import ffm_ext"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "compiled core (_core) is missing" in last and "make install" in last, last
    assert "circular import" not in last
