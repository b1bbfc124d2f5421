"""Whole training runs over random combinations (hypothesis), against two oracles.

A drawn run (an mlp of 1 to 3 layers, widths 1 to 10, any activation, with a batch norm, a
dropout of ``p = 0`` or a residual block after a hidden layer; any loss with each of its
reductions; any optimizer with random hyper-parameters; any schedule, a sequence of two
included, stepped per epoch or per batch; gradient clipping or none; batches of 1 to 16 with a
partial last batch; 1 to 3 epochs of shuffled float64 data) is trained three ways:

(a) the user's loop: ``BatchIterator``, forward, loss, ``backward``, ``clip_grad_norm_``,
    ``step``, and the schedule's step after every batch or epoch, as its ``interval`` says;
(b) :func:`minidl.train.fit` with the same settings;
(c) the ``torch.nn`` twin (``minidl.interop.to_torch`` before training) with autograd, the
    ``torch.optim`` optimizer and ``torch.optim.lr_scheduler`` schedule of the same settings,
    on the same batches in the same order (SGD with momentum under a schedule updates in the
    paper's convention, written out below: PyTorch's rescales its steps when the rate changes,
    see docs/pytorch.md).

(a) and (c) end with the same parameters and record the same epoch losses to 1e-9 (relative),
and (b) ends with (a)'s: to 1e-11 where ``fit`` folds its steps (a chain of layers and
activations, no other module; about 1e-12 in practice), bit for bit where it runs the loop.
The rates and sizes are drawn where training is not chaotic (a summed loss over big batches at
a large rate amplifies the roundings by orders of magnitude per epoch, and any two orders of
operations then part; a run whose twin diverges to inf or NaN is not compared), and losses and
modules that give a gradient zero up to rounding (an L1 or Huber loss whose signs cancel over a
batch, the bias before a batch norm) are trained with SGD only: an adaptive optimizer divides
that rounding by its own size, a step of the rate's size in a sign that rounding decides.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import Tensor

from minidl import nn, optim
from minidl.data import BatchIterator
from minidl.folded import FoldedStep
from minidl.interop import to_torch
from minidl.train import fit
from tests.helpers import relative_error
from tests.optimizer_twins import OPTIMIZERS, PaperSGD, draw_settings

F64 = torch.float64
ACTIVATION_NAMES = sorted(nn.ACTIVATIONS)
REDUCTIONS = {
    "cross-entropy": ["mean", "sum"],
    "nll": ["mean", "sum"],
    "mse": ["paper", "mean", "sum"],
    "l1": ["mean", "sum"],
    "huber": ["mean", "sum"],
    "bce": ["mean", "sum"],
}
SCHEDULES: list[Any] = [
    *(None, "step", "exponential", "cosine", "restarts", "cyclic", "one-cycle", "warmup"),
    ("sequence", "warmup", "cosine"),
    ("sequence", "step", "exponential"),
]


@st.composite
def runs(draw: st.DrawFn, optimizer: str | None = None, loss: str | None = None) -> dict[str, Any]:
    """A run to train (see the module's docstring), its ``optimizer`` or ``loss`` drawn unless
    given."""
    depth = draw(st.integers(1, 3))
    names = ["sgd", "adam", "adamw", "adadelta", "rmsprop", "adagrad"]
    name = optimizer if optimizer is not None else draw(st.sampled_from(names))
    # (with SGD only: L1 and Huber losses, batch norms; see the module's docstring)
    losses = sorted(REDUCTIONS) if name == "sgd" else ["bce", "cross-entropy", "mse", "nll"]
    loss = loss if loss is not None else draw(st.sampled_from(losses))
    assert loss in losses, (name, loss)
    hyper = draw_settings(draw, name)
    extras = ["", "dropout", "residual"] + (["batch-norm"] if name == "sgd" else [])
    return {
        "sizes": draw(st.lists(st.integers(1, 10), min_size=depth + 1, max_size=depth + 1)),
        "activations": draw(
            st.lists(st.sampled_from(ACTIVATION_NAMES), min_size=depth - 1, max_size=depth - 1)
        ),
        "extra": draw(st.sampled_from(extras)) if depth > 1 else "",
        "loss": loss,
        "reduction": draw(st.sampled_from(REDUCTIONS[loss])),
        "delta": draw(st.floats(0.1, 2.0)),
        "optimizer": name,
        "hyper": hyper,
        "schedule": draw(st.sampled_from(SCHEDULES)),
        "interval": draw(st.sampled_from(["epoch", "batch"])),
        "clip": draw(st.one_of(st.none(), st.floats(0.05, 5.0))),
        "samples": draw(st.integers(2, 24)),
        "batch_size": draw(st.integers(1, 16)),
        "epochs": draw(st.integers(1, 3)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def _model(run: dict[str, Any]) -> nn.Sequential:
    generator = torch.Generator().manual_seed(run["seed"])
    sizes, modules = run["sizes"], []
    for index, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        modules.append(nn.Linear(n_in, n_out, dtype=F64, generator=generator))
        if index < len(sizes) - 2:
            modules.append(nn.activation(run["activations"][index]))
    if run["extra"] == "batch-norm":
        modules.insert(2, nn.BatchNorm1d(sizes[1], dtype=F64))
    elif run["extra"] == "dropout":
        modules.insert(2, nn.Dropout(0.0))
    elif run["extra"] == "residual":
        block = nn.Linear(sizes[1], sizes[1], dtype=F64, generator=generator)
        modules.insert(2, nn.Residual(nn.Sequential(block, nn.activation(run["activations"][0]))))
    if run["loss"] == "nll":
        modules.append(nn.LogSoftmax())
    return nn.Sequential(*modules)


def _data(run: dict[str, Any]) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(run["seed"] + 1)
    samples, classes = run["samples"], run["sizes"][-1]
    x = torch.randn(samples, run["sizes"][0], dtype=F64, generator=generator)
    if run["loss"] in ("cross-entropy", "nll"):
        return x, torch.randint(0, classes, (samples,), generator=generator)
    if run["loss"] == "mse" and run["seed"] % 2:  # (class indices: one-hot rows)
        return x, torch.randint(0, classes, (samples,), generator=generator)
    if run["loss"] == "bce":
        return x, torch.rand(samples, classes, dtype=F64, generator=generator)
    return x, torch.randn(samples, classes, dtype=F64, generator=generator)


def _criterion(run: dict[str, Any]) -> nn.Loss:
    reduction: Any = run["reduction"]
    return {
        "cross-entropy": lambda: nn.CrossEntropyLoss(reduction),
        "nll": lambda: nn.NLLLoss(reduction),
        "mse": lambda: nn.MSELoss(reduction),
        "l1": lambda: nn.L1Loss(reduction),
        "huber": lambda: nn.HuberLoss(run["delta"], reduction),
        "bce": lambda: nn.BCEWithLogitsLoss(reduction),
    }[run["loss"]]()


def _torch_loss(run: dict[str, Any], prediction: Tensor, target: Tensor) -> Tensor:
    loss, reduction = run["loss"], run["reduction"]
    if loss == "cross-entropy":
        return F.cross_entropy(prediction, target, reduction=reduction)
    if loss == "nll":
        return F.nll_loss(prediction, target, reduction=reduction)
    if loss == "mse":
        if not target.is_floating_point():
            target = F.one_hot(target, prediction.shape[1]).to(prediction.dtype)
        if reduction == "paper":
            return F.mse_loss(prediction, target, reduction="sum") / prediction.shape[0]
        return F.mse_loss(prediction, target, reduction=reduction)
    if loss == "l1":
        return F.l1_loss(prediction, target, reduction=reduction)
    if loss == "huber":
        return F.huber_loss(prediction, target, reduction=reduction, delta=run["delta"])
    return F.binary_cross_entropy_with_logits(prediction, target, reduction=reduction)


def _batches(run: dict[str, Any]) -> int:
    return math.ceil(run["samples"] / run["batch_size"])


def _schedule(run: dict[str, Any], optimizer: Any, kind: Any, torch_side: bool) -> Any:
    """The schedule ``kind`` on ``optimizer``: minidl's, or its ``torch.optim.lr_scheduler``
    counterpart (``torch_side``)."""
    lr, interval, scheduler = run["hyper"]["lr"], run["interval"], torch.optim.lr_scheduler
    if kind is None:
        return None
    if isinstance(kind, tuple):  # ("sequence", first, second), the second from step 3
        parts = [_schedule(run, optimizer, part, torch_side) for part in kind[1:]]
        if torch_side:
            return scheduler.SequentialLR(optimizer, parts, milestones=[3])
        return optim.SequentialSchedule(optimizer, parts, milestones=[3])
    total = run["epochs"] * _batches(run) + 1
    if torch_side:
        return {
            "step": lambda: scheduler.StepLR(optimizer, 2, gamma=0.5),
            "exponential": lambda: scheduler.ExponentialLR(optimizer, 0.8),
            "cosine": lambda: scheduler.CosineAnnealingLR(optimizer, 5, lr / 10),
            "restarts": lambda: scheduler.CosineAnnealingWarmRestarts(optimizer, 2, 2, lr / 10),
            "cyclic": lambda: scheduler.CyclicLR(
                optimizer, lr, 4 * lr, 3, mode="triangular2", cycle_momentum=False
            ),
            "one-cycle": lambda: scheduler.OneCycleLR(
                optimizer, 4 * lr, total_steps=max(total, 4), cycle_momentum=False
            ),
            "warmup": lambda: scheduler.LinearLR(optimizer, 0.2, total_iters=4),
        }[kind]()
    schedule: optim.LRScheduler = {
        "step": lambda: optim.StepDecay(optimizer, 2, gamma=0.5),
        "exponential": lambda: optim.ExponentialDecay(optimizer, 0.8),
        "cosine": lambda: optim.CosineAnnealing(optimizer, 5, lr / 10),
        "restarts": lambda: optim.CosineAnnealingWarmRestarts(optimizer, 2, 2, lr / 10),
        "cyclic": lambda: optim.CyclicLR(optimizer, lr, 4 * lr, 3, mode="triangular2"),
        "one-cycle": lambda: optim.OneCycle(optimizer, 4 * lr, total_steps=max(total, 4)),
        "warmup": lambda: optim.LinearWarmup(optimizer, 4, start_factor=0.2),
    }[kind]()
    if kind not in ("cyclic", "one-cycle"):  # (those two step per batch)
        schedule.interval = interval
    return schedule


def _per_batch(run: dict[str, Any]) -> bool:
    kind = run["schedule"]
    return kind in ("cyclic", "one-cycle") or (kind is not None and run["interval"] == "batch")


def _loop(run: dict[str, Any], model: nn.Sequential, x: Tensor, y: Tensor) -> list[float]:
    """(a): the user's loop; the epoch losses (the mean of the batch losses)."""
    criterion = _criterion(run)
    optimizer = OPTIMIZERS[run["optimizer"]][0](model.parameters(), **run["hyper"])
    schedule = _schedule(run, optimizer, run["schedule"], torch_side=False)
    generator, losses = torch.Generator().manual_seed(run["seed"] + 2), []
    for _ in range(run["epochs"]):
        batch_losses = []
        for x_batch, y_batch in BatchIterator(x, y, run["batch_size"], generator=generator):
            optimizer.zero_grad()
            batch_losses.append(criterion(model(x_batch), y_batch))
            model.backward(criterion.backward())
            if run["clip"] is not None:
                nn.clip_grad_norm_(model.parameters(), run["clip"])
            optimizer.step()
            if _per_batch(run):
                schedule.step()
        if schedule is not None and not _per_batch(run):
            schedule.step()
        losses.append(float(torch.stack(batch_losses).sum(dtype=F64)) / len(batch_losses))
    return losses


def _twin(run: dict[str, Any], twin: torch.nn.Module, x: Tensor, y: Tensor) -> list[float]:
    """(c): the torch.nn twin trained by autograd, torch.optim and its schedule."""
    parameters = list(twin.parameters())
    hyper = run["hyper"]
    if run["optimizer"] == "sgd" and hyper["momentum"] and run["schedule"] is not None:
        optimizer: torch.optim.Optimizer = PaperSGD(parameters, **hyper)
    else:
        optimizer = OPTIMIZERS[run["optimizer"]][1](parameters, **hyper)
    schedule = _schedule(run, optimizer, run["schedule"], torch_side=True)
    generator, losses = torch.Generator().manual_seed(run["seed"] + 2), []
    for _ in range(run["epochs"]):
        batch_losses = []
        for x_batch, y_batch in BatchIterator(x, y, run["batch_size"], generator=generator):
            optimizer.zero_grad()
            loss = _torch_loss(run, twin(x_batch), y_batch)
            loss.backward()
            if run["clip"] is not None:
                torch.nn.utils.clip_grad_norm_(parameters, run["clip"])
            optimizer.step()
            batch_losses.append(float(loss.detach()))
            if _per_batch(run):
                schedule.step()
        if schedule is not None and not _per_batch(run):
            schedule.step()
        losses.append(sum(batch_losses) / len(batch_losses))
    return losses


def _values(parameters: Any) -> Tensor:
    return torch.cat([parameter.detach().reshape(-1) for parameter in parameters])


@settings(max_examples=25, deadline=None)
@given(runs())
def test_random_training_runs_agree_with_pytorch_and_fit(run: dict[str, Any]) -> None:
    _agrees_with_pytorch_and_fit(run)


@pytest.mark.parametrize(
    ("optimizer", "loss"), [("adamw", None), ("sgd", "l1"), ("sgd", "huber")], ids=str
)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_random_runs_of_the_choices_the_draws_above_miss_agree(
    optimizer: str, loss: str | None, data: st.DataObject
) -> None:
    """The fixed examples of the test above (derandomized, 25) draw no AdamW, L1 or Huber run:
    runs of each, the rest drawn."""
    run = data.draw(runs(optimizer, loss))
    assert run["optimizer"] == optimizer and loss in (None, run["loss"])
    _agrees_with_pytorch_and_fit(run)


def _agrees_with_pytorch_and_fit(run: dict[str, Any]) -> None:
    """Train ``run`` three ways (see the module's docstring) and compare."""
    if run["extra"] == "batch-norm":  # (a batch of one sample has no variance to normalise by)
        assume(run["batch_size"] > 1 and run["samples"] % run["batch_size"] != 1)
    model, (x, y) = _model(run), _data(run)
    twin = to_torch(model)
    loop_model, fit_model = copy.deepcopy(model), copy.deepcopy(model)

    losses = _loop(run, loop_model, x, y)
    twin_losses = _twin(run, twin, x, y)
    expected = _values(twin.parameters())
    assume(bool(torch.isfinite(expected).all()))  # (a run that diverged compares nothing)
    trained = _values(p.data for p in loop_model.parameters())
    assert relative_error(trained, expected) <= 1e-9
    for loss, twin_loss in zip(losses, twin_losses, strict=True):
        assert math.isclose(loss, twin_loss, rel_tol=1e-9, abs_tol=1e-12)

    criterion = _criterion(run)
    optimizer = OPTIMIZERS[run["optimizer"]][0](fit_model.parameters(), **run["hyper"])
    history = fit(
        fit_model,
        criterion,
        optimizer,
        x,
        y,
        epochs=run["epochs"],
        batch_size=run["batch_size"],
        scheduler=_schedule(run, optimizer, run["schedule"], torch_side=False),
        generator=torch.Generator().manual_seed(run["seed"] + 2),
        max_grad_norm=run["clip"],
    )
    fitted = _values(p.data for p in fit_model.parameters())
    # fit folds exactly the chains of layers and activations (no other module)
    folded = FoldedStep.kept(fit_model, criterion, optimizer, x, y) is not None
    assert folded == (run["extra"] == "" and run["loss"] != "nll")
    if folded:
        assert relative_error(fitted, trained) <= 1e-11
        assert history.train_loss == pytest.approx(losses, rel=1e-11, abs=1e-14)
    else:
        assert torch.equal(fitted, trained)
        assert history.train_loss == losses
