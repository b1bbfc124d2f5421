"""Welch's t-test of two means from their sample means, standard deviations and sizes.

The report compares each row's mean test error over its rounds with the paper's mean over the
paper's rounds; both sides give a mean, a sample standard deviation and a count, and their
variances need not be equal, which is Welch's case:

.. math::
    t = \\frac{\\bar x_1 - \\bar x_2}{SE}, \\qquad
    SE = \\sqrt{\\frac{s_1^2}{n_1} + \\frac{s_2^2}{n_2}}, \\qquad
    \\nu = \\frac{SE^4}{\\frac{(s_1^2/n_1)^2}{n_1 - 1} + \\frac{(s_2^2/n_2)^2}{n_2 - 1}}

and the two-sided p-value is :math:`P(|T_\\nu| \\ge |t|) = I_{\\nu / (\\nu + t^2)}(\\nu/2, 1/2)`,
with :math:`I_x(a, b)` the regularized incomplete beta function, computed here from its
continued fraction (the standard library has no Student distribution).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from minidl._validate import check_int, check_real, shown

__all__ = ["Welch", "critical_t", "regularized_beta", "welch"]

#: Below this, a term of the continued fraction is replaced by it (Lentz's method).
_TINY = 1e-300


@dataclass(frozen=True)
class Welch:
    """Welch's test of ``mean_1 - mean_2``."""

    difference: float
    """``mean_1 - mean_2``."""
    standard_error: float
    """Standard error of the difference."""
    degrees_of_freedom: float
    """Welch-Satterthwaite degrees of freedom (``inf`` when both s.d. are 0)."""
    p_value: float
    """Two-sided p-value of ``difference`` under equal means (1 for no difference, 0 for a
    difference with no spread at all)."""


#: The most samples a side may have: the p-value's beta function loses digits as its arguments
#: grow (the difference of log-gammas), within about 1e-9 up to a million (1e-4 at 3e10, and no
#: probability at all from about 1e14).
_MOST_SAMPLES = 10**6

#: The largest ``a`` and ``b`` of :func:`regularized_beta`, for the same reason.
_LARGEST_SHAPE = 1e6


def welch(mean_1: float, sd_1: float, n_1: int, mean_2: float, sd_2: float, n_2: int) -> Welch:
    """Welch's t-test of two means from their summaries (each ``n >= 2``, each s.d. ``>= 0``).

    The s.d. are first divided by the power of two just above the larger one, so that their
    squares and the fourth powers in the degrees of freedom neither underflow nor overflow,
    whatever the size of the s.d.: the test depends only on their ratio and on the difference
    in units of the standard error, which is the difference, divided by the same power, over
    the scaled standard error (a standard error below the smallest float, given as 0, still has
    its t). A power of two divides exactly and the powers are products, rounded once each, so
    summaries scaled by a power of two give the same bits.

    Raises:
        TypeError: a count of samples that is no integer (a bool is none).
        ValueError: a side of fewer than 2 samples (or more than 10**6), a mean that is not a
            finite number, or an s.d. that is not a finite number ``>= 0``.
    """
    for name, n in (("n_1", n_1), ("n_2", n_2)):
        # (an integer count: a fraction, NaN or a string gave a p-value, NaN or another error)
        check_int("welch", name, n, low=2)
        if n > _MOST_SAMPLES:  # (see _MOST_SAMPLES)
            raise ValueError(
                f"welch: {name} must be an integer in [2, 10**6] (the p-value is computed to "
                f"about 1e-9 up to there), got {shown(n)}"
            )
    n_1, n_2 = int(n_1), int(n_2)
    mean_1, mean_2 = check_real("welch", "mean_1", mean_1), check_real("welch", "mean_2", mean_2)
    sd_1, sd_2 = (
        check_real("welch", "sd_1", sd_1, low=0.0),
        check_real("welch", "sd_2", sd_2, low=0.0),
    )
    difference = mean_1 - mean_2
    if sd_1 == 0.0 and sd_2 == 0.0:
        return Welch(difference, 0.0, math.inf, 1.0 if difference == 0 else 0.0)
    exponent = math.frexp(max(sd_1, sd_2))[1]
    scaled_1, scaled_2 = math.ldexp(sd_1, -exponent), math.ldexp(sd_2, -exponent)
    # The squared standard error and its two shares, divided by 4 ** exponent.
    share_1, share_2 = scaled_1 * scaled_1 / n_1, scaled_2 * scaled_2 / n_2
    variance = share_1 + share_2
    degrees = variance * variance / (share_1 * share_1 / (n_1 - 1) + share_2 * share_2 / (n_2 - 1))
    standard_error = math.ldexp(math.sqrt(variance), exponent)
    # (t from the difference and the standard error scaled alike: the standard error itself
    # underflows to 0, or to a subnormal of few digits, below about 1e-308; the scaled
    # difference is at most t, so one past the largest float is an infinite t, of p-value 0)
    try:
        t = math.ldexp(difference, -exponent) / math.sqrt(variance)
    except OverflowError:
        t = math.inf
    p_value = _regularized_beta(degrees / (degrees + t * t), degrees / 2, 0.5)
    return Welch(difference, standard_error, degrees, p_value)


#: A t past which :func:`critical_t` computes nu / (nu + t^2) from sqrt(nu) / t (t^2 would
#: overflow past 2^512); below it, from t^2, as the p-values of :func:`welch` are.
_LARGE_T = 2.0**500


def critical_t(degrees_of_freedom: float, level: float = 0.05) -> float:
    """The two-sided critical value of Student's t: the ``t`` for which
    :math:`P(|T_\\nu| \\ge t) = I_{\\nu / (\\nu + t^2)}(\\nu/2, 1/2)` equals ``level``, with
    :math:`\\nu` = ``degrees_of_freedom`` (a finite number ``> 0``) and ``0 < level < 1``.

    Found by bisection on the p-value, which falls as ``t`` grows (above a level of 0.5, on
    its complement :math:`I_{t^2 / (\\nu + t^2)}(1/2, \\nu/2)` against ``1 - level``, which
    keep their digits for a small ``t``), to the precision of
    :func:`regularized_beta` (``critical_t(4)`` is 2.776..., ``critical_t(8)`` 2.306..., as in
    the tables).

    Raises:
        TypeError: degrees of freedom or a level that is no real number.
        ValueError: degrees of freedom out of ``(0, 2e6]``, or a level out of
            ``(0, 1)``; or a critical value past :math:`\\sqrt{\\nu / m}`, with :math:`m` the
            smallest normal float (about 1e153 for one degree), where
            :math:`\\nu / (\\nu + t^2)` is no longer a normal float and the p-value loses its
            digits (a fraction of a degree and a small level, or one degree and a level below
            1e-153).
    """
    degrees = check_real(
        "critical_t",
        "degrees_of_freedom",
        degrees_of_freedom,
        low=0.0,
        high=2 * _LARGEST_SHAPE,  # (its half is regularized_beta's a)
        low_open=True,
    )
    level = check_real(
        "critical_t", "level", level, low=0.0, high=1.0, low_open=True, high_open=True
    )

    root = math.sqrt(degrees)

    def above(t: float) -> bool:
        """Whether the p-value of ``t`` is above ``level``."""
        if t < _LARGE_T:
            square = t * t
            share = square / (degrees + square)  # (t^2 / (nu + t^2), the complement's x)
            x = degrees / (degrees + square)
        else:  # (from r = sqrt(nu) / t, as t^2 would overflow past 2^512)
            ratio = root / t
            squared = ratio * ratio
            share = 1.0 / (1.0 + squared)
            x = squared / (1.0 + squared)
        if level <= 0.5 or share >= 0.5:
            return _regularized_beta(x, degrees / 2, 0.5) > level
        # (a level near 1, and a t small beside the degrees: the p-value's complement,
        # P(|T| < t) = I_{t^2 / (nu + t^2)}(1/2, nu/2), against 1 - level: nu / (nu + t^2)
        # rounded to 1 for a small t, and the p-value with it, critical_t(8, 0.99999999) was
        # 2.98e-8, not 1.293e-8; past a share of 1/2 the p-value's own x keeps its digits,
        # where the share rounds to 1 for a t large beside the degrees, critical_t(0.001,
        # 0.9) 4194304 and not 9.05e43)
        return _regularized_beta(share, 0.5, degrees / 2) < 1.0 - level

    # (past it nu / t^2 is subnormal: its digits, and the p-value's, go; critical_t(0.005)
    # was 1.3e154 where it is 5.7e258, a t^2 overflowed)
    limit = math.sqrt(degrees / sys.float_info.min)
    low, high = 0.0, 1.0
    while above(high):
        low, high = high, 2.0 * high
        if high >= limit:
            if above(limit):
                raise ValueError(
                    f"critical_t: the critical value of {shown(degrees)} degrees of freedom at "
                    f"level {shown(level)} lies past {limit:.3g}, where nu / (nu + t^2) is no "
                    "normal float and the p-value loses its digits"
                )
            high = limit
    while True:
        middle = (low + high) / 2
        if middle in (low, high):
            return high
        if above(middle):
            low = middle
        else:
            high = middle


def regularized_beta(x: float, a: float, b: float) -> float:
    """:math:`I_x(a, b)` for ``0 <= x <= 1`` and ``0 < a, b <= 10^6``: to about 1e-14 for ``a``
    and ``b`` up to about 100, about 1e-9 at a million (the difference of log-gammas in its
    front factor loses digits as they grow).

    Raises:
        TypeError: an argument that is no real number.
        ValueError: ``x`` out of ``[0, 1]``, or ``a`` or ``b`` out of ``(0, 1e6]``.
    """
    x = check_real("regularized_beta", "x", x, low=0.0, high=1.0)
    a = check_real("regularized_beta", "a", a, low=0.0, high=_LARGEST_SHAPE, low_open=True)
    b = check_real("regularized_beta", "b", b, low=0.0, high=_LARGEST_SHAPE, low_open=True)
    return _regularized_beta(x, a, b)


def _regularized_beta(x: float, a: float, b: float) -> float:
    """:func:`regularized_beta` of checked arguments."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        a * math.log(x) + b * math.log1p(-x) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    )
    # The continued fraction converges fast for x below the mean of Beta(a, b); above it, the
    # symmetry I_x(a, b) = 1 - I_{1-x}(b, a) is used.
    if x < (a + 1) / (a + b + 2):
        return front * _continued_fraction(x, a, b) / a
    return 1.0 - front * _continued_fraction(1.0 - x, b, a) / b


def _continued_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of :math:`I_x(a, b)`, by the modified Lentz method."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, 1000):
        # The even step, then the odd step, of the fraction's coefficients.
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            result *= c * d
        if abs(c * d - 1.0) < 1e-16:
            break
    return result
