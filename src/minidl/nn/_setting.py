"""A module's hyper-parameter, read and set as an attribute and checked when set: :class:`Setting`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

__all__ = ["Setting"]

T = TypeVar("T")


class Setting(Generic[T]):
    """A hyper-parameter of a module (``Dropout.p``, ``LeakyReLU.negative_slope``, a loss's
    ``reduction``, ...), read and set as an attribute.

    Setting it runs the constructor's check, ``check(where, value)``, which returns the value
    normalised (a float for a number) or raises naming the module class: so
    ``dropout.p = 2`` raises as ``Dropout(2)`` does, and leaves the module as it was, rather
    than fail in the next forward in the tensor library's words, or compute with it silently
    (a ``reduction`` the loss does not know, a negative ``eps``). The value is kept in
    ``_<name>``, which ``forward`` reads directly (no descriptor call per step).

    The learning-rate schedules' settings are a subclass,
    ``minidl.optim.lr_scheduler.ScheduleSetting``, which also checks the value against the
    schedule's other settings and sets the optimizer's rate anew.
    """

    def __init__(self, check: Callable[[str, Any], T]) -> None:
        self.check = check
        self.name = ""
        self.slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.slot = "_" + name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Setting[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> Setting[T] | T:
        if instance is None:
            return self
        value: T = getattr(instance, self.slot)
        return value

    def __set__(self, instance: object, value: Any) -> None:
        # (object.__setattr__ also serves a module unpickled from before the setting existed:
        # Module.__setstate__ sets its old plain attribute, which comes here and is checked)
        object.__setattr__(instance, self.slot, self.check(type(instance).__name__, value))
