"""fit_rounds(max_grad_norm=...): each stacked model is clipped by its own norm, exactly as
fit(max_grad_norm=...) clips it trained alone.

The oracle is :func:`minidl.train.fit` run model by model in float64 (its folded step, or its
step-by-step loop where the optimizer holds part of the model), compared to 1e-12 as in
tests/test_rounds.py. The norm is small enough to clip almost every step: each test records the
norms of fit's steps and checks that they exceed it, and that the same run without clipping ends
elsewhere.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor

import minidl.folded
import minidl.train
from minidl import nn
from minidl.data import make_disk_data
from minidl.nn.clip import _clip_norm
from minidl.nn.parameter import Parameter
from minidl.optim import SGD, Adam, CyclicLR, StepDecay
from minidl.optim.lr_scheduler import LRScheduler
from minidl.optim.optimizer import Optimizer
from minidl.rounds import PerModel, fit_rounds
from minidl.train import History, fit

DTYPE = torch.float64
#: Below the gradients' norm at almost every step of these runs (see _Norms).
MAX_NORM = 0.05

#: (group index, parameters) -> the optimizer of that group of models.
MakeOptimizer = Callable[[int, list[Parameter]], Optimizer]
MakeScheduler = Callable[[Optimizer], LRScheduler | None]


class _Norms(list[float]):
    """The total norm of every step of fit's clipping (its folded step's and its loop's)."""


@pytest.fixture
def fit_norms(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Norms]:
    """Record the norm that fit clips at each step (the folded step calls ``_clip_norm``, the
    loop ``clip_grad_norm_``); fit_rounds calls neither."""
    norms = _Norms()

    def folded_clip(*arguments: Any) -> Tensor:
        total = _clip_norm(*arguments)
        norms.append(float(total))
        return total

    def loop_clip(parameters: list[Parameter], max_norm: float) -> Tensor:
        total = nn.clip_grad_norm_(parameters, max_norm)
        norms.append(float(total))
        return total

    monkeypatch.setattr(minidl.folded, "_clip_norm", folded_clip)
    monkeypatch.setattr(minidl.train, "clip_grad_norm_", loop_clip)
    yield norms


@dataclass
class _Run:
    """What to train: ``rounds`` models on their own data, one optimizer per group."""

    make_optimizer: MakeOptimizer
    per_model: bool = False
    flat: bool = False
    group: int = 1
    rounds: int = 3
    seed: int = 0
    make_scheduler: MakeScheduler | None = None
    activation: str = "tanh"
    sizes: tuple[int, ...] = (2, 7, 5, 2)
    #: Each model's factor on its inputs (larger gradients, or infinite ones), and the samples
    #: whose first input is set to NaN.
    scales: dict[int, float] = field(default_factory=dict)
    nan_samples: dict[int, list[int]] = field(default_factory=dict)
    epochs: int = 4

    def data(self) -> list[tuple[Tensor, Tensor]]:
        sets = []
        for r in range(self.rounds):
            made = make_disk_data(120, 50, 10, seed=100 * self.seed + r, dtype=DTYPE).train
            x = made.x * self.scales.get(r, 1.0)
            x[self.nan_samples.get(r, []), 0] = math.nan
            sets.append((x, made.y))
        return sets

    def models(self) -> list[nn.Sequential]:
        made = []
        for r in range(self.rounds):
            torch.manual_seed(1000 * self.seed + r)
            made.append(nn.mlp(self.sizes, self.activation, dtype=DTYPE))
        return made

    def one_by_one(
        self, models: list[nn.Sequential], max_grad_norm: float | None = MAX_NORM
    ) -> list[History]:
        """fit on each model alone (its optimizer: the factory's for its group)."""
        histories = []
        for r, (model, (x, y)) in enumerate(zip(models, self.data(), strict=True)):
            index = r // self.group if self.per_model else 0  # (the plain factory's: one)
            optimizer = self.make_optimizer(index, list(model.parameters()))
            scheduler = self.make_scheduler(optimizer) if self.make_scheduler else None
            histories.append(
                fit(
                    model,
                    nn.CrossEntropyLoss(),
                    optimizer,
                    x,
                    y,
                    epochs=self.epochs,
                    batch_size=25,
                    scheduler=scheduler,
                    generator=torch.Generator().manual_seed(7 + r),
                    max_grad_norm=max_grad_norm,
                )
            )
        return histories

    def batched(
        self, models: list[nn.Sequential], max_grad_norm: float | None = MAX_NORM
    ) -> list[History]:
        """fit_rounds on the models (a PerModel, or a plain factory of the stack's)."""
        make = self.make_optimizer
        return fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            PerModel(make, group=self.group, flat=self.flat)
            if self.per_model
            else (lambda stack: make(0, list(stack.parameters()))),
            self.data(),
            epochs=self.epochs,
            batch_size=25,
            generators=[torch.Generator().manual_seed(7 + r) for r in range(self.rounds)],
            make_scheduler=self.make_scheduler,
            max_grad_norm=max_grad_norm,
        )


def _assert_alike(
    models: list[nn.Sequential],
    alone: list[nn.Sequential],
    histories: list[History],
    expected: list[History],
) -> None:
    """Parameters to 1e-12 and gradients (the last batch's) to 1e-10 of their scale, the same
    losses and rates; NaN where fit has NaN."""
    for model, reference, history, reference_history in zip(
        models, alone, histories, expected, strict=True
    ):
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            for actual, wanted, tolerance in ((p.data, q.data, 1e-12), (p.grad, q.grad, 1e-10)):
                assert torch.equal(actual.isnan(), wanted.isnan())
                scale = wanted.nan_to_num().abs().max().clamp_min(1.0)
                difference = (actual - wanted).nan_to_num().abs().max()
                assert float(difference / scale) <= tolerance
        assert history.lr == reference_history.lr
        assert history.batch_lr == reference_history.batch_lr
        assert history.train_loss == pytest.approx(
            reference_history.train_loss, rel=1e-12, nan_ok=True
        )


def _check(run: _Run, norms: _Norms) -> list[nn.Sequential]:
    """Train ``run`` one by one and batched; assert they agree, that the norm clipped almost
    every step of fit, and that without clipping the models end elsewhere. The batched models."""
    models = run.models()
    alone = [copy.deepcopy(model) for model in models]
    unclipped = [copy.deepcopy(model) for model in models]
    expected = run.one_by_one(alone)
    histories = run.batched(models)
    _assert_alike(models, alone, histories, expected)
    assert len(norms) == run.rounds * run.epochs * 5  # (5 batches of 120 samples an epoch)
    assert sum(norm > MAX_NORM for norm in norms) >= 0.9 * len(norms)
    run.batched(unclipped, max_grad_norm=None)
    for model, other in zip(models, unclipped, strict=True):
        moved = max(
            float((p.data - q.data).abs().max())
            for p, q in zip(model.parameters(), other.parameters(), strict=True)
        )
        assert moved > 1e-3
    return models


def _sgd(g: int, p: list[Parameter]) -> Optimizer:
    return SGD(p, lr=(0.3, 0.1, 0.2)[g % 3], momentum=0.9)


def _adam(g: int, p: list[Parameter]) -> Optimizer:
    return Adam(p, lr=(0.01, 0.03, 0.02)[g % 3])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("make_optimizer", [_sgd, _adam], ids=["sgd-momentum", "adam"])
def test_the_default_factory_clips_each_model_as_fit(
    make_optimizer: MakeOptimizer, seed: int, fit_norms: _Norms
) -> None:
    """One optimizer over the stack (the plain factory): each model as fit leaves it."""
    _check(_Run(make_optimizer, seed=seed), fit_norms)


@pytest.mark.parametrize("flat", [False, True], ids=["by-layer", "flat"])
@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("make_optimizer", [_sgd, _adam], ids=["sgd-momentum", "adam"])
def test_per_model_optimizers_clip_each_model_as_fit(
    make_optimizer: MakeOptimizer, group: int, flat: bool, fit_norms: _Norms
) -> None:
    """PerModel, layer-wise and flat, one or two models per optimizer (their own rates)."""
    run = _Run(make_optimizer, per_model=True, flat=flat, group=group, rounds=3 * group)
    _check(run, fit_norms)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize(
    ("per_model", "flat"), [(False, False), (True, False), (True, True)], ids=str
)
def test_clipping_with_a_schedule_as_fit(
    per_model: bool, flat: bool, seed: int, fit_norms: _Norms
) -> None:
    """A per-epoch schedule (plain factory) or one per optimizer, per batch or per epoch."""

    def schedule(optimizer: Optimizer) -> LRScheduler:
        if optimizer.lr > 0.25:
            return CyclicLR(optimizer, 0.05, 0.3, 3)
        return StepDecay(optimizer, step_size=1, gamma=0.6)

    run = _Run(_sgd, per_model=per_model, flat=flat, seed=seed, make_scheduler=schedule)
    _check(run, fit_norms)


@pytest.mark.parametrize("per_model", [False, True], ids=["plain", "per-model"])
def test_a_model_is_clipped_over_the_gradients_its_optimizer_holds(
    per_model: bool, fit_norms: _Norms
) -> None:
    """fit clips its optimizer's parameters: with an optimizer of the first layer alone (the
    plain factory's; per model: model 1's alone, the others' of all), the norm is that layer's
    and the other gradients, neither counted nor scaled, accumulate over the batches."""

    def make(g: int, p: list[Parameter]) -> Optimizer:
        return SGD(p[:2] if g == 1 or not per_model else p, lr=0.2, momentum=0.5)

    models = _check(_Run(make, per_model=per_model, group=1), fit_norms)
    # (the last layer's gradients grew: they were not zeroed, nor scaled to the norm)
    assert float(list(models[1].parameters())[-2].grad.norm()) > 10 * MAX_NORM


@pytest.mark.parametrize(
    ("per_model", "flat"), [(False, False), (True, False), (True, True)], ids=str
)
def test_models_of_more_than_4096_gradients_a_layer_are_clipped_as_fit(
    per_model: bool, flat: bool, fit_norms: _Norms
) -> None:
    """A layer of 100 x 65 weights (6500 > 4096, so 6600 entries a model laid out by model):
    each model's norm is taken over its rows of 4096 and the rest, whose norms are summed."""
    _check(_Run(_sgd, per_model=per_model, flat=flat, sizes=(2, 100, 65, 2)), fit_norms)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("sizes", [(2, 8, 8, 2), (2, 100, 65, 2)], ids=str)
@pytest.mark.parametrize("flat", [False, True], ids=["by-layer", "by-model"])
def test_16_bit_models_are_clipped_to_fits_bits(
    dtype: torch.dtype, sizes: tuple[int, ...], flat: bool
) -> None:
    """In float16 and bfloat16 a stack laid out by layer took each layer's norm in the
    gradients' dtype, then the norm of those norms: rounded twice, where fit's one norm of the
    model's buffer is rounded once (bfloat16 differed in 24 of 200 draws), and the models ended
    elsewhere than trained alone (by 2e-3 in bfloat16 after 3 epochs). The norms are float32
    now, the total rounded once, in the stack and in fit's norm of a buffer of more than 4096
    entries: every parameter the same bits as fit's (16-bit products round alike here)."""
    torch.manual_seed(0)  # (one thread: see conftest)
    models = [nn.mlp(sizes, "tanh", dtype=dtype) for _ in range(3)]
    alone = [copy.deepcopy(model) for model in models]
    generator = torch.Generator().manual_seed(1)
    sets = [
        (
            torch.randn(100, 2, generator=generator).to(dtype),
            torch.randint(2, (100,), generator=generator),
        )
        for _ in range(3)
    ]
    for index, model in enumerate(alone):
        fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), *sets[index],
            epochs=3, batch_size=20, generator=torch.Generator().manual_seed(index),
            max_grad_norm=0.1)  # fmt: skip
    fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        PerModel(lambda g, p: SGD(p, lr=0.1), flat=flat),
        sets,
        epochs=3,
        batch_size=20,
        generators=[torch.Generator().manual_seed(index) for index in range(3)],
        max_grad_norm=0.1,
    )
    for model, trained in zip(models, alone, strict=True):
        for p, q in zip(model.parameters(), trained.parameters(), strict=True):
            assert torch.equal(p.data, q.data)


def _in_stack(
    middle: nn.Sequential,
    neighbours: list[nn.Sequential],
    data: list[tuple[Tensor, Tensor]],
    max_grad_norm: float | None = MAX_NORM,
) -> nn.Sequential:
    """Model ``middle`` trained (clipped) between two ``neighbours`` on ``data[1]``, the
    neighbours on ``data[0]`` and ``data[2]``, flat per-model SGD; the trained copy."""
    models = [copy.deepcopy(neighbours[0]), copy.deepcopy(middle), copy.deepcopy(neighbours[1])]
    fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        PerModel(lambda g, p: SGD(p, lr=0.2, momentum=0.9), flat=True),
        data,
        epochs=4,
        batch_size=25,
        generators=[torch.Generator().manual_seed(7 + r) for r in range(3)],
        max_grad_norm=max_grad_norm,
    )
    return models[1]


@pytest.mark.parametrize("limit", [0.0, 1e-6, 0.05])
def test_float16_gradients_of_a_tiny_norm_are_clipped_as_clip_grad_norm_clips_them(
    limit: float,
) -> None:
    """Models whose float16 gradients have a norm below 1.5e-5, where 1 / (norm + 1e-6)
    overflows float16 (the coefficient was 1, or NaN for a max_norm of 0), beside one of a
    larger norm: each model's gradients as clip_grad_norm_ leaves its twin's, bit for bit."""
    from minidl.nn._stack_clip import StackClip

    torch.manual_seed(0)
    models = [nn.mlp((2, 3, 2), "tanh", dtype=torch.float16) for _ in range(3)]
    twins = [copy.deepcopy(model) for model in models]
    stack = nn.stack_models(models)
    for index, scale in enumerate((1e-7, 2e-6, 1.0)):
        for p, q in zip(nn.model_parameters(stack, index), twins[index].parameters(), strict=True):
            p.grad.copy_(torch.randn(p.grad.shape).mul_(scale).to(torch.float16))
            q.grad.copy_(p.grad)
    holders = [
        (f"optimizer {index}", index, index + 1, given, given)
        for index, given in enumerate(nn.model_parameters(stack, i) for i in range(3))
    ]
    StackClip(stack, limit, holders, flat=False, where="test")()
    for index, twin in enumerate(twins):
        nn.clip_grad_norm_(twin.parameters(), limit)
        for p, q in zip(nn.model_parameters(stack, index), twin.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad)
        norm = torch.linalg.vector_norm(torch.cat([q.grad.flatten() for q in twin.parameters()]))
        assert float(norm.float()) <= limit * 1.01


def test_a_models_clipping_does_not_depend_on_the_others() -> None:
    """float32, one intra-op thread: model 1 trained with other models beside it, whose
    gradients are 100 times larger, ends bit for bit as with the first ones (a stack laid out by
    model gives each model the same bits in any stack); one norm over the stack would not."""
    datasets = [make_disk_data(100, 40, 10, seed=r) for r in range(5)]
    data = [(d.train.x, d.train.y) for d in datasets]
    torch.manual_seed(0)
    models = [nn.mlp((2, 7, 5, 2), "tanh") for _ in range(5)]
    first = _in_stack(models[1], [models[0], models[2]], data[:3])
    large = [(x * 100.0, y) for x, y in data[3:]]
    second = _in_stack(models[1], [models[3], models[4]], [large[0], data[1], large[1]])
    for p, q in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(p.data, q.data)
        assert torch.equal(p.grad, q.grad)
    unclipped = _in_stack(models[1], [models[0], models[2]], data[:3], max_grad_norm=None)
    moved = (next(first.parameters()).data - next(unclipped.parameters()).data).abs().max()
    assert float(moved) > 1e-3  # (the clipping acted)


def test_a_models_clipping_does_not_depend_on_the_others_by_layer(fit_norms: _Norms) -> None:
    """float64, one optimizer over a stack laid out by layer: model 1 of a stack ends as fit
    leaves it, beside models whose gradients are 100 times larger or beside others."""
    for scales in ({}, {0: 100.0, 2: 100.0}):
        run = _Run(_sgd, scales=scales)
        models = run.models()
        alone = [copy.deepcopy(model) for model in models]
        expected = run.one_by_one(alone)
        histories = run.batched(models)
        _assert_alike(models[1:2], alone[1:2], histories[1:2], expected[1:2])


@pytest.mark.parametrize(
    ("per_model", "flat"), [(False, False), (True, False), (True, True)], ids=str
)
def test_a_non_finite_norm_gives_fits_coefficient_to_that_model_alone(
    per_model: bool, flat: bool, fit_norms: _Norms
) -> None:
    """Model 1 sees a NaN input (a NaN norm: fit's coefficient makes everything NaN), model 2
    inputs of 1e200 through ReLU (an infinite norm: fit's coefficient is 0, the step does not
    move it); model 0 trains as fit trains it, unaffected."""
    run = _Run(
        lambda g, p: SGD(p, lr=0.2),
        per_model=per_model,
        flat=flat,
        activation="relu",
        scales={2: 1e200},
        nan_samples={1: [40]},
    )
    models = run.models()
    alone = [copy.deepcopy(model) for model in models]
    start = copy.deepcopy(models)
    expected = run.one_by_one(alone)
    histories = run.batched(models)
    _assert_alike(models, alone, histories, expected)
    assert any(math.isnan(norm) for norm in fit_norms)
    assert math.inf in fit_norms
    assert all(bool(p.data.isfinite().all()) for p in models[0].parameters())
    assert all(bool(p.data.isnan().all()) for p in models[1].parameters())
    for p, q in zip(models[2].parameters(), start[2].parameters(), strict=True):
        assert torch.equal(p.data, q.data)  # (every step scaled by 0)
    assert not torch.equal(next(models[0].parameters()).data, next(start[0].parameters()).data)


def test_a_nan_norm_leaves_the_padding_of_a_model_laid_out_by_model_zero() -> None:
    """Laid out by model, each model's block is padded to 64 bytes; a NaN coefficient scales
    the model's entries only, so the padding (and its gradient) stays zero, as
    flat_model_parameters promises."""
    given: list[Parameter] = []

    def make(g: int, p: list[Parameter]) -> Optimizer:
        given.extend(p)
        return SGD(p, lr=0.2)

    run = _Run(make, per_model=True, flat=True, nan_samples={1: [40]})
    models = run.models()
    entries = sum(p.numel() for p in models[0].parameters())
    run.batched(models)
    assert bool(next(models[1].parameters()).data.isnan().all())  # (the model itself is NaN)
    flat = given[1]
    assert flat.data.numel() > entries  # (a padded block: 73 entries in blocks of 80)
    for tensor in (flat.data, flat.grad):
        assert bool(tensor[:entries].isnan().any())
        assert torch.equal(tensor[entries:], torch.zeros_like(tensor[entries:]))


class _KeepsLastGradient(SGD):
    """SGD whose ``zero_grad`` leaves its last parameter's gradient as it is (a gradient set
    from elsewhere, kept over the steps): only clipping changes it."""

    def zero_grad(self) -> None:
        for parameter in self.params[:-1]:
            parameter.grad.zero_()


@pytest.mark.parametrize("kept", [False, True], ids=["zeroed", "kept"])
@pytest.mark.parametrize("flat", [False, True], ids=["by-layer", "flat"])
def test_a_parameter_outside_the_stack_is_clipped_with_its_models(
    flat: bool, kept: bool, fit_norms: _Norms
) -> None:
    """A PerModel optimizer of one model that also holds a parameter of its own outside the
    stack: fit counts it in the model's norm and scales it by the model's coefficient.
    Zeroed by the optimizer, its gradient is zero: only a NaN coefficient shows (model 1's NaN
    input makes its parameter NaN, as in fit; the others' stay finite, decayed as in fit).
    Kept at 0.3 (and scaled at every step), it adds to the norm."""
    kind = _KeepsLastGradient if kept else SGD
    extras = [Parameter(torch.ones(3, dtype=DTYPE)) for _ in range(3)]
    for extra in extras:
        extra.grad.fill_(0.3)
    extras_alone = copy.deepcopy(extras)
    run = _Run(
        lambda g, p: kind([*p, extras[g]], lr=0.2, weight_decay=0.1),
        per_model=True,
        flat=flat,
        nan_samples={} if kept else {1: [40]},
    )
    models = run.models()
    alone = [copy.deepcopy(model) for model in models]
    expected = [
        fit(
            model,
            nn.CrossEntropyLoss(),
            kind([*model.parameters(), extras_alone[r]], lr=0.2, weight_decay=0.1),
            x,
            y,
            epochs=run.epochs,
            batch_size=25,
            generator=torch.Generator().manual_seed(7 + r),
            max_grad_norm=MAX_NORM,
        )
        for r, (model, (x, y)) in enumerate(zip(alone, run.data(), strict=True))
    ]
    histories = run.batched(models)
    _assert_alike(models, alone, histories, expected)
    for extra, reference in zip(extras, extras_alone, strict=True):
        for actual, wanted in ((extra.data, reference.data), (extra.grad, reference.grad)):
            torch.testing.assert_close(actual, wanted, rtol=1e-12, atol=0, equal_nan=True)
    if kept:
        assert all(0.0 < float(extra.grad[0]) < MAX_NORM for extra in extras)
    else:
        assert bool(extras[1].data.isnan().all())
        assert bool(extras[0].data.isfinite().all()) and float(extras[0].data[0]) < 1.0


def _snapshot(
    models: list[nn.Sequential], generators: list[torch.Generator]
) -> tuple[list[list[Tensor]], list[Tensor]]:
    tensors = [
        [t.clone() for p in model.parameters() for t in (p.data, p.grad)] for model in models
    ]
    return tensors, [generator.get_state() for generator in generators]


def _assert_unchanged(
    models: list[nn.Sequential],
    generators: list[torch.Generator],
    before: tuple[list[list[Tensor]], list[Tensor]],
) -> None:
    after = _snapshot(models, generators)
    for tensors, earlier in zip(after[0], before[0], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(tensors, earlier, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(after[1], before[1], strict=True))
    assert all(model.training is False for model in models)


def _refused_run(
    max_grad_norm: object, make_optimizer: Any = None
) -> tuple[list[nn.Sequential], list[torch.Generator], Callable[[], object]]:
    data = [make_disk_data(40, 10, 10, seed=r, dtype=DTYPE) for r in range(2)]
    torch.manual_seed(0)
    models = [nn.mlp((2, 5, 2), "tanh", dtype=DTYPE) for _ in range(2)]
    for model in models:
        model.eval()
        for p in model.parameters():
            p.grad.fill_(0.5)
    generators = [torch.Generator().manual_seed(r) for r in range(2)]

    def call() -> object:
        return fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            make_optimizer or (lambda stack: SGD(stack.parameters(), lr=0.1)),
            [(d.train.x, d.train.y) for d in data],
            epochs=2,
            batch_size=15,
            generators=generators,
            max_grad_norm=max_grad_norm,  # type: ignore[arg-type]
        )

    return models, generators, call


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        (0.0, ValueError, "must be in (0, inf), got 0.0"),
        (0, ValueError, "must be in (0, inf), got 0"),
        (-1.0, ValueError, "must be in (0, inf), got -1.0"),
        (math.nan, ValueError, "must be a finite number in (0, inf), got nan"),
        (math.inf, ValueError, "must be a finite number in (0, inf), got inf"),
        ("1", TypeError, "must be a finite number in (0, inf) (a float or an int), got str '1'"),
        (True, TypeError, "must be a finite number in (0, inf) (a float or an int), got bool True"),
        (
            torch.tensor(1.0),
            TypeError,
            "must be a finite number in (0, inf) (a float or an int), got Tensor",
        ),
    ],
)
def test_a_bad_max_grad_norm_is_refused_before_anything_changes(
    value: object, kind: type[Exception], message: str
) -> None:
    """As fit refuses it, naming fit_rounds; the models (values, gradients, mode) and the
    generators are as they were."""
    models, generators, call = _refused_run(value)
    before = _snapshot(models, generators)
    with pytest.raises(kind, match=r"^fit_rounds: max_grad_norm " + re.escape(message)):
        call()
    _assert_unchanged(models, generators, before)


@pytest.mark.parametrize("factory", ["plain", "group"])
def test_an_optimizer_of_several_models_may_not_clip_a_parameter_outside_the_stack(
    factory: str,
) -> None:
    """Its gradient would belong to no one model (fit gives each model a copy of its own):
    refused with max_grad_norm, before anything changes; trained without it, as before."""
    extra = Parameter(torch.ones(3, dtype=DTYPE))
    make_optimizer = (
        (lambda stack: SGD([*stack.parameters(), extra], lr=0.1))
        if factory == "plain"
        else PerModel(lambda g, p: SGD([*p, extra], lr=0.1), group=2)
    )
    models, generators, call = _refused_run(0.5, make_optimizer)
    before = _snapshot(models, generators)
    what = "the optimizer" if factory == "plain" else "optimizer 0"
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"fit_rounds: with max_grad_norm, each model's gradients are clipped to their own "
            f"norm, but {what}, of models 0 to 1, holds {extra!r}, which is not"
        ),
    ):
        call()
    _assert_unchanged(models, generators, before)
    models, _, call = _refused_run(None, make_optimizer)
    call()
    assert all(model.training for model in models)


@pytest.mark.parametrize(
    ("shared", "flat", "what"),
    [
        ("outside", False, "optimizer 0 holds too"),
        ("outside", True, "optimizer 0 holds too"),
        ("given", False, "optimizer 0 holds too"),
        ("given", True, "optimizer 0 holds too"),
        ("unheld", False, "was given to optimizer 0"),
    ],
)
def test_two_optimizers_may_not_clip_one_parameter(shared: str, flat: bool, what: str) -> None:
    """A parameter of two models' optimizers (one outside the stack, or one given to optimizer
    0, which optimizer 1 holds too, whether optimizer 0 holds it or not) would be counted in
    both models' norms and scaled by both coefficients: one model's NaN would reach the other.
    Refused with max_grad_norm, before anything changes; trained without it, as before."""
    extra = Parameter(torch.ones(3, dtype=DTYPE))
    given: list[list[Parameter]] = []

    def make(g: int, p: list[Parameter]) -> Optimizer:
        given.append(p)
        if shared == "outside":
            return SGD([*p, extra], lr=0.1)
        if g == 0:
            return SGD(p if shared == "given" else p[1:], lr=0.1)
        return SGD([*p, given[0][0]], lr=0.1)

    models, generators, call = _refused_run(0.5, PerModel(make, flat=flat))
    before = _snapshot(models, generators)
    with pytest.raises(
        ValueError,
        match=r"^fit_rounds: with max_grad_norm, each model's gradients are clipped to their "
        r"own norm, but optimizer 1 holds Parameter.*, which " + re.escape(what) + ": ",
    ):
        call()
    _assert_unchanged(models, generators, before)
    given.clear()
    models, _, call = _refused_run(None, PerModel(make, flat=flat))
    call()
    assert all(model.training for model in models)
