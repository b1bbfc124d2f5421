"""minidl.gradcheck and minidl.anomaly: what a fourth mutation audit found untested. Each test
fails on one surviving mutant of gradcheck.py or anomaly.py (named in its docstring) and passes
on the code as it is."""

from __future__ import annotations

import contextlib
import re

import pytest
import torch
from torch import Tensor

import minidl
from minidl import anomaly, nn
from minidl.anomaly import AnomalyError, detect_anomaly
from minidl.gradcheck import _PROJECTION_SEED_OFFSET
from tests.helpers import OneColumnGradient

F64 = torch.float64


def _input() -> Tensor:
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=F64)
    return x + 0.1 * torch.sign(x)


class _RecordingIdentity(nn.Module):
    """y = x, whose backward notes each upstream gradient it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.upstreams: list[Tensor] = []

    def forward(self, input: Tensor) -> Tensor:
        return input * 1.0

    def backward(self, grad_output: Tensor) -> Tensor:
        self.upstreams.append(grad_output.clone())
        return grad_output * 1.0


@pytest.mark.parametrize("seed", [2**64 - 1, 2**64 - _PROJECTION_SEED_OFFSET, -(2**63)])
def test_a_seed_whose_offset_passes_2_to_the_64_draws_the_documented_projection(seed: int) -> None:
    """seed is documented in [-2**63, 2**64 - 1], the projection's generator seeded with
    ``(seed + offset) % 2**64``: at the top of the range (where seed + offset passes 2**64,
    which torch.Generator.manual_seed refuses), the projection given to the checked backward
    is the documented draw, and gradcheck passes a right module. (Mutant G27: the modulo
    dropped.)"""
    module = _RecordingIdentity()
    x = _input()
    assert minidl.gradcheck(module, x, seed=seed) is True
    generator = torch.Generator().manual_seed((seed + _PROJECTION_SEED_OFFSET) % 2**64)
    expected = torch.randn(x.shape, generator=generator, dtype=F64)
    # (the first backward is the warm-up's, given ones; the checked one is given u)
    assert torch.equal(module.upstreams[1], expected)


@pytest.mark.parametrize("where", ["input", "parameter", "buffer"])
def test_a_meta_tensor_is_refused_by_name_before_anything_runs(where: str) -> None:
    """A meta tensor holds no values: gradcheck refuses it by name, a ValueError (not torch's
    RuntimeError from reading a meta value), before the module runs, leaving the parameters and
    their gradients as they were. (Mutant G24: the meta check dropped.)"""
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, dtype=F64)
    x = _input()
    if where == "input":
        x = torch.empty(4, 3, dtype=F64, device="meta")
        what = "the first input"
    elif where == "parameter":
        layer.weight.data = torch.empty(2, 3, dtype=F64, device="meta")
        what = "parameter 'weight'"
    else:
        layer.register_buffer("scale", torch.empty(3, dtype=F64, device="meta"))
        what = "buffer 'scale'"
    assert layer.bias is not None
    bias, bias_grad = layer.bias.data.clone(), layer.bias.grad.clone()
    calls: list[int] = []
    original = layer.forward

    def counted(input: Tensor) -> Tensor:
        calls.append(1)
        return original(input)

    layer.forward = counted  # type: ignore[method-assign]
    with pytest.raises(
        ValueError,
        match=rf"^gradcheck: {re.escape(what)} is on the meta device, which holds no values to "
        "take finite differences of$",
    ):
        minidl.gradcheck(layer, x)
    assert calls == []
    assert torch.equal(layer.bias.data, bias) and torch.equal(layer.bias.grad, bias_grad)


class _ScaledCentredWithBias(nn.Module):
    """y = scale * (z - mean(z)) over the batch, z = x * w + c: a bias before a centring (its
    gradient zero but for rounding, about 1e-16 * scale), the backward accumulating it row by
    row, so that a second backward's sum rounds otherwise than twice the first; w's and the
    input's gradients are about ``scale``."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.scale = scale
        self.w = self.register_parameter("w", nn.Parameter(torch.randn(3, dtype=F64)))
        self.c = self.register_parameter("c", nn.Parameter(torch.randn(3, dtype=F64)))

    def forward(self, input: Tensor) -> Tensor:
        self._input = input.clone()
        z = input * self.w.data + self.c.data
        return self.scale * (z - z.mean(0))

    def backward(self, grad_output: Tensor) -> Tensor:
        g = self.scale * (grad_output - grad_output.mean(0))
        self.w.grad.add_((g * self._input).sum(0))
        for row in g:
            self.c.grad.add_(row)
        return g * self.w.data


@pytest.mark.parametrize("scale", [1e3, 1e4])
def test_a_rounding_gradient_beside_large_ones_is_judged_against_the_largest(scale: float) -> None:
    """c's gradient (about 1e-16 * scale, of a true 0) is judged against a millionth of the
    largest gradient (about scale), not of 1: a second backward's rounding of it (about
    1e-13 * scale / 10) is no overwrite, and the module, whose gradients are right, passes.
    (Mutant G43: the floor 1e-6 * largest replaced by 1e-6, which called it overwritten.)"""
    module = _ScaledCentredWithBias(scale)
    torch.manual_seed(0)
    x = 1.7 * torch.randn(4, 3, dtype=F64)
    assert minidl.gradcheck(module, x, seed=0) is True


# -- anomaly ------------------------------------------------------------------------------------


def test_checks_only_is_false_for_a_method_not_set_on_the_instance() -> None:
    """checks_only says whether the instance holds detect_anomaly's check over its class's
    method: a module whose instance holds no such method (outside a block, or a module the
    block does not watch) is False, and one watched is True until the block ends. (Mutant A06:
    a method not held, None, was taken for a check over nothing, True.)"""
    torch.manual_seed(0)
    layer, other = nn.Linear(3, 2), nn.Linear(3, 2)
    assert anomaly.checks_only(layer, "forward") is False
    with detect_anomaly(layer):
        assert anomaly.checks_only(layer, "forward") is True
        assert anomaly.checks_only(other, "forward") is False
    assert anomaly.checks_only(layer, "forward") is False


class _ListSplit(nn.Module):
    """Returns its input's halves as a list, the second divided by 0 at its 0s; its backward
    returns a gradient per half, as a list, the second infinite."""

    def forward(self, input: Tensor) -> list[Tensor]:
        return [input[:2] * 1.0, input[2:] / input[2:]]

    def backward(self, first: Tensor, second: Tensor) -> list[Tensor]:
        return [first * 1.0, second / 0.0]


def test_each_tensor_of_a_list_is_checked_and_named_by_its_position() -> None:
    """A forward returning a list of tensors, or a backward returning a list of gradients, has
    each checked as a tuple's is, named by its position (``output 1``, ``returned gradient
    1``). (Mutant A04: a list was taken for one value, no tensor, and NaN passed unreported.)"""
    split = _ListSplit()
    x = torch.tensor([1.0, 2.0, 3.0, 0.0])
    with detect_anomaly(split), pytest.raises(AnomalyError) as error:
        split(x)
    assert (error.value.pass_, error.value.what, error.value.index) == ("forward", "output 1", (1,))
    assert torch.isnan(torch.tensor(error.value.value))
    with detect_anomaly(split), pytest.raises(AnomalyError) as error:
        split.backward(torch.ones(2), torch.ones(2))
    assert (error.value.pass_, error.value.what, error.value.index) == (
        "backward",
        "returned gradient 1",
        (0,),
    )
    assert error.value.value == float("inf")


class _LazyScale(nn.Module):
    """y = x * s, s registered at its first forward (a lazy module of one's own)."""

    def forward(self, input: Tensor) -> Tensor:
        if "s" not in self._parameters:
            self.register_parameter("s", nn.Parameter(torch.ones(input.shape[1])))
        self._input = input.clone()
        return input * self._parameters["s"].data

    def backward(self, grad_output: Tensor) -> Tensor:
        s = self._parameters["s"]
        s.grad.add_((grad_output * self._input).sum(0))
        return grad_output * s.data


@pytest.mark.parametrize("block", [False, True])
def test_a_nested_sequential_after_a_lazily_trained_first_layer_is_noted_as_reached_by_backward(
    block: bool,
) -> None:
    """The model's first layer gets its parameter at its first forward, after the model was
    built (when no layer had one, and the last was taken for the first trained): its
    backward_parameters reaches the nested Sequential after it by ``backward``, and a refusal
    inside it is noted so, inside ``detect_anomaly()`` as without it (the model's first
    trained layer found again, a registration being made since). (Mutant A15: inside the
    block, the stale first trained layer, the last, was used, and the nested Sequential noted
    as reached by backward_parameters.)"""
    torch.manual_seed(0)
    model = nn.Sequential(_LazyScale(), nn.Sequential(nn.Tanh(), OneColumnGradient()), nn.Tanh())
    model(torch.randn(5, 3))
    with (
        detect_anomaly() if block else contextlib.nullcontext(),
        pytest.raises(ValueError, match=r"^Tanh: gradient has shape \(5, 1\)") as raised,
    ):
        model.backward_parameters(torch.ones(5, 3))
    assert getattr(raised.value, "__notes__", None) == [
        "in Sequential.backward, at module 0 (Tanh), given the gradient returned by the backward "
        "of module 1 (OneColumnGradient)",
        "in Sequential.backward_parameters, at module 1 (Sequential), given the gradient returned "
        "by the backward of module 2 (Tanh)",
    ]


class _NanBackward(nn.Module):
    """The identity, whose backward writes NaN at [0, 1] of the gradient it returns."""

    def forward(self, input: Tensor) -> Tensor:
        return input.clone()

    def backward(self, grad_output: Tensor) -> Tensor:
        gradient = grad_output.clone()
        gradient[0, 1] = float("nan")
        return gradient


@pytest.mark.parametrize("given", [False, True], ids=["no modules", "the model given"])
def test_an_anomaly_in_a_nested_sequential_is_no_refusal_noted_by_the_outer_one(
    given: bool,
) -> None:
    """Inside ``detect_anomaly()``, the AnomalyError of a nested Sequential's layer is the
    block's own report, not a refusal of a gradient: the outer Sequential adds no note of where
    that gradient came from (as it does to a layer's refusal), with no modules given and with
    the model given alike. (Mutant A17: every error noted, the AnomalyError given a note
    blaming the gradient of the Tanh after it; and with the model given, the Sequentials'
    notes said "given the gradient passed to Sequential.backward" until fixed.)"""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 3), _NanBackward()), nn.Tanh()
    )
    output = model(torch.randn(4, 3))
    block = detect_anomaly(model) if given else detect_anomaly()
    with block, pytest.raises(AnomalyError) as info:
        model.backward(torch.ones_like(output))
    assert (info.value.module, info.value.what, info.value.index) == (
        "Sequential[1][1]: _NanBackward",
        "returned gradient",
        (0, 1),
    )
    assert getattr(info.value, "__notes__", []) == []


class _Densify(nn.Module):
    """y = dense(x), for a sparse input x; the identity backward."""

    def forward(self, input: Tensor) -> Tensor:
        return input.to_dense() * 1.0

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


def test_a_sparse_input_is_not_read_and_the_dense_output_is_checked() -> None:
    """A sparse input (no strided layout) is not read by the checks, which leave it to the
    module (torch has no isfinite of a sparse tensor); the module's dense output is checked,
    and its NaN named. (Mutant A20: the layout test dropped, torch's NotImplementedError
    raised for the input.)"""
    x = torch.tensor([[0.0, float("nan")], [1.0, 0.0]]).to_sparse()
    module = _Densify()
    with detect_anomaly(module), pytest.raises(AnomalyError) as info:
        module(x)
    assert (info.value.module, info.value.pass_, info.value.what, info.value.index) == (
        "_Densify",
        "forward",
        "output",
        (0, 1),
    )


class _ByName(nn.Module):
    """Calls its Linear with the input given by name (``self.inner(input=x)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = self.register_module("inner", nn.Linear(3, 3))

    def forward(self, input: Tensor) -> Tensor:
        return self.inner(input=input)

    def backward(self, grad_output: Tensor) -> Tensor:
        return self.inner.backward(grad_output)


def test_a_layer_called_by_name_inside_a_containers_trial_gets_its_input() -> None:
    """A batch norm in training mode makes the Sequential run its evaluation-mode trial first,
    where the checks stand aside: a watched layer called with its input by name there is still
    given it, and the model's output is the one computed without the block, bit for bit.
    (Mutant A24: the trial's call dropped the named inputs, a TypeError.)"""
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    outputs = []
    for block in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(_ByName(), nn.BatchNorm1d(3))
        with detect_anomaly(model) if block else contextlib.nullcontext():
            outputs.append(model(x))
    assert torch.equal(outputs[1], outputs[0])
