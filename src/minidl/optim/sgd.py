"""Stochastic gradient descent, with the paper's momentum."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from torch import Tensor

from minidl._scalar import add_scaled, add_scaled_, operand, scaled
from minidl._validate import check_real, shown
from minidl.nn.parameter import Parameter
from minidl.optim.optimizer import Hyperparameter, Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional momentum, as the paper writes it.

    .. math::
        v_t = \mu\, v_{t-1} + \lambda\, g_t, \qquad w_t = w_{t-1} - v_t, \qquad v_0 = 0

    With a constant learning rate this is PyTorch's ``SGD`` with its default ``dampening=0``
    (minidl has no dampening) in exact arithmetic (whose buffer is
    :math:`b_t = \mu b_{t-1} + g_t` with :math:`w_t = w_{t-1} - \lambda b_t`, so :math:`v = \lambda b`).
    At a rate that is a power of two (1, 0.5, 0.25, ...) :math:`v = \lambda b` holds in floating
    point too, a scaling by :math:`2^k` commuting with rounding (short of subnormal numbers),
    and the parameters are PyTorch's bit for bit (its CPU default, one tensor at a time; in
    float16 and bfloat16 where its ``add_`` rounds once, see :mod:`minidl._scalar`), but where
    :math:`\lambda g` or the step is subnormal, in the sign of a zero (PyTorch's first buffer is
    :math:`g` itself, minidl's :math:`\mu \cdot 0 + \lambda g`), and where PyTorch's
    :math:`b` overflows and :math:`v` does not (docs/pytorch.md, "The paper's conventions").
    At any other rate :math:`v` is :math:`\lambda b` rounded, and the two round at other places
    (:math:`\mu v + \lambda g` against :math:`\lambda(\mu b + g)`): with momentum the parameters
    then agree to rounding, not bit for bit, minidl's as near the exact trajectory as PyTorch's
    (its mean distance to it within 10% of PyTorch's over 200 steps, in the tests).
    When a scheduler changes :math:`\lambda`, the paper's velocity keeps the old rates' steps
    while PyTorch's rescales them. Without momentum both are :math:`w_t = w_{t-1} - \lambda g_t`.

    ``weight_decay`` :math:`\lambda_{wd}` adds the L2 penalty's gradient first,
    :math:`g_t \leftarrow g_t + \lambda_{wd} w_{t-1}` (as PyTorch). ``nesterov`` looks ahead
    along the velocity, in the same convention:

    .. math::
        v_t = \mu\, v_{t-1} + \lambda\, g_t, \qquad w_t = w_{t-1} - (\mu\, v_t + \lambda\, g_t)

    which is PyTorch's Nesterov step (:math:`w_t = w_{t-1} - \lambda (g_t + \mu b_t)`) whenever
    the learning rate is constant. As PyTorch's, the step :math:`\lambda g_t + \mu v_t` is made
    first and the parameter rounded once, so a power-of-two rate gives PyTorch's bits here too.

    Args:
        params: the parameters to optimise, usually ``model.parameters()``.
        lr: the learning rate :math:`\lambda`, finite and >= 0.
        momentum: the momentum coefficient :math:`\mu`, in ``[0, 1)`` (default 0). Set
            between steps, it may go from one positive value to another, not to or from 0:
            the velocity's state tensor is made, or not, when the optimizer is built.
        weight_decay: the L2 penalty :math:`\lambda_{wd}`, >= 0 (default 0).
        nesterov: use Nesterov momentum (needs ``momentum > 0``; default ``False``).

    State:
        ``momentum_buffer``: the velocity :math:`v` (only when built with ``momentum > 0``).
        Each a flat tensor ``(P,)`` of the parameters' dtype and device, ``P`` their number of
        entries (``optimizer.state[name]``), the parameters' entries in their order.

    Example:
        >>> optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)
        >>> optimizer.zero_grad()
        >>> loss = criterion(model(x), y)
        >>> model.backward_parameters(criterion.backward())
        >>> optimizer.step()
    """

    state_names: tuple[str, ...] = ("momentum_buffer",)
    momentum: Hyperparameter[float] = Hyperparameter()
    weight_decay: Hyperparameter[float] = Hyperparameter()
    nesterov: Hyperparameter[bool] = Hyperparameter()
    _momentum: float
    _weight_decay: float
    _nesterov: bool
    optional_hyperparameters: ClassVar[Mapping[str, Any]] = {
        "weight_decay": 0.0,
        "nesterov": False,
    }

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float,
        momentum: float = 0.0,
        *,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        self._assign_hyperparameters(
            {"momentum": momentum, "weight_decay": weight_decay, "nesterov": nesterov}
        )
        self.state_names = self._state_names_for({"momentum": self._momentum})
        super().__init__(params, lr)

    def _state_names_for(self, hyperparameters: Mapping[str, Any]) -> tuple[str, ...]:
        # Plain SGD keeps no state (no buffer to allocate, save or move).
        return ("momentum_buffer",) if hyperparameters["momentum"] > 0 else ()

    def _validate_hyperparameters(self, **hyperparameters: Any) -> dict[str, Any]:
        where = type(self).__name__  # (a subclass by its own name)
        momentum = check_real(
            where, "momentum", hyperparameters["momentum"], low=0.0, high=1.0, high_open=True
        )
        weight_decay = check_real(
            where, "weight_decay", hyperparameters.get("weight_decay", 0.0), low=0.0
        )
        nesterov = hyperparameters.get("nesterov", False)
        if not isinstance(nesterov, bool):
            raise TypeError(f"{where}: nesterov must be a bool, got {shown(nesterov)}")
        if nesterov and momentum == 0.0:
            raise ValueError(f"{where}: nesterov momentum needs momentum > 0, got momentum 0")
        return {"momentum": momentum, "weight_decay": weight_decay, "nesterov": nesterov}

    def _listed_hyperparameters(self) -> dict[str, Any]:
        # The two extensions are listed only when used, so plain SGD's state_dict keeps its keys.
        settings: dict[str, Any] = {"momentum": self.momentum}
        if self.weight_decay != 0.0:
            settings["weight_decay"] = self.weight_decay
        if self.nesterov:
            settings["nesterov"] = True
        return settings

    def _update(self, value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
        if self._weight_decay != 0.0:
            grad = add_scaled(grad, value, self._weight_decay)
        # (add_scaled_: x.add_(y, alpha=a), whose bits in float16 and bfloat16 do not depend on
        # where a parameter lies in the flat buffer)
        momentum = self._momentum
        if momentum == 0.0:
            add_scaled_(value, grad, -self._lr)
            return
        (velocity,) = state
        add_scaled_(velocity.mul_(operand(momentum, velocity)), grad, self._lr)  # v = mu v + lr g
        if self._nesterov:
            # w -= lr g + mu v, the look-ahead made first and the parameter rounded once, as
            # PyTorch's w -= lr (g + mu b) (not w - mu v, rounded, then - lr g, rounded again)
            value.sub_(add_scaled_(scaled(grad, self._lr), velocity, momentum))
        else:
            value.sub_(velocity)  # w -= v
