"""Cosine annealing of the learning rate (Loshchilov & Hutter, 2017)."""

from __future__ import annotations

import math
from typing import Literal

from minidl._validate import check_int, check_real
from minidl.optim.exponential_decay import check_interval, interval_repr
from minidl.optim.lr_scheduler import LRScheduler
from minidl.optim.optimizer import Optimizer

__all__ = ["CosineAnnealing"]


class CosineAnnealing(LRScheduler):
    r"""Half a cosine from the learning rate down to ``eta_min`` over ``T_max`` steps.

    .. math::
        \lambda_t = \eta_{min} + \tfrac12(\lambda_0 - \eta_{min})\left(1 + \cos\frac{\pi t}{T_{max}}\right)

    with :math:`\lambda_0` the optimizer's learning rate when the scheduler is built. Past
    :math:`T_{max}` the cosine goes on (back up to :math:`\lambda_0` at :math:`2T_{max}`), like
    PyTorch's ``lr_scheduler.CosineAnnealingLR``; that class computes the same values
    recursively (they agree to rounding).

    Args:
        optimizer: the optimizer to schedule.
        T_max: :math:`T_{max}`, the steps of the half period, an integer >= 1.
        eta_min: :math:`\eta_{min}`, the lowest rate, >= 0 (default 0).
        interval: call :meth:`step` after every ``"epoch"`` (default) or ``"batch"``.

    Example:
        >>> scheduler = CosineAnnealing(optimizer, T_max=100)
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_max: int,
        eta_min: float = 0.0,
        interval: Literal["epoch", "batch"] = "epoch",
    ) -> None:
        super().__init__(optimizer)
        self.T_max = check_int("CosineAnnealing", "T_max", T_max)
        self.eta_min = check_real("CosineAnnealing", "eta_min", eta_min, low=0.0)
        self.interval = check_interval("CosineAnnealing", interval)
        self._start()

    def lr_at(self, step: int) -> float:
        cosine = 1 + math.cos(math.pi * step / self.T_max)
        return self.eta_min + (self.base_lr - self.eta_min) * (cosine / 2)

    def __repr__(self) -> str:
        return (
            f"CosineAnnealing(T_max={self.T_max}, eta_min={self.eta_min}, base_lr={self.base_lr}"
            f"{interval_repr(self.interval)})"
        )
