"""The checkpoint reader against damaged, foreign and hostile files.

Every file here is refused by :func:`read_checkpoint` and :func:`load_checkpoint` with a
``CheckpointError`` that names the file, never with one of Python's own errors (a
``RecursionError`` from JSON nested a thousand deep, a ``ValueError`` from an integer of 5000
digits, an ``OverflowError`` from an offset of ``Infinity``), and a refused load leaves the
model, optimizer, scheduler and generators bit for bit as they were.

A hostile file is made as an attacker who knows the format makes it: the safetensors header
written by hand (:func:`_framed`), or minidl's JSON header given as text with its SHA-256 digest
computed over it (:func:`_with_header`), so that the digest is no obstacle and the checks of
what the header says are reached. The tests of hypothesis draw the same examples on every run;
``HYPOTHESIS_PROFILE=explore`` draws new ones (see ``conftest.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
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
from minidl.cli import main
from minidl.train import History
from tests.helpers import read_refusal_and_peak

Parts = tuple[nn.Sequential, optim.SGD, optim.StepDecay, torch.Generator]


def _parts() -> Parts:
    """A small network, its optimizer (with a momentum buffer) and scheduler, and a data
    generator, each from a seed of its own."""
    model = nn.mlp((2, 3, 2), "tanh", generator=torch.Generator().manual_seed(0))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    scheduler = optim.StepDecay(optimizer, step_size=3)
    return model, optimizer, scheduler, torch.Generator().manual_seed(1)


def _good(folder: Path) -> bytes:
    """The bytes of a checkpoint of :func:`_parts` after one step, at epoch 1, with a history
    and an ``extra`` (written in ``folder``)."""
    model, optimizer, scheduler, generator = _parts()
    criterion = nn.CrossEntropyLoss()
    criterion(model(torch.randn(4, 2, generator=generator)), torch.tensor([0, 1, 1, 0]))
    model.backward(criterion.backward())
    optimizer.step()
    scheduler.step()
    path = folder / "good.ckpt"
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
    return _good(tmp_path_factory.mktemp("good"))


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The safetensors header of a checkpoint's bytes, parsed, and the tensors' bytes."""
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def _framed(data: bytes, framing: str | bytes, size: int | None = None) -> bytes:
    """``data``'s tensors' bytes under the safetensors header ``framing`` (JSON text, written
    as it is given), its length field ``size`` (default: its true length)."""
    text = framing.encode("utf-8", "surrogatepass") if isinstance(framing, str) else framing
    return struct.pack("<Q", len(text) if size is None else size) + text + _split(data)[1]


def _aligned(text: str) -> str:
    """A safetensors header ``text`` padded with spaces to a multiple of 8 bytes, as safetensors
    writes it (the tensors' data then starts aligned)."""
    return text + " " * (-len(text.encode()) % 8)


def _header(data: bytes) -> dict[str, Any]:
    """minidl's JSON header of a checkpoint's bytes (without its digest)."""
    wrapper = json.loads(_split(data)[0]["__metadata__"]["minidl"])
    header: dict[str, Any] = wrapper["header"]
    return header


def _with_header(data: bytes, text: str) -> bytes:
    """A checkpoint of ``data``'s tensors whose minidl header is the JSON text ``text``, its
    digest the SHA-256 of ``text``: a file that passes the digest check whatever ``text`` says
    (and the check of the JSON's canonical form where ``text`` is canonical)."""
    content = safetensors_load(data)
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


def _refused(path: Path, *fragments: str) -> None:
    """``path`` is refused by read_checkpoint with a CheckpointError naming it and holding
    ``fragments``, and by load_checkpoint resuming a run, with one naming it and itself, the
    refused load changing nothing."""
    named = f"checkpoint {str(path)!r}: "
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith("read_checkpoint: " + named), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the message {message!r}"
    parts = _parts()
    torch.manual_seed(7)
    before = _state(parts)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, *parts[:3], generator=parts[3])
    assert str(info.value).startswith("load_checkpoint: " + named), str(info.value)
    _assert_same(before, _state(parts))


def test_the_files_made_here_load_as_they_are(good: bytes, tmp_path: Path) -> None:
    """The makers of hostile files are no refusal of their own: the good file's header and
    tensors, written back by them unchanged, load."""
    header = _header(good)
    path = tmp_path / "same.ckpt"
    for data in (
        _framed(good, _aligned(json.dumps(_split(good)[0], separators=(",", ":")))),
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


def test_a_data_offset_of_4001_digits_is_named_briefly(good: bytes, tmp_path: Path) -> None:
    """A tensor's data offsets ending at an integer of 4001 digits (which Python's JSON reads,
    and int() takes): the file is refused as truncated, the size its header describes named as
    shown (its 4001 digits were written out)."""
    framing = _split(good)[0]
    name = next(key for key in framing if key != "__metadata__")
    framing[name]["data_offsets"][1] = _PLACE
    bad = json.dumps(framing, separators=(",", ":")).replace(json.dumps(_PLACE), "1" + "0" * 4000)
    path = tmp_path / "bad.ckpt"
    path.write_bytes(_framed(good, bad))
    _refused(path, "the file is truncated (", "bytes, its header describes an int of 4001 digits)")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert len(str(info.value)) < 400, len(str(info.value))


@pytest.mark.parametrize("length", [100, 1_000_000])
def test_a_tensor_name_of_a_million_characters_is_named_by_its_start(
    good: bytes, tmp_path: Path, length: int
) -> None:
    """A header whose ``tensors`` entry of a name of a million characters is no object: the
    name is quoted by its start and length (the message held the whole name, a megabyte),
    and one of 100 characters, as a message quotes a text, whole as before."""
    header = _header(good)
    name = "w" * length
    header["tensors"][name] = _PLACE
    text = _canonical(header).replace(json.dumps(_PLACE), "[]")
    path = tmp_path / "bad.ckpt"
    path.write_bytes(_with_header(good, text))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    if length == 100:
        assert f"tensors.{name} must be" in message, message
    else:
        assert f"tensors['{'w' * 40}'... (a str of 1000000 characters)] must be" in message
        assert len(message) < 400, len(message)


@pytest.mark.parametrize("path", [("optimizer", "state"), ("optimizer", "parameters")])
def test_a_list_of_100_000_numbers_for_names_is_named_by_its_start(
    good: bytes, tmp_path: Path, path: tuple[str, str]
) -> None:
    """An optimizer's list of state or parameter names given as 100 000 numbers: the list is
    written by its first 20 items and its length (it was written whole, 600 kB)."""
    path_ = tmp_path / "bad.ckpt"
    path_.write_bytes(
        _with_value(good, path, json.dumps(list(range(100_000)), separators=(",", ":")))
    )
    first = ", ".join(map(str, range(20)))
    _refused(path_, f"{'.'.join(path)} must be a list of names, got [{first}, ... (100000 items)]")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path_)
    assert len(str(info.value)) < 400, len(str(info.value))


def test_history_entries_of_a_million_characters_are_named_by_their_start(
    good: bytes, tmp_path: Path
) -> None:
    """``training.history`` with an entry named by a million characters: the entries are named
    each by its start and length (the message held the name whole)."""
    header = _header(good)
    header["training"]["history"]["h" * 1_000_000] = [1.0]
    path = tmp_path / "bad.ckpt"
    path.write_bytes(_with_header(good, _canonical(header)))
    _refused(path, "entries ['batch_lr', '" + "h" * 40 + "'... (a str of 1000000 characters), 'lr'")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert len(str(info.value)) < 400, len(str(info.value))


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


# -- every byte of the header, a sample of the data ----------------------------------------------


def _put(path: Path, data: bytes) -> None:
    """Write ``data`` over the file at ``path`` (made if missing) in place: a file opened with
    truncation, as ``Path.write_bytes`` opens it, is flushed to the disk first by some file
    systems (ext4's ``auto_da_alloc``), a hundred times as slow."""
    with open(path, "r+b" if path.exists() else "wb") as file:
        file.write(data)
        file.truncate()


def _read_refused(path: Path) -> str:
    """read_checkpoint's refusal of ``path``, which must name it."""
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"read_checkpoint: checkpoint {str(path)!r}: "), message
    return message


def test_a_checkpoint_cut_at_any_byte_of_its_header_or_of_a_sample_of_its_data_is_refused(
    good: bytes, tmp_path: Path
) -> None:
    """The file cut after each byte of its length field and header (every offset) and after
    every 61st byte of its tensors' data (a crash during a copy, a full disk), each refused by
    read_checkpoint naming the file; loading one in 40 of them changes nothing."""
    (size,) = struct.unpack("<Q", good[:8])
    cuts = sorted({*range(8 + size + 1), *range(8 + size, len(good), 61)}, reverse=True)
    path = tmp_path / "cut.ckpt"
    _put(path, good)
    for index, cut in enumerate(cuts):
        os.truncate(path, cut)  # (cut in place, longest first: no file written again)
        message = _read_refused(path)
        assert "truncated" in message or "corrupted" in message, message
        if index % 40 == 0:
            _refused(path)


def test_a_bit_flipped_in_any_byte_of_the_header_or_in_a_sample_of_the_data_is_refused(
    good: bytes, tmp_path: Path
) -> None:
    """One bit flipped in each byte of the length field and header (the bit ``offset % 8``:
    each bit at every eighth byte) and every 53rd byte of the tensors' data inverted (all its
    bits flipped), each file refused by read_checkpoint naming the file; loading one in 40 of
    them changes nothing. (Each of the eight bits of every header byte, flipped alone, and each byte set to
    0, 0xFF, '"', '{', '\\' and 0x80, outside the suite: each file is refused.)"""
    (size,) = struct.unpack("<Q", good[:8])
    flips = [(offset, 1 << (offset % 8)) for offset in range(8 + size)]
    flips += [(offset, 0xFF) for offset in range(8 + size, len(good), 53)]
    path = tmp_path / "flipped.ckpt"
    _put(path, good)
    with open(path, "r+b") as file:
        for index, (offset, mask) in enumerate(flips):
            os.pwrite(file.fileno(), bytes([good[offset] ^ mask]), offset)
            _read_refused(path)
            if index % 40 == 0:
                _refused(path)
            os.pwrite(file.fileno(), good[offset : offset + 1], offset)
    assert path.read_bytes() == good


# -- hostile values at every field of minidl's header --------------------------------------------


def _fields(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """The path of every value inside ``value`` (a key or index at each level)."""
    inner: list[tuple[str | int, ...]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            inner += [(*path, key), *_fields(item, (*path, key))]
    elif isinstance(value, list):
        for index, item in enumerate(value):
            inner += [(*path, index), *_fields(item, (*path, index))]
    return inner


#: An integer of 4001 digits (Python's parser refuses more than 4300).
_HUGE = "1" + "0" * 4000

#: JSON texts that no field of a header minidl writes holds, or not there: of every kind,
#: huge, not finite, a string that UTF-8 cannot encode, or nested. ``None`` removes the field.
_HOSTILE = [
    "null",
    "true",
    "-1",
    "1.5",
    "NaN",
    "-Infinity",
    _HUGE,
    '"\\ud800"',
    '"qint8"',
    "[-1,1000000000000000000]",
    '{"":[[[{}]]]}',
    "[]",
    json.dumps(_nested(900)),
    None,
]

#: The (field, value) pairs of the sample below that load_checkpoint takes: the versions are
#: information only; ``extra`` holds any JSON (minidl train's settings in it are compared by the
#: command line); a history holds any numbers (a diverged run's NaN and infinities).
_TAKEN = {
    (("minidl_version",), None),
    (("minidl_version",), "NaN"),
    (("scheduler", "interval"), None),  # (a checkpoint of a version before it was written)
    (("torch_version",), '"\\ud800"'),
    (("training", "extra"), '{"":[[[{}]]]}'),
    (("training", "extra", "settings"), "-1"),
    (("training", "extra", "settings"), "[]"),
    (("training", "extra", "settings", "activation"), "1.5"),
    (("training", "extra", "settings", "hidden"), None),
    (("training", "extra", "settings", "hidden"), "NaN"),
    (("training", "extra", "settings", "hidden", 0), "-Infinity"),
    (("training", "extra", "settings", "hidden", 0), "null"),
    (("training", "history", "lr", 0), "NaN"),
    (("training", "history", "train_loss", 0), _HUGE),
}


def test_hostile_values_at_every_field_of_the_header_are_refused(
    good: bytes, tmp_path: Path
) -> None:
    """Each field of the header (every key and list item, 122 of them) given two of the hostile
    values above (``_HOSTILE[i % 14]`` and ``_HOSTILE[(i + 5) % 14]`` at the i-th field, each
    value at eight or nine fields), with a valid digest: read_checkpoint or load_checkpoint refuses the
    file naming it, the load changing nothing, except the pairs of ``_TAKEN``."""
    fields = _fields(_header(good))
    assert len(fields) == 122
    path = tmp_path / "hostile.ckpt"
    taken = set()
    for index, field in enumerate(fields):
        for value in (_HOSTILE[index % 14], _HOSTILE[(index + 5) % 14]):
            _put(path, _with_value(good, field, value))
            parts = _parts()
            before = _state(parts)
            try:
                load_checkpoint(path, *parts[:3], generator=parts[3])
            except CheckpointError as error:
                assert f"load_checkpoint: checkpoint {str(path)!r}: " in str(error), (
                    field,
                    value,
                    str(error),
                )
                _assert_same(before, _state(parts))
            else:
                taken.add((field, value))
    assert taken == _TAKEN


# -- headers that hypothesis writes --------------------------------------------------------------

#: JSON values of every kind: integers up to 200 digits, floats with NaN and the infinities,
#: strings with lone surrogates, and lists and objects of them nested a few levels.
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**200), 10**200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)

_SLOW = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SLOW
@given(field=st.integers(0, 121), value=_JSON, drop=st.booleans())
def test_any_json_at_any_field_of_the_header_is_refused_naming_the_file_or_taken(
    good: bytes, tmp_path: Path, field: int, value: Any, drop: bool
) -> None:
    """A hypothesis-written JSON value at any field of the header (or the field removed), with a
    valid digest: load_checkpoint takes the file, or refuses it naming it and changes nothing;
    no error of Python's own gets out (a value that some field may hold is taken)."""
    where = _fields(_header(good))[field]
    path = tmp_path / "hypothesis.ckpt"
    _put(path, _with_value(good, where, None if drop else json.dumps(value)))
    parts = _parts()
    before = _state(parts)
    try:
        load_checkpoint(path, *parts[:3], generator=parts[3])
    except CheckpointError as error:
        assert f"load_checkpoint: checkpoint {str(path)!r}: " in str(error), str(error)
        _assert_same(before, _state(parts))


_SIZES = st.integers(-2, 3) | st.sampled_from([10**18, 2**63, 2**64, 10**30])


@_SLOW
@given(
    entry=st.integers(0, 6),
    dtype=st.sampled_from(["F32", "F64", "I8", "U8", "BOOL", "F8_E8M0", "C64", "Q8", "f32", ""])
    | st.text(max_size=4),
    shape=st.none() | st.lists(_SIZES, max_size=3),
    offsets=st.none() | st.lists(_SIZES | st.floats(), max_size=3),
)
@example(entry=0, dtype="F32", shape=None, offsets=[0, float("inf")]).via("Infinity")
@example(entry=1, dtype="F32", shape=[10**18, 10**18], offsets=None).via("a huge shape")
@example(entry=2, dtype="F32", shape=[-1], offsets=None).via("a negative size")
def test_any_tensor_entry_of_the_safetensors_header_is_refused(
    good: bytes,
    tmp_path: Path,
    entry: int,
    dtype: str,
    shape: list[int] | None,
    offsets: list[float] | None,
) -> None:
    """A tensor's entry in the safetensors header given a hypothesis-written dtype, shape
    (negative sizes, 10**18, 2**64: nothing of that size is allocated) and data offsets
    (overlapping another tensor's, past the file, not integers), the entry otherwise as it was
    (``None``: as it was): refused naming the file, the load changing nothing."""
    framing = _split(good)[0]
    name = sorted(key for key in framing if key != "__metadata__")[entry]
    changed: dict[str, object] = {"dtype": dtype}
    if shape is not None:
        changed["shape"] = shape
    if offsets is not None:
        changed["data_offsets"] = offsets
    assume(any(framing[name][key] != value for key, value in changed.items()))
    framing[name].update(changed)
    path = tmp_path / "framing.ckpt"
    _put(path, _framed(good, json.dumps(framing, separators=(",", ":"))))
    _refused(path)


@_SLOW
@given(size=st.integers(0, 2**64 - 1))
@example(size=2**63).via("the length of the brief")
@example(size=2**64 - 1).via("the largest")
@example(size=0).via("none")
def test_any_header_length_but_the_true_one_is_refused(
    good: bytes, tmp_path: Path, size: int
) -> None:
    """The length field (8 bytes, little-endian) of any value up to 2**64 - 1 but the header's:
    refused naming the file, without reading past the file or allocating the length."""
    (true_size,) = struct.unpack("<Q", good[:8])
    assume(size != true_size)
    path = tmp_path / "length.ckpt"
    _put(path, _framed(good, good[8 : 8 + true_size], size))
    _read_refused(path)


# -- checkpoints of another run ------------------------------------------------------------------


def _other(
    change: str,
) -> tuple[nn.Sequential, optim.Optimizer, optim.LRScheduler | None, torch.Generator]:
    """:func:`_parts` with one thing changed (``change`` names it)."""
    model = nn.mlp(
        {"wider": (2, 4, 2), "deeper": (2, 3, 3, 2)}.get(change, (2, 3, 2)),
        "relu" if change == "relu" else "tanh",
        dtype=torch.float64 if change == "float64" else torch.float32,
        generator=torch.Generator().manual_seed(0),
    )
    optimizer: optim.Optimizer = (
        optim.Adadelta(model.parameters())
        if change == "adadelta"
        else optim.SGD(model.parameters(), lr=0.1, momentum=0.0 if change == "no-momentum" else 0.5)
    )
    scheduler: optim.LRScheduler | None
    if change == "cyclic":
        scheduler = optim.CyclicLR(optimizer, base_lr=0.01, max_lr=0.1, step_size_up=3)
    elif change == "no-scheduler":
        scheduler = None
    else:
        scheduler = optim.StepDecay(optimizer, step_size=4 if change == "step-size" else 3)
    return model, optimizer, scheduler, torch.Generator().manual_seed(1)


_OTHERS = {
    "wider": "the checkpoint is for another architecture: '0.weight' has shape (4, 2)",
    "deeper": "the checkpoint is for another architecture",
    "relu": "the checkpoint is for another model: the parameters fit, the modules differ",
    "float64": "the checkpoint's parameters are float64 and this model's float32",
    "adadelta": "the checkpoint is for optimizer Adadelta, got SGD",
    "no-momentum": "the checkpoint's SGD has state [], this one ['momentum_buffer']",
    "cyclic": "the checkpoint was saved with scheduler CyclicLR, got StepDecay",
    "step-size": "the checkpoint is for another scheduler: the settings differ",
    "no-scheduler": "the checkpoint was saved with scheduler None, got StepDecay",
}


@pytest.mark.parametrize("change", sorted(_OTHERS))
def test_a_checkpoint_of_another_run_is_refused_and_changes_nothing(
    tmp_path: Path, change: str
) -> None:
    """A checkpoint of another architecture, dtype, optimizer, optimizer state or scheduler
    (class or settings), resumed into :func:`_parts`: refused naming the file and the
    difference, everything as it was."""
    other = _other(change)
    path = tmp_path / f"{change}.ckpt"
    save_checkpoint(path, *other[:3], epoch=1, generator=other[3])
    parts = _parts()
    torch.manual_seed(7)
    before = _state(parts)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, *parts[:3], generator=parts[3])
    message = str(info.value)
    assert message.startswith(f"load_checkpoint: checkpoint {str(path)!r}: "), message
    assert _OTHERS[change] in message, message
    _assert_same(before, _state(parts))


@pytest.mark.parametrize(
    ("version", "words"),
    [
        ("2", "format version 2 (written by minidl "),
        ("0", "invalid format version 0"),
        ('"1"', "invalid format version '1'"),
        ("1.0", "invalid format version 1.0"),
        ("true", "invalid format version True"),
        ("null", "invalid format version None"),
    ],
)
def test_a_checkpoint_of_another_format_version_is_refused(
    good: bytes, tmp_path: Path, version: str, words: str
) -> None:
    """A newer format version, and versions that are no integer >= 1."""
    path = tmp_path / "version.ckpt"
    path.write_bytes(_with_value(good, ("format_version",), version))
    _refused(path, words)


@pytest.mark.parametrize(
    ("version", "writer", "words"),
    [
        ("2", '"0.9.1"', "format version 2 (written by minidl 0.9.1) is newer than this minidl"),
        (_HUGE, '"0.9.1"', "format version an int of 4001 digits (written by minidl 0.9.1)"),
        ("2", json.dumps("9" * 10**6), "(written by minidl '99999999999999999999999999999999999"),
        ("2", _canonical(list(range(10**5))), "format version 2 (written by minidl <a list>) is"),
        ("2", "null", "format version 2 (written by minidl None) is newer"),
    ],
    ids=["plain", "huge-version", "long-writer", "list-writer", "no-writer"],
)
def test_a_newer_format_version_is_named_in_a_message_of_a_few_lines(
    good: bytes, tmp_path: Path, version: str, writer: str, words: str
) -> None:
    """A newer format version of 4001 digits, or written by a minidl version of a million
    characters or a list of 100 000 numbers: the message shows them briefly (all of them were
    written out, the version's 4001 digits, the million characters and the 100 000 numbers)."""
    header = _header(good)
    header["format_version"] = _PLACE
    header["minidl_version"] = _PLACE + "writer"
    text = _canonical(header).replace(json.dumps(_PLACE), version)
    path = tmp_path / "newer.ckpt"
    path.write_bytes(_with_header(good, text.replace(json.dumps(_PLACE + "writer"), writer)))
    _refused(path, words)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert len(str(info.value)) < 400, len(str(info.value))


# -- minidl train --resume -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The checkpoint of a run of ``minidl train`` of one epoch."""
    path = tmp_path_factory.mktemp("trained") / "run.ckpt"
    assert main([*_TRAIN, "--checkpoint", str(path)]) == 0
    return path.read_bytes()


_TRAIN = ["train", "--epochs", "1", "--hidden", "4", "--quiet"]


def _cut_in_header(data: bytes) -> bytes:
    return data[: 8 + struct.unpack("<Q", data[:8])[0] // 2]


def _flip_in_header(data: bytes) -> bytes:
    return data[:100] + bytes([data[100] ^ 4]) + data[101:]


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (_cut_in_header, "not a safetensors file, or truncated"),
        (_flip_in_header, "corrupted"),
        (lambda data: _framed(data, _DEEP), "nested too deeply"),
        (lambda data: _with_value(data, ("format",), _DEEP), "nested too deeply"),
        (lambda data: _with_value(data, ("training", "epoch"), "7" * 5000), "4300 digits"),
        (lambda data: _with_value(data, ("training", "epoch"), json.dumps(_nested(900))), "103"),
        (
            lambda data: _with_value(data, ("training", "history", "lr"), "[]"),
            "got 1, 1 and 0",
        ),
        (lambda data: _with_value(data, ("format_version",), "2"), "format version 2"),
    ],
    ids=["cut", "flipped", "deep-framing", "deep-header", "digits", "900-deep", "history", "v2"],
)
def test_minidl_train_resume_refuses_a_bad_file_naming_it(
    trained: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Any,
    words: str,
) -> None:
    """``minidl train --resume`` of a damaged or hostile file: exit status 2 and one line
    naming the flag and the file, no traceback, the file unchanged."""
    path = tmp_path / "run.ckpt"
    path.write_bytes(damage(trained))
    before = path.read_bytes()
    assert main([*_TRAIN, "--epochs", "2", "--resume", str(path)]) == 2
    errors = capsys.readouterr().err
    assert errors.startswith(f"minidl train: error: --resume {path}: "), errors
    assert words in errors and errors.count("\n") == 1, errors
    assert path.read_bytes() == before


# -- a large file of another program -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["safetensors", "safetensors-of-torch", "no-safetensors"])
def test_a_large_file_of_another_program_is_refused_unread(tmp_path: Path, kind: str) -> None:
    """A file of 256 MiB (a sparse one here): a safetensors file without minidl's header (a
    model's weights), or no safetensors file (its first 8 bytes a length of 2.4e18): refused
    from its first bytes, without reading the rest (read whole, and for a safetensors file
    loaded, it took 256 or 512 MiB of memory before the refusal; a file of some gigabytes, as
    much or twice)."""
    framing: dict[str, Any] = {"w": {"dtype": "F32", "shape": [2**26], "data_offsets": [0, 2**28]}}
    if kind == "safetensors-of-torch":
        framing["__metadata__"] = {"format": "pt"}
    text = json.dumps(framing, separators=(",", ":")).encode()
    start = b"GARBAGE!" if kind == "no-safetensors" else struct.pack("<Q", len(text)) + text
    path = tmp_path / "large.bin"
    path.write_bytes(start)
    os.truncate(path, len(start) + 2**28)
    message, peak = read_refusal_and_peak(path)
    assert message == f"read_checkpoint: checkpoint {str(path)!r}: " + (
        f"not a safetensors file, or truncated (header of {struct.unpack('<Q', start)[0]} bytes "
        f"in a file of {2**28 + 8} bytes)"
        if kind == "no-safetensors"
        else "not a minidl checkpoint (no 'minidl' header)"
    )
    assert peak < 2**20, peak


def test_a_checkpoint_written_before_reprs_showed_an_interval_set_by_hand_loads_as_before(
    tmp_path: Path,
) -> None:
    """StepDecay's, CyclicLR's and OneCycle's reprs, which a checkpoint compares, now show an
    interval set by hand; a checkpoint written before (no "interval" beside the scheduler, its
    repr without one) loaded into the schedule that wrote it was then refused ('the settings
    differ'). It cannot tell the interval, and loads as it did, into either; a checkpoint
    written now tells it."""
    torch.manual_seed(0)

    def parts(interval: str | None) -> tuple[nn.Sequential, optim.SGD, optim.CyclicLR]:
        model = nn.Sequential(nn.Linear(2, 2))
        optimizer = optim.SGD(model.parameters(), lr=0.1)
        scheduler = optim.CyclicLR(optimizer, 0.01, 0.1, step_size_up=3)
        if interval is not None:
            scheduler.interval = interval  # type: ignore[assignment]
        return model, optimizer, scheduler

    written = parts("epoch")
    written[2].step()
    save_checkpoint(tmp_path / "now.ckpt", *written, epoch=1)
    data = (tmp_path / "now.ckpt").read_bytes()
    older = _with_value(data, ("scheduler", "interval"), None)
    shown_before = repr(written[2]).replace(", interval='epoch'", "")
    (tmp_path / "before.ckpt").write_bytes(
        _with_value(older, ("scheduler", "repr"), json.dumps(shown_before))
    )
    for interval in ("epoch", None):
        target = parts(interval)
        load_checkpoint(tmp_path / "before.ckpt", *target)
        assert target[2].last_step == 1
    load_checkpoint(tmp_path / "now.ckpt", *parts("epoch"))
    with pytest.raises(CheckpointError, match="the checkpoint is for another scheduler"):
        load_checkpoint(tmp_path / "now.ckpt", *parts(None))
