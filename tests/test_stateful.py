"""The life of a model, its optimizer and its schedule, rule by rule in any order (hypothesis's
stateful testing), against a ``torch.nn`` twin.

A drawn life is a float64 network (an mlp with two drawn activations; with a batch norm, of
momentum 0.1 or a cumulative average, after a layer without bias; a dropout of ``p = 0``,
0.25 or 0.5, drawing from torch's generator or its own; a residual block; or an mlp nested in
another ``Sequential``), a loss, an optimizer with drawn settings, and a schedule or none. Its
twin is :func:`minidl.interop.to_torch` of the network at the start, trained by autograd,
``torch.optim`` and ``torch.optim.lr_scheduler`` with the same settings, with the same seeds
before each forward (dropout's masks). The rules, drawn in any order:

- a forward, loss and backward (or ``backward_parameters``; plain, inside
  ``torch.inference_mode()`` or inside :func:`minidl.detect_anomaly`) on a batch of 1 to 17
  samples, often of the last call's size (a ``Sequential`` then plans its chain and its modules
  reuse their per-shape tensors) and often not (they switch, and drop the oldest); a second
  backward of that forward, at once or after other rules; a training loop's iteration (the same,
  between ``zero_grad`` or not and the optimizer's and schedule's steps); a forward alone, in the
  mode the model is in; an epoch of :func:`minidl.train.fit` (folded or not), against the twin's
  loop over the same batches;
- ``zero_grad`` through the model or the optimizer, the optimizer's and the schedule's steps, a
  learning rate or another hyper-parameter set by hand, ``train()`` / ``eval()`` of the model or
  of one module in it, gradients scaled in place or replaced by new tensors, values replaced or
  scaled, ``clip_grad_norm_`` (2, 1 and inf norms) and ``clip_grad_value_``;
- the state dicts loaded into the same objects (the model's with ``keep_vars`` too) or into
  fresh ones built with other values, or those of a snapshot taken earlier; a checkpoint saved
  and loaded likewise; ``copy.deepcopy`` and pickle (of the three together, or of the model
  with a new optimizer and schedule loading the old ones' state, built before or after the
  optimizer loads), a conversion to ``torch.nn`` and back, and ``copy.copy`` (going on with the
  copy in each case); ``to(torch.float64)``, ``double()`` and ``cpu()``, and round trips through
  float32, float16 and bfloat16.

After every rule the parameters, their gradients, the batch norm's statistics, the learning rate
and every module's mode equal the twin's (1e-10 relative; the count of batches exactly), the
outputs, losses, input gradients and norms the rules returned still equal the twin's (no later
call writes into a tensor returned).

Where the twin is made to do as minidl does, and why:

- SGD with momentum under a schedule, or with its rate set by hand, steps in the paper's
  convention (:class:`PaperSGD`): PyTorch's velocity is in gradient units and rescales the
  steps when the rate changes (docs/pytorch.md); at a constant rate the twin is
  ``torch.optim.SGD``. A rate is set by hand only without a schedule: a PyTorch schedule
  scales the rate it finds, minidl's sets its own (docs/pytorch.md).
- The twin's gradients start as zeros, and its ``zero_grad`` keeps them (``set_to_none=False``):
  a minidl gradient is never ``None``, and a step moves every parameter of the optimizer.
- A state dict, a checkpoint and a conversion hold no gradients: the model loaded keeps its own
  (or has zeros, when fresh or converted), and so does the twin's. A deep copy of a ``torch.nn``
  parameter leaves its gradient behind: the twin's copy is given it back.
- A second backward needs PyTorch's graph kept (``retain_graph=True``) and is drawn only while
  it means the same on both sides: no forward, step, load, copy, cast or change of the values
  since (minidl's backward reads the values when it runs, where PyTorch's refuses values changed
  in place; a shallow copy, over the same parameters and forward caches, keeps it).
- A batch of one sample through a batch norm in training mode is refused on both sides, and
  nothing changes in minidl; PyTorch's batch norm has counted it in ``num_batches_tracked``
  before it checks the size (which a cumulative average would then weigh): the twin's count is
  taken back.
- Below a batch norm the gradients are measured against the largest, and with another
  optimizer than SGD the activation before it is a smooth one (Tanh, Sigmoid, GELU, SiLU): the
  batch norm's input gradient sums to 0 over the batch, and so does the gradient of the bias of
  the layer before an activation of one slope over the batch (a ReLU's positive side, say): 0
  up to rounding, which an adaptive optimizer divides by its own size into a step of the rate's
  size in a sign that rounding decides.
"""

from __future__ import annotations

import contextlib
import copy
import math
import pickle
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from torch import Tensor

from minidl import detect_anomaly, nn, optim
from minidl.checkpoint import load_checkpoint, save_checkpoint
from minidl.data import BatchIterator
from minidl.interop import from_torch, to_torch
from minidl.train import fit
from tests.helpers import F64, assert_close, torch_loss
from tests.optimizer_twins import OPTIMIZERS, PaperSGD, draw_settings

pytestmark = pytest.mark.filterwarnings(
    # (the twin's schedule stepped before any step of its optimizer: a rule order drawn on purpose)
    "ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`"
)

FEATURES, CLASSES = 3, 4
KINDS = ["mlp", "batch-norm", "dropout", "residual", "nested"]
LOSSES = [("cross-entropy", "mean"), ("cross-entropy", "sum"), ("mse", "paper"), ("mse", "mean")]
SCHEDULES = [
    "step",
    "exponential",
    "cosine",
    "restarts",
    "cyclic",
    "one-cycle",
    "warmup",
    "sequence",
]

#: What a rule that runs a batch draws (``forward_backward`` and ``train_step``): the batch's
#: size, whether it repeats the last one, its seed, the backward taken, what it runs inside,
#: and a second backward and its mode.
BATCH_DRAWS: dict[str, st.SearchStrategy[Any]] = {
    "size": st.integers(1, 17),
    "again": st.booleans(),
    "seed": st.integers(0, 2**16),
    "through": st.sampled_from(["backward", "backward_parameters"]),
    "inside": st.sampled_from(["", "inference mode", "detect_anomaly"]),
    "second": st.sampled_from(["", "in its mode", "in training mode", "in evaluation mode"]),
}


@st.composite
def lives(draw: st.DrawFn) -> dict[str, Any]:
    """The settings of a life: the network, loss, optimizer and schedule."""
    name = draw(st.sampled_from(sorted(OPTIMIZERS)))
    hyper = draw_settings(draw, name)
    schedule = draw(st.one_of(st.none(), st.sampled_from(SCHEDULES)))  # (None: half the lives)
    kind = draw(st.sampled_from(KINDS))
    first = sorted(nn.ACTIVATIONS)
    if kind == "batch-norm" and name != "sgd":  # (see the module's docstring)
        first = ["gelu", "gelutanh", "sigmoid", "silu", "tanh"]
    return {
        "kind": kind,
        "hidden": draw(st.integers(1, 6)),
        "activations": [
            draw(st.sampled_from(first)),
            draw(st.sampled_from(sorted(nn.ACTIVATIONS))),
        ],
        "p": draw(st.sampled_from([0.0, 0.25, 0.5])),
        "momentum": draw(st.sampled_from([0.1, None])),  # (the batch norm's)
        "own_generator": draw(st.booleans()),
        "loss": draw(st.sampled_from(LOSSES)),
        "optimizer": name,
        "hyper": hyper,
        "schedule": schedule,
        # (SGD with momentum in the paper's convention where the rate changes: the twin's
        # PaperSGD; with a constant rate, torch.optim.SGD)
        "rate_changes": schedule is not None or draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def _network(life: dict[str, Any], seed: int) -> nn.Sequential:
    """The network of ``life``, initialised from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    hidden, kind = life["hidden"], life["kind"]
    first, second = (nn.activation(name) for name in life["activations"])

    def linear(n_in: int, n_out: int, bias: bool = True) -> nn.Linear:
        return nn.Linear(n_in, n_out, bias=bias, dtype=F64, generator=generator)

    middle: list[nn.Module]
    if kind == "batch-norm":  # (no bias before it: its gradient would be 0 up to rounding)
        norm = nn.BatchNorm1d(hidden, momentum=life["momentum"], dtype=F64)
        middle = [linear(hidden, hidden, bias=False), norm, second]
    elif kind == "dropout":
        masks = torch.Generator().manual_seed(seed + 1) if life["own_generator"] else None
        middle = [nn.Dropout(life["p"], generator=masks), linear(hidden, hidden), second]
    elif kind == "residual":
        middle = [nn.Residual(nn.Sequential(linear(hidden, hidden), second))]
    else:
        middle = [linear(hidden, hidden), second]
    if kind == "nested":
        return nn.Sequential(
            nn.Sequential(linear(FEATURES, hidden), first, *middle), linear(hidden, CLASSES)
        )
    return nn.Sequential(linear(FEATURES, hidden), first, *middle, linear(hidden, CLASSES))


def _criterion(life: dict[str, Any]) -> nn.Loss:
    loss, reduction = life["loss"]
    if loss == "cross-entropy":
        return nn.CrossEntropyLoss(reduction)
    return nn.MSELoss(reduction)


def _schedule(life: dict[str, Any], optimizer: Any, kind: Any, torch_side: bool) -> Any:
    """The schedule ``kind`` on ``optimizer``: minidl's, or its ``torch.optim.lr_scheduler``
    counterpart (``torch_side``)."""
    lr, scheduler = life["hyper"]["lr"], torch.optim.lr_scheduler
    if kind is None:
        return None
    if kind == "sequence":  # a warm-up, then a cosine from step 3
        parts = [_schedule(life, optimizer, part, torch_side) for part in ("warmup", "cosine")]
        if torch_side:
            return scheduler.SequentialLR(optimizer, parts, milestones=[3])
        return optim.SequentialSchedule(optimizer, parts, milestones=[3])
    if torch_side:
        return {
            "step": lambda: scheduler.StepLR(optimizer, 3, gamma=0.5),
            "exponential": lambda: scheduler.ExponentialLR(optimizer, 0.9),
            "cosine": lambda: scheduler.CosineAnnealingLR(optimizer, 7, lr / 10),
            "restarts": lambda: scheduler.CosineAnnealingWarmRestarts(optimizer, 2, 2, lr / 10),
            "cyclic": lambda: scheduler.CyclicLR(
                optimizer, lr, 4 * lr, 3, mode="triangular2", cycle_momentum=False
            ),
            "one-cycle": lambda: scheduler.OneCycleLR(
                optimizer, 4 * lr, total_steps=1000, cycle_momentum=False
            ),
            "warmup": lambda: scheduler.LinearLR(optimizer, 0.2, total_iters=4),
        }[kind]()
    return {
        "step": lambda: optim.StepDecay(optimizer, 3, gamma=0.5),
        "exponential": lambda: optim.ExponentialDecay(optimizer, 0.9),
        "cosine": lambda: optim.CosineAnnealing(optimizer, 7, lr / 10),
        "restarts": lambda: optim.CosineAnnealingWarmRestarts(optimizer, 2, 2, lr / 10),
        "cyclic": lambda: optim.CyclicLR(optimizer, lr, 4 * lr, 3, mode="triangular2"),
        "one-cycle": lambda: optim.OneCycle(optimizer, 4 * lr, total_steps=1000),
        "warmup": lambda: optim.LinearWarmup(optimizer, 4, start_factor=0.2),
    }[kind]()


class ModelLife(RuleBasedStateMachine):
    """A model, optimizer and schedule, and their twins, living through the rules drawn."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        # What the rules returned and what the twin gave for it: checked after every rule.
        self.returned: list[tuple[str, Tensor, Tensor]] = []
        # How the last forward was differentiated ("backward" or "backward_parameters"), the
        # twin's input and loss, while a second backward of it means the same on both sides.
        self.graph: tuple[str, Tensor, Tensor] | None = None
        self.last_batch = 1
        # The state dicts of a snapshot: minidl's and the twin's.
        self.snapshot: tuple[list[Any], list[Any]] | None = None

    def teardown(self) -> None:
        self.folder.cleanup()

    # -- building ---------------------------------------------------------------------------------

    @initialize(life=lives())
    def build(self, life: dict[str, Any]) -> None:
        self.life = life
        self.criterion = _criterion(life)
        self.model, self.optimizer, self.scheduler = self._minidl_trio(life["seed"])
        self.twin = to_torch(self.model)
        self.twin_optimizer, self.twin_scheduler = self._twin_pair(self.twin)

    def _minidl_trio(self, seed: int) -> tuple[Any, Any, Any]:
        model = _network(self.life, seed)
        name = self.life["optimizer"]
        optimizer = OPTIMIZERS[name][0](model.parameters(), **self.life["hyper"])
        scheduler = _schedule(self.life, optimizer, self.life["schedule"], torch_side=False)
        return model, optimizer, scheduler

    def _twin_pair(self, twin: torch.nn.Module) -> tuple[Any, Any]:
        """A new twin optimizer and schedule over ``twin``, whose gradients become zeros."""
        for parameter in twin.parameters():
            parameter.grad = torch.zeros_like(parameter)
        name, hyper = self.life["optimizer"], self.life["hyper"]
        parameters = list(twin.parameters())
        if name == "sgd" and hyper["momentum"] > 0 and self.life["rate_changes"]:
            optimizer: torch.optim.Optimizer = PaperSGD(parameters, **hyper)
        else:
            optimizer = OPTIMIZERS[name][1](parameters, **hyper)
        return optimizer, _schedule(self.life, optimizer, self.life["schedule"], torch_side=True)

    def _go_on_with(self, model: nn.Sequential, schedule_first: bool) -> None:
        """Go on with ``model`` (holding the model's state), a new optimizer and a new schedule
        on it, which load the optimizer's and schedule's state (the schedule built before or
        after the optimizer loads)."""
        optimizer = OPTIMIZERS[self.life["optimizer"]][0](model.parameters(), **self.life["hyper"])
        scheduler = None
        if schedule_first:
            scheduler = _schedule(self.life, optimizer, self.life["schedule"], torch_side=False)
        optimizer.load_state_dict(self.optimizer.state_dict())
        if not schedule_first:
            scheduler = _schedule(self.life, optimizer, self.life["schedule"], torch_side=False)
        if scheduler is not None:
            scheduler.load_state_dict(self.scheduler.state_dict())
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    def _fresh_twin(self, model: nn.Sequential) -> tuple[torch.nn.Module, Any, Any]:
        """A fresh twin (of ``model``, before it loads anything) that loads the twin's state,
        with an optimizer and a schedule that load the twin's optimizer's and schedule's."""
        twin = to_torch(model)
        twin.load_state_dict(self.twin.state_dict())
        optimizer, scheduler = self._twin_pair(twin)
        optimizer.load_state_dict(self.twin_optimizer.state_dict())
        if scheduler is not None:
            scheduler.load_state_dict(self.twin_scheduler.state_dict())
        return twin, optimizer, scheduler

    # -- data -------------------------------------------------------------------------------------

    def _batch(self, size: int, seed: int) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(size, FEATURES, dtype=F64, generator=generator)
        if self.life["loss"][0] == "mse" and seed % 2:
            return x, torch.randn(size, CLASSES, dtype=F64, generator=generator)
        return x, torch.randint(0, CLASSES, (size,), generator=generator)

    def _start(self, size: int, again: bool, seed: int) -> tuple[Tensor, Tensor] | None:
        """The batch of a forward (of the last forward's size where ``again``), its dropout
        masks seeded on both sides; ``None`` where both refuse it (checked here)."""
        size = self.last_batch if again else size
        self.last_batch = size
        x, y = self._batch(size, seed)
        self.graph = None
        if self._refuses(size):
            with pytest.raises(ValueError, match="BatchNorm1d"):
                self.model(x)
            self._twin_refuses(x)
            return None
        self._seed_masks(seed)
        return x, y

    def _seed_masks(self, seed: int) -> None:
        """Dropout's masks of the next forward on both sides: torch's generator and the
        dropout's own."""
        torch.manual_seed(seed)
        for module in self.model.modules():
            if isinstance(module, nn.Dropout) and module.generator is not None:
                module.generator.manual_seed(seed)

    def _refuses(self, size: int) -> bool:
        """Whether a batch of ``size`` is refused: one sample, through a batch norm in training
        mode."""
        return size == 1 and any(
            isinstance(module, nn.BatchNorm1d) and module.training
            for module in self.model.modules()
        )

    def _twin_refuses(self, x: Tensor) -> None:
        """The twin refuses ``x`` as minidl did; its batch norms' counts of batches are taken
        back (PyTorch's counts the batch before it checks its size)."""
        counts = [b.clone() for n, b in self.twin.named_buffers() if n.endswith("_tracked")]
        with pytest.raises(ValueError, match="more than 1 value"):
            self.twin(x)
        kept = (b for n, b in self.twin.named_buffers() if n.endswith("_tracked"))
        for buffer, count in zip(kept, counts, strict=True):
            assert int(buffer) == int(count) + 1
            buffer.copy_(count)

    def _keep(self, what: str, returned: Tensor, expected: Tensor) -> None:
        assert_close(returned, expected, what=what)
        self.returned = [*self.returned[-5:], (what, returned, expected.detach().clone())]

    # -- rules: computing -------------------------------------------------------------------------

    @rule(**BATCH_DRAWS)
    def forward_backward(
        self, size: int, again: bool, seed: int, through: str, inside: str, second: str
    ) -> None:
        """Forward, loss and backward (plain, inside ``torch.inference_mode()`` or inside
        :func:`minidl.detect_anomaly`), and a ``second`` backward at once, or not (the rule
        ``backward_again``, also drawn after other rules)."""
        context = {
            "": contextlib.nullcontext,
            "inference mode": torch.inference_mode,
            "detect_anomaly": detect_anomaly,
        }[inside]
        batch = self._start(size, again, seed)
        if batch is None:
            return
        x, y = batch
        with context():
            output = self.model(x)
            loss = self.criterion(output, y)
            if through == "backward":
                input_grad = self.model.backward(self.criterion.backward())
            else:
                assert self.model.backward_parameters(self.criterion.backward()) is None
        torch.manual_seed(seed)
        twin_x = x.clone().requires_grad_(through == "backward")
        twin_output = self.twin(twin_x)
        twin_loss = torch_loss(self.criterion, twin_output, y)
        twin_loss.backward(retain_graph=True)
        if through == "backward":
            assert twin_x.grad is not None
            self._keep("input gradient", input_grad, twin_x.grad)
        self._keep("output", output, twin_output)
        self._keep("loss", loss, twin_loss)
        self.graph = (through, twin_x, twin_loss)
        if second:
            modes = {"in its mode": None, "in training mode": True, "in evaluation mode": False}
            self.backward_again(modes[second])

    @rule(
        **BATCH_DRAWS,
        zero=st.booleans(),
        schedule=st.booleans(),
    )
    def train_step(
        self,
        size: int,
        again: bool,
        seed: int,
        through: str,
        inside: str,
        second: str,
        zero: bool,
        schedule: bool,
    ) -> None:
        """An iteration of a training loop: ``zero_grad`` (or not: gradients accumulated over
        two batches), forward, loss, backward (see ``forward_backward``), the optimizer's step
        and (or not) the schedule's."""
        if zero:
            self.zero_grad("optimizer")
        self.forward_backward(size, again, seed, through, inside, second)
        self.step()
        if schedule and self.scheduler is not None:
            self.schedule_step()

    @precondition(lambda self: self.graph is not None)
    @rule(mode=st.sampled_from([None, True, False]))
    def backward_again(self, mode: bool | None = None) -> None:
        """Backward once more after the last forward: the same input gradient, the parameter
        gradients accumulated once more (after ``train(mode)`` of the model, where ``mode`` is
        given: the backward of a forward is the backward of its mode)."""
        assert self.graph is not None
        if mode is not None:
            self.model.train(mode)
            self.twin.train(mode)
        through, twin_x, twin_loss = self.graph
        twin_x.grad = None
        twin_loss.backward(retain_graph=True)
        if through == "backward":
            input_grad = self.model.backward(self.criterion.backward())
            assert twin_x.grad is not None
            self._keep("input gradient, again", input_grad, twin_x.grad)
        else:
            self.model.backward_parameters(self.criterion.backward())

    @rule(
        size=st.integers(1, 17),
        again=st.booleans(),
        seed=st.integers(0, 2**16),
        inference=st.booleans(),
    )
    def forward(self, size: int, again: bool, seed: int, inference: bool) -> None:
        """A forward alone, in the mode the model is in (a batch norm in training mode updates
        its statistics)."""
        batch = self._start(size, again, seed)
        if batch is None:
            return
        x = batch[0]
        if inference:
            with torch.inference_mode():
                output = self.model(x)
        else:
            output = self.model(x)
        torch.manual_seed(seed)
        with torch.no_grad():
            twin_output = self.twin(x)
        self._keep("output of a forward alone", output, twin_output)

    # -- rules: training --------------------------------------------------------------------------

    @rule(through=st.sampled_from(["model", "optimizer"]))
    def zero_grad(self, through: str) -> None:
        if through == "model":
            self.model.zero_grad()
            self.twin.zero_grad(set_to_none=False)
        else:
            self.optimizer.zero_grad()
            self.twin_optimizer.zero_grad(set_to_none=False)

    @rule()
    def step(self) -> None:
        self.optimizer.step()
        self.twin_optimizer.step()
        self.graph = None

    @precondition(lambda self: self.scheduler is not None)
    @rule()
    def schedule_step(self) -> None:
        self.scheduler.step()
        self.twin_scheduler.step()

    @precondition(
        lambda self: (
            self.scheduler is None
            and not (
                isinstance(self.twin_optimizer, torch.optim.SGD)
                and self.life["hyper"]["momentum"] > 0
            )
        )
    )
    @rule(factor=st.sampled_from([0.25, 0.5, 2.0]))
    def set_rate(self, factor: float) -> None:
        """A learning rate set by hand (without a schedule, which would set its own; and not
        where the twin is PyTorch's SGD with momentum, whose steps would then part)."""
        rate = self.optimizer.lr * factor
        self.optimizer.lr = rate
        self.twin_optimizer.param_groups[0]["lr"] = rate

    @rule(
        name=st.sampled_from(["weight_decay", "momentum", "betas"]),
        value=st.sampled_from([0.0, 0.3, 0.6]),
    )
    def set_setting(self, name: str, value: float) -> None:
        """A hyper-parameter set between steps (where the optimizer has it): a weight decay of
        ``value / 10``, a momentum of ``value`` (one above 0 kept above 0: the state it needs
        stays), or betas ``(value + 0.3, 0.99)``."""
        if not hasattr(self.optimizer, name) or (
            name == "momentum" and not self.optimizer.momentum
        ):
            return
        new: Any = {
            "weight_decay": value / 10,
            "momentum": value or 0.9,
            "betas": (value + 0.3, 0.99),
        }[name]
        setattr(self.optimizer, name, new)
        self.twin_optimizer.param_groups[0][name] = new

    @rule(index=st.integers(0, 100), mode=st.booleans())
    def set_mode(self, index: int, mode: bool) -> None:
        """``train(mode)`` of the model or of one module in it."""
        paths = [path for path, _ in self.model.named_modules()]
        path = paths[index % len(paths)]
        self.model.get_submodule(path).train(mode)
        self.twin.get_submodule(path).train(mode)

    @rule(
        how=st.sampled_from(["norm", "value"]),
        limit=st.floats(0.01, 5.0),
        norm_type=st.sampled_from([2.0, 1.0, math.inf]),
    )
    def clip(self, how: str, limit: float, norm_type: float) -> None:
        if how == "value":
            nn.clip_grad_value_(self.model.parameters(), limit)
            torch.nn.utils.clip_grad_value_(self.twin.parameters(), limit)
            return
        norm = nn.clip_grad_norm_(self.model.parameters(), limit, norm_type)
        twin_norm = torch.nn.utils.clip_grad_norm_(self.twin.parameters(), limit, norm_type)
        self._keep("total norm", norm, twin_norm)

    @rule(
        how=st.sampled_from(["scale grad", "scale grads", "new grad", "new data", "scale data"]),
        index=st.integers(0, 100),
        factor=st.sampled_from([0.0, 0.5, -1.0, 2.0]),
        seed=st.integers(0, 2**16),
    )
    def edit(self, how: str, index: int, factor: float, seed: int) -> None:
        """Gradients scaled in place or replaced by new tensors; values replaced or scaled."""
        pairs = list(zip(self.model.parameters(), self.twin.parameters(), strict=True))
        parameter, twin_parameter = pairs[index % len(pairs)]
        new = torch.randn(parameter.shape, dtype=F64, generator=torch.Generator().manual_seed(seed))
        assert twin_parameter.grad is not None
        if how == "scale grad":
            parameter.grad.mul_(factor)
            twin_parameter.grad.mul_(factor)
        elif how == "scale grads":
            for parameter, twin_parameter in pairs:
                assert twin_parameter.grad is not None
                parameter.grad.mul_(factor)
                twin_parameter.grad.mul_(factor)
        elif how == "new grad":
            parameter.grad = new
            twin_parameter.grad = new.clone()
        else:
            self.graph = None
            with torch.no_grad():
                if how == "new data":
                    parameter.data = new
                    twin_parameter.copy_(new)
                else:
                    parameter.data.mul_(factor or 1.5)
                    twin_parameter.mul_(factor or 1.5)

    @rule(
        samples=st.integers(2, 24),
        size=st.integers(1, 17),
        seed=st.integers(0, 2**16),
        limit=st.one_of(st.none(), st.floats(0.05, 5.0)),
    )
    def fit_an_epoch(self, samples: int, size: int, seed: int, limit: float | None) -> None:
        """An epoch of :func:`minidl.train.fit` (its steps folded where the model is a chain of
        layers and activations), against the twin's loop over the same batches."""
        if any(isinstance(module, nn.BatchNorm1d) for module in self.model.modules()):
            size = max(size, 2)  # (no batch of one sample)
            samples += samples % size == 1
        x, y = self._batch(samples, seed)
        self.graph = None
        self._seed_masks(seed)
        history = fit(
            self.model,
            self.criterion,
            self.optimizer,
            x,
            y,
            epochs=1,
            batch_size=size,
            scheduler=self.scheduler,
            generator=torch.Generator().manual_seed(seed),
            max_grad_norm=limit,
        )
        self.twin.train()
        torch.manual_seed(seed)
        per_batch = self.scheduler is not None and self.scheduler.interval == "batch"
        losses = []
        shuffles = torch.Generator().manual_seed(seed)
        for x_batch, y_batch in BatchIterator(x, y, size, generator=shuffles):
            self.twin_optimizer.zero_grad(set_to_none=False)
            loss = torch_loss(self.criterion, self.twin(x_batch), y_batch)
            loss.backward()
            if limit is not None:
                torch.nn.utils.clip_grad_norm_(self.twin.parameters(), limit)
            self.twin_optimizer.step()
            losses.append(float(loss.detach()))
            if per_batch:
                self.twin_scheduler.step()
        if self.scheduler is not None and not per_batch:
            self.twin_scheduler.step()
        expected = sum(losses) / len(losses)
        assert math.isclose(history.train_loss[-1], expected, rel_tol=1e-10), (history, losses)

    # -- rules: state -----------------------------------------------------------------------------

    @rule()
    def take_snapshot(self) -> None:
        """The state dicts of the model, optimizer and schedule, kept to go back to."""
        # (deep copies of the twin's: PyTorch's state dicts hold the tensors themselves, and
        # its optimizer's load_state_dict keeps those given)
        self.snapshot = (
            [self.model.state_dict(), self.optimizer.state_dict()],
            [
                copy.deepcopy(self.twin.state_dict()),
                copy.deepcopy(self.twin_optimizer.state_dict()),
            ],
        )
        if self.scheduler is not None:
            self.snapshot[0].append(self.scheduler.state_dict())
            self.snapshot[1].append(copy.deepcopy(self.twin_scheduler.state_dict()))

    @precondition(lambda self: self.snapshot is not None)
    @rule()
    def go_back(self) -> None:
        """The snapshot's state dicts loaded (other values, rates and steps than the current
        ones; the gradients stay)."""
        assert self.snapshot is not None
        self.graph = None
        own, twins = self.snapshot
        for thing, state in zip((self.model, self.optimizer, self.scheduler), own, strict=False):
            thing.load_state_dict(state)
        twin_things = (self.twin, self.twin_optimizer, self.twin_scheduler)
        for thing, state in zip(twin_things, twins, strict=False):
            thing.load_state_dict(copy.deepcopy(state))

    @rule(
        into=st.sampled_from(["same", "same, kept", "fresh"]),
        seed=st.integers(0, 2**16),
        schedule_first=st.booleans(),
    )
    def reload(self, into: str, seed: int, schedule_first: bool) -> None:
        """The state dicts of the model, optimizer and schedule loaded into themselves, or into
        fresh ones (built with other values) that go on in their place."""
        self.graph = None
        state = self.model.state_dict(keep_vars=into == "same, kept")
        if into != "fresh":
            self.model.load_state_dict(state)
            self.optimizer.load_state_dict(self.optimizer.state_dict())
            if self.scheduler is not None:
                self.scheduler.load_state_dict(self.scheduler.state_dict())
            return
        model = _network(self.life, seed)
        self.twin, self.twin_optimizer, self.twin_scheduler = self._fresh_twin(model)
        model.load_state_dict(state)
        self._go_on_with(model, schedule_first)

    @rule(into=st.sampled_from(["same", "fresh"]), seed=st.integers(0, 2**16))
    def checkpoint(self, into: str, seed: int) -> None:
        self.graph = None
        path = Path(self.folder.name) / "life.ckpt"
        save_checkpoint(path, self.model, self.optimizer, self.scheduler)
        if into == "same":
            load_checkpoint(path, self.model, self.optimizer, self.scheduler)
            return
        model, optimizer, scheduler = self._minidl_trio(seed)
        self.twin, self.twin_optimizer, self.twin_scheduler = self._fresh_twin(model)
        load_checkpoint(path, model, optimizer, scheduler)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    @rule(
        how=st.sampled_from(
            ["deepcopy", "deepcopy the model", "pickle", "shallow copy", "through torch.nn"]
        ),
        schedule_first=st.booleans(),
    )
    def go_on_with_a_copy(self, how: str, schedule_first: bool) -> None:
        """Go on with a copy: of the model, optimizer and schedule together (a deep copy or a
        pickle), of the model alone (a deep copy, or one converted to ``torch.nn`` and back,
        with a new optimizer and schedule that load the old ones' state), or a shallow copy of
        the model (over the same parameters: the optimizer goes on, and so may a backward of the
        original's forward)."""
        if how == "shallow copy":
            self.model = copy.copy(self.model)
            self.twin = copy.copy(self.twin)
            return
        self.graph = None
        trio = (self.model, self.optimizer, self.scheduler)
        if how == "deepcopy":
            self.model, self.optimizer, self.scheduler = copy.deepcopy(trio)
        elif how == "pickle":
            self.model, self.optimizer, self.scheduler = pickle.loads(pickle.dumps(trio))
        else:
            if how == "through torch.nn":  # (the values, buffers and modes; no gradients)
                model = from_torch(to_torch(self.model))
                for module in model.modules():  # (a dropout's own generator is not converted)
                    if isinstance(module, nn.Dropout) and self.life["own_generator"]:
                        module.generator = torch.Generator()
                self.twin.zero_grad(set_to_none=False)
            else:
                model = copy.deepcopy(self.model)
            self._go_on_with(model, schedule_first)
        # (a deep copy of a torch.nn parameter leaves its gradient behind)
        grads = [parameter.grad for parameter in self.twin.parameters()]
        twin = copy.deepcopy(self.twin)
        optimizer, scheduler = self._twin_pair(twin)
        for parameter, grad in zip(twin.parameters(), grads, strict=True):
            parameter.grad = grad
        optimizer.load_state_dict(self.twin_optimizer.state_dict())
        if scheduler is not None:
            scheduler.load_state_dict(self.twin_scheduler.state_dict())
        self.twin, self.twin_optimizer, self.twin_scheduler = twin, optimizer, scheduler

    @rule(
        how=st.sampled_from(
            [
                "to float64",
                "double",
                "cpu",
                "float32 and back",
                "float and double",
                "like tensors",
                "float16 and back",
                "bfloat16 and back",
            ]
        )
    )
    def cast(self, how: str) -> None:
        """``to(torch.float64)``, ``double()`` or ``cpu()`` (nothing to do), or a round trip
        through float32, float16 or bfloat16 (the values, gradients and statistics rounded to
        it, on both sides; the optimizers' state stays as it was)."""
        moves = {
            "to float64": lambda module: module.to(F64),
            "double": lambda module: module.double(),
            "cpu": lambda module: module.cpu(),
            "float32 and back": lambda module: module.to(torch.float32).to(F64),
            "float and double": lambda module: module.float().double(),
            "like tensors": lambda module: module.to(torch.zeros(1)).to(torch.zeros(1, dtype=F64)),
            "float16 and back": lambda module: module.half().to(F64),
            "bfloat16 and back": lambda module: module.bfloat16().to(F64),
        }
        moves[how](self.model)
        moves[how](self.twin)
        if how not in ("to float64", "double", "cpu"):
            self.graph = None

    # -- invariants -------------------------------------------------------------------------------

    @invariant()
    def parameters_agree(self) -> None:
        named = list(self.model.named_parameters())
        twin_named = list(self.twin.named_parameters())
        assert [name for name, _ in named] == [name for name, _ in twin_named]
        # Below a batch norm, a gradient may be 0 up to rounding (the batch norm's input
        # gradient sums to 0 over the batch: so does a bias's before it, through an activation
        # of one slope over the batch): there, gradients are measured against the largest.
        largest = 0.0
        if self.life["kind"] == "batch-norm":
            largest = max(float(abs(p.grad).max()) for _, p in twin_named)
        for (name, parameter), (_, twin_parameter) in zip(named, twin_named, strict=True):
            assert parameter.data.dtype == twin_parameter.dtype == F64
            assert_close(parameter.data, twin_parameter, what=name)
            grad, twin_grad = parameter.grad, twin_parameter.grad
            assert twin_grad is not None
            scale = max(float(twin_grad.abs().max()), largest)
            if scale > float(twin_grad.abs().max()):
                error = float((grad - twin_grad).abs().max()) / scale
                assert error <= 1e-10, f"{name}'s gradient: error {error:.3g} of the largest"
            else:
                assert_close(grad, twin_grad, what=f"{name}'s gradient")

    @invariant()
    def buffers_agree(self) -> None:
        buffers = dict(self.model.named_buffers())
        twin_buffers = dict(self.twin.named_buffers())
        assert list(buffers) == list(twin_buffers)
        for name, buffer in buffers.items():
            if buffer.is_floating_point():
                assert_close(buffer, twin_buffers[name], what=name)
            else:
                assert torch.equal(buffer, twin_buffers[name]), name

    @invariant()
    def rates_and_modes_agree(self) -> None:
        rate = self.twin_optimizer.param_groups[0]["lr"]
        assert math.isclose(self.optimizer.lr, rate, rel_tol=1e-12), (self.optimizer.lr, rate)
        modes = {path: module.training for path, module in self.model.named_modules()}
        twin_modes = {path: module.training for path, module in self.twin.named_modules()}
        assert modes == twin_modes

    @invariant()
    def returned_tensors_kept(self) -> None:
        for what, returned, expected in self.returned:
            assert_close(returned, expected, what=f"{what} returned before")


ModelLife.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None, database=None
)
TestModelLife = ModelLife.TestCase
