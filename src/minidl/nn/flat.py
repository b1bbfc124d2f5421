"""Parameters as views of one flat buffer.

When every parameter value of a model is a view into one contiguous buffer (and every gradient a
view into another), an optimizer step or a ``zero_grad`` is one tensor operation whatever the
depth of the model. :func:`flatten_parameters` arranges that; :func:`flat_buffer` recognises it.
:class:`~minidl.nn.Sequential` flattens its parameters when it is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from minidl.nn.parameter import Parameter

__all__ = ["compact", "flat_buffer", "flatten_parameters"]


def flat_buffer(tensors: Sequence[Tensor]) -> Tensor | None:
    """Return the 1-D tensor that ``tensors`` tile, in order, or ``None`` if they do not.

    The tensors tile a buffer when they are contiguous, share one storage, dtype and device, and
    each starts where the previous one ends. The returned tensor is a view of that storage, so
    writing to it writes to every tensor at once.
    """
    if not tensors:
        return None
    first = tensors[0]
    storage = first.untyped_storage().data_ptr()
    start = first.storage_offset()
    end = start
    for tensor in tensors:
        if (
            tensor.dtype != first.dtype
            or not tensor.is_contiguous()
            or tensor.untyped_storage().data_ptr() != storage
            or tensor.storage_offset() != end
        ):
            return None
        end += tensor.numel()
    return first.as_strided((end - start,), (1,), start)


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


def compact(tensor: Tensor) -> Tensor:
    """``tensor`` itself if it spans its whole storage, else a copy that does.

    For pickling and ``copy.deepcopy``: a view is pickled with its whole storage, so a parameter
    of a flat model would take the whole model's buffer along, once per parameter.
    """
    if tensor.untyped_storage().nbytes() > tensor.numel() * tensor.element_size():
        with torch.inference_mode(False):
            return tensor.clone(memory_format=torch.contiguous_format)
    return tensor
