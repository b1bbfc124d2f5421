"""Whether a tensor given to a module lies in the memory of the gradients its backward writes.

A module's backward accumulates into its parameters' gradients in place and reads its input
(cached by the forward) and its upstream gradient while it does. A tensor the caller gives that
lies in a gradient's memory (``layer(layer.weight.grad)``, ``layer.backward(layer.weight.grad)``,
a view of a :class:`~minidl.nn.Sequential`'s flat gradient buffer) would then be read after
minidl itself overwrote it: a silently wrong gradient, where PyTorch's autograd computes every
gradient from the values given. The modules that read such a tensor after writing a gradient
(:class:`~minidl.nn.Linear`, :class:`~minidl.nn.BatchedLinear`, :class:`~minidl.nn.BatchNorm1d`,
:class:`~minidl.nn.Sequential`, :class:`~minidl.nn.Residual`) copy it first when
:meth:`GradientMemory.holds` says it lies there; the test is one address read and one comparison
per storage of gradients (one in a ``Sequential``: its flat buffer), the storages found again only
when a parameter tensor was assigned (:attr:`Parameter.replacements`) or a parameter or module
registered.

A ``Sequential`` or a ``Residual`` looks in the gradients of every module inside it, so a
module of one's own there is covered too. Used alone, such a module is its author's part (see
the tutorial's section on what minidl does with a module of one's own): a backward that reads
its upstream gradient after writing its own parameter gradients, or a module holding layers
whose first one reads its cached input after a later one wrote its gradients, computes with
the values written over, as ``Module`` sees neither what a forward caches nor a backward's
order (copying every input in ``Module.__call__`` would cost each call of the training loop
and still miss ``backward`` and a direct ``forward``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from minidl.nn.module import Module
from minidl.nn.parameter import Parameter

__all__ = ["GradientMemory"]


class GradientMemory:
    """The address ranges of the storages of the gradients of a module's parameters, kept by
    the module (which it does not hold: no reference cycle keeps a dropped model alive)."""

    __slots__ = ("_ranges", "_registered", "_seen")

    def __init__(self) -> None:
        self._ranges: tuple[tuple[int, int], ...] = ()
        self._seen = self._registered = -1  # (no count is -1: found at the first call)

    def __reduce__(self) -> tuple[Any, ...]:
        # Addresses are the process's own: a copy (pickled, deep-copied) finds them again.
        return (GradientMemory, ())

    def holds(self, tensor: Tensor, module: Module) -> bool:
        """Whether ``tensor``'s first element lies in the storage of one of the gradients, as
        it does for any tensor that shares memory with one (a view of that storage, or a tensor
        over the same memory, ``torch.from_numpy(grad.numpy())``), and for some that do not
        (another part of a storage that a gradient is a view of), which are copied needlessly
        but rightly. A tensor without storage (sparse, say) is not held: its module refuses
        it. ``module`` is the one that keeps this memory; its parameters are read again after
        any parameter tensor was assigned (a new parameter's is too) or any parameter or module
        registered."""
        if Parameter.replacements != self._seen or Module._registrations != self._registered:
            self._find(module)
        try:
            address = tensor.data_ptr()
        except (AttributeError, RuntimeError):  # (not a tensor, or no storage)
            return False
        for low, high in self._ranges:  # (a loop: any() over a generator takes twice as long)
            if low <= address < high:
                break
        else:
            return False
        return True

    def _find(self, module: Module) -> None:
        seen, registered = Parameter.replacements, Module._registrations
        ranges: dict[int, int] = {}
        for parameter in module.parameters():
            storage = parameter.grad.untyped_storage()
            low = storage.data_ptr()
            if low:  # (0: a meta or empty storage, which holds no element)
                ranges[low] = low + storage.nbytes()
        self._ranges = tuple(ranges.items())
        self._seen, self._registered = seen, registered
