"""The base class of learning-rate schedules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from minidl._validate import check_real
from minidl.optim.optimizer import Optimizer

__all__ = ["LRScheduler"]


class LRScheduler:
    """Sets an optimizer's learning rate from a closed-form function of a step counter.

    A subclass implements :meth:`lr_at`, a pure function of the step (an epoch or a batch count,
    as the subclass documents). ``step()`` advances the counter by one and sets
    ``optimizer.lr = lr_at(counter)``; construction sets ``optimizer.lr = lr_at(0)``. The
    schedule's reference learning rate ``base_lr`` is the optimizer's learning rate at
    construction unless the subclass takes one.

    Args:
        optimizer: the optimizer whose ``lr`` is scheduled.
    """

    #: When the training loop calls :meth:`step`: after every ``"epoch"`` or every ``"batch"``.
    interval: Literal["epoch", "batch"] = "epoch"

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__}: expected a minidl Optimizer, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_step = 0

    def lr_at(self, step: int) -> float:
        """The learning rate after ``step`` calls of :meth:`step`."""
        raise NotImplementedError

    def _start(self) -> None:
        """Set the learning rate of step 0 (subclasses call it at the end of ``__init__``)."""
        self.optimizer.lr = self.lr_at(0)

    def step(self) -> float:
        """Advance one step, set the optimizer's learning rate and return it."""
        self.last_step += 1
        lr = self.lr_at(self.last_step)
        self.optimizer.lr = lr
        return lr

    @property
    def lr(self) -> float:
        """The learning rate of the current step."""
        return self.lr_at(self.last_step)

    def state_dict(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "last_step": self.last_step}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the step counter (and the reference learning rate) and set the optimizer's lr."""
        name = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"{name}.load_state_dict: expected a mapping (as state_dict() returns), got "
                f"{type(state_dict).__name__}"
            )
        missing = {"base_lr", "last_step"} - set(state_dict)
        if missing:
            raise KeyError(f"{name}.load_state_dict: missing keys {sorted(missing)}")
        last_step = state_dict["last_step"]
        if isinstance(last_step, bool) or not isinstance(last_step, int) or last_step < 0:
            raise ValueError(
                f"{name}.load_state_dict: last_step must be an int >= 0, got {last_step!r}"
            )
        base_lr = check_real(f"{name}.load_state_dict", "base_lr", state_dict["base_lr"], low=0.0)
        self.base_lr = base_lr
        self.last_step = last_step
        self.optimizer.lr = self.lr_at(last_step)
