"""An attribute of a PyTorch module that its minidl twin does not support: :class:`Unsupported`."""

from __future__ import annotations

import numbers
from typing import Any, NoReturn

from minidl._setting import warn_dropped
from minidl._validate import shown

__all__ = ["Unsupported"]


class Unsupported:
    """A class attribute for an attribute of the PyTorch twin of a module that changes what
    the twin computes, where minidl's module has no such option (``CrossEntropyLoss``'s
    ``label_smoothing``, ``ignore_index`` and ``weight``, say): setting it raises
    ``AttributeError``, naming the module class, the attribute, the value given and ``hint``
    (what to do instead), and leaves the module as it was (a plain attribute, which the
    computation would ignore without a word, where PyTorch's computes with it); reading it
    raises ``AttributeError`` too, as for an attribute the module has not (``hasattr`` is
    false, ``getattr(loss, "weight", None)`` is ``None``). Given to the constructor by name
    (``CrossEntropyLoss(weight=w)``), it raises ``TypeError`` with the same hint
    (``Module.__new__``).

    A subclass that defines the name itself (a class attribute, a property) takes it over.

    A module pickled before the name was refused, with a plain attribute set by hand, which its
    computation ignored, loads without it (:meth:`set_pickled`): with a ``UserWarning`` unless
    it holds PyTorch's ``default`` (``None``, ``-100``, ``0.0``: what the loss computes as).
    """

    def __init__(self, hint: str, default: int | float | None) -> None:
        self.hint = hint
        self.default = default
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: object | None, owner: type | None = None) -> Any:
        if instance is None:
            return self
        raise AttributeError(
            f"{type(instance).__name__} has no {self.name}: PyTorch's {self.name} is not "
            f"supported ({self.hint})"
        )

    def __set__(self, instance: object, value: object) -> NoReturn:
        raise AttributeError(
            f"{type(instance).__name__}: {self.name} cannot be set (got {shown(value)}): "
            f"PyTorch's {self.name} is not supported ({self.hint})"
        )

    def refused_argument(self, owner: type, value: object) -> TypeError:
        """The error for PyTorch's argument of this name given to ``owner``'s constructor
        (``CrossEntropyLoss(weight=w)``), where Python's own named no reason."""
        if self._is_default(value):
            return TypeError(
                f"{owner.__name__}: got {self.name}={shown(value)}, PyTorch's default, which is "
                f"what {owner.__name__} computes ({self.hint}): leave the argument out"
            )
        return TypeError(
            f"{owner.__name__}: got {self.name}={shown(value)}, but PyTorch's {self.name} is not "
            f"supported ({self.hint})"
        )

    def set_pickled(self, instance: object, value: object) -> None:
        """Drop ``value``, the plain attribute ``name`` of ``instance`` pickled before the name
        was refused (which the computation ignored), warning unless it is PyTorch's default."""
        if self._is_default(value):
            return
        warn_dropped(instance, self.name, value, f"without it ({self.hint})")

    def _is_default(self, value: object) -> bool:
        """Whether ``value`` is PyTorch's default: the default itself, or a real number equal to
        it (``0``, ``numpy.float64(0.0)``; no bool, whose ``False == 0``, nor a tensor)."""
        default = self.default
        if value is default:
            return True
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return number and default is not None and value == default

    def __delete__(self, instance: object) -> NoReturn:
        raise AttributeError(f"{type(instance).__name__} has no {self.name} to delete")
