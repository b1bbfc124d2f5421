"""Hyperbolic tangent activation."""

from __future__ import annotations

import torch
from torch import Tensor

from minidl._scalar import operand
from minidl.nn.activation import Activation

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

    def _forward(self, input: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        output = input.tanh() if out is None else torch.tanh(input, out=out)
        return output, output

    def _backward(self, grad_output: Tensor, output: Tensor, out: Tensor | None = None) -> Tensor:
        if grad_output.dtype is output.dtype and output.dtype in _NARROW:
            # In float32, rounded once, as PyTorch's kernel computes a 16-bit derivative.
            wide = self._backward(grad_output.float(), output.float())
            return wide.to(output.dtype) if out is None else out.copy_(wide)
        one = operand(1.0, output)  # (a cached float32 or float64 CPU tensor, else the number)
        if grad_output.dtype is not output.dtype or not isinstance(one, Tensor):
            return _fallback(grad_output, output, out)
        # 1 - y^2 as one fused multiply-add, then times g into the same tensor (one allocation).
        try:
            derivative = torch.addcmul(one, output, output, value=-1, out=out)
            return torch.mul(derivative, grad_output, out=derivative)
        except RuntimeError:  # out= refused for values from an autograd graph: read them plain
            output, grad_output = output.detach(), grad_output.detach()
            derivative = torch.addcmul(one, output, output, value=-1, out=out)
            return torch.mul(derivative, grad_output, out=derivative)


_NARROW = (torch.float16, torch.bfloat16)


def _fallback(grad_output: Tensor, output: Tensor, out: Tensor | None) -> Tensor:
    """:math:`g - g y^2`, for a gradient of another dtype than the output (promoted) and on
    devices where 1 stays a Python number (:func:`~minidl._scalar.operand`)."""
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
