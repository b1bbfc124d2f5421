"""minidl's modules and losses at extreme inputs, against PyTorch autograd.

The oracle is ``torch.nn.functional`` in float64 on the same (rounded) inputs; a float32,
float16 or bfloat16 result must be as close to it as PyTorch's own result in that dtype is (within
twice its error, plus a few units of the dtype's epsilon), and finite wherever PyTorch's is:

* BCE-with-logits for confident logits and soft targets near 1, where
  :math:`\\max(z, 0) - z t` cancels: computed with :math:`z t` rounded first, the float32 loss was
  4% off (float16: 18%) where PyTorch's is exact; checked against the exact value (fractions).
* BCE-with-logits at saturated logits (:math:`\\pm 20 \\ldots \\pm 10^4`) with targets 0, 1 and
  1/2, in every dtype.
* Cross-entropy (class indices and probabilities) and LogSoftmax + NLL with one logit far above
  the others, a single class, a batch of one and probability targets of exactly 0 and 1, in
  every dtype; the documented "finite at logits of :math:`\\pm 10^4`" in float16 too.
* Huber exactly at the kink :math:`|z - t| = \\delta` and L1 and MSE at subnormal and signed-zero
  differences.
* The element-wise activations in float16 and bfloat16 at the largest finite values, the
  kinks, signed zeros, subnormals and saturated sigmoid and tanh.
* BatchNorm1d on features far from zero (1e4 and 1e7 offsets in float32): its two-pass
  variance stays accurate where PyTorch's float32 kernel loses most digits.
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


# -- BCE-with-logits at saturated logits ---------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bce_with_logits_at_saturated_logits(dtype: torch.dtype, reduction: str) -> None:
    """Logits of +-20, +-40, +-100 and +-1e4 against targets 0, 1 and 1/2 (the loss of a
    confident wrong answer is |z|, of a right one e^-|z|), a batch of one row; finite as the
    docstring promises for +-1e4, in every dtype."""
    row = [20.0, -20.0, 40.0, -40.0, 100.0, -100.0, 1e4, -1e4]
    logits = torch.tensor([row * 3], dtype=F64)
    target = torch.tensor([[1.0] * 8 + [0.0] * 8 + [0.5] * 8], dtype=F64)
    criterion = nn.BCEWithLogitsLoss(reduction)  # type: ignore[arg-type]
    _check_loss(
        criterion,
        lambda z, t: F.binary_cross_entropy_with_logits(z, t, reduction=reduction),
        logits,
        target,
        dtype,
    )
    assert bool(criterion(logits.to(dtype), target.to(dtype)).isfinite())
    assert bool(criterion.backward().isfinite().all())


# -- cross-entropy and LogSoftmax + NLL ----------------------------------------------------------

CROSS_ENTROPY_CASES: dict[str, tuple[list[list[float]], list[int] | list[list[float]]]] = {
    "one-far-above": ([[1e4, 0.0, -1.0], [0.0, 1e4, 5.0], [-1e4, -1e4, 1e4]], [1, 1, 0]),
    "one-far-above-100": (
        [[100.0, 0.0, -1.0], [0.0, 100.0, 5.0], [-100.0, -100.0, 100.0]],
        [1, 2, 2],
    ),
    "single-class": ([[1e4], [-1e4], [-0.0]], [0, 0, 0]),
    "batch-of-one": ([[1e4, -1e4, 3.0, 2.0]], [3]),
    "ties-at-the-top": ([[1e4, 1e4, 1e4], [1e4, 1e4, -1e4]], [2, 0]),
    "probabilities-0-and-1": (
        [[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [3.0, 2.0, 1.0]],
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
    ),
    "probabilities-at-far-logits": (
        [[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]],
        [[0.5, 0.25, 0.25], [0.0, 0.5, 0.5]],
    ),
    "probabilities-single-class": ([[1e4], [-1e4]], [[1.0], [1.0]]),
}


def _cross_entropy_inputs(case: str) -> tuple[Tensor, Tensor]:
    logits, target = CROSS_ENTROPY_CASES[case]
    if isinstance(target[0], list):
        return torch.tensor(logits, dtype=F64), torch.tensor(target, dtype=F64)
    return torch.tensor(logits, dtype=F64), torch.tensor(target)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CROSS_ENTROPY_CASES))
def test_cross_entropy_at_extreme_logits(case: str, dtype: torch.dtype, reduction: str) -> None:
    """Finite (as documented for logits of +-1e4, in float16 and bfloat16 too) and as close to
    the float64 oracle as PyTorch's own cross-entropy in the dtype."""
    logits, target = _cross_entropy_inputs(case)
    criterion = nn.CrossEntropyLoss(reduction)  # type: ignore[arg-type]
    _check_loss(
        criterion,
        lambda z, t: F.cross_entropy(z, t, reduction=reduction),
        logits,
        target,
        dtype,
    )
    z = logits.to(dtype)
    t = target.to(dtype) if target.is_floating_point() else target
    assert bool(criterion(z, t).isfinite()) and bool(criterion.backward().isfinite().all())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "case", [name for name in CROSS_ENTROPY_CASES if not name.startswith("probabilities")]
)
def test_log_softmax_then_nll_at_extreme_logits(case: str, dtype: torch.dtype) -> None:
    """The two layers of cross-entropy, backward through both, against PyTorch's."""
    logits, target = _cross_entropy_inputs(case)
    log_softmax, nll = nn.LogSoftmax(), nn.NLLLoss()

    class Both(nn.Loss):
        def forward(self, z: Tensor, t: Tensor) -> Tensor:
            return nll(log_softmax(z), t)

        def _gradient(self) -> Tensor:
            return log_softmax.backward(nll.backward())

    _check_loss(Both(), lambda z, t: F.nll_loss(F.log_softmax(z, 1), t), logits, target, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "case", [name for name in CROSS_ENTROPY_CASES if not name.startswith("probabilities")]
)
def test_softmax_at_extreme_logits(case: str, dtype: torch.dtype) -> None:
    """Softmax forward and backward at logits far apart (+-1e4 where the dtype holds them, 100
    in each), as close to the float64 oracle as PyTorch's own softmax in the dtype: the
    maximum is subtracted before ``exp`` (added instead, the 16-bit forward gave NaN at
    logits of 50, and no test saw it: the only 16-bit oracle drew logits of a few units)."""
    logits, _ = _cross_entropy_inputs(case)
    z = logits.to(dtype)
    upstream = torch.linspace(-1.0, 1.0, z.numel(), dtype=F64).view(z.shape)
    module = nn.Softmax()
    output = module(z)
    grad = module.backward(upstream.to(dtype))
    oracle_input = z.to(F64).clone().requires_grad_()
    oracle = torch.softmax(oracle_input, 1)
    (oracle * upstream).sum().backward()
    assert oracle_input.grad is not None
    torch_input = z.clone().requires_grad_()
    torch_output = torch.softmax(torch_input, 1)
    (torch_output * upstream.to(dtype)).sum().backward()
    assert torch_input.grad is not None
    assert bool(output.isfinite().all()) and bool(grad.isfinite().all())
    eps = torch.finfo(dtype).eps
    assert _error(output, oracle) <= max(2 * _error(torch_output, oracle), 2 * eps)
    assert _error(grad, oracle_input.grad) <= max(
        2 * _error(torch_input.grad, oracle_input.grad), 4 * eps
    )


# -- Huber at the kink; L1, MSE and Huber at subnormal and signed-zero differences ---------------


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=str)
@pytest.mark.parametrize("delta", [0.25, 1.0, 3.0])
def test_huber_exactly_at_the_kink(delta: float, dtype: torch.dtype) -> None:
    """|z - t| = delta exactly (delta representable): each element costs delta^2 / 2 on both
    branches, and its gradient is exactly +-delta/D, as PyTorch's (which takes the quadratic
    branch there too); just inside and outside too."""
    below = delta - 2**-20 * delta
    above = delta + 2**-20 * delta
    prediction = torch.tensor([[delta, -delta, 1.0 + delta, below, -above]], dtype=dtype)
    target = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]], dtype=dtype)
    criterion = nn.HuberLoss(delta, "sum")
    loss = criterion(prediction, target)
    grad = criterion.backward()
    assert grad[0, :3].tolist() == [delta, -delta, delta]
    assert grad[0, 4] == -delta
    leaf = prediction.clone().requires_grad_(True)
    expected = F.huber_loss(leaf, target, delta=delta, reduction="sum")
    expected.backward()
    assert leaf.grad is not None
    assert torch.equal(grad, leaf.grad)
    torch.testing.assert_close(loss, expected.detach(), rtol=2 * torch.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_huber_in_16_bits_computes_its_differences_in_float32(dtype: torch.dtype) -> None:
    """In float16, z - t past 65504 was inf, and with it the loss, where delta (|d| - delta/2)
    is finite and PyTorch's loss too (24176 here). Computed in float32 and each element rounded
    once, as PyTorch's kernel does, the float16 loss is PyTorch's bit for bit, on these and on
    random values (a bfloat16 one as close to the float64 oracle as PyTorch's), and the gradient
    is at least as close to that oracle as PyTorch's."""
    prediction = torch.tensor([[65504.0, -65504.0, 60000.0, 300.0]], dtype=dtype)
    target = torch.tensor([[-65504.0, 65504.0, 0.0, 0.0]], dtype=dtype)
    generator = torch.Generator().manual_seed(3)
    random = [(torch.randn(64, 10, generator=generator) * 3).to(dtype) for _ in range(20)]
    for z, t in [(prediction, target), *zip(random[::2], random[1::2], strict=True)]:
        criterion = nn.HuberLoss(0.3)
        loss = criterion(z, t)
        grad = criterion.backward()
        leaf = z.clone().requires_grad_(True)
        expected = F.huber_loss(leaf, t, delta=0.3)
        expected.backward()
        leaf64 = z.to(F64).requires_grad_(True)
        F.huber_loss(leaf64, t.to(F64), delta=0.3).backward()
        assert leaf.grad is not None and leaf64.grad is not None
        if dtype == torch.float16:
            assert torch.equal(loss, expected.detach())
        value64 = F.huber_loss(z.to(F64), t.to(F64), delta=0.3)
        _assert_as_close_as_torch(loss, expected, value64, dtype, "loss")
        assert grad.dtype == dtype
        ours, torchs = _error(grad, leaf64.grad), _error(leaf.grad, leaf64.grad)
        assert ours <= torchs, f"gradient error {ours:.3g}, PyTorch's {torchs:.3g}"


TINY = [[1e-40, -1e-40, 5e-324, 0.0, -0.0, 1e-30], [-0.0, 0.0, -5e-324, 1e-310, 0.0, -1e-30]]
TINY_TARGET = [[0.0, 1e-40, -5e-324, -0.0, 0.0, 0.0], [0.0, -0.0, 0.0, 0.0, 1e-310, 1e-30]]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    ("make", "function"),
    [
        (nn.L1Loss, F.l1_loss),
        (lambda: nn.MSELoss("mean"), F.mse_loss),
        (lambda: nn.HuberLoss(1e-30), lambda z, t: F.huber_loss(z, t, delta=1e-30)),
        (nn.HuberLoss, F.huber_loss),
    ],
    ids=["l1", "mse", "huber-1e-30", "huber-1"],
)
def test_regression_losses_at_subnormal_and_signed_zero_differences(
    make: Callable[[], nn.Loss], function: Callable[[Tensor, Tensor], Tensor], dtype: torch.dtype
) -> None:
    """Differences of subnormals, of +0 and -0 and of 1e-30 (0 in 16 bits): no NaN from a sign
    of zero, and the values PyTorch gives."""
    prediction, target = torch.tensor(TINY, dtype=F64), torch.tensor(TINY_TARGET, dtype=F64)
    _check_loss(make(), function, prediction, target, dtype)


# -- activations in float16 and bfloat16 ----------------------------------------------------------

ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], Callable[[Tensor], Tensor]]] = {
    "sigmoid": (nn.Sigmoid, torch.sigmoid),
    "tanh": (nn.Tanh, torch.tanh),
    "relu": (nn.ReLU, F.relu),
    "leakyrelu-0.01": (nn.LeakyReLU, F.leaky_relu),
    "leakyrelu-0": (lambda: nn.LeakyReLU(0.0), lambda x: F.leaky_relu(x, 0.0)),
    "elu-1": (nn.ELU, F.elu),
    "elu-0.1": (lambda: nn.ELU(0.1), lambda x: F.elu(x, 0.1)),
    "selu": (nn.SELU, F.selu),
    "gelu": (nn.GELU, F.gelu),
    "gelu-tanh": (lambda: nn.GELU("tanh"), lambda x: F.gelu(x, approximate="tanh")),
    "silu": (nn.SiLU, F.silu),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activations_at_16_bit_extremes(name: str, dtype: torch.dtype) -> None:
    """The largest finite values, +-1e4 (inf in float16), saturated sigmoid and tanh (+-20 to
    +-100), the kinks (+-0 and subnormals), against float64 autograd on the same values: as close
    as PyTorch's own 16-bit result, and finite wherever the oracle is, forward and backward."""
    largest = torch.finfo(dtype).max
    values = [-largest, -1e4, -100.0, -89.0, -20.0, -11.5, -1.0, -1e-3, -1e-40, -0.0]
    values += [-v for v in values] + [-17.0, 17.0, 0.5, -0.5]
    x = torch.tensor([values], dtype=F64).to(dtype)
    upstream = torch.randn(x.shape, dtype=F64, generator=torch.Generator().manual_seed(0))
    upstream = upstream.to(dtype)
    make, function = ACTIVATIONS[name]
    module = make()
    output = module(x)
    grad = module.backward(upstream)
    leaf = x.clone().requires_grad_(True)
    expected = function(leaf)
    expected.backward(upstream)
    oracle_leaf = x.to(F64).requires_grad_(True)
    oracle = function(oracle_leaf)
    oracle.backward(upstream.to(F64))
    assert leaf.grad is not None and oracle_leaf.grad is not None
    for ours, torchs, exact, what in (
        (output, expected.detach(), oracle.detach(), "output"),
        (grad, leaf.grad, oracle_leaf.grad, "gradient"),
    ):
        # Element by element: a max-norm error would hide the small values among +-65504.
        for i in range(x.shape[1]):
            where = f"{what} at {float(x[0, i])}"
            _assert_as_close_as_torch(ours[:, i], torchs[:, i], exact[:, i], dtype, where)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("slope", [0.01, 0.3, 0.2, 0.0])
def test_leaky_relu_in_16_bits_rounds_once_as_torch(slope: float, dtype: torch.dtype) -> None:
    """LeakyReLU in float16 and bfloat16 computes a x and g a in float32 with the slope in
    float32 and rounds once, as PyTorch's kernels do: its output and input gradient are
    PyTorch's bits on 20 000 values of both signs (a slope rounded to 16 bits first made about a
    third of the negative ones one unit in the last place off)."""
    generator = torch.Generator().manual_seed(3)
    x = (torch.randn(200, 100, dtype=F64, generator=generator) * 10).to(dtype)
    upstream = torch.randn(200, 100, dtype=F64, generator=generator).to(dtype)
    module = nn.LeakyReLU(slope)
    output = module(x)
    grad = module.backward(upstream)
    leaf = x.clone().requires_grad_(True)
    expected = F.leaky_relu(leaf, slope)
    expected.backward(upstream)
    assert output.dtype is dtype and grad.dtype is dtype
    assert torch.equal(output, expected.detach())
    assert torch.equal(grad, leaf.grad)


def _nearest(value: Fraction, dtype: torch.dtype) -> float:
    """``value`` rounded to the nearest number of the 16-bit ``dtype``, ties to even (its
    significand's bits and its lowest exponent; no overflow)."""
    precision, lowest = {torch.float16: (11, -14), torch.bfloat16: (8, -126)}[dtype]
    if value == 0:
        return 0.0
    size = abs(value)
    exponent = size.numerator.bit_length() - size.denominator.bit_length()
    if Fraction(2) ** exponent > size:
        exponent -= 1
    quantum = Fraction(2) ** (max(exponent, lowest) - (precision - 1))
    return math.copysign(float(round(size / quantum) * quantum), value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_sigmoid_backward_in_16_bits_is_correctly_rounded(dtype: torch.dtype) -> None:
    """Sigmoid's backward for a 16-bit gradient and output is the correctly rounded g y (1 - y):
    the exact value of the same 16-bit g and y (in rationals) rounded to the nearest, ties to
    even, on 20 000 values (computed in 16 bits, a quarter of them were one unit in the last
    place off; computed in float32 and rounded to 16 bits, 2 in float16, where float32's
    rounding landed on a midpoint). PyTorch's bfloat16 kernel gives the same bits on these; its
    float16 CPU kernel rounds after each operation."""
    generator = torch.Generator().manual_seed(4)
    x = (torch.randn(200, 100, dtype=F64, generator=generator) * 6).to(dtype)
    upstream = torch.randn(200, 100, dtype=F64, generator=generator).to(dtype)
    module = nn.Sigmoid()
    y = module(x)
    grad = module.backward(upstream)
    exact = [
        _nearest(Fraction(g) * Fraction(v) * (1 - Fraction(v)), dtype)
        for g, v in zip(upstream.flatten().tolist(), y.flatten().tolist(), strict=True)
    ]
    assert grad.dtype is dtype
    assert torch.equal(grad.to(F64).flatten(), torch.tensor(exact, dtype=F64))
    if dtype is torch.bfloat16:
        leaf = x.clone().requires_grad_(True)
        torch.sigmoid(leaf).backward(upstream)
        assert torch.equal(grad, leaf.grad)


@pytest.mark.parametrize(
    ("dtype", "x", "g", "expected"),
    [
        # y = sigmoid(-17) in bfloat16: g y is a midpoint of bfloat16, g y (1 - y) just below it
        (torch.bfloat16, -17.0, 1.5, 6.193295121192932e-08),
        (torch.bfloat16, -17.0, -1.5, -6.193295121192932e-08),
        # y = 0.97998046875 in float16: float32's g y (1 - y) lands on a midpoint, above the
        # exact value
        (torch.float16, 3.888671875, 10000.0, 196.125),
    ],
)
def test_sigmoid_backward_in_16_bits_rounds_once_where_float32_lands_on_a_midpoint(
    dtype: torch.dtype, x: float, g: float, expected: float
) -> None:
    """Where g y (1 - y) rounded to float32 falls on a midpoint of the 16-bit dtype, a second
    rounding to nearest, ties to even, went the wrong way (float32 rounded to odd first keeps
    the exact value's side)."""
    module = nn.Sigmoid()
    y = module(torch.tensor([x], dtype=dtype))
    grad = module.backward(torch.tensor([g], dtype=dtype))
    exact = Fraction(g) * Fraction(y.item()) * (1 - Fraction(y.item()))
    assert _nearest(exact, dtype) == expected
    assert grad.item() == expected


# -- BatchNorm1d: features far from zero ---------------------------------------------------------


@pytest.mark.parametrize("offset", [1e4, 1e7])
@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=str)
def test_batch_norm_of_features_far_from_zero(offset: float, dtype: torch.dtype) -> None:
    """A feature 1e4 (1e7) + {1, -1, 0}: the mean is subtracted before the squares are summed
    (two passes), so x_hat is +-sqrt(3/2) to the dtype's precision, and the input gradient and the
    running variance follow the float64 oracle; PyTorch's float32 kernel is 2e-4 (0.14) off
    here, so it is not the reference. The oracle normalises the feature less its offset (an exact
    subtraction, which changes neither x_hat, the gradient nor the variance): at the offset
    itself its float64 output was 6e-10 off under ATen's default kernels, 6e-11 under AVX2."""
    x = torch.tensor([[offset + 1, 1.0], [offset - 1, 2.0], [offset, 3.0]], dtype=dtype)
    upstream = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25]], dtype=dtype)
    layer = nn.BatchNorm1d(2, dtype=dtype)
    output = layer(x)
    grad = layer.backward(upstream)
    leaf = (x.to(F64) - torch.tensor([offset, 0.0], dtype=F64)).requires_grad_(True)
    running_mean, running_var = torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)
    weight, bias = torch.ones(2, dtype=F64), torch.zeros(2, dtype=F64)
    expected = F.batch_norm(leaf, running_mean, running_var, weight, bias, training=True)
    expected.backward(upstream.to(F64))
    assert leaf.grad is not None
    assert leaf[:, 0].tolist() == [1.0, -1.0, 0.0]  # (exact in float32 too: 1e7 + 1 < 2**24)
    rtol = 1e-12 if dtype == F64 else 1e-6
    torch.testing.assert_close(output.to(F64), expected.detach(), rtol=rtol, atol=1e-10)
    torch.testing.assert_close(grad.to(F64), leaf.grad, rtol=10 * rtol, atol=1e-10)
    torch.testing.assert_close(layer.running_var.to(F64), running_var, rtol=rtol, atol=0)
    assert float(output[2, 0]) == 0.0


@pytest.mark.parametrize(
    ("build", "name", "dtype"),
    [
        (lambda: nn.LeakyReLU(1e39), "LeakyReLU: negative_slope=1e\\+39", torch.float32),
        (lambda: nn.ELU(alpha=1e39), "ELU: alpha=1e\\+39", torch.float32),
        # (16-bit inputs are computed in float32: taken, as PyTorch takes them)
        (lambda: nn.LeakyReLU(1e5), None, torch.float16),
        (lambda: nn.ELU(alpha=1e5), None, torch.float16),
        (lambda: nn.ELU(alpha=1e39), "ELU: alpha=1e\\+39", torch.bfloat16),
    ],
)
def test_a_setting_past_the_dtype_computed_in_is_refused_in_the_modules_words(
    build: Callable[[], nn.Module], name: str | None, dtype: torch.dtype
) -> None:
    """LeakyReLU's forward failed in torch's words ("value cannot be converted to type float
    without overflow"), and ELU's turned every output into NaN or -inf, the positive inputs'
    too (0 times an infinite alpha); the same settings in float64 compute."""
    module = build()
    x = torch.tensor([-2.0, 0.0, 1.0, 3.0], dtype=dtype)
    computed = torch.float32 if dtype.itemsize == 2 else dtype
    if name is None:
        assert torch.equal(module(x)[2:], x[2:])
        return
    with pytest.raises(
        ValueError, match=rf"^{name} is beyond the range of the dtype it computes in, {computed}"
    ):
        module(x)
    wide = module(x.double())
    assert torch.equal(wide[2:], x[2:].double()) and bool((wide[:1] < -1e38).all())


@pytest.mark.parametrize(
    ("module", "setting", "narrow"),
    [(nn.ELU(), "alpha", torch.float16), (nn.LeakyReLU(0.5), "negative_slope", torch.bfloat16)],
)
def test_a_refused_forward_leaves_the_last_16_bit_forwards_backward(
    module: nn.Module, setting: str, narrow: torch.dtype
) -> None:
    """A float32 forward refused for a setting past float32 forgot that the forward before it
    was in 16 bits: its backward then returned float32, which the 16-bit layer before refused."""
    x = torch.tensor([[-1.0, 2.0]], dtype=narrow)
    grad = torch.tensor([[0.3, 0.7]], dtype=narrow)
    module(x)
    expected = module.backward(grad)
    assert expected.dtype is narrow
    setattr(module, setting, 1e39)
    with pytest.raises(ValueError, match="is beyond the range of the dtype it computes in"):
        module(torch.tensor([[-1.0]]))
    again = module.backward(grad)
    assert again.dtype is narrow and torch.equal(again, expected)


def test_log_softmax_of_a_16_bit_forward_reads_a_float64_gradient_in_float64() -> None:
    """The 16-bit forward's backward read every gradient in float32: a float64 one past
    float32's range became inf and the result NaN, where Softmax's is finite."""
    module = nn.LogSoftmax()
    module(torch.zeros(1, 3, dtype=torch.float16))
    grad = torch.tensor([[1e300, 0.0, 0.0]], dtype=torch.float64)
    result = module.backward(grad)
    expected = grad - torch.full((1, 3), 1 / 3, dtype=torch.float64) * grad.sum()
    assert result.dtype is torch.float64
    torch.testing.assert_close(result, expected, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("x", "g"), [(40.0, -3.125), (40.0, 3.125), (-200.0, -1.5), (0.0, -0.0)])
def test_sigmoid_backward_in_16_bits_gives_a_zero_the_sign_of_the_product(
    dtype: torch.dtype, x: float, g: float
) -> None:
    """Where g y (1 - y) is a zero (y rounds to 1 or 0, or g is a zero), the 16-bit backward
    gives it the product's sign, as PyTorch's autograd does (g y - g y was +0 for g < 0)."""
    module = nn.Sigmoid()
    module(torch.tensor([x], dtype=dtype))
    grad = module.backward(torch.tensor([g], dtype=dtype))
    leaf = torch.tensor([x], dtype=dtype, requires_grad=True)
    torch.sigmoid(leaf).backward(torch.tensor([g], dtype=dtype))
    assert leaf.grad is not None and grad.item() == 0.0
    assert math.copysign(1.0, grad.item()) == math.copysign(1.0, leaf.grad.item())
