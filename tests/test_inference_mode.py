"""Training inside and outside ``torch.inference_mode()``, in any mix.

Everything minidl keeps and updates in place (parameters, flat buffers, optimizer state, buffers
such as batch-norm statistics) is a normal tensor, wherever it was made: a model and optimizer
built, moved or restored inside inference mode train outside it, and the reverse. The oracle is
the same training run entirely outside inference mode: every loss, parameter and state tensor
must be the same bits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from minidl import nn, optim
from minidl.interop import to_torch
from minidl.nn.stack import stack_models

F64 = torch.float64

OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter]], optim.Optimizer]] = {
    "SGD": lambda p: optim.SGD(p, lr=0.1),
    "SGD momentum nesterov": lambda p: optim.SGD(
        p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3
    ),
    "Adadelta": lambda p: optim.Adadelta(p, lr=1.0),
    "Adam": lambda p: optim.Adam(p, lr=1e-2),
    "AdamW": lambda p: optim.AdamW(p, lr=1e-2),
    "RMSprop": lambda p: optim.RMSprop(p, lr=1e-2, momentum=0.5, centered=True),
    "Adagrad": lambda p: optim.Adagrad(p, lr=0.1),
}


def _mlp() -> nn.Module:
    return nn.mlp((3, 6, 5, 2), "tanh")


def _lone_linear() -> nn.Module:
    # Not in a Sequential: its parameters are not views of a flat buffer.
    return nn.Linear(3, 2)


def _batch_norm() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))


def _stack() -> nn.Module:
    return stack_models([nn.mlp((3, 6, 2), "tanh") for _ in range(3)])


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "flat mlp": (_mlp, ()),
    "lone Linear": (_lone_linear, ()),
    "batch norm": (_batch_norm, ()),
    "stack of 3": (_stack, (3,)),
}


def _data(lead: tuple[int, ...], batch: int, seed: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, batch, 3, dtype=F64, generator=generator)
    y = torch.randint(0, 2, (*lead, batch), generator=generator)
    return x, y


def _build(
    make_model: Callable[[], nn.Module],
    make_optimizer: Callable[[Iterable[nn.Parameter]], optim.Optimizer],
) -> tuple[nn.Module, optim.Optimizer]:
    torch.manual_seed(0)
    model = make_model().to(dtype=F64)
    return model, make_optimizer(model.parameters())


def _state(model: nn.Module, optimizer: optim.Optimizer) -> list[Tensor]:
    return [*model.state_dict().values(), *optimizer.state_dict()["state"].values()]


def _train(
    model: nn.Module,
    optimizer: optim.Optimizer,
    batches: list[tuple[Tensor, Tensor]],
    inside: Callable[[int], bool],
) -> list[Tensor]:
    """One step per batch; step ``i`` runs in inference mode when ``inside(i)``."""
    criterion = nn.CrossEntropyLoss()
    losses = []
    for index, (x, y) in enumerate(batches):
        with torch.inference_mode(inside(index)):
            optimizer.zero_grad()
            losses.append(criterion(model(x), y).clone())
            model.backward(criterion.backward())
            optimizer.step()
    return losses


def _assert_same(actual: list[Tensor], expected: list[Tensor]) -> None:
    assert len(actual) == len(expected)
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert torch.equal(a, e), f"tensor {index} differs"


@pytest.mark.parametrize("first_inside", [False, True])
@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("optimizer_name", OPTIMIZERS)
def test_built_inside_trains_anywhere(
    model_name: str, optimizer_name: str, first_inside: bool
) -> None:
    make_model, lead = MODELS[model_name]
    make_optimizer = OPTIMIZERS[optimizer_name]
    # Batch size 1 among them (2 for batch norm, which needs two samples to train).
    smallest = 2 if model_name == "batch norm" else 1
    batches = [_data(lead, batch, seed) for seed, batch in enumerate((4, smallest, 5, 4, 2, 3))]

    model, optimizer = _build(make_model, make_optimizer)
    expected_losses = _train(model, optimizer, batches, lambda _: False)
    expected = _state(model, optimizer)

    with torch.inference_mode():
        model, optimizer = _build(make_model, make_optimizer)
    # Alternating, from the first step inside or outside.
    losses = _train(model, optimizer, batches, lambda index: index % 2 == int(not first_inside))
    _assert_same(losses, expected_losses)
    _assert_same(_state(model, optimizer), expected)
    for tensor in _state(model, optimizer):
        assert not tensor.is_inference()


def _model_layout_stack() -> nn.Module:
    # Its weight gradients are blocks of each model's buffer: BatchedLinear computes them into
    # a temporary of its own and adds them. (Made in float64: a move lays a stack out by layer.)
    models = [nn.mlp((3, 6, 2), "tanh").to(dtype=F64) for _ in range(3)]
    return stack_models(models, layout="model")


@pytest.mark.parametrize("model_name", [*MODELS, "stack of 3, model layout"])
def test_a_batch_shape_seen_inside_trains_outside(model_name: str) -> None:
    # What a module makes for a batch shape and keeps for the next calls of that shape (a
    # gradient temporary, a loss's buffers) must be writable whichever mode made it.
    make_model, lead = MODELS.get(model_name, (_model_layout_stack, (3,)))
    batches = [_data(lead, 4, seed) for seed in range(4)]
    for inside in (lambda index: index % 2 == 0, lambda index: index % 2 == 1):
        model, optimizer = _build(make_model, OPTIMIZERS["SGD momentum nesterov"])
        expected_losses = _train(model, optimizer, batches, lambda _: False)
        expected = _state(model, optimizer)
        model, optimizer = _build(make_model, OPTIMIZERS["SGD momentum nesterov"])
        losses = _train(model, optimizer, batches, inside)
        _assert_same(losses, expected_losses)
        _assert_same(_state(model, optimizer), expected)


@pytest.mark.parametrize("model_name", MODELS)
def test_moved_inside_trains_outside(model_name: str) -> None:
    make_model, lead = MODELS[model_name]
    batches = [_data(lead, 4, seed) for seed in range(4)]

    def run(move_inside: bool) -> tuple[list[Tensor], list[Tensor]]:
        torch.manual_seed(0)
        model = make_model()
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        first = _train(model, optimizer, [(x.float(), y) for x, y in batches[:2]], lambda _: False)
        with torch.inference_mode(move_inside):
            model.to(dtype=F64)
        rest = _train(model, optimizer, batches[2:], lambda _: False)
        return first + rest, _state(model, optimizer)

    losses, state = run(move_inside=True)
    expected_losses, expected = run(move_inside=False)
    _assert_same(losses, expected_losses)
    _assert_same(state, expected)


@pytest.mark.parametrize("optimizer_name", OPTIMIZERS)
def test_restored_inside_trains_outside(optimizer_name: str) -> None:
    make_optimizer = OPTIMIZERS[optimizer_name]
    batches = [_data((), 4, seed) for seed in range(6)]
    model, optimizer = _build(_batch_norm, make_optimizer)
    _train(model, optimizer, batches[:3], lambda _: False)
    saved = (model.state_dict(), optimizer.state_dict())
    expected_losses = _train(model, optimizer, batches[3:], lambda _: False)
    expected = _state(model, optimizer)

    with torch.inference_mode():
        model, optimizer = _build(_batch_norm, make_optimizer)
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
    losses = _train(model, optimizer, batches[3:], lambda _: False)
    _assert_same(losses, expected_losses)
    _assert_same(_state(model, optimizer), expected)


@pytest.mark.parametrize("optimizer_name", OPTIMIZERS)
def test_state_dicts_taken_inside_can_be_changed_outside(optimizer_name: str) -> None:
    """A model's and an optimizer's state dicts taken inside inference mode hold no inference
    tensors (PyTorch's and torch.optim's do not): a state dict kept as the best so far can be
    changed in place outside, and its values are the live ones. (They were inference tensors:
    "Inplace update to inference tensor outside InferenceMode is not allowed".)"""
    model, optimizer = _build(_batch_norm, OPTIMIZERS[optimizer_name])
    _train(model, optimizer, [_data((), 4, seed) for seed in range(3)], lambda _: True)
    with torch.inference_mode():
        model_state = model.state_dict()
        optimizer_state = optimizer.state_dict()
    taken = [*model_state.values(), *optimizer_state["state"].values()]
    assert taken
    _assert_same(taken, _state(model, optimizer))
    for tensor in taken:
        assert not tensor.is_inference()
        tensor.add_(1)  # in place, outside inference mode


def test_register_buffer_copies_an_inference_tensor_out() -> None:
    module = nn.Module()
    with torch.inference_mode():
        made_inside = torch.arange(4.0)
        registered = module.register_buffer("counts", made_inside)
    assert not registered.is_inference()
    assert registered is module.counts
    assert torch.equal(registered, made_inside)
    registered.add_(1)  # in place, outside inference mode
    assert module.state_dict()["counts"].tolist() == [1.0, 2.0, 3.0, 4.0]
    normal = torch.zeros(2)
    assert module.register_buffer("normal", normal) is normal


def test_to_torch_inside_gives_a_model_autograd_trains() -> None:
    torch.manual_seed(0)
    model = nn.mlp((3, 6, 5, 2), "tanh").to(dtype=F64)
    x, y = _data((), 4, 0)

    def gradients(convert_inside: bool) -> list[Tensor]:
        with torch.inference_mode(convert_inside):
            twin = to_torch(model)
        F.cross_entropy(twin(x), y).backward()
        return [parameter.grad for parameter in twin.parameters() if parameter.grad is not None]

    inside, outside = gradients(True), gradients(False)
    assert len(inside) == 6
    _assert_same(inside, outside)


def _callback_state(kept: list[Tensor]) -> Callable[..., None]:
    """An ``on_epoch`` that checks it runs as ordinary code: outside inference mode, with
    autograd and in-place changes of what it made available."""

    def on_epoch(*_: object) -> None:
        assert not torch.is_inference_mode_enabled()
        weight = torch.ones(2, requires_grad=True)
        (weight * 3.0).sum().backward()
        assert weight.grad is not None and weight.grad.tolist() == [3.0, 3.0]
        made = torch.zeros(2)
        made.add_(1)  # an inference tensor would refuse this outside inference mode
        kept.append(made)

    return on_epoch


def test_fit_calls_on_epoch_outside_inference_mode() -> None:
    from minidl.train import fit

    torch.manual_seed(0)
    model = _mlp()
    x, y = torch.randn(12, 3), torch.randint(0, 2, (12,))
    kept: list[Tensor] = []
    fit(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(model.parameters(), lr=0.1),
        x,
        y,
        epochs=3,
        batch_size=4,
        validation=(x, y),
        on_epoch=_callback_state(kept),
    )
    assert len(kept) == 3 and not any(t.is_inference() for t in kept)


def test_fit_rounds_calls_on_epoch_outside_inference_mode() -> None:
    from minidl.rounds import fit_rounds

    torch.manual_seed(0)
    models = [nn.mlp((3, 6, 2), "tanh") for _ in range(2)]
    x, y = torch.randn(12, 3), torch.randint(0, 2, (12,))
    kept: list[Tensor] = []
    fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        lambda stack: optim.SGD(stack.parameters(), lr=0.1),
        [(x, y)] * 2,
        epochs=3,
        batch_size=4,
        generators=[torch.Generator().manual_seed(r) for r in range(2)],
        validation_sets=[(x, y)] * 2,
        on_epoch=_callback_state(kept),
    )
    assert len(kept) == 3 and not any(t.is_inference() for t in kept)


def test_a_parameter_given_inference_tensors_keeps_normal_copies() -> None:
    """Data and gradients made inside inference mode, given to a Parameter inside or outside
    it, are kept as normal copies that change in place anywhere."""
    with torch.inference_mode():
        data, grad = torch.arange(3.0), torch.ones(3)
        made_inside = nn.Parameter(data)
    made_outside = nn.Parameter(torch.zeros(3))
    for parameter in (made_inside, made_outside):
        with torch.inference_mode():
            parameter.data = data
            parameter.grad = grad
        assert not parameter.data.is_inference() and not parameter.grad.is_inference()
        parameter.data.add_(1)  # outside inference mode
        parameter.grad.mul_(2)
        assert parameter.data.tolist() == [1.0, 2.0, 3.0]
        assert parameter.grad.tolist() == [2.0, 2.0, 2.0]
    assert data.tolist() == [0.0, 1.0, 2.0]  # the given tensors are not changed
