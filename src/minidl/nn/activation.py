"""The base class of element-wise activations.

An activation has no parameters. Its ``forward`` checks the input and calls :meth:`_forward`,
which returns the output and caches what the derivative needs (usually the output itself, the
cheapest stable quantity: Tanh and Sigmoid derivatives are functions of ``y``). Its ``backward``
checks that a forward ran and that the gradient has the output's shape, then calls
:meth:`_backward`.

Both hooks may take an optional ``out``: a tensor of the result's shape, dtype and device
(contiguous) into which the result is written, as with ``torch``'s ``out=``. Where a hook takes
it, a :class:`~minidl.nn.StackedActivation` has it write each run of models into its part of one
output (forward or backward); the result of a hook without it is copied there. The bits are the
same.
"""

from __future__ import annotations

from torch import Tensor

from minidl.nn._checks import STRIDED, check_cached, check_dense, check_grad_like
from minidl.nn.module import Module

__all__ = ["Activation"]


class Activation(Module):
    """Element-wise activation ``y = f(x)``, backward ``dL/dx = dL/dy * f'(x)``.

    Shape:
        - Input: any shape.
        - Output: the input's shape.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        if (
            type(input) is not Tensor
            or not input.is_floating_point()
            or input.layout is not STRIDED
        ):
            self._check_input(input)
        output, self._cache = self._forward(input)
        return output

    def _check_input(self, input: object) -> None:
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor as input, got {type(input).__name__}")
        if not input.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point input, got dtype {input.dtype}")
        check_dense(name, input)

    def backward(self, grad_output: Tensor) -> Tensor:
        cache = self._cache
        if (
            cache is None
            or type(grad_output) is not Tensor
            or grad_output.shape != cache.shape
            or grad_output.dtype is not cache.dtype
            or grad_output.layout is not STRIDED
        ):
            cache = self._check_gradient(grad_output)
        try:
            return self._backward(grad_output, cache)
        except RuntimeError:
            self._check_gradient(grad_output)  # (a gradient on another device, named)
            raise

    def _check_gradient(self, grad_output: object) -> Tensor:
        """The full checks of a gradient (see :func:`~minidl.nn._checks.check_grad_like`);
        return the cache."""
        name = type(self).__name__
        cache = check_cached(name, self._cache)
        check_grad_like(name, grad_output, cache)
        return cache

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(output, cache)``: the cache is what :meth:`_backward` receives."""
        raise NotImplementedError

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        """Return dL/dinput from dL/doutput and the cache of the last forward."""
        raise NotImplementedError

    def _forward_out(self, input: Tensor, out: Tensor) -> None:
        """:meth:`forward`, writing the output into ``out`` (for an activation whose
        :meth:`_forward` takes ``out``)."""
        if (
            type(input) is not Tensor
            or not input.is_floating_point()
            or input.layout is not STRIDED
        ):
            self._check_input(input)
        _, self._cache = self._forward(input, out=out)  # type: ignore[call-arg]

    def _backward_out(self, grad_output: Tensor, out: Tensor) -> None:
        """:meth:`backward`, writing the input gradient into ``out`` (for an activation whose
        :meth:`_backward` takes ``out``)."""
        cache = self._cache
        if cache is None or type(grad_output) is not Tensor or grad_output.shape != cache.shape:
            cache = self._check_gradient(grad_output)
        # (a gradient of another dtype or device never comes here: StackedActivation gives it
        # to backward, which promotes or names it)
        self._backward(grad_output, cache, out=out)  # type: ignore[call-arg]
