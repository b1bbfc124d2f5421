"""minidl against PyTorch eager, side by side in one process (``make bench``).

Workloads (each a minidl version and a PyTorch eager twin on identical data and initial
weights, timed alternately, several repetitions, medians and their ratio):

- A: the paper's network 2-25-25-25-2, batch 100, 1 thread, written as a user writes it: a loop
  over minidl's BatchIterator calling the model, the loss, ``backward`` and ``optimizer.step()``.
  Beside it, the same loop inside ``torch.inference_mode()`` (as a user may write it too).
- B: the same through :func:`minidl.train.fit`. Beside A and B, a step written by hand without
  modules (``benchmarks/handwritten.py``): what this machine allows for the network.
- C: width 1024, batch 1024, three hidden layers, 2 threads, with the matrix-products-only
  floor (the step's 11 matrix products alone, into preallocated outputs) beside it; peak memory
  of each framework measured in a fresh process.
- D: the full ``minidl reproduce`` run against the same experiments written with PyTorch eager
  (``benchmarks/torch_reproduce.py``), both in one process and both in ``--jobs`` worker
  processes (default: the CPUs available), so that each ratio compares equal resources.

It also counts the tensor operations of one training step (torch.profiler). It prints a table
and writes ``benchmarks/results.json``. No test asserts timings: machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from handwritten import HandwrittenStep
from minidl import nn as mnn
from minidl import optim as moptim
from minidl.data import BatchIterator, make_disk_data
from minidl.interop import to_torch
from minidl.train import fit

HERE = Path(__file__).resolve().parent
PAPER_SIZES = (2, 25, 25, 25, 2)
WIDE_SIZES = (2, 1024, 1024, 1024, 2)


# -- twins ----------------------------------------------------------------------------------------


def minidl_model(sizes: tuple[int, ...], seed: int) -> mnn.Sequential:
    torch.manual_seed(seed)
    return mnn.mlp(sizes, "tanh")


def torch_twin(model: mnn.Sequential) -> torch.nn.Module:
    """A torch.nn copy of a minidl network (same weights)."""
    return to_torch(model)


# -- timing ---------------------------------------------------------------------------------------


def paired_medians(
    runs: dict[str, Callable[[], None]], repetitions: int, warmup: int = 2
) -> dict[str, float]:
    """Median seconds of each callable, timed alternately so that noise hits all alike."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repetitions):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def count_ops(step: Callable[[], None]) -> int:
    """Top-level aten operations issued by one call of ``step``."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    top = [e for e in events if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    return len(top)


# -- workloads A and B ----------------------------------------------------------------------------


def workload_small(repetitions: int, epochs_per_rep: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    data = make_disk_data(seed=0)
    model = minidl_model(PAPER_SIZES, seed=0)
    twin = torch_twin(model)
    criterion = mnn.CrossEntropyLoss()
    optimizer = moptim.SGD(model.parameters(), lr=1e-2)
    twin_criterion = torch.nn.CrossEntropyLoss()
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=1e-2)
    x, y = data.train.x, data.train.y
    generator = torch.Generator().manual_seed(0)
    batches = BatchIterator(x, y, 100, generator=generator)
    steps = epochs_per_rep * len(batches)

    def user_loop() -> None:
        for _ in range(epochs_per_rep):
            for x_batch, y_batch in batches:
                optimizer.zero_grad()
                criterion(model(x_batch), y_batch)
                model.backward(criterion.backward())
                optimizer.step()

    def user_loop_inference_mode() -> None:
        with torch.inference_mode():
            user_loop()

    def fit_loop() -> None:
        fit(model, criterion, optimizer, x, y, epochs=epochs_per_rep, generator=generator)

    def torch_loop() -> None:
        for _ in range(epochs_per_rep):
            for x_batch, y_batch in batches:
                twin_optimizer.zero_grad()
                twin_criterion(twin(x_batch), y_batch).backward()
                twin_optimizer.step()

    with torch.inference_mode():
        hand = HandwrittenStep(minidl_model(PAPER_SIZES, seed=0), lr=1e-2, batch=100)

    def hand_loop() -> None:
        with torch.inference_mode():
            for _ in range(epochs_per_rep):
                for x_batch, y_batch in batches:
                    hand.step(x_batch, y_batch)

    medians = paired_medians(
        {
            "A minidl": user_loop,
            "A in inference mode": user_loop_inference_mode,
            "B minidl fit": fit_loop,
            "PyTorch eager": torch_loop,
            "hand-written": hand_loop,
        },
        repetitions,
    )
    per_step = {name: seconds / steps * 1e6 for name, seconds in medians.items()}
    x_batch, y_batch = x[:100], y[:100]

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
        "ops_per_step": {
            "minidl": count_ops(minidl_step),
            "PyTorch eager": count_ops(torch_step),
            "hand-written": count_ops(hand_step),
        },
    }


# -- workload C -----------------------------------------------------------------------------------


def wide_setup(framework: str) -> Callable[[], None]:
    """One training step of the wide network, for ``framework`` in minidl / torch / floor."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1024, WIDE_SIZES[0], generator=generator)
    y = torch.randint(0, WIDE_SIZES[-1], (1024,), generator=generator)
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
    if framework == "torch":
        twin = torch_twin(model)
        twin_criterion = torch.nn.CrossEntropyLoss()
        twin_optimizer = torch.optim.SGD(twin.parameters(), lr=1e-3)

        def torch_step() -> None:
            twin_optimizer.zero_grad()
            twin_criterion(twin(x), y).backward()
            twin_optimizer.step()

        return torch_step
    # The floor: the 11 matrix products of a step (4 forward, 4 weight gradients, 3 input
    # gradients) into preallocated outputs, nothing else.
    weights = [layer.weight.data for layer in model if isinstance(layer, mnn.Linear)]
    activations = [x] + [torch.empty(1024, w.shape[0]) for w in weights]
    weight_grads = [torch.empty_like(w) for w in weights]
    input_grads = [torch.empty(1024, w.shape[1]) for w in weights]

    def floor_step() -> None:
        with torch.inference_mode():
            for i, w in enumerate(weights):
                torch.mm(activations[i], w.t(), out=activations[i + 1])
            grad = activations[-1]
            for i in reversed(range(len(weights))):
                torch.mm(grad.t(), activations[i], out=weight_grads[i])
                if i > 0:
                    torch.mm(grad, weights[i], out=input_grads[i])
                    grad = input_grads[i]

    return floor_step


def peak_memory_mib(framework: str, steps: int) -> dict[str, float]:
    """Peak resident memory of a fresh process running ``steps`` wide steps (and its growth
    over the set-up's)."""
    page = os.sysconf("SC_PAGE_SIZE")
    code = (
        f"import resource, sys, torch; sys.path.insert(0, {str(HERE)!r}); "
        "torch.set_num_threads(2); "
        f"from run import wide_setup; step = wide_setup({framework!r}); "
        f"rss = lambda: int(open('/proc/self/statm').read().split()[1]) * {page} / 2**20; "
        f"before = rss(); [step() for _ in range({steps})]; "
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; "
        "print(before, peak)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    before, peak = float(output[0]), float(output[1])
    return {"peak_mib": peak, "growth_mib": peak - before}


def workload_wide(repetitions: int) -> dict[str, Any]:
    torch.set_num_threads(2)
    runs = {name: wide_setup(name) for name in ("minidl", "torch", "floor")}
    medians = paired_medians(
        {"minidl": runs["minidl"], "PyTorch eager": runs["torch"], "matmul floor": runs["floor"]},
        repetitions,
        warmup=1,
    )
    ms = {name: seconds * 1e3 for name, seconds in medians.items()}
    memory = {name: peak_memory_mib(name, 3) for name in ("minidl", "torch")}
    return {
        "ms_per_step": ms,
        "ratio_torch_over_minidl": ms["PyTorch eager"] / ms["minidl"],
        "ratio_minidl_over_floor": ms["minidl"] / ms["matmul floor"],
        "memory": memory,
    }


# -- workload D -----------------------------------------------------------------------------------


def workload_reproduce(quick: bool, jobs: int) -> dict[str, Any]:
    """``minidl reproduce`` and its PyTorch twin, each in 1 process and in ``jobs`` processes."""
    import tempfile

    from minidl._allocator import keep_freed_memory
    from minidl.cli import main as minidl_main
    from torch_reproduce import run_torch_reproduce

    torch.set_num_threads(1)
    # minidl reproduce sets glibc to keep freed memory (minidl._allocator); the twin runs with
    # the same setting, here and in its workers, so that the ratio compares the frameworks.
    keep_freed_memory()
    seconds: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    for processes in sorted({1, jobs}):
        args = ["reproduce", "--quiet", "--jobs", str(processes)] + (["--quick"] if quick else [])
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            minidl_main([*args, "--out", folder])
            seconds[f"minidl, {processes} process"] = time.perf_counter() - start
        start = time.perf_counter()
        rows = run_torch_reproduce(quick=quick, jobs=processes)
        seconds[f"PyTorch eager, {processes} process"] = time.perf_counter() - start
    ratios = {
        f"{processes} process": seconds[f"PyTorch eager, {processes} process"]
        / seconds[f"minidl, {processes} process"]
        for processes in sorted({1, jobs})
    }
    return {"seconds": seconds, "ratios": ratios, "jobs": jobs, "rows": rows}


# -- main -----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="A,C,D", help="workloads: A (with B), C, D")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, quick D")
    parser.add_argument("--json", default=str(HERE / "results.json"), help="output file")
    parser.add_argument(
        "--jobs",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="processes of D's parallel runs (default: the CPUs available)",
    )
    args = parser.parse_args()
    chosen = set(args.only.upper().replace("B", "A").split(","))
    results: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
    }
    if "A" in chosen:
        small = workload_small(repetitions=5 if args.quick else 15, epochs_per_rep=5)
        results["A_B"] = small
        print("A/B: paper network 2-25-25-25-2, batch 100, float32, 1 thread (us per step)")
        for name, value in small["us_per_step"].items():
            print(f"  {name:<19} {value:8.1f}")
        print(f"  A: PyTorch / minidl = {small['ratio_A']:.2f}x   (target >= 3x)")
        print(
            f"  A in inference mode: PyTorch / minidl = {small['ratio_A_inference_mode']:.2f}x"
            "   (the user's loop inside torch.inference_mode())"
        )
        print(f"  B: PyTorch / minidl fit = {small['ratio_B']:.2f}x   (target >= 4x)")
        print(f"  PyTorch / hand-written = {small['ratio_hand_written']:.2f}x   (no modules)")
        print(f"  ops per step: {small['ops_per_step']}")
    if "C" in chosen:
        wide = workload_wide(repetitions=3 if args.quick else 21)
        results["C"] = wide
        print("C: 2-1024-1024-1024-2, batch 1024, float32, 2 threads (ms per step)")
        for name, value in wide["ms_per_step"].items():
            print(f"  {name:<16} {value:8.1f}")
        print(f"  PyTorch / minidl = {wide['ratio_torch_over_minidl']:.2f}x   (target >= 1)")
        print(f"  minidl / floor = {wide['ratio_minidl_over_floor']:.2f}x   (target <= 1.10)")
        print(f"  peak memory (MiB): {wide['memory']}")
    if "D" in chosen:
        full = workload_reproduce(args.quick, args.jobs)
        results["D"] = full
        print("D: the paper's experiments (every row, all rounds; wall time)")
        for name, value in full["seconds"].items():
            print(f"  {name:<26} {value:8.1f} s")
        for processes, ratio in full["ratios"].items():
            print(f"  PyTorch / minidl, {processes} each = {ratio:.2f}x   (target >= 5x)")
        fastest = min(v for k, v in full["seconds"].items() if k.startswith("minidl"))
        print(f"  minidl's fastest: {fastest:.1f} s   (target < 30 s)")
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
