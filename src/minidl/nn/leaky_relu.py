"""Leaky rectified linear unit."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from minidl._scalar import operand
from minidl._setting import Setting
from minidl._validate import shown, shown_typed
from minidl.nn._cached_derivative import CachedDerivative
from minidl.nn._checks import (
    FLOAT16_LARGEST,
    check_in_dtype_range,
    check_in_place_setting,
    check_not_in_place,
)

__all__ = ["LeakyReLU"]


def _check_negative_slope(where: str, negative_slope: object) -> float:
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real):
        raise TypeError(
            f"{where}: negative_slope must be a finite number (a float or an int), got "
            f"{shown_typed(negative_slope)}"
        )
    try:
        number = float(negative_slope)
    except OverflowError:  # (an int beyond float's range)
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(
            f"{where}: negative_slope must be a finite number, got {shown(negative_slope)}"
        )
    return number


class LeakyReLU(CachedDerivative):
    r"""Leaky ReLU :math:`y = x` for :math:`x > 0`, :math:`y = a x` otherwise.

    The forward pass caches the local slope :math:`s = p + a (1 - p)` with the indicator
    :math:`p = [x > 0] = \operatorname{sign}(\max(x, 0))`, so that :math:`y = s x` and backward
    is one product :math:`\partial L/\partial x = g\,s` (at :math:`x = 0` the slope :math:`a`,
    as in PyTorch). The slope is exactly 1 or :math:`a`
    (one of the two terms is exactly 0), and it is built from float operations only: on a CPU,
    boolean masks (``masked_fill``, ``where``) cost several times more per element. A float16
    or bfloat16 input is computed in float32 and rounded once, with the slope kept in float32,
    as PyTorch's kernels compute it (a 16-bit slope :math:`a` would round :math:`a x` twice:
    about a third of the negative outputs and their gradients were one unit in the last place
    away from PyTorch's).

    Args:
        negative_slope: the slope :math:`a` for negative inputs (default 0.01), finite; a
            negative one too, as in PyTorch (``LeakyReLU(-1)`` is :math:`|x|`).
        inplace: ``False`` (default), what it does: PyTorch's argument; ``True`` is refused.

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> LeakyReLU(0.1)(torch.tensor([-1.0, 2.0]))
        tensor([-0.1000,  2.0000])
    """

    #: The slope for negative inputs; checked when set, as by the constructor.
    negative_slope = Setting(_check_negative_slope)
    _negative_slope: float

    _in_place = True  # (the slope is computed from the input before the product is written)
    #: ``False``, as PyTorch's ``inplace`` argument: setting ``True`` raises as the constructor
    #: does (the module never changes its input).
    inplace = Setting(check_in_place_setting, ignored_when_plain=True)
    _inplace = False

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        check_not_in_place("LeakyReLU", inplace)
        self.negative_slope = negative_slope

    def _output_and_derivative(self, input: Tensor, out: Tensor | None) -> tuple[Tensor, Tensor]:
        positive = input.clamp_min(0).sign_()
        negative = torch.rsub(positive, operand(1.0, positive))
        if abs(self._negative_slope) > FLOAT16_LARGEST:
            check_in_dtype_range(
                "LeakyReLU", "negative_slope", self._negative_slope, negative.dtype
            )
        slope = torch.add(positive, negative, alpha=self._negative_slope)
        return torch.mul(input, slope, out=out), slope

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"
