"""Mean squared error."""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
from torch import Tensor

from minidl._scalar import operand
from minidl._setting import Setting
from minidl._validate import plain_choice
from minidl.nn._recent import Recent
from minidl.nn.loss import Loss, reduction_given, scaled_sum

__all__ = ["MSELoss"]

Reduction = Literal["paper", "mean", "sum"]


def _check_reduction(where: str, reduction: object) -> Reduction:
    """``reduction`` as a plain ``str`` (as :func:`~minidl.nn.loss.check_mean_or_sum` takes
    it: a subclass's own ``__eq__`` is not asked, ``numpy.str_('sum')`` is ``'sum'``)."""
    given = plain_choice(reduction, ("paper", "mean", "sum"))
    if given is not None:
        return cast(Reduction, given)
    raise ValueError(
        f"{where}: reduction must be 'paper', 'mean' or 'sum', got {reduction_given(reduction)}"
    )


class MSELoss(Loss):
    r"""Squared error between a prediction :math:`z` and a target :math:`t`, both ``(N, C)``.

    ``reduction`` chooses the normalisation :math:`D`, with
    :math:`L = \frac{1}{D}\sum_{n,c} (z_{nc} - t_{nc})^2` and
    :math:`\partial L/\partial z = \frac{2}{D}(z - t)`:

    - ``"paper"`` (default): :math:`D = N`, the paper's formula (squared error summed over the
      outputs, mean over the samples, gradient :math:`2(z - t)/N`);
    - ``"mean"``: :math:`D = N C`, PyTorch's element-wise mean (half the paper's gradient for
      two outputs);
    - ``"sum"``: :math:`D = 1`.

    The target is a float tensor of the prediction's shape, or class indices (int64, ``(N,)``),
    which are turned into one-hot rows. For stacked models, :math:`N` and :math:`C` are each
    model's, and each model's loss is its own sum.

    Args:
        reduction: ``"paper"`` (default), ``"mean"`` or ``"sum"``, as above.

    Shape:
        - Prediction: ``(N, C)``. Target: ``(N, C)`` or ``(N,)`` (class indices).
        - Output: a 0-dim tensor.
        - Stacked models: prediction ``(R, N, C)``, target ``(R, N, C)`` or ``(R, N)``, output ``(R,)``.

    Example:
        >>> criterion = MSELoss()
        >>> loss = criterion(torch.zeros(2, 2), torch.tensor([0, 1]))
        >>> float(loss), criterion.backward().tolist()
        (1.0, [[-1.0, 0.0], [0.0, -1.0]])
    """

    stacks = True
    _regresses = True

    #: ``"paper"``, ``"mean"`` or ``"sum"``; checked when set, as by the constructor.
    reduction = Setting(_check_reduction)
    _reduction: Reduction

    def __init__(self, reduction: Reduction = "paper") -> None:
        super().__init__()
        self.reduction = reduction
        self._difference: Tensor | None = None
        self._scale = 0.0
        # -1 in the shape of the class indices plus a last dimension of 1, made once per
        # prediction shape, dtype and device (see _minus_one_hot).
        self._minus_ones_for: tuple[int, ...] | None = None
        self._minus_ones = torch.zeros(0)
        self._recent: Recent[Tensor] = Recent()  # those of the last few (see Recent)

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return self._forward_accepted(self._check_prediction(prediction), target)

    def _forward_accepted(self, prediction: Tensor, target: Tensor) -> Tensor:
        if not isinstance(target, Tensor):
            raise TypeError(f"MSELoss: expected a torch.Tensor target, got {type(target).__name__}")
        if target.dim() == prediction.dim() - 1 and not target.is_floating_point():
            difference = self._minus_one_hot(prediction, target)
        else:
            self._check_dense_target(target, prediction, class_indices=True)
            difference = prediction - target
        batch, outputs = prediction.shape[-2:]
        denominator = {"paper": batch, "mean": batch * outputs, "sum": 1}[self._reduction]
        self._difference = difference
        self._scale = 2.0 / denominator
        self._has_forward = True
        return scaled_sum(difference.square(), denominator, (-2, -1), divide=True)

    def _minus_one_hot(self, prediction: Tensor, target: Tensor) -> Tensor:
        """``prediction`` minus the one-hot rows of the class indices ``target``, as one
        ``scatter_add`` of -1 at each row's class: the same bits as subtracting a one-hot tensor
        (``z + (-1) = z - 1`` and ``z - 0 = z``), without making one. An index out of range (or
        on another device), which ``scatter_add`` refuses, is named by the full check."""
        if self._minus_ones_for is not self._prediction_shape:
            key = (self._prediction_shape, prediction.dtype, prediction.device)
            self._minus_ones = self._recent.get_or_make(key, lambda: _minus_ones(prediction))
            self._minus_ones_for = self._prediction_shape
        minus_ones = self._minus_ones
        return self._read_class_indices(
            target, prediction, lambda index: prediction.scatter_add(-1, index, minus_ones)
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_recent", Recent())  # (pickled before it existed)
        super().__setstate__(state)

    def _gradient(self) -> Tensor:
        assert self._difference is not None
        # (2 / D)(z - t), with 2 / D computed once in forward (_scale).
        return self._difference * operand(self._scale, self._difference)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


def _minus_ones(prediction: Tensor) -> Tensor:
    """-1 in the shape of ``prediction`` with a last dimension of 1; a normal tensor, used in
    and out of inference mode."""
    with torch.inference_mode(False):
        return torch.full(
            (*prediction.shape[:-1], 1), -1.0, dtype=prediction.dtype, device=prediction.device
        )
