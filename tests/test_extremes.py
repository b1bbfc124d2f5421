"""minidl's modules and losses at extreme inputs, against PyTorch autograd.

The oracle is ``torch.nn.functional`` in float64 on the same (rounded) inputs; a float32,
float16 or bfloat16 result must be as close to it as PyTorch's own result in that dtype is (within
twice its error, plus a few units of the dtype's epsilon), and finite wherever PyTorch's is.

* BCE-with-logits for confident logits and soft targets near 1, where
  :math:`\\max(z, 0) - z t` cancels: computed with :math:`z t` rounded first, the float32 loss was
  4% off (float16: 18%) where PyTorch's is exact; checked against the exact value (fractions).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from minidl import nn

F64 = torch.float64
DTYPES = [F64, torch.float32, torch.float16, torch.bfloat16]


def _error(actual: Tensor, oracle: Tensor) -> float:
    """Max-norm relative error of ``actual`` against ``oracle`` (float64); NaN where the oracle
    is NaN and equal infinities count as exact, any other non-finite value as ``inf``."""
    actual, oracle = actual.detach().to(F64), oracle.detach().to(F64)
    same = (actual == oracle) | (actual.isnan() & oracle.isnan())
    if bool((~same & ~(actual.isfinite() & oracle.isfinite())).any()):
        return math.inf
    finite = oracle.isfinite()
    scale = float(oracle[finite].abs().max()) if bool(finite.any()) else 0.0
    difference = float(torch.where(same, 0.0, actual - oracle).abs().max())
    return difference if scale == 0.0 else difference / scale


def _assert_as_close_as_torch(
    ours: Tensor, torchs: Tensor, oracle: Tensor, dtype: torch.dtype, what: str
) -> None:
    """``ours`` is within twice PyTorch's own error (in ``dtype``) of the float64 oracle, plus
    four units of ``dtype``'s epsilon (float64: 1e-10, the oracle's tolerance)."""
    assert ours.dtype == dtype, what
    mine, reference = _error(ours, oracle), _error(torchs, oracle)
    slack = 1e-10 if dtype == F64 else 4 * torch.finfo(dtype).eps
    assert mine <= 2 * reference + slack, (
        f"{what}: error {mine:.3g} against the float64 oracle, PyTorch's {dtype} {reference:.3g}"
    )


def _check_loss(
    criterion: nn.Loss,
    function: Callable[[Tensor, Tensor], Tensor],
    logits: Tensor,
    target: Tensor,
    dtype: torch.dtype,
) -> None:
    """Loss and gradient of ``criterion`` at ``logits`` (float64, rounded to ``dtype``) against
    ``function`` in float64 and in ``dtype``."""
    z = logits.to(dtype)
    t = target.to(dtype) if target.is_floating_point() else target
    loss = criterion(z, t)
    grad = criterion.backward()
    leaf = z.clone().requires_grad_(True)
    expected = function(leaf, t)
    expected.backward()
    oracle_leaf = z.to(F64).requires_grad_(True)
    oracle = function(oracle_leaf, t.to(F64) if t.is_floating_point() else t)
    oracle.backward()
    assert leaf.grad is not None and oracle_leaf.grad is not None
    _assert_as_close_as_torch(loss, expected.detach(), oracle.detach(), dtype, "loss")
    _assert_as_close_as_torch(grad, leaf.grad, oracle_leaf.grad, dtype, "gradient")


# -- BCE-with-logits: soft targets near 1 with confident logits (cancellation) -------------------

#: (logit, target) with ``u`` a small step below 1 that the dtype holds (2^-20 in float32 and
#: float64, 2^-10 in float16, 2^-7 in bfloat16): z > 0 with t near 1, where
#: max(z, 0) - z t = z (1 - t) cancels, and the mirror z < 0 with t near 0 (no cancellation in
#: minidl's form; PyTorch's float32 cancels there).
CONFIDENT_SOFT: dict[str, Callable[[float], tuple[float, float]]] = {
    "z100-t1-u": lambda u: (100.0, 1 - u),
    "z30-t1-3u": lambda u: (30.0, 1 - 3 * u),
    "z1e4-t1-u": lambda u: (1e4, 1 - u),
    "z20-t0.99": lambda u: (20.0, 0.99),
    "z-100-tu": lambda u: (-100.0, u),
}
STEP_BELOW_ONE = {F64: 2**-20, torch.float32: 2**-20, torch.float16: 2**-10, torch.bfloat16: 2**-7}


def _exact_bce(z: float, t: float) -> float:
    """max(z, 0) - z t exactly (as fractions), plus log(1 + e^-|z|) (at most 2e-9 here, with a
    relative error of 1e-16), rounded once."""
    linear = Fraction(max(z, 0.0)) - Fraction(z) * Fraction(t)
    return float(linear + Fraction(math.log1p(math.exp(-abs(z)))))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CONFIDENT_SOFT))
def test_bce_with_logits_does_not_cancel_for_confident_soft_targets(
    case: str, dtype: torch.dtype
) -> None:
    """With z t rounded before max(z, 0) - z t, the float32 loss at z = 100, t = 1 - 2^-20 was
    9.155e-5 for 9.537e-5 (4% off), the float16 one at z = 1e4, t = 1 - 2^-10 8 for 9.77, the
    bfloat16 one at z = 100, t = 1 - 2^-7 1 for 0.78, the float64 one at z = 20, t = 0.99 4e-15
    off (20 ulp); PyTorch's are exact. Fused, the loss is the exact value (of the logit and target as the dtype holds them)
    to two units of the dtype's epsilon, in every element of a batch, and never worse than
    PyTorch's."""
    z_value, t_value = CONFIDENT_SOFT[case](STEP_BELOW_ONE[dtype])
    logits = torch.full((3, 5), z_value, dtype=dtype)
    target = torch.full((3, 5), t_value, dtype=dtype)
    loss = nn.BCEWithLogitsLoss()(logits, target)
    exact = _exact_bce(float(logits[0, 0]), float(target[0, 0]))
    assert exact > 0
    tolerance = 2 * torch.finfo(dtype).eps
    assert abs(float(loss) - exact) <= tolerance * exact, (float(loss), exact)
    reference = F.binary_cross_entropy_with_logits(logits, target)
    assert abs(float(loss) - exact) <= abs(float(reference) - exact) + tolerance * exact
    # The gradient, (sigma(z) - t)/D, as PyTorch's float64 one.
    _check_loss(
        nn.BCEWithLogitsLoss(),
        F.binary_cross_entropy_with_logits,
        logits.to(F64),
        target.to(F64),
        dtype,
    )
