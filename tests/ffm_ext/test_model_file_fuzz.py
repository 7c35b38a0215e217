"""Issue #13: one flipped bit anywhere in a model file is refused or changes nothing.

The file is small (6 features, 2 fields, k=2: a few hundred bytes), so every bit is flipped,
one at a time, in a few seconds. Version 2 files (what save() writes) must refuse every flip;
version 1 files (written before, still in users' registries) must refuse it or predict exactly
as before.
"""

from __future__ import annotations

import json
import pathlib
import struct
import zlib

import numpy as np
import pytest

import ffm_ext


@pytest.fixture(scope="module")
def small() -> tuple[ffm_ext.FFM, ffm_ext.Dataset]:
    rng = np.random.default_rng(3)
    rows = 60
    data = ffm_ext.Dataset(
        np.arange(rows + 1, dtype=np.int64) * 2,
        np.tile(np.array([0, 1], np.int32), rows),
        rng.integers(0, 6, rows * 2).astype(np.int32),
        rng.uniform(0.5, 2.0, rows * 2).astype(np.float32),
        (np.arange(rows) % 2).astype(np.float32),
        n_features=6,
        n_fields=2,
    )
    model = ffm_ext.FFM(k=2, epochs=2, seed=1)
    model.fit(data)
    return model, data


def version_1_file(model: ffm_ext.FFM) -> bytes:
    """A model file as ffm_ext wrote it before version 2: the same header, but the CRC32
    covers only the weights."""
    weights = np.ascontiguousarray(model.weights).tobytes()
    params = json.dumps(model.get_params(), sort_keys=True).encode()
    header = struct.Struct("<8sIIqqqBxxxII")
    n, m, k = model.weights.shape
    head = header.pack(
        b"CTRFFM\x00\x00", 1, header.size + len(params), n, m, k, model.normalize,
        zlib.crc32(weights), len(params),
    )  # fmt: skip
    return head + params + weights


def flips_not_refused(
    blob: bytes, data: ffm_ext.Dataset, expected: np.ndarray, tmp_path: pathlib.Path
) -> tuple[int, list[tuple[int, int]]]:
    """Flip every bit; returns (how many loaded with identical predictions, the flips that
    loaded with different ones)."""
    path = tmp_path / "flipped.ffm"
    identical, wrong = 0, []
    for byte in range(len(blob)):
        for bit in range(8):
            flipped = bytearray(blob)
            flipped[byte] ^= 1 << bit
            path.write_bytes(flipped)
            try:
                loaded = ffm_ext.FFM.load(path)
            except ffm_ext.FFMModelFileError:
                continue
            if np.array_equal(loaded.predict(data), expected):
                identical += 1
            else:
                wrong.append((byte, bit))
    return identical, wrong


def test_every_bit_flip_of_a_version_2_file_is_refused(
    small: tuple[ffm_ext.FFM, ffm_ext.Dataset], tmp_path: pathlib.Path
) -> None:
    model, data = small
    path = tmp_path / "model.ffm"
    model.save(path)
    blob = path.read_bytes()
    assert struct.unpack_from("<I", blob, 8)[0] == 2
    identical, wrong = flips_not_refused(blob, data, model.predict(data), tmp_path)
    assert (identical, wrong) == (0, [])


def test_version_1_files_load_and_a_bit_flip_never_changes_predictions(
    small: tuple[ffm_ext.FFM, ffm_ext.Dataset], tmp_path: pathlib.Path
) -> None:
    model, data = small
    blob = version_1_file(model)
    path = tmp_path / "v1.ffm"
    path.write_bytes(blob)
    old = ffm_ext.FFM.load(path)
    np.testing.assert_array_equal(old.predict(data), model.predict(data))
    old.save(path)  # saving again upgrades it
    assert struct.unpack_from("<I", path.read_bytes(), 8)[0] == 2
    _, wrong = flips_not_refused(blob, data, model.predict(data), tmp_path)
    assert wrong == []


def test_normalize_flag_flip_is_refused(
    small: tuple[ffm_ext.FFM, ffm_ext.Dataset], tmp_path: pathlib.Path
) -> None:
    """The tester's case: the byte holding the normalisation flag (offset 40) flipped to 0."""
    model, _ = small
    for name, blob in (("v2", None), ("v1", version_1_file(model))):
        path = tmp_path / f"{name}.ffm"
        if blob is None:
            model.save(path)
            blob = path.read_bytes()
        assert blob[40] == 1
        path.write_bytes(blob[:40] + b"\x00" + blob[41:])
        with pytest.raises(ffm_ext.FFMModelFileError, match="CRC32|corrupted header"):
            ffm_ext.FFM.load(path)
