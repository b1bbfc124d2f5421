"""Stacking: behaviours of stack_models, unstack_model, StackedLoss and StackedActivation that
mutation testing found unchecked (each test fails with the mutant it names applied; the tests
after ``_pair`` come from a later round, over the mutants the first had not run)."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
import torch
from torch import Tensor

import minidl
from minidl import nn
from minidl.optim import SGD
from minidl.rounds import fit_rounds

DTYPE = torch.float64


def _model(seed: int, *layers: nn.Module) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(*layers)


class _RecordingMSE(nn.Loss):
    """A stacked loss of one's own whose forward adds an attribute the loss did not have."""

    stacks = True

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        self.difference = prediction - target.unsqueeze(-1).to(prediction.dtype)
        return self.difference.square().mean(dim=(1, 2))

    def _gradient(self) -> Tensor:
        return 2 * self.difference / self.difference[0].numel()


class _Exp(nn.Activation):
    """An activation of one's own (hooks without ``out``: a StackedActivation calls its
    forward, which detect_anomaly checks)."""

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        output = torch.exp(input)
        return output, output

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        return grad_output * cache


def test_stack_models_refuses_a_string_as_no_sequence_of_models() -> None:
    """A str is a Sequence (of characters): it is refused as no sequence of models, by its type,
    rather than by its first character's."""
    with pytest.raises(
        TypeError,
        match=r"^stack_models: expected a sequence \(list or tuple\) of Sequential models, "
        r"got str$",
    ):
        nn.stack_models("ab")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got bytes$"):
        nn.stack_models(b"ab")  # type: ignore[arg-type]


def test_stack_models_refuses_a_model_with_parameters_on_two_devices() -> None:
    """A model's parameters of one dtype on two devices (the meta device here, no GPU needed)
    are refused by the model's own check, naming both parameters and devices."""
    linear = nn.Linear(2, 2)
    model = _model(0, linear)
    assert linear.bias is not None
    linear.bias.data = torch.zeros(2, device="meta")
    with pytest.raises(
        ValueError,
        match=r"^stack_models: models\[1\]'s parameter '0\.bias' is torch\.float32 on meta, its "
        r"'0\.weight' torch\.float32 on cpu: a model's parameters must share one dtype and "
        r"device",
    ):
        nn.stack_models([_model(1, nn.Linear(2, 2)), model])


def test_stacked_loss_refused_forward_removes_what_a_run_added() -> None:
    """A run's loss that set a new attribute in a forward that a later run then refused gets
    back exactly its state before that forward: the attribute it added is gone too."""
    recording = _RecordingMSE()
    criterion = nn.StackedLoss([(recording, 1), (nn.CrossEntropyLoss(), 1)])
    before = dict(vars(recording))
    prediction = torch.randn(2, 3, 2, dtype=DTYPE)
    with pytest.raises(ValueError, match="CrossEntropyLoss"):
        criterion(prediction, torch.tensor([[0, 1, 0], [1, 7, 0]]))
    assert vars(recording).keys() == before.keys()
    assert not hasattr(recording, "difference")


def test_stacked_loss_refusal_of_a_run_chains_the_runs_own_error() -> None:
    """The refusal that names the run and the whole shapes is raised from the run's own error
    (its ``__cause__``, shown in the traceback), which gives the slice's shapes."""
    criterion = nn.StackedLoss([(nn.MSELoss(), 1), (nn.CrossEntropyLoss(), 1)])
    with pytest.raises(
        ValueError, match=r"^StackedLoss: run 1 \(CrossEntropyLoss, models 1:2\)"
    ) as info:
        criterion(torch.randn(2, 3, 2, dtype=DTYPE), torch.tensor([[0, 1, 0], [1, 7, 0]]))
    cause = info.value.__cause__
    assert type(cause) is ValueError
    assert str(cause).startswith("CrossEntropyLoss:")
    assert str(info.value).endswith(f": {cause}")


@pytest.mark.parametrize("index", [-1, -3, 3])
def test_activation_of_refuses_an_index_out_of_range_negative_ones_too(index: int) -> None:
    """A negative index is no model index (it is not counted from the end): an IndexError
    naming the index and the number of models, not the first run's activation."""
    layer = nn.StackedActivation([(nn.Tanh(), 2), (nn.ReLU(), 1)])
    with pytest.raises(
        IndexError, match=rf"^StackedActivation: index {index} is out of range for 3 models$"
    ):
        layer.activation_of(index)


def test_model_parameters_checks_the_index_against_every_stacked_layer() -> None:
    """In a network of BatchedLinear layers of different numbers of models, an index past a
    later layer's models is refused in model_parameters' words, naming that layer's number
    of models (not by torch's indexing of its weight)."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.BatchedLinear(3, 2, 4), nn.Tanh(), nn.BatchedLinear(2, 4, 1))
    assert len(nn.model_parameters(network, 1)) == 4
    with pytest.raises(
        IndexError, match=r"^model_parameters: index 2 is out of range for 2 models$"
    ):
        nn.model_parameters(network, 2)


def test_model_parameters_of_layers_without_bias_are_their_weights_alone() -> None:
    """Linear layers without a bias stack into BatchedLinear layers without one: a model's
    parameters are then its weights alone, as views of the stack's values and gradients."""
    models = [
        _model(seed, nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 2)) for seed in (0, 1)
    ]
    stacked = nn.stack_models(models)
    parameters = nn.model_parameters(stacked, 1)
    assert [parameter.name for parameter in parameters] == ["[0].weight", "[2].weight", "[2].bias"]
    linear, batched = models[1][0], stacked[0]
    assert isinstance(linear, nn.Linear) and isinstance(batched, nn.BatchedLinear)
    assert batched.bias is None
    assert torch.equal(parameters[0].data, linear.weight.data)
    assert parameters[0].data.data_ptr() == batched.weight.data[1].data_ptr()
    assert parameters[0].grad is not None and batched.weight.grad is not None
    assert parameters[0].grad.data_ptr() == batched.weight.grad[1].data_ptr()


def test_an_anomaly_in_the_first_runs_output_refuses_the_backward() -> None:
    """detect_anomaly refuses the first run's output after the run cached its input: the
    backward that follows is refused until a forward succeeds (it differentiated the refused
    input's cache, an infinite gradient), and works again after one."""
    layer = nn.StackedActivation([(_Exp(), 1), (nn.ReLU(), 1)])
    torch.manual_seed(0)
    good = torch.randn(2, 3, 2, dtype=DTYPE)
    layer(good)
    bad = good.clone()
    bad[0, 0, 0] = 1000.0
    with minidl.detect_anomaly(layer), pytest.raises(minidl.AnomalyError, match=r"Exp: non-finite"):
        layer(bad)
    grad = torch.ones(2, 3, 2, dtype=DTYPE)
    with pytest.raises(
        RuntimeError,
        match=r"^StackedActivation: backward after the forward refused by run 0 \(_Exp\): it had "
        "already cached its input, so",
    ):
        layer.backward(grad)
    layer(good)
    expected = torch.cat([torch.exp(good[:1]), (good[1:] > 0).to(DTYPE)])
    torch.testing.assert_close(layer.backward(grad), expected, rtol=1e-12, atol=0)


def test_a_sequential_refuses_the_backward_after_its_stacked_activation_refused_part_way() -> None:
    """A StackedActivation first in a Sequential whose second run refused the input (the first
    run had cached it) did not refuse cleanly: the Sequential refuses the backward in its own
    words, naming the module, rather than keeping its last good forward."""
    elu = nn.ELU()
    stacked = nn.StackedActivation([(nn.Tanh(), 1), (elu, 1)])
    model = nn.Sequential(stacked, nn.BatchedLinear(2, 2, 1))
    x = torch.tensor([[[-1.0, 2.0]], [[-0.5, 0.25]]])
    model(x)
    elu.alpha = 1e39
    with pytest.raises(ValueError, match=r"ELU: alpha=1e\+39 is beyond the range"):
        model(x)
    with pytest.raises(
        RuntimeError, match=r"backward after the forward refused by module 0 \(StackedActivation\)"
    ):
        model.backward(torch.ones(2, 1, 1))


class _Interrupted(nn.Activation):
    """An activation of one's own whose forward is interrupted (Ctrl-C) when ``stop`` is set."""

    stop = False

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        if self.stop:
            raise KeyboardInterrupt
        return input.clone(), input

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        return grad_output.clone()


def test_an_interrupt_in_a_later_run_refuses_the_backward_until_a_forward_succeeds() -> None:
    """A KeyboardInterrupt in the second run came after the first run cached the new input:
    the backward is refused (it mixed the two forwards' caches), until a forward succeeds."""
    interrupted = _Interrupted()
    stacked = nn.StackedActivation([(nn.Tanh(), 1), (interrupted, 1)])
    x = torch.tensor([[[-1.0, 2.0]], [[-0.5, 0.25]]], dtype=DTYPE)
    grad = torch.ones(2, 1, 2, dtype=DTYPE)
    stacked(x)
    expected = stacked.backward(grad)
    interrupted.stop = True
    with pytest.raises(KeyboardInterrupt):
        stacked(2 * x)
    with pytest.raises(
        RuntimeError,
        match=r"^StackedActivation: backward after the forward refused by run 1 "
        r"\(_Interrupted\): it and the runs before it had already cached its input, so",
    ):
        stacked.backward(grad)
    interrupted.stop = False
    stacked(x)
    assert torch.equal(stacked.backward(grad), expected)


def _scaling(factor: float) -> type[nn.Activation]:
    class Scaling(nn.Activation):
        """Two classes of one name (and repr): ``factor`` times the input."""

        def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
            return factor * input, input

        def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
            return factor * grad_output

    return Scaling


def test_activations_of_two_classes_with_one_repr_stack_apart() -> None:
    """Two activation classes of one name print alike but compute differently: each model of
    the stack keeps its own (two runs), as it computes alone."""
    models = [_model(seed, nn.Linear(2, 2), _scaling(f)()) for seed, f in ((0, 2.0), (1, 3.0))]
    assert repr(models[0][1]) == repr(models[1][1])
    stacked = nn.stack_models(models)
    assert isinstance(stacked[1], nn.StackedActivation)
    x = torch.randn(2, 4, 2)
    output = stacked(x)
    for index, model in enumerate(models):
        torch.testing.assert_close(output[index], model(x[index]), rtol=1e-6, atol=1e-6)


class _Nudged(nn.Activation):
    """An activation of one's own whose tensor setting's dtype is part of its function: the
    input plus the setting times its dtype's machine epsilon."""

    def __init__(self, scale: Tensor) -> None:
        super().__init__()
        self.scale = scale

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        return input + torch.finfo(self.scale.dtype).eps * self.scale.to(input.dtype), input

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        return grad_output.clone()


def test_tensor_settings_of_equal_values_and_other_dtypes_stack_apart() -> None:
    """Two activations whose tensor settings hold the same value (``torch.equal`` says so) in
    float32 and float64 are not one function: each model keeps its own (two runs), and the
    stack computes each model's output bit for bit as the model alone."""
    models = [
        _model(seed, nn.Linear(2, 2), _Nudged(torch.tensor(2.0, dtype=dtype)))
        for seed, dtype in ((0, torch.float32), (1, torch.float64))
    ]
    first, second = models[0][1], models[1][1]
    assert isinstance(first, _Nudged) and isinstance(second, _Nudged)
    assert torch.equal(first.scale, second.scale)
    stacked = nn.stack_models(models)
    assert isinstance(stacked[1], nn.StackedActivation)
    x = torch.randn(2, 4, 2, dtype=DTYPE)
    for model in models:
        model.to(DTYPE)
    stacked.to(DTYPE)
    output = stacked(x)
    for index, model in enumerate(models):
        assert torch.equal(output[index], model(x[index]))


def _pair(*activations: nn.Activation) -> list[nn.Sequential]:
    """Models Linear(2, 3) then one of ``activations`` each, of seeded float64 weights."""
    torch.manual_seed(0)
    return [nn.Sequential(nn.Linear(2, 3, dtype=DTYPE), activation) for activation in activations]


def _check_each_model(stacked: nn.Sequential, models: list[nn.Sequential]) -> None:
    """The stack's output and input gradient for each model are the model's own, run alone
    (float64): each test checks the function itself against its formula."""
    torch.manual_seed(1)
    x = torch.randn(len(models), 4, 2, dtype=DTYPE)
    output = stacked(x)
    grad = torch.randn_like(output)
    grad_input = stacked.backward(grad)
    for index, model in enumerate(models):
        torch.testing.assert_close(output[index], model(x[index]), rtol=0, atol=1e-15)
        torch.testing.assert_close(
            grad_input[index], model.backward(grad[index]), rtol=0, atol=1e-15
        )


class _Shifted(nn.Activation):
    """``x + shift``, the shift a private attribute: 1 where the instance has none, 0 where it
    holds ``None``."""

    _shift: float | None  # (declared, not set: an instance has none until one is set)

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        shift = getattr(self, "_shift", 1.0)
        return input + (0.0 if shift is None else shift), input

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        return grad_output.clone()


#: The offsets of every jagged table below: rows of 1 and 2 values (one nested shape for all).
_OFFSETS = torch.tensor([0, 1, 3])


class _Tabled(nn.Activation):
    """``tanh(x) * scale``, the scale the first value of a jagged nested tensor that it holds
    (which ``torch.equal`` cannot compare: AttributeError)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        values = torch.tensor([scale, 0.0, 0.0], dtype=DTYPE)
        self.table = torch.nested.nested_tensor_from_jagged(values, _OFFSETS)

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        return torch.tanh(input) * self.table.values()[0], input

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        return grad_output * (1 - torch.tanh(cache) ** 2) * self.table.values()[0]


class _Holder(nn.Activation):
    """tanh, with a child module registered (whose mode is the only thing that differs)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_module("inner", nn.Tanh())

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        output = torch.tanh(input)
        return output, output

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        return grad_output * (1 - cache * cache)


class _Refusing(nn.Activation):
    """tanh that refuses an input above 10 (after the runs before it ran)."""

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        if bool((input > 10).any()):
            raise ValueError("_Refusing: input above 10")
        output = torch.tanh(input)
        return output, output

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        return grad_output * (1 - cache * cache)


class _OutRecordingTanh(nn.Activation):
    """tanh whose hooks take ``out`` and record whether each ``out`` given was contiguous."""

    def __init__(self) -> None:
        super().__init__()
        self.contiguous: list[bool] = []

    def _forward(self, input: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if out is not None:
            self.contiguous.append(out.is_contiguous())
        output = torch.tanh(input, out=out)
        return output, output

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        return grad_output * (1 - cache * cache)


def test_activations_whose_children_differ_in_mode_alone_keep_their_modes() -> None:
    """S42: equal activations whose registered children differ in mode are two runs, so that
    each model unstacked has its own children's modes back (the mutant compared the
    activations' own flags alone, merged them, and gave model 1 model 0's child mode)."""
    holders = _Holder(), _Holder()
    next(iter(holders[1].children())).eval()
    models = _pair(*holders)
    stacked = nn.stack_models(models)
    assert isinstance(stacked[1], nn.StackedActivation)
    for index, model in enumerate(models):
        unstacked = nn.unstack_model(stacked, index)
        assert [module.training for module in unstacked.modules()] == [
            module.training for module in model.modules()
        ]
    _check_each_model(stacked, models)


def test_an_activation_that_lacks_a_private_attribute_is_not_one_holding_none() -> None:
    """S49: a private attribute that one activation holds as ``None`` and the other lacks
    differs (its class may read the absence as a default): the stack gives each model its
    own function; the mutant read both as ``None``, merged them, and gave model 1 ``x + 1``."""
    holding_none = _Shifted()
    holding_none._shift = None
    models = _pair(_Shifted(), holding_none)
    stacked = nn.stack_models(models)
    assert isinstance(stacked[1], nn.StackedActivation)
    _check_each_model(stacked, models)
    torch.manual_seed(2)
    x = torch.randn(2, 4, 3, dtype=DTYPE)
    torch.testing.assert_close(stacked[1](x), torch.stack([x[0] + 1, x[1]]), rtol=0, atol=0)


def test_activations_holding_nested_tensors_are_stacked_apart() -> None:
    """S51: a setting held in a nested tensor, whose values are not read, is taken as differing
    from another activation's, the safe way: the models stack, as two runs, each with its own
    scale (the mutant compared two jagged tensors of one nested shape with torch.equal, whose
    AttributeError came out of stack_models)."""
    models = _pair(_Tabled(2.0), _Tabled(-3.0))
    stacked = nn.stack_models(models)
    assert isinstance(stacked[1], nn.StackedActivation)
    _check_each_model(stacked, models)
    torch.manual_seed(2)
    x = torch.randn(2, 4, 3, dtype=DTYPE)
    expected = torch.stack([torch.tanh(x[0]) * 2.0, torch.tanh(x[1]) * -3.0])
    torch.testing.assert_close(stacked[1](x), expected, rtol=0, atol=0)


def test_a_forward_from_an_autograd_graph_refused_by_a_later_run_refuses_the_backward() -> None:
    """A12: an input from an autograd graph is computed run by run without ``out`` (the first
    run's ``out=`` refused); a refusal there by run 1, after run 0 cached the refused input,
    refuses the next backward naming run 1, as for any other input, until a forward succeeds
    (the mutant noted the refusal as run 0's, a refusal that changes nothing, and the
    backward mixed the refused input's caches with the last good forward's)."""
    stacked = nn.StackedActivation([(nn.Tanh(), 1), (_Refusing(), 1)])
    x = torch.tensor([[[-1.0, 2.0]], [[-0.5, 0.25]]], dtype=DTYPE)
    grad = torch.tensor([[[0.3, 0.7]], [[0.2, 0.1]]], dtype=DTYPE)
    stacked(x)
    expected = stacked.backward(grad)
    refused = torch.tensor([[[3.0, 4.0]], [[11.0, 2.0]]], dtype=DTYPE, requires_grad=True)
    with pytest.raises(ValueError, match=r"^_Refusing: input above 10$"):
        stacked(refused)
    with pytest.raises(
        RuntimeError,
        match=r"^StackedActivation: backward after the forward refused by run 1 \(_Refusing\): "
        r"the runs before it had already cached its input, so the last good forward cannot be "
        r"differentiated; run a forward that succeeds, then backward$",
    ):
        stacked.backward(grad)
    stacked(x)
    assert torch.equal(stacked.backward(grad), expected)


@pytest.mark.parametrize("missing", [("_shape", "_refused"), ("_dtype",), ("_refused",)])
def test_a_stacked_activation_pickled_before_its_checks_existed_loads_and_works(
    missing: tuple[str, ...],
) -> None:
    """A22, A23, A30: a StackedActivation pickled by a version without ``_shape`` and
    ``_refused`` (or without ``_dtype``, or ``_refused`` alone) loads: a backward before a
    forward is refused in the stack's words, and after a forward, or with the last forward
    kept, the backward is each run's (the mutants left the attribute out: AttributeError)."""
    layer = nn.StackedActivation([(nn.Tanh(), 1), (nn.ELU(), 1)])
    x = torch.tensor([[[-1.0, 2.0]], [[-0.5, 0.25]]], dtype=DTYPE)
    grad = torch.tensor([[[0.3, 0.7]], [[0.2, 0.1]]], dtype=DTYPE)
    output = layer(x)
    expected = layer.backward(grad)
    state = layer.__getstate__()
    for name in missing:
        del state[name]
    old = nn.StackedActivation.__new__(nn.StackedActivation)
    old.__setstate__(state)
    if "_shape" in missing:
        with pytest.raises(
            RuntimeError, match=r"^StackedActivation: backward called before forward$"
        ):
            old.backward(grad)
        assert torch.equal(old(x), output)
    assert torch.equal(old.backward(grad), expected)
    torch.testing.assert_close(
        expected,
        torch.stack(
            [
                grad[0] * (1 - torch.tanh(x[0]) ** 2),
                grad[1] * torch.where(x[1] > 0, 1.0, torch.exp(x[1])).to(DTYPE),
            ]
        ),
        rtol=0,
        atol=1e-15,
    )


def test_a_hook_taking_out_is_given_a_contiguous_out_for_an_input_of_any_strides() -> None:
    """A27: the ``out`` given to an activation's hook is contiguous, as documented, also for a
    non-contiguous input (a transposed batch), and the output is that of each run (the mutant
    made the output with the input's strides, and gave the hook a non-contiguous ``out``)."""
    torch.manual_seed(3)
    recording = _OutRecordingTanh()
    stacked = nn.StackedActivation([(nn.ELU(), 1), (recording, 1)])
    x = torch.randn(2, 3, 4, dtype=DTYPE).transpose(1, 2)
    assert not x.is_contiguous()
    output = stacked(x)
    assert recording.contiguous == [True]
    assert output.is_contiguous()
    torch.testing.assert_close(output[1], torch.tanh(x[1]), rtol=0, atol=0)
    torch.testing.assert_close(output[0], torch.nn.functional.elu(x[0]), rtol=0, atol=1e-15)


def _models(*activations: nn.Activation) -> list[nn.Sequential]:
    """Models Linear(2, 3) then one of ``activations`` each, of seeded float64 weights."""
    torch.manual_seed(0)
    return [nn.Sequential(nn.Linear(2, 3, dtype=DTYPE), activation) for activation in activations]


class _Shift(nn.Activation):
    """``x + shift``: the shift read from the instance (a public or a private attribute), 0
    where it has none; its repr shows neither."""

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        shift = getattr(self, "shift", 0.0) + getattr(self, "_offset", 0.0)
        return input + shift, input

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        return grad_output.clone()


def _outputs_of_each_model(stacked: nn.Sequential, models: list[nn.Sequential]) -> None:
    """The stack's output for each model is the model's own, run alone (float64, exactly)."""
    torch.manual_seed(1)
    x = torch.randn(len(models), 4, 2, dtype=DTYPE)
    output = stacked(x)
    for index, model in enumerate(models):
        torch.testing.assert_close(output[index], model(x[index]), rtol=0, atol=0)


def test_a_private_attribute_that_only_the_earlier_activation_holds_keeps_two_runs() -> None:
    """S39: model 0's activation holds a private attribute that model 1's lacks: two runs
    (the mutant compared model 1's private attributes alone and merged them, giving model 1
    model 0's offset)."""
    offset = _Shift()
    offset._offset = 2.0  # type: ignore[attr-defined]
    models = _models(offset, _Shift())
    stacked = nn.stack_models(models)
    assert isinstance(stacked[1], nn.StackedActivation)
    _outputs_of_each_model(stacked, models)


class _Through(nn.Activation):
    """Its registered child activation's function (the child a module, no setting of its
    own: only the repr, which shows the child, tells two apart)."""

    def __init__(self, inner: nn.Activation) -> None:
        super().__init__()
        self.register_module("inner", inner)

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        inner = cast(nn.Activation, self._modules["inner"])
        return inner.forward(input), input

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        inner = cast(nn.Activation, self._modules["inner"])
        return inner.backward(grad_output)


def test_activations_whose_children_differ_in_settings_are_stacked_apart() -> None:
    """S37: activations of one class whose registered children differ (ELU's alpha), which
    their reprs show, are two runs, each model its own function (the mutant compared the
    settings and private attributes alone, not the children, and gave model 1 model 0's)."""
    models = _models(_Through(nn.ELU(alpha=1.0)), _Through(nn.ELU(alpha=3.0)))
    stacked = nn.stack_models(models)
    assert isinstance(stacked[1], nn.StackedActivation)
    _outputs_of_each_model(stacked, models)


@pytest.mark.parametrize("index", [True, False])
def test_activation_of_refuses_a_bool_index(index: bool) -> None:
    """A02: a bool is no model index: activation_of refuses it with a TypeError naming it
    (the mutant took True for model 1 and False for model 0)."""
    layer = nn.StackedActivation([(nn.Tanh(), 1), (nn.ReLU(), 1)])
    with pytest.raises(TypeError) as info:
        layer.activation_of(index)
    assert str(info.value) == (
        f"StackedActivation.activation_of: expected an integer index, got {index}"
    )


class _InterruptedMSE(nn.Loss):
    """A stacked loss of one's own whose forward notes an attribute, then is interrupted (as by
    Ctrl-C) before it returns."""

    stacks = True

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        self.noted = prediction
        raise KeyboardInterrupt

    def _gradient(self) -> Tensor:
        raise AssertionError("never reached")


def test_an_interrupt_in_a_run_leaves_every_criterion_as_it_was() -> None:
    """L10: an interrupt (KeyboardInterrupt, no Exception) in a later run still restores every
    run's criterion, which keep their last good forward and lose what the interrupted forward
    added (the mutant restored them on an Exception alone)."""
    first, interrupted = nn.MSELoss(), _InterruptedMSE()
    criterion = nn.StackedLoss([(first, 1), (interrupted, 1)])
    before = [dict(vars(first)), dict(vars(interrupted))]
    with pytest.raises(KeyboardInterrupt):
        criterion(torch.zeros(2, 3, 1, dtype=DTYPE), torch.ones(2, 3, 1, dtype=DTYPE))
    assert "noted" not in vars(interrupted)
    assert list(vars(first)) == list(before[0])
    assert all(vars(first)[name] is value for name, value in before[0].items())


@pytest.mark.parametrize("from_graph", ["input", "gradient"])
def test_backward_with_an_operand_from_an_autograd_graph_matches_autograd(from_graph: str) -> None:
    """A19: out= is refused where an operand of the backward comes from an autograd graph (the
    caches of an input that requires grad, or such a gradient): each run then makes its own
    gradient and they are concatenated, as in forward; the mutant let PyTorch's RuntimeError
    ("functions with out=... arguments don't support automatic differentiation") escape."""
    torch.manual_seed(0)
    layer = nn.StackedActivation([(nn.Tanh(), 2), (nn.ELU(), 1), (nn.Sigmoid(), 1)])
    x = torch.randn(4, 3, 5, dtype=DTYPE, requires_grad=True)
    grad = torch.randn(4, 3, 5, dtype=DTYPE, requires_grad=from_graph == "gradient")
    functions: list[Callable[[Tensor], Tensor]] = [torch.tanh] * 2 + [
        torch.nn.functional.elu,
        torch.sigmoid,
    ]
    reference = torch.stack([function(x[r]) for r, function in enumerate(functions)])
    (expected,) = torch.autograd.grad(reference, x, grad.detach())
    layer(x if from_graph == "input" else x.detach())
    grad_input = layer.backward(grad)
    assert grad_input.shape == (4, 3, 5) and grad_input.dtype == DTYPE
    torch.testing.assert_close(grad_input.detach(), expected, rtol=1e-12, atol=1e-12)


def test_a_model_layout_stack_made_inside_inference_mode_keeps_the_layout_and_trains() -> None:
    """N07: a ``layout="model"`` stack made inside ``torch.inference_mode()`` gets the same
    padded per-model blocks as one made outside (its buffer is made as normal tensors), so
    ``flat_model_parameters`` takes it and one SGD step outside gives the same bits; the mutant
    made the buffer an inference tensor, which Parameter copied out of inference mode into
    contiguous tensors: the stack silently lost its layout, and flat_model_parameters refused
    it."""
    torch.manual_seed(0)
    models = [nn.mlp((3, 5, 2), "tanh").to(dtype=DTYPE) for _ in range(2)]
    with torch.inference_mode():
        inside = nn.stack_models(models, layout="model")
    outside = nn.stack_models(models, layout="model")
    for made_inside, made_outside in zip(inside.parameters(), outside.parameters(), strict=True):
        for a, b in ((made_inside.data, made_outside.data), (made_inside.grad, made_outside.grad)):
            assert a is not None and b is not None and not a.is_inference()
            assert torch.equal(a, b) and a.stride() == b.stride()
    x = torch.randn(2, 4, 3, dtype=DTYPE)
    for stacked in (inside, outside):
        flat = nn.flat_model_parameters(stacked, slice(0, 2))
        optimizer = minidl.optim.SGD([flat], lr=0.5)
        output = stacked(x)
        stacked.backward(torch.ones_like(output))
        optimizer.step()
    for made_inside, made_outside in zip(inside.parameters(), outside.parameters(), strict=True):
        assert torch.equal(made_inside.data, made_outside.data)


@pytest.mark.parametrize(
    "module",
    [nn.Linear(2, 3), nn.Tanh(), nn.StackedActivation([(nn.Tanh(), 1), (nn.ReLU(), 1)])],
    ids=["Linear", "Tanh", "StackedActivation"],
)
def test_a_single_module_of_any_kind_is_refused_as_one_rather_than_a_sequence(
    module: nn.Module,
) -> None:
    """N16: any single Module given for the models (a layer rather than a list of networks) is
    named as one ("got a single Linear"), as a single Sequential is; the mutant said so of a
    Sequential alone, and called a single Linear "no sequence" (the message for a generator,
    a set, ...)."""
    name = type(module).__name__
    with pytest.raises(TypeError) as refused:
        nn.stack_models(module)  # type: ignore[arg-type]
    assert str(refused.value) == f"stack_models: expected a sequence of models, got a single {name}"


# -- a third pass of mutation testing over stack, stacked_activation and stacked_loss (2026-12-07)


def _networks(count: int, *activations: type[nn.Activation], seed: int = 0) -> list[nn.Sequential]:
    """``count`` float64 2-3-2 networks; model r's activation is ``activations[r]`` (or the
    first)."""
    torch.manual_seed(seed)
    return [
        nn.Sequential(
            nn.Linear(2, 3),
            (activations[r] if r < len(activations) else activations[0])(),
            nn.Linear(3, 2),
        ).to(DTYPE)
        for r in range(count)
    ]


def test_the_mode_refusal_names_each_models_own_mode() -> None:
    """S06: the message gives models[0]'s mode first and the other model's second."""
    models = _networks(2, nn.Tanh)
    models[1].eval()
    with pytest.raises(
        ValueError,
        match=r"^stack_models: models\[0\] is in training mode and models\[1\] in evaluation "
        r"mode \(their own modes",
    ):
        nn.stack_models(models)


def test_fit_rounds_takes_models_in_different_modes_and_trains_them_as_fit() -> None:
    """S05: fit_rounds stacks models in any modes (as fit takes a model in any mode) and leaves
    each in training mode; the trained values are those of one model trained alone."""
    models = _networks(2, nn.Tanh)
    models[1].eval()
    models[1][0].eval()
    torch.manual_seed(1)
    x = torch.randn(6, 2, dtype=DTYPE)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        lambda stack: SGD(stack.parameters(), lr=0.1),
        [(x, y), (x, y)],
        epochs=1,
        batch_size=3,
        generators=[torch.Generator().manual_seed(r) for r in range(2)],
    )
    assert all(module.training for model in models for module in model.modules())


def test_a_model_that_ties_one_parameter_to_two_layers_is_refused_and_left_as_it_was() -> None:
    """S08, S09: a Parameter registered in two Linear layers of a model would be trained as two
    in the stack; it is refused, naming both places, and the model is untouched."""
    models = _networks(2, nn.Tanh)
    tied = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2)).to(DTYPE)
    tied[2].register_parameter("weight", tied[0].weight)
    other = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2)).to(DTYPE)
    before = [p.data.clone() for p in tied.parameters()]
    with pytest.raises(
        ValueError,
        match=r"^stack_models: models\[1\] ties '2\.weight' to '0\.weight' \(one Parameter at "
        r"two places\), which a stack would train as two$",
    ):
        nn.stack_models([other, tied])
    assert tied[2].weight is tied[0].weight
    for p, q in zip(tied.parameters(), before, strict=True):
        assert torch.equal(p.data, q)
    del models


class _BiasLinear(nn.Linear):
    """A Linear whose bias gradient is computed otherwise (a stack would compute Linear's)."""

    def _accumulate_bias(self, grad_output_t: Tensor) -> None:
        super()._accumulate_bias(2 * grad_output_t)


class _ApplyLinear(nn.Linear):
    """A Linear whose product is computed otherwise."""

    def _apply(self, input: Tensor, out: Tensor | None = None) -> Tensor:
        return super()._apply(input, out) + 1


@pytest.mark.parametrize(
    ("klass", "method"), [(_BiasLinear, "_accumulate_bias"), (_ApplyLinear, "_apply")]
)
def test_a_linear_whose_class_overrides_a_private_computation_is_refused(
    klass: type[nn.Linear], method: str
) -> None:
    """S11, S12: Linear's _apply, _accumulate and _accumulate_bias are how it computes; a
    subclass overriding one is refused, naming the layer, the model and the method."""
    models = _networks(2, nn.Tanh)
    torch.manual_seed(3)
    models[1] = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), klass(3, 2)).to(DTYPE)
    with pytest.raises(
        TypeError,
        match=rf"^stack_models: layer 2 of models\[1\] is a {klass.__name__}, whose class "
        rf"overrides Linear\.{method}: a stack computes",
    ):
        nn.stack_models(models)


@pytest.mark.parametrize("where", ["model", "activation"])
def test_backward_parameters_set_on_an_instance_is_refused(where: str) -> None:
    """S13: backward_parameters set on a model's or an activation's instance would be left out
    by the stack; it is refused like forward and backward."""
    models = _networks(2, nn.Tanh)
    module = models[1] if where == "model" else models[1][1]
    module.backward_parameters = lambda grad_output: None  # type: ignore[method-assign]
    what = r"models\[1\] \(Sequential\)" if where == "model" else r"layer 1 of models\[1\] \(Tanh\)"
    with pytest.raises(
        TypeError, match=rf"^stack_models: {what} has backward_parameters set on its instance: "
    ):
        nn.stack_models(models)


def test_a_linear_in_another_mode_in_a_later_model_than_the_second_is_refused() -> None:
    """S14: every model's Linear at a position is compared with models[0]'s, the third too."""
    models = _networks(3, nn.Tanh)
    models[2][2].eval()
    with pytest.raises(
        ValueError,
        match=r"^stack_models: layer 2 is in training mode in models\[0\] and in evaluation "
        r"mode in models\[2\]; a stacked Linear",
    ):
        nn.stack_models(models)


def test_a_stack_of_models_in_evaluation_mode_unstacks_in_their_modes() -> None:
    """S15, S22, S41, S43: the stack and each of its BatchedLinear layers has the mode of what it
    stacks, and unstack_model gives each model back in it."""
    models = _networks(2, nn.Tanh, nn.ReLU)
    for model in models:
        model.eval()
    models[0][1].train()
    models[1][1].train()
    stacked = nn.stack_models(models)
    assert [layer.training for layer in stacked] == [False, True, False]
    assert not stacked.training
    for index in range(2):
        model = nn.unstack_model(stacked, index)
        assert [layer.training for layer in model] == [False, True, False]
        assert not model.training


def test_a_stacked_activation_of_activations_in_different_modes_has_the_models_mode() -> None:
    """S20: where the models' activations differ in class and mode, the StackedActivation has
    the models' own mode (models[0]'s), not one of the activations'."""
    models = _networks(2, nn.Tanh, nn.ReLU)
    models[0][1].eval()  # (models[1]'s ReLU stays in training mode, as the models do)
    stacked = nn.stack_models(models)
    assert isinstance(stacked[1], nn.StackedActivation)
    assert stacked[1].training is True
    assert [stacked[1].activation_of(r).training for r in range(2)] == [False, True]
    for model in models:
        model.eval()
    models[1][1].train()  # (models[0]'s Tanh in evaluation mode, as the models are)
    stacked = nn.stack_models(models)
    assert stacked[1].training is False


def _bias_free(count: int, width: int) -> list[nn.Sequential]:
    torch.manual_seed(5)
    return [
        nn.Sequential(
            nn.Linear(2, width, bias=False), nn.Tanh(), nn.Linear(width, 2, bias=False)
        ).to(DTYPE)
        for _ in range(count)
    ]


@pytest.mark.parametrize(("width", "block"), [(2, 8), (3, 16), (4, 16), (5, 24)])
def test_the_model_layout_pads_each_models_block_to_64_bytes_and_no_further(
    width: int, block: int
) -> None:
    """S24, S25: a model's block is its parameters' elements rounded up to a multiple of 64
    bytes (8 float64 elements): 4 * width elements give ``block``, exactly, a multiple of 8 no
    more padded; its flat Parameter views that block, named by its models."""
    models = _bias_free(3, width)
    stacked = nn.stack_models(models, layout="model")
    for layer in (stacked[0], stacked[2]):
        assert layer.weight.data.stride(0) == block
        assert layer.weight.grad.stride(0) == block
    for r in range(3):
        flat = nn.flat_model_parameters(stacked, r)
        assert flat.data.numel() == block
        assert flat.data.data_ptr() % 64 == 0
        assert flat.name == f"models[{r}:{r + 1}]"
        expected = torch.cat([p.data.flatten() for p in models[r].parameters()])
        assert torch.equal(flat.data[: 4 * width], expected)
        assert torch.equal(flat.data[4 * width :], torch.zeros(block - 4 * width, dtype=DTYPE))
    both = nn.flat_model_parameters(stacked, slice(1, 3))
    assert both.name == "models[1:3]"
    assert both.data.numel() == 2 * block


def test_stacked_loss_refuses_a_prediction_of_more_than_three_dimensions_in_its_words() -> None:
    """L02: a prediction (R, N, C, 1) is no stacked prediction; it is refused as such, before a
    run sees it."""
    criterion = nn.StackedLoss([(nn.MSELoss(), 1), (nn.CrossEntropyLoss(), 1)])
    with pytest.raises(
        ValueError,
        match=r"^StackedLoss: expected a stacked prediction \(R, N, C\) of R = 2 models, got "
        r"\(2, 4, 2, 1\)$",
    ):
        criterion(torch.zeros(2, 4, 2, 1, dtype=DTYPE), torch.zeros(2, 4, 2, dtype=DTYPE))


class _RefusalError(ValueError):
    """A refusal of a loss of one's own, of a subclass of ValueError."""


class _RefusingLoss(nn.Loss):
    stacks = True

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        raise _RefusalError("in its own words")

    def _gradient(self) -> Tensor:
        raise AssertionError("not reached")


def test_stacked_loss_lets_a_runs_error_of_a_subclass_through_as_it_was_raised() -> None:
    """L07: only a plain TypeError or ValueError of a run is said again within the whole; one of
    a subclass (which may carry more than a message) is raised as the run raised it."""
    criterion = nn.StackedLoss([(nn.MSELoss(), 1), (_RefusingLoss(), 1)])
    with pytest.raises(_RefusalError, match=r"^in its own words$") as caught:
        criterion(torch.zeros(2, 3, 1, dtype=DTYPE), torch.zeros(2, 3, 1, dtype=DTYPE))
    assert caught.value.__cause__ is None


def test_stacked_loss_names_the_models_of_the_run_that_refused() -> None:
    """L08, L09: the message gives the run's models as a slice start:stop and chains the run's
    own error."""
    criterion = nn.StackedLoss([(nn.MSELoss(), 2), (nn.CrossEntropyLoss(), 2)])
    with pytest.raises(
        ValueError,
        match=r"^StackedLoss: run 1 \(CrossEntropyLoss, models 2:4\) refused its slices of the "
        r"prediction \(4, 3, 2\) \(float64\) and the target \(4, 3, 2\) \(float64\): ",
    ) as caught:
        criterion(torch.zeros(4, 3, 2, dtype=DTYPE), torch.full((4, 3, 2), 7.0, dtype=DTYPE))
    assert isinstance(caught.value.__cause__, ValueError)
    assert str(caught.value).endswith(str(caught.value.__cause__))


class _NoTruth:
    def __bool__(self) -> bool:
        raise TypeError("no truth value")


class _Factor:
    """A setting whose comparison gives no truth value (as a NumPy array's)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __eq__(self, other: object) -> _NoTruth:  # type: ignore[override]
        return _NoTruth()

    __hash__ = None  # type: ignore[assignment]


class _Scaled(nn.Activation):
    """x * factor.value, a public setting that its repr does not show."""

    def __init__(self, factor: _Factor) -> None:
        super().__init__()
        self.factor = factor

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        return input * self.factor.value, input

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        return grad_output * self.factor.value


def test_settings_whose_comparison_has_no_truth_value_stack_apart() -> None:
    """S48: two settings that cannot be compared are taken for different (two runs, the safe
    way to err); each model computes with its own."""
    torch.manual_seed(2)
    shared = _Factor(2.0)
    models = [
        nn.Sequential(nn.Linear(2, 3), _Scaled(f), nn.Linear(3, 2)).to(DTYPE)
        for f in (shared, _Factor(3.0), shared)
    ]
    stacked = nn.stack_models(models)
    assert isinstance(stacked[1], nn.StackedActivation)
    assert [stacked[1].activation_of(r).factor.value for r in range(3)] == [2.0, 3.0, 2.0]
    x = torch.randn(3, 4, 2, dtype=DTYPE)
    output = stacked(x)
    for r, model in enumerate(models):
        torch.testing.assert_close(output[r], model(x[r]), rtol=1e-14, atol=0)


class _PrivatelyShifted(nn.Activation):
    """x + self._shift where an instance holds one (a private setting its repr does not show),
    else x."""

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        return input + getattr(self, "_shift", 0.0), input

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        return grad_output.clone()


def test_a_private_attribute_that_only_the_later_activation_holds_keeps_two_runs() -> None:
    """S46: the private attributes of both activations are compared, also one that only the
    later model's holds; each model then computes with its own."""
    torch.manual_seed(4)
    activations = [_PrivatelyShifted(), _PrivatelyShifted()]
    activations[1]._shift = 5.0
    models = [nn.Sequential(nn.Linear(2, 3), a, nn.Linear(3, 2)).to(DTYPE) for a in activations]
    stacked = nn.stack_models(models)
    assert isinstance(stacked[1], nn.StackedActivation)
    x = torch.randn(2, 4, 2, dtype=DTYPE)
    output = stacked(x)
    for r, model in enumerate(models):
        torch.testing.assert_close(output[r], model(x[r]), rtol=1e-14, atol=0)


def test_a_model_unstacked_shares_no_activation_with_a_stacked_activation() -> None:
    """S42: unstack_model copies model r's activation out of a StackedActivation: running the
    unstacked model leaves the stack's last forward, and so its backward, as they were."""
    models = _networks(2, nn.Tanh, nn.ReLU)
    stacked = nn.stack_models(models)
    assert isinstance(stacked[1], nn.StackedActivation)
    torch.manual_seed(6)
    x = torch.randn(2, 4, 2, dtype=DTYPE)
    grad = torch.randn(2, 4, 2, dtype=DTYPE)
    stacked(x)
    expected = stacked.backward(grad).clone()
    stacked(x)
    for r in range(2):
        model = nn.unstack_model(stacked, r)
        assert model[1] is not stacked[1].activation_of(r)
        model(torch.randn(3, 2, dtype=DTYPE))
    assert torch.equal(stacked.backward(grad), expected)


def test_model_parameters_grads_are_views_of_the_stacks_gradients() -> None:
    """S38: model_parameters' grads are views: a backward of the stack shows in them, and
    zeroing them zeroes that model's part of the stack's gradients alone."""
    models = _networks(2, nn.Tanh)
    stacked = nn.stack_models(models)
    views = nn.model_parameters(stacked, 1)
    torch.manual_seed(7)
    stacked(torch.randn(2, 4, 2, dtype=DTYPE))
    stacked.backward(torch.randn(2, 4, 2, dtype=DTYPE))
    stacked_parameters = list(stacked.parameters())
    for view, whole in zip(views, stacked_parameters, strict=True):
        assert torch.equal(view.grad, whole.grad[1])
        assert bool(view.grad.abs().sum() > 0)
    for view in views:
        view.grad.zero_()
    for whole in stacked_parameters:
        assert not whole.grad[1].any()
        assert whole.grad[0].any()


@pytest.mark.parametrize("index", [-1, -2, 2])
def test_a_negative_or_too_large_model_index_is_refused_by_every_function(index: int) -> None:
    """S35: model indices are in [0, R): -1 is no alias of the last model."""
    stacked = nn.stack_models(_bias_free(2, 2), layout="model")
    for function in (nn.model_parameters, nn.flat_model_parameters, nn.unstack_model):
        with pytest.raises(
            IndexError,
            match=rf"^{function.__name__}: index {index} is out of range for 2 models$",
        ):
            function(stacked, index)


def test_flat_model_parameters_of_a_model_layout_that_starts_inside_its_buffer() -> None:
    """S28: the flat Parameter starts where the stack's first parameter starts in the buffer
    (its storage offset), not at the buffer's start."""
    models = _bias_free(2, 2)
    stacked = nn.stack_models(models, layout="model")
    parameters = list(stacked.parameters())
    block = parameters[0].data.stride(0)
    values = torch.zeros(8 + 2 * block, dtype=DTYPE)
    grads = torch.zeros_like(values)
    offset = 8
    for parameter in parameters:
        shape, strides = parameter.data.shape, parameter.data.stride()
        value = values.as_strided(shape, strides, offset)
        grad = grads.as_strided(shape, strides, offset)
        value.copy_(parameter.data)
        parameter.data, parameter.grad = value, grad
        offset += parameter.data[0].numel()
    for r, model in enumerate(models):
        flat = nn.flat_model_parameters(stacked, r)
        expected = torch.cat([p.data.flatten() for p in model.parameters()])
        assert torch.equal(flat.data[: expected.numel()], expected)
        assert flat.data.storage_offset() == 8 + r * block
        assert flat.grad.storage_offset() == 8 + r * block
