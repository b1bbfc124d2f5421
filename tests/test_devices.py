"""Devices and dtypes: ``Module.to``, optimizers that follow their parameters, clear mismatch errors.

The CPU tests cover dtype conversion (float32 <-> float64) against PyTorch autograd and
``torch.optim``; the tests named ``test_cuda_*`` (marker ``cuda``) run on a GPU and compare with
the same computation on the CPU, and are skipped where no GPU is available.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from minidl import nn, optim
from minidl.nn._checks import check_like_parameter
from minidl.nn.flat import flat_buffer

HAS_CUDA = torch.cuda.is_available()
cuda = pytest.mark.cuda
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")

SIZES = (2, 7, 5, 2)
BATCH = 9


def make_model(dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Sequential:
    return nn.mlp(SIZES, "tanh", dtype=dtype, generator=torch.Generator().manual_seed(seed))


def make_batches(count: int, dtype: torch.dtype = torch.float64) -> list[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(BATCH, SIZES[0], generator=generator, dtype=dtype),
            torch.randint(0, SIZES[-1], (BATCH,), generator=generator),
        )
        for _ in range(count)
    ]


def is_flat(model: nn.Module) -> bool:
    parameters = list(model.parameters())
    return (
        flat_buffer([p.data for p in parameters]) is not None
        and flat_buffer([p.grad for p in parameters]) is not None
    )


def train_steps(
    model: nn.Module, optimizer: optim.Optimizer, batches: list[tuple[torch.Tensor, ...]]
) -> None:
    """One SGD/Adadelta step per batch, with inputs moved to the model's dtype and device."""
    criterion = nn.CrossEntropyLoss()
    first = next(model.parameters())
    for x, y in batches:
        optimizer.zero_grad()
        criterion(model(x.to(device=first.device, dtype=first.dtype)), y.to(first.device))
        model.backward(criterion.backward())
        optimizer.step()


def torch_copy(model: nn.Sequential) -> torch.nn.Sequential:
    """The same network as a ``torch.nn`` model (the oracle), with equal weights."""
    layers: list[torch.nn.Module] = []
    for module in model:
        if isinstance(module, nn.Linear):
            linear = torch.nn.Linear(
                module.in_features, module.out_features, dtype=module.weight.dtype
            )
            with torch.no_grad():
                linear.weight.copy_(module.weight.data)
                assert module.bias is not None
                linear.bias.copy_(module.bias.data)
            layers.append(linear)
        else:
            assert isinstance(module, nn.Tanh)
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


def torch_train_steps(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[tuple[torch.Tensor, ...]],
) -> None:
    dtype = next(model.parameters()).dtype
    for x, y in batches:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x.to(dtype)), y).backward()
        optimizer.step()


def values(model: nn.Module) -> list[torch.Tensor]:
    return [p.data.detach().clone() for p in model.parameters()]


OPTIMIZERS = {
    "sgd-momentum": (
        lambda params: optim.SGD(params, lr=0.1, momentum=0.9),
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
    ),
    "adadelta": (
        lambda params: optim.Adadelta(params, lr=1.0, rho=0.9, eps=1e-6),
        lambda params: torch.optim.Adadelta(params, lr=1.0, rho=0.9, eps=1e-6),
    ),
}


def torch_state_from(name: str, optimizer: optim.Optimizer, params: list[torch.Tensor]) -> dict:
    """Torch optimizer state equal to ``optimizer``'s (flat state split per parameter)."""
    state = optimizer.state_dict()["state"]
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    offset = 0
    for index, param in enumerate(params):
        size = param.numel()
        chunk = {
            k: v[offset : offset + size].view(param.shape).to(param.dtype) for k, v in state.items()
        }
        offset += size
        if name == "sgd-momentum":
            # The paper's velocity v = lr * b, with b torch's buffer.
            per_param[index] = {"momentum_buffer": chunk["momentum_buffer"] / optimizer.lr}
        else:
            per_param[index] = {**chunk, "step": torch.tensor(float(optimizer.step_count))}
    return per_param


# -- dtype conversion on the CPU -----------------------------------------------------------------


def test_to_float32_matches_float64_forward_and_backward_to_float32_precision():
    reference = make_model(torch.float64)
    converted = make_model(torch.float64).to(dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in converted.parameters())
    assert all(p.grad.dtype == torch.float32 for p in converted.parameters())
    ((x, _),) = make_batches(1)
    out64, out32 = reference(x), converted(x.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-6)
    grad = torch.randn(out64.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    dx64, dx32 = reference.backward(grad), converted.backward(grad.float())
    torch.testing.assert_close(dx32.double(), dx64, rtol=1e-5, atol=1e-6)
    for p64, p32 in zip(reference.parameters(), converted.parameters(), strict=True):
        torch.testing.assert_close(p32.grad.double(), p64.grad, rtol=1e-5, atol=1e-6)


def test_to_float64_matches_pytorch_autograd_in_float64():
    model = make_model(torch.float32).to(dtype=torch.float64)
    oracle = torch_copy(model)
    ((x, y),) = make_batches(1)
    criterion = nn.CrossEntropyLoss()
    loss = criterion(model(x), y)
    model.backward(criterion.backward())
    torch_loss = torch.nn.functional.cross_entropy(oracle(x), y)
    torch_loss.backward()
    torch.testing.assert_close(loss, torch_loss.detach(), rtol=1e-12, atol=1e-12)
    for mine, theirs in zip(model.parameters(), oracle.parameters(), strict=True):
        assert theirs.grad is not None
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-10, atol=1e-12)


def test_float32_float64_float32_round_trip_is_exact():
    model = make_model(torch.float32)
    before = values(model)
    model.to(dtype=torch.float64).to(dtype=torch.float32)
    for value, original in zip(values(model), before, strict=True):
        assert value.dtype == torch.float32
        assert torch.equal(value, original)


def test_float64_float32_float64_round_trip_rounds_to_float32():
    model = make_model(torch.float64)
    before = values(model)
    model.to(dtype=torch.float32).to(dtype=torch.float64)
    for value, original in zip(values(model), before, strict=True):
        assert value.dtype == torch.float64
        assert torch.equal(value, original.float().double())


def test_to_keeps_parameters_gradients_and_flatness():
    model = make_model(torch.float32)
    ((x, y),) = make_batches(1, torch.float32)
    criterion = nn.CrossEntropyLoss()
    criterion(model(x), y)
    model.backward(criterion.backward())
    parameters = list(model.parameters())
    grads = [p.grad.clone() for p in parameters]
    assert is_flat(model)
    assert model.to(dtype=torch.float64) is model
    assert list(model.parameters()) == parameters  # the same Parameter objects, in order
    assert all(a is b for a, b in zip(model.parameters(), parameters, strict=True))
    assert is_flat(model)
    flat = flat_buffer([p.data for p in model.parameters()])
    assert (
        flat is not None and flat.dtype == torch.float64 and flat.numel() == model.num_parameters()
    )
    for parameter, grad in zip(parameters, grads, strict=True):
        assert parameter.grad.dtype == torch.float64
        assert torch.equal(parameter.grad, grad.double())  # accumulated gradients move too
    # Writing through the flat buffer reaches every parameter: the views are real.
    flat.zero_()
    assert all(bool((p.data == 0).all()) for p in model.parameters())


def test_to_rejects_a_non_floating_dtype_and_changes_nothing():
    model = make_model(torch.float32)
    before = values(model)
    with pytest.raises(
        TypeError,
        match=r"Sequential\.to: dtype must be torch\.float16, .* torch\.float64 \(the dtypes minidl computes in\), got torch\.int64",
    ):
        model.to(dtype=torch.int64)
    assert all(torch.equal(a, b) for a, b in zip(values(model), before, strict=True))
    assert is_flat(model)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_to_off_the_meta_device_is_refused_by_name(device: object) -> None:
    """A model on the meta device (which minidl computes shapes on) moved elsewhere failed in
    torch's words, "Cannot copy out of meta tensor; no data!", naming no module: refused by
    name, nothing moved; to another dtype, on the meta device, it still goes."""
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).to("meta")
    with pytest.raises(
        ValueError,
        match=r"^Sequential\.to: its tensors are on the meta device, which holds no values to "
        r"copy to cpu; build the model on cpu and load a state dict into it$",
    ):
        model.to(device)
    assert all(t.is_meta for t in [*(p.data for p in model.parameters()), *model.buffers()])
    with pytest.raises(ValueError, match=r"^Linear\.to: its tensors are on the meta device"):
        nn.Linear(2, 2).to("meta").cpu()
    assert model.to(torch.float64)[0].weight.dtype == torch.float64


def test_to_a_tensor_takes_its_device_and_dtype_as_pytorchs_does():
    """``model.to(x)``: PyTorch's ``Module.to(tensor)`` (it was refused as "not a device"),
    the same parameters as ``model.to(x.device, x.dtype)``, the gradients moved too; a tensor
    that is not floating point is refused as PyTorch refuses it, and so is a dtype besides it.
    Refused, nothing changes."""
    model, other = make_model(torch.float32), make_model(torch.float32)
    twin = torch.nn.Linear(2, 3)
    like = torch.zeros(1, dtype=torch.float64)
    assert model.to(like) is model and twin.to(like) is twin
    other.to(like.device, like.dtype)
    assert twin.weight.dtype == torch.float64
    for mine, theirs in zip(model.parameters(), other.parameters(), strict=True):
        assert mine.data.dtype == mine.grad.dtype == torch.float64
        assert mine.data.device == like.device
        assert torch.equal(mine.data, theirs.data)
    assert is_flat(model)
    before = values(model)
    integers = torch.zeros(1, dtype=torch.int64)
    with pytest.raises(TypeError, match="floating point"):
        torch.nn.Linear(2, 3).to(integers)
    with pytest.raises(
        TypeError,
        match=r"Sequential\.to: dtype must be torch\.float16, .* torch\.float64 \(the dtypes minidl computes in\), got torch\.int64",
    ):
        model.to(integers)
    with pytest.raises(
        TypeError,
        match=r"Sequential\.to: got a tensor, whose dtype torch\.float32 it takes, and the dtype "
        r"torch\.float64; give one of them",
    ):
        model.to(torch.zeros(1), torch.float64)
    assert all(torch.equal(a, b) for a, b in zip(values(model), before, strict=True))
    assert all(p.data.dtype == torch.float64 for p in model.parameters())


@pytest.mark.parametrize(
    "arguments",
    [
        ((torch.float64,), {"non_blocking": True}),
        ((torch.float64, True), {}),
        ((torch.float64, False), {}),
        (("cpu", torch.float64, True), {}),
        ((), {"device": "cpu", "dtype": torch.float64, "non_blocking": True}),
        ((torch.zeros(1, dtype=torch.float64), True), {}),
    ],
    ids=["keyword", "after a dtype", "False after a dtype", "third", "keywords", "after a tensor"],
)
def test_to_takes_non_blocking_where_pytorchs_does(arguments):
    """PyTorch's ``non_blocking``, by keyword or in its positional places (after a dtype or a
    tensor, or third): the same move as without it, on a ``torch.nn`` twin as on the model
    (``model.to(torch.float64, True)`` was refused as two dtypes)."""
    args, kwargs = arguments
    model, plain = make_model(torch.float32), make_model(torch.float32)
    twin = torch.nn.Linear(2, 3)
    parameters = list(model.parameters())
    assert model.to(*args, **kwargs) is model and twin.to(*args, **kwargs) is twin
    plain.to(torch.float64)
    assert twin.weight.dtype == torch.float64
    assert list(model.parameters()) == parameters
    for mine, theirs in zip(model.parameters(), plain.parameters(), strict=True):
        assert mine.data.dtype == mine.grad.dtype == torch.float64
        assert torch.equal(mine.data, theirs.data)
    assert is_flat(model)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {"non_blocking": 1}, "non_blocking must be True or False, got 1"),
        (("cpu",), {"non_blocking": "yes"}, "non_blocking must be True or False, got 'yes'"),
        (
            (torch.float64, 1),
            {},
            r"non_blocking \(the argument after the dtype\) must be True or False, got 1",
        ),
        (
            (torch.zeros(1, dtype=torch.float64), "cpu"),
            {},
            r"non_blocking \(the argument after the tensor\) must be True or False, got 'cpu'",
        ),
        (
            (torch.float64, True),
            {"non_blocking": True},
            r"got non_blocking twice, True after the dtype and non_blocking=True; give one of "
            "them",
        ),
        (
            (torch.float64, True),
            {"non_blocking": 1},
            r"got non_blocking twice, True after the dtype and non_blocking=1; give one of them",
        ),
    ],
)
def test_to_refuses_a_non_blocking_that_is_not_a_flag_and_changes_nothing(args, kwargs, message):
    """Refused as PyTorch's ``Module.to`` refuses it (a TypeError), in the module's name,
    before anything is moved or cast."""
    with pytest.raises(TypeError):
        torch.nn.Linear(2, 3).to(*args, **kwargs)
    model = make_model(torch.float32)
    before = values(model)
    with pytest.raises(TypeError, match=rf"^Sequential\.to: {message}$"):
        model.to(*args, **kwargs)
    assert all(p.data.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(values(model), before, strict=True))


def test_to_rejects_what_is_not_a_dtype_or_a_device_and_changes_nothing():
    model = make_model(torch.float32)
    before = values(model)
    with pytest.raises(
        TypeError, match=r"Sequential\.to: dtype must be a torch\.dtype, got 'float'"
    ):
        model.to(dtype="float")
    with pytest.raises(ValueError, match=r"Sequential\.to: 'gpu0' is not a device"):
        model.to(device="gpu0")
    assert all(torch.equal(a, b) for a, b in zip(values(model), before, strict=True))
    assert is_flat(model)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_continues_after_to_float64_like_torch_optim(name):
    make_mine, make_theirs = OPTIMIZERS[name]
    batches = make_batches(6)
    model = make_model(torch.float32)
    optimizer = make_mine(model.parameters())
    train_steps(model, optimizer, batches[:3])
    # The oracle starts from the float32 run's values and state, in float64.
    oracle = torch_copy(model).double()
    oracle_optimizer = make_theirs(list(oracle.parameters()))
    oracle_state = torch_state_from(name, optimizer, list(oracle.parameters()))
    oracle_optimizer.load_state_dict({**oracle_optimizer.state_dict(), "state": oracle_state})

    model.to(dtype=torch.float64)
    train_steps(model, optimizer, batches[3:])
    torch_train_steps(oracle, oracle_optimizer, batches[3:])

    assert all(t.dtype == torch.float64 for t in optimizer.state.values())
    assert is_flat(model)
    for mine, theirs in zip(model.parameters(), oracle.parameters(), strict=True):
        # A float32 state would leave errors of ~1e-8 here.
        torch.testing.assert_close(mine.data, theirs.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_state_dict_follows_the_model_before_the_next_step(name):
    make_mine, _ = OPTIMIZERS[name]
    model = make_model(torch.float32)
    optimizer = make_mine(model.parameters())
    train_steps(model, optimizer, make_batches(2, torch.float32))
    saved32 = optimizer.state_dict()["state"]
    model.to(dtype=torch.float64)
    saved64 = optimizer.state_dict()["state"]
    for key, tensor in saved64.items():
        assert tensor.dtype == torch.float64
        assert torch.equal(tensor, saved32[key].double())
    # A move of device only (the meta device stands for a second one on the CPU).
    model.to("meta")
    for key, tensor in optimizer.state_dict()["state"].items():
        assert (tensor.device.type, tensor.dtype, tensor.shape) == (
            "meta",
            torch.float64,
            saved64[key].shape,
        )


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_state_dict_loads_across_dtypes(name):
    """A state saved in float64 loads into a float32 optimizer (cast), and back exactly."""
    make_mine, _ = OPTIMIZERS[name]
    batches = make_batches(4)
    model64 = make_model(torch.float64)
    optimizer64 = make_mine(model64.parameters())
    train_steps(model64, optimizer64, batches[:2])
    saved = optimizer64.state_dict()

    model32 = make_model(torch.float32)
    model32.load_state_dict(model64.state_dict())
    optimizer32 = make_mine(model32.parameters())
    optimizer32.load_state_dict(saved)
    for key, tensor in optimizer32.state.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, saved["state"][key].float())
    # Continuing in float32 follows the float64 run to float32 precision.
    train_steps(model32, optimizer32, batches[2:])
    train_steps(model64, optimizer64, batches[2:])
    for p32, p64 in zip(model32.parameters(), model64.parameters(), strict=True):
        torch.testing.assert_close(p32.data.double(), p64.data, rtol=1e-5, atol=1e-5)


def test_optimizer_follows_a_non_flat_module():
    """A lone Linear is not flat: parameters are moved one by one, the optimizer follows."""
    layer = nn.Linear(3, 2, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    optimizer = optim.SGD(layer.parameters(), lr=0.1, momentum=0.5)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    layer(x)
    layer.backward(torch.ones(4, 2))
    optimizer.step()
    layer.to(dtype=torch.float64)
    oracle = torch.nn.Linear(3, 2, dtype=torch.float64)
    with torch.no_grad():
        oracle.weight.copy_(layer.weight.data)
        oracle.bias.copy_(layer.bias.data)  # type: ignore[union-attr]
    oracle_optimizer = torch.optim.SGD(oracle.parameters(), lr=0.1, momentum=0.5)
    velocity = optimizer.state_dict()["state"]["momentum_buffer"]
    oracle_optimizer.load_state_dict(
        {
            **oracle_optimizer.state_dict(),
            "state": {
                0: {"momentum_buffer": velocity[:6].view(2, 3) / 0.1},
                1: {"momentum_buffer": velocity[6:] / 0.1},
            },
        }
    )
    optimizer.zero_grad()
    layer(x.double())
    layer.backward(torch.ones(4, 2, dtype=torch.float64))
    optimizer.step()
    oracle(x.double()).sum().backward()
    oracle_optimizer.step()
    assert optimizer.state["momentum_buffer"].dtype == torch.float64
    torch.testing.assert_close(layer.weight.data, oracle.weight.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.bias.data, oracle.bias.detach(), rtol=1e-10, atol=1e-12)  # type: ignore[union-attr]


# -- mismatch errors on the CPU ------------------------------------------------------------------


def test_dtype_mismatch_names_module_and_both_dtypes():
    model = make_model(torch.float64)
    with pytest.raises(
        TypeError,
        match=r"Linear: input dtype torch\.float32 does not match the parameters' dtype "
        r"torch\.float64; convert the input or call \.to\(dtype=\.\.\.\) on the module",
    ):
        model(torch.zeros(3, 2, dtype=torch.float32))


def test_device_mismatch_message():
    """Produced on the CPU with a stand-in input that reports another device."""
    parameter = torch.zeros(2, 2)
    stand_in = SimpleNamespace(dtype=parameter.dtype, device=torch.device("cuda", 0))
    with pytest.raises(
        ValueError,
        match=r"Linear: input is on cuda:0 but the parameters are on cpu; "
        r"move one of them with \.to\(device=\.\.\.\)",
    ):
        check_like_parameter("Linear", stand_in, parameter)  # type: ignore[arg-type]


@pytest.mark.parametrize("device", ["cuda:63", "hpu", "mps"])
def test_to_a_device_that_is_not_there_names_the_module_and_changes_nothing(device: str) -> None:
    """No machine has 64 GPUs here; without CUDA torch refuses "cuda" outright. Other device
    types this build lacks fail in torch with other exceptions (a missing module for "hpu")."""
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("an MPS device is there")
    model = make_model()
    before = [t for p in model.parameters() for t in (p.data, p.grad)]
    with pytest.raises(
        RuntimeError, match=rf"^Sequential\.to: {device} is not available \("
    ) as caught:
        model.to(device)
    # (torch's first sentence alone: "mps"'s message went on for some 7 000 characters, every
    # backend of the dispatcher, in 55 lines)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300, message
    after = [t for p in model.parameters() for t in (p.data, p.grad)]
    assert all(a is b for a, b in zip(after, before, strict=True))


class _Immovable(torch.Tensor):
    """A buffer whose move fails, as a move that runs out of memory would."""

    def to(self, *args: object, **kwargs: object) -> torch.Tensor:  # type: ignore[override]
        raise RuntimeError("out of memory (simulated)")


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "not flat"])
def test_a_move_that_fails_leaves_the_module_as_it_was(flat: bool) -> None:
    """Every tensor is moved before any is put in place: a failure on the last one (a buffer)
    leaves every parameter, gradient and buffer as it was."""
    batch_norm = nn.BatchNorm1d(3, dtype=torch.float32 if flat else torch.float64)
    model = nn.Sequential(nn.Linear(2, 3), batch_norm)
    assert is_flat(model) == flat
    batch_norm.register_buffer("running_mean", torch.zeros(3).as_subclass(_Immovable))
    tensors = [t for p in model.parameters() for t in (p.data, p.grad)]
    buffers = [b for _, b in model.named_buffers()]
    with pytest.raises(RuntimeError, match="out of memory"):
        model.to(dtype=torch.float16)
    assert all(
        a is b
        for a, b in zip(
            tensors, [t for p in model.parameters() for t in (p.data, p.grad)], strict=True
        )
    )
    assert all(a is b for a, b in zip(buffers, [b for _, b in model.named_buffers()], strict=True))


@pytest.mark.parametrize(
    "criterion, target",
    [
        (nn.CrossEntropyLoss(), torch.tensor([0, 1, 2, 1])),
        (nn.MSELoss(), torch.ones(4, 3)),
    ],
    ids=["cross-entropy", "mse"],
)
def test_losses_follow_a_prediction_of_the_same_shape_and_dtype_to_another_device(
    criterion: nn.Loss, target: torch.Tensor
) -> None:
    """A prediction like the last one but on another device is checked again, and the loss's
    per-shape tensors are made anew there: the quick path compares the device too. PyTorch's
    ``meta`` device (shapes only) stands for a second device, so this runs on the CPU."""
    x = torch.linspace(-1.0, 1.0, 12).reshape(4, 3)
    first = criterion(x, target)
    gradient = criterion.backward()
    loss = criterion(x.to("meta"), target.to("meta"))
    assert loss.device.type == "meta" and loss.shape == first.shape
    assert criterion.backward().device.type == "meta"
    assert torch.equal(criterion(x, target), first)
    assert torch.equal(criterion.backward(), gradient)


# -- CUDA ----------------------------------------------------------------------------------------


@cuda
@requires_cuda
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_cuda_training_matches_cpu(name):
    make_mine, _ = OPTIMIZERS[name]
    batches = make_batches(4)
    cpu_model = make_model(torch.float64)
    cpu_optimizer = make_mine(cpu_model.parameters())
    gpu_model = make_model(torch.float64).to(device="cuda")
    gpu_optimizer = make_mine(gpu_model.parameters())
    assert is_flat(gpu_model)
    assert all(p.device.type == "cuda" for p in gpu_model.parameters())
    (x, y) = batches[0]
    criterion = nn.CrossEntropyLoss()
    cpu_out = cpu_model(x)
    gpu_out = gpu_model(x.cuda())
    assert gpu_out.device.type == "cuda"
    torch.testing.assert_close(gpu_out.cpu(), cpu_out, rtol=1e-10, atol=1e-12)
    criterion(cpu_out, y)
    cpu_dx = cpu_model.backward(criterion.backward())
    criterion(gpu_out, y.cuda())
    gpu_dx = gpu_model.backward(criterion.backward())
    torch.testing.assert_close(gpu_dx.cpu(), cpu_dx, rtol=1e-10, atol=1e-12)
    for mine, theirs in zip(gpu_model.parameters(), cpu_model.parameters(), strict=True):
        torch.testing.assert_close(mine.grad.cpu(), theirs.grad, rtol=1e-10, atol=1e-12)
    train_steps(cpu_model, cpu_optimizer, batches)
    train_steps(gpu_model, gpu_optimizer, batches)
    assert all(t.device.type == "cuda" for t in gpu_optimizer.state.values())
    for mine, theirs in zip(gpu_model.parameters(), cpu_model.parameters(), strict=True):
        torch.testing.assert_close(mine.data.cpu(), theirs.data, rtol=1e-10, atol=1e-12)


@cuda
@requires_cuda
def test_cuda_non_blocking_moves_give_the_values_moved():
    """``non_blocking=True`` both ways, with a batch norm's buffers: the values come back bit
    for bit, flat (a copy from the GPU read by the host before it is done would not), the
    gradients and buffers with them."""
    model = nn.Sequential(make_model(), nn.BatchNorm1d(2)).to(torch.float64)
    model(torch.randn(BATCH, SIZES[0], dtype=torch.float64))
    for parameter in model.parameters():
        parameter.grad.copy_(torch.randn_like(parameter.grad))
    tensors = [t.clone() for p in model.parameters() for t in (p.data, p.grad)]
    buffers = [b.clone() for b in model.buffers()]
    model.to("cuda", non_blocking=True)
    assert all(p.data.is_cuda for p in model.parameters()) and is_flat(model)
    model.to("cpu", non_blocking=True)
    assert is_flat(model)
    moved = [t for p in model.parameters() for t in (p.data, p.grad)]
    assert all(torch.equal(a, b) for a, b in zip(moved, tensors, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), buffers, strict=True))


@cuda
@requires_cuda
def test_cuda_float32_training_matches_cpu_to_float32_precision():
    batches = make_batches(3, torch.float32)
    cpu_model = make_model(torch.float32)
    gpu_model = make_model(torch.float32).to("cuda")
    cpu_optimizer = optim.SGD(cpu_model.parameters(), lr=0.1, momentum=0.9)
    gpu_optimizer = optim.SGD(gpu_model.parameters(), lr=0.1, momentum=0.9)
    train_steps(cpu_model, cpu_optimizer, batches)
    train_steps(gpu_model, gpu_optimizer, batches)
    for mine, theirs in zip(gpu_model.parameters(), cpu_model.parameters(), strict=True):
        torch.testing.assert_close(mine.data.cpu(), theirs.data, rtol=1e-4, atol=1e-5)


@cuda
@requires_cuda
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_cuda_optimizer_follows_the_model_mid_training(name):
    """Half the steps on the CPU, ``.to("cuda")``, the rest on the GPU: same as all on the CPU."""
    make_mine, _ = OPTIMIZERS[name]
    batches = make_batches(6)
    reference = make_model(torch.float64)
    reference_optimizer = make_mine(reference.parameters())
    train_steps(reference, reference_optimizer, batches)

    model = make_model(torch.float64)
    optimizer = make_mine(model.parameters())
    train_steps(model, optimizer, batches[:3])
    model.to("cuda")
    assert is_flat(model)
    train_steps(model, optimizer, batches[3:])
    assert all(t.device.type == "cuda" for t in optimizer.state.values())
    for mine, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine.data.cpu(), theirs.data, rtol=1e-10, atol=1e-12)


@cuda
@requires_cuda
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_cuda_optimizer_state_dict_loads_on_the_other_device(name):
    make_mine, _ = OPTIMIZERS[name]
    batches = make_batches(4)
    gpu_model = make_model(torch.float64).to("cuda")
    gpu_optimizer = make_mine(gpu_model.parameters())
    train_steps(gpu_model, gpu_optimizer, batches[:2])
    saved = gpu_optimizer.state_dict()
    assert all(t.device.type == "cuda" for t in saved["state"].values())

    cpu_model = make_model(torch.float64)
    cpu_model.load_state_dict(gpu_model.state_dict())
    cpu_optimizer = make_mine(cpu_model.parameters())
    cpu_optimizer.load_state_dict(saved)
    assert all(t.device.type == "cpu" for t in cpu_optimizer.state.values())
    # And back: a CPU state loads into a GPU optimizer.
    gpu_optimizer.load_state_dict(cpu_optimizer.state_dict())
    train_steps(cpu_model, cpu_optimizer, batches[2:])
    train_steps(gpu_model, gpu_optimizer, batches[2:])
    for mine, theirs in zip(gpu_model.parameters(), cpu_model.parameters(), strict=True):
        torch.testing.assert_close(mine.data.cpu(), theirs.data, rtol=1e-10, atol=1e-12)


@cuda
@requires_cuda
def test_cuda_round_trip_keeps_values_parameters_and_flatness():
    model = make_model(torch.float32)
    parameters = list(model.parameters())
    before = values(model)
    model.to("cuda")
    assert all(p.device.type == "cuda" and p.grad.device.type == "cuda" for p in parameters)
    assert is_flat(model)
    model.to("cpu")
    assert all(a is b for a, b in zip(model.parameters(), parameters, strict=True))
    assert is_flat(model)
    assert all(torch.equal(a, b) for a, b in zip(values(model), before, strict=True))
    model.to(device="cuda", dtype=torch.float64)
    assert all(p.device.type == "cuda" and p.dtype == torch.float64 for p in parameters)
    assert is_flat(model)


@cuda
@requires_cuda
def test_cuda_wrong_device_input_and_target_raise_clear_errors():
    model = make_model(torch.float32).to("cuda")
    with pytest.raises(
        ValueError, match=r"Linear: input is on cpu but the parameters are on cuda:0"
    ):
        model(torch.zeros(3, 2))
    prediction = model(torch.zeros(3, 2, device="cuda"))
    with pytest.raises(
        ValueError, match=r"CrossEntropyLoss: target is on cpu but the prediction is on cuda:0"
    ):
        nn.CrossEntropyLoss()(prediction, torch.zeros(3, dtype=torch.int64))


def test_gpu_check_script_times_both_frameworks_on_the_cpu() -> None:
    """scripts/gpu-check's benchmark, as a smoke run without a GPU (no CUDA graphs there)."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "gpu-check"
    result = subprocess.run(
        [str(script), "--device", "cpu", "--steps", "2", "--bench-only"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 2-")]
    assert [row.split(" | ")[0] for row in rows] == ["| 2-25-25-25-2", "| 2-1024-1024-1024-2"]
    # minidl's and torch.nn's times, and "n/a" for the CUDA graphs on the CPU.
    assert all(row.count("n/a") == 2 for row in rows)


def test_the_cuda_tests_run_on_the_cpu_as_a_smoke_run() -> None:
    """tests/test_cuda.py, skipped without a GPU, run with MINIDL_TEST_DEVICE=cpu: each compares
    the CPU with itself there (no oracle), but the tests' own code runs, so that it cannot rot
    between the runs of scripts/gpu-check. Only the NCCL test needs CUDA."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            str(root / "tests" / "test_cuda.py"),
        ],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "MINIDL_TEST_DEVICE": "cpu"},
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    # Nothing skipped but the NCCL test, nothing failed or deselected.
    assert re.fullmatch(r"\d+ passed, 1 skipped in .*", summary), summary


def test_fit_error_rates_and_fit_rounds_refuse_meta_data_before_anything_changes() -> None:
    """fit ran every step of a first epoch on meta tensors (the optimizer stepped) and failed
    turning the epoch's loss into a number, in torch's words ("Tensor.item() cannot be called on
    meta tensors"); error_rate and fit_rounds failed so too. Each refuses meta data by name
    before anything changes; predict, which gives shapes, still runs there."""
    from minidl.rounds import fit_rounds
    from minidl.train import error_rate, fit, predict

    def model() -> nn.Sequential:
        return nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2)).to("meta")

    network = model()
    optimizer = optim.SGD(network.parameters(), lr=0.1)
    x = torch.empty(10, 2, device="meta")
    y = torch.zeros(10, dtype=torch.long, device="meta")
    with pytest.raises(
        ValueError, match=r"^fit: x and y are on the meta device, which holds shapes and no values"
    ):
        fit(network, nn.CrossEntropyLoss(), optimizer, x, y, epochs=2, batch_size=4)
    assert optimizer.step_count == 0
    with pytest.raises(ValueError, match=r"^error_rate: x or y is on the meta device"):
        error_rate(network, x, y)
    with pytest.raises(ValueError, match=r"^fit_rounds: the training sets are on the meta device"):
        fit_rounds(
            [model(), model()],
            nn.CrossEntropyLoss(),
            lambda stack: optim.SGD(stack.parameters(), lr=0.1),
            [(x, y), (x, y)],
            epochs=1,
            batch_size=4,
            generators=[torch.Generator(), torch.Generator()],
        )
    assert predict(network, x).shape == (10,)
    from minidl.rounds import stacked_error_rates

    stack = nn.stack_models([model(), model()])
    with pytest.raises(ValueError, match=r"^stacked_error_rates: x and y are on the meta device"):
        stacked_error_rates(stack, torch.stack([x, x]), torch.stack([y, y]))
