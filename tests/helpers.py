"""Oracles shared by the tests: PyTorch twins of minidl modules and losses, and one comparison helper.

:func:`helper_test_op` (after tinygrad's ``helper_test_op``) runs a minidl model, and optionally a
loss, forward and backward, runs the same computation through ``torch.nn`` with autograd, and
compares the output, the loss, the gradient with respect to the input and every parameter's
gradient. Every module and loss test goes through it. :func:`rewrite_checkpoint` tampers with a
checkpoint as an attacker who knows the format would.
"""

from __future__ import annotations

import contextlib
import copy
import dis
import itertools
import json
import os
import socket
import stat
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import Tensor

from minidl import nn
from minidl.checkpoint import CheckpointError, _canonical, _digests, _dump_header, read_checkpoint
from minidl.folded import FoldedStep
from minidl.optim import SGD
from minidl.rounds import PerModel, fit_rounds
from minidl.train import fit

__all__ = [
    "F64",
    "PLANNED_ACTIVATION_MAKERS",
    "TOL",
    "CudaLikeGenerator",
    "assert_close",
    "free_port",
    "helper_test_op",
    "port_is_free",
    "relative_error",
    "rewrite_checkpoint",
    "torch_loss",
    "torch_twin",
    "unfolded",
]

F64 = torch.float64
#: The relative error allowed between minidl and the float64 PyTorch oracle.
TOL = 1e-10

#: A maker of every activation a plan runs (``minidl.nn.chain.PLANNED_ACTIVATIONS``), by name,
#: with settings other than the defaults where it has them.
PLANNED_ACTIVATION_MAKERS: dict[str, Callable[[], nn.Activation]] = {
    "Tanh": nn.Tanh,
    "Sigmoid": nn.Sigmoid,
    "ReLU": nn.ReLU,
    "LeakyReLU": lambda: nn.LeakyReLU(0.2),
    "ELU": lambda: nn.ELU(0.7),
    "SELU": nn.SELU,
    "GELU": nn.GELU,
    "GELU tanh": lambda: nn.GELU("tanh"),
    "SiLU": nn.SiLU,
}


class OneColumnGradient(nn.Module):
    """The identity forward, and a backward that returns the gradient's first column only: the
    module before it refuses that gradient, in its own name (a module of one's own whose
    backward returns a gradient of the wrong shape)."""

    def forward(self, input: Tensor) -> Tensor:
        return input.clone()

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output[:, :1]


class CudaLikeGenerator(torch.Generator):
    """A CPU generator that says it is on ``cuda:0``: a stand-in for a CUDA generator on a
    machine without CUDA (``torch.randperm`` on the CPU would fail with a real one)."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda", 0)


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """``max|actual - expected| / max(|expected|, |actual|)`` (0 when both are exactly zero)."""
    actual = actual.detach().to(F64)
    expected = expected.detach().to(F64)
    scale = max(float(expected.abs().max()), float(actual.abs().max()))
    error = float((actual - expected).abs().max())
    if scale == 0.0:
        return error
    return error / scale


def assert_close(actual: Tensor, expected: Tensor, rtol: float = TOL, what: str = "") -> None:
    """Assert equal shape, finite values and a max-norm relative error of at most ``rtol``."""
    label = f"{what}: " if what else ""
    assert isinstance(actual, Tensor), f"{label}expected a tensor, got {type(actual).__name__}"
    assert actual.shape == expected.shape, (
        f"{label}shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    )
    assert bool(torch.isfinite(actual).all()), f"{label}non-finite values in {actual}"
    error = relative_error(actual, expected)
    assert error <= rtol, f"{label}relative error {error:.3g} > {rtol:.3g}"


@contextlib.contextmanager
def unfolded() -> Iterator[None]:
    """Inside the block, :func:`minidl.train.fit` runs the step-by-step loop it documents, not
    its folded step (:mod:`minidl.folded`, whose roundings differ): neither a new one nor one
    kept for the model from an earlier call."""
    with (
        mock.patch.object(FoldedStep, "build", staticmethod(lambda *args: None)),
        mock.patch.object(FoldedStep, "kept", staticmethod(lambda *args: None)),
    ):
        yield


#: This tree's package source, which every Python the tests start imports minidl from.
SOURCE = str(Path(__file__).resolve().parent.parent / "src")


def tree_environment(**extra: str) -> dict[str, str]:
    """The environment for a Python the tests start: this process's, with ``extra`` set and
    :data:`SOURCE` first on ``PYTHONPATH`` (so that it imports the minidl under test, not an
    installed one)."""
    environment = {**os.environ, **extra}
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [SOURCE, os.environ.get("PYTHONPATH")])
    )
    return environment


def run_python(program: str) -> subprocess.CompletedProcess[str]:
    """Run ``program`` in a fresh interpreter that imports this tree's minidl
    (:func:`tree_environment`), its output captured as text."""
    return subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=tree_environment(),
    )


_PORTS_PER_WORKER = 1000
_next_port = itertools.count(os.getpid())  # (two test runs at once start apart)


def free_port() -> int:
    """A TCP port on the loopback interface that no process listens on now (for the rendezvous
    of a process group), never the same twice in one test process.

    A port the kernel picks (``bind`` to port 0) is taken from the ephemeral range
    (``/proc/sys/net/ipv4/ip_local_port_range``, 32768 to 60999 here), where the kernel may give
    it again, once closed, to another test's probe or to any connection's own end before the
    process group listens on it. The ports handed out here lie below that range (20000 to 29999),
    a thousand for each pytest-xdist worker (``PYTEST_XDIST_WORKER``, ``gw0``, ``gw1``, ...), in
    turn from one that the process id chooses, skipping any that something holds now (a
    listener, or a port still in ``TIME_WAIT``).
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    first = 20000 + _PORTS_PER_WORKER * ((int(worker) if worker.isdigit() else 0) % 10)
    for _ in range(_PORTS_PER_WORKER):
        port = first + next(_next_port) % _PORTS_PER_WORKER
        if port_is_free(port):
            return port
    raise RuntimeError(f"free_port: no port free in {first}..{first + _PORTS_PER_WORKER - 1}")


def port_is_free(port: int) -> bool:
    """Whether a socket can be bound to ``port`` on the loopback interface now."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def torch_twin(module: nn.Module) -> torch.nn.Module:
    """A ``torch.nn`` module computing the same function, with copies of the same parameters."""
    if isinstance(module, nn.Sequential):
        return torch.nn.Sequential(*(torch_twin(child) for child in module))
    if isinstance(module, nn.Linear):
        weight = module.weight.data
        twin = torch.nn.Linear(
            module.in_features,
            module.out_features,
            bias=module.bias is not None,
            dtype=weight.dtype,
            device=weight.device,
        )
        with torch.no_grad():
            twin.weight.copy_(weight)
            if module.bias is not None:
                twin.bias.copy_(module.bias.data)
        return twin
    if isinstance(module, nn.SELU):  # before ELU: SELU is a subclass of ELU
        return torch.nn.SELU()
    if isinstance(module, nn.ELU):
        return torch.nn.ELU(alpha=module.alpha)
    if isinstance(module, nn.LeakyReLU):
        return torch.nn.LeakyReLU(negative_slope=module.negative_slope)
    if isinstance(module, nn.GELU):
        return torch.nn.GELU(approximate=module.approximate)
    simple: dict[type[nn.Module], type[torch.nn.Module]] = {
        nn.ReLU: torch.nn.ReLU,
        nn.Sigmoid: torch.nn.Sigmoid,
        nn.Tanh: torch.nn.Tanh,
        nn.SiLU: torch.nn.SiLU,
    }
    for kind, twin_kind in simple.items():
        if isinstance(module, kind):  # subclasses too: a deliberately wrong Tanh has Tanh's twin
            return twin_kind()
    raise TypeError(f"no torch twin for {type(module).__name__}")


def torch_loss(criterion: nn.Loss, prediction: Tensor, target: Tensor) -> Tensor:
    """The PyTorch value of ``criterion(prediction, target)``, differentiable by autograd.

    MSE ``"paper"`` is ``MSELoss(reduction="sum") / N``; class-index targets of the MSE are one-hot
    rows. Cross-entropy is ``torch.nn.functional.cross_entropy``, which accepts class indices and
    probabilities.
    """
    batch, classes = prediction.shape
    if isinstance(criterion, nn.MSELoss):
        dense = target
        if not target.is_floating_point():
            dense = F.one_hot(target, classes).to(prediction.dtype)
        if criterion.reduction == "paper":
            return F.mse_loss(prediction, dense, reduction="sum") / batch
        return F.mse_loss(prediction, dense, reduction=criterion.reduction)
    if isinstance(criterion, nn.CrossEntropyLoss):
        return F.cross_entropy(prediction, target, reduction=criterion.reduction)
    if isinstance(criterion, nn.L1Loss):
        return F.l1_loss(prediction, target, reduction=criterion.reduction)
    if isinstance(criterion, nn.HuberLoss):
        return F.huber_loss(
            prediction, target, reduction=criterion.reduction, delta=criterion.delta
        )
    raise TypeError(f"no torch oracle for {type(criterion).__name__}")


def helper_test_op(
    model: nn.Module | None,
    x: Tensor,
    criterion: nn.Loss | None = None,
    target: Tensor | None = None,
    *,
    grad_output: Tensor | None = None,
    rtol: float = TOL,
) -> None:
    """Compare a minidl forward/backward with PyTorch autograd on the same numbers.

    Args:
        model: the minidl module (``None``: the identity, to test a loss on its own).
        x: the input.
        criterion, target: an optional loss on the model's output; without one, the model's
            output is reduced with ``grad_output`` (default: a random tensor) as upstream gradient.
        grad_output: the upstream gradient when there is no criterion.
        rtol: the allowed relative error of every compared tensor.
    """
    parameters: Sequence[nn.Parameter] = [] if model is None else list(model.parameters())
    if model is not None:
        model.zero_grad()
    twin = None if model is None else torch_twin(model)
    x_torch = x.detach().clone().requires_grad_(True)
    output_torch = x_torch if twin is None else twin(x_torch)
    output = x if model is None else model(x)
    assert_close(output, output_torch, rtol, "output")
    assert output.dtype == x.dtype, f"output dtype {output.dtype} != input dtype {x.dtype}"

    if criterion is None:
        assert model is not None, "give a model, a criterion or both"
        upstream = torch.randn_like(output) if grad_output is None else grad_output
        (output_torch * upstream).sum().backward()
        grad_input = model.backward(upstream)
    else:
        assert target is not None, "a criterion needs a target"
        loss = criterion(output, target)
        loss_torch = torch_loss(criterion, output_torch, target)
        assert loss.shape == (), f"the loss must be a 0-dim tensor, got shape {tuple(loss.shape)}"
        assert loss.dtype == x.dtype
        assert_close(loss, loss_torch, rtol, "loss")
        loss_torch.backward()  # type: ignore[no-untyped-call]
        grad_prediction = criterion.backward()
        grad_input = grad_prediction if model is None else model.backward(grad_prediction)

    assert x_torch.grad is not None
    assert_close(grad_input, x_torch.grad, rtol, "grad input")
    if twin is not None:
        twin_parameters = list(twin.parameters())
        assert len(twin_parameters) == len(parameters)
        for index, (parameter, twin_parameter) in enumerate(
            zip(parameters, twin_parameters, strict=True)
        ):
            assert twin_parameter.grad is not None
            assert_close(parameter.grad, twin_parameter.grad, rtol, f"grad of parameter {index}")


def rewrite_checkpoint(
    path: Path,
    tensors: Callable[[dict[str, Tensor]], None] | None = None,
    header: Callable[[dict[str, Any]], None] | None = None,
    *,
    redigest: bool = True,
    dump: Callable[[dict[str, Any]], str] | None = None,
) -> None:
    """Tamper with a checkpoint like an attacker who knows the format: change its tensors and/or
    header and (with ``redigest``) recompute the per-tensor and header digests, so that only the
    semantic checks can catch it. ``dump`` writes the wrapper ``{"header", "sha256"}`` as JSON
    (default: canonical JSON, as minidl writes it)."""
    with safe_open(str(path), framework="pt") as file:
        wrapper = json.loads(file.metadata()["minidl"])
    content = safetensors_load(path.read_bytes())
    if tensors is not None:
        tensors(content)
    digests = _digests(safetensors_save(content))
    for name, entry in wrapper["header"]["tensors"].items():
        if name in digests:
            entry["sha256"] = digests[name]
    if header is not None:
        header(wrapper["header"])
    metadata = _dump_header(wrapper["header"]) if redigest else _canonical(wrapper)
    if dump is not None:
        metadata = dump(json.loads(metadata))
    path.write_bytes(safetensors_save(content, metadata={"minidl": metadata}))


def read_refusal_and_peak(path: Path) -> tuple[str, int]:
    """The message of ``read_checkpoint(path)``'s :class:`CheckpointError` and the peak of the
    memory Python allocated meanwhile (``tracemalloc``, bytes): a file refused from its first
    bytes takes far less than the file's size."""
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return str(info.value), peak


def record_file_fsyncs(monkeypatch: Any) -> list[int]:
    """Make ``os.fsync`` record the size of every file (not folder) it syncs, in order, and
    return that list (``monkeypatch``: pytest's fixture, which undoes it after the test)."""
    sizes: list[int] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        if not stat.S_ISDIR(os.fstat(descriptor).st_mode):
            sizes.append(os.fstat(descriptor).st_size)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    return sizes


def run_stopped_before_store(
    action: Callable[[], object],
    function: Callable[..., object],
    named: str,
    attribute: str,
    between: Callable[[], None],
) -> bool:
    """Run ``action``, stopping its first call of ``function`` (a method taking ``name``)
    with ``name == named`` just before it stores ``attribute`` (traced bytecode by bytecode,
    as another thread may stop it) to run ``between`` there, once; return whether it ran.
    (Tracing is off inside a tracer: ``between``'s own calls of ``function`` are not
    stopped.)"""
    code = function.__code__
    (store,) = (
        instruction.offset
        for instruction in dis.get_instructions(code)
        if instruction.opname == "STORE_ATTR" and instruction.argval == attribute
    )
    ran: list[bool] = []

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode" and frame.f_lasti == store and not ran:
            between()
            ran.append(True)
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code is code and frame.f_locals.get("name") == named:
            frame.f_trace_opcodes = True
            return local
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        action()
    finally:
        sys.settrace(previous)
    return bool(ran)


def assert_rounds_train_as_alone(
    models: Sequence[nn.Sequential],
    sets: Sequence[tuple[Tensor, Tensor]],
    epochs: int = 4,
    batch_size: int = 20,
) -> None:
    """``fit_rounds`` (SGD, lr 0.1, a stack laid out by model) trains each of ``models`` on
    its set as ``fit`` trains a copy alone, generator ``r`` seeded ``r``: the same losses and
    parameters to 1e-12 (float64 models)."""
    alone = [copy.deepcopy(model) for model in models]
    expected = [
        fit(
            model,
            nn.CrossEntropyLoss(),
            SGD(model.parameters(), lr=0.1),
            x,
            y,
            epochs=epochs,
            batch_size=batch_size,
            generator=torch.Generator().manual_seed(r),
        )
        for r, (model, (x, y)) in enumerate(zip(alone, sets, strict=True))
    ]
    histories = fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        PerModel(lambda g, p: SGD(p, lr=0.1), flat=True),
        sets,
        epochs=epochs,
        batch_size=batch_size,
        generators=[torch.Generator().manual_seed(r) for r in range(len(models))],
    )
    for model, reference, history, reference_history in zip(
        models, alone, histories, expected, strict=True
    ):
        assert history.train_loss == pytest.approx(reference_history.train_loss, rel=1e-12)
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p.data, q.data, rtol=1e-12, atol=1e-12)
