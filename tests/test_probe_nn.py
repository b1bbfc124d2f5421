"""Probes of minidl.nn as a demanding PyTorch user, with PyTorch as the oracle: non-contiguous
and aliasing inputs and gradients, dtypes, empty and special inputs, backward twice, modules
cast between forward and backward, and the contract the Module docstring states about caches.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import numpy
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import minidl.nn.module as module_file
from minidl import nn
from minidl.nn.sigmoid import sigmoid
from tests.helpers import torch_twin

F64 = torch.float64


def _close(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12, equal_nan=True)


# -- views: transposed, stepped, expanded (stride 0), channels-last-like ---------------------------


def _views(rows: int, columns: int) -> dict[str, Tensor]:
    return {
        "contiguous": torch.randn(rows, columns, dtype=F64),
        "transposed": torch.randn(columns, rows, dtype=F64).t(),
        "stepped": torch.randn(2 * rows, 3 * columns, dtype=F64)[1::2, ::3],
        "expanded-row": torch.randn(1, columns, dtype=F64).expand(rows, columns),
        "expanded-column": torch.randn(rows, 1, dtype=F64).expand(rows, columns),
        "channels-last": torch.randn(rows, columns, 1, 1, dtype=F64).contiguous(
            memory_format=torch.channels_last
        )[:, :, 0, 0],
    }


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("view", list(_views(1, 1)))
def test_linear_matches_pytorch_on_views_of_input_and_gradient(view: str, bias: bool) -> None:
    x = _views(6, 4)[view]
    layer = nn.Linear(4, 3, bias=bias, dtype=F64)
    twin = torch.nn.Linear(4, 3, bias=bias, dtype=F64)
    with torch.no_grad():
        twin.weight.copy_(layer.weight.data)
        if bias:
            assert layer.bias is not None
            twin.bias.copy_(layer.bias.data)
    for grad in (_views(6, 3)[view], torch.tensor(1.5, dtype=F64).expand(6, 3)):
        layer.zero_grad()
        twin.zero_grad()
        output = layer(x)
        grad_x = layer.backward(grad)
        reference = x.clone().requires_grad_()
        twin_output = twin(reference)
        twin_output.backward(grad)
        _close(output, twin_output.detach())
        assert reference.grad is not None
        _close(grad_x, reference.grad)
        _close(layer.weight.grad, twin.weight.grad)
        if bias:
            assert layer.bias is not None
            _close(layer.bias.grad, twin.bias.grad)


_ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.nn.Module]]] = {
    "Tanh": (nn.Tanh, torch.nn.Tanh),
    "ReLU": (nn.ReLU, torch.nn.ReLU),
    "Sigmoid": (nn.Sigmoid, torch.nn.Sigmoid),
    "ELU": (lambda: nn.ELU(0.7), lambda: torch.nn.ELU(0.7)),
    "SELU": (nn.SELU, torch.nn.SELU),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.1), lambda: torch.nn.LeakyReLU(0.1)),
    "GELU": (nn.GELU, torch.nn.GELU),
    "GELU tanh": (lambda: nn.GELU("tanh"), lambda: torch.nn.GELU("tanh")),
    "SiLU": (nn.SiLU, torch.nn.SiLU),
    "Softmax": (nn.Softmax, lambda: torch.nn.Softmax(1)),
    "LogSoftmax": (nn.LogSoftmax, lambda: torch.nn.LogSoftmax(1)),
    "Identity": (nn.Identity, torch.nn.Identity),
}


@pytest.mark.parametrize("name", list(_ACTIVATIONS))
def test_activations_match_pytorch_on_views_and_aliased_gradients(name: str) -> None:
    """Every view as input, and as gradient: another view, the input itself, the module's own
    output (its cache, for Tanh, ReLU, Sigmoid and Softmax)."""
    make, make_twin = _ACTIVATIONS[name]
    inputs, grads = _views(5, 4), _views(5, 4)
    for x in inputs.values():
        for grad_name in [*grads, "input", "output"]:
            module = make()
            output = module(x)
            grad = {"input": x, "output": output}.get(grad_name, grads.get(grad_name))
            assert grad is not None
            expected_grad = grad.clone()
            grad_x = module.backward(grad)
            reference = x.clone().requires_grad_()
            twin_output = make_twin()(reference)
            twin_output.backward(expected_grad)
            _close(output, twin_output.detach())
            assert reference.grad is not None
            _close(grad_x, reference.grad)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_pytorch_on_views_and_aliased_gradients(
    training: bool, affine: bool
) -> None:
    for x in _views(6, 4).values():
        for grad in (torch.randn(4, 6, dtype=F64).t(), x, torch.ones(1, 4, dtype=F64).expand(6, 4)):
            layer = nn.BatchNorm1d(4, affine=affine, dtype=F64)
            twin = torch.nn.BatchNorm1d(4, affine=affine, dtype=F64)
            layer.running_mean.copy_(torch.randn(4, dtype=F64))
            layer.running_var.copy_(torch.rand(4, dtype=F64) + 0.5)
            twin.load_state_dict(layer.state_dict())
            layer.train(training)
            twin.train(training)
            output = layer(x)
            grad_x = layer.backward(grad)
            reference = x.clone().requires_grad_()
            twin_output = twin(reference)
            twin_output.backward(grad)
            _close(output, twin_output.detach())
            assert reference.grad is not None
            _close(grad_x, reference.grad)
            _close(layer.running_mean, twin.running_mean)
            _close(layer.running_var, twin.running_var)
            if affine:
                assert layer.weight is not None and twin.weight.grad is not None
                _close(layer.weight.grad, twin.weight.grad)


def test_losses_match_pytorch_on_views_and_special_values() -> None:
    special = torch.tensor(
        [[1e308, -1e308, 0.0], [-0.0, 5e-324, 1.0], [50.0, -50.0, 2.0], [800.0, -800.0, 1e-310]],
        dtype=F64,
    )
    predictions = {**_views(4, 3), "special": special, "one sample": torch.randn(1, 3, dtype=F64)}
    for z in predictions.values():
        n = z.shape[0]
        dense, indices = torch.rand(3, n, dtype=F64).t(), torch.randint(0, 3, (2 * n,))[::2]
        cases: list[tuple[nn.Loss, Callable[[Tensor, Tensor], Tensor], Tensor]] = [
            (nn.L1Loss("sum"), lambda a, b: F.l1_loss(a, b, reduction="sum"), dense),
            (nn.HuberLoss(0.3), lambda a, b: F.huber_loss(a, b, delta=0.3), dense),
            (nn.BCEWithLogitsLoss(), F.binary_cross_entropy_with_logits, dense),
            (nn.NLLLoss("sum"), lambda a, b: F.nll_loss(a, b, reduction="sum"), indices),
            (nn.MSELoss("mean"), F.mse_loss, dense),
        ]
        if z is not special:  # (PyTorch's log_softmax gradient of +-1e308 is NaN)
            cases.append((nn.CrossEntropyLoss(), F.cross_entropy, indices))
        for criterion, reference_loss, target in cases:
            loss = criterion(z, target)
            grad = criterion.backward()
            reference = z.clone().requires_grad_()
            expected = reference_loss(reference, target)
            expected.backward()
            _close(loss, expected.detach())
            assert reference.grad is not None
            _close(grad, reference.grad)


# -- no features: refused with a clear message (ZeroDivisionError, IndexError or 0 before) --------


@pytest.mark.parametrize(
    "call",
    [
        lambda: nn.Softmax()(torch.randn(3, 0)),
        lambda: nn.LogSoftmax()(torch.randn(3, 0)),
        lambda: nn.L1Loss()(torch.randn(3, 0), torch.randn(3, 0)),
        lambda: nn.HuberLoss()(torch.randn(3, 0), torch.randn(3, 0)),
        lambda: nn.BCEWithLogitsLoss()(torch.randn(3, 0), torch.rand(3, 0)),
        lambda: nn.MSELoss()(torch.randn(3, 0), torch.randn(3, 0)),
        lambda: nn.MSELoss("mean")(torch.randn(3, 0), torch.randn(3, 0)),
        lambda: nn.MSELoss("sum")(torch.randn(3, 0), torch.randn(3, 0)),
        lambda: nn.CrossEntropyLoss()(torch.randn(3, 0), torch.zeros(3, dtype=torch.int64)),
        lambda: nn.NLLLoss()(torch.randn(3, 0), torch.zeros(3, dtype=torch.int64)),
    ],
    ids=["Softmax", "LogSoftmax", "L1", "Huber", "BCE", "MSE", "MSE-mean", "MSE-sum", "CE", "NLL"],
)
def test_zero_features_are_refused_clearly(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"no features \((?:input|prediction) shape \(3, 0\)\)"):
        call()


def test_stacked_prediction_without_features_is_refused_clearly() -> None:
    for criterion in (nn.CrossEntropyLoss(), nn.MSELoss()):
        with pytest.raises(
            ValueError, match=r"empty stack, batch or feature dimension.*\(2, 3, 0\)"
        ):
            criterion(torch.randn(2, 3, 0), torch.zeros(2, 3, dtype=torch.int64))


# -- a module cast between forward and backward -----------------------------------------------------


@pytest.mark.parametrize("grad_dtype", [torch.float32, F64])
@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Linear(2, 3),
        lambda: nn.Linear(2, 3, bias=False),
        lambda: nn.mlp((2, 4, 3)),
        lambda: nn.BatchNorm1d(2),
        lambda: nn.BatchNorm1d(2, affine=False),
        lambda: nn.BatchedLinear(2, 2, 3),
    ],
    ids=[
        "Linear",
        "Linear-no-bias",
        "mlp",
        "BatchNorm1d",
        "BatchNorm1d-no-affine",
        "BatchedLinear",
    ],
)
def test_backward_after_a_cast_is_refused_clearly_and_changes_nothing(
    make: Callable[[], nn.Module], grad_dtype: torch.dtype
) -> None:
    """It used to raise the tensor library's "self and mat2 must have the same dtype" (Linear,
    BatchedLinear) or mix the float32 cache into float64 gradients (BatchNorm1d)."""
    module = make()
    x = torch.randn(2, 5, 2) if isinstance(module, nn.BatchedLinear) else torch.randn(5, 2)
    output = module(x)
    module.to(F64)
    with pytest.raises(RuntimeError, match=r"cast or moved \(\.to\(\.\.\.\)\) after that forward"):
        module.backward(torch.ones(output.shape, dtype=grad_dtype))
    assert all(not parameter.grad.any() for parameter in module.parameters())
    module.backward(module(x.to(F64)).clone())  # a new forward mends it


@pytest.mark.parametrize("dtypes", [(torch.float32, F64), (F64, torch.float32)])
@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
def test_a_model_layout_stack_cast_after_its_forward_refuses_backward(
    dtypes: tuple[torch.dtype, torch.dtype], method: str
) -> None:
    """A layout="model" stack keeps one gradient temporary per layer, of the forward's dtype:
    the stale product was added into the cast gradients (backward then raised the tensor
    library's message, backward_parameters nothing at all)."""
    before, after = dtypes
    stack = nn.stack_models([nn.mlp((3, 4, 2), dtype=before) for _ in range(3)], layout="model")
    layer = stack[0]
    assert isinstance(layer, nn.BatchedLinear)
    output = layer(torch.randn(3, 5, 3, dtype=before))
    stack.to(after)
    with pytest.raises(RuntimeError, match=r"^BatchedLinear: the parameters are .* cast or moved"):
        getattr(layer, method)(torch.ones(output.shape, dtype=before))
    assert all(not parameter.grad.any() for parameter in stack.parameters())


# -- unstack_model takes one model ------------------------------------------------------------------


def test_unstacking_draws_nothing_from_torchs_generator() -> None:
    """Each layer taken out of a stack was built with a random initialisation (R of them for
    one model), which moved the global generator: the Dropout masks and draws that followed a
    model's export or evaluation changed."""
    stack = nn.stack_models([nn.mlp((2, 5, 3)) for _ in range(4)])
    layer = stack[0]
    assert isinstance(layer, nn.BatchedLinear)
    state = torch.get_rng_state()
    model = nn.unstack_model(stack, 1)
    layers = layer.unstack()
    assert torch.equal(torch.get_rng_state(), state)
    first = model[0]
    assert isinstance(first, nn.Linear) and first.bias is not None and layer.bias is not None
    assert torch.equal(first.weight.data, layer.weight.data[1])
    assert torch.equal(first.bias.data, layer.bias.data[1])
    assert torch.equal(layers[3].weight.data, layer.model(-1).weight.data)
    with pytest.raises(IndexError, match=r"^BatchedLinear.model: index 4 is out of range for 4"):
        layer.model(4)
    with pytest.raises(TypeError, match=r"^BatchedLinear.model: expected an integer index, got"):
        layer.model(1.0)  # type: ignore[arg-type]


def test_unstack_model_refuses_a_slice_clearly() -> None:
    """It used to fail inside Sequential ("argument 0 must be a minidl Module, got list")."""
    for activations in (("tanh", "tanh"), ("tanh", "relu")):
        stacked = nn.stack_models([nn.mlp((2, 3, 2), name) for name in activations])
        with pytest.raises(TypeError, match="unstack_model: expected the index of one model"):
            nn.unstack_model(stacked, slice(0, 2))  # type: ignore[arg-type]


# -- the cache contract the Module docstring states --------------------------------------------------


def _every_module() -> list[tuple[nn.Module, Tensor]]:
    x = torch.randn(6, 4, dtype=F64)
    modules: list[nn.Module] = [
        nn.Linear(4, 3, dtype=F64),
        nn.BatchNorm1d(4, dtype=F64),
        nn.BatchNorm1d(4, affine=False, dtype=F64),
        nn.Dropout(0.5),
        nn.Residual(nn.Sequential(nn.Linear(4, 4, dtype=F64), nn.Tanh())),
        nn.mlp((4, 5, 2), "elu", dtype=F64),
        *(make() for make, _ in _ACTIVATIONS.values()),
    ]
    return [(module, x) for module in modules]


def test_backward_twice_repeats_itself_and_changes_neither_its_argument_nor_the_cache() -> None:
    for module, x in _every_module():
        output = module(x)
        kept_output = output.clone()
        grad = torch.randn(output.shape, dtype=F64)
        kept_grad = grad.clone()
        first = module.backward(grad)
        once = [parameter.grad.clone() for parameter in module.parameters()]
        second = module.backward(grad)
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        torch.testing.assert_close(grad, kept_grad, rtol=0, atol=0)
        torch.testing.assert_close(output, kept_output, rtol=0, atol=0)
        for parameter, grad_once in zip(module.parameters(), once, strict=True):
            _close(parameter.grad, 2 * grad_once)
        if not isinstance(module, nn.Identity) and first is not grad:
            first.mul_(0)  # the returned gradient is the caller's: changing it changes nothing
            torch.testing.assert_close(module.backward(grad), second, rtol=0, atol=0)


def test_changing_the_cached_output_in_place_is_documented_not_detected() -> None:
    """PyTorch raises ("modified by an inplace operation"); minidl keeps references for speed,
    and says so in the Module docstring."""
    assert module_file.__doc__ is not None
    assert "Changing any of them in place between a forward" in module_file.__doc__
    assert nn.Module.__doc__ is not None and "does not register it" in nn.Module.__doc__
    tanh = nn.Tanh()
    x = torch.randn(3, dtype=F64)
    output = tanh(x)
    output.zero_()
    assert torch.equal(tanh.backward(torch.ones(3, dtype=F64)), torch.ones(3, dtype=F64))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        reference = torch.tanh(x.clone().requires_grad_())
        reference.zero_()
        reference.sum().backward()


# -- tensors in the memory of the gradients that backward writes ---------------------------------


def _residual_last() -> nn.Module:
    return nn.Sequential(
        nn.Linear(4, 4, dtype=F64),
        nn.Residual(nn.Sequential(nn.Linear(4, 4, dtype=F64), nn.Tanh())),
    )


def _batched() -> nn.Module:
    return nn.BatchedLinear.stack([nn.Linear(4, 4, dtype=F64) for _ in range(2)])


def _chain() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 4, dtype=F64), nn.Tanh(), nn.Linear(4, 4, dtype=F64))


class _OwnBlock(nn.Module):
    """A module of one's own holding two layers and a Tanh, its backward theirs in turn: the
    second layer's backward writes its gradients before the first reads its cached input."""

    def __init__(self) -> None:
        super().__init__()
        self.first = self.register_module("first", nn.Linear(4, 4, dtype=F64))
        self.tanh = self.register_module("tanh", nn.Tanh())
        self.second = self.register_module("second", nn.Linear(4, 4, dtype=F64))

    def forward(self, input: Tensor) -> Tensor:
        output: Tensor = self.second(self.tanh(self.first(input)))
        return output

    def backward(self, grad_output: Tensor) -> Tensor:
        grad_input: Tensor = self.first.backward(
            self.tanh.backward(self.second.backward(grad_output))
        )
        return grad_input


_IN_GRADIENTS: dict[str, tuple[Callable[[], nn.Module], str, Callable[[nn.Module], Tensor]]] = {
    "Linear input weight.grad": (
        lambda: nn.Linear(4, 4, dtype=F64),
        "input",
        lambda m: m.get_parameter("weight").grad,
    ),
    "Linear gradient weight.grad": (
        lambda: nn.Linear(4, 4, dtype=F64),
        "gradient",
        lambda m: m.get_parameter("weight").grad,
    ),
    "Linear gradient weight.grad.t()": (
        lambda: nn.Linear(4, 4, dtype=F64),
        "gradient",
        lambda m: m.get_parameter("weight").grad.t(),
    ),
    "Linear gradient bias.grad expanded": (
        lambda: nn.Linear(4, 4, dtype=F64),
        "gradient",
        lambda m: m.get_parameter("bias").grad.expand(4, 4),
    ),
    "Sequential input last weight.grad": (
        _chain,
        "input",
        lambda m: m.get_parameter("2.weight").grad,
    ),
    "Sequential input first weight.grad": (
        _chain,
        "input",
        lambda m: m.get_parameter("0.weight").grad,
    ),
    "Sequential gradient last weight.grad": (
        _chain,
        "gradient",
        lambda m: m.get_parameter("2.weight").grad,
    ),
    "Sequential gradient last bias.grad expanded": (
        _chain,
        "gradient",
        lambda m: m.get_parameter("2.bias").grad.expand(4, 4),
    ),
    "Residual gradient its weight.grad": (
        _residual_last,
        "gradient",
        lambda m: m.get_parameter("1.block.0.weight").grad,
    ),
    "Residual input, its own block's second weight.grad": (
        lambda: nn.Residual(_OwnBlock()),
        "input",
        lambda m: m.get_parameter("block.second.weight").grad,
    ),
    "Residual gradient, its own block's second weight.grad": (
        lambda: nn.Residual(_OwnBlock()),
        "gradient",
        lambda m: m.get_parameter("block.second.weight").grad,
    ),
    "Sequential input, its own module's second weight.grad": (
        lambda: nn.Sequential(_OwnBlock(), nn.Tanh()),
        "input",
        lambda m: m.get_parameter("0.second.weight").grad,
    ),
    "BatchNorm1d gradient weight.grad expanded": (
        lambda: nn.BatchNorm1d(4, dtype=F64),
        "gradient",
        lambda m: m.get_parameter("weight").grad.expand(4, 4),
    ),
    "BatchNorm1d in evaluation gradient weight.grad expanded": (
        lambda: nn.BatchNorm1d(4, dtype=F64).eval(),
        "gradient",
        lambda m: m.get_parameter("weight").grad.expand(4, 4),
    ),
    "Residual alone gradient its weight.grad": (
        lambda: nn.Residual(nn.Linear(4, 4, dtype=F64)),
        "gradient",
        lambda m: m.get_parameter("block.weight").grad,
    ),
    "BatchedLinear input weight.grad": (
        _batched,
        "input",
        lambda m: m.get_parameter("weight").grad,
    ),
    "BatchedLinear gradient weight.grad": (
        _batched,
        "gradient",
        lambda m: m.get_parameter("weight").grad,
    ),
    "BatchedLinear gradient bias.grad expanded": (
        _batched,
        "gradient",
        lambda m: m.get_parameter("bias").grad.unsqueeze(1).expand(2, 4, 4),
    ),
}


@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
@pytest.mark.parametrize("steps", [0, 3])
@pytest.mark.parametrize("case", list(_IN_GRADIENTS))
def test_an_input_or_gradient_in_a_gradients_memory_is_read_as_given(
    case: str, steps: int, method: str
) -> None:
    """``model(layer.weight.grad)`` or ``model.backward(layer.weight.grad)`` (or a view of it):
    the result is that of a copy given instead, bit for bit (PyTorch's autograd computes from
    the values given). Before, the accumulation into the gradient wrote over the tensor that it,
    or a layer after it, or the residual skip, still had to read: every gradient of the first
    layer, and the input gradient, were wrong (a batch normalisation's bias gradient and input
    gradient read its weight gradient's new values). After ``steps`` plain steps (3: a Sequential runs
    its plan), through ``method``. (A stack of models is a Sequential of BatchedLinear
    layers.)"""
    make, where, pick = _IN_GRADIENTS[case]
    torch.manual_seed(0)
    model = make()
    for parameter in model.parameters():
        parameter.grad.normal_()
    twin = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    shape = (2, 4, 4) if isinstance(model, nn.BatchedLinear) else (4, 4)
    for _ in range(steps):
        x, grad = (torch.randn(shape, dtype=F64, generator=generator) for _ in range(2))
        for each in (model, twin):
            each(x)
            each.backward(grad)
    x, grad = (torch.randn(shape, dtype=F64, generator=generator) for _ in range(2))
    if where == "input":
        x = pick(model)
    x_copy = x.clone()
    output = model(x)
    if where == "gradient":
        grad = pick(model)
    grad_copy = grad.clone()
    grad_x = getattr(model, method)(grad)
    assert torch.equal(output, twin(x_copy))
    expected_grad_x = getattr(twin, method)(grad_copy)
    assert (grad_x is None) if expected_grad_x is None else torch.equal(grad_x, expected_grad_x)
    for (name, parameter), expected in zip(
        model.named_parameters(), twin.parameters(), strict=True
    ):
        assert torch.equal(parameter.grad, expected.grad), name


@pytest.mark.parametrize(
    "make",
    [lambda: nn.Linear(4, 4, dtype=F64), _batched, _chain, _residual_last],
    ids=["Linear", "BatchedLinear", "Sequential", "Residual"],
)
def test_an_input_in_a_gradients_memory_is_read_as_given_after_zero_grad(
    make: Callable[[], nn.Module],
) -> None:
    """``layer(layer.weight.grad)``, then ``zero_grad()`` (a common order of a loop), then the
    backward: a layer used alone cached the input as given and copied it only at the
    backward, after zero_grad had zeroed it (its weight gradient came out 0), where a
    Sequential copies it in the forward. Copied as it is cached now: the gradients are those of
    a copy given instead, bit for bit."""
    torch.manual_seed(0)
    model = make()
    for parameter in model.parameters():
        parameter.grad.normal_()
    twin = copy.deepcopy(model)
    x = model.get_parameter(next(name for name, _ in model.named_parameters())).grad
    if x.dim() == 1:
        x = x.expand(4, 4)
    x_copy = x.clone()
    shape = (2, 4, 4) if isinstance(model, nn.BatchedLinear) else (4, 4)
    grad = torch.randn(shape, dtype=F64)
    model(x)
    twin(x_copy)
    model.zero_grad()
    twin.zero_grad()
    assert torch.equal(model.backward(grad), twin.backward(grad))
    for (name, parameter), expected in zip(
        model.named_parameters(), twin.parameters(), strict=True
    ):
        assert torch.equal(parameter.grad, expected.grad), name
    assert any(bool(parameter.grad.any()) for parameter in model.parameters())


@pytest.mark.parametrize("change", ["grad assigned", "weight registered"])
@pytest.mark.parametrize("make", [lambda: nn.Linear(4, 4, dtype=F64), _chain, _residual_last])
def test_a_gradient_tensor_changed_after_a_call_is_found_in_its_new_memory(
    make: Callable[[], nn.Module], change: str
) -> None:
    """After a first forward and backward, the last Linear's weight gets a gradient tensor of
    its own (``weight.grad = ...``: a Parameter assignment), or a new weight Parameter made
    before that call (``register_parameter``: a registration alone, no tensor assigned since);
    that new gradient given as the model's backward gradient is read as given, as a copy is by
    a twin, bit for bit. (The memory found at the first call, or found again after assignments
    only, or after registrations only, missed it: the accumulation wrote over the gradient
    still to be read.)"""
    torch.manual_seed(0)
    model = make()
    twin = copy.deepcopy(model)
    spares = [nn.Parameter(torch.randn(4, 4, dtype=F64)) for _ in range(2)]
    spares[1].data.copy_(spares[0].data)
    generator = torch.Generator().manual_seed(1)
    x, grad, new_grad = (torch.randn(4, 4, dtype=F64, generator=generator) for _ in range(3))
    for each in (model, twin):
        each(x)
        each.backward(grad)
    for each, spare in zip((model, twin), spares, strict=True):
        layer = [module for module in each.modules() if isinstance(module, nn.Linear)][-1]
        if change == "grad assigned":
            layer.weight.grad = new_grad.clone()
        else:
            spare.grad.copy_(new_grad)
            layer.weight = layer.register_parameter("weight", spare)
    given = [p for n, p in model.named_parameters() if n.endswith("weight")][-1].grad
    assert torch.equal(model(x), twin(x))
    assert torch.equal(model.backward(given), twin.backward(new_grad.clone()))
    for (name, parameter), expected in zip(
        model.named_parameters(), twin.parameters(), strict=True
    ):
        assert torch.equal(parameter.grad, expected.grad), name


def _memory(kind: str, length: int) -> tuple[Tensor, Callable[[int, int], Tensor]]:
    """A float64 tensor over ``length`` elements of memory that PyTorch did not allocate, and a
    maker of tensors over a part of it (``offset``, ``count``) that are storages of their own,
    starting there, as a gradient kept in one numpy array, a bytearray or a slice of a storage
    has."""
    if kind == "numpy":
        array = numpy.zeros(length)
        return torch.from_numpy(array), lambda o, n: torch.from_numpy(array[o : o + n])
    if kind == "frombuffer":
        buffer = bytearray(8 * length)
        return torch.frombuffer(buffer, dtype=F64), lambda o, n: torch.frombuffer(
            buffer, dtype=F64, count=n, offset=8 * o
        )
    whole = torch.zeros(length, dtype=F64)
    storage = whole.untyped_storage()
    return whole, lambda o, n: torch.empty(0, dtype=F64).set_(
        storage[8 * o : 8 * (o + n)], 0, (n,), (1,)
    )


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
@pytest.mark.parametrize("where", ["input", "gradient"])
@pytest.mark.parametrize(
    "make", [lambda: nn.Linear(4, 3, dtype=F64), _chain], ids=["Linear", "Sequential"]
)
@pytest.mark.parametrize("kind", ["numpy", "frombuffer", "storage slice"])
def test_an_input_or_gradient_that_starts_before_a_gradient_s_memory_is_read_as_given(
    kind: str, make: Callable[[], nn.Module], where: str, method: str, layout: str
) -> None:
    """Gradients kept as tensors over parts of one memory (from_numpy of slices of one array,
    frombuffer at offsets of one bytearray, slices of one storage): an input or gradient over
    that memory that starts before the gradient it reaches (of the first layer for an input, of
    the last for a gradient) gives autograd's output, input gradient and parameter gradients
    (added to what the gradients held), contiguous or transposed. minidl looked for the first
    element in the gradients' storages, which start after it, and read the tensor after writing
    over its end."""
    torch.manual_seed(0)
    model = make()
    parameters = list(model.parameters())
    reached = parameters if where == "input" else parameters[::-1]
    prefix = 6
    whole, part = _memory(kind, prefix + sum(p.numel() for p in parameters))
    offset = prefix
    for parameter in reached:
        parameter.grad = part(offset, parameter.numel()).view(parameter.shape)
        offset += parameter.numel()
    whole.copy_(torch.randn(whole.shape, dtype=F64))
    first, last = parameters[0], parameters[-2]
    rows = 3
    x = torch.randn(rows, first.shape[1], dtype=F64)
    grad = torch.randn(rows, last.shape[0], dtype=F64)
    shape = x.shape if where == "input" else grad.shape
    span = whole[2 : 2 + shape.numel()]
    given = span.view(shape) if layout == "contiguous" else span.view(shape[::-1]).t()
    assert given.data_ptr() < reached[0].grad.data_ptr() < given[-1, -1].data_ptr()
    if where == "input":
        x = given
    held = [parameter.grad.clone() for parameter in parameters]
    twin = torch_twin(model)
    x_twin = x.clone().requires_grad_()
    output_twin = twin(x_twin)
    _close(model(x), output_twin)
    if where == "gradient":
        grad = given
    output_twin.backward(grad.clone())
    grad_x = getattr(model, method)(grad)
    if method == "backward":
        _close(grad_x, x_twin.grad)
    for parameter, before, expected in zip(parameters, held, twin.parameters(), strict=True):
        _close(parameter.grad, before + expected.grad)


def test_a_tensor_in_a_gradient_s_storage_is_found_when_a_window_of_it_ends_after_it() -> None:
    """A weight gradient in a storage PyTorch allocated, and a bias gradient over a slice of
    that storage (a window, searched as a range from address 0 to its end): the weight
    gradient given as the input is found in its storage, not taken for a tensor before the
    window that misses it, and the gradients are autograd's. (The windows are searched after
    the other storages: searched first, the window's range took the input and said no.)"""
    torch.manual_seed(0)
    layer = nn.Linear(4, 3, dtype=F64)
    memory = torch.randn(64, dtype=F64)
    layer.weight.grad = memory[:12].view(3, 4)
    layer.bias.grad = torch.empty(0, dtype=F64).set_(
        memory.untyped_storage()[8 * 40 : 8 * 43], 0, (3,), (1,)
    )
    x = layer.weight.grad
    held = [parameter.grad.clone() for parameter in layer.parameters()]
    twin = torch_twin(layer)
    x_twin = x.clone().requires_grad_()
    grad = torch.randn(3, 3, dtype=F64)
    output_twin = twin(x_twin)
    _close(layer(x), output_twin)
    output_twin.backward(grad)
    _close(layer.backward(grad), x_twin.grad)
    for parameter, before, expected in zip(
        layer.parameters(), held, twin.parameters(), strict=True
    ):
        _close(parameter.grad, before + expected.grad)


#: Views of a memory of 32 values, over which two gradients lie (at 4 to 8 and 20 to 22).
_VIEWS: dict[str, Callable[[Tensor], Tensor]] = {
    "ends where the first starts": lambda t: t[0:4],
    "reaches into the first": lambda t: t[0:5],
    "inside the first": lambda t: t[5:6],
    "starts where the first ends": lambda t: t[8:10],
    "between the two": lambda t: t[10:12],
    "reaches into the second": lambda t: t[18:21],
    "strided, an element in the first": lambda t: t[0:5:4],
    "strided, over the first": lambda t: t[1:10:8],
    "strided, ending before the first": lambda t: t[0:4:3],
    "strided, a step of 2 ending before the first": lambda t: t[0:3:2],
    "transposed, over the first": lambda t: t[0:8].view(2, 4).T,
    "transposed, between the two": lambda t: t[8:16].view(2, 4).T,
    "broadcast, ending before the first": lambda t: t[2:4].expand(3, 2),
    "broadcast, reaching into the second": lambda t: t[19:21].expand(3, 2),
}


def test_a_window_holds_a_tensor_whose_span_meets_it() -> None:
    """With gradients over parts of one numpy array (windows into it), a tensor over that
    array is held exactly when the span of its elements, from its first to its last, meets a
    window: not one that ends where a window starts, starts where it ends or lies between two,
    however strided; one that reaches into either, contiguous, strided, transposed or
    broadcast, is (the span as the same view of the indices 0 to 31 gives it). An empty
    tensor is not held."""
    from minidl.nn._gradient_memory import GradientMemory

    layer = nn.Linear(2, 2, dtype=F64)
    memory = numpy.zeros(32)
    layer.weight.grad = torch.from_numpy(memory[4:8]).view(2, 2)
    layer.bias.grad = torch.from_numpy(memory[20:22])
    windows = [(4, 8), (20, 22)]
    whole, index = torch.from_numpy(memory), torch.arange(32)
    gradients = GradientMemory()
    held = []
    for name, view in _VIEWS.items():
        first, last = int(view(index).min()), int(view(index).max())
        expected = any(low <= last and first < high for low, high in windows)
        assert gradients.holds(view(whole), layer) == expected, name
        held.append(expected)
    assert held.count(True) == 7
    assert not gradients.holds(whole[5:5], layer)


def test_a_tensor_over_the_last_byte_of_a_gradient_s_storage_is_held() -> None:
    """A gradient's storage reaches to its last byte: a tensor whose first element is there
    (a byte over it, here) is held, in a storage PyTorch allocated and in a window, and one
    just past it is not. (Each range taken one byte short, its end as the start of its last
    byte, passed the tests before, whose tensors start at a multiple of 8 bytes.)"""
    from minidl.nn._gradient_memory import GradientMemory

    def byte(storage: torch.UntypedStorage, offset: int) -> Tensor:
        return torch.empty(0, dtype=torch.uint8).set_(storage, offset, (1,))

    allocated = nn.Linear(2, 2, dtype=F64)
    storage = allocated.bias.grad.untyped_storage()
    assert GradientMemory().holds(byte(storage, storage.nbytes() - 1), allocated)
    window = nn.Linear(2, 2, dtype=F64)
    memory = numpy.zeros(32)
    window.weight.grad = torch.from_numpy(memory[4:8]).view(2, 2)  # (bytes 32 to 64)
    window.bias.grad = torch.from_numpy(memory[20:22])
    whole = torch.from_numpy(memory).untyped_storage()
    assert GradientMemory().holds(byte(whole, 63), window)
    assert not GradientMemory().holds(byte(whole, 64), window)


@pytest.mark.parametrize(
    "copier",
    ["none", "moved", "deepcopy", "pickle", "flattened"],
)
def test_gradients_pytorch_allocated_are_searched_by_their_first_element_only(copier: str) -> None:
    """The gradients of a model (new, moved with to(), deep-copied, loaded from a pickle, or a
    Sequential built over layers given numpy gradients, which it copies into its flat buffer)
    are in storages PyTorch allocated: none is a window, measured for every tensor that starts
    before its end (which would make each step's search dearer)."""
    torch.manual_seed(0)
    layers = [nn.Linear(4, 4, dtype=F64), nn.Tanh(), nn.Linear(4, 2, dtype=F64)]
    if copier == "flattened":
        for layer in layers:
            for parameter in layer.parameters():
                parameter.grad = torch.from_numpy(numpy.zeros(parameter.shape))
    model = nn.Sequential(*layers)
    if copier == "moved":
        model.to(torch.float32)
    elif copier == "deepcopy":
        model = copy.deepcopy(model)
    elif copier == "pickle":
        model = pickle.loads(pickle.dumps(model))
    dtype = next(model.parameters()).dtype
    for module in (model, model[0]):
        x = torch.randn(3, 4, dtype=dtype)
        assert not module._gradients.holds(x, module)
        assert module._gradients._windows == ()
        assert len(module._gradients._ranges) == 1  # (the flat buffer's storage)


# -- dtypes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, F64])
def test_every_float_dtype_trains_and_a_mixed_one_is_refused_clearly(dtype: torch.dtype) -> None:
    model = nn.mlp((3, 4, 2), "tanh", dtype=dtype)
    criterion = nn.CrossEntropyLoss()
    x = torch.randn(5, 3, dtype=dtype)
    loss = criterion(model(x), torch.tensor([0, 1, 1, 0, 1]))
    grad_x = model.backward(criterion.backward())
    assert loss.dtype == grad_x.dtype == dtype
    assert all(parameter.grad.dtype == dtype for parameter in model.parameters())
    other = torch.float32 if dtype != torch.float32 else F64
    with pytest.raises(TypeError, match=f"input dtype {other} does not match"):
        model(x.to(other))
    with pytest.raises(TypeError, match=f"gradient dtype {other} does not match"):
        model(x)
        model.backward(torch.ones(5, 2, dtype=other))


# -- load_state_dict with entries that are views of the module's own tensors ----------------------


def test_load_state_dict_entry_that_overlaps_its_destination_loads_whole() -> None:
    """A transposed view of the weight it is loaded into used to make ``copy_`` raise after the
    entries before it were written: the module was left half-loaded, against the docstring."""
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3))
    before = model.state_dict()
    state = {name: value + 1 for name, value in before.items()}
    state["2.weight"] = model[2].weight.data.t()
    model.load_state_dict(state)
    after = model.state_dict()
    torch.testing.assert_close(after["2.weight"], before["2.weight"].t(), rtol=0, atol=0)
    for name in ("0.weight", "0.bias", "2.bias"):
        torch.testing.assert_close(after[name], before[name] + 1, rtol=0, atol=0)


def test_load_state_dict_entries_are_their_values_at_the_call_whatever_the_write_order() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3))
    state = model.state_dict()
    old_first_bias = state["0.bias"].clone()
    state["0.bias"] = state["0.bias"] + 5  # written before "2.bias"
    state["2.bias"] = model[0].bias.data  # a view of the first bias, as it is now
    model.load_state_dict(state)
    torch.testing.assert_close(model[2].bias.data, old_first_bias, rtol=0, atol=0)
    torch.testing.assert_close(model[0].bias.data, old_first_bias + 5, rtol=0, atol=0)


def test_batch_norm_without_affine_takes_its_own_output_as_gradient() -> None:
    """The output is the cache there: backward must read it before writing anything."""
    for training in (True, False):
        layer = nn.BatchNorm1d(3, affine=False, dtype=F64).train(training)
        twin = torch.nn.BatchNorm1d(3, affine=False, dtype=F64).train(training)
        x = torch.randn(5, 3, dtype=F64)
        output = layer(x)
        grad_x = layer.backward(output)
        reference = x.clone().requires_grad_()
        twin_output = twin(reference)
        twin_output.backward(twin_output.detach().clone())
        assert reference.grad is not None
        _close(grad_x, reference.grad)


def test_names_with_a_prefix_are_joined_with_a_dot_as_in_pytorch() -> None:
    """``named_parameters("model")`` used to give ``"model0.weight"`` (``named_modules`` gave
    ``"model.0"``)."""
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Residual(nn.Linear(2, 2)))
    twin = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2), torch.nn.Module())
    twin[2].block = torch.nn.Linear(2, 2)
    for prefix in ("", "model", "a.b"):
        assert [name for name, _ in model.named_parameters(prefix)] == [
            name for name, _ in twin.named_parameters(prefix)
        ]
        assert [name for name, _ in model.named_buffers(prefix)] == [
            name for name, _ in twin.named_buffers(prefix)
        ]
        assert [name for name, _ in model.named_modules(prefix=prefix)] == [
            name for name, _ in twin.named_modules(prefix=prefix)
        ]
    first = next(iter(model.named_parameters("m", remove_duplicate=False)))
    assert first[0] == "m.0.weight"
    assert list(model.state_dict()) == list(twin.state_dict())


# -- float16 mean reductions ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_cross_entropy_gradients_past_float16s_largest_batch(dtype: torch.dtype) -> None:
    """The batch size was a 0-dim tensor of the logits' dtype: in float16, 70000 is inf, and
    p / N vanished from the gradient (a relative error of 1). Class indices and probabilities,
    against PyTorch in float64: within the 16-bit rounding of values this small."""
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(70000, 2, generator=generator).to(dtype)
    y = torch.randint(0, 2, (70000,), generator=generator)
    for target in (y, F.one_hot(y, 2).to(dtype)):
        criterion = nn.CrossEntropyLoss()
        loss = criterion(z, target)
        grad = criterion.backward()
        wide = z.double().requires_grad_()
        expected = F.cross_entropy(wide, target if target.dtype == torch.int64 else target.double())
        expected.backward()
        assert wide.grad is not None
        eps = torch.finfo(dtype).eps  # (the loss is rounded to the dtype)
        torch.testing.assert_close(loss.double(), expected.detach(), rtol=eps, atol=0)
        scale = float(wide.grad.abs().max())
        assert float((grad.double() - wide.grad).abs().max()) <= 1e-2 * scale


@pytest.mark.parametrize("rows", [4096, 2**18])
def test_a_float32_cross_entropy_mean_of_a_large_batch_is_as_accurate_as_pytorchs(
    rows: int,
) -> None:
    """The mean of the picked log-probabilities was one dot product with -1/N, whose running
    sums lose digits as N grows: 3e-6 off at 4096 rows, 1.4e-5 at 2**16 and 1.4e-4 at 2**20,
    where PyTorch's is within about 1e-7. The oracle: the loss in float64 (of the same
    float32 logits); the bound, 8 units in the last place of float32."""
    generator = torch.Generator().manual_seed(0)
    same = torch.tensor([[0.3, 0.0]]).expand(rows, 2).contiguous()
    spread = 3 * torch.randn(rows, 2, generator=generator)
    for logits in (same, spread):
        target = torch.randint(0, 2, (rows,), generator=generator)
        loss = nn.CrossEntropyLoss()(logits, target)
        exact = F.cross_entropy(logits.double(), target)
        assert abs(float(loss) - float(exact)) <= 8 * 2**-24 * float(exact)
        assert abs(float(F.cross_entropy(logits, target)) - float(exact)) <= 8 * 2**-24 * float(
            exact
        )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_mean_losses_do_not_overflow_where_the_mean_is_in_range(dtype: torch.dtype) -> None:
    """Summed in float16 before the division, these means of values well inside float16's range
    (65504) were ``inf``; PyTorch's are finite (it accumulates in float32). Stacked losses give
    each model's mean."""
    z = (torch.randn(64, 5, dtype=F64) * 2000).to(dtype)
    zero, probabilities = torch.zeros(64, 5, dtype=dtype), torch.rand(64, 5).to(dtype)
    log_probabilities = torch.full((2000, 3), -40.0, dtype=dtype)
    indices = torch.zeros(2000, dtype=torch.int64)
    logits = torch.tensor([[-40.0, 0.0, 0.0]], dtype=dtype).expand(2000, -1).contiguous()
    one_hot = torch.zeros(2000, 3, dtype=dtype)
    one_hot[:, 0] = 1
    wide = z.double()
    cases: list[tuple[Tensor, Tensor]] = [
        (
            nn.MSELoss("mean")(z[:, :1] / 100, zero[:, :1]),
            F.mse_loss(wide[:, :1] / 100, zero[:, :1].double()),
        ),
        (nn.MSELoss()(z / 100, zero), F.mse_loss(wide / 100, zero.double(), reduction="sum") / 64),
        (nn.L1Loss()(z, zero), F.l1_loss(wide, zero.double())),
        (nn.HuberLoss()(z, zero), F.huber_loss(wide, zero.double())),
        (
            nn.BCEWithLogitsLoss()(z, probabilities),
            F.binary_cross_entropy_with_logits(wide, probabilities.double()),
        ),
        (nn.NLLLoss()(log_probabilities, indices), torch.tensor(40.0, dtype=F64)),
        # Cross-entropy with probability targets, and of stacked models (R, N, C): each
        # sample's loss is about 40.7, so the sums of 2000 are beyond float16's range.
        (
            nn.CrossEntropyLoss()(logits, one_hot),
            F.cross_entropy(logits.double(), one_hot.double()),
        ),
        (
            nn.CrossEntropyLoss()(logits.expand(2, -1, -1), indices.expand(2, -1)),
            F.cross_entropy(logits.double(), indices).expand(2),
        ),
    ]
    for loss, expected in cases:
        assert loss.dtype == dtype
        torch.testing.assert_close(loss.double(), expected, rtol=1e-2, atol=0)


# -- 16-bit modules -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_batch_norm_computes_its_statistics_in_float32(dtype: torch.dtype) -> None:
    """Deviations above 256 square beyond float16's range: computed in float16, the variance
    was ``inf`` and the output and gradients all zeros. Against PyTorch's batch norm in
    float64 on the same (rounded) values: output, input gradient, parameter gradients, the
    running statistics and an evaluation-mode output, each within a few epsilons of the
    dtype."""
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 3, generator=generator, dtype=F64) * 300).to(dtype)
    g = torch.randn(64, 3, generator=generator, dtype=F64).to(dtype)
    layer = nn.BatchNorm1d(3, dtype=dtype)
    reference = torch.nn.BatchNorm1d(3, dtype=F64)
    x_reference = x.double().requires_grad_(True)
    y, y_reference = layer(x), reference(x_reference)
    grad = layer.backward(g)
    y_reference.backward(g.double())
    eps = torch.finfo(dtype).eps

    def close(value: Tensor, expected: Tensor) -> None:
        assert value.dtype == dtype and torch.isfinite(value).all()
        scale = float(expected.detach().abs().max())
        torch.testing.assert_close(value.double(), expected.detach(), rtol=0, atol=4 * eps * scale)

    close(y, y_reference)
    close(grad, x_reference.grad)  # type: ignore[arg-type]
    close(layer.weight.grad, reference.weight.grad)  # type: ignore[union-attr, arg-type]
    close(layer.bias.grad, reference.bias.grad)  # type: ignore[union-attr, arg-type]
    close(layer.running_mean, reference.running_mean)
    close(layer.running_var, reference.running_var)
    layer.eval(), reference.eval()
    close(layer(x), reference(x.double()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_batch_norm_updates_its_running_statistics_with_one_rounding(
    dtype: torch.dtype,
) -> None:
    """The running statistics of a 16-bit layer were updated in its dtype, rounded after the
    product and after the sum: with momentum 0.01 the batch's share was lost to rounding at
    each step, and after 300 steps they were 12 to 24 units in the last place from the update
    computed exactly and rounded once per step (PyTorch's float16 bits), 1 or 2 with momentum
    0.1. Now within one unit, on the same rounded inputs."""
    generator = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 3.0, 10.0, 30.0], dtype=F64)
    shift = torch.tensor([0.0, 5.0, -50.0, 200.0], dtype=F64)
    momentum = 0.01
    layer = nn.BatchNorm1d(4, momentum=momentum, dtype=dtype)
    mean, var = torch.zeros(4, dtype=dtype), torch.ones(4, dtype=dtype)
    for _ in range(300):
        x = (torch.randn(32, 4, generator=generator, dtype=F64) * scale + shift).to(dtype)
        layer(x)
        exact = x.double()
        mean = ((1 - momentum) * mean.double() + momentum * exact.mean(0)).to(dtype)
        var = ((1 - momentum) * var.double() + momentum * exact.var(0)).to(dtype)
    eps = torch.finfo(dtype).eps
    for value, expected in ((layer.running_mean, mean), (layer.running_var, var)):
        assert value.dtype == dtype
        torch.testing.assert_close(value.double(), expected.double(), rtol=eps, atol=0)
    assert int(layer.num_batches_tracked) == 300


def test_bfloat16_probability_targets_are_accepted_as_pytorch_accepts_them() -> None:
    """A bfloat16 row of probabilities is off from 1 by up to half its epsilon (2**-9 near 1)
    from the rounding of its entries: summed in bfloat16 with a 1e-3 tolerance, rows like
    uniform 1/61 were refused."""
    logits = torch.zeros(1, 3, dtype=torch.bfloat16)
    target = torch.tensor([[0.03, 0.14, 0.83]], dtype=torch.bfloat16)
    loss = nn.CrossEntropyLoss()(logits, target)
    assert loss == F.cross_entropy(logits, target)
    for classes in range(2, 200):
        uniform = torch.full((2, classes), 1 / classes, dtype=torch.bfloat16)
        nn.CrossEntropyLoss()(torch.zeros(2, classes, dtype=torch.bfloat16), uniform)
    with pytest.raises(ValueError, match="row sum off by"):
        nn.CrossEntropyLoss()(logits, torch.tensor([[0.1, 0.1, 0.7]], dtype=torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_sigmoid_is_torch_sigmoid(dtype: torch.dtype) -> None:
    """Computed in float16, exp(-x) overflowed below x = -11.1 and the sigmoid was 0 where it
    is a subnormal float16 number (and its derivative with it); computed in float32 and
    rounded once, it is torch.sigmoid's bits, inside a stack's output buffer too."""
    x = torch.linspace(-30, 30, 20001, dtype=F64).to(dtype)
    expected = torch.sigmoid(x)
    assert torch.equal(nn.Sigmoid()(x), expected)
    out = torch.empty_like(x)
    assert sigmoid(x, out) is out and torch.equal(out, expected)
    activation = nn.Sigmoid()
    activation(torch.tensor([-12.0], dtype=dtype))
    assert activation.backward(torch.ones(1, dtype=dtype)) > 0


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize(
    ("module", "reference"),
    [
        (nn.ELU, F.elu),
        (lambda: nn.ELU(0.3), lambda x: F.elu(x, 0.3)),
        (nn.SELU, F.selu),
    ],
    ids=["ELU", "ELU-0.3", "SELU"],
)
def test_elu_gradients_keep_their_digits_for_very_negative_inputs(
    module: Callable[[], nn.Module], reference: Callable[[Tensor], Tensor], dtype: torch.dtype
) -> None:
    """The derivative alpha * e^x was computed as y + alpha: at x = -17 in float32 it was 0
    (PyTorch: 4.1e-8), in float64 it lost 8 digits at -20 and all at -40."""
    x = torch.tensor([-10.0, -17.0, -20.0, -40.0, -80.0, -0.5, 0.0, 2.0], dtype=dtype)
    layer = module()
    layer(x)
    grad = layer.backward(torch.ones_like(x))
    leaf = x.clone().requires_grad_()
    reference(leaf).sum().backward()
    assert leaf.grad is not None
    torch.testing.assert_close(grad, leaf.grad, rtol=4 * torch.finfo(dtype).eps, atol=0)
    assert (grad[:5] > 0).all()


def test_a_slice_keeps_its_modules_names_as_pytorchs() -> None:
    """The slice renumbered its modules from 0: its state_dict loaded with strict=False put
    layer 2's weights into layer 0 of a whole model, without a word."""
    model = nn.mlp((3, 3, 3, 3), "tanh")
    twin = torch.nn.Sequential(
        *[torch.nn.Linear(3, 3) if i % 2 == 0 else torch.nn.Tanh() for i in range(5)]
    )
    assert list(model[2:].state_dict()) == list(twin[2:].state_dict())
    assert [name for name, _ in model[1:4].named_children()] == ["1", "2", "3"]
    fresh = nn.mlp((3, 3, 3, 3), "tanh")
    loaded = fresh.load_state_dict(model[2:].state_dict(), strict=False)
    assert loaded.missing_keys == ["0.weight", "0.bias"]
    for index in (2, 4):
        assert torch.equal(fresh[index].weight.data, model[index].weight.data)  # type: ignore[union-attr]
    assert model[2:][0] is model[2]  # indexing is by position, as in PyTorch


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("module", "reference"),
    [(nn.Softmax, lambda x: F.softmax(x, 1)), (nn.LogSoftmax, lambda x: F.log_softmax(x, 1))],
    ids=["Softmax", "LogSoftmax"],
)
def test_16_bit_softmaxes_are_as_accurate_as_pytorchs(
    module: Callable[[], nn.Module], reference: Callable[[Tensor], Tensor], dtype: torch.dtype
) -> None:
    """They computed in 16 bits: 2 to 3 times PyTorch's error, which computes in float32 and
    rounds once. Against float64, each pass is now no further off than PyTorch's own."""
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 10, generator=generator) * 4).to(dtype)
    grad = torch.randn(64, 10, generator=generator).to(dtype)
    layer = module()
    output = layer(x)
    input_grad = layer.backward(grad)
    assert output.dtype == dtype == input_grad.dtype
    exact = x.double().requires_grad_()
    reference(exact).backward(grad.double())
    twin = x.clone().requires_grad_()
    twin_output = reference(twin)
    twin_output.backward(grad)
    assert exact.grad is not None and twin.grad is not None
    expected = reference(x.double())

    def error(got: Tensor, truth: Tensor) -> float:
        return float((got.double() - truth).abs().max())

    assert error(output, expected) <= error(twin_output.detach(), expected) * 1.001
    assert error(input_grad, exact.grad) <= error(twin.grad, exact.grad) * 1.001


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("module", "reference"), [(nn.ELU, F.elu), (nn.SELU, F.selu)])
def test_16_bit_elus_compute_in_float32_and_round_once(
    module: Callable[[], nn.Module], reference: Callable[[Tensor], Tensor], dtype: torch.dtype
) -> None:
    """As PyTorch's kernels do: the same bits as its forward (it was computed in 16 bits), and a
    gradient as close to the float64 one as PyTorch's (the derivative is kept in float32)."""
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 10, generator=generator) * 4).to(dtype)
    layer = module()
    output = layer(x)
    assert torch.equal(output, reference(x))
    grad = torch.randn(64, 10, generator=generator).to(dtype)
    exact = x.double().requires_grad_()
    reference(exact).backward(grad.double())
    assert exact.grad is not None
    scale = float(exact.grad.abs().max())
    got = layer.backward(grad)
    assert got.dtype == dtype
    twin = x.clone().requires_grad_()
    reference(twin).backward(grad)
    assert twin.grad is not None
    ours = float((got.double() - exact.grad).abs().max())
    theirs = float((twin.grad.double() - exact.grad).abs().max())
    assert ours <= theirs + torch.finfo(dtype).eps * scale / 4


def test_a_meta_stack_unstacks() -> None:
    """The throwaway generator of the unstacked layers cannot be made for the meta device."""
    stack = nn.stack_models([nn.mlp((2, 4, 2)) for _ in range(3)]).to("meta")
    layer = stack[0]
    assert isinstance(layer, nn.BatchedLinear)
    assert [part.weight.data.device.type for part in layer.unstack()] == ["meta"] * 3


def test_a_refusal_inside_a_slice_names_the_module_as_registered() -> None:
    model = nn.mlp((3, 3, 3), "tanh")
    with pytest.raises(ValueError) as error:
        model[2:](torch.zeros(4, 5))
    assert "in Sequential, at module 2 (Linear)" in error.value.__notes__


@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1), (1, 25), (100, 25), (7, 3, 33)])
def test_tanh_gradient_is_autograds_bit_for_bit(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    """On the CPU, 1 - y^2 by one fused multiply-add and then times g are the roundings of
    PyTorch's own derivative of tanh (16 bits in float32, rounded once): the gradient equals
    autograd's, bit for bit (as g - g y^2 it differed in the last bit for about 60% of the
    elements), written into a stack's output buffer too."""
    generator = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=generator, dtype=F64) * 2).to(dtype)
    grad = torch.randn(shape, generator=generator, dtype=F64).to(dtype)
    leaf = x.clone().requires_grad_()
    torch.tanh(leaf).backward(grad)
    layer = nn.Tanh()
    assert torch.equal(layer(x), torch.tanh(x))
    assert torch.equal(layer.backward(grad), leaf.grad)
    out = torch.full_like(x, float("nan"))
    assert layer._backward(grad, torch.tanh(x), out=out) is out
    assert torch.equal(out, leaf.grad)


def test_tanh_gradient_of_another_dtype_is_promoted_and_plain() -> None:
    """A float64 gradient through a float32 tanh gives a float64 gradient (g - g y^2 by one
    fused multiply-add, y promoted to float64 first, as Sigmoid's and ELU's are: y^2 rounded
    to float32 lost 3e-6 there, and 2% for a bfloat16 output); operands from an autograd graph
    are read as values."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(10, 4, generator=generator)
    grad = torch.randn(10, 4, generator=generator, dtype=F64)
    layer = nn.Tanh()
    y = layer(x)
    squared = y.double() * y.double()
    assert torch.equal(layer.backward(grad), torch.addcmul(grad, grad, squared, value=-1))
    leaf = x.double().requires_grad_()
    graph_grad = torch.ones(10, 4, dtype=F64, requires_grad=True)
    layer(leaf)
    result = layer.backward(graph_grad * 1.0)
    assert not result.requires_grad
    expected = 1 - torch.tanh(x.double()) ** 2
    torch.testing.assert_close(result, expected, rtol=1e-15, atol=1e-15)


def test_state_dict_of_a_module_naming_its_parameters_itself() -> None:
    """A subclass whose ``named_parameters`` gives names that are no module's path: its
    entries come after those of the modules, in its order (no KeyError)."""

    class Renamed(nn.Sequential):
        def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):  # type: ignore[no-untyped-def]
            for name, parameter in super().named_parameters(prefix, recurse, remove_duplicate):
                yield "ghost." + name, parameter

    model = Renamed(nn.Linear(2, 3), nn.BatchNorm1d(3))
    assert list(model.state_dict()) == [
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "ghost.0.weight",
        "ghost.0.bias",
        "ghost.1.weight",
        "ghost.1.bias",
    ]
