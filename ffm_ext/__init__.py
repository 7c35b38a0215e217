"""ffm_ext: Field-aware Factorization Machines (LIBFFM's model) in C and Cython.

train = ffm_ext.read_libffm("train.ffm")          # errors name file, line, token
model = ffm_ext.FFM(k=4, eta=0.2, lam=2e-5, epochs=15)
history = model.fit(train, valid=valid)            # early stopping keeps the best epoch
p = model.predict(test)                            # float32 probabilities, GIL released
"""

try:
    from ffm_ext import _core  # noqa: F401  (the compiled engine; everything below needs it)
except ImportError as exc:  # e.g. the source folder of a checkout shadowing the installed one
    raise ImportError(
        f"ffm_ext's compiled core (_core) is missing beside {__file__}: install ctrflow"
        " (`make install`, or pip install the wheel) and run with that interpreter"
    ) from exc

from ffm_ext._dataset import FORMAT_NAME, FORMAT_VERSION, Dataset, read_libffm
from ffm_ext._errors import (
    FFMDatasetError,
    FFMDivergenceError,
    FFMFormatError,
    FFMModelFileError,
)
from ffm_ext._model import FFM, EpochCallback, FitHistory

__all__ = [
    "FFM",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Dataset",
    "EpochCallback",
    "FFMDatasetError",
    "FFMDivergenceError",
    "FFMFormatError",
    "FFMModelFileError",
    "FitHistory",
    "read_libffm",
]
