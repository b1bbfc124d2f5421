"""The internals (minidl._validate, _setting, _scalar, _files, _frozen, _interrupts, _allocator,
_memory, _extras and minidl.experiments.figures) under a second round of hand-made mutations:
tests that kill the bugs the suite let through, each against exact expected values."""

from __future__ import annotations

import copy
import errno
import importlib
import itertools
import os
import pickle
import signal
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.test_figures import _Axes

# -- minidl._validate -------------------------------------------------------------------------


def test_shown_writes_a_tensor_of_twenty_elements_whole_and_one_of_more_by_its_shape() -> None:
    """A tensor of up to ``LONGEST_SHOWN_ITEMS`` (20) elements is written as ``repr`` writes
    it (its values are short enough to read); one of 21 by its shape and dtype."""
    from minidl._validate import shown

    twenty = torch.arange(20.0)
    assert shown(twenty) == repr(twenty)
    assert shown(torch.arange(21.0)) == "a tensor of shape (21,), torch.float32"


def test_shown_writes_a_number_whose_repr_has_100_characters_whole() -> None:
    """A number other than an int whose ``repr`` has up to ``LONGEST_TEXT`` (100) characters
    is written whole; one of 101 by its first 40 characters and its length."""
    from decimal import Decimal

    from minidl._validate import shown

    hundred = Decimal("1" * 89)  # (Decimal('...'): 11 characters around the digits)
    assert len(repr(hundred)) == 100
    assert shown(hundred) == repr(hundred)
    longer = Decimal("1" * 90)
    assert shown(longer) == f"{repr(longer)[:40]}... (a Decimal written in 101 characters)"


def test_shown_path_quotes_an_empty_path() -> None:
    """An empty path would leave nothing to read in the message (``cannot write : ...``): it
    is quoted, ``''``; a plain one is named as it is."""
    from minidl._validate import shown_path

    assert shown_path("") == "''"
    assert shown_path("runs/a.ckpt") == "runs/a.ckpt"


def test_check_real_names_a_large_tensor_by_its_shape_without_its_type_name() -> None:
    """A value that is no real number is named after its type (``str '0.1'``), but a tensor
    that ``shown`` writes by its shape is named so alone (``a tensor of shape ...``), not
    ``Tensor a tensor of shape ...``."""
    from minidl._validate import check_real

    with pytest.raises(
        TypeError,
        match=r"^f: x must be a finite number in \(-inf, inf\) \(a float or an int\), got "
        r"a tensor of shape \(50, 8\), torch\.float32$",
    ):
        check_real("f", "x", torch.zeros(50, 8))
    with pytest.raises(TypeError, match=r"\(a float or an int\), got str '0\.1'$"):
        check_real("f", "x", "0.1")


# -- minidl._frozen ---------------------------------------------------------------------------


def _tree() -> dict[str, Any]:
    return {"lr": [0.1, 0.01], "training": {"epoch": 2, "history": [[1.0], [2.0]]}}


def test_a_frozen_tree_refuses_every_change_in_place_and_stays_as_it_was() -> None:
    """Each change in place of a frozen JSON tree (``+=``, ``*=``, ``|=``, sorting, reversing,
    inserting, removing) raises a TypeError in the refusal's words, and the tree is left as it
    was, down to its nested lists."""
    from minidl._frozen import FrozenDict, FrozenList, frozen

    tree = frozen(_tree(), "read-only; copy it")
    assert type(tree) is FrozenDict and type(tree["lr"]) is FrozenList
    assert type(tree["training"]["history"][0]) is FrozenList
    lr, training = tree["lr"], tree["training"]
    changes: list[Callable[[], object]] = [
        lambda: lr.__iadd__([1.0]),
        lambda: lr.__imul__(2),
        lambda: training.__ior__({"epoch": 3}),
        lr.sort,
        lr.reverse,
        lambda: lr.insert(0, 1.0),
        lambda: lr.remove(0.1),
        lambda: training["history"][1].append(3.0),
        lambda: training.setdefault("new", 1),
        training.popitem,
    ]
    for change in changes:
        with pytest.raises(TypeError, match=r"^read-only; copy it$"):
            change()
    assert tree == _tree()


def test_a_frozen_tree_refuses_its_constructor_called_again() -> None:
    """``__init__`` called again on a made FrozenDict or FrozenList (``dict.__init__`` would add
    the items, ``list.__init__`` replace them) is refused, and the items are kept."""
    from minidl._frozen import frozen

    tree = frozen(_tree(), "read-only")
    with pytest.raises(TypeError, match=r"^read-only$"):
        tree.__init__({"x": 1}, "other")
    with pytest.raises(TypeError, match=r"^read-only$"):
        tree["lr"].__init__([5.0], "other")
    assert tree == _tree()


def test_a_deep_copy_of_a_frozen_tree_is_plain_and_changeable_a_copy_is_itself() -> None:
    """``copy.deepcopy`` gives plain dicts and lists all the way down (to change and build a new
    value from), equal to the tree and sharing none of its lists; ``copy.copy`` gives the
    frozen tree itself; a pickled one comes back frozen, refusing in the same words."""
    from minidl._frozen import FrozenDict, FrozenList, frozen

    tree = frozen(_tree(), "read-only")
    deep = copy.deepcopy(tree)
    assert deep == _tree() and type(deep) is dict and type(deep["lr"]) is list
    assert type(deep["training"]) is dict and type(deep["training"]["history"][0]) is list
    assert type(copy.deepcopy(tree["lr"])) is list
    deep["lr"].append(1.0)
    deep["training"]["history"][0].append(5.0)
    assert tree == _tree()
    assert copy.copy(tree) is tree and copy.copy(tree["lr"]) is tree["lr"]
    loaded = pickle.loads(pickle.dumps(tree))
    assert loaded == _tree() and type(loaded) is FrozenDict and type(loaded["lr"]) is FrozenList
    with pytest.raises(TypeError, match=r"^read-only$"):
        loaded["epoch"] = 1
    with pytest.raises(TypeError, match=r"^read-only$"):
        loaded["lr"].append(1.0)


# -- minidl._validate, the checks of data sets --------------------------------------------------


def test_check_samples_refuses_a_0_dim_tensor_as_holding_no_sample() -> None:
    """A 0-dim ``x`` or ``y`` has no sample dimension: refused as holding no sample, by its
    shape ``()``, not with torch's IndexError from reading ``shape[0]``."""
    from minidl._validate import check_samples

    with pytest.raises(ValueError, match=r"^f: x must hold at least one sample, got shape \(\)$"):
        check_samples("f", torch.tensor(1.0), torch.zeros(1))
    with pytest.raises(ValueError, match=r"^f: y must hold at least one sample, got shape \(\)$"):
        check_samples("f", torch.zeros(1, 2), torch.tensor(0))


# -- minidl._setting --------------------------------------------------------------------------


def test_a_fixed_setting_whose_slot_has_a_class_default_is_set_by_the_constructor() -> None:
    """A subclass that gives the slot of a fixed setting a class default (``_in_features =
    0``) still has it set by the constructor: the instance does not hold it yet, so the value
    given is taken (not refused as fixed at the class's 0), and read back; set again to another
    value afterwards it is refused, naming the value kept."""
    from minidl import nn

    class Sized(nn.Linear):
        _in_features = 0

    layer = Sized(3, 2)
    assert (layer.in_features, layer.out_features) == (3, 2)
    assert tuple(layer.weight.shape) == (2, 3)
    with pytest.raises(
        AttributeError, match=r"^Sized: in_features is fixed at construction \(3\), got 4; "
    ):
        layer.in_features = 4
    assert layer.in_features == 3


def test_a_setting_dropped_by_a_deep_copy_warns_at_the_line_that_copies() -> None:
    """A module holding a plain ``inplace=True`` (as an earlier version pickled it), deep
    copied: the attribute is dropped with a UserWarning that names the line calling
    ``copy.deepcopy`` (not a line of the copy module), and the copy computes as with
    ``inplace=False``."""
    from minidl import nn

    relu = nn.ReLU()
    relu.__dict__["inplace"] = True  # (a plain attribute, as an earlier version kept it)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        copied = copy.deepcopy(relu)
    assert [(w.category, w.filename, str(w.message)) for w in caught] == [
        (
            UserWarning,
            __file__,
            "ReLU: inplace=True, pickled by an earlier minidl version that ignored it, is dropped "
            "(setting it now raises): the ReLU computes as it did, as with inplace=False",
        )
    ]
    assert copied.inplace is False
    x = torch.tensor([-1.0, 2.0])
    assert torch.equal(copied(x), torch.tensor([0.0, 2.0])) and torch.equal(
        x, torch.tensor([-1.0, 2.0])
    )


# -- minidl._scalar ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_add_scaled_gives_every_element_one_rounding_of_the_float32_sum(dtype: torch.dtype) -> None:
    """``add_scaled`` (a new tensor) of 16-bit CPU tensors gives each element
    ``target + alpha * other`` computed in float32 with ``alpha`` rounded to the dtype, rounded
    once, wherever the element lies (torch's own ``add`` rounds the product first over a
    tensor's last elements); the same bits as ``add_scaled_``, the inputs left unchanged."""
    from minidl._scalar import add_scaled, add_scaled_

    generator = torch.Generator().manual_seed(0)
    target = torch.randn(203, generator=generator).to(dtype)
    other = torch.randn(203, generator=generator).to(dtype)
    kept = target.clone()
    alpha = -0.1
    rounded = float(torch.tensor(alpha, dtype=dtype))
    expected = (target.float() + rounded * other.float()).to(dtype)
    assert torch.equal(add_scaled(target, other, alpha), expected)
    assert torch.equal(target, kept)
    assert torch.equal(add_scaled_(target.clone(), other, alpha), expected)


# -- minidl._files ----------------------------------------------------------------------------


def test_make_folder_returns_the_folders_it_made_not_a_parent_named_through_dotdot(
    tmp_path: Path,
) -> None:
    """``make_folder`` returns the folders it made, deepest first: ``new/deep`` and ``new``;
    for ``a/../b``, ``a/../b`` and ``a`` (``a/..`` is ``tmp_path``, which was there), so that
    removing them leaves ``tmp_path`` as it was."""
    from minidl._files import make_folder, remove_if_empty

    assert make_folder(tmp_path / "new" / "deep") == [tmp_path / "new" / "deep", tmp_path / "new"]
    made = make_folder(tmp_path / "a" / ".." / "b")
    assert made == [tmp_path / "a" / ".." / "b", tmp_path / "a"]
    remove_if_empty(made)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["new"]


def test_make_folder_that_fails_removes_the_parents_it_made(tmp_path: Path) -> None:
    """A folder whose last name is too long (ENAMETOOLONG) fails after its missing parents
    ``new/deep`` were made: they are removed again, deepest first, and the OSError raised;
    a folder that was there before is left."""
    from minidl._files import make_folder

    (tmp_path / "kept").mkdir()
    with pytest.raises(OSError) as error:
        make_folder(tmp_path / "new" / "deep" / ("x" * 300))
    assert error.value.errno == errno.ENAMETOOLONG
    assert [path.name for path in tmp_path.iterdir()] == ["kept"]


def test_a_path_with_a_nul_character_is_no_special_file_and_no_link_loop(tmp_path: Path) -> None:
    """``os.stat`` refuses a path with a NUL character with a ValueError: such a path names
    no special file and no loop of links (it is refused where the path is checked). A missing
    path is no loop either; a link to itself is one."""
    from minidl._files import is_link_loop, special_file_kind

    assert special_file_kind("a\0b") is None
    assert is_link_loop("a\0b") is False
    assert is_link_loop(tmp_path / "missing") is False
    assert special_file_kind(tmp_path / "missing") is None
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert is_link_loop(tmp_path / "loop") is True
    assert special_file_kind("/dev/null") == "character device"


# -- minidl._interrupts -----------------------------------------------------------------------


def test_a_signal_ignored_while_the_deferral_is_paused_is_deferred_no_more() -> None:
    """Code run in ``Deferred.paused`` that sets SIGTERM to be ignored (``SIG_IGN``): from then
    on SIGTERM is not deferred (its handler stays ``SIG_IGN``, not the deferral's), and the
    deferral's end leaves it ignored rather than putting back the Python handler it replaced;
    SIGINT, still a Python handler, is deferred again, then put back."""
    from minidl._interrupts import deferring_interrupts

    calls: list[int] = []

    def handler(number: int, frame: object) -> None:
        calls.append(number)

    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
        with deferring_interrupts() as deferred:
            assert signal.getsignal(signal.SIGTERM) is not handler  # (deferred)
            with deferred.paused():
                assert signal.getsignal(signal.SIGTERM) is handler
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGINT) is not handler  # (deferred again)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is handler
        assert calls == []
    finally:
        for number, kept in previous.items():
            signal.signal(number, kept)


def test_holding_interrupts_leaves_a_signal_the_caller_blocked_blocked() -> None:
    """The mask is set back as it was, not merely unblocked: a SIGTERM that the caller had
    blocked before is still blocked after the block, SIGINT (not blocked before) is not."""
    from minidl._interrupts import holding_interrupts

    before = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    try:
        with holding_interrupts():
            pass
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        assert signal.SIGTERM in mask and signal.SIGINT not in mask
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def test_deferring_interrupts_not_active_lets_a_signal_through_at_once() -> None:
    """``deferring_interrupts(active=False)`` defers nothing, in the main thread too: the
    handler stays in place and a SIGINT sent inside reaches it at once; the Deferred yielded
    notes nothing."""
    from minidl._interrupts import deferring_interrupts

    calls: list[int] = []

    def handler(number: int, frame: object) -> None:
        calls.append(number)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        with deferring_interrupts(active=False) as deferred:
            assert signal.getsignal(signal.SIGINT) is handler
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # (handled here at the latest)
            assert calls == [signal.SIGINT]
            assert deferred.noted == []
    finally:
        signal.signal(signal.SIGINT, previous)
    assert calls == [signal.SIGINT]


def test_a_second_signal_as_the_deferral_ends_does_not_defer_the_handlers_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGTERM noted, then a second one just as the deferral's end has put SIGINT's handler
    back (the second is handed over at once, with the first): both reach their handler, and
    no handler is left deferred for good (SIGINT's put back, not the deferral's again)."""
    from minidl._interrupts import deferring_interrupts

    calls: list[int] = []

    def handler(number: int, frame: object) -> None:
        calls.append(number)

    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    setting = signal.signal
    ending: list[bool] = []

    def sending(number: int, given: Any) -> Any:
        kept = setting(number, given)
        if ending == [True] and number == signal.SIGINT and given is handler:
            ending.append(True)
            os.kill(os.getpid(), signal.SIGTERM)  # (its handler is still the deferral's)
            time.sleep(0.01)
        return kept

    try:
        setting(signal.SIGINT, handler)
        setting(signal.SIGTERM, handler)
        monkeypatch.setattr(signal, "signal", sending)
        with deferring_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            ending.append(True)
        assert ending == [True, True]
        assert calls == [signal.SIGTERM, signal.SIGTERM]
        assert signal.getsignal(signal.SIGINT) is handler
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        monkeypatch.undo()
        for number, kept in previous.items():
            signal.signal(number, kept)


# -- minidl._extras ---------------------------------------------------------------------------


def test_require_imports_the_module_named_not_only_its_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``require(package, why, module=...)`` imports ``module`` (``matplotlib.pyplot``, whose
    own imports may fail where ``matplotlib``'s do not); without ``module``, the package."""
    from minidl import _extras

    imported: list[str] = []
    monkeypatch.setattr(importlib, "import_module", imported.append)
    _extras.require("matplotlib", "drawing needs it", module="matplotlib.pyplot")
    _extras.require("tqdm", "the progress bar needs it")
    assert imported == ["matplotlib.pyplot", "tqdm"]


# -- minidl.experiments.figures ---------------------------------------------------------------


def _row(table: str, label: str, curve: tuple[float, ...]) -> Any:
    """A result of the catalogue's row ``label`` of ``table``: one round whose validation
    curve is ``curve``."""
    from minidl.experiments.config import TABLE_I, TABLE_II
    from minidl.experiments.seeds import round_seeds
    from minidl.experiments.training import RoundResult, RowResult
    from minidl.nn import mlp

    (row,) = [e for e in {"I": TABLE_I, "II": TABLE_II}[table] if e.label == label]
    result = RoundResult(
        seeds=round_seeds(0, 0),
        test_error=1.0,
        train_error=0.5,
        validation_curve=curve,
        train_loss=(0.7,) * len(curve),
        lr_curve=(row.lr,) * len(curve),
        batch_lr=(),
        seconds=0.0,
        model=mlp((2, 2)),
    )
    return RowResult(experiment=row, rounds=(result,), seconds=0.0)


def test_a_run_of_one_round_is_drawn_as_its_curve_without_a_band() -> None:
    """One round has no spread between a lowest and a highest round: its curve is drawn, and
    no band (a band of no width over the curve)."""
    from minidl.experiments import figures

    row = _row("I", "Tanh", (3.0, 2.0, 1.0))
    axes = _Axes()
    figures._band(axes, row, "Tanh", "C0")
    assert axes.plotted == [[3.0, 2.0, 1.0]] and axes.bands == []


def _error_ticks(n_validation: int, bottom: float, top: float) -> list[float]:
    """The major ticks of the error axis for ``n_validation`` points, shown from ``bottom``
    to ``top``."""
    pytest.importorskip("matplotlib")
    from minidl.experiments import figures

    plt = figures._pyplot()
    figure, axes = plt.subplots()
    try:
        figures._error_axes(axes, "title", n_validation)
        axes.set_ylim(bottom, top)
        return [float(value) for value in axes.yaxis.get_major_locator()()]
    finally:
        plt.close(figure)


def test_the_error_axis_has_a_tick_at_one_validation_points_error() -> None:
    """With 100 validation points one point's error is 1%: the axis is labelled at 0, at that
    1% and at 2, 5, 10, 20, 50 and 100 (the ticks from one point's error up to 100%)."""
    assert _error_ticks(100, 0.0, 60.0) == [0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]


def test_the_error_axis_with_one_fixed_tick_in_view_labels_evenly_spaced_ones() -> None:
    """Errors between 8% and 12% have one tick of 0, 1, 2, 5 x 10^k in view (10): evenly
    spaced ones are labelled instead, at least three of them in view."""
    ticks = [value for value in _error_ticks(1000, 8.0, 12.0) if 8.0 <= value <= 12.0]
    assert len(ticks) >= 3
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1, ticks


def _table_ii_rows() -> list[Any]:
    """Two rows of Table II, each of one round of two epochs."""
    return [
        _row("II", "SGD, momentum 0", (4.0, 2.0)),
        _row("II", "SGD, momentum 0.5", (5.0, 3.0)),
    ]


def test_a_figure_writer_draws_a_figure_only_once_all_its_rows_are_in(tmp_path: Path) -> None:
    """With one of Table II's two rows in, nothing is drawn (and ``out`` is not made); with
    both, its figure is; moved into ``out``, the figure is there alone, the hidden folder it
    waited in removed and nothing left staged."""
    pytest.importorskip("matplotlib")
    from minidl.experiments.figures import FigureWriter

    rows = _table_ii_rows()
    out = tmp_path / "out"
    with FigureWriter([row.experiment for row in rows], out) as writer:
        assert writer.draw_next(rows[:1]) is False
        assert not out.exists() and writer.staged() == []
        assert writer.draw_next(rows) is True
        assert [name for _, name in writer.staged()] == ["tableII_validation.png"]
        writer.move_into_out()
        assert [path.name for path in out.iterdir()] == ["tableII_validation.png"]
        assert writer.staged() == []


def test_a_figure_writer_refuses_results_that_miss_a_row_and_moves_nothing(
    tmp_path: Path,
) -> None:
    """``draw_all`` with one of the two rows that Table II's figure shows raises a ValueError
    naming the figure, and moves nothing into ``out``."""
    pytest.importorskip("matplotlib")
    from minidl.experiments.figures import FigureWriter

    rows = _table_ii_rows()
    out = tmp_path / "out"
    refusal = r"^FigureWriter: the results miss rows of the figures tableII$"
    with (
        FigureWriter([row.experiment for row in rows], out) as writer,
        pytest.raises(ValueError, match=refusal),
    ):
        writer.draw_all(rows[:1])
    assert not out.exists()


def test_check_folder_takes_files_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    """The file made to check that the folder takes files is removed again: the folder is
    left as it was (a command checks it before its work, and may then write nothing)."""
    from minidl._files import check_folder_takes_files

    (tmp_path / "kept").write_text("x")
    check_folder_takes_files(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["kept"]


def test_special_file_kind_names_a_fifo(tmp_path: Path) -> None:
    """A FIFO is a special file (written atomically, it would be replaced by a regular file):
    named ``"FIFO"``; a regular file and a folder are none."""
    from minidl._files import special_file_kind

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "file").write_text("x")
    assert special_file_kind(tmp_path / "pipe") == "FIFO"
    assert special_file_kind(tmp_path / "file") is None
    assert special_file_kind(tmp_path) is None
