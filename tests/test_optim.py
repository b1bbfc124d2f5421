"""Optimizers against torch.optim trajectories (float64), flat against per-parameter updates,
state save/restore, and convergence on a quadratic."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest
import torch

from minidl import nn, optim
from minidl.nn.flat import flat_buffer
from tests.helpers import F64, assert_close, run_stopped_before_store, torch_loss, torch_twin

STEPS = 40
Batch = tuple[torch.Tensor, torch.Tensor]
MakeOptimizer = Callable[[Iterable[nn.Parameter]], optim.Optimizer]
MakeTorchOptimizer = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


def _batches(steps: int, seed: int = 0, features: int = 3, classes: int = 2) -> list[Batch]:
    """Random batches of random sizes (1 included), from their own generator."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for step in range(steps):
        size = 1 if step == 3 else int(torch.randint(2, 12, (), generator=generator))
        x = torch.randn(size, features, dtype=F64, generator=generator)
        y = torch.randint(classes, (size,), generator=generator)
        batches.append((x, y))
    return batches


def _step(model: nn.Module, criterion: nn.Loss, optimizer: optim.Optimizer, batch: Batch) -> None:
    optimizer.zero_grad()
    criterion(model(batch[0]), batch[1])
    model.backward(criterion.backward())
    optimizer.step()


def _torch_step(
    model: torch.nn.Module, criterion: nn.Loss, optimizer: torch.optim.Optimizer, batch: Batch
) -> None:
    optimizer.zero_grad()
    torch_loss(criterion, model(batch[0]), batch[1]).backward()
    optimizer.step()


def _assert_same_parameters(
    parameters: Iterable[nn.Parameter], expected: Iterable[torch.Tensor], rtol: float, step: int
) -> None:
    for index, (parameter, value) in enumerate(zip(parameters, expected, strict=True)):
        assert_close(parameter.data, value.detach(), rtol, f"step {step}, parameter {index}")


CASES: dict[str, tuple[MakeOptimizer, MakeTorchOptimizer]] = {
    "sgd": (lambda p: optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd-momentum-0.5": (
        lambda p: optim.SGD(p, lr=0.05, momentum=0.5),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5),
    ),
    "sgd-momentum-0.9": (
        lambda p: optim.SGD(p, lr=0.02, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9),
    ),
    "adadelta-default": (optim.Adadelta, torch.optim.Adadelta),
    "adadelta-lr0.5-rho0.5-eps1e-3": (
        lambda p: optim.Adadelta(p, lr=0.5, rho=0.5, eps=1e-3),
        lambda p: torch.optim.Adadelta(p, lr=0.5, rho=0.5, eps=1e-3),
    ),
    "adadelta-lr1e-2-rho0.95-eps1e-8": (
        lambda p: optim.Adadelta(p, lr=1e-2, rho=0.95, eps=1e-8),
        lambda p: torch.optim.Adadelta(p, lr=1e-2, rho=0.95, eps=1e-8),
    ),
    "adadelta-rho0": (
        lambda p: optim.Adadelta(p, lr=2.0, rho=0.0),
        lambda p: torch.optim.Adadelta(p, lr=2.0, rho=0.0),
    ),
}


@pytest.mark.parametrize("criterion", [nn.CrossEntropyLoss(), nn.MSELoss()], ids=repr)
@pytest.mark.parametrize("case", list(CASES))
def test_trajectory_matches_torch_optim(case: str, criterion: nn.Loss) -> None:
    make, make_torch = CASES[case]
    model = nn.mlp((3, 6, 5, 2), "tanh", dtype=F64)
    twin = torch_twin(model)
    optimizer, torch_optimizer = make(model.parameters()), make_torch(twin.parameters())
    for step, batch in enumerate(_batches(STEPS)):
        _step(model, criterion, optimizer, batch)
        _torch_step(twin, criterion, torch_optimizer, batch)
        _assert_same_parameters(model.parameters(), twin.parameters(), 1e-10, step)
    assert optimizer.step_count == STEPS


REGRESSION_CASES: dict[str, tuple[MakeOptimizer, MakeTorchOptimizer]] = {
    "sgd-momentum-0.9": CASES["sgd-momentum-0.9"],
    "sgd-nesterov-0.9-weight-decay": (
        lambda p: optim.SGD(p, lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.01),
    ),
    "sgd-nesterov-0.5": (
        lambda p: optim.SGD(p, lr=0.05, momentum=0.5, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, nesterov=True),
    ),
}


@pytest.mark.parametrize(
    "criterion",
    [nn.L1Loss(), nn.L1Loss(reduction="sum"), nn.HuberLoss(delta=0.3), nn.HuberLoss(delta=2.0)],
    ids=repr,
)
@pytest.mark.parametrize("case", list(REGRESSION_CASES))
def test_regression_losses_train_as_torch_optim_with_momentum_and_nesterov(
    case: str, criterion: nn.Loss
) -> None:
    """L1 and Huber over many steps of SGD with momentum and Nesterov's, against
    ``torch.optim.SGD`` on the same numbers (the random training fuzz drew neither loss, nor
    Nesterov's momentum, in its fixed examples)."""
    make, make_torch = REGRESSION_CASES[case]
    model = nn.mlp((3, 6, 5, 2), "tanh", dtype=F64)
    twin = torch_twin(model)
    optimizer, torch_optimizer = make(model.parameters()), make_torch(twin.parameters())
    for step, (x, y) in enumerate(_batches(STEPS)):
        batch = (x, torch.nn.functional.one_hot(y, 2).to(F64) * 2.0 - 0.5)
        _step(model, criterion, optimizer, batch)
        _torch_step(twin, criterion, torch_optimizer, batch)
        _assert_same_parameters(model.parameters(), twin.parameters(), 1e-10, step)
    assert optimizer.step_count == STEPS


class _Chain:
    """Standalone layers run one after the other, without a Sequential (so not flattened)."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        self.layers = list(layers)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, grad: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    def parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers for p in layer.parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()


@pytest.mark.parametrize("case", ["sgd", "sgd-momentum-0.9", "adadelta-default"])
def test_per_parameter_path_equals_flat_path(case: str) -> None:
    make, _ = CASES[case]
    flat_model = nn.mlp((3, 6, 5, 2), "relu", dtype=F64)
    layers: list[nn.Module] = []
    for child in flat_model:
        if isinstance(child, nn.Linear):
            layer = nn.Linear(child.in_features, child.out_features, dtype=F64)
            layer.load_state_dict(child.state_dict())
            layers.append(layer)
        else:
            layers.append(nn.ReLU())
    chain = _Chain(layers)
    assert flat_buffer([p.data for p in flat_model.parameters()]) is not None
    assert flat_buffer([p.data for p in chain.parameters()]) is None
    criterion = nn.CrossEntropyLoss()
    flat_optimizer, chain_optimizer = make(flat_model.parameters()), make(chain.parameters())
    for step, batch in enumerate(_batches(STEPS, seed=1)):
        _step(flat_model, criterion, flat_optimizer, batch)
        _step(chain, criterion, chain_optimizer, batch)  # type: ignore[arg-type]
        _assert_same_parameters(
            chain.parameters(), [p.data for p in flat_model.parameters()], 1e-12, step
        )


@pytest.mark.parametrize("case", ["sgd-momentum-0.9", "adadelta-lr0.5-rho0.5-eps1e-3"])
def test_state_dict_round_trip_continues_identically(case: str) -> None:
    make, _ = CASES[case]
    criterion = nn.MSELoss()
    batches = _batches(30, seed=2)
    model = nn.mlp((3, 4, 2), "sigmoid", dtype=F64)
    optimizer = make(model.parameters())
    for batch in batches[:10]:
        _step(model, criterion, optimizer, batch)
    saved_model, saved_optimizer = model.state_dict(), optimizer.state_dict()
    saved_copy = {name: tensor.clone() for name, tensor in saved_optimizer["state"].items()}
    for batch in batches[10:]:
        _step(model, criterion, optimizer, batch)
    # The saved state is a copy: the later steps did not change it.
    for name, tensor in saved_optimizer["state"].items():
        assert torch.equal(tensor, saved_copy[name])

    resumed = nn.mlp((3, 4, 2), "sigmoid", dtype=F64)
    resumed.load_state_dict(saved_model)
    resumed_optimizer = make(resumed.parameters())
    resumed_optimizer.load_state_dict(saved_optimizer)
    assert resumed_optimizer.step_count == 10
    for batch in batches[10:]:
        _step(resumed, criterion, resumed_optimizer, batch)
    for parameter, expected in zip(resumed.parameters(), model.parameters(), strict=True):
        assert torch.equal(parameter.data, expected.data)
    # Without the optimizer's state the continuation differs: the state matters.
    fresh = nn.mlp((3, 4, 2), "sigmoid", dtype=F64)
    fresh.load_state_dict(saved_model)
    fresh_optimizer = make(fresh.parameters())
    for batch in batches[10:]:
        _step(fresh, criterion, fresh_optimizer, batch)
    assert not torch.equal(next(fresh.parameters()).data, next(model.parameters()).data)


def test_sgd_momentum_keeps_the_papers_velocity_when_lr_changes() -> None:
    # v_t = mu v_{t-1} + lr_t g_t ; w_t = w_{t-1} - v_t (the paper's convention, not torch's).
    layer = nn.Linear(3, 2, dtype=F64)
    criterion = nn.MSELoss()
    optimizer = optim.SGD(layer.parameters(), lr=0.1, momentum=0.8)
    weights = [p.data.clone() for p in layer.parameters()]
    velocities = [torch.zeros_like(w) for w in weights]
    for step, batch in enumerate(_batches(12, seed=3)):
        optimizer.lr = 0.1 / (1 + step)
        layer.zero_grad()
        criterion(layer(batch[0]), batch[1])
        layer.backward(criterion.backward())
        grads = [p.grad.clone() for p in layer.parameters()]
        optimizer.step()
        for index, grad in enumerate(grads):
            velocities[index] = 0.8 * velocities[index] + optimizer.lr * grad
            weights[index] = weights[index] - velocities[index]
        _assert_same_parameters(layer.parameters(), weights, 1e-12, step)


def test_zero_grad_clears_flat_and_standalone_gradients() -> None:
    model = nn.mlp((3, 4, 2), dtype=F64)
    layer = nn.Linear(2, 2, dtype=F64)
    for params in (list(model.parameters()), list(layer.parameters())):
        for p in params:
            p.grad.fill_(1.0)
        optimizer = optim.SGD(params, lr=0.1)
        optimizer.zero_grad()
        assert all(bool((p.grad == 0).all()) for p in params)


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "standalone"])
def test_zero_grad_takes_pytorchs_set_to_none(flat: bool) -> None:
    """PyTorch's ``zero_grad(set_to_none=...)``, on an optimizer and on a module: ``False`` (by
    keyword or by position, as PyTorch takes it) zeroes the gradients in place, the tensors
    kept; ``True``, which would leave ``grad`` ``None``, is refused in the class's name, and a
    flag that is no bool by type, both with the gradients left as they were."""
    model = nn.mlp((3, 4, 2), dtype=F64) if flat else nn.Linear(3, 2, dtype=F64)
    params = list(model.parameters())
    optimizer = optim.Adam(params, lr=0.1)
    owners = ((optimizer.zero_grad, "Adam"), (model.zero_grad, type(model).__name__))
    for zero_grad, owner in owners:
        for p in params:
            p.grad.fill_(1.0)
        for bad, kind, message in (
            (True, ValueError, "set_to_none=True is not supported (a minidl gradient is never"),
            (1, TypeError, "set_to_none must be True or False, got 1"),
            (None, TypeError, "set_to_none must be True or False, got None"),
        ):
            with pytest.raises(kind, match=rf"^{owner}\.zero_grad: " + re.escape(message)):
                zero_grad(set_to_none=bad)
            with pytest.raises(kind, match=rf"^{owner}\.zero_grad: "):
                zero_grad(bad)
            assert all(bool((p.grad == 1).all()) for p in params)
        grads = [p.grad for p in params]
        zero_grad(set_to_none=False)
        assert all(bool((p.grad == 0).all()) for p in params)
        for p in params:
            p.grad.fill_(1.0)
        zero_grad(False)
        assert all(bool((p.grad == 0).all()) for p in params)
        assert [id(p.grad) for p in params] == [id(g) for g in grads]


def _quadratic(make: MakeOptimizer, steps: int) -> float:
    """Minimise 0.5 * sum(a (w - c)^2) (condition number 20) and return max |w - c|."""
    curvature = torch.tensor([1.0, 10.0, 0.5], dtype=F64)
    minimum = torch.tensor([0.5, -2.0, 1.0], dtype=F64)
    parameter = nn.Parameter(torch.tensor([-1.0, 1.5, 3.0], dtype=F64))
    optimizer = make([parameter])
    for _ in range(steps):
        optimizer.zero_grad()
        parameter.grad.add_(curvature * (parameter.data - minimum))
        optimizer.step()
    return float((parameter.data - minimum).abs().max())


@pytest.mark.parametrize(
    ("make", "steps", "tolerance"),
    [
        (lambda p: optim.SGD(p, lr=0.15), 300, 1e-6),
        (lambda p: optim.SGD(p, lr=0.05, momentum=0.9), 500, 1e-8),
        (optim.Adadelta, 1000, 1e-8),
        (lambda p: optim.Adadelta(p, lr=10.0, rho=0.95), 300, 1e-8),
    ],
    ids=["sgd", "sgd-momentum", "adadelta", "adadelta-lr10"],
)
def test_converges_on_a_quadratic(make: MakeOptimizer, steps: int, tolerance: float) -> None:
    assert _quadratic(make, steps) < tolerance


def test_optimizer_updates_parameters_in_place() -> None:
    layer = nn.Linear(2, 2, dtype=F64)
    weight, before = layer.weight.data, layer.weight.data.clone()
    optimizer = optim.Adadelta(layer.parameters())
    layer.weight.grad.fill_(1.0)
    optimizer.step()
    assert layer.weight.data is weight
    # First step: E[g^2] = 0.1, update = sqrt(eps) / sqrt(0.1 + eps) for g = 1.
    assert_close(before - weight, torch.full_like(weight, (1e-6 / (0.1 + 1e-6)) ** 0.5), 1e-12)


@pytest.mark.parametrize(
    ("optimizer", "expected"),
    [
        (lambda p: optim.SGD(p, lr=0.1, momentum=0.9), "SGD(lr=0.1, momentum=0.9)"),
        (optim.Adadelta, "Adadelta(lr=1.0, rho=0.9, eps=1e-06)"),
    ],
)
def test_optimizer_repr(optimizer: MakeOptimizer, expected: str) -> None:
    assert repr(optimizer(nn.Linear(2, 2).parameters())) == expected


@pytest.mark.parametrize(
    ("make", "make_torch"),
    [
        (lambda p: optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
        (
            lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        ),
        (optim.Adadelta, torch.optim.Adadelta),
    ],
    ids=["sgd", "sgd-momentum", "adadelta"],
)
def test_step_uses_a_gradient_tensor_assigned_to_a_flat_parameter(
    make: MakeOptimizer, make_torch: MakeTorchOptimizer
) -> None:
    """``p.grad = new_tensor`` on a parameter of a flat model (a Sequential, whose gradients are
    views of one buffer) takes the parameter's gradient out of that buffer: the next ``step``
    must read the new tensor, not the buffer's stale slice, and ``zero_grad`` must clear it.

    The oracle is ``torch.optim`` on plain tensors given the same gradients."""
    model = nn.mlp((3, 5, 2), "tanh", dtype=F64)
    assert flat_buffer([p.grad for p in model.parameters()]) is not None
    twin = [torch.nn.Parameter(p.data.clone()) for p in model.parameters()]
    optimizer, torch_optimizer = make(model.parameters()), make_torch(twin)
    generator = torch.Generator().manual_seed(7)
    gradients = [
        [torch.randn(p.shape, dtype=F64, generator=generator) for p in model.parameters()]
        for _ in range(4)
    ]
    for step, grads in enumerate(gradients):
        for index, (parameter, grad) in enumerate(zip(model.parameters(), grads, strict=True)):
            if step == 1 and index in (0, 3):  # replace two gradient tensors, once
                old = parameter.grad
                parameter.grad = grad.clone()
                assert parameter.grad is not old
            else:  # in place: into the flat buffer, or into the replaced tensors
                parameter.grad.copy_(grad)
        for twin_parameter, grad in zip(twin, grads, strict=True):
            twin_parameter.grad = grad.clone()
        optimizer.step()
        torch_optimizer.step()
        _assert_same_parameters(model.parameters(), twin, 1e-12, step)
    optimizer.zero_grad()
    assert all(bool((p.grad == 0).all()) for p in model.parameters())


def test_a_step_in_the_middle_of_a_replacement_does_not_miss_it() -> None:
    """Another thread's step (here: one run at every line of ``Parameter.__setattr__``, traced)
    that reads Parameter.replacements while a parameter's data is being replaced: the count
    was raised before the tensor was put in place, so a step in between found the old tensor
    under the new count, took the layout as unchanged and kept updating the old buffer for
    good (the new data never moved)."""
    import sys
    from types import FrameType

    model = nn.Sequential(nn.Linear(2, 3, dtype=F64))
    optimizer = optim.SGD(model.parameters(), lr=1.0)
    optimizer.step()  # (the flat layout found)
    weight = model[0].weight
    code = type(weight).__setattr__.__code__

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_locals.get("name") == "data":
            optimizer.step()  # (zero gradients: the layout is looked at, nothing moves)
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code is code else None

    new = torch.zeros(3, 2, dtype=F64)
    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        weight.data = new
    finally:
        sys.settrace(previous)
    weight.grad.fill_(1.0)
    optimizer.step()
    assert torch.equal(weight.data, torch.full((3, 2), -1.0, dtype=F64))
    assert weight.data.data_ptr() == new.data_ptr()  # (the tensor put in place, updated)


def test_two_replacements_counted_at_once_store_two_counts() -> None:
    """Two assignments of a parameter's data counted at once (as two threads may): the first,
    stopped just before it stores its count (traced bytecode by bytecode), lets the second
    replace another parameter's data and a reader look at the count; the first then stores
    its own. The reader must find the count moved, or it takes the first replacement for
    seen. With ``replacements += 1`` both stored one more than the count they read, the
    same number, and the reader found the count unchanged."""
    first, second = nn.Parameter(torch.zeros(2, dtype=F64)), nn.Parameter(torch.zeros(2, dtype=F64))
    read: list[int] = []

    def between() -> None:
        second.data = torch.ones(2, dtype=F64)
        read.append(nn.Parameter.replacements)

    def assign() -> None:
        first.data = torch.ones(2, dtype=F64)

    assert run_stopped_before_store(
        assign, nn.Parameter.__setattr__, "data", "replacements", between
    )
    assert nn.Parameter.replacements != read[0]


def test_a_hyperparameter_given_another_name_in_a_subclass_is_an_alias() -> None:
    # The alias renamed the shared hyper-parameter: every SGD of the process then failed to
    # build ("'SGD' object has no attribute '_mu'").
    class Aliased(optim.SGD):
        mu = optim.SGD.momentum

    parameter = nn.Parameter(torch.ones(2, dtype=F64))
    plain = optim.SGD([parameter], lr=0.5, momentum=0.5)
    assert plain.momentum == 0.5
    aliased = Aliased([nn.Parameter(torch.ones(2, dtype=F64))], lr=0.5, momentum=0.5)
    assert aliased.mu == aliased.momentum == 0.5
    aliased.mu = 0.25
    assert aliased.momentum == 0.25 and aliased.hyperparameters()["momentum"] == 0.25
    with pytest.raises(ValueError, match=r"^Aliased: momentum must be"):
        aliased.mu = 2.0
    assert aliased.momentum == 0.25


def _check_beta(where: str, value: object) -> float:
    if not isinstance(value, float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{where}: beta must be a float in [0, 1), got {value!r}")
    return value


class _Momentum(optim.Optimizer):
    """An optimizer of one's own: a :class:`~minidl.optim.Hyperparameter` with a check."""

    state_names = ("buffer",)
    beta = optim.Hyperparameter(_check_beta)

    def __init__(self, params: Iterable[nn.Parameter], lr: float, beta: float = 0.9) -> None:
        self.beta = beta
        super().__init__(params, lr)

    def _update(
        self, value: torch.Tensor, grad: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> None:
        state[0].mul_(self.beta).add_(grad)
        value.sub_(state[0], alpha=self.lr)


def test_an_optimizer_of_ones_own_saves_and_checks_its_hyperparameters() -> None:
    """Its hyper-parameters were neither in ``state_dict`` nor in ``repr`` (the base class's
    ``hyperparameters`` gave none): a resumed run went on with the value it was built with.
    A ``Hyperparameter``'s ``check`` runs in the constructor, on assignment and on load."""
    optimizer = _Momentum([nn.Parameter(torch.ones(3, dtype=F64))], lr=0.1, beta=0.5)
    optimizer.beta = 0.7
    assert repr(optimizer) == "_Momentum(lr=0.1, beta=0.7)"
    saved = optimizer.state_dict()
    assert saved["hyperparameters"] == {"beta": 0.7}
    other = _Momentum([nn.Parameter(torch.ones(3, dtype=F64))], lr=0.1, beta=0.5)
    other.load_state_dict(saved)
    assert other.beta == 0.7
    with pytest.raises(ValueError, match=r"^_Momentum: beta must be a float in \[0, 1\), got 2$"):
        _Momentum([nn.Parameter(torch.ones(3, dtype=F64))], lr=0.1, beta=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^_Momentum: beta must be a float in \[0, 1\), got 'x'$"):
        optimizer.beta = "x"
    assert optimizer.beta == 0.7
    with pytest.raises(
        ValueError,
        match=r"^_Momentum\.load_state_dict: beta must be a float in \[0, 1\), got 1\.5$",
    ):
        other.load_state_dict({**saved, "hyperparameters": {"beta": 1.5}})
    assert other.beta == 0.7
    # (a state saved before they were saved, without them, still loads, keeping the value)
    other.load_state_dict({**saved, "hyperparameters": {}})
    assert other.beta == 0.7


def test_a_rate_set_after_the_model_was_cast_is_checked_against_its_new_dtype() -> None:
    """The rate's range check compared with the dtype the optimizer last checked against: a
    rate past float32's range, set after a cast from float64, was taken and refused only by
    the next step."""
    model = nn.Sequential(nn.Linear(2, 2)).to(dtype=F64)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    model.to(dtype=torch.float32)
    with pytest.raises(
        ValueError,
        match=r"^SGD: lr=1e\+39 is beyond the range of the parameters' dtype "
        r"torch\.float32",
    ):
        optimizer.lr = 1e39
    assert optimizer.lr == 0.1
    optimizer.lr = 1e30
    assert optimizer.lr == 1e30


class _Clipped(optim.Optimizer):
    """An optimizer of one's own whose hyper-parameter is set only when given."""

    clip = optim.Hyperparameter()

    def __init__(self, params: Iterable[nn.Parameter], lr: float, clip: float | None = None):
        super().__init__(params, lr)
        if clip is not None:
            self.clip = clip

    def _update(
        self, value: torch.Tensor, grad: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> None:
        value.sub_(grad, alpha=self.lr)


def _trust(where: str, value: object) -> float:
    if not isinstance(value, float) or not value > 0:
        raise ValueError(f"{where}: trust must be a float > 0, got {value!r}")
    return value


class _Lars(optim.SGD):
    """A subclass of a built-in optimizer that adds a hyper-parameter."""

    trust = optim.Hyperparameter(_trust)

    def __init__(self, params: Iterable[nn.Parameter], lr: float, trust: float, **kw: Any):
        super().__init__(params, lr, **kw)
        self.trust = trust


def test_hyperparameters_of_ones_own_unset_aliased_or_added_to_a_built_in_one() -> None:
    """One declared but not set left the optimizer unable to step, print or save (the default
    ``hyperparameters`` read every one); one added by a subclass of SGD was neither shown nor
    saved; an alias was listed twice. Each is listed once, by its own name, where set; those
    added are optional in a state to load, and a tuple comes back a tuple."""
    model = nn.Linear(2, 2, dtype=F64)
    clipped = _Clipped(model.parameters(), 0.1)
    model(torch.ones(3, 2, dtype=F64))
    model.backward(torch.ones(3, 2, dtype=F64))
    clipped.step()
    assert repr(clipped) == "_Clipped(lr=0.1)" and clipped.state_dict()["hyperparameters"] == {}
    lars = _Lars(model.parameters(), lr=0.1, trust=0.5, momentum=0.9)
    assert repr(lars) == "_Lars(lr=0.1, momentum=0.9, trust=0.5)"
    saved = lars.state_dict()
    assert saved["hyperparameters"] == {"momentum": 0.9, "trust": 0.5}
    other = _Lars(model.parameters(), lr=0.1, trust=0.01, momentum=0.9)
    other.load_state_dict(saved)
    assert other.trust == 0.5
    other.load_state_dict({**saved, "hyperparameters": {"momentum": 0.9}})  # saved before
    assert other.trust == 0.5
    with pytest.raises(ValueError, match=r"^_Lars\.load_state_dict: trust must be a float > 0"):
        other.load_state_dict({**saved, "hyperparameters": {"momentum": 0.9, "trust": -1.0}})
    assert other.trust == 0.5
    assert optim.SGD(model.parameters(), lr=0.1).state_dict()["hyperparameters"] == {
        "momentum": 0.0
    }  # (a built-in optimizer's keys as before)

    class Aliased(_Momentum):
        mu = _Momentum.beta

    aliased = Aliased([nn.Parameter(torch.ones(2, dtype=F64))], lr=0.1, beta=0.5)
    assert aliased.hyperparameters() == {"beta": 0.5}

    class Paired(optim.Optimizer):
        pair = optim.Hyperparameter()

        def __init__(self, params: Iterable[nn.Parameter]) -> None:
            self.pair = (0.5, 0.25)
            super().__init__(params, 0.1)

    paired = Paired([nn.Parameter(torch.ones(2, dtype=F64))])
    paired.load_state_dict({**paired.state_dict(), "hyperparameters": {"pair": [0.75, 0.5]}})
    assert paired.pair == (0.75, 0.5)


@pytest.mark.parametrize(
    ("base", "settings"),
    [
        (optim.SGD, {"momentum": 0.9}),
        (optim.Adam, {"betas": (0.8, 0.99)}),
        (optim.AdamW, {"weight_decay": 0.1}),
        (optim.RMSprop, {"centered": True, "momentum": 0.5}),
        (optim.Adagrad, {"lr_decay": 0.01}),
        (optim.Adadelta, {"rho": 0.5}),
    ],
    ids=["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta"],
)
def test_a_subclass_of_a_built_in_optimizer_sets_its_own_setting_before_the_built_ins(
    base: type[optim.Optimizer], settings: dict[str, Any]
) -> None:
    """A subclass of a built-in optimizer that set a hyper-parameter of its own before calling
    the built-in's constructor (as a subclass of Optimizer does) failed to build with a bare
    KeyError (``'momentum'``, ``'betas'``, ...): the built-in's check of its settings together
    ran on the one setting, the built-in's not set yet. It builds, trains as the built-in with
    the same settings, and saves its own; a bad value of its own, or of the built-in's, is
    refused by name."""

    class Mine(base):  # type: ignore[valid-type,misc]
        trust = optim.Hyperparameter(_trust)

        def __init__(self, params: Iterable[nn.Parameter], lr: float, trust: float, **kw: Any):
            self.trust = trust
            super().__init__(params, lr, **kw)

    torch.manual_seed(0)
    model = nn.Linear(3, 2, dtype=F64)
    twin = nn.Linear(3, 2, dtype=F64)
    twin.load_state_dict(model.state_dict())
    mine = Mine(model.parameters(), 0.1, trust=0.5, **settings)
    plain = base(twin.parameters(), 0.1, **settings)
    assert mine.trust == 0.5 and mine.state_dict()["hyperparameters"] == {
        **plain.state_dict()["hyperparameters"],
        "trust": 0.5,
    }
    x = torch.randn(4, 3, dtype=F64)
    for _ in range(5):
        for layer, optimizer in ((model, mine), (twin, plain)):
            optimizer.zero_grad()
            out = layer(x)
            layer.backward(out - 1.0)
            optimizer.step()
    for got, expected in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(got.data, expected.data)
    with pytest.raises(ValueError, match=r"^Mine: trust must be a float > 0, got -1\.0$"):
        Mine(twin.parameters(), 0.1, trust=-1.0, **settings)
    key = next(iter(settings))
    with pytest.raises((TypeError, ValueError), match=rf"^Mine: {key}"):
        Mine(twin.parameters(), 0.1, trust=0.5, **{**settings, key: -1.0})
