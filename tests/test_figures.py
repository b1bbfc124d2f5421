"""What the reproduction's figures show: which rows, and which numbers (not pixels)."""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from minidl import _extras
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
    monkeypatch.setattr(figures, "_save", lambda figure, path: drawn.append(figure))
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

    def save(figure: Any, path: Path) -> None:
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


def test_write_figures_without_matplotlib_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without matplotlib (minidl's reproduce extra), drawing raises a ModuleNotFoundError
    that names the module, the package and the extra to install (it was Python's bare 'import
    of matplotlib halted' from inside the figure), and leaves no folder behind."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # (import raises ModuleNotFoundError)
    rows = [_with_curves(experiment("II", "SGD, momentum 0"), [(4.0, 2.0), (2.0, 2.0)])]
    with pytest.raises(ModuleNotFoundError) as info:
        figures.write_figures(rows, tmp_path / "figures")
    assert str(info.value) == (
        "minidl.experiments.figures: the figures are drawn with matplotlib, and the matplotlib "
        "package is not installed; install minidl's reproduce extra: pip install "
        "'minidl[reproduce]' (or pip install matplotlib)"
    )
    assert info.value.name == "matplotlib"
    assert list(tmp_path.iterdir()) == []


def test_write_figures_with_a_matplotlib_that_fails_to_import_raises_its_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A matplotlib that is installed but whose own import fails (for want of a package it
    needs, say) raises that error, which names what is missing, not a message saying that
    matplotlib is not installed and to install it (which it was, and which would hide the
    cause), and leaves no folder behind."""
    package = tmp_path / "site" / "matplotlib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import minidl_test_missing_dependency\n")
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    rows = [_with_curves(experiment("II", "SGD, momentum 0"), [(4.0, 2.0), (2.0, 2.0)])]
    with pytest.raises(ImportError) as info:
        figures.write_figures(rows, tmp_path / "figures")
    assert info.value.name == "minidl_test_missing_dependency"
    assert "not installed" not in str(info.value)
    assert not (tmp_path / "figures").exists()


@pytest.mark.parametrize(
    ("error", "installing"),
    [
        (ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib"), True),
        (
            ModuleNotFoundError("No module named 'matplotlib.pyplot'", name="matplotlib.pyplot"),
            True,
        ),
        (
            ModuleNotFoundError("No module named 'matplotlib_inline'", name="matplotlib_inline"),
            False,
        ),
        (ImportError("matplotlib was built for another Python"), False),
    ],
    ids=["the package", "a module of it", "another package named alike", "no name"],
)
def test_require_says_to_install_only_a_missing_package_or_module_of_it(
    monkeypatch: pytest.MonkeyPatch, error: ImportError, installing: bool
) -> None:
    """``require`` says to install the extra only when what is missing is the package itself
    or a module of it (``matplotlib.pyplot``); another package whose name merely starts with
    its name, or an ImportError that names no module (raised by the package's own code),
    is raised as it is."""

    def fail(name: str) -> None:
        raise error

    monkeypatch.setattr(_extras.importlib, "import_module", fail)
    with pytest.raises(ImportError) as info:
        _extras.require("matplotlib", "drawing needs it", module="matplotlib.pyplot")
    if installing:
        assert info.value is not error and info.value.name == "matplotlib"
        assert str(info.value).startswith(
            "drawing needs it, and the matplotlib package is not installed; install minidl's "
            "reproduce extra"
        )
    else:
        assert info.value is error


# -- the data each figure draws, read back from the Figure (mutation review) -------------------


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The Figure objects the figure functions draw (not saved); closed afterwards."""
    import matplotlib.pyplot as plt

    made: list[Any] = []
    monkeypatch.setattr(figures, "_save", lambda figure, path: made.append(figure))
    yield made
    for figure in made:
        plt.close(figure)


def _rounds_with(row: RowResult, **fields: Any) -> RowResult:
    """``row`` with every round's ``fields`` replaced (each a value or a list, one per round)."""
    rounds = tuple(
        dataclasses.replace(r, **{k: v[i] if isinstance(v, list) else v for k, v in fields.items()})
        for i, r in enumerate(row.rounds)
    )
    return RowResult(experiment=row.experiment, rounds=rounds, seconds=0.0)


def test_figure_1_draws_each_rows_mean_curve_by_epoch_on_a_log_error_axis(
    drawn: list[Any], tmp_path: Path
) -> None:
    """One curve per loss, at epochs 1, 2, 3, each in its own colour; its legend counts the
    rounds whose training loss diverged (not the validation error, which stays finite), and its
    title what the line and the band are; the error axis is logarithmic (down to one point's
    error, see below), named, and the epochs
    are on x."""
    mse = _rounds_with(
        _with_curves(experiment("Fig. 1", "MSE"), [(4.0, 2.0, 1.0), (2.0, 2.0, 3.0)]),
        train_loss=[(0.5, float("nan"), float("nan")), (0.5, 0.4, 0.3)],
    )
    entropy = _with_curves(experiment("Fig. 1", "Cross-entropy"), [(8.0, 4.0, 2.0)])
    figures.figure_1([mse, entropy], tmp_path / "fig1.png")
    (figure,) = drawn
    (axes,) = figure.axes
    lines = axes.get_lines()
    assert [list(line.get_xdata()) for line in lines] == [[1, 2, 3], [1, 2, 3]]
    assert [list(line.get_ydata()) for line in lines] == [[3.0, 2.0, 2.0], [8.0, 4.0, 2.0]]
    assert lines[0].get_color() != lines[1].get_color()
    assert [line.get_label() for line in lines] == [
        "MSE\n(2 rounds, 1 diverged)",
        "Cross-entropy\n(1 round)",
    ]
    assert axes.get_yscale() == "symlog"
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("epoch", "validation error (%)")
    # The image read alone says what the line and the band are (only the report's caption did).
    assert axes.get_legend().get_title().get_text() == (
        "line: mean over the rounds\nband: lowest to highest round"
    )


def test_figure_1_tells_its_curves_apart_by_line_style_as_well_as_colour(
    drawn: list[Any], tmp_path: Path
) -> None:
    """Fig. 1's three runs differ in line style too, so that they are told apart in greyscale
    and without telling orange from red (both MSE runs were solid, orange and red); each band
    is in its line's colour."""
    from matplotlib.colors import to_rgb

    rows = [_with_curves(row, [(4.0, 2.0), (3.0, 1.0)]) for row in FIGURE_1]
    figures.figure_1(rows, tmp_path / "fig1.png")
    (figure,) = drawn
    (axes,) = figure.axes
    lines = axes.get_lines()
    assert len({line.get_linestyle() for line in lines}) == len(lines) == 3
    assert len({line.get_color() for line in lines}) == 3
    for line, band in zip(lines, axes.collections, strict=True):
        assert tuple(band.get_facecolor()[0][:3]) == to_rgb(line.get_color())


def test_an_error_of_0_is_drawn_on_the_error_axis_at_its_tick_0(
    drawn: list[Any], tmp_path: Path
) -> None:
    """A round with no validation point wrong: on a plain log axis, which has no 0, Fig. 1's
    band and a table's curve that reached 0% fell off the bottom of the axes. The error axis is
    logarithmic down to one validation point's error (0.1% of 1000), linear below it to 0,
    which is on the axes, with its tick labelled 0; above, 1% to 10% and 10% to 100% are as
    far apart, as on a log axis."""
    fig1 = [_with_curves(experiment("Fig. 1", "MSE"), [(50.0, 10.0, 0.0), (40.0, 5.0, 1.0)])]
    figures.figure_1(fig1, tmp_path / "fig1.png")
    table_i = [_with_curves(experiment("I", "Tanh"), [(50.0, 1.0, 0.0)])]
    table_figure(table_i, "I", tmp_path / "table.png")
    for figure in drawn:
        (axes,) = figure.axes
        assert axes.get_ylim()[0] < 0 < axes.get_ylim()[1]
        assert 0 in axes.get_yticks() and axes.yaxis.get_major_formatter()(0.0, 0) == "0"
        assert axes.yaxis.get_transform().linthresh == 100 / 1000
        y = [axes.transData.transform((1, value))[1] for value in (1.0, 10.0, 100.0)]
        assert y[1] - y[0] == pytest.approx(y[2] - y[1])
    (band,) = drawn[0].axes[0].collections
    assert _band_edges(band)[3.0] == {0.0, 1.0}


def _shown_ticks(axis: Any) -> list[str]:
    """The tick labels an axis shows (major and minor, within its view)."""
    low, high = sorted(axis.get_view_interval())
    index = 1 if axis.axis_name == "y" else 0
    labels = axis.get_ticklabels(which="both")
    shown = [t.get_text() for t in labels if low <= t.get_position()[index] <= high]
    return sorted(filter(None, shown), key=float)


def test_a_short_run_labels_its_error_axis_within_a_decade_and_its_epochs_as_whole_numbers(
    drawn: list[Any], tmp_path: Path
) -> None:
    """A run of 5 epochs whose errors stay between 30% and 60% (``--quick``) had one labelled
    error tick, 50, and epochs 1.5, 2.5 and so on: where the error axis spans less than a
    decade its ticks at the other digits are labelled too, and the epochs are whole numbers;
    a 400-epoch axis from 50% down to 1% keeps its 1, 2, 5 labels alone."""
    curve = (45.0, 60.0, 38.0, 31.0, 52.0)
    table_figure([_with_curves(experiment("I", "Tanh"), [curve])], "I", tmp_path / "a.png")
    long = tuple(50.0 * 0.99**epoch for epoch in range(400))
    table_figure([_with_curves(experiment("I", "Tanh"), [long])], "I", tmp_path / "b.png")
    short, full = (figure.axes[0] for figure in drawn)
    assert _shown_ticks(short.yaxis) == ["30", "40", "50", "60"]
    assert _shown_ticks(short.xaxis) == ["1", "2", "3", "4", "5"]
    assert _shown_ticks(full.yaxis) == ["1", "2", "5", "10", "20", "50"]
    assert _shown_ticks(full.xaxis) == [str(epoch) for epoch in range(0, 401, 50)]


@pytest.mark.parametrize(
    ("curve", "shown"),
    [
        ((12.0, 15.0, 18.0), ["12", "14", "16", "18"]),
        ((46.0, 48.0, 49.5), ["46", "47", "48", "49"]),
    ],
)
def test_an_error_axis_between_its_fixed_ticks_labels_evenly_spaced_ones(
    drawn: list[Any], tmp_path: Path, curve: tuple[float, ...], shown: list[str]
) -> None:
    """Curves between 12% and 18% (or 46% and 49%) lie between the axis's ticks at 1, 2, 5 x
    10^k and the other digits x 10^k: the axis had no label at all (review). Where fewer than
    two of those ticks lie within it, evenly spaced ones are labelled."""
    table_figure([_with_curves(experiment("I", "Tanh"), [curve])], "I", tmp_path / "a.png")
    (figure,) = drawn
    figure.canvas.draw()
    assert _shown_ticks(figure.axes[0].yaxis) == shown


def test_a_tables_eleventh_main_row_is_told_from_its_first(
    drawn: list[Any], tmp_path: Path
) -> None:
    """The colours (10) and the markers (10) both repeated after 10 main rows: the 11th row
    looked as the first (review). 11 markers: no two of 11 rows share colour and marker."""
    base = experiment("I", "Tanh")
    rows = [
        _with_curves(dataclasses.replace(base, label=f"lr {i}", lr=0.01 * (i + 1)), [(5.0, 4.0)])
        for i in range(11)
    ]
    table_figure(rows, "I", tmp_path / "a.png")
    (figure,) = drawn
    lines = [line for line in figure.axes[0].get_lines() if line.get_label().startswith("lr")]
    assert len(lines) == 11
    assert len({(str(line.get_color()), line.get_marker()) for line in lines}) == 11


def test_table_figure_colours_variants_as_their_row_and_names_mixed_activations(
    drawn: list[Any], tmp_path: Path
) -> None:
    """Table I: a row that mixes activations says which; each variant is drawn in its row's
    colour, the first of a row dashed, the second dotted; one round is "1 round"."""
    labels = ["Sigmoid", "Tanh", "Sigmoid+Tanh (tanh, sigmoid, tanh)", "Sigmoid alone"]
    rows = [
        _with_curves(experiment("I", label), [(float(i + 2), 1.0)])
        for i, label in enumerate(labels)
    ]
    table_figure(rows, "I", tmp_path / "table.png")
    (figure,) = drawn
    (axes,) = figure.axes
    lines = axes.get_lines()
    assert [line.get_label() for line in lines] == [
        "Sigmoid (sigmoid, tanh, sigmoid)",
        "Tanh",
        "variant: Sigmoid+Tanh (tanh, sigmoid, tanh)",
        "variant: Sigmoid alone",
    ]
    assert [list(line.get_xdata()) for line in lines] == [[1, 2]] * 4
    sigmoid, tanh, first, second = lines
    assert first.get_color() == second.get_color() == sigmoid.get_color() != tanh.get_color()
    assert [line.get_linestyle() for line in lines] == ["-", "-", "--", ":"]
    assert axes.get_title() == "Table I: mean validation error over 1 round"
    assert axes.get_yscale() == "symlog"


def test_table_figure_tells_its_rows_apart_by_marker_as_well_as_colour(
    drawn: list[Any], tmp_path: Path
) -> None:
    """Table I's six rows were six solid lines told apart by colour alone (not in greyscale,
    nor by a reader who confuses red and green: ReLU's and LeakyReLU's); each now has its own
    filled marker, every tenth of the epochs, and a variant its row's marker, open (white),
    so that it is told from the row it varies also where their colours meet."""
    labels = [e.label for e in TABLE_I if e.kind == "main"] + ["Sigmoid alone", "ReLU alone"]
    rows = [_with_curves(experiment("I", label), [tuple(range(20, 0, -1))]) for label in labels]
    table_figure(rows, "I", tmp_path / "table.png")
    (figure,) = drawn
    (axes,) = figure.axes
    lines = axes.get_lines()
    mains, (sigmoid_alone, relu_alone) = lines[:6], lines[6:]
    assert len({line.get_marker() for line in mains}) == 6
    assert all(line.get_markerfacecolor() == line.get_color() for line in mains)
    for variant, row in ((sigmoid_alone, mains[0]), (relu_alone, mains[2])):
        assert variant.get_marker() == row.get_marker()
        assert variant.get_markerfacecolor() == "white"
    assert {line.get_markevery()[1] for line in lines} == {2}  # (20 epochs)
    assert len({line.get_markevery() for line in mains}) > 1  # (the markers staggered)


def _table_iii_sgd_rows(n_train: int) -> list[RowResult]:
    """Table III's three SGD rows with ``n_train`` training points (batches of 100), over 14
    epochs: the constant rate, a step decay per epoch, and a per-batch CLR rate."""
    rows = []
    for label in ("SGD", "SGD, step decay", "SGD, CLR"):
        row = experiment("III", label)
        row = dataclasses.replace(row, protocol=dataclasses.replace(row.protocol, n_train=n_train))
        batches = -(-n_train // 100)
        lr_curve = tuple(0.01 * 0.5 ** (epoch // 5) for epoch in range(14))
        batch_lr = tuple(0.001 * (1 + b % 7) for b in range(14 * batches)) if "CLR" in label else ()
        if label == "SGD":
            lr_curve = (0.01,) * 14
        rows.append(_rounds_with(fake_row(row, [1.0]), lr_curve=lr_curve, batch_lr=batch_lr))
    return rows


@pytest.mark.parametrize("n_train", [1000, 1050], ids=["10 batches", "11 batches, the last short"])
def test_figure_3_draws_each_batchs_rate_and_the_first_12_epochs_below(
    drawn: list[Any], tmp_path: Path, n_train: int
) -> None:
    """Top: the rate of every batch on an epoch axis (an epoch's rate repeated for each of its
    batches, the last short one included; CLR's own per-batch rates), log scale; bottom: the
    first 12 epochs of the same."""
    rows = _table_iii_sgd_rows(n_train)
    figures.figure_3(rows, tmp_path / "fig3.png")
    (figure,) = drawn
    top, bottom = figure.axes
    batches = -(-n_train // 100)
    assert top.get_yscale() == "log"
    for axes, epochs in ((top, 14), (bottom, 12)):
        lines = axes.get_lines()
        assert [line.get_label() for line in lines] == ["SGD", "SGD, step decay", "SGD, CLR"]
        x = [b / batches for b in range(epochs * batches)]
        for line, row in zip(lines, rows, strict=True):
            first = row.rounds[0]
            expected = first.batch_lr or [lr for lr in first.lr_curve for _ in range(batches)]
            assert list(line.get_xdata()) == pytest.approx(x)
            assert list(line.get_ydata()) == list(expected[: epochs * batches])


def test_figure_3_tells_its_schedules_apart_by_line_style_as_well_as_colour(
    drawn: list[Any], tmp_path: Path
) -> None:
    """Fig. 3's step decay and CLR were both solid lines, purple and green, of one grey in
    greyscale; on each panel the three rates now have three line styles (and colours)."""
    figures.figure_3(_table_iii_sgd_rows(1000), tmp_path / "fig3.png")
    (figure,) = drawn
    for axes in figure.axes:
        lines = axes.get_lines()
        assert len({line.get_linestyle() for line in lines}) == len(lines) == 3
        assert len({line.get_color() for line in lines}) == 3


def test_figure_2_shows_the_labels_the_answers_and_the_boundary_in_raw_coordinates(
    drawn: list[Any], tmp_path: Path
) -> None:
    """Top: the test set's points by label; bottom: right and wrong answers, counted, and the
    decision boundary on the raw [0, 1]^2 square. The network answers 1 where the normalised
    x1 is positive, so the boundary is the vertical line at the training mean of x1."""
    from minidl import nn
    from minidl.experiments.training import make_round_data
    from minidl.train import predict

    row = fake_row(experiment("I", "Tanh"), [12.5])
    model = nn.Linear(2, 2)
    model.weight.data.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    model.bias.data.zero_()
    row = _rounds_with(row, model=model, train_error=99.0)
    figures.figure_2(row, tmp_path / "fig2.png")
    (figure,) = drawn
    top, bottom = figure.axes
    data = make_round_data(row.experiment, row.rounds[0].seeds)
    raw, labels = data.test.raw, data.test.y
    correct = predict(model, data.test.x) == labels
    inside, outside = top.collections[:2]
    assert torch.equal(torch.as_tensor(inside.get_offsets()), raw[labels == 1])
    assert torch.equal(torch.as_tensor(outside.get_offsets()), raw[labels == 0])
    assert (inside.get_label(), outside.get_label()) == ("label 1 (inside)", "label 0 (outside)")
    right, wrong = bottom.collections[:2]
    assert torch.equal(torch.as_tensor(right.get_offsets()), raw[correct])
    assert torch.equal(torch.as_tensor(wrong.get_offsets()), raw[~correct])
    count = int(correct.sum())
    assert 0 < count < len(labels)
    assert right.get_label() == f"correct ({count})"
    assert wrong.get_label() == f"misclassified ({len(labels) - count})"
    assert bottom.get_title() == "Tanh network (Table I, round 1): test error 12.5%"
    (boundary,) = [c for c in bottom.collections if hasattr(c, "allsegs")]
    points = torch.cat([torch.as_tensor(s) for s in boundary.allsegs[0]])
    mean_x1 = float(data.train.raw[:, 0].mean())
    assert (points[:, 0] - mean_x1).abs().max() < 1 / 300  # (the grid's step)
    assert points[:, 1].min() < 0.01 and points[:, 1].max() > 0.99
    assert "decision boundary" in [text.get_text() for text in bottom.get_legend().get_texts()]


@pytest.mark.parametrize("weights", ["one class", "nan"])
def test_figure_2_says_when_there_is_no_decision_boundary(
    drawn: list[Any], tmp_path: Path, weights: str
) -> None:
    """A network that answers one class over the whole square (a chance-level one of a short
    run), or NaN, has no boundary: the legend listed a "decision boundary" all the same
    (review). It says there is none, and the boundary of the network above is still named."""
    import warnings

    from minidl import nn

    row = fake_row(experiment("I", "Tanh"), [50.0])
    model = nn.Linear(2, 2)
    model.weight.data.fill_(float("nan") if weights == "nan" else 0.0)
    model.bias.data.copy_(torch.tensor([0.0, 1.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (matplotlib's, for a contour of no level)
        figures.figure_2(_rounds_with(row, model=model), tmp_path / "fig2.png")
    (figure,) = drawn
    labels = [text.get_text() for text in figure.axes[1].get_legend().get_texts()]
    assert "no decision boundary (one class everywhere)" in labels
    assert "decision boundary" not in labels


def test_figure_2_tells_its_classes_apart_by_marker_and_draws_the_errors_on_top(
    drawn: list[Any], tmp_path: Path
) -> None:
    """Fig. 2 keeps the paper's green and red, with a marker each as well, as the report's
    caption says (the top panel's two labels were dots of the same size, told apart by red
    and green alone); the misclassified crosses are drawn above the decision boundary and the
    true circle, which crossed them out where they lie, at the border of the disk."""
    from matplotlib.markers import MarkerStyle

    from minidl.experiments.report import _figures_section

    row = fake_row(experiment("I", "Tanh"), [12.5])
    figures.figure_2(row, tmp_path / "fig2.png")
    (figure,) = drawn
    top, bottom = figure.axes

    def shape(collection: Any) -> list[list[float]]:
        return collection.get_paths()[0].vertices.tolist()

    def marker(name: str) -> list[list[float]]:
        style = MarkerStyle(name)
        return style.get_path().transformed(style.get_transform()).vertices.tolist()

    inside, outside = top.collections[:2]
    right, wrong = bottom.collections[:2]
    assert (inside.get_label(), outside.get_label()) == ("label 1 (inside)", "label 0 (outside)")
    assert wrong.get_label().startswith("misclassified")
    assert [shape(c) for c in (inside, outside, right, wrong)] == [
        marker("o"),
        marker("^"),
        marker("o"),
        marker("x"),
    ]
    (caption,) = [line for line in _figures_section([row], {"fig2": "f.png"}) if "(f.png)" in line]
    for words in ("green dots: label 1", "red triangles: label 0", "misclassified (red crosses)"):
        assert words in caption
    others = [*bottom.lines, *bottom.patches, *bottom.collections[2:]]
    assert {type(artist).__name__ for artist in others} >= {"Line2D", "Circle", "QuadContourSet"}
    assert wrong.get_zorder() > max(artist.get_zorder() for artist in others)


def test_figure_writer_draws_each_figure_from_its_own_rows_and_lists_them_in_report_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Table III's rows come in first, so its figure is drawn first; still each figure shows
    only its own table's rows, and ``draw_all`` lists the figures in the report's order."""
    import matplotlib.pyplot as plt

    drawn: dict[str, Any] = {}

    def save(figure: Any, path: Path) -> None:
        drawn[path.name] = figure
        path.write_bytes(b"")

    monkeypatch.setattr(figures, "_save", save)
    table_ii = [
        fake_row(experiment("II", label), [1.0]) for label in ("SGD, momentum 0", "ADADELTA")
    ]
    table_iii = [fake_row(experiment("III", "ADADELTA"), [1.0])]  # (no row of Fig. 3)
    experiments = [row.experiment for row in (*table_ii, *table_iii)]
    with figures.FigureWriter(experiments, tmp_path) as writer:
        assert writer.draw_next(table_iii)
        written = writer.draw_all([*table_ii, *table_iii])
    assert list(written) == ["tableII", "tableIII"]
    for name, rows in (("tableII", table_ii), ("tableIII", table_iii)):
        lines = drawn[f"{name}_validation.png"].axes[0].get_lines()
        assert [line.get_label() for line in lines] == [row.experiment.label for row in rows]
    for figure in drawn.values():
        plt.close(figure)


def test_a_figure_drawn_after_move_into_out_is_staged_and_moved_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``move_into_out`` moves the figures drawn so far; one drawn after it waits in a new
    hidden folder, and ``staged`` and the next ``move_into_out`` name it alone (they named
    the figures moved already too, and the second move failed on their missing files), while
    ``draw_remaining`` still lists every figure drawn."""

    def save(figure: Any, path: Path) -> None:
        path.write_bytes(path.name.encode())

    monkeypatch.setattr(figures, "_save", save)
    table_ii = [fake_row(experiment("II", "ADADELTA"), [1.0])]
    table_iii = [fake_row(experiment("III", "ADADELTA"), [1.0])]  # (no row of Fig. 3)
    out = tmp_path / "out"
    with figures.FigureWriter([row.experiment for row in (*table_ii, *table_iii)], out) as writer:
        assert writer.draw_next(table_ii)
        writer.move_into_out()
        assert writer.staged() == []
        assert writer.draw_next([*table_ii, *table_iii])
        (staged, name), *others = writer.staged()
        assert (others, name, staged.parent.parent) == ([], "tableIII_validation.png", out)
        assert staged.read_bytes() == name.encode()
        writer.move_into_out()
        assert writer.draw_remaining([*table_ii, *table_iii]) == {
            "tableII": "tableII_validation.png",
            "tableIII": "tableIII_validation.png",
        }
    assert {path.name for path in out.iterdir()} == {
        "tableII_validation.png",
        "tableIII_validation.png",
    }


def test_removing_other_figures_leaves_a_symbolic_link_of_that_name(tmp_path: Path) -> None:
    """A link named as a figure (to a file of the user's elsewhere) is not the figure of an
    earlier run: it stays, as the files it is not named as do."""
    target = tmp_path / "elsewhere.png"
    target.write_bytes(b"the user's")
    out = tmp_path / "out"
    out.mkdir()
    (out / "fig1_loss_criteria.png").symlink_to(target)
    (out / "fig2_test_set.png").write_bytes(b"an earlier run's figure")
    assert figures.remove_other_figures(out, {}) == ["fig2_test_set.png"]
    assert (out / "fig1_loss_criteria.png").is_symlink() and target.read_bytes() == b"the user's"


def test_a_figure_whose_saving_fails_is_closed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """pyplot keeps every figure it made until it is closed: one whose saving failed (a full
    disk) or whose drawing was interrupted stayed open, in a process that goes on (a notebook
    that runs the reproduction again; matplotlib warns past 20). Each figure function now
    closes its figure whatever happens."""
    import matplotlib.pyplot as plt

    def full_disk(*figure_and_path: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(figures, "_save", full_disk)
    fig1 = [_with_curves(experiment("Fig. 1", "MSE"), [(4.0, 2.0, 1.0)])]
    table_i = [_with_curves(experiment("I", "Tanh"), [(2.0, 1.0)])]
    draws = [
        lambda path: figures.figure_1(fig1, path),
        lambda path: figures.figure_2(fake_row(experiment("I", "Tanh"), [12.5]), path),
        lambda path: figures.figure_3(_table_iii_sgd_rows(1000), path),
        lambda path: table_figure(table_i, "I", path),
    ]
    before = plt.get_fignums()
    for index, draw in enumerate(draws):
        with pytest.raises(OSError, match="No space left on device"):
            draw(tmp_path / f"{index}.png")
        assert plt.get_fignums() == before, f"figure {index} left open"


# -- a run's figures read back against its results.json (the numbers the report gives) ---------


@dataclasses.dataclass(frozen=True)
class _Run:
    """A small reproduction: its folder, its results.json, and the Figure objects it saved."""

    out: Path
    document: dict[str, Any]
    figures: dict[str, Any]

    def rows(self, table: str) -> list[dict[str, Any]]:
        return [row for row in self.document["rows"] if row["table"] == table]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> _Run:
    """Every table and figure, 2 rounds of 5 epochs (enough for the MSE of Fig. 1 to diverge
    in a round), each Figure kept as it was saved."""
    from minidl.experiments.runner import RunSettings, reproduce

    out = tmp_path_factory.mktemp("run")
    saved: dict[str, Any] = {}
    save = figures._save

    def keep(figure: Any, path: Path) -> None:
        save(figure, path)
        saved[path.name] = figure

    settings = RunSettings(
        rounds=2, base_seed=0, tables="1,2,3", quick=False, epochs_override=5, command="test"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(figures, "_save", keep)
        reproduce(settings, out, progress=False, summary=False)
    return _Run(out, json.loads((out / "results.json").read_text()), saved)


def _mean(curves: list[list[float]]) -> Any:
    """The mean over the rounds of each epoch's validation error (to rounding)."""
    return pytest.approx([statistics.fmean(epoch) for epoch in zip(*curves, strict=True)])


def _band_edges(band: Any) -> dict[float, set[float]]:
    """The y values a fill_between polygon has at each x."""
    edges: dict[float, set[float]] = {}
    for x, y in band.get_paths()[0].vertices.tolist():
        edges.setdefault(x, set()).add(y)
    return edges


def test_the_run_draws_each_figure_that_results_json_lists(small_run: _Run) -> None:
    """results.json names the six figures; each file is a PNG of its Figure's size at 120
    dots per inch, as every other."""
    assert small_run.document["figures"] == {f.name: f.file for f in FIGURES}
    assert set(small_run.figures) == {f.file for f in FIGURES}
    for figure in FIGURES:
        png = (small_run.out / figure.file).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
        size = [round(inches * 120) for inches in small_run.figures[figure.file].get_size_inches()]
        assert [int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")] == size


def test_the_same_run_in_another_process_draws_the_same_bytes(
    small_run: _Run, tmp_path: Path
) -> None:
    """The run again, in a fresh interpreter with another hash seed and 2 worker processes (so
    that some figures are drawn while rows still train), writes each figure byte for byte as
    this one did: nothing of the machine's time, the process or its drawing order gets into
    a PNG."""
    from tests.helpers import tree_environment

    program = (
        "from minidl.experiments.runner import RunSettings, reproduce\n"
        "settings = RunSettings(rounds=2, base_seed=0, tables='1,2,3', quick=False,\n"
        "                       epochs_override=5, command='test', jobs=2)\n"
        f"reproduce(settings, {str(tmp_path)!r}, progress=False, summary=False)\n"
    )
    subprocess.run(
        [sys.executable, "-c", program],
        check=True,
        timeout=300,
        env=tree_environment(PYTHONHASHSEED="12345"),
    )
    for figure in FIGURES:
        again = (tmp_path / figure.file).read_bytes()
        assert again == (small_run.out / figure.file).read_bytes(), figure.file


def test_figure_1_draws_the_validation_curves_of_results_json(small_run: _Run) -> None:
    """Fig. 1: one line per Fig. 1 row of results.json, in its order, named by its label and
    its rounds (those whose training loss is not finite, null in the JSON, counted as
    diverged), at epochs 1 to 5, through the mean of its rounds' validation errors, in a band
    from the lowest to the highest round."""
    rows = small_run.rows("Fig. 1")
    (axes,) = small_run.figures["fig1_loss_criteria.png"].axes
    lines, bands = axes.get_lines(), axes.collections
    assert len(lines) == len(bands) == len(rows) == 3
    diverged = [sum(None in curve for curve in row["train_loss_curves"]) for row in rows]
    assert diverged[0] > 0 and diverged[1:] == [0, 0]  # (the paper's MSE at lr 0.1)
    for line, band, row, count in zip(lines, bands, rows, diverged, strict=True):
        note = f", {count} diverged" if count else ""
        assert line.get_label() == f"{row['label']}\n(2 rounds{note})"
        assert list(line.get_xdata()) == [1, 2, 3, 4, 5]
        assert list(line.get_ydata()) == _mean(row["validation_curves"])
        assert _band_edges(band) == {
            float(epoch): {min(values), max(values)}
            for epoch, values in enumerate(zip(*row["validation_curves"], strict=True), 1)
        }


def test_figure_2_draws_the_test_set_of_round_1_of_results_json(small_run: _Run) -> None:
    """Fig. 2: the test set of the seeds results.json gives Table I's Tanh row in round 1, its
    points inside the circle (the paper's label 1, found here from the geometry) on top in
    green and those outside in red; below, as many misclassified points as its round-1 test
    error says, the others correct, and that error in the title."""
    from minidl.data import DISK_CENTER, DISK_RADIUS
    from minidl.experiments.seeds import RoundSeeds
    from minidl.experiments.training import make_round_data

    (row,) = [r for r in small_run.rows("I") if r["label"] == "Tanh"]
    seeds = RoundSeeds(**row["seeds"][0])
    data = make_round_data(experiment("I", "Tanh"), seeds)
    raw = data.test.raw
    centre = torch.tensor(DISK_CENTER, dtype=raw.dtype)
    inside = (raw - centre).norm(dim=1) < DISK_RADIUS
    top, bottom = small_run.figures["fig2_test_set.png"].axes
    shown_inside, shown_outside = top.collections[:2]
    assert torch.equal(torch.as_tensor(shown_inside.get_offsets()), raw[inside])
    assert torch.equal(torch.as_tensor(shown_outside.get_offsets()), raw[~inside])
    right, wrong = bottom.collections[:2]
    errors = round(row["test_errors"][0] * len(raw) / 100)
    assert 0 < errors < len(raw)
    assert len(wrong.get_offsets()) == errors and len(right.get_offsets()) == len(raw) - errors
    shown = torch.cat([torch.as_tensor(right.get_offsets()), torch.as_tensor(wrong.get_offsets())])
    assert sorted(map(tuple, shown.tolist())) == sorted(map(tuple, raw.tolist()))
    assert (right.get_label(), wrong.get_label()) == (
        f"correct ({len(raw) - errors})",
        f"misclassified ({errors})",
    )
    assert bottom.get_title().endswith(f"test error {row['test_errors'][0]:.1f}%")


def test_figure_3_draws_the_rates_of_results_json_and_torchs_cyclic_lr(small_run: _Run) -> None:
    """Fig. 3: one line per SGD row of Table III in results.json, named by its label; each
    batch's rate, 10 batches per epoch: the row's per-epoch lr_curve for the constant rate and
    the step decay, and for CLR the rates of PyTorch's CyclicLR (triangular) with the bounds
    and half-cycle that results.json gives, stepped once per batch."""
    rows = [r for r in small_run.rows("III") if r["kind"] == "main" and r["optimizer"] == "sgd"]
    assert [r["scheduler"] for r in rows] == ["none", "step", "clr"]
    top, bottom = small_run.figures["fig3_learning_rates.png"].axes
    batches = 10
    expected = [[lr for lr in row["lr_curve"] for _ in range(batches)] for row in rows[:2]]
    clr = rows[2]["scheduler_settings"]
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=clr["base_lr"])
    schedule = torch.optim.lr_scheduler.CyclicLR(
        optimizer,
        base_lr=clr["base_lr"],
        max_lr=clr["max_lr"],
        step_size_up=clr["step_size_up_batches"],
        mode="triangular",
        cycle_momentum=False,
    )
    torch_clr = []
    for _ in range(5 * batches):
        torch_clr.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    expected.append(torch_clr)
    for axes in (top, bottom):
        lines = axes.get_lines()
        assert [line.get_label() for line in lines] == [row["label"] for row in rows]
        for line, rates in zip(lines, expected, strict=True):
            assert list(line.get_xdata()) == pytest.approx([b / batches for b in range(50)])
            assert list(line.get_ydata()) == pytest.approx(rates, rel=1e-12)


def _training(row: dict[str, Any]) -> tuple[Any, ...]:
    """What of a results.json row decides its training (rows alike train alike)."""
    fields = ("activations", "loss", "mse_reduction", "optimizer", "lr", "momentum")
    more = ("scheduler", "scheduler_settings", "optimizer_settings", "epochs", "sizes")
    return tuple(json.dumps(row[field]) for field in (*fields, *more))


@pytest.mark.parametrize("table", ["I", "II", "III"])
def test_a_table_figure_draws_the_mean_curves_of_results_json(small_run: _Run, table: str) -> None:
    """A table's figure: one line per main row of the table in results.json, named by its label
    (with its activations where it mixes them), then one per variant that trains otherwise
    than every row before it (settings of results.json that differ), named 'variant: ' and its
    label, in its row's colour; each through the mean of the row's validation curves."""
    rows = small_run.rows(table)
    mains = [row for row in rows if row["kind"] == "main"]
    drawn, seen = [], set()
    for row in (*mains, *(row for row in rows if row["kind"] == "variant")):
        if _training(row) not in seen:
            seen.add(_training(row))
            drawn.append(row)
    assert len(drawn) < len(rows) or table == "I"  # (Tables II and III: rows without effect)
    (axes,) = small_run.figures[f"table{table}_validation.png"].axes
    lines = axes.get_lines()
    labels = []
    for row in drawn:
        mixed = len(set(row["activations"])) > 1 and row["kind"] == "main"
        note = f" ({', '.join(row['activations'])})" if mixed else ""
        labels.append(
            f"variant: {row['label']}" if row["kind"] == "variant" else row["label"] + note
        )
    assert [line.get_label() for line in lines] == labels
    colour = {
        row["label"]: line.get_color()
        for row, line in zip(drawn, lines, strict=True)
        if row["kind"] == "main"
    }
    assert len(set(map(str, colour.values()))) == len(mains)
    for line, row in zip(lines, drawn, strict=True):
        assert list(line.get_xdata()) == [1, 2, 3, 4, 5]
        assert list(line.get_ydata()) == _mean(row["validation_curves"])
        if row["kind"] == "variant":
            assert line.get_color() == colour[row["variant_of"]]


def _files(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in out.iterdir()}


def test_removing_other_figures_keeps_the_figures_it_is_given_and_unlinks_the_rest(
    tmp_path: Path,
) -> None:
    """Given ``{name: file}`` of the figures a run drew, the figures' files not among its
    values are unlinked from ``out`` (and named in the return value, in the report's order);
    the figures given, read by their file names, and a file of no figure stay as they were."""
    out = tmp_path / "out"
    out.mkdir()
    earlier = {
        "fig1_loss_criteria.png": b"earlier fig1",
        "tableI_validation.png": b"earlier table I",
        "tableII_validation.png": b"this run's table II",
        "notes.txt": b"the user's",
    }
    for name, content in earlier.items():
        (out / name).write_bytes(content)
    removed = figures.remove_other_figures(out, {"tableII": "tableII_validation.png"})
    assert removed == ["fig1_loss_criteria.png", "tableI_validation.png"]
    assert _files(out) == {
        "tableII_validation.png": b"this run's table II",
        "notes.txt": b"the user's",
    }


def test_other_figures_names_only_the_files_of_figures_not_given(tmp_path: Path) -> None:
    """:func:`~minidl.experiments.figures.other_figures` reads the figures given by their file
    names (the values): a figure given is not listed, nor is a figure's file that is missing;
    it removes nothing."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("fig2_test_set.png", "fig3_learning_rates.png"):
        (out / name).write_bytes(name.encode())
    given = {"fig3": "fig3_learning_rates.png", "tableIII": "tableIII_validation.png"}
    assert figures.other_figures(out, given) == ["fig2_test_set.png"]
    assert sorted(_files(out)) == ["fig2_test_set.png", "fig3_learning_rates.png"]
