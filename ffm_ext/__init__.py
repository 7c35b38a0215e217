"""ffm_ext: Field-aware Factorization Machines (LIBFFM's model) in C and Cython.

train = ffm_ext.read_libffm("train.ffm")          # errors name file, line, token
model = ffm_ext.FFM(k=4, eta=0.2, lam=2e-5, epochs=15)
history = model.fit(train, valid=valid)            # early stopping keeps the best epoch
p = model.predict(test)                            # float32 probabilities, GIL released
"""

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
