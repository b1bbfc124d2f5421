"""A chain of modules."""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor

from minidl import anomaly
from minidl.nn.flat import flatten_parameters
from minidl.nn.module import Module

__all__ = ["Sequential"]


class Sequential(Module):
    r"""Modules applied one after the other: :math:`y = f_k(\dots f_2(f_1(x)))`.

    ``forward`` calls each child's ``forward`` in order; ``backward`` calls each child's
    ``backward`` in reverse order, so gradients flow from the last module to the first. ``param()``
    and ``parameters()`` concatenate the children's, in order.

    When it is built, a ``Sequential`` makes the values (and the gradients) of all its parameters
    views of one flat buffer (see :mod:`minidl.nn.flat`), so that optimizers update the whole
    model in one operation. The :class:`~minidl.nn.Parameter` objects of the children are kept.

    Args:
        *modules: the modules, in the order data flows through them.

    Example:
        >>> model = Sequential(Linear(2, 25), Tanh(), Linear(25, 2))
        >>> model(torch.randn(4, 2)).shape
        torch.Size([4, 2])
    """

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(
                    f"Sequential: argument {index} must be a minidl Module, "
                    f"got {type(module).__name__}"
                )
            self.register_module(str(index), module)
        self._layers: tuple[Module, ...] = tuple(modules)
        self._reversed: tuple[Module, ...] = tuple(reversed(modules))
        flatten_parameters(self.parameters())

    def forward(self, input: Tensor) -> Tensor:
        if anomaly.enabled:  # the one check of `with minidl.detect_anomaly():`
            return anomaly.sequential_forward(self, input)
        for module in self._layers:
            input = module.forward(input)
        return input

    def backward(self, grad_output: Tensor) -> Tensor:
        if anomaly.enabled:
            return anomaly.sequential_backward(self, grad_output)
        for module in self._reversed:
            grad_output = module.backward(grad_output)
        return grad_output

    def __getitem__(self, index: int) -> Module:
        return self._layers[index]

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers)
