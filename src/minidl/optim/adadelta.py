"""ADADELTA (Zeiler, 2012)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from minidl._scalar import add_scaled_, operand
from minidl._validate import check_real, shown
from minidl.nn.parameter import Parameter
from minidl.optim.optimizer import Hyperparameter, Optimizer, _rounds_to_zero, _smallest_taken

__all__ = ["Adadelta", "eps_refusal"]


def eps_refusal(name: str, eps: float, dtype: torch.dtype, dtype_words: str) -> str | None:
    """Why ADADELTA's ``eps``, given as ``name`` (``--eps``, ``adadelta_eps``), cannot be used
    in ``dtype`` (``dtype_words`` names it, ``--dtype float32``): past its range, or rounded to
    0 (as :class:`Adadelta` refuses it at its first step, in its own name); ``None`` where it
    can. For the callers that take it before any parameter is made (the command line, a row of
    the experiments)."""
    largest = torch.finfo(dtype).max
    if eps > largest:
        return (
            f"{name} {shown(eps)} is beyond the range of {dtype_words} (largest finite value "
            f"{largest:g})"
        )
    if _rounds_to_zero(eps, dtype):
        return (
            f"{name} {shown(eps)} rounds to 0 in {dtype_words}, and ADADELTA's denominators with it; "
            f"give {name} >= {_smallest_taken(dtype)!r}"
        )
    return None


class Adadelta(Optimizer):
    r"""ADADELTA: an adaptive step from running averages of squared gradients and updates.

    With the parameter :math:`w` (Zeiler writes it :math:`x`), its gradient :math:`g_t`, and
    :math:`E[g^2]` and :math:`E[\Delta w^2]` starting at 0 (Zeiler's Algorithm 1):

    .. math::
        E[g^2]_t = \rho E[g^2]_{t-1} + (1 - \rho) g_t^2 \\
        \Delta w_t = -\frac{\sqrt{E[\Delta w^2]_{t-1} + \epsilon}}{\sqrt{E[g^2]_t + \epsilon}}\, g_t \\
        E[\Delta w^2]_t = \rho E[\Delta w^2]_{t-1} + (1 - \rho) \Delta w_t^2 \\
        w_t = w_{t-1} + \lambda\, \Delta w_t

    with :math:`\epsilon` inside both square roots. Zeiler's method has no learning rate
    (:math:`\lambda = 1`); like PyTorch's ``Adadelta``, :math:`\lambda` (``lr``) scales the
    applied update (the accumulated :math:`E[\Delta w^2]` is not scaled).

    Args:
        params: the parameters to optimise, usually ``model.parameters()``.
        lr: :math:`\lambda`, the scale of the update, finite and >= 0 (default 1.0).
        rho: the decay :math:`\rho` of the running averages, in ``[0, 1]`` (default 0.9).
        eps: :math:`\epsilon`, added inside the square roots, > 0 and not 0 in the parameters'
            dtype (default 1e-6; float16 rounds to 0 every eps below 2.980232416405216e-08).

    State:
        ``square_avg`` (:math:`E[g^2]`) and ``acc_delta`` (:math:`E[\Delta w^2]`).
        Each a flat tensor ``(P,)`` of the parameters' dtype and device, ``P`` their number of
        entries (``optimizer.state[name]``), the parameters' entries in their order.

    Example:
        >>> optimizer = Adadelta(model.parameters(), rho=0.95)
    """

    state_names: tuple[str, ...] = ("square_avg", "acc_delta")
    denominator_terms: ClassVar[tuple[str, ...]] = ("eps",)
    rho: Hyperparameter[float] = Hyperparameter()
    eps: Hyperparameter[float] = Hyperparameter()
    _rho: float
    _eps: float

    def __init__(
        self, params: Iterable[Parameter], lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6
    ) -> None:
        self._assign_hyperparameters({"rho": rho, "eps": eps})
        super().__init__(params, lr)

    def _validate_hyperparameters(self, **hyperparameters: Any) -> dict[str, Any]:
        name = type(self).__name__  # (a subclass, such as PublishedAdadelta, by its own name)
        return {
            "rho": check_real(name, "rho", hyperparameters["rho"], low=0.0, high=1.0),
            "eps": check_real(name, "eps", hyperparameters["eps"], low=0.0, low_open=True),
        }

    def _listed_hyperparameters(self) -> dict[str, Any]:
        return {"rho": self.rho, "eps": self.eps}

    def _update(self, value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
        square_avg, acc_delta = state
        rho, eps = self._rho, self._eps
        # E[g^2] = rho E[g^2] + (1 - rho) g^2, with g^2 fused into the addition (addcmul).
        square_avg.mul_(operand(rho, square_avg)).addcmul_(grad, grad, value=1 - rho)
        # delta = -Delta w = sqrt(E[Delta w^2] + eps) / sqrt(E[g^2] + eps) * g: the update
        # without its minus sign, which the last line applies (as PyTorch's Adadelta does).
        delta = (
            acc_delta.add(operand(eps, acc_delta))
            .sqrt_()
            .div_(square_avg.add(operand(eps, square_avg)).sqrt_())
            .mul_(grad)
        )
        # E[Delta w^2] = rho E[Delta w^2] + (1 - rho) Delta w^2 (the sign squares away).
        acc_delta.mul_(operand(rho, acc_delta)).addcmul_(delta, delta, value=1 - rho)
        add_scaled_(value, delta, -self.lr)  # w += lr Delta w (see SGD's add_scaled_)
