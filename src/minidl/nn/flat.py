"""Parameters as views of one flat buffer.

When every parameter value of a model is a view into one contiguous buffer (and every gradient a
view into another), an optimizer step runs its update's few tensor operations once over the
whole buffer (plain SGD's is one) and a ``zero_grad`` is one operation, whatever the depth of the
model. :func:`flatten_parameters` arranges that; :func:`flat_buffer` recognises it.
:class:`~minidl.nn.Sequential` flattens its parameters when it is built.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

if TYPE_CHECKING:
    from minidl.nn.parameter import Parameter

__all__ = [
    "StorageView",
    "flat_buffer",
    "flatten_parameters",
    "moved_keeping_runs",
    "storage_key",
    "storage_view",
]


def flat_buffer(tensors: Sequence[Tensor]) -> Tensor | None:
    """Return the 1-D tensor that ``tensors`` tile, in order, or ``None`` if they do not.

    The tensors tile a buffer when they are contiguous, share one storage, dtype and device, and
    each starts where the previous one ends. The returned tensor is a view of that storage, so
    writing to it writes to every tensor at once. A storage is known by its address, its size
    and its device (:func:`storage_key`: two storages may start at one address, two NumPy
    arrays' of one buffer, say).
    """
    if not tensors:
        return None
    first = tensors[0]
    storage = storage_key(first)
    start = first.storage_offset()
    end = start
    for tensor in tensors:
        if (
            tensor.dtype != first.dtype
            or not tensor.is_contiguous()
            or storage_key(tensor) != storage
            or tensor.storage_offset() != end
        ):
            return None
        end += tensor.numel()
    return first.as_strided((end - start,), (1,), start)


def storage_key(tensor: Tensor) -> tuple[int, int, torch.device]:
    """What tells ``tensor``'s storage apart: its address, its size in bytes and its device."""
    storage = tensor.untyped_storage()
    return storage.data_ptr(), storage.nbytes(), tensor.device


def flatten_parameters(
    parameters: Sequence[Parameter],
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor] | None:
    """Make every value (and every gradient) a view into one new contiguous buffer.

    Values and gradients are copied, so nothing changes numerically; the :class:`Parameter`
    objects stay the same. Parameters of mixed dtypes or devices (after the optional move to
    ``device``/``dtype``) are left as they are and ``None`` is returned.

    Returns:
        ``(values, grads)``, the two flat buffers, or ``None``.
    """
    if not parameters:
        return None
    # Normal (not inference-mode) tensors, so the views can be updated in place anywhere.
    with torch.inference_mode(False):
        return _flatten(parameters, device, dtype)


def _flatten(
    parameters: Sequence[Parameter],
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> tuple[Tensor, Tensor] | None:
    moved = [p.data.to(device=device, dtype=dtype) for p in parameters]
    if len({(t.dtype, t.device) for t in moved}) != 1:
        return None
    values = torch.cat([t.reshape(-1) for t in moved])
    grads = torch.cat([p.grad.to(device=device, dtype=dtype).reshape(-1) for p in parameters])
    offset = 0
    for parameter, value in zip(parameters, moved, strict=True):
        size = value.numel()
        parameter.data = values[offset : offset + size].view(value.shape)
        parameter.grad = grads[offset : offset + size].view(value.shape)
        offset += size
    return values, grads


def moved_keeping_runs(
    parameters: Sequence[Parameter],
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> list[tuple[Tensor, Tensor]]:
    """The ``(value, grad)`` of each parameter moved to ``device`` and/or cast to ``dtype``, not
    yet put in place: each run of consecutive parameters whose values tile one buffer (and
    whose gradients tile another) is moved as one buffer and viewed again, so that a flat part
    of a model (a :class:`~minidl.nn.Sequential` inside a module of one's own) stays flat."""
    runs: list[list[Parameter]] = []
    for parameter in parameters:
        # (each compared with the one before it only: a long run costs no more per parameter)
        if (
            runs
            and flat_buffer([runs[-1][-1].data, parameter.data]) is not None
            and flat_buffer([runs[-1][-1].grad, parameter.grad]) is not None
        ):
            runs[-1].append(parameter)
        else:
            runs.append([parameter])
    moved: list[tuple[Tensor, Tensor]] = []
    # Normal (not inference-mode) tensors, so the views can be updated in place anywhere.
    with torch.inference_mode(False):
        for run in runs:
            values = [p.data.to(device=device, dtype=dtype) for p in run]
            grads = [p.grad.to(device=device, dtype=dtype) for p in run]
            unmoved = all(
                value is p.data and grad is p.grad
                for value, grad, p in zip(values, grads, run, strict=True)
            )
            if len(run) > 1 and not unmoved:  # (a run already in place keeps its memory)
                flat_values = torch.cat([t.reshape(-1) for t in values])
                flat_grads = torch.cat([t.reshape(-1) for t in grads])
                offset = 0
                for index, value in enumerate(values):
                    size, shape = value.numel(), value.shape
                    values[index] = flat_values[offset : offset + size].view(shape)
                    grads[index] = flat_grads[offset : offset + size].view(shape)
                    offset += size
            moved += zip(values, grads, strict=True)
    return moved


class Whole:
    """One 1-D tensor over a whole storage, as :func:`storage_view` gives it out for pickling.

    Pickled, it comes back as that tensor, once for all the views that share it (pickle's memo
    keeps one result per object): a normal tensor, also when loaded inside
    ``torch.inference_mode()``, so that the views can be updated in place outside it.
    """

    __slots__ = ("__weakref__", "tensor")

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor

    def __reduce__(self) -> tuple[Callable[[Tensor], Tensor], tuple[Tensor]]:
        return _loaded_whole, (self.tensor,)


def _loaded_whole(tensor: Tensor) -> Tensor:
    """A whole storage as loaded: copied out of inference mode if it was loaded inside it."""
    if tensor.is_inference():
        with torch.inference_mode(False):
            return tensor.clone()
    return tensor


class StorageView(NamedTuple):
    """A tensor written as a view of one tensor over its whole storage (for pickling).

    Pickle writes a tensor with its whole storage, and a storage once per tensor, so views of
    one buffer (the parameters of a flat model, a loss's constants) would each take a copy of
    all of it along and come back views of nothing in common. Written as views of one
    :class:`Whole`, which pickle's memo writes once, they come back views of one storage, in the
    same layout. Make one with :func:`storage_view`, and the tensor again with :meth:`tensor`.
    """

    whole: Whole | Tensor  # (a Tensor once loaded)
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def tensor(self) -> Tensor:
        """The view again."""
        whole = self.whole.tensor if isinstance(self.whole, Whole) else self.whole
        return whole.as_strided(self.size, self.stride, self.offset)


#: While something holds it (the memo of a pickle or of ``copy.deepcopy`` being written), the
#: :class:`Whole` of each storage that :func:`storage_view` gave out (and of each part of one
#: that it gave out with ``compact``).
_WHOLE: weakref.WeakValueDictionary[tuple[object, ...], Whole] = weakref.WeakValueDictionary()


def storage_view(tensor: Tensor, compact: bool = False) -> StorageView:
    """``tensor`` (detached) as a view of a 1-D tensor over its whole storage, the same
    :class:`Whole` for every tensor of that storage while it is held.

    With ``compact``, a tensor whose elements lie in a part of its storage only (a slice of
    a batch, say) is written as a view of a copy of that part: the elements from the first to
    the last it reaches, ``offset`` to ``offset + 1 + sum((size - 1) * stride)``, rather
    than all of the storage; once loaded, it shares memory only with the tensors given out
    for the same part. (The same :class:`Whole` is given for that part while it is held.)
    """
    storage = tensor.untyped_storage()
    key: tuple[object, ...] = (*storage_key(tensor), tensor.dtype)
    offset = int(tensor.storage_offset())
    size, stride = tuple(tensor.shape), tuple(tensor.stride())
    length = storage.nbytes() // tensor.element_size()
    low, high = 0, length
    if compact and storage.nbytes():
        reach = sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
        low, high = (offset, offset + reach) if tensor.numel() else (offset, offset)
        if (low, high) != (0, length):
            key = (*key, low, high)
        else:
            low, high = 0, length
    whole = _WHOLE.get(key) if storage.nbytes() else None
    if whole is None:
        with torch.inference_mode(False):
            full = tensor.detach().new_empty(0).set_(storage, 0, (length,), (1,))
            whole = Whole(full if (low, high) == (0, length) else full[low:high].clone())
        if storage.nbytes():
            _WHOLE[key] = whole
    return StorageView(whole, offset - low, size, stride)
