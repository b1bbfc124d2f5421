"""Hyperbolic tangent activation."""

from __future__ import annotations

import torch
from torch import Tensor

from minidl.nn.activation import Activation

__all__ = ["Tanh"]


class Tanh(Activation):
    r"""Hyperbolic tangent :math:`y = \tanh(x)`.

    Backward reuses the cached output: :math:`\partial L/\partial x = g\,(1 - y^2)`, computed
    as :math:`g - g y^2`. ``torch.tanh`` saturates to :math:`\pm 1` instead of overflowing, so
    both passes are finite at any finite input.

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
        squared = output * output
        if squared.dtype is not grad_output.dtype:  # a gradient of another dtype: promote
            return torch.addcmul(grad_output, grad_output, squared, value=-1, out=out)
        # g - g y^2, written over the y^2 temporary (one allocation, not two), or into out.
        target = squared if out is None else out
        try:
            return torch.addcmul(grad_output, grad_output, squared, value=-1, out=target)
        except RuntimeError:  # out= refused for values from an autograd graph: read them plain
            grad_output, squared = grad_output.detach(), squared.detach()
            target = squared if out is None else out
            return torch.addcmul(grad_output, grad_output, squared, value=-1, out=target)
