"""Behaviour of ``minidl.rounds`` that a fourth mutation audit found untested.

Each test pins down a behaviour against an oracle: the documented error (type and the exact
words of its message, the state compared after it), or the same run through another path.
"""

from __future__ import annotations

import pytest
import torch

from minidl import nn
from minidl.data import make_disk_data
from minidl.optim import SGD
from minidl.rounds import PerModel, fit_rounds, stacked_error_rates

F64 = torch.float64


def _generators(count: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(r) for r in range(count)]


def _mlps(count: int = 2, sizes: tuple[int, ...] = (2, 5, 2)) -> list[nn.Sequential]:
    return [
        nn.mlp(sizes, "tanh", dtype=F64, generator=torch.Generator().manual_seed(r))
        for r in range(count)
    ]


def _sets(count: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = [make_disk_data(40, 10, 10, seed=r, dtype=F64) for r in range(count)]
    return [(d.train.x.clone(), d.train.y.clone()) for d in data]


def _state(models: list[nn.Sequential]) -> list[list[torch.Tensor]]:
    return [[p.data.clone() for p in m.parameters()] for m in models]


def _same(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> bool:
    return all(
        torch.equal(p, q) for pa, pb in zip(a, b, strict=True) for p, q in zip(pa, pb, strict=True)
    )


def test_stacked_error_rates_refuses_inputs_and_labels_on_the_meta_device() -> None:
    """x and y both on the meta device hold no values: refused as such, in the function's words
    (not in torch's, from the forward or the count of a meta tensor)."""
    stack = nn.stack_models(_mlps())
    x = torch.empty(2, 3, 2, dtype=F64, device="meta")
    y = torch.empty(2, 3, dtype=torch.int64, device="meta")
    with pytest.raises(ValueError) as caught:
        stacked_error_rates(stack, x, y)
    assert str(caught.value) == (
        "stacked_error_rates: x and y are on the meta device, which holds shapes and no values"
        ": there are no errors to count"
    )


def test_one_pair_given_as_the_training_sets_of_one_model_is_refused_as_such() -> None:
    """For one model, ``(x, y)`` where ``[(x, y)]`` belongs: refused as one pair (it would
    otherwise be counted as 2 sets), before anything changes."""
    models = _mlps(1)
    before = _state(models)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    with pytest.raises(TypeError) as caught:
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            _sets(1)[0],  # type: ignore[arg-type]
            epochs=1,
            generators=[generator],
        )
    assert str(caught.value) == (
        "fit_rounds: train_sets must be a list of (x, y) pairs, one per model, got one (x, y) "
        "pair of tensors (for one model: [(x, y)])"
    )
    assert _same(_state(models), before)
    assert torch.equal(generator.get_state(), state)


def test_a_bad_step_count_of_a_later_per_model_optimizer_is_named_by_its_index() -> None:
    """The first-step check names the PerModel optimizer by its own index (1 here)."""
    models = _mlps(2)
    before = _state(models)

    def factory(index: int, parameters: list) -> SGD:
        optimizer = SGD(parameters, lr=0.1)
        if index == 1:
            optimizer.step_count = -1
        return optimizer

    with pytest.raises((TypeError, ValueError)) as caught:
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            PerModel(factory),
            _sets(2),
            epochs=1,
            generators=_generators(2),
        )
    assert "optimizer 1 (SGD)'s step_count" in str(caught.value)
    assert "optimizer 0" not in str(caught.value)
    assert _same(_state(models), before)


def test_per_model_groups_record_their_own_optimizers_rates_and_batch_rates() -> None:
    """With group=2 and 4 models, models 0-1 use optimizer 0 and models 2-3 optimizer 1: each
    history records its own group's rate, and only the models whose schedule steps per batch
    record batch rates (one per batch)."""
    from minidl.optim import ExponentialDecay

    rates = [0.1, 0.2]
    intervals = ["batch", "epoch"]
    histories = fit_rounds(
        _mlps(4),
        nn.CrossEntropyLoss(),
        PerModel(lambda g, p: SGD(p, lr=rates[g]), group=2),
        _sets(4),
        epochs=2,
        batch_size=10,
        generators=_generators(4),
        make_scheduler=lambda o: ExponentialDecay(
            o, gamma=0.5, interval=intervals[rates.index(o.lr)]
        ),
    )
    assert [h.lr for h in histories] == [
        [0.1, 0.1 * 0.5**4],
        [0.1, 0.1 * 0.5**4],
        [0.2, 0.1],
        [0.2, 0.1],
    ]
    assert [h.batch_lr for h in histories[:2]] == [[0.1 * 0.5**k for k in range(8)]] * 2
    assert [h.batch_lr for h in histories[2:]] == [[], []]


def test_on_epoch_returning_zero_is_refused_as_no_bool() -> None:
    """0 is no bool: refused after the epoch (as fit refuses it), not taken as 'go on'."""
    models = _mlps(2)
    with pytest.raises(TypeError) as caught:
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            _sets(2),
            epochs=2,
            generators=_generators(2),
            on_epoch=lambda epoch, records: 0,
        )
    assert str(caught.value).startswith(
        "fit_rounds: on_epoch must return None or a bool (True stops the training after its "
        "epoch; a tensor of one bool too), got "
    )


def test_a_set_written_through_data_is_not_read_again_as_documented() -> None:
    """Written through ``.data`` (no version counter moves), a training set is not read again:
    the run trains on the values stacked before, as the docstring says (on_epoch)."""

    def run(write: bool) -> list:
        train = _sets(2)

        def on_epoch(epoch: int, records: object) -> None:
            if write and epoch == 0:
                train[1][0].data.mul_(3.0)

        return fit_rounds(
            _mlps(2),
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            train,
            epochs=3,
            generators=_generators(2),
            on_epoch=on_epoch,
        )

    assert run(True) == run(False)


def test_sets_of_inference_tensors_train_as_ordinary_ones_with_on_epoch() -> None:
    """Sets made in inference mode (no version counter) train as their ordinary copies, with
    an on_epoch (they are then read again after every epoch)."""

    def run(inference: bool) -> tuple[list, list]:
        sets = _sets(2)
        if inference:
            with torch.inference_mode():
                sets = [(x.clone(), y.clone()) for x, y in sets]
            assert sets[0][0].is_inference()
        models = _mlps(2)
        histories = fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            sets,
            epochs=2,
            generators=_generators(2),
            on_epoch=lambda epoch, records: None,
        )
        return histories, _state(models)

    (h1, s1), (h2, s2) = run(True), run(False)
    assert h1 == h2
    assert _same(s1, s2)


@pytest.mark.parametrize("name", ["make_scheduler", "on_epoch"])
def test_a_scheduler_maker_or_on_epoch_that_is_no_callable_is_refused_before_training(
    name: str,
) -> None:
    """A ``make_scheduler`` or ``on_epoch`` that cannot be called is refused up front, in
    fit_rounds' words, nothing trained (not at its first call: a scheduler maker's as Python's
    "'int' object is not callable", an on_epoch's after an epoch had trained every model).
    (Mutant R14: the check removed.)"""
    models = _mlps(2)
    before = _state(models)
    with pytest.raises(TypeError, match=rf"^fit_rounds: {name} must be callable or None, got int$"):
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            _sets(2),
            epochs=1,
            generators=_generators(2),
            **{name: 5},  # type: ignore[arg-type]
        )
    assert _same(_state(models), before)


def test_a_scheduler_built_on_another_optimizer_is_refused_naming_its_optimizer() -> None:
    """``make_scheduler`` returning a schedule built on another optimizer than the one it was
    given (which would set that one's rate while the stack's stayed as it was) is refused,
    naming the optimizer's index, nothing trained. (Mutant R18: the check removed; the stack
    trained at the unscheduled rate.)"""
    from minidl.optim import ExponentialDecay

    models = _mlps(2)
    before = _state(models)
    other = SGD([nn.Parameter(torch.zeros(2, dtype=F64))], lr=0.1)
    with pytest.raises(
        ValueError,
        match=r"^fit_rounds: make_scheduler returned a ExponentialDecay for optimizer 0 that "
        r"schedules another optimizer; build it on the optimizer it is given$",
    ):
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            _sets(2),
            epochs=1,
            generators=_generators(2),
            make_scheduler=lambda optimizer: ExponentialDecay(other, gamma=0.5),
        )
    assert _same(_state(models), before)
    assert other.lr == 0.1
