"""Hyperbolic tangent activation."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from minidl._scalar import cpu_operand
from minidl.nn.activation_base import Activation, Operations, computes_on_buffers

__all__ = ["Tanh"]


class Tanh(Activation):
    r"""Hyperbolic tangent :math:`y = \tanh(x)`.

    Backward reuses the cached output: :math:`\partial L/\partial x = g\,(1 - y^2)`, with
    :math:`1 - y^2` computed by one fused multiply-add and then multiplied by :math:`g`: on the
    CPU these are the roundings of PyTorch's own derivative of ``tanh``, so the gradient equals
    autograd's bit for bit (float16 and bfloat16 are computed in float32 and rounded once, as
    there; on other devices it is computed as :math:`g - g y^2`). ``torch.tanh`` saturates to
    :math:`\pm 1` instead of overflowing, so both passes are finite at any finite input.

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> Tanh()(torch.tensor([0.0, 1000.0]))
        tensor([0., 1.])
    """

    _in_place = True

    def _forward(self, input: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if out is None:
            output = input.tanh()
        else:
            # (in place, tanh_ skips the checks of an out= argument: the same kernel)
            output = input.tanh_() if out is input else torch.tanh(input, out=out)
        return output, output

    def _backward(self, grad_output: Tensor, output: Tensor, out: Tensor | None = None) -> Tensor:
        dtype = output.dtype
        one = _ONES.get(dtype)  # (float32 and float64)
        if one is None or grad_output.dtype is not dtype or not output.is_cpu:
            return self._other_backward(grad_output, output, out)
        # 1 - y^2 as one fused multiply-add, then times g in place (one allocation).
        try:
            derivative = (
                torch.addcmul(one, output, output, value=-1)
                if out is None
                else torch.addcmul(one, output, output, value=-1, out=out)
            )
            return torch.mul(derivative, grad_output, out=derivative)
        except RuntimeError:  # out= refused for values from an autograd graph: read them plain
            output, grad_output = output.detach(), grad_output.detach()
            derivative = torch.addcmul(one, output, output, value=-1, out=out)
            return torch.mul(derivative, grad_output, out=derivative)

    def _operations(
        self, input: Tensor, output: Tensor, grad_output: Tensor, grad_input: Tensor
    ) -> Operations | None:
        if not computes_on_buffers(self, Tanh, output, input, grad_output, grad_input):
            return None
        one = _ONES[output.dtype]
        forward = (
            partial(Tensor.tanh_, input)
            if output is input
            else partial(torch.tanh, input, out=output)
        )
        backward = (
            partial(torch.addcmul, one, output, output, value=-1, out=grad_input),
            partial(torch.mul, grad_input, grad_output, out=grad_input),
        )
        return (forward,), backward

    def _other_backward(self, grad_output: Tensor, output: Tensor, out: Tensor | None) -> Tensor:
        """Backward for a 16-bit output (on the CPU: in float32, rounded once, as PyTorch's
        kernel computes it), a gradient of another dtype (promoted) and other dtypes."""
        dtype = output.dtype
        if grad_output.dtype is dtype and dtype in _NARROW and output.is_cpu:
            wide = self._backward(grad_output.float(), output.float())
            return wide.to(dtype) if out is None else out.copy_(wide)
        return _subtracted(grad_output, output, out)


#: 1 as the operand of the fused multiply-add of backward, for float32 and float64.
_ONES = {dtype: cpu_operand(1.0, dtype) for dtype in (torch.float32, torch.float64)}
_NARROW = (torch.float16, torch.bfloat16)


def _subtracted(grad_output: Tensor, output: Tensor, out: Tensor | None) -> Tensor:
    """:math:`g - g y^2` (by one fused multiply-add), for a gradient of another dtype than the
    output (promoted), and for other dtypes and devices. A narrower output is promoted first:
    squared in its own dtype, :math:`y^2` of a bfloat16 output kept 8 bits (2% off in a
    float32 gradient)."""
    wide = torch.promote_types(output.dtype, grad_output.dtype)
    if output.dtype != wide:
        output = output.to(wide)
    squared = output * output
    if squared.dtype is not grad_output.dtype:  # a gradient of another dtype: promote
        return torch.addcmul(grad_output, grad_output, squared, value=-1, out=out)
    # Written over the y^2 temporary (one allocation, not two), or into out.
    target = squared if out is None else out
    try:
        return torch.addcmul(grad_output, grad_output, squared, value=-1, out=target)
    except RuntimeError:  # out= refused for values from an autograd graph: read them plain
        grad_output, squared = grad_output.detach(), squared.detach()
        target = squared if out is None else out
        return torch.addcmul(grad_output, grad_output, squared, value=-1, out=target)
