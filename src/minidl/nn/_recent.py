"""What a module made for the last few input shapes it accepted."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from minidl._validate import check_int

__all__ = ["Recent"]

V = TypeVar("V")


class Recent(Generic[V]):
    """At most ``size`` values, each kept under the key (a shape, with the dtype and device
    where they matter) it was made for; the one used least recently is dropped to make room.

    A module trained on batches whose last one is smaller, or evaluated between epochs on
    another batch size, switches between two or three input shapes. With the tensors it makes
    for a shape (ones for a bias gradient, a loss's constants) kept here, a switch back to a
    shape it has seen costs one dictionary lookup rather than new tensors and the full checks.
    """

    def __init__(self, size: int = 8) -> None:
        """A cache of at most ``size`` values.

        Raises:
            TypeError: ``size`` is not an integer (a bool is not one).
            ValueError: ``size`` is below 1 (a cache of none has no oldest value to drop for
                the one put).
        """
        self._size = check_int("Recent", "size", size)
        self._values: dict[Hashable, V] = {}

    def get(self, key: Hashable) -> V | None:
        """The value kept under ``key`` (now the most recent), or ``None``."""
        values = self._values
        value = values.pop(key, None)
        if value is not None:
            values[key] = value  # (last in the dict's order: dropped last)
        return value

    def put(self, key: Hashable, value: V) -> V:
        """Keep ``value`` under ``key``, now the most recent (dropping the value used least
        recently if full and ``key`` is new); return it."""
        values = self._values
        if key in values:
            del values[key]  # (put again: last in the dict's order, as get leaves it)
        elif len(values) >= self._size:
            del values[next(iter(values))]
        values[key] = value
        return value

    def get_or_make(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value kept under ``key``, or ``make()`` kept under it."""
        value = self.get(key)
        return self.put(key, make()) if value is None else value

    def values(self) -> list[V]:
        """The values kept, the one used least recently first."""
        return list(self._values.values())

    def empty(self) -> Recent[V]:
        """A new, empty cache of the same size."""
        return Recent(self._size)

    def clear(self) -> None:
        """Forget every value (the module's parameters were replaced, say)."""
        self._values.clear()

    def __len__(self) -> int:
        return len(self._values)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled and copied empty: what it keeps belongs to its module's tensors, and is made
        # again when needed.
        return (Recent, (self._size,))
