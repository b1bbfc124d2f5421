"""`minidl.gradcheck`: gaps found by mutation testing (second round).

Each test checks a behaviour a user of gradcheck relies on, with modules of its own: a wrong
backward that must fail (with the message naming what is wrong), a right one that must pass
(a module that writes each output into one buffer, one that frees its cache after a backward),
and gradients compared at the point the user gave.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import Tensor

import minidl
from minidl import nn

F64 = torch.float64


def _input() -> Tensor:
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=F64)
    return x + 0.1 * torch.sign(x)


class _WritesBoth(nn.Module):
    """y = x ** 2, whose backward writes over its upstream gradient and then over its cached
    input: two broken parts, of which the first is the one reported."""

    def __init__(self) -> None:
        super().__init__()
        self._input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return input * input

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        gradient = grad_output.mul_(2 * self._input)
        self._input.mul_(2)
        return gradient


def test_a_backward_writing_over_its_argument_and_its_input_names_its_argument_first() -> None:
    """The first backward checked writes over its upstream gradient: that is reported (its
    argument, first of the broken parts), not the input of its forward it wrote over after."""
    with pytest.raises(
        minidl.GradcheckError,
        match=r"^gradcheck: _WritesBoth\.backward changed its argument \(the upstream "
        r"gradient\) in place \(at \[0, 0\]: ",
    ):
        minidl.gradcheck(_WritesBoth(), _input())


class _Buffered(nn.Module):
    """y = x ** 2, written into one output buffer that each forward reuses (and, with
    ``reuse_grad``, the input gradient written into one buffer that each backward reuses).
    ``lag``: the cache is updated one forward late (the backward reads the input of the forward
    before the last); ``zero``: the backward returns zeros."""

    def __init__(self, *, lag: bool = False, zero: bool = False, reuse_grad: bool = False) -> None:
        super().__init__()
        self.lag, self.zero, self.reuse_grad = lag, zero, reuse_grad
        self._out: Tensor | None = None
        self._grad: Tensor | None = None
        self._input: Tensor | None = None
        self._pending: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        if self.lag:
            self._input, self._pending = self._pending, input
        else:
            self._input = input
        if self._out is None or self._out.shape != input.shape:
            self._out = torch.empty_like(input)
        return torch.mul(input, input, out=self._out)

    def backward(self, grad_output: Tensor) -> Tensor:
        cached = self._input if self._input is not None else self._pending
        assert cached is not None
        derivative = torch.zeros_like(cached) if self.zero else 2 * cached
        if not self.reuse_grad:
            return grad_output * derivative
        if self._grad is None or self._grad.shape != grad_output.shape:
            self._grad = torch.empty_like(grad_output)
        return torch.mul(grad_output, derivative, out=self._grad)


def test_a_forward_writing_into_one_buffer_is_checked_as_its_function() -> None:
    """A module that writes each output into one buffer (what ``y = result.clone()`` in
    gradcheck allows for): a right backward passes, the outputs of the steps up and down being
    kept apart (as the same buffer, their difference was zero); a backward returning zeros fails,
    at the first element, and the function being smooth, with no note of a kink (the unperturbed
    output, read from the buffer after the steps, made the one-sided differences part)."""
    assert minidl.gradcheck(_Buffered(), _input())
    with pytest.raises(minidl.GradcheckError) as error:
        minidl.gradcheck(_Buffered(zero=True), _input())
    message = str(error.value)
    assert re.match(
        r"gradcheck: _Buffered\.backward disagrees with finite differences at input\[0, 0\]: "
        r"analytic -?0, numeric -?[1-9]",
        message,
    ), message
    assert "kink" not in message


def test_a_gradient_returned_in_a_reused_buffer_is_judged_at_the_call_checked() -> None:
    """A backward that writes its input gradient into one buffer it returns at every call,
    from a cache updated one forward late: wrong at gradcheck's first backward on the input
    (the forward before it was on another input), right at the second. The gradient returned
    by the first is kept as it was then, so the two differ and the backward is reported (kept
    as the buffer, it took the second call's right values and passed). The same module with
    its cache up to date passes."""
    with pytest.raises(
        minidl.GradcheckError,
        match=r"^gradcheck: _Buffered\.backward is not deterministic: a second forward and "
        r"backward on the same input and upstream gradient returned input\[0, 0\] ",
    ):
        minidl.gradcheck(_Buffered(lag=True, reuse_grad=True), _input())
    assert (
        minidl.gradcheck(_Buffered(lag=True, reuse_grad=False), _input(), raise_exception=False)
        is False
    )
    assert minidl.gradcheck(_Buffered(reuse_grad=True), _input())


class _OneShotScale(nn.Module):
    """y = x * w (w of the features' shape), whose backward (and, with ``parameters_only``
    overridden, backward_parameters) frees the cached input once used, as PyTorch frees a
    graph without ``retain_graph``: one backward per forward, as training runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = self.register_parameter(
            "w", nn.Parameter(torch.tensor([0.5, -1.5, 2.0], dtype=F64))
        )
        self._input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return input * self.w.data

    def _take(self) -> Tensor:
        if self._input is None:
            raise RuntimeError("_OneShotScale: backward needs a forward before it")
        input, self._input = self._input, None
        return input

    def backward(self, grad_output: Tensor) -> Tensor:
        input = self._take()
        self.w.grad.add_((grad_output * input).sum(0))
        return grad_output * self.w.data


class _OneShotParametersScale(_OneShotScale):
    """_OneShotScale whose backward keeps its cache and whose backward_parameters (what fit runs
    for a first layer, the last call of a step) frees it."""

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        self.w.grad.add_((grad_output * self._input).sum(0))
        return grad_output * self.w.data

    def backward_parameters(self, grad_output: Tensor) -> None:
        input = self._take()
        self.w.grad.add_((grad_output * input).sum(0))


@pytest.mark.parametrize("module", [_OneShotScale, _OneShotParametersScale])
def test_a_backward_that_frees_its_cache_is_checked_after_a_forward_each_time(
    module: type[_OneShotScale],
) -> None:
    """gradcheck's second backward (and second backward_parameters) follows a second forward,
    as documented ("a second forward and backward on the same input"): a right module whose
    backward frees its cache passes, its parameter restored, where a second call without a
    forward raised."""
    layer = module()
    assert minidl.gradcheck(layer, _input())
    assert torch.equal(layer.w.data, torch.tensor([0.5, -1.5, 2.0], dtype=F64))
    assert torch.equal(layer.w.grad, torch.zeros(3, dtype=F64))


class _ScaledSquare(nn.Module):
    """y = w * x ** 2, right: its central differences are exact at any step (quadratic in x,
    linear in w)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = self.register_parameter(
            "w", nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=F64))
        )
        self._input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return self.w.data * input * input

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        self.w.grad.add_((grad_output * self._input * self._input).sum(0))
        return grad_output * 2 * self.w.data * self._input


def test_each_element_is_differenced_at_the_point_given() -> None:
    """Every element is put back after its steps: the parameter's differences, taken after the
    input's, are at the input given. At a step of 0.25 (exact for this module) a right module
    passes; left at x - eps, the weight's numeric gradient was sum u (x - 0.25) ** 2, far from
    the analytic one. The caller's input is left as it was."""
    x = torch.tensor([[0.5, -1.5, 2.0], [1.0, 0.75, -0.5]], dtype=F64)
    before = x.clone()
    assert minidl.gradcheck(_ScaledSquare(), x, eps=0.25)
    assert torch.equal(x, before)


class _TransposedDouble(nn.Module):
    """y = 2 x, whose backward returns the right values in another shape of as many elements:
    transposed (a column input's gradient as a row) or flattened."""

    def __init__(self, shape: str) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, input: Tensor) -> Tensor:
        return 2 * input

    def backward(self, grad_output: Tensor) -> Tensor:
        gradient = 2 * grad_output
        return gradient.t() if self.shape == "transposed" else gradient.reshape(-1)


@pytest.mark.parametrize(
    ("shape", "rows", "got"),
    [("transposed", (4, 1), r"\(1, 4\)"), ("flattened", (4, 3), r"\(12,\)")],
)
def test_an_input_gradient_of_as_many_elements_in_another_shape_is_refused(
    shape: str, rows: tuple[int, int], got: str
) -> None:
    """The input gradient must have the input's shape, not only its number of elements: a (1, 4)
    gradient for a (4, 1) input would be broadcast to (4, 4) against the numeric one, a flat one
    raise from the comparison. Both are named as the shape returned and the one expected."""
    x = torch.randn(*rows, dtype=F64, generator=torch.Generator().manual_seed(1))
    with pytest.raises(
        minidl.GradcheckError,
        match=rf"^gradcheck: _TransposedDouble\.backward returned an input gradient of shape "
        rf"{got}, torch\.float64, on cpu; expected a tensor of the input's shape "
        rf"{re.escape(str(rows))}, torch\.float64, on cpu$",
    ):
        minidl.gradcheck(_TransposedDouble(shape), x)


class _Uninitialised(nn.Module):
    """A module whose ``__init__`` forgets ``super().__init__()``."""

    def __init__(self) -> None:
        pass

    def forward(self, input: Tensor) -> Tensor:
        return input * 1.0

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


def test_a_module_not_initialised_is_refused_by_name() -> None:
    """A module whose ``__init__`` did not call ``super().__init__()`` is refused before anything
    runs, with what to do, not with whatever its registries' absence raises later."""
    with pytest.raises(
        AttributeError,
        match=r"^gradcheck: the module, a _Uninitialised, was not initialised as a Module: "
        r"_Uninitialised\.__init__ must call super\(\)\.__init__\(\) first$",
    ):
        minidl.gradcheck(_Uninitialised(), torch.ones(2, dtype=F64))


def test_an_empty_tuple_as_the_only_input_is_named_as_no_tensor() -> None:
    """An empty tuple holds no tensors to pass as arguments: it is named as a first input that
    is no floating-point tensor, not as a tuple of inputs to unpack."""
    with pytest.raises(
        TypeError, match=r"^gradcheck: the first input must be a floating-point tensor, got tuple$"
    ):
        minidl.gradcheck(nn.Tanh(), ())  # type: ignore[arg-type]


def test_the_first_non_finite_element_is_named() -> None:
    """An input with several non-finite values is refused naming the first, in row-major
    order (here NaN at (0, 1), before an infinity at (1, 2))."""
    x = torch.ones(2, 3, dtype=F64)
    x[0, 1] = float("nan")
    x[1, 2] = float("inf")
    with pytest.raises(
        ValueError,
        match=r"^gradcheck: the first input has a non-finite value \(nan at index \(0, 1\)\); ",
    ):
        minidl.gradcheck(nn.Tanh(), x)


class _HingeAtOne(nn.Module):
    """y = max(x - 1, 0), whose backward takes the slope on the right at x = 1 (1)."""

    def __init__(self) -> None:
        super().__init__()
        self._input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return (input - 1).clamp(min=0)

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        return grad_output * (self._input >= 1).to(grad_output.dtype)


def test_the_one_sided_differences_are_over_the_step_each_side_takes() -> None:
    """At x = 1 (a power of two) with eps = 3e-16, the step up rounds to 2**-52 and the step
    down to 3 * 2**-53, so each one-sided difference is taken over its own step: the one ahead
    is then the slope 1 (times the projection, as the analytic gradient), not 2/3 of it."""
    with pytest.raises(minidl.GradcheckError) as error:
        minidl.gradcheck(_HingeAtOne(), torch.ones(1, dtype=F64), eps=3e-16)
    found = re.fullmatch(
        r"gradcheck: _HingeAtOne\.backward disagrees with finite differences at input\[0\]: "
        r"analytic (\S+), numeric (\S+) \(one-sided differences (\S+) and (\S+): the function "
        r"has a kink within eps of this point, .*",
        str(error.value),
    )
    assert found is not None, str(error.value)
    analytic, numeric, ahead, behind = map(float, found.groups())
    assert ahead == pytest.approx(analytic, rel=1e-5)
    assert behind == 0.0
    # (the central difference: the step up over both steps, 2**-52 / (2**-52 + 3 * 2**-53))
    assert numeric == pytest.approx(analytic * 2 / 5, rel=1e-5)


class _RootAndOverwrittenScale(nn.Module):
    """y = (x * b, cbrt(a)): at a = 0 the gradient of ``a`` is infinite (a cube root's slope
    there); with ``overwrite``, the backward overwrites the gradient of ``b`` rather than add
    to it."""

    def __init__(self, overwrite: bool = True) -> None:
        super().__init__()
        self.overwrite = overwrite
        self.a = self.register_parameter("a", nn.Parameter(torch.zeros(1, dtype=F64)))
        self.b = self.register_parameter(
            "b", nn.Parameter(torch.tensor([0.5, -1.5, 2.0], dtype=F64))
        )
        self._input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        root = self.a.data.sign() * self.a.data.abs().pow(1 / 3)
        return torch.cat([input * self.b.data, root])

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        self.a.grad.add_(grad_output[3:] * self.a.data.abs().pow(-2 / 3) / 3)
        if self.overwrite:
            self.b.grad.copy_(grad_output[:3] * self._input)
        else:
            self.b.grad.add_(grad_output[:3] * self._input)
        return grad_output[:3] * self.b.data


def test_an_overwritten_gradient_beside_an_infinite_one_is_reported() -> None:
    """The tolerance of the accumulation check is taken from the largest finite gradient: an
    infinite gradient elsewhere (whose own check, infinity doubled, agrees) does not make it
    infinite, and the gradient of ``b`` overwritten at the second backward is reported as such
    (it was blamed on the finite differences of ``a`` instead)."""
    with pytest.raises(
        minidl.GradcheckError,
        match=r"^gradcheck: _RootAndOverwrittenScale\.backward does not accumulate into the "
        r"gradient of 'b': after a second backward, b\.grad\[0\] is ",
    ):
        minidl.gradcheck(_RootAndOverwrittenScale(), torch.tensor([1.0, 2.0, -0.5], dtype=F64))


class _DriftingBesideInfinity(nn.Module):
    """(x + 1e-3 * calls, inf): an output that drifts by 1e-3 a call, beside an infinite one
    (a log at 0, say) that every call returns."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, input: Tensor) -> Tensor:
        self.calls += 1
        infinite = torch.full((1,), float("inf"), dtype=input.dtype)
        return torch.cat([input + 1e-3 * self.calls, infinite])

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output[:-1].clone()


def test_a_drifting_forward_beside_an_infinite_output_is_not_deterministic() -> None:
    """The scale the drift between two forwards is measured against is their largest finite
    output: an infinite one beside (equal in both) does not make every drift negligible, and
    the forward is named as not deterministic, by how much its calls differ (2e-3: a forward on
    another input runs between the two on the input)."""
    with pytest.raises(
        minidl.GradcheckError,
        match=r"^gradcheck: _DriftingBesideInfinity\.forward is not deterministic: two calls on "
        r"the same input differ by up to 0\.002, ",
    ):
        minidl.gradcheck(_DriftingBesideInfinity(), torch.tensor([1.0, 2.0], dtype=F64))


def test_an_infinite_gradient_that_accumulates_is_compared_with_finite_differences() -> None:
    """An infinite gradient doubled by a second backward is infinite again: it accumulates, and
    is compared with finite differences, which at a cube root's 0 are finite (eps ** (-2/3)):
    the disagreement is reported there, not as a gradient that does not accumulate."""
    with pytest.raises(
        minidl.GradcheckError,
        match=r"^gradcheck: _RootAndOverwrittenScale\.backward disagrees with finite differences "
        r"at a\[0\]: analytic -?inf, numeric ",
    ):
        minidl.gradcheck(
            _RootAndOverwrittenScale(overwrite=False), torch.tensor([1.0, 2.0, -0.5], dtype=F64)
        )


class _FloatMask(nn.Module):
    """y = x * mask, the mask a float32 tensor given as the second input."""

    def __init__(self) -> None:
        super().__init__()
        self._mask: Tensor | None = None

    def forward(self, input: Tensor, mask: Tensor) -> Tensor:
        self._mask = mask.to(input.dtype)
        return input * self._mask

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._mask is not None
        return grad_output * self._mask


def test_a_non_finite_later_input_of_another_float_dtype_is_refused() -> None:
    """A later input (a target, a mask) of any floating-point dtype, float32 here, is checked
    for non-finite values before anything runs, as a float64 one is."""
    mask = torch.tensor([1.0, float("nan")], dtype=torch.float32)
    with pytest.raises(
        ValueError,
        match=r"^gradcheck: input 1 has a non-finite value \(nan at index \(1,\)\); ",
    ):
        minidl.gradcheck(_FloatMask(), torch.tensor([1.0, 2.0], dtype=F64), mask)
    assert minidl.gradcheck(_FloatMask(), torch.tensor([1.0, 2.0], dtype=F64), mask.nan_to_num())
