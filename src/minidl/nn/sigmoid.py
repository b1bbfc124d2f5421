"""Logistic sigmoid activation."""

from __future__ import annotations

import torch
from torch import Tensor

from minidl.nn.activation import Activation

__all__ = ["Sigmoid"]


class Sigmoid(Activation):
    r"""Logistic sigmoid :math:`y = \sigma(x) = 1 / (1 + e^{-x})`.

    Backward reuses the cached output: :math:`\partial L/\partial x = g\,y\,(1 - y)`, computed as
    :math:`g y - g y \cdot y`. ``torch.sigmoid`` is stable (no overflow of :math:`e^{-x}` at
    :math:`x = -1000`).

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> Sigmoid()(torch.tensor([0.0]))
        tensor([0.5000])
    """

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        output = input.sigmoid()
        return output, output

    def _backward(self, grad_output: Tensor, output: Tensor) -> Tensor:
        # g y - g y^2, written over the g y temporary: one allocation, not two.
        grad_times_y = grad_output * output
        return torch.addcmul(grad_times_y, grad_times_y, output, value=-1, out=grad_times_y)
