"""stack_models, StackedActivation and the model slices: what a fourth mutation audit of
minidl.nn.stack, stacked_activation and stacked_loss found untested, each test naming its
mutant, and two bugs it found (fixed): a slice of step 0 or of bounds that are not integers
escaped model_parameters and flat_model_parameters as Python's own error, and a run whose
activation returned another dtype than its input's was cast into the stack's output."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import Tensor

from minidl import nn

DTYPE = torch.float64
F32, F64 = torch.float32, torch.float64


def test_a_stacked_activation_that_refused_a_forward_stays_refused_once_pickled() -> None:
    """A11: after a forward refused by run 1, the runs before it hold the refused input; a
    pickled copy must refuse backward as the original does (not differentiate the mix)."""
    elu = nn.ELU()
    layer = nn.StackedActivation([(nn.Tanh(), 1), (elu, 1)])
    layer(torch.randn(2, 1, 2))
    elu.alpha = 1e39
    with pytest.raises(ValueError, match=r"^ELU: alpha=1e\+39 is beyond the range"):
        layer(torch.randn(2, 1, 2))
    copied = pickle.loads(pickle.dumps(layer))
    message = (
        r"^StackedActivation: backward after the forward refused by run 1 \(ELU\): the runs "
        "before it had already cached its input"
    )
    for module in (layer, copied):
        with pytest.raises(RuntimeError, match=message):
            module.backward(torch.ones(2, 1, 2))


@pytest.mark.parametrize("function", [nn.model_parameters, nn.flat_model_parameters])
def test_a_slice_of_step_zero_is_refused_as_a_slice_with_a_step(function: object) -> None:
    """The docstrings promise an IndexError for a slice that "has a step", in the function's
    words, as slice(0, 3, 2) gets; slice(None, None, 0) too. (Fixed: Python's own ValueError
    "slice step cannot be zero" from slice.indices, naming neither.)"""
    stacked = nn.stack_models([nn.Sequential(nn.Linear(2, 2)) for _ in range(3)], layout="model")
    name = function.__name__  # type: ignore[attr-defined]
    with pytest.raises(
        IndexError,
        match=rf"^{name}: expected a non-empty slice of step 1 within 3 models, got "
        r"slice\(None, None, 0\)$",
    ):
        function(stacked, slice(None, None, 0))  # type: ignore[operator]


@pytest.mark.parametrize("function", [nn.model_parameters, nn.flat_model_parameters])
def test_a_slice_of_non_integer_bounds_is_refused_in_the_functions_words(
    function: object,
) -> None:
    """A slice whose bound or step is not an integer (nor None) is refused in the function's
    words, naming the slice. (Fixed: Python's TypeError "slice indices must be integers or None
    or have an __index__ method", which named neither.)"""
    stacked = nn.stack_models([nn.Sequential(nn.Linear(2, 2)) for _ in range(3)], layout="model")
    name = function.__name__  # type: ignore[attr-defined]
    for index, shown in [
        (slice(0, 2.0), r"slice\(0, 2\.0, None\)"),
        (slice("a", 2), r"slice\('a', 2, None\)"),
        (slice(0, 2, 1.0), r"slice\(0, 2, 1\.0\)"),
    ]:
        with pytest.raises(
            TypeError, match=rf"^{name}: expected a slice of integers or None, got {shown}$"
        ):
            function(stacked, index)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("other", "named"),
    [
        (lambda: nn.Linear(2, 4), "out_features=4, bias=True\\) of torch\\.float32"),
        (lambda: nn.Linear(2, 3, dtype=DTYPE), "out_features=3, bias=True\\) of torch\\.float64"),
    ],
    ids=["shape", "dtype"],
)
def test_linear_layers_that_differ_are_refused_naming_the_model_and_both_layers(
    other: object, named: str
) -> None:
    """S08, S22, S23: Linear layers at one position that differ in shape or dtype (each model of
    one dtype) are refused by stack_models in its own words, naming the first model that
    differs by its index and both layers, dtype and device included; the models are left as
    they were."""
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(2, 3)) for _ in range(2)]
    models.append(nn.Sequential(other()))  # type: ignore[operator]
    before = [[p.data.clone() for p in model.parameters()] for model in models]
    with pytest.raises(
        ValueError,
        match=r"^stack_models: layer 0 differs between models\[0\] and models\[2\]: "
        r"Linear\(in_features=2, out_features=3, bias=True\) of torch\.float32 on cpu against "
        rf"Linear\(in_features=2, {named} on cpu$",
    ):
        nn.stack_models(models)
    for model, values in zip(models, before, strict=True):
        for parameter, value in zip(model.parameters(), values, strict=True):
            assert torch.equal(parameter.data, value)


def test_a_method_bound_to_a_linear_and_set_on_its_instance_is_refused() -> None:
    """S21: a forward of one's own bound to the layer (types.MethodType) and set on its
    instance is a method of the instance, not its class's: the stack, which computes as Linear
    does, refuses it rather than leave it out (a bound method of the layer is skipped only when
    it is its class's own)."""
    import types

    def forward(self: nn.Linear, input: torch.Tensor) -> torch.Tensor:
        return 2 * nn.Linear.forward(self, input)

    models = [nn.Sequential(nn.Linear(2, 2), nn.Tanh()) for _ in range(2)]
    models[1][0].forward = types.MethodType(forward, models[1][0])
    with pytest.raises(
        TypeError,
        match=r"^stack_models: layer 0 of models\[1\] \(Linear\) has forward set on its "
        r"instance: a stack computes every model's layer as Linear does",
    ):
        nn.stack_models(models)


def _seeded(*shape: int, seed: int, dtype: torch.dtype = F64) -> Tensor:
    """A standard normal tensor from its own generator (no global state)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=F64).to(dtype)


# -- A03: the gradient's dtype is checked as the runs' gradient checks decide -------------------


class _InputCheckedOwnWayTanh(nn.Tanh):
    """A Tanh that overrides the check of its input alone (and keeps that of its gradient)."""

    def _check_input(self, input: object) -> None:
        super()._check_input(input)


def test_a_stack_whose_runs_keep_the_gradient_check_refuses_an_integer_gradient_itself() -> None:
    """Every run keeps Activation's gradient check (one overrides its input check alone): an
    integer gradient is refused by the stack, in its own words (not by a run, naming its
    activation), and the last forward can still be differentiated, as the runs alone would."""
    stack = nn.StackedActivation([(nn.Tanh(), 1), (_InputCheckedOwnWayTanh(), 2)])
    x = _seeded(3, 4, seed=1)
    stack(x)
    with pytest.raises(TypeError) as info:
        stack.backward(torch.ones(3, 4, dtype=torch.int64))
    assert str(info.value) == (
        "StackedActivation: expected a floating-point gradient of dtype float16, bfloat16, "
        "float32 or float64, got dtype torch.int64"
    )
    grad = _seeded(3, 4, seed=2)
    oracle = x.clone().requires_grad_()
    torch.tanh(oracle).backward(grad)
    assert torch.allclose(stack.backward(grad), oracle.grad, rtol=1e-12, atol=1e-12)


# -- S27, S31: activations whose settings differ are not merged into one run ---------------------


class _ScaledTanh(nn.Activation):
    """``scale * tanh(x)``, the scale an instance attribute that only some instances set (1 where
    unset; the repr does not show it)."""

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        return torch.tanh(input) * getattr(self, "scale", 1.0), input

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        return grad_output * getattr(self, "scale", 1.0) * (1 - torch.tanh(cache) ** 2)


def _model(activation: nn.Activation, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 2, dtype=F64), activation)


def test_an_activation_with_a_setting_its_neighbour_lacks_is_a_run_of_its_own() -> None:
    """Model 0's activation holds a public setting (``scale``) that model 1's lacks: they are
    two runs, and each model's slice of the stack is what the model computes alone."""
    scaled = _ScaledTanh()
    scaled.scale = 3.0
    models = [_model(scaled, 0), _model(_ScaledTanh(), 1)]
    stack = nn.stack_models(models)
    assert isinstance(stack[1], nn.StackedActivation)
    assert stack[1].activation_of(0).scale == 3.0
    assert not hasattr(stack[1].activation_of(1), "scale")
    x = _seeded(2, 5, 3, seed=3)
    out = stack(x)
    for index, model in enumerate(models):
        assert torch.allclose(out[index], model(x[index]), rtol=1e-12, atol=1e-12)


class _SparseScaled(nn.Activation):
    """``x * w`` for a sparse tensor setting ``w`` (values torch.equal does not compare)."""

    def __init__(self, w: Tensor) -> None:
        super().__init__()
        self.w = w

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        return input * self.w.to_dense(), input

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        return grad_output * self.w.to_dense()


def test_activations_with_sparse_settings_torch_cannot_compare_stay_two_runs() -> None:
    """Two activations whose settings are sparse tensors of other values (torch.equal raises
    NotImplementedError on them) are taken for different functions: two runs, each model's slice
    what it computes alone."""
    w0 = torch.tensor([1.0, 2.0], dtype=F64).to_sparse()
    w1 = torch.tensor([5.0, 0.0], dtype=F64).to_sparse()
    models = [_model(_SparseScaled(w0), 0), _model(_SparseScaled(w1), 1)]
    stack = nn.stack_models(models)
    assert isinstance(stack[1], nn.StackedActivation)
    assert stack[1].activation_of(1).w.to_dense().tolist() == [5.0, 0.0]
    x = _seeded(2, 5, 3, seed=4)
    out = stack(x)
    for index, model in enumerate(models):
        assert torch.allclose(out[index], model(x[index]), rtol=1e-12, atol=1e-12)


# -- S40: an empty slice of models is refused ---------------------------------------------------


@pytest.mark.parametrize("index", [slice(1, 1), slice(0, 0), slice(2, 2)])
def test_model_parameters_refuses_an_empty_slice_of_models(index: slice) -> None:
    """An empty slice of models (start == stop) is refused naming the function and the slice,
    as a reversed one is; the stack is left as it was."""
    stack = nn.stack_models([_model(nn.Tanh(), 0), _model(nn.Tanh(), 1)], layout="model")
    before = [(p.data.clone(), p.grad.clone()) for p in stack.parameters()]
    text = f"slice({index.start}, {index.stop}, None)"
    for function in (nn.model_parameters, nn.flat_model_parameters):
        with pytest.raises(IndexError) as info:
            function(stack, index)
        assert str(info.value) == (
            f"{function.__name__}: expected a non-empty slice of step 1 within 2 models, got {text}"
        )
    for p, (data, grad) in zip(stack.parameters(), before, strict=True):
        assert torch.equal(p.data, data) and torch.equal(p.grad, grad)


# -- a run whose activation returns another dtype is refused, not cast --------------------------


class _Float64Scaled(nn.Activation):
    """``x * s`` for a float64 setting ``s`` of shape (1,): on a float32 input, a float64
    result (type promotion), as the activation gives alone."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.tensor([1.0 / 3.0], dtype=F64)

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        output = input * self.scale
        return output, output

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        return grad_output * self.scale


def _float32_models(last: bool) -> list[nn.Sequential]:
    models = []
    for seed, activation in ((0, nn.Tanh()), (1, _Float64Scaled())):
        torch.manual_seed(seed)
        layers = [nn.Linear(3, 2), activation] + ([] if last else [nn.Linear(2, 1)])
        models.append(nn.Sequential(*layers))
    return models


def test_a_stacked_run_returning_a_wider_dtype_is_not_cast_silently() -> None:
    """A model whose activation returns float64 for a float32 input returns float64 alone (and
    its backward is refused: its Linear's parameters are float32). Stacked beside a model with
    another activation (a StackedActivation), the run's result is refused, naming the run, its
    activation and both dtypes, and the stack's backward is refused after it (the runs had
    cached the refused input). (Fixed: written into the float32 output, other values than
    alone, and a model that cannot train alone trained in the stack.)"""
    models = _float32_models(last=True)
    x = _seeded(4, 3, seed=5, dtype=F32)
    alone = models[1](x)
    assert alone.dtype is F64
    stack = nn.stack_models(models)
    with pytest.raises(
        TypeError,
        match=r"^StackedActivation: run 1 \(_Float64Scaled\)'s forward returned dtype "
        r"torch\.float64 for an input of dtype torch\.float32; a stack writes every run's "
        r"result into one tensor of the input's dtype",
    ):
        stack(torch.stack([x, x]))
    with pytest.raises(RuntimeError, match=r"^Sequential: backward after the forward refused"):
        stack.backward(torch.ones(2, 4, 2))
    activation = stack[1]
    assert isinstance(activation, nn.StackedActivation)
    with pytest.raises(
        RuntimeError,
        match=r"^StackedActivation: backward after the forward "
        r"refused by run 1 \(_Float64Scaled\): it and the runs before it",
    ):
        activation.backward(torch.ones(2, 4, 2))


def test_a_stacked_model_refused_alone_is_refused_in_the_stack() -> None:
    """A model whose float64 activation output feeds a float32 Linear is refused alone
    (``Linear: input dtype torch.float64 does not match ...``); stacked beside a model with
    another activation, refused too. (Fixed: its forward ran, in float32.)"""
    models = _float32_models(last=False)
    x = _seeded(4, 3, seed=5, dtype=F32)
    with pytest.raises(TypeError, match=r"^Linear: input dtype torch\.float64 does not match"):
        models[1](x)
    stack = nn.stack_models(models)
    with pytest.raises(TypeError, match="float64"):
        stack(torch.stack([x, x]))


# -- A10: what a pickle says of the runs' out hooks is derived again on load -------------------


class _DoubledTanh(nn.Tanh):
    """A Tanh whose class overrides ``forward`` (its hooks still take ``out``): the stack calls
    its forward, not the hook."""

    def forward(self, input: Tensor) -> Tensor:
        return super().forward(input) * 2


def test_a_stacked_activation_pickled_before_it_looked_at_overridden_forwards_calls_them() -> None:
    """A pickle whose ``_writes_out`` was made from the hooks alone (both runs taking ``out``)
    is made again on load: the run whose class overrides forward is called, as alone."""
    layer = nn.StackedActivation([(nn.Tanh(), 1), (_DoubledTanh(), 1)])
    assert layer._writes_out == ((True, True), (False, True))
    state = layer.__getstate__()
    state["_writes_out"] = ((True, True), (True, True))
    old = nn.StackedActivation.__new__(nn.StackedActivation)
    old.__setstate__(state)
    assert old._writes_out == ((True, True), (False, True))
    x = _seeded(2, 3, seed=8)
    out = old(x)
    assert torch.equal(out[0], torch.tanh(x[0]))
    assert torch.allclose(out[1], 2 * torch.tanh(x[1]), rtol=1e-15, atol=0)


# -- L09: the loss of a model at a run's boundary -------------------------------------------------


def test_the_loss_of_each_model_is_its_own_runs_at_the_boundaries_too() -> None:
    """``_criterion_of`` (which fit_rounds uses to check each model's targets with its own loss)
    gives each model its run's loss, the first model of a run included (not the run before)."""
    mse, cross_entropy, last = nn.MSELoss(), nn.CrossEntropyLoss(), nn.MSELoss()
    criterion = nn.StackedLoss([(mse, 2), (cross_entropy, 1), (last, 2)])
    got = [criterion._criterion_of(model) for model in range(5)]
    assert [id(loss) for loss in got] == [id(mse), id(mse), id(cross_entropy), id(last), id(last)]


class _Float64Backward(nn.Activation):
    """``x / 3`` in the input's dtype, whose backward multiplies by a float64 setting: a
    float64 gradient for a float32 one, as the activation gives alone."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.tensor([1.0 / 3.0], dtype=F64)

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        output = input * self.scale.to(input.dtype)
        return output, output

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        return grad_output * self.scale


def test_a_stacked_run_whose_backward_returns_a_wider_dtype_is_refused() -> None:
    """A run whose backward returns float64 for a float32 gradient is refused, naming the run,
    its activation and both dtypes, not written into the float32 input gradient; the forward
    is kept, and a backward of the other dtype (which each run promotes as alone) still runs."""
    stack = nn.StackedActivation([(nn.Tanh(), 1), (_Float64Backward(), 1)])
    x = _seeded(2, 4, 3, seed=6, dtype=F32)
    output = stack(x)
    assert output.dtype is F32
    with pytest.raises(
        TypeError,
        match=r"^StackedActivation: run 1 \(_Float64Backward\)'s backward returned dtype "
        r"torch\.float64 for a gradient of dtype torch\.float32",
    ):
        stack.backward(torch.ones(2, 4, 3))
    grad = stack.backward(torch.ones(2, 4, 3, dtype=F64))
    assert grad.dtype is F64
    assert torch.equal(grad[1], torch.full((4, 3), 1.0 / 3.0, dtype=F64))
