"""FFM: the model, its training loop (epochs, validation, early stopping) and its files."""

from __future__ import annotations

import io
import math
import os
import pathlib
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from ffm_ext import _core
from ffm_ext._dataset import Dataset
from ffm_ext._epoch_rows import EpochRows
from ffm_ext._errors import FFMDivergenceError, FFMModelFileError
from ffm_ext._model_file import read_model_file, write_model_file
from ffm_ext._threads import resolve_threads

__all__ = ["FFM", "EpochCallback", "FitHistory"]

#: callback(epoch (1-based), train logloss, valid logloss or None) -> True to stop training.
EpochCallback = Callable[[int, float, "float | None"], "bool | None"]

_LIBFFM_HEADER = struct.Struct("<iii?")

#: A training logloss above this (the constant predictor's is below 0.7) makes fit() scan the
#: weights and accumulators at once: an accumulator that overflowed to inf gets a step of 0 from
#: the reciprocal square root estimate, so its weight freezes instead of turning NaN, and the
#: logloss alone may stay finite (values of 1e19 without normalisation gave 1.2e37).
SUSPECT_TRAIN_LOGLOSS = 30.0
#: When a fit diverges, a lam above this is named as the likely cause (LIBFFM's default is 2e-5).
USUAL_LAM_MAX = 1.0
#: ... and so are values above this in a fit without normalisation: pairs multiply two values.
UNNORMALIZED_VALUE_MAX = 100.0


@dataclass
class FitHistory:
    """What happened in fit(): per-epoch losses and where early stopping landed."""

    train_logloss: list[float] = field(default_factory=list)
    valid_logloss: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    best_epoch: int = 0  # 1-based; the epoch whose weights the model keeps
    best_valid_logloss: float | None = None
    stopped_early: bool = False
    stop_reason: str = "epochs"  # "epochs" | "early_stopping" | "callback"


def _require_both_labels(data: Dataset, role: str) -> None:
    """Refuse a set with one label: training would learn a constant, and validation logloss
    would pick epochs by it (and AUC is undefined)."""
    if data.n_rows == 0:
        raise ValueError(f"the {role} set has no rows")
    clicks = int(np.count_nonzero(data.labels == 1))
    if clicks in (0, data.n_rows):
        raise ValueError(
            f"the {role} set has only label {data.labels[0]:g} in all {data.n_rows:,} rows: "
            f"an FFM needs both clicks (1) and non-clicks (0)"
        )


def _check(name: str, value: float, ok: bool, rule: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


class FFM:
    """Field-aware Factorization Machine (LIBFFM's model and training algorithm).

    k latent factors per (feature, field); AdaGrad with learning rate `eta` and L2 `lam`;
    instance-wise normalisation (each row scaled to unit squared norm) when `normalize`;
    shuffled epochs; with a validation set, training stops after `patience` epochs without
    improvement and keeps the best epoch's weights. `n_threads` threads train lock-free
    (Hogwild); with one thread, results are bit-identical for the same `seed`.

    Unknown ids at prediction time: tokens whose feature is beyond the model's features are
    dropped (as if absent: they count neither in the pairs nor in the normalisation), in batch
    and one-row prediction alike. A field beyond the model's fields is an error (ValueError):
    it means the data was built with another feature spec.
    """

    def __init__(
        self,
        k: int = 4,
        eta: float = 0.2,
        lam: float = 2e-5,
        epochs: int = 15,
        normalize: bool = True,
        n_threads: int = 1,
        seed: int = 0,
        patience: int = 1,
        progress: bool | None = None,
    ) -> None:
        _check("k", k, isinstance(k, int | np.integer) and k >= 1, "an integer >= 1")
        _check("eta", eta, math.isfinite(eta) and eta > 0, "a finite number > 0")
        _check("lam", lam, math.isfinite(lam) and lam >= 0, "a finite number >= 0")
        _check("epochs", epochs, isinstance(epochs, int | np.integer) and epochs >= 1, ">= 1")
        _check(
            "patience", patience, isinstance(patience, int | np.integer) and patience >= 1, ">= 1"
        )
        _check("seed", seed, isinstance(seed, int | np.integer) and seed >= 0, "an integer >= 0")
        resolve_threads(n_threads)  # validates
        self.k = int(k)
        self.eta = float(eta)
        self.lam = float(lam)
        self.epochs = int(epochs)
        self.normalize = bool(normalize)
        self.n_threads = int(n_threads)
        self.seed = int(seed)
        self.patience = int(patience)
        self.progress = progress
        self._engine: _core.Engine | None = None

    # -- state --------------------------------------------------------------------------------
    def _fitted(self) -> _core.Engine:
        if self._engine is None:
            raise RuntimeError("this FFM has no weights yet: call fit() or load a model")
        return self._engine

    @property
    def is_fitted(self) -> bool:
        return self._engine is not None

    @property
    def n_features(self) -> int:
        return int(self._fitted().shape[0])

    @property
    def n_fields(self) -> int:
        return int(self._fitted().shape[1])

    @property
    def weights(self) -> npt.NDArray[np.float32]:
        """(n_features, n_fields, k) float32 view of the weights in C memory (no copy)."""
        weights: npt.NDArray[np.float32] = self._fitted().weights
        return weights

    def get_params(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "eta": self.eta,
            "lam": self.lam,
            "epochs": self.epochs,
            "normalize": self.normalize,
            "n_threads": self.n_threads,
            "seed": self.seed,
            "patience": self.patience,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"FFM({args})"

    def init_weights(self, n_features: int, n_fields: int) -> None:
        """Fresh weights with LIBFFM's random initialisation (what fit() starts from)."""
        engine = _core.Engine(n_features, n_fields, self.k)
        engine.initialize(self.seed)
        self._engine = engine

    # -- training -----------------------------------------------------------------------------
    def fit(
        self,
        train: Dataset,
        valid: Dataset | None = None,
        *,
        callback: EpochCallback | None = None,
        shuffle: bool = True,
        warm_start: bool = False,
    ) -> FitHistory:
        """Train; returns the per-epoch history. With `valid`, early stopping keeps the best
        epoch's weights. `callback` runs after every epoch and stops training by returning
        True; exceptions it raises (e.g. optuna.TrialPruned) propagate with the model left at
        the last epoch's weights. `warm_start` continues from the current weights (with fresh
        AdaGrad accumulators) when their shape fits the data."""
        if not isinstance(train, Dataset):
            raise TypeError(f"train must be an ffm_ext.Dataset, got {type(train).__name__}")
        if valid is not None and not isinstance(valid, Dataset):
            raise TypeError(f"valid must be an ffm_ext.Dataset, got {type(valid).__name__}")
        _require_both_labels(train, "training")
        if valid is not None:
            _require_both_labels(valid, "validation")
        # Like LIBFFM, size the model for every id seen in training or validation.
        n = max(train.n_features, valid.n_features if valid is not None else 0, 1)
        m = max(train.n_fields, valid.n_fields if valid is not None else 0, 1)
        engine = self._engine
        if not (warm_start and engine is not None and engine.shape == (n, m, self.k)):
            engine = _core.Engine(n, m, self.k, training=True)
            engine.initialize(self.seed)
        self._engine = engine
        threads = resolve_threads(self.n_threads)
        history = FitHistory()
        # Snapshot of the best epoch's weights (weights only, no accumulators); its memory is
        # touched in the background during the first epoch, not in the first snapshot.
        best: Any = None
        if valid is not None and self.epochs > 1:
            best = engine.snapshot_buffer()
        bad_epochs = 0
        bar = self._progress_bar()
        restore = None
        rows = EpochRows(train)
        engine.start_training()
        try:
            for epoch in range(1, self.epochs + 1):
                started = time.perf_counter()
                arrays, order = rows.epoch(self.seed * 1_000_003 + epoch if shuffle else None)
                loss = engine.train_epoch(
                    *arrays, order, self.eta, self.lam, self.normalize, threads
                )
                if not math.isfinite(loss):
                    raise self._diverged(epoch, "training logloss", loss, train)
                if loss > SUSPECT_TRAIN_LOGLOSS and not engine.weights_finite():
                    raise self._diverged(epoch, "an AdaGrad accumulator or weight", math.inf, train)
                history.train_logloss.append(loss)
                valid_loss = None
                if valid is not None:
                    valid_loss = self._logloss(engine, valid, threads)
                    if not math.isfinite(valid_loss):
                        raise self._diverged(epoch, "validation logloss", valid_loss, train)
                    history.valid_logloss.append(valid_loss)
                    if (
                        history.best_valid_logloss is None
                        or valid_loss < history.best_valid_logloss
                    ):
                        history.best_valid_logloss = valid_loss
                        history.best_epoch = epoch
                        bad_epochs = 0
                        if epoch < self.epochs:  # the last epoch's weights need no copy
                            best = engine.snapshot(best, threads)
                    else:
                        bad_epochs += 1
                else:
                    history.best_epoch = epoch
                history.epoch_seconds.append(time.perf_counter() - started)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(train=f"{loss:.5f}", valid=f"{valid_loss or float('nan'):.5f}")
                if valid is not None and bad_epochs >= self.patience:
                    history.stopped_early, history.stop_reason = True, "early_stopping"
                    break
                if callback is not None and callback(epoch, loss, valid_loss):
                    history.stopped_early, history.stop_reason = True, "callback"
                    break
            # Weights and accumulators, while both are here. Non-finite values never turn
            # finite again, so a finite last state also vouches for the best epoch's snapshot.
            if not engine.weights_finite():
                last = len(history.train_logloss)
                raise self._diverged(last, "an AdaGrad accumulator or weight", math.inf, train)
            if valid is not None and history.best_epoch != len(history.train_logloss):
                restore = best  # the best epoch's weights replace the last ones, no copy
        finally:
            engine.stop_training(restore)
            if bar is not None:
                bar.close()
        return history

    def _diverged(self, epoch: int, what: str, value: float, train: Dataset) -> FFMDivergenceError:
        self._engine = None  # never leave a NaN model behind
        return FFMDivergenceError(
            f"training diverged at epoch {epoch}: {what} is {value}; "
            + "; ".join(self._divergence_advice(train))
        )

    def _divergence_advice(self, train: Dataset) -> list[str]:
        """What to change, from the settings and the data: a huge lam or unnormalised huge
        values diverge at any eta, so "lower eta" would send the user the wrong way."""
        advice = []
        if self.lam > USUAL_LAM_MAX:
            advice.append(f"lam {self.lam:g} is far above the usual 1e-6 to 1e-3: lower it")
        values = train.values  # memory-mapped, maybe large: no temporary |values| array
        largest = float(max(values.max(initial=0.0), -values.min(initial=0.0)))
        if not self.normalize and largest > UNNORMALIZED_VALUE_MAX:
            advice.append(
                f"the training values reach {largest:g} and normalize is off: normalize the"
                " rows or scale the values"
            )
        return advice or [f"lower eta (now {self.eta:g})"]

    def _progress_bar(self) -> Any:
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        if not show:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.epochs, desc="FFM epochs", unit="epoch", leave=False)

    # -- prediction ---------------------------------------------------------------------------
    @staticmethod
    def _check_fields(engine: _core.Engine, data: Dataset) -> None:
        """Fields beyond the model are an error. The scan is one O(nnz) max, not `n_fields`:
        a dataset loaded without validation may declare fewer fields than it holds."""
        m = engine.shape[1]
        if data.nnz and int(data.fields.max()) >= m:
            pos = int(np.argmax(data.fields >= m))
            raise ValueError(
                f"fields[{pos}] = {int(data.fields[pos])} but the model has fields "
                f"0..{m - 1}: was the data built with another feature spec?"
            )

    def _margins(
        self, engine: _core.Engine, data: Dataset, threads: int
    ) -> npt.NDArray[np.float32]:
        margins: npt.NDArray[np.float32] = engine.margins(
            data.indptr, data.fields, data.features, data.values, self.normalize, threads
        )
        return margins

    def _logloss(self, engine: _core.Engine, data: Dataset, threads: int) -> float:
        return float(_core.logloss_from_margins(self._margins(engine, data, threads), data.labels))

    def predict(self, data: Dataset, n_threads: int | None = None) -> npt.NDArray[np.float32]:
        """Click probabilities (float32) for every row; threads run with the GIL released.
        `n_threads` overrides the model's own setting for this call (a server picks its own)."""
        engine = self._fitted()
        self._check_fields(engine, data)
        threads = resolve_threads(self.n_threads if n_threads is None else n_threads)
        out = self._margins(engine, data, threads)
        _core.sigmoid_inplace(out)
        return out

    def decision_function(self, data: Dataset) -> npt.NDArray[np.float32]:
        """Margins phi(x) (log-odds) for every row."""
        engine = self._fitted()
        self._check_fields(engine, data)
        return self._margins(engine, data, resolve_threads(self.n_threads))

    def logloss(self, data: Dataset) -> float:
        """Mean logistic loss on a labelled dataset."""
        engine = self._fitted()
        self._check_fields(engine, data)
        return self._logloss(engine, data, resolve_threads(self.n_threads))

    def predict_one(
        self, fields: npt.ArrayLike, features: npt.ArrayLike, values: npt.ArrayLike
    ) -> float:
        """Probability for one row (serving path). Fastest with int32/int32/float32 arrays."""
        engine = self._engine
        if engine is None:
            self._fitted()
            raise AssertionError  # unreachable: _fitted raised
        return engine.probability_one(fields, features, values, self.normalize)

    # -- files --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Versioned binary file (ffm_ext/_model_file.py): header, parameters and float32
        weights under one CRC32."""
        with pathlib.Path(path).open("wb") as out:
            self._write(out)

    def _write(self, out: BinaryIO) -> None:
        write_model_file(out, self.get_params(), self.normalize, self._fitted())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FFM:
        """Read a file written by save(); truncation, corruption or a foreign file is an error."""
        name = os.fspath(path)
        with pathlib.Path(name).open("rb") as src:
            return cls._read(src, name, os.fstat(src.fileno()).st_size)

    @classmethod
    def _read(cls, src: BinaryIO, name: str, size: int) -> FFM:
        stored = read_model_file(src, name, size)
        try:
            model = cls(**stored.params)
        except (ValueError, TypeError) as exc:
            raise FFMModelFileError(f"{name}: corrupted parameters in header: {exc}") from None
        model._engine = stored.engine
        return model

    @classmethod
    def load_libffm(cls, path: str | os.PathLike[str]) -> FFM:
        """Import a model file written by LIBFFM's ffm-train (its weights; its accumulators are
        dropped). Layout: int32 n, m, k, a byte for normalisation, then for every (feature,
        field) and every group of 4 latent lanes (k rounded up to 4), 4 weights then their 4
        AdaGrad accumulators."""
        name = os.fspath(path)
        with pathlib.Path(name).open("rb") as src:
            head = src.read(_LIBFFM_HEADER.size)
            size = os.fstat(src.fileno()).st_size
        if len(head) < _LIBFFM_HEADER.size:
            raise FFMModelFileError(f"{name}: too short for a LIBFFM model header")
        n, m, k, normalize = _LIBFFM_HEADER.unpack(head)
        if min(n, m, k) < 1:
            raise FFMModelFileError(f"{name}: not a LIBFFM model (n={n}, m={m}, k={k})")
        k4 = (k + 3) // 4 * 4
        expected = _LIBFFM_HEADER.size + n * m * 2 * k4 * 4
        if size != expected:
            raise FFMModelFileError(
                f"{name}: LIBFFM model of n={n}, m={m}, k={k} needs {expected} bytes, "
                f"file has {size}"
            )
        blocks = np.fromfile(name, dtype="<f4", offset=_LIBFFM_HEADER.size)
        weights = blocks.reshape(n, m, k4 // 4, 2, 4)[:, :, :, 0, :].reshape(n, m, k4)[:, :, :k]
        if not np.isfinite(weights).all():
            raise FFMModelFileError(f"{name}: LIBFFM model holds non-finite weights")
        model = cls(k=k, normalize=bool(normalize))
        engine = _core.Engine(n, m, k)
        engine.weights[...] = weights
        model._engine = engine
        return model

    # -- pickle -------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = {"params": self.get_params(), "progress": self.progress}
        state["model"] = None
        if self._engine is not None:
            buffer = io.BytesIO()
            self._write(buffer)
            state["model"] = buffer.getvalue()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        blob = state["model"]
        if blob is None:
            self.__init__(**state["params"], progress=state["progress"])  # type: ignore[misc]
            return
        loaded = FFM._read(io.BytesIO(blob), "<pickle>", len(blob))
        self.__dict__.update(loaded.__dict__)
        self.n_threads = state["params"]["n_threads"]
        self.progress = state["progress"]
