"""Adagrad (Duchi, Hazan & Singer, 2011)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from torch import Tensor

from minidl._scalar import add_scaled, operand
from minidl._validate import check_real
from minidl.nn.parameter import Parameter
from minidl.optim.optimizer import MOST_STEPS, Hyperparameter, Optimizer

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    r"""Adagrad: per-coordinate steps divided by the root of the summed squared gradients.

    With :math:`g_t \leftarrow g_t + \lambda_{wd} w_{t-1}` (optional L2 penalty),
    :math:`S_0 = a` (``initial_accumulator_value``) and the step count :math:`t = 1, 2, \dots`:

    .. math::
        \lambda_t = \frac{\lambda}{1 + (t - 1)\,\eta}, \qquad
        S_t = S_{t-1} + g_t^2, \qquad
        w_t = w_{t-1} - \lambda_t \frac{g_t}{\sqrt{S_t} + \epsilon}

    as PyTorch's ``Adagrad`` (:math:`\eta` = ``lr_decay``).

    Args:
        params: the parameters to optimise, usually ``model.parameters()``.
        lr: the learning rate :math:`\lambda`, finite and >= 0 (default 1e-2).
        lr_decay: :math:`\eta`, >= 0 (default 0).
        weight_decay: :math:`\lambda_{wd}`, >= 0 (default 0).
        initial_accumulator_value: :math:`a`, >= 0 (default 0). It fills the sums when the
            optimizer is built: setting it later changes no sum, as in PyTorch.
        eps: :math:`\epsilon`, > 0 and not 0 in the parameters' dtype (default 1e-10, which
            float16 rounds to 0, as every eps below 2.980232416405216e-08: give float16
            parameters one from there up, such as 1e-4).

    State:
        ``sum`` (:math:`S`).
        Each a flat tensor ``(P,)`` of the parameters' dtype and device, ``P`` their number of
        entries (``optimizer.state[name]``), the parameters' entries in their order.

    Example:
        >>> optimizer = Adagrad(model.parameters(), lr=0.1)
    """

    state_names: tuple[str, ...] = ("sum",)
    denominator_terms: ClassVar[tuple[str, ...]] = ("eps",)
    scalar_terms: ClassVar[tuple[str, ...]] = ("lr_decay",)  # (lr / (1 + t eta), a float)
    lr_decay: Hyperparameter[float] = Hyperparameter()
    weight_decay: Hyperparameter[float] = Hyperparameter()
    initial_accumulator_value: Hyperparameter[float] = Hyperparameter()
    eps: Hyperparameter[float] = Hyperparameter()
    _lr_decay: float
    _weight_decay: float
    _initial_accumulator_value: float
    _eps: float

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        self._assign_hyperparameters(
            {
                "lr_decay": lr_decay,
                "weight_decay": weight_decay,
                "initial_accumulator_value": initial_accumulator_value,
                "eps": eps,
            }
        )
        super().__init__(params, lr)
        self.state["sum"].fill_(self.initial_accumulator_value)

    def _validate_hyperparameters(self, **hyperparameters: Any) -> dict[str, Any]:
        where = type(self).__name__  # (a subclass by its own name)
        checked = {
            name: check_real(where, name, hyperparameters[name], low=0.0)
            for name in ("lr_decay", "weight_decay", "initial_accumulator_value")
        }
        checked["eps"] = check_real(where, "eps", hyperparameters["eps"], low=0.0, low_open=True)
        return checked

    def _listed_hyperparameters(self) -> dict[str, Any]:
        return {
            "lr_decay": self.lr_decay,
            "weight_decay": self.weight_decay,
            "initial_accumulator_value": self.initial_accumulator_value,
            "eps": self.eps,
        }

    def _update(self, value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
        (accumulator,) = state
        count = self.step_count
        if type(count) is not int or not 0 <= count <= MOST_STEPS:  # (set by hand)
            count = self._check_step_count()  # (refused before any change)
        if self._weight_decay != 0.0:
            grad = add_scaled(grad, value, self._weight_decay)
        # lambda_t = lambda / (1 + (t - 1) eta): step_count is t - 1 during the update.
        clr = self.lr / (1 + count * self._lr_decay)
        accumulator.addcmul_(grad, grad, value=1)  # S += g^2, fused (PyTorch's Adagrad's op)
        denominator = accumulator.sqrt().add_(operand(self._eps, accumulator))
        value.addcdiv_(grad, denominator, value=-clr)  # w -= lambda_t g / (sqrt(S) + eps)
