"""``minidl.nn.init`` against ``torch.nn.init``: the same values, bit for bit, from the same
generator state; filled in place (a model's flat buffer kept); every refusal, each changing
nothing."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.nn import init
from minidl.nn.flat import flat_buffer
from tests.helpers import CudaLikeGenerator

SHAPES = [(1, 1), (3, 2), (25, 2), (2, 25), (7, 1), (4, 3, 5), (2, 3, 2, 2)]

#: (name, minidl's call, torch's call), each with the generator as keyword.
Scheme = tuple[str, Callable[..., Any], Callable[..., Any]]
SCHEMES: list[Scheme] = [
    ("uniform", lambda t, g: init.uniform_(t, -0.3, 2.0, g), lambda t, g: torch.nn.init.uniform_(t, -0.3, 2.0, g)),
    ("uniform-default", lambda t, g: init.uniform_(t, generator=g), lambda t, g: torch.nn.init.uniform_(t, generator=g)),
    ("normal", lambda t, g: init.normal_(t, 1.5, 0.2, g), lambda t, g: torch.nn.init.normal_(t, 1.5, 0.2, g)),
    ("normal-default", lambda t, g: init.normal_(t, generator=g), lambda t, g: torch.nn.init.normal_(t, generator=g)),
    ("xavier-uniform", lambda t, g: init.xavier_uniform_(t, generator=g), lambda t, g: torch.nn.init.xavier_uniform_(t, generator=g)),
    ("xavier-uniform-tanh", lambda t, g: init.xavier_uniform_(t, init.calculate_gain("tanh"), g), lambda t, g: torch.nn.init.xavier_uniform_(t, torch.nn.init.calculate_gain("tanh"), g)),
    ("xavier-normal", lambda t, g: init.xavier_normal_(t, generator=g), lambda t, g: torch.nn.init.xavier_normal_(t, generator=g)),
    ("xavier-normal-gain", lambda t, g: init.xavier_normal_(t, 0.7, g), lambda t, g: torch.nn.init.xavier_normal_(t, 0.7, g)),
    ("kaiming-uniform", lambda t, g: init.kaiming_uniform_(t, generator=g), lambda t, g: torch.nn.init.kaiming_uniform_(t, generator=g)),
    ("kaiming-uniform-relu-out", lambda t, g: init.kaiming_uniform_(t, mode="fan_out", nonlinearity="relu", generator=g), lambda t, g: torch.nn.init.kaiming_uniform_(t, mode="fan_out", nonlinearity="relu", generator=g)),
    ("kaiming-uniform-leaky", lambda t, g: init.kaiming_uniform_(t, a=math.sqrt(5), generator=g), lambda t, g: torch.nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=g)),
    ("kaiming-normal", lambda t, g: init.kaiming_normal_(t, generator=g), lambda t, g: torch.nn.init.kaiming_normal_(t, generator=g)),
    ("kaiming-normal-selu", lambda t, g: init.kaiming_normal_(t, nonlinearity="selu", generator=g), lambda t, g: torch.nn.init.kaiming_normal_(t, nonlinearity="selu", generator=g)),
    ("kaiming-normal-linear-out", lambda t, g: init.kaiming_normal_(t, 0.0, "fan_out", "linear", g), lambda t, g: torch.nn.init.kaiming_normal_(t, 0.0, "fan_out", "linear", g)),
]  # fmt: skip


@pytest.mark.parametrize("scheme", SCHEMES, ids=[scheme[0] for scheme in SCHEMES])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_same_bits_as_torch(scheme: Scheme, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    _, mine, theirs = scheme
    parameter = nn.Parameter(torch.full(shape, math.nan, dtype=dtype))
    expected = torch.full(shape, math.nan, dtype=dtype)
    assert mine(parameter, torch.Generator().manual_seed(3)) is parameter
    theirs(expected, torch.Generator().manual_seed(3))
    assert torch.equal(parameter.data, expected)
    assert not torch.equal(parameter.data, torch.zeros(shape, dtype=dtype))
    # a plain tensor, from torch's global generator
    tensor = torch.empty(shape, dtype=dtype)
    torch.manual_seed(4)
    assert mine(tensor, None) is tensor
    torch.manual_seed(4)
    assert torch.equal(tensor, theirs(torch.empty(shape, dtype=dtype), None))


@pytest.mark.parametrize(
    ("nonlinearity", "param"),
    [
        ("linear", None),
        ("identity", None),
        ("conv2d", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("selu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0.2),
        ("leaky_relu", 3),
        ("tanh", 0.5),
    ],
)
def test_calculate_gain_as_torch(nonlinearity: str, param: float | None) -> None:
    name = "linear" if nonlinearity == "identity" else nonlinearity  # (torch's doc names it)
    assert init.calculate_gain(nonlinearity, param) == torch.nn.init.calculate_gain(
        name,  # type: ignore[arg-type]
        param,
    )


def test_constants() -> None:
    parameter = nn.Parameter(torch.randn(3, 4))
    assert init.zeros_(parameter) is parameter
    assert torch.equal(parameter.data, torch.zeros(3, 4))
    assert torch.equal(init.ones_(torch.randn(5)), torch.ones(5))
    assert torch.equal(init.constant_(torch.randn(2, 2), -0.25), torch.full((2, 2), -0.25))


def test_in_place_keeps_the_flat_buffer_and_the_optimizer() -> None:
    """A model's parameters are refilled where they are: still views of its buffer, the
    optimizer's flat step still one operation over them, the gradients untouched."""
    torch.manual_seed(0)
    model = nn.mlp((3, 5, 2), "relu")
    parameters = list(model.parameters())
    buffer = flat_buffer([parameter.data for parameter in parameters])
    assert buffer is not None
    for parameter in parameters:
        parameter.grad.fill_(0.5)
    tensors = [parameter.data for parameter in parameters]
    generator = torch.Generator().manual_seed(1)
    for layer in (model[0], model[2]):
        init.kaiming_uniform_(layer.weight, nonlinearity="relu", generator=generator)
        init.zeros_(layer.bias)
    assert [parameter.data for parameter in parameters] == tensors  # the same tensor objects
    assert flat_buffer([parameter.data for parameter in parameters]) is not None
    torch.testing.assert_close(buffer, torch.cat([t.reshape(-1) for t in tensors]), rtol=0, atol=0)
    expected = torch.empty(5, 3)
    torch.nn.init.kaiming_uniform_(
        expected, nonlinearity="relu", generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(model[0].weight.data, expected)
    assert all(torch.equal(p.grad, torch.full_like(p.grad, 0.5)) for p in parameters)
    before = buffer.clone()
    optimizer = optim.SGD(parameters, lr=0.1)
    optimizer.step()
    assert torch.equal(buffer, before - 0.1 * 0.5)


def test_a_layer_trained_from_a_chosen_initialisation() -> None:
    """A Linear re-initialised the torch.nn way gives torch.nn.Linear's initial values."""
    layer = nn.Linear(10, 4)
    init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=torch.Generator().manual_seed(0))
    bound = 1 / math.sqrt(10)
    init.uniform_(layer.bias, -bound, bound, generator=torch.Generator().manual_seed(1))
    twin = torch.nn.Linear(10, 4)
    torch.nn.init.kaiming_uniform_(
        twin.weight, a=math.sqrt(5), generator=torch.Generator().manual_seed(0)
    )
    torch.nn.init.uniform_(twin.bias, -bound, bound, generator=torch.Generator().manual_seed(1))
    assert torch.equal(layer.weight.data, twin.weight.detach())
    assert torch.equal(layer.bias.data, twin.bias.detach())  # type: ignore[union-attr]


@pytest.mark.parametrize("scheme", SCHEMES, ids=[scheme[0] for scheme in SCHEMES])
def test_zero_elements_are_left_alone(scheme: Scheme) -> None:
    tensor = torch.empty(0, 3)
    assert scheme[1](tensor, None) is tensor


# -- refusals: each names the function, what was given and what was expected, and changes nothing

Call = Callable[[Tensor], object]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda t: init.xavier_uniform_(t[0]),
            ValueError,
            "init.xavier_uniform_: fan_in and fan_out need a weight of 2 or more dimensions (out, "
            "in, ...), got shape (3,) (a bias: use uniform_, normal_, zeros_ or constant_)",
        ),
        (
            lambda t: init.kaiming_normal_(t[0, 0]),
            ValueError,
            "init.kaiming_normal_: fan_in and fan_out need a weight of 2 or more dimensions (out, "
            "in, ...), got shape () (a bias: use uniform_, normal_, zeros_ or constant_)",
        ),
        (
            lambda t: init.kaiming_uniform_(t, mode="fan"),  # type: ignore[arg-type]
            ValueError,
            "init.kaiming_uniform_: mode must be 'fan_in' or 'fan_out', got 'fan'",
        ),
        (
            lambda t: init.kaiming_uniform_(t, nonlinearity="gelu"),
            ValueError,
            "init.kaiming_uniform_: nonlinearity must be one of 'linear', 'identity', 'sigmoid', "
            "'conv1d', 'conv2d', 'conv3d', 'conv_transpose1d', 'conv_transpose2d', "
            "'conv_transpose3d', 'tanh', 'relu', 'leaky_relu', 'selu', got 'gelu'",
        ),
        (
            lambda t: init.kaiming_uniform_(t, a="0.1"),  # type: ignore[arg-type]
            TypeError,
            "init.kaiming_uniform_: a must be a finite number in (-inf, inf) (a float or an "
            "int), got str '0.1'",
        ),
        (
            lambda t: init.xavier_normal_(t, gain=-1.0),
            ValueError,
            "init.xavier_normal_: gain must be in [0, inf), got -1.0",
        ),
        (
            lambda t: init.uniform_(t, 1.0, 0.0),
            ValueError,
            "init.uniform_: b must be in [1, inf), got 0.0",
        ),
        (
            lambda t: init.normal_(t, std=math.nan),
            ValueError,
            "init.normal_: std must be a finite number in [0, inf), got nan",
        ),
        (
            lambda t: init.constant_(t, math.inf),
            ValueError,
            "init.constant_: val must be a finite number in (-inf, inf), got inf",
        ),
        (
            lambda t: init.xavier_uniform_(t.long()),
            TypeError,
            "init.xavier_uniform_: expected a Parameter or a floating-point tensor, got a tensor "
            "of torch.int64",
        ),
        (
            lambda t: init.zeros_(t.tolist()),  # type: ignore[type-var]
            TypeError,
            "init.zeros_: expected a Parameter or a floating-point tensor, got list",
        ),
        (
            lambda t: init.normal_(t, generator=0),  # type: ignore[arg-type]
            TypeError,
            "init.normal_: generator must be a torch.Generator, got int",
        ),
        (
            lambda t: init.xavier_uniform_(t, generator=CudaLikeGenerator()),
            ValueError,
            "init.xavier_uniform_: the generator is on cuda, the tensor on cpu; use a generator "
            "of the tensor's device",
        ),
        (
            lambda t: init.calculate_gain("leaky_relu", True),
            TypeError,
            "init.calculate_gain: param must be a finite number in (-inf, inf) (a float or an "
            "int), got bool True",
        ),
    ],
    ids=[
        "1-d",
        "0-d",
        "mode",
        "nonlinearity",
        "slope-string",
        "gain",
        "bounds",
        "std",
        "val",
        "int-tensor",
        "list",
        "generator-type",
        "generator-device",
        "gain-param",
    ],
)
def test_refusals(call: Call, error: type, message: str) -> None:
    tensor = torch.randn(2, 3)
    before = tensor.clone()
    with pytest.raises(error) as raised:
        call(tensor)
    assert str(raised.value) == message
    assert torch.equal(tensor, before)


#: What float32 cannot hold: (call, message after "is beyond the range of the tensor's dtype").
F32 = "torch.float32: its"
NORMAL = (
    "would draw values beyond the range of the tensor's dtype torch.float32: its draws, up to "
    "|mean| + 9 std in magnitude, must be at most 3.40282e+38, the largest finite value"
)
BEYOND: list[tuple[Call, str]] = [
    (
        lambda t, g: init.constant_(t, 1e300),
        "init.constant_: val=1e+300 is beyond the range of the tensor's dtype torch.float32 "
        "(largest finite value 3.40282e+38)",
    ),
    (
        lambda t, g: init.constant_(t, -3.5e38),
        "init.constant_: val=-3.5e+38 is beyond the range of the tensor's dtype torch.float32 "
        "(largest finite value 3.40282e+38)",
    ),
    (
        lambda t, g: init.uniform_(t, 1e300, 2e300, generator=g),
        "init.uniform_: U(a, b) with a=1e+300, b=2e+300 is beyond the range of the tensor's "
        f"dtype {F32} bounds and its width must be at most 3.40282e+38, the largest finite value",
    ),
    (
        lambda t, g: init.uniform_(t, -2e38, 2e38, generator=g),
        "init.uniform_: U(a, b) with a=-2e+38, b=2e+38 is beyond the range of the tensor's "
        f"dtype {F32} bounds and its width must be at most 3.40282e+38, the largest finite value",
    ),
    (
        lambda t, g: init.uniform_(t, -3.5e38, -1e38, generator=g),
        "init.uniform_: U(a, b) with a=-3.5e+38, b=-1e+38 is beyond the range of the tensor's "
        f"dtype {F32} bounds and its width must be at most 3.40282e+38, the largest finite value",
    ),
    (
        lambda t, g: init.uniform_(t, 1e38, 3.5e38, generator=g),
        "init.uniform_: U(a, b) with a=1e+38, b=3.5e+38 is beyond the range of the tensor's "
        f"dtype {F32} bounds and its width must be at most 3.40282e+38, the largest finite value",
    ),
    (
        lambda t, g: init.normal_(t, 1e300, 1.0, generator=g),
        "init.normal_: N(mean, std^2) with mean=1e+300, std=1.0 " + NORMAL,
    ),
    (
        lambda t, g: init.normal_(t, -1e39, 1.0, generator=g),
        "init.normal_: N(mean, std^2) with mean=-1e+39, std=1.0 " + NORMAL,
    ),
    (
        lambda t, g: init.normal_(t, 0.0, 1e39, generator=g),
        "init.normal_: N(mean, std^2) with mean=0.0, std=1e+39 " + NORMAL,
    ),
    (
        lambda t, g: init.xavier_uniform_(t, gain=2e38, generator=g),
        "init.xavier_uniform_: U(-a, a) with a = 1.85164e+38 (from gain=2e+38) is beyond the "
        f"range of the tensor's dtype {F32} bounds and its width must be at most 3.40282e+38, "
        "the largest finite value",
    ),
    (
        lambda t, g: init.xavier_normal_(t, gain=1e300, generator=g),
        "init.xavier_normal_: N(0, std^2) with std = 5.34522e+299 (from gain=1e+300) " + NORMAL,
    ),
    (
        lambda t, g: init.normal_(t, 0.0, 3.4028234663852886e38, generator=g),
        "init.normal_: N(mean, std^2) with mean=0.0, std=3.4028234663852886e+38 " + NORMAL,
    ),
    (
        lambda t, g: init.normal_(t, 3e38, 1e38, generator=g),
        "init.normal_: N(mean, std^2) with mean=3e+38, std=1e+38 " + NORMAL,
    ),
    (
        lambda t, g: init.xavier_normal_(t, gain=1e38, generator=g),
        "init.xavier_normal_: N(0, std^2) with std = 5.34522e+37 (from gain=1e+38) " + NORMAL,
    ),
]


@pytest.mark.parametrize(
    ("call", "message"),
    BEYOND,
    ids=[
        "val",
        "negative-val",
        "bounds",
        "width",
        "negative-low",
        "high",
        "mean",
        "negative-mean",
        "std",
        "xavier-width",
        "normal-gain",
        "largest-std",
        "mean-and-std",
        "xavier-normal-std",
    ],
)
def test_values_beyond_the_tensors_dtype_are_refused_naming_them(
    call: Callable[[Tensor, torch.Generator], object], message: str
) -> None:
    """A value that the tensor's dtype cannot hold (float32's largest finite value is
    3.40282e+38) is refused in the function's name, the tensor and the generator left as they
    were: a val, a bound of a uniform distribution or its width b - a (which the draws are
    computed from), a normal distribution's mean or std, or a mean and std whose draws reach
    beyond it (float32's largest value as the std makes a third of the draws infinite, a mean of
    3e38 with a std of 1e38 more than a third), also where a gain makes a bound or std so.
    (PyTorch's tensor
    library refused some in its own words, 'value cannot be converted to type float without
    overflow', 'from is out of bounds for float', 'uniform_ expects to-from <= ...', which named
    neither the function nor its argument, and filled a normal tensor with infinities.)"""
    tensor = torch.randn(4, 3)
    before = tensor.clone()
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    with pytest.raises(ValueError) as raised:
        call(tensor, generator)
    assert str(raised.value) == message
    assert torch.equal(tensor, before)
    assert torch.equal(generator.get_state(), state)


def test_the_dtypes_largest_values_are_taken_and_a_huge_slope_has_its_gain() -> None:
    """The largest finite value is taken (float32's as a val and as a normal's mean, float16's
    as a uniform's bound with a width within it), as PyTorch takes it, and a std of a ninth of
    it, whose draws are all finite; and a leaky ReLU's
    slope too large for its square (1e300) gives the gain sqrt(2) / |slope|, where sqrt(2 / (1 + slope^2)) (PyTorch's)
    raised Python's OverflowError, 'Numerical result out of range', naming nothing."""
    largest = torch.finfo(torch.float32).max
    assert init.constant_(torch.zeros(3), -largest).tolist() == [-largest] * 3
    half, twin = torch.zeros(50, dtype=torch.float16), torch.zeros(50, dtype=torch.float16)
    init.uniform_(half, 0.0, 65504.0, torch.Generator().manual_seed(1))
    torch.nn.init.uniform_(twin, 0.0, 65504.0, torch.Generator().manual_seed(1))
    assert torch.equal(half, twin)
    single, twin = torch.zeros(50), torch.zeros(50)
    init.normal_(single, largest, 1.0, torch.Generator().manual_seed(1))
    torch.nn.init.normal_(twin, largest, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(single, twin) and single.tolist() == [largest] * 50
    spread, twin = torch.zeros(100_000), torch.zeros(100_000)
    init.normal_(spread, 0.0, largest / 9.0, torch.Generator().manual_seed(1))
    torch.nn.init.normal_(twin, 0.0, largest / 9.0, torch.Generator().manual_seed(1))
    assert torch.equal(spread, twin) and bool(spread.isfinite().all())
    assert init.calculate_gain("leaky_relu", 1e300) == math.sqrt(2.0) / 1e300
    assert init.calculate_gain("leaky_relu", -1e200) == math.sqrt(2.0) / 1e200
    weight = init.kaiming_normal_(
        torch.zeros(4, 25, dtype=torch.float64), a=1e300, generator=torch.Generator().manual_seed(2)
    )
    expected = torch.zeros(4, 25, dtype=torch.float64).normal_(
        0.0, math.sqrt(2.0) / 1e300 / 5.0, generator=torch.Generator().manual_seed(2)
    )
    assert torch.equal(weight, expected)


@pytest.mark.parametrize("scheme", SCHEMES, ids=[scheme[0] for scheme in SCHEMES])
def test_a_tensor_that_requires_grad_is_filled_as_torch_fills_it(scheme: Scheme) -> None:
    """A torch.nn.Parameter (a leaf that requires grad, which autograd refuses to change in
    place) is filled as torch.nn.init fills it under no_grad: the same bits, the same object,
    still requiring grad."""
    _, mine, theirs = scheme
    parameter = torch.nn.Parameter(torch.full((4, 3), math.nan))
    expected = torch.nn.Parameter(torch.full((4, 3), math.nan))
    assert mine(parameter, torch.Generator().manual_seed(5)) is parameter
    theirs(expected, torch.Generator().manual_seed(5))
    assert parameter.requires_grad
    assert torch.equal(parameter.detach(), expected.detach())
    assert not torch.isnan(parameter.detach()).any()
    assert init.zeros_(parameter) is parameter
    assert torch.equal(parameter.detach(), torch.zeros(4, 3))


def test_a_meta_tensor_takes_a_generator_of_the_cpu() -> None:
    """A meta tensor draws nothing; torch.nn.init takes it with a CPU generator (there is no
    meta generator: 'META device type not an accelerator'), and so does a Linear built on meta
    with one. minidl's init refused it, asking for a generator of the tensor's device."""
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    tensor = torch.empty(3, 4, device="meta")
    for scheme in (init.xavier_uniform_, init.xavier_normal_, init.kaiming_uniform_):
        assert scheme(tensor, generator=generator).is_meta
    layer = nn.Linear(3, 4, device="meta", generator=generator)
    init.kaiming_uniform_(layer.weight, generator=generator)
    assert torch.equal(generator.get_state(), state)
