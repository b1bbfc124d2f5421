"""minidl against PyTorch eager beyond the benchmark's SGD and tanh (not part of make bench).

``benchmarks/run.py`` and ``benchmarks/sweep.py`` time plain SGD with tanh or relu. A user at
the paper's size (2-25-25-25-2, batch 100, float32, one thread) also takes other optimizers,
activations, losses, gradient clipping, schedules stepped per batch, batch normalisation and
dropout. This script times, alternately in one process, three kinds of rows, each a minidl
call and its PyTorch eager twin (``minidl.interop.to_torch`` of the same modules, identical
weights and data, ``torch.optim`` with its defaults, as a user gets it: on the CPU its
one-tensor-at-a-time loop, not ``foreach``):

- ``step``: one training step written as a user writes it (``zero_grad``, the model, the loss,
  ``backward``, clipping, ``optimizer.step()``, the schedule's ``step()``), the network with
  tanh, cross-entropy and plain SGD but for the one setting the row names; beside each, that
  base step of minidl, timed in the same rounds: the row's ``/ base`` is the row's minidl step
  over it;
- ``optimizer``: ``optimizer.step()`` alone, minidl's against ``torch.optim``'s, on the
  network's gradients;
- ``module``: one module's forward and backward alone on a ``(100, 25)`` batch (training mode),
  minidl's ``backward`` against autograd's ``.backward()`` (its input gradient too).

Each call runs ``STEPS`` of them; each row takes ``--rounds`` rounds (default 5) of alternating
calls (:func:`run.paired_medians`) and prints the medians of the rounds, in microseconds a
step, and the median of the rounds' ratios PyTorch / minidl with their lowest and highest. The
clock is the CPU time of this thread (``time.thread_time``): every run is on one thread, and on
a machine that other processes share it leaves out the time they take the CPU from it (``--wall``
times by the wall clock instead). It prints a table and, with ``--json PATH``, writes the
results there. No test asserts timings: machines are noisy.
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

from run import PAPER_SIZES, describe_machine, paired_medians

# minidl is imported where it is used, as in run.py.
if TYPE_CHECKING:
    from minidl import nn as mnn
    from minidl import optim as moptim

BATCH = 100
#: Steps (or calls) a timed call runs.
STEPS = 20
#: The learning rate of the SGD rows and schedules: small, so that the weights stay where they
#: were over the many steps of a run.
LR = 1e-4

OPTIMIZERS = (
    "sgd",
    "momentum",
    "nesterov",
    "weight-decay",
    "momentum+weight-decay",
    "adam",
    "adam+weight-decay",
    "adamw",
    "adadelta",
    "rmsprop",
    "rmsprop-centered+momentum",
    "adagrad",
)
ACTIVATIONS = ("sigmoid", "relu", "leakyrelu", "elu", "selu", "gelu", "gelutanh", "silu")
LOSSES = ("mse", "l1", "huber", "bce")
CLIPPING = ("clip-norm", "clip-value")
SCHEDULES = ("step-decay", "cyclic")
LAYERS = ("batchnorm", "dropout")
MODULES = ("linear", "tanh", *ACTIVATIONS, "batchnorm", "dropout")
QUICK = (("step", "adam"), ("optimizer", "momentum"), ("module", "elu"))


@dataclass(frozen=True)
class Variant:
    """One row: its ``kind`` (``step``, ``optimizer`` or ``module``) and ``name``, the setting
    it changes (an optimizer, an activation, a loss, ``clip-norm``, ...)."""

    kind: str
    name: str


def variants(quick: bool) -> list[Variant]:
    """The rows: every setting as a training step, every optimizer's step alone and every
    module's forward and backward alone (``quick``: one of each kind)."""
    if quick:
        return [Variant(kind, name) for kind, name in QUICK]
    steps = ("base", *OPTIMIZERS[1:], *ACTIVATIONS, *LOSSES, *CLIPPING, *SCHEDULES, *LAYERS)
    return (
        [Variant("step", name) for name in steps]
        + [Variant("optimizer", name) for name in OPTIMIZERS]
        + [Variant("module", name) for name in MODULES]
    )


def make_optimizers(
    name: str, parameters: list[mnn.Parameter], twin_parameters: list[torch.nn.Parameter]
) -> tuple[moptim.Optimizer, torch.optim.Optimizer]:
    """minidl's optimizer ``name`` and its ``torch.optim`` twin, with the same settings."""
    from minidl import optim as moptim

    settings: dict[str, tuple[Callable[[], moptim.Optimizer], Callable[[], torch.optim.Optimizer]]]
    params, twin = parameters, twin_parameters
    settings = {
        "sgd": (lambda: moptim.SGD(params, LR), lambda: torch.optim.SGD(twin, LR)),
        "momentum": (
            lambda: moptim.SGD(params, LR, momentum=0.9),
            lambda: torch.optim.SGD(twin, LR, momentum=0.9),
        ),
        "nesterov": (
            lambda: moptim.SGD(params, LR, momentum=0.9, nesterov=True),
            lambda: torch.optim.SGD(twin, LR, momentum=0.9, nesterov=True),
        ),
        "weight-decay": (
            lambda: moptim.SGD(params, LR, weight_decay=1e-4),
            lambda: torch.optim.SGD(twin, LR, weight_decay=1e-4),
        ),
        "momentum+weight-decay": (
            lambda: moptim.SGD(params, LR, momentum=0.9, weight_decay=1e-4),
            lambda: torch.optim.SGD(twin, LR, momentum=0.9, weight_decay=1e-4),
        ),
        "adam": (lambda: moptim.Adam(params, LR), lambda: torch.optim.Adam(twin, LR)),
        "adam+weight-decay": (
            lambda: moptim.Adam(params, LR, weight_decay=1e-4),
            lambda: torch.optim.Adam(twin, LR, weight_decay=1e-4),
        ),
        "adamw": (lambda: moptim.AdamW(params, LR), lambda: torch.optim.AdamW(twin, LR)),
        "adadelta": (lambda: moptim.Adadelta(params), lambda: torch.optim.Adadelta(twin)),
        "rmsprop": (lambda: moptim.RMSprop(params, LR), lambda: torch.optim.RMSprop(twin, LR)),
        "rmsprop-centered+momentum": (
            lambda: moptim.RMSprop(params, LR, momentum=0.9, centered=True),
            lambda: torch.optim.RMSprop(twin, LR, momentum=0.9, centered=True),
        ),
        "adagrad": (lambda: moptim.Adagrad(params, LR), lambda: torch.optim.Adagrad(twin, LR)),
    }
    make, make_twin = settings[name]
    return make(), make_twin()


def make_losses(name: str) -> tuple[mnn.Loss, torch.nn.Module]:
    """minidl's loss ``name`` (``cross-entropy`` or one of :data:`LOSSES`) and its twin, both
    averaging over every element."""
    from minidl import nn as mnn

    losses: dict[str, tuple[Callable[[], mnn.Loss], Callable[[], torch.nn.Module]]] = {
        "cross-entropy": (mnn.CrossEntropyLoss, torch.nn.CrossEntropyLoss),
        "mse": (lambda: mnn.MSELoss(reduction="mean"), torch.nn.MSELoss),
        "l1": (mnn.L1Loss, torch.nn.L1Loss),
        "huber": (mnn.HuberLoss, torch.nn.HuberLoss),
        "bce": (mnn.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss),
    }
    make, make_twin = losses[name]
    return make(), make_twin()


class Twins(NamedTuple):
    """A minidl network with its loss and optimizer, its PyTorch eager twin (identical weights)
    with its own, and ``STEPS`` batches of data."""

    model: mnn.Sequential
    criterion: mnn.Loss
    optimizer: moptim.Optimizer
    twin: torch.nn.Module
    twin_criterion: torch.nn.Module
    twin_optimizer: torch.optim.Optimizer
    batches: list[tuple[torch.Tensor, torch.Tensor]]


def make_twins(
    name: str = "base", dtype: torch.dtype = torch.float32, batch: int = BATCH, steps: int = STEPS
) -> Twins:
    """The networks, losses, optimizers and data of the training step ``name``: tanh,
    cross-entropy and SGD, but for the setting ``name`` changes (weights from seed 0)."""
    from minidl import nn as mnn
    from minidl.interop import to_torch

    activation = name if name in ACTIVATIONS else "tanh"
    loss = name if name in LOSSES else "cross-entropy"
    optimizer = name if name in OPTIMIZERS else "sgd"
    torch.manual_seed(0)
    layers: list[mnn.Module] = []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(PAPER_SIZES)):
        if index:
            if name == "batchnorm":
                layers.append(mnn.BatchNorm1d(fan_in, dtype=dtype))
            layers.append(mnn.activation(activation))
            if name == "dropout":
                layers.append(mnn.Dropout(0.1))
        layers.append(mnn.Linear(fan_in, fan_out, dtype=dtype))
    model = mnn.Sequential(*layers)
    twin = to_torch(model)
    criterion, twin_criterion = make_losses(loss)
    minidl_optimizer, twin_optimizer = make_optimizers(
        optimizer, list(model.parameters()), list(twin.parameters())
    )
    generator = torch.Generator().manual_seed(0)
    rows = batch * steps
    x = torch.randn(rows, PAPER_SIZES[0], generator=generator, dtype=dtype)
    classes = PAPER_SIZES[-1]
    if loss == "cross-entropy":
        y = torch.randint(0, classes, (rows,), generator=generator)
    elif loss == "bce":
        y = torch.randint(0, 2, (rows, classes), generator=generator).to(dtype)
    else:
        y = torch.randn(rows, classes, generator=generator, dtype=dtype)
    batches = list(zip(torch.split(x, batch), torch.split(y, batch), strict=True))
    return Twins(model, criterion, minidl_optimizer, twin, twin_criterion, twin_optimizer, batches)


def step_runs(name: str) -> dict[str, Callable[[], None]]:
    """The two loops of ``STEPS`` training steps of the row ``name`` (see the docstring)."""
    from minidl import nn as mnn
    from minidl import optim as moptim

    model, criterion, optimizer, twin, twin_criterion, twin_optimizer, batches = make_twins(
        name, steps=STEPS
    )
    parameters = list(model.parameters())
    twin_parameters = list(twin.parameters())
    schedule: moptim.LRScheduler | None = None
    twin_schedule: torch.optim.lr_scheduler.LRScheduler | None = None
    if name == "step-decay":
        schedule = moptim.StepDecay(optimizer, step_size=10, gamma=0.5)
        twin_schedule = torch.optim.lr_scheduler.StepLR(twin_optimizer, step_size=10, gamma=0.5)
    elif name == "cyclic":
        schedule = moptim.CyclicLR(optimizer, base_lr=LR / 10, max_lr=LR, step_size_up=50)
        twin_schedule = torch.optim.lr_scheduler.CyclicLR(
            twin_optimizer, base_lr=LR / 10, max_lr=LR, step_size_up=50, cycle_momentum=False
        )

    def minidl_loop() -> None:
        for x, y in batches:
            optimizer.zero_grad()
            criterion(model(x), y)
            model.backward(criterion.backward())
            if name == "clip-norm":
                mnn.clip_grad_norm_(parameters, 1.0)
            elif name == "clip-value":
                mnn.clip_grad_value_(parameters, 0.1)
            optimizer.step()
            if schedule is not None:
                schedule.step()

    def torch_loop() -> None:
        for x, y in batches:
            twin_optimizer.zero_grad()
            twin_criterion(twin(x), y).backward()
            if name == "clip-norm":
                torch.nn.utils.clip_grad_norm_(twin_parameters, 1.0)
            elif name == "clip-value":
                torch.nn.utils.clip_grad_value_(twin_parameters, 0.1)
            twin_optimizer.step()
            if twin_schedule is not None:
                twin_schedule.step()

    return {"minidl": minidl_loop, "torch": torch_loop}


def optimizer_runs(name: str) -> dict[str, Callable[[], None]]:
    """``STEPS`` calls of minidl's ``optimizer.step()`` and of its twin's, on the gradients of
    one batch."""
    twins = make_twins(name, steps=1)  # (one batch: its gradients)
    x, y = twins.batches[0]
    twins.criterion(twins.model(x), y)
    twins.model.backward(twins.criterion.backward())
    twins.twin_criterion(twins.twin(x), y).backward()

    def minidl_steps() -> None:
        for _ in range(STEPS):
            twins.optimizer.step()

    def torch_steps() -> None:
        for _ in range(STEPS):
            twins.twin_optimizer.step()

    return {"minidl": minidl_steps, "torch": torch_steps}


def make_module(name: str, dtype: torch.dtype = torch.float32) -> mnn.Module:
    """The module of the row ``name``: ``Linear(25, 25)``, ``BatchNorm1d(25)``,
    ``Dropout(0.1)`` or an activation by its name (seed 0)."""
    from minidl import nn as mnn

    torch.manual_seed(0)
    width = PAPER_SIZES[1]
    if name == "linear":
        return mnn.Linear(width, width, dtype=dtype)
    if name == "batchnorm":
        return mnn.BatchNorm1d(width, dtype=dtype)
    if name == "dropout":
        return mnn.Dropout(0.1)
    return mnn.activation(name)


def module_runs(name: str) -> dict[str, Callable[[], None]]:
    """``STEPS`` forwards and backwards of the module ``name`` and of its twin."""
    from minidl.interop import to_torch

    module = make_module(name)
    twin = to_torch(module)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, PAPER_SIZES[1], generator=generator)
    gradient = torch.randn(BATCH, PAPER_SIZES[1], generator=generator)
    twin_x = x.clone().requires_grad_()

    def minidl_calls() -> None:
        for _ in range(STEPS):
            module(x)
            module.backward(gradient)

    def torch_calls() -> None:
        for _ in range(STEPS):
            twin_x.grad = None
            twin(twin_x).backward(gradient)

    return {"minidl": minidl_calls, "torch": torch_calls}


def measure(
    variant: Variant, rounds: int, repetitions: int, clock: Callable[[], float]
) -> dict[str, Any]:
    """Microseconds a step (the medians of ``rounds`` rounds) of each side of ``variant``, the
    ratios PyTorch / minidl of the rounds, and for a training step minidl's time over its base
    step, timed in the same rounds."""
    torch.set_num_threads(1)
    make = {"step": step_runs, "optimizer": optimizer_runs, "module": module_runs}[variant.kind]
    runs = make(variant.name)
    if variant.kind == "step" and variant.name != "base":
        runs["base"] = step_runs("base")["minidl"]
    per_round: list[dict[str, float]] = []
    for _ in range(rounds):
        medians = paired_medians(runs, repetitions, warmup=1, clock=clock)
        per_round.append({side: seconds / STEPS * 1e6 for side, seconds in medians.items()})
    us = {side: statistics.median(r[side] for r in per_round) for side in runs}
    ratios = [r["torch"] / r["minidl"] for r in per_round]
    result: dict[str, Any] = {
        "variant": asdict(variant),
        "us_per_step": us,
        "ratio": statistics.median(ratios),
        "ratio_low": min(ratios),
        "ratio_high": max(ratios),
    }
    if "base" in us:
        result["over_base"] = statistics.median(r["minidl"] / r["base"] for r in per_round)
    return result


def row(result: dict[str, Any]) -> str:
    """A row's line of the table, marked SLOWER where minidl is slower than PyTorch (a ratio
    below 0.95) in every round."""
    variant, us = result["variant"], result["us_per_step"]
    over_base = f"{result['over_base']:6.2f}" if "over_base" in result else f"{'':6}"
    line = (
        f"{variant['kind']:<9} {variant['name']:<26} {us['torch']:8.1f} {us['minidl']:8.1f}"
        f"  {result['ratio']:5.2f} ({result['ratio_low']:.2f}-{result['ratio_high']:.2f})"
        f"  {over_base}"
    )
    return line + ("   SLOWER" if result["ratio_high"] < 0.95 else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one row of each kind, one round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per row (default 5)")
    parser.add_argument(
        "--wall", action="store_true", help="time by the wall clock, not this thread's CPU time"
    )
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else 1 if args.quick else 5
    if rounds < 1:
        parser.error(f"argument --rounds: expected a whole number >= 1, got {rounds}")
    repetitions = 3 if args.quick else 7
    clock = time.perf_counter if args.wall else time.thread_time
    clock_name = "wall clock" if args.wall else "CPU time of the thread"
    machine = describe_machine()
    threads = torch.get_num_threads()
    print(
        f"machine: {machine['cpu']} ({machine['cpu_capability']} kernels), "
        f"{machine['cpu_count']} CPUs, torch {machine['torch']}, Python {machine['python']}"
    )
    print(
        f"network 2-25-25-25-2, batch {BATCH}, float32, 1 thread; us per step ({clock_name}), "
        "PyTorch / minidl, the median of the rounds (lowest-highest); / base: minidl's step over"
        " its SGD, tanh and cross-entropy step"
    )
    print(f"{'kind':<9} {'variant':<26} {'torch':>8} {'minidl':>8}  {'ratio':<16} / base")
    results = []
    try:
        # (a first step of each side warms what the first row would otherwise pay for)
        measure(Variant("step", "base"), 1, 1, clock)
        for variant in variants(args.quick):
            result = measure(variant, rounds, repetitions, clock)
            results.append(result)
            print(row(result), flush=True)
    finally:
        torch.set_num_threads(threads)
    ratios = [r["ratio"] for r in results]
    print(f"PyTorch / minidl from {min(ratios):.2f}x to {max(ratios):.2f}x")
    slower = [r for r in results if r["ratio_high"] < 0.95]
    print(f"rows where minidl is slower in every round (ratio < 0.95): {len(slower)}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"machine": machine, "clock": clock_name, "rounds": rounds, "results": results},
                indent=2,
            )
            + "\n"
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
