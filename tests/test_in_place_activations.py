"""Activations run in place over the output of the layer before them (``Activation._in_place``).

A planned chain and ``fit``'s folded step write a layer's output where the activation after it
writes its own, and the activation then works in place there. The oracles: the activation's own
``_forward`` into another tensor, bit for bit (values, cache and the gradient computed from the
cache, at special values and in every floating dtype); a plan against the same calls child by
child (``tests/test_chain_plan.py`` runs every activation so; here, activations after
activations, which must not run in place); and the folded step against itself with no
activation in place, bit for bit.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.folded import FoldedStep
from minidl.nn.chain import PLANNED_ACTIVATIONS, runs_in_place
from minidl.train import fit
from tests.helpers import PLANNED_ACTIVATION_MAKERS

ACTIVATIONS = PLANNED_ACTIVATION_MAKERS

_INTEGERS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(tensor: Tensor) -> Tensor:
    return tensor.contiguous().view(_INTEGERS[tensor.element_size()])


def _input(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> Tensor:
    """Random values of both signs and several magnitudes, with the special ones first."""
    generator = torch.Generator().manual_seed(seed)
    wide = torch.randn(shape, generator=generator, dtype=torch.float64)
    wide *= torch.logspace(-3, 2, wide.numel(), dtype=torch.float64).view(shape)
    special = [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-40, -30.0, 30.0]
    flat = wide.view(-1)
    flat[: min(len(special), flat.numel())] = torch.tensor(special[: flat.numel()])
    return wide.to(dtype)


def test_every_planned_activation_is_listed_here_and_runs_in_place() -> None:
    assert {type(make()) for make in ACTIVATIONS.values()} == set(PLANNED_ACTIVATIONS)
    assert all(kind._in_place for kind in PLANNED_ACTIVATIONS)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (37, 29)])
def test_in_place_gives_the_bits_of_a_forward_into_another_tensor(
    name: str, dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    activation = ACTIVATIONS[name]()
    x = _input(shape, dtype, seed=len(name))
    output, cache = activation._forward(x.clone(), torch.empty_like(x))  # type: ignore[call-arg]
    buffer = x.clone()
    output_in_place, cache_in_place = activation._forward(buffer, buffer)  # type: ignore[call-arg]
    assert output_in_place.data_ptr() == buffer.data_ptr()
    assert torch.equal(_bits(output_in_place), _bits(output))
    assert cache_in_place.dtype == cache.dtype
    assert torch.equal(_bits(cache_in_place), _bits(cache))
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(7)).to(dtype)
    assert torch.equal(
        _bits(activation._backward(grad, cache_in_place)), _bits(activation._backward(grad, cache))
    )


def test_activations_of_ones_own_do_not_run_in_place() -> None:
    class Cube(nn.Activation):
        def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
            return input**3, input

        def _backward(self, grad_output: Tensor, input: Tensor) -> Tensor:
            return grad_output * 3 * input**2

    assert not nn.Activation._in_place
    assert not runs_in_place(Cube())
    assert not runs_in_place(nn.Linear(2, 2))
    assert not runs_in_place(None)


def _planned(model: nn.Sequential, x: Tensor) -> None:
    for _ in range(3):
        y = model(x)
        if model._planned is None:
            model.backward_parameters(torch.zeros_like(y))
    assert model._planned is not None


def test_a_plan_runs_an_activation_in_place_only_right_after_a_layer() -> None:
    torch.manual_seed(0)
    # T after a layer, S after T (T's cache: not in place), R last after a layer, E first.
    model = nn.Sequential(
        nn.ELU(),
        nn.Linear(4, 5),
        nn.Tanh(),
        nn.Sigmoid(),
        nn.Linear(5, 3),
        nn.ReLU(),
    )
    x = torch.randn(6, 4)
    _planned(model, x)
    plan = model._planned
    assert plan is not None
    flags = [getattr(step, "in_place", None) for step in plan.steps]
    assert flags == [False, None, True, False, None, True]
    layer, tanh = plan.steps[1], plan.steps[2]
    tanh_cache = tanh.module._cache  # type: ignore[attr-defined]
    y = model(x)
    # The layer wrote where Tanh then worked, and nothing else holds that buffer.
    assert layer.output is not None and tanh.cached is not None  # type: ignore[attr-defined]
    assert tanh.cached.data_ptr() == layer.output.data_ptr()  # type: ignore[attr-defined]
    assert tanh_cache is tanh.cached  # (the same buffer, call after call)
    # The chain's output is the last layer's new tensor, made the ReLU's in place.
    assert model[-1]._cache is y


def _fit(activation: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> list[Tensor]:
    """Parameters and gradients after 3 epochs of fit, which must take its folded steps: an
    activation after each layer, one after an activation (not in place) and one last (its
    output is the prediction, in place over the last product)."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(60, 3, generator=generator, dtype=dtype)
    y = torch.randint(0, 3, (60,), generator=generator)
    first, second, last = (
        nn.Linear(3, 7, dtype=dtype),
        nn.Linear(7, 6, dtype=dtype),
        nn.Linear(6, 3, dtype=dtype),
    )
    for layer in (first, second, last):
        layer.weight.data.copy_(torch.randn(layer.weight.data.shape, generator=generator))
        layer.bias.data.copy_(torch.randn(layer.bias.data.shape, generator=generator))  # type: ignore[union-attr]
    model = nn.Sequential(
        first,
        nn.activation(activation),
        second,
        nn.activation(activation),
        nn.Tanh(),
        last,
        nn.activation(activation),
    )
    optimizer = optim.SGD(model.parameters(), 0.05, momentum=0.5)
    steps: list[int] = []
    step = FoldedStep.__call__

    def counted(self: FoldedStep, x: Tensor, y: Tensor) -> Tensor:
        steps.append(1)
        return step(self, x, y)

    with monkeypatch.context() as patch:
        patch.setattr(FoldedStep, "__call__", counted)
        shuffle = torch.Generator().manual_seed(4)
        fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=3,
            batch_size=16,
            generator=shuffle,
        )
    assert len(steps) == 12
    parameters = list(model.parameters())
    return [p.data.clone() for p in parameters] + [p.grad.clone() for p in parameters]


@pytest.mark.parametrize(
    "activation",
    ["tanh", "sigmoid", "relu", "leaky_relu", "elu", "selu", "gelu", "gelu_tanh", "silu"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_folded_step_trains_to_the_bits_it_gives_with_nothing_in_place(
    activation: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_place = _fit(activation, dtype, monkeypatch)
    for kind in PLANNED_ACTIVATIONS:
        monkeypatch.setattr(kind, "_in_place", False)
    apart = _fit(activation, dtype, monkeypatch)
    for a, b in zip(in_place, apart, strict=True):
        assert torch.equal(_bits(a), _bits(b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_plan_with_nothing_in_place_is_the_child_by_child_chain(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An activation that cannot run in place (none of the built-in ones) after a layer: the
    layer writes into a buffer of its shape, shared by all such layers, and the activation
    into its own."""
    for kind in PLANNED_ACTIVATIONS:
        monkeypatch.setattr(kind, "_in_place", False)
    torch.manual_seed(0)
    planned = nn.mlp((4, 5, 5, 5, 3), "tanh", dtype=dtype)  # (two layers of one output shape)
    planned = nn.Sequential(*planned, nn.SiLU())
    plain = copy.deepcopy(planned)
    generator = torch.Generator().manual_seed(1)
    runs = 0
    for batch in [6, 6, 6, 1, 1, 1, 6]:
        x = torch.randn(batch, 4, dtype=dtype, generator=generator)
        y = planned(x)
        runs += planned._planned is not None
        expected = x
        for module in plain:
            expected = module(expected)
        assert torch.equal(y, expected)
        grad = torch.randn(y.shape, dtype=dtype, generator=generator)
        expected_grad = grad
        for module in reversed(list(plain)):
            expected_grad = module.backward(expected_grad)
        assert torch.equal(planned.backward(grad), expected_grad)
        for p, q in zip(planned.parameters(), plain.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad)
    plan = planned._planned
    assert runs >= 3 and plan is not None
    assert not any(getattr(step, "in_place", False) for step in plan.steps)
    outputs = [step.output for step in plan.steps[:-2:2]]  # (the hidden layers' outputs)
    assert all(output is outputs[0] for output in outputs)  # (one buffer, shared)
