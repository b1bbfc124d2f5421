"""Independent models trained in threads of one process (a sweep run by a thread pool).

Each thread has its own model, loss, optimizer, schedule, data and generators; what the threads
share is minidl's module-level state (caches of constants, counts of parameter replacements,
the folded steps kept per model). The oracle is the same training run alone in the main
thread: every parameter, prediction and recorded number must have the same bits.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.checkpoint import load_checkpoint, save_checkpoint
from minidl.data import BatchIterator
from minidl.folded import FoldedStep
from minidl.rounds import fit_rounds
from minidl.train import error_rate, fit, predict
from tests.helpers import run_stopped_before_store

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


# -- a sweep in a thread pool ------------------------------------------------------------------


_CONFIGURATIONS: list[dict[str, Any]] = [
    # (an uneven last batch in each: 50 = 3 * 16 + 2, 41 = 4 * 10 + 1, 45 = 25 + 20)
    {"sizes": (2, 12, 12, 3), "activation": "tanh", "loss": "ce", "optimizer": "momentum",
     "schedule": "cyclic", "dtype": F64, "samples": 50, "batch": 16},
    {"sizes": (3, 10, 4), "activation": "relu", "loss": "mse", "optimizer": "adadelta",
     "schedule": "step", "dtype": torch.float32, "samples": 41, "batch": 10},
    {"sizes": (2, 8, 8, 2), "activation": "gelu", "loss": "ce", "optimizer": "adam",
     "schedule": None, "dtype": torch.float32, "samples": 45, "batch": 25},
]  # fmt: skip


def _training(setup: dict[str, Any], folder: Path) -> list[Tensor]:
    """One configuration trained three ways: a loop written out, ``fit`` (its folded step, an
    ``on_epoch`` and a validation set, saved to a checkpoint of its own and resumed into
    another model) and ``fit_rounds``; what each leaves, and the resumed model's predictions."""
    dtype, batch, epochs = setup["dtype"], setup["batch"], 2
    x, labels = _data(
        setup["sizes"][0], setup["sizes"][-1], setup["samples"], dtype, seed=setup["samples"]
    )
    y = labels if setup["loss"] == "ce" else torch.eye(setup["sizes"][-1], dtype=dtype)[labels]

    def model(seed: int) -> nn.Sequential:
        generator = torch.Generator().manual_seed(seed)
        return nn.mlp(setup["sizes"], setup["activation"], dtype=dtype, generator=generator)

    def loss() -> nn.Loss:
        return nn.CrossEntropyLoss() if setup["loss"] == "ce" else nn.MSELoss()

    def optimizer(parameters: Iterator[nn.Parameter]) -> optim.Optimizer:
        if setup["optimizer"] == "momentum":
            return optim.SGD(parameters, lr=0.05, momentum=0.9)
        if setup["optimizer"] == "adadelta":
            return optim.Adadelta(parameters, lr=1.0)
        return optim.Adam(parameters, lr=1e-2)

    def schedule(built: optim.Optimizer) -> optim.LRScheduler | None:
        if setup["schedule"] == "cyclic":
            return optim.CyclicLR(built, base_lr=0.01, max_lr=0.1, step_size_up=3)
        if setup["schedule"] == "step":
            return optim.StepDecay(built, step_size=1, gamma=0.7)
        return None

    results: list[Tensor] = []
    looped = model(1)
    criterion, updates = loss(), optimizer(looped.parameters())
    schedule_of_loop = schedule(updates)
    shuffles = torch.Generator().manual_seed(3)
    for _ in range(epochs):
        for x_batch, y_batch in BatchIterator(x, y, batch, generator=shuffles):
            updates.zero_grad()
            criterion(looped(x_batch), y_batch)
            looped.backward(criterion.backward())
            updates.step()
            if schedule_of_loop is not None and schedule_of_loop.interval == "batch":
                schedule_of_loop.step()
        if schedule_of_loop is not None and schedule_of_loop.interval == "epoch":
            schedule_of_loop.step()
    results += [p.data for p in looped.parameters()] + list(updates.state.values())

    fitted = model(4)
    criterion, updates = loss(), optimizer(fitted.parameters())
    scheduled = schedule(updates)
    shuffles, errors = torch.Generator().manual_seed(5), []
    fit(
        fitted,
        criterion,
        updates,
        x,
        y,
        epochs=epochs,
        batch_size=batch,
        scheduler=scheduled,
        generator=shuffles,
        validation=(x, labels),
        on_epoch=lambda record: errors.append(record.validation_error),
    )
    path = folder / f"{setup['samples']}.ckpt"
    save_checkpoint(path, fitted, updates, scheduled, epoch=epochs, generator=shuffles)
    resumed = model(6)
    updates = optimizer(resumed.parameters())
    scheduled, shuffles = schedule(updates), torch.Generator()
    load_checkpoint(path, resumed, updates, scheduled, generator=shuffles)
    fit(
        resumed,
        criterion,
        updates,
        x,
        y,
        epochs=2 * epochs,
        start_epoch=epochs,
        batch_size=batch,
        scheduler=scheduled,
        generator=shuffles,
    )
    results += [p.data for p in fitted.parameters()] + [torch.tensor(errors)]
    results += [p.data for p in resumed.parameters()] + [predict(resumed, x)]
    results.append(torch.tensor(error_rate(resumed, x, labels)))

    stacked = [model(7 + r) for r in range(3)]
    fit_rounds(
        stacked,
        loss(),
        lambda stack: optimizer(stack.parameters()),
        [(x, y)] * 3,
        epochs=epochs,
        batch_size=batch,
        make_scheduler=schedule,
        generators=[torch.Generator().manual_seed(8 + r) for r in range(3)],
    )
    results += [p.data for m in stacked for p in m.parameters()]
    return results


def test_models_trained_in_threads_have_the_bits_of_models_trained_alone(
    tmp_path: Path,
) -> None:
    """Three configurations (activations, losses, optimizers with their state, schedules by
    batch and by epoch, float32 and float64, uneven last batches), each trained through a
    written loop, ``fit`` with a checkpoint saved and resumed, and ``fit_rounds``, in threads
    that switch every microsecond, two of each configuration at once, several times over:
    every result has the bits of the configuration trained alone. (A cache shared by the
    threads that one of them wrote in place, or that keyed what it keeps on less than what
    the value depends on, would give a thread another's value.)"""
    (tmp_path / "alone").mkdir()
    alone = [_training(setup, tmp_path / "alone") for setup in _CONFIGURATIONS]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(4) as pool:
            for repetition in range(8):
                jobs = []
                for twin in range(2):
                    for index, setup in enumerate(_CONFIGURATIONS):
                        folder = tmp_path / f"{repetition}-{twin}-{index}"
                        folder.mkdir()
                        jobs.append((index, pool.submit(_training, setup, folder)))
                for index, job in jobs:
                    for got, expected in zip(job.result(timeout=60), alone[index], strict=True):
                        assert got.dtype == expected.dtype
                        assert torch.equal(got, expected)
    finally:
        sys.setswitchinterval(interval)


# -- the count of registrations -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["module", "parameter"])
def test_a_registration_counted_late_never_brings_the_count_back_to_one_seen(kind: str) -> None:
    """A registration stopped just before it stores its count (traced bytecode by bytecode, as
    another thread may stop it), while two more are made and a reader (a Sequential's
    ``backward_parameters``, a layer's gradient memory) notes the count, then stores it; one
    more registration after that must move the count away from the one noted, or the reader
    takes it for seen and misses it. With ``_registrations += 1`` the late one stored the count
    it had read plus one, moving it back, and the next registration brought it to the noted
    value again."""
    owner = nn.Module()
    noted: list[int] = []
    method = getattr(nn.Module, f"register_{kind}")

    def register_one(name: str) -> None:
        if kind == "module":
            owner.register_module(name, nn.Tanh())
        else:
            owner.register_parameter(name, nn.Parameter(torch.zeros(1)))

    def between() -> None:
        register_one("second")
        register_one("third")
        noted.append(nn.Module._registrations)

    def register() -> None:
        register_one("first")

    assert run_stopped_before_store(register, method, "first", "_registrations", between)
    register_one("fourth")
    assert nn.Module._registrations != noted[0]
