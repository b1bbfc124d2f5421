"""The activations (the Activation base class, CachedDerivative, Sigmoid, Tanh, ReLU,
LeakyReLU, ELU, SELU, GELU, SiLU, Softmax, LogSoftmax) as a mutation audit found them
untested.

Each test states the behaviour it pins down against an oracle: PyTorch autograd in float64, the
documented formula, a fresh module's result, or the documented error (type and message).
"""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from minidl import nn
from minidl.nn.selu import SELU_ALPHA, SELU_SCALE
from tests.test_activation_gaps import _seeded

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64


def _autograd(function, x: Tensor, g: Tensor) -> Tensor:
    """dL/dx of L = sum(g * function(x)) by PyTorch's autograd in float64."""
    leaf = x.double().requires_grad_()
    (function(leaf) * g.double()).sum().backward()
    assert leaf.grad is not None
    return leaf.grad


# -- out= hooks: values from an autograd graph -----------------------------------------------


def test_sigmoid_backward_out_writes_out_for_values_of_an_autograd_graph() -> None:
    """Sigmoid's backward into ``out`` (StackedActivation's hook) for an output that requires
    grad (out= is refused there: the values are read plain) still writes ``out``."""
    module = nn.Sigmoid()
    x = _seeded(7, seed=7).requires_grad_()
    module(x)
    gradient = _seeded(7, seed=8)
    out = torch.full((7,), float("nan"))
    module._backward_out(gradient, out)
    expected = _autograd(torch.sigmoid, x.detach(), gradient)
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-7)


# -- Activation(): a tensor among other arguments still gets the hint ------------------------


def test_a_tensor_among_other_arguments_gets_the_hint_of_how_a_module_is_called() -> None:
    """``Tanh(x, 1)`` (a tensor beside something else) is refused with the hint that a module
    is built, then called on its input, as a tensor alone is: any tensor given reads as a call
    on an input."""
    with pytest.raises(TypeError) as info:
        nn.Tanh(torch.zeros(3), 1)  # type: ignore[call-arg]
    assert str(info.value) == (
        "Tanh() takes no arguments, got 2 (Tensor, int); a module is built, then called on its "
        "input: Tanh()(x)"
    )
    with pytest.raises(TypeError) as info:
        nn.Sigmoid(1.0, input=torch.zeros(3))  # type: ignore[call-arg]
    assert str(info.value) == (
        "Sigmoid() takes no arguments, got 2 (float, input=Tensor); a module is built, then "
        "called on its input: Sigmoid()(x)"
    )


# -- GELU and SiLU: the clamps' bounds are where the results are exact -----------------------


def test_gelu_derivative_below_minus_30_is_autograds_in_float64() -> None:
    """Between |x| = 30 and 40, x phi(x) is still a (tiny) float64 number: the exact GELU's
    derivative there is autograd's, not the derivative at a clamp of x (the clamp is at 40,
    beyond which e^{-x^2/2} underflows)."""
    x = torch.tensor([-38.0, -35.0, -32.0], dtype=F64)
    gradient = torch.ones(3, dtype=F64)
    module = nn.GELU()
    torch.testing.assert_close(module(x), F.gelu(x), rtol=0, atol=0)
    expected = _autograd(F.gelu, x, gradient)
    assert bool((expected != 0).all())
    torch.testing.assert_close(module.backward(gradient), expected, rtol=1e-10, atol=0)


def test_silu_output_below_minus_100_is_pytorchs_in_float64() -> None:
    """SiLU's clamp of x at -1000 gives the same bits for every finite input: at x = -200 and
    -700 the float64 output and derivative are PyTorch's (tiny, not those at a clamp of x)."""
    x = torch.tensor([-700.0, -200.0, -120.0], dtype=F64)
    module = nn.SiLU()
    torch.testing.assert_close(module(x), F.silu(x), rtol=1e-14, atol=0)
    gradient = torch.ones(3, dtype=F64)
    torch.testing.assert_close(
        module.backward(gradient), _autograd(F.silu, x, gradient), rtol=1e-10, atol=0
    )


# -- GELU: approximate is kept as a plain str --------------------------------------------------


def test_gelu_keeps_a_str_subclass_as_a_plain_str() -> None:
    """A subclass of str is kept as its characters, a plain ``str``: one whose ``__eq__``
    says otherwise does not change which GELU is computed, nor the ``repr``."""

    class Loose(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    module = nn.GELU(approximate=Loose("none"))
    assert type(module.approximate) is str
    assert repr(module) == "GELU(approximate='none')"
    x = torch.linspace(-3, 3, 13, dtype=F64)
    torch.testing.assert_close(module(x), F.gelu(x), rtol=1e-15, atol=1e-15)


# -- SELU: a subclass's own scale is not called the self-normalising constant -------------------


def test_setting_the_scale_of_a_selu_subclass_does_not_name_the_constant() -> None:
    """A subclass that computes with a scale of its own (as the experiments' PublishedSELU)
    refuses a new scale naming its own, without the words about the self-normalising
    constant; the module is unchanged."""

    class HalfSELU(nn.SELU):
        _scale = 0.5

    module = HalfSELU()
    with pytest.raises(AttributeError) as info:
        module.scale = 2.0
    assert str(info.value) == (
        "HalfSELU: scale is fixed at 0.5, got 2.0; for another scale, multiply the output of an ELU"
    )
    assert module.scale == 0.5 and "scale" not in vars(module)


# -- LogSoftmax: gradients of another dtype than the forward ----------------------------------


def test_log_softmax_of_a_float16_forward_and_a_float64_gradient_is_float64() -> None:
    """A float64 gradient through a float16 forward is computed in float64 (with the float32
    probabilities): g - p sum(g), to float64's precision, not rounded to float32."""
    module = nn.LogSoftmax(dim=1)
    x = _seeded(4, 6, seed=12, dtype=F16)
    module(x)
    probabilities = module._probabilities.double()  # (float32, kept by the forward)
    gradient = _seeded(4, 6, seed=13, dtype=F64) * 1e3 + 1 / 3
    result = module.backward(gradient)
    assert result.dtype is F64
    expected = gradient - probabilities * gradient.sum(dim=1, keepdim=True)
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-9)


def test_log_softmax_of_a_float16_forward_and_a_bfloat16_gradient_is_float32() -> None:
    """float16 with bfloat16 promotes to float32, as torch does: the result is float32."""
    module = nn.LogSoftmax(dim=1)
    x = _seeded(3, 5, seed=14, dtype=F16)
    module(x)
    gradient = _seeded(3, 5, seed=15, dtype=BF16)
    result = module.backward(gradient)
    assert result.dtype is F32
    leaf = x.float().requires_grad_()
    F.log_softmax(leaf, dim=1).backward(gradient.float())
    torch.testing.assert_close(result, leaf.grad, rtol=1e-6, atol=1e-6)


def test_log_softmax_of_a_float32_forward_and_a_float16_gradient_sums_in_float32() -> None:
    """A float16 gradient through a float32 forward is read in float32 before its row sum: the
    result is float32 and within float32's precision of the float64 formula (a sum rounded to
    float16 is off by about 1e-4 of it)."""
    module = nn.LogSoftmax(dim=1)
    x = _seeded(8, 300, seed=16)
    module(x)
    gradient = _seeded(8, 300, seed=17, dtype=F16)
    result = module.backward(gradient)
    assert result.dtype is F32
    expected = _autograd(lambda t: F.log_softmax(t, dim=1), x, gradient)
    torch.testing.assert_close(result.double(), expected, rtol=1e-5, atol=1e-5)


def test_log_softmax_after_a_float16_then_a_float32_forward_promotes_as_the_last() -> None:
    """The dtype of a 16-bit forward is forgotten by the next forward: a float16 gradient
    through the last (float32) forward gives a float32 result, as through a fresh module."""
    module = nn.LogSoftmax(dim=1)
    module(_seeded(3, 5, seed=18, dtype=F16))
    x = _seeded(3, 5, seed=19)
    module(x)
    gradient = _seeded(3, 5, seed=20, dtype=F16)
    fresh = nn.LogSoftmax(dim=1)
    fresh(x)
    result = module.backward(gradient)
    assert result.dtype is F32
    assert torch.equal(result, fresh.backward(gradient))


# -- Tanh: a float16 output and a float32 gradient ---------------------------------------------


def test_tanh_of_a_float16_output_and_a_float32_gradient_is_float32() -> None:
    """A float32 gradient through a float16 forward is promoted, as autograd's: a float32
    result, g (1 - y^2) with y the float16 output."""
    module = nn.Tanh()
    x = _seeded(50, seed=21, dtype=F16)
    y = module(x)
    gradient = _seeded(50, seed=22)
    result = module.backward(gradient)
    assert result.dtype is F32
    expected = gradient.double() * (1 - y.double() ** 2)
    torch.testing.assert_close(result.double(), expected, rtol=1e-6, atol=1e-7)


# -- out= hooks of a 16-bit input -----------------------------------------------------------


@pytest.mark.parametrize("make", [nn.SiLU, nn.GELU, nn.ELU, nn.LeakyReLU, nn.Sigmoid])
@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_forward_out_of_a_16_bit_input_writes_out(make, dtype) -> None:
    """``_forward_out`` (StackedActivation's hook) of a float16 or bfloat16 input writes the
    forward's bits into ``out``."""
    x = _seeded(4, 5, seed=23, dtype=dtype)
    out = torch.full((4, 5), float("nan"), dtype=dtype)
    module = make()
    module._forward_out(x, out)
    assert torch.equal(out, make()(x))


# -- Tanh: a gradient of another dtype, a gradient from an autograd graph --------------------


def test_tanh_of_a_float32_output_and_a_float64_gradient_is_float64() -> None:
    """A float64 gradient through a float32 forward is promoted (g - g y^2 in float64 with the
    float32 output), as autograd's: a float64 result, not a refusal of out='s cast."""
    module = nn.Tanh()
    x = _seeded(20, seed=24)
    y = module(x)
    gradient = _seeded(20, seed=25, dtype=F64)
    result = module.backward(gradient)
    assert result.dtype is F64
    expected = gradient - gradient * y.double() ** 2
    torch.testing.assert_close(result, expected, rtol=1e-14, atol=1e-15)


def test_tanh_backward_of_a_gradient_that_requires_grad() -> None:
    """A gradient and an output from an autograd graph (out= refused there: read plain) give
    g (1 - y^2), autograd's to float32's precision."""
    module = nn.Tanh()
    x = _seeded(9, seed=26).requires_grad_()
    module(x)
    gradient = _seeded(9, seed=27).requires_grad_()
    result = module.backward(gradient)
    expected = _autograd(torch.tanh, x.detach(), gradient.detach())
    torch.testing.assert_close(result.detach().double(), expected, rtol=1e-6, atol=1e-7)


# The rest of the activations' mutation audit (selu_setstate_scale_del, sm_dim_zero, sm_dim_return,
# sm_fwd16_round, sm_bwd_promote, ls_narrow_check, tanh_sub_except_out).


def test_a_selu_pickled_with_the_constant_scale_in_its_slot_loads_as_a_fresh_selu() -> None:
    """A SELU pickled before its scale was fixed held the constant (and alpha) in instance
    slots: loading drops them, as the class now gives them, so that the module's state is a
    fresh SELU's (no instance ``_scale`` left to shadow the class's) and it pickles again as
    one; it computes as a fresh SELU."""
    fresh = nn.SELU()
    state = dict(fresh.__dict__)
    state["_scale"] = SELU_SCALE
    state["_alpha"] = SELU_ALPHA
    module = nn.SELU.__new__(nn.SELU)
    module.__setstate__(state)
    assert sorted(vars(module)) == sorted(vars(fresh))
    assert "_scale" not in vars(module)
    assert sorted(vars(pickle.loads(pickle.dumps(module)))) == sorted(vars(fresh))
    x = torch.tensor([1.5, -0.5, 0.0], dtype=F64)
    assert torch.equal(module(x), fresh(x))


# -- Softmax: the dim setting -------------------------------------------------------------------


@pytest.mark.parametrize("given", [0, 2, -2])
def test_softmax_refuses_a_dim_other_than_the_features(given: int) -> None:
    """``dim`` 0 (the batch), 2 or -2 is refused with a ValueError naming what was given; a
    module whose dim is set to it keeps its dim."""
    with pytest.raises(ValueError) as info:
        nn.Softmax(dim=given)
    expected = (
        f"Softmax: dim must be 1 (or -1), the feature dimension of an (N, C) input, got {given}"
    )
    assert str(info.value) == expected
    module = nn.Softmax(dim=1)
    with pytest.raises(ValueError) as info:
        module.dim = given
    assert str(info.value) == expected
    assert module.dim == 1 and repr(module) == "Softmax(dim=1)"


def test_softmax_keeps_dim_minus_one_as_one() -> None:
    """``dim=-1`` is kept as 1 (the same dimension of an (N, C) input): one module, with one
    repr, whichever was given, at construction and when set."""
    module = nn.Softmax(dim=-1)
    assert module.dim == 1
    assert repr(module) == repr(nn.Softmax(dim=1)) == "Softmax(dim=1)"
    other = nn.Softmax()
    other.dim = -1
    assert other.dim == 1 and repr(other) == "Softmax(dim=1)"


# -- Softmax: 16-bit forward and a gradient of another dtype ------------------------------------


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_softmax_of_a_16_bit_input_is_pytorchs_in_its_dtype(dtype: torch.dtype) -> None:
    """A float16 or bfloat16 input gives an output of its dtype, torch.softmax's bits
    (computed in float32, rounded once)."""
    x = (_seeded(6, 9, seed=31) * 4).to(dtype)
    output = nn.Softmax(dim=1)(x)
    assert output.dtype is dtype
    assert torch.equal(output, torch.softmax(x, dim=1))


@pytest.mark.parametrize(
    ("forward", "gradient", "promoted"),
    [(F32, F16, F32), (F32, BF16, F32), (F16, BF16, F32), (BF16, F16, F32), (F64, F16, F64)],
    ids=["f32-f16", "f32-bf16", "f16-bf16", "bf16-f16", "f64-f16"],
)
def test_softmax_backward_of_a_gradient_of_another_dtype_is_promoted(
    forward: torch.dtype, gradient: torch.dtype, promoted: torch.dtype
) -> None:
    """A gradient of another dtype than the forward's is promoted as torch promotes them (a
    16-bit gradient through a float32 forward gives float32, float16 with bfloat16 gives
    float32): y (g - sum(g y)) with y the cached output, to the promoted dtype's precision."""
    module = nn.Softmax(dim=1)
    x = _seeded(5, 7, seed=32, dtype=forward)
    y = module(x)
    g = _seeded(5, 7, seed=33, dtype=gradient)
    result = module.backward(g)
    assert result.dtype is promoted
    yd, gd = y.double(), g.double()
    expected = yd * (gd - (gd * yd).sum(dim=1, keepdim=True))
    tolerance = 1e-6 if promoted is F32 else 1e-12
    torch.testing.assert_close(result.double(), expected, rtol=tolerance, atol=tolerance)


# -- LogSoftmax: a gradient of the wrong shape after a 16-bit forward ---------------------------


@pytest.mark.parametrize("shape", [(3, 1), (4,), (1, 4)], ids=str)
def test_log_softmax_after_a_16_bit_forward_refuses_a_gradient_of_another_shape(
    shape: tuple[int, ...],
) -> None:
    """After a float16 forward, a gradient that would broadcast against the (3, 4) output is
    refused as after a float32 one (a ValueError naming the module, the shape given and the
    one expected), not broadcast; the cache is kept: a gradient of the right shape then gives a
    fresh module's result."""
    x = _seeded(3, 4, seed=34, dtype=F16)
    module = nn.LogSoftmax(dim=1)
    module(x)
    with pytest.raises(ValueError) as info:
        module.backward(torch.ones(shape, dtype=F16))
    assert str(info.value) == (
        f"LogSoftmax: gradient has shape {tuple(shape)}, expected (3, 4) (the shape of the "
        "last forward's output)"
    )
    g = _seeded(3, 4, seed=35, dtype=F16)
    fresh = nn.LogSoftmax(dim=1)
    fresh(x)
    assert torch.equal(module.backward(g), fresh.backward(g))


# -- Tanh: out= of a promoted gradient from an autograd graph -----------------------------------


def test_tanh_backward_out_of_a_promoted_gradient_from_an_autograd_graph_writes_out() -> None:
    """Tanh's backward into ``out`` (the hook's) with a float16 output from an autograd graph
    and a float32 gradient (promoted: out= refused for values that require grad, read plain)
    writes g (1 - y^2) into ``out``, autograd's to float32's precision."""
    module = nn.Tanh()
    x = _seeded(11, seed=36, dtype=F16).requires_grad_()
    y = module(x)
    gradient = _seeded(11, seed=37)
    out = torch.full((11,), float("nan"))
    module._backward_out(gradient, out)
    expected = gradient.double() * (1 - y.detach().double() ** 2)
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-7)
