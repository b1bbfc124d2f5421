"""The reproduction's report (Markdown), its machine-readable results (JSON) and its summary.

Every number and every verdict in the report is computed from the results, so the report stays
true when the numbers change. Only the explanations are templates, and they cite the numbers of
the variant rows that test them.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import math
import os
import platform
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from minidl._files import naming_file
from minidl.data import DISK_CENTER, DISK_RADIUS
from minidl.experiments.config import (
    CHOICES,
    PROTOCOL,
    CyclicSchedule,
    Experiment,
    Protocol,
    StepSchedule,
    training_key,
)
from minidl.experiments.training import RoundResult, RowResult, make_round_data
from minidl.experiments.welch import critical_t, regularized_beta, welch
from minidl.train import predict

if TYPE_CHECKING:
    from minidl.experiments.runner import RunSettings

__all__ = [
    "SIGNIFICANCE",
    "Comparison",
    "compare",
    "criterion",
    "results_json",
    "summary_table",
    "write_json",
    "write_report",
]

#: A row differs from the paper when Welch's t-test gives a two-sided p-value below this.
SIGNIFICANCE = 0.05

TABLE_TITLES = {
    "I": "Table I: activation functions (cross-entropy, SGD without momentum, 400 epochs)",
    "II": "Table II: optimizers (MSE, Tanh, lr 1e-2, 100 epochs)",
    "III": "Table III: schedulers (cross-entropy, Tanh, lr 1e-2, 400 epochs)",
}

CRITERION = (
    "A row **differs** from the paper when Welch's t-test rejects equal means at the "
    f"{SIGNIFICANCE:.0%} level (two-sided): t = (ours - paper) / SE, where SE = "
    "sqrt(s_ours^2 / n_ours + s_paper^2 / n_paper) is the standard error of the difference of "
    "the two means (s: sample s.d. over the rounds, n: number of rounds), with the "
    "Welch-Satterthwaite degrees of freedom. Each verdict gives the difference, its SE and "
    f"the test's two-sided p-value, below {SIGNIFICANCE:g} exactly where the row differs. "
    '"Within noise" means this test does not tell the two apart, not that they agree.'
)
"""How a row is compared with the paper; the report and the JSON add the rounds on each side,
the line the test draws with them, and how many comparisons the run made (:func:`criterion`)."""


@dataclass(frozen=True)
class Comparison:
    """A row's mean test error against a published one."""

    difference: float
    """ours - paper, in percentage points."""
    standard_error: float
    """Standard error of the difference."""
    p_value: float
    """Two-sided p-value of Welch's t-test of equal means."""

    @property
    def differs(self) -> bool:
        """Whether the difference is significant: ``p_value`` below :data:`SIGNIFICANCE`."""
        return self.p_value < SIGNIFICANCE


def _published_mains(results: Sequence[RowResult]) -> list[RowResult]:
    """The main rows of ``results`` that hold the paper's numbers (all of the paper's rows: a
    main row of one's own may have none), which the report compares with the paper."""
    return [r for r in results if r.experiment.kind == "main" and r.experiment.paper is not None]


def criterion(results: Sequence[RowResult]) -> str:
    """:data:`CRITERION`, the rounds of the comparisons with the paper that ``results`` make
    (each main row and each variant with a paper's number and 2 rounds or more) and the line
    the test draws with them, and how many such comparisons there are, which the test does not
    correct for: where the means are equal, a share :data:`SIGNIFICANCE` of the comparisons
    differ by chance alone.

    The line: with ``n_ours`` and ``n_paper`` rounds, Welch's degrees of freedom lie between
    ``min(n_ours, n_paper) - 1`` (one side's spread dominates) and ``n_ours + n_paper - 2``
    (each side's share of the variance in proportion to its rounds less one), so the test asks
    for :func:`~minidl.experiments.welch.critical_t` of the one to that of the other, in SE; a
    true difference of that size gives a t about as large, which falls short of the line about
    half the time.

    Nothing is added where no row or variant with the paper's number has 2 rounds or more;
    those of one round are left out of the count (and, of the main rows, out of the
    comparisons, see :func:`_differences_section`).
    """
    sides = []
    for row in results:
        paper_row = _paper_row(results, row)
        if paper_row is not None and compare(row, paper_row) is not None:
            paper = paper_row.experiment.paper
            assert paper is not None
            sides.append((len(row.rounds), paper.rounds))
    count = len(sides)
    if count == 0:
        return CRITERION
    low = min(critical_t(ours + paper - 2, SIGNIFICANCE) for ours, paper in sides)
    high = max(critical_t(min(ours, paper) - 1, SIGNIFICANCE) for ours, paper in sides)
    return (
        f"{CRITERION} With {_rounds_range([ours for ours, _ in sides])} here and "
        f"{_rounds_range([paper for _, paper in sides], unit='')} in the paper, the test asks "
        f"for {low:.1f} to {high:.1f} SE, by the two s.d., and misses a true difference of "
        "that size about half the time, and smaller ones more often. "
        f"This run makes {count} such comparison{'s' * (count != 1)} (each row "
        "and each variant with the paper's number), not corrected for their number: at the "
        f"{SIGNIFICANCE:.0%} level, about {SIGNIFICANCE * count:.1f} of them would differ by "
        "chance alone if every mean equalled the paper's."
    )


def _rounds_range(counts: Iterable[int], unit: str = "round") -> str:
    """``"5 rounds"``, ``"1 round"`` or ``"3 to 5 rounds"`` (without the word if ``unit`` is
    empty)."""
    found = sorted(set(counts))
    low, high = found[0], found[-1]
    text = f"{low}" if low == high else f"{low} to {high}"
    return f"{text} {unit}{'s' * (high != 1)}" if unit else text


def _paper_row(results: Sequence[RowResult], row: RowResult) -> RowResult | None:
    """The main row whose published numbers ``row`` is compared with (itself, for a main row)."""
    experiment = row.experiment
    if experiment.paper is not None:
        return row
    for other in results:
        if (
            other.experiment.table == experiment.table
            and other.experiment.label == experiment.variant_of
            and other.experiment.paper is not None
        ):
            return other
    return None


def compare(row: RowResult, paper_row: RowResult | None = None) -> Comparison | None:
    """Compare ``row`` with the paper's numbers of ``paper_row`` (default: its own).

    ``None`` when there is nothing to compare with, or fewer than 2 rounds (no s.d.).
    """
    reference = (paper_row or row).experiment.paper
    if reference is None or len(row.rounds) < 2:
        return None
    test = welch(row.mean, row.sd, len(row.rounds), reference.mean, reference.sd, reference.rounds)
    return Comparison(test.difference, test.standard_error, test.p_value)


# -- JSON ---------------------------------------------------------------------------------------


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _scheduler_settings(experiment: Experiment) -> dict[str, Any] | None:
    schedule = experiment.scheduler
    if isinstance(schedule, StepSchedule):
        return {"gamma": schedule.gamma, "step_size_epochs": schedule.step_size}
    if isinstance(schedule, CyclicSchedule):
        return {
            "mode": "triangular",
            "base_lr": schedule.base_lr,
            "max_lr": schedule.max_lr,
            "step_size_up_epochs": schedule.step_size_up_epochs,
            "step_size_up_batches": schedule.batches_up(experiment.protocol),
        }
    return None


def _row_json(results: Sequence[RowResult], row: RowResult) -> dict[str, Any]:
    experiment = row.experiment
    paper_row = _paper_row(results, row)
    comparison = compare(row, paper_row)
    # A variant's entry carries the numbers of the paper's row it is compared with.
    published = None if paper_row is None else paper_row.experiment.paper
    return {
        "table": experiment.table,
        "label": experiment.label,
        "kind": experiment.kind,
        "variant_of": experiment.variant_of,
        "hypothesis": experiment.hypothesis or None,
        "activation": experiment.activation,
        "activations": list(experiment.activations),
        "loss": experiment.loss,
        "mse_reduction": experiment.mse_reduction if experiment.loss == "mse" else None,
        "optimizer": experiment.optimizer,
        "lr": experiment.lr,
        "momentum": experiment.momentum,
        "scheduler": experiment.scheduler_name,
        "scheduler_settings": _scheduler_settings(experiment),
        "optimizer_settings": (
            {"rho": experiment.adadelta_rho, "eps": experiment.adadelta_eps}
            if experiment.optimizer.startswith("adadelta")
            else None
        ),
        "epochs": len(row.rounds[0].validation_curve),
        "sizes": list(experiment.protocol.sizes),
        "batch_size": experiment.protocol.batch_size,
        "rounds": len(row.rounds),
        "seeds": [dataclasses.asdict(r.seeds) for r in row.rounds],
        "test_errors": row.test_errors,
        "mean": row.mean,
        "sd": _number(row.sd),
        "train_errors": row.train_errors,
        "paper_mean": None if published is None else published.mean,
        "paper_sd": None if published is None else published.sd,
        "differs_from_paper": None if comparison is None else comparison.differs,
        "difference_from_paper": None if comparison is None else comparison.difference,
        "standard_error": None if comparison is None else comparison.standard_error,
        "p_value": None if comparison is None else comparison.p_value,
        "compared_with": None if paper_row is None else paper_row.experiment.label,
        "validation_curves": [list(r.validation_curve) for r in row.rounds],
        "train_loss_curves": [list(r.train_loss) for r in row.rounds],
        "lr_curve": list(row.rounds[0].lr_curve),
        "batch_lr": _batch_lr(row.rounds[0]),
        "seconds": row.seconds,
    }


def _batch_lr(first: RoundResult) -> list[float] | None:
    """The first round's rate at every batch, as Fig. 3 draws it, for a schedule stepped every
    batch (:attr:`minidl.train.History.batch_lr`); ``None`` for the others, whose rate
    ``lr_curve`` gives (one value an epoch)."""
    return list(first.batch_lr) or None


def _check_rounds(function: str, results: Sequence[RowResult]) -> None:
    """Refuse a row of no rounds, whose mean and s.d. do not exist."""
    for row in results:
        if not row.rounds:
            raise ValueError(
                f"{function}: row {row.experiment.key!r} has no rounds; expected at least 1 "
                "round per row"
            )


def results_json(
    results: Sequence[RowResult],
    settings: RunSettings,
    wall_seconds: float,
    training_seconds: float,
    figures: dict[str, str],
) -> dict[str, Any]:
    """The run as a JSON-ready dictionary: settings, choices, and one entry per row.

    Raises:
        ValueError: a row of no rounds.
    """
    _check_rounds("results_json", results)
    protocol = _shared_protocol(results)
    rows = [_row_json(results, row) for row in results]
    if protocol is None:
        for entry, row in zip(rows, results, strict=True):
            entry["protocol"] = dataclasses.asdict(row.experiment.protocol)
    return {
        "command": settings.command,
        "base_seed": settings.base_seed,
        "rounds": settings.rounds,
        "quick": settings.quick,
        "epochs_override": settings.epochs_override,
        "jobs": settings.jobs,
        "wall_time_s": wall_seconds,
        "training_time_s": training_seconds,
        "created": _now(),
        "machine": _machine(),
        # (the rows' protocol, where they share one, as every run of `minidl reproduce`'s
        # rows do; None where they do not, each row's then in its entry)
        "protocol": None if protocol is None else dataclasses.asdict(protocol),
        "choices": dataclasses.asdict(CHOICES),
        "criterion": criterion(results),
        "figures": figures,
        "rows": rows,
    }


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (a diverged loss) replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def write_json(document: dict[str, Any], path: Path) -> None:
    """Write ``document`` as indented, strict JSON: a non-finite number (e.g. the loss of a
    diverged run) is written as ``null``."""
    text = json.dumps(_finite(document), indent=1, allow_nan=False) + "\n"
    with naming_file(path):
        path.write_text(text)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}, training on 1 torch thread"
    )


# -- text helpers ---------------------------------------------------------------------------------


def _mean_sd(mean: float, sd: float) -> str:
    return f"{mean:.2f} ({'-' if math.isnan(sd) else f'{sd:.2f}'})"


def _ours(row: RowResult) -> str:
    return _mean_sd(row.mean, row.sd)


def _paper(row: RowResult) -> str:
    paper = row.experiment.paper
    return "-" if paper is None else _mean_sd(paper.mean, paper.sd)


def _between(variant: RowResult, row: RowResult) -> tuple[str, Comparison]:
    """The test of a variant's test errors against ``row``'s (both of 2 rounds or more): paired
    where their rounds have the same seeds (same data, weights and shuffles, as every row of a
    run has: see :func:`_paired`), Welch's otherwise. (Welch's alone took a variant 1.0 point
    below the row in every round, p = 1.5e-6 paired, for one not measurably apart, p = 0.07.)
    The test's name, as the report gives it, comes first."""
    paired = _paired(variant, variant.test_errors, row, row.test_errors)
    if paired is not None:
        return f"paired over the {len(row.rounds)} rounds", paired
    test = welch(variant.mean, variant.sd, len(variant.rounds), row.mean, row.sd, len(row.rounds))
    return "Welch", Comparison(test.difference, test.standard_error, test.p_value)


def _paired(
    first: RowResult,
    first_values: Sequence[float],
    second: RowResult,
    second_values: Sequence[float],
) -> Comparison | None:
    """The paired t-test of two runs' values per round: the mean of the differences, its
    standard error and the two-sided p-value (``n - 1`` degrees of freedom), where the two runs
    have 2 rounds or more, as many, with the same seeds, so that the round-to-round noise they
    share cancels; else ``None``. Differences all equal give p = 1 for 0, else 0."""
    n = len(first_values)
    if n < 2 or n != len(second_values) or len(first.rounds) != len(second.rounds):
        return None
    if any(a.seeds != b.seeds for a, b in zip(first.rounds, second.rounds, strict=True)):
        return None
    differences = [a - b for a, b in zip(first_values, second_values, strict=True)]
    mean, spread = statistics.fmean(differences), statistics.stdev(differences)
    standard_error = spread / math.sqrt(n)
    if spread == 0.0:
        return Comparison(mean, 0.0, 1.0 if mean == 0.0 else 0.0)
    t = mean / standard_error
    degrees = n - 1
    return Comparison(
        mean, standard_error, regularized_beta(degrees / (degrees + t * t), degrees / 2, 0.5)
    )


def _tested(difference: float, standard_error: float, p_value: float) -> str:
    """A comparison's numbers as the report writes them: ``+0.48, SE 0.21, p = 0.06``, so that
    its verdict can be checked against the rule (a difference of about 2.3 to 2.8 SE is on
    either side of the line with 5 rounds a side, which the p-value tells)."""
    return f"{difference:+.2f}, SE {standard_error:.2f}, {_p(p_value)}"


def _verdict(comparison: Comparison | None) -> str:
    if comparison is None:
        return "n/a"
    word = "**differs**" if comparison.differs else "within noise"
    numbers = _tested(comparison.difference, comparison.standard_error, comparison.p_value)
    return f"{word} ({numbers})"


def _rounds(row: RowResult) -> str:
    return ", ".join(f"{e:.1f}" for e in row.test_errors)


def _settings(experiment: Experiment) -> str:
    parts = [f"act {experiment.activation}", f"{experiment.loss}"]
    if experiment.loss == "mse" and experiment.mse_reduction != "paper":
        parts[-1] += f" ({experiment.mse_reduction})"
    optimizer = experiment.optimizer.replace("adadelta", "ADADELTA").replace("sgd", "SGD")
    parts.append(f"{optimizer} lr {experiment.lr:g}")
    if experiment.optimizer.startswith("adadelta"):
        parts.append(f"rho {experiment.adadelta_rho:g}, eps {experiment.adadelta_eps:g}")
    if experiment.momentum:
        parts.append(f"momentum {experiment.momentum:g}")
    schedule = experiment.scheduler
    if isinstance(schedule, StepSchedule):
        parts.append(f"step decay x{schedule.gamma:g} every {schedule.step_size} epochs")
    elif isinstance(schedule, CyclicSchedule):
        parts.append(
            f"CLR {schedule.base_lr:g}-{schedule.max_lr:g}, half-cycle "
            f"{schedule.step_size_up_epochs} epochs"
        )
    return ", ".join(parts)


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return out


def summary_table(results: Sequence[RowResult]) -> str:
    """Paper vs ours for the tables' main rows, as plain text for the terminal: the verdict is
    the report's, DIFFERS or "within noise" (the test does not tell the two apart), or n/a
    with fewer than 2 rounds or no number of the paper.

    Raises:
        ValueError: a row of no rounds.
    """
    _check_rounds("summary_table", results)
    lines = [
        f"{'table':<6}{'row':<22}{'paper mean (s.d.)':>19}{'ours mean (s.d.)':>19}  verdict",
    ]
    for row in results:
        if row.experiment.kind != "main":
            continue
        comparison = compare(row)
        verdict = (
            "n/a" if comparison is None else ("DIFFERS" if comparison.differs else "within noise")
        )
        lines.append(
            f"{row.experiment.table:<6}{row.experiment.label:<22}{_paper(row):>19}"
            f"{_ours(row):>19}  {verdict}"
        )
    return "\n".join(lines)


#: A mean validation error between this and 100 minus this (in %) is near chance: half the
#: points of the disk data set lie inside the disk (its area is pi / (2 pi) = 1/2), so a
#: constant answer errs on about 50% of them. (Above, in a row that diverged, the NaN outputs
#: count as errors.)
NEAR_CHANCE = 40.0


def _curve_trend(row: RowResult) -> str:
    """How the mean validation error moved over the last quarter of training (a description).

    The error is averaged over each half of the last quarter (an eighth of training each, at
    least 5 epochs, fewer for short runs), and the later half compared with the earlier, so
    that the epoch-to-epoch jitter cannot make a trend (5 epochs a side did not hold it: Table
    I's SELU, whose means over 25 epochs stay within 2.25% to 2.74% from epoch 200 on, was
    "still falling" from 2.66% over epochs 296-300 to 2.16% over the last 5, and flat at 2.25%
    over its last 50); a change counts when it exceeds 0.25 points and 5% of the error.
    """
    curves = [r.validation_curve for r in row.rounds]
    epochs = len(curves[0])
    if epochs < 8:
        return ""
    window = max(epochs // 8, min(5, epochs // 4))
    mark = epochs - window
    at_mark = statistics.fmean(statistics.fmean(c[mark - window : mark]) for c in curves)
    at_end = statistics.fmean(statistics.fmean(c[-window:]) for c in curves)
    best = statistics.fmean(min(c) for c in curves)
    change = at_end - at_mark
    threshold = max(0.25, 0.05 * at_mark)
    if change < -threshold:
        trend = "still falling when training stopped"
    elif change > threshold:
        trend = "rising at the end"
    else:
        trend = "flat over the last quarter"
    chance = (
        "; near chance level, where a constant answer errs on about 50%"
        if NEAR_CHANCE <= at_end <= 100 - NEAR_CHANCE
        else "; a diverged model's NaN outputs count as errors"
        if at_end > 100 - NEAR_CHANCE and _diverged(row)
        else ""
    )
    return (
        f"mean validation error {at_mark:.2f}% over epochs {mark - window + 1}-{mark}, "
        f"{at_end:.2f}% over the last {window} ({trend}{chance}); the best epoch of each round "
        f"averaged {best:.2f}%."
    )


def _diverged(row: RowResult) -> int:
    """Rounds whose training loss became non-finite."""
    return sum(any(not math.isfinite(v) for v in r.train_loss) for r in row.rounds)


# -- the report ---------------------------------------------------------------------------------


#: The decisions that are each row's parameter, not run as variants, with the row's own value
#: (``None`` where the decision does not apply to the row): a row of one's own given another
#: is named beside the decision (see :func:`_choices_section`).
_ROW_VALUES: dict[str, Callable[[Experiment], object]] = {
    "adadelta_rho": lambda e: e.adadelta_rho if e.optimizer.startswith("adadelta") else None,
    "adadelta_eps": lambda e: e.adadelta_eps if e.optimizer.startswith("adadelta") else None,
    "new_data_per_round": lambda e: e.protocol.new_data_per_round,
}


def _choices_section(results: Sequence[RowResult]) -> list[str]:
    """Every decision with its reason; where rows of ``results`` (of one's own) trained with
    another value of a decision that is a row's parameter, those rows and their values (the
    decision read as the run's, where it was not)."""
    lines = ["## Decisions on what the paper leaves open", ""]
    for field in dataclasses.fields(CHOICES):
        value = getattr(CHOICES, field.name)
        line = f"- `{field.name} = {value!r}`: {field.metadata['doc']}"
        read = _ROW_VALUES.get(field.name)
        others = [
            f"Table {row.experiment.table} {row.experiment.label} ({own!r})"
            for row in results
            if read is not None and (own := read(row.experiment)) is not None and own != value
        ]
        if others:
            line += f" **Rows trained with another value:** {', '.join(others)}."
        lines.append(line)
    return [*lines, ""]


def _shared_protocol(results: Sequence[RowResult]) -> Protocol | None:
    """The protocol of every row of ``results`` (the default one for no row), or ``None``
    where rows built through the API have protocols of their own that differ."""
    protocols = {row.experiment.protocol for row in results}
    if not protocols:
        return PROTOCOL
    return protocols.pop() if len(protocols) == 1 else None


def _protocol_section(settings: RunSettings, results: Sequence[RowResult]) -> list[str]:
    epochs = (
        f"**every row trained for {settings.epochs_override} epochs only"
        + (" (quick mode)**" if settings.quick else ", not the epochs of the paper**")
        if settings.epochs_override is not None
        else "epochs as each table says"
    )
    # One protocol, or each with the rows that trained with it ("Table I Tanh: Network ...").
    shared = _shared_protocol(results)
    described: list[tuple[Protocol, str]] = [(shared, "")] if shared is not None else []
    if shared is None:
        groups: dict[Protocol, list[str]] = {}
        for row in results:
            label = f"Table {row.experiment.table} {row.experiment.label}"
            groups.setdefault(row.experiment.protocol, []).append(label)
        described = [(p, f"{', '.join(labels)}: ") for p, labels in groups.items()]
    network = []
    for p, rows in described:
        network += [
            f"- {rows}Network {'-'.join(map(str, p.sizes))} (Xavier-normal weights, N(0, 1) "
            f"biases), batches of {p.batch_size}, training set reshuffled every epoch (the "
            f'paper: "shuffled at the beginning of each round"), {epochs}, {p.dtype}.',
            f"- {rows}Data: {p.n_train} training, {p.n_validation} validation and {p.n_test} "
            "test points, uniform in [0, 1]^2, label 1 inside the disk of centre (0.5, 0.5) and "
            "radius 1/sqrt(2 pi), all normalised with the training set's mean and s.d.; "
            + (
                "a new data set for every round."
                if p.new_data_per_round
                else "**round 1's data set in every round** (only the initial weights and the "
                "shuffles change)."
            ),
        ]
    return [
        "## Protocol",
        "",
        *network,
        f"- {settings.rounds} round(s) per row, numbered from 1 here and in the figures and "
        "from 0 in `results.json`: round r takes its data, initial-weight and shuffle seeds "
        f"from sha256(base seed {settings.base_seed}, r - 1, stream) "
        "(`minidl.experiments.seeds`)"
        + (
            " (its data seed round 1's where the protocol keeps one data set for every round)"
            if any(not row.experiment.protocol.new_data_per_round for row in results)
            else ""
        )
        + ", so a run is reproducible bit for bit and round r is the "
        "same in every row. Rows that train identically (a 'without effect' variant and the row "
        "it equals) are trained once.",
        "- Test error: % of misclassified test points after the last epoch; mean and sample "
        "s.d. over the rounds. The validation set only gives the curves (no early stopping).",
        "",
    ]


def _table_section(
    results: Sequence[RowResult],
    table: str,
    figures: dict[str, str],
    epochs_override: int | None = None,
) -> list[str]:
    rows = [r for r in results if r.experiment.table == table]
    if not rows:
        return []
    title = TABLE_TITLES[table]
    if epochs_override is not None:  # (the title gives the paper's epochs: say what ran)
        title = f"{title[:-1]}; here {epochs_override} epochs only)"
    lines = [f"## {title}", ""]
    mains = [r for r in rows if r.experiment.kind == "main"]
    lines += _table(
        [
            "Row",
            "Settings",
            "Paper mean (s.d.) %",
            "Ours mean (s.d.) %",
            "Ours per round %",
            "Ours train error, mean %",
            "Verdict (ours - paper, SE, p)",
        ],
        [
            [
                r.experiment.label,
                _settings(r.experiment),
                _paper(r),
                _ours(r),
                _rounds(r),
                f"{statistics.fmean(r.train_errors):.2f}",
                _verdict(compare(r)),
            ]
            for r in mains
        ],
    )
    variants = [r for r in rows if r.experiment.kind == "variant"]
    if variants:
        lines += ["", f"Variants of Table {table} (run to test the explanations below):", ""]
        lines += _table(
            [
                "Variant",
                "Tests",
                "Settings",
                "Ours mean (s.d.) %",
                "Ours per round %",
                "Vs the paper's row (ours - paper, SE, p)",
            ],
            [
                [
                    r.experiment.label,
                    r.experiment.hypothesis,
                    _settings(r.experiment),
                    _ours(r),
                    _rounds(r),
                    _verdict(compare(r, _paper_row(results, r))),
                ]
                for r in variants
            ],
        )
    name = f"table{table}"
    if name in figures:
        lines += ["", f"![Validation error per epoch, Table {table}]({figures[name]})"]
        # The figure draws each training once (minidl.experiments.figures.table_figure).
        first: dict[Experiment, RowResult] = {}
        for r in (*mains, *variants):
            first.setdefault(training_key(r.experiment), r)
        hidden = []
        for r in (*mains, *variants):  # (a main row of one's own may train as another)
            drawn = first[training_key(r.experiment)]
            if drawn is not r:
                hidden.append(f"'{r.experiment.label}' (the curve of '{drawn.experiment.label}')")
        if hidden:
            lines += [
                "",
                "Not drawn, as they train exactly as a row drawn: " + "; ".join(hidden) + ".",
            ]
    return [*lines, ""]


def _figures_section(results: Sequence[RowResult], figures: dict[str, str]) -> list[str]:
    lines = ["## Figures", ""]
    captions = {
        "fig1": "Fig. 1: validation error per epoch with MSE (the paper's reduction, summed "
        "over the two outputs, and PyTorch's, averaged over them too) and with cross-entropy "
        "(Tanh, SGD, lr 0.1); line: mean over rounds, band: min to max.",
        "fig2": "Fig. 2: top, the test set of round 1 (green dots: label 1, red triangles: "
        "label 0); bottom, the Tanh network of Table I (round 1) on it: correctly classified "
        "(green dots) and misclassified (red crosses) points, its decision boundary (black) "
        "and the true circle (dashed).",
        "fig3": "Fig. 3: the learning rate of every batch under step decay and CLR, over the "
        "whole training (top) and over the first epochs (bottom), as recorded during training.",
    }
    for name, caption in captions.items():
        if name in figures:
            lines += [f"![{caption}]({figures[name]})", "", caption, ""]
            if name == "fig2":
                lines += _figure_2_errors(results)
    fig1 = [r for r in results if r.experiment.table == "Fig. 1"]
    if fig1:
        lines += _table(
            [
                "Fig. 1 run",
                "Settings",
                "Ours test error mean (s.d.) %",
                "Per round %",
                "Rounds diverged",
            ],
            [
                [
                    r.experiment.label,
                    _settings(r.experiment),
                    _ours(r),
                    _rounds(r),
                    f"{_diverged(r)} of {len(r.rounds)}",
                ]
                for r in fig1
            ],
        )
        lines.append("")
    # (A run of Table II alone has neither Fig. 1-3 nor Fig. 1's runs: no empty section.)
    return lines if len(lines) > 2 else []


def _figure_2_errors(results: Sequence[RowResult]) -> list[str]:
    """Where the errors of Fig. 2's network lie, against the paper's description of them.

    The paper: "all the errors made by the network are at the border of the disk". The measure
    is the distance of each misclassified test point (before normalisation) from the circle,
    ``| ||p - c|| - r |``: the largest, and the share of all the test points that lie as close
    to the circle as that (a band that holds few of the points and every error). Given for
    round 1, the network that Fig. 2 draws (Table I's Tanh row), and as a range over the rounds
    with an error; nothing without that row.
    """
    rows = [r for r in results if r.experiment.table == "I" and r.experiment.label == "Tanh"]
    if not rows:
        return []
    row = rows[0]
    center = torch.tensor(DISK_CENTER, dtype=torch.float64)
    found: list[tuple[int, float, float] | None] = []  # (errors, farthest, share in %)
    for result in row.rounds:
        data = make_round_data(row.experiment, result.seeds)
        distance = ((data.test.raw.to(torch.float64) - center).norm(dim=1) - DISK_RADIUS).abs()
        wrong = predict(result.model, data.test.x) != data.test.y
        if not bool(wrong.any()):
            found.append(None)
            continue
        farthest = float(distance[wrong].max())
        share = 100.0 * float((distance <= farthest).to(torch.float64).mean())
        found.append((int(wrong.sum()), farthest, share))
    first = found[0]
    text = (
        'The paper: "all the errors made by the network are at the border of the disk". Ours: '
        + (
            "in round 1, drawn above, no test point is misclassified"
            if first is None
            else f"in round 1, drawn above, the {first[0]} misclassified test point"
            + ("s lie" if first[0] != 1 else " lies")
            + f" at most {first[1]:.3f} from the circle (radius {DISK_RADIUS:.3f}), in a band "
            f"around it that holds {first[2]:.1f}% of the {row.experiment.protocol.n_test} test "
            "points"
        )
    )
    with_errors = [f for f in found if f is not None]
    if len(with_errors) > 1:
        rounds = (
            f"the {len(found)} rounds"
            if len(with_errors) == len(found)
            else f"the {len(with_errors)} rounds of {len(found)} with an error"
        )
        text += (
            f"; in {rounds}, at most {min(f[1] for f in with_errors):.3f} to "
            f"{max(f[1] for f in with_errors):.3f} from it, in bands that hold "
            f"{min(f[2] for f in with_errors):.1f}% to {max(f[2] for f in with_errors):.1f}% of "
            "the test points"
        )
    return [text + ".", ""]


def _explain(
    results: Sequence[RowResult],
    row: RowResult,
    comparison: Comparison,
    corrected: tuple[float, int] | None = None,
) -> list[str]:
    """The explanation of a main row that differs from the paper: the difference, each variant
    that tests an explanation, the paper's repeats of the training, our curve, and a conclusion.

    ``corrected`` is the row's p-value after Holm's correction for the main rows compared and
    their count (:func:`_holm_sentence`), written beside its own where more than one was
    compared.
    """
    experiment = row.experiment
    paper = experiment.paper
    assert paper is not None
    direction = "higher" if comparison.difference > 0 else "lower"
    lines = [
        f"### Table {experiment.table}, {experiment.label}",
        "",
        f"Paper {paper.mean:.2f} (s.d. {paper.sd:.2f}), ours {row.mean:.2f} (s.d. "
        f"{row.sd:.2f}): ours is {abs(comparison.difference):.2f} points {direction}, "
        + (
            f"{abs(comparison.difference) / comparison.standard_error:.1f} SE "
            f"({_p(comparison.p_value)}"
            + (
                f"; {_p(corrected[0])} after Holm's correction for the {corrected[1]} rows"
                if corrected is not None and corrected[1] > 1
                else ""
            )
            + ")."
            if comparison.standard_error
            else "with no spread on either side."
        ),
        "",
    ]
    variants = [
        r
        for r in results
        if r.experiment.kind == "variant"
        and r.experiment.table == experiment.table
        and r.experiment.variant_of == experiment.label
    ]
    # A variant explains the difference when it is within noise of the paper, closer to it than
    # our row, and measurably apart from our row (_between's test of the two): one within
    # noise of the paper but not measurably closer to it than our row is so through the spread
    # of its rounds, not through its mean (a variant at our row's mean, spread widely, would do).
    explained: list[RowResult] = []
    not_closer: list[RowResult] = []
    for variant in variants:
        result = compare(variant, row)
        if result is None:  # a variant run once: no standard deviation to compare with
            lines.append(
                f"- Hypothesis: {variant.experiment.hypothesis}. Variant "
                f"'{variant.experiment.label}' gives {variant.mean:.2f} in one round: no "
                "comparison (fewer than 2 rounds)."
            )
            continue
        numbers = _tested(result.difference, result.standard_error, result.p_value)
        verdict = (
            f"within noise of the paper ({numbers})"
            if not result.differs
            else f"still differs from the paper ({numbers})"
        )
        closer = abs(result.difference) < abs(comparison.difference)
        if closer:
            how, apart = _between(variant, row)
            moved = apart.p_value < SIGNIFICANCE
            closeness = (
                "closer to the paper than our row"
                + (
                    " and measurably apart from it"
                    if moved
                    else ", but not measurably apart from it"
                )
                + f" ({how}: {_tested(apart.difference, apart.standard_error, apart.p_value)})"
            )
        else:
            moved = False
            closeness = "no closer to the paper than our row"
        lines.append(
            f"- Hypothesis: {variant.experiment.hypothesis}. Variant '{variant.experiment.label}'"
            f" gives {variant.mean:.2f} (s.d. {variant.sd:.2f}), per round "
            f"{_rounds(variant)}: {verdict}, {closeness}."
        )
        if not result.differs:
            (explained if moved else not_closer).append(variant)
    repeats = _paper_repeats(results, row)
    agreeing_repeats = []
    for other, via in repeats:
        other_paper = other.experiment.paper
        assert other_paper is not None
        test = welch(
            row.mean, row.sd, len(row.rounds), other_paper.mean, other_paper.sd, other_paper.rounds
        )
        within = test.p_value >= SIGNIFICANCE
        lines.append(
            f"- The paper measured this same training again as Table {other.experiment.table} "
            f"'{other.experiment.label}' ({_paper(other)})"
            + ("" if via is None else f" (if {via.experiment.hypothesis})")
            + ": ours is "
            + ("within noise of" if within else "also different from")
            + f" that ({_tested(test.difference, test.standard_error, test.p_value)})."
        )
        if within and via is None:
            agreeing_repeats.append(other)
    trend = _curve_trend(row)
    if trend:
        lines.append(f"- Our curve: {trend}")
    if _diverged(row):
        lines.append(f"- {_diverged(row)} of our rounds diverged (non-finite training loss).")
    lines.append("")
    if explained:
        kinds = {variant.experiment.fault for variant in explained}
        # Other readings of an open point of the paper (e.g. the CLR bounds) that do not explain
        # the difference: the paper's number is then inconsistent only with the readings run,
        # and only with those that differ from it.
        readings = [v for v in variants if not v.experiment.fault and v not in explained]
        if kinds == {True} and readings:
            verdict = (
                "The paper's number is consistent with the published code's fault rather than "
                "with the method as run here: "
                + _readings_verdict(readings, not_closer, row)
                + "; the paper does not say enough to rule out a reading not run here."
            )
        elif kinds == {True}:
            verdict = (
                "The paper's number is consistent with the published code's fault rather than "
                "with the method as the paper describes it."
            )
        elif kinds == {False}:
            verdict = "The paper's number is consistent with " + (
                "that reading of the paper."
                if len(explained) == 1
                else "those readings of the paper."
            )
        else:
            verdict = "Either explanation fits; this run cannot tell them apart."
        lines.append(
            "**Conclusion:** the difference is accounted for if "
            + "; or if ".join(v.experiment.hypothesis for v in explained)
            + ". "
            + verdict
        )
    elif agreeing_repeats:
        # (within noise is not agreement: between the paper's numbers, the difference is the
        # paper's own spread; outside them, this run cannot tell which it is)
        paper = row.experiment.paper
        assert paper is not None
        means = [paper.mean] + [
            other.experiment.paper.mean
            for other in agreeing_repeats
            if other.experiment.paper is not None
        ]
        named = " and ".join(f"{mean:.2f}" for mean in means)
        # (compared as printed, to the hundredth: a mean of 1.6600000000000001, printed 1.66,
        # lies between 1.06 and 1.66 as the reader sees them)
        printed = [float(f"{mean:.2f}") for mean in means]
        if min(printed) <= float(f"{row.mean:.2f}") <= max(printed):
            lines.append(
                f"**Conclusion:** ours lies between the paper's own measurements of this "
                f"training ({named}) and is within noise of its repeat, so the difference is "
                "within the spread of the paper's repeated measurements (see the last section), "
                "not a sign of a different method."
            )
        else:
            lines.append(
                "**Conclusion:** ours is within noise of the paper's own repeat of this "
                f"training, though not between the paper's measurements of it ({named}): this "
                "run cannot tell the difference from the spread between the paper's repeated "
                "measurements (see the last section), nor show a different method."
            )
    elif not_closer:
        names = ", ".join(f"'{v.experiment.label}'" for v in not_closer)
        lines.append(
            f"**Conclusion:** none of the variants run here explains the difference: {names} "
            + ("is" if len(not_closer) == 1 else "are")
            + " within noise of the paper, but not measurably closer to it than our row; the "
            "difference stays unexplained by this run."
        )
    elif variants:
        lines.append(
            "**Conclusion:** none of the variants run here brings the row within noise of the "
            "paper; the difference stays unexplained by this run."
        )
    else:
        lines.append(
            "**Conclusion:** no variant of this run tests an explanation for this row; the "
            "difference stays unexplained by this run."
        )
    return [*lines, ""]


def _readings_verdict(
    readings: Sequence[RowResult], not_closer: Sequence[RowResult], row: RowResult
) -> str:
    """What the readings of the paper that explain nothing say against ``row``'s paper number:
    those that differ from it, those within noise of it but not measurably closer to it than
    ``row`` (see :func:`_explain`), and those of one round, which are not compared."""

    def names(group: Sequence[RowResult]) -> str:
        return "; ".join(f"'{v.experiment.label}'" for v in group)

    def plural(group: Sequence[RowResult], one: str, more: str) -> str:
        return one if len(group) == 1 else more

    near = [v for v in readings if v in not_closer]
    once = [v for v in readings if compare(v, row) is None]
    differ = [v for v in readings if v not in near and v not in once]
    parts = [
        "our row and the other "
        + plural(differ, "reading", "readings")
        + f" of the paper tried ({names(differ)}) differ from it"
        if differ
        else "our row differs from it"
    ]
    if near:
        parts.append(
            f"the {plural(near, 'reading', 'readings')} ({names(near)}) "
            + plural(near, "is", "are")
            + " within noise of it, but not measurably closer to it than our row"
        )
    if once:
        parts.append(
            f"the {plural(once, 'reading', 'readings')} ({names(once)}) ran one round, not compared"
        )
    return "; ".join(parts)


def _paper_repeats(
    results: Sequence[RowResult], row: RowResult
) -> list[tuple[RowResult, RowResult | None]]:
    """Other main rows whose published numbers measure the same training as ``row``.

    Each comes with ``None`` when it is the same training as described, or with the fault
    variant through which it is (e.g. a schedule without effect is plain SGD).
    """
    key = training_key(row.experiment)
    found: list[tuple[RowResult, RowResult | None]] = []
    for other in results:
        if other.experiment.kind == "figure" or other is row:
            continue
        if training_key(other.experiment) != key:
            continue
        paper_row = _paper_row(results, other)
        if (
            paper_row is not None
            and paper_row.experiment.key != row.experiment.key
            and (other.experiment.kind == "main" or other.experiment.fault)
            and all(f.experiment.key != paper_row.experiment.key for f, _ in found)
        ):
            found.append((paper_row, None if other.experiment.kind == "main" else other))
    return found


def _differences_section(
    results: Sequence[RowResult], epochs_override: int | None = None
) -> list[str]:
    lines = ["## Where we differ from the paper", "", criterion(results), ""]
    if epochs_override is not None:
        lines += [
            f"**Every row trained for {epochs_override} epochs only, not the epochs of the "
            "paper: the comparisons below test the pipeline, not the paper's numbers.**",
            "",
        ]
    unpublished = [r for r in results if r.experiment.kind == "main" and r.experiment.paper is None]
    if unpublished:  # (main rows of one's own, given no PaperResult)
        labels = ", ".join(f"Table {r.experiment.table} {r.experiment.label}" for r in unpublished)
        lines += [f"({labels}: no number of the paper to compare with.)", ""]
    published = _published_mains(results)
    comparisons = [(r, compare(r)) for r in published]
    if published and all(c is None for _, c in comparisons):
        lines += ["(Fewer than 2 rounds: no standard deviation, so no comparison.)", ""]
        # (the rest as with more rounds: Fig. 1's and the activations alone say what one round
        # shows, and the paper's numbers are compared with each other whatever ours are)
        return [*lines, *_differences_beside(results)]
    once = [r for r, c in comparisons if c is None]
    if once:  # (rows of one round beside rows of more, as results put together by hand give)
        labels = ", ".join(f"Table {r.experiment.table} {r.experiment.label}" for r in once)
        lines += [
            f"({labels}: fewer than 2 rounds, no standard deviation, so not compared; the "
            "counts below are of the other rows.)",
            "",
        ]
    mains = [r for r, c in comparisons if c is not None]
    comparisons = [(r, c) for r, c in comparisons if c is not None]
    if not mains:  # (every main row one's own, or none given: no verdict to count)
        lines += ["(No row holds the paper's numbers: nothing is compared with the paper.)", ""]
        return [*lines, *_differences_beside(results)]
    lines += _paper_sd_reading(results)
    differing = [(r, c) for r, c in comparisons if c is not None and c.differs]
    agreeing = [r for r, c in comparisons if c is not None and not c.differs]
    lines.append(_differing_count(differing, agreeing, len(mains)))
    lines.append("")
    corrected = dict(
        zip(
            (id(r) for r, _ in comparisons),
            _holm([c.p_value for _, c in comparisons if c is not None]),
            strict=True,
        )
    )
    if differing and len(mains) > 1:
        lines += [_holm_sentence(differing, corrected, len(mains)), ""]
    for row, comparison in differing:
        assert comparison is not None
        lines += _explain(results, row, comparison, (corrected[id(row)], len(mains)))
    return [*lines, *_differences_beside(results)]


def _differences_beside(results: Sequence[RowResult]) -> list[str]:
    """The parts of the differences section besides the main rows' verdicts: the activations
    alone, Figure 1's comparison and the paper's consistency."""
    return [
        *_activations_alone(results),
        *_figure_1_comparison(results),
        *_paper_consistency(results),
    ]


def _activations_alone(results: Sequence[RowResult]) -> list[str]:
    """Table I's activations alone against the paper's reason for mixing them with Tanh.

    The paper: Sigmoid and ReLU "used alone gave really variable performances, thus they were
    used in combination with Tanh". Each variant that uses alone the activation of a main row
    that mixes it (all three hidden layers the same) is set beside that row and the paper's
    number, its rounds given, and near chance said where its mean is (:data:`NEAR_CHANCE`);
    nothing without such a variant.
    """
    mains = {
        r.experiment.label: r
        for r in results
        if r.experiment.kind == "main"
        and r.experiment.table == "I"
        and len(set(r.experiment.activations)) > 1
    }
    alone = [
        r
        for r in results
        if r.experiment.kind == "variant"
        and r.experiment.table == "I"
        and r.experiment.variant_of in mains
        and len(set(r.experiment.activations)) == 1
    ]
    if not alone:
        return []
    lines = [
        "### Table I, the activations alone",
        "",
        'The paper: Sigmoid and ReLU "used alone gave really variable performances, thus they '
        'were used in combination with Tanh", without saying where. Ours, each alone (in the '
        "three hidden layers), beside our mixed row and the paper's:",
        "",
    ]
    for row in alone:
        main = mains[row.experiment.variant_of or ""]
        chance = (
            "; near chance level, where a constant answer errs on about 50%"
            if NEAR_CHANCE <= row.mean <= 100 - NEAR_CHANCE
            else ""
        )
        diverged = _diverged(row)
        lines.append(
            f"- {row.experiment.label}: {_ours(row)}, per round {_rounds(row)}{chance}"
            + (f"; {diverged} of {len(row.rounds)} rounds diverged" if diverged else "")
            + f". Our {main.experiment.label} row ({', '.join(main.experiment.activations)}): "
            f"{_ours(main)}; the paper's: {_paper(main)}."
        )
    return [*lines, ""]


def _paper_sd_reading(results: Sequence[RowResult]) -> list[str]:
    """Whether a verdict depends on reading the paper's s.d. as sample s.d.

    The paper does not say whether its s.d. divide the squared deviations of its rounds by
    their number less one (the sample s.d., as ours) or by their number (the population s.d.,
    ``sqrt((n - 1) / n)`` of the sample s.d. of the same rounds). The comparisons read them as
    sample s.d.; each is made again with the paper's s.d. read the other way, its sample s.d.
    ``sqrt(n / (n - 1))`` times as large, and the verdicts that change are named (nothing
    when no comparison is made).
    """
    tested = 0
    changed = []
    counts = set()
    for row in results:
        paper_row = _paper_row(results, row)
        comparison = None if paper_row is None else compare(row, paper_row)
        if paper_row is None or comparison is None:
            continue
        paper = paper_row.experiment.paper
        assert paper is not None
        tested += 1
        counts.add(paper.rounds)
        other = welch(
            row.mean,
            row.sd,
            len(row.rounds),
            paper.mean,
            paper.sd * math.sqrt(paper.rounds / (paper.rounds - 1)),
            paper.rounds,
        )
        if (other.p_value < SIGNIFICANCE) != comparison.differs:
            changed.append(
                f"Table {row.experiment.table} {row.experiment.label} would "
                + ("differ" if other.p_value < SIGNIFICANCE else "be within noise")
                + f" ({_p(other.p_value)})"
            )
    if not tested:
        return []
    rounds = next(iter(counts)) if len(counts) == 1 else None
    factor = (
        f": {math.sqrt(rounds / (rounds - 1)):.2f} with the paper's {rounds}"
        if rounds is not None
        else ""
    )
    return [
        "The paper does not say whether its s.d. are sample s.d. (the squared deviations "
        "divided by the rounds less one, as ours) or population s.d. (divided by the rounds); "
        "the comparisons read them as sample s.d. Read as population s.d. (the sample s.d. of "
        f"the same rounds is then sqrt(n / (n - 1)) times as large{factor}), "
        + (
            f"no verdict of the {tested} comparison{'s' * (tested != 1)} changes."
            if not changed
            else f"{len(changed)} of the {tested} verdicts change{'s' * (len(changed) == 1)}: "
            + "; ".join(changed)
            + "."
        ),
        "",
    ]


def _differing_count(
    differing: Sequence[tuple[RowResult, Comparison | None]],
    agreeing: Sequence[RowResult],
    compared: int,
) -> str:
    """The sentence opening the verdicts: how many of the ``compared`` main rows differ from the
    paper and which are within noise ("2 of the 5 rows differ; within noise: Table I Tanh, ...");
    of a single row, that row and its verdict."""

    def name(row: RowResult) -> str:
        return f"Table {row.experiment.table} {row.experiment.label}"

    if compared == 1:
        row = differing[0][0] if differing else agreeing[0]
        return f"The one row compared, {name(row)}, " + (
            "differs." if differing else "is within noise."
        )
    return (
        f"{len(differing)} of the {compared} rows "
        + ("differs" if len(differing) == 1 else "differ")
        + "; "
        + (
            "within noise: " + ", ".join(name(r) for r in agreeing) + "."
            if agreeing
            else "none is within noise."
        )
    )


def _holm_sentence(
    differing: Sequence[tuple[RowResult, Comparison | None]],
    corrected: dict[int, float],
    count: int,
) -> str:
    """Which of the ``differing`` main rows still differ when the p-values of the ``count``
    main rows' comparisons are corrected together by Holm's procedure (:func:`_holm`), which
    keeps at :data:`SIGNIFICANCE` the chance that any row whose mean equals the paper's is said
    to differ; the verdicts stay those of each comparison alone (:data:`CRITERION`), and this
    says which of them are also findings of the set."""

    def named(rows: Sequence[RowResult]) -> str:
        return ", ".join(
            f"Table {r.experiment.table} {r.experiment.label} (corrected {_p(corrected[id(r)])})"
            for r in rows
        )

    kept = [row for row, _ in differing if corrected[id(row)] < SIGNIFICANCE]
    lost = [row for row, _ in differing if corrected[id(row)] >= SIGNIFICANCE]
    text = (
        f"With Holm's correction for the {count} rows' comparisons, which keeps at "
        f"{SIGNIFICANCE:.0%} the chance that any row whose mean equals the paper's is said to "
        "differ, "
        + (
            f"{len(kept)} of the {len(differing)} still "
            + ("differs" if len(kept) == 1 else "differ")
            + f": {named(kept)}."
            if kept
            else f"none of the {len(differing)} still differs."
        )
    )
    if lost:
        one = len(lost) == 1
        subject = (
            ("The other one differs" if one else f"The other {len(lost)} differ")
            if kept
            else ("It differs" if one else f"All {len(lost)} differ")
        )
        text += (
            f" {subject} in {'its' if one else 'their'} own comparison only, not once the "
            f"{count} are counted: {named(lost)}; about {SIGNIFICANCE * count:.1f} of {count} "
            "comparisons would differ by chance alone if every mean equalled the paper's."
        )
    return text


def _figure_1_comparison(results: Sequence[RowResult]) -> list[str]:
    """What Fig. 1's curves show against the paper's description of them.

    The paper: with cross-entropy the validation error "decreases in a stable manner at the
    beginning of the training", with MSE it "fluctuates a lot". The measure of fluctuation is
    :func:`_fluctuation` of each round's validation error over the first quarter of training
    (3 epochs at least), averaged over the rounds: how much the error moves from one epoch to
    the next beyond its net change, so that a curve that only falls (a stable decrease) scores
    0 however fast it falls. Cross-entropy's curve is stable where it fluctuates by less than
    a point per epoch and does not rise over the span (its net change, mean over rounds, at
    most 0). The contrast is said to hold (or to be reversed) only when a
    t-test of the two runs' values per round tells them apart at the :data:`SIGNIFICANCE`
    level (:func:`_fluctuation_test`).

    Every MSE run that trained (not diverged in every round, a rule that looks at the training
    loss only) is compared with every cross-entropy run, each pair in a sentence of its own:
    none is chosen for its result. With more than one such pair, each p-value is corrected by
    Holm's step-down procedure for the pairs tested (:func:`_holm`), which keeps the chance of
    any false "apart" among them at :data:`SIGNIFICANCE`; the verdict follows the corrected
    p-value, and the sentence gives both. (The report tested the MSE run that changed most
    per epoch alone, chosen for being the most apart: its p-value was too small.)
    """
    runs = [r for r in results if r.experiment.table == "Fig. 1"]
    epochs = min((len(r.rounds[0].validation_curve) for r in runs), default=0)
    if epochs < 3:
        return []
    span = max(3, epochs // 4)

    def per_round(row: RowResult) -> list[float]:
        return [_fluctuation(r.validation_curve[:span]) for r in row.rounds]

    def fluctuation(row: RowResult) -> float:
        return statistics.fmean(per_round(row))

    def trend(row: RowResult) -> float:
        """The net change per epoch over the span, mean over rounds (> 0: the error rises)."""
        return statistics.fmean(
            (r.validation_curve[span - 1] - r.validation_curve[0]) / (span - 1) for r in row.rounds
        )

    lines = [
        "### Fig. 1",
        "",
        'The paper: with cross-entropy the validation error "decreases in a stable manner at '
        'the beginning of the training", with MSE it "fluctuates a lot". Ours, as the mean '
        "absolute change of the validation error from one epoch to the next beyond its net "
        "change (0 for a curve that only falls, or only rises) over the first "
        f"{span} epochs (mean over rounds):",
        "",
    ]
    trained: list[tuple[RowResult, float]] = []
    for row in runs:
        end = statistics.fmean(r.validation_curve[-1] for r in row.rounds)
        diverged = _diverged(row)
        line = f"- {row.experiment.label}: {fluctuation(row):.2f} points per epoch"
        if diverged:
            line += f"; {diverged} of {len(row.rounds)} rounds diverged (non-finite training loss)"
        line += f"; its validation error ends at {end:.2f}%"
        if NEAR_CHANCE <= end <= 100 - NEAR_CHANCE:
            line += ", near chance level"
        lines.append(line + ".")
        if diverged < len(row.rounds):
            trained.append((row, fluctuation(row)))
    lines.append("")
    for row in runs:
        if _diverged(row) != len(row.rounds):
            continue
        # (NaN outputs predict no class: every point is an error, for good)
        if all(_ends_at_100(r.validation_curve) for r in row.rounds):
            lines.append(
                f"{row.experiment.label} diverged in every round: its outputs became NaN, "
                "which count as errors, so its curve rises to 100% and stays there, not the "
                "fluctuating curve of the paper; it is left out of the comparison."
            )
        else:
            end = statistics.fmean(r.validation_curve[-1] for r in row.rounds)
            lines.append(
                f"{row.experiment.label} diverged in every round (non-finite training loss), "
                f"its validation error ending at {end:.2f}% on average; it is left out of the "
                "comparison."
            )
    mse = [(r, f) for r, f in trained if r.experiment.loss == "mse"]
    entropy = [(r, f) for r, f in trained if r.experiment.loss == "cross-entropy"]
    pairs = [(m, c) for m in mse for c in entropy]
    tests = [
        _fluctuation_test(mse_row, per_round(mse_row), ce_row, per_round(ce_row))
        for (mse_row, _), (ce_row, _) in pairs
    ]
    tested = [test[1] for test in tests if test is not None]
    corrected = iter(_holm(tested))
    for ((mse_row, mse_value), (ce_row, ce_value)), test in zip(pairs, tests, strict=True):
        # (a curve that only rises does not fluctuate either, but it is no stable decrease)
        rise = trend(ce_row)
        stable = ce_value < 1.0 and rise <= 0.0
        pair = (
            f"{mse_row.experiment.label} ({mse_value:.2f}) and {ce_row.experiment.label} "
            f"({ce_value:.2f})"
        )
        if test is None:
            text = f"With one round, this run cannot test the paper's contrast between {pair}"
            p_value, named = math.nan, ""
        else:
            p_value = next(corrected)
            named = f"{test[0]}, {_p(test[1])}"
            if len(tested) > 1:
                named += (
                    f"; {_p(p_value)} after Holm's correction for the {len(tested)} pairs of an "
                    "MSE run and a cross-entropy run tested"
                )
        if test is None:
            pass
        elif p_value >= SIGNIFICANCE:
            text = (
                f"This run does not tell the fluctuation per epoch of {pair} apart ({named}): it "
                "does not show the paper's contrast"
            )
        else:
            holds = (
                "does not hold"
                if mse_value <= ce_value
                else "holds"
                if stable
                else "holds only in part"
            )
            ratio = (
                f", {mse_value / ce_value:.1f} times as much fluctuation per epoch"
                if ce_value
                else ""
            )
            text = f"The paper's contrast {holds} between {pair}{ratio} ({named})"
        if stable:
            text += "."
        elif rise > 0.0:
            text += (
                f"; cross-entropy's error rises over those epochs ({rise:.2f} points per epoch "
                "on average), not the decrease the paper describes."
            )
        else:
            text += (
                f"; cross-entropy's error is not stable either ({ce_value:.2f} points per epoch)."
            )
        lines.append(text)
    return [*lines, ""]


def _fluctuation(curve: Sequence[float]) -> float:
    r"""How much ``curve`` moves from one point to the next beyond its net change, per step.

    With the changes :math:`d_i = c_{i+1} - c_i` of the :math:`n + 1` points,
    :math:`\bigl(\sum_i |d_i| - |\sum_i d_i|\bigr) / n`: the mean absolute change less the
    mean net change, i.e. twice the mean movement against the curve's net direction. 0 for a
    curve that only falls (or only rises), however fast; a curve that goes from 10 to 30 and
    back scores 20 per step. ``curve`` has at least 2 points.
    """
    changes = [b - a for a, b in itertools.pairwise(curve)]
    return (math.fsum(abs(d) for d in changes) - abs(math.fsum(changes))) / len(changes)


def _holm(p_values: Sequence[float]) -> list[float]:
    r"""Holm's step-down correction of ``p_values`` for testing them together, in their order.

    With the :math:`m` p-values in increasing order :math:`p_{(1)} \le \dots \le p_{(m)}`,
    the corrected :math:`\tilde p_{(i)} = \max_{j \le i} \min(1, (m - j + 1)\,p_{(j)})`:
    rejecting where :math:`\tilde p < \alpha` rejects a true equality among them with
    probability at most :math:`\alpha`, whatever their dependence (Holm, 1979). One p-value
    is its own correction.
    """
    order = sorted(range(len(p_values)), key=lambda index: p_values[index])
    corrected = [0.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        corrected[index] = running
    return corrected


def _fluctuation_test(
    first: RowResult, first_values: list[float], second: RowResult, second_values: list[float]
) -> tuple[str, float] | None:
    """The name and two-sided p-value of a t-test of equal means of two runs' values per round.

    Paired (a t-test of the differences, ``n - 1`` degrees of freedom) when the two runs'
    rounds have the same seeds, as every row of a run has (same data, weights and shuffles):
    the round-to-round noise they share then cancels. Otherwise Welch's. ``None`` with fewer
    than 2 rounds on a side.
    """
    n = len(first_values)
    if n < 2 or len(second_values) < 2:
        return None
    paired = _paired(first, first_values, second, second_values)
    if paired is not None:
        return f"paired t-test over the {n} rounds", paired.p_value
    test = welch(
        statistics.fmean(first_values),
        statistics.stdev(first_values),
        len(first_values),
        statistics.fmean(second_values),
        statistics.stdev(second_values),
        len(second_values),
    )
    return "Welch's t-test over the rounds", test.p_value


def _p(p_value: float) -> str:
    """A p-value as the report writes it: ``p = 0.03``, or ``p < 0.01``; with more digits
    where two would round it to :data:`SIGNIFICANCE` or across it (``p = 0.049``, not
    ``p = 0.05``, for a contrast the report counts as shown; ``p = 0.053`` for one it does
    not), up to 6, and ``p < 0.05`` or ``p > 0.05`` where 6 still round it onto the line."""
    if p_value < 0.01:
        return "p < 0.01"
    digits = 2
    while digits < 6 and (
        p_value < SIGNIFICANCE <= round(p_value, digits)
        or p_value != round(p_value, digits) == SIGNIFICANCE
    ):
        digits += 1
    if p_value != SIGNIFICANCE and round(p_value, digits) == SIGNIFICANCE:
        # (within 5e-7 of the line: a sixth digit still rounds onto it)
        return f"p {'<' if p_value < SIGNIFICANCE else '>'} {SIGNIFICANCE}"
    return f"p = {p_value:.{digits}f}"


def _ends_at_100(curve: Sequence[float]) -> bool:
    """Whether ``curve`` reaches 100% and stays there to its end."""
    return (
        bool(curve) and curve[-1] == 100.0 and all(v == 100.0 for v in curve[curve.index(100.0) :])
    )


def _paper_consistency(results: Sequence[RowResult]) -> list[str]:
    """The paper's own numbers for configurations that train identically.

    Two main rows with the same training key (e.g. Table I's Tanh and Table III's SGD) are the
    same experiment; so are the rows that a published fault makes equal to another (a
    "without effect" variant). Their published numbers should then agree within noise.
    """
    groups: dict[Experiment, list[RowResult]] = {}
    trained: dict[Experiment, RowResult] = {}
    for row in results:
        # A variant that is only a hypothesis is not what the paper ran: the paper's number
        # it is compared with measures another training (as in _paper_repeats).
        if row.experiment.kind == "figure" or (
            row.experiment.kind == "variant" and not row.experiment.fault
        ):
            continue
        paper_row = _paper_row(results, row)
        if paper_row is None:
            continue
        key = training_key(row.experiment)
        trained.setdefault(key, row)
        members = groups.setdefault(key, [])
        if all(m.experiment.key != paper_row.experiment.key for m in members):
            members.append(paper_row)
    lines = []
    for key, members in groups.items():
        if len(members) < 2:
            continue
        names = ", ".join(
            f"Table {m.experiment.table} {m.experiment.label} ({_paper(m)})" for m in members
        )
        papers = [m.experiment.paper for m in members if m.experiment.paper is not None]
        tests = [
            welch(a.mean, a.sd, a.rounds, b.mean, b.sd, b.rounds)
            for index, a in enumerate(papers)
            for b in papers[index + 1 :]
        ]
        worst = max(
            abs(test.difference) / test.standard_error
            if test.standard_error
            else (math.inf if test.difference else 0.0)
            for test in tests
        )
        consistent = all(test.p_value >= SIGNIFICANCE for test in tests)
        ours = trained[key]
        lines.append(
            f"- Same training here (given the published faults where a variant says so): "
            f"{names}. The paper's numbers differ from each other by at most {worst:.1f} SE, "
            + (
                "within noise: they are consistent with one experiment measured several times"
                if consistent
                else "more than noise"
            )
            + f"; ours for that training: {_ours(ours)}."
        )
    if not lines:
        return []
    return [
        "### The paper's numbers for one and the same training",
        "",
        "The paper reports some trainings more than once, under different names; comparing "
        "its numbers with each other measures its own round-to-round noise.",
        "",
        *lines,
        "",
    ]


def _time_parts(wall_seconds: float, training_seconds: float) -> tuple[str, str, str]:
    """The run's wall time, its training time and the rest, as the report gives them: in
    whole seconds (tenths below 10 s, where a quick run's parts were all "0 s"), the rest the
    difference of the two others as shown, so that the parts add up (each rounded on its own,
    1.807 s was "2 s (training 0 s, figures and report 1 s)")."""
    digits = 1 if wall_seconds < 10 else 0
    wall, training = round(wall_seconds, digits), round(training_seconds, digits)
    return f"{wall:.{digits}f}", f"{training:.{digits}f}", f"{wall - training:.{digits}f}"


def write_report(
    results: Sequence[RowResult],
    settings: RunSettings,
    wall_seconds: float,
    training_seconds: float,
    figures: dict[str, str],
    path: Path,
) -> None:
    """Write the Markdown report to ``path``.

    Raises:
        ValueError: a row of no rounds (before anything is written).
    """
    _check_rounds("write_report", results)
    wall, training, rest = _time_parts(wall_seconds, training_seconds)
    lines = [
        '# Reproduction of "Mini deep-learning framework" (EPFL EE-559) with minidl',
        "",
        f"Generated by `{settings.command}` on {_now()} ({_machine()}).",
        "",
        f"**Wall time of the run: {wall} s** (training {training} s in "
        + (
            f"{settings.jobs} processes, and meanwhile, on a core left free, the figures whose "
            f"rows were done; the other figures and the report "
            if settings.jobs > 1
            else "1 process, figures and report "
        )
        + f"{rest} s).",
        "",
    ]
    if settings.quick:
        lines += [
            "> **Quick mode**: 1 round and a few epochs per row, a smoke test of the pipeline. "
            "These numbers are not results; run `minidl reproduce` for the report.",
            "",
        ]
    lines += _protocol_section(settings, results)
    lines += _choices_section(results)
    mains = [r for r in results if r.experiment.kind == "main"]
    if mains:
        lines += ["## Summary: the paper's tables and ours (test error, %)", ""]
        lines += _table(
            [
                "Table",
                "Row",
                "Paper mean (s.d.)",
                "Ours mean (s.d.)",
                "Verdict (ours - paper, SE, p)",
            ],
            [
                [r.experiment.table, r.experiment.label, _paper(r), _ours(r), _verdict(compare(r))]
                for r in mains
            ],
        )
        lines.append("")
    for table in ("I", "II", "III"):
        lines += _table_section(results, table, figures, settings.epochs_override)
    lines += _figures_section(results, figures)
    lines += _differences_section(results, settings.epochs_override)
    with naming_file(path):
        path.write_text("\n".join(lines).rstrip() + "\n")
