"""Logistic sigmoid activation."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from minidl._scalar import operand
from minidl.nn.activation_base import Activation, Operations, computes_on_buffers

__all__ = ["Sigmoid", "sigmoid"]


def sigmoid(input: Tensor, out: Tensor | None = None) -> Tensor:
    r""":math:`1 / (1 + e^{-x})` element by element, each element's bits independent of its place.

    ``torch.sigmoid`` on CPU computes the last elements of a tensor (its size modulo twice the
    vector width) with scalar code that rounds differently from its vectorised body, so an
    element's value depended on where it sat: in a stack of models (:func:`minidl.nn.stack_models`),
    the last model's last elements, and a model trained beside others did not get the bits it
    gets alone. The negation, :math:`e^x`, :math:`+1` and the reciprocal round the same anywhere
    (checked against every position of stacks in float32). At :math:`x = -1000`,
    :math:`e^{1000}` overflows to ``inf`` and :math:`1/\infty = 0`, the right limit, not NaN.
    A float16 or bfloat16 input is computed in float32 and rounded once, as ``torch.sigmoid``
    does: in float16, :math:`e^{-x}` overflows below :math:`x \approx -11.1`, where
    :math:`\sigma(x)` is still a (subnormal) float16 number.

    Args:
        input: the input.
        out: a tensor of the input's shape to write the result into (default: a new one).

    Shape:
        - Input: any shape. Output: a new tensor of the same shape (or ``out``).
    """
    if input.dtype is torch.float16 or input.dtype is torch.bfloat16:
        wide = sigmoid(input.float())
        return wide.to(input.dtype) if out is None else out.copy_(wide)
    output = input.neg() if out is None else torch.neg(input, out=out)
    return output.exp_().add_(operand(1.0, output)).reciprocal_()


class Sigmoid(Activation):
    r"""Logistic sigmoid :math:`y = \sigma(x) = 1 / (1 + e^{-x})`.

    Forward is :func:`sigmoid` (the same bits for an element wherever it sits in the input, which
    ``torch.sigmoid`` does not give). Backward reuses the cached output:
    :math:`\partial L/\partial x = g\,y\,(1 - y)`, computed as :math:`g y - g y \cdot y`; for a
    float16 or bfloat16 gradient and output, the correctly rounded :math:`g y (1 - y)` (found
    exactly in float64, then rounded once: see :func:`_wide_backward`).

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> Sigmoid()(torch.tensor([0.0]))
        tensor([0.5000])
    """

    _in_place = True  # (the negation reads each element before anything is written)

    def _forward(self, input: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        output = sigmoid(input, out)
        return output, output

    def _backward(self, grad_output: Tensor, output: Tensor, out: Tensor | None = None) -> Tensor:
        dtype = grad_output.dtype
        if (dtype is torch.float16 or dtype is torch.bfloat16) and output.dtype is dtype:
            # A 16-bit gradient and output: the correctly rounded g y (1 - y) (PyTorch's float16
            # CPU kernel rounds after each operation: about a quarter of its results are one
            # unit in the last place further away).
            wide = _wide_backward(grad_output, output, dtype)
            return wide.to(dtype) if out is None else out.copy_(wide)
        # g y - g y^2, written over the g y temporary (one allocation, not two), or into out.
        grad_times_y = grad_output * output
        target = grad_times_y if out is None else out
        try:
            return torch.addcmul(grad_times_y, grad_times_y, output, value=-1, out=target)
        except RuntimeError:  # out= refused for values from an autograd graph: read them plain
            grad_times_y, output = grad_times_y.detach(), output.detach()
            target = grad_times_y if out is None else out
            return torch.addcmul(grad_times_y, grad_times_y, output, value=-1, out=target)

    def _operations(
        self, input: Tensor, output: Tensor, grad_output: Tensor, grad_input: Tensor
    ) -> Operations | None:
        if not computes_on_buffers(self, Sigmoid, output, input, grad_output, grad_input):
            return None
        # (sigmoid's four operations; backward's g y written into grad_input, its temporary)
        forward = (
            partial(torch.neg, input, out=output),
            partial(Tensor.exp_, output),
            partial(Tensor.add_, output, operand(1.0, output)),
            partial(Tensor.reciprocal_, output),
        )
        backward = (
            partial(torch.mul, grad_output, output, out=grad_input),
            partial(torch.addcmul, grad_input, grad_input, output, value=-1, out=grad_input),
        )
        return forward, backward


def _wide_backward(grad_output: Tensor, output: Tensor, dtype: torch.dtype) -> Tensor:
    r""":math:`g\,y\,(1 - y)` for a float16 or bfloat16 (``dtype``) gradient and output, in
    float32 rounded to odd, so that its rounding to ``dtype`` (to nearest) is the
    correctly rounded :math:`g y (1 - y)`, whichever kernels run.

    The value is found exactly in float64, as a sum: :math:`g y` is exact there (two
    significands of 11 or 8 bits). For float16, :math:`1 - y` is exact too (at most 24 bits),
    and so is :math:`(g y)(1 - y)` (at most 46). For bfloat16 it is not (:math:`y` can be
    :math:`2^{-133}`), but :math:`(g y)\,y` is (24 bits), and :math:`g y - (g y)\,y` is its
    float64 difference plus that difference's rounding error (Knuth's two-sum, exact). Rounding
    that to the nearest float32 and then to ``dtype`` rounds twice: where the first lands on a
    midpoint of ``dtype``, the second can round the wrong way (at :math:`y = \sigma(-17)` and
    :math:`g = 1.5` in bfloat16, :math:`g y` is a midpoint and :math:`g y - (g y) y` rounded up
    from it). Rounded to odd (an inexact result is the neighbour whose last bit is 1) a number
    of at least two bits more than ``dtype``'s keeps what the second rounding needs: the float32
    rounding to nearest of that is the correctly rounded one (Boldo and Melquiond, 2008).
    """
    wide = output.double()
    grad_times_y = grad_output.double() * wide
    complement = torch.rsub(wide, operand(1.0, wide))  # (1 - y: exact for float16)
    if dtype is torch.float16:
        return _to_odd_float32(grad_times_y * complement, None)
    product = grad_times_y * wide
    difference = grad_times_y - product
    # (a zero is (g y)(1 - y) itself, exact there, with its sign: g y - g y is +0 where g < 0)
    zero = difference == operand(0.0, difference)
    difference = torch.where(zero, grad_times_y * complement, difference)
    # (two-sum of grad_times_y and -product: the error of their float64 difference, exactly)
    virtual = difference - grad_times_y
    error = (grad_times_y - (difference - virtual)) - (product + virtual)
    return _to_odd_float32(difference, error)


def _to_odd_float32(value: Tensor, error: Tensor | None) -> Tensor:
    """``value + error`` (float64 tensors; ``error`` None for 0) rounded to float32 to odd: the
    nearest float32 if exact, else the neighbour whose last bit is 1. Infinities and NaNs are
    rounded to nearest."""
    rounded = value.float()
    rest = value - rounded.double()  # (exact: within half a float32 unit of value)
    if error is not None:
        rest = rest + error  # (its sign is that of the exact sum)
    even = torch.bitwise_and(rounded.view(torch.int32), 1) == 0
    step = (rest != 0) & even & rest.isfinite()
    toward = torch.where(rest > 0, operand(float("inf"), rounded), operand(float("-inf"), rounded))
    return torch.where(step, torch.nextafter(rounded, toward), rounded)
