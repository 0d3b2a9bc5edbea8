"""Command line: ``python -m training [train] [options]``, ``promote`` and ``rollback``.

Exit status: 0 success; 1 refused (parity gate failed, accuracy below ``--min-accuracy``, nothing to
roll back to); 2 bad data or bad usage; 3 the publish gate refused: the new model is worse than the
version the repository serves (``training/gate.py``), nothing published. Expected failures print one
line to stderr, never a traceback.

TensorFlow is imported only on the train path, after the data has been read, so ``promote``,
``rollback`` and a bad ``--data`` folder answer instantly.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from service.contract import FEATURES, NUM_CLASSES
from training.config import ACTIVATIONS, DISTRIBUTE, LOSSES, LR_SCHEDULES, OPTIMIZERS, TrainConfig
from training.data import DATASETS, DatasetError, load_dataset

COMMANDS = ("train", "promote", "rollback")


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    return sizes


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _add_train_options(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=list(DATASETS), default=d.dataset)
    data.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="folder with the 4 IDX files (default: $MNIST_DIR or $FASHION_MNIST_DIR, else Keras download)",
    )
    data.add_argument("--limit-train", type=_positive, metavar="N", help="train on the first N images only")
    data.add_argument("--limit-test", type=_positive, metavar="N", help="test on the first N images only")
    data.add_argument(
        "--extra-data",
        metavar="DIR",
        action="append",
        default=[],
        help="own labelled pictures: one sub-folder per label, any format the service reads "
        "(repeatable; e.g. the feedback store FEEDBACK_DIR/mnist)",
    )
    data.add_argument(
        "--holdout",
        type=_fraction,
        default=d.holdout,
        help="share of each --extra-data folder held out for evaluation, chosen by sha256 (default 0.2)",
    )
    data.add_argument(
        "--oversample",
        type=_positive,
        metavar="N",
        default=None,
        help="repeat each own picture N times per epoch (default: so they are about a tenth of the data, "
        "at most 50)",
    )

    model = p.add_argument_group("model")
    model.add_argument(
        "--hidden",
        type=_hidden,
        default=d.hidden,
        metavar="32,64",
        help="hidden layer sizes (default: 32,64)",
    )
    model.add_argument("--activation", choices=ACTIVATIONS, default=d.activation)
    model.add_argument("--loss", choices=LOSSES, default=d.loss)
    model.add_argument("--l1", type=float, default=d.l1, help="L1 kernel regularization factor")
    model.add_argument("--l2", type=float, default=d.l2, help="L2 kernel regularization factor")
    model.add_argument("--dropout", type=_fraction, default=d.dropout, help="dropout after each hidden layer")
    model.add_argument(
        "--deskew",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="shear each digit upright (by its second moments) inside the model, before the Dense stack "
        "(default: off, or as the --init-from version was trained)",
    )

    fit = p.add_argument_group("optimisation")
    fit.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=d.optimizer,
        help="momentum = SGD with --momentum (default 0.9)",
    )
    fit.add_argument("--learning-rate", type=float, default=d.learning_rate)
    fit.add_argument("--momentum", type=float, default=d.momentum)
    fit.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule)
    fit.add_argument("--epochs", type=_positive, default=d.epochs)
    fit.add_argument("--batch-size", type=_positive, default=d.batch_size, help="per replica")
    fit.add_argument("--validation-split", type=_fraction, default=d.validation_split)
    fit.add_argument(
        "--early-stopping",
        type=int,
        metavar="PATIENCE",
        default=None,
        help="stop after PATIENCE epochs without val_loss improvement; keep the best weights",
    )
    fit.add_argument(
        "--augment",
        action="store_true",
        help="random shifts/rotations/zoom in the input pipeline (never in the exported model)",
    )
    fit.add_argument("--seed", type=int, default=d.seed)
    fit.add_argument(
        "--init-from",
        metavar="VERSION_DIR",
        default=None,
        help="start from a published version's weights (e.g. models/mnist/1): fine-tuning",
    )

    dist = p.add_argument_group("distribution")
    dist.add_argument("--distribute", choices=DISTRIBUTE, default=d.distribute)
    dist.add_argument(
        "--cpu-devices",
        metavar="N",
        type=_positive,
        default=os.environ.get("TRAIN_CPU_DEVICES") or None,  # argparse applies `type` to it
        help="split the CPU into N logical devices (to use --distribute mirrored without GPUs; "
        "env TRAIN_CPU_DEVICES)",
    )

    out = p.add_argument_group("publishing")
    out.add_argument(
        "--repository", metavar="DIR", help="model repository (default: $MODEL_REPOSITORY, else models/)"
    )
    out.add_argument("--name", help="model name in the repository (default: the dataset name)")
    out.add_argument(
        "--min-accuracy", type=float, default=0.0, help="refuse to publish below this test accuracy"
    )
    out.add_argument(
        "--force",
        action="store_true",
        help="publish even when the gate finds the new model worse than the served one (recorded in the card)",
    )
    # Tests only: corrupt the exported ONNX weights to prove the parity gate refuses it.
    out.add_argument("--perturb-onnx", type=float, default=0.0, help=argparse.SUPPRESS)


def build_parser(prog: str = "python -m training") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train, export and publish the MNIST MLP. Without a command, options mean `train`.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_options(sub.add_parser("train", help="train, export to ONNX, check parity and publish"))

    promote = sub.add_parser("promote", help="pin serving to one version, or back to the latest")
    promote.add_argument("--name", required=True)
    which = promote.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", type=int)
    which.add_argument("--latest", action="store_true")
    promote.add_argument("--repository", metavar="DIR")

    rollback = sub.add_parser("rollback", help="serve the highest version below the one served now")
    rollback.add_argument("--name", required=True)
    rollback.add_argument("--repository", metavar="DIR")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = TrainConfig.__dataclass_fields__
    values = {key: value for key, value in vars(args).items() if key in names}
    if values.get("deskew") is None:  # not given: resolved from --init-from in _train, else off
        values.pop("deskew", None)
    if "extra_data" in values:
        values["extra_data"] = tuple(values["extra_data"])
    return TrainConfig(**values)


def _prog() -> str:
    return "python -m training" if sys.argv[0].endswith("__main__.py") else Path(sys.argv[0]).name


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = _prog()
    command = shlex.join([*shlex.split(prog), *argv])  # recorded in the model card as typed
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["train", *argv]  # bare `python -m training [options]` means train
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.command == "train" and args.distribute == "multi-worker" and not os.environ.get("TF_CONFIG"):
        parser.error("--distribute multi-worker needs the TF_CONFIG environment variable (see README)")
    try:
        if args.command == "train":
            return _train(args, command)
        return _move_policy(args)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RefusedError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1


class RefusedError(Exception):
    """Publishing or a policy change was refused; the repository is unchanged."""


def _move_policy(args: argparse.Namespace) -> int:
    from training.publish import PublishError, promote, repository_path, rollback

    repo = repository_path(args.repository)
    try:
        if args.command == "promote":
            policy = promote(repo, args.name, None if args.latest else args.version)
            print(f"{args.name}: serving policy is now {policy.to_json()}")
        else:
            version = rollback(repo, args.name)
            print(f"{args.name}: rolled back; now serving version {version}")
    except PublishError as exc:
        raise RefusedError(str(exc)) from exc
    return 0


def _expected_shapes(hidden: tuple[int, ...]) -> list[tuple[int, ...]]:
    sizes = [FEATURES, *hidden, NUM_CLASSES]
    shapes: list[tuple[int, ...]] = []
    for a, b in zip(sizes, sizes[1:], strict=False):
        shapes += [(a, b), (b,)]
    return shapes


def _read_extra(config: TrainConfig, labels: list[str], mode: str) -> list:
    """Every --extra-data folder through the service's decoding and normalisation; says what it skipped."""
    from training.extra_data import load_extra

    sources = []
    for folder in config.extra_data:
        try:
            source = load_extra(folder, labels, mode, config.holdout)
        except FileNotFoundError as exc:
            raise DatasetError(f"--extra-data {exc}") from exc
        print(
            f"extra data {folder}: {len(source.y_train)} for training, {len(source.y_holdout)} held out, "
            f"{len(source.skipped)} skipped, {source.conflicts} conflicting labels"
        )
        for line in source.skipped:
            print(f"  skipped {line}")
        sources.append(source)
    return sources


def _per_class(y: np.ndarray, labels: list[str]) -> dict[str, int]:
    counts = np.bincount(y, minlength=len(labels))
    return {label: int(n) for label, n in zip(labels, counts, strict=True)}


def _dataset_source(dataset, accuracy: float) -> dict:
    import hashlib

    listing = "".join(f"{name}\t{digest}\n" for name, digest in sorted(dataset.files.items()))
    return {
        "kind": "dataset",
        "name": dataset.name,
        "source": dataset.source,
        "train_per_class": _per_class(dataset.y_train, dataset.labels),
        "test_per_class": _per_class(dataset.y_test, dataset.labels),
        "files_sha256": hashlib.sha256(listing.encode()).hexdigest(),
        "test_accuracy": accuracy,
    }


def _train(args: argparse.Namespace, command: str) -> int:
    config = config_from_args(args)
    dataset = load_dataset(config.dataset, config.data)  # before TensorFlow: bad data fails fast
    dataset = dataset.limit(config.limit_train, config.limit_test)
    mode = "mnist" if dataset.name == "mnist" else "fashion"  # what the service does for this model
    extra = _read_extra(config, dataset.labels, mode)
    init_weights = None
    if config.init_from:
        from training.init_from import check_shapes, read_dense_weights, version_onnx, with_source_deskew

        onnx_path = version_onnx(config.init_from)
        config = with_source_deskew(config, onnx_path, given=args.deskew)
        init_weights = read_dense_weights(onnx_path)
        check_shapes(init_weights, _expected_shapes(config.hidden), Path(config.init_from))
        print(f"starting from the weights of {onnx_path}")
    from training.extra_data import oversample_factor

    repeats = oversample_factor(config.oversample, sum(len(s.y_train) for s in extra), len(dataset.y_train))
    if extra:
        print(f"own pictures are repeated {repeats} times per epoch (--oversample)")
    if config.cpu_devices:
        from training.distribute import configure_cpu_devices

        configure_cpu_devices(config.cpu_devices)  # must precede every other TensorFlow call

    from training import report
    from training.card import model_card, sha256
    from training.distribute import is_chief
    from training.export import ExportError, check_parity, perturb, to_onnx, with_card
    from training.publish import PublishError, publish, repository_path
    from training.train import train

    result = train(
        config, dataset, extra=[(s.x_train, s.y_train) for s in extra], repeats=repeats, init_weights=init_weights
    )
    matrix = report.confusion_matrix(dataset.y_test, result.test_probabilities.argmax(axis=1))
    metrics = report.metrics(
        result.history, result.epoch_seconds, result.test_loss, result.test_accuracy, matrix, dataset.labels
    )
    title = f"{dataset.name}: test accuracy {result.test_accuracy:.4f}"
    files = {
        "metrics.json": report.metrics_json(metrics),
        "learning_curves.png": report.learning_curves_png(result.history, title),
        "confusion_matrix.png": report.confusion_matrix_png(matrix, dataset.labels, title),
    }
    print(report.summary_table(metrics, dataset.labels))

    if not is_chief():  # multi-worker: only the chief publishes; the others keep nothing
        scratch = Path(tempfile.mkdtemp(prefix="mnist-train-worker-"))
        for filename, data in files.items():
            (scratch / filename).write_bytes(data)
        shutil.rmtree(scratch)
        print("not the chief worker: nothing published")
        return 0

    # Gates, before the repository is touched: ONNX must match Keras, accuracy must reach the bar.
    proto = to_onnx(result.model)
    if args.perturb_onnx:
        proto = perturb(proto, args.perturb_onnx)
    try:
        parity = check_parity(proto.SerializeToString(), result.x_test, result.test_probabilities)
    except ExportError as exc:
        raise RefusedError(f"export failed the parity gate, nothing published: {exc}") from exc
    print(f"ONNX parity: max |diff| {parity['max_abs_diff']:.2e} on {parity['images']} images, argmax equal")
    if result.test_accuracy < args.min_accuracy:
        raise RefusedError(
            f"test accuracy {result.test_accuracy:.4f} is below --min-accuracy "
            f"{args.min_accuracy}; nothing published"
        )

    name = args.name or dataset.name
    repo = repository_path(args.repository)

    # The publish gate: not worse than what the repository serves, on the test set and own pictures.
    from training.gate import EXIT_GATE, TEST_TOLERANCE, EvalSet, evaluate, table

    sets = [EvalSet("test", result.x_test, dataset.y_test, TEST_TOLERANCE)]
    sets += [EvalSet(f"holdout {s.folder}", s.x_holdout, s.y_holdout, 0.0) for s in extra if len(s.y_holdout)]
    gate = evaluate(proto.SerializeToString(), sets, repo, name)
    print(table(gate))
    gate_record = {**gate.as_dict(), "forced": bool(args.force and not gate.passed)}
    if not gate.passed:
        if not args.force:
            print(f"refused by the publish gate: {gate.reason}; nothing published (--force publishes anyway)",
                  file=sys.stderr)
            return EXIT_GATE
        print(f"--force: publishing although the gate refused ({gate.reason}); the card says so")
    sources = [_dataset_source(dataset, result.test_accuracy)]
    scored = {row["set"]: row["new"] for row in gate.rows}
    for source in extra:
        held_out = scored.get(f"holdout {source.folder}")
        sources.append({**source.describe(), "oversample": repeats, "holdout_accuracy": held_out})
    metrics["data_sources"] = sources
    metrics["gate"] = gate_record
    files["metrics.json"] = report.metrics_json(metrics)

    def render(version: int) -> dict[str, bytes]:
        card = model_card(
            name=name,
            version=version,
            dataset=dataset,
            options=config.as_dict(),
            command=command,
            epochs_run=result.epochs_run,
            seconds_per_epoch=result.seconds_per_epoch,
            metrics=metrics,
            parity=parity,
            sources=sources,
            gate=gate_record,
        )
        onnx_bytes = with_card(proto, card)
        check_parity(onnx_bytes, result.x_test, result.test_probabilities)  # the exact bytes published
        card["onnx"]["sha256"] = sha256(onnx_bytes)
        return {"model.onnx": onnx_bytes, "model.json": json.dumps(card, indent=2).encode() + b"\n", **files}

    try:
        version, path = publish(repo, name, render)
    except (PublishError, ExportError) as exc:
        raise RefusedError(f"nothing published: {exc}") from exc
    print(f"published {name} version {version} -> {path}")
    return 0
