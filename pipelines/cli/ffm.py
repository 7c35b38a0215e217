"""`ctrflow ffm train|predict|convert`: the FFM engine on LIBFFM text or binary datasets.

Inputs are LIBFFM text files (`*.ffm`, `*.txt`) or binary dataset directories; errors name the
file, line and token and exit 1.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

EXIT_BAD_INPUT = 1


def _load(path: str):  # type: ignore[no-untyped-def]  # returns ffm_ext.Dataset
    import ffm_ext

    source = pathlib.Path(path)
    return ffm_ext.Dataset.load(source) if source.is_dir() else ffm_ext.read_libffm(source)


def _train(args: argparse.Namespace) -> int:
    from sklearn.metrics import roc_auc_score

    import ffm_ext

    try:
        train = _load(args.train)
        valid = _load(args.valid) if args.valid else None
        test = _load(args.test) if args.test else None
    except (ValueError, OSError) as exc:
        print(f"ctrflow ffm train: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
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
        p = model.predict(test)
        print(f"test logloss {model.logloss(test):.5f}  AUC {roc_auc_score(test.labels, p):.5f}")
    if args.output:
        model.save(args.output)
        print(f"model written to {args.output}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    import ffm_ext

    try:
        model = (
            ffm_ext.FFM.load(args.model) if not args.libffm else ffm_ext.FFM.load_libffm(args.model)
        )
        data = _load(args.data)
    except (ValueError, OSError) as exc:
        print(f"ctrflow ffm predict: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    model.n_threads = args.threads
    np.savetxt(args.output, model.predict(data), fmt="%.6f")
    print(f"{data.n_rows:,} predictions written to {args.output}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    try:
        data = _load(args.input)
    except (ValueError, OSError) as exc:
        print(f"ctrflow ffm convert: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    data.save(args.output)
    print(f"{data.n_rows:,} rows, {data.nnz:,} tokens written to {args.output}/")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ffm = subparsers.add_parser("ffm", help="train, predict with, convert data for the FFM engine")
    commands = ffm.add_subparsers(dest="ffm_command", metavar="COMMAND", required=True)

    train = commands.add_parser("train", help="train an FFM (LIBFFM's algorithm)")
    train.add_argument("train", help="training data: LIBFFM text file or dataset directory")
    train.add_argument("--valid", help="validation data (early stopping)")
    train.add_argument("--test", help="test data (reported after training)")
    train.add_argument("-k", type=int, default=4, help="latent factors (default 4)")
    train.add_argument("--eta", type=float, default=0.2, help="learning rate (default 0.2)")
    train.add_argument("--lam", type=float, default=2e-5, help="L2 regularisation (default 2e-5)")
    train.add_argument("--epochs", type=int, default=15)
    train.add_argument("--patience", type=int, default=1, help="epochs without improvement")
    train.add_argument("--no-norm", action="store_true", help="no instance-wise normalisation")
    train.add_argument("--threads", type=int, default=1, help="-1 = every available CPU")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("-o", "--output", help="write the model here")
    train.set_defaults(func=_train)

    predict = commands.add_parser("predict", help="probabilities for a dataset, one per line")
    predict.add_argument("model")
    predict.add_argument("data")
    predict.add_argument("-o", "--output", required=True)
    predict.add_argument("--libffm", action="store_true", help="the model is LIBFFM's")
    predict.add_argument("--threads", type=int, default=1)
    predict.set_defaults(func=_predict)

    convert = commands.add_parser("convert", help="LIBFFM text -> binary dataset directory")
    convert.add_argument("input")
    convert.add_argument("output")
    convert.set_defaults(func=_convert)
