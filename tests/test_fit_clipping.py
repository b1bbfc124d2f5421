"""``fit(..., max_grad_norm=...)``: the step-by-step loop against a loop of one's own calling
``clip_grad_norm_`` (bit for bit), the folded step against the loop (to rounding), and the
training against PyTorch's with ``torch.nn.utils.clip_grad_norm_`` (float64)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.data import BatchIterator
from minidl.folded import FoldedStep
from minidl.train import fit
from tests.helpers import F64, torch_loss, torch_twin, unfolded
from tests.test_folded import _count_folded_calls

CLIP = 0.2


def _data(dtype: torch.dtype = F64) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(90, 3, generator=generator, dtype=dtype) * 2
    y = torch.randint(0, 3, (90,), generator=generator)
    return x, y


def _model(dtype: torch.dtype = F64) -> nn.Sequential:
    return nn.mlp((3, 8, 6, 3), "tanh", dtype=dtype, generator=torch.Generator().manual_seed(1))


def _flat(model: nn.Module) -> Tensor:
    return torch.cat([p.data.reshape(-1) for p in model.parameters()])


def _fit(model: nn.Sequential, optimizer: optim.Optimizer, **options: Any) -> None:
    x, y = _data(model[0].weight.data.dtype)
    arguments: dict[str, Any] = {
        "epochs": 4,
        "batch_size": 16,
        "generator": torch.Generator().manual_seed(2),
        "max_grad_norm": CLIP,
        **options,
    }
    fit(model, nn.CrossEntropyLoss(), optimizer, x, y, **arguments)


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=str)
def test_the_loop_clips_as_clip_grad_norm_does(dtype: torch.dtype) -> None:
    """fit's loop (no folding) is the documented loop with clip_grad_norm_ before each step."""
    model, reference = _model(dtype), _model(dtype)
    optimizer = optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    with unfolded():
        _fit(model, optimizer)
    criterion = nn.CrossEntropyLoss()
    reference_optimizer = optim.SGD(reference.parameters(), lr=0.5, momentum=0.9)
    x, y = _data(dtype)
    batches = BatchIterator(x, y, 16, generator=torch.Generator().manual_seed(2))
    clipped = 0
    with torch.inference_mode():
        for _ in range(4):
            for x_batch, y_batch in batches:
                reference_optimizer.zero_grad()
                criterion(reference(x_batch), y_batch)
                reference.backward_parameters(criterion.backward())
                clipped += float(nn.clip_grad_norm_(reference.parameters(), CLIP)) > CLIP
                reference_optimizer.step()
    assert clipped >= 15  # of 24 steps: the clipping is what is compared
    assert torch.equal(_flat(model), _flat(reference))


def test_the_folded_step_clips_as_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_folded_calls(monkeypatch)
    runs = []
    for fold in (True, False):
        model = _model()
        optimizer = optim.Adam(model.parameters(), lr=0.05)
        if fold:
            _fit(model, optimizer)
        else:
            with unfolded():
                _fit(model, optimizer)
        runs.append(_flat(model))
    assert calls[0] == 24  # every step of the first run was folded
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-12, atol=1e-12)
    unclipped = _model()
    _fit(unclipped, optim.Adam(unclipped.parameters(), lr=0.05), max_grad_norm=None)
    assert not torch.allclose(_flat(unclipped), runs[0], rtol=1e-3)


def test_a_kept_folded_step_clips_only_in_the_calls_that_ask() -> None:
    """The step kept between calls (the same model, loss and optimizer) takes each call's
    max_grad_norm."""
    runs = []
    x, y = _data()
    for fold in (True, False):
        model = _model()
        criterion = nn.CrossEntropyLoss()
        optimizer = optim.SGD(model.parameters(), lr=0.5)
        steps = []
        with unfolded() if not fold else contextlib.nullcontext():
            for start, max_grad_norm in enumerate((0.05, None, CLIP)):
                fit(
                    model,
                    criterion,
                    optimizer,
                    x,
                    y,
                    epochs=2 * start + 2,
                    start_epoch=2 * start,
                    batch_size=16,
                    generator=torch.Generator().manual_seed(start),
                    max_grad_norm=max_grad_norm,
                )
                steps.append(FoldedStep.kept(model, criterion, optimizer, x, y))
        if fold:
            assert steps[0] is not None and steps[0] is steps[1] is steps[2]
        runs.append(_flat(model))
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-12, atol=1e-12)


def test_training_with_clipping_follows_torch() -> None:
    """Full-batch training, so that the order of the samples only moves the last bits: the
    folded fit against PyTorch's loop with torch.nn.utils.clip_grad_norm_."""
    model = _model()
    twin = torch_twin(model)
    optimizer = optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    x, y = _data()
    fit(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        x,
        y,
        epochs=30,
        batch_size=90,
        generator=torch.Generator().manual_seed(0),
        max_grad_norm=CLIP,
    )
    torch_optimizer = torch.optim.SGD(twin.parameters(), lr=0.5, momentum=0.9)
    norms = []
    for _ in range(30):
        torch_optimizer.zero_grad()
        torch_loss(nn.CrossEntropyLoss(), twin(x), y).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(twin.parameters(), CLIP)))
        torch_optimizer.step()
    assert sum(norm > CLIP for norm in norms) >= 20
    for parameter, torch_parameter in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(parameter.data, torch_parameter.detach(), rtol=1e-10, atol=1e-12)
