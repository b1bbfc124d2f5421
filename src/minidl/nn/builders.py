"""Multi-layer perceptrons from a list of sizes, and activations by name.

:mod:`minidl.nn` exports the three names of this module: ``nn.mlp``, ``nn.activation`` and
``nn.ACTIVATIONS``, the table of names. (No submodule of :mod:`minidl.nn` shares a name with
them: the base class of the activations is in ``activation_base``.)
"""

from __future__ import annotations

import functools
import itertools
import numbers
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet

import torch

from minidl._validate import add_note, shown, shown_typed
from minidl.nn.activation_base import Activation
from minidl.nn.elu import ELU
from minidl.nn.gelu import GELU
from minidl.nn.leaky_relu import LeakyReLU
from minidl.nn.linear import Linear
from minidl.nn.module import Module
from minidl.nn.relu import ReLU
from minidl.nn.selu import SELU
from minidl.nn.sequential import Sequential
from minidl.nn.sigmoid import Sigmoid
from minidl.nn.silu import SiLU
from minidl.nn.tanh import Tanh

__all__ = ["ACTIVATIONS", "activation", "mlp"]

#: Activation constructors by the names the command line and the experiments use: each class's
#: name in lower case, without separators (``leakyrelu``, ``silu``), with their default settings;
#: ``gelutanh`` is ``GELU(approximate="tanh")``. :func:`activation` and :func:`mlp` also take
#: them in any case and with ``_`` or ``-`` (``leaky_relu``, ``GELU-tanh``).
ACTIVATIONS: dict[str, Callable[[], Activation]] = {
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "leakyrelu": LeakyReLU,
    "elu": ELU,
    "selu": SELU,
    "gelu": GELU,
    "gelutanh": functools.partial(GELU, approximate="tanh"),
    "silu": SiLU,
}


def activation(name: str) -> Activation:
    """A new activation module from its name (case-insensitive): one of :data:`ACTIVATIONS`.

    Raises:
        TypeError: ``name`` is not a ``str`` (``None``, bytes, a list of names).
        ValueError: an unknown name (the message lists the valid ones).
    """
    return ACTIVATIONS[_activation_key("activation", name)]()


def _normalised(name: str) -> str:
    """``name`` as :data:`ACTIVATIONS` spells its keys: lower case, without ``_`` and ``-``."""
    return name.lower().replace("_", "").replace("-", "")


def _activation_key(where: str, name: object) -> str:
    """The key of :data:`ACTIVATIONS` for ``name`` (case, ``_`` and ``-`` ignored), or an error
    from ``where`` that lists the valid names: a TypeError for a name that is no ``str``, a
    ValueError for an unknown one."""
    valid = ", ".join(sorted(ACTIVATIONS))
    if not isinstance(name, str):
        given = _module_given(where, name) or f"{shown_typed(name)}"
        raise TypeError(
            f"{where}: an activation name must be a str, got {given}; valid names are {valid}"
        )
    key = _normalised(name)
    if key not in ACTIVATIONS:
        raise ValueError(f"{where}: unknown activation {shown(name)}; valid names are {valid}")
    return key


def _module_given(where: str, value: object) -> str | None:
    """An activation module, or its class, given to ``where`` (``"mlp"`` or ``"activation"``)
    in place of an activation name, for a message: named, with its name where it is one of
    :data:`ACTIVATIONS`, and how to use it as it is; ``None`` for anything else."""
    is_class = isinstance(value, type)
    module_class = value if isinstance(value, type) else type(value)
    if not issubclass(module_class, Activation):
        return None
    name = module_class.__name__
    key = _normalised(name)
    built_in = ACTIVATIONS.get(key) is module_class
    if is_class and built_in:
        return f"the class {name} (give its name, {key!r})"
    given = f"the class {name}" if is_class else f"an instance of {name}"
    named = f", {key!r} builds {name} with its default settings" if built_in else ""
    if where == "activation":
        use = f"use {name}() itself" if is_class else "use the module itself"
    else:
        use = (
            "for an activation of your own, or other settings, build the Sequential: "
            f"Sequential(Linear(2, 8), {name}(), Linear(8, 2))"
        )
    return f"{given} ({where} builds minidl's activations by name{named}; {use})"


def mlp(
    sizes: Sequence[int],
    activations: str | Sequence[str] = "tanh",
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Sequential:
    """A fully connected network ``Linear, act, Linear, act, ..., Linear``.

    Args:
        sizes: layer widths from input to output, e.g. ``(2, 25, 25, 25, 2)`` for the paper's
            network (at least two).
        activations: one activation name for every hidden layer (default ``"tanh"``), or one
            name per hidden layer (``len(sizes) - 2`` of them), e.g. ``("relu", "tanh", "relu")``.
        dtype, device, generator: passed to every :class:`Linear`; one it refuses raises its
            error, with a note that names ``mlp`` and the layer.

    Returns:
        A :class:`Sequential` of ``2 * len(sizes) - 3`` modules, its layers named ``"0"``,
        ``"1"``, ... (``Linear`` at the even indices).

    Raises:
        ValueError: fewer than two sizes, or one that is not a positive integer; an unknown
            activation name; a number of names other than ``len(sizes) - 2``.
        TypeError: ``sizes`` is not a sequence of numbers (a single number, a str or bytes, a
            tensor: ``sizes.tolist()`` is one, or a set, whose order is not the one written);
            ``activations`` is neither a name nor a sequence of names (a set, bytes, a 0-dim
            tensor), or holds a name that is no ``str``.

    Example:
        >>> mlp((2, 25, 25, 25, 2), "tanh")  # doctest: +ELLIPSIS
        Sequential(...)
    """
    if isinstance(sizes, AbstractSet | str | bytes | bytearray | torch.Tensor) or not _iterable(
        sizes
    ):
        # (a tensor's elements are tensors, as Linear refuses them; a str's, characters; the
        # bytes b"\x02\x03" would be the sizes (2, 3))
        hint = "; pass sizes.tolist()" if isinstance(sizes, torch.Tensor) and sizes.dim() else ""
        raise TypeError(
            "mlp: sizes must be a sequence of layer widths, e.g. (2, 25, 2), got "
            f"{_unordered(sizes)}{type(sizes).__name__}{hint}"
        )
    sizes = list(sizes)
    if len(sizes) < 2 or any(
        isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in sizes
    ):
        # (a numpy integer written as the int it is, not np.int64(0))
        got = "[" + ", ".join(shown(_as_int(size)) for size in sizes) + "]"
        raise ValueError(f"mlp: sizes must be at least two positive integers, got {got}")
    sizes = [int(size) for size in sizes]
    hidden = len(sizes) - 2
    if isinstance(activations, str):
        _activation_key("mlp", activations)  # (checked even with no hidden layer to use it)
        names = [activations] * hidden
    elif _iterable(activations) and not isinstance(activations, bytes | bytearray | AbstractSet):
        names = list(activations)
    else:
        given = _module_given("mlp", activations)
        raise TypeError(
            "mlp: activations must be an activation name or a sequence of names, got "
            + (given or f"{_unordered(activations)}{type(activations).__name__}")
        )
    if len(names) != hidden:
        nouns = (
            ("activation name", "hidden layer")
            if hidden == 1
            else ("activation names", "hidden layers")
        )
        raise ValueError(
            f"mlp: expected {hidden} {nouns[0]} for {hidden} {nouns[1]}, got {len(names)}"
        )
    keys = [_activation_key("mlp", name) for name in names]  # all checked before any draw
    layers: list[Module] = []
    restore = _restoring_draws(generator, device)
    for index, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        try:
            layers.append(Linear(n_in, n_out, dtype=dtype, device=device, generator=generator))
        except (TypeError, ValueError, RuntimeError) as error:
            # (the first layer refuses a dtype, device or generator: every layer gets them; a
            # later one, a size that cannot be held, after the layers before it drew their
            # weights: the generator is put back as it was)
            restore()
            add_note(
                error, f"in mlp, building layer {index} (Linear({shown(n_in)}, {shown(n_out)}))"
            )
            raise
        if index < hidden:
            layers.append(ACTIVATIONS[keys[index]]())
    return Sequential(*layers)


def _restoring_draws(
    generator: torch.Generator | None, device: torch.device | str | None
) -> Callable[[], None]:
    """A function that puts back the state, as it is now, of the generator that layers made
    with ``generator`` and ``device`` draw from: ``generator``, or torch's default one of the
    device (CPU or CUDA); one that does nothing where there is none to put back (a device or
    generator that the layers will refuse, the meta device)."""
    try:
        if generator is not None:
            given, state = generator, generator.get_state()

            def put_back() -> None:
                given.set_state(state)

            return put_back
        where = torch.device(device) if device is not None else torch.empty(0).device
        if where.type == "cpu":
            cpu = torch.random.get_rng_state()
            return lambda: torch.random.set_rng_state(cpu)
        if where.type == "cuda":
            cuda = torch.cuda.get_rng_state(where)
            return lambda: torch.cuda.set_rng_state(cuda, where)
    except (RuntimeError, TypeError, ValueError, AttributeError, AssertionError):
        pass  # (AssertionError: torch built without CUDA)
    return lambda: None


def _as_int(size: object) -> object:
    """``size`` for a message: an integer (a numpy one too) as an ``int``, anything else as
    it is."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return int(size)
    return size


def _iterable(value: object) -> bool:
    """Whether ``value`` can be iterated: an ``Iterable`` other than a 0-dim tensor or array
    (one number, or one string: a NumPy ``array('relu')``, whose ``__iter__`` raises)."""
    return isinstance(value, Iterable) and getattr(value, "ndim", None) != 0


def _unordered(value: object) -> str:
    """The start of a message that refuses ``value``: what is wrong with a set (its order,
    which is not the order it was written in, would be the order of the layers) or a tensor
    (a 0-dim one: one number)."""
    if isinstance(value, torch.Tensor) or getattr(value, "ndim", None) == 0:
        return "a 0-dim " if getattr(value, "ndim", None) == 0 else "a "
    return "an unordered " if isinstance(value, AbstractSet) else ""
