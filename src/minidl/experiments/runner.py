"""``minidl reproduce``: train every row, then write the report, the JSON and the figures."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import numbers
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from minidl._allocator import keep_freed_memory
from minidl._extras import require
from minidl._files import (
    check_folder_takes_files,
    is_link_loop,
    make_folder,
    make_hidden_folder,
    remove_if_empty,
    say,
)
from minidl._interrupts import holding_interrupts
from minidl._validate import add_note, check_int, shown, shown_path
from minidl.experiments.batched import train_rows_batched
from minidl.experiments.config import (
    Experiment,
    experiments_for_tables,
    stack_key,
    training_key,
)
from minidl.experiments.training import RowResult
from minidl.experiments.welch import _MOST_SAMPLES
from minidl.train import EpochRecord

__all__ = [
    "MAX_STACKED_MODELS",
    "QUICK_EPOCHS",
    "RunSettings",
    "default_jobs",
    "progress_label",
    "reproduce",
    "run_experiments",
    "run_from_cli",
    "stack_groups",
    "training_processes",
]

#: Epochs of every row in ``--quick`` mode (a smoke test of the pipeline, not a result).
QUICK_EPOCHS = 5


@dataclass(frozen=True)
class RunSettings:
    """How a reproduction was run (written into the report and the JSON)."""

    rounds: int
    base_seed: int
    tables: str
    quick: bool
    epochs_override: int | None
    command: str
    jobs: int = 1
    """Worker processes to train the rows in, at most (the numbers do not depend on it);
    :func:`reproduce` writes into the report and the JSON the number that trained them
    (:func:`training_processes`)."""

    def __post_init__(self) -> None:
        # Checked here, so that a bad setting fails before anything is trained or written; the
        # integers are kept as plain ints (a numpy integer would fail results.json's writing,
        # after the training).
        rounds = check_int("RunSettings", "rounds", self.rounds)
        if rounds > _MOST_SAMPLES:  # (the report's Welch test refused it, after the training)
            raise ValueError(
                "RunSettings: rounds must be an integer in [1, 10**6] (the report's Welch test "
                f"takes at most 10**6 rounds a side), got {shown(self.rounds)}"
            )
        object.__setattr__(self, "rounds", rounds)
        if isinstance(self.base_seed, bool) or not isinstance(self.base_seed, numbers.Integral):
            raise TypeError(f"RunSettings: base_seed must be an int, got {shown(self.base_seed)}")
        object.__setattr__(self, "base_seed", int(self.base_seed))
        try:
            experiments_for_tables(self.tables)
        except (TypeError, ValueError) as error:
            raise type(error)(f"RunSettings: tables: {error}") from None
        if not isinstance(self.quick, bool):
            raise TypeError(f"RunSettings: quick must be True or False, got {shown(self.quick)}")
        if self.epochs_override is not None:
            epochs = check_int("RunSettings", "epochs_override", self.epochs_override)
            object.__setattr__(self, "epochs_override", epochs)
        object.__setattr__(self, "jobs", check_int("RunSettings", "jobs", self.jobs))
        if not isinstance(self.command, str):  # (written into results.json, after training)
            raise TypeError(f"RunSettings: command must be a str, got {shown(self.command)}")
        if self.quick and (self.rounds != 1 or self.epochs_override is None):
            # (the report says quick mode trains 1 round and a few epochs a row)
            raise ValueError(
                "RunSettings: quick mode trains 1 round of a few epochs a row, got rounds="
                f"{self.rounds} and epochs_override={self.epochs_override}; give rounds=1 and "
                "an epochs_override, or quick=False"
            )


def run_experiments(
    experiments: Sequence[Experiment],
    rounds: int,
    base_seed: int,
    *,
    epochs: int | None = None,
    train: Callable[..., list[RowResult]] = train_rows_batched,
    on_epoch: Callable[[Experiment, int, EpochRecord], None] | None = None,
    jobs: int = 1,
    when_idle: Callable[[list[RowResult]], object] | None = None,
) -> list[RowResult]:
    """Train every experiment (``rounds`` rounds each) and return one result per experiment.

    Experiments that train identically (same :func:`training_key`, e.g. a "momentum without
    effect" variant and the momentum-0 row) are trained once and share the numbers. The others
    are trained in groups of one :func:`stack_key` (rows that differ only in activations, loss,
    optimizer and schedule), each group by one call of ``train``.

    Args:
        experiments: the rows.
        rounds: rounds per row.
        base_seed: the run's base seed.
        epochs: overrides every row's epochs (for smoke tests).
        train: the function that trains a group of rows:
            :func:`~minidl.experiments.batched.train_rows_batched` (the rounds of the group's
            rows in one stack, the default) or :func:`~minidl.experiments.training.train_rows`
            (one round after the other; the same numbers to rounding, slower). A row's numbers
            do not depend on the other rows of its group.
        on_epoch: called with ``(experiment, round index, record)`` after every epoch.
        jobs: worker processes (:mod:`minidl.experiments.pool`); 1 trains here, in this
            process. The results are the same for any number where this process trains with
            one intra-op thread (``torch.set_num_threads(1)``, as :func:`reproduce` and the
            workers do; with more, a product's last bits may differ).
        when_idle: with worker processes, called here about every 0.1 s while a worker has
            nothing left to train, with the results of the experiments trained so far (in the
            order of ``experiments``), so that work done there costs the training no core.
            Never called when training here.
    """
    _check_experiments("run_experiments", experiments)
    rounds = check_int("run_experiments", "rounds", rounds)
    jobs = check_int("run_experiments", "jobs", jobs)
    # (each failed past the checks: in round_seeds' or fit_rounds' name, in the pool's sorting,
    # or as "'NoneType' object is not callable" once a group had trained)
    if isinstance(base_seed, bool) or not isinstance(base_seed, numbers.Integral):
        raise TypeError(f"run_experiments: base_seed must be an int, got {shown(base_seed)}")
    base_seed = int(base_seed)
    if epochs is not None:
        epochs = check_int("run_experiments", "epochs", epochs)
    for name, function in (("train", train), ("on_epoch", on_epoch), ("when_idle", when_idle)):
        if not callable(function) and (name == "train" or function is not None):
            none = "" if name == "train" else " or None"
            raise TypeError(
                f"run_experiments: {name} must be a function{none}, got {shown(function)}"
            )
    groups = stack_groups(_distinct(experiments), rounds)
    if jobs > 1 and len(groups) > 1:
        from minidl.experiments.pool import check_importable, train_groups

        check_importable("run_experiments", train)  # (named as the function called)

        def report_idle(finished: dict[int, list[RowResult]]) -> None:
            if when_idle is not None:
                for position, result in finished.items():
                    _check_trained(groups[position], result)
                when_idle(_by_experiment(experiments, finished.values()))

        results = train_groups(
            groups,
            rounds,
            base_seed,
            jobs=jobs,
            train=train,
            epochs=epochs,
            on_epoch=on_epoch,
            when_idle=report_idle if when_idle is not None else None,
        )
    else:
        results = [
            train(group, rounds, base_seed, epochs=epochs, on_epoch=on_epoch) for group in groups
        ]
    for group, result in zip(groups, results, strict=True):
        _check_trained(group, result)
    by_experiment = _by_experiment(experiments, results)
    if len(by_experiment) != len(experiments):  # (a train function of one's own)
        raise ValueError(
            f"run_experiments: train returned results for {len(by_experiment)} of the "
            f"{len(experiments)} rows; it must return one result per row of each group, in the "
            "group's order"
        )
    return by_experiment


def _check_trained(group: Sequence[Experiment], result: object) -> None:
    """Refuse what a train function of one's own returned for ``group`` that is no sequence of
    :class:`RowResult` (it failed in _by_experiment, as "'...' object has no attribute
    'experiment'")."""
    if (
        isinstance(result, str)
        or not isinstance(result, Sequence)
        or not all(isinstance(row, RowResult) for row in result)
    ):
        raise TypeError(
            f"run_experiments: train returned {shown(result)} for a group of {len(group)} "
            "rows; it must return a list of RowResult, one per row of the group, in its order"
        )


def _check_experiments(where: str, experiments: object) -> None:
    """Refuse what is no sequence of :class:`Experiment` (a row given alone, or a list of
    another thing, failed in dataclasses.replace's words or "'Experiment' object is not
    iterable")."""
    if isinstance(experiments, str) or not isinstance(experiments, Sequence):
        raise TypeError(
            f"{where}: experiments must be a sequence of Experiment (a list or tuple), "
            f"got {type(experiments).__name__}"
        )
    for index, experiment in enumerate(experiments):
        if not isinstance(experiment, Experiment):
            raise TypeError(
                f"{where}: experiments must be a sequence of Experiment, got "
                f"{shown(experiment)} at index {index}"
            )


def _distinct(experiments: Sequence[Experiment]) -> list[Experiment]:
    """The first experiment of each :func:`training_key`, in order (each is trained once)."""
    distinct: dict[Experiment, Experiment] = {}
    for experiment in experiments:
        distinct.setdefault(training_key(experiment), experiment)
    return list(distinct.values())


def training_processes(experiments: Sequence[Experiment], rounds: int, jobs: int) -> int:
    """The processes that :func:`run_experiments` trains ``experiments`` in with ``jobs``.

    ``jobs`` is an upper bound: a worker trains one stack at a time, so there are no more
    workers than stacks (:func:`stack_groups`), and a run of one stack trains in this process.

    Example:
        >>> from minidl.experiments.config import experiments_for_tables
        >>> training_processes(experiments_for_tables("2"), 2, 2)  # one stack of 14 models
        1
    """
    _check_experiments("training_processes", experiments)
    rounds = check_int("training_processes", "rounds", rounds)
    jobs = check_int("training_processes", "jobs", jobs)
    groups = stack_groups(_distinct(experiments), rounds)
    return 1 if len(groups) <= 1 else min(jobs, len(groups))


def _by_experiment(
    experiments: Sequence[Experiment], results: Iterable[list[RowResult]]
) -> list[RowResult]:
    """One result per experiment whose training key was trained (in ``results``), in order."""
    trained = {
        training_key(result.experiment): result
        for group_results in results
        for result in group_results
    }
    return [
        dataclasses.replace(trained[training_key(experiment)], experiment=experiment)
        for experiment in experiments
        if training_key(experiment) in trained
    ]


#: The most models :func:`stack_groups` puts in one stack. A stack of 20 to 40 models trains
#: as fast per model as one of 40 here, and smaller stacks share the work of ``--jobs`` workers
#: better.
MAX_STACKED_MODELS = 25


def stack_groups(experiments: Sequence[Experiment], rounds: int) -> list[list[Experiment]]:
    """The experiments in groups that train in one stack each: the same :func:`stack_key`, split
    into as few groups of as even sizes as hold at most :data:`MAX_STACKED_MODELS` models each
    (``rounds`` per row, at least one row), the rows with the same loss and activations side by
    side (one run each in a :class:`~minidl.nn.StackedLoss` and
    :class:`~minidl.nn.StackedActivation`)."""
    _check_experiments("stack_groups", experiments)
    rounds = check_int("stack_groups", "rounds", rounds)
    grouped: dict[Experiment, list[Experiment]] = {}
    for experiment in experiments:
        grouped.setdefault(stack_key(experiment), []).append(experiment)
    most = max(1, MAX_STACKED_MODELS // rounds)
    groups = []
    for rows in grouped.values():
        rows = sorted(rows, key=lambda e: (e.loss, e.mse_reduction, e.activations))
        count = -(-len(rows) // most)
        bounds = [len(rows) * index // count for index in range(count + 1)]
        groups += [rows[start:stop] for start, stop in itertools.pairwise(bounds)]
    return groups


def count_epochs(experiments: Sequence[Experiment], rounds: int, epochs: int | None) -> int:
    """Epochs that :func:`run_experiments` will train (identical rows counted once)."""
    unique = {training_key(e): e for e in experiments}.values()
    return sum(rounds * (e.epochs if epochs is None else epochs) for e in unique)


def reproduce(
    settings: RunSettings,
    out: str | os.PathLike[str],
    *,
    progress: bool = True,
    summary: bool = True,
) -> dict[str, Any]:
    """Run the experiments of ``settings``, write everything into ``out`` and return the JSON.

    Writes ``out/report.md``, ``out/results.json`` and the figures (PNG), and removes from
    ``out`` the figures of an earlier run that this run does not draw (e.g. Fig. 1 when it runs
    ``tables="2"``); other files in ``out`` are left alone. The files move into ``out`` only
    once all of them are written: a run that fails or is interrupted leaves the previous run's
    files as they were, and removes the folders it made (``out`` and its missing parents) that
    it left empty; so does a file of ``out`` that may not be replaced (another user's in a
    folder with the sticky bit, an immutable one), found as they move in (the previous files
    are moved aside first and put back). An interrupt (Ctrl-C, or SIGTERM under minidl's command line) that comes as
    they move in is raised once all have moved: ``out`` then holds this run's files. A folder
    in ``out`` with the name of one of these files is refused before the training.

    It trains on one torch thread, restoring the caller's count afterwards, and raises glibc's
    thresholds of this process's memory allocator for good
    (:func:`minidl._allocator.keep_freed_memory`: freed blocks are kept for reuse).

    The figures need matplotlib, and the progress bar tqdm (minidl's ``reproduce`` extra):
    without them it raises a :class:`ModuleNotFoundError` that says what to install, before
    anything is trained or written.
    """
    if not isinstance(settings, RunSettings):
        raise TypeError(f"reproduce: settings must be a RunSettings, got {shown(settings)}")
    if not isinstance(out, str | os.PathLike):
        raise TypeError(
            f"reproduce: out must be the path of a folder (a str or os.PathLike), got {shown(out)}"
        )
    if not os.fspath(out):  # (as the command line's --out ''; "." is the current folder)
        raise ValueError("reproduce: out is empty, expected the path of a folder")
    if "\0" in os.fsdecode(out):  # (os.makedirs refused it, "embedded null byte", unnamed)
        raise ValueError(
            f"reproduce: out {shown_path(out)} holds a NUL character, which no path holds; "
            "expected the path of a folder"
        )
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"reproduce: out {shown_path(out)} is a file, expected a folder")
    _require_extras("reproduce: ", "progress=False", progress=progress)
    from minidl.experiments.figures import FigureWriter, other_figures
    from minidl.experiments.report import results_json, summary_table, write_json, write_report

    experiments = experiments_for_tables(settings.tables)
    # (the command line refuses --rounds so; RunSettings takes up to 10**6 rounds, whose
    # largest stack would grow until the system's out-of-memory killer stopped the process)
    _check_rounds_fit(experiments, settings.rounds, "reproduce: settings.rounds")
    # The report and the JSON give the processes that train, which --jobs only bounds.
    processes = training_processes(experiments, settings.rounds, settings.jobs)
    settings = dataclasses.replace(settings, jobs=processes)
    out = Path(out)
    made = make_folder(out)  # (removed again, if still empty, by a run that fails)
    threads = torch.get_num_threads()
    hidden: list[Path] = []  # (the report's hidden folder, its name known before it is made)
    done = False
    bar = None
    try:  # (from here, a run that fails or is interrupted removes what it made)
        in_the_way = _folder_in_the_way(out, experiments)
        if in_the_way is not None:  # (found before the training, not when the files move in)
            raise ValueError(f"reproduce: {in_the_way}")
        total = count_epochs(experiments, settings.rounds, settings.epochs_override)
        start = time.perf_counter()
        on_epoch = None
        # (given to run_experiments only to name the stacks on the bar: its own default else)
        labelling: dict[str, Callable[..., list[RowResult]]] = {}
        if progress and sys.stderr is not None:  # (closed, 2>&-: no bar, as with --quiet)
            from tqdm import tqdm

            bar = tqdm(
                total=total,
                unit="epoch",
                file=sys.stderr,
                dynamic_ncols=True,
                smoothing=0.05,
                mininterval=1.0,
            )

            def on_epoch(experiment: Experiment, index: int, record: EpochRecord) -> None:
                assert bar is not None
                bar.update(1)

            if settings.jobs == 1:
                # Each stack named as it starts (its rows train at once: labelled at each row's
                # first epoch, the bar named the stack's last row all the while it trained).

                def labelled(
                    group: Sequence[Experiment], rounds: int, base_seed: int, **options: Any
                ) -> list[RowResult]:
                    assert bar is not None
                    label = progress_label(group[0], settings.rounds, others=len(group) - 1)
                    bar.set_description(label, refresh=False)
                    return train_rows_batched(group, rounds, base_seed, **options)

                labelling["train"] = labelled

            if settings.jobs > 1:
                bar.set_description(f"{settings.jobs} processes", refresh=False)

        # The stacked rounds' tensors are large enough that glibc would map and unmap them on every
        # step; keep freed memory in the process instead (see minidl._allocator).
        keep_freed_memory()
        # The networks are tiny: intra-op threads only add synchronisation, which costs ~10x when
        # other processes share the cores. One thread for the run (the figures' predictions
        # included, as the test errors were computed), restored afterwards.
        torch.set_num_threads(1)
        # With workers, a figure is drawn as soon as its rows are trained, on the core a worker
        # with nothing left to train leaves free; the rest after the training.
        # The report and the JSON are written into a hidden folder inside ``out`` too, and the
        # files move into ``out`` only once all of them are written: a run that fails or is
        # interrupted (a full disk, Ctrl-C) leaves the previous run's files as they were, and no
        # half-written file.
        with FigureWriter(experiments, out) as figure_writer:
            try:
                results = run_experiments(
                    experiments,
                    settings.rounds,
                    settings.base_seed,
                    epochs=settings.epochs_override,
                    on_epoch=on_epoch,
                    jobs=settings.jobs,
                    when_idle=figure_writer.draw_next,
                    **labelling,
                )
            finally:
                if bar is not None:
                    bar.close()
            training_seconds = time.perf_counter() - start
            figures = figure_writer.draw_remaining(results)
            wall_seconds = time.perf_counter() - start
            document = results_json(results, settings, wall_seconds, training_seconds, figures)
            documents = make_hidden_folder(out, ".report-", hidden)
            write_report(
                results, settings, wall_seconds, training_seconds, figures, documents / "report.md"
            )
            write_json(document, documents / "results.json")
            # (an interrupt as they move in, one by one, is held back until all have moved: it
            # left the new figures beside the previous run's report and JSON)
            with holding_interrupts():
                incoming = figure_writer.staged()
                incoming += [(documents / name, name) for name in ("report.md", "results.json")]
                # The figures of an earlier run into ``out`` that this run did not draw belong
                # to no report: removed with the files replaced, all or none.
                _move_in(out, incoming, other_figures(out, figures), hidden)
                figure_writer.close()
            # (here, where an interrupt meanwhile still finds it below: removed there alone,
            # an interrupt as that began left it in ``out``, though the run was done)
            shutil.rmtree(documents, ignore_errors=True)
        done = True
    finally:
        if bar is not None:  # (closed already, unless the run stopped before its training)
            bar.close()
        torch.set_num_threads(threads)
        for folder in hidden:
            shutil.rmtree(folder, ignore_errors=True)
        if not done:  # (the folders made for this run, and left empty by it)
            remove_if_empty(made)
    if summary:
        say(summary_table(results))
        say(f"wall time {wall_seconds:.0f} s; report: {out / 'report.md'}")
    return document


def _move_in(
    out: Path, incoming: list[tuple[Path, str]], removed: list[str], hidden: list[Path]
) -> None:
    """Move each file of ``incoming`` (``(path, name)``) into ``out`` as ``name``, and the
    files ``removed`` out of it, all or none.

    The files of ``out`` that these replace or remove are first moved aside, into a hidden
    folder made in ``out`` (on the same file system, so that each move is a rename), then the
    new files move in; where a move fails (a file that may not be renamed: one of another user
    in a folder with the sticky bit, an immutable file), whatever moved is put back before the
    error is raised, so that ``out`` holds the previous run's files as they were. The folder
    set aside is appended to ``hidden``, which the caller removes, once it is empty or its
    files are of no use; a file that could not be put back keeps it (the error's note names
    it)."""
    aside = make_hidden_folder(out, ".previous-", hidden)
    set_aside: list[str] = []
    moved_in: list[tuple[Path, str]] = []
    try:
        for name in [*(name for _, name in incoming), *removed]:
            if os.path.lexists(out / name):
                os.replace(out / name, aside / name)
                set_aside.append(name)
        for path, name in incoming:
            os.replace(path, out / name)
            moved_in.append((path, name))
    except OSError as error:
        stranded = []
        for path, name in reversed(moved_in):
            with contextlib.suppress(OSError):  # (the new file: lost with its folder if not)
                os.replace(out / name, path)
        for name in reversed(set_aside):
            try:
                os.replace(aside / name, out / name)
            except OSError:
                stranded.append(name)
        if stranded:
            hidden.remove(aside)  # (not removed: it holds the previous run's files)
            add_note(
                error,
                f"reproduce could not put back the previous run's {', '.join(stranded)}: "
                f"{'it is' if len(stranded) == 1 else 'they are'} in {shown_path(aside)}",
            )
        raise


def _folder_in_the_way(out: Path, experiments: Sequence[Experiment]) -> str | None:
    """Why ``out`` cannot take the files of a run of ``experiments`` (a folder with the name
    of one of them, as :func:`~minidl._validate.shown_path` names it), or ``None``: the report,
    the JSON and the figures of those experiments (a folder named after a figure the run does
    not draw is left alone, as the figures of other tables are)."""
    from minidl.experiments.figures import FIGURES

    drawn = [
        figure.file
        for figure in FIGURES
        if any(figure.shows(experiment) for experiment in experiments)
    ]
    for name in ("report.md", "results.json", *drawn):
        if (out / name).is_dir():
            folder = shown_path(out / name)
            return f"{folder} is a folder, where the run writes its {name}; move it"
    return None


def progress_label(experiment: Experiment, rounds: int, others: int = 0) -> str:
    """The progress bar's description while ``experiment`` trains (its rounds train at once),
    with ``others`` rows in its stack after it: ``"Table II | ADADELTA | rounds 1-5"``,
    ``"Fig. 1 | MSE | round 1"``, ``"Table I | ELU and 3 more rows | rounds 1-5"``."""
    where = experiment.table if experiment.table.startswith("Fig.") else f"Table {experiment.table}"
    which = "round 1" if rounds == 1 else f"rounds 1-{rounds}"
    more = f" and {others} more row{'s' * (others != 1)}" if others else ""
    label = experiment.label[:24] if others else experiment.label[:40]
    return f"{where} | {label}{more} | {which}"


def default_jobs() -> int:
    """The CPUs this process may run on (``--jobs``'s default)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


def _require_extras(prefix: str, without_bar: str, *, progress: bool) -> None:
    """Raise a :class:`ModuleNotFoundError` (:func:`minidl._extras.require`), its message
    beginning with ``prefix``, when matplotlib, which draws the figures, or tqdm, which draws
    the progress bar (with ``progress``; ``without_bar`` names how to run without it), is not
    installed."""
    require("matplotlib", f"{prefix}the figures are drawn with matplotlib")
    if progress:
        require(
            "tqdm", f"{prefix}the progress bar is drawn with tqdm ({without_bar} runs without it)"
        )


def _check_rounds_fit(
    experiments: Sequence[Experiment], rounds: int, name: str = "--rounds"
) -> None:
    """Refuse ``--rounds`` (``name``) whose largest stack (:func:`stack_groups`) takes more
    bytes than the machine has memory in its models' parameters and their gradients (every
    :class:`~minidl.nn.Parameter` has its ``grad``) and its rounds' data sets alone: the run
    would grow, before its first epoch, until the system's out-of-memory killer stopped it,
    with no message (``--rounds 1000000000``), as ``minidl train`` refuses ``--hidden``
    widths so."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):  # (not on this system)
        return
    for group in stack_groups(_distinct(experiments), rounds):
        protocol = group[0].protocol  # (one stack_key: one protocol)
        item = torch.empty((), dtype=getattr(torch, protocol.dtype)).element_size()
        parameters = sum(
            (fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(protocol.sizes)
        )
        samples = protocol.n_train + protocol.n_validation + protocol.n_test
        # (each sample: its features, and its label, an int64)
        per_round = len(group) * 2 * parameters * item + samples * (protocol.sizes[0] * item + 8)
        if memory > 0 and rounds * per_round > memory:
            raise ValueError(
                f"{name} {shown(rounds)}: the run trains the {shown(rounds)} rounds of "
                f"{len(group)} row{'s' * (len(group) != 1)} at once, whose parameters, their "
                f"gradients and data sets alone take {shown(rounds * per_round)} bytes, more than "
                f"this machine's memory ({memory} bytes)"
            )


def _check_not_launched() -> None:
    """Refuse a run started as one of several processes of a launch (``torchrun``, which sets
    ``WORLD_SIZE``): ``reproduce`` is not data-parallel, and each process would run every
    experiment, its own pool of workers beside the others' on the same cores, and write the
    same ``--out`` folder. ``WORLD_SIZE`` 1 is a run alone."""
    world_size = os.environ.get("WORLD_SIZE")
    if world_size is None or world_size.strip() == "1":
        return
    raise ValueError(
        f"reproduce runs as one process, which trains the rows in --jobs worker processes of its "
        f"own; launched as one of several processes (WORLD_SIZE={world_size!r}, as torchrun "
        "sets it), each would run every experiment and write the same --out folder: run "
        "minidl reproduce alone (minidl train is the command that trains data-parallel under "
        "torchrun)"
    )


def run_from_cli(args: argparse.Namespace) -> int:
    """Entry point of ``minidl reproduce``."""
    _check_not_launched()
    rounds = 1 if args.quick else args.rounds
    epochs = QUICK_EPOCHS if args.quick else None
    jobs = default_jobs() if args.jobs is None else args.jobs
    try:  # --tables, checked before anything runs
        experiments_for_tables(args.tables)
    except ValueError:
        raise ValueError(
            f"--tables {shown(args.tables)}: expected a comma-separated choice from 1,2,3 (or I,II,III)"
        ) from None
    if rounds > _MOST_SAMPLES:  # (as RunSettings, before anything runs)
        raise ValueError(
            f"--rounds {shown(rounds)}: expected at most 10**6 (the report's Welch test takes "
            "at most 10**6 rounds a side)"
        )
    _check_rounds_fit(experiments_for_tables(args.tables), rounds)
    if not str(args.out).strip():
        raise ValueError(f"--out {shown(args.out)}: expected a folder path")
    try:  # (before the folder is made: a run that cannot start leaves nothing behind)
        _require_extras("", "--quiet", progress=not args.quiet)
    except ModuleNotFoundError as error:
        raise ValueError(str(error)) from None
    out = Path(args.out)
    # The folder is made here, before the checks, so reproduce() finds it and would leave it:
    # a run that fails or is interrupted removes it here, with the parents it made (those
    # still empty).
    try:
        made = make_folder(out)
    except OSError as error:
        reason = error.strerror
        if is_link_loop(out):  # (mkdir says "File exists" of these two)
            reason = "it is a loop of symbolic links"
        elif os.path.islink(out) and not os.path.exists(out):  # (False for a name too long)
            with contextlib.suppress(OSError):
                reason = f"it is a link to {shown_path(os.readlink(out))}, which leads to no file"
        raise ValueError(
            f"--out {shown_path(args.out)}: cannot be made a folder ({reason})"
        ) from None
    try:
        _check_out(args.out, out, args.tables)
        _reproduce_from_cli(args, out, rounds, epochs, jobs)
    except BaseException:
        remove_if_empty(made)
        raise
    return 0


def _check_out(given: str, out: Path, tables: str) -> None:
    """Refuse an ``--out`` folder (``given`` as typed) that cannot take the files of a run of
    ``tables``."""
    try:
        check_folder_takes_files(out)
    except OSError as error:
        raise ValueError(
            f"--out {shown_path(given)}: cannot write into the folder ({error.strerror or error})"
        ) from None
    in_the_way = _folder_in_the_way(out, experiments_for_tables(tables))
    if in_the_way is not None:
        raise ValueError(f"--out {shown_path(given)}: {in_the_way}")


def _reproduce_from_cli(
    args: argparse.Namespace, out: Path, rounds: int, epochs: int | None, jobs: int
) -> None:
    """Run :func:`reproduce` into the checked ``out`` with the settings of the command line."""
    # (--tables as checked, each part stripped: " 1, 3\n" is "1,3"; a newline kept split the
    # report's line that quotes the command)
    tables = ",".join(part.strip() for part in args.tables.split(","))
    command = "minidl reproduce " + " ".join(
        part
        for part in (
            "" if args.quick else f"--rounds {args.rounds}",  # (quick mode trains one round)
            f"--tables {shlex.quote(tables)}",
            f"--seed {args.seed}",
            "--quick" if args.quick else "",
            f"--jobs {jobs}",
        )
        if part
    )
    settings = RunSettings(
        rounds=rounds,
        base_seed=int(args.seed),
        tables=tables,
        quick=bool(args.quick),
        epochs_override=epochs,
        command=command,
        jobs=jobs,
    )
    reproduce(settings, out, progress=not args.quiet, summary=not args.quiet)
