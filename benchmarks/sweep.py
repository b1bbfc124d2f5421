"""minidl against PyTorch eager over a grid of network sizes (not part of make bench).

``benchmarks/run.py`` measures two points: the paper's 2-25-25-25-2 at batch 100 and
2-1024-1024-1024-2 at batch 1024. This sweep times a training step at every point of a grid:
hidden widths, numbers of hidden layers, batch sizes, activations (tanh, relu), losses
(cross-entropy, mean squared error) and dtypes, the network ``2-w-...-w-2``. At each point three
loops of the same steps on identical weights and data, in one process:

- ``loop``: minidl written as a user writes it (``zero_grad``, the model, the loss,
  ``backward``, ``optimizer.step()``) over a list of batches;
- ``fit``: :func:`minidl.train.fit` for one epoch of the same batches (it shuffles them, and
  takes its folded step);
- ``torch``: the PyTorch eager twin of the loop (``torch.optim.SGD``, ``.backward()``).

They are timed alternately (:func:`run.paired_medians`), in several rounds; each round gives a
ratio PyTorch / minidl, and the table prints the median ratio of the rounds with their lowest and
highest. One thread (``torch.set_num_threads(1)``); the widest points again with 2 threads. A
point whose PyTorch step takes longer than ``--max-ms`` is skipped. It prints a table and, with
``--json PATH``, writes the results there. No test asserts timings: machines are noisy.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from run import _torch_linear, describe_machine, paired_medians

# minidl is imported where it is used, as in run.py.
if TYPE_CHECKING:
    from minidl import nn as mnn
    from minidl import optim as moptim

WIDTHS = (8, 32, 64, 128, 256, 512)
DEPTHS = (1, 3, 6)
BATCHES = (1, 16, 64, 256, 1024)
ACTIVATIONS = ("tanh", "relu")
LOSSES = ("cross-entropy", "mse")
#: A few float64 points, (width, depth, batch), with tanh and cross-entropy.
FLOAT64_POINTS = ((32, 3, 64), (128, 3, 256), (512, 3, 1024))
#: The fewest steps of a timed call (one epoch of fit).
MIN_STEPS = 20
QUICK_WIDTHS = (8, 128)
QUICK_DEPTHS = (1, 3)
QUICK_BATCHES = (1, 64)


@dataclass(frozen=True)
class Point:
    """One network and batch: ``2-width-...-width-2`` with ``depth`` hidden layers."""

    width: int
    depth: int
    batch: int
    activation: str = "tanh"
    loss: str = "cross-entropy"
    dtype: str = "float32"
    threads: int = 1

    @property
    def sizes(self) -> tuple[int, ...]:
        return (2, *(self.width,) * self.depth, 2)


def torch_mlp(weights: list[tuple[torch.Tensor, torch.Tensor]], activation: str) -> torch.nn.Module:
    """The torch.nn network of ``Linear`` layers holding copies of ``weights``, ``activation``
    (tanh or relu) between each two: the twin of ``minidl.nn.mlp(sizes, activation)``."""
    layers: list[torch.nn.Module] = []
    for index, (weight, bias) in enumerate(weights):
        if index:
            layers.append(torch.nn.Tanh() if activation == "tanh" else torch.nn.ReLU())
        layers.append(_torch_linear(weight, bias))
    return torch.nn.Sequential(*layers)


class Twins(NamedTuple):
    """A minidl network and its PyTorch eager twin (identical weights), each with its loss and
    SGD optimizer, and the data: ``rows`` inputs ``(rows, 2)`` and targets."""

    model: mnn.Sequential
    criterion: mnn.Loss
    optimizer: moptim.SGD
    twin: torch.nn.Module
    twin_criterion: torch.nn.Module
    twin_optimizer: torch.optim.SGD
    x: torch.Tensor
    y: torch.Tensor


def make_twins(point: Point, rows: int) -> Twins:
    """The networks, losses, optimizers and data of ``point`` (weights from seed 0)."""
    from minidl import nn as mnn
    from minidl import optim as moptim

    dtype = getattr(torch, point.dtype)
    torch.manual_seed(0)
    model = mnn.mlp(point.sizes, point.activation, dtype=dtype)
    weights = [
        (layer.weight.data, layer.bias.data)  # type: ignore[union-attr]
        for layer in model
        if isinstance(layer, mnn.Linear)
    ]
    twin = torch_mlp(weights, point.activation)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 2, generator=generator, dtype=dtype)
    if point.loss == "cross-entropy":
        y = torch.randint(0, 2, (rows,), generator=generator)
        criterion: mnn.Loss = mnn.CrossEntropyLoss()
        twin_criterion: torch.nn.Module = torch.nn.CrossEntropyLoss()
    else:
        y = torch.randn(rows, 2, generator=generator, dtype=dtype)
        criterion = mnn.MSELoss(reduction="mean")  # (PyTorch's mean over every element)
        twin_criterion = torch.nn.MSELoss()
    # (a small rate: the runs go on for many steps, and the weights should stay where they were)
    optimizer = moptim.SGD(model.parameters(), lr=1e-4)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=1e-4)
    return Twins(model, criterion, optimizer, twin, twin_criterion, twin_optimizer, x, y)


def setup(point: Point, batches: int) -> tuple[dict[str, Callable[[], None]], Twins]:
    """The three loops of ``batches`` training steps at ``point`` (see the module docstring)
    and the twins they train (``loop`` and ``fit`` minidl's model, ``torch`` its twin; ``fit``
    shuffles with a generator of seed 1, the others take the batches in order)."""
    from minidl.train import fit

    twins = make_twins(point, point.batch * batches)
    model, criterion, optimizer, twin, twin_criterion, twin_optimizer, x, y = twins
    pairs = list(zip(torch.split(x, point.batch), torch.split(y, point.batch), strict=True))
    shuffle = torch.Generator().manual_seed(1)

    def loop() -> None:
        for x_batch, y_batch in pairs:
            optimizer.zero_grad()
            criterion(model(x_batch), y_batch)
            model.backward(criterion.backward())
            optimizer.step()

    def fit_loop() -> None:
        fit(model, criterion, optimizer, x, y, epochs=1, batch_size=point.batch, generator=shuffle)

    def torch_loop() -> None:
        for x_batch, y_batch in pairs:
            twin_optimizer.zero_grad()
            twin_criterion(twin(x_batch), y_batch).backward()
            twin_optimizer.step()

    return {"loop": loop, "fit": fit_loop, "torch": torch_loop}, twins


def measure(point: Point, rounds: int, budget_s: float, max_ms: float) -> dict[str, Any] | None:
    """Microseconds per step (the median of ``rounds`` rounds) of each loop at ``point`` and the
    ratios PyTorch / minidl of each round; None where PyTorch's step takes over ``max_ms``."""
    torch.set_num_threads(point.threads)
    probe = setup(point, 1)[0]["torch"]
    probe()
    start = time.perf_counter()
    probe()
    step_s = time.perf_counter() - start
    if step_s * 1e3 > max_ms:
        return None
    # Each timed call runs for about 5 ms and at least MIN_STEPS steps (fit's call copies every
    # parameter into its folded step and back: a cost per call, not per step); the repetitions
    # fill the budget.
    batches = max(MIN_STEPS, round(5e-3 / max(step_s, 1e-7)))
    repetitions = max(3, min(15, round(budget_s / rounds / (3 * batches * step_s))))
    runs = setup(point, batches)[0]
    per_round: list[dict[str, float]] = []
    for _ in range(rounds):
        medians = paired_medians(runs, repetitions, warmup=1)
        per_round.append({name: seconds / batches * 1e6 for name, seconds in medians.items()})
    us = {name: statistics.median(r[name] for r in per_round) for name in runs}
    ratios = {side: [r["torch"] / r[side] for r in per_round] for side in ("loop", "fit")}
    return {
        "point": asdict(point),
        "us_per_step": us,
        "ratio": {side: statistics.median(values) for side, values in ratios.items()},
        "ratio_low": {side: min(values) for side, values in ratios.items()},
        "ratio_high": {side: max(values) for side, values in ratios.items()},
        "steps_per_call": batches,
        "repetitions": repetitions,
    }


def grid(quick: bool) -> list[Point]:
    """The points of the sweep: the full grid in float32 with one thread, a few float64 points,
    and the widest ones with 2 threads (``quick``: a few small points of each kind)."""
    widths, depths, batches = (
        (QUICK_WIDTHS, QUICK_DEPTHS, QUICK_BATCHES) if quick else (WIDTHS, DEPTHS, BATCHES)
    )
    points = [
        Point(width, depth, batch, activation, loss)
        for activation, loss, width, depth, batch in itertools.product(
            ACTIVATIONS, LOSSES, widths, depths, batches
        )
    ]
    if quick:
        points.append(Point(8, 1, 16, dtype="float64"))
        points.append(Point(8, 1, 16, threads=2))
        return points
    points += [Point(w, d, b, dtype="float64") for w, d, b in FLOAT64_POINTS]
    points += [
        Point(width, depth, batch, threads=2)
        for width, depth, batch in itertools.product((256, 512), DEPTHS, (256, 1024))
    ]
    return points


def row(result: dict[str, Any]) -> str:
    """A point's line of the table, marked SLOWER for each side slower than PyTorch (a ratio
    below 0.95) in every round."""
    point = result["point"]
    us = result["us_per_step"]
    cells = [
        f"{point['width']:>5} {point['depth']:>5} {point['batch']:>5} {point['activation']:<4}"
        f" {'ce' if point['loss'] == 'cross-entropy' else 'mse':<3} {point['dtype'][5:]:>2}"
        f" {point['threads']:>2}",
        f"{us['torch']:9.1f} {us['loop']:9.1f} {us['fit']:9.1f}",
    ]
    for side in ("loop", "fit"):
        cells.append(
            f"{result['ratio'][side]:5.2f} ({result['ratio_low'][side]:.2f}-"
            f"{result['ratio_high'][side]:.2f})"
        )
    slow = [s for s in ("loop", "fit") if result["ratio_high"][s] < 0.95]
    return "  ".join(cells) + ("   SLOWER: " + ", ".join(slow) if slow else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few small points, one round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per point (default 3)")
    parser.add_argument(
        "--max-ms", type=float, default=50.0, help="skip points whose step takes longer (ms)"
    )
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else 1 if args.quick else 3
    if rounds < 1:
        parser.error(f"argument --rounds: expected a whole number >= 1, got {rounds}")
    machine = describe_machine()
    print(
        f"machine: {machine['cpu']} ({machine['cpu_capability']} kernels), "
        f"{machine['cpu_count']} CPUs, torch {machine['torch']}, Python {machine['python']}"
    )
    print(
        "network 2-w-...-w-2 (d hidden layers), batch b; us per step; PyTorch / minidl, the"
        " median of the rounds (lowest-highest)"
    )
    print(
        f"{'w':>5} {'d':>5} {'b':>5} {'act':<4} {'los':<3} {'fl':>2} {'th':>2}  "
        f"{'torch':>9} {'loop':>9} {'fit':>9}  {'loop ratio':<16}  fit ratio"
    )
    budget_s = 0.1 if args.quick else 0.6
    results = []
    skipped = []
    for point in grid(args.quick):
        result = measure(point, rounds, budget_s, args.max_ms)
        if result is None:
            skipped.append(asdict(point))
            continue
        results.append(result)
        print(row(result), flush=True)
    for side in ("loop", "fit"):
        ratios = [r["ratio"][side] for r in results]
        if ratios:
            print(f"{side}: PyTorch / minidl from {min(ratios):.2f}x to {max(ratios):.2f}x")
    slower = [r for r in results if any(r["ratio_high"][s] < 0.95 for s in ("loop", "fit"))]
    print(f"points where minidl is slower in every round (ratio < 0.95): {len(slower)}")
    print(f"skipped (PyTorch's step over {args.max_ms:g} ms): {len(skipped)}")
    if args.json is not None:
        args.json.write_text(
            json.dumps({"machine": machine, "results": results, "skipped": skipped}, indent=2)
            + "\n"
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
