r"""Data-parallel training across processes, on ``torch.distributed``.

This is the one module of minidl that imports ``torch.distributed`` (see docs/architecture.md); it
uses it for the rendezvous and for collectives only. Every gradient is still derived by hand and
computed by the modules.

Each of the :math:`W` processes (*ranks*) holds the whole model and the whole data set. Every
epoch, all ranks draw the same shuffled order from generators seeded identically (checked at the
start of every epoch: one ``all_gather`` of a digest of the generator's state), and rank
:math:`k` takes its slice of every global batch (:class:`ShardedBatches`). After ``backward``,
each rank scales its gradients by its share :math:`b_k / B` of the global batch of :math:`B`
samples, and one ``all_reduce`` (a sum) over the model's flat gradient buffer gives every rank

.. math::
    g = \sum_k \frac{b_k}{B} \cdot \frac{1}{b_k} \sum_{i \in \text{shard}_k} \nabla \ell_i
      = \frac{1}{B} \sum_{i \in \text{batch}} \nabla \ell_i ,

the gradient of the global batch's mean loss, exactly what a single process computes. This holds
for a loss that is a mean over the samples (the default reduction of every minidl loss); with a
``"sum"`` reduction, or a class-weighted mean, the shares would have to be 1 or the ranks' weight
sums instead, which :class:`DataParallel` does not do. The optimizers then take identical steps on
every rank, so the parameters stay identical without further communication.

A batch norm in training mode normalises with the statistics of its input, here of the rank's
shard, as with PyTorch's ``DistributedDataParallel`` (without ``SyncBatchNorm``): a model with
one does not train exactly as in one process. Its running statistics, updated by each rank from
its own shard, are made rank 0's after every step (one ``broadcast``; ``DistributedDataParallel``
broadcasts them before every forward instead, which gives the same steps, but leaves each rank's
own after the last one), so that the ranks stay identical.

A random layer (:class:`~minidl.nn.Dropout`) draws its mask on each rank for that rank's shard,
from that rank's generator: the masks are not those of one process over the whole batch, so such
a model does not train exactly as in one process either. With the same seed on every rank (as
``minidl train`` and ``torch.manual_seed(seed)`` give), every rank draws the same masks for its
shard, until a batch splits unevenly (a rank with a larger shard draws more numbers, and the
ranks' generators differ from then on); give each rank a generator of its own (``Dropout(p,
generator=torch.Generator().manual_seed(seed + rank))``) for independent ones. The gradients are
still averaged and the ranks still take identical steps.

The world size must divide the batch size, so that every full batch splits into equal shards. The
last, smaller batch of an epoch (when the batch size does not divide the set) is split as evenly as
possible (shard sizes differ by at most one); the weights :math:`b_k / B` keep its gradient exact.
It must hold at least one sample per rank (or be dropped with ``drop_last``).

A rank that dies or hangs makes the collectives of the others fail, after at most ``timeout``
seconds (gloo's collective timeout; a dead peer is usually noticed at once, from its closed
connections). Every rank keeps a heartbeat counter in the rendezvous store (a thread bumps it
four times a second, also while the rank waits in a collective); the survivors look at which
counters stopped and raise a :class:`DistributedError` that names those ranks. A rank whose
counter goes on but that is stuck in its own code (or slower there than the timeout: a long
``on_epoch``, a slow checkpoint write) is named too, as one that has not reached the collective:
the heartbeat also publishes how many collectives the rank has entered. A rank that closed its
group (its run ended sooner, or it left the ``with`` block on an error) says so as it closes, and
is named as such, with the error's type and first line. The census waits for the
store's answers 6.5 s at most (torch's store calls have no timeout of their own): when rank 0
hosts the store (ranks started by hand; under ``torchrun`` the launcher hosts it) and hangs, the
others say so then rather than wait for ever. Rank 0, which then waits for the others' census
(up to a timeout), awaits each of the store's answers 5 s at most: under ``torchrun`` a
launcher that stops answering then is named, not waited for. A store that does not answer is
named by its host, as torch's rendezvous chose it: the launcher where it shares its store
(``TORCHELASTIC_USE_AGENT_STORE=True``, as ``torchrun`` sets it unless
``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``), else rank 0 (rank 0 itself, which is running, names
the store's server in its own process or its connection to it). (With NCCL,
PyTorch's watchdog notices a timed-out collective itself and ends the process with its own
message.)

Launch with ``torchrun`` (``python -m torch.distributed.run``), which sets ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``:

Example:
    >>> from minidl.train import fit
    >>> launch = launch_from_env()                      # None outside torchrun
    >>> with ProcessGroup(launch, timeout=60.0) as group:
    ...     model = nn.mlp((2, 25, 25, 25, 2), "tanh")
    ...     optimizer = optim.SGD(model.parameters(), lr=0.1)
    ...     parallel = DataParallel(model, group)       # broadcasts rank 0's parameters
    ...     history = fit(model, criterion, optimizer, x, y, epochs=400, batch_size=100,
    ...                   generator=torch.Generator().manual_seed(0), parallel=parallel)
    ...     parallel.check_in_sync()
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.distributed_c10d import PrefixStore
from torch.distributed.rendezvous import rendezvous

from minidl._validate import check_int, check_real, shown, without_addresses
from minidl.data import BatchIterator, short_last_batch
from minidl.nn._checks import given_module
from minidl.nn.flat import flat_buffer
from minidl.nn.module import Module
from minidl.nn.parameter import Parameter

if TYPE_CHECKING:
    from torch._C._distributed_c10d import Store

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_TIMEOUT",
    "TIMEOUT_ENV",
    "DataParallel",
    "DistributedError",
    "Launch",
    "ProcessGroup",
    "ShardedBatches",
    "all_reduce_gradients",
    "broadcast_buffers",
    "broadcast_parameters",
    "launch_from_env",
    "parameter_checksum",
    "timeout_from_env",
]

#: Seconds a collective (or the start-up rendezvous) may wait for the other ranks.
DEFAULT_TIMEOUT = 60.0
#: The longest timeout in seconds (about 31 years). Torch counts a timeout in nanoseconds, in a
#: 64-bit integer (at most about 9.2e9 s): a longer one made the start-up fail at once, or raise
#: an ``OverflowError``, rather than wait.
MAX_TIMEOUT = 1e9
#: The environment variable that sets the timeout (the ``--dist-timeout`` flag overrides it).
TIMEOUT_ENV = "MINIDL_DIST_TIMEOUT"
#: Every rank's heartbeat thread bumps its counter in the store this often (seconds) ...
_BEAT_SECONDS = 0.25
#: (The keys below lie in the group's own place in the store: see ProcessGroup._key.)
#: ... and after a failed collective, a rank whose counter did not move for this long is named
#: as stopped (killed, or hung as a whole process).
_CENSUS_SECONDS = 1.5
_BEAT_KEY = "heartbeat/"
#: ... and the number of collectives the rank has entered, so that a rank still alive but late
#: (stuck or slow in its own code) is told from ranks whose calls diverged.
_CALLS_KEY = "collectives/"
_DONE_KEY = "census-done/"
#: ... and, when the rank closes its group, why: empty for a plain close, else the error that
#: left the ``with`` block, so that a rank that stopped on purpose is not named as dead.
_LEFT_KEY = "left/"
#: The store's answers are awaited this long at most after a failed collective (and at close): a
#: store whose host hangs (rank 0 stopped, its machine cut off) never answers.
_STORE_SECONDS = 5.0


_T = TypeVar("_T")

#: The dtypes that the gloo backend's collectives take (its "Invalid scalar type" for others).
_GLOO_DTYPES = frozenset(
    {
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.complex32,  # (carried as pairs of float16, as complex64 as pairs of float32)
        torch.complex64,
        torch.complex128,
        torch.int8,
        torch.uint8,
        torch.int32,
        torch.int64,
        torch.bool,
    }
)

#: The hint of :class:`DataParallel`'s refusal of ranks whose models differ.
_SAME_MODEL = "every rank must run the same model on batches of the same sizes"


class DistributedError(RuntimeError):
    """A failure of the process group: a rank that died or hung, a rendezvous that failed."""


@dataclass(frozen=True)
class Launch:
    """Where this process stands in a launch: its ``rank`` among ``world_size`` processes and its
    ``local_rank`` on its machine (the GPU it uses)."""

    rank: int
    world_size: int
    local_rank: int

    def __post_init__(self) -> None:
        # (kept as the ints check_int returns: a NumPy integer kept as it was passed fit's
        # isinstance(world_size, int) test of the shards unseen)
        for name, low in (("world_size", 1), ("rank", 0), ("local_rank", 0)):
            object.__setattr__(self, name, check_int("Launch", name, getattr(self, name), low=low))
        if self.rank >= self.world_size:
            raise ValueError(
                f"Launch: rank must be in [0, {shown(self.world_size - 1)}] for world_size "
                f"{shown(self.world_size)}, got {shown(self.rank)}"
            )


def _env_int(environ: Mapping[str, str], name: str, low: int, high: int | None = None) -> int:
    """The integer in ``environ[name]``, in ``[low, high]``; the errors name the variable."""
    text = environ[name]
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"launch_from_env: environment variable {name} must be an integer, got {shown(text)}"
        ) from None
    if value < low or (high is not None and value > high):
        expected = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(
            f"launch_from_env: environment variable {name} must be an integer {expected}, got "
            f"{shown(text)}"
        )
    return value


def launch_from_env(environ: Mapping[str, str] | None = None) -> Launch | None:
    """The :class:`Launch` that ``torchrun`` describes in ``environ`` (default ``os.environ``),
    or ``None`` when ``WORLD_SIZE`` is not set (a plain, single-process run).

    Reads ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (default: ``RANK``).

    Raises:
        ValueError: ``RANK`` missing, or a value that is not an integer or out of range
            (``WORLD_SIZE`` >= 1, ``RANK`` in ``[0, WORLD_SIZE - 1]``, ``LOCAL_RANK`` >= 0),
            naming the variable.
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return None
    if "RANK" not in environ:
        raise ValueError(
            "launch_from_env: WORLD_SIZE is set but RANK is not; launch with torchrun, which "
            "sets both"
        )
    world_size = _env_int(environ, "WORLD_SIZE", 1)
    rank = _env_int(environ, "RANK", 0, world_size - 1)
    local_rank = _env_int(environ, "LOCAL_RANK", 0) if "LOCAL_RANK" in environ else rank
    return Launch(rank=rank, world_size=world_size, local_rank=local_rank)


def timeout_from_env(environ: Mapping[str, str] | None = None) -> float:
    """The timeout in seconds from ``MINIDL_DIST_TIMEOUT`` in ``environ`` (default ``os.environ``),
    or :data:`DEFAULT_TIMEOUT` when it is not set.

    Raises:
        ValueError: a value that is not a number in ``(0, MAX_TIMEOUT]``.
    """
    environ = os.environ if environ is None else environ
    text = environ.get(TIMEOUT_ENV, "")
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"timeout_from_env: {TIMEOUT_ENV} must be a number of seconds > 0, got {shown(text)}"
        ) from None
    return check_real(
        "timeout_from_env", TIMEOUT_ENV, value, low=0.0, low_open=True, high=MAX_TIMEOUT
    )


class ProcessGroup:
    """Joins the default ``torch.distributed`` process group of a :class:`Launch`.

    The rendezvous uses ``MASTER_ADDR`` and ``MASTER_PORT`` (``env://``, as ``torchrun`` sets
    them). The backend is gloo for CPU tensors and NCCL for CUDA tensors (each rank then uses GPU
    ``local_rank``). Every collective waits at most ``timeout`` seconds; a failed one raises a
    :class:`DistributedError` naming the ranks that stopped answering. Use it as a context
    manager, or call :meth:`close`.

    Args:
        launch: this process's rank, world size and local rank.
        device: where the model lives: ``"cpu"`` (gloo) or ``"cuda"`` (NCCL).
        timeout: seconds a collective or the start-up may wait for the others, in
            ``(0, MAX_TIMEOUT]``.

    Raises:
        ValueError: a timeout out of range, a device other than cpu and cuda, or cuda without
            a GPU for ``local_rank`` (checked before joining).
        DistributedError: the group could not be joined within ``timeout`` (rank 0, which
            hosts the store, waits that long for the others; another rank that finds no rank 0
            waits up to about twice as long, as torch's store client tries to connect twice,
            each time for ``timeout``).
    """

    #: Where this group's keys lie in the rendezvous store (:meth:`_key`): ``minidl/`` and rank
    #: 0's random number, agreed at the join.
    _prefix = "minidl/"

    #: The joins this process has made (each gloo's keys under its own count: see __init__).
    _joins = 0

    def __init__(
        self,
        launch: Launch,
        *,
        device: torch.device | str = "cpu",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not isinstance(launch, Launch):
            raise TypeError(f"ProcessGroup: launch must be a Launch, got {type(launch).__name__}")
        self.timeout = check_real(
            "ProcessGroup", "timeout", timeout, low=0.0, low_open=True, high=MAX_TIMEOUT
        )
        self.rank = launch.rank
        self.world_size = launch.world_size
        self.local_rank = launch.local_rank
        if not isinstance(device, torch.device | str):
            raise TypeError(
                f"ProcessGroup: device must be a torch.device or a str, got {type(device).__name__}"
            )
        try:
            device = torch.device(device)
        except RuntimeError:  # (torch's list of every device type it knows)
            raise ValueError(f"ProcessGroup: device must be cpu or cuda, got {device!r}") from None
        if device.type == "cuda":
            # (checked first: torch's set_device fails with an AttributeError of torch._C in a
            # build without CUDA, or an 'invalid device ordinal' without that GPU)
            if not torch.cuda.is_available():
                raise ValueError(
                    "ProcessGroup: device cuda needs a GPU, and torch.cuda.is_available() is "
                    "False here; use device='cpu' (gloo)"
                )
            if launch.local_rank >= torch.cuda.device_count():
                raise ValueError(
                    f"ProcessGroup: local_rank {launch.local_rank} has no GPU of its own: this "
                    f"machine has {torch.cuda.device_count()}; start at most that many processes "
                    "on it"
                )
            device = torch.device("cuda", launch.local_rank)
            torch.cuda.set_device(device)
        elif device.type != "cpu":
            raise ValueError(f"ProcessGroup: device must be cpu or cuda, got {device}")
        self.device = device
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_available():
            raise DistributedError("ProcessGroup: this torch build has no torch.distributed")
        if dist.is_initialized():
            raise DistributedError("ProcessGroup: a default process group is already initialised")
        unset = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if unset:  # (torch's env:// rendezvous failed at once, said as a timeout of the join)
            raise DistributedError(
                f"ProcessGroup: rank {shown(self.rank)} cannot join the {shown(self.world_size)} "
                f"ranks: the environment variable{'s' if len(unset) > 1 else ''} "
                f"{' and '.join(unset)} {'are' if len(unset) > 1 else 'is'} not set (the address "
                "and port of rank 0's rendezvous store; torchrun sets both)"
            )
        port = os.environ["MASTER_PORT"]
        if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            # (torch's int() of it failed at once, said as a timeout of the join)
            raise DistributedError(
                f"ProcessGroup: rank {shown(self.rank)} cannot join the {shown(self.world_size)} "
                f"ranks: the environment variable MASTER_PORT must be a port number in [1, "
                f"65535], got {shown(port)}"
            )
        address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        delta = timedelta(seconds=self.timeout)
        # Who hosts the rendezvous store, as torch's env:// rendezvous decides: the launcher,
        # where it shares its own store (TORCHELASTIC_USE_AGENT_STORE=True: torchrun, unless
        # TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1), else rank 0's process (ranks started by hand).
        self._launcher_hosts_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
        try:
            url = f"env://?rank={self.rank}&world_size={self.world_size}"
            store, _, _ = next(rendezvous(url, timeout=delta))
            # Each join of this process its own place in the store: torch names every default
            # group "0" again once the last is destroyed, so that gloo read the addresses of
            # the ranks' previous group there, and a rank joining while another was still in
            # its previous group failed (ranks join their groups in the same order).
            ProcessGroup._joins += 1
            dist.init_process_group(
                self.backend,
                store=PrefixStore(f"minidl-join/{ProcessGroup._joins}/", store),
                rank=self.rank,
                world_size=self.world_size,
                timeout=delta,
            )
        except (RuntimeError, ValueError) as error:
            raise DistributedError(
                f"ProcessGroup: rank {shown(self.rank)} could not join the {shown(self.world_size)} ranks at "
                f"{address} within {self.timeout:g} s: {_first_line(error)}"
            ) from error
        try:
            # The group's own place in the store, rank 0's random number (one broadcast): the
            # keys of an earlier group joined on the same store (torchrun's, kept by its
            # launcher; or rank 0's server, still referred to) would otherwise be read as this
            # group's, and a rank that died named as alive, or as one that closed its group.
            token = torch.tensor(secrets.randbits(63) if self.rank == 0 else 0, device=device)
            dist.broadcast(token, src=0)
        except RuntimeError as error:
            dist.destroy_process_group()
            raise DistributedError(
                f"ProcessGroup: rank {shown(self.rank)} could not join the {shown(self.world_size)} ranks at "
                f"{address} within {self.timeout:g} s: {_first_line(error)}"
            ) from error
        self._store: Store = store
        self._prefix = f"minidl/{int(token):016x}/"
        # The default process group this group joined: one destroyed behind its back
        # (torch.distributed.destroy_process_group()), or replaced since, is not its own. (A
        # weak reference: a strong one kept a destroyed group's gloo threads alive, to be torn
        # down as the interpreter ended, which aborted the process now and then.)
        self._world = weakref.ref(dist.group.WORLD)
        # Whether the store answered the last census (a store that did not is not waited for
        # again at close).
        self._store_answers = True
        # The collectives entered (the heartbeat publishes it), one count shared with copies.
        self._calls = [0]
        # A rank blocked in a collective still beats (the collective releases the GIL), so after
        # a failure the census can tell a dead or hung rank from a survivor still waiting. The
        # event is set at close() and shared with copies: the group is closed once it is set.
        self._stop_beating = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"minidl-heartbeat-{self.rank}", daemon=True
        )
        self._heartbeat.start()

    def _key(self, kind: str, rank: int) -> str:
        """The store's key of ``kind`` (:data:`_BEAT_KEY`, ...) for ``rank``, in this group's
        place."""
        return f"{self._prefix}{kind}{rank}"

    def _beat(self) -> None:
        count = 0
        published = -1
        while True:
            count += 1
            calls = self._calls[0]
            try:
                self._store.set(self._key(_BEAT_KEY, self.rank), str(count))
                if calls != published:
                    self._store.set(self._key(_CALLS_KEY, self.rank), str(calls))
                    published = calls
            except RuntimeError:
                return
            if self._stop_beating.wait(_BEAT_SECONDS):
                return

    # -- collectives ------------------------------------------------------------------------------

    def _joined(self) -> bool:
        """Whether torch's default process group is still the one this group joined (not
        destroyed by ``torch.distributed.destroy_process_group()`` outside :meth:`close`, nor
        replaced by one joined since)."""
        world = dist.group.WORLD if dist.is_initialized() else None
        return world is not None and world is self._world()

    def _check_open(self, what: str) -> None:
        """Refuse ``what`` on a closed group, or one whose default process group was destroyed
        outside :meth:`close` (torch's bare ``ValueError`` named neither the group nor minidl,
        and came after the gradients were scaled)."""
        if self._stop_beating.is_set():  # (closed, by this object or a copy sharing it)
            raise DistributedError(
                f"ProcessGroup: {what} was called on rank {shown(self.rank)} of {shown(self.world_size)} after "
                "close(); join a new ProcessGroup (and build the DataParallel on it)"
            )
        if not self._joined():
            raise DistributedError(
                f"ProcessGroup: {what} was called on rank {shown(self.rank)} of "
                f"{shown(self.world_size)} after its default process group was destroyed outside "
                "close() (by torch.distributed.destroy_process_group()); close this one and join "
                "a new ProcessGroup (and build the DataParallel on it)"
            )

    def _enter(self, what: str) -> None:
        """Refuse ``what`` on a closed group (:meth:`_check_open`); else count the collective
        about to start."""
        self._check_open(what)
        self._calls[0] += 1

    def _check_tensor(self, where: str, tensor: object, what: str = "tensor") -> None:
        """Refuse what is no tensor, or one of a dtype that gloo does not carry (int16, the
        unsigned integers past uint8, float8), before the collective is entered (torch's own
        error named neither the group nor the method; gloo's "Invalid scalar type" was
        reported as a failure of the group, after a census of the ranks). ``where`` names the
        caller, ``what`` the tensor."""
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{where}: {what} must be a torch.Tensor, got {type(tensor).__name__}")
        if self.backend == "gloo" and tensor.dtype not in _GLOO_DTYPES:
            raise TypeError(
                f"{where}: {what} is {tensor.dtype}, which the gloo backend does not carry (it "
                f"takes {', '.join(sorted(str(d) for d in _GLOO_DTYPES))}); convert it"
            )

    def _check_in_place(self, where: str, tensor: object, what: str = "tensor") -> None:
        """:meth:`_check_tensor`, and refuse a view that is not contiguous for a collective that
        writes its result into the tensor given: gloo reduces and broadcasts the storage from
        the view's first element on as if it were contiguous (wrong sums, elements outside the
        view overwritten, the ranks apart)."""
        self._check_tensor(where, tensor, what)
        assert isinstance(tensor, Tensor)
        if not tensor.is_contiguous():
            raise ValueError(
                f"{where}: {what} must be contiguous, got a view of shape {tuple(tensor.shape)} "
                f"with strides {tensor.stride()}; give tensor.contiguous() and copy the result "
                "back"
            )

    def all_reduce_(self, tensor: Tensor, what: str) -> Tensor:
        """Sum ``tensor`` over the ranks, in place, and return it; ``what`` names it in errors."""
        self._check_in_place("ProcessGroup.all_reduce_", tensor)
        self._enter(f"the all_reduce of {what}")
        try:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        except RuntimeError as error:
            raise self._failure(f"the all_reduce of {what}", error) from error
        return tensor

    def broadcast_(self, tensor: Tensor, what: str, source: int = 0) -> Tensor:
        """Overwrite ``tensor`` with rank ``source``'s, in place, and return it.

        Raises:
            TypeError, ValueError: ``tensor`` is no tensor, ``source`` no rank of the group
                (refused here, before the collective: gloo's refusal was reported as a failure
                of the group, after a census of the ranks).
        """
        self._check_in_place("ProcessGroup.broadcast_", tensor)
        source = check_int("ProcessGroup.broadcast_", "source", source, low=0)
        if source >= self.world_size:
            raise ValueError(
                f"ProcessGroup.broadcast_: source must be a rank in [0, "
                f"{shown(self.world_size - 1)}], got {shown(source)}"
            )
        self._enter(f"the broadcast of {what}")
        try:
            dist.broadcast(tensor, src=source)
        except RuntimeError as error:
            raise self._failure(f"the broadcast of {what}", error) from error
        return tensor

    def all_gather(self, tensor: Tensor, what: str) -> list[Tensor]:
        """Every rank's ``tensor``, in rank order."""
        self._check_tensor("ProcessGroup.all_gather", tensor)
        self._enter(f"the all_gather of {what}")
        gathered = [torch.empty_like(tensor) for _ in range(self.world_size)]
        try:
            dist.all_gather(gathered, tensor)
        except RuntimeError as error:
            raise self._failure(f"the all_gather of {what}", error) from error
        return gathered

    # -- failures ---------------------------------------------------------------------------------

    def _failure(self, what: str, error: BaseException) -> DistributedError:
        """Find out which ranks stopped, and say so."""

        def survey() -> tuple[list[int] | None, list[int], dict[int, str]]:
            missing = self._census()
            behind = self._behind() if missing == [] else []
            return missing, behind, self._left(missing) if missing else {}

        # (torch's store calls wait for the store's answer without a timeout: a rank 0 that
        # hangs, whose process hosts the store, would hold up the census for ever)
        found = _within(_CENSUS_SECONDS + _STORE_SECONDS, survey)
        missing, behind, left = (None, [], {}) if found is None else found
        self._store_answers = missing is not None  # (close() need not wait for it again)
        if missing is not None:
            # (each of its store calls awaited _STORE_SECONDS at most; a store that stops
            # answering clears _store_answers)
            self._finish_census(missing + behind)
        missing = None if missing is None else [rank for rank in missing if rank not in left]
        where = f"rank {self.rank} of {self.world_size}"
        if missing is None:
            diagnosis = (
                "the rendezvous store is unreachable too (or does not answer)"
                + self._store_silent()
            )
        elif missing or left:
            diagnoses = []
            if missing:
                names = ", ".join(str(rank) for rank in missing)
                rank_word = "rank" if len(missing) == 1 else "ranks"
                diagnoses.append(f"{rank_word} {names} stopped responding (died or hung)")
            plain = [rank for rank, reason in left.items() if not reason]
            if plain:
                names = ", ".join(str(rank) for rank in plain)
                rank_word, its = ("rank", "its") if len(plain) == 1 else ("ranks", "their")
                diagnoses.append(
                    f"{rank_word} {names} closed {its} group before reaching it (a run that "
                    "ended sooner there: fewer epochs, a collective called on some ranks only, "
                    "or an error handled there)"
                )
            diagnoses.extend(
                f"rank {rank} closed its group on an error of its own: {reason}"
                for rank, reason in left.items()
                if reason
            )
            diagnosis = "; ".join(diagnoses)
        elif behind:
            names = ", ".join(str(rank) for rank in behind)
            words = ("rank", "has", "its") if len(behind) == 1 else ("ranks", "have", "their")
            diagnosis = (
                f"{words[0]} {names} {words[1]} not reached it: still alive, but stuck or slower "
                f"than the timeout in {words[2]} own code before it"
            )
        else:
            diagnosis = "every rank is still alive (the ranks may have diverged in their calls)"
        if missing is not None and not self._store_answers:
            diagnosis += "; then the rendezvous store stopped answering" + self._store_silent()
        return DistributedError(
            f"{where}: {what} failed: {diagnosis} (collective timeout "
            f"{self.timeout:g} s). Cause: {_first_line(error)}"
        )

    def _store_silent(self) -> str:
        """What a store that does not answer tells of its host: the launcher (under
        ``torchrun``, which shares its store) or rank 0 (ranks started by hand) has stopped or
        hung. Rank 0 cannot say that of itself: the store is then a server in its own process,
        which is running this, so that its server or the connection to it has failed, or the
        process itself was held up past the store's bound."""
        if self._launcher_hosts_store:
            return ", so the launcher (torchrun's agent, which hosts it) has stopped or hung"
        if self.rank != 0:
            return ", so rank 0 (which hosts it) has stopped or hung"
        return (
            ", though this rank hosts it (a server in this process, as for ranks started by "
            "hand): the server or this rank's connection to it has failed, or this process was "
            "held up (stopped, or starved of CPU) past the wait for its answers"
        )

    def _left(self, ranks: Sequence[int]) -> dict[int, str]:
        """Of ``ranks`` (whose heartbeat stopped), those that closed their group, each with the
        reason it published (empty for a plain :meth:`close`)."""
        left = {}
        try:
            for rank in ranks:
                key = self._key(_LEFT_KEY, rank)
                if self._store.check([key]):
                    left[rank] = self._store.get(key).decode(errors="replace")
        except RuntimeError:
            return {}
        return left

    def _census(self) -> list[int] | None:
        """The other ranks whose heartbeat did not move for :data:`_CENSUS_SECONDS` and that did
        not finish a census of their own (a survivor that did may have left since, and stopped
        beating), or ``None`` if the store is unreachable."""
        others = [rank for rank in range(self.world_size) if rank != self.rank]

        def beats() -> dict[int, bytes | None]:
            keys = {rank: self._key(_BEAT_KEY, rank) for rank in others}
            return {
                rank: self._store.get(key) if self._store.check([key]) else None
                for rank, key in keys.items()
            }

        try:
            before = beats()
            time.sleep(_CENSUS_SECONDS)
            after = beats()
            stalled = [r for r in others if after[r] is None or after[r] == before[r]]
            return [r for r in stalled if not self._store.check([self._key(_DONE_KEY, r)])]
        except RuntimeError:
            return None

    def _behind(self) -> list[int]:
        """The other ranks that have entered fewer collectives than this one (as their heartbeat
        last published): alive, but not yet in the collective that failed here."""
        behind = []
        try:
            for rank in range(self.world_size):
                key = self._key(_CALLS_KEY, rank)
                known = rank != self.rank and self._store.check([key])
                if known and int(self._store.get(key)) < self._calls[0]:
                    behind.append(rank)
        except (RuntimeError, ValueError):
            return []
        return behind

    def _finish_census(self, missing: list[int]) -> None:
        """Say this rank's census is done; rank 0 waits for the census of every other rank than
        ``missing`` (those that stopped, and those still alive that have not reached the
        collective, which may never come) before it leaves: they may fail up to a timeout later,
        and it may host the store they read.

        Each store call is awaited :data:`_STORE_SECONDS` at most, on rank 0 too: it hosts the
        store when the ranks are started by hand, but under ``torchrun`` the launcher does, and
        a launcher that stops or hangs (or its machine cut off) would hold rank 0 here for ever.
        A call that does not answer (or fails) ends the wait and clears ``_store_answers``."""
        done = self._key(_DONE_KEY, self.rank)

        def say_done() -> bool:
            self._store.set(done, "1")
            return True

        if _within(_STORE_SECONDS, say_done) is None:
            self._store_answers = False
            return
        if self.rank != 0:
            return
        alive = [r for r in range(1, self.world_size) if r not in missing]
        deadline = time.monotonic() + self.timeout + _CENSUS_SECONDS + 2.0
        while alive and time.monotonic() < deadline:
            found = _within(_STORE_SECONDS, functools.partial(self._unfinished, alive))
            if found is None:
                self._store_answers = False
                return
            alive = found
            time.sleep(0.05)

    def _unfinished(self, ranks: Sequence[int]) -> list[int]:
        """Of ``ranks``, those whose census is not done yet."""
        return [rank for rank in ranks if not self._store.check([self._key(_DONE_KEY, rank)])]

    # -- life cycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Leave the process group (idempotent); its collectives then raise a
        :class:`DistributedError`.

        Closing it again (or a :func:`copy.copy` of it, which shares the membership) does
        nothing: a group joined since in this process stays joined. The other ranks, whose next
        collective then fails, name this rank as one that closed its group (leaving the ``with``
        block on an error, the error's type and first line), not as one that died.
        """
        self._close("")

    def _close(self, reason: str) -> None:
        if self._stop_beating.is_set():
            return
        self._stop_beating.set()
        # (before the group goes: the others' census reads it; a store that is gone with rank 0
        # raises, the others then find it unreachable)
        if self._store_answers:
            # (the store takes UTF-8 alone: a lone surrogate, as os.fsdecode gives for a file
            # name's undecodable bytes, is written escaped rather than refused)
            text = reason.encode("utf-8", "backslashreplace").decode()
            _within(_STORE_SECONDS, lambda: self._store.set(self._key(_LEFT_KEY, self.rank), text))
        if self._joined():  # (not a default group joined since another destroyed this one's)
            dist.destroy_process_group()

    def __getstate__(self) -> dict[str, Any]:
        """Refused, for pickle and ``copy.deepcopy``: the group is this process's membership
        (its store connection and heartbeat), which no other object or process can hold."""
        raise TypeError(
            "ProcessGroup cannot be pickled or copied with copy.deepcopy: it is this process's "
            "membership of the joined group; pickle or copy the model (a DataParallel's .model) "
            "and wrap it in a new DataParallel on the ProcessGroup of the process that uses it"
        )

    def __copy__(self) -> ProcessGroup:
        """A shallow copy (``copy.copy``), which shares the membership."""
        copied = object.__new__(ProcessGroup)
        copied.__dict__.update(self.__dict__)
        return copied

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        reason = ""
        if error is not None:
            reason = type(error).__name__
            if str(error).strip():
                reason = f"{reason}: {_first_line(error)}"[:300]
        self._close(reason)

    def __repr__(self) -> str:
        return (
            f"ProcessGroup(rank={self.rank}, world_size={self.world_size}, "
            f"backend={self.backend!r}, timeout={self.timeout:g})"
        )


def _within(seconds: float, ask: Callable[[], _T]) -> _T | None:
    """``ask()``, run in a daemon thread and awaited ``seconds`` at most; ``None`` if it has not
    returned by then (the thread stays blocked, in a call that may never return) or raised a
    ``RuntimeError`` (the store's errors)."""
    answers: list[_T] = []

    def run() -> None:
        with contextlib.suppress(RuntimeError):
            answers.append(ask())

    thread = threading.Thread(target=run, name="minidl-store-call", daemon=True)
    thread.start()
    thread.join(seconds)
    return answers[0] if answers and not thread.is_alive() else None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def broadcast_parameters(group: ProcessGroup, parameters: Iterable[Parameter]) -> None:
    """Copy rank 0's parameter values to every rank, in place.

    One ``broadcast`` when the values are views of one flat buffer (a
    :class:`~minidl.nn.Sequential`), else one on a temporary flat copy.
    """
    _check_group("broadcast_parameters", group)
    values = [p.data for p in _given_parameters("broadcast_parameters", parameters)]
    if not values:
        return
    flat = flat_buffer(values)
    if flat is not None:
        group.broadcast_(flat, "the initial parameters")
        return
    buffer = torch.cat([value.reshape(-1) for value in values])
    group.broadcast_(buffer, "the initial parameters")
    _scatter_back(buffer, values)


def broadcast_buffers(group: ProcessGroup, buffers: Sequence[Tensor]) -> None:
    """Copy rank 0's buffers (e.g. a batch norm's running statistics) to every rank, in place:
    one ``broadcast`` per dtype, on a temporary flat copy."""
    _check_group("broadcast_buffers", group)
    buffers = list(buffers)
    for index, buffer in enumerate(buffers):  # (before any collective: every rank refuses)
        group._check_tensor("broadcast_buffers", buffer, f"buffer {index}")
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for buffer in buffers:
        by_dtype.setdefault(buffer.dtype, []).append(buffer)
    for tensors in by_dtype.values():
        flat = torch.cat([tensor.reshape(-1) for tensor in tensors])
        group.broadcast_(flat, "the buffers")
        _scatter_back(flat, tensors)


def all_reduce_gradients(
    group: ProcessGroup, parameters: Iterable[Parameter], weight: float
) -> None:
    r"""Replace every gradient with :math:`\sum_k w_k\, g_k`, the sum over ranks of each rank's
    gradient times its ``weight`` (``1 / world_size`` averages), in place.

    One ``all_reduce`` on the flat gradient buffer when the gradients are views of one (a
    :class:`~minidl.nn.Sequential`); else one on a temporary flat copy, copied back.
    """
    _check_group("all_reduce_gradients", group)
    weight = check_real("all_reduce_gradients", "weight", weight)  # (finite)
    parameters = _given_parameters("all_reduce_gradients", parameters)
    for index, parameter in enumerate(parameters):
        group._check_tensor("all_reduce_gradients", parameter.grad, f"gradient {index}")
    grads = [p.grad for p in parameters]
    if not grads:
        return
    group._check_open("the all_reduce of the gradients")  # (before they are scaled)
    flat = flat_buffer(grads)
    if flat is not None:
        group.all_reduce_(flat.mul_(weight), "the gradients")
        return
    buffer = torch.cat([grad.reshape(-1) for grad in grads]).mul_(weight)
    group.all_reduce_(buffer, "the gradients")
    _scatter_back(buffer, grads)


def _given_parameters(where: str, parameters: Iterable[Parameter]) -> list[Parameter]:
    """``parameters`` as a list, each a minidl :class:`Parameter` (anything else failed in a
    bare ``AttributeError`` at its ``.data`` or ``.grad``, naming neither ``where`` nor the
    index)."""
    parameters = list(parameters)
    for index, parameter in enumerate(parameters):
        if not isinstance(parameter, Parameter):
            raise TypeError(
                f"{where}: parameters must be minidl Parameters (model.parameters()), got "
                f"{type(parameter).__module__}.{type(parameter).__qualname__} at index {index}"
            )
    return parameters


def _check_group(where: str, group: object) -> None:
    """Refuse a ``group`` that is no :class:`ProcessGroup`."""
    if not isinstance(group, ProcessGroup):
        raise TypeError(_not_a_group(where, group))


def _not_a_group(where: str, group: object) -> str:
    """The refusal of a ``group`` that is no :class:`ProcessGroup`, its type named with its
    module (torch's own ``ProcessGroup``, ``dist.group.WORLD``, was "got ProcessGroup")."""
    given = type(group)
    return (
        f"{where}: group must be a minidl.distributed.ProcessGroup (join one with "
        f"ProcessGroup(launch)), got {given.__module__}.{given.__qualname__}"
    )


def _scatter_back(buffer: Tensor, tensors: Sequence[Tensor]) -> None:
    offset = 0
    for tensor in tensors:
        size = tensor.numel()
        tensor.copy_(buffer[offset : offset + size].view(tensor.shape))
        offset += size


class ShardedBatches:
    """This rank's shard of every batch of a :class:`~minidl.data.BatchIterator`.

    Every rank iterates over the same batches (the same shuffled order, when their generators are
    seeded identically, which the batches of :meth:`DataParallel.shard` check) and keeps its own
    slice of each: of a batch of :math:`s` samples, rank :math:`k` of :math:`W` takes samples
    :math:`\\lfloor sk/W \\rfloor` to :math:`\\lfloor s(k+1)/W \\rfloor - 1`. So the ranks'
    shards, in rank order, make up the batch exactly, and every full batch splits into equal
    shards. After each batch, :attr:`share` is this rank's fraction of it (and ``1 /
    world_size`` again once the pass ends).

    Args:
        batches: the global batches, identical on every rank.
        rank: this rank, in ``[0, world_size)``.
        world_size: the number of ranks; it must divide ``batches.batch_size``.

    Raises:
        ValueError: a world size that does not divide the batch size, or a last batch that holds
            fewer samples than there are ranks: when built, and at the start of every pass (the
            batches' ``batch_size`` and ``drop_last`` may be set between two).

    Example:
        >>> from minidl.data import BatchIterator
        >>> batches = BatchIterator(data.train.x, data.train.y, batch_size=120, generator=generator)
        >>> for x_shard, y_shard in ShardedBatches(batches, rank=1, world_size=3):
        ...     pass  # 40 samples of every batch of 120
    """

    def __init__(self, batches: BatchIterator, rank: int, world_size: int) -> None:
        if not isinstance(batches, BatchIterator):
            raise TypeError(
                f"ShardedBatches: batches must be a BatchIterator, got {type(batches).__name__}"
            )
        world_size = check_int("ShardedBatches", "world_size", world_size)
        rank = check_int("ShardedBatches", "rank", rank, low=0)
        if rank >= world_size:
            raise ValueError(
                f"ShardedBatches: rank must be in [0, {shown(world_size - 1)}], got {shown(rank)}"
            )
        self.batches = batches
        self.rank = rank
        self.world_size = world_size
        self._check_sizes()
        #: This rank's fraction of the batch yielded last while a pass runs (``1 / world_size``
        #: before the first pass and once a pass ends, however it ends).
        self.share = 1.0 / world_size
        self._pass: object | None = None  # (the pass that set the share last)

    def _check_sizes(self) -> None:
        """Refuse a batch size that the world size does not divide, or a last batch of fewer
        samples than ranks (one would get an empty shard): when built, and at every pass (the
        batches' ``batch_size`` and ``drop_last`` may be set between two)."""
        batches, world_size = self.batches, self.world_size
        size = batches.batch_size
        if size % world_size:
            raise ValueError(
                f"ShardedBatches: the batch size {shown(size)} is not divisible by the world size "
                f"{shown(world_size)}; every rank takes 1/{shown(world_size)} of each batch, so "
                f"choose a batch size that is a multiple of {shown(world_size)}"
            )
        samples = int(batches.x.shape[0])
        last = short_last_batch(samples, size, world_size, batches.drop_last)
        if last:
            raise ValueError(
                f"ShardedBatches: the last batch of every epoch holds {last} samples ({samples} "
                f"samples, batches of {shown(size)}), fewer than the {shown(world_size)} ranks; "
                "choose another batch size or drop the last batch"
            )

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self._check_sizes()  # (before the pass's first batch is drawn)
        return self._shards()

    def _shards(self) -> Iterator[tuple[Tensor, Tensor]]:
        rank, world_size = self.rank, self.world_size
        this_pass = object()
        try:
            for x, y in self.batches:
                size = int(x.shape[0])
                start, stop = size * rank // world_size, size * (rank + 1) // world_size
                self.share = (stop - start) / size
                self._pass = this_pass
                self._drawn(this_pass)
                yield x[start:stop], y[start:stop]
        finally:
            # (an uneven last batch's share weighted every synchronize after the pass, in a
            # step of one's own after fit, say: equal shares outside a pass, as documented;
            # a pass left behind, whose iterator is dropped later, leaves a later one's share)
            if self._pass is this_pass:
                self.share = 1.0 / world_size
            self._ended(this_pass)

    def _drawn(self, this_pass: object) -> None:
        """Called as the pass ``this_pass`` yields a shard (its share set)."""

    def _ended(self, this_pass: object) -> None:
        """Called as the pass ``this_pass`` ends, however it ends."""


class _AgreedShards(ShardedBatches):
    """:class:`ShardedBatches` whose every pass first checks that the ranks' generators of the
    shuffles are in the same state (see :meth:`DataParallel.shard`)."""

    def __init__(
        self, batches: BatchIterator, rank: int, world_size: int, parallel: DataParallel
    ) -> None:
        super().__init__(batches, rank, world_size)
        self._parallel = parallel

    def _drawn(self, this_pass: object) -> None:
        # (the shard drawn last is the one a step of the loop trains on: its share weights
        # synchronize, whatever other shards' objects were made since)
        self._parallel._drawing = (self, this_pass)

    def _ended(self, this_pass: object) -> None:
        if self._parallel._drawing == (self, this_pass):
            self._parallel._drawing = None

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        batches = self.batches
        # (the sizes again: batch_size, shuffle or drop_last set on one rank since, its shards
        # would not make up the others' batches; and the order: one collective for both)
        checks: list[tuple[str, str, str | Tensor, str]] = [
            self._parallel._batches_agreement(batches, data=False)
        ]
        # (an order's digest on every rank, a constant one where nothing is drawn: a rank that
        # set shuffle since would gather another number of digests, which gloo answers by
        # aborting the process, not by the refusal of the first check below)
        generator = batches.generator
        state = (
            (torch.default_generator if generator is None else generator).get_state()
            if batches.shuffle
            else torch.empty(0, dtype=torch.uint8)
        )
        checks.append(
            (
                "order",
                "the state of the generator that draws this pass's order of the samples",
                _checksum([state]),
                "seed every rank's generator identically (fit(..., generator=torch."
                "Generator().manual_seed(seed))) and draw nothing else from it: from torch's "
                "global generator, a Dropout draws more numbers on a rank with a larger shard",
            )
        )
        self._parallel._agree_all(checks)
        return super().__iter__()


class DataParallel:
    """Keeps the replicas of ``model`` on the ranks of ``group`` identical while they train on
    their shards of every batch.

    Building it broadcasts rank 0's parameters, so every rank starts from the same point. Pass it
    to :func:`minidl.train.fit` as ``parallel=``: ``fit`` then iterates over :meth:`shard` of its
    batches and calls :meth:`synchronize` after every ``backward`` and :meth:`reduce_loss` at the
    end of every epoch. In a loop of one's own, call :meth:`synchronize` between
    ``model.backward`` and ``optimizer.step``.

    Args:
        model: the network (the same architecture on every rank).
        group: the joined :class:`ProcessGroup`.

    Raises:
        DistributedError: on every rank, ranks whose parameters, or whose buffers, differ from
            rank 0's in their shapes or dtypes (told apart: a tensor that is a parameter on one
            rank and a buffer on another), before either broadcast.
        TypeError: on every rank, a parameter or buffer of a dtype that the backend does not
            carry (gloo: int16, the unsigned integers past uint8, float8), before either
            broadcast: the model is left as it was.

    Example:
        >>> from minidl.data import BatchIterator
        >>> parallel = DataParallel(model, group)
        >>> for x_shard, y_shard in parallel.shard(BatchIterator(x, y, 120, generator=generator)):
        ...     optimizer.zero_grad()
        ...     loss = criterion(model(x_shard), y_shard)
        ...     model.backward_parameters(criterion.backward())
        ...     part = parallel.synchronize(loss)  # one all_reduce: the global batch's gradient
        ...     optimizer.step()
    """

    def __init__(self, model: Module, group: ProcessGroup) -> None:
        if not isinstance(model, Module):
            raise TypeError(
                f"DataParallel: model must be a minidl Module, got {given_module(model)}"
            )
        if not isinstance(group, ProcessGroup):
            raise TypeError(_not_a_group("DataParallel", group))
        self.model = model
        self.group = group
        #: The shards and the pass that drew the last shard, while that pass runs.
        self._drawing: tuple[ShardedBatches, object] | None = None
        named_buffers = list(model.named_buffers())
        #: The buffers agreed on last, and whether they were found carried by the backend
        #: since (see :meth:`_current_buffers`).
        self._buffers = [buffer for _, buffer in named_buffers]
        self._carried = False
        named_parameters = list(model.named_parameters())
        # The parameters and the buffers described apart (one list of both let a tensor that
        # is a parameter on one rank and a buffer of the same shape on another pass: the
        # broadcasts that follow then differ in size), and its modules (a Tanh on one rank and
        # a ReLU on another averaged the gradients of two networks), in one all_gather.
        self._agree_all(
            [
                *(
                    ("model", f"the shapes and dtypes of its {kind}", _shapes(tensors), _SAME_MODEL)
                    for kind, tensors in (
                        ("parameters", [parameter.data for _, parameter in named_parameters]),
                        ("buffers", self._buffers),
                    )
                ),
                (
                    "model",
                    "its modules and their settings, as its repr shows them",
                    without_addresses(repr(model)),
                    _SAME_MODEL + " (a module of one's own whose extra_repr shows a value of "
                    "the rank's own, a path or a device, differs too: leave it out of the repr)",
                ),
            ]
        )
        # Then what the backend cannot carry, before either broadcast (rank 0's parameters
        # were on every rank, the model changed, when broadcast_buffers refused a buffer);
        # after the agreement, so that every rank refuses it, or none.
        for name, parameter in named_parameters:
            group._check_tensor("DataParallel", parameter.data, f"parameter {name!r}")
        self._check_carried("DataParallel", named_buffers)
        self._carried = True
        broadcast_parameters(group, model.parameters())
        broadcast_buffers(group, self._buffers)

    def _check_carried(self, where: str, named_buffers: Sequence[tuple[str, Tensor]]) -> None:
        """Refuse, naming ``where``, buffers of a dtype that the backend does not carry (gloo:
        int16, the unsigned integers past uint8, float8), before any broadcast of them."""
        for name, buffer in named_buffers:
            self.group._check_tensor(where, buffer, f"buffer {name!r}")

    def _agree(
        self,
        what: str,
        contents: str,
        description: str | Tensor,
        hint: str = _SAME_MODEL,
    ) -> None:
        """Check that every rank has the same ``description`` of its ``what`` (one
        ``all_gather`` of a digest of it, or of ``description`` itself when it is a 0-dim
        int64 digest): ranks that differ would otherwise join collectives of other sizes, which
        gloo ends by aborting the processes, or train on shards that overlap.

        Raises:
            DistributedError: on every rank, naming the ranks whose ``what`` differs.
        """
        self._agree_all([(what, contents, description, hint)])

    def _agree_all(self, checks: Sequence[tuple[str, str, str | Tensor, str]]) -> None:
        """:meth:`_agree` of several ``(what, contents, description, hint)``, in one
        ``all_gather`` of their digests; the first that differs is named."""
        digests = []
        for _, _, description, _ in checks:
            if isinstance(description, str):
                digest = hashlib.blake2b(description.encode(), digest_size=8).digest()
                description = torch.tensor(int.from_bytes(digest, "little", signed=True))
            digests.append(description.reshape(1))
        mine = torch.cat(digests).to(self.group.device)
        names = " and ".join(dict.fromkeys(what.split(" ", maxsplit=1)[0] for what, *_ in checks))
        gathered = self.group.all_gather(mine, f"the digests of the {names}")
        for index, (what, contents, _, hint) in enumerate(checks):
            differ = [
                rank
                for rank, other in enumerate(gathered)
                if not torch.equal(other[index], gathered[0][index])
            ]
            if differ:
                raise DistributedError(
                    f"DataParallel: the {what} ({contents}) of ranks {differ} differs from rank "
                    "0's; " + hint
                )

    def _batches_agreement(
        self, batches: BatchIterator, data: bool = True
    ) -> tuple[str, str, str | Tensor, str]:
        """The check of :meth:`_agree_all` that every rank has ``batches`` alike: their
        number of samples, batch size, shuffle and ``drop_last``, and with ``data`` a digest of
        the samples (read in full: once a call of :meth:`shard`, not at every pass)."""
        sizes = f"{batches.x.shape[0]} {batches.batch_size} {batches.shuffle} {batches.drop_last}"
        contents = "the number of samples, the batch size, shuffle, drop_last"
        if not data:
            return ("batches", contents, sizes, "every rank must run the same model on batches "
                    "of the same sizes (set batch_size, shuffle and drop_last alike on every "
                    "rank)")  # fmt: skip
        digest = int(_checksum([batches.x, batches.y]))
        return (
            "batches",
            contents + " and a digest of the samples and their targets",
            f"{sizes} {digest}",
            "every rank must run the same model on the same data in batches of the same sizes",
        )

    @property
    def rank(self) -> int:
        """This process's rank in the group, in ``[0, world_size)``."""
        return self.group.rank

    @property
    def world_size(self) -> int:
        """The number of processes in the group."""
        return self.group.world_size

    def shard(self, batches: BatchIterator) -> ShardedBatches:
        """This rank's :class:`ShardedBatches` of ``batches``; :meth:`synchronize` then weights
        the gradients by this rank's share of the current batch.

        The ranks' batches must agree on the samples and their targets, the batch size,
        ``shuffle`` and ``drop_last`` (checked here, with one pass over the data for its digest;
        a rank that shuffled alone would join the check below alone, and every rank would wait
        out the timeout); at the start of every pass (one ``all_gather``, entered by every
        rank as it begins the pass: a rank iterating alone waits out the timeout) again on the
        batch size and ``drop_last``, which may be set between passes, and, when they shuffle,
        on the state of the generator that draws the pass's order: a rank whose
        generator was seeded otherwise, or that drew other numbers from it (torch's global
        generator, from which a ``Dropout`` draws more on a rank with a larger shard), would take
        its slice of another order, so that some samples were used twice and others never.

        Raises:
            DistributedError: on every rank, naming the ranks whose batches or generator state
                differ from rank 0's.
        """
        if not isinstance(batches, BatchIterator):
            raise TypeError(
                f"DataParallel.shard: batches must be a BatchIterator, got {type(batches).__name__}"
            )
        # (agreed first, so that every rank meets ShardedBatches' checks with the same sizes)
        # The samples too (a digest): ranks given other data would each train on slices of
        # their own, and stay identical while learning from neither data set.
        self._agree_all([self._batches_agreement(batches)])
        return _AgreedShards(batches, self.rank, self.world_size, self)

    def synchronize(self, loss: Tensor) -> Tensor:
        """Turn every rank's gradients into the global batch's (one ``all_reduce``) and return
        this rank's part of the global batch's loss, ``share * loss``.

        Call it after ``model.backward`` and before ``optimizer.step``. The share is that of
        the shard drawn last from a pass over :meth:`shard`'s batches, while that pass runs
        (draw them as the loop trains on them: a list of them, made before the loop, ends its
        pass first, and weights every shard equally, an uneven last batch's too). Outside a
        pass (without one, or after one, as after ``fit``), every rank is assumed to hold an
        equal share. A model with buffers (a batch norm's
        running statistics) also gets rank 0's, as PyTorch's ``DistributedDataParallel`` does:
        each rank's forward updated them from its own shard.

        Raises:
            TypeError: buffers registered since of a dtype that the backend does not carry,
                before the gradients are reduced (they, and the buffers this keeps, are left as
                they were).
        """
        if not isinstance(loss, Tensor):  # (refused before the gradients are reduced)
            raise TypeError(
                "DataParallel.synchronize: loss must be a torch.Tensor (the loss of this rank's "
                f"shard), got {type(loss).__name__}"
            )
        drawing = self._drawing
        share = drawing[0].share if drawing is not None else 1.0 / self.world_size
        # (buffers that the backend cannot carry are refused here, before the gradients are
        # reduced; checked once for every set of buffers, not at every step)
        buffers = self._current_buffers("DataParallel.synchronize")
        all_reduce_gradients(self.group, self.model.parameters(), share)
        if buffers:
            broadcast_buffers(self.group, buffers)
        return loss * share

    def _current_buffers(self, broadcaster: str | None = None) -> list[Tensor]:
        """The model's buffers: those of the last call, or, if the model holds others since
        (``model.to(...)`` replaces them, as ``register_buffer`` does), those, once every rank
        agrees on their shapes and dtypes (one ``all_gather``), so that the ranks go on
        broadcasting and checking the tensors the model computes with. (Every rank must replace
        them at the same step, as it moves its model alike: a rank alone would meet the others
        in another collective, which the group's timeout ends.)

        With ``broadcaster`` (the caller, which broadcasts them), buffers of a dtype that the
        backend does not carry are refused in its name, before they are kept: each set of
        buffers is checked once, not at every step.
        """
        named = list(self.model.named_buffers())
        buffers = [buffer for _, buffer in named]
        known = self._buffers
        replaced = len(buffers) != len(known) or any(
            new is not old for new, old in zip(buffers, known, strict=True)
        )
        if replaced:
            self._agree(
                "buffers",
                "the shapes and dtypes of the model's buffers, replaced since the last step",
                _shapes(buffers),
            )
        carried = self._carried and not replaced
        if broadcaster is not None and not carried:
            self._check_carried(broadcaster, named)  # (raises before anything is kept)
            carried = True
        self._carried = carried
        if replaced:
            self._buffers = buffers
        return buffers

    def reduce_loss(self, total: Tensor) -> Tensor:
        """Sum ``total`` (e.g. an epoch's sum of :meth:`synchronize`'s losses) over the ranks,
        in place, and return it."""
        # (refused in this method's name: the group's named ProcessGroup.all_reduce_)
        self.group._check_in_place("DataParallel.reduce_loss", total, "total")
        return self.group.all_reduce_(total, "the epoch's loss")

    def check_in_sync(self) -> None:
        """Check that every rank holds bit-identical parameter values and buffers (one
        ``all_gather`` of two checksums).

        Raises:
            DistributedError: the ranks whose parameters or buffers differ from rank 0's.
        """
        checksums = torch.stack(
            [parameter_checksum(self.model.parameters()), _checksum(self._current_buffers())]
        ).to(self.group.device)
        sums = self.group.all_gather(checksums, "the parameter checksums")
        for index, what in enumerate(("parameters", "buffers")):
            differ = [rank for rank, other in enumerate(sums) if other[index] != sums[0][index]]
            if differ:
                raise DistributedError(
                    f"DataParallel: the {what} of ranks {differ} differ from rank 0's "
                    f"(checksums {[int(s[index]) for s in sums]})"
                )


def parameter_checksum(parameters: Iterable[Parameter]) -> Tensor:
    """A 0-dim int64 checksum of the bits of every parameter value: equal values give equal
    checksums, and any change of any bit gives another (but with probability 2**-64): the first
    8 bytes of a BLAKE2b digest of the values' bytes, dtypes and shapes, in order.

    Raises:
        TypeError: what is not an iterable of minidl Parameters.
    """
    given = _given_parameters("parameter_checksum", parameters)
    return _checksum([parameter.data for parameter in given])


def _shapes(tensors: Sequence[Tensor]) -> str:
    """The shapes and dtypes of ``tensors``, in order: what the ranks agree on before they
    join collectives of their sizes."""
    return ";".join(f"{tuple(tensor.shape)} {tensor.dtype}" for tensor in tensors)


def _checksum(tensors: Sequence[Tensor]) -> Tensor:
    """:func:`parameter_checksum` of any tensors."""
    digest = hashlib.blake2b(digest_size=8)
    for tensor in tensors:
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{value.dtype}{tuple(value.shape)};".encode())
        if value.numel():
            size = value.numel() * value.element_size()
            digest.update((ctypes.c_char * size).from_address(value.data_ptr()))
    return torch.tensor(int.from_bytes(digest.digest(), "little", signed=True))
