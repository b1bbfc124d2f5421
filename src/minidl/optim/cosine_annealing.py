"""Cosine annealing of the learning rate (Loshchilov & Hutter, 2017)."""

from __future__ import annotations

import math
from typing import Literal

from minidl._validate import check_int, check_real
from minidl.optim.lr_scheduler import (
    LRScheduler,
    ScheduleSetting,
    checks_step,
    interval_repr,
    steps_repr,
)
from minidl.optim.optimizer import Optimizer

__all__ = ["CosineAnnealing"]


def _check_t_max(where: str, t_max: object) -> int:
    return check_int(where, "T_max", t_max)


def check_eta_min(where: str, eta_min: object) -> float:
    """Check a cosine schedule's lowest rate ``eta_min``: finite and >= 0."""
    return check_real(where, "eta_min", eta_min, low=0.0)


class CosineAnnealing(LRScheduler):
    r"""Half a cosine from the learning rate down to ``eta_min`` over ``T_max`` steps.

    .. math::
        \lambda_t = \eta_{min} + \tfrac12(\lambda_0 - \eta_{min})\left(1 + \cos\frac{\pi t}{T_{max}}\right)

    with :math:`\lambda_0` the optimizer's learning rate when the scheduler is built, computed
    as :math:`\lambda_0 w + \eta_{min}(1 - w)` with :math:`w = \tfrac12(1 + \cos\frac{\pi t}{T_{max}})`
    so that step 0 has exactly :math:`\lambda_0` (as in PyTorch) and step :math:`T_{max}`
    exactly :math:`\eta_{min}`, whatever their rounding. Past
    :math:`T_{max}` the cosine goes on (back up to :math:`\lambda_0` at :math:`2T_{max}`), like
    PyTorch's ``lr_scheduler.CosineAnnealingLR``; that class computes the same values
    recursively: they agree to rounding, PyTorch's error growing with the steps (a relative
    1e-11 after 1 000 steps of ``T_max=1000``, 2e-10 after 5 000 of ``T_max=5000``, in float64).

    Args:
        optimizer: the optimizer to schedule.
        T_max: :math:`T_{max}`, the steps of the half period, an integer >= 1.
        eta_min: :math:`\eta_{min}`, the lowest rate, >= 0 (default 0).
        interval: call :meth:`step` after every ``"epoch"`` or ``"batch"``; ``None``
            (default) keeps the class's, ``"epoch"`` (or what a subclass sets as its own
            class attribute ``interval``).

    Example:
        >>> scheduler = CosineAnnealing(optimizer, T_max=100)
    """

    #: :math:`T_{max}` and :math:`\eta_{min}`: checked when set, as by the constructor, and the
    #: optimizer's rate set to the current step's (see :class:`~minidl.optim.LRScheduler`).
    T_max = ScheduleSetting(_check_t_max)
    eta_min = ScheduleSetting(check_eta_min)
    _T_max: int
    _eta_min: float

    def __init__(
        self,
        optimizer: Optimizer,
        T_max: int,
        eta_min: float = 0.0,
        interval: Literal["epoch", "batch"] | None = None,
    ) -> None:
        super().__init__(optimizer)
        self.T_max = T_max
        self.eta_min = eta_min
        self._take_interval(interval)
        self._start()

    @checks_step
    def lr_at(self, step: int) -> float:
        # The two weights, (1 + cos) / 2 and (1 - cos) / 2, are exactly 1 and 0 where the cosine
        # is 1 or -1: the rate is then exactly lambda_0 (at step 0, as PyTorch's first rate) or
        # eta_min, which eta_min + (lambda_0 - eta_min) * 1 can miss by its rounding.
        cosine = math.cos(math.pi * step / self._T_max)
        return self._base_lr * ((1 + cosine) / 2) + self._eta_min * ((1 - cosine) / 2)

    @property
    def rate_bound(self) -> float:
        """``base_lr`` or ``eta_min``, between which it anneals."""
        return max(self._base_lr, self._eta_min)

    def __repr__(self) -> str:
        return (
            f"CosineAnnealing(T_max={steps_repr(self.T_max)}, eta_min={self.eta_min}, base_lr={self.base_lr}"
            f"{interval_repr(self.interval)})"
        )
