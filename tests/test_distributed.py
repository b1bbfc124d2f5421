"""Data-parallel training (minidl.distributed): the shards, the launch environment, and real
process groups of 2 and 3 ranks on gloo over 127.0.0.1.

The oracle is a single-process run on the same global batches: the data-parallel parameters must
equal it (float64, relative error <= 1e-12; measured ~1e-15), every rank must hold bit-identical
parameters after every step, and a rank that dies or hangs must stop the others, within the
timeout, with an error that names it.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.multiprocessing

from minidl import distributed
from minidl.cli import build_parser, main
from minidl.data import BatchIterator, make_disk_data
from minidl.distributed import (
    DEFAULT_TIMEOUT,
    DataParallel,
    DistributedError,
    Launch,
    ProcessGroup,
    ShardedBatches,
    all_reduce_gradients,
    broadcast_parameters,
    launch_from_env,
    parameter_checksum,
    timeout_from_env,
)
from minidl.nn import (
    BatchNorm1d,
    CrossEntropyLoss,
    Dropout,
    Linear,
    Module,
    Parameter,
    ReLU,
    Sequential,
    Tanh,
    mlp,
)
from minidl.nn.flat import flat_buffer
from minidl.optim import SGD
from minidl.train import EpochRecord, fit
from tests.helpers import free_port, tree_environment

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3
CLIP = 0.05  # a max_grad_norm below most of the paper run's gradient norms
BATCH = 120  # 1000 samples: 8 batches of 120 and one of 40 (split 20/20 and 13/13/14)


def _child_env(**extra: str) -> dict[str, str]:
    return tree_environment(
        MASTER_ADDR="127.0.0.1",
        GLOO_SOCKET_IFNAME="lo",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        **extra,
    )


def _flat(model: Any) -> torch.Tensor:
    return torch.cat([p.data.reshape(-1) for p in model.parameters()]).clone()


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())


# -- the shards -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("samples", "batch_size", "world_size", "drop_last"),
    [(1000, 120, 1, False), (1000, 120, 2, False), (1000, 120, 3, False), (1000, 120, 4, False),
     (1000, 100, 4, False), (10, 12, 2, False), (1000, 99, 3, True)],
)  # fmt: skip
def test_shards_make_up_every_global_batch(
    samples: int, batch_size: int, world_size: int, drop_last: bool
) -> None:
    x = torch.randn(samples, 2, dtype=torch.float64)
    y = torch.arange(samples)

    def batches() -> BatchIterator:
        generator = torch.Generator().manual_seed(7)  # seeded identically on every rank
        return BatchIterator(x, y, batch_size, generator=generator, drop_last=drop_last)

    reference = batches()
    shards = [ShardedBatches(batches(), rank, world_size) for rank in range(world_size)]
    for _epoch in range(2):  # a new shuffled order each epoch, the same on every rank
        expected = list(reference)
        assert all(len(shard) == len(expected) for shard in shards)
        steps = 0
        for (x_batch, y_batch), *parts in zip(expected, *shards, strict=True):
            sizes = [part[0].shape[0] for part in parts]
            assert torch.equal(torch.cat([part[0] for part in parts]), x_batch)
            assert torch.equal(torch.cat([part[1] for part in parts]), y_batch)
            assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
            if x_batch.shape[0] == batch_size:
                assert sizes == [batch_size // world_size] * world_size
            assert [shard.share for shard in shards] == [n / x_batch.shape[0] for n in sizes]
            steps += 1
        assert steps == len(expected)
        # Once a pass ends, equal shares again: an uneven last batch's weighted every
        # DataParallel.synchronize after fit (a step of one's own got another gradient).
        assert all(shard.share == 1 / world_size for shard in shards)
    for shard in shards:  # (a pass left part-way too)
        for _ in shard:
            break
        assert shard.share == 1 / world_size
    # A pass left behind, its iterator dropped during a later pass, leaves the later one's share.
    shard = shards[-1]
    stale = iter(shard)
    next(stale)
    running = iter(shard)
    for _ in range(len(shard)):  # (to the last batch, the pass suspended there)
        next(running)
    during = shard.share
    del stale
    gc.collect()
    assert shard.share == during


def test_world_size_must_divide_the_batch_size() -> None:
    batches = BatchIterator(torch.zeros(1000, 2), torch.zeros(1000), batch_size=100)
    with pytest.raises(ValueError, match=r"batch size 100 is not divisible by the world size 3"):
        ShardedBatches(batches, rank=0, world_size=3)


def test_last_batch_needs_a_sample_per_rank() -> None:
    x, y = torch.zeros(1000, 2), torch.zeros(1000)
    with pytest.raises(ValueError, match=r"last batch of every epoch holds 1 samples.*3 ranks"):
        ShardedBatches(BatchIterator(x, y, batch_size=999), rank=0, world_size=3)
    # A last batch of 2 samples for 3 ranks is refused, one of 3 gives each rank one.
    with pytest.raises(ValueError, match=r"last batch of every epoch holds 2 samples"):
        ShardedBatches(BatchIterator(torch.zeros(1001, 2), torch.zeros(1001), 999), 0, 3)
    exact = ShardedBatches(BatchIterator(torch.zeros(1002, 2), torch.zeros(1002), 999), 2, 3)
    assert [xs.shape[0] for xs, _ in exact] == [333, 1]
    dropped = ShardedBatches(BatchIterator(x, y, batch_size=999, drop_last=True), 0, 3)
    assert [xs.shape[0] for xs, _ in dropped] == [333]


@pytest.mark.parametrize(("rank", "world_size"), [(-1, 2), (2, 2), (0, 0)])
def test_sharded_batches_refuses_bad_ranks(rank: int, world_size: int) -> None:
    batches = BatchIterator(torch.zeros(8, 2), torch.zeros(8), batch_size=4)
    with pytest.raises(ValueError, match=r"ShardedBatches: (rank|world_size)"):
        ShardedBatches(batches, rank, world_size)


# -- the launch environment -----------------------------------------------------------------------


def test_launch_from_env() -> None:
    assert launch_from_env({}) is None
    assert launch_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Launch(3, 4, 1)
    assert launch_from_env({"WORLD_SIZE": "2", "RANK": "1"}) == Launch(1, 2, 1)
    with pytest.raises(ValueError, match="RANK is not"):
        launch_from_env({"WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer, got 'two'"):
        launch_from_env({"WORLD_SIZE": "two", "RANK": "0"})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WORLD_SIZE": "0", "RANK": "0"}, "WORLD_SIZE must be an integer >= 1, got '0'"),
        ({"WORLD_SIZE": "-2", "RANK": "0"}, "WORLD_SIZE must be an integer >= 1, got '-2'"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK must be an integer in [0, 1], got '2'"),
        ({"WORLD_SIZE": "2", "RANK": "-1"}, "RANK must be an integer in [0, 1], got '-1'"),
        ({"WORLD_SIZE": "2", "RANK": "1.0"}, "RANK must be an integer, got '1.0'"),
        (
            {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "-1"},
            "LOCAL_RANK must be an integer >= 0, got '-1'",
        ),
    ],
)
def test_launch_from_env_names_the_variable_out_of_range(
    environ: dict[str, str], message: str
) -> None:
    """Values out of range were refused in Launch's words ('Launch: world_size must be an
    integer >= 1, got 0', 'Launch: rank must be in [0, 1] ...'), naming no variable."""
    with pytest.raises(ValueError) as raised:
        launch_from_env(environ)
    assert str(raised.value) == f"launch_from_env: environment variable {message}"


def test_timeout_from_env_and_flag() -> None:
    assert timeout_from_env({}) == DEFAULT_TIMEOUT
    assert timeout_from_env({"MINIDL_DIST_TIMEOUT": "2.5"}) == 2.5
    for bad in ("0", "-1", "soon", "nan"):
        with pytest.raises(ValueError, match="MINIDL_DIST_TIMEOUT"):
            timeout_from_env({"MINIDL_DIST_TIMEOUT": bad})
    assert build_parser().parse_args(["train", "--dist-timeout", "7"]).dist_timeout == 7.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--dist-timeout", "0"])


def test_a_timeout_longer_than_torch_can_count_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Torch counts a timeout in nanoseconds, in an int64 (9.2e9 s at most): a ProcessGroup with
    a timeout of 1e10 s failed at once ('could not join ... within 1e+10 s: The client socket
    has timed out'), one of 1e14 s raised an OverflowError from datetime, one of 1e100 s from
    torch ('Python int too large to convert to C int'), which `minidl train --dist-timeout`
    printed as a traceback. Refused before joining, naming the argument; 1e9 s still joins."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    for bad in (1e10, 1e14, 1e100):
        with pytest.raises(ValueError, match=r"^ProcessGroup: timeout must be in \(0, 1e\+09\]"):
            ProcessGroup(Launch(0, 1, 0), timeout=bad)
        with pytest.raises(ValueError, match=r"^timeout_from_env: MINIDL_DIST_TIMEOUT must be in"):
            timeout_from_env({"MINIDL_DIST_TIMEOUT": repr(bad)})
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train", "--dist-timeout", repr(bad)])
        assert "--dist-timeout: expected a number of seconds <= 1e+09" in capsys.readouterr().err
    assert not torch.distributed.is_initialized()
    assert timeout_from_env({"MINIDL_DIST_TIMEOUT": "1e9"}) == 1e9
    with ProcessGroup(Launch(0, 1, 0), timeout=1e9) as group:
        assert torch.equal(group.all_reduce_(torch.ones(2), "x"), torch.ones(2))


def test_a_rendezvous_without_its_address_is_refused_naming_what_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without MASTER_PORT (and MASTER_ADDR) torch's env:// rendezvous fails at once: the
    ProcessGroup says which rank cannot join how many, and which variables are unset, before
    the rendezvous (it said the join timed out, which it did not); no process group is left
    initialised, and one joins once the address is set."""
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    # (said at once, not as a join that timed out: torch's rendezvous fails at once there)
    started = time.monotonic()
    with pytest.raises(
        DistributedError,
        match=r"^ProcessGroup: rank 0 cannot join the 1 ranks: the environment variable "
        r"MASTER_PORT is not set \(the address and port of rank 0's rendezvous store; torchrun "
        r"sets both\)$",
    ):
        ProcessGroup(Launch(0, 1, 0), timeout=5)
    monkeypatch.delenv("MASTER_ADDR")
    with pytest.raises(
        DistributedError,
        match=r"^ProcessGroup: rank 0 cannot join the 1 ranks: the environment variables "
        r"MASTER_ADDR and MASTER_PORT are not set ",
    ):
        ProcessGroup(Launch(0, 1, 0), timeout=5)
    assert time.monotonic() - started < 1.0
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    with ProcessGroup(Launch(0, 1, 0), timeout=5) as group:
        assert torch.equal(group.all_reduce_(torch.ones(2), "x"), torch.ones(2))


@pytest.mark.parametrize("port", ["abc", "0", "65536", "-1", "80x", "\u0661\u0662"])
def test_a_rendezvous_port_that_is_no_port_number_is_refused_by_name(
    port: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MASTER_PORT=abc failed at once, said as a timeout of the join ("could not join ...
    within 3 s: invalid literal for int()"), naming no variable."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", port)
    with pytest.raises(DistributedError) as error:
        ProcessGroup(Launch(0, 2, 0), timeout=3.0)
    assert str(error.value) == (
        "ProcessGroup: rank 0 cannot join the 2 ranks: the environment variable MASTER_PORT "
        f"must be a port number in [1, 65535], got {port!r}"
    )
    assert not torch.distributed.is_initialized()


def test_parameter_checksum_sees_one_ulp() -> None:
    model = mlp((2, 5, 2), "tanh", dtype=torch.float64)
    before = parameter_checksum(model.parameters())
    assert torch.equal(before, parameter_checksum(model.parameters()))
    value = list(model.parameters())[1].data
    value[0] = torch.nextafter(value[0], torch.tensor(float("inf"), dtype=torch.float64))
    assert not torch.equal(before, parameter_checksum(model.parameters()))
    # Values exchanged between two parameters (at the same position) change it too.
    changed = parameter_checksum(model.parameters())
    first, second = (
        next(model.parameters()).data.view(-1),
        list(model.parameters())[1].data.view(-1),
    )
    first[0], second[0] = second[0].clone(), first[0].clone()
    assert not torch.equal(changed, parameter_checksum(model.parameters()))


def test_parameter_checksum_sees_changes_that_cancel_in_a_sum() -> None:
    """Two changes of a few units of the last bit that a weighted sum of the bits missed (+2 at
    one place, -1 at the next), and a value moved to the next parameter (same bytes)."""
    torch.manual_seed(0)
    model = mlp((2, 8, 2), "tanh")
    before = parameter_checksum(model.parameters())
    bits = next(model.parameters()).data.view(-1).view(torch.int32)
    bits[0] += 2
    bits[1] -= 1
    assert not torch.equal(before, parameter_checksum(model.parameters()))
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0])
    assert not torch.equal(
        distributed._checksum([a, b]), distributed._checksum([a[:1], torch.tensor([2.0, 3.0])])
    )


# -- real process groups: the library -------------------------------------------------------------


def _paper_run(group: ProcessGroup | None, max_grad_norm: float | None = None) -> dict[str, Any]:
    """Train the paper's network (float64, SGD with momentum, its gradients clipped to
    ``max_grad_norm`` if given) and record the parameters after every step; under ``group``,
    data-parallel from rank-dependent initial weights."""
    data = make_disk_data(seed=0, dtype=torch.float64)
    torch.manual_seed(0 if group is None else group.rank)  # the broadcast must fix this
    model = mlp((2, 25, 25, 25, 2), "tanh", dtype=torch.float64)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    steps: list[torch.Tensor] = []
    step = optimizer.step

    def step_and_record() -> None:
        step()
        steps.append(_flat(model))

    optimizer.step = step_and_record  # type: ignore[method-assign]
    parallel = DataParallel(model, group) if group is not None else None
    history = fit(
        model,
        CrossEntropyLoss(),
        optimizer,
        data.train.x,
        data.train.y,
        epochs=EPOCHS,
        batch_size=BATCH,
        generator=torch.Generator().manual_seed(0),
        parallel=parallel,
        max_grad_norm=max_grad_norm,
    )
    if parallel is not None:
        parallel.check_in_sync()
    return {"steps": torch.stack(steps), "loss": history.train_loss}


def _library_worker(rank: int, ports: tuple[int, int], out: str) -> None:
    """Rank ``rank`` of a group of 3, then (ranks 0 and 1) of a group of 2: one start-up each."""
    os.environ.update(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    for world_size, port in zip((3, 2), ports, strict=True):
        if rank >= world_size:
            return
        os.environ["MASTER_PORT"] = str(port)
        with ProcessGroup(Launch(rank, world_size, rank), timeout=120.0) as group:  # (slow imports)
            result = _paper_run(group)
            # The global batch's gradients clipped, alike on every rank.
            result["clipped"] = _paper_run(group, max_grad_norm=CLIP)["steps"]
            # A model that is not flat (a lone Linear) goes through temporary flat copies.
            torch.manual_seed(100 + rank)
            layer = Linear(3, 2, dtype=torch.float64)
            broadcast_parameters(group, layer.parameters())
            result["broadcast"] = _flat(layer)
            for index, parameter in enumerate(layer.parameters()):
                parameter.grad.copy_(torch.arange(parameter.numel()).view(parameter.shape))
                parameter.grad.add_(10.0 * rank + index)
            all_reduce_gradients(group, layer.parameters(), weight=rank + 1.0)
            result["reduced"] = torch.cat([p.grad.reshape(-1) for p in layer.parameters()])
            # The last rank's replica drifts by one ulp: every rank is told which one.
            parallel = DataParallel(layer, group)
            if rank == world_size - 1:
                value = layer.weight.data
                value[0, 0] = torch.nextafter(value[0, 0], value[0, 0] + 1)
            try:
                parallel.check_in_sync()
                result["in_sync"] = "no error"
            except DistributedError as error:
                result["in_sync"] = str(error)
            result.update(_normed_run(group))
            # Ranks that disagree on the model or on the batches are told so on every rank
            # (gloo used to abort the processes at the first collective of other sizes).
            try:
                DataParallel(Linear(3 + (rank > 0), 2), group)
                result["architecture"] = "no error"
            except DistributedError as error:
                result["architecture"] = str(error)
            try:  # the same parameters, another activation on the last rank
                activation = ReLU() if rank == world_size - 1 else Tanh()
                DataParallel(Sequential(Linear(3, 2), activation), group)
                result["modules"] = "no error"
            except DistributedError as error:
                result["modules"] = str(error)
            samples = 12 + 6 * (rank > 0)
            try:
                parallel.shard(BatchIterator(torch.zeros(samples, 3), torch.zeros(samples), 6))
                result["batches"] = "no error"
            except DistributedError as error:
                result["batches"] = str(error)
            try:  # the same sizes, other samples on the last rank
                x = torch.zeros(12, 3)
                x[5, 1] = float(rank == world_size - 1)
                parallel.shard(BatchIterator(x, torch.zeros(12), 6))
                result["data"] = "no error"
            except DistributedError as error:
                result["data"] = str(error)
            parallel.shard(BatchIterator(torch.zeros(12, 3), torch.zeros(12), 6))  # the same
            # Dropout masks (the distributed module's docstring): the same seed on every rank
            # draws the same masks for each shard; a generator seeded by rank, other ones.
            torch.manual_seed(7)
            result["masks"] = Dropout(0.5)(torch.ones(6, 5))
            own = Dropout(0.5, generator=torch.Generator().manual_seed(7 + rank))
            result["own_masks"] = own(torch.ones(6, 5))
            result.update(_unshared_orders(group))
        torch.save(result, Path(out) / f"world{world_size}-rank{rank}.pt")


def _unshared_orders(group: ProcessGroup) -> dict[str, Any]:
    """Two runs whose ranks would draw other orders of the samples (and so train on shards that
    overlap) from torch's global generator (``generator=None``), each refused on every rank at
    the start of the epoch whose order differs: one with the global generator seeded by rank;
    one seeded alike, with a Dropout that draws from it more numbers on the ranks whose shard
    of the last batch is larger (23 samples in batches of 6: the last one of 5 is split 2/3 or
    1/2/2), so that the orders part after the first epoch."""
    result: dict[str, Any] = {}
    x = torch.randn(23, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.arange(23) % 2
    for name, seed, dropout in (("rank_seeded", 50 + group.rank, False), ("drifted", 50, True)):
        torch.manual_seed(seed)
        layers = [Linear(2, 4, dtype=torch.float64), Tanh(), Linear(4, 2, dtype=torch.float64)]
        model = Sequential(*layers[:2], *([Dropout(0.5)] if dropout else []), layers[2])
        records: list[EpochRecord] = []
        try:
            fit(
                model,
                CrossEntropyLoss(),
                SGD(model.parameters(), lr=0.1),
                x,
                y,
                epochs=3,
                batch_size=6,
                on_epoch=records.append,
                parallel=DataParallel(model, group),
            )
            result[name] = "no error"
        except DistributedError as error:
            result[name] = str(error)
        result[f"{name}_epochs"] = [record.epoch for record in records]
    return result


def _normed_run(group: ProcessGroup) -> dict[str, Any]:
    """A model with a batch norm, each rank starting from other running statistics: its buffers
    are rank 0's after training (each rank's forward updates them from its own shard); then the
    last rank's drift by one ulp and every rank is told."""
    torch.manual_seed(200 + group.rank)
    dtype = torch.float64
    model = Sequential(
        Linear(2, 6, dtype=dtype), BatchNorm1d(6, dtype=dtype), Tanh(), Linear(6, 2, dtype=dtype)
    )
    model[1].running_mean.add_(group.rank)
    parallel = DataParallel(model, group)
    data = make_disk_data(n_train=120, n_validation=10, n_test=10, seed=1, dtype=dtype)
    fit(
        model,
        CrossEntropyLoss(),
        SGD(model.parameters(), lr=0.1),
        data.train.x,
        data.train.y,
        epochs=2,
        batch_size=60,
        generator=torch.Generator().manual_seed(0),
        parallel=parallel,
    )
    parallel.check_in_sync()  # raises if a rank's parameters or buffers differ
    result: dict[str, Any] = {
        "buffers": torch.cat([b.reshape(-1).double() for _, b in model.named_buffers()])
    }
    if group.rank == group.world_size - 1:
        value = model[1].running_var
        value[0] = torch.nextafter(value[0], value[0] + 1)
    try:
        parallel.check_in_sync()
        result["buffers_in_sync"] = "no error"
    except DistributedError as error:
        result["buffers_in_sync"] = str(error)
    return result


def test_data_parallel_on_2_and_3_ranks_equals_one_process(tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    torch.multiprocessing.spawn(_library_worker, args=(ports, str(tmp_path)), nprocs=3)
    reference = _paper_run(None)
    steps = reference["steps"]
    assert steps.shape[0] == EPOCHS * 9
    steps_clipped = _paper_run(None, max_grad_norm=CLIP)["steps"]
    assert _relative_error(steps_clipped[-1], steps[-1]) > 1e-3  # the clipping acts
    torch.manual_seed(100)
    layer = Linear(3, 2, dtype=torch.float64)
    assert flat_buffer([p.grad for p in layer.parameters()]) is None
    for world_size in (2, 3):
        results = [
            torch.load(tmp_path / f"world{world_size}-rank{r}.pt") for r in range(world_size)
        ]
        for result in results:
            # Bit-identical on every rank after every step.
            assert torch.equal(result["steps"], results[0]["steps"])
            assert result["loss"] == results[0]["loss"]
        got = results[0]["steps"]
        per_step = max(_relative_error(got[i], steps[i]) for i in range(len(steps)))
        assert per_step <= 1e-12, (world_size, per_step)
        for result in results:
            assert torch.equal(result["clipped"], results[0]["clipped"])
        clipped = results[0]["clipped"]
        per_step = max(_relative_error(clipped[i], steps_clipped[i]) for i in range(len(steps)))
        assert per_step <= 1e-12, (world_size, "clipped", per_step)
        assert _relative_error(got[-1], steps[-1]) <= 1e-12
        assert results[0]["loss"] == pytest.approx(reference["loss"], rel=1e-9)
        # The fallback paths: rank 0's values everywhere; sum over ranks of (rank + 1) * grad.
        expected = torch.zeros(8, dtype=torch.float64)
        for rank in range(world_size):
            grads = [torch.arange(6.0) + 10 * rank, torch.arange(2.0) + 10 * rank + 1]
            expected += (rank + 1) * torch.cat(grads).double()
        for result in results:
            assert torch.equal(result["broadcast"], _flat(layer))
            assert torch.allclose(result["reduced"], expected, rtol=1e-12, atol=0)
            assert (
                f"parameters of ranks [{world_size - 1}] differ from rank 0's"
                in (result["in_sync"])
            )
            assert torch.equal(result["buffers"], results[0]["buffers"])
            assert (
                f"the buffers of ranks [{world_size - 1}] differ from rank 0's"
                in result["buffers_in_sync"]
            )
            others = list(range(1, world_size))
            assert result["architecture"] == (
                f"DataParallel: the model (the shapes and dtypes of its parameters) of ranks "
                f"{others} differs from rank 0's; every rank must run the same model on batches "
                "of the same sizes"
            )
            assert result["modules"] == (
                "DataParallel: the model (its modules and their settings, as its repr shows them) "
                f"of ranks [{world_size - 1}] differs from rank 0's; every rank must run the same "
                "model on batches of the same sizes (a module of one's own whose extra_repr shows "
                "a value of the rank's own, a path or a device, differs too: leave it out of the "
                "repr)"
            )
            batches = (
                "DataParallel: the batches (the number of samples, the batch size, shuffle, "
                "drop_last and a digest of the samples and their targets) of ranks {} differs "
                "from rank 0's; "
                "every rank must run the same model on the same data in batches of the same sizes"
            )
            assert result["batches"] == batches.format(others)
            assert result["data"] == batches.format([world_size - 1])
            order = (
                f"DataParallel: the order (the state of the generator that draws this pass's "
                f"order of the samples) of ranks {others} differs from rank 0's; seed every "
                "rank's generator identically"
            )
            assert result["rank_seeded"].startswith(order), result["rank_seeded"]
            assert result["rank_seeded_epochs"] == []
            assert result["drifted"].startswith(order), result["drifted"]
            assert result["drifted_epochs"] == [0]
        for result in results[1:]:
            assert torch.equal(result["masks"], results[0]["masks"])
            assert not torch.equal(result["own_masks"], results[0]["own_masks"])
        # The running statistics moved during training (they are not the initial ones).
        assert not torch.equal(results[0]["buffers"][:6], torch.zeros(6, dtype=torch.float64))


# -- real process groups: refusals on every rank, before anything changes -------------------------


class _ParameterOrBuffer(Module):
    """An identity holding ``w``, a parameter, and ``v``, of shape (4,): a parameter on rank 1,
    a buffer on rank 0. Described as one list of shapes, the parameters and buffers of both
    ranks read (2, 3), (4,)."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.register_parameter("w", Parameter(torch.full((2, 3), 1.0 + rank, dtype=torch.float64)))
        v = torch.full((4,), 1.0 + rank, dtype=torch.float64)
        if rank == 0:
            self.register_buffer("v", v)
        else:
            self.register_parameter("v", Parameter(v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output


def _attempt(call: Any) -> str:
    """What ``call()`` raised, as ``Type: message``, or ``no error``."""
    try:
        call()
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return "no error"


def _grads(model: Any) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()


def _refusals_worker(rank: int, port: int, out: str) -> None:
    """Rank ``rank`` of 2: models that DataParallel and synchronize must refuse on every rank,
    each before anything changes (the one whose ranks differ last: refused too late, as it was,
    it left the ranks in other collectives)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result: dict[str, Any] = {}
    with ProcessGroup(Launch(rank, 2, rank), timeout=120.0) as group:  # (slow imports)
        # A buffer that gloo does not carry, on every rank.
        torch.manual_seed(rank)
        model = Sequential(Linear(2, 2, dtype=torch.float64))
        model.register_buffer("count", torch.zeros(1, dtype=torch.int16))
        before = _flat(model)
        result["built"] = _attempt(lambda: DataParallel(model, group))
        result["built_unchanged"] = torch.equal(_flat(model), before)
        # Such a buffer registered after the DataParallel was built, at the same step on every
        # rank: refused by synchronize before the gradients are reduced, every time (and after
        # check_in_sync, which takes the new buffers without broadcasting them).
        model = Sequential(Linear(2, 2, dtype=torch.float64))
        parallel = DataParallel(model, group)
        for parameter in model.parameters():
            parameter.grad.fill_(1.0 + rank)
        model.register_buffer("count", torch.zeros(1, dtype=torch.uint16))
        grads, known = _grads(model), list(parallel._buffers)
        result["synchronized"] = _attempt(lambda: parallel.synchronize(torch.tensor(1.0)))
        result["grads_unchanged"] = torch.equal(_grads(model), grads)
        result["buffers_kept"] = len(parallel._buffers) == len(known) and all(
            a is b for a, b in zip(parallel._buffers, known, strict=True)
        )
        result["in_sync"] = _attempt(parallel.check_in_sync)
        result["synchronized_again"] = _attempt(lambda: parallel.synchronize(torch.tensor(1.0)))
        result["grads_unchanged_again"] = torch.equal(_grads(model), grads)
        # A tensor that is a buffer on rank 0 and a parameter on rank 1.
        moved = _ParameterOrBuffer(rank)
        result["moved"] = _attempt(lambda: DataParallel(moved, group))
        result["moved_values"] = (moved.w.data.clone(), moved.v.data.clone() if rank else moved.v)
    torch.save(result, Path(out) / f"refusals-rank{rank}.pt")


@pytest.fixture(scope="module")
def refusals_of_two(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The results of :func:`_refusals_worker` on 2 ranks (one start-up for the tests below)."""
    out = tmp_path_factory.mktemp("refusals")
    torch.multiprocessing.spawn(_refusals_worker, args=(free_port(), str(out)), nprocs=2)
    return [torch.load(out / f"refusals-rank{rank}.pt") for rank in range(2)]


def test_a_tensor_that_is_a_parameter_on_one_rank_and_a_buffer_on_another_is_refused(
    refusals_of_two: list[dict[str, Any]],
) -> None:
    """The parameters and buffers were described as one list of shapes and dtypes: rank 0's
    buffer v (4,) and rank 1's parameter v (4,) passed, then the broadcasts differed in size
    (rank 1 built its DataParallel, rank 0 failed in the broadcast of the buffers once rank 1
    left; or a buffer overwritten by a parameter). Described apart, refused on every rank before
    either broadcast, every value as it was."""
    for rank, result in enumerate(refusals_of_two):
        assert result["moved"] == (
            "DistributedError: DataParallel: the model (the shapes and dtypes of its parameters) "
            "of ranks [1] differs from rank 0's; every rank must run the same model on batches "
            "of the same sizes"
        ), rank
        w, v = result["moved_values"]
        assert torch.equal(w, torch.full((2, 3), 1.0 + rank, dtype=torch.float64))
        assert torch.equal(v, torch.full((4,), 1.0 + rank, dtype=torch.float64))


def test_a_model_with_a_buffer_gloo_cannot_carry_is_refused_before_any_broadcast(
    refusals_of_two: list[dict[str, Any]],
) -> None:
    """A buffer of int16 was refused by broadcast_buffers, in its name, once rank 0's
    parameters had overwritten rank 1's: the refused DataParallel changed the model."""
    for rank, result in enumerate(refusals_of_two):
        assert re.fullmatch(
            r"TypeError: DataParallel: buffer 'count' is torch\.int16, which the gloo backend does "
            r"not carry \(it takes .*\); convert it",
            result["built"],
        ), result["built"]
        assert result["built_unchanged"], rank


def test_synchronize_refuses_a_new_buffer_gloo_cannot_carry_before_reducing_the_gradients(
    refusals_of_two: list[dict[str, Any]],
) -> None:
    """A buffer of uint16 registered after the DataParallel was built: synchronize reduced the
    gradients (a second call reduced them again), took the new buffers as its own, then
    broadcast_buffers refused it. Refused by synchronize first now, the gradients and the
    buffers it keeps as they were; also after check_in_sync (which does not broadcast them) took
    the new buffers as its own."""
    refusal = (
        r"TypeError: DataParallel\.synchronize: buffer 'count' is torch\.uint16, which the gloo "
        r"backend does not carry \(it takes .*\); convert it"
    )
    for rank, result in enumerate(refusals_of_two):
        assert re.fullmatch(refusal, result["synchronized"]), result["synchronized"]
        assert result["grads_unchanged"] and result["buffers_kept"], rank
        assert result["in_sync"] == "no error"
        assert re.fullmatch(refusal, result["synchronized_again"]), result["synchronized_again"]
        assert result["grads_unchanged_again"], rank


# -- real process groups: `minidl train` under torchrun, and launched by hand ---------------------


def _torchrun(world_size: int, argv: Sequence[str], tmp_path: Path) -> str:
    done = _launch_torchrun(world_size, argv, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _launch_torchrun(
    world_size: int, argv: Sequence[str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """``torchrun`` of ``minidl ARGV`` in ``world_size`` processes, in ``tmp_path``."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world_size),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        "-m", "minidl", *argv,
    ]  # fmt: skip
    return subprocess.run(
        command,
        check=False,
        env=_child_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,  # (a loaded machine took 2 minutes for the whole test)
    )


#: ``minidl ARGV[4:]`` once every rank has imported it (torch included) and left a file in the
#: folder ARGV[1]: the ranks' start-ups, which a loaded machine can make differ by more than a
#: short timeout, then end together.
_MEET_THEN_RUN = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from minidl.cli import main\n"
    "folder, rank, world_size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])\n"
    "(folder / rank).touch()\n"
    "deadline = time.monotonic() + 300\n"
    "while len(list(folder.iterdir())) < world_size and time.monotonic() < deadline:\n"
    "    time.sleep(0.01)\n"
    "sys.exit(main(sys.argv[4:]))\n"
)


def _start_ranks(
    world_size: int, argv: Sequence[str], tmp_path: Path
) -> list[subprocess.Popen[str]]:
    """``minidl ARGV`` as ``world_size`` ranks started by hand (as torchrun would start them,
    but with no launcher watching over them), which join the group together
    (:data:`_MEET_THEN_RUN`); rank r writes outR.txt and errR.txt."""
    port = str(free_port())
    meeting = tmp_path / f"meeting-{port}"
    meeting.mkdir()
    ranks = []
    for rank in range(world_size):
        env = _child_env(
            WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_PORT=port
        )
        meet = [str(meeting), str(rank), str(world_size)]
        ranks.append(
            subprocess.Popen(
                [sys.executable, "-c", _MEET_THEN_RUN, *meet, *argv],
                env=env,
                cwd=tmp_path,
                text=True,
                stdout=(tmp_path / f"out{rank}.txt").open("w"),
                stderr=(tmp_path / f"err{rank}.txt").open("w"),
            )
        )
    return ranks


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("training time")]


def test_cli_under_torchrun_matches_one_process_and_resumes_on_another_world_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from minidl.checkpoint import read_checkpoint

    common = ["--dtype", "float64", "--batch-size", str(BATCH), "--momentum", "0.5"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a network this small trains fastest on one thread
    try:
        checkpoint = ["--checkpoint", str(tmp_path / "one.ckpt")]
        assert main(["train", "--epochs", "5", *common, *checkpoint]) == 0
        five_epochs = _lines(capsys.readouterr().out)
        assert main(["train", "--epochs", "3", *common]) == 0
        three_epochs = _lines(capsys.readouterr().out)
    finally:
        torch.set_num_threads(threads)

    # 2 ranks under torchrun, 3 epochs: rank 0 alone prints, and prints what one process prints.
    two_ranks = _torchrun(
        2, ["train", "--epochs", "3", *common, "--checkpoint", "dist.ckpt"], tmp_path
    )
    assert _lines(two_ranks) == three_epochs
    # 3 ranks resume the 2 ranks' checkpoint up to epoch 5: as if one process never stopped.
    ranks = _start_ranks(3, ["train", "--epochs", "5", *common, "--resume", "dist.ckpt"], tmp_path)
    for rank in ranks:
        assert rank.wait(timeout=600) == 0, (tmp_path / "err0.txt").read_text()
    resumed = (tmp_path / "out0.txt").read_text()
    assert _lines(resumed)[-4:] == five_epochs[-4:]  # epochs 4 and 5, the final errors
    assert sum("resumed from" in line for line in resumed.splitlines()) == 1
    assert (tmp_path / "out1.txt").read_text() == (tmp_path / "out2.txt").read_text() == ""

    expected = read_checkpoint(tmp_path / "one.ckpt")
    got = read_checkpoint(tmp_path / "dist.ckpt")
    assert got.training.epoch == 5
    for name, value in expected.model_state.items():
        assert _relative_error(got.model_state[name], value) <= 1e-6, name
    assert got.training.history.train_loss == pytest.approx(
        expected.training.history.train_loss, rel=1e-9
    )


@pytest.mark.parametrize(
    ("batch_size", "message"),
    [
        (
            100,
            "--batch-size 100 is not divisible by the 3 processes of the launch (WORLD_SIZE); "
            "each takes 1/3 of every batch: choose a multiple of 3",
        ),
        (
            999,
            "--batch-size 999 ends every epoch with a batch of 1 of the 1000 training samples, "
            "fewer than the 3 processes of the launch (WORLD_SIZE), which take one sample each "
            "at least: choose another --batch-size",
        ),
    ],
)
def test_cli_under_torchrun_refuses_a_batch_size_the_ranks_cannot_split_by_its_flag(
    batch_size: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every rank refused it in fit, in ShardedBatches' words ('the batch size 100 is not
    divisible by the world size 3'), after rank 0 had printed the model and the optimizer: a
    refused run prints its error alone, naming the flag. (Checked before any collective: the
    group here is a stand-in that has none.)"""
    from types import SimpleNamespace

    from minidl import cli

    args = build_parser().parse_args(["train", "--epochs", "1", "--batch-size", str(batch_size)])
    args.process_group = SimpleNamespace(rank=0, world_size=3)
    with pytest.raises(ValueError) as raised:
        cli._run_train(args)
    assert str(raised.value) == message
    assert capsys.readouterr().out == ""


class _GroupOfTwo:
    """A stand-in for the ProcessGroup of rank 1 of 2, which keeps the error that left its with
    block (the real one publishes it to the other ranks)."""

    left: ClassVar[list[BaseException | None]] = []

    def __init__(self, launch: Launch, *, device: str, timeout: float) -> None:
        self.rank, self.world_size = launch.rank, launch.world_size

    def __enter__(self) -> _GroupOfTwo:
        return self

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        self.left.append(error)


def test_cli_an_error_of_a_rank_other_than_0_leaves_its_group_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rank 1 of `minidl train --resume` that cannot read the file (on its own machine) printed
    its error and closed its group as if its run had ended: rank 0 was told that rank 1 'closed
    its group before reaching it', not why. The error leaves the with block, which publishes it
    (rank 0 then quotes 'CheckpointError: --resume ...: cannot be read'); rank 1 still prints
    its line and ends with status 2."""
    monkeypatch.setattr(distributed, "ProcessGroup", _GroupOfTwo)
    monkeypatch.setattr(_GroupOfTwo, "left", [])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--epochs", "2", "--resume", "missing.ckpt"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "minidl train: rank 1: error: --resume missing.ckpt: cannot be read (No such file or "
        "directory)\n"
    )
    assert [type(error).__name__ for error in _GroupOfTwo.left] == ["CheckpointError"]


def test_cli_an_error_of_rank_0_leaves_its_group_and_is_mains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rank 0's error of its run leaves the with block too (the group publishes it), and is
    reported by main in the command's one line, as a single process's is: not as a rank's
    ('minidl train: rank 0: error: ...', which main's handling of the others printed for rank
    0 too, passed the tests before, whose stand-in group was rank 1's; fails this)."""
    monkeypatch.setattr(distributed, "ProcessGroup", _GroupOfTwo)
    monkeypatch.setattr(_GroupOfTwo, "left", [])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--epochs", "2", "--resume", "missing.ckpt"]) == 2
    assert capsys.readouterr().err == (
        "minidl train: error: --resume missing.ckpt: cannot be read (No such file or directory)\n"
    )
    assert [type(error).__name__ for error in _GroupOfTwo.left] == ["CheckpointError"]


def test_cli_an_error_of_the_groups_arguments_is_mains_on_every_rank(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A group refused before it is joined (its device, its timeout) is reported by main on
    every rank, as on rank 0, in the command's one line: not as a rank's error of its run,
    which only a joined group's ranks print."""

    class Refused:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise ValueError("ProcessGroup: device 'cuda': no GPU for local rank 1")

    monkeypatch.setattr(distributed, "ProcessGroup", Refused)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["train", "--epochs", "1"]) == 2
    assert capsys.readouterr().err == (
        "minidl train: error: ProcessGroup: device 'cuda': no GPU for local rank 1\n"
    )


def test_cli_an_anomaly_of_a_rank_other_than_0_is_printed_naming_it(tmp_path: Path) -> None:
    """Each rank checks its own shards under --detect-anomaly: rank 0 and rank 1 printed the
    same line, which the docs say rank 0 alone prints; rank 1's now names it, as its errors
    do (an anomaly of its shard alone would not be rank 0's to print)."""
    argv = ["train", "--epochs", "20", "--activation", "relu", "--lr", "1e10", "--detect-anomaly"]
    ranks = _start_ranks(2, [*argv, "--quiet", "--batch-size", str(BATCH)], tmp_path)
    for rank in ranks:
        assert rank.wait(timeout=600) == 1, (tmp_path / "err0.txt").read_text()
    first = (tmp_path / "err0.txt").read_text().splitlines()
    second = (tmp_path / "err1.txt").read_text().splitlines()
    assert next(line for line in first if "anomaly" in line).startswith(
        "minidl train: anomaly detected: "
    )
    assert next(line for line in second if "anomaly" in line).startswith(
        "minidl train: rank 1: anomaly detected: "
    )


# -- real process groups: a rank that dies or hangs -----------------------------------------------


@pytest.mark.parametrize(
    ("world_size", "victim", "how", "timeout"),
    [(3, 1, signal.SIGKILL, 10.0), (2, 1, signal.SIGSTOP, 10.0)],
    ids=["killed", "hung"],
)
def test_a_dead_or_hung_rank_stops_the_others_with_its_name(
    world_size: int, victim: int, how: signal.Signals, timeout: float, tmp_path: Path
) -> None:
    """A killed rank is found at once (its connections close) or at the timeout, a hung one at
    the timeout: not at twice it. Each time is taken when the survivors have written their
    errors (a loaded machine may take long to end a process), and the timeouts are long enough
    for the ranks' collectives not to time out on such a machine before the signal."""
    argv = ["train", "--epochs", "1000000", "--batch-size", str(BATCH)]
    ranks = _start_ranks(world_size, [*argv, "--dist-timeout", str(timeout)], tmp_path)
    survivors = [r for r in range(world_size) if r != victim]
    try:
        deadline = time.monotonic() + 300
        while not re.search(r"epoch +2/", (tmp_path / "out0.txt").read_text()):
            assert time.monotonic() < deadline, (tmp_path / "err0.txt").read_text()
            assert all(rank.poll() is None for rank in ranks), (tmp_path / "err0.txt").read_text()
            time.sleep(0.05)
        os.kill(ranks[victim].pid, how)
        stopped = time.monotonic()
        deadline = stopped + timeout + 120  # (only bounds survivors that never fail)
        while not all(
            "minidl train: error: " in (tmp_path / f"err{rank}.txt").read_text()
            for rank in survivors
        ):
            assert time.monotonic() < deadline, "the survivors did not fail"
            time.sleep(0.05)
        elapsed = time.monotonic() - stopped
        for rank in survivors:
            assert ranks[rank].wait(timeout=120) == 1
    finally:
        for rank in ranks:
            rank.kill()
            rank.wait()
    # Found at once (killed: closed connections) or at the timeout, plus the census (1.5 s).
    assert elapsed < 2 * timeout, elapsed
    if how == signal.SIGSTOP:
        assert elapsed >= timeout
    for rank in survivors:
        error = (tmp_path / f"err{rank}.txt").read_text()
        # (the collective it was in: a step's all_reduce, or the all_gather of an epoch's start,
        # as the signal fell)
        prefix = f"minidl train: error: rank {rank} of {world_size}: the all_(reduce|gather) of "
        assert re.search(prefix, error), error
        assert f": rank {victim} stopped responding (died or hung)" in error, error
        assert f"collective timeout {timeout:g} s" in error


def _wait_for(path: Path, seconds: float = 300) -> None:
    """Wait until ``path`` exists (a file another rank leaves), ``seconds`` at most."""
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def _late_worker(rank: int, port: int, out: str) -> None:
    """Rank ``rank`` of 2, training; rank 1 waits in ``on_epoch`` after the first epoch until
    rank 0 has failed, named it and left (alive: its heartbeat beats on meanwhile).

    The ranks start the group together (each leaves a file ``ready<rank>`` and waits for the
    other's): the timeout covers the start-up too, and a loaded machine may take longer than
    that between the two ranks' imports of torch."""
    os.environ.update(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    timeout = 10.0
    (Path(out) / f"ready{rank}").touch()
    _wait_for(Path(out) / f"ready{1 - rank}")
    try:
        with ProcessGroup(Launch(rank, 2, rank), timeout=timeout) as group:
            torch.manual_seed(0)
            model = mlp((2, 3, 2), "tanh")
            x = torch.randn(12, 2)

            def on_epoch(record: EpochRecord) -> None:
                if rank == 1 and record.epoch == 0:
                    _wait_for(Path(out) / "late0.txt")

            fit(
                model,
                CrossEntropyLoss(),
                SGD(model.parameters(), lr=0.1),
                x,
                (x[:, 0] > 0).long(),
                epochs=2,
                batch_size=6,
                generator=torch.Generator().manual_seed(0),
                on_epoch=on_epoch,
                parallel=DataParallel(model, group),
            )
        result = "no error"
    except DistributedError as error:
        result = str(error)
    (Path(out) / f"late{rank}.txt").write_text(result)


def test_a_rank_alive_but_late_is_named(tmp_path: Path) -> None:
    """Rank 1 is stuck in its own code (here waiting in on_epoch; a slow checkpoint write or a
    deadlock alike) for longer than the timeout. Its heartbeat beats on, so rank 0 said 'every
    rank is still alive (the ranks may have diverged in their calls)', naming no rank; the
    heartbeat also publishes how many collectives the rank has entered, one fewer than rank 0.
    (Rank 1 waits until rank 0 has written its error, not for a fixed time, which a loaded
    machine could make too short.)"""
    torch.multiprocessing.spawn(_late_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    error = (tmp_path / "late0.txt").read_text()
    assert error.startswith(
        "rank 0 of 2: the all_gather of the digests of the batches and order failed: rank 1 has "
        "not reached it: still alive, but stuck or slower than the timeout in its own code before "
        "it (collective timeout 10 s). Cause: "
    ), error
    assert (tmp_path / "late1.txt").read_text().startswith("rank 1 of 2: the all_gather of ")


class _Store:
    """A rendezvous store of fixed heartbeats and finished censuses (for ``_census`` and what
    follows it)."""

    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values

    def check(self, keys: list[str]) -> bool:
        return all(key in self.values for key in keys)

    def get(self, key: str) -> bytes:
        return self.values[key]

    def set(self, key: str, value: str) -> None:
        self.values[key] = value.encode()


def test_the_census_does_not_name_a_survivor_that_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranks 1 and 2 stopped beating: rank 2 died, rank 1 found the failure, finished its census
    and left. Rank 0 used to name both; a finished census marks a survivor."""
    monkeypatch.setattr(distributed, "_CENSUS_SECONDS", 0.0)
    group = distributed.ProcessGroup.__new__(distributed.ProcessGroup)
    group.rank, group.world_size = 0, 3
    group._store = _Store(  # type: ignore[assignment]
        {
            "minidl/heartbeat/1": b"7",
            "minidl/heartbeat/2": b"5",
            "minidl/census-done/1": b"1",
        }
    )
    assert group._census() == [2]


def test_the_ranks_behind_are_named_when_every_rank_is_alive() -> None:
    """Of ranks 1 to 3, all beating, ranks 1 and 3 have entered fewer collectives than rank 0,
    which failed in its 5th: they are named as not having reached it."""
    group = distributed.ProcessGroup.__new__(distributed.ProcessGroup)
    group.rank, group.world_size, group.timeout, group._calls = 0, 4, 5.0, [5]
    calls = {f"minidl/collectives/{rank}": n for rank, n in ((1, b"4"), (2, b"5"), (3, b"3"))}
    group._store = _Store(calls)  # type: ignore[assignment]
    group._census = lambda: []  # type: ignore[method-assign]
    unawaited: list[list[int]] = []
    group._finish_census = unawaited.append  # type: ignore[method-assign]
    error = group._failure("the all_reduce of the gradients", RuntimeError("timed out"))
    # Rank 0 (which hosts the store) does not wait for their census before it leaves: they may
    # be stuck for good, and it waited one more timeout for them.
    assert unawaited == [[1, 3]]
    assert str(error) == (
        "rank 0 of 4: the all_reduce of the gradients failed: ranks 1, 3 have not reached it: "
        "still alive, but stuck or slower than the timeout in their own code before it "
        "(collective timeout 5 s). Cause: timed out"
    )


def test_ranks_that_closed_their_group_are_named_as_such_with_their_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rank that left its group (a run of fewer epochs, which closes it at the end; an error
    raised through the ``with`` block) was named as one that 'stopped responding (died or
    hung)'. Closing publishes it, with the error's type and first line: the others' census
    names rank 1 as having closed its group, rank 2 as having closed it on its error, and rank
    3, which published nothing, as stopped."""
    group = distributed.ProcessGroup.__new__(distributed.ProcessGroup)
    group.rank, group.world_size, group.timeout, group._calls = 0, 4, 5.0, [5]
    group._store = _Store(  # type: ignore[assignment]
        {"minidl/left/1": b"", "minidl/left/2": b"ValueError: bad batch"}
    )
    group._census = lambda: [1, 2, 3]  # type: ignore[method-assign]
    finished: list[list[int]] = []
    group._finish_census = finished.append  # type: ignore[method-assign]
    error = group._failure("the all_reduce of the gradients", RuntimeError("closed"))
    assert finished == [[1, 2, 3]]  # (rank 0 waits for none of them)
    assert str(error) == (
        "rank 0 of 4: the all_reduce of the gradients failed: rank 3 stopped responding (died "
        "or hung); rank 1 closed its group before reaching it (a run that ended sooner there: "
        "fewer epochs, a collective called on some ranks only, or an error handled there); "
        "rank 2 closed its group on an error of its own: ValueError: bad batch (collective "
        "timeout 5 s). Cause: closed"
    )
    # What a group publishes as it closes: nothing, or the error that left its with block.
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    for raised, reason in (
        (None, b""),
        (ValueError("bad batch\nin detail"), b"ValueError: bad batch"),
        (KeyboardInterrupt(), b"KeyboardInterrupt"),
        (ValueError(" \n "), b"ValueError"),  # (a message of white space alone: none)
        (ValueError("x" * 1000), b"ValueError: " + b"x" * 288),  # (300 characters at most)
    ):
        monkeypatch.setenv("MASTER_PORT", str(free_port()))
        with (
            contextlib.suppress(ValueError, KeyboardInterrupt),
            ProcessGroup(Launch(0, 1, 0), timeout=10.0) as closed,
        ):
            if raised is not None:
                raise raised
        assert closed._store.get(closed._key("left/", 0)) == reason
        closed.close()  # (again: nothing changes)
        assert closed._store.get(closed._key("left/", 0)) == reason


def test_the_keys_of_an_earlier_group_on_the_store_are_not_this_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The heartbeats, collective counts, censuses and reasons of leaving lay under fixed keys:
    a second group joined on the same store (torchrun's launcher keeps it) read the first's,
    and named a rank that died as alive, or as one that closed its group. Each group's keys lie
    under rank 0's random number now, agreed at the join."""
    monkeypatch.setattr(distributed, "_CENSUS_SECONDS", 0.0)
    group = distributed.ProcessGroup.__new__(distributed.ProcessGroup)
    group.rank, group.world_size, group.timeout, group._calls = 0, 2, 5.0, [5]
    group._prefix = "minidl/00000000000000bb/"
    earlier = "minidl/00000000000000aa/"
    group._store = _Store(  # type: ignore[assignment]
        {f"{earlier}left/1": b"", f"{earlier}census-done/1": b"1", f"{earlier}collectives/1": b"3"}
    )
    assert group._left([1]) == {} and group._census() == [1] and group._behind() == []
    group._store.values[f"{group._prefix}left/1"] = b""
    assert group._left([1]) == {1: ""}


def test_two_groups_take_two_places_in_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    prefixes = []
    for _ in range(2):
        monkeypatch.setenv("MASTER_PORT", str(free_port()))
        with ProcessGroup(Launch(0, 1, 0), timeout=10.0) as group:
            prefixes.append(group._prefix)
            assert group._key("left/", 3) == f"{group._prefix}left/3"
    assert all(re.fullmatch(r"minidl/[0-9a-f]{16}/", prefix) for prefix in prefixes)
    assert prefixes[0] != prefixes[1]


def _rejoin_worker(rank: int, port: int, out: str) -> None:
    """Rank ``rank`` of 2, on one store (one MASTER_PORT): three groups joined one after the
    other, rank 1 leaving each half a second after rank 0; then a pass over shards after rank 1
    alone set its batches' shuffle off."""
    os.environ.update(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result: dict[str, Any] = {"joins": []}
    for _ in range(3):
        try:
            with ProcessGroup(Launch(rank, 2, rank), timeout=60.0) as group:
                DataParallel(mlp((2, 3, 2), "tanh"), group)
                if rank == 1:
                    time.sleep(0.5)
            result["joins"].append("joined")
        except DistributedError as error:
            result["joins"].append(str(error))
            break
    with ProcessGroup(Launch(rank, 2, rank), timeout=60.0) as group:
        parallel = DataParallel(mlp((2, 3, 2), "tanh"), group)
        x, y = torch.zeros(40, 2), torch.zeros(40, dtype=torch.long)
        batches = BatchIterator(x, y, 20, generator=torch.Generator().manual_seed(1))
        shards = parallel.shard(batches)
        for _ in shards:
            pass
        if rank == 1:
            batches.shuffle = False
        result["second pass"] = _attempt(lambda: list(shards))
    torch.save(result, Path(out) / f"rejoin-rank{rank}.pt")


def test_groups_joined_again_on_one_store_and_a_shuffle_set_on_one_rank(tmp_path: Path) -> None:
    """torch names every default group "0" again once the last one is destroyed, and gloo read
    the addresses of the ranks' previous group in the store: a rank joining a new group while
    another was still in the previous one failed after 50 s (``Gloo connectFullMesh failed``).
    Each join of a process has its own place in the store now. And the digest of a pass's order
    was gathered only from ranks that shuffle: a rank that set shuffle off gathered fewer
    digests, and gloo aborted its process (``Received data size doesn't match``) where every
    rank should refuse the batches by name."""
    torch.multiprocessing.spawn(_rejoin_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    results = [torch.load(tmp_path / f"rejoin-rank{rank}.pt") for rank in range(2)]
    refusal = (
        "DistributedError: DataParallel: the batches (the number of samples, the batch size, "
        "shuffle, drop_last) of ranks [1] differs from rank 0's; every rank must run the same "
        "model on batches of the same sizes (set batch_size, shuffle and drop_last alike on "
        "every rank)"
    )
    for result in results:
        assert result["joins"] == ["joined"] * 3
        assert result["second pass"] == refusal


def test_parameter_checksum_refuses_what_is_no_parameter_by_name() -> None:
    """It failed with a bare ``AttributeError: 'float' object has no attribute 'data'``."""
    with pytest.raises(
        TypeError,
        match=r"^parameter_checksum: parameters must be minidl Parameters "
        r"\(model\.parameters\(\)\), got builtins\.float at index 0$",
    ):
        distributed.parameter_checksum([1.0])  # type: ignore[list-item]


class _SilentStore:
    """The store of a rank 0 that hangs (stopped, its machine cut off): every call waits for an
    answer that comes only when the test releases it."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def _wait(self, *args: object) -> bool:
        self.released.wait()
        raise RuntimeError("the test's store answered at last")

    check = get = set = _wait


def test_a_store_that_does_not_answer_is_named_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """torch's store calls wait for the store's answer without a timeout: after a failed
    collective, rank 1's census asked a store whose host, rank 0, was stopped (SIGSTOP), and
    `minidl train --dist-timeout 5` on rank 1 still waited after 10 minutes. The census waits
    _CENSUS_SECONDS + _STORE_SECONDS at most, names the store as not answering, and close()
    does not ask it again: it closes at once, however long a store call may wait, and the
    thread left waiting for the store is a daemon, which holds up no exit of the interpreter.
    (Released after 20 s: the code before waited for that.)"""
    monkeypatch.setattr(distributed, "_CENSUS_SECONDS", 0.0)
    monkeypatch.setattr(distributed, "_STORE_SECONDS", 0.5)
    store = _SilentStore()
    group = distributed.ProcessGroup.__new__(distributed.ProcessGroup)
    group.rank, group.world_size, group.timeout, group._calls = 1, 2, 5.0, [3]
    group._store = store  # type: ignore[assignment]
    group._store_answers = True
    group._launcher_hosts_store = False  # (ranks started by hand: rank 0 hosts the store)
    release = threading.Timer(20.0, store.released.set)
    release.start()
    try:
        start = time.monotonic()
        error = group._failure("the all_reduce of the gradients", RuntimeError("timed out"))
        elapsed = time.monotonic() - start
        waiting = [thread for thread in threading.enumerate() if thread.name == "minidl-store-call"]
        assert waiting and all(thread.daemon for thread in waiting)
        monkeypatch.setattr(distributed, "_STORE_SECONDS", 30.0)
        group._stop_beating = threading.Event()
        start = time.monotonic()
        group.close()
        closing = time.monotonic() - start
    finally:
        release.cancel()
        store.released.set()
    assert elapsed < 10.0, elapsed
    assert str(error) == (
        "rank 1 of 2: the all_reduce of the gradients failed: the rendezvous store is "
        "unreachable too (or does not answer), so rank 0 (which hosts it) has stopped or hung "
        "(collective timeout 5 s). Cause: timed out"
    )
    assert group._store_answers is False
    assert closing < 5.0, closing


def test_rank_0_waits_for_the_others_census_beyond_the_stores_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rank 0 waits for the other ranks' census (up to a timeout and more: they may fail that
    much later) before it leaves, which the store's bound does not cut short: rank 0 hosts the
    store, and a rank 0 gone sooner would leave them without one to read."""
    monkeypatch.setattr(distributed, "_CENSUS_SECONDS", 0.0)
    monkeypatch.setattr(distributed, "_STORE_SECONDS", 0.2)
    group = distributed.ProcessGroup.__new__(distributed.ProcessGroup)
    group.rank, group.world_size, group.timeout, group._calls = 0, 2, 5.0, [3]
    group._store = _Store({})  # type: ignore[assignment]
    group._census = lambda: [1]  # type: ignore[method-assign]
    finished: list[list[int]] = []

    def finish_census(missing: list[int]) -> None:
        time.sleep(1.0)  # (the others' census awaited)
        finished.append(missing)

    group._finish_census = finish_census  # type: ignore[method-assign]
    group._failure("the all_reduce of the gradients", RuntimeError("timed out"))
    assert finished == [[1]]


class _StoreThatStops(_SilentStore):
    """The store of a ``torchrun`` launcher that stops (or whose machine is cut off) during the
    census: it answers its first ``answers`` calls (no rank has finished its census), then every
    call waits until the test releases it."""

    def __init__(self, answers: int) -> None:
        super().__init__()
        self.answers = answers
        self.calls = 0

    def _answer(self, *args: object) -> bool:
        self.calls += 1
        if self.answers == 0:
            return self._wait()
        self.answers -= 1
        return False

    check = get = set = _answer


@pytest.mark.parametrize(
    ("rank", "answers"),
    [(0, 0), (0, 1), (0, 3), (1, 0)],
    ids=["rank-0-done", "rank-0-first-check", "rank-0-later-check", "rank-1-done"],
)
def test_a_store_that_stops_answering_after_the_census_is_named_within_a_bound(
    monkeypatch: pytest.MonkeyPatch, rank: int, answers: int
) -> None:
    """Under torchrun the launcher hosts the store, not rank 0: rank 0's census was bounded, but
    its wait for the others' census that follows (saying its own is done, then asking for
    theirs) was not, and a launcher that stopped answering then held rank 0 for ever (here
    until the test releases the store, after 10 s). Each of those store calls is now awaited
    _STORE_SECONDS at most, on every rank: the error names every rank alive and the store as
    having stopped answering then (its host, the launcher, on every rank), and close() does
    not ask it again. (That close() makes no store call is counted, not bounded by the store
    calls' 0.5 s: a loaded machine may take the process off its core for that long during a
    close that makes none.)"""
    monkeypatch.setattr(distributed, "_CENSUS_SECONDS", 0.0)
    monkeypatch.setattr(distributed, "_STORE_SECONDS", 0.5)
    store = _StoreThatStops(answers)
    group = distributed.ProcessGroup.__new__(distributed.ProcessGroup)
    group.rank, group.world_size, group.timeout, group._calls = rank, 2, 30.0, [3]
    group._store = store  # type: ignore[assignment]
    group._store_answers = True
    group._launcher_hosts_store = True
    group._stop_beating = threading.Event()
    group._census = lambda: []  # type: ignore[method-assign]
    group._behind = lambda: []  # type: ignore[method-assign]
    errors: list[distributed.DistributedError] = []
    failing = threading.Thread(
        target=lambda: errors.append(
            group._failure("the all_reduce of the gradients", RuntimeError("timed out"))
        ),
        daemon=True,
    )
    try:
        failing.start()
        failing.join(10.0)  # (the guard: a wait without bound would still go on)
        assert not failing.is_alive(), "the census still waits for the store after 10 s"
        calls = store.calls
        start = time.monotonic()
        group.close()
        closing = time.monotonic() - start
        assert store.calls == calls, "close() asked the store again"
    finally:
        store.released.set()
        failing.join(5.0)
    assert [str(error) for error in errors] == [
        f"rank {rank} of 2: the all_reduce of the gradients failed: every rank is still alive "
        "(the ranks may have diverged in their calls); then the rendezvous store stopped "
        "answering, so the launcher (torchrun's agent, which hosts it) has stopped or hung "
        "(collective timeout 30 s). Cause: timed out"
    ]
    assert group._store_answers is False
    assert closing < 5.0, closing  # (at once: only a guard against a close that waits on)


_BY_HAND = (
    ", though this rank hosts it (a server in this process, as for ranks started by hand): the "
    "server or this rank's connection to it has failed, or this process was held up (stopped, "
    "or starved of CPU) past the wait for its answers"
)


@pytest.mark.parametrize(
    ("launcher_hosts", "rank", "host"),
    [
        (True, 0, ", so the launcher (torchrun's agent, which hosts it) has stopped or hung"),
        (True, 1, ", so the launcher (torchrun's agent, which hosts it) has stopped or hung"),
        (False, 1, ", so rank 0 (which hosts it) has stopped or hung"),
        (False, 0, _BY_HAND),
    ],
    ids=["torchrun-rank-0", "torchrun-rank-1", "by-hand-rank-1", "by-hand-rank-0"],
)
@pytest.mark.parametrize("when", ["census", "after-census"])
def test_a_store_that_does_not_answer_is_named_by_its_host(
    launcher_hosts: bool, rank: int, host: str, when: str
) -> None:
    """The store that does not answer is named by its host, as the rendezvous chose it: under
    torchrun, whose agent shares its store, the launcher on every rank (rank 0 named itself,
    'rank 0 (which hosts it) or the launcher', when its census got no answer, and the others
    named rank 0, which hosts no store there, after it); ranks started by hand, rank 0 on the
    others (no launcher there) and, on rank 0, its own server or its connection to it (it is
    running: 'the launcher (which hosts it under torchrun)' was named, where there is none).
    The store fails the census itself, or answers it and then stops."""
    group = distributed.ProcessGroup.__new__(distributed.ProcessGroup)
    group.rank, group.world_size, group.timeout, group._calls = rank, 2, 5.0, [3]
    group._store = _Store({})  # type: ignore[assignment]
    group._store_answers = True
    group._launcher_hosts_store = launcher_hosts

    def stops(missing: list[int]) -> None:
        group._store_answers = False  # (as a store call that did not answer leaves it)

    group._census = (lambda: None) if when == "census" else (lambda: [])  # type: ignore[method-assign]
    group._behind = lambda: []  # type: ignore[method-assign]
    group._finish_census = stops  # type: ignore[method-assign]
    error = group._failure("the all_reduce of the gradients", RuntimeError("timed out"))
    diagnosis = (
        "the rendezvous store is unreachable too (or does not answer)"
        if when == "census"
        else "every rank is still alive (the ranks may have diverged in their calls); then the "
        "rendezvous store stopped answering"
    )
    assert str(error) == (
        f"rank {rank} of 2: the all_reduce of the gradients failed: {diagnosis}{host} "
        "(collective timeout 5 s). Cause: timed out"
    )
    assert group._store_answers is False


@pytest.mark.parametrize("agent_store", [True, False], ids=["torchrun", "by-hand"])
def test_the_stores_host_is_the_one_the_rendezvous_chose(
    monkeypatch: pytest.MonkeyPatch, agent_store: bool
) -> None:
    """A group joined where torchrun shares its agent's store (TORCHELASTIC_USE_AGENT_STORE=True:
    rank 0 connects to the launcher's store, here one the test hosts as the launcher would)
    names the launcher for a store that does not answer; one joined without it (rank 0 hosts
    the store) names rank 0's own server."""
    port = free_port()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    launcher_store = None
    if agent_store:
        monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
        launcher_store = torch.distributed.TCPStore("127.0.0.1", port, 1, True)
    else:
        monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    with ProcessGroup(Launch(0, 1, 0), timeout=10.0) as group:
        group._census = lambda: None  # type: ignore[method-assign]  # (the store is silent)
        error = group._failure("the all_reduce of the gradients", RuntimeError("timed out"))
    host = (
        ", so the launcher (torchrun's agent, which hosts it) has stopped or hung"
        if agent_store
        else _BY_HAND
    )
    assert str(error) == (
        "rank 0 of 1: the all_reduce of the gradients failed: the rendezvous store is "
        f"unreachable too (or does not answer){host} (collective timeout 10 s). Cause: timed out"
    )
    del launcher_store


def test_the_census_own_wait_is_not_counted_against_the_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The census watches the heartbeats for _CENSUS_SECONDS before it reads the store: the
    bound on the store's answers comes on top of that wait, so that a census that takes it
    and a store that answers are not taken for a store that does not answer."""
    monkeypatch.setattr(distributed, "_CENSUS_SECONDS", 2.0)
    monkeypatch.setattr(distributed, "_STORE_SECONDS", 1.0)
    group = distributed.ProcessGroup.__new__(distributed.ProcessGroup)
    group.rank, group.world_size, group.timeout, group._calls = 1, 2, 5.0, [3]
    group._store = _Store({})  # type: ignore[assignment]
    group._store_answers = True

    def census() -> list[int]:
        time.sleep(1.5)  # (the heartbeats watched, shorter than _CENSUS_SECONDS)
        return [0]

    group._census = census  # type: ignore[method-assign]
    group._finish_census = lambda missing: None  # type: ignore[method-assign]
    error = group._failure("the all_reduce of the gradients", RuntimeError("timed out"))
    assert "rank 0 stopped responding (died or hung)" in str(error), str(error)
    assert group._store_answers is True


def test_ranks_that_closed_their_group_plainly_are_named_together() -> None:
    """Two ranks that closed their group with no error are named in one clause, in the plural
    ('ranks 1, 2 closed their group'; the singular's words, which the test of one such rank
    reads, passed the tests before; fails this)."""
    group = distributed.ProcessGroup.__new__(distributed.ProcessGroup)
    group.rank, group.world_size, group.timeout, group._calls = 0, 3, 5.0, [2]
    group._store = _Store({"minidl/left/1": b"", "minidl/left/2": b""})  # type: ignore[assignment]
    group._census = lambda: [1, 2]  # type: ignore[method-assign]
    group._finish_census = lambda missing: None  # type: ignore[method-assign]
    error = group._failure("the all_gather of the digests", RuntimeError("closed"))
    assert str(error) == (
        "rank 0 of 3: the all_gather of the digests failed: ranks 1, 2 closed their group "
        "before reaching it (a run that ended sooner there: fewer epochs, a collective called "
        "on some ranks only, or an error handled there) (collective timeout 5 s). Cause: closed"
    )


def test_a_store_call_that_fails_within_its_bound_prints_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store call that raises a RuntimeError (the store's errors: rank 0 gone) is answered
    None, quietly: the thread that made it reports nothing, where Python would print its
    traceback ('Exception in thread minidl-store-call', which the error let out of the thread
    printed on a rank's stderr, between its lines, and passed the tests before; fails this)."""
    reported: list[object] = []
    monkeypatch.setattr(threading, "excepthook", reported.append)

    def gone() -> int:
        raise RuntimeError("Connection reset by peer")

    assert distributed._within(10.0, gone) is None
    assert distributed._within(10.0, lambda: 7) == 7
    assert reported == []


def test_closing_waits_for_a_store_that_does_not_answer_within_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Closing publishes why in the store, a call that may never be answered (rank 0, which
    hosts it, hung with no collective failed here to find it out): close() waits _STORE_SECONDS
    at most. (The call made without the bound passed the tests before, whose silent store had
    failed a census first; fails this: close() waited for the store's 20 s.)"""
    monkeypatch.setattr(distributed, "_STORE_SECONDS", 0.5)
    store = _SilentStore()
    group = distributed.ProcessGroup.__new__(distributed.ProcessGroup)
    group.rank, group.world_size = 1, 2
    group._store = store  # type: ignore[assignment]
    group._store_answers = True
    group._stop_beating = threading.Event()
    release = threading.Timer(20.0, store.released.set)
    release.start()
    try:
        start = time.monotonic()
        group.close()
        closing = time.monotonic() - start
    finally:
        release.cancel()
        store.released.set()
    assert closing < 10.0, closing
    assert group._stop_beating.is_set()


# -- misuse named before anything runs ------------------------------------------------------------


def test_a_closed_group_is_named_by_its_collectives(monkeypatch: pytest.MonkeyPatch) -> None:
    """A collective of a group after close() used to fail in torch's words ('Default process
    group has not been initialized'), a ValueError that named neither minidl nor the group."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    with ProcessGroup(Launch(0, 1, 0), timeout=10.0) as group:
        model = Linear(3, 2)
        parallel = DataParallel(model, group)
        parallel.synchronize(torch.tensor(1.0))
    group.close()  # (idempotent)
    closed = r"ProcessGroup: the {} was called on rank 0 of 1 after close\(\); join a new"
    with pytest.raises(
        DistributedError, match=closed.format("all_gather of the digests of the model")
    ):
        DataParallel(model, group)
    with pytest.raises(DistributedError, match=closed.format("all_reduce of the gradients")):
        parallel.synchronize(torch.tensor(1.0))
    with pytest.raises(DistributedError, match=closed.format("broadcast of the buffers")):
        group.broadcast_(torch.zeros(2), "the buffers")
    # Refused before anything changes: the gradients of a flat model (views of one buffer,
    # scaled in place) were scaled by the weight first.
    flat = mlp((2, 3, 2), "tanh")
    assert flat_buffer([p.grad for p in flat.parameters()]) is not None
    for parameter in flat.parameters():
        parameter.grad.fill_(1.0)
    with pytest.raises(DistributedError, match=closed.format("all_reduce of the gradients")):
        all_reduce_gradients(group, flat.parameters(), weight=0.5)
    assert all(bool((p.grad == 1.0).all()) for p in flat.parameters())


def test_a_group_whose_default_group_was_destroyed_outside_close_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``torch.distributed.destroy_process_group()`` called outside ``close()``: the group's
    collectives failed with torch's bare ValueError ('Default process group has not been
    initialized'), once all_reduce_gradients had scaled the gradients of a flat model; with a
    group joined since, they ran on that one. Refused by name now, before anything changes,
    and closing the first group leaves the one joined since."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    first = ProcessGroup(Launch(0, 1, 0), timeout=10.0)
    model = mlp((2, 3, 2), "tanh")
    parallel = DataParallel(model, first)
    for parameter in model.parameters():
        parameter.grad.fill_(1.0)
    torch.distributed.destroy_process_group()
    destroyed = (
        r"^ProcessGroup: the {} was called on rank 0 of 1 after its default process group was "
        r"destroyed outside close\(\) \(by torch\.distributed\.destroy_process_group\(\)\); "
    )

    def refused() -> None:
        with pytest.raises(DistributedError, match=destroyed.format("all_reduce of the gradients")):
            all_reduce_gradients(first, model.parameters(), weight=0.5)
        with pytest.raises(DistributedError, match=destroyed.format("all_reduce of the gradients")):
            parallel.synchronize(torch.tensor(1.0))
        with pytest.raises(DistributedError, match=destroyed.format("broadcast of x")):
            first.broadcast_(torch.zeros(2), "x")
        with pytest.raises(DistributedError, match=destroyed.format("all_gather of x")):
            first.all_gather(torch.zeros(2), "x")
        assert all(bool((p.grad == 1.0).all()) for p in model.parameters())

    refused()
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    with ProcessGroup(Launch(0, 1, 0), timeout=10.0) as second:
        refused()  # (not run on the group joined since)
        first.close()
        assert torch.distributed.is_initialized()
        assert torch.equal(second.all_reduce_(torch.ones(2), "x"), torch.ones(2))
    assert not torch.distributed.is_initialized()


def test_misuse_of_the_helpers_and_of_reduce_loss_is_named_by_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """broadcast_parameters of what is no Parameter failed with a bare AttributeError ('float'
    object has no attribute 'data'); reduce_loss of no tensor, or of one gloo does not carry,
    was refused in the words of ProcessGroup.all_reduce_, which the caller did not call."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    with ProcessGroup(Launch(0, 1, 0), timeout=10.0) as group:
        with pytest.raises(
            TypeError,
            match=r"^broadcast_parameters: parameters must be minidl Parameters "
            r"\(model\.parameters\(\)\), got builtins\.float at index 0$",
        ):
            broadcast_parameters(group, [1.0])  # type: ignore[list-item]
        parallel = DataParallel(mlp((2, 3, 2), "tanh"), group)
        calls = group._calls[0]
        with pytest.raises(
            TypeError,
            match=r"^DataParallel\.reduce_loss: total must be a torch\.Tensor, got float$",
        ):
            parallel.reduce_loss(1.0)  # type: ignore[arg-type]
        with pytest.raises(
            TypeError,
            match=r"^DataParallel\.reduce_loss: total is torch\.int16, which the gloo backend does "
            r"not carry",
        ):
            parallel.reduce_loss(torch.tensor(1, dtype=torch.int16))
        assert group._calls[0] == calls
        assert torch.equal(parallel.reduce_loss(torch.tensor(2.0)), torch.tensor(2.0))


def test_collectives_in_place_refuse_a_view_that_is_not_contiguous(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gloo reduced or broadcast a strided view's storage as if it were contiguous: on two ranks
    reduce_loss of a column gave [3, 6, 3] and [3, 6, 6] for [3, 6, 9], wrote into the other
    column, and broadcast_ of x[::2] left the ranks apart. Refused by name before the collective,
    the tensor and its storage as they were; a contiguous tensor still goes through."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    with ProcessGroup(Launch(0, 1, 0), timeout=10.0) as group:
        parallel = DataParallel(mlp((2, 3, 2), "tanh"), group)
        totals = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
        stored = totals.clone()
        calls = group._calls[0]
        attempts = [
            ("DataParallel.reduce_loss", "total", lambda: parallel.reduce_loss(totals[:, 0])),
            ("ProcessGroup.all_reduce_", "tensor", lambda: group.all_reduce_(totals.t(), "t")),
            ("ProcessGroup.broadcast_", "tensor", lambda: group.broadcast_(totals[:, 1], "c")),
        ]
        for where, what, attempt in attempts:
            with pytest.raises(
                ValueError,
                match=rf"^{re.escape(where)}: {what} must be contiguous, got a view of shape "
                r"\(\d+,( \d+)?\) with strides \(\d+,( \d+)?\); give tensor\.contiguous\(\) "
                r"and copy the result back$",
            ):
                attempt()
        assert group._calls[0] == calls
        assert torch.equal(totals, stored)
        assert torch.equal(group.all_reduce_(totals[1], "a row"), stored[1])
        # torch's own group, named with its module ("must be a ProcessGroup, got ProcessGroup").
        with pytest.raises(
            TypeError,
            match=r"^DataParallel: group must be a minidl\.distributed\.ProcessGroup \(join one "
            r"with ProcessGroup\(launch\)\), got torch\..*ProcessGroup$",
        ):
            DataParallel(mlp((2, 3, 2), "tanh"), torch.distributed.group.WORLD)  # type: ignore[arg-type]


def test_closing_a_closed_group_again_leaves_a_group_joined_since(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``close`` is idempotent: closing the first group a second time (or closing a copy of it)
    used to destroy the default process group of whatever group had been joined since, whose
    collectives then failed in torch's words ('Default process group has not been
    initialized'). A copy shares the membership: closing it closes the original too."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    first = ProcessGroup(Launch(0, 1, 0), timeout=10.0)
    first.close()
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    with ProcessGroup(Launch(0, 1, 0), timeout=10.0) as second:
        first.close()
        copy.copy(first).close()
        assert torch.distributed.is_initialized()
        assert torch.equal(second.all_reduce_(torch.ones(2), "x"), torch.ones(2))
        # (a copy's collectives count for the heartbeat of the original, which publishes them)
        copy.copy(second).all_reduce_(torch.ones(1), "y")
        assert second._calls == [2]
        copy.copy(second).close()
        with pytest.raises(
            DistributedError, match=r"^ProcessGroup: the all_reduce of x was called on rank 0 "
        ):
            second.all_reduce_(torch.ones(2), "x")
    assert not torch.distributed.is_initialized()


def test_a_process_group_on_cuda_refuses_a_missing_gpu_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without CUDA, torch's set_device failed with "module 'torch._C' has no attribute
    '_cuda_setDevice'"; with fewer GPUs than local_rank + 1, with 'invalid device ordinal'."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^ProcessGroup: device cuda needs a GPU, and torch"):
        ProcessGroup(Launch(0, 1, 0), device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(
        ValueError, match=r"^ProcessGroup: local_rank 2 has no GPU of its own: this machine has 2;"
    ):
        ProcessGroup(Launch(2, 3, 2), device="cuda")
    assert not torch.distributed.is_initialized()


class _Unreachable:
    """A stand-in for a DataParallel that fit must refuse before training."""

    world_size = 2

    def __init__(self, model: Any) -> None:
        self.model = model

    def shard(self, batches: BatchIterator) -> Any:
        raise AssertionError("fit trained with a parallel it should have refused")

    synchronize = reduce_loss = shard


def test_fit_refuses_a_parallel_of_another_model_and_a_summed_loss() -> None:
    """Both trained without a word: a DataParallel of another model averaged that model's
    gradients while the ranks' replicas of this one drifted apart; a loss summed over the
    samples got the shares b_k / B of a mean, a gradient that is neither its sum nor its mean."""
    torch.manual_seed(0)
    model, other = mlp((2, 3, 2), "tanh"), mlp((2, 3, 2), "tanh")
    before = _flat(model)
    x, y = torch.randn(8, 2), torch.arange(8) % 2
    arguments: dict[str, Any] = {"epochs": 1, "batch_size": 4}
    optimizer = SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"fit: parallel must synchronize the model given to fit"):
        fit(model, CrossEntropyLoss(), optimizer, x, y, parallel=_Unreachable(other), **arguments)
    summed = CrossEntropyLoss(reduction="sum")
    with pytest.raises(
        ValueError,
        match=r"fit: data-parallel training needs a loss that is a mean over the samples .*got "
        r"CrossEntropyLoss\(reduction='sum'\)",
    ):
        fit(model, summed, optimizer, x, y, parallel=_Unreachable(model), **arguments)
    assert torch.equal(_flat(model), before)


@pytest.mark.parametrize(
    ("samples", "batch_size", "message"),
    [
        (
            10,
            5,
            "fit: batch_size 5 is not divisible by the world size 2 of parallel; every process "
            "takes 1/2 of each batch, so choose a batch_size that is a multiple of 2",
        ),
        (
            9,
            4,
            "fit: every epoch would end with a batch of 1 sample (9 samples, batches of 4), "
            "fewer than the 2 processes of parallel, which take one sample each at least; pass "
            "drop_last=True or choose another batch_size",
        ),
    ],
)
def test_fit_refuses_batches_the_processes_cannot_split_in_its_own_name(
    samples: int, batch_size: int, message: str
) -> None:
    """Both were refused by the parallel's shards, in ShardedBatches' words ('ShardedBatches:
    the batch size 5 is not divisible by the world size 2'), after fit's checks had passed,
    naming neither fit nor its batch_size; now by fit, before the parallel is asked for its
    shards."""
    torch.manual_seed(0)
    model = mlp((2, 3, 2), "tanh")
    before = _flat(model)
    x, y = torch.randn(samples, 2), torch.arange(samples) % 2
    optimizer = SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError) as raised:
        fit(
            model,
            CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=1,
            batch_size=batch_size,
            parallel=_Unreachable(model),
        )
    assert str(raised.value) == message
    assert torch.equal(_flat(model), before)
    # (drop_last drops a last batch too small to split)
    if samples % batch_size:
        with pytest.raises(AssertionError, match="fit trained with a parallel"):
            fit(
                model,
                CrossEntropyLoss(),
                optimizer,
                x,
                y,
                epochs=1,
                batch_size=batch_size,
                drop_last=True,
                parallel=_Unreachable(model),
            )


def test_a_data_parallel_is_refused_by_pickle_and_deepcopy_in_the_groups_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A joined group cannot travel (its store connection and heartbeat belong to this process):
    pickle and ``copy.deepcopy`` of it, or of a DataParallel holding it, used to fail with
    "cannot pickle 'torch._C._distributed_c10d.TCPStore' object", naming neither; they name
    the ProcessGroup and what to copy instead. ``copy.copy`` still shares it."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    with ProcessGroup(Launch(0, 1, 0), timeout=30.0) as group:
        parallel = DataParallel(mlp((2, 3, 2), "tanh"), group)
        for copier in (pickle.dumps, copy.deepcopy):
            for thing in (group, parallel):
                with pytest.raises(TypeError, match=r"^ProcessGroup cannot be pickled .*\.model"):
                    copier(thing)
        shallow = copy.copy(group)
        assert shallow is not group and shallow._store is group._store
        assert copy.copy(parallel).group is group


@pytest.mark.slow
def test_reproduce_under_torchrun_is_refused_by_every_rank(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2 -m minidl reproduce``: each process refuses (status 2,
    which torchrun reports as its own failure), before either trains or makes --out. (torchrun
    stops the other processes as soon as one fails: the second may be stopped before its own
    refusal, which a loaded machine showed; one refusal at least, none of anything else.)"""
    argv = ["reproduce", "--quick", "--quiet", "--out", "results"]
    done = _launch_torchrun(2, argv, tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    refusal = "minidl reproduce: error: reproduce runs as one process, which trains the rows"
    assert done.stderr.count(refusal) in (1, 2), done.stderr[-3000:]
    assert "exitcode: 2" in done.stderr, done.stderr[-3000:]
    assert "WORLD_SIZE='2'" in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "results").exists()
