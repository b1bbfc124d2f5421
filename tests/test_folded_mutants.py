"""Gaps in the tests of ``fit``'s folded step (:mod:`minidl.folded`) found by mutation testing.

The oracle is ``fit``'s step-by-step loop (the folded step made unusable the documented way,
:func:`tests.helpers.unfolded`): the folded step must leave the model and the optimizer as the
loop leaves them, to rounding (its products sum in another order, see the module's docstring),
in float64 and float32.
"""

from __future__ import annotations

import contextlib
import gc
import math
import signal
import sys
import weakref
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.folded import FoldedStep
from minidl.train import fit
from tests.helpers import unfolded

F64 = torch.float64
_TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}


def _data(dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=generator, dtype=dtype)
    y = torch.randint(0, 3, (40,), generator=generator)
    return x, y


def _close(a: Tensor, b: Tensor, dtype: torch.dtype) -> None:
    scale = max(1.0, float(b.abs().max()))
    error = float((a - b).abs().max())
    assert error <= _TOLERANCE[dtype] * scale, f"differs by {error:g} (scale {scale:g})"


@contextlib.contextmanager
def _counting(calls: list[int]) -> Iterator[None]:
    """``fit`` as it runs, counting the folded step's calls in ``calls[0]``."""
    original = FoldedStep.__call__

    def counting(self: FoldedStep, x: Tensor, y: Tensor) -> Tensor:
        calls[0] += 1
        return original(self, x, y)

    with mock.patch.object(FoldedStep, "__call__", counting):
        yield


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_state_tensor_made_in_inference_mode_between_calls_is_taken_as_the_loop_takes_it(
    dtype: torch.dtype,
) -> None:
    """Between two calls of ``fit``, the momentum buffer is replaced by one made in
    ``torch.inference_mode()``: the loop's step takes it as a copy made outside it, so that
    the program can change it in place afterwards; the folded step, which loads the state
    itself, must take it so too (the values trained, and a state tensor that is no inference
    tensor, usable in place outside inference mode), on the second call's folded steps."""
    x, y = _data(dtype)
    results = {}
    for fold in (True, False):
        model = nn.mlp((3, 5, 3), "tanh", dtype=dtype, generator=torch.Generator().manual_seed(1))
        optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.9)
        criterion = nn.CrossEntropyLoss()
        calls = [0]
        context = _counting(calls) if fold else unfolded()
        with context:
            generator = torch.Generator().manual_seed(2)
            fit(model, criterion, optimizer, x, y, epochs=1, batch_size=10, generator=generator)
            with torch.inference_mode():
                replaced = optimizer.state["momentum_buffer"] * 0.5
            optimizer.state["momentum_buffer"] = replaced
            fit(model, criterion, optimizer, x, y, epochs=1, batch_size=10, generator=generator)
        if fold:
            assert calls[0] == 8  # (both calls folded, 4 batches each)
        state = optimizer.state["momentum_buffer"]
        assert not state.is_inference()
        state.mul_(1.0)  # (outside inference mode: refused for an inference tensor)
        results[fold] = [p.data.clone() for p in model.parameters()] + [state.clone()]
    for folded, looped in zip(results[True], results[False], strict=True):
        _close(folded, looped, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_state_of_other_names_set_by_on_epoch_fails_in_the_loops_step(dtype: torch.dtype) -> None:
    """``on_epoch`` sets the Adam state to its tensors in the other order: the folded step
    declines it and the loop runs the next batch, whose ``step`` refuses it after its backward,
    leaving that batch's gradients; the error, the parameters and the gradients are the loop's
    (a folded step raising the refusal itself, before the batch, would leave the last
    epoch's gradients)."""
    x, y = _data(dtype)
    errors, results = {}, {}
    for fold in (True, False):
        model = nn.mlp((3, 5, 3), "tanh", dtype=dtype, generator=torch.Generator().manual_seed(1))
        optimizer = optim.Adam(model.parameters(), 0.01)

        def on_epoch(record: object, optimizer: optim.Optimizer = optimizer) -> None:
            optimizer.state = dict(reversed(optimizer.state.items()))

        calls = [0]
        context = _counting(calls) if fold else unfolded()
        with context, pytest.raises(ValueError) as error:
            fit(
                model,
                nn.CrossEntropyLoss(),
                optimizer,
                x,
                y,
                epochs=2,
                batch_size=10,
                generator=torch.Generator().manual_seed(2),
                on_epoch=on_epoch,
            )
        if fold:
            assert calls[0] == 4  # (the first epoch folded)
        errors[fold] = str(error.value)
        results[fold] = [t.clone() for p in model.parameters() for t in (p.data, p.grad)]
    assert errors[True] == errors[False]
    assert errors[True].startswith("Adam.step: state holds ('exp_avg_sq', 'exp_avg')")
    for folded, looped in zip(results[True], results[False], strict=True):
        _close(folded, looped, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_data_given_another_dtype_through_data_is_refused_on_a_second_call(
    dtype: torch.dtype,
) -> None:
    """After a folded call, ``x.data`` is assigned the data in the other float dtype (no
    version counter moves, the shape is the same): the second call must refuse it as the
    loop does, with the layer's ``TypeError`` naming both dtypes, the parameters left as the
    first call left them, rather than copy it into the kept step's buffers and train."""
    other = torch.float32 if dtype is torch.float64 else torch.float64
    errors, results = {}, {}
    for fold in (True, False):
        x, y = _data(dtype)
        model = nn.mlp((3, 5, 3), "tanh", dtype=dtype, generator=torch.Generator().manual_seed(1))
        criterion, optimizer_ = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1)
        calls = [0]
        context = _counting(calls) if fold else unfolded()
        with context:
            generator = torch.Generator().manual_seed(2)
            fit(model, criterion, optimizer_, x, y, epochs=1, batch_size=10, generator=generator)
            before = [p.data.clone() for p in model.parameters()]
            x.data = x.data.to(other)
            with pytest.raises(TypeError) as error:
                fit(
                    model, criterion, optimizer_, x, y, epochs=1, batch_size=10, generator=generator
                )
        if fold:
            assert calls[0] == 4  # (the first call's 4 batches only)
        errors[fold] = str(error.value)
        results[fold] = [p.data.clone() for p in model.parameters()]
        for now, then in zip(results[fold], before, strict=True):
            assert torch.equal(now, then)
    assert errors[True] == errors[False]
    assert errors[True].startswith(
        f"Linear: input dtype {other} does not match the parameters' dtype {dtype}"
    )
    for folded, looped in zip(results[True], results[False], strict=True):
        _close(folded, looped, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_non_finite_gradient_is_scaled_by_fits_clipping_as_by_the_loops(
    dtype: torch.dtype,
) -> None:
    """``fit(..., max_grad_norm=...)`` clips as ``clip_grad_norm_`` with its default
    ``error_if_nonfinite=False``: a sample with an infinite feature makes a batch's gradient
    norm non-finite, and the gradients are scaled by it (made NaN), not refused; the folded
    step must not raise where the loop goes on, and must leave the same parameters and
    losses (NaN where the loop's are)."""
    x, y = _data(dtype)
    x[17, 1] = float("inf")
    results = {}
    for fold in (True, False):
        model = nn.mlp((3, 5, 3), "tanh", dtype=dtype, generator=torch.Generator().manual_seed(1))
        optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.9)
        calls = [0]
        context = _counting(calls) if fold else unfolded()
        with context:
            history = fit(
                model,
                nn.CrossEntropyLoss(),
                optimizer,
                x,
                y,
                epochs=2,
                batch_size=10,
                generator=torch.Generator().manual_seed(2),
                max_grad_norm=0.5,
            )
        if fold:
            assert calls[0] == 8  # (2 epochs of 4 batches, folded)
        tensors = [t.clone() for p in model.parameters() for t in (p.data, p.grad)]
        results[fold] = (tensors, history.train_loss)
    (folded, folded_losses), (looped, looped_losses) = results[True], results[False]
    assert any(bool(t.isnan().any()) for t in looped)  # (the case this test is about)
    for a, b in zip(folded, looped, strict=True):
        assert torch.equal(a.isnan(), b.isnan())
        _close(a.nan_to_num(), b.nan_to_num(), dtype)
    assert len(folded_losses) == len(looped_losses) == 2
    for a_loss, b_loss in zip(folded_losses, looped_losses, strict=True):
        assert math.isnan(a_loss) == math.isnan(b_loss)


@pytest.mark.parametrize("dropped", ["optimizer", "loss"])
def test_the_folded_step_is_freed_once_its_optimizer_or_its_loss_is_dropped(dropped: str) -> None:
    """A program that keeps the model (to predict with it) and the loss but drops the optimizer
    (or keeps the optimizer and drops the loss): the folded step kept for the model, of no use
    without either, is freed with its buffers at once, not held until the model goes."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, dtype=torch.float64, generator=generator)
    y = torch.randint(0, 3, (20,), generator=generator)
    model = nn.mlp(
        (3, 5, 3), "tanh", dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    criterion: nn.Loss | None = nn.CrossEntropyLoss()
    optimizer: optim.Optimizer | None = optim.SGD(model.parameters(), 0.1)
    assert criterion is not None and optimizer is not None
    fit(model, criterion, optimizer, x, y, epochs=1, batch_size=10)
    step = FoldedStep.kept(model, criterion, optimizer, x, y)
    assert step is not None  # (fit folded its steps)
    reference = weakref.ref(step)
    del step
    if dropped == "optimizer":
        optimizer = None
    else:
        criterion = None
    gc.collect()
    assert reference() is None
    assert criterion is not None or optimizer is not None  # (the other one lives on)


def test_a_second_call_with_another_loss_kept_alive_trains_with_the_second_loss() -> None:
    """A program that holds two losses (the first still alive, so the step made for it is
    still kept for the model) trains with the first, then calls ``fit`` again with the second
    (a summed cross-entropy): the second call trains under the loss it was given, its
    parameters, gradients and losses those of the step-by-step loop, to rounding."""
    x, y = _data(torch.float64)
    runs = {}
    for fold in (True, False):
        model = nn.mlp(
            (3, 5, 3), "tanh", dtype=torch.float64, generator=torch.Generator().manual_seed(1)
        )
        first, second = nn.CrossEntropyLoss(), nn.CrossEntropyLoss(reduction="sum")
        optimizer = optim.SGD(model.parameters(), 0.01, momentum=0.9)
        with contextlib.nullcontext() if fold else unfolded():
            fit(model, first, optimizer, x, y, epochs=1, batch_size=10,
                generator=torch.Generator().manual_seed(0))  # fmt: skip
            history = fit(model, second, optimizer, x, y, epochs=2, batch_size=10,
                          generator=torch.Generator().manual_seed(1))  # fmt: skip
        runs[fold] = (model, history.train_loss, second.backward())
    (model, losses, gradient), (twin, twin_losses, twin_gradient) = runs[True], runs[False]
    assert losses == pytest.approx(twin_losses, rel=1e-12, abs=0)
    _close(gradient, twin_gradient, torch.float64)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        _close(p.data, q.data, torch.float64)
        _close(p.grad, q.grad, torch.float64)


def _model() -> nn.Sequential:
    return nn.mlp((3, 5, 3), "tanh", dtype=F64, generator=torch.Generator().manual_seed(1))


def _side_by_side(data: int, state: int, data_first: bool, overlap: int) -> tuple[Tensor, Tensor]:
    """A float64 tensor of ``data`` entries and one of ``state`` entries, each on a storage of
    its own, the two storages side by side in memory (the data's first or the state's: one
    starts at the very byte where the other ends), or overlapping by ``overlap`` entries."""
    whole = torch.zeros(data + state, dtype=F64).untyped_storage()
    size = F64.itemsize
    first, second = (data, state) if data_first else (state, data)
    before = whole[0 : first * size]
    after = whole[(first - overlap) * size : (first - overlap + second) * size]
    a = torch.empty(0, dtype=F64).set_(before, 0, (first,), (1,))
    b = torch.empty(0, dtype=F64).set_(after, 0, (second,), (1,))
    assert a.untyped_storage().data_ptr() + first * size - overlap * size == (
        b.untyped_storage().data_ptr()
    )
    return (a, b) if data_first else (b, a)


@pytest.mark.parametrize("data_first", [True, False], ids=["data first", "state first"])
def test_data_right_beside_the_optimizers_state_is_folded(data_first: bool) -> None:
    """The data's storage and the momentum buffer's lie side by side in memory, one starting
    at the very byte where the other ends: they share no memory, so ``fit`` folds, and trains
    as the loop (the data left as it was); data whose storage runs one entry into the
    buffer's is declined (see ``_apart``: the two address ranges are half-open)."""
    x, y = _data(F64)
    results = {}
    for fold in (True, False):
        model = _model()
        optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.9)
        size = optimizer.state["momentum_buffer"].numel()
        data, velocity = _side_by_side(x.numel(), size, data_first, overlap=0)
        data.copy_(x.flatten())
        optimizer.state["momentum_buffer"] = velocity
        inputs = data.view(x.shape)
        criterion = nn.CrossEntropyLoss()
        calls = [0]
        with _counting(calls) if fold else unfolded():
            fit(model, criterion, optimizer, inputs, y, epochs=2, batch_size=10,
                generator=torch.Generator().manual_seed(2))  # fmt: skip
        assert calls[0] == (8 if fold else 0)
        assert torch.equal(inputs, x)
        results[fold] = [p.data.clone() for p in model.parameters()] + [
            optimizer.state["momentum_buffer"].clone()
        ]
    for folded, looped in zip(results[True], results[False], strict=True):
        _close(folded, looped, F64)
    model = _model()
    optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.9)
    size = optimizer.state["momentum_buffer"].numel()
    data, velocity = _side_by_side(x.numel(), size, data_first, overlap=1)
    optimizer.state["momentum_buffer"] = velocity
    assert FoldedStep.build(model, nn.CrossEntropyLoss(), optimizer, data.view(x.shape), y) is None


def test_an_optimizer_narrowed_to_the_first_layer_between_calls_trains_that_layer_alone() -> None:
    """After a folded call, ``optimizer.params`` is narrowed to the first layer's weight and
    bias (the other layers frozen, a list the optimizer takes at its next step): the step kept
    for the model no longer fits the optimizer, and the second call trains as the loop, the
    first layer alone, the others left as the first call left them (a kept step used anyway
    raised an ``IndexError`` from its copy of the parameters)."""
    x, y = _data(F64)
    results = {}
    for fold in (True, False):
        model = _model()
        optimizer = optim.SGD(model.parameters(), 0.1)  # (no state, which holds every entry)
        criterion = nn.CrossEntropyLoss()
        with contextlib.nullcontext() if fold else unfolded():
            fit(model, criterion, optimizer, x, y, epochs=1, batch_size=10,
                generator=torch.Generator().manual_seed(2))  # fmt: skip
            frozen = [p.data.clone() for p in model[2].parameters()]
            first = [p.data.clone() for p in model[0].parameters()]
            optimizer.params = optimizer.params[:2]
            fit(model, criterion, optimizer, x, y, epochs=1, batch_size=10,
                generator=torch.Generator().manual_seed(3))  # fmt: skip
        for now, then in zip(model[2].parameters(), frozen, strict=True):
            assert torch.equal(now.data, then)
        for now, then in zip(model[0].parameters(), first, strict=True):
            assert not torch.equal(now.data, then)
        results[fold] = [p.data.clone() for p in model.parameters()]
    for folded, looped in zip(results[True], results[False], strict=True):
        _close(folded, looped, F64)


def test_a_model_its_loss_and_its_optimizer_collected_together_raise_nothing() -> None:
    """A model trained folded, its loss and its optimizer, held in a reference cycle (a list
    that holds itself), are collected together by the garbage collector: the step's weak
    references to the loss and the optimizer call back once the model is gone (the step,
    held by the module's table until then, is no garbage itself), and must do nothing, not
    fail inside the callback (an error there can only be printed, "Exception ignored")."""
    x, y = _data(F64)
    model = _model()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), 0.1)
    calls = [0]
    with _counting(calls):
        fit(model, criterion, optimizer, x, y, epochs=1, batch_size=10)
    assert calls[0] == 4
    bundle: list[object] = [model, criterion, optimizer]
    bundle.append(bundle)
    gone = weakref.ref(model)
    del model, criterion, optimizer, bundle
    ignored: list[object] = []
    with mock.patch.object(sys, "unraisablehook", ignored.append):
        gc.collect()
    assert gone() is None
    assert ignored == []


# -- a third pass of mutation testing over folded and chain (2026-12-07) ------------------------


def _class_data(samples: int = 50, features: int = 3, classes: int = 3) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, features, generator=generator, dtype=F64)
    y = torch.randint(0, classes, (samples,), generator=generator)
    return x, y


def _near(a: Tensor, b: Tensor, tolerance: float = 1e-12) -> None:
    scale = max(1.0, float(b.abs().max()))
    error = float((a - b).abs().max())
    assert error <= tolerance * scale, f"differs by {error:g} (scale {scale:g})"


def _chain_of(*modules: nn.Module) -> nn.Sequential:
    return nn.Sequential(*modules)


def _linear(i: int, o: int, seed: int) -> nn.Linear:
    return nn.Linear(i, o, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _two_layers_then_more() -> nn.Sequential:
    # Linear, Linear (at index 1, not last), Tanh, Linear
    return _chain_of(_linear(3, 4, 1), _linear(4, 5, 2), nn.Tanh(), _linear(5, 3, 3))


def test_a_second_layer_right_after_the_first_passes_its_input_gradient_back() -> None:
    """A layer at index 1 (right after the first layer, not the last) computes its input
    gradient ``W^T G``, which the first layer's weight gradient reads: trained folded, the
    first layer moves as under the loop."""
    x, y = _class_data()
    runs = []
    for fold in (True, False):
        model = _two_layers_then_more()
        optimizer = optim.SGD(model.parameters(), 0.1)
        calls = [0]
        original = FoldedStep.__call__

        def counting(
            self: FoldedStep,
            xb: Tensor,
            yb: Tensor,
            calls: list[int] = calls,
            original: Any = original,
        ) -> Tensor:
            calls[0] += 1
            return original(self, xb, yb)

        with mock.patch.object(FoldedStep, "__call__", counting), _folded_or_not(fold):
            fit(
                model,
                nn.CrossEntropyLoss(),
                optimizer,
                x,
                y,
                epochs=3,
                batch_size=10,
                generator=torch.Generator().manual_seed(5),
            )
        assert calls[0] == (15 if fold else 0)
        runs.append(model)
    for p, q in zip(runs[0].parameters(), runs[1].parameters(), strict=True):
        _near(p.data, q.data)
        _near(p.grad, q.grad)


def _interrupt_before_the_first_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C that comes as fit enters its training (fit defers it to the first step's
    start, where it is raised before any step is taken), folded or not."""
    import contextlib

    import minidl.train

    original = minidl.train.deferring_interrupts

    @contextlib.contextmanager
    def deferring(*args: Any, **options: Any) -> Any:
        with original(*args, **options) as deferred:
            signal.raise_signal(signal.SIGINT)
            yield deferred

    monkeypatch.setattr(minidl.train, "deferring_interrupts", deferring)


def _folded_or_not(fold: bool) -> Any:
    import contextlib

    return contextlib.nullcontext() if fold else unfolded()


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "loop"])
def test_an_interrupt_before_the_first_step_leaves_zero_gradients_on_a_fresh_model(
    monkeypatch: pytest.MonkeyPatch, fold: bool
) -> None:
    """Interrupted before its first step, a fit leaves the parameters, their gradients and the
    optimizer's state as they were (no step, no zero_grad): on a fresh model, its values and
    zeros. The folded step stores its gradient buffer back, which must then hold zeros."""
    x, y = _class_data()
    model = _two_layers_then_more()
    optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    before = [p.data.clone() for p in model.parameters()]
    assert all(torch.equal(p.grad, torch.zeros_like(p.grad)) for p in model.parameters())
    _interrupt_before_the_first_step(monkeypatch)
    with _folded_or_not(fold), pytest.raises(KeyboardInterrupt):
        fit(model, criterion, optimizer, x, y, epochs=2, batch_size=10)
    assert (FoldedStep.kept(model, criterion, optimizer, x, y) is not None) is fold
    assert optimizer.step_count == 0
    for p, value in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.data, value)
        assert torch.equal(p.grad, torch.zeros_like(p.grad))
    buffer = optimizer.state["momentum_buffer"]
    assert torch.equal(buffer, torch.zeros_like(buffer))


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "loop"])
def test_an_interrupt_before_the_first_step_leaves_the_gradients_as_they_were(
    monkeypatch: pytest.MonkeyPatch, fold: bool
) -> None:
    """The loop, interrupted before its first step (no zero_grad run), leaves the parameters'
    gradients as they were (here: set by a backward before fit, then zeroed by hand after a fit
    that kept its folded step); the folded step's store() wrote its own gradient buffer over
    them (zeros on a new step, the last call's gradients on a kept one), which it now loads
    from the parameters first. The loop's case is the oracle."""
    x, y = _class_data()
    model = _two_layers_then_more()
    optimizer = optim.SGD(model.parameters(), 0.1)
    criterion = nn.CrossEntropyLoss()
    criterion(model(x[:10]), y[:10])
    model.backward_parameters(criterion.backward())
    grads = [p.grad.clone() for p in model.parameters()]
    assert any(bool(g.abs().max() > 0) for g in grads)
    _interrupt_before_the_first_step(monkeypatch)
    with _folded_or_not(fold), pytest.raises(KeyboardInterrupt):
        fit(model, criterion, optimizer, x, y, epochs=2, batch_size=10)
    assert (FoldedStep.kept(model, criterion, optimizer, x, y) is not None) is fold
    assert optimizer.step_count == 0
    for p, g in zip(model.parameters(), grads, strict=True):
        assert torch.equal(p.grad, g)
    # (a call that kept its step, the gradients then zeroed by hand, and a call interrupted)
    monkeypatch.undo()
    with _folded_or_not(fold):
        fit(model, criterion, optimizer, x, y, epochs=1, batch_size=10)
    optimizer.zero_grad()
    _interrupt_before_the_first_step(monkeypatch)
    with _folded_or_not(fold), pytest.raises(KeyboardInterrupt):
        fit(model, criterion, optimizer, x, y, epochs=2, batch_size=10)
    assert optimizer.step_count == 5
    assert all(torch.equal(p.grad, torch.zeros_like(p.grad)) for p in model.parameters())
