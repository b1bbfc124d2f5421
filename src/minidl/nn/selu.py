"""Scaled exponential linear unit."""

from __future__ import annotations

from typing import Any

from minidl._setting import warn_dropped
from minidl._validate import shown
from minidl.nn._cached_derivative import CachedDerivative
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

    The constants are fixed, as PyTorch's SELU's: ``alpha`` reads :math:`\alpha` (a SELU is
    an ELU) and ``scale`` reads :math:`\lambda`, and setting or deleting either raises an
    ``AttributeError`` naming SELU and leaves the module as it was (other constants would no
    longer be self-normalising, and the ``repr``, ``SELU()``, and
    :func:`~minidl.interop.to_torch` would not show them; a ``scale`` set as a plain attribute
    was ignored by the computation); for another alpha, use :class:`~minidl.nn.ELU`.

    Args:
        inplace: ``False`` (default), what it does: PyTorch's argument; ``True`` is refused.

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> SELU()(torch.tensor([1.0]))
        tensor([1.0507])
    """

    # (what ELU's forward reads: ELU's setting is replaced by the constant, not set, and so is
    # the scale ELU's constructor sets to 1)
    _alpha = SELU_ALPHA
    _scale = SELU_SCALE

    def __init__(self, inplace: bool = False) -> None:
        check_not_in_place("SELU", inplace)
        CachedDerivative.__init__(self)  # (not ELU's, which sets alpha and the scale)

    @property
    def alpha(self) -> float:
        """:math:`\\alpha`, fixed at :data:`SELU_ALPHA`; setting it raises ``AttributeError``."""
        return SELU_ALPHA

    @alpha.setter
    def alpha(self, value: object) -> None:
        raise AttributeError(
            f"{type(self).__name__}: alpha is fixed at {SELU_ALPHA!r} (the self-normalising "
            f"constant, as PyTorch's SELU's), got {shown(value)}; use ELU(alpha) for another alpha"
        )

    @alpha.deleter
    def alpha(self) -> None:
        raise AttributeError(
            f"{type(self).__name__}.alpha cannot be deleted: it is fixed at {SELU_ALPHA!r}"
        )

    @property
    def scale(self) -> float:
        """:math:`\\lambda`, fixed at :data:`SELU_SCALE` (or at the ``_scale`` that a subclass
        computes with, as the experiments' ``PublishedSELU``); setting it raises
        ``AttributeError``."""
        return self._scale

    @scale.setter
    def scale(self, value: object) -> None:
        constant = " (the self-normalising constant, as PyTorch's SELU's)"
        raise AttributeError(
            f"{type(self).__name__}: scale is fixed at {self._scale!r}"
            f"{constant if self._scale == SELU_SCALE else ''}, got {shown(value)}; for another "
            "scale, multiply the output of an ELU"
        )

    @scale.deleter
    def scale(self) -> None:
        raise AttributeError(
            f"{type(self).__name__}.scale cannot be deleted: it is fixed at {self._scale!r}"
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        # (one pickled when alpha could be set kept its value, as the setting's slot or, before
        # that, as a plain attribute: the constant, or one set by hand, which a SELU cannot
        # compute with; and, before its scale was fixed, the constant in the slot, which the
        # class now gives (a subclass's own, such as PublishedSELU's 0.5, is kept), with any
        # plain ``scale`` set by hand, which it never computed with and which is dropped, with
        # a warning unless it is the scale computed with)
        alpha = state.pop("_alpha", state.pop("alpha", SELU_ALPHA))
        if alpha != SELU_ALPHA:
            raise ValueError(
                f"{type(self).__name__}: cannot load a SELU pickled with alpha {shown(alpha)}: "
                f"its alpha is fixed at {SELU_ALPHA!r}; load it as an ELU(alpha) instead"
            )
        if state.get("_scale") == SELU_SCALE:
            del state["_scale"]
        if "scale" in state:
            plain = state.pop("scale")
            scale = state.get("_scale", type(self)._scale)
            if type(plain) not in (int, float) or plain != scale:
                warn_dropped(self, "scale", plain, f"with its scale {scale!r}")
        super().__setstate__(state)

    def extra_repr(self) -> str:
        return ""
