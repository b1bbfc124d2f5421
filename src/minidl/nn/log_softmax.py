"""Log-softmax over the features, as a layer."""

from __future__ import annotations

import torch
from torch import Tensor

from minidl._setting import Setting
from minidl.nn._checks import check_cached, check_grad_like, check_input
from minidl.nn.module import Module
from minidl.nn.softmax import check_dim

__all__ = ["LogSoftmax"]


class LogSoftmax(Module):
    r"""Log-softmax over the features: :math:`y_{nc} = x_{nc} - m_n - \log\sum_k e^{x_{nk} - m_n}`.

    The max shift :math:`m_n = \max_k x_{nk}` keeps it finite at inputs of :math:`\pm 10^4`.
    Backward, with :math:`p = e^{y}` the softmax:
    :math:`\partial L/\partial x_{nc} = g_{nc} - p_{nc} \sum_k g_{nk}`, that is
    :math:`\sum_k g_{nk}\, \partial y_{nk}/\partial x_{nc}` with the row's Jacobian
    :math:`\partial y_{nk}/\partial x_{nc} = \delta_{kc} - p_{nc}` (the derivative of
    :math:`\log\sum_j e^{x_{nj}}` by :math:`x_{nc}` is :math:`p_{nc}`), which is never formed.
    Followed by :class:`~minidl.nn.NLLLoss` it computes the cross-entropy.

    Args:
        dim: the dimension normalised, ``1`` (or ``-1``), the features (default 1). ``-1``
            is kept as ``1``, the same dimension of an ``(N, C)`` input: ``dim=1`` and
            ``dim=-1`` make one module, with one ``repr``, which a checkpoint's check of
            the architecture compares.

    Shape:
        - Input: ``(N, C)``. Output: ``(N, C)``.

    Example:
        >>> LogSoftmax(dim=1)(torch.tensor([[0.0, 0.0]]))
        tensor([[-0.6931, -0.6931]])
    """

    #: The dimension normalised; checked when set, as by the constructor.
    dim = Setting(check_dim)
    _dim: int

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self._probabilities: Tensor | None = None
        # The dtype of a 16-bit input, whose probabilities are kept in float32; else None.
        self._narrow: torch.dtype | None = None

    def forward(self, input: Tensor) -> Tensor:
        check_input("LogSoftmax", input)
        if input.dtype is torch.float16 or input.dtype is torch.bfloat16:
            # Computed in float32 and rounded once (torch.log_softmax's CPU kernel rounds
            # 16-bit results otherwise: about 14% of float16 elements differ from these, which
            # are the closer to the exact values); the probabilities for backward are kept in
            # float32.
            wide = input.float()
            shifted = wide - wide.amax(dim=1, keepdim=True)
            exp = shifted.exp()
            sum_exp = exp.sum(dim=1, keepdim=True)
            self._probabilities = exp.div_(sum_exp)
            self._narrow = input.dtype
            return shifted.sub_(sum_exp.log_()).to(input.dtype)
        self._narrow = None
        shifted = input - input.amax(dim=1, keepdim=True)
        exp = shifted.exp()
        sum_exp = exp.sum(dim=1, keepdim=True)
        self._probabilities = exp.div_(sum_exp)
        return shifted.sub_(sum_exp.log_())

    def backward(self, grad_output: Tensor) -> Tensor:
        probabilities = check_cached("LogSoftmax", self._probabilities)
        narrow = getattr(self, "_narrow", None)  # (pickled before it existed: None)
        if narrow is not None:
            # A 16-bit forward: its probabilities kept in float32, the result in the dtype of the
            # gradient promoted with the forward's, computed in float32 or the gradient's wider
            # dtype (a float64 gradient past float32's range was made inf, the result NaN).
            check_grad_like("LogSoftmax", grad_output, probabilities)  # (shape and device)
            wide = grad_output if grad_output.dtype is torch.float64 else grad_output.float()
            result = wide - probabilities * wide.sum(dim=1, keepdim=True)
            dtype = grad_output.dtype
            if dtype is not narrow:  # (promoted as torch does: float16 with bfloat16 is float32)
                dtype = torch.promote_types(dtype, narrow)
            return result.to(dtype)
        check_grad_like("LogSoftmax", grad_output, probabilities)
        if grad_output.dtype is not probabilities.dtype:
            # Read in the promoted dtype: a 16-bit gradient through a float32 forward, summed in
            # its own dtype, had its sum rounded to 16 bits (a float32 result off by 2e-4).
            grad_output = grad_output.to(
                torch.promote_types(grad_output.dtype, probabilities.dtype)
            )
        return grad_output - probabilities * grad_output.sum(dim=1, keepdim=True)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
