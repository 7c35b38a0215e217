"""Outputs written under temporary names beside their final places, moved there at the end.

prepare_data writes several outputs (the split directories may each live elsewhere, as KFP
artifacts do); a failure at any point must leave none of them behind, half-written or whole.
Each output is written to `.<name>.partial-<token>` in its final parent directory (so the move
is a rename on one filesystem), and `commit()` renames them all into place once everything is
written; `discard()` removes them.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class StagedOutputs:
    def __init__(self) -> None:
        self._token = uuid.uuid4().hex[:8]
        self._moves: list[tuple[Path, Path]] = []

    def stage(self, final: Path) -> Path:
        """The temporary path to write `final` at; outputs are moved in the order staged."""
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.parent / f".{final.name}.partial-{self._token}"
        self._moves.append((temp, final))
        return temp

    def commit(self) -> None:
        """Move every staged output into place, replacing what was there."""
        for temp, _ in self._moves:
            if not temp.exists():
                raise FileNotFoundError(f"{temp}: a staged output was never written")
        for temp, final in self._moves:
            _remove(final)
            temp.replace(final)
        self._moves = []

    def discard(self) -> None:
        for temp, _ in self._moves:
            _remove(temp)
        self._moves = []
