"""Independent models trained in threads of one process (a sweep run by a thread pool).

Each thread has its own model, loss, optimizer, schedule, data and generators; what the threads
share is minidl's module-level state (caches of constants, counts of parameter replacements,
the folded steps kept per model). The oracle is the same training run alone in the main
thread: every parameter, prediction and recorded number must have the same bits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.folded import FoldedStep
from minidl.train import fit

F64 = torch.float64


def _data(
    features: int, classes: int, samples: int, dtype: torch.dtype, seed: int
) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=generator, dtype=dtype)
    return x, torch.randint(0, classes, (samples,), generator=generator)


# -- another thread between two epochs of a fit ----------------------------------------------


def test_a_model_built_in_another_thread_between_epochs_leaves_fit_folded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another thread builds a model (new parameters move the process's count of parameter
    replacements) while a fit that has an ``on_epoch`` is between two epochs: the fit goes on
    with its folded step, to the bits of the same fit alone. It took its own parameters for
    replaced and went on step by step, with the loop's roundings."""
    calls = [0]
    folded_call = FoldedStep.__call__

    def counting(self: FoldedStep, x: Tensor, y: Tensor) -> Tensor:
        calls[0] += 1
        return folded_call(self, x, y)

    monkeypatch.setattr(FoldedStep, "__call__", counting)
    x, y = _data(3, 3, 50, F64, seed=0)

    def train(on_epoch: Callable[[Any], None]) -> list[Tensor]:
        model = nn.mlp((3, 6, 5, 3), "tanh", dtype=F64, generator=torch.Generator().manual_seed(1))
        optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.9)
        generator = torch.Generator().manual_seed(2)
        fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=3,
            batch_size=10,
            generator=generator,
            on_epoch=on_epoch,
        )
        return [p.data for p in model.parameters()] + list(optimizer.state.values())

    alone = train(lambda record: None)
    assert calls[0] == 3 * 5
    go, built = threading.Event(), threading.Event()

    def build() -> None:
        if go.wait(10):
            nn.mlp((2, 4, 2))
            built.set()

    def on_epoch(record: Any) -> None:
        if record.epoch == 0:
            go.set()
            assert built.wait(10)

    other = threading.Thread(target=build)
    other.start()
    try:
        calls[0] = 0
        threaded = train(on_epoch)
    finally:
        go.set()
        other.join()
    assert calls[0] == 3 * 5  # (every epoch folded, as alone)
    for tensor, expected in zip(threaded, alone, strict=True):
        assert torch.equal(tensor, expected)
