r"""The base class of activations whose forward pass caches their derivative.

Where :math:`f'(x)` is cheapest (or only stable) computed beside :math:`f(x)` from the same
intermediate values, as for ELU (:math:`e^x`), GELU (:math:`\Phi(x)`) and SiLU
(:math:`\sigma(x)`), the forward pass caches :math:`f'(x)` and backward is one product,
:math:`\partial L/\partial x = g\,f'(x)`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from minidl.nn.activation_base import Activation

__all__ = ["CachedDerivative"]


class CachedDerivative(Activation):
    r"""Element-wise activation whose forward caches :math:`f'(x)`: backward is
    :math:`\partial L/\partial x = g\,f'(x)`, one product.

    A subclass writes :meth:`_output_and_derivative`. A float16 or bfloat16 input is computed
    in float32 and the output rounded once, as PyTorch's kernels compute these functions; the
    derivative is kept in float32, so that backward (a 16-bit gradient times it) rounds once too.

    Shape:
        - Input: any shape. Output: the same shape.
    """

    def __init__(self) -> None:
        super().__init__()
        # The dtype of a 16-bit input, whose derivative is cached in float32; else None.
        self._narrow: torch.dtype | None = None

    def _output_and_derivative(self, input: Tensor, out: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(f(x), f'(x))`` for an input of 32 bits or more, the output written into ``out``
        if given; the derivative a new tensor (never ``input``, which may be the caller's)."""
        raise NotImplementedError

    def _forward(self, input: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if input.dtype is torch.float16 or input.dtype is torch.bfloat16:
            wide, derivative = self._output_and_derivative(input.float(), None)
            output = wide.to(input.dtype) if out is None else out.copy_(wide)
            self._narrow = input.dtype
            return output, derivative
        result = self._output_and_derivative(input, out)
        # (after it: a forward refused there, ELU's alpha beyond float32, say, leaves the last
        # forward's dtype for its backward)
        self._narrow = None
        return result

    def _backward(
        self, grad_output: Tensor, derivative: Tensor, out: Tensor | None = None
    ) -> Tensor:
        if grad_output.dtype is getattr(self, "_narrow", None):  # (pickled before: None)
            # A 16-bit gradient for a 16-bit forward: multiplied in float32, rounded once.
            wide = torch.mul(grad_output, derivative)
            return wide.to(grad_output.dtype) if out is None else out.copy_(wide)
        return torch.mul(grad_output, derivative, out=out)
