"""Multi-layer perceptrons from a list of sizes, and activations by name.

:mod:`minidl.nn` exports the three names of this module: ``nn.mlp`` and ``nn.activation`` are
the functions below (not their submodules), ``nn.ACTIVATIONS`` the table of names.
"""

from __future__ import annotations

import functools
import itertools
import numbers
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet

import torch

from minidl._validate import add_note, shown
from minidl.nn.activation import Activation
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
    """A new activation module from its name (case-insensitive): one of :data:`ACTIVATIONS`."""
    return ACTIVATIONS[_activation_key("activation", name)]()


def _normalised(name: str) -> str:
    """``name`` as :data:`ACTIVATIONS` spells its keys: lower case, without ``_`` and ``-``."""
    return name.lower().replace("_", "").replace("-", "")


def _activation_key(where: str, name: object) -> str:
    """The key of :data:`ACTIVATIONS` for ``name`` (case, ``_`` and ``-`` ignored), or a
    ValueError from ``where`` that lists the valid names."""
    key = _normalised(name) if isinstance(name, str) else None
    if key not in ACTIVATIONS:
        raise ValueError(
            f"{where}: unknown activation {name!r}; valid names are "
            f"{', '.join(sorted(ACTIVATIONS))}"
        )
    return key


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
        TypeError: ``sizes`` is not a sequence (a single number, a 0-dim tensor, or a set,
            whose order is not the one written); ``activations`` is neither a name nor a
            sequence of names (a set, bytes, a 0-dim tensor).

    Example:
        >>> mlp((2, 25, 25, 25, 2), "tanh")  # doctest: +ELLIPSIS
        Sequential(...)
    """
    if isinstance(sizes, AbstractSet) or not _iterable(sizes):
        raise TypeError(
            "mlp: sizes must be a sequence of layer widths, e.g. (2, 25, 2), got "
            f"{_unordered(sizes)}{type(sizes).__name__}"
        )
    sizes = list(sizes)
    if len(sizes) < 2 or any(
        isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in sizes
    ):
        got = "[" + ", ".join(shown(size) for size in sizes) + "]"
        raise ValueError(f"mlp: sizes must be at least two positive integers, got {got}")
    sizes = [int(size) for size in sizes]
    hidden = len(sizes) - 2
    if isinstance(activations, str):
        _activation_key("mlp", activations)  # (checked even with no hidden layer to use it)
        names = [activations] * hidden
    elif _iterable(activations) and not isinstance(activations, bytes | bytearray | AbstractSet):
        names = list(activations)
    else:
        raise TypeError(
            "mlp: activations must be an activation name or a sequence of names, got "
            f"{_unordered(activations)}{type(activations).__name__}"
        )
    if len(names) != hidden:
        raise ValueError(
            f"mlp: expected {hidden} activation names for {hidden} hidden layers, got {len(names)}"
        )
    keys = [_activation_key("mlp", name) for name in names]  # all checked before any draw
    layers: list[Module] = []
    for index, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        try:
            layers.append(Linear(n_in, n_out, dtype=dtype, device=device, generator=generator))
        except (TypeError, ValueError, RuntimeError) as error:
            # (the first layer refuses a dtype, device or generator: every layer gets them)
            add_note(
                error, f"in mlp, building layer {index} (Linear({shown(n_in)}, {shown(n_out)}))"
            )
            raise
        if index < hidden:
            layers.append(ACTIVATIONS[keys[index]]())
    return Sequential(*layers)


def _iterable(value: object) -> bool:
    """Whether ``value`` can be iterated: an ``Iterable`` other than a 0-dim tensor (one
    number, whose ``__iter__`` raises)."""
    return isinstance(value, Iterable) and not (
        isinstance(value, torch.Tensor) and value.dim() == 0
    )


def _unordered(value: object) -> str:
    """The start of a message that refuses ``value``: what is wrong with a set (its order,
    which is not the order it was written in, would be the order of the layers) or a 0-dim
    tensor (one number)."""
    if isinstance(value, torch.Tensor):
        return "a 0-dim "
    return "an unordered " if isinstance(value, AbstractSet) else ""
