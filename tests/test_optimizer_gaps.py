"""Optimizer base, SGD and Adadelta behaviour that a third mutation audit of
``minidl.optim.optimizer``, ``minidl.optim.sgd`` and ``minidl.optim.adadelta`` (finishing the
second, whose tests are in ``test_optimizer_mutants.py``) found no test for: each test here
fails on a small change to the source (named in its docstring) that the rest of the suite let
through. Trajectories are compared with ``torch.optim`` in float64, refusals by exception type
and message, with the optimizer left as it was."""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from minidl import nn, optim
from minidl.optim.adadelta import eps_refusal
from minidl.optim.optimizer import MOST_STEPS
from minidl.train import fit
from tests.test_optimizer_mutants import _assert_unchanged, _set_gradients, _snapshot

F64 = torch.float64


def _parameters() -> list[nn.Parameter]:
    torch.manual_seed(11)
    model = nn.Sequential(nn.Linear(3, 4, dtype=F64), nn.Tanh(), nn.Linear(4, 2, dtype=F64))
    return list(model.parameters())


def _twin(parameters: list[nn.Parameter]) -> list[torch.Tensor]:
    return [p.data.clone().requires_grad_() for p in parameters]


def test_a_state_tensor_sharing_only_the_last_gradient_entry_is_refused() -> None:
    """A momentum buffer given in place of the optimizer's own that shares one element with
    the parameters' gradients, the last of the last gradient, is refused as sharing their
    memory, before anything changes: the step would write the buffer over that gradient entry.
    Mutant killed: the memory span of a tensor ending one element short of its last (a buffer
    sharing only the last entry taken)."""
    parameters = [
        nn.Parameter(torch.zeros(2, 3, dtype=F64)),
        nn.Parameter(torch.zeros(4, dtype=F64)),
    ]
    memory = torch.zeros(10 + 9, dtype=F64)
    parameters[0].grad = memory[0:6].view(2, 3)
    parameters[1].grad = memory[6:10]
    optimizer = optim.SGD(parameters, lr=0.5, momentum=0.5)
    memory[:10] = torch.arange(1.0, 11.0, dtype=F64)
    own = optimizer.state["momentum_buffer"]
    optimizer.state["momentum_buffer"] = memory[9:19]
    message = (
        "SGD.step: state 'momentum_buffer' shares its memory with the parameters' gradients, "
        "which the update reads and zero_grad zeroes: give it a tensor of its own (clone() one)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        optimizer.step()
    assert torch.equal(memory[:10], torch.arange(1.0, 11.0, dtype=F64))
    assert all(not p.data.any() for p in parameters)
    assert optimizer.step_count == 0
    assert optimizer.state["momentum_buffer"] is not own
    assert torch.equal(own, torch.zeros(10, dtype=F64))


def test_a_single_tensor_given_as_params_is_refused_naming_it() -> None:
    """A plain tensor given as ``params`` (iterable, its rows tensors) is refused as one
    tensor, not as a list whose first element is no Parameter. Mutant killed: the refusal of
    a single value asked of a Parameter only (a Tensor then refused as ``params[0]``)."""
    message = (
        "SGD: params must be an iterable of Parameters (e.g. model.parameters()), got a "
        "single Tensor"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        optim.SGD(torch.zeros(3, 2), lr=0.1)


@pytest.mark.parametrize("momentum", [np.float32(0.5), np.float64(0.25)], ids=["np32", "np64"])
def test_sgds_momentum_is_kept_as_a_python_float(momentum: float) -> None:
    """A numpy momentum is kept as the Python ``float`` checked, by the constructor and by
    assignment: what ``momentum`` reads back and ``state_dict`` saves (a JSON checkpoint takes
    no numpy number), and the steps are torch.optim's SGD's with that momentum. Mutant killed:
    the checks returning the momentum given, not the one checked."""
    parameters = _parameters()
    optimizer = optim.SGD(parameters, lr=0.5, momentum=momentum)
    assert type(optimizer.momentum) is float and optimizer.momentum == float(momentum)
    assert type(optimizer.state_dict()["hyperparameters"]["momentum"]) is float
    optimizer.momentum = momentum
    assert type(optimizer.momentum) is float
    twin = _twin(parameters)
    reference = torch.optim.SGD(twin, lr=0.5, momentum=float(momentum))
    generator = torch.Generator().manual_seed(14)
    for _ in range(4):
        _set_gradients(parameters, twin, generator)
        optimizer.step()
        reference.step()
    for index, (parameter, other) in enumerate(zip(parameters, twin, strict=True)):
        assert torch.equal(parameter.data, other.detach()), f"parameter {index}"


def test_a_gradient_given_a_state_tensors_memory_is_blamed_when_another_was_replaced() -> None:
    """A parameter whose gradient was given the memory of one of Adadelta's own state tensors
    (``p.grad = optimizer.state["acc_delta"][:n]``) while the other state tensor was replaced
    by a valid tensor of its own is refused naming the parameter, the thing changed, not the
    state tensor the optimizer made, before anything changes. Mutant killed: the optimizer's
    own state tensors checked as if replaced by hand (blamed as sharing the gradients'
    memory)."""
    parameters = _parameters()
    optimizer = optim.Adadelta(parameters, lr=0.5, rho=0.8)
    generator = torch.Generator().manual_seed(15)
    _set_gradients(parameters, _twin(parameters), generator)
    optimizer.step()
    optimizer.state["square_avg"] = optimizer.state["square_avg"].clone()
    before = _snapshot(optimizer)
    values = [p.data.clone() for p in parameters]
    first = parameters[0]
    first.grad = optimizer.state["acc_delta"][: first.data.numel()].view(first.data.shape)
    message = (
        "Adadelta: params[0].grad shares its memory with state 'acc_delta', which the update "
        "writes: give the parameter a tensor of its own"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        optimizer.step()
    _assert_unchanged(optimizer, before)
    for parameter, value in zip(parameters, values, strict=True):
        assert torch.equal(parameter.data, value)


class _SGDWithWindows(optim.SGD):
    """SGD with a setting of its own whose value is a list (held as given, unchecked)."""

    windows: optim.Hyperparameter[list[int]] = optim.Hyperparameter()

    def __init__(self, params: list[nn.Parameter], windows: list[int]) -> None:
        self.windows = windows
        super().__init__(params, lr=0.1, momentum=0.5)


def test_a_list_setting_of_ones_own_is_restored_as_a_list() -> None:
    """``load_state_dict`` makes a saved list a tuple again only where the setting holds a
    tuple (a pair from a JSON checkpoint): a setting of one's own that holds a list gets its
    list back, equal to the one saved. Mutant killed: every saved list made a tuple."""
    saved_from = _SGDWithWindows(_parameters(), windows=[3, 5])
    saved = saved_from.state_dict()
    assert saved["hyperparameters"] == {"momentum": 0.5, "windows": [3, 5]}
    optimizer = _SGDWithWindows(_parameters(), windows=[1])
    optimizer.load_state_dict(saved)
    assert type(optimizer.windows) is list
    assert optimizer.windows == [3, 5]
    assert optimizer.hyperparameters() == {"momentum": 0.5, "windows": [3, 5]}


def _loose_parameters() -> list[nn.Parameter]:
    """Two float64 parameters of their own memory (no flat buffer)."""
    torch.manual_seed(21)
    return [
        nn.Parameter(torch.randn(2, 3, dtype=F64)),
        nn.Parameter(torch.randn(2, dtype=F64)),
    ]


def test_a_state_dict_missing_its_rate_is_refused_without_the_pytorch_hint() -> None:
    """A minidl state dict missing ``lr`` (it holds ``state``, as PyTorch's do too) is refused
    naming the key missing, with no word of PyTorch's ``param_groups``, which it has not: the
    hint is for a dict that has them. Mutant killed: the hint given to a dict holding
    ``state``."""
    optimizer = optim.SGD(_loose_parameters(), lr=0.5, momentum=0.5)
    saved = optimizer.state_dict()
    del saved["lr"]
    before = _snapshot(optimizer)
    message = "SGD.load_state_dict: missing keys ['lr']"
    with pytest.raises(KeyError, match=f"^{re.escape(repr(message))}$"):
        optimizer.load_state_dict(saved)
    _assert_unchanged(optimizer, before)


def _from_bytes(memory: bytearray, dtype: torch.dtype, offset: int, count: int) -> torch.Tensor:
    """``count`` elements of ``dtype`` over ``memory`` from byte ``offset`` (any offset, where
    a view of a tensor's storage takes whole elements only)."""
    with warnings.catch_warnings():  # (torch.frombuffer's over memory it cannot make read-only)
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(memory, dtype=dtype, offset=offset, count=count)


def test_parameters_sharing_an_element_at_a_misaligned_offset_are_refused() -> None:
    """Two float32 Parameters over one buffer of bytes, the second starting 6 bytes in (not a
    whole number of elements from the first) across the first's second element (bytes 8 to
    12, the first strided over bytes 0 to 4 and 8 to 12), are refused as sharing memory: each
    step would write those bytes twice. Mutant killed: the refusal of parameters a fraction of
    an element apart dropped (the overlap then looked for at whole elements, and missed)."""
    memory = bytearray(16)
    strided = _from_bytes(memory, torch.float32, 0, 3)[::2]
    shifted = _from_bytes(memory, torch.float32, 6, 1)
    parameters = [nn.Parameter(strided), nn.Parameter(shifted)]
    message = (
        "SGD: params[0] ((2,), torch.float32) and params[1] ((1,), torch.float32) share "
        "elements of one tensor's memory: each step would update those elements twice; give "
        "Parameters over separate memory (a clone() of one of them)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        optim.SGD(parameters, lr=0.1)


def test_parameters_of_two_dtypes_back_to_back_in_one_buffer_are_refused_for_their_dtypes() -> None:
    """A float32 Parameter over bytes 2 to 6 of a buffer and a float16 one over bytes 0 to 2
    (their memory meets, sharing no byte) are refused for their two dtypes, which one state
    tensor cannot hold, not as sharing memory, which they do not. Mutant killed: memory ranges
    that only meet taken as one cluster (their offsets then found not a whole number of the
    first's elements apart)."""
    memory = bytearray(8)
    wide = _from_bytes(memory, torch.float32, 2, 1)
    narrow = _from_bytes(memory, torch.float16, 0, 1)
    message = (
        "SGD: all parameters must have one dtype and device (the state is one tensor of them), "
        "but params[1] is torch.float16 on cpu and params[0] torch.float32 on cpu; build one "
        "optimizer for each kind, or move the model with .to()"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        optim.SGD([nn.Parameter(wide), nn.Parameter(narrow)], lr=0.1)


@pytest.mark.parametrize(
    ("dtype", "smallest"),
    [(torch.float32, 7.006492321624087e-46), (torch.bfloat16, 4.591844872822778e-41)],
    ids=["float32", "bfloat16"],
)
def test_eps_refusal_names_the_smallest_eps_of_the_dtype_asked(
    dtype: torch.dtype, smallest: float
) -> None:
    """``eps_refusal`` refuses an eps that ``dtype`` rounds to 0 naming the smallest eps that
    dtype takes (float32's and bfloat16's, far below float16's 2.98e-08), which Adadelta then
    takes; below it Adadelta refuses the eps as ``eps_refusal`` does. Mutant killed: the
    smallest value named always float16's."""
    words = "--dtype " + str(dtype).removeprefix("torch.")
    message = (
        f"--eps 1e-50 rounds to 0 in {words}, and ADADELTA's denominators with it; "
        f"give --eps >= {smallest!r}"
    )
    assert eps_refusal("--eps", 1e-50, dtype, words) == message
    assert eps_refusal("--eps", smallest, dtype, words) is None
    parameter = nn.Parameter(torch.ones(2, dtype=dtype))
    optimizer = optim.Adadelta([parameter], eps=smallest)
    assert optimizer.eps == smallest
    with pytest.raises(ValueError, match=f"every eps below {re.escape(repr(smallest))} does"):
        optim.Adadelta([parameter], eps=1e-50)


class _Damped(optim.Optimizer):
    """An optimizer of one's own whose ``eps`` (a denominator term) may be 0:
    ``w -= lr g / (|g| + eps)``."""

    denominator_terms = ("eps",)
    eps: optim.Hyperparameter[float] = optim.Hyperparameter()

    def __init__(self, params: list[nn.Parameter], lr: float, eps: float) -> None:
        self.eps = eps
        super().__init__(params, lr)

    def _update(
        self, value: torch.Tensor, grad: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> None:
        value.sub_(grad / (grad.abs() + self.eps) * self.lr)


def test_a_denominator_term_of_0_is_left_to_the_optimizers_own_check() -> None:
    """A denominator term (``denominator_terms``) of 0, which an optimizer of one's own may
    take (its own check allowing it), is not refused as "rounding to 0": only a positive value
    that the dtype rounds to 0 is (1e-50 in float32). Mutant killed: 0 counted as a value
    rounded to 0."""
    parameter = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float32))
    optimizer = _Damped([parameter], lr=0.5, eps=0.0)
    parameter.grad.copy_(torch.tensor([4.0, -0.5]))
    optimizer.step()
    assert torch.equal(parameter.data, torch.tensor([0.5, -1.5]))
    with pytest.raises(ValueError, match=r"^_Damped: eps=1e-50 rounds to 0 in the parameters'"):
        _Damped([nn.Parameter(torch.ones(2))], lr=0.5, eps=1e-50)


def test_a_load_after_a_parameter_was_resized_names_the_parameter_first() -> None:
    """A state saved by this SGD, loaded after one of its parameters was given data of
    another size, is refused naming that parameter and its sizes then and at the build (the
    change that makes the state unusable, which the load refuses first, as a step would), not
    by the shapes the state was saved for, and nothing changes. Mutant killed: the check of
    the parameters moved since dropped from the start of ``load_state_dict`` (the refusal then
    the state's shapes, found before the parameters)."""
    parameters = _loose_parameters()
    optimizer = optim.SGD(parameters, lr=0.5, momentum=0.5)
    for parameter in parameters:
        parameter.grad.fill_(1.0)
    optimizer.step()
    saved = optimizer.state_dict()
    saved["lr"] = 0.125
    before = _snapshot(optimizer)
    parameters[1].data = torch.zeros(3, dtype=F64)
    message = (
        "SGD: params[1] (Parameter(shape=(3,), dtype=torch.float64)) holds 3 values, 2 when the "
        "optimizer was built (its data was replaced by a tensor of another size, or another "
        "Parameter put in its place); build a new optimizer"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        optimizer.load_state_dict(saved)
    _assert_unchanged(optimizer, before)


class _AliasedSGD(optim.SGD):
    """SGD whose momentum may be read and set as ``mu`` too (one hyper-parameter)."""

    mu = optim.SGD.momentum


def test_an_aliased_setting_is_named_once_where_the_settings_are_listed() -> None:
    """An SGD subclass that gives ``momentum`` a second name (``mu = SGD.momentum``) has one
    setting under two names: the refusal of ``param_groups``, which lists the settings to set
    as attributes, names each of them once, as SGD's own does. Mutant killed: the names of the
    class's hyper-parameters not deduplicated (``momentum`` listed twice)."""
    optimizer = _AliasedSGD(_loose_parameters(), lr=0.5, momentum=0.5)
    message = (
        "_AliasedSGD.param_groups: a minidl optimizer is one group of parameters "
        "(optimizer.params) and has no param_groups: read and set its settings (lr, momentum, "
        "weight_decay, nesterov) as attributes, optimizer.lr = 0.01, checked as the "
        "constructor checks them; build one optimizer for each group"
    )
    with pytest.raises(AttributeError, match=f"^{re.escape(message)}$"):
        optimizer.param_groups  # noqa: B018
    assert optimizer.mu == 0.5


# -- the concrete optimizers (a second pass) -------------------------------------------------


def test_fit_refuses_an_adamw_decay_beyond_float16_at_the_last_countable_step() -> None:
    """At ``step_count`` 2**63 - 1, the last step count an optimizer takes, AdamW's decay
    factor ``1 - lr * weight_decay`` beyond float16's range is refused by fit before training
    (the note says so; the generator is not drawn, the parameters are untouched), as at any
    other step count. Mutant killed: Adam's look-ahead check taking only counts below
    2**63 - 1 (the step then refused it, once fit had drawn a shuffle)."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 2, dtype=torch.float16))
    optimizer = optim.AdamW(model.parameters(), lr=300.0, eps=1e-4, weight_decay=300.0)
    optimizer.step_count = MOST_STEPS
    values = [p.data.clone() for p in model.parameters()]
    generator = torch.Generator().manual_seed(0)
    drawn = generator.get_state()
    x, y = torch.randn(4, 3).half(), torch.randint(2, (4,))
    with pytest.raises(ValueError) as info:
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=2,
            generator=generator)  # fmt: skip
    assert str(info.value) == (
        "AdamW: the decay factor 1 - lr * weight_decay is -89999 (lr=300.0, "
        "weight_decay=300.0), beyond the range of the parameters' dtype torch.float16 "
        "(largest 65504); give a smaller lr or weight_decay"
    )
    assert getattr(info.value, "__notes__", None) == [
        "fit asked the optimizer before training, as its first step would"
    ]
    assert optimizer.step_count == MOST_STEPS
    assert torch.equal(generator.get_state(), drawn)
    assert all(torch.equal(p.data, v) for p, v in zip(model.parameters(), values, strict=True))


RMSPROP_NAMES = "['alpha', 'centered', 'eps', 'momentum', 'weight_decay']"


@pytest.mark.parametrize(
    ("change", "kind", "message"),
    [
        ({"alpha": 1.5}, ValueError, "RMSprop.load_state_dict: alpha must be in [0, 1], got 1.5"),
        (
            {"momentum": "0.5"},
            TypeError,
            "RMSprop.load_state_dict: momentum must be a finite number in [0, 1) (a float or an "
            "int), got str '0.5'",
        ),
        ({"eps": 0.0}, ValueError, "RMSprop.load_state_dict: eps must be in (0, inf), got 0.0"),
        (
            {"centered": None},
            KeyError,
            f"RMSprop.load_state_dict: hyper-parameters must be {RMSPROP_NAMES}, got "
            "['alpha', 'eps', 'momentum', 'weight_decay']",
        ),
        (
            {"nesterov": True},
            KeyError,
            f"RMSprop.load_state_dict: hyper-parameters must be {RMSPROP_NAMES}, got "
            "['alpha', 'centered', 'eps', 'momentum', 'nesterov', 'weight_decay']",
        ),
    ],
    ids=["alpha-1.5", "momentum-str", "eps-0", "centered-missing", "nesterov-extra"],
)
def test_rmsprop_refuses_bad_saved_hyperparameters_in_load_state_dicts_name(
    change: dict[str, Any], kind: type[Exception], message: str
) -> None:
    """A state saved by RMSprop whose hyper-parameters were edited (a value out of range or of
    the wrong type, one missing or one of another optimizer) is refused as the constructor
    refuses the value, in ``load_state_dict``'s name, with the list of names expected, and the
    optimizer is left as it was. Mutant killed: RMSprop's own check of the saved settings
    (centered and momentum) no longer calling the base class's (the value then refused in the
    constructor's name, a missing one as a bare KeyError, an extra one taken)."""
    parameter = nn.Parameter(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    optimizer = optim.RMSprop([parameter], lr=0.01, momentum=0.5)
    parameter.grad.copy_(torch.tensor([0.5, 0.25, -1.0], dtype=torch.float64))
    optimizer.step()
    saved = optimizer.state_dict()
    edited = {key: value for key, value in saved["hyperparameters"].items() if key not in change}
    edited.update({key: value for key, value in change.items() if value is not None})
    before = {key: tensor.clone() for key, tensor in optimizer.state.items()}
    with pytest.raises(kind) as info:
        optimizer.load_state_dict({**saved, "hyperparameters": edited, "lr": 0.5})
    assert info.value.args == (message,)
    assert optimizer.lr == 0.01 and optimizer.step_count == 1
    assert optimizer.hyperparameters() == saved["hyperparameters"]
    assert all(torch.equal(optimizer.state[key], t) for key, t in before.items())


# -- SGD against torch.optim.SGD at the edges of a dtype's range (docs/pytorch.md) --------------


@pytest.mark.parametrize(
    ("dtype", "weight", "gradient", "momentum", "steps", "mine", "theirs"),
    [
        # lr * g subnormal: 0.5 * 5e-324 rounds to 0 on its own, not inside PyTorch's w - lr b
        (torch.float64, 5e-324, 5e-324, 0.5, 1, 5e-324, 0.0),
        (torch.float32, 1e-45, 1e-45, 0.5, 1, 1.401298464324817e-45, 0.0),
        # the sign of a zero: PyTorch's first buffer is g itself, minidl's velocity mu 0 + lr g
        (torch.float64, -0.0, -0.0, 0.5, 1, -0.0, 0.0),
        # PyTorch's buffer b = mu b + g overflows, minidl's velocity v = lr b does not
        (torch.float32, 3e38, 3e38, 0.9, 2, -1.3499998199323037e38, -math.inf),
    ],
)
def test_sgd_differs_from_pytorch_at_a_power_of_two_rate_only_where_its_docs_say(
    dtype: torch.dtype,
    weight: float,
    gradient: float,
    momentum: float,
    steps: int,
    mine: float,
    theirs: float,
) -> None:
    """SGD's docstring and docs/pytorch.md ("The paper's conventions") give PyTorch's bits at
    a power-of-two rate but for subnormal products, the sign of a zero and a PyTorch buffer
    that overflows: each exception as they describe it, both sides computed here (a PyTorch
    that changed its side makes the docs out of date)."""
    parameter = nn.Parameter(torch.tensor([weight], dtype=dtype))
    twin = torch.nn.Parameter(torch.tensor([weight], dtype=dtype))
    optimizer = optim.SGD([parameter], lr=0.5, momentum=momentum)
    reference = torch.optim.SGD([twin], lr=0.5, momentum=momentum, foreach=False)
    for _ in range(steps):
        parameter.grad.fill_(gradient)
        twin.grad = torch.tensor([gradient], dtype=dtype)
        optimizer.step()
        reference.step()
    for value, expected in ((parameter.data, mine), (twin.detach(), theirs)):
        assert value.item() == expected
        assert math.copysign(1.0, value.item()) == math.copysign(1.0, expected)


# -- the Optimizer base class (a fourth pass of mutation testing, 2026-12-07) ---------------------


def _mlp_parameters(dtype: torch.dtype = F64) -> list[nn.Parameter]:
    torch.manual_seed(11)
    model = nn.Sequential(nn.Linear(3, 4, dtype=dtype), nn.Tanh(), nn.Linear(4, 2, dtype=dtype))
    return list(model.parameters())


def test_a_rate_beyond_the_parameters_dtype_is_refused_by_the_constructor() -> None:
    """``SGD(float32 parameters, lr=1e39)`` is refused when built, naming the rate and the
    dtype's largest value (lr passes check_real: it is finite in Python). Mutant killed: the
    constructor's range check given the hyper-parameters without ``lr``."""
    parameters = [nn.Parameter(torch.zeros(3))]
    with pytest.raises(
        ValueError,
        match=r"^SGD: lr=1e\+39 is beyond the range of the parameters' dtype torch\.float32 "
        r"\(largest finite value 3\.40282e\+38\)$",
    ):
        optim.SGD(parameters, lr=1e39, momentum=0.5)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
        lambda p: optim.Adam(p, lr=0.1),
        lambda p: optim.AdamW(p, lr=0.1),
        lambda p: optim.RMSprop(p, lr=0.1, momentum=0.5, centered=True),
        lambda p: optim.Adagrad(p, lr=0.1),
        lambda p: optim.Adadelta(p, lr=1.0),
    ],
    ids=["SGD momentum", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta"],
)
def test_a_model_on_the_meta_device_steps_with_state(make: Any) -> None:
    """Parameters on the meta device (shapes, no memory): torch.optim's SGD with momentum and
    Adam step over them, their state on the meta device. minidl's base class refused them at
    the first step, saying ``params[0].data shares its memory with state 'momentum_buffer'``:
    ``_parameter_memory`` and ``_refuse_parameters_in_state`` take every meta tensor's
    ``data_ptr()`` (0) as an address, so a meta parameter and a meta state tensor always
    "overlap" (``_refuse_shared_data`` skips meta tensors for this very reason: "no memory to
    share"; ``_check_state_fits`` and ``load_state_dict`` skip them too). Expected: a step and
    a zero_grad run, the step counted, the state meta tensors of one entry per scalar."""
    parameters = [
        nn.Parameter(torch.zeros(3, device="meta")),
        nn.Parameter(torch.zeros(2, device="meta")),
    ]
    optimizer = make(parameters)
    optimizer.zero_grad()
    optimizer.step()
    assert optimizer.step_count == 1
    for tensor in optimizer.state.values():
        assert tensor.is_meta and tensor.shape == (5,)
    saved = optimizer.state_dict()
    assert saved["step_count"] == 1


def test_a_list_setting_of_ones_own_beyond_the_dtype_is_refused_and_kept() -> None:
    """A subclass's own ``scales = Hyperparameter()`` (no check) set to the list
    ``[1.0, 1e39]`` is refused as beyond float32's range, as a tuple is, and keeps its value.
    Mutant killed: the range check splitting tuples only (``isinstance(value, tuple)``), which
    took the list whole, as no real number, and let 1e39 through."""

    class Scaled(optim.SGD):
        scales = optim.Hyperparameter()

    optimizer = Scaled([nn.Parameter(torch.zeros(3))], lr=0.1)
    optimizer.scales = [1.0, 2.0]
    with pytest.raises(
        ValueError,
        match=r"^Scaled: scales=\[1\.0, 1e\+39\] is beyond the range of the parameters' dtype "
        r"torch\.float32 \(largest finite value 3\.40282e\+38\)$",
    ):
        optimizer.scales = [1.0, 1e39]
    assert optimizer.scales == [1.0, 2.0]


def test_a_negative_setting_of_ones_own_beyond_the_dtype_is_refused_and_kept() -> None:
    """A subclass's own ``shift = Hyperparameter()`` set to -1e39 (beyond float32's range
    below, as 1e39 is above) is refused, naming it, and keeps its value. Mutant killed: the
    range check comparing ``float(part) <= largest`` without ``abs``, which took any negative
    value."""

    class Shifted(optim.SGD):
        shift = optim.Hyperparameter()

    optimizer = Shifted([nn.Parameter(torch.zeros(3))], lr=0.1)
    optimizer.shift = -2.0
    with pytest.raises(
        ValueError,
        match=r"^Shifted: shift=-1e\+39 is beyond the range of the parameters' dtype "
        r"torch\.float32 \(largest finite value 3\.40282e\+38\)$",
    ):
        optimizer.shift = -1e39
    assert optimizer.shift == -2.0


def test_zero_grad_after_a_replaced_value_names_itself_refusing_a_state_of_other_names() -> None:
    """A parameter's value replaced after a step (a new layout) and the state set to ``{}``:
    ``zero_grad``, which finds the layout again, refuses the state naming ``SGD.zero_grad``
    (not ``SGD.step``), and zeroes nothing. Mutant killed: ``_refresh_layout`` asking
    ``_check_state_held("step")`` whatever method called it."""
    parameters = [nn.Parameter(torch.zeros(3, dtype=F64))]
    optimizer = optim.SGD(parameters, lr=0.1, momentum=0.9)
    optimizer.step()
    parameters[0].data = parameters[0].data.clone()
    parameters[0].grad.fill_(2.0)
    optimizer.state = {}
    with pytest.raises(
        ValueError,
        match=r"^SGD\.zero_grad: state holds \(\), expected \('momentum_buffer',\) \(one flat "
        r"tensor each, as the SGD made them\); replace a tensor with optimizer\.state\[name\] = "
        r"tensor, or build a new optimizer$",
    ):
        optimizer.zero_grad()
    assert torch.equal(parameters[0].grad, torch.full((3,), 2.0, dtype=F64))


def test_zero_grad_names_itself_refusing_a_gradient_given_a_state_tensors_memory() -> None:
    """A gradient replaced after a step by a view of the momentum buffer: ``zero_grad`` refuses
    it naming ``SGD.zero_grad`` and zeroes nothing (it would have zeroed the state). Mutant
    killed: ``_check_layout`` calling ``_refuse_parameters_in_state("")``, whose message named
    no method (``SGD: params[1].grad ...``)."""
    parameters = _mlp_parameters()
    optimizer = optim.SGD(parameters, lr=0.1, momentum=0.9)
    for parameter in parameters:
        parameter.grad.fill_(1.0)
    optimizer.step()
    buffer = optimizer.state["momentum_buffer"]
    before = buffer.clone()
    size = parameters[0].data.numel()
    parameters[1].grad = buffer[size : size + parameters[1].data.numel()]
    with pytest.raises(
        ValueError,
        match=r"^SGD\.zero_grad: params\[1\]\.grad shares its memory with state "
        r"'momentum_buffer', which the update writes: give the parameter a tensor of its own$",
    ):
        optimizer.zero_grad()
    assert torch.equal(optimizer.state["momentum_buffer"], before)
    assert torch.equal(parameters[0].grad, torch.ones_like(parameters[0].grad))


def test_a_step_refuses_the_state_names_in_another_order_before_anything_changes() -> None:
    """Adadelta's state given back as a dict of its two names in the other order (the same
    tensors): ``step`` refuses it naming both orders, and changes no parameter, state tensor
    or step count (the update reads the tensors in the order of ``state_names``: it would have
    taken ``acc_delta`` for ``square_avg``). Mutant killed: ``step`` comparing the names as
    sets, which took the dict and swapped the two accumulators."""
    parameters = _mlp_parameters()
    optimizer = optim.Adadelta(parameters, lr=0.5, rho=0.8)
    for parameter in parameters:
        parameter.grad.fill_(0.5)
    optimizer.step()
    values = [p.data.clone() for p in parameters]
    square_avg, acc_delta = optimizer.state["square_avg"], optimizer.state["acc_delta"]
    held = (square_avg.clone(), acc_delta.clone())
    optimizer.state = {"acc_delta": acc_delta, "square_avg": square_avg}
    with pytest.raises(
        ValueError,
        match=r"^Adadelta\.step: state holds \('acc_delta', 'square_avg'\), expected "
        r"\('square_avg', 'acc_delta'\) \(one flat tensor each, as the Adadelta made them\)",
    ):
        optimizer.step()
    assert optimizer.step_count == 1
    assert all(torch.equal(p.data, v) for p, v in zip(parameters, values, strict=True))
    assert torch.equal(square_avg, held[0]) and torch.equal(acc_delta, held[1])


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_nested_state_tensor_is_refused_by_the_step_before_anything_changes() -> None:
    """A nested tensor (strided layout, no flat shape) put in place of the momentum buffer is
    refused by ``step`` as the wrong kind of tensor, a ValueError naming the state and what is
    expected, and the parameter and step count stay as they were. Mutant killed: the check
    asking only ``tensor.layout is not torch.strided`` (a nested tensor's layout is strided),
    which went on to read the nested tensor's shape and failed in torch's words."""
    parameters = [nn.Parameter(torch.ones(3, dtype=F64))]
    optimizer = optim.SGD(parameters, lr=0.1, momentum=0.9)
    parameters[0].grad.fill_(1.0)
    optimizer.state["momentum_buffer"] = torch.nested.nested_tensor([torch.zeros(3, dtype=F64)])
    with pytest.raises(
        ValueError,
        match=r"^SGD\.step: state 'momentum_buffer' is a torch\.strided tensor, expected a "
        r"contiguous torch\.float64 tensor of shape \(3,\) on cpu \(one entry per parameter "
        r"scalar, of the parameters' dtype and device\)$",
    ):
        optimizer.step()
    assert optimizer.step_count == 0
    assert torch.equal(parameters[0].data, torch.ones(3, dtype=F64))


# (the rest of the fourth pass: saved states, settings of one's own, parameter memory)


#: SGD's refusal of a saved momentum of 1e300 for float32 parameters.
_STATE_BEYOND_FLOAT32 = (
    r"^SGD\.load_state_dict: state 'momentum_buffer' holds 1e\+300, beyond the range of the "
    r"parameters' dtype torch\.float32 \(largest finite value 3\.40282e\+38\): cast to it, the "
    r"state would be infinite, and the updates made from it infinite or 0; load it into an "
    r"optimizer of parameters of its dtype$"
)


def _fill_grads(parameters: list[nn.Parameter], seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for parameter in parameters:
        grad = torch.randn(parameter.data.shape, generator=generator, dtype=F64)
        parameter.grad.copy_(grad.to(parameter.data.dtype))


def _stepped_sgd(**settings: Any) -> tuple[list[nn.Parameter], optim.SGD]:
    parameters = _mlp_parameters()
    optimizer = optim.SGD(parameters, lr=0.1, **settings)
    _fill_grads(parameters, 1)
    optimizer.step()
    return parameters, optimizer


def test_a_state_saved_with_an_empty_shapes_list_is_refused_and_nothing_changes() -> None:
    """A state dict whose ``shapes`` is ``[]`` (present, but no shape at all) is refused as
    saved over other parameters, like any other wrong list: ``[]`` is not absent (only a
    state without the key, from an older version, skips the check). Mutant killed: the check
    asked ``if shapes`` instead of ``if shapes is not None``, and loaded it."""
    _, optimizer = _stepped_sgd(momentum=0.9)
    saved = optimizer.state_dict()
    saved.update(lr=0.5, step_count=7, shapes=[])
    saved["state"]["momentum_buffer"] = torch.full((26,), 3.0, dtype=F64)
    before = _snapshot(optimizer)
    with pytest.raises(
        ValueError,
        match=r"^SGD\.load_state_dict: the state was saved for parameters of shapes \[\], but "
        r"this optimizer's parameters have shapes \[\(4, 3\), \(4,\), \(2, 4\), \(2,\)\]$",
    ):
        optimizer.load_state_dict(saved)
    _assert_unchanged(optimizer, before)


class _Base(optim.Optimizer):
    """An optimizer of one's own with a setting ``first``; ``w -= lr * first * second * g``."""

    first: optim.Hyperparameter[float] = optim.Hyperparameter()

    def __init__(self, params, lr: float, first: float, second: float = 1.0) -> None:
        self.first = first
        self.second = second
        super().__init__(params, lr)

    def _update(self, value, grad, state) -> None:
        value.sub_(grad, alpha=self.lr * self.first * self.second)


class _Derived(_Base):
    """Adds ``second`` below ``_Base``'s ``first``."""

    second: optim.Hyperparameter[float] = optim.Hyperparameter()


def test_settings_of_ones_own_are_listed_in_the_order_declared_base_class_first() -> None:
    """The settings of a subclass of a subclass of Optimizer are listed base class first, as
    declared: ``hyperparameters()``, ``repr``, the ``param_groups`` message and
    ``state_dict``. Mutant killed: the names gathered over the MRO unreversed (derived class
    first)."""
    optimizer = _Derived(_mlp_parameters(), lr=0.1, first=2.0, second=3.0)
    assert list(optimizer.hyperparameters()) == ["first", "second"]
    assert list(optimizer.state_dict()["hyperparameters"]) == ["first", "second"]
    assert repr(optimizer) == "_Derived(lr=0.1, first=2.0, second=3.0)"
    with pytest.raises(AttributeError, match=re.escape("its settings (lr, first, second)")):
        optimizer.param_groups  # noqa: B018


def test_a_state_refused_as_infinite_in_the_dtype_names_its_largest_finite_value() -> None:
    """A float64 state of ``[inf, 1e300, 1, ...]`` loaded into an optimizer of float32
    parameters is refused for 1e300 (finite, but infinite in float32): the message names
    1e300, the largest finite value, not the infinity it also holds; nothing changes. Mutant
    killed: the largest taken over every value (``inf``)."""
    parameters = _mlp_parameters(torch.float32)
    optimizer = optim.SGD(parameters, lr=0.1, momentum=0.9)
    _fill_grads(parameters, 1)
    optimizer.step()
    saved = optimizer.state_dict()
    state = torch.ones(26, dtype=F64)
    state[0], state[5] = float("inf"), 1e300
    saved["state"]["momentum_buffer"] = state
    saved.update(lr=0.5, step_count=9)
    before = _snapshot(optimizer)
    with pytest.raises(
        ValueError,
        match=_STATE_BEYOND_FLOAT32,
    ):
        optimizer.load_state_dict(saved)
    _assert_unchanged(optimizer, before)


def test_an_edited_state_with_a_setting_this_sgd_lacks_is_named_as_other_settings() -> None:
    """SGD(momentum=0.9, no weight decay) given a state whose settings are momentum 0.9 and
    weight decay 0.1 and whose buffer was renamed: the message calls them other settings (it
    has one this SGD lacks), not this SGD's own. Mutant killed: ``_same_settings`` comparing
    only this optimizer's keys, so the saved ``weight_decay`` went unseen."""
    _, optimizer = _stepped_sgd(momentum=0.9)
    saved = optimizer.state_dict()
    saved["hyperparameters"]["weight_decay"] = 0.1
    saved["state"] = {"momentum": saved["state"]["momentum_buffer"]}
    before = _snapshot(optimizer)
    with pytest.raises(KeyError) as raised:
        optimizer.load_state_dict(saved)
    assert raised.value.args[0] == (
        "SGD.load_state_dict: state must have the entries ['momentum_buffer'], got "
        "['momentum'] (a state saved with other settings, momentum=0.9, weight_decay=0.1; "
        "build this SGD with them)"
    )
    _assert_unchanged(optimizer, before)


def test_a_part_after_one_inside_a_long_strided_parameter_is_still_checked_against_it() -> None:
    """Parameters over one buffer ``t`` of 10: ``t[0:10:2]`` (elements 0, 2, 4, 6, 8),
    ``t[1:2]`` (element 1, shared with none) and ``t[4:5]`` (element 4, shared with the
    first): refused, naming params[0] and params[2]; the first's range still reaches past the
    second's end. Mutant killed: the cluster's end taken as the last range's end
    (``cluster_end = end``), which closed the cluster at ``t[1:2]`` and let the sharing
    through."""
    buffer = torch.zeros(10, dtype=F64)
    parameters = [
        nn.Parameter(buffer[0:10:2]),
        nn.Parameter(buffer[1:2]),
        nn.Parameter(buffer[4:5]),
    ]
    with pytest.raises(
        ValueError,
        match=r"^SGD: params\[0\] \(\(5,\), torch\.float64\) and params\[2\] \(\(1,\), "
        r"torch\.float64\) share elements of one tensor's memory: each step would update those "
        r"elements twice; give Parameters over separate memory \(a clone\(\) of one of them\)$",
    ):
        optim.SGD(parameters, lr=0.1)


def test_a_state_beyond_the_dtype_the_model_was_cast_to_is_refused_by_load() -> None:
    """SGD stepped over float64 parameters, the model then cast to float32: a float64 state
    holding 1e300 is refused by load_state_dict against float32, the parameters' dtype now
    (the state held is still float64 until it moves with them), and the optimizer keeps its
    state as it was, float64. Mutant killed: the check made against the held state's dtype
    (float64), which took the state and cast it to infinities in float32."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4, dtype=F64), nn.Tanh(), nn.Linear(4, 2, dtype=F64))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _fill_grads(list(model.parameters()), 1)
    optimizer.step()
    saved = optimizer.state_dict()
    state = torch.ones(26, dtype=F64)
    state[3] = 1e300
    saved["state"]["momentum_buffer"] = state
    saved.update(lr=0.5, step_count=9)
    model.float()
    before = _snapshot(optimizer)
    with pytest.raises(
        ValueError,
        match=_STATE_BEYOND_FLOAT32,
    ):
        optimizer.load_state_dict(saved)
    _assert_unchanged(optimizer, before)
    assert optimizer.state["momentum_buffer"].dtype == F64


class _Legacy(optim.Optimizer):
    """An optimizer of one's own from before Hyperparameter existed: ``decay`` is a plain
    attribute, which it lists itself; ``w -= lr * decay * g``."""

    def __init__(self, params, lr: float, decay: float) -> None:
        self.decay = decay
        super().__init__(params, lr)

    def _listed_hyperparameters(self) -> dict:
        return {"decay": self.decay}

    def _update(self, value, grad, state) -> None:
        value.add_(grad, alpha=-self.lr * self.decay)


def test_a_plain_attribute_setting_is_restored_by_load_state_dict_where_it_lives() -> None:
    """A plain-attribute setting (``self.decay``, no Hyperparameter) saved in a state dict is
    restored into that attribute by load_state_dict, and the next step uses it:
    ``w - (lr * decay) g``. Mutant killed: every restored setting written to ``_`` + its
    name, which left ``decay`` at its old value."""
    parameters = _mlp_parameters()
    optimizer = _Legacy(parameters, lr=0.1, decay=2.0)
    saved = optimizer.state_dict()
    assert saved["hyperparameters"] == {"decay": 2.0}
    saved["hyperparameters"]["decay"] = 0.5
    optimizer.load_state_dict(saved)
    assert optimizer.decay == 0.5 and optimizer.hyperparameters() == {"decay": 0.5}
    _fill_grads(parameters, 2)
    expected = [p.data - (0.1 * 0.5) * p.grad for p in parameters]
    optimizer.step()
    for value, parameter in zip(expected, parameters, strict=True):
        torch.testing.assert_close(parameter.data, value, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({}, ["square_avg"]),
        ({"centered": True}, ["square_avg", "grad_avg"]),
        ({"momentum": 0.5}, ["square_avg", "momentum_buffer"]),
        ({"momentum": 0.5, "centered": True}, ["square_avg", "momentum_buffer", "grad_avg"]),
    ],
    ids=["plain", "centered", "momentum", "both"],
)
def test_rmsprop_keeps_a_momentum_buffer_only_with_momentum(
    settings: dict[str, Any], names: list[str]
) -> None:
    """RMSprop keeps ``momentum_buffer`` only when ``momentum > 0`` and ``grad_avg`` only when
    ``centered`` (its docstring's State), in ``state`` and in ``state_dict``, each a zero
    float64 tensor of the parameters' 26 entries, and still so after a step (a mutant of
    rmsprop.py kept a momentum buffer, never used, at momentum 0)."""
    optimizer = optim.RMSprop(_parameters(), lr=0.01, **settings)
    assert list(optimizer.state) == names
    assert list(optimizer.state_dict()["state"]) == names
    for tensor in optimizer.state.values():
        assert tensor.dtype == F64 and tensor.shape == (26,) and not tensor.any()
    for p in optimizer.params:
        p.grad.fill_(0.5)
    optimizer.step()
    assert list(optimizer.state_dict()["state"]) == names
