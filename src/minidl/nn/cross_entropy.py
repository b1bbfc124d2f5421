"""Softmax cross-entropy."""

from __future__ import annotations

import torch
from torch import Tensor

from minidl.nn.loss import Loss

__all__ = ["CrossEntropyLoss"]


class CrossEntropyLoss(Loss):
    r"""Cross-entropy of the softmax of logits :math:`z` against a target, mean over the batch.

    With :math:`\log p = z - \operatorname{LSE}(z)` computed with the max shift
    :math:`\operatorname{LSE}(z) = m + \log\sum_c e^{z_c - m}`, :math:`m = \max_c z_c` (finite at
    logits of :math:`\pm 10^4` even in float32):

    - class indices :math:`y_n`: :math:`L = -\frac{1}{N}\sum_n \log p_{n, y_n}`,
      :math:`\partial L/\partial z = \frac{1}{N}(p - \operatorname{onehot}(y))`;
    - probabilities :math:`t` (rows summing to 1, e.g. one-hot):
      :math:`L = -\frac{1}{N}\sum_{n,c} t_{nc} \log p_{nc}`,
      :math:`\partial L/\partial z = \frac{1}{N}(p\,\textstyle\sum_c t_{nc} - t)`.

    Shape:
        - Logits: ``(N, C)``. Target: ``(N,)`` int64 in ``[0, C)``, or ``(N, C)`` float with
          non-negative rows that sum to 1.
        - Output: a 0-dim tensor.
        - Stacked models: logits ``(R, N, C)``, targets ``(R, N)`` or ``(R, N, C)``, output ``(R,)``.

    Example:
        >>> criterion = CrossEntropyLoss()
        >>> round(float(criterion(torch.zeros(1, 2), torch.tensor([1]))), 4)
        0.6931
    """

    def __init__(self) -> None:
        super().__init__()
        self._scaled_probabilities: Tensor | None = None
        self._target: Tensor | None = None
        self._index: Tensor | None = None
        self._minus_one_over_n = torch.zeros(())

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        logits = self._check_prediction(prediction)
        if not isinstance(target, Tensor):
            raise TypeError(
                f"CrossEntropyLoss: expected a torch.Tensor target, got {type(target).__name__}"
            )
        batch = logits.shape[-2]
        # torch.log_softmax computes z - m - log(sum exp(z - m)), m the row maximum.
        log_probabilities = torch.log_softmax(logits, dim=-1)
        if target.is_floating_point():
            self._check_dense_target(target, logits)
            self._check_probabilities(target)
            loss = torch.sum(target * log_probabilities, dim=(-2, -1)).div_(-batch)
            self._index = None
        else:
            if target.dtype != torch.int64 or target.shape != logits.shape[:-1]:
                self._check_class_indices(target, logits)
            index = target.unsqueeze(-1)
            try:
                picked = log_probabilities.gather(-1, index)
            except RuntimeError:
                # gather refuses an index out of range (or on another device): name it.
                self._check_class_indices(target, logits)
                raise
            loss = picked.sum(dim=(-2, -1)).div_(-batch)
            self._index = index
        # p / N, the gradient's main term, kept for backward.
        self._scaled_probabilities = log_probabilities.exp_().div_(batch)
        self._target = target
        self._has_forward = True
        return loss

    def _check_probabilities(self, target: Tensor) -> None:
        low = float(target.min())
        worst = float((target.sum(dim=-1) - 1).abs().max())
        tolerance = 1e-3 if target.dtype in (torch.float16, torch.bfloat16) else 1e-5
        if not (low >= 0 and worst <= tolerance):  # written so that a NaN target fails too
            raise ValueError(
                "CrossEntropyLoss: a probability target must be non-negative with rows summing "
                f"to 1 (got a minimum of {low:g} and a row sum off by {worst:g}); pass class "
                "indices as int64 instead"
            )

    def _gradient(self) -> Tensor:
        scaled, target, index = self._scaled_probabilities, self._target, self._index
        assert scaled is not None and target is not None
        batch = scaled.shape[-2]
        if index is None:
            grad = scaled * target.sum(dim=-1, keepdim=True)
            return grad.sub_(target, alpha=1.0 / batch)
        # (p - onehot(y)) / N in one op: add -1/N at each row's target class.
        return scaled.scatter_add(-1, index, self._minus_constant(index, batch))

    def _minus_constant(self, index: Tensor, batch: int) -> Tensor:
        """A tensor of ``-1/N`` shaped like ``index``, made once per shape, dtype and device."""
        value = self._minus_one_over_n
        scaled = self._scaled_probabilities
        assert scaled is not None
        if (
            value.shape != index.shape
            or value.dtype != scaled.dtype
            or value.device != scaled.device
        ):
            value = self._minus_one_over_n = torch.full(
                index.shape, -1.0 / batch, dtype=scaled.dtype, device=scaled.device
            )
        return value
