"""A systematic probe of the public API with bad arguments (None, strings, bools, floats for
ints, huge ints, generators, sets, dicts, modules, tensors of other dtypes and shapes, 0-dim,
meta and sparse tensors) found these calls raising Python's or torch's own errors rather than
minidl's: each test pins one fixed case to a message that names the function, what was given
and what was expected, raised before anything changes.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from minidl import nn, optim
from minidl.checkpoint import architecture
from minidl.train import EpochRecord, History


def _model(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(2, 3, dtype=torch.float64), nn.Tanh(), nn.Linear(3, 2, dtype=torch.float64)
    )


def _layer_and_input(kind: str) -> tuple[nn.Module, torch.Tensor]:
    """A ``kind`` layer with parameters (Linear, BatchedLinear, BatchNorm1d) and an input."""
    if kind == "BatchedLinear":
        return nn.BatchedLinear(2, 2, 3), torch.randn(2, 4, 2)
    return (nn.Linear(2, 3) if kind == "Linear" else nn.BatchNorm1d(2)), torch.randn(4, 2)


@pytest.mark.parametrize(
    ("models", "kind"),
    [
        (3, "int"),
        ((model for model in [_model(0), _model(1)]), "generator"),
        ({"a": _model(0)}, "dict"),
        (torch.ones(2), "Tensor"),
        (torch.tensor(1.0), "Tensor"),
    ],
)
def test_stack_models_refuses_models_that_are_no_sequence(models: object, kind: str) -> None:
    # Indexed unchecked: "'int' object is not subscriptable", "KeyError: 0", "Boolean value of
    # Tensor with more than one value is ambiguous", "invalid index of a 0-dim tensor".
    with pytest.raises(
        TypeError,
        match=rf"^stack_models: expected a sequence \(list or tuple\) of Sequential models, "
        rf"got {kind}$",
    ):
        nn.stack_models(models)  # type: ignore[arg-type]


def test_stack_models_refuses_a_set_of_models() -> None:
    # (a set has no order: which model would be which?)
    with pytest.raises(TypeError, match=r"^stack_models: expected a sequence .* got set$"):
        nn.stack_models({_model(0), _model(1)})  # type: ignore[arg-type]


@pytest.mark.parametrize("function", [nn.model_parameters, nn.flat_model_parameters])
@pytest.mark.parametrize("index", ["0", 1.0, None, True, torch.tensor(0)])
def test_model_parameters_refuse_an_index_that_is_no_integer_or_slice(
    function: Callable[..., Any], index: object
) -> None:
    # Refused with IndexError "index '0' is out of range for 2 models": a type, not a range.
    stacked = nn.stack_models([_model(0), _model(1)], layout="model")
    name = function.__name__
    with pytest.raises(
        TypeError,
        match=rf"^{name}: expected an integer index or a slice, got {re.escape(repr(index))}$",
    ):
        function(stacked, index)


@pytest.mark.parametrize("index", ["0", 1.0, None, True])
def test_unstack_model_refuses_an_index_that_is_no_integer(index: object) -> None:
    stacked = nn.stack_models([_model(0), _model(1)])
    with pytest.raises(
        TypeError,
        match=rf"^unstack_model: expected an integer index, got {re.escape(repr(index))}$",
    ):
        nn.unstack_model(stacked, index)  # type: ignore[arg-type]


def test_flat_model_parameters_refuses_what_is_no_stack_in_its_words() -> None:
    # It read stacked.parameters() before the check: "'NoneType' object has no attribute
    # 'parameters'".
    for stacked, kind in ((None, "NoneType"), (torch.zeros(2), "Tensor")):
        with pytest.raises(
            TypeError,
            match=rf"^flat_model_parameters: expected a stack made by stack_models, got {kind}$",
        ):
            nn.flat_model_parameters(stacked, 0)  # type: ignore[arg-type]


def test_model_indices_that_are_integers_still_work() -> None:
    # numpy-like integers (numbers.Integral) and slices as before.
    stacked = nn.stack_models([_model(0), _model(1)], layout="model")
    first = nn.model_parameters(stacked, 1)
    torch.testing.assert_close(first[0].data, _model(1)[0].weight.data, rtol=0, atol=0)
    assert len(nn.model_parameters(stacked, slice(0, 2))) == 4
    assert nn.flat_model_parameters(stacked, slice(1, 2)).numel() > 0
    torch.testing.assert_close(
        nn.unstack_model(stacked, 0)[2].bias.data, _model(0)[2].bias.data, rtol=0, atol=0
    )


@pytest.mark.parametrize("index", ["0", 1.0, None, True])
def test_stacked_activation_of_refuses_an_index_that_is_no_integer(index: object) -> None:
    # 'x' and None failed with "'<=' not supported between instances of 'int' and 'str'";
    # 1.0 and True were taken as model 1.
    stacked = nn.StackedActivation([(nn.Tanh(), 1), (nn.ReLU(), 1)])
    with pytest.raises(
        TypeError,
        match=rf"^StackedActivation.activation_of: expected an integer index, got {re.escape(repr(index))}$",
    ):
        stacked.activation_of(index)  # type: ignore[arg-type]
    assert isinstance(stacked.activation_of(1), nn.ReLU)


@pytest.mark.parametrize(
    "arguments",
    [
        {"sizes": torch.tensor(3)},
        {"sizes": [2, 3, 2], "activations": torch.tensor(1)},
        {"sizes": np.array(3)},
        {"sizes": [2, 3, 2], "activations": np.array("relu")},
    ],
)
def test_mlp_refuses_a_0_dim_tensor_or_array_as_sizes_or_activations(
    arguments: dict[str, Any],
) -> None:
    # A 0-dim tensor or NumPy array is Iterable but one value: "iteration over a 0-d tensor"
    # (and "iteration over a 0-d array", bare, for the array).
    name = next(reversed(arguments))
    kind = type(arguments[name]).__name__
    with pytest.raises(TypeError, match=rf"^mlp: {name} must be .*, got a 0-dim {kind}$"):
        nn.mlp(**arguments)


@pytest.mark.parametrize("one", [torch.tensor(1), np.array(1)], ids=["Tensor", "ndarray"])
@pytest.mark.parametrize("name", ["schedules", "milestones"])
def test_sequential_schedule_refuses_a_0_dim_tensor_as_a_sequence(name: str, one: object) -> None:
    # (a 0-dim NumPy array, as a 0-dim tensor, is Iterable but one value: numpy's bare
    # "iteration over a 0-d array", from the constructor and from the milestones setter)
    optimizer = optim.SGD(_model(0).parameters(), lr=0.1)
    arguments: dict[str, Any] = {"schedules": [optim.StepDecay(optimizer)], "milestones": []}
    arguments[name] = one
    kind = type(one).__name__
    message = rf"^SequentialSchedule: {name} must be a sequence, got a 0-dim {kind}$"
    with pytest.raises(TypeError, match=message):
        optim.SequentialSchedule(optimizer, **arguments)
    assert optimizer.lr == 0.1
    schedules = [optim.StepDecay(optimizer), optim.ExponentialDecay(optimizer, 0.9)]
    schedule = optim.SequentialSchedule(optimizer, schedules, [3])
    schedule.step()
    before = (schedule.state_dict(), optimizer.lr)
    with pytest.raises(TypeError, match=message.replace(name, "milestones")):
        schedule.milestones = one  # type: ignore[assignment]
    assert (schedule.state_dict(), optimizer.lr) == before and schedule.milestones == [3]


@pytest.mark.parametrize("record", [None, {"train_loss": 1.0}, (0, 1.0, 0.1, 50.0)])
def test_history_append_refuses_what_is_no_epoch_record_adding_nothing(record: object) -> None:
    # A record missing lr (a namespace with the other fields) had train_loss and
    # validation_error appended before "'...' object has no attribute 'lr'".
    history = History()
    history.append(EpochRecord(0, 0.5, 0.1, 40.0))
    before = copy.deepcopy(history)
    with pytest.raises(
        TypeError, match=rf"^History.append: expected an EpochRecord, got {type(record).__name__}$"
    ):
        history.append(record)  # type: ignore[arg-type]
    assert history == before


def test_history_append_refuses_a_record_like_object_before_adding_anything() -> None:
    history = History()
    with pytest.raises(TypeError, match=r"^History.append: expected an EpochRecord"):
        history.append(SimpleNamespace(train_loss=0.5, validation_error=40.0))  # type: ignore[arg-type]
    assert history == History()


@pytest.mark.parametrize("model", [None, "model", torch.zeros(2)])
def test_architecture_refuses_what_is_no_module(model: object) -> None:
    # "'NoneType' object has no attribute 'state_dict'"
    with pytest.raises(
        TypeError,
        match=rf"^architecture: model must be a minidl Module, got {type(model).__name__}$",
    ):
        architecture(model)  # type: ignore[arg-type]


def test_a_parameter_refuses_sparse_data_or_grad() -> None:
    # A sparse parameter was taken; an Adam or RMSprop step then failed in the tensor
    # library's words ("Could not run 'aten::lerp_.Scalar' with arguments from the 'SparseCPU'
    # backend") with the parameters before it already updated.
    with pytest.raises(
        TypeError,
        match=r"^Parameter 'w': data is a sparse_coo tensor; expected a dense tensor "
        r"\(pass data.to_dense\(\)\)$",
    ):
        nn.Parameter(torch.randn(3, 2).to_sparse(), name="w")
    parameter = nn.Parameter(torch.randn(3, 2), name="w")
    data, grad = parameter.data, parameter.grad
    for name in ("data", "grad"):
        with pytest.raises(TypeError, match=rf"^Parameter 'w': {name} is a sparse_coo tensor"):
            setattr(parameter, name, torch.randn(3, 2).to_sparse())
    assert parameter.data is data and parameter.grad is grad


def test_a_device_number_past_int64_is_refused_as_no_device() -> None:
    # torch.device raised its own "Overflow when unpacking long long" (a ValueError, which the
    # checks did not catch).
    with pytest.raises(ValueError, match=r"^Linear: 1180591620717411303424 is not a device \("):
        nn.Linear(2, 3, device=2**70)
    model = _model(0)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(
        ValueError, match=r"^Sequential\.to: 1180591620717411303424 is not a device \("
    ):
        model.to(2**70)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_sparse_input_is_refused_by_a_layer_before_anything_is_cached() -> None:
    # It was taken: the products ran, and the backward failed in the tensor library's words
    # ("addmm_sparse_dense: ...").
    layer = nn.Linear(2, 3, dtype=torch.float64)
    sparse = torch.randn(4, 2, dtype=torch.float64).to_sparse()
    with pytest.raises(
        TypeError,
        match=re.escape(
            "Linear: expected a dense input, got a sparse_coo tensor (pass input.to_dense())"
        ),
    ):
        layer(sparse)
    assert layer._input is None
    assert layer(sparse.to_dense()).shape == (4, 3)


def test_a_sparse_buffer_is_refused_and_nothing_is_registered() -> None:
    module = nn.Module()
    with pytest.raises(
        TypeError,
        match=re.escape(
            "Module.register_buffer: expected a dense tensor for 'b', got a sparse_coo tensor "
            "(pass tensor.to_dense())"
        ),
    ):
        module.register_buffer("b", torch.eye(2).to_sparse())
    assert list(module.buffers()) == [] and "b" not in module.__dict__


@pytest.mark.parametrize("method", ["named_parameters", "named_buffers", "named_modules"])
@pytest.mark.parametrize("prefix", [1, None, torch.tensor(1.0)])
def test_a_prefix_that_is_no_str_is_refused(method: str, prefix: object) -> None:
    # Python's "unsupported operand type(s) for +=", or torch's "Boolean value of Tensor".
    with pytest.raises(
        TypeError,
        match=rf"^Sequential\.{method}: prefix must be a str, got {type(prefix).__name__}$",
    ):
        list(getattr(_model(0), method)(prefix=prefix))


def _sparse_after_dense(call: Callable[[torch.Tensor], Any], dense: torch.Tensor) -> str:
    """The error of ``call`` on a sparse copy of ``dense`` once ``dense`` itself has run (the
    checks a tensor of a known shape skips)."""
    for _ in range(3):
        call(dense)
    with pytest.raises(TypeError) as refused:
        call(dense.to_sparse())
    return str(refused.value)


@pytest.mark.parametrize("kind", ["planned chain", "chain run child by child", "Tanh", "loss"])
def test_a_sparse_input_of_a_shape_seen_before_is_refused_too(kind: str) -> None:
    # A sparse tensor of the last dense input's shape passed the quick checks: a planned chain
    # or a Linear ran its products, and the backward failed in the tensor library's words
    # ("addmm_sparse_dense: ..."); Tanh gave a sparse output.
    x = torch.randn(4, 2, dtype=torch.float64)
    dense_words = "expected a dense input, got a sparse_coo tensor (pass input.to_dense())"
    if kind == "loss":
        criterion = nn.CrossEntropyLoss()
        target = torch.tensor([0, 1, 1, 0])
        message = _sparse_after_dense(lambda p: criterion(p, target), x)
        assert message == f"CrossEntropyLoss: {dense_words}".replace("input", "prediction")
        return
    if kind == "Tanh":
        assert _sparse_after_dense(nn.Tanh(), x) == f"Tanh: {dense_words}"
        return
    model = _model(0)
    if kind == "chain run child by child":
        model[1].forward = model[1].forward  # type: ignore[method-assign]

    planned = []

    def step(inputs: torch.Tensor) -> None:
        output = model(inputs)
        planned.append(model._planned is not None)
        model.backward(torch.ones_like(output))

    message = _sparse_after_dense(step, x)
    assert message.startswith(f"Linear: {dense_words}")
    assert planned[-1] == (kind == "planned chain")  # (the last dense call's forward)


@pytest.mark.parametrize("kind", ["Linear", "BatchedLinear", "BatchNorm1d"])
@pytest.mark.parametrize("value", ["tensor", "number", "no weight"])
def test_a_parameter_attribute_set_to_no_parameter_is_refused_at_the_next_forward(
    kind: str, value: str
) -> None:
    # A tensor was taken by the forward (the registered Parameter, which the optimizers and
    # state_dict keep, was no longer used); a number or None raised "'int' object has no
    # attribute 'data'". (A bias removed is no bias, as in PyTorch: tests/test_recent_shapes.)
    torch.manual_seed(0)
    layer, x = _layer_and_input(kind)
    layer(x)
    name = "weight"
    given = {"tensor": layer.weight.data.clone(), "number": 3, "no weight": None}[value]
    setattr(layer, name, given)
    if kind == "BatchNorm1d" and given is None:
        # (a weight may be None, but not while one is still registered, which parameters()
        # and state_dict would keep: removed with register_parameter, it computes without)
        with pytest.raises(ValueError, match=r"^BatchNorm1d: weight is None, but a weight is"):
            layer(x)
        layer.register_parameter("weight", None)
        assert torch.equal(layer(x), layer._normalized)  # (no weight: the bias, zeros, only)
        return
    with pytest.raises(TypeError) as refused:
        layer(x)
    assert str(refused.value).startswith(
        f"{kind}: {name} must be a minidl Parameter, got {type(given).__name__} (an attribute "
        "set by hand is not registered"
    )
    # In place, as docs/pytorch.md advises: ``weight.data = ...`` takes it out of a model's
    # flat buffer.
    assert f"set its values in place with {name}.data.copy_(...)" in str(refused.value)
    assert refused.value.__suppress_context__
    layer.register_parameter(name, nn.Parameter(layer._parameters[name].data.clone()))
    layer(x)  # registered: taken


@pytest.mark.parametrize("kind", ["Linear", "BatchedLinear", "BatchNorm1d"])
@pytest.mark.parametrize("name", ["weight", "bias"])
def test_a_parameter_set_as_a_plain_attribute_is_refused_at_the_next_forward(
    kind: str, name: str
) -> None:
    # The layer computed with it while parameters(), the optimizers and state_dict kept the
    # registered one: an optimizer trained a tensor the forward no longer read, and a
    # checkpoint saved it.
    torch.manual_seed(0)
    layer, x = _layer_and_input(kind)
    layer(x)
    registered = layer._parameters[name]
    setattr(layer, name, nn.Parameter(registered.data.clone()))
    buffers = {key: value.clone() for key, value in layer.state_dict().items()}
    with pytest.raises(ValueError) as refused:
        layer(x)
    assert str(refused.value) == (
        f"{kind}: {name} is a Parameter that is not registered (set by hand as an attribute: "
        "the layer would compute with it while parameters(), the optimizers and state_dict "
        f"keep the registered one); set its values in place with {name}.data.copy_(...), or "
        f"register it with register_parameter({name!r}, ...)"
    )
    state = layer.state_dict()
    assert all(torch.equal(state[key], value) for key, value in buffers.items())
    layer.register_parameter(name, getattr(layer, name))
    assert list(layer.parameters()).count(registered) == 0
    layer(x)  # registered: taken


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda n: nn.Linear(n, 3), "Linear: in_features"),
        (lambda n: nn.Linear(2, n), "Linear: out_features"),
        (lambda n: nn.BatchedLinear(n, 2, 3), "BatchedLinear: models"),
        (lambda n: nn.BatchedLinear(2, 2, n), "BatchedLinear: out_features"),
        (nn.BatchNorm1d, "BatchNorm1d: num_features"),
    ],
)
def test_a_size_past_int64_is_refused_naming_the_largest(
    build: Callable[[int], nn.Module], name: str
) -> None:
    # torch's "Overflow when unpacking long long", with its C++ frames, leaked.
    with pytest.raises(
        ValueError,
        match=re.escape(f"{name} must be at most 2**63 - 1 (the largest tensor size), got {2**63}"),
    ):
        build(2**63)


def test_a_batched_layer_too_large_to_hold_fails_at_once() -> None:
    # It built its 2**46 Linear layers in a Python list first (hours, then out of memory).
    # (1.5 PB of weights: more than a 64-bit process can map, whatever the overcommit policy.)
    with pytest.raises(
        ValueError,
        match=r"^BatchedLinear: cannot hold the parameters of 70368744177664 models of 3 x 2 "
        r"weights \(",
    ):
        nn.BatchedLinear(2**46, 2, 3)


@pytest.mark.parametrize("bias", [True, False])
def test_a_batched_layer_draws_what_its_models_built_one_by_one_draw(bias: bool) -> None:
    torch.manual_seed(5)
    batched = nn.BatchedLinear(4, 3, 2, bias, dtype=torch.float64)
    torch.manual_seed(5)
    layers = [nn.Linear(3, 2, bias, dtype=torch.float64) for _ in range(4)]
    assert torch.equal(batched.weight.data, torch.stack([layer.weight.data for layer in layers]))
    if bias:
        assert batched.bias is not None
        assert torch.equal(batched.bias.data, torch.stack([layer.bias.data for layer in layers]))  # type: ignore[union-attr]
    else:
        assert batched.bias is None


def test_make_disk_data_refuses_sets_past_int64_or_memory() -> None:
    from minidl.data import make_disk_data

    # torch's overflow error (with its C++ frames) or its allocator's error leaked.
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"make_disk_data: n_test must be at most 2**59 - 1, got {2**63}: the set's points"
        ),
    ):
        make_disk_data(n_test=2**63)
    with pytest.raises(
        ValueError, match=r"^make_disk_data: cannot hold 1000 \+ 70368744177664 \+ 1000 samples \("
    ):
        make_disk_data(n_validation=2**46)


#: torch's CPU allocator's error, as it is raised.
_ALLOCATOR_ERROR = (
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
    "you tried to allocate 16000 bytes. Error code 12 (Cannot allocate memory)"
)


@pytest.mark.parametrize("where", ["_normalized", "disk_labels"])
def test_make_disk_data_names_memory_wanting_past_the_points(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The points may fit where their normalised copies or labels do not: an allocation there
    that fails is the refusal of the first (it left torch's error, with its C++ source place),
    and the allocator's words come without the ``[enforce fail at ...]`` prefix. Another error
    there comes out as it was raised."""
    import minidl.data
    from minidl.data import make_disk_data

    def refused(*args: object, **kwargs: object) -> None:
        raise RuntimeError(_ALLOCATOR_ERROR)

    monkeypatch.setattr(minidl.data, where, refused)
    with pytest.raises(ValueError) as info:
        make_disk_data(n_train=10)
    assert str(info.value) == (
        "make_disk_data: cannot hold 10 + 1000 + 1000 samples (DefaultCPUAllocator: can't "
        "allocate memory: you tried to allocate 16000 bytes. Error code 12 (Cannot allocate "
        "memory))"
    )
    assert info.value.__cause__ is None
    error = RuntimeError("Expected all tensors to be on the same device")

    def failed(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(minidl.data, where, failed)
    with pytest.raises(RuntimeError) as raised:
        make_disk_data(n_train=10)
    assert raised.value is error


def test_out_of_memory_tells_an_allocation_refused_from_other_errors() -> None:
    """The reason an allocation was refused, in one line without torch's source place, for the
    CPU allocator's two wordings, a GPU's OutOfMemoryError and MemoryError; None otherwise."""
    from minidl._memory import out_of_memory

    assert (
        out_of_memory(RuntimeError(_ALLOCATOR_ERROR + "\nframe 0"))
        == _ALLOCATOR_ERROR.split("err == 0. ")[1]
    )
    enough = "[enforce fail at alloc_cpu.cpp:83] data. DefaultCPUAllocator: not enough memory: x"
    assert out_of_memory(RuntimeError(enough)) == "DefaultCPUAllocator: not enough memory: x"
    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried")) == (
        "CUDA out of memory. Tried"
    )
    assert out_of_memory(MemoryError()) == "MemoryError"
    assert out_of_memory(MemoryError("big")) == "MemoryError big"
    assert out_of_memory(RuntimeError("shape mismatch")) is None
    assert out_of_memory(ValueError("can't allocate memory")) is None


@pytest.mark.parametrize("kind", ["Linear", "BatchedLinear"])
@pytest.mark.parametrize("name", ["weight", "bias"])
@pytest.mark.parametrize("inside", [False, True])
def test_a_tensor_set_by_hand_between_forward_and_backward_is_refused_with_no_gradient_changed(
    kind: str, name: str, inside: bool
) -> None:
    # BatchedLinear's backward took a tensor set as its bias after the forward: the weight
    # gradient was accumulated, then "'NoneType' object has no attribute 'add_'" (the tensor's
    # grad); a Sequential's check before its children's backward let it through. A weight set
    # so raised "'NoneType' object has no attribute 'baddbmm_'".
    torch.manual_seed(0)
    layer, x = _layer_and_input(kind)
    model = nn.Sequential(layer, nn.Tanh()) if inside else layer
    output = model(x)
    grads = [parameter.grad.clone() for parameter in model.parameters()]
    setattr(layer, name, getattr(layer, name).data.clone())
    with pytest.raises(TypeError) as refused:
        model.backward(torch.ones_like(output))
    assert str(refused.value).startswith(
        f"{kind}: {name} must be a minidl Parameter, got Tensor (an attribute set by hand is "
        "not registered"
    )
    for parameter, grad in zip(model.parameters(), grads, strict=True):
        assert torch.equal(parameter.grad, grad)


@pytest.mark.parametrize("kind", ["Linear", "BatchedLinear", "BatchNorm1d"])
@pytest.mark.parametrize("value", ["number", "no weight"])
@pytest.mark.parametrize("inside", [False, True])
def test_a_number_set_as_weight_between_forward_and_backward_is_refused_by_name(
    kind: str, value: str, inside: bool
) -> None:
    # Refused at the next forward by name, but a backward after the forward raised "'int'
    # object has no attribute 'data'" (alone, and from a Sequential's check of its children).
    torch.manual_seed(0)
    layer, x = _layer_and_input(kind)
    model = nn.Sequential(layer, nn.Tanh()) if inside else layer
    output = model(x)
    given = {"number": 3, "no weight": None}[value]
    grads = [parameter.grad.clone() for parameter in model.parameters()]
    layer.weight = given  # type: ignore[assignment]
    if kind == "BatchNorm1d" and given is None:
        # (no weight is allowed, at the next forward: this backward would ignore the weight
        # its forward multiplied by, and accumulate the bias gradient of another function)
        with pytest.raises(RuntimeError) as refused:
            model.backward(torch.ones_like(output))
        assert str(refused.value).startswith(
            "BatchNorm1d: weight was set to None after the last forward, which had one; its "
            "backward would differentiate another function: run forward again before backward"
        )
    else:
        with pytest.raises(TypeError) as refused:
            model.backward(torch.ones_like(output))
        assert str(refused.value).startswith(
            f"{kind}: weight must be a minidl Parameter, got {type(given).__name__} (an "
            "attribute set by hand is not registered"
        )
    for parameter, grad in zip(model.parameters(), grads, strict=True):
        assert torch.equal(parameter.grad, grad)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize(
    "kind",
    [
        "Dropout",
        "chain starting with a Dropout",
        "StackedActivation",
        "Residual of a batch norm",
        "Residual of a Dropout",
    ],
)
@pytest.mark.parametrize("layout", ["sparse_coo", "sparse_csr"])
def test_a_sparse_input_to_a_dropout_or_a_stacked_activation_is_refused_by_name(
    kind: str, layout: str
) -> None:
    # The tensor library's words ("Could not run 'aten::bernoulli_.float' with arguments from
    # the 'SparseCPU' backend", "... 'aten::as_strided' ..."), where the other layers name the
    # layout; a Residual's trial of its block ("Sparse CSR tensors do not have strides").
    torch.manual_seed(0)
    module: nn.Module = {
        "Dropout": nn.Dropout(0.5),
        "chain starting with a Dropout": nn.Sequential(nn.Dropout(0.5), nn.Linear(3, 2)),
        "StackedActivation": nn.StackedActivation([(nn.Tanh(), 1), (nn.ReLU(), 1)]),
        "Residual of a batch norm": nn.Residual(nn.BatchNorm1d(3)),
        "Residual of a Dropout": nn.Residual(nn.Dropout(0.5)),
    }[kind]
    dense = torch.randn(2, 4, 3) if kind == "StackedActivation" else torch.randn(4, 3)
    module(dense)
    sparse = dense.to_sparse() if layout == "sparse_coo" else dense.to_sparse_csr()
    # (a Residual whose trial ran for the dense input's signature: its block names the layout)
    names = {"StackedActivation": "StackedActivation", "Residual of a batch norm": "BatchNorm1d"}
    name = names.get(kind, "Dropout")
    with pytest.raises(TypeError) as refused:
        module(sparse)
    assert str(refused.value) == (
        f"{name}: expected a dense input, got a {layout} tensor (pass input.to_dense())"
    )


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("layout", ["sparse_coo", "sparse_csr"])
def test_a_residual_refuses_a_sparse_input_by_name_where_its_trial_would_run(layout: str) -> None:
    """A Residual's trial of a block holding a batch norm or a dropout failed on a sparse
    input in the tensor library's words (input[:1]: "Sparse CSR tensors do not have
    strides"): refused by name before it; where no trial runs (no such part in training
    mode) the block takes the input as it takes it alone (an Identity, any layout)."""
    dense = torch.randn(4, 3)
    sparse = dense.to_sparse() if layout == "sparse_coo" else dense.to_sparse_csr()
    for block in (nn.BatchNorm1d(3), nn.Dropout(0.5)):
        with pytest.raises(TypeError) as refused:
            nn.Residual(block)(sparse)
        assert str(refused.value) == (
            f"Residual: expected a dense input, got a {layout} tensor (pass input.to_dense())"
        )
    if layout == "sparse_coo":
        assert torch.equal(nn.Residual(nn.Identity())(sparse).to_dense(), 2 * dense)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("mode", ["evaluation", "p=0"])
def test_a_dropout_that_passes_its_input_on_refuses_a_sparse_one_too(mode: str) -> None:
    """In evaluation mode, or with p=0, a sparse input was handed on as it was (to a layer
    that refused its gradient at the backward), where training refused it by name; the
    forward before it stays the one the backward reads."""
    dropout = nn.Dropout(0.5) if mode == "p=0" else nn.Dropout(0.5).eval()
    if mode == "p=0":
        dropout.p = 0.0
    dense = torch.randn(4, 3)
    dropout(dense)
    for sparse in (dense.to_sparse(), dense.to_sparse_csr()):
        with pytest.raises(TypeError, match=r"^Dropout: expected a dense input, got a sparse"):
            dropout(sparse)
    assert torch.equal(dropout.backward(torch.ones(4, 3)), torch.ones(4, 3))


SPARSE_GRADIENT_CASES: dict[str, Callable[[], nn.Module]] = {
    "Linear": lambda: nn.Linear(2, 3),
    "Tanh": nn.Tanh,
    "ReLU": nn.ReLU,
    "Dropout": lambda: nn.Dropout(0.5),
    "BatchNorm1d": lambda: nn.BatchNorm1d(2),
    "Residual": lambda: nn.Residual(nn.Sequential(nn.Linear(2, 2), nn.Tanh())),
    "planned chain": lambda: nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)),
    "chain with a Dropout": lambda: nn.Sequential(
        nn.Linear(2, 3), nn.Dropout(0.3), nn.Linear(3, 2)
    ),
    "BatchedLinear": lambda: nn.BatchedLinear(2, 2, 3),
    "Softmax": nn.Softmax,
    "Identity": nn.Identity,
}


@pytest.mark.parametrize("kind", sorted(SPARSE_GRADIENT_CASES))
def test_a_sparse_gradient_is_refused_before_any_gradient_changes(kind: str) -> None:
    # A Linear accumulated its weight gradient, then the bias's addmv_ failed in the tensor
    # library's words (in a chain too); Tanh failed a PyTorch internal assert; ReLU and
    # Dropout returned a sparse gradient.
    torch.manual_seed(0)
    module = SPARSE_GRADIENT_CASES[kind]()
    x = torch.randn(2, 4, 2) if kind == "BatchedLinear" else torch.randn(4, 2)
    for _ in range(3):
        module.backward(torch.ones_like(module(x)))
    output = module(x)
    before = [p.grad.clone() for p in module.parameters()]
    owner = {"planned chain": "Linear", "chain with a Dropout": "Linear"}.get(kind, kind)
    with pytest.raises(
        TypeError,
        match=re.escape(
            f"{owner}: expected a dense gradient, got a sparse_coo tensor (pass gradient.to_dense())"
        ),
    ):
        module.backward(torch.ones_like(output).to_sparse())
    assert all(torch.equal(a, p.grad) for a, p in zip(before, module.parameters(), strict=True))


@pytest.mark.parametrize(
    ("make", "target"),
    [
        (nn.CrossEntropyLoss, torch.tensor([0, 1, 2, 0])),
        (nn.CrossEntropyLoss, torch.full((4, 3), 1 / 3)),
        (nn.MSELoss, torch.ones(4, 3)),
        (nn.MSELoss, torch.tensor([0, 1, 2, 0])),
        (nn.L1Loss, torch.ones(4, 3)),
        (nn.HuberLoss, torch.ones(4, 3)),
        (nn.BCEWithLogitsLoss, torch.full((4, 3), 0.5)),
        (nn.NLLLoss, torch.tensor([0, 1, 2, 0])),
    ],
)
def test_a_sparse_target_is_refused_and_the_last_forward_stays(
    make: Callable[[], nn.Loss], target: torch.Tensor
) -> None:
    # MSE, L1 and Huber computed with it; the others failed in the tensor library's words
    # ("Could not run 'aten::aminmax' ... 'SparseCPU' backend").
    criterion = make()
    prediction = torch.randn(4, 3)
    loss = criterion(prediction, target)  # (the same shape again: the quick checks' path)
    gradient = criterion.backward()
    name = type(criterion).__name__
    with pytest.raises(
        TypeError,
        match=re.escape(
            f"{name}: expected a dense target, got a sparse_coo tensor (pass target.to_dense())"
        ),
    ):
        criterion(prediction, target.to_sparse())
    assert torch.equal(criterion.backward(), gradient) and torch.isfinite(loss)


def test_load_state_dict_refuses_a_key_that_is_no_name() -> None:
    """One such key was an unexpected key, two failed in sorting them ("'int' object has no
    attribute 'split'"), and strict=False skipped them; nothing is loaded."""
    layer = nn.Linear(2, 3)
    entries = {name: torch.zeros_like(value) for name, value in layer.state_dict().items()}
    before = [value.clone() for value in layer.state_dict().values()]
    for extra in ({0: torch.zeros(1)}, {0: torch.zeros(1), 1: torch.zeros(1)}):
        for strict in (True, False):
            with pytest.raises(
                TypeError, match=r"^Linear\.load_state_dict: keys must be names \(str\), got 0 "
            ):
                layer.load_state_dict({**entries, **extra}, strict=strict)  # type: ignore[dict-item]
    assert all(map(torch.equal, layer.state_dict().values(), before))


def test_small_messages_name_what_was_given() -> None:
    """NumPy's bool is named ``bool`` too ("must be a bool, got bool np.True_"); a module's
    class given for a module was "got type"; a loss's reduction of a str subclass kept the
    subclass, whose own ``__eq__`` decided (one equal to everything took 'bogus', and its
    refusal called it 'none')."""
    parameter = nn.Parameter(torch.ones(2))
    with pytest.raises(TypeError, match=r"must be a bool, got numpy\.bool np\.True_$"):
        nn.clip_grad_norm_([parameter], 1.0, error_if_nonfinite=np.True_)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got the class Linear; pass an instance, Linear\(\)$"):
        nn.Residual(nn.Linear)  # type: ignore[arg-type]

    class Lax(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    with pytest.raises(
        ValueError, match=r"^L1Loss: reduction must be 'mean' or 'sum', got 'bogus'$"
    ):
        nn.L1Loss(reduction=Lax("bogus"))  # type: ignore[arg-type]
    loss = nn.L1Loss(reduction=np.str_("sum"))  # type: ignore[arg-type]
    assert type(loss.reduction) is str and repr(loss) == "L1Loss(reduction='sum')"


def test_init_refuses_a_float8_or_sparse_tensor_by_name() -> None:
    """Both failed in torch's NotImplementedError ("isinf" not implemented for
    'Float8_e4m3fn', inside minidl's own check; "Could not run 'aten::uniform_' ... SparseCPU")."""
    with pytest.raises(
        TypeError, match=r"^init\.normal_: .* got a tensor of torch\.float8_e4m3fn$"
    ):
        nn.init.normal_(torch.zeros(3, 3, dtype=torch.float8_e4m3fn))
    with pytest.raises(TypeError, match=r"^init\.xavier_uniform_: .* got a sparse_coo tensor$"):
        nn.init.xavier_uniform_(torch.zeros(3, 3).to_sparse())


def test_a_cumulative_batch_norm_trains_on_the_meta_device() -> None:
    """With momentum=None its count was read as a number (Tensor.item() on a meta tensor)."""
    norm = nn.BatchNorm1d(3, momentum=None, device="meta")
    output = norm(torch.empty(4, 3, device="meta"))
    norm.backward(torch.empty(4, 3, device="meta"))
    assert output.is_meta and output.shape == (4, 3)


def test_the_names_of_a_tied_parameter_are_compared_as_they_load_and_named_as_given() -> None:
    """Two other names of a tied weight holding different values were refused naming the
    first name, which was not given; equal values of two dtypes were refused as different
    (each loads cast to the parameter's dtype); a number under another name was called a
    different value."""
    first, second, third = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)
    second.register_parameter("weight", first.weight)
    third.register_parameter("weight", first.weight)
    model = nn.Sequential(first, nn.Tanh(), second, nn.Tanh(), third)
    biases = {k: v for k, v in model.state_dict().items() if k.endswith("bias")}
    with pytest.raises(ValueError, match=r"entries '2\.weight' and '4\.weight' name one tensor"):
        model.load_state_dict(
            {**biases, "2.weight": torch.zeros(2, 2), "4.weight": torch.ones(2, 2)}
        )
    with pytest.raises(
        TypeError,
        match=r"^Sequential\.load_state_dict: entry '2\.weight' must be a tensor, got int$",
    ):
        model.load_state_dict({**biases, "0.weight": torch.zeros(2, 2), "2.weight": 5})  # type: ignore[dict-item]
    halves = torch.full((2, 2), 0.5)
    model.load_state_dict({**biases, "0.weight": halves, "2.weight": halves.double()})
    assert torch.equal(first.weight.data, halves)


@pytest.mark.parametrize(
    ("index", "got"),
    [
        (torch.tensor(1.0), r"a tensor of torch\.float32 and shape \(\)"),
        (torch.tensor([0, 1]), r"a tensor of torch\.int64 and shape \(2,\)"),
        (1.0, "float"),
        (True, "bool"),
        (torch.tensor(True), r"a tensor of torch\.bool and shape \(\)"),
    ],
)
def test_a_sequential_names_an_index_that_is_no_integer(index: object, got: str) -> None:
    """A float tensor (which has ``__index__``) failed in torch's "only integer tensors of a
    single element can be converted to an index"."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    with pytest.raises(
        TypeError, match=rf"^Sequential: indices must be integers or slices, got {got}$"
    ):
        model[index]  # type: ignore[index]
    assert model[torch.tensor(1)] is model[1] is model[np.int64(-1)]


def test_make_disk_data_takes_a_numpy_integer_seed_as_its_sizes() -> None:
    """np.int64(3) was taken for a size and refused for the seed ("seed must be an int");
    it gives the set of the seed 3. A bool is still refused."""
    import numpy as np

    from minidl.data import make_disk_data

    assert torch.equal(make_disk_data(seed=np.int64(3)).train.x, make_disk_data(seed=3).train.x)
    with pytest.raises(TypeError, match=r"^make_disk_data: seed must be an int, got True"):
        make_disk_data(seed=True)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_disk_labels_refuses_a_point_that_is_not_finite(value: float) -> None:
    """A NaN point was labelled 0 (outside the disk) without a word."""
    from minidl.data import disk_labels

    points = torch.tensor([[0.0, 0.0], [value, 1.0]])
    with pytest.raises(ValueError) as info:
        disk_labels(points)
    assert str(info.value) == (
        f"disk_labels: points must be finite, got [{value}, 1.0] at row 1 (a point that is NaN "
        "or infinite is inside no disk, nor outside it)"
    )
