"""`minidl.gradcheck` and `minidl.anomaly`: gaps a mutation audit found (its third round).

Each test checks a behaviour a user relies on, with modules of its own: what gradcheck reports
(a broken contract named as such, a NaN gradient as a disagreement, equal infinities as
agreeing), the caller's input left as given when a forward raises part-way, and, under
``detect_anomaly``, what is checked (a parameter's gradient, a gradient given by name), by
which path a module shared by two roots is named, and what the module form leaves unchecked.
"""

from __future__ import annotations

import contextlib
import copy
import re
import warnings

import pytest
import torch
from torch import Tensor

import minidl
from minidl import anomaly, nn
from minidl.anomaly import AnomalyError, detect_anomaly
from minidl.gradcheck import _PROJECTION_SEED_OFFSET

F64 = torch.float64
NAN = float("nan")


def _input() -> Tensor:
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=F64)
    return x + 0.1 * torch.sign(x)


def _projection(shape: tuple[int, ...], seed: int = 0) -> Tensor:
    """The projection ``u`` gradcheck draws for an output of ``shape`` (as documented: from a
    generator seeded from ``seed``)."""
    generator = torch.Generator().manual_seed((seed + _PROJECTION_SEED_OFFSET) % 2**64)
    return torch.randn(shape, generator=generator, dtype=F64)


# -- gradcheck ------------------------------------------------------------------------------------


def test_a_tuple_of_tensors_first_among_several_inputs_is_named_as_no_tensor() -> None:
    """A tuple of tensors as the first of two inputs is no input tuple given whole (there is a
    second input): it is refused as a first input that is no tensor, not with the advice to
    unpack the inputs (which the call already does)."""
    x = _input()
    with pytest.raises(
        TypeError, match=r"^gradcheck: the first input must be a floating-point tensor, got tuple$"
    ):
        minidl.gradcheck(nn.MSELoss(), (x, x), x)  # type: ignore[arg-type]


class _RaisesLate(nn.Module):
    """y = 2x, whose forward raises at its ``at``-th call (during the finite differences)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, input: Tensor) -> Tensor:
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("failed part-way")
        return 2 * input

    def backward(self, grad_output: Tensor) -> Tensor:
        return 2 * grad_output


@pytest.mark.parametrize("at", [7, 8, 9])
def test_the_callers_input_is_unchanged_when_a_forward_raises_during_the_differences(
    at: int,
) -> None:
    """The steps of the finite differences are taken on gradcheck's own copy of the input: a
    forward that raises at a step up (7th call), down (8th) or at the next element leaves the
    caller's tensor with the values it gave, bit for bit."""
    x = _input()
    given = x.clone()
    with pytest.raises(RuntimeError, match=r"^failed part-way$"):
        minidl.gradcheck(_RaisesLate(at), x)
    assert torch.equal(x, given)


class _Root(nn.Module):
    """y = sqrt(x) with its right backward: NaN (the same each call) at a negative element."""

    def __init__(self) -> None:
        super().__init__()
        self._input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return input.sqrt()

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        return grad_output * 0.5 / self._input.sqrt()


def test_a_deterministic_forward_returning_nan_is_a_disagreement_not_randomness() -> None:
    """NaN at the same element of two calls is no difference between them: a forward
    returning NaN (a square root of a negative element) is deterministic, and its NaN gradient
    is reported as a disagreement at that element, not as a random forward."""
    x = _input().abs()
    x[0, 1] = -1.0
    with pytest.raises(minidl.GradcheckError) as error:
        minidl.gradcheck(_Root(), x)
    message = str(error.value)
    # (every element's difference holds the NaN output: each projected one is NaN)
    assert re.match(
        r"gradcheck: _Root\.backward disagrees with finite differences at input\[0, 0\]: "
        r"analytic -0\.317111, numeric nan",
        message,
    ), message
    assert "not deterministic" not in message
    assert minidl.gradcheck(_Root(), x, raise_exception=False) is False


class _Huge(nn.Module):
    """y = 1.7e308 * x: a right backward whose gradient overflows to the same infinity as
    the finite difference where the projection is past about 1.06 in magnitude."""

    SCALE = 1.7e308

    def forward(self, input: Tensor) -> Tensor:
        return self.SCALE * input

    def backward(self, grad_output: Tensor) -> Tensor:
        return self.SCALE * grad_output


def test_equal_infinite_analytic_and_numeric_gradients_agree() -> None:
    """Where the analytic gradient and the finite difference are the same infinity (their
    difference NaN), the element agrees: a right backward passes."""
    x = torch.tensor(0.25, dtype=F64)
    u = float(_projection((), seed=13))
    assert abs(u) > 1.2  # (both sides overflow, with u's sign: the case checked)
    assert minidl.gradcheck(_Huge(), x, seed=13)


class _Drifting(nn.Module):
    """y = 2x, whose backward scales by 1 + 1e-6 per call: each call's gradient is within
    gradcheck's tolerances of the true one, but no two calls agree."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, input: Tensor) -> Tensor:
        return 2 * input

    def backward(self, grad_output: Tensor) -> Tensor:
        self.calls += 1
        return 2 * grad_output * (1 + 1e-6 * self.calls)


def test_a_backward_drifting_by_a_millionth_per_call_is_not_deterministic() -> None:
    """Two backward calls on the same input and upstream gradient must agree to 1e-8 of the
    gradient's scale: one that drifts by 1e-6 per call is reported, with the first element."""
    with pytest.raises(
        minidl.GradcheckError,
        match=r"^gradcheck: _Drifting\.backward is not deterministic: a second forward and "
        r"backward on the same input and upstream gradient returned input\[0, 0\] ",
    ):
        minidl.gradcheck(_Drifting(), _input())


class _BigAndOverwrittenSmall(nn.Module):
    """y = (1e9 * big * x, small * x), whose backward adds to big's gradient but overwrites
    small's (a gradient 1e9 times smaller than big's)."""

    def __init__(self) -> None:
        super().__init__()
        self.big = self.register_parameter("big", nn.Parameter(torch.tensor([0.7], dtype=F64)))
        self.small = self.register_parameter("small", nn.Parameter(torch.tensor([1.3], dtype=F64)))
        self._input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return torch.stack([1e9 * self.big.data * input, self.small.data * input])

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        self.big.grad.add_(1e9 * (grad_output[0] * self._input).sum())
        self.small.grad.copy_((grad_output[1] * self._input).sum())
        return 1e9 * self.big.data * grad_output[0] + self.small.data * grad_output[1]


def test_an_overwritten_gradient_beside_one_1e9_times_larger_is_reported() -> None:
    """Accumulation is judged against each gradient's own scale: one overwritten beside a
    gradient 1e9 times larger is reported by name (within 1e-8 of the largest alone, the
    doubled value's whole difference passed)."""
    with pytest.raises(
        minidl.GradcheckError,
        match=r"^gradcheck: _BigAndOverwrittenSmall\.backward does not accumulate into the "
        r"gradient of 'small': after a second backward, small\.grad\[0\] is ",
    ):
        minidl.gradcheck(_BigAndOverwrittenSmall(), _input())


class _BufferedCounting(nn.Module):
    """y = x ** 2 + 1e-3 * calls, written into one output buffer that each forward reuses: a
    forward that is no function of its input (it counts its calls), drawing no random number."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self._out: Tensor | None = None
        self._input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self.calls += 1
        self._input = input
        if self._out is None or self._out.shape != input.shape:
            self._out = torch.empty_like(input)
        torch.mul(input, input, out=self._out)
        return self._out.add_(1e-3 * self.calls)

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        return grad_output * 2 * self._input


def test_a_counting_forward_that_reuses_its_output_buffer_is_not_deterministic() -> None:
    """The first output is kept apart from the buffer the next forwards write into: two calls
    on the same input that differ are reported as a forward that is not deterministic, by how
    much (the forward between them and the second added 2e-3)."""
    with pytest.raises(
        minidl.GradcheckError,
        match=r"^gradcheck: _BufferedCounting\.forward is not deterministic: two calls on the "
        r"same input differ by up to 0\.002, ",
    ):
        minidl.gradcheck(_BufferedCounting(), _input())


# -- detect_anomaly -------------------------------------------------------------------------------


def test_a_module_watched_twice_is_named_by_its_first_path_and_checked_once() -> None:
    """A layer given both inside its model and on its own is watched once, named by its path
    in the first module given."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2, dtype=F64), nn.Tanh())
    layer = model[0]
    x = torch.randn(4, 3, dtype=F64)
    x[2, 1] = NAN
    with detect_anomaly(model, layer), pytest.raises(AnomalyError) as error:
        layer(x)
    assert error.value.module == "Sequential[0]: Linear"
    assert error.value.what == "input"
    assert "forward" not in vars(layer)  # (the check taken off on exit)


def test_the_module_form_leaves_other_sequentials_unchecked() -> None:
    """Watching one module does not switch on the module-less form: a Sequential not given
    computes its NaN output without a check, inside the block as outside it."""
    torch.manual_seed(0)
    watched = nn.Linear(3, 2, dtype=F64)
    other = nn.Sequential(nn.Linear(3, 2, dtype=F64), nn.Tanh())
    x = torch.randn(4, 3, dtype=F64)
    x[0, 0] = NAN
    with detect_anomaly(watched):
        assert anomaly.enabled is False
        output = other(x)
    assert output.isnan()[0].all() and not output.isnan()[1:].any()


def test_a_copy_made_inside_the_block_keeps_the_modules_own_forward() -> None:
    """A forward set on the instance is what the check replaced: a deep copy made inside the
    block keeps it (the doubling), without the check."""
    torch.manual_seed(0)
    layer = nn.Tanh()
    layer.forward = _doubled  # type: ignore[method-assign]
    with detect_anomaly(layer):
        twin = copy.deepcopy(layer)
    x = torch.tensor([1.0, NAN], dtype=F64)
    assert vars(twin).get("forward") is _doubled
    assert torch.equal(twin(x)[:1], torch.tensor([2.0], dtype=F64))


def _doubled(input: Tensor) -> Tensor:
    return 2 * input


def test_a_nested_sequential_refused_after_the_models_forward_refuses_its_backward() -> None:
    """A nested Sequential whose own forward was refused after the model's forward (its second
    layer refused the input its first had cached) refuses the model's backward inside the
    module-less block as outside it, naming that refusal."""
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Tanh(), nn.Linear(3, 3, dtype=F64))
    model = nn.Sequential(nn.Linear(3, 3, dtype=F64), inner)
    x = torch.randn(4, 3, dtype=F64)
    expected = r"^Sequential: backward after the forward refused by module 1 \(Linear\)"
    for block in (_no_block, detect_anomaly):
        output = model(x)
        with pytest.raises(ValueError):
            inner(torch.randn(4, 2, dtype=F64))
        with block(), pytest.raises(RuntimeError, match=expected):
            model.backward(torch.ones_like(output))


def _no_block() -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def test_a_nested_tensor_of_the_strided_layout_is_refused_by_its_kind() -> None:
    """A nested tensor (of the strided layout, PyTorch's default for nested tensors) has no
    dense elements to step: refused as a nested tensor, a TypeError, before anything runs."""
    parts = [torch.randn(2, 3, dtype=F64), torch.randn(3, 3, dtype=F64)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # (PyTorch's prototype-stage warning)
        nested = torch.nested.nested_tensor(parts)
    assert nested.layout == torch.strided and nested.is_nested
    with pytest.raises(
        TypeError,
        match=r"^gradcheck: the first input is a nested tensor; finite differences are taken "
        r"of a dense one$",
    ):
        minidl.gradcheck(nn.Linear(3, 2, dtype=F64), nested)


def test_a_meta_tensor_is_not_read_under_detect_anomaly() -> None:
    """A meta tensor holds no values to check: a Tanh given one computes its (meta) output
    inside the block as outside it."""
    layer = nn.Tanh()
    x = torch.empty(2, 3, device="meta", dtype=F64)
    with detect_anomaly(layer):
        output = layer(x)
    assert output.is_meta and output.shape == (2, 3)


class _Scale(nn.Module):
    """y = w * x, whose backward accumulates into ``w``'s gradient itself (not through
    ``backward_parameters``)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = self.register_parameter("w", nn.Parameter(torch.tensor([1e-200], dtype=F64)))
        self._input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return self.w.data * input

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        self.w.grad.add_((grad_output * self._input).sum())
        return grad_output * self.w.data


def test_the_module_form_checks_the_parameters_a_backward_accumulates_into() -> None:
    """A module whose backward accumulates into its parameter's gradient itself: the
    gradient overflowing there (1e200 * 1e200), with the gradient it returns finite, is
    reported as that parameter's."""
    layer = _Scale()
    x = torch.full((3,), 1e200, dtype=F64)
    with detect_anomaly(layer):
        output = layer(x)
        with pytest.raises(AnomalyError) as error:
            layer.backward(torch.full_like(output, 1e200))
    assert (error.value.module, error.value.pass_) == ("_Scale", "backward")
    assert error.value.what == "gradient of parameter 'w'"
    assert error.value.value == float("inf")


def test_the_module_form_checks_a_gradient_given_by_name_before_the_backward() -> None:
    """A gradient given by name (``grad_output=``) to a module of one's own is checked as the
    incoming gradient, before its backward runs (whose returned gradient it would spoil)."""
    layer = _Scale()
    x = torch.ones(3, dtype=F64)
    grad = torch.tensor([1.0, NAN, 1.0], dtype=F64)
    with detect_anomaly(layer):
        layer(x)
        with pytest.raises(AnomalyError) as error:
            layer.backward(grad_output=grad)
    assert (error.value.what, error.value.index) == ("incoming gradient", (1,))


# == a third pass of mutation testing over gradcheck and anomaly (2026-12-07) ===================


# -- gradcheck ----------------------------------------------------------------------------------


class _WithFloat32Buffer(nn.Module):
    """y = 2 x, holding a float32 buffer that it does not read."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor([1.0, float("nan")], dtype=torch.float32))

    def forward(self, input: Tensor) -> Tensor:
        return 2 * input

    def backward(self, grad_output: Tensor) -> Tensor:
        return 2 * grad_output


def test_a_non_finite_float32_buffer_is_refused_before_anything_runs() -> None:
    """Every floating-point buffer is checked, not only a float64 one."""
    with pytest.raises(
        ValueError,
        match=r"^gradcheck: buffer 'scale' has a non-finite value \(nan at index \(1,\)\); "
        r"finite differences need finite values$",
    ):
        minidl.gradcheck(_WithFloat32Buffer(), _input())


class _KeepsFirstDerivativeLoss(nn.Loss):
    """sum((p - t)**2), whose backward keeps the derivative its first call computed."""

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        self._difference = prediction - target
        return (self._difference**2).sum()

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        if getattr(self, "_kept", None) is None:
            self._kept = 2 * self._difference
        return self._kept * (1.0 if grad_output is None else grad_output)


def test_a_loss_whose_backward_keeps_its_first_derivative_fails() -> None:
    """The warm-up backward runs for a loss too (its output is 0-dim): a backward that keeps
    what its first call computed then returns the warm-up's derivative at the call checked."""
    prediction = _input()
    target = torch.zeros_like(prediction)
    with pytest.raises(
        minidl.GradcheckError,
        match=r"^gradcheck: _KeepsFirstDerivativeLoss\.backward disagrees with finite "
        r"differences at input\[0, 0\]: ",
    ):
        minidl.gradcheck(_KeepsFirstDerivativeLoss(), prediction, target)

    # (the oracle: the same loss, fresh at each call, passes)
    class Fresh(_KeepsFirstDerivativeLoss):
        def backward(self, grad_output: Tensor | None = None) -> Tensor:
            return 2 * self._difference * (1.0 if grad_output is None else grad_output)

    assert minidl.gradcheck(Fresh(), prediction, target) is True


class _ReturnsMeta(nn.Module):
    """y = 2 x, whose backward returns its gradient on the meta device."""

    def forward(self, input: Tensor) -> Tensor:
        return 2 * input

    def backward(self, grad_output: Tensor) -> Tensor:
        return (2 * grad_output).to("meta")


def test_an_input_gradient_on_another_device_is_refused() -> None:
    """The input gradient must be on the input's device, named with the device it is on."""
    with pytest.raises(
        minidl.GradcheckError,
        match=re.escape(
            "gradcheck: _ReturnsMeta.backward returned an input gradient of shape (4, 3), "
            "torch.float64, on meta; expected a tensor of the input's shape (4, 3), "
            "torch.float64, on cpu"
        ),
    ):
        minidl.gradcheck(_ReturnsMeta(), _input())


class _TwoSlopes(nn.Module):
    """y = x - 1 for x >= 1, 2 (x - 1) below: a kink at 1, of slopes 2 (left) and 1 (right);
    its backward returns the right slope there."""

    def forward(self, input: Tensor) -> Tensor:
        self._input = input.clone()
        shifted = input - 1
        return torch.where(input >= 1, shifted, 2 * shifted)

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output * torch.where(self._input >= 1, 1.0, 2.0).to(grad_output.dtype)


def test_the_backward_one_sided_difference_is_over_the_step_it_took() -> None:
    """At 1.0, eps 3e-16 steps up by 2**-52 (the spacing above 1) and down by 3 * 2**-53 (the
    spacing below it): the one-sided differences are the slopes 1 and 2 exactly, each over the
    step its own side took (the backward one over the upward step would be 3)."""
    x = torch.tensor([1.0], dtype=F64)
    with pytest.raises(minidl.GradcheckError) as error:
        minidl.gradcheck(_TwoSlopes(), x, eps=3e-16)
    found = re.search(
        r"input\[0\]: analytic (\S+), numeric (\S+) \(one-sided differences (\S+) and (\S+): "
        r"the function has a kink within eps of this point",
        str(error.value),
    )
    assert found is not None, str(error.value)
    analytic, numeric, ahead, behind = (float(v) for v in found.groups())
    up, down = 2.0**-52, 3 * 2.0**-53
    assert ahead == pytest.approx(analytic, rel=1e-5)  # (the slope 1, times u)
    assert behind / ahead == pytest.approx(2.0, rel=1e-5)
    assert numeric / ahead == pytest.approx((up + 2 * down) / (up + down), rel=1e-5)


class _NothingToTrain(nn.Module):
    """y = 3 x, without parameters, whose backward_parameters refuses: there is nothing to
    train (fit and the containers never call it on a module without parameters)."""

    def forward(self, input: Tensor) -> Tensor:
        return 3 * input

    def backward(self, grad_output: Tensor) -> Tensor:
        return 3 * grad_output

    def backward_parameters(self, grad_output: Tensor) -> None:
        raise RuntimeError("_NothingToTrain has no parameters to train")


def test_backward_parameters_is_not_run_on_a_module_without_parameters() -> None:
    """Only a module with parameters has backward_parameters checked: this one passes, its
    backward (3 u) agreeing with finite differences."""
    assert minidl.gradcheck(_NothingToTrain(), _input()) is True


class _CentredWithBias(nn.Module):
    """y = z - mean(z) over the batch, z = x * w + c: a bias before a centring, whose gradient
    is zero but for rounding; the backward accumulates it row by row (as a BLAS accumulates
    into its output), so that a second backward's sum, started from the first one's, rounds
    otherwise than twice the first."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.w = self.register_parameter("w", nn.Parameter(torch.randn(3, dtype=F64)))
        self.c = self.register_parameter("c", nn.Parameter(torch.randn(3, dtype=F64)))

    def forward(self, input: Tensor) -> Tensor:
        self._input = input.clone()
        z = input * self.w.data + self.c.data
        return z - z.mean(0)

    def backward(self, grad_output: Tensor) -> Tensor:
        g = grad_output - grad_output.mean(0)
        self.w.grad.add_((g * self._input).sum(0))
        for row in g:
            self.c.grad.add_(row)
        return g * self.w.data


def test_a_gradient_zero_but_for_rounding_that_accumulates_is_not_called_overwritten() -> None:
    """c's gradient (about 1e-16, of a true 0) is judged against a millionth of w's (about 1),
    not against its own size: its second backward's rounding is no overwrite, and the module,
    whose gradients are right, passes."""
    module = _CentredWithBias()
    torch.manual_seed(0)
    x = 1.7 * torch.randn(4, 3, dtype=F64)
    assert minidl.gradcheck(module, x, seed=0) is True


# -- anomaly ------------------------------------------------------------------------------------


class _TwoInputs(nn.Module):
    def forward(self, input: Tensor, other: Tensor) -> Tensor:
        return input + other

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


def test_each_input_of_several_is_named_by_its_position_or_name() -> None:
    module = _TwoInputs()
    good = torch.zeros(2, dtype=F64)
    bad = torch.tensor([0.0, float("inf")], dtype=F64)
    with detect_anomaly(module):
        with pytest.raises(AnomalyError) as error:
            module(good, bad)
        assert error.value.what == "input 1"
        with pytest.raises(AnomalyError) as error:
            module(good, other=bad)
        assert error.value.what == "input 'other'"
        with pytest.raises(AnomalyError) as error:
            module(input=bad, other=good)
        assert error.value.what == "input 'input'"
    assert (error.value.index, error.value.value) == ((1,), float("inf"))


def test_a_module_less_block_inside_another_keeps_the_checks_on() -> None:
    """The flag is switched on, not flipped: inside two nested module-less blocks a Sequential
    still checks its layers; after each exit the flag is what it was on entry."""
    model = nn.Sequential(nn.Linear(2, 2, dtype=F64), nn.Tanh())
    x = torch.tensor([[float("nan"), 0.0]], dtype=F64)
    assert minidl.anomaly.enabled is False
    with detect_anomaly():
        with detect_anomaly():
            assert minidl.anomaly.enabled is True
            with pytest.raises(AnomalyError, match=r"^forward input of Sequential: non-finite "):
                model(x)
        assert minidl.anomaly.enabled is True
    assert minidl.anomaly.enabled is False
