"""`ctrflow ffm train|predict|convert`: the FFM engine on LIBFFM text or binary datasets.

Inputs are LIBFFM text files (`*.ffm`, `*.txt`) or binary dataset directories, validated as they
load (`--no-validate` skips the O(nnz) checks of a binary directory). Any bad input (data, model
file, a diverging fit) prints one line naming the file and line or index, and exits 1.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
from collections.abc import Callable

EXIT_BAD_INPUT = 1
DEFAULT_MODEL_PATH = "model.ffm"  # `ffm train` without -o: in the current directory
#: What bad input raises: ValueError (FFMFormatError, FFMDatasetError, FFMModelFileError),
#: OSError (missing or unreadable files), FloatingPointError (FFMDivergenceError), MemoryError
#: (sizes no machine holds).
_BAD_INPUT = (ValueError, OSError, FloatingPointError, MemoryError)


def _load(path: str, validate: bool = True):  # type: ignore[no-untyped-def]  # -> ffm_ext.Dataset
    import ffm_ext

    source = pathlib.Path(path)
    if source.is_dir():
        return ffm_ext.Dataset.load(source, validate=validate)
    return ffm_ext.read_libffm(source)  # the parser checks every token either way


def _both_labels(data, path: str, role: str) -> None:  # type: ignore[no-untyped-def]
    """Refuse a one-label set before training (the fit refuses too, without the file name)."""
    import numpy as np

    clicks = int(np.count_nonzero(data.labels == 1))
    if data.n_rows == 0 or clicks in (0, data.n_rows):
        raise ValueError(
            f"{path}: the {role} set has one label only ({clicks:,} clicks in {data.n_rows:,} "
            f"rows): an FFM needs both clicks (1) and non-clicks (0) to train and to score"
        )


def _predict_file(model, data, path: str):  # type: ignore[no-untyped-def]
    """model.predict(data), its error (fields beyond the model) naming the data file."""
    try:
        return model.predict(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _train(args: argparse.Namespace) -> int:
    import ffm_ext

    output = args.output or DEFAULT_MODEL_PATH
    if args.output is None and pathlib.Path(output).exists():
        # Without -o, never overwrite a model the user may want: only ask before training.
        raise ValueError(f"{output} exists: pass -o PATH to overwrite it or to write elsewhere")
    validate = not args.no_validate
    train = _load(args.train, validate)
    valid = _load(args.valid, validate) if args.valid else None
    test = _load(args.test, validate) if args.test else None
    for data, path, role in ((train, args.train, "training"), (valid, args.valid, "validation"),
                             (test, args.test, "test")):  # fmt: skip
        if data is not None:
            _both_labels(data, path, role)
    model = ffm_ext.FFM(
        k=args.k, eta=args.eta, lam=args.lam, epochs=args.epochs, normalize=not args.no_norm,
        n_threads=args.threads, seed=args.seed, patience=args.patience,
    )  # fmt: skip
    started = time.perf_counter()
    history = model.fit(train, valid)
    print(f"trained {train.n_rows:,} rows x {len(history.train_logloss)} epochs "
          f"in {time.perf_counter() - started:.1f}s ({model.n_features:,} features, "
          f"{model.n_fields} fields)")  # fmt: skip
    for epoch, loss in enumerate(history.train_logloss, start=1):
        shown = f"  valid {history.valid_logloss[epoch - 1]:.5f}" if history.valid_logloss else ""
        print(f"epoch {epoch:3d}  train {loss:.5f}{shown}")
    if valid is not None:
        print(f"best epoch {history.best_epoch}: valid logloss {history.best_valid_logloss:.5f}")
    if test is not None:
        from sklearn.metrics import roc_auc_score

        p = _predict_file(model, test, args.test)
        print(f"test logloss {model.logloss(test):.5f}  AUC {roc_auc_score(test.labels, p):.5f}")
    model.save(output)
    print(f"model written to {output}" + ("" if args.output else " (default path; -o to choose)"))
    return 0


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    import ffm_ext

    model = ffm_ext.FFM.load(args.model) if not args.libffm else ffm_ext.FFM.load_libffm(args.model)
    data = _load(args.data, not args.no_validate)
    model.n_threads = args.threads
    predictions = _predict_file(model, data, args.data)
    np.savetxt(args.output, predictions, fmt="%.6f")
    print(f"{data.n_rows:,} predictions written to {args.output}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    data = _load(args.input, not args.no_validate)
    data.save(args.output)
    print(f"{data.n_rows:,} rows, {data.nnz:,} tokens written to {args.output}/")
    return 0


def _one_line_errors(
    command: str, body: Callable[[argparse.Namespace], int]
) -> Callable[[argparse.Namespace], int]:
    """`body`, with bad input reported as one line on stderr and exit code 1 (no traceback)."""

    def run(args: argparse.Namespace) -> int:
        # The engine needs no BLAS, and numpy's OpenBLAS threads spin ~0.1 s of CPU after its
        # import: a quarter of a 10-epoch job's CPU on a 70k-row set. Only before numpy's import
        # (a fresh process) does this take; a user's own setting wins.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        try:
            return body(args)
        except _BAD_INPUT as exc:
            print(f"ctrflow ffm {command}: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT

    return run


def _add_no_validate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-validate",
        action="store_true",
        help="skip the O(nnz) content checks of binary dataset directories (you vouch for them)",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ffm = subparsers.add_parser("ffm", help="train, predict with, convert data for the FFM engine")
    commands = ffm.add_subparsers(dest="ffm_command", metavar="COMMAND", required=True)

    train = commands.add_parser("train", help="train an FFM (LIBFFM's algorithm)")
    train.add_argument("train", help="training data: LIBFFM text file or dataset directory")
    train.add_argument("--valid", help="validation data (early stopping)")
    train.add_argument("--test", help="test data (reported after training)")
    train.add_argument("-k", type=int, default=4, help="latent factors")
    train.add_argument("--eta", type=float, default=0.2, help="learning rate")
    train.add_argument("--lam", type=float, default=2e-5, help="L2 regularisation")
    train.add_argument("--epochs", type=int, default=15, help="epochs at most")
    train.add_argument("--patience", type=int, default=1, help="epochs without improvement")
    train.add_argument("--no-norm", action="store_true", help="no instance-wise normalisation")
    train.add_argument("--threads", type=int, default=1, help="-1 = every available CPU")
    train.add_argument("--seed", type=int, default=0, help="initial weights and row order")
    train.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help=f"write the model here (default: ./{DEFAULT_MODEL_PATH}, never overwritten)",
    )
    _add_no_validate(train)
    train.set_defaults(func=_one_line_errors("train", _train))

    predict = commands.add_parser("predict", help="probabilities for a dataset, one per line")
    predict.add_argument("model")
    predict.add_argument("data")
    predict.add_argument("-o", "--output", required=True)
    predict.add_argument("--libffm", action="store_true", help="the model is LIBFFM's")
    predict.add_argument("--threads", type=int, default=1)
    _add_no_validate(predict)
    predict.set_defaults(func=_one_line_errors("predict", _predict))

    convert = commands.add_parser("convert", help="LIBFFM text -> binary dataset directory")
    convert.add_argument("input")
    convert.add_argument("output")
    _add_no_validate(convert)
    convert.set_defaults(func=_one_line_errors("convert", _convert))
