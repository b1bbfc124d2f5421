"""Linear warm-up of the learning rate."""

from __future__ import annotations

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

__all__ = ["LinearWarmup"]


def _check_warmup_steps(where: str, warmup_steps: object) -> int:
    return check_int(where, "warmup_steps", warmup_steps)


def _check_start_factor(where: str, start_factor: object) -> float:
    return check_real(where, "start_factor", start_factor, low=0.0, high=1.0, low_open=True)


class LinearWarmup(LRScheduler):
    r"""Raise the learning rate linearly from ``start_factor`` times it to it over ``warmup_steps``.

    .. math::
        \lambda_t = \lambda_0 \left(f + (1 - f)\,\frac{\min(t, T)}{T}\right)

    with :math:`\lambda_0` the optimizer's learning rate when the scheduler is built, :math:`f`
    = ``start_factor`` and :math:`T` = ``warmup_steps``; constant at :math:`\lambda_0` after
    that. The same rates as PyTorch's ``lr_scheduler.LinearLR(start_factor=f,
    end_factor=1, total_iters=T)`` to rounding (it multiplies the previous rate by a ratio at
    every step, where this computes the closed form); ``start_factor`` defaults to 0.1, where
    ``LinearLR``'s is 1/3. To warm up into another schedule, chain both with
    :class:`~minidl.optim.SequentialSchedule`.

    Args:
        optimizer: the optimizer to schedule.
        warmup_steps: :math:`T`, an integer >= 1.
        start_factor: :math:`f`, in ``(0, 1]`` (default 0.1).
        interval: call :meth:`step` after every ``"epoch"`` or ``"batch"``; ``None``
            (default) keeps the class's, ``"epoch"`` (or what a subclass sets as its own
            class attribute ``interval``).

    Example:
        >>> scheduler = LinearWarmup(optimizer, warmup_steps=100, start_factor=0.01)
    """

    #: :math:`T` and :math:`f`: checked when set, as by the constructor, and the optimizer's
    #: rate set to the current step's (see :class:`~minidl.optim.LRScheduler`).
    warmup_steps = ScheduleSetting(_check_warmup_steps)
    start_factor = ScheduleSetting(_check_start_factor)
    _warmup_steps: int
    _start_factor: float

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        start_factor: float = 0.1,
        interval: Literal["epoch", "batch"] | None = None,
    ) -> None:
        super().__init__(optimizer)
        self.warmup_steps = warmup_steps
        self.start_factor = start_factor
        self._take_interval(interval)
        self._start()

    @checks_step
    def lr_at(self, step: int) -> float:
        steps, factor = self._warmup_steps, self._start_factor
        return self._base_lr * (factor + (1 - factor) * (min(step, steps) / steps))

    @property
    def rate_bound(self) -> float:
        """``base_lr``, which it warms up to (``start_factor`` is at most 1)."""
        return self._base_lr

    def __repr__(self) -> str:
        return (
            f"LinearWarmup(warmup_steps={steps_repr(self.warmup_steps)}, start_factor={self.start_factor}, "
            f"base_lr={self.base_lr}{interval_repr(self.interval)})"
        )
