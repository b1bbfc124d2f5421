"""Softmax over the features, as a layer."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from minidl._setting import Setting
from minidl._validate import shown, shown_typed
from minidl.nn._checks import check_cached, check_grad_like, check_input
from minidl.nn.module import Module

__all__ = ["Softmax", "check_dim"]


def check_dim(where: str, dim: int) -> int:
    """Check a softmax dimension: only the feature dimension of an ``(N, C)`` input."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):  # (1.0, True, "1")
        raise TypeError(
            f"{where}: dim must be an int, 1 (or -1), the feature dimension of an (N, C) "
            f"input, got {shown_typed(dim)}"
        )
    if dim not in (1, -1):
        raise ValueError(
            f"{where}: dim must be 1 (or -1), the feature dimension of an (N, C) input, got "
            f"{shown(dim)}"
        )
    return 1


class Softmax(Module):
    r"""Softmax over the features: :math:`y_{nc} = e^{x_{nc} - m_n} / \sum_k e^{x_{nk} - m_n}`.

    The max shift :math:`m_n = \max_k x_{nk}` keeps it finite at inputs of :math:`\pm 10^4`.
    Backward, from the cached output:
    :math:`\partial L/\partial x_{nc} = y_{nc} (g_{nc} - \sum_k g_{nk} y_{nk})`, that is
    :math:`\sum_k g_{nk}\, \partial y_{nk}/\partial x_{nc}` with the row's Jacobian
    :math:`\partial y_{nk}/\partial x_{nc} = y_{nk} (\delta_{kc} - y_{nc})` (each row is
    normalised alone: rows do not mix), which is never formed.

    Use it for probabilities at inference; for training with a class target, feed logits to
    :class:`~minidl.nn.CrossEntropyLoss` (or :class:`~minidl.nn.LogSoftmax` to :class:`~minidl.nn.NLLLoss`),
    which is more accurate than the log of this output.

    Args:
        dim: the dimension normalised, ``1`` (or ``-1``), the features (default 1). ``-1``
            is kept as ``1``, the same dimension of an ``(N, C)`` input: ``dim=1`` and
            ``dim=-1`` make one module, with one ``repr``, which a checkpoint's check of
            the architecture compares.

    Shape:
        - Input: ``(N, C)``. Output: ``(N, C)``, rows summing to 1.

    Example:
        >>> Softmax(dim=1)(torch.tensor([[0.0, 0.0]]))
        tensor([[0.5000, 0.5000]])
    """

    #: The dimension normalised; checked when set, as by the constructor.
    dim = Setting(check_dim)
    _dim: int

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self._output: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        check_input("Softmax", input)
        if input.dtype is torch.float16 or input.dtype is torch.bfloat16:
            # Computed in float32 and rounded once, as torch.softmax does (the sum of 16-bit
            # exponentials loses most of their digits).
            wide = input.float()
            exp = (wide - wide.amax(dim=1, keepdim=True)).exp_()
            self._output = exp.div_(exp.sum(dim=1, keepdim=True)).to(input.dtype)
            return self._output
        exp = (input - input.amax(dim=1, keepdim=True)).exp_()
        self._output = exp.div_(exp.sum(dim=1, keepdim=True))
        return self._output

    def backward(self, grad_output: Tensor) -> Tensor:
        output = check_cached("Softmax", self._output)
        check_grad_like("Softmax", grad_output, output)
        dtype = grad_output.dtype
        if dtype is not output.dtype:
            # The dtype torch's promotion gives (a 16-bit gradient through a float32 or float64
            # output gives float32 or float64, float16 with bfloat16 float32), not the gradient's.
            dtype = torch.promote_types(dtype, output.dtype)
        if dtype is torch.float16 or dtype is torch.bfloat16:
            wide, wide_output = grad_output.float(), output.float()
            inner = (wide * wide_output).sum(dim=1, keepdim=True)
            return (wide - inner).mul_(wide_output).to(dtype)
        inner = (grad_output * output).sum(dim=1, keepdim=True)
        return (grad_output - inner).mul_(output)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
