"""minidl against PyTorch eager, side by side in one process (make bench).

Workloads (each a minidl version and a PyTorch eager twin on identical data and initial
weights, timed alternately, several repetitions, medians and their ratio; D, minutes long, runs
each side once per setting):

- A: the paper's network 2-25-25-25-2, batch 100, 1 thread, written as a user writes it: a loop
  over minidl's BatchIterator calling the model, the loss, ``backward`` and ``optimizer.step()``.
  Beside it, the same loop inside ``torch.inference_mode()`` (as a user may write it too).
- B: the same through :func:`minidl.train.fit`. Beside A and B, a step written by hand without
  modules (``benchmarks/handwritten.py``): what this machine allows for the network.
- C: width 1024, batch 1024, three hidden layers, 2 threads, with the matrix-products-only
  floor (the step's 11 matrix products alone, into preallocated outputs) beside it, and the
  hand-written step on this network (what the step's other operations cost at best); the
  resident memory of minidl, PyTorch and the floor, measured in a fresh process (``--only M``:
  that alone).
- D: the full ``minidl reproduce`` run against the same experiments written with PyTorch eager
  (``benchmarks/torch_reproduce.py``), both in one process and both in as many worker
  processes as ``minidl reproduce --jobs`` trains in (``--jobs``, default the CPUs available,
  bounds it; minidl starts no more workers than it has stacks of rows), so that each ratio
  compares equal resources.

It also counts the tensor operations of one training step (torch.profiler). It prints a table;
a full run (A, C and D, not ``--quick``) writes ``benchmarks/results.json``, which the README's
table comes from, and a partial or quick one writes only to ``--json PATH``. No test asserts
timings: machines are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

# minidl (and the hand-written step, which uses it) is imported where it is used, so that C's
# memory children of PyTorch and of the floor import torch alone, as a PyTorch program does.
if TYPE_CHECKING:
    from minidl import nn as mnn

HERE = Path(__file__).resolve().parent
PAPER_SIZES = (2, 25, 25, 25, 2)
WIDE_SIZES = (2, 1024, 1024, 1024, 2)


# -- twins ----------------------------------------------------------------------------------------


#: A network's parameters as plain tensors: ``(weight, bias)`` of each ``Linear`` layer.
Weights = list[tuple[torch.Tensor, torch.Tensor]]


def minidl_model(sizes: tuple[int, ...], seed: int) -> mnn.Sequential:
    from minidl import nn as mnn

    torch.manual_seed(seed)
    return mnn.mlp(sizes, "tanh")


def _torch_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.nn.Linear:
    """A ``torch.nn.Linear`` holding copies of ``weight`` and ``bias``."""
    linear = torch.nn.Linear(
        weight.shape[1],
        weight.shape[0],
        bias=bias is not None,
        dtype=weight.dtype,
        device=weight.device,
    )
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def torch_twin(model: mnn.Sequential) -> torch.nn.Module:
    """A torch.nn copy of a minidl network of Linear and Tanh layers (same weights), built as a
    PyTorch user builds it (``minidl.interop.to_torch`` would import modules, sympy among them,
    that a PyTorch program does not, and C's memory would charge them to PyTorch)."""
    from minidl import nn as mnn

    layers: list[torch.nn.Module] = []
    for layer in model:
        if isinstance(layer, mnn.Tanh):
            layers.append(torch.nn.Tanh())
            continue
        if not isinstance(layer, mnn.Linear):
            raise TypeError(f"torch_twin: expected Linear and Tanh layers, got {layer!r}")
        layers.append(
            _torch_linear(layer.weight.data, None if layer.bias is None else layer.bias.data)
        )
    return torch.nn.Sequential(*layers)


def torch_tanh_mlp(weights: Weights) -> torch.nn.Sequential:
    """The torch.nn network of ``Linear`` layers holding copies of ``weights`` with a ``Tanh``
    between each two: :func:`torch_twin` of an ``mlp(sizes, "tanh")`` with these weights, made
    without minidl."""
    layers: list[torch.nn.Module] = []
    for index, (weight, bias) in enumerate(weights):
        if index:
            layers.append(torch.nn.Tanh())
        layers.append(_torch_linear(weight, bias))
    return torch.nn.Sequential(*layers)


def wide_weights() -> Weights:
    """C's initial weights: those of minidl's ``mlp(WIDE_SIZES, "tanh")`` from seed 0."""
    from minidl import nn as mnn

    model = minidl_model(WIDE_SIZES, seed=0)
    return [
        (layer.weight.data, layer.bias.data)  # type: ignore[union-attr]
        for layer in model
        if isinstance(layer, mnn.Linear)
    ]


# -- timing ---------------------------------------------------------------------------------------


def paired_medians(
    runs: dict[str, Callable[[], None]],
    repetitions: int,
    warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds of each callable, timed alternately so that noise hits all alike, by
    ``clock`` (wall time by default; ``time.thread_time``, the CPU time of this thread, leaves
    out the time other processes take the CPU from a one-thread run)."""
    times = paired_times(runs, repetitions, warmup, clock)
    return {name: statistics.median(values) for name, values in times.items()}


def paired_times(
    runs: dict[str, Callable[[], None]],
    repetitions: int,
    warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """The seconds of each callable in each repetition, timed as :func:`paired_medians` says."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repetitions):
        for name, run in runs.items():
            start = clock()
            run()
            times[name].append(clock() - start)
    return times


def ratio_range(numerators: list[float], denominators: list[float]) -> list[float]:
    """The lowest and the highest ratio of the times of one repetition (timed alternately, so
    that a moment of noise hits both): how far a median's ratio may be from a target and still
    be the noise's."""
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    return [min(ratios), max(ratios)]


def count_ops(step: Callable[[], None], most_calls: int = 10) -> int:
    """Top-level aten operations issued by one call of ``step`` once it issues as many in two
    calls in a row (its steady state: a fresh minidl chain issues 56, 41, 40, then 35 in its
    first calls, as it plans its calls); at most ``most_calls`` calls are counted."""
    from torch.profiler import ProfilerActivity, profile

    # (the profiler's library prints two lines at each start and stop otherwise, between the
    # table's lines; read when a profile starts, and a user's own setting stays)
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    step()
    counts: list[int] = []
    while len(counts) < 2 or counts[-1] != counts[-2]:
        if len(counts) == most_calls:
            raise RuntimeError(f"count_ops: no steady count in {most_calls} calls: {counts}")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        events = [e for e in prof.events() if e.name.startswith("aten::")]
        top = [
            e for e in events if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")
        ]
        counts.append(len(top))
    return counts[-1]


# -- workloads A and B ----------------------------------------------------------------------------


@dataclasses.dataclass
class SmallLoops:
    """Workload A and B's loops over the paper's network, each training ``epochs`` epochs of
    batches of 100 drawn from ``generator``: minidl's ``model`` (A, A in inference mode, B
    through ``fit``), its PyTorch twin ``twin`` and the hand-written step ``hand``, all from
    the same initial weights."""

    loops: dict[str, Callable[[], None]]
    model: Any
    criterion: Any
    optimizer: Any
    twin: torch.nn.Module
    twin_criterion: torch.nn.Module
    twin_optimizer: torch.optim.Optimizer
    hand: Any
    x: torch.Tensor
    y: torch.Tensor
    generator: torch.Generator
    steps: int


def small_loops(epochs: int) -> SmallLoops:
    """The loops timed by :func:`workload_small` (see :class:`SmallLoops`)."""
    from handwritten import HandwrittenStep
    from minidl import optim as moptim
    from minidl.data import BatchIterator, make_disk_data
    from minidl.nn import CrossEntropyLoss
    from minidl.train import fit

    data = make_disk_data(seed=0)
    model = minidl_model(PAPER_SIZES, seed=0)
    twin = torch_twin(model)
    criterion = CrossEntropyLoss()
    optimizer = moptim.SGD(model.parameters(), lr=1e-2)
    twin_criterion = torch.nn.CrossEntropyLoss()
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=1e-2)
    x, y = data.train.x, data.train.y
    generator = torch.Generator().manual_seed(0)
    batches = BatchIterator(x, y, 100, generator=generator)
    steps = epochs * len(batches)

    def user_loop() -> None:
        for _ in range(epochs):
            for x_batch, y_batch in batches:
                optimizer.zero_grad()
                criterion(model(x_batch), y_batch)
                model.backward(criterion.backward())
                optimizer.step()

    def user_loop_inference_mode() -> None:
        with torch.inference_mode():
            user_loop()

    def fit_loop() -> None:
        fit(model, criterion, optimizer, x, y, epochs=epochs, generator=generator)

    def torch_loop() -> None:
        for _ in range(epochs):
            for x_batch, y_batch in batches:
                twin_optimizer.zero_grad()
                twin_criterion(twin(x_batch), y_batch).backward()
                twin_optimizer.step()

    with torch.inference_mode():
        hand = HandwrittenStep(minidl_model(PAPER_SIZES, seed=0), lr=1e-2, batch=100)

    def hand_loop() -> None:
        with torch.inference_mode():
            for _ in range(epochs):
                for x_batch, y_batch in batches:
                    hand.step(x_batch, y_batch)

    loops = {
        "A minidl": user_loop,
        "A in inference mode": user_loop_inference_mode,
        "B minidl fit": fit_loop,
        "PyTorch eager": torch_loop,
        "hand-written": hand_loop,
    }
    return SmallLoops(
        loops,
        model,
        criterion,
        optimizer,
        twin,
        twin_criterion,
        twin_optimizer,
        hand,
        x,
        y,
        generator,
        steps,
    )


def workload_small(repetitions: int, epochs_per_rep: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    small = small_loops(epochs_per_rep)
    model, criterion, optimizer = small.model, small.criterion, small.optimizer
    twin, twin_criterion, twin_optimizer = small.twin, small.twin_criterion, small.twin_optimizer
    hand, steps = small.hand, small.steps
    times = paired_times(small.loops, repetitions)
    per_step = {name: statistics.median(values) / steps * 1e6 for name, values in times.items()}
    torch_times = times["PyTorch eager"]
    x_batch, y_batch = small.x[:100], small.y[:100]

    def minidl_step() -> None:
        optimizer.zero_grad()
        criterion(model(x_batch), y_batch)
        model.backward(criterion.backward())
        optimizer.step()

    def torch_step() -> None:
        twin_optimizer.zero_grad()
        twin_criterion(twin(x_batch), y_batch).backward()
        twin_optimizer.step()

    def hand_step() -> None:
        with torch.inference_mode():
            hand.step(x_batch, y_batch)

    return {
        "us_per_step": per_step,
        "ratio_A": per_step["PyTorch eager"] / per_step["A minidl"],
        "ratio_A_inference_mode": per_step["PyTorch eager"] / per_step["A in inference mode"],
        "ratio_B": per_step["PyTorch eager"] / per_step["B minidl fit"],
        "ratio_hand_written": per_step["PyTorch eager"] / per_step["hand-written"],
        # (PyTorch's time over each one's, repetition by repetition: lowest and highest)
        "ratio_ranges": {
            "A": ratio_range(torch_times, times["A minidl"]),
            "A in inference mode": ratio_range(torch_times, times["A in inference mode"]),
            "B": ratio_range(torch_times, times["B minidl fit"]),
            "hand-written": ratio_range(torch_times, times["hand-written"]),
        },
        "ops_per_step": {
            "minidl": count_ops(minidl_step),
            "PyTorch eager": count_ops(torch_step),
            "hand-written": count_ops(hand_step),
        },
    }


# -- workload C -----------------------------------------------------------------------------------


def wide_setup(framework: str, weights: Weights | None = None) -> Callable[[], None]:
    """One training step of the wide network, for ``framework`` in minidl / torch / hand / floor.

    ``weights`` (torch and floor only): C's initial weights (:func:`wide_weights`), given so
    that a process measuring PyTorch's or the floor's memory need not import minidl to make
    them; by default they are made here.
    """
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1024, WIDE_SIZES[0], generator=generator)
    y = torch.randint(0, WIDE_SIZES[-1], (1024,), generator=generator)
    if framework in ("minidl", "hand"):
        if weights is not None:
            raise ValueError(f"wide_setup: {framework} makes its own weights, got weights")
        return _wide_minidl_setup(framework, x, y)
    weights = wide_weights() if weights is None else weights
    if framework == "torch":
        twin = torch_tanh_mlp(weights)
        twin_criterion = torch.nn.CrossEntropyLoss()
        twin_optimizer = torch.optim.SGD(twin.parameters(), lr=1e-3)

        def torch_step() -> None:
            twin_optimizer.zero_grad()
            twin_criterion(twin(x), y).backward()
            twin_optimizer.step()

        return torch_step
    if framework != "floor":
        raise ValueError(
            f"wide_setup: framework must be minidl, torch, hand or floor, got {framework!r}"
        )
    # The floor: the 11 matrix products of a step (4 forward, 4 weight gradients, 3 input
    # gradients) into preallocated outputs, nothing else.
    matrices = [weight for weight, _ in weights]
    # (zeros, written at the set-up as minidl's and PyTorch's are: empty ones became resident
    # at the first step, and C's memory counted them as held between steps)
    activations = [x] + [torch.zeros(1024, w.shape[0]) for w in matrices]
    weight_grads = [torch.zeros_like(w) for w in matrices]
    input_grads = [torch.zeros(1024, w.shape[1]) for w in matrices]

    def floor_step() -> None:
        with torch.inference_mode():
            for i, w in enumerate(matrices):
                torch.mm(activations[i], w.t(), out=activations[i + 1])
            grad = activations[-1]
            for i in reversed(range(len(matrices))):
                torch.mm(grad.t(), activations[i], out=weight_grads[i])
                if i > 0:
                    torch.mm(grad, matrices[i], out=input_grads[i])
                    grad = input_grads[i]

    return floor_step


def _wide_minidl_setup(framework: str, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """:func:`wide_setup` of minidl or of the hand-written step."""
    from handwritten import HandwrittenStep
    from minidl import nn as mnn
    from minidl import optim as moptim

    model = minidl_model(WIDE_SIZES, seed=0)
    if framework == "minidl":
        criterion = mnn.CrossEntropyLoss()
        optimizer = moptim.SGD(model.parameters(), lr=1e-3)

        def step() -> None:
            # The input is data: like PyTorch's autograd and the floor, no gradient for it.
            with torch.inference_mode():
                optimizer.zero_grad()
                criterion(model(x), y)
                model.backward_parameters(criterion.backward())
                optimizer.step()

        return step
    if framework == "hand":
        # The same step written by hand: every buffer made once, the bias in the products, the
        # gradients written rather than accumulated (benchmarks/handwritten.py).
        with torch.inference_mode():
            hand = HandwrittenStep(model, lr=1e-3, batch=1024)

        def hand_step() -> None:
            with torch.inference_mode():
                hand.step(x, y)

        return hand_step
    raise AssertionError(framework)  # (minidl or hand, checked by wide_setup)


MEMORY_STEPS = 5


def _memory_mib(field: str) -> float | None:
    """``VmRSS`` or ``VmHWM`` of this process from /proc/self/status (MiB), or None without it."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    return None


def _peak_mib() -> float:
    """This process's peak resident memory (MiB): ``VmHWM``, else ``ru_maxrss``.

    ``VmHWM`` belongs to the process's own address space, new at ``exec``; Linux's ``ru_maxrss``
    keeps across ``exec`` the high-water mark of the address space it replaced (the parent's,
    as of the fork), so a child of a large process would report at least the parent's size.
    """
    peak = _memory_mib("VmHWM")
    if peak is not None:
        return peak
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes there, else KiB


def memory_child(framework: str, steps: int, weights_file: str | None = None) -> None:
    """In a fresh process: resident memory around ``steps`` wide steps, printed as JSON (MiB).

    ``rss`` is ``VmRSS`` after the imports, after the set-up, after the first step and after the
    last one (None without /proc), ``peak`` the high-water mark of the whole process,
    ``imports_minidl`` whether the process imported minidl. ``weights_file`` (PyTorch and the
    floor): C's initial weights, saved by :func:`peak_memory_mib`, so that these processes
    import torch alone, as a PyTorch program does; minidl's imports it, as a minidl program does.
    """
    torch.set_num_threads(2)
    if weights_file is None:
        import minidl.nn
        import minidl.optim  # noqa: F401
    rss = {"after imports": _memory_mib("VmRSS")}
    weights = None if weights_file is None else torch.load(weights_file, weights_only=True)
    step = wide_setup(framework, weights)
    del weights  # (the network holds its own copies, or the floor these tensors)
    rss["after set-up"] = _memory_mib("VmRSS")
    step()
    rss["after first step"] = _memory_mib("VmRSS")
    for _ in range(steps - 1):
        step()
    rss["after last step"] = _memory_mib("VmRSS")
    imports_minidl = "minidl" in sys.modules
    print(json.dumps({"rss": rss, "peak": _peak_mib(), "imports_minidl": imports_minidl}))


#: glibc's settings for the second measurement: every block of 64 KiB or more its own mapping,
#: returned to the system when freed, so that resident memory follows the live tensors.
RETURN_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _measure_in_fresh_process(
    framework: str, steps: int, env: dict[str, str], weights_file: str | None = None
) -> dict[str, Any]:
    """:func:`memory_child`'s readings, from a new interpreter (so that no other process's peak
    counts) with environment ``env``."""
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); "
        f"from run import memory_child; memory_child({framework!r}, {steps}, {weights_file!r})"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env
    )
    if child.returncode != 0:
        raise RuntimeError(f"C's memory ({framework}): the child failed:\n{child.stderr[-2000:]}")
    measured: dict[str, Any] = json.loads(child.stdout.splitlines()[-1])
    return measured


def peak_memory_mib(framework: str, steps: int = MEMORY_STEPS) -> dict[str, Any]:
    """Resident memory of ``steps`` wide steps of ``framework`` (minidl, torch or floor), each
    measured in a fresh process, in MiB.

    ``peak_mib``: the process's peak (its imports included: torch's, and minidl's in minidl's
    process only, ``imports_minidl``) with glibc's default settings, as a user's program runs. The others come from a second process in which
    glibc returns freed memory to the system at once (:data:`RETURN_FREED_MEMORY`; with the
    defaults, freed blocks stay in the process or not depending on the history of allocations,
    which moves resident memory by 10 to 20 MiB from one step to the next), so that resident
    memory follows the live tensors: ``live_peak_mib``, its peak; ``held_between_steps_mib``,
    what the process holds after the last step beyond what it held after the set-up (model, data,
    optimizer), e.g. minidl's activations kept for a second ``backward`` or PyTorch's gradients;
    ``growth_over_steps_mib``, after the last step against after the first (0: the steps do not
    accumulate memory). The last two are None where /proc is missing. ``rss_mib`` gives the
    readings of both processes.
    """
    import tempfile

    default = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    with tempfile.TemporaryDirectory() as folder:
        weights_file = None
        if framework != "minidl":
            weights_file = str(Path(folder) / "weights.pt")
            torch.save(wide_weights(), weights_file)
        user = _measure_in_fresh_process(framework, steps, default, weights_file)
        live = _measure_in_fresh_process(
            framework, steps, {**default, **RETURN_FREED_MEMORY}, weights_file
        )
    rss = live["rss"]

    def difference(later: str, earlier: str) -> float | None:
        if rss[later] is None or rss[earlier] is None:
            return None
        return float(rss[later] - rss[earlier])

    return {
        "peak_mib": user["peak"],
        "live_peak_mib": live["peak"],
        "held_between_steps_mib": difference("after last step", "after set-up"),
        "growth_over_steps_mib": difference("after last step", "after first step"),
        "rss_mib": {"default": user["rss"], "freed memory returned": rss},
        "imports_minidl": user["imports_minidl"] or live["imports_minidl"],
    }


def workload_memory() -> dict[str, Any]:
    """C's memory: minidl, PyTorch eager and the matrix-products floor, each in fresh processes."""
    frameworks = {"minidl": "minidl", "PyTorch eager": "torch", "matmul floor": "floor"}
    return {name: peak_memory_mib(framework) for name, framework in frameworks.items()}


def workload_wide(repetitions: int) -> dict[str, Any]:
    torch.set_num_threads(2)
    runs = {name: wide_setup(name) for name in ("minidl", "torch", "hand", "floor")}
    times = paired_times(
        {
            "minidl": runs["minidl"],
            "PyTorch eager": runs["torch"],
            "hand-written": runs["hand"],
            "matmul floor": runs["floor"],
        },
        repetitions,
        warmup=1,
    )
    ms = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    return {
        "ms_per_step": ms,
        "ratio_torch_over_minidl": ms["PyTorch eager"] / ms["minidl"],
        "ratio_minidl_over_floor": ms["minidl"] / ms["matmul floor"],
        "ratio_hand_written_over_floor": ms["hand-written"] / ms["matmul floor"],
        # (as A's: repetition by repetition, lowest and highest)
        "ratio_ranges": {
            "PyTorch / minidl": ratio_range(times["PyTorch eager"], times["minidl"]),
            "minidl / floor": ratio_range(times["minidl"], times["matmul floor"]),
            "hand-written / floor": ratio_range(times["hand-written"], times["matmul floor"]),
        },
        "memory": workload_memory(),
    }


# -- workload D -----------------------------------------------------------------------------------


def workload_reproduce(quick: bool, jobs: int) -> dict[str, Any]:
    """``minidl reproduce`` and its PyTorch twin, each in 1 process and in as many processes as
    ``minidl reproduce --jobs jobs`` trains in (``jobs`` at most: one per stack of rows, see
    :func:`minidl.experiments.runner.training_processes`), the twin in as many."""
    import tempfile

    from minidl._allocator import keep_freed_memory
    from minidl.cli import main as minidl_main
    from minidl.experiments.config import experiments_for_tables
    from minidl.experiments.runner import training_processes
    from torch_reproduce import ROUNDS, TABLES, run_torch_reproduce

    torch.set_num_threads(1)
    # minidl reproduce sets glibc to keep freed memory (minidl._allocator); the twin runs with
    # the same setting, here and in its workers, so that the ratio compares the frameworks.
    keep_freed_memory()
    # --jobs only bounds minidl's workers (no more than its stacks: 7 in a full run, 2 in a
    # quick one); the twin gets as many processes as minidl trains in, not --jobs.
    rounds = 1 if quick else ROUNDS
    parallel = training_processes(experiments_for_tables(TABLES), rounds, jobs)
    seconds: dict[str, float] = {}
    # minidl's time includes its report and figures, which the twin does not make; its
    # training alone is recorded beside it (results.json's training_time_s).
    minidl_training: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    for processes in sorted({1, parallel}):
        args = ["reproduce", "--quiet", "--tables", TABLES, "--jobs", str(processes)]
        args += ["--quick"] if quick else ["--rounds", str(rounds)]
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            minidl_main([*args, "--out", folder])
            seconds[f"minidl, {processes} process"] = time.perf_counter() - start
            written = json.loads((Path(folder) / "results.json").read_text())
            minidl_training[f"{processes} process"] = float(written["training_time_s"])
        start = time.perf_counter()
        rows = run_torch_reproduce(quick=quick, jobs=processes)
        seconds[f"PyTorch eager, {processes} process"] = time.perf_counter() - start
    ratios = {
        f"{processes} process": seconds[f"PyTorch eager, {processes} process"]
        / seconds[f"minidl, {processes} process"]
        for processes in sorted({1, parallel})
    }
    return {
        "seconds": seconds,
        "ratios": ratios,
        "minidl_training_seconds": minidl_training,
        "quick": quick,
        "rounds": rounds,
        "jobs": jobs,
        "processes": sorted({1, parallel}),
        "rows": rows,
    }


# -- main -----------------------------------------------------------------------------------------

#: ``--only``'s workloads: B runs with A, and M (C's peak memory alone) with C.
WORKLOADS = ("A", "B", "C", "D", "M")
FULL_RUN = frozenset({"A", "C", "D"})


def parse_only(text: str) -> frozenset[str]:
    """``--only``'s value: comma-separated workloads (any case, spaces allowed), B read as A."""
    names = [name.strip().upper() for name in text.split(",")]
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected workloads from {', '.join(WORKLOADS)}, separated by commas"
            " (e.g. A,C)"
        )
    return frozenset("A" if name == "B" else name for name in names)


def positive_int(text: str) -> int:
    """``--jobs``'s value: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return value


def check_writable(path: Path) -> str | None:
    """Why ``path`` cannot be written as the JSON file, or None where it can (checked by opening
    it for appending, which changes nothing, or by creating it and removing it again; a
    symbolic link is left as it is, the file it names created and removed, as the write would
    create it)."""
    if path.is_dir():
        return f"{path} is a folder, not a file"
    target = path.resolve()  # (what a symbolic link names, also one that names no file yet)
    if not target.parent.is_dir():
        return f"the folder {target.parent} does not exist"
    existed = target.exists()
    try:
        with path.open("a"):
            pass
    except OSError as error:
        return f"{path} cannot be written ({error.strerror or error})"
    if not existed:
        target.unlink()
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux's ``/proc/cpuinfo``; elsewhere what ``platform`` knows):
    runs on two CPUs compare the CPUs as much as the code, so every run records its own."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def describe_machine() -> dict[str, Any]:
    """What the numbers were measured on: the CPU, the vector instructions PyTorch's kernels
    use on it, the CPUs this process may use (the machine may have more), and the versions."""
    from minidl.experiments.runner import default_jobs

    return {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": default_jobs(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    from minidl.experiments.runner import default_jobs

    default_json = HERE / "results.json"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        type=parse_only,
        default=FULL_RUN,
        help="comma-separated workloads: A (with B), C (with M), D, M (C's peak memory alone);"
        " default: A,C,D",
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, quick D")
    parser.add_argument(
        "--json",
        type=Path,
        help=f"output file (default: {default_json.relative_to(HERE.parent)} for a full run,"
        " none for a partial or --quick one)",
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        help="processes of D's parallel runs, at most (default: the CPUs available; minidl"
        " trains in one per stack of rows at most, and the twin in as many as minidl)",
    )
    args = parser.parse_args(argv)
    chosen: frozenset[str] = args.only
    # Only a full run replaces the results the README's table comes from.
    whole_run = chosen >= FULL_RUN and not args.quick
    json_path: Path | None = (
        args.json if args.json is not None else default_json if whole_run else None
    )
    if json_path is not None and (problem := check_writable(json_path)) is not None:
        parser.error(f"argument --json: {problem}")
    jobs = default_jobs() if args.jobs is None else args.jobs
    machine = describe_machine()
    # (what was run, so that the JSON of a --quick run cannot pass for a full one)
    settings = {
        "quick": args.quick,
        "workloads": sorted(chosen),
        "repetitions": {"A": 5 if args.quick else 15, "C": 3 if args.quick else 21},
    }
    results: dict[str, Any] = {"machine": machine, "settings": settings}
    print(
        f"machine: {machine['cpu']} ({machine['cpu_capability']} kernels), "
        f"{machine['cpu_count']} CPUs, torch {machine['torch']}, Python {machine['python']}"
    )
    if "A" in chosen:
        small = workload_small(repetitions=settings["repetitions"]["A"], epochs_per_rep=5)
        results["A_B"] = small
        print("A/B: paper network 2-25-25-25-2, batch 100, float32, 1 thread (us per step)")
        for name, value in small["us_per_step"].items():
            print(f"  {name:<19} {value:8.1f}")
        spread = small.get("ratio_ranges", {})
        print(
            f"  A: PyTorch / minidl = {small['ratio_A']:.2f}x{_range(spread, 'A')}   (target >= 3x)"
        )
        print(
            f"  A in inference mode: PyTorch / minidl = {small['ratio_A_inference_mode']:.2f}x"
            f"{_range(spread, 'A in inference mode')}"
            "   (the user's loop inside torch.inference_mode())"
        )
        print(
            f"  B: PyTorch / minidl fit = {small['ratio_B']:.2f}x{_range(spread, 'B')}"
            "   (target >= 4x)"
        )
        print(
            f"  PyTorch / hand-written = {small['ratio_hand_written']:.2f}x"
            f"{_range(spread, 'hand-written')}   (no modules)"
        )
        print(f"  ops per step: {small['ops_per_step']}")
    if "C" in chosen:
        wide = workload_wide(repetitions=settings["repetitions"]["C"])
        results["C"] = wide
        print("C: 2-1024-1024-1024-2, batch 1024, float32, 2 threads (ms per step)")
        for name, value in wide["ms_per_step"].items():
            print(f"  {name:<16} {value:8.1f}")
        spread = wide.get("ratio_ranges", {})
        print(
            f"  PyTorch / minidl = {wide['ratio_torch_over_minidl']:.2f}x"
            f"{_range(spread, 'PyTorch / minidl')}   (target >= 1)"
        )
        print(
            f"  minidl / floor = {wide['ratio_minidl_over_floor']:.3f}x"
            f"{_range(spread, 'minidl / floor', '.3f')}   (target <= 1.10)"
        )
        print(
            f"  hand-written / floor = {wide['ratio_hand_written_over_floor']:.3f}x"
            f"{_range(spread, 'hand-written / floor', '.3f')}   (no modules, every buffer made once)"
        )
        print_memory(wide["memory"])
    elif "M" in chosen:
        memory = workload_memory()
        results["C"] = {"memory": memory}
        print("C's memory: 2-1024-1024-1024-2, batch 1024, float32, 2 threads")
        print_memory(memory)
    if "D" in chosen:
        full = workload_reproduce(args.quick, jobs)
        results["D"] = full
        # (a --quick run trains minidl reproduce --quick's rows, 1 round: not the targets' run)
        quick_note = "   (--quick: the target is the full run's)" if args.quick else ""
        print(
            "D: the paper's experiments, --quick (minidl reproduce --quick's rows, 1 round; wall"
            " time)"
            if args.quick
            else "D: the paper's experiments (every row, all rounds; wall time)"
        )
        for name, value in full["seconds"].items():
            print(f"  {name:<26} {value:8.1f} s")
        for processes, ratio in full["ratios"].items():
            target = quick_note or "   (target >= 5x)"
            print(f"  PyTorch / minidl, {processes} each = {ratio:.2f}x{target}")
        for processes, training in full["minidl_training_seconds"].items():
            print(
                f"  minidl's training alone, {processes}: {training:.1f} s"
                "   (its time above includes its report and figures; the twin makes neither)"
            )
        fastest = min(v for k, v in full["seconds"].items() if k.startswith("minidl"))
        print(f"  minidl's fastest: {fastest:.1f} s{quick_note or '   (target < 30 s)'}")
    if json_path is None:
        print("not written: a partial or --quick run (--json PATH writes its results)")
        return 0
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {json_path}")
    return 0


def _range(spread: dict[str, list[float]], name: str, form: str = ".2f") -> str:
    """`` (lowest-highest)`` of a ratio's repetitions, for the table; nothing where none."""
    if name not in spread:
        return ""
    low, high = spread[name]
    return f" ({low:{form}}-{high:{form}} over the repetitions)"


def print_memory(memory: dict[str, dict[str, Any]]) -> None:
    """C's memory lines (MiB; see :func:`peak_memory_mib`)."""

    def mib(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    print(f"  resident memory, each in fresh processes over {MEMORY_STEPS} steps (MiB):")
    print(
        f"    {'':<14} {'peak':>6} {'peak, freed memory returned':>28}"
        f" {'held between steps':>19} {'growth over steps':>18}"
    )
    for name, values in memory.items():
        print(
            f"    {name:<14} {mib(values['peak_mib']):>6} {mib(values['live_peak_mib']):>28}"
            f" {mib(values['held_between_steps_mib']):>19}"
            f" {mib(values['growth_over_steps_mib']):>18}"
        )


if __name__ == "__main__":
    sys.exit(main())
