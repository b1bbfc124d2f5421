"""Behaviour of ``minidl.experiments`` that a mutation audit found untested.

Each test checks one observable result against an oracle computed independently of the code
under test: Welch's statistic and Satterthwaite's degrees of freedom by hand with
:mod:`statistics`, and the two-sided p-value by integrating Student's density numerically
(Simpson's rule), not by the continued fraction of :mod:`minidl.experiments.welch`.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path

import pytest
import torch

from minidl.experiments.batched import train_rows_batched
from minidl.experiments.config import ALL_EXPERIMENTS, FIGURE_1, TABLE_I, PaperResult, stack_key
from minidl.experiments.pool import train_groups
from minidl.experiments.report import (
    SIGNIFICANCE,
    Comparison,
    _explain,
    _figure_1_comparison,
    _p,
    _paper_consistency,
    compare,
)
from minidl.experiments.seeds import round_seeds
from minidl.experiments.training import (
    RowResult,
    build_network,
    make_round_data,
    train_round,
    train_row,
)
from minidl.train import error_rate
from tests.pool_helpers import untrained
from tests.test_report import experiment, fake_row, report_text


def student_two_sided(t: float, nu: float, intervals: int = 20_000) -> float:
    """``P(|T_nu| >= |t|)`` as ``1 - 2 * integral_0^|t|`` of Student's density (Simpson)."""
    log_norm = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)

    def density(x: float) -> float:
        return math.exp(log_norm - (nu + 1) / 2 * math.log1p(x * x / nu))

    h = abs(t) / intervals
    total = density(0.0) + density(abs(t))
    total += sum((4 if k % 2 else 2) * density(k * h) for k in range(1, intervals))
    return 1.0 - 2.0 * total * h / 3


def welch_by_hand(
    ours: list[float], paper_mean: float, paper_sd: float, paper_n: int
) -> tuple[float, float, float]:
    """(difference, standard error, p-value) of Welch's test, from the textbook formulas."""
    n, mean, sd = len(ours), statistics.fmean(ours), statistics.stdev(ours)
    v_1, v_2 = sd**2 / n, paper_sd**2 / paper_n
    se = math.sqrt(v_1 + v_2)
    nu = (v_1 + v_2) ** 2 / (v_1**2 / (n - 1) + v_2**2 / (paper_n - 1))
    return mean - paper_mean, se, student_two_sided((mean - paper_mean) / se, nu)


def test_the_oracle_matches_known_quantiles() -> None:
    # Textbook quantiles: t_{0.975, 4} = 2.776445105, t_{0.975, 10} = 2.228138852.
    assert student_two_sided(2.776445105, 4.0) == pytest.approx(0.05, abs=1e-9)
    assert student_two_sided(2.228138852, 10.0) == pytest.approx(0.05, abs=1e-9)


@pytest.mark.parametrize(
    "errors", [[1.0, 3.5, 2.0], [0.4, 0.5, 0.9, 2.2], [5.0, 6.0, 9.5, 4.0, 7.0, 8.0, 6.5]]
)
def test_compare_uses_each_sides_own_count_and_sd(errors: list[float]) -> None:
    """A row of 3, 4 or 7 rounds against Table II's "SGD, momentum 0.9" (5 rounds, s.d. 2.11):
    our s.d. and count, the paper's s.d. and its 5 rounds, each on its own side."""
    row = experiment("II", "SGD, momentum 0.9")
    assert row.paper == PaperResult(4.42, 2.11)
    comparison = compare(fake_row(row, errors))
    assert comparison is not None
    difference, se, p = welch_by_hand(errors, 4.42, 2.11, 5)
    assert comparison.difference == pytest.approx(difference, abs=1e-12)
    assert comparison.standard_error == pytest.approx(se, rel=1e-12)
    assert comparison.p_value == pytest.approx(p, abs=1e-9)


def test_a_p_value_of_exactly_the_level_is_within_noise() -> None:
    """The test rejects at p < 0.05 (the 5% level), not at p <= 0.05."""
    assert SIGNIFICANCE == 0.05
    assert not Comparison(1.0, 0.5, SIGNIFICANCE).differs
    assert Comparison(1.0, 0.5, math.nextafter(SIGNIFICANCE, 0.0)).differs


def test_the_tables_row_gives_each_column_its_own_number(tmp_path: Path) -> None:
    """Table I's Tanh row: paper and ours as mean (s.d.), the rounds, the mean *training*
    error (not the test error's) and the verdict, each in its own column."""
    row = fake_row(experiment("I", "Tanh"), [1.0, 2.0, 4.0, 3.0, 5.0])
    row = dataclasses.replace(
        row,
        rounds=tuple(
            dataclasses.replace(r, train_error=e)
            for r, e in zip(row.rounds, [0.25, 0.5, 0.75, 1.0, 1.25], strict=True)
        ),
    )
    (line,) = [
        line for line in report_text([row], tmp_path).splitlines() if line.startswith("| Tanh |")
    ]
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    difference, se, p_value = welch_by_hand([1.0, 2.0, 4.0, 3.0, 5.0], 1.06, 0.41, 5)
    assert cells[2:] == [
        "1.06 (0.41)",
        f"3.00 ({statistics.stdev([1.0, 2.0, 4.0, 3.0, 5.0]):.2f})",
        "1.0, 2.0, 4.0, 3.0, 5.0",
        "0.75",
        f"**differs** ({difference:+.2f}, SE {se:.2f}, {_p(p_value)})",
    ]


def with_curves(row: RowResult, curve: tuple[float, ...]) -> RowResult:
    """``row`` with ``curve`` as every round's validation curve."""
    rounds = tuple(dataclasses.replace(r, validation_curve=curve) for r in row.rounds)
    return dataclasses.replace(row, rounds=rounds)


def test_figure_1_a_change_of_exactly_one_point_per_epoch_is_not_stable() -> None:
    """The paper's contrast "holds" only when cross-entropy changes by less than 1 point per
    epoch; at exactly 1.00 it holds only in part."""
    mse, _, entropy = (fake_row(e, [1.0, 2.0]) for e in FIGURE_1)
    lines = _figure_1_comparison(
        [with_curves(mse, (5.0, 2.0, 5.0)), with_curves(entropy, (5.0, 4.0, 5.0))]
    )
    (verdict,) = [line for line in lines if line.startswith("The paper's contrast")]
    assert verdict == (
        "The paper's contrast holds only in part between MSE (3.00) and Cross-entropy (1.00), "
        "3.0 times as much fluctuation per epoch (paired t-test over the 2 rounds, p < 0.01); "
        "cross-entropy's error is not stable either (1.00 points per epoch)."
    )


def test_the_papers_own_numbers_differ_by_the_largest_pair() -> None:
    """Table I's Tanh and Table III's SGD, step decay and CLR are one training: the line on the
    paper's consistency gives the largest of the 6 pairs' |difference| / SE (Tanh against
    CLR, 1.63 SE), not another pair's."""
    papers = {"Tanh": (1.06, 0.41), "SGD": (1.66, 0.81), "step": (1.58, 0.71), "CLR": (1.38, 0.16)}
    ratios = [
        abs(m_a - m_b) / math.sqrt((s_a**2 + s_b**2) / 5)
        for index, (m_a, s_a) in enumerate(papers.values())
        for m_b, s_b in list(papers.values())[index + 1 :]
    ]
    assert f"{max(ratios):.1f}" == "1.6" and f"{min(ratios):.1f}" == "0.2"
    results = [fake_row(e, [1.0, 2.0]) for e in ALL_EXPERIMENTS]
    (line,) = [line for line in _paper_consistency(results) if "Table I Tanh (1.06 (0.41))" in line]
    assert "differ from each other by at most 1.6 SE, within noise" in line


def test_figure_1_equal_fluctuations_do_not_hold_the_papers_contrast() -> None:
    """MSE changing by exactly as much per epoch as cross-entropy shows no contrast."""
    mse, _, entropy = (fake_row(e, [1.0, 2.0]) for e in FIGURE_1)
    lines = _figure_1_comparison(
        [with_curves(mse, (5.0, 4.5, 5.0)), with_curves(entropy, (2.0, 2.5, 2.0))]
    )
    assert not [line for line in lines if line.startswith("The paper's contrast")]
    assert (
        "This run does not tell the fluctuation per epoch of MSE (0.50) and Cross-entropy (0.50) "
        "apart (paired t-test over the 2 rounds, p = 1.00): it does not show the paper's "
        "contrast."
    ) in lines


def test_figure_1_an_end_of_exactly_40_percent_is_near_chance() -> None:
    """Near chance is 40% to 60%, both ends included."""
    mse, _, entropy = (fake_row(e, [1.0, 2.0]) for e in FIGURE_1)
    lines = _figure_1_comparison(
        [with_curves(mse, (40.0, 50.0, 40.0)), with_curves(entropy, (60.0, 5.0, 60.0))]
    )
    assert lines[4:6] == [
        "- MSE: 10.00 points per epoch; its validation error ends at 40.00%, near chance level.",
        "- Cross-entropy: 55.00 points per epoch; its validation error ends at 60.00%, near "
        "chance level.",
    ]


def test_figure_1_a_row_diverged_in_every_round_is_left_out_of_the_contrast() -> None:
    """MSE diverged in both rounds: its curve is no fluctuation to compare, so no contrast is
    drawn (the line on its divergence says what happened)."""
    mse, _, entropy = (fake_row(e, [1.0, 2.0]) for e in FIGURE_1)
    mse = with_curves(
        fake_row(mse.experiment, [100.0, 100.0], losses=[(0.7, math.nan), (math.inf, math.nan)]),
        (10.0, 100.0, 100.0),
    )
    lines = _figure_1_comparison([mse, with_curves(entropy, (5.0, 4.0, 4.5))])
    assert not [line for line in lines if line.startswith("The paper's contrast")]
    assert any(line.startswith("MSE diverged in every round") for line in lines)


def test_batched_on_epoch_names_each_models_row_and_round() -> None:
    """Two rows of one stack, 2 rounds each: model k R + r reports as round r of row k; a row's
    time is the stack's divided by its 2 rows, a round's the stack's divided by its 4 models."""
    rows = (TABLE_I[1], TABLE_I[2])
    assert stack_key(rows[0]) == stack_key(rows[1])
    calls: list[tuple[str, int, int]] = []
    results = train_rows_batched(
        rows,
        2,
        0,
        epochs=1,
        on_epoch=lambda e, index, record: calls.append((e.label, index, record.epoch)),
    )
    assert calls == [
        (rows[0].label, 0, 0),
        (rows[0].label, 1, 0),
        (rows[1].label, 0, 0),
        (rows[1].label, 1, 0),
    ]
    for result in results:
        assert result.seconds > 0.0
        assert result.seconds == pytest.approx(2 * result.rounds[0].seconds, rel=1e-12)
        assert result.rounds[0].seconds == result.rounds[1].seconds


def test_a_variant_as_far_below_the_paper_as_our_row_is_above_is_no_closer(
    tmp_path: Path,
) -> None:
    """ELU (here with a paper of 5.00, s.d. 1.00) differs at 8.00; a variant at 2.00, as far
    below the paper as our row is above it, is within noise (by its spread) but no closer:
    it explains nothing (closer means a smaller |difference|, strictly)."""
    elu = experiment("I", "ELU")
    elu = dataclasses.replace(elu, paper=PaperResult(5.0, 1.0))
    row = fake_row(elu, [7.5, 8.5, 8.0, 8.0, 8.0])
    variant = fake_row(
        experiment("I", "ELU, as published (SELU's alpha)"), [0.0, 0.0, 0.0, 5.0, 5.0]
    )
    comparison, result = compare(row), compare(variant, row)
    assert comparison is not None and comparison.differs and comparison.difference == 3.0
    assert result is not None and not result.differs and result.difference == -3.0
    lines = _explain([row, variant], row, comparison)
    (line,) = [line for line in lines if line.startswith("- Hypothesis:")]
    _, se, p_value = welch_by_hand([0.0, 0.0, 0.0, 5.0, 5.0], 5.0, 1.0, 5)
    assert se == pytest.approx(math.sqrt(7.5 / 5 + 1.0 / 5), rel=1e-12)
    assert line.endswith(
        f"within noise of the paper (-3.00, SE {se:.2f}, {_p(p_value)}), no closer to the paper "
        "than our row."
    )
    assert not any("accounted for" in line for line in lines)


def test_a_repeat_of_the_papers_is_compared_with_its_own_5_rounds() -> None:
    """Table I's Tanh, 3 rounds at 3.00 (s.d. 1.00), against the paper's Table III SGD
    (1.66, s.d. 0.81, 5 rounds): the SE is sqrt(1 / 3 + 0.81^2 / 5)."""
    row = fake_row(experiment("I", "Tanh"), [2.0, 3.0, 4.0])
    comparison = compare(row)
    assert comparison is not None
    lines = _explain([row, fake_row(experiment("III", "SGD"), [1.0, 2.0])], row, comparison)
    (line,) = [line for line in lines if "Table III 'SGD'" in line]
    _, se, p_value = welch_by_hand([2.0, 3.0, 4.0], 1.66, 0.81, 5)
    assert se == pytest.approx(math.sqrt(1 / 3 + 0.81**2 / 5), rel=1e-12)
    assert line.endswith(f"that (+1.34, SE {se:.2f}, {_p(p_value)}).")


def test_a_repeat_only_through_a_fault_is_not_an_agreeing_repeat() -> None:
    """Table II's momentum 0 at 2.00 differs from its paper (5.20) but is within noise of
    momentum 0.9's (4.42, s.d. 2.11), which trains as momentum 0 only if momentum had no
    effect: that is a hypothesis, not the paper's own repeat, so the conclusion does not say
    that ours agrees with a repeat."""
    row = fake_row(experiment("II", "SGD, momentum 0"), [1.9, 2.0, 2.1, 2.0, 2.0])
    fault = experiment("II", "SGD, momentum 0.9, as published (momentum without effect)")
    results = [
        row,
        fake_row(fault, [1.0, 2.0]),
        fake_row(experiment("II", "SGD, momentum 0.9"), [1.0, 2.0]),
    ]
    comparison = compare(row)
    assert comparison is not None and comparison.differs
    lines = _explain(results, row, comparison)
    (repeat,) = [line for line in lines if line.startswith("- The paper measured")]
    assert "(if " in repeat and ": ours is within noise of that (-2.42, SE " in repeat
    (conclusion,) = [line for line in lines if line.startswith("**Conclusion:**")]
    # (no conclusion of the paper's own repeat drawn from a repeat through a fault: the row,
    # without a variant of its own, stays unexplained)
    assert conclusion == (
        "**Conclusion:** no variant of this run tests an explanation for this row; the "
        "difference stays unexplained by this run."
    )


def test_only_the_rows_own_variants_are_read_as_its_explanations() -> None:
    """A variant of Table I's Sigmoid says nothing of Table I's ELU."""
    row = fake_row(experiment("I", "ELU"), [7.5, 8.5, 8.0, 8.0, 8.0])
    other = fake_row(experiment("I", "Sigmoid alone"), [1.8, 1.7, 1.9, 1.8, 1.8])
    comparison = compare(row)
    assert comparison is not None and comparison.differs
    lines = _explain([row, other], row, comparison)
    assert not [line for line in lines if line.startswith("- Hypothesis:")]
    assert lines[-2] == (
        "**Conclusion:** no variant of this run tests an explanation for this row; the "
        "difference stays unexplained by this run."
    )


def test_a_variant_of_two_rounds_is_compared() -> None:
    """Two rounds give an s.d., so a variant run twice is compared with the paper; only one
    run once is not."""
    row = fake_row(experiment("I", "ELU"), [7.5, 8.5, 8.0, 8.0, 8.0])
    comparison = compare(row)
    assert comparison is not None
    variant = experiment("I", "ELU, as published (SELU's alpha)")
    for errors, verdict in (
        ([1.8, 2.0], ": within noise of the paper ("),
        ([1.8], ": no comparison"),
    ):
        lines = _explain([row, fake_row(variant, errors)], row, comparison)
        (line,) = [line for line in lines if line.startswith("- Hypothesis:")]
        assert verdict in line


def test_train_round_starts_from_the_init_seed_and_measures_each_set() -> None:
    """With 0 epochs a round keeps its initial weights: those of the round's ``init`` seed (not
    its data or shuffle seed), with its test and training errors those of that network on
    the round's own test and training sets."""
    row, seeds = TABLE_I[1], round_seeds(0, 3)
    result = train_round(row, seeds, epochs=0)
    initial = build_network(row, torch.Generator().manual_seed(seeds.init))
    for got, expected in zip(result.model.parameters(), initial.parameters(), strict=True):
        assert torch.equal(got.data, expected.data)
    data = make_round_data(row, seeds)
    assert result.test_error == error_rate(initial, data.test.x, data.test.y)
    assert result.train_error == error_rate(initial, data.train.x, data.train.y)
    assert result.train_error != error_rate(initial, data.validation.x, data.validation.y)


def test_train_groups_returns_each_groups_results_at_its_position() -> None:
    """The longest group is started first, but the results come in the order of the groups."""
    groups = [[TABLE_I[0]], [TABLE_I[1], TABLE_I[2]], [TABLE_I[3]]]
    results = train_groups(groups, 1, 0, jobs=1, train=untrained)
    assert [[r.experiment for r in group] for group in results] == groups


def test_a_protocol_counts_a_smaller_last_batch_as_a_batch() -> None:
    """``batches_per_epoch`` is ``ceil(n_train / batch_size)``, as documented and as fit runs
    them: 1050 samples in batches of 100 are 11 batches (the last of 50), 1000 are 10, 99 are 1.
    (The floor gave 10 and 0.)"""
    from minidl.experiments.config import PROTOCOL

    for n_train, batches in ((1050, 11), (1000, 10), (99, 1)):
        protocol = dataclasses.replace(PROTOCOL, n_train=n_train)
        assert protocol.batches_per_epoch == batches


def test_batched_rounds_shuffle_with_the_rounds_shuffle_seed() -> None:
    """A batched round draws its orders from its round's ``shuffle`` seed, as the round trained
    alone with ``fit`` does: the two training losses agree to float32 rounding (2.6e-8 here),
    where shuffles drawn from another seed (the ``init`` one) differ by 4e-4."""
    from minidl.experiments.batched import train_row_batched

    row = next(e for e in TABLE_I if e.label == "Tanh")
    alone = train_row(row, 1, 0, epochs=2).rounds[0]
    batched = train_row_batched(row, 1, 0, epochs=2).rounds[0]
    assert batched.seeds == alone.seeds == round_seeds(0, 0)
    assert batched.train_loss == pytest.approx(alone.train_loss, rel=1e-6, abs=0.0)


def test_two_mse_rows_of_other_reductions_in_one_stack_each_train_with_their_own() -> None:
    """Two rows of one loss type with other settings (MSE, the paper's reduction and PyTorch's
    mean) stack as two runs of the loss: each row's numbers are those it gets alone (merged by
    the loss's type, the second row trained with the first row's reduction: a training loss of
    4927 where alone it is 1.18)."""
    from minidl.experiments.batched import train_row_batched

    paper = next(e for e in FIGURE_1 if e.loss == "mse" and e.mse_reduction == "paper")
    mean = dataclasses.replace(paper, label=paper.label + " (mean)", mse_reduction="mean")
    assert stack_key(paper) == stack_key(mean)
    together = train_rows_batched([paper, mean], 1, 0, epochs=1)
    for row, result in zip((paper, mean), together, strict=True):
        alone = train_row_batched(row, 1, 0, epochs=1)
        assert result.rounds[0].train_loss == alone.rounds[0].train_loss
        assert result.rounds[0].validation_curve == alone.rounds[0].validation_curve
    assert together[0].rounds[0].train_loss != together[1].rounds[0].train_loss
