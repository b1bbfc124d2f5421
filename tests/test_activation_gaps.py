"""Tests that kill the mutants of the activations (``minidl.nn``'s element-wise activations,
``Dropout``, ``Identity``, ``StackedActivation`` and gradient clipping) that survived a second
mutation audit.

Each test states the behaviour it pins down against an oracle: PyTorch autograd in float64, the
documented formula, a fresh module's result, or the documented error (type and message).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from minidl import nn, optim

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64


def _seeded(*shape: int, seed: int, dtype: torch.dtype = F32) -> Tensor:
    """A standard normal tensor from its own generator (no global state)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=F64).to(dtype)


# -- Sigmoid: a gradient of another dtype than the output ---------------------------------


def test_sigmoid_of_a_float32_output_and_a_float16_gradient_is_float32() -> None:
    """A float16 gradient through a float32 forward is promoted (a float32 gradient, as
    PyTorch's autograd promotes the product), equal to g y (1 - y) in float64 to float32's
    precision, not rounded to float16."""
    module = nn.Sigmoid()
    x = _seeded(500, seed=8)
    y = module(x)
    gradient = _seeded(500, seed=9, dtype=F16)
    got = module.backward(gradient)
    expected = gradient.double() * y.double() * (1 - y.double())
    assert got.dtype is F32
    assert torch.allclose(got.double(), expected, rtol=1e-6, atol=1e-7)
    reference = x.double().requires_grad_()
    (autograd,) = torch.autograd.grad(torch.sigmoid(reference), reference, gradient.double())
    assert torch.allclose(got.double(), autograd, rtol=1e-6, atol=1e-7)


# -- Activation: its constructor takes no arguments -----------------------------------------------


@pytest.mark.parametrize("name", ["Tanh", "Sigmoid"])
def test_an_activation_given_only_keyword_arguments_refuses_them(name: str) -> None:
    """Keyword arguments alone are refused as positional ones are, naming the activation (an
    ``inplace=True`` taken without a word would read as PyTorch's in-place variant)."""
    build = getattr(nn, name)
    with pytest.raises(TypeError) as info:
        build(inplace=True)
    assert str(info.value) == f"{build.__name__}() takes no arguments, got 1 (inplace=bool)"


def test_an_activation_given_its_input_by_keyword_says_how_a_module_is_called() -> None:
    """``Tanh(input=x)``: a tensor given by keyword, as one given by position, gets the hint
    that a module is built, then called on its input."""
    with pytest.raises(TypeError) as info:
        nn.Sigmoid(input=torch.zeros(3))  # type: ignore[call-arg]
    assert str(info.value) == (
        "Sigmoid() takes no arguments, got 1 (input=Tensor); a module is built, then called on "
        "its input: Sigmoid()(x)"
    )


# -- Activation.backward: a sparse gradient -------------------------------------------------------


@pytest.mark.parametrize("make", [nn.ReLU, nn.SiLU, nn.GELU, nn.Tanh], ids=lambda m: m.__name__)
def test_an_activation_refuses_a_sparse_gradient_of_the_outputs_shape(make: type) -> None:
    """A sparse gradient of the right shape and dtype is refused naming the activation (a
    ``torch.mul`` of it by the derivative gave a sparse gradient, which the layer before cannot
    take), and the cache is kept: a dense gradient afterwards gets autograd's result."""
    module = make()
    x = _seeded(3, 4, seed=10, dtype=F64)
    module(x)
    gradient = _seeded(3, 4, seed=11, dtype=F64)
    with pytest.raises(TypeError) as info:
        module.backward(gradient.to_sparse())
    assert str(info.value) == (
        f"{make.__name__}: expected a dense gradient, got a sparse_coo tensor (pass "
        "gradient.to_dense())"
    )
    reference = x.clone().requires_grad_()
    getattr(torch.nn, make.__name__)()(reference).backward(gradient)
    assert reference.grad is not None
    assert torch.allclose(module.backward(gradient), reference.grad, rtol=1e-12, atol=1e-15)


# -- ELU and LeakyReLU: a negative setting beyond the computing dtype -----------------------------


@pytest.mark.parametrize(
    ("make", "name", "setting"),
    [
        (lambda: nn.ELU(-1e300), "ELU", "alpha"),
        (lambda: nn.LeakyReLU(-1e300), "LeakyReLU", "negative_slope"),
    ],
    ids=["ELU", "LeakyReLU"],
)
@pytest.mark.parametrize("dtype", [F16, F32], ids=["float16", "float32"])
def test_a_negative_setting_beyond_float32_is_refused_as_a_positive_one(
    make: type, name: str, setting: str, dtype: torch.dtype
) -> None:
    """``ELU(-1e300)`` (PyTorch takes a negative alpha) cannot be computed in float32, in which a
    float16 input is computed too: refused naming the setting and the dtype, as ``ELU(1e300)``
    is, not computed as ``inf``/``NaN`` nor refused in torch's words; a float64 input is
    computed, to the formula."""
    module = make()
    with pytest.raises(ValueError) as info:
        module(torch.tensor([-1.0, 2.0], dtype=dtype))
    assert str(info.value) == (
        f"{name}: {setting}=-1e+300 is beyond the range of the dtype it computes in, "
        "torch.float32 (largest finite value 3.40282e+38); give a smaller "
        f"{setting}, or inputs of a wider dtype"
    )
    x = torch.tensor([-1.0, 2.0], dtype=F64)
    reference = F.elu(x, -1e300) if name == "ELU" else F.leaky_relu(x, -1e300)
    assert torch.allclose(module(x), reference, rtol=1e-15, atol=0)


# -- Dropout and the activations' checks (a second pass) ---------------------------------------


@pytest.mark.parametrize("flag", [True, False])
def test_dropout_refuses_a_bool_generator_with_the_hint_about_pytorchs_inplace(flag: bool) -> None:
    """``Dropout(0.5, False)``, PyTorch's ``(p, inplace)``, passes a bool as minidl's generator:
    refused (``False`` as well as ``True``), with the hint that names ``inplace=``."""
    with pytest.raises(TypeError) as info:
        nn.Dropout(0.5, flag)  # type: ignore[arg-type]
    assert str(info.value) == (
        "Dropout: generator must be a torch.Generator or None, got bool (PyTorch's second "
        "argument is inplace, minidl's generator: name inplace=)"
    )


@pytest.mark.parametrize("name", ["LeakyReLU", "ELU"])
def test_a_setting_of_exactly_float32s_largest_value_is_computed_in_float32(name: str) -> None:
    """The largest finite float32 is within float32's range: computed (to PyTorch's result),
    not refused as beyond it (only a value past it is)."""
    largest = torch.finfo(torch.float32).max
    x = torch.tensor([-0.5, 0.0, 2.0], dtype=torch.float32)
    if name == "LeakyReLU":
        module: nn.Module = nn.LeakyReLU(largest)
        expected = F.leaky_relu(x, largest)
    else:
        module = nn.ELU(alpha=largest)
        expected = F.elu(x, largest)
    assert torch.equal(module(x), expected)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "p0-training"])
def test_dropout_as_the_identity_refuses_a_sparse_input_and_keeps_its_last_forward(
    training: bool,
) -> None:
    """The identity (evaluation mode, or ``p = 0``) refuses a sparse input as training with
    ``p > 0`` does, naming Dropout, rather than pass it to the layer after; the refused
    forward leaves the last one's backward (its shape)."""
    layer = nn.Dropout(0.0) if training else nn.Dropout(0.5).eval()
    layer(torch.ones(2, 3))
    with pytest.raises(TypeError) as info:
        layer(torch.eye(3).to_sparse())
    assert str(info.value) == (
        "Dropout: expected a dense input, got a sparse_coo tensor (pass input.to_dense())"
    )
    grad = torch.full((2, 3), 0.5)
    assert torch.equal(layer.backward(grad), grad)


# -- Dropout: a module pickled before it kept its last forward's device and dtype ----------------


@pytest.mark.parametrize("training", [False, True], ids=["eval", "p0-training"])
def test_dropout_pickled_before_it_kept_the_forwards_device_and_dtype_passes_the_gradient_on(
    training: bool,
) -> None:
    """A Dropout pickled after an identity forward (evaluation mode, or ``p = 0``) by a version
    that kept neither the forward's device nor its dtype loads, and its backward is the identity
    as before: the gradient itself, not an ``AttributeError`` for the attributes it lacks."""
    module = nn.Dropout(0.5 if not training else 0.0)
    module.train(training)
    x = torch.tensor([[0.5, -1.0, 2.0], [0.0, 3.0, -2.0]], dtype=F64)
    assert torch.equal(module(x), x)
    state = module.__getstate__()
    del state["_device"], state["_dtype"]
    old = nn.Dropout.__new__(nn.Dropout)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    gradient = torch.tensor([[1.0, 2.0, -3.0], [0.25, 0.0, 4.0]], dtype=F64)
    assert old.backward(gradient) is gradient
    # A forward after loading keeps them again: a float16 gradient is then promoted to float64.
    old(x)
    assert old.backward(gradient.to(F16)).dtype is F64


# -- Activation: a run that writes into a stack's output checks its input's dtype ---------------


class _IntegerReLU(nn.ReLU):
    """A ReLU of one's own that takes integer inputs (its input check refuses only non-tensors)."""

    def _check_input(self, input: object) -> None:
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"_IntegerReLU: expected a tensor, got {type(input).__name__}")


def test_a_stacked_relu_refuses_an_integer_input_that_a_run_of_ones_own_takes() -> None:
    """A stack whose other run checks its input itself (taking integers) leaves the dtype to
    each run: the built-in ReLU's run, which writes into the stack's output, refuses an int64
    input as ``ReLU()`` alone does (a TypeError naming ReLU and the dtype), rather than compute
    on it; its own run alone takes it, and a float input is computed by both."""
    stack = nn.StackedActivation([(nn.ReLU(), 2), (_IntegerReLU(), 1)])
    x = torch.tensor([[-1, 2], [3, -4], [5, -6]])
    expected = (
        "ReLU: expected a floating-point input of dtype float16, bfloat16, float32 or float64, "
        "got dtype torch.int64"
    )
    with pytest.raises(TypeError) as alone:
        nn.ReLU()(x)
    assert str(alone.value) == expected
    with pytest.raises(TypeError) as stacked:
        stack(x)
    assert str(stacked.value) == expected
    assert torch.equal(_IntegerReLU()(x), torch.tensor([[0, 2], [3, 0], [5, 0]]))
    floats = x.to(F32)
    assert torch.equal(stack(floats), torch.relu(floats))


# -- check_input: a sparse input, and the article of the shape's refusal -------------------------

_TWO_D: dict[str, Callable[[], nn.Module]] = {
    "Softmax": lambda: nn.Softmax(dim=1),
    "LogSoftmax": lambda: nn.LogSoftmax(dim=1),
    "Linear": lambda: nn.Linear(3, 2),
    "BatchNorm1d": lambda: nn.BatchNorm1d(3),
}


@pytest.mark.parametrize("name", list(_TWO_D))
def test_a_module_of_two_dimensional_inputs_refuses_a_sparse_input_by_name(name: str) -> None:
    """A sparse COO input of the right shape and dtype is refused before anything is computed,
    a TypeError naming the module and the fix (Linear would otherwise return a dense output
    whose backward the tensor library refuses; the others fail in its words)."""
    x = torch.tensor([[0.5, 0.0, -1.0], [0.0, 2.0, 0.0]]).to_sparse()
    with pytest.raises(TypeError) as info:
        _TWO_D[name]()(x)
    assert str(info.value) == (
        f"{name}: expected a dense input, got a sparse_coo tensor (pass input.to_dense())"
    )


def test_the_refusal_of_a_shape_says_an_input_and_a_prediction() -> None:
    """The refusal of a tensor that is not ``(N, features)`` names it with its article: "an
    input" for a module, "a prediction" for a loss."""
    with pytest.raises(ValueError) as input_refused:
        nn.Softmax(dim=1)(torch.ones(2, 3, 4))
    assert str(input_refused.value) == (
        "Softmax: expected an input of shape (N, features), got shape (2, 3, 4)"
    )
    with pytest.raises(ValueError) as prediction_refused:
        nn.MSELoss()(torch.ones(3), torch.ones(3))
    assert str(prediction_refused.value) == (
        "MSELoss: expected a prediction of shape (N, features), got shape (3,)"
    )


# -- check_like_parameter and check_layer_parameters: a gradient's refusal, a bias's device --------


def test_a_linear_whose_bias_was_moved_by_hand_to_another_device_names_both_devices() -> None:
    """A bias set by hand on another device than the weight (``bias.data = ...``) is refused
    at the next forward, a ValueError naming both dtypes and devices, rather than failing in
    the tensor library's words."""
    layer = nn.Linear(3, 2)
    assert layer.bias is not None
    layer.bias.data = torch.zeros(2, device="meta")
    with pytest.raises(ValueError) as info:
        layer(torch.ones(4, 3))
    assert str(info.value) == (
        "Linear: bias is torch.float32 on meta but weight is torch.float32 on cpu"
    )


# -- check_still_fits: a module moved to another device between forward and backward --------------


@pytest.mark.parametrize("name", ["Linear", "BatchNorm1d"])
def test_a_layer_moved_to_another_device_after_its_forward_says_so_at_backward(name: str) -> None:
    """A layer moved (``.to(device=...)``) between its forward and its backward is refused with
    the move named, the parameters' device against the last forward's, and the fix (forward
    again), not in the tensor library's words nor as a gradient on the wrong device."""
    layer = nn.Linear(3, 2) if name == "Linear" else nn.BatchNorm1d(3)
    output = layer(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)))
    layer.to(device="meta")
    with pytest.raises(RuntimeError) as info:
        layer.backward(torch.ones_like(output))
    assert str(info.value) == (
        f"{name}: the parameters are torch.float32 on meta but the last forward ran in "
        "torch.float32 on cpu: the module was cast or moved (.to(...)) after that forward; run "
        "forward again before backward"
    )


# -- given_parameter: a pair given as a list ------------------------------------------------------


def test_an_optimizer_given_pairs_as_lists_names_them_with_the_fix() -> None:
    """A (value, gradient) pair or a (name, Parameter) pair given as a two-item list (as after
    a round trip through JSON, or built by hand) is named as the tuple is, with the fix (pass
    ``model.parameters()``), not only as a "list"; a plain tensor is named with the Parameter
    that holds one (it was "got Tensor", torch.Tensor's module being "torch")."""
    layer = nn.Linear(2, 1)

    with pytest.raises(TypeError) as values:
        optim.SGD([[torch.zeros(2), torch.zeros(2)]], lr=0.1)  # type: ignore[list-item]
    assert str(values.value) == (
        "SGD: params[0] must be a minidl Parameter, got a list of two tensors, a (value, "
        "gradient) pair as param() gives (pass model.parameters(), the Parameters that hold them)"
    )
    with pytest.raises(TypeError) as named:
        optim.SGD([["weight", layer.weight]], lr=0.1)  # type: ignore[list-item]
    assert str(named.value) == (
        "SGD: params[0] must be a minidl Parameter, got a list ('weight', Parameter), a pair as "
        "named_parameters() gives (pass model.parameters())"
    )
    with pytest.raises(TypeError) as plain:
        optim.SGD([torch.zeros(2)], lr=0.1)  # type: ignore[list-item]
    assert str(plain.value) == (
        "SGD: params[0] must be a minidl Parameter, got torch.Tensor, a PyTorch tensor "
        "(minidl.nn.Parameter(tensor) holds one as a Parameter; minidl modules give theirs with "
        ".parameters())"
    )
