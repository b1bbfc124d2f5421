"""Batched rounds: R stacked models train exactly as R models trained one by one."""

from __future__ import annotations

import copy
import inspect
import math
import re
import types
from collections.abc import Callable
from typing import Any, Literal

import pytest
import torch

from minidl import nn, optim
from minidl.data import make_disk_data
from minidl.nn.parameter import Parameter
from minidl.optim import SGD, Adadelta, CyclicLR, StepDecay
from minidl.optim.lr_scheduler import LRScheduler
from minidl.optim.optimizer import Optimizer
from minidl.rounds import PerModel, _error_rates, _two_class_right, fit_rounds, stacked_error_rates
from minidl.train import EpochRecord, History, _classes, error_rate, fit

ROUNDS = 3
DTYPE = torch.float64

OptimizerFactory = Callable[[list[Parameter]], Optimizer]

SchedulerFactory = Callable[[Optimizer], LRScheduler] | None

CASES: list[tuple[str, str, OptimizerFactory, SchedulerFactory]] = [
    ("tanh", "ce", lambda p: SGD(p, lr=0.1), None),
    ("relu", "mse", lambda p: SGD(p, lr=0.05, momentum=0.9), None),
    ("elu", "ce", lambda p: Adadelta(p, lr=1.0), None),
    ("selu", "ce", lambda p: SGD(p, lr=0.1), lambda o: StepDecay(o, step_size=2, gamma=0.5)),
    ("sigmoid", "ce", lambda p: SGD(p, lr=0.1, momentum=0.5), lambda o: CyclicLR(o, 0.01, 0.1, 3)),
    ("leakyrelu", "mse", lambda p: Adadelta(p, lr=0.5, rho=0.8), None),
    ("gelu", "ce", lambda p: SGD(p, lr=0.1, momentum=0.9), None),
    ("gelutanh", "mse", lambda p: Adadelta(p, lr=1.0), None),
    ("silu", "ce", lambda p: SGD(p, lr=0.1), lambda o: StepDecay(o, step_size=2, gamma=0.5)),
]


def _criterion(name: str) -> nn.Loss:
    return nn.CrossEntropyLoss() if name == "ce" else nn.MSELoss()


def _assert_trained_alike(
    models: list[nn.Sequential],
    alone: list[nn.Sequential],
    histories: list[History],
    expected: list[History],
) -> None:
    """Batched models end as the models trained alone: parameters to 1e-12, gradients (the
    last batch's, as fit leaves them) to 1e-10, the same validation errors and learning rates,
    losses to 1e-12."""
    for model, reference, history, reference_history in zip(
        models, alone, histories, expected, strict=True
    ):
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            scale = q.data.abs().max().clamp_min(1.0)
            assert float((p.data - q.data).abs().max() / scale) <= 1e-12
            grad_scale = q.grad.abs().max().clamp_min(1.0)
            assert float((p.grad - q.grad).abs().max() / grad_scale) <= 1e-10
        assert any(bool(q.grad.any()) for q in reference.parameters())  # (some are not zero)
        assert history.validation_error == reference_history.validation_error
        assert history.lr == reference_history.lr
        assert history.batch_lr == reference_history.batch_lr
        assert history.train_loss == pytest.approx(reference_history.train_loss, rel=1e-12)


@pytest.mark.parametrize(("activation", "loss", "make_optimizer", "make_scheduler"), CASES)
def test_fit_rounds_equals_one_by_one(
    activation: str,
    loss: str,
    make_optimizer: OptimizerFactory,
    make_scheduler: SchedulerFactory,
) -> None:
    datasets = [make_disk_data(120, 50, 10, seed=100 + r, dtype=DTYPE) for r in range(ROUNDS)]
    models = []
    for r in range(ROUNDS):
        torch.manual_seed(r)
        models.append(nn.mlp((2, 7, 5, 2), activation, dtype=DTYPE))
    alone = [copy.deepcopy(m) for m in models]
    expected = []
    for r, model in enumerate(alone):
        optimizer = make_optimizer(list(model.parameters()))
        scheduler = make_scheduler(optimizer) if make_scheduler else None
        expected.append(
            fit(
                model,
                _criterion(loss),
                optimizer,
                datasets[r].train.x,
                datasets[r].train.y,
                epochs=6,
                batch_size=25,
                scheduler=scheduler,
                validation=(datasets[r].validation.x, datasets[r].validation.y),
                generator=torch.Generator().manual_seed(7 + r),
            )
        )
    histories = fit_rounds(
        models,
        _criterion(loss),
        lambda stack: make_optimizer(list(stack.parameters())),
        [(d.train.x, d.train.y) for d in datasets],
        epochs=6,
        batch_size=25,
        generators=[torch.Generator().manual_seed(7 + r) for r in range(ROUNDS)],
        make_scheduler=make_scheduler,
        validation_sets=[(d.validation.x, d.validation.y) for d in datasets],
    )
    _assert_trained_alike(models, alone, histories, expected)


def test_fit_rounds_takes_a_batch_size_beyond_64_bits_as_one_batch() -> None:
    """fit_rounds failed with torch.split's "Overflow when unpacking long long"; a batch size
    beyond the samples is one batch of them all, as batch_size=samples (bit for bit)."""
    datasets = [make_disk_data(40, 10, 10, seed=100 + r, dtype=DTYPE) for r in range(ROUNDS)]
    results = []
    for batch_size in (40, 10**23):
        models = []
        for r in range(ROUNDS):
            torch.manual_seed(r)
            models.append(nn.mlp((2, 5, 2), "tanh", dtype=DTYPE))
        histories = fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            [(d.train.x, d.train.y) for d in datasets],
            epochs=3,
            batch_size=batch_size,
            generators=[torch.Generator().manual_seed(7 + r) for r in range(ROUNDS)],
        )
        results.append((models, histories))
    (models, histories), (big_models, big_histories) = results
    for model, big in zip(models, big_models, strict=True):
        for p, q in zip(model.parameters(), big.parameters(), strict=True):
            assert torch.equal(p.data, q.data)
    assert [h.train_loss for h in histories] == [h.train_loss for h in big_histories]
    assert [len(h.train_loss) for h in big_histories] == [3] * ROUNDS


class _FlippedInEval(nn.Activation):
    """An activation of one's own that reads the mode: tanh in training, -tanh in evaluation
    (so the validation errors tell the two modes apart)."""

    def _forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = torch.tanh(input) if self.training else -torch.tanh(input)
        return output, output

    def _backward(self, grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        sign = 1.0 if self.training else -1.0
        return grad_output * sign * (1 - output * output)


def test_fit_rounds_validates_in_evaluation_mode_as_fit_does() -> None:
    datasets = [make_disk_data(60, 40, 10, seed=200 + r, dtype=DTYPE) for r in range(2)]
    models = []
    for r in range(2):
        torch.manual_seed(r)
        models.append(
            nn.Sequential(
                nn.Linear(2, 6, dtype=DTYPE), _FlippedInEval(), nn.Linear(6, 2, dtype=DTYPE)
            )
        )
    alone = [copy.deepcopy(m) for m in models]
    expected = [
        fit(
            model,
            nn.CrossEntropyLoss(),
            SGD(model.parameters(), lr=0.1),
            datasets[r].train.x,
            datasets[r].train.y,
            epochs=3,
            batch_size=20,
            validation=(datasets[r].validation.x, datasets[r].validation.y),
            generator=torch.Generator().manual_seed(r),
        )
        for r, model in enumerate(alone)
    ]
    histories = fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        lambda stack: SGD(stack.parameters(), lr=0.1),
        [(d.train.x, d.train.y) for d in datasets],
        epochs=3,
        batch_size=20,
        generators=[torch.Generator().manual_seed(r) for r in range(2)],
        validation_sets=[(d.validation.x, d.validation.y) for d in datasets],
    )
    _assert_trained_alike(models, alone, histories, expected)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_fit_rounds_takes_target_rows_as_fit_does(loss: str) -> None:
    """Targets of shape (N, C), one-hot rows for MSE and probability rows for cross-entropy,
    train as with fit (the targets used to be flattened as class indices)."""
    datasets = [make_disk_data(60, 20, 10, seed=200 + r, dtype=DTYPE) for r in range(ROUNDS)]
    targets = []
    for r, data in enumerate(datasets):
        rows = torch.nn.functional.one_hot(data.train.y, 2).to(DTYPE)
        if loss == "ce":  # soft labels, a different mix per round
            rows = rows * (0.8 - 0.1 * r) + 0.1 + 0.05 * r
        targets.append(rows)
    models = []
    for r in range(ROUNDS):
        torch.manual_seed(r)
        models.append(nn.mlp((2, 6, 2), "tanh", dtype=DTYPE))
    alone = [copy.deepcopy(m) for m in models]
    expected = [
        fit(
            model,
            _criterion(loss),
            SGD(model.parameters(), lr=0.1, momentum=0.9),
            datasets[r].train.x,
            targets[r],
            epochs=4,
            batch_size=16,
            validation=(datasets[r].validation.x, datasets[r].validation.y),
            generator=torch.Generator().manual_seed(r),
        )
        for r, model in enumerate(alone)
    ]
    histories = fit_rounds(
        models,
        _criterion(loss),
        lambda stack: SGD(stack.parameters(), lr=0.1, momentum=0.9),
        [(d.train.x, t) for d, t in zip(datasets, targets, strict=True)],
        epochs=4,
        batch_size=16,
        generators=[torch.Generator().manual_seed(r) for r in range(ROUNDS)],
        validation_sets=[(d.validation.x, d.validation.y) for d in datasets],
    )
    _assert_trained_alike(models, alone, histories, expected)


def _one_by_one_and_batched(
    make_optimizer: Callable[[int, list[Parameter]], Optimizer],
    make_scheduler: Callable[[Optimizer], LRScheduler | None],
    activation: str = "tanh",
    group: int = 1,
    rounds: int = ROUNDS,
    flat: bool = False,
) -> None:
    """Train ``rounds`` models one by one with fit and at once with fit_rounds(PerModel(...));
    assert the same parameters (1e-12), validation errors, learning rates and losses."""
    datasets = [make_disk_data(120, 50, 10, seed=200 + r, dtype=DTYPE) for r in range(rounds)]
    models = []
    for r in range(rounds):
        torch.manual_seed(10 + r)
        models.append(nn.mlp((2, 6, 4, 2), activation, dtype=DTYPE))
    alone = [copy.deepcopy(m) for m in models]
    expected = []
    for r, model in enumerate(alone):
        optimizer = make_optimizer(r // group, list(model.parameters()))
        expected.append(
            fit(
                model,
                nn.CrossEntropyLoss(),
                optimizer,
                datasets[r].train.x,
                datasets[r].train.y,
                epochs=5,
                batch_size=30,
                scheduler=make_scheduler(optimizer),
                validation=(datasets[r].validation.x, datasets[r].validation.y),
                generator=torch.Generator().manual_seed(3 + r),
            )
        )
    histories = fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        PerModel(make_optimizer, group=group, flat=flat),
        [(d.train.x, d.train.y) for d in datasets],
        epochs=5,
        batch_size=30,
        generators=[torch.Generator().manual_seed(3 + r) for r in range(rounds)],
        make_scheduler=make_scheduler,
        validation_sets=[(d.validation.x, d.validation.y) for d in datasets],
    )
    _assert_trained_alike(models, alone, histories, expected)
    # The groups really trained differently (the sweep is not copies of one run).
    assert len({tuple(h.lr) for h in histories}) == rounds // group


def test_per_model_learning_rates_momenta_and_schedules_equal_one_by_one() -> None:
    rates, momenta = [0.3, 0.1, 0.02], [0.0, 0.5, 0.9]
    _one_by_one_and_batched(
        lambda r, p: SGD(p, lr=rates[r], momentum=momenta[r]),
        lambda o: StepDecay(o, step_size=2, gamma=0.5),
    )


def _mixed_optimizer(g: int, p: list[Parameter]) -> Optimizer:
    """Optimizer 0: SGD (with a per-batch cyclic schedule); 1: ADADELTA; 2: SGD (step decay)."""
    return Adadelta(p, lr=1.0) if g == 1 else SGD(p, lr=0.05 * (g + 1), momentum=0.5)


def _mixed_scheduler(o: Optimizer) -> LRScheduler | None:
    if isinstance(o, Adadelta):
        return None
    if o.lr < 0.1:
        return CyclicLR(o, 0.01, 0.1, 3)
    return StepDecay(o, step_size=1, gamma=0.7)


def test_per_model_optimizers_of_different_kinds_and_schedules() -> None:
    """Model 0: SGD with a per-batch cyclic schedule; 1: ADADELTA, no schedule; 2: SGD, step
    decay per epoch. Only model 0 records per-batch learning rates."""
    _one_by_one_and_batched(_mixed_optimizer, _mixed_scheduler, activation="elu")


def test_per_model_factory_must_return_optimizers() -> None:
    data = make_disk_data(20, 5, 5, seed=0)
    models = [nn.mlp((2, 3, 2), "tanh") for _ in range(2)]
    with pytest.raises(
        TypeError, match="returned list for optimizer 0, expected a minidl Optimizer"
    ):
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            PerModel(lambda r, p: p),  # type: ignore[arg-type, return-value]
            [(data.train.x, data.train.y)] * 2,
            epochs=1,
            generators=[torch.Generator(), torch.Generator()],
        )


@pytest.mark.parametrize("per_model", [True, False])
def test_what_an_optimizers_first_step_refuses_is_refused_before_anything_changes(
    per_model: bool,
) -> None:
    """An Adam whose first step size (lr / (1 - beta1)) float16 cannot hold, a step count
    set by hand to -1, and an Adam whose state names are reordered: fit refuses them before
    training. fit_rounds asked none: the first and the third were refused by the first step
    (the generators drawn, every gradient overwritten, with PerModel the models before it
    stepped), the second taken. All refused now, naming fit_rounds and the optimizer, with the
    models and the generators as they were."""
    data = make_disk_data(20, 5, 5, seed=0)
    torch.manual_seed(0)
    models = [nn.mlp((2, 4, 2), "tanh", dtype=torch.float16) for _ in range(2)]
    values = [[p.data.clone() for p in model.parameters()] for model in models]
    generators = [torch.Generator().manual_seed(index) for index in range(2)]
    states = [generator.get_state() for generator in generators]
    sets = [(data.train.x.half(), data.train.y)] * 2

    def adam(index: int, parameters: list[Parameter]) -> Optimizer:
        return optim.Adam(parameters, lr=[1e-3, 1e4][index], eps=1e-4)

    def counted(index: int, parameters: list[Parameter]) -> Optimizer:
        optimizer = SGD(parameters, lr=0.1)
        optimizer.step_count = -1 if index == 1 or not per_model else 0
        return optimizer

    def reordered(index: int, parameters: list[Parameter]) -> Optimizer:
        optimizer = optim.Adam(parameters, lr=1e-3, eps=1e-4)
        if index == 1:
            optimizer.state = dict(reversed(optimizer.state.items()))
        return optimizer

    named = "optimizer 1 \\(SGD\\)" if per_model else "the SGD"
    for factory, kind, message in [
        (adam, ValueError, r"^Adam: the step size lr / \(1 - beta1\^t\) is 100000 at step t = 1"),
        (counted, ValueError, rf"^fit_rounds: {named}'s step_count \(the number of steps done\)"),
        (reordered, ValueError, r"^Adam.step: state holds \('exp_avg_sq', 'exp_avg'\), expected"),
    ]:
        if per_model:
            make: Any = PerModel(factory)
        else:
            make = lambda s, f=factory: f(1, list(s.parameters()))  # noqa: E731
        with pytest.raises(kind, match=message) as raised:
            fit_rounds(models, nn.CrossEntropyLoss(), make, sets, epochs=1, generators=generators)
        if factory is not counted:
            assert "fit_rounds asked the optimizer before training" in str(raised.value.__notes__)
        for model, before in zip(models, values, strict=True):
            assert all(
                torch.equal(p.data, v) for p, v in zip(model.parameters(), before, strict=True)
            )
            assert all(not p.grad.any() for p in model.parameters())
        assert all(
            torch.equal(g.get_state(), state) for g, state in zip(generators, states, strict=True)
        )


@pytest.mark.parametrize("group", [1, 2])
def test_flat_per_model_optimizers_equal_one_by_one(group: int) -> None:
    """PerModel(flat=True): each optimizer gets one flat Parameter over its models (the stack
    laid out by model); SGD with momentum and ADADELTA, a per-epoch and a per-batch schedule."""
    _one_by_one_and_batched(
        _mixed_optimizer, _mixed_scheduler, group=group, rounds=3 * group, flat=True
    )


def test_per_model_groups_share_an_optimizer() -> None:
    """Six models in three groups of two: each group its own SGD settings and schedule."""
    rates, momenta = [0.3, 0.1, 0.02], [0.0, 0.5, 0.9]
    _one_by_one_and_batched(
        lambda g, p: SGD(p, lr=rates[g], momentum=momenta[g]),
        lambda o: StepDecay(o, step_size=2, gamma=0.5) if o.lr > 0.05 else None,
        group=2,
        rounds=6,
    )


def test_per_model_group_must_divide_the_models() -> None:
    data = make_disk_data(20, 5, 5, seed=0)
    models = [nn.mlp((2, 3, 2), "tanh") for _ in range(3)]
    for group, kind, message in (
        (2, ValueError, "a divisor of the number of models (3), got 2"),
        (0, ValueError, "an integer >= 1, got 0"),
        # A float used to be a ValueError, and a numpy integer refused as not "a positive
        # divisor" when it was one.
        (2.0, TypeError, "an integer >= 1, got 2.0"),
        (True, TypeError, "an integer >= 1, got True"),
    ):
        with pytest.raises(
            kind, match=re.escape(f"fit_rounds: PerModel.group must be {message}") + "$"
        ):
            fit_rounds(
                models,
                nn.CrossEntropyLoss(),
                PerModel(lambda g, p: SGD(p, lr=0.1), group=group),
                [(data.train.x, data.train.y)] * 3,
                epochs=1,
                generators=[torch.Generator() for _ in range(3)],
            )


def test_model_parameters_are_views_of_the_stack() -> None:
    torch.manual_seed(4)
    stacked = nn.stack_models([nn.mlp((2, 3, 2), "tanh", dtype=DTYPE) for _ in range(3)])
    layers = [layer for layer in stacked if isinstance(layer, nn.BatchedLinear)]
    parameters = nn.model_parameters(stacked, 1)
    assert [p.name for p in parameters] == ["[0].weight", "[0].bias", "[2].weight", "[2].bias"]
    first = layers[0]
    assert first.bias is not None
    for p, stacked_parameter in zip(parameters[:2], (first.weight, first.bias), strict=True):
        p.data.add_(1.0)
        p.grad.add_(2.0)
        assert torch.equal(stacked_parameter.data[1], p.data)
        assert torch.equal(stacked_parameter.grad[1], p.grad)
        assert bool((stacked_parameter.grad[0] == 0).all())  # the other models are untouched
    with pytest.raises(IndexError, match="model_parameters: index 3 is out of range for 3 models"):
        nn.model_parameters(stacked, 3)
    # A slice keeps the model dimension.
    pair = nn.model_parameters(stacked, slice(1, 3))
    assert pair[0].data.shape == (2, 3, 2) and pair[0].data.data_ptr() == (
        first.weight.data[1].data_ptr()
    )
    for bad in (slice(2, 2), slice(0, 3, 2)):
        with pytest.raises(IndexError, match="non-empty slice of step 1 within 3 models"):
            nn.model_parameters(stacked, bad)


def test_stack_and_unstack_round_trip() -> None:
    torch.manual_seed(0)
    models = [nn.mlp((3, 4, 2), "elu", dtype=DTYPE) for _ in range(4)]
    stacked = nn.stack_models(models)
    x = torch.randn(4, 6, 3, dtype=DTYPE)
    out = stacked(x)
    for r, model in enumerate(models):
        torch.testing.assert_close(out[r], model(x[r]), rtol=1e-12, atol=1e-12)
        restored = nn.unstack_model(stacked, r)
        for p, q in zip(restored.parameters(), model.parameters(), strict=True):
            assert torch.equal(p.data, q.data)
        # The same network: every layer, the activations included, computing the same outputs.
        assert repr(restored) == repr(model)
        assert torch.equal(restored(x[r]), model(x[r]))


class _DoubledInTraining(nn.Activation):
    """``2 x`` in training mode and ``x`` in evaluation mode: an activation of one's own whose
    function is its mode's (as a noise of its own would be)."""

    def _forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        slope = torch.full_like(input, 2.0 if self.training else 1.0)
        return input * slope, slope

    def _backward(self, grad_output: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        return grad_output * slope


def _all_modes(model: nn.Module) -> list[tuple[str, bool]]:
    return [(name, module.training) for name, module in model.named_modules()]


def _stack_modes_case(case: str) -> list[nn.Sequential]:
    """Three 3-4-4-2 networks (float64) with the activations and modes of ``case``."""
    torch.manual_seed(0)
    differ = ("activations differ", "activations differ, in eval")
    activations = ["tanh", "relu", "tanh"] if case in differ else ["tanh"] * 3
    models = [nn.mlp((3, 4, 4, 2), [name, name], dtype=DTYPE) for name in activations]
    for index, model in enumerate(models):
        if case == "all in eval":
            model.eval()
        elif case == "a Linear in eval":
            model[2].eval()
        elif case == "in eval but a Linear":
            model.eval()
            model[2].train()
        elif case in ("one activation in eval", "activations differ"):
            model[1].train(index != 1)
        elif case == "activations differ, in eval":
            model[1].eval()
        elif case == "in eval, one activation in training":
            model.eval()
            model[1].train(index == 1)
        elif case == "mode-dependent activations":
            doubled = _DoubledInTraining()
            doubled.train(index == 1)
            model[1].eval()
            models[index] = nn.Sequential(*model[:3], doubled, model[4])
    return models


@pytest.mark.parametrize("layout", ["layer", "model"])
@pytest.mark.parametrize(
    "case",
    [
        "all in eval",
        "a Linear in eval",
        "in eval but a Linear",
        "one activation in eval",
        "activations differ",
        "activations differ, in eval",
        "in eval, one activation in training",
        "mode-dependent activations",
    ],
)
def test_stack_and_unstack_keep_every_modules_mode(case: str, layout: str) -> None:
    """Every module of a stack has the training flag of the modules it stacks, and each
    unstacked model the flags its model had, as copy.deepcopy keeps them; stacking the
    unstacked models gives the stack's flags again. The stack and each unstacked model were in
    training mode, their Linear layers too (a model in evaluation mode came back in training
    mode), and activations of one class that differ in their mode alone ran as one, in the
    first model's mode, for every model: an activation whose function is its mode's (2x in
    training mode, x in evaluation) gave model 1 the other mode's outputs. Each stacked model's
    output and input gradient are its model's (float64, 1e-12)."""
    models = _stack_modes_case(case)
    stacked = nn.stack_models(models, layout=layout)
    assert stacked.training == models[0].training
    for position, layer in enumerate(stacked):
        if not isinstance(layer, nn.StackedActivation):
            assert layer.training == models[0][position].training, position
            continue
        for index, model in enumerate(models):
            assert layer.activation_of(index).training == model[position].training
        # (its own: the activations' where they share one, else the models')
        shared = {model[position].training for model in models}
        assert layer.training == (shared.pop() if len(shared) == 1 else models[0].training)
    for index, model in enumerate(models):
        assert _all_modes(nn.unstack_model(stacked, index)) == _all_modes(model), index
        assert _all_modes(nn.unstack_model(stacked, index)) == _all_modes(copy.deepcopy(model))
    unstacked = [nn.unstack_model(stacked, index) for index in range(len(models))]
    assert _all_modes(nn.stack_models(unstacked, layout=layout)) == _all_modes(stacked)
    x = torch.randn(3, 5, 3, dtype=DTYPE)
    grad = torch.randn(3, 5, 2, dtype=DTYPE)
    output = stacked(x)
    grad_input = stacked.backward(grad)
    for index, model in enumerate(models):
        torch.testing.assert_close(output[index], model(x[index]), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            grad_input[index], model.backward(grad[index]), rtol=1e-12, atol=1e-12
        )


def test_models_or_linear_layers_in_other_modes_are_refused_by_stack_models() -> None:
    """A stack, and each of its BatchedLinear layers, has one mode for all its models: models
    in other modes (their own flags), or Linear layers at one position in other modes, are
    refused, naming the position, the models and the modes (they were stacked in training
    mode, the models' modes lost). fit_rounds, which puts every model in training mode as fit
    does, still takes them."""
    models = [nn.mlp((3, 4, 2), "tanh", dtype=DTYPE) for _ in range(3)]
    models[2].eval()
    models[2][1].train()
    with pytest.raises(ValueError) as info:
        nn.stack_models(models)
    assert str(info.value) == (
        "stack_models: models[0] is in training mode and models[2] in evaluation mode (their "
        "own modes, not their layers'); a stack has one mode for all its models: put the "
        "models in the same mode (train() or eval())"
    )
    models[2].train()
    models[1][2].eval()
    with pytest.raises(ValueError) as info:
        nn.stack_models(models)
    assert str(info.value) == (
        "stack_models: layer 2 is in training mode in models[0] and in evaluation mode in "
        "models[1]; a stacked Linear (BatchedLinear) has one mode for all its models: put "
        "these layers in the same mode (train() or eval())"
    )
    assert _all_modes(models[1])[3] == ("2", False)  # (left as they were)
    models[2].eval()
    x = torch.randn(3, 8, 3, dtype=DTYPE)
    y = torch.randint(0, 2, (3, 8))
    fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        lambda stack: SGD(stack.parameters(), lr=0.1),
        [(x[index], y[index]) for index in range(3)],
        epochs=1,
        batch_size=4,
        generators=[torch.Generator().manual_seed(index) for index in range(3)],
    )
    assert all(training for model in models for _, training in _all_modes(model))


@pytest.mark.parametrize("layout", ["layer", "model"])
def test_stacking_copies_values_and_starts_gradients_at_zero(layout: str) -> None:
    """A stack (and a model taken out of it) is a new network: it holds copies of the models'
    parameter values, bit for bit, and gradients of zero, whatever the models had accumulated;
    the models keep theirs."""
    torch.manual_seed(4)
    models = [nn.mlp((3, 4, 2), "tanh", dtype=DTYPE) for _ in range(3)]
    for model in models:
        model(torch.randn(5, 3, dtype=DTYPE))
        model.backward(torch.randn(5, 2, dtype=DTYPE))
    grads = [[p.grad.clone() for p in model.parameters()] for model in models]
    stacked = nn.stack_models(models, layout=layout)
    stacked(torch.randn(3, 5, 3, dtype=DTYPE))
    stacked.backward(torch.randn(3, 5, 2, dtype=DTYPE))  # the stack accumulates from zero
    for r, model in enumerate(models):
        views = nn.model_parameters(stacked, r)
        alone = list(model.parameters())
        assert len(views) == len(alone)
        for view, parameter, grad in zip(views, alone, grads[r], strict=True):
            assert torch.equal(view.data, parameter.data)
            assert torch.equal(parameter.grad, grad) and grad.abs().sum() > 0
    stacked = nn.stack_models(models, layout=layout)
    for r in range(3):
        assert all(not view.grad.any() for view in nn.model_parameters(stacked, r))
        assert all(not p.grad.any() for p in nn.unstack_model(stacked, r).parameters())


def test_batched_linear_backward_matches_autograd() -> None:
    torch.manual_seed(1)
    layer = nn.BatchedLinear(3, 4, 5, dtype=DTYPE)
    x = torch.randn(3, 7, 4, dtype=DTYPE, requires_grad=True)
    weight = layer.weight.data.clone().requires_grad_()
    bias = layer.bias.data.clone().requires_grad_() if layer.bias is not None else None
    assert bias is not None
    grad = torch.randn(3, 7, 5, dtype=DTYPE)
    reference = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
    reference.backward(grad)
    out = layer(x.detach())
    grad_input = layer.backward(grad)
    torch.testing.assert_close(out, reference.detach(), rtol=1e-12, atol=1e-12)
    assert x.grad is not None and weight.grad is not None and bias.grad is not None
    torch.testing.assert_close(grad_input, x.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.weight.grad, weight.grad, rtol=1e-12, atol=1e-12)
    assert layer.bias is not None
    torch.testing.assert_close(layer.bias.grad, bias.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("in_features", "out_features", "bias"),
    [(25, 1, True), (1, 25, True), (40, 1, False), (1, 40, False), (25, 25, True)],
)
def test_one_batched_model_gives_the_bits_it_gets_in_a_stack_of_three(
    in_features: int, out_features: int, bias: bool
) -> None:
    """float32, ``layout="model"``: a stack of one linear model gives the output, input gradient
    and parameter gradients that the same model gets in the middle of a stack of three, bit for
    bit, and autograd's values in float64 to float32's rounding. Alone, the product of a layer
    with one output (forward) or one input (input gradient) was a plain matrix product, which
    rounds otherwise than MKL's batched product of a stack; it is now the first of a pair."""
    torch.manual_seed(2)
    models = [nn.Sequential(nn.Linear(in_features, out_features, bias)) for _ in range(3)]
    stack = nn.stack_models(models, layout="model")
    single = nn.stack_models(models[1:2], layout="model")
    x = torch.randn(3, 16, in_features)
    grad = torch.randn(3, 16, out_features)
    output, grad_input = stack(x), stack.backward(grad)
    alone = single(x[1:2].clone())
    alone_grad_input = single.backward(grad[1:2].clone())
    assert alone.shape == (1, 16, out_features)
    assert alone_grad_input.shape == (1, 16, in_features)
    assert torch.equal(alone[0], output[1])
    assert torch.equal(alone_grad_input[0], grad_input[1])
    for p, q in zip(single.parameters(), stack.parameters(), strict=True):
        assert torch.equal(p.grad[0], q.grad[1])
    layer = single[0]
    assert isinstance(layer, nn.BatchedLinear)
    weight = layer.weight.data[0].double().requires_grad_()
    x64 = x[1].double().requires_grad_()
    reference = x64 @ weight.T
    if layer.bias is not None:
        reference = reference + layer.bias.data[0].double()
    reference.backward(grad[1].double())
    assert x64.grad is not None and weight.grad is not None
    torch.testing.assert_close(alone[0].double(), reference.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone_grad_input[0].double(), x64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad[0].double(), weight.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["class indices", "probabilities"])
def test_stacked_losses_are_each_models_loss(kind: str) -> None:
    """A loss of R stacked predictions (R, N, C) gives each model the loss and gradient of its
    own (N, C) slice (R differs from N, so a mean over the wrong dimension shows)."""
    torch.manual_seed(2)
    logits = torch.randn(3, 5, 4, dtype=DTYPE)
    if kind == "class indices":
        target = torch.randint(0, 4, (3, 5))
    else:
        target = torch.rand(3, 5, 4, dtype=DTYPE).softmax(dim=-1)
    for criterion in (nn.CrossEntropyLoss(), nn.MSELoss(), nn.MSELoss(reduction="mean")):
        losses = criterion(logits, target)
        grad = criterion.backward()
        for r in range(3):
            single = (
                type(criterion)()
                if not isinstance(criterion, nn.MSELoss)
                else nn.MSELoss(reduction=criterion.reduction)
            )
            assert float(single(logits[r], target[r])) == pytest.approx(float(losses[r]), rel=1e-13)
            torch.testing.assert_close(grad[r], single.backward(), rtol=1e-13, atol=1e-15)


def test_stack_models_rejects_different_architectures() -> None:
    a = nn.mlp((2, 3, 2), "tanh")
    b = nn.mlp((2, 4, 2), "tanh")
    c = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 3), nn.Linear(3, 2))
    with pytest.raises(
        ValueError,
        match=r"^stack_models: layer 0 differs between models\[0\] and models\[2\]: "
        r"Linear\(in_features=2, out_features=3, bias=True\) of torch.float32 on cpu against "
        r"Linear\(in_features=2, out_features=4, bias=True\) of torch.float32 on cpu$",
    ):
        nn.stack_models([a, a, b])
    with pytest.raises(ValueError, match=r"layer 2 differs .* of torch.float32 on cpu against .* "):
        nn.stack_models([a, nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2, bias=False))])
    with pytest.raises(ValueError, match=r"layer 0 differs .* against .* of torch.float64 on cpu$"):
        nn.stack_models([a, nn.mlp((2, 3, 2), "tanh", dtype=torch.float64)])
    with pytest.raises(ValueError, match="layer 1 is not an activation in every model"):
        nn.stack_models([a, c])
    with pytest.raises(ValueError, match="at least one"):
        nn.stack_models([])
    before = {name: value.clone() for name, value in a.state_dict().items()}
    for models, index, got in (([a, nn.Linear(2, 3)], 1, "Linear"), ([a, a, "a"], 2, "str")):
        with pytest.raises(
            TypeError, match=rf"^stack_models: models\[{index}\] must be a Sequential, got {got}$"
        ):
            nn.stack_models(models)  # type: ignore[arg-type]
    after = a.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[name], before[name]) for name in before)
    with pytest.raises(TypeError, match="expected a sequence of models, got a single Sequential"):
        nn.stack_models(a)  # type: ignore[arg-type]


def test_unstack_model_needs_a_stack_and_a_model_index() -> None:
    stacked = nn.stack_models([nn.mlp((2, 3, 2), "tanh") for _ in range(2)])
    with pytest.raises(ValueError, match="unstack_model: the network has no stacked layer"):
        nn.unstack_model(nn.mlp((2, 3, 2), "tanh"), 0)
    with pytest.raises(TypeError, match="unstack_model: expected a stack made by stack_models"):
        nn.unstack_model(nn.Linear(2, 2), 0)  # type: ignore[arg-type]
    for bad in (2, -1):
        with pytest.raises(IndexError, match=f"unstack_model: index {bad!r} is out of range"):
            nn.unstack_model(stacked, bad)
    # (no index at all: a type error, as list["0"] is)
    for wrong in (True, "0"):
        with pytest.raises(
            TypeError, match=f"unstack_model: expected an integer index, got {wrong!r}"
        ):
            nn.unstack_model(stacked, wrong)  # type: ignore[arg-type]


def test_fit_rounds_rejects_what_is_not_a_loss_a_pair_or_an_optimizer() -> None:
    data = make_disk_data(20, 5, 5, seed=0)
    pair = (data.train.x, data.train.y)

    def run(**change: object) -> None:
        arguments: dict[str, Any] = {
            "models": [nn.mlp((2, 3, 2), "tanh")],
            "criterion": nn.CrossEntropyLoss(),
            "make_optimizer": lambda stack: SGD(stack.parameters(), lr=0.1),
            "train_sets": [pair],
            "epochs": 1,
            "generators": [torch.Generator().manual_seed(0)],
            **change,
        }
        fit_rounds(**arguments)

    with pytest.raises(TypeError, match="criterion must be a minidl Loss, got CrossEntropyLoss"):
        run(criterion=torch.nn.CrossEntropyLoss())
    with pytest.raises(TypeError, match=r"train_sets\[0\] must be an \(x, y\) pair of tensors"):
        run(train_sets=[data.train.x])
    with pytest.raises(ValueError, match=r"train_sets\[0\] holds 20 inputs and 19 targets"):
        run(train_sets=[(data.train.x, data.train.y[:19])])
    with pytest.raises(TypeError, match=r"validation_sets\[0\] must be an \(x, y\) pair"):
        run(validation_sets=[(data.validation.x, data.validation.y, 0)])
    with pytest.raises(TypeError, match="make_optimizer returned int, expected a minidl Optimizer"):
        run(make_optimizer=lambda stack: 3)
    # Models of activations alone: the optimizer's refusal of no parameters, or (PerModel)
    # an internal function's advice to use stack_models.
    no_layer = (
        r"^fit_rounds: the models hold no Linear layer \(each a Sequential of 1 module, none a "
        r"Linear\), so there is nothing to train"
    )
    for make in (
        lambda stack: SGD(stack.parameters(), lr=0.1),
        PerModel(lambda index, parameters: SGD(parameters, lr=0.1)),
        PerModel(lambda index, parameters: SGD(parameters, lr=0.1), flat=True),
    ):
        with pytest.raises(ValueError, match=no_layer):
            run(models=[nn.Sequential(nn.Tanh())], make_optimizer=make)
    with pytest.raises(
        TypeError, match="make_scheduler returned str, expected a minidl LRScheduler"
    ):
        run(make_scheduler=lambda optimizer: "step")


def test_fit_rounds_refuses_bad_sets_before_training() -> None:
    """Sets that cannot be stacked or that the stack cannot take are refused before anything
    is trained: a bad validation set used to fail after an epoch, with the models changed."""
    torch.manual_seed(0)
    models = [nn.mlp((2, 3, 2), "tanh") for _ in range(2)]
    before = [model.state_dict() for model in models]
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 1, 0])
    pairs = [(x, y), (x, y)]
    like = "must hold samples like"
    bad: list[tuple[dict[str, Any], type[Exception], tuple[str, ...]]] = [
        (
            {"train_sets": [(x, y), (torch.randn(6, 3), y)]},
            ValueError,
            ("train_sets[1] x", like, "train_sets[0]'s x", "(N, 2)", "got (N, 3)"),
        ),
        (
            {"train_sets": [(x, y), (x.double(), y)]},
            ValueError,
            ("train_sets[1] x", like, "torch.float32", "got (N, 2), torch.float64"),
        ),
        (
            {"train_sets": [(x, y), (x, y[:, None])]},
            ValueError,
            ("train_sets[1] y", like, "train_sets[0]'s y", "(N,)", "got (N, 1)"),
        ),
        (
            {"train_sets": [(x, y), (x, y.float())]},
            ValueError,
            ("train_sets[1] y", "torch.int64", "got (N,), torch.float32"),
        ),
        ({"train_sets": [(x[:0], y[:0])] * 2}, ValueError, ("the training sets are empty",)),
        # Training sets the models do not take are named as such, not the validation sets that
        # differ from them (those were compared with the training x first).
        (
            {"train_sets": [(x.double(), y)] * 2},
            TypeError,
            ("the training sets do not fit", "input dtype torch.float64", "torch.float32"),
        ),
        (
            {"train_sets": [(torch.randn(6, 3), y)] * 2},
            ValueError,
            ("the training sets do not fit", "3"),
        ),
        (
            {"validation_sets": [(x, y), (torch.randn(6, 3), y)]},
            ValueError,
            ("validation_sets[1] x", like, "the training x", "got (N, 3)"),
        ),
        (
            {"validation_sets": [(x, y), (x.double(), y)]},
            ValueError,
            ("validation_sets[1] x", like, "got (N, 2), torch.float64"),
        ),
        (
            {"validation_sets": [(x, y), (x[:4], y[:4])]},
            ValueError,
            ("every validation set must have as many samples", "[4, 6]"),
        ),
        (
            {"validation_sets": [(x, y), (x, y[:, None])]},
            ValueError,
            ("validation_sets[1] y must hold class indices of shape (N,)", "(6, 1)"),
        ),
        (
            {"validation_sets": [(x, y), (x, y[:4])]},
            ValueError,
            ("validation_sets[1] x and y must hold as many samples", "(6, 2) and y of shape (4,)"),
        ),
        (
            {"validation_sets": [(x, y), (x, y.tolist())]},
            TypeError,
            ("validation_sets[1] y must be a torch.Tensor", "list"),
        ),
        (
            {"validation_sets": [(x, y), x]},
            TypeError,
            ("validation_sets[1] must be an (x, y) pair of tensors", "Tensor"),
        ),
        ({"validation_sets": [(x[:0], y[:0])] * 2}, ValueError, ("validation_sets[0] is empty",)),
        (
            {"validation_sets": [(x, y)]},
            ValueError,
            ("expected 2 validation_sets, one per model, got 1",),
        ),
        (
            {"generators": [torch.Generator(), 0]},
            TypeError,
            ("generators[1] must be a torch.Generator", "int"),
        ),
    ]
    for change, kind, fragments in bad:
        arguments: dict[str, Any] = {
            "train_sets": pairs,
            "validation_sets": pairs,
            "generators": [torch.Generator().manual_seed(r) for r in range(2)],
            **change,
        }
        with pytest.raises(kind) as caught:
            fit_rounds(
                models,
                nn.CrossEntropyLoss(),
                lambda stack: SGD(stack.parameters(), lr=0.1),
                epochs=2,
                batch_size=3,
                **arguments,
            )
        message = str(caught.value)
        assert message.startswith("fit_rounds: "), message
        for fragment in fragments:
            assert fragment in message, (fragment, message)
        for model, state in zip(models, before, strict=True):
            assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    with pytest.raises(ValueError, match=r"^fit_rounds: expected at least one model$"):
        fit_rounds(
            [],
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            train_sets=[],
            generators=[generator],
            epochs=2,
            batch_size=3,
        )
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("rounds", [1, 2])
@pytest.mark.parametrize("where", ["train_sets", "validation_sets"])
def test_fit_rounds_names_one_pair_given_for_a_list_of_pairs(rounds: int, where: str) -> None:
    """One (x, y) pair given where a list of pairs, one per model, belongs is named as such,
    for any number of models, before anything trains. (With one model it was counted: "expected
    1 train_sets, one per model, got 2"; with two, its x was refused as no pair.)"""
    torch.manual_seed(0)
    models = [nn.mlp((2, 3, 2), "tanh") for _ in range(rounds)]
    before = [model.state_dict() for model in models]
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 1, 0])
    sets: dict[str, Any] = {"train_sets": [(x, y)] * rounds, where: (x, y)}
    with pytest.raises(TypeError) as caught:
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda model: SGD(model.parameters(), lr=0.1),
            epochs=1,
            generators=[torch.Generator() for _ in range(rounds)],
            **sets,
        )
    assert str(caught.value) == (
        f"fit_rounds: {where} must be a list of (x, y) pairs, one per model, got one (x, y) "
        "pair of tensors (for one model: [(x, y)])"
    )
    for model, state in zip(models, before, strict=True):
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_stacked_error_rates_refuses_what_is_not_a_stacked_set() -> None:
    stacked = nn.stack_models([nn.mlp((2, 3, 2), "tanh") for _ in range(2)])
    x, y = torch.randn(2, 5, 2), torch.zeros(2, 5, dtype=torch.int64)
    bad: list[tuple[Any, Any, type[Exception], str]] = [
        (x, y[:, :4], ValueError, r"x of shape \(2, 5, 2\) and y of shape \(2, 4\) must hold as"),
        (
            x,
            y[:, :, None],
            ValueError,
            r"y must hold class indices \(R, N\), got shape \(2, 5, 1\)",
        ),
        (x[0], y[0], ValueError, r"x must hold inputs \(R, N, features\), got shape \(5, 2\)"),
        (x, y.tolist(), TypeError, "y must be a torch.Tensor, got list"),
        # (refused by the first stacked layer, in its words, not the function's: review)
        (
            x[:, :0],
            y[:, :0],
            ValueError,
            r"the sets are empty, got x of shape \(2, 0, 2\) and y of shape \(2, 0\); expected "
            r"at least one sample$",
        ),
        (
            torch.randn(3, 5, 2),
            torch.zeros(3, 5, dtype=torch.int64),
            ValueError,
            r"x of shape \(3, 5, 2\) holds the inputs of 3 models, the stack 2$",
        ),
    ]
    for inputs, targets, kind, message in bad:
        with pytest.raises(kind, match="^stacked_error_rates: " + message):
            stacked_error_rates(stacked, inputs, targets)
    assert stacked.training


def test_fit_rounds_refuses_bad_epochs_batch_sizes_and_set_sizes() -> None:
    torch.manual_seed(0)
    models = [nn.mlp((2, 3, 2), "tanh") for _ in range(2)]
    before = [model.state_dict() for model in models]
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 1, 0])
    bad: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"epochs": -1}, ValueError, r"epochs must be an integer >= 0, got -1"),
        ({"epochs": True}, TypeError, r"epochs must be an integer >= 0, got True"),
        ({"epochs": 2.0}, TypeError, r"epochs must be an integer >= 0, got 2.0"),
        ({"batch_size": 0}, ValueError, r"batch_size must be an integer >= 1, got 0"),
        ({"batch_size": True}, TypeError, r"batch_size must be an integer >= 1, got True"),
        ({"batch_size": "3"}, TypeError, r"batch_size must be an integer >= 1, got '3'"),
        (
            {"train_sets": [(x, y), (x[:5], y[:5])]},
            ValueError,
            r"every training set must have as many samples, got \[5, 6\]",
        ),
        (
            {"train_sets": [(x, y), (torch.tensor(1.0), y)]},
            TypeError,
            r"train_sets\[1\] must be an \(x, y\) pair of tensors",
        ),
    ]
    for change, kind, message in bad:
        arguments: dict[str, Any] = {
            "train_sets": [(x, y), (x, y)],
            "generators": [torch.Generator().manual_seed(r) for r in range(2)],
            "epochs": 1,
            "batch_size": 3,
            **change,
        }
        with pytest.raises(kind, match="^fit_rounds: " + message):
            fit_rounds(
                models,
                nn.CrossEntropyLoss(),
                lambda stack: SGD(stack.parameters(), lr=0.1),
                **arguments,
            )
        for model, state in zip(models, before, strict=True):
            assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    # Zero epochs train nothing and record nothing.
    histories = fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        lambda stack: SGD(stack.parameters(), lr=0.1),
        [(x, y), (x, y)],
        epochs=0,
        generators=[torch.Generator(), torch.Generator()],
    )
    assert histories == [History(), History()]
    for model, state in zip(models, before, strict=True):
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_fit_rounds_defaults_are_fits() -> None:
    """A batch size left out is fit's, and PerModel's defaults are one optimizer per model over
    a layer-wise stack."""
    fit_defaults = inspect.signature(fit).parameters
    for name, parameter in inspect.signature(fit_rounds).parameters.items():
        if parameter.default is not inspect.Parameter.empty and name in fit_defaults:
            assert parameter.default == fit_defaults[name].default, name
    per_model = PerModel(lambda g, parameters: SGD(parameters, lr=0.1))
    assert (per_model.group, per_model.flat) == (1, False)


def test_fit_rounds_rejects_mismatched_lengths() -> None:
    model = nn.mlp((2, 3, 2), "tanh")
    data = make_disk_data(20, 5, 5, seed=0)
    with pytest.raises(ValueError, match="expected 1 generators"):
        fit_rounds(
            [model],
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            [(data.train.x, data.train.y)],
            epochs=1,
            generators=[],
        )


def test_a_run_stopped_by_on_epoch_leaves_the_models_where_it_stopped() -> None:
    data = [make_disk_data(40, 10, 10, seed=r, dtype=DTYPE) for r in range(2)]

    def models() -> list[nn.Sequential]:
        made = []
        for r in range(2):
            torch.manual_seed(r)
            made.append(nn.mlp((2, 5, 2), "tanh", dtype=DTYPE))
        return made

    def train(models: list[nn.Sequential], epochs: int, stop_after: int | None = None) -> None:
        def on_epoch(epoch: int, records: list[EpochRecord]) -> None:
            if epoch == stop_after:
                raise KeyboardInterrupt

        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1, momentum=0.9),
            [(d.train.x, d.train.y) for d in data],
            epochs=epochs,
            batch_size=10,
            generators=[torch.Generator().manual_seed(r) for r in range(2)],
            on_epoch=on_epoch,
        )

    stopped, three_epochs = models(), models()
    initial = [[p.data.clone() for p in model.parameters()] for model in stopped]
    with pytest.raises(KeyboardInterrupt):
        train(stopped, epochs=6, stop_after=2)
    train(three_epochs, epochs=3)
    for model, reference, start in zip(stopped, three_epochs, initial, strict=True):
        for p, q, p0 in zip(model.parameters(), reference.parameters(), start, strict=True):
            assert torch.equal(p.data, q.data)
            assert not torch.equal(p.data, p0)


def _fit_by_sgd(models: list[nn.Sequential], train: Any, **options: Any) -> list[History]:
    """fit_rounds of ``models`` under cross-entropy and SGD at 0.1, a generator seeded r each."""
    options.setdefault("epochs", 3)
    options.setdefault("batch_size", 8)
    return fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        lambda stack: SGD(stack.parameters(), lr=0.1),
        train,
        generators=[torch.Generator().manual_seed(r) for r in range(len(models))],
        **options,
    )


@pytest.mark.parametrize("at", [0, 3])
def test_a_set_of_class_indices_out_of_range_is_named_wherever_the_bad_one_is(at: int) -> None:
    """A class index out of range in a set's first sample was refused by the loss in the trial
    of every set's first sample ("the training sets do not fit: CrossEntropyLoss: class index 7
    is out of range for 2 classes"), naming neither the set nor the sample, where one later in
    the set was named with its set. Both are named alike now, before anything trains."""
    models = _models(2, seed=3)
    before = [copy.deepcopy(model.state_dict()) for model in models]
    x = torch.randn(10, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    y = (x[:, 0] > 0).long()
    bad = y.clone()
    bad[at] = 7
    with pytest.raises(
        ValueError,
        match=r"^fit_rounds: train_sets\[1\] y must hold class indices in \[0, 2\) .*got 7",
    ):
        _fit_by_sgd(models, [(x, y), (x, bad)])
    for model, state in zip(models, before, strict=True):
        assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())


@pytest.mark.parametrize("loss", ["MSELoss", "CrossEntropyLoss"])
def test_targets_that_are_no_class_indices_are_refused_in_the_losss_words(loss: str) -> None:
    """The class-index check that names a set after the trial's refusal (see above) is for
    sets of class indices alone: an MSE's integer one-hot targets, or a cross-entropy's of
    shape (N, 1), were refused as class indices out of range where a value passed 1, and in
    the loss's words (dtype, shape) otherwise; now always in the loss's."""
    models = _models(2, seed=3)
    x = torch.randn(10, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    if loss == "MSELoss":
        y = torch.randint(0, 6, (10, 2), generator=torch.Generator().manual_seed(2))
        criterion: nn.Loss = nn.MSELoss()
        message = r"MSELoss: target dtype torch\.int64 does not match"
    else:
        y = torch.full((10, 1), 5)
        criterion = nn.CrossEntropyLoss()
        message = r"CrossEntropyLoss: class-index target has shape \(2, 1, 1\)"
    with pytest.raises(
        (TypeError, ValueError), match=rf"^fit_rounds: the training sets do not fit: {message}"
    ):
        fit_rounds(
            models,
            criterion,
            lambda stack: SGD(stack.parameters(), lr=0.1),
            [(x, y), (x, y)],
            epochs=1,
            generators=[torch.Generator().manual_seed(r) for r in range(2)],
        )


def test_sets_changed_in_place_by_on_epoch_train_the_next_epoch_as_fits() -> None:
    """fit_rounds stacked its sets once, before the first epoch: an on_epoch that changed them
    in place (new noise, labels flipped) trained on as fit, which reads its data each epoch,
    did not. Read again after each on_epoch, as in fit; the validation sets too."""

    def sets(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        data = [make_disk_data(40, 10, 10, seed=seed + r, dtype=DTYPE) for r in range(2)]
        return [(d.train.x.clone(), d.train.y.clone()) for d in data]

    def flip(x: torch.Tensor, y: torch.Tensor) -> None:
        x.mul_(-1.5)
        y.sub_(1).neg_()

    def flip_all(pairs: tuple[tuple[torch.Tensor, torch.Tensor], ...]) -> None:
        for pair in pairs:
            flip(*pair)

    def models() -> list[nn.Sequential]:
        return [
            nn.mlp((2, 5, 2), "tanh", dtype=DTYPE, generator=torch.Generator().manual_seed(r))
            for r in range(2)
        ]

    alone, stacked = models(), models()
    train, validation = sets(0), sets(10)
    histories = []
    for r, model in enumerate(alone):
        (x, y), (x_val, y_val) = train[r], validation[r]
        histories.append(
            fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), x, y, epochs=3,
                batch_size=8, generator=torch.Generator().manual_seed(r),
                validation=(x_val, y_val),
                on_epoch=lambda record, pairs=((x, y), (x_val, y_val)): flip_all(pairs))
        )  # fmt: skip
    train, validation = sets(0), sets(10)

    def on_epoch(epoch: int, records: list[EpochRecord]) -> None:
        flip_all((*train, *validation))

    rounds = _fit_by_sgd(stacked, train, validation_sets=validation, on_epoch=on_epoch)
    _assert_trained_alike(stacked, alone, rounds, histories)


@pytest.mark.parametrize("change", ["resized", "another dtype", "meta", "sparse"])
def test_a_set_resized_or_cast_by_on_epoch_is_refused(change: str) -> None:
    """Also a set put on another device (the meta device here) or in a sparse layout, which
    failed in torch's words ("Tensor on device cpu is not on the expected device meta!")."""
    data = [make_disk_data(40, 10, 10, seed=r, dtype=DTYPE) for r in range(2)]
    train = [(d.train.x.clone(), d.train.y.clone()) for d in data]

    def on_epoch(epoch: int, records: list[EpochRecord]) -> None:
        x = train[1][0]
        if change == "resized":
            x.resize_(39, 2)
        elif change == "another dtype":
            x.data = x.data.float()  # (the same tensor, of another dtype)
        elif change == "meta":
            train[1] = (x.to("meta"), train[1][1])
        else:
            train[1] = (x.to_sparse(), train[1][1])

    models = [nn.mlp((2, 5, 2), "tanh", dtype=DTYPE) for _ in range(2)]
    expected = {
        "resized": "(39, 2), torch.float64 on cpu",
        "another dtype": "(40, 2), torch.float32 on cpu",
        "meta": "(40, 2), torch.float64 on meta",
        "sparse": "(40, 2), torch.float64 on cpu, torch.sparse_coo",
    }[change]
    with pytest.raises(
        ValueError,
        match=rf"^fit_rounds: train_sets\[1\] x was changed by on_epoch to {re.escape(expected)}, "
        r"from \(40, 2\), torch.float64 on cpu; the sets keep their shapes, dtypes and devices",
    ):
        _fit_by_sgd(models, train, on_epoch=on_epoch)


@pytest.mark.parametrize("index", [0, 2, 3])
def test_batched_rows_equal_rows_trained_round_by_round(index: int) -> None:
    from minidl.experiments.batched import train_row_batched
    from minidl.experiments.config import experiments_for_tables
    from minidl.experiments.training import train_row

    experiment = [e for e in experiments_for_tables("1,2,3") if e.kind == "main"][index * 4]
    batched = train_row_batched(experiment, 2, 0, epochs=3)
    alone = train_row(experiment, 2, 0, epochs=3)
    for a, b in zip(batched.rounds, alone.rounds, strict=True):
        assert a.seeds == b.seeds
        assert a.validation_curve == b.validation_curve
        assert a.lr_curve == b.lr_curve and a.batch_lr == b.batch_lr
        assert (a.test_error, a.train_error) == (b.test_error, b.train_error)
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
            torch.testing.assert_close(p.data, q.data, rtol=1e-5, atol=1e-6)


# -- the "model" layout ---------------------------------------------------------------------------


def _models(count: int, seed: int, dtype: torch.dtype = DTYPE) -> list[nn.Sequential]:
    torch.manual_seed(seed)
    return [nn.mlp((2, 5, 3, 2), "tanh", dtype=dtype) for _ in range(count)]


def test_model_layout_puts_each_model_in_one_aligned_block() -> None:
    models = _models(3, seed=7)
    by_layer = nn.stack_models(models)
    stacked = nn.stack_models(models, layout="model")
    per_model = sum(p.numel() for p in models[0].parameters())
    assert per_model == 10 + 5 + 15 + 3 + 6 + 2
    block = 48  # 41 float64 values padded to a multiple of 64 bytes
    x = torch.randn(3, 4, 2, dtype=DTYPE)
    grad = torch.randn(3, 4, 2, dtype=DTYPE)
    torch.testing.assert_close(stacked(x), by_layer(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        stacked.backward(grad), by_layer.backward(grad), rtol=1e-12, atol=1e-12
    )
    for p, q in zip(stacked.parameters(), by_layer.parameters(), strict=True):
        assert not p.grad.is_contiguous() or p.grad.dim() < 3  # weights: a stride of one block
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-12)
    for r, model in enumerate(models):
        flat = nn.flat_model_parameters(stacked, r)
        assert flat.data.shape == (block,) and flat.data.data_ptr() % 64 == 0
        expected = torch.cat([p.data.reshape(-1) for p in model.parameters()])
        assert torch.equal(flat.data[:per_model], expected)
        assert bool((flat.data[per_model:] == 0).all())
        # The stack's parameters are views of the block: their gradients were written there.
        layers = [layer for layer in stacked if isinstance(layer, nn.BatchedLinear)]
        assert torch.equal(flat.grad[:10], layers[0].weight.grad[r].reshape(-1))
        assert bool((flat.grad[per_model:] == 0).all())
    both = nn.flat_model_parameters(stacked, slice(1, 3))
    assert both.data.shape == (2 * block,)
    assert both.data.data_ptr() == nn.flat_model_parameters(stacked, 1).data.data_ptr()


def test_flat_model_parameters_rejects_what_it_cannot_view() -> None:
    models = _models(3, seed=8)
    with pytest.raises(ValueError, match="does not have the 'model' layout"):
        nn.flat_model_parameters(nn.stack_models(models), 0)
    stacked = nn.stack_models(models, layout="model")
    with pytest.raises(IndexError, match="flat_model_parameters: index 3 is out of range"):
        nn.flat_model_parameters(stacked, 3)
    for bad in (slice(2, 2), slice(0, 3, 2)):
        with pytest.raises(IndexError, match="non-empty slice of step 1 within 3 models"):
            nn.flat_model_parameters(stacked, bad)
    # A parameter moved within the block (same buffer and strides, another offset): the flat
    # view would no longer cover what the parameters hold.
    bias = list(stacked.parameters())[1]
    moved = bias.data.as_strided(
        bias.data.shape, bias.data.stride(), bias.data.storage_offset() + 1
    )
    bias.data = moved
    with pytest.raises(ValueError, match="does not have the 'model' layout"):
        nn.flat_model_parameters(stacked, 0)
    stacked.to(dtype=torch.float32)  # the move lays the parameters out anew
    with pytest.raises(ValueError, match="does not have the 'model' layout"):
        nn.flat_model_parameters(stacked, 0)
    with pytest.raises(ValueError, match="layout must be 'layer' or 'model', got 'rows'"):
        nn.stack_models(models, layout="rows")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="has no stacked layer"):
        nn.flat_model_parameters(nn.Sequential(nn.Tanh()), 0)


def test_per_model_flat_must_be_a_bool() -> None:
    data = make_disk_data(20, 5, 5, seed=0)
    with pytest.raises(TypeError, match=r"PerModel\.flat must be a bool, got 1$"):
        fit_rounds(
            _models(2, seed=0),
            nn.CrossEntropyLoss(),
            PerModel(lambda g, p: SGD(p, lr=0.1), flat=1),  # type: ignore[arg-type]
            [(data.train.x, data.train.y)] * 2,
            epochs=1,
            generators=[torch.Generator(), torch.Generator()],
        )


def _train_flat(
    models: list[nn.Sequential], data: list[tuple[torch.Tensor, torch.Tensor]], seeds: list[int]
) -> list[History]:
    rates = [0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5]
    return fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        PerModel(lambda g, p: SGD(p, lr=rates[seeds[g] % 7], momentum=0.5), flat=True),
        data,
        epochs=4,
        batch_size=25,
        generators=[torch.Generator().manual_seed(s) for s in seeds],
        validation_sets=data,
    )


def test_a_model_trains_to_the_same_bits_in_any_flat_stack() -> None:
    """float32, where a matrix product's rounding can depend on memory alignment: three models
    trained in a stack of three, then at other positions of a stack of seven with other models,
    end bit for bit the same (parameters and histories)."""
    datasets = [make_disk_data(100, 40, 10, seed=30 + r) for r in range(7)]
    data = [(d.train.x, d.train.y) for d in datasets]
    originals = _models(7, seed=9, dtype=torch.float32)
    small = [copy.deepcopy(m) for m in originals[:3]]
    small_histories = _train_flat(small, data[:3], [0, 1, 2])
    order = [4, 0, 5, 1, 6, 3, 2]  # models 0, 1, 2 at positions 1, 3, 6
    large = [copy.deepcopy(originals[i]) for i in order]
    large_histories = _train_flat(large, [data[i] for i in order], order)
    for model_index, position in ((0, 1), (1, 3), (2, 6)):
        assert large_histories[position].train_loss == small_histories[model_index].train_loss
        assert (
            large_histories[position].validation_error
            == small_histories[model_index].validation_error
        )
        for p, q in zip(large[position].parameters(), small[model_index].parameters(), strict=True):
            assert torch.equal(p.data, q.data)


@pytest.mark.parametrize(
    ("sizes", "samples"),
    [((2, 100, 70, 2), 60), ((2, 25, 1, 25, 2), 64)],
    ids=["last-batch-of-12", "one-wide-layer"],
)
def test_a_model_trains_to_the_same_bits_alone_and_in_stacks_of_two_and_three(
    sizes: tuple[int, ...], samples: int
) -> None:
    """float32, one thread, layers large enough for the BLAS kernels, batches of 16: model 0
    trained alone (R = 1), first and second of two (beside two different neighbours) and last
    of three ends with the same bits in its parameters, its last gradients and its losses.

    - 2-100-70-2 on 60 samples (a last batch of 12): the output layer's 2 x 70 weight gradient
      is computed by the batched product only where the check shows it gives every model the
      bits of its own product; for two models and the batch of 12, one draw of random
      operands had shown no difference, and a stack of two ended with other gradient bits.
      (12 samples put the models' activations 32 bytes apart modulo 64: enough on this CPU,
      whose MKL products look at 16-byte alignment.)
    - 2-25-1-25-2: alone, the products of the one-wide layers (the output of the layer with
      one output, the input gradient of the layer with one input) were plain matrix products,
      which round otherwise than MKL's batched ones in a stack."""
    datasets = [make_disk_data(samples, 5, 5, seed=80 + r) for r in range(4)]
    data = [(d.train.x, d.train.y) for d in datasets]
    torch.manual_seed(12)
    originals = [nn.mlp(sizes, "tanh") for _ in range(4)]

    def train(order: list[int]) -> tuple[nn.Sequential, History]:
        models = [copy.deepcopy(originals[i]) for i in order]
        histories = fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            PerModel(lambda g, p: SGD(p, lr=0.1), flat=True),
            [data[i] for i in order],
            epochs=2,
            batch_size=16,
            generators=[torch.Generator().manual_seed(5 + i) for i in order],
        )
        return models[order.index(0)], histories[order.index(0)]

    alone, alone_history = train([0])
    for order in ([0, 1], [1, 0], [2, 0], [1, 3, 0]):
        model, history = train(order)
        assert history.train_loss == alone_history.train_loss, order
        for p, q in zip(model.parameters(), alone.parameters(), strict=True):
            assert torch.equal(p.data, q.data), order
            assert torch.equal(p.grad, q.grad), order


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
        lambda p: Adadelta(p, lr=1.0),
        lambda p: optim.Adam(p, lr=0.01, weight_decay=0.01),
        lambda p: optim.AdamW(p, lr=0.01),
        lambda p: optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True),
        lambda p: optim.Adagrad(p, lr=0.1, initial_accumulator_value=0.1),
    ],
)
def test_padding_of_flat_blocks_stays_zero(make_optimizer: OptimizerFactory) -> None:
    """Every optimizer of minidl leaves a zero value with a zero gradient at zero, so the
    padding of the blocks that flat_model_parameters views stays zero, values and gradients."""
    models = _models(2, seed=11)
    stacked = nn.stack_models(models, layout="model")
    blocks = [nn.flat_model_parameters(stacked, r) for r in range(2)]
    start = [block.data.clone() for block in blocks]
    optimizers = [make_optimizer([block]) for block in blocks]
    criterion = nn.CrossEntropyLoss()
    x, y = torch.randn(2, 20, 2, dtype=DTYPE), torch.randint(0, 2, (2, 20))
    for _ in range(5):
        for optimizer in optimizers:
            optimizer.zero_grad()
        criterion(stacked(x), y)
        stacked.backward(criterion.backward())
        for optimizer in optimizers:
            optimizer.step()
    per_model = sum(p.numel() for p in models[0].parameters())
    for block, before in zip(blocks, start, strict=True):
        assert bool((block.data[per_model:] == 0).all())
        assert bool((block.grad[per_model:] == 0).all())
        assert not torch.equal(block.data[:per_model], before[:per_model])


@pytest.mark.parametrize("training", [True, False])
def test_stacked_error_rates_are_each_models_and_restore_the_mode(training: bool) -> None:
    """The error rate of each stacked model on its own set is error_rate of that model alone,
    and the stack's training mode is what it was."""
    models = _models(3, seed=9)
    stacked = nn.stack_models(models).train(training)
    sets = [make_disk_data(30, 5, 5, seed=40 + r, dtype=DTYPE).train for r in range(3)]
    errors = stacked_error_rates(
        stacked, torch.stack([s.x for s in sets]), torch.stack([s.y for s in sets])
    )
    assert errors == [error_rate(model, s.x, s.y) for model, s in zip(models, sets, strict=True)]
    assert stacked.training is training


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_two_class_error_rates_are_those_of_the_classes(dtype: torch.dtype) -> None:
    """With two classes the validation errors are counted without argmax
    (rounds._two_class_right); each model's error is that of comparing its classes (argmax, -1
    for a row holding a NaN) with y, for random scores and for equal scores (0.0 against -0.0,
    infinities: class 0, the first), a NaN in either column and both, each with y of 0 and 1."""
    generator = torch.Generator().manual_seed(3)
    output = torch.randn(4, 60, 2, generator=generator, dtype=dtype)
    inf, nan = float("inf"), float("nan")
    special = [
        (0.5, 0.5), (0.0, -0.0), (-0.0, 0.0), (inf, inf), (-inf, -inf), (-inf, inf),
        (inf, -inf), (nan, 1.0), (1.0, nan), (nan, nan), (nan, inf), (-inf, nan),
    ]  # fmt: skip
    for row, scores in enumerate(special):
        output[row % 4, row] = torch.tensor(scores, dtype=dtype)
        output[(row + 1) % 4, 30 + row] = torch.tensor(scores, dtype=dtype)
    y = torch.randint(0, 2, (4, 60), generator=generator)
    y[:, :12] = 0
    y[:, 30:42] = 1
    wrong = (_classes(output) != y).sum(dim=1).tolist()
    assert _error_rates(output, y) == [100.0 * count / 60 for count in wrong]
    assert _two_class_right(output, y).tolist() == [60 - n for n in wrong]
    # (the other path, for more classes, gives the same errors on the same scores)
    three = torch.cat([output, torch.full((4, 60, 1), -inf, dtype=dtype)], dim=2)
    assert _error_rates(three, y) == _error_rates(output, y)


# -- on_epoch, refusals and what the models are left with --------------------------------------


def _two_models() -> list[nn.Sequential]:
    made = []
    for r in range(2):
        torch.manual_seed(r)
        made.append(nn.mlp((2, 5, 2), "tanh", dtype=DTYPE))
    return made


def _train_two(
    models: list[nn.Sequential], epochs: int, on_epoch: Any = None, **change: Any
) -> list[History]:
    data = [make_disk_data(40, 10, 10, seed=r, dtype=DTYPE) for r in range(2)]
    arguments: dict[str, Any] = {
        "epochs": epochs,
        "batch_size": 15,
        "generators": [torch.Generator().manual_seed(r) for r in range(2)],
        "validation_sets": [(d.validation.x, d.validation.y) for d in data],
        "on_epoch": on_epoch,
        **change,
    }
    make_optimizer = arguments.pop("make_optimizer", None) or (
        lambda stack: SGD(stack.parameters(), lr=0.1, momentum=0.9)
    )
    return fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        make_optimizer,
        [(d.train.x, d.train.y) for d in data],
        **arguments,
    )


@pytest.mark.parametrize("change", ["in place", "data", "parameter", "one more"])
def test_fit_rounds_refuses_a_change_on_epoch_makes_to_a_model(change: str) -> None:
    """The models get the stack's parameters when training ends: a change on_epoch made to one
    (shrunk weights, a new tensor or Parameter, one Parameter more) was overwritten, silently,
    where fit trains on from it. Refused after that on_epoch, naming the model; the models then
    hold the training of the epochs before, as after any refusal of on_epoch's (review)."""
    models = _two_models()

    def edit(epoch: int, records: list[EpochRecord]) -> bool:
        layer = models[1][0]
        if change == "in place":
            layer.weight.data.mul_(0.5)
        elif change == "data":
            layer.weight.data = layer.weight.data * 0.5
        elif change == "parameter":
            layer.register_parameter("bias", Parameter(torch.zeros(5, dtype=DTYPE)))
        else:  # (last: a count refused in words of its own, not zip's error of two lengths)
            models[1][-1].register_parameter("scale", Parameter(torch.ones(2, dtype=DTYPE)))
        return change == "data"  # (refused also where on_epoch stops the training)

    with pytest.raises(
        ValueError,
        match=r"^fit_rounds: on_epoch changed the parameters of models\[1\]; fit_rounds trains "
        r"the models as one stack of copies",
    ):
        _train_two(models, 3, on_epoch=edit)
    trained = _two_models()
    _train_two(trained, 1)
    for model, expected in zip(models, trained, strict=True):
        kept = [p for name, p in model.named_parameters() if not name.endswith(".scale")]
        for p, q in zip(kept, expected.parameters(), strict=True):
            assert torch.equal(p.data, q.data)
    # (reading them, as recording them, is no change)
    reading = _two_models()

    def read(epoch: int, records: list[EpochRecord]) -> None:
        for parameter in reading[0].parameters():
            parameter.data.sum()

    _train_two(reading, 2, on_epoch=read)


@pytest.mark.parametrize("label", [5, -1])
def test_fit_rounds_refuses_validation_labels_on_epoch_puts_out_of_range(label: int) -> None:
    """With two classes the right samples were counted as y == 1 against class 1 and any other
    label against class 0: labels that on_epoch set to 5 (or -1) were counted right wherever
    class 0 was predicted, where fit counts them wrong. The labels read again are checked, as
    those given were (review)."""
    data = [make_disk_data(40, 10, 10, seed=r, dtype=DTYPE) for r in range(2)]
    validation = [(d.validation.x, d.validation.y.clone()) for d in data]

    def spoil(epoch: int, records: list[EpochRecord]) -> None:
        validation[0][1].fill_(label)

    with pytest.raises(
        ValueError,
        match=rf"^fit_rounds: validation_sets\[0\] \(changed by on_epoch\) y must hold class "
        rf"indices in \[0, 2\) \(the model's outputs have 2 columns\), got {label}$",
    ):
        _train_two(_two_models(), 3, on_epoch=spoil, validation_sets=validation)


@pytest.mark.parametrize("spoiled", ["7", "-1", "probabilities"])
def test_fit_rounds_refuses_training_targets_on_epoch_makes_bad_before_the_next_epoch(
    spoiled: str,
) -> None:
    """A training label that on_epoch set out of range (or a probability row it made 2, 0)
    was found by the loss in the next epoch's batch that held it, in the loss's words, every
    model trained on the batches before it; fit checks the targets after on_epoch. Refused now
    before the next epoch, naming the set, the models where the epoch left them (review)."""
    data = [make_disk_data(40, 10, 10, seed=r, dtype=DTYPE) for r in range(2)]
    probabilities = spoiled == "probabilities"

    def spoil(sets: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        bad = [2.0, 0.0] if probabilities else int(spoiled)
        sets[1][1][37] = torch.tensor(bad, dtype=DTYPE) if probabilities else bad

    def train(epochs: int, spoiling: bool) -> list[nn.Sequential]:
        models = _two_models()
        sets = [
            (d.train.x, torch.nn.functional.one_hot(d.train.y, 2).to(DTYPE))
            if probabilities
            else (d.train.x, d.train.y.clone())
            for d in data
        ]
        try:
            fit_rounds(
                models,
                nn.CrossEntropyLoss(),
                lambda stack: SGD(stack.parameters(), lr=0.1, momentum=0.9),
                sets,
                epochs=epochs,
                batch_size=15,
                generators=[torch.Generator().manual_seed(r) for r in range(2)],
                on_epoch=(lambda epoch, records: spoil(sets)) if spoiling else None,
            )
        finally:
            trained.append(models)
        return models

    trained: list[list[nn.Sequential]] = []
    message = (
        r"^fit_rounds: the targets of train_sets\[1\] \(changed by on_epoch\): CrossEntropyLoss: "
        if probabilities
        else rf"^fit_rounds: train_sets\[1\] \(changed by on_epoch\) y must hold class indices "
        rf"in \[0, 2\) .*got {spoiled}$"
    )
    with pytest.raises(ValueError, match=message):
        train(3, spoiling=True)
    for model, expected in zip(trained[0], train(1, spoiling=False), strict=True):
        for p, q in zip(model.parameters(), expected.parameters(), strict=True):
            assert torch.equal(p.data, q.data)


def test_fit_rounds_names_a_layer_whose_weight_was_resized() -> None:
    """One model's weight data of another shape failed in torch.stack's words (every model's, as
    "the training sets do not fit"): stack_models checks the tensors against the layer's
    sizes, as Linear does, naming the layer and the model (review)."""
    models = _two_models()
    before = [p.data.clone() for model in models for p in model.parameters()]
    original = models[1][0].weight.data
    models[1][0].weight.data = torch.randn(5, 3, dtype=DTYPE)
    with pytest.raises(
        ValueError,
        match=r"^fit_rounds: stack_models: layer 0 of models\[1\]: weight has shape \(5, 3\), "
        r"expected \(out_features, in_features\) = \(5, 2\)$",
    ):
        _train_two(models, 1)
    models[1][0].weight.data = original  # (the rest was left as it was)
    after = [p.data for model in models for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_fit_rounds_stops_every_model_after_an_epoch_whose_on_epoch_returns_true() -> None:
    """A True return value used to be ignored (fit stops on it); any other was taken too."""
    seen: list[int] = []

    def stop_at_two(epoch: int, records: list[EpochRecord]) -> bool:
        seen.append(epoch)
        return epoch == 2

    stopped, exact = _two_models(), _two_models()
    histories = _train_two(stopped, 10, stop_at_two)
    expected = _train_two(exact, 3)
    assert seen == [0, 1, 2]
    assert histories == expected and all(len(h.train_loss) == 3 for h in histories)
    for model, reference in zip(stopped, exact, strict=True):
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            assert torch.equal(p.data, q.data)
    numpy = pytest.importorskip("numpy")
    for stop in (numpy.float64(2.0) > 1.0, torch.tensor(2.0) > 1.0):
        histories = _train_two(_two_models(), 4, lambda epoch, records, stop=stop: stop)
        assert [len(h.train_loss) for h in histories] == [1, 1]
    histories = _train_two(_two_models(), 3, lambda epoch, records: numpy.bool_(False))
    assert [len(h.train_loss) for h in histories] == [3, 3]
    # Another value is refused after its epoch, as fit refuses it; the models keep that epoch.
    refused, one_epoch = _two_models(), _two_models()
    with pytest.raises(
        TypeError, match=r"^fit_rounds: on_epoch must return None or a bool .*, got int$"
    ):
        _train_two(refused, 4, lambda epoch, records: 1)
    _train_two(one_epoch, 1)
    for model, reference in zip(refused, one_epoch, strict=True):
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            assert torch.equal(p.data, q.data)
            assert torch.equal(p.grad, q.grad)


def test_per_model_group_may_be_a_numpy_integer() -> None:
    """np.int64(2) used to be refused as "a positive divisor ... got np.int64(2)"."""
    numpy = pytest.importorskip("numpy")
    histories = []
    for group in (2, numpy.int64(2)):
        models = _two_models()
        histories.append(
            _train_two(models, 2, make_optimizer=PerModel(lambda g, p: SGD(p, lr=0.1), group=group))
        )
    assert histories[0] == histories[1]


def test_stacked_error_rates_needs_a_stack() -> None:
    """A model that is not a stack used to give an AttributeError (5) or the message of a Linear
    (a plain network)."""
    x, y = torch.randn(2, 5, 2), torch.zeros(2, 5, dtype=torch.int64)
    plain = nn.mlp((2, 3, 2), "tanh")
    for model, kind, message in (
        (5, TypeError, "expected a stack made by stack_models, got int"),
        (nn.Linear(2, 2), TypeError, "expected a stack made by stack_models, got Linear"),
        (plain, ValueError, "the network has no stacked layer (BatchedLinear); make it with "),
    ):
        with pytest.raises(kind) as error:
            stacked_error_rates(model, x, y)  # type: ignore[arg-type]
        assert str(error.value).startswith(f"stacked_error_rates: {message}")
    assert plain.training


def test_fit_rounds_refusal_from_its_probe_says_whose_shapes_it_quotes() -> None:
    """The refusal quotes the stacked probe's shapes ("(2, 1, 3)"), which the user never made:
    a note says so, and gives each set's first sample's, as fit's note does."""
    wide = torch.randn(30, 3, dtype=DTYPE)
    labels = torch.zeros(30, dtype=torch.int64)
    with pytest.raises(ValueError) as error:
        fit_rounds(
            _two_models(),
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            [(wide, labels), (wide, labels)],
            epochs=1,
            generators=[torch.Generator(), torch.Generator()],
        )
    assert str(error.value).startswith("fit_rounds: the training sets do not fit: BatchedLinear")
    assert "(2, 1, 3)" in str(error.value)
    assert error.value.__notes__ == [
        "fit_rounds ran the stacked models and the loss on the first sample of every training "
        "set, stacked (x of shape (2, 1, 3) and y of shape (2, 1): one sample per model), before "
        "training: the shapes above are those; each set's first sample, x[:1] and y[:1], has "
        "shapes (1, 3) and (1,)"
    ]


def test_fit_rounds_leaves_the_gradients_as_fit_does() -> None:
    """Only the parameters used to be copied back: the models' gradients stayed as they were,
    where fit leaves the last batch's. A run of no epoch leaves them untouched, as fit does."""
    models = _two_models()
    alone = [copy.deepcopy(model) for model in models]
    data = [make_disk_data(40, 10, 10, seed=r, dtype=DTYPE) for r in range(2)]
    _train_two(models, 2)
    for r, model in enumerate(alone):
        fit(
            model,
            nn.CrossEntropyLoss(),
            SGD(model.parameters(), lr=0.1, momentum=0.9),
            data[r].train.x,
            data[r].train.y,
            epochs=2,
            batch_size=15,
            generator=torch.Generator().manual_seed(r),
        )
    for model, reference in zip(models, alone, strict=True):
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            assert bool(q.grad.any())
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14)
    untouched = _two_models()
    for model in untouched:
        for p in model.parameters():
            p.grad.fill_(3.0)
    _train_two(untouched, 0)
    assert all(bool((p.grad == 3.0).all()) for model in untouched for p in model.parameters())


@pytest.mark.parametrize("per_model", [False, True])
def test_a_gradient_that_no_optimizer_zeroes_accumulates_as_in_fit(per_model: bool) -> None:
    """An optimizer over some of a model's parameters (the first layer's): fit zeroes only
    those gradients, so the others accumulate over the batches onto the model's own. fit_rounds
    zeroed the whole stack's with PerModel, and its stack started from zero gradients, so
    the last layer's gradients ended as the last batch's alone (or lacked the model's)."""
    models = _two_models()
    for model in models:
        for p in model.parameters():
            p.grad.fill_(0.25)
    alone = [copy.deepcopy(model) for model in models]
    data = [make_disk_data(40, 10, 10, seed=r, dtype=DTYPE) for r in range(2)]
    for r, model in enumerate(alone):
        fit(
            model,
            nn.CrossEntropyLoss(),
            SGD(list(model.parameters())[:2], lr=0.1, momentum=0.9),
            data[r].train.x,
            data[r].train.y,
            epochs=2,
            batch_size=15,
            validation=(data[r].validation.x, data[r].validation.y),
            generator=torch.Generator().manual_seed(r),
        )
    make_optimizer = (
        PerModel(lambda g, p: SGD(p[:2], lr=0.1, momentum=0.9))
        if per_model
        else (lambda stack: SGD(list(stack.parameters())[:2], lr=0.1, momentum=0.9))
    )
    _train_two(models, 2, make_optimizer=make_optimizer)
    for model, reference in zip(models, alone, strict=True):
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p.data, q.data, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("where", "pair", "got"),
    [
        ("train_sets", (0, 1), "a tuple of int and int"),
        ("train_sets", (torch.tensor(1.0), torch.zeros(2)), "a tuple of a 0-dim Tensor and Tensor"),
        ("train_sets", "xy", "str"),
        ("train_sets", (1,), "a tuple of 1 item"),
        ("validation_sets", [1, 2, 3], "a list of 3 items"),
    ],
)
def test_fit_rounds_says_what_was_given_for_a_set(where: str, pair: object, got: str) -> None:
    """A tuple that is no pair of tensors (an int for x, a 0-dim x, one or three items) used to
    be refused as "got tuple", when a tuple is what was asked for."""
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    sets = {
        "train_sets": [(x, y), (x, y)],
        "validation_sets": [(x, y), (x, y)],
        where: [(x, y), pair],
    }
    with pytest.raises(TypeError) as caught:
        fit_rounds(
            [nn.mlp((2, 3, 2), "tanh") for _ in range(2)],
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            epochs=1,
            generators=[torch.Generator(), torch.Generator()],
            **sets,
        )
    assert (
        str(caught.value) == f"fit_rounds: {where}[1] must be an (x, y) pair of tensors, got {got}"
    )


@pytest.mark.parametrize("flat", [False, True])
def test_per_model_optimizers_zero_the_gradients_of_their_other_parameters(flat: bool) -> None:
    """A PerModel optimizer that also holds a parameter outside the stack (an extra scale of
    one's own) zeroes its gradient before every batch, as fit's optimizer does; fit_rounds
    zeroed the stack's gradients alone, so the extra parameter stepped on a stale gradient."""
    models = _two_models()
    alone = [copy.deepcopy(model) for model in models]
    extra = [Parameter(torch.ones(3, dtype=DTYPE)) for _ in range(2)]
    extra_alone = copy.deepcopy(extra)
    for parameter in extra + extra_alone:
        parameter.grad.fill_(2.0)
    data = [make_disk_data(40, 10, 10, seed=r, dtype=DTYPE) for r in range(2)]
    for r, model in enumerate(alone):
        fit(
            model,
            nn.CrossEntropyLoss(),
            SGD([*model.parameters(), extra_alone[r]], lr=0.1, weight_decay=0.1),
            data[r].train.x,
            data[r].train.y,
            epochs=2,
            batch_size=15,
            validation=(data[r].validation.x, data[r].validation.y),
            generator=torch.Generator().manual_seed(r),
        )
    _train_two(
        models,
        2,
        make_optimizer=PerModel(
            lambda g, p: SGD([*p, extra[g]], lr=0.1, weight_decay=0.1), flat=flat
        ),
    )
    for parameter, reference in zip(extra, extra_alone, strict=True):
        torch.testing.assert_close(parameter.data, reference.data, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(parameter.grad, reference.grad, rtol=1e-12, atol=1e-14)
    for model, reference in zip(models, alone, strict=True):
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p.data, q.data, rtol=1e-12, atol=1e-14)


def test_the_schedules_interval_is_read_before_training_not_at_every_batch() -> None:
    """A schedule's interval is a setting read through a descriptor (about 0.2 us): it was read
    for every model at every batch; it is read once an epoch, as fit reads it."""
    reads = [0]

    class Counted(CyclicLR):
        @property
        def interval(self) -> Literal["batch"]:  # type: ignore[override]
            reads[0] += 1
            return "batch"

    datasets = [make_disk_data(120, 50, 10, seed=300 + r, dtype=DTYPE) for r in range(ROUNDS)]
    models = [nn.mlp((2, 4, 2), "tanh", dtype=DTYPE) for _ in range(ROUNDS)]
    histories = fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        PerModel(lambda r, p: SGD(p, lr=0.05)),
        [(d.train.x, d.train.y) for d in datasets],
        epochs=2,
        batch_size=30,
        generators=[torch.Generator().manual_seed(r) for r in range(ROUNDS)],
        make_scheduler=lambda o: Counted(o, 0.01, 0.1, 3),
    )
    assert all(len(history.batch_lr) == 2 * 4 for history in histories)
    assert reads[0] <= 3 * ROUNDS  # (before training and once an epoch, not once a batch)


class _DoubledLinear(nn.Linear):
    """A Linear whose output, and so its gradients, are doubled: it computes otherwise than
    Linear."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input) * 2.0

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return super().backward(grad_output * 2.0)

    def backward_parameters(self, grad_output: torch.Tensor) -> None:
        super().backward_parameters(grad_output * 2.0)


class _TripledSequential(nn.Sequential):
    """A Sequential whose output, and so its gradients, are tripled."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input) * 3.0

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return super().backward(grad_output * 3.0)

    def backward_parameters(self, grad_output: torch.Tensor) -> None:
        super().backward_parameters(grad_output * 3.0)


class _ZeroBiasLinear(nn.Linear):
    """A Linear of its own that only starts otherwise (zero biases): it computes as Linear."""

    def __init__(self, in_features: int, out_features: int, **options: Any) -> None:
        super().__init__(in_features, out_features, **options)
        assert self.bias is not None
        self.bias.data.zero_()


def _subclassed(kind: str, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    first = {"linear": _DoubledLinear, "harmless": _ZeroBiasLinear}.get(kind, nn.Linear)
    sequential = _TripledSequential if kind == "sequential" else nn.Sequential
    return sequential(first(2, 5, dtype=DTYPE), nn.Tanh(), nn.Linear(5, 2, dtype=DTYPE))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (
            "linear",
            r"stack_models: layer 0 of models\[0\] is a _DoubledLinear, whose class overrides "
            r"Linear.forward: a stack computes every model's layer as Linear does",
        ),
        (
            "sequential",
            r"stack_models: models\[0\] is a _TripledSequential, whose class overrides "
            r"Sequential.forward: a stack runs its layers as Sequential does",
        ),
    ],
)
def test_a_subclass_that_computes_otherwise_is_refused_not_stacked_as_its_base(
    kind: str, message: str
) -> None:
    """A stack computes with BatchedLinear and Sequential's own methods: a model of a subclass
    that overrides them trained in a stack would end other than fit leaves it (its doubled
    outputs were silently dropped), so it is refused, by fit_rounds before anything changes."""
    models = [_subclassed(kind, r) for r in range(2)]
    before = [copy.deepcopy(model.state_dict()) for model in models]
    _assert_refused_by_both(models, message, [torch.Generator().manual_seed(r) for r in range(2)])
    for model, state in zip(models, before, strict=True):
        for name, value in model.state_dict().items():
            assert torch.equal(value, state[name])


def test_a_subclass_that_computes_as_its_base_still_trains_as_fit() -> None:
    models = [_subclassed("harmless", r) for r in range(2)]
    alone = [copy.deepcopy(model) for model in models]
    expected = _trained_alone(alone)
    _assert_trained_alike(models, alone, _trained_rounds(models), expected)


def _hooked_models(
    place: str, name: str, index: int = 1
) -> tuple[list[nn.Sequential], nn.Module, Any]:
    """Two models of _subclassed's architecture, the second (or model ``index``) with method
    ``name`` of one of its parts (``place``: the model, its first or last Linear, its Tanh) set
    on that part's instance, as a wrapper of the class's method that doubles its first argument
    (an input or a gradient, to change what the part computes): the models, the part and the
    wrapper."""
    models = [_subclassed("plain", r) for r in range(2)]
    hooked = models[index]
    part = {"model": hooked, "first": hooked[0], "tanh": hooked[1]}.get(place, hooked[2])
    method = getattr(part, name)

    def doubled(first: torch.Tensor, *rest: Any, **options: Any) -> Any:
        return method(first * 2.0, *rest, **options)

    setattr(part, name, doubled)
    return models, part, doubled


#: Where a method is set (see _hooked_models), its name, and the refusal's start.
_SET_ON_INSTANCE = [
    pytest.param(place, name, what, why, id=f"{place}.{name}")
    for place, name, what, why in [
        *[
            ("model", name, r"models\[1\] \(Sequential\)", "a stack runs its layers as")
            for name in ("forward", "backward_parameters")
        ],
        *[
            (place, name, rf"layer {position} of models\[1\] \(Linear\)", "a stack computes")
            for place, position, name in (
                ("first", 0, "forward"),
                ("first", 0, "backward_parameters"),
                ("first", 0, "_apply"),
                ("first", 0, "_accumulate"),
                ("first", 0, "_accumulate_bias"),
                ("last", 2, "backward"),
            )
        ],
        *[
            ("tanh", name, r"layer 1 of models\[1\] \(Tanh\)", "a stack runs a copy of")
            for name in ("forward", "backward", "backward_parameters")
        ],
    ]
]


@pytest.mark.parametrize(("place", "name", "what", "why"), _SET_ON_INSTANCE)
def test_a_method_set_on_an_instance_is_refused_not_stacked_as_the_class(
    place: str, name: str, what: str, why: str
) -> None:
    """A method of one's own set on the instance of a model, of its Linear or of its activation
    (to change a gradient, say) is called by fit and a loop, while a stack computed the model
    as the class does, silently (the last Linear's backward doubled here: fit_rounds left that
    model 0.16 away from fit's after two epochs): refused by stack_models, and by fit_rounds
    before anything changes (parameters, mode, generators, the method set)."""
    models, part, doubled = _hooked_models(place, name)
    for model in models:
        model.eval()
    generators = [torch.Generator().manual_seed(r) for r in range(2)]
    before = [copy.deepcopy(model.state_dict()) for model in models]
    states = [generator.get_state() for generator in generators]
    message = f"stack_models: {what} has {name} set on its instance: {why}"
    _assert_refused_by_both(models, message, generators)
    assert vars(part)[name] is doubled
    for model, state in zip(models, before, strict=True):
        assert not model.training
        for key, value in model.state_dict().items():
            assert torch.equal(value, state[key])
    for generator, state in zip(generators, states, strict=True):
        assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize(
    ("place", "what"),
    [
        ("model", r"models\[0\] \(Sequential\)"),
        ("first", r"layer 0 of models\[0\] \(Linear\)"),
        ("tanh", r"layer 1 of models\[0\] \(Tanh\)"),
    ],
)
def test_a_method_set_on_the_first_models_instance_is_refused_too(place: str, what: str) -> None:
    """Every model of the stack is looked at, the first as the others: its own backward set on
    the instance of the model, of its Linear or of its activation is refused, naming it."""
    models, _, _ = _hooked_models(place, "backward", index=0)
    message = f"stack_models: {what} has backward set on its instance: "
    _assert_refused_by_both(models, message, [torch.Generator().manual_seed(r) for r in range(2)])


def _bound_elsewhere(models: list[nn.Sequential]) -> str:
    """The second model's first Linear computes with the first model's weights."""
    models[1][0].forward = models[0][0].forward  # type: ignore[method-assign]
    return "forward"


def _bound_own_function(models: list[nn.Sequential]) -> str:
    """The second model's last Linear doubles its gradient, by a function bound to it."""

    def doubled(self: nn.Linear, grad_output: torch.Tensor) -> torch.Tensor:
        return nn.Linear.backward(self, 2.0 * grad_output)

    models[1][2].backward = types.MethodType(doubled, models[1][2])  # type: ignore[method-assign]
    return "backward"


def _tensor_method(models: list[nn.Sequential]) -> str:
    """The second model's first Linear replaced by a method of Tensor (``Tensor.tanh``, to
    which no weak reference can be made)."""
    models[1][0].forward = torch.Tensor.tanh  # type: ignore[method-assign]
    return "forward"


@pytest.mark.parametrize("setting", [_bound_elsewhere, _bound_own_function, _tensor_method])
def test_a_method_set_on_an_instance_in_any_form_is_refused(
    setting: Callable[[list[nn.Sequential]], str],
) -> None:
    """A method set on a Linear's instance is refused whatever it is: the bound method of
    another layer (the same class's function, bound to another instance), a function of one's
    own bound to the layer (types.MethodType), a method of Tensor; only the class's method
    bound to the layer itself is the class's."""
    models = [_subclassed("plain", r) for r in range(2)]
    name = setting(models)
    position = 0 if name == "forward" else 2
    message = (
        rf"stack_models: layer {position} of models\[1\] \(Linear\) has {name} set on its "
        "instance: a stack computes"
    )
    _assert_refused_by_both(models, message, [torch.Generator().manual_seed(r) for r in range(2)])


def test_a_call_set_on_a_models_instance_is_no_method_of_its_own() -> None:
    """Python looks ``__call__`` up on the class: one set on a model's instance is never
    called, by fit as by the stack, which takes the model and trains it as fit does."""
    models = [_subclassed("plain", r) for r in range(2)]

    def never_called(*arguments: Any) -> Any:
        raise AssertionError("an instance's __call__ was called")

    models[1].__call__ = never_called  # type: ignore[method-assign]
    alone = copy.deepcopy(models)
    expected = _trained_alone(alone)
    _assert_trained_alike(models, alone, _trained_rounds(models), expected)


def _assert_refused_by_both(
    models: list[nn.Sequential], message: str, generators: list[torch.Generator]
) -> None:
    """stack_models refuses ``models`` with ``message`` (a pattern), and fit_rounds with it
    after its own name."""
    data = [make_disk_data(12, 4, 4, seed=r, dtype=DTYPE) for r in range(len(models))]
    with pytest.raises(TypeError, match="^" + message):
        nn.stack_models(models)
    with pytest.raises(TypeError, match="^fit_rounds: " + message):
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            [(d.train.x, d.train.y) for d in data],
            epochs=1,
            batch_size=5,
            generators=generators,
        )


def _trained_alone(models: list[nn.Sequential]) -> list[History]:
    """Each of ``models`` trained by fit as :func:`_trained_rounds` trains them together."""
    data = [make_disk_data(12, 4, 4, seed=r, dtype=DTYPE) for r in range(len(models))]
    return [
        fit(
            model,
            nn.CrossEntropyLoss(),
            SGD(model.parameters(), lr=0.1),
            d.train.x,
            d.train.y,
            epochs=2,
            batch_size=5,
            validation=(d.validation.x, d.validation.y),
            generator=torch.Generator().manual_seed(r),
        )
        for r, (model, d) in enumerate(zip(models, data, strict=True))
    ]


def _trained_rounds(models: list[nn.Sequential]) -> list[History]:
    data = [make_disk_data(12, 4, 4, seed=r, dtype=DTYPE) for r in range(len(models))]
    return fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        lambda stack: SGD(stack.parameters(), lr=0.1),
        [(d.train.x, d.train.y) for d in data],
        epochs=2,
        batch_size=5,
        generators=[torch.Generator().manual_seed(r) for r in range(len(models))],
        validation_sets=[(d.validation.x, d.validation.y) for d in data],
    )


def test_detect_anomaly_checks_of_the_class_methods_are_no_methods_of_ones_own() -> None:
    """The checks that detect_anomaly sets on the instances it watches (in nested blocks too)
    run the class's methods: fit_rounds trains the models inside the blocks as outside, bit
    for bit, and leaves the checks to the blocks, which remove them."""
    from minidl import detect_anomaly

    models = [_subclassed("plain", r) for r in range(2)]
    twins = copy.deepcopy(models)
    expected = _trained_rounds(twins)
    with detect_anomaly(*models), detect_anomaly(models[1]):
        assert "backward" in vars(models[1][2])
        histories = _trained_rounds(models)
    assert [h.train_loss for h in histories] == [h.train_loss for h in expected]
    for model, twin in zip(models, twins, strict=True):
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            assert torch.equal(p.data, q.data)
            assert torch.equal(p.grad, q.grad)
        for part in model.modules():
            assert not {"forward", "backward", "backward_parameters"} & set(vars(part))


def test_a_method_of_ones_own_under_detect_anomaly_is_refused() -> None:
    """detect_anomaly's check over a method set on the instance, and a check set by hand on
    another module than the one it watches, are refused as the method set would be."""
    from minidl import detect_anomaly

    models, _, _ = _hooked_models("last", "backward")
    with (
        detect_anomaly(*models),
        pytest.raises(TypeError, match=r"^stack_models: layer 2 of models\[1\] \(Linear\) has "),
    ):
        nn.stack_models(models)
    models = [_subclassed("plain", r) for r in range(2)]
    with detect_anomaly(*models):
        models[1][0].forward = models[0][0].forward  # type: ignore[method-assign]
        with pytest.raises(
            TypeError, match=r"^stack_models: layer 0 of models\[1\] \(Linear\) has forward "
        ):
            nn.stack_models(models)


@pytest.mark.parametrize("hooked", [(1,), (0, 1)])
@pytest.mark.parametrize("name", ["_forward", "_backward"])
def test_an_activations_hook_set_on_its_instance_is_kept_in_the_stack(
    name: str, hooked: tuple[int, ...]
) -> None:
    """An activation's _forward and _backward set on its instance (here the built-in hook
    halved) are carried into the stack by its copy: in a run of its own (one model hooked),
    and as the one activation of every model (one hook for all): the stacked activation gives
    each model's own output and gradient bit for bit, and fit_rounds trains the models as fit."""
    hook = getattr(nn.Tanh(), name)

    def halved(first: torch.Tensor, *rest: Any, **options: Any) -> Any:
        result = hook(first, *rest, **options)
        return (result[0] * 0.5, result[1]) if name == "_forward" else result * 0.5

    models = [_subclassed("plain", r) for r in range(2)]
    for index in hooked:
        setattr(models[index][1], name, halved)
    stacked = nn.stack_models(models)
    assert isinstance(stacked[1], nn.StackedActivation if len(hooked) == 1 else nn.Tanh)
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, dtype=DTYPE)
    grad = torch.randn(2, 4, 5, dtype=DTYPE)
    output = stacked[1](x)
    grad_input = stacked[1].backward(grad)
    for index, model in enumerate(models):
        assert torch.equal(output[index], model[1](x[index]))
        assert torch.equal(grad_input[index], model[1].backward(grad[index]))
    alone = copy.deepcopy(models)
    for model in alone:  # (a deep copy keeps the hook too, as in the stack)
        assert (vars(model[1]).get(name) is halved) == (model is alone[1] or len(hooked) == 2)
    expected = _trained_alone(alone)
    _assert_trained_alike(models, alone, _trained_rounds(models), expected)


class _EveryOtherZeroGrad(SGD):
    """An SGD whose zero_grad zeroes every other call only: each step after the first takes
    the sum of two batches' gradients."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.calls = 0

    def zero_grad(self) -> None:
        if self.calls % 2 == 0:
            super().zero_grad()
        self.calls += 1


def _every_other_zero_grad_set_on(optimizer: SGD) -> SGD:
    """A plain SGD with the zero_grad of :class:`_EveryOtherZeroGrad` set on the instance."""
    calls = [0]
    base = optimizer.zero_grad

    def zero_grad() -> None:
        if calls[0] % 2 == 0:
            base()
        calls[0] += 1

    optimizer.zero_grad = zero_grad  # type: ignore[method-assign]
    return optimizer


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("where", ["subclass", "instance"])
def test_per_model_optimizers_zero_the_gradients_with_their_own_zero_grad(
    flat: bool, where: str
) -> None:
    """fit calls its optimizer's zero_grad before every batch; a PerModel optimizer's own (of
    a subclass, or set on it) was skipped for one zeroing of the whole stack, so a model whose
    optimizer accumulates two batches per step trained otherwise than alone."""

    def make(parameters: list[Parameter]) -> SGD:
        if where == "subclass":
            return _EveryOtherZeroGrad(parameters, lr=0.1)
        return _every_other_zero_grad_set_on(SGD(parameters, lr=0.1))

    models = _two_models()
    alone = [copy.deepcopy(model) for model in models]
    data = [make_disk_data(40, 10, 10, seed=r, dtype=DTYPE) for r in range(2)]
    expected = [
        fit(
            model,
            nn.CrossEntropyLoss(),
            make(list(model.parameters())),
            data[r].train.x,
            data[r].train.y,
            epochs=2,
            batch_size=15,
            validation=(data[r].validation.x, data[r].validation.y),
            generator=torch.Generator().manual_seed(r),
        )
        for r, model in enumerate(alone)
    ]
    histories = _train_two(models, 2, make_optimizer=PerModel(lambda g, p: make(p), flat=flat))
    _assert_trained_alike(models, alone, histories, expected)


def test_a_stacked_loss_of_another_number_of_models_is_refused_as_such() -> None:
    """It was refused by the trial forward, as "the training sets do not fit", which they did."""
    data = [make_disk_data(12, 4, 4, seed=r, dtype=DTYPE) for r in range(3)]
    models = [nn.mlp((2, 3, 2), "tanh", dtype=DTYPE) for _ in range(3)]
    for runs in ([(nn.CrossEntropyLoss(), 2)], [(nn.CrossEntropyLoss(), 2), (nn.MSELoss(), 2)]):
        criterion = nn.StackedLoss(runs)
        with pytest.raises(
            ValueError,
            match=rf"^fit_rounds: criterion is a StackedLoss of {criterion.models} models, for 3 "
            r"models; its runs must cover the 3 models$",
        ):
            fit_rounds(
                models,
                criterion,
                lambda stack: SGD(stack.parameters(), lr=0.1),
                [(d.train.x, d.train.y) for d in data],
                epochs=1,
                generators=[torch.Generator() for _ in range(3)],
            )


class _SummedMSELoss(nn.Loss):
    """A loss of one's own that takes stacked predictions but returns the total over the
    models, not one loss per model."""

    stacks = True

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        one_hot = torch.nn.functional.one_hot(target, prediction.shape[-1])
        self._difference = prediction - one_hot.to(prediction.dtype)
        return self._difference.square().sum() / prediction.shape[-2]

    def _gradient(self) -> torch.Tensor:
        return 2 * self._difference / self._difference.shape[-2]


def test_a_criterion_that_does_not_return_one_loss_per_model_is_refused_before_training() -> None:
    """Its total was added to every model's loss: each history recorded the sum of all the
    models' losses as its own."""
    data = [make_disk_data(12, 4, 4, seed=r, dtype=DTYPE) for r in range(2)]
    models = [nn.mlp((2, 3, 2), "tanh", dtype=DTYPE) for _ in range(2)]
    before = [copy.deepcopy(model.state_dict()) for model in models]
    with pytest.raises(
        ValueError,
        match=r"^fit_rounds: criterion _SummedMSELoss returned a loss of shape \(\) for stacked "
        r"predictions of shape \(2, 1, 2\), expected one loss per model, of shape \(2,\)$",
    ):
        fit_rounds(
            models,
            _SummedMSELoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            [(d.train.x, d.train.y) for d in data],
            epochs=1,
            generators=[torch.Generator() for _ in range(2)],
        )
    for model, state in zip(models, before, strict=True):
        for name, value in model.state_dict().items():
            assert torch.equal(value, state[name])


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        (
            lambda: Parameter(torch.zeros(3, 2, dtype=DTYPE)),
            ValueError,
            "weight is a Parameter that is not registered",
        ),
        (lambda: torch.zeros(3, 2, dtype=DTYPE), TypeError, "weight must be a minidl Parameter"),
        (lambda: 3.0, TypeError, "weight must be a minidl Parameter, got float"),
    ],
    ids=["unregistered", "tensor", "number"],
)
def test_a_weight_set_by_hand_is_refused_as_the_layer_refuses_it(
    value: Callable[[], object], kind: type[Exception], message: str
) -> None:
    """fit refuses such a model (its Linear does, at the trial forward); the stack took the
    hand-set tensor as the weight, trained it and copied it back there, while the registered
    weight, which parameters() and state_dict hold, stayed as it was (a number: an
    AttributeError)."""
    data = [make_disk_data(12, 4, 4, seed=r, dtype=DTYPE) for r in range(2)]
    models = [nn.mlp((2, 3, 2), "tanh", dtype=DTYPE) for _ in range(2)]
    models[1][0].weight = value()
    with pytest.raises(kind, match=r"^stack_models: layer 0 of models\[1\]: " + message):
        nn.stack_models(models)
    with pytest.raises(kind, match=r"^fit_rounds: stack_models: layer 0 of models\[1\]: "):
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            [(d.train.x, d.train.y) for d in data],
            epochs=1,
            generators=[torch.Generator() for _ in range(2)],
        )


def test_batched_linear_stack_refuses_a_weight_set_by_hand() -> None:
    """It copied the hand-set tensor, not the registered weight that the layer's parameters()
    and state_dict hold (and that the layer itself refuses to compute without)."""
    layers = [nn.Linear(2, 3, dtype=DTYPE) for _ in range(2)]
    layers[1].bias = Parameter(torch.zeros(3, dtype=DTYPE))
    with pytest.raises(
        ValueError, match=r"^BatchedLinear.stack: layers\[1\]: bias is a Parameter that is not"
    ):
        nn.BatchedLinear.stack(layers)


def test_models_watched_by_detect_anomaly_are_watched_in_their_stack() -> None:
    """The stack ran without the checks detect_anomaly set on the models: a run diverging to
    NaN under ``with detect_anomaly(*models)`` ended with no AnomalyError. The stack is
    watched in their place, and the error says that its first index is the model's."""
    from minidl.anomaly import AnomalyError, detect_anomaly

    data = make_disk_data(100, 10, 10, seed=0, dtype=DTYPE)
    models = [nn.mlp((2, 8, 2), "relu", dtype=DTYPE) for _ in range(2)]

    def train() -> list[History]:
        return fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=1e300),
            [(data.train.x, data.train.y)] * 2,
            epochs=2,
            batch_size=10,
            generators=[torch.Generator().manual_seed(r) for r in range(2)],
        )

    with detect_anomaly(*models), pytest.raises(AnomalyError) as info:
        train()
    assert re.match(r"^(forward|backward) \w+ of Sequential\[\d\]: ", str(info.value))
    assert info.value.__notes__[-1] == (
        "fit_rounds trained the models watched as one stack (Sequential): the first index of a "
        "value is its model's"
    )
    assert all("forward" not in vars(module) for model in models for module in model.modules())
    histories = train()  # (unwatched: no check, NaN losses)
    assert any(math.isnan(loss) for loss in histories[0].train_loss)


def test_a_layer_watched_by_detect_anomaly_has_the_stack_watched() -> None:
    """detect_anomaly(models[0][0]), one layer: the stack was watched only where a model's own
    forward was, and trained on a NaN unchecked (fit raises there)."""
    from minidl.anomaly import AnomalyError, detect_anomaly

    data = make_disk_data(20, 10, 10, seed=0, dtype=DTYPE)
    x = data.train.x.clone()
    x[3, 0] = float("nan")
    models = [nn.mlp((2, 4, 2), "tanh", dtype=DTYPE) for _ in range(2)]
    with detect_anomaly(models[0][2]), pytest.raises(AnomalyError):
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            [(x, data.train.y), (data.train.x, data.train.y)],
            epochs=1,
            batch_size=5,
            generators=[torch.Generator().manual_seed(r) for r in range(2)],
        )


@pytest.mark.parametrize("change", ["append", "pop"])
def test_sets_added_or_taken_out_by_on_epoch_are_refused_by_name(change: str) -> None:
    data = [make_disk_data(16, 10, 10, seed=r, dtype=DTYPE) for r in range(2)]
    train = [(d.train.x, d.train.y) for d in data]

    def on_epoch(epoch: int, records: list[EpochRecord]) -> None:
        if change == "append":
            train.append(train[0])
        else:
            train.pop()

    counts = "3 sets, from 2" if change == "append" else "1 sets, from 2"
    with pytest.raises(ValueError, match=rf"^fit_rounds: on_epoch changed train_sets to {counts}"):
        models = [nn.mlp((2, 4, 2), "tanh", dtype=DTYPE) for _ in range(2)]
        _fit_by_sgd(models, train, epochs=2, on_epoch=on_epoch)


def test_a_set_put_in_place_of_one_by_on_epoch_trains_the_next_epoch_at_any_address() -> None:
    """A tensor that on_epoch puts in place of a set's is read, also where it has the replaced
    one's address and version counter (a view of the same memory here; the allocator may give
    a new tensor a freed one's address too): fit_rounds compared addresses and counters only,
    and trained on with the old values."""
    data = [make_disk_data(40, 10, 10, seed=r, dtype=DTYPE) for r in range(2)]

    def run(same_memory: bool) -> tuple[list[History], list[nn.Sequential]]:
        train = [(d.train.x.clone(), d.train.y.clone()) for d in data]
        x = train[0][0]
        # x's memory read in another order: other samples, at x's address, with x's counter
        other = x.as_strided(x.shape, (1, x.shape[0]))
        assert other.data_ptr() == x.data_ptr() and other._version == x._version
        replacement = other if same_memory else other.clone()

        def on_epoch(epoch: int, records: list[EpochRecord]) -> None:
            train[0] = (replacement, train[0][1])

        models = _models(2, seed=3)
        return _fit_by_sgd(models, train, on_epoch=on_epoch), models

    (in_place, trained), (copied, expected) = run(same_memory=True), run(same_memory=False)
    assert [h.train_loss for h in in_place] == [h.train_loss for h in copied]
    for a, b in zip(trained, expected, strict=True):
        assert all(
            torch.equal(p.data, q.data) for p, q in zip(a.parameters(), b.parameters(), strict=True)
        )


def test_validation_labels_of_two_integer_dtypes_changed_in_place_are_taken() -> None:
    """Validation labels may be int32 in one set and int64 in another (the stack holds them as
    int64): a change in place made by on_epoch to one set was refused as a cast of the other
    ("validation_sets[0] y was changed by on_epoch to (10,), torch.int32, from (10,),
    torch.int64"). Each set is compared with its own dtype; the errors are those of int64
    labels changed alike."""
    data = [make_disk_data(40, 10, 10, seed=r, dtype=DTYPE) for r in range(2)]
    train = [(d.train.x, d.train.y) for d in data]

    def run(first_dtype: torch.dtype) -> list[History]:
        validation = [
            (data[0].validation.x, data[0].validation.y.to(first_dtype)),
            (data[1].validation.x, data[1].validation.y.clone()),
        ]

        def on_epoch(epoch: int, records: list[EpochRecord]) -> None:
            labels = validation[1][1]
            labels.sub_(1).neg_()

        return _fit_by_sgd(_models(2, seed=3), train, validation_sets=validation, on_epoch=on_epoch)

    mixed, alike = run(torch.int32), run(torch.int64)
    assert [h.validation_error for h in mixed] == [h.validation_error for h in alike]


@pytest.mark.parametrize(
    ("entry", "given"),
    [
        ("list y", "a tuple of Tensor and list"),
        ("three items", "a tuple of 3 items"),
        ("a tensor", "Tensor"),
    ],
)
def test_a_set_that_on_epoch_makes_no_pair_of_tensors_is_refused_by_name(
    entry: str, given: str
) -> None:
    """on_epoch that puts something other than an (x, y) pair of tensors in a set's place is
    refused naming the set (a bare AttributeError came from reading a list's version counter)."""
    data = [make_disk_data(16, 10, 10, seed=r, dtype=DTYPE) for r in range(2)]
    train: list[Any] = [(d.train.x, d.train.y) for d in data]

    def on_epoch(epoch: int, records: list[EpochRecord]) -> None:
        x, y = train[1]
        train[1] = {"list y": (x, y.tolist()), "three items": (x, y, None), "a tensor": x}[entry]

    with pytest.raises(
        TypeError,
        match=rf"^fit_rounds: on_epoch put {given} in train_sets\[1\]; it must stay an \(x, y\) "
        r"pair of tensors$",
    ):
        _fit_by_sgd(_models(2, seed=3), train, epochs=2, on_epoch=on_epoch)
