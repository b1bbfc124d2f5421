"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019)."""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from minidl.nn.parameter import Parameter
from minidl.optim.adam import Adam

__all__ = ["AdamW"]


class AdamW(Adam):
    r"""Adam with decoupled weight decay, as PyTorch's ``AdamW``.

    The decay shrinks the weights directly instead of entering the gradient (and so the moving
    averages): at step :math:`t`,

    .. math::
        w \leftarrow w\,(1 - \lambda \lambda_{wd}), \qquad
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        w_t = w - \frac{\lambda}{1 - \beta_1^t}\,
              \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    Args:
        params: the parameters to optimise, usually ``model.parameters()``.
        lr: the learning rate :math:`\lambda`, finite and >= 0 (default 1e-3).
        betas: :math:`(\beta_1, \beta_2)`, each in ``[0, 1)`` (default ``(0.9, 0.999)``): a
            tuple, a list, or a 1-D array or tensor of two, read back as a tuple (``.betas``).
        eps: :math:`\epsilon`, > 0 and not 0 in the parameters' dtype (default 1e-8, which
            float16 rounds to 0, as every eps below 2.980232416405216e-08: give float16
            parameters one from there up, such as 1e-4).
        weight_decay: :math:`\lambda_{wd}`, >= 0 (default 1e-2, as PyTorch).

    State:
        ``exp_avg`` (:math:`m`) and ``exp_avg_sq`` (:math:`v`).
        Each a flat tensor ``(P,)`` of the parameters' dtype and device, ``P`` their number of
        entries (``optimizer.state[name]``), the parameters' entries in their order.

    Example:
        >>> optimizer = AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    """

    _decoupled = True

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] | list[float] | Tensor = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)
