"""Rectified linear unit."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from minidl._setting import Setting
from minidl.nn._checks import check_in_place_setting, check_not_in_place
from minidl.nn.activation_base import Activation, Operations, computes_on_buffers

__all__ = ["ReLU"]


class ReLU(Activation):
    r"""Rectified linear unit :math:`y = \max(0, x)`.

    Backward: :math:`\partial L/\partial x = g \cdot [y > 0]`, with the indicator computed as
    :math:`\operatorname{sign}(y)` (as :math:`y \ge 0`, it is 1 where :math:`y > 0` and 0 where
    :math:`y = 0`), a float operation: on a CPU, masks of
    booleans (``masked_fill``, ``where``) cost several times more per element. The derivative at
    0 is taken as 0, as in PyTorch (a negative incoming gradient gives -0.0 there, as
    :math:`g \cdot 0`, where PyTorch's mask gives +0.0: equal numbers). At a NaN output the
    gradient is 0 (``sign`` of NaN is 0 here), where PyTorch passes it through; an infinite or
    NaN incoming gradient gives NaN where
    :math:`y = 0` (it times 0), where PyTorch's mask gives 0 (a gradient that has overflowed
    already, which a loss scaler finds either way: both are not finite).

    Args:
        inplace: ``False`` (default), what it does: PyTorch's argument; ``True`` is refused.

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> ReLU()(torch.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """

    _in_place = True  # (an element-wise clamp)

    #: ``False``, as PyTorch's ``inplace`` argument: setting ``True`` raises as the constructor
    #: does (the module never changes its input).
    inplace = Setting(check_in_place_setting, ignored_when_plain=True)
    _inplace = False

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        check_not_in_place("ReLU", inplace)

    def _forward(self, input: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # (torch.relu has no out=; on the CPU it is clamp_min(x, 0), the same bits)
        output = torch.relu(input) if out is None else torch.clamp_min(input, 0, out=out)
        return output, output

    def _backward(self, grad_output: Tensor, output: Tensor, out: Tensor | None = None) -> Tensor:
        return torch.mul(grad_output, output.sign(), out=out)

    def _operations(
        self, input: Tensor, output: Tensor, grad_output: Tensor, grad_input: Tensor
    ) -> Operations | None:
        if not computes_on_buffers(self, ReLU, output, input, grad_output, grad_input):
            return None
        # (backward's sign written into grad_input, its temporary)
        return (partial(torch.clamp_min, input, 0, out=output),), (
            partial(torch.sign, output, out=grad_input),
            partial(torch.mul, grad_output, grad_input, out=grad_input),
        )
