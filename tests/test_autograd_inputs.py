"""Inputs, gradients and state entries from an autograd graph are read as plain values.

minidl computes its own gradients, so a tensor that requires grad (the output of a ``torch.nn``
feature extractor, a ``torch.nn.Parameter``, a leaf made with ``requires_grad=True``) must not
pull anything minidl keeps into autograd: the in-place accumulation of a parameter gradient
would otherwise record the graph into that gradient, the optimizer step would pass it on to the
parameter, and every later step would grow the graph (a memory leak that lasts after the
autograd input is gone). Each case is compared, bit for bit, with the same steps on plain
tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.interop import to_torch
from tests.helpers import F64

MODELS: dict[str, Callable[[], nn.Module]] = {
    "linear-tanh": lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)),
    "linear-sigmoid": lambda: nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 3)),
    "linear-relu-no-bias": lambda: nn.Sequential(
        nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 3)
    ),
    "batch-norm": lambda: nn.Sequential(
        nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ELU(), nn.Linear(4, 3)
    ),
    "linear-gelu-silu": lambda: nn.Sequential(
        nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 4), nn.SiLU(), nn.Linear(4, 3)
    ),
    "residual-softmax": lambda: nn.Sequential(
        nn.Linear(3, 4), nn.Residual(nn.Sequential(nn.Linear(4, 4), nn.Tanh())), nn.Linear(4, 3)
    ),
}


def _kept(model: nn.Module, optimizer: optim.Optimizer) -> list[Tensor]:
    """Every tensor that lives on from step to step."""
    tensors = [t for pair in model.param() for t in pair]
    tensors += [buffer for _, buffer in model.named_buffers()]
    return tensors + list(optimizer.state.values())


def _train(make: Callable[[], nn.Module], autograd_steps: set[int], where: str) -> list[Tensor]:
    torch.manual_seed(0)
    model = make().to(dtype=F64)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    criterion = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(1)
    for step in range(4):
        x = torch.randn(5, 3, dtype=F64, generator=generator)
        target = torch.randint(0, 3, (5,), generator=generator)
        autograd = step in autograd_steps
        if autograd and where == "input":
            x = (x.clone().requires_grad_() * 1.0) if step % 2 else x.clone().requires_grad_()
        optimizer.zero_grad()
        loss = criterion(model(x), target)
        grad = criterion.backward()
        if autograd and where == "gradient":
            grad = grad.clone().requires_grad_() * 1.0
        model.backward(grad)
        optimizer.step()
        for tensor in _kept(model, optimizer):
            assert not tensor.requires_grad and tensor.grad_fn is None
        if step > max(autograd_steps, default=-1):
            assert not loss.requires_grad  # the graph did not outlive its input
    return [tensor.clone() for tensor in _kept(model, optimizer)]


@pytest.mark.parametrize("where", ["input", "gradient"])
@pytest.mark.parametrize("name", list(MODELS))
def test_autograd_tensors_are_read_as_plain_values(name: str, where: str) -> None:
    """An autograd leaf (step 0) or non-leaf (step 1) as input or gradient, then plain steps:
    nothing kept requires grad at any step, the loss of a plain step has no graph, and every
    parameter, buffer and optimizer state equals plain training's."""
    expected = _train(MODELS[name], set(), where)
    for got, want in zip(_train(MODELS[name], {0, 1}, where), expected, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize(
    "make",
    [
        nn.Tanh,
        nn.Sigmoid,
        nn.ReLU,
        nn.ELU,
        nn.GELU,
        lambda: nn.GELU("tanh"),
        nn.SiLU,
        nn.Softmax,
        nn.Identity,
    ],
)
def test_activation_backward_takes_autograd_inputs(make: Callable[[], nn.Module]) -> None:
    """Tanh and Sigmoid write their gradient with out=, which autograd refuses for a tensor
    from a graph: they fall back to plain values, with the numbers of a plain input."""
    x = torch.randn(4, 3, dtype=F64)
    grad = torch.randn(4, 3, dtype=F64)
    plain = make()
    expected_output = plain(x)
    expected = plain.backward(grad)
    module = make()
    output = module(x.clone().requires_grad_())
    got = module.backward(grad.clone().requires_grad_() * 1.0)
    assert torch.equal(output.detach(), expected_output)
    assert torch.equal(got.detach(), expected)


def test_batched_linear_reads_autograd_tensors_as_plain_values() -> None:
    torch.manual_seed(0)
    layer = nn.BatchedLinear(2, 3, 4, dtype=F64)
    x = torch.randn(2, 5, 3, dtype=F64)
    grad = torch.randn(2, 5, 4, dtype=F64)
    layer(x.clone().requires_grad_())
    layer.backward(grad.clone().requires_grad_() * 1.0)
    autograd = [t.clone() for pair in layer.param() for t in pair]
    assert not any(t.requires_grad for t in autograd)
    layer.zero_grad()
    layer(x)
    layer.backward(grad)
    plain = [t for pair in layer.param() for t in pair]
    assert all(torch.equal(a, b) for a, b in zip(autograd, plain, strict=True))


def test_load_state_dict_takes_torch_parameters() -> None:
    """A state of ``torch.nn.Parameter`` objects (``named_parameters()``) loads as values: the
    model then trains (Tanh's out= used to refuse it) and nothing it keeps requires grad."""
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
    twin = to_torch(model)
    with torch.no_grad():
        for parameter in twin.parameters():
            parameter.mul_(2)
    model.load_state_dict(dict(twin.named_parameters()))
    for (name, value), (_, expected) in zip(
        model.state_dict().items(), twin.state_dict().items(), strict=True
    ):
        assert torch.equal(value, expected), name
    assert not any(p.data.requires_grad for p in model.parameters())
    criterion = nn.CrossEntropyLoss()
    criterion(model(torch.randn(4, 2)), torch.tensor([0, 1, 0, 1]))
    model.backward(criterion.backward())
    assert not any(p.grad.requires_grad for p in model.parameters())


def test_a_minidl_head_on_a_torch_feature_extractor() -> None:
    """The gradient ``model.backward`` returns for features from autograd passes on to autograd:
    the extractor's gradients equal those of the whole network in torch.nn, and the head's
    equal minidl's."""
    torch.manual_seed(0)
    extractor = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh()).double()
    head = nn.Sequential(nn.Linear(5, 4), nn.Sigmoid(), nn.Linear(4, 2)).to(F64)
    x, target = torch.randn(6, 3, dtype=F64), torch.tensor([0, 1, 1, 0, 1, 0])
    criterion = nn.CrossEntropyLoss()
    features = extractor(x)
    criterion(head(features), target)
    features.backward(head.backward(criterion.backward()))
    mine = [p.grad.clone() for p in extractor.parameters()]  # type: ignore[union-attr]
    extractor.zero_grad()
    whole = torch.nn.Sequential(extractor, to_torch(head))
    torch.nn.functional.cross_entropy(whole(x), target).backward()
    for got, expected in zip(mine, extractor.parameters(), strict=True):
        torch.testing.assert_close(got, expected.grad, rtol=1e-12, atol=1e-14)
    for got, twin in zip(head.parameters(), whole[1].parameters(), strict=True):
        torch.testing.assert_close(got.grad, twin.grad, rtol=1e-12, atol=1e-14)


def test_linear_accumulates_over_backwards_of_autograd_inputs() -> None:
    # Inputs from an autograd graph take Linear's second path for the weight gradient: it must
    # add, as the first does.
    layer = nn.Linear(3, 2, dtype=F64)
    x = torch.randn(5, 3, dtype=F64, requires_grad=True)
    upstream = torch.randn(5, 2, dtype=F64)
    layer(x)
    layer.backward(upstream)
    once = [p.grad.clone() for p in layer.parameters()]
    layer(x)
    layer.backward(upstream)
    for grad, first in zip((p.grad for p in layer.parameters()), once, strict=True):
        torch.testing.assert_close(grad, 2 * first, rtol=1e-15, atol=0)
    torch.testing.assert_close(once[0], upstream.t() @ x.detach(), rtol=1e-14, atol=0)


@pytest.mark.parametrize(
    "loss",
    ["cross-entropy", "mse", "bce", "huber", "l1"],
)
def test_a_losss_value_on_graph_logits_backpropagates_through_autograd(loss: str) -> None:
    """A loss's forward output may carry the graph of its prediction, whose loss.backward() is
    autograd's: BCEWithLogitsLoss wrote log1p in place over the exp that autograd keeps for its
    derivative (``one of the variables needed for gradient computation has been modified by an
    inplace operation``). Each loss's graph gives torch.nn.functional's gradient."""
    generator = torch.Generator().manual_seed(0)
    features = torch.nn.Linear(3, 2, dtype=F64)
    x = torch.randn(4, 3, dtype=F64, generator=generator)
    target = torch.rand(4, 2, dtype=F64, generator=generator)
    minidl_loss, functional = {
        "cross-entropy": (
            nn.CrossEntropyLoss(),
            lambda z: torch.nn.functional.cross_entropy(z, target.softmax(-1)),
        ),
        "mse": (nn.MSELoss("mean"), lambda z: torch.nn.functional.mse_loss(z, target)),
        "bce": (
            nn.BCEWithLogitsLoss(),
            lambda z: torch.nn.functional.binary_cross_entropy_with_logits(z, target),
        ),
        "huber": (nn.HuberLoss(), lambda z: torch.nn.functional.huber_loss(z, target)),
        "l1": (nn.L1Loss(), lambda z: torch.nn.functional.l1_loss(z, target)),
    }[loss]
    given = target.softmax(-1) if loss == "cross-entropy" else target
    minidl_loss(features(x), given).backward()
    ours = features.weight.grad.clone()
    features.weight.grad = None
    functional(features(x)).backward()
    torch.testing.assert_close(ours, features.weight.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", ["cross-entropy", "nll", "mse", "bce", "huber", "l1"])
@pytest.mark.parametrize("upstream", [False, True])
def test_a_losss_gradient_of_graph_logits_is_a_plain_tensor(loss: str, upstream: bool) -> None:
    """The gradient that a loss's backward returns for a prediction from an autograd graph (or
    with an upstream gradient from one) carried that graph, ``requires_grad`` and a grad_fn,
    holding it for as long as it was kept (NLLLoss's, made of zeros, did not). A plain tensor
    now, the bits of the same loss on the plain prediction."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 2, dtype=F64, generator=generator, requires_grad=True)
    x = torch.randn(4, 3, dtype=F64, generator=generator)
    target: Tensor = {
        "cross-entropy": torch.tensor([0, 1, 1, 0]),
        "nll": torch.tensor([0, 1, 1, 0]),
        "bce": torch.rand(4, 2, dtype=F64, generator=generator),
    }.get(loss, torch.randn(4, 2, dtype=F64, generator=generator))
    make = {
        "cross-entropy": nn.CrossEntropyLoss,
        "nll": nn.NLLLoss,
        "mse": nn.MSELoss,
        "bce": nn.BCEWithLogitsLoss,
        "huber": nn.HuberLoss,
        "l1": nn.L1Loss,
    }[loss]
    prediction = x @ weight
    if loss == "nll":
        prediction = prediction.log_softmax(1)
    scale = torch.tensor(0.5, dtype=F64, requires_grad=upstream)
    given = (scale,) if upstream else ()
    criterion, plain = make(), make()
    criterion(prediction, target)
    gradient = criterion.backward(*given)
    plain(prediction.detach(), target)
    expected = plain.backward(*(s.detach() for s in given))
    assert not gradient.requires_grad and gradient.grad_fn is None
    assert torch.equal(gradient, expected)
