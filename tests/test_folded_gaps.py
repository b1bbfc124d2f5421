"""fit's folded step (:mod:`minidl.folded`): what a third mutation audit found untested.

The oracle is fit's step-by-step loop (the folded step turned off, as ``tests/helpers.unfolded``
does), which the rest of the suite checks against PyTorch; where the folded step must decline,
the two runs must agree to 1e-12 and the folded step must not be kept or built.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.folded import FoldedStep
from minidl.train import fit
from tests.test_folded import _close, _count_trials, _path

F64 = torch.float64


def _model(sizes: tuple[int, ...] = (3, 3, 3)) -> nn.Sequential:
    return nn.mlp(sizes, "tanh", dtype=F64, generator=torch.Generator().manual_seed(1))


def _assert_alike(run: Callable[[bool], tuple[list[Tensor], list[float]]]) -> None:
    """``run(fold)``, the parameters and epoch losses of a fit folded or step by step: the
    two agree to 1e-12."""
    folded, loop = run(True), run(False)
    for a, b in zip(folded[0], loop[0], strict=True):
        _close(a, b)
    assert folded[1] == pytest.approx(loop[1], rel=1e-12, abs=0)


def _data(samples: int = 12) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 3, generator=generator, dtype=F64)
    return x, torch.randint(0, 3, (samples,), generator=generator)


# -- a kept step whose parameters' tensors were moved to a new flat buffer --------------------


@pytest.mark.parametrize("moved", ["values", "gradients"])
def test_data_over_parameters_moved_to_a_new_flat_buffer_is_declined_by_the_kept_step(
    moved: str,
) -> None:
    """Between two calls every parameter's value (or gradient) tensor is moved into a new flat
    buffer (still one buffer: the optimizer's ``_flat_buffers`` finds it), and the next call's
    ``x`` lies over that new memory. The step kept from the first call holds the old tensors
    and their old address ranges: it must not be kept (``_tensors_held`` compares the value
    and the gradient tensors), and no step is built for data over the parameters' memory, so
    the call trains as the loop (which reads ``x`` changing as the parameters train)."""

    def run(fold: bool) -> tuple[list[Tensor], list[float]]:
        model = _model()
        criterion = nn.CrossEntropyLoss()
        optimizer = optim.SGD(model.parameters(), 0.5, momentum=0.9)
        x0, y0 = _data()
        fit(
            model, criterion, optimizer, x0, y0, epochs=1, batch_size=4,
            generator=torch.Generator().manual_seed(1),
        )  # fmt: skip
        assert FoldedStep.kept(model, criterion, optimizer, x0, y0) is not None
        parameters = list(model.parameters())
        if moved == "values":
            buffer = torch.cat([p.data.reshape(-1) for p in parameters])
        else:
            buffer = torch.cat([p.grad.reshape(-1) for p in parameters])
        offset = 0
        for p in parameters:
            view = buffer[offset : offset + p.numel()].view(p.shape)
            if moved == "values":
                p.data = view
            else:
                p.grad = view
            offset += p.numel()
        assert optimizer._flat_buffers() is not None  # (still one flat buffer)
        x = buffer[:9].view(3, 3)  # (the first weight's memory, or its gradient's)
        y = torch.tensor([0, 1, 2])
        assert FoldedStep.kept(model, criterion, optimizer, x, y) is None
        assert FoldedStep.build(model, criterion, optimizer, x, y) is None
        with _path(fold):
            history = fit(
                model, criterion, optimizer, x, y, epochs=3, batch_size=1,
                generator=torch.Generator().manual_seed(0),
            )  # fmt: skip
        return [p.data.clone() for p in model.parameters()], history.train_loss

    _assert_alike(run)


# -- a state grown by hand between calls -------------------------------------------------------


def test_a_state_tensor_added_by_hand_between_calls_trains_as_the_loop() -> None:
    """Plain SGD (no state) fitted once, folded; then a ``momentum_buffer`` is added by hand
    (``state_names`` and ``state`` set on the instance: plain SGD's update does not read it).
    The step kept from the first call holds no state tensor: it must not be kept (it would
    raise from ``load``'s ``zip(..., strict=True)``), and the second call trains as the loop
    does, the added tensor left as it was."""

    def run(fold: bool) -> tuple[list[Tensor], Tensor]:
        model = _model()
        criterion = nn.CrossEntropyLoss()
        optimizer = optim.SGD(model.parameters(), 0.1)
        x, y = _data()
        with _path(fold):
            fit(
                model, criterion, optimizer, x, y, epochs=1, batch_size=4,
                generator=torch.Generator().manual_seed(1),
            )  # fmt: skip
        size = sum(p.numel() for p in model.parameters())
        optimizer.state_names = ("momentum_buffer",)
        optimizer.state = {"momentum_buffer": torch.linspace(-1, 1, size, dtype=F64)}
        assert FoldedStep.kept(model, criterion, optimizer, x, y) is None
        with _path(fold):
            fit(
                model, criterion, optimizer, x, y, epochs=2, batch_size=4,
                generator=torch.Generator().manual_seed(3),
            )  # fmt: skip
        return [p.data.clone() for p in model.parameters()], optimizer.state["momentum_buffer"]

    folded, loop = run(True), run(False)
    for a, b in zip(folded[0], loop[0], strict=True):
        _close(a, b)
    assert torch.equal(folded[1], loop[1])
    assert torch.equal(folded[1], torch.linspace(-1, 1, len(folded[1]), dtype=F64))


# -- the trial forward and inference targets ---------------------------------------------------


def test_inference_targets_are_never_taken_for_the_ones_probed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``FoldedStep.probed``: an inference tensor keeps no version counter, "so it is never
    taken for the same". The test of ``x`` exists; here ``y`` made in inference mode: every
    call runs the trial forward again (counted through ``eval_mode``, which only the trial uses
    in a fit without validation), as for a new ``y``, while a plain ``y`` skips it."""
    trials = _count_trials(monkeypatch)
    x, y = _data()
    model = _model()
    criterion, optimizer = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1)
    calls = [0]
    call = FoldedStep.__call__

    def counted(self: FoldedStep, *arguments: Any) -> Tensor:
        calls[0] += 1
        return call(self, *arguments)

    monkeypatch.setattr(FoldedStep, "__call__", counted)

    def run(x: Tensor, y: Tensor) -> int:
        before = trials[0]
        fit(model, criterion, optimizer, x, y, epochs=1, batch_size=4)
        return trials[0] - before

    assert run(x, y) == 1
    assert run(x, y) == 0
    with torch.inference_mode():
        y_inference = y.clone()
    assert run(x, y_inference) == 1
    assert run(x, y_inference) == 1
    assert run(x, y_inference) == 1
    assert calls[0] == 5 * 3  # (every call folded)


# -- a state tensor changed by on_epoch past the optimizer's checks ----------------------------


def _spoil_velocity(optimizer: optim.Optimizer, how: str) -> None:
    velocity = optimizer.state["momentum_buffer"]
    if how == "none":
        optimizer.state["momentum_buffer"] = None  # type: ignore[assignment]
    elif how == "bigger through data":
        velocity.data = torch.zeros(len(velocity) + 2, dtype=F64)
    elif how == "resized":
        velocity.resize_(len(velocity) + 2)
    else:  # float32 through data: the same object, of another dtype
        velocity.data = torch.linspace(-1, 1, len(velocity), dtype=torch.float32)


@pytest.mark.parametrize("how", ["none", "bigger through data", "resized", "float32 through data"])
def test_a_velocity_spoiled_by_on_epoch_trains_or_fails_as_the_loop(how: str) -> None:
    """``on_epoch`` replaces the momentum buffer by ``None``, or changes the optimizer's own
    tensor in place (``.data`` of another size or dtype, ``resize_``: the same object, which
    the optimizer's checks of replaced tensors do not ask). The folded step must not go on
    (``_flat`` false: the TypeError of ``_check_state_held`` caught, the shape and the dtype
    compared): the loop runs the next epoch and fails in the optimizer's step, after that
    batch's forward and backward, or trains, as the loop alone does; same error, same
    message, same parameters and gradients."""

    def run(fold: bool) -> tuple[list[Tensor], str]:
        model = _model((3, 4, 3))
        optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.9)
        x, y = _data(8)

        def on_epoch(record: Any) -> None:
            if record.epoch == 0:
                _spoil_velocity(optimizer, how)

        outcome = "trained"
        try:
            with _path(fold):
                fit(
                    model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=2, batch_size=4,
                    on_epoch=on_epoch, generator=torch.Generator().manual_seed(0),
                )  # fmt: skip
        except (TypeError, RuntimeError) as error:
            outcome = f"{type(error).__name__}: {error}"
        tensors = [t.clone() for p in model.parameters() for t in (p.data, p.grad)]
        return tensors, outcome

    (folded, folded_outcome), (loop, loop_outcome) = run(True), run(False)
    assert folded_outcome == loop_outcome
    expected = {
        "none": r"^TypeError: SGD\.step: state 'momentum_buffer' is a NoneType, expected a "
        r"contiguous torch\.float64 tensor of shape \(31,\)",
        "bigger through data": r"^RuntimeError: The size of tensor a \(33\) must match",
        "resized": r"^RuntimeError: The size of tensor a \(33\) must match",
        "float32 through data": r"^trained$",
    }[how]
    assert re.match(expected, loop_outcome), loop_outcome
    for a, b in zip(folded, loop, strict=True):
        _close(a, b)


# -- a model whose class was changed between calls ---------------------------------------------


def test_a_model_given_a_subclass_between_calls_runs_the_subclasss_forward() -> None:
    """A model fitted once (folded, its step kept), whose class is then set to a subclass of
    :class:`~minidl.nn.Sequential` with a ``forward`` of its own: ``build`` declines any model
    that is not exactly a Sequential, so the kept step must not be used either (``kept`` asks
    the model's type); the second call runs the loop, which calls the subclass's forward."""
    seen: list[int] = []

    class Watched(nn.Sequential):
        def forward(self, x: Tensor) -> Tensor:
            seen.append(len(x))
            return super().forward(x)

    model = _model()
    criterion, optimizer = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1)
    x, y = _data(8)
    fit(model, criterion, optimizer, x, y, epochs=1, batch_size=4)
    assert FoldedStep.kept(model, criterion, optimizer, x, y) is not None
    model.__class__ = Watched
    assert FoldedStep.kept(model, criterion, optimizer, x, y) is None
    fit(model, criterion, optimizer, x, y, epochs=1, batch_size=4)
    assert seen.count(4) == 2  # (the two batches' forwards; the trial's is of one sample)


# -- strided data over a storage that holds the parameters further on --------------------------


def test_strided_data_reaching_into_the_parameters_storage_is_declined() -> None:
    """The parameters moved into the tail of a larger buffer (entries 60 to 83 of 100), and
    ``x`` a strided view of that buffer starting at entry 0 whose rows reach entries 64 to 80:
    a tensor's first ``numel`` entries from its start do not show the overlap, its storage's
    range does (``_memory``). No step is built; the fit trains as the loop, which reads ``x``
    changing as the parameters train."""

    def run(fold: bool) -> tuple[list[Tensor], list[float]]:
        model = _model()
        criterion = nn.CrossEntropyLoss()
        optimizer = optim.SGD(model.parameters(), 0.5, momentum=0.9)
        buffer = torch.linspace(-1, 1, 100, dtype=F64)
        offset = 60
        for p in model.parameters():
            view = buffer[offset : offset + p.numel()].view(p.shape)
            view.copy_(p.data)
            p.data = view
            offset += p.numel()
        assert offset == 84 and optimizer._flat_buffers() is not None
        x = buffer[:96].view(4, 24)[:, ::8]  # (entries 24 i + 8 j: 64, 72 and 80 are parameters')
        y = torch.tensor([0, 1, 2, 0])
        assert FoldedStep.build(model, criterion, optimizer, x, y) is None
        with _path(fold):
            history = fit(
                model, criterion, optimizer, x, y, epochs=3, batch_size=1,
                generator=torch.Generator().manual_seed(0),
            )  # fmt: skip
        return [p.data.clone() for p in model.parameters()], history.train_loss

    _assert_alike(run)


# -- a bias moved to another name of its layer by on_epoch -------------------------------------


def test_a_bias_moved_to_another_name_by_on_epoch_goes_on_step_by_step() -> None:
    """``on_epoch`` takes the last layer's bias out (``register_parameter("bias", None)``) and
    registers the same Parameter under another name of that layer: the model's parameters are
    the same objects in the same order (the optimizer's, the step's), but the layer computes
    without a bias from then on. The folded step must not go on (``usable`` asks for every
    layer's bias): the run trains as the loop does (the bias no longer moves)."""

    def run(fold: bool) -> list[Tensor]:
        model = _model()
        optimizer = optim.SGD(model.parameters(), 0.1)
        x, y = _data()

        def on_epoch(record: Any) -> None:
            if record.epoch == 0:
                layer = model[2]
                bias = layer.bias
                layer.register_parameter("bias", None)
                layer.register_parameter("spare", bias)

        with _path(fold):
            fit(
                model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=3, batch_size=4,
                on_epoch=on_epoch, generator=torch.Generator().manual_seed(0),
            )  # fmt: skip
        return [t.clone() for p in model.parameters() for t in (p.data, p.grad)]

    folded, loop = run(True), run(False)
    for a, b in zip(folded, loop, strict=True):
        _close(a, b)
