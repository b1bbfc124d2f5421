"""A trainable tensor and its accumulated gradient: :class:`Parameter`."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from minidl._validate import DTYPES, TAKEN, layout_name
from minidl.nn.flat import storage_view

__all__ = ["Parameter", "count_replacement"]


class Parameter:
    """A trainable tensor and the gradient accumulated for it.

    A ``Parameter`` is the unit of identity of the framework: optimizers keep their state per
    parameter and update ``data`` in place, so a module never sees its tensors replaced behind it.
    ``grad`` always exists and has the shape, dtype and device of ``data`` (zeros until a backward
    pass accumulates into it): assigning a ``grad`` that does not fit raises, and assigning a
    ``data`` that the ``grad`` does not fit replaces the ``grad`` with zeros that do. Each has
    memory of its own: a tensor whose elements share memory, or a ``grad`` that shares memory
    with ``data`` (or the reverse), which a backward would read while it accumulates, raises.

    :attr:`Parameter.replacements` counts every assignment of a ``data`` or ``grad`` tensor, of
    any parameter (in-place updates are not counted): an optimizer that saw the count unchanged
    since it last looked knows that its parameters still hold the same tensors. Each assignment
    takes the next number of one process-wide :func:`itertools.count` (whose ``next`` is one
    call, not a read then a write), so that no two assignments store the same count, in
    whatever order threads store them. An attribute deleted from a module moves the count on
    too (see :func:`count_replacement`).

    Args:
        data: the initial value, a dense tensor of float16, bfloat16, float32 or float64 (not
            float8); it is used as is (not copied).
        name: an optional name used in messages.

    Example:
        >>> p = Parameter(torch.zeros(3))
        >>> p.grad.shape
        torch.Size([3])
    """

    __slots__ = ("data", "grad", "name")

    replacements: ClassVar[int] = 0
    data: Tensor
    grad: Tensor
    name: str

    def __init__(self, data: Tensor, name: str = "") -> None:
        self.name = name
        self.data = data  # and grad, zeros like it

    def __setattr__(self, name: str, value: object) -> None:
        """Assign ``data``, ``grad`` or ``name``; checked, so that ``grad`` keeps the shape,
        dtype and device of ``data``.

        A new ``data`` must be a dense float16, bfloat16, float32 or float64 tensor; if ``grad``
        does not fit it, ``grad`` becomes zeros that do. A new ``grad`` must fit ``data``. Parameters are updated in place
        inside and outside ``torch.inference_mode()``, which only normal tensors allow: a tensor
        made in inference mode is copied out of it.
        """
        if name == "data":
            value = self._checked_data(value)
        elif name == "grad":
            value = self._checked_grad(value)
        elif name == "name":
            if not isinstance(value, str):
                raise TypeError(f"Parameter: name must be a str, got {type(value).__name__}")
            object.__setattr__(self, name, value)
            return
        else:
            raise AttributeError(
                f"{self._where()} has no attribute {name!r} to set; expected data, grad or name"
            )
        object.__setattr__(self, name, value)
        # Counted once the tensor is in place: an optimizer (or plan) that reads the new count
        # in between, from another thread, finds the new tensor, or the count changed again.
        # A number no other assignment stores (``+= 1`` reads, then writes: two threads could
        # store the same count, and a reader in between would miss the second replacement).
        Parameter.replacements = next(_REPLACEMENTS)
        if name == "data":
            grad = getattr(self, "grad", None)
            if grad is None or not _fits(grad, value):
                with torch.inference_mode(False):
                    self.grad = torch.zeros_like(value)

    def _where(self) -> str:
        return f"Parameter {self.name!r}" if getattr(self, "name", "") else "Parameter"

    def _checked_data(self, value: object) -> Tensor:
        if not isinstance(value, Tensor):
            raise TypeError(
                f"{self._where()}: data must be a torch.Tensor, got {type(value).__name__}"
            )
        if value.dtype not in DTYPES:  # (float8 is floating point, but no optimizer steps it)
            raise TypeError(f"{self._where()}: data must be a tensor of {TAKEN}, got {value.dtype}")
        _check_dense(self._where(), "data", value)
        _check_own_memory(self._where(), "data", value)
        # (no grad yet in the constructor; one that does not fit the new data is replaced)
        grad = getattr(self, "grad", None)
        if grad is not None and _fits(grad, value) and _share_memory(value, grad):
            raise ValueError(
                f"{self._where()}: data shares memory with grad, but a backward accumulates "
                "into grad while it reads data; expected a tensor of its own (pass data.clone())"
            )
        return _normal(value)

    def _checked_grad(self, value: object) -> Tensor:
        data = self.data
        if not isinstance(value, Tensor):
            raise TypeError(
                f"{self._where()}: grad must be a torch.Tensor like data, got "
                f"{type(value).__name__} (zero_grad() clears it)"
            )
        if value.dtype != data.dtype:
            raise TypeError(
                f"{self._where()}: grad must have the dtype of data ({data.dtype}), "
                f"got {value.dtype}"
            )
        _check_dense(self._where(), "grad", value)  # (first: a nested one's shape is not read)
        if value.shape != data.shape or value.device != data.device:
            raise ValueError(
                f"{self._where()}: grad must have the shape and device of data "
                f"({tuple(data.shape)} on {data.device}), got {tuple(value.shape)} on "
                f"{value.device}"
            )
        _check_own_memory(self._where(), "grad", value)
        if _share_memory(value, data):
            raise ValueError(
                f"{self._where()}: grad shares memory with data, but a backward accumulates "
                "into grad while it reads data; expected a tensor of its own (pass grad.clone())"
            )
        return _normal(value)

    @property
    def shape(self) -> torch.Size:
        """The shape of the value (and of the gradient)."""
        return self.data.shape

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the value (and of the gradient)."""
        return self.data.dtype

    @property
    def device(self) -> torch.device:
        """The device of the value (and of the gradient)."""
        return self.data.device

    def numel(self) -> int:
        """The number of entries of the value."""
        return self.data.numel()

    def __getstate__(self) -> dict[str, object]:
        """For pickle and ``copy.deepcopy``: ``data`` and ``grad`` as views of their whole
        storages (:class:`~minidl.nn.flat.StorageView`), so that a flat buffer is written once
        and the parameters come back views of one buffer, in the same layout."""
        return {"name": self.name, "data": storage_view(self.data), "grad": storage_view(self.grad)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
        self.data = state["data"].tensor()
        self.grad = state["grad"].tensor()

    def zero_grad(self) -> None:
        """Set the accumulated gradient to zero, in place."""
        self.grad.zero_()

    def __repr__(self) -> str:
        name = f" {self.name!r}" if self.name else ""
        return f"Parameter{name}(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


# The numbers Parameter.replacements takes, from 1 on.
_REPLACEMENTS = itertools.count(1)


def count_replacement() -> None:
    """Move :attr:`Parameter.replacements` on, to a number no other change stores, as an
    assignment of a parameter's tensor does: for every attribute deleted from a module
    (``Module.__delattr__``), since a plan of a chain finds a method set on a child's instance
    by the number of attributes the child holds, which one deleted and another set, with no
    call between, would leave as it was."""
    Parameter.replacements = next(_REPLACEMENTS)


def _fits(tensor: Tensor, like: Tensor) -> bool:
    """``tensor`` has the shape, dtype and device of ``like``."""
    return (
        tensor.shape == like.shape and tensor.dtype == like.dtype and tensor.device == like.device
    )


def _check_dense(where: str, name: str, tensor: Tensor) -> None:
    """Refuse a sparse (or other non-strided) tensor: the in-place updates of optimizers,
    backward passes and ``load_state_dict`` are dense operations, which the tensor library
    refuses for it part-way through, with other parameters already changed."""
    if tensor.layout != torch.strided or tensor.is_nested:  # (a nested one's shape is not read)
        hint = "" if tensor.is_nested else f" (pass {name}.to_dense())"
        raise TypeError(
            f"{where}: {name} is a {layout_name(tensor)} tensor; expected a dense tensor{hint}"
        )


def _check_own_memory(where: str, name: str, tensor: Tensor) -> None:
    """Refuse a tensor with several elements at one memory location: it is updated in place
    (by an optimizer's step, a backward's accumulation, ``load_state_dict``), which the tensor
    library refuses part-way through, with other parameters already changed, for a dimension
    of stride 0 (as ``expand`` makes), and does silently for strides that meet (as
    ``torch.as_strided`` can make): such a location moved once per element on it."""
    if tensor.layout != torch.strided:  # (no strides)
        return
    for size, stride in zip(tensor.shape, tensor.stride(), strict=True):
        if stride == 0 and size > 1:
            raise ValueError(
                f"{where}: {name} of shape {tuple(tensor.shape)} has elements that share memory "
                f"(strides {tensor.stride()}, as an expanded tensor has), but it is updated in "
                "place; expected a tensor whose elements each have their own memory (pass "
                f"{name}.clone())"
            )
    if _overlaps(tensor):
        raise ValueError(
            f"{where}: {name} of shape {tuple(tensor.shape)} has elements that share memory "
            f"(strides {tensor.stride()}, as torch.as_strided can make), but it is updated in "
            "place; expected a tensor whose elements each have their own memory (pass "
            f"{name}.clone())"
        )


def shares_elements(tensor: Tensor) -> bool:
    """Whether two elements of a strided ``tensor`` lie at one memory location (a stride 0, as
    ``expand`` makes, or strides that meet), which a copy into it refuses part-way."""
    if tensor.layout is not torch.strided or tensor.is_nested or tensor.is_meta:
        return False
    if tensor.numel() == 0:  # (nothing to write)
        return False
    stride_zero = any(
        stride == 0 and size > 1 for size, stride in zip(tensor.shape, tensor.stride(), strict=True)
    )
    return stride_zero or _overlaps(tensor)


def _overlaps(tensor: Tensor) -> bool:
    """Whether two elements of ``tensor`` (no stride 0) are at one memory location: not when
    its dimensions, by increasing stride, each step past the span of those before (any dense
    or transposed tensor, or a slice of one); otherwise found from every element's offset."""
    dimensions = sorted(
        (stride, size)
        for size, stride in zip(tensor.shape, tensor.stride(), strict=True)
        if size > 1
    )
    span = 1
    for stride, size in dimensions:
        if stride < span:
            break
        span += stride * (size - 1)
    else:
        return False
    offsets = torch.zeros((), dtype=torch.int64)
    for size, stride in zip(tensor.shape, tensor.stride(), strict=True):
        offsets = offsets.unsqueeze(-1) + torch.arange(size, dtype=torch.int64) * stride
    ordered = offsets.reshape(-1).sort().values
    return bool((ordered[1:] == ordered[:-1]).any())


def _share_memory(first: Tensor, second: Tensor) -> bool:
    """Whether the memory spans of two dense tensors meet, each from its first element to its
    last (within one storage, or two over the same memory, as ``torch.from_numpy`` can make):
    two parts of one buffer side by side do not, parts that interleave (``buffer[0::2]`` and
    ``buffer[1::2]``) are taken to. A tensor without elements, or at address 0 (meta), holds
    no memory."""
    first_low, first_high = _span(first)
    second_low, second_high = _span(second)
    return first_low < second_high and second_low < first_high


def first_overlap(named: Iterable[tuple[str, Tensor]]) -> tuple[str, str] | None:
    """The names of the first two of ``named`` tensors (in their order) whose memory spans meet
    (see :func:`_share_memory`; per device), or ``None``: one sweep over the spans sorted by
    address, the farthest end met so far kept."""
    spans = []
    for position, (name, tensor) in enumerate(named):
        if tensor.layout is torch.strided and not tensor.is_nested:
            low, high = _span(tensor)
            if high > low:  # (a tensor without elements, or meta, holds no memory)
                spans.append((str(tensor.device), low, high, position, name))
    spans.sort()
    reach: dict[str, tuple[int, int, str]] = {}  # (per device: the farthest end, and whose)
    for device, low, high, position, name in spans:
        end, place, other = reach.get(device, (0, 0, ""))
        if low < end:
            return (other, name) if place < position else (name, other)
        if high > end:
            reach[device] = (high, position, name)
    return None


def _span(tensor: Tensor) -> tuple[int, int]:
    """The addresses from ``tensor``'s first element to the end of its last (strides are not
    negative); ``(0, 0)`` for one without elements or memory (a meta tensor's storage is at
    address 0, its views at their offsets from it)."""
    if tensor.numel() == 0 or tensor.untyped_storage().data_ptr() == 0:
        return 0, 0
    low = tensor.data_ptr()
    last = sum(
        (size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride(), strict=True)
    )
    return low, low + (last + 1) * tensor.element_size()


def _normal(tensor: Tensor) -> Tensor:
    """``tensor`` detached from any autograd graph (minidl computes its own gradients); an
    inference tensor is first copied outside inference mode."""
    if tensor.is_inference():
        with torch.inference_mode(False):
            tensor = tensor.clone()
    return tensor.detach()
