"""The life of a stack of R models, its optimizers and schedules, rule by rule in any order
(hypothesis's stateful testing), against R single models trained one by one.

A drawn life is a stack (:func:`minidl.nn.stack_models`) of R = 1 to 4 float64 networks of one
architecture (an input, one or two hidden layers and an output, each 1 to 5 wide, each layer
with or without a bias; every model with the same activations or each with its own, which
stack as a :class:`~minidl.nn.StackedActivation`), laid out by layer or by model, and a loss
(one for all, or one per model: a :class:`~minidl.nn.StackedLoss`). Its optimizers are one of:

- ``"whole"``: one optimizer over the whole stack (every model with the same settings and
  schedule);
- ``"views"``: one per model, or per group of consecutive models (2, 3 or 4), over
  :func:`minidl.nn.model_parameters` (each its own kind of optimizer, settings, rate and
  schedule);
- ``"flat"`` (laid out by model): likewise, each over the one flat parameter of its models
  (:func:`minidl.nn.flat_model_parameters`).

Its twins are R plain minidl models started from the same weights, each with its own optimizer
and schedule of the kind, settings and schedule of the stack's optimizer of that model, and its
own loss. The rules, drawn in any order:

- a forward, loss and backward (or ``backward_parameters``; plain or in inference mode) of the
  stack on R batches of 1 to 9 samples, one per model (often of the last size: per-shape
  caches, and not), and of each twin on its own; a second backward at once or later; a
  training loop's iteration; a forward alone; an epoch of :func:`minidl.rounds.fit_rounds`
  (with or without ``max_grad_norm`` and validation sets) against :func:`minidl.train.fit` of
  each twin with the same data, seeds, optimizer state and schedule;
  :func:`minidl.rounds.stacked_error_rates` against each twin's error rate;
- ``zero_grad`` of the stack, of every optimizer or of one model's, the steps of every optimizer
  or of one model's, the schedules' steps (every one or one model's), a rate or another setting
  set by hand on one model's optimizer (and so on its twins', one or several), ``train()`` /
  ``eval()`` of the
  stack or of one of its layers, each model's gradients clipped to its norm (2, 1 or inf, by
  :func:`minidl.nn.clip_grad_norm_` on its parameters in the stack, or to a 2-norm by the
  per-model clipping of ``fit_rounds``) or by value; a stacked gradient or value scaled in
  place or replaced by a new tensor;
- the state dicts of the stack, optimizers and schedules loaded into the same objects or into a
  fresh stack (of other values) with fresh optimizers and schedules, or a snapshot of them taken
  earlier; a checkpoint saved and loaded likewise (with the optimizer and schedule where one
  optimizer holds the whole stack: a checkpoint takes no optimizer over views of the model's
  parameters, whose states go through their state dicts); the stack split into single models
  (:func:`minidl.nn.unstack_model`) and joined again (in the same order, or another where each
  model has optimizers of its own), with new optimizers loading the old ones' state; a deep
  copy or a pickle of the stack, optimizers, schedules and loss together, a shallow copy of the
  stack; ``to(torch.float64)``, ``double()``, ``cpu()``, and round trips through float32,
  float16 and bfloat16 (optimizers over views of the stack made again, as the stack's tensors
  are replaced, on a stack laid out by model again where they are flat).

After every rule each stacked model's parameters and gradients equal its twin's (1e-12
relative), as do its learning rate (exactly), its layers' modes and (where no second backward
may come) its output on a batch, the padding of a stack laid out by model is zero, values and
gradients, each unstacked model equals its twin, and the outputs, losses, input gradients and
norms the rules returned still equal the twins' (no later call writes into a tensor returned).

What the twins do as the stack does, by design: a stack or a model made anew
(:func:`minidl.nn.stack_models`, :func:`minidl.nn.unstack_model`) has zero gradients and the
modes of the modules it was made from (a :class:`~minidl.nn.StackedActivation` holds each
model's activation in its mode), and a fresh stack of fresh models is in training mode. So the
twins' gradients are zeroed where a rule makes the stack anew, and their modes set to training
where it is fresh (``fit_rounds`` copies the last batch's gradients back into its models, which
the rule gives back to the new stack, and a rule that makes a stack only to lay it out again
gives it the gradients of the old one).
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

from minidl import nn, optim
from minidl.checkpoint import load_checkpoint, save_checkpoint
from minidl.nn._stack_clip import StackClip
from minidl.optim.lr_scheduler import LRScheduler
from minidl.optim.optimizer import Optimizer
from minidl.rounds import PerModel, fit_rounds, stacked_error_rates
from minidl.train import error_rate, fit
from tests.helpers import F64, assert_close
from tests.optimizer_twins import OPTIMIZERS, draw_settings

pytestmark = pytest.mark.filterwarnings(
    # (a schedule stepped before any step of its optimizer: a rule order drawn on purpose)
    "ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`"
)

#: The relative error allowed between a stacked model and its twin.
TOL = 1e-12
#: How the stack's parameters are given to its optimizers (see the module's docstring).
MODES = ["whole", "views", "flat"]
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


@st.composite
def lives(draw: st.DrawFn) -> dict[str, Any]:
    """The settings of a life: R, the layout, the architecture, losses, optimizers, schedules."""
    models = draw(st.integers(1, 4))
    layout = draw(st.sampled_from(["layer", "model"]))
    mode = draw(st.sampled_from(MODES if layout == "model" else MODES[:2]))
    # The models of each optimizer: all of them for "whole"; else a divisor of R.
    group = models
    if mode != "whole":
        group = draw(st.sampled_from([size for size in range(1, 5) if models % size == 0]))
    sizes = [draw(st.integers(1, 3))]
    sizes += [draw(st.integers(1, 5)) for _ in range(draw(st.integers(1, 2)))]
    sizes.append(draw(st.integers(1, 3)))
    hidden = len(sizes) - 2
    names = sorted(nn.ACTIVATIONS)
    shared = [draw(st.sampled_from(names)) for _ in range(hidden)]
    activations = [
        shared if draw(st.booleans()) else [draw(st.sampled_from(names)) for _ in range(hidden)]
        for _ in range(models)
    ]
    loss = draw(st.sampled_from(LOSSES))
    losses = [loss if draw(st.booleans()) else draw(st.sampled_from(LOSSES)) for _ in range(models)]
    optimizers = models // group
    names_drawn = [draw(st.sampled_from(sorted(OPTIMIZERS))) for _ in range(optimizers)]
    return {
        "models": models,
        "layout": layout,
        "mode": mode,
        "group": group,
        "sizes": sizes,
        "biases": [draw(st.booleans()) for _ in range(len(sizes) - 1)],
        "activations": activations,
        "losses": losses,
        # A StackedLoss even where every model has the same loss (runs of one model).
        "stacked_loss": draw(st.booleans()),
        "optimizers": [(name, draw_settings(draw, name)) for name in names_drawn],
        "schedules": [
            draw(st.one_of(st.none(), st.sampled_from(SCHEDULES))) for _ in range(optimizers)
        ],
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def _schedule(kind: str | None, optimizer: Optimizer, lr: float) -> LRScheduler | None:
    """Schedule ``kind`` on ``optimizer`` (of initial rate ``lr``), or none."""
    if kind is None:
        return None
    if kind == "sequence":  # a warm-up, then a cosine from step 3
        parts = [_schedule(part, optimizer, lr) for part in ("warmup", "cosine")]
        return optim.SequentialSchedule(optimizer, parts, milestones=[3])  # type: ignore[arg-type]
    makers: dict[str, Any] = {
        "step": lambda: optim.StepDecay(optimizer, 3, gamma=0.5),
        "exponential": lambda: optim.ExponentialDecay(optimizer, 0.9),
        "cosine": lambda: optim.CosineAnnealing(optimizer, 7, lr / 10),
        "restarts": lambda: optim.CosineAnnealingWarmRestarts(optimizer, 2, 2, lr / 10),
        "cyclic": lambda: optim.CyclicLR(optimizer, lr, 4 * lr, 3, mode="triangular2"),
        "one-cycle": lambda: optim.OneCycle(optimizer, 4 * lr, total_steps=1000),
        "warmup": lambda: optim.LinearWarmup(optimizer, 4, start_factor=0.2),
    }
    schedule: LRScheduler = makers[kind]()
    return schedule


def _loss(kind: tuple[str, Any]) -> nn.Loss:
    name, reduction = kind
    return nn.CrossEntropyLoss(reduction) if name == "cross-entropy" else nn.MSELoss(reduction)


class StackLife(RuleBasedStateMachine):
    """A stack, its optimizers and schedules, and R twins, living through the rules drawn."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        # What the rules returned and what the twins gave for it: checked after every rule.
        self.returned: list[tuple[str, Tensor, Tensor]] = []
        # How the last forward was differentiated, while a second backward of it means the
        # same on both sides (the same stack, twins and losses since).
        self.graph: str | None = None
        self.last_batch = 1
        self.snapshot: tuple[list[Any], list[Any]] | None = None

    def teardown(self) -> None:
        self.folder.cleanup()

    # -- building ---------------------------------------------------------------------------------

    @initialize(life=lives())
    def build(self, life: dict[str, Any]) -> None:
        self.life = life
        self.rounds = life["models"]
        models = self._models(life["seed"])
        self.twins = [copy.deepcopy(model) for model in models]
        self.stack = nn.stack_models(models, layout=life["layout"])
        self.criterion = self._criterion()
        self.twin_criteria = [_loss(kind) for kind in life["losses"]]
        self.optimizers, self.schedules = self._optimizers(self.stack)
        self.twin_optimizers: list[Optimizer] = []
        self.twin_schedules: list[LRScheduler | None] = []
        for index, twin in enumerate(self.twins):
            name, hyper = self._settings(index)
            optimizer = OPTIMIZERS[name][0](twin.parameters(), **hyper)
            self.twin_optimizers.append(optimizer)
            kind = self.life["schedules"][self._owner(index)]
            self.twin_schedules.append(_schedule(kind, optimizer, hyper["lr"]))

    def _models(self, seed: int) -> list[nn.Sequential]:
        generator = torch.Generator().manual_seed(seed)
        sizes, biases = self.life["sizes"], self.life["biases"]
        models = []
        for names in self.life["activations"]:
            layers: list[nn.Module] = []
            for position, bias in enumerate(biases):
                n_in, n_out = sizes[position], sizes[position + 1]
                layers.append(nn.Linear(n_in, n_out, bias=bias, dtype=F64, generator=generator))
                if position < len(names):
                    layers.append(nn.activation(names[position]))
            models.append(nn.Sequential(*layers))
        return models

    def _criterion(self) -> nn.Loss:
        losses = self.life["losses"]
        if not self.life["stacked_loss"] and len(set(losses)) == 1:
            return _loss(losses[0])
        runs: list[tuple[nn.Loss, int]] = []
        for index, kind in enumerate(losses):
            if runs and index % 2 and losses[index - 1] == kind:  # (runs of one and of two)
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((_loss(kind), 1))
        return nn.StackedLoss(runs)

    def _owner(self, index: int) -> int:
        """The index of the stack's optimizer (and schedule) of model ``index``."""
        return index // int(self.life["group"])

    def _settings(self, index: int) -> tuple[str, dict[str, Any]]:
        name, hyper = self.life["optimizers"][self._owner(index)]
        return name, dict(hyper)

    def _given(self, stack: nn.Sequential) -> list[list[nn.Parameter]]:
        """The parameters of each of the stack's optimizers, as the mode gives them."""
        mode, group = self.life["mode"], self.life["group"]
        if mode == "whole":
            return [list(stack.parameters())]
        given = []
        for start in range(0, self.rounds, group):
            index = start if group == 1 else slice(start, start + group)
            if mode == "views":
                given.append(nn.model_parameters(stack, index))
            else:
                given.append([nn.flat_model_parameters(stack, index)])
        return given

    def _optimizers(self, stack: nn.Sequential) -> tuple[list[Optimizer], list[LRScheduler | None]]:
        optimizers: list[Optimizer] = []
        schedules: list[LRScheduler | None] = []
        for index, parameters in enumerate(self._given(stack)):
            name, hyper = self.life["optimizers"][index]
            optimizer = OPTIMIZERS[name][0](parameters, **hyper)
            optimizers.append(optimizer)
            schedules.append(_schedule(self.life["schedules"][index], optimizer, hyper["lr"]))
        return optimizers, schedules

    def _go_on_with(
        self,
        stack: nn.Sequential,
        optimizer_states: list[Any],
        schedule_states: list[Any],
        schedule_first: bool = False,
    ) -> None:
        """Go on with ``stack`` and new optimizers and schedules on it that load the states
        given (the schedules built before or after their optimizers load)."""
        optimizers, schedules = [], []
        for index, parameters in enumerate(self._given(stack)):
            name, hyper = self.life["optimizers"][index]
            optimizer = OPTIMIZERS[name][0](parameters, **hyper)
            kind = self.life["schedules"][index]
            schedule = _schedule(kind, optimizer, hyper["lr"]) if schedule_first else None
            optimizer.load_state_dict(optimizer_states[index])
            if not schedule_first:
                schedule = _schedule(kind, optimizer, hyper["lr"])
            if schedule is not None:
                schedule.load_state_dict(schedule_states[index])
            optimizers.append(optimizer)
            schedules.append(schedule)
        self.stack, self.optimizers, self.schedules = stack, optimizers, schedules
        self.graph = None

    def _states(self) -> tuple[list[Any], list[Any]]:
        return (
            [optimizer.state_dict() for optimizer in self.optimizers],
            [None if s is None else s.state_dict() for s in self.schedules],
        )

    def _relaid(self, stack: nn.Sequential) -> nn.Sequential:
        """A new stack of the models of ``stack``, in the life's layout, holding their values,
        gradients and (made so) modes."""
        joined = nn.stack_models(
            [nn.unstack_model(stack, index) for index in range(self.rounds)],
            layout=self.life["layout"],
        )
        for index in range(self.rounds):
            new = nn.model_parameters(joined, index)
            for parameter, source in zip(new, nn.model_parameters(stack, index), strict=True):
                parameter.grad.copy_(source.grad)
        return joined

    def _twins_anew(self, fresh: bool) -> None:
        """The twins as the models of a stack made anew: gradients zero, in the modes they had,
        or in training mode (``fresh``, where the stack is made of fresh models)."""
        for twin in self.twins:
            twin.zero_grad()
            if fresh:
                twin.train()

    def _per_optimizer(self) -> bool:
        """Whether each model has an optimizer of its own."""
        return bool(self.life["mode"] != "whole" and self.life["group"] == 1)

    # -- data -------------------------------------------------------------------------------------

    def _targets(self, index: int, size: int, generator: torch.Generator) -> Tensor:
        return torch.randint(0, self.life["sizes"][-1], (size,), generator=generator)

    def _batch(self, size: int, seed: int) -> tuple[Tensor, Tensor]:
        """R batches of ``size`` samples, one per model: ``(R, size, in)`` and ``(R, size)``
        class indices, or ``(R, size, out)`` rows where every model's loss is MSE's (odd
        seeds)."""
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(self.rounds, size, self.life["sizes"][0], dtype=F64, generator=generator)
        outputs = self.life["sizes"][-1]
        if all(kind[0] == "mse" for kind in self.life["losses"]) and seed % 2:
            return x, torch.randn(self.rounds, size, outputs, dtype=F64, generator=generator)
        return x, torch.randint(0, outputs, (self.rounds, size), generator=generator)

    def _keep(self, what: str, returned: Tensor, expected: Tensor) -> None:
        assert_close(returned, expected, TOL, what=what)
        self.returned = [*self.returned[-7:], (what, returned, expected.detach().clone())]

    # -- rules: computing -------------------------------------------------------------------------

    @rule(
        size=st.integers(1, 9),
        again=st.booleans(),
        seed=st.integers(0, 2**16),
        through=st.sampled_from(["backward", "backward_parameters"]),
        inference=st.booleans(),
        second=st.booleans(),
    )
    def forward_backward(
        self, size: int, again: bool, seed: int, through: str, inference: bool, second: bool
    ) -> None:
        """Forward, loss and backward of the stack on a batch per model, and of each twin on
        its own; a second backward at once, or not (the rule ``backward_again``)."""
        size = self.last_batch if again else size
        self.last_batch = size
        x, y = self._batch(size, seed)
        with torch.inference_mode() if inference else contextlib.nullcontext():
            output = self.stack(x)
            losses = self.criterion(output, y)
            if through == "backward":
                input_grad = self.stack.backward(self.criterion.backward())
            else:
                self.stack.backward_parameters(self.criterion.backward())
        assert losses.shape == (self.rounds,)
        for index, (twin, criterion) in enumerate(zip(self.twins, self.twin_criteria, strict=True)):
            twin_output = twin(x[index])
            twin_loss = criterion(twin_output, y[index])
            self._keep(f"model {index}'s output", output[index], twin_output)
            self._keep(f"model {index}'s loss", losses[index], twin_loss)
            if through == "backward":
                twin_grad = twin.backward(criterion.backward())
                self._keep(f"model {index}'s input gradient", input_grad[index], twin_grad)
            else:
                twin.backward_parameters(criterion.backward())
        self.graph = through
        if second:
            self.backward_again()

    @precondition(lambda self: self.graph is not None)
    @rule()
    def backward_again(self) -> None:
        """Backward once more after the last forward: the parameter gradients accumulate once
        more, with the values of now (both sides read them at the backward)."""
        if self.graph == "backward":
            input_grad = self.stack.backward(self.criterion.backward())
            for index, (twin, criterion) in enumerate(
                zip(self.twins, self.twin_criteria, strict=True)
            ):
                twin_grad = twin.backward(criterion.backward())
                self._keep(f"model {index}'s input gradient, again", input_grad[index], twin_grad)
        else:
            self.stack.backward_parameters(self.criterion.backward())
            for twin, criterion in zip(self.twins, self.twin_criteria, strict=True):
                twin.backward_parameters(criterion.backward())

    @rule(
        size=st.integers(1, 9),
        again=st.booleans(),
        seed=st.integers(0, 2**16),
        zero=st.booleans(),
        schedule=st.booleans(),
    )
    def train_step(self, size: int, again: bool, seed: int, zero: bool, schedule: bool) -> None:
        """An iteration of a training loop: ``zero_grad`` (or not), forward, loss, backward,
        every optimizer's step and (or not) every schedule's."""
        if zero:
            self.zero_grad("optimizers", None)
        self.forward_backward(size, again, seed, "backward", False, False)
        self.step(None)
        if schedule:
            self.schedule_step(None)

    @rule(size=st.integers(1, 9), seed=st.integers(0, 2**16), inference=st.booleans())
    def forward(self, size: int, seed: int, inference: bool) -> None:
        x, _ = self._batch(size, seed)
        self.graph = None
        with torch.inference_mode() if inference else contextlib.nullcontext():
            output = self.stack(x)
        for index, twin in enumerate(self.twins):
            self._keep(f"model {index}'s output alone", output[index], twin(x[index]))

    @rule(samples=st.integers(1, 12), seed=st.integers(0, 2**16))
    def error_rates(self, samples: int, seed: int) -> None:
        """:func:`minidl.rounds.stacked_error_rates` is each twin's error rate on its set."""
        x, y = self._batch(samples, seed - seed % 2)  # (class indices)
        self.graph = None
        rates = stacked_error_rates(self.stack, x, y)
        assert rates == [
            error_rate(twin, x[index], y[index]) for index, twin in enumerate(self.twins)
        ]

    # -- rules: training --------------------------------------------------------------------------

    def _of(self, index: int | None) -> tuple[list[int], list[int]]:
        """The stack's optimizers (by index) and the twins of the optimizer of model
        ``index``, or all of them (``None``)."""
        if index is None:
            return list(range(len(self.optimizers))), list(range(self.rounds))
        owner = self._owner(index % self.rounds)
        return [owner], [twin for twin in range(self.rounds) if self._owner(twin) == owner]

    @rule(through=st.sampled_from(["stack", "optimizers"]), index=st.none() | st.integers(0, 3))
    def zero_grad(self, through: str, index: int | None) -> None:
        """``zero_grad`` of the stack (and of each twin), or of every optimizer or of one
        model's (and of its twins')."""
        if through == "stack":
            self.stack.zero_grad()
            for twin in self.twins:
                twin.zero_grad()
            return
        owners, twins = self._of(index)
        for owner in owners:
            self.optimizers[owner].zero_grad()
        for twin_index in twins:
            self.twin_optimizers[twin_index].zero_grad()

    @rule(index=st.none() | st.integers(0, 3))
    def step(self, index: int | None) -> None:
        """Every optimizer's step, or one model's (and its twins')."""
        owners, twins = self._of(index)
        for owner in owners:
            self.optimizers[owner].step()
        for twin_index in twins:
            self.twin_optimizers[twin_index].step()

    @rule(index=st.none() | st.integers(0, 3))
    def schedule_step(self, index: int | None) -> None:
        """Every schedule's step, or one model's (and its twins')."""
        owners, twins = self._of(index)
        schedules = [self.schedules[owner] for owner in owners]
        schedules += [self.twin_schedules[twin_index] for twin_index in twins]
        for schedule in schedules:
            if schedule is not None:
                schedule.step()

    @rule(index=st.integers(0, 3), factor=st.sampled_from([0.25, 0.5, 2.0]))
    def set_rate(self, index: int, factor: float) -> None:
        """A learning rate set by hand on one model's optimizer (or the one optimizer, and so
        every twin's), where it has no schedule (which would set its own)."""
        index %= self.rounds
        owner = self._owner(index)
        if self.schedules[owner] is not None:
            return
        rate = self.optimizers[owner].lr * factor
        self.optimizers[owner].lr = rate
        for twin_index, optimizer in enumerate(self.twin_optimizers):
            if self._owner(twin_index) == owner:
                optimizer.lr = rate

    @rule(
        index=st.integers(0, 3),
        name=st.sampled_from(["weight_decay", "momentum", "betas"]),
        value=st.sampled_from([0.0, 0.3, 0.6]),
    )
    def set_setting(self, index: int, name: str, value: float) -> None:
        """A hyper-parameter set between steps on one model's optimizer (or the one
        optimizer), where it has it: a weight decay of ``value / 10``, a momentum of ``value``
        (one above 0 kept above 0), or betas ``(value + 0.3, 0.99)``."""
        owner = self._owner(index % self.rounds)
        optimizer = self.optimizers[owner]
        if not hasattr(optimizer, name) or (name == "momentum" and not getattr(optimizer, name)):
            return
        new: Any = {
            "weight_decay": value / 10,
            "momentum": value or 0.9,
            "betas": (value + 0.3, 0.99),
        }[name]
        setattr(optimizer, name, new)
        for twin_index, twin_optimizer in enumerate(self.twin_optimizers):
            if self._owner(twin_index) == owner:
                setattr(twin_optimizer, name, new)

    @rule(index=st.integers(0, 100), mode=st.booleans())
    def set_mode(self, index: int, mode: bool) -> None:
        """``train(mode)`` of the stack or of one of its layers (of each twin's likewise)."""
        paths = [path for path, _ in self.stack.named_modules() if "." not in path]
        path = paths[index % len(paths)]
        self.stack.get_submodule(path).train(mode)
        for twin in self.twins:
            twin.get_submodule(path).train(mode)

    @rule(
        how=st.sampled_from(["norm", "stack clip", "value"]),
        limit=st.floats(0.01, 5.0),
        norm_type=st.sampled_from([2.0, 1.0, math.inf]),
    )
    def clip(self, how: str, limit: float, norm_type: float) -> None:
        """Each model's gradients clipped to its own norm (by ``clip_grad_norm_`` on its
        parameters in the stack, or by ``fit_rounds``'s clipping of every model at once, to a
        2-norm), or every gradient by value."""
        if how == "value":
            nn.clip_grad_value_(self.stack.parameters(), limit)
            for twin in self.twins:
                nn.clip_grad_value_(twin.parameters(), limit)
            return
        if how == "stack clip":
            flat, group = self.life["mode"] == "flat", self.life["group"]
            # (each optimizer holds what it was given)
            holders = [
                (f"optimizer {index}", index * group, (index + 1) * group, o.params, o.params)
                for index, o in enumerate(self.optimizers)
            ]
            StackClip(self.stack, limit, holders, flat=flat, where="test")()
            for twin in self.twins:
                nn.clip_grad_norm_(twin.parameters(), limit)
            return
        for index, twin in enumerate(self.twins):
            norm = nn.clip_grad_norm_(nn.model_parameters(self.stack, index), limit, norm_type)
            twin_norm = nn.clip_grad_norm_(twin.parameters(), limit, norm_type)
            self._keep(f"model {index}'s norm", norm, twin_norm)

    @rule(
        how=st.sampled_from(["scale grad", "new grad", "new data", "scale data"]),
        index=st.integers(0, 100),
        factor=st.sampled_from([0.0, 0.5, -1.0, 2.0]),
        seed=st.integers(0, 2**16),
    )
    def edit(self, how: str, index: int, factor: float, seed: int) -> None:
        """A stacked gradient or value scaled in place, or replaced by a new tensor (and so
        each model's in its twin); optimizers over views of the stack are then made again, as
        its tensors are new ones (on a stack laid out by model again, for flat ones)."""
        parameters = list(self.stack.parameters())
        position = index % len(parameters)
        parameter = parameters[position]
        twin_parameters = [list(twin.parameters())[position] for twin in self.twins]
        generator = torch.Generator().manual_seed(seed)
        new = torch.randn(parameter.data.shape, dtype=F64, generator=generator)
        if how == "scale grad":
            parameter.grad.mul_(factor)
        elif how == "scale data":
            parameter.data.mul_(factor or 1.5)
        elif how == "new grad":
            parameter.grad = new
        else:
            parameter.data = new
        for model, twin_parameter in enumerate(twin_parameters):
            if how == "scale grad":
                twin_parameter.grad.mul_(factor)
            elif how == "scale data":
                twin_parameter.data.mul_(factor or 1.5)
            elif how == "new grad":
                twin_parameter.grad = new[model].clone()
            else:
                twin_parameter.data = new[model].clone()
        if how.startswith("new") and self.life["mode"] != "whole":
            self._made_again()

    def _made_again(self) -> None:
        """Optimizers over views of the stack made again on its tensors of now, loading the
        old ones' states (on a stack laid out by model again, for flat ones)."""
        optimizer_states, schedule_states = self._states()
        stack = self._relaid(self.stack) if self.life["mode"] == "flat" else self.stack
        self._go_on_with(stack, optimizer_states, schedule_states)

    @rule(
        samples=st.integers(1, 12),
        size=st.integers(1, 12),
        seed=st.integers(0, 2**16),
        limit=st.one_of(st.none(), st.floats(0.05, 5.0)),
        validation=st.booleans(),
    )
    def fit_an_epoch(
        self, samples: int, size: int, seed: int, limit: float | None, validation: bool
    ) -> None:
        """An epoch of :func:`minidl.rounds.fit_rounds` on the stack's models (unstacked), its
        optimizers and schedules loading the stack's, against :func:`minidl.train.fit` of each
        twin with its own data, shuffles, optimizer and schedule; the stack goes on as made
        from the trained models, with those optimizers and schedules."""
        x, y = self._batch(samples, seed)
        x_val, y_val = self._batch(5, seed - seed % 2 + 2)
        models = [nn.unstack_model(self.stack, index) for index in range(self.rounds)]
        for index, model in enumerate(models):
            for parameter, source in zip(
                model.parameters(), nn.model_parameters(self.stack, index), strict=True
            ):
                parameter.grad.copy_(source.grad)
        optimizer_states, schedule_states = self._states()
        built: list[Optimizer] = []
        made: list[LRScheduler | None] = []

        def make(index: int, parameters: list[nn.Parameter]) -> Optimizer:
            name, hyper = self.life["optimizers"][index]
            optimizer: Optimizer = OPTIMIZERS[name][0](parameters, **hyper)
            optimizer.load_state_dict(optimizer_states[index])
            built.append(optimizer)
            return optimizer

        def make_schedule(optimizer: Optimizer) -> LRScheduler | None:
            index = next(i for i, other in enumerate(built) if other is optimizer)
            lr = self.life["optimizers"][index][1]["lr"]
            schedule = _schedule(self.life["schedules"][index], optimizer, lr)
            if schedule is not None:
                schedule.load_state_dict(schedule_states[index])
            made.append(schedule)
            return schedule

        def make_whole(stack: nn.Sequential) -> Optimizer:
            return make(0, list(stack.parameters()))

        make_optimizer: Any = PerModel(
            make, group=self.life["group"], flat=self.life["mode"] == "flat"
        )
        if self.life["mode"] == "whole":
            make_optimizer = make_whole
        histories = fit_rounds(
            models,
            self.criterion,
            make_optimizer,
            [(x[index], y[index]) for index in range(self.rounds)],
            epochs=1,
            batch_size=size,
            generators=[torch.Generator().manual_seed(seed + r) for r in range(self.rounds)],
            make_scheduler=make_schedule,
            validation_sets=[(x_val[r], y_val[r]) for r in range(self.rounds)]
            if validation
            else None,
            max_grad_norm=limit,
        )
        for index, (twin, history) in enumerate(zip(self.twins, histories, strict=True)):
            expected = fit(
                twin,
                self.twin_criteria[index],
                self.twin_optimizers[index],
                x[index],
                y[index],
                epochs=1,
                batch_size=size,
                scheduler=self.twin_schedules[index],
                validation=(x_val[index], y_val[index]) if validation else None,
                generator=torch.Generator().manual_seed(seed + index),
                max_grad_norm=limit,
            )
            assert history.lr == expected.lr
            assert history.batch_lr == expected.batch_lr
            if validation:
                assert history.validation_error == expected.validation_error
            else:
                assert math.isnan(history.validation_error[0])
                assert math.isnan(expected.validation_error[0])
            assert history.train_loss == pytest.approx(expected.train_loss, rel=TOL)
            for (name, parameter), twin_parameter in zip(
                models[index].named_parameters(), twin.parameters(), strict=True
            ):
                what = f"model {index}'s {name} after fit_rounds"
                assert_close(parameter.data, twin_parameter.data, TOL, what=what)
                assert_close(parameter.grad, twin_parameter.grad, TOL, what=f"{what}, gradient")
            assert model_modes(models[index]) == model_modes(twin)
        # The stack made from the trained models, given their gradients, goes on with the
        # optimizers and schedules fit_rounds trained with.
        stack = nn.stack_models(models, layout=self.life["layout"])
        for index, model in enumerate(models):
            for parameter, source in zip(
                nn.model_parameters(stack, index), model.parameters(), strict=True
            ):
                parameter.grad.copy_(source.grad)
        self._go_on_with(
            stack,
            [optimizer.state_dict() for optimizer in built],
            [None if s is None else s.state_dict() for s in made],
        )

    # -- rules: state -----------------------------------------------------------------------------

    @rule()
    def take_snapshot(self) -> None:
        """The state dicts of the stack, optimizers and schedules, and of the twins'."""
        self.snapshot = (
            [self.stack.state_dict(), *self._states()],
            [
                [twin.state_dict() for twin in self.twins],
                [optimizer.state_dict() for optimizer in self.twin_optimizers],
                [None if s is None else s.state_dict() for s in self.twin_schedules],
            ],
        )

    @precondition(lambda self: self.snapshot is not None)
    @rule()
    def go_back(self) -> None:
        """The snapshot's state dicts loaded (the gradients stay)."""
        assert self.snapshot is not None
        (stack_state, optimizer_states, schedule_states), twins = self.snapshot
        self.stack.load_state_dict(stack_state)
        for optimizer, state in zip(self.optimizers, optimizer_states, strict=True):
            optimizer.load_state_dict(state)
        for schedule, state in zip(self.schedules, schedule_states, strict=True):
            if schedule is not None:
                schedule.load_state_dict(state)
        everything: list[list[Any]] = [self.twins, self.twin_optimizers, self.twin_schedules]
        for things, states in zip(everything, twins, strict=True):
            for thing, state in zip(things, states, strict=True):
                if thing is not None:
                    thing.load_state_dict(state)

    @rule(
        into=st.sampled_from(["same", "same, kept", "fresh"]),
        seed=st.integers(0, 2**16),
        schedule_first=st.booleans(),
    )
    def reload(self, into: str, seed: int, schedule_first: bool) -> None:
        """The state dicts loaded into the same stack, optimizers and schedules, or into a
        fresh stack (of other values; its gradients zero, and so the twins') with fresh
        optimizers and schedules."""
        state = self.stack.state_dict(keep_vars=into == "same, kept")
        optimizer_states, schedule_states = self._states()
        if into != "fresh":
            self.stack.load_state_dict(state)
            for optimizer, optimizer_state in zip(self.optimizers, optimizer_states, strict=True):
                optimizer.load_state_dict(optimizer_state)
            for schedule, schedule_state in zip(self.schedules, schedule_states, strict=True):
                if schedule is not None:
                    schedule.load_state_dict(schedule_state)
            return
        stack = nn.stack_models(self._models(seed), layout=self.life["layout"])
        stack.load_state_dict(state)
        self._go_on_with(stack, optimizer_states, schedule_states, schedule_first)
        self._twins_anew(fresh=True)

    @rule(into=st.sampled_from(["same", "fresh"]), seed=st.integers(0, 2**16))
    def checkpoint(self, into: str, seed: int) -> None:
        """A checkpoint of the stack with each optimizer and schedule (one file each), loaded
        into the same objects or into a fresh stack, optimizers and schedules (whose gradients
        are zero, and so the twins')."""
        path = Path(self.folder.name) / "stack.ckpt"
        whole = self.life["mode"] == "whole"
        if whole:
            save_checkpoint(path, self.stack, self.optimizers[0], self.schedules[0])
        else:
            save_checkpoint(path, self.stack)
            optimizer_states, schedule_states = self._states()
        if into == "same":
            if whole:
                load_checkpoint(path, self.stack, self.optimizers[0], self.schedules[0])
            else:
                load_checkpoint(path, self.stack)
            return
        stack = nn.stack_models(self._models(seed), layout=self.life["layout"])
        self._twins_anew(fresh=True)
        if whole:
            optimizers, schedules = self._optimizers(stack)
            load_checkpoint(path, stack, optimizers[0], schedules[0])
            self.stack, self.optimizers, self.schedules = stack, optimizers, schedules
            self.graph = None
            return
        load_checkpoint(path, stack)
        self._go_on_with(stack, optimizer_states, schedule_states)

    @rule(order=st.permutations(range(4)), schedule_first=st.booleans())
    def split_and_join(self, order: list[int], schedule_first: bool) -> None:
        """The stack split into single models and joined again, in the same order or (where
        each model has optimizers of its own) another, with new optimizers and schedules that
        load the old ones' states (the gradients zero, as a stack's starts)."""
        if not self._per_optimizer():
            order = list(range(4))
        order = [index for index in order if index < self.rounds]
        joined = nn.stack_models(
            [nn.unstack_model(self.stack, index) for index in order], layout=self.life["layout"]
        )
        optimizer_states, schedule_states = self._states()
        if self._per_optimizer():
            optimizer_states = [optimizer_states[index] for index in order]
            schedule_states = [schedule_states[index] for index in order]
            self.life["optimizers"] = [self.life["optimizers"][index] for index in order]
            self.life["schedules"] = [self.life["schedules"][index] for index in order]
        for key in ("activations", "losses"):
            self.life[key] = [self.life[key][index] for index in order]
        if self.snapshot is not None:  # (taken in the old order)
            (stack_state, *states), twin_states = self.snapshot
            stack_state = {name: value[order] for name, value in stack_state.items()}
            if self._per_optimizer():
                states = [[state[index] for index in order] for state in states]
            twin_states = [[state[index] for index in order] for state in twin_states]
            self.snapshot = ([stack_state, *states], twin_states)
        self.twins = [self.twins[index] for index in order]
        self.twin_criteria = [self.twin_criteria[index] for index in order]
        self.twin_optimizers = [self.twin_optimizers[index] for index in order]
        self.twin_schedules = [self.twin_schedules[index] for index in order]
        self.criterion = self._criterion()
        self._go_on_with(joined, optimizer_states, schedule_states, schedule_first)
        self._twins_anew(fresh=False)

    @rule(how=st.sampled_from(["deepcopy", "pickle", "shallow copy"]))
    def go_on_with_a_copy(self, how: str) -> None:
        """Go on with a deep copy or a pickle of the stack, optimizers, schedules and loss
        together (the optimizers over views of the copy's tensors), or with a shallow copy of
        the stack (over the same parameters)."""
        if how == "shallow copy":
            self.stack = copy.copy(self.stack)
            self.twins = [copy.copy(twin) for twin in self.twins]
            return
        together = (self.stack, self.optimizers, self.schedules, self.criterion)
        if how == "deepcopy":
            self.stack, self.optimizers, self.schedules, self.criterion = copy.deepcopy(together)
        else:
            self.stack, self.optimizers, self.schedules, self.criterion = pickle.loads(
                pickle.dumps(together)
            )
        self.graph = None

    @rule(
        how=st.sampled_from(
            [
                "to float64",
                "double",
                "cpu",
                "float32 and back",
                "float16 and back",
                "bfloat16 and back",
            ]
        )
    )
    def cast(self, how: str) -> None:
        """``to(torch.float64)``, ``double()`` or ``cpu()`` (nothing to do), or a round trip
        through float32, float16 or bfloat16 (the values and gradients rounded to it on both
        sides): the stack's tensors are then new ones, laid out by layer, so optimizers over
        views of them are made again, loading the old ones' states (on a stack laid out by
        model again, for flat ones)."""
        moves = {
            "to float64": lambda module: module.to(F64),
            "double": lambda module: module.double(),
            "cpu": lambda module: module.cpu(),
            "float32 and back": lambda module: module.to(torch.float32).to(F64),
            "float16 and back": lambda module: module.half().to(F64),
            "bfloat16 and back": lambda module: module.bfloat16().to(F64),
        }
        moves[how](self.stack)
        for twin in self.twins:
            moves[how](twin)
        if how not in ("to float64", "double", "cpu") and self.life["mode"] != "whole":
            self._made_again()

    # -- invariants -------------------------------------------------------------------------------

    @invariant()
    def models_agree(self) -> None:
        for index, twin in enumerate(self.twins):
            parameters = nn.model_parameters(self.stack, index)
            twin_parameters = list(twin.parameters())
            assert len(parameters) == len(twin_parameters)
            for parameter, twin_parameter in zip(parameters, twin_parameters, strict=True):
                what = f"model {index}'s {parameter.name}"
                assert parameter.data.dtype == twin_parameter.data.dtype == F64
                assert_close(parameter.data, twin_parameter.data, TOL, what=what)
                assert_close(parameter.grad, twin_parameter.grad, TOL, what=f"{what}'s gradient")
            unstacked = nn.unstack_model(self.stack, index)
            for parameter, twin_parameter in zip(
                unstacked.parameters(), twin_parameters, strict=True
            ):
                assert_close(parameter.data, twin_parameter.data, TOL, what="unstacked")

    @invariant()
    def rates_and_modes_agree(self) -> None:
        for index, twin_optimizer in enumerate(self.twin_optimizers):
            assert self.optimizers[self._owner(index)].lr == twin_optimizer.lr, index
        for index, twin in enumerate(self.twins):
            assert self.stack.training == twin.training
            for (path, layer), twin_layer in zip(self.stack.named_children(), twin, strict=True):
                if isinstance(layer, nn.StackedActivation):  # (its own mode is derived from theirs)
                    layer = layer.activation_of(index)
                assert layer.training == twin_layer.training, (index, path)

    @invariant()
    def outputs_agree(self) -> None:
        """A forward of the stack (in inference mode) gives each twin's output, where no
        backward of the last forward may come (which would take this one's)."""
        if self.graph is not None:
            return
        x, _ = self._batch(3, 0)
        with torch.inference_mode():
            output = self.stack(x)
            for index, twin in enumerate(self.twins):
                assert_close(output[index], twin(x[index]), TOL, what=f"model {index}'s output")

    @invariant()
    def padding_stays_zero(self) -> None:
        """Where the stack is laid out by model, each model's block past its parameters."""
        if self.life["mode"] != "flat":
            return
        entries = sum(parameter.data[0].numel() for parameter in self.stack.parameters())
        for index in range(self.rounds):
            block = nn.flat_model_parameters(self.stack, index)
            assert not block.data[entries:].any()
            assert not block.grad[entries:].any()

    @invariant()
    def returned_tensors_kept(self) -> None:
        for what, returned, expected in self.returned:
            assert_close(returned, expected, TOL, what=f"{what} returned before")


def model_modes(model: nn.Module) -> list[bool]:
    return [module.training for _, module in model.named_modules()]


StackLife.TestCase.settings = settings(
    max_examples=80, stateful_step_count=30, deadline=None, database=None, derandomize=True
)
TestStackLife = StackLife.TestCase
