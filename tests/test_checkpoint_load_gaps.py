"""Checkpoint writing, reading and loading behaviour that a second mutation audit of
``minidl.checkpoint`` (atomic writes, ``read_checkpoint``'s framing, header and tensor checks,
``load_checkpoint``'s restore) found no test for: each test here fails on a small change to
the source (named in its docstring) that the rest of the suite let through. The audit's rest
added a scheduler interval of null, a large tail refused from the first bytes, a newer
checkpoint's version named as is only when short and printable, and a long repr compared by
the lines that differ."""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save as safetensors_save

from minidl import checkpoint, nn, optim
from minidl.checkpoint import (
    CheckpointError,
    _canonical,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from tests.helpers import read_refusal_and_peak, rewrite_checkpoint


def _sgd_model() -> tuple[nn.Sequential, optim.SGD]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2))
    return model, optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def test_a_test_delay_of_exactly_3600_seconds_is_taken(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The crash tests' hook accepts the bound of its range, [0, 3600], as its message says:
    3600 seconds are slept (time.sleep recorded, not slept) once mid-write and once before the
    rename, and the checkpoint is saved (with ``< 3600`` it was refused)."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    monkeypatch.setenv("MINIDL_CHECKPOINT_TEST_DELAY", "3600")
    model, optimizer = _sgd_model()
    save_checkpoint(tmp_path / "c", model, optimizer, epoch=1)
    assert slept == [3600.0, 3600.0]
    assert read_checkpoint(tmp_path / "c").training.epoch == 1


@pytest.mark.parametrize("tensors", [{}, {"weight": torch.zeros(2)}], ids=["none", "one"])
def test_a_safetensors_file_of_another_program_is_refused_as_no_minidl_checkpoint(
    tmp_path: Path, tensors: dict[str, torch.Tensor]
) -> None:
    """A safetensors file with metadata but no 'minidl' entry (as torch's own writers make it,
    ``{"format": "pt"}``), with tensors or none (its header then fills the file to its last
    byte), is refused as no minidl checkpoint. (Checking only that the metadata is an object
    raised a bare KeyError 'minidl'; reading one byte of a header that ends the file, or
    taking a header of the file's whole length for a truncated one, called it corrupted or
    truncated.)"""
    path = tmp_path / "weights.safetensors"
    path.write_bytes(safetensors_save(tensors, metadata={"format": "pt"}))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == (
        f"read_checkpoint: checkpoint {str(path)!r}: not a minidl checkpoint (no 'minidl' header)"
    )


def _saved(tmp_path: Path, **kwargs: Any) -> Path:
    """A checkpoint of an SGD run with momentum, at epoch 1 (``kwargs``: save_checkpoint's)."""
    model, optimizer = _sgd_model()
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model, optimizer, epoch=1, **kwargs)
    return path


@pytest.mark.parametrize("first", [0x80, 0xB0], ids=["0x80", "0xb0"])
def test_a_file_of_its_8_byte_length_field_alone_is_called_truncated(
    tmp_path: Path, first: int
) -> None:
    """A file of exactly the 8 bytes that give a safetensors header's length (a checkpoint cut
    off there) is called truncated, naming the header's length and the file's: also where the
    length's first byte is 0x80, a pickle's first byte. (With ``length <= 8`` it was said to
    hold fewer than 8 bytes; without ``size > 8`` it was called a pickle.)"""
    path = tmp_path / "cut.ckpt"
    path.write_bytes(bytes([first, 6]) + bytes(6))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == (
        f"read_checkpoint: checkpoint {str(path)!r}: not a safetensors file, or truncated "
        f"(header of {first + 6 * 256} bytes in a file of 8 bytes)"
    )


@pytest.mark.parametrize(
    ("wrapper", "missing"),
    [({"comment": "mine"}, ()), ({}, ("sha256",))],
    ids=["an extra entry", "no digest"],
)
def test_a_header_wrapper_of_other_entries_is_refused(
    tmp_path: Path, wrapper: dict[str, str], missing: tuple[str, ...]
) -> None:
    """The 'minidl' metadata holds exactly ``{"header", "sha256"}``: one with another entry
    beside them (canonical, its digest valid) or without the digest is refused as of an
    unexpected structure. (Without the check, the first was read as a good checkpoint and the
    second raised a bare KeyError.)"""
    path = _saved(tmp_path)

    def dump(saved: dict[str, object]) -> str:
        changed = {**saved, **wrapper}
        for name in missing:
            del changed[name]
        return _canonical(changed)

    rewrite_checkpoint(path, dump=dump)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == (
        f"read_checkpoint: checkpoint {str(path)!r}: the header is corrupted (unexpected structure)"
    )


def _set_item(container: list[object], index: int, value: object) -> None:
    container[index] = value


MALFORMED: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "an epoch of True",
        lambda h: h["training"].update(epoch=True),
        "training.epoch must be an integer >= 0, got True",
    ),
    (
        "a tensor's shape with a negative size",
        lambda h: h["tensors"]["model.0.bias"].update(shape=[-2]),
        "tensors.model.0.bias.shape must be a list of integers >= 0, got [-2]",
    ),
    (
        "a parameter's shape with a negative size",
        lambda h: _set_item(h["architecture"]["parameters"][1], 1, [-2]),
        "architecture.parameters[1]'s shape must be a list of integers >= 0, got [-2]",
    ),
    (
        "a parameter's shape with a boolean",
        lambda h: _set_item(h["architecture"]["parameters"][1], 1, [True, True]),
        "architecture.parameters[1]'s shape must be a list of integers >= 0, got [True, True]",
    ),
    (
        "a tensor's shape with a boolean",
        lambda h: h["tensors"]["model.0.bias"].update(shape=[True, 2]),
        "tensors.model.0.bias.shape must be a list of integers >= 0, got [True, 2]",
    ),
    (
        "the optimizer's parameters by number",
        lambda h: h["optimizer"].update(parameters=[0, 1]),
        "optimizer.parameters must be a list of names, got [0, 1]",
    ),
    (
        "the module generators by number",
        lambda h: h.update(module_generators=[1]),
        "module_generators must be a list of paths, got [1]",
    ),
]


@pytest.mark.parametrize(
    ("change", "words"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_a_header_field_of_the_wrong_kind_is_refused_naming_it(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], words: str
) -> None:
    """A header field of the wrong kind (digests valid) is refused as malformed, naming the
    field and the value: a boolean is no integer, a size is >= 0, names are strings. (Without
    each check, the value was taken, or refused later in other words.)"""
    path = _saved(tmp_path)
    rewrite_checkpoint(path, header=change)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == (
        f"read_checkpoint: checkpoint {str(path)!r}: the header is malformed ({words})"
    )


def test_a_replaced_checkpoint_keeps_permissions_the_umask_takes_away(tmp_path: Path) -> None:
    """A save over a checkpoint made writable by its group and others (0o666) keeps those bits
    under a umask that takes them from new files (0o022): the temporary file is created less
    the umask's bits and then given the old file's permissions. (Without that ``fchmod`` it
    became 0o644.)"""
    path = _saved(tmp_path)
    os.chmod(path, 0o666)
    model, optimizer = _sgd_model()
    previous = os.umask(0o022)
    try:
        save_checkpoint(path, model, optimizer, epoch=2)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666
    assert read_checkpoint(path).training.epoch == 2


class _MetaBuffer(nn.Module):
    """A linear layer with a buffer on ``device``."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.linear = self.register_module("linear", nn.Linear(2, 2))
        self.register_buffer("scale", torch.full((2,), 3.0, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return self.linear.backward(grad_output)


def test_a_model_with_a_buffer_on_the_meta_device_is_refused_on_load(tmp_path: Path) -> None:
    """A model whose parameters hold values but whose buffer is on the meta device is refused
    by name before the file is read (copy_ into a meta buffer does nothing, and the load
    returned as if it had restored it); its parameters are left as they were. (Checking the
    parameters alone let it through.)"""
    torch.manual_seed(0)
    source = _MetaBuffer("cpu")
    path = tmp_path / "c"
    save_checkpoint(path, source)
    torch.manual_seed(1)
    target = _MetaBuffer("meta")
    values = [p.data.clone() for p in target.parameters()]
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, target)
    assert str(info.value) == (
        "load_checkpoint: the model's tensors (scale) are on the meta device, which holds "
        "shapes and no values: loading would put nothing in them; build the model on the CPU "
        "or a GPU"
    )
    assert all(torch.equal(p.data, v) for p, v in zip(target.parameters(), values, strict=True))


# -- the audit's rest: a null interval, a large tail, a newer version's name, a long repr ----------


def _scheduled(tmp_path: Path) -> Path:
    """A checkpoint of a Linear model, SGD with momentum (one step taken) and a StepDecay."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = optim.StepDecay(optimizer, step_size=2)
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model, optimizer, scheduler)
    return path


def test_a_scheduler_interval_of_null_is_refused_as_malformed(tmp_path: Path) -> None:
    """A header whose ``scheduler.interval`` is JSON null (not left out, as checkpoints written
    before it was saved leave it) is no interval: read_checkpoint refuses it naming the field
    and the value. Killed: None taken as an interval (T18)."""
    path = _scheduled(tmp_path)

    def null_interval(header: dict[str, Any]) -> None:
        header["scheduler"]["interval"] = None

    rewrite_checkpoint(path, header=null_interval)
    expected = (
        f"read_checkpoint: checkpoint {str(path)!r}: the header is malformed "
        "(scheduler.interval must be 'epoch' or 'batch', got None)"
    )
    with pytest.raises(CheckpointError, match=f"^{re.escape(expected)}$"):
        read_checkpoint(path)


def test_a_checkpoint_followed_by_a_large_tail_is_refused_from_its_first_bytes(
    tmp_path: Path,
) -> None:
    """A minidl checkpoint followed by 64 MiB of other bytes (a sparse tail here: a file
    appended to by mistake) is refused from its header, which describes the file's size,
    before the rest is read: the message names both sizes, and the refusal takes well under
    1 MiB of memory (read whole first, it took the whole file's). Killed: the framing's size
    check dropped, leaving the one after the whole file is read (F4)."""
    path = _scheduled(tmp_path)
    size = path.stat().st_size
    os.truncate(path, size + 2**26)
    message, peak = read_refusal_and_peak(path)
    assert message == (
        f"read_checkpoint: checkpoint {str(path)!r}: the file is followed by extra bytes "
        f"({size + 2**26} bytes, its header describes {size})"
    )
    assert peak < 2**20, peak


@pytest.mark.parametrize(
    ("writer", "shown"),
    [
        ("1." + "2" * 38, "1." + "2" * 38),
        ("1." + "2" * 39, repr("1." + "2" * 39)),
        ("0.9.1\n", repr("0.9.1\n")),
    ],
    ids=["40-characters", "41-characters", "newline"],
)
def test_the_minidl_version_of_a_newer_checkpoint_is_written_as_is_only_when_short_and_printable(
    tmp_path: Path, writer: str, shown: str
) -> None:
    """A checkpoint of a newer format version is refused naming the minidl version that wrote
    it: as written where it is printable and at most 40 characters long (its bound taken),
    else quoted as ``repr`` quotes it (a newline escaped: the message stays one line). Killed:
    the bound exclusive (V4), the printable check dropped (V5)."""
    path = _scheduled(tmp_path)

    def newer(header: dict[str, Any]) -> None:
        header["format_version"] = 2
        header["minidl_version"] = writer

    rewrite_checkpoint(path, header=newer)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(
        f"read_checkpoint: checkpoint {str(path)!r}: format version 2 (written by minidl "
        f"{shown}) is newer than this minidl ("
    ), message
    assert message.endswith(") reads (format version 1); upgrade minidl"), message
    assert "\n" not in message


def test_a_model_whose_repr_has_13_lines_is_compared_by_the_lines_that_differ(
    tmp_path: Path,
) -> None:
    """The reprs of a checkpoint's model and of a model with the same parameters and another
    module are shown whole up to 12 lines, and past that (13 lines here: a Sequential of 11
    modules) by the lines that differ. Killed: the bound taken as whole (Z1)."""
    torch.manual_seed(0)
    path = tmp_path / "c.ckpt"
    saved = nn.Sequential(nn.Linear(2, 2), *[nn.Tanh() for _ in range(10)])
    assert repr(saved).count("\n") == 12
    save_checkpoint(path, saved)
    model = nn.Sequential(nn.Linear(2, 2), *[nn.Tanh() for _ in range(9)], nn.ReLU())
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, model)
    message = str(info.value)
    assert message.startswith(
        f"load_checkpoint: checkpoint {str(path)!r}: the checkpoint is for another model: the "
        "parameters fit, the modules differ.\nthe lines of their reprs that differ:\n"
    ), message
    assert "checkpoint's model: Sequential(" not in message


# -- a review against PyTorch (2026-12-07) --------------------------------------------------------


def _pytorch_components() -> list[tuple[str, Any, str]]:
    twin = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    return [
        (
            "optimizer",
            twin,
            "optimizer must be a minidl Optimizer, got torch.optim.sgd.SGD, PyTorch's: give "
            "minidl's, minidl.optim.SGD",
        ),
        (
            "optimizer",
            optim.SGD,
            "optimizer must be a minidl Optimizer, got the class SGD; pass an instance, built "
            "with its arguments",
        ),
        (
            "scheduler",
            torch.optim.lr_scheduler.CyclicLR(twin, 0.01, 0.1, cycle_momentum=False),
            "scheduler must be a minidl LRScheduler, got "
            "torch.optim.lr_scheduler.CyclicLR, PyTorch's: give minidl's, minidl.optim.CyclicLR",
        ),
    ]


@pytest.mark.parametrize(("name", "value", "message"), _pytorch_components())
def test_a_pytorch_optimizer_or_scheduler_or_a_class_is_named_as_such(
    tmp_path: Path, name: str, value: Any, message: str
) -> None:
    """PyTorch's SGD given to save_checkpoint or load_checkpoint was "got SGD" (minidl has a
    class of that name), and a class "got type"; now named as fit names them. Nothing is written
    or changed."""
    model, optimizer = _sgd_model()
    path = tmp_path / "c"
    components: dict[str, Any] = {"optimizer": optimizer, name: value}
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, model, components["optimizer"], components.get("scheduler"))
    assert str(info.value) == f"save_checkpoint: {message}"
    assert not path.exists()
    save_checkpoint(path, model, optimizer, epoch=1)
    values = [p.data.clone() for p in model.parameters()]
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, model, components["optimizer"], components.get("scheduler"))
    assert str(info.value) == f"load_checkpoint: {message}"
    assert all(torch.equal(p.data, v) for p, v in zip(model.parameters(), values, strict=True))


def test_a_count_of_another_integer_dtype_is_not_told_to_be_cast(tmp_path: Path) -> None:
    """A checkpoint whose BatchNorm1d count is int32, loaded into the model with the default
    int64 count, said to cast the model (.to(dtype)), which takes floating-point dtypes alone:
    the count is now told to be registered again, and a float cast is still told to cast."""
    torch.manual_seed(0)
    saved = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    saved[1].register_buffer("num_batches_tracked", torch.tensor(4, dtype=torch.int32))
    path = tmp_path / "c"
    save_checkpoint(path, saved, optim.SGD(saved.parameters(), lr=0.1), epoch=1)
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, model)
    assert str(info.value) == (
        f"load_checkpoint: checkpoint {str(path)!r}: the checkpoint's buffers are int32 and "
        "this model's int64 (the same "
        "names and shapes): register 1.num_batches_tracked again in the checkpoint's dtype "
        "(register_buffer; .to casts floating-point tensors alone), or load the parameters "
        "alone, converted: model.load_state_dict(read_checkpoint(path).model_state)"
    )
    model[1].register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.int32))
    load_checkpoint(path, model)
    assert int(model[1].num_batches_tracked) == 4
    model = model.to(torch.float64)
    with pytest.raises(CheckpointError, match=r"\): cast the model to the checkpoint's dtype "):
        load_checkpoint(path, model)


# -- a fourth pass of mutation testing over checkpoint.py (2026-12-07) ----------------------------


def _malformed(path: Path, words: str) -> None:
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == (
        f"read_checkpoint: checkpoint {str(path)!r}: the header is malformed ({words})"
    )


def test_a_file_cut_off_inside_the_last_8_bytes_of_its_header_is_called_truncated(
    tmp_path: Path,
) -> None:
    """A file cut off 3 bytes before its safetensors header ends (a header longer than the
    file less its 8-byte length field, yet shorter than the whole file) is refused as truncated,
    naming the header's and the file's sizes. (Mutant m13, ``size > min(length, ...)``, took
    the header for one the file holds and called it corrupted JSON instead.)"""
    path = _saved(tmp_path)
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    path.write_bytes(data[: 8 + size - 3])
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == (
        f"read_checkpoint: checkpoint {str(path)!r}: not a safetensors file, or truncated "
        f"(header of {size} bytes in a file of {size + 5} bytes)"
    )


def test_a_file_that_grows_after_its_head_was_checked_is_refused_by_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The size the header describes is checked again against the bytes read in full (the file
    may be written to between its first bytes' check and the reading of the rest): a file
    grown by 16 bytes meanwhile is refused as followed by extra bytes. (Mutant m17, the second
    check removed, left it to safetensors and the layout check, in other words.)"""
    path = _saved(tmp_path)
    size = path.stat().st_size
    original = checkpoint._read_regular_file

    def grown(*args: Any, **kwargs: Any) -> bytes:
        return original(*args, **kwargs) + bytes(16)

    monkeypatch.setattr(checkpoint, "_read_regular_file", grown)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == (
        f"read_checkpoint: checkpoint {str(path)!r}: the file is followed by extra bytes "
        f"({size + 16} bytes, its header describes {size})"
    )


def test_a_safetensors_header_padded_further_is_refused_as_not_canonical(tmp_path: Path) -> None:
    """A file whose safetensors header carries 8 more bytes of padding (still aligned, every
    tensor and digest intact, so that it parses and loads as before) is not byte for byte what
    minidl writes for its content: refused. (Mutant m18, the comparison with the rewritten
    bytes removed, read it.)"""
    path = _saved(tmp_path)
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    padded = (size + 8).to_bytes(8, "little") + data[8 : 8 + size] + b" " * 8 + data[8 + size :]
    path.write_bytes(padded)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == (
        f"read_checkpoint: checkpoint {str(path)!r}: the file is corrupted (its layout is not "
        "canonical)"
    )


def test_a_header_written_with_spaces_is_refused_as_not_canonical_json(tmp_path: Path) -> None:
    """The 'minidl' header written by another JSON writer (json.dumps's default separators, a
    digest that matches its content) is refused: minidl writes canonical JSON alone. (Mutant
    m19, the comparison with the canonical text removed, read it.)"""
    import json

    path = _saved(tmp_path)
    rewrite_checkpoint(path, dump=json.dumps)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == (
        f"read_checkpoint: checkpoint {str(path)!r}: the header is corrupted (not canonical JSON)"
    )


def _update_history(header: dict[str, Any], **values: list[Any]) -> None:
    header["training"]["history"].update(values)


MALFORMED: list[tuple[str, Any, str, str]] = [
    (
        "m29",
        lambda h: h["scheduler"].update(interval="step"),
        "scheduler.interval must be 'epoch' or 'batch', got 'step'",
        "scheduled",
    ),
    (
        "m30",
        lambda h: _update_history(h, train_loss=[True]),
        "training.history.train_loss must be a list of numbers",
        "plain",
    ),
    (
        "m31",
        lambda h: _update_history(h, train_loss=[1.0], validation_error=[0.5], lr=[]),
        "training.history must hold as many epochs in train_loss, validation_error and lr, "
        "got 1, 1 and 0",
        "plain",
    ),
    (
        "m33",
        lambda h: h["training"].update(extra=[1, 2]),
        "training.extra must be an object, got list",
        "plain",
    ),
    (
        "m34",
        lambda h: h["tensors"]["model.0.bias"].update(finite="yes"),
        "tensors.model.0.bias.finite must be a boolean, got str",
        "plain",
    ),
    (
        "m26",
        lambda h: h["optimizer"].update(shapes=5),
        "optimizer.shapes must be a list of shapes, got 5",
        "plain",
    ),
]


@pytest.mark.parametrize(
    ("change", "words", "kind"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_a_header_field_out_of_its_kind_is_refused_as_malformed(
    tmp_path: Path, change: Any, words: str, kind: str
) -> None:
    """Header fields (digests valid) that save_checkpoint never writes are refused as malformed,
    naming the field: an interval other than 'epoch' and 'batch' (m29 took 'step'), a bool in a
    history (m30), an lr curve of another length (m31 compared train_loss and
    validation_error alone), an extra that is no object (m33), a finiteness flag that is no
    bool (m34), shapes that are no list (m26)."""
    if kind == "scheduled":
        model, optimizer = _sgd_model()
        path = tmp_path / "run.ckpt"
        save_checkpoint(path, model, optimizer, optim.StepDecay(optimizer, step_size=2), epoch=1)
    else:
        path = _saved(tmp_path)
    rewrite_checkpoint(path, header=change)
    _malformed(path, words)


class _Held(nn.Module):
    """An identity layer holding ``held`` in its attribute ``name`` (a generator, or a list or
    dict of them), and, with ``size``, a parameter ``w`` of that size (its repr shows neither)."""

    def __init__(self, name: str, held: object, size: int = 0) -> None:
        super().__init__()
        setattr(self, name, held)
        if size:
            self.w = self.register_parameter("w", nn.Parameter(torch.zeros(size)))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output


def test_a_list_of_generators_in_an_attribute_named_generator_is_saved_by_place(
    tmp_path: Path,
) -> None:
    """A ``generator`` attribute holding a list of generators (no generator itself) is looked
    into as any other attribute: each is saved by its place. (Mutant m70 passed over every
    attribute named ``generator``, so that these were not saved.)"""
    rngs = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), _Held("generator", rngs))
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model, optim.SGD(model.parameters(), lr=0.1))
    tensors = read_checkpoint(path).tensors
    saved = sorted(name for name in tensors if name.startswith("rng.module."))
    assert saved == ["rng.module.1.generator[0]", "rng.module.1.generator[1]"]
    assert torch.equal(tensors["rng.module.1.generator[1]"], rngs[1].get_state())


def test_the_generator_of_the_model_itself_is_saved_and_resumed(tmp_path: Path) -> None:
    """The model itself (the root module, of path ``""``) holding a ``generator`` has its state
    saved and restored on resuming, as a child's. (Mutant m59 left the root's out.)"""
    generator = torch.Generator().manual_seed(5)
    model = _Held("generator", generator, size=2)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model, optimizer)
    saved = generator.get_state()
    torch.rand(3, generator=generator)
    load_checkpoint(path, model, optimizer)
    assert torch.equal(generator.get_state(), saved)


def test_a_generator_under_a_bool_key_is_refused_on_save(tmp_path: Path) -> None:
    """A generator held in a dict under the key ``True`` (a bool, which JSON and the entry name
    would not tell from 1) is refused, naming the key's type, and nothing is written. (Mutant
    m61 took a bool as an int key and saved it as ``rngs[True]``.)"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), _Held("rngs", {True: torch.Generator()}))
    path = tmp_path / "run.ckpt"
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, model, optim.SGD(model.parameters(), lr=0.1))
    assert str(info.value) == (
        "save_checkpoint: the generator held at 1.rngs[True] cannot be named in a checkpoint: "
        "one held in a dict is named by its key, which must be a str or an int, got bool; hold "
        "it under such a key"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_module_generator_the_checkpoint_does_not_know_keeps_its_state(tmp_path: Path) -> None:
    """A checkpoint of a version before module generators were saved (no ``module_generators``
    and no ``rng.module.`` tensor) resumes a model whose Dropout has a generator of its own:
    that generator keeps its state, the rest is restored. (Mutant m49 looked for every
    module generator's state in the checkpoint and refused the load.)"""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(4)
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5, generator=generator))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model, optimizer)

    def older(header: dict[str, Any]) -> None:
        del header["module_generators"], header["tensors"]["rng.module.1"]

    rewrite_checkpoint(path, tensors=lambda t: t.pop("rng.module.1"), header=older)
    torch.rand(3, generator=generator)
    own = generator.get_state()
    load_checkpoint(path, model, optimizer)
    assert torch.equal(generator.get_state(), own)


def test_the_model_alone_loads_from_a_checkpoint_with_a_data_generator(tmp_path: Path) -> None:
    """Loading the model alone (no optimizer, e.g. to evaluate it) needs no data generator,
    even where one was saved: only resuming does. (Mutant m46 asked for it without an
    optimizer too.)"""
    model, optimizer = _sgd_model()
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model, optimizer, generator=torch.Generator().manual_seed(1))
    saved = {name: value.clone() for name, value in model.state_dict().items()}
    torch.manual_seed(3)
    other = nn.Sequential(nn.Linear(2, 2))
    state = load_checkpoint(path, other)
    assert state.epoch == 0
    assert all(torch.equal(other.state_dict()[name], saved[name]) for name in saved)


def test_the_extra_of_a_read_checkpoint_is_a_plain_changeable_copy(tmp_path: Path) -> None:
    """``Checkpoint.training.extra`` is a new, plain copy, nested values too: changing them
    leaves the checkpoint as read. (Mutant m69, a shallow copy, gave the read-only nested
    values of the header, which refused the change.)"""
    path = _saved(tmp_path, extra={"settings": {"lr": 0.1}, "tags": ["a"]})
    read = read_checkpoint(path)
    extra = read.training.extra
    extra["settings"]["lr"] = 0.5
    extra["tags"].append("b")
    assert read.training.extra == {"settings": {"lr": 0.1}, "tags": ["a"]}


def test_a_model_of_other_shapes_and_the_same_repr_is_named_by_its_shapes(
    tmp_path: Path,
) -> None:
    """A model whose repr does not show its sizes (a layer of one's own), with a parameter of
    another shape than the saved one's, is refused as another architecture naming the shapes,
    not as a cast of the same model. (Mutant m40, without the shapes' comparison, called it
    a model of other dtypes.)"""
    model = _Held("unused", None, size=2)
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model)
    other = _Held("unused", None, size=3)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, other)
    assert str(info.value).startswith(
        f"load_checkpoint: checkpoint {str(path)!r}: the checkpoint is for another "
        "architecture: 'w' has shape (2,) (float32) in the checkpoint, (3,) (float32) in the "
        "model.\n"
    )


def test_a_finite_complex_tensor_said_not_finite_is_refused(tmp_path: Path) -> None:
    """The finiteness flag of a complex tensor is checked as any other's, but for the one case
    older files hold (a complex tensor with a NaN said finite): a finite complex buffer said
    not finite is refused. (Mutant m35 passed over every complex tensor's flag.)"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2))
    model[0].register_buffer("phase", torch.ones(2, dtype=torch.complex64))
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model)
    rewrite_checkpoint(path, header=lambda h: h["tensors"]["model.0.phase"].update(finite=False))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == (
        f"read_checkpoint: checkpoint {str(path)!r}: tensor 'model.0.phase' is finite, the "
        "header says not finite"
    )


def test_optimizer_state_of_another_dtype_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    """An optimizer state tensor of another dtype than the parameters' (a tampered file, header
    and digests consistent) is refused before anything is written, naming both dtypes: the
    model and optimizer are left as they were. (Mutant m57, the dtype check removed, let the
    optimizer convert it, or refuse it in its own words.)"""
    path = _saved(tmp_path)

    def to_double(tensors: dict[str, torch.Tensor]) -> None:
        tensors["optimizer.momentum_buffer"] = tensors["optimizer.momentum_buffer"].double() + 1

    rewrite_checkpoint(
        path,
        tensors=to_double,
        header=lambda h: h["tensors"]["optimizer.momentum_buffer"].update(dtype="float64"),
    )
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    before = ({k: v.clone() for k, v in model.state_dict().items()}, optimizer.state_dict())
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, model, optimizer)
    assert str(info.value) == (
        f"load_checkpoint: checkpoint {str(path)!r}: the checkpoint's SGD state "
        "'momentum_buffer' is float64, this one's parameters are float32"
    )
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before[0].items())
    after = optimizer.state_dict()
    assert (after["lr"], after["step_count"]) == (before[1]["lr"], before[1]["step_count"])
    assert all(torch.equal(after["state"][k], v) for k, v in before[1]["state"].items())


def test_a_refused_scheduler_state_is_named_so_whatever_the_optimizers_rate(
    tmp_path: Path,
) -> None:
    """A tampered scheduler state (last_step -5, digests valid) is refused as a state, in the
    scheduler's words, whatever the learning rate the scheduler was built at (its base_lr is
    part of the state, not a setting); the scheduler and optimizer are left as they were. (Built
    at another rate, it was told "the settings differ": the repr compared after a failed load
    was the one from before it, with the scheduler's own base_lr.)"""
    model, optimizer = _sgd_model()
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model, optimizer, optim.StepDecay(optimizer, step_size=2))
    rewrite_checkpoint(path, header=lambda h: h["scheduler"]["state"].update(last_step=-5))
    for lr in (0.1, 0.2):
        other = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        scheduler = optim.StepDecay(other, step_size=2)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path, model, other, scheduler)
        assert str(info.value) == (
            f"load_checkpoint: checkpoint {str(path)!r}: the saved state was refused: "
            "StepDecay.load_state_dict: last_step must be an integer >= 0, got -5"
        ), f"lr={lr}"
        assert (other.lr, scheduler.state_dict()) == (lr, {"base_lr": lr, "last_step": 0})
