"""Tests that kill the mutants of the activations (``minidl.nn``'s element-wise activations,
``Dropout``, ``StackedActivation``, ``SELU``'s loading and gradient clipping) that survived a
third mutation audit (after the one behind ``test_activation_gaps.py``).

Each test states the behaviour it pins down against an oracle: PyTorch autograd in float64, a
norm computed in float64, the generator's own state, or the documented error (type and
message).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor

from minidl import nn
from minidl.nn.selu import SELU_SCALE

F16, F32, F64 = torch.float16, torch.float32, torch.float64


def _seeded(*shape: int, seed: int, dtype: torch.dtype = F32) -> Tensor:
    """A standard normal tensor from its own generator (no global state)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=F64).to(dtype)


# -- Activation: a stack's run whose module was called alone since -------------------------------


def test_a_stacks_backward_refuses_a_run_whose_module_ran_alone_on_another_shape() -> None:
    """A run's module called alone after the stack's forward caches that input's derivative;
    the stack's backward then refuses (the run's module names the shapes), rather than
    broadcasting the (1, 4) derivative of the other input over the run's (2, 4) gradient and
    returning a wrong gradient."""
    elu = nn.ELU()
    stack = nn.StackedActivation([(elu, 2), (nn.ReLU(), 1)])
    stack(_seeded(3, 4, seed=1))
    elu(_seeded(1, 4, seed=2))
    with pytest.raises(ValueError) as info:
        stack.backward(torch.ones(3, 4))
    assert str(info.value) == (
        "ELU: gradient has shape (2, 4), expected (1, 4) (the shape of the last forward's output)"
    )


# -- ELU: a subclass's refusal of inplace=True names the subclass ---------------------------------


class _ShiftedELU(nn.ELU):
    """A user's ELU subclass, built through ELU's constructor."""


def test_an_elu_subclass_refusing_inplace_names_itself() -> None:
    """``inplace=True`` given to the constructor of a subclass of ELU is refused naming the
    subclass, as setting ``inplace`` on it afterwards is (not ``ELU``, which the user did not
    build)."""
    with pytest.raises(ValueError) as info:
        _ShiftedELU(inplace=True)
    assert str(info.value).startswith("_ShiftedELU: inplace=True is not supported")
    module = _ShiftedELU()
    with pytest.raises(ValueError) as info:
        module.inplace = True
    assert str(info.value).startswith("_ShiftedELU: inplace=True is not supported")


# -- SELU: a plain scale of another type dropped with a warning -----------------------------------


def test_a_selu_pickled_with_a_scale_tensor_warns_that_it_is_dropped() -> None:
    """A plain ``scale`` attribute set by hand (before the scale was fixed) to a tensor equal to
    the constant is still not the number SELU computes with: loading drops it with a warning
    naming it, and the module computes with the constant."""
    state = dict(nn.SELU().__dict__)
    state["scale"] = torch.tensor(SELU_SCALE, dtype=F64)
    module = nn.SELU.__new__(nn.SELU)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module.__setstate__(state)
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 1
    assert messages[0].startswith("SELU: scale=tensor(1.0507, dtype=torch.float64), pickled by")
    assert "scale" not in module.__dict__
    assert module.scale == SELU_SCALE
    x = torch.tensor([1.0, -1.0], dtype=F64)
    assert torch.equal(module(x), nn.SELU()(x))


# -- StackedActivation: a dtype refused by one run's activation ------------------------------------


class _IntegerDoubler(nn.Activation):
    """An activation that takes integer inputs too (it overrides the input check)."""

    def _check_input(self, input: object) -> None:
        if not isinstance(input, Tensor):
            super()._check_input(input)

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        output = input.to(F32) * 2
        return output, output

    def _backward(self, grad_output: Tensor, cache: Tensor) -> Tensor:
        return grad_output * 2


def test_a_stack_with_one_run_taking_integers_lets_the_refusing_run_name_itself() -> None:
    """Where one run's activation takes integer inputs, the stack does not refuse them itself
    (naming ``StackedActivation``): the run that refuses them does, naming its activation."""
    stack = nn.StackedActivation([(nn.Tanh(), 1), (_IntegerDoubler(), 1)])
    with pytest.raises(TypeError) as info:
        stack(torch.ones(2, 3, dtype=torch.int64))
    assert str(info.value).startswith("Tanh: expected a floating-point input")


# -- clip_grad_norm_: long flat buffers ----------------------------------------------------------


def test_the_norm_of_a_buffer_one_entry_past_a_row_counts_that_entry() -> None:
    """A flat gradient buffer of 4097 entries (a ``Linear(4096, 1)``'s) is one row of 4096 and
    one entry more: the total norm counts that entry (here the only nonzero one, 3), and the
    gradients are scaled by max_norm / (3 + 1e-6): the bias gradient becomes 3 / (3 + 1e-6)."""
    model = nn.Sequential(nn.Linear(4096, 1))
    weight, bias = model.parameters()
    weight.grad.zero_()
    bias.grad.fill_(3.0)
    total = nn.clip_grad_norm_(model.parameters(), 1.0)
    assert float(total) == 3.0
    assert float(bias.grad) == pytest.approx(3.0 / (3.0 + 1e-6), rel=1e-6)
    assert not weight.grad.any()


def test_the_norm_of_a_long_float16_buffer_is_its_float64_norm_rounded_once() -> None:
    """The rows of a float16 buffer longer than 4096 entries are measured in float32: the total
    norm is the float64 norm of the gradients rounded once to float16 (the norms of the rows
    rounded to float16 first round twice: 111.6875 for 111.625 with the first seed)."""
    for seed in range(6):
        generator = torch.Generator().manual_seed(seed)
        model = nn.Sequential(nn.Linear(4096, 3, dtype=F16))
        grads = [parameter.grad for parameter in model.parameters()]
        for grad in grads:
            grad.copy_(torch.randn(grad.shape, generator=generator, dtype=F64).to(F16))
        expected = torch.cat([grad.double().flatten() for grad in grads]).norm().to(F16)
        total = nn.clip_grad_norm_(model.parameters(), float("inf"))
        assert total.dtype is F16
        assert float(total) == float(expected), seed


def test_a_pair_of_a_name_and_no_parameter_is_not_taken_for_named_parameters() -> None:
    """A ``(name, parameter)`` pair is named as what ``named_parameters()`` gives; a pair of a
    string and something else (here a plain tensor) is not, and the refusal names only its
    type and position."""
    with pytest.raises(TypeError) as info:
        nn.clip_grad_norm_([("weight", torch.ones(2))], 1.0)  # type: ignore[list-item]
    assert str(info.value) == "clip_grad_norm_: expected Parameters, got tuple at position 0"


class _UncheckedGradientTanh(nn.Tanh):
    """A Tanh that overrides the check of its gradient (and keeps that of its input)."""

    def _check_gradient(self, grad_output: object) -> Tensor:
        assert self._cache is not None
        return self._cache


def test_a_stack_with_one_run_checking_its_own_gradients_lets_the_refusing_run_name_itself() -> (
    None
):
    """Where one run's activation checks its gradients its own way, the stack does not refuse
    an integer gradient itself (naming ``StackedActivation``): the run that refuses it does,
    naming its activation (whether the runs keep the input check does not decide it)."""
    stack = nn.StackedActivation([(nn.Tanh(), 1), (_UncheckedGradientTanh(), 1)])
    stack(_seeded(2, 3, seed=6))
    with pytest.raises(TypeError) as info:
        stack.backward(torch.ones(2, 3, dtype=torch.int64))
    assert str(info.value).startswith("Tanh: expected a floating-point gradient")


class _NarrowCacheTanh(nn.Activation):
    """An activation whose ``_forward`` takes ``out`` and wrongly returns one row as its cache."""

    def _forward(self, input: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        output = torch.tanh(input) if out is None else torch.tanh(input, out=out)
        return output, output[:1]

    def _backward(self, grad_output: Tensor, cache: Tensor, out: Tensor | None = None) -> Tensor:
        return torch.mul(grad_output, cache, out=out)


def test_a_stack_refuses_a_run_whose_forward_writing_out_returns_a_cache_of_another_shape() -> None:
    """A run whose ``_forward`` writes into the stack's output is checked as a lone forward is:
    a cache of another shape than its output is refused, naming the activation and both
    shapes (not kept for a backward that would broadcast it)."""
    stack = nn.StackedActivation([(nn.Tanh(), 1), (_NarrowCacheTanh(), 2)])
    with pytest.raises(ValueError) as info:
        stack(_seeded(3, 4, seed=7))
    assert str(info.value).startswith(
        "_NarrowCacheTanh._forward returned a tensor of shape (1, 4) as the cache; expected one "
        "tensor of the output's shape (2, 4)"
    )


def test_dropout_in_training_refuses_a_sparse_input_by_name() -> None:
    """A sparse input in training mode (where the mask is drawn) is refused naming Dropout and
    saying how to pass it, not with the tensor library's words about its backend."""
    module = nn.Dropout(0.5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError) as info:
        module(torch.eye(3).to_sparse())
    assert str(info.value) == (
        "Dropout: expected a dense input, got a sparse_coo tensor (pass input.to_dense())"
    )


def test_a_numpy_bool_error_if_nonfinite_is_named_with_its_module() -> None:
    """``error_if_nonfinite`` must be a Python bool; NumPy's bool, whose class is also called
    ``bool``, is refused naming its module ("must be a bool, got bool" would read as no
    reason), and no gradient is changed."""
    numpy = pytest.importorskip("numpy")
    model = nn.Sequential(nn.Linear(2, 2))
    for parameter in model.parameters():
        parameter.grad.fill_(10.0)
    with pytest.raises(TypeError) as info:
        nn.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=numpy.True_)
    assert str(info.value) == (
        "clip_grad_norm_: error_if_nonfinite must be a bool, got numpy.bool np.True_"
    )
    assert all(bool((parameter.grad == 10.0).all()) for parameter in model.parameters())


class _DoublingTanh(nn.Tanh):
    """A Tanh subclass that overrides ``forward`` (so a stack calls it, not its hook)."""

    def forward(self, input: Tensor) -> Tensor:
        return super().forward(input) * 2


def test_a_stack_loaded_from_a_state_that_wrote_an_overriding_run_out_calls_its_forward() -> None:
    """Which runs write into the stack's output is derived again on loading, not read from the
    pickle: a state saved when it was decided from the hooks alone (a run overriding
    ``forward`` marked as writing out) loads into a stack that calls the override."""
    stack = nn.StackedActivation([(nn.ReLU(), 1), (_DoublingTanh(), 1)])
    state = dict(stack.__dict__)
    state["_writes_out"] = ((True, True), (True, True))  # (as decided from the hooks alone)
    loaded = nn.StackedActivation.__new__(nn.StackedActivation)
    loaded.__setstate__(state)
    x = _seeded(2, 3, seed=11)
    assert torch.equal(loaded(x)[1], 2 * nn.Tanh()(x[1:])[0])
