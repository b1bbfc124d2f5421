"""The optimizers that the random training tests draw, each with its ``torch.optim`` twin.

:data:`OPTIMIZERS` pairs each of minidl's optimizers with PyTorch's, :func:`draw_settings` draws
the settings of one (rates and sizes where training is not chaotic: see
``tests/test_fuzz_training.py``), and :class:`PaperSGD` is minidl's SGD written on torch
tensors, the twin of minidl's SGD with momentum once a schedule changes the rate (PyTorch's
velocity is in gradient units and rescales the steps already taken: docs/pytorch.md).
Shared by ``tests/test_fuzz_training.py`` and ``tests/test_stateful.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import strategies as st

from minidl import optim

OPTIMIZERS: dict[str, tuple[Any, Any]] = {
    "sgd": (optim.SGD, torch.optim.SGD),
    "adam": (optim.Adam, torch.optim.Adam),
    "adamw": (optim.AdamW, torch.optim.AdamW),
    "adadelta": (optim.Adadelta, torch.optim.Adadelta),
    "rmsprop": (optim.RMSprop, torch.optim.RMSprop),
    "adagrad": (optim.Adagrad, torch.optim.Adagrad),
}


def draw_settings(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """The keyword arguments of optimizer ``name`` (a key of :data:`OPTIMIZERS`), drawn: its
    rate, and each of its other settings (momentum, Nesterov, betas, centring, the rate's
    decay, weight decay) or its default."""
    rate = st.floats(1e-3, 3e-2) if name in ("sgd", "adagrad") else st.floats(1e-4, 3e-3)
    hyper: dict[str, Any] = {"lr": draw(st.floats(0.1, 1.0) if name == "adadelta" else rate)}
    if name == "sgd":
        hyper["momentum"] = draw(st.sampled_from([0.0, 0.5, 0.9]))
        hyper["nesterov"] = hyper["momentum"] > 0 and draw(st.booleans())
    if name in ("adam", "adamw"):
        hyper["betas"] = (draw(st.floats(0.5, 0.95)), draw(st.floats(0.9, 0.999)))
    if name == "rmsprop":
        hyper["momentum"] = draw(st.sampled_from([0.0, 0.5]))
        hyper["centered"] = draw(st.booleans())
    if name == "adagrad":
        hyper["lr_decay"] = draw(st.sampled_from([0.0, 0.01]))
    if name != "adadelta" and draw(st.booleans()):
        hyper["weight_decay"] = draw(st.floats(1e-4, 1e-1))
    return hyper


class PaperSGD(torch.optim.Optimizer):
    """minidl's SGD on torch tensors: ``v = mu v + lr g``, ``w -= v`` (or, Nesterov,
    ``w -= mu v + lr g``), ``g`` with the weight decay added; PyTorch's SGD at a constant rate,
    up to rounding, not once the rate changes. Its settings are in its group, as PyTorch's
    (set there, and saved and loaded with its state)."""

    def __init__(
        self,
        params: Any,
        lr: float,
        momentum: float,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        settings = {"lr": lr, "momentum": momentum, "nesterov": nesterov}
        super().__init__(params, {**settings, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        group = self.param_groups[0]
        lr, momentum, nesterov = group["lr"], group["momentum"], group["nesterov"]
        for parameter in group["params"]:
            grad = parameter.grad + group["weight_decay"] * parameter
            velocity = self.state[parameter].setdefault("v", torch.zeros_like(parameter))
            velocity.mul_(momentum).add_(lr * grad)
            parameter.sub_(momentum * velocity + lr * grad if nesterov else velocity)
