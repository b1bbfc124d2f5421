"""GELU (exact and tanh) and SiLU: their values at the extremes against PyTorch's forward and
autograd's gradient, the forward's bits against PyTorch's kernels, the finite limits at the
infinities (where PyTorch's are NaN), the refusals of ``approximate``, and their names, copies
and conversions.

The parametrised suites (tests/test_modules.py, test_gradcheck.py, test_oracle_audit.py,
test_interop.py, ...) check them against float64 autograd over random shapes as every other
activation."""

from __future__ import annotations

import contextlib
import copy
import math
import pickle
import warnings
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import Tensor

from minidl import nn
from minidl.data import make_disk_data
from minidl.interop import ConversionError, from_torch, to_torch
from tests.helpers import assert_rounds_train_as_alone

F32, F64 = torch.float32, torch.float64

#: name: (the module, PyTorch's function).
ACTIVATIONS: dict[str, tuple[Callable[[], nn.Activation], Callable[[Tensor], Tensor]]] = {
    "gelu": (nn.GELU, F.gelu),
    "gelu-tanh": (lambda: nn.GELU(approximate="tanh"), lambda x: F.gelu(x, approximate="tanh")),
    "silu": (nn.SiLU, F.silu),
}

FINITE_EXTREMES = [0.0, -0.0, 1e-8, -1e-8, 30.0, -30.0, 1e4, -1e4]


def _bits(tensor: Tensor) -> Tensor:
    """The bit patterns (so that -0.0 and 0.0 differ, and NaNs compare)."""
    return tensor.view({F32: torch.int32, F64: torch.int64}[tensor.dtype])


@contextlib.contextmanager
def _aten_kernels() -> Iterator[None]:
    """PyTorch's own kernels: its float32 exact GELU on a CPU otherwise goes to oneDNN (whose
    switch warns of TF32 on Intel GPUs, which is beside the point here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def _torchs(function: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """PyTorch's output and autograd's gradient (of the sum) at ``x``."""
    leaf = x.clone().requires_grad_(True)
    output = function(leaf)
    output.sum().backward()
    assert leaf.grad is not None
    return output.detach(), leaf.grad


def _ours(make: Callable[[], nn.Activation], x: Tensor) -> tuple[Tensor, Tensor]:
    module = make()
    output = module(x)
    return output, module.backward(torch.ones_like(x))


# -- the extremes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_values_at_the_finite_extremes_are_pytorchs(name: str, dtype: torch.dtype) -> None:
    """0, -0, +-1e-8, +-30, +-1e4: the output is PyTorch's bit for bit (its ATen kernel; its
    float32 exact GELU, which goes to oneDNN, to rounding), and the gradient autograd's to the
    dtype's rounding: exactly 1/2 at 0, exactly 1 and 0 at +-1e4."""
    make, function = ACTIVATIONS[name]
    x = torch.tensor(FINITE_EXTREMES, dtype=dtype)
    output, grad = _ours(make, x)
    with _aten_kernels():
        expected, expected_grad = _torchs(function, x)
    assert torch.equal(_bits(output), _bits(expected)), (output, expected)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(grad, expected_grad, rtol=4 * eps, atol=0)
    assert grad[:2].tolist() == [0.5, 0.5]
    assert grad[6].item() == 1.0 and grad[7].item() == 0.0
    default_output, _ = _torchs(function, x)  # (oneDNN's where it takes it)
    torch.testing.assert_close(output, default_output, rtol=4 * eps, atol=0)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_the_infinities_give_the_limits_where_pytorch_gives_nan(
    name: str, dtype: torch.dtype
) -> None:
    """+inf: output +inf, derivative 1; -inf: output -0, derivative 0 (the limits, as Tanh,
    Sigmoid and ELU give theirs). PyTorch's output at -inf and its derivatives at both are NaN
    (x times a factor that is 0 there), and so is its output at +inf where oneDNN's AVX-512
    float32 exact GELU runs (a CPU with AVX-512, a tensor of two or more elements; oneDNN's AVX2
    and SSE4.1 ones and ATen's kernels give inf). NaN stays NaN."""
    make, function = ACTIVATIONS[name]
    x = torch.tensor([math.inf, -math.inf, math.nan], dtype=dtype)
    output, grad = _ours(make, x)
    assert output[0].item() == math.inf and grad[0].item() == 1.0
    assert output[1].item() == 0.0 and math.copysign(1.0, output[1].item()) == -1.0
    assert grad[1].item() == 0.0
    assert output[2].isnan() and grad[2].isnan()
    expected, expected_grad = _torchs(function, x)
    assert expected[0].item() == math.inf or (name, dtype) == ("gelu", F32)
    assert expected[0].isnan() or expected[0].item() == math.inf
    assert expected[1:].isnan().all()
    assert expected_grad.isnan().all()  # (what the documentation says PyTorch gives)


@pytest.mark.parametrize("dtype", [F32, F64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_finite_for_every_input_but_nan(name: str, dtype: torch.dtype) -> None:
    """The largest finite values (x^3 and x^2 overflow in the tanh approximation; e^{-x}
    overflows in SiLU), +-1e4, +-1000, +-100, +-41 and the infinities: every output and gradient
    is finite but the output at +inf, and from +-1000 on they are the limits x or -0, and 1 or
    0."""
    make, _ = ACTIVATIONS[name]
    largest = torch.finfo(dtype).max
    values = [largest, 1e4, 1000.0, 100.0, 41.0, math.inf]
    x = torch.tensor(values + [-v for v in values], dtype=F64).to(dtype)
    upstream = torch.full_like(x, 0.5)
    module = make()
    output = module(x)
    grad = module.backward(upstream)
    assert output.dtype == grad.dtype == dtype
    big = x.abs() >= 1000
    assert torch.isfinite(output[x.isfinite()]).all() and torch.isfinite(grad).all()
    assert torch.equal(output[big & (x > 0)], x[big & (x > 0)])
    assert (output[big & (x < 0)] == 0).all() and output[big & (x < 0)].signbit().all()
    assert grad[big & (x > 0)].tolist() == [0.5] * int((big & (x > 0)).sum())
    assert (grad[big & (x < 0)] == 0).all()


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_gradients_match_autograd_across_the_range_in_float64(name: str) -> None:
    """From -50 to 50, the tails included, and random values, against float64 autograd: the
    output within 2 eps * max(1, |x|) of PyTorch's, the gradient within 1e-14 absolute (GELU's
    Phi is (1 + erf) / 2 in both, whose error is an ulp of 1: in the far negative tail the
    relative error of both is large), and within 1e-12 relative where it is not small."""
    make, function = ACTIVATIONS[name]
    generator = torch.Generator().manual_seed(3)
    x = torch.cat(
        [
            torch.linspace(-50.0, 50.0, 20_001, dtype=F64),
            4 * torch.randn(1000, dtype=F64, generator=generator),
        ]
    )
    output, grad = _ours(make, x)
    expected, expected_grad = _torchs(function, x)
    eps = torch.finfo(F64).eps
    assert ((output - expected).abs() <= 2 * eps * x.abs().clamp_min(1)).all()
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-14)
    large = expected_grad.abs() > 1e-3
    torch.testing.assert_close(grad[large], expected_grad[large], rtol=1e-12, atol=0)


@pytest.mark.parametrize(("dtype", "bound"), [(F64, 14), (F32, 6)], ids=str)
def test_the_tanh_derivative_is_within_its_documented_error(dtype: torch.dtype, bound: int) -> None:
    """Against 40-digit values: the tanh approximation's derivative within about 12 epsilons
    (float32: 5), where c is near 1 for x between 4 and 9 and c (1 - c) is taken from
    1 - tanh u, not from 1 - c (33 epsilons, 13 in float32); and no further from them than
    autograd's (22 epsilons, 9 in float32)."""
    import mpmath  # (a dependency of torch's, through sympy)

    mpmath.mp.dps = 40
    beta, kappa = mpmath.sqrt(2 / mpmath.pi), mpmath.mpf("0.044715")

    def derivative(value: float) -> float:
        x = mpmath.mpf(value)
        tanh = mpmath.tanh(beta * (x + kappa * x**3))
        return float((1 + tanh) / 2 + x * (1 - tanh**2) / 2 * beta * (1 + 3 * kappa * x**2))

    generator = torch.Generator().manual_seed(4)
    x = torch.cat(
        [
            torch.linspace(-10.0, 10.0, 1001, dtype=F64),
            3.5 + 6 * torch.rand(3000, dtype=F64, generator=generator),
        ]
    ).to(dtype)
    truth = torch.tensor([derivative(v) for v in x.tolist()], dtype=F64)
    _, grad = _ours(ACTIVATIONS["gelu-tanh"][0], x)
    _, expected = _torchs(ACTIVATIONS["gelu-tanh"][1], x)
    eps = torch.finfo(dtype).eps
    error = float((grad.double() - truth).abs().max()) / eps
    autograds = float((expected.double() - truth).abs().max()) / eps
    assert error <= bound and error <= autograds, (error, autograds)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_the_silu_derivative_is_within_its_documented_error(dtype: torch.dtype) -> None:
    """Against 40-digit values: within max(1, 3|x|/4) epsilons (1 - sigma, the difference of
    a rounded sigma from 1, times y), at most about 18 (float32: 8)."""
    import mpmath

    mpmath.mp.dps = 40

    def derivative(value: float) -> float:
        x = mpmath.mpf(value)
        sigmoid = 1 / (1 + mpmath.exp(-x))
        return float(sigmoid * (1 + x * (1 - sigmoid)))

    generator = torch.Generator().manual_seed(5)
    x = torch.cat(
        [
            torch.linspace(-50.0, 50.0, 2001, dtype=F64),
            10 * torch.randn(3000, dtype=F64, generator=generator),
        ]
    ).to(dtype)
    truth = torch.tensor([derivative(v) for v in x.tolist()], dtype=F64)
    _, grad = _ours(nn.SiLU, x)
    error = (grad.double() - truth).abs() / torch.finfo(dtype).eps
    assert (error <= (0.75 * x.double().abs()).clamp_min(1)).all()
    assert float(error.max()) <= (18.5 if dtype == F64 else 8.5), float(error.max())


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(ACTIVATIONS)),
    wide=st.booleans(),
    values=st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=40),
)
@example(name="gelu", wide=False, values=[0.0, math.inf])
def test_any_input_gives_pytorchs_values_or_the_limits(
    name: str, wide: bool, values: list[float]
) -> None:
    """Any inputs, infinities and the largest values included, in float32 or float64: the
    gradient is finite, and autograd's to 1e-14 (float32: 2e-6) absolute plus 8 eps relative
    wherever autograd's is finite; the output is PyTorch's to 2 eps * max(1, |x|) wherever
    that is finite, and -0 where PyTorch's is NaN at -inf; at +inf, +inf, where PyTorch's is
    +inf or, from oneDNN's AVX-512 float32 exact GELU, NaN (see the test of the infinities)."""
    dtype = F64 if wide else F32
    make, function = ACTIVATIONS[name]
    x = torch.tensor(values, dtype=dtype)
    output, grad = _ours(make, x)
    expected, expected_grad = _torchs(function, x)
    assert torch.isfinite(grad).all()
    eps = torch.finfo(dtype).eps
    known = torch.isfinite(expected_grad)
    tolerance = (1e-14 if wide else 2e-6) + 8 * eps * expected_grad.abs()
    assert ((grad - expected_grad).abs() <= tolerance)[known].all()
    finite = torch.isfinite(expected)
    bound = 2 * eps * x.abs().clamp_min(1)
    if not wide:
        bound = 2 * bound  # (oneDNN's exact GELU)
    assert ((output - expected).abs() <= bound)[finite].all()
    assert torch.equal(output[x == math.inf], x[x == math.inf])
    assert (expected.isnan() | (expected == math.inf))[x == math.inf].all()
    assert (output[expected.isnan() & (x != math.inf)] == 0).all()


# -- the forward's bits -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_the_forward_is_pytorchs_bits_but_where_its_kernels_round_otherwise(
    name: str, dtype: torch.dtype
) -> None:
    """PyTorch's formula, operation by operation: the same bits as its ATen kernel for most
    elements (measured on an AVX2 CPU: all but 0.25% to 4%; the others come from its
    vectorised erf, tanh and exp, which round otherwise than torch.erf, tanh and exp), and
    within 2 eps * max(1, |x|) for all. PyTorch's float32 exact GELU on a CPU has an erf of
    its own (ATen's vectorised polynomial, or oneDNN's): to rounding only there."""
    make, function = ACTIVATIONS[name]
    generator = torch.Generator().manual_seed(0)
    x = torch.cat(
        [
            3 * torch.randn(50_000, dtype=dtype, generator=generator),
            30 * torch.randn(5_000, dtype=dtype, generator=generator),
        ]
    )
    output = make()(x)
    eps = torch.finfo(dtype).eps
    with _aten_kernels():
        expected = function(x)
    same = (_bits(output) == _bits(expected)).double().mean().item()
    assert same >= (0.3 if name == "gelu" and dtype == F32 else 0.9), same
    bound = 2 * eps * x.abs().clamp_min(1)
    assert ((output - expected).abs() <= bound).all()
    default = function(x)  # (oneDNN's exact GELU for float32 on a CPU)
    assert ((output - default).abs() <= 2 * bound).all()


def test_the_forward_is_the_formula_of_pytorchs_kernel() -> None:
    """Bit for bit, the roundings of PyTorch's CPU kernels written with torch's operations
    (so that its own erf, tanh and exp are used): (x / 2)(1 + erf(x / sqrt 2)),
    (x / 2)(1 + tanh(beta (x + kappa (x x) x))) and x / (1 + e^-x)."""
    generator = torch.Generator().manual_seed(1)
    for dtype in (F32, F64):
        x = 5 * torch.randn(10_000, dtype=dtype, generator=generator)
        half = x * 0.5
        gelu = half * (1 + torch.erf(x * math.sqrt(0.5)))
        beta = math.sqrt(2) * (2 / math.sqrt(math.pi)) * 0.5
        tanh = 0.5 * x * (1 + torch.tanh(beta * (x + 0.044715 * (x * x * x))))
        silu = x / (1 + torch.exp(-x))
        assert torch.equal(_bits(nn.GELU()(x)), _bits(gelu))
        assert torch.equal(_bits(nn.GELU("tanh")(x)), _bits(tanh))
        assert torch.equal(_bits(nn.SiLU()(x)), _bits(silu))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_16_bits_compute_in_float32_and_round_once(name: str, dtype: torch.dtype) -> None:
    """As PyTorch's kernels do: the output as close to float64's as PyTorch's 16-bit output (to
    rounding once), and the gradient, from the derivative kept in float32, as close as
    autograd's."""
    make, function = ACTIVATIONS[name]
    generator = torch.Generator().manual_seed(2)
    x = (4 * torch.randn(64, 10, generator=generator)).to(dtype)
    upstream = torch.randn(64, 10, generator=generator).to(dtype)
    module = make()
    output = module(x)
    grad = module.backward(upstream)
    assert output.dtype == grad.dtype == dtype
    exact = x.double().requires_grad_(True)
    function(exact).backward(upstream.double())
    twin = x.clone().requires_grad_(True)
    twin_output = function(twin)
    twin_output.backward(upstream)
    assert exact.grad is not None and twin.grad is not None
    exact_output = function(x.double())
    eps = torch.finfo(dtype).eps

    def error(got: Tensor, truth: Tensor) -> float:
        return float((got.double() - truth).abs().max())

    scale = float(exact_output.abs().max())
    assert error(output, exact_output) <= error(twin_output.detach(), exact_output) + eps * scale
    scale = float(exact.grad.abs().max())
    assert error(grad, exact.grad) <= error(twin.grad, exact.grad) + eps * scale / 4


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_a_16_bit_gradient_after_a_float32_forward_is_promoted(name: str) -> None:
    """The last forward decides: after a float16 forward, a float32 one keeps no 16-bit mark,
    so a float16 gradient is promoted, as backward promotes a gradient of another dtype (a
    float32 result, as a fresh module's and autograd's), not rounded to float16 as a 16-bit
    forward's gradient is."""
    make, function = ACTIVATIONS[name]
    generator = torch.Generator().manual_seed(3)
    x = 4 * torch.randn(64, 10, generator=generator)
    upstream = torch.randn(64, 10, generator=generator).half()
    module = make()
    module(x.half())
    module(x)
    grad = module.backward(upstream)
    fresh = make()
    fresh(x)
    assert grad.dtype == F32
    assert torch.equal(grad, fresh.backward(upstream))
    exact = x.double().requires_grad_(True)
    function(exact).backward(upstream.double())
    assert exact.grad is not None
    torch.testing.assert_close(grad, exact.grad.float())


# -- approximate ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("approximate", "kind", "message"),
    [
        ("exact", ValueError, "GELU: approximate must be 'none' or 'tanh', got 'exact'"),
        ("Tanh", ValueError, "GELU: approximate must be 'none' or 'tanh', got 'Tanh'"),
        ("", ValueError, "GELU: approximate must be 'none' or 'tanh', got ''"),
        (
            None,
            TypeError,
            "GELU: approximate must be a string, 'none' or 'tanh', got NoneType None",
        ),
        (True, TypeError, "GELU: approximate must be a string, 'none' or 'tanh', got bool True"),
        (0, TypeError, "GELU: approximate must be a string, 'none' or 'tanh', got int 0"),
    ],
)
def test_approximate_is_refused_unless_none_or_tanh(
    approximate: object, kind: type[Exception], message: str
) -> None:
    """A TypeError for what is not a string, a ValueError naming GELU, the value and the two
    accepted; from the constructor and from setting it (the value is kept)."""
    with pytest.raises(kind) as info:
        nn.GELU(approximate=approximate)  # type: ignore[arg-type]
    assert str(info.value) == message
    layer = nn.GELU("tanh")
    with pytest.raises(kind) as info:
        layer.approximate = approximate  # type: ignore[assignment]
    assert str(info.value) == message
    assert layer.approximate == "tanh"
    with pytest.raises(AttributeError, match=r"GELU\.approximate cannot be deleted"):
        del layer.approximate


def test_approximate_keeps_a_strings_characters_whatever_its_class() -> None:
    """A subclass of str is checked and kept by its characters, as a plain str: one whose
    str() or == says otherwise neither passes the check nor leaves another value behind."""

    class Renamed(str):
        def __str__(self) -> str:
            return "bogus"

    class Agreeable(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    layer = nn.GELU(Renamed("tanh"))
    assert type(layer.approximate) is str and layer.approximate == "tanh"
    assert repr(layer) == "GELU(approximate='tanh')"
    x = torch.linspace(-4, 4, 9, dtype=F64)
    assert torch.equal(layer(x), nn.GELU("tanh")(x))
    with pytest.raises(ValueError, match="GELU: approximate must be 'none' or 'tanh', got 'exact'"):
        nn.GELU(Agreeable("exact"))
    with pytest.raises(ValueError, match="got 'exact'"):
        layer.approximate = Agreeable("exact")
    assert layer.approximate == "tanh"


def test_setting_approximate_changes_the_function() -> None:
    x = torch.linspace(-4, 4, 101, dtype=F64)
    layer = nn.GELU()
    exact = layer(x)
    layer.approximate = "tanh"
    assert repr(layer) == "GELU(approximate='tanh')"
    assert torch.equal(layer(x), nn.GELU("tanh")(x)) and not torch.equal(layer(x), exact)


def test_repr_and_names_are_pytorchs() -> None:
    for ours, theirs in (
        (nn.GELU(), torch.nn.GELU()),
        (nn.GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh")),
        (nn.SiLU(), torch.nn.SiLU()),
    ):
        assert repr(ours) == repr(theirs)
    for name in ("gelu", "GELU", "GeLU"):
        assert repr(nn.activation(name)) == "GELU(approximate='none')"
    for name in ("gelutanh", "gelu_tanh", "GELU-tanh", "gelu-Tanh"):
        assert repr(nn.activation(name)) == "GELU(approximate='tanh')"
    for name in ("silu", "SiLU", "SILU"):
        assert type(nn.activation(name)) is nn.SiLU
    model = nn.mlp((2, 3, 3, 3, 2), ("gelu", "gelu_tanh", "silu"))
    assert [repr(model[i]) for i in (1, 3, 5)] == [
        "GELU(approximate='none')",
        "GELU(approximate='tanh')",
        "SiLU()",
    ]
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        nn.activation("swish")  # (one name per activation: SiLU's)


# -- copies, conversions, stacks ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_a_copy_after_forward_gives_the_same_gradient(name: str) -> None:
    """pickle and deepcopy between forward and backward: the copy keeps its setting and cache
    (no state_dict entries) and gives the original's gradient bit for bit."""
    make, _ = ACTIVATIONS[name]
    module = make()
    x = 3 * torch.randn(5, 4, dtype=F64)
    grad = torch.randn(5, 4, dtype=F64)
    module(x)
    expected = module.backward(grad)
    assert module.state_dict() == {}
    for copied in (pickle.loads(pickle.dumps(module)), copy.deepcopy(module)):
        assert repr(copied) == repr(module)
        assert torch.equal(copied.backward(grad), expected)
    half = make()
    half(x.half())
    again = pickle.loads(pickle.dumps(half))
    assert torch.equal(again.backward(grad.half()), half.backward(grad.half()))


def test_conversions_keep_approximate_and_refuse_an_unknown_one_by_name() -> None:
    model = nn.Sequential(
        nn.Linear(3, 4, dtype=F64),
        nn.GELU("tanh"),
        nn.SiLU(),
        nn.GELU(),
        nn.Linear(4, 2, dtype=F64),
    )
    twin = to_torch(model)
    assert [type(m) for m in twin] == [
        torch.nn.Linear,
        torch.nn.GELU,
        torch.nn.SiLU,
        torch.nn.GELU,
        torch.nn.Linear,
    ]
    assert [twin[1].approximate, twin[3].approximate] == ["tanh", "none"]
    back = from_torch(twin)
    assert repr(back) == repr(model)
    x = torch.randn(6, 3, dtype=F64)
    torch.testing.assert_close(back(x), twin(x), rtol=1e-14, atol=1e-15)
    for bad, kind in (("exact", ValueError), (None, TypeError)):
        layer = torch.nn.GELU()
        layer.approximate = bad  # type: ignore[assignment]
        with pytest.raises(ConversionError) as info:
            from_torch(torch.nn.Sequential(torch.nn.Linear(3, 3), layer))
        assert str(info.value).startswith(
            "from_torch: cannot convert the layer at '1' of type "
            "torch.nn.modules.activation.GELU (GELU: approximate must be "
        ), str(info.value)
        assert repr(bad) in str(info.value)
        assert isinstance(info.value.__cause__, kind)


def test_models_with_gelu_and_silu_stack_and_train_as_alone() -> None:
    """stack_models puts the models' different activations (GELU of either approximation,
    SiLU) in StackedActivations; fit_rounds then trains each model as fit does, to 1e-12."""
    names = [("gelu", "silu"), ("gelutanh", "silu"), ("gelu", "gelu"), ("silu", "gelutanh")]
    datasets = [make_disk_data(80, 30, 10, seed=70 + r, dtype=F64) for r in range(4)]
    models = []
    for r, pair in enumerate(names):
        torch.manual_seed(r)
        models.append(nn.mlp((2, 6, 5, 2), list(pair), dtype=F64))
    stacked = nn.stack_models(models)
    first = stacked[1]
    assert isinstance(first, nn.StackedActivation)
    assert [repr(first.activation_of(r)) for r in range(4)] == [
        "GELU(approximate='none')",
        "GELU(approximate='tanh')",
        "GELU(approximate='none')",
        "SiLU()",
    ]
    assert_rounds_train_as_alone(models, [(d.train.x, d.train.y) for d in datasets])
