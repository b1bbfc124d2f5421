"""Softmax cross-entropy."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from minidl._scalar import add_scaled_
from minidl.nn._recent import Recent
from minidl.nn._unsupported import Unsupported
from minidl.nn.loss import Loss, check_mean_or_sum, scaled_sum

__all__ = ["CrossEntropyLoss"]

CONTIGUOUS = torch.contiguous_format

#: -1/N (N, 1), its 1-D view, N, the picked buffer (N, 1), its 1-D view and whether the loss
#: is their dot product (see _make_constants).
_Constants = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, bool]


class CrossEntropyLoss(Loss):
    r"""Cross-entropy of the softmax of logits :math:`z` against a target, mean (or sum) over
    the batch.

    With :math:`\log p = z - \operatorname{LSE}(z)` computed with the max shift
    :math:`\operatorname{LSE}(z) = m + \log\sum_c e^{z_c - m}`, :math:`m = \max_c z_c` (finite at
    logits of :math:`\pm 10^4` even in float32):

    - class indices :math:`y_n`: :math:`L = -\frac{1}{N}\sum_n \log p_{n, y_n}`,
      :math:`\partial L/\partial z = \frac{1}{N}(p - \operatorname{onehot}(y))`;
    - probabilities :math:`t` (rows summing to 1, e.g. one-hot):
      :math:`L = -\frac{1}{N}\sum_{n,c} t_{nc} \log p_{nc}`,
      :math:`\partial L/\partial z = \frac{1}{N}(p\,\textstyle\sum_c t_{nc} - t)`.

    With ``reduction="sum"`` the :math:`\frac{1}{N}` is left out (PyTorch's ``reduction="sum"``).

    Derivation, for one row :math:`z` and its target :math:`t` (class indices as
    :math:`t = \operatorname{onehot}(y)`): the loss of the row is
    :math:`\ell = -\sum_c t_c \log p_c = -\sum_c t_c z_c + \big(\sum_c t_c\big)\operatorname{LSE}(z)`,
    and :math:`\partial \operatorname{LSE}/\partial z_k = e^{z_k} / \sum_c e^{z_c} = p_k`, so

    .. math::
        \frac{\partial \ell}{\partial z_k} = p_k \sum_c t_c - t_k,

    :math:`p - t` for a row summing to 1; the mean over the batch divides each row's gradient
    by :math:`N`. The softmax and the logarithm are differentiated as one function: neither
    the softmax's Jacobian nor :math:`1/p` (infinite where :math:`p` underflows to 0) is ever
    formed, which is why the loss takes logits (the paper's cross-entropy applies the softmax
    in its ``forward``: the same function of the logits).

    Args:
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch.

    Shape:
        - Logits: ``(N, C)``. Target: ``(N,)`` int64 in ``[0, C)``, or ``(N, C)`` float with
          non-negative rows that sum to 1 (within 1e-5, or :math:`2\sqrt{C}` epsilons of the
          dtype where that is more; in float16 within 1e-3, and in bfloat16 within its
          epsilon, :math:`2^{-7}`).
        - Output: a 0-dim tensor.
        - Stacked models: logits ``(R, N, C)``, targets ``(R, N)`` or ``(R, N, C)``, output ``(R,)``.

    Example:
        >>> criterion = CrossEntropyLoss()
        >>> round(float(criterion(torch.zeros(1, 2), torch.tensor([1]))), 4)
        0.6931
    """

    stacks = True
    _takes_probabilities = True
    _scores_classes = True

    #: PyTorch's options that minidl's loss has not: set, each is refused (see
    #: ``Unsupported``), where PyTorch's loss computes with it.
    weight = Unsupported("every class weighs the same", None)
    ignore_index = Unsupported(
        "every target is a class in [0, C): leave out the samples to skip", -100
    )
    label_smoothing = Unsupported(
        "give the smoothed probabilities as the target: (1 - s) one_hot(y) + s / C", 0.0
    )

    def __init__(self, reduction: Literal["mean", "sum"] = "mean") -> None:
        super().__init__()
        self._reduction = check_mean_or_sum(type(self).__name__, reduction)
        self._divisor_used: int | None = 1  # (the last forward's, for backward)
        self._log_probabilities: Tensor | None = None
        self._target: Tensor | None = None
        self._index: Tensor | None = None
        # Tensors of the batch shape, made once per prediction shape, dtype and device (see
        # _make_constants), and those the last successful forward used (for backward).
        self._constants_for: tuple[int, ...] | None = None
        self._constants = self._used = self._make_constants(torch.zeros(1, 1))
        # Those of the last few prediction shapes, dtypes and devices (see Recent).
        self._recent: Recent[_Constants] = Recent()
        # Whether the last forward was _forward_columns (its tensors are then (C, N)), and the
        # (1, N) views of -1/N and of the picked buffer that it used, with their constants.
        self._columns = False
        self._rows: tuple[_Constants, Tensor, Tensor] | None = None

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return self._forward_accepted(self._check_prediction(prediction), target)

    def _forward_accepted(self, logits: Tensor, target: Tensor) -> Tensor:
        if not isinstance(target, Tensor):
            raise TypeError(
                f"CrossEntropyLoss: expected a torch.Tensor target, got {type(target).__name__}"
            )
        constants = self._constants
        if self._constants_for is not self._prediction_shape:  # a new shape, dtype or device
            constants = self._constants_of(logits)
        _, minus_one_over_n_vector, _, picked, picked_vector, dot = constants
        # torch.log_softmax computes z - m - log(sum exp(z - m)), m the row maximum.
        log_probabilities = logits.log_softmax(-1)
        dtype = target.dtype
        if dtype.is_floating_point:
            self._check_dense_target(target, logits, class_indices=True)
            self._check_probabilities(target)
            # -1/N times the sum (accumulated in float32 for 16-bit logits, as PyTorch does).
            divisor = self._divisor_used = self._divisor(logits)  # (backward's, in this case)
            loss = scaled_sum(target * log_probabilities, -divisor, (-2, -1), divide=True)
            index = None
        else:
            # (_check_prediction leaves the logits' shape in _prediction_shape; a meta target
            # holds no indices, which gather on another device would read from nowhere)
            if (
                dtype is not torch.int64
                or target.is_nested  # (whose shape is not read)
                or target.shape != self._prediction_shape[:-1]
                or target.is_meta
                or logits.is_meta  # (whose gather reads no index: one on the CPU is taken)
            ):
                self._check_class_indices(target, logits)
            index = target.unsqueeze(-1)
            try:
                torch.gather(log_probabilities, -1, index, out=picked)
            except RuntimeError:
                # Either gather refused an index out of range (or on another device): the
                # check names it; or the logits come from an autograd graph, where out= is
                # refused: gather into a new tensor instead.
                self._check_class_indices(target, logits)
                picked = log_probabilities.gather(-1, index)
                picked_vector = picked.view(-1)
            if dot:
                # -1/N times the sum of the picked log-probabilities, as one dot product.
                loss = picked_vector.dot(minus_one_over_n_vector)
            else:
                loss = scaled_sum(picked, -self._divisor(logits), (-2, -1), divide=True)
        # Backward turns the log-probabilities into probabilities (nothing to do for an
        # evaluation that only needs the loss).
        self._log_probabilities = log_probabilities
        self._index = index
        self._target = target
        self._used = constants
        self._columns = False
        self._has_forward = True
        return loss

    def _constants_of(self, logits: Tensor) -> _Constants:
        """The constants of logits like ``logits`` ``(N, C)`` (``(R, N, C)``), whose signature
        :meth:`_check_prediction` accepted last, made once for it."""
        key = (self._prediction_shape, logits.dtype, logits.device)
        constants = self._constants = self._recent.get_or_make(
            key, lambda: self._make_constants(logits, self._reduction)
        )
        self._constants_for = self._prediction_shape
        return constants

    def _forward_columns(self, logits: Tensor, target: Tensor, log_probabilities: Tensor) -> Tensor:
        """:meth:`_forward_accepted` of logits given features by batch: ``logits`` ``(C, N)``,
        the transpose of a prediction ``(N, C)`` of the signature that :meth:`_check_prediction`
        accepted last, and class indices ``target`` ``(N,)``. The log-probabilities are written
        into ``log_probabilities`` ``(C, N)``; :meth:`backward` and :meth:`_gradient_columns`
        then give the gradient of this forward.

        The loss of ``forward(logits.t(), target)``, for :mod:`minidl.folded`, whose last layer
        computes ``(C, N)``: PyTorch's CPU log-softmax reduces along a last dimension of a few
        classes one row after the other (3.3 us for ``100 x 2``, 16 us for ``100 x 10``) and
        along the first for all the columns at once (1.2 and 1.7 us), and a ``(N, C)`` copy
        is saved too. Its values are equal to rounding: the columns take a vector's ``exp``
        and ``log`` where a row may take a scalar's (a last bit apart for a few samples in ten
        thousand at 2 classes), and for many classes the sums run in another order. The
        caller keeps ``log_probabilities`` unchanged until the next forward (or
        :meth:`_keep_columns`): :meth:`backward` reads it.
        """
        shape = self._prediction_shape
        if (
            target.dtype is not torch.int64
            or target.is_nested
            or target.shape != shape[:-1]
            or target.is_meta
            or logits.is_meta
        ):
            self._check_class_indices(target, logits.t())
        constants = self._constants
        if self._constants_for is not shape:
            constants = self._constants_of(logits.t())
        _, minus_one_over_n_vector, _, picked, picked_vector, dot = constants
        rows = self._rows
        if rows is None or rows[0] is not constants:
            # (kept with the rest of the state once the forward succeeds: a batch refused
            # leaves backward the last good forward's)
            rows = (constants, constants[0].view(1, -1), picked.view(1, -1))
        torch.log_softmax(logits, 0, out=log_probabilities)
        index = target.view(1, -1)
        try:
            torch.gather(log_probabilities, 0, index, out=rows[2])
        except RuntimeError:
            self._check_class_indices(target, logits.t())  # (names an index out of range)
            raise
        if dot:
            loss = picked_vector.dot(minus_one_over_n_vector)
        else:
            loss = scaled_sum(picked, -self._divisor(logits.t()), (-2, -1), divide=True)
        self._log_probabilities = log_probabilities
        self._index = index
        self._target = target
        self._used = constants
        self._rows = rows
        self._columns = True
        self._has_forward = True
        return loss

    def _keep_columns(self) -> None:
        """After :meth:`_forward_columns`, copy the log-probabilities out of the caller's
        buffer, which it goes on writing: :meth:`backward` then gives that forward's gradient
        whatever the buffer holds later, as after :meth:`forward`."""
        if self._columns and self._log_probabilities is not None:
            self._log_probabilities = self._log_probabilities.clone()

    def _gradient_columns(self, out: Tensor) -> Tensor:
        """dL/dlogits of the last :meth:`_forward_columns`, ``(C, N)``, written into ``out``:
        ``(p - onehot(y)) / N`` (:meth:`_gradient`'s, transposed)."""
        log_probabilities, rows = self._log_probabilities, self._rows
        assert log_probabilities is not None and rows is not None
        scaled = torch.exp(log_probabilities, out=out).div_(self._used[2])
        return scaled.scatter_add_(0, self._index, rows[1])  # type: ignore[arg-type]

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_recent", Recent())  # (pickled before they existed)
        state.setdefault("_reduction", "mean")
        state.setdefault("_divisor_used", None)  # (then a mean's: the only reduction then)
        state.setdefault("_columns", False)
        state.setdefault("_rows", None)
        # Constants pickled before they held whether the loss is a dot product: five tensors
        # (the picked buffer has the logits' dimensions and dtype).
        for name in ("_constants", "_used"):
            constants = state.get(name)
            if constants is not None and len(constants) == 5:
                state[name] = (*constants, _dot_product(constants[3]))
        super().__setstate__(state)

    @property
    def reduction(self) -> Literal["mean", "sum"]:
        """``"mean"`` or ``"sum"`` over the batch; it may be set between calls."""
        return self._reduction

    @reduction.setter
    def reduction(self, value: Literal["mean", "sum"]) -> None:
        self._reduction = check_mean_or_sum(type(self).__name__, value)
        # (the constants hold the divisor: made again at the next forward)
        self._constants_for = None
        self._recent.clear()

    def _divisor(self, logits: Tensor) -> int:
        """N for a mean over the batch, 1 for a sum."""
        return logits.shape[-2] if self._reduction == "mean" else 1

    def extra_repr(self) -> str:
        return f"reduction={self._reduction!r}"

    @staticmethod
    def _make_constants(like: Tensor, reduction: str = "mean") -> _Constants:
        """Tensors for logits like ``like`` (``(N, C)`` or ``(R, N, C)``), of its dtype and device.

        With ``N`` the divisor (the batch size for a mean, 1 for a sum):
        ``-1/N`` shaped ``(N, 1)`` (``(R, N, 1)``) and a 1-D view of it; ``N`` as a 0-dim tensor
        (an op on a tensor skips wrapping a Python number on each call; in float32 at least, as
        float16 ends at 65504); a buffer of the first one's shape for the picked
        log-probabilities, and a 1-D view of it; and whether the loss is the dot product of the
        two views (see :func:`_dot_product`). They are made outside inference mode, so that the buffer can be written to whether
        or not the next call runs in it.
        """
        shape = (*like.shape[:-1], 1)
        batch = like.shape[-2] if reduction == "mean" else 1
        sixteen_bit = like.dtype in (torch.float16, torch.bfloat16)
        with torch.inference_mode(False):
            minus_one_over_n = torch.full(shape, -1.0 / batch, dtype=like.dtype, device=like.device)
            # For 16-bit logits, a float32 scalar on the CPU, which the kernels of every device
            # read in float32 rather than cast to the logits' dtype (a 0-dim tensor on a GPU
            # would be, and 70000 is inf in float16). On the CPU whatever the default device
            # (torch.device("meta") as a context, say): kept for later calls, a meta divisor
            # left every later gradient undivided.
            batch_size = (
                torch.tensor(float(batch), dtype=torch.float32, device="cpu")
                if sixteen_bit
                else torch.tensor(float(batch), dtype=like.dtype, device=like.device)
            )
            picked = torch.empty(shape, dtype=like.dtype, device=like.device)
        vector = minus_one_over_n.view(-1)
        return minus_one_over_n, vector, batch_size, picked, picked.view(-1), _dot_product(like)

    def _check_target_values(self, target: Tensor) -> None:
        if target.dtype.is_floating_point and self._computes_as(CrossEntropyLoss):
            self._check_probabilities(target)

    def _check_probabilities(self, target: Tensor) -> None:
        if target.is_meta or target.numel() == 0:  # (no values to check: shapes only)
            return
        # (item(), not float(): float() of a target from an autograd graph warns)
        low = target.min().item()
        # Summed in float32 at least. A 16-bit row summing to 1 is off by up to half an
        # epsilon of its dtype from the rounding of its entries alone (bfloat16's 2**-8):
        # one epsilon is allowed, and at least 1e-3 (float16's epsilon is 2**-10).
        sixteen_bit = target.dtype in (torch.float16, torch.bfloat16)
        # (torch.promote_types(target.dtype, torch.float32), without its op)
        sums = target.sum(dim=-1, dtype=torch.float32 if sixteen_bit else target.dtype)
        worst = (sums - 1).abs().max().item()
        # In 32 and 64 bits 1e-5, or 2 sqrt(C) epsilons for many classes: the rounding of a
        # softmax's C entries and of their sum grows about as sqrt(C) (torch.softmax's float32
        # rows of a million classes sum to 1 within about 2e-4).
        eps = torch.finfo(target.dtype).eps
        classes = target.shape[-1]
        tolerance = max(1e-3, eps) if sixteen_bit else max(1e-5, 2 * math.sqrt(classes) * eps)
        if not (low >= 0 and worst <= tolerance):  # written so that a NaN target fails too
            raise ValueError(
                "CrossEntropyLoss: a probability target must be non-negative with rows summing "
                f"to 1 (got a minimum of {low:g} and a row sum off by {worst:g}); pass class "
                "indices as int64 instead"
            )

    def _gradient(self) -> Tensor:
        log_probabilities, target, index = self._log_probabilities, self._target, self._index
        assert log_probabilities is not None and target is not None
        if self._columns:
            # (N, C), as after forward: written through its transpose
            gradient = torch.empty_like(log_probabilities.t(), memory_format=CONTIGUOUS)
            self._gradient_columns(gradient.t())
            return gradient
        minus_one_over_n, _, batch_size, _, _, _ = self._used
        # p / N, the gradient's main term, in a new tensor (backward may run twice).
        scaled = log_probabilities.exp().div_(batch_size)
        if index is None:
            grad = scaled.mul_(target.sum(dim=-1, keepdim=True))
            divisor = self._divisor_used or log_probabilities.shape[-2]
            # (grad.sub_(target, alpha=1 / N), with the same bits wherever a row lies: a model's
            # rows alone as inside a stack of models; see add_scaled_)
            return add_scaled_(grad, target, -1.0 / divisor)
        # (p - onehot(y)) / N in one more op: add -1/N at each row's target class.
        return scaled.scatter_add_(-1, index, minus_one_over_n)


#: The largest batch whose mean loss is one dot product (see :func:`_dot_product`).
DOT_PRODUCT_ROWS = 1024


def _dot_product(like: Tensor) -> bool:
    """Whether the loss of logits like ``like`` (or of their picked buffer, of as many
    dimensions and the same dtype) is one dot product of the picked log-probabilities with
    -1/N: for logits ``(N, C)`` of up to :data:`DOT_PRODUCT_ROWS` rows, but in float16, where
    -1/N is subnormal from N = 16385 on. The dot product adds its terms one after the other in
    a few running sums, whose rounding errors grow with N: a float32 mean of 4096 samples was
    3e-6 off (relative), of a million 1.4e-4 and of 30 million 6e-3, where PyTorch's mean, a
    sum by blocks then a division, stays within 1.2e-7; a larger batch is summed and divided
    so too (an operation more, on a batch whose arithmetic costs far more than one)."""
    return like.dim() == 2 and like.dtype is not torch.float16 and like.shape[0] <= DOT_PRODUCT_ROWS
