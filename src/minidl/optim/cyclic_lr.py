"""Cyclical learning rates (Smith, 2017)."""

from __future__ import annotations

import math
from typing import Literal

from minidl._validate import check_int, check_real, plain_choice, shown
from minidl.optim.lr_scheduler import (
    LRScheduler,
    ScheduleSetting,
    check_decay_gamma,
    checks_step,
    interval_repr,
    steps_repr,
)
from minidl.optim.optimizer import Optimizer

__all__ = ["CyclicLR"]

Mode = Literal["triangular", "triangular2", "exp_range"]


def _check_step_size_up(where: str, step_size_up: object) -> int:
    return check_int(where, "step_size_up", step_size_up)


def _check_mode(where: str, mode: object) -> Mode:
    given = plain_choice(mode, ("triangular", "triangular2", "exp_range"))
    if given is None:
        raise ValueError(
            f"{where}: mode must be 'triangular', 'triangular2' or 'exp_range', got {shown(mode)}"
        )
    return (
        "triangular"
        if given == "triangular"
        else "triangular2"
        if given == "triangular2"
        else "exp_range"
    )


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
    :math:`u = d` it is Smith's formula, :math:`h = \max(0, 1 - X)` with his
    :math:`X = |t/u - 2c + 1|`, which is :math:`|2x - 1|` for the :math:`x` above (the fraction
    of the cycle done). Call :meth:`step` once per batch; it gives the sequence of PyTorch's
    ``lr_scheduler.CyclicLR`` with ``cycle_momentum=False``. Building it sets the optimizer's
    learning rate to ``base_lr``.

    Args:
        optimizer: the optimizer to schedule.
        base_lr: the lower bound, >= 0.
        max_lr: the upper bound, >= ``base_lr``.
        step_size_up: batches from ``base_lr`` to ``max_lr``, an integer >= 1.
        mode: ``"triangular"`` (default), ``"triangular2"`` or ``"exp_range"``.
        gamma: the decay of ``"exp_range"``, in ``(0, 1]`` (default 1.0).
        step_size_down: batches from ``max_lr`` back to ``base_lr`` (default ``step_size_up``).

    Every setting may be set after construction: it is checked as by the constructor (a
    ``base_lr`` above ``max_lr`` or a ``max_lr`` below ``base_lr`` is refused: to move both
    bounds, set first the one that keeps them in order), and the optimizer's rate is set to the
    current step's, so that the schedule is the one built with that value. ``step_size_down``
    keeps its value when ``step_size_up`` is set; setting it to ``None`` makes it
    ``step_size_up``, as the constructor does.
    """

    _interval = "batch"
    takes_own_rates = True

    step_size_up = ScheduleSetting(_check_step_size_up)
    mode = ScheduleSetting(_check_mode)
    gamma = ScheduleSetting(check_decay_gamma)
    _max_lr: float
    _step_size_up: int
    _step_size_down: int
    _mode: Mode
    _gamma: float

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
        self.base_lr = base_lr
        self.max_lr = max_lr
        self.step_size_up = step_size_up
        self.step_size_down = step_size_down
        self.mode = mode
        self.gamma = gamma
        self._start()

    @property
    def max_lr(self) -> float:
        """The upper bound; checked when set, as by the constructor (>= ``base_lr``)."""
        return self._max_lr

    @max_lr.setter
    def max_lr(self, value: float) -> None:
        checked = check_real(
            type(self).__name__, "max_lr", value, low=self._base_lr, bound="at least base_lr"
        )
        self._change("max_lr", {"_max_lr": checked})

    @property
    def step_size_down(self) -> int:
        """Batches from ``max_lr`` back to ``base_lr``; checked when set, as by the constructor
        (``None``: ``step_size_up``)."""
        return self._step_size_down

    @step_size_down.setter
    def step_size_down(self, value: int | None) -> None:
        where = type(self).__name__
        down = self._step_size_up if value is None else check_int(where, "step_size_down", value)
        self._change("step_size_down", {"_step_size_down": down})

    def _derive(self, where: str, name: str) -> None:
        """A lower bound set must not pass ``max_lr``."""
        if name == "base_lr":
            check_real(
                where, "base_lr", self._base_lr, low=0.0, high=self._max_lr, bound="at most max_lr"
            )

    def _check_base_lr(self, where: str, base_lr: object) -> float:
        """The lower bound restored: in ``[0, max_lr]``."""
        return check_real(
            where, "base_lr", base_lr, low=0.0, high=self._max_lr, bound="at most max_lr"
        )

    @checks_step
    def lr_at(self, step: int) -> float:
        up = self._step_size_up
        total = up + self._step_size_down
        up_ratio = up / total
        cycle = math.floor(1 + step / total)
        x = 1.0 + step / total - cycle
        # h = x (u + d) / u rising, (1 - x)(u + d) / d falling, written with u / (u + d) as
        # torch's CyclicLR writes them (the same roundings, so the same rates).
        height = x / up_ratio if x <= up_ratio else (x - 1) / (up_ratio - 1)
        mode = self._mode
        if mode == "triangular":
            scale = 1.0
        elif mode == "triangular2":
            # (2^(1 - c) exactly, as torch's 1 / 2.0 ** (c - 1) where that is defined; past
            # cycle 1024, where 2.0 ** 1024 overflowed, a subnormal float, then 0 from cycle
            # 1076 on: the rate is base_lr, but for a base_lr of 0)
            scale = math.ldexp(1.0, 1 - cycle)
        else:
            scale = self._gamma**step
        base_lr = self._base_lr
        return base_lr + (self._max_lr - base_lr) * height * scale

    @property
    def rate_bound(self) -> float:
        """``max_lr``: the amplitude's scale is at most 1."""
        return self._max_lr

    def __repr__(self) -> str:
        return (
            f"CyclicLR(base_lr={self.base_lr}, max_lr={self.max_lr}, "
            f"step_size_up={steps_repr(self.step_size_up)}, "
            f"step_size_down={steps_repr(self.step_size_down)}, "
            f"mode={self.mode!r}, gamma={self.gamma}{interval_repr(self.interval, 'batch')})"
        )
