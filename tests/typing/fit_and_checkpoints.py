"""The library's own loops and tools as a strictly typed program sees them: the disk data set
and its batches, ``fit`` with a callback, ``fit_rounds`` with one optimizer per model,
checkpoints written, read and loaded, ``eval_mode``, ``predict``, and the conversions to and
from ``torch.nn``.

``make typecheck`` runs ``mypy --strict`` on this file, which checks every ``assert_type``;
``tests/test_typing_programs.py`` runs it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import Tensor
from typing_extensions import assert_type

from minidl import nn, optim
from minidl.checkpoint import (
    Checkpoint,
    TrainingState,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from minidl.data import BatchIterator, DiskData, Split, make_disk_data
from minidl.interop import from_torch, to_torch
from minidl.rounds import PerModel, fit_rounds, stacked_error_rates
from minidl.train import EpochRecord, History, error_rate, eval_mode, fit, predict


def data_helpers() -> DiskData:
    data = make_disk_data(64, 32, 32, seed=0)
    assert_type(data.train, Split)
    assert_type(data.train.x, Tensor)
    assert_type(len(data.train), int)
    batches = BatchIterator(data.train.x, data.train.y, batch_size=16)
    assert_type(len(batches), int)
    for x, y in batches:
        assert_type(x, Tensor)
        assert_type(y, Tensor)
    batches.batch_size = 8
    assert_type(batches.batch_size, int)
    return data


def train_one(data: DiskData, folder: Path) -> nn.Sequential:
    model = nn.mlp([2, 16, 2], "relu")
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = optim.CosineAnnealing(optimizer, T_max=4)
    best = {"error": float("inf"), "epoch": -1.0}

    def keep_best(record: EpochRecord) -> bool:
        assert_type(record.validation_error, float)
        if record.validation_error < best["error"]:
            best.update(error=record.validation_error, epoch=record.epoch)
            save_checkpoint(folder / "best.ckpt", model, epoch=record.epoch + 1)
        return record.epoch - best["epoch"] >= 20

    history = fit(
        model,
        criterion,
        optimizer,
        data.train.x,
        data.train.y,
        epochs=4,
        batch_size=16,
        scheduler=scheduler,
        validation=(data.validation.x, data.validation.y),
        generator=torch.Generator().manual_seed(0),
        on_epoch=keep_best,
        max_grad_norm=5.0,
    )
    assert_type(history, History)
    assert_type(history.train_loss, list[float])
    path = folder / "run.ckpt"
    save_checkpoint(path, model, optimizer, scheduler, epoch=4, history=history, extra={"a": 1})
    checkpoint = read_checkpoint(str(path))
    assert_type(checkpoint, Checkpoint)
    assert_type(checkpoint.model_state, dict[str, Tensor])
    state = load_checkpoint(path, model, optimizer, scheduler)
    assert_type(state, TrainingState)
    assert_type(state.epoch, int)
    assert_type(state.history, History)
    assert state.epoch == 4 and state.history == history
    assert_type(load_checkpoint(checkpoint, model), TrainingState)
    return model


def evaluate(model: nn.Sequential, data: DiskData) -> float:
    with eval_mode(model) as evaluated:
        assert_type(evaluated, nn.Sequential)
        assert_type(evaluated(data.test.x), Tensor)
    assert_type(predict(model, data.test.x), Tensor)
    return error_rate(model, data.test.x, data.test.y)


def rounds(data: DiskData) -> list[History]:
    rates = [0.3, 0.1]
    models = [nn.mlp([2, 8, 2]) for _ in rates]
    histories = fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        PerModel(lambda index, parameters: optim.SGD(parameters, lr=rates[index])),
        [(data.train.x, data.train.y)] * len(rates),
        epochs=2,
        batch_size=16,
        generators=[torch.Generator().manual_seed(seed) for seed in range(len(rates))],
    )
    assert_type(histories, list[History])
    stack = nn.stack_models(models)
    assert_type(stack, nn.Sequential)
    assert_type(nn.unstack_model(stack, 0), nn.Sequential)
    x = data.test.x.expand(len(rates), -1, -1)
    y = data.test.y.expand(len(rates), -1)
    assert_type(stacked_error_rates(stack, x, y), list[float])
    return histories


def interop(model: nn.Sequential) -> None:
    twin = to_torch(model)
    assert_type(twin, torch.nn.Sequential)
    back = from_torch(twin)
    assert_type(back, nn.Sequential)
    assert_type(to_torch(nn.Linear(2, 3)), torch.nn.Linear)
    assert_type(from_torch(torch.nn.Linear(2, 3)), nn.Linear)
    module: nn.Module = model
    assert_type(to_torch(module), torch.nn.Module)
    assert_type(from_torch(twin[0]), nn.Module)
    x = torch.randn(4, 2)
    torch.testing.assert_close(back(x), twin(x).detach())


def main() -> None:
    torch.manual_seed(0)
    data = data_helpers()
    with tempfile.TemporaryDirectory() as folder:
        model = train_one(data, Path(folder))
    assert 0.0 <= evaluate(model, data) <= 100.0
    assert len(rounds(data)) == 2
    interop(model)


if __name__ == "__main__":
    main()
