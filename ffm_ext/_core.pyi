from typing import Any

import numpy as np
import numpy.typing as npt

class Engine:
    def __init__(self, n: int, m: int, k: int, training: bool = False) -> None: ...
    @property
    def shape(self) -> tuple[int, int, int]: ...
    @property
    def weights(self) -> npt.NDArray[np.float32]: ...
    def initialize(self, seed: int) -> None: ...
    def start_training(self) -> None: ...
    @property
    def training(self) -> bool: ...
    def stop_training(self, restore: Any = None) -> None: ...
    def snapshot_buffer(self) -> Any: ...
    def snapshot(self, into: Any = None, n_threads: int = 1) -> Any: ...
    def weights_finite(self) -> bool: ...
    def train_epoch(
        self,
        indptr: npt.NDArray[np.int64],
        fields: npt.NDArray[np.int32],
        features: npt.NDArray[np.int32],
        values: npt.NDArray[np.float32],
        labels: npt.NDArray[np.float32],
        order: npt.NDArray[np.int64],
        eta: float,
        lam: float,
        normalize: bool,
        n_threads: int,
    ) -> float: ...
    def margins(
        self,
        indptr: npt.NDArray[np.int64],
        fields: npt.NDArray[np.int32],
        features: npt.NDArray[np.int32],
        values: npt.NDArray[np.float32],
        normalize: bool,
        n_threads: int,
    ) -> npt.NDArray[np.float32]: ...
    def probability_one(
        self, fields: npt.ArrayLike, features: npt.ArrayLike, values: npt.ArrayLike, normalize: bool
    ) -> float: ...

def isa() -> str: ...
def eta_rsqrt(x: npt.NDArray[np.float32], eta: float) -> npt.NDArray[np.float32]: ...
def scan_tokens(
    fields: npt.NDArray[np.int32],
    features: npt.NDArray[np.int32],
    values: npt.NDArray[np.float32],
    n_threads: int = 1,
) -> tuple[int, int, int, int, bool]: ...
def max_threads() -> int: ...
def permutation(count: int, seed: int) -> npt.NDArray[np.int64]: ...
def permute_rows(
    indptr: npt.NDArray[np.int64],
    fields: npt.NDArray[np.int32],
    features: npt.NDArray[np.int32],
    values: npt.NDArray[np.float32],
    labels: npt.NDArray[np.float32],
    order: npt.NDArray[np.int64],
    out_indptr: npt.NDArray[np.int64],
    out_fields: npt.NDArray[np.int32],
    out_features: npt.NDArray[np.int32],
    out_values: npt.NDArray[np.float32],
    out_labels: npt.NDArray[np.float32],
    n_threads: int,
) -> None: ...
def logloss_from_margins(
    margins: npt.NDArray[np.float32], labels: npt.NDArray[np.float32]
) -> float: ...
def sigmoid_inplace(values: npt.NDArray[np.float32]) -> None: ...
def parse_libffm_file(
    path: str, skip_empty_lines: bool
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
    npt.NDArray[np.float32],
    npt.NDArray[np.float32],
    int,
    int,
]: ...
