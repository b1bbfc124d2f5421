"""A residual connection around a block."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from minidl.nn._checks import check_grad_output
from minidl.nn.module import Module

__all__ = ["Residual"]


class Residual(Module):
    r"""A skip connection :math:`y = x + f(x)` around a block :math:`f`.

    Backward: :math:`\partial L/\partial x = g + J_f^T g`, i.e. ``grad_output +
    block.backward(grad_output)`` (the block accumulates its parameters' gradients). The block's
    output must have the input's shape.

    Args:
        block: the module :math:`f`, registered as the child ``"block"``.

    Shape:
        - Input: ``(N, *)``. Output: the same shape.

    Example:
        >>> layer = Residual(Sequential(Linear(8, 8), Tanh()))
        >>> layer(torch.randn(4, 8)).shape
        torch.Size([4, 8])
    """

    def __init__(self, block: Module) -> None:
        super().__init__()
        if not isinstance(block, Module):
            raise TypeError(f"Residual: block must be a minidl Module, got {type(block).__name__}")
        self.block = block
        self.register_module("block", block)
        self._shape: tuple[int, ...] | None = None
        self._refused = False  # whether the last forward was refused after the block ran

    def forward(self, input: Tensor) -> Tensor:
        if not isinstance(input, Tensor):
            raise TypeError(
                f"Residual: expected a torch.Tensor as input, got {type(input).__name__}"
            )
        output: Tensor = self.block.forward(input)
        if not isinstance(output, Tensor) or output.shape != input.shape:
            got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            # The block ran: it now holds the caches of this input, not of the last good one.
            self._refused = True
            raise ValueError(
                f"Residual: the block's output has shape {got}, expected the input's shape "
                f"{tuple(input.shape)}"
            )
        self._shape = tuple(input.shape)
        self._refused = False
        return input + output

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_refused", False)  # (pickled before it existed)
        super().__setstate__(state)

    def backward(self, grad_output: Tensor) -> Tensor:
        self._check_backward(grad_output)
        grad_block: Tensor = self.block.backward(grad_output)
        return grad_output + grad_block

    def backward_parameters(self, grad_output: Tensor) -> None:
        """The block's parameter gradients only: the skip path has no parameters, and the
        block's see the same upstream gradient :math:`g`."""
        self._check_backward(grad_output)
        self.block.backward_parameters(grad_output)

    def _check_backward(self, grad_output: Tensor) -> None:
        if self._shape is None:
            raise RuntimeError("Residual: backward called before forward")
        if self._refused:
            raise RuntimeError(
                "Residual: backward after a forward refused for its block's output shape: the "
                "block had already cached the refused input, so the last good forward cannot be "
                "differentiated; run a forward that succeeds, then backward"
            )
        check_grad_output("Residual", grad_output, torch.Size(self._shape))
