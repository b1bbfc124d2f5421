"""Optimizer base, SGD and Adadelta behaviour that a second mutation audit of
``minidl.optim.optimizer``, ``minidl.optim.sgd`` and ``minidl.optim.adadelta`` found no test
for: each test here fails on a small change to the source (named in its docstring) that the
rest of the suite let through. Trajectories are compared with ``torch.optim`` in float64,
refusals by exception type and message, with the optimizer left as it was."""

from __future__ import annotations

import re

import pytest
import torch

from minidl import nn, optim
from minidl.optim.adadelta import eps_refusal

F64 = torch.float64


def _model() -> nn.Sequential:
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(3, 4, dtype=F64), nn.Tanh(), nn.Linear(4, 2, dtype=F64))


def _twin(model: nn.Module) -> list[torch.Tensor]:
    return [p.data.clone().requires_grad_() for p in model.parameters()]


def _set_gradients(
    parameters: list[nn.Parameter], twin: list[torch.Tensor], generator: torch.Generator
) -> None:
    for parameter, other in zip(parameters, twin, strict=True):
        parameter.grad.copy_(torch.randn(parameter.data.shape, dtype=F64, generator=generator))
        other.grad = parameter.grad.clone()


def _assert_equal(parameters: list[nn.Parameter], twin: list[torch.Tensor]) -> None:
    for index, (parameter, other) in enumerate(zip(parameters, twin, strict=True)):
        assert torch.equal(parameter.data, other.detach()), f"parameter {index}"


def test_adadeltas_state_in_two_halves_of_one_buffer_in_either_order_is_taken() -> None:
    """Adadelta's two state tensors replaced by the two halves of one buffer, the second name
    on the first half (the ranges meet at one address but share no byte): taken, and updated
    as torch.optim's Adadelta updates its own state (bit for bit). Mutant killed: the overlap
    test's second comparison ``<`` made ``<=``, which refused two ranges that only touch."""
    model = _model()
    parameters = list(model.parameters())
    twin = _twin(model)
    optimizer = optim.Adadelta(parameters, lr=0.5, rho=0.8)
    reference = torch.optim.Adadelta(twin, lr=0.5, rho=0.8)
    size = sum(p.data.numel() for p in parameters)
    buffer = torch.zeros(2 * size, dtype=F64)
    optimizer.state["square_avg"], optimizer.state["acc_delta"] = buffer[size:], buffer[:size]
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        _set_gradients(parameters, twin, generator)
        optimizer.step()
        reference.step()
    _assert_equal(parameters, twin)
    assert torch.equal(buffer[size:], optimizer.state_dict()["state"]["square_avg"])
    assert buffer[size:].any() and buffer[:size].any()


def _saved_sgd() -> tuple[optim.SGD, dict[str, object]]:
    model = _model()
    optimizer = optim.SGD(model.parameters(), lr=0.25, momentum=0.9)
    generator = torch.Generator().manual_seed(2)
    parameters = list(model.parameters())
    for _ in range(3):
        _set_gradients(parameters, _twin(model), generator)
        optimizer.step()
    return optimizer, optimizer.state_dict()


def test_load_state_dict_copies_the_given_tensors_into_the_optimizers_own() -> None:
    """``load_state_dict`` copies the values into the optimizer's own state tensors (the
    same objects, still the flat views' base), so the dict given stays the caller's: its
    tensors are not updated by later steps, and changing them does not change the optimizer.
    The numbers go on as torch.optim's SGD's (at a rate of 0.25, bit for bit). Mutant killed:
    the given tensor put in the state in place of a copy."""
    optimizer, saved = _saved_sgd()
    model = _model()
    parameters = list(model.parameters())
    for parameter, value in zip(parameters, optimizer.params, strict=True):
        parameter.data.copy_(value.data)
    loaded = optim.SGD(parameters, lr=0.1, momentum=0.5)
    own = loaded.state["momentum_buffer"]
    loaded.load_state_dict(saved)
    state = saved["state"]
    assert isinstance(state, dict)
    given = state["momentum_buffer"]
    kept = given.clone()
    assert loaded.state["momentum_buffer"] is own
    assert torch.equal(own, kept)
    twin = _twin(model)
    reference = torch.optim.SGD(twin, lr=0.25, momentum=0.9)
    for other, buffer in zip(twin, kept.split([p.numel() for p in parameters]), strict=True):
        reference.state[other]["momentum_buffer"] = (buffer / 0.25).view(other.shape).clone()
    generator = torch.Generator().manual_seed(3)
    for _ in range(4):
        _set_gradients(parameters, twin, generator)
        loaded.step()
        reference.step()
    _assert_equal(parameters, twin)
    assert torch.equal(given, kept)
    after = loaded.state["momentum_buffer"].clone()
    given.fill_(7.0)
    assert torch.equal(loaded.state["momentum_buffer"], after)


def _adadelta_after_steps() -> optim.Adadelta:
    model = _model()
    optimizer = optim.Adadelta(model.parameters(), lr=0.5, rho=0.8)
    generator = torch.Generator().manual_seed(4)
    parameters = list(model.parameters())
    for _ in range(2):
        _set_gradients(parameters, _twin(model), generator)
        optimizer.step()
    return optimizer


def _snapshot(optimizer: optim.Optimizer) -> tuple[object, ...]:
    return (
        optimizer.lr,
        optimizer.step_count,
        optimizer.hyperparameters(),
        {name: tensor.clone() for name, tensor in optimizer.state.items()},
    )


def _assert_unchanged(optimizer: optim.Optimizer, before: tuple[object, ...]) -> None:
    lr, step_count, hyperparameters, state = before
    assert (optimizer.lr, optimizer.step_count, optimizer.hyperparameters()) == (
        lr,
        step_count,
        hyperparameters,
    )
    assert isinstance(state, dict)
    assert list(optimizer.state) == list(state)
    for name, tensor in optimizer.state.items():
        assert torch.equal(tensor, state[name]), name
        assert not tensor.requires_grad, name


def test_a_state_saved_for_another_number_of_parameters_is_refused_by_its_shapes() -> None:
    """A state saved over parameters of shapes (2, 3) and (2,) loaded into an optimizer of
    those parameters and one more, or of the first alone (the shapes they share alike), is
    refused naming both lists of shapes, with the optimizer left as it was. Mutant killed: the
    comparison of the number of shapes dropped (zip's own error, "zip() argument 2 is shorter
    than argument 1", raised instead)."""
    saved_from = optim.SGD(
        [nn.Parameter(torch.zeros(2, 3, dtype=F64)), nn.Parameter(torch.zeros(2, dtype=F64))],
        lr=0.1,
        momentum=0.5,
    )
    saved = saved_from.state_dict()
    cases: list[tuple[list[tuple[int, ...]], str]] = [
        ([(2, 3), (2,), (4,)], "[(2, 3), (2,), (4,)]"),
        ([(2, 3)], "[(2, 3)]"),
    ]
    for shapes, shown in cases:
        optimizer = optim.SGD(
            [nn.Parameter(torch.zeros(*shape, dtype=F64)) for shape in shapes],
            lr=0.2,
            momentum=0.9,
        )
        before = _snapshot(optimizer)
        message = (
            "SGD.load_state_dict: the state was saved for parameters of shapes [(2, 3), (2,)], "
            f"but this optimizer's parameters have shapes {shown}"
        )
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            optimizer.load_state_dict(saved)
        _assert_unchanged(optimizer, before)


def test_a_state_loaded_from_float64_keeps_its_infinities_in_float32() -> None:
    """A float64 state holding an infinity (an overflowed running average) loads into a
    float32 optimizer as it is, infinite there too: only a finite value that the cast would
    make infinite is refused. Mutant killed: the refusal asked of infinite values too."""
    optimizer = optim.Adadelta([nn.Parameter(torch.zeros(3))])
    saved = optimizer.state_dict()
    saved["state"]["square_avg"] = torch.tensor([float("inf"), 1.0, 2.0], dtype=F64)
    optimizer.load_state_dict(saved)
    assert torch.equal(optimizer.state["square_avg"], torch.tensor([float("inf"), 1.0, 2.0]))
    assert optimizer.state["square_avg"].dtype == torch.float32


@pytest.mark.parametrize(
    ("eps", "dtype", "expected"),
    [
        (65504.0, torch.float16, None),
        (
            65505.0,
            torch.float16,
            "--eps 65505.0 is beyond the range of --dtype float16 (largest finite value 65504)",
        ),
        (
            1e-8,
            torch.float16,
            "--eps 1e-08 rounds to 0 in --dtype float16, and ADADELTA's denominators with it; "
            "give --eps >= 2.980232416405216e-08",
        ),
        (2.980232416405216e-08, torch.float16, None),
        (1e-8, torch.float32, None),
    ],
)
def test_eps_refusal_names_an_eps_past_the_range_or_rounded_to_0(
    eps: float, dtype: torch.dtype, expected: str | None
) -> None:
    """``eps_refusal`` (for the command line, before any parameter is made) takes the dtype's
    largest finite value itself and the smallest value that does not round to 0, and refuses
    one past either with its message. Mutants killed: ``>`` made ``>=`` for the range, and the
    check of an eps rounded to 0 dropped."""
    words = "--dtype " + str(dtype).removeprefix("torch.")
    assert eps_refusal("--eps", eps, dtype, words) == expected
    if expected is None:  # (as Adadelta itself takes it)
        optim.Adadelta([nn.Parameter(torch.zeros(2, dtype=dtype))], eps=eps)


@pytest.mark.parametrize(
    "settings",
    [
        {"momentum": 0.0, "weight_decay": 0.1},
        {"momentum": 0.9, "weight_decay": 0.1},
        {"momentum": 0.9, "nesterov": True},
        {"momentum": 0.9, "weight_decay": 0.1, "nesterov": True},
    ],
    ids=["weight-decay", "momentum-weight-decay", "nesterov", "nesterov-weight-decay"],
)
@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per-parameter"])
def test_an_sgd_step_reads_the_gradients_and_leaves_them_as_they_were(
    settings: dict[str, float | bool], flat: bool
) -> None:
    """A step reads the gradients and never changes them (the weight decay and Nesterov
    terms are made out of place), flat or parameter by parameter: a gradient kept over two
    steps (no ``zero_grad`` between them, as when accumulating) is the same at both, and the
    parameters are torch.optim's SGD's. Mutants killed: the weight-decay term added to the
    gradient in place, and the Nesterov look-ahead scaled in the gradient itself."""
    model = _model()
    if not flat:
        first = model[0]
        assert isinstance(first, nn.Linear)
        first.weight.data = first.weight.data.clone()  # (no longer a view of one buffer)
    parameters = list(model.parameters())
    twin = _twin(model)
    optimizer = optim.SGD(parameters, lr=0.25, **settings)  # type: ignore[arg-type]
    reference = torch.optim.SGD(twin, lr=0.25, **settings)  # type: ignore[arg-type]
    _set_gradients(parameters, twin, torch.Generator().manual_seed(5))
    kept = [p.grad.clone() for p in parameters]
    for _ in range(3):
        optimizer.step()
        reference.step()
        for parameter, gradient in zip(parameters, kept, strict=True):
            assert torch.equal(parameter.grad, gradient)
    for parameter, other in zip(parameters, twin, strict=True):
        torch.testing.assert_close(parameter.data, other.detach(), rtol=1e-12, atol=1e-14)


def test_a_state_missing_one_of_adadeltas_two_tensors_is_refused_before_anything_changes() -> None:
    """A saved Adadelta state without ``acc_delta`` (one of its two names) is refused by the
    names expected and given, with the rate, step count and both state tensors left as they
    were (the ``square_avg`` given not loaded alone). Mutant killed: the comparison of the
    names reduced to "no name it does not keep"."""
    optimizer = _adadelta_after_steps()
    before = _snapshot(optimizer)
    saved = optimizer.state_dict()
    saved["lr"], saved["step_count"] = 0.125, 9
    saved["state"]["square_avg"] = torch.full_like(saved["state"]["square_avg"], 3.0)
    del saved["state"]["acc_delta"]
    message = (
        "Adadelta.load_state_dict: state must have the entries ['acc_delta', 'square_avg'], "
        "got ['square_avg'] (saved with this Adadelta's own settings, whose state has no other "
        "entries: the state was edited, or put together from another optimizer's)"
    )
    with pytest.raises(KeyError, match=f"^{re.escape(repr(message))}$"):
        optimizer.load_state_dict(saved)
    _assert_unchanged(optimizer, before)
