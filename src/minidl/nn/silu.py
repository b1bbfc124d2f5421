"""Sigmoid linear unit (swish)."""

from __future__ import annotations

import torch
from torch import Tensor

from minidl._scalar import operand
from minidl._setting import Setting
from minidl.nn._cached_derivative import CachedDerivative
from minidl.nn._checks import check_in_place_setting, check_not_in_place

__all__ = ["SiLU"]


class SiLU(CachedDerivative):
    r"""Sigmoid linear unit :math:`y = x\,\sigma(x) = x / (1 + e^{-x})` (also called swish).

    .. math::
        \frac{\partial y}{\partial x} = \sigma(x)\,(1 + x\,(1 - \sigma(x)))
        = \sigma(x) + y\,(1 - \sigma(x)).

    Backward is one product :math:`\partial L/\partial x = g\,y'`: the forward pass caches the
    derivative :math:`y'` (as :class:`~minidl.nn.ELU` does), the second form above, from
    :math:`\sigma = 1 / (1 + e^{-x})`, the reciprocal of the output's denominator, in 4
    element-wise operations more. Each term is finite for every input. Its absolute error is
    within :math:`\max(1, 3|x|/4)` epsilons of the dtype (:math:`1 - \sigma`, the small
    difference of a rounded :math:`\sigma` from 1, times :math:`y`), at most about 18 in float64
    and 8 in float32 (:math:`1 - \sigma` is exactly 0 from :math:`x = 36.7`, 16.6), as PyTorch's
    autograd's (measured against 40-digit values).

    The output is computed as PyTorch's CPU kernel computes ``silu``,
    :math:`x / (1 + e^{-x})`, operation by operation, so it is the same bits wherever
    ``torch.exp`` rounds as the kernel's own ``exp`` does: most elements, not all (the kernel
    computes its vectorised body with another implementation of it; measured on an AVX2 CPU,
    3% to 4% of the elements of a long tensor differ in their last bit). Unlike PyTorch's, an
    element's bits do not depend on its place in the tensor (its last elements are computed
    with scalar code).

    :math:`e^{-x}` overflows to :math:`\infty` below :math:`x \approx -88.7` (float32) or
    :math:`-709.8` (float64), where the output is :math:`-0`; :math:`x` is clamped at
    :math:`-1000` first (the same bits for every finite input), so that :math:`x = -\infty`
    gives :math:`-0` and a derivative of 0, where PyTorch's output and derivative are NaN. At
    :math:`+\infty` the output is :math:`\infty` and the derivative 1 (PyTorch's is NaN):
    the output in the derivative is clamped at 1000, beyond which :math:`1 - \sigma` is exactly
    0. A NaN input gives NaN. A float16 or bfloat16 input is computed in float32 and rounded
    once, as PyTorch does; the derivative is kept in float32, so that backward rounds once too.

    Args:
        inplace: ``False`` (default), what it does: PyTorch's argument; ``True`` is refused.

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> SiLU()(torch.tensor([-1000.0, 0.0, 1.0]))
        tensor([-0.0000,  0.0000,  0.7311])
    """

    _in_place = True  # (the input is read once, clamped, before the output is written)
    #: ``False``, as PyTorch's ``inplace`` argument: setting ``True`` raises as the constructor
    #: does (the module never changes its input).
    inplace = Setting(check_in_place_setting, ignored_when_plain=True)
    _inplace = False

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        check_not_in_place("SiLU", inplace)

    def _output_and_derivative(self, input: Tensor, out: Tensor | None) -> tuple[Tensor, Tensor]:
        low = input.clamp_min(-_BOUND)  # (-inf: -0, not -inf / inf)
        denominator = torch.neg(low).exp_().add_(operand(1.0, low))
        output = torch.div(low, denominator, out=out)
        sigmoid = denominator.reciprocal_()
        # sigma + y (1 - sigma), written over sigma; y clamped (+inf: 0, not inf * 0).
        rest = torch.rsub(sigmoid, operand(1.0, sigmoid))
        return output, sigmoid.addcmul_(rest, output.clamp_max(_BOUND))


#: Where e^{-x} has overflowed in float32 and float64 (the output is -0 from there on), and
#: where 1 - sigma(x) is exactly 0 (from x = 36.7 in float64, 16.6 in float32).
_BOUND = 1000.0
