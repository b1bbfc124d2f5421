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

Which tensors meet a gradient's memory is a matter of addresses. A tensor that meets a storage
PyTorch allocated starts inside it: a view of it does, and so does any tensor over the same
memory that another library made from it (``torch.from_numpy(grad.numpy())`` and the numpy views
of that array; none starts before the array without reading memory that is not its own). So
the first element's address is enough there. A gradient's storage that PyTorch did not
allocate (not resizable: ``torch.from_numpy`` of a slice of an array, ``torch.frombuffer`` at an
offset, ``torch.from_dlpack``, a slice of an ``untyped_storage()``) is a window that may lie
inside a larger memory, and a tensor over that memory (``torch.from_numpy`` of the whole array)
may start before the window and reach into it: for such a gradient, a tensor that starts before
the window's end is measured, from its first element to its last, and held if that span meets
the window (the search of a tensor that is not held costs no more where no gradient is a
window). Addresses cannot see one
memory mapped twice (a file or a shared-memory block opened twice: two address ranges over the
same pages); a tensor given there is not copied.

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

    __slots__ = ("_ranges", "_registered", "_seen", "_windows")

    def __init__(self) -> None:
        self._ranges: tuple[tuple[int, int], ...] = ()
        #: Those of the ranges that may be part of a larger memory (see :meth:`_find`).
        self._windows: tuple[tuple[int, int], ...] = ()
        self._seen = self._registered = -1  # (no count is -1: found at the first call)

    def __reduce__(self) -> tuple[Any, ...]:
        # Addresses are the process's own: a copy (pickled, deep-copied) finds them again.
        return (GradientMemory, ())

    def holds(self, tensor: Tensor, module: Module) -> bool:
        """Whether ``tensor``'s first element lies in the storage of one of the gradients, as
        it does for any tensor that shares memory with one (a view of that storage, or a tensor
        over the same memory, ``torch.from_numpy(grad.numpy())``), and for some that do not
        (another part of a storage that a gradient is a view of), which are copied needlessly
        but rightly; or, for a gradient's storage that is a window into a larger memory (see
        the module docstring), whether the elements of ``tensor``, from its first to its last,
        meet that window. A tensor without storage (sparse, say) is not held: its module
        refuses it. ``module`` is the one that keeps this memory; its parameters are read again after
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
        # (low 0: a tensor that starts before the end of a window, after the other ranges)
        return low != 0 or self._meets_window(tensor, address)

    def _meets_window(self, tensor: Tensor, address: int) -> bool:
        """Whether the elements of ``tensor``, from its first (at ``address``) to its last
        (strides are not negative), meet one of the windows."""
        if tensor.is_contiguous():
            end = address + tensor.nbytes
        elif tensor.numel():
            last = sum(
                (size - 1) * stride
                for size, stride in zip(tensor.shape, tensor.stride(), strict=True)
            )
            end = address + (last + 1) * tensor.element_size()
        else:
            return False
        return any(address < high and low < end for low, high in self._windows)

    def _find(self, module: Module) -> None:
        """Note the address range of each gradient's storage, and which of them are windows:
        storages over memory that PyTorch did not allocate for them (``torch.from_numpy``,
        ``torch.frombuffer``, ``torch.from_dlpack``, a slice of an ``untyped_storage()``; not
        resizable), which may be a part of a larger one."""
        seen, registered = Parameter.replacements, Module._registrations
        ranges: dict[int, int] = {}
        windows: dict[int, int] = {}
        for parameter in module.parameters():
            storage = parameter.grad.untyped_storage()
            low = storage.data_ptr()
            if low:  # (0: a meta or empty storage, which holds no element)
                # (two storages may start at one address, torch.from_numpy of an array and of
                # its first half: the longer is kept, which holds the shorter)
                found = ranges if storage.resizable() else windows
                found[low] = max(found.get(low, low), low + storage.nbytes())
        self._windows = tuple(windows.items())
        # A window is searched as (0, its end), after the other ranges: a tensor that starts
        # there is then measured (only then: the loop of holds costs no more without windows).
        self._ranges = tuple(ranges.items()) + tuple((0, high) for high in windows.values())
        self._seen, self._registered = seen, registered
