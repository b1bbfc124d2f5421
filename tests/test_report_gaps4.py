"""The report: what a fourth mutation audit of ``minidl.experiments.report`` found unchecked
(each test names its mutant). Fake results (no training), checked exactly against numbers
computed here from the rows."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import pytest

from minidl.experiments.config import Experiment
from minidl.experiments.report import _curve_trend, results_json, write_json, write_report
from minidl.experiments.runner import RunSettings
from minidl.experiments.seeds import round_seeds
from minidl.experiments.training import RoundResult, RowResult
from minidl.nn import mlp
from tests.test_report import SETTINGS, experiment


def fake_row(
    row: Experiment,
    errors: Sequence[float],
    *,
    curves: Sequence[tuple[float, ...]] | None = None,
    losses: Sequence[tuple[float, ...]] | None = None,
    batch_lr: tuple[float, ...] = (),
) -> RowResult:
    """A trained-looking result of ``row``: one round per test error, each with the given
    validation curve and training loss (default: finite, as long as the curve)."""
    model = mlp((2, 2))
    rounds = []
    for index, error in enumerate(errors):
        curve = (5.0, 4.0) if curves is None else curves[index]
        rounds.append(
            RoundResult(
                seeds=round_seeds(0, index),
                test_error=error,
                train_error=0.5,
                validation_curve=curve,
                train_loss=tuple(0.5 for _ in curve) if losses is None else losses[index],
                lr_curve=(row.lr,) * len(curve),
                batch_lr=batch_lr,
                seconds=0.0,
                model=model,
            )
        )
    return RowResult(experiment=row, rounds=tuple(rounds), seconds=0.0)


def _entry(results: Sequence[RowResult], label: str, settings: RunSettings = SETTINGS) -> dict:
    document = results_json(results, settings, 1.0, 1.0, {})
    (entry,) = [e for e in document["rows"] if e["label"] == label]
    return entry


# -- JSON -------------------------------------------------------------------------------------


def test_the_json_rows_are_what_the_json_file_reads_back() -> None:
    """M01: each row's entry holds JSON's own types (lists, not tuples), so that it equals
    what ``write_json`` writes and ``json.load`` reads back (with finite numbers only). (The
    document's ``protocol`` and ``choices``, from ``dataclasses.asdict``, still hold tuples.)"""
    tanh = fake_row(experiment("I", "Tanh"), [3.0, 3.1])
    relu = fake_row(experiment("I", "ReLU"), [2.0, 2.5])
    document = results_json([tanh, relu], SETTINGS, 1.0, 1.0, {})
    rows = document["rows"]
    assert json.loads(json.dumps(rows, allow_nan=False)) == rows
    assert [e["activations"] for e in document["rows"]] == [
        list(tanh.experiment.activations),
        list(relu.experiment.activations),
    ]


def test_a_row_stepped_per_epoch_has_no_batch_lr_in_the_json() -> None:
    """M03: ``batch_lr`` is ``None`` for a schedule stepped per epoch (its rounds record no
    rate per batch), not an empty list; the first round's rates where it has them."""
    row = experiment("I", "Tanh")
    assert _entry([fake_row(row, [1.0, 2.0])], "Tanh")["batch_lr"] is None
    stepped = fake_row(row, [1.0, 2.0], batch_lr=(0.1, 0.2, 0.3))
    assert _entry([stepped], "Tanh")["batch_lr"] == [0.1, 0.2, 0.3]


def test_the_json_gives_the_rounds_asked_for_by_the_settings() -> None:
    """M08: the document's ``rounds`` is the run's setting; each row's is its own count."""
    rows = [fake_row(experiment("I", "Tanh"), [1.0, 2.0])]
    document = results_json(rows, SETTINGS, 1.0, 1.0, {})
    assert document["rounds"] == SETTINGS.rounds == 5
    assert document["rows"][0]["rounds"] == 2


def test_write_json_refuses_a_non_finite_key_and_writes_nothing(tmp_path: Path) -> None:
    """M09: strict JSON has no NaN: ``_finite`` replaces non-finite values, and a non-finite
    float as a dictionary key, which it cannot replace, is refused, not written as ``NaN``
    (and no file is left)."""
    path = tmp_path / "results.json"
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_json({"figures": {math.nan: "a.png"}}, path)
    assert not path.exists()
    write_json({"figures": {1.5: "a.png"}, "x": [math.inf]}, path)
    assert json.loads(path.read_text()) == {"figures": {"1.5": "a.png"}, "x": [None]}


# -- curve trend --------------------------------------------------------------------------------


def _trend_row(end: float, *, diverged: bool = False) -> RowResult:
    """Table I Tanh with 8 epochs (window 2: epochs 5-6 against 7-8) ending flat at ``end``."""
    curve = (end,) * 8
    losses = [(0.5,) * 7 + (math.nan if diverged else 0.5,)] * 2
    return fake_row(experiment("I", "Tanh"), [3.0, 3.1], curves=[curve, curve], losses=losses)


@pytest.mark.parametrize("end", [40.0, 60.0])
def test_a_curve_ending_at_exactly_40_or_60_percent_is_near_chance(end: float) -> None:
    """M16, M17: the near-chance band of the curve's description is closed, 40% to 60%, as
    that of the activations alone and Fig. 1 is."""
    assert _curve_trend(_trend_row(end)) == (
        f"mean validation error {end:.2f}% over epochs 5-6, {end:.2f}% over the last 2 (flat "
        "over the last quarter; near chance level, where a constant answer errs on about 50%); "
        f"the best epoch of each round averaged {end:.2f}%."
    )
    just_outside = _curve_trend(_trend_row(end - 0.01 if end == 40.0 else end + 0.01))
    assert "chance" not in just_outside


# -- the report ---------------------------------------------------------------------------------


def test_only_a_quick_run_says_quick_mode(tmp_path: Path) -> None:
    """M23: the quick-mode warning heads a quick run's report only."""
    rows = [fake_row(experiment("I", "Tanh"), [3.0])]
    banner = "> **Quick mode**: 1 round and a few epochs per row, a smoke test of the pipeline."
    quick = RunSettings(
        rounds=1, base_seed=0, tables="1", quick=True, epochs_override=2, command="minidl quick"
    )
    for settings, shown in ((quick, True), (SETTINGS, False)):
        path = tmp_path / "report.md"
        write_report(rows, settings, 1.0, 1.0, {}, path)
        assert (banner in path.read_text()) is shown


def test_figure_2_reads_table_is_tanh_row_not_another_row_named_tanh() -> None:
    """M28: Fig. 2 draws Table I's Tanh network; a row of one's own named "Tanh" in another
    table, listed first, changes nothing of what the report says of Fig. 2's errors."""
    import dataclasses

    from minidl.experiments.report import _figure_2_errors

    tanh = fake_row(experiment("I", "Tanh"), [3.0, 3.1])
    own = dataclasses.replace(experiment("III", "SGD"), label="Tanh")
    other = fake_row(own, [2.0])
    alone = _figure_2_errors([tanh])
    assert "in the 2 rounds" in alone[0] or "rounds of 2 with an error" in alone[0]
    assert _figure_2_errors([other, tanh]) == alone


@pytest.mark.parametrize("diverged", [0, 1, 2])
def test_an_activation_alone_says_how_many_of_its_rounds_diverged(diverged: int) -> None:
    """M38: a single diverged round of an activation alone is said ("1 of 3 rounds
    diverged"), as more are; none, nothing."""
    from minidl.experiments.report import _activations_alone

    relu = fake_row(experiment("I", "ReLU"), [2.0, 2.1, 2.2])
    losses = [(0.5, math.nan if index < diverged else 0.5) for index in range(3)]
    alone = fake_row(experiment("I", "ReLU alone"), [9.0, 9.5, 10.0], losses=losses)
    lines = _activations_alone([relu, alone])
    (line,) = [line for line in lines if line.startswith("- ReLU alone:")]
    mean, sd = statistics.fmean([9.0, 9.5, 10.0]), statistics.stdev([9.0, 9.5, 10.0])
    said = f"; {diverged} of 3 rounds diverged" if diverged else ""
    assert line.startswith(
        f"- ReLU alone: {mean:.2f} ({sd:.2f}), per round 9.0, 9.5, 10.0{said}. Our ReLU row"
    )


def test_figure_1_measures_runs_of_different_lengths_over_the_shortests_quarter() -> None:
    """M45: Fig. 1's runs of 16 and 12 epochs are measured over the same first epochs, a
    quarter of the shorter run's (3), not of the longer one's (4): MSE's 40, 50, 40 moves 20
    points for a net 0 over 2 steps, 10.00 points per epoch (over 4 epochs it reads 6.67)."""
    from minidl.experiments.report import _figure_1_comparison

    mse_curve = (40.0, 50.0, 40.0, 50.0) + (10.0,) * 12
    ce_curve = (40.0, 35.0, 30.0) + (9.0,) * 9
    mse = fake_row(experiment("Fig. 1", "MSE"), [10.0, 10.0], curves=[mse_curve] * 2)
    ce = fake_row(experiment("Fig. 1", "Cross-entropy"), [9.0, 9.0], curves=[ce_curve] * 2)
    for results in ([mse, ce], [ce, mse]):
        lines = _figure_1_comparison(results)
        text = "\n".join(lines)
        assert "(0 for a curve that only falls, or only rises) over the first 3 epochs" in text
        assert "- MSE: 10.00 points per epoch; its validation error ends at 10.00%." in lines
        assert (
            "- Cross-entropy: 0.00 points per epoch; its validation error ends at 9.00%." in lines
        )


def test_the_papers_repeats_are_consistent_only_if_every_pair_is() -> None:
    """M56: three published numbers of one training (Table I Tanh, Table III SGD, and Table III
    step decay through its published fault) are consistent only when every pair is within
    noise: Tanh and SGD are (1.5 SE), but step decay published at 9.00 (0.20) is not."""
    import dataclasses

    from minidl.experiments.config import PaperResult
    from minidl.experiments.report import _paper_consistency

    errors = [3.0, 3.1, 2.9, 3.0, 3.0]
    tanh = fake_row(experiment("I", "Tanh"), errors)
    sgd = fake_row(experiment("III", "SGD"), errors)
    step = fake_row(
        dataclasses.replace(experiment("III", "SGD, step decay"), paper=PaperResult(9.0, 0.2)),
        errors,
    )
    fault = fake_row(
        experiment("III", "SGD, step decay, as published (schedule without effect)"), errors
    )
    lines = _paper_consistency([tanh, sgd, step, fault])
    (line,) = [line for line in lines if line.startswith("- Same training here")]
    assert "Table I Tanh (1.06 (0.41)), Table III SGD (1.66 (0.81)), Table III SGD, step " in line
    assert ", more than noise; ours for that training: 3.00 (0.07)." in line
    # (without the third number, the two agree)
    assert ", within noise: they are consistent" in "\n".join(_paper_consistency([tanh, sgd]))


def test_a_figure_run_is_never_a_repeat_of_the_papers_row() -> None:
    """M55: a run of a figure is not one of the paper's tables' measurements, even one built
    through the API with a paper's number and marked as a fault, training as Table I Tanh."""
    import dataclasses

    from minidl.experiments.config import PaperResult
    from minidl.experiments.report import _paper_repeats

    errors = [3.0, 3.1, 2.9]
    tanh = fake_row(experiment("I", "Tanh"), errors)
    figure = dataclasses.replace(
        experiment("I", "Tanh"),
        kind="figure",
        table="Fig. 1",
        label="Tanh as a figure",
        paper=PaperResult(5.0, 0.3),
        fault=True,
    )
    as_main = fake_row(dataclasses.replace(figure, kind="main", table="II"), errors)
    # (the same row as a main row of another table is a repeat: the figure run alone is not)
    assert [(o.experiment.label, v) for o, v in _paper_repeats([tanh, as_main], tanh)] == [
        ("Tanh as a figure", None)
    ]
    assert _paper_repeats([tanh, fake_row(figure, errors)], tanh) == []


def test_a_cross_entropy_row_names_no_mse_reduction() -> None:
    """M13: the MSE reduction, which cross-entropy does not read, is named only for an MSE row
    (a cross-entropy row built with ``mse_reduction="mean"`` trains as with "paper"), as the
    JSON gives it only there."""
    import dataclasses

    from minidl.experiments.report import _settings

    tanh = dataclasses.replace(experiment("I", "Tanh"), mse_reduction="mean")
    assert _settings(tanh) == "act tanh, cross-entropy, SGD lr 0.01"
    assert _entry([fake_row(tanh, [1.0, 2.0])], "Tanh")["mse_reduction"] is None
    mse = dataclasses.replace(experiment("II", "SGD, momentum 0"), mse_reduction="mean")
    assert _settings(mse).startswith("act tanh, mse (mean), SGD lr")


def test_a_rows_explanation_counts_only_the_rows_compared(tmp_path: Path) -> None:
    """M29: with Table I Tanh of one round left out, the explanation of each differing row gives
    its p-value after Holm's correction for the 2 rows compared, not the 3 with the paper's
    numbers."""
    far = [20.0, 20.1, 19.9, 20.0, 20.0]
    results = [
        fake_row(experiment("I", "Tanh"), [3.0]),
        fake_row(experiment("I", "ReLU"), far),
        fake_row(experiment("I", "SELU"), far),
    ]
    path = tmp_path / "report.md"
    write_report(results, SETTINGS, 1.0, 1.0, {}, path)
    text = path.read_text()
    section = text.split("## Where we differ from the paper\n")[1]
    for label in ("ReLU", "SELU"):
        explanation = section.split(f"### Table I, {label}\n")[1].split("\n### ")[0]
        assert "(p < 0.01; p < 0.01 after Holm's correction for the 2 rows)." in explanation
    assert "for the 3 rows" not in section


def test_one_row_compared_beside_a_row_of_one_round_has_no_holm_sentence(tmp_path: Path) -> None:
    """M32: with Table I Tanh of one round left out, a single row is compared: no correction
    for several rows is spoken of, though two rows hold the paper's numbers."""
    results = [
        fake_row(experiment("I", "Tanh"), [3.0]),
        fake_row(experiment("I", "ReLU"), [20.0, 20.1, 19.9, 20.0, 20.0]),
    ]
    path = tmp_path / "report.md"
    write_report(results, SETTINGS, 1.0, 1.0, {}, path)
    section = path.read_text().split("## Where we differ from the paper\n")[1]
    assert "The one row compared, Table I ReLU, differs." in section.splitlines()
    assert "Holm" not in section


def test_the_published_adadeltas_json_gives_its_rho_and_eps() -> None:
    """M02: "adadelta-published" is ADADELTA too: its JSON entry gives the rho and eps it
    trained with, as its description in the report does; SGD's gives none."""
    from minidl.experiments.report import _settings

    label = "ADADELTA, as published (accumulators overwritten by sqrt_)"
    row = experiment("II", label)
    assert row.optimizer == "adadelta-published"
    entry = _entry([fake_row(row, [1.0, 2.0])], label)
    assert entry["optimizer_settings"] == {"rho": row.adadelta_rho, "eps": row.adadelta_eps}
    assert f"rho {row.adadelta_rho:g}, eps {row.adadelta_eps:g}" in _settings(row)
    sgd = experiment("II", "SGD, momentum 0")
    assert _entry([fake_row(sgd, [1.0, 2.0])], sgd.label)["optimizer_settings"] is None


def test_the_json_gives_each_rounds_own_numbers_and_the_mean_over_them() -> None:
    """M06, M07: a row's entry gives the mean and s.d. over all its rounds' test errors, each
    round's test and training errors, and each round's own curves (the training loss too)."""
    errors = [1.0, 2.5, 4.0]
    curves = [(9.0, 8.0), (7.0, 6.0), (5.0, 3.0)]
    losses = [(0.9, 0.8), (0.7, math.inf), (0.5, 0.4)]
    row = fake_row(experiment("I", "Tanh"), errors, curves=curves, losses=losses)
    entry = _entry([row], "Tanh")
    assert entry["mean"] == statistics.fmean(errors) == 2.5
    assert entry["sd"] == statistics.stdev(errors) == 1.5
    assert entry["test_errors"] == errors
    assert entry["validation_curves"] == [list(c) for c in curves]
    assert entry["train_loss_curves"] == [list(c) for c in losses]


def test_an_activation_alone_at_exactly_60_percent_is_near_chance() -> None:
    """M37: the near-chance band of the activations alone is closed at its top too: a mean of
    exactly 60% is near chance, 60.1% is not."""
    from minidl.experiments.report import _activations_alone

    relu = fake_row(experiment("I", "ReLU"), [2.0, 2.1, 2.2])
    for errors, near in (([59.0, 60.0, 61.0], True), ([59.1, 60.1, 61.1], False)):
        alone = fake_row(experiment("I", "ReLU alone"), errors)
        (line,) = [x for x in _activations_alone([relu, alone]) if x.startswith("- ReLU alone:")]
        assert ("; near chance level, where a constant answer errs on about 50%." in line) is near
