"""Property tests (hypothesis).

* Random networks (1 to 6 layers, widths 1 to 64, every activation, both losses, float32 and
  float64, batches of 1 to 257) compute the loss and every gradient PyTorch autograd computes
  (relative error 1e-10 in float64, 1e-4 in float32).
* Any random corruption of a checkpoint file (flipped bytes anywhere, truncation, bytes inserted
  or removed) is refused with a CheckpointError, and the model, optimizer, scheduler and
  generators are left exactly as they were.
"""

from __future__ import annotations

import copy
import functools
import tempfile
from pathlib import Path
from typing import Any

import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import Tensor

from minidl import nn, optim
from minidl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.helpers import TOL, helper_test_op, relative_error, torch_loss, torch_twin

ACTIVATION_NAMES = sorted(nn.ACTIVATIONS)


@st.composite
def networks(draw: st.DrawFn) -> dict[str, Any]:
    depth = draw(st.integers(1, 6))  # Linear layers
    return {
        "sizes": draw(st.lists(st.integers(1, 64), min_size=depth + 1, max_size=depth + 1)),
        "activations": draw(
            st.lists(st.sampled_from(ACTIVATION_NAMES), min_size=depth - 1, max_size=depth - 1)
        ),
        "loss": draw(st.sampled_from(["cross-entropy", "mse", "mse-dense"])),
        "dtype": draw(st.sampled_from([torch.float32, torch.float64])),
        "batch": draw(st.integers(1, 257)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@settings(max_examples=40, deadline=None)
@given(networks())
def test_random_networks_match_pytorch_autograd(case: dict[str, Any]) -> None:
    generator = torch.Generator().manual_seed(case["seed"])
    dtype = case["dtype"]
    model = nn.mlp(case["sizes"], case["activations"], dtype=dtype, generator=generator)
    batch, classes = case["batch"], case["sizes"][-1]
    x = torch.randn(batch, case["sizes"][0], dtype=dtype, generator=generator)
    criterion: nn.Loss
    if case["loss"] == "cross-entropy":
        criterion = nn.CrossEntropyLoss()
        target = torch.randint(classes, (batch,), generator=generator)
    elif case["loss"] == "mse":
        criterion = nn.MSELoss()
        target = torch.randint(classes, (batch,), generator=generator)
    else:
        criterion = nn.MSELoss()
        target = torch.randn(batch, classes, dtype=dtype, generator=generator)
    if dtype == torch.float64:
        helper_test_op(model, x, criterion, target, rtol=TOL)
        return
    # float32: the same network in float64 is the oracle (itself checked against PyTorch
    # autograd); minidl's float32 results may be off it by 1e-4, or by up to 4 times PyTorch's
    # own float32 results where those are further off (a value computed with cancellation, such
    # as the input gradient of a one-feature input through five layers, loses digits in any
    # float32 order of operations: 1.3e-4 against PyTorch's 5.9e-5 in one case hypothesis found).
    wide = copy.deepcopy(model).to(dtype=torch.float64)
    wide_target = target.double() if target.is_floating_point() else target
    helper_test_op(wide, x.double(), criterion, wide_target, rtol=TOL)
    truth = _minidl_results(wide, x.double(), criterion, wide_target)
    ours = _minidl_results(model, x, criterion, target)
    theirs = _torch_results(model, x, criterion, target)
    # (one result per name at most; the three lists alike, so that zip drops no comparison)
    assert len(ours) == len(theirs) == len(truth) == 3 + 2 * (len(case["sizes"]) - 1)
    for name, mine, pytorch, exact in zip(_NAMES, ours, theirs, truth, strict=False):
        error, reference = relative_error(mine, exact), relative_error(pytorch, exact)
        assert error <= max(1e-4, 4 * reference), (name, error, reference)


_NAMES = ("output", "loss", "grad input", *(f"grad of parameter {i}" for i in range(64)))


def _minidl_results(
    model: nn.Sequential, x: Tensor, criterion: nn.Loss, target: Tensor
) -> list[Tensor]:
    """The output, the loss, the input gradient and each parameter's gradient."""
    model.zero_grad()
    output = model(x)
    loss = criterion(output, target)
    grad_input = model.backward(criterion.backward())
    return [output, loss, grad_input, *(p.grad.clone() for p in model.parameters())]


def _torch_results(
    model: nn.Sequential, x: Tensor, criterion: nn.Loss, target: Tensor
) -> list[Tensor]:
    """:func:`_minidl_results` of PyTorch autograd on a twin of ``model``."""
    twin = torch_twin(model)
    x_torch = x.detach().clone().requires_grad_(True)
    output = twin(x_torch)
    loss = torch_loss(criterion, output, target)
    loss.backward()
    assert x_torch.grad is not None
    grads = [p.grad for p in twin.parameters()]
    assert all(g is not None for g in grads)
    return [output.detach(), loss.detach(), x_torch.grad, *grads]  # type: ignore[list-item]


# -- checkpoint corruption ----------------------------------------------------------------------


def _parts() -> tuple[nn.Sequential, optim.SGD, optim.StepDecay, torch.Generator]:
    model = nn.mlp((2, 5, 3), "tanh", generator=torch.Generator().manual_seed(0))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    scheduler = optim.StepDecay(optimizer, step_size=3)
    return model, optimizer, scheduler, torch.Generator().manual_seed(1)


@functools.cache
def _checkpoint_bytes() -> bytes:
    model, optimizer, scheduler, generator = _parts()
    model.zero_grad()
    criterion = nn.CrossEntropyLoss()
    criterion(model(torch.randn(4, 2)), torch.tensor([0, 1, 2, 0]))
    model.backward(criterion.backward())
    optimizer.step()
    scheduler.step()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "good.ckpt"
        save_checkpoint(path, model, optimizer, scheduler, epoch=1, generator=generator)
        return path.read_bytes()


@st.composite
def corruptions(draw: st.DrawFn) -> bytes:
    data = bytearray(_checkpoint_bytes())
    kind = draw(st.sampled_from(["flip", "flip", "flip", "truncate", "insert", "delete"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 3))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= draw(st.integers(1, 255))
    elif kind == "truncate":
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif kind == "insert":
        data.insert(draw(st.integers(0, len(data))), draw(st.integers(0, 255)))
    else:
        del data[draw(st.integers(0, len(data) - 1))]
    # Two flips of the same byte by the same mask cancel out: that is no corruption.
    assume(bytes(data) != _checkpoint_bytes())
    return bytes(data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corruptions())
def test_corrupted_checkpoints_are_refused_and_change_nothing(data: bytes) -> None:
    model, optimizer, scheduler, generator = _parts()
    generator.manual_seed(99)
    before = (
        model.state_dict(),
        optimizer.state_dict(),
        scheduler.state_dict(),
        generator.get_state(),
        torch.get_rng_state(),
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bad.ckpt"
        path.write_bytes(data)
        try:
            load_checkpoint(path, model, optimizer, scheduler, generator=generator)
        except CheckpointError:
            pass
        else:
            raise AssertionError("a corrupted checkpoint was accepted")
    model_state, optimizer_state, scheduler_state, generator_state, rng_state = before
    assert all(torch.equal(model.state_dict()[k], v) for k, v in model_state.items())
    after = optimizer.state_dict()
    assert torch.equal(
        after.pop("state")["momentum_buffer"], optimizer_state.pop("state")["momentum_buffer"]
    )
    assert after == optimizer_state
    assert scheduler.state_dict() == scheduler_state
    assert torch.equal(generator.get_state(), generator_state)
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_the_uncorrupted_checkpoint_loads() -> None:
    """The property above is not vacuous: the same bytes, unchanged, load."""
    model, optimizer, scheduler, generator = _parts()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "good.ckpt"
        path.write_bytes(_checkpoint_bytes())
        state = load_checkpoint(path, model, optimizer, scheduler, generator=generator)
    assert state.epoch == 1
    assert optimizer.step_count == 1
    assert scheduler.last_step == 1
