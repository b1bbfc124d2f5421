"""``minidl.anomaly``, ``minidl.interop`` and ``minidl.checkpoint``: behaviours that changed
code passed every other test of (mutation testing). Each test names what it pins: the
documented refusal or result, checked against the original behaviour's words and values.
"""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.anomaly import AnomalyError, detect_anomaly
from minidl.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from minidl.interop import ConversionError, from_torch, to_torch

NAN_ROW = [[float("nan"), 0.0]]


class _Pair(nn.Module):
    """Returns a list of two outputs, the second NaN."""

    def forward(self, input: Tensor) -> list[Tensor]:  # type: ignore[override]
        return [input, input / 0.0 * 0.0]

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


def test_each_output_of_a_list_is_checked() -> None:
    """(Only tuples were looked into: the NaN of a list's second output went through.)"""
    module = _Pair()
    with (
        detect_anomaly(module),
        pytest.raises(
            AnomalyError,
            match=r"^forward output 1 of _Pair: non-finite value nan at index \(0, 0\)",
        ),
    ):
        module(torch.ones(1, 2))


def test_watching_given_modules_leaves_the_others_unchecked() -> None:
    """``detect_anomaly(module)`` checks that module only: the process-wide form stays off."""
    from minidl import anomaly

    other = nn.Sequential(nn.Identity())
    with detect_anomaly(nn.Identity()):
        assert not anomaly.enabled
        assert torch.isnan(other(torch.tensor(NAN_ROW))[0, 0])


def test_a_module_reachable_from_two_given_roots_is_named_by_its_path_in_the_outer_one() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    with (
        detect_anomaly(model, model[1]),
        pytest.raises(
            AnomalyError, match=r"^forward input of Sequential\[1\]: Tanh: non-finite value nan"
        ),
    ):
        model[1](torch.tensor(NAN_ROW))


def test_an_anomaly_inside_a_residuals_block_gets_no_note_of_a_refused_backward() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Residual(nn.Sequential(nn.Linear(2, 2), nn.Tanh())))
    with detect_anomaly():
        model(torch.ones(1, 2))
        model[1].block[0].weight.data[0, 0] = float("nan")
        with pytest.raises(AnomalyError) as error:
            model.backward(torch.ones(1, 2))
    assert str(error.value).startswith(
        "backward returned gradient of Sequential[1].block[0]: Linear"
    )
    assert getattr(error.value, "__notes__", None) is None


def test_a_gradient_given_by_keyword_is_checked_on_its_way_in() -> None:
    tanh = nn.Tanh()
    with detect_anomaly(tanh):
        tanh(torch.ones(1, 2))
        with pytest.raises(AnomalyError, match=r"^backward incoming gradient of Tanh: non-finite"):
            tanh.backward(grad_output=torch.tensor(NAN_ROW))


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("num_batches_tracked", torch.tensor(True), "has dtype torch.bool; expected integers"),
        ("running_var", torch.tensor([1, 2, 3]), "has dtype torch.int64; expected a floating"),
        ("running_mean", torch.tensor([1, 2, 3]), "has dtype torch.int64; expected a floating"),
    ],
)
def test_from_torch_refuses_a_batch_norm_buffer_of_another_kind_of_dtype(
    name: str, value: Tensor, expected: str
) -> None:
    """(A bool count and an integer running variance were cast and converted.)"""
    layer = torch.nn.BatchNorm1d(3)
    setattr(layer, name, value)
    with pytest.raises(ConversionError, match=rf"its {name} {expected}"):
        from_torch(layer)


def test_to_torch_names_a_model_that_was_never_initialised() -> None:
    with pytest.raises(
        AttributeError, match=r"^to_torch: the model, a Tanh, was not initialised as a Module"
    ):
        to_torch(nn.Tanh.__new__(nn.Tanh))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_replaced_checkpoint_keeps_permissions_the_umask_would_take_away(tmp_path: Path) -> None:
    """0o666 kept as it is under a umask of 0o022 (a new file's mode would be 0o644)."""
    path = tmp_path / "run.ckpt"
    model = nn.Sequential(nn.Linear(2, 2))
    umask = os.umask(0o022)
    try:
        save_checkpoint(path, model)
        os.chmod(path, 0o666)
        save_checkpoint(path, model)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666


def test_a_header_with_an_unknown_scheduler_interval_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    model = nn.Linear(2, 2)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(path, model, optimizer, optim.StepDecay(optimizer, step_size=2))
    saved = read_checkpoint(path)
    header = copy.deepcopy(saved.header)
    header["scheduler"]["interval"] = "hour"
    with pytest.raises(
        CheckpointError, match=r"scheduler\.interval must be 'epoch' or 'batch', got 'hour'"
    ):
        Checkpoint(header=header, tensors=dict(saved.tensors))


class _Twice(nn.Module):
    """One Dropout with a generator of its own, registered as ``a`` and as ``b``."""

    def __init__(self) -> None:
        super().__init__()
        dropout = nn.Dropout(0.5, generator=torch.Generator().manual_seed(1))
        self.register_module("linear", nn.Linear(2, 2))
        self.register_module("a", dropout)
        self.register_module("b", dropout)

    def forward(self, input: Tensor) -> Tensor:
        return self.b(self.a(self.linear(input)))

    def backward(self, grad_output: Tensor) -> Tensor:
        return self.linear.backward(self.a.backward(self.b.backward(grad_output)))


def test_a_module_registered_at_two_places_saves_its_generator_under_each(tmp_path: Path) -> None:
    """(Saved once, the file names a module at one place only, which a model of the same
    architecture refuses to load.)"""
    path = tmp_path / "run.ckpt"
    model = _Twice()
    save_checkpoint(path, model, optim.SGD(model.parameters(), lr=0.1))
    saved = read_checkpoint(path)
    assert sorted(k for k in saved.tensors if k.startswith("rng.module")) == [
        "rng.module.a",
        "rng.module.b",
    ]
    assert saved.header["module_generators"] == ["a", "b"]
    load_checkpoint(path, _Twice())


class _Noise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rngs = {True: torch.Generator().manual_seed(0)}

    def forward(self, input: Tensor) -> Tensor:
        return input

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


def test_a_generator_under_a_bool_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"must be a str or an int, got bool"):
        save_checkpoint(tmp_path / "run.ckpt", nn.Sequential(nn.Linear(2, 2), _Noise()))


def test_a_repr_past_the_lines_shown_is_given_as_the_lines_that_differ(tmp_path: Path) -> None:
    """A model's repr of 13 lines (past the 12 shown whole) is given as a diff of its lines."""
    saved = nn.Sequential(nn.Linear(2, 2), *[nn.Tanh() for _ in range(10)])
    other = nn.Sequential(nn.Linear(2, 2), *[nn.Tanh() for _ in range(9)], nn.ReLU())
    assert repr(saved).count("\n") + 1 == 13
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, saved)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, other)
    assert "-  (10): Tanh()\n+  (10): ReLU()" in str(error.value)
