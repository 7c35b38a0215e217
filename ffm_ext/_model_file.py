"""The FFM model file: a fixed header, the parameters as JSON, then the float32 weights.

Version 2 (written since issue #13) checks the whole file with one CRC32: header (with the CRC
field read as zero), parameters and weights, so any flipped bit is caught, including the
normalisation flag that changes every prediction. Version 1 files (their CRC covers only the
weights) still load, since registries hold champions written in that format: there the header's
k and normalisation flag must agree with the copy in the parameters, which catches one flipped
bit in either; saving such a model again writes version 2.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any, BinaryIO

import numpy as np

from ffm_ext import _core
from ffm_ext._errors import FFMModelFileError

__all__ = ["FILE_VERSION", "ModelFile", "read_model_file", "write_model_file"]

MAGIC = b"CTRFFM\x00\x00"
FILE_VERSION = 2
_READABLE_VERSIONS = (1, 2)
# magic, version, header bytes, n, m, k, normalize, crc32, params-json bytes
_HEADER = struct.Struct("<8sIIqqqBxxxII")
_CRC_OFFSET = _HEADER.size - 8  # the crc32 field, then the params length


class ModelFile:
    """What a model file holds: the parameters, the flag, and the weights in an Engine."""

    __slots__ = ("engine", "normalize", "params", "version")

    def __init__(
        self, params: dict[str, Any], normalize: bool, engine: _core.Engine, version: int
    ) -> None:
        self.params = params
        self.normalize = normalize
        self.engine = engine
        self.version = version


def write_model_file(
    out: BinaryIO, params: dict[str, Any], normalize: bool, engine: _core.Engine
) -> None:
    n, m, k = engine.shape
    weights = np.ascontiguousarray(engine.weights)  # a copy only when k is padded
    payload = weights.data.cast("B")
    blob = json.dumps(params, sort_keys=True).encode()
    header_size = _HEADER.size + len(blob)
    head = _HEADER.pack(MAGIC, FILE_VERSION, header_size, n, m, k, normalize, 0, len(blob))
    crc = zlib.crc32(payload, zlib.crc32(blob, zlib.crc32(head)))
    out.write(head[:_CRC_OFFSET] + struct.pack("<I", crc) + head[_CRC_OFFSET + 4 :])
    out.write(blob)
    out.write(payload)


def read_model_file(src: BinaryIO, name: str, size: int) -> ModelFile:
    """Read and check a model file of `size` bytes; any inconsistency is FFMModelFileError."""
    head = src.read(_HEADER.size)
    if len(head) < _HEADER.size or not head.startswith(MAGIC):
        raise FFMModelFileError(f"{name}: not a ctrflow FFM model file (bad magic or too short)")
    _, version, header_size, n, m, k, normalize, crc, params_len = _HEADER.unpack(head)
    if version not in _READABLE_VERSIONS:
        raise FFMModelFileError(
            f"{name}: model file version {version}, this ffm_ext reads versions "
            f"{', '.join(map(str, _READABLE_VERSIONS))}: corrupted, or written by a newer ffm_ext"
        )
    if min(n, m, k) < 1 or header_size != _HEADER.size + params_len or normalize > 1:
        raise FFMModelFileError(
            f"{name}: corrupted header (n={n}, m={m}, k={k}, normalize={normalize})"
        )
    expected = header_size + n * m * k * 4
    if size != expected:
        raise FFMModelFileError(
            f"{name}: file has {size} bytes, header says {expected}: truncated or corrupted"
        )
    blob = src.read(params_len)
    engine = _core.Engine(n, m, k)
    target = engine.weights
    buffer = target if target.flags.c_contiguous else np.empty((n, m, k), np.float32)
    payload = buffer.data.cast("B")
    if len(blob) != params_len or src.readinto(payload) != n * m * k * 4:  # type: ignore[attr-defined]
        raise FFMModelFileError(f"{name}: truncated file")
    if version == 1:
        if zlib.crc32(payload) != crc:
            raise FFMModelFileError(
                f"{name}: weights fail their CRC32 check: the file is corrupted"
            )
    else:
        zeroed = head[:_CRC_OFFSET] + bytes(4) + head[_CRC_OFFSET + 4 :]
        if zlib.crc32(payload, zlib.crc32(blob, zlib.crc32(zeroed))) != crc:
            raise FFMModelFileError(
                f"{name}: the file fails its CRC32 check (header, parameters and weights): "
                f"it is corrupted"
            )
    params = _parse_params(blob, name, k, bool(normalize))
    if buffer is not target:
        target[...] = buffer
    return ModelFile(params, bool(normalize), engine, version)


def _parse_params(blob: bytes, name: str, k: int, normalize: bool) -> dict[str, Any]:
    """The JSON parameters; k and normalize must match the header's (version 1 relies on it)."""
    try:
        params = json.loads(blob)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FFMModelFileError(f"{name}: corrupted parameters in header: {exc}") from None
    if not isinstance(params, dict):
        raise FFMModelFileError(f"{name}: corrupted parameters in header (not a JSON object)")
    if params.get("k") != k or params.get("normalize") is not normalize:
        raise FFMModelFileError(
            f"{name}: corrupted header: k={k}, normalize={normalize} but the parameters say "
            f"k={params.get('k')!r}, normalize={params.get('normalize')!r}"
        )
    return params
