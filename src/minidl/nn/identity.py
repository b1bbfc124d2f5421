"""The identity layer."""

from __future__ import annotations

from torch import Tensor

from minidl.nn.module import Module

__all__ = ["Identity"]


class Identity(Module):
    r"""The identity :math:`y = x`, with backward :math:`\partial L/\partial x = g`.

    A placeholder (e.g. to switch a layer off without changing the indices of a
    :class:`~minidl.nn.Sequential`).

    Shape:
        - Input: any shape. Output: the same tensor.

    Example:
        >>> Identity()(torch.tensor([1.0, -2.0]))
        tensor([ 1., -2.])
    """

    def forward(self, input: Tensor) -> Tensor:
        if not isinstance(input, Tensor):
            raise TypeError(
                f"Identity: expected a torch.Tensor as input, got {type(input).__name__}"
            )
        return input

    def backward(self, grad_output: Tensor) -> Tensor:
        if not isinstance(grad_output, Tensor):
            raise TypeError(
                f"Identity: expected a torch.Tensor as gradient, got {type(grad_output).__name__}"
            )
        return grad_output
