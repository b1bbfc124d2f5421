"""Huber loss."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from minidl._scalar import operand
from minidl._setting import Setting
from minidl._validate import check_real, shown
from minidl.nn._checks import FLOAT16_LARGEST
from minidl.nn.loss import Loss, check_mean_or_sum, scaled_sum

__all__ = ["HuberLoss"]


def _check_delta(where: str, delta: object) -> float:
    return check_real(where, "delta", delta, low=0.0, low_open=True)


class HuberLoss(Loss):
    r"""Huber loss: quadratic for small errors, linear for large ones.

    With :math:`d = z - t` and threshold :math:`\delta`,

    .. math::
        \ell(d) = \begin{cases} \tfrac12 d^2 & |d| \le \delta \\
                                \delta\,(|d| - \tfrac12\delta) & \text{otherwise} \end{cases},
        \qquad L = \frac{1}{D}\sum \ell(d_{nc})

    with :math:`D` the number of elements (``"mean"``) or 1 (``"sum"``). Gradient:
    :math:`\partial L/\partial z = \operatorname{clamp}(d, -\delta, \delta)/D`.

    Args:
        delta: :math:`\delta`, where the loss turns linear, > 0 (default 1.0).
        reduction: ``"mean"`` (default) or ``"sum"``.

    Shape:
        - Prediction: ``(N, C)``. Target: ``(N, C)``, of the prediction's dtype.
        - Output: a 0-dim tensor.

    A float16 or bfloat16 loss computes :math:`d`, the elements and the gradient in float32 and
    rounds each once (in float16, :math:`d` past 65504 would be ``inf``): each the correctly
    rounded value of the float32 one. PyTorch's 16-bit kernels round in between: its bfloat16
    loss differs from this one now and then (15 of 300 draws of a sum), and its gradient of a
    ``"mean"`` (computed from :math:`d` and :math:`1/D` each rounded to 16 bits first) in
    many elements in float16 and in bfloat16 (a quarter to two thirds of them), by one or two
    units in the last place.

    Example:
        >>> float(HuberLoss()(torch.tensor([[0.5, 3.0]]), torch.zeros(1, 2)))
        1.3125
    """

    #: :math:`\delta`; checked when set, as by the constructor.
    delta = Setting(_check_delta)
    _delta: float
    #: ``"mean"`` or ``"sum"``; checked when set, as by the constructor.
    reduction = Setting(check_mean_or_sum)
    _reduction: Literal["mean", "sum"]

    def __init__(self, delta: float = 1.0, reduction: Literal["mean", "sum"] = "mean") -> None:
        super().__init__()
        if isinstance(delta, str):
            # (PyTorch's HuberLoss takes reduction first: HuberLoss("sum", 2.0))
            raise TypeError(
                f"HuberLoss: delta, its first argument, must be a number, got {shown(delta)}; "
                "PyTorch's HuberLoss takes reduction first, minidl's delta: give them by name, "
                "HuberLoss(reduction=..., delta=...)"
            )
        self.delta = delta
        self.reduction = reduction
        self._difference: Tensor | None = None
        # The dtype of the last forward's prediction, the gradient's (not the base class's
        # _prediction_dtype, which a prediction refused with its target also sets).
        self._forward_dtype = torch.get_default_dtype()
        self._scale = 1.0
        # The delta of the last forward: backward's gradient is that loss's, as its scale is the
        # forward's reduction's, whatever delta is set to in between.
        self._forward_delta = self._delta

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return self._forward_accepted(self._check_prediction(prediction), target)

    def _forward_accepted(self, prediction: Tensor, target: Tensor) -> Tensor:
        if not isinstance(target, Tensor):
            raise TypeError(
                f"HuberLoss: expected a torch.Tensor target, got {type(target).__name__}"
            )
        self._check_dense_target(target, prediction)
        dtype = prediction.dtype
        sixteen_bit = dtype is torch.float16 or dtype is torch.bfloat16
        # In float32 for 16 bits, each element rounded once, as PyTorch's kernel does: in
        # float16 a difference past 65504 is inf where delta (|d| - delta / 2) may not be.
        difference = prediction.float() - target.float() if sixteen_bit else prediction - target
        self._difference = difference
        self._forward_dtype = dtype
        self._scale = 1.0 / prediction.numel() if self._reduction == "mean" else 1.0
        self._forward_delta = self._delta
        self._has_forward = True
        magnitude = difference.abs()
        delta = operand(self._delta, magnitude)
        elements = torch.where(
            magnitude <= delta,
            # (halved first, as PyTorch's 0.5 * d * d: the square of a d past the square root
            # of the dtype's largest value overflows where half of it does not)
            difference.mul(operand(0.5, magnitude)).mul_(difference),
            magnitude.sub(operand(0.5 * self._delta, magnitude)).mul_(delta),
        )
        return scaled_sum(elements.to(dtype) if sixteen_bit else elements, self._scale)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_forward_delta" not in state:  # (pickled before it existed: the delta it had)
            self._forward_delta = self._delta
        if "_forward_dtype" not in state:  # (likewise: the last prediction's, or the
            # difference's, which had its dtype before 16-bit losses were computed in float32)
            difference = self._difference
            dtype = state.get("_prediction_dtype")
            if dtype is None:
                dtype = torch.get_default_dtype() if difference is None else difference.dtype
            self._forward_dtype = dtype

    def _gradient(self) -> Tensor:
        assert self._difference is not None
        delta = self._forward_delta
        difference = self._difference
        if delta > FLOAT16_LARGEST and delta > torch.finfo(difference.dtype).max:
            # Past the dtype's largest value the clamp changes no finite difference, and an
            # infinite one's gradient is delta rounded to the dtype, infinite: torch refuses to
            # convert such a bound, and takes an infinite one.
            delta = math.inf
        clamped = difference.clamp(-delta, delta)
        gradient = clamped.mul_(operand(self._scale, clamped))
        dtype = self._forward_dtype
        return gradient if dtype is gradient.dtype else gradient.to(dtype)

    def extra_repr(self) -> str:
        return f"delta={self.delta}, reduction={self.reduction!r}"
