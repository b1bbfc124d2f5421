"""Python numbers as operands of tensor operations, without a conversion on every call.

An element-wise operation with a Python number, ``x.mul_(0.9)``, wraps the number in a float64
(or int64) tensor and converts it to ``x``'s dtype on every call: an ``aten::to`` that costs
about as much as a small operation itself (about 2.5 us of 5 on a CPU, for a float32 ``x`` of a
hundred elements). :func:`operand` gives the number as a 0-dim tensor of ``x``'s dtype instead,
made once and cached: the operation then reads it as it would have read the converted number,
so the result has the same bits. It is for numbers that repeat from call to call (a module's or
an optimizer's constants): a number not seen recently costs a new tensor (about 7.7 us against
2.9 us for the conversion, measured as above), so a number that changes on every call, such
as Adam's bias correction, is better passed as it is.

That holds where the number is converted to ``x``'s dtype before the arithmetic, which is the
case for float32 and float64 on the CPU. float16 and bfloat16 operations compute with the number
in float32 (a 0-dim float16 tensor would round it first), and other devices are left as they
are, so there the number itself is returned.

A number as ``add_``'s ``alpha`` is rounded otherwise: on the CPU, a float16 or bfloat16
``add_`` rounds the product ``alpha * other`` to the dtype first over a tensor's last elements
only, so an element's bits depend on where it lies. :func:`add_scaled_` and :func:`add_scaled`
give every element the bits of the vectorised body, so that an optimizer updates a flat buffer
as it updates its parameters one by one.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

__all__ = ["add_scaled", "add_scaled_", "cpu_operand", "operand", "scaled", "tensor_operand"]

_CACHED = (torch.float32, torch.float64)
_SIXTEEN_BIT = (torch.float16, torch.bfloat16)
_CPU = torch.device("cpu")


def operand(value: float, like: Tensor) -> Tensor | float:
    """``value`` as the other operand of an element-wise operation on ``like``.

    Args:
        value: a real number (a Python ``float`` or ``int``).
        like: the tensor the operation works on; its dtype and device decide the form.

    Returns:
        A cached 0-dim CPU tensor holding ``value`` in ``like``'s dtype, for a float32 or
        float64 ``like`` on the CPU; ``value`` itself otherwise, and for zero, whose sign a
        cache keyed by value would lose (``0.0 == -0.0``).
    """
    if like.dtype in _CACHED and like.is_cpu and value:
        return _zero_dim(value, like.dtype)
    return value


def cpu_operand(value: float, dtype: torch.dtype) -> Tensor:
    """``value`` as :func:`operand`'s cached 0-dim CPU tensor of ``dtype`` (float32 or float64,
    not checked), for an operation on CPU tensors of that dtype that takes tensors only (the
    ``self`` of ``addcmul``), without :func:`operand`'s checks of a tensor; zero as
    :func:`tensor_operand` gives it, its sign kept."""
    if value:
        return _zero_dim(value, dtype)
    return _zero_dim_on(value, math.copysign(1.0, value), dtype, _CPU)


def tensor_operand(value: float, like: Tensor) -> Tensor:
    """``value`` as a 0-dim tensor operand of an operation on ``like`` that takes tensors only
    (``lerp``'s ``end``): :func:`operand`'s cached tensor where it gives one, else a 0-dim
    tensor of ``like``'s dtype on its device (the value converted as :func:`operand`'s is),
    cached too, by value (zero's sign included), dtype and device: made once, not at every
    call (a ``torch.full`` on a GPU is a kernel launch)."""
    cached = operand(value, like)
    if isinstance(cached, Tensor):
        return cached
    return _zero_dim_on(value, math.copysign(1.0, value), like.dtype, like.device)


def add_scaled_(target: Tensor, other: Tensor, alpha: float) -> Tensor:
    """``target.add_(other, alpha=alpha)``, whose bits do not depend on where an element lies.

    On the CPU, a float16 or bfloat16 ``add_`` rounds ``alpha`` to the tensor's dtype and
    computes ``target + alpha * other`` in float32, rounded once, over the tensor's vectorised
    body (ATen's AVX2 and AVX-512 kernels), but rounds the product to the dtype first over its
    last elements (a scalar loop; ATen's ``default`` kernels everywhere): an element's bits
    depend on its place, and an optimizer's update of a flat buffer differed from its update
    of the parameters one by one (PyTorch's) in the last bit of about one element in ten.
    There it is ``addcmul_`` with ``alpha`` rounded as ``add_`` rounds it, which gives every
    element the bits of the vectorised body, under every set of kernels (the product of two
    16-bit numbers is exact in float32, but for bfloat16 where it leaves float32's range);
    elsewhere ``add_`` itself. The exception: a bfloat16 product beyond float32's largest value
    (``alpha`` and ``other`` near 1e38 and 10, say) is infinite here, where the vectorised
    body, which fuses the multiply and the add, may give a finite sum, and one below float32's
    smallest normal value may give the sum another zero's sign.
    """
    if target.dtype in _SIXTEEN_BIT and target.is_cpu:
        one = _zero_dim_on(1.0, 1.0, target.dtype, _CPU)
        return target.addcmul_(other, one, value=_rounded(alpha, target.dtype))
    return target.add_(other, alpha=alpha)


def add_scaled(tensor: Tensor, other: Tensor, alpha: float) -> Tensor:
    """``tensor.add(other, alpha=alpha)``, a new tensor, with the bits of :func:`add_scaled_`."""
    if tensor.dtype in _SIXTEEN_BIT and tensor.is_cpu:
        one = _zero_dim_on(1.0, 1.0, tensor.dtype, _CPU)
        return torch.addcmul(tensor, other, one, value=_rounded(alpha, tensor.dtype))
    return tensor.add(other, alpha=alpha)


def scaled(tensor: Tensor, alpha: float) -> Tensor:
    """``tensor * alpha``, a new tensor, with ``alpha`` as :func:`add_scaled_` takes it: rounded
    to the dtype for a float16 or bfloat16 tensor on the CPU (the product of two 16-bit numbers
    is exact in float32, so each element is rounded once), :func:`operand`'s otherwise. A sum
    ``alpha * x + beta * y`` made as ``add_scaled_(scaled(x, alpha), y, beta)`` scales ``x`` by
    the ``alpha`` that ``add_scaled_(y, x, alpha)`` would."""
    if tensor.dtype in _SIXTEEN_BIT and tensor.is_cpu:
        return tensor.mul(_rounded(alpha, tensor.dtype))
    return tensor.mul(operand(alpha, tensor))


def _rounded(value: float, dtype: torch.dtype) -> float:
    """``value`` rounded to ``dtype``, as a 16-bit ``add_`` rounds its ``alpha``; zero as it
    is (the cache's key takes 0.0 for -0.0, which gave ``-lr`` of a rate 0 the sign of the zero
    rounded first, and so other bits)."""
    if not value:
        return float(value)
    return _rounded_nonzero(value, dtype)


@lru_cache(maxsize=256)
def _rounded_nonzero(value: float, dtype: torch.dtype) -> float:
    return float(torch.tensor(float(value), dtype=dtype))


@lru_cache(maxsize=256)
def _zero_dim(value: float, dtype: torch.dtype) -> Tensor:
    # A normal tensor even when first asked for inside torch.inference_mode(), so that it can
    # serve operations outside it too; nothing ever writes to it. On the CPU whatever the
    # default device is when it is made (torch.device("meta") as a context, say): it is
    # cached for CPU operands only.
    with torch.inference_mode(False):
        return torch.tensor(float(value), dtype=dtype, device="cpu")


@lru_cache(maxsize=256)
def _zero_dim_on(value: float, sign: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    # ``sign`` keys zero's sign (0.0 == -0.0); made outside inference mode, as _zero_dim's.
    with torch.inference_mode(False):
        return torch.full((), value, dtype=dtype, device=device)
