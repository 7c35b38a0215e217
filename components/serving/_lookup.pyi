import numpy as np
import numpy.typing as npt

NOT_PLAIN: int

def hash_texts(texts: list[str], key: bytes) -> npt.NDArray[np.int64]: ...

class KeyTable:
    n_fields: int
    def __init__(self, vocabularies: list[npt.NDArray[np.int64]], offsets: list[int]) -> None: ...
    def lookup(self, field: int, keys: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]: ...

class CategoryTable(KeyTable):
    def __init__(
        self, vocabularies: list[npt.NDArray[np.int64]], offsets: list[int], key: bytes
    ) -> None: ...
    def text_ids(
        self, texts: list[str], fields: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]: ...
    def fill(self, columns: list[list[object]], out: npt.NDArray[np.int64]) -> int: ...

class NumericTable(KeyTable):
    def __init__(
        self,
        vocabularies: list[npt.NDArray[np.int64]],
        offsets: list[int],
        edges: list[npt.NDArray[np.float64] | None],
    ) -> None: ...
    def fill(
        self,
        values: npt.NDArray[np.float64],
        logs: npt.NDArray[np.float64],
        out: npt.NDArray[np.int64],
    ) -> None: ...

def plain_floats(values: list[object], out: npt.NDArray[np.float64], start: int = 0) -> int: ...
