"""Checkpoint behaviour that a mutation audit of ``minidl.checkpoint`` found no test for: each
test here fails on a small change to the source (named in its docstring) that the rest of the
suite let through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from minidl import checkpoint, nn, optim
from minidl.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from tests.helpers import record_file_fsyncs


def test_a_small_checkpoint_is_flushed_before_its_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes still in Python's write buffer reach the file before ``os.fsync``: a file
    small enough to stay in the buffer (a model of 2 scalars, no optimizer) must have its
    full size when fsync-ed. (Without the ``flush`` the fsync saw only the part that left the
    buffer, and the rest reached the disk unsynced on ``close``.)"""
    sizes = record_file_fsyncs(monkeypatch)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 1))
    path = tmp_path / "small.ckpt"
    save_checkpoint(path, model)
    size = path.stat().st_size
    # (about 10 kB: each half written stays in the file object's buffer until a flush)
    assert sizes == [size]


def _sgd_model() -> tuple[nn.Sequential, optim.SGD]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2))
    return model, optim.SGD(model.parameters(), lr=0.1)


@pytest.mark.parametrize("function", ["save", "load"])
def test_a_superseded_scheduler_is_refused_naming_the_one_that_schedules(
    tmp_path: Path, function: str
) -> None:
    """A scheduler that a later one took the optimizer over from is refused, before anything is
    written or loaded, naming the later one (without the check, the save wrote the old
    schedule's state as if it set the rate)."""
    model, optimizer = _sgd_model()
    path = tmp_path / "run.ckpt"
    if function == "load":
        first = optim.StepDecay(optimizer, step_size=2)
        save_checkpoint(path, model, optimizer, first)
        before = path.read_bytes()
    else:
        first = optim.StepDecay(optimizer, step_size=2)
    optim.ExponentialDecay(optimizer, gamma=0.5)
    message = (
        r"the optimizer is scheduled by the ExponentialDecay built on it after the StepDecay "
        r"given; give that one"
    )
    if function == "save":
        with pytest.raises(CheckpointError, match=message):
            save_checkpoint(path, model, optimizer, first)
        assert list(tmp_path.iterdir()) == []
    else:
        lr, state = optimizer.lr, first.state_dict()
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path, model, optimizer, first)
        assert path.read_bytes() == before
        assert (optimizer.lr, first.state_dict()) == (lr, state)


def test_a_header_longer_than_the_limit_is_refused_before_it_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_checkpoint refuses a safetensors header longer than ``_MAX_HEADER`` (100 MB, what
    safetensors reads) from its 8-byte length alone, before parsing it: shown with the limit
    lowered below the size of a real header (without the check, the header was parsed and the
    file read whatever the limit)."""
    model, optimizer = _sgd_model()
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model, optimizer)
    size = int.from_bytes(path.read_bytes()[:8], "little")
    monkeypatch.setattr(checkpoint, "_MAX_HEADER", size - 1)
    with pytest.raises(
        CheckpointError, match=rf"not a safetensors file, or truncated \(header of {size} bytes"
    ):
        read_checkpoint(path)
    monkeypatch.setattr(checkpoint, "_MAX_HEADER", size)
    assert read_checkpoint(path).header["optimizer"]["class"] == "SGD"


# A schedule's class, the settings it is saved with, and for each setting another value: a
# checkpoint saved with the first is refused by a schedule built with the other (settings are
# not in a schedule's state; the check compares reprs, so each must show every setting).
SCHEDULE_SETTINGS: list[tuple[str, Any, dict[str, Any], str, Any]] = [
    (name, kind, settings, setting, other)
    for name, kind, settings, others in [
        ("step", optim.StepDecay, {"step_size": 2, "gamma": 0.5}, {"step_size": 3, "gamma": 0.25}),
        ("exp", optim.ExponentialDecay, {"gamma": 0.5}, {"gamma": 0.25, "interval": "batch"}),
        (
            "warmup",
            optim.LinearWarmup,
            {"warmup_steps": 3, "start_factor": 0.25},
            {"warmup_steps": 4, "start_factor": 0.5, "interval": "batch"},
        ),
        (
            "cosine",
            optim.CosineAnnealing,
            {"T_max": 5, "eta_min": 0.01},
            {"T_max": 6, "eta_min": 0.02, "interval": "batch"},
        ),
        (
            "restarts",
            optim.CosineAnnealingWarmRestarts,
            {"T_0": 2, "T_mult": 2, "eta_min": 0.01},
            {"T_0": 3, "T_mult": 3, "eta_min": 0.02, "interval": "batch"},
        ),
        (
            "cyclic",
            optim.CyclicLR,
            {
                "base_lr": 0.01,
                "max_lr": 0.1,
                "step_size_up": 2,
                "step_size_down": 3,
                "mode": "exp_range",
                "gamma": 0.9,
            },
            {
                "max_lr": 0.2,
                "step_size_up": 3,
                "step_size_down": 4,
                "mode": "triangular2",
                "gamma": 0.8,
            },
        ),
        (
            "one-cycle",
            optim.OneCycle,
            {"max_lr": 0.1, "total_steps": 20},
            {
                "max_lr": 0.2,
                "total_steps": 21,
                "pct_start": 0.4,
                "anneal_strategy": "linear",
                "div_factor": 10.0,
                "final_div_factor": 100.0,
            },
        ),
    ]
    for setting, other in others.items()
]


@pytest.mark.parametrize(
    ("kind", "settings", "setting", "other"),
    [case[1:] for case in SCHEDULE_SETTINGS],
    ids=[f"{case[0]}.{case[3]}" for case in SCHEDULE_SETTINGS],
)
def test_a_schedule_differing_in_any_one_setting_is_refused_on_load(
    tmp_path: Path, kind: Any, settings: dict[str, Any], setting: str, other: Any
) -> None:
    """Every setting of every schedule takes part in the check that the schedule loaded is the
    one saved (without ``start_factor`` in ``LinearWarmup``'s repr, a warm-up from another
    factor took the saved state and went on with its own rates); the same settings load."""
    path = tmp_path / "run.ckpt"
    model, optimizer = _sgd_model()
    schedule = kind(optimizer, **settings)
    for _ in range(2):
        schedule.step()
    save_checkpoint(path, model, optimizer, schedule)

    model, optimizer = _sgd_model()
    same = kind(optimizer, **settings)
    load_checkpoint(path, model, optimizer, same)
    assert (same.last_step, optimizer.lr) == (2, schedule.lr)

    model, optimizer = _sgd_model()
    changed = kind(optimizer, **{**settings, setting: other})
    before = (changed.state_dict(), repr(changed), optimizer.lr)
    with pytest.raises(
        CheckpointError, match="the checkpoint is for another scheduler: the settings differ"
    ):
        load_checkpoint(path, model, optimizer, changed)
    assert (changed.state_dict(), repr(changed), optimizer.lr) == before


def test_a_sequence_with_other_milestones_is_refused_on_load(tmp_path: Path) -> None:
    """A ``SequentialSchedule`` whose milestones differ is refused (its repr shows them)."""
    path = tmp_path / "run.ckpt"

    def sequence(optimizer: optim.Optimizer, milestone: int) -> optim.SequentialSchedule:
        warmup = optim.LinearWarmup(optimizer, warmup_steps=2)
        decay = optim.ExponentialDecay(optimizer, gamma=0.5)
        return optim.SequentialSchedule(optimizer, [warmup, decay], milestones=[milestone])

    model, optimizer = _sgd_model()
    save_checkpoint(path, model, optimizer, sequence(optimizer, 3))
    model, optimizer = _sgd_model()
    with pytest.raises(
        CheckpointError, match="the checkpoint is for another scheduler: the settings differ"
    ):
        load_checkpoint(path, model, optimizer, sequence(optimizer, 4))


def test_a_model_differing_in_shapes_and_dtypes_is_not_called_a_cast_copy(tmp_path: Path) -> None:
    """A bare module (whose repr shows no shapes) with a parameter of another shape and dtype:
    the message lists the shape that differs, rather than calling the model the same one cast
    to another dtype ("the same names and shapes"), which a check of the names alone did."""
    saved = nn.Module()
    saved.register_parameter("w", nn.Parameter(torch.zeros(3)))
    save_checkpoint(tmp_path / "c", saved)
    model = nn.Module()
    model.register_parameter("w", nn.Parameter(torch.ones(4, dtype=torch.float64)))
    with pytest.raises(
        CheckpointError,
        match=r"another architecture: 'w' has shape \(3,\) \(float32\) in the checkpoint, "
        r"\(4,\) \(float64\) in the model",
    ):
        load_checkpoint(tmp_path / "c", model)
    assert torch.equal(model.w.data, torch.ones(4, dtype=torch.float64))
    cast = nn.Module()
    cast.register_parameter("w", nn.Parameter(torch.ones(3, dtype=torch.float64)))
    with pytest.raises(CheckpointError, match="the same names and shapes"):
        load_checkpoint(tmp_path / "c", cast)


def test_the_training_state_of_a_checkpoint_is_a_copy(tmp_path: Path) -> None:
    """``Checkpoint.training`` gives a new ``extra`` each time: changing one (or the
    ``TrainingState`` that ``load_checkpoint`` returns), nested values too, leaves the
    checkpoint read as it was (a shallow copy let a change inside ``extra["run"]`` reach the
    header, and the ``extra`` of a later ``load_checkpoint`` of the same Checkpoint)."""
    model, optimizer = _sgd_model()
    save_checkpoint(tmp_path / "c", model, optimizer, extra={"run": {"seed": 1}, "tag": "a"})
    read = read_checkpoint(tmp_path / "c")
    first = read.training
    first.extra["tag"] = "b"
    first.extra["run"]["seed"] = 2
    first.history.lr.append(1.0)
    second = read.training
    assert second.extra == {"run": {"seed": 1}, "tag": "a"}
    assert second.history.lr == []
    assert read.header["training"]["extra"] == {"run": {"seed": 1}, "tag": "a"}
    loaded = load_checkpoint(read, *_sgd_model())
    assert loaded.extra == {"run": {"seed": 1}, "tag": "a"}
    loaded.extra["run"]["seed"] = 3
    assert read.training.extra == {"run": {"seed": 1}, "tag": "a"}
