"""Exponential linear unit."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from minidl._scalar import operand, tensor_operand
from minidl._setting import Setting
from minidl._validate import shown, shown_typed
from minidl.nn._cached_derivative import CachedDerivative
from minidl.nn._checks import (
    FLOAT16_LARGEST,
    check_in_dtype_range,
    check_in_place_setting,
    check_not_in_place,
)

__all__ = ["ELU"]


def _check_alpha(where: str, alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(
            f"{where}: alpha must be a finite number (a float or an int), got {shown_typed(alpha)}"
        )
    try:
        number = float(alpha)
    except OverflowError:  # (an int beyond float's range)
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{where}: alpha must be a finite number, got {shown(alpha)}")
    return number


class ELU(CachedDerivative):
    r"""Exponential linear unit :math:`y = x` for :math:`x > 0`, :math:`y = \alpha(e^x - 1)` otherwise.

    Backward: :math:`\partial L/\partial x = g` for :math:`x > 0` and
    :math:`g\,\alpha e^x` otherwise (the derivative of :math:`\alpha(e^x - 1)`, equal to
    :math:`y + \alpha`; at :math:`x = 0`, where the two sides differ unless :math:`\alpha = 1`,
    the left one, :math:`\alpha`, as in PyTorch). The forward pass caches this derivative,
    computed from :math:`e^x`, not as :math:`y + \alpha`, which loses all its digits for very
    negative :math:`x`. ``expm1`` keeps small negative inputs accurate, and it only sees
    :math:`\min(x, 0)`, so :math:`x = +1000` does not overflow. At a NaN input the gradient
    is NaN (the cached derivative is), where PyTorch's is :math:`g` (times SELU's scale).

    Args:
        alpha: the saturation value :math:`\alpha` for negative inputs (default 1.0), finite;
            0 or negative too, as in PyTorch.
        inplace: ``False`` (default), what it does: PyTorch's argument; ``True`` is refused.

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> ELU()(torch.tensor([-1000.0, 2.0]))
        tensor([-1.,  2.])
    """

    _in_place = True  # (the input is read, clamped, before the output is written; SELU too)

    #: The saturation value for negative inputs; checked when set, as by the constructor.
    alpha = Setting(_check_alpha)
    _alpha: float
    #: ``False``, as PyTorch's ``inplace`` argument: setting ``True`` raises as the constructor
    #: does (the module never changes its input).
    inplace = Setting(check_in_place_setting, ignored_when_plain=True)
    _inplace = False

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        check_not_in_place(type(self).__name__, inplace)
        self.alpha = alpha
        self._scale: float = 1.0

    def _output_and_derivative(self, input: Tensor, out: Tensor | None) -> tuple[Tensor, Tensor]:
        # With p = [x > 0] = sign(max(x, 0)) and n = scale * alpha * expm1(min(x, 0)):
        #   y = n + scale * max(x, 0)                      (one of the two terms is exactly 0)
        #   dy/dx = lerp(scale * alpha * e^min(x, 0), scale, p)         (cached for backward)
        # where lerp(a, b, p) = a + p (b - a) is exactly a at p = 0 and exactly b at p = 1
        # (torch computes b - (b - a)(1 - p) for p >= 1/2): one op for
        # scale * alpha * e^min(x, 0) * (1 - p) + scale * p.
        # Float operations only: boolean masks (where, masked_fill) cost several times more
        # per element on a CPU. expm1 only sees min(x, 0), so nothing overflows.
        positive = input.clamp_min(0)
        clamped = input.clamp_max(0)
        # scale * alpha * e^x, from exp itself: as n + scale * alpha it cancels for very
        # negative x (all of it in float32 from x = -17 on, where e^x is still 4e-8).
        exponential = clamped.exp()
        negative = clamped.expm1_()
        if self._scale == 1.0 and self._alpha == 1.0:
            # The default ELU: the products by scale * alpha = 1 change nothing, and
            # e^min(x, 0) is already the derivative, exactly 1 = e^0 for x > 0: the same bits
            # in four operations less.
            return torch.add(negative, positive, out=out), exponential
        if abs(self._scale * self._alpha) > FLOAT16_LARGEST:
            # (SELU's scale * alpha is 1.76: ELU's alpha alone can be too large)
            check_in_dtype_range(
                type(self).__name__, "alpha", self._alpha * self._scale, negative.dtype
            )
        scaled_alpha = operand(self._scale * self._alpha, negative)
        negative.mul_(scaled_alpha)
        output = torch.add(negative, positive, alpha=self._scale, out=out)
        indicator = positive.sign_()
        derivative = exponential.mul_(scaled_alpha)
        return output, derivative.lerp_(tensor_operand(self._scale, derivative), indicator)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
