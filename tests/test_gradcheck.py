"""`minidl.gradcheck`: it passes on every correct module and loss, and catches wrong backwards."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

import minidl
from minidl import nn
from tests.helpers import F64, helper_test_op

MODULES: dict[str, Callable[[], nn.Module]] = {
    "linear": lambda: nn.Linear(3, 2, dtype=F64),
    "linear-no-bias": lambda: nn.Linear(3, 2, bias=False, dtype=F64),
    "linear-1x1": lambda: nn.Linear(1, 1, dtype=F64),
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leakyrelu": lambda: nn.LeakyReLU(0.2),
    "elu": lambda: nn.ELU(1.5),
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "gelu-tanh": lambda: nn.GELU("tanh"),
    "silu": nn.SiLU,
    "sequential": lambda: nn.mlp((3, 4, 3, 2), ("tanh", "elu"), dtype=F64),
    "sequential-gelu-silu": lambda: nn.mlp((3, 4, 4, 2), ("gelu_tanh", "silu"), dtype=F64),
}


def _input(features: int = 3) -> Tensor:
    # Away from the kink of the piecewise activations, where finite differences straddle it.
    x = torch.randn(4, features, dtype=F64)
    return x + 0.1 * torch.sign(x)


@pytest.mark.parametrize("name", list(MODULES))
def test_gradcheck_passes_on_every_module(name: str) -> None:
    module = MODULES[name]()
    features = 1 if name == "linear-1x1" else 3
    assert minidl.gradcheck(module, _input(features))


@pytest.mark.parametrize(
    ("criterion", "target"),
    [
        (nn.MSELoss(), torch.tensor([0, 2, 1, 1])),
        (nn.MSELoss("mean"), torch.randn(4, 3, dtype=F64)),
        (nn.MSELoss("sum"), torch.randn(4, 3, dtype=F64)),
        (nn.CrossEntropyLoss(), torch.tensor([0, 2, 1, 1])),
        (nn.CrossEntropyLoss(), torch.rand(4, 3, dtype=F64).softmax(dim=1)),
    ],
    ids=["mse-indices", "mse-mean", "mse-sum", "ce-indices", "ce-probabilities"],
)
def test_gradcheck_passes_on_every_loss(criterion: nn.Loss, target: Tensor) -> None:
    assert minidl.gradcheck(criterion, torch.randn(4, 3, dtype=F64), target)


class MeanBiasLinear(nn.Linear):
    """A classic mistake: the bias gradient taken as the mean of ``grad_output`` (a scalar)."""

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None and self.bias is not None
        self.weight.grad.addmm_(grad_output.t(), self._input)
        self.bias.grad.add_(grad_output.mean())
        return grad_output.mm(self.weight.data)


class WrongTanh(nn.Tanh):
    """Another one: the derivative of tanh taken as ``1 - y`` instead of ``1 - y**2``."""

    def _backward(self, grad_output: Tensor, output: Tensor) -> Tensor:
        return grad_output * (1 - output)


class TransposedWeightGradLinear(nn.Linear):
    """A square layer whose weight gradient is transposed (same shape, wrong values)."""

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        self.weight.grad.add_((grad_output.t() @ self._input).t())
        if self.bias is not None:
            self.bias.grad.add_(grad_output.sum(0))
        return grad_output.mm(self.weight.data)


WRONG: dict[str, Callable[[], nn.Module]] = {
    "mean-bias": lambda: MeanBiasLinear(3, 2, dtype=F64),
    "wrong-tanh": WrongTanh,
    "transposed-weight": lambda: TransposedWeightGradLinear(3, 3, dtype=F64),
    "wrong-tanh-in-sequential": lambda: nn.Sequential(nn.Linear(3, 3, dtype=F64), WrongTanh()),
}


@pytest.mark.parametrize("name", list(WRONG))
def test_gradcheck_fails_on_a_wrong_backward(name: str) -> None:
    module = WRONG[name]()
    with pytest.raises(minidl.GradcheckError, match="disagrees with finite differences"):
        minidl.gradcheck(module, _input())
    assert minidl.gradcheck(module, _input(), raise_exception=False) is False


@pytest.mark.parametrize("name", list(WRONG))
def test_torch_oracle_fails_on_a_wrong_backward(name: str) -> None:
    # The oracle helper of the other tests catches the same mistakes.
    with pytest.raises(AssertionError, match="relative error"):
        helper_test_op(WRONG[name](), _input())


def test_gradcheck_names_the_wrong_parameter() -> None:
    with pytest.raises(minidl.GradcheckError, match=r"MeanBiasLinear.*bias\["):
        minidl.gradcheck(MeanBiasLinear(3, 2, dtype=F64), _input())


class ScaledTanh(nn.Tanh):
    """A tanh whose input gradient is off by a relative ``error`` or an absolute ``offset``."""

    def __init__(self, error: float = 0.0, offset: float = 0.0) -> None:
        super().__init__()
        self.error, self.offset = error, offset

    def _backward(self, grad_output: Tensor, output: Tensor) -> Tensor:
        return super()._backward(grad_output, output) * (1 + self.error) + self.offset


@pytest.mark.parametrize(
    ("module", "atol", "rtol", "passes"),
    [
        (ScaledTanh(error=5e-4), 0.0, 1e-3, True),
        (ScaledTanh(error=2e-3), 0.0, 1e-3, False),
        (ScaledTanh(offset=5e-6), 1e-5, 0.0, True),
        (ScaledTanh(offset=2e-5), 1e-5, 0.0, False),
        (ScaledTanh(error=2.0), 0.0, 1.5, False),
    ],
    ids=[
        "relative-within",
        "relative-beyond",
        "absolute-within",
        "absolute-beyond",
        "relative-to-numeric",
    ],
)
def test_gradcheck_tolerance_is_atol_plus_rtol_times_numeric(
    module: nn.Module, atol: float, rtol: float, passes: bool
) -> None:
    """An element passes when ``|analytic - numeric| <= atol + rtol * |numeric|``: each of the
    two terms on its own lets an error below it pass and catches one above it; the relative
    one is of the numeric value (an analytic 3 times it is 2 times it off: beyond 1.5, though
    within 1.5 times the analytic)."""
    result = minidl.gradcheck(module, _input(), atol=atol, rtol=rtol, raise_exception=False)
    assert result is passes


@pytest.mark.parametrize(("error", "offset", "passes"), [(8e-4, 8e-6, True), (2e-3, 2e-5, False)])
def test_gradcheck_tolerance_sums_its_two_terms(error: float, offset: float, passes: bool) -> None:
    """The two terms are summed, not the larger taken: an error of 8e-4 |n| + 8e-6 passes
    atol 1e-5 and rtol 1e-3 everywhere, though above the larger term where |n| lies between
    2.5e-3 and 0.04, as one numeric derivative does here (a test-suite audit's mutant, max for
    sum, passed every case of the test above); one of 2e-3 |n| + 2e-5 fails."""
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0)) * 2
    module = ScaledTanh(error=error, offset=offset)
    assert minidl.gradcheck(module, x, atol=1e-5, rtol=1e-3, raise_exception=False) is passes


@pytest.mark.parametrize("scale", [1e5, 3e5])
@pytest.mark.parametrize("name", ["identity", "leaky", "linear"])
def test_correct_modules_pass_at_large_magnitudes(name: str, scale: float) -> None:
    """The outputs were summed under the projection before the difference of the two sides
    was taken, and that sum's rounding, divided by 2 eps, was beyond the tolerance for outputs
    of 1e5 and more: correct modules failed, the message blaming their backward (Identity 3 of
    10 seeds at 1e5, 9 of 10 at 3e5). The differences are taken element by element, and over
    the step eps actually takes there."""
    module: nn.Module = {
        "identity": nn.Identity,
        "leaky": lambda: nn.LeakyReLU(0.2),
        "linear": lambda: nn.Linear(5, 4, dtype=F64, generator=torch.Generator().manual_seed(0)),
    }[name]()
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(8, 5, dtype=F64, generator=generator) * scale
        assert minidl.gradcheck(module, x), (name, scale, seed)


def test_an_eps_below_the_values_resolution_is_named_so() -> None:
    """eps 1e-300 at a value of 3e5 leaves it as it is: the numeric derivative was 0 and the
    module's backward was blamed."""
    x = torch.full((2, 3), 3e5, dtype=F64)
    with pytest.raises(ValueError) as error:
        minidl.gradcheck(nn.Identity(), x, eps=1e-300)
    assert str(error.value) == (
        "gradcheck: eps 1e-300 is below the resolution of input[0, 0] = 300000 (300000 + eps "
        "rounds back to it): give a larger eps, or check at values of smaller magnitude"
    )


class _LazyDerivative(nn.Module):
    """y = x ** 3, whose backward computes 3 x ** 2 at its first call and keeps it."""

    def forward(self, input: Tensor) -> Tensor:
        self.input = input
        return input**3

    def backward(self, grad_output: Tensor) -> Tensor:
        if not hasattr(self, "derivative"):
            self.derivative = 3 * self.input**2
        return grad_output * self.derivative


class _StaleWeightLinear(nn.Linear):
    """A Linear whose backward copies its weight at its first call and uses that copy after."""

    def backward(self, grad_output: Tensor) -> Tensor:
        if not hasattr(self, "kept"):
            self.kept = self.weight.data.clone()
        super().backward(grad_output)
        return grad_output.mm(self.kept)


@pytest.mark.parametrize("module", [_LazyDerivative, _StaleWeightLinear])
def test_a_backward_that_keeps_what_its_first_call_computed_fails(module: type) -> None:
    """Every backward gradcheck ran followed a forward on the same input with the same
    parameters, so one that kept a derivative or a copy of the weights from its first call
    passed, though wrong at every later call. A forward and backward on another input, with
    other parameters, comes first now."""
    built = module() if module is _LazyDerivative else module(3, 3, dtype=F64)
    assert not minidl.gradcheck(built, _input(), raise_exception=False)


@pytest.mark.parametrize("name", ["linear", "tanh", "sequential"])
def test_gradcheck_takes_a_transposed_input(name: str) -> None:
    """A non-contiguous input is perturbed element by element in its own layout: correct modules
    pass, and a wrong backward is still caught at its first element."""
    x = _input().T.contiguous().T
    assert not x.is_contiguous()
    assert minidl.gradcheck(MODULES[name](), x)
    with pytest.raises(minidl.GradcheckError, match=r"at input\[0, 0\]:"):
        minidl.gradcheck(WrongTanh(), x)


def test_gradcheck_reports_the_first_element_that_disagrees() -> None:
    """Every element of WrongTanh's gradient is wrong: the message names the first, [0, 0]."""
    with pytest.raises(minidl.GradcheckError, match=r"WrongTanh\.backward .* at input\[0, 0\]:"):
        minidl.gradcheck(WrongTanh(), _input())


def test_gradcheck_seed_chooses_the_projection() -> None:
    """The projection u comes from ``seed``: the same seed reports the same analytic and
    numeric values, another seed other ones."""

    def message(seed: int) -> str:
        with pytest.raises(minidl.GradcheckError) as info:
            minidl.gradcheck(WrongTanh(), x, seed=seed)
        return str(info.value)

    x = _input()
    assert message(1) == message(1)
    assert message(1) != message(2)


def test_gradcheck_restores_values_and_grads() -> None:
    model = nn.mlp((3, 4, 2), dtype=F64)
    for parameter in model.parameters():
        parameter.grad.normal_()
    values = [p.data.clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    x = _input()
    x_before = x.clone()
    minidl.gradcheck(model, x)
    assert torch.equal(x, x_before)
    for parameter, value, grad in zip(model.parameters(), values, grads, strict=True):
        assert torch.equal(parameter.data, value)
        assert torch.equal(parameter.grad, grad)


def test_gradcheck_refuses_float32() -> None:
    with pytest.raises(TypeError, match="gradcheck: use float64"):
        minidl.gradcheck(nn.Tanh(), torch.randn(2, 2))
    with pytest.raises(ValueError, match="gradcheck: give at least one input"):
        minidl.gradcheck(nn.Tanh())
    with pytest.raises(TypeError, match="gradcheck: the first input must be a floating-point"):
        minidl.gradcheck(nn.Tanh(), torch.ones(2, 2, dtype=torch.int64))
    with pytest.raises(
        TypeError, match="gradcheck: the first input must be a floating-point tensor, got list"
    ):
        minidl.gradcheck(nn.Tanh(), [[1.0, 2.0]])  # type: ignore[arg-type]
    # As torch.autograd.gradcheck takes them: a tuple of inputs.
    x = torch.randn(2, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"gradcheck: got the inputs as a tuple; pass them as arg"):
        minidl.gradcheck(nn.Tanh(), (x,))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="gradcheck: expected a minidl Module, got Tanh"):
        minidl.gradcheck(torch.nn.Tanh(), torch.randn(2, 2, dtype=F64))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("setting", "kind", "message"),
    [
        ({"eps": 0}, ValueError, r"eps must be in \(0, inf\), got 0$"),
        ({"eps": -1e-6}, ValueError, r"eps must be in \(0, inf\), got -1e-06$"),
        ({"eps": float("nan")}, ValueError, r"eps must be a finite number in \(0, inf\), got nan"),
        (
            {"eps": "a"},
            TypeError,
            r"eps must be a finite number in \(0, inf\) \(a float or an int\), got str 'a'$",
        ),
        (
            {"eps": True},
            TypeError,
            r"eps must be a finite number in \(0, inf\) \(a float or an int\), got bool True$",
        ),
        ({"atol": -1.0}, ValueError, r"atol must be in \[0, inf\), got -1\.0$"),
        (
            {"rtol": float("inf")},
            ValueError,
            r"rtol must be a finite number in \[0, inf\), got inf",
        ),
        ({"seed": "a"}, TypeError, r"seed must be an int, got 'a'$"),
        ({"seed": 1.0}, TypeError, r"seed must be an int, got 1\.0$"),
        ({"seed": True}, TypeError, r"seed must be an int, got True$"),
        (
            {"seed": 2**64},
            ValueError,
            r"seed must be in \[-2\*\*63, 2\*\*64 - 1\] .*got 18446744073709551616$",
        ),
        ({"raise_exception": "no"}, TypeError, r"raise_exception must be a bool, got 'no'$"),
    ],
    ids=[
        "eps-0",
        "eps-negative",
        "eps-nan",
        "eps-str",
        "eps-bool",
        "atol-negative",
        "rtol-inf",
        "seed-str",
        "seed-float",
        "seed-bool",
        "seed-too-large",
        "raise-exception-str",
    ],
)
def test_gradcheck_refuses_bad_settings_before_running(
    setting: dict[str, object], kind: type[Exception], message: str
) -> None:
    """eps=0 used to raise ZeroDivisionError, eps="a" a TypeError from '+' and seed="a" torch's
    RuntimeError, each without gradcheck's name (and after the module had run)."""
    calls = []

    class Counted(nn.Tanh):
        def forward(self, input: Tensor) -> Tensor:
            calls.append(1)
            return super().forward(input)

    with pytest.raises(kind, match="^gradcheck: " + message):
        minidl.gradcheck(Counted(), _input(), **setting)  # type: ignore[arg-type]
    assert calls == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["input", "weight", "bias"])
def test_gradcheck_refuses_a_non_finite_input_or_parameter_before_running(
    where: str, value: float
) -> None:
    """Finite differences through a NaN or infinity are NaN: gradcheck blamed the module's
    gradient (GradcheckError, or False without raise_exception). The value is named, with its
    index, before the module runs, whatever raise_exception says."""
    calls = []

    class Counted(nn.Linear):
        def forward(self, input: Tensor) -> Tensor:
            calls.append(1)
            return super().forward(input)

    layer = Counted(3, 2, dtype=F64)
    x = _input()
    if where == "input":
        x[1, 2] = value
        index, what = "(1, 2)", "the first input"
    else:
        getattr(layer, where).data.view(-1)[1] = value
        index = "(0, 1)" if where == "weight" else "(1,)"
        what = f"parameter '{where}'"
    before = [p.grad.clone() for p in layer.parameters()]
    for raise_exception in (True, False):
        with pytest.raises(
            ValueError,
            match=rf"^gradcheck: {what} has a non-finite value \({value} at index "
            + re.escape(index)
            + r"\); finite differences need finite values$",
        ):
            minidl.gradcheck(layer, x, raise_exception=raise_exception)
    assert calls == []
    assert all(torch.equal(p.grad, old) for p, old in zip(layer.parameters(), before, strict=True))


class FailsAtCall(nn.Linear):
    """A Linear whose forward raises at its ``fail_at``-th call (counted from 1)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__(3, 2, dtype=F64)
        self.calls, self.fail_at = 0, fail_at

    def forward(self, input: Tensor) -> Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("forward failed")
        return super().forward(input)


@pytest.mark.parametrize("fail_at", [1, 2, 29, 30, 40])
def test_gradcheck_restores_the_parameters_when_the_module_raises(fail_at: int) -> None:
    """Calls 1 and 2 are the plain forwards, 3 to 26 perturb the input's 12 elements (+eps,
    then -eps), 27 to 38 the weight's 6, 39 to 42 the bias's 2: a failure at call 29, 30 or 40
    used to leave ``weight[0, 1]`` or ``bias[0]`` shifted by +eps or -eps."""
    module = FailsAtCall(fail_at)
    for parameter in module.parameters():
        parameter.grad.normal_()
    values = [p.data.clone() for p in module.parameters()]
    grads = [p.grad.clone() for p in module.parameters()]
    with pytest.raises(RuntimeError, match="forward failed"):
        minidl.gradcheck(module, _input())
    assert module.calls == fail_at
    for parameter, value, grad in zip(module.parameters(), values, grads, strict=True):
        assert torch.equal(parameter.data, value)
        assert torch.equal(parameter.grad, grad)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradcheck_restores_a_batch_norms_running_statistics(training: bool) -> None:
    """Every forward of a batch norm in training mode updates its running statistics and its
    batch count: gradcheck runs hundreds, and used to leave them changed."""
    norm = nn.BatchNorm1d(3, momentum=0.3, dtype=F64).train(training)
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.5, 2.0)
    norm.num_batches_tracked.fill_(7)
    before = {name: buffer.clone() for name, buffer in norm.named_buffers()}
    assert minidl.gradcheck(norm, _input())
    for name, buffer in norm.named_buffers():
        assert torch.equal(buffer, before[name]), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_a_refused_dtype_is_named_as_given(dtype: torch.dtype) -> None:
    """The refusal of a 16-bit input, or of 16-bit parameters, said that float32 finite
    differences were too coarse: it names the dtype given."""
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(
        TypeError, match=rf"\(got torch\.{name}\); {name} finite differences are too coarse"
    ):
        minidl.gradcheck(nn.Tanh(), torch.randn(2, 2).to(dtype))
    with pytest.raises(
        TypeError,
        match=rf"is torch\.{name}: call \.to\(torch\.float64\) on the module\); {name} finite",
    ):
        minidl.gradcheck(nn.Linear(3, 2, dtype=dtype), torch.randn(4, 3, dtype=torch.float64))


def test_float32_parameters_are_refused_by_name() -> None:
    """A float64 input with float32 parameters was checked, and a correct backward failed (the
    parameters nudged by 1e-6 in float32)."""
    layer = nn.Linear(3, 2)
    before = [p.data.clone() for p in layer.parameters()]
    with pytest.raises(
        TypeError, match=r"parameter 'weight' is torch\.float32: call \.to\(torch\.float64\)"
    ):
        minidl.gradcheck(layer, torch.randn(4, 3, dtype=torch.float64))
    assert all(torch.equal(p.data, b) for p, b in zip(layer.parameters(), before, strict=True))


def test_a_stacked_loss_is_refused_with_what_to_check_instead() -> None:
    prediction = torch.randn(2, 4, 3, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 4))
    with pytest.raises(
        ValueError,
        match=r"one loss per stacked model \(shape \(2,\)\).*gradcheck\(loss, prediction\[r\], target\[r\]\)",
    ):
        minidl.gradcheck(nn.CrossEntropyLoss(), prediction, target)
    assert minidl.gradcheck(nn.CrossEntropyLoss(), prediction[1], target[1])
    # A StackedLoss refuses a prediction of one model: the hint names its run's loss (it said
    # gradcheck(loss, ...), which the StackedLoss then refused).
    stacked = nn.StackedLoss([(nn.CrossEntropyLoss(), 1), (nn.CrossEntropyLoss(), 1)])
    with pytest.raises(
        ValueError,
        match=r"check one model's loss: gradcheck\(the loss of model r's run, prediction\[r\], "
        r"target\[r\]\)$",
    ):
        minidl.gradcheck(stacked, prediction, target)


class SquaredErrorOfShapeOne(nn.Loss):
    """A loss of one's own that returns its sum as a tensor of shape ``(1,)``, not 0-dim."""

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        self._difference = prediction - target
        return (self._difference**2).sum().reshape(1)

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        return 2 * self._difference * (1.0 if grad_output is None else grad_output)


@pytest.mark.parametrize("shape", [(3, 2), (1, 2), (2, 3, 2)], ids=["2-dim", "one-row", "3-dim"])
def test_a_loss_of_ones_own_that_is_not_a_scalar_is_not_called_stacked(
    shape: tuple[int, ...],
) -> None:
    """It was refused as "one loss per stacked model", which it is not."""
    prediction, target = torch.randn(shape, dtype=F64), torch.randn(shape, dtype=F64)
    with pytest.raises(
        ValueError,
        match=r"^gradcheck: SquaredErrorOfShapeOne returned a loss of shape \(1,\), expected one "
        r"number \(a 0-dim tensor\): a loss's backward takes a scalar upstream gradient$",
    ):
        minidl.gradcheck(SquaredErrorOfShapeOne(), prediction, target)


class _Scale(nn.Module):
    """y = x * w, w set as a plain attribute (not registered), with a wrong weight gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(2, dtype=torch.float64))
        self._x = torch.zeros(0)

    def forward(self, input: Tensor) -> Tensor:
        self._x = input
        return input * self.w.data

    def backward(self, grad_output: Tensor) -> Tensor:
        self.w.grad.add_(grad_output.sum(0))  # wrong: misses the factor x
        return grad_output * self.w.data


def test_an_unregistered_parameter_is_refused_rather_than_left_unchecked() -> None:
    x = torch.randn(3, 2, dtype=torch.float64)
    for module, path in ((_Scale(), "'w'"), (nn.Sequential.__new__(nn.Sequential), None)):
        if path is None:  # the same inside a container built without Sequential's own check
            module._chain((nn.Linear(2, 2, dtype=torch.float64), _Scale()))
            path = "'1.w'"
        with pytest.raises(
            ValueError,
            match=rf"gradcheck: the Parameter in attribute {path} is not registered, .*"
            r"self\.w = self\.register_parameter\('w', Parameter\(\.\.\.\)\)",
        ):
            minidl.gradcheck(module, x)


def test_an_input_that_requires_grad_is_checked_as_a_value_without_warnings() -> None:
    # As torch.autograd.gradcheck's inputs are made: requires_grad=True.
    model = nn.Sequential(nn.Linear(3, 2, dtype=torch.float64), nn.Tanh())
    x = torch.randn(4, 3, dtype=torch.float64).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert minidl.gradcheck(model, x)
    assert x.grad is None


# -- what gradcheck used to let pass ---------------------------------------------------------------


class NanTanh(nn.Tanh):
    """A tanh whose input gradient is NaN at one element."""

    def _backward(self, grad_output: Tensor, output: Tensor) -> Tensor:
        grad = super()._backward(grad_output, output).clone()
        grad[1, 2] = float("nan")
        return grad


class NanBiasLinear(nn.Linear):
    """A Linear whose backward accumulates NaN into the bias gradient."""

    def backward(self, grad_output: Tensor) -> Tensor:
        grad_input = super().backward(grad_output)
        assert self.bias is not None
        self.bias.grad[0] += float("nan")
        return grad_input


class NanOnSecondBackwardLinear(nn.Linear):
    """Right gradients, but every third backward writes NaN into the weight gradient (the third
    of each gradcheck's: after the one on another input and the checked one, the one that checks
    that a backward accumulates)."""

    def __init__(self) -> None:
        super().__init__(3, 2, dtype=F64)
        self.calls = 0

    def backward(self, grad_output: Tensor) -> Tensor:
        self.calls += 1
        grad_input = super().backward(grad_output)
        if self.calls % 3 == 0:
            self.weight.grad.fill_(float("nan"))
        return grad_input


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (NanTanh(), r"NanTanh\.backward disagrees .* at input\[1, 2\]: analytic nan,"),
        (
            NanBiasLinear(3, 2, dtype=F64),
            r"NanBiasLinear\.backward disagrees .* at bias\[0\]: analytic nan,",
        ),
        (
            NanOnSecondBackwardLinear(),
            r"NanOnSecondBackwardLinear\.backward does not accumulate into the gradient of "
            r"'weight': after a second backward, weight\.grad\[0, 0\] is nan",
        ),
    ],
    ids=["input", "parameter", "second-backward"],
)
def test_a_nan_gradient_fails(module: nn.Module, message: str) -> None:
    """``error > tol`` is False for NaN: a NaN gradient used to pass (PyTorch's autograd
    gradcheck counts NaN as not close)."""
    grads = [p.grad.clone() for p in module.parameters()]
    with pytest.raises(minidl.GradcheckError, match="^gradcheck: " + message):
        minidl.gradcheck(module, _input())
    assert minidl.gradcheck(module, _input(), raise_exception=False) is False
    for parameter, grad in zip(module.parameters(), grads, strict=True):
        assert torch.equal(parameter.grad, grad)


class RowSum(nn.Module):
    """y = x.sum(1, keepdim=True), whose backward returns what ``returns`` makes of g."""

    def __init__(self, returns: Callable[[Tensor, torch.Size], object]) -> None:
        super().__init__()
        self.returns = returns
        self._shape = torch.Size()

    def forward(self, input: Tensor) -> Tensor:
        self._shape = input.shape
        return input.sum(1, keepdim=True)

    def backward(self, grad_output: Tensor) -> object:
        return self.returns(grad_output, self._shape)


@pytest.mark.parametrize(
    ("returns", "got"),
    [
        (lambda g, shape: g, r"an input gradient of shape \(3, 1\), torch\.float64, on cpu;"),
        (lambda g, shape: None, r"None,"),
        (lambda g, shape: g.expand(shape).tolist(), r"a list,"),
        (
            lambda g, shape: g.expand(shape).float(),
            r"an input gradient of shape \(3, 4\), torch\.float32, on cpu;",
        ),
    ],
    ids=["broadcastable", "none", "list", "float32"],
)
def test_an_input_gradient_unlike_the_input_is_refused(
    returns: Callable[[Tensor, torch.Size], object], got: str
) -> None:
    """A (3, 1) gradient for a (3, 4) input was broadcast against the numeric one and passed;
    None raised a bare AttributeError."""
    x = torch.randn(3, 4, dtype=F64)
    with pytest.raises(
        minidl.GradcheckError,
        match=rf"^gradcheck: RowSum\.backward returned {got} expected .*"
        r"a tensor of the input's shape \(3, 4\), torch\.float64, on cpu$",
    ):
        minidl.gradcheck(RowSum(returns), x)
    assert minidl.gradcheck(RowSum(returns), x, raise_exception=False) is False
    assert minidl.gradcheck(RowSum(lambda g, shape: g.expand(shape)), x)


def test_a_backward_returning_none_leaves_the_gradients_as_they_were() -> None:
    class NoneLinear(nn.Linear):
        def backward(self, grad_output: Tensor) -> None:  # type: ignore[override]
            self.backward_parameters(grad_output)

    module = NoneLinear(3, 2, dtype=F64)
    for parameter in module.parameters():
        parameter.grad.normal_()
    grads = [p.grad.clone() for p in module.parameters()]
    with pytest.raises(minidl.GradcheckError, match=r"NoneLinear\.backward returned None"):
        minidl.gradcheck(module, _input())
    for parameter, grad in zip(module.parameters(), grads, strict=True):
        assert torch.equal(parameter.grad, grad)


class RightBackwardLinear(nn.Linear):
    """A Linear whose backward is written out (right), for subclasses that get
    backward_parameters wrong."""

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None and self.bias is not None
        self.weight.grad.addmm_(grad_output.t(), self._input)
        self.bias.grad.add_(grad_output.sum(0))
        return grad_output.mm(self.weight.data)


class MeanBiasParametersLinear(RightBackwardLinear):
    """A right backward, and a backward_parameters (what fit runs for a first layer) whose
    bias gradient is the mean of ``grad_output`` over the batch rather than its sum."""

    def backward_parameters(self, grad_output: Tensor) -> None:
        assert self._input is not None and self.bias is not None
        self.weight.grad.addmm_(grad_output.t(), self._input)
        self.bias.grad.add_(grad_output.mean(0))


@pytest.mark.parametrize("inside", [False, True], ids=["alone", "first-in-sequential"])
def test_a_wrong_backward_parameters_fails(inside: bool) -> None:
    """gradcheck checked backward only: a wrong backward_parameters passed."""
    layer = MeanBiasParametersLinear(3, 2, dtype=F64)
    module: nn.Module = nn.Sequential(layer, nn.Tanh()) if inside else layer
    where, name = ("Sequential", r"0\.bias") if inside else ("MeanBiasParametersLinear", "bias")
    with pytest.raises(
        minidl.GradcheckError,
        match=rf"^gradcheck: {where}\.backward_parameters disagrees with finite differences "
        rf"at {name}\[0\]: analytic",
    ):
        minidl.gradcheck(module, _input())
    assert minidl.gradcheck(module, _input(), raise_exception=False) is False


@pytest.mark.parametrize("own_generator", [False, True], ids=["global", "own-generator"])
def test_a_dropout_of_one_element_is_always_reported(own_generator: bool) -> None:
    """Two forwards of a dropout of one element draw the same mask half the time, and
    gradcheck used to pass it then (3 times in 10)."""
    for seed in range(20):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed) if own_generator else None
        dropout = nn.Dropout(0.5, generator=generator)
        x = torch.randn(1, 1, dtype=F64)
        with pytest.raises(minidl.GradcheckError, match=r"Dropout\.forward is not deterministic"):
            minidl.gradcheck(dropout, x)
        assert minidl.gradcheck(dropout.eval(), x)


@pytest.mark.parametrize("raise_exception", [True, False])
@pytest.mark.parametrize("own_generator", [False, True], ids=["global", "own-generator"])
def test_a_module_that_draws_leaves_the_generators_as_they_were(
    own_generator: bool, raise_exception: bool
) -> None:
    """gradcheck's forwards of a dropout in training mode drew from its generator (torch's, or
    its own): reported as not deterministic, the generator was left advanced, where gradcheck
    restores the parameters, gradients and buffers. Its state is restored too now."""
    generator = torch.Generator().manual_seed(3) if own_generator else None
    model = nn.Sequential(nn.Linear(3, 3, dtype=F64), nn.Dropout(0.5, generator=generator))
    x = torch.randn(4, 3, dtype=F64)
    drawn = generator if generator is not None else torch.default_generator
    state = drawn.get_state()
    if raise_exception:
        with pytest.raises(minidl.GradcheckError, match=r"forward is not deterministic"):
            minidl.gradcheck(model, x)
    else:
        assert minidl.gradcheck(model, x, raise_exception=False) is False
    assert torch.equal(drawn.get_state(), state)


def test_a_forward_that_makes_its_generator_is_reported_as_random() -> None:
    """A module that makes a generator in gradcheck's second forward on the input (its fourth:
    the first and the third are on another input) changed the number of generators between
    gradcheck's two forwards on the input: the comparison of their states raised a
    ValueError."""

    class LazyNoise(nn.Module):
        calls = 0

        def forward(self, input: Tensor) -> Tensor:
            self.calls += 1
            if self.calls == 4:
                self.generator = torch.Generator().manual_seed(0)
            return input * 1.0

        def backward(self, grad_output: Tensor) -> Tensor:
            return grad_output

    with pytest.raises(
        minidl.GradcheckError, match=r"LazyNoise\.forward is not deterministic: a call"
    ):
        minidl.gradcheck(LazyNoise(), torch.randn(2, 3, dtype=torch.float64))


class OverwritingParametersLinear(RightBackwardLinear):
    """A right backward, and a backward_parameters whose gradients are right but overwrite
    ``grad`` rather than add to it (a second call, as in gradient accumulation, loses the
    first)."""

    def backward_parameters(self, grad_output: Tensor) -> None:
        assert self._input is not None and self.bias is not None
        self.weight.grad.copy_(grad_output.t().mm(self._input))
        self.bias.grad.copy_(grad_output.sum(0))


@pytest.mark.parametrize("inside", [False, True], ids=["alone", "first-in-sequential"])
def test_a_backward_parameters_that_overwrites_fails(inside: bool) -> None:
    """gradcheck checked that backward accumulates, and compared backward_parameters' values
    alone: one that overwrote the gradients passed."""
    layer = OverwritingParametersLinear(3, 2, dtype=F64)
    module: nn.Module = nn.Sequential(layer, nn.Tanh()) if inside else layer
    where, name = (
        ("Sequential", "0.weight") if inside else ("OverwritingParametersLinear", "weight")
    )
    grads = [parameter.grad.normal_().clone() for parameter in module.parameters()]
    with pytest.raises(
        minidl.GradcheckError,
        match=rf"^gradcheck: {where}\.backward_parameters does not accumulate into the gradient "
        rf"of '{re.escape(name)}': after a second backward_parameters, ",
    ):
        minidl.gradcheck(module, _input())
    assert minidl.gradcheck(module, _input(), raise_exception=False) is False
    for parameter, grad in zip(module.parameters(), grads, strict=True):
        assert torch.equal(parameter.grad, grad)
    # (the same layer with backward_parameters accumulating passes)
    assert minidl.gradcheck(nn.Linear(3, 2, dtype=F64), _input())


class Pair(nn.Module):
    """The identity, returning its output twice (a tuple), or as the signs of the input."""

    def __init__(self, signs: bool = False) -> None:
        super().__init__()
        self.signs = signs

    def forward(self, input: Tensor) -> Any:
        return (input > 0).long() if self.signs else (input, input)

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


@pytest.mark.parametrize(
    ("signs", "got"), [(False, "tuple"), (True, "a tensor of torch.int64")], ids=["tuple", "int"]
)
def test_a_forward_that_returns_no_floating_point_tensor_is_named(signs: bool, got: str) -> None:
    """It failed with an AttributeError ('tuple' object has no attribute 'clone') or torch's
    NotImplementedError of the projection's random draw ("normal_kernel_cpu" for 'Long')."""
    with pytest.raises(
        TypeError,
        match=rf"^gradcheck: Pair\.forward returned {got}, expected a floating-point tensor",
    ):
        minidl.gradcheck(Pair(signs), _input())


class _DoubleInPlace(nn.Module):
    """y = 2 x, written over the input (as PyTorch's in-place modules do); ``factor`` is the
    derivative its backward applies (2 when right)."""

    def __init__(self, factor: float = 2.0) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, input: Tensor) -> Tensor:
        return input.mul_(2)

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output * self.factor


def test_a_module_that_works_in_place_on_its_input_is_checked_as_its_function() -> None:
    """Each forward had gradcheck's own input, which a module that doubles its input in place
    doubled again at every call: a right module was refused as "not deterministic". Each
    forward now gets a copy: the right module passes, the caller's input is left alone, a
    wrong derivative is caught, and so is a network where the module overwrites what the
    Tanh before it cached for its backward."""
    x = _input()
    given = x.clone()
    assert minidl.gradcheck(_DoubleInPlace(), x)
    assert torch.equal(x, given)
    with pytest.raises(
        minidl.GradcheckError, match=r"^gradcheck: _DoubleInPlace\.backward disagrees"
    ):
        minidl.gradcheck(_DoubleInPlace(factor=3.0), x)
    model = nn.Sequential(
        nn.Linear(3, 3, dtype=F64), _DoubleInPlace(), nn.Tanh(), nn.Linear(3, 2, dtype=F64)
    )
    assert minidl.gradcheck(model, x)
    overwritten = nn.Sequential(nn.Linear(3, 3, dtype=F64), nn.Tanh(), _DoubleInPlace())
    with pytest.raises(minidl.GradcheckError, match=r"^gradcheck: Sequential\.backward disagrees"):
        minidl.gradcheck(overwritten, x)


class _ScaledLinear(nn.Linear):
    """A Linear of twice the output, whose backward alone is written for it: it inherits
    Linear's backward_parameters, of the unscaled layer, which fit and the containers do not
    call for it (they call backward: see Module._skips_own_backward)."""

    def __init__(self, factor: float = 2.0) -> None:
        super().__init__(3, 2, dtype=F64)
        self.factor = factor

    def forward(self, input: Tensor) -> Tensor:
        return 2.0 * super().forward(input)

    def backward(self, grad_output: Tensor) -> Tensor:
        return super().backward(self.factor * grad_output)


def test_a_subclass_that_overrides_backward_alone_has_its_backward_checked() -> None:
    """Such a layer alone was refused ("_ScaledLinear.backward_parameters disagrees", the
    inherited one, off by the factor 2), where the same layer first in a Sequential or as a
    Residual's block passed, as fit and the containers run its backward: it passes alone too,
    gradcheck leaves its gradients as they were, and a wrong backward of it is still caught,
    alone and in a Sequential."""
    x = _input()
    layer = _ScaledLinear()
    grads = [parameter.grad.normal_().clone() for parameter in layer.parameters()]
    assert minidl.gradcheck(layer, x)
    for parameter, grad in zip(layer.parameters(), grads, strict=True):
        assert torch.equal(parameter.grad, grad)
    assert minidl.gradcheck(nn.Sequential(_ScaledLinear(), nn.Tanh()), x)
    assert minidl.gradcheck(
        nn.Residual(nn.Sequential(_ScaledLinear(), nn.Linear(2, 3, dtype=F64))), x
    )
    with pytest.raises(
        minidl.GradcheckError, match=r"^gradcheck: _ScaledLinear\.backward disagrees"
    ):
        minidl.gradcheck(_ScaledLinear(factor=3.0), x)
    with pytest.raises(minidl.GradcheckError, match=r"^gradcheck: Sequential\.backward disagrees"):
        minidl.gradcheck(nn.Sequential(_ScaledLinear(factor=3.0), nn.Tanh()), x)


# -- what a student's backward got past gradcheck ---------------------------------------------------


@pytest.mark.parametrize("seed", [0, 7])
def test_a_transposed_weight_gradient_is_caught_on_an_input_drawn_with_the_same_seed(
    seed: int,
) -> None:
    """The projection u was ``torch.randn`` of the output's shape from a generator seeded with
    ``seed``: a square layer's input drawn the same way (the tutorial's
    ``torch.Generator().manual_seed(0)``, or ``torch.manual_seed(0)``) was u itself, so the
    weight gradient u^T x was symmetric and a transposed one passed."""
    torch.manual_seed(seed)
    drawn = torch.randn(3, 3, dtype=F64)
    for x in (drawn, torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(seed))):
        with pytest.raises(
            minidl.GradcheckError,
            match=r"^gradcheck: TransposedWeightGradLinear\.backward disagrees with finite "
            r"differences at weight\[",
        ):
            minidl.gradcheck(TransposedWeightGradLinear(3, 3, dtype=F64), x, seed=seed)
        assert minidl.gradcheck(nn.Linear(3, 3, dtype=F64), x, seed=seed)


class _Square(nn.Module):
    """y = x ** 2 (derivative 2 x), with a student's ``mistake`` in its backward: writing over
    its upstream gradient (or transposing it in place) or over its cached input, a count of
    calls that the gradient reads, random numbers drawn, or from its third call on (gradcheck's
    second on the input checked, after one on another input) a gradient of one row, a tuple, or
    its upstream gradient written over."""

    def __init__(self, mistake: str | None = None) -> None:
        super().__init__()
        self.mistake = mistake
        self.calls = 0
        self._input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return input * input

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        self.calls += 1
        if self.mistake == "upstream":
            return grad_output.mul_(2 * self._input)
        if self.mistake == "cache":
            return grad_output * self._input.mul_(2)
        if self.mistake == "count":
            return grad_output * 2 * self._input * self.calls
        if self.mistake == "random":
            return grad_output * 2 * self._input * (1 + 1e-3 * torch.rand_like(grad_output))
        if self.mistake == "transpose":
            grad_output.t_()
            return grad_output.t() * 2 * self._input
        if self.mistake == "second-shape" and self.calls > 2:
            return (grad_output * 2 * self._input)[:1]
        if self.mistake == "second-tuple" and self.calls > 2:
            return (grad_output * 2 * self._input,)  # type: ignore[return-value]
        if self.mistake == "second-writes" and self.calls > 2:
            return grad_output.mul_(2 * self._input)
        return grad_output * 2 * self._input


class _NoisyLinear(nn.Linear):
    """A Linear whose backward scales its upstream gradient by random numbers near 1."""

    def backward(self, grad_output: Tensor) -> Tensor:
        return super().backward(grad_output * (1 + 1e-3 * torch.rand_like(grad_output)))


class _UpstreamWritingParametersLinear(RightBackwardLinear):
    """A right backward, and a backward_parameters whose gradients are right but that zeroes
    its upstream gradient once it has used it."""

    def backward_parameters(self, grad_output: Tensor) -> None:
        assert self._input is not None and self.bias is not None
        self.weight.grad.addmm_(grad_output.t(), self._input)
        self.bias.grad.add_(grad_output.sum(0))
        grad_output.zero_()


DETERMINISTIC = "is not deterministic: a second forward and backward on the same input and upstream"


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (
            _Square("upstream"),
            r"_Square\.backward changed its argument \(the upstream gradient\) in place \(at "
            r"\[0, 0\]: ",
        ),
        (
            _Square("cache"),
            r"_Square\.backward changed the input of its forward in place \(at \[0, 0\]: ",
        ),
        (_Square("count"), rf"_Square\.backward {DETERMINISTIC} gradient returned input\[0, 0\] "),
        (_Square("random"), rf"_Square\.backward {DETERMINISTIC} gradient returned input\[0, 0\] "),
        (_NoisyLinear(3, 2, dtype=F64), rf"_NoisyLinear\.backward {DETERMINISTIC}"),
        (
            _UpstreamWritingParametersLinear(3, 2, dtype=F64),
            r"_UpstreamWritingParametersLinear\.backward_parameters changed its argument \(the "
            r"upstream gradient\) in place \(at \[0, 0\]: ",
        ),
    ],
    ids=[
        "upstream-written-over",
        "cache-written-over",
        "count-of-calls",
        "random",
        "noisy-linear",
        "parameters-upstream-written-over",
    ],
)
def test_a_backward_that_is_no_function_of_its_forward_and_upstream_gradient_is_named(
    module: nn.Module, message: str
) -> None:
    """Each of these student's mistakes passed gradcheck, or was reported as another: a
    backward writing over its upstream gradient (in a network, what the module after it
    returned) as a disagreement with finite differences (which then used the gradient
    written); one writing over its cached input (in a network, what a Tanh before it caches)
    and one right only at its first call passed; a random one was reported as disagreeing,
    or as one that "does not accumulate" where it has parameters; a backward_parameters
    writing over its upstream gradient as a disagreement, finite differences then projecting
    on zeros. The right module passes."""
    with pytest.raises(minidl.GradcheckError, match="^gradcheck: " + message):
        minidl.gradcheck(module, _input())
    assert minidl.gradcheck(_Square(), _input())


class _FirstInputLinear(nn.Linear):
    """A Linear that caches its input at its first forward only (a student's lazy cache): its
    backward reads that input whatever the later forwards were given."""

    def forward(self, input: Tensor) -> Tensor:
        cached = self._input
        output = super().forward(input)
        if cached is not None:
            self._input = cached
        return output


def test_a_backward_reading_the_input_of_an_earlier_forward_is_caught() -> None:
    """Every forward of gradcheck was on the input given, so a layer that cached its first
    input only computed its gradient from the right one and passed; a forward on another input
    now runs first. A right layer, and a 0-dim input (without rows to reverse), pass."""
    with pytest.raises(
        minidl.GradcheckError,
        match=r"^gradcheck: _FirstInputLinear\.backward disagrees with finite differences at "
        r"weight\[0, 0\]: ",
    ):
        minidl.gradcheck(_FirstInputLinear(3, 2, dtype=F64), _input())
    with pytest.raises(minidl.GradcheckError, match=r"^gradcheck: _FirstInputLinear\.backward "):
        minidl.gradcheck(_FirstInputLinear(3, 2, dtype=F64), _input()[:1])  # (one row: scaled)
    assert minidl.gradcheck(nn.Linear(3, 2, dtype=F64), _input())
    assert minidl.gradcheck(nn.Tanh(), torch.tensor(0.3, dtype=F64))


def test_a_disagreement_at_a_kink_gives_the_one_sided_differences() -> None:
    """A right ReLU at an input within eps of its kink (1e-7) disagrees with the central
    difference, the mean of the slopes 1 and 0.1 on either side of the point, and the message
    said nothing of why; it now gives both one-sided differences and says to check away from
    the kink. A wrong derivative at smooth points says nothing of a kink."""
    with pytest.raises(minidl.GradcheckError) as info:
        minidl.gradcheck(nn.ReLU(), torch.tensor([[1e-7, 1.0, -1.0]], dtype=F64))
    found = re.fullmatch(
        r"gradcheck: ReLU\.backward disagrees with finite differences at input\[0, 0\]: "
        r"analytic (\S+), numeric (\S+) \(one-sided differences (\S+) and (\S+): the function "
        "has a kink within eps of this point, where finite differences take no derivative, "
        r"check at a point away from it\)",
        str(info.value),
    )
    assert found is not None, str(info.value)
    analytic, numeric, ahead, behind = map(float, found.groups())
    assert numeric == pytest.approx(0.55 * analytic, rel=1e-4)
    assert ahead == pytest.approx(analytic, rel=1e-4)
    assert behind == pytest.approx(0.1 * analytic, rel=1e-4)
    with pytest.raises(minidl.GradcheckError) as info:
        minidl.gradcheck(WrongTanh(), _input())
    assert "kink" not in str(info.value)


class _NanInPlace(nn.Module):
    """y = 2 x, which its forward follows by writing NaN over its input (freeing it, say):
    nothing its backward reads."""

    def forward(self, input: Tensor) -> Tensor:
        output = 2 * input
        input.fill_(float("nan"))
        return output

    def backward(self, grad_output: Tensor) -> Tensor:
        return 2 * grad_output


def test_what_a_backward_wrote_over_or_returned_at_a_second_call_is_named_exactly() -> None:
    """The upstream gradient is named with its value before and after the backward wrote over
    it (backward's and backward_parameters'), and with both shapes where it was transposed in
    place; a second backward's gradient of another shape is named as not deterministic; a
    random backward is found at the scale of its gradients (1e-6 here); NaN that a forward
    wrote over its input, and its backward left, is no change."""
    x = _input()
    with pytest.raises(minidl.GradcheckError) as info:
        minidl.gradcheck(_Square("upstream"), x)
    found = re.search(r"in place \(at \[0, 0\]: (\S+), then (\S+)\);", str(info.value))
    assert found is not None, str(info.value)
    before, after = map(float, found.groups())
    assert after == pytest.approx(before * 2 * float(x[0, 0]), rel=1e-4)
    with pytest.raises(minidl.GradcheckError, match=r"in place \(at \[0, 0\]: \S+, then 0\);"):
        minidl.gradcheck(_UpstreamWritingParametersLinear(3, 2, dtype=F64), x)
    with pytest.raises(
        minidl.GradcheckError,
        match=r"^gradcheck: _Square\.backward changed its argument \(the upstream gradient\) in "
        r"place \(its shape from \(4, 3\) to \(3, 4\)\); ",
    ):
        minidl.gradcheck(_Square("transpose"), x)
    with pytest.raises(
        minidl.GradcheckError,
        match=rf"^gradcheck: _Square\.backward {DETERMINISTIC} gradient returned a tensor of "
        r"shape \(1, 3\), where the first returned one of shape \(4, 3\) \(",
    ):
        minidl.gradcheck(_Square("second-shape"), x)
    with pytest.raises(
        minidl.GradcheckError,
        match=rf"^gradcheck: _Square\.backward {DETERMINISTIC} gradient returned a tuple, where",
    ):
        minidl.gradcheck(_Square("second-tuple"), x)
    with pytest.raises(
        minidl.GradcheckError,
        match=r"^gradcheck: _Square\.backward changed its argument \(the upstream gradient\) in "
        r"place \(at \[0, 0\]: ",
    ):
        minidl.gradcheck(_Square("second-writes"), x)
    with pytest.raises(
        minidl.GradcheckError, match=rf"^gradcheck: _Square\.backward {DETERMINISTIC}"
    ):
        minidl.gradcheck(_Square("random"), x * 1e-6)
    assert minidl.gradcheck(_NanInPlace(), x)


class _WrongCube(nn.Module):
    """y = x ** 3 with the derivative taken as 3 x (instead of 3 x ** 2)."""

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return input**3

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output * 3 * self._input


def test_a_kink_is_told_by_the_slopes_relative_difference() -> None:
    """Slopes 1 and 0.8 on either side of a LeakyReLU's kink, 0.2 apart, are a kink; one-sided
    differences of a smooth function 6e-4 apart (eps times the second derivative 600 of x ** 3
    at 100), beyond atol but not beyond rtol times the slopes of 3e4, are none."""
    leaky = torch.tensor([[1e-7, 1.0, -1.0]], dtype=F64)
    with pytest.raises(
        minidl.GradcheckError, match=r"\(one-sided differences .*: the function has a kink"
    ):
        minidl.gradcheck(nn.LeakyReLU(0.8), leaky)
    with pytest.raises(minidl.GradcheckError) as info:
        minidl.gradcheck(_WrongCube(), _input() + 100)
    assert "disagrees" in str(info.value) and "kink" not in str(info.value)


class _WrongSquare(nn.Module):
    """y = 50 x ** 2 with the derivative taken as 50 x (instead of 100 x)."""

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return 50 * input**2

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output * 50 * self._input


def test_a_wrong_gradient_where_the_one_sided_differences_part_is_no_kink() -> None:
    """Near 0, y = 50 x ** 2 has slopes of about 1e-3 and a second derivative of 100: its
    one-sided differences part by 1e-4 (eps times 100), beyond atol and rtol times the slopes,
    as a kink's; the wrong gradient (half the slope) is neither of them, and the message said
    the function had a kink. A kink is told where the analytic gradient is one of them."""
    x = _input() * 1e-5
    with pytest.raises(minidl.GradcheckError) as info:
        minidl.gradcheck(_WrongSquare(), x)
    found = re.fullmatch(
        r"gradcheck: _WrongSquare\.backward disagrees with finite differences at "
        r"input\[0, 0\]: analytic (\S+), numeric (\S+)",
        str(info.value),
    )
    assert found is not None, str(info.value)
    analytic, numeric = map(float, found.groups())
    assert analytic == pytest.approx(0.5 * numeric, rel=1e-4)


class _FirstMaskReLU(nn.Module):
    """A ReLU that keeps the mask of its first input only (a student's lazy cache)."""

    def __init__(self) -> None:
        super().__init__()
        self._mask: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        if self._mask is None:
            self._mask = input > 0
        return input.clamp(min=0)

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._mask is not None
        return grad_output * self._mask


def test_a_mask_kept_from_the_first_forward_is_caught() -> None:
    """The other input's rows are reversed, not only scaled: a scaled input has the input's
    signs, so a ReLU keeping its first mask would pass."""
    with pytest.raises(
        minidl.GradcheckError, match=r"^gradcheck: _FirstMaskReLU\.backward disagrees"
    ):
        minidl.gradcheck(_FirstMaskReLU(), _input())


class _Nested(nn.Module):
    """A layer held in a list inside a list, whose weight gradient backward gets wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = [[nn.Linear(3, 3, dtype=F64)]]

    def forward(self, x: Tensor) -> Tensor:
        output: Tensor = self.layers[0][0](x)
        return output

    def backward(self, grad_output: Tensor) -> Tensor:
        grad: Tensor = self.layers[0][0].backward(grad_output)
        self.layers[0][0].weight.grad.mul_(-5)
        return grad


def test_gradcheck_refuses_a_layer_in_a_list_in_a_list() -> None:
    """One list deep, an unregistered layer was refused (its wrong gradient would pass, as
    gradcheck nudges only registered parameters); two deep it passed, its gradient wrong."""
    with pytest.raises(
        ValueError,
        match=r"^gradcheck: the Linear in attribute 'layers\[0\]\[0\]' is not registered",
    ):
        minidl.gradcheck(_Nested(), torch.randn(4, 3, dtype=F64))


def test_gradcheck_refuses_a_forward_that_returns_float32() -> None:
    """A float32 output of float64 inputs was blamed on a right backward ("disagrees with
    finite differences"); the differences are float32's, too coarse."""

    class Narrowing(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return (2 * x).float()

        def backward(self, grad_output: Tensor) -> Tensor:
            return (2 * grad_output).double()

    with pytest.raises(
        TypeError,
        match=r"^gradcheck: Narrowing\.forward returned a tensor of torch\.float32 for float64 "
        r"inputs and parameters; float32 finite differences are too coarse",
    ):
        minidl.gradcheck(Narrowing(), torch.randn(3, 2, dtype=F64))


class StaleWeightLinear(nn.Linear):
    """Right parameter gradients, and an input gradient from the weight its first forward
    cached (the weight a later step changes is not read)."""

    def forward(self, input: Tensor) -> Tensor:
        if getattr(self, "_first_weight", None) is None:
            self._first_weight = self.weight.data.clone()
        return super().forward(input)

    def backward(self, grad_output: Tensor) -> Tensor:
        self.backward_parameters(grad_output)
        return grad_output.mm(self._first_weight)


class LagOne(nn.Module):
    """``y = x * s``, whose backward reads the input of the forward before its own."""

    def __init__(self) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.randn(3, dtype=F64))
        self.register_parameter("s", self.s)
        self._inputs: list[Tensor] = []

    def forward(self, input: Tensor) -> Tensor:
        self._inputs = [*self._inputs[-1:], input.clone()]
        return input * self.s.data

    def backward(self, grad_output: Tensor) -> Tensor:
        self.s.grad.add_((grad_output * self._inputs[0]).sum(0))
        return grad_output * self.s.data


@pytest.mark.parametrize("kind", [StaleWeightLinear, LagOne])
def test_a_backward_reading_a_stale_cache_fails(kind: type[nn.Module]) -> None:
    """A backward that reads the weights its first forward cached, or the input of the
    forward before its own, passed: the first forward ran with the parameters as they are,
    and the forward before the one checked was on the same input."""
    torch.manual_seed(0)
    module = kind(3, 3, dtype=F64) if kind is StaleWeightLinear else kind()
    assert not minidl.gradcheck(module, torch.randn(4, 3, dtype=F64), raise_exception=False)


class Scale(nn.Module):
    """``y = x * s``, with a right backward; a running mean of its input, in training mode,
    rebound to a new tensor at every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.randn(3, dtype=F64))
        self.register_parameter("s", self.s)
        self.register_buffer("running", torch.zeros(3, dtype=F64))

    def forward(self, input: Tensor) -> Tensor:
        if self.training:
            self.register_buffer("running", 0.9 * self.running + 0.1 * input.mean(0))
        self._input = input.clone()
        return input * self.s.data

    def backward(self, grad_output: Tensor) -> Tensor:
        self.s.grad.add_((grad_output * self._input).sum(0))
        return grad_output * self.s.data


def test_a_backward_parameters_set_on_the_instance_is_checked() -> None:
    """A backward_parameters set on an instance of a class that does not override it (the
    containers and fit call it) giving three times the gradient: gradcheck asked the class
    only, and passed it."""
    module = Scale()

    def tripled(grad_output: Tensor) -> None:
        module.s.grad.add_(3 * (grad_output * module._input).sum(0))

    module.backward_parameters = tripled  # type: ignore[method-assign]
    with pytest.raises(
        minidl.GradcheckError, match=r"^gradcheck: Scale\.backward_parameters disagrees"
    ):
        minidl.gradcheck(module, torch.randn(4, 3, dtype=F64))


def test_a_buffer_rebound_by_the_forward_is_put_back() -> None:
    """A forward that registers a new tensor under a buffer's name: gradcheck restored the
    values of the tensor it found before, and left the forward's new one in place."""
    module = Scale()
    running = module.running
    assert minidl.gradcheck(module, torch.randn(4, 3, dtype=F64))
    assert module.running is running
    assert torch.equal(running, torch.zeros(3, dtype=F64))


class DoublingTarget(nn.Module):
    """A mean squared error against twice the target, doubled in place in the forward."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        target.mul_(2)
        self._difference = input - target
        return (self._difference**2).mean()

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output * 2 * self._difference / self._difference.numel()


def test_the_inputs_after_the_first_are_given_as_copies() -> None:
    """A forward that works in place on an input after the first (its target) got the
    values the last call left: it was called random, and the caller's target was changed."""
    target = torch.randn(3, 2, dtype=F64)
    kept = target.clone()
    assert minidl.gradcheck(DoublingTarget(), torch.randn(3, 2, dtype=F64), target)
    assert torch.equal(target, kept)


@pytest.mark.parametrize("where", ["buffer", "target"])
def test_a_non_finite_buffer_or_later_input_is_refused_before_anything_runs(where: str) -> None:
    """A NaN or infinite value in a floating-point buffer (a batch norm's running mean, read in
    evaluation mode) or in a later input (a loss's target) is refused before anything runs, as
    one in the first input or a parameter is: finite differences through it are NaN, and the
    module's right backward was blamed."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, dtype=torch.float64, generator=generator)
    if where == "buffer":
        module: nn.Module = nn.BatchNorm1d(3, dtype=torch.float64).eval()
        module.running_mean[0] = math.inf  # type: ignore[index]
        inputs: tuple[torch.Tensor, ...] = (x,)
        expected = r"buffer 'running_mean' has a non-finite value"
    else:
        module = nn.MSELoss()
        target = torch.randn(4, 3, dtype=torch.float64, generator=generator)
        target[1, 2] = math.inf
        inputs = (x, target)
        expected = r"input 1 has a non-finite value"
    with pytest.raises(ValueError, match=rf"^gradcheck: {expected} \(inf at index"):
        minidl.gradcheck(module, *inputs)


class _Float32Output(nn.Module):
    """A product whose output is float32 by mistake, and whose backward then fails in torch's
    words on float64 operands."""

    def __init__(self) -> None:
        super().__init__()
        self.register_parameter("weight", nn.Parameter(torch.randn(3, 3, dtype=F64)))

    def forward(self, x: Tensor) -> Tensor:
        self.x = x
        out = torch.zeros(x.shape[0], 3)
        out += x @ self.weight.data
        return out

    def backward(self, grad_output: Tensor) -> Tensor:
        self.weight.grad += self.x.T @ grad_output
        return grad_output @ self.weight.data.T


def test_an_output_of_another_dtype_is_named_before_any_backward() -> None:
    """The backward on another input, run first, reached the module's backward with a float32
    output, which failed in torch's words (``expected m1 and m2 to have the same dtype``);
    gradcheck's own refusal of the dtype comes first again."""
    with pytest.raises(TypeError, match=r"^gradcheck: _Float32Output\.forward returned a tensor "):
        minidl.gradcheck(_Float32Output(), _input())


def test_an_eps_below_the_resolution_names_the_side_that_rounds_back() -> None:
    """At a negative power of two, x + eps moves and x - eps rounds back to x: the message
    said "+ eps"."""
    x = torch.tensor([[-(2.0**40), 0.5]], dtype=F64)
    with pytest.raises(ValueError, match=r"\(-1\.09951e\+12 - eps rounds back to it\)"):
        minidl.gradcheck(nn.Tanh(), x, eps=1e-4)


def test_a_correct_loss_passes_where_the_step_eps_takes_rounds() -> None:
    """At 1e9 the step 1e-6 rounds to 9.54e-7: the numeric derivative divides by the steps
    taken, not by 2 eps (which made a correct MSELoss fail: analytic -0.812447, numeric
    -0.77481, its backward blamed)."""
    prediction = torch.tensor([[1e9 + 0.5, 2.0]], dtype=F64)
    target = torch.tensor([[1e9, 1.0]], dtype=F64)
    assert minidl.gradcheck(nn.MSELoss(), prediction, target)
    assert minidl.gradcheck(nn.Identity(), torch.full((2, 3), 1e9, dtype=F64) + 0.25)


class _Quadratic(nn.Module):
    """y = x + 404 x^2, smooth, with a backward off by ``error``."""

    def __init__(self, error: float) -> None:
        super().__init__()
        self.error = error

    def forward(self, input: Tensor) -> Tensor:
        self._x = input.clone()
        return input + 404.0 * input**2

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output * (1 + 808.0 * self._x + self.error)


def test_a_wrong_gradient_of_a_smooth_function_is_not_called_a_kink() -> None:
    """The kink note needs the two one-sided differences to disagree: here they agree (the
    function is smooth), so the message blames the backward alone."""
    with pytest.raises(minidl.GradcheckError) as error:
        minidl.gradcheck(_Quadratic(1.2e-3), torch.zeros(1, dtype=F64))
    message = str(error.value)
    assert message.startswith("gradcheck: _Quadratic.backward disagrees with finite differences")
    assert "kink" not in message
    assert minidl.gradcheck(_Quadratic(0.0), torch.zeros(1, dtype=F64))


class _Drifting(nn.Module):
    """Adds ``drift`` times its number of calls to ``scale * input``: two calls on one input
    differ by ``drift``."""

    def __init__(self, scale: float, drift: float) -> None:
        super().__init__()
        self.scale, self.drift, self.calls = scale, drift, 0

    def forward(self, input: Tensor) -> Tensor:
        self.calls += 1
        return self.scale * input + self.drift * self.calls

    def backward(self, grad_output: Tensor) -> Tensor:
        return self.scale * grad_output


def test_two_calls_differing_past_1e_10_of_the_outputs_scale_or_of_1_are_not_deterministic() -> (
    None
):
    """Two forwards on one input that differ by more than 1e-10 times the largest output (at
    least 1) are named as not deterministic (with a threshold of 1e-6, a drift of 2e-8 was
    blamed on the backward); a difference below it, outputs of 1e-5 drifting by 1e-14 a call
    (a reduction in another order), passes."""
    with pytest.raises(minidl.GradcheckError) as error:
        minidl.gradcheck(_Drifting(1.0, 1e-8), torch.ones(3, dtype=F64))
    assert str(error.value).startswith(
        "gradcheck: _Drifting.forward is not deterministic: two calls on the same input differ "
        "by up to 2e-08, so finite differences cannot check its backward"
    )
    assert minidl.gradcheck(_Drifting(1e-5, 1e-14), torch.ones(3, dtype=F64))
