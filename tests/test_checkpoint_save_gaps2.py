"""Checkpoint saving (``save_checkpoint``, ``Checkpoint`` and the checks they call): what a
third mutation audit of minidl.checkpoint's save side found untested. Each test fails on a small
change to the source (named in its docstring) that the rest of the suite let through."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

import minidl.checkpoint
from minidl import nn, optim
from minidl.checkpoint import Checkpoint, CheckpointError, read_checkpoint, save_checkpoint
from minidl.optim.lr_scheduler import LRScheduler


class _Held(nn.Module):
    """Gaussian noise drawn from the generator that ``pick`` finds in the attribute ``name``."""

    def __init__(self, name: str, value: object, pick: Any) -> None:
        super().__init__()
        setattr(self, name, value)
        self.name, self.pick = name, pick

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        generator = self.pick(getattr(self, self.name))
        return input + torch.randn(input.shape, generator=generator, dtype=input.dtype)

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output


def test_a_value_of_a_type_from_a_nested_module_is_named_by_its_package(tmp_path: Path) -> None:
    """A value of ``extra`` of a type from a submodule (``json.decoder.JSONDecoder``) is named by
    its top package and its name, ``json.JSONDecoder``, as the message does for NumPy's.
    (Mutant: the last part of the module, ``decoder.JSONDecoder``.)"""
    path = tmp_path / "run.ckpt"
    with pytest.raises(
        CheckpointError,
        match=r"^save_checkpoint: extra\['d'\] is of type json\.JSONDecoder, which a checkpoint "
        r"cannot keep",
    ):
        save_checkpoint(path, nn.Linear(2, 2), extra={"d": json.JSONDecoder()})
    assert not path.exists()


def test_a_tied_parameter_is_named_in_the_optimizer_header_by_its_first_name(
    tmp_path: Path,
) -> None:
    """A weight registered in two layers: the header's ``optimizer.parameters`` names it as the
    model's state and architecture do, by its first name (``0.weight``), not by a name the
    checkpoint holds no tensor of. (Mutant: ``named_parameters(remove_duplicate=False)``, which
    named it ``2.weight``.)"""
    first, second = nn.Linear(2, 2), nn.Linear(2, 2)
    second.register_parameter("weight", first.weight)
    model = nn.Sequential(first, nn.ReLU(), second)
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model, optim.SGD(model.parameters(), lr=0.1))
    checkpoint = read_checkpoint(path)
    names = [entry[0] for entry in checkpoint.header["architecture"]["parameters"]]
    assert names == ["0.weight", "0.bias", "2.bias"]
    assert checkpoint.header["optimizer"]["parameters"] == names
    assert all(f"model.{name}" in checkpoint.tensors for name in names)


def test_checkpoints_with_the_same_header_and_tensors_of_other_names_differ(
    tmp_path: Path,
) -> None:
    """Two checkpoints of one header whose tensors are as many but one is named otherwise: not
    equal (and no KeyError). (Mutant: the names compared by their count.)"""
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, nn.Linear(2, 2))
    read = read_checkpoint(path)
    tensors = dict(read.tensors)
    tensors["rng.other"] = tensors.pop("rng.torch")
    other = Checkpoint(header=dict(read.header), tensors=tensors)
    assert len(other.tensors) == len(read.tensors)
    assert read != other and other != read
    assert read == read_checkpoint(path)


def test_a_list_of_generators_in_an_attribute_named_generator_is_saved(tmp_path: Path) -> None:
    """A module whose ``generator`` attribute is a list of generators (not one): each is saved
    by its place, as in any other attribute. (Mutant: every ``generator`` attribute skipped
    among the others, whether it is a generator or not: the states were not saved, and a
    resumed run drew other numbers.)"""
    path = tmp_path / "run.ckpt"
    generators = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    model = nn.Sequential(_Held("generator", generators, lambda held: held[1]))
    save_checkpoint(path, model)
    checkpoint = read_checkpoint(path)
    entries = sorted(name for name in checkpoint.tensors if name.startswith("rng.module."))
    assert entries == ["rng.module.0.generator[0]", "rng.module.0.generator[1]"]
    assert torch.equal(checkpoint.tensors["rng.module.0.generator[1]"], generators[1].get_state())


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="needs os.fchmod")
def test_a_replaced_checkpoint_keeps_its_setgid_bit(tmp_path: Path) -> None:
    """A checkpoint made ``0o2640`` (setgid, private to the group) keeps all of its mode when
    replaced. (Mutant: the mode cut to its permission bits, ``& 0o777``.)"""
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, nn.Linear(2, 2))
    os.chmod(path, 0o2640)
    if stat.S_IMODE(path.stat().st_mode) != 0o2640:
        pytest.skip("this file system or user cannot set the setgid bit")
    save_checkpoint(path, nn.Linear(2, 2), epoch=3)
    assert stat.S_IMODE(path.stat().st_mode) == 0o2640
    assert read_checkpoint(path).training.epoch == 3


def test_the_test_delay_sleeps_with_half_the_file_on_disk_then_all_of_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The crash tests' hook sleeps half-way through writing the temporary file with that half
    in the file (flushed, so that a run killed then leaves a half-written file, as a crash
    mid-write does), and again before the rename with the whole of it. (Mutant: no flush before
    the first sleep: the half stayed in the process's buffer.)"""
    sizes: list[tuple[float, list[int]]] = []

    def sleep(seconds: float) -> None:
        sizes.append((seconds, [p.stat().st_size for p in tmp_path.glob(".run.ckpt.*.tmp")]))

    monkeypatch.setattr(minidl.checkpoint.time, "sleep", sleep)
    monkeypatch.setenv("MINIDL_CHECKPOINT_TEST_DELAY", "0.5")
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, nn.Linear(2, 2))
    size = path.stat().st_size
    assert sizes == [(0.5, [size // 2]), (0.5, [size])]
    assert list(tmp_path.iterdir()) == [path]


class _Marked(LRScheduler):
    """A constant schedule of one's own whose state holds a tuple of marks (``marks``)."""

    def __init__(self, optimizer: optim.Optimizer, marks: tuple[int, ...]) -> None:
        self.marks = marks
        super().__init__(optimizer)

    def lr_at(self, step: int) -> float:
        return self.base_lr

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "marks": self.marks}


def test_an_integer_too_long_for_json_in_a_tuple_of_a_schedules_state_is_refused(
    tmp_path: Path,
) -> None:
    """A schedule of one's own whose state holds a tuple with an integer of 5000 digits, under
    a limit on digits raised to none: save refuses it in its own words, as in a list or dict
    (JSON would write it, and loading then call the file corrupted). (Mutant: only dicts and
    lists looked into, ``dict | list``.)"""
    model = nn.Linear(2, 2)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    scheduler = _Marked(optimizer, (1, 10**5000))
    path = tmp_path / "run.ckpt"
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        with pytest.raises(
            CheckpointError,
            match=r"^save_checkpoint: the state cannot be written as JSON: it holds an integer "
            r"of more than 4300 digits",
        ):
            save_checkpoint(path, model, optimizer, scheduler)
    finally:
        sys.set_int_max_str_digits(before)
    assert not path.exists()


def test_a_dtype_that_safetensors_reads_back_as_another_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A dtype that safetensors writes but reads back as another (``float8_e8m0fnu`` in some
    versions; here float16 made to come back float32): refused naming the tensor and the dtype,
    nothing written. (Mutant: a dtype that is written taken as kept, ``_ROUND_TRIPS[dtype] =
    True``, which the installed safetensors, keeping every dtype it writes, cannot show.)"""
    real_load = safetensors.torch.load

    def load(data: bytes) -> dict[str, torch.Tensor]:
        return {k: v.float() if v.dtype == torch.float16 else v for k, v in real_load(data).items()}

    monkeypatch.setattr(minidl.checkpoint, "_ROUND_TRIPS", {})
    monkeypatch.setattr(safetensors.torch, "load", load)
    model = nn.Linear(2, 2).to(torch.float16)
    path = tmp_path / "run.ckpt"
    with pytest.raises(
        CheckpointError,
        match=r"^save_checkpoint: the tensor 'model\.weight' is float16, a dtype that "
        r"safetensors cannot write and read back",
    ):
        save_checkpoint(path, model)
    assert not path.exists()


def test_a_checkpoint_without_an_optimizer_records_no_steps(tmp_path: Path) -> None:
    """Saved without an optimizer after 3 epochs: the step count recorded is 0 (no optimizer
    counted any), not the epoch. (Mutant: ``else epoch``.)"""
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, nn.Linear(2, 2), epoch=3)
    training = read_checkpoint(path).training
    assert (training.epoch, training.step) == (3, 0)


_TOO_LONG = (
    "save_checkpoint: the state cannot be written as JSON: it holds an integer of more than "
    "4300 digits, which Python's JSON reader refuses (see sys.get_int_max_str_digits), so that "
    "the checkpoint could not be loaded; keep such a number in extra as a string"
)


@pytest.mark.parametrize("lifted", [False, True])
def test_the_least_positive_integer_of_too_many_digits_is_refused(
    tmp_path: Path, lifted: bool
) -> None:
    """10**4300, the positive integer of fewest digits (4301) past what Python's JSON reader
    takes, is refused in save's words, with the digit limit as it is and lifted (where JSON
    would write it, and loading then call the file corrupted); the checkpoint already there is
    left as it was; 10**4300 - 1, of 4300 digits, is saved and read back. (Mutant: the bound
    ``item < _FIRST_TOO_LONG`` made ``<=``.)"""
    model = nn.Sequential(nn.Linear(2, 2))
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model, epoch=1)
    before_bytes = path.read_bytes()
    before = sys.get_int_max_str_digits()
    if lifted:
        sys.set_int_max_str_digits(0)
    try:
        with pytest.raises(CheckpointError) as info:
            save_checkpoint(path, model, epoch=2, extra={"n": 10**4300})
        assert str(info.value) == _TOO_LONG
        assert path.read_bytes() == before_bytes
        assert os.listdir(tmp_path) == ["run.ckpt"]
        save_checkpoint(path, model, epoch=2, extra={"n": 10**4300 - 1})
    finally:
        sys.set_int_max_str_digits(before)
    saved = read_checkpoint(path).training
    assert saved.extra == {"n": 10**4300 - 1} and saved.epoch == 2
