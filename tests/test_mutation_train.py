"""Tests that a mutation audit of train.py, data.py, gradcheck.py, anomaly.py and interop.py
found missing: each pins a behaviour that a small change of the code left unnoticed."""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.data import make_disk_data
from minidl.nn.parameter import Parameter
from minidl.train import History, fit

F64 = torch.float64


class _RecordingLoss(nn.MSELoss):
    """An MSELoss that keeps every loss it returns (fit's trial forward on x[:1] included)."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[Tensor] = []

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        loss = super().forward(prediction, target)
        self.losses.append(loss.clone())
        return loss


def test_the_epoch_loss_is_the_exact_mean_of_float32_batch_losses() -> None:
    """The float32 batch losses are summed in float64 (exactly, for a few dozen of them): the
    recorded loss is their exact sum (math.fsum) over the number of batches, which a float32
    sum misses in its last bits."""
    torch.manual_seed(0)
    x = torch.randn(300, 3)
    y = torch.randn(300, 2) * 100.0
    model = nn.mlp((3, 4, 2), "tanh")
    criterion = _RecordingLoss()
    optimizer = optim.SGD(model.parameters(), lr=1e-4)
    history = fit(
        model,
        criterion,
        optimizer,
        x,
        y,
        epochs=1,
        batch_size=7,
        generator=torch.Generator().manual_seed(1),
    )
    batch_losses = criterion.losses[1:]  # (the first is fit's trial forward)
    assert len(batch_losses) == math.ceil(300 / 7)
    assert all(loss.dtype == torch.float32 for loss in batch_losses)
    expected = math.fsum(float(loss) for loss in batch_losses) / len(batch_losses)
    assert history.train_loss == [expected]
    float32_sum = float(torch.stack(batch_losses).sum()) / len(batch_losses)
    assert float32_sum != expected  # (the case does tell the two sums apart)


@pytest.mark.parametrize(
    "value",
    [torch.tensor([True, False]), torch.tensor(1.0), torch.tensor([1]), torch.tensor(0)],
    ids=["bools", "float", "int-1", "int-0dim"],
)
def test_on_epoch_returning_a_tensor_that_is_no_bool_of_one_element_is_refused(
    value: Tensor,
) -> None:
    """Only a one-element bool tensor stops or goes on. One of several elements (a comparison
    of whole curves) is refused with fit's TypeError, not torch's ambiguous-truth error; so is
    a float or integer one (a metric itself, returned by mistake: taking any one-element
    tensor for a bool stopped on 1.0 and went on with 0). The epoch stays recorded."""
    torch.manual_seed(0)
    data = make_disk_data(n_train=20, n_validation=4, n_test=4, seed=0, dtype=F64)
    model = nn.mlp((2, 3, 2), "tanh", dtype=F64)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    history = History()
    described = f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    with pytest.raises(
        TypeError,
        match=r"^fit: on_epoch must return None or a bool \(True stops the training after its "
        r"epoch; a tensor of one bool too\), got " + re.escape(described) + "$",
    ):
        fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            data.train.x,
            data.train.y,
            epochs=3,
            batch_size=10,
            history=history,
            on_epoch=lambda record: value,
        )
    assert len(history.train_loss) == 1


class _RowCountingLinear(nn.Linear):
    """A Linear that notes the number of rows of every input of its forward."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.rows: list[int] = []

    def forward(self, input: Tensor) -> Tensor:
        self.rows.append(int(input.shape[0]))
        return super().forward(input)


def test_predict_runs_the_model_on_batches_of_at_most_batch_size() -> None:
    """batch_size bounds the rows of every forward (the memory of a prediction); the
    predictions are those of one pass."""
    from minidl.train import predict

    layer = _RowCountingLinear(2, 3, dtype=F64)
    x = torch.randn(10, 2, dtype=F64)
    expected = layer(x).argmax(dim=1)
    layer.rows.clear()
    assert torch.equal(predict(layer, x, batch_size=4), expected)
    assert layer.rows == [4, 4, 2]
    layer.rows.clear()
    assert torch.equal(predict(layer, x, batch_size=10), expected)
    assert layer.rows == [10]


class _Cube(nn.Module):
    """``y = c x^3`` with a backward ``3 c x^2 g`` scaled by ``scale`` and shifted by ``offset``
    (a backward wrong by a known relative or absolute amount)."""

    def __init__(self, c: float = 1.0, scale: float = 1.0, offset: float = 0.0) -> None:
        super().__init__()
        self.c, self.scale, self.offset = c, scale, offset
        self._input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return self.c * input**3

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        return grad_output * 3 * self.c * self._input**2 * self.scale + self.offset


def test_gradcheck_default_rtol_is_1e_3() -> None:
    """At x = 1 the gradient is 3u (|u| ~ 1): a backward 0.2% off is caught by the default
    rtol 1e-3, one 0.05% off passes."""
    from minidl import gradcheck

    x = torch.ones(5, dtype=F64)
    assert gradcheck(_Cube(scale=1 + 5e-4), x)
    assert not gradcheck(_Cube(scale=1 + 2e-3), x, raise_exception=False)
    assert gradcheck(_Cube(scale=1 + 2e-3), x, rtol=3e-3)


def test_gradcheck_default_atol_is_1e_5() -> None:
    """At x = 0 the gradient is 0 (the numeric one about eps^2 u): an error of 5e-5 is caught
    by the default atol 1e-5, one of 5e-6 passes."""
    from minidl import gradcheck

    x = torch.zeros(5, dtype=F64)
    assert gradcheck(_Cube(offset=5e-6), x)
    assert not gradcheck(_Cube(offset=5e-5), x, raise_exception=False)
    assert gradcheck(_Cube(offset=5e-5), x, atol=1e-4)


def test_gradcheck_default_eps_is_fine_enough_for_a_steep_cubic() -> None:
    """The central difference of c x^3 at 0 is c eps^2 (the truncation error): 1e-9 with the
    default eps 1e-6 and c = 1000 (within atol), 1e-3 with eps 1e-3 (caught)."""
    from minidl import gradcheck

    x = torch.zeros(5, dtype=F64)
    assert gradcheck(_Cube(c=1000.0), x)
    assert not gradcheck(_Cube(c=1000.0), x, eps=1e-3, raise_exception=False)


class _DrawingDouble(nn.Module):
    """``y = 2x``, deterministic, but its forward draws a number from its own generator."""

    def __init__(self) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, input: Tensor) -> Tensor:
        torch.rand(1, generator=self.generator)
        return 2 * input

    def backward(self, grad_output: Tensor) -> Tensor:
        return 2 * grad_output


@pytest.mark.parametrize("dict_read", [False, True], ids=["inline-attributes", "dict-read"])
def test_gradcheck_finds_a_draw_from_a_generator_the_module_holds(dict_read: bool) -> None:
    """The draw is found whether the module's attributes are inline or its __dict__ was made
    (read once, as detect_anomaly's wrapping does): the generator is then a value of the dict."""
    from minidl import GradcheckError, gradcheck

    module = _DrawingDouble()
    if dict_read:
        assert "generator" in module.__dict__
    with pytest.raises(
        GradcheckError,
        match=r"^gradcheck: _DrawingDouble\.forward is not deterministic: a call drew from a "
        r"random generator",
    ):
        gradcheck(module, torch.randn(3, dtype=F64))


class _Drifting(nn.Module):
    """``y = x + calls * 1e-6``: two forwards on one input differ by 1e-6."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, input: Tensor) -> Tensor:
        self.calls += 1
        return input + self.calls * 1e-6

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


def test_gradcheck_reports_forwards_that_differ_by_1e_6_as_not_deterministic() -> None:
    """Differences below 1e-10 of the output's scale are taken for rounding; 1e-6 a call is
    not, and is reported as such (not as a disagreement of the gradients). The two calls on the
    input compared have one on another input between them: 2e-6 apart."""
    from minidl import GradcheckError, gradcheck

    with pytest.raises(
        GradcheckError,
        match=r"^gradcheck: _Drifting\.forward is not deterministic: two calls on the same input "
        r"differ by up to 2e-06, ",
    ):
        gradcheck(_Drifting(), torch.ones(3, dtype=F64))


def test_gradcheck_tolerance_bound_is_inclusive_and_relative_to_the_numeric_gradient() -> None:
    """An element passes when |analytic - numeric| <= atol + rtol |numeric|: the bound itself
    passes, and rtol scales the numeric gradient, not the analytic one."""
    from minidl import gradcheck

    # c = 0: the numeric gradient is exactly 0 and the analytic one the offset.
    offset = 2.0**-10
    assert gradcheck(_Cube(c=0.0, offset=offset), torch.ones(3, dtype=F64), atol=offset, rtol=0.0)
    assert not gradcheck(
        _Cube(c=0.0, offset=offset),
        torch.ones(3, dtype=F64),
        atol=offset / 2,
        rtol=0.0,
        raise_exception=False,
    )
    # analytic = 1.75 numeric: 0.75 |numeric| > 0.5 |numeric| (but < 0.5 |analytic|).
    assert not gradcheck(
        _Cube(scale=1.75), torch.ones(3, dtype=F64), atol=0.0, rtol=0.5, raise_exception=False
    )


class _InfiniteStep(nn.Module):
    """``y = inf`` where ``x >= 0``, else 0; backward ``inf * g``: both gradients are the same
    infinity at x = 0."""

    def forward(self, input: Tensor) -> Tensor:
        return torch.where(input >= 0, math.inf, 0.0).to(input.dtype)

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output * math.inf


def test_gradcheck_takes_equal_infinite_gradients_for_agreeing() -> None:
    """Their difference is NaN, but equal infinities agree (as in PyTorch's gradcheck)."""
    from minidl import gradcheck

    assert gradcheck(_InfiniteStep(), torch.zeros(1, dtype=F64))


def test_gradcheck_leaves_the_callers_input_alone() -> None:
    """The input is differentiated on a copy: an expanded input (one memory location for
    several elements) is checked as its values, and a module that raises part-way through the
    finite differences leaves the caller's input as it was (not nudged by eps)."""
    from minidl import gradcheck

    row = torch.randn(1, 3, dtype=F64)
    assert gradcheck(nn.Tanh(), row.expand(4, 3))

    class FailsAtTheFifthForward(nn.Tanh):
        calls = 0

        def forward(self, input: Tensor) -> Tensor:
            self.calls += 1
            if self.calls == 5:
                raise RuntimeError("fifth forward")
            return super().forward(input)

    x = torch.randn(2, 3, dtype=F64)
    before = x.clone()
    with pytest.raises(RuntimeError, match="fifth forward"):
        gradcheck(FailsAtTheFifthForward(), x)
    assert torch.equal(x, before)


class _BufferedDrifting(nn.Module):
    """``y = x + calls * 1e-6``, written into one output buffer (the same tensor every call)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.out: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self.calls += 1
        if self.out is None:
            self.out = torch.empty_like(input)
        return torch.add(input, self.calls * 1e-6, out=self.out)

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


def test_gradcheck_compares_a_copy_of_the_first_output() -> None:
    """A module that writes every output into one buffer returns the same tensor twice: the
    first output is kept as a copy, so two calls that differ are still told apart."""
    from minidl import GradcheckError, gradcheck

    with pytest.raises(
        GradcheckError,
        match=r"^gradcheck: _BufferedDrifting\.forward is not deterministic: two calls",
    ):
        gradcheck(_BufferedDrifting(), torch.ones(3, dtype=F64))


class _LargeRounding(nn.Module):
    """``y = x + 1e6``, whose second call is 5e-5 off (below 1e-10 of the output's scale)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, input: Tensor) -> Tensor:
        self.calls += 1
        return input + (1e6 + (5e-5 if self.calls == 2 else 0.0))

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


def test_gradcheck_takes_differences_below_1e_10_of_the_outputs_scale_for_rounding() -> None:
    """Two forwards that differ by 5e-5 on outputs of 1e6 (5e-11 of them) are deterministic up
    to rounding; a threshold of 1e-10 alone, without the scale, would report them."""
    from minidl import gradcheck

    assert gradcheck(_LargeRounding(), torch.ones(3, dtype=F64), eps=1e-3)


def test_a_module_watched_twice_is_checked_once_under_its_first_path() -> None:
    """detect_anomaly(model, model[0]): the layer is wrapped once, and named by its path in
    the model (a second wrapping would name it "Linear" and check it twice)."""
    from minidl.anomaly import AnomalyError, detect_anomaly

    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    with detect_anomaly(model, model[0]), pytest.raises(AnomalyError) as caught:
        model[0](torch.tensor([[math.nan, 0.0]]))
    assert caught.value.module == "Sequential[0]: Linear"
    assert (caught.value.pass_, caught.value.what) == ("forward", "input")
    assert "forward" not in model[0].__dict__


def test_watching_modules_leaves_other_sequentials_unchecked() -> None:
    """The flag that makes every Sequential check its layers is the module-less form's: a
    block that watches one model does not check another."""
    from minidl.anomaly import detect_anomaly

    watched, other = nn.Sequential(nn.Tanh()), nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    with detect_anomaly(watched):
        output = other(torch.tensor([[math.nan, 0.0]]))
    assert bool(output.isnan().any())


class _Scale(nn.Module):
    """``y = w x`` with one scalar parameter, whose backward accumulates ``sum(g x)`` itself
    (not through ``backward_parameters``, as Linear's does)."""

    def __init__(self, w: float) -> None:
        super().__init__()
        self.weight = self.register_parameter("weight", Parameter(torch.tensor(w)))
        self._input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return self.weight.data * input

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        self.weight.grad.add_((grad_output * self._input).sum())
        return grad_output * self.weight.data


def test_anomaly_reports_a_parameter_gradient_that_overflows_in_backward() -> None:
    """Inputs near 3e38 in float32: the forward and the returned gradient are finite, but the
    weight's gradient (a sum over the batch) overflows to inf, and is named."""
    from minidl.anomaly import AnomalyError, detect_anomaly

    layer = _Scale(1e-3)
    x = torch.full((2,), 3e38)
    with detect_anomaly(layer):
        output = layer(x)
        assert bool(output.isfinite().all())
        with pytest.raises(AnomalyError) as caught:
            layer.backward(torch.ones(2))
    assert caught.value.module == "_Scale"
    assert (caught.value.pass_, caught.value.what) == ("backward", "gradient of parameter 'weight'")
    assert caught.value.value == math.inf


def test_gradcheck_takes_a_target_that_requires_grad_as_a_value() -> None:
    """A target from an autograd graph (requires_grad) is detached, as the first input is:
    no graph is built and torch warns about nothing."""
    from minidl import gradcheck

    prediction = torch.randn(4, 3, dtype=F64)
    target = torch.randn(4, 3, dtype=F64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gradcheck(nn.MSELoss(), prediction, target)


def test_a_row_with_one_nan_among_finite_scores_has_no_class() -> None:
    """Not only a row of NaNs: one NaN among finite scores (which argmax would name) gives -1,
    and counts as an error."""
    from minidl.train import error_rate, predict

    scores = torch.tensor([[1.0, math.nan, 0.0], [0.0, 2.0, 1.0], [math.nan, math.nan, 5.0]])
    assert predict(nn.Identity(), scores).tolist() == [-1, 1, -1]
    assert error_rate(nn.Identity(), scores, torch.tensor([1, 1, 2])) == pytest.approx(200 / 3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_make_disk_data_normalises_by_the_documented_formula_exactly(dtype: torch.dtype) -> None:
    """Every set is (raw - mean) / std in float64 with the training set's mean and sample
    standard deviation, then cast: recomputed here, the inputs are equal to the last bit."""
    data = make_disk_data(n_train=50, n_validation=20, n_test=30, seed=3, dtype=dtype)
    raw = data.train.raw.to(F64)
    mean, std = raw.mean(dim=0), raw.std(dim=0)
    for split in (data.train, data.validation, data.test):
        expected = ((split.raw.to(F64) - mean) / std).to(dtype)
        assert torch.equal(split.x, expected)
        assert torch.equal(data.normalize(split.raw), expected)


class _SlightlyOverwritingScale(_Scale):
    """A backward that scales the accumulated gradient by 1 + 1e-6 before adding to it."""

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        self.weight.grad.mul_(1 + 1e-6).add_((grad_output * self._input).sum())
        return grad_output * self.weight.data


def test_gradcheck_reports_a_backward_that_does_not_add_exactly() -> None:
    """A second backward must give twice the first gradient up to 1e-8 of the largest one: a
    relative error of 1e-6 (a gradient scaled before the addition) breaks the contract."""
    from minidl import GradcheckError, gradcheck

    x = torch.ones(3, dtype=F64)
    assert gradcheck(_Scale(0.5).to(F64), x)
    with pytest.raises(
        GradcheckError,
        match=r"^gradcheck: _SlightlyOverwritingScale\.backward does not accumulate into the "
        r"gradient of 'weight'",
    ):
        gradcheck(_SlightlyOverwritingScale(0.5).to(F64), x)


class _TwoRanks:
    """What fit asks of a ``parallel`` (its checks run before anything of it is called)."""

    world_size = 2

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def shard(self, batches: object) -> object:
        raise AssertionError("fit must refuse before sharding")

    def synchronize(self, loss: Tensor) -> Tensor:
        raise AssertionError("fit must refuse before training")

    def reduce_loss(self, total: Tensor) -> Tensor:
        raise AssertionError("fit must refuse before training")


def test_batches_of_one_sample_for_a_batch_norm_are_refused_when_they_divide_the_set() -> None:
    """fit refuses, before training, batches of 1 sample for a batch norm (alone: batch_size
    1; data-parallel: 1 sample per rank's shard) also where the batch size divides the set, so
    that no last batch is smaller: the smallest batch is then a full one. (Taking the
    remainder, 0 there, for the smallest batch let both through.)"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    before = [parameter.data.clone() for parameter in model.parameters()]
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    with pytest.raises(
        ValueError,
        match=r"^fit: every batch would hold 1 sample \(batch_size 1\), on which the "
        r"BatchNorm1d '1' cannot estimate a variance in training mode; choose a batch_size >= 2$",
    ):
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=1)
    with pytest.raises(
        ValueError,
        match=r"^fit: every rank's shard of a batch would hold 1 sample \(batches of 2 split "
        r"over 2 processes\), on which the BatchNorm1d '1' cannot estimate a variance in "
        r"training mode; choose a batch_size >= 4 \(2 samples per process\)$",
    ):
        fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=1,
            batch_size=2,
            parallel=_TwoRanks(model),  # type: ignore[arg-type]
        )
    # Fewer samples than 2 a process: the hint named drop_last or another batch size, each
    # then refused in turn (drop_last leaves no batch; every size gives a rank 1 sample).
    for batch_size, drop_last in ((2, True), (4, False), (6, False)):
        with pytest.raises(
            ValueError,
            match=r"^fit: the training set holds 3 samples, fewer than 2 for each of the 2 "
            r"processes, on which the BatchNorm1d '1' cannot estimate a variance in training "
            r"mode; no batch_size or drop_last can change that: train on at least 4 samples$",
        ):
            fit(model, nn.CrossEntropyLoss(), optimizer, x[:3], y[:3], epochs=1,
                batch_size=batch_size, drop_last=drop_last,
                parallel=_TwoRanks(model))  # type: ignore[arg-type]  # fmt: skip
    assert all(torch.equal(a, p.data) for a, p in zip(before, model.parameters(), strict=True))


def test_drop_last_with_a_batch_size_equal_to_the_set_trains_on_one_full_batch() -> None:
    """``drop_last`` with ``batch_size`` equal to the number of samples drops nothing: each
    epoch is one full batch, as without ``drop_last``, and the run is the same bit for bit.
    (Refusing ``samples <= batch_size`` for ``samples < batch_size`` refused this legal run.)"""
    x, y = torch.randn(4, 2, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 1, 0])
    runs = []
    for drop_last in (True, False):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
        optimizer = optim.SGD(model.parameters(), lr=0.1)
        history = fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=2,
            batch_size=4,
            drop_last=drop_last,
            generator=torch.Generator().manual_seed(1),
        )
        assert optimizer.step_count == 2 and len(history.train_loss) == 2
        runs.append((history.train_loss, [p.data.clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))


class _Pairs(nn.Module):
    """Outputs ``(N, 2, 2)`` from inputs ``(N, 4)``: no class scores ``(N, C)``."""

    def forward(self, input: Tensor) -> Tensor:
        return input.reshape(input.shape[0], 2, 2)

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output.reshape(grad_output.shape[0], 4)


def test_a_validation_set_for_outputs_of_three_dimensions_is_refused_before_training() -> None:
    """The validation error needs class scores ``(N, C)``: a model whose outputs are
    ``(N, 2, 2)`` (trained with MSE on such targets) is refused with a validation set before
    any step, not after the first epoch. (Taking every output of 2 dimensions or more for
    scores let it train an epoch, then fail in the error rate.)"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), _Pairs())
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    before = [parameter.data.clone() for parameter in model.parameters()]
    x, y = torch.randn(6, 2), torch.randn(6, 2, 2)
    with pytest.raises(
        ValueError,
        match=r"^fit: a validation set needs a model whose outputs are class scores \(N, C\), "
        r"got \(1, 2, 2\) for one sample$",
    ):
        fit(
            model,
            nn.MSELoss(),
            optimizer,
            x,
            y,
            epochs=2,
            batch_size=3,
            validation=(x, torch.zeros(6, dtype=torch.int64)),
        )
    assert optimizer.step_count == 0
    assert all(torch.equal(a, p.data) for a, p in zip(before, model.parameters(), strict=True))


class _TwoScales(nn.Module):
    """``y = (1e9 a + b) x`` with two scalar parameters, ``a = 0`` (the output stays of ``x``'s
    size): ``a``'s gradient is 1e9 times ``b``'s. Its backward accumulates into ``a``'s
    gradient and overwrites ``b``'s (``overwrite``)."""

    def __init__(self, overwrite: bool) -> None:
        super().__init__()
        self.a = self.register_parameter("a", Parameter(torch.tensor(0.0)))
        self.b = self.register_parameter("b", Parameter(torch.tensor(0.25)))
        self.overwrite = overwrite
        self._input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return (1e9 * self.a.data + self.b.data) * input

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        total = (grad_output * self._input).sum()
        self.a.grad.add_(1e9 * total)
        if self.overwrite:
            self.b.grad.copy_(total)
        else:
            self.b.grad.add_(total)
        return grad_output * (1e9 * self.a.data + self.b.data)


def test_gradcheck_reports_an_overwritten_gradient_beside_a_far_larger_one() -> None:
    """The accumulation check of each gradient is relative to that gradient's own size: ``b``'s
    gradient overwritten (off by all of itself after the second backward) is found though
    ``a``'s is 1e9 times larger (a tolerance relative to the largest of all let it pass)."""
    from minidl import GradcheckError, gradcheck

    x = torch.linspace(0.5, 1.5, 3, dtype=F64)
    assert gradcheck(_TwoScales(overwrite=False).to(F64), x)
    with pytest.raises(
        GradcheckError,
        match=r"^gradcheck: _TwoScales\.backward does not accumulate into the gradient of 'b'",
    ):
        gradcheck(_TwoScales(overwrite=True).to(F64), x)
