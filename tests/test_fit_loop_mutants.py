"""Tests that a third mutation audit of fit's training loop (minidl/train.py) found missing,
after tests/test_fit_mutants.py: on_epoch outside inference mode, the note on a gradient the
model refuses for its dtype, a stop that ends the run before the rechecks of the sets, the rate
check made against the parameters' own dtype, and drop_last leaving no batch. Each fails with a
small change of train.py that the suite missed; fit is checked against a loop written out by
hand, bit for bit in float64."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.data import BatchIterator
from minidl.train import fit
from tests.helpers import F64, unfolded


def _set(samples: int = 20) -> tuple[Tensor, Tensor]:
    """A float64 training set of ``samples`` points of 3 features and 3 classes."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 3, generator=generator, dtype=F64)
    return x, torch.randint(0, 3, (samples,), generator=generator)


def _model() -> nn.Sequential:
    return nn.mlp((3, 5, 3), "tanh", dtype=F64, generator=torch.Generator().manual_seed(1))


def _parameters(model: nn.Module) -> list[Tensor]:
    return [parameter.data.clone() for parameter in model.parameters()]


def test_what_on_epoch_keeps_is_an_ordinary_tensor_outside_inference_mode() -> None:
    """on_epoch runs outside fit's ``torch.inference_mode()``: a snapshot of the weights it
    keeps (as for the best epoch's) is an ordinary tensor, which the caller may change in
    place after fit (an inference tensor refuses that outside inference mode), and the
    snapshots hold each epoch's weights."""
    x, y = _set()
    model = _model()
    first = model[0]
    assert isinstance(first, nn.Linear)
    snapshots: list[Tensor] = []
    modes: list[bool] = []

    def keep(record: object) -> None:
        modes.append(torch.is_inference_mode_enabled())
        snapshots.append(first.weight.data.clone())

    with unfolded():
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.5), x, y,
            epochs=2, batch_size=5, generator=torch.Generator().manual_seed(2),
            on_epoch=keep)  # fmt: skip
    assert modes == [False, False]
    assert not any(snapshot.is_inference() for snapshot in snapshots)
    assert torch.equal(snapshots[1], first.weight.data)
    snapshots[0].mul_(0.0)  # (refused for an inference tensor)
    assert not snapshots[0].any()


class _WideGradient(nn.Loss):
    """A loss of one's own (a mean square to the one-hot rows) whose gradient is float64 for a
    float32 prediction: the model's last layer refuses it with a TypeError."""

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        self.difference = prediction - torch.eye(prediction.shape[1])[target]
        return (self.difference**2).mean()

    def _gradient(self) -> Tensor:
        return (2 * self.difference / self.difference.numel()).to(F64)


def test_a_gradient_of_another_dtype_refused_by_the_model_names_the_loss_that_made_it() -> None:
    """The model's refusal of the loss's gradient is a TypeError where its dtype is not the
    parameters' (a ValueError for its shape): fit notes where the gradient came from, the loss
    and both dtypes, as it does for a shape, and the first step was not taken (the parameters
    and the optimizer's step count as they were)."""
    model = nn.Sequential(
        nn.Linear(2, 3, generator=torch.Generator().manual_seed(1)),
        nn.Tanh(),
        nn.Linear(3, 2, generator=torch.Generator().manual_seed(2)),
    )
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    before = _parameters(model)
    with (
        unfolded(),
        pytest.raises(TypeError, match=r"^Linear: gradient dtype torch.float64") as info,
    ):
        fit(model, _WideGradient(), optimizer, x, y, epochs=1, batch_size=8)
    assert info.value.__notes__[-1] == (  # type: ignore[attr-defined]
        "fit gave the model's backward the loss's gradient, _WideGradient.backward(): a "
        "gradient of shape (8, 2), torch.float64, for a prediction of shape (8, 2), "
        "torch.float32"
    )
    assert optimizer.step_count == 0
    for mine, theirs in zip(_parameters(model), before, strict=True):
        assert torch.equal(mine, theirs)


def test_an_on_epoch_that_stops_is_not_refused_for_what_it_left_behind() -> None:
    """The sets that on_epoch changes are checked again only for the epochs still to run: one
    that stops the run (returns True) having shrunk the training set in place and put a label
    out of range in the validation set ends fit normally, its history holding that epoch (the
    hand loop's), where a refusal would have lost it."""
    x, y = _set()
    x_validation, y_validation = _set(7)
    model, twin = _model(), _model()

    def stop(record: object) -> bool:
        x.resize_(10, 3)
        y_validation[0] = 99
        return True

    criterion = nn.CrossEntropyLoss()
    expected_x, expected_y = x.clone(), y.clone()
    with unfolded():
        history = fit(model, criterion, optim.SGD(model.parameters(), lr=0.5), x, y,
                      epochs=3, batch_size=5, validation=(x_validation, y_validation),
                      generator=torch.Generator().manual_seed(2), on_epoch=stop)  # fmt: skip
    assert len(history.train_loss) == 1
    optimizer = optim.SGD(twin.parameters(), lr=0.5)
    losses = []
    twin.train()
    batches = BatchIterator(expected_x, expected_y, 5, generator=torch.Generator().manual_seed(2))
    for x_batch, y_batch in batches:
        optimizer.zero_grad()
        losses.append(float(criterion(twin(x_batch), y_batch)))
        twin.backward(criterion.backward())
        optimizer.step()
    assert history.train_loss == [float(torch.tensor(losses, dtype=F64).sum()) / 4]
    for mine, theirs in zip(_parameters(model), _parameters(twin), strict=True):
        assert torch.equal(mine, theirs)


class _BeyondFloat32(optim.LRScheduler):
    """Per batch, 0.01, then 1e39 from step 2 on (beyond float32's range, within float64's),
    its rate_bound 1e39."""

    _interval = "batch"

    def __init__(self, optimizer: optim.Optimizer) -> None:
        super().__init__(optimizer)
        self._start()

    def lr_at(self, step: int) -> float:
        return 1e39 if step >= 2 else 0.01

    @property
    def rate_bound(self) -> float:
        return 1e39


def test_a_rate_beyond_float32_is_not_refused_for_a_float64_model() -> None:
    """fit refuses, before training, a schedule's rate beyond the largest finite value of the
    parameters' own dtype: 1e39, beyond float32's, is within float64's, which the optimizer
    of a float64 model takes. The run trains as the hand loop (two batches at 0.01), the
    schedule ending at 1e39."""
    x, y = _set(8)
    model, twin = _model(), _model()
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    scheduler = _BeyondFloat32(optimizer)
    criterion = nn.CrossEntropyLoss()
    with unfolded():
        history = fit(model, criterion, optimizer, x, y, epochs=1, batch_size=4,
                      scheduler=scheduler, generator=torch.Generator().manual_seed(2))  # fmt: skip
    assert history.batch_lr == [0.01, 0.01]
    assert scheduler.last_step == 2 and optimizer.lr == 1e39
    twin_optimizer = optim.SGD(twin.parameters(), lr=0.01)
    for x_batch, y_batch in BatchIterator(x, y, 4, generator=torch.Generator().manual_seed(2)):
        twin_optimizer.zero_grad()
        criterion(twin(x_batch), y_batch)
        twin.backward(criterion.backward())
        twin_optimizer.step()
    for mine, theirs in zip(_parameters(model), _parameters(twin), strict=True):
        assert torch.equal(mine, theirs)


def test_drop_last_with_a_batch_one_sample_larger_than_the_set_is_refused_unchanged() -> None:
    """With drop_last, batches of 5 out of 4 samples (the batch size one above the set's, the
    nearest case to a set of one full batch, which trains) leave no batch: fit refuses it in
    its own words before anything changes (the parameters, the optimizer's step count, the
    generator), where an epoch of no batch failed dividing its loss by 0 batches."""
    x, y = _set(4)
    model = _model()
    optimizer = optim.SGD(model.parameters(), lr=0.5)
    generator = torch.Generator().manual_seed(2)
    before, state = _parameters(model), generator.get_state()
    with unfolded(), pytest.raises(ValueError) as info:
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=5,
            drop_last=True, generator=generator)  # fmt: skip
    assert str(info.value) == (
        "fit: with drop_last, batches of 5 leave no batch of the 4 samples; choose a batch_size "
        "<= the number of samples"
    )
    assert optimizer.step_count == 0
    assert torch.equal(generator.get_state(), state)
    for mine, theirs in zip(_parameters(model), before, strict=True):
        assert torch.equal(mine, theirs)
