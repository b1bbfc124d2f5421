"""Behaviour of ``minidl.distributed`` that a second mutation audit found untested.

Each test pins one observable result against its oracle (exact values, exact errors, state left
as it was after a refusal): a launch of rank 0 read from the environment; a rendezvous address
set to the empty string, named as unset; the store's host read from
``TORCHELASTIC_USE_AGENT_STORE`` only when it is ``True``; a join whose rendezvous raises a
``ValueError``, or whose first broadcast fails, said as a ``DistributedError`` with no process
group left behind; the heartbeat, which publishes every new count of collectives; a source one
past the last rank; the gloo backend's dtypes refused on gloo only; rank 0's wait for the census
of a rank behind, and for up to a timeout and more; reasons of leaving half read from a failing
store; the weights of the gradients in a world of one; the documented bounds of an uneven
shard; the share of a training pass when a pass left behind ends; the global generator's
orders; and, on a real group of two ranks (gloo over 127.0.0.1), broadcasts from rank 1, sums,
parameters and gradients that are no flat buffer, buffers, unshuffled batches of ranks whose
generators differ, and check_in_sync's naming of what differs. A third audit added: the
census never names the rank that runs it as behind; a store that refuses every call is named
unreachable; a buffer registered after the wrapper was built is agreed on and, of a dtype gloo
does not carry, refused by ``synchronize``; a rank whose batches' own generator is seeded
otherwise is refused at the start of a pass.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing
from torch import Tensor

from minidl import distributed
from minidl.data import BatchIterator
from minidl.distributed import (
    DataParallel,
    DistributedError,
    Launch,
    ProcessGroup,
    ShardedBatches,
    all_reduce_gradients,
    broadcast_buffers,
    broadcast_parameters,
    launch_from_env,
)
from minidl.nn import BatchNorm1d, Linear, Sequential, mlp
from minidl.nn.flat import flat_buffer
from tests.helpers import free_port
from tests.test_distributed import _Store
from tests.test_distributed_mutants import _refusal

F64 = torch.float64


@pytest.fixture
def address(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rendezvous of a group of one rank (gloo over 127.0.0.1) on a free port."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)


@pytest.fixture
def world_of_one(address: None) -> Iterator[ProcessGroup]:
    """A joined group of one rank, closed after the test."""
    with ProcessGroup(Launch(0, 1, 0), timeout=10.0) as group:
        yield group


# -- the launch -----------------------------------------------------------------------------------


def test_the_launch_of_rank_0_and_of_a_world_of_one_is_read_from_the_environment() -> None:
    """Every bound of the environment's values is inclusive: rank 0, local rank 0 and a world
    of one are valid (the lowest value of each was refused by a bound taken as exclusive, and
    torchrun's rank 0 could not start)."""
    assert launch_from_env({"WORLD_SIZE": "1", "RANK": "0"}) == Launch(0, 1, 0)
    assert launch_from_env({"WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0"}) == Launch(0, 3, 0)
    assert launch_from_env({"WORLD_SIZE": "3", "RANK": "2", "LOCAL_RANK": "0"}) == Launch(2, 3, 0)


# -- the join -------------------------------------------------------------------------------------


def test_a_rendezvous_address_set_to_nothing_is_named_as_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MASTER_ADDR set to the empty string (``MASTER_ADDR= torchrun ...``, a variable exported
    from an empty shell variable) is no address: it is refused at once as one not set, before
    the rendezvous, which would otherwise wait out the timeout on an address of nothing."""
    monkeypatch.setenv("MASTER_ADDR", "")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    started = time.monotonic()
    with pytest.raises(DistributedError) as raised:
        ProcessGroup(Launch(0, 1, 0), timeout=5.0)
    assert str(raised.value) == (
        "ProcessGroup: rank 0 cannot join the 1 ranks: the environment variable MASTER_ADDR is "
        "not set (the address and port of rank 0's rendezvous store; torchrun sets both)"
    )
    assert time.monotonic() - started < 1.0
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("value", ["False", "0", "", "true"])
def test_only_an_agent_store_set_to_true_makes_the_launcher_its_host(
    monkeypatch: pytest.MonkeyPatch, address: None, value: str
) -> None:
    """torch's rendezvous shares the launcher's store only where TORCHELASTIC_USE_AGENT_STORE is
    ``True`` (its own test: ``== str(True)``); any other value leaves rank 0 hosting it, and a
    store that does not answer is then named as rank 0's own server, not as a launcher that
    this run does not have."""
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", value)
    with ProcessGroup(Launch(0, 1, 0), timeout=10.0) as group:
        group._census = lambda: None  # type: ignore[method-assign]  # (the store is silent)
        error = group._failure("the all_reduce of the gradients", RuntimeError("timed out"))
    assert str(error) == (
        "rank 0 of 1: the all_reduce of the gradients failed: the rendezvous store is "
        "unreachable too (or does not answer), though this rank hosts it (a server in this "
        "process, as for ranks started by hand): the server or this rank's connection to it has "
        "failed, or this process was held up (stopped, or starved of CPU) past the wait for its "
        "answers (collective timeout 10 s). Cause: timed out"
    )


def test_a_value_error_of_the_rendezvous_is_a_failure_to_join(
    monkeypatch: pytest.MonkeyPatch, address: None
) -> None:
    """torch's env:// rendezvous raises ValueErrors of its own (a variable it cannot read): the
    join says so as a DistributedError naming the rank, the world and the address, as it does
    for its RuntimeErrors, and no process group is left joined."""

    def rendezvous(url: str, timeout: Any) -> Any:
        raise ValueError("Error initializing torch.distributed using env:// rendezvous: bad\nmore")

    monkeypatch.setattr(distributed, "rendezvous", rendezvous)
    with pytest.raises(DistributedError) as raised:
        ProcessGroup(Launch(0, 1, 0), timeout=5.0)
    assert str(raised.value) == (
        f"ProcessGroup: rank 0 could not join the 1 ranks at 127.0.0.1:{os.environ['MASTER_PORT']}"
        " within 5 s: Error initializing torch.distributed using env:// rendezvous: bad"
    )
    assert isinstance(raised.value.__cause__, ValueError)
    assert not torch.distributed.is_initialized()


def test_a_join_whose_first_broadcast_fails_leaves_no_process_group(
    monkeypatch: pytest.MonkeyPatch, address: None
) -> None:
    """The join's first collective (rank 0's number for the group's keys) may fail (a rank that
    died as the others joined): the join raises a DistributedError, and leaves no default
    process group behind, so that a ProcessGroup can be joined again in this process (one left
    initialised refused every later join: 'a default process group is already initialised')."""

    def broadcast(tensor: torch.Tensor, src: int) -> None:
        raise RuntimeError("Connection closed by peer")

    with monkeypatch.context() as patched:
        patched.setattr(torch.distributed, "broadcast", broadcast)
        with pytest.raises(DistributedError) as raised:
            ProcessGroup(Launch(0, 1, 0), timeout=5.0)
    assert str(raised.value).startswith("ProcessGroup: rank 0 could not join the 1 ranks at ")
    assert str(raised.value).endswith(" within 5 s: Connection closed by peer")
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    with ProcessGroup(Launch(0, 1, 0), timeout=5.0) as group:
        assert torch.equal(group.all_reduce_(torch.ones(2), "x"), torch.ones(2))


# -- the heartbeat --------------------------------------------------------------------------------


def _published_calls(group: ProcessGroup, expected: int) -> int:
    """The count of collectives the heartbeat published for rank 0, once it reads ``expected``
    (or after 60 s, a bound only on a heartbeat that never publishes it, the count then)."""
    key = group._key("collectives/", 0)
    deadline = time.monotonic() + 60.0
    while True:
        # (a get of a key not set yet would block the store's one connection: checked first)
        count = int(group._store.get(key)) if group._store.check([key]) else -1
        if count == expected or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def test_the_heartbeat_publishes_every_new_count_of_collectives(
    world_of_one: ProcessGroup,
) -> None:
    """The others tell a rank still in its own code from ranks whose calls diverged by the count
    of collectives its heartbeat publishes: each count, not only the first, reaches the store
    within a few beats."""
    group = world_of_one
    assert _published_calls(group, 0) == 0  # (the join's own broadcast is not counted)
    for expected in (1, 2):
        group.all_reduce_(torch.ones(1), "x")
        assert _published_calls(group, expected) == expected


# -- the collectives' refusals --------------------------------------------------------------------


def test_a_source_one_past_the_last_rank_is_refused_before_the_broadcast(
    world_of_one: ProcessGroup,
) -> None:
    """Rank ``world_size`` is no rank (the ranks are 0 to ``world_size - 1``): broadcast_ refuses
    it by name at once, the tensor and the count of collectives as they were (gloo's refusal
    came as a failure of the group, after a census of the heartbeats)."""
    group = world_of_one
    tensor = torch.tensor([1.0, 2.0])
    calls = group._calls[0]
    with pytest.raises(ValueError) as raised:
        group.broadcast_(tensor, "x", source=1)
    assert str(raised.value) == "ProcessGroup.broadcast_: source must be a rank in [0, 0], got 1"
    assert group._calls[0] == calls
    assert torch.equal(tensor, torch.tensor([1.0, 2.0]))
    assert torch.equal(group.broadcast_(tensor, "x", source=0), torch.tensor([1.0, 2.0]))


def test_the_dtypes_refused_are_the_gloo_backends_only() -> None:
    """The refusal of a dtype names the gloo backend, which does not carry int16 or uint32; a
    group on NCCL (CUDA) leaves the dtypes to NCCL, which carries uint32, and refuses only what
    is no tensor."""
    group = ProcessGroup.__new__(ProcessGroup)
    group.backend = "gloo"
    with pytest.raises(TypeError, match=r"^where: tensor is torch\.uint32, which the gloo backend"):
        group._check_tensor("where", torch.zeros(2, dtype=torch.uint32))
    group.backend = "nccl"
    group._check_tensor("where", torch.zeros(2, dtype=torch.uint32))  # (no refusal)
    with pytest.raises(TypeError, match=r"^where: tensor must be a torch\.Tensor, got list$"):
        group._check_tensor("where", [1.0])


# -- the census -----------------------------------------------------------------------------------


def _bare_group(rank: int, world_size: int, calls: int, values: dict[str, bytes]) -> ProcessGroup:
    """A ProcessGroup of ``rank`` among ``world_size`` that has entered ``calls`` collectives,
    on a store of ``values`` (keys under ``minidl/``), joined to nothing."""
    group = ProcessGroup.__new__(ProcessGroup)
    group.rank, group.world_size, group.timeout, group._calls = rank, world_size, 5.0, [calls]
    group._store = _Store(values)  # type: ignore[assignment]
    group._store_answers = True
    group._launcher_hosts_store = False
    return group


def test_rank_0_waits_for_a_rank_behind_when_another_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rank 3 stopped; rank 1 is alive but behind (4 collectives entered of rank 0's 5), rank 2
    alive and in it. The error names rank 3 alone, and rank 0 waits for the census of ranks 1
    and 2, which are alive and may fail up to a timeout later, reading the store rank 0 hosts
    (ranks behind are only left out of the wait when every rank is alive)."""
    monkeypatch.setattr(distributed, "_CENSUS_SECONDS", 0.0)
    values = {"minidl/collectives/1": b"4", "minidl/collectives/2": b"5"}
    group = _bare_group(0, 4, 5, values)
    group._census = lambda: [3]  # type: ignore[method-assign]
    awaited: list[list[int]] = []
    group._finish_census = awaited.append  # type: ignore[method-assign,assignment]
    error = group._failure("the all_reduce of the gradients", RuntimeError("timed out"))
    assert awaited == [[3]]
    assert str(error) == (
        "rank 0 of 4: the all_reduce of the gradients failed: rank 3 stopped responding (died or "
        "hung) (collective timeout 5 s). Cause: timed out"
    )


class _StoreThatFailsAtTheSecondRead(_Store):
    """A store that answers its first ``get`` and raises the store's RuntimeError at the next
    (its host gone in between)."""

    def __init__(self, values: dict[str, bytes]) -> None:
        super().__init__(values)
        self.reads = 0

    def get(self, key: str) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise RuntimeError("Connection reset by peer")
        return super().get(key)


def test_reasons_of_leaving_half_read_from_a_failing_store_are_not_told() -> None:
    """Ranks 1 and 2 stopped beating, and both published that they closed their group; the
    store fails after answering rank 1's reason. The error tells none of the reasons, not one
    rank's reason and another's silence (which named rank 2 as dead, rank 1 as having left):
    both are named alike, as stopped."""
    values = {"minidl/left/1": b"", "minidl/left/2": b"ValueError: bad batch"}
    group = _bare_group(0, 3, 4, {})
    group._store = _StoreThatFailsAtTheSecondRead(values)  # type: ignore[assignment]
    assert group._left([1, 2]) == {}
    group._store = _StoreThatFailsAtTheSecondRead(values)  # type: ignore[assignment]
    group._census = lambda: [1, 2]  # type: ignore[method-assign]
    group._finish_census = lambda missing: None  # type: ignore[method-assign]
    error = group._failure("the all_reduce of the gradients", RuntimeError("timed out"))
    assert str(error) == (
        "rank 0 of 3: the all_reduce of the gradients failed: ranks 1, 2 stopped responding "
        "(died or hung) (collective timeout 5 s). Cause: timed out"
    )


def test_rank_0_waits_for_the_others_census_up_to_a_timeout_and_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The other ranks' collectives may fail up to a timeout after rank 0's, and their census
    reads the store that rank 0 hosts: rank 0 waits for their census for the timeout and
    _CENSUS_SECONDS + 2 s more. Here (timeout 2 s, no census wait) rank 1 finishes its census
    3 s after rank 0 began waiting, past the 2 s that are not the timeout, and rank 0 returns
    only once it has."""
    monkeypatch.setattr(distributed, "_CENSUS_SECONDS", 0.0)
    group = _bare_group(0, 2, 4, {})
    group.timeout = 2.0
    store = group._store
    assert isinstance(store, _Store)
    done = "minidl/census-done/1"
    timer = threading.Timer(3.0, lambda: store.set(done, "1"))
    started = time.monotonic()
    timer.start()
    try:
        group._finish_census([])
        elapsed = time.monotonic() - started
        finished = store.check([done])
    finally:
        timer.cancel()
    assert finished, f"rank 0 left after {elapsed:.1f} s, before rank 1's census was done"
    assert store.check(["minidl/census-done/0"]) and group._store_answers is True


# -- two ranks ------------------------------------------------------------------------------------


def _two_ranks_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result: dict[str, Any] = {}
    with ProcessGroup(Launch(rank, 2, rank), timeout=120.0) as group:  # (slow imports)
        one = float(rank + 1)
        result["from_1"] = group.broadcast_(torch.tensor([one, 10 * one], dtype=F64), "x", 1)
        result["sum"] = group.all_reduce_(torch.tensor([one, -3 * one], dtype=F64), "y")
        # Parameters of two modules: no flat buffer, the temporary copy's path.
        torch.manual_seed(rank)
        parameters = [*Linear(2, 3, dtype=F64).parameters(), *Linear(3, 1, dtype=F64).parameters()]
        assert flat_buffer([parameter.data for parameter in parameters]) is None
        result["before"] = [parameter.data.clone() for parameter in parameters]
        broadcast_parameters(group, parameters)
        result["parameters"] = [parameter.data.clone() for parameter in parameters]
        for index, parameter in enumerate(parameters):
            parameter.grad.fill_(one + index)
        all_reduce_gradients(group, parameters, weight=(0.25, 0.75)[rank])
        result["gradients"] = [parameter.grad.clone() for parameter in parameters]
        buffers = [torch.full((2,), one / 2, dtype=F64), torch.tensor([2**60 + rank])]
        broadcast_buffers(group, buffers)
        result["buffers"] = buffers
        # Batches that do not shuffle draw nothing: ranks whose generators differ agree.
        linear, batch_norm = Linear(2, 3, dtype=F64), BatchNorm1d(3, dtype=F64)
        model = Sequential(linear, batch_norm)
        parallel = DataParallel(model, group)
        x, y = torch.arange(12.0).reshape(12, 1), torch.arange(12)
        generator = torch.Generator().manual_seed(rank)
        unshuffled = BatchIterator(x, y, 6, shuffle=False, generator=generator)
        result["unshuffled"] = _refusal(
            lambda: [ys.tolist() for _, ys in parallel.shard(unshuffled)]
        )
        # Ranks apart in their buffers, then in their parameters, then in buffers replaced.
        for tensor, what in (
            (batch_norm.running_var, "buffers"),
            (linear.weight.data, "parameters"),
        ):
            saved = tensor.clone()
            tensor.add_(rank)
            result[f"{what} apart"] = _refusal(parallel.check_in_sync)
            tensor.copy_(saved)
        result["in_sync"] = _refusal(parallel.check_in_sync)
        batch_norm.register_buffer("running_mean", torch.full((3,), float(rank), dtype=F64))
        result["replaced"] = _refusal(parallel.check_in_sync)
        # A step brings rank 0's buffers back to every rank.
        parallel.synchronize(torch.tensor(1.0, dtype=F64))
        result["synchronized"] = (batch_norm.running_mean, _refusal(parallel.check_in_sync))
    torch.save(result, Path(out) / f"rank{rank}.pt")


def test_two_ranks_broadcast_from_any_rank_and_sum_and_scatter_back_unflat_tensors(
    tmp_path: Path,
) -> None:
    """On a real group of two ranks (gloo over 127.0.0.1): broadcast_ from rank 1 gives rank 1's
    tensor on both; all_reduce_ sums (3 and -9 of 1 + 2 and -3 - 6, not the greater of each);
    broadcast_parameters and all_reduce_gradients of parameters of two modules (no flat buffer:
    a temporary copy, copied back) give rank 0's values and the weighted sum of the gradients,
    exactly; broadcast_buffers gives rank 0's buffers, an int64 past float64's integers too.
    Ranks whose generators differ agree on batches that do not shuffle (nothing is drawn);
    check_in_sync names the rank whose buffers, or whose parameters, differ, as such, and
    buffers replaced since the DataParallel was built, once they differ."""
    torch.multiprocessing.spawn(  # type: ignore[attr-defined,no-untyped-call]
        _two_ranks_worker, args=(free_port(), str(tmp_path)), nprocs=2
    )
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    initial = results[0]["before"]
    assert not torch.equal(results[1]["before"][0], initial[0])
    for result in results:
        assert torch.equal(result["from_1"], torch.tensor([2.0, 20.0], dtype=F64))
        assert torch.equal(result["sum"], torch.tensor([3.0, -9.0], dtype=F64))
        assert len(result["parameters"]) == len(initial) == 4
        for got, expected in zip(result["parameters"], initial, strict=True):
            assert torch.equal(got, expected)
        for index, gradient in enumerate(result["gradients"]):
            # 0.25 * (1 + index) + 0.75 * (2 + index), exact in float64
            assert torch.equal(gradient, torch.full_like(gradient, 1.75 + index)), index
        assert torch.equal(result["buffers"][0], torch.tensor([0.5, 0.5], dtype=F64))
        assert torch.equal(result["buffers"][1], torch.tensor([2**60]))
        assert result["unshuffled"] == "no error"
        assert result["in_sync"] == "no error"
        for what in ("buffers", "parameters"):
            assert result[f"{what} apart"].startswith(
                f"DataParallel: the {what} of ranks [1] differ from rank 0's (checksums ["
            ), what
        assert result["replaced"].startswith(
            "DataParallel: the buffers of ranks [1] differ from rank 0's (checksums ["
        )
        assert torch.equal(result["synchronized"][0], torch.zeros(3, dtype=F64))
        assert result["synchronized"][1] == "no error"


def test_the_gradients_are_weighted_in_a_world_of_one(world_of_one: ProcessGroup) -> None:
    """all_reduce_gradients replaces every gradient with the sum over the ranks of its weight
    times the gradient: in a world of one, the gradient times the weight, exactly, whether the
    gradients are views of one flat buffer (an mlp) or not (two modules' parameters)."""
    flat = list(mlp((2, 3, 2), "tanh", dtype=F64).parameters())
    assert flat_buffer([parameter.grad for parameter in flat]) is not None
    unflat = [*Linear(2, 3, dtype=F64).parameters(), *Linear(3, 1, dtype=F64).parameters()]
    assert flat_buffer([parameter.grad for parameter in unflat]) is None
    for parameters in (flat, unflat):
        for index, parameter in enumerate(parameters):
            parameter.grad.fill_(2.0 + index)
        all_reduce_gradients(world_of_one, parameters, weight=0.25)
        for index, parameter in enumerate(parameters):
            expected = torch.full_like(parameter.grad, (2.0 + index) * 0.25)
            assert torch.equal(parameter.grad, expected), index


# -- the shards -----------------------------------------------------------------------------------


def test_an_uneven_last_batch_splits_at_the_documented_bounds() -> None:
    """Of a batch of s samples, rank k of W takes samples floor(s k / W) to floor(s (k + 1) / W)
    - 1: the last batch of 6 samples of 14 (batches of 8) splits 1/2/1/2 over 4 ranks (shard
    sizes differ by at most one), not 1/1/1/3, each rank's share its size over 6."""
    x, y = torch.arange(14.0).reshape(14, 1), torch.arange(14)
    last = []
    for rank in range(4):
        shards = ShardedBatches(BatchIterator(x, y, 8, shuffle=False), rank, 4)
        passes = [(y_shard.tolist(), shards.share) for _, y_shard in shards]
        last.append(passes[-1])
    assert last == [([8], 1 / 6), ([9, 10], 2 / 6), ([11], 1 / 6), ([12, 13], 2 / 6)]


def test_a_pass_left_behind_that_ends_later_leaves_the_share_of_the_pass_that_runs(
    world_of_one: ProcessGroup,
) -> None:
    """A pass over shards left behind (an evaluation loop that broke off) may end later, as its
    iterator is closed or collected, while another pass trains: synchronize still weights by
    the share of the training pass's last shard (1/3 of its last batch of 3 samples), not by an
    equal share. (Shards of rank 0 of 2, made by hand over a group of one, so that the shares
    differ.)"""
    parallel = DataParallel(Linear(2, 2), world_of_one)
    x, y = torch.randn(11, 2), torch.zeros(11, dtype=torch.int64)
    left = iter(distributed._AgreedShards(BatchIterator(x, y, 4, shuffle=False), 0, 2, parallel))
    next(left)
    training = distributed._AgreedShards(BatchIterator(x, y, 4, shuffle=False), 0, 2, parallel)
    shares = []
    for x_shard, _ in training:
        if x_shard.shape[0] == 1:  # (the last batch: the pass left behind ends now)
            left.close()  # type: ignore[attr-defined]
        shares.append(float(parallel.synchronize(torch.tensor(1.0, dtype=F64))))
    assert shares == [0.5, 0.5, 1 / 3]


def test_shards_of_batches_drawn_from_the_global_generator_keep_its_order(
    world_of_one: ProcessGroup,
) -> None:
    """Batches without a generator of their own draw their order from torch's global one: the
    shards (checked against the other ranks by a digest of its state) draw the same orders, epoch
    after epoch, as the batches alone from the same seed, and leave the generator in the same
    state."""
    parallel = DataParallel(Linear(2, 2), world_of_one)
    x, y = torch.randn(10, 2), torch.arange(10)
    torch.manual_seed(5)
    expected = [y_batch.tolist() for _ in range(2) for _, y_batch in BatchIterator(x, y, 4)]
    after = torch.get_rng_state()
    torch.manual_seed(5)
    shards = parallel.shard(BatchIterator(x, y, 4))
    got = [y_shard.tolist() for _ in range(2) for _, y_shard in shards]
    assert got == expected
    assert torch.equal(torch.get_rng_state(), after)


# -- a third audit: the census, buffers registered since, the order of the samples --------------


def test_the_rank_that_runs_the_census_is_never_named_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rank 1 of 3 failed in its 5th collective; its own heartbeat last published 3 (it was
    held up, or its thread stopped), rank 0 published 4 and rank 2 5. Only rank 0 is behind:
    the rank that diagnoses the failure is in the collective, whatever its stale count says,
    and naming it would tell the user that the failing rank itself had not reached it."""
    monkeypatch.setattr(distributed, "_CENSUS_SECONDS", 0.0)
    values = {f"minidl/collectives/{rank}": n for rank, n in ((0, b"4"), (1, b"3"), (2, b"5"))}
    group = _bare_group(1, 3, 5, values)
    assert group._behind() == [0]
    group._census = lambda: []  # type: ignore[method-assign]
    group._finish_census = lambda missing: None  # type: ignore[method-assign]
    error = group._failure("the all_reduce of the gradients", RuntimeError("timed out"))
    assert str(error) == (
        "rank 1 of 3: the all_reduce of the gradients failed: rank 0 has not reached it: still "
        "alive, but stuck or slower than the timeout in its own code before it (collective "
        "timeout 5 s). Cause: timed out"
    )


class _StoreGone:
    """A rendezvous store whose host is gone: every call raises the store's RuntimeError at once
    (a refused or reset connection), as when rank 0, which hosts it, died."""

    def check(self, keys: list[str]) -> bool:
        raise RuntimeError("Connection refused")

    def get(self, key: str) -> bytes:
        raise RuntimeError("Connection refused")

    def set(self, key: str, value: str) -> None:
        raise RuntimeError("Connection refused")


def test_a_store_that_refuses_the_census_is_named_unreachable_not_every_rank_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rank 1 of 2 fails in a collective and its census finds the store refusing every call:
    the error names the store as unreachable and rank 0 (its host) as stopped, not 'every rank
    is still alive' (a census that read nothing found no rank stopped), and close() does not
    wait for that store again."""
    monkeypatch.setattr(distributed, "_CENSUS_SECONDS", 0.0)
    group = _bare_group(1, 2, 3, {})
    group._store = _StoreGone()  # type: ignore[assignment]
    assert group._census() is None
    error = group._failure("the all_reduce of the gradients", RuntimeError("Connection reset"))
    assert str(error) == (
        "rank 1 of 2: the all_reduce of the gradients failed: the rendezvous store is "
        "unreachable too (or does not answer), so rank 0 (which hosts it) has stopped or hung "
        "(collective timeout 5 s). Cause: Connection reset"
    )
    assert group._store_answers is False


# -- buffers registered since ---------------------------------------------------------------------


def test_a_buffer_registered_under_a_new_name_is_agreed_on_and_checked_by_synchronize(
    world_of_one: ProcessGroup,
) -> None:
    """A buffer registered after the DataParallel was built, under a name of its own (the model
    then holds more buffers than the wrapper knew): synchronize agrees on it and broadcasts it
    with the others, and one of a dtype gloo does not carry is refused in synchronize's name
    before the gradients are reduced, as documented, the gradients left as they were."""
    torch.manual_seed(0)
    model = Sequential(Linear(2, 3, dtype=F64), BatchNorm1d(3, dtype=F64))
    parallel = DataParallel(model, world_of_one)
    for parameter in model.parameters():
        parameter.grad.fill_(3.0)
    extra = model[1].register_buffer("extra", torch.arange(4, dtype=F64))
    loss = torch.tensor(0.5, dtype=F64)
    assert torch.equal(parallel.synchronize(loss), loss)
    assert [b.dtype for _, b in model.named_buffers()] == [F64, F64, torch.int64, F64]
    assert dict(model.named_buffers())["1.extra"] is extra
    assert torch.equal(extra, torch.arange(4, dtype=F64))
    assert all(bool((p.grad == 3.0).all()) for p in model.parameters())
    parallel.check_in_sync()
    model[1].register_buffer("counts", torch.zeros(2, dtype=torch.int16))
    with pytest.raises(
        TypeError,
        match=r"^DataParallel\.synchronize: buffer '1\.counts' is torch\.int16, which the gloo "
        r"backend does not carry",
    ):
        parallel.synchronize(loss)
    assert all(bool((p.grad == 3.0).all()) for p in model.parameters())


# -- the order of the samples ---------------------------------------------------------------------


def test_a_rank_whose_own_generator_is_seeded_otherwise_is_refused_at_the_pass(
    world_of_one: ProcessGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches that shuffle with a generator of their own: the check at the start of a pass
    digests that generator's state (not torch's global one, which such batches never draw
    from). Here the digests a rank 1 would gather are those of this process's own pass over
    batches whose generator was seeded 1: a rank 0 seeded 0 is refused on its next pass, one
    seeded 1 passes, and the global generator's state plays no part."""
    parallel = DataParallel(Linear(2, 2, dtype=F64), world_of_one)
    x, y = torch.randn(8, 2, dtype=F64), torch.arange(8)
    group = world_of_one
    gather = group.all_gather
    recorded: list[Tensor] = []

    def record(tensor: Tensor, what: str) -> list[Tensor]:
        recorded.append(tensor.clone())
        return gather(tensor, what)

    def with_rank_1(tensor: Tensor, what: str) -> list[Tensor]:
        """Rank 1's digests at the start of a pass (its batches' order), else this rank's."""
        mine = gather(tensor, what)[0]
        return [mine, recorded[-1] if what.endswith("order") else mine]

    seeded_1 = parallel.shard(BatchIterator(x, y, 4, generator=torch.Generator().manual_seed(1)))
    monkeypatch.setattr(group, "all_gather", record)
    iter(seeded_1)  # (the check runs as the pass begins)
    monkeypatch.setattr(group, "all_gather", with_rank_1)
    torch.manual_seed(123)  # (the global generator: another state than at the recording)
    again = parallel.shard(BatchIterator(x, y, 4, generator=torch.Generator().manual_seed(1)))
    assert [y_shard.tolist() for _, y_shard in again] == [y_b.tolist() for _, y_b in seeded_1]
    seeded_0 = parallel.shard(BatchIterator(x, y, 4, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(
        DistributedError,
        match=r"^DataParallel: the order \(the state of the generator that draws this pass's "
        r"order of the samples\) of ranks \[1\] differs from rank 0's; seed every rank's "
        r"generator identically",
    ):
        iter(seeded_0)


# -- a fourth pass of mutation testing (2026-12-07) ----------------------------------------------


def _recording(group: ProcessGroup, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every all_gather of ``group`` from now on, as (what, a copy of the tensor given)."""
    calls: list[tuple[str, Any]] = []
    real = group.all_gather

    def all_gather(tensor: torch.Tensor, what: str) -> list[torch.Tensor]:
        calls.append((what, tensor.clone()))
        return real(tensor, what)

    monkeypatch.setattr(group, "all_gather", all_gather)
    return calls


def _model() -> Sequential:
    torch.manual_seed(0)
    return Sequential(Linear(2, 3, dtype=F64), BatchNorm1d(3, dtype=F64))


def test_the_digests_are_named_once_by_what_they_check(
    world_of_one: ProcessGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """m60: the all_gather of several checks of one kind (the model's parameters, buffers and
    modules) is named once by that kind ("the digests of the model", not "the model and model
    and model"), as the message of a failed collective shows it; checks of two kinds name both."""
    calls = _recording(world_of_one, monkeypatch)
    parallel = DataParallel(_model(), world_of_one)
    batches = BatchIterator(
        torch.zeros(8, 2, dtype=F64),
        torch.zeros(8, 3, dtype=F64),
        batch_size=4,
        generator=torch.Generator().manual_seed(0),
    )
    for _ in parallel.shard(batches):
        pass
    assert [what for what, _ in calls] == [
        "the digests of the model",
        "the digests of the batches",
        "the digests of the batches and order",
    ]


def test_a_pass_without_shuffle_digests_no_generator_state(
    world_of_one: ProcessGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """m56: batches that do not shuffle draw nothing, so the ranks' generators need not agree:
    the order's digest is a constant one (that of no state), whatever torch's global generator
    holds; batches that shuffle digest the state of the generator that draws their order."""
    parallel = DataParallel(_model(), world_of_one)
    calls = _recording(world_of_one, monkeypatch)
    x, y = torch.zeros(8, 2, dtype=F64), torch.zeros(8, 3, dtype=F64)
    batches = parallel.shard(BatchIterator(x, y, batch_size=4, shuffle=False))
    for seed in (1, 2):
        torch.manual_seed(seed)
        for _ in batches:
            pass
    (what_1, first), (what_2, second) = calls[-2:]
    assert what_1 == what_2 == "the digests of the batches and order"
    constant = distributed._checksum([torch.empty(0, dtype=torch.uint8)])
    assert torch.equal(first[1], constant) and torch.equal(second[1], constant)
    generator = torch.Generator().manual_seed(5)
    state = distributed._checksum([generator.get_state()])
    shuffled = parallel.shard(BatchIterator(x, y, batch_size=4, generator=generator))
    for _ in shuffled:
        pass
    assert torch.equal(calls[-1][1][1], state)


def test_check_in_sync_compares_the_buffers_the_model_holds_now(
    world_of_one: ProcessGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """m69: a buffer registered after the DataParallel was built is agreed on and checked by
    check_in_sync (its checksum is of the model's buffers now, not of those known before)."""
    model = _model()
    parallel = DataParallel(model, world_of_one)
    model[1].register_buffer("extra", torch.arange(4, dtype=F64))
    calls = _recording(world_of_one, monkeypatch)
    parallel.check_in_sync()
    assert [what for what, _ in calls] == [
        "the digests of the buffers",
        "the parameter checksums",
    ]
    expected = torch.stack(
        [
            distributed.parameter_checksum(model.parameters()),
            distributed._checksum(list(model.buffers())),
        ]
    )
    assert torch.equal(calls[-1][1], expected)


def test_buffers_replaced_once_are_agreed_on_once(
    world_of_one: ProcessGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """m64: buffers replaced since the last step are agreed on at the next synchronize (one
    all_gather), then known: the steps after take one all_reduce and one broadcast, no more."""
    model = _model()
    parallel = DataParallel(model, world_of_one)
    model[1].register_buffer("extra", torch.arange(4, dtype=F64))
    calls = _recording(world_of_one, monkeypatch)
    loss = torch.tensor(0.5, dtype=F64)
    parallel.synchronize(loss)
    parallel.synchronize(loss)
    parallel.check_in_sync()
    assert [what for what, _ in calls] == [
        "the digests of the buffers",
        "the parameter checksums",
    ]


def test_synchronize_outside_a_pass_weights_by_an_equal_share(
    world_of_one: ProcessGroup,
) -> None:
    """m62: outside a pass (no shard drawn) every rank holds 1 / world_size of the batch: the
    gradient and the loss are weighted by it. (A world of one stands in for two ranks: a copy of
    the group, which shares its membership, is told a world size of 2; its all_reduce sums this
    rank's part alone, so the gradient that comes back is this rank's weighted one.)"""
    model = Sequential(Linear(2, 3, dtype=F64))
    parallel = DataParallel(model, world_of_one)
    pretend = copy.copy(world_of_one)
    pretend.world_size = 2
    parallel.group = pretend
    for parameter in model.parameters():
        parameter.grad.fill_(3.0)
    loss = torch.tensor(0.5, dtype=F64)
    assert torch.equal(parallel.synchronize(loss), torch.tensor(0.25, dtype=F64))
    assert all(bool((p.grad == 1.5).all()) for p in model.parameters())


def test_a_collective_refused_on_a_destroyed_group_is_not_counted(
    world_of_one: ProcessGroup,
) -> None:
    """m17: a collective refused (its default process group destroyed outside close) is not
    entered: the count of collectives that the heartbeat publishes, and that the others' census
    compares with theirs to name ranks behind, is left as it was."""
    tensor = torch.zeros(3, dtype=F64)
    world_of_one.all_reduce_(tensor, "a test tensor")
    before = list(world_of_one._calls)
    torch.distributed.destroy_process_group()
    for call in (
        lambda: world_of_one.all_reduce_(tensor, "a test tensor"),
        lambda: world_of_one.broadcast_(tensor, "a test tensor"),
        lambda: world_of_one.all_gather(tensor, "a test tensor"),
    ):
        with pytest.raises(
            distributed.DistributedError,
            match=r"^ProcessGroup: the (all_reduce|broadcast|all_gather) of a test tensor was "
            r"called on rank 0 of 1 after its default process group was destroyed outside "
            r"close\(\)",
        ):
            call()
    assert world_of_one._calls == before


# -- a fifth mutation audit ------------------------------------------------------------------


def test_a_cause_that_begins_with_a_blank_line_is_told_by_its_first_line_of_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(first_line_strip) The cause of a failed collective is the first line of the error's
    text, leading blank lines skipped: not an empty "Cause: "."""
    monkeypatch.setattr(distributed, "_CENSUS_SECONDS", 0.0)
    group = _bare_group(1, 2, 3, {"minidl/heartbeat/0": b"1", "minidl/collectives/0": b"3"})
    group._census = lambda: []  # type: ignore[method-assign]
    group._finish_census = lambda missing: None  # type: ignore[method-assign]
    error = group._failure("the all_reduce of x", RuntimeError("\n  gloo: timed out\nin detail"))
    assert str(error) == (
        "rank 1 of 2: the all_reduce of x failed: every rank is still alive (the ranks may have "
        "diverged in their calls) (collective timeout 5 s). Cause: gloo: timed out"
    )


def test_a_count_of_collectives_that_is_no_integer_names_no_rank_behind() -> None:
    """(behind_valueerror) A count of collectives in the store that is no integer is taken as
    unknown (no rank named behind), not raised out of the census, which then named the store
    as unreachable."""
    group = _bare_group(
        0, 3, 5, {"minidl/collectives/1": b"not a count", "minidl/collectives/2": b"2"}
    )
    assert group._behind() == []
    group._census = lambda: []  # type: ignore[method-assign]
    finished: list[list[int]] = []
    group._finish_census = finished.append  # type: ignore[method-assign]
    error = group._failure("the all_reduce of x", RuntimeError("timed out"))
    assert finished == [[]]
    assert str(error) == (
        "rank 0 of 3: the all_reduce of x failed: every rank is still alive (the ranks may have "
        "diverged in their calls) (collective timeout 5 s). Cause: timed out"
    )


def test_an_error_whose_message_holds_an_undecodable_path_is_published_as_the_reason_for_leaving(
    world_of_one: ProcessGroup,
) -> None:
    """An error whose message holds a lone surrogate (os.fsdecode of a file name's
    undecodable byte, as Python gives for such paths) leaves the ``with`` block: its reason is
    published, what UTF-8 cannot carry escaped. (Fixed: the store's ``set`` refused the str, a
    pybind TypeError that ``_within`` let out of its thread with a traceback, and no reason was
    published, so the other ranks named this one as "stopped responding (died or hung)" rather
    than as one that "closed its group on an error of its own".)"""
    path = os.fsdecode(b"/data/\xff.csv")
    with contextlib.suppress(FileNotFoundError), world_of_one:
        raise FileNotFoundError(f"no file {path}")
    key = world_of_one._key("left/", 0)
    assert world_of_one._store.check([key])
    assert world_of_one._store.get(key) == b"FileNotFoundError: no file /data/\\udcff.csv"


def test_check_in_sync_names_the_checksums_of_what_differs(
    world_of_one: ProcessGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(insync_msg) Ranks whose buffers alone differ are named with the buffers' checksums, not
    the parameters' (which agree). Rank 1's checksums are made up: rank 0's, its buffers' + 1."""
    torch.manual_seed(0)
    model = Sequential(Linear(2, 3, dtype=F64), BatchNorm1d(3, dtype=F64))
    parallel = DataParallel(model, world_of_one)
    real = world_of_one.all_gather

    def all_gather(tensor: torch.Tensor, what: str) -> list[torch.Tensor]:
        (mine,) = real(tensor, what)
        other = mine.clone()
        other[1] += 1
        return [mine, other]

    monkeypatch.setattr(world_of_one, "all_gather", all_gather)
    params = int(distributed.parameter_checksum(model.parameters()))
    buffers = int(distributed._checksum([b for _, b in model.named_buffers()]))
    assert params != buffers
    with pytest.raises(DistributedError) as raised:
        parallel.check_in_sync()
    assert str(raised.value) == (
        f"DataParallel: the buffers of ranks [1] differ from rank 0's (checksums "
        f"[{buffers}, {buffers + 1}])"
    )
