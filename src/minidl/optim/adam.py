"""Adam (Kingma & Ba, 2015)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from minidl._scalar import add_scaled, operand
from minidl._validate import check_real, shown
from minidl.nn.parameter import Parameter
from minidl.optim.optimizer import MOST_STEPS, Hyperparameter, Optimizer

__all__ = ["Adam", "check_betas"]


def check_betas(where: str, betas: object) -> tuple[float, float]:
    """Check a pair of decay rates, each in ``[0, 1)`` (a tuple, a list, or a 1-D array or
    tensor of two)."""
    if getattr(betas, "ndim", None) == 1 and callable(getattr(betas, "tolist", None)):
        betas = betas.tolist()  # type: ignore[attr-defined]  # (a numpy array or a tensor)
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        # (a sequence or an array of another length is a bad value; a number, a bad type)
        array = isinstance(betas, tuple | list) or hasattr(betas, "ndim")
        kind = ValueError if array else TypeError
        raise kind(
            f"{where}: betas must be a pair of numbers in [0, 1) (a tuple, a list, or a 1-D "
            f"array or tensor of two), got {shown(betas)}"
        )
    beta1 = check_real(where, "betas[0]", betas[0], low=0.0, high=1.0, high_open=True)
    beta2 = check_real(where, "betas[1]", betas[1], low=0.0, high=1.0, high_open=True)
    return beta1, beta2


class Adam(Optimizer):
    r"""Adam: steps scaled by bias-corrected moving averages of the gradient and its square.

    At step :math:`t = 1, 2, \dots`, with :math:`m_0 = v_0 = 0` and the optional L2 penalty
    folded into the gradient (:math:`g_t \leftarrow g_t + \lambda_{wd} w_{t-1}`):

    .. math::
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        w_t = w_{t-1} - \frac{\lambda}{1 - \beta_1^t}\,
              \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    as PyTorch's ``Adam`` computes it (:math:`\epsilon` added after the bias correction of
    :math:`\sqrt{v}`). The step count :math:`t` is ``step_count + 1`` during an update.

    Args:
        params: the parameters to optimise, usually ``model.parameters()``.
        lr: the learning rate :math:`\lambda`, finite and >= 0 (default 1e-3).
        betas: :math:`(\beta_1, \beta_2)`, each in ``[0, 1)`` (default ``(0.9, 0.999)``): a
            tuple, a list, or a 1-D array or tensor of two, read back as a tuple (``.betas``).
        eps: :math:`\epsilon`, > 0 and not 0 in the parameters' dtype (default 1e-8, which
            float16 rounds to 0, as every eps below 2.980232416405216e-08: give float16
            parameters one from there up, such as 1e-4).
        weight_decay: :math:`\lambda_{wd}`, the L2 penalty added to the gradient, >= 0 (default 0).

    State:
        ``exp_avg`` (:math:`m`) and ``exp_avg_sq`` (:math:`v`).
        Each a flat tensor ``(P,)`` of the parameters' dtype and device, ``P`` their number of
        entries (``optimizer.state[name]``), the parameters' entries in their order.

    Example:
        >>> optimizer = Adam(model.parameters(), lr=1e-3)
    """

    state_names: tuple[str, ...] = ("exp_avg", "exp_avg_sq")
    denominator_terms: ClassVar[tuple[str, ...]] = ("eps",)
    betas: Hyperparameter[tuple[float, float]] = Hyperparameter()
    eps: Hyperparameter[float] = Hyperparameter()
    weight_decay: Hyperparameter[float] = Hyperparameter()
    _betas: tuple[float, float]
    _eps: float
    _weight_decay: float
    _decoupled = False

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] | list[float] | Tensor = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self._assign_hyperparameters({"betas": betas, "eps": eps, "weight_decay": weight_decay})
        super().__init__(params, lr)

    def _validate_hyperparameters(self, **hyperparameters: Any) -> dict[str, Any]:
        name = type(self).__name__
        return {
            "betas": check_betas(name, hyperparameters["betas"]),
            "eps": check_real(name, "eps", hyperparameters["eps"], low=0.0, low_open=True),
            "weight_decay": check_real(
                name, "weight_decay", hyperparameters["weight_decay"], low=0.0
            ),
        }

    def _listed_hyperparameters(self) -> dict[str, Any]:
        return {"betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay}

    def _numbers(self, count: int, dtype: torch.dtype) -> tuple[float, float, float]:
        """The numbers of step ``t = count + 1``: the step size ``lr / (1 - beta1^t)``,
        ``sqrt(1 - beta2^t)`` and AdamW's decay factor ``1 - lr weight_decay``; refused, before
        the step changes anything, where one lies beyond the parameters' ``dtype`` (a rate the
        constructor takes, ten times larger at the first step with beta1 0.9, failed part-way
        through the step in the tensor library's words, the moving averages updated). In float16
        and bfloat16 PyTorch's kernels take such a number, computing in float32, and its step
        may come out finite (``lr`` 1e4 at the first step, a step size of 1e5, in float16):
        refused there too, one rule for every dtype, as a rate whose step the parameters'
        dtype cannot hold."""
        beta1, beta2 = self._betas
        step = count + 1
        step_size = self.lr / (1 - beta1**step)
        # (a power 0.5, as PyTorch: math.sqrt rounds otherwise for about one number in a
        # thousand, 1 - 0.999^1270 among them, and the parameters then differ in their last bits)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        decay = 1 - self.lr * self._weight_decay if self._decoupled else 1.0
        # (float16's largest number first: a test of finfo's only for a large number)
        largest = max(step_size, -decay)
        if largest > 65504.0 and largest > torch.finfo(dtype).max:
            kind = type(self).__name__
            if step_size > -decay:
                what = (
                    f"the step size lr / (1 - beta1^t) is {step_size:g} at step t = {step} "
                    f"(lr={self.lr!r}, beta1={beta1!r})"
                )
                smaller = "lr"
            else:
                what = (
                    f"the decay factor 1 - lr * weight_decay is {decay:g} (lr={self.lr!r}, "
                    f"weight_decay={self._weight_decay!r})"
                )
                smaller = "lr or weight_decay"
            raise ValueError(
                f"{kind}: {what}, beyond the range of the parameters' dtype {dtype} (largest "
                f"{torch.finfo(dtype).max:g}); give a smaller {smaller}"
            )
        return step_size, bias_correction2_sqrt, decay

    def _check_next_numbers(self) -> None:
        count = self.step_count
        if type(count) is int and 0 <= count <= MOST_STEPS:  # (else refused as it is read)
            self._numbers(count, self.params[0].data.dtype)

    def _update(self, value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
        exp_avg, exp_avg_sq = state
        beta1, beta2 = self._betas
        count = self.step_count
        if type(count) is not int or not 0 <= count <= MOST_STEPS:  # (set by hand)
            count = self._check_step_count()  # (refused before any change)
        step_size, bias_correction2_sqrt, decay = self._numbers(count, value.dtype)
        if self._weight_decay != 0.0:
            if self._decoupled:
                value.mul_(decay)  # changes with lr: a number
            else:
                grad = add_scaled(grad, value, self._weight_decay)
        # m = beta1 m + (1 - beta1) g as m + (1 - beta1)(g - m), one lerp; v = beta2 v +
        # (1 - beta2) g^2 with g^2 fused into the addition (addcmul). The ops, and so the bits,
        # of PyTorch's single-tensor Adam step.
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(operand(beta2, exp_avg_sq)).addcmul_(grad, grad, value=1 - beta2)
        # sqrt(v) / sqrt(1 - beta2^t) + eps
        # (the bias correction changes every step: cheaper as a number than as an operand)
        denominator = (
            exp_avg_sq.sqrt().div_(bias_correction2_sqrt).add_(operand(self._eps, exp_avg_sq))
        )
        # w -= lr / (1 - beta1^t) * m / denominator, the division fused into the update.
        value.addcdiv_(exp_avg, denominator, value=-step_size)
