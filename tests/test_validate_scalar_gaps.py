"""minidl._validate and minidl._scalar under a further round of hand-made mutations: tests,
through the public API, that kill the bugs the suite let through (a nested tensor that broke a
refusal's message, an interrupt dressed with a Sequential's note, the words of fit_rounds's
refusals of its sets, a value at an open bound, the largest tensor size), each against an exact message."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.rounds import fit_rounds


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_a_nested_tensor_given_as_a_setting_is_refused_in_its_own_words() -> None:
    """A nested tensor has no single shape (torch's "NestedTensorImpl doesn't support sizes"):
    one of more than 20 elements given where a number goes is written as ``repr`` writes it,
    so that the refusal names the setting, not a RuntimeError raised while writing it."""
    given = torch.nested.nested_tensor([torch.zeros(10), torch.zeros(15)])
    with pytest.raises(TypeError) as caught:
        nn.Dropout(given)  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"Dropout: p must be a finite number in [0, 1) (a float or an int), got Tensor {given!r}"
    )


def test_an_interrupt_inside_a_sequential_passes_through_without_a_note() -> None:
    """A ``KeyboardInterrupt`` raised by a child's forward reaches the caller as it was raised:
    the note naming the module at fault is added to errors (``Exception``), not to an
    interrupt (Ctrl-C's traceback ends with nothing of the model's)."""

    class Stops(nn.Tanh):
        def _forward(self, input: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
            raise KeyboardInterrupt

    model = nn.Sequential(nn.Linear(2, 2), Stops())
    with pytest.raises(KeyboardInterrupt) as caught:
        model(torch.randn(4, 2))
    assert getattr(caught.value, "__notes__", None) is None


def _fit_rounds(train_sets: list[Any], validation_sets: list[Any] | None = None) -> None:
    """``fit_rounds`` of one epoch on ``train_sets``: it refuses the sets before training."""
    models = [nn.Sequential(nn.Linear(2, 3)) for _ in train_sets]
    fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        lambda model: optim.SGD(model.parameters(), lr=0.1),
        train_sets,
        epochs=1,
        batch_size=2,
        generators=[torch.Generator().manual_seed(index) for index in range(len(train_sets))],
        validation_sets=validation_sets,
    )


@pytest.mark.parametrize(
    ("pair", "described"),
    [((), "a tuple of 0 items"), ((torch.zeros(4, 2),), "a tuple of 1 item")],
    ids=["0 items", "1 item"],
)
def test_fit_rounds_names_how_many_items_a_set_that_is_no_pair_holds(
    pair: tuple[Tensor, ...], described: str
) -> None:
    """A training set that is no ``(x, y)`` pair is described by its number of items, in
    English: "0 items" (plural), "1 item"."""
    with pytest.raises(TypeError) as caught:
        _fit_rounds([pair])
    assert str(caught.value) == (
        f"fit_rounds: train_sets[0] must be an (x, y) pair of tensors, got {described}"
    )


def test_fit_rounds_refuses_a_validation_set_split_across_devices_in_full_words() -> None:
    """A validation set whose x and y lie on two devices is refused before training, naming
    the set and both devices."""
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
    validation = (torch.zeros(2, 2), torch.zeros(2, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError) as caught:
        _fit_rounds([(x, y)], [validation])
    assert str(caught.value) == (
        "fit_rounds: validation_sets[0] x and y must be on one device, got cpu and meta"
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: nn.Dropout(1.0), "Dropout: p must be in [0, 1), got 1.0"),
        (
            lambda: optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=1.0),
            "SGD: momentum must be in [0, 1), got 1.0",
        ),
    ],
    ids=["Dropout p=1", "SGD momentum=1"],
)
def test_a_value_at_an_open_upper_bound_is_refused(make: Any, message: str) -> None:
    """A bound that a range excludes (``[0, 1)``) is refused when given exactly: a dropout of
    probability 1 zeroes every input (and scales by 1 / 0); a momentum of 1 never decays."""
    with pytest.raises(ValueError) as caught:
        make()
    assert str(caught.value) == message


def test_the_largest_tensor_size_is_a_size_and_is_refused_only_for_its_storage() -> None:
    """2**63 - 1 is the largest size a tensor dimension takes: a layer of that many inputs is
    refused for its storage (its bytes overflow), not as a size beyond 2**63 - 1, which would
    contradict itself; 2**63 is refused as a size."""
    with pytest.raises(ValueError) as caught:
        nn.Linear(2**63 - 1, 1, device="meta")
    assert str(caught.value).startswith(
        "Linear: cannot hold a weight of 1 x 9223372036854775807 and its bias ("
    )
    with pytest.raises(ValueError) as caught:
        nn.Linear(2**63, 1, device="meta")
    assert str(caught.value) == (
        "Linear: in_features must be at most 2**63 - 1 (the largest tensor size), got "
        "9223372036854775808"
    )
