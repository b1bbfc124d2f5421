"""fit's loop (minidl/train.py) as a second mutation audit found it untested: each test fails
on one small change of train.py that the suite missed (named in its docstring). Oracles: a loop written out by hand with minidl's own steps (float64), exact
messages, and the state compared after a refusal."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.data import BatchIterator
from minidl.train import fit
from tests.helpers import F64


def _set(samples: int = 12) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 3, generator=generator, dtype=F64) * 2
    return x, torch.randint(0, 3, (samples,), generator=generator)


def _model() -> nn.Sequential:
    return nn.mlp((3, 5, 3), "tanh", dtype=F64, generator=torch.Generator().manual_seed(1))


def _flat(model: nn.Module) -> Tensor:
    return torch.cat([p.data.reshape(-1) for p in model.parameters()])


class _Recorded:
    """A sized iterable of the batches of ``batches``, each kept as it is handed out."""

    def __init__(self, batches: BatchIterator, seen: list[tuple[Tensor, Tensor]]) -> None:
        self.batches, self.seen = batches, seen

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x_batch, y_batch in self.batches:
            self.seen.append((x_batch.clone(), y_batch.clone()))
            yield x_batch, y_batch


class _ScalingParallel:
    """A stand-in for DataParallel (fit's Parallel protocol) of one process whose
    ``synchronize`` multiplies every gradient by ``factor`` (as a sum over processes would):
    what fit does after it is told apart from what it does before."""

    world_size = 1

    def __init__(self, model: nn.Module, factor: float) -> None:
        self.model, self.factor = model, factor
        self.seen: list[tuple[Tensor, Tensor]] = []

    def shard(self, batches: BatchIterator) -> _Recorded:
        return _Recorded(batches, self.seen)

    def synchronize(self, loss: Tensor) -> Tensor:
        for parameter in self.model.parameters():
            parameter.grad.mul_(self.factor)
        return loss

    def reduce_loss(self, total: Tensor) -> Tensor:
        return total


def test_with_parallel_the_synchronized_gradients_are_clipped() -> None:
    """Mutant clip-before-sync (clip_grad_norm_ moved before parallel.synchronize): fit clips
    the global batch's gradients (those synchronize made), as documented, bit for bit as the
    hand loop; clipping first left them ``factor`` times the limit."""
    x, y = _set()
    model, reference = _model(), _model()
    parallel = _ScalingParallel(model, 4.0)
    optimizer = optim.SGD(model.parameters(), lr=0.3)
    fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=2, batch_size=4,
        generator=torch.Generator().manual_seed(2), parallel=parallel,
        max_grad_norm=0.05)  # fmt: skip
    assert len(parallel.seen) == 6
    criterion = nn.CrossEntropyLoss()
    reference_optimizer = optim.SGD(reference.parameters(), lr=0.3)
    clipped = 0
    with torch.inference_mode():
        for x_batch, y_batch in parallel.seen:
            reference_optimizer.zero_grad()
            criterion(reference(x_batch), y_batch)
            reference.backward_parameters(criterion.backward())
            for parameter in reference.parameters():
                parameter.grad.mul_(4.0)
            clipped += float(nn.clip_grad_norm_(reference.parameters(), 0.05)) > 0.05
            reference_optimizer.step()
    assert clipped == 6  # (the clipping is what is compared)
    assert torch.equal(_flat(model), _flat(reference))


class _OnSecond(nn.Module):
    """A module of one's own that subtracts the second sample (an IndexError on one), its
    output given a trailing dimension of 1 when ``column``."""

    def __init__(self, column: bool = False) -> None:
        super().__init__()
        self.column = column

    def forward(self, x: Tensor) -> Tensor:
        out = x - x[1]
        return out.unsqueeze(-1) if self.column else out

    def backward(self, grad_output: Tensor) -> Tensor:
        grad = (grad_output.squeeze(-1) if self.column else grad_output).clone()
        grad[1] -= grad.sum(0)
        return grad


def test_a_module_that_needs_two_samples_trains_on_batches_of_two() -> None:
    """Mutant trial-size-gt2 (the first batch tried only when it holds more than 2 samples):
    a module refused on one sample is tried on the first batch of 2, which it takes, and the
    run trains bit for bit as the hand loop."""
    x, y = _set()

    def build() -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(3, 4, dtype=F64, generator=torch.Generator().manual_seed(1)),
            _OnSecond(),
            nn.Tanh(),
            nn.Linear(4, 3, dtype=F64, generator=torch.Generator().manual_seed(2)),
        )

    model, twin = build(), build()
    criterion = nn.CrossEntropyLoss()
    history = fit(model, criterion, optim.SGD(model.parameters(), lr=0.1), x, y, epochs=1,
                  batch_size=2, generator=torch.Generator().manual_seed(5))  # fmt: skip
    twin_optimizer = optim.SGD(twin.parameters(), lr=0.1)
    losses: list[float] = []
    with torch.inference_mode():
        for x_batch, y_batch in BatchIterator(x, y, 2, generator=torch.Generator().manual_seed(5)):
            twin_optimizer.zero_grad()
            losses.append(float(criterion(twin(x_batch), y_batch)))
            twin.backward(criterion.backward())
            twin_optimizer.step()
    assert history.train_loss == [float(torch.tensor(losses, dtype=F64).sum()) / 6]
    assert torch.equal(_flat(model), _flat(twin))


def test_a_validation_set_for_outputs_that_are_no_scores_names_one_samples_shape() -> None:
    """Mutant outputs-full-shape (the trial's whole output shape named): where the trial fell
    back to the first batch (a module that takes no single sample), the refusal of a
    validation set for outputs that are no class scores still names the outputs of one
    sample, (1, 3, 1), not the batch's (4, 3, 1); nothing trained."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, generator=generator, dtype=F64)
    y = torch.randn(8, 3, 1, generator=generator, dtype=F64)
    model = nn.Sequential(
        nn.Linear(3, 3, dtype=F64, generator=torch.Generator().manual_seed(1)),
        _OnSecond(column=True),
    )
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    before = _flat(model).clone()
    with pytest.raises(
        ValueError,
        match=r"^fit: a validation set needs a model whose outputs are class scores \(N, C\), "
        r"got \(1, 3, 1\) for one sample$",
    ):
        fit(model, nn.MSELoss(), optimizer, x, y, epochs=1, batch_size=4,
            validation=(x, torch.zeros(8, dtype=torch.int64)))  # fmt: skip
    assert torch.equal(_flat(model), before)
    assert optimizer.step_count == 0


def test_a_batch_norm_refused_for_a_last_batch_of_one_of_batches_of_two_names_it() -> None:
    """Mutant bs1-msg-branch (batch_size <= 2 taken for batch_size 1): 5 samples in batches of
    2 end each epoch with a batch of 1, which drop_last would skip: the refusal says so, not
    that every batch holds 1 sample; nothing trained."""
    x, y = _set(5)
    model = nn.Sequential(
        nn.Linear(3, 4, dtype=F64, generator=torch.Generator().manual_seed(1)),
        nn.BatchNorm1d(4, dtype=F64),
        nn.Tanh(),
        nn.Linear(4, 3, dtype=F64, generator=torch.Generator().manual_seed(2)),
    )
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    before = _flat(model).clone()
    with pytest.raises(
        ValueError,
        match=r"^fit: every epoch would end with a batch of 1 sample \(5 samples, batches of 2\), "
        r"on which the BatchNorm1d '1' cannot estimate a variance in training mode; pass "
        r"drop_last=True or choose another batch_size$",
    ):
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=2)
    assert torch.equal(_flat(model), before)
    assert optimizer.step_count == 0
    history = fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=2,
                  drop_last=True)  # fmt: skip
    assert len(history.train_loss) == 1 and optimizer.step_count == 2


def test_a_folded_fit_given_the_tensors_of_its_last_call_runs_no_trial_again() -> None:
    """Mutants probed-never and note-probed-removed: as documented, a folded fit given the same
    x and y as its last call, unchanged since, does not run its trial forward again, so that
    after a refusal (here of validation labels, checked after the trial) the modules' forward
    caches hold what the last call left them, its validation pass (17 rows), not a trial on
    x[:1]; nothing trained. A call on other tensors runs the trial (the cache holds 1 row)."""
    x, y = _set()
    generator = torch.Generator().manual_seed(3)
    x_validation = torch.randn(17, 3, generator=generator, dtype=F64)
    y_validation = torch.randint(0, 3, (17,), generator=generator)
    model = _model()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    fit(model, criterion, optimizer, x, y, epochs=1, batch_size=4,
        validation=(x_validation, y_validation))  # fmt: skip
    first = model[0]
    assert first._input is not None and first._input.shape == (17, 3)
    before, steps = _flat(model).clone(), optimizer.step_count
    bad = (x_validation, torch.full((17,), 7))
    message = r"^fit: validation y must hold class indices in \[0, 3\)"
    with pytest.raises(ValueError, match=message):
        fit(model, criterion, optimizer, x, y, epochs=2, batch_size=4, validation=bad)
    assert first._input.shape == (17, 3)  # (no trial ran)
    assert torch.equal(_flat(model), before) and optimizer.step_count == steps
    with pytest.raises(ValueError, match=message):
        fit(model, criterion, optimizer, x.clone(), y, epochs=2, batch_size=4, validation=bad)
    assert first._input.shape == (1, 3)  # (other tensors: the trial on x[:1])


def test_a_resumed_runs_per_epoch_rates_are_checked_over_the_epochs_it_trains_only() -> None:
    """Mutant rates-epoch-calls-all (a per-epoch schedule's rates checked for ``epochs`` steps
    from its current one, not ``epochs - start_epoch``): a resumed float32 run whose per-epoch
    CyclicLR reaches a rate past float32's range (3.75e38, at its step 3) only after the run's
    last epoch trains, as the same schedule stepped by hand allows."""
    torch.manual_seed(0)
    model = nn.mlp((2, 4, 2))
    x, y = torch.randn(20, 2), torch.randint(0, 2, (20,))
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    schedule = optim.CyclicLR(optimizer, 0.01, 1e39, step_size_up=8)
    schedule.interval = "epoch"
    schedule.step()  # (epoch 0 done)
    history = fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=2, start_epoch=1,
                  batch_size=10, scheduler=schedule)  # fmt: skip
    assert history.lr == [pytest.approx(1.25e38, rel=1e-12)]
    assert schedule.last_step == 2 and optimizer.step_count == 2
    assert optimizer.lr == pytest.approx(2.5e38, rel=1e-12)


class _TwiceColumns(nn.Module):
    """Two models' predictions from one, each with a trailing dimension: ``(2, N, C, 1)``."""

    def forward(self, input: Tensor) -> Tensor:
        return torch.stack([input, 2 * input]).unsqueeze(-1)

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output[0, ..., 0] + 2 * grad_output[1, ..., 0]


class _PerFirstDimLoss(nn.Loss):
    """Half the squared error against one-hot targets, one loss per index of the first
    dimension (``stacks``), whatever the prediction's number of dimensions."""

    stacks = True

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        hot = torch.eye(prediction.shape[2], dtype=prediction.dtype)[target]
        self._difference = prediction - hot.reshape(hot.shape + (1,) * (prediction.dim() - 3))
        return 0.5 * (self._difference**2).sum(tuple(range(1, prediction.dim())))

    def _gradient(self) -> Tensor:
        return self._difference


def test_a_loss_per_model_is_refused_for_a_prediction_of_four_dimensions() -> None:
    """Mutant lossvalue-dim3-ge (a loss per model taken for any prediction of 3 dimensions or
    more): a loss that stacks may return one per model, (R,), for stacked predictions
    (R, N, C) only, as documented; for one of shape (2, 1, 3, 1) it is refused before
    training, naming the prediction, the model unchanged."""
    x, y = _set()
    model = nn.Sequential(
        nn.Linear(3, 3, dtype=F64, generator=torch.Generator().manual_seed(1)), _TwiceColumns()
    )
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    before = _flat(model).clone()
    with pytest.raises(ValueError) as info:
        fit(model, _PerFirstDimLoss(), optimizer, x, y, epochs=1, batch_size=4)
    assert str(info.value).startswith(
        "fit: the loss _PerFirstDimLoss returned a tensor of shape (2,), torch.float64; expected "
        "one number, a 0-dim floating-point tensor (the batch's loss, whose gradient "
        "backward() returns), or, for a prediction of R stacked models (R, N, C), one per "
        "model, of shape (R,) (the model's prediction: shape (2, 1, 3, 1))"
    )
    assert torch.equal(_flat(model), before) and optimizer.step_count == 0


class _Steps(nn.Module):
    """Scores ``(N, 2 * C)`` read as ``(N, 2, C)``: two steps' class scores per sample (a tagger
    of two time steps), which CrossEntropyLoss takes as stacked predictions, with class-index
    targets ``(N, 2)``."""

    def forward(self, input: Tensor) -> Tensor:
        return input.reshape(input.shape[0], 2, -1)

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output.reshape(grad_output.shape[0], -1)


def _tagger() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(2, 6, dtype=F64), _Steps())


def _tagged() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, generator=generator, dtype=F64)
    return x, torch.randint(0, 3, (8, 2), generator=generator)


def test_fit_trains_a_tagger_of_three_dimensional_scores() -> None:
    """The setting of the test below is one fit takes: outputs (N, 2, 3), targets (N, 2), the
    epoch's loss the total of the per-sample losses, as a loop of the same batch (one of all
    8) records it, to float64 rounding."""
    x, y = _tagged()
    model, twin = _tagger(), _tagger()
    criterion = nn.CrossEntropyLoss()
    history = fit(model, criterion, optim.SGD(model.parameters(), lr=0.1), x, y, epochs=1,
                  batch_size=8)  # fmt: skip
    optimizer = optim.SGD(twin.parameters(), lr=0.1)
    optimizer.zero_grad()
    loss = criterion(twin(x), y)
    twin.backward_parameters(criterion.backward())
    optimizer.step()
    assert history.train_loss == [pytest.approx(float(loss.sum()), rel=1e-12)]
    for mine, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(mine.data, theirs.data, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [-1, 3])
def test_fit_checks_the_class_indices_of_three_dimensional_scores_before_training(
    bad: int,
) -> None:
    """fit checks every target before training, as its docstring says, for outputs (N, L, C)
    too, which a loss that stacks reads as stacked scores, against their last width: a label
    out of range in the second batch was refused by the loss there, after the first batch's
    step (a mutant of train.py checking them >= 0 only showed it)."""
    x, y = _tagged()
    y[6, 1] = bad  # (in the second batch of 4)
    model = _tagger()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    before = [p.data.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"^fit: y must hold class indices") as info:
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=4,
            generator=torch.Generator().manual_seed(2))  # fmt: skip
    assert str(bad) in str(info.value)
    assert optimizer.step_count == 0
    assert all(torch.equal(p.data, b) for p, b in zip(model.parameters(), before, strict=True))
