"""Gaussian error linear unit."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minidl._scalar import operand, tensor_operand
from minidl._setting import Setting
from minidl._validate import shown, shown_typed
from minidl.nn._cached_derivative import CachedDerivative

__all__ = ["GELU"]

#: The values of ``approximate``: the exact GELU and its tanh approximation, as in PyTorch.
APPROXIMATIONS = ("none", "tanh")


def _check_approximate(where: str, approximate: object) -> str:
    if not isinstance(approximate, str):
        raise TypeError(
            f"{where}: approximate must be a string, 'none' or 'tanh', got "
            f"{shown_typed(approximate)}"
        )
    # Its characters as a plain str, compared and kept as such: a subclass of str may change
    # what == or str() give (str() of one that overrides __str__ is not its characters).
    plain = str.__str__(approximate)
    if plain not in APPROXIMATIONS:
        raise ValueError(f"{where}: approximate must be 'none' or 'tanh', got {shown(approximate)}")
    return plain


class GELU(CachedDerivative):
    r"""Gaussian error linear unit :math:`y = x\,\Phi(x)`, :math:`\Phi` the standard normal
    distribution function.

    With ``approximate="none"`` (the default), :math:`\Phi(x) = \tfrac12\,(1 + \operatorname{erf}(x/\sqrt2))`
    and

    .. math::
        \frac{\partial y}{\partial x} = \Phi(x) + x\,\varphi(x), \qquad
        \varphi(x) = \frac{e^{-x^2/2}}{\sqrt{2\pi}}.

    With ``approximate="tanh"``, :math:`\Phi` is replaced by
    :math:`c = \tfrac12\,(1 + \tanh u)` with :math:`u = \beta\,(x + \kappa x^3)`,
    :math:`\beta = \sqrt{2/\pi}`, :math:`\kappa = 0.044715`, and, from
    :math:`1 - \tanh^2 u = 4\,c\,(1 - c)`,

    .. math::
        \frac{\partial y}{\partial x} = c + 2\beta\,x\,c\,(1 - c)\,(1 + 3\kappa x^2).

    Backward is one product :math:`\partial L/\partial x = g\,y'`: the forward pass caches the
    derivative :math:`y'` (as :class:`~minidl.nn.ELU` does), computed from the :math:`\Phi`
    (or :math:`c`) of the output in 3 (tanh: 6) element-wise operations more, and a clamp of
    :math:`x` from above (see below) that keeps them finite at :math:`+\infty`. Its absolute error
    is within an epsilon of the dtype for the exact GELU, and within about 12 epsilons (float32:
    5) for the tanh approximation, whose :math:`2\,(1 - c)` is computed as :math:`1 - \tanh u`
    from :math:`\tanh u` itself (exact where :math:`\tanh u \ge 1/2`), not as the small
    difference of a rounded :math:`c` from 1, whose rounding the factor
    :math:`2\beta\,x\,(1 + 3\kappa x^2)` (85 at :math:`x = 7`) would multiply to 33 epsilons
    for :math:`x` between 4 and 9 (measured against 40-digit values in float32 and float64;
    PyTorch's autograd is within 22 epsilons there, float32: 9).

    The output is computed as PyTorch's CPU kernels compute ``gelu``, operation by operation
    (:math:`(x/2)(1 + \operatorname{erf}(x/\sqrt2))`, and
    :math:`(x/2)(1 + \tanh(\beta(x + \kappa\,x^3)))` with :math:`x^3 = (x x) x`), so it is the
    same bits wherever ``torch.erf`` and ``torch.tanh`` round as the kernel's own ``erf`` and
    ``tanh`` do: most elements, not all (the kernel computes its vectorised body with other
    implementations of them than ``torch.erf`` and ``torch.tanh``; measured on an AVX2 CPU,
    0.2% to 1% of the elements of a long tensor differ, by an ulp of :math:`1 + \operatorname{erf}`
    or :math:`1 + \tanh` times :math:`|x|/2`). In float32 the exact GELU's kernel has an
    :math:`\operatorname{erf}` of its own (a polynomial, or oneDNN's): there about half the
    elements differ, by as much. Unlike PyTorch's, an element's bits do not depend on its place
    in the tensor (its last elements are computed with scalar code). Like PyTorch's,
    :math:`1 + \operatorname{erf}` loses relative precision for very negative :math:`x`, where
    :math:`|y|` is below :math:`10^{-7}|x|` (float32) or :math:`10^{-16}|x|` (float64).

    Beyond :math:`|x| = 40` (exact) or :math:`|x| = 10` (tanh), the output is exactly
    :math:`x` or :math:`-0` and the derivative exactly 1 or 0 in float32 and float64, so
    :math:`x` is clamped there first (the same bits for every finite input): at
    :math:`x = -\infty` the output is :math:`-0` and the derivative 0 (PyTorch's are NaN), at
    :math:`+\infty` they are :math:`\infty` and 1 (PyTorch's derivative is NaN, and so is its
    exact output in float32 tensors of more than one element on a CPU where oneDNN's AVX-512
    kernel computes it). A NaN
    input gives NaN. A float16 or bfloat16 input is computed in float32 and rounded once, as
    PyTorch does; the derivative is kept in float32, so that backward rounds once too.

    Args:
        approximate: ``"none"`` (default) for the exact GELU, ``"tanh"`` for its tanh
            approximation, as in PyTorch; checked when set, as by the constructor.

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> GELU()(torch.tensor([-1000.0, 0.0, 1.0]))
        tensor([-0.0000,  0.0000,  0.8413])
        >>> GELU(approximate="tanh")
        GELU(approximate='tanh')
    """

    _in_place = True  # (the input is read once, clamped, before the output is written)

    #: ``"none"`` or ``"tanh"``; checked when set, as by the constructor.
    approximate = Setting(_check_approximate)
    _approximate: str

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def _output_and_derivative(self, input: Tensor, out: Tensor | None) -> tuple[Tensor, Tensor]:
        if self._approximate == "tanh":
            return _tanh_gelu(input, out)
        return _erf_gelu(input, out)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


#: Where the exact GELU's Phi is exactly 0 or 1 and x phi(x) exactly 0 (e^{-x^2/2} underflows
#: from |x| = 38.6 in float64, 14.4 in float32).
_ERF_BOUND = 40.0
#: Where the tanh approximation's tanh is exactly -1 or 1 (|u| > 43, where tanh rounds to 1
#: from 19.1 in float64 and 9.1 in float32).
_TANH_BOUND = 10.0
_SQRT1_2 = math.sqrt(0.5)
#: 1 / sqrt(2 pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
#: sqrt(2 / pi), as PyTorch writes it (M_SQRT2 * M_2_SQRTPI * 0.5), and 0.044715.
_BETA = math.sqrt(2.0) * (2.0 / math.sqrt(math.pi)) * 0.5
_KAPPA = 0.044715


def _half_of_one_plus(t: Tensor) -> Tensor:
    """``(1 + t) / 2`` for ``t`` in ``[-1, 1]`` (an erf or a tanh), a new tensor, in one
    operation, ``1/2 + (1/2) t``: halving is exact there, so the sum rounded once is exactly
    half of ``1 + t`` rounded, the bits of ``t.add_(1).mul_(0.5)`` (whether the sum is fused
    with the product or not: ``t / 2`` is exact), one tensor operation less (1.8 against 2.2 us
    on a ``(100, 25)`` tensor on one thread; 1.5 us written over ``t`` with ``out=``, which
    autograd refuses for a ``t`` made from an input of autograd's)."""
    return torch.add(tensor_operand(0.5, t), t, alpha=0.5)


def _erf_gelu(input: Tensor, out: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(output, derivative)`` of the exact GELU."""
    low = input.clamp_min(-_ERF_BOUND)  # (-inf: -0, not -inf * 0)
    bounded = low.clamp_max(_ERF_BOUND)  # (+inf: x phi(x) = 0, not inf * 0)
    scaled = bounded * operand(_SQRT1_2, bounded)
    erf = torch.erf(scaled)
    # Phi = (1 + erf) / 2, exactly half of PyTorch's 1 + erf; x Phi is then exactly its
    # (x / 2)(1 + erf) (halving is exact).
    cdf = _half_of_one_plus(erf)
    output = torch.mul(low, cdf, out=out)
    # e^{-x^2/2} (its exponent in one operation; from x, not from x / sqrt 2, whose rounding
    # the square would carry into the exponent), then Phi + x e^{-x^2/2} / sqrt(2 pi), written
    # over Phi.
    density = torch.addcmul(tensor_operand(0.0, bounded), bounded, bounded, value=-0.5).exp_()
    return output, cdf.addcmul_(bounded, density, value=_INV_SQRT_2PI)


def _tanh_gelu(input: Tensor, out: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(output, derivative)`` of the tanh approximation."""
    low = input.clamp_min(-_TANH_BOUND)
    bounded = low.clamp_max(_TANH_BOUND)
    square = bounded * bounded
    # beta (x + kappa x^3), in PyTorch's order.
    inner = (square * bounded).mul_(operand(_KAPPA, square)).add_(bounded)
    inner.mul_(operand(_BETA, inner))
    tanh = inner.tanh_()
    # 2 (1 - c) = 1 - tanh u, from tanh u itself (exact where tanh u >= 1/2): 1 - c, the
    # difference of a rounded c from 1, would carry c's rounding, times 2 beta x (1 + 3 kappa x^2).
    rest = torch.rsub(tanh, operand(1.0, tanh))
    # c = (1 + tanh u) / 2, exactly half of PyTorch's 1 + tanh u (as in _erf_gelu).
    cdf = _half_of_one_plus(tanh)
    output = torch.mul(low, cdf, out=out)
    # c + beta x c (1 - tanh u) (1 + 3 kappa x^2), written over c.
    slope = square.mul_(operand(3.0 * _KAPPA, square)).add_(operand(1.0, square))
    rest.mul_(cdf).mul_(slope)
    return output, cdf.addcmul_(bounded, rest, value=_BETA)
