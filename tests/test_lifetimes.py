"""Lifetimes: what minidl makes is freed by reference counting alone once a program drops it.

A program that builds and trains models in a loop (a sweep), or a notebook or server that runs
for days, frees a model, its optimizer and their buffers when it drops them, without waiting
for Python's cyclic collector: that runs only now and then (after enough new objects), and a
reference cycle that reaches a model's buffers keeps megabytes of them until it does (PyTorch's
``torch.nn`` needs no collector for a model and its optimizer either). So each test runs with
the collector off (``gc.disable()``), builds, trains, saves, refuses, then drops everything
and checks by weak references that it is gone.

Errors are part of this: a caught exception holds, through its traceback, every frame it went
through, with their tensors; an exception that one of those frames holds in a local variable
(raised from it, or kept to raise later) makes a cycle of them all.
"""

from __future__ import annotations

import copy
import gc
import signal
import sys
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl._interrupts import holding_interrupts
from minidl.checkpoint import Checkpoint, load_checkpoint, read_checkpoint, save_checkpoint
from minidl.folded import FoldedStep
from minidl.rounds import PerModel, fit_rounds
from minidl.train import fit, predict

References = dict[str, weakref.ref[Any]]


@pytest.fixture(autouse=True)
def _no_cyclic_collector() -> Iterator[None]:
    """Python's cyclic collector off for the test: only reference counting frees."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _assert_freed(references: References) -> None:
    alive = [name for name, reference in references.items() if reference() is not None]
    assert alive == [], f"still held: {alive}"


def _data(samples: int = 40, features: int = 2, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=generator)
    return x, (x[:, 0] > 0).long()


def _model(kind: str) -> nn.Sequential:
    generator = torch.Generator().manual_seed(0)
    if kind == "mlp":
        return nn.mlp((2, 16, 16, 2), generator=generator)
    if kind == "batch norm":
        return nn.Sequential(
            nn.Linear(2, 16, generator=generator),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.Linear(16, 2, generator=generator),
        )
    if kind == "dropout":
        return nn.Sequential(
            nn.Linear(2, 16, generator=generator),
            nn.Tanh(),
            nn.Dropout(0.25, generator=torch.Generator().manual_seed(1)),
            nn.Linear(16, 2, generator=generator),
        )
    assert kind == "residual"
    block = nn.Sequential(nn.Linear(16, 16, generator=generator), nn.Tanh())
    return nn.Sequential(
        nn.Linear(2, 16, generator=generator),
        nn.Residual(block),
        nn.Linear(16, 2, generator=generator),
    )


_OPTIMIZERS: dict[str, Callable[[nn.Module], optim.Optimizer]] = {
    "SGD": lambda model: optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
    "Adam": lambda model: optim.Adam(model.parameters(), lr=0.01),
    "Adadelta": lambda model: optim.Adadelta(model.parameters()),
}

_SCHEDULERS: dict[str, Callable[[optim.Optimizer], optim.LRScheduler]] = {
    "StepDecay": lambda optimizer: optim.StepDecay(optimizer, step_size=2),
    "CyclicLR": lambda optimizer: optim.CyclicLR(
        optimizer, base_lr=0.01, max_lr=0.1, step_size_up=3
    ),
}


def _train_save_load_and_drop(
    kind: str, optimizer_name: str, scheduler_name: str, path: Path
) -> References:
    model = _model(kind)
    criterion = nn.CrossEntropyLoss()
    optimizer = _OPTIMIZERS[optimizer_name](model)
    scheduler = _SCHEDULERS[scheduler_name](optimizer)
    x, y = _data()
    for size in (16, 16, 8):  # (the user's loop, at two batch sizes)
        optimizer.zero_grad()
        criterion(model(x[:size]), y[:size])
        model.backward(criterion.backward())
        optimizer.step()
        scheduler.step()
    fit(model, criterion, optimizer, x, y, epochs=2, batch_size=16, scheduler=scheduler)
    predict(model, x)
    save_checkpoint(path, model, optimizer, scheduler, epoch=2)
    load_checkpoint(path, model, optimizer, scheduler)
    checkpoint = read_checkpoint(path)
    load_checkpoint(checkpoint, model)
    flat = optimizer._flat_buffers()
    references: References = {
        "model": weakref.ref(model),
        "optimizer": weakref.ref(optimizer),
        "scheduler": weakref.ref(scheduler),
        "criterion": weakref.ref(criterion),
        "x": weakref.ref(x),
        "a parameter's value": weakref.ref(model[0].weight.data),
        "checkpoint": weakref.ref(checkpoint),
    }
    if flat is not None:
        references["flat values"] = weakref.ref(flat[0])
    step = FoldedStep.kept(model, criterion, optimizer, x, y)
    if kind == "mlp":
        assert step is not None  # (fit folded its steps)
        references["folded step"] = weakref.ref(step)
    return references


@pytest.mark.parametrize(
    ("kind", "optimizer_name", "scheduler_name"),
    [
        ("mlp", "SGD", "StepDecay"),
        ("mlp", "Adam", "CyclicLR"),
        ("mlp", "Adadelta", "CyclicLR"),
        ("batch norm", "Adam", "StepDecay"),
        ("dropout", "SGD", "CyclicLR"),
        ("residual", "Adadelta", "StepDecay"),
    ],
)
def test_a_model_trained_saved_and_loaded_is_freed_once_dropped(
    kind: str, optimizer_name: str, scheduler_name: str, tmp_path: Path
) -> None:
    """Trained by the user's loop and by fit (folded for the plain chain), evaluated by predict,
    saved and loaded: the model, the optimizer, the schedule, the flat buffers, the folded step
    (kept for the model, weakly) and the checkpoint are freed as soon as they are dropped."""
    _assert_freed(_train_save_load_and_drop(kind, optimizer_name, scheduler_name, tmp_path / "c"))


@pytest.mark.parametrize("flat", [False, True], ids=["one optimizer", "PerModel flat"])
def test_models_trained_by_fit_rounds_are_freed_once_dropped(flat: bool) -> None:
    def train() -> References:
        models = [_model("mlp") for _ in range(2)]
        sets = [_data(seed=seed) for seed in range(2)]
        make: Any = (
            PerModel(lambda index, parameters: optim.Adam(parameters, lr=0.01), flat=True)
            if flat
            else lambda stack: optim.SGD(stack.parameters(), lr=0.1, momentum=0.9)
        )
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            make,
            sets,
            epochs=2,
            batch_size=16,
            generators=[torch.Generator().manual_seed(seed) for seed in range(2)],
            make_scheduler=_SCHEDULERS["CyclicLR"],
            validation_sets=sets,
            max_grad_norm=1.0,
        )
        references = {f"model {index}": weakref.ref(model) for index, model in enumerate(models)}
        references["x"] = weakref.ref(sets[0][0])
        return references

    _assert_freed(train())


def test_a_refused_fit_rounds_holds_nothing() -> None:
    """fit_rounds refusing training sets the models do not take (their first samples run
    through the stack first) made its refusal in a local variable and raised it from there:
    the refusal's traceback held that frame, which held the refusal, and with it the stack,
    the models and the sets, until the cyclic collector ran."""

    def refuse() -> tuple[References, str]:
        models = [_model("mlp") for _ in range(2)]
        sets = [_data(features=3, seed=seed) for seed in range(2)]
        references = {f"model {index}": weakref.ref(model) for index, model in enumerate(models)}
        references["x"] = weakref.ref(sets[0][0])
        try:
            fit_rounds(
                models,
                nn.CrossEntropyLoss(),
                lambda stack: optim.SGD(stack.parameters(), lr=0.1),
                sets,
                epochs=1,
                generators=[torch.Generator() for _ in range(2)],
            )
        except ValueError as error:
            return references, str(error)
        return references, "not refused"

    references, message = refuse()
    assert message.startswith("fit_rounds: the training sets do not fit: ")
    _assert_freed(references)


_GRADIENT_DTYPE_REFUSERS: dict[str, Callable[[], nn.Module]] = {
    "Linear": lambda: nn.Linear(3, 3, dtype=torch.bfloat16),
    "Sequential, renamed": lambda: nn.Sequential(nn.Linear(3, 3, dtype=torch.bfloat16), nn.Tanh()),
    "Sequential, its layer's": lambda: nn.Sequential(
        nn.Tanh(), nn.Linear(3, 3, dtype=torch.bfloat16)
    ),
    "Residual, renamed": lambda: nn.Residual(
        nn.Sequential(nn.Linear(3, 3, dtype=torch.bfloat16), nn.Tanh())
    ),
}


@pytest.mark.parametrize("name", list(_GRADIENT_DTYPE_REFUSERS))
def test_a_refused_gradient_dtype_holds_nothing(name: str) -> None:
    """A layer refusing a gradient of another dtype made its GradientDtypeError in a local
    variable and raised it from there (and a container renaming it for its caller's dtype
    too): the refusal's traceback held that frame, which held the refusal, and with it the
    model, until the cyclic collector ran."""

    def refuse() -> tuple[References, str]:
        model = _GRADIENT_DTYPE_REFUSERS[name]()
        model(torch.randn(2, 3, dtype=torch.bfloat16))
        references = {"model": weakref.ref(model)}
        try:
            model.backward(torch.randn(2, 3, dtype=torch.float16))
        except TypeError as error:
            return references, str(error)
        return references, "not refused"

    references, message = refuse()
    assert "gradient dtype torch.float16 does not match " in message, message
    assert "torch.bfloat16" in message
    _assert_freed(references)


def _refuse_optimizer(header: dict[str, Any]) -> None:
    header["optimizer"]["lr"] = -1.0


def _refuse_scheduler(header: dict[str, Any]) -> None:
    header["scheduler"]["state"]["last_step"] = -4


@pytest.mark.parametrize(
    ("damage", "other_settings", "refusal"),
    [
        (_refuse_optimizer, False, "the saved state was refused: SGD.load_state_dict: lr"),
        (_refuse_scheduler, False, "the saved state was refused: StepDecay.load_state_dict"),
        (_refuse_scheduler, True, "this one refuses the saved state: StepDecay.load_state_dict"),
    ],
    ids=["the optimizer refuses", "the scheduler refuses", "another scheduler refuses"],
)
def test_a_refused_load_checkpoint_holds_nothing(
    damage: Callable[[dict[str, Any]], None], other_settings: bool, refusal: str, tmp_path: Path
) -> None:
    """A saved state that a component refuses as it is applied (the optimizer its learning
    rate, the scheduler its step, a scheduler of other settings too): load_checkpoint kept the
    refusal (or _restore_scheduler the scheduler's) in a local variable, which its traceback's
    frame held: a cycle holding the model, the optimizer, the checkpoint's tensors and the
    backups of the state, until the cyclic collector ran."""
    path = tmp_path / "c"
    model = _model("mlp")
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    save_checkpoint(path, model, optimizer, optim.StepDecay(optimizer, step_size=2), epoch=1)

    def refuse() -> tuple[References, str]:
        read = read_checkpoint(path)
        header = copy.deepcopy(read.header)  # (a checkpoint's own is read-only)
        damage(header)
        checkpoint = Checkpoint(header=header, tensors=read.tensors)
        model = _model("mlp")
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = optim.StepDecay(optimizer, step_size=3 if other_settings else 2)
        references: References = {
            "model": weakref.ref(model),
            "optimizer": weakref.ref(optimizer),
            "scheduler": weakref.ref(scheduler),
            "checkpoint": weakref.ref(checkpoint),
            "a saved tensor": weakref.ref(checkpoint.tensors["model.0.weight"]),
        }
        try:
            load_checkpoint(checkpoint, model, optimizer, scheduler)
        except ValueError as error:
            return references, str(error)
        return references, "not refused"

    references, message = refuse()
    assert refusal in message
    _assert_freed(references)


def test_an_interrupt_as_the_handlers_are_put_back_holds_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Ctrl-C handled just as holding_interrupts put a handler back is raised once all are
    back; _put_back kept it in a local variable and raised it from there, a cycle through its
    traceback, which holds every frame it went through: those of a checkpoint being saved, the
    data written included."""
    put_back = signal.signal
    before = signal.getsignal(signal.SIGINT)
    raised: list[bool] = []

    def raising_once_put_back(number: int, handler: Any) -> Any:
        previous = put_back(number, handler)
        if number == signal.SIGINT and handler is before and not raised:
            raised.append(True)
            raise KeyboardInterrupt
        return previous

    def interrupted() -> References:
        data = torch.zeros(1000)
        try:
            with holding_interrupts():
                data.add_(1)
        except KeyboardInterrupt:
            pass
        return {"data": weakref.ref(data)}

    monkeypatch.setattr(signal, "signal", raising_once_put_back)
    references = interrupted()
    monkeypatch.undo()
    assert raised == [True]
    assert signal.getsignal(signal.SIGINT) is before
    _assert_freed(references)


def _fitted_with_adam(epochs: int) -> tuple[nn.Sequential, nn.Loss, optim.Optimizer, FoldedStep]:
    """A model trained by fit with Adam (folded), its loss, its optimizer and the step kept."""
    model = _model("mlp")
    criterion = nn.CrossEntropyLoss()
    optimizer = _OPTIMIZERS["Adam"](model)
    x, y = _data()
    fit(model, criterion, optimizer, x, y, epochs=epochs, batch_size=16)
    step = FoldedStep.kept(model, criterion, optimizer, x, y)
    assert step is not None  # (fit folded its steps, and keeps the step)
    return model, criterion, optimizer, step


def test_a_model_kept_after_fit_holds_neither_its_loss_nor_its_optimizer() -> None:
    """fit keeps the folded step it made for a model while the model lives (another call goes
    on with its buffers); the step held the loss and the optimizer, so that a model kept to
    predict with, its optimizer dropped, held the optimizer's state and the step's buffers (a
    copy of every parameter, gradient and state tensor, and a batch's activations) as long as
    it lived. The step now holds the two weakly, and is dropped with either."""

    def train() -> tuple[nn.Sequential, References]:
        model, criterion, optimizer, step = _fitted_with_adam(epochs=2)
        x, y = _data()
        assert FoldedStep.kept(model, criterion, _OPTIMIZERS["Adam"](model), x, y) is None
        references: References = {
            "criterion": weakref.ref(criterion),
            "optimizer": weakref.ref(optimizer),
            "the optimizer's state": weakref.ref(optimizer.state["exp_avg"]),
            "folded step": weakref.ref(step),
            "the step's values": weakref.ref(step.values),
        }
        return model, references

    model, references = train()
    _assert_freed(references)
    x, y = _data(seed=1)
    criterion = nn.CrossEntropyLoss()
    optimizer = _OPTIMIZERS["SGD"](model)
    fit(model, criterion, optimizer, x, y, epochs=1, batch_size=16)
    assert FoldedStep.kept(model, criterion, optimizer, x, y) is not None  # (a new step)


@pytest.mark.parametrize("dropped", ["criterion", "optimizer"])
def test_a_kept_step_is_dropped_with_its_loss_or_its_optimizer_alone(dropped: str) -> None:
    """The step kept for a model is dropped once its loss or its optimizer is, either one
    alone (each weak reference calls back): with the other kept, the step and its buffers are
    freed. A step that outlives its model (held by a program) raises nothing as the loss and
    the optimizer go after the model."""

    model, criterion, optimizer, step = _fitted_with_adam(epochs=1)
    references: References = {
        "folded step": weakref.ref(step),
        "the step's values": weakref.ref(step.values),
    }
    del step
    kept: object = optimizer if dropped == "criterion" else criterion
    del criterion, optimizer
    _assert_freed(references)
    assert kept is not None and model is not None
    model, criterion, optimizer, step = _fitted_with_adam(epochs=1)
    dropped_reports: list[object] = []
    hook = sys.unraisablehook
    sys.unraisablehook = dropped_reports.append
    try:
        del model, criterion, optimizer
    finally:
        sys.unraisablehook = hook
    assert dropped_reports == []
    assert step.criterion is None and step.optimizer is None


def test_an_earlier_step_held_by_a_program_leaves_the_kept_step_alone() -> None:
    """A program holds the step of a first fit (FoldedStep.kept), and the model is trained
    again with another loss, or another optimizer, which makes the step kept for it now. The
    first fit's loss or optimizer dropped, the step kept stays (the callback drops the step
    kept for the model only if it is the step whose reference called), and the earlier step,
    its loss or optimizer gone, is no longer usable."""
    x, y = _data()
    for changed in ("criterion", "optimizer"):
        model = _model("mlp")
        first_criterion, first_optimizer = nn.CrossEntropyLoss(), _OPTIMIZERS["SGD"](model)
        fit(model, first_criterion, first_optimizer, x, y, epochs=1, batch_size=16)
        earlier = FoldedStep.kept(model, first_criterion, first_optimizer, x, y)
        assert earlier is not None and earlier.usable(model)
        criterion = nn.CrossEntropyLoss() if changed == "criterion" else first_criterion
        optimizer = _OPTIMIZERS["SGD"](model) if changed == "optimizer" else first_optimizer
        fit(model, criterion, optimizer, x, y, epochs=1, batch_size=16)
        step = FoldedStep.kept(model, criterion, optimizer, x, y)
        assert step is not None and step is not earlier
        if changed == "criterion":
            del first_criterion
        else:
            del first_optimizer
        assert FoldedStep.kept(model, criterion, optimizer, x, y) is step
        assert not earlier.usable(model)
