r"""Initialisation: fill a parameter in place from a distribution scaled by its fans.

PyTorch's initialisation schemes (its ``nn.init``) for minidl: each function takes a
:class:`~minidl.nn.Parameter` (whose ``data`` it fills) or a tensor (one that is a leaf of an
autograd graph too, such as PyTorch's own parameters, filled as PyTorch fills it, outside the
graph), draws from ``generator`` (default: torch's global one) with the same formula and the
same tensor operation as PyTorch's ``nn.init``, and returns what it was given. With the same generator state
the values are PyTorch's, bit for bit.

The values are written in place, so a parameter stays where it is (in its model's flat buffer)
and optimizers built on it keep working. A value that the tensor's dtype cannot hold is refused
before anything is drawn or written, naming it: a ``val`` of :func:`constant_` or a bound of a
uniform distribution (or its width ``b - a``, which the draws are computed from) beyond the dtype's
largest finite value, or a normal distribution whose draws reach beyond it, ``|mean| + 9 std``,
also where a ``gain`` makes it so (PyTorch's ``nn.init`` raises the tensor library's own message
for some, and fills a normal one with infinities: a third of them for a std of the largest
value). :class:`~minidl.nn.Linear` draws the paper's Xavier normal weights itself; a layer
started otherwise is shown below.

For a weight of shape ``(out, in, *k)``, :math:`\text{fan\_in} = \text{in} \cdot \prod k` and
:math:`\text{fan\_out} = \text{out} \cdot \prod k`, as in PyTorch's ``nn.init``: for a
:class:`~minidl.nn.Linear` weight ``(out, in)``, ``in`` and ``out``.

Example:
    >>> layer = Linear(784, 256)
    >>> kaiming_uniform_(layer.weight, nonlinearity="relu") is layer.weight
    True
    >>> zeros_(layer.bias) is layer.bias
    True
"""

from __future__ import annotations

import math
from typing import Literal, TypeVar

import torch
from torch import Tensor

from minidl._validate import COMPUTED, check_real, layout_name, shown
from minidl.nn.parameter import Parameter

__all__ = [
    "calculate_gain",
    "constant_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "normal_",
    "ones_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]

Target = TypeVar("Target", Tensor, Parameter)

#: The names ``calculate_gain`` takes (PyTorch's functional names), with a gain of 1.
_LINEAR = (
    "linear",
    "identity",
    "sigmoid",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
)
_NONLINEARITIES = (*_LINEAR, "tanh", "relu", "leaky_relu", "selu")

#: How many standard deviations from its mean a normal distribution's draws are taken to reach
#: when its range is checked: a draw beyond has a probability of 2e-19, and torch's samplers
#: (Box-Muller from uniform draws of at most 53 bits) give none beyond
#: :math:`\sqrt{2 \cdot 53 \ln 2} \approx 8.6`.
_NORMAL_REACH = 9.0


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    r"""The gain recommended for an activation: the factor by which an initialisation's
    standard deviation is scaled so that the activation keeps the variance of the signal.

    ======================= ===================================================
    ``nonlinearity``        gain
    ======================= ===================================================
    ``linear``, ``sigmoid`` :math:`1` (also ``identity`` and the convolutions)
    ``tanh``                :math:`5/3`
    ``relu``                :math:`\sqrt{2}`
    ``leaky_relu``          :math:`\sqrt{2 / (1 + \text{negative\_slope}^2)}`
    ``selu``                :math:`3/4`
    ======================= ===================================================

    The values of PyTorch's ``nn.init.calculate_gain``.

    Args:
        nonlinearity: the activation's name, as above.
        param: ``leaky_relu``'s negative slope (default 0.01); ignored by the others.

    Example:
        >>> calculate_gain("tanh")
        1.6666666666666667
        >>> calculate_gain("leaky_relu", 0.2)
        1.3867504905630728
    """
    return _gain("init.calculate_gain", nonlinearity, param)


def uniform_(
    target: Target, a: float = 0.0, b: float = 1.0, generator: torch.Generator | None = None
) -> Target:
    r"""Fill ``target`` with values drawn from :math:`\mathcal{U}(a, b)`.

    Example:
        >>> uniform_(torch.empty(2, 3), -1.0, 1.0).shape
        torch.Size([2, 3])
    """
    where = "init.uniform_"
    tensor = _tensor(where, target, generator)
    low = check_real(where, "a", a)
    high = check_real(where, "b", b, low=low)
    _check_uniform(where, tensor, low, high, f"U(a, b) with a={shown(a)}, b={shown(b)}")
    tensor.uniform_(low, high, generator=generator)
    return target


def normal_(
    target: Target, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None
) -> Target:
    r"""Fill ``target`` with values drawn from :math:`\mathcal{N}(\text{mean}, \text{std}^2)`."""
    where = "init.normal_"
    tensor = _tensor(where, target, generator)
    mean = check_real(where, "mean", mean)
    std = check_real(where, "std", std, low=0.0)
    given = f"N(mean, std^2) with mean={shown(mean)}, std={shown(std)}"
    _check_normal(where, tensor, mean, std, given)
    tensor.normal_(mean, std, generator=generator)
    return target


def constant_(target: Target, val: float) -> Target:
    """Fill ``target`` with ``val``."""
    where = "init.constant_"
    tensor = _tensor(where, target, None)
    value = check_real(where, "val", val)
    largest = torch.finfo(tensor.dtype).max
    if abs(value) > largest:
        raise ValueError(
            f"{where}: val={shown(val)} is beyond the range of the tensor's dtype "
            f"{tensor.dtype} (largest finite value {largest:.6g})"
        )
    tensor.fill_(value)
    return target


def zeros_(target: Target) -> Target:
    """Fill ``target`` with zeros."""
    _tensor("init.zeros_", target, None).zero_()
    return target


def ones_(target: Target) -> Target:
    """Fill ``target`` with ones."""
    _tensor("init.ones_", target, None).fill_(1.0)
    return target


def xavier_uniform_(
    target: Target, gain: float = 1.0, generator: torch.Generator | None = None
) -> Target:
    r"""Xavier (Glorot) uniform: :math:`\mathcal{U}(-a, a)` with
    :math:`a = \text{gain} \sqrt{6 / (\text{fan\_in} + \text{fan\_out})}`, a variance of
    :math:`\text{gain}^2 \cdot 2 / (\text{fan\_in} + \text{fan\_out})`.

    Example:
        >>> weight = xavier_uniform_(torch.empty(25, 2))
        >>> bool(weight.abs().max() <= (6 / 27) ** 0.5)
        True
    """
    where = "init.xavier_uniform_"
    tensor = _tensor(where, target, generator)
    gain = check_real(where, "gain", gain, low=0.0)
    fan_in, fan_out = _fans(where, tensor)
    if tensor.numel():
        std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
        bound = math.sqrt(3.0) * std
        given = f"U(-a, a) with a = {bound:.6g} (from gain={shown(gain)})"
        _check_uniform(where, tensor, -bound, bound, given)
        tensor.uniform_(-bound, bound, generator=generator)
    return target


def xavier_normal_(
    target: Target, gain: float = 1.0, generator: torch.Generator | None = None
) -> Target:
    r"""Xavier (Glorot) normal:
    :math:`\mathcal{N}(0, \text{gain}^2 \cdot 2 / (\text{fan\_in} + \text{fan\_out}))`, the
    paper's initialisation of a :class:`~minidl.nn.Linear` weight with ``gain=1``."""
    where = "init.xavier_normal_"
    tensor = _tensor(where, target, generator)
    gain = check_real(where, "gain", gain, low=0.0)
    fan_in, fan_out = _fans(where, tensor)
    if tensor.numel():
        std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
        given = f"N(0, std^2) with std = {std:.6g} (from gain={shown(gain)})"
        _check_normal(where, tensor, 0.0, std, given)
        tensor.normal_(0.0, std, generator=generator)
    return target


def kaiming_uniform_(
    target: Target,
    a: float = 0.0,
    mode: Literal["fan_in", "fan_out"] = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Target:
    r"""Kaiming (He) uniform: :math:`\mathcal{U}(-b, b)` with
    :math:`b = \text{gain} \sqrt{3 / \text{fan}}`, a variance of
    :math:`\text{gain}^2 / \text{fan}`.

    Args:
        target: the parameter or tensor to fill.
        a: the negative slope of a ``leaky_relu`` after the layer (0: a ReLU's gain).
        mode: ``"fan_in"`` keeps the variance of the forward pass, ``"fan_out"`` that of the
            backward pass.
        nonlinearity: the activation after the layer, as :func:`calculate_gain` takes it.
        generator: the random generator (default: torch's global one).
    """
    where = "init.kaiming_uniform_"
    tensor, std = _kaiming(where, target, a, mode, nonlinearity, generator)
    if tensor.numel():
        bound = math.sqrt(3.0) * std
        tensor.uniform_(-bound, bound, generator=generator)
    return target


def kaiming_normal_(
    target: Target,
    a: float = 0.0,
    mode: Literal["fan_in", "fan_out"] = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Target:
    r"""Kaiming (He) normal: :math:`\mathcal{N}(0, \text{gain}^2 / \text{fan})`; the arguments
    are :func:`kaiming_uniform_`'s.

    Example:
        >>> layer = Linear(100, 50)
        >>> kaiming_normal_(layer.weight, nonlinearity="relu") is layer.weight
        True
    """
    where = "init.kaiming_normal_"
    tensor, std = _kaiming(where, target, a, mode, nonlinearity, generator)
    if tensor.numel():
        tensor.normal_(0.0, std, generator=generator)
    return target


def _kaiming(
    where: str,
    target: Tensor | Parameter,
    a: float,
    mode: str,
    nonlinearity: str,
    generator: torch.Generator | None,
) -> tuple[Tensor, float]:
    """The tensor to fill and the standard deviation of a Kaiming initialisation."""
    tensor = _tensor(where, target, generator)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{where}: mode must be 'fan_in' or 'fan_out', got {shown(mode)}")
    gain = _gain(where, nonlinearity, check_real(where, "a", a))
    fan_in, fan_out = _fans(where, tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    return tensor, (gain / math.sqrt(fan) if fan else 0.0)


def _gain(where: str, nonlinearity: str, param: float | None) -> float:
    """:func:`calculate_gain`, its errors in the name of ``where``."""
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(
            f"{where}: nonlinearity must be one of {', '.join(map(repr, _NONLINEARITIES))}, "
            f"got {shown(nonlinearity)}"
        )
    if nonlinearity in _LINEAR:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "selu":
        return 3.0 / 4
    slope = 0.01 if param is None else check_real(where, "param", param)
    try:
        return math.sqrt(2.0 / (1 + slope**2))
    except OverflowError:  # (a slope beyond 1e154, whose square no float holds: 1 is lost)
        return math.sqrt(2.0) / abs(slope)


def _tensor(where: str, target: object, generator: object) -> Tensor:
    """The floating-point tensor that ``target`` (a Parameter or a tensor) holds, checked with
    its generator."""
    tensor = target.data if isinstance(target, Parameter) else target
    if isinstance(tensor, Tensor) and (tensor.layout != torch.strided or tensor.is_nested):
        layout = layout_name(tensor)
        raise TypeError(
            f"{where}: expected a Parameter or a dense floating-point tensor, got a {layout} tensor"
        )
    if isinstance(tensor, Tensor) and tensor.is_floating_point() and tensor.dtype not in COMPUTED:
        raise TypeError(
            f"{where}: expected a Parameter or a floating-point tensor of a dtype minidl computes "
            f"in (float16, bfloat16, float32, float64), got a tensor of {tensor.dtype}"
        )
    if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
        raise TypeError(
            f"{where}: expected a Parameter or a floating-point tensor, got "
            + (
                f"a tensor of {tensor.dtype}"
                if isinstance(tensor, Tensor)
                else type(target).__name__
            )
        )
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"{where}: generator must be a torch.Generator, got {type(generator).__name__}"
            )
        # (a meta tensor draws nothing: any generator will do, as PyTorch's init functions
        # take it, and as a layer built on meta with a generator of the CPU does)
        if generator.device.type != tensor.device.type and not tensor.is_meta:
            raise ValueError(
                f"{where}: the generator is on {generator.device.type}, the tensor on "
                f"{tensor.device}; use a generator of the tensor's device"
            )
    # Filled through a detached view of its memory: a leaf of an autograd graph (one of
    # PyTorch's parameters) is then filled as PyTorch's nn.init fills it, outside the graph (in
    # place on the tensor itself, autograd refuses such a leaf).
    return tensor.detach()


def _check_uniform(where: str, tensor: Tensor, low: float, high: float, given: str) -> None:
    """Refuse a uniform distribution of bounds ``low`` and ``high`` (``given``: it with the
    arguments it comes from) whose bounds or width ``high - low`` are beyond the largest finite
    value of ``tensor``'s dtype: the tensor library refuses them (the draws are ``low`` plus
    the width times a draw in [0, 1), in the dtype), in words that name neither the function
    nor its arguments."""
    largest = torch.finfo(tensor.dtype).max
    if max(abs(low), abs(high), high - low) > largest:
        raise ValueError(
            f"{where}: {given} is beyond the range of the tensor's dtype {tensor.dtype}: its "
            f"bounds and its width must be at most {largest:.6g}, the largest finite value"
        )


def _check_normal(where: str, tensor: Tensor, mean: float, std: float, given: str) -> None:
    """Refuse a normal distribution (``given``: it with the arguments it comes from) of which a
    draw within :data:`_NORMAL_REACH` standard deviations of its mean, ``|mean| + 9 std``, is
    beyond the largest finite value of ``tensor``'s dtype (rounded to it: float32's largest
    value as the mean with a std of 1 is taken, as its draws are that value): the tensor library
    writes such draws as infinities without a word (a std of float32's largest value itself
    makes a third of them infinite, half of it 5%, and a mean of 3e38 with a std of 1e38 more
    than a third)."""
    reach = abs(mean) + _NORMAL_REACH * std  # (inf in Python's arithmetic if beyond float64)
    if torch.tensor(reach, dtype=torch.float64).to(tensor.dtype).isinf():
        largest = torch.finfo(tensor.dtype).max
        raise ValueError(
            f"{where}: {given} would draw values beyond the range of the tensor's dtype "
            f"{tensor.dtype}: its draws, up to |mean| + {_NORMAL_REACH:g} std in magnitude, must "
            f"be at most {largest:.6g}, the largest finite value"
        )


def _fans(where: str, tensor: Tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight ``(out, in, *k)``."""
    if tensor.dim() < 2:
        raise ValueError(
            f"{where}: fan_in and fan_out need a weight of 2 or more dimensions (out, in, ...), "
            f"got shape {tuple(tensor.shape)} (a bias: use uniform_, normal_, zeros_ or "
            "constant_)"
        )
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive
