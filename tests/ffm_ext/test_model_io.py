"""Model files: our versioned format, pickle, and LIBFFM's ffm-train format."""

from __future__ import annotations

import pathlib
import pickle
import struct

import numpy as np
import numpy.typing as npt
import pytest

import ffm_ext
from ffm_ext import FFMModelFileError


def small_data(seed: int = 0) -> ffm_ext.Dataset:
    rng = np.random.default_rng(seed)
    rows, n_fields = 400, 5
    indptr = np.arange(rows + 1, dtype=np.int64) * n_fields
    fields = np.tile(np.arange(n_fields, dtype=np.int32), rows)
    features = rng.integers(0, 60, size=rows * n_fields).astype(np.int32)
    values = rng.uniform(0.5, 1.5, size=rows * n_fields).astype(np.float32)
    labels = (rng.random(rows) < 0.3).astype(np.float32)
    return ffm_ext.Dataset(indptr, fields, features, values, labels)


@pytest.fixture(scope="module", params=[4, 6])
def trained(request: pytest.FixtureRequest) -> tuple[ffm_ext.FFM, ffm_ext.Dataset]:
    data = small_data()
    model = ffm_ext.FFM(k=request.param, epochs=3, normalize=request.param == 4, seed=4)
    model.fit(data)
    return model, data


def test_save_load_round_trip_is_exact(
    trained: tuple[ffm_ext.FFM, ffm_ext.Dataset], tmp_path: pathlib.Path
) -> None:
    model, data = trained
    path = tmp_path / "model.ffm"
    model.save(path)
    loaded = ffm_ext.FFM.load(path)
    np.testing.assert_array_equal(loaded.weights, model.weights)
    np.testing.assert_array_equal(loaded.predict(data), model.predict(data))
    assert loaded.get_params() == model.get_params()


def test_pickle_round_trip_is_exact(trained: tuple[ffm_ext.FFM, ffm_ext.Dataset]) -> None:
    model, data = trained
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.weights, model.weights)
    np.testing.assert_array_equal(clone.predict(data), model.predict(data))
    unfitted = pickle.loads(pickle.dumps(ffm_ext.FFM(k=7)))
    assert unfitted.k == 7 and not unfitted.is_fitted


def test_truncated_corrupted_and_foreign_files_are_rejected(
    trained: tuple[ffm_ext.FFM, ffm_ext.Dataset], tmp_path: pathlib.Path
) -> None:
    model, _ = trained
    path = tmp_path / "model.ffm"
    model.save(path)
    blob = path.read_bytes()
    cases = {
        "truncated": (blob[:-10], "truncated or corrupted"),
        "header only": (blob[:20], "not a ctrflow FFM model file"),
        "foreign": (b"PK\x03\x04" + blob[4:], "not a ctrflow FFM model file"),
        "bit flip": (blob[:-5] + bytes([blob[-5] ^ 0x40]) + blob[-4:], "CRC32"),
        "version": (blob[:8] + struct.pack("<I", 99) + blob[12:], "version 99"),
    }
    for name, (content, words) in cases.items():
        bad = tmp_path / f"{name}.ffm"
        bad.write_bytes(content)
        with pytest.raises(FFMModelFileError, match=words):
            ffm_ext.FFM.load(bad)
    with pytest.raises(FileNotFoundError):
        ffm_ext.FFM.load(tmp_path / "missing.ffm")


def write_libffm_model(
    path: pathlib.Path, weights: npt.NDArray[np.float32], normalize: bool
) -> None:
    """A model file in ffm-train's layout: int32 n, m, k, a normalisation byte, then per
    (feature, field) and per group of 4 lanes, 4 weights followed by their 4 accumulators."""
    n, m, k = weights.shape
    k4 = (k + 3) // 4 * 4
    padded = np.zeros((n, m, k4), np.float32)
    padded[:, :, :k] = weights
    blocks = np.empty((n, m, k4 // 4, 2, 4), np.float32)
    blocks[:, :, :, 0, :] = padded.reshape(n, m, k4 // 4, 4)
    blocks[:, :, :, 1, :] = 1.5  # accumulators: ignored on import
    with path.open("wb") as out:
        out.write(struct.pack("<iii?", n, m, k, normalize))
        out.write(blocks.astype("<f4").tobytes())


def test_imports_libffm_model_and_predicts_the_same(
    trained: tuple[ffm_ext.FFM, ffm_ext.Dataset], tmp_path: pathlib.Path
) -> None:
    model, data = trained
    path = tmp_path / "libffm.model"
    write_libffm_model(path, model.weights, model.normalize)
    imported = ffm_ext.FFM.load_libffm(path)
    assert (imported.k, imported.normalize) == (model.k, model.normalize)
    np.testing.assert_array_equal(imported.weights, model.weights)
    np.testing.assert_array_equal(imported.predict(data), model.predict(data))


def test_bad_libffm_files_are_rejected(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "libffm.model"
    write_libffm_model(path, np.ones((3, 2, 4), np.float32), True)
    blob = path.read_bytes()
    path.write_bytes(blob[:-4])
    with pytest.raises(FFMModelFileError, match="needs 205 bytes, file has 201"):
        ffm_ext.FFM.load_libffm(path)
    path.write_bytes(struct.pack("<iii?", -1, 2, 4, True))
    with pytest.raises(FFMModelFileError, match="not a LIBFFM model"):
        ffm_ext.FFM.load_libffm(path)
    path.write_bytes(b"\x01")
    with pytest.raises(FFMModelFileError, match="too short"):
        ffm_ext.FFM.load_libffm(path)
