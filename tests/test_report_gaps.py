"""Behaviours of the report and of its Welch test that hand-made mutants of
``minidl.experiments.report`` and ``minidl.experiments.welch`` left untested.

Each test checks a value, a refusal or a sentence that a reader of the report (or a caller of the
test) relies on, against a number computed here by other means (closed forms, the report's own
rule written out) or the exact text that the report gives. A second audit added: a critical
value past 2^500 at a level above 1/2, a variant of a row without the paper's numbers compared
with nothing, a variant sharing some rounds' seeds compared by Welch, and a fall below a quarter
point called flat.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
from pathlib import Path

import pytest

from minidl.experiments.config import PROTOCOL
from minidl.experiments.report import (
    _curve_trend,
    _figure_1_comparison,
    _holm,
    _time_parts,
    results_json,
)
from minidl.experiments.seeds import round_seeds
from minidl.experiments.training import RowResult
from minidl.experiments.welch import critical_t, regularized_beta
from tests.test_report import (
    BETWEEN_REPEATS,
    DIFFERING,
    ELU_VARIANT,
    MEAN_MSE,
    SETTINGS,
    _with_curves,
    conclusions,
    differences_section,
    experiment,
    fake_row,
    hypothesis_line,
    report_text,
)


def test_regularized_beta_refuses_a_b_past_a_million() -> None:
    """``b`` has the same bound as ``a`` (1e6, where the log-gammas of the front factor still
    keep about 1e-9): one past it is refused by name, with what was given; 1e6 itself is taken
    (I_x(1, b) = 1 - (1 - x)^b, 1 to double precision at x = 1/2)."""
    with pytest.raises(
        ValueError, match=r"^regularized_beta: b must be in \(0, 1e\+06\], got 2000000\.0$"
    ):
        regularized_beta(0.5, 1.0, 2e6)
    assert regularized_beta(0.5, 1.0, 1e6) == 1.0
    assert regularized_beta(1e-7, 1.0, 1e6) == pytest.approx(-math.expm1(1e6 * math.log1p(-1e-7)))


def test_a_critical_value_just_past_the_normal_floats_is_refused() -> None:
    """One degree of freedom: t = cot(pi level / 2), and the line past which nu / (nu + t^2)
    leaves the normal floats is sqrt(1 / m) = 2^511 (m the smallest normal float). A level
    whose t lies just past it (6e-155: t = 1.06e154, 1.6 times the line) is refused, naming the
    line; one whose t lies just inside it (1e-153: t = 6.4e152) is found, to its closed form."""
    line = math.sqrt(1 / sys.float_info.min)
    assert line == 2.0**511
    assert 1 / math.tan(math.pi * 6e-155 / 2) > line
    with pytest.raises(
        ValueError,
        match=r"^critical_t: the critical value of 1\.0 degrees of freedom at level 6e-155 lies "
        r"past 6\.7e\+153, where",
    ):
        critical_t(1, 6e-155)
    assert critical_t(1, 1e-153) == pytest.approx(1 / math.tan(math.pi * 1e-153 / 2), rel=1e-13)


def test_results_of_no_row_give_the_default_protocol(tmp_path: Path) -> None:
    """No row trained with another protocol: the JSON's protocol is the default one, not
    ``None`` (which says the rows' protocols differ, each given in its row's entry)."""
    document = results_json([], SETTINGS, 1.0, 1.0, {})
    assert document["protocol"] == dataclasses.asdict(PROTOCOL)
    assert document["rows"] == []


def test_one_differing_row_is_not_said_to_be_corrected_for_one_row(tmp_path: Path) -> None:
    """Holm's correction for one comparison is the comparison itself: a single differing row's
    explanation gives its p-value alone, not "after Holm's correction for the 1 rows"."""
    section = differences_section([fake_row(experiment("I", "Tanh"), DIFFERING)], tmp_path)
    assert (
        "Paper 1.06 (s.d. 0.41), ours 3.00 (s.d. 0.07): ours is 1.94 points higher, 10.4 SE "
        "(p < 0.01)."
    ) in section.splitlines()
    assert "Holm" not in section


def test_a_mean_equal_to_the_papers_repeat_lies_between_its_measurements(tmp_path: Path) -> None:
    """Table I's Tanh (1.06) is measured again as Table III's SGD (1.66). Ours at exactly 1.66
    (6 rounds) differs from 1.06 and is within noise of 1.66: it lies between the paper's two
    measurements, the ends included, so the report says so (the end itself is a measurement
    of the paper's, not a mean beyond them)."""
    errors = (1.66, 1.66, 1.66, 1.66, 1.76, 1.56)
    assert statistics.fmean(errors) == 1.66
    rows = [fake_row(experiment("I", "Tanh"), errors), fake_row(experiment("III", "SGD"), errors)]
    section = differences_section(rows, tmp_path)
    row = section.split("### Table I, Tanh\n")[1].split("###")[0]
    assert conclusions(row) == [BETWEEN_REPEATS]


def test_a_mean_printed_as_the_papers_repeat_lies_between_its_measurements(
    tmp_path: Path,
) -> None:
    """Ours at 1.664, printed 1.66 as the paper's repeat (Table III's SGD, 1.66), lies between
    the paper's measurements as the reader sees them: the report said it was "not between the
    paper's measurements of it (1.06 and 1.66)" beside "ours 1.66" (a mean of
    1.6600000000000001 read so too). A mean printed 1.67 is beyond them."""
    errors = (1.664, 1.664, 1.664, 1.764, 1.564)
    assert statistics.fmean(errors) > 1.66
    rows = [fake_row(experiment("I", "Tanh"), errors), fake_row(experiment("III", "SGD"), errors)]
    row = differences_section(rows, tmp_path).split("### Table I, Tanh\n")[1].split("###")[0]
    assert "ours 1.66 (s.d. 0.07)" in row
    assert conclusions(row) == [BETWEEN_REPEATS]
    above = tuple(e + 0.006 for e in errors)
    rows = [fake_row(experiment("I", "Tanh"), above), fake_row(experiment("III", "SGD"), above)]
    row = differences_section(rows, tmp_path).split("### Table I, Tanh\n")[1].split("###")[0]
    assert "ours 1.67 (s.d. 0.07)" in row
    assert conclusions(row)[0].startswith(
        "**Conclusion:** ours is within noise of the paper's own repeat of this training, though "
        "not between the paper's measurements of it (1.06 and 1.66)"
    )


def test_a_single_row_compared_is_named_with_its_verdict(tmp_path: Path) -> None:
    """One main row compared: the count read "1 of the 1 rows differs; none is within noise."
    (and of a row within noise, "0 of the 1 rows differ; within noise: Table I Tanh."); it
    names the row and its verdict."""
    differing = differences_section([fake_row(experiment("I", "Tanh"), DIFFERING)], tmp_path)
    assert "The one row compared, Table I Tanh, differs." in differing.splitlines()
    assert " of the 1 rows" not in differing
    within = fake_row(experiment("I", "Tanh"), (1.0, 1.1, 1.05, 1.0, 1.1))
    section = differences_section([within], tmp_path)
    assert "The one row compared, Table I Tanh, is within noise." in section.splitlines()
    assert " of the 1 rows" not in section


def test_only_a_mixed_rows_variant_is_an_activation_alone(tmp_path: Path) -> None:
    """The section on the activations alone sets beside a mixed row (Sigmoid: sigmoid, tanh,
    sigmoid) its variant of one activation; ELU's published variant uses one activation too,
    but its row (elu, elu, elu) mixes none, so it is no activation "alone" and the section is
    not written."""
    elu = fake_row(experiment("I", "ELU"), (1.8, 1.9, 2.0))
    published = fake_row(experiment("I", "ELU, as published (SELU's alpha)"), (1.7, 1.8, 1.9))
    assert "the activations alone" not in report_text([elu, published], tmp_path)
    sigmoid = fake_row(experiment("I", "Sigmoid"), (1.8, 1.9, 2.0))
    alone = fake_row(experiment("I", "Sigmoid alone"), (1.7, 1.8, 1.9))
    text = report_text([elu, published, sigmoid, alone], tmp_path)
    section = text.split("### Table I, the activations alone\n")[1].split("###")[0]
    assert "- Sigmoid alone: 1.80 (0.10)" in section
    assert "ELU" not in section


def _fig_1_rows(mse_curve: tuple[float, ...], entropy_curve: tuple[float, ...]) -> list[RowResult]:
    """Fig. 1's MSE run and cross-entropy run, 2 rounds each of the given validation curve."""
    mse = fake_row(experiment("Fig. 1", MEAN_MSE), (3.0, 3.0))
    entropy = fake_row(experiment("Fig. 1", "Cross-entropy"), (2.0, 2.0))
    return [_with_curves(mse, [mse_curve] * 2), _with_curves(entropy, [entropy_curve] * 2)]


def test_figure_1_measures_the_first_quarter_of_a_longer_run() -> None:
    """Over 16 epochs the measure spans the first quarter, 4 epochs (3 at least): MSE's curve
    40, 50, 40, 50 moves 30 points for a net 10, (30 - 10) / 3 = 6.67 points per epoch, and the
    drop to 10 at the fifth epoch is not counted (over 5 epochs it would read 10.00)."""
    lines = _figure_1_comparison(
        _fig_1_rows((40.0, 50.0, 40.0, 50.0) + (10.0,) * 12, (40.0, 35.0, 30.0, 25.0) + (9.0,) * 12)
    )
    assert "change (0 for a curve that only falls, or only rises) over the first 4 epochs" in (
        "\n".join(lines)
    )
    assert f"- {MEAN_MSE}: 6.67 points per epoch; its validation error ends at 10.00%." in lines
    assert "- Cross-entropy: 0.00 points per epoch; its validation error ends at 9.00%." in lines


def test_figure_1_is_compared_from_3_epochs_on() -> None:
    """Three epochs are the shortest curve the measure takes (its first 3 epochs): Fig. 1's
    runs of 3 epochs are compared; of 2 they are not (no section)."""
    lines = _figure_1_comparison(_fig_1_rows((40.0, 60.0, 40.0), (40.0, 30.0, 20.0)))
    assert lines[0] == "### Fig. 1"
    assert (
        f"- {MEAN_MSE}: 20.00 points per epoch; its validation error ends at 40.00%, near chance level."
        in lines
    )
    assert _figure_1_comparison(_fig_1_rows((40.0, 60.0), (40.0, 30.0))) == []


def test_holm_never_corrects_a_p_value_past_1() -> None:
    """Holm's corrected p-values are probabilities: min(1, (m - j + 1) p), so 0.6 and 0.7
    tested together are both 1 (2 x 0.6 = 1.2 capped, then the running maximum); 0.25, 0.5
    and 0.75 are 0.75, 1 (2 x 0.5 capped) and 1."""
    assert _holm([0.6, 0.7]) == [1.0, 1.0]
    assert _holm([0.75, 0.25, 0.5]) == [1.0, 0.75, 1.0]


def test_a_run_of_10_seconds_or_more_is_timed_in_whole_seconds() -> None:
    """Tenths are shown below 10 s only: 10 s is "10", not "10.0", and its parts too."""
    assert _time_parts(10.0, 4.0) == ("10", "4", "6")
    assert _time_parts(9.94, 4.0) == ("9.9", "4.0", "5.9")


def test_a_curve_ending_high_without_divergence_is_not_called_diverged() -> None:
    """A validation error ending above chance (80%) in a row whose training loss stayed finite
    is described as such: only a row that diverged is said to count NaN outputs as errors."""
    curve = (90.0, 85.0) + (80.0,) * 6
    row = _with_curves(fake_row(experiment("I", "Tanh"), (80.0, 80.0)), [curve, curve])
    assert _curve_trend(row) == (
        "mean validation error 80.00% over epochs 5-6, 80.00% over the last 2 (flat over the "
        "last quarter); the best epoch of each round averaged 80.00%."
    )
    diverged = _with_curves(
        fake_row(experiment("I", "Tanh"), (80.0, 80.0), losses=[(0.7, math.nan)] * 2),
        [curve, curve],
    )
    assert "(flat over the last quarter; a diverged model's NaN outputs count as errors)" in (
        _curve_trend(diverged)
    )


def test_figure_1_compares_an_mse_run_that_diverged_in_some_rounds_only() -> None:
    """A run is left out of Fig. 1's contrast only when it diverged in every round: an MSE run
    that diverged in 1 of its 2 rounds still trained, and is tested against cross-entropy."""
    rows = _fig_1_rows((10.0, 30.0) * 4, (40.0, 30.0, 35.0, 25.0, 20.0, 15.0, 10.0, 5.0))
    mse = fake_row(experiment("Fig. 1", MEAN_MSE), (3.0, 3.0), losses=[(1.0, math.inf), (0.7, 0.3)])
    rows[0] = _with_curves(mse, [(10.0, 30.0) * 4] * 2)
    lines = _figure_1_comparison(rows)
    assert (
        f"- {MEAN_MSE}: 20.00 points per epoch; 1 of 2 rounds diverged (non-finite training "
        "loss); its validation error ends at 30.00%."
    ) in lines
    assert [line for line in lines if line.startswith("The paper's contrast")] == [
        f"The paper's contrast holds only in part between {MEAN_MSE} (20.00) and Cross-entropy "
        "(5.00), 4.0 times as much fluctuation per epoch (paired t-test over the 2 rounds, "
        "p < 0.01); cross-entropy's error is not stable either (5.00 points per epoch)."
    ]


def test_write_json_writes_a_non_finite_number_as_null_at_any_depth(tmp_path: Path) -> None:
    """A diverged run's losses are non-finite floats inside lists, tuples and dicts (a curve, a
    pair of bounds): each is written ``null`` in strict JSON, where ``json.dumps`` with
    ``allow_nan=False`` refuses them, and the finite numbers keep their value."""
    from minidl.experiments.report import write_json

    document = {
        "curve": [1.5, math.nan, 2.0],
        "bounds": (math.inf, -0.25),
        "nested": {"rows": [(0.5, -math.inf), {"loss": math.nan}]},
        "count": 3,
    }
    path = tmp_path / "results.json"
    write_json(document, path)
    assert json.loads(path.read_text()) == {
        "curve": [1.5, None, 2.0],
        "bounds": [None, -0.25],
        "nested": {"rows": [[0.5, None], {"loss": None}]},
        "count": 3,
    }


# -- a second audit: a critical value past 2^500, variants of no paper row, seeds shared in part,
# -- a trend below a quarter point


def _two_sided_p(t: float, degrees: float) -> float:
    """P(|T_nu| >= t) = I_{nu / (nu + t^2)}(nu / 2, 1 / 2), by mpmath at 50 digits."""
    import mpmath  # (a dependency of torch's, through sympy)

    with mpmath.workdps(50):
        nu = mpmath.mpf(degrees)
        x = nu / (nu + mpmath.mpf(t) ** 2)
        return float(mpmath.betainc(nu / 2, mpmath.mpf(1) / 2, 0, x, regularized=True))


def test_a_level_above_half_with_a_critical_value_past_2_to_the_500_is_found() -> None:
    """3e-4 degrees of freedom at level 0.9: the critical value is 2.9e150, past 2^500 (where t
    is taken through sqrt(nu) / t, as t^2 nears overflow) and inside the line of the normal
    floats (1.16e152). Above a level of 1/2 the search reads the share t^2 / (nu + t^2) of that
    branch, near 1 for such a t; read as the p-value's own x (near 0), the search took the
    complement's branch and refused the level as past the line. The value found has mpmath's
    p-value 0.9 to 1e-9 (the precision of the incomplete beta at these shapes)."""
    t = critical_t(3e-4, 0.9)
    assert 2.0**499 < t < 2.0**500
    assert _two_sided_p(t, 3e-4) == pytest.approx(0.9, rel=1e-9)


def test_a_variant_of_a_row_without_the_papers_numbers_is_compared_with_nothing() -> None:
    """A variant of a main row of one's own built without a PaperResult (Table I's ELU, its
    paper numbers removed): there is no published number to compare it with, so its JSON entry
    names no row it is compared with and carries no paper number or verdict (it named the row
    of no numbers as the one it was compared with)."""
    elu = fake_row(dataclasses.replace(experiment("I", "ELU"), paper=None), DIFFERING)
    variant = fake_row(experiment("I", ELU_VARIANT), (2.0, 2.1, 1.9, 2.0, 2.0))
    rows = results_json([elu, variant], SETTINGS, 1.0, 1.0, {})["rows"]
    assert [row["label"] for row in rows] == ["ELU", ELU_VARIANT]
    for row in rows:
        assert row["compared_with"] is None
        assert (row["paper_mean"], row["paper_sd"]) == (None, None)
        assert row["differs_from_paper"] is None and row["p_value"] is None


def test_a_variant_sharing_only_some_rounds_seeds_is_compared_by_welch(tmp_path: Path) -> None:
    """A variant 1.0 point below our ELU row in every round, whose first round has the row's
    seeds and whose others do not: its rounds are not paired with the row's (the noise of
    rounds of other data, weights and shuffles does not cancel), so Welch's test compares them,
    as for rounds of no seed in common (p = 0.07); one round of shared seeds made the report
    pair all five (p < 0.01)."""
    elu = fake_row(experiment("I", "ELU"), (3.9, 2.1, 3.0, 2.4, 3.6))
    seeds = [round_seeds(0, 0), *(round_seeds(1, index) for index in range(1, 5))]
    lower = fake_row(experiment("I", ELU_VARIANT), (2.95, 1.05, 2.0, 1.45, 2.55), seeds=seeds)
    line = hypothesis_line(differences_section([elu, lower], tmp_path))
    assert line.endswith(
        "closer to the paper than our row, but not measurably apart from it (Welch: -1.00, "
        "SE 0.49, p = 0.07)."
    ), line


def test_a_fall_below_a_quarter_point_is_no_trend_at_a_low_error() -> None:
    """A change of the mean validation error counts as a trend only past 0.25 points and 5% of
    the error: at 2.00% (5% is 0.10 points), a fall of 0.20 points over the last quarter is
    flat, and one of 0.30 points is still falling (a threshold of the smaller of the two called
    the jitter of a low error a fall)."""
    row = fake_row(experiment("I", "Tanh"), DIFFERING)
    flat = _with_curves(row, [(3.0,) * 8 + (2.0,) * 4 + (1.8,) * 4] * 5)
    assert _curve_trend(flat) == (
        "mean validation error 2.00% over epochs 9-12, 1.80% over the last 4 (flat over the "
        "last quarter); the best epoch of each round averaged 1.80%."
    )
    falling = _with_curves(row, [(3.0,) * 8 + (2.0,) * 4 + (1.7,) * 4] * 5)
    assert "(still falling when training stopped)" in _curve_trend(falling)
