"""Handwritten digits with minidl and with its ``torch.nn`` twin.

Trains a multi-layer perceptron 64-128-10 (ReLU) on scikit-learn's bundled 8x8 digits
(1,797 images shipped inside the scikit-learn package, no download) with Adam, then trains a
``torch.nn`` copy of the same network (same initial weights via :func:`minidl.interop.to_torch`,
same optimizer, same batches in the same order, same dtype) with autograd and ``torch.optim``,
and prints the test accuracy of both::

    python examples/digits.py            # the documented run, 20 epochs: 98.00 % for both
    python examples/digits.py --quick    # 2 epochs: a smoke test

Either takes a few seconds on a CPU, most of them start-up (importing torch and scikit-learn);
the time printed last is that of loading the data and training and testing both networks.

The split is stratified and seeded (75 % train, 25 % test); every pixel is standardised with the
training set's mean and standard deviation. Needs scikit-learn (the ``examples`` extra, also in
``dev``: ``pip install -e ".[examples]"``); without it, it says so in one line (``--help`` works).
Ctrl-C stops it with one line, ``digits.py: interrupted``, and exit status 130.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

try:  # (most of a run is this start-up: a Ctrl-C here gets the one line too)
    import torch
    from torch import Tensor

    from minidl import nn, optim
    from minidl.cli import _ArgumentParser
    from minidl.data import BatchIterator
    from minidl.interop import to_torch
    from minidl.train import fit, predict
except KeyboardInterrupt:
    sys.stderr.write("digits.py: interrupted\n")
    raise SystemExit(130) from None

SIZES = (64, 128, 10)
EPOCHS = 20
QUICK_EPOCHS = 2
BATCH_SIZE = 64
LR = 2e-3
SEED = 0
#: The test accuracies (%) of the full run (minidl, torch), as the README reports them.
DOCUMENTED_ACCURACY = (98.00, 98.00)


@dataclass(frozen=True)
class Digits:
    """The digits split: standardised inputs (float64) and class indices."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def load(seed: int = SEED) -> Digits:
    """Load the bundled digits, split them (stratified, 75/25, with ``seed``) and standardise
    every pixel with the training set's statistics (pixels constant there are only centred)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, stratify=labels, random_state=seed
    )
    train = torch.tensor(x_train, dtype=torch.float64)
    test = torch.tensor(x_test, dtype=torch.float64)
    mean, std = train.mean(dim=0), train.std(dim=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return Digits(
        (train - mean) / std,
        torch.tensor(y_train, dtype=torch.int64),
        (test - mean) / std,
        torch.tensor(y_test, dtype=torch.int64),
    )


def accuracy(predicted: Tensor, target: Tensor) -> float:
    """Percentage of correct predictions."""
    return 100.0 * float((predicted == target).double().mean())


def train_minidl(data: Digits, model: nn.Sequential, epochs: int, seed: int) -> float:
    """Train ``model`` with minidl's ``fit`` (Adam, cross-entropy); return its test accuracy."""
    optimizer = optim.Adam(model.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(seed)
    fit(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        data.x_train,
        data.y_train,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        generator=generator,
    )
    return accuracy(predict(model, data.x_test), data.y_test)


def train_torch(data: Digits, model: torch.nn.Module, epochs: int, seed: int) -> float:
    """Train the ``torch.nn`` twin with autograd and ``torch.optim.Adam`` on the same batches."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    criterion = torch.nn.CrossEntropyLoss()
    batches = BatchIterator(
        data.x_train, data.y_train, BATCH_SIZE, generator=torch.Generator().manual_seed(seed)
    )
    model.train()
    for _ in range(epochs):
        for x, y in batches:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        return accuracy(model(data.x_test).argmax(dim=1), data.y_test)


def run(epochs: int, seed: int = SEED) -> tuple[float, float]:
    """Train both frameworks from the same initial weights; return their test accuracies."""
    data = load(seed)
    torch.manual_seed(seed)
    model = nn.mlp(SIZES, "relu", dtype=torch.float64)
    twin = to_torch(model)  # the same initial weights, before minidl trains them
    return train_minidl(data, model, epochs, seed), train_torch(data, twin, epochs, seed)


def _count(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"expected an integer {bound}, got {text!r}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> tuple[float, float]:
    # minidl's own command line's parser: a value such as -1e3 or -inf is judged by the
    # option's type, not taken for an unknown option ("expected one argument").
    parser = _ArgumentParser(
        description="Handwritten digits with minidl and with its torch.nn twin: trains an MLP "
        f"{'-'.join(map(str, SIZES))} (ReLU, Adam, lr {LR}, batches of {BATCH_SIZE}) on "
        "scikit-learn's 8x8 digits with both, and prints their test accuracies, in a few "
        "seconds."
    )
    epochs = parser.add_mutually_exclusive_group()
    epochs.add_argument(
        "--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs only: a smoke test"
    )
    epochs.add_argument(
        "--epochs", type=_count(1), default=None, help=f"training epochs (default {EPOCHS})"
    )
    # (scikit-learn takes seeds in [0, 2**32 - 1])
    parser.add_argument(
        "--seed",
        type=_count(0, 2**32 - 1),
        default=SEED,
        help="seed of the train/test split, the initial weights and the batch order, in "
        f"[0, 2**32 - 1] (default {SEED})",
    )
    args = parser.parse_args(argv)
    try:
        return _run(parser, args)
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's status for it, no traceback
        parser.exit(130, f"{parser.prog}: interrupted\n")


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[float, float]:
    """Check that scikit-learn is there, train both networks and print their accuracies."""
    try:  # (the data; scikit-learn is imported where they are loaded)
        import sklearn  # noqa: F401
    except ModuleNotFoundError:
        parser.exit(
            1,
            f"{parser.prog}: the digits data set comes with scikit-learn, which is not "
            "installed; install minidl's examples extra: pip install 'minidl[examples]' (or "
            "pip install scikit-learn)\n",
        )
    # Small matrices: one thread is faster than a pool, above all on a busy machine.
    torch.set_num_threads(1)
    epochs = args.epochs if args.epochs is not None else QUICK_EPOCHS if args.quick else EPOCHS
    start = time.perf_counter()
    minidl_accuracy, torch_accuracy = run(epochs, args.seed)
    elapsed = time.perf_counter() - start
    print(
        f"digits: MLP {'-'.join(map(str, SIZES))}, Adam lr={LR}, {epochs} "
        f"epoch{'s' * (epochs != 1)}, seed {args.seed}"
    )
    print(f"minidl test accuracy: {minidl_accuracy:.2f} %")
    print(f"torch  test accuracy: {torch_accuracy:.2f} %")
    print(f"({elapsed:.1f} s: loading the data, training and testing both)")
    return minidl_accuracy, torch_accuracy


if __name__ == "__main__":
    main()
