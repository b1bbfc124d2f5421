"""Gradient clipping against ``torch.nn.utils.clip_grad_norm_`` and ``clip_grad_value_``.

The oracle is PyTorch's own clipping of the same gradients, in float64, for flat models (one
``vector_norm`` over the buffer) and for parameters that tile no buffer (the norm of the
per-parameter norms); then a training trajectory with clipping against PyTorch's, and every
refusal, each leaving the gradients as they were.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.nn.flat import flat_buffer
from tests.helpers import F64, torch_loss, torch_twin

NORM_TYPES: list[float | str] = [1.0, 2.0, 3.5, 0.5, math.inf, "inf", np.float32(np.inf)]
#: What a refused norm_type is told: inf is taken (the range of a finite check would leave it out).
NORM_TYPE = "norm_type must be a number in (0, inf] (a float or an int, or the string 'inf')"


def _model(seed: int, dtype: torch.dtype = F64) -> nn.Sequential:
    """A random-width MLP whose gradients are random values of a random scale."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [int(size) for size in torch.randint(1, 7, (int(torch.randint(2, 5, ())) + 1,))]
    torch.manual_seed(seed)
    model = nn.mlp(sizes, "tanh").to(dtype=dtype)
    scale = 10.0 ** float(torch.empty(()).uniform_(-3, 3, generator=generator))
    for parameter in model.parameters():
        parameter.grad.copy_(torch.randn(parameter.grad.shape, generator=generator) * scale)
    return model


def _loose(model: nn.Sequential) -> list[nn.Parameter]:
    """The model's parameters, each taken out of the flat buffer (a copy of its own)."""
    parameters = list(model.parameters())
    for parameter in parameters:
        grad = parameter.grad.clone()
        parameter.data = parameter.data.clone()
        parameter.grad = grad
    assert flat_buffer([parameter.grad for parameter in parameters]) is None
    return parameters


def _torch_params(parameters: list[nn.Parameter]) -> list[torch.nn.Parameter]:
    twins = []
    for parameter in parameters:
        twin = torch.nn.Parameter(parameter.data.clone())
        twin.grad = parameter.grad.clone()
        twins.append(twin)
    return twins


def _grads(parameters: list[nn.Parameter]) -> list[Tensor]:
    return [parameter.grad.clone() for parameter in parameters]


@pytest.mark.parametrize("norm_type", NORM_TYPES, ids=str)
@pytest.mark.parametrize("flat", [True, False], ids=["flat", "loose"])
@pytest.mark.parametrize("seed", range(6))
def test_clip_grad_norm_matches_torch(seed: int, flat: bool, norm_type: float | str) -> None:
    model = _model(seed)
    parameters = list(model.parameters()) if flat else _loose(model)
    assert (flat_buffer([p.grad for p in parameters]) is not None) == flat
    twins = _torch_params(parameters)
    # max_norm below, near and above the norm: clipped, and unclipped (multiplied by 1)
    norm = float(torch.nn.utils.get_total_norm([t.grad for t in twins], norm_type))
    max_norm = norm * [0.1, 0.5, 0.999, 2.0, 10.0, 1.0][seed]
    total = nn.clip_grad_norm_(parameters, max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(twins, max_norm, norm_type)
    torch.testing.assert_close(total, expected, rtol=1e-13, atol=0)
    for parameter, twin in zip(parameters, twins, strict=True):
        torch.testing.assert_close(parameter.grad, twin.grad, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("seed", range(4))
def test_clip_grad_norm_float32_within_rounding_of_torch(seed: int) -> None:
    model = _model(seed, torch.float32)
    parameters = list(model.parameters())
    twins = _torch_params(parameters)
    total = nn.clip_grad_norm_(parameters, 0.3)
    expected = torch.nn.utils.clip_grad_norm_(twins, 0.3)
    assert total.dtype == torch.float32
    torch.testing.assert_close(total, expected, rtol=4e-7, atol=0)
    for parameter, twin in zip(parameters, twins, strict=True):
        torch.testing.assert_close(parameter.grad, twin.grad, rtol=4e-7, atol=1e-30)


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
def test_clip_grad_norm_coefficient_has_pytorchs_bits(dtype: torch.dtype) -> None:
    """The coefficient is max_norm / (total + 1e-6) as PyTorch computes a number over a tensor
    (the reciprocal times the number, not a division, which differs in the last bit for some
    numbers), clamped at 1: each gradient after clipping has the bits of its value before times
    that coefficient, over 200 max_norms below the norm, flat and loose. The total it is
    computed from is checked against the norm computed here (the coefficient from minidl's
    own total alone passed a total 1.5 times the norm)."""
    generator = torch.Generator().manual_seed(5)
    limits = (10.0 ** (torch.rand(200, generator=generator, dtype=F64) * 6 - 3)).tolist()
    for flat in (True, False):
        model = _model(1, dtype)
        parameters = list(model.parameters()) if flat else _loose(model)
        before = _grads(parameters)
        norm = torch.linalg.vector_norm(torch.cat([grad.flatten() for grad in before]))
        for limit in limits:
            max_norm = limit * float(norm) / 1e3
            for parameter, grad in zip(parameters, before, strict=True):
                parameter.grad.copy_(grad)
            total = nn.clip_grad_norm_(parameters, max_norm)
            tolerance = 1e-6 if dtype == torch.float32 else 1e-14
            torch.testing.assert_close(total, norm, rtol=tolerance, atol=0)
            coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
            for parameter, grad in zip(parameters, before, strict=True):
                assert torch.equal(parameter.grad, grad * coefficient), (flat, max_norm)


def test_clip_grad_norm_flat_is_one_norm_over_the_buffer() -> None:
    """A flat model's total norm is the buffer's norm, computed once; its result equals the
    loose computation to rounding, and scales the buffer itself."""
    model = _model(0)
    parameters = list(model.parameters())
    buffer = flat_buffer([parameter.grad for parameter in parameters])
    assert buffer is not None
    expected_norm = torch.linalg.vector_norm(buffer)
    before = buffer.clone()
    total = nn.clip_grad_norm_(parameters, float(expected_norm) / 4)
    assert torch.equal(total, expected_norm)
    coefficient = torch.clamp(float(expected_norm) / 4 / (expected_norm + 1e-6), max=1.0)
    assert torch.equal(buffer, before * coefficient)


def test_unclipped_gradients_keep_their_bits() -> None:
    model = _model(1)
    parameters = list(model.parameters())
    before = _grads(parameters)
    total = nn.clip_grad_norm_(parameters, math.nextafter(math.inf, 0))
    assert torch.isfinite(total)
    for parameter, grad in zip(parameters, before, strict=True):
        assert torch.equal(parameter.grad, grad)


def test_a_single_parameter_and_a_subset() -> None:
    model = _model(2)
    first = next(iter(model.parameters()))
    twin = _torch_params([first])[0]
    total = nn.clip_grad_norm_(first, 0.01, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(twin, 0.01, 1.0)
    torch.testing.assert_close(total, expected, rtol=1e-13, atol=0)
    torch.testing.assert_close(first.grad, twin.grad, rtol=1e-13, atol=0)
    # the last layer's parameters alone: the others are untouched
    parameters = list(model.parameters())
    others = _grads(parameters[:-2])
    twins = _torch_params(parameters[-2:])
    nn.clip_grad_norm_(parameters[-2:], 1e-3)
    torch.nn.utils.clip_grad_norm_(twins, 1e-3)
    for parameter, twin_parameter in zip(parameters[-2:], twins, strict=True):
        torch.testing.assert_close(parameter.grad, twin_parameter.grad, rtol=1e-13, atol=0)
    for parameter, grad in zip(parameters[:-2], others, strict=True):
        assert torch.equal(parameter.grad, grad)


def test_a_parameter_listed_twice_is_clipped_once() -> None:
    model = _model(3)
    parameters = list(model.parameters())
    twins = _torch_params(parameters)
    total = nn.clip_grad_norm_(parameters + parameters[:2], 0.01)
    expected = torch.nn.utils.clip_grad_norm_(twins, 0.01)
    torch.testing.assert_close(total, expected, rtol=1e-13, atol=0)
    for parameter, twin in zip(parameters, twins, strict=True):
        torch.testing.assert_close(parameter.grad, twin.grad, rtol=1e-13, atol=0)
    # tied weights: one Parameter in two layers, counted once
    first, second = nn.Linear(3, 3, bias=False, dtype=F64), nn.Linear(3, 3, bias=False, dtype=F64)
    second.register_parameter("weight", first.weight)
    tied = nn.Sequential(first, nn.Tanh(), second)
    first.weight.grad.fill_(1.0)
    norm = nn.clip_grad_norm_([*first.parameters(), *second.parameters()], 1.0)
    assert float(norm) == pytest.approx(3.0, rel=1e-15)
    assert float(nn.clip_grad_norm_(tied.parameters(), math.inf)) == pytest.approx(1.0, rel=1e-6)


def test_mixed_dtypes_as_torch() -> None:
    single = nn.Parameter(torch.randn(4, 3, dtype=torch.float32) * 5)
    double = nn.Parameter(torch.randn(5, dtype=F64))
    single.grad.normal_()
    double.grad.normal_()
    twins = _torch_params([single, double])
    total = nn.clip_grad_norm_([single, double], 0.5)
    expected = torch.nn.utils.clip_grad_norm_(twins, 0.5)
    assert total.dtype == expected.dtype == F64
    torch.testing.assert_close(total, expected, rtol=1e-7, atol=0)
    for parameter, twin in zip([single, double], twins, strict=True):
        torch.testing.assert_close(parameter.grad, twin.grad)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("flat", [True, False], ids=["flat", "loose"])
def test_nonfinite_gradients(bad: float, flat: bool) -> None:
    model = _model(4)
    parameters = list(model.parameters()) if flat else _loose(model)
    parameters[1].grad.view(-1)[0] = bad
    before = _grads(parameters)
    with pytest.raises(RuntimeError) as error:
        nn.clip_grad_norm_(parameters, 1.0, error_if_nonfinite=True)
    assert str(error.value).startswith(
        f"clip_grad_norm_: the total norm of order 2.0 of the gradients is {abs(bad)}, which "
        "cannot be clipped; the gradients are left unchanged"
    )
    for parameter, grad in zip(parameters, before, strict=True):
        torch.testing.assert_close(parameter.grad, grad, rtol=0, atol=0, equal_nan=True)
    # by default, scaled by it as PyTorch does (NaN, or 0 for an infinite norm)
    twins = _torch_params(parameters)
    total = nn.clip_grad_norm_(parameters, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(twins, 1.0)
    torch.testing.assert_close(total, expected, equal_nan=True)
    for parameter, twin in zip(parameters, twins, strict=True):
        torch.testing.assert_close(parameter.grad, twin.grad, rtol=0, atol=0, equal_nan=True)


def test_infinite_max_norm_leaves_every_gradient_and_measures() -> None:
    model = _model(5)
    parameters = list(model.parameters())
    parameters[0].grad.view(-1)[0] = math.inf
    before = _grads(parameters)
    total = nn.clip_grad_norm_(parameters, math.inf)
    assert float(total) == math.inf
    assert float(nn.clip_grad_norm_(parameters, np.float32(np.inf), np.float64(1))) == math.inf
    for parameter, grad in zip(parameters, before, strict=True):
        assert torch.equal(parameter.grad, grad)


def test_no_parameters() -> None:
    """A norm of 0 in the default dtype, as PyTorch's (torch.equal would take a float64 zero
    for a float32 one)."""
    default = torch.get_default_dtype()
    try:
        for dtype in (torch.float32, F64):
            torch.set_default_dtype(dtype)
            total = nn.clip_grad_norm_([], 1.0)
            expected = torch.nn.utils.clip_grad_norm_([], 1.0)
            assert total.dtype == expected.dtype == dtype
            assert torch.equal(total, expected)
    finally:
        torch.set_default_dtype(default)
    nn.clip_grad_value_([], 1.0)


def test_gradients_of_two_dtypes_in_one_storage_are_clipped_each_in_its_own() -> None:
    """A float16 gradient and a bfloat16 one that follows it in the same storage (of the same
    element size, so its offset is where the first ends) tile no buffer: each is clipped as
    itself, as PyTorch clips them, not as float16 bits."""

    def parameters() -> list[nn.Parameter]:
        storage = torch.zeros(5, dtype=torch.float16)
        half = nn.Parameter(torch.zeros(2, dtype=torch.float16))
        bfloat = nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))
        half.grad = storage[:2]
        bfloat.grad = storage[2:].view(torch.bfloat16)
        half.grad.copy_(torch.tensor([-3.0, 0.25]))
        bfloat.grad.copy_(torch.tensor([3.0, -0.5, 40.0]))
        return [half, bfloat]

    assert flat_buffer([parameter.grad for parameter in parameters()]) is None
    # clamped exactly; scaled by a norm computed in their dtypes (to their rounding)
    for clip, torch_clip, rtol in (
        (nn.clip_grad_value_, torch.nn.utils.clip_grad_value_, 0.0),
        (nn.clip_grad_norm_, torch.nn.utils.clip_grad_norm_, None),
    ):
        ours = parameters()
        twins = _torch_params(ours)
        clip(ours, 1.0)
        torch_clip(twins, 1.0)
        for parameter, twin in zip(ours, twins, strict=True):
            assert twin.grad is not None and parameter.grad.dtype == twin.grad.dtype
            torch.testing.assert_close(parameter.grad, twin.grad, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "loose"])
@pytest.mark.parametrize("clip_value", [0.0, 1e-3, 0.7, 5.0])
def test_clip_grad_value_matches_torch(flat: bool, clip_value: float) -> None:
    model = _model(6)
    parameters = list(model.parameters()) if flat else _loose(model)
    parameters[0].grad.view(-1)[0] = math.nan
    parameters[-1].grad.view(-1)[0] = -math.inf
    twins = _torch_params(parameters)
    assert nn.clip_grad_value_(parameters, clip_value) is None  # type: ignore[func-returns-value]
    torch.nn.utils.clip_grad_value_(twins, clip_value)
    for parameter, twin in zip(parameters, twins, strict=True):
        torch.testing.assert_close(parameter.grad, twin.grad, rtol=0, atol=0, equal_nan=True)
    bound = nn.Parameter(torch.zeros(3, dtype=F64))
    bound.grad.copy_(torch.tensor([-2.0, 0.5, 3.0], dtype=F64))
    nn.clip_grad_value_(bound, math.inf)
    assert bound.grad.tolist() == [-2.0, 0.5, 3.0]


Step = Callable[[list[nn.Parameter]], object]
TorchStep = Callable[[list[torch.nn.Parameter]], object]


@pytest.mark.parametrize(
    ("clip", "torch_clip"),
    [
        (
            lambda p: nn.clip_grad_norm_(p, 0.05),
            lambda p: torch.nn.utils.clip_grad_norm_(p, 0.05),
        ),
        (
            lambda p: nn.clip_grad_norm_(p, 0.02, "inf"),
            lambda p: torch.nn.utils.clip_grad_norm_(p, 0.02, "inf"),
        ),
        (
            lambda p: nn.clip_grad_value_(p, 0.01),
            lambda p: torch.nn.utils.clip_grad_value_(p, 0.01),
        ),
    ],
    ids=["norm", "inf-norm", "value"],
)
def test_training_with_clipping_follows_torch(clip: Step, torch_clip: TorchStep) -> None:
    """30 SGD steps with momentum, clipping between backward and step, against the same loop
    in PyTorch: the parameters agree to 1e-10 at every step."""
    torch.manual_seed(0)
    model = nn.mlp((3, 8, 8, 2), "tanh").to(dtype=F64)
    twin = torch_twin(model)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    torch_optimizer = torch.optim.SGD(twin.parameters(), lr=0.5, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    clipped = 0
    for step in range(30):
        size = 1 if step == 4 else 16
        x = torch.randn(size, 3, dtype=F64, generator=generator) * 3
        y = torch.randint(2, (size,), generator=generator)
        optimizer.zero_grad()
        criterion(model(x), y)
        model.backward(criterion.backward())
        before = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        clip(list(model.parameters()))
        after = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        clipped += not torch.equal(before, after)
        optimizer.step()
        torch_optimizer.zero_grad()
        torch_loss(criterion, twin(x), y).backward()
        torch_clip(list(twin.parameters()))
        torch_optimizer.step()
        for parameter, torch_parameter in zip(model.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(
                parameter.data, torch_parameter.detach(), rtol=1e-10, atol=1e-12
            )
    assert clipped >= 20  # the clipping acted on most steps, so the comparison tests it


# -- refusals: each names the function, what was given and what was expected, and changes nothing


def _refusable() -> tuple[nn.Sequential, list[Tensor]]:
    """A model with gradients, and a copy of them."""
    torch.manual_seed(0)
    model = nn.mlp((2, 3, 2), "tanh")
    for parameter in model.parameters():
        parameter.grad.normal_()
    return model, _grads(list(model.parameters()))


def _assert_unchanged(model: nn.Sequential, before: list[Tensor]) -> None:
    for parameter, grad in zip(model.parameters(), before, strict=True):
        assert torch.equal(parameter.grad, grad)


class TorchNet(torch.nn.Module):
    """A network written for PyTorch, of a class of one's own."""


@pytest.mark.parametrize(
    ("parameters", "error", "message"),
    [
        (
            lambda m: m,
            TypeError,
            "expected Parameters, got the module Sequential; pass its parameters(), e.g. "
            "model.parameters()",
        ),
        (
            lambda m: m[0].weight.grad,
            TypeError,
            "expected Parameters (model.parameters()) or one Parameter, got Tensor (a minidl "
            "gradient lives in Parameter.grad: pass the Parameter)",
        ),
        (
            lambda m: [*m.parameters(), m[0].weight.data],
            TypeError,
            "expected Parameters, got Tensor at position 4 (a minidl gradient lives in "
            "Parameter.grad: pass the Parameter)",
        ),
        (lambda m: [*m.parameters(), 3], TypeError, "expected Parameters, got int at position 4"),
        (
            lambda m: 3,
            TypeError,
            "expected Parameters (model.parameters()) or one Parameter, got int",
        ),
        # (PyTorch's parameter was told "got Parameter ... pass the Parameter"; its module,
        # "got Linear")
        (
            lambda m: [*m.parameters(), torch.nn.Parameter(torch.zeros(2))],
            TypeError,
            "expected Parameters, got torch.nn.parameter.Parameter at position 4, PyTorch's "
            "(clip its gradients with PyTorch's clip_grad_norm_ or clip_grad_value_; minidl.interop.from_torch converts a "
            "PyTorch model)",
        ),
        (
            lambda m: torch.nn.Parameter(torch.zeros(2)),
            TypeError,
            "expected Parameters (model.parameters()) or one Parameter, got "
            "torch.nn.parameter.Parameter, PyTorch's (clip its gradients with PyTorch's clip_grad_norm_ or clip_grad_value_; "
            "minidl.interop.from_torch converts a PyTorch model)",
        ),
        (
            lambda m: [*m.parameters(), TorchNet()],
            TypeError,
            "expected Parameters, got tests.test_clip.TorchNet at position 4, PyTorch's (clip its "
            "gradients with PyTorch's clip_grad_norm_ or clip_grad_value_; minidl.interop.from_torch converts a PyTorch model)",
        ),
        (
            lambda m: torch.nn.Linear(2, 3),
            TypeError,
            "expected Parameters (model.parameters()) or one Parameter, got "
            "torch.nn.modules.linear.Linear, PyTorch's (clip its gradients with PyTorch's clip_grad_norm_ or clip_grad_value_; "
            "minidl.interop.from_torch converts a PyTorch model)",
        ),
    ],
    ids=[
        "module",
        "tensor",
        "tensor-in-list",
        "int-in-list",
        "int",
        "torch-parameter-in-list",
        "torch-parameter",
        "own-torch-module-in-list",
        "torch-module",
    ],
)
@pytest.mark.parametrize("function", ["clip_grad_norm_", "clip_grad_value_"])
def test_refused_parameters(
    function: str, parameters: Callable[[nn.Sequential], object], error: type, message: str
) -> None:
    model, before = _refusable()
    with pytest.raises(error) as raised:
        getattr(nn, function)(parameters(model), 1e-3)
    assert str(raised.value) == f"{function}: {message}"
    _assert_unchanged(model, before)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"max_norm": -1.0},
            ValueError,
            "max_norm must be a number in [0, inf] (a float or an int), got -1.0",
        ),
        (
            {"max_norm": math.nan},
            ValueError,
            "max_norm must be a number in [0, inf] (a float or an int), got nan",
        ),
        (
            {"max_norm": "1"},
            TypeError,
            "max_norm must be a number in [0, inf] (a float or an int), got str '1'",
        ),
        (
            {"max_norm": True},
            TypeError,
            "max_norm must be a number in [0, inf] (a float or an int), got bool True",
        ),
        ({"max_norm": 1.0, "norm_type": 0}, ValueError, NORM_TYPE + ", got 0"),
        (
            {"max_norm": 1.0, "norm_type": -2.0},
            ValueError,
            NORM_TYPE + ", got -2.0",
        ),
        (
            {"max_norm": 1.0, "norm_type": "2"},
            TypeError,
            NORM_TYPE + ", got str '2'",
        ),
        ({"max_norm": 1.0, "norm_type": -math.inf}, ValueError, NORM_TYPE + ", got -inf"),
        (
            {"max_norm": -math.inf},
            ValueError,
            "max_norm must be a number in [0, inf] (a float or an int), got -inf",
        ),
        (
            {"max_norm": 1.0, "error_if_nonfinite": "yes"},
            TypeError,
            "error_if_nonfinite must be a bool, got str 'yes'",
        ),
    ],
    ids=[
        "negative",
        "nan",
        "string",
        "bool",
        "norm-0",
        "norm-negative",
        "norm-string",
        "norm-minus-inf",
        "minus-inf",
        "flag",
    ],
)
def test_refused_clip_grad_norm_settings(
    kwargs: dict[str, object], error: type, message: str
) -> None:
    model, before = _refusable()
    with pytest.raises(error) as raised:
        nn.clip_grad_norm_(model.parameters(), **kwargs)  # type: ignore[arg-type]
    assert str(raised.value) == f"clip_grad_norm_: {message}"
    _assert_unchanged(model, before)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-0.5, ValueError, "clip_value must be a number in [0, inf] (a float or an int), got -0.5"),
        (
            math.nan,
            ValueError,
            "clip_value must be a number in [0, inf] (a float or an int), got nan",
        ),
        (
            None,
            TypeError,
            "clip_value must be a number in [0, inf] (a float or an int), got NoneType None",
        ),
    ],
    ids=["negative", "nan", "none"],
)
def test_refused_clip_value(value: object, error: type, message: str) -> None:
    model, before = _refusable()
    with pytest.raises(error) as raised:
        nn.clip_grad_value_(model.parameters(), value)  # type: ignore[arg-type]
    assert str(raised.value) == f"clip_grad_value_: {message}"
    _assert_unchanged(model, before)


def test_a_clip_value_beyond_a_gradients_dtype_is_refused_before_any_is_clamped() -> None:
    """A finite clip_value beyond the largest finite value of one gradient's dtype (1e300 for
    a float32 gradient listed after float64 ones) is refused, naming it and that dtype, and
    every gradient keeps its bits, an infinite float64 one too. (The tensor library refused it
    for the float32 gradient only after the float64 ones were clamped: the infinite entry was
    left 1e300, with its message, which named neither the function nor the value.) The largest
    finite value itself is taken, float16's 65504 as PyTorch takes it."""
    double = nn.Linear(2, 2).double()
    single = nn.Linear(3, 4)
    parameters = [*double.parameters(), *single.parameters()]
    for parameter in parameters:
        parameter.grad.normal_()
    double.weight.grad[0, 0] = math.inf
    before = _grads(parameters)
    with pytest.raises(ValueError) as raised:
        nn.clip_grad_value_(parameters, 1e300)
    assert str(raised.value) == (
        "clip_grad_value_: clip_value=1e+300 is beyond the range of the gradients' dtype "
        "torch.float32 (largest finite value 3.40282e+38); expected a number <= 3.40282e+38, "
        "or inf to clamp nothing"
    )
    for parameter, grad in zip(parameters, before, strict=True):
        assert torch.equal(parameter.grad, grad)
    # the float32 gradients listed first, a value given as an int named as given
    with pytest.raises(ValueError) as raised:
        nn.clip_grad_value_([*single.parameters(), *double.parameters()], 10**39)
    assert str(raised.value).startswith(
        f"clip_grad_value_: clip_value={10**39} is beyond the range of the gradients' dtype "
        "torch.float32 (largest finite value 3.40282e+38)"
    )
    for parameter, grad in zip(parameters, before, strict=True):
        assert torch.equal(parameter.grad, grad)
    half = nn.Parameter(torch.zeros(3, dtype=torch.float16))
    half.grad.copy_(torch.tensor([-math.inf, 1.0, math.inf]))
    with pytest.raises(ValueError, match=r"clip_value=65505\.0 is beyond the range of the "):
        nn.clip_grad_value_(half, 65505.0)
    assert half.grad.tolist() == [-math.inf, 1.0, math.inf]
    twin = torch.nn.Parameter(half.data.clone())
    twin.grad = half.grad.clone()
    nn.clip_grad_value_(half, 65504.0)
    torch.nn.utils.clip_grad_value_([twin], 65504.0)
    assert torch.equal(half.grad, twin.grad)
    assert half.grad.tolist() == [-65504.0, 1.0, 65504.0]


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf], ids=str)
def test_an_empty_gradient_adds_nothing_flat_or_loose(norm_type: float) -> None:
    """A parameter with no elements adds nothing to the total norm, of any order: a flat
    model's (the buffer has no entries for it) and the same parameters loose agree. (torch's
    inf-norm of an empty tensor raises; the loose computation raised it, naming no caller.)"""
    torch.manual_seed(0)
    results = []
    for flat in (True, False):
        parameters = [
            nn.Parameter(torch.randn(3, 2, dtype=F64)),
            nn.Parameter(torch.empty(0, dtype=F64)),
            nn.Parameter(torch.randn(4, dtype=F64)),
        ]
        generator = torch.Generator().manual_seed(1)
        for parameter in parameters:
            parameter.grad.copy_(torch.randn(parameter.grad.shape, generator=generator, dtype=F64))
        if flat:
            assert nn.flat.flatten_parameters(parameters) is not None
        assert (flat_buffer([p.grad for p in parameters]) is not None) == flat
        nonempty = torch.cat([parameters[0].grad.reshape(-1), parameters[2].grad])
        expected = torch.linalg.vector_norm(nonempty, norm_type)
        total = nn.clip_grad_norm_(parameters, 0.5, norm_type)
        # (loose, the norm of the norms: the same sum in another order)
        torch.testing.assert_close(total, expected, rtol=1e-15, atol=0)
        coefficient = torch.clamp(0.5 / (expected + 1e-6), max=1.0)
        clipped = torch.cat([parameters[0].grad.reshape(-1), parameters[2].grad])
        torch.testing.assert_close(clipped, nonempty * coefficient, rtol=1e-15, atol=0)
        results.append(clipped)
    torch.testing.assert_close(results[0], results[1], rtol=1e-15, atol=0)
    # every gradient empty: a norm of 0, flat or loose, and nothing to scale
    for flat in (True, False):
        empty = [nn.Parameter(torch.empty(0, 2)), nn.Parameter(torch.empty(0))]
        if flat:
            assert nn.flat.flatten_parameters(empty) is not None
        assert torch.equal(nn.clip_grad_norm_(empty, 1.0, norm_type), torch.tensor(0.0))


# (torch's own norm of order 3, of per-tensor norms over 65536 entries each, is some 60 units
# in the last place off the exact one)
@pytest.mark.parametrize(("norm_type", "rtol"), [(2.0, 4e-6), (1.0, 4e-6), (3.0, 2e-5)], ids=str)
def test_a_long_float32_buffer_is_measured_as_torch_measures_its_tensors(
    norm_type: float, rtol: float
) -> None:
    """Over 4 million float32 gradients in one buffer (64 tensors of 65536 and a bias), the
    total norm within a few units in the last place of PyTorch's norm of per-tensor norms, and
    of the exact one: one CPU reduction over the whole buffer was some 700 units off."""
    generator = torch.Generator().manual_seed(0)
    parameters = [nn.Parameter(torch.zeros(256, 256)) for _ in range(64)]
    parameters.append(nn.Parameter(torch.zeros(17)))
    assert nn.flat.flatten_parameters(parameters) is not None
    buffer = flat_buffer([parameter.grad for parameter in parameters])
    assert buffer is not None and buffer.numel() == 64 * 65536 + 17
    buffer.copy_(torch.randn(buffer.shape, generator=generator) + 0.5)
    twins = _torch_params(parameters)
    exact = torch.linalg.vector_norm(buffer.double(), norm_type)
    total = nn.clip_grad_norm_(parameters, 1.0, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(twins, 1.0, norm_type)
    assert total.dtype == torch.float32
    torch.testing.assert_close(total.double(), exact, rtol=2e-6, atol=0)  # (17 units)
    torch.testing.assert_close(total, expected, rtol=rtol, atol=0)
    for parameter, twin in zip(parameters, twins, strict=True):
        torch.testing.assert_close(parameter.grad, twin.grad, rtol=rtol, atol=1e-30)


@pytest.mark.parametrize("limit", [0.0, 1e-6, 1e-5])
def test_float16_gradients_of_a_tiny_norm_are_clipped(limit: float) -> None:
    """A float16 norm below 1.5e-5: 1 / (norm + 1e-6) overflows float16, and PyTorch's
    coefficient (computed in float16) is then 1 (nothing clipped) or, for a max_norm of 0, NaN
    (0 * inf), for a finite norm; minidl's is computed in float32 there, so the clipped norm is
    at most max_norm (where the reciprocal is finite, PyTorch's bits: see above)."""
    p = nn.Parameter(torch.zeros(3, dtype=torch.float16))
    for value in (1e-7, 1e-6, 4e-6):
        p.grad.fill_(value)
        given = torch.linalg.vector_norm(p.grad.float()).half()  # (rounded once)
        norm = nn.clip_grad_norm_(p, limit, error_if_nonfinite=True)
        assert torch.equal(norm, given)
        assert bool(p.grad.isfinite().all())
        assert float(torch.linalg.vector_norm(p.grad.float())) <= limit * 1.01
        if limit == 0.0:
            assert not p.grad.any()


@pytest.mark.parametrize("clip", [nn.clip_grad_norm_, nn.clip_grad_value_])
def test_the_pairs_of_named_parameters_and_param_are_refused_with_the_fix(
    clip: Callable[..., object],
) -> None:
    """``clip_grad_norm_(model.named_parameters(), 1.0)`` said only "got tuple at position
    0"; the optimizers name the pair and the fix, and so does clipping now."""
    model = nn.mlp((2, 3, 2))
    name = clip.__name__  # type: ignore[attr-defined]
    with pytest.raises(
        TypeError,
        match=rf"^{name}: expected Parameters, got tuple at position 0, a pair as "
        r"named_parameters\(\) gives \(pass model\.parameters\(\)\)$",
    ):
        clip(model.named_parameters(), 1.0)
    with pytest.raises(TypeError, match=r"a \(value, gradient\) pair as param\(\) gives"):
        clip(model.param(), 1.0)


@pytest.mark.parametrize("clip", [nn.clip_grad_norm_, nn.clip_grad_value_])
def test_a_limit_beyond_the_floats_is_infinity(clip: Callable[..., object]) -> None:
    """10**400 as max_norm or clip_value was refused as no number in [0, inf]: it is one, and
    larger than any gradient, as infinity is; it clips nothing."""
    model = nn.mlp((2, 3, 2))
    for p in model.parameters():
        p.grad.normal_()
    before = [p.grad.clone() for p in model.parameters()]
    clip(model.parameters(), 10**400)
    assert all(torch.equal(p.grad, q) for p, q in zip(model.parameters(), before, strict=True))


def test_an_order_or_a_limit_beyond_the_floats_is_infinity() -> None:
    """norm_type=10**400 was refused as no number in (0, inf], a Fraction of 10**400 as
    max_norm too (its digits all printed): each is taken as infinity, as 10**400 is."""
    from fractions import Fraction

    layer = nn.Linear(3, 2)
    for p in layer.parameters():
        p.grad.normal_()
    expected = nn.clip_grad_norm_(layer.parameters(), math.inf, norm_type=math.inf)
    assert torch.equal(nn.clip_grad_norm_(layer.parameters(), 1e9, norm_type=10**400), expected)
    before = [p.grad.clone() for p in layer.parameters()]
    nn.clip_grad_norm_(layer.parameters(), Fraction(10**400))
    assert all(torch.equal(p.grad, q) for p, q in zip(layer.parameters(), before, strict=True))
