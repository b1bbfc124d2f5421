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
    float16 or bfloat16 gradient and output in float32, rounded once (float16: as
    :math:`(g y)(1 - y)`, see :func:`_wide_backward`).

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
            # A 16-bit gradient and output: computed in float32 and rounded once, the correctly
            # rounded g y (1 - y) (PyTorch's float16 CPU kernel rounds after each operation:
            # about a quarter of its results are one unit in the last place further away).
            wide = _wide_backward(grad_output.float(), output.float(), dtype)
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
    r""":math:`g\,y\,(1 - y)` for a float16 or bfloat16 (``dtype``) gradient and output given in
    float32, each operation exact in float32 but the last, whichever kernels run.

    :math:`g y` is exact (two significands of 11 or 8 bits; for bfloat16, unless it falls in
    float32's subnormal range). For float16, :math:`1 - y` is exact too, and the result is
    :math:`(g y)(1 - y)`; for bfloat16 it is not (:math:`y` can be :math:`2^{-100}`), but
    :math:`(g y)\,y` is (24 bits), and the result is :math:`g y - (g y)\,y`. Computed as
    :math:`g y - (g y)\,y` in float16 too, by one ``addcmul``, it was rounded once where the
    kernel fuses the multiply and the subtraction (ATen's AVX2 and AVX-512 kernels) but twice
    where it does not (its ``default`` kernels: 0.8% of the float16 results one unit in the last
    place off).
    """
    grad_times_y = grad_output * output
    if dtype is torch.float16:
        return grad_times_y * torch.rsub(output, operand(1.0, output))
    return torch.addcmul(grad_times_y, grad_times_y, output, value=-1)
