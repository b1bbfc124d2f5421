"""minidl.train outside fit's epoch loop, as a mutation audit found it untested: EpochRecord's
hash of NaNs, eval_mode's note on a failed restore, predict over several batches, error_rate's
refusal of scores of more than two dimensions, and the backward_parameters set on a model's
instance that fit's step calls. Each test checks a value, the exact refusal or the state after
it, and fails on a mutant of the source that the rest of the suite let pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.nn.linear import Linear
from minidl.nn.sequential import Sequential
from minidl.train import EpochRecord, error_rate, eval_mode, fit, predict

F64 = torch.float64


def test_records_with_distinct_nan_objects_hash_alike() -> None:
    """Records equal up to NaNs hash alike even where each NaN is another float object (two
    runs without a validation set each make their own ``float('nan')``): Python hashes a NaN
    by its identity, so a set of the records of two identical runs held both."""
    first = EpochRecord(epoch=0, train_loss=1.0, lr=0.1, validation_error=float("nan"))
    second = EpochRecord(epoch=0, train_loss=1.0, lr=0.1, validation_error=float("nan"))
    assert first.validation_error is not second.validation_error
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1


class _Picky(nn.Module):
    """A module whose ``train(True)`` override raises before it sets its mode."""

    def train(self, mode: bool = True) -> _Picky:
        if mode:
            raise RuntimeError("train(True) failed")
        return super().train(mode)

    def forward(self, input: Tensor) -> Tensor:
        return input

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


def test_eval_mode_notes_a_failed_mode_restore_on_the_blocks_own_error() -> None:
    """Where the block raises and giving a module its mode back fails too, the block's error
    reaches the caller (not the override's) with a note naming the override's error, and every
    module is back in training mode: the note is all that tells the model's modes were not
    restored by its own method."""
    model = nn.Sequential(nn.Linear(2, 2), _Picky())
    with pytest.raises(KeyError) as raised, eval_mode(model):
        raise KeyError("block")
    assert raised.value.args == ("block",)
    assert getattr(raised.value, "__notes__", None) == [
        "giving the modules their modes back then failed: RuntimeError('train(True) failed')"
    ]
    assert [module.training for module in model.modules()] == [True] * 3


def test_predict_in_several_batches_gives_a_sample_with_nan_scores_no_class() -> None:
    """Over several batches (the last one shorter) a row of scores holding a NaN is class -1
    as in one batch, and every other row its argmax: the batched path is the single batch's,
    sample for sample (argmax alone named class 0 for the NaN row)."""
    torch.manual_seed(0)
    model = nn.Linear(2, 3, dtype=F64)
    x = torch.randn(5, 2, dtype=F64)
    x[3, 0] = float("nan")
    expected = model(x).argmax(dim=1)
    expected[3] = -1
    assert predict(model, x, batch_size=2).tolist() == expected.tolist()
    assert predict(model, x).tolist() == expected.tolist()


class _Twice(nn.Module):
    """Scores ``(N, 2, C)``: each sample's scores twice (a sequence model's per-step scores)."""

    def forward(self, input: Tensor) -> Tensor:
        return torch.stack([input, input], dim=1)

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output.sum(dim=1)


def test_error_rate_refuses_scores_of_more_than_two_dimensions() -> None:
    """error_rate compares one class a sample with ``y``: scores ``(N, T, C)``, which predict
    takes (a class per step), are refused in error_rate's name, not compared with ``y`` by
    broadcasting (``(N, T)`` against ``(N,)``: a silent rate over N * T pairs of the wrong
    samples, or torch's error); the modes are restored."""
    model = nn.Sequential(_Twice())
    x = torch.tensor([[0.0, 1.0], [2.0, 1.0]])
    y = torch.tensor([1, 1])
    assert predict(model, x).tolist() == [[1, 1], [0, 0]]
    with pytest.raises(ValueError) as raised:
        error_rate(model, x, y)
    assert str(raised.value) == (
        "error_rate: the model's outputs must be class scores (N, C) for N = 2 samples, got "
        "shape (2, 2, 2)"
    )
    assert model.training


def test_fit_calls_a_backward_parameters_set_on_the_model_whatever_its_first_layer_has() -> None:
    """A ``backward_parameters`` set on the model's instance is what fit's step calls, even
    where the first trained layer below has a ``backward`` of its own set on its instance (which
    alone would make fit call the model's ``backward``): the instance's method decides, run
    once a batch with the loss's gradient."""
    torch.manual_seed(0)
    model = nn.mlp((2, 3, 2), "tanh", dtype=F64)
    first = model[0]
    assert isinstance(first, Linear)
    calls: list[str] = []

    def backward_parameters(gradient: Tensor) -> None:
        calls.append("model.backward_parameters")
        Sequential.backward_parameters(model, gradient)

    def backward(gradient: Tensor) -> Tensor:
        calls.append("first.backward")
        return Linear.backward(first, gradient)

    model.backward_parameters = backward_parameters  # type: ignore[method-assign, assignment]
    first.backward = backward  # type: ignore[method-assign, assignment]
    x, y = torch.randn(8, 2, dtype=F64), torch.tensor([0, 1] * 4)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=4)
    assert calls.count("model.backward_parameters") == 2


def test_a_per_epoch_schedule_is_weighed_against_its_step_limit_by_epochs() -> None:
    """A OneCycle stepped once an epoch (``interval = "epoch"``) built for 5 steps trains 5
    epochs of 4 batches, its rates those of torch's OneCycleLR stepped once an epoch (they are
    not 20 steps, which a count of every batch would have refused); a sixth epoch is refused
    before training, in epochs, the model left as it was."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 2, dtype=F64), torch.tensor([0, 1] * 8)
    model = nn.mlp((2, 3, 2), "tanh", dtype=F64)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    schedule = optim.OneCycle(optimizer, max_lr=0.5, total_steps=5)
    schedule.interval = "epoch"
    history = fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=5, batch_size=4,
                  scheduler=schedule)  # fmt: skip
    twin = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    theirs = torch.optim.lr_scheduler.OneCycleLR(twin, max_lr=0.5, total_steps=5)
    rates = []
    for epoch in range(5):
        rates.append(twin.param_groups[0]["lr"])
        twin.step()
        if epoch < 4:  # (OneCycleLR refuses a step past total_steps)
            theirs.step()
    assert history.lr == pytest.approx(rates, rel=1e-12)
    assert len(set(rates)) == 5
    model = nn.mlp((2, 3, 2), "tanh", dtype=F64)
    before = [p.data.clone() for p in model.parameters()]
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    schedule = optim.OneCycle(optimizer, max_lr=0.5, total_steps=5)
    schedule.interval = "epoch"
    with pytest.raises(ValueError) as raised:
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=6, batch_size=4,
            scheduler=schedule)  # fmt: skip
    assert str(raised.value) == (
        "fit: the scheduler OneCycle has rates up to step 5 and is at step 0, but 6 epochs "
        "would step it 6 times (to step 6); build it for the whole training (e.g. OneCycle's "
        "total_steps = epochs * batches per epoch)"
    )
    assert all(torch.equal(p.data, b) for p, b in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize("value", [np.int64(1), np.float64(0.0)], ids=["int64", "float64"])
def test_on_epoch_returning_a_numpy_number_is_refused(value: object) -> None:
    """``on_epoch`` returning a NumPy number that is no bool (a count, a metric) is refused
    after the first epoch, naming its type, as a Python int is: not taken as "stop" or "go on"
    by its truth."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 2, dtype=F64), torch.tensor([0, 1] * 4)
    model = nn.mlp((2, 3, 2), "tanh", dtype=F64)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError) as raised:
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=3, batch_size=4,
            on_epoch=lambda record: value)  # fmt: skip
    assert str(raised.value) == (
        "fit: on_epoch must return None or a bool (True stops the training after its epoch; a "
        f"tensor of one bool too), got {type(value).__name__}"
    )
