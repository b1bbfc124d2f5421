r"""Gradient clipping: rescale or bound the accumulated gradients of parameters, in place.

Called between ``model.backward(...)`` and ``optimizer.step()``, as in PyTorch.

Both functions take :class:`~minidl.nn.Parameter` objects (``model.parameters()``), whose
``grad`` tensors they change in place; a parameter listed twice is clipped once. Where the
gradients tile one flat buffer, as a :class:`~minidl.nn.Sequential`'s do, the norm and the
update are one operation each over the buffer, whatever the depth of the model (the norm of a
buffer of more than 4096 entries a few: the norm of the norms of its rows, for its rounding).

Example:
    >>> optimizer.zero_grad()
    >>> loss = criterion(model(x), y)
    >>> input_grad = model.backward(criterion.backward())
    >>> norm = clip_grad_norm_(model.parameters(), max_norm=0.1)  # the norm before clipping
    >>> optimizer.step()
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch
from torch import Tensor

from minidl._scalar import operand
from minidl._validate import check_real, shown, shown_typed
from minidl.nn._checks import is_pytorch_module
from minidl.nn.flat import flat_buffer
from minidl.nn.module import Module
from minidl.nn.parameter import Parameter

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def clip_grad_norm_(
    parameters: Iterable[Parameter] | Parameter,
    max_norm: float,
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
) -> Tensor:
    r"""Scale the gradients so that their total norm is at most ``max_norm``; return that norm.

    With :math:`g` all the gradients taken as one vector and :math:`\|g\|_p` its norm of order
    :math:`p` (``norm_type``; :math:`\max_i |g_i|` for ``inf``), every gradient becomes

    .. math::
        g \leftarrow g \cdot \min\!\left(\frac{\text{max\_norm}}{\|g\|_p + 10^{-6}},\ 1\right),

    the formula of PyTorch's ``nn.utils.clip_grad_norm_``. Gradients whose norm is within
    ``max_norm`` are multiplied by 1, which leaves them unchanged; the coefficient is computed
    as a tensor, so no value is read back from the device.

    The norm is that of the flat gradient buffer (one ``vector_norm``; a buffer of more than
    4096 entries as rows of that length, the norm of their norms) where the gradients tile
    one, and otherwise the norm of the per-parameter norms, as PyTorch computes it: the same
    number up to rounding (float32 sums in another order), so a clipped gradient agrees with
    PyTorch's to a few units in the last place, not always bit for bit. The coefficient is
    computed in the norm's dtype, as PyTorch's, but for a float16 norm below about 1.5e-5,
    where :math:`1 / (\|g\|_p + 10^{-6})` overflows float16 and PyTorch's coefficient is 1 (the
    gradients not clipped) or NaN (a ``max_norm`` of 0): minidl's is then computed in float32.

    Args:
        parameters: the parameters whose gradients are clipped (``model.parameters()``), or one
            :class:`~minidl.nn.Parameter`.
        max_norm: the largest total norm, a number ``>= 0`` (``inf`` leaves the gradients
            as they are, even infinite ones, and only measures their norm).
        norm_type: the order :math:`p > 0` of the norm, or ``inf`` (``float("inf")`` or the
            string ``"inf"``).
        error_if_nonfinite: raise, leaving the gradients unchanged, when the total norm is NaN
            or infinite; by default such a norm is used (and the gradients become NaN or 0,
            as in PyTorch).

    Returns:
        The total norm of the gradients before clipping, a 0-dim tensor on the first
        gradient's device (``tensor(0.)`` for no parameters).

    Raises:
        TypeError: ``parameters`` holds something other than :class:`~minidl.nn.Parameter`
            objects (a module: pass ``model.parameters()``), or a setting is no number.
        ValueError: ``max_norm < 0``, NaN, or ``norm_type <= 0``.
        RuntimeError: the total norm is not finite and ``error_if_nonfinite`` is set.

    Example:
        >>> layer = Linear(3, 2)
        >>> layer.weight.grad.fill_(1.0)
        tensor(...)
        >>> clip_grad_norm_(layer.parameters(), max_norm=1.0)
        tensor(2.4495)
        >>> float(layer.weight.grad.norm())
        0.99999...
    """
    where = "clip_grad_norm_"
    grads = _gradients(where, parameters)
    limit = _limit(where, "max_norm", max_norm)
    order = _norm_type(where, norm_type)
    if error_if_nonfinite is not True and error_if_nonfinite is not False:
        raise TypeError(
            f"{where}: error_if_nonfinite must be a bool, got {_type_name(error_if_nonfinite)} "
            f"{shown(error_if_nonfinite)}"
        )
    return _clip_norm(where, grads, limit, order, error_if_nonfinite)


def _clip_norm(
    where: str, grads: list[Tensor], limit: float, order: float, error_if_nonfinite: bool
) -> Tensor:
    """:func:`clip_grad_norm_` of checked arguments: scale ``grads`` in place, return their
    total norm (also for :func:`minidl.train.fit`'s steps, on their own gradient buffer)."""
    if not grads:
        return torch.tensor(0.0)
    flat = flat_buffer(grads)
    if flat is not None and (order != math.inf or flat.numel()):
        total: Tensor = _buffer_norm(flat, order)
    else:
        # An empty gradient's norm is 0 (torch's inf-norm of an empty tensor raises, having no
        # identity): it adds nothing, as in the buffer's norm, where it has no entries.
        device = grads[0].device
        norms = [
            torch.linalg.vector_norm(grad, order).to(device)
            if grad.numel()
            else grad.new_zeros((), device=device)
            for grad in grads
        ]
        total = torch.linalg.vector_norm(torch.stack(norms), order)
    if error_if_nonfinite and not bool(torch.isfinite(total)):
        raise RuntimeError(
            f"{where}: the total norm of order {order} of the gradients is {float(total)}, "
            "which cannot be clipped; the gradients are left unchanged (pass "
            "error_if_nonfinite=False to scale them by it anyway)"
        )
    if limit == math.inf:
        return total
    # max_norm / (total + 1e-6), as PyTorch computes it (a number over a tensor is the tensor's
    # reciprocal times the number), with the two numbers as cached operands: the same bits
    # without their conversions at every call (see minidl._scalar)
    denominator = total + operand(1e-6, total)
    reciprocal = denominator.reciprocal_()
    if total.dtype is torch.float16:  # (the reciprocal kept: where it overflowed, see below)
        coefficient = torch.clamp(reciprocal * operand(limit, total), max=1.0)
        coefficient = _float16_coefficient(total, reciprocal, coefficient, limit)
    else:
        coefficient = torch.clamp(reciprocal.mul_(operand(limit, total)), max=1.0)
    for grad in [flat] if flat is not None else grads:
        grad.mul_(coefficient.to(grad.device))
    return total


def _float16_coefficient(
    total: Tensor, reciprocal: Tensor, coefficient: Tensor, limit: float
) -> Tensor:
    """``coefficient``, PyTorch's of a float16 norm ``total``, but where 1 / (total + 1e-6)
    overflowed float16 (``reciprocal`` infinite: a norm below about 1.5e-5), computed in
    float32 and rounded to float16: PyTorch's was then 1 (the gradients not clipped) or, for a
    ``limit`` of 0, NaN (0 * inf). Each ``total`` may be a vector (a stack's models')."""
    wide = total.float().add_(1e-6).reciprocal_().mul_(limit).clamp_(max=1.0)
    return torch.where(torch.isinf(reciprocal), wide.to(torch.float16), coefficient)


#: The most entries of a flat buffer summed in one reduction. A CPU ``vector_norm`` adds its
#: entries largely one after another, so its rounding error grows with their number: in
#: float32 some 70 units in the last place at a million entries, 5000 at 16 million, where
#: PyTorch's norm of per-tensor norms stays within a few (for tensors of up to some 100000
#: entries). A longer buffer is taken as rows of this length (and the rest), the norm of their
#: norms: a few units, in a few operations. (A norm over the rows of a matrix sums each row
#: one after another too: rows of 65536 were 60 units off for an order of 3, of 4096 one.)
_ROW = 4096


def _buffer_norm(flat: Tensor, order: float) -> Tensor:
    """The norm of order ``order`` of the 1-D contiguous ``flat``, its rounding error bounded
    whatever its length (see :data:`_ROW`; a maximum, of order inf, is exact anyway)."""
    size = flat.numel()
    if size <= _ROW or order == math.inf:
        whole: Tensor = torch.linalg.vector_norm(flat, order)
        return whole
    rows = size // _ROW
    # (16-bit rows' norms in float32, the total rounded once, as a shorter buffer's norm is)
    wide = torch.float32 if flat.dtype in (torch.float16, torch.bfloat16) else flat.dtype
    norms = torch.linalg.vector_norm(flat[: rows * _ROW].view(rows, _ROW), order, dim=1, dtype=wide)
    if size > rows * _ROW:
        rest = torch.linalg.vector_norm(flat[rows * _ROW :], order, dtype=wide)
        norms = torch.cat((norms, rest.reshape(1)))
    total: Tensor = torch.linalg.vector_norm(norms, order).to(flat.dtype)
    return total


def clip_grad_value_(parameters: Iterable[Parameter] | Parameter, clip_value: float) -> None:
    r"""Clamp every gradient element into :math:`[-\text{clip\_value}, \text{clip\_value}]`.

    .. math::
        g_i \leftarrow \min(\max(g_i, -c), c)

    as PyTorch's ``nn.utils.clip_grad_value_`` does (a NaN stays NaN).

    Args:
        parameters: the parameters whose gradients are clamped (``model.parameters()``), or
            one :class:`~minidl.nn.Parameter`.
        clip_value: :math:`c`, a number ``>= 0`` (``inf`` clamps nothing), within the range of
            every gradient's dtype.

    Raises:
        TypeError: ``parameters`` holds something other than :class:`~minidl.nn.Parameter`
            objects, or ``clip_value`` is no number.
        ValueError: ``clip_value < 0`` or NaN, or finite but beyond the largest finite value
            of a gradient's dtype (``1e300`` for float32 gradients: the tensor library cannot
            convert it, and refused it for that gradient after clamping the ones before).
            A refused call changes no gradient.

    Example:
        >>> layer = Linear(3, 2)
        >>> layer.weight.grad.copy_(torch.tensor([[-2.0, 0.5, 3.0], [0.0, -0.1, 1.5]]))
        tensor(...)
        >>> clip_grad_value_(layer.parameters(), 1.0)
        >>> layer.weight.grad
        tensor([[-1.0000,  0.5000,  1.0000],
                [ 0.0000, -0.1000,  1.0000]])
    """
    where = "clip_grad_value_"
    grads = _gradients(where, parameters)
    limit = _limit(where, "clip_value", clip_value)
    if limit != math.inf:
        for dtype in dict.fromkeys(grad.dtype for grad in grads):
            largest = torch.finfo(dtype).max
            if limit > largest:
                raise ValueError(
                    f"{where}: clip_value={shown(clip_value)} is beyond the range of the "
                    f"gradients' dtype {dtype} (largest finite value {largest:.6g}); expected "
                    f"a number <= {largest:.6g}, or inf to clamp nothing"
                )
    flat = flat_buffer(grads)
    for grad in [flat] if flat is not None else grads:
        grad.clamp_(-limit, limit)


def _gradients(where: str, parameters: object) -> list[Tensor]:
    """The ``grad`` of each distinct parameter of ``parameters``, in order; refuses anything
    but :class:`Parameter` objects, naming what was given."""
    if isinstance(parameters, Parameter):
        return [parameters.grad]
    if isinstance(parameters, Module):
        raise TypeError(
            f"{where}: expected Parameters, got the module {type(parameters).__name__}; pass "
            "its parameters(), e.g. model.parameters()"
        )
    if isinstance(parameters, Tensor) or not isinstance(parameters, Iterable):
        raise TypeError(
            f"{where}: expected Parameters (model.parameters()) or one Parameter, got "
            + _what(parameters)
        )
    grads: list[Tensor] = []
    seen: set[int] = set()
    for index, parameter in enumerate(parameters):
        if not isinstance(parameter, Parameter):
            raise TypeError(f"{where}: expected Parameters, got {_what(parameter, index)}")
        if id(parameter) not in seen:
            seen.add(id(parameter))
            grads.append(parameter.grad)
    return grads


def _what(value: object, index: int | None = None) -> str:
    """What was given instead of a Parameter, for a message: its type, its position in the
    list, and for a tensor where a minidl gradient lives (for PyTorch's parameters and modules,
    that they are PyTorch's)."""
    where = "" if index is None else f" at position {index}"
    kind = type(value)
    # (PyTorch's Parameter, whose class comes from a submodule of torch, where a plain tensor's
    # comes from torch itself; a PyTorch module, of one's own class too)
    if kind.__module__.startswith("torch.") or is_pytorch_module(value):
        return (
            f"{kind.__module__}.{kind.__qualname__}{where}, PyTorch's (clip its gradients with "
            "PyTorch's clip_grad_norm_ or clip_grad_value_; minidl.interop.from_torch converts a "
            "PyTorch model)"
        )
    hint = (
        " (a minidl gradient lives in Parameter.grad: pass the Parameter)"
        if isinstance(value, Tensor)
        else ""
    )
    if isinstance(value, tuple | list) and len(value) == 2:
        first, second = value
        if isinstance(first, str) and isinstance(second, Parameter):
            hint = ", a pair as named_parameters() gives (pass model.parameters())"
        elif isinstance(first, Tensor) and isinstance(second, Tensor):
            hint = (
                ", a (value, gradient) pair as param() gives (pass model.parameters(), the "
                "Parameters that hold them)"
            )
    return f"{kind.__name__}{where}{hint}"


def _limit(where: str, name: str, value: object) -> float:
    """``value`` as a float ``>= 0``, infinity allowed (and a number beyond the floats,
    10**400, taken as it: no gradient is larger, as none is larger than infinity)."""
    if _infinite(value) or _beyond_floats(value):
        return math.inf
    try:
        return check_real(where, name, value, low=0.0)
    except (TypeError, ValueError) as error:  # (its range would leave out inf, taken above)
        raise _refused(
            error, where, name, "a number in [0, inf] (a float or an int)", value
        ) from None


def _norm_type(where: str, value: object) -> float:
    """The order of the norm: a number ``> 0``, or infinity (also the string ``"inf"``)."""
    if value == "inf" or _infinite(value) or _beyond_floats(value):
        return math.inf
    try:
        return check_real(where, "norm_type", value, low=0.0, low_open=True)
    except (TypeError, ValueError) as error:
        expected = "a number in (0, inf] (a float or an int, or the string 'inf')"
        raise _refused(error, where, "norm_type", expected, value) from None


def _refused(error: Exception, where: str, name: str, expected: str, value: object) -> Exception:
    """``error`` (of :func:`check_real`, whose range is finite) again, naming ``expected``."""
    got = f"{shown_typed(value)}" if isinstance(error, TypeError) else shown(value)
    return type(error)(f"{where}: {name} must be {expected}, got {got}")


def _beyond_floats(value: object) -> bool:
    """Whether ``value`` is a real number (not a bool) above every float (an int or a
    ``Fraction`` of 10**400), which the limits and orders take as infinity."""
    if type(value) is float or not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        float(value)
    except OverflowError:
        return bool(value > 0)  # type: ignore[operator]
    return False


def _infinite(value: object) -> bool:
    """Whether ``value`` is a real number (not a bool) equal to ``+inf``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == math.inf


def _type_name(value: object) -> str:
    """``value``'s type, named with its module where that is not Python's own (NumPy's bool
    is called ``bool`` too: "must be a bool, got bool np.True_")."""
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
