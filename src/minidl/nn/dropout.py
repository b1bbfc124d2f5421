"""Dropout."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from minidl._scalar import operand
from minidl._setting import Setting
from minidl._validate import COMPUTED, FLOATING, check_real
from minidl.nn._checks import (
    check_dense,
    check_grad_like,
    check_grad_output,
    check_in_place_setting,
    check_not_in_place,
)
from minidl.nn.module import Module

__all__ = ["Dropout"]


def _check_p(where: str, p: object) -> float:
    return check_real(where, "p", p, low=0.0, high=1.0, high_open=True)


def _check_generator(where: str, generator: object) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        # (PyTorch's second argument is inplace: Dropout(0.5, False))
        hint = ""
        if isinstance(generator, bool):
            hint = " (PyTorch's second argument is inplace, minidl's generator: name inplace=)"
        raise TypeError(
            f"{where}: generator must be a torch.Generator or None, got "
            f"{type(generator).__name__}{hint}"
        )
    return generator


class Dropout(Module):
    r"""Inverted dropout: zero each element with probability :math:`p` in training mode.

    In training mode, with a mask :math:`m_i \sim \operatorname{Bernoulli}(1 - p)` drawn afresh
    at every forward,

    .. math::
        y = \frac{m \odot x}{1 - p}, \qquad \frac{\partial L}{\partial x} = \frac{m \odot g}{1 - p}

    (backward reuses the mask of the last forward). In evaluation mode (``eval()``) it is the
    identity. The mask is drawn with ``Tensor.bernoulli_`` from ``generator`` or, without one,
    from torch's global generator, so ``torch.manual_seed(s)`` before a forward gives the mask of
    PyTorch's ``dropout`` after the same seed.

    Args:
        p: the probability of zeroing an element, in ``[0, 1)`` (default 0.5).
        generator: the random generator of the masks (default: torch's global one).
        inplace: ``False`` (default), what it does: PyTorch's argument; ``True`` is refused.

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> layer = Dropout(0.25)
        >>> layer(torch.ones(10, 10)).unique()  # each element zeroed or scaled by 1 / 0.75
        tensor([0.0000, 1.3333])
    """

    #: The probability of zeroing an element; checked when set, as by the constructor.
    p = Setting(_check_p)
    _p: float
    #: The random generator of the masks (``None``: torch's global one); checked when set, as
    #: by the constructor.
    generator = Setting(_check_generator)
    _generator: torch.Generator | None
    #: ``False``, as PyTorch's ``inplace`` argument: setting ``True`` raises as the constructor
    #: does (the module never changes its input).
    inplace = Setting(check_in_place_setting, ignored_when_plain=True)
    _inplace = False
    _updates_in_training = True  # (its generator draws the masks)

    def __init__(
        self, p: float = 0.5, generator: torch.Generator | None = None, *, inplace: bool = False
    ) -> None:
        super().__init__()
        check_not_in_place("Dropout", inplace)
        self.p = p
        self.generator = generator
        self._scaled_mask: Tensor | None = None
        self._shape: torch.Size | None = None
        self._device: torch.device | None = None  # the last forward's, for the identity's check
        self._dtype: torch.dtype | None = None  # the last forward's, for the identity's gradient

    def forward(self, input: Tensor) -> Tensor:
        if not isinstance(input, Tensor):
            raise TypeError(
                f"Dropout: expected a torch.Tensor as input, got {type(input).__name__}"
            )
        if input.dtype not in COMPUTED:
            raise TypeError(
                f"Dropout: expected a {FLOATING.format(what='input')}, got dtype {input.dtype}"
            )
        if not self.training or self._p == 0.0:
            # (refused as in training, where its mask is drawn: a sparse input passed through
            # to the layer after, and its gradient was refused at the backward)
            check_dense("Dropout", input)
            self._shape, self._scaled_mask, self._device = input.shape, None, input.device
            self._dtype = input.dtype
            return input
        keep = 1.0 - self._p
        # (the caches are set once the mask is drawn: a draw that fails, from a generator on
        # another device, leaves those of the last forward)
        try:
            mask = torch.empty_like(input).bernoulli_(keep, generator=self._generator)
        except RuntimeError:
            check_dense("Dropout", input)  # (a sparse one found here, not on every call)
            raise
        # m / (1 - p), made once and cached: forward is x times it and backward g times it
        # (one product each, with the rounding of PyTorch's dropout, which scales its mask so).
        self._shape, self._scaled_mask = input.shape, mask.div_(operand(keep, mask))
        return input * self._scaled_mask

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._shape is None:
            raise RuntimeError("Dropout: backward called before forward")
        if self._scaled_mask is None:
            # (the identity: checked as the training mode's gradient is, so that a gradient it
            # refuses is not passed on in evaluation mode, or with p = 0)
            check_grad_output("Dropout", grad_output, self._shape)
            if grad_output.dtype not in COMPUTED:
                raise TypeError(
                    f"Dropout: expected a {FLOATING.format(what='gradient')}, got dtype "
                    f"{grad_output.dtype}"
                )
            device = self._device
            if device is not None and grad_output.device != device:
                raise ValueError(
                    f"Dropout: gradient is on {grad_output.device} but the last forward's output "
                    f"is on {device}"
                )
            dtype = self._dtype
            if dtype is not None and grad_output.dtype is not dtype:
                # Promoted, as the training mode's product with the mask promotes it (and the
                # activations' backward): the gradient's dtype does not depend on the mode.
                return grad_output.to(torch.promote_types(grad_output.dtype, dtype))
            return grad_output
        return check_grad_like("Dropout", grad_output, self._scaled_mask) * self._scaled_mask

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_device", None)  # (pickled before they existed)
        state.setdefault("_dtype", None)
        super().__setstate__(state)

    def extra_repr(self) -> str:
        return f"p={self.p}"
