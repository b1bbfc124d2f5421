"""Checkpoints: the whole training state round-trips, a resumed run is bit-identical to an
uninterrupted one, writes are atomic, and loading never runs code from the file.

Refusals of bad files (truncated, corrupted, tampered, another architecture, a newer format) are
in ``test_validation.py``; random byte corruption is in ``test_properties.py``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from minidl import nn, optim
from minidl.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from minidl.data import make_disk_data
from minidl.optim.lr_scheduler import LRScheduler
from minidl.train import History, fit

DATA = make_disk_data(n_train=120, n_validation=40, n_test=10, seed=5)


def build(
    kind: str, seed: int = 0, dtype: torch.dtype = torch.float32, lr_factor: float = 1.0
) -> tuple[nn.Sequential, optim.Optimizer, LRScheduler | None, torch.Generator]:
    """A small network with the optimizer and scheduler of ``kind``, all from ``seed``, with
    ``lr_factor`` times the kind's learning rate."""
    torch.manual_seed(seed)
    model = nn.mlp((2, 6, 5, 2), ("tanh", "relu"), dtype=dtype)
    scheduler: LRScheduler | None
    if kind == "sgd-momentum-step":
        optimizer: optim.Optimizer = optim.SGD(
            model.parameters(), lr=0.05 * lr_factor, momentum=0.9
        )
        scheduler = optim.StepDecay(optimizer, step_size=2, gamma=0.5)
    elif kind == "adadelta-clr":
        optimizer = optim.Adadelta(model.parameters(), lr=1.0 * lr_factor, rho=0.8)
        scheduler = optim.CyclicLR(optimizer, base_lr=0.1, max_lr=1.0, step_size_up=3)
    elif kind == "sgd-warmup-cosine":
        optimizer = optim.SGD(model.parameters(), lr=0.1 * lr_factor, momentum=0.5)
        warmup = optim.LinearWarmup(optimizer, warmup_steps=3, start_factor=0.25)
        cosine = optim.CosineAnnealing(optimizer, T_max=4)
        scheduler = optim.SequentialSchedule(optimizer, [warmup, cosine], milestones=[3])
    else:
        optimizer = optim.SGD(model.parameters(), lr=0.1 * lr_factor)
        scheduler = None
    return model, optimizer, scheduler, torch.Generator().manual_seed(seed + 1)


def train(
    parts: tuple[nn.Sequential, optim.Optimizer, LRScheduler | None, torch.Generator],
    epochs: int,
    start_epoch: int = 0,
    history: History | None = None,
) -> History:
    model, optimizer, scheduler, generator = parts
    return fit(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        DATA.train.x.to(model[0].weight.dtype),
        DATA.train.y,
        epochs=epochs,
        batch_size=32,
        scheduler=scheduler,
        validation=(DATA.validation.x.to(model[0].weight.dtype), DATA.validation.y),
        generator=generator,
        start_epoch=start_epoch,
        history=history,
    )


def snapshot(
    parts: tuple[nn.Sequential, optim.Optimizer, LRScheduler | None, torch.Generator],
) -> dict[str, Any]:
    """Everything a checkpoint restores, as comparable values."""
    model, optimizer, scheduler, generator = parts
    state = optimizer.state_dict()
    return {
        "model": model.state_dict(),
        "optimizer": {k: v for k, v in state.items() if k != "state"},
        "optimizer_state": state["state"],
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "lr": optimizer.lr,
        "generator": generator.get_state(),
        "rng": torch.get_rng_state(),
    }


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        other = b[key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), key
        elif isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values()):
            assert value.keys() == other.keys(), key
            for name, tensor in value.items():
                assert torch.equal(tensor, other[name]), f"{key}.{name}"
        else:
            assert value == other, key


KINDS = ["sgd", "sgd-momentum-step", "adadelta-clr", "sgd-warmup-cosine"]


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_restores_every_piece_of_state(kind: str, tmp_path: Path) -> None:
    source = build(kind, seed=1)
    history = train(source, epochs=2)
    torch.rand(3)  # move the global generator away from its seeded state
    save_checkpoint(
        tmp_path / "run.ckpt",
        source[0],
        source[1],
        source[2],
        epoch=2,
        history=history,
        generator=source[3],
        extra={"note": "two epochs"},
    )
    expected = snapshot(source)

    # Another initialisation, other generator states, other learning rates.
    target = build(kind, seed=7, lr_factor=3.0)
    torch.rand(11)
    state = load_checkpoint(tmp_path / "run.ckpt", *target[:3], generator=target[3])

    assert_same(snapshot(target), expected)
    assert state.epoch == 2
    assert state.step == source[1].step_count == 2 * 4  # 120 samples in batches of 32
    assert state.history == history
    assert state.extra == {"note": "two epochs"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resumed_training_is_bit_identical(kind: str, dtype: torch.dtype, tmp_path: Path) -> None:
    uninterrupted = build(kind, dtype=dtype)
    full_history = train(uninterrupted, epochs=5)

    first = build(kind, dtype=dtype)
    history = train(first, epochs=2)
    save_checkpoint(tmp_path / "c", *first[:3], epoch=2, history=history, generator=first[3])
    torch.rand(5)  # whatever happens in between must not matter

    resumed = build(kind, dtype=dtype)
    state = load_checkpoint(tmp_path / "c", *resumed[:3], generator=resumed[3])
    resumed_history = train(resumed, epochs=5, start_epoch=state.epoch, history=state.history)

    assert_same(snapshot(resumed), snapshot(uninterrupted))
    assert resumed_history == full_history


def test_file_is_plain_safetensors_with_a_json_header(tmp_path: Path) -> None:
    model, optimizer, scheduler, generator = build("sgd-momentum-step")
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model, optimizer, scheduler, epoch=3, generator=generator)

    with safe_open(str(path), framework="pt") as file:
        names = set(file.keys())
        metadata = file.metadata()
        weight = file.get_tensor("model.0.weight")
    assert torch.equal(weight, model[0].weight.data)
    assert names == {
        *(f"model.{name}" for name in model.state_dict()),
        "optimizer.momentum_buffer",
        "rng.torch",
        "rng.generator",
    }
    header = json.loads(metadata["minidl"])["header"]
    assert header["format"] == FORMAT
    assert header["format_version"] == FORMAT_VERSION
    assert header["architecture"]["parameters"][0] == ["0.weight", [6, 2], "float32"]
    assert header["architecture"]["repr"] == repr(model)
    assert header["optimizer"]["class"] == "SGD"
    assert header["optimizer"]["hyperparameters"] == {"momentum": 0.9}
    assert header["scheduler"]["state"] == scheduler.state_dict()  # type: ignore[union-attr]
    assert header["training"]["epoch"] == 3
    assert all(entry["finite"] for entry in header["tensors"].values())
    assert all(len(entry["sha256"]) == 64 for entry in header["tensors"].values())


def test_read_checkpoint_needs_no_model(tmp_path: Path) -> None:
    model, optimizer, _, _ = build("sgd")
    save_checkpoint(tmp_path / "c", model, optimizer, epoch=4)
    checkpoint = read_checkpoint(tmp_path / "c")
    assert checkpoint.training.epoch == 4
    assert checkpoint.model_state.keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in checkpoint.model_state.items())


def test_optimizer_and_scheduler_are_optional(tmp_path: Path) -> None:
    model, optimizer, _, _ = build("sgd")
    save_checkpoint(tmp_path / "c", model)
    other, _, _, _ = build("sgd", seed=3)
    state = load_checkpoint(tmp_path / "c", other)
    assert all(torch.equal(other.state_dict()[k], v) for k, v in model.state_dict().items())
    assert (state.epoch, state.step) == (0, 0)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(tmp_path / "c", other, optimizer)


def test_a_full_checkpoint_loads_into_a_model_alone(tmp_path: Path) -> None:
    """To evaluate a trained network, only the model is needed: the optimizer's and scheduler's
    state in the file are then left unused."""
    model, optimizer, scheduler, generator = build("sgd-momentum-step")
    train((model, optimizer, scheduler, generator), epochs=2)
    save_checkpoint(tmp_path / "c", model, optimizer, scheduler, epoch=2, generator=generator)
    other, _, _, _ = build("sgd-momentum-step", seed=3)
    state = load_checkpoint(tmp_path / "c", other)
    assert state.epoch == 2
    assert all(torch.equal(other.state_dict()[k], v) for k, v in model.state_dict().items())


def test_a_scheduler_is_restored_with_its_own_optimizer(tmp_path: Path) -> None:
    model, optimizer, scheduler, generator = build("sgd-momentum-step")
    save_checkpoint(tmp_path / "c", model, optimizer, scheduler, generator=generator)
    other, other_optimizer, other_scheduler, _ = build("sgd-momentum-step", seed=3)
    assert other_scheduler is not None
    before = (other.state_dict(), other_optimizer.lr, other_scheduler.state_dict())
    with pytest.raises(CheckpointError, match="a scheduler is restored with its optimizer"):
        load_checkpoint(tmp_path / "c", other, None, other_scheduler)
    third = optim.SGD(other.parameters(), lr=0.05, momentum=0.9)
    with pytest.raises(CheckpointError, match="the scheduler given schedules another optimizer"):
        load_checkpoint(tmp_path / "c", other, third, other_scheduler)
    # With an optimizer, a saved scheduler must be given: resuming would lose the schedule.
    with pytest.raises(CheckpointError, match="saved with scheduler StepDecay, got None"):
        load_checkpoint(tmp_path / "c", other, other_optimizer)
    after = (other.state_dict(), other_optimizer.lr, other_scheduler.state_dict())
    assert all(torch.equal(after[0][k], v) for k, v in before[0].items())
    assert after[1:] == before[1:]


def test_a_diverged_run_round_trips(tmp_path: Path) -> None:
    """A run that diverged is worth keeping, to see where: non-finite weights, optimizer state
    and curves (a NaN loss, no validation set) are saved, flagged and loaded back as they were."""
    model, optimizer, scheduler, generator = build("sgd-momentum-step")
    history = train((model, optimizer, scheduler, generator), epochs=2)
    history.train_loss[1] = float("nan")
    history.validation_error[:] = [float("nan")] * 2
    model[0].weight.data[1, 0] = float("inf")
    model[2].bias.data[0] = float("nan")
    save_checkpoint(tmp_path / "c", model, optimizer, scheduler, epoch=2, history=history)
    checkpoint = read_checkpoint(tmp_path / "c")
    flags = {name: entry["finite"] for name, entry in checkpoint.header["tensors"].items()}
    assert not flags["model.0.weight"] and not flags["model.2.bias"]
    assert flags["model.0.bias"] and flags["model.2.weight"]
    other, other_optimizer, other_scheduler, _ = build("sgd-momentum-step", seed=3)
    state = load_checkpoint(tmp_path / "c", other, other_optimizer, other_scheduler)
    for name, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[name].isnan(), value.isnan())
        assert torch.equal(other.state_dict()[name].nan_to_num(), value.nan_to_num())
    assert state.history.train_loss[0] == history.train_loss[0]
    assert math.isnan(state.history.train_loss[1])
    assert all(math.isnan(error) for error in state.history.validation_error)


def test_a_failed_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, optimizer, _, _ = build("sgd")
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model, optimizer, epoch=1)
    before = path.read_bytes()

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    model[0].weight.data.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, optimizer, epoch=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]  # no temporary left


def test_the_file_then_its_folder_reach_the_disk_around_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temporary file is fsync-ed before it replaces the checkpoint, and the folder after,
    so that the rename itself survives a crash."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor: int) -> None:
        events.append(
            "fsync folder" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "fsync file"
        )
        real_fsync(descriptor)

    def replace(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> None:
        events.append("replace")
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    model, optimizer, scheduler, generator = build("sgd")
    save_checkpoint(tmp_path / "run.ckpt", model, optimizer, scheduler, generator=generator)
    assert events == ["fsync file", "replace", "fsync folder"]


def test_checkpoint_gets_ordinary_permissions(tmp_path: Path) -> None:
    """The file gets the permissions the umask gives a new file, and the umask (read by
    setting it) is left as it was."""
    model, _, _, _ = build("sgd")
    previous = os.umask(0o027)
    try:
        save_checkpoint(tmp_path / "c", model)
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o640


def test_the_whole_file_is_written_before_its_fsync_and_nothing_is_left_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        if not stat.S_ISDIR(os.fstat(descriptor).st_mode):
            sizes.append(os.fstat(descriptor).st_size)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    model, optimizer, scheduler, generator = build("sgd")
    open_before = sorted(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").exists() else []
    save_checkpoint(tmp_path / "c", model, optimizer, scheduler, generator=generator)
    assert sizes == [(tmp_path / "c").stat().st_size]
    if open_before:
        assert sorted(os.listdir("/proc/self/fd")) == open_before


class _Exploit:
    """Unpickling this object creates the file ``marker`` (what a malicious checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_pickled_checkpoint_is_refused_without_running_it(how: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "run.ckpt"
    payload = {"model.0.weight": _Exploit(marker)}
    if how == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    model, optimizer, _, _ = build("sgd")
    before = model.state_dict()

    with pytest.raises(CheckpointError, match=r"run\.ckpt': not a safetensors file: .* pickle"):
        load_checkpoint(path, model, optimizer)
    assert not marker.exists()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    # Sanity check of the test itself: unpickling the file does run the payload.
    pickle.loads(pickle.dumps(payload))
    assert marker.exists()


HYPERPARAMETER_CASES: dict[str, tuple[Any, Any]] = {
    "adam": (
        lambda p: optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
        lambda p: optim.Adam(p, lr=0.02),
    ),
    "rmsprop": (
        lambda p: optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-6, momentum=0.8, centered=True),
        lambda p: optim.RMSprop(p, lr=0.01, momentum=0.2, centered=True, weight_decay=0.3),
    ),
    "sgd-nesterov": (
        lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda p: optim.SGD(p, lr=0.05, momentum=0.5, nesterov=True, weight_decay=0.2),
    ),
    "adadelta": (
        lambda p: optim.Adadelta(p, lr=1.0, rho=0.8, eps=1e-4),
        lambda p: optim.Adadelta(p, lr=1.0),
    ),
}


@pytest.mark.parametrize("case", sorted(HYPERPARAMETER_CASES))
def test_checkpoint_restores_the_optimizer_hyperparameters(case: str, tmp_path: Path) -> None:
    """A checkpoint loaded into an optimizer of the saved class built with other
    hyper-parameters (the same state tensors) gives it the saved ones, through the JSON header
    (betas come back as a tuple): the resumed run is bit-identical to the uninterrupted one."""
    make_saved, make_other = HYPERPARAMETER_CASES[case]
    parts = []
    for make in (make_saved, make_saved, make_other):
        torch.manual_seed(0)
        model = nn.mlp((2, 6, 5, 2), ("tanh", "relu"), dtype=torch.float64)
        parts.append((model, make(model.parameters()), None, torch.Generator().manual_seed(1)))
    uninterrupted, first, resumed = parts
    full_history = train(uninterrupted, epochs=4)
    history = train(first, epochs=2)
    save_checkpoint(tmp_path / "c", *first[:3], epoch=2, history=history, generator=first[3])
    assert resumed[1].hyperparameters() != first[1].hyperparameters()

    state = load_checkpoint(tmp_path / "c", *resumed[:3], generator=resumed[3])
    assert resumed[1].hyperparameters() == first[1].hyperparameters()
    assert repr(resumed[1]) == repr(first[1])
    resumed_history = train(resumed, epochs=4, start_epoch=state.epoch, history=state.history)
    assert_same(snapshot(resumed), snapshot(uninterrupted))
    assert resumed_history == full_history
