"""Bad arguments of fit, fit_rounds, error_rate and stacked_error_rates: each is refused before
anything changes, with a message naming the function, what was given and what was expected.

"Nothing changes" is checked on the model's parameters and modes, the optimizer (step count,
learning rate, state), the scheduler's step, the history, the data generator and torch's global
generator. Several of these arguments used to be used only once training had begun: a bad
``on_epoch`` failed after an epoch had trained (weights changed, a step taken, the history
extended), a bad validation label gave a silent 100 % error.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.data import BatchIterator
from minidl.rounds import PerModel, fit_rounds, stacked_error_rates
from minidl.train import History, error_rate, fit, predict


def _history() -> History:
    """A history to resume from, as a checkpoint gives it."""
    return History(train_loss=[0.5], validation_error=[10.0], lr=[0.1], batch_lr=[0.1])


class Run:
    """A model, optimizer, scheduler, history and generator for fit, and a snapshot of all of
    them (and of torch's global generator) to compare with after a refused call."""

    def __init__(self) -> None:
        self.model = nn.mlp((2, 3, 2), "tanh", generator=torch.Generator().manual_seed(0))
        self.model[1].eval()  # a mixed mode, which fit's model.train() would change
        self.optimizer = optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.scheduler = optim.StepDecay(self.optimizer, step_size=1)
        self.history = _history()
        self.generator = torch.Generator().manual_seed(1)
        self.x = torch.randn(10, 2, generator=torch.Generator().manual_seed(2))
        self.y = torch.tensor([0, 1] * 5)
        self.before = self.snapshot()

    def snapshot(self) -> list[Any]:
        state = self.optimizer.state_dict()
        return [
            {name: value.clone() for name, value in self.model.state_dict().items()},
            [module.training for _, module in self.model.named_modules()],
            self.optimizer.step_count,
            self.optimizer.lr,
            [tensor.clone() for tensor in state["state"].values()],
            self.scheduler.last_step,
            self.history,
            self.generator.get_state(),
            torch.get_rng_state(),
        ]

    def fit(self, **change: Any) -> History:
        arguments: dict[str, Any] = {
            "model": self.model,
            "criterion": nn.CrossEntropyLoss(),
            "optimizer": self.optimizer,
            "x": self.x,
            "y": self.y,
            "epochs": 2,
            "batch_size": 4,
            "scheduler": self.scheduler,
            "validation": (self.x, self.y),
            "generator": self.generator,
            "start_epoch": 1,
            "history": self.history,
            **change,
        }
        return fit(**arguments)

    def assert_unchanged(self) -> None:
        after = self.snapshot()
        assert after[0].keys() == self.before[0].keys()
        for name, value in self.before[0].items():
            assert torch.equal(after[0][name], value), name
        assert after[1:4] == self.before[1:4]
        assert all(torch.equal(a, b) for a, b in zip(after[4], self.before[4], strict=True))
        assert after[5] == self.before[5]
        assert after[6] == _history()
        assert torch.equal(after[7], self.before[7])
        assert torch.equal(after[8], self.before[8])


X_FLOAT = torch.randn(10, 2)
LABELS_OUT_OF_RANGE = torch.full((10,), 7)

FIT_CASES: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("on_epoch", {"on_epoch": 3}, TypeError, "on_epoch must be callable or None, got int"),
    (
        "scheduler",
        {"scheduler": "cosine"},
        TypeError,
        "scheduler must be a minidl LRScheduler or None, got str",
    ),
    (
        "generator",
        {"generator": 0},
        TypeError,
        "generator must be a torch.Generator or None, got int",
    ),
    ("batch_size-0", {"batch_size": 0}, ValueError, "batch_size must be an integer >= 1, got 0"),
    (
        "batch_size-float",
        {"batch_size": 4.0},
        TypeError,
        "batch_size must be an integer >= 1, got 4.0",
    ),
    ("x-list", {"x": [[0.0, 1.0]]}, TypeError, "x must be a torch.Tensor, got list"),
    ("y-none", {"y": None}, TypeError, "y must be a torch.Tensor, got NoneType"),
    (
        "x-empty",
        {"x": torch.zeros(0, 2)},
        ValueError,
        "x must hold at least one sample, got shape (0, 2)",
    ),
    (
        "y-short",
        {"y": torch.tensor([0, 1, 0])},
        ValueError,
        "x and y must hold as many samples, got 10 and 3",
    ),
    (
        "y-meta",
        {"y": torch.zeros(10, dtype=torch.int64, device="meta")},
        ValueError,
        "x and y must be on one device, got cpu and meta",
    ),
    (
        "validation-labels-out-of-range",
        {"validation": (X_FLOAT, LABELS_OUT_OF_RANGE)},
        ValueError,
        "validation y must hold class indices in [0, 2) (the model's outputs have 2 columns), "
        "got 7",
    ),
    (
        "validation-labels-negative",
        {"validation": (X_FLOAT, torch.tensor([0, 1, -1, 0, 1, 0, 1, 0, 1, 0]))},
        ValueError,
        "validation y must hold class indices >= 0, got -1",
    ),
    (
        "validation-labels-float",
        {"validation": (X_FLOAT, torch.tensor([0.0, 1.0] * 5))},
        TypeError,
        "validation y must hold class indices of an integer dtype, got torch.float32",
    ),
    (
        "validation-labels-bool",
        {"validation": (X_FLOAT, torch.tensor([False, True] * 5))},
        TypeError,
        "validation y must hold class indices of an integer dtype, got torch.bool",
    ),
    (
        "max_grad_norm-0",
        {"max_grad_norm": 0},
        ValueError,
        "max_grad_norm must be in (0, inf), got 0",
    ),
    (
        "max_grad_norm-nan",
        {"max_grad_norm": float("nan")},
        ValueError,
        "max_grad_norm must be a finite number in (0, inf), got nan",
    ),
    (
        "max_grad_norm-string",
        {"max_grad_norm": "1.0"},
        TypeError,
        "max_grad_norm must be a finite number in (0, inf) (a float or an int), got str '1.0'",
    ),
]


@pytest.mark.parametrize(
    ("change", "kind", "message"),
    [case[1:] for case in FIT_CASES],
    ids=[case[0] for case in FIT_CASES],
)
def test_fit_refuses_a_bad_argument_before_anything_changes(
    change: dict[str, Any], kind: type[Exception], message: str
) -> None:
    run = Run()
    with pytest.raises(kind) as info:
        run.fit(**change)
    assert str(info.value) == "fit: " + message
    run.assert_unchanged()


def test_fit_refuses_a_state_of_other_names_before_anything_changes() -> None:
    """An optimizer state emptied, added to or replaced by no dict, which the first step
    refuses: fit refuses it before training (the step refused it once fit had drawn a
    shuffle and, on the loop's path, run a forward and backward)."""
    for bad in ({}, "extra", None):
        run = Run()
        kept = run.optimizer.state
        if bad == "extra":
            bad = {**kept, "extra": kept["momentum_buffer"].clone()}
        run.optimizer.state = bad  # type: ignore[assignment]
        with pytest.raises(ValueError) as info:
            run.fit()
        held = "is a NoneType, not a dict" if bad is None else f"holds {tuple(bad)}"
        assert str(info.value) == (
            f"SGD.step: state {held}, expected ('momentum_buffer',) (one flat tensor each, as "
            "the SGD made them); replace a tensor with optimizer.state[name] = tensor, or build "
            "a new optimizer"
        )
        assert info.value.__notes__ == [
            "fit asked the optimizer before training, as its first step would"
        ]
        run.optimizer.state = kept
        run.assert_unchanged()


def test_fit_refuses_what_the_optimizers_first_step_would_before_anything_changes() -> None:
    """A rate that the float32 parameters cannot hold (set while the model was float64, then
    cast back), which the optimizer refuses at its first step, and a step count set by hand to
    no integer >= 0, are refused by fit before anything changes. (The step refused the rate
    once fit had put the model in training mode and drawn a shuffle, or, on the loop's path,
    run a forward and backward; SGD stepped on from a step count of -1, which no checkpoint of
    the run could then save.)"""
    run = Run()
    run.model.double()
    run.optimizer.lr = 1e39  # (float64 holds it)
    run.model.float()
    with pytest.raises(ValueError) as info:
        run.fit()
    assert str(info.value) == (
        "SGD (parameters of dtype torch.float32): lr=1e+39 is beyond the range of the "
        "parameters' dtype torch.float32 (largest finite value 3.40282e+38)"
    )
    assert info.value.__notes__ == [
        "fit asked the optimizer before training, as its first step would"
    ]
    assert run.optimizer.lr == 1e39
    run.optimizer.lr = 0.1  # (back to the rate of the snapshot, whose state_dict refuses 1e39)
    run.assert_unchanged()
    for bad, kind in ((-1, ValueError), ("2", TypeError)):
        run = Run()
        run.optimizer.step_count = bad  # type: ignore[assignment]
        with pytest.raises(kind) as info:
            run.fit()
        assert str(info.value) == (
            "fit: the SGD's step_count (the number of steps done) must be an integer >= 0, got "
            f"{bad!r}"
        )
        assert run.optimizer.step_count == bad
        run.optimizer.step_count = 0  # (as snapshot, whose state_dict refuses it too)
        run.assert_unchanged()


def _plain_loop(run: Run, epochs: int) -> None:
    """What fit does with ``run`` from its start_epoch 1 to ``epochs``, step by step: the
    user's loop of a per-batch schedule."""
    criterion = nn.CrossEntropyLoss()
    run.model.train()
    for _ in range(1, epochs):
        for x_batch, y_batch in BatchIterator(run.x, run.y, 4, generator=run.generator):
            run.optimizer.zero_grad()
            criterion(run.model(x_batch), y_batch)
            run.model.backward(criterion.backward())
            run.optimizer.step()
            run.scheduler.step()


def test_fit_refuses_a_rate_its_schedule_would_reach_part_way_before_anything_changes() -> None:
    """A CyclicLR stepped per batch from 0.01 to a max_lr of 1e39 over 8 batches gives 3.75e38
    at its step 3, beyond float32, after the third batch of the run: fit refuses the run before
    anything changes, naming the schedule, the step, the epoch, the batch and the rate; the
    plain loop trains two batches at 1.25e38 and 2.5e38 and is refused at that very step (fit
    too, its model trained part-way, the message naming neither the epoch nor the batch). A
    per-epoch CosineAnnealing rising to an eta_min of 1e39 is refused at the end of its epoch
    4."""
    run = Run()
    run.scheduler = optim.CyclicLR(run.optimizer, 0.01, 1e39, step_size_up=8)
    run.before = run.snapshot()
    with pytest.raises(ValueError) as info:
        run.fit(epochs=3)
    assert str(info.value) == (
        "fit: the CyclicLR would step to the rate 3.75e+38 at its step 3, after batch 3 of 3 of "
        "epoch 1, beyond the range of the parameters' dtype torch.float32 (largest finite value "
        "3.40282e+38), which the SGD refuses (CyclicLR(base_lr=0.01, max_lr=1e+39, "
        "step_size_up=8, step_size_down=8, mode='triangular', gamma=1.0)); give the schedule "
        "rates within it, or train fewer epochs"
    )
    run.assert_unchanged()
    plain = Run()
    plain.scheduler = optim.CyclicLR(plain.optimizer, 0.01, 1e39, step_size_up=8)
    with pytest.raises(ValueError, match=r"^CyclicLR.step: the rate of step 3 is 3.75e\+38 "):
        _plain_loop(plain, epochs=3)
    assert plain.scheduler.last_step == 2 and plain.optimizer.step_count == 3
    run = Run()
    run.scheduler = optim.CosineAnnealing(run.optimizer, T_max=10, eta_min=1e39)
    run.before = run.snapshot()
    with pytest.raises(ValueError, match=r"at its step 4, at the end of epoch 4, beyond the "):
        run.fit(epochs=6)
    run.assert_unchanged()


def test_fit_trains_a_schedule_whose_bound_is_beyond_the_dtype_as_the_plain_loop() -> None:
    """A CyclicLR to a max_lr of 1e39 that the run does not reach (step_size_up 10**40: rates
    0.01 + 0.1 k) is not refused: fit trains as the plain loop does, to the same parameters
    and rates."""
    runs = [Run(), Run()]
    for run in runs:
        run.scheduler = optim.CyclicLR(run.optimizer, 0.01, 1e39, step_size_up=10**40)
    runs[0].fit(epochs=4, validation=None)
    _plain_loop(runs[1], epochs=4)
    assert runs[0].scheduler.last_step == runs[1].scheduler.last_step == 9
    assert runs[0].optimizer.lr == runs[1].optimizer.lr
    for mine, plain in zip(runs[0].model.parameters(), runs[1].model.parameters(), strict=True):
        torch.testing.assert_close(mine.data, plain.data, rtol=1e-6, atol=1e-7)


class _Ramp(optim.LRScheduler):
    """Per batch, 0.01 times 10**14 per step: a schedule of one's own, with no rate_bound."""

    _interval = "batch"

    def __init__(self, optimizer: optim.Optimizer) -> None:
        super().__init__(optimizer)
        self._start()

    def lr_at(self, step: int) -> float:
        return 0.01 * 10.0 ** (14 * step)


class _NaNAtTwo(optim.LRScheduler):
    """Per batch, 0.1, then NaN at step 2, its rate_bound infinite (unknown, say)."""

    _interval = "batch"

    def __init__(self, optimizer: optim.Optimizer) -> None:
        super().__init__(optimizer)
        self._start()

    def lr_at(self, step: int) -> float:
        return math.nan if step == 2 else 0.1

    @property
    def rate_bound(self) -> float:
        return math.inf


def test_fit_refuses_a_rate_its_schedule_refuses_when_it_looks_before_training() -> None:
    """Where fit looks at the rates of the run before training (a rate_bound beyond the
    dtype), a rate the schedule's step would refuse (NaN at step 2) is refused then, in the
    schedule's words with a note naming the epoch and batch, before anything changes."""
    run = Run()
    run.scheduler = _NaNAtTwo(run.optimizer)
    run.before = run.snapshot()
    with pytest.raises(ValueError) as info:
        run.fit(epochs=3)
    assert str(info.value) == (
        "_NaNAtTwo.step: the rate of step 2 is nan (from base_lr 0.1); expected a finite rate >= 0"
    )
    assert info.value.__notes__ == [
        "fit looked before training at the step after batch 2 of 3 of epoch 1, which would raise"
    ]
    run.assert_unchanged()


def test_a_schedule_refused_part_way_is_named_with_its_epoch_and_batch() -> None:
    """A schedule without a rate_bound reaches a rate the optimizer refuses (1e+40 at step 3)
    part-way through the run: its step's refusal has a note naming the epoch and the batch
    after which fit stepped it, and what was trained (the history given holds the batches'
    rates)."""
    run = Run()
    run.scheduler = _Ramp(run.optimizer)
    with pytest.raises(ValueError) as info:
        run.fit(epochs=3)
    assert str(info.value).startswith("_Ramp.step: the rate of step 3 is 1e+40 ")
    assert info.value.__notes__ == [
        "fit stepped the schedule after batch 3 of epoch 1: the model was trained on the "
        "batches up to this one, whose rates are in history.batch_lr; the epoch is not recorded"
    ]
    assert run.history.batch_lr == [0.1, *(run.scheduler.lr_at(step) for step in range(3))]
    assert run.scheduler.last_step == 2


class _SquaredLoss(nn.Loss):
    """Half the squared error of the scores against one-hot targets, summed over the batch:
    returned as a tensor (``kind`` "tensor", right), a Python number ("float"), one loss per
    sample ("per-sample") or an integer tensor ("integer"), the last three against the Loss
    contract."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, prediction: Tensor, target: Tensor) -> Any:
        self._difference = prediction - torch.eye(prediction.shape[1])[target]
        per_sample = 0.5 * (self._difference**2).sum(1)
        if self.kind == "per-sample":
            return per_sample
        if self.kind == "integer":
            return per_sample.sum().round().long()
        return float(per_sample.sum()) if self.kind == "float" else per_sample.sum()

    def _gradient(self) -> Tensor:
        return self._difference


@pytest.mark.parametrize(
    ("kind", "error", "got"),
    [
        ("float", TypeError, "a float"),
        ("per-sample", ValueError, "a tensor of shape (1,), torch.float32"),
        ("integer", ValueError, "a tensor of shape (), torch.int64"),
    ],
)
def test_fit_refuses_a_loss_of_ones_own_that_returns_no_0_dim_tensor(
    kind: str, error: type[Exception], got: str
) -> None:
    """A loss of one's own whose forward returned a Python number, or a loss per sample, was
    taken: the number failed at the end of the first epoch, in torch.stack ("expected Tensor
    as element 0"), the model trained; the losses per sample were stacked and summed into
    the recorded loss (or failed to stack for a last, smaller batch). Both are refused before
    training, on fit's trial sample; a 0-dim tensor trains."""
    run = Run()
    with pytest.raises(error) as info:
        run.fit(criterion=_SquaredLoss(kind))
    assert str(info.value) == (
        f"fit: the loss _SquaredLoss returned {got}; expected one number, a 0-dim "
        "floating-point tensor (the batch's loss, whose gradient backward() returns)"
    )
    run.assert_unchanged()
    assert len(run.fit(criterion=_SquaredLoss("tensor")).train_loss) == 2


class _Hinge(nn.Loss):
    """The mean hinge loss of one score a sample against integer labels -1 and +1."""

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        self._score, self._sign = prediction, target.to(prediction.dtype).unsqueeze(-1)
        return torch.clamp(1 - self._sign * prediction, min=0).mean()

    def _gradient(self) -> Tensor:
        active = (1 - self._sign * self._score) > 0
        return torch.where(active, -self._sign, 0.0) / self._score.numel()


class _ClassIndicesOfItsOwn(nn.CrossEntropyLoss):
    """A cross-entropy whose forward is its own (it shifts labels 1..C down to 0..C-1)."""

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return super().forward(prediction, target - 1)


def test_integer_targets_of_a_loss_of_ones_own_are_left_to_it() -> None:
    """fit took every integer target for a class index of the outputs: a hinge loss's labels
    -1 and +1 (one score a sample) were refused ("y must hold class indices >= 0, got -1"), as
    were labels 0 and 1 ("in [0, 1)"), where the loss trains on them by hand. A loss whose
    forward is its own checks its targets itself; a built-in loss's are still checked."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=generator)
    signs = torch.where(x[:, 0] > 0, 1, -1)
    for labels in (signs, (signs > 0).long()):
        model = nn.mlp((3, 6, 1), "tanh", generator=torch.Generator().manual_seed(1))
        history = fit(model, _Hinge(), optim.SGD(model.parameters(), 0.1), x, labels, epochs=2,
                      batch_size=10)  # fmt: skip
        assert len(history.train_loss) == 2
    model = nn.mlp((3, 6, 2), "tanh", generator=torch.Generator().manual_seed(1))
    shifted = (signs > 0).long() + 1
    fit(model, _ClassIndicesOfItsOwn(), optim.SGD(model.parameters(), 0.1), x, shifted, epochs=1)
    with pytest.raises(ValueError, match=r"^fit: y must hold class indices in \[0, 2\) .* got 2"):
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1), x, shifted, epochs=1)


class _PerSampleMSE(nn.MSELoss):
    """Half the squared error of the scores against one-hot targets, one loss per sample
    (against the Loss contract), in a subclass of MSELoss, whose ``stacks`` it inherits."""

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        self._difference = prediction - torch.eye(prediction.shape[1])[target]
        return 0.5 * (self._difference**2).sum(1)

    def _gradient(self) -> Tensor:
        return self._difference


def test_fit_refuses_a_loss_per_sample_from_a_loss_that_stacks_given_no_stack() -> None:
    """A loss that takes stacked predictions may return one loss per model for a prediction of
    stacked models (R, N, C), not a loss per sample for the model's (N, C): a subclass of
    MSELoss (which stacks) returning one was taken, trained an epoch and failed in torch.stack
    ("stack expects each tensor to be equal size", the last batch smaller), or had its losses
    summed into the recorded loss. Refused before training, naming the prediction's shape."""
    run = Run()
    with pytest.raises(ValueError) as info:
        run.fit(criterion=_PerSampleMSE())
    assert str(info.value) == (
        "fit: the loss _PerSampleMSE returned a tensor of shape (1,), torch.float32; expected "
        "one number, a 0-dim floating-point tensor (the batch's loss, whose gradient "
        "backward() returns), or, for a prediction of R stacked models (R, N, C), one per "
        "model, of shape (R,) (the model's prediction: shape (1, 2))"
    )
    run.assert_unchanged()


class _Twice(nn.Module):
    """Two models' predictions from one: the scores and twice them, stacked ``(2, N, C)``."""

    def forward(self, input: Tensor) -> Tensor:
        return torch.stack([input, 2 * input])

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output[0] + 2 * grad_output[1]


class _PerModelLoss(nn.Loss):
    """Half the squared error of stacked scores against one-hot targets, one loss per model
    (``stacks``), as the built-in losses give for stacked predictions."""

    stacks = True

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        self._difference = prediction - torch.eye(prediction.shape[-1])[target]
        return 0.5 * (self._difference**2).sum((1, 2))

    def _gradient(self) -> Tensor:
        return self._difference


def test_fit_takes_a_loss_per_model_from_a_loss_that_stacks() -> None:
    """A loss that takes stacked predictions (``stacks``) may return one loss per model, which
    fit's check of the trial sample leaves to it: the epoch's loss is their total, as a loop
    of the same batches records it."""
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 3), _Twice())
    twin = copy.deepcopy(model)
    criterion = _PerModelLoss()
    history = fit(model, criterion, optim.SGD(model.parameters(), lr=0.01), x, y, epochs=1)
    optimizer = optim.SGD(twin.parameters(), lr=0.01)
    optimizer.zero_grad()
    loss = criterion(twin(x), y)
    twin.backward_parameters(criterion.backward())
    optimizer.step()
    assert history.train_loss == [pytest.approx(float(loss.sum()), rel=1e-6)]
    for mine, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(mine.data, theirs.data, rtol=1e-6, atol=1e-7)


class _PerModelPerSampleLoss(_PerModelLoss):
    """_PerModelLoss's squared errors summed per model and per sample, shape ``(R, N)``."""

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        self._difference = prediction - torch.eye(prediction.shape[-1])[target]
        return 0.5 * (self._difference**2).sum(2)


class _PerSampleOfModelsLoss(_PerModelLoss):
    """_PerModelLoss's squared errors summed over the models per sample, shape ``(N,)``."""

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        self._difference = prediction - torch.eye(prediction.shape[-1])[target]
        return 0.5 * (self._difference**2).sum((0, 2))


class _UndeclaredPerModelLoss(_PerModelLoss):
    """_PerModelLoss, one loss per model, without declaring that it takes stacks."""

    stacks = False


_PER_MODEL = (
    ", or, for a prediction of R stacked models (R, N, C), one per model, of shape (R,) (the "
    "model's prediction: shape (2, 1, 3))"
)


@pytest.mark.parametrize(
    ("criterion", "got", "stacked"),
    [
        (_PerModelPerSampleLoss(), "(2, 1)", _PER_MODEL),
        (_PerSampleOfModelsLoss(), "(1,)", _PER_MODEL),
        (_UndeclaredPerModelLoss(), "(2,)", ""),
    ],
    ids=["per-model-and-sample", "per-sample", "undeclared"],
)
def test_fit_refuses_from_a_loss_that_stacks_all_but_one_loss_per_model(
    criterion: nn.Loss, got: str, stacked: str
) -> None:
    """For the prediction of R = 2 stacked models, a loss that stacks may return one loss per
    model, of shape (R,): one per model and per sample (R, N), or one per sample (N,) of the
    trial's N = 1, is refused before training, the model unchanged, as is one per model from a
    loss that does not declare that it stacks."""
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 3), _Twice())
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError) as info:
        fit(model, criterion, optim.SGD(model.parameters(), lr=0.01), x, y, epochs=1)
    assert str(info.value) == (
        f"fit: the loss {type(criterion).__name__} returned a tensor of shape {got}, "
        "torch.float32; expected one number, a 0-dim floating-point tensor (the batch's loss, "
        f"whose gradient backward() returns){stacked}"
    )
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])


def test_fit_refuses_a_history_past_start_epoch_and_appends_to_one_from_epoch_0() -> None:
    """Resuming at ``start_epoch`` with a history that holds later epochs would record them a
    second time: refused before anything changes. A history of exactly ``start_epoch`` epochs
    resumes, and with ``start_epoch`` 0 a history is extended call after call."""
    run = Run()
    longer = History(train_loss=[0.5, 0.4, 0.3], validation_error=[9.0, 8.0, 7.0], lr=[0.1] * 3)
    with pytest.raises(ValueError) as info:
        run.fit(history=longer)  # (start_epoch 1)
    assert str(info.value) == (
        "fit: history holds 3 epochs, past start_epoch 1: resuming there would record epochs "
        "1 to 2 a second time; pass the history saved with epoch 1 (load_checkpoint's "
        "state.history), or start_epoch=3"
    )
    assert longer == History(
        train_loss=[0.5, 0.4, 0.3], validation_error=[9.0, 8.0, 7.0], lr=[0.1] * 3
    )
    run.assert_unchanged()
    assert run.fit(history=longer, start_epoch=3, epochs=4) is longer
    assert len(longer.train_loss) == len(longer.lr) == len(longer.validation_error) == 4
    for calls in (1, 2):
        assert run.fit(history=longer, start_epoch=0, epochs=1) is longer
        assert len(longer.train_loss) == 4 + calls


HISTORY_CASES: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    (
        "unequal-lengths",
        {"train_loss": [0.5, 0.4], "validation_error": [10.0], "lr": [0.1]},
        ValueError,
        "history must hold as many epochs in train_loss, validation_error and lr (one entry per "
        "epoch each), got 2, 1 and 1; pass the history of the run (load_checkpoint's "
        "state.history), or none",
    ),
    (
        "lr-missing",
        {"train_loss": [0.5], "validation_error": [10.0], "lr": []},
        ValueError,
        "history must hold as many epochs in train_loss, validation_error and lr (one entry per "
        "epoch each), got 1, 1 and 0; pass the history of the run (load_checkpoint's "
        "state.history), or none",
    ),
    (
        "a-string",
        {"train_loss": ["0.5"], "validation_error": [10.0], "lr": [0.1]},
        TypeError,
        "history.train_loss must be a list of numbers, Python floats or ints, got '0.5' (str) at "
        "index 0",
    ),
    (
        "a-bool",
        {"train_loss": [0.5], "validation_error": [10.0], "lr": [0.1], "batch_lr": [0.1, True]},
        TypeError,
        "history.batch_lr must be a list of numbers, Python floats or ints, got True (bool) at "
        "index 1",
    ),
    (
        "a-tensor",
        {"train_loss": [0.5], "validation_error": [torch.tensor(10.0)], "lr": [0.1]},
        TypeError,
        "history.validation_error must be a list of numbers, Python floats or ints, got "
        "tensor(10.) (Tensor) at index 0",
    ),
    (
        # (a NumPy number, named so: "a list of numbers, got np.float32(1.0)" read as a
        # contradiction)
        "a-numpy-number",
        {"train_loss": [0.5], "validation_error": [10.0], "lr": [np.float32(0.1)]},
        TypeError,
        # (NumPy's repr: "np.float32(0.1)" from NumPy 2, "0.1" before)
        f"history.lr must be a list of numbers, Python floats or ints, got {np.float32(0.1)!r} "
        "(float32) at index 0; convert it with float()",
    ),
    (
        "a-tuple",
        {"train_loss": [0.5], "validation_error": [10.0], "lr": (0.1,)},
        TypeError,
        "history.lr must be a list of numbers, got tuple",
    ),
]


@pytest.mark.parametrize(
    ("curves", "kind", "message"),
    [case[1:] for case in HISTORY_CASES],
    ids=[case[0] for case in HISTORY_CASES],
)
def test_fit_refuses_a_history_it_could_not_extend_before_anything_changes(
    curves: dict[str, Any], kind: type[Exception], message: str
) -> None:
    """A history to extend whose per-epoch curves differ in length, or whose curves are no
    lists of numbers, is refused before anything changes, itself included: fit trained on it
    and appended to it (curves of unequal lengths, whose epochs are not the run's; a string or
    tensor that only save_checkpoint refused, once the run had trained), or failed at the end
    of the first epoch, once it had trained (a tuple has no append)."""
    run = Run()
    history = History(**curves)
    given = copy.deepcopy(history)
    with pytest.raises(kind) as info:
        run.fit(history=history)
    assert str(info.value) == "fit: " + message
    assert history == given
    run.assert_unchanged()


def test_fit_extends_a_history_of_whole_numbers_as_one_of_floats() -> None:
    """A history whose curves hold ints (numbers, as save_checkpoint and read_checkpoint take
    them) is extended as the same history of floats is: its entries kept as given, the run's
    epochs appended, the same as the float one's (the oracle: the same run, given floats)."""
    whole = History(train_loss=[1], validation_error=[10], lr=[0], batch_lr=[0])
    floats = History(train_loss=[1.0], validation_error=[10.0], lr=[0.0], batch_lr=[0.0])
    runs = [Run(), Run()]
    assert runs[0].fit(history=whole) is whole
    assert runs[1].fit(history=floats) is floats
    assert whole == floats
    assert [type(value) for value in whole.train_loss] == [int, float]
    assert len(whole.train_loss) == len(whole.validation_error) == len(whole.lr) == 2


def test_fit_extends_a_history_holding_subclasses_of_float_as_one_of_floats() -> None:
    """A history whose curves hold numpy's float64 (a subclass of float: what ``np.mean`` of
    recorded losses gives), next to an int in the same curve, is a history of numbers: extended
    as the same history of plain floats is, its entries kept as given (the oracle: the same
    run, given floats)."""
    given = History(
        train_loss=[1, np.float64(0.5)],
        validation_error=[np.float64(10.0), 20],
        lr=[0.1, 0.1],
        batch_lr=[np.float64(0.1), 0],
    )
    floats = History(
        train_loss=[1.0, 0.5], validation_error=[10.0, 20.0], lr=[0.1, 0.1], batch_lr=[0.1, 0.0]
    )
    runs = [Run(), Run()]
    assert runs[0].fit(history=given, start_epoch=2, epochs=3) is given
    assert runs[1].fit(history=floats, start_epoch=2, epochs=3) is floats
    assert given == floats
    assert [type(value) for value in given.train_loss] == [int, np.float64, float]


def test_fit_refuses_a_model_without_class_scores_before_training() -> None:
    """A model whose outputs are not (N, C) is refused before training (by the loss, which
    fit runs once on the first sample), not at the first step or after the first epoch."""

    class Flatten(nn.Module):
        def forward(self, input: Tensor) -> Tensor:
            return input.sum(dim=1)

        def backward(self, grad_output: Tensor) -> Tensor:
            raise AssertionError("not called")

    model = nn.Sequential(nn.Linear(2, 2), Flatten())
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError) as info:
        fit(model, nn.MSELoss(), optimizer, x, x, epochs=1, validation=(x, y))
    assert (
        str(info.value) == "MSELoss: expected a prediction of shape (N, features), got shape (1,)"
    )
    assert optimizer.step_count == 0
    assert all(torch.equal(model.state_dict()[name], value) for name, value in before.items())


def test_fit_checks_the_validation_labels_without_changing_the_model() -> None:
    """The forward pass that gives the number of classes runs in evaluation mode: a batch
    norm's statistics and a dropout's generator are untouched, and a good set trains as it did
    before the check (the same numbers as the run without a validation set)."""

    def make() -> tuple[nn.Sequential, optim.SGD, torch.Generator]:
        model = nn.Sequential(
            nn.Linear(2, 4, generator=torch.Generator().manual_seed(0)),
            nn.BatchNorm1d(4),
            nn.Dropout(0.3, generator=torch.Generator().manual_seed(5)),
            nn.Linear(4, 2, generator=torch.Generator().manual_seed(1)),
        )
        return model, optim.SGD(model.parameters(), lr=0.1), torch.Generator().manual_seed(3)

    x, y = torch.randn(12, 2), torch.tensor([0, 1, 1] * 4)
    results = []
    for validation in (None, (x, y)):
        model, optimizer, generator = make()
        history = fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=2,
            batch_size=5,
            validation=validation,
            generator=generator,
        )
        results.append((model.state_dict(), history.train_loss))
    (plain, plain_loss), (checked, checked_loss) = results
    assert plain_loss == checked_loss
    assert all(torch.equal(checked[name], value) for name, value in plain.items())


def test_error_rate_refuses_labels_that_are_not_class_indices() -> None:
    """error_rate used to return a number for float labels, and for labels no class can be
    (7 for a 2-class model: counted wrong, silently)."""
    model = nn.mlp((2, 2))
    x = torch.randn(4, 2)
    modes = [module.training for _, module in model.named_modules()]
    with pytest.raises(TypeError) as info:
        error_rate(model, x, torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert str(info.value) == (
        "error_rate: y must hold class indices of an integer dtype, got torch.float32"
    )
    with pytest.raises(ValueError) as info:
        error_rate(model, x, torch.tensor([0, 1, 2, 0]))
    assert str(info.value) == (
        "error_rate: y must hold class indices in [0, 2) (the model's outputs have 2 columns), "
        "got 2"
    )
    with pytest.raises(ValueError, match=r"^error_rate: y must hold class indices >= 0, got -3$"):
        error_rate(model, x, torch.tensor([0, -3, 1, 0]))
    assert [module.training for _, module in model.named_modules()] == modes
    assert error_rate(model, x, torch.tensor([0, 1, 1, 0], dtype=torch.int32)) in {
        0.0,
        25.0,
        50.0,
        75.0,
        100.0,
    }


class _Pooled(nn.Module):
    """Scores ``(1, C)`` for a whole batch (its mean): one row, whatever the samples."""

    def forward(self, input: Tensor) -> Tensor:
        self.rows = input.shape[0]
        return input.mean(dim=0, keepdim=True)

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output.expand(self.rows, -1) / self.rows


class _Summed(nn.Module):
    """One value per sample, ``(N,)``: no class scores."""

    def forward(self, input: Tensor) -> Tensor:
        return input.sum(dim=1)


def test_predict_and_error_rate_refuse_outputs_that_are_not_the_samples_scores() -> None:
    """Outputs ``(N,)`` used to fail with an IndexError ("tuple index out of range"), or, in
    batches, with torch.cat's words; outputs of one row for a batch (scores pooled over it)
    gave one prediction, which error_rate compared with every label by broadcasting: a silent
    error rate of the pooled row. Each is refused, naming the function, what the model gave and
    what was expected; the modes are restored."""
    x = torch.tensor([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0], [4.0, 0.0]])
    y = torch.tensor([1, 0, 1, 0])
    pooled = nn.Sequential(_Pooled())
    with pytest.raises(ValueError) as info:
        error_rate(pooled, x, y)
    assert str(info.value) == (
        "error_rate: the model's outputs must be class scores (N, C) for N = 4 samples, got "
        "shape (1, 2)"
    )
    with pytest.raises(ValueError, match=r"^predict: .* for N = 3 samples, got shape \(1, 2\)$"):
        predict(pooled, x, batch_size=3)
    summed = nn.Sequential(_Summed())
    for batch_size in (4, 3):
        with pytest.raises(ValueError) as info:
            predict(summed, x, batch_size=batch_size)
        assert str(info.value) == (
            "predict: the model's outputs must be class scores (N, C) or (N, ..., C) for "
            f"N = {batch_size} samples, got shape ({batch_size},)"
        )
    with pytest.raises(ValueError, match=r"^error_rate: .*\(N, C\) for N = 4 samples, got shape"):
        error_rate(summed, x, y)
    assert summed.training and pooled.training
    # (scores of one row per sample, (N, C) or (N, T, C), are predicted as before)
    assert predict(nn.Identity(), x, batch_size=3).tolist() == [1, 0, 1, 0]
    assert predict(nn.Identity(), x[None].expand(2, 4, 2)).tolist() == [[1, 0, 1, 0]] * 2
    assert error_rate(nn.Identity(), x, y) == 0.0
    # (scores of no class, (N, 0): torch's IndexError, "argmax(): Expected reduction dim 1 to
    # have non-zero size")
    no_class = nn.Sequential(_NoClass())
    for name, call, expected in (
        ("predict", lambda: predict(no_class, x), "(N, C) or (N, ..., C)"),
        ("error_rate", lambda: error_rate(no_class, x, y), "(N, C)"),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == (
            f"{name}: the model's outputs must be class scores {expected} for N = 4 samples, "
            "got shape (4, 0)"
        )


class _NoClass(nn.Module):
    """Scores of no class: (N, 0)."""

    def forward(self, input: Tensor) -> Tensor:
        return input[:, :0]

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


def test_fit_refuses_validation_outputs_that_are_not_the_samples_scores() -> None:
    """A model whose outputs for one sample are scores (1, C), as fit's trial sees them, but
    for a validation set one pooled row: the validation error was that row's, compared with
    every label; now refused, naming fit, after the epoch (recorded: its steps were taken)."""
    model = nn.Sequential(nn.Linear(2, 2), _Pooled())
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 0, 1])
    history = History()
    with pytest.raises(ValueError) as info:
        fit(
            model,
            nn.CrossEntropyLoss(),
            optim.SGD(model.parameters(), lr=0.1),
            x,
            y,
            epochs=1,
            batch_size=1,
            validation=(x, y),
            history=history,
        )
    assert str(info.value) == (
        "fit: the model's outputs must be class scores (N, C) for N = 6 samples, got shape (1, 2)"
    )


def test_stacked_error_rates_refuses_labels_that_are_not_class_indices() -> None:
    stacked = nn.stack_models([nn.mlp((2, 3, 2), "tanh") for _ in range(2)])
    x = torch.randn(2, 5, 2)
    with pytest.raises(TypeError, match=r"^stacked_error_rates: y must hold class indices of an"):
        stacked_error_rates(stacked, x, torch.zeros(2, 5))
    with pytest.raises(ValueError) as info:
        stacked_error_rates(stacked, x, torch.full((2, 5), 2))
    assert str(info.value) == (
        "stacked_error_rates: y must hold class indices in [0, 2) (the model's outputs have 2 "
        "columns), got 2"
    )
    with pytest.raises(ValueError, match=r"^stacked_error_rates: y must hold class indices >= 0"):
        stacked_error_rates(stacked, x, torch.full((2, 5), -1))


def test_stacked_error_rates_refuses_sets_on_two_devices_or_sparse_before_the_forward() -> None:
    # (x on one device and y on another failed after the forward, in torch's words: "Tensor on
    # device cpu is not on the expected device meta!"; a sparse x inside the forward)
    stacked = nn.stack_models([nn.mlp((2, 3, 2), "tanh") for _ in range(2)])
    x, y = torch.randn(2, 5, 2), torch.zeros(2, 5, dtype=torch.int64)
    with pytest.raises(
        ValueError, match=r"^stacked_error_rates: x and y must be on one device, got cpu and meta$"
    ):
        stacked_error_rates(stacked, x, y.to("meta"))
    with pytest.raises(
        TypeError,
        match=r"^stacked_error_rates: x must be a dense \(strided\) tensor, got a sparse_coo",
    ):
        stacked_error_rates(stacked, x.to_sparse(), y)


# -- fit_rounds ----------------------------------------------------------------------------------


class Rounds:
    """Two models, their data and generators for fit_rounds, and a snapshot of them."""

    def __init__(self) -> None:
        self.models = [
            nn.mlp((2, 3, 2), "tanh", generator=torch.Generator().manual_seed(r)) for r in range(2)
        ]
        self.models[1].eval()  # fit_rounds puts every model in training mode, when it trains
        self.generators = [torch.Generator().manual_seed(10 + r) for r in range(2)]
        x, y = torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 1, 0])
        self.sets = [(x, y), (x, y)]
        self.before = self.snapshot()

    def snapshot(self) -> list[Any]:
        return [
            [{k: v.clone() for k, v in model.state_dict().items()} for model in self.models],
            [[m.training for _, m in model.named_modules()] for model in self.models],
            [generator.get_state() for generator in self.generators],
            torch.get_rng_state(),
        ]

    def fit_rounds(self, **change: Any) -> list[History]:
        arguments: dict[str, Any] = {
            "models": self.models,
            "criterion": nn.CrossEntropyLoss(),
            "make_optimizer": lambda stack: optim.SGD(stack.parameters(), lr=0.1),
            "train_sets": self.sets,
            "epochs": 2,
            "batch_size": 3,
            "generators": self.generators,
            "validation_sets": self.sets,
            **change,
        }
        return fit_rounds(**arguments)

    def assert_unchanged(self) -> None:
        after = self.snapshot()
        for model_after, model_before in zip(after[0], self.before[0], strict=True):
            for name, value in model_before.items():
                assert torch.equal(model_after[name], value), name
        assert after[1] == self.before[1]
        for state_after, state_before in zip(after[2], self.before[2], strict=True):
            assert torch.equal(state_after, state_before)
        assert torch.equal(after[3], self.before[3])


def _seeded() -> torch.Generator:
    """The cases build their models from their own generator: a refused call must leave the
    global one as it was."""
    return torch.Generator().manual_seed(7)


def _shares_a_layer() -> list[nn.Sequential]:
    first = nn.mlp((2, 3, 2), "tanh", generator=_seeded())
    return [first, nn.Sequential(first[0], nn.Tanh(), nn.Linear(3, 2, generator=_seeded()))]


x6 = torch.randn(6, 2)
ROUNDS_CASES: list[tuple[str, Callable[[Rounds], dict[str, Any]], type[Exception], str]] = [
    (
        "on_epoch",
        lambda r: {"on_epoch": 3},
        TypeError,
        "on_epoch must be callable or None, got int",
    ),
    (
        "make_optimizer",
        lambda r: {"make_optimizer": 3},
        TypeError,
        "make_optimizer must be a callable that builds an optimizer on the stack, or a "
        "PerModel, got int",
    ),
    (
        "make_optimizer-an-optimizer",
        lambda r: {"make_optimizer": optim.SGD(r.models[0].parameters(), lr=0.1)},
        TypeError,
        "make_optimizer must be a callable that builds an optimizer on the stack, or a "
        "PerModel, got SGD",
    ),
    (
        "per-model-factory",
        lambda r: {"make_optimizer": PerModel("sgd")},  # type: ignore[arg-type]
        TypeError,
        "PerModel.factory must be a callable (index, parameters) -> Optimizer, got str",
    ),
    (
        "make_scheduler",
        lambda r: {"make_scheduler": "step"},
        TypeError,
        "make_scheduler must be callable or None, got str",
    ),
    (
        "same-model-twice",
        lambda r: {"models": [r.models[0], r.models[0]]},
        ValueError,
        "models[1] is models[0] (one object given twice); each round needs a model of its own",
    ),
    (
        "shared-parameter",
        lambda r: {"models": _shares_a_layer()},
        ValueError,
        "models[1] shares its parameter '0.weight' with models[0] ('0.weight'); each round "
        "needs parameters of its own",
    ),
    (
        "not-a-sequential",
        lambda r: {"models": [r.models[0], nn.Linear(2, 2, generator=_seeded())]},
        TypeError,
        "models[1] must be a minidl Sequential, got Linear",
    ),
    (
        "a-single-model",
        lambda r: {"models": r.models[0]},
        TypeError,
        "models must be a list or tuple, one per model, got Sequential",
    ),
    (
        "generators-not-a-list",
        lambda r: {"generators": r.generators[0]},
        TypeError,
        "generators must be a list or tuple, one per model, got Generator",
    ),
    (
        "other-architecture",
        lambda r: {"models": [r.models[0], nn.mlp((2, 4, 2), "tanh", generator=_seeded())]},
        ValueError,
        "stack_models: layer 0 differs between models[0] and models[1]: Linear(in_features=2, "
        "out_features=3, bias=True) of torch.float32 on cpu against Linear(in_features=2, "
        "out_features=4, bias=True) of torch.float32 on cpu",
    ),
    (
        # (failed in torch's words, "Could not run 'aten::as_strided' with arguments from the
        # 'SparseCPU' backend", where fit and the validation sets refuse it)
        "train-x-sparse",
        lambda r: {"train_sets": [r.sets[0], (r.sets[1][0].to_sparse(), r.sets[1][1])]},
        TypeError,
        "train_sets[1] x must be a dense (strided) tensor, got a sparse_coo tensor",
    ),
    (
        "train-y-sparse",
        lambda r: {"train_sets": [(r.sets[0][0], r.sets[0][1].to_sparse()), r.sets[1]]},
        TypeError,
        "train_sets[0] y must be a dense (strided) tensor, got a sparse_coo tensor",
    ),
    (
        "validation-labels-out-of-range",
        lambda r: {"validation_sets": [r.sets[0], (x6, torch.tensor([0, 1, 0, 1, 5, 0]))]},
        ValueError,
        "validation_sets[1] y must hold class indices in [0, 2) (the model's outputs have 2 "
        "columns), got 5",
    ),
    (
        "validation-labels-negative",
        lambda r: {"validation_sets": [(x6, torch.tensor([0, 1, 0, -1, 1, 0])), r.sets[1]]},
        ValueError,
        "validation_sets[0] y must hold class indices >= 0, got -1",
    ),
    (
        "validation-labels-float",
        lambda r: {"validation_sets": [r.sets[0], (x6, torch.zeros(6))]},
        TypeError,
        "validation_sets[1] y must hold class indices of an integer dtype, got torch.float32",
    ),
]


@pytest.mark.parametrize(
    ("change", "kind", "message"),
    [case[1:] for case in ROUNDS_CASES],
    ids=[case[0] for case in ROUNDS_CASES],
)
def test_fit_rounds_refuses_a_bad_argument_before_anything_changes(
    change: Callable[[Rounds], dict[str, Any]], kind: type[Exception], message: str
) -> None:
    """``on_epoch=3`` used to fail after an epoch, with the models trained and the generators
    drawn from; ``make_optimizer=3`` with "'int' object is not callable"; a model given twice
    was trained as two rounds, one copied over the other."""
    run = Rounds()
    with pytest.raises(kind) as info:
        run.fit_rounds(**change(run))
    assert str(info.value) == "fit_rounds: " + message
    run.assert_unchanged()


def test_fit_rounds_leaves_the_models_in_training_mode_as_fit_does() -> None:
    """fit calls model.train(); fit_rounds used to leave each model's modes as they were."""
    rounds, alone = Rounds(), Rounds()
    rounds.fit_rounds()
    for model, generator, train_set, validation_set in zip(
        alone.models, alone.generators, alone.sets, alone.sets, strict=True
    ):
        fit(
            model,
            nn.CrossEntropyLoss(),
            optim.SGD(model.parameters(), lr=0.1),
            *train_set,
            epochs=2,
            batch_size=3,
            validation=validation_set,
            generator=generator,
        )
    for model, reference in zip(rounds.models, alone.models, strict=True):
        modes = [module.training for _, module in model.named_modules()]
        assert modes == [module.training for _, module in reference.named_modules()]
        assert all(modes)


@pytest.mark.parametrize(
    ("make_y", "kind", "message"),
    [
        (
            lambda y: y.index_fill(0, torch.tensor([5]), 3),
            ValueError,
            r"fit: y must hold class indices in \[0, 3\) \(the model's outputs have 3 columns\), "
            r"got 3",
        ),
        (
            lambda y: y.int(),
            TypeError,
            r"CrossEntropyLoss: class-index targets must have dtype torch\.int64, got torch\.int32",
        ),
        (
            lambda y: torch.zeros(len(y), 2),
            ValueError,
            r"CrossEntropyLoss: target has shape \(1, 2\), expected the prediction's shape",
        ),
    ],
)
def test_fit_checks_the_training_targets_before_the_first_step(
    make_y: Callable[[Tensor], Tensor], kind: type[Exception], message: str
) -> None:
    """A target the loss would refuse at a later batch, or at the first (after the forward had
    updated batch-norm statistics), is refused before training: nothing changes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(20, 2), torch.randint(0, 3, (20,))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(kind, match=message):
        fit(model, nn.CrossEntropyLoss(), optimizer, x, make_y(y), epochs=2, batch_size=4)
    assert optimizer.step_count == 0
    assert all(torch.equal(model.state_dict()[name], value) for name, value in before.items())


def _bad_value_in_a_later_batch(kind: str) -> Tensor:
    """Targets of 20 samples whose 14th (in the fourth batch of 4) a loss refuses."""
    torch.manual_seed(1)
    if kind == "range":
        return torch.rand(20, 3).index_fill(0, torch.tensor([13]), 1.5)
    if kind == "nan":
        return torch.rand(20, 3).index_fill(0, torch.tensor([13]), math.nan)
    probabilities = torch.softmax(torch.randn(20, 3), dim=1)
    if kind == "sum":
        probabilities[13] = torch.tensor([0.5, 0.5, 0.5])
    else:  # "negative"
        probabilities[13] = torch.tensor([1.25, -0.25, 0.0])
    return probabilities


@pytest.mark.parametrize(
    ("make_loss", "kind", "message"),
    [
        (
            nn.BCEWithLogitsLoss,
            "range",
            r"BCEWithLogitsLoss: targets must lie in \[0, 1\], got values in \[0\.\d+, 1\.5\]",
        ),
        (nn.BCEWithLogitsLoss, "nan", r"BCEWithLogitsLoss: targets must lie in \[0, 1\], got "),
        (
            nn.CrossEntropyLoss,
            "sum",
            r"CrossEntropyLoss: a probability target must be non-negative with rows summing to "
            r"1 \(got a minimum of 0\.\d+ and a row sum off by 0\.5\)",
        ),
        (
            nn.CrossEntropyLoss,
            "negative",
            r"CrossEntropyLoss: a probability target must be non-negative with rows summing to "
            r"1 \(got a minimum of -0\.25 ",
        ),
    ],
)
def test_fit_checks_every_target_value_before_the_first_step(
    make_loss: Callable[[], nn.Loss], kind: str, message: str
) -> None:
    """A target value the loss refuses (BCE's outside [0, 1], a probability row not summing to
    1) in a later batch used to stop the run there, with the batches before it trained: the
    parameters, the momentum, the step count, the batch-norm statistics and the generator
    changed, nothing recorded. Every target is now checked before training, with a note."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(20, 2), _bad_value_in_a_later_batch(kind)
    generator = torch.Generator().manual_seed(0)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    state = generator.get_state()
    with pytest.raises(ValueError, match=message) as info:
        fit(model, make_loss(), optimizer, x, y, epochs=2, batch_size=4, generator=generator)
    assert info.value.__notes__ == ["fit checked every target of y before training"]
    assert optimizer.step_count == 0
    assert all(torch.equal(model.state_dict()[name], value) for name, value in before.items())
    assert torch.equal(generator.get_state(), state)


def test_fit_leaves_the_targets_to_a_loss_whose_forward_is_its_own() -> None:
    """A subclass with a forward of its own may take targets its base refuses (here, clamped
    into [0, 1] first): fit does not refuse them before training."""

    class Clamped(nn.BCEWithLogitsLoss):
        def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
            return super().forward(prediction, target.clamp(0, 1))

    model = nn.mlp((2, 4, 3), "tanh")
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    y = _bad_value_in_a_later_batch("range")
    fit(model, Clamped(), optimizer, torch.randn(20, 2), y, epochs=1, batch_size=4)
    assert optimizer.step_count == 5


def test_fit_rounds_checks_every_target_value_of_each_set_before_the_first_step() -> None:
    """As fit: a probability row not summing to 1 in a later batch of one set stopped every
    model part-way. Each set's targets are checked by its own model's loss (MSE, which takes
    any values, for the first two models of this StackedLoss), and the set is named."""
    torch.manual_seed(0)
    models = [nn.mlp((2, 4, 3), "tanh") for _ in range(3)]
    before = [copy.deepcopy(model.state_dict()) for model in models]
    x, y = torch.randn(20, 2), _bad_value_in_a_later_batch("sum")
    sets = [(x, y), (x, y), (x, y)]
    generators = [torch.Generator().manual_seed(index) for index in range(3)]
    states = [generator.get_state() for generator in generators]
    criterion = nn.StackedLoss([(nn.MSELoss(), 2), (nn.CrossEntropyLoss(), 1)])
    with pytest.raises(ValueError) as info:
        fit_rounds(
            models,
            criterion,
            lambda parameters: optim.SGD(parameters, lr=0.1),
            sets,
            epochs=1,
            batch_size=4,
            generators=generators,
        )
    assert str(info.value).startswith(
        "fit_rounds: the targets of train_sets[2]: CrossEntropyLoss: a probability target must "
        "be non-negative with rows summing to 1"
    )
    assert info.value.__notes__ == [
        "fit_rounds checked every target of each training set before training"
    ]
    for model, state in zip(models, before, strict=True):
        assert all(torch.equal(model.state_dict()[name], value) for name, value in state.items())
    for generator, state in zip(generators, states, strict=True):
        assert torch.equal(generator.get_state(), state)


class _Centred(nn.Module):
    """A module of one's own that takes no single sample (it centres the batch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] < 2:
            raise ValueError(f"_Centred: needs 2 samples at least, got shape {tuple(x.shape)}")
        return x - x.mean(0)

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output - grad_output.mean(0)


def test_fit_trains_a_module_that_needs_several_samples() -> None:
    """fit's trial on the first sample refused a model whose every batch trains: it runs the
    first batch then, and trains as the loop does; a model the batch refuses too is refused
    with the sample's refusal and note, as before."""
    torch.manual_seed(0)
    x, y = torch.randn(40, 3, dtype=torch.float64), torch.randint(0, 2, (40,))
    model = nn.Sequential(nn.Linear(3, 4), _Centred(), nn.Tanh(), nn.Linear(4, 2)).double()
    twin = copy.deepcopy(model)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    criterion = nn.CrossEntropyLoss()
    history = fit(
        model, criterion, optimizer, x, y, epochs=2, batch_size=8,
        generator=torch.Generator().manual_seed(5),
    )  # fmt: skip
    twin_optimizer = optim.SGD(twin.parameters(), lr=0.1)
    batches = BatchIterator(x, y, 8, generator=torch.Generator().manual_seed(5))
    for _ in range(2):
        for x_batch, y_batch in batches:
            twin_optimizer.zero_grad()
            criterion(twin(x_batch), y_batch)
            twin.backward(criterion.backward())
            twin_optimizer.step()
    assert len(history.train_loss) == 2
    for parameter, expected in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(parameter.data, expected.data)
    wide = nn.Sequential(nn.Linear(5, 4), _Centred(), nn.Linear(4, 2)).double()
    with pytest.raises(ValueError, match=r"^Linear: expected 5 input features, got 3") as info:
        fit(wide, criterion, optim.SGD(wide.parameters(), lr=0.1), x, y, epochs=1, batch_size=8)
    assert info.value.__notes__[-1].startswith(  # type: ignore[attr-defined]
        "fit ran the model and the loss on the first sample, x[:1] and y[:1] (shapes (1, 3)"
    )


class _OnSecond(nn.Module):
    """A module of one's own that reads the second sample (an IndexError on one)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x[1]

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.clone()
        grad[1] -= grad_output.sum(0)
        return grad


def test_fit_trains_a_module_that_fails_on_one_sample_in_torchs_words() -> None:
    """fit's second trial, on the first batch, caught only TypeError and ValueError, where the
    Sequential's caught any exception: an IndexError on one sample stopped fit, and the
    Sequential itself took the batch."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), _OnSecond(), nn.Linear(4, 2))
    history = fit(
        model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), x, y,
        epochs=1, batch_size=4,
    )  # fmt: skip
    assert len(history.train_loss) == 1


@pytest.mark.parametrize("argument", ["criterion", "optimizer", "scheduler"])
def test_a_class_given_for_its_instance_is_named_as_a_class(argument: str) -> None:
    """fit(model, nn.CrossEntropyLoss, ...) said "got type"; the class is named, and that an
    instance is wanted (as for a model's class)."""
    model = nn.mlp((2, 3, 2), "tanh")
    given: dict[str, Any] = {
        "criterion": nn.CrossEntropyLoss(),
        "optimizer": optim.SGD(model.parameters(), lr=0.1),
    }
    classes = {"criterion": nn.CrossEntropyLoss, "optimizer": optim.Adam}
    given[argument] = classes.get(argument, optim.StepDecay)
    kind = {"criterion": "Loss", "optimizer": "Optimizer", "scheduler": "LRScheduler or None"}
    name = given[argument].__name__
    with pytest.raises(TypeError) as info:
        fit(model, x=torch.randn(4, 2), y=torch.tensor([0, 1, 0, 1]), epochs=1, **given)
    assert str(info.value) == (
        f"fit: {argument} must be a minidl {kind[argument]}, got the class {name}; pass an "
        "instance, built with its arguments"
    )


def test_fit_checks_the_class_indices_of_a_built_in_loss_under_detect_anomaly() -> None:
    """detect_anomaly sets its check as the loss's forward: taken for a forward of the loss's
    own, fit left a class index out of range to the loss, which refused it mid-epoch, the
    model trained. The check over the class's forward is the built-in loss's."""
    from minidl.anomaly import detect_anomaly

    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    y[35] = 3
    model = nn.mlp((2, 4, 3), "tanh", generator=torch.Generator().manual_seed(1))
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), 0.1)
    before = [p.data.clone() for p in model.parameters()]
    with (
        detect_anomaly(model, criterion),
        pytest.raises(ValueError, match=r"^fit: y must hold class indices in \[0, 3\) .* got 3$"),
    ):
        fit(model, criterion, optimizer, x, y, epochs=2, batch_size=8)
    assert all(torch.equal(p.data, b) for p, b in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize("change", ["label out of range", "negative label", "resized"])
def test_a_validation_set_that_on_epoch_spoils_is_refused_after_it(change: str) -> None:
    """fit checked the validation set before training only: labels that on_epoch set out of
    range were counted as errors, silently (54, 58, 52% with one label 7), and a set resized
    failed in torch's words. The set is checked again after each on_epoch, as fit_rounds
    does; the epoch stays recorded."""
    from minidl.data import make_disk_data
    from minidl.train import History, fit

    data = make_disk_data(40, 20, 10, seed=1)
    x, y = data.validation.x.clone(), data.validation.y.clone()
    model = nn.mlp((2, 4, 2))
    history = History()

    def on_epoch(record: object) -> None:
        if change == "label out of range":
            y[0] = 7
        elif change == "negative label":
            y[3] = -1
        else:
            y.resize_(10)

    expected = {
        "label out of range": r"y must hold class indices in \[0, 2\) \(the model's outputs have 2 "
        r"columns\), got 7$",
        "negative label": r"y must hold class indices .*got -1",
        "resized": r"x and y must hold as many samples, got x of shape \(20, 2\) and y of shape "
        r"\(10,\)$",
    }[change]
    with pytest.raises(ValueError, match=r"^fit: validation \(changed by on_epoch\) " + expected):
        fit(
            model,
            nn.CrossEntropyLoss(),
            optim.SGD(model.parameters(), lr=0.1),
            data.train.x,
            data.train.y,
            epochs=3,
            batch_size=10,
            validation=(x, y),
            on_epoch=on_epoch,
            history=history,
        )
    assert len(history.train_loss) == 1


@pytest.mark.parametrize("change", ["item added", "item taken out", "x of other features"])
def test_a_validation_list_that_on_epoch_reshapes_is_refused_after_it(change: str) -> None:
    """A validation list that on_epoch gave a third item, or took one out of, failed with
    ``check_labelled() takes 4 positional arguments but 5 were given``; one whose x it replaced
    by one of 5 features trained another epoch, not recorded, and failed in Linear's words. Each
    is refused after on_epoch, before any more training; the epoch stays recorded."""
    from minidl.train import History, fit

    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    y = torch.arange(20) % 3
    validation: list[Tensor] = [x.clone(), y.clone()]

    def on_epoch(record: object) -> None:
        if change == "item added":
            validation.append(y)
        elif change == "item taken out":
            validation.pop()
        else:
            validation[0] = torch.randn(20, 5)

    model = nn.mlp((2, 4, 3))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    history = History()
    expected = {
        "item added": (
            TypeError,
            "on_epoch changed validation to a list of 3 items; it must stay "
            "an (x, y) pair of tensors",
        ),
        "item taken out": (
            TypeError,
            "on_epoch changed validation to a list of 1 item; it must "
            "stay an (x, y) pair of tensors",
        ),
        "x of other features": (
            ValueError,
            "validation (changed by on_epoch) x must hold samples like the training x",
        ),
    }[change]
    with pytest.raises(expected[0], match=r"^fit: " + re.escape(expected[1])):
        fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=3,
            batch_size=5,
            validation=validation,
            on_epoch=on_epoch,
            history=history,
        )
    assert len(history.train_loss) == 1 and optimizer.step_count == 4


@pytest.mark.parametrize("target", ["class index", "probabilities"])
def test_training_targets_that_on_epoch_makes_invalid_are_refused_after_it(target: str) -> None:
    """A training label made out of range by on_epoch (or a probability target made negative)
    is refused after on_epoch, as before training, before the next epoch takes a step: it
    failed part-way through that epoch, in the loss's words, its first steps taken, the
    model and the optimizer changed, the epoch unrecorded."""
    from minidl.train import History, fit

    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    y = torch.arange(20) % 2 if target == "class index" else torch.full((20, 2), 0.5)

    def on_epoch(record: object) -> None:
        if target == "class index":
            y[19] = 5
        else:
            y[19, 0] = -1.0

    model = nn.mlp((2, 5, 2), "tanh")
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    history = History()
    values: list[torch.Tensor] = []

    def noted(record: object) -> None:
        on_epoch(record)
        values.extend(p.data.clone() for p in model.parameters())

    with pytest.raises(ValueError) as refused:
        fit(
            model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=3, batch_size=4,
            on_epoch=noted, history=history,
        )  # fmt: skip
    if target == "class index":
        assert str(refused.value) == (
            "fit: training (changed by on_epoch) y must hold class indices in [0, 2) (the "
            "model's outputs have 2 columns), got 5"
        )
    else:
        assert "fit checked every target of y after on_epoch" in refused.value.__notes__
    assert len(history.train_loss) == 1 and optimizer.step_count == 5
    assert all(torch.equal(p.data, v) for p, v in zip(model.parameters(), values, strict=True))


@pytest.mark.parametrize("change", ["shrunk", "grown", "other dtype"])
def test_a_training_set_that_on_epoch_resizes_is_refused_after_it(change: str) -> None:
    """x and y resized in place by on_epoch (``resize_``, or x given float64 values through
    ``.data``) were taken: the next epoch ran on
    the batches of the new size while its loss was divided by the old count of batches (2/5
    of the true loss, 0.748 for 1.871). Refused after on_epoch, as fit_rounds refuses it."""
    from minidl.train import History, fit

    x = torch.randn(23, 3, generator=torch.Generator().manual_seed(0))
    y = torch.arange(23) % 3

    def on_epoch(record: object) -> None:
        if change == "shrunk":
            x.resize_(10, 3)
            y.resize_(10)
        elif change == "grown":
            x.resize_(30, 3)
            y.resize_(30)
        else:
            x.data = x.data.double()

    model = nn.mlp((3, 6, 3))
    optimizer = optim.SGD(model.parameters(), lr=0.0)
    history = History()
    name, shape, dtype = {
        "shrunk": ("x", "(10, 3)", "float32"),
        "grown": ("x", "(30, 3)", "float32"),
        "other dtype": ("x", "(23, 3)", "float64"),
    }[change]
    with pytest.raises(
        ValueError,
        match=r"^fit: on_epoch changed "
        + re.escape(
            f"{name} to shape {shape}, {dtype} on cpu, from (23, 3), float32 on cpu; the "
            "training set keeps its shape, dtype and device through a run (change its values in "
            "place)"
        )
        + "$",
    ):
        fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=2,
            batch_size=5,
            on_epoch=on_epoch,
            history=history,
        )
    assert len(history.train_loss) == 1 and optimizer.step_count == 5


@pytest.mark.parametrize(
    ("validation", "got"),
    [((1,), "a tuple of 1 item"), ((1, 2, 3), "a tuple of 3 items"), ("ab", "str")],
)
def test_a_validation_pair_of_other_length_is_named_by_its_length(
    validation: object, got: str
) -> None:
    """``validation=(x,)`` was refused as "got tuple", the kind that was asked for."""
    from minidl.train import fit

    model = nn.mlp((2, 3, 2))
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(
        TypeError, match=f"^fit: validation must be an \\(x, y\\) pair of tensors, got {got}$"
    ):
        fit(
            model,
            nn.CrossEntropyLoss(),
            optim.SGD(model.parameters(), lr=0.1),
            x,
            y,
            epochs=1,
            validation=validation,  # type: ignore[arg-type]
        )
