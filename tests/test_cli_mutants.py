"""Behaviour of the ``minidl`` command line that a mutation audit of ``minidl.cli`` and
``minidl._validate`` found untested.

Each test pins one observable result against its oracle: the defaults the help and the
description of ``minidl train`` document (Table I's Tanh row) and those of ``minidl reproduce``,
the network ``minidl train --seed S`` trains (bit for bit the one built by hand with the
library's API from seed ``S``), a resume under a schedule (bit for bit the run without a stop),
the flag an error names when ``--resume`` alone gives the checkpoint path, the longest file name
a folder takes (``PC_NAME_MAX``), an infinite loss reported as a divergence, load_checkpoint's
own message for another optimizer class, the usage error of each rank under torchrun and the
timeout its group gets, and the exact messages of ``_validate``'s generator and label checks."""

from __future__ import annotations

import errno
import io
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from minidl import nn, optim
from minidl.checkpoint import read_checkpoint, save_checkpoint
from minidl.cli import build_parser, main
from minidl.data import make_disk_data
from minidl.experiments.seeds import round_seeds
from minidl.train import fit


def test_train_defaults_are_table_one_tanh_row() -> None:
    """``minidl train`` with no argument is what its description says, Table I's Tanh row
    (cross-entropy, SGD, lr 1e-2, 400 epochs, batches of 100, a 2-25-25-25-2 tanh network), with
    the defaults --help writes for the rest."""
    args = build_parser().parse_args(["train"])
    expected = {
        "activation": ("tanh",),
        "loss": "cross-entropy",
        "optimizer": "sgd",
        "lr": 1e-2,
        "momentum": 0.0,
        "scheduler": "none",
        "epochs": 400,
        "batch_size": 100,
        "hidden": (25, 25, 25),
        "seed": 0,
        "dtype": "float32",
        "log_every": None,  # (1 without --quiet: see test_train_cli)
        "quiet": False,
        "checkpoint": None,
        "checkpoint_every": None,  # (10, with --checkpoint or --resume: see test_train_cli)
        "resume": None,
        "detect_anomaly": False,
        "dist_timeout": None,
    }
    assert {name: getattr(args, name) for name in expected} == expected


def test_the_default_loss_is_cross_entropy_and_mse_is_mse(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The header line names the criterion each ``--loss`` builds."""
    argv = ["train", "--epochs", "0", "--hidden", "3"]
    assert main(argv) == 0
    assert "\nloss: CrossEntropyLoss(reduction='mean')   optimizer: SGD(" in capsys.readouterr().out
    assert main([*argv, "--loss", "mse"]) == 0
    assert "\nloss: MSELoss(reduction='paper')   optimizer: SGD(" in capsys.readouterr().out


def test_reproduce_defaults_reach_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``minidl reproduce`` with no argument: the paper's 5 rounds of every table, seed 0, the
    CPUs available as jobs, written into ``results/`` of the working folder."""
    from minidl.experiments import runner

    calls: list[tuple[Any, Path]] = []
    monkeypatch.setattr(
        runner, "reproduce", lambda settings, out, **kwargs: calls.append((settings, out))
    )
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["reproduce"])
    assert (args.rounds, args.tables, args.out, args.seed, args.quick, args.jobs) == (
        None,  # (5, set where the run starts: a --rounds given with --quick is told apart)
        "1,2,3",
        "results",
        0,
        False,
        None,
    )
    assert main(["reproduce"]) == 0
    [(settings, out)] = calls
    assert out == Path("results") and (tmp_path / "results").is_dir()
    assert (settings.rounds, settings.tables, settings.base_seed, settings.quick) == (
        5,
        "1,2,3",
        0,
        False,
    )
    assert settings.jobs == runner.default_jobs()
    capsys.readouterr()


@pytest.mark.parametrize("seed", [0, 5, -1])
def test_train_seed_seeds_the_data_the_weights_and_the_shuffles(seed: int, tmp_path: Path) -> None:
    """``minidl train --seed S`` trains, bit for bit, the network of the library's API from
    the seeds of ``minidl reproduce``'s round 0 (``round_seeds(S, 0)``): data
    ``make_disk_data(seed=seeds.data)``, weights after ``torch.manual_seed(seeds.init)``,
    shuffles from a generator seeded with ``seeds.shuffle`` (each of the three with another
    seed gives other numbers). Seeded with S alike, the data's draws and the weights' read the
    same outputs of the generator (review)."""
    path = tmp_path / "run.ckpt"
    argv = ["train", "--quiet", "--epochs", "2", "--hidden", "4", "--batch-size", "250"]
    assert main([*argv, "--seed", str(seed), "--checkpoint", str(path)]) == 0
    seeds = round_seeds(seed % 2**64, 0)
    assert len({seed, seeds.data, seeds.init, seeds.shuffle}) == 4
    data = make_disk_data(seed=seeds.data)
    torch.manual_seed(seeds.init)
    model = nn.mlp((2, 4, 2), "tanh")
    fit(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(model.parameters(), lr=1e-2),
        data.train.x,
        data.train.y,
        epochs=2,
        batch_size=250,
        generator=torch.Generator().manual_seed(seeds.shuffle),
    )
    saved = read_checkpoint(path).model_state
    assert saved.keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        assert torch.equal(saved[name], value), name


def test_a_resumed_file_that_cannot_be_written_is_named_by_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--checkpoint`` the saves go to the ``--resume`` file: an error about that path
    names ``--resume`` (the flag the user gave) and says how to save elsewhere."""
    import minidl._files

    path = tmp_path / "run.ckpt"
    argv = ["train", "--quiet", "--hidden", "3", "--batch-size", "1000"]
    assert main([*argv, "--epochs", "1", "--checkpoint", str(path)]) == 0

    def refuse(folder: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(minidl._files, "check_folder_takes_files", refuse)
    assert main([*argv, "--epochs", "2", "--resume", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"minidl train: error: --resume {path}: cannot write into the folder {tmp_path} "
        "(Permission denied); give --checkpoint PATH to save elsewhere\n"
    )
    assert read_checkpoint(path).training.epoch == 1
    # A finished run resumed into its own file saves nothing: it is evaluated there (it was
    # refused as above, on storage that takes no file); saved elsewhere, it is checked.
    capsys.readouterr()
    assert main([*argv, "--epochs", "1", "--resume", str(path)]) == 0
    assert capsys.readouterr().out.startswith("final train error: ")
    other = ["--checkpoint", str(tmp_path / "other.ckpt")]
    assert main([*argv, "--epochs", "1", "--resume", str(path), *other]) == 2


def test_the_longest_file_name_the_folder_takes_is_accepted_and_one_byte_more_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``PC_NAME_MAX`` is the longest name a folder takes: a ``--checkpoint`` name of that many
    bytes is written, one of a byte more refused."""
    longest = os.pathconf(tmp_path, "PC_NAME_MAX")
    argv = ["train", "--epochs", "0", "--quiet", "--hidden", "3", "--checkpoint"]
    fits = tmp_path / ("a" * longest)
    assert main([*argv, str(fits)]) == 0
    assert read_checkpoint(fits).training.epoch == 0
    over = tmp_path / ("b" * (longest + 1))
    assert main([*argv, str(over)]) == 2
    assert capsys.readouterr().err == (
        f"minidl train: error: --checkpoint {over}: the file name is {longest + 1} bytes long, "
        f"longer than its folder takes ({longest})\n"
    )


def test_an_infinite_loss_is_reported_as_a_divergence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A loss that is not finite is a divergence, an infinite one as a NaN: the warning names
    the first such epoch and its loss, but not NaN outputs (an infinite loss may come from
    finite outputs, which still classify)."""
    import minidl.train

    real_fit = minidl.train.fit

    def fit_to_infinity(*args: Any, **kwargs: Any) -> Any:
        result = real_fit(*args, **kwargs)
        kwargs["history"].train_loss[1] = math.inf
        return result

    monkeypatch.setattr(minidl.train, "fit", fit_to_infinity)
    argv = ["train", "--epochs", "3", "--hidden", "3", "--batch-size", "1000", "--quiet"]
    assert main(argv) == 0
    assert capsys.readouterr().err == (
        "minidl train: warning: the training diverged (the loss was inf at epoch 2); try a "
        "smaller --lr, or --detect-anomaly to see where it started\n"
    )


def test_resuming_another_optimizer_class_gives_load_checkpoints_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint of ``save_checkpoint`` with an Adadelta, resumed by ``minidl train`` (SGD):
    the optimizer classes differ, which load_checkpoint says; their hyper-parameters, which
    are another class's, are not compared."""
    model = nn.mlp((2, 25, 25, 25, 2))
    path = tmp_path / "api.ckpt"
    adadelta = optim.Adadelta(model.parameters(), lr=0.01)
    save_checkpoint(path, model, adadelta, epoch=1, generator=torch.Generator())
    assert main(["train", "--resume", str(path), "--epochs", "2", "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"minidl train: error: --resume {path}: the checkpoint is for optimizer Adadelta, got "
        "SGD; this checkpoint was not written by minidl train (it holds none of its settings)\n"
    )


@pytest.mark.parametrize("rank", [0, 1])
def test_under_torchrun_a_usage_error_is_reported_once_per_rank(
    rank: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rank refusing its arguments exits with 2: rank 0 as a single process does (main
    reports it), any other rank in a line naming it; the group waits --dist-timeout seconds,
    or $MINIDL_DIST_TIMEOUT's without the flag."""
    import minidl.distributed

    launch = minidl.distributed.Launch(rank=rank, world_size=2, local_rank=rank)
    monkeypatch.setattr(minidl.distributed, "launch_from_env", lambda: launch)
    made: list[float] = []  # the timeout of each group made

    class Group:  # (as far as `minidl train` sees it before training)
        def __init__(self, launch: Any, *, device: str, timeout: float) -> None:
            self.rank = launch.rank
            made.append(timeout)

        def __enter__(self) -> Group:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(minidl.distributed, "ProcessGroup", Group)
    monkeypatch.setenv("MINIDL_DIST_TIMEOUT", "7")
    argv = ["train", "--activation", "tanh,relu", "--hidden", "5,5,5"]
    assert main(argv) == 2
    assert main([*argv, "--dist-timeout", "2.5"]) == 2
    assert made == [7.0, 2.5]
    where = "" if rank == 0 else f" rank {rank}:"
    line = (
        f"minidl train:{where} error: --activation gives 2 names for 3 hidden layers; give one "
        "name, or one per hidden layer\n"
    )
    assert capsys.readouterr() == ("", line * 2)


@pytest.mark.parametrize("device", ["mps", "xpu", "meta"])
def test_a_shuffle_generator_on_any_device_but_the_cpu_is_refused(device: str) -> None:
    """Not only a CUDA generator: one on any device but the CPU (a stand-in with that
    ``device``, as this build of torch makes no such generator) is refused, naming it."""
    from types import SimpleNamespace

    from minidl._validate import check_cpu_generator

    generator: Any = SimpleNamespace(device=torch.device(device))
    with pytest.raises(
        ValueError, match=rf"^fit: generator must be a CPU torch\.Generator .* {device}$"
    ):
        check_cpu_generator("fit", "generator", generator)
    check_cpu_generator("fit", "generator", torch.Generator())


@pytest.mark.parametrize("y", [torch.tensor(1), torch.zeros(4, 1, dtype=torch.long)])
def test_labels_of_a_shape_other_than_n_are_refused_naming_it(y: torch.Tensor) -> None:
    """Labels must be of shape ``(N,)``: a single 0-d label, as a column ``(N, 1)``, is refused
    with the shape it has (not an ``IndexError`` from reading its first dimension)."""
    from minidl.train import error_rate

    model = nn.mlp((2, 3, 2))
    with pytest.raises(
        ValueError,
        match=rf"^error_rate: y must hold class indices of shape \(N,\), got shape "
        rf"{re.escape(str(tuple(y.shape)))}$",
    ):
        error_rate(model, torch.zeros(4, 2), y)


def test_a_run_whose_scheduler_moved_the_rate_resumes_as_if_uninterrupted(tmp_path: Path) -> None:
    """With ``--scheduler step`` the saved rate (0.05 after 10 epochs of --lr 0.1) is not --lr:
    it is the schedule's, which the checkpoint restores, so the resume is not refused as a rate
    changed by hand, and it ends bit for bit where the run without a stop ends."""
    argv = ["train", "--quiet", "--hidden", "4", "--batch-size", "400", "--lr", "0.1"]
    argv += ["--scheduler", "step"]
    stopped, whole = tmp_path / "stopped.ckpt", tmp_path / "whole.ckpt"
    assert main([*argv, "--epochs", "11", "--checkpoint", str(stopped)]) == 0
    assert read_checkpoint(stopped).header["optimizer"]["lr"] == 0.05
    assert main([*argv, "--epochs", "12", "--resume", str(stopped)]) == 0
    assert main([*argv, "--epochs", "12", "--checkpoint", str(whole)]) == 0
    got, want = read_checkpoint(stopped), read_checkpoint(whole)
    assert got.training == want.training and got.training.epoch == 12
    assert got.training.history.lr == [0.1] * 10 + [0.05] * 2
    for name, tensor in want.tensors.items():
        assert torch.equal(got.tensors[name], tensor), name


def test_under_torchrun_a_last_batch_of_one_sample_per_process_is_taken() -> None:
    """A last batch of exactly as many samples as processes gives each one sample: taken, as
    ShardedBatches takes it (1000 samples in batches of 998 over 2 processes end with a batch
    of 2); one sample fewer is refused. (Refusing ``last <= world_size`` refused the first.)"""
    from minidl import cli
    from minidl.data import BatchIterator
    from minidl.distributed import ShardedBatches

    cli._check_batches_split(998, 1000, 2)
    x, y = torch.zeros(1000, 2), torch.zeros(1000)
    shards = ShardedBatches(BatchIterator(x, y, 998, shuffle=False), 1, 2)
    assert [len(part) for _, part in shards] == [499, 1]
    with pytest.raises(ValueError, match=r"^--batch-size 999 ends every epoch with a batch of 1 "):
        cli._check_batches_split(999, 1000, 3)


def test_the_epoch_counter_is_as_wide_as_the_epochs(capsys: pytest.CaptureFixture[str]) -> None:
    """Each logged epoch is right-aligned to the width of ``--epochs``, so that the columns of
    the log line up (``epoch  1/10`` ... ``epoch 10/10``). (A width of 1 shifted them.)"""
    argv = ["train", "--hidden", "2", "--batch-size", "1000", "--epochs", "10", "--log-every", "9"]
    assert main(argv) == 0
    epochs = [line.split("  loss")[0] for line in capsys.readouterr().out.splitlines()]
    assert [line for line in epochs if line.startswith("epoch")] == ["epoch  9/10", "epoch 10/10"]


def test_an_interrupted_run_names_the_checkpoint_it_saved_last(tmp_path: Path) -> None:
    """Interrupted after its first save into ``--checkpoint``, a resumed run names that file
    (the later state), not the ``--resume`` file it started from. (Reading the resumed file
    first named the older checkpoint.)"""
    from minidl.cli import _interrupted

    model = nn.Sequential(nn.Linear(2, 2))
    resumed, saved = tmp_path / "resumed.ckpt", tmp_path / "saved.ckpt"
    save_checkpoint(resumed, model, epoch=1)
    save_checkpoint(saved, model, epoch=3)
    assert _interrupted(str(saved), str(resumed), str(saved)) == (
        f"minidl train: interrupted; the last checkpoint is {saved} (epoch 3); continue with "
        f"the same options and --resume {saved}"
    )
    assert _interrupted(None, str(resumed), str(saved)).endswith(
        f"the last checkpoint is {resumed} (epoch 1); continue with the same options and "
        f"--resume {resumed}"
    )


def test_an_interrupted_runs_line_shows_a_path_that_would_hide_or_split_it(tmp_path: Path) -> None:
    """The interrupt line names a checkpoint as every refusal does (quoted where a space ends
    it or a newline would split the one line), and the command to continue with as a shell
    takes it (a path with a space quoted); where nothing was saved, the path asked for is
    quoted too. (They were printed as they are: "continue with --resume runs/a b.ckpt" ran
    on a file "runs/a", and a newline split the line.)"""
    from minidl.cli import _interrupted

    model = nn.Sequential(nn.Linear(2, 2))
    spaced = tmp_path / "a b.ckpt "
    save_checkpoint(spaced, model, epoch=2)
    assert _interrupted(str(spaced), None, str(spaced)) == (
        f"minidl train: interrupted; the last checkpoint is {str(spaced)!r} (epoch 2); "
        f"continue with the same options and --resume '{spaced}'"
    )
    split = tmp_path / "a\nb.ckpt"
    save_checkpoint(split, model, epoch=1)
    line = _interrupted(str(split), None, str(split), how="terminated")
    assert "\n" not in line
    assert line.startswith(f"minidl train: terminated; the last checkpoint is {str(split)!r} (")
    missing = str(tmp_path / "none\n.ckpt")
    assert _interrupted(None, None, missing) == (
        f"minidl train: interrupted; no checkpoint was written to {missing!r} yet"
    )


def test_the_command_to_continue_with_gives_the_path_back_to_a_shell(tmp_path: Path) -> None:
    """The command to continue with names the checkpoint as a shell takes it: a path with a
    space inside it or a quote, which a message shows as it is, is quoted there, and a shell's
    reading of the line's last words (``shlex.split``) gives the path back. (Shown as a message
    shows it, "--resume runs/a b.ckpt" ran on a file "runs/a": the tests' paths, which end in a
    space, are quoted by both.)"""
    import shlex

    from minidl.cli import _interrupted

    model = nn.Sequential(nn.Linear(2, 2))
    for name in ("a b.ckpt", "it's.ckpt", "$HOME.ckpt"):
        path = str(tmp_path / name)
        save_checkpoint(path, model, epoch=3)
        line = _interrupted(path, None, path)
        shown, command = line.split(" (epoch 3); continue with the same options and --resume ")
        assert shown == f"minidl train: interrupted; the last checkpoint is {path}"
        assert shlex.split(command) == [path]


def test_the_command_to_continue_with_takes_a_path_starting_with_a_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint named ``-x.ckpt`` (given as ``--checkpoint=-x.ckpt``) was named in the
    command to continue with as ``--resume -x.ckpt``, which the parser refuses ("argument
    --resume: expected one argument"); it is ``--resume=-x.ckpt`` now, which it takes."""
    from minidl.cli import _interrupted

    monkeypatch.chdir(tmp_path)
    save_checkpoint("-x.ckpt", nn.Sequential(nn.Linear(2, 2)), epoch=3)
    line = _interrupted("-x.ckpt", None, "-x.ckpt")
    assert line.endswith("(epoch 3); continue with the same options and --resume=-x.ckpt")
    assert build_parser().parse_args(["train", "--resume=-x.ckpt"]).resume == "-x.ckpt"


def _interrupt_behind_an_import_error(how: str, interrupt: KeyboardInterrupt) -> ImportError:
    """An ImportError with ``interrupt`` behind it, raised as ``how`` says."""
    if how == "raised from it, outside its handler":
        try:
            raise ImportError("initialization failed") from interrupt
        except ImportError as error:
            return error
    try:
        try:
            raise interrupt
        except KeyboardInterrupt as stopped:
            if how == "raised while handling it":
                raise ImportError("initialization failed")  # noqa: B904 (the case)
            if how == "raised from another error while handling it":
                raise ImportError("initialization failed") from OSError("no such file")
            try:
                raise RuntimeError("stopped") from stopped  # "two errors behind it"
            except RuntimeError as between:
                raise ImportError("initialization failed") from between
    except ImportError as error:
        return error
    raise AssertionError(how)


@pytest.mark.parametrize("stop", ["KeyboardInterrupt", "_Terminated"])
@pytest.mark.parametrize(
    "how",
    [
        "raised from it, outside its handler",
        "raised while handling it",
        "raised from another error while handling it",
        "two errors behind it",
    ],
    ids=["from", "while-handling", "from-another-while-handling", "two-behind"],
)
def test_an_interrupt_anywhere_behind_an_import_error_ends_the_run_as_the_interrupt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stop: str, how: str
) -> None:
    """A Ctrl-C or SIGTERM is behind an ImportError through its ``__cause__`` (``raise ...
    from``), through its ``__context__`` (raised while the interrupt was handled: a clean-up
    that imports), through its context where its cause is another error (raised from that one
    while the interrupt was handled), and through an error between: the run ends as the
    interrupt does, one line and 130 or 143. (Following only the cause, or only the context,
    or the cause alone where both are set, ended such runs with the ImportError's traceback
    and status 1.)"""
    from minidl import cli

    interrupt = KeyboardInterrupt() if stop == "KeyboardInterrupt" else cli._Terminated()
    error = _interrupt_behind_an_import_error(how, interrupt)

    def stopped_in_an_import(args: object) -> int:
        raise error

    monkeypatch.setattr(cli, "_run_reproduce", stopped_in_an_import)
    line, status = ("interrupted", 130) if stop == "KeyboardInterrupt" else ("terminated", 143)
    assert main(["reproduce", "--quick"]) == status
    assert capsys.readouterr() == ("", f"minidl reproduce: {line}\n")


def test_an_import_error_behind_no_interrupt_comes_out_as_it_was_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An ImportError with no interrupt behind it leaves main as it was raised: the same error,
    its cause kept (``raise``, not ``raise error from None``, which dropped the cause that
    says why the import failed), from the command or from a flag's type as the command line is
    read (there, a status 1 without the error's words passed the tests before; fails this)."""
    from minidl import cli

    cause = OSError("libfoo.so: cannot open shared object file")
    error = ImportError("initialization failed")
    error.__cause__ = cause

    def failed_import(args: object) -> int:
        raise error

    monkeypatch.setattr(cli, "_run_reproduce", failed_import)
    with pytest.raises(ImportError) as info:
        main(["reproduce", "--quick"])
    assert info.value is error
    assert info.value.__cause__ is cause
    # So too where a flag's type raises it, while the command line is read.
    monkeypatch.setattr(cli, "_positive_seconds", failed_import)
    with pytest.raises(ImportError) as info:
        main(["train", "--dist-timeout", "5"])
    assert info.value is error


def test_an_error_chain_that_loops_is_walked_once() -> None:
    """Causes set by hand can loop (``a.__cause__ = b; b.__cause__ = a``): the walk for an
    interrupt behind an error ends, with none found, or the one in the loop. (Without the set
    of errors seen, it went round the loop for ever.)"""
    import threading

    from minidl.cli import _interrupt_behind

    first, second = ImportError("initialization failed"), RuntimeError("between")
    first.__cause__, second.__cause__ = second, first
    looped, behind, interrupt = ImportError("stopped"), RuntimeError("between"), KeyboardInterrupt()
    looped.__cause__, behind.__cause__, interrupt.__cause__ = behind, interrupt, looped
    found: list[object] = []
    walk = threading.Thread(
        target=lambda: found.extend([_interrupt_behind(first), _interrupt_behind(looped)]),
        daemon=True,
    )
    walk.start()
    walk.join(timeout=10)
    assert not walk.is_alive(), "the walk went round the loop"
    assert found == [None, interrupt]


@pytest.mark.parametrize("first", ["KeyboardInterrupt", "_Terminated"])
def test_the_interrupt_an_import_error_was_raised_from_names_how_the_run_ended(
    first: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ImportError raised from one interrupt (the one that stopped the import: its
    ``__cause__``) while another was handled (its ``__context__``: a Ctrl-C, then a SIGTERM
    during the clean-up, or the other way round) ends the run as the one it was raised from
    does, as Python's traceback puts the cause first. (Walking the context first, or the
    errors breadth-first, ended it as the other interrupt.)"""
    from minidl import cli

    handled = KeyboardInterrupt() if first == "KeyboardInterrupt" else cli._Terminated()
    stopping = cli._Terminated() if first == "KeyboardInterrupt" else KeyboardInterrupt()
    try:
        try:
            raise handled
        except KeyboardInterrupt:
            raise ImportError("initialization failed") from stopping
    except ImportError as raised:
        error = raised
    assert error.__cause__ is stopping and error.__context__ is handled

    def stopped_in_an_import(args: object) -> int:
        raise error

    monkeypatch.setattr(cli, "_run_reproduce", stopped_in_an_import)
    line, status = ("terminated", 143) if first == "KeyboardInterrupt" else ("interrupted", 130)
    assert main(["reproduce", "--quick"]) == status
    assert capsys.readouterr() == ("", f"minidl reproduce: {line}\n")


class _FailingOutput(io.StringIO):
    """A standard stream whose writes fail with ``error`` (a full disk, a reader gone)."""

    def __init__(self, error: OSError) -> None:
        super().__init__()
        self.error = error

    def write(self, text: str) -> int:
        raise self.error


@pytest.mark.parametrize("arguments", [["--help"], ["--version"], ["train", "--help"]])
def test_help_or_version_not_written_is_said_with_status_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], arguments: list[str]
) -> None:
    """The help or the version that the standard output does not take (``> /dev/full``) is an
    error of one line and status 1, as a command's output not written is; argparse passed over
    the failure, and the command exited 0 having written nothing. A reader gone (``| head``)
    stops it quietly with status 1, as it stops a command."""
    monkeypatch.setattr(sys, "stdout", _FailingOutput(OSError(errno.ENOSPC, "No space left")))
    assert main(arguments) == 1
    assert capsys.readouterr().err == (
        "minidl: error: cannot write to the standard output (No space left)\n"
    )
    gone = _FailingOutput(BrokenPipeError(errno.EPIPE, "Broken pipe"))
    monkeypatch.setattr(sys, "stdout", gone)
    assert main(arguments) == 1
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("arguments", [["--help"], ["--version"], ["train", "--help"]])
def test_help_or_version_into_a_closed_output_is_said_with_status_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], arguments: list[str]
) -> None:
    """With the standard output closed (``minidl --help >&-``: Python's ``sys.stdout`` is
    ``None``), the help or the version is not written, said as for a full disk, status 1:
    argparse wrote it to the standard error instead, with status 0."""
    monkeypatch.setattr(sys, "stdout", None)
    assert main(arguments) == 1
    assert capsys.readouterr().err == (
        "minidl: error: cannot write to the standard output (Bad file descriptor)\n"
    )


def test_help_into_a_closed_output_fails_for_real() -> None:
    """``minidl --help >&-`` in a shell: status 1 and the error's one line, no help."""
    done = subprocess.run(
        ["sh", "-c", 'exec "$0" -m minidl --help >&-', sys.executable],
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr) == (
        1,
        "minidl: error: cannot write to the standard output (Bad file descriptor)\n",
    )


@pytest.mark.parametrize(
    "arguments",
    [["train", "--epochs", "1", "--quiet"], ["reproduce", "--quick", "--tables", "1"]],
)
def test_a_command_into_a_closed_output_is_refused_before_the_work(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    arguments: list[str],
) -> None:
    """``minidl train >&-`` trained, printed its final errors nowhere and exited 0 (print
    passes over a closed output); refused before the training now, as the help is. (reproduce
    with --quiet prints nothing there, and runs.)"""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdout", None)
    assert main(arguments) == 1
    assert capsys.readouterr().err == (
        f"minidl {arguments[0]}: error: cannot write to the standard output (Bad file descriptor)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_messages_into_a_closed_standard_error_go_nowhere(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """With the standard error closed (``2>&-``: ``sys.stderr`` is ``None``), print(file=None)
    wrote the errors and warnings to the standard output, into the results' file; and
    reproduce's progress bar failed inside tqdm (AttributeError), after all the work, its
    folder removed. Both go nowhere now."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stderr", None)
    arguments = ["train", "--quiet", "--epochs", "1", "--activation", "relu", "--lr", "1e30"]
    assert main(arguments) == 0
    assert capsys.readouterr().out == "final train error: 100.00%\nfinal test error: 100.00%\n"
    assert main(["train", "--quiet", "--optimizer", "adadelta", "--momentum", "0.5"]) == 2
    assert capsys.readouterr().out == ""
    assert main(["reproduce", "--quick", "--jobs", "1", "--tables", "1", "--out", "out"]) == 0
    assert (tmp_path / "out" / "report.md").is_file()
    capsys.readouterr()
    # (a usage error's usage: argparse fell back to the standard output)
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "-1"])
    assert info.value.code == 2
    assert main([]) == 2
    assert capsys.readouterr().out == ""


def test_a_usage_error_the_standard_error_does_not_take_keeps_status_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A usage error whose usage the standard error does not take still ends with the usage
    error's status, 2: nothing can be said where errors go."""
    monkeypatch.setattr(sys, "stderr", _FailingOutput(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(SystemExit) as info:
        main(["train", "--bogus"])
    assert info.value.code == 2


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_help_into_a_full_device_fails() -> None:
    """``minidl --help > /dev/full``, for real: status 1 and the error's one line."""
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "minidl", "--help"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert (done.returncode, done.stderr) == (
        1,
        "minidl: error: cannot write to the standard output (No space left on device)\n",
    )


def test_an_os_error_of_a_flags_type_is_not_taken_for_the_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An OSError raised as a flag is read (torch's import failing on a missing library) comes
    out as it was raised: taken for the help not written, it was said as "cannot write to the
    standard output (None)", the library's name lost."""
    from minidl import cli

    error = OSError("libtorch_global_deps.so: cannot open shared object file")

    def broken() -> None:
        raise error

    monkeypatch.setattr(cli, "_import_torch", broken)
    with pytest.raises(OSError) as info:
        main(["train", "--lr", "0.1", "--epochs", "0"])
    assert info.value is error


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_the_help_is_written_with_interrupts_not_held(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C and SIGTERM are held back while torch is imported, not while the help is
    written: a write that blocks (a terminal paused, a slow reader) could not be stopped."""
    masks: list[set[int]] = []

    class Recording(io.StringIO):
        def write(self, text: str) -> int:
            masks.append(set(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
            return super().write(text)

    monkeypatch.setattr(sys, "stdout", Recording())
    with pytest.raises(SystemExit):
        main(["train", "--lr", "0.1", "--help"])
    assert masks
    assert all(signal.SIGINT not in mask and signal.SIGTERM not in mask for mask in masks)


def test_an_interrupt_between_the_parse_and_the_command_ends_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Ctrl-C as main looks for torchrun's environment, between the parse and the command's
    own handling: one line and 130 (a traceback before)."""
    from minidl import cli

    class Interrupting(dict[str, str]):
        def __contains__(self, key: object) -> bool:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli.os, "environ", Interrupting(os.environ))
    assert main(["train", "--epochs", "0"]) == 130
    assert capsys.readouterr().err == "minidl: interrupted\n"


def test_a_run_of_a_negative_seed_resumes_under_the_same_seed_written_as_2_to_the_64_minus_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--seed -1`` and ``--seed 2**64 - 1`` train alike (see --seed), but a run saved with one
    was refused resuming with the other ("--seed -1 in the checkpoint, 18446744073709551615
    now"): they are one setting; the resumed run ends as the uninterrupted one."""
    path = tmp_path / "run.ckpt"
    argv = ["train", "--quiet", "--hidden", "4", "--batch-size", "250"]
    assert main([*argv, "--epochs", "1", "--seed=-1", "--checkpoint", str(path)]) == 0
    resumed = tmp_path / "resumed.ckpt"
    seed = str(2**64 - 1)
    assert main([*argv, "--epochs", "2", "--seed", seed, "--resume", str(path),
                 "--checkpoint", str(resumed)]) == 0  # fmt: skip
    whole = tmp_path / "whole.ckpt"
    assert main([*argv, "--epochs", "2", "--seed=-1", "--checkpoint", str(whole)]) == 0
    expected = read_checkpoint(whole).model_state
    for name, value in read_checkpoint(resumed).model_state.items():
        assert torch.equal(value, expected[name]), name
    capsys.readouterr()
    assert main([*argv, "--epochs", "2", "--seed", "1", "--resume", str(path)]) == 2
    assert "--seed -1 in the checkpoint, 1 now" in capsys.readouterr().err
