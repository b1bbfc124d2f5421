"""Negative log-likelihood of log-probabilities."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from minidl._setting import Setting
from minidl.nn._unsupported import Unsupported
from minidl.nn.flat import StorageView
from minidl.nn.loss import Loss, check_mean_or_sum, scaled_sum

__all__ = ["NLLLoss"]


class NLLLoss(Loss):
    r"""Negative log-likelihood :math:`L = -\frac{1}{D}\sum_n z_{n, y_n}` of log-probabilities.

    The prediction :math:`z` holds log-probabilities (e.g. the output of
    :class:`~minidl.nn.LogSoftmax`) and the target class indices :math:`y_n`; :math:`D = N`
    (``"mean"``) or 1 (``"sum"``). Gradient:
    :math:`\partial L/\partial z = -\operatorname{onehot}(y)/D`.
    ``LogSoftmax`` followed by ``NLLLoss`` is :class:`~minidl.nn.CrossEntropyLoss`.

    Args:
        reduction: ``"mean"`` (default) or ``"sum"``.

    Shape:
        - Prediction: ``(N, C)``. Target: ``(N,)``, int64 in ``[0, C)``.
        - Output: a 0-dim tensor.

    Example:
        >>> float(NLLLoss()(torch.tensor([[-1.0, -2.0]]), torch.tensor([1])))
        2.0
    """

    _scores_classes = True

    #: ``"mean"`` or ``"sum"``; checked when set, as by the constructor.
    reduction = Setting(check_mean_or_sum)
    _reduction: Literal["mean", "sum"]
    #: PyTorch's options that minidl's loss has not: set, each is refused (see
    #: ``Unsupported``), where PyTorch's loss computes with it.
    weight = Unsupported("every class weighs the same", None)
    ignore_index = Unsupported(
        "every target is a class in [0, C): leave out the samples to skip", -100
    )

    def __init__(self, reduction: Literal["mean", "sum"] = "mean") -> None:
        super().__init__()
        self.reduction = reduction
        self._prediction: Tensor | None = None
        self._index: Tensor | None = None  # the class indices, (N, 1)
        self._scale = 1.0

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return self._forward_accepted(self._check_prediction(prediction), target)

    def _forward_accepted(self, log_probabilities: Tensor, target: Tensor) -> Tensor:
        if not isinstance(target, Tensor):
            raise TypeError(f"NLLLoss: expected a torch.Tensor target, got {type(target).__name__}")
        # (the index, target.unsqueeze(-1), is kept for backward's scatter)
        index, picked = self._read_class_indices(
            target, log_probabilities, lambda index: (index, log_probabilities.gather(1, index))
        )
        self._scale = 1.0 / log_probabilities.shape[0] if self._reduction == "mean" else 1.0
        self._prediction, self._index = log_probabilities, index
        self._has_forward = True
        return scaled_sum(picked, -self._scale)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickled when the target was kept, not the index: written as a view of its storage
        # (see Module.__getstate__), made a tensor here to make the index from it.
        target = state.pop("_target", None)
        if isinstance(target, StorageView):
            target = target.tensor()
        state.setdefault("_index", None if target is None else target.unsqueeze(1))
        super().__setstate__(state)

    def _gradient(self) -> Tensor:
        assert self._prediction is not None and self._index is not None
        grad = torch.zeros_like(self._prediction)
        return grad.scatter_(1, self._index, -self._scale)

    def _times_upstream(self, gradient: Tensor, upstream: Tensor) -> Tensor:
        """The targets' entries times ``upstream``, zeros elsewhere whatever it is (an infinite
        one made every other entry NaN)."""
        assert self._index is not None
        scaled = gradient * upstream
        return torch.zeros_like(scaled).scatter_(1, self._index, scaled.gather(1, self._index))

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
