"""Cyclical learning rates (Smith, 2017)."""

from __future__ import annotations

import math
from typing import Literal

from minidl._validate import check_int, check_real
from minidl.optim.lr_scheduler import LRScheduler
from minidl.optim.optimizer import Optimizer

__all__ = ["CyclicLR"]

Mode = Literal["triangular", "triangular2", "exp_range"]


class CyclicLR(LRScheduler):
    r"""Smith's cyclical learning rate: a triangle wave between ``base_lr`` and ``max_lr``.

    At batch :math:`t`, with a cycle of :math:`u` = ``step_size_up`` rising and :math:`d` =
    ``step_size_down`` falling batches:

    .. math::
        c = \lfloor 1 + t / (u + d) \rfloor, \quad x = 1 + t / (u + d) - c, \quad
        h = \begin{cases} x (u + d) / u & x \le u / (u + d) \\
                          (1 - x)(u + d) / d & \text{otherwise} \end{cases} \\
        \lambda_t = \lambda_{base} + (\lambda_{max} - \lambda_{base})\, h\, s

    with the amplitude scale :math:`s = 1` (``"triangular"``), :math:`s = 2^{1 - c}`
    (``"triangular2"``, halved every cycle) or :math:`s = \gamma^t` (``"exp_range"``). For
    :math:`u = d` it is Smith's :math:`x = |t/u - 2c + 1|`, :math:`h = \max(0, 1 - x)`. Call
    :meth:`step` once per batch; it gives the sequence of PyTorch's ``lr_scheduler.CyclicLR``
    with ``cycle_momentum=False``. Building it sets the optimizer's learning rate to ``base_lr``.

    Args:
        optimizer: the optimizer to schedule.
        base_lr: the lower bound, >= 0.
        max_lr: the upper bound, >= ``base_lr``.
        step_size_up: batches from ``base_lr`` to ``max_lr``, an integer >= 1.
        mode: ``"triangular"`` (default), ``"triangular2"`` or ``"exp_range"``.
        gamma: the decay of ``"exp_range"``, in ``(0, 1]`` (default 1.0).
        step_size_down: batches from ``max_lr`` back to ``base_lr`` (default ``step_size_up``).
    """

    interval = "batch"
    takes_own_rates = True

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr: float,
        max_lr: float,
        step_size_up: int,
        mode: Mode = "triangular",
        gamma: float = 1.0,
        step_size_down: int | None = None,
    ) -> None:
        super().__init__(optimizer)
        self.base_lr = check_real("CyclicLR", "base_lr", base_lr, low=0.0)
        self.max_lr = check_real("CyclicLR", "max_lr", max_lr, low=self.base_lr)
        self.step_size_up = check_int("CyclicLR", "step_size_up", step_size_up)
        self.step_size_down = (
            self.step_size_up
            if step_size_down is None
            else check_int("CyclicLR", "step_size_down", step_size_down)
        )
        if mode not in ("triangular", "triangular2", "exp_range"):
            raise ValueError(
                f"CyclicLR: mode must be 'triangular', 'triangular2' or 'exp_range', got {mode!r}"
            )
        self.mode: Mode = mode
        self.gamma = check_real("CyclicLR", "gamma", gamma, low=0.0, high=1.0, low_open=True)
        self._start()

    def _check_base_lr(self, where: str, base_lr: object) -> float:
        """The lower bound restored: in ``[0, max_lr]``."""
        return check_real(where, "base_lr", base_lr, low=0.0, high=self.max_lr)

    def lr_at(self, step: int) -> float:
        total = self.step_size_up + self.step_size_down
        up_ratio = self.step_size_up / total
        cycle = math.floor(1 + step / total)
        x = 1.0 + step / total - cycle
        height = x / up_ratio if x <= up_ratio else (x - 1) / (up_ratio - 1)
        if self.mode == "triangular":
            scale = 1.0
        elif self.mode == "triangular2":
            scale = 1 / 2.0 ** (cycle - 1)
        else:
            scale = self.gamma**step
        return self.base_lr + (self.max_lr - self.base_lr) * height * scale

    def __repr__(self) -> str:
        return (
            f"CyclicLR(base_lr={self.base_lr}, max_lr={self.max_lr}, "
            f"step_size_up={self.step_size_up}, step_size_down={self.step_size_down}, "
            f"mode={self.mode!r}, gamma={self.gamma})"
        )
