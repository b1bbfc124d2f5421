"""Tests that kill the mutants of the activations (``minidl.nn``'s element-wise activations,
``Dropout``, ``Identity``, ``StackedActivation`` and gradient clipping) that survived a second
mutation audit.

Each test states the behaviour it pins down against an oracle: PyTorch autograd in float64, the
documented formula, a fresh module's result, or the documented error (type and message).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from minidl import nn

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
