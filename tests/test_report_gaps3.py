"""The report: behaviours a third pass of mutation testing over ``minidl.experiments.report``
found unchecked (2026-12-07; each test names its mutant).

Each builds fake results (no training) and checks what the report or the JSON says of them
exactly, against numbers computed here from the rows themselves.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from minidl.data import DISK_CENTER, DISK_RADIUS
from minidl.experiments.config import (
    CHOICES,
    PROTOCOL,
    TABLE_III,
    CyclicSchedule,
    Experiment,
)
from minidl.experiments.report import (
    _choices_section,
    _curve_trend,
    _explain,
    _scheduler_settings,
    _settings,
    compare,
    results_json,
    write_report,
)
from minidl.experiments.runner import RunSettings
from minidl.experiments.seeds import round_seeds
from minidl.experiments.training import RoundResult, RowResult, make_round_data
from minidl.nn import Module, mlp
from tests.test_report import experiment

SETTINGS = RunSettings(
    rounds=3,
    base_seed=0,
    tables="1,2,3",
    quick=False,
    epochs_override=None,
    command="minidl reproduce",
)


def _row(
    row: Experiment,
    errors: Sequence[float],
    *,
    curves: Sequence[tuple[float, ...]] | None = None,
    lr_curves: Sequence[tuple[float, ...]] | None = None,
) -> RowResult:
    """A trained-looking result of ``row``, one round per test error; each round's validation
    curve, training loss (as long as the curve) and rate per epoch as given."""
    model = mlp((2, 2))
    rounds = []
    for index, error in enumerate(errors):
        curve = (5.0, 4.0, 3.0) if curves is None else curves[index]
        rounds.append(
            RoundResult(
                seeds=round_seeds(0, index),
                test_error=error,
                train_error=0.5,
                validation_curve=curve,
                train_loss=tuple(0.5 for _ in curve),
                lr_curve=(row.lr,) * len(curve) if lr_curves is None else lr_curves[index],
                batch_lr=(),
                seconds=0.0,
                model=model,
            )
        )
    return RowResult(experiment=row, rounds=tuple(rounds), seconds=0.0)


def _entry(results: Sequence[RowResult], label: str) -> dict:
    document = results_json(results, SETTINGS, 1.0, 1.0, {})
    (entry,) = [e for e in document["rows"] if e["label"] == label]
    return entry


def test_the_json_gives_a_clr_half_cycle_in_batches_of_the_rows_protocol() -> None:
    """Mutant 4: ``step_size_up_batches`` is the half-cycle's epochs times the batches of an
    epoch of the row's own protocol (ceil(n_train / batch_size)), not its epochs."""
    row = experiment("III", "SGD, CLR")
    schedule = row.scheduler
    assert isinstance(schedule, CyclicSchedule)
    for n_train, batch_size in ((1000, 100), (450, 100), (1000, 1000)):
        own = dataclasses.replace(
            row, protocol=dataclasses.replace(PROTOCOL, n_train=n_train, batch_size=batch_size)
        )
        batches = -(-n_train // batch_size)
        settings = _scheduler_settings(own)
        assert settings == {
            "mode": "triangular",
            "base_lr": schedule.base_lr,
            "max_lr": schedule.max_lr,
            "step_size_up_epochs": schedule.step_size_up_epochs,
            "step_size_up_batches": schedule.step_size_up_epochs * batches,
        }
        entry = _entry([_row(own, [1.0, 2.0])], own.label)
        assert entry["scheduler_settings"] == settings


def test_the_json_counts_the_epochs_of_the_validation_curve() -> None:
    """Mutant 6: a row's ``epochs`` is the number of epochs trained, one validation error each
    (the fake rounds' training loss has as many values)."""
    for epochs in (1, 3, 7):
        curve = tuple(float(50 - e) for e in range(epochs))
        row = _row(experiment("I", "Tanh"), [1.0, 2.0], curves=[curve, curve])
        entry = _entry([row], "Tanh")
        assert entry["epochs"] == epochs
        assert [len(c) for c in entry["validation_curves"]] == [epochs, epochs]
        assert [len(c) for c in entry["train_loss_curves"]] == [epochs, epochs]


def test_the_json_gives_the_first_rounds_rate_per_epoch() -> None:
    """Mutant 7: ``lr_curve`` is the first round's, as ``batch_lr`` is (one curve for the row),
    not another round's."""
    row = _row(
        experiment("I", "Tanh"),
        [1.0, 2.0, 3.0],
        lr_curves=[(0.1, 0.05, 0.025), (0.2, 0.2, 0.2), (0.3, 0.3, 0.3)],
    )
    assert _entry([row], "Tanh")["lr_curve"] == [0.1, 0.05, 0.025]


def test_a_variants_json_carries_the_numbers_of_the_papers_row_it_is_compared_with() -> None:
    """Mutant 9: a variant has no number of the paper of its own; its entry gives the numbers
    of the paper's row it is compared with (the same table's), beside the comparison made."""
    main = experiment("III", "SGD, CLR")
    (variant,) = [e for e in TABLE_III if e.kind == "variant" and e.variant_of == "SGD, CLR"][:1]
    assert variant.paper is None and main.paper is not None
    results = [_row(main, [1.2, 1.4, 1.3]), _row(variant, [1.5, 1.7, 1.6])]
    entry = _entry(results, variant.label)
    assert entry["compared_with"] == main.label
    assert (entry["paper_mean"], entry["paper_sd"]) == (main.paper.mean, main.paper.sd)
    own = _entry(results, main.label)
    assert (own["paper_mean"], own["paper_sd"]) == (main.paper.mean, main.paper.sd)


def test_every_nonzero_momentum_is_named_in_the_settings() -> None:
    """Mutant 20: the settings of a row name its momentum whenever it has one (0.5 as 0.9),
    and none for momentum 0."""
    for label, momentum in (("SGD, momentum 0.5", 0.5), ("SGD, momentum 0.9", 0.9)):
        text = _settings(experiment("II", label))
        assert text.endswith(f"SGD lr 0.01, momentum {momentum:g}")
    assert "momentum" not in _settings(experiment("II", "SGD, momentum 0"))


def test_the_curves_best_epoch_is_each_rounds_minimum_averaged() -> None:
    """Mutant 23: "the best epoch of each round averaged" is the mean over rounds of each
    round's lowest validation error, wherever it lies, not of its last."""
    first = (30.0, 20.0, 10.0, 2.0, 4.0, 6.0, 8.0, 9.0)
    second = (30.0, 20.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
    text = _curve_trend(_row(experiment("I", "Tanh"), [1.0, 2.0], curves=[first, second]))
    best = statistics.fmean([min(first), min(second)])
    assert best == 3.0
    assert text.endswith(f"the best epoch of each round averaged {best:.2f}%.")


def test_only_a_row_of_another_value_of_a_decision_is_named_beside_it() -> None:
    """Mutant 25: a row of one's own whose ADADELTA rho is the decision's own value is not
    "trained with another value"; one of another rho is, by name and value."""
    chosen = experiment("II", "ADADELTA")
    assert chosen.adadelta_rho == CHOICES.adadelta_rho
    own = dataclasses.replace(chosen, label="ADADELTA, rho 0.5", adadelta_rho=0.5)
    lines = _choices_section([_row(chosen, [1.0, 2.0])])
    assert not any("another value" in line for line in lines)
    (line,) = [
        line
        for line in _choices_section([_row(chosen, [1.0, 2.0]), _row(own, [1.0, 2.0])])
        if "another value" in line
    ]
    assert line.startswith("- `adadelta_rho = ")
    assert line.endswith("**Rows trained with another value:** Table II ADADELTA, rho 0.5 (0.5).")


def test_the_seed_note_is_given_where_any_row_keeps_one_data_set() -> None:
    """Mutant 28: where one row of the run keeps round 1's data set in every round (its own
    protocol) beside rows of a new data set each round, the protocol says that the data seed is
    then round 1's; nothing is said where every row draws new data."""
    from minidl.experiments.report import _protocol_section

    note = " (its data seed round 1's where the protocol keeps one data set for every round)"
    tanh = experiment("I", "Tanh")
    assert tanh.protocol.new_data_per_round
    kept = dataclasses.replace(
        experiment("I", "ELU"),
        protocol=dataclasses.replace(PROTOCOL, new_data_per_round=False),
    )
    mixed = "\n".join(_protocol_section(SETTINGS, [_row(tanh, [1.0, 2.0]), _row(kept, [1.0, 2.0])]))
    assert mixed.count(note) == 1
    assert "**round 1's data set in every round**" in mixed
    only_new = "\n".join(_protocol_section(SETTINGS, [_row(tanh, [1.0, 2.0])]))
    assert note not in only_new


class _Answers(Module):
    """Answers each test point with the given class (one-hot scores, in one batch)."""

    def __init__(self, classes: torch.Tensor) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[0] == self.classes.shape[0]
        return torch.stack([1.0 - self.classes.double(), self.classes.double()], dim=1)


def test_figure_2_says_two_misclassified_points_in_the_plural(tmp_path: Path) -> None:
    """Mutant 35: round 1's network wrong on exactly 2 test points: "the 2 misclassified test
    points lie", with the farther one's distance from the circle and the share of the test
    points as close, computed here with math.hypot."""
    tanh = _row(experiment("I", "Tanh"), [1.0, 2.0])
    data = make_round_data(tanh.experiment, tanh.rounds[0].seeds)
    flipped = data.test.y.clone()
    flipped[:2] = 1 - flipped[:2]
    rounds = (
        dataclasses.replace(tanh.rounds[0], model=_Answers(flipped)),
        dataclasses.replace(tanh.rounds[1], model=_Answers(flipped)),
    )
    distances = [
        abs(math.hypot(x - DISK_CENTER[0], y - DISK_CENTER[1]) - DISK_RADIUS)
        for x, y in data.test.raw.double().tolist()
    ]
    farthest = max(distances[:2])
    share = 100 * sum(d <= farthest for d in distances) / len(distances)
    path = tmp_path / "report.md"
    row = RowResult(experiment=tanh.experiment, rounds=rounds[:1], seconds=0.0)
    write_report([row], SETTINGS, 10.0, 8.0, {"fig2": "fig2_test_set.png"}, path)
    assert (
        "Ours: in round 1, drawn above, the 2 misclassified test points lie at most "
        f"{farthest:.3f} from the circle (radius {DISK_RADIUS:.3f}), in a band around it that "
        f"holds {share:.1f}% of the 1000 test points."
    ) in path.read_text()


def test_two_variants_within_noise_but_not_closer_are_named_in_the_plural() -> None:
    """Mutant 41: two readings within noise of the paper only through their spread: "'a', 'b'
    are within noise of the paper", in the plural (one: "is")."""
    clr = experiment("III", "SGD, CLR")
    (reading,) = [
        e for e in TABLE_III if e.kind == "variant" and e.variant_of == "SGD, CLR" and not e.fault
    ]
    readings = [reading, dataclasses.replace(reading, label=f"{reading.label}, again")]
    row = _row(clr, [4.0, 3.8, 4.2, 4.0, 4.0])
    # (mean 3.9, s.d. 4.3: within noise of 1.38 by its spread, not apart from our row)
    wide = [_row(v, [0.0, 10.0, 0.0, 9.5, 0.0]) for v in readings[:2]]
    comparison = compare(row)
    assert comparison is not None and comparison.differs
    for variants, verb in ((wide[:1], "is"), (wide, "are")):
        lines = _explain([row, *variants], row, comparison)
        (conclusion,) = [line for line in lines if line.startswith("**Conclusion:**")]
        names = ", ".join(f"'{v.experiment.label}'" for v in variants)
        assert conclusion == (
            f"**Conclusion:** none of the variants run here explains the difference: {names} "
            f"{verb} within noise of the paper, but not measurably closer to it than our row; "
            "the difference stays unexplained by this run."
        )


def test_the_sd_factor_is_given_only_for_one_count_of_the_papers_rounds() -> None:
    """Mutant 51: the factor sqrt(n / (n - 1)) is given with the paper's n only where every
    comparison's paper number has the same n (5: 1.12); rows of one's own of 5 and 10 rounds
    in the paper give none (neither n's factor is the run's)."""
    from minidl.experiments.config import PaperResult
    from minidl.experiments.report import _paper_sd_reading

    tanh = _row(experiment("I", "Tanh"), [1.0, 1.2, 0.9, 1.1, 1.0])
    elu = experiment("I", "ELU")
    ten = dataclasses.replace(elu, paper=PaperResult(1.80, 0.53, rounds=10))
    (text, blank) = _paper_sd_reading([tanh])
    assert blank == ""
    assert f"times as large: {math.sqrt(5 / 4):.2f} with the paper's 5), " in text
    (text, _) = _paper_sd_reading([tanh, _row(ten, [1.7, 1.9, 1.8, 1.8, 1.8])])
    assert "sqrt(n / (n - 1)) times as large), no verdict of the 2 comparisons changes." in text
    assert "with the paper's" not in text


def test_the_papers_repeats_give_ours_of_the_first_row_of_that_training() -> None:
    """Mutant 63: "ours for that training" is the numbers of the first row of the results that
    trains so (in a run, every such row holds that one training's rounds; put together by hand
    they may not), as the table's figure draws the first (``_table_section``), not the last."""
    from minidl.experiments.report import _paper_consistency

    tanh = _row(experiment("I", "Tanh"), [3.0, 3.1, 2.9, 3.0, 3.0])
    sgd = _row(experiment("III", "SGD"), [1.0, 1.2, 0.8, 1.0, 1.0])
    for first, second in ((tanh, sgd), (sgd, tanh)):
        (line,) = [
            line for line in _paper_consistency([first, second]) if line.startswith("- Same")
        ]
        assert line.endswith(f"; ours for that training: {first.mean:.2f} ({first.sd:.2f})."), line


def test_the_report_names_every_number_of_processes_from_2(tmp_path: Path) -> None:
    """Mutant 66: 2 processes are several (the figures then drawn on a core left free); 1 is
    "1 process"."""
    tanh = _row(experiment("I", "Tanh"), [1.0, 2.0])
    path = tmp_path / "report.md"
    for jobs, text in (
        (1, "(training 8.0 s in 1 process, figures and report 1.0 s)."),
        (
            2,
            "(training 8.0 s in 2 processes, and meanwhile, on a core left free, the figures "
            "whose rows were done; the other figures and the report 1.0 s).",
        ),
        (
            3,
            "(training 8.0 s in 3 processes, and meanwhile, on a core left free, the figures "
            "whose rows were done; the other figures and the report 1.0 s).",
        ),
    ):
        settings = dataclasses.replace(SETTINGS, jobs=jobs)
        write_report([tanh], settings, 9.0, 8.0, {}, path)
        assert f"**Wall time of the run: 9.0 s** {text}" in path.read_text().splitlines()


def test_compare_uses_the_paper_numbers_of_the_row_given() -> None:
    """Mutant 70: ``compare(row, paper_row)`` compares ``row`` with ``paper_row``'s published
    numbers (its docstring), even where ``row`` has numbers of its own: Table I's Tanh rounds
    against Table III SGD's 1.66 (s.d. 0.81, 5 rounds), by scipy's Welch test."""
    from scipy import stats

    errors = [1.0, 1.2, 0.9, 1.1, 1.0]
    tanh = _row(experiment("I", "Tanh"), errors)
    sgd = _row(experiment("III", "SGD"), [2.0, 2.0])
    paper = sgd.experiment.paper
    assert paper is not None
    result = compare(tanh, sgd)
    assert result is not None
    mean, sd, n = statistics.fmean(errors), statistics.stdev(errors), len(errors)
    expected = stats.ttest_ind_from_stats(
        mean, sd, n, paper.mean, paper.sd, paper.rounds, equal_var=False
    )
    assert abs(result.difference - (mean - paper.mean)) <= 1e-12
    assert abs(result.standard_error - math.sqrt(sd**2 / n + paper.sd**2 / paper.rounds)) <= 1e-12
    assert abs(result.p_value - expected.pvalue) <= 1e-9
    own = compare(tanh)
    assert own is not None and own.difference != result.difference
