"""Today's features (optimizer hyper-parameters set between steps, fit's drop_last and up-front
refusals) tried together with checkpoints, the command line and data-parallel training."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from minidl.cli import main
from minidl.data import BatchIterator
from minidl.distributed import DataParallel, Launch, ProcessGroup, ShardedBatches
from minidl.nn import mlp
from minidl.train import fit
from tests.helpers import free_port

DTYPE = torch.float64


def _normed(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(2, 4, dtype=DTYPE),
        nn.BatchNorm1d(4, dtype=DTYPE),
        nn.Tanh(),
        nn.Linear(4, 2, dtype=DTYPE),
    )


def _data(samples: int) -> tuple[Tensor, Tensor]:
    x = torch.randn(samples, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    return x, (x[:, 0] > 0).long()


class _RankZeroOfTwo:
    """What fit sees of a DataParallel on rank 0 of 2, without a process group: the shards are
    the real ones, the collectives do nothing."""

    world_size = 2
    rank = 0

    def __init__(self) -> None:
        self.sharded: ShardedBatches | None = None

    def shard(self, batches: BatchIterator) -> ShardedBatches:
        self.sharded = ShardedBatches(batches, self.rank, self.world_size)
        return self.sharded

    def synchronize(self, loss: Tensor) -> Tensor:
        return loss

    def reduce_loss(self, total: Tensor) -> Tensor:
        return total


# -- a batch norm's batch of one sample, per process ---------------------------------------------


@pytest.mark.parametrize(
    ("samples", "batch_size", "message"),
    [
        (10, 2, r"every rank's shard of a batch would hold 1 sample \(batches of 2 split over 2"),
        (10, 4, r"end with a batch of 2 samples \(10 samples, batches of 4\), of which some"),
    ],
)
def test_fit_refuses_batch_norm_shards_of_one_sample_before_training(
    samples: int, batch_size: int, message: str
) -> None:
    # Before: every rank trained until its shard held 1 sample, then the BatchNorm1d raised in
    # the middle of the run (after 2 steps in the second case), the model already changed.
    model = _normed()
    x, y = _data(samples)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(0)
    before = model.state_dict()
    shuffles = generator.get_state()
    parallel = _RankZeroOfTwo()
    with pytest.raises(ValueError, match=message) as error:
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=batch_size,
            generator=generator, parallel=parallel)  # fmt: skip
    assert "BatchNorm1d '1'" in str(error.value)
    assert optimizer.step_count == 0 and parallel.sharded is None
    assert torch.equal(generator.get_state(), shuffles)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize(
    ("batch_size", "drop_last", "refused"),
    [
        (4, True, False),  # 4 + 4 (+ 2 dropped): shards of 2
        (6, False, False),  # 6 + 4: shards of 3 and 2
        (8, False, True),  # 8 + 2: shards of 4, then 1 (one process alone would accept it)
    ],
)
def test_fit_accepts_batch_norm_shards_that_drop_last_or_the_sizes_make_safe(
    batch_size: int, drop_last: bool, refused: bool
) -> None:
    x, y = _data(10)
    model = _normed()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    settings: dict[str, Any] = {
        "epochs": 1,
        "batch_size": batch_size,
        "drop_last": drop_last,
        "generator": torch.Generator().manual_seed(0),
    }
    fit(model, nn.CrossEntropyLoss(), optimizer, x, y, **settings)  # one process: fine
    if refused:
        with pytest.raises(ValueError, match="of which some of the 2 processes"):
            fit(model, nn.CrossEntropyLoss(), optimizer, x, y, **settings,
                parallel=_RankZeroOfTwo())  # fmt: skip
        return
    steps = optimizer.step_count
    fit(model, nn.CrossEntropyLoss(), optimizer, x, y, **settings, parallel=_RankZeroOfTwo())
    assert optimizer.step_count == 2 * steps == 4  # 2 batches an epoch either way


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result: dict[str, Any] = {}
    with ProcessGroup(Launch(rank, 2, rank), timeout=120.0) as group:  # (slow imports)
        model = _normed()
        parallel = DataParallel(model, group)
        optimizer = optim.SGD(model.parameters(), lr=0.1)
        x, y = _data(10)
        try:
            fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=4,
                generator=torch.Generator().manual_seed(0), parallel=parallel)  # fmt: skip
            result["refusal"] = "no error"
        except ValueError as error:
            result["refusal"] = str(error)
        result["steps"] = optimizer.step_count
        # drop_last keeps every shard at 2 samples; the group is still usable after the refusal
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=2, batch_size=4,
            drop_last=True, generator=torch.Generator().manual_seed(0), parallel=parallel)  # fmt: skip
        parallel.check_in_sync()
        result["trained"] = optimizer.step_count
    torch.save(result, Path(out) / f"rank{rank}.pt")


def test_two_processes_refuse_a_batch_norm_shard_of_one_sample_on_every_rank(
    tmp_path: Path,
) -> None:
    torch.multiprocessing.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert "of which some of the 2 processes would take 1 sample" in result["refusal"]
        assert result["steps"] == 0
        assert result["trained"] == 4


# -- the command line: a checkpoint whose optimizer hyper-parameters were changed ----------------


def _changed_checkpoint(tmp_path: Path, *, keep_settings: bool) -> Path:
    """A `minidl train --momentum 0.9` checkpoint, loaded in a program of one's own that sets
    the momentum to 0.5 between steps and saves it again."""
    made = tmp_path / "cli.ckpt"
    arguments = ["train", "--epochs", "1", "--momentum", "0.9", "--quiet"]
    assert main([*arguments, "--checkpoint", str(made)]) == 0
    model = mlp((2, 25, 25, 25, 2), ("tanh",) * 3, dtype=torch.float32)
    optimizer = optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    generator = torch.Generator()
    state = load_checkpoint(made, model, optimizer, generator=generator)
    optimizer.momentum = 0.5
    changed = tmp_path / "changed.ckpt"
    save_checkpoint(changed, model, optimizer, epoch=state.epoch, history=state.history,
                    generator=generator, extra=state.extra if keep_settings else None)  # fmt: skip
    return changed


@pytest.mark.parametrize("keep_settings", [True, False])
def test_cli_resume_refuses_a_checkpoint_whose_optimizer_hyperparameters_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keep_settings: bool
) -> None:
    # Before: accepted; the run printed SGD(lr=0.01, momentum=0.9), trained with the restored
    # momentum 0.5 and wrote checkpoints whose settings said --momentum 0.9.
    changed = _changed_checkpoint(tmp_path, keep_settings=keep_settings)
    contents = changed.read_bytes()
    capsys.readouterr()
    out = tmp_path / "out.ckpt"
    code = main(["train", "--epochs", "2", "--momentum", "0.9", "--quiet", "--resume",
                 str(changed), "--checkpoint", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minidl train: error: --resume ")
    assert "momentum 0.5 in the checkpoint's SGD, --momentum 0.9 now" in lines[0]
    assert not out.exists() and changed.read_bytes() == contents
    # The same checkpoint with the flag that matches it resumes (when no recorded setting
    # disagrees: the recorded --momentum 0.9 does, and is named).
    code = main(["train", "--epochs", "2", "--momentum", "0.5", "--quiet", "--resume",
                 str(changed), "--checkpoint", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    if keep_settings:
        assert code == 2 and "--momentum 0.9 in the checkpoint, 0.5 now" in captured.err
    else:
        assert code == 0, captured.err
        saved = read_checkpoint(out).header["optimizer"]["hyperparameters"]
        assert saved == {"momentum": 0.5}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"lr": 0.5}, "lr 0.5 in the checkpoint's SGD, --lr 0.01 now"),
        ({"weight_decay": 0.01}, "weight_decay 0.01 in the checkpoint's SGD, 0.0 now (minidl"),
    ],
)
def test_cli_resume_refuses_a_learning_rate_or_a_flagless_hyperparameter_changed_by_hand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, float], named: str
) -> None:
    # Before: `--scheduler none` resumed at the lr set by hand (0.5; the history's lr says so,
    # the flags and the recorded settings say 0.01), and at the weight decay set by hand.
    made = tmp_path / "cli.ckpt"
    common = ["train", "--momentum", "0.9", "--quiet"]
    assert main([*common, "--epochs", "1", "--checkpoint", str(made)]) == 0
    model = mlp((2, 25, 25, 25, 2), ("tanh",) * 3, dtype=torch.float32)
    optimizer = optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    generator = torch.Generator()
    state = load_checkpoint(made, model, optimizer, generator=generator)
    for name, value in change.items():
        setattr(optimizer, name, value)
    save_checkpoint(made, model, optimizer, epoch=state.epoch, history=state.history,
                    generator=generator, extra=state.extra)  # fmt: skip
    contents = made.read_bytes()
    capsys.readouterr()
    assert main([*common, "--epochs", "2", "--resume", str(made)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err
    assert made.read_bytes() == contents


def test_cli_resume_of_an_unchanged_checkpoint_still_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.ckpt"
    for optimizer in (["--momentum", "0.9"], ["--optimizer", "adadelta", "--lr", "1"]):
        common = ["train", "--quiet", *optimizer, "--checkpoint", str(path)]
        assert main([*common, "--epochs", "1"]) == 0
        assert main([*common, "--epochs", "2", "--resume", str(path)]) == 0, capsys.readouterr()
        assert read_checkpoint(path).training.epoch == 2


# -- what held up (kept as checks) ---------------------------------------------------------------


def test_a_hyperparameter_changed_mid_run_is_restored_bit_for_bit(tmp_path: Path) -> None:
    x, y = _data(50)

    def build() -> tuple[nn.Sequential, optim.Adam]:
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(2, 8, dtype=DTYPE), nn.Tanh(), nn.Linear(8, 2, dtype=DTYPE))
        return model, optim.Adam(model.parameters(), lr=1e-2)

    criterion = nn.CrossEntropyLoss()
    model, optimizer = build()
    generator = torch.Generator().manual_seed(0)
    history = fit(model, criterion, optimizer, x, y, epochs=3, batch_size=10, generator=generator)
    optimizer.betas = (0.5, 0.9)
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model, optimizer, epoch=3, history=history, generator=generator)
    fit(model, criterion, optimizer, x, y, epochs=6, batch_size=10, generator=generator,
        start_epoch=3, history=history)  # fmt: skip
    resumed, resumed_optimizer = build()
    generator = torch.Generator()
    state = load_checkpoint(path, resumed, resumed_optimizer, generator=generator)
    assert resumed_optimizer.betas == (0.5, 0.9)
    fit(resumed, criterion, resumed_optimizer, x, y, epochs=6, batch_size=10,
        generator=generator, start_epoch=state.epoch, history=state.history)  # fmt: skip
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a.data, b.data)
    assert state.history.train_loss == history.train_loss


def test_resuming_a_one_cycle_the_run_would_pass_is_refused_before_training(
    tmp_path: Path,
) -> None:
    x, y = _data(50)
    model = _normed()
    optimizer = optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    schedule = optim.OneCycle(optimizer, max_lr=0.1, total_steps=30)
    generator = torch.Generator().manual_seed(0)
    history = fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=5, batch_size=10,
                  generator=generator, scheduler=schedule)  # fmt: skip
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model, optimizer, schedule, epoch=5, history=history,
                    generator=generator)  # fmt: skip
    resumed = _normed(seed=3)
    resumed_optimizer = optim.SGD(resumed.parameters(), lr=1e-2, momentum=0.9)
    resumed_schedule = optim.OneCycle(resumed_optimizer, max_lr=0.1, total_steps=30)
    state = load_checkpoint(path, resumed, resumed_optimizer, resumed_schedule,
                            generator=generator)  # fmt: skip
    with pytest.raises(ValueError, match=r"is at step 25, but 2 epochs of 5 batches"):
        fit(resumed, nn.CrossEntropyLoss(), resumed_optimizer, x, y, epochs=7, batch_size=10,
            generator=generator, scheduler=resumed_schedule, start_epoch=state.epoch,
            history=state.history)  # fmt: skip
    assert resumed_schedule.last_step == 25 and resumed_optimizer.step_count == 25
    assert len(state.history.train_loss) == 5
