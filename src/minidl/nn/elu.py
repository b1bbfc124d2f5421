"""Exponential linear unit."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minidl.nn.activation import Activation

__all__ = ["ELU"]


class ELU(Activation):
    r"""Exponential linear unit :math:`y = x` for :math:`x > 0`, :math:`y = \alpha(e^x - 1)` otherwise.

    Backward: :math:`\partial L/\partial x = g` for :math:`x > 0` and
    :math:`g\,(y + \alpha)` otherwise (since :math:`\alpha e^x = y + \alpha`), so only the output
    and the sign of the input are cached. ``expm1`` keeps small negative inputs accurate; at
    :math:`x = +1000` its overflow is discarded by the selection, so the output stays finite.

    Args:
        alpha: the saturation value :math:`\alpha` for negative inputs (default 1.0), finite, > 0.

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> ELU()(torch.tensor([-1000.0, 2.0]))
        tensor([-1.,  2.])
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, int | float)
            or not math.isfinite(alpha)
            or alpha <= 0
        ):
            raise ValueError(
                f"{type(self).__name__}: alpha must be a finite number > 0, got {alpha!r}"
            )
        self.alpha = float(alpha)
        self._scale = 1.0

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        # Derivative with respect to the input, cached for backward:
        # scale for x > 0, scale * alpha * e^x = output + scale * alpha otherwise.
        scaled_alpha = self._scale * self.alpha
        negative = torch.expm1(input).mul_(scaled_alpha)
        output = torch.where(input > 0, input * self._scale, negative)
        derivative = torch.where(input > 0, self._scale, negative.add_(scaled_alpha))
        return output, derivative

    def _backward(self, grad_output: Tensor, derivative: Tensor) -> Tensor:
        return grad_output * derivative

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
