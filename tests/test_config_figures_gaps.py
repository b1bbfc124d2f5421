"""Behaviour of ``minidl.experiments.config`` and ``minidl.experiments.figures`` that a second
mutation audit found untested.

Each test checks what a user relies on: a refusal's exception type and message (naming the
class, what was given and what is expected), the bound a check takes and the one next to it,
the values a figure draws (read back from the matplotlib Figure, not saved), and the state a
:class:`~minidl.experiments.figures.FigureWriter` leaves behind.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minidl.experiments import figures
from minidl.experiments.config import (
    CHOICES,
    FIGURE_1,
    TABLE_I,
    TABLE_II,
    TABLE_III,
    TABLES,
    CyclicSchedule,
    PaperResult,
    Protocol,
    StepSchedule,
    experiments_for_tables,
    stack_key,
    training_key,
)
from minidl.experiments.training import RowResult
from tests.test_report import experiment, fake_row

# -- Protocol ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [(2, 25, 3), (2, 25, 25, 1)])
def test_a_protocol_whose_sizes_end_in_another_width_than_2_is_refused(
    sizes: tuple[int, ...],
) -> None:
    """The last width is the number of classes, 2, as the first is the points' coordinates:
    a protocol that begins with 2 and ends otherwise is refused as well, naming the sizes."""
    with pytest.raises(
        ValueError,
        match=rf"^Protocol: sizes must begin and end with 2 .*got {re.escape(repr(sizes))}$",
    ):
        Protocol(sizes=sizes)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_a_protocol_takes_each_floating_point_dtype_the_layers_compute_in(dtype: str) -> None:
    """The four dtypes the message names are taken, bfloat16 included."""
    assert Protocol(dtype=dtype).dtype == dtype


@pytest.mark.parametrize("dtype", ["int32", "int", "float8_e4m3fn", "complex64", "cuda"])
def test_a_protocol_of_a_torch_name_that_is_no_layer_dtype_is_refused(dtype: str) -> None:
    """A name torch has, but of no dtype the layers compute in (an integer, a float8 or a
    complex dtype, a module), is refused in Protocol's name, quoting it."""
    with pytest.raises(
        ValueError,
        match=r"^Protocol: dtype must be the name of a torch floating-point dtype \('float32', "
        rf"'float64', 'float16' or 'bfloat16'\), got '{dtype}'$",
    ):
        Protocol(dtype=dtype)


@pytest.mark.parametrize("value", [1, 1.0, "yes"])
def test_a_protocol_of_a_true_value_that_is_not_true_for_shuffling_is_refused(
    value: object,
) -> None:
    """``shuffle_each_epoch`` must be True itself: 1 or "yes", which a caller may mean as
    True, would be written into results.json as given."""
    with pytest.raises(
        ValueError, match=rf"^Protocol: shuffle_each_epoch must be True .*got {value!r}$"
    ):
        Protocol(shuffle_each_epoch=value)  # type: ignore[arg-type]


# -- schedules and the paper's numbers ---------------------------------------------------------


@pytest.mark.parametrize("gamma", [1.5, 2.0])
def test_a_step_decay_that_would_raise_the_rate_is_refused(gamma: float) -> None:
    """gamma is in [0, 1] (as StepDecay takes it): 1 is taken (no decay), 1.5 is not."""
    assert StepSchedule(gamma=1.0).gamma == 1.0
    with pytest.raises(ValueError, match=r"^StepSchedule: gamma must be in \[0, 1\]"):
        StepSchedule(gamma=gamma)


def test_a_cyclic_schedule_bounds_max_lr_above_0_and_takes_equal_bounds() -> None:
    """max_lr is > 0 (CyclicLR's range): bounds of 0 and 0 are refused, in max_lr's name;
    equal positive bounds (a constant rate) are at least base_lr, and taken."""
    with pytest.raises(ValueError, match=r"^CyclicSchedule: max_lr must be in \(0, inf\)"):
        CyclicSchedule(0.0, 0.0, 1)
    schedule = CyclicSchedule(0.01, 0.01, 3)
    assert (schedule.base_lr, schedule.max_lr, schedule.step_size_up_epochs) == (0.01, 0.01, 3)
    assert CyclicSchedule(0.0, 0.01, 1).base_lr == 0.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mean": 100.5, "sd": 1.0}, "PaperResult: mean must be in [0, 100]"),
        ({"mean": 1.0, "sd": 100.5}, "PaperResult: sd must be in [0, 100]"),
        ({"mean": 1.0, "sd": 1.0, "rounds": 1}, "PaperResult: rounds must be an integer >= 2"),
        (
            {"mean": 1.0, "sd": 1.0, "rounds": 10**6 + 1},
            "PaperResult: rounds must be an integer in [2, 10**6] (the report's Welch test "
            "takes at most 10**6 rounds a side), got 1000001",
        ),
    ],
)
def test_a_papers_result_beyond_its_bounds_is_refused(fields: dict[str, Any], message: str) -> None:
    """A test error and an s.d. beyond 100%, a single round (no s.d.), or more rounds than
    Welch's test takes are refused in PaperResult's name."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        PaperResult(**fields)


def test_a_papers_result_at_its_bounds_is_taken() -> None:
    """The bounds themselves are taken: 100%, 2 rounds and 10**6 rounds."""
    assert PaperResult(100.0, 100.0, 2) == PaperResult(mean=100.0, sd=100.0, rounds=2)
    assert PaperResult(0.0, 0.0, 10**6).rounds == 10**6


# -- Experiment ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "kind", "message"),
    [
        ({"hypothesis": 3}, TypeError, "Experiment: hypothesis must be a str, got 3"),
        ({"variant_of": 3}, TypeError, "Experiment: variant_of must be str or None, got 3"),
        (
            {"activations": ("tanh", "tanh", "tanh", "tanh")},
            ValueError,
            "Experiment: II / SGD, momentum 0 has 4 activations, expected one for each of "
            "the protocol's 3 hidden layers",
        ),
        (
            {"activations": ["tanh", "tanh", "tanh"]},
            TypeError,
            "Experiment: activations must be a tuple of activation names, got ",
        ),
        (
            {"activations": (["tanh"], "tanh", "tanh")},
            ValueError,
            "Experiment: unknown activation ['tanh'] in activations; expected one of ",
        ),
        (
            {"optimizer": "adadelta-published", "momentum": 0.5},
            ValueError,
            "Experiment: momentum applies to SGD only, got momentum 0.5 with optimizer "
            "'adadelta-published'",
        ),
        (
            {"adadelta_rho": 0.5},
            ValueError,
            "Experiment: adadelta_rho applies to ADADELTA only, got adadelta_rho 0.5 with "
            "optimizer 'sgd'",
        ),
        (
            {"adadelta_eps": 1e-9},
            ValueError,
            "Experiment: adadelta_eps applies to ADADELTA only, got adadelta_eps 1e-09 with "
            "optimizer 'sgd'",
        ),
    ],
)
def test_a_row_is_refused_for_each_field_it_gets_wrong(
    changes: dict[str, Any], kind: type[Exception], message: str
) -> None:
    """Each refusal in the row's own name, when it is made, naming what was given: a
    hypothesis or variant_of of no str, one activation too many, a list of activations, an
    activation name of no str (unhashable), momentum with the published ADADELTA, and an
    ADADELTA setting below the choice's (not only above it) on an SGD row."""
    with pytest.raises(kind, match=f"^{re.escape(message)}"):
        dataclasses.replace(TABLE_II[0], **changes)


def test_a_learning_rate_just_past_float16_is_refused_by_the_row() -> None:
    """float16's largest value is 65504: a rate of 70000 (or a CLR reaching it) is refused in
    the row's name, where a rate of 65504 is taken."""
    half = Protocol(dtype="float16")
    row = dataclasses.replace(TABLE_III[0], protocol=half, lr=65504.0)
    assert row.lr == 65504.0
    with pytest.raises(
        ValueError,
        match=r"^Experiment: lr 70000(\.0)? is beyond the range of the protocol's dtype float16 "
        r"\(largest finite value 65504\)$",
    ):
        dataclasses.replace(TABLE_III[0], protocol=half, lr=70000.0)
    clr = CyclicSchedule(1e-3, 70000.0, 2)
    with pytest.raises(
        ValueError,
        match=r"^Experiment: scheduler's max_lr 70000(\.0)? is beyond the range of the "
        r"protocol's dtype float16",
    ):
        dataclasses.replace(TABLE_III[0], protocol=half, scheduler=clr)


def test_numpy_numbers_of_a_protocol_schedule_paper_result_and_row_are_kept_as_pythons() -> None:
    """Every number a row records (results.json writes them) is a Python int or float, given
    as a NumPy one: the protocol's set sizes, the CLR's bounds and half-cycle, the paper's
    rounds, the row's momentum and ADADELTA settings."""
    import numpy as np

    protocol = Protocol(
        n_train=np.int64(500),
        n_validation=np.int64(300),
        n_test=np.int64(200),
    )
    assert [type(n) for n in (protocol.n_train, protocol.n_validation, protocol.n_test)] == [
        int,
        int,
        int,
    ]
    clr = CyclicSchedule(np.float64(0.001), np.float64(0.01), np.int64(2))
    assert [type(v) for v in (clr.base_lr, clr.max_lr, clr.step_size_up_epochs)] == [
        float,
        float,
        int,
    ]
    paper = PaperResult(np.float64(1.5), np.float64(0.5), np.int64(3))
    assert [type(v) for v in (paper.mean, paper.sd, paper.rounds)] == [float, float, int]
    sgd = dataclasses.replace(TABLE_II[0], momentum=np.float64(0.5))
    assert type(sgd.momentum) is float
    adadelta = dataclasses.replace(
        experiment("II", "ADADELTA"), adadelta_rho=np.float64(0.95), adadelta_eps=np.float64(1e-5)
    )
    assert (type(adadelta.adadelta_rho), type(adadelta.adadelta_eps)) == (float, float)


def test_a_rows_activation_names_one_activation_or_each_layers() -> None:
    """``activation`` is the one name of a row of one activation, and every layer's name,
    comma-separated, of a mix."""
    assert experiment("I", "Tanh").activation == "tanh"
    assert experiment("I", "Sigmoid").activation == "sigmoid,tanh,sigmoid"


# -- keys ----------------------------------------------------------------------------------------


def test_rows_that_differ_only_in_what_does_not_train_share_a_training_key() -> None:
    """A "without effect" variant (label, kind, hypothesis, fault, variant_of differ) has the
    training key of the plain row; its stack key is that of every row of the table that
    differs only in its loss reduction, optimizer, ADADELTA settings, momentum or schedule."""
    plain = experiment("II", "SGD, momentum 0")
    published = experiment("II", "SGD, momentum 0.5, as published (momentum without effect)")
    assert published.fault and published.hypothesis and published.kind == "variant"
    assert training_key(published) == training_key(plain)
    others = [
        experiment("II", "SGD, momentum 0, MSE averaged over outputs too"),
        dataclasses.replace(experiment("II", "ADADELTA"), adadelta_eps=1e-4, adadelta_rho=0.5),
        experiment("II", "SGD, momentum 0.9"),
    ]
    for other in others:
        assert training_key(other) != training_key(plain)
        assert stack_key(other) == stack_key(plain)
    sgd, clr = experiment("III", "SGD"), experiment("III", "SGD, CLR")
    assert stack_key(clr) == stack_key(sgd)
    assert stack_key(dataclasses.replace(sgd, lr=0.5)) == stack_key(sgd)


def test_rows_of_other_epochs_or_protocols_have_other_stack_keys() -> None:
    """What changes the data or the initial weights (epochs, the protocol) keeps rows out of
    one stack."""
    plain = experiment("II", "SGD, momentum 0")
    assert stack_key(dataclasses.replace(plain, epochs=7)) != stack_key(plain)
    other = dataclasses.replace(plain, protocol=Protocol(n_train=500))
    assert stack_key(other) != stack_key(plain)


# -- the catalogue -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tables", "expected"),
    [
        ("I", TABLES["1"]),
        ("ii", TABLE_II),
        (" III ", TABLE_III),
        ("3,I,2", (*FIGURE_1, *TABLE_I, *TABLE_II, *TABLE_III)),
        ("2,2", TABLE_II),
    ],
)
def test_experiments_for_tables_takes_roman_numerals_in_any_case_and_order(
    tables: str, expected: tuple[Any, ...]
) -> None:
    """Roman numerals (any case, spaces around) name the tables as the digits do; the rows
    come in table order, each once."""
    assert experiments_for_tables(tables) == expected


def test_figure_1_runs_are_mse_pytorchs_mse_and_cross_entropy_in_order() -> None:
    """Fig. 1's three runs in the order of its legend and its line styles: the paper's MSE,
    PyTorch's MSE (averaged over the outputs too), cross-entropy."""
    assert [(row.label, row.loss, row.mse_reduction) for row in FIGURE_1] == [
        ("MSE", "mse", "paper"),
        ("MSE averaged over outputs too (PyTorch's MSELoss)", "mse", "mean"),
        ("Cross-entropy", "cross-entropy", "paper"),
    ]


@pytest.mark.parametrize("rho", [0.0, 1.0])
def test_an_adadelta_row_takes_a_decay_rate_at_either_end_of_its_range(rho: float) -> None:
    """``adadelta_rho`` is in [0, 1], both ends included, as Adadelta takes it (1 keeps the
    accumulators as they were, 0 keeps only the last step's); just past either end is refused
    in the row's name, quoting what was given."""
    adadelta = {row.label: row for row in TABLE_II}["ADADELTA"]
    assert dataclasses.replace(adadelta, adadelta_rho=rho).adadelta_rho == rho
    past = math.nextafter(rho, 2.0 * rho - 0.5)
    with pytest.raises(
        ValueError, match=rf"^Experiment: adadelta_rho must be in \[0, 1\], got {past!r}$"
    ):
        dataclasses.replace(adadelta, adadelta_rho=past)


def test_table_iii_clr_reading_runs_between_the_bounds_its_label_names() -> None:
    """The variant "SGD, CLR from 0.01 to 0.1" cycles from lr to 10 lr with the main CLR row's
    half-cycle; the main row from lr / 10 to lr (the choices' ratios)."""
    rows = {row.label: row for row in TABLE_III}
    main, reading = rows["SGD, CLR"], rows["SGD, CLR from 0.01 to 0.1"]
    assert isinstance(main.scheduler, CyclicSchedule)
    assert isinstance(reading.scheduler, CyclicSchedule)
    assert (main.scheduler.base_lr, main.scheduler.max_lr) == pytest.approx(
        (0.01 * CHOICES.clr_base_lr_ratio, 0.01 * CHOICES.clr_max_lr_ratio), rel=1e-12
    )
    assert (reading.scheduler.base_lr, reading.scheduler.max_lr) == pytest.approx(
        (0.01, 0.1), rel=1e-12
    )
    assert reading.scheduler.step_size_up_epochs == main.scheduler.step_size_up_epochs == 2
    assert reading.lr == main.lr == 0.01


# -- figures ------------------------------------------------------------------------------------


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The Figure objects the figure functions draw (not saved); closed afterwards."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    made: list[Any] = []
    monkeypatch.setattr(figures, "_save", lambda figure, path: made.append(figure))
    yield made
    for figure in made:
        plt.close(figure)


def _with_curves(row: Any, curves: list[tuple[float, ...]], **fields: Any) -> RowResult:
    """A result of ``row``: one round per validation curve, with ``fields`` replaced in each."""
    result = fake_row(row, [1.0] * len(curves))
    rounds = tuple(
        dataclasses.replace(r, validation_curve=curve, **fields)
        for r, curve in zip(result.rounds, curves, strict=True)
    )
    return RowResult(experiment=row, rounds=rounds, seconds=0.0)


@pytest.mark.parametrize(
    "train_loss", [(0.5, math.inf), (0.5, math.inf, 0.25), (math.nan, 0.5)], ids=str
)
def test_figure_1_counts_a_round_whose_loss_reached_infinity_as_diverged(
    drawn: list[Any], tmp_path: Path, train_loss: tuple[float, ...]
) -> None:
    """A training loss that overflowed to inf (not only one that became NaN) is a diverged
    round in the legend, also where a later epoch's loss is finite again (a cross-entropy of
    inf still has finite gradients, so the training goes on)."""
    mse = _with_curves(experiment("Fig. 1", "MSE"), [(4.0, 2.0)], train_loss=train_loss)
    figures.figure_1([mse], tmp_path / "fig1.png")
    (figure,) = drawn
    (line,) = figure.axes[0].get_lines()
    assert line.get_label() == "MSE\n(1 round, 1 diverged)"


def test_figure_1_styles_repeat_after_its_four_and_its_axis_is_of_the_rows_validation_set(
    drawn: list[Any], tmp_path: Path
) -> None:
    """A fifth run takes the first run's colour and line style again (the styles cycle); the
    error axis is logarithmic down to one point of the rows' own validation set (100 / 200 =
    0.5%, not 0.1% of the paper's 1000)."""
    protocol = Protocol(n_validation=200)
    rows = [
        _with_curves(
            dataclasses.replace(FIGURE_1[0], label=f"run {i}", protocol=protocol), [(4.0, 2.0)]
        )
        for i in range(5)
    ]
    figures.figure_1(rows, tmp_path / "fig1.png")
    (figure,) = drawn
    (axes,) = figure.axes
    styles = [(line.get_color(), line.get_linestyle()) for line in axes.get_lines()]
    assert len(set(styles[:4])) == 4
    assert styles[4] == styles[0]
    assert axes.yaxis.get_transform().linthresh == 0.5


def test_figure_3_draws_the_constant_rate_above_the_schedules(
    drawn: list[Any], tmp_path: Path
) -> None:
    """The constant rate runs along the top of the CLR cycles and the decay's first step: it is
    drawn above them (a higher zorder) on both panels, and thicker on the top one, so that it
    is not hidden."""
    rows = []
    for label in ("SGD", "SGD, step decay", "SGD, CLR"):
        row = experiment("III", label)
        batch_lr = tuple(0.001 * (1 + b % 7) for b in range(30)) if "CLR" in label else ()
        result = fake_row(row, [1.0])
        rounds = tuple(
            dataclasses.replace(r, lr_curve=(0.01, 0.01, 0.005), batch_lr=batch_lr)
            for r in result.rounds
        )
        rows.append(RowResult(experiment=row, rounds=rounds, seconds=0.0))
    figures.figure_3(rows, tmp_path / "fig3.png")
    (figure,) = drawn
    for axes in figure.axes:
        constant, step, clr = axes.get_lines()
        assert constant.get_label() == "SGD"
        assert constant.get_zorder() > max(step.get_zorder(), clr.get_zorder())
    constant, step, clr = figure.axes[0].get_lines()
    assert constant.get_linewidth() > max(step.get_linewidth(), clr.get_linewidth())


def test_an_error_axis_within_its_first_decade_labels_its_minor_ticks(
    drawn: list[Any], tmp_path: Path
) -> None:
    """Errors from 0% to 0.7%: the axis runs from below 0 to under 1%, less than a decade above
    one point's error (0.1%), so its ticks at 0.3, 0.4, ... are labelled as well."""
    figures.table_figure(
        [_with_curves(experiment("I", "Tanh"), [(0.7, 0.5, 0.0)])], "I", tmp_path / "t.png"
    )
    (figure,) = drawn
    (axes,) = figure.axes
    bottom, top = axes.get_ylim()
    assert bottom < 0 < top < 1
    minor = axes.yaxis.get_minor_formatter()
    assert [minor(value, 0) for value in (0.3, 0.4, 0.6)] == ["0.3", "0.4", "0.6"]


def test_a_figure_writer_stages_nothing_once_closed_and_draws_again_in_a_new_folder(
    tmp_path: Path,
) -> None:
    """After ``close`` nothing is staged (the hidden folder is removed), and a figure drawn
    afterwards waits in a new hidden folder inside ``out``, which exists."""
    pytest.importorskip("matplotlib")
    rows = [
        _with_curves(experiment("II", label), [(4.0, 2.0)])
        for label in ("SGD, momentum 0", "SGD, momentum 0.5")
    ]
    table_iii = [_with_curves(experiment("III", "ADADELTA"), [(4.0, 2.0)])]
    out = tmp_path / "out"
    with figures.FigureWriter([r.experiment for r in (*rows, *table_iii)], out) as writer:
        assert writer.draw_next(rows) is True
        writer.close()
        assert writer.staged() == []
        assert writer.draw_next([*rows, *table_iii]) is True
        path = dict((name, path) for path, name in writer.staged())["tableIII_validation.png"]
        assert path.is_file() and path.parent.parent == out
        writer.close()
        assert writer.staged() == []
    assert not out.exists()


def test_figure_2_shows_round_1_of_several(drawn: list[Any], tmp_path: Path) -> None:
    """Fig. 2 is the network of round 1, as its title says: with two rounds its title gives
    round 1's test error (12.5%), not the last round's."""
    figures.figure_2(fake_row(experiment("I", "Tanh"), [12.5, 3.0]), tmp_path / "fig2.png")
    (figure,) = drawn
    assert figure.axes[1].get_title() == "Tanh network (Table I, round 1): test error 12.5%"


def test_figure_2_shows_table_is_tanh_row_only() -> None:
    """Fig. 2 is Table I's Tanh row: a row labelled "Tanh" in another table is not drawn in it."""
    (fig2,) = [figure for figure in figures.FIGURES if figure.name == "fig2"]
    assert fig2.shows(experiment("I", "Tanh"))
    for table in ("II", "III", "Fig. 1"):
        assert not fig2.shows(dataclasses.replace(TABLE_II[0], table=table, label="Tanh"))


def test_a_saved_figure_is_of_its_size_in_inches_at_120_dpi(tmp_path: Path) -> None:
    """A table's figure, 10 x 4.8 inches, is saved at 120 dots per inch: a PNG of 1200 x 576
    pixels (read from the file's IHDR chunk)."""
    pytest.importorskip("matplotlib")
    path = tmp_path / "table.png"
    figures.table_figure([_with_curves(experiment("I", "Tanh"), [(4.0, 2.0)])], "I", path)
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
    width, height = (int.from_bytes(header[i : i + 4], "big") for i in (16, 20))
    assert (width, height) == (1200, 576)


def test_figure_2_draws_no_boundary_line_in_its_legend_where_there_is_none(
    drawn: list[Any], tmp_path: Path
) -> None:
    """A network of one class everywhere has no boundary: its legend's entry says so, with no
    line beside it (a black line would show a boundary that is not drawn)."""
    import torch
    from matplotlib.colors import to_rgba

    from minidl import nn

    result = fake_row(experiment("I", "Tanh"), [50.0])
    model = nn.Linear(2, 2)
    model.weight.data.fill_(0.0)
    assert model.bias is not None
    model.bias.data.copy_(torch.tensor([0.0, 1.0]))
    rounds = tuple(dataclasses.replace(r, model=model) for r in result.rounds)
    row = RowResult(experiment=result.experiment, rounds=rounds, seconds=0.0)
    figures.figure_2(row, tmp_path / "fig2.png")
    (figure,) = drawn
    (entry,) = [
        line
        for line in figure.axes[1].get_lines()
        if line.get_label() == "no decision boundary (one class everywhere)"
    ]
    assert to_rgba(entry.get_color())[3] == 0.0


def test_a_row_refuses_a_name_of_a_str_subclass_it_would_record_as_given() -> None:
    """A NumPy str equal to "mse" is no str that results.json writes as the row's loss: it is
    refused in the row's name, naming the names taken."""
    import numpy as np

    with pytest.raises(
        ValueError, match=r"^Experiment: loss must be one of 'cross-entropy', 'mse', got "
    ):
        dataclasses.replace(TABLE_II[0], loss=np.str_("mse"))


def _with_one_curve(row: Any, curve: tuple[float, ...]) -> RowResult:
    """A result of ``row`` of one round whose validation curve is ``curve``."""
    result = fake_row(row, [1.0])
    rounds = tuple(dataclasses.replace(r, validation_curve=curve) for r in result.rounds)
    return RowResult(experiment=row, rounds=rounds, seconds=0.0)


def test_the_error_axis_of_100000_validation_points_is_labelled_from_its_one_point_error() -> None:
    """With 100 000 validation points one point's error is 0.001%: the axis is logarithmic down
    to it and labelled there, at 0.001, 0.002, 0.005 and up by decades (the ticks from one
    point's error up, however small that is)."""
    pytest.importorskip("matplotlib")

    plt = figures._pyplot()
    figure, axes = plt.subplots()
    try:
        figures._error_axes(axes, "title", 100_000)
        axes.set_ylim(0.0, 60.0)
        ticks = [float(value) for value in axes.yaxis.get_major_locator()()]
    finally:
        plt.close(figure)
    assert ticks[:7] == pytest.approx([0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05])
    assert ticks[-1] == 100.0


def _minor_labels(bottom: float, top: float) -> list[str]:
    """The labels of the error axis's minor ticks 30, 40 and 60 (1000 validation points)
    shown from ``bottom`` to ``top``."""
    pytest.importorskip("matplotlib")

    plt = figures._pyplot()
    figure, axes = plt.subplots()
    try:
        figures._error_axes(axes, "title", 1000)
        axes.set_ylim(bottom, top)
        minor = axes.yaxis.get_minor_formatter()
        return [minor(value, 0) for value in (30.0, 40.0, 60.0)]
    finally:
        plt.close(figure)


def test_an_error_axis_spanning_less_than_a_decade_above_its_linear_part_labels_its_minor_ticks() -> (
    None
):
    """Errors from 15% to 60% (less than a decade, all above one point's 0.1%) show only the
    ticks 20 and 50 of 1, 2, 5 x 10^k: the ticks at 30, 40 and 60 are labelled as well; from
    1% to 60% (more than a decade) they are not."""
    assert _minor_labels(15.0, 60.0) == ["30", "40", "60"]
    assert _minor_labels(1.0, 60.0) == ["", "", ""]


def test_a_closed_figure_writer_leaves_a_folder_made_since_at_its_old_staging_name(
    tmp_path: Path,
) -> None:
    """Once closed, a writer forgets its hidden folder: a folder that another makes at that
    name afterwards is not the writer's, and its next ``close`` (after drawing again into a
    new hidden folder) removes only its own."""
    pytest.importorskip("matplotlib")

    rows = [
        _with_one_curve(experiment("II", label), (4.0, 2.0))
        for label in ("SGD, momentum 0", "SGD, momentum 0.5")
    ]
    table_iii = [_with_one_curve(experiment("III", "ADADELTA"), (4.0, 2.0))]
    out = tmp_path / "out"
    with figures.FigureWriter([r.experiment for r in (*rows, *table_iii)], out) as writer:
        assert writer.draw_next(rows) is True
        ((staged, _),) = writer.staged()
        old = staged.parent
        writer.close()
        assert not old.exists()
        old.mkdir(parents=True)  # (another's folder, of the name the writer used before)
        (old / "theirs.txt").write_text("kept")
        assert writer.draw_next([*rows, *table_iii]) is True
        ((staged, _),) = writer.staged()
        assert staged.parent != old
        writer.close()
        assert not staged.parent.exists()
    assert (old / "theirs.txt").read_text() == "kept"


def test_a_tables_main_rows_markers_start_staggered_within_the_first_period(
    drawn: list[Any], tmp_path: Path
) -> None:
    """Main row i's first marker is at index i * every // len(mains) (1 + that, as an
    epoch), within the first ``every`` epochs, so that every row has a marker in each tenth of
    the epochs; a variant takes its row's. 40 epochs: a marker every 4, the six rows' first at
    0, 0, 1, 2, 2, 3 (not at 0..5, which put the fifth and sixth rows' past the first period)."""
    mains = [e for e in TABLE_I if e.kind == "main"]
    (sigmoid_alone,) = [e for e in TABLE_I if e.label == "Sigmoid alone"]
    (selu_published,) = [e for e in TABLE_I if e.label == "SELU, as published (scale 0.5)"]
    curve = tuple(float(v) for v in range(40, 0, -1))
    rows = [_with_one_curve(e, curve) for e in (*mains, sigmoid_alone, selu_published)]
    figures.table_figure(rows, "I", tmp_path / "table.png")
    (figure,) = drawn
    lines = figure.axes[0].get_lines()
    assert [line.get_label().split(" (")[0] for line in lines[:6]] == [
        e.label.split(" (")[0] for e in mains
    ]
    every = 40 // 10
    expected = [(i * every // len(mains), every) for i in range(len(mains))]
    assert expected == [(0, 4), (0, 4), (1, 4), (2, 4), (2, 4), (3, 4)]
    assert [tuple(line.get_markevery()) for line in lines[:6]] == expected
    assert [line.get_label() for line in lines[6:]] == [
        "variant: Sigmoid alone",
        "variant: SELU, as published (scale 0.5)",
    ]
    assert [tuple(line.get_markevery()) for line in lines[6:]] == [expected[0], expected[5]]
