"""The base class of element-wise activations.

An activation has no parameters. Its ``forward`` checks the input and calls :meth:`_forward`,
which returns the pair ``(output, cache)``: the cache is what the derivative needs, one tensor
of the output's shape (usually the output itself, the cheapest stable quantity: Tanh and
Sigmoid derivatives are functions of ``y``; or the input). Its ``backward`` checks that a
forward ran and that the gradient has the cache's shape, the output's, then calls
:meth:`_backward`. A ``_forward`` that returns anything else (the output alone, a tuple as the
cache) is refused, naming the activation: a derivative that needs several tensors is written
as a :class:`~minidl.nn.Module` of one's own.

Both hooks may take an optional ``out``: a tensor of the result's shape, dtype and device
(contiguous) into which the result is written, as with ``torch``'s ``out=``. Where a hook takes
it, a :class:`~minidl.nn.StackedActivation` has it write each run of models into its part of one
output (forward or backward); the result of a hook without it is copied there. The bits are the
same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from minidl._validate import COMPUTED, FLOATING
from minidl.nn._checks import STRIDED, check_cached, check_dense, check_grad_like
from minidl.nn.module import Module

__all__ = ["Activation", "Operations", "computes_on_buffers"]

#: An activation's forward and backward on buffers fixed for many calls (see
#: :meth:`Activation._operations`): two sequences of operations that take no arguments.
Operations = tuple[tuple[Callable[[], object], ...], tuple[Callable[[], object], ...]]


class Activation(Module):
    """Element-wise activation ``y = f(x)``, backward ``dL/dx = dL/dy * f'(x)``.

    Shape:
        - Input: any shape.
        - Output: the input's shape.
    """

    #: Whether ``_forward(input, out=input)`` gives the bits that ``_forward`` writes into
    #: another tensor: the hook reads every input element before it writes that element's
    #: result. A planned chain and ``fit``'s folded step then run the activation in place over
    #: the output of the layer before it, which nothing else keeps (one buffer and one pass
    #: over memory less). Set by the built-in activations for which it holds.
    _in_place: ClassVar[bool] = False
    #: What :meth:`_forward` returned for the derivative, until the next forward.
    _cache: Tensor | None

    if TYPE_CHECKING:  # (a type checker refuses Tanh(x) itself)

        def __init__(self) -> None: ...

    else:

        def __init__(self, *args: object, **kwargs: object) -> None:
            """Take no arguments: ``Tanh(x)``, which reads as the function on ``x``, is refused
            naming the activation (Python's words named ``Activation.__init__()``); a module
            is built, then called on its input, ``Tanh()(x)``."""
            if args or kwargs:
                raise TypeError(_arguments_refused(type(self).__name__, args, kwargs))
            super().__init__()
            self._cache = None

    def forward(self, input: Tensor) -> Tensor:
        if (
            type(input) is not Tensor
            or input.dtype not in COMPUTED
            or input.layout is not STRIDED
            or input.is_nested
        ):
            self._check_input(input)
        output, self._cache = self._accepted(self._forward(input))
        return output

    def _accepted(self, result: object) -> tuple[Tensor, Tensor]:
        """What :meth:`_forward` returned, ``(output, cache)``, once checked (see
        :meth:`_misreturned` and :meth:`_check_cache`)."""
        if type(result) is not tuple or len(result) != 2:
            raise self._misreturned(result)
        output, cache = result
        # (the output's type first: a list's shape would fail in Python's words, and a list
        # given as its own cache would be taken)
        if type(output) is not Tensor or (
            cache is not output and (type(cache) is not Tensor or cache.shape != output.shape)
        ):
            self._check_cache(output, cache)
        return output, cache

    def _misreturned(self, result: object) -> TypeError:
        """The error for a :meth:`_forward` that returned no ``(output, cache)`` pair (the
        output alone, a tensor of two rows, would unpack into two rows)."""
        if isinstance(result, Tensor):
            got = f"a tensor of shape {tuple(result.shape)}"
        elif isinstance(result, tuple):
            got = f"a tuple of {len(result)} item{'' if len(result) == 1 else 's'}"
        else:
            got = type(result).__name__
        return TypeError(
            f"{type(self).__name__}._forward must return the pair (output, cache), got {got}; "
            "return the output and the one tensor _backward needs, e.g. (output, output)"
        )

    def _check_cache(self, output: object, cache: object) -> None:
        """Refuse what :meth:`_forward` returned unless ``output`` is a tensor and ``cache``
        one of its shape (backward checks the gradient's shape against the cache)."""
        name = type(self).__name__
        if not isinstance(output, Tensor):
            raise TypeError(
                f"{name}._forward must return a tensor as the output, got {type(output).__name__}"
            )
        if isinstance(cache, Tensor) and cache.shape == output.shape:
            return
        got = (
            f"a tensor of shape {tuple(cache.shape)}"
            if isinstance(cache, Tensor)
            else f"a {type(cache).__name__}"
        )
        raise (ValueError if isinstance(cache, Tensor) else TypeError)(
            f"{name}._forward returned {got} as the cache; expected one tensor of the output's "
            f"shape {tuple(output.shape)} (backward checks the gradient's shape against it): "
            "cache the input or the output and compute the rest in _backward, or write a "
            "Module of your own for a derivative that needs several tensors"
        )

    def _check_input(self, input: object) -> None:
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor as input, got {type(input).__name__}")
        if input.dtype not in COMPUTED:
            raise TypeError(
                f"{name}: expected a {FLOATING.format(what='input')}, got dtype {input.dtype}"
            )
        check_dense(name, input)

    def backward(self, grad_output: Tensor) -> Tensor:
        cache = self._cache
        if (
            cache is None
            or type(grad_output) is not Tensor
            or grad_output.is_nested  # (whose shape is not read)
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
        """Return ``(output, cache)``: the cache, one tensor of the output's shape (the output
        itself, or the input), is what :meth:`_backward` receives."""
        raise NotImplementedError(
            f"{type(self).__name__}._forward is not implemented (a subclass of Activation "
            "returns (output, cache) from it)"
        )

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        """Return dL/dinput from dL/doutput and the cache of the last forward."""
        raise NotImplementedError(
            f"{type(self).__name__}._backward is not implemented (a subclass of Activation "
            "returns dL/dinput from the upstream gradient and the cache)"
        )

    def _operations(
        self, input: Tensor, output: Tensor, grad_output: Tensor, grad_input: Tensor
    ) -> Operations | None:
        """:meth:`_forward` and :meth:`_backward` on buffers that stay the same for many calls
        (those of ``fit``'s folded step), as operations to run in order, each taking no
        arguments (``functools.partial`` of a ``torch`` function: no Python frame of its own),
        or ``None`` where the activation has no such form (the caller then calls the two
        methods).

        The forward reads ``input`` and writes ``output`` (``input`` itself for a run in
        place, where :attr:`_in_place` allows it); the backward reads ``grad_output`` (the
        gradient with respect to ``output``) and what the forward left in the buffers, and
        writes ``grad_input``, which shares no memory with the other three (an operation may
        use it as its temporary), as ``grad_output`` shares none with ``input`` or ``output``. They are the operations the two methods issue on those buffers,
        in their order, with their bits: what those decide from their operands' dtypes and
        devices on every call is decided once here, from the buffers' (all of one dtype, on
        one device, dense and contiguous). A subclass that overrides :meth:`_forward` or
        :meth:`_backward` gets ``None`` from a built-in activation's form."""
        return None

    def _forward_out(self, input: Tensor, out: Tensor) -> None:
        """:meth:`forward`, writing the output into ``out`` (for an activation whose
        :meth:`_forward` takes ``out``)."""
        if (
            type(input) is not Tensor
            or input.dtype not in COMPUTED
            or input.layout is not STRIDED
            or input.is_nested
        ):
            self._check_input(input)
        self._cache = self._accepted(self._forward(input, out=out))[1]  # type: ignore[call-arg]

    def _backward_out(self, grad_output: Tensor, out: Tensor) -> None:
        """:meth:`backward`, writing the input gradient into ``out`` (for an activation whose
        :meth:`_backward` takes ``out``)."""
        cache = self._cache
        if (
            cache is None
            or type(grad_output) is not Tensor
            or grad_output.is_nested
            or grad_output.shape != cache.shape
        ):
            cache = self._check_gradient(grad_output)
        # (a gradient of another dtype or device never comes here: StackedActivation gives it
        # to backward, which promotes or names it)
        self._backward(grad_output, cache, out=out)  # type: ignore[call-arg]


def _arguments_refused(name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> str:
    """The refusal of arguments given to the constructor of the activation ``name``, which
    takes none."""
    given = [type(value).__name__ for value in args]
    given += [f"{key}={type(value).__name__}" for key, value in kwargs.items()]
    said = f"{name}() takes no arguments, got {len(given)} ({', '.join(given)})"
    if any(isinstance(value, Tensor) for value in (*args, *kwargs.values())):
        return f"{said}; a module is built, then called on its input: {name}()(x)"
    return said


def computes_on_buffers(module: Activation, kind: type[Activation], *buffers: Tensor) -> bool:
    """Whether ``kind``'s form of :meth:`Activation._operations` gives ``module``'s
    computation on ``buffers``: ``module`` computes with ``kind``'s own ``_forward`` and
    ``_backward`` (no subclass overrides them, none is set on the instance), and the buffers
    are float32 or float64 CPU tensors of one dtype, for which those methods take the path
    that the form writes out."""
    dtype = buffers[0].dtype
    attributes = module.__dict__
    return (
        (dtype is torch.float32 or dtype is torch.float64)
        and all(buffer.dtype is dtype and buffer.is_cpu for buffer in buffers)
        and type(module)._forward is kind._forward
        and type(module)._backward is kind._backward
        and "_forward" not in attributes
        and "_backward" not in attributes
    )
