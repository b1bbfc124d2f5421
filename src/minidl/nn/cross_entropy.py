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

    Example:
        >>> criterion = CrossEntropyLoss()
        >>> round(float(criterion(torch.zeros(1, 2), torch.tensor([1]))), 4)
        0.6931
    """

    def __init__(self) -> None:
        super().__init__()
        self._probabilities: Tensor | None = None
        self._target: Tensor | None = None

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        logits = self._check_prediction(prediction)
        if not isinstance(target, Tensor):
            raise TypeError(
                f"CrossEntropyLoss: expected a torch.Tensor target, got {type(target).__name__}"
            )
        batch = logits.shape[0]
        shifted = logits - logits.amax(dim=1, keepdim=True)
        exp = shifted.exp()
        sum_exp = exp.sum(dim=1, keepdim=True)
        log_probabilities = shifted.sub_(sum_exp.log())
        if target.is_floating_point():
            self._check_dense_target(target, logits)
            self._check_probabilities(target)
            loss = torch.sum(target * log_probabilities).div_(-batch)
        else:
            self._check_class_indices(target, logits)
            loss = log_probabilities.gather(1, target.unsqueeze(1)).sum().div_(-batch)
        self._probabilities = exp.div_(sum_exp)
        self._target = target
        self._has_forward = True
        return loss

    def _check_probabilities(self, target: Tensor) -> None:
        low = float(target.min())
        row_sums = target.sum(dim=1)
        worst = float((row_sums - 1).abs().max())
        tolerance = 1e-4 if target.dtype in (torch.float16, torch.bfloat16) else 1e-5
        if low < 0 or worst > tolerance:
            raise ValueError(
                "CrossEntropyLoss: a probability target must be non-negative with rows summing "
                f"to 1 (got a minimum of {low:g} and a row sum off by {worst:g}); pass class "
                "indices as int64 instead"
            )

    def _gradient(self) -> Tensor:
        probabilities, target = self._probabilities, self._target
        assert probabilities is not None and target is not None
        batch = probabilities.shape[0]
        if target.is_floating_point():
            grad = probabilities * target.sum(dim=1, keepdim=True)
            return grad.sub_(target).div_(batch)
        grad = probabilities.clone()
        grad.scatter_add_(
            1,
            target.unsqueeze(1),
            torch.full((batch, 1), -1.0, dtype=grad.dtype, device=grad.device),
        )
        return grad.div_(batch)
