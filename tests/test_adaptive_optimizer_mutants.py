"""Adam, RMSprop and Adagrad behaviour that a mutation audit of their sources found no test for:
each test here fails on a small change to the source (named in its docstring) that the rest of
the suite let through. Steps are compared with ``torch.optim``'s bits, with its trajectories in
float64 (50 steps, 1e-12) or with exact values; refusals by type and message, with the
optimizer left as it was."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
import torch

from minidl import nn, optim

F64 = torch.float64
STEPS = 50
RTOL = 1e-12

MakeOptimizer = Callable[[Iterable[nn.Parameter]], optim.Optimizer]
MakeTorchOptimizer = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]

WEIGHT_DECAY_CASES: dict[str, tuple[MakeOptimizer, MakeTorchOptimizer]] = {
    "adam": (
        lambda p: optim.Adam(p, lr=0.01, betas=(0.8, 0.95), weight_decay=0.3),
        lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.95), weight_decay=0.3),
    ),
    "rmsprop": (
        lambda p: optim.RMSprop(p, lr=0.01, alpha=0.9, weight_decay=0.3, momentum=0.5),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, weight_decay=0.3, momentum=0.5),
    ),
    "adagrad": (
        lambda p: optim.Adagrad(p, lr=0.1, lr_decay=0.01, weight_decay=0.3),
        lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.01, weight_decay=0.3),
    ),
    "adamw": (
        lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.3),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.3),
    ),
    "sgd": (
        lambda p: optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.3),
        lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.3),
    ),
}


def _parameters(flat: bool) -> list[nn.Parameter]:
    """Three parameters in float64: views of one flat buffer (a Sequential's, the fused update)
    or loose ones (the update parameter by parameter)."""
    if flat:
        model = nn.Sequential(nn.Linear(3, 4, dtype=F64), nn.Tanh(), nn.Linear(4, 2, dtype=F64))
        parameters = list(model.parameters())
        generator = torch.Generator().manual_seed(11)
        for parameter in parameters:
            parameter.data.copy_(torch.randn(parameter.data.shape, generator=generator, dtype=F64))
        return parameters
    generator = torch.Generator().manual_seed(11)
    shapes = [(4, 3), (4,), (2, 4)]
    return [nn.Parameter(torch.randn(shape, generator=generator, dtype=F64)) for shape in shapes]


def _twins(parameters: list[nn.Parameter]) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(p.data.clone()) for p in parameters]


def _assert_close(ours: list[nn.Parameter], theirs: list[torch.nn.Parameter], what: str) -> None:
    for mine, other in zip(ours, theirs, strict=True):
        torch.testing.assert_close(
            mine.data, other.data.detach(), rtol=RTOL, atol=1e-14, msg=lambda m: f"{what}: {m}"
        )


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per-parameter"])
@pytest.mark.parametrize("case", sorted(WEIGHT_DECAY_CASES))
def test_weight_decay_leaves_the_gradients_as_they_were(case: str, flat: bool) -> None:
    """The L2 penalty is added to a copy of the gradient: ``step`` leaves ``p.grad`` as it was
    (bit for bit), so gradients accumulated over steps without ``zero_grad`` give torch.optim's
    trajectory (50 steps, float64, 1e-12). (The penalty added to the gradient in place passed
    every trajectory test, all of which zero the gradients between steps.)"""
    make, make_torch = WEIGHT_DECAY_CASES[case]
    ours = _parameters(flat)
    theirs = _twins(ours)
    optimizer, reference = make(ours), make_torch(theirs)
    generator = torch.Generator().manual_seed(5)
    sums = [torch.zeros_like(other.data) for other in theirs]
    for other, total in zip(theirs, sums, strict=True):
        other.grad = total
    for step in range(STEPS):
        for mine, total in zip(ours, sums, strict=True):
            grad = torch.randn(mine.data.shape, generator=generator, dtype=F64)
            mine.grad.add_(grad)  # (accumulated: no zero_grad between steps)
            total.add_(grad)
        held = [p.grad.clone() for p in ours]
        optimizer.step()
        reference.step()
        for mine, before in zip(ours, held, strict=True):
            assert torch.equal(mine.grad, before), f"{case}: step {step} changed a gradient"
        _assert_close(ours, theirs, f"{case}, step {step}")


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per-parameter"])
def test_adam_takes_a_step_size_past_float16s_range_in_float64(flat: bool) -> None:
    """Adam's step size ``lr / (1 - beta1^t)`` is refused only beyond the parameters' own dtype:
    in float64 a rate of 1e4 (a step size of 1e5 at step 1, past float16's 65504) trains as
    torch.optim's Adam does (50 steps, 1e-12). (A refusal of any step size past 65504, whatever
    the dtype, passed every test.)"""
    ours = _parameters(flat)
    theirs = _twins(ours)
    optimizer = optim.Adam(ours, lr=1e4, betas=(0.9, 0.99))
    reference = torch.optim.Adam(theirs, lr=1e4, betas=(0.9, 0.99))
    generator = torch.Generator().manual_seed(6)
    for step in range(STEPS):
        for mine, other in zip(ours, theirs, strict=True):
            grad = torch.randn(mine.data.shape, generator=generator, dtype=F64)
            mine.grad.copy_(grad)
            other.grad = grad.clone()
        optimizer.step()
        reference.step()
        _assert_close(ours, theirs, f"step {step}")
    assert optimizer.step_count == STEPS


@pytest.mark.parametrize(
    ("dtype", "lr", "larger", "message"),
    [
        (
            torch.float16,
            32752.0,
            32768.0,
            r"^Adam: the step size lr / \(1 - beta1\^t\) is 65536 at step t = 1 \(lr=32768\.0, "
            r"beta1=0\.5\), beyond the range of the parameters' dtype torch\.float16 \(largest "
            r"65504\); give a smaller lr$",
        ),
        (
            torch.float32,
            torch.finfo(torch.float32).max / 2,
            torch.finfo(torch.float32).max,
            r"^Adam: the step size lr / \(1 - beta1\^t\) is 6\.80565e\+38 at step t = 1 "
            r"\(lr=3\.4028234663852886e\+38, beta1=0\.5\), beyond the range of the parameters' "
            r"dtype torch\.float32 \(largest 3\.40282e\+38\); give a smaller lr$",
        ),
    ],
    ids=["float16", "float32"],
)
def test_adam_takes_a_step_size_of_exactly_the_dtypes_largest_number(
    dtype: torch.dtype, lr: float, larger: float, message: str
) -> None:
    """A step size of exactly the dtype's largest number (``lr / (1 - 0.5)`` with ``lr`` half
    of it) is in the dtype's range: the step is taken, with torch.optim's bits, and only a
    larger one is refused, naming it, with nothing changed. (Refusing a step size equal to
    the largest, ``>=`` for ``>`` in either comparison with it, passed every test, whose
    refused step sizes lie well past it.)"""
    start = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=dtype)
    grad = torch.tensor([0.25, -1.0, 2.0, 0.0], dtype=dtype)
    mine = nn.Parameter(start.clone())
    other = torch.nn.Parameter(start.clone())
    optimizer = optim.Adam([mine], lr=lr, betas=(0.5, 0.9), eps=1e-3)
    reference = torch.optim.Adam([other], lr=lr, betas=(0.5, 0.9), eps=1e-3)
    mine.grad.copy_(grad)
    other.grad = grad.clone()
    optimizer.step()
    reference.step()
    assert torch.equal(mine.data, other.data.detach())
    assert torch.isfinite(mine.data).all() and optimizer.step_count == 1
    larger_parameter = nn.Parameter(start.clone())
    refusing = optim.Adam([larger_parameter], lr=larger, betas=(0.5, 0.9), eps=1e-3)
    larger_parameter.grad.copy_(grad)
    with pytest.raises(ValueError, match=message):
        refusing.step()
    assert torch.equal(larger_parameter.data, start) and refusing.step_count == 0
    assert not any(tensor.any() for tensor in refusing.state.values())


@pytest.mark.parametrize("momentum", [0.0, 0.5], ids=["plain", "momentum"])
def test_centered_rmsprop_clamps_a_negative_variance_at_zero(momentum: float) -> None:
    """Centered RMSprop's variance ``s - g_bar^2`` below 0 (here by hand: ``s`` 1, ``g_bar`` 2,
    kept at ``alpha`` 1) is clamped at 0, as documented, so the denominator is ``eps`` alone:
    exact values over two steps, with the momentum buffer where there is one. (Its absolute
    value, ``sqrt(3) + eps``, passed every test, whose negative variances are rounding errors
    of about 1e-16, which torch.optim's NaN there leaves unchecked.)"""
    eps, lr = 0.5, 0.25
    parameter = nn.Parameter(torch.tensor([1.0, -3.0], dtype=F64))
    optimizer = optim.RMSprop(
        [parameter], lr=lr, alpha=1.0, eps=eps, momentum=momentum, centered=True
    )
    optimizer.state["square_avg"] = torch.ones(2, dtype=F64)
    optimizer.state["grad_avg"] = torch.full((2,), 2.0, dtype=F64)
    grad = torch.tensor([1.0, -2.0], dtype=F64)
    expected = parameter.data.clone()
    buffer = torch.zeros(2, dtype=F64)
    for _ in range(2):
        parameter.grad.copy_(grad)
        optimizer.step()
        buffer = momentum * buffer + grad / eps
        expected = expected - lr * buffer
        assert torch.equal(parameter.data, expected), (parameter.data, expected)
    assert torch.equal(optimizer.state["square_avg"], torch.ones(2, dtype=F64))
    assert torch.equal(optimizer.state["grad_avg"], torch.full((2,), 2.0, dtype=F64))


def test_an_edited_adam_state_with_betas_read_back_as_a_list_is_named_as_edited() -> None:
    """An Adam state whose settings are this optimizer's own, ``betas`` read back as a list (as
    JSON gives it), but whose state entries were renamed: refused with a ``KeyError`` that
    says the state was edited (a tuple and a list of the same betas compared unequal, and the
    message told the user to build an Adam with the settings it already has), nothing
    changed."""
    parameter = nn.Parameter(torch.ones(3, dtype=F64))
    optimizer = optim.Adam([parameter], lr=0.1, betas=(0.8, 0.9))
    parameter.grad.fill_(0.5)
    optimizer.step()
    saved = optimizer.state_dict()
    edited = {
        **saved,
        "hyperparameters": {**saved["hyperparameters"], "betas": [0.8, 0.9]},
        "state": {"exp_avg": saved["state"]["exp_avg"], "m2": saved["state"]["exp_avg_sq"]},
    }
    with pytest.raises(KeyError) as info:
        optimizer.load_state_dict(edited)
    assert info.value.args[0] == (
        "Adam.load_state_dict: state must have the entries ['exp_avg', 'exp_avg_sq'], got "
        "['exp_avg', 'm2'] (saved with this Adam's own settings, whose state has no other "
        "entries: the state was edited, or put together from another optimizer's)"
    )
    after = optimizer.state_dict()
    assert (after["lr"], after["step_count"], after["hyperparameters"]) == (
        0.1,
        1,
        {"betas": (0.8, 0.9), "eps": 1e-8, "weight_decay": 0.0},
    )
    for name, tensor in saved["state"].items():
        assert torch.equal(after["state"][name], tensor)


ADAGRAD_SETTINGS = {
    "lr_decay": 0.01,
    "weight_decay": 0.125,
    "initial_accumulator_value": 0.25,
    "eps": 1e-6,
}


def test_adagrad_saves_shows_and_restores_its_initial_accumulator_value() -> None:
    """Adagrad's ``initial_accumulator_value`` is one of its settings like the others: listed by
    ``hyperparameters()`` and ``state_dict()`` as given (torch.optim's ``param_groups`` hold the
    same numbers), shown by ``repr``, and restored by ``load_state_dict`` into an Adagrad built
    with another one, whose sums are the saved ones. (Listing it as 0 whatever was given passed
    every test: the reload test's other settings differ anyway, and the value changes no sum
    after the constructor, so trajectories agree.)"""
    start = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    parameter = nn.Parameter(start.clone())
    optimizer = optim.Adagrad([parameter], lr=0.1, **ADAGRAD_SETTINGS)
    theirs = torch.nn.Parameter(start.clone())
    reference = torch.optim.Adagrad(
        [theirs],
        lr=0.1,
        lr_decay=0.01,
        weight_decay=0.125,
        initial_accumulator_value=0.25,
        eps=1e-6,
    )
    group = reference.state_dict()["param_groups"][0]
    assert (
        optimizer.hyperparameters()
        == ADAGRAD_SETTINGS
        == {key: group[key] for key in ADAGRAD_SETTINGS}
    )
    assert repr(optimizer) == (
        "Adagrad(lr=0.1, lr_decay=0.01, weight_decay=0.125, initial_accumulator_value=0.25, "
        "eps=1e-06)"
    )
    grad = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    parameter.grad.copy_(grad)
    theirs.grad = grad.clone()
    optimizer.step()
    reference.step()
    saved = optimizer.state_dict()
    assert saved["hyperparameters"] == ADAGRAD_SETTINGS
    assert torch.equal(saved["state"]["sum"], reference.state[theirs]["sum"])

    other = optim.Adagrad([nn.Parameter(start.clone())], lr=0.1, lr_decay=0.01, eps=1e-6)
    other.load_state_dict(saved)
    assert other.initial_accumulator_value == 0.25
    assert other.hyperparameters() == ADAGRAD_SETTINGS
    assert repr(other) == repr(optimizer)
    assert torch.equal(other.state["sum"], saved["state"]["sum"])
