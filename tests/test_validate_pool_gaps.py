"""minidl._validate and minidl.experiments.pool under a third round of hand-made mutations:
tests, through the public API, that kill the bugs the suite let through (complex class
indices that reached torch's minimum, a 0-dim y that failed in an IndexError, a validation
set on another device refused only after training, a checkpoint whose repr writes addresses
in capitals, a group of the caller's own sequence type that no worker could be sent), each
against an exact message and the state a refusal leaves."""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from minidl import nn, optim
from minidl.checkpoint import load_checkpoint, save_checkpoint
from minidl.experiments import pool
from minidl.experiments.config import TABLE_II, Experiment
from minidl.nn.module import Module
from minidl.rounds import fit_rounds
from minidl.train import error_rate, fit

# -- helpers (the train function, importable, is run by a worker) -------------------------------


def _group_type(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[Any]:
    """The name of the type of the group the worker's train function was given, per row."""
    return [type(group).__name__] * len(group)


def _weights(model: nn.Module) -> list[torch.Tensor]:
    """A copy of the values of ``model``'s parameters, to compare after a refusal."""
    return [parameter.data.clone() for parameter in model.parameters()]


# -- _validate ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=str)
def test_error_rate_refuses_complex_class_indices_by_their_dtype(dtype: torch.dtype) -> None:
    """Class indices of a complex dtype are refused as not of an integer dtype, a TypeError
    naming the dtype (torch computes no minimum of them: its NotImplementedError "min_all not
    implemented for 'ComplexFloat'" named neither the function nor the labels)."""
    model = nn.Sequential(nn.Linear(2, 3))
    x, y = torch.randn(4, 2), torch.zeros(4, dtype=dtype)
    with pytest.raises(TypeError) as caught:
        error_rate(model, x, y)
    assert str(caught.value) == (
        f"error_rate: y must hold class indices of an integer dtype, got {dtype}"
    )


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (
            torch.randn(1, 2),
            torch.tensor(0),
            "y must hold class indices of shape (N,), got shape ()",
        ),
        (
            torch.tensor(0.5),
            torch.tensor([0]),
            "x and y must hold as many samples, got x of shape () and y of shape (1,)",
        ),
    ],
    ids=["0-dim y", "0-dim x"],
)
def test_a_0_dim_x_or_y_is_refused_as_holding_no_samples_by_error_rate_and_fit(
    x: torch.Tensor, y: torch.Tensor, message: str
) -> None:
    """A 0-dim ``x`` or ``y`` (one number, no sample dimension) is refused by its shape, a
    ValueError in the caller's name (error_rate's, fit's for a validation set), before the
    model runs or trains: let through, it failed in an IndexError (``tuple index out of
    range``) that named nothing."""
    model = nn.Sequential(nn.Linear(2, 3))
    with pytest.raises(ValueError) as caught:
        error_rate(model, x, y)
    assert str(caught.value) == f"error_rate: {message}"
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    before = _weights(model)
    with pytest.raises(ValueError) as caught:
        fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            torch.randn(4, 2),
            torch.tensor([0, 1, 2, 0]),
            epochs=1,
            batch_size=2,
            validation=(x, y),
        )
    assert str(caught.value) == f"fit: validation {message}"
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(model), strict=True))


def test_fit_rounds_refuses_a_validation_set_on_another_device_before_training() -> None:
    """A validation set on another device than the training sets (the meta device here) is
    refused before training, naming both devices, and leaves the models as they were: let
    through, it failed in BatchedLinear's words at the first validation, the models trained
    for an epoch. (Its class indices, on the meta device too, hold no values to check: they
    are not read, which raised torch's "Tensor.item() cannot be called on meta tensors".)"""
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
    validation = (torch.zeros(2, 2, device="meta"), torch.zeros(2, dtype=torch.long, device="meta"))
    models = [nn.Sequential(nn.Linear(2, 3))]
    before = _weights(models[0])
    with pytest.raises(ValueError) as caught:
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda model: optim.SGD(model.parameters(), lr=0.1),
            [(x, y)],
            epochs=1,
            batch_size=2,
            generators=[torch.Generator().manual_seed(0)],
            validation_sets=[validation],
        )
    assert str(caught.value) == (
        "fit_rounds: validation_sets[0] x must hold samples like the training x, of shape "
        "(N, 2), torch.float32 on cpu; got (N, 2), torch.float32 on meta"
    )
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(models[0]), strict=True))


def test_fit_refuses_a_validation_set_on_another_device_before_training() -> None:
    """So does fit: the model and its optimizer's step count are left as they were."""
    model = nn.Sequential(nn.Linear(2, 3))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
    validation = (torch.zeros(2, 2, device="meta"), torch.zeros(2, dtype=torch.long, device="meta"))
    before = _weights(model)
    with pytest.raises(ValueError) as caught:
        fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=1,
            batch_size=2,
            validation=validation,
        )
    assert str(caught.value) == (
        "fit: validation x must hold samples like the training x, of shape (N, 2), "
        "torch.float32 on cpu; got (N, 2), torch.float32 on meta"
    )
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(model), strict=True))


class _Shows(Module):
    """A module of one's own whose ``repr`` shows an object by its memory address."""

    def __init__(self, shown: object) -> None:
        super().__init__()
        self.shown = shown

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output

    def extra_repr(self) -> str:
        return f"shown={self.shown!r}"


class _WindowsDefaultRepr:
    """An object whose ``repr`` is a default one as Windows writes it: the address in capital
    hexadecimal digits (``<object object at 0x000001D8F2E6C6A0>``, ``%p`` there)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def __repr__(self) -> str:
        return f"<_WindowsDefaultRepr object at 0x{self.address}>"


def _showing(address: str) -> tuple[nn.Sequential, optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), _Shows(_WindowsDefaultRepr(address)), nn.Linear(3, 2))
    return model, optim.SGD(model.parameters(), lr=0.1)


def test_a_checkpoint_whose_repr_shows_an_address_in_capitals_loads_into_the_model_again(
    tmp_path: Path,
) -> None:
    """A model's repr is compared without the addresses of default reprs, which differ in every
    build of the model, whether written in small or capital hexadecimal digits (Windows): the
    model built again, at another address, takes the checkpoint."""
    model, optimizer = _showing("000001D8F2E6C6A0")
    for parameter in model.parameters():
        parameter.data.fill_(0.5)
    save_checkpoint(tmp_path / "run.ckpt", model, optimizer, epoch=1)
    again, again_optimizer = _showing("000001D8F2E6D7B0")
    assert load_checkpoint(tmp_path / "run.ckpt", again, again_optimizer).epoch == 1
    assert all(torch.equal(value, torch.full_like(value, 0.5)) for value in _weights(again))


# -- pool --------------------------------------------------------------------------------------


def test_a_group_of_the_callers_own_sequence_type_reaches_the_worker_as_a_list() -> None:
    """train_groups takes any sequence of Experiment as a group, and a worker's train function
    gets it as a list: a group of a type that cannot be pickled (a tuple subclass defined in a
    function) is trained, not failed in pickle's words while it was sent to the worker."""

    class Rows(tuple):  # type: ignore[type-arg]
        pass

    groups = [Rows((TABLE_II[0], TABLE_II[1])), (TABLE_II[2],)]
    results: list[Any] = pool.train_groups(groups, 1, 0, jobs=1, train=_group_type)
    assert results == [["list", "list"], ["list"]]
    assert multiprocessing.active_children() == []
