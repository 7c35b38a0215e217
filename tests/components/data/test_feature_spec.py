"""FeatureSpec: schema files, stable hashing, binning, rare/missing features, save/load, serving."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctrflow.components.data import _binning
from ctrflow.components.data._hashing import hash_key, hash_strings
from ctrflow.components.data.feature_spec import (
    BadRowsError,
    FeatureSpec,
    FittedFeatureSpec,
    SpecError,
)

M64 = (1 << 64) - 1


# ---- a pure-Python SipHash-2-4 + splitmix64, the documented definition of the hash ---------


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & M64


def _siphash24(key: bytes, msg: bytes) -> int:
    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D, k0 ^ 0x6C7967656E657261,
         k1 ^ 0x7465646279746573]  # fmt: skip

    def sip_round() -> None:
        v[0] = (v[0] + v[1]) & M64
        v[1] = _rotl(v[1], 13) ^ v[0]
        v[0] = _rotl(v[0], 32)
        v[2] = (v[2] + v[3]) & M64
        v[3] = _rotl(v[3], 16) ^ v[2]
        v[0] = (v[0] + v[3]) & M64
        v[3] = _rotl(v[3], 21) ^ v[0]
        v[2] = (v[2] + v[1]) & M64
        v[1] = _rotl(v[1], 17) ^ v[2]
        v[2] = _rotl(v[2], 32)

    full = len(msg) // 8 * 8
    for i in range(0, full, 8):
        word = int.from_bytes(msg[i : i + 8], "little")
        v[3] ^= word
        sip_round()
        sip_round()
        v[0] ^= word
    last = ((len(msg) & 0xFF) << 56) | int.from_bytes(msg[full:], "little")
    v[3] ^= last
    sip_round()
    sip_round()
    v[0] ^= last
    v[2] ^= 0xFF
    for _ in range(4):
        sip_round()
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def _splitmix_finalize(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


@pytest.mark.parametrize("seed", [0, 7, 2**63 + 5])
def test_hash_matches_the_documented_definition(seed: int) -> None:
    values = ["", "a", "05db9164", "héllo wörld ünïcode", "x" * 67]
    expected = [_splitmix_finalize(_siphash24(hash_key(seed).encode(), v.encode())) for v in values]
    assert hash_strings(values, seed).view(np.uint64).tolist() == expected


def test_hash_seed_changes_every_hash() -> None:
    values = [f"{i:08x}" for i in range(1000)]
    assert not np.any(hash_strings(values, 0) == hash_strings(values, 1))


# ---- numeric binning -------------------------------------------------------------------


def test_log_square_rule_and_small_and_negative_values() -> None:
    values = np.array(
        [-1e6, -50.0, -3.0, -2.0, -1.5, -1.0, 0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 100.0, 1e9]
    )
    keys = _binning.log_square_bins(values).tolist()

    def rule(v: float) -> int:
        if v > 2:
            return 1000 + math.floor(math.log(v) ** 2)
        if v < -2:
            return -1000 - math.floor(math.log(-v) ** 2)
        return math.floor(v)

    assert keys == [rule(v) for v in values.tolist()]
    # The three ranges never share a bin: 3.0 (log^2 = 1.2) is not the bin of 1.0.
    assert keys[values.tolist().index(3.0)] != keys[values.tolist().index(1.0)]


def test_quantile_bins_are_equal_frequency() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"y": rng.integers(0, 2, 20_000), "x": rng.exponential(5.0, 20_000)})
    spec = FeatureSpec(label="y", numeric=("x",), numeric_binning="quantile", quantile_bins=8)
    fitted = spec.fit([frame])
    assert fitted.field_sizes.tolist() == [2 + 8]
    features = fitted.transform(frame).features
    counts = np.bincount(features, minlength=10)[2:]  # skip missing and rare
    assert counts.min() > 0.8 * len(frame) / 8
    assert counts.max() < 1.2 * len(frame) / 8


# ---- fitted transform ------------------------------------------------------------------


def _toy_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "y": [1, 0, 0, 1, 0, 1, 0],
            "n": [1.0, 5.0, np.nan, 5.0, 5.0, 300.0, 1.0],
            "c": ["a", "a", "a", "b", None, "a", "b"],
        }
    )


def test_rare_unseen_and_missing_values_get_their_own_features() -> None:
    spec = FeatureSpec(label="y", numeric=("n",), categorical=("c",), rare_threshold=2)
    fitted = spec.fit([_toy_frame()])
    # c: "a" seen 4 times, "b" twice -> both kept; n: bins of 1.0 (2x) and 5.0 (3x) kept,
    # 300.0 (once) is rare.
    assert fitted.features_per_field() == {"n": 4, "c": 4}
    offset_c = int(fitted.offsets[1])
    serve = pd.DataFrame({"n": [np.nan, 300.0, 5.0, 7e9], "c": ["a", "zzz", None, ""]})
    ds = fitted.transform(serve, with_labels=False)
    feats = ds.features.reshape(4, 2)
    missing_n, rare_n, missing_c, rare_c = 0, 1, offset_c, offset_c + 1
    assert feats[0, 0] == missing_n
    assert feats[1, 0] == rare_n  # seen once in training: below the threshold
    assert feats[2, 0] >= 2  # a kept bin
    assert feats[3, 0] == rare_n  # a bin never seen
    assert feats[0, 1] >= offset_c + 2  # "a"
    assert feats[1, 1] == rare_c  # unseen value
    assert feats[2, 1] == missing_c  # None
    assert feats[3, 1] == missing_c  # empty string is missing too
    assert ds.labels.tolist() == [0.0] * 4
    assert ds.n_features == fitted.n_features == 8
    assert ds.values.tolist() == [1.0] * 8


def test_threshold_and_cap_pick_the_most_frequent_values() -> None:
    frame = pd.DataFrame({"y": [0] * 10, "c": list("aaaabbbccd")})
    fitted = FeatureSpec(label="y", categorical=("c",), rare_threshold=2).fit([frame])
    assert fitted.field_sizes.tolist() == [2 + 3]  # a, b, c
    capped = FeatureSpec(label="y", categorical=("c",), rare_threshold=2, max_values_per_field=2)
    fitted = capped.fit([frame])
    feats = fitted.transform(pd.DataFrame({"c": list("abcd")}), with_labels=False).features
    assert feats[2] == feats[3] == 1  # "c" dropped by the cap, "d" below the threshold
    assert len({int(feats[0]), int(feats[1])}) == 2 and min(feats[:2]) >= 2


def test_fit_streams_frames_like_one_frame(criteo_csv: Path) -> None:
    frame = pd.read_csv(criteo_csv)
    spec = FeatureSpec.criteo(rare_threshold=3)
    whole = spec.fit([frame])
    parts = spec.fit(frame.iloc[i : i + 37] for i in range(0, len(frame), 37))
    assert [v.tolist() for v in whole.vocabularies] == [v.tolist() for v in parts.vocabularies]
    assert whole.rows_fitted == parts.rows_fitted == len(frame)


def test_criteo_sample_one_feature_per_field_and_missing_where_empty(criteo_csv: Path) -> None:
    frame = pd.read_csv(criteo_csv, dtype={f"C{i}": str for i in range(1, 27)})
    fitted = FeatureSpec.criteo(rare_threshold=2).fit([frame])
    ds = fitted.transform(frame)
    assert (ds.n_rows, ds.n_fields) == (len(frame), 39)
    feats = ds.features.reshape(len(frame), 39)
    offsets, sizes = fitted.offsets, fitted.field_sizes
    assert np.all((feats >= offsets) & (feats < offsets + sizes))
    assert np.array_equal(
        ds.fields.reshape(len(frame), 39), np.tile(np.arange(39), (len(frame), 1))
    )
    raw_missing = frame[list(fitted.raw_columns)].isna().to_numpy()
    assert np.array_equal(feats == offsets, raw_missing)
    assert np.array_equal(ds.labels, frame["label"].to_numpy(np.float32))


def test_transform_names_bad_rows() -> None:
    fitted = FeatureSpec(label="y", numeric=("n",), categorical=("c",)).fit([_toy_frame()])
    bad = pd.DataFrame({"y": [0, 1], "n": ["3", "abc"], "c": ["a", "b"]}, index=[10, 11])
    with pytest.raises(BadRowsError, match=r"row 11: n: cannot parse 'abc'"):
        fitted.transform(bad)
    with pytest.raises(BadRowsError, match=r"row 0: y: label 2 is not 0 or 1"):
        fitted.transform(pd.DataFrame({"y": [2], "n": [1.0], "c": ["a"]}))
    with pytest.raises(SpecError, match="column.*c.*missing"):
        fitted.transform(pd.DataFrame({"y": [1], "n": [1.0]}))


def test_categorical_values_hash_as_text_whatever_their_python_type() -> None:
    frame = pd.DataFrame({"y": [0] * 4, "c": ["5", "5", "x", "x"]})
    fitted = FeatureSpec(label="y", categorical=("c",), rare_threshold=1).fit([frame])
    mixed = pd.DataFrame({"c": pd.Series([5, "5", "x"], dtype=object)})
    feats = fitted.transform(mixed, with_labels=False).features
    assert feats[0] == feats[1] != feats[2]
    assert feats.min() >= 2


# ---- persistence and determinism -------------------------------------------------------


def test_save_load_round_trip_gives_the_same_features(criteo_csv: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(criteo_csv)
    fitted = FeatureSpec.criteo(rare_threshold=2, numeric_binning="quantile").fit([frame])
    fitted.save(str(tmp_path / "spec.json"))
    loaded = FittedFeatureSpec.load(str(tmp_path / "spec.json"))
    assert loaded.spec == fitted.spec
    assert np.array_equal(loaded.transform(frame).features, fitted.transform(frame).features)
    data = json.loads((tmp_path / "spec.json").read_text())
    assert (data["format"], data["version"]) == ("ctrflow.fitted_feature_spec", 1)
    data["version"] = 99
    (tmp_path / "future.json").write_text(json.dumps(data))
    with pytest.raises(SpecError, match=r"future\.json.*version"):
        FittedFeatureSpec.load(str(tmp_path / "future.json"))


_CHILD = """
import sys, numpy as np, pandas as pd
from ctrflow.components.data.feature_spec import FeatureSpec
frame = pd.read_csv(sys.argv[1])
fitted = FeatureSpec.criteo(rare_threshold=2, hash_seed=11).fit([frame])
np.save(sys.argv[2], fitted.transform(frame).features)
"""


def test_features_are_identical_in_another_process(criteo_csv: Path, tmp_path: Path) -> None:
    sample = criteo_csv
    frame = pd.read_csv(sample)
    here = FeatureSpec.criteo(rare_threshold=2, hash_seed=11).fit([frame]).transform(frame)
    for hash_seed in ("1", "12345"):  # Python's own str hash differs per process with these
        out = tmp_path / f"child-{hash_seed}.npy"
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        subprocess.run([sys.executable, "-c", _CHILD, str(sample), str(out)], check=True, env=env)
        assert np.array_equal(np.load(out), here.features)


# ---- spec files ------------------------------------------------------------------------


def _write(path: Path, data: object) -> str:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def test_spec_file_round_trip(tmp_path: Path) -> None:
    spec = FeatureSpec(
        label="click", numeric=("price",), categorical=("site", "app"), timestamp="ts",
        separator="\t", rare_threshold=3, hash_seed=9,
    )  # fmt: skip
    spec.save(str(tmp_path / "spec.json"))
    assert FeatureSpec.from_file(str(tmp_path / "spec.json")) == spec


_ONE = {"label": "y", "categorical": ["a"]}
_BAD_SPECS = [
    ({"label": "y", "numerc": ["a"]}, r"bad\.json: unknown key 'numerc' \(did you mean 'numeric'"),
    ({"label": "y", "numeric": "a"}, r"bad\.json: key 'numeric' must be a list of column names"),
    ({**_ONE, "rare_threshold": "10"}, r"bad\.json: key 'rare_threshold' must be an integer"),
    ({**_ONE, "rare_threshold": 0}, r"bad\.json: key 'rare_threshold' must be >= 1"),
    ({"label": "y", "categorical": ["a", "a"]}, r"bad\.json: column\(s\) a appear more than once"),
    ({"label": "y"}, r"bad\.json: key 'numeric' or 'categorical' must name at least one"),
    ({**_ONE, "numeric_binning": "log"}, r"bad\.json: key 'numeric_binning'.*got 'log'"),
    ({**_ONE, "version": 2}, r"bad\.json: key 'version' must be 1"),
    ('{"label": "y",\n "numeric": [1,}', r"bad\.json: not valid JSON at line 2 column"),
    ([1, 2], r"bad\.json: a feature spec must be a JSON object"),
]


@pytest.mark.parametrize(("content", "pattern"), _BAD_SPECS)
def test_spec_file_errors_name_the_file_and_key(
    tmp_path: Path, content: object, pattern: str
) -> None:
    with pytest.raises(SpecError, match=pattern):
        FeatureSpec.from_file(_write(tmp_path / "bad.json", content))


def test_missing_spec_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.json: cannot read the feature spec"):
        FeatureSpec.from_file(str(tmp_path / "nope.json"))
