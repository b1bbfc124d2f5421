"""Read-only JSON trees and mappings: :func:`frozen` and :class:`FrozenDict`."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn, TypeVar

__all__ = ["FrozenDict", "FrozenList", "frozen"]

K = TypeVar("K")
V = TypeVar("V")


class FrozenDict(dict[K, V]):
    """A ``dict`` that refuses every change with a ``TypeError`` naming its ``owner`` and what
    to do instead (``refusal``), for a value checked once and read many times (a
    :class:`~minidl.checkpoint.Checkpoint`'s header and tensors).

    A ``dict`` still, so that it reads, compares, unpacks (``{**d, key: value}``) and serialises
    (``json.dumps``) as one; ``copy.deepcopy`` gives a plain, changeable ``dict`` (of plain
    lists and dicts), to change and build a new value from; ``copy.copy`` and pickling give a
    frozen one."""

    __slots__ = ("_refusal",)

    def __init__(self, items: Mapping[K, V], refusal: str) -> None:
        if _made(self):  # (called again on a made one: dict.__init__ would add the items)
            self._refuse()
        super().__init__(items)
        self._refusal = refusal

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(self._refusal)

    __setitem__: Callable[..., NoReturn] = _refuse
    __delitem__: Callable[..., NoReturn] = _refuse
    __ior__: Callable[..., NoReturn] = _refuse
    clear: Callable[..., NoReturn] = _refuse
    pop: Callable[..., NoReturn] = _refuse
    popitem: Callable[..., NoReturn] = _refuse
    setdefault: Callable[..., NoReturn] = _refuse
    update: Callable[..., NoReturn] = _refuse

    def __copy__(self) -> FrozenDict[K, V]:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[K, V]:
        return {key: copy.deepcopy(value, memo) for key, value in self.items()}

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self), self._refusal))


class FrozenList(list[V]):
    """A ``list`` that refuses every change, as :class:`FrozenDict` (a JSON array of a frozen
    tree); ``copy.deepcopy`` gives a plain ``list``."""

    __slots__ = ("_refusal",)

    def __init__(self, items: Iterable[V], refusal: str) -> None:
        if _made(self):  # (called again on a made one: list.__init__ would replace the items)
            self._refuse()
        super().__init__(items)
        self._refusal = refusal

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(self._refusal)

    __setitem__: Callable[..., NoReturn] = _refuse
    __delitem__: Callable[..., NoReturn] = _refuse
    __iadd__: Callable[..., NoReturn] = _refuse
    __imul__: Callable[..., NoReturn] = _refuse
    append: Callable[..., NoReturn] = _refuse
    clear: Callable[..., NoReturn] = _refuse
    extend: Callable[..., NoReturn] = _refuse
    insert: Callable[..., NoReturn] = _refuse
    pop: Callable[..., NoReturn] = _refuse
    remove: Callable[..., NoReturn] = _refuse
    reverse: Callable[..., NoReturn] = _refuse
    sort: Callable[..., NoReturn] = _refuse

    def __copy__(self) -> FrozenList[V]:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> list[V]:
        return [copy.deepcopy(value, memo) for value in self]

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (list(self), self._refusal))


def _made(value: FrozenDict[Any, Any] | FrozenList[Any]) -> bool:
    """Whether ``value``'s ``__init__`` ran already (its refusal is set)."""
    try:
        value._refusal  # noqa: B018 (read to see whether the slot is set)
    except AttributeError:
        return False
    return True


def frozen(value: Any, refusal: str) -> Any:
    """A frozen copy of the JSON tree ``value``: each ``dict`` a :class:`FrozenDict` and each
    ``list`` a :class:`FrozenList` refusing changes with ``refusal``; other values as they are
    (numbers and strings cannot change)."""
    if isinstance(value, dict):
        return FrozenDict({key: frozen(item, refusal) for key, item in value.items()}, refusal)
    if isinstance(value, list):
        return FrozenList([frozen(item, refusal) for item in value], refusal)
    return value
