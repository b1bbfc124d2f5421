"""The one-cycle policy (Smith & Topin, 2019)."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import ClassVar, Literal

from minidl._validate import check_int, check_real, plain_choice, shown
from minidl.optim.lr_scheduler import (
    LRScheduler,
    ScheduleSetting,
    checks_step,
    interval_repr,
    steps_repr,
)
from minidl.optim.optimizer import Optimizer

__all__ = ["OneCycle"]


def _check_max_lr(where: str, max_lr: object) -> float:
    return check_real(where, "max_lr", max_lr, low=0.0, low_open=True)


def _check_total_steps(where: str, total_steps: object) -> int:
    return check_int(where, "total_steps", total_steps, low=1)


def _check_pct_start(where: str, pct_start: object) -> float:
    return check_real(where, "pct_start", pct_start, low=0.0, high=1.0, high_open=True)


def _check_anneal_strategy(where: str, anneal_strategy: object) -> Literal["cos", "linear"]:
    given = plain_choice(anneal_strategy, ("cos", "linear"))
    if given is None:
        raise ValueError(
            f"{where}: anneal_strategy must be 'cos' or 'linear', got {shown(anneal_strategy)}"
        )
    return "cos" if given == "cos" else "linear"


def _check_div_factor(where: str, div_factor: object) -> float:
    return check_real(where, "div_factor", div_factor, low=0.0, low_open=True)


def _check_final_div_factor(where: str, final_div_factor: object) -> float:
    return check_real(where, "final_div_factor", final_div_factor, low=0.0, low_open=True)


class OneCycle(LRScheduler):
    r"""One cycle per training: up from ``max_lr / div_factor`` to ``max_lr``, then far below.

    With :math:`\lambda_{init} = \lambda_{max}/d`, :math:`\lambda_{min} = \lambda_{init}/d_f`,
    the end of the rise :math:`u = p\,T - 1` (:math:`p` = ``pct_start``, :math:`T` =
    ``total_steps``) and the end :math:`e = T - 1`:

    .. math::
        \lambda_t = \begin{cases}
            A(\lambda_{init}, \lambda_{max}, t / u) & t \le u \\
            A(\lambda_{max}, \lambda_{min}, (t - u)/(e - u)) & \text{otherwise}
        \end{cases}

    where the annealing :math:`A(a, b, x)` is :math:`b + \tfrac12(a - b)(1 + \cos \pi x)`
    (``"cos"``) or :math:`a + (b - a)x` (``"linear"``). Call :meth:`step` once per batch,
    ``total_steps`` times at most (one more raises, changing nothing). The same learning rates as
    PyTorch's ``lr_scheduler.OneCycleLR`` (with ``cycle_momentum=False``: this schedule sets
    the learning rate only) for steps 0 to :math:`T - 1`; at step :math:`T`, after the last
    batch, it stays at :math:`\lambda_{min}` where PyTorch extrapolates the annealing (below
    zero for ``"linear"``). Building it sets the optimizer's learning rate to step 0's:
    :math:`\lambda_{init}` (with ``"cos"``, as the formula rounds it), or with :math:`pT < 1`
    (so :math:`-1 \le u < 0`) no step rises and every step is one of the fall from :math:`u`
    on, as in PyTorch (step 0 then a little below :math:`\lambda_{max}`, :math:`\lambda_{init}`
    never taken, and with :math:`T = 1` the one step at :math:`\lambda_{min}`). :math:`pT = 1`
    is refused: the rise would end at step 0, whose fraction of it is :math:`0 / 0` (PyTorch's
    ``OneCycleLR`` raises ``ZeroDivisionError`` there).

    Args:
        optimizer: the optimizer to schedule.
        max_lr: :math:`\lambda_{max}`, > 0.
        total_steps: :math:`T`, the batches of the whole training, an integer >= 1 with
            :math:`pT \ne 1` (so that :math:`u \ne 0`) and :math:`u < e`.
        pct_start: :math:`p`, the fraction of the steps spent rising, in ``[0, 1)`` (default 0.3).
        anneal_strategy: ``"cos"`` (default) or ``"linear"``.
        div_factor: :math:`d`, > 0 (default 25).
        final_div_factor: :math:`d_f`, > 0 (default 1e4).

    Every setting may be set after construction: it is checked as by the constructor (the
    ``total_steps`` set must also leave the current step within it), the rates derived from it
    (``initial_lr``, ``min_lr``, the end of the rise) are recomputed, and the optimizer's rate is
    set to the current step's, so that the schedule is the one built with that value. Its
    ``base_lr``, the optimizer's rate before it was built, which its rates do not read, cannot
    be set (``AttributeError``).

    Example:
        >>> scheduler = OneCycle(optimizer, max_lr=0.1, total_steps=400 * 10)  # epochs * batches
    """

    _interval = "batch"
    takes_own_rates = True
    _fixed_settings: ClassVar[Mapping[str, str]] = {
        "base_lr": "is the optimizer's rate before the schedule was built, which its rates do "
        "not read (they come from max_lr, div_factor and final_div_factor); set those"
    }
    # The largest total_steps that converts to a float (the largest finite float, an integer).
    _LARGEST_STEPS = int(sys.float_info.max)

    max_lr = ScheduleSetting(_check_max_lr)
    total_steps = ScheduleSetting(_check_total_steps)
    pct_start = ScheduleSetting(_check_pct_start)
    anneal_strategy = ScheduleSetting(_check_anneal_strategy)
    div_factor = ScheduleSetting(_check_div_factor)
    final_div_factor = ScheduleSetting(_check_final_div_factor)
    _max_lr: float
    _total_steps: int
    _pct_start: float
    _anneal_strategy: Literal["cos", "linear"]
    _div_factor: float
    _final_div_factor: float

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.3,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
    ) -> None:
        super().__init__(optimizer)
        self.max_lr = max_lr
        self.total_steps = total_steps
        self.pct_start = pct_start
        self.anneal_strategy = anneal_strategy
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self._derive(type(self).__name__, "")
        self._start()

    def _derive(self, where: str, name: str) -> None:
        """The rates and steps derived from the settings, and the check that the rise, if it
        has a step, ends past step 0 and before the end."""
        self._initial_lr = self._max_lr / self._div_factor
        self._min_lr = self._initial_lr / self._final_div_factor
        if self._total_steps > self._LARGEST_STEPS:  # (pct_start * total_steps would overflow)
            raise ValueError(
                f"{where}: total_steps must be at most {sys.float_info.max:g} (the largest "
                f"float), got {shown(self._total_steps)}"
            )
        self._rise_end = self._pct_start * self._total_steps - 1
        self._end = self._total_steps - 1
        if self._rise_end == 0:
            raise ValueError(
                f"{where}: pct_start * total_steps - 1 = 0 (pct_start={self._pct_start}, "
                f"total_steps={shown(self._total_steps)}) ends the rise at step 0, whose fraction "
                "of the rise is 0 / 0 (PyTorch's OneCycleLR raises ZeroDivisionError); change "
                "pct_start or total_steps (below 0 no step rises, above 0 step 0 is initial_lr)"
            )
        if not self._rise_end < self._end:
            raise ValueError(
                f"{where}: pct_start * total_steps - 1 = {self._rise_end:g} must be below "
                f"total_steps - 1 = {shown(self._end)}, or the fall has no step (lower "
                f"pct_start={self._pct_start})"
            )

    @property
    def initial_lr(self) -> float:
        r""":math:`\lambda_{init} = \lambda_{max} / d`, the rate of step 0 (with ``"cos"``, as
        the annealing formula rounds it, as PyTorch's does: 0.020000000000000018 for 0.02);
        set ``max_lr`` or ``div_factor`` to change it."""
        return self._initial_lr

    @initial_lr.setter
    def initial_lr(self, value: object) -> None:
        raise AttributeError(
            f"{type(self).__name__}.initial_lr is max_lr / div_factor; set max_lr or div_factor"
        )

    @property
    def min_lr(self) -> float:
        r""":math:`\lambda_{min} = \lambda_{init} / d_f`, the rate at the end (set ``max_lr``,
        ``div_factor`` or ``final_div_factor`` to change it)."""
        return self._min_lr

    @min_lr.setter
    def min_lr(self, value: object) -> None:
        raise AttributeError(
            f"{type(self).__name__}.min_lr is max_lr / div_factor / final_div_factor; set "
            "max_lr, div_factor or final_div_factor"
        )

    @property
    def step_limit(self) -> int:
        """``total_steps``: the schedule has no rate past it."""
        return self._total_steps

    @property
    def rate_bound(self) -> float:
        """The largest of the initial rate, ``max_lr`` and ``min_lr``, between which it anneals
        (a ``div_factor`` or ``final_div_factor`` below 1 makes one of the others the largest)."""
        return max(self._initial_lr, self._max_lr, self._min_lr)

    def _anneal(self, start: float, end: float, fraction: float) -> float:
        """``A(start, end, fraction)`` of the class docstring, in the order of operations of
        torch's OneCycleLR (the same roundings, so the same rates)."""
        if self._anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1)
        return (end - start) * fraction + start

    @checks_step
    def lr_at(self, step: int) -> float:
        if step > self._total_steps:
            raise ValueError(
                f"{type(self).__name__}: step {shown(step)} is past total_steps="
                f"{shown(self._total_steps)}; build the "
                "schedule with the number of batches of the whole training"
            )
        if step <= self._rise_end:
            return self._anneal(self._initial_lr, self._max_lr, step / self._rise_end)
        # Step total_steps (after the last batch) stays at min_lr where torch extrapolates the
        # annealing past its end (below zero for "linear").
        fraction = min((step - self._rise_end) / (self._end - self._rise_end), 1.0)
        return self._anneal(self._max_lr, self._min_lr, fraction)

    def __repr__(self) -> str:
        return (
            f"OneCycle(max_lr={self.max_lr}, total_steps={steps_repr(self.total_steps)}, "
            f"pct_start={self.pct_start}, anneal_strategy={self.anneal_strategy!r}, "
            f"div_factor={self.div_factor}, final_div_factor={self.final_div_factor}"
            f"{interval_repr(self.interval, 'batch')})"
        )
