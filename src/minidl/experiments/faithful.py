"""The faults of the paper's published code, reproduced on purpose for the variant rows.

**These are not correct implementations.** They re-create what the code that the authors
published with the report computed (docs/reproducing.md lists its faults), so that the
reproduction can test whether a fault explains a difference between minidl's numbers and the
paper's. The correct modules are :class:`minidl.optim.Adadelta`,
:class:`minidl.nn.ELU` and :class:`minidl.nn.SELU`.

Two faults need no code: momentum that had no effect is SGD with momentum 0, and a scheduler
that never changed the optimizer's learning rate is no scheduler (see
:mod:`minidl.experiments.config`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from minidl.nn.activation_base import Activation
from minidl.nn.elu import ELU
from minidl.nn.selu import SELU, SELU_ALPHA
from minidl.optim.adadelta import Adadelta

__all__ = ["PUBLISHED_ACTIVATIONS", "PublishedAdadelta", "PublishedELU", "PublishedSELU"]


class PublishedAdadelta(Adadelta):
    r"""ADADELTA as the published code computed it: both accumulators overwritten by ``sqrt_()``.

    The square roots of Zeiler's update are taken *in place* on the running averages, so the
    stored state becomes :math:`s_t = \sqrt{\rho s_{t-1} + (1 - \rho) g_t^2 + \epsilon}` and
    :math:`a_t = \rho \sqrt{a_{t-1} + \epsilon} + (1 - \rho) \delta_t^2`, with the step
    :math:`\delta_t = \sqrt{a_{t-1} + \epsilon}\, g_t / s_t` (:math:`-\Delta w_t` in
    :class:`~minidl.optim.Adadelta`'s notation) and :math:`w_t = w_{t-1} - \lambda\, \delta_t`.
    For small gradients :math:`s` settles near :math:`\rho` (the fixed point of
    :math:`s = \sqrt{\rho s}`) and :math:`a` near :math:`\rho^2` (that of
    :math:`a = \rho\sqrt{a}`), so :math:`\delta_t \approx \sqrt{\rho^2}\, g_t / \rho = g_t`:
    the method becomes plain SGD with learning rate :math:`\lambda` (``lr``).

    Args:
        params, lr, rho, eps: as :class:`minidl.optim.Adadelta`.

    Example:
        >>> optimizer = PublishedAdadelta(model.parameters(), lr=1e-2)
    """

    def _update(self, value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
        square_avg, acc_delta = state
        rho, eps = self.rho, self.eps
        square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
        # The fault: add_/sqrt_ in place replace E[g^2] by sqrt(E[g^2] + eps) ...
        std = square_avg.add_(eps).sqrt_()
        # ... and E[dx^2] by sqrt(E[dx^2] + eps) before it is updated.
        delta = acc_delta.add_(eps).sqrt_().div(std).mul_(grad)
        acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
        value.add_(delta, alpha=-self.lr)


class PublishedELU(ELU):
    r"""ELU as published: :math:`\alpha` = SELU's 1.6733 instead of 1.

    :math:`y = x` for :math:`x > 0`, :math:`y = 1.6733 (e^x - 1)` otherwise.

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> PublishedELU()(torch.tensor([-1000.0]))
        tensor([-1.6733])
    """

    def __init__(self) -> None:
        super().__init__(alpha=SELU_ALPHA)

    def extra_repr(self) -> str:
        return "alpha=SELU_ALPHA (published fault)"


class PublishedSELU(SELU):
    r"""SELU as published: scale 0.5 instead of :math:`\lambda \approx 1.0507`.

    :math:`y = 0.5 x` for :math:`x > 0`, :math:`y = 0.5 \cdot 1.6733 (e^x - 1)` otherwise.

    Shape:
        - Input: any shape. Output: the same shape.

    Example:
        >>> PublishedSELU()(torch.tensor([2.0]))
        tensor([1.])
    """

    def __init__(self) -> None:
        super().__init__()
        self._scale = 0.5

    def extra_repr(self) -> str:
        return "scale=0.5 (published fault)"


#: The faulty activations by the names the experiment rows use.
PUBLISHED_ACTIVATIONS: dict[str, Callable[[], Activation]] = {
    "elu-published": PublishedELU,
    "selu-published": PublishedSELU,
}
