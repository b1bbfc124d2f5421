"""Oracle checks that the other files (test_oracle_audit.py and those it names) still left out.

* Centered RMSprop when the gradient barely varies: its moving variance
  :math:`s - \\bar g^2` is >= 0 in exact arithmetic but rounds below zero, and the square root
  of it made the parameters NaN (as PyTorch's do); it is clamped at 0.
"""

from __future__ import annotations

import pytest
import torch

from minidl import nn, optim
from tests.helpers import F64, assert_close

# -- centered RMSprop with a (nearly) constant gradient ------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "alpha", "momentum"),
    [(F64, 0.0, 0.0), (F64, 0.5, 0.0), (F64, 0.5, 0.6), (torch.float32, 0.9, 0.0)],
    ids=["f64-alpha0", "f64-alpha0.5", "f64-alpha0.5-momentum", "f32-alpha0.9"],
)
def test_centered_rmsprop_stays_finite_under_a_constant_gradient(
    dtype: torch.dtype, alpha: float, momentum: float
) -> None:
    """The same gradient every step: s_t - g_t^2 = (1 - a^t) a^t g^2 >= 0, whose rounding
    went negative (NaN from the first step at alpha = 0, after 51 steps at alpha = 0.5, after
    132 in float32 at alpha = 0.9). Every parameter stays finite, and where torch.optim's
    stay finite (its variance did not round below zero) minidl's follow them."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(1000, dtype=dtype, generator=generator)
    grad = torch.randn(1000, dtype=dtype, generator=generator)
    parameter, twin = nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    settings = {"lr": 0.01, "alpha": alpha, "momentum": momentum, "centered": True}
    optimizer = optim.RMSprop([parameter], **settings)  # type: ignore[arg-type]
    torch_optimizer = torch.optim.RMSprop([twin], **settings)  # type: ignore[arg-type]
    rtol = 1e-10 if dtype == F64 else 1e-5
    for step in range(160):
        parameter.grad.copy_(grad)
        twin.grad = grad.clone()
        optimizer.step()
        torch_optimizer.step()
        assert bool(parameter.data.isfinite().all()), f"step {step}"
        kept = twin.data.isfinite()
        assert_close(parameter.data[kept], twin.data[kept].detach(), rtol, f"step {step}")
    assert not bool(twin.data.isfinite().all())  # (the case does reach torch's NaN)
