"""Anomaly detection: the first NaN or infinity of a forward or backward pass raises an
AnomalyError naming the module by its path, the pass and the first bad index; outside the
``with`` block nothing is checked and nothing is left behind; inside it the numbers are unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import math
import pickle
import re

import pytest
import torch
from torch import Tensor

import minidl
from minidl import nn
from minidl.anomaly import AnomalyError, detect_anomaly
from minidl.cli import main
from minidl.optim import SGD
from minidl.train import fit

NAN = float("nan")


class Faulty(nn.Module):
    """The identity, whose backward puts ``value`` at ``index`` of the returned gradient."""

    def __init__(self, index: tuple[int, int], value: float) -> None:
        super().__init__()
        self.index, self.value = index, value

    def forward(self, input: Tensor) -> Tensor:
        return input.clone()

    def backward(self, grad_output: Tensor) -> Tensor:
        grad = grad_output.clone()
        grad[self.index] = self.value
        return grad


def network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(3, 4),
        nn.Tanh(),
        nn.Sequential(nn.Linear(4, 4), nn.ReLU()),
        nn.Linear(4, 2),
    )


def first_bad_index(tensor: Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in (~torch.isfinite(tensor)).nonzero()[0])


# Both forms: modules given (wrapped) and none (the Sequential flag).
FORMS = [pytest.param(True, id="wrapped"), pytest.param(False, id="flag")]


@pytest.mark.parametrize("wrapped", FORMS)
def test_non_finite_input_is_reported_at_the_model(wrapped: bool) -> None:
    model = network()
    x = torch.randn(5, 3)
    x[3, 2] = NAN
    with pytest.raises(AnomalyError) as info, detect_anomaly(*([model] if wrapped else [])):
        model(x)
    error = info.value
    assert (error.module, error.pass_, error.what, error.index) == (
        "Sequential",
        "forward",
        "input",
        (3, 2),
    )
    assert "forward input of Sequential" in str(error)
    assert "(3, 2)" in str(error)


@pytest.mark.parametrize("wrapped", FORMS)
def test_forward_names_the_first_module_whose_output_is_not_finite(wrapped: bool) -> None:
    model = network()
    inner = model[2][0]
    assert isinstance(inner, nn.Linear)
    inner.weight.data[2, 1] = float("inf")
    x = torch.randn(6, 3)
    hidden = model[1](model[0](x))
    expected_output = hidden.mm(inner.weight.data.t()) + inner.bias.data  # type: ignore[union-attr]
    with pytest.raises(AnomalyError) as info, detect_anomaly(*([model] if wrapped else [])):
        model(x)
    error = info.value
    assert error.module == "Sequential[2][0]: Linear"
    assert error.pass_ == "forward"
    assert error.what == "output"
    assert error.index == first_bad_index(expected_output)
    assert error.value == float(expected_output[error.index])


@pytest.mark.parametrize("wrapped", FORMS)
@pytest.mark.parametrize("pass_", ["forward", "backward"])
def test_a_slice_of_a_model_names_its_modules_as_registered(wrapped: bool, pass_: str) -> None:
    """model[2:] keeps the model's names (its state dict's, its notes'); the checks of
    ``detect_anomaly()`` without a module named its children by position ("Sequential[0]"),
    where those of ``detect_anomaly(part)`` and the note of the refusal gave "2"."""
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.Sigmoid())
    part = model[2:]
    weight = model[2].weight.data  # type: ignore[union-attr]
    if pass_ == "forward":
        weight[0, 0] = float("inf")
    with pytest.raises(AnomalyError) as info, detect_anomaly(*([part] if wrapped else [])):
        output = part(torch.ones(1, 3))
        weight[0, 0] = float("inf")  # (its input gradient, G W, is not finite)
        part.backward(torch.ones_like(output))
    assert (info.value.module, info.value.pass_) == ("Sequential[2]: Linear", pass_)


@pytest.mark.parametrize("wrapped", FORMS)
def test_backward_names_the_module_that_returned_a_bad_gradient(wrapped: bool) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), Faulty((1, 3), float("-inf")), nn.Tanh())
    criterion = nn.MSELoss()
    with detect_anomaly(*([model, criterion] if wrapped else [])):
        loss = criterion(model(torch.randn(2, 3)), torch.randn(2, 4))
        with pytest.raises(AnomalyError) as info:
            model.backward(criterion.backward())
    error = info.value
    assert error.module == "Sequential[1]: Faulty"
    assert error.pass_ == "backward"
    assert error.what == "returned gradient"
    assert error.index == (1, 3)
    assert error.value == float("-inf")
    assert torch.isfinite(loss)


@pytest.mark.parametrize("wrapped", FORMS)
def test_backward_checks_the_parameter_gradients(wrapped: bool) -> None:
    model = network()
    x = torch.randn(4, 3)
    with detect_anomaly(*([model] if wrapped else [])):
        output = model(x)
        model[3].bias.grad[1] = NAN  # type: ignore[union-attr]  # e.g. left over from a bad step
        with pytest.raises(AnomalyError, match="gradient of parameter 'bias'") as info:
            model.backward(torch.ones_like(output))
    assert info.value.module == "Sequential[3]: Linear"


@pytest.mark.parametrize("wrapped", FORMS)
def test_backward_checks_the_incoming_gradient(wrapped: bool) -> None:
    """A non-finite gradient given to the model is reported at the model itself, before any
    layer runs its backward."""
    model = network()
    output = model(torch.randn(3, 3))
    grad = torch.ones_like(output)
    grad[2, 1] = NAN
    with detect_anomaly(*([model] if wrapped else [])), pytest.raises(AnomalyError) as info:
        model.backward(grad)
    error = info.value
    assert (error.module, error.pass_, error.what, error.index) == (
        "Sequential",
        "backward",
        "incoming gradient",
        (2, 1),
    )


@pytest.mark.parametrize("wrapped", FORMS)
def test_backward_parameters_checks_as_backward_does(wrapped: bool) -> None:
    """fit trains with backward_parameters: the first layer's parameter gradients and the
    gradient given to the model used to go unchecked there when the model was given."""
    model = network()
    output = model(torch.randn(4, 3))
    with detect_anomaly(*([model] if wrapped else [])):
        model[0].weight.grad[2, 1] = float("inf")  # type: ignore[index]
        with pytest.raises(AnomalyError) as info:
            model.backward_parameters(torch.ones_like(output))
        assert (info.value.module, info.value.what, info.value.index) == (
            "Sequential[0]: Linear",
            "gradient of parameter 'weight'",
            (2, 1),
        )
        model.zero_grad()
        grad = torch.ones_like(output)
        grad[3, 0] = NAN
        with pytest.raises(AnomalyError) as info:
            model.backward_parameters(grad)
        assert (info.value.module, info.value.what, info.value.index) == (
            "Sequential",
            "incoming gradient",
            (3, 0),
        )


def residual_network() -> nn.Sequential:
    """A Sequential inside a Residual inside a Sequential (the block's Linear at
    ``Sequential[1].block[0]``), and a Residual inside that block."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(2, 3),
        nn.Residual(
            nn.Sequential(
                nn.Linear(3, 3),
                nn.Tanh(),
                nn.Residual(nn.Sequential(nn.Linear(3, 3), Faulty((1, 2), NAN))),
            )
        ),
        nn.Linear(3, 2),
    )


@pytest.mark.parametrize("wrapped", FORMS)
def test_a_sequential_inside_a_residual_is_named_by_its_full_path(wrapped: bool) -> None:
    """The Residual calls its block itself: without a module given, the block used to take
    itself for the outermost Sequential, and its Linear was reported as "Sequential[0]"."""
    model = residual_network()
    model[1].block[0].bias.data[1] = NAN  # type: ignore[attr-defined]
    with pytest.raises(AnomalyError) as info, detect_anomaly(*([model] if wrapped else [])):
        model(torch.randn(4, 2))
    assert (info.value.module, info.value.pass_, info.value.what, info.value.index) == (
        "Sequential[1].block[0]: Linear",
        "forward",
        "output",
        (0, 1),
    )
    assert not minidl.anomaly._paths


@pytest.mark.parametrize("wrapped", FORMS)
@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
def test_backward_inside_nested_residuals_is_named_by_its_full_path(
    wrapped: bool, method: str
) -> None:
    """Backward (and backward_parameters, which fit uses) through two Residuals: the Faulty
    layer of the inner block is named from the outermost Sequential."""
    model = residual_network()
    output = model(torch.randn(4, 2))
    with detect_anomaly(*([model] if wrapped else [])), pytest.raises(AnomalyError) as info:
        getattr(model, method)(torch.ones_like(output))
    assert (info.value.module, info.value.pass_, info.value.what, info.value.index) == (
        "Sequential[1].block[2].block[1]: Faulty",
        "backward",
        "returned gradient",
        (1, 2),
    )
    assert not minidl.anomaly._paths


def test_a_block_called_on_its_own_is_the_outermost_sequential() -> None:
    """Called directly (not through the model), the block is the outermost Sequential."""
    model = residual_network()
    block = model[1].block  # type: ignore[attr-defined]
    block[0].bias.data[0] = NAN
    with pytest.raises(AnomalyError) as info, detect_anomaly():
        block(torch.randn(4, 3))
    assert info.value.module == "Sequential[0]: Linear"


def test_fit_under_detect_anomaly_checks_the_first_layer() -> None:
    """An infinite weight gradient in the first layer (tiny weights, huge inputs) stops fit."""
    torch.manual_seed(0)
    model = nn.mlp((2, 3, 2), "tanh")
    model[0].weight.data.fill_(1e-38)
    x, y = torch.full((4, 2), 3e37), torch.full((4, 2), 1e18)
    criterion = nn.MSELoss()
    with pytest.raises(AnomalyError) as info, detect_anomaly(model, criterion):
        fit(model, criterion, SGD(model.parameters(), lr=0.1), x, y, epochs=1)
    assert (info.value.module, info.value.what) == (
        "Sequential[0]: Linear",
        "gradient of parameter 'weight'",
    )


def test_losses_are_checked_when_given() -> None:
    model = network()
    criterion = nn.MSELoss()
    target = torch.randn(2, 2)
    target[1, 0] = float("inf")
    with pytest.raises(AnomalyError) as info, detect_anomaly(model, criterion):
        criterion(model(torch.randn(2, 3)), target)
    assert (info.value.module, info.value.what) == ("MSELoss", "input 1")


def test_results_are_unchanged_inside_the_block() -> None:
    model = network()
    x = torch.randn(7, 3)
    output = model(x)
    model.zero_grad()
    grad_input = model.backward(torch.ones_like(output))
    grads = [p.grad.clone() for p in model.parameters()]
    for modules in ([model], []):
        with detect_anomaly(*modules):
            model.zero_grad()
            assert torch.equal(model(x), output)
            assert torch.equal(model.backward(torch.ones_like(output)), grad_input)
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))


def test_nothing_is_left_behind_even_after_an_error() -> None:
    model = network()
    x = torch.full((2, 3), NAN)
    for modules in ([model], []):
        with (
            pytest.raises(
                AnomalyError,
                match=r"^forward input of Sequential: non-finite value nan at index \(0, 0\)",
            ),
            detect_anomaly(*modules),
        ):
            model(x)
        assert not minidl.anomaly.enabled
        for _, module in model.named_modules():
            for method in ("forward", "backward", "backward_parameters"):
                assert method not in module.__dict__
        assert torch.isnan(model(x)).all()  # off: no check, no error


def test_nested_blocks_restore_the_outer_one() -> None:
    model = network()
    x = torch.full((2, 3), NAN)
    with detect_anomaly(model):
        with detect_anomaly(model):
            pass
        with pytest.raises(
            AnomalyError,
            match=r"^forward input of Sequential: non-finite value nan at index \(0, 0\)",
        ):
            model(x)
        with detect_anomaly():
            pass
    assert not minidl.anomaly.enabled
    assert "forward" not in model[0].__dict__


def test_a_block_with_modules_inside_one_without_keeps_the_outer_flag() -> None:
    """``detect_anomaly(model)`` inside ``detect_anomaly()`` leaves every Sequential checked
    when it ends, and the flag off only when the outer block ends."""
    model, other = network(), network()
    x = torch.full((2, 3), NAN)
    with detect_anomaly():
        with detect_anomaly(model):
            pass
        assert minidl.anomaly.enabled
        with pytest.raises(
            AnomalyError,
            match=r"^forward input of Sequential: non-finite value nan at index \(0, 0\)",
        ):
            other(x)
    assert not minidl.anomaly.enabled
    assert torch.isnan(other(x)).all()


def test_exported_from_the_package() -> None:
    assert minidl.detect_anomaly is detect_anomaly
    assert minidl.AnomalyError is AnomalyError


def test_cli_flag_stops_at_the_first_non_finite_value(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--epochs", "2", "--hidden", "4", "--quiet", "--loss", "mse"]
    code = main([*args, "--lr", "1e30", "--detect-anomaly"])
    errors = capsys.readouterr().err
    assert code == 1
    assert "anomaly detected" in errors
    assert re.search(r"(forward|backward) .* of (Sequential|MSELoss).*: non-finite value", errors)
    # Without the flag the same run goes on to the end (with NaN parameters).
    assert main([*args, "--lr", "1e30"]) == 0


def test_an_input_refused_under_detect_anomaly_leaves_backward_possible() -> None:
    """The first layer refusing its input changes nothing, with detection on as off: backward
    of the last good forward still runs (it was refused as "stopped by detect_anomaly"). A
    forward that detection did stop still blocks backward, naming where and why."""
    model = nn.Sequential(nn.Linear(2, 3, dtype=torch.float64), nn.Tanh())
    model(torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="Linear: expected 2 input features"), detect_anomaly():
        model(torch.randn(4, 5, dtype=torch.float64))
    model.backward(torch.ones(4, 3, dtype=torch.float64))
    model[0].weight.data[0, 0] = float("nan")
    with (
        pytest.raises(
            AnomalyError, match=r"^forward output of Sequential\[0\]: Linear: non-finite"
        ),
        detect_anomaly(),
    ):
        model(torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(
        RuntimeError, match=r"a forward stopped at module 0 \(Linear\) by AnomalyError"
    ):
        model.backward(torch.ones(4, 3, dtype=torch.float64))


@pytest.mark.parametrize("wrapped", FORMS)
def test_the_error_pickles_and_copies_with_its_attributes(wrapped: bool) -> None:
    # (an error raised in a worker process is pickled back to the parent: BaseException's
    # pickling would call __init__ with the message alone, and fail)
    model = network()
    with pytest.raises(AnomalyError) as info, detect_anomaly(*([model] if wrapped else [])):
        model(torch.tensor([[1.0, NAN, 0.0]]))
    error = info.value
    error.add_note("a note")
    fields = ("module", "pass_", "what", "index", "shape", "args", "__notes__")
    for again in (pickle.loads(pickle.dumps(error)), copy.copy(error), copy.deepcopy(error)):
        assert type(again) is AnomalyError
        assert str(again) == str(error)
        assert [getattr(again, field) for field in fields] == [
            getattr(error, field) for field in fields
        ]
        assert math.isnan(again.value)
    assert error.shape == (1, 3)


@pytest.mark.parametrize("kind", [list, tuple])
def test_modules_given_as_one_list_are_refused_with_the_fix(kind: type) -> None:
    """A list of the modules was refused as "got list", without saying how to pass them."""
    model = network()
    with (
        pytest.raises(
            TypeError,
            match=rf"^detect_anomaly: argument 0 must be a minidl Module, got a {kind.__name__}; "
            r"pass the modules themselves, detect_anomaly\(\*modules\)$",
        ),
        detect_anomaly(kind([model, nn.MSELoss()])),
    ):
        pass
    assert "forward" not in model.__dict__


def test_the_module_less_form_checks_the_parameters_of_a_layers_children() -> None:
    """``detect_anomaly()`` checks every parameter gradient of a layer, its children's too: a
    Residual around a bare Linear (no Sequential inside to check it) whose weight gradient, a
    sum over the batch of inputs near 3e38, overflows while the returned gradient stays finite,
    is named with the parameter's path. (Checking the layer's own parameters only, none for a
    Residual, let the inf through.)"""
    layer = nn.Linear(2, 2)
    layer.weight.data.fill_(1e-3)
    layer.bias.data.zero_()
    model = nn.Sequential(nn.Residual(layer))
    with detect_anomaly():
        assert bool(model(torch.full((2, 2), 3e38)).isfinite().all())
        with pytest.raises(AnomalyError) as caught:
            model.backward(torch.ones(2, 2))
    assert caught.value.module == "Sequential[0]: Residual"
    assert (caught.value.pass_, caught.value.what) == (
        "backward",
        "gradient of parameter 'block.weight'",
    )
    assert caught.value.value == float("inf")


def test_a_nested_sequential_that_refused_differentiates_after_a_checked_forward() -> None:
    """A nested Sequential whose last forward was refused past its first module refuses
    backward until a forward succeeds; a forward of the outer model under
    ``detect_anomaly()`` (which runs the nested one's layers itself) is such a forward, as it
    is without the block. (Without resetting the nested one's flag there, backward raised.)"""
    inner = nn.Sequential(nn.Tanh(), nn.Linear(2, 3))
    model = nn.Sequential(nn.Linear(2, 2), inner)
    x = torch.randn(4, 2)
    with pytest.raises(ValueError):
        inner(torch.zeros(1, 5))  # (Tanh ran; the Linear refused the width)
    expected_output = model(x)
    expected = model.backward(torch.ones(4, 3))
    with pytest.raises(ValueError):
        inner(torch.zeros(1, 5))
    with detect_anomaly():
        output = model(x)
        gradient = model.backward(torch.ones(4, 3))
    assert torch.equal(output, expected_output) and torch.equal(gradient, expected)


def test_a_watched_module_takes_its_arguments_by_name_too() -> None:
    """Inside a block watching the modules, a call by name (``layer(input=x)``, as outside
    it) failed with "checked_forward() got an unexpected keyword argument"; the checks apply
    to the named arguments too."""
    layer, criterion = nn.Linear(2, 3), nn.MSELoss()
    x = torch.randn(4, 2)
    target = torch.randn(4, 3)
    with minidl.detect_anomaly(layer, criterion):
        output = layer(input=x)
        loss = criterion(output, target=target)
        grad = layer.backward(grad_output=criterion.backward())
        assert torch.equal(output, layer(x)) and loss.dim() == 0 and grad.shape == x.shape
        with pytest.raises(minidl.AnomalyError, match="input"):
            layer(input=torch.full((4, 2), math.nan))


@pytest.mark.parametrize("wrapped", FORMS)
def test_a_refused_input_leaves_a_batch_norms_statistics_inside_the_block(wrapped: bool) -> None:
    """A Sequential tries a new input signature in evaluation mode first, so that an input a
    later layer refuses for its shape leaves a batch norm's statistics as they were. Inside
    `with detect_anomaly():` the checked forward skipped that trial: the statistics counted the
    refused batch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(4, 2))
    before = [buffer.clone() for buffer in model.buffers()]
    with (
        detect_anomaly(*((model,) if wrapped else ())),
        pytest.raises(ValueError, match=r"^Linear: expected 4 input features, got 3"),
    ):
        model(torch.randn(5, 3))
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers(), strict=True))


@pytest.mark.parametrize("wrapped", FORMS)
def test_the_evaluation_mode_trial_is_not_checked(wrapped: bool) -> None:
    """The trial runs the first sample in evaluation mode, whose values are not the training
    forward's (a batch norm's running statistics, not the batch's): a non-finite value there
    was reported as the forward's, though the training forward that follows is finite."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model[2].weight.data.fill_(100.0)
    x = torch.randn(8, 3) * 1e37
    with detect_anomaly(*((model,) if wrapped else ())):
        output = model(x)
    assert bool(torch.isfinite(output).all())


@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
def test_a_childs_backward_refusal_is_noted_inside_the_block(method: str) -> None:
    """Without modules, the block's checked backward gave a child's refusal without the note
    naming its place and where its gradient came from, the only pointer at a module of one's
    own that returns a gradient of the wrong shape."""

    class Narrowing(nn.Module):
        def forward(self, input: Tensor) -> Tensor:
            return input.clone()

        def backward(self, grad_output: Tensor) -> Tensor:
            return grad_output[:, :1]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), Narrowing(), nn.Linear(4, 2))
    for block in (False, True):
        model(torch.randn(5, 3))
        with (
            detect_anomaly() if block else contextlib.nullcontext(),
            pytest.raises(ValueError, match=r"^Linear: gradient has shape \(5, 1\)") as raised,
        ):
            getattr(model, method)(torch.ones(5, 2))
        assert raised.value.__notes__ == [
            f"in Sequential.{method}, at module 0 (Linear), given the gradient returned by the "
            "backward of module 1 (Narrowing)"
        ]


@pytest.mark.parametrize("wrapped", [True, False])
def test_an_anomaly_in_fits_trial_says_it_came_from_the_trial(wrapped: bool) -> None:
    """A non-finite value met by fit's trial forward on the first sample (in evaluation mode: a
    batch norm's running mean, which training's forward does not read) is raised with the note
    that fit ran the model on ``x[:1]`` before training, as a refusal there is: its shape is
    the sample's, none of a training batch's."""
    from minidl import nn as mnn
    from minidl import optim as moptim
    from minidl.train import fit

    model = mnn.Sequential(mnn.Linear(3, 4), mnn.BatchNorm1d(4), mnn.Linear(4, 2))
    model[1].running_mean.fill_(-math.inf)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1] * 4)
    optimizer = moptim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(AnomalyError) as info, detect_anomaly(*([model] if wrapped else [])):
        fit(model, mnn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=4)
    notes = getattr(info.value, "__notes__", [])
    assert any("fit ran the model and the loss on the first sample, x[:1]" in n for n in notes)


class _Split(nn.Module):
    """Two outputs: the log and the square root of its input."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.log(), x.sqrt()

    def backward(self, first: Tensor, second: Tensor) -> Tensor:
        return first


class _Product(nn.Module):
    """a * b, whose backward returns a gradient for each input, the second divided by 0."""

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        self.a, self.b = a, b
        return a * b

    def backward(self, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        return grad_output * self.b, grad_output * self.a / 0.0


def test_each_output_and_each_returned_gradient_of_a_tuple_is_checked() -> None:
    """A forward of several outputs and a backward returning a gradient per input, as the
    module contract allows (``forward(*input)``, ``backward(*gradwrtoutput)``): a tuple was no
    tensor to check, and NaN and infinity passed through unreported."""
    split = _Split()
    with detect_anomaly(split), pytest.raises(AnomalyError) as error:
        split(torch.tensor([-1.0, 4.0]))
    assert (error.value.pass_, error.value.what, error.value.index) == ("forward", "output 0", (0,))
    product = _Product()
    with detect_anomaly(product):
        product(torch.ones(2), torch.ones(2))
        with pytest.raises(AnomalyError) as error:
            product.backward(torch.ones(2))
    assert (error.value.pass_, error.value.what) == ("backward", "returned gradient 1")
    assert math.isinf(error.value.value)
