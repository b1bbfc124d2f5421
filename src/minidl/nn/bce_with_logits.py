"""Binary cross-entropy on logits."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from minidl._scalar import operand
from minidl._setting import Setting
from minidl.nn._unsupported import Unsupported
from minidl.nn.loss import Loss, check_mean_or_sum, scaled_sum
from minidl.nn.sigmoid import sigmoid

__all__ = ["BCEWithLogitsLoss"]


class BCEWithLogitsLoss(Loss):
    r"""Binary cross-entropy of :math:`\sigma(z)` against targets :math:`t \in [0, 1]`, from logits.

    Each element contributes :math:`-t \log\sigma(z) - (1 - t)\log(1 - \sigma(z))`, computed in
    the stable log-sigmoid form

    .. math::
        \ell(z, t) = \max(z, 0) - z t + \log\left(1 + e^{-|z|}\right)

    (finite for logits of :math:`\pm 10^4`; an infinite logit gives NaN, from
    :math:`\infty - \infty` or :math:`\infty \cdot 0`, except :math:`z = -\infty` with
    :math:`t > 0`, which gives :math:`\infty`), and :math:`L = \frac{1}{D}\sum \ell`, with
    :math:`D` the number of elements (``"mean"``) or 1 (``"sum"``). The linear part is
    computed as :math:`\max(z, 0)(1 - t) + \max(-z, 0)\,t`, two terms that are never negative,
    not as :math:`\max(z, 0) - z t`, which cancels for :math:`z > 0` and a target near 1: a
    float32 loss at :math:`z = 100`, :math:`t = 1 - 2^{-20}` was 4% off that way (a float16 one
    at :math:`z = 10^4`, :math:`t = 1 - 2^{-10}`, 18%), where PyTorch's is exact. With
    :math:`\max(-z, 0)` as :math:`\max(z, 0) - z` and :math:`-|z|` as :math:`z - 2\max(z, 0)`
    (both exact), an infinite logit gives what it gave before; nine element-wise ops, one more
    than the cancelling form. Gradient: :math:`\partial L/\partial z = (\sigma(z) - t)/D`, from
    the :math:`\sigma(z)` that forward keeps (not the logits, which the caller may write over
    before :meth:`backward`).

    Args:
        reduction: ``"mean"`` (default) or ``"sum"``.

    Shape:
        - Logits: ``(N, C)``. Target: ``(N, C)``, floats in ``[0, 1]``, of the logits' dtype.
        - Output: a 0-dim tensor.

    Example:
        >>> round(float(BCEWithLogitsLoss()(torch.zeros(1, 1), torch.ones(1, 1))), 4)
        0.6931
    """

    #: ``"mean"`` or ``"sum"``; checked when set, as by the constructor.
    reduction = Setting(check_mean_or_sum)
    _reduction: Literal["mean", "sum"]
    #: PyTorch's options that minidl's loss has not: set, each is refused (see
    #: ``Unsupported``), where PyTorch's loss computes with it.
    weight = Unsupported("every element weighs the same", None)
    pos_weight = Unsupported("positive targets weigh as negative ones", None)

    def __init__(self, reduction: Literal["mean", "sum"] = "mean") -> None:
        super().__init__()
        self.reduction = reduction
        # What backward reads: sigma(z), a tensor of the loss's own (the caller's logits may
        # be written over before backward: fit's folded step writes every batch into one
        # buffer), and the target.
        self._probabilities: Tensor | None = None
        self._target: Tensor | None = None
        self._scale = 1.0

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return self._forward_accepted(self._check_prediction(prediction), target)

    def _forward_accepted(self, logits: Tensor, target: Tensor) -> Tensor:
        if not isinstance(target, Tensor):
            raise TypeError(
                f"BCEWithLogitsLoss: expected a torch.Tensor target, got {type(target).__name__}"
            )
        self._check_dense_target(target, logits)
        self._check_range(target)
        # max(z, 0) - z t as max(z, 0) (1 - t) + max(-z, 0) t, no cancellation, with
        # max(-z, 0) = max(z, 0) - z (inf - inf = NaN at z = +inf, as before); plus
        # log(1 + e^-|z|), with -|z| = z - 2 max(z, 0), exact, in one op.
        positive = logits.clamp(min=0)
        negative = positive - logits
        elements = torch.rsub(target, operand(1.0, target)).mul_(positive)
        elements.addcmul_(negative, target)
        # (log1p out of place: exp_'s result is what autograd keeps for its derivative where the
        # logits come from a graph, which log1p_ over it made fail at loss.backward())
        elements.add_(torch.sub(logits, positive, alpha=2).exp_().log1p())
        self._scale = 1.0 / logits.numel() if self._reduction == "mean" else 1.0
        self._probabilities, self._target = sigmoid(logits), target
        self._has_forward = True
        return scaled_sum(elements, self._scale)

    def _check_target_values(self, target: Tensor) -> None:
        if self._computes_as(BCEWithLogitsLoss):
            self._check_range(target)

    @staticmethod
    def _check_range(target: Tensor) -> None:
        """Refuse a target with a value outside ``[0, 1]`` (or a NaN)."""
        if target.is_meta or target.numel() == 0:  # (no values to check: shapes only)
            return
        # (read as plain values: a target from an autograd graph would warn in float())
        low, high = (float(v) for v in torch.aminmax(target.detach()))
        if not 0 <= low <= high <= 1:  # (NaN fails too)
            raise ValueError(
                f"BCEWithLogitsLoss: targets must lie in [0, 1], got values in [{low:g}, {high:g}]"
            )

    def _gradient(self) -> Tensor:
        assert self._probabilities is not None and self._target is not None
        gradient = torch.sub(self._probabilities, self._target)
        return gradient.mul_(operand(self._scale, gradient))

    def __setstate__(self, state: dict[str, Any]) -> None:
        # (pickled when it kept the logits themselves: their sigma, as forward keeps now)
        super().__setstate__(state)  # (which makes the pickled caches tensors again)
        if "_logits" in vars(self):
            logits = vars(self).pop("_logits")
            self._probabilities = None if logits is None else sigmoid(logits)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
