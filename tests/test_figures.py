"""What the reproduction's figures show: which rows, and which numbers (not pixels)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from minidl.experiments import figures
from minidl.experiments.config import FIGURE_1, TABLE_I, TABLE_II, TABLE_III, Experiment
from minidl.experiments.figures import FIGURES, table_figure
from minidl.experiments.training import RowResult
from tests.test_report import experiment, fake_row

CATALOGUE = (*FIGURE_1, *TABLE_I, *TABLE_II, *TABLE_III)


def _shown(name: str) -> list[Experiment]:
    (figure,) = [f for f in FIGURES if f.name == name]
    return [e for e in CATALOGUE if figure.shows(e)]


def test_each_figure_shows_its_rows() -> None:
    """Fig. 1 its three losses, Fig. 2 Table I's Tanh, Fig. 3 Table III's three SGD rows (its
    schedules), and each table's figure every row of that table, variants included."""
    assert _shown("fig1") == list(FIGURE_1)
    assert [(e.table, e.label) for e in _shown("fig2")] == [("I", "Tanh")]
    assert [e.label for e in _shown("fig3")] == ["SGD", "SGD, step decay", "SGD, CLR"]
    for name, table in (("tableI", TABLE_I), ("tableII", TABLE_II), ("tableIII", TABLE_III)):
        assert _shown(name) == list(table)
        assert any(e.kind == "variant" for e in table)


def _with_curves(row: Experiment, curves: list[tuple[float, ...]]) -> RowResult:
    result = fake_row(row, [1.0] * len(curves))
    rounds = tuple(
        dataclasses.replace(r, validation_curve=curve)
        for r, curve in zip(result.rounds, curves, strict=True)
    )
    return RowResult(experiment=row, rounds=rounds, seconds=0.0)


class _Axes:
    """Records what is drawn."""

    def __init__(self) -> None:
        self.plotted: list[list[float]] = []
        self.bands: list[tuple[list[float], list[float]]] = []

    def plot(self, x: Any, y: torch.Tensor, **style: Any) -> None:
        self.plotted.append(y.tolist())

    def fill_between(self, x: Any, low: torch.Tensor, high: torch.Tensor, **style: Any) -> None:
        self.bands.append((low.tolist(), high.tolist()))


def test_a_band_is_the_mean_curve_between_the_lowest_and_highest_round() -> None:
    row = _with_curves(experiment("I", "Tanh"), [(1.0, 4.0, 2.0), (3.0, 2.0, 2.0)])
    axes = _Axes()
    figures._band(axes, row, "Tanh", "C0")
    assert axes.plotted == [[2.0, 3.0, 2.0]]
    assert axes.bands == [([1.0, 2.0, 2.0], [3.0, 4.0, 2.0])]


def test_table_figure_draws_each_training_once_mains_then_variants(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A table's figure draws the mean curve of every main row, then of every variant that
    trains differently; a variant that trains as a row already drawn ("without effect") is
    left out."""
    drawn: list[Any] = []
    monkeypatch.setattr(figures, "_save", lambda plt, figure, path: drawn.append(figure))
    curves = {
        "SGD, momentum 0": [(4.0, 2.0), (2.0, 2.0)],
        "SGD, momentum 0.5": [(5.0, 3.0), (3.0, 1.0)],
        "SGD, momentum 0.5, as published (momentum without effect)": [(9.0, 9.0), (9.0, 9.0)],
        "SGD, momentum 0, MSE averaged over outputs too": [(6.0, 6.0), (8.0, 4.0)],
    }
    rows = [_with_curves(experiment("II", label), c) for label, c in curves.items()]
    table_figure(rows, "II", tmp_path / "table.png")
    (figure,) = drawn
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines] == [
        "SGD, momentum 0",
        "SGD, momentum 0.5",
        "variant: SGD, momentum 0, MSE averaged over outputs too",
    ]
    assert [list(line.get_ydata()) for line in lines] == [[3.0, 2.0], [4.0, 2.0], [7.0, 5.0]]
    figure.clear()
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_a_figure_writer_that_fails_removes_the_folders_it_made(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A FigureWriter makes ``out`` (and its missing parents) at its first figure; one that
    failed then (a full disk) removed its hidden folder but left those behind, empty. A folder
    that was there stays, and so does one that holds a file."""

    def save(plt: Any, figure: Any, path: Path) -> None:
        plt.close(figure)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(figures, "_save", save)
    rows = [_with_curves(experiment("II", "SGD, momentum 0"), [(4.0, 2.0), (2.0, 2.0)])]
    with pytest.raises(OSError, match="No space left on device"):
        figures.write_figures(rows, tmp_path / "new" / "deep" / "figures")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "there" / "kept").mkdir(parents=True)
    (tmp_path / "there" / "kept" / "file").write_text("kept")
    with pytest.raises(OSError, match="No space left on device"):
        figures.write_figures(rows, tmp_path / "there" / "new" / "figures")
    with pytest.raises(OSError, match="No space left on device"):
        figures.write_figures(rows, tmp_path / "there" / "kept")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "there",
        "there/kept",
        "there/kept/file",
    ]
