"""Stochastic gradient descent, with the paper's momentum."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from minidl._validate import check_real
from minidl.nn.parameter import Parameter
from minidl.optim.optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional momentum, as the paper writes it.

    .. math::
        v_t = \mu\, v_{t-1} + \lambda\, g_t, \qquad w_t = w_{t-1} - v_t, \qquad v_0 = 0

    With a constant learning rate this is exactly PyTorch's ``torch.optim.SGD`` (whose buffer is
    :math:`b_t = \mu b_{t-1} + g_t` with :math:`w_t = w_{t-1} - \lambda b_t`, so :math:`v = \lambda b`).
    When a scheduler changes :math:`\lambda`, the paper's velocity keeps the old rates' steps
    while PyTorch's rescales them. Without momentum both are :math:`w_t = w_{t-1} - \lambda g_t`.

    Args:
        params: the parameters to optimise, usually ``model.parameters()``.
        lr: the learning rate :math:`\lambda`, finite and >= 0.
        momentum: the momentum coefficient :math:`\mu`, in ``[0, 1)`` (default 0).

    State:
        ``momentum_buffer``: the velocity :math:`v` (only when built with ``momentum > 0``).

    Example:
        >>> optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)
        >>> optimizer.zero_grad(); criterion(model(x), y); model.backward(criterion.backward())
        >>> optimizer.step()
    """

    state_names: tuple[str, ...] = ("momentum_buffer",)

    def __init__(self, params: Iterable[Parameter], lr: float, momentum: float = 0.0) -> None:
        self.momentum = self._validate_hyperparameters(momentum=momentum)["momentum"]
        # Plain SGD keeps no state (no buffer to allocate, save or move).
        self.state_names = ("momentum_buffer",) if self.momentum > 0 else ()
        super().__init__(params, lr)

    def _validate_hyperparameters(self, **hyperparameters: Any) -> dict[str, Any]:
        momentum = check_real(
            "SGD", "momentum", hyperparameters["momentum"], low=0.0, high=1.0, high_open=True
        )
        return {"momentum": momentum}

    def hyperparameters(self) -> dict[str, Any]:
        return {"momentum": self.momentum}

    def _update(self, value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
        if self.momentum == 0.0:
            value.add_(grad, alpha=-self.lr)
            return
        (velocity,) = state
        velocity.mul_(self.momentum).add_(grad, alpha=self.lr)
        value.sub_(velocity)
