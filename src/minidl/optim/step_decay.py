"""Step decay of the learning rate."""

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

__all__ = ["StepDecay"]


def _check_step_size(where: str, step_size: object) -> int:
    return check_int(where, "step_size", step_size)


def _check_gamma(where: str, gamma: object) -> float:
    return check_real(where, "gamma", gamma, low=0.0, high=1.0)


class StepDecay(LRScheduler):
    r"""Multiply the learning rate by :math:`\gamma` every ``step_size`` epochs (the paper's ``step_decay``).

    .. math:: \lambda_e = \lambda_0 \cdot \gamma^{\lfloor e / \beta \rfloor}

    with :math:`\lambda_0` the optimizer's learning rate when the scheduler is built,
    :math:`\beta` = ``step_size`` and :math:`\gamma` = ``gamma`` (the paper's :math:`\alpha`).
    Call :meth:`step` once per epoch, after the epoch's updates (with ``interval="batch"``,
    once per batch: :math:`e` and :math:`\beta` then count batches), as PyTorch's
    ``lr_scheduler.StepLR``, which gives the same rates to rounding: it multiplies the previous
    rate by :math:`\gamma` at each drop, where this computes the closed form. The defaults
    are the paper's, not ``StepLR``'s (``gamma`` 0.1, and no default ``step_size``); ``gamma``
    above 1, which ``StepLR`` takes, is refused.

    Args:
        optimizer: the optimizer to schedule.
        step_size: :math:`\beta`, epochs (batches, with ``interval="batch"``) between drops,
            an integer >= 1 (default 10).
        gamma: :math:`\gamma`, the factor of each drop, in ``[0, 1]`` (default 0.5).
        interval: call :meth:`step` after every ``"epoch"`` or ``"batch"``; ``None``
            (default) keeps the class's, ``"epoch"`` (or what a subclass sets as its own
            class attribute ``interval``).

    Example:
        >>> optimizer = SGD(model.parameters(), lr=0.1)
        >>> scheduler = StepDecay(optimizer, step_size=10, gamma=0.5)
        >>> for epoch in range(30):
        ...     lr = scheduler.step()  # after each epoch of training
        >>> lr  # 0.1 halved 3 times
        0.0125
    """

    #: :math:`\beta` and :math:`\gamma`: checked when set, as by the constructor, and the
    #: optimizer's rate set to the current step's (see :class:`~minidl.optim.LRScheduler`).
    step_size = ScheduleSetting(_check_step_size)
    gamma = ScheduleSetting(_check_gamma)
    _step_size: int
    _gamma: float

    def __init__(
        self,
        optimizer: Optimizer,
        step_size: int = 10,
        gamma: float = 0.5,
        interval: Literal["epoch", "batch"] | None = None,
    ) -> None:
        super().__init__(optimizer)
        self.step_size = step_size
        self.gamma = gamma
        self._take_interval(interval)
        self._start()

    @checks_step
    def lr_at(self, step: int) -> float:
        return self._base_lr * self._gamma ** (step // self._step_size)

    @property
    def rate_bound(self) -> float:
        """``base_lr``: ``gamma`` is at most 1."""
        return self._base_lr

    def __repr__(self) -> str:
        return (
            f"StepDecay(step_size={steps_repr(self.step_size)}, gamma={self.gamma}, "
            f"base_lr={self.base_lr}{interval_repr(self.interval)})"
        )
