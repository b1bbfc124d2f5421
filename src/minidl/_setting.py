"""A setting of a module or a schedule, read and set as an attribute and checked when set:
:class:`Setting`; one that only the constructor sets: :class:`Fixed`."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from torch import Tensor

from minidl._validate import shown

__all__ = ["Fixed", "Setting", "read_overridden_settings", "warn_dropped"]

T = TypeVar("T")


class Setting(Generic[T]):
    """A hyper-parameter of a module (``Dropout.p``, ``LeakyReLU.negative_slope``, a loss's
    ``reduction``, ...), read and set as an attribute.

    Setting it runs the constructor's check, ``check(where, value)``, which returns the value
    normalised (a float for a number) or raises naming the module class: so
    ``dropout.p = 2`` raises as ``Dropout(2)`` does, and leaves the module as it was, rather
    than fail in the next forward in the tensor library's words, or compute with it silently
    (a ``reduction`` the loss does not know, a negative ``eps``). The value is kept in
    ``_<name>``, which ``forward`` reads directly (no descriptor call per step). It cannot be
    deleted: ``del dropout.p`` raises ``AttributeError``.

    A subclass of the module that overrides the name with an attribute or a property of its own
    (``class Fixed(LeakyReLU): negative_slope = 0.2``) takes it over: the value is then neither
    checked nor kept by the setting, and ``forward`` reads it through ``_<name>``, which
    :func:`read_overridden_settings` defines on that subclass.

    The learning-rate schedules' settings are a subclass,
    ``minidl.optim.lr_scheduler.ScheduleSetting``, which also checks the value against the
    schedule's other settings and sets the optimizer's rate anew.

    A module pickled before its setting existed holds a plain attribute ``name``, which
    ``Module.__setstate__`` gives to :meth:`set_pickled`: it is checked as set (the
    computation read it), unless the setting is ``ignored_when_plain`` (a plain ``inplace`` or
    ``track_running_stats``, which the computation never read): then a value the check takes
    (``inplace=False``) is taken, and one it refuses is dropped with a ``UserWarning``
    (:func:`warn_dropped`), so that the module loads and computes as it did.
    """

    def __init__(self, check: Callable[[str, Any], T], *, ignored_when_plain: bool = False) -> None:
        self.check = check
        self.ignored_when_plain = ignored_when_plain
        self.name = ""
        self.slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        # Named once, by the class that made it: the same setting under another name in a
        # subclass (an alias, ``slope = LeakyReLU.negative_slope``) reads and sets the same
        # slot, rather than renaming the setting of every instance of the class that made it.
        if not self.name:
            self.name = name
            self.slot = "_" + name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Setting[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> Setting[T] | T:
        if instance is None:
            return self
        try:
            value: T = getattr(instance, self.slot)
        except AttributeError:
            # (not set yet: read before the constructor set it, or on an instance made
            # without it) named as the attribute read, not its slot
            kind = type(instance).__name__
            raise AttributeError(
                f"{kind}.{self.name} has no value yet: {kind}'s constructor sets it"
            ) from None
        return value

    def __set__(self, instance: object, value: Any) -> None:
        object.__setattr__(instance, self.slot, self.check(type(instance).__name__, value))

    def set_pickled(self, instance: object, value: Any) -> None:
        """Set ``value``, the plain attribute ``name`` of ``instance`` pickled before the
        setting existed, as it is set, checked; but where the computation ignored the plain
        attribute (``ignored_when_plain``), a value the check refuses (``inplace=True``) is
        dropped with a ``UserWarning`` rather than refused: the module computes as it did, with
        the class's value (``inplace`` False)."""
        if not self.ignored_when_plain:
            self.__set__(instance, value)
            return
        try:
            self.__set__(instance, value)
        except (TypeError, ValueError):
            default = getattr(type(instance), self.slot)
            warn_dropped(instance, self.name, value, f"as with {self.name}={default!r}")

    def __delete__(self, instance: object) -> None:
        raise AttributeError(
            f"{type(instance).__name__}.{self.name} cannot be deleted; set another value"
        )


class Fixed(Setting[T]):
    """An attribute of a module that its constructor sets, checked, and nothing sets again:
    what the module's parameters and buffers were made from (``BatchNorm1d``'s
    ``num_features`` and ``affine``). Set by hand afterwards, it described a layer other than
    the one that computes (``affine=False`` beside a weight and a bias that still applied, a
    ``repr`` that said otherwise, a conversion to PyTorch that built a layer without them);
    setting it again to another value, or deleting it, now raises ``AttributeError`` naming
    the value kept, the one given and ``hint`` (what to do instead), and leaves the module as
    it was; the value kept, set again (by a subclass's constructor), changes nothing.

    A module pickled before it was fixed holds the plain attribute, which
    :meth:`Setting.set_pickled` sets, checked, as the constructor did.
    """

    def __init__(self, check: Callable[[str, Any], T], hint: str) -> None:
        super().__init__(check)
        self.hint = hint

    def __set__(self, instance: object, value: Any) -> None:
        if self._set_on(instance):  # (set by the constructor, or loaded)
            kind = type(instance).__name__
            kept = getattr(instance, self.slot)
            if type(value) is type(kept) and value == kept:
                # (the value kept, set again: by a subclass's constructor, before or after its
                # base's, which changes nothing)
                return
            raise AttributeError(
                f"{kind}: {self.name} is fixed at construction ({kept!r}), got {shown(value)}; "
                f"{self.hint}"
            )
        super().__set__(instance, value)

    def __delete__(self, instance: object) -> None:
        kind = type(instance).__name__
        raise AttributeError(
            f"{kind}.{self.name} cannot be deleted: it is fixed at construction; {self.hint}"
        )

    def _set_on(self, instance: object) -> bool:
        """Whether ``instance`` holds the slot itself, found without asking for its
        ``__dict__`` where no class gives the slot a value (on CPython 3.11, an instance whose
        ``__dict__`` was asked for keeps its attributes in a plain dict from then on, and every
        attribute read in its forward and backward gets slower: a ``Linear``'s)."""
        missing = object()
        if getattr(instance, self.slot, missing) is missing:
            return False
        if not any(self.slot in vars(klass) for klass in type(instance).__mro__):
            return True  # (nothing else holds it)
        return self.slot in vars(instance)


class _ReadsOverride:
    """The slot ``_<name>`` of a class that overrides a base class's setting ``name`` with an
    attribute or a property of its own: reading it reads ``self.<name>``, so that the base
    class's ``forward``, which reads the slot, sees the subclass's value.

    Not a data descriptor: a value the subclass keeps in ``_<name>`` itself (a property ``p``
    whose setter sets ``self._p``, or a subclass further down that makes ``name`` a
    :class:`Setting` again) is read directly from the instance.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, instance: object | None, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return getattr(instance, self.name)


def read_overridden_settings(cls: type) -> None:
    """For ``cls``, a new subclass (``Module.__init_subclass__`` and
    ``LRScheduler.__init_subclass__`` call it): each name that it gets, by its own definition
    or from a class earlier in its MRO than the module's (a mixin: ``class Fixed(Slope,
    LeakyReLU)``), as something other than a :class:`Setting`, where a class further along the
    MRO defines the name as a :class:`Setting`, gets the slot ``_<name>`` read from
    ``self.<name>`` (unless ``cls``, or a class up to the one that gives it the name, defines
    ``_<name>``). Without it, ``Annealed(Dropout)`` with ``p`` a property would fail in the
    first forward, which reads ``_p``, never set."""
    mro = cls.__mro__
    names = {
        name
        for klass in mro[1:]
        for name, value in vars(klass).items()
        if isinstance(value, Setting) and not name.startswith("_")
    }
    for name in names:
        owners = [index for index, klass in enumerate(mro) if name in vars(klass)]
        if isinstance(vars(mro[owners[0]])[name], Setting):
            continue
        setting = next((i for i in owners if isinstance(vars(mro[i])[name], Setting)), None)
        slot = "_" + name
        if setting is not None and not any(slot in vars(klass) for klass in mro[: owners[0] + 1]):
            setattr(cls, slot, _ReadsOverride(name))


def warn_dropped(instance: object, name: str, value: object, computes: str) -> None:
    """Warn that the plain attribute ``name`` of ``instance``, pickled by an earlier minidl
    version that ignored it (the computation never read it) and which cannot be set now, is
    dropped as the module is loaded: the module computes as it did, ``computes`` (``"as with
    inplace=False"``). The warning names the first caller outside minidl and the modules that
    load and copy (the line that calls ``pickle.load``, ``torch.load`` or ``copy.deepcopy``)."""
    kind = type(instance).__name__
    level, frame = 2, sys._getframe(1)  # (level 2: the frame of the caller)
    while _loading(frame.f_globals.get("__name__", "")) and frame.f_back is not None:
        level, frame = level + 1, frame.f_back
    warnings.warn(
        f"{kind}: {name}={_shown_pickled(value)}, pickled by an earlier minidl version that "
        f"ignored it, is dropped (setting it now raises): the {kind} computes as it did, "
        f"{computes}",
        UserWarning,
        stacklevel=level,
    )


def _loading(module: str) -> bool:
    """Whether code of ``module`` is part of the loading or copying of a module."""
    return module in ("copy", "copyreg", "pickle") or module.startswith(("minidl.", "torch."))


def _shown_pickled(value: object) -> str:
    """``value`` as :func:`warn_dropped` names it: as :func:`~minidl._validate.shown`, but a
    tensor of more than 8 elements by its shape and dtype (its ``repr`` takes lines)."""
    if isinstance(value, Tensor):
        if value.numel() <= 8:
            return " ".join(repr(value).split())
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return shown(value)
