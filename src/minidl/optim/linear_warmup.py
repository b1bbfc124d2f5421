"""Linear warm-up of the learning rate."""

from __future__ import annotations

from typing import Literal

from minidl._validate import check_int, check_real
from minidl.optim.exponential_decay import check_interval, interval_repr
from minidl.optim.lr_scheduler import LRScheduler
from minidl.optim.optimizer import Optimizer

__all__ = ["LinearWarmup"]


class LinearWarmup(LRScheduler):
    r"""Raise the learning rate linearly from ``start_factor`` times it to it over ``warmup_steps``.

    .. math::
        \lambda_t = \lambda_0 \left(f + (1 - f)\,\frac{\min(t, T)}{T}\right)

    with :math:`\lambda_0` the optimizer's learning rate when the scheduler is built, :math:`f`
    = ``start_factor`` and :math:`T` = ``warmup_steps``; constant at :math:`\lambda_0` after
    that. The same sequence as PyTorch's ``lr_scheduler.LinearLR(start_factor=f,
    end_factor=1, total_iters=T)``. To warm up into another schedule, chain both with
    :class:`~minidl.optim.SequentialSchedule`.

    Args:
        optimizer: the optimizer to schedule.
        warmup_steps: :math:`T`, an integer >= 1.
        start_factor: :math:`f`, in ``(0, 1]`` (default 0.1).
        interval: call :meth:`step` after every ``"epoch"`` (default) or ``"batch"``.

    Example:
        >>> scheduler = LinearWarmup(optimizer, warmup_steps=100, start_factor=0.01)
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        start_factor: float = 0.1,
        interval: Literal["epoch", "batch"] = "epoch",
    ) -> None:
        super().__init__(optimizer)
        self.warmup_steps = check_int("LinearWarmup", "warmup_steps", warmup_steps)
        self.start_factor = check_real(
            "LinearWarmup", "start_factor", start_factor, low=0.0, high=1.0, low_open=True
        )
        self.interval = check_interval("LinearWarmup", interval)
        self._start()

    def lr_at(self, step: int) -> float:
        progress = min(step, self.warmup_steps) / self.warmup_steps
        return self.base_lr * (self.start_factor + (1 - self.start_factor) * progress)

    def __repr__(self) -> str:
        return (
            f"LinearWarmup(warmup_steps={self.warmup_steps}, start_factor={self.start_factor}, "
            f"base_lr={self.base_lr}{interval_repr(self.interval)})"
        )
