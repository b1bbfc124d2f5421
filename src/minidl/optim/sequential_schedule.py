"""Schedules one after the other (e.g. a warm-up, then a decay)."""

from __future__ import annotations

import bisect
import copy
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from minidl._validate import shown
from minidl.optim.lr_scheduler import (
    LRScheduler,
    checks_step,
    fixed,
    python_error,
    steps_repr,
)
from minidl.optim.optimizer import Optimizer

__all__ = ["SequentialSchedule"]


def _as_list(name: str, values: object) -> list[Any]:
    # (a 0-dim tensor or NumPy array is one number: Iterable, but its __iter__ raises)
    one = isinstance(values, Iterable) and getattr(values, "ndim", None) == 0
    if isinstance(values, str) or not isinstance(values, Iterable) or one:
        kind = f"a 0-dim {type(values).__name__}" if one else type(values).__name__
        raise TypeError(f"SequentialSchedule: {name} must be a sequence, got {kind}")
    return list(values)


def _check_milestones(where: str, milestones: list[Any], schedules: int) -> list[int]:
    """The milestones as a list of ints: one fewer than the ``schedules``, strictly increasing
    from 1 on."""
    if len(milestones) != schedules - 1:
        raise ValueError(
            f"{where}: expected {schedules - 1} milestones for {schedules} schedules, got "
            f"{len(milestones)}"
        )
    checked: list[int] = []
    previous = 0
    for index, milestone in enumerate(milestones):
        if isinstance(milestone, bool) or not isinstance(milestone, numbers.Integral):
            raise TypeError(
                f"{where}: milestones must be integers, got milestones[{index}] = {shown(milestone)} "
                f"({type(milestone).__name__})"
            )
        if int(milestone) <= previous:
            raise ValueError(
                f"{where}: milestones must be strictly increasing integers >= 1, got "
                f"{shown(milestones)}"
            )
        previous = int(milestone)
        checked.append(previous)
    return checked


class SequentialSchedule(LRScheduler):
    r"""Run ``schedules[0]`` until ``milestones[0]``, then ``schedules[1]`` from its step 0, ...

    At step :math:`t`, with :math:`i` the number of milestones :math:`\le t` and :math:`M_{-1} = 0`,
    :math:`\lambda_t = s_i(t - M_{i-1})`, where :math:`s_i` is ``schedules[i].lr_at``: each
    schedule starts afresh at its milestone, like PyTorch's ``lr_scheduler.SequentialLR``.

    Every schedule must be built on ``optimizer``. Building a schedule sets the optimizer's
    learning rate, so the later ones would see the earlier ones' rate as their reference: this
    class resets every schedule's ``base_lr`` to that of the one built first, in whatever order
    they are listed (the optimizer's rate when it was built; ``CyclicLR``'s lower bound), as
    ``SequentialLR`` restarts each from the optimizer's initial rate, and a nested
    ``SequentialSchedule`` passes it on to its own schedules. Schedules that take their own
    rates (``takes_own_rates``: :class:`~minidl.optim.OneCycle`, :class:`~minidl.optim.CyclicLR`)
    keep them. A ``OneCycle`` anywhere in the list is where the two differ: minidl restarts the
    others from the rate above, where ``SequentialLR`` restarts them from ``OneCycleLR``'s
    ``max_lr / div_factor``, which its constructor writes over the optimizer's initial rate
    wherever it is listed. A nested sequence is the other: a ``SequentialSchedule`` inside
    another runs as the flat sequence of their schedules, where a ``SequentialLR`` inside
    another is stepped once by the outer one's constructor and reaches its own milestones one
    step early (PyTorch 2.13). A third is a schedule stepped before the sequence was built:
    minidl restarts from the rate that the first schedule of the sequence found, where
    ``SequentialLR`` restarts from the ``initial_lr`` that the first scheduler ever built on
    the optimizer recorded (after three steps of an ``ExponentialLR`` of 0.5, its rates are 8
    times minidl's). Only this object's :meth:`step` should be called.

    Args:
        optimizer: the optimizer to schedule.
        schedules: the schedules, in order (at least one), all with the same ``interval``.
        milestones: the steps where each next schedule starts: strictly increasing integers,
            each at least 1, one fewer than the schedules.

    ``milestones`` and ``base_lr`` may be set after construction: checked as by the constructor
    (``base_lr`` passed on to the schedules, as when built), with the optimizer's rate set to
    the current step's. ``schedules`` and ``interval`` are fixed at construction. A schedule of
    the sequence may have its own settings set; the optimizer's rate follows at the sequence's
    next ``step``. Such a change is checked against the sequence too, and refused in the
    schedule's words, changing nothing, if the sequence would have no rate at its current step
    (a ``OneCycle``'s ``total_steps`` that ends the sequence before it) or the schedule would
    step at another ``interval`` than the sequence's.

    Example:
        >>> warmup = LinearWarmup(optimizer, warmup_steps=5, start_factor=0.1)
        >>> decay = CosineAnnealing(optimizer, T_max=95)
        >>> scheduler = SequentialSchedule(optimizer, [warmup, decay], milestones=[5])
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedules: Sequence[LRScheduler],
        milestones: Sequence[int],
    ) -> None:
        super().__init__(optimizer)
        schedules = _as_list("schedules", schedules)
        milestones = _as_list("milestones", milestones)
        if not schedules:
            raise ValueError(f"{type(self).__name__}: give at least one schedule")
        for index, schedule in enumerate(schedules):
            if not isinstance(schedule, LRScheduler):
                raise TypeError(
                    f"{type(self).__name__}: schedules[{index}] must be an LRScheduler, "
                    f"got {type(schedule).__name__}"
                )
            if schedule.optimizer is not optimizer:
                raise ValueError(
                    f"{type(self).__name__}: schedules[{index}] ({type(schedule).__name__}) "
                    "schedules another optimizer"
                )
        intervals = {schedule.interval for schedule in schedules}
        if len(intervals) != 1:
            raise ValueError(
                f"{type(self).__name__}: all schedules must step at the same interval, got "
                f"{sorted(intervals)}"
            )
        self._schedules: list[LRScheduler] = schedules
        self._milestones: list[int] = _check_milestones(
            type(self).__name__, milestones, len(schedules)
        )
        self._interval = schedules[0].interval
        # The rate before any of them was built: the reference of the one built first (the
        # later ones were built on the rate it set), over the schedules inside a sequence too
        # (a sequence is built after its schedules, which may come after those of this one).
        # (A schedule pickled before the optimizer counted them has no _order: built before
        # any built since it was loaded; such schedules in the order of the count of the
        # process that built them, _built.)
        first = min(
            (part for schedule in schedules for part in schedule._parts()),
            key=lambda schedule: (getattr(schedule, "_order", -1), getattr(schedule, "_built", -1)),
        )
        # (refused, by the optimizer at the rate of step 0, say: the schedules as they were)
        saved = [state for schedule in schedules for state in schedule._saved()]
        try:
            self._set_base_lr(first.base_lr)
            self._start()
        except BaseException:
            self._put_back(saved)
            raise
        # Built: from now on a change of a schedule's settings is checked by this sequence.
        for schedule in schedules:
            schedule._container = self

    @property
    def schedules(self) -> list[LRScheduler]:
        """The schedules, in order (fixed at construction): a new list, whose changes do not
        reach the sequence."""
        return list(self._schedules)

    @schedules.setter
    def schedules(self, value: object) -> None:
        raise fixed(self, "schedules", f"build a new {type(self).__name__}")

    @property
    def interval(self) -> Literal["epoch", "batch"]:
        """When to call :meth:`step`: the ``interval`` of the schedules (fixed at construction)."""
        return self._interval

    @interval.setter
    def interval(self, value: object) -> None:
        raise fixed(
            self,
            "interval",
            f"it is that of its schedules: build them with the interval wanted, then a new "
            f"{type(self).__name__}",
        )

    @property
    def milestones(self) -> list[int]:
        """The steps where each next schedule starts; checked when set, as by the
        constructor. A new list: change them by setting it (``seq.milestones = [...]``), as
        a change made to the list returned would not be checked."""
        return list(self._milestones)

    @milestones.setter
    def milestones(self, value: Sequence[int]) -> None:
        where = type(self).__name__
        checked = _check_milestones(where, _as_list("milestones", value), len(self._schedules))
        self._change("milestones", {"_milestones": checked})

    def _check_part(self, where: str, change: str, part: LRScheduler) -> None:
        """Refuse a ``change`` (``"name=value"``) of a setting of ``part`` (one of the schedules)
        or of a schedule inside it, after which this sequence would step ``part`` at another
        interval than its own, or have no rate at its current step; ``where`` names the
        schedule changed."""
        kind = type(self).__name__
        if part.interval != self._interval:
            raise ValueError(
                f"{where}: interval must be {self._interval!r}, that of the {kind} it is part "
                f"of (its schedules step at one interval), got {part.interval!r}; build the "
                f"schedules with the interval wanted, then a new {kind}"
            )
        limit = self.step_limit
        if limit is not None and self.last_step > limit:
            raise ValueError(
                f"{where}: with {change} the {kind} it is part of would end at step "
                f"{shown(limit)} (its step_limit), before its current step {shown(self.last_step)}"
            )
        try:
            rate = self.lr_at(self.last_step)
        except (OverflowError, ZeroDivisionError) as error:  # (as _rate names them)
            cause = python_error(error)
            raise ValueError(
                f"{where}: with {change} the rate of the current step {shown(self.last_step)} of "
                f"the {kind} it is part of cannot be computed ({cause}); expected settings and "
                "steps within the range of a float"
            ) from error
        if not (math.isfinite(rate) and rate >= 0):
            raise ValueError(
                f"{where}: with {change} the rate of the current step {shown(self.last_step)} of the "
                f"{kind} it is part of would be {rate!r}; expected a finite rate >= 0"
            )

    def __setstate__(self, state: dict[str, Any]) -> None:
        """For pickle and ``copy.deepcopy``: also a sequence pickled before its schedules knew
        it (see ``_check_part``) is given to them."""
        super().__setstate__(state)
        for schedule in self._schedules:
            if "_container" not in vars(schedule):
                schedule._container = self

    def _copy_parts(self, original: LRScheduler) -> None:
        # (its schedules copied with their own parts, each given to this copy, the optimizer
        # shared: a copy's schedules stepped by both sequences would be stepped twice)
        memo: dict[int, Any] = {id(self._optimizer): self._optimizer, id(original): self}
        self._schedules = copy.deepcopy(self._schedules, memo)

    def _parts(self) -> list[LRScheduler]:
        return [self, *(part for schedule in self._schedules for part in schedule._parts())]

    def _derive(self, where: str, name: str) -> None:
        if name == "base_lr":
            self._set_base_lr(self._base_lr)

    @checks_step
    def lr_at(self, step: int) -> float:
        milestones = self._milestones
        index = bisect.bisect_right(milestones, step)
        start = milestones[index - 1] if index > 0 else 0
        schedule = self._schedules[index]
        own = schedule.step_limit
        if own is not None and step - start > own:
            # (in the sequence's steps, where the schedule's refusal counted its own)
            raise ValueError(
                f"{type(self).__name__}: step {shown(step)} is past step {shown(start + own)}, the "
                f"last of the {type(schedule).__name__} from step {shown(start)} (it has rates "
                f"for {shown(own)} steps; the sequence's step_limit is {shown(self.step_limit)})"
            )
        return schedule.lr_at(step - start)

    def _source(self, step: int) -> str:
        """Where the rate of ``step`` comes from: the schedule that gives it (the sequence's
        ``base_lr`` was named, where a CyclicLR's own ``max_lr`` gave it)."""
        milestones = self._milestones
        index = bisect.bisect_right(milestones, step)
        start = milestones[index - 1] if index > 0 else 0
        return self._schedules[index]._source(step - start)

    @property
    def step_limit(self) -> int | None:
        """The last step before one of the schedules runs past its own ``step_limit`` (a
        schedule before the last is only asked for the steps up to the next milestone)."""
        limit: int | None = None
        starts = [0, *self._milestones]
        for index, schedule in enumerate(self._schedules):
            own = schedule.step_limit
            if own is None:
                continue
            last = starts[index] + own
            if index + 1 < len(starts) and last >= starts[index + 1] - 1:
                continue  # the next schedule takes over before this one runs out
            limit = last if limit is None else min(limit, last)
        return limit

    @property
    def rate_bound(self) -> float | None:
        """The largest of its schedules' bounds (``None`` if one has none)."""
        bounds = [schedule.rate_bound for schedule in self._schedules]
        return None if None in bounds else max(bound for bound in bounds if bound is not None)

    def state_dict(self) -> dict[str, Any]:
        """``base_lr`` and ``last_step``, as every schedule's; and, where a schedule it holds
        has a ``base_lr`` of its own set by hand (one that restoring the sequence's would not
        give it back), ``base_lrs``: the ``base_lr`` of every schedule it holds, in order, a
        sequence inside it followed by its own."""
        state = super().state_dict()
        parts = self._parts()[1:]
        # (restoring the sequence's base_lr gives it to every schedule but those that take
        # their own rates, which keep the one they were built with: CyclicLR's lower bound)
        if any(
            part.base_lr
            != (getattr(part, "_built_base_lr", None) if part.takes_own_rates else self.base_lr)
            for part in parts
        ):
            state["base_lrs"] = [part.base_lr for part in parts]
        return state

    def _checked_parts(self, where: str, state_dict: Mapping[str, Any]) -> Callable[[], None]:
        """The ``base_lrs`` of a state (see :meth:`state_dict`), checked as each schedule checks
        its own ``base_lr``: given back to each once the sequence's is restored."""
        base_lrs = state_dict.get("base_lrs")
        if base_lrs is None:
            return super()._checked_parts(where, state_dict)
        parts = self._parts()[1:]
        if not isinstance(base_lrs, list | tuple) or len(base_lrs) != len(parts):
            raise ValueError(
                f"{where}: base_lrs must be a list of {len(parts)} rates, the base_lr of each "
                f"schedule it holds (as state_dict() gives it), got {shown(base_lrs)}"
            )
        checked = [
            part._check_base_lr(f"{where}: base_lrs[{index}] ({type(part).__name__})", value)
            for index, (part, value) in enumerate(zip(parts, base_lrs, strict=True))
        ]

        def restore() -> None:
            # (in order: a sequence inside gives its own to its schedules, which come after it)
            for part, value in zip(parts, checked, strict=True):
                part._set_base_lr(value)

        return restore

    def _set_base_lr(self, base_lr: float) -> None:
        """Take ``base_lr`` as the reference rate, and give it to every schedule that does not
        take its own rates (a restored ``state_dict``'s rate too)."""
        self._base_lr = base_lr
        for schedule in self._schedules:
            schedule._restart_from(base_lr)

    def __repr__(self) -> str:
        inner = ", ".join(repr(schedule) for schedule in self._schedules)
        return f"SequentialSchedule([{inner}], milestones={steps_repr(self._milestones)})"
