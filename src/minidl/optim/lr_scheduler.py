"""The base class of learning-rate schedules."""

from __future__ import annotations

import functools
import math
import re
import secrets
import weakref
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, TypeVar, cast

from minidl._setting import Setting, read_overridden_settings
from minidl._validate import LONGEST_SHOWN, check_int, check_real, plain_choice, shown
from minidl.optim.optimizer import Optimizer

__all__ = [
    "LRScheduler",
    "ScheduleSetting",
    "check_decay_gamma",
    "check_interval",
    "checks_step",
    "fixed",
    "interval_repr",
    "steps_repr",
]

T = TypeVar("T")


def _nothing() -> None:
    """Restore nothing (see ``LRScheduler._checked_parts``)."""


def _shortened(text: str) -> str:
    """``text``, a schedule's ``repr``, for a message: each integer of more than
    :data:`~minidl._validate.LONGEST_SHOWN` digits in it (as :func:`steps_repr` writes one, in
    decimal or hexadecimal) written as :func:`~minidl._validate.shown` writes it, by its number
    of digits; hundreds of them would bury the message."""

    def number(found: re.Match[str]) -> str:
        digits = found.group(0)
        return shown(int(digits, 0)) if len(digits) > LONGEST_SHOWN else digits

    return re.sub(r"\b(?:0x[0-9a-f]+|[1-9][0-9]*)\b", number, text)


def steps_repr(steps: int | list[int]) -> str:
    """A number of steps (or a list of them, ``milestones``) as a schedule's ``repr`` writes
    it: in decimal, as ``str``; one of more digits than Python writes in decimal (4300 by
    default, ``sys.get_int_max_str_digits``), where ``str`` raises a ``ValueError`` of its own,
    in hexadecimal (``0x...``, the same number as a Python literal). Written whole, not
    shortened as :func:`~minidl._validate.shown` does in a message: checkpoints compare
    schedules by their ``repr``, and two settings shortened alike would pass for one."""
    if isinstance(steps, list):
        return f"[{', '.join(steps_repr(part) for part in steps)}]"
    try:
        return str(steps)
    except ValueError:  # (too many digits: hexadecimal has no limit)
        return hex(steps)


def check_interval(where: str, interval: object) -> Literal["epoch", "batch"]:
    """Check a scheduler's ``interval``: ``"epoch"`` or ``"batch"``, a ``str`` (see
    :func:`~minidl._validate.plain_choice`)."""
    given = plain_choice(interval, ("epoch", "batch"))
    if given is None:
        raise ValueError(f"{where}: interval must be 'epoch' or 'batch', got {shown(interval)}")
    return "epoch" if given == "epoch" else "batch"


def interval_repr(interval: str, default: str = "epoch") -> str:
    """``", interval='batch'"`` for a ``repr``, or nothing for the class's ``default`` (so that
    the ``repr`` that a checkpoint saved before it was shown still matches, and a checkpoint,
    which compares schedules by their ``repr``, tells a schedule whose interval was set)."""
    return "" if interval == default else f", interval={interval!r}"


def check_decay_gamma(where: str, gamma: object) -> float:
    """Check the factor ``gamma`` of an exponential decay (``ExponentialDecay``'s, ``CyclicLR``'s
    ``"exp_range"``): a real number in ``(0, 1]``."""
    return check_real(where, "gamma", gamma, low=0.0, high=1.0, low_open=True)


def _check_reference_lr(where: str, base_lr: object) -> float:
    return check_real(where, "base_lr", base_lr, low=0.0)


Schedule = TypeVar("Schedule", bound="LRScheduler")


class StepOverflowError(ValueError, OverflowError):
    """A step whose rate a float cannot hold (``lr_at(10**400)``): a ``ValueError`` in the
    schedule's words for the caller of ``lr_at``, and still the ``OverflowError`` that a
    schedule's ``step()`` names in its own (see :meth:`Schedule._rate`)."""


def python_error(error: BaseException) -> BaseException:
    """Python's own error behind ``error``: the ``OverflowError`` that a
    :class:`StepOverflowError` names (an inner schedule's ``lr_at`` named it already), else
    ``error`` itself."""
    return error.__cause__ if isinstance(error, StepOverflowError) and error.__cause__ else error


def checks_step(
    lr_at: Callable[[Schedule, int], float],
) -> Callable[[Schedule, int], float]:
    """Decorate a schedule's ``lr_at(self, step)`` so that a ``step`` that is not an integer
    >= 0 raises before the formula sees it (a float or a negative step gives a number from most
    formulas): ``TypeError`` for a non-integer (a float, a bool), ``ValueError`` for a negative
    one, in the words of the schedule's class (``"CyclicLR.lr_at: step must be an integer >=
    0, got -1"``), and ``ValueError`` for one past a float's range (Python's ``OverflowError``
    named); a NumPy integer is taken as an ``int``. Every built-in schedule's ``lr_at``
    has it; a schedule of one's own may use it too (``from minidl.optim.lr_scheduler import
    checks_step``)."""

    @functools.wraps(lr_at)
    def checked(self: Schedule, step: int) -> float:
        where = f"{type(self).__name__}.lr_at"
        step = check_int(where, "step", step, low=0)
        try:
            return lr_at(self, step)
        except OverflowError as error:  # (a step past a float: 10**400)
            cause = python_error(error)
            raise StepOverflowError(
                f"{where}: the rate of step {shown(step)} cannot be computed ({cause}); "
                "expected a step within the range of a float"
            ) from cause

    return checked


def fixed(schedule: object, name: str, hint: str) -> AttributeError:
    """The error of setting ``name``, which ``schedule`` cannot change once built."""
    kind = type(schedule).__name__
    return AttributeError(f"{kind}.{name} is fixed at construction; {hint}")


class ScheduleSetting(Setting[T]):
    """A setting of a schedule (``StepDecay.step_size``, ``OneCycle.div_factor``, ...), read
    and set as an attribute.

    Setting it runs the constructor's check, ``check(where, value)``; then, once the schedule
    is built, the constructor's checks that involve its other settings (``CyclicLR``'s
    ``max_lr >= base_lr``), recomputes what the constructor derived from it (``OneCycle``'s
    ``initial_lr``), and sets the optimizer's learning rate to the rate of the current step, as
    the constructor does for step 0 (unless a schedule built after this one sets the rate: a
    schedule inside a :class:`~minidl.optim.SequentialSchedule` takes effect at the sequence's
    next ``step``, and the sequence checks the change as a whole: it must still have a rate at
    its current step, and one ``interval``). A value refused at any point, or one that gives
    the current step no finite rate, raises naming the schedule's class and leaves the
    schedules and the optimizer as they were. The value is kept in ``_<name>``, which
    ``lr_at`` reads directly.
    """

    def __set__(self, instance: object, value: Any) -> None:
        schedule = cast("LRScheduler", instance)
        fixed = type(schedule)._fixed_settings.get(self.name)
        if fixed is not None:  # (whatever the value: no value would be taken)
            raise AttributeError(f"{type(instance).__name__}.{self.name} {fixed}")
        schedule._change(self.name, {self.slot: self.check(type(instance).__name__, value)})


#: The schedules alive, by ``(id(optimizer), token)``: the optimizer each schedules and the
#: token it gave it (see :func:`scheduling`). (Held weakly: one let go of is gone from here,
#: once collected; a SequentialSchedule and its schedules refer to each other, and go when the
#: cyclic collector runs. A schedule holds its optimizer, so that an optimizer's id names it
#: while it is here.)
_LIVE: weakref.WeakValueDictionary[tuple[int, int], LRScheduler] = weakref.WeakValueDictionary()


def scheduling(optimizer: Optimizer) -> LRScheduler | None:
    """The schedule alive that sets ``optimizer``'s rate (the last one built on it or copied by
    ``copy.copy``, or a copy of it made with the optimizer, by pickle or ``copy.deepcopy``), or
    ``None``."""
    owner = getattr(optimizer, "_scheduled_by", None)
    return None if owner is None else _LIVE.get((id(optimizer), owner[0]))


class LRScheduler:
    """Sets an optimizer's learning rate from a closed-form function of a step counter.

    A subclass implements :meth:`lr_at`, a pure function of the step (an epoch or a batch count,
    as the subclass documents). ``step()`` advances the counter by one and sets
    ``optimizer.lr = lr_at(counter)``; construction sets ``optimizer.lr = lr_at(0)`` (or the
    rate of the step a constructor of one's own restored with :meth:`load_state_dict`), once the
    subclass's ``__init__`` has returned (its settings are checked against each other from
    then on, as the built-in schedules' are; a schedule of one's own that only implemented
    ``lr_at`` left the rate as it was, and a schedule built before it on the optimizer went
    on stepping). A built-in schedule starts at the end of its own ``__init__``: a subclass of
    one sets what its ``lr_at`` reads before calling ``super().__init__``, as with PyTorch's
    schedulers. The
    schedule's reference learning rate ``base_lr`` is the optimizer's learning rate at
    construction unless the subclass takes its own rates (``takes_own_rates``). A ``step`` or a
    ``load_state_dict`` that raises (a rate the schedule does not define) changes nothing.

    The schedule built last on an optimizer sets its rate: an older one refuses to ``step``
    (two schedules would overwrite each other's rates; a
    :class:`~minidl.optim.SequentialSchedule` runs several one after the other). A copy made
    by ``copy.copy`` is such a schedule, made last (``copy.deepcopy`` and pickle copy the
    optimizer with it).

    A schedule's settings (``StepDecay.step_size``, ``OneCycle.div_factor``, ``interval``,
    ``base_lr``, ...) may be set after construction, as PyTorch's schedulers' attributes may
    (but one that its class does not take, ``OneCycle.base_lr``, raises ``AttributeError``):
    each value is checked as the constructor checks it, what the constructor derived from it is
    recomputed, and the optimizer's rate is set to the current step's, so that the schedule
    goes on as one built with that value (a schedule that does not set the rate, one inside a
    :class:`~minidl.optim.SequentialSchedule`, takes effect at the next ``step`` of the one that
    does; the sequence refuses a change that leaves it no rate at its current step or a
    schedule of another ``interval``). A value refused raises the constructor's error and
    changes nothing. What cannot
    change (the ``optimizer``, a :class:`~minidl.optim.SequentialSchedule`'s ``schedules``)
    raises ``AttributeError``.

    Args:
        optimizer: the optimizer whose ``lr`` is scheduled.
    """

    #: When the training loop calls :meth:`step`: after every ``"epoch"`` or every ``"batch"``
    #: (checked when set).
    interval = ScheduleSetting(check_interval)
    _interval: Literal["epoch", "batch"] = "epoch"

    #: The reference learning rate (checked when set: finite and >= 0).
    base_lr = ScheduleSetting(_check_reference_lr)
    _base_lr: float

    #: The settings of the base class that a subclass does not take, each with why (the end of
    #: the ``AttributeError`` that setting it raises, whatever the value): OneCycle's
    #: ``base_lr``, which its rates do not read.
    _fixed_settings: ClassVar[Mapping[str, str]] = {}

    #: Whether the schedule's rates come from its own arguments (``CyclicLR``'s bounds) rather
    #: than from the optimizer's rate: a :class:`~minidl.optim.SequentialSchedule` leaves its
    #: ``base_lr`` alone.
    takes_own_rates: ClassVar[bool] = False

    #: The :class:`~minidl.optim.SequentialSchedule` built last with this schedule in it (set by
    #: its constructor), which checks a change of this schedule's settings as a whole (see
    #: ``_check_part``); ``None`` for a schedule on its own (and one pickled before it existed,
    #: until its sequence's ``__setstate__`` sets it).
    _container: LRScheduler | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass that overrides a setting (StepDecay.gamma) with an attribute or a property
        # of its own: lr_at reads the setting's slot (_gamma), made to read the subclass's value.
        super().__init_subclass__(**kwargs)
        read_overridden_settings(cls)
        # Its constructor starts the schedule (the rate of step 0, the optimizer taken over)
        # when it returns, unless it did so itself: the outermost __init__ only, the one that
        # the instance's class runs (an inherited one, already made so, does it as it is).
        # (a class without an __init__ of its own, a dataclass's made later among them, is
        # left as it is: LRScheduler.__init__ starts a schedule whose class has none at all)
        if "__init__" not in vars(cls):
            return
        init = vars(cls)["__init__"]

        @functools.wraps(init)
        def starting(self: LRScheduler, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            if type(self).__init__ is starting and not self._ready:
                self._start()

        starting._starts_schedule = True  # type: ignore[attr-defined]
        setattr(cls, "__init__", starting)  # noqa: B010  # (mypy refuses assigning a method)

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            kind = type(optimizer)
            given = (
                f"{kind.__module__}.{kind.__qualname__}, a PyTorch optimizer (build the "
                "optimizer of the same name from minidl.optim)"
                if kind.__module__.startswith("torch.")
                else kind.__name__
            )
            raise TypeError(f"{type(self).__name__}: expected a minidl Optimizer, got {given}")
        self._optimizer = optimizer
        self._base_lr = optimizer.lr
        self.last_step = 0
        # Whether the constructor has finished (see _change): until then a setting is only
        # stored, and the constructor checks the rest.
        self._ready = False
        # The order in which the schedules of this optimizer were built (a SequentialSchedule
        # takes the reference rate of the first): counted by the optimizer, so that it holds
        # for schedules pickled or copied with it, also when loaded in another process.
        self._order: int = getattr(optimizer, "_schedules_built", 0)
        optimizer._schedules_built = self._order + 1
        # The schedule built last on an optimizer sets its rate (see _check_scheduling): a
        # token that survives pickling and copying with the optimizer, given to the optimizer
        # with the class's name by _start, once the subclass has accepted its arguments.
        self._token: int | None = None
        if type(self).__init__ is LRScheduler.__init__:  # (no constructor of its own: start)
            self._start()

    def _take_interval(self, interval: Literal["epoch", "batch"] | None) -> None:
        """Set ``interval`` as a constructor's argument: ``None`` keeps the class's (``"epoch"``,
        or what a subclass sets as its own class attribute ``interval`` or ``_interval``, which
        a default of the constructor's own would override)."""
        if interval is not None:
            self.interval = interval

    @property
    def optimizer(self) -> Optimizer:
        """The optimizer whose ``lr`` is scheduled (fixed at construction)."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, value: object) -> None:
        raise fixed(self, "optimizer", f"build a new {type(self).__name__} on the other optimizer")

    def _parts(self) -> list[LRScheduler]:
        """This schedule and the schedules it holds (whose state a change of a setting may
        change too)."""
        return [self]

    def _derive(self, where: str, name: str) -> None:
        """After the setting ``name`` changed: check it against the other settings as the
        constructor does, and recompute what the constructor derived from it (``where``: the
        class name, for the messages). Nothing by default."""

    def _change(self, name: str, slots: Mapping[str, Any]) -> None:
        """Set the checked value of the setting ``name`` (its slots); see
        ``ScheduleSetting``. Everything is restored if anything is refused."""
        # (no _ready yet: a subclass's __init__ sets a setting before LRScheduler.__init__; a
        # schedule pickled before _ready existed has it from __setstate__)
        if not getattr(self, "_ready", False):
            # Being built: the constructor checks the rest and _start sets the rate.
            for slot, value in slots.items():
                setattr(self, slot, value)
            return
        # (a last_step set by hand to no count, here and in each sequence holding this one:
        # refused in the words of step and state_dict, before anything changes)
        self._checked_last_step(name)
        container = self._container
        while container is not None:
            container._checked_last_step(
                name, f"{type(self).__name__}.{name}", f"the {type(container).__name__}'s"
            )
            container = container._container
        saved = self._saved()
        try:
            for slot, value in slots.items():
                setattr(self, slot, value)
            where = type(self).__name__
            self._derive(where, name)
            limit = self.step_limit
            if limit is not None and self.last_step > limit:
                raise ValueError(
                    f"{where}: with {name}={shown(getattr(self, name))} the last step would be "
                    f"{shown(limit)} (its step_limit), before the current step "
                    f"{shown(self.last_step)}"
                )
            rate = self._rate(name, self.last_step)
            # The sequences this schedule is part of (one inside the other, if nested): each
            # checks the change as a whole, in this schedule's words.
            part, container = self, self._container
            change = f"{name}={shown(getattr(self, name))}"
            while container is not None:
                container._check_part(where, change, part)
                part, container = container, container._container
            if self.superseded_by is None:
                self._give_rate(name, self.last_step, rate)
        except BaseException:
            self._put_back(saved)
            raise

    def _checked_parts(self, where: str, state_dict: Mapping[str, Any]) -> Callable[[], None]:
        """What :meth:`load_state_dict` restores of the schedules this one holds, beyond what
        ``base_lr`` gives them, checked (``where`` names the method for the messages): a
        function that restores it once ``base_lr`` is set. Nothing by default."""
        return _nothing

    def _saved(self) -> list[tuple[LRScheduler, dict[str, Any]]]:
        """The attributes of this schedule and of the schedules it holds (:meth:`_parts`), for
        :meth:`_put_back` should a change that sets some of them be refused part-way."""
        return [(part, dict(part.__dict__)) for part in self._parts()]

    @staticmethod
    def _put_back(saved: list[tuple[LRScheduler, dict[str, Any]]]) -> None:
        """Restore what :meth:`_saved` returned."""
        for part, state in saved:
            # (cleared first: a slot that had only its class's default, such as _interval,
            # would otherwise keep the value refused)
            part.__dict__.clear()
            part.__dict__.update(state)

    def _check_part(self, where: str, change: str, part: LRScheduler) -> None:
        """After a setting of ``part``, one of the schedules this one holds (or of a schedule
        inside it), changed (``change``: ``"name=value"``): refuse the change if this schedule
        as a whole cannot go on with it, in the words of ``where`` (the class of the schedule
        changed). Nothing by default."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        """For pickle and ``copy.deepcopy``: a schedule pickled when its settings were plain
        attributes keeps them in the slots that its settings now read."""
        kind = type(self)
        for key in [key for key in state if not key.startswith("_")]:
            if isinstance(getattr(kind, key, None), Setting | property):
                state["_" + key] = state.pop(key)
        state.setdefault("_ready", True)
        self.__dict__.update(state)
        token, optimizer = state.get("_token"), state.get("_optimizer")
        if "_token" not in state and optimizer is not None and self._ready:
            # Pickled before schedules had tokens, when nothing told which one sets the rate:
            # the one unpickled last does, as if made last (a SequentialSchedule after its
            # schedules, which its BUILD follows), so that the others refuse to step.
            self._take_over()
        elif token is not None and optimizer is not None:
            # (a copy made with its optimizer schedules the copied one; a copy of the schedule
            # alone, copy.copy, leaves the entry of the schedule alive that it copies, which
            # would go with the copy, and takes over with a token of its own: __copy__)
            _LIVE.setdefault((id(optimizer), token), self)

    @property
    def superseded_by(self) -> str | None:
        """The class name of a schedule built on the optimizer after this one (which now sets
        its rate: this one refuses to ``step``), or ``None``."""
        owner = getattr(self._optimizer, "_scheduled_by", None)
        token = getattr(self, "_token", None)  # (None: never started, or pickled before)
        if owner is None or token is None or owner[0] == token:
            return None
        return str(owner[1])

    def _check_scheduling(self, where: str) -> None:
        """Refuse to set the rate of an optimizer that a schedule built after this one
        schedules: each sets the rate from its own formula (rather than scale it, as PyTorch's
        chained schedulers do), so stepping both would silently keep the last one's."""
        other = self.superseded_by
        if other is not None:
            raise RuntimeError(
                f"{type(self).__name__}.{where}: the optimizer is scheduled by the {other} "
                "built (or copied, by copy.copy) on it after this schedule; minidl's schedules set the rate rather than "
                "scale it, so two would overwrite each other: step only the last one built, "
                "or put them one after the other in a SequentialSchedule"
            )

    def lr_at(self, step: int) -> float:
        """The learning rate after ``step`` calls of :meth:`step`.

        A subclass implements it for an ``int`` ``step`` >= 0; the built-in schedules refuse
        any other ``step`` (see :func:`checks_step`, which a subclass may use too).
        """
        raise NotImplementedError(
            f"{type(self).__name__}.lr_at is not implemented (a subclass of LRScheduler returns "
            "the learning rate after a given number of steps)"
        )

    def _start(self) -> None:
        """Set the learning rate of the current step and take over the optimizer's rate from
        any schedule built on it before (subclasses call it at the end of ``__init__``); from
        then on, a setting set is checked against the others (see ``ScheduleSetting``). The
        current step is 0 unless the constructor restored a state (``load_state_dict``) before
        the schedule started: that step's rate stays."""
        step = self._checked_last_step("", type(self).__name__)  # (its constructor's words)
        self._give_rate("", step, self._rate("", step))
        # (a SequentialSchedule saves the base_lr of a schedule taking its own rates where it
        # is no longer the one it was built with)
        self._built_base_lr = self._base_lr
        self._take_over()
        self._ready = True

    def _take_over(self) -> None:
        """Become the schedule that sets the optimizer's rate (a new token given to it): every
        schedule built on it before refuses to step from now on."""
        self._token = secrets.randbits(63)
        self._optimizer._scheduled_by = (self._token, type(self).__name__)
        _LIVE[(id(self._optimizer), self._token)] = self

    def __copy__(self) -> LRScheduler:
        """``copy.copy``: a schedule of the same optimizer with this one's settings and step,
        made last, so that it sets the optimizer's rate from now on and this one refuses to
        ``step``, as after any schedule built on the optimizer after it (a copy sharing this
        one's place stepped the same optimizer beside it, each overwriting the other's rate).
        Its attributes are this one's (a shallow copy), but for the schedules it holds (a
        :class:`~minidl.optim.SequentialSchedule`'s are copied with it, see
        ``_copy_parts``); it is part of no :class:`~minidl.optim.SequentialSchedule`, and its
        rate is this one's, so the optimizer's rate does not change. ``copy.deepcopy`` copies
        the optimizer with the schedule, and the copy schedules the copied optimizer."""
        copied = type(self).__new__(type(self))
        copied.__dict__.update(self.__dict__)
        copied._container = None  # (the copy stands alone)
        copied._copy_parts(self)
        if self._ready:  # (one whose constructor has not returned takes nothing over)
            copied._take_over()
        return copied

    def _copy_parts(self, original: LRScheduler) -> None:
        """In a shallow copy of ``original`` (``copy.copy``): give it copies of the schedules
        that ``original`` holds, each part of the copy. None by default."""

    def _set_base_lr(self, base_lr: float) -> None:
        """Take ``base_lr`` (checked) as the reference learning rate."""
        self._base_lr = base_lr

    def _restart_from(self, base_lr: float) -> None:
        """Restart from ``base_lr``, the rate before any schedule (as a schedule of a
        :class:`~minidl.optim.SequentialSchedule`), unless the schedule takes its own rates."""
        if not self.takes_own_rates:
            self._set_base_lr(base_lr)

    def _check_base_lr(self, where: str, base_lr: object) -> float:
        """Check a reference learning rate to restore (finite and >= 0)."""
        return check_real(where, "base_lr", base_lr, low=0.0)

    def step(self) -> float:
        """Advance one step, set the optimizer's learning rate and return it.

        If the schedule has no rate for the next step (``OneCycle`` past its ``total_steps``),
        it raises and nothing changes.
        """
        self._check_scheduling("step")
        current = self._checked_last_step("step")
        lr = self._rate("step", current + 1)
        self._give_rate("step", current + 1, lr)
        self.last_step = current + 1
        return lr

    def _checked_last_step(self, where: str, asker: str = "", whose: str = "") -> int:
        """``last_step``, the steps done (a plain attribute), as an ``int`` (a numpy integer is
        made one); one set by hand to no integer >= 0 is refused in this schedule's words
        (``where``: the method that reads it), before anything changes, where it failed in
        ``lr_at``'s words, or Python's for ``"3"``, and after a step of training in
        :func:`~minidl.train.fit`, which now refuses it before training. ``asker`` names
        another that reads it (a setting of a schedule inside this sequence), ``whose`` this
        one for that message (``"the SequentialSchedule's"``)."""
        step = self.last_step
        if type(step) is not int or step < 0:
            step = check_int(
                asker or f"{type(self).__name__}.{where}",
                f"{whose} last_step (the steps done)".lstrip(),
                step,
                low=0,
            )
            self.last_step = step
        return step

    def _rate(self, where: str, step: int) -> float:
        """``lr_at(step)``, refused in this schedule's words unless finite and >= 0 (a huge
        ``base_lr`` can overflow); ``where`` is the method that asks (``""``: the constructor).
        An integer setting or ``step`` too large for a float (``T_max=10**400``), which the
        formulas cannot compute with, is refused in the same words."""
        name = type(self).__name__
        try:
            lr = self.lr_at(step)
        except (OverflowError, ZeroDivisionError) as error:
            cause = python_error(error)
            raise ValueError(
                f"{name}{'.' if where else ''}{where}: the rate of step {shown(step)} cannot be "
                f"computed ({cause}; {_shortened(repr(self))}); expected settings and steps "
                "within the range of a float"
            ) from error
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(
                f"{name}{'.' if where else ''}{where}: the rate of step {shown(step)} is {lr!r} "
                f"({self._source(step)}); expected a finite rate >= 0"
            )
        return lr

    def _source(self, step: int) -> str:
        """Where the rate of ``step`` comes from, for a message: the schedule's ``repr`` where
        it takes its own rates, else its ``base_lr``."""
        return repr(self) if self.takes_own_rates else f"from base_lr {self.base_lr!r}"

    def _give_rate(self, where: str, step: int, rate: float) -> None:
        """Set the optimizer's rate to ``rate``, that of ``step`` (``where`` as for
        :meth:`_rate`). A rate the optimizer refuses (beyond the largest finite value of its
        parameters' dtype) is refused in this schedule's words, naming the step and where its
        rate comes from (the ``base_lr`` given to :meth:`load_state_dict`, say), then in the
        optimizer's; the optimizer's rate is then unchanged."""
        try:
            self._optimizer.lr = rate
        except ValueError as error:
            name = type(self).__name__
            raise ValueError(
                f"{name}{'.' if where else ''}{where}: the rate of step {shown(step)} is {rate!r} "
                f"({self._source(step)}), which the optimizer refuses: {error}"
            ) from None

    @property
    def step_limit(self) -> int | None:
        """The last step that has a learning rate (``OneCycle``'s ``total_steps``), or ``None``
        when every step has one: a :meth:`step` to a later one raises. :func:`minidl.train.fit`
        reads it to refuse, before training, a run that would step the schedule past it."""
        return None

    @property
    def rate_bound(self) -> float | None:
        """A rate that no step's rate exceeds (``CyclicLR``'s ``max_lr``), from the current
        settings, or ``None`` where the schedule does not know one (the default, for a schedule
        of one's own; a subclass of a built-in schedule that overrides :meth:`lr_at` overrides
        it too). :func:`minidl.train.fit` reads it to look, before training, for a rate of the
        run that the optimizer would refuse, only where there could be one."""
        return None

    @property
    def lr(self) -> float:
        """The learning rate of the current step."""
        return self._rate("lr", self._checked_last_step("lr"))

    def get_last_lr(self) -> list[float]:
        """``[lr]``: the rate of the current step in a list, as PyTorch's ``get_last_lr``
        returns one per parameter group (a minidl optimizer is one group)."""
        return [self.lr]

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state: the reference learning rate ``base_lr`` and the step counter
        ``last_step``, as :meth:`load_state_dict` takes it (a
        :class:`~minidl.optim.SequentialSchedule` may add ``base_lrs``).

        The state is where the schedule stands, not what it is: neither its class nor its
        settings (``step_size``, ``max_lr``, ...) are in it, as they are the schedule's own,
        given to its constructor or set since (a setting changed between a save and a load is
        kept). A state loaded into a schedule of other settings or another class gives that
        schedule's rate at the saved step. A checkpoint also saves the scheduler's class and
        settings (its repr), and :func:`minidl.checkpoint.load_checkpoint` refuses a scheduler
        that differs."""
        return {"base_lr": self.base_lr, "last_step": self._checked_last_step("state_dict")}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the step counter (and the reference learning rate) and set the optimizer's lr.

        The schedule keeps its class and settings (see :meth:`state_dict`).

        Everything is checked before anything changes, the rate of the restored step included;
        a refused state leaves the schedule as it was, and the schedules of a
        :class:`~minidl.optim.SequentialSchedule` (given the restored ``base_lr``) too.
        """
        name = type(self).__name__
        self._check_scheduling("load_state_dict")
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"{name}.load_state_dict: expected a mapping (as state_dict() returns), got "
                f"{type(state_dict).__name__}"
            )
        missing = {"base_lr", "last_step"} - set(state_dict)
        if missing:
            # (a PyTorch scheduler's state_dict: {"last_epoch": ..., "base_lrs": [...], ...})
            hint = (
                " (a PyTorch scheduler's state_dict, with last_epoch: a minidl schedule loads "
                "what a minidl schedule's state_dict() returns)"
                if "last_epoch" in state_dict
                else ""
            )
            raise KeyError(f"{name}.load_state_dict: missing keys {sorted(missing)}{hint}")
        last_step = check_int(
            f"{name}.load_state_dict", "last_step", state_dict["last_step"], low=0
        )
        limit = self.step_limit
        if limit is not None and last_step > limit:
            raise ValueError(
                f"{name}.load_state_dict: last_step {shown(last_step)} is past this schedule's "
                f"last step {shown(limit)} (its step_limit)"
            )
        base_lr = self._check_base_lr(f"{name}.load_state_dict", state_dict["base_lr"])
        restore_parts = self._checked_parts(f"{name}.load_state_dict", state_dict)
        # (all of it: a SequentialSchedule gives base_lr to its schedules, each of which may
        # have had another, set by hand, that setting its own previous one back would lose)
        saved = self._saved()
        try:
            self._set_base_lr(base_lr)
            restore_parts()
            self._give_rate("load_state_dict", last_step, self._rate("load_state_dict", last_step))
        except BaseException:
            self._put_back(saved)
            raise
        self.last_step = last_step
