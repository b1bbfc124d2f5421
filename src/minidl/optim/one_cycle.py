"""The one-cycle policy (Smith & Topin, 2019)."""

from __future__ import annotations

import math
from typing import Literal

from minidl._validate import check_int, check_real
from minidl.optim.lr_scheduler import LRScheduler
from minidl.optim.optimizer import Optimizer

__all__ = ["OneCycle"]


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
    zero for ``"linear"``). Building it sets the optimizer's learning rate to
    :math:`\lambda_{init}`.

    Args:
        optimizer: the optimizer to schedule.
        max_lr: :math:`\lambda_{max}`, > 0.
        total_steps: :math:`T`, the batches of the whole training, an integer >= 2.
        pct_start: :math:`p`, the fraction of the steps spent rising, in ``(0, 1)`` (default 0.3).
        anneal_strategy: ``"cos"`` (default) or ``"linear"``.
        div_factor: :math:`d`, > 0 (default 25).
        final_div_factor: :math:`d_f`, > 0 (default 1e4).

    Example:
        >>> scheduler = OneCycle(optimizer, max_lr=0.1, total_steps=400 * 10)  # epochs * batches
    """

    interval = "batch"
    takes_own_rates = True

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
        self.max_lr = check_real("OneCycle", "max_lr", max_lr, low=0.0, low_open=True)
        self.total_steps = check_int("OneCycle", "total_steps", total_steps, low=2)
        self.pct_start = check_real(
            "OneCycle", "pct_start", pct_start, low=0.0, high=1.0, low_open=True, high_open=True
        )
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"OneCycle: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}"
            )
        self.anneal_strategy: Literal["cos", "linear"] = anneal_strategy
        self.div_factor = check_real("OneCycle", "div_factor", div_factor, low=0.0, low_open=True)
        self.final_div_factor = check_real(
            "OneCycle", "final_div_factor", final_div_factor, low=0.0, low_open=True
        )
        self.initial_lr = self.max_lr / self.div_factor
        self.min_lr = self.initial_lr / self.final_div_factor
        self._rise_end = self.pct_start * self.total_steps - 1
        self._end = self.total_steps - 1
        if not 0 < self._rise_end < self._end:
            raise ValueError(
                f"OneCycle: pct_start * total_steps - 1 = {self._rise_end:g} must lie strictly "
                f"between 0 and total_steps - 1 = {self._end} (raise total_steps or change "
                f"pct_start={self.pct_start})"
            )
        self._start()

    @property
    def step_limit(self) -> int:
        """``total_steps``: the schedule has no rate past it."""
        return self.total_steps

    def _anneal(self, start: float, end: float, fraction: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1)
        return (end - start) * fraction + start

    def lr_at(self, step: int) -> float:
        if step > self.total_steps:
            raise ValueError(
                f"OneCycle: step {step} is past total_steps={self.total_steps}; build the "
                "schedule with the number of batches of the whole training"
            )
        if step <= self._rise_end:
            return self._anneal(self.initial_lr, self.max_lr, step / self._rise_end)
        # Step total_steps (after the last batch) stays at min_lr where torch extrapolates the
        # annealing past its end (below zero for "linear").
        fraction = min((step - self._rise_end) / (self._end - self._rise_end), 1.0)
        return self._anneal(self.max_lr, self.min_lr, fraction)

    def __repr__(self) -> str:
        return (
            f"OneCycle(max_lr={self.max_lr}, total_steps={self.total_steps}, "
            f"pct_start={self.pct_start}, anneal_strategy={self.anneal_strategy!r}, "
            f"div_factor={self.div_factor}, final_div_factor={self.final_div_factor})"
        )
