"""Leaky rectified linear unit."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minidl.nn.activation import Activation

__all__ = ["LeakyReLU"]


class LeakyReLU(Activation):
    r"""Leaky ReLU :math:`y = x` for :math:`x > 0`, :math:`y = a x` otherwise.

    The forward pass caches the local slope :math:`s = [x > 0] + a [x \le 0]`, so that
    :math:`y = s x` and backward is one product :math:`\partial L/\partial x = g\,s`.

    Args:
        negative_slope: the slope :math:`a` for negative inputs (default 0.01), finite and >= 0.

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> LeakyReLU(0.1)(torch.tensor([-1.0, 2.0]))
        tensor([-0.1000,  2.0000])
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        if (
            isinstance(negative_slope, bool)
            or not isinstance(negative_slope, int | float)
            or not math.isfinite(negative_slope)
            or negative_slope < 0
        ):
            raise ValueError(
                f"LeakyReLU: negative_slope must be a finite number >= 0, got {negative_slope!r}"
            )
        self.negative_slope = float(negative_slope)

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        slope = torch.full_like(input, self.negative_slope).masked_fill_(input > 0, 1.0)
        return input * slope, slope

    def _backward(self, grad_output: Tensor, slope: Tensor) -> Tensor:
        return grad_output * slope

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"
