"""``minidl.train`` and ``minidl.data``: behaviours that changed code passed every other test
of (mutation testing). Each test names the change it catches and checks against an oracle:
``clip_grad_norm_`` itself, the documented result, or a run that gives the expected numbers.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.data import BatchIterator, disk_labels, make_disk_data
from minidl.train import error_rate, eval_mode, fit, predict

F64 = torch.float64


def test_fit_clips_the_optimizers_parameters_not_the_models() -> None:
    """With the first layer frozen (an optimizer over the last layer only), ``max_grad_norm``
    clips the optimizer's gradients to it (the docstring's "with the optimizer's parameters"):
    their total norm after the step is 0.01; clipped with the frozen layer's gradients in the
    norm, it was 0.0083, and the step smaller."""
    torch.manual_seed(0)
    model = nn.mlp((2, 8, 2), "tanh", dtype=F64)
    x, y = torch.randn(40, 2, dtype=F64), torch.randint(0, 2, (40,))
    params = list(model.parameters())
    fit(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(params[2:], lr=0.5),
        x,
        y,
        epochs=1,
        batch_size=40,
        max_grad_norm=0.01,
        generator=torch.Generator().manual_seed(0),
    )
    norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params[2:]]))
    assert float(norm) == pytest.approx(0.01, rel=1e-5)


class _Picky(nn.Module):
    """A module whose ``train(True)`` override raises before it sets its mode."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def train(self, mode: bool = True) -> _Picky:
        if mode:
            raise RuntimeError(f"{self.name}.train(True) failed")
        return super().train(mode)

    def forward(self, input: Tensor) -> Tensor:
        return input

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


def test_eval_mode_puts_every_mode_back_and_raises_the_first_failed_override() -> None:
    """Leaving ``eval_mode``, each module's own ``train`` is called; where two raise, every
    module is still put back in training mode (the attribute set by hand where the override
    failed) and the first error reaches the caller (not the last, nor none)."""
    model = nn.Sequential(nn.Linear(2, 2), _Picky("first"), _Picky("second"))
    with pytest.raises(RuntimeError, match=r"^first\.train\(True\) failed$"), eval_mode(model):
        assert [module.training for module in model.modules()] == [False] * 4
    assert [module.training for module in model.modules()] == [True] * 4


def test_a_model_of_one_output_predicts_class_0() -> None:
    """One score a sample (a logit of ``BCEWithLogitsLoss``): every prediction is class 0, as
    documented, and the error rate of labels all 0 is 0 (refused, as scores of no class)."""
    torch.manual_seed(0)
    model = nn.mlp((2, 4, 1))
    x = torch.randn(6, 2)
    assert predict(model, x).tolist() == [0] * 6
    assert error_rate(model, x, torch.zeros(6, dtype=torch.int64)) == 0.0


def test_a_resumed_runs_rates_are_checked_over_the_epochs_it_trains_only() -> None:
    """The rates ``fit`` checks before training are those of the epochs from ``start_epoch``
    on: a resumed run whose schedule reaches a rate past float32's range only after its last
    epoch trains (counted from epoch 0, fit refused it, naming an epoch that never runs)."""
    torch.manual_seed(0)
    model = nn.mlp((2, 4, 2))
    x, y = torch.randn(20, 2), torch.randint(0, 2, (20,))
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    schedule = optim.CyclicLR(optimizer, 0.01, 1e39, step_size_up=8)
    schedule.step()  # (epoch 0 done: one batch an epoch)
    history = fit(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        x,
        y,
        epochs=2,
        start_epoch=1,
        batch_size=20,
        scheduler=schedule,
    )
    assert history.batch_lr == [1.25e38]
    assert schedule.last_step == 2


@pytest.mark.parametrize(("bad", "kind"), [(-1, ValueError), (2.5, TypeError)])
def test_a_last_step_set_to_no_count_is_refused_by_fit_before_training(
    bad: Any, kind: type[Exception]
) -> None:
    """A negative ``last_step`` is refused by fit before any step, naming the schedule, as a
    fractional one is (allowed by fit's check, the schedule refused it after an epoch, the
    model trained)."""
    torch.manual_seed(0)
    model = nn.mlp((2, 4, 2))
    x, y = torch.randn(20, 2), torch.randint(0, 2, (20,))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    schedule = optim.StepDecay(optimizer, step_size=2)
    schedule.last_step = bad
    before = [p.data.clone() for p in model.parameters()]
    with pytest.raises(
        kind,
        match=rf"^fit: the StepDecay's last_step \(the steps done\) must be an integer >= 0, "
        rf"got {bad}$",
    ):
        fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=1,
            batch_size=10,
            scheduler=schedule,
        )
    assert all(torch.equal(p.data, q) for p, q in zip(model.parameters(), before, strict=True))


def test_a_backward_set_on_the_first_layers_instance_is_called_by_fit() -> None:
    """``fit`` honours a ``backward`` set on the instance of the first layer with parameters
    (it runs the step-by-step loop, which calls it once a batch), also in a model of several
    layers (looked for on the last layer, it was missed and never called)."""
    torch.manual_seed(0)
    model = nn.mlp((2, 4, 2), "tanh", dtype=F64)
    first = model[0]
    own = type(first).backward
    calls: list[tuple[int, ...]] = []

    def backward(grad_output: Tensor) -> Tensor:
        calls.append(tuple(grad_output.shape))
        return own(first, grad_output)

    first.backward = backward  # type: ignore[method-assign]
    x, y = torch.randn(20, 2, dtype=F64), torch.randint(0, 2, (20,))
    fit(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(model.parameters(), lr=0.1),
        x,
        y,
        epochs=1,
        batch_size=10,
    )
    assert calls == [(10, 4), (10, 4)]


def test_drop_last_without_shuffling_drops_the_last_samples() -> None:
    x, y = torch.arange(10.0).reshape(10, 1), torch.arange(10)
    batches = BatchIterator(x, y, 4, shuffle=False, drop_last=True)
    assert [b.tolist() for _, b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [a.flatten().tolist() for a, _ in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_normalize_refuses_points_on_the_meta_device_by_name() -> None:
    data = make_disk_data(20, 5, 5, seed=0)
    with pytest.raises(
        ValueError,
        match=r"^DiskData\.normalize: points are on the meta device, which holds no values",
    ):
        data.normalize(torch.zeros(3, 2, device="meta"))


def test_an_iterator_pickled_with_plain_attributes_loads() -> None:
    """An iterator pickled by a version whose attributes were plain (``batch_size``,
    ``shuffle``, ``drop_last``: not underscored) loads with each of them."""
    x, y = torch.arange(10.0).reshape(10, 1), torch.arange(10)
    old = BatchIterator.__new__(BatchIterator)
    old.__setstate__(
        {"x": x, "y": y, "batch_size": 4, "shuffle": False, "generator": None, "drop_last": True}
    )
    assert [b.tolist() for _, b in old] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(old) == 2


def test_disk_labels_names_the_first_point_that_is_not_finite() -> None:
    points = torch.tensor([[0.1, 0.2], [float("nan"), 0.5], [0.3, float("inf")]])
    with pytest.raises(ValueError, match=r"got \[nan, 0\.5\] at row 1 "):
        disk_labels(points)
