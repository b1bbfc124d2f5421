"""Checks of hyper-parameters and data sets, shared by optimizers, schedulers and training loops,
and how their messages show values (the files that commands write: :mod:`minidl._files`)."""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import re
from typing import NoReturn

import torch
from torch import Tensor

__all__ = [
    "check_class_indices",
    "check_copyable",
    "check_cpu_generator",
    "check_dtype",
    "check_int",
    "check_labelled",
    "check_like",
    "check_real",
    "check_samples",
    "check_seed",
    "check_strided",
    "shown",
    "shown_path",
    "unavailable",
]

#: The seeds that ``torch.Generator.manual_seed`` takes (a negative seed s is the seed 2**64 + s).
SEED_RANGE = (-(2**63), 2**64 - 1)


#: The most digits of an integer that a message writes out (:func:`shown`), and the most
#: characters of the start of a longer text that it quotes.
LONGEST_SHOWN = 40
#: The most characters of a text (a ``str``) that a message quotes whole (:func:`shown`).
LONGEST_TEXT = 100
#: The most items of a tuple or list that a message writes out (:func:`shown`).
LONGEST_SHOWN_ITEMS = 20
#: The most characters of a path that a message names whole (:func:`shown_path`): Linux's
#: ``PATH_MAX``, the most bytes of a path that a system call takes (a longer one names no file).
LONGEST_PATH = 4096


def shown(value: object, *, _within: frozenset[int] = frozenset()) -> str:
    """``repr(value)`` for a message, but an integer of more than :data:`LONGEST_SHOWN` digits
    as its number of digits (``an int of 5001 digits``): written whole, hundreds of digits
    would bury the message, and past 4300 Python refuses to write it (``repr`` raises a
    ``ValueError`` of its own, in place of the message). A text (``str``) of more than
    :data:`LONGEST_TEXT` characters (an environment variable, a command-line flag) is quoted
    by its first :data:`LONGEST_SHOWN` and its length (``'11111...'... (a str of 5001
    characters)``). A tuple or list (a pair such as ``betas``, a list of sizes) is written
    with each item so (``(0.9, an int of 5001 digits)``), one of more than
    :data:`LONGEST_SHOWN_ITEMS` items by those first items and its length (a list of 100 000
    numbers as ``[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, ...
    (100000 items)]``). A tensor of more than :data:`LONGEST_SHOWN_ITEMS` elements (an input
    given where a setting goes, ``ReLU(x)`` for ``ReLU()(x)``) by its shape and dtype (``a
    tensor of shape (50, 8), torch.float32``). A fraction of terms beyond 40 digits is written
    with each term so (``Fraction(a negative int of 401 digits, 1)``), and another number whose
    ``repr`` is longer than :data:`LONGEST_TEXT` characters (a ``Decimal`` of 5000 digits) by
    the start of it and its length.
    """
    if isinstance(value, torch.Tensor) and not value.is_nested:
        if value.numel() > LONGEST_SHOWN_ITEMS:
            return f"a tensor of shape {tuple(value.shape)}, {value.dtype}"
        return repr(value)
    if isinstance(value, str):
        if len(value) <= LONGEST_TEXT:
            return repr(value)
        start = repr(str.__str__(value)[:LONGEST_SHOWN])
        return f"{start}... (a {type(value).__name__} of {len(value)} characters)"
    if type(value) in (tuple, list):  # (a pair of settings such as betas, a list of sizes)
        assert isinstance(value, tuple | list)
        if id(value) in _within:  # (a list that holds itself, as repr writes it)
            return "[...]" if type(value) is list else "(...)"
        inside = _within | {id(value)}
        parts = [shown(part, _within=inside) for part in value[:LONGEST_SHOWN_ITEMS]]
        if len(value) > LONGEST_SHOWN_ITEMS:
            parts.append(f"... ({len(value)} items)")
        if len(parts) == 1 and type(value) is tuple:
            return f"({parts[0]},)"
        return f"({', '.join(parts)})" if type(value) is tuple else f"[{', '.join(parts)}]"
    if isinstance(value, numbers.Rational) and not isinstance(value, int):
        # (a Fraction of huge terms: each term as an int is written, by its digits)
        numerator, denominator = value.numerator, value.denominator  # (a NumPy integer: itself, 1)
        if (
            isinstance(numerator, int)
            and isinstance(denominator, int)
            and max(abs(numerator), denominator).bit_length() > 132
        ):
            return f"{type(value).__name__}({shown(numerator)}, {shown(denominator)})"
    if isinstance(value, numbers.Number) and not isinstance(value, int):
        text = repr(value)  # (a Decimal of 5000 digits, say: its start and length)
        if len(text) <= LONGEST_TEXT:
            return text
        return f"{text[:LONGEST_SHOWN]}... (a {type(value).__name__} written in {len(text)} characters)"
    if not isinstance(value, int) or isinstance(value, bool):
        try:
            return repr(value)
        except ValueError:  # (a dict or set holding an int of more than 4300 digits)
            return "(not written: it holds an integer of more than 4300 digits)"
    if value.bit_length() <= 132:
        return repr(value)  # (below 2**132, 5.4e39: 40 digits at most)
    magnitude = abs(value)
    # The number of digits, from a lower bound of log10 (no conversion to a string).
    digits = int((magnitude.bit_length() - 1) * math.log10(2))
    while 10**digits <= magnitude:
        digits += 1
    if digits <= LONGEST_SHOWN:
        return repr(value)
    sign = "a negative" if value < 0 else "an"
    return f"{sign} {type(value).__name__} of {digits} digits"


def shown_typed(value: object) -> str:
    """:func:`shown` after the name of ``value``'s type (``float 'a'``, ``int 5``), but a tensor
    that :func:`shown` writes by its shape (``a tensor of shape (50, 8), torch.float32``)."""
    text = shown(value)
    return text if text.startswith("a tensor of shape") else f"{type(value).__name__} {text}"


def shown_path(path: str | os.PathLike[str]) -> str:
    """A path as a message names it: as it is (``runs/a.ckpt``), or quoted as ``repr`` quotes
    it where that would hide it or split the message's one line: empty, with white space at
    either end, or with a character that is not printable (``'a\\nb'``: a newline). A path of
    more than :data:`LONGEST_PATH` characters, which names no file, is quoted as :func:`shown`
    quotes a long text, by its start and length."""
    text = os.fspath(path)
    if len(text) > LONGEST_PATH:
        return shown(text)
    if text and text.strip() == text and text.isprintable():
        return text
    return repr(text)


def refuse_meta(where: str, subject: str, why: str) -> NoReturn:
    """Refuse data on the meta device, which holds shapes and no values, where numbers are
    computed from it: ``"{where}: {subject} on the meta device, which holds shapes and no
    values{why}"`` (``subject`` says what and its verb: ``"x and y are"``)."""
    raise ValueError(
        f"{where}: {subject} on the meta device, which holds shapes and no values{why}"
    )


#: The memory address in a default repr (``<function f at 0x7f...>``).
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


def without_addresses(text: str) -> str:
    """A ``repr`` without the memory addresses of default reprs (``<X object at 0x...>``), which
    differ between two objects of the same settings (in two processes, or two builds)."""
    return _ADDRESS.sub(">", text)


def unavailable(device: torch.device) -> str | None:
    """Why tensors cannot be made on ``device`` here (torch's words), or ``None`` if they can.

    A device type this build of torch lacks fails in several ways: ``"cuda"`` without CUDA with
    an ``AssertionError``, ``"mps"`` or ``"xla"`` with a ``NotImplementedError``, ``"hpu"`` with
    a ``ModuleNotFoundError``, a GPU index past the last with a ``RuntimeError``. Only the
    first sentence of torch's message is given: ``"mps"``'s goes on for some 7 000 characters
    (every backend of the dispatcher), which buried the reason.
    """
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ImportError) as error:
        lines = str(error).strip().splitlines()
        first = lines[0].strip() if lines else type(error).__name__
        return first.split(". ", 1)[0].removesuffix(".")
    return None


#: The dtypes minidl computes in. PyTorch's CPU kernels lack most of what a layer and an
#: optimizer run for the others that are floating point (float8's random fills, sums,
#: ``tanh``, ``addmv`` and ``add_``), so a layer made or cast in one would fail later in
#: PyTorch's words, without its name.
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: :data:`DTYPES` as the messages of a refusal name them.
TAKEN = (
    "torch.float16, torch.bfloat16, torch.float32 or torch.float64 (the dtypes minidl computes in)"
)
#: :data:`DTYPES` as a set, for the checks that every call makes (a lookup in it takes no longer
#: than ``Tensor.is_floating_point()``, which takes float8 tensors too).
COMPUTED = frozenset(DTYPES)
#: :data:`DTYPES` as the messages of a refused input or gradient name them.
FLOATING = "floating-point {what} of dtype float16, bfloat16, float32 or float64"


def plain_choice(value: object, choices: tuple[str, ...]) -> str | None:
    """``value``'s characters as a plain ``str`` where it is a ``str`` among ``choices``
    (``numpy.str_('sum')`` is ``'sum'``), else ``None``: a subclass's own ``__eq__`` or
    ``__str__`` is not asked, and an array is not compared (its ``==`` gives no one bool: a
    membership test of it raised numpy's "truth value of an array is ambiguous")."""
    if isinstance(value, str):
        plain = str.__str__(value)
        if plain in choices:
            return plain
    return None


def check_dtype(where: str, dtype: object) -> None:
    """Refuse a ``dtype`` that is not one of :data:`DTYPES` (an integer, complex or float8
    dtype, or no dtype at all), naming ``where``, the dtypes taken and what was given (a float8
    dtype is floating point: the message names the four, not "a floating-point dtype")."""
    if not isinstance(dtype, torch.dtype) or dtype not in DTYPES:
        raise TypeError(f"{where}: dtype must be {TAKEN}, got {shown(dtype)}")


def check_real(
    where: str,
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    bound: str = "",
) -> float:
    """Return ``value`` as a float after checking it is a finite real number in the given range.

    The message names the caller, the argument, the value and the allowed range, e.g.
    ``SGD: momentum must be in [0, 1), got 1.5``; ``bound`` follows the range where one of its
    ends is another setting, to name it (``"at least base_lr"``: ``CyclicLR: max_lr must be in
    [0.1, inf) (at least base_lr), got 0.01``). A value that is no real number (a string
    such as ``"0.1"``, a bool, a tensor) is a ``TypeError``, as in :func:`check_int`; a real
    number out of the range (NaN and the infinities too) is a ``ValueError``.
    """
    number = math.nan
    real = True
    if type(value) is float:  # (the usual case, without the numbers.Real check)
        number = value
    elif not isinstance(value, bool) and isinstance(value, numbers.Real):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float's range
            number = math.inf
    else:
        real = False
    finite = math.isfinite(number)
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if finite and not too_low and not too_high:
        return number
    # (the range is written out only for the message: a schedule sets the rate this checks at
    # every step)
    # An unbounded side is open: the value must be finite.
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    bounds = f"{left}{_fmt(low, '-inf')}, {_fmt(high, 'inf')}{right}"
    if bound:
        bounds = f"{bounds} ({bound})"
    if not real:
        raise TypeError(
            f"{where}: {name} must be a finite number in {bounds} (a float or an int), got "
            f"{shown_typed(value)}"
        )
    if not finite:
        raise ValueError(f"{where}: {name} must be a finite number in {bounds}, got {shown(value)}")
    raise ValueError(f"{where}: {name} must be in {bounds}, got {shown(value)}")


def check_int(where: str, name: str, value: object, *, low: int = 1) -> int:
    """Return ``value`` as an ``int`` after checking it is an integer ``>= low`` (a numpy integer
    is one; a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an integer >= {low}, got {shown(value)}")
    if value < low:
        raise ValueError(f"{where}: {name} must be an integer >= {low}, got {shown(value)}")
    return int(value)


def check_tensor_size(where: str, name: str, value: int) -> None:
    """Refuse an integer ``value`` past the largest size a tensor dimension can have (torch's
    sizes are 64-bit integers; it would fail with an overflow error of its own)."""
    if value > 2**63 - 1:
        raise ValueError(
            f"{where}: {name} must be at most 2**63 - 1 (the largest tensor size), got "
            f"{shown(value)}"
        )


def check_cpu_generator(where: str, name: str, generator: torch.Generator) -> None:
    """Refuse a generator (of the shuffles) that is not on the CPU: ``torch.randperm`` draws
    the orders on the CPU and would fail with it at the first epoch, after the checks."""
    device = generator.device
    if device.type != "cpu":
        raise ValueError(
            f"{where}: {name} must be a CPU torch.Generator (the shuffles are drawn on the CPU, "
            f"then moved to the data's device), got a generator on {device}"
        )


def check_seed(where: str, value: object) -> int:
    """Return ``value`` as an ``int`` after checking it is an integer (a NumPy one too, as the
    sizes take it; a bool is not) that ``torch.Generator.manual_seed`` takes."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: seed must be an int, got {shown(value)}")
    value = int(value)
    if not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise ValueError(
            f"{where}: seed must be in [-2**63, 2**64 - 1] (torch.Generator.manual_seed's "
            f"range), got {shown(value)}"
        )
    return value


def layout_name(tensor: Tensor) -> str:
    """A tensor's layout as a message names it: ``sparse_coo``, ``sparse_csr``, ``strided``,
    or ``nested`` for a nested tensor (whose layout is ``strided`` or ``jagged``)."""
    return "nested" if tensor.is_nested else str(tensor.layout).removeprefix("torch.")


def check_copyable(where: str, what: str, value: Tensor, target: Tensor) -> None:
    """Check that ``target.copy_(value)`` can work: ``value`` is dense and holds its values (a
    meta tensor holds none, unless ``target`` is on the meta device too), and is not nested."""
    if value.layout != torch.strided or value.is_nested or (value.is_meta and not target.is_meta):
        kind = "meta" if value.is_meta and not value.is_nested else layout_name(value)
        raise TypeError(
            f"{where}: {what} is a {kind} tensor; expected a dense tensor that holds its values"
        )


def check_strided(where: str, name: str, tensor: Tensor) -> None:
    """Refuse a sparse or nested ``tensor`` (named ``name``), before its shape is read: a
    strided nested tensor's fails in torch's "Internal error: NestedTensorImpl doesn't support
    sizes", and slices of a sparse one are not made."""
    if tensor.layout != torch.strided or tensor.is_nested:
        raise TypeError(
            f"{where}: {name} must be a dense (strided) tensor, got a {layout_name(tensor)} tensor"
        )


#: The unsigned integer dtypes past uint8, which torch's CPU kernels barely support: no
#: ``min``, ``aminmax`` or comparison with int64 (torch's "min_all" not implemented for 'UInt32').
_BARE_UNSIGNED = frozenset(
    # (getattr: torch before 2.3 has none of them)
    getattr(torch, name)
    for name in ("uint16", "uint32", "uint64")
    if hasattr(torch, name)
)


def check_samples(where: str, x: object, y: object) -> tuple[Tensor, Tensor]:
    """Check a set of samples and their targets: two dense tensors, each holding at least one
    sample, as many of them, on one device; return them.

    A sparse tensor (COO, CSR, ...) is refused here: the batches are slices, which torch does
    not make of one (it failed at the first pass with torch's "Could not run 'aten::as_strided'
    with arguments from the 'SparseCPU' backend")."""
    for name, tensor in (("x", x), ("y", y)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
        check_strided(where, name, tensor)
        if tensor.dim() == 0 or tensor.shape[0] == 0:
            raise ValueError(
                f"{where}: {name} must hold at least one sample, got shape {tuple(tensor.shape)}"
            )
    assert isinstance(x, Tensor) and isinstance(y, Tensor)  # (for the type checker)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{where}: x and y must hold as many samples, got {x.shape[0]} and {y.shape[0]}"
        )
    if x.device != y.device:
        raise ValueError(f"{where}: x and y must be on one device, got {x.device} and {y.device}")
    return x, y


#: What a refusal of class indices for a model of one output adds: its classes are read so.
ONE_LOGIT_HINT = (
    "a model of one output a sample (one logit, as BCEWithLogitsLoss trains) gives no score "
    "per class: its classes are (model(x) > 0).long()"
)


def check_class_indices(
    where: str,
    what: str,
    y: Tensor,
    classes: int | None = None,
    *,
    one_output_hint: str = ONE_LOGIT_HINT,
) -> None:
    """Check that ``y`` holds class indices: of an integer dtype, and in ``[0, classes)`` (only
    ``>= 0`` when ``classes`` is None: the model's number of classes is not known yet).
    ``one_output_hint`` ends the refusal where the model has one output (``classes == 1``).

    A float or out-of-range label never equals a predicted class, so that an error rate
    computed with it would silently count it wrong. ``what`` names the set as in
    :func:`check_labelled`. A sparse or nested ``y``, and one of ``torch.uint16``, ``uint32``
    or ``uint64``, on which torch's kernels compute no minimum, are refused by type.
    """
    check_strided(where, f"{what}y", y)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(
            f"{where}: {what}y must hold class indices of an integer dtype, got {y.dtype}"
        )
    if y.dtype in _BARE_UNSIGNED:
        raise TypeError(
            f"{where}: {what}y must hold class indices of a signed integer dtype or uint8 "
            f"(torch computes no minimum of {y.dtype}), got {y.dtype}; convert them with "
            "y.long()"
        )
    if y.is_meta or y.numel() == 0:  # no values to check
        return
    if classes is None:
        lowest = int(y.min())
        if lowest < 0:
            raise ValueError(f"{where}: {what}y must hold class indices >= 0, got {lowest}")
        return
    lowest, highest = (int(v) for v in torch.aminmax(y))
    if lowest < 0 or highest >= classes:
        # (one column: a binary classifier of one logit, whose argmax is class 0)
        hint = f"; {one_output_hint}" if classes == 1 else ""
        raise ValueError(
            f"{where}: {what}y must hold class indices in [0, {classes}) (the model's outputs "
            f"have {classes} column{'' if classes == 1 else 's'}), got "
            f"{lowest if lowest < 0 else highest}{hint}"
        )


def check_labelled(
    where: str, what: str, x: object, y: object, *, set_name: str | None = None
) -> tuple[Tensor, Tensor]:
    """Return ``(x, y)`` after checking it is a non-empty set of inputs ``(N, ...)`` and class
    indices ``(N,)``.

    ``what`` names the set in the messages, e.g. ``"validation "`` gives
    ``fit: validation y must hold class indices of shape (N,), got shape (4, 1)``; ``set_name``
    names the set as a whole (default: ``"the " + what + "set"``).
    """
    for name, tensor in (("x", x), ("y", y)):
        if not isinstance(tensor, Tensor):
            raise TypeError(
                f"{where}: {what}{name} must be a torch.Tensor, got {type(tensor).__name__}"
            )
        check_strided(where, f"{what}{name}", tensor)
    assert isinstance(x, Tensor) and isinstance(y, Tensor)
    if y.dim() != 1:
        raise ValueError(
            f"{where}: {what}y must hold class indices of shape (N,), got shape {tuple(y.shape)}"
        )
    if x.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{where}: {what}x and y must hold as many samples, got x of shape "
            f"{tuple(x.shape)} and y of shape {tuple(y.shape)}"
        )
    if y.shape[0] == 0:
        raise ValueError(
            f"{where}: {set_name or f'the {what}set'} is empty, got x of shape "
            f"{tuple(x.shape)} and y of shape {tuple(y.shape)}; expected at least one sample"
        )
    if x.device != y.device:
        raise ValueError(
            f"{where}: {what}x and y must be on one device, got {x.device} and {y.device}"
        )
    return x, y


def check_like(where: str, name: str, x: Tensor, reference: Tensor, reference_name: str) -> None:
    """Check that ``x`` holds samples like ``reference``: the same shape after the first
    dimension, dtype and device (so that a model that takes one takes the other)."""
    if (
        x.shape[1:] != reference.shape[1:]
        or x.dtype != reference.dtype
        or x.device != reference.device
    ):
        raise ValueError(
            f"{where}: {name} must hold samples like {reference_name}, of shape "
            f"{_samples(reference)}, {reference.dtype} on {reference.device}; got "
            f"{_samples(x)}, {x.dtype} on {x.device}"
        )


def _samples(tensor: Tensor) -> str:
    """``(N, 2)`` for a tensor of shape ``(k, 2)``: its shape with the sample dimension named."""
    return str(("N", *tensor.shape[1:])).replace("'N'", "N")


def _fmt(bound: float | None, default: str) -> str:
    if bound is None:
        return default
    text = f"{bound:g}"
    # Six significant digits unless they would show another number (a bound near the value).
    return text if float(text) == bound else repr(float(bound))


def add_note(error: BaseException, note: str) -> None:
    """Add ``note`` to ``error``, shown under its message in a traceback (Python >= 3.11);
    nothing where notes do not exist or the exception refuses them (a frozen dataclass)."""
    if isinstance(error, Exception) and hasattr(error, "add_note"):
        with contextlib.suppress(Exception):
            error.add_note(note)


def describe_pair(pair: object) -> str:
    """What was given for an ``(x, y)`` pair, for a refusal: ``"Tensor"``, ``"a tuple of 3
    items"``, ``"a tuple of Tensor and list"``, ``"a tuple of a 0-dim Tensor and Tensor"``."""
    if not isinstance(pair, tuple | list):
        return type(pair).__name__
    if len(pair) != 2:
        return f"a {type(pair).__name__} of {len(pair)} item{'s' if len(pair) != 1 else ''}"
    parts = [
        "a 0-dim Tensor" if isinstance(item, Tensor) and item.dim() == 0 else type(item).__name__
        for item in pair
    ]
    return f"a {type(pair).__name__} of {parts[0]} and {parts[1]}"
