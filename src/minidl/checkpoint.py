"""Checkpoints: save and resume the whole state of a training run, bit for bit.

A checkpoint holds everything a run needs to continue exactly as if it had never stopped: the
model's parameters, the optimizer's state (learning rate, step count, hyper-parameters and its
flat state tensors such as ``momentum_buffer``), the scheduler's state, the epoch and step
counters, the :class:`~minidl.train.History` so far, and the state of every random generator in
use: torch's global generator, the data-shuffling :class:`torch.Generator`, the generators of the
model's modules (a ``generator`` attribute, as :class:`~minidl.nn.Dropout`'s, any other
attribute holding one, or a list, tuple, deque or dict of an attribute holding one; not one
that an object of one's own holds), and the default
CUDA generator of each GPU the model is on (where a module without its own generator draws).

The file is a `safetensors <https://huggingface.co/docs/safetensors>`_ file: the tensors, and one
metadata entry ``"minidl"`` holding a JSON header with the format version, the minidl and torch
versions, the architecture (parameter names, shapes and dtypes, and the model's ``repr``), the
non-tensor state, a SHA-256 digest and a finiteness flag for every tensor, and a digest of the
header itself (written as Python's JSON writes it: a number that is not finite, the NaN of a
history without validation, as ``NaN``, which strict JSON parsers refuse). Loading never
executes code from the file (no pickle, no ``torch.load``) and checks, before anything is
written:

* that the file is a well-formed safetensors file, byte for byte as minidl writes it;
* the header's digest, format and version (a newer format is refused, naming both versions);
* that the architecture matches the model: the same parameters and buffers, and the same
  modules (its ``repr``: activations and hyper-parameters, less the memory addresses of
  default reprs, ``<function f at 0x...>``); the message lists what differs;
* every tensor's presence, shape, dtype, digest and finiteness (the model's tensors also
  against the architecture's shapes and dtypes);
* that the optimizer and scheduler are of the saved classes and accept the saved state, that
  the optimizer updates the model's parameters it updated (by name), and that the scheduler
  has the saved settings (its ``repr`` once its state is loaded: settings such as
  ``CyclicLR``'s ``max_lr`` are not in its state).

A file that fails any check raises :class:`CheckpointError` and the model, optimizer, scheduler
and generators are left exactly as they were. Resuming (with an optimizer) needs the data
generator exactly when one was saved. Loading the model alone (no optimizer, e.g. to
evaluate it) restores its parameters (and the data generator, if one is given): torch's global
generator, the modules' generators and the CUDA generators are restored only when resuming
training.

Writes are atomic: the bytes go to a temporary file in the destination folder, which is flushed,
``fsync``-ed and renamed over the destination, and the folder is then ``fsync``-ed; a crash during
a save leaves the previous checkpoint intact. A symbolic link is followed (its target is
replaced); a destination that is a device, FIFO or socket is refused, as the rename would
replace it with a file. A replaced checkpoint's permissions are kept; a new one gets those the
umask gives a new file.

Example:
    >>> from minidl.train import fit
    >>> scheduler = optim.StepDecay(optimizer, step_size=100)
    >>> history = fit(model, criterion, optimizer, x, y, epochs=10, scheduler=scheduler,
    ...               generator=generator)
    >>> save_checkpoint("run.ckpt", model, optimizer, scheduler, epoch=10, history=history,
    ...                 generator=generator)
    >>> state = load_checkpoint("run.ckpt", model, optimizer, scheduler, generator=generator)
    >>> history = fit(model, criterion, optimizer, x, y, epochs=400, start_epoch=state.epoch,
    ...               history=state.history, scheduler=scheduler, generator=generator)
"""

from __future__ import annotations

import copy
import difflib
import errno
import functools
import gc
import hashlib
import json
import math
import numbers
import os
import re
import secrets
import stat
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

from minidl._extras import require
from minidl._files import is_link_loop, naming_file, special_file_kind
from minidl._frozen import FrozenDict, frozen
from minidl._interrupts import holding_interrupts
from minidl._validate import LONGEST_SHOWN, LONGEST_TEXT, add_note, shown, without_addresses
from minidl.nn._checks import given_module
from minidl.nn.module import Module, check_registered, referred
from minidl.nn.parameter import first_overlap
from minidl.optim.lr_scheduler import LRScheduler, scheduling
from minidl.optim.optimizer import Optimizer, check_step_count
from minidl.train import History, given_component, history_fault

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "TrainingState",
    "architecture",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

#: The name of the format, in every header.
FORMAT = "minidl-checkpoint"
#: The version of the format this minidl writes; files of a newer version are refused.
FORMAT_VERSION = 1

#: Environment variable read by :func:`save_checkpoint`, for crash tests only: seconds to sleep
#: half-way through writing the temporary file and again just before the rename.
_TEST_DELAY_ENV = "MINIDL_CHECKPOINT_TEST_DELAY"

_MODEL = "model."
_OPTIMIZER = "optimizer."
_RNG_TORCH = "rng.torch"
_RNG_GENERATOR = "rng.generator"
_RNG_MODULE = "rng.module."
_RNG_CUDA = "rng.cuda."
_MAX_HEADER = 100_000_000
_HISTORY_FIELDS = ("train_loss", "validation_error", "lr", "batch_lr")
#: The interval of a StepDecay, CyclicLR or OneCycle in its repr, which a checkpoint written
#: before the reprs showed it (one without the scheduler's "interval") does not hold.
_SET_INTERVAL = re.compile(r"((?:StepDecay|CyclicLR|OneCycle)\([^()]*?), interval='\w+'\)")
#: The refusal of a change to a Checkpoint's header or tensors (what, and what to build from).
_READ_ONLY = (
    "Checkpoint: its {0} read-only (checked when it was made, as load_checkpoint applies it); "
    "build a new Checkpoint from {1} instead"
)
#: The deepest nesting of arrays and objects (mappings, lists, tuples) that ``extra`` may hold,
#: ``extra`` itself the first level. Python's JSON parser, ``repr`` and ``copy.deepcopy``
#: recurse once or twice a level, up to the interpreter's limit of about a thousand frames: an
#: ``extra`` nested 500 deep was written, and reading it back raised a ``RecursionError``.
_MAX_NESTING = 100
#: The types of JSON's numbers, strings, booleans and null, which hold nothing.
_SCALARS = frozenset({str, int, float, bool, type(None)})


class CheckpointError(ValueError):
    """A checkpoint that cannot be written, read or applied; the message says what is wrong."""


@dataclass
class TrainingState:
    """The counters and curves of a run, as a checkpoint restores them.

    Attributes:
        epoch: epochs completed (the next epoch to run, ``start_epoch`` of :func:`~minidl.train.fit`).
        step: optimizer steps (batches) completed.
        history: the :class:`~minidl.train.History` of the completed epochs.
        extra: the JSON-serialisable ``extra`` given to :func:`save_checkpoint`.
    """

    epoch: int = 0
    step: int = 0
    history: History = field(default_factory=History)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A checkpoint read and verified by :func:`read_checkpoint`, not yet applied to anything.

    It is a value, checked once when made: two are equal (``==``) when their headers hold the
    same values (a NaN of a history equal to a NaN) and their tensors the same names, dtypes,
    shapes and bits, as two reads of one file do; it is not hashable (its tensors may change in
    place). Its ``header`` and ``tensors`` are read-only copies
    of those given (each ``dict`` and ``list`` of the header, and the mapping of tensors; the
    tensors themselves are not copied), which refuse a change with a ``TypeError``, so that what
    :func:`load_checkpoint` applies is what was checked. To apply another state, build a new
    checkpoint: ``Checkpoint(header=header, tensors={**checkpoint.tensors, name: tensor})``,
    with ``header = copy.deepcopy(checkpoint.header)`` (a plain, changeable copy) changed as
    wanted. (A tensor changed in place keeps its name and place; :func:`load_checkpoint`
    checks the model tensors' shapes and dtypes against the header again as it applies them.)
    A copy and a pickle are made through the constructor; one pickled by an earlier minidl
    version, as its plain fields, is checked and made read-only as it loads.

    Attributes:
        header: the JSON header (format, versions, architecture, non-tensor state, digests),
            read-only.
        tensors: every tensor of the file, by name (``"model.0.weight"``,
            ``"optimizer.momentum_buffer"``, ``"rng.torch"``, ...), a read-only mapping.
    """

    header: dict[str, Any]
    tensors: dict[str, Tensor]

    def __post_init__(self) -> None:
        """Refuse what :func:`read_checkpoint` refuses in a header (another format, a newer or
        invalid format version, a field missing or of the wrong kind: an epoch of -1, a history
        of strings or of curves of unequal lengths, values nested deeper than an ``extra`` may
        be), in its words, ``tensors`` that is no mapping of names to tensors, and a model
        tensor of another shape or dtype than the header's architecture (which loading would
        convert to the model's dtype): a checkpoint built by hand (a read one's, altered) is
        applied as a read one is. (The header's digests, shapes and dtypes of the
        other tensors, which a file's bytes are checked against, are not: a state that a
        component or generator refuses is refused as it is applied, and everything is put
        back.)

        Raises:
            CheckpointError: naming ``Checkpoint``, what is wrong and what was expected.
        """
        where = "Checkpoint"
        if not isinstance(self.header, dict):
            raise CheckpointError(
                f"{where}: header must be a dict (a checkpoint's JSON header), got "
                f"{type(self.header).__name__}"
            )
        if not isinstance(self.tensors, dict):
            raise CheckpointError(
                f"{where}: tensors must be a dict of names to tensors, got "
                f"{type(self.tensors).__name__}"
            )
        for name, tensor in self.tensors.items():
            if not isinstance(name, str) or not isinstance(tensor, Tensor):
                raise CheckpointError(
                    f"{where}: tensors must be a dict of names to tensors, got the entry "
                    f"{shown(name)}: {type(tensor).__name__}"
                )
        _check_nesting(self.header, _MAX_NESTING + 2, "header", where)  # (header, training)
        _check_header_content(self.header, where)
        _check_model_tensors(self.header, self.tensors, where)
        # Kept as read-only copies of what was checked (the tensors themselves not copied):
        # the caller's dicts may change afterwards, these cannot.
        header = frozen(self.header, _READ_ONLY.format("header is", "copy.deepcopy(its header)"))
        tensors: FrozenDict[str, Tensor] = FrozenDict(
            self.tensors, _READ_ONLY.format("tensors are", "{**its tensors, name: tensor}")
        )
        object.__setattr__(self, "header", header)
        object.__setattr__(self, "tensors", tensors)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Checkpoint):
            return NotImplemented
        if self is other:
            return True
        # (the headers as JSON: NaN, which a run without validation records, equals NaN there)
        if self.tensors.keys() != other.tensors.keys():
            return False
        if _canonical(self.header) != _canonical(other.header):
            return False
        return all(_same_bits(self.tensors[name], other.tensors[name]) for name in self.tensors)

    __hash__ = None  # type: ignore[assignment]  # (a value whose tensors may change in place)

    def __reduce__(self) -> tuple[Any, ...]:
        # Copied and unpickled through the constructor, checked and read-only again (a deep
        # copy of its fields is a plain, changeable one, which would otherwise be kept as is).
        return (type(self), (self.header, self.tensors))

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A checkpoint pickled by an earlier minidl version (before __reduce__) holds its
        # fields, which pickle would set without the constructor: a plain, changeable header,
        # unchecked. Checked and made read-only as the constructor makes them.
        object.__setattr__(self, "header", state.get("header"))
        object.__setattr__(self, "tensors", state.get("tensors"))
        self.__post_init__()

    @property
    def model_state(self) -> dict[str, Tensor]:
        """The parameter values and buffers, keyed as :meth:`Module.state_dict` keys them, in
        the order of the saved model's ``state_dict`` (the architecture's; the file's own order
        is a hash order, another in each process)."""
        saved = {k[len(_MODEL) :]: v for k, v in self.tensors.items() if k.startswith(_MODEL)}
        order = [entry[0] for entry in self.header["architecture"]["parameters"]]
        names = [name for name in order if name in saved]
        names += sorted(saved.keys() - set(names))  # (none in a checkpoint minidl wrote)
        return {name: saved[name] for name in names}

    @property
    def training(self) -> TrainingState:
        """The counters, history and ``extra`` saved with the checkpoint (new copies each time:
        changing them, nested values of ``extra`` too, leaves the checkpoint as read)."""
        training = self.header["training"]
        return TrainingState(
            epoch=training["epoch"],
            step=training["step"],
            history=History(**{k: list(v) for k, v in training["history"].items()}),
            extra=copy.deepcopy(training["extra"]),
        )


# -- saving ---------------------------------------------------------------------------------------


def _module_generators(
    where: str, model: Module, others: bool = True
) -> dict[str, torch.Generator]:
    """The generators of ``model``'s modules, by checkpoint entry name: a ``generator``
    attribute holding a ``torch.Generator`` (:class:`~minidl.nn.Dropout`'s) by the module's
    path, any other attribute holding one (a noise layer's ``self.rng``, which was not saved,
    so that a resumed run drew other numbers) by the module's path and the attribute's name,
    and one held in a list, tuple, deque or dict of an attribute (``self.rngs = [g0, g1]``) by
    its place there too (``noise.rngs[1]``, ``noise.rngs['left']``; see :func:`_held_generators`).
    (The two cannot meet: an attribute named as a child is that child.) ``others=False``: the
    ``generator`` attributes only."""
    found: dict[str, torch.Generator] = {}
    # (every place of a module registered at two, as checkpoints always named them)
    for name, module in model.named_modules(remove_duplicate=False):
        generator = getattr(module, "generator", None)
        if isinstance(generator, torch.Generator):
            found[_RNG_MODULE + name] = generator
        # Others found without asking for the module's __dict__ (see referred), which is
        # asked for only where one is held.
        if others and any(
            value is not generator and _holds_generator(value) for value in referred(module)
        ):
            for attribute, value in vars(module).items():
                if attribute == "generator" and isinstance(value, torch.Generator):
                    continue
                place = f"{name}.{attribute}" if name else attribute
                for at, held in _held_generators(where, value, place):
                    found[_RNG_MODULE + at] = held
    return found


#: How deep :func:`_held_generators` looks into lists, tuples, deques and dicts inside one
#: another.
_DEEPEST = 4
#: The containers whose generators are named by their place (a deque's by index, as a
#: list's); a generator elsewhere in an object of one's own is not looked for.
_PLACED = (list, tuple, deque, dict)
#: The types of items that hold no generator, passed over in C (a log of numbers).
_NO_GENERATOR = frozenset({int, float, str, bool, type(None), Tensor})


def _holds_generator(value: object, depth: int = 0) -> bool:
    """Whether ``value`` is a generator or a list, tuple, deque or dict holding one, down to
    :data:`_DEEPEST` levels (where :func:`_held_generators` looks); or a set, or a list, tuple,
    deque or dict past those levels, holding one at any depth (which :func:`_held_generators`
    refuses: it could not be named)."""
    if isinstance(value, torch.Generator):
        return True
    if isinstance(value, set | frozenset) or (depth >= _DEEPEST and isinstance(value, _PLACED)):
        return _unplaced_generator(value) is not None
    if not isinstance(value, _PLACED):
        return False
    if isinstance(value, dict) and any(_unplaced_generator(key) is not None for key in value):
        return True  # (in a key, (g, 0) too: refused by _held_generators)
    values = value.values() if isinstance(value, dict) else value
    return not set(map(type, values)) <= _NO_GENERATOR and any(
        _holds_generator(item, depth + 1) for item in values
    )


def _unplaced_generator(value: object) -> torch.Generator | None:
    """A generator that ``value`` holds at any depth of lists, tuples, deques, dicts (their keys and
    values), sets and frozensets, each looked into once (a list that holds itself), or
    ``None``."""
    seen: set[int] = set()
    waiting = [value]
    while waiting:
        item = waiting.pop()
        if isinstance(item, torch.Generator):
            return item
        if not isinstance(item, (*_PLACED, set, frozenset)) or id(item) in seen:
            continue
        seen.add(id(item))
        waiting.extend([*item, *item.values()] if isinstance(item, dict) else item)
    return None


def _held_generators(
    where: str, value: object, place: str, depth: int = 0
) -> Iterator[tuple[str, torch.Generator]]:
    """The generators that ``value``, found at ``place``, is or holds (see
    :func:`_holds_generator`), by place: the items of a list or tuple by index
    (``place[0]``), those of a dict by key (``place['key']``, ``place[3]``).

    Raises:
        CheckpointError: a generator held in a dict under a key that is no str or int, which
            the checkpoint could not name so that loading finds it again.
    """
    if isinstance(value, torch.Generator):
        yield place, value
        return
    if not _holds_generator(value, depth):
        return
    if isinstance(value, set | frozenset) or depth >= _DEEPEST:
        # (a set's items have no place; past _DEEPEST levels, one is not looked for by place)
        where_held = (
            f"in a {type(value).__name__} at {place}"
            if isinstance(value, set | frozenset)
            else f"inside {place}, deeper than {_DEEPEST} levels of lists, tuples, deques and "
            "dicts,"
        )
        raise CheckpointError(
            f"{where}: a generator held {where_held} cannot be named in a checkpoint, so that "
            "loading would not find it again (and a resumed run would draw other numbers): hold "
            f"it in a list, tuple, deque or dict, at most {_DEEPEST} levels deep, or as an "
            "attribute"
        )
    assert isinstance(value, list | tuple | deque | dict)
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if _unplaced_generator(key) is not None:
            raise CheckpointError(
                f"{where}: a generator held in a key of the dict at {place} cannot be named in "
                "a checkpoint, so that loading would not find it again (and a resumed run "
                f"would draw other numbers): hold it in a list, tuple, deque or dict, at most "
                f"{_DEEPEST} levels deep, or as an attribute"
            )
        if isinstance(key, bool) or not isinstance(key, str | int):
            if _holds_generator(item, depth + 1):
                raise CheckpointError(
                    f"{where}: the generator held at {place}[{shown(key)}] cannot be named in a "
                    "checkpoint: one held in a dict is named by its key, which must be a str "
                    f"or an int, got {type(key).__name__}; hold it under such a key"
                )
            continue
        yield from _held_generators(where, item, f"{place}[{key!r}]", depth + 1)


def _check_module_generators(
    header: Mapping[str, Any], tensors: Mapping[str, Tensor], model: Module, where: str
) -> None:
    """When resuming: refuse a checkpoint holding the state of a module's own generator (a
    :class:`~minidl.nn.Dropout` built with one) where this model's module has none, and one
    whose saved model had none (its ``module_generators``) where this model's module has one.
    The reprs are the same, but the saved state would be dropped and the resumed run draw from
    torch's generator instead, or the other way round. (A module generator that the checkpoint
    does not know, as in the files of versions before they were saved, keeps its own state.)"""
    saved = sorted(name[len(_RNG_MODULE) :] for name in tensors if name.startswith(_RNG_MODULE))
    given = sorted(name[len(_RNG_MODULE) :] for name in _module_generators(where, model))
    missing = [name for name in saved if name not in given]
    if missing:
        raise CheckpointError(
            f"{where}: the saved model's modules {missing} (by path) drew from generators of "
            f"their own, whose states the checkpoint holds, but this model's have none "
            f"(modules with one: {given}); build them as when the checkpoint was saved, "
            "e.g. Dropout(p, generator=torch.Generator())"
        )
    recorded = header.get("module_generators")  # (not in checkpoints of older versions)
    # (a generator in another attribute than `generator`, which versions before saved none
    # of, keeps its own state where the checkpoint does not know it)
    plain = sorted(
        name[len(_RNG_MODULE) :] for name in _module_generators(where, model, others=False)
    )
    added = [name for name in plain if recorded is not None and name not in recorded]
    if added:
        raise CheckpointError(
            f"{where}: this model's modules {added} (by path) draw from generators of their "
            "own, but the saved model's drew from torch's generator (modules with one: "
            f"{recorded}); build them as when the checkpoint was saved, without a generator"
        )


def _cuda_devices(model: Module) -> list[int]:
    """The indices of the GPUs holding ``model``'s parameters or buffers."""
    tensors = [*model.state_dict().values()]
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


def architecture(model: Module) -> dict[str, Any]:
    """What a checkpoint records of a model's architecture: the names, shapes and dtypes of its
    state (parameters and buffers, as :meth:`~minidl.nn.Module.state_dict` names them) and its
    ``repr``.

    Raises:
        TypeError: ``model`` is not a minidl Module.
        ValueError: an attribute of a buffer's name holds another object than the registered
            buffer (see :meth:`~minidl.nn.Module.register_buffer`).
    """
    if not isinstance(model, Module):
        raise TypeError(f"architecture: model must be a minidl Module, got {given_module(model)}")
    model._check_buffer_attributes("architecture", "architecture")
    return {
        "parameters": [
            [name, list(value.shape), str(value.dtype).removeprefix("torch.")]
            for name, value in model.state_dict().items()
        ],
        "repr": repr(model),
    }


def _require_safetensors(where: str) -> None:
    """Raise, naming ``where``, when the safetensors package is not installed: a checkpoint is
    a safetensors file, and the package is minidl's ``checkpoint`` extra, not a dependency of
    the library (``import safetensors`` would fail later with no word of either)."""
    require(
        "safetensors", f"{where}: a checkpoint is a safetensors file", module="safetensors.torch"
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    model: Module,
    optimizer: Optimizer | None = None,
    scheduler: LRScheduler | None = None,
    *,
    epoch: int = 0,
    history: History | None = None,
    generator: torch.Generator | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write the whole training state to ``path``, atomically.

    Args:
        path: the file to write (replaced atomically if it exists), a ``str`` or
            :class:`os.PathLike`; not a folder, nor a path ending in a separator or in
            ``.`` or ``..``, nor a device, FIFO or socket (``/dev/null``: the rename would
            replace it with a file). A symbolic link is followed: its target is replaced (a
            loop of links, which has none, is refused).
        model: the network; its parameter values and buffers (its state_dict) are saved.
        optimizer: the optimizer, if any (its :meth:`~minidl.optim.Optimizer.state_dict`),
            updating some of ``model``'s parameters and no others (the values of parameters
            outside ``model`` would not be saved: refused).
        scheduler: the learning-rate scheduler of ``optimizer``, if any (its ``state_dict``
            and ``repr``); required where a schedule alive sets ``optimizer``'s rate (the last
            one built on it: a resumed run without its state would start it over).
        epoch: epochs completed so far, an integer >= 0.
        history: the curves so far, a :class:`~minidl.train.History` of lists of numbers
            (``train_loss``, ``validation_error`` and ``lr`` of one length, its epochs)
            holding no more epochs than ``epoch`` (unless ``epoch`` is 0), which
            :func:`~minidl.train.fit` resumes from (``start_epoch=epoch``).
        generator: the data-shuffling generator, if any (its ``get_state()``). torch's global
            generator state is always saved, and so are the states of the model's modules'
            generators and of the default CUDA generator of each GPU the model is on.
        extra: a mapping with string keys of JSON-serialisable values to keep with the
            checkpoint (e.g. the run's settings): numbers, strings, bools, ``None``, and lists,
            tuples and mappings of them (any mapping; a value of another type, a NumPy integer
            say, is refused naming where it is); mappings inside it need string keys too, and
            it nests arrays and objects 100 levels deep at most (itself the first). Read back
            as JSON gives it: a tuple as a list, another mapping as a ``dict``.

    Raises:
        CheckpointError: bad arguments, or a state that cannot be serialised.
        OSError: the file cannot be written (the previous file, if any, is untouched).
        ModuleNotFoundError: the safetensors package, minidl's ``checkpoint`` extra, is not
            installed.
    """
    _require_safetensors("save_checkpoint")
    from safetensors import SafetensorError
    from safetensors.torch import save as safetensors_save

    where = "save_checkpoint"
    _check_components(where, model, optimizer, scheduler, generator)
    _check_model_attributes(where, model, "state_dict")
    _check_not_meta(where, model, "there is nothing to save")
    # What load_checkpoint (and fit) refuse: a scheduler saved with another optimizer's state,
    # or with none, would be restored onto an optimizer it never scheduled.
    if scheduler is not None and optimizer is None:
        raise CheckpointError(
            f"{where}: a scheduler is saved with its optimizer; give the optimizer too"
        )
    if scheduler is not None and scheduler.optimizer is not optimizer:
        raise CheckpointError(f"{where}: the scheduler given schedules another optimizer")
    _check_updates_model(where, model, optimizer)
    live = None
    if scheduler is None and optimizer is not None and scheduling(optimizer) is not None:
        # (one let go of that is in a reference cycle, a SequentialSchedule with its
        # schedules, is gone once collected)
        gc.collect()
        live = scheduling(optimizer)
    if live is not None:
        # (resumed without its state, the schedule would start over at its first rate, and
        # load_checkpoint could not tell: the file would hold no scheduler)
        raise CheckpointError(
            f"{where}: the optimizer is scheduled by the {type(live).__name__} built on it, "
            "which is not given; pass it (scheduler=...), so that a resumed run goes on with "
            "its rates rather than start the schedule over (a schedule no longer used is let "
            "go of with del)"
        )
    # (a NumPy integer is one, as fit's start_epoch takes it: np.argmin(errors) + 1, say)
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise CheckpointError(f"{where}: epoch must be an integer >= 0, got {shown(epoch)}")
    epoch = int(epoch)
    history = History() if history is None else history
    _check_history(history, where)
    recorded = len(history.train_loss)
    if 0 < epoch < recorded:  # (what fit refuses to resume from, once the checkpoint is needed)
        raise CheckpointError(
            f"{where}: history holds {recorded} epochs, past epoch {epoch} (the epochs "
            f"completed): fit would refuse to resume from it, as epochs {epoch} to "
            f"{recorded - 1} would be recorded a second time; pass epoch={recorded} (in "
            "on_epoch: record.epoch + 1)"
        )
    if extra is not None:
        if not isinstance(extra, Mapping):
            raise CheckpointError(
                f"{where}: extra must be a mapping with string keys, got {type(extra).__name__}"
            )
        if _nested_deeper(extra, _MAX_NESTING):
            raise CheckpointError(
                f"{where}: extra holds arrays or objects nested more than {_MAX_NESTING} levels "
                "deep (extra itself the first), which a checkpoint does not keep (reading it back "
                "would exceed Python's recursion limit)"
            )
        _check_extra_keys(extra, "extra", where)
    _check_file_path(path, where)
    if Path(path).is_dir():
        raise CheckpointError(f"{where}: {os.fspath(path)!r} is a folder; give a file path")
    folder = Path(path).parent
    # (the errors Python gives for them, with messages that say so)
    file = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if file is not None:
        raise NotADirectoryError(
            f"{where}: cannot write {os.fspath(path)!r}: {os.fspath(file)!r} is not a folder"
        )
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{where}: cannot write {os.fspath(path)!r}: the folder {os.fspath(folder)!r} does "
            "not exist"
        )
    if is_link_loop(path):
        raise CheckpointError(
            f"{where}: {os.fspath(path)!r} is a loop of symbolic links (it leads to no file); "
            "give a file path (a checkpoint written there would replace the link with a file)"
        )
    target = Path(os.path.realpath(path))  # (what the write replaces: a link's target)
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"{where}: cannot write {os.fspath(path)!r}: it is a symbolic link to "
            f"{os.fspath(target)!r}, whose folder {os.fspath(target.parent)!r} does not exist"
        )
    kind = special_file_kind(path)
    if kind is not None:
        raise CheckpointError(
            f"{where}: {os.fspath(path)!r} is a {kind}, not a regular file; give a file path "
            "(a checkpoint is written to a new file renamed over the path, which would replace "
            f"the {kind})"
        )

    tensors: dict[str, Tensor] = {
        _MODEL + name: value.detach().to("cpu").contiguous()
        for name, value in model.state_dict().items()
    }
    optimizer_header: dict[str, Any] | None = None
    if optimizer is not None:
        state = _state_of(where, "optimizer", optimizer)
        for name, tensor in state["state"].items():
            tensors[_OPTIMIZER + name] = tensor.detach().to("cpu").contiguous()
        for key, value in state["hyperparameters"].items():
            if not _json_value(value):
                raise CheckpointError(
                    f"{where}: the optimizer's hyper-parameter {key}={shown(value)} cannot be "
                    "written as JSON (a number, a string, a bool, None, or a list of them); "
                    f"keep it as one in {type(optimizer).__name__}"
                )
        optimizer_header = {
            "class": type(optimizer).__name__,
            "lr": state["lr"],
            "step_count": state["step_count"],
            "hyperparameters": state["hyperparameters"],
            "state": sorted(state["state"]),
            "shapes": state["shapes"],
            "parameters": _optimizer_parameters(model, optimizer),
        }
    scheduler_header: dict[str, Any] | None = None
    if scheduler is not None:
        scheduler_header = {
            "class": type(scheduler).__name__,
            "repr": repr(scheduler),
            "state": _state_of(where, "scheduler", scheduler),
            # (its reprs show an interval set by hand: see _restore_scheduler)
            "interval": scheduler.interval,
        }
    tensors[_RNG_TORCH] = torch.get_rng_state()
    if generator is not None:
        tensors[_RNG_GENERATOR] = generator.get_state()
    for name, module_generator in _module_generators(where, model).items():
        tensors[name] = module_generator.get_state()
    for index in _cuda_devices(model):
        tensors[f"{_RNG_CUDA}{index}"] = torch.cuda.get_rng_state(index)

    header: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "minidl_version": _minidl_version(),
        "torch_version": torch.__version__,
        "architecture": architecture(model),
        "optimizer": optimizer_header,
        "scheduler": scheduler_header,
        # (every module with a generator of its own, with a state or not: see
        # _check_module_generators)
        "module_generators": sorted(
            name[len(_RNG_MODULE) :] for name in _module_generators(where, model)
        ),
        "training": {
            "epoch": epoch,
            # (the state dict's count, checked and made an int: a NumPy integer set by hand
            # as step_count, which the optimizer takes, is no JSON number)
            "step": optimizer_header["step_count"] if optimizer_header is not None else 0,
            "history": {
                "train_loss": list(history.train_loss),
                "validation_error": list(history.validation_error),
                "lr": list(history.lr),
                "batch_lr": list(history.batch_lr),
            },
            "extra": _plain_extra(extra or {}),
        },
        "tensors": {},
    }
    for name, tensor in tensors.items():
        if not _round_trips(tensor.dtype):
            raise CheckpointError(
                f"{where}: the tensor {name!r} is {str(tensor.dtype).removeprefix('torch.')}, "
                "a dtype that safetensors cannot write and read back; convert it (or leave it "
                "out of the model's state) before saving"
            )
    digests = _digests(safetensors_save(tensors))
    header["tensors"] = {
        name: {
            "dtype": str(tensor.dtype).removeprefix("torch."),
            "shape": list(tensor.shape),
            "sha256": digests[name],
            "finite": _finite(tensor),
        }
        for name, tensor in tensors.items()
    }
    if _holds_a_long_integer(header):
        # (Python's JSON writer refuses one too, but not where a program raised the limit,
        # sys.set_int_max_str_digits: a file then written would be refused as corrupted)
        raise CheckpointError(
            f"{where}: the state cannot be written as JSON: it holds an integer of more than "
            f"{_MOST_DIGITS} digits, which Python's JSON reader refuses (see "
            "sys.get_int_max_str_digits), so that the checkpoint could not be loaded; keep such "
            "a number in extra as a string"
        )
    try:
        metadata = _dump_header(header)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: the state cannot be written as JSON: {error}") from None
    # safetensors refuses to write (and to read) a header over 100 MB, with a bare
    # SafetensorError "header too large": a long run's per-batch rates, or a large extra.
    size = len(metadata.encode())
    blob: bytes | None = None
    refusal = "header too large"
    if size <= _MAX_HEADER:
        try:
            blob = safetensors_save(tensors, metadata={"minidl": metadata})
        except SafetensorError as error:
            refusal = str(error)
    if blob is None:
        entries = ", ".join(f"{len(getattr(history, name))} {name}" for name in _HISTORY_FIELDS)
        extra_size = len(_canonical(header["training"]["extra"]).encode())
        raise CheckpointError(
            f"{where}: the checkpoint cannot be written ({refusal}): its JSON header holds "
            f"{size} bytes, and safetensors (as read_checkpoint) takes at most {_MAX_HEADER}; "
            f"the history holds {entries} entries and extra {extra_size} bytes of JSON: keep "
            "less of them"
        )
    try:
        _write_atomically(Path(path), blob)
    except OSError as error:
        _name_checkpoint(error, path)
        raise


def _state_of(where: str, name: str, part: Optimizer | LRScheduler) -> dict[str, Any]:
    """``part.state_dict()``, its refusal (a ``step_count`` set by hand to no count, a state
    tensor replaced by one of another shape) raised as a :class:`CheckpointError` of ``where``
    naming ``name``."""
    try:
        return part.state_dict()
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: the {name}'s state cannot be saved: {error}") from error


def _name_checkpoint(error: OSError, path: str | os.PathLike[str]) -> None:
    """Make ``path``, the checkpoint :func:`save_checkpoint` writes, the file that ``error``
    names, where it named the temporary file beside it (a folder that takes no file refuses
    that one first: ``[Errno 13] Permission denied: '/sys/.run.ckpt.56309e8cbdb0.tmp'`` named
    neither the path given nor the function) or none, with a note naming both; a rename's
    error, which names both files, is left as it is."""
    given = os.fspath(path)
    other = error.filename
    if (
        error.strerror is None  # (no error of the system's: its message is its own)
        or error.filename2 is not None
        or (other is not None and os.path.abspath(os.fspath(other)) == os.path.abspath(given))
    ):
        return
    error.filename = given
    if other is not None and os.path.abspath(os.fspath(other)) == os.path.realpath(given):
        # (a write's error, named by the target of the symbolic link given: see naming_file)
        add_note(error, f"save_checkpoint: {given!r} is a symbolic link to {os.fspath(other)!r}")
        return
    written = f"writing {os.fspath(other)!r}, " if other is not None else ""
    add_note(
        error,
        f"save_checkpoint: {written}the temporary file that replaces {given!r} once written "
        "in full",
    )


#: Whether safetensors writes, and reads back, a tensor of each dtype met so far.
_ROUND_TRIPS: dict[torch.dtype, bool] = {}


def _round_trips(dtype: torch.dtype) -> bool:
    """Whether safetensors writes a tensor of ``dtype`` and reads it back as one (tried once
    per dtype): it writes neither ``complex128`` nor the quantized dtypes, and writes
    ``float8_e8m0fnu`` where its loader, in some versions, cannot read it."""
    from safetensors import SafetensorError
    from safetensors.torch import load as safetensors_load
    from safetensors.torch import save as safetensors_save

    if dtype not in _ROUND_TRIPS:
        try:
            back = safetensors_load(safetensors_save({"t": torch.zeros(1, dtype=dtype)}))["t"]
            _ROUND_TRIPS[dtype] = back.dtype == dtype
        except (KeyError, ValueError, TypeError, RuntimeError, SafetensorError):
            _ROUND_TRIPS[dtype] = False
    return _ROUND_TRIPS[dtype]


def _finite(tensor: Tensor) -> bool:
    """Whether every value of ``tensor`` is finite (integers and bools always are; a complex
    value is where both its parts are). A float8 tensor is compared as float32: torch has no
    ``isfinite`` for most float8 dtypes."""
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return True
    if tensor.element_size() == 1:
        tensor = tensor.float()
    return bool(torch.isfinite(tensor).all())


def _check_extra_keys(value: object, name: str, where: str) -> None:
    """Refuse a mapping in ``extra`` (``name``: where it is) with a key that is not a string:
    JSON would turn it into one (``{1: 2}`` into ``{"1": 2}``), and the checkpoint would give
    back another ``extra`` than the one saved; and a value that JSON does not write (a NumPy
    integer, a set), naming where it is."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                inside = f" in {name} (JSON would make it a string)" if name != "extra" else ""
                raise CheckpointError(
                    f"{where}: extra must be a mapping with string keys, got the key {shown(key)}"
                    + inside
                )
            _check_extra_keys(item, f"{name}[{key!r}]", where)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_extra_keys(item, f"{name}[{index}]", where)
    elif not (value is None or isinstance(value, str | int | float)):
        kind = type(value)
        module = "" if kind.__module__ == "builtins" else kind.__module__.split(".")[0] + "."
        raise CheckpointError(
            f"{where}: {name} is of type {module}{kind.__qualname__}, which a checkpoint cannot "
            "keep: extra holds numbers, strings, bools, None, and lists, tuples and mappings "
            "of them (what JSON writes; convert it, e.g. int(value) or value.tolist())"
        )


def _plain_extra(value: object) -> object:
    """``extra`` (checked) with every mapping inside it a ``dict``, as JSON writes one (a
    ``MappingProxyType``, say, it does not)."""
    if isinstance(value, Mapping):
        return {key: _plain_extra(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_extra(item) for item in value]
    return value


#: The most digits of an integer that Python's JSON reader takes by default (4300: see
#: ``sys.get_int_max_str_digits``), whatever the limit of the program that saves.
_MOST_DIGITS = 4300
_FIRST_TOO_LONG = 10**_MOST_DIGITS


def _json_value(value: object) -> bool:
    """Whether ``value`` is what JSON writes and reads back as it is: a number, a string, a
    bool, ``None``, or a list or tuple of them (read back as a list)."""
    if isinstance(value, list | tuple):
        return all(_json_value(item) for item in value)
    return value is None or isinstance(value, str | int | float)


def _holds_a_long_integer(value: object) -> bool:
    """Whether ``value`` (a header) holds an integer of more than :data:`_MOST_DIGITS` digits,
    found level by level, without recursion (its nesting is checked before)."""
    level: list[object] = [value]
    seen: set[int] = set()
    while level:
        following: list[object] = []
        for item in level:
            if isinstance(item, int):
                if not -_FIRST_TOO_LONG < item < _FIRST_TOO_LONG:
                    return True
            elif isinstance(item, Mapping | list | tuple) and id(item) not in seen:
                seen.add(id(item))
                items = [*item.values()] if isinstance(item, Mapping) else item
                # (a list of floats alone, as a history's, passed over by its types, in C)
                kinds = set(map(type, items))
                if not kinds <= _SCALARS - {int}:
                    following += items
        level = following
    return False


def _nested_deeper(value: object, limit: int) -> bool:
    """Whether ``value`` nests mappings, lists and tuples more than ``limit`` levels deep
    (``value`` itself the first level, if it is one), found level by level, without
    recursion: a value that holds itself is deeper than any limit."""
    level: list[object] = [value]
    for depth in range(1, limit + 2):
        # (each container once a level: a value held many times is not walked many times)
        containers = {id(v): v for v in level if isinstance(v, Mapping | list | tuple)}
        if not containers:
            return False
        if depth > limit:
            return True
        level = []
        for container in containers.values():
            items = [*container.values()] if isinstance(container, Mapping) else container
            # (a list of numbers alone, as a history's, passed over by the set of its types,
            # found in C: a million per-batch rates in 20 ms rather than 400)
            if not set(map(type, items)) <= _SCALARS:
                level += [item for item in items if type(item) not in _SCALARS]
    return True  # (not reached: the loop returns at depth limit + 1)


def _check_nesting(value: object, limit: int, what: str, where: str) -> None:
    """Refuse a header (``what``: the minidl header or the wrapper of its digest) nesting
    arrays and objects deeper than ``limit`` levels, its own and an ``extra`` of
    :data:`_MAX_NESTING`, before anything else reads it (see :data:`_MAX_NESTING`)."""
    if _nested_deeper(value, limit):
        raise CheckpointError(
            f"{where}: the header is malformed (its {what} nests arrays or objects more than "
            f"{limit} levels deep: a checkpoint's extra nests {_MAX_NESTING} at most)"
        )


def _check_history(history: object, where: str) -> None:
    """Refuse a ``history`` that is not a :class:`History` of lists of numbers (what loading
    accepts back), or whose per-epoch curves differ in length (what fit refuses to resume
    from)."""
    if not isinstance(history, History):
        raise CheckpointError(
            f"{where}: history must be a minidl History, got {type(history).__name__}"
        )
    fault = history_fault(history)
    if fault is not None:
        kind, words = fault
        suffix = ": fit would refuse to resume from it" if kind is ValueError else ""
        raise CheckpointError(f"{where}: {words}{suffix}")


def _check_file_path(path: object, where: str) -> None:
    """Refuse a ``path`` that is not a ``str`` or path-like, or cannot name a file (empty,
    ending in a separator, or in ``.`` or ``..``: ``Path("new/")`` and ``Path("new/.")`` would
    silently write the file ``new``, which the path given then cannot read)."""
    _check_path_type(path, where)
    text = os.fspath(path)  # type: ignore[call-overload]
    if not text:
        raise CheckpointError(f"{where}: path is empty; give a file path")
    if text.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)):
        raise CheckpointError(
            f"{where}: {text!r} ends with a path separator (a folder); give a file path"
        )
    if os.path.basename(text) in (os.curdir, os.pardir):
        raise CheckpointError(
            f"{where}: {text!r} ends with {os.path.basename(text)!r} (a folder); give a file path"
        )


def _check_path_type(path: object, where: str, also: str = "") -> None:
    """Refuse a ``path`` that is not a ``str`` or a path-like of one, or that holds a NUL
    character (``also``: what else the function takes, for the message)."""
    if not isinstance(path, str | os.PathLike) or not isinstance(os.fspath(path), str):
        raise CheckpointError(
            f"{where}: path must be a str or os.PathLike{also}, got {type(path).__name__}"
        )
    if "\0" in os.fspath(path):  # (the OS's "embedded null byte" named neither)
        raise CheckpointError(
            f"{where}: path {os.fspath(path)!r} holds a NUL character, which no file name can hold"
        )


def _minidl_version() -> str:
    import minidl

    return str(minidl.__version__)


def _same_bits(first: Tensor, second: Tensor) -> bool:
    """Whether two tensors have the same dtype, shape and bits (a NaN equal to the same NaN,
    -0.0 not equal to 0.0), wherever they lie."""
    if first.dtype != second.dtype or first.shape != second.shape:
        return False
    if first.layout != second.layout or first.is_meta != second.is_meta:
        return False
    if first.is_meta or first.numel() == 0:  # (a meta tensor holds no bits to compare)
        return True
    if first.layout != torch.strided:  # (sparse: compared as dense, whose bits it stands for)
        first, second = first.to_dense(), second.to_dense()
    bits = [t.detach().cpu().reshape(-1).contiguous().view(torch.uint8) for t in (first, second)]
    return torch.equal(bits[0], bits[1])


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


def _dump_header(header: dict[str, Any]) -> str:
    body = _canonical(header)
    digest = hashlib.sha256(body.encode()).hexdigest()
    return _canonical({"header": header, "sha256": digest})


#: The most seconds :data:`_TEST_DELAY_ENV` may ask for (a test's whole run is shorter).
_MOST_TEST_DELAY = 3600.0


def _test_delay() -> float:
    """The seconds of :data:`_TEST_DELAY_ENV` (0 where it is unset or empty), read before
    anything is written: a value that is no number of seconds in ``[0, 3600]`` is refused in
    words naming the variable (it raised Python's ``could not convert string to float``, or
    ``time.sleep``'s error with the temporary file half written, or slept for ever)."""
    text = os.environ.get(_TEST_DELAY_ENV, "")
    if not text.strip():
        return 0.0
    try:
        delay = float(text)
    except ValueError:
        delay = math.nan
    if not 0.0 <= delay <= _MOST_TEST_DELAY:  # (NaN too)
        raise ValueError(
            f"save_checkpoint: the environment variable {_TEST_DELAY_ENV} (a hook of minidl's "
            f"crash tests) must be a number of seconds in [0, {_MOST_TEST_DELAY:g}], got "
            f"{shown(text)}; unset it"
        )
    return delay


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``. A symbolic
    link is followed: its target is replaced (renaming over the link would replace the link
    with a file, and leave the target as it was)."""
    delay = _test_delay()
    path = Path(os.path.realpath(path))
    folder = path.parent
    # The permissions of the file it replaces (a checkpoint made private stays so), or a new
    # file's usual ones.
    try:
        mode: int | None = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = None
    # (its name is known before it is made: an interrupt, Ctrl-C or SIGTERM, as it is made
    # or just after, before its descriptor is returned, finds it here and removes it)
    made: list[str] = []
    file: BinaryIO | None = None
    try:
        # (an interrupt between the descriptor's opening and its file object's would leave it
        # open for good, to a file removed: held back until the file object owns it)
        with holding_interrupts():
            file = os.fdopen(
                _create_temporary(folder, path.name, 0o666 if mode is None else mode, made), "wb"
            )
        temporary = made[-1]
        with naming_file(path), file:  # (a full disk's error names no file)
            if mode is not None and hasattr(os, "fchmod"):
                os.fchmod(file.fileno(), mode)  # (what the umask took away)
            half = len(data) // 2
            file.write(data[:half])
            if delay:
                file.flush()
                time.sleep(delay)
            file.write(data[half:])
            file.flush()
            os.fsync(file.fileno())
        if delay:
            time.sleep(delay)
        os.replace(temporary, path)
    except BaseException:
        if file is not None:  # (closed already, unless interrupted as the holding ended)
            file.close()
        for name in made:
            Path(name).unlink(missing_ok=True)
        raise
    _fsync_folder(folder)


def _create_temporary(folder: Path, name: str, mode: int, made: list[str]) -> int:
    """Create a new file ``.<name>.<random>.tmp`` in ``folder`` with the permissions ``mode``
    less the umask's (as ``open`` makes a new file), open for writing; return its descriptor.
    Its path is appended to ``made`` before it is created (and taken off again where the name
    is another file's), for the caller to remove it after an interrupt. (``tempfile.mkstemp``
    makes it private, and reading the umask to give a new file its usual permissions means
    setting it, for the whole process: a file that another thread made meanwhile got no
    umask.) The name is short whatever the file's: the longest names a folder takes would be
    refused as soon as a suffix were added to them."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        temporary = os.path.join(folder, f".{name[:40]}.{secrets.token_hex(6)}.tmp")
        made.append(temporary)
        try:
            return os.open(temporary, flags, mode)
        except FileExistsError:  # (another file's name: not ours to remove)
            made.pop()
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary file name in {os.fspath(folder)}")


def _read_regular_file(
    path: str | os.PathLike[str], check_head: Callable[[BinaryIO, int], None] | None = None
) -> bytes:
    """The bytes of the regular file at ``path``; anything else raises an ``OSError`` before
    a byte is read (a pipe would block for a writer, ``/dev/zero`` would fill the memory).
    Opened without blocking, so that opening a pipe returns at once. ``check_head`` is given
    the open file and its size first, to read its start and refuse a file that it shows to be
    no checkpoint, however large, before the whole is read (from its first byte).

    The descriptor is closed whatever happens: a file object refuses a folder's descriptor
    without closing it (one left open at every reading of a folder), and an interrupt (Ctrl-C,
    or SIGTERM under minidl's command line) between the opening and the file object's is held
    back until the file object owns it."""
    file: BinaryIO | None = None
    try:
        with holding_interrupts():
            descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            try:
                status = os.fstat(descriptor)
                mode = status.st_mode
                if stat.S_ISDIR(mode):
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
                if not stat.S_ISREG(mode):
                    raise OSError(errno.EINVAL, "no regular file: a device, pipe or socket")
                file = os.fdopen(descriptor, "rb")
            except BaseException:
                os.close(descriptor)
                raise
        with file:
            if check_head is not None:
                check_head(file, status.st_size)
                file.seek(0)
            return file.read()
    except BaseException:
        if file is not None:  # (closed already, unless interrupted as the holding ended)
            file.close()
        raise


def _fsync_folder(folder: Path) -> None:
    """Flush ``folder``'s entries (a file just renamed in it) to the disk, where folders can be
    opened. An interrupt (Ctrl-C, or SIGTERM under minidl's command line) is held back
    meanwhile: one between the opening and the ``try`` left the descriptor open for good."""
    with holding_interrupts():
        try:
            descriptor = os.open(folder, os.O_RDONLY)
        except OSError:  # e.g. Windows: folders cannot be opened
            return
        try:
            os.fsync(descriptor)
        except OSError:
            pass
        finally:
            os.close(descriptor)


# -- reading and checking -------------------------------------------------------------------------


def _parse_safetensors_header(
    data: bytes, where: str, file_size: int | None = None
) -> dict[str, Any]:
    """The JSON header of a safetensors blob, checked for the framing only; ``data`` may be the
    first bytes alone of a file of ``file_size`` bytes (default: ``len(data)``), up to its
    header's end."""
    length = len(data) if file_size is None else file_size
    if length < 8:
        # (as a longer file that is no safetensors file is refused: a short text file is
        # more likely no checkpoint than a truncated one)
        raise CheckpointError(
            f"{where}: not a safetensors file, or truncated ({length} bytes, fewer than the 8 "
            "that give the length of a safetensors header)"
        )
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(length - 8, _MAX_HEADER):
        raise CheckpointError(
            f"{where}: not a safetensors file, or truncated (header of {size} bytes in a file "
            f"of {length} bytes)"
        )
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"))
    except (ValueError, RecursionError) as error:  # (UnicodeDecodeError is a ValueError)
        raise CheckpointError(
            f"{where}: the safetensors header is corrupted ({_json_fault(error)})"
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{where}: the safetensors header is not a JSON object")
    return header


def _json_fault(error: ValueError | RecursionError) -> str:
    """What makes a JSON text unreadable, in words: Python's JSON parser refuses invalid JSON
    with a ``JSONDecodeError``, an integer of more than 4300 digits with a plain ``ValueError``
    and arrays or objects nested about a thousand deep with a ``RecursionError``."""
    if isinstance(error, RecursionError):
        return "its JSON is nested too deeply to be read"
    return str(error)


def _expected_size(data: bytes, framing: Mapping[str, Any]) -> int | None:
    """The file size the safetensors header describes, or ``None`` if it is malformed."""
    (size,) = struct.unpack("<Q", data[:8])
    try:
        ends = [
            int(entry["data_offsets"][1])
            for name, entry in framing.items()
            if name != "__metadata__"
        ]
    except (KeyError, TypeError, IndexError, ValueError, OverflowError):  # (int(Infinity))
        return None
    return 8 + int(size) + max(ends, default=0)


def _digests(blob: bytes) -> dict[str, str]:
    """SHA-256 of the bytes of every tensor of a safetensors blob, by name."""
    header = _parse_safetensors_header(blob, "checkpoint")
    (size,) = struct.unpack("<Q", blob[:8])
    start = 8 + size
    digests = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        digests[name] = hashlib.sha256(blob[start + begin : start + end]).hexdigest()
    return digests


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and verify the checkpoint at ``path`` without applying it to anything.

    Every check that does not need the model is made here: the file's framing, the header's
    digest, the format version, and every tensor's shape, dtype, digest and finiteness (the
    model's also as the architecture describes them).

    Raises:
        CheckpointError: a missing, truncated, corrupted, tampered or newer-format file, or a
            path that is no regular file (a device, FIFO or socket, which is not read).
        ModuleNotFoundError: the safetensors package, minidl's ``checkpoint`` extra, is not
            installed.
    """
    _require_safetensors("read_checkpoint")
    _check_path_type(path, "read_checkpoint")
    return _read_checkpoint(path, "read_checkpoint")


def _read_checkpoint(path: str | os.PathLike[str], caller: str) -> Checkpoint:
    """:func:`read_checkpoint` of a path of the right type, its refusals named by ``caller``
    (``read_checkpoint``, ``load_checkpoint``) and the path."""
    from safetensors import SafetensorError
    from safetensors.torch import load as safetensors_load
    from safetensors.torch import save as safetensors_save

    where = f"{caller}: checkpoint {os.fspath(path)!r}"
    kind = special_file_kind(path)
    if kind is not None:  # (reading a FIFO waits for a writer; /dev/zero never ends)
        raise CheckpointError(f"{where}: is a {kind}, not a regular file")
    if not os.fspath(path):  # (Path("") is the current folder)
        raise CheckpointError(f"{where}: cannot be read (the path is empty)")
    framing: dict[str, Any] = {}

    def check_head(file: BinaryIO, size: int) -> None:
        framing.update(_check_framing(_read_head(file, size), size, where))

    try:
        data = _read_regular_file(path, check_head)
    except OSError as error:
        raise CheckpointError(f"{where}: cannot be read ({error.strerror or error})") from None
    expected = _expected_size(data, framing)  # (again: the file may have changed meanwhile)
    if expected is not None and expected != len(data):
        raise CheckpointError(_size_fault(where, len(data), expected))
    try:
        tensors = safetensors_load(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError, KeyError) as error:
        raise CheckpointError(f"{where}: not a valid safetensors file ({error})") from None
    metadata = framing["__metadata__"]
    # A file that parses but is not byte for byte what minidl writes for its own content has
    # been altered (e.g. in the header's padding); refuse it.
    try:
        rewritten = safetensors_save(tensors, metadata=metadata)
    except (SafetensorError, ValueError, RuntimeError, TypeError) as error:
        raise CheckpointError(f"{where}: the file is corrupted ({error})") from None
    if rewritten != data:
        raise CheckpointError(f"{where}: the file is corrupted (its layout is not canonical)")
    header = _check_header(metadata["minidl"], where)
    _check_tensors(header, tensors, _digests(data), where)
    return Checkpoint(header=header, tensors=tensors)


def _read_head(file: BinaryIO, size: int) -> bytes:
    """The first bytes of a file of ``size`` bytes that :func:`_check_framing` checks: the
    safetensors header's length field, then the header where the field describes one that the
    file can hold, else one byte (which tells a pickle from a safetensors file cut off in its
    header)."""
    head = file.read(8)
    length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
    return head + file.read(length if length <= min(size - 8, _MAX_HEADER) else 1)


def _check_framing(head: bytes, size: int, where: str) -> dict[str, Any]:
    """The safetensors header of a file of ``size`` bytes, from its first bytes ``head`` (its
    length field and its header, or as much of them as the file holds), checked before the
    rest is read: its framing, the file's size that it describes, and minidl's header in its
    metadata. A file of another program (a pickle, a model's weights of some gigabytes in a
    safetensors file) is refused without reading its tensors."""
    try:
        framing = _parse_safetensors_header(head, where, size)
    except CheckpointError:
        # (a safetensors file whose header size starts with the byte 0x80, cut off inside its
        # JSON header, is no pickle: its JSON starts at byte 8)
        pickled = head[:1] == b"\x80" and size > 8 and head[8:9] != b"{"
        if pickled or head[:4] == b"PK\x03\x04":
            raise CheckpointError(
                f"{where}: not a safetensors file: it looks like a pickle or torch.save file, "
                "which minidl never loads (unpickling can run arbitrary code)"
            ) from None
        raise
    expected = _expected_size(head, framing)
    if expected is not None and expected != size:
        raise CheckpointError(_size_fault(where, size, expected))
    metadata = framing.get("__metadata__")
    if not isinstance(metadata, dict) or "minidl" not in metadata:
        raise CheckpointError(f"{where}: not a minidl checkpoint (no 'minidl' header)")
    return framing


def _foreign_file_size(path: str | os.PathLike[str]) -> int | None:
    """The size of the file at ``path``, which a checkpoint would replace, where it is no
    minidl checkpoint (by its first bytes, as :func:`read_checkpoint` first checks them);
    ``None`` for a minidl checkpoint, an empty file, or one that cannot be read (missing, no
    permission: the save's own checks tell)."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size == 0:
                return None
            head = _read_head(file, size)
    except (OSError, ValueError):
        return None
    try:
        _check_framing(head, size, "")
    except CheckpointError:
        return size
    return None


def _size_fault(where: str, size: int, expected: int) -> str:
    """The message for a file of ``size`` bytes whose header describes ``expected`` (as
    shown: a data offset of the file's JSON may have thousands of digits)."""
    what = "truncated" if expected > size else "followed by extra bytes"
    return f"{where}: the file is {what} ({size} bytes, its header describes {shown(expected)})"


def _check_header(text: object, where: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise CheckpointError(f"{where}: the 'minidl' header is not a string")
    try:
        wrapper = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{where}: the header is corrupted ({_json_fault(error)})") from None
    _check_nesting(wrapper, _MAX_NESTING + 3, "JSON", where)  # (its wrapper, header, training)
    if (
        not isinstance(wrapper, dict)
        or set(wrapper) != {"header", "sha256"}
        or not isinstance(wrapper["header"], dict)
    ):
        raise CheckpointError(f"{where}: the header is corrupted (unexpected structure)")
    header: dict[str, Any] = wrapper["header"]
    if _canonical(wrapper) != text:
        raise CheckpointError(f"{where}: the header is corrupted (not canonical JSON)")
    digest = hashlib.sha256(_canonical(header).encode()).hexdigest()
    if digest != wrapper["sha256"]:
        raise CheckpointError(f"{where}: the header is corrupted (its SHA-256 does not match)")
    _check_header_content(header, where)
    return header


def _check_header_content(header: dict[str, Any], where: str) -> None:
    """Refuse a header (read from a file, or given to :class:`Checkpoint`) of another format, of
    a newer or invalid format version, or with a field missing or of the wrong kind."""
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{where}: not a minidl checkpoint (format {shown(header.get('format'))}, "
            f"expected {FORMAT!r})"
        )
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{where}: invalid format version {shown(version)}")
    if version > FORMAT_VERSION:
        # (as written where it is a version's text, else as shown, and a list or an object by
        # its kind: the file's JSON may hold anything there, a million characters or items)
        writer: Any = header.get("minidl_version")
        if not (isinstance(writer, str) and writer.isprintable() and len(writer) <= LONGEST_SHOWN):
            writer = (
                f"<a {type(writer).__name__}>" if isinstance(writer, list | dict) else shown(writer)
            )
        raise CheckpointError(
            f"{where}: format version {shown(version)} (written by minidl {writer}) is newer "
            f"than this minidl ({_minidl_version()}) "
            f"reads (format version {FORMAT_VERSION}); upgrade minidl"
        )
    try:
        _check_header_fields(header)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: the header is malformed ({error})") from None


def _check_header_fields(header: dict[str, Any]) -> None:
    """Check the presence and types of every header entry read later (a TypeError/ValueError
    names the field), and refuse a history that save_checkpoint does not write. The values a
    component checks itself when it loads them (the optimizer's ``lr`` and ``step_count``, the
    scheduler's state) are left to it."""

    def entry(container: dict[str, Any], key: str, name: str) -> Any:
        if key not in container:
            raise ValueError(f"{name}.{key} is missing" if name else f"{key} is missing")
        return container[key]

    def integer(value: object, name: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {shown(value)}")

    def mapping(value: object, name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise TypeError(f"{name} must be an object, got {type(value).__name__}")
        return value

    def string(value: object, name: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {type(value).__name__}")

    def shape(value: object, name: str) -> None:
        if not isinstance(value, list) or not all(
            isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in value
        ):
            raise TypeError(f"{name} must be a list of integers >= 0, got {shown(value)}")

    architecture = mapping(entry(header, "architecture", ""), "architecture")
    parameters = entry(architecture, "parameters", "architecture")
    if not isinstance(parameters, list):
        raise TypeError(f"architecture.parameters must be a list, got {type(parameters).__name__}")
    for index, parameter in enumerate(parameters):
        name = f"architecture.parameters[{index}]"
        if not isinstance(parameter, list) or len(parameter) != 3:
            raise TypeError(f"{name} must be a list [name, shape, dtype], got {shown(parameter)}")
        string(parameter[0], f"{name}'s name")
        shape(parameter[1], f"{name}'s shape")
        string(parameter[2], f"{name}'s dtype")
    string(entry(architecture, "repr", "architecture"), "architecture.repr")

    optimizer = entry(header, "optimizer", "")
    if optimizer is not None:
        mapping(optimizer, "optimizer")
        string(entry(optimizer, "class", "optimizer"), "optimizer.class")
        entry(optimizer, "lr", "optimizer")
        entry(optimizer, "step_count", "optimizer")
        mapping(entry(optimizer, "hyperparameters", "optimizer"), "optimizer.hyperparameters")
        state = entry(optimizer, "state", "optimizer")
        if not isinstance(state, list) or not all(isinstance(name, str) for name in state):
            raise TypeError(f"optimizer.state must be a list of names, got {shown(state)}")
        shapes = optimizer.get("shapes", [])  # (not in checkpoints of older versions)
        if not isinstance(shapes, list):
            raise TypeError(f"optimizer.shapes must be a list of shapes, got {shown(shapes)}")
        for index, saved_shape in enumerate(shapes):
            shape(saved_shape, f"optimizer.shapes[{index}]")
        names = optimizer.get("parameters", [])  # (not in checkpoints of older versions)
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise TypeError(f"optimizer.parameters must be a list of names, got {shown(names)}")
    generators = header.get("module_generators", [])  # (not in checkpoints of older versions)
    if not isinstance(generators, list) or not all(isinstance(name, str) for name in generators):
        raise TypeError(f"module_generators must be a list of paths, got {shown(generators)}")
    scheduler = entry(header, "scheduler", "")
    if scheduler is not None:
        mapping(scheduler, "scheduler")
        string(entry(scheduler, "class", "scheduler"), "scheduler.class")
        string(entry(scheduler, "repr", "scheduler"), "scheduler.repr")
        mapping(entry(scheduler, "state", "scheduler"), "scheduler.state")
        interval = scheduler.get("interval", "epoch")  # (not in checkpoints of older versions)
        if interval not in ("epoch", "batch") or not isinstance(interval, str):
            raise ValueError(
                f"scheduler.interval must be 'epoch' or 'batch', got {shown(interval)}"
            )

    training = mapping(entry(header, "training", ""), "training")
    integer(entry(training, "epoch", "training"), "training.epoch")
    integer(entry(training, "step", "training"), "training.step")
    history = mapping(entry(training, "history", "training"), "training.history")
    if set(history) != set(_HISTORY_FIELDS):
        raise ValueError(f"training.history has the entries {shown(sorted(history))}")
    for name, values in history.items():
        if not isinstance(values, list) or not all(
            isinstance(v, float | int) and not isinstance(v, bool) for v in values
        ):
            raise TypeError(f"training.history.{name} must be a list of numbers")
    # What save_checkpoint refuses to write, as fit refuses to resume from it.
    lengths = [len(history[name]) for name in _HISTORY_FIELDS[:3]]
    if len(set(lengths)) > 1:
        raise ValueError(
            "training.history must hold as many epochs in train_loss, validation_error and lr, "
            f"got {lengths[0]}, {lengths[1]} and {lengths[2]}"
        )
    if 0 < training["epoch"] < lengths[0]:
        raise ValueError(
            f"training.history holds {lengths[0]} epochs, past training.epoch "
            f"{shown(training['epoch'])}"
        )
    mapping(entry(training, "extra", "training"), "training.extra")

    for name, tensor in mapping(entry(header, "tensors", ""), "tensors").items():
        # (a name longer than a message quotes, in a file not written by minidl, by its start)
        where = f"tensors.{name}" if len(name) <= LONGEST_TEXT else f"tensors[{shown(name)}]"
        mapping(tensor, where)
        string(entry(tensor, "dtype", where), f"{where}.dtype")
        shape(entry(tensor, "shape", where), f"{where}.shape")
        finite = entry(tensor, "finite", where)
        if not isinstance(finite, bool):
            raise TypeError(f"{where}.finite must be a boolean, got {type(finite).__name__}")
        string(entry(tensor, "sha256", where), f"{where}.sha256")


def _check_tensors(
    header: dict[str, Any], tensors: Mapping[str, Tensor], digests: Mapping[str, str], where: str
) -> None:
    expected: dict[str, Any] = header["tensors"]
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: tensors do not match the header: missing {missing}, unexpected {unexpected}"
        )
    for name, entry in expected.items():
        tensor = tensors[name]
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype != entry["dtype"]:
            raise CheckpointError(
                f"{where}: tensor {name!r} has dtype {dtype}, the header says {entry['dtype']}"
            )
        if list(tensor.shape) != entry["shape"]:
            raise CheckpointError(
                f"{where}: tensor {name!r} has shape {tuple(tensor.shape)}, the header says "
                f"{tuple(entry['shape'])}"
            )
        if digests[name] != entry["sha256"]:
            raise CheckpointError(
                f"{where}: tensor {name!r} is corrupted (its SHA-256 does not match the header)"
            )
        finite = _finite(tensor)
        # (minidl before 2026-12-07 called every complex tensor finite: such a file is read)
        if finite != entry["finite"] and not (tensor.is_complex() and entry["finite"]):
            raise CheckpointError(
                f"{where}: tensor {name!r} is "
                f"{'finite' if finite else 'not finite'}, the header says "
                f"{'finite' if entry['finite'] else 'not finite'}"
            )
    _check_model_tensors(header, tensors, where)


def _check_model_tensors(header: dict[str, Any], tensors: Mapping[str, Tensor], where: str) -> None:
    """Refuse model tensors other than those the header's architecture lists (one missing, or
    one it does not list), and one of another shape or dtype than it says."""
    # The model's tensors are those the architecture describes (it is what a model is checked
    # against): one of another dtype would be converted to the model's on loading.
    described = {
        name: (shape, dtype) for name, shape, dtype in header["architecture"]["parameters"]
    }
    # (each, buffers too: a model loads a state without an optional buffer, such as
    # BatchNorm1d's num_batches_tracked, keeping its own, where a checkpoint restores all)
    held = {name[len(_MODEL) :] for name in tensors if name.startswith(_MODEL)}
    missing = [_MODEL + name for name in described if name not in held]
    unexpected = sorted(_MODEL + name for name in held - described.keys())
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: the model's tensors do not match the header's architecture: missing "
            f"{missing}, unexpected {unexpected}"
        )
    for name, tensor in tensors.items():
        if name.startswith(_MODEL):
            shape, dtype = described[name[len(_MODEL) :]]
            own = str(tensor.dtype).removeprefix("torch.")
            if (list(tensor.shape), own) != (shape, dtype):
                raise CheckpointError(
                    f"{where}: tensor {name!r} is {own} of shape {tuple(tensor.shape)}, the "
                    f"header's architecture says {dtype} of shape {tuple(shape)}"
                )


# -- applying -------------------------------------------------------------------------------------


def _check_architecture(header: dict[str, Any], model: Module, where: str) -> None:
    saved = {name: (shape, dtype) for name, shape, dtype in header["architecture"]["parameters"]}
    own = {name: (shape, dtype) for name, shape, dtype in architecture(model)["parameters"]}
    if saved == own:
        # (without the addresses of default reprs, such as a function's that a module of
        # one's own shows: they differ between two processes, or two builds of the model)
        if without_addresses(header["architecture"]["repr"]) == without_addresses(repr(model)):
            return
        # The same tensors, other modules: an activation or a hyper-parameter differs.
        raise CheckpointError(
            f"{where}: the checkpoint is for another model: the parameters fit, the modules "
            f"differ.\n{_reprs_compared(header['architecture']['repr'], repr(model))}\n(to "
            "load the parameters alone into this model: "
            "model.load_state_dict(read_checkpoint(path).model_state))"
        )
    if (
        saved.keys() == own.keys()
        and all(saved[n][0] == own[n][0] for n in own)
        and without_addresses(header["architecture"]["repr"]) == without_addresses(repr(model))
    ):
        # Only dtypes differ: the same model, cast (a float64 copy for gradcheck, say). Named
        # are the dtypes of the tensors that differ, as parameters or buffers.
        cast = [name for name in own if saved[name] != own[name]]
        saved_dtypes = sorted({saved[name][1] for name in cast})
        own_dtypes = sorted({own[name][1] for name in cast})
        parameters = {name for name, _ in model.named_parameters()}
        kinds = {"parameters" if name in parameters else "buffers" for name in cast}
        tensors = " and ".join(sorted(kinds, reverse=True))
        # (a model's .to casts its floating-point tensors alone: a count of batches of another
        # integer dtype is registered again in the checkpoint's)
        counts = [
            name for name in cast if not (_floating(saved[name][1]) and _floating(own[name][1]))
        ]
        fixes = []
        if len(counts) < len(cast):
            fixes.append("cast the model to the checkpoint's dtype before loading (.to(dtype))")
        if counts:
            fixes.append(
                f"register {', '.join(counts)} again in the checkpoint's dtype "
                "(register_buffer; .to casts floating-point tensors alone)"
            )
        raise CheckpointError(
            f"{where}: the checkpoint's {tensors} are {', '.join(saved_dtypes)} and this "
            f"model's {', '.join(own_dtypes)} (the same names and shapes): "
            f"{' and '.join(fixes)}, or load the parameters alone, converted: "
            "model.load_state_dict(read_checkpoint(path).model_state)"
        )
    differences = []
    for name, (shape, dtype) in own.items():
        if name not in saved:
            differences.append(f"{name!r} is not in the checkpoint")
        elif saved[name] != (shape, dtype):
            differences.append(
                f"{name!r} has shape {tuple(saved[name][0])} ({saved[name][1]}) in the "
                f"checkpoint, {tuple(shape)} ({dtype}) in the model"
            )
    differences += [f"{name!r} is not in the model" for name in saved if name not in own]
    raise CheckpointError(
        f"{where}: the checkpoint is for another architecture: {'; '.join(differences)}.\n"
        f"checkpoint's model: {header['architecture']['repr']}\nthis model: {model!r}"
    )


def _floating(dtype: str) -> bool:
    """Whether ``dtype``, a dtype's name as :func:`architecture` writes it (``"float32"``), is
    a floating-point one (a name torch does not know, from another version, is not)."""
    kind = getattr(torch, dtype, None)
    return isinstance(kind, torch.dtype) and kind.is_floating_point


def _check_components(
    where: str, model: object, optimizer: object, scheduler: object, generator: object
) -> None:
    """Refuse arguments of the wrong kind, before anything is read or written."""
    if not isinstance(model, Module):
        raise CheckpointError(f"{where}: model must be a minidl Module, got {given_module(model)}")
    for name, value, kind, what in (
        ("optimizer", optimizer, Optimizer, "a minidl Optimizer"),
        ("scheduler", scheduler, LRScheduler, "a minidl LRScheduler"),
        ("generator", generator, torch.Generator, "a torch.Generator"),
    ):
        if value is not None and not isinstance(value, kind):
            raise CheckpointError(f"{where}: {name} must be {what}, got {given_component(value)}")
    if isinstance(scheduler, LRScheduler) and scheduler.superseded_by is not None:
        raise CheckpointError(
            f"{where}: the optimizer is scheduled by the {scheduler.superseded_by} built on it "
            f"after the {type(scheduler).__name__} given; give that one"
        )


def _check_model_attributes(where: str, model: Module, method: str) -> None:
    """Refuse, before anything is read or written, a model that computes with an attribute of a
    buffer's name holding another object than the registered buffer, which ``method``
    (``state_dict``, ``load_state_dict``) would save or load, or with a parameter or a child
    that it does not register (:func:`~minidl.nn.module.check_registered`), which ``method``
    would leave out: named by ``where``, the function called, not the method it calls."""
    try:
        model._check_buffer_attributes(method, where)
        check_registered(where, model)
    except ValueError as error:
        raise CheckpointError(str(error)) from None


def _check_not_meta(where: str, model: Module, what: str) -> None:
    """Refuse, before anything is read or written, a model with a tensor on the meta device,
    which holds shapes and no values: there would be nothing to save, or a load would change
    nothing (``copy_`` into a meta tensor does nothing) and still return. ``what`` says which."""
    on_meta = [name for name, p in model.named_parameters() if p.data.is_meta]
    on_meta += [name for name, buffer in model.named_buffers() if buffer.is_meta]
    if on_meta:
        shown = ", ".join(on_meta[:3]) + (
            f" and {len(on_meta) - 3} more" if len(on_meta) > 3 else ""
        )
        raise CheckpointError(
            f"{where}: the model's tensors ({shown}) are on the meta device, which holds shapes "
            f"and no values: {what}; build the model on the CPU or a GPU"
        )


def _check_updates_model(where: str, model: Module, optimizer: Optimizer | None) -> None:
    """Refuse an optimizer that updates none of ``model``'s parameters (one built on another
    model, or on this one before it was built again): its state is not this model's. Refuse
    one that also updates parameters outside ``model`` (a temperature of one's own, say): a
    checkpoint holds the model's parameter values only, so their optimizer state would be
    restored without their values, and the resumed run would not go on as the saved one."""
    if optimizer is None:
        return
    own = {id(p) for p in model.parameters()}
    view = _view_of_model(model, optimizer, own)
    if view is not None:
        # (what a stack's model_parameters and flat_model_parameters give: the updates reach
        # the model's values, but the state is not of parameters the checkpoint can name)
        raise CheckpointError(
            f"{where}: the optimizer updates {view}: a checkpoint names the state of the "
            "model's own parameters; build the optimizer on model.parameters()"
        )
    if not own & {id(p) for p in optimizer.params}:
        raise CheckpointError(f"{where}: the optimizer updates none of the model's parameters")
    outside = [
        f"params[{index}] of shape {tuple(p.data.shape)}"
        for index, p in enumerate(optimizer.params)
        if id(p) not in own
    ]
    if outside:
        raise CheckpointError(
            f"{where}: the optimizer also updates parameters that are not the model's "
            f"({', '.join(outside)}): a checkpoint holds the model's parameter values only, so "
            "theirs would not be saved and a resumed run would not go on as this one; register "
            "them in a module of the model (register_parameter)"
        )


def _view_of_model(model: Module, optimizer: Optimizer, own: set[int]) -> str | None:
    """The first parameter ``optimizer`` updates that is not one of ``model``'s but lies in
    the memory of one (a view of it), described with that parameter's name; ``None`` if none
    does."""
    named = [(name, parameter.data) for name, parameter in model.named_parameters()]
    for index, parameter in enumerate(optimizer.params):
        if id(parameter) in own:
            continue
        given = (f"params[{index}]", parameter.data)
        for name, data in named:  # (pair by pair: a stack's own parameters interleave)
            if first_overlap([(name, data), given]) is not None:
                return (
                    f"{given[0]} of shape {tuple(parameter.data.shape)}, a view of the "
                    f"model's parameter {name!r}, not the parameter itself"
                )
    return None


def _optimizer_parameters(model: Module, optimizer: Optimizer) -> list[str]:
    """The names in ``model`` of the parameters ``optimizer`` updates, in its order (a tied
    parameter by its first name, as :meth:`~minidl.nn.Module.named_parameters` gives it)."""
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    return [
        names.get(id(parameter), f"<params[{index}], not named by the model>")
        for index, parameter in enumerate(optimizer.params)
    ]


def _check_optimizer(
    header: dict[str, Any],
    tensors: Mapping[str, Tensor],
    model: Module,
    optimizer: Optimizer | None,
    where: str,
) -> None:
    saved = header["optimizer"]
    if optimizer is None:
        return
    if saved is None:
        raise CheckpointError(f"{where}: the checkpoint has no optimizer state")
    if saved["class"] != type(optimizer).__name__:
        raise CheckpointError(
            f"{where}: the checkpoint is for optimizer {saved['class']}, got "
            f"{type(optimizer).__name__}"
        )
    if sorted(saved["state"]) != sorted(optimizer.state):
        raise CheckpointError(
            f"{where}: the checkpoint's {saved['class']} has state {sorted(saved['state'])}, this "
            f"one {sorted(optimizer.state)} (e.g. momentum on in one and off in the other)"
        )
    shapes = [list(parameter.data.shape) for parameter in optimizer.params]
    names = _optimizer_parameters(model, optimizer)
    if "shapes" in saved and saved["shapes"] != shapes:
        # (and, where the checkpoint names them, which parameters one updates and the other
        # does not: a bias left out, in a model of many layers, is found)
        differences = []
        if "parameters" in saved:
            left_out = [name for name in saved["parameters"] if name not in names]
            added = [name for name in names if name not in saved["parameters"]]
            if left_out:
                differences.append(f"this one leaves out {left_out}")
            if added:
                differences.append(f"this one updates {added}, which it does not")
        raise CheckpointError(
            f"{where}: the checkpoint's {saved['class']} updates parameters of shapes "
            f"{[tuple(shape) for shape in saved['shapes']]}, this one "
            f"{[tuple(shape) for shape in shapes]}"
            + (f" ({'; '.join(differences)})" if differences else "")
        )
    # Parameters of the same shapes elsewhere in the model (one layer's momentum given to
    # another's); not in checkpoints of older versions.
    if "parameters" in saved and saved["parameters"] != names:
        raise CheckpointError(
            f"{where}: the checkpoint's {saved['class']} updates the model's parameters "
            f"{saved['parameters']}, this one {names} (of the same shapes: the state of one "
            "would be given to another); build it on the parameters it was built on"
        )
    # The state is kept in its parameters' dtype: one of another dtype (a tampered file) would
    # be converted on loading, and the run would not go on as saved.
    dtype = optimizer.params[0].data.dtype
    for name in saved["state"]:
        tensor = tensors.get(_OPTIMIZER + name)
        if tensor is None:
            raise CheckpointError(
                f"{where}: the checkpoint's {saved['class']} has state {name!r} in its header, "
                f"but no tensor {_OPTIMIZER + name!r}"
            )
        if tensor.dtype != dtype:
            raise CheckpointError(
                f"{where}: the checkpoint's {saved['class']} state {name!r} is "
                f"{str(tensor.dtype).removeprefix('torch.')}, this one's parameters are "
                f"{str(dtype).removeprefix('torch.')}"
            )


def _check_scheduler(
    header: dict[str, Any],
    scheduler: LRScheduler | None,
    optimizer: Optimizer | None,
    where: str,
) -> None:
    if optimizer is None:
        if scheduler is not None:
            raise CheckpointError(
                f"{where}: a scheduler is restored with its optimizer; give the optimizer too"
            )
        return  # the model alone (e.g. to evaluate it): the training state is left unused
    if scheduler is not None and scheduler.optimizer is not optimizer:
        raise CheckpointError(f"{where}: the scheduler given schedules another optimizer")
    saved = header["scheduler"]
    name = type(scheduler).__name__ if scheduler is not None else None
    saved_name = saved["class"] if saved is not None else None
    if name != saved_name:
        raise CheckpointError(
            f"{where}: the checkpoint was saved with scheduler {saved_name}, got {name}"
        )


#: The most lines of a model's repr that a refusal shows whole; of longer ones, the lines that
#: differ.
REPR_LINES_SHOWN = 12


def _reprs_compared(saved: str, own: str) -> str:
    """The two reprs of a model, the checkpoint's and this one's, for a refusal: whole where
    both are short, else the lines that differ (a unified diff without context: in a network
    of 60 modules, the one that differs)."""
    if max(saved.count("\n"), own.count("\n")) < REPR_LINES_SHOWN:
        return f"checkpoint's model: {saved}\nthis model: {own}"
    lines = difflib.unified_diff(
        without_addresses(saved).splitlines(),
        without_addresses(own).splitlines(),
        "checkpoint's model",
        "this model",
        n=0,
        lineterm="",
    )
    return "the lines of their reprs that differ:\n" + "\n".join(lines)


def _same_settings(saved: Mapping[str, Any], given: str, *, rates: bool = True) -> bool:
    """Whether the saved scheduler's ``repr`` is ``given``, a scheduler's. A checkpoint written
    before the reprs of ``StepDecay``, ``CyclicLR`` and ``OneCycle`` showed an interval set by
    hand (one without ``"interval"``) cannot tell it: their intervals are left out of
    ``given`` there, as they were. ``rates=False`` leaves the ``base_lr`` of each schedule out
    of both (state, which a load restores: ``given`` before a load that failed holds the
    scheduler's own)."""
    if "interval" not in saved:
        given = _SET_INTERVAL.sub(r"\1)", given)
    mine, theirs = without_addresses(saved["repr"]), without_addresses(given)
    if not rates:
        mine, theirs = _BASE_LR.sub("base_lr=", mine), _BASE_LR.sub("base_lr=", theirs)
    return mine == theirs


#: A schedule's ``base_lr`` in its ``repr`` (``StepDecay(step_size=2, gamma=0.5, base_lr=0.1)``).
_BASE_LR = re.compile(r"\bbase_lr=[^,)\]]*")


def _restore_scheduler(
    saved: dict[str, Any], scheduler: LRScheduler, given: str, where: str
) -> None:
    """Load the saved state into ``scheduler`` and check that it is then the saved schedule.

    A scheduler's constructor settings (``CyclicLR``'s ``max_lr``, ``StepDecay``'s
    ``step_size``, ...) are not in its state, which holds ``base_lr`` and ``last_step`` only
    (and a ``SequentialSchedule``'s, the ``base_lr`` of its schedules where one was set by
    hand): the state of a schedule with other settings would load into a mix of both. The ``repr``
    after loading (with the saved ``base_lr``, so a scheduler built on an optimizer at another
    learning rate is accepted) must be the saved one, and the interval the saved one (which a
    schedule of one's own with the default ``repr`` does not show). ``given`` is the
    scheduler's ``repr`` before loading. Raises ``CheckpointError`` naming both schedules, or
    what the scheduler raises for a state it refuses; the caller puts everything back.
    """
    # The interval is a setting, which no repr of one's own need show: compared apart (a
    # schedule saved stepping per batch would go on per epoch). Checkpoints of older versions
    # do not hold it.
    if "interval" in saved and saved["interval"] != scheduler.interval:
        raise CheckpointError(
            f"{where}: the checkpoint is for another scheduler: the settings differ (it stepped "
            f"once per {saved['interval']}, this one steps once per {scheduler.interval}; the "
            "interval is a setting, not restored from the checkpoint).\ncheckpoint's "
            f"scheduler: {saved['repr']}\nthis scheduler: {given}"
        )
    # (no local variable holds the scheduler's refusal: its traceback holds this frame and the
    # callers', so that one would make a cycle keeping the model, the optimizer and the
    # checkpoint's tensors until the cyclic collector runs)
    try:
        scheduler.load_state_dict(saved["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        # (the scheduler's own base_lr, restored by a load, is no setting: one built on an
        # optimizer at another rate refuses a bad saved state in its own words too)
        if _same_settings(saved, given, rates=False):
            raise
        message = str(error.args[0] if isinstance(error, KeyError) and error.args else error)
        reason = f"\n(this one refuses the saved state: {message})"
    else:
        if _same_settings(saved, repr(scheduler)):
            return
        reason = ""
    raise CheckpointError(
        f"{where}: the checkpoint is for another scheduler: the settings differ (its state "
        f"{sorted(saved['state'])} is restored from the checkpoint, the other settings must "
        f"match).\ncheckpoint's scheduler: {saved['repr']}\nthis scheduler: {given}{reason}"
    )


def _restore_generator(
    where: str,
    generator: str,
    entry: str,
    tensors: Mapping[str, Tensor],
    own: Tensor,
    set_state: Callable[[Tensor], object],
) -> None:
    """Give a generator (``generator`` names it) the state of the checkpoint's ``entry`` with
    ``set_state``; a state it refuses (one of another size or kind: a tampered file, or a
    checkpoint built by hand) is refused naming the generator, the entry, the state given and
    its own state ``own`` (what it takes), and torch's words, which name neither. The caller
    puts everything back."""
    state = tensors[entry]
    try:
        set_state(state)
    except (RuntimeError, TypeError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    else:
        return
    # (raised here, outside the except block: no refusal of torch's, whose traceback holds the
    # caller's frame, is kept as this one's context)
    raise CheckpointError(
        f"{where}: the saved state was refused: {generator} refused the checkpoint's {entry!r}, "
        f"{_described(state)}; expected a state like its own, {_described(own)} (torch: "
        f"{reason})"
    )


def _described(tensor: Tensor) -> str:
    """``tensor``'s dtype, shape and device, in words."""
    dtype = str(tensor.dtype).removeprefix("torch.")
    return f"a {dtype} tensor of shape {tuple(tensor.shape)} on {tensor.device}"


def _optimizer_backup(optimizer: Optimizer) -> tuple[dict[str, Any], object]:
    """``optimizer.state_dict()`` and its ``step_count`` as it is, which :func:`load_checkpoint`
    puts back should the load go wrong. A step count set by hand to no integer >= 0 (2.5),
    which ``state_dict`` refuses and the load replaces, does not stop the load: the state
    dict is taken with 0 in its place, and the count put back as it was."""
    count = optimizer.step_count
    try:
        check_step_count("", "", count)
    except (TypeError, ValueError):
        try:
            optimizer.step_count = 0  # (inside: an interrupt before it leaves the count as is)
            return optimizer.state_dict(), count
        finally:
            optimizer.step_count = count
    return optimizer.state_dict(), count


def load_checkpoint(
    path: str | os.PathLike[str] | Checkpoint,
    model: Module,
    optimizer: Optimizer | None = None,
    scheduler: LRScheduler | None = None,
    *,
    generator: torch.Generator | None = None,
) -> TrainingState:
    """Restore a training run from ``path`` (or an already read :class:`Checkpoint`).

    With an optimizer (resuming training), the parameters, the optimizer's and scheduler's
    state, torch's global generator, the modules' generators, the default CUDA generator of
    each GPU the model is on, and (if given) the data generator are restored, so that training
    continues bit-identically. Without one (loading the model alone, e.g. to evaluate it), only
    the parameters (and the data generator, if given) are: the other generators are left
    alone. A module generator or GPU that the checkpoint holds no state for (a checkpoint of an
    earlier minidl version, or of a model on the CPU) keeps its own; a module generator where
    the saved module drew from torch's generator (it had none) is refused when resuming. Every
    check runs before anything is written; on any failure everything is left as it was.

    The optimizer's hyper-parameters and learning rate are restored from the checkpoint (the
    saved ones win, as in PyTorch's optimizers: also a rate set after the schedule's last step,
    which the schedule would have replaced only at its next step); a scheduler's settings are
    not in its state, so a scheduler of the saved class with other settings (``repr``, once its
    ``base_lr`` is restored) is refused.

    Args:
        path: the checkpoint file, or a :class:`Checkpoint` from :func:`read_checkpoint`.
        model: a model of the saved architecture.
        optimizer: the optimizer to restore (of the saved class, updating some of
            ``model``'s parameters and no others, as when saved), or ``None`` to restore the
            model alone (e.g. to evaluate it; the optimizer's and scheduler's state and torch's
            global generator state are then left unused).
        scheduler: the scheduler of ``optimizer`` to restore, of the saved class and settings;
            with an optimizer, it must be given exactly when one was saved (resuming without it
            would lose the schedule).
        generator: the data generator to restore (the file must hold one). With an
            optimizer, it must be given exactly when one was saved (the resumed run would
            otherwise shuffle from torch's global generator).

    Returns:
        The :class:`TrainingState`: epochs and steps completed, the history, ``extra``.

    Raises:
        CheckpointError: an unreadable, corrupted, newer or mismatched checkpoint.
        ModuleNotFoundError: the safetensors package, minidl's ``checkpoint`` extra, is not
            installed.
    """
    if not isinstance(path, Checkpoint):
        _check_path_type(path, "load_checkpoint", " (or a Checkpoint from read_checkpoint)")
    # The arguments first, then the file (a model of the wrong kind is named as such, whatever
    # the file holds, and without its path).
    _check_components("load_checkpoint", model, optimizer, scheduler, generator)
    _check_model_attributes("load_checkpoint", model, "load_state_dict")
    _check_not_meta("load_checkpoint", model, "loading would put nothing in them")
    _check_updates_model("load_checkpoint", model, optimizer)
    if optimizer is not None:
        # (what its load_state_dict below would refuse of the optimizer as it is, a state of
        # other names or a state tensor replaced by hand, in its words: not the file's fault)
        try:
            optimizer._check_state_held("load_state_dict")
        except (TypeError, ValueError) as error:
            add_note(error, "load_checkpoint asked the optimizer before reading the file")
            raise
    if not isinstance(path, Checkpoint):
        _require_safetensors("load_checkpoint")
    checkpoint = path if isinstance(path, Checkpoint) else _read_checkpoint(path, "load_checkpoint")
    where = (
        "load_checkpoint"
        if isinstance(path, Checkpoint)
        else f"load_checkpoint: checkpoint {os.fspath(path)!r}"
    )
    header, tensors = checkpoint.header, checkpoint.tensors
    try:
        if isinstance(path, Checkpoint):
            # (a tensor of it resized or re-typed in place since it was made: its name and
            # place are the same, read-only, but not its shape or dtype)
            _check_model_tensors(header, tensors, where)
        _check_architecture(header, model, where)
        _check_optimizer(header, tensors, model, optimizer, where)
        _check_scheduler(header, scheduler, optimizer, where)
        if generator is not None and _RNG_GENERATOR not in tensors:
            raise CheckpointError(f"{where}: the checkpoint holds no data-generator state")
        if generator is None and optimizer is not None and _RNG_GENERATOR in tensors:
            # (fit would shuffle from torch's global generator instead: another run)
            raise CheckpointError(
                f"{where}: the checkpoint holds the state of a data generator (the run saved "
                "shuffled with one), but none is given; give a torch.Generator (generator=...) "
                "to restore it into and pass it to fit, or the resumed run would shuffle from "
                "torch's global generator and not go on as the saved one"
            )
        if optimizer is not None and _RNG_TORCH not in tensors:
            raise CheckpointError(f"{where}: the checkpoint holds no state of torch's generator")
        if optimizer is not None:
            _check_module_generators(header, tensors, model, where)
        model_state = checkpoint.model_state
        optimizer_state: dict[str, Any] | None = None
        if optimizer is not None:
            saved = header["optimizer"]
            optimizer_state = {
                "lr": saved["lr"],
                "step_count": saved["step_count"],
                "hyperparameters": saved["hyperparameters"],
                "state": {name: tensors[_OPTIMIZER + name] for name in saved["state"]},
            }
            if "shapes" in saved:
                optimizer_state["shapes"] = saved["shapes"]
        training = checkpoint.training
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{where}: the header is malformed ({error!r})") from None

    # Everything checkable is checked; apply, and undo it all should a component still refuse.
    # torch's global generator is part of the training state: restored only with an optimizer.
    resuming = optimizer is not None
    backup_model = model.state_dict()
    backup_optimizer = _optimizer_backup(optimizer) if optimizer is not None else None
    # (its attributes, and those of the schedules a SequentialSchedule holds: loading its
    # state_dict back would give each of them its base_lr, losing one set by hand)
    backup_scheduler = scheduler._saved() if scheduler is not None else None
    given_scheduler = repr(scheduler) if scheduler is not None else ""
    backup_rng = torch.get_rng_state() if resuming else None
    backup_generator = generator.get_state() if generator is not None else None
    # The modules' and the GPUs' generators, where the checkpoint holds their state.
    # (found when resuming only: loading the model alone leaves them, and how they are held,
    # alone)
    module_generators = (
        {
            name: module_generator
            for name, module_generator in _module_generators(where, model).items()
            if name in tensors
        }
        if resuming
        else {}
    )
    backup_modules = {name: g.get_state() for name, g in module_generators.items()}
    cuda_devices = [
        index for index in _cuda_devices(model) if resuming and f"{_RNG_CUDA}{index}" in tensors
    ]
    backup_cuda = {index: torch.cuda.get_rng_state(index) for index in cuda_devices}
    try:
        model.load_state_dict(model_state)
        if optimizer is not None and optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        if scheduler is not None:
            _restore_scheduler(header["scheduler"], scheduler, given_scheduler, where)
            if optimizer is not None and optimizer_state is not None:
                # Loading the scheduler set the rate of its step; the saved rate wins (they
                # differ where the rate was set after the schedule's last step).
                optimizer.lr = optimizer_state["lr"]
        if resuming and backup_rng is not None:
            _restore_generator(
                where,
                "torch's global generator",
                _RNG_TORCH,
                tensors,
                backup_rng,
                torch.set_rng_state,
            )
        if generator is not None and backup_generator is not None:
            _restore_generator(
                where,
                "the data generator given (generator=...)",
                _RNG_GENERATOR,
                tensors,
                backup_generator,
                generator.set_state,
            )
        for name, module_generator in module_generators.items():
            _restore_generator(
                where,
                f"the generator of the model's module {name[len(_RNG_MODULE) :]!r}",
                name,
                tensors,
                backup_modules[name],
                module_generator.set_state,
            )
        for index in cuda_devices:
            _restore_generator(
                where,
                f"the default CUDA generator of GPU {index}",
                f"{_RNG_CUDA}{index}",
                tensors,
                backup_cuda[index],
                functools.partial(torch.cuda.set_rng_state, device=index),
            )
    except BaseException as error:  # (also Ctrl-C, or what a component of one's own raises)
        # Put back in the reverse order: the scheduler's attributes, then the optimizer gets its
        # own back exactly, its lr too. (A generator shared by two modules, or with the data,
        # gets its state from before the load in every case.)
        for index, state in backup_cuda.items():
            torch.cuda.set_rng_state(state, index)
        for name, state in reversed(backup_modules.items()):
            module_generators[name].set_state(state)
        if generator is not None and backup_generator is not None:
            generator.set_state(backup_generator)
        if backup_rng is not None:
            torch.set_rng_state(backup_rng)
        if scheduler is not None and backup_scheduler is not None:
            scheduler._put_back(backup_scheduler)
        if optimizer is not None and backup_optimizer is not None:
            optimizer.load_state_dict(backup_optimizer[0])
            # (as it was, one set by hand too)
            optimizer.step_count = backup_optimizer[1]  # type: ignore[assignment]
        model.load_state_dict(backup_model)
        if isinstance(error, CheckpointError) or not isinstance(
            error, KeyError | TypeError | ValueError | RuntimeError
        ):
            raise
        # (its text, not the error: its traceback holds this frame, so that a local variable
        # holding it would make a cycle keeping the model, the optimizer, the checkpoint's
        # tensors and the backups until the cyclic collector runs)
        message = str(error.args[0] if isinstance(error, KeyError) and error.args else error)
        raise CheckpointError(f"{where}: the saved state was refused: {message}") from None
    return training
