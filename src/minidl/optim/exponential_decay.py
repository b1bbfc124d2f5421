"""Exponential decay of the learning rate."""

from __future__ import annotations

from typing import Literal

from minidl.optim.lr_scheduler import (
    LRScheduler,
    ScheduleSetting,
    check_decay_gamma,
    checks_step,
    interval_repr,
)
from minidl.optim.optimizer import Optimizer

__all__ = ["ExponentialDecay"]


class ExponentialDecay(LRScheduler):
    r"""Multiply the learning rate by :math:`\gamma` every step: :math:`\lambda_t = \lambda_0 \gamma^t`.

    :math:`\lambda_0` is the optimizer's learning rate when the scheduler is built. The same
    rates as PyTorch's ``lr_scheduler.ExponentialLR`` to rounding (it multiplies the previous
    rate by :math:`\gamma` at every step, where this computes the closed form).

    Args:
        optimizer: the optimizer to schedule.
        gamma: :math:`\gamma`, in ``(0, 1]``.
        interval: call :meth:`step` after every ``"epoch"`` or ``"batch"``; ``None``
            (default) keeps the class's, ``"epoch"`` (or what a subclass sets as its own
            class attribute ``interval``).

    Example:
        >>> scheduler = ExponentialDecay(optimizer, gamma=0.95)
    """

    #: :math:`\gamma`: checked when set, as by the constructor, and the optimizer's rate set
    #: to the current step's (see :class:`~minidl.optim.LRScheduler`).
    gamma = ScheduleSetting(check_decay_gamma)
    _gamma: float

    def __init__(
        self,
        optimizer: Optimizer,
        gamma: float,
        interval: Literal["epoch", "batch"] | None = None,
    ) -> None:
        super().__init__(optimizer)
        self.gamma = gamma
        self._take_interval(interval)
        self._start()

    @checks_step
    def lr_at(self, step: int) -> float:
        return self._base_lr * self._gamma**step

    @property
    def rate_bound(self) -> float:
        """``base_lr``: ``gamma`` is at most 1."""
        return self._base_lr

    def __repr__(self) -> str:
        return f"ExponentialDecay(gamma={self.gamma}, base_lr={self.base_lr}{interval_repr(self.interval)})"
