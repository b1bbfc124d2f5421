"""Tests that kill the mutants of ``minidl.rounds``, ``minidl.nn.stack`` and
``minidl.nn.batched_linear`` that survived a mutation audit.

Each test states the behaviour it pins down against an oracle: the models trained one by one
with :func:`minidl.train.fit` in float64, each model run alone, a sum computed here, or the
documented error (type and the words of its message).
"""

from __future__ import annotations

import copy
import re
from typing import Any, ClassVar

import pytest
import torch

from minidl import nn
from minidl.data import make_disk_data
from minidl.nn.parameter import Parameter
from minidl.optim import SGD
from minidl.optim.optimizer import Optimizer
from minidl.rounds import PerModel, fit_rounds, stacked_error_rates
from minidl.train import error_rate, fit

F64 = torch.float64


class _ModeTanh(nn.Activation):
    """An activation of one's own that reads the mode (tanh in training, -tanh in evaluation)
    and records the mode of every forward call, in a list shared by its copies."""

    modes: ClassVar[list[bool]] = []

    def _forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        type(self).modes.append(self.training)
        output = torch.tanh(input) if self.training else -torch.tanh(input)
        return output, output

    def _backward(self, grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        sign = 1.0 if self.training else -1.0
        return grad_output * sign * (1 - output * output)


def _mode_models(count: int) -> list[nn.Sequential]:
    made = []
    for r in range(count):
        torch.manual_seed(r)
        made.append(
            nn.Sequential(nn.Linear(2, 6, dtype=F64), _ModeTanh(), nn.Linear(6, 2, dtype=F64))
        )
    return made


def _data(count: int) -> list[Any]:
    return [make_disk_data(40, 10, 10, seed=300 + r, dtype=F64) for r in range(count)]


def _fit_alone(models: list[nn.Sequential], data: list[Any], epochs: int) -> None:
    for r, model in enumerate(models):
        fit(
            model,
            nn.CrossEntropyLoss(),
            SGD(model.parameters(), lr=0.1),
            data[r].train.x,
            data[r].train.y,
            epochs=epochs,
            batch_size=15,
            generator=torch.Generator().manual_seed(r),
        )


def _fit_rounds(models: list[nn.Sequential], data: list[Any], epochs: int, **change: Any) -> Any:
    arguments: dict[str, Any] = {
        "epochs": epochs,
        "batch_size": 15,
        "generators": [torch.Generator().manual_seed(r) for r in range(len(models))],
        **change,
    }
    return fit_rounds(
        models,
        arguments.pop("criterion", None) or nn.CrossEntropyLoss(),
        arguments.pop("make_optimizer", None) or (lambda stack: SGD(stack.parameters(), lr=0.1)),
        [(d.train.x, d.train.y) for d in data],
        **arguments,
    )


# -- rounds: modes ---------------------------------------------------------------------------------


def test_models_in_evaluation_mode_train_in_training_mode_as_fit_does() -> None:
    """fit puts the model in training mode; fit_rounds puts the models, and the stack made of
    them (whose activations are copies of the models', modes included), in it too."""
    models = [model.eval() for model in _mode_models(2)]
    alone = copy.deepcopy(models)
    data = _data(2)
    _fit_alone(alone, data, 2)
    _fit_rounds(models, data, 2)
    for model, reference in zip(models, alone, strict=True):
        assert model.training
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p.data, q.data, rtol=1e-12, atol=1e-14)


def test_the_probe_runs_in_evaluation_mode_as_fit_does() -> None:
    """Before training, fit and fit_rounds run the model(s) once in evaluation mode on the
    first sample(s): each forward of the stack sees the mode that fit's forward sees."""
    data = _data(2)
    _ModeTanh.modes.clear()
    _fit_alone(_mode_models(1), data, 1)
    expected = list(_ModeTanh.modes)
    _ModeTanh.modes.clear()
    _fit_rounds(_mode_models(2), data, 1)
    assert expected[0] is False
    assert _ModeTanh.modes == expected


def test_stacked_error_rates_evaluate_in_evaluation_mode() -> None:
    """Each model's error is error_rate's (which evaluates in evaluation mode), also for an
    activation that reads the mode, and the stack is left in its mode."""
    models = _mode_models(2)
    stacked = nn.stack_models(models)
    sets = [d.train for d in _data(2)]
    errors = stacked_error_rates(
        stacked, torch.stack([s.x for s in sets]), torch.stack([s.y for s in sets])
    )
    expected = [error_rate(model, s.x, s.y) for model, s in zip(models, sets, strict=True)]
    assert errors == expected
    assert stacked.training
    # (in training mode the models classify otherwise: the test tells the two modes apart)
    in_training = [
        100.0 * float((model.train()(s.x).argmax(1) != s.y).double().mean())
        for model, s in zip(models, sets, strict=True)
    ]
    assert in_training != expected


# -- rounds: losses and PerModel -------------------------------------------------------------------


class _RecordedCrossEntropy(nn.CrossEntropyLoss):
    """Cross-entropy that keeps a copy of each (R,) loss it returns."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[list[float]] = []

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = super().forward(prediction, target)
        if prediction.dim() == 3 and prediction.shape[1] > 1:  # (not the one-sample probe)
            self.losses.append(loss.tolist())
        return loss


def test_float32_losses_are_summed_in_float64() -> None:
    """An epoch's train_loss is the mean of its batches' float32 losses summed in float64 (as
    fit sums them), not in the losses' dtype."""
    data = [make_disk_data(64, 8, 8, seed=400 + r, dtype=torch.float32) for r in range(2)]
    models = []
    for r in range(2):
        torch.manual_seed(r)
        models.append(nn.mlp((2, 9, 2), "tanh"))
    criterion = _RecordedCrossEntropy()
    histories = _fit_rounds(models, data, 2, batch_size=5, criterion=criterion)
    batches = 13
    assert len(criterion.losses) == 2 * batches
    for r, history in enumerate(histories):
        for epoch, loss in enumerate(history.train_loss):
            total = 0.0  # (a Python float: float64, summed in the batches' order)
            for row in criterion.losses[epoch * batches : (epoch + 1) * batches]:
                total += row[r]
            assert loss == pytest.approx(total / batches, rel=1e-14, abs=0)


@pytest.mark.parametrize("group", [1, 2])
def test_per_model_factory_gets_each_models_own_parameter_shapes(group: int) -> None:
    """With group 1, factory(g, parameters) gets model g's parameters, shaped as that model's
    (model_parameters(stack, g)); with group k, the same with a leading dimension k."""
    models = _mode_models(4)
    seen: list[list[tuple[int, ...]]] = []

    def factory(g: int, parameters: list[Parameter]) -> Optimizer:
        seen.append([tuple(p.data.shape) for p in parameters])
        return SGD(parameters, lr=0.1)

    _fit_rounds(models, _data(4), 1, make_optimizer=PerModel(factory, group=group))
    own = [tuple(p.data.shape) for p in models[0].parameters()]
    expected = own if group == 1 else [(group, *shape) for shape in own]
    assert seen == [expected] * (4 // group)


# -- stack_models ----------------------------------------------------------------------------------


def test_stack_models_refuses_models_with_more_layers() -> None:
    """A model with a layer more than models[0] is refused, not stacked without that layer."""
    torch.manual_seed(0)
    short = nn.Sequential(nn.Linear(2, 3, dtype=F64), nn.Tanh())
    long = nn.Sequential(nn.Linear(2, 3, dtype=F64), nn.Tanh(), nn.Linear(3, 3, dtype=F64))
    with pytest.raises(
        ValueError, match=r"stack_models: models\[1\] has 3 layers, models\[0\] has 2"
    ):
        nn.stack_models([short, long])
    with pytest.raises(
        ValueError, match=r"stack_models: models\[1\] has 2 layers, models\[0\] has 3"
    ):
        nn.stack_models([long, short])


def test_stack_models_refuses_a_linear_against_an_activation() -> None:
    torch.manual_seed(0)
    first = nn.Sequential(nn.Linear(3, 3, dtype=F64), nn.Tanh())
    second = nn.Sequential(nn.Tanh(), nn.Linear(3, 3, dtype=F64))
    with pytest.raises(ValueError, match="stack_models: layer 0 is not a Linear in every model"):
        nn.stack_models([first, second])


def test_stacked_activations_are_copies_of_the_models() -> None:
    """The stack holds copies of the models' activations (different ones included): changing
    a model's activation after stacking changes the model, not the stack."""
    torch.manual_seed(0)
    models = [
        nn.Sequential(nn.Linear(2, 4, dtype=F64), nn.LeakyReLU(slope)) for slope in (0.1, 0.2)
    ]
    stacked = nn.stack_models(models)
    x = torch.randn(2, 5, 2, dtype=F64)
    expected = torch.stack([model(x[r]) for r, model in enumerate(models)])
    for model in models:
        model[1].negative_slope = 0.7  # type: ignore[attr-defined]
    torch.testing.assert_close(stacked(x), expected, rtol=0, atol=1e-15)


class _Scaled(nn.Activation):
    """tanh(k x), with k a class attribute that an instance may override (its repr does not
    show k)."""

    k = 1.0

    def _forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = torch.tanh(self.k * input)
        return output, output

    def _backward(self, grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return grad_output * self.k * (1 - output * output)


class _Weighted(nn.Activation):
    """tanh(x) * w[0], with a setting (a tuple holding a tensor) whose == is no truth value."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = (w,)

    def _forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(input) * self.w[0], torch.tanh(input)

    def _backward(self, grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return grad_output * self.w[0] * (1 - output * output)


def _overridden(k: float | None) -> _Scaled:
    activation = _Scaled()
    if k is not None:
        activation.k = k
    return activation


@pytest.mark.parametrize(
    "activations",
    [
        [_overridden(3.0), _overridden(None)],
        [_overridden(None), _overridden(3.0)],
        [
            _Weighted(torch.tensor([1.0, 2.0], dtype=F64)),
            _Weighted(torch.tensor([3.0, 4.0], dtype=F64)),
        ],
    ],
    ids=["setting-only-in-first", "setting-only-in-second", "setting-of-no-truth-value"],
)
def test_activations_that_differ_in_a_setting_stack_as_each_models_own(
    activations: list[nn.Activation],
) -> None:
    """Activations of one class and repr that differ in a public setting (one that only one of
    them has; one whose comparison is no truth value) are not one shared activation: each
    stacked model computes what it computes alone."""
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(2, 2, dtype=F64), a) for a in activations]
    x = torch.randn(2, 3, 2, dtype=F64)
    output = nn.stack_models(models)(x)
    for r, model in enumerate(models):
        torch.testing.assert_close(output[r], model(x[r]), rtol=0, atol=1e-15)


def test_an_activation_run_before_stacking_is_still_shared() -> None:
    """A forward call of one model changes only its activation's private state (its cached
    output), not its settings: the models' activations are still one, not a StackedActivation."""
    torch.manual_seed(0)
    models = [nn.mlp((2, 3, 2), "tanh", dtype=F64) for _ in range(2)]
    models[0](torch.randn(4, 2, dtype=F64))
    stacked = nn.stack_models(models)
    assert type(stacked[1]) is nn.Tanh


# -- flat_model_parameters -------------------------------------------------------------------------


def test_flat_model_parameters_refuses_a_layer_layout_of_one_model() -> None:
    """With one model, a 'layer' stack's parameters follow one another as in a 'model' stack,
    but without the padding to a whole block: it is refused as not of the 'model' layout."""
    torch.manual_seed(0)
    stacked = nn.stack_models([nn.mlp((2, 3, 2), "tanh", dtype=F64)])  # 17 values, no padding
    with pytest.raises(ValueError, match="does not have the 'model' layout"):
        nn.flat_model_parameters(stacked, 0)


def test_flat_model_parameters_refuses_a_parameter_moved_to_another_buffer() -> None:
    """A parameter replaced by a tensor of the same strides and offset in another buffer is
    refused: a flat view of the first buffer would not hold it."""
    torch.manual_seed(0)
    stacked = nn.stack_models(
        [nn.mlp((2, 3, 2), "tanh", dtype=F64) for _ in range(2)], layout="model"
    )
    weight = stacked[2].weight
    other = torch.zeros(weight.data.untyped_storage().nbytes() // 8, dtype=F64)
    moved = other.as_strided(weight.data.shape, weight.data.stride(), weight.data.storage_offset())
    moved.copy_(weight.data)
    weight.data = moved
    with pytest.raises(
        ValueError, match="flat_model_parameters: the stack's parameters are not one buffer"
    ):
        nn.flat_model_parameters(stacked, 0)


# -- on a CUDA device ------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_layout_stack_made_on_the_device_trains_there() -> None:
    """A 'model' stack made of models on the device (its gradients not contiguous) computes
    its weight gradients there, as the same stack on the CPU does; the CPU's batched product
    into a temporary (made on the CPU) is not chosen for it."""
    torch.manual_seed(3)
    models = [nn.mlp((2, 6, 5, 2), "tanh", dtype=F64) for _ in range(3)]
    here = nn.stack_models(models, layout="model")
    there = nn.stack_models([copy.deepcopy(m).to(device="cuda") for m in models], layout="model")
    assert not there[0].weight.grad.is_contiguous()
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(3, 9, 2, generator=generator, dtype=F64)
    gradient = torch.randn(3, 9, 2, generator=generator, dtype=F64)
    expected = here(x)
    torch.testing.assert_close(there(x.cuda()).cpu(), expected, rtol=1e-12, atol=1e-14)
    expected_dx = here.backward(gradient)
    dx = there.backward(gradient.cuda()).cpu()
    torch.testing.assert_close(dx, expected_dx, rtol=1e-12, atol=1e-14)
    for p, q in zip(there.parameters(), here.parameters(), strict=True):
        torch.testing.assert_close(p.grad.cpu(), q.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("batch_size", [4, 5, 2**70])
def test_a_batch_size_of_the_whole_set_or_more_is_one_batch_per_epoch(batch_size: int) -> None:
    """A batch size equal to the number of samples, or beyond it, gives one batch of them all
    per epoch, as in fit: one step per epoch and the parameters fit leaves. (Clamping it to
    ``samples - 1`` split every epoch into two batches.)"""
    x = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 1, 0])
    torch.manual_seed(0)
    model = nn.mlp((2, 3, 2), "tanh", dtype=F64)
    alone = copy.deepcopy(model)
    built: list[Optimizer] = []

    def make(stack: nn.Sequential) -> Optimizer:
        built.append(SGD(stack.parameters(), lr=0.5))
        return built[-1]

    [history] = fit_rounds(
        [model],
        nn.CrossEntropyLoss(),
        make,
        [(x, y)],
        epochs=2,
        batch_size=batch_size,
        generators=[torch.Generator().manual_seed(1)],
    )
    assert built[0].step_count == 2 and len(history.train_loss) == 2
    fit(
        alone,
        nn.CrossEntropyLoss(),
        SGD(alone.parameters(), lr=0.5),
        x,
        y,
        epochs=2,
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(1),
    )
    for ours, theirs in zip(model.parameters(), alone.parameters(), strict=True):
        torch.testing.assert_close(ours.data, theirs.data, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("layout", ["layer", "model"])
@pytest.mark.parametrize("where", ["a layer", "a bias"])
def test_a_model_of_several_dtypes_is_refused_by_stack_models(layout: str, where: str) -> None:
    """A model whose output layer is float64 and the rest float32, or whose bias is float32
    under a float64 weight: a stack by model cast every parameter to the first's dtype (the
    float64 layer trained in float32) and one by layer cast the biases by torch.stack; both
    trained a model that its own forward refuses. Now refused, naming the parameter."""
    from minidl.nn import stack_models

    torch.manual_seed(0)
    model = nn.mlp((2, 4, 2), "tanh", dtype=torch.float64)
    if where == "a layer":
        model[0].to(torch.float32)
        named, other = ("'2.weight' is torch.float64", "'0.weight' torch.float32")
    else:
        model[0].bias.data = model[0].bias.data.float()
        model[0].bias.grad = model[0].bias.grad.float()
        named, other = ("'0.bias' is torch.float32", "'0.weight' torch.float64")
    before = [p.data.clone() for p in model.parameters()]
    with pytest.raises(ValueError) as info:
        stack_models([model, nn.mlp((2, 4, 2), "tanh")], layout=layout)
    assert str(info.value) == (
        f"stack_models: models[0]'s parameter {named} on cpu, its {other} on cpu: a model's "
        "parameters must share one dtype and device (call .to() on the model)"
    )
    assert all(torch.equal(p.data, b) for p, b in zip(model.parameters(), before, strict=True))


def test_batched_linear_refuses_a_bias_of_another_dtype() -> None:
    """BatchedLinear.stack compared the weights' dtypes only: a float32 bias beside float64
    ones was promoted by torch.stack without a word."""
    from minidl.nn import BatchedLinear

    layers = [nn.Linear(2, 3, dtype=torch.float64) for _ in range(2)]
    layers[0].bias.data = layers[0].bias.data.float()
    with pytest.raises(
        ValueError,
        match=r"^BatchedLinear\.stack: layers\[0\]: bias is torch\.float32 on cpu but weight is "
        r"torch\.float64 on cpu$",
    ):
        BatchedLinear.stack(layers)
    # (each layer fitting itself, but not the others: float32 against float64)
    layers = [nn.Linear(2, 3, dtype=torch.float64), nn.Linear(2, 3)]
    with pytest.raises(ValueError, match=r"^BatchedLinear\.stack: every layer must have the same"):
        BatchedLinear.stack(layers)


# -- found by a second mutation audit ------------------------------------------------------------


def _pair(seed: int) -> nn.Sequential:
    generator = torch.Generator().manual_seed(seed)
    return nn.Sequential(
        nn.Linear(2, 3, dtype=F64, generator=generator),
        nn.Tanh(),
        nn.Linear(3, 2, dtype=F64, generator=generator),
    )


def _pair_data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(8, 2, dtype=F64, generator=torch.Generator().manual_seed(5))
    return x, (x[:, 0] > 0).long()


@pytest.mark.parametrize("shape", [(1,), (3,), (2, 1)])
def test_a_loss_of_another_shape_than_one_per_model_is_refused(shape: tuple[int, ...]) -> None:
    """A criterion whose forward gives a loss of shape ``(1,)`` (the models' total) for 2
    models was taken as each model's loss (only a 0-d total and the number of dimensions were
    checked); any shape but ``(R,)`` is refused, naming the shape given and the one expected."""

    class Reshaped(nn.CrossEntropyLoss):
        def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            loss = super().forward(prediction, target)
            return loss.sum().expand(shape) if shape != (3,) else torch.cat([loss, loss[:1]])

    x, y = _pair_data()
    models = [_pair(0), _pair(1)]
    with pytest.raises(
        ValueError,
        match=rf"fit_rounds: criterion Reshaped returned a loss of shape {re.escape(str(shape))}"
        r".*expected one loss per model, of shape \(2,\)",
    ):
        fit_rounds(
            models,
            Reshaped(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            [(x, y)] * 2,
            epochs=1,
            batch_size=8,
            generators=[torch.Generator().manual_seed(r) for r in range(2)],
        )


class _FailingSGD(SGD):
    """SGD whose ``failing``-th step (counted over all instances) raises."""

    steps = 0
    failing = 2

    def step(self) -> None:
        type(self).steps += 1
        if type(self).steps == self.failing:
            raise RuntimeError("the step failed")
        super().step()


def test_a_step_raising_in_the_first_epoch_leaves_each_models_gradient_as_fit_does() -> None:
    """The models' gradients are copied back from the stack also when a step raises (the
    docstring says so); with the copy's flag set only after the first epoch's batches, a step
    raising in the first epoch left them zero. Each model's gradient is then what ``fit``
    leaves alone, where the same step raises: that of the batch being stepped."""
    x, y = _pair_data()
    models = [_pair(0), _pair(1)]
    _FailingSGD.steps = 0
    with pytest.raises(RuntimeError, match="the step failed"):
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda stack: _FailingSGD(stack.parameters(), lr=0.1),
            [(x, y)] * 2,
            epochs=1,
            batch_size=4,
            generators=[torch.Generator().manual_seed(r) for r in range(2)],
        )
    for r, model in enumerate(models):
        alone = _pair(r)
        _FailingSGD.steps = 0
        with pytest.raises(RuntimeError, match="the step failed"):
            fit(
                alone,
                nn.CrossEntropyLoss(),
                _FailingSGD(alone.parameters(), lr=0.1),
                x,
                y,
                epochs=1,
                batch_size=4,
                generator=torch.Generator().manual_seed(r),
            )
        for p, q in zip(model.parameters(), alone.parameters(), strict=True):
            assert bool(p.grad.abs().sum() > 0)
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(p.data, q.data, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("watched", [0, 1])
def test_detect_anomaly_on_any_one_model_watches_it_in_the_stack(watched: int) -> None:
    """``detect_anomaly(models[1])`` around ``fit_rounds`` stops at model 1's NaN input, as
    around ``fit``; with only the first model looked at, model 1 trained to the end."""
    from minidl.anomaly import AnomalyError, detect_anomaly

    x, y = _pair_data()
    bad = x.clone()
    bad[0, 0] = float("nan")
    models = [_pair(0), _pair(1)]
    sets = [(x, y), (x, y)]
    sets[watched] = (bad, y)
    with detect_anomaly(models[watched]), pytest.raises(AnomalyError, match="non-finite value nan"):
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            sets,
            epochs=1,
            batch_size=8,
            generators=[torch.Generator().manual_seed(r) for r in range(2)],
        )


def test_a_runs_own_value_error_subclass_reaches_the_caller_as_raised() -> None:
    """A stacked loss passes a run's refusal of a type of its own (a ``ValueError`` subclass
    with attributes) through as raised: rebuilt from its message with the run named, it lost
    its attributes, and a subclass whose constructor takes other arguments could not be
    rebuilt at all."""

    class RefusalError(ValueError):
        def __init__(self, code: int) -> None:
            super().__init__(f"refused with code {code}")
            self.code = code

    raised = RefusalError(42)

    class Picky(nn.MSELoss):
        def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            raise raised

    criterion = nn.StackedLoss([(nn.MSELoss(), 1), (Picky(), 1)])
    with pytest.raises(RefusalError) as error:
        criterion(torch.zeros(2, 1, 2), torch.zeros(2, 1, 2))
    assert error.value is raised
    assert (str(error.value), error.value.code) == ("refused with code 42", 42)
