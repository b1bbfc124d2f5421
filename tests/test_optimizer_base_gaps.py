"""The optimizer and LR-schedule base classes (minidl.optim.optimizer, lr_scheduler): what a
fourth mutation audit found untested, each test naming in its docstring the change to the source
it fails on, and a bug it found (fixed): a hyper-parameter of one's own beyond every float, an
int of 400 digits, escaped as Python's bare OverflowError. Numbers are compared with a
hand-written oracle in float64, refusals by exception type and message, with the optimizer or
schedule left as it was."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any, ClassVar

import pytest
import torch

from minidl import nn, optim
from minidl._validate import shown

F64 = torch.float64
HUGE = 10**400  # (an int beyond the range of a float: float(HUGE) raises OverflowError)


def _snapshot(optimizer: optim.Optimizer) -> dict[str, object]:
    return {
        "lr": optimizer.lr,
        "step_count": optimizer.step_count,
        "hyperparameters": dict(optimizer.hyperparameters()),
        "state": {k: v.clone() for k, v in optimizer.state.items()},
        "values": [p.data.clone() for p in optimizer.params],
        "grads": [p.grad.clone() for p in optimizer.params],
    }


def _assert_unchanged(optimizer: optim.Optimizer, before: dict[str, object]) -> None:
    after = _snapshot(optimizer)
    assert after["lr"] == before["lr"]
    assert after["step_count"] == before["step_count"]
    assert after["hyperparameters"] == before["hyperparameters"]
    assert after["state"].keys() == before["state"].keys()  # type: ignore[union-attr]
    for name, tensor in before["state"].items():  # type: ignore[union-attr]
        assert torch.equal(after["state"][name], tensor)  # type: ignore[index]
    for got, want in zip(after["values"], before["values"], strict=True):  # type: ignore[arg-type]
        assert torch.equal(got, want)
    for got, want in zip(after["grads"], before["grads"], strict=True):  # type: ignore[arg-type]
        assert torch.equal(got, want)


def test_a_stateless_optimizer_follows_a_parameter_resized() -> None:
    """SGD without momentum keeps no state: a parameter whose data and grad are replaced by
    tensors of another size is stepped as it is now (nothing of the old size is kept).
    Mutant killed: the size check of ``_check_layout`` asked of an optimizer without state."""
    parameter = nn.Parameter(torch.ones(3, dtype=F64))
    optimizer = optim.SGD([parameter], lr=0.25)
    parameter.grad.fill_(1.0)
    optimizer.step()
    parameter.data = torch.arange(5, dtype=F64)
    parameter.grad = torch.full((5,), 2.0, dtype=F64)
    optimizer.step()
    assert torch.equal(parameter.data, torch.arange(5, dtype=F64) - 0.5)
    assert optimizer.step_count == 2


# -- schedules --------------------------------------------------------------------------------


def test_a_negative_last_step_set_by_hand_is_refused_by_step() -> None:
    """``last_step = -1`` set by hand is refused by ``step`` in the schedule's words, before
    anything changes (it would step to the rate of step 0). Mutant killed: only a non-int
    ``last_step`` refused."""
    optimizer = optim.SGD([nn.Parameter(torch.ones(3, dtype=F64))], lr=0.1)
    schedule = optim.StepDecay(optimizer, step_size=1, gamma=0.5)
    schedule.step()
    schedule.last_step = -1
    message = "StepDecay.step: last_step (the steps done) must be an integer >= 0, got -1"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        schedule.step()
    assert schedule.last_step == -1
    assert optimizer.lr == 0.05


def test_one_cycle_loads_a_state_at_its_last_step() -> None:
    """OneCycle loads a state at ``last_step == total_steps`` (its step_limit, which has a
    rate), giving that step's rate. Mutant killed: ``last_step >= limit`` refused."""
    optimizer = optim.SGD([nn.Parameter(torch.ones(3, dtype=F64))], lr=0.1)
    schedule = optim.OneCycle(optimizer, max_lr=0.5, total_steps=10)
    saved = schedule.state_dict()
    saved["last_step"] = 10
    schedule.load_state_dict(saved)
    assert schedule.last_step == 10
    assert optimizer.lr == schedule.lr_at(10)


def test_an_interval_refused_by_the_sequence_leaves_the_part_at_its_class_default() -> None:
    """A schedule inside a SequentialSchedule whose ``interval`` (only the class's default,
    never set on it) is set to another than the sequence's is refused, and reads ``"epoch"``
    again afterwards, with nothing of the refused value left on it. Mutant killed: the
    attributes put back without clearing those added by the refused change."""
    optimizer = optim.SGD([nn.Parameter(torch.ones(3, dtype=F64))], lr=0.1)
    part = optim.StepDecay(optimizer, step_size=2, gamma=0.5)
    other = optim.ExponentialDecay(optimizer, gamma=0.9)
    optim.SequentialSchedule(optimizer, [part, other], milestones=[3])
    before = dict(vars(part))
    message = "StepDecay: interval must be 'epoch', that of the SequentialSchedule it is part of"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        part.interval = "batch"
    assert part.interval == "epoch"
    assert vars(part) == before


def test_a_copy_of_a_schedule_in_a_sequence_stands_alone() -> None:
    """``copy.copy`` of a schedule inside a SequentialSchedule is part of no sequence: its
    ``interval`` may be set to ``"batch"``, which the sequence would refuse of its part, and
    the original part is unchanged. Mutant killed: the copy keeping the original's
    ``_container``."""
    import copy

    optimizer = optim.SGD([nn.Parameter(torch.ones(3, dtype=F64))], lr=0.1)
    part = optim.StepDecay(optimizer, step_size=2, gamma=0.5)
    other = optim.ExponentialDecay(optimizer, gamma=0.9)
    optim.SequentialSchedule(optimizer, [part, other], milestones=[3])
    copied = copy.copy(part)
    copied.interval = "batch"
    assert copied.interval == "batch" and part.interval == "epoch"


def test_a_sequence_leaves_the_base_lr_of_a_schedule_taking_its_own_rates() -> None:
    """A SequentialSchedule's ``load_state_dict`` gives the restored ``base_lr`` to its
    schedules but for one that takes its own rates (CyclicLR, whose ``base_lr`` is its lower
    bound). Mutant killed: ``_restart_from`` setting every schedule's ``base_lr``."""
    optimizer = optim.SGD([nn.Parameter(torch.ones(3, dtype=F64))], lr=0.1)
    cyclic = optim.CyclicLR(optimizer, base_lr=0.01, max_lr=0.05, step_size_up=2)
    cyclic.interval = "epoch"
    decay = optim.StepDecay(optimizer, step_size=2)
    sequence = optim.SequentialSchedule(optimizer, [decay, cyclic], milestones=[4])
    sequence.load_state_dict({"base_lr": 0.3, "last_step": 5})
    assert cyclic.base_lr == 0.01 and decay.base_lr == 0.3
    assert optimizer.lr == pytest.approx(0.03, rel=1e-12, abs=0)


def test_a_renamed_state_saved_with_json_betas_is_named_as_edited() -> None:
    """Adam's own state whose tensors were renamed, its ``betas`` a list (as JSON gives it
    back), is refused as a state of this Adam's own settings that was edited (a list and a
    tuple of the same numbers are one setting). Mutant killed: ``_same_settings`` comparing a
    list with a tuple as they are (unequal)."""
    parameter = nn.Parameter(torch.ones(3, dtype=F64))
    optimizer = optim.Adam([parameter], lr=0.1)
    saved = optimizer.state_dict()
    saved["hyperparameters"]["betas"] = list(saved["hyperparameters"]["betas"])
    saved["state"] = {"m": saved["state"]["exp_avg"], "v": saved["state"]["exp_avg_sq"]}
    before = _snapshot(optimizer)
    message = (
        "Adam.load_state_dict: state must have the entries ['exp_avg', 'exp_avg_sq'], got "
        "['m', 'v'] (saved with this Adam's own settings, whose state has no other entries: "
        "the state was edited, or put together from another optimizer's)"
    )
    with pytest.raises(KeyError, match=f"^{re.escape(repr(message))}$"):
        optimizer.load_state_dict(saved)
    _assert_unchanged(optimizer, before)


def test_a_state_with_an_unknown_hyperparameter_is_named_as_no_optimizers() -> None:
    """A state whose hyper-parameters are Adam's and one no optimizer takes is named as
    none of minidl.optim's optimizers' (not as Adam's with other settings). Mutant killed:
    ``_takes`` not bounding the names by the required and optional ones."""
    optimizer = optim.Adam([nn.Parameter(torch.ones(3, dtype=F64))], lr=0.1)
    saved = optimizer.state_dict()
    saved["hyperparameters"]["extra"] = 1
    saved["state"] = {}
    message = (
        "Adam.load_state_dict: state must have the entries ['exp_avg', 'exp_avg_sq'], got [] "
        "(it looks like another optimizer's state: its hyper-parameters ['betas', 'eps', "
        "'extra', 'weight_decay'] are those of none of minidl.optim's optimizers; Adam takes "
        "['betas', 'eps', 'weight_decay'])"
    )
    with pytest.raises(KeyError, match=f"^{re.escape(repr(message))}$"):
        optimizer.load_state_dict(saved)


def test_a_sequence_takes_the_reference_rate_of_the_schedule_built_first() -> None:
    """A SequentialSchedule resets its schedules' ``base_lr`` to that of the one built first
    on the optimizer, whatever their order in the list: here the StepDecay built first (0.1),
    not the ExponentialDecay built after it and given 0.3. Mutant killed: the optimizer's
    count of schedules built not advanced, every schedule numbered 0."""
    optimizer = optim.SGD([nn.Parameter(torch.ones(3, dtype=F64))], lr=0.1)
    first = optim.StepDecay(optimizer, step_size=2)
    second = optim.ExponentialDecay(optimizer, gamma=0.5)
    second.base_lr = 0.3
    sequence = optim.SequentialSchedule(optimizer, [second, first], milestones=[2])
    assert sequence.base_lr == 0.1
    assert second.base_lr == 0.1 and first.base_lr == 0.1
    assert optimizer.lr == 0.1


def test_a_failed_load_after_a_cast_leaves_the_held_state_checked_at_the_next_step() -> None:
    """Adagrad's float64 state holding 1e39, the model cast to float32 since: a
    ``load_state_dict`` refused (a bad rate) after the cast was looked at leaves the held
    state unchecked against float32, and the next step refuses it (cast, it would be
    infinite) before anything changes. Mutant killed: the dtype marked checked by the
    ``load_state_dict`` that did not check the state it held."""
    parameter = nn.Parameter(torch.ones(3, dtype=F64))
    optimizer = optim.Adagrad([parameter], lr=0.1)
    optimizer.state["sum"] = torch.tensor([1e39, 1.0, 1.0], dtype=F64)
    optimizer.step()
    parameter.data = parameter.data.float()
    parameter.grad = torch.ones(3)
    bad = {"lr": -1.0, "step_count": 0, "state": {"sum": torch.zeros(3)}}
    with pytest.raises(ValueError, match="lr"):
        optimizer.load_state_dict(bad)
    values = parameter.data.clone()
    with pytest.raises(ValueError, match=r"state 'sum' holds 1e\+39, beyond the range"):
        optimizer.step()
    assert torch.equal(parameter.data, values) and optimizer.step_count == 1


def _params(dtype: torch.dtype = F64) -> list[nn.Parameter]:
    return [
        nn.Parameter(torch.tensor([1.0, -2.0], dtype=dtype)),
        nn.Parameter(torch.ones(3, dtype=dtype)),
    ]


# -- gaps ---------------------------------------------------------------------------------------


class _Heavy(optim.Optimizer):
    """An optimizer of one's own with an optional hyper-parameter (``momentum``, left out of
    its saved state at its default of 0, as SGD leaves out ``weight_decay``) that decides its
    state tensors, as SGD's ``momentum`` does (a buffer only for ``momentum > 0``); it checks
    nothing together (the base ``_validate_hyperparameters``)."""

    scale = optim.Hyperparameter()
    momentum = optim.Hyperparameter()
    optional_hyperparameters: ClassVar[dict[str, Any]] = {"momentum": 0.0}

    def __init__(
        self, params: Iterable[nn.Parameter], lr: float, scale: float, momentum: float = 0.0
    ):
        self.scale = scale
        self.momentum = momentum
        self.state_names = self._state_names_for({"momentum": momentum})
        super().__init__(params, lr)

    def _state_names_for(self, hyperparameters: Any) -> tuple[str, ...]:
        return ("buffer",) if hyperparameters["momentum"] > 0 else ()

    def _listed_hyperparameters(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"scale": self.scale}
        if self.momentum != 0.0:
            settings["momentum"] = self.momentum
        return settings

    def _update(
        self, value: torch.Tensor, grad: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> None:
        if state:
            state[0].mul_(self.momentum).add_(grad)
            grad = state[0]
        value.sub_(grad, alpha=self.lr * self.scale)


def test_a_state_saved_without_an_optional_hyperparameter_that_needs_other_state_is_refused() -> (
    None
):
    """A state whose hyper-parameters leave out an optional one (momentum: its default, 0, keeps
    no buffer) is refused by an optimizer of one's own built with momentum (which keeps a
    buffer), naming the state tensors each needs, and nothing changes; one saved with momentum
    loads, and the next step is the heavy-ball update (hand-written oracle, float64). Mutant
    killed (o33): ``_check_state_names`` asked ``_state_names_for`` about the saved
    hyper-parameters without the optional ones' defaults, and it raised ``KeyError:
    'momentum'`` instead."""
    assert _Heavy(_params(), lr=0.5, scale=0.25).state_dict()["hyperparameters"] == {"scale": 0.25}
    params = _params()
    optimizer = _Heavy(params, lr=0.5, scale=2.0, momentum=0.5)
    grads = [torch.tensor([0.5, 4.0], dtype=F64), torch.tensor([1.0, -1.0, 2.0], dtype=F64)]
    for parameter, grad in zip(params, grads, strict=True):
        parameter.grad.copy_(grad)
    optimizer.step()
    # (its own state, the buffer in it, with momentum left out: the default, which keeps none)
    saved = {**optimizer.state_dict(), "hyperparameters": {"scale": 0.25}}
    before = _snapshot(optimizer)
    with pytest.raises(ValueError) as caught:
        optimizer.load_state_dict(saved)
    assert str(caught.value) == (
        "_Heavy.load_state_dict: the saved hyper-parameters (scale=0.25) need the state tensors "
        "[], but this optimizer keeps ['buffer'], fixed when it was built; build a new _Heavy "
        "with these settings"
    )
    _assert_unchanged(optimizer, before)
    # (the same state saved with momentum loads, and steps as heavy-ball SGD)
    other = _Heavy(_params(), lr=0.5, scale=0.25, momentum=0.75)
    optimizer.load_state_dict(other.state_dict())
    assert (optimizer.scale, optimizer.momentum) == (0.25, 0.75)
    expected = [p.data - 0.5 * 0.25 * g for p, g in zip(params, grads, strict=True)]
    optimizer.step()  # (the loaded buffer is 0: the step is the gradient's)
    for parameter, want in zip(params, expected, strict=True):
        torch.testing.assert_close(parameter.data, want, rtol=0, atol=1e-15)


class _SGDWithUnsetExtra(optim.SGD):
    """A subclass of SGD that declares a hyper-parameter of its own and leaves it unset (it
    is set later, when wanted)."""

    extra = optim.Hyperparameter()


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"momentum": 1.5}, ValueError, "_SGDWithUnsetExtra: momentum must be in [0, 1), got 1.5"),
        (
            {"nesterov": True},
            ValueError,
            "_SGDWithUnsetExtra: nesterov momentum needs momentum > 0, got momentum 0",
        ),
        (
            {"weight_decay": -1.0},
            ValueError,
            "_SGDWithUnsetExtra: weight_decay must be in [0, inf), got -1.0",
        ),
    ],
)
def test_a_subclass_of_sgd_with_a_hyperparameter_of_its_own_unset_has_sgds_checked(
    settings: dict[str, Any], error: type[Exception], message: str
) -> None:
    """SGD's constructor checks its settings with each other (``_validate_hyperparameters``)
    in a subclass that declares a hyper-parameter of its own not set yet, as in SGD itself,
    and a valid one is stored normalised (a float, as SGD stores it). Mutant killed (o34): the
    check together waited for every hyper-parameter, the subclass's unset one too, and SGD's
    were stored unchecked: ``momentum=1.5`` or ``nesterov`` without momentum was taken."""
    with pytest.raises(error) as caught:
        _SGDWithUnsetExtra(_params(), lr=0.1, **settings)
    assert str(caught.value) == message
    built = _SGDWithUnsetExtra(_params(), lr=0.1, momentum=0)
    assert type(built.momentum) is float
    assert built.hyperparameters() == {"momentum": 0.0}


def _momentum_state(lr: float, momentum: float, grads: list[torch.Tensor]) -> dict[str, Any]:
    """The state_dict of SGD with momentum after one step of ``grads`` from ``_params()``."""
    params = _params()
    optimizer = optim.SGD(params, lr=lr, momentum=momentum)
    for parameter, grad in zip(params, grads, strict=True):
        parameter.grad.copy_(grad)
    optimizer.step()
    return optimizer.state_dict()


_GRADS = [torch.tensor([0.5, 4.0], dtype=F64), torch.tensor([1.0, -1.0, 2.0], dtype=F64)]
_NEXT = [torch.tensor([2.0, -0.5], dtype=F64), torch.tensor([0.25, 1.0, -3.0], dtype=F64)]


def _expected_after_load(params: list[nn.Parameter]) -> list[torch.Tensor]:
    """Heavy-ball SGD (lr 0.5, momentum 0.5) by hand, float64: the buffer loaded (the first
    gradients, after one step from 0), then one step of the next gradients."""
    return [p.data - 0.5 * (0.5 * g + n) for p, g, n in zip(params, _GRADS, _NEXT, strict=True)]


def test_an_optimizer_built_in_inference_mode_loads_a_state_outside_it() -> None:
    """An optimizer built inside ``torch.inference_mode()`` keeps normal state tensors (not
    inference ones), which can be written in place outside it before any step (by hand, as
    here, and by ``load_state_dict``); the next step is the heavy-ball update by hand. Mutant
    killed (o42): the state made without ``torch.inference_mode(False)`` was inference tensors
    until the first step copied them, and a write in place outside inference mode raised
    torch's "Inplace update to inference tensor outside InferenceMode is not allowed"."""
    saved = _momentum_state(0.5, 0.5, _GRADS)
    params = _params()
    with torch.inference_mode():
        optimizer = optim.SGD(params, lr=0.5, momentum=0.5)
    assert not optimizer.state["momentum_buffer"].is_inference()  # (as a write in place tells)
    optimizer.state["momentum_buffer"].copy_(saved["state"]["momentum_buffer"])
    optimizer.state["momentum_buffer"].mul_(2.0).div_(2.0)
    optimizer.load_state_dict(saved)
    assert torch.equal(optimizer.state["momentum_buffer"], saved["state"]["momentum_buffer"])
    expected = _expected_after_load(params)
    for parameter, grad in zip(params, _NEXT, strict=True):
        parameter.grad.copy_(grad)
    optimizer.step()
    for parameter, want in zip(params, expected, strict=True):
        torch.testing.assert_close(parameter.data, want, rtol=0, atol=1e-15)


def test_an_optimizer_unpickled_in_inference_mode_loads_a_state_outside_it() -> None:
    """An optimizer unpickled inside ``torch.inference_mode()`` holds its state as copies made
    outside it, which can be written in place outside it before any step (by hand, as here,
    and by ``load_state_dict``); the next step (inside inference mode, as ``fit`` runs one, the
    parameters being unpickled there too) is the heavy-ball update by hand. Mutant killed
    (o19): ``__setstate__`` kept the inference tensors until the first step copied them, and a
    write in place outside inference mode raised torch's "Inplace update to inference tensor
    outside InferenceMode is not allowed"."""

    saved = _momentum_state(0.5, 0.5, _GRADS)
    pickled = pickle.dumps(optim.SGD(_params(), lr=0.5, momentum=0.5))
    with torch.inference_mode():
        optimizer = pickle.loads(pickled)
    assert not optimizer.state["momentum_buffer"].is_inference()  # (as a write in place tells)
    optimizer.state["momentum_buffer"].copy_(saved["state"]["momentum_buffer"])
    optimizer.state["momentum_buffer"].mul_(2.0).div_(2.0)
    optimizer.load_state_dict(saved)
    assert torch.equal(optimizer.state["momentum_buffer"], saved["state"]["momentum_buffer"])
    params = optimizer.params
    with torch.inference_mode():
        expected = _expected_after_load(params)
        for parameter, grad in zip(params, _NEXT, strict=True):
            parameter.grad.copy_(grad)
        optimizer.step()
    for parameter, want in zip(params, expected, strict=True):
        torch.testing.assert_close(parameter.data, want, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex128], ids=str)
def test_a_state_tensor_not_floating_point_is_refused_by_load_state_dict(
    dtype: torch.dtype,
) -> None:
    """A saved state tensor of an integer, bool or complex dtype is refused in the optimizer's
    words, naming the entry and its dtype, and nothing changes. Mutant killed (o23): without
    the check, an integer or bool one raised torch's "torch.finfo() requires a floating point
    input type" and a complex one was loaded, its imaginary part dropped with a warning."""
    params = _params()
    optimizer = optim.SGD(params, lr=0.5, momentum=0.5)
    for parameter, grad in zip(params, _GRADS, strict=True):
        parameter.grad.copy_(grad)
    optimizer.step()
    state = optimizer.state_dict()
    state["state"]["momentum_buffer"] = torch.zeros(5, dtype=dtype)
    before = _snapshot(optimizer)
    with pytest.raises(TypeError) as caught:
        optimizer.load_state_dict(state)
    assert str(caught.value) == (
        f"SGD.load_state_dict: state 'momentum_buffer' must be floating point, got {dtype}"
    )
    _assert_unchanged(optimizer, before)


# -- numbers beyond every float -------------------------------------------------------------------


class _Own(optim.Optimizer):
    """An optimizer of one's own whose hyper-parameter (a number or a pair) is set before the
    base constructor, without a check of its own."""

    beta = optim.Hyperparameter()

    def __init__(self, params: Iterable[nn.Parameter], lr: float, beta: Any = 0.5) -> None:
        self.beta = beta
        super().__init__(params, lr)

    def _update(
        self, value: torch.Tensor, grad: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> None:
        value.sub_(grad, alpha=self.lr)


def _beyond(where: str, value: Any) -> str:
    return (
        f"{where}: beta={shown(value)} is beyond the range of the parameters' dtype "
        "torch.float32 (largest finite value 3.40282e+38)"
    )


def _load(optimizer: optim.Optimizer, beta: Any) -> None:
    state = optimizer.state_dict()
    optimizer.load_state_dict(
        {**state, "hyperparameters": {**state["hyperparameters"], "beta": beta}}
    )


#: (how the value reaches the optimizer; the start of the message)
_WAYS: dict[str, tuple[Callable[[optim.Optimizer, Any], object], str]] = {
    "assigned": (lambda optimizer, beta: setattr(optimizer, "beta", beta), "_Own"),
    "loaded": (_load, "_Own.load_state_dict"),
}


@pytest.mark.parametrize("way", sorted(_WAYS))
@pytest.mark.parametrize(
    "value",
    [1e300, HUGE, (HUGE, 0.5), [0.5, -HUGE], Fraction(HUGE, 3)],
    ids=["float", "int", "pair", "list", "fraction"],
)
def test_a_huge_int_given_to_a_hyperparameter_of_ones_own_is_refused_naming_it(
    way: str, value: Any
) -> None:
    """A hyper-parameter of one's own beyond every float (``10**400``, a pair or list holding
    it, a fraction) is refused as ``beta=1e300`` is: a ``ValueError`` naming the class, the
    hyper-parameter, the value and the dtype's range, by the constructor, by assignment and by
    ``load_state_dict``, with the optimizer left as it was, as the built-in optimizers refuse
    such an int in their own words. (Fixed: ``float(part)`` raised Python's bare
    ``OverflowError: int too large to convert to float``.)"""
    with pytest.raises(ValueError) as caught:
        _Own(_params(torch.float32), lr=0.1, beta=value)
    assert str(caught.value) == _beyond("_Own", value)
    act, where = _WAYS[way]
    optimizer = _Own(_params(torch.float32), lr=0.1)
    before = _snapshot(optimizer)
    with pytest.raises(ValueError) as caught:
        act(optimizer, value)
    assert str(caught.value) == _beyond(where, value)
    _assert_unchanged(optimizer, before)
