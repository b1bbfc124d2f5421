"""The ``minidl`` command line: ``minidl train``, ``minidl reproduce``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

__all__ = ["main"]

DTYPES = ("float32", "float64")
LOSSES = ("cross-entropy", "mse")
OPTIMIZERS = ("sgd", "adadelta")
SCHEDULERS = ("none", "step", "clr")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 25,25,25, got {text!r}"
        ) from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected positive widths, got {text!r}")
    return sizes


def _activation_names(text: str) -> tuple[str, ...]:
    from minidl.nn.mlp import ACTIVATIONS

    names = tuple(part.strip().lower() for part in text.split(","))
    for name in names:
        if name not in ACTIVATIONS:
            raise argparse.ArgumentTypeError(
                f"unknown activation {name!r}; valid names are {', '.join(sorted(ACTIVATIONS))}"
            )
    return names


def _add_train_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the paper's network once and print its train and test errors",
        description=(
            "Generate the paper's disk data set, build the 2-25-25-25-2 network, train it while "
            "logging the loss per epoch, and print the final train and test errors. With no "
            "argument it runs Table I's Tanh row: cross-entropy, SGD, lr 1e-2, 400 epochs, "
            "batches of 100."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--activation",
        type=_activation_names,
        default=("tanh",),
        help="hidden activation: sigmoid, tanh, relu, leakyrelu, elu or selu; or one per hidden "
        "layer, comma-separated (e.g. relu,tanh,relu)",
    )
    parser.add_argument("--loss", choices=LOSSES, default="cross-entropy", help="loss criterion")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="optimizer")
    parser.add_argument("--lr", type=float, default=1e-2, help="learning rate")
    parser.add_argument("--momentum", type=float, default=0.0, help="SGD momentum, in [0, 1)")
    parser.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default="none",
        help="learning-rate schedule: step (halve every 10 epochs) or clr (triangular cyclical, "
        "between lr/10 and lr, 2 epochs up and 2 down)",
    )
    parser.add_argument("--epochs", type=_non_negative_int, default=400, help="training epochs")
    parser.add_argument("--batch-size", type=_positive_int, default=100, help="samples per batch")
    parser.add_argument(
        "--hidden", type=_sizes, default=(25, 25, 25), help="hidden layer widths, comma-separated"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data, weights and shuffling")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="floating-point type")
    parser.add_argument(
        "--log-every", type=_positive_int, default=1, help="print the loss every N epochs"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final errors")
    parser.set_defaults(run=_run_train)


def _add_reproduce_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="re-run the paper's experiments (Tables I-III, Figures 1-3) and write a report",
        description=(
            "Re-run every experiment of the paper and write results/report.md, "
            "results/results.json and the figures."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rounds", type=_positive_int, default=5, help="rounds per row")
    parser.add_argument(
        "--tables",
        default="1,2,3",
        help="which tables to run, comma-separated from 1,2,3",
    )
    parser.add_argument("--out", default="results", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="base seed of every round")
    parser.add_argument(
        "--quick", action="store_true", help="1 round and few epochs: a smoke test of the pipeline"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    parser.set_defaults(run=_run_reproduce)


def build_parser() -> argparse.ArgumentParser:
    """The ``minidl`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="minidl",
        description="minidl: a mini deep-learning framework with hand-derived backpropagation.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train_parser(subparsers)
    _add_reproduce_parser(subparsers)
    return parser


def _run_train(args: argparse.Namespace) -> int:
    import torch

    from minidl.data import make_disk_data
    from minidl.nn import CrossEntropyLoss, MSELoss, mlp
    from minidl.nn.loss import Loss
    from minidl.optim import SGD, Adadelta, CyclicLR, StepDecay
    from minidl.optim.lr_scheduler import LRScheduler
    from minidl.optim.optimizer import Optimizer
    from minidl.train import EpochRecord, error_rate, fit

    dtype = getattr(torch, args.dtype)
    hidden = args.hidden
    activations = args.activation
    if len(activations) == 1:
        activations = activations * len(hidden)
    elif len(activations) != len(hidden):
        raise SystemExit(
            f"minidl train: --activation gives {len(activations)} names for "
            f"{len(hidden)} hidden layers; give one name, or one per hidden layer"
        )
    data = make_disk_data(seed=args.seed, dtype=dtype)
    torch.manual_seed(args.seed)
    model = mlp((2, *hidden, 2), activations, dtype=dtype)
    criterion: Loss = CrossEntropyLoss() if args.loss == "cross-entropy" else MSELoss()
    optimizer: Optimizer
    if args.optimizer == "sgd":
        optimizer = SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    else:
        if args.momentum:
            raise SystemExit("minidl train: --momentum applies to --optimizer sgd only")
        optimizer = Adadelta(model.parameters(), lr=args.lr)
    scheduler: LRScheduler | None = None
    if args.scheduler == "step":
        scheduler = StepDecay(optimizer, step_size=10, gamma=0.5)
    elif args.scheduler == "clr":
        batches_per_epoch = -(-len(data.train) // args.batch_size)
        scheduler = CyclicLR(
            optimizer, base_lr=args.lr / 10, max_lr=args.lr, step_size_up=2 * batches_per_epoch
        )

    if not args.quiet:
        print(f"model: {model}".replace("\n", "\n       "))
        print(
            f"loss: {criterion}   optimizer: {optimizer}"
            + (f"   scheduler: {scheduler}" if scheduler else "")
        )
    width = len(str(args.epochs))

    def log(record: EpochRecord) -> None:
        if args.quiet or ((record.epoch + 1) % args.log_every and record.epoch + 1 != args.epochs):
            return
        print(
            f"epoch {record.epoch + 1:>{width}}/{args.epochs}  loss {record.train_loss:.6f}  "
            f"validation error {record.validation_error:6.2f}%  lr {record.lr:.3g}"
        )

    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    fit(
        model,
        criterion,
        optimizer,
        data.train.x,
        data.train.y,
        epochs=args.epochs,
        batch_size=args.batch_size,
        scheduler=scheduler,
        validation=(data.validation.x, data.validation.y),
        generator=generator,
        on_epoch=log,
    )
    elapsed = time.perf_counter() - start
    train_error = error_rate(model, data.train.x, data.train.y)
    test_error = error_rate(model, data.test.x, data.test.y)
    print(f"final train error: {train_error:.2f}%")
    print(f"final test error: {test_error:.2f}%")
    if not args.quiet:
        print(f"training time: {elapsed:.2f} s")
    return 0


def _run_reproduce(args: argparse.Namespace) -> int:
    from minidl.experiments.runner import run_from_cli

    return run_from_cli(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except (ValueError, TypeError, KeyError) as error:
        print(f"minidl {args.command}: error: {error}", file=sys.stderr)
        return 2
