"""Mean absolute error."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from minidl._scalar import operand
from minidl._setting import Setting
from minidl.nn.loss import Loss, check_mean_or_sum, scaled_sum

__all__ = ["L1Loss"]


class L1Loss(Loss):
    r"""Absolute error :math:`L = \frac{1}{D}\sum_{n,c} |z_{nc} - t_{nc}|`.

    :math:`D` is the number of elements (``"mean"``) or 1 (``"sum"``). Gradient:
    :math:`\partial L/\partial z = \operatorname{sign}(z - t)/D`, the subgradient 0 where
    :math:`z = t` (as PyTorch's).

    Args:
        reduction: ``"mean"`` (default) or ``"sum"``.

    Shape:
        - Prediction: ``(N, C)``. Target: ``(N, C)``, of the prediction's dtype.
        - Output: a 0-dim tensor.

    Example:
        >>> float(L1Loss()(torch.tensor([[1.0, -1.0]]), torch.zeros(1, 2)))
        1.0
    """

    #: ``"mean"`` or ``"sum"``; checked when set, as by the constructor.
    reduction = Setting(check_mean_or_sum)
    _reduction: Literal["mean", "sum"]

    def __init__(self, reduction: Literal["mean", "sum"] = "mean") -> None:
        super().__init__()
        self.reduction = reduction
        self._difference: Tensor | None = None
        self._scale = 1.0

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return self._forward_accepted(self._check_prediction(prediction), target)

    def _forward_accepted(self, prediction: Tensor, target: Tensor) -> Tensor:
        if not isinstance(target, Tensor):
            raise TypeError(f"L1Loss: expected a torch.Tensor target, got {type(target).__name__}")
        self._check_dense_target(target, prediction)
        self._difference = prediction - target
        self._scale = 1.0 / prediction.numel() if self._reduction == "mean" else 1.0
        self._has_forward = True
        return scaled_sum(self._difference.abs(), self._scale)

    def _gradient(self) -> Tensor:
        assert self._difference is not None
        sign = self._difference.sign()
        return sign.mul_(operand(self._scale, sign))

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
