"""The identity layer."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from minidl.nn._checks import check_dense, check_grad_output
from minidl.nn.module import Module

__all__ = ["Identity"]


class Identity(Module):
    r"""The identity :math:`y = x`, with backward :math:`\partial L/\partial x = g`.

    A placeholder (e.g. to switch a layer off without changing the indices of a
    :class:`~minidl.nn.Sequential`). As PyTorch's, it takes any arguments and uses none, so
    that it can be built with the arguments of the layer it stands for:
    ``Identity(64)`` in place of ``BatchNorm1d(64)``.

    Shape:
        - Input: any shape. Output: the same tensor.

    Example:
        >>> Identity()(torch.tensor([1.0, -2.0]))
        tensor([ 1., -2.])
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__()
        self._shape: torch.Size | None = None  # of the last forward's input
        self._dtype: torch.dtype | None = None  # of the last forward's input

    def forward(self, input: Tensor) -> Tensor:
        if not isinstance(input, Tensor):
            raise TypeError(
                f"Identity: expected a torch.Tensor as input, got {type(input).__name__}"
            )
        if input.is_nested:  # (whose shape is not read; backward checks the gradient's)
            check_dense("Identity", input)
        self._shape, self._dtype = input.shape, input.dtype
        return input

    def backward(self, grad_output: Tensor) -> Tensor:
        """Return ``grad_output``, checked like every module's: a forward ran, and the gradient
        has the shape of its output. One of another dtype than the forward's is promoted (as
        the activations' backward promotes it: a float16 gradient through a float32 forward is
        float32); a float8 one and another dtype have no common dtype, and are refused. Where
        the forward's input was floating-point, a gradient that is not (integer, bool, complex)
        is refused, as the activations and an evaluation-mode ``Dropout`` refuse it."""
        if self._shape is None:
            raise RuntimeError("Identity: backward called before forward")
        check_grad_output("Identity", grad_output, self._shape)
        dtype = self._dtype
        if (
            dtype is not None
            and dtype.is_floating_point
            and not grad_output.dtype.is_floating_point
        ):
            raise TypeError(
                f"Identity: expected a floating-point gradient for the last forward's {dtype} "
                f"input, got dtype {grad_output.dtype}"
            )
        if dtype is not None and grad_output.dtype is not dtype:
            try:
                promoted = torch.promote_types(grad_output.dtype, dtype)
            except RuntimeError:  # (torch promotes no float8 dtype with another dtype)
                raise TypeError(
                    f"Identity: gradient dtype {grad_output.dtype} has no common dtype with the "
                    f"last forward's input dtype {dtype} (torch promotes no float8 dtype with "
                    "another); convert the gradient"
                ) from None
            return grad_output.to(promoted)
        return grad_output

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_dtype", None)  # (pickled before it existed)
        super().__setstate__(state)
