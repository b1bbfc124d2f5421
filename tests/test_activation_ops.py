"""The tensor operations of ELU's and GELU's forward and backward: how many a call issues (at
the paper's size a step pays about a microsecond for each, whatever its arithmetic), and the
bits of the shorter forms against the longer ones they replace."""

from __future__ import annotations

import os

import pytest
import torch
from torch import Tensor

from minidl import nn
from minidl.nn.selu import SELU_SCALE

F32, F64 = torch.float32, torch.float64

#: Finite and infinite values, zeros of both signs, NaN, subnormals and the clamps' bounds.
SPECIAL = [0.0, -0.0, 1.0, -1.0, 1e-40, -1e-40, 1e-310, -1e-310, 5.0, -5.0, 9.99, 10.0, 10.01]
SPECIAL += [40.0, -40.0, 88.0, -88.0, 1000.0, -1000.0, 3e38, -3e38, 1e-7, -1e-7]
SPECIAL += [float("inf"), -float("inf"), float("nan")]


def _operations(call: object) -> list[str]:
    """The top-level aten operations of one ``call()`` (after a warm-up)."""
    from torch.profiler import profile

    # (the profiler's library prints two lines at each start and stop otherwise)
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    assert callable(call)
    call()
    with profile() as recorded:
        call()
    return [event.name for event in recorded.events() if event.cpu_parent is None]


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize(
    ("name", "forward", "backward"),
    [("ELU", 5, 1), ("ELU(2.0)", 9, 1), ("SELU", 9, 1), ("GELU", 9, 1), ("GELU tanh", 16, 1)],
)
def test_activation_issues_its_operations(
    name: str, forward: int, backward: int, dtype: torch.dtype
) -> None:
    """ELU with its default alpha of 1 in 5 operations (9 with another alpha, as SELU), GELU in
    9 and its tanh approximation in 16; backward in one product."""
    module = {
        "ELU": nn.ELU,
        "ELU(2.0)": lambda: nn.ELU(2.0),
        "SELU": nn.SELU,
        "GELU": nn.GELU,
        "GELU tanh": lambda: nn.GELU("tanh"),
    }[name]()
    x = torch.randn(20, 6, dtype=dtype)
    gradient = torch.randn(20, 6, dtype=dtype)
    module(x)
    assert len(_operations(lambda: module(x))) == forward
    assert _operations(lambda: module.backward(gradient)) == ["aten::mul"] * backward


def _inputs(dtype: torch.dtype) -> list[Tensor]:
    """The special values, and random ones of several scales and lengths (the kernels'
    vectorised bodies and their scalar tails)."""
    generator = torch.Generator().manual_seed(3)
    tensors = [torch.tensor(SPECIAL, dtype=F64).to(dtype)]
    for length in (1, 7, 16, 17, 33, 100, 1003):
        for scale in (1e-3, 1.0, 4.0, 30.0):
            tensors.append((torch.randn(length, dtype=F64, generator=generator) * scale).to(dtype))
    return tensors


def _same_bits(actual: Tensor, expected: Tensor) -> bool:
    return actual.dtype == expected.dtype and torch.equal(
        actual.view(torch.uint8), expected.view(torch.uint8)
    )


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_default_elu_has_the_bits_of_the_general_form(dtype: torch.dtype) -> None:
    """ELU(alpha=1) computes y = expm1(min(x, 0)) + max(x, 0) and caches e^min(x, 0) as its
    derivative: the bits of the general form, with scale * alpha = 1, y = scale alpha
    expm1(min(x, 0)) + scale max(x, 0) and y' = lerp(scale alpha e^min(x, 0), scale, [x > 0])
    (e^0 = 1 exactly), for every special value and random ones, the gradient too."""
    module = nn.ELU()
    for x in _inputs(dtype):
        positive, clamped = x.clamp_min(0), x.clamp_max(0)
        one = torch.tensor(1.0, dtype=dtype)
        output = torch.add(clamped.expm1().mul_(one), positive, alpha=1.0)
        derivative = clamped.exp().mul_(one).lerp_(one, positive.sign())
        gradient = torch.randn(x.shape, dtype=dtype)
        assert _same_bits(module(x), output)
        assert _same_bits(module.backward(gradient), gradient * derivative)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_gelu_halves_one_plus_its_cdf_to_the_bit(approximate: str, dtype: torch.dtype) -> None:
    """GELU's (1 + t) / 2, for t an erf or a tanh, made in one operation as 1/2 + t/2: the bits
    of (1 + t) then times 1/2, for every t in [-1, 1] that the dtype holds near the ends and 0
    (where the two round differently if at all), random ones, and the special values' erf and
    tanh; and the module's output and gradient over the special values and random ones have
    the bits of the two operations in its place."""
    from minidl.nn import gelu

    ends = torch.arange(0, 4096, dtype=F64) * torch.finfo(dtype).eps / 4
    near = [ends - 1, 1 - ends, ends - 0.5, 0.5 - ends, ends, -ends]
    t = torch.cat([*near, torch.rand(4096, dtype=F64) * 2 - 1]).to(dtype)
    cdfs = [function(x) for x in _inputs(dtype) for function in (torch.erf, torch.tanh)]
    for value in [t, *cdfs]:
        expected = (value + 1) * 0.5
        assert _same_bits(gelu._half_of_one_plus(value.clone()), expected)

    def two_operations(t: Tensor) -> Tensor:
        return t.add_(1.0).mul_(0.5)

    module = nn.GELU(approximate)
    with pytest.MonkeyPatch.context() as patch:
        reference = nn.GELU(approximate)
        for x in _inputs(dtype):
            gradient = torch.randn(x.shape, dtype=dtype)
            output, input_gradient = module(x), module.backward(gradient)
            patch.setattr(gelu, "_half_of_one_plus", two_operations)
            assert _same_bits(output, reference(x))
            assert _same_bits(input_gradient, reference.backward(gradient))
            patch.undo()


class _ScaledELU(nn.ELU):
    """An ELU with SELU's scale and an alpha that may be set (SELU's is fixed)."""

    def __init__(self, alpha: float) -> None:
        super().__init__(alpha)
        self._scale = SELU_SCALE


@pytest.mark.parametrize("alpha", [1.0, 1], ids=["float", "int"])
def test_a_scaled_elu_with_alpha_one_keeps_its_scale(alpha: float) -> None:
    """ELU's short form is for scale * alpha = 1 only: an ELU with SELU's scale lambda whose
    alpha is set to 1 (1.0 or the integer 1) still computes lambda (e^x - 1) for x <= 0 and
    lambda x above, its derivative lambda e^x and lambda (float64, to 1e-15), and an ELU whose
    alpha is set back to 1 from another computes e^x - 1 and x again."""
    x = torch.cat([torch.tensor(SPECIAL[:-1], dtype=F64), torch.randn(100, dtype=F64) * 3])
    gradient = torch.randn(x.shape, dtype=F64)
    module = _ScaledELU(2.0)
    module.alpha = alpha
    elu = nn.ELU(2.0)
    elu(x)
    elu.alpha = alpha
    for scale, tested in [(SELU_SCALE, module), (1.0, elu)]:
        negative = x <= 0
        expected = torch.where(negative, scale * torch.expm1(x.clamp_max(0)), scale * x)
        derivative = torch.where(negative, scale * torch.exp(x.clamp_max(0)), scale)
        torch.testing.assert_close(tested(x), expected, rtol=1e-15, atol=0)
        torch.testing.assert_close(
            tested.backward(gradient), gradient * derivative, rtol=1e-15, atol=0
        )


def _bits(tensor: Tensor) -> Tensor:
    """The tensor's bits as integers (NaNs compared by their bits, -0.0 apart from 0.0)."""
    return tensor.view(torch.int32 if tensor.dtype == F32 else torch.int64)


#: The activations with a form on buffers (``_operations``), which fit's folded step runs.
_WITH_OPERATIONS = {"Tanh": nn.Tanh, "Sigmoid": nn.Sigmoid, "ReLU": nn.ReLU}


@pytest.mark.parametrize("name", sorted(_WITH_OPERATIONS))
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 25), (25, 1), (25, 100), (7, 13)])
@pytest.mark.parametrize("in_place", [True, False], ids=["in_place", "into_another"])
def test_operations_have_the_bits_of_the_forward_and_backward(
    name: str, dtype: torch.dtype, shape: tuple[int, int], in_place: bool
) -> None:
    """An activation's ``_operations``, fit's folded step's form of it on buffers made once,
    run in order: the bits of ``_forward`` and ``_backward`` on the same values, in place
    over the input or into another tensor, down to a batch of one, with special values among
    random ones, and again from the same buffers; Tanh's are autograd's too."""
    generator = torch.Generator().manual_seed(sum(shape) + in_place)
    values = torch.randn(shape, dtype=dtype, generator=generator) * 3
    special = torch.tensor(SPECIAL, dtype=dtype)
    values.view(-1)[: min(values.numel(), len(special))] = special[: values.numel()]
    gradient = torch.randn(shape, dtype=dtype, generator=generator)
    module = _WITH_OPERATIONS[name]()
    output, cache = module._forward(values.clone())
    expected = module._backward(gradient, cache)
    input = values.clone()
    out = input if in_place else torch.empty_like(input)
    grad_input = torch.full_like(input, float("nan"))
    operations = module._operations(input, out, gradient, grad_input)
    assert operations is not None
    forward, backward = operations
    for operation in forward:
        operation()
    assert torch.equal(_bits(out), _bits(output))
    for operation in backward:
        operation()
    assert torch.equal(_bits(grad_input), _bits(expected))
    if name == "Tanh":
        leaf = values.clone().requires_grad_()
        torch.tanh(leaf).backward(gradient)
        assert leaf.grad is not None and torch.equal(_bits(grad_input), _bits(leaf.grad))
    # Run again, as the folded step does at every step: the same bits from the same buffers.
    input.copy_(values)
    for operation in (*forward, *backward):
        operation()
    assert torch.equal(_bits(out), _bits(output))
    assert torch.equal(_bits(grad_input), _bits(expected))


@pytest.mark.parametrize("name", sorted(_WITH_OPERATIONS))
def test_no_operations_where_the_methods_compute_otherwise(name: str) -> None:
    """No form on buffers for float16 and bfloat16 (computed in float32 and rounded once), a
    gradient of another dtype than the output (promoted), the meta device, nor a subclass that
    overrides ``_forward`` or ``_backward``, nor one of them set on the instance: its caller
    calls the two methods. An activation
    that caches a derivative of its own (ELU) has none."""
    kind = _WITH_OPERATIONS[name]
    module = kind()

    def buffers(*dtypes: torch.dtype, device: str = "cpu") -> list[Tensor]:
        return [torch.zeros(3, 4, dtype=dtype, device=device) for dtype in dtypes]

    assert module._operations(*buffers(F32, F32, F32, F32)) is not None
    assert module._operations(*buffers(F64, F64, F64, F64)) is not None
    for dtype in (torch.float16, torch.bfloat16):
        assert module._operations(*buffers(dtype, dtype, dtype, dtype)) is None
    assert module._operations(*buffers(F32, F32, F64, F32)) is None
    assert module._operations(*buffers(F32, F32, F32, F64)) is None
    assert module._operations(*buffers(F64, F32, F32, F32)) is None
    assert module._operations(*buffers(F32, F32, F32, F32, device="meta")) is None

    class Scaled(kind):  # type: ignore[valid-type, misc]
        def _backward(
            self, grad_output: Tensor, output: Tensor, out: Tensor | None = None
        ) -> Tensor:
            return super()._backward(grad_output * 2, output, out)  # type: ignore[no-any-return]

    class Shifted(kind):  # type: ignore[valid-type, misc]
        def _forward(self, input: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
            return super()._forward(input + 1, out)  # type: ignore[no-any-return]

    assert Scaled()._operations(*buffers(F32, F32, F32, F32)) is None
    assert Shifted()._operations(*buffers(F32, F32, F32, F32)) is None
    for hook in ("_forward", "_backward"):  # (set on the instance, to trace or change it)
        traced = kind()
        setattr(traced, hook, getattr(traced, hook))
        assert traced._operations(*buffers(F32, F32, F32, F32)) is None
    assert nn.ELU()._operations(*buffers(F32, F32, F32, F32)) is None
