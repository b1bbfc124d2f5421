"""A :class:`~minidl.nn.Sequential`'s forward and backward planned for one input signature.

A network of the paper's size spends most of a training step on the fixed cost of each tensor
operation and on the Python around it, not on arithmetic. A ``Sequential`` of
:class:`~minidl.nn.Linear` layers and built-in activations does not need the checks of every
child on every call: once its input has passed them, the shape, dtype and device of everything
that flows through the chain follow from the input's. A :class:`ChainPlan` is made for one input
signature (shape, dtype, device) when the ``Sequential`` sees that signature twice in a row, the
first time followed by a ``backward`` (a training step: a shape only evaluated keeps no
buffers). It then runs every child's own operations (the same methods, the same bits) on inputs
known to be accepted, with

- the checks made once for the whole chain: the input's signature, and that no parameter
  tensor was replaced since (:attr:`~minidl.nn.Parameter.replacements`), nor a layer's
  parameters;
- every intermediate result written into a buffer made once (``out=``): the outputs of the
  layers and activations inside the chain, and the gradients that flow back between them;
- an activation right after a layer run in place over the layer's output (the layer writes
  where the activation's result goes: :attr:`~minidl.nn.Activation._in_place`, which the
  built-in activations set), one buffer and one pass over memory less;
- the transposed views of those gradients made once.

What a caller sees is what the children compute one by one: the chain's output and the input
gradient returned by ``backward`` are new tensors, each child keeps what its ``forward`` cached
for its own ``backward``, and the parameter gradients are accumulated by the same operations.
The intermediate results (a child's cached output, say) live in the plan's buffers, which the
next planned call of that signature overwrites, as a child's next ``forward`` replaces its cache.

A plan holds, for a batch of ``N`` samples: the cached activations (as the children do between
calls, the output of a layer followed by an activation among them), a buffer of its own for the
output of a layer followed by a layer (which caches it), one per shape for the outputs of layers
followed by an activation that cannot run in place (none of the built-in ones), and two per
shape for the gradients between the children, these made at the first ``backward``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from minidl.nn._checks import STRIDED
from minidl.nn.activation_base import Activation
from minidl.nn.elu import ELU
from minidl.nn.gelu import GELU
from minidl.nn.leaky_relu import LeakyReLU
from minidl.nn.linear import Linear
from minidl.nn.module import Module
from minidl.nn.parameter import Parameter
from minidl.nn.relu import ReLU
from minidl.nn.selu import SELU
from minidl.nn.sigmoid import Sigmoid
from minidl.nn.silu import SiLU
from minidl.nn.tanh import Tanh

__all__ = ["ChainPlan", "PlanDeclinedError", "plannable", "runs_in_place"]

#: The activations a plan runs: element-wise, their output shaped like their input, and none
#: keeps its input for backward (so a layer's output buffer is free once its activation ran).
PLANNED_ACTIVATIONS: tuple[type[Activation], ...] = (
    Tanh,
    Sigmoid,
    ReLU,
    LeakyReLU,
    ELU,
    SELU,
    GELU,
    SiLU,
)

#: An input's signature: shape, dtype and device.
Signature = tuple[torch.Size, torch.dtype, torch.device]


def plannable(modules: Sequence[Module]) -> bool:
    """Whether a chain of ``modules`` may be planned: one or more modules, each a
    :class:`~minidl.nn.Linear` or a built-in activation of exactly that class (a subclass may
    compute otherwise)."""
    return bool(modules) and all(
        type(module) is Linear or type(module) in PLANNED_ACTIVATIONS for module in modules
    )


#: The methods a Sequential calls on its children. One set on an instance (``layer.forward =
#: ...``, to trace or change what a child does) is called: the chain then runs child by child.
_METHODS = ("forward", "backward", "backward_parameters")

#: And, for each planned class, those methods with the hooks through which they compute, which
#: a plan calls itself (a layer's product and accumulation, an activation's ``_forward`` and
#: ``_backward``, with ``out``) or fit's folded step (an activation's ``_operations``): one set
#: on an instance (``tanh._backward = ...``, to change a gradient) is called by the methods
#: above, child by child, with their arguments, but a layer's ``_accumulate`` and an
#: activation's ``_operations``, which only a plan or the folded step calls: set on an
#: instance, either is then called by nothing (a layer's ``backward_parameters`` makes the same
#: product itself, and ``fit`` trains step by step).
_NAMES = {
    kind: (*_METHODS, "_apply", "_accumulate", "_accumulate_bias")
    if kind is Linear
    else (*_METHODS, "_forward", "_backward", "_operations")
    for kind in (Linear, *PLANNED_ACTIVATIONS)
}

#: Those methods and hooks of each planned class, as defined.
_CLASS_METHODS = {
    kind: tuple(getattr(kind, name) for name in names) for kind, names in _NAMES.items()
}


#: The layer's hooks a plan calls, as defined: a plan is made only while its children's class
#: methods are those (see :meth:`ChainPlan.possible`), and one replaced on the class since (by
#: a tracer, with the hook's documented arguments, which lack the plan's ``out``) is not seen
#: by that plan, which would otherwise call it part-way through a step.
_APPLY = Linear._apply
_ACCUMULATE = Linear._accumulate


def _first_layer(items: Sequence[object]) -> int:
    """The index of the first :class:`~minidl.nn.Linear` (or its step) in ``items``, or the
    last index if none is."""
    kinds = (Linear, _LinearStep)
    return next(
        (index for index, item in enumerate(items) if isinstance(item, kinds)), len(items) - 1
    )


def runs_in_place(module: Module | None) -> bool:
    """Whether ``module`` is an activation that runs in place over the output of a layer before
    it, in a plan and in ``fit``'s folded step (see :attr:`Activation._in_place`)."""
    return isinstance(module, Activation) and type(module)._in_place


class PlanDeclinedError(Exception):
    """Raised by :meth:`ChainPlan.backward` before it changes anything, for a gradient that
    the children are to take one by one."""


class _Buffers:
    """Tensors made once per shape: ``take(shape)`` gives the same one for a shape every time;
    ``alternate(shape)`` gives one of two, the other one than last time (a gradient that flows
    between two children is read by the next child while that one writes its own)."""

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self._dtype, self._device = dtype, device
        self._single: dict[tuple[int, ...], Tensor] = {}
        self._pairs: dict[tuple[int, ...], list[Tensor]] = {}

    def new(self, shape: tuple[int, ...]) -> Tensor:
        """A buffer of its own."""
        # A normal tensor (not an inference one): written inside and outside inference mode.
        with torch.inference_mode(False):
            return torch.empty(shape, dtype=self._dtype, device=self._device)

    def take(self, shape: tuple[int, ...]) -> Tensor:
        buffer = self._single.get(shape)
        if buffer is None:
            buffer = self._single[shape] = self.new(shape)
        return buffer

    def alternate(self, shape: tuple[int, ...]) -> Tensor:
        pair = self._pairs.setdefault(shape, [])
        if len(pair) < 2:
            pair.append(self.new(shape))
            return pair[-1]
        pair.reverse()
        return pair[1]


class _LinearStep:
    """A :class:`~minidl.nn.Linear` in a plan."""

    __slots__ = (
        "accepted",
        "cached",
        "grad_input",
        "grad_output_t",
        "known",
        "module",
        "output",
    )

    def __init__(
        self,
        layer: Linear,
        known: tuple[object, ...],
        accepted: tuple[object, ...],
        output: Tensor | None,
    ) -> None:
        self.module = layer
        # What the layer keeps for an input of this shape (its _input_shape, _output_shape and
        # _ones), restored on every call: the layer may have seen other shapes in between.
        self.known = known
        # And what it keeps of the parameter tensors it accepted (its _weight_seen,
        # _bias_seen, _weight_t, _dtype and _device), restored where it has made its view of
        # others since (other Parameters registered, then its own again: the plan's, which
        # ChainPlan._intact finds it holding, their tensors unchanged).
        self.accepted = accepted
        self.output = output  # the buffer of the output, or None (a new tensor)
        self.cached: Tensor | None = None  # the input this plan last gave the layer
        self.grad_input: Tensor | None = None  # the buffer of the input gradient, or None
        self.grad_output_t: Tensor | None = None  # the transposed gradient buffer, or None

    def forward(self, input: Tensor) -> Tensor:
        layer = self.module
        layer._input_shape, layer._output_shape, layer._ones = self.known  # type: ignore[assignment]
        accepted = self.accepted
        if layer._weight_t is not accepted[2]:
            (
                layer._weight_seen,
                layer._bias_seen,
                layer._weight_t,
                layer._dtype,
                layer._device,
            ) = accepted  # type: ignore[assignment]
        self.cached = input
        return _APPLY(layer, input, self.output)

    def backward(self, grad_output: Tensor, with_input: bool) -> Tensor | None:
        layer = self.module
        grad_output_t = self.grad_output_t
        input = self.cached
        assert input is not None
        if grad_output_t is None:
            grad_output_t = grad_output.t()
        try:
            _ACCUMULATE(layer, grad_output_t, input)
        except RuntimeError as error:
            # The first layer's input, the caller's tensor, may be an autograd leaf (given
            # under torch.no_grad(), or made one since the forward): out= refused it before
            # writing anything. Read as a plain value, as Linear.backward_parameters reads it.
            # (Another error, or a gradient from an autograd graph, fails again here: the first
            # error is raised as it was.)
            try:
                _ACCUMULATE(layer, grad_output_t, input.detach())
            except RuntimeError:
                raise error from None
        if not with_input:
            return None
        return torch.mm(grad_output, layer.weight.data, out=self.grad_input)


class _ActivationStep:
    """A built-in activation in a plan: into a buffer of its own, or in place over the output
    of the layer before it (``in_place``: see :attr:`Activation._in_place`)."""

    __slots__ = (
        "backward_function",
        "cached",
        "forward_function",
        "grad_input",
        "in_place",
        "module",
        "output",
    )

    def __init__(self, activation: Activation, output: Tensor | None, in_place: bool) -> None:
        self.module = activation
        # (its class's, as defined: see _APPLY)
        methods = dict(zip(_NAMES[type(activation)], _CLASS_METHODS[type(activation)], strict=True))
        self.forward_function: Callable[..., tuple[Tensor, Any]] = methods["_forward"]
        self.backward_function: Callable[..., Tensor] = methods["_backward"]
        self.output = output
        self.in_place = in_place
        self.cached: Tensor | None = None  # the cache this plan last gave the activation
        self.grad_input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        activation = self.module
        out = input if self.in_place else self.output
        output, cache = self.forward_function(activation, input, out)
        activation._cache = self.cached = cache
        return output

    def backward(self, grad_output: Tensor, with_input: bool) -> Tensor | None:
        cache = self.cached
        assert cache is not None
        return self.backward_function(self.module, grad_output, cache, self.grad_input)


_Step = _LinearStep | _ActivationStep
#: Steps in the order a backward runs them, each with whether it returns its input gradient.
_Pairs = tuple[tuple[_Step, bool], ...]


class ChainPlan:
    """The forward and backward of a chain of modules (see :func:`plannable`) for inputs of one
    signature, made when an input of that signature has just passed the children's own checks.

    Args:
        modules: the chain, in order.
        input: the input that passed; its signature is the plan's.
    """

    @staticmethod
    def possible(modules: Sequence[Module]) -> bool:
        """Whether a plan can be made for ``modules``: a chain that :func:`plannable` accepts,
        with no method or hook set on a child's instance (see :data:`_NAMES`) nor replaced on
        its class (by a tracer or profiler, say: a plan calls the children's operations, not
        those methods). A class method replaced once a plan is made is not seen by that plan,
        which calls the hooks as defined (:data:`_APPLY`, :data:`_ACCUMULATE` and each
        activation step's own), not one with other arguments, part-way through a step."""
        return (
            plannable(modules)
            and not any(
                name in module.__dict__ for module in modules for name in _NAMES[type(module)]
            )
            and all(
                tuple(getattr(type(module), name) for name in _NAMES[type(module)])
                == _CLASS_METHODS[type(module)]
                for module in modules
            )
        )

    def __init__(self, modules: Sequence[Module], input: Tensor) -> None:
        # The children's attributes and how many they were: a method set on an instance since
        # (see _NAMES) adds one.
        self._attributes = tuple((module.__dict__, len(module.__dict__)) for module in modules)
        self.signature: Signature = (input.shape, input.dtype, input.device)
        self.replacements = Parameter.replacements
        # The parameters of each layer: one put in place of a layer's since (tied to another
        # layer's, say) replaces no tensor, but the layer's forward must check it and make its
        # transposed view of the weight again.
        self._parameters = tuple(
            (module.__dict__, module.weight, module.bias)
            for module in modules
            if isinstance(module, Linear)
        )
        # Whether the gradient given to backward may have any layout: it goes into a layer's
        # products as it is, where into an activation last its layout is the result's.
        self._any_layout = isinstance(modules[-1], Linear)
        self._buffers = _Buffers(input.dtype, input.device)
        steps: list[_Step] = []
        shape = tuple(input.shape)
        last = len(modules) - 1
        # The activations before the first layer make new tensors, forward and backward, as
        # they do child by child: an element-wise result takes its operands' memory layout (a
        # transposed input gives a transposed output), and the layer's products, which read
        # it, round according to that layout.
        self._leading = _first_layer(modules)
        shapes: list[tuple[int, ...]] = []  # the output shape of each child
        for index, module in enumerate(modules):
            if isinstance(module, Linear):
                shape = (*shape[:-1], module.out_features)
                following = modules[index + 1] if index < last else None
                if runs_in_place(following):
                    # The activation after it runs in place over the layer's output: the
                    # activation's buffer (a new tensor for the chain's output).
                    output = self._own(shape, index + 1, last)
                elif isinstance(following, Activation):
                    # Free once the activation ran (no planned activation keeps its input):
                    # one buffer per shape serves all such layers.
                    output = self._buffers.take(shape)
                else:
                    output = self._own(shape, index, last)
                known = (module._input_shape, module._output_shape, module._ones)
                accepted = (
                    module._weight_seen,
                    module._bias_seen,
                    module._weight_t,
                    module._dtype,
                    module._device,
                )
                steps.append(_LinearStep(module, known, accepted, output))
            else:
                assert isinstance(module, Activation)
                in_place = index > 0 and isinstance(modules[index - 1], Linear)
                in_place = in_place and runs_in_place(module)
                leading = index < self._leading
                output = None if leading or in_place else self._own(shape, index, last)
                steps.append(_ActivationStep(module, output, in_place))
            shapes.append(shape)
        self.steps = tuple(steps)
        # The steps by kind, for takes: a layer's cache is its _input, an activation's _cache.
        self._layer_steps = tuple(step for step in steps if isinstance(step, _LinearStep))
        self._activation_steps = tuple(step for step in steps if isinstance(step, _ActivationStep))
        self._shapes = tuple(shapes)
        self.output_shape = torch.Size(shape)
        # The children backward_parameters runs: from the last back to the first with
        # parameters (Sequential.backward_parameters's rule), that one without input gradient.
        trained = [
            index
            for index, module in enumerate(modules)
            if next(module.parameters(), None) is not None
        ]
        first = trained[0] if trained else last
        # For backward (True) and backward_parameters (False): the steps in the order they
        # run, each with whether it returns its input gradient, split after the first layer
        # among them: a gradient from an autograd graph can be refused (by a write into a
        # buffer) up to that layer's first operation, before any parameter gradient is written
        # (see backward); the layers after it read plain buffers.
        parameters_only = [(step, True) for step in reversed(steps[first + 1 :])]
        parameters_only.append((steps[first], False))
        with_input = [(step, True) for step in reversed(steps)]
        self._backward_steps: dict[bool, tuple[_Pairs, _Pairs]] = {}
        for flag, pairs in ((True, with_input), (False, parameters_only)):
            split = _first_layer([step for step, _ in pairs]) + 1
            self._backward_steps[flag] = (tuple(pairs[:split]), tuple(pairs[split:]))
        self._backward_ready = False

    def _own(self, shape: tuple[int, ...], index: int, last: int) -> Tensor | None:
        """A buffer of its own for a result inside the chain (a child may cache it); ``None``
        (a new tensor on every call) for the chain's output."""
        return None if index == last else self._buffers.new(shape)

    def accepts(self, input: object) -> bool:
        """Whether ``input`` has this plan's signature (a dense tensor) and is not from an
        autograd graph, no parameter (or parameter tensor) was replaced and no method was set
        on a child since the plan was made."""
        shape, dtype, device = self.signature
        return (
            type(input) is Tensor
            and not input.is_nested
            and input.shape == shape
            and input.dtype is dtype
            and Parameter.replacements == self.replacements
            and input.device == device
            and input.grad_fn is None
            and input.layout is STRIDED
            and self._intact()
        )

    def takes(self, grad_output: object) -> bool:
        """Whether ``grad_output`` fits the output of the last forward (and is dense, not from
        an autograd graph, nor non-contiguous for a chain that ends with an activation), every
        child still holds what this plan's last forward cached, and no parameter (or parameter
        tensor) was replaced. Another gradient goes to the children one by one."""
        if not (
            type(grad_output) is Tensor
            and not grad_output.is_nested
            and grad_output.shape == self.output_shape
            and grad_output.dtype is self.signature[1]
            and Parameter.replacements == self.replacements
            and grad_output.device == self.signature[2]
            and grad_output.grad_fn is None
            and grad_output.layout is STRIDED
            and (self._any_layout or grad_output.is_contiguous())
        ):
            return False
        # Each child still holds the cache this plan's last forward gave it (compared here:
        # a method call per step would cost more than the comparison).
        for layer_step in self._layer_steps:
            if layer_step.module._input is not layer_step.cached:
                return False
        for activation_step in self._activation_steps:
            if activation_step.module._cache is not activation_step.cached:
                return False
        return self._intact()

    def stale(self) -> bool:
        """Whether a parameter (or parameter tensor) was replaced or a method set on a child
        since the plan was made (which no input of its signature changes)."""
        return Parameter.replacements != self.replacements or not self._intact()

    def _intact(self) -> bool:
        """Whether the children hold as many attributes as when the plan was made (no method
        set on an instance since: see :data:`_NAMES`), and every layer the parameters it
        held then (read from its attributes once as many are found). (One method for both:
        :meth:`accepts` and :meth:`takes` run it on every call.)"""
        for attributes, count in self._attributes:
            if len(attributes) != count:
                return False
        for attributes, weight, bias in self._parameters:
            if attributes["weight"] is not weight or attributes["bias"] is not bias:
                return False
        return True

    def backward(self, grad_output: Tensor, with_input: bool) -> Tensor | None:
        """The chain's ``backward`` (``with_input``: the input gradient is returned) or its
        ``backward_parameters``, for a gradient that :meth:`takes`."""
        if not self._backward_ready:
            self._make_backward_buffers()
        head, rest = self._backward_steps[with_input]
        grad: Tensor | None = grad_output
        try:
            for step, returns in head:
                grad = step.backward(grad, returns)  # type: ignore[arg-type]
        except RuntimeError:
            # A leaf of an autograd graph (whose operations are recorded: takes cannot tell it
            # from a plain value) refused by a write into a buffer, before any parameter
            # gradient was written; or written into a buffer by a 16-bit activation, which the
            # first layer's product refuses. The buffers may now be in the graph: the plan is
            # dropped.
            raise PlanDeclinedError from None
        for step, returns in rest:
            grad = step.backward(grad, returns)  # type: ignore[arg-type]
        return grad

    def _make_backward_buffers(self) -> None:
        """The buffers of the gradients between the children (the first child's input gradient
        is a new tensor), and their transposed views for the layers that read them."""
        steps = self.steps
        # (none for the gradients of the activations before the first layer: see __init__)
        for index in range(len(steps) - 1, self._leading, -1):
            step = steps[index]
            # The gradient with respect to this child's input, the previous child's output.
            before = steps[index - 1]
            step.grad_input = self._buffers.alternate(self._shapes[index - 1])
            if isinstance(before, _LinearStep):
                before.grad_output_t = step.grad_input.t()
        self._backward_ready = True
