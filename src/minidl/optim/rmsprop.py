"""RMSprop (Tieleman & Hinton, 2012)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from torch import Tensor

from minidl._scalar import add_scaled, add_scaled_, operand
from minidl._validate import check_real, shown
from minidl.nn.parameter import Parameter
from minidl.optim.optimizer import Hyperparameter, Optimizer

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    r"""RMSprop: steps divided by a moving root mean square of the gradient, as PyTorch's ``RMSprop``.

    With :math:`g_t \leftarrow g_t + \lambda_{wd} w_{t-1}` (optional L2 penalty) and
    :math:`s_0 = 0`:

    .. math::
        s_t = \alpha s_{t-1} + (1 - \alpha) g_t^2, \qquad
        d_t = \sqrt{\max(s_t - \bar g_t^2, 0)} + \epsilon

    where, when ``centered``, :math:`\bar g_t = \alpha \bar g_{t-1} + (1 - \alpha) g_t` (the
    moving mean, so :math:`d` estimates a standard deviation) and otherwise :math:`\bar g = 0`.
    Without momentum :math:`w_t = w_{t-1} - \lambda g_t / d_t`; with momentum :math:`\mu > 0`,
    :math:`b_t = \mu b_{t-1} + g_t / d_t` and :math:`w_t = w_{t-1} - \lambda b_t`.
    The centered variance :math:`s_t - \bar g_t^2` is >= 0 in exact arithmetic but can round
    below 0 when the gradient barely varies; it is clamped at 0 there, where PyTorch's square
    root gives NaN parameters (elsewhere the two agree).

    Args:
        params: the parameters to optimise, usually ``model.parameters()``.
        lr: the learning rate :math:`\lambda`, finite and >= 0 (default 1e-2).
        alpha: :math:`\alpha`, the decay of the averages, in ``[0, 1]`` (default 0.99).
        eps: :math:`\epsilon`, > 0 and not 0 in the parameters' dtype (default 1e-8, which
            float16 rounds to 0, as every eps below 2.980232416405216e-08: give float16
            parameters one from there up, such as 1e-4).
        weight_decay: :math:`\lambda_{wd}`, >= 0 (default 0).
        momentum: :math:`\mu`, in ``[0, 1)`` (default 0).
        centered: divide by the moving standard deviation instead of the root mean square
            (default ``False``). Set between steps, ``momentum`` may go from one positive value
            to another, not to or from 0, and ``centered`` not change: their state tensors are
            made, or not, when the optimizer is built.

    State:
        ``square_avg`` (:math:`s`), ``momentum_buffer`` (:math:`b`, when ``momentum > 0``) and
        ``grad_avg`` (:math:`\bar g`, when ``centered``).
        Each a flat tensor ``(P,)`` of the parameters' dtype and device, ``P`` their number of
        entries (``optimizer.state[name]``), the parameters' entries in their order.

    Example:
        >>> optimizer = RMSprop(model.parameters(), lr=1e-3, momentum=0.9)
    """

    state_names: tuple[str, ...] = ("square_avg",)
    denominator_terms: ClassVar[tuple[str, ...]] = ("eps",)
    alpha: Hyperparameter[float] = Hyperparameter()
    eps: Hyperparameter[float] = Hyperparameter()
    weight_decay: Hyperparameter[float] = Hyperparameter()
    momentum: Hyperparameter[float] = Hyperparameter()
    centered: Hyperparameter[bool] = Hyperparameter()
    _alpha: float
    _eps: float
    _weight_decay: float
    _momentum: float
    _centered: bool

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        self._assign_hyperparameters(
            {
                "alpha": alpha,
                "eps": eps,
                "weight_decay": weight_decay,
                "momentum": momentum,
                "centered": centered,
            }
        )
        self.state_names = self._state_names_for(
            {"momentum": self._momentum, "centered": self._centered}
        )
        super().__init__(params, lr)

    def _state_names_for(self, hyperparameters: Mapping[str, Any]) -> tuple[str, ...]:
        names = ["square_avg"]
        if hyperparameters["momentum"] > 0:
            names.append("momentum_buffer")
        if hyperparameters["centered"]:
            names.append("grad_avg")
        return tuple(names)

    def _validate_hyperparameters(self, **hyperparameters: Any) -> dict[str, Any]:
        where = type(self).__name__  # (a subclass by its own name)
        centered = hyperparameters["centered"]
        if not isinstance(centered, bool):
            raise TypeError(f"{where}: centered must be a bool, got {shown(centered)}")
        return {
            "alpha": check_real(where, "alpha", hyperparameters["alpha"], low=0.0, high=1.0),
            "eps": check_real(where, "eps", hyperparameters["eps"], low=0.0, low_open=True),
            "weight_decay": check_real(
                where, "weight_decay", hyperparameters["weight_decay"], low=0.0
            ),
            "momentum": check_real(
                where,
                "momentum",
                hyperparameters["momentum"],
                low=0.0,
                high=1.0,
                high_open=True,
            ),
            "centered": centered,
        }

    def _listed_hyperparameters(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "momentum": self.momentum,
            "centered": self.centered,
        }

    def _check_hyperparameters(self, hyperparameters: Mapping[str, Any]) -> None:
        super()._check_hyperparameters(hyperparameters)
        # ``centered`` and ``momentum > 0`` decide which state tensors exist: they cannot change
        # on load.
        saved = (hyperparameters["centered"], hyperparameters["momentum"] > 0)
        if saved != (self.centered, self.momentum > 0):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: the state was saved with centered="
                f"{hyperparameters['centered']!r}, momentum={hyperparameters['momentum']!r}, "
                f"which needs other state tensors than this optimizer's (centered="
                f"{self.centered!r}, momentum={self.momentum!r})"
            )

    def _update(self, value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
        square_avg = state[0]
        alpha = self._alpha
        if self._weight_decay != 0.0:
            grad = add_scaled(grad, value, self._weight_decay)
        # s = alpha s + (1 - alpha) g^2, with g^2 fused into the addition (addcmul).
        square_avg.mul_(operand(alpha, square_avg)).addcmul_(grad, grad, value=1 - alpha)
        if self._centered:
            grad_avg = state[-1]  # (the last state tensor when centered; see _state_names_for)
            # g_avg = alpha g_avg + (1 - alpha) g as g_avg + (1 - alpha)(g - g_avg), one lerp
            # (PyTorch's RMSprop's op, so its bits).
            grad_avg.lerp_(grad, 1 - alpha)
            # s - g_avg^2 >= 0 in exact arithmetic, but rounds below 0 when the gradient
            # barely varies (at alpha = 0, or a constant gradient): clamped at 0, where PyTorch
            # takes a NaN square root (one more op per step, centered only).
            denominator = (
                square_avg.addcmul(grad_avg, grad_avg, value=-1)
                .clamp_min_(0.0)
                .sqrt_()
                .add_(operand(self._eps, square_avg))
            )
        else:
            denominator = square_avg.sqrt().add_(operand(self._eps, square_avg))
        if self._momentum > 0:
            momentum_buffer = state[1]
            # b = mu b + g / d, the division fused into the addition (addcdiv); w -= lr b.
            momentum_buffer.mul_(operand(self._momentum, momentum_buffer)).addcdiv_(
                grad, denominator
            )
            add_scaled_(value, momentum_buffer, -self.lr)  # (see SGD's)
        else:
            value.addcdiv_(grad, denominator, value=-self.lr)  # w -= lr g / d
