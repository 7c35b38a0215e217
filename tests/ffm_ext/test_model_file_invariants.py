"""Model file headers that are well formed and correctly checksummed but describe no model
(a zero dimension) are refused as corrupted, not handed to the engine.

Fast checks that `make mutation` runs against every mutant of `_model_file.py`, with
test_model_io.py and test_model_file_fuzz.py."""

from __future__ import annotations

import json
import pathlib
import struct
import zlib

import pytest

import ffm_ext

_HEADER = struct.Struct("<8sIIqqqBxxxII")


def _version_2_file(
    n: int, m: int, k: int, *, normalize: int = 1, extra_header: int = 0, padding: int = 0
) -> bytes:
    """A version 2 file with a correct CRC32, whatever its header says."""
    params = json.dumps({"k": k, "normalize": True}, sort_keys=True).encode()
    weights = bytes(4 * n * m * k + padding)
    header_size = _HEADER.size + len(params) + extra_header
    head = _HEADER.pack(b"CTRFFM\x00\x00", 2, header_size, n, m, k, normalize, 0, len(params))
    crc = zlib.crc32(weights, zlib.crc32(params, zlib.crc32(head)))
    head = head[: _HEADER.size - 8] + struct.pack("<I", crc) + head[_HEADER.size - 4 :]
    return head + params + weights


@pytest.mark.parametrize(("n", "m", "k"), [(0, 2, 2), (3, 0, 2), (3, 2, 0)])
def test_a_zero_dimension_is_a_corrupted_header(
    tmp_path: pathlib.Path, n: int, m: int, k: int
) -> None:
    path = tmp_path / "zero.ffm"
    path.write_bytes(_version_2_file(n, m, k))
    with pytest.raises(ffm_ext.FFMModelFileError, match=rf"corrupted header \(n={n}, m={m}, k={k}"):
        ffm_ext.FFM.load(path)


def test_the_smallest_model_file_loads(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "one.ffm"
    path.write_bytes(_version_2_file(1, 1, 1))
    model = ffm_ext.FFM.load(path)
    assert model.weights.shape[:2] == (1, 1)


def test_a_normalize_flag_other_than_0_or_1_is_a_corrupted_header(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "flag.ffm"
    path.write_bytes(_version_2_file(2, 2, 2, normalize=2))
    with pytest.raises(ffm_ext.FFMModelFileError, match=r"corrupted header \(.*normalize=2\)"):
        ffm_ext.FFM.load(path)


def test_a_header_size_that_disagrees_with_the_parameters_is_a_corrupted_header(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "size.ffm"
    path.write_bytes(_version_2_file(2, 2, 2, extra_header=8, padding=8))  # file size agrees
    with pytest.raises(ffm_ext.FFMModelFileError, match=r"corrupted header \(n=2, m=2, k=2"):
        ffm_ext.FFM.load(path)


def test_the_parameters_are_written_as_sorted_json(tmp_path: pathlib.Path) -> None:
    # the same model always gives the same bytes, whatever order its parameters were set in
    path = tmp_path / "small.ffm"
    path.write_bytes(_version_2_file(1, 1, 1))
    model = ffm_ext.FFM.load(path)
    model.save(tmp_path / "again.ffm")
    blob = (tmp_path / "again.ffm").read_bytes()
    params_len = _HEADER.unpack(blob[: _HEADER.size])[-1]
    text = blob[_HEADER.size : _HEADER.size + params_len]
    assert text == json.dumps(json.loads(text), sort_keys=True).encode()
    assert list(json.loads(text)) == sorted(json.loads(text))
