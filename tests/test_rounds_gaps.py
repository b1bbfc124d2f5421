"""Behaviour of ``minidl.rounds`` that a second mutation audit found untested.

Each test pins down a behaviour against an oracle: a run of fit_rounds whose sets are read
again (a copy of the same values), or the documented error (type and the words of its message).
The audit's rest added a set that on_epoch puts back after another, and a string given for a
list.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
import torch

from minidl import nn
from minidl.data import make_disk_data
from minidl.nn.parameter import Parameter
from minidl.optim import SGD
from minidl.rounds import PerModel, fit_rounds, stacked_error_rates

F64 = torch.float64


def _generators(count: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(r) for r in range(count)]


def test_a_non_sequential_given_twice_is_refused_as_no_sequential() -> None:
    """A Linear given for two models is refused as what it is (no Sequential), not as a model
    given twice: the check of a repeated model only speaks of models that are Sequentials."""
    linear = nn.Linear(2, 2, generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    with pytest.raises(TypeError) as caught:
        fit_rounds(
            [linear, linear],  # type: ignore[list-item]
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            [(x, y), (x, y)],
            epochs=1,
            generators=_generators(2),
        )
    assert str(caught.value) == "fit_rounds: models[0] must be a minidl Sequential, got Linear"


def _two_mlps() -> list[nn.Sequential]:
    return [
        nn.mlp((2, 5, 2), "tanh", dtype=F64, generator=torch.Generator().manual_seed(r))
        for r in range(2)
    ]


def _disk_sets() -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = [make_disk_data(40, 10, 10, seed=r, dtype=F64) for r in range(2)]
    return [(d.train.x.clone(), d.train.y.clone()) for d in data]


def _trained_with(change: str, fresh: bool) -> tuple[list[nn.Sequential], list[list[float]]]:
    """Two models trained 3 epochs; after the first epoch on_epoch puts in train_sets[1] an x of
    other values, made by ``change``; ``fresh``: a new tensor of those values (the oracle)."""
    models, train = _two_mlps(), _disk_sets()

    def on_epoch(epoch: int, records: object) -> None:
        if epoch != 0:
            return
        x, y = train[1]
        if change == "view":  # (a view of x's memory: x's address and version counter)
            new = x.as_strided((40, 2), (1, 40))
        else:  # (x's .data replaced: the same tensor object, of other values)
            new = x
            x.data = torch.flip(x.data, dims=(0,)).clone()
        train[1] = (new.clone() if fresh else new, y)

    histories = fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        lambda stack: SGD(stack.parameters(), lr=0.1),
        train,
        epochs=3,
        batch_size=8,
        generators=_generators(2),
        on_epoch=on_epoch,
    )
    return models, [h.train_loss for h in histories]


@pytest.mark.parametrize("change", ["view", "data"])
def test_a_tensor_put_in_place_of_a_set_with_its_address_is_read_again(change: str) -> None:
    """on_epoch putting another tensor in a set is read again before the next epoch, as fit
    reads its data each epoch, also where that tensor has the old one's address and version
    counter (a view of its memory, or its .data replaced): the run equals one given a new
    tensor of the same values."""
    models, losses = _trained_with(change, fresh=False)
    expected_models, expected_losses = _trained_with(change, fresh=True)
    assert losses == expected_losses
    for model, expected in zip(models, expected_models, strict=True):
        for p, q in zip(model.parameters(), expected.parameters(), strict=True):
            assert torch.equal(p.data, q.data)


def test_a_later_groups_optimizer_holding_a_parameter_outside_the_stack_names_its_models() -> None:
    """With max_grad_norm, the optimizer of the second group of two models (models 2 and 3)
    that holds a parameter outside the stack is refused naming its own models, before
    anything changes (the models' values are as they were)."""
    extra = Parameter(torch.ones(3, dtype=F64))
    models = [
        nn.mlp((2, 3, 2), "tanh", dtype=F64, generator=torch.Generator().manual_seed(r))
        for r in range(4)
    ]
    before = [[p.data.clone() for p in model.parameters()] for model in models]
    x, y = torch.randn(6, 2, dtype=F64), torch.tensor([0, 1, 1, 0, 1, 0])
    with pytest.raises(ValueError) as caught:
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            PerModel(lambda g, p: SGD([*p, extra] if g == 1 else p, lr=0.1), group=2),
            [(x, y)] * 4,
            epochs=1,
            generators=_generators(4),
            max_grad_norm=0.5,
        )
    assert str(caught.value).startswith(
        "fit_rounds: with max_grad_norm, each model's gradients are clipped to their own norm, "
        f"but optimizer 1, of models 2 to 3, holds {extra!r}, which is not the parameter of "
        "one model in the stack"
    )
    for model, values in zip(models, before, strict=True):
        assert all(torch.equal(p.data, v) for p, v in zip(model.parameters(), values, strict=True))


# -- the rest of the audit: a set put back, a string given for a list --------------------------------


def _swapped_back(fresh: bool) -> tuple[list[nn.Sequential], list[list[float]]]:
    """Two models trained 4 epochs; on_epoch puts in train_sets[1] another x (its samples in
    reverse order) after epoch 0, and the first x back after epoch 1 (e.g. a curriculum that
    alternates two sets). ``fresh``: each is put as a new tensor of its values (the oracle)."""
    data = [make_disk_data(40, 10, 10, seed=r, dtype=F64) for r in range(2)]
    train = [(d.train.x.clone(), d.train.y.clone()) for d in data]
    first, y = train[1]
    other = torch.flip(first, dims=(0,)).clone()

    def on_epoch(epoch: int, records: object) -> None:
        if epoch > 1:
            return
        x = other if epoch == 0 else first
        train[1] = (x.clone() if fresh else x, y)

    models = _two_mlps()
    histories = fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        lambda stack: SGD(stack.parameters(), lr=0.1),
        train,
        epochs=4,
        batch_size=8,
        generators=_generators(2),
        on_epoch=on_epoch,
    )
    return models, [h.train_loss for h in histories]


def test_a_set_put_back_by_on_epoch_after_another_trains_the_next_epochs() -> None:
    """A set's x that on_epoch replaces by another tensor, and then puts back (the very tensor
    given at the start, unchanged), trains the epochs after it, as fit reads its data each
    epoch: the sets are compared with those last read, not with those given at the start
    (which the tensor put back equals in object, address and version counter, so that the
    stack kept the other x's values). The run equals one given new tensors of the same
    values."""
    models, losses = _swapped_back(fresh=False)
    expected_models, expected_losses = _swapped_back(fresh=True)
    assert losses == expected_losses
    for model, expected in zip(models, expected_models, strict=True):
        for p, q in zip(model.parameters(), expected.parameters(), strict=True):
            assert torch.equal(p.data, q.data)


@pytest.mark.parametrize("name", ["models", "train_sets", "generators", "validation_sets"])
def test_a_string_given_for_a_list_is_refused_as_no_list(name: str) -> None:
    """A str, a Sequence of as many one-character strings as it is long, given for one of the
    per-model lists is refused as no list or tuple (as a single model or tensor is), before
    anything changes, not as a list whose items are strings."""
    models = _two_mlps()
    before = [[p.data.clone() for p in model.parameters()] for model in models]
    x, y = torch.randn(6, 2, dtype=F64), torch.tensor([0, 1, 1, 0, 1, 0])
    arguments: dict[str, Any] = {
        "models": models,
        "train_sets": [(x, y), (x, y)],
        "generators": _generators(2),
        "validation_sets": None,
    }
    arguments[name] = "ab"
    with pytest.raises(TypeError) as caught:
        fit_rounds(
            arguments["models"],
            nn.CrossEntropyLoss(),
            lambda stack: SGD(stack.parameters(), lr=0.1),
            arguments["train_sets"],
            epochs=1,
            generators=arguments["generators"],
            validation_sets=arguments["validation_sets"],
        )
    assert (
        str(caught.value) == f"fit_rounds: {name} must be a list or tuple, one per model, got str"
    )
    for model, values in zip(models, before, strict=True):
        assert all(torch.equal(p.data, v) for p, v in zip(model.parameters(), values, strict=True))


# -- a third pass of mutation testing over rounds.py (2026-12-07) --------------------------------


def _mlps(count: int, sizes: tuple[int, ...] = (2, 5, 2)) -> list[nn.Sequential]:
    return [
        nn.mlp(sizes, "tanh", dtype=F64, generator=torch.Generator().manual_seed(r))
        for r in range(count)
    ]


def _sets(count: int, samples: int = 40) -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = [make_disk_data(samples, 10, 10, seed=r, dtype=F64) for r in range(count)]
    return [(d.train.x.clone(), d.train.y.clone()) for d in data]


def _values(models: list[nn.Sequential]) -> list[list[torch.Tensor]]:
    return [[p.data.clone() for p in model.parameters()] for model in models]


def _assert_values(models: list[nn.Sequential], values: list[list[torch.Tensor]]) -> None:
    for model, before in zip(models, values, strict=True):
        for p, q in zip(model.parameters(), before, strict=True):
            assert torch.equal(p.data, q)


def _sgd(stack: nn.Sequential) -> SGD:
    return SGD(stack.parameters(), lr=0.1)


# --- stacked_error_rates


def test_stacked_error_rates_names_inputs_of_fewer_models_than_the_stack() -> None:
    """x holding the inputs of fewer models than the stack is refused in the function's words,
    as one of more models is (not by the first stacked layer, in its own)."""
    stacked = nn.stack_models(_mlps(2))
    x, y = torch.randn(1, 5, 2, dtype=F64), torch.zeros(1, 5, dtype=torch.int64)
    with pytest.raises(
        ValueError,
        match=r"^stacked_error_rates: x of shape \(1, 5, 2\) holds the inputs of 1 models, "
        r"the stack 2$",
    ):
        stacked_error_rates(stacked, x, y)
    assert stacked.training


# --- fit_rounds: refusals before anything changes


def test_a_parameter_shared_under_another_name_names_both_names() -> None:
    """models[1]'s last layer holding models[0]'s first weight is refused naming the parameter
    by its name in each model ('2.weight' in models[1], '0.weight' in models[0])."""
    models = _mlps(2, (2, 2, 2))
    models[1][2].register_parameter("weight", models[0][0].weight)
    values = _values(models)
    with pytest.raises(
        ValueError,
        match=r"^fit_rounds: models\[1\] shares its parameter '2\.weight' with models\[0\] "
        r"\('0\.weight'\); each round needs parameters of its own$",
    ):
        fit_rounds(
            models, nn.CrossEntropyLoss(), _sgd, _sets(2), epochs=1, generators=_generators(2)
        )
    _assert_values(models, values)


def test_one_empty_training_set_is_refused_as_empty() -> None:
    """One model (R = 1) given an empty training set is refused as with several models."""
    models = _mlps(1)
    values = _values(models)
    x, y = _sets(1)[0]
    with pytest.raises(ValueError, match=r"^fit_rounds: the training sets are empty$"):
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            _sgd,
            [(x[:0], y[:0])],
            epochs=1,
            generators=_generators(1),
        )
    _assert_values(models, values)


def test_targets_alone_on_the_meta_device_are_refused_as_meta() -> None:
    """Training targets on the meta device (the inputs on the CPU) hold no values: refused as
    sets on the meta device, naming fit_rounds, before anything changes."""
    models = _mlps(2)
    values = _values(models)
    sets = [(x, y.to("meta")) for x, y in _sets(2)]
    with pytest.raises(
        ValueError,
        match=r"^fit_rounds: the training sets are on the meta device, which holds shapes and no "
        r"values; fit_rounds trains on values \(its losses and errors are numbers\)$",
    ):
        fit_rounds(models, nn.CrossEntropyLoss(), _sgd, sets, epochs=1, generators=_generators(2))
    _assert_values(models, values)


def _probability_sets() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two sets of target rows: the second's later rows are no probabilities (they sum to 2),
    which MSELoss takes and CrossEntropyLoss refuses; every first row sums to 1."""
    sets = []
    for x, y in _sets(2):
        rows = torch.nn.functional.one_hot(y, 2).to(F64)
        sets.append((x, rows))
    sets[1][1][5:] *= 2.0
    return sets


def test_targets_made_bad_by_on_epoch_are_refused_saying_when() -> None:
    """Training targets that on_epoch makes no probabilities are refused before the next epoch,
    the refusal naming the set as changed by on_epoch and its note saying the check ran after
    on_epoch; the models hold the first epoch's training, as a run of one epoch leaves them."""
    models, expected = _mlps(2), _mlps(2)
    sets = _probability_sets()
    sets[1][1][5:] /= 2.0  # (probabilities: the run takes them)
    criterion = nn.CrossEntropyLoss()

    def on_epoch(epoch: int, records: object) -> None:
        sets[0][1][7:] *= 3.0

    with pytest.raises(
        ValueError, match=r"^fit_rounds: the targets of train_sets\[0\] \(changed by on_epoch\): "
    ) as caught:
        fit_rounds(
            models,
            criterion,
            _sgd,
            sets,
            epochs=3,
            batch_size=8,
            generators=_generators(2),
            on_epoch=on_epoch,
        )
    assert caught.value.__notes__ == [
        "fit_rounds checked every target of each training set after on_epoch"
    ]
    fresh = _probability_sets()
    fresh[1][1][5:] /= 2.0
    fit_rounds(expected, criterion, _sgd, fresh, epochs=1, batch_size=8, generators=_generators(2))
    _assert_values(models, _values(expected))


# --- fit_rounds: interrupts


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals")
def test_on_epoch_of_fit_rounds_is_interrupted_as_the_signal_comes() -> None:
    """on_epoch, the caller's code, is not deferred (as in fit): a Ctrl-C in it is raised there,
    at once, not held until the next step; the models hold the first epoch's training, as a
    run of one epoch leaves them."""
    models, expected = _mlps(2), _mlps(2)
    reached: list[str] = []

    def waiting(epoch: int, records: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # (the handler raises in the call, or as it returns)
        reached.append("after")

    with pytest.raises(KeyboardInterrupt):
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            _sgd,
            _sets(2),
            epochs=3,
            batch_size=8,
            generators=_generators(2),
            on_epoch=waiting,
        )
    assert reached == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    fit_rounds(
        expected,
        nn.CrossEntropyLoss(),
        _sgd,
        _sets(2),
        epochs=1,
        batch_size=8,
        generators=_generators(2),
    )
    _assert_values(models, _values(expected))
