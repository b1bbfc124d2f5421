"""A trainable tensor and its accumulated gradient: :class:`Parameter`."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

__all__ = ["Parameter"]


class Parameter:
    """A trainable tensor and the gradient accumulated for it.

    A ``Parameter`` is the unit of identity of the framework: optimizers keep their state per
    parameter and update ``data`` in place, so a module never sees its tensors replaced behind it.
    ``grad`` always exists and has the shape, dtype and device of ``data`` (zeros until a backward
    pass accumulates into it).

    :attr:`Parameter.replacements` counts every assignment of a ``data`` or ``grad`` tensor, of
    any parameter (in-place updates are not counted): an optimizer that saw the count unchanged
    since it last looked knows that its parameters still hold the same tensors.

    Args:
        data: the initial value; it is used as is (not copied).
        name: an optional name used in messages.

    Example:
        >>> p = Parameter(torch.zeros(3))
        >>> p.grad.shape
        torch.Size([3])
    """

    __slots__ = ("data", "grad", "name")

    replacements: ClassVar[int] = 0

    def __init__(self, data: Tensor, name: str = "") -> None:
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter: data must be a torch.Tensor, got {type(data).__name__}")
        if not data.is_floating_point():
            raise TypeError(f"Parameter: data must be a floating-point tensor, got {data.dtype}")
        # Parameters are updated in place inside and outside torch.inference_mode(), which
        # only normal tensors allow: a tensor made in inference mode is copied out of it.
        with torch.inference_mode(False):
            if data.is_inference():
                data = data.clone()
            self.data: Tensor = data.detach()
            self.grad: Tensor = torch.zeros_like(data)
        self.name = name

    def __setattr__(self, name: str, value: object) -> None:
        if name != "name":
            Parameter.replacements += 1
        object.__setattr__(self, name, value)

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    @property
    def device(self) -> torch.device:
        return self.data.device

    def numel(self) -> int:
        return self.data.numel()

    def zero_grad(self) -> None:
        """Set the accumulated gradient to zero, in place."""
        self.grad.zero_()

    def __repr__(self) -> str:
        name = f" {self.name!r}" if self.name else ""
        return f"Parameter{name}(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"
