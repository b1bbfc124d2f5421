"""Scaled exponential linear unit."""

from __future__ import annotations

from minidl.nn._checks import check_not_in_place
from minidl.nn.elu import ELU

__all__ = ["SELU"]

#: The self-normalising constants of Klambauer et al. (2017), as in PyTorch.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


class SELU(ELU):
    r"""Scaled ELU :math:`y = \lambda x` for :math:`x > 0`, :math:`y = \lambda\alpha(e^x - 1)` otherwise.

    With the self-normalising constants :math:`\alpha \approx 1.6733`, :math:`\lambda \approx 1.0507`.
    Backward: :math:`\partial L/\partial x = g\lambda` for :math:`x > 0` and
    :math:`g\,\lambda\alpha e^x` (:math:`= g\,(y + \lambda\alpha)`) otherwise (at :math:`x = 0`
    too, as in PyTorch), computed as
    :class:`~minidl.nn.ELU`'s (with the scale :math:`\lambda`): from :math:`e^x`, not from
    :math:`y + \lambda\alpha`, which cancels for very negative :math:`x`.

    Args:
        inplace: ``False`` (default), what it does: PyTorch's argument; ``True`` is refused.

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> SELU()(torch.tensor([1.0]))
        tensor([1.0507])
    """

    def __init__(self, inplace: bool = False) -> None:
        check_not_in_place("SELU", inplace)
        super().__init__(alpha=SELU_ALPHA)
        self._scale = SELU_SCALE

    def extra_repr(self) -> str:
        return ""
