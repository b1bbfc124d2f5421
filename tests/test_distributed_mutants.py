"""Behaviour of ``minidl.distributed`` that a mutation audit found untested.

Each test pins one observable result against its oracle: the documented errors (their type and
words) of ``Launch``, ``ProcessGroup``, ``ShardedBatches`` and ``DataParallel``; the share a
``ShardedBatches`` reports before its first batch; the census's diagnoses and rank 0's wait for
the survivors' censuses; a group's heartbeat, which beats while it is open and stops at
``close``; buffers of several dtypes and a model without parameters, which pass through a world
of one unchanged, bit for bit; the checksum of a tensor that is not contiguous (that of its
contiguous copy) and of a change in its last element; and, on a real group of 2 ranks (gloo over
127.0.0.1), rank 0's buffers on every rank as soon as the ``DataParallel`` is built, the mean of
the ranks' gradients from ``synchronize`` without ``shard`` (computed here by hand, exactly), and
the refusal, on every rank, of ranks that differ only in a dtype, a buffer, ``drop_last``, the
batch size or the targets, and a rank that leaves its group on an error named with it.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing

from minidl import distributed
from minidl.data import BatchIterator
from minidl.distributed import (
    DEFAULT_TIMEOUT,
    DataParallel,
    DistributedError,
    Launch,
    ProcessGroup,
    ShardedBatches,
    timeout_from_env,
)
from minidl.nn import BatchNorm1d, Linear, Module, Sequential, Tanh, mlp
from tests.helpers import free_port

#: A group that is no minidl ProcessGroup, refused with its type named with its module (torch's
#: own ProcessGroup, ``dist.group.WORLD``, was "group must be a ProcessGroup, got ProcessGroup").
GROUP_REFUSAL = (
    r"^{where}: group must be a minidl\.distributed\.ProcessGroup \(join one with "
    r"ProcessGroup\(launch\)\), got builtins\.{given}$"
)

F64 = torch.float64


@pytest.fixture
def world_of_one(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A joined group of one rank (gloo over 127.0.0.1), closed after the test."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    with ProcessGroup(Launch(0, 1, 0), timeout=10.0) as group:
        yield group


# -- the refusals ---------------------------------------------------------------------------------


def test_launch_refuses_a_negative_local_rank_and_an_empty_world() -> None:
    with pytest.raises(ValueError, match=r"^Launch: local_rank must be an integer >= 0, got -1$"):
        Launch(0, 1, -1)
    with pytest.raises(ValueError, match=r"^Launch: world_size must be an integer >= 1, got 0$"):
        Launch(0, 0, 0)


def test_the_classes_refuse_arguments_of_the_wrong_type_by_name() -> None:
    x, y = torch.zeros(4, 2), torch.zeros(4)
    with pytest.raises(
        TypeError, match=r"^ShardedBatches: batches must be a BatchIterator, got list"
    ):
        ShardedBatches([(x, y)], 0, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^ProcessGroup: launch must be a Launch, got tuple$"):
        ProcessGroup((0, 1, 0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^DataParallel: model must be a minidl Module, got str$"):
        DataParallel("model", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=GROUP_REFUSAL.format(where="DataParallel", given="str")):
        DataParallel(Linear(2, 2), "group")  # type: ignore[arg-type]


def test_a_process_group_refuses_a_bad_timeout_or_device_before_joining() -> None:
    launch = Launch(0, 1, 0)
    for bad in (0.0, -1.0):
        with pytest.raises(
            ValueError, match=r"^ProcessGroup: timeout must be in \(0, 1e\+09\], got"
        ):
            ProcessGroup(launch, timeout=bad)
    with pytest.raises(ValueError, match=r"^ProcessGroup: device must be cpu or cuda, got meta$"):
        ProcessGroup(launch, device="meta")
    # (torch's own words before: its list of every device type, or no valid combination)
    with pytest.raises(
        ValueError, match=r"^ProcessGroup: device must be cpu or cuda, got 'bogus'$"
    ):
        ProcessGroup(launch, device="bogus")
    with pytest.raises(
        TypeError, match=r"^ProcessGroup: device must be a torch\.device or a str, got NoneType$"
    ):
        ProcessGroup(launch, device=None)  # type: ignore[arg-type]
    assert not torch.distributed.is_initialized()


def test_a_collectives_bad_argument_is_refused_before_it_is_entered(world_of_one: Any) -> None:
    """A source that is no rank was refused by gloo, reported as a failure of the group after a
    census of the ranks' heartbeats (1.5 s), and counted as a collective entered; a list given
    for a tensor got torch's TypeError; the helpers took any group and weight (None:
    AttributeError, 'a': torch's mul_ error, NaN: NaN gradients). Each is refused by name now,
    at once, and the count of collectives does not move."""
    group = world_of_one
    calls = group._calls[0]
    started = time.monotonic()
    with pytest.raises(
        ValueError, match=r"^ProcessGroup\.broadcast_: source must be a rank in \[0, 0\], got 5$"
    ):
        group.broadcast_(torch.zeros(3), "x", source=5)
    with pytest.raises(TypeError, match=r"^ProcessGroup\.broadcast_: source must be an integer"):
        group.broadcast_(torch.zeros(3), "x", source=0.5)  # type: ignore[arg-type]
    for method in ("all_reduce_", "broadcast_", "all_gather"):
        with pytest.raises(
            TypeError, match=rf"^ProcessGroup\.{method}: tensor must be a torch\.Tensor, got list$"
        ):
            getattr(group, method)([1.0], "x")
    assert time.monotonic() - started < 1.0 and group._calls[0] == calls
    model = mlp((2, 3, 2), "tanh", dtype=torch.float64)
    for where, call in (
        (
            "all_reduce_gradients",
            lambda g: distributed.all_reduce_gradients(g, model.parameters(), 1.0),
        ),
        ("broadcast_parameters", lambda g: distributed.broadcast_parameters(g, model.parameters())),
        ("broadcast_buffers", lambda g: distributed.broadcast_buffers(g, [])),
    ):
        with pytest.raises(TypeError, match=GROUP_REFUSAL.format(where=where, given="NoneType")):
            call(None)
    for weight in ("a", float("nan"), torch.tensor([1.0, 2.0])):
        with pytest.raises((TypeError, ValueError), match=r"^all_reduce_gradients: weight must be"):
            distributed.all_reduce_gradients(group, model.parameters(), weight)  # type: ignore[arg-type]
    assert all(not p.grad.any() for p in model.parameters())
    distributed.all_reduce_gradients(group, model.parameters(), 0.5)  # (and it still works)


def test_what_gloo_does_not_carry_or_no_tensor_is_refused_before_any_collective(
    world_of_one: ProcessGroup,
) -> None:
    """A buffer of uint16 (uint32, int16, float8) failed in gloo ("Invalid scalar type"),
    reported as a failure of the group after a census of the ranks; a PyTorch parameter or a
    non-tensor buffer failed in AttributeErrors; synchronize(None) reduced the gradients, then
    failed at ``None * share``, so that a second call reduced them twice. Each is refused by
    name, before the collective, the gradients as they were."""
    group = world_of_one
    calls, started = group._calls[0], time.monotonic()
    for dtype in (torch.uint16, torch.uint32, torch.int16, torch.float8_e4m3fn):
        with pytest.raises(
            TypeError,
            match=rf"^broadcast_buffers: buffer 1 is {dtype}, which the gloo backend does not "
            r"carry \(it takes torch\.bfloat16, .*\); convert it$",
        ):
            distributed.broadcast_buffers(group, [torch.zeros(2), torch.zeros(2, dtype=dtype)])
        with pytest.raises(TypeError, match=rf"^ProcessGroup\.all_reduce_: tensor is {dtype}"):
            group.all_reduce_(torch.zeros(2, dtype=dtype), "x")
    with pytest.raises(
        TypeError, match=r"^broadcast_buffers: buffer 0 must be a torch\.Tensor, got float$"
    ):
        distributed.broadcast_buffers(group, [1.0])  # type: ignore[list-item]
    with pytest.raises(
        TypeError,
        match=r"^all_reduce_gradients: parameters must be minidl Parameters \(model\.parameters"
        r"\(\)\), got torch\.nn\.parameter\.Parameter at index 0$",
    ):
        distributed.all_reduce_gradients(group, torch.nn.Linear(2, 2).parameters(), 0.5)  # type: ignore[arg-type]
    assert group._calls[0] == calls
    # (what gloo carries passes: complex32 among them, as pairs of float16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (PyTorch's "ComplexHalf support is experimental")
        half_complex = torch.ones(2, dtype=torch.complex32)
    distributed.broadcast_buffers(group, [half_complex, torch.zeros(2, dtype=torch.bool)])
    calls = group._calls[0]
    model = mlp((2, 3, 2), "tanh", dtype=F64)
    parallel = DataParallel(model, group)
    calls = group._calls[0]
    for parameter in model.parameters():
        parameter.grad.fill_(2.0)
    with pytest.raises(
        TypeError,
        match=r"^DataParallel\.synchronize: loss must be a torch\.Tensor \(the loss of this "
        r"rank's shard\), got NoneType$",
    ):
        parallel.synchronize(None)  # type: ignore[arg-type]
    assert group._calls[0] == calls and all(bool((p.grad == 2).all()) for p in model.parameters())
    assert time.monotonic() - started < 1.0


def test_a_second_group_is_refused_and_the_first_still_works(world_of_one: ProcessGroup) -> None:
    with pytest.raises(DistributedError, match=r"^ProcessGroup: a default process group is alre"):
        ProcessGroup(Launch(0, 1, 0), timeout=2.0)
    assert torch.equal(world_of_one.all_reduce_(torch.ones(2), "x"), torch.ones(2))
    assert repr(world_of_one) == "ProcessGroup(rank=0, world_size=1, backend='gloo', timeout=10)"


def test_shard_refuses_what_is_no_batch_iterator(world_of_one: ProcessGroup) -> None:
    parallel = DataParallel(Linear(2, 2), world_of_one)
    with pytest.raises(
        TypeError, match=r"^DataParallel.shard: batches must be a BatchIterator, got list$"
    ):
        parallel.shard([])  # type: ignore[arg-type]


# -- the shards -----------------------------------------------------------------------------------


def test_the_shards_check_the_batch_size_and_drop_last_at_every_pass(
    world_of_one: ProcessGroup,
) -> None:
    """A BatchIterator's batch_size and drop_last may be set between two passes; ShardedBatches
    checked them when built only: batches of 3 over 2 ranks gave rank 0 an empty shard (a
    refusal there alone, the other rank waiting in its collective). Checked at every pass now,
    and DataParallel's shards agree on them across the ranks at every pass (one collective with
    the order's)."""
    x, y = torch.randn(9, 2), torch.zeros(9, dtype=torch.int64)
    batches = BatchIterator(x, y, 4, generator=torch.Generator().manual_seed(1), drop_last=True)
    shards = ShardedBatches(batches, rank=0, world_size=2)
    assert [len(shard) for shard, _ in shards] == [2, 2]
    batches.batch_size = 3
    with pytest.raises(
        ValueError, match=r"^ShardedBatches: the batch size 3 is not divisible by the world size 2"
    ):
        iter(shards)
    batches.batch_size, batches.drop_last = 4, False
    with pytest.raises(
        ValueError, match=r"^ShardedBatches: the last batch of every epoch holds 1 samples"
    ):
        iter(shards)
    batches.batch_size, batches.drop_last = 8, True
    assert [len(shard) for shard, _ in shards] == [4]
    parallel = DataParallel(Linear(2, 2), world_of_one)
    sharded = parallel.shard(batches)
    for _ in range(2):
        calls = world_of_one._calls[0]
        assert [len(shard) for shard, _ in sharded] == [8]
        assert world_of_one._calls[0] == calls + 1  # (the sizes and the order, agreed at once)


def test_synchronize_weights_by_the_shard_drawn_last_whatever_shards_were_made_since(
    world_of_one: ProcessGroup,
) -> None:
    """synchronize weighted by the shards that shard() made last: a loop that made other shards
    (for an evaluation pass, say) before training on its first ones weighted an uneven last
    batch equally (1/2 and 1/2 for 2 and 3 samples of 5), each rank alike, so nothing told.
    The shard drawn last, while its pass runs, weights it now. (Shards of rank 0 of 2, made
    by hand over a group of one, so that the shares differ.)"""
    parallel = DataParallel(Linear(2, 2), world_of_one)
    x, y = torch.randn(11, 2), torch.zeros(11, dtype=torch.int64)
    training = distributed._AgreedShards(BatchIterator(x, y, 4, shuffle=False), 0, 2, parallel)
    shares = []
    for _ in training:
        # (another pass's shards, made meanwhile, not drawn from)
        distributed._AgreedShards(BatchIterator(x, y, 4, shuffle=False), 0, 2, parallel)
        shares.append(float(parallel.synchronize(torch.tensor(1.0, dtype=F64))))
    assert shares == [0.5, 0.5, 1 / 3]  # (1 of the last batch's 3 samples)
    assert float(parallel.synchronize(torch.tensor(1.0, dtype=F64))) == 1.0  # (no pass: 1 / W)


def test_the_share_before_the_first_batch_is_an_equal_one() -> None:
    """(documented on the attribute; synchronize weights by it) Equal before a pass and after
    one; during a pass, the share of the batch yielded last."""
    batches = BatchIterator(torch.zeros(10, 2), torch.zeros(10), batch_size=6, shuffle=False)
    shards = ShardedBatches(batches, rank=1, world_size=3)
    assert shards.share == 1 / 3
    seen = []
    for x, _ in shards:
        seen.append((x.shape[0], shards.share))
    assert seen == [(2, 1 / 3), (1, 1 / 4)]  # the last batch of 4 splits 1/1/2
    assert shards.share == 1 / 3


# -- the census -----------------------------------------------------------------------------------


class _Store:
    """A rendezvous store in memory (set, get and check, as the census uses them), which keeps
    the keys asked for by ``check``; the key ``late`` appears at its ``after``-th check, and the
    store stops answering after 50 checks (so that a rank waiting for a census that never comes
    fails at once rather than at its timeout)."""

    def __init__(self, late: str = "", after: int = 0) -> None:
        self.values: dict[str, bytes] = {}
        self.checked: list[str] = []
        self.late, self.after = late, after

    def set(self, key: str, value: str) -> None:
        self.values[key] = value.encode()

    def check(self, keys: list[str]) -> bool:
        self.checked.extend(keys)
        if len(self.checked) > 50:
            raise RuntimeError("the test's store stopped answering")
        if self.late and self.checked.count(self.late) == self.after:
            self.set(self.late, "1")
        return all(key in self.values for key in keys)


def _group_of(
    rank: int, world_size: int, timeout: float, store: _Store | None = None
) -> ProcessGroup:
    group = ProcessGroup.__new__(ProcessGroup)
    group.rank, group.world_size, group.timeout = rank, world_size, timeout
    group._store = _Store() if store is None else store  # type: ignore[assignment]
    group._launcher_hosts_store = False  # (ranks started by hand: rank 0 hosts the store)
    return group


def test_rank_0_waits_for_the_census_of_every_survivor_but_not_of_the_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rank 0 hosts the store: it leaves only when rank 2 (alive) has finished its census (here
    at rank 0's third look), not waiting for rank 1 (missing); any other rank says it is done
    and leaves at once, looking for no census. (Counted in looks, not timed: a timeout of a
    minute leaves no doubt that rank 0 left because rank 2 was done.)"""
    monkeypatch.setattr(distributed, "_CENSUS_SECONDS", 0.0)
    done = "minidl/census-done/2"
    store = _Store(late=done, after=3)
    _group_of(0, 3, timeout=60.0, store=store)._finish_census([1])
    assert store.checked == [done] * 3
    assert store.values == {"minidl/census-done/0": b"1", done: b"1"}
    store = _Store()
    _group_of(1, 3, timeout=60.0, store=store)._finish_census([2])
    assert store.checked == []
    assert store.values == {"minidl/census-done/1": b"1"}


@pytest.mark.parametrize(
    ("missing", "diagnosis"),
    [
        ([2], "rank 2 stopped responding (died or hung)"),
        ([1, 2], "ranks 1, 2 stopped responding (died or hung)"),
        ([], "every rank is still alive (the ranks may have diverged in their calls)"),
        (None, "the rendezvous store is unreachable too (or does not answer), though this rank "),
    ],
)
def test_a_failed_collective_names_what_the_census_found(
    missing: list[int] | None, diagnosis: str
) -> None:
    group = _group_of(0, 3, timeout=5.0)
    finished: list[list[int]] = []
    group._census = lambda: missing  # type: ignore[method-assign]
    group._finish_census = finished.append  # type: ignore[method-assign]
    error = group._failure("the all_reduce of the gradients", RuntimeError("gloo: closed\nmore"))
    assert str(error).startswith(
        f"rank 0 of 3: the all_reduce of the gradients failed: {diagnosis}"
    )
    assert str(error).endswith("(collective timeout 5 s). Cause: gloo: closed")
    assert finished == ([] if missing is None else [missing])


def test_the_heartbeat_beats_while_the_group_is_open_and_stops_at_close(
    world_of_one: ProcessGroup,
) -> None:
    key = world_of_one._key("heartbeat/", 0)
    # (a loaded machine may leave the heartbeat's thread waiting for seconds: the deadline only
    # bounds a heartbeat that never beats)
    deadline = time.monotonic() + 120
    # (a get of a key not set yet blocks the store's one connection, which the heartbeat's set
    # then waits for: the test hung for the store's timeout whenever it asked before the first
    # beat)
    while not world_of_one._store.check([key]):
        assert time.monotonic() < deadline, "the heartbeat did not beat"
        time.sleep(0.05)
    first = int(world_of_one._store.get(key))
    while int(world_of_one._store.get(key)) <= first:
        assert time.monotonic() < deadline, "the heartbeat did not beat"
        time.sleep(0.05)
    world_of_one.close()
    world_of_one._heartbeat.join(timeout=120)
    assert not world_of_one._heartbeat.is_alive()


# -- what a world of one leaves unchanged ---------------------------------------------------------


class _Counters(Module):
    """An identity with buffers of two dtypes, one an int64 that float32 cannot hold."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor([0.1, 3.0], dtype=torch.float32))
        self.register_buffer("count", torch.tensor([2**40 + 1], dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output


def test_buffers_of_several_dtypes_and_a_model_without_parameters_pass_unchanged(
    world_of_one: ProcessGroup,
) -> None:
    for model in (Tanh(), Sequential(_Counters(), Tanh())):
        before = {name: value.clone() for name, value in model.state_dict().items()}
        parallel = DataParallel(model, world_of_one)
        loss = torch.tensor(0.25, dtype=F64)
        assert torch.equal(parallel.synchronize(loss), loss)
        parallel.check_in_sync()
        after = model.state_dict()
        assert after.keys() == before.keys()
        for name, value in before.items():
            assert after[name].dtype == value.dtype and torch.equal(after[name], value), name


def test_the_checksum_of_a_tensor_is_that_of_its_values_in_order() -> None:
    """A view that is not contiguous has the checksum of its contiguous copy (not of the memory
    it starts at), and a change of the last element of a tensor changes it."""
    base = torch.arange(12, dtype=F64).view(3, 4)
    for view in (base.t(), base[:, ::2], base[1:, 1:]):
        assert torch.equal(distributed._checksum([view]), distributed._checksum([view.clone()]))
    assert not torch.equal(distributed._checksum([base.t()]), distributed._checksum([base]))
    # the same bytes in another shape (documented: a digest of the bytes, dtypes and shapes)
    assert not torch.equal(
        distributed._checksum([base]), distributed._checksum([base.reshape(4, 3)])
    )
    model = mlp((2, 5, 2), "tanh", dtype=F64)
    before = distributed.parameter_checksum(model.parameters())
    next(model.parameters()).data.view(-1)[-1] += 1.0
    assert not torch.equal(before, distributed.parameter_checksum(model.parameters()))


def test_a_launch_of_rank_world_size_is_refused() -> None:
    """Ranks run from 0 to ``world_size - 1``: a ``Launch`` of rank ``world_size`` is refused by
    name (``>`` for ``>=`` took rank 2 of a world of 2)."""
    with pytest.raises(
        ValueError, match=r"^Launch: rank must be in \[0, 1\] for world_size 2, got 2$"
    ):
        Launch(2, 2, 0)
    assert Launch(1, 2, 0).rank == 1


def test_a_launch_of_numpy_integers_holds_python_ints() -> None:
    """A Launch checked NumPy integers and kept them: fit's test of the shards against the
    batch norms (``isinstance(world_size, int)``) passed them by, and a batch of 1 sample on
    one rank failed there alone, after a step, with the other waiting in its collective."""
    import numpy as np

    launch = Launch(np.int64(1), np.int64(2), np.int32(0))
    assert (launch.rank, launch.world_size, launch.local_rank) == (1, 2, 0)
    assert all(type(value) is int for value in (launch.rank, launch.world_size, launch.local_rank))


def test_an_empty_timeout_variable_is_one_not_set() -> None:
    """``MINIDL_DIST_TIMEOUT=`` (set to nothing, as ``export MINIDL_DIST_TIMEOUT=`` leaves it)
    gives the default, as an unset variable does (testing the name's presence refused it as
    no number)."""
    assert timeout_from_env({"MINIDL_DIST_TIMEOUT": ""}) == DEFAULT_TIMEOUT


def test_the_checksum_tells_the_same_bytes_of_another_dtype_apart() -> None:
    """The digest covers the dtypes, as documented: a float64 tensor and its bytes viewed as
    int64 (same shape, same bytes) have other checksums (without the dtype they had one)."""
    values = torch.arange(6, dtype=F64).view(2, 3)
    assert not torch.equal(
        distributed._checksum([values]), distributed._checksum([values.view(torch.int64)])
    )


# -- a real group of 2 ranks ----------------------------------------------------------------------


def _refusal(make: Any) -> str:
    try:
        make()
    except DistributedError as error:
        return str(error)
    return "no error"


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result: dict[str, Any] = {}
    with (
        contextlib.suppress(_LeavingError),
        ProcessGroup(Launch(rank, 2, rank), timeout=120.0) as group,  # (slow imports)
    ):
        torch.manual_seed(rank)
        model = Sequential(Linear(2, 3, dtype=F64), BatchNorm1d(3, dtype=F64))
        model[1].running_mean.add_(rank + 1)
        model[1].running_var.mul_(rank + 2)
        result["before"] = {name: value.clone() for name, value in model.state_dict().items()}
        parallel = DataParallel(model, group)
        result["after"] = model.state_dict()
        result["in_sync"] = _refusal(parallel.check_in_sync)
        # synchronize without shard: every rank holds an equal share
        for parameter in model.parameters():
            numel = parameter.numel()
            parameter.grad.copy_(torch.arange(numel).view(parameter.shape) * (rank + 1) + rank)
        result["part"] = parallel.synchronize(torch.tensor(3.0, dtype=F64))
        result["grads"] = [parameter.grad.clone() for parameter in model.parameters()]
        # ranks that differ in one thing only, each told so on every rank
        result["dtype"] = _refusal(
            lambda: DataParallel(Linear(3, 2, dtype=(F64, None)[rank]), group)
        )
        with_buffer = Linear(3, 2)
        with_buffer.register_buffer("extra", torch.zeros(1 + rank))
        result["buffer"] = _refusal(lambda: DataParallel(with_buffer, group))
        x, y = torch.zeros(14, 2), torch.zeros(14)
        result["drop_last"] = _refusal(
            lambda: parallel.shard(BatchIterator(x, y, 6, drop_last=bool(rank)))
        )
        result["batch_size"] = _refusal(lambda: parallel.shard(BatchIterator(x, y, 6 + 2 * rank)))
        # (a rank that shuffled alone joined the order's all_gather alone: both timed out)
        result["shuffle"] = _refusal(
            lambda: parallel.shard(BatchIterator(x, y, 6, shuffle=rank == 0))
        )
        targets = y.clone()
        targets[3] = rank
        result["targets"] = _refusal(lambda: parallel.shard(BatchIterator(x, targets, 6)))
        # rank 1 leaves on an error of its own while rank 0 goes on (rank 0 was told that rank 1
        # 'stopped responding (died or hung)')
        if rank == 1:
            raise _LeavingError("rank 1's own error\nin detail")
        result["left"] = _refusal(lambda: group.all_reduce_(torch.ones(1), "the last sum"))
    torch.save(result, Path(out) / f"rank{rank}.pt")


class _LeavingError(Exception):
    """An error raised on one rank only."""


def test_two_ranks_share_rank_0s_buffers_average_gradients_and_refuse_any_difference(
    tmp_path: Path,
) -> None:
    torch.multiprocessing.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    initial = results[0]["before"]
    assert not torch.equal(results[1]["before"]["1.running_mean"], initial["1.running_mean"])
    model = "DataParallel: the model (the shapes and dtypes of its {}) of "
    batches = (
        "DataParallel: the batches (the number of samples, the batch size, shuffle, drop_last and "
    )
    for result in results:
        # Built: rank 0's parameters and buffers, before any step.
        assert result["after"].keys() == initial.keys()
        for name, value in initial.items():
            assert torch.equal(result["after"][name], value), name
        assert result["in_sync"] == "no error"
        # Without shard: the mean of the ranks' gradients, and half of the loss.
        assert torch.equal(result["part"], torch.tensor(1.5, dtype=F64))
        for grad in result["grads"]:
            ramp = torch.arange(grad.numel(), dtype=F64).view(grad.shape)
            assert torch.equal(grad, (ramp * 1 + 0 + ramp * 2 + 1) / 2)
        for what, kind in (("dtype", "parameters"), ("buffer", "buffers")):
            assert result[what].startswith(
                model.format(kind) + "ranks [1] differs from rank 0's"
            ), what
        for what in ("drop_last", "batch_size", "shuffle", "targets"):
            assert result[what].startswith(batches), what
            assert "of ranks [1] differs from rank 0's" in result[what], what
    assert results[0]["left"].startswith(
        "rank 0 of 2: the all_reduce of the last sum failed: rank 1 closed its group on an error "
        "of its own: _LeavingError: rank 1's own error (collective timeout 120 s). Cause: "
    ), results[0]["left"]


def test_buffers_replaced_after_the_wrapper_was_built_are_the_ones_synchronized(
    world_of_one: ProcessGroup,
) -> None:
    # DataParallel kept the buffer tensors of when it was built: after model.to(...) it
    # broadcast and checked those, and the ranks' running statistics could drift apart unseen.
    torch.manual_seed(0)
    model = Sequential(Linear(2, 3, dtype=F64), BatchNorm1d(3, dtype=F64))
    parallel = DataParallel(model, world_of_one)
    model.to(torch.float32)
    model(torch.randn(4, 2))
    loss = torch.tensor(0.5)
    assert torch.equal(parallel.synchronize(loss), loss)
    current = [buffer for _, buffer in model.named_buffers()]
    assert [b.dtype for b in current] == [torch.float32, torch.float32, torch.int64]
    assert len(parallel._buffers) == 3
    assert all(a is b for a, b in zip(parallel._buffers, current, strict=True))
    parallel.check_in_sync()
    model[1].register_buffer("running_mean", torch.zeros(3))
    parallel.check_in_sync()
    assert parallel._buffers[0] is model[1].running_mean
