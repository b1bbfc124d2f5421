"""Checkpoint behaviour (``Checkpoint``, the generator checks, ``save_checkpoint`` and the checks
it calls) that a second mutation audit of ``minidl.checkpoint`` found no test for: each test here
fails on a small change to the source (named in its docstring) that the rest of the suite let
through. The audit's rest added the header's size limit, a bool epoch and a missing folder, and
found complex tensors recorded as finite whatever they held (fixed)."""

from __future__ import annotations

import copy
import errno
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open

import minidl.checkpoint
from minidl import nn, optim
from minidl.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from tests.helpers import rewrite_checkpoint


class _Noise(nn.Module):
    """Gaussian noise drawn from the generator in the attribute ``rng`` (and a ``generator``
    attribute too, where one is given)."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.rng = torch.Generator().manual_seed(3)
        if generator is not None:
            self.generator = generator

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input + torch.randn(input.shape, generator=self.rng, dtype=input.dtype)

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output


def _module_entries(path: Path) -> list[str]:
    return sorted(name for name in read_checkpoint(path).tensors if name.startswith("rng.module."))


def _small_run(path: Path) -> Checkpoint:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2))
    save_checkpoint(path, model, optim.SGD(model.parameters(), lr=0.1), epoch=1)
    return read_checkpoint(path)


def test_a_checkpoint_equals_itself_and_not_one_with_a_tensor_more(tmp_path: Path) -> None:
    """A checkpoint is equal to itself (``c == c``, not only to another read of its file), and
    not equal to one holding every tensor of it and one more, whichever side is compared first
    (the tensors' names are compared before their bits: comparing only the names of the first
    one's tensors called the larger one equal, or raised a ``KeyError``)."""
    checkpoint = _small_run(tmp_path / "run.ckpt")
    same = checkpoint
    assert checkpoint == same
    assert not checkpoint != same  # noqa: SIM202 (the != operator's own answer)
    larger = Checkpoint(
        header=checkpoint.header,
        tensors={**checkpoint.tensors, "rng.generator": torch.Generator().get_state()},
    )
    assert checkpoint != larger
    assert larger != checkpoint


def test_a_module_registered_at_two_places_has_its_generator_saved_under_both(
    tmp_path: Path,
) -> None:
    """A Dropout with a generator of its own registered at two places of the model is saved
    under both paths (``rng.module.first`` and ``rng.module.second``), as checkpoints always named it,
    and the header's ``module_generators`` lists both: a checkpoint written before would
    otherwise be refused as naming a module with no generator."""
    path = tmp_path / "run.ckpt"
    dropout = nn.Dropout(0.5, generator=torch.Generator().manual_seed(4))
    model = _Noise()
    for name in ("first", "second"):
        model.register_module(name, dropout)
    save_checkpoint(path, model)
    assert _module_entries(path) == ["rng.module.first", "rng.module.rng", "rng.module.second"]
    assert read_checkpoint(path).header["module_generators"] == ["first", "rng", "second"]


def test_a_modules_generator_attribute_is_saved_once_beside_another_one(tmp_path: Path) -> None:
    """A module holding a generator in ``generator`` and another in ``rng`` has the first saved
    under the module's path alone (``rng.module.1``, as Dropout's) and the second under the
    path and the attribute's name (``rng.module.1.rng``): the ``generator`` attribute was saved
    a second time, as ``rng.module.1.generator``."""
    path = tmp_path / "run.ckpt"
    model = nn.Sequential(nn.Linear(2, 2), _Noise(torch.Generator().manual_seed(5)))
    save_checkpoint(path, model)
    assert _module_entries(path) == ["rng.module.1", "rng.module.1.rng"]


def test_a_generator_of_the_model_itself_is_named_by_its_attribute(tmp_path: Path) -> None:
    """A generator held by the model itself (the module with no path) is saved as
    ``rng.module.rng`` (the attribute's name alone, not ``rng.module..rng``), and resuming puts
    its state back."""
    path = tmp_path / "run.ckpt"
    torch.manual_seed(0)
    model = _Noise()
    model.register_module("linear", nn.Linear(2, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(path, model, optimizer)
    assert _module_entries(path) == ["rng.module.rng"]
    state = model.rng.get_state()
    model.rng.manual_seed(99)
    load_checkpoint(path, model, optimizer)
    assert torch.equal(model.rng.get_state(), state)


class _HeldNoise(nn.Module):
    """Noise drawn from a generator held in ``self.rngs`` (a dict), at the key ``key``."""

    def __init__(self, rngs: dict[object, torch.Generator], key: object) -> None:
        super().__init__()
        self.rngs, self.key = rngs, key

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input + torch.randn(input.shape, generator=self.rngs[self.key], dtype=input.dtype)

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output


def test_a_generator_held_under_a_bool_key_is_refused(tmp_path: Path) -> None:
    """A generator held in a dict under ``True`` (a bool, which is an int to Python but which a
    checkpoint would name ``rngs[True]``, and ``{1: g}`` finds again under ``rngs[1]``) is
    refused, naming the key's type, before anything is written (it was saved as
    ``rng.module.0.rngs[True]``)."""
    path = tmp_path / "run.ckpt"
    model = nn.Sequential(_HeldNoise({True: torch.Generator()}, True))
    with pytest.raises(
        CheckpointError,
        match=r"^save_checkpoint: the generator held at 0\.rngs\[True\] cannot be named in a "
        r"checkpoint: one held in a dict is named by its key, which must be a str or an int, "
        r"got bool; hold it under such a key$",
    ):
        save_checkpoint(path, model)
    assert list(tmp_path.iterdir()) == []


def test_an_earlier_checkpoint_resumes_a_generator_it_did_not_know_of(tmp_path: Path) -> None:
    """A checkpoint of a version that saved only ``generator`` attributes (its
    ``module_generators`` lists none of a noise layer's ``self.rng``, and it holds no state of
    it) resumes a model whose layer draws from ``self.rng``: that generator keeps its own
    state. (Only a ``generator`` attribute the saved model had not is refused; the others
    were refused as well.)"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), _Noise())
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model, optimizer)
    saved = read_checkpoint(path)
    header = copy.deepcopy(saved.header)
    assert header["module_generators"] == ["1.rng"]
    header["module_generators"] = []
    del header["tensors"]["rng.module.1.rng"]
    tensors = {k: v for k, v in saved.tensors.items() if k != "rng.module.1.rng"}
    earlier = Checkpoint(header=header, tensors=tensors)
    torch.manual_seed(1)
    noise = _Noise()
    model = nn.Sequential(nn.Linear(2, 2), noise)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    noise.rng.manual_seed(42)
    own = noise.rng.get_state()
    load_checkpoint(earlier, model, optimizer)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.model_state.items())
    assert torch.equal(noise.rng.get_state(), own)


def test_a_non_contiguous_parameter_is_saved_and_loaded_back(tmp_path: Path) -> None:
    """A parameter whose values are a transposed (non-contiguous) tensor is saved, as
    safetensors takes only contiguous ones, and loads back with the same values (without
    making it contiguous first, safetensors refused to write it)."""
    path = tmp_path / "run.ckpt"
    torch.manual_seed(0)
    linear = nn.Linear(3, 2)
    model = nn.Sequential(linear)
    linear.weight.data = torch.randn(3, 2).t()
    assert not model.state_dict()["0.weight"].is_contiguous()
    save_checkpoint(path, model)
    values = model.state_dict()["0.weight"].clone()
    torch.manual_seed(1)
    other = nn.Sequential(nn.Linear(3, 2))
    load_checkpoint(path, other)
    assert torch.equal(other.state_dict()["0.weight"], values)


def test_the_header_lists_the_optimizers_state_tensors_sorted(tmp_path: Path) -> None:
    """The header names the optimizer's state tensors in sorted order whatever order the
    optimizer holds them in (Adadelta: ``square_avg`` then ``acc_delta``), so that two
    checkpoints of one state have one header."""
    path = tmp_path / "run.ckpt"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2))
    optimizer = optim.Adadelta(model.parameters())
    assert list(optimizer.state_dict()["state"]) == ["square_avg", "acc_delta"]
    save_checkpoint(path, model, optimizer)
    assert read_checkpoint(path).header["optimizer"]["state"] == ["acc_delta", "square_avg"]


def test_a_failed_rename_keeps_its_error_naming_both_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error of the rename over the checkpoint names both files (the temporary one and the
    checkpoint) and is raised as it is, with no note; the previous checkpoint is untouched.
    (Its file name was replaced by the checkpoint's, and a note added, as for an error of the
    temporary file's write.)"""
    path = tmp_path / "run.ckpt"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2))
    save_checkpoint(path, model)
    before = path.read_bytes()

    def refuse(source: str, destination: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", source, None, destination)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError) as raised:
        save_checkpoint(path, model, epoch=3)
    error = raised.value
    assert os.fspath(error.filename2) == os.fspath(path)
    assert os.fspath(error.filename) != os.fspath(path)
    assert os.path.dirname(error.filename) == os.fspath(tmp_path)
    assert getattr(error, "__notes__", []) == []
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_a_bytes_value_in_extra_is_refused_naming_where_it_is(tmp_path: Path) -> None:
    """A ``bytes`` value inside ``extra`` is refused by the check of extra, naming its place
    and type, before anything is written (JSON's own refusal named neither)."""
    path = tmp_path / "run.ckpt"
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(
        CheckpointError,
        match=r"^save_checkpoint: extra\['run'\]\[1\] is of type bytes, which a checkpoint "
        r"cannot keep",
    ):
        save_checkpoint(path, model, extra={"run": [1, b"seed"]})
    assert list(tmp_path.iterdir()) == []


def test_a_mapping_inside_a_tuple_of_extra_is_read_back_as_a_dict(tmp_path: Path) -> None:
    """A mapping that is no ``dict`` (a ``MappingProxyType``) inside a tuple of ``extra`` is
    written as a JSON object and read back as a ``dict``, the tuple as a list (the mappings
    inside tuples were left as they were, which JSON could not write)."""
    path = tmp_path / "run.ckpt"
    model = nn.Sequential(nn.Linear(2, 2))
    save_checkpoint(path, model, extra={"runs": (types.MappingProxyType({"lr": 0.1}), 2)})
    assert read_checkpoint(path).training.extra == {"runs": [{"lr": 0.1}, 2]}


def test_save_names_a_list_hyperparameter_holding_what_json_cannot_hold(tmp_path: Path) -> None:
    """An optimizer hyper-parameter that is a list holding a value JSON does not write (a
    dtype) is refused naming the hyper-parameter, before anything is written (only the list
    itself was looked at, and JSON's own refusal named neither)."""

    class Casts(optim.Optimizer):
        dtypes = optim.Hyperparameter()

        def __init__(self, params: Any) -> None:
            self.dtypes = [torch.float32, torch.float64]
            super().__init__(params, 0.1)

    model = nn.Sequential(nn.Linear(2, 2))
    path = tmp_path / "run.ckpt"
    with pytest.raises(
        CheckpointError,
        match=r"^save_checkpoint: the optimizer's hyper-parameter dtypes=\[torch\.float32, "
        r"torch\.float64\] cannot be written as JSON",
    ):
        save_checkpoint(path, model, Casts(model.parameters()))
    assert not path.exists()


def test_the_most_negative_integer_of_too_many_digits_is_refused(tmp_path: Path) -> None:
    """-10**4300, the negative integer of fewest digits past what Python's JSON reader takes
    (4301), is refused in save's words even where the program lifted the limit on digits
    (where JSON would write it, and loading then call the file corrupted); -(10**4300 - 1),
    of 4300 digits, is saved and read back."""
    model = nn.Sequential(nn.Linear(2, 2))
    path = tmp_path / "run.ckpt"
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        with pytest.raises(
            CheckpointError, match=r"^save_checkpoint: .*it holds an integer of more than 4300"
        ):
            save_checkpoint(path, model, extra={"n": -(10**4300)})
        assert not path.exists()
        save_checkpoint(path, model, extra={"n": -(10**4300 - 1)})
    finally:
        sys.set_int_max_str_digits(before)
    assert read_checkpoint(path).training.extra == {"n": -(10**4300 - 1)}


def test_an_extra_of_tuples_nested_too_deep_is_refused(tmp_path: Path) -> None:
    """An ``extra`` nesting tuples 101 levels deep (itself the first) is refused, as lists
    are, before anything is written (tuples were not counted as levels, and the file written
    was then refused by read_checkpoint as malformed); 100 levels are saved."""
    path = tmp_path / "run.ckpt"
    model = nn.Sequential(nn.Linear(2, 2))
    deep: object = 1
    for _ in range(100):  # (with extra itself, 101 levels)
        deep = (deep,)
    with pytest.raises(
        CheckpointError,
        match=r"^save_checkpoint: extra holds arrays or objects nested more than 100 levels deep",
    ):
        save_checkpoint(path, model, extra={"deep": deep})
    assert list(tmp_path.iterdir()) == []
    save_checkpoint(path, model, extra={"deep": deep[0]})  # type: ignore[index]
    assert read_checkpoint(path).training.extra["deep"][0] is not None


class _BytesPath:
    """A path-like whose ``__fspath__`` gives bytes."""

    def __fspath__(self) -> bytes:
        return b"run.ckpt"


def test_a_path_like_of_bytes_is_refused_naming_its_type() -> None:
    """An ``os.PathLike`` whose path is bytes is refused as no ``str`` path, naming its type
    (a TypeError of Python's followed: "a bytes-like object is required, not 'str'")."""
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(
        CheckpointError,
        match=r"^save_checkpoint: path must be a str or os.PathLike, got _BytesPath$",
    ):
        save_checkpoint(_BytesPath(), model)  # type: ignore[arg-type]


# -- the audit's rest: the header's size limit, a bool epoch, a missing folder ---------------------


def _metadata(path: Path) -> str:
    """The ``"minidl"`` metadata entry (the JSON header) of a checkpoint."""
    with safe_open(path, "pt") as file:
        header: str = file.metadata()["minidl"]
    return header


def _save(path: Path) -> None:
    """Save one fixed state (torch's generator seeded, so that the header is the same each
    time)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2))
    torch.manual_seed(1)
    save_checkpoint(path, model, optim.SGD(model.parameters(), lr=0.1), epoch=1)


def test_a_header_exactly_as_long_as_the_limit_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JSON header of exactly ``_MAX_HEADER`` bytes (what safetensors takes at most) is
    written, and one byte less of limit refuses it, the previous file kept: shown with the
    limit lowered to the size of a real header (a header at the limit was refused as too
    large)."""
    path = tmp_path / "run.ckpt"
    _save(path)
    size = len(_metadata(path).encode())
    before = path.read_bytes()
    monkeypatch.setattr(minidl.checkpoint, "_MAX_HEADER", size - 1)
    with pytest.raises(
        CheckpointError,
        match=rf"^save_checkpoint: the checkpoint cannot be written \(header too large\): its "
        rf"JSON header holds {size} bytes, and safetensors \(as read_checkpoint\) takes at most "
        rf"{size - 1};",
    ):
        _save(path)
    assert path.read_bytes() == before
    path.unlink()
    monkeypatch.setattr(minidl.checkpoint, "_MAX_HEADER", size)
    _save(path)
    assert path.read_bytes() == before


def test_a_header_safetensors_refuses_under_the_limit_is_refused_in_its_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where safetensors refuses to write a header shorter than ``_MAX_HEADER`` (its own count
    includes the tensors' entries), the refusal is a CheckpointError quoting safetensors' words
    and naming the sizes, nothing is written and the previous file is kept (the header was
    written only when over the limit: the write of nothing then raised a TypeError; and the
    refusal was always called "header too large")."""
    path = tmp_path / "run.ckpt"
    _save(path)
    size = len(_metadata(path).encode())
    before = path.read_bytes()
    save = safetensors.torch.save

    def refuse(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
        if metadata is not None:
            raise SafetensorError("Error while serializing: HeaderTooLarge")
        return save(tensors)

    monkeypatch.setattr(safetensors.torch, "save", refuse)
    with pytest.raises(
        CheckpointError,
        match=rf"^save_checkpoint: the checkpoint cannot be written \(Error while serializing: "
        rf"HeaderTooLarge\): its JSON header holds {size} bytes, and safetensors \(as "
        rf"read_checkpoint\) takes at most 100000000;",
    ):
        _save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]


@pytest.mark.parametrize("epoch", [True, False])
def test_a_bool_epoch_is_refused_before_anything_is_written(tmp_path: Path, epoch: bool) -> None:
    """An epoch of ``True`` or ``False`` (a bool, which Python counts as an int) is refused
    naming what was given, and nothing is written (``True`` was saved as epoch 1, ``False`` as
    0)."""
    path = tmp_path / "run.ckpt"
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(
        CheckpointError,
        match=rf"^save_checkpoint: epoch must be an integer >= 0, got {epoch}$",
    ):
        save_checkpoint(path, model, epoch=epoch)
    assert list(tmp_path.iterdir()) == []


def test_a_path_in_a_missing_folder_is_refused_naming_that_folder(tmp_path: Path) -> None:
    """A path whose folder does not exist (and is no symbolic link) is refused with Python's
    FileNotFoundError naming the path and its folder, and no folder is made (it was called a
    symbolic link to itself, "whose folder does not exist")."""
    path = tmp_path / "missing" / "run.ckpt"
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(FileNotFoundError) as raised:
        save_checkpoint(path, model)
    assert str(raised.value) == (
        f"save_checkpoint: cannot write {str(path)!r}: the folder {str(path.parent)!r} does not "
        "exist"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_complex_tensor_holding_inf_or_nan_is_recorded_as_not_finite(tmp_path: Path) -> None:
    """A complex buffer is finite where both parts of every value are (``torch.isfinite``):
    one holding inf or NaN in either part is recorded as not finite, as a float one is, and
    loads back bit for bit (every complex tensor was recorded as finite, whatever it held). A
    file whose header calls such a tensor finite, as minidl wrote it before, is still read;
    one that calls a finite complex tensor not finite is refused."""
    values = {
        "finite": torch.tensor([1 + 2j, -3j], dtype=torch.complex64),
        "inf": torch.tensor([complex(float("inf"), 0), 1j], dtype=torch.complex64),
        "nan": torch.tensor([complex(0, float("nan"))], dtype=torch.complex64),
    }
    for name, value in values.items():
        model = nn.Sequential(nn.Linear(2, 2))
        model.register_buffer("phase", value.clone())
        path = tmp_path / name
        save_checkpoint(path, model)
        entry = read_checkpoint(path).header["tensors"]["model.phase"]
        assert entry["finite"] is bool(torch.isfinite(value).all()), name
        target = nn.Sequential(nn.Linear(2, 2))
        target.register_buffer("phase", torch.zeros_like(value))
        load_checkpoint(path, target)
        assert torch.equal(target.phase.view(torch.uint8), value.view(torch.uint8)), name

    def finite(header: dict[str, Any]) -> None:
        header["tensors"]["model.phase"]["finite"] = True

    def not_finite(header: dict[str, Any]) -> None:
        header["tensors"]["model.phase"]["finite"] = False

    rewrite_checkpoint(tmp_path / "inf", header=finite)
    assert read_checkpoint(tmp_path / "inf").header["tensors"]["model.phase"]["finite"] is True
    rewrite_checkpoint(tmp_path / "finite", header=not_finite)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "finite")
    assert str(info.value) == (
        f"read_checkpoint: checkpoint {str(tmp_path / 'finite')!r}: tensor 'model.phase' is "
        "finite, the header says not finite"
    )
