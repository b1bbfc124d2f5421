"""Cosine annealing with warm restarts: SGDR (Loshchilov & Hutter, 2017)."""

from __future__ import annotations

import math
from typing import Literal

from minidl._validate import check_int
from minidl.optim.cosine_annealing import check_eta_min
from minidl.optim.lr_scheduler import (
    LRScheduler,
    ScheduleSetting,
    checks_step,
    interval_repr,
    steps_repr,
)
from minidl.optim.optimizer import Optimizer

__all__ = ["CosineAnnealingWarmRestarts"]


def _check_t_0(where: str, t_0: object) -> int:
    return check_int(where, "T_0", t_0)


def _check_t_mult(where: str, t_mult: object) -> int:
    return check_int(where, "T_mult", t_mult)


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""Cosine annealing restarted every period, each period ``T_mult`` times the previous one.

    Period :math:`i = 0, 1, \dots` lasts :math:`T_i = T_0 T_{mult}^i` steps. At step :math:`t`,
    with :math:`T_{cur}` the steps since the last restart,

    .. math::
        \lambda_t = \eta_{min} + \tfrac12(\lambda_0 - \eta_{min})\left(1 + \cos\frac{\pi T_{cur}}{T_i}\right)

    The same sequence as PyTorch's ``lr_scheduler.CosineAnnealingWarmRestarts`` stepped
    without an epoch argument.

    Args:
        optimizer: the optimizer to schedule.
        T_0: :math:`T_0`, the steps of the first period, an integer >= 1.
        T_mult: :math:`T_{mult}`, the growth of the periods, an integer >= 1 (default 1).
        eta_min: :math:`\eta_{min}`, the lowest rate, >= 0 (default 0).
        interval: call :meth:`step` after every ``"epoch"`` or ``"batch"``; ``None``
            (default) keeps the class's, ``"epoch"`` (or what a subclass sets as its own
            class attribute ``interval``).

    Example:
        >>> scheduler = CosineAnnealingWarmRestarts(optimizer, T_0=10, T_mult=2)
    """

    #: :math:`T_0`, :math:`T_{mult}` and :math:`\eta_{min}`: checked when set, as by the
    #: constructor, and the optimizer's rate set to the current step's (see
    #: :class:`~minidl.optim.LRScheduler`).
    T_0 = ScheduleSetting(_check_t_0)
    T_mult = ScheduleSetting(_check_t_mult)
    eta_min = ScheduleSetting(check_eta_min)
    _T_0: int
    _T_mult: int
    _eta_min: float

    def __init__(
        self,
        optimizer: Optimizer,
        T_0: int,
        T_mult: int = 1,
        eta_min: float = 0.0,
        interval: Literal["epoch", "batch"] | None = None,
    ) -> None:
        super().__init__(optimizer)
        self.T_0 = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self._take_interval(interval)
        self._start()

    def _position(self, step: int) -> tuple[int, int]:
        """``(T_cur, T_i)``: steps since the last restart and the length of the current period."""
        if self._T_mult == 1:
            return step % self._T_0, self._T_0
        # Exact integer search rather than a floating logarithm (which can floor the wrong way).
        period, start = self._T_0, 0
        while step >= start + period:
            start += period
            period *= self._T_mult
        return step - start, period

    @checks_step
    def lr_at(self, step: int) -> float:
        t_cur, t_i = self._position(step)
        cosine = 1 + math.cos(math.pi * t_cur / t_i)
        return self._eta_min + (self._base_lr - self._eta_min) * (cosine / 2)

    @property
    def rate_bound(self) -> float:
        """``base_lr`` or ``eta_min``, between which it anneals."""
        return max(self._base_lr, self._eta_min)

    def __repr__(self) -> str:
        return (
            f"CosineAnnealingWarmRestarts(T_0={steps_repr(self.T_0)}, "
            f"T_mult={steps_repr(self.T_mult)}, "
            f"eta_min={self.eta_min}, base_lr={self.base_lr}{interval_repr(self.interval)})"
        )
