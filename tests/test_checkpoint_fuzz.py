"""The checkpoint reader against damaged, foreign and hostile files.

Every file here is refused by :func:`read_checkpoint` and :func:`load_checkpoint` with a
``CheckpointError`` that names the file, never with one of Python's own errors (a
``RecursionError`` from JSON nested a thousand deep, a ``ValueError`` from an integer of 5000
digits, an ``OverflowError`` from an offset of ``Infinity``), and a refused load leaves the
model, optimizer, scheduler and generators bit for bit as they were.

A hostile file is made as an attacker who knows the format makes it: the safetensors header
written by hand (:func:`_framed`), or minidl's JSON header given as text with its SHA-256 digest
computed over it (:func:`_with_header`), so that the digest is no obstacle and the checks of
what the header says are reached.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from minidl import nn, optim
from minidl.checkpoint import (
    CheckpointError,
    _canonical,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from minidl.train import History

Parts = tuple[nn.Sequential, optim.SGD, optim.StepDecay, torch.Generator]


def _parts() -> Parts:
    """A small network, its optimizer (with a momentum buffer) and scheduler, and a data
    generator, each from a seed of its own."""
    model = nn.mlp((2, 3, 2), "tanh", generator=torch.Generator().manual_seed(0))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    scheduler = optim.StepDecay(optimizer, step_size=3)
    return model, optimizer, scheduler, torch.Generator().manual_seed(1)


@functools.cache
def _good(folder: str) -> bytes:
    """The bytes of a checkpoint of :func:`_parts` after one step, at epoch 1 (written in
    ``folder``, a fresh one for each test session)."""
    model, optimizer, scheduler, generator = _parts()
    criterion = nn.CrossEntropyLoss()
    criterion(model(torch.randn(4, 2, generator=generator)), torch.tensor([0, 1, 1, 0]))
    model.backward(criterion.backward())
    optimizer.step()
    scheduler.step()
    path = Path(folder) / "good.ckpt"
    history = {"train_loss": [0.5], "validation_error": [25.0], "lr": [0.1]}
    save_checkpoint(
        path,
        model,
        optimizer,
        scheduler,
        epoch=1,
        history=History(**history),
        generator=generator,
        extra={"settings": {"hidden": [3], "activation": "tanh"}},
    )
    return path.read_bytes()


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _good(str(tmp_path_factory.mktemp("good")))


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The safetensors header of a checkpoint's bytes, parsed, and the tensors' bytes."""
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def _framed(data: bytes, framing: str | bytes, size: int | None = None) -> bytes:
    """``data``'s tensors' bytes under the safetensors header ``framing`` (JSON text, written
    as it is given), its length field ``size`` (default: its true length)."""
    text = framing.encode("utf-8", "surrogatepass") if isinstance(framing, str) else framing
    return struct.pack("<Q", len(text) if size is None else size) + text + _split(data)[1]


def _header(data: bytes) -> dict[str, Any]:
    """minidl's JSON header of a checkpoint's bytes (without its digest)."""
    wrapper = json.loads(_split(data)[0]["__metadata__"]["minidl"])
    header: dict[str, Any] = wrapper["header"]
    return header


def _with_header(data: bytes, text: str, tensors: dict[str, torch.Tensor] | None = None) -> bytes:
    """A checkpoint of ``data``'s tensors (or ``tensors``) whose minidl header is the JSON text
    ``text``, its digest the SHA-256 of ``text``: a file that passes the digest check whatever
    ``text`` says (and the check of the JSON's canonical form where ``text`` is canonical)."""
    content = safetensors_load(data) if tensors is None else tensors
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    metadata = '{"header":' + text + ',"sha256":"' + digest + '"}'
    return safetensors_save(content, metadata={"minidl": metadata})


_PLACE = "@@the value@@"


def _with_value(data: bytes, path: tuple[str | int, ...], json_text: str | None) -> bytes:
    """A checkpoint of ``data`` whose header holds the JSON text ``json_text`` at ``path`` (a key
    or index at each level), the field removed where ``json_text`` is ``None``; the tensors'
    digests are those of ``data``, the header's that of the new text."""
    header = _header(data)
    container: Any = header
    for key in path[:-1]:
        container = container[key]
    if json_text is None:
        del container[path[-1]]
        return _with_header(data, _canonical(header))
    container[path[-1]] = _PLACE
    return _with_header(data, _canonical(header).replace(json.dumps(_PLACE), json_text))


def _state(parts: Parts) -> list[Any]:
    """Everything a load may change, to compare bit for bit."""
    model, optimizer, scheduler, generator = parts
    state = optimizer.state_dict()
    return [
        model.state_dict(),
        state.pop("state"),
        state,
        scheduler.state_dict(),
        repr(scheduler),
        generator.get_state(),
        torch.get_rng_state(),
    ]


def _assert_same(before: list[Any], after: list[Any]) -> None:
    for a, b in zip(before, after, strict=True):
        if isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and torch.equal(a, b)
        elif isinstance(a, dict) and all(isinstance(v, torch.Tensor) for v in a.values()):
            assert a.keys() == b.keys()
            assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
        else:
            assert a == b


def _refused(path: Path, *fragments: str, load: bool = True) -> None:
    """``path`` is refused by read_checkpoint with a CheckpointError naming it and holding
    ``fragments``, and (with ``load``) by load_checkpoint resuming a run, with one naming it
    (read_checkpoint's, or load_checkpoint's own), the refused load changing nothing."""
    named = f"checkpoint {str(path)!r}: "
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(named), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the message {message!r}"
    if not load:
        return
    parts = _parts()
    torch.manual_seed(7)
    before = _state(parts)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, *parts[:3], generator=parts[3])
    assert named in str(info.value), str(info.value)
    _assert_same(before, _state(parts))


def test_the_files_made_here_load_as_they_are(good: bytes, tmp_path: Path) -> None:
    """The makers of hostile files are no refusal of their own: the good file's header and
    tensors, written back by them unchanged, load."""
    header = _header(good)
    path = tmp_path / "same.ckpt"
    for data in (
        _framed(good, json.dumps(_split(good)[0], separators=(",", ":"))),
        _with_header(good, _canonical(header)),
        _with_value(good, ("training", "epoch"), "1"),
    ):
        assert data == good
        path.write_bytes(data)
        parts = _parts()
        state = load_checkpoint(path, *parts[:3], generator=parts[3])
        assert state.epoch == 1 and state.history.lr == [0.1]


# -- JSON that Python's parser refuses with errors of its own ------------------------------------

_DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(
    ("where", "json_text", "words"),
    [
        ("safetensors", _DEEP, "nested too deeply"),
        ("safetensors", '{"a":' + _DEEP + "}", "nested too deeply"),
        ("safetensors", '{"a":' + "7" * 5000 + "}", "4300 digits"),
        ("minidl", _DEEP, "nested too deeply"),
        ("minidl", "7" * 5000, "4300 digits"),
    ],
    ids=["safetensors-array", "safetensors-object", "safetensors-int", "minidl", "minidl-int"],
)
def test_json_nested_too_deeply_or_an_int_too_long_to_read_is_refused(
    good: bytes, tmp_path: Path, where: str, json_text: str, words: str
) -> None:
    """JSON nested 5000 deep (Python's parser raised a RecursionError) or holding an integer of
    5000 digits (a ValueError of its own, which names no file), in the safetensors header or
    in minidl's (its ``training.epoch``)."""
    path = tmp_path / "bad.ckpt"
    if where == "safetensors":
        path.write_bytes(_framed(good, json_text))
        _refused(path, "the safetensors header is corrupted", words)
    else:
        path.write_bytes(_with_value(good, ("training", "epoch"), json_text))
        _refused(path, "the header is corrupted", words)


@pytest.mark.parametrize("end", ["Infinity", "-Infinity", "1e400"])
def test_a_data_offset_of_infinity_is_refused(good: bytes, tmp_path: Path, end: str) -> None:
    """A tensor's data offsets ending at ``Infinity`` (which Python's JSON reads, and int()
    refused with an OverflowError): refused as no safetensors file."""
    framing = _split(good)[0]
    name = next(key for key in framing if key != "__metadata__")
    framing[name]["data_offsets"][1] = _PLACE
    bad = json.dumps(framing, separators=(",", ":")).replace(json.dumps(_PLACE), end)
    path = tmp_path / "bad.ckpt"
    path.write_bytes(_framed(good, bad))
    _refused(path, "not a valid safetensors file")


# -- JSON nested deeply, but not too deeply for Python's parser ----------------------------------


def _nested(levels: int) -> Any:
    """A list nested ``levels`` deep, itself the first level."""
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "path",
    [
        ("format",),
        ("format_version",),
        ("tensors", "rng.torch", "shape"),
        ("optimizer", "state"),
        ("training", "extra", "settings"),
    ],
    ids=".".join,
)
def test_a_header_nesting_json_900_deep_is_refused(
    good: bytes, tmp_path: Path, path: tuple[str, ...]
) -> None:
    """A header field holding a list nested 900 deep, which Python's parser reads: the
    messages' repr of it (format, shape and state checks) and the copy of ``extra`` raised a
    RecursionError of their own."""
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(_with_value(good, path, json.dumps(_nested(900))))
    _refused(bad, "the header is malformed (its JSON nests arrays or objects more than 103 levels")


def test_an_extra_nested_as_deep_as_it_may_be_round_trips_and_one_deeper_is_refused(
    tmp_path: Path,
) -> None:
    """save_checkpoint keeps an ``extra`` nested 100 levels deep (itself the first) and gives it
    back; it refuses one of 101 (and of 500, which it wrote, and whose reading raised a
    RecursionError), writing nothing; a Checkpoint built by hand with such an ``extra`` is
    refused as read_checkpoint refuses its file."""
    model, optimizer, scheduler, generator = _parts()
    path = tmp_path / "run.ckpt"
    deepest = {"a": _nested(99)}
    save_checkpoint(path, model, optimizer, scheduler, generator=generator, extra=deepest)
    assert load_checkpoint(path, model, optimizer, scheduler, generator=generator).extra == deepest
    for levels in (100, 499):
        with pytest.raises(CheckpointError) as info:
            save_checkpoint(
                tmp_path / "deep.ckpt", model, extra={"a": _nested(levels)}, generator=generator
            )
        assert str(info.value) == (
            "save_checkpoint: extra holds arrays or objects nested more than 100 levels deep "
            "(extra itself the first), which a checkpoint does not keep (reading it back would "
            "exceed Python's recursion limit)"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]
    checkpoint = read_checkpoint(path)
    header = json.loads(json.dumps(checkpoint.header))
    header["training"]["extra"] = {"a": _nested(100)}
    with pytest.raises(CheckpointError) as info:
        type(checkpoint)(header=header, tensors=checkpoint.tensors)
    assert str(info.value) == (
        "Checkpoint: the header is malformed (its header nests arrays or objects more than 102 "
        "levels deep: a checkpoint's extra nests 100 at most)"
    )


def test_an_extra_that_holds_itself_is_refused(tmp_path: Path) -> None:
    """An ``extra`` holding itself is nested more deeply than any limit (json.dumps would call
    it a circular reference, once _check_extra_keys had recursed into a RecursionError)."""
    model = _parts()[0]
    extra: dict[str, Any] = {}
    extra["self"] = [extra, extra]
    with pytest.raises(CheckpointError, match="nested more than 100 levels deep"):
        save_checkpoint(tmp_path / "run.ckpt", model, extra=extra)


# -- a history that save_checkpoint does not write -----------------------------------------------


@pytest.mark.parametrize(
    ("history", "epoch", "words"),
    [
        (
            {"train_loss": [], "validation_error": [25.0], "lr": [0.1]},
            1,
            "training.history must hold as many epochs in train_loss, validation_error and lr, "
            "got 0, 1 and 1",
        ),
        (
            {"train_loss": [0.5, 0.4], "validation_error": [25.0, 20.0], "lr": [0.1]},
            2,
            "training.history must hold as many epochs in train_loss, validation_error and lr, "
            "got 2, 2 and 1",
        ),
        (
            {"train_loss": [0.5, 0.4], "validation_error": [25.0, 20.0], "lr": [0.1, 0.1]},
            1,
            "training.history holds 2 epochs, past training.epoch 1",
        ),
    ],
    ids=["train-loss-short", "lr-short", "past-the-epoch"],
)
def test_a_history_save_checkpoint_does_not_write_is_refused(
    good: bytes, tmp_path: Path, history: dict[str, list[float]], epoch: int, words: str
) -> None:
    """Curves of unequal lengths, or more epochs than the epoch saved (save_checkpoint refuses
    both, and fit refuses to resume from them): the load was accepted, and fit refused the
    history only once the model, optimizer and scheduler had been loaded (``minidl train
    --resume`` trained on a history past its epoch, and its first save refused it)."""
    header = _header(good)
    header["training"]["history"].update(history)
    header["training"]["epoch"] = epoch
    path = tmp_path / "bad.ckpt"
    path.write_bytes(_with_header(good, _canonical(header)))
    _refused(path, f"the header is malformed ({words})")
