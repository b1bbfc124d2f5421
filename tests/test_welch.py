"""Welch's t-test of the report against Student's distribution: table values, closed forms and,
where it is installed, scipy."""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest

from minidl.experiments.welch import critical_t, regularized_beta, welch


@pytest.mark.parametrize(
    ("degrees", "critical"),
    # Two-sided 5% critical values of Student's t (any statistics table).
    [(2, 4.303), (4, 2.776), (8, 2.306), (30, 2.042), (1000, 1.962)],
)
def test_the_p_value_at_a_tables_critical_value_is_five_percent(
    degrees: int, critical: float
) -> None:
    # Equal s.d. and sizes give n_1 + n_2 - 2 degrees of freedom; SE = sd * sqrt(2 / n).
    n = degrees // 2 + 1
    standard_error = math.sqrt(2 / n)
    test = welch(critical * standard_error, 1.0, n, 0.0, 1.0, n)
    assert test.degrees_of_freedom == pytest.approx(degrees, rel=1e-12)
    assert test.p_value == pytest.approx(0.05, abs=5e-5)


def test_closed_forms_of_the_incomplete_beta() -> None:
    rng = random.Random(0)
    for _ in range(200):
        x, a = rng.random(), rng.uniform(0.1, 20)
        assert regularized_beta(x, a, 1.0) == pytest.approx(x**a, rel=1e-12)
        assert regularized_beta(x, 1.0, a) == pytest.approx(1 - (1 - x) ** a, rel=1e-12)
        # I_x(1/2, 1/2) = 2 asin(sqrt(x)) / pi (the arcsine distribution).
        assert regularized_beta(x, 0.5, 0.5) == pytest.approx(
            2 * math.asin(math.sqrt(x)) / math.pi, rel=1e-12
        )
    assert regularized_beta(0.0, 2.0, 3.0) == 0.0 and regularized_beta(1.0, 2.0, 3.0) == 1.0


def test_welch_is_scipys() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(1)
    for _ in range(300):
        summaries = (
            rng.uniform(0, 50),
            rng.uniform(0.01, 10),
            rng.randint(2, 12),
            rng.uniform(0, 50),
            rng.uniform(0.01, 10),
            rng.randint(2, 12),
        )
        test = welch(*summaries)
        expected = stats.ttest_ind_from_stats(*summaries, equal_var=False)
        assert test.p_value == pytest.approx(float(expected.pvalue), rel=1e-9, abs=1e-300)
        assert test.difference / test.standard_error == pytest.approx(float(expected.statistic))


def test_no_spread_at_all_and_too_few_samples() -> None:
    assert welch(2.0, 0.0, 5, 2.0, 0.0, 5).p_value == 1.0
    assert welch(2.0, 0.0, 5, 1.0, 0.0, 5).p_value == 0.0
    with pytest.raises(ValueError, match=r"^welch: n_1 must be an integer >= 2, got 1$"):
        welch(1.0, 0.0, 1, 1.0, 1.0, 5)


def test_summaries_scaled_by_any_factor_give_the_same_test() -> None:
    """The test depends only on the ratio of the s.d. and on the difference in standard errors:
    scaled by a power of two, the summaries give the same bits (and the standard error scaled
    by it); by a power of ten, the same to rounding. S.d. beyond about 1e-77 or 1e77 gave wrong
    degrees of freedom or failed: their squares' squares underflowed to 0 (ZeroDivisionError)
    or overflowed (OverflowError)."""
    rng = random.Random(2)
    for _ in range(50):
        mean_1, mean_2 = rng.uniform(0, 50), rng.uniform(0, 50)
        sd_1, sd_2 = rng.uniform(0.01, 10), rng.choice([0.0, rng.uniform(0.01, 10)])
        n_1, n_2 = rng.randint(2, 12), rng.randint(2, 12)
        reference = welch(mean_1, sd_1, n_1, mean_2, sd_2, n_2)
        for power in (-1000, -600, -300, -100, 100, 300, 600, 1000):
            k = math.ldexp(1.0, power)
            test = welch(k * mean_1, k * sd_1, n_1, k * mean_2, k * sd_2, n_2)
            assert test.standard_error == k * reference.standard_error
            assert test.degrees_of_freedom == reference.degrees_of_freedom
            assert test.p_value == reference.p_value
        for k in (1e-300, 1e-160, 1e-80, 1e80, 1e160, 1e300):
            test = welch(k * mean_1, k * sd_1, n_1, k * mean_2, k * sd_2, n_2)
            assert test.standard_error == pytest.approx(k * reference.standard_error, rel=1e-14)
            assert test.degrees_of_freedom == pytest.approx(reference.degrees_of_freedom, rel=1e-14)
            assert test.p_value == pytest.approx(reference.p_value, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(
    ("difference", "sd_1", "n_1", "sd_2", "n_2"),
    [(1, 500, 10**6, 0, 2), (3, 1001, 10**6, 7, 5), (1, 3, 4, 2, 3), (5, 999, 10**6, 999, 10**6)],
)
def test_a_standard_error_below_the_smallest_float_gives_the_test_of_the_summaries_scaled_up(
    difference: int, sd_1: int, n_1: int, sd_2: int, n_2: int
) -> None:
    """The summaries in units of the smallest float (2**-1074) give the test of the same
    integers, bit for bit (t, the degrees of freedom and the p-value depend on the ratios
    only), which is scipy's: t was the difference over the standard error of the s.d.'s own
    scale, which underflowed to 0 (ZeroDivisionError, as for ``welch(1e-300, 1e-322, 10**6,
    0.0, 0.0, 2)``) or to a subnormal of few digits (a t of as few)."""
    tiny = [math.ldexp(value, -1074) for value in (difference, sd_1, sd_2)]
    test = welch(tiny[0], tiny[1], n_1, 0.0, tiny[2], n_2)
    reference = welch(difference, sd_1, n_1, 0.0, sd_2, n_2)
    assert test.p_value == reference.p_value
    assert test.degrees_of_freedom == reference.degrees_of_freedom
    assert test.standard_error == math.ldexp(reference.standard_error, -1074)
    assert test.difference == tiny[0]  # (the first's standard error is 0.5 of it: 0)
    stats = pytest.importorskip("scipy.stats")
    expected = stats.ttest_ind_from_stats(difference, sd_1, n_1, 0.0, sd_2, n_2, equal_var=False)
    assert test.p_value == pytest.approx(float(expected.pvalue), rel=1e-9)


def test_a_standard_error_below_the_smallest_float_gives_a_p_value_of_its_difference() -> None:
    """A standard error of about 1e-325 (1e-322 over 1000) raised ZeroDivisionError: now a
    difference of 1e-300 is about 1e25 standard errors (p-value 0), one of 1e300 past the
    largest float of them (p-value 0), and no difference has p-value 1."""
    assert welch(1e-300, 1e-322, 10**6, 0.0, 0.0, 2).p_value == 0.0
    assert welch(1e300, 1e-322, 10**6, -1e300, 5e-323, 2).p_value == 0.0
    same = welch(0.0, 1e-322, 10**6, 0.0, 0.0, 2)
    assert (same.difference, same.standard_error, same.p_value) == (0.0, 0.0, 1.0)
    assert same.degrees_of_freedom == pytest.approx(10**6 - 1, rel=1e-12)


@pytest.mark.parametrize(
    ("summaries", "message"),
    [
        ((math.nan, 1.0, 5, 0.0, 1.0, 5), "mean_1 must be a finite number in (-inf, inf), got nan"),
        ((0.0, 1.0, 5, math.inf, 1.0, 5), "mean_2 must be a finite number in (-inf, inf), got inf"),
        ((0.0, math.nan, 5, 0.0, 1.0, 5), "sd_1 must be a finite number in [0, inf), got nan"),
        ((0.0, 1.0, 5, 0.0, -0.5, 5), "sd_2 must be in [0, inf), got -0.5"),
    ],
)
def test_summaries_that_are_no_numbers_are_refused(
    summaries: tuple[float, float, int, float, float, int], message: str
) -> None:
    """A NaN gave a p-value of NaN, which the report called "within noise" (it is not below
    5%), and a negative s.d. was squared into a positive one."""
    with pytest.raises(ValueError, match=f"^welch: {re.escape(message)}$"):
        welch(*summaries)


def test_a_second_side_of_one_sample_is_refused_too() -> None:
    """Each side needs 2 samples, the second as the first (with only the first checked, a
    second side of 1 sample divided by n_2 - 1 = 0 in the degrees of freedom)."""
    with pytest.raises(ValueError, match=r"^welch: n_2 must be an integer >= 2, got 1$"):
        welch(1.0, 1.0, 5, 1.0, 0.5, 1)


def test_standard_deviations_far_apart_are_scaled_by_the_larger() -> None:
    """s.d. 1e-300 and 1e300: scaled by the power of two above the larger, the smaller's share
    underflows to 0 and the test is that of a first side without spread (4 degrees of freedom
    for n_2 = 5); scaling by the smaller would overflow the larger to inf, and give NaN."""
    far = welch(0.0, 1e-300, 5, 1.0, 1e300, 5)
    assert far == welch(0.0, 0.0, 5, 1.0, 1e300, 5)
    # (t = -1 / 4.5e299: no evidence of a difference)
    assert (far.degrees_of_freedom, far.p_value) == (4.0, 1.0)
    assert far.standard_error == pytest.approx(1e300 / math.sqrt(5), rel=1e-15)


@pytest.mark.parametrize(
    ("degrees", "critical"),
    [(2, 4.303), (4, 2.776), (6, 2.447), (8, 2.306), (13, 2.160), (30, 2.042), (1000, 1.962)],
)
def test_the_critical_value_is_the_tables(degrees: int, critical: float) -> None:
    """The two-sided 5% critical values of Student's t (any statistics table), and the p-value
    of Welch's test at the value found is 5% (even degrees: two equal sides)."""
    found = critical_t(degrees)
    assert found == pytest.approx(critical, abs=5e-4)
    if degrees % 2 == 0:
        n = degrees // 2 + 1
        test = welch(found * math.sqrt(2 / n), 1.0, n, 0.0, 1.0, n)
        assert test.degrees_of_freedom == pytest.approx(degrees, rel=1e-12)
        assert test.p_value == pytest.approx(0.05, rel=1e-12)


def test_closed_forms_of_the_critical_value() -> None:
    """With 1 degree of freedom (Cauchy) t = tan(pi (1 - level) / 2); with 2,
    t = sqrt(2) c / sqrt(1 - c^2), c = 1 - level."""
    for level in (0.001, 0.01, 0.05, 0.1, 0.5, 0.9):
        assert critical_t(1, level) == pytest.approx(math.tan(math.pi * (1 - level) / 2), rel=1e-12)
        c = 1 - level
        assert critical_t(2, level) == pytest.approx(
            math.sqrt(2) * c / math.sqrt(1 - c * c), rel=1e-12
        )


@pytest.mark.parametrize("level", [0.99, 1 - 1e-8, 1 - 1e-12, 1 - 2**-53])
def test_the_critical_value_of_a_level_near_1_is_its_closed_form(level: float) -> None:
    """Near 1, the p-value was 1 - P(|T| < t) with nu / (nu + t^2) rounded to 1 for a small t:
    critical_t(8, 0.99999999) was 2.98e-8, not 1.293e-8. Now the closed forms of 1 and 2
    degrees of freedom (see above), and, for others, the small t's P(|T| < t) = 2 t f(0) to
    O(t^3), f(0) = Gamma((nu + 1) / 2) / (sqrt(nu pi) Gamma(nu / 2)) Student's density at 0;
    scipy's, to its own precision (2e-10 off the closed form at 8 degrees)."""
    c = 1 - level  # (exact from 0.5 up)
    assert critical_t(1, level) == pytest.approx(math.tan(math.pi * c / 2), rel=1e-14)
    assert critical_t(2, level) == pytest.approx(math.sqrt(2) * c / math.sqrt(1 - c * c), rel=1e-14)
    for degrees in (3, 5.5, 8, 30):
        density = math.exp(math.lgamma((degrees + 1) / 2) - math.lgamma(degrees / 2))
        density /= math.sqrt(degrees * math.pi)
        found = critical_t(degrees, level)
        if level > 0.99:
            assert found == pytest.approx(c / (2 * density), rel=1e-13)
        stats = pytest.importorskip("scipy.stats")
        assert found == pytest.approx(float(stats.t.isf(level / 2, degrees)), rel=1e-9)


@pytest.mark.parametrize(
    ("degrees", "level"), [(0.001, 0.9), (0.01, 0.6), (0.5, 0.51), (1, 0.75), (3, 0.9)]
)
def test_a_level_above_half_with_a_t_large_beside_the_degrees(degrees: float, level: float) -> None:
    """The complement's x, t^2 / (nu + t^2), rounds to 1 for a t large beside the degrees
    (few degrees and a level above 1/2): its search stopped early, critical_t(0.001, 0.9) 4194304
    where it is 9.05e43. Past a share of 1/2 the p-value's own x is read; 1 degree's closed form,
    and scipy's."""
    found = critical_t(degrees, level)
    if degrees == 1:
        assert found == pytest.approx(math.tan(math.pi * (1 - level) / 2), rel=1e-13)
    stats = pytest.importorskip("scipy.stats")
    assert found == pytest.approx(float(stats.t.isf(level / 2, degrees)), rel=1e-11)


@pytest.mark.parametrize(("degrees", "level"), [(0.005, 0.05), (0.001, 0.6), (1, 1e-300)])
def test_a_critical_value_past_the_normal_floats_is_refused(degrees: float, level: float) -> None:
    """t^2 overflowed past 2^512 and the search stopped there: critical_t(0.005) gave 1.3e154
    where it is 5.7e258 (scipy's stops short too). Past sqrt(nu / m), m the smallest normal
    float, nu / (nu + t^2) keeps no digits: refused there, in its words; one just inside it
    (one degree at 1e-150: t = 6.4e149) is found, to its closed form."""
    with pytest.raises(ValueError, match=r"^critical_t: the critical value of .* lies past "):
        critical_t(degrees, level)
    assert critical_t(1, 1e-150) == pytest.approx(1 / math.tan(math.pi * 1e-150 / 2), rel=1e-13)
    # (past 2^500, nu / (nu + t^2) from sqrt(nu) / t: t^2 overflows past 2^512)
    assert critical_t(1, 1e-153) == pytest.approx(1 / math.tan(math.pi * 1e-153 / 2), rel=1e-13)


def test_critical_value_is_scipys() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(3)
    for _ in range(100):
        degrees, level = rng.uniform(0.5, 200), rng.uniform(0.001, 0.5)
        expected = float(stats.t.ppf(1 - level / 2, degrees))
        assert critical_t(degrees, level) == pytest.approx(expected, rel=1e-11)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ((0,), ValueError, "degrees_of_freedom must be in (0, 2e+06], got 0"),
        (
            (math.inf,),
            ValueError,
            "degrees_of_freedom must be a finite number in (0, 2e+06], got inf",
        ),
        ((4, 1.0), ValueError, "level must be in (0, 1), got 1.0"),
        ((4, 0), ValueError, "level must be in (0, 1), got 0"),
        (("4",), TypeError, "degrees_of_freedom must be a finite number in (0, 2e+06] (a float or"),
    ],
)
def test_a_critical_value_of_no_distribution_is_refused(
    arguments: tuple[object, ...], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^critical_t: {re.escape(message)}"):
        critical_t(*arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "error", "given"),
    [
        (2.5, TypeError, "2.5"),
        (math.nan, TypeError, "nan"),
        ("5", TypeError, "'5'"),
        (True, TypeError, "True"),
        (5.0, TypeError, "5.0"),
    ],
)
def test_a_count_of_samples_must_be_an_integer(n: object, error: type, given: str) -> None:
    """A count that is no integer was taken: 2.5 gave a p-value, NaN a NaN one (which reads as
    "within noise"), a string a TypeError of the comparison's."""
    with pytest.raises(
        error, match=f"^welch: n_1 must be an integer >= 2, got {re.escape(given)}$"
    ):
        welch(1.0, 1.0, n, 0.0, 1.0, 5)  # type: ignore[arg-type]


def test_a_count_past_a_million_is_refused() -> None:
    """10**400 samples: OverflowError from the division; 2**50 gave a "p-value" of -9998.9
    (the beta function's log-gammas lose their digits). Counts up to 10**6 are taken, where
    the p-value is within about 1e-9 (scipy's, where installed), and numpy's integers."""
    for n in (10**400, 10**6 + 1, 2**50):
        with pytest.raises(ValueError, match=r"^welch: n_2 must be an integer in \[2, 10\*\*6\]"):
            welch(1.0, 1.0, 5, 0.0, 1.0, n)
    assert 0.0 < welch(1.0, 1.0, 5, 0.0, 1.0, 10**6).p_value < 1.0
    assert welch(1.0, 1.0, np.int64(5), 0.0, 1.0, 5) == welch(1.0, 1.0, 5, 0.0, 1.0, 5)
    stats = pytest.importorskip("scipy.stats")
    test = welch(1.0, 0.5, 10**6, 1.0 + 1e-3, 0.5, 10**6)
    expected = stats.ttest_ind_from_stats(1.0, 0.5, 10**6, 1.0 + 1e-3, 0.5, 10**6, equal_var=False)
    assert abs(test.p_value - float(expected.pvalue)) < 1e-8


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ((0.5, 0, 0.5), ValueError, "a must be in (0, 1e+06], got 0"),
        ((0.5, 1.0, -1.0), ValueError, "b must be in (0, 1e+06], got -1.0"),
        ((0.5, 1e10, 1e10), ValueError, "a must be in (0, 1e+06], got 10000000000.0"),
        ((1.5, 1.0, 1.0), ValueError, "x must be in [0, 1], got 1.5"),
        ((math.nan, 1.0, 1.0), ValueError, "x must be a finite number in [0, 1], got nan"),
        (("0.5", 1.0, 1.0), TypeError, "x must be a finite number in [0, 1] (a float or an int)"),
    ],
)
def test_regularized_beta_refuses_what_it_is_not_defined_for(
    arguments: tuple[object, object, object], error: type, message: str
) -> None:
    """``regularized_beta(0.5, 0, 0.5)`` raised math's "math domain error", naming nothing."""
    with pytest.raises(error, match=f"^regularized_beta: {re.escape(message)}"):
        regularized_beta(*arguments)  # type: ignore[arg-type]
