"""The reproduction's figures (PNG, headless): Figs. 1-3 of the paper and one per table.

matplotlib (minidl's ``reproduce`` extra) is imported inside the functions (with the Agg
backend), so importing this module, and running ``minidl --help``, stays fast, and works
without it.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from minidl._extras import require
from minidl._files import make_folder, make_hidden_folder, naming_file, remove_if_empty
from minidl.experiments.config import Experiment
from minidl.experiments.training import RowResult, make_round_data
from minidl.train import predict

__all__ = [
    "FIGURES",
    "Figure",
    "FigureWriter",
    "other_figures",
    "remove_other_figures",
    "write_figures",
]

DPI = 120


def _pyplot() -> Any:
    require("matplotlib", "minidl.experiments.figures: the figures are drawn with matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(axes: Any, row: RowResult, label: str, color: Any, linestyle: str = "-") -> None:
    """Mean validation curve over the rounds, with a min-max band."""
    curves = torch.tensor([list(r.validation_curve) for r in row.rounds], dtype=torch.float64)
    epochs = torch.arange(1, curves.shape[1] + 1)
    axes.plot(epochs, curves.mean(0), color=color, linestyle=linestyle, lw=1.3, label=label)
    if curves.shape[0] > 1:
        axes.fill_between(
            epochs, curves.min(0).values, curves.max(0).values, color=color, alpha=0.18, lw=0
        )


def _error_axes(axes: Any, title: str, n_validation: int) -> None:
    """Error axis, logarithmic from one validation point's error up (``100 / n_validation``
    %) and linear below it, down to 0, with plain-number ticks at 0 and 1, 2, 5 x 10^k, and
    at the other digits x 10^k as well where the axis spans less than a decade; epochs on x,
    at whole numbers.

    The errors span decades (50% to under 1%), hence the logarithm; a plain log axis has no
    0, and a curve or a band that reached 0% (no validation point wrong, in a round) fell off
    the bottom of the axes. A short run (``--quick``: 5 epochs, errors from 30% to 60%, say)
    had one labelled tick, 50, and epochs 1.5, 2.5 on x. Where fewer than two of those ticks
    lie within the axis (curves between 12% and 18%, or 46% and 49%, had none), evenly spaced
    ones are labelled instead (12, 14, 16, 18)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, Locator, MaxNLocator

    one_point = 100 / n_validation
    axes.set_yscale("symlog", linthresh=one_point, linscale=0.3)

    def ticks(mantissas: tuple[int, ...]) -> list[float]:
        values = [m * 10.0**k for k in range(-3, 3) for m in mantissas]
        return [value for value in values if one_point <= value <= 100]

    def minor_label(value: float, _: object) -> str:
        bottom, top = axes.get_ylim()
        return f"{value:g}" if top < 10 * max(bottom, one_point) else ""

    class ErrorLocator(Locator):
        """The ticks 0 and 1, 2, 5 x 10^k, or evenly spaced ones where fewer than two of
        those lie within the axis."""

        def __call__(self) -> list[float]:
            fixed = [0.0, *ticks((1, 2, 5))]
            assert self.axis is not None  # (set by set_major_locator)
            bottom, top = sorted(self.axis.get_view_interval())
            if sum(bottom <= value <= top for value in fixed) >= 2:
                return fixed
            even = MaxNLocator(4, steps=[1, 2, 2.5, 5, 10])
            return [float(value) for value in even.tick_values(bottom, top)]

    axes.yaxis.set_major_locator(ErrorLocator())
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_locator(FixedLocator(ticks((3, 4, 6, 7, 8, 9))))
    axes.yaxis.set_minor_formatter(FuncFormatter(minor_label))
    # (matplotlib's default AutoLocator, whole numbers only)
    axes.xaxis.set_major_locator(MaxNLocator("auto", steps=[1, 2, 2.5, 5, 10], integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation error (%)")
    axes.set_title(title)
    axes.grid(True, which="major", alpha=0.3)


def _save(figure: Any, path: Path) -> None:
    with naming_file(path):
        figure.savefig(path, dpi=DPI)


@contextlib.contextmanager
def _figure(plt: Any, *args: Any, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """``plt.subplots(*args, **kwargs)``, the figure closed on leaving, whatever happens:
    pyplot keeps every figure it made until it is closed, so one left by an error (a full disk
    as it is saved) or an interrupt while it is drawn would stay in a process that goes on.

    The figures are made with ``layout="constrained"``, which keeps legends placed outside the
    axes inside the image in one drawing (``tight_layout`` and ``bbox_inches="tight"`` draw it
    again)."""
    figure, axes = plt.subplots(*args, **kwargs)
    try:
        yield figure, axes
    finally:
        plt.close(figure)


#: Fig. 1's runs, in order: a colour and a line style each, so that the curves are told apart
#: in greyscale and by a reader who does not tell orange from red (the two MSE runs were
#: orange and red, both solid).
FIGURE_1_STYLES = (("tab:orange", "--"), ("tab:purple", "-."), ("tab:blue", "-"), ("0.3", ":"))


def figure_1(rows: Sequence[RowResult], path: Path) -> None:
    """Validation error per epoch with MSE and with cross-entropy: each run's mean over its
    rounds, in a band from the lowest to the highest round, as the legend's title says; each
    run in its own colour and line style (:data:`FIGURE_1_STYLES`)."""
    plt = _pyplot()
    with _figure(plt, figsize=(8.5, 4.4), layout="constrained") as (figure, axes):
        for index, row in enumerate(rows):
            diverged = sum(any(not math.isfinite(v) for v in r.train_loss) for r in row.rounds)
            note = f", {diverged} diverged" if diverged else ""
            rounds = len(row.rounds)
            label = f"{row.experiment.label}\n({rounds} round{'s' * (rounds != 1)}{note})"
            color, linestyle = FIGURE_1_STYLES[index % len(FIGURE_1_STYLES)]
            _band(axes, row, label, color, linestyle)
        _error_axes(
            axes,
            "Fig. 1: validation error vs epoch by loss (Tanh, SGD, lr 0.1)",
            rows[0].experiment.protocol.n_validation,
        )
        # (the image read alone says what the line and the band are, as the report's caption)
        axes.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            frameon=False,
            title="line: mean over the rounds\nband: lowest to highest round",
            title_fontsize=8,
            alignment="left",
        )
        _save(figure, path)


def figure_2(row: RowResult, path: Path) -> None:
    """The test set by label (top); the network's right and wrong answers and its boundary.

    The paper's colours (green: label 1 or correct, red: label 0 or misclassified), each with
    its own marker as well (dots and triangles, dots and crosses), for a reader who does not
    tell red from green; the misclassified points are drawn above the boundary and the
    circle, near which they lie."""
    plt = _pyplot()
    first = row.rounds[0]
    data = make_round_data(row.experiment, first.seeds)
    raw, labels = data.test.raw, data.test.y
    predicted = predict(first.model, data.test.x)
    correct = predicted == labels
    with _figure(plt, 2, 1, figsize=(5.6, 10.4), layout="constrained") as (figure, (top, bottom)):
        top.scatter(*raw[labels == 1].T, s=7, color="tab:green", label="label 1 (inside)")
        top.scatter(
            *raw[labels == 0].T, s=9, color="tab:red", marker="^", label="label 0 (outside)"
        )
        top.set_title("Test set")
        bottom.scatter(
            *raw[correct].T, s=7, color="tab:green", label=f"correct ({int(correct.sum())})"
        )
        bottom.scatter(
            *raw[~correct].T,
            s=30,
            color="tab:red",
            marker="x",
            linewidths=1.3,
            zorder=3,  # (above the boundary and the circle, lines at 2, which crossed them out)
            label=f"misclassified ({int((~correct).sum())})",
        )
        grid = torch.linspace(0.0, 1.0, 301, dtype=torch.float64)
        gx, gy = torch.meshgrid(grid, grid, indexing="xy")
        points = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
        inside = predict(first.model, data.normalize(points)).reshape(gx.shape).to(torch.float64)
        contours = bottom.contour(gx, gy, inside, levels=[0.5], colors="black", linewidths=1.2)
        # (a network that gives one class over the whole square has none: the legend said so
        # all the same)
        drawn = any(len(path.vertices) for path in contours.get_paths())
        bottom.plot(
            [],
            [],
            color="black" if drawn else "none",
            lw=1.2,
            label="decision boundary" if drawn else "no decision boundary (one class everywhere)",
        )
        from minidl.data import DISK_CENTER, DISK_RADIUS

        circle = plt.Circle(DISK_CENTER, DISK_RADIUS, fill=False, ls="--", color="0.45", lw=1.0)
        bottom.add_patch(circle)
        bottom.plot([], [], color="0.45", ls="--", lw=1.0, label="true circle")
        bottom.set_title(f"Tanh network (Table I, round 1): test error {first.test_error:.1f}%")
        for axes in (top, bottom):
            axes.set_xlim(0, 1)
            axes.set_ylim(0, 1)
            axes.set_aspect("equal")
            axes.set_xlabel("x1 (before normalisation)")
            axes.set_ylabel("x2 (before normalisation)")
            axes.legend(
                loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False
            )
        _save(figure, path)


def figure_3(rows: Sequence[RowResult], path: Path) -> None:
    """Learning rate over training (top) and per batch over the first epochs (bottom)."""
    plt = _pyplot()
    with _figure(plt, 2, 1, figsize=(8, 6.4), layout="constrained") as (figure, (top, bottom)):
        # The constant rate is drawn above the others, thicker: at 1e-2 it runs along the top of
        # the CLR cycles and the first step of the decay, which hid it in the top panel.
        styles = {
            "none": ("0.2", ":", 1.6, 3),
            "step": ("tab:purple", "--", 0.8, 2),
            "clr": ("tab:green", "-", 0.8, 2),
        }
        for row in rows:
            first = row.rounds[0]
            color, linestyle, width, order = styles[row.experiment.scheduler_name]
            protocol = row.experiment.protocol
            batches_per_epoch = max(1, -(-protocol.n_train // protocol.batch_size))
            if first.batch_lr:
                batch_lr = first.batch_lr
            else:  # per-epoch schedules: each batch uses its epoch's rate
                batch_lr = tuple(lr for lr in first.lr_curve for _ in range(batches_per_epoch))
            x = torch.arange(len(batch_lr), dtype=torch.float64) / batches_per_epoch
            label = row.experiment.label
            top.step(
                x,
                batch_lr,
                where="post",
                color=color,
                ls=linestyle,
                lw=width,
                zorder=order,
                label=label,
            )
            shown = 12 * batches_per_epoch
            bottom.step(
                x[:shown],
                batch_lr[:shown],
                where="post",
                color=color,
                ls=linestyle,
                zorder=order,
                label=label,
            )
        top.set_yscale("log")
        top.set_xlabel("epoch")
        top.set_ylabel("learning rate")
        top.set_title("Fig. 3: learning rate under each schedule (SGD, lr 1e-2)")
        bottom.set_xlabel(
            "epoch (the rate changes per batch under CLR, per epoch under step decay)"
        )
        bottom.set_ylabel("learning rate")
        bottom.set_title("The first epochs, batch by batch")
        for axes in (top, bottom):
            axes.grid(True, which="major", alpha=0.3)
            axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        _save(figure, path)


#: The markers of a table's main rows, in order (a variant has its row's, open): 11 of them,
#: against the 10 colours, so that no two of the first 110 rows share both.
TABLE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h")


def table_figure(rows: Sequence[RowResult], table: str, path: Path) -> None:
    """Mean validation error per epoch of each row of a table.

    Each main row has its own colour and marker (:data:`TABLE_MARKERS`, filled, one every
    tenth of the epochs, the rows' markers at staggered epochs; the pair repeats after 110
    rows), so that the rows are told apart in greyscale and by a reader who confuses colours;
    variants are drawn in the colour and the marker of the row they vary (the marker open),
    dashed or dotted. A row that trains exactly as a row already drawn (a "without effect"
    variant, or a main row of one's own) is left out; the report names it.
    """
    plt = _pyplot()
    from minidl.experiments.config import training_key

    mains = [r for r in rows if r.experiment.kind == "main"]
    colors = {row.experiment.label: plt.get_cmap("tab10")(i % 10) for i, row in enumerate(mains)}
    markers = {
        row.experiment.label: TABLE_MARKERS[i % len(TABLE_MARKERS)] for i, row in enumerate(mains)
    }
    epochs_drawn = len(rows[0].rounds[0].validation_curve)
    every = max(1, epochs_drawn // 10)
    # (the first marker of main row i at epoch 1 + i * every / mains: the rows' markers apart)
    starts = {row.experiment.label: i * every // len(mains) for i, row in enumerate(mains)}
    drawn = set()
    variant_styles = ("--", ":", "-.")
    count: dict[str, int] = {}
    with _figure(plt, figsize=(10, 4.8), layout="constrained") as (figure, axes):
        for row in (*mains, *(r for r in rows if r.experiment.kind == "variant")):
            key = training_key(row.experiment)
            if key in drawn:
                continue
            drawn.add(key)
            curves = torch.tensor(
                [list(r.validation_curve) for r in row.rounds], dtype=torch.float64
            )
            epochs = torch.arange(1, curves.shape[1] + 1)
            if row.experiment.kind == "main":
                activations = row.experiment.activations
                # A row that mixes activations (Table I's Sigmoid and ReLU) says which, by layer.
                mixed = f" ({', '.join(activations)})" if len(set(activations)) > 1 else ""
                # (parent: the main row whose colour and marker the line takes, here itself)
                parent = row.experiment.label
                style, width, face = "-", 1.5, colors[parent]
                label = row.experiment.label + mixed
            else:
                parent = row.experiment.variant_of or ""
                index = count.get(parent, 0)
                count[parent] = index + 1
                style = variant_styles[index % len(variant_styles)]
                width, face, label = 1.0, "white", f"variant: {row.experiment.label}"
            axes.plot(
                epochs,
                curves.mean(0),
                color=colors.get(parent, "0.3"),
                ls=style,
                lw=width,
                marker=markers.get(parent, "."),
                markevery=(starts.get(parent, 0), every),
                markersize=5,
                markerfacecolor=face,
                label=label,
            )
        rounds = len(rows[0].rounds)
        _error_axes(
            axes,
            f"Table {table}: mean validation error over {rounds} round{'s' * (rounds > 1)}",
            rows[0].experiment.protocol.n_validation,
        )
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        _save(figure, path)


def _draw_figure_2(rows: Sequence[RowResult], path: Path) -> None:
    figure_2(rows[0], path)


def _table(
    table: str,
) -> tuple[Callable[[Experiment], bool], Callable[[Sequence[RowResult], Path], None]]:
    """Which rows a table's figure shows, and how it is drawn."""

    def shows(experiment: Experiment) -> bool:
        return experiment.table == table

    def draw(rows: Sequence[RowResult], path: Path) -> None:
        table_figure(rows, table, path)

    return shows, draw


@dataclass(frozen=True)
class Figure:
    """One figure of the reproduction: its name in the report, its file, the rows it shows."""

    name: str
    file: str
    shows: Callable[[Experiment], bool]
    draw: Callable[[Sequence[RowResult], Path], None]


#: Every figure, in the order of the report.
FIGURES: tuple[Figure, ...] = (
    Figure("fig1", "fig1_loss_criteria.png", lambda e: e.table == "Fig. 1", figure_1),
    Figure(
        "fig2",
        "fig2_test_set.png",
        lambda e: e.table == "I" and e.label == "Tanh",
        _draw_figure_2,
    ),
    Figure(
        "fig3",
        "fig3_learning_rates.png",
        lambda e: e.table == "III" and e.kind == "main" and e.optimizer == "sgd",
        figure_3,
    ),
    *(
        Figure(f"table{table}", f"table{table}_validation.png", *_table(table))
        for table in ("I", "II", "III")
    ),
)


class FigureWriter:
    """Draws the figures of a run's experiments, each as soon as all the rows it shows are in.

    ``minidl reproduce`` draws some while the last rows still train (on a core that a finished
    worker leaves free), and the rest at the end. A figure is the same whenever it is drawn.
    Until :meth:`draw_all` (or :meth:`move_into_out`), the files wait in a hidden folder inside
    ``out``, which :meth:`close` (or leaving a ``with`` block) removes: a run that fails leaves
    the figures of the previous run in ``out`` as they were, beside its report, and removes
    the folders it made for ``out`` (``out`` and its missing parents) that are left empty.

    Args:
        experiments: the run's rows; a figure is drawn if it shows at least one of them.
        out: the folder of the files (created if missing).

    Example:
        >>> with FigureWriter(experiments, out) as writer:  # doctest: +SKIP
        ...     writer.draw_next(results_so_far)
        ...     figures = writer.draw_all(results)
    """

    def __init__(self, experiments: Sequence[Experiment], out: Path) -> None:
        self.out = out
        shown_by = [(figure, [e for e in experiments if figure.shows(e)]) for figure in FIGURES]
        self._pending = [(figure, shown) for figure, shown in shown_by if shown]
        self._drawn: list[Figure] = []
        self._staged: list[Figure] = []  # (those of _drawn in the staging folder, not yet moved)
        self._staging: Path | None = None
        self._hidden: list[Path] = []  # (the staging folder's name, known before it is made)
        self._made: list[Path] = []  # (the folders made for out, removed again if left empty)

    def __enter__(self) -> FigureWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the figures drawn and not yet moved into ``out`` by :meth:`move_into_out`,
        and the folders made for ``out`` that are left empty."""
        for folder in self._hidden:
            shutil.rmtree(folder, ignore_errors=True)
        self._hidden = []
        self._staging = None
        self._staged = []
        remove_if_empty(self._made)
        self._made = []

    def draw_next(self, results: Sequence[RowResult]) -> bool:
        """Draw the first figure not drawn yet whose rows are all in ``results``.

        Returns:
            Whether a figure was drawn.
        """
        have = {result.experiment for result in results}
        for index, (figure, shown) in enumerate(self._pending):
            if all(experiment in have for experiment in shown):
                if self._staging is None:
                    self._made += make_folder(self.out)
                    self._staging = make_hidden_folder(self.out, ".figures-", self._hidden)
                rows = [result for result in results if figure.shows(result.experiment)]
                figure.draw(rows, self._staging / figure.file)
                self._drawn.append(figure)
                self._staged.append(figure)
                del self._pending[index]
                return True
        return False

    def draw_all(self, results: Sequence[RowResult]) -> dict[str, str]:
        """Draw every figure not drawn yet and move all of them into ``out``
        (:meth:`draw_remaining`, then :meth:`move_into_out`).

        Args:
            results: every row of the run.

        Returns:
            ``{name: file name}`` of every figure (relative to ``out``), in the report's order.

        Raises:
            ValueError: ``results`` misses a row that a figure shows (nothing is moved).
        """
        figures = self.draw_remaining(results)
        self.move_into_out()
        return figures

    def draw_remaining(self, results: Sequence[RowResult]) -> dict[str, str]:
        """Draw every figure not drawn yet, leaving them out of ``out`` until
        :meth:`move_into_out` (so that the files that go with them can be written first).

        Args:
            results: every row of the run.

        Returns:
            ``{name: file name}`` of every figure (relative to ``out``), in the report's order.

        Raises:
            ValueError: ``results`` misses a row that a figure shows.
        """
        while self.draw_next(results):
            pass
        if self._pending:
            missing = ", ".join(figure.name for figure, _ in self._pending)
            raise ValueError(f"FigureWriter: the results miss rows of the figures {missing}")
        drawn = {figure.name for figure in self._drawn}
        return {figure.name: figure.file for figure in FIGURES if figure.name in drawn}

    def staged(self) -> list[tuple[Path, str]]:
        """The figures drawn and not yet moved into ``out``: ``(path, file name)`` of each, in
        the order drawn (for a caller that moves them in with other files, then calls
        :meth:`close`)."""
        if self._staging is None:
            return []
        return [(self._staging / figure.file, figure.file) for figure in self._staged]

    def move_into_out(self) -> None:
        """Move the figures drawn so far into ``out`` (replacing the files of those names); a
        figure drawn after it waits in a new hidden folder until it is called again."""
        if self._staging is not None:
            for figure in self._staged:
                os.replace(self._staging / figure.file, self.out / figure.file)
            self.close()


def remove_other_figures(out: Path, figures: dict[str, str]) -> list[str]:
    """Remove from ``out`` the files of :data:`FIGURES` that are not in ``figures``.

    ``minidl reproduce --tables 2`` into a folder that holds a full run's figures would otherwise
    leave Figs. 1-3 of that earlier run (other rows, perhaps other seeds) beside a report and a
    JSON that do not show them. Only the figures' own file names are touched; other files stay.

    Returns:
        The names of the files removed.
    """
    removed = other_figures(out, figures)
    for name in removed:
        (out / name).unlink()
    return removed


def other_figures(out: Path, figures: dict[str, str]) -> list[str]:
    """The names of the files in ``out`` that :func:`remove_other_figures` removes: those of
    :data:`FIGURES` not in ``figures`` that are plain files (not links)."""
    kept = set(figures.values())
    return [
        figure.file
        for figure in FIGURES
        if figure.file not in kept
        and (out / figure.file).is_file()
        and not (out / figure.file).is_symlink()
    ]


def write_figures(results: Sequence[RowResult], out: Path) -> dict[str, str]:
    """Draw every figure whose rows were run; return ``{name: file name}`` (relative to ``out``)."""
    with FigureWriter([result.experiment for result in results], out) as writer:
        return writer.draw_all(results)
