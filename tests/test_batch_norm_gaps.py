"""Tests that kill the mutants of ``minidl.nn.batch_norm`` that survived a second mutation audit.

Each test pins down a behaviour a user relies on, against an oracle: the documented error
(type and the words of its message, naming the layer and what was given) and the state left
unchanged after a refusal.
"""

from __future__ import annotations

import copy
import pickle
import re

import pytest
import torch

from minidl import nn, optim
from minidl.nn.parameter import Parameter
from tests.helpers import F64


@pytest.mark.parametrize("value", [0, 0.0, None, "False"])
def test_batch_norm_refuses_a_track_running_stats_that_is_no_bool_as_a_type_error(
    value: object,
) -> None:
    """Only ``True`` and ``False`` are PyTorch's values; ``0`` equals ``False`` but is no bool,
    so it is a TypeError naming what was given (not the ValueError of ``False``, which would
    tell the user to leave out an argument they gave as a number), in the constructor and when
    set, the layer left as it was."""
    message = (
        rf"^BatchNorm1d: track_running_stats must be True or False, got {re.escape(repr(value))}"
    )
    with pytest.raises(TypeError, match=message):
        nn.BatchNorm1d(3, track_running_stats=value)  # type: ignore[arg-type]
    layer = nn.BatchNorm1d(3, dtype=F64)
    with pytest.raises(TypeError, match=message):
        layer.track_running_stats = value
    assert layer.track_running_stats is True


@pytest.mark.parametrize(
    ("dtype", "eps"), [(torch.float32, 1e-50), (torch.float16, 1e-46), (torch.bfloat16, 5e-46)]
)
def test_batch_norm_names_the_smallest_positive_value_of_the_dtype_that_rounds_eps_to_0(
    dtype: torch.dtype, eps: float
) -> None:
    """The refusal of an eps that rounds to 0 tells the smallest positive value the dtype
    holds: float32's smallest subnormal, 1.4013e-45 (a 16-bit layer computes in float32), the
    bound an eps must reach, not its smallest normal number (1.17549e-38), which would have the
    user refuse eps values the layer holds; the running statistics are left as they were."""
    layer = nn.BatchNorm1d(2, dtype=dtype)
    layer.eps = eps
    before = [buffer.clone() for buffer in layer.buffers()]
    with pytest.raises(
        ValueError,
        match=rf"^BatchNorm1d: eps={re.escape(repr(eps))} rounds to 0 in torch\.float32, in which the "
        r"layer computes \(its smallest positive value is 1\.4013e-45\)",
    ):
        layer(torch.randn(4, 2, dtype=dtype))
    assert all(map(torch.equal, layer.buffers(), before))
    layer.eps = 1.4013e-45  # (the value named is taken)
    layer(torch.randn(4, 2, dtype=dtype))


@pytest.mark.parametrize(
    "count",
    [
        torch.tensor(0.0, dtype=F64),
        torch.tensor(0, dtype=torch.complex64),
        torch.tensor(False),
    ],
    ids=["float64", "complex64", "bool"],
)
@pytest.mark.parametrize("momentum", [None, 0.1])
def test_batch_norm_refuses_a_count_of_batches_that_is_no_integer(
    count: torch.Tensor, momentum: float | None
) -> None:
    """``num_batches_tracked`` is PyTorch's int64 count: one registered by hand as a 0-dim
    float, complex or bool tensor is refused by name in training, whatever the momentum (a
    float count would average with a fractional weight; a bool one stops at True), before
    the running statistics or the count change."""
    norm = nn.BatchNorm1d(3, momentum=momentum, dtype=F64)
    norm.register_buffer("num_batches_tracked", count.clone())
    before = [buffer.clone() for buffer in norm.buffers()]
    with pytest.raises(
        ValueError,
        match=rf"^BatchNorm1d: num_batches_tracked has shape \(\), {re.escape(str(count.dtype))}, "
        r"expected a 0-dim integer tensor \(the batches counted\)$",
    ):
        norm(torch.randn(5, 3, dtype=F64))
    assert all(map(torch.equal, norm.buffers(), before))
    assert norm.num_batches_tracked.dtype == count.dtype


def test_batch_norm_refuses_a_running_var_on_another_device_than_its_mean() -> None:
    """A ``running_var`` registered on another device (here the meta device) than the
    ``running_mean`` is named with both devices before anything is updated (in training, the
    update would mix devices; in evaluation the output would be computed on no data)."""
    norm = nn.BatchNorm1d(3, dtype=F64)
    norm.register_buffer("running_var", torch.ones(3, dtype=F64, device="meta"))
    mean = norm.running_mean.clone()
    for training in (True, False):
        norm.train(training)
        with pytest.raises(
            ValueError,
            match=r"^BatchNorm1d: running_var is torch\.float64 on meta, expected torch\.float64 "
            r"on cpu like running_mean$",
        ):
            norm(torch.randn(5, 3, dtype=F64))
        assert torch.equal(norm.running_mean, mean)
        assert int(norm.num_batches_tracked) == 0


@pytest.mark.parametrize("name", ["weight", "bias"])
def test_batch_norm_refuses_a_plain_tensor_set_by_hand_as_its_weight_or_bias(name: str) -> None:
    """``norm.weight = torch.ones(3)`` leaves the registered Parameter in ``parameters()`` and
    the state dict: the forward refuses it by name as a TypeError (not a Parameter), before
    the running statistics or the count change."""
    norm = nn.BatchNorm1d(3, dtype=F64)
    setattr(norm, name, torch.ones(3, dtype=F64))
    before = [buffer.clone() for buffer in norm.buffers()]
    with pytest.raises(
        TypeError,
        match=rf"^BatchNorm1d: {name} must be a minidl Parameter, got Tensor \(an attribute set "
        r"by hand is not registered",
    ):
        norm(torch.randn(4, 3, dtype=F64))
    assert all(map(torch.equal, norm.buffers(), before))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_backward_of_a_gradient_in_the_memory_of_its_weights_gradient(
    training: bool,
) -> None:
    """A gradient that is ``weight.grad`` expanded over the batch is read as it was given: the
    input and parameter gradients equal PyTorch autograd's in float64 for that gradient, though
    the backward adds into ``weight.grad`` (read after the addition, they were wrong)."""
    torch.manual_seed(0)
    norm = nn.BatchNorm1d(3, dtype=F64).train(training)
    assert norm.weight is not None and norm.bias is not None
    norm.weight.data.copy_(torch.tensor([0.5, -2.0, 1.5], dtype=F64))
    norm.bias.data.copy_(torch.tensor([0.1, 0.2, -0.3], dtype=F64))
    norm.running_mean.copy_(torch.tensor([0.3, -0.1, 0.2], dtype=F64))
    norm.running_var.copy_(torch.tensor([1.5, 0.5, 2.0], dtype=F64))
    assert norm.weight.grad is not None and norm.bias.grad is not None
    norm.weight.grad.copy_(torch.tensor([1.0, -3.0, 2.0], dtype=F64))
    given = norm.weight.grad.clone()
    x = torch.randn(4, 3, dtype=F64)
    twin = torch.nn.BatchNorm1d(3, dtype=F64).train(training)
    with torch.no_grad():
        twin.weight.copy_(norm.weight.data)
        twin.bias.copy_(norm.bias.data)
        twin.running_mean.copy_(norm.running_mean)  # type: ignore[union-attr]
        twin.running_var.copy_(norm.running_var)  # type: ignore[union-attr]
    norm(x)
    leaf = x.clone().requires_grad_()
    twin(leaf).backward(given.expand(4, 3))
    assert leaf.grad is not None and twin.weight.grad is not None and twin.bias.grad is not None
    grad_input = norm.backward(norm.weight.grad.expand(4, 3))
    torch.testing.assert_close(grad_input, leaf.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(norm.weight.grad, given + twin.weight.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(norm.bias.grad, twin.bias.grad, rtol=1e-10, atol=1e-12)


def test_batch_norm_without_its_weight_still_checks_its_bias() -> None:
    """With the weight removed (``register_parameter("weight", None)``) the bias still
    applies, so a bias whose data was set by hand to another dtype is refused by name, as
    with both, before the running statistics or the count change."""
    norm = nn.BatchNorm1d(3, dtype=F64)
    norm.register_parameter("weight", None)
    assert norm.bias is not None
    norm.bias.data = torch.zeros(3)
    before = [buffer.clone() for buffer in norm.buffers()]
    with pytest.raises(
        ValueError,
        match=r"^BatchNorm1d: bias has shape \(3,\), torch\.float32 on cpu, expected \(3,\), "
        r"torch\.float64 on cpu like the running statistics$",
    ):
        norm(torch.randn(4, 3, dtype=F64))
    assert all(map(torch.equal, norm.buffers(), before))


def test_batch_norm_reads_an_input_that_requires_grad_as_a_plain_value() -> None:
    """An input from a torch autograd graph updates the running statistics by value: they
    record no graph (which would keep every batch's graph alive and make them non-leaf
    tensors), and equal torch.nn.BatchNorm1d's in float64."""
    torch.manual_seed(1)
    norm = nn.BatchNorm1d(3, dtype=F64)
    twin = torch.nn.BatchNorm1d(3, dtype=F64)
    x = torch.randn(5, 3, dtype=F64, requires_grad=True)
    out = norm(x * 2.0)
    with torch.no_grad():
        expected = twin(x * 2.0)
    assert out.grad_fn is None and not out.requires_grad
    for statistic in (norm.running_mean, norm.running_var):
        assert statistic.grad_fn is None and not statistic.requires_grad
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(norm.running_mean, twin.running_mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(norm.running_var, twin.running_var, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_batch_norm_without_affine_computes_its_backward_in_float32(
    dtype: torch.dtype,
) -> None:
    """A 16-bit layer computes the backward's sums over the batch in float32, as PyTorch
    does: for gradients near 1000 that differ by about 1, the batch mean of the gradient
    rounded to 16 bits (an error of up to 0.25 in float16, 2 in bfloat16) would swamp the
    deviations from it. The input gradient equals the float64 formula, evaluated on the
    16-bit input and gradient (and the normalised input, cached in 16 bits), to the 16-bit
    rounding of the result."""
    torch.manual_seed(2)
    norm = nn.BatchNorm1d(3, affine=False, dtype=dtype)
    x = torch.randn(8, 3).to(dtype)
    grad = (1000.0 + torch.randn(8, 3)).to(dtype)
    norm(x)
    grad_input = norm.backward(grad)
    x64, g64 = x.to(F64), grad.to(F64)
    centered = x64 - x64.mean(0)
    inv_std = (centered.square().mean(0) + norm.eps).rsqrt()
    normalized = (centered * inv_std).to(dtype).to(F64)  # (cached in the layer's dtype)
    expected = inv_std * (g64 - g64.mean(0) - normalized * (g64 * normalized).mean(0))
    assert grad_input.dtype == dtype
    scale = float(expected.abs().max())
    error = float((grad_input.to(F64) - expected).abs().max())
    assert error <= 2 * torch.finfo(dtype).eps * scale, (error, scale)


def test_batch_norm_refuses_integer_running_statistics_of_one_dtype() -> None:
    """Running statistics both registered by hand as int64 (of the right shape, one dtype and
    device) are no statistics the layer can update in place or normalise with: the mean is
    named, as a floating-point tensor is expected, before anything changes."""
    norm = nn.BatchNorm1d(3, affine=False)
    norm.register_buffer("running_mean", torch.zeros(3, dtype=torch.int64))
    norm.register_buffer("running_var", torch.ones(3, dtype=torch.int64))
    before = [buffer.clone() for buffer in norm.buffers()]
    with pytest.raises(
        ValueError,
        match=r"^BatchNorm1d: running_mean has shape \(3,\), torch\.int64, expected a "
        r"floating-point tensor of shape \(3,\) \(num_features\)$",
    ):
        norm(torch.randn(5, 3))
    assert all(map(torch.equal, norm.buffers(), before))


def test_batch_norm_repr_names_every_setting() -> None:
    """The repr, which a checkpoint's architecture check compares, names the features, eps,
    momentum (None for the cumulative average) and affine: two batch norms that normalise
    differently never print alike (affine dropped from it passed every test)."""
    assert repr(nn.BatchNorm1d(3)) == "BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True)"
    assert (
        repr(nn.BatchNorm1d(4, eps=1e-3, momentum=None, affine=False))
        == "BatchNorm1d(4, eps=0.001, momentum=None, affine=False)"
    )


def test_a_cumulative_batch_norm_on_the_meta_device_trains_in_a_sequential() -> None:
    """A Sequential on the meta device (shapes only, as a model is laid out before its memory)
    holding a BatchNorm1d with momentum=None runs a training forward: the trial's check of a
    negative count of batches reads no meta value (reading it raised 'Tensor.item() cannot be
    called on meta tensors'), and the output has the batch's shape."""
    model = nn.Sequential(
        nn.Linear(2, 3, device="meta"), nn.BatchNorm1d(3, momentum=None, device="meta")
    )
    output = model(torch.randn(4, 2, device="meta"))
    assert output.shape == (4, 3) and output.is_meta
    assert model[1].num_batches_tracked.is_meta


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_on_the_meta_device_trains_alone(momentum: float | None) -> None:
    """A layer on the meta device (shapes only) runs a training forward with a momentum or
    without: the count, which holds no number there, is not read (reading it raised), and
    the output and buffers keep their shapes on the meta device."""
    norm = nn.BatchNorm1d(3, momentum=momentum, device="meta")
    output = norm(torch.randn(4, 3, device="meta"))
    assert output.shape == (4, 3) and output.is_meta
    assert norm.running_mean.is_meta and norm.num_batches_tracked.is_meta


def test_fit_names_a_count_of_batches_of_another_shape_before_it_draws_or_counts() -> None:
    """fit asks each batch norm, before it draws the epoch's order, what its training forward
    would refuse: a ``num_batches_tracked`` registered by hand with shape ``(2,)`` (with
    ``momentum=None``, where it is read) is named as a ValueError, as the forward names it,
    not torch's error of a tensor of two elements read as a number; the generator, the
    parameters and the buffers are left as they were."""
    from minidl.train import fit

    torch.manual_seed(8)
    x = torch.randn(20, 2, dtype=F64)
    y = (x[:, 0] > 0).long()
    norm = nn.BatchNorm1d(3, momentum=None, dtype=F64)
    model = nn.Sequential(nn.Linear(2, 3, dtype=F64), norm, nn.Linear(3, 2, dtype=F64))
    norm.register_buffer("num_batches_tracked", torch.zeros(2, dtype=torch.int64))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    state = generator.get_state()
    before = [tensor.clone() for tensor in model.state_dict().values()]
    with pytest.raises(
        ValueError,
        match=r"^BatchNorm1d: num_batches_tracked has shape \(2,\), torch\.int64, expected a "
        r"0-dim integer tensor \(the batches counted\)$",
    ):
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=10,
            generator=generator)  # fmt: skip
    assert torch.equal(generator.get_state(), state)
    assert all(map(torch.equal, model.state_dict().values(), before))


@pytest.mark.parametrize("name", ["weight", "bias"])
def test_batch_norm_refuses_a_parameter_whose_data_was_moved_to_another_device(
    name: str,
) -> None:
    """A weight or bias whose data was set by hand on another device (here the meta device)
    than the running statistics is refused by name with both devices, before the running
    statistics or the count change (the output would otherwise be computed on no data)."""
    norm = nn.BatchNorm1d(3, dtype=F64)
    getattr(norm, name).data = torch.ones(3, dtype=F64, device="meta")
    before = [buffer.clone() for buffer in norm.buffers()]
    with pytest.raises(
        ValueError,
        match=rf"^BatchNorm1d: {name} has shape \(3,\), torch\.float64 on meta, expected "
        r"\(3,\), torch\.float64 on cpu like the running statistics$",
    ):
        norm(torch.randn(4, 3, dtype=F64))
    assert all(map(torch.equal, norm.buffers(), before))


@pytest.mark.parametrize("alone", [False, True], ids=["in a Sequential", "alone"])
@pytest.mark.parametrize(
    ("dtype", "hint"),
    [
        (torch.complex64, ""),
        (torch.float8_e4m3fn, ""),
        (torch.uint16, "; torch cannot add to a torch.uint16 tensor: use torch.int64"),
        (torch.uint64, "; torch cannot add to a torch.uint64 tensor: use torch.int64"),
    ],
    ids=str,
)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_a_batch_norm_names_a_count_of_batches_torch_cannot_count_in(
    momentum: float | None, dtype: torch.dtype, hint: str, alone: bool
) -> None:
    """A ``num_batches_tracked`` registered by hand as a tensor torch cannot compare with 0 or
    add 1 to (complex, float8, uint16 to uint64) is refused by the layer's own check, by name
    as a ValueError, alone and inside a Sequential (whose trial asks the layer, before it runs,
    what its training forward would refuse), with a momentum (the count not read there) and
    without: a Sequential's trial compared it with 0 (torch's NotImplementedError of a complex,
    float8 or uint16 tensor), and a uint16 count alone failed at ``add_`` after the running
    statistics were updated. The running statistics and the count are left as they were."""
    norm = nn.BatchNorm1d(3, momentum=momentum, dtype=F64)
    norm.register_buffer("num_batches_tracked", torch.zeros((), dtype=dtype))
    model = norm if alone else nn.Sequential(norm)
    before = [buffer.clone() for buffer in norm.buffers()]
    with pytest.raises(ValueError) as raised:
        model(torch.randn(4, 3, dtype=F64))
    assert str(raised.value) == (
        f"BatchNorm1d: num_batches_tracked has shape (), {dtype}, expected a 0-dim integer "
        f"tensor (the batches counted){hint}"
    )
    assert all(
        b.dtype == a.dtype and b.tolist() == a.tolist()
        for a, b in zip(norm.buffers(), before, strict=True)
    )


def test_batch_norm_backward_after_its_bias_alone_was_cast_names_the_cast() -> None:
    """A bias whose data was cast by hand (to float32) after a float64 forward, the weight and
    running statistics left as they were, is refused by backward as a cast after the forward
    (RuntimeError naming both dtypes and telling to run forward again), as a cast weight is,
    before either gradient is written."""
    torch.manual_seed(3)
    norm = nn.BatchNorm1d(3, dtype=F64)
    norm(torch.randn(5, 3, dtype=F64))
    assert norm.bias is not None and norm.weight is not None
    norm.bias.data = norm.bias.data.to(torch.float32)
    with pytest.raises(
        RuntimeError,
        match=r"^BatchNorm1d: the parameters are torch\.float32 on cpu but the last forward ran "
        r"in torch\.float64 on cpu: the module was cast or moved \(\.to\(\.\.\.\)\) after that "
        r"forward; run forward again before backward",
    ):
        norm.backward(torch.randn(5, 3, dtype=F64))
    assert not norm.weight.grad.any() and not norm.bias.grad.any()


@pytest.mark.parametrize("affine", [True, False])
def test_a_batch_norm_pickled_after_a_forward_holds_its_running_mean_once(affine: bool) -> None:
    """Pickled after a forward, a layer holds its tensors once: what the forward adds to the
    pickle is its two caches (the normalised batch and the inverse standard deviations, 5 x
    1000 float64 values, 40000 bytes) and a little bookkeeping, not a second copy of the
    running mean (8000 bytes) kept for the forward's checks, which would also make the loaded
    copy hold the statistics twice."""
    torch.manual_seed(4)
    norm = nn.BatchNorm1d(1000, affine=affine, dtype=F64)
    before = len(pickle.dumps(norm))
    norm(torch.randn(4, 1000, dtype=F64))
    caches = (4 * 1000 + 1000) * 8
    assert len(pickle.dumps(norm)) - before < caches + 4000


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("name", ["weight", "bias"])
def test_a_parameter_removed_from_a_copy_after_its_forward_is_refused_by_backward(
    how: str, name: str
) -> None:
    """A deep copy or an unpickled copy of a layer after a forward, whose weight (or bias) is
    then removed, refuses backward as the layer itself does: its backward would differentiate
    another function (it gave the input gradient of the layer without gamma, no error). A
    parameter put back, the copy's backward runs, its gradients those of the layer itself."""
    torch.manual_seed(5)
    norm = nn.BatchNorm1d(3, dtype=F64)
    norm.weight.data.mul_(3.0)
    norm(torch.randn(5, 3, dtype=F64))
    copied = copy.deepcopy(norm) if how == "deepcopy" else pickle.loads(pickle.dumps(norm))
    kept = getattr(copied, name)
    copied.register_parameter(name, None)
    grad = torch.randn(5, 3, dtype=F64)
    with pytest.raises(
        RuntimeError,
        match=rf"^BatchNorm1d: {name} was set to None after the last forward, which had one; its "
        r"backward would differentiate another function: run forward again before backward$",
    ):
        copied.backward(grad)
    copied.register_parameter(name, kept)
    assert torch.equal(copied.backward(grad), norm.backward(grad))
    theirs = dict(norm.named_parameters())
    for key, mine in copied.named_parameters():
        assert torch.equal(mine.grad, theirs.pop(key).grad)
    assert not theirs


# -- a count of batches of a narrow integer dtype (a review against PyTorch, 2026-12-07) ----------


@pytest.mark.parametrize("momentum", [None, 0.1])
@pytest.mark.parametrize(("dtype", "largest"), [(torch.uint8, 255), (torch.int8, 127)])
def test_a_narrow_count_at_its_largest_value_is_refused_before_it_wraps(
    momentum: float | None, dtype: torch.dtype, largest: int
) -> None:
    """A uint8 count of 255 wrapped to 0 at the next training batch, and with momentum=None the
    cumulative average started over (the running statistics replaced by one batch's), without a
    word; an int8 count wrapped to -128. Counting up to the largest value is taken, one more
    batch is refused before anything changes (statistics, count), with any momentum."""
    torch.manual_seed(0)
    layer = nn.BatchNorm1d(2, momentum=momentum, dtype=F64)
    layer.register_buffer("num_batches_tracked", torch.tensor(largest - 1, dtype=dtype))
    twin = torch.nn.BatchNorm1d(2, momentum=momentum, dtype=F64)
    twin.num_batches_tracked = torch.tensor(largest - 1)  # (int64: counts on)
    x = torch.randn(5, 2, dtype=F64) + 3.0
    layer(x)
    twin(x)
    assert layer.num_batches_tracked.dtype is dtype and int(layer.num_batches_tracked) == largest
    torch.testing.assert_close(layer.running_mean, twin.running_mean, rtol=1e-14, atol=0.0)
    before = [t.clone() for t in layer.buffers()]
    message = (
        f"BatchNorm1d: num_batches_tracked is {largest}, the largest {dtype} value: counting "
        f"this training batch would wrap it to {torch.iinfo(dtype).min}; register a count of a "
        "wider dtype, register_buffer('num_batches_tracked', count.to(torch.int64))"
    )
    with pytest.raises(ValueError) as info:
        layer(x)
    assert str(info.value) == message
    assert all(torch.equal(a, b) for a, b in zip(layer.buffers(), before, strict=True))
    assert layer.num_batches_tracked.dtype is dtype
    # (in evaluation mode nothing is counted: taken)
    layer.eval()
    layer(x)
    # (registered again in int64, it counts on as PyTorch's does)
    layer.train()
    layer.register_buffer("num_batches_tracked", layer.num_batches_tracked.to(torch.int64))
    layer(x)
    twin(x)
    assert int(layer.num_batches_tracked) == largest + 1
    torch.testing.assert_close(layer.running_mean, twin.running_mean, rtol=1e-14, atol=0.0)
    torch.testing.assert_close(layer.running_var, twin.running_var, rtol=1e-14, atol=0.0)


# A third mutation audit of batch_norm.py (mutants 9, 10, 51, 57, 58, 66).


def test_batch_norm_counts_in_an_int16_count_as_pytorch_does() -> None:
    """A ``num_batches_tracked`` registered as a 0-dim int16 tensor is a count torch counts in:
    with ``momentum=None`` the running statistics are the cumulative average of
    torch.nn.BatchNorm1d's (whose count is int64) and the count keeps its dtype."""
    torch.manual_seed(0)
    layer = nn.BatchNorm1d(3, momentum=None, dtype=F64)
    layer.register_buffer("num_batches_tracked", torch.tensor(4, dtype=torch.int16))
    twin = torch.nn.BatchNorm1d(3, momentum=None, dtype=F64)
    twin.num_batches_tracked = torch.tensor(4)
    for _ in range(3):
        x = torch.randn(5, 3, dtype=F64) * 2.0 + 1.0
        layer(x)
        twin(x)
    assert layer.num_batches_tracked.dtype is torch.int16
    assert int(layer.num_batches_tracked) == 7
    torch.testing.assert_close(layer.running_mean, twin.running_mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(layer.running_var, twin.running_var, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("momentum", [None, 0.1])
def test_batch_norm_refuses_a_count_of_shape_one(momentum: float | None) -> None:
    """A count of shape ``(1,)`` holds one number but is no 0-dim tensor (PyTorch's count and
    what the state dict holds): refused by name, as one of shape (2,), before anything changes."""
    layer = nn.BatchNorm1d(3, momentum=momentum, dtype=F64)
    layer.register_buffer("num_batches_tracked", torch.zeros(1, dtype=torch.int64))
    before = [t.clone() for t in layer.buffers()]
    with pytest.raises(
        ValueError,
        match=r"^BatchNorm1d: num_batches_tracked has shape \(1,\), torch\.int64, expected a "
        r"0-dim integer tensor \(the batches counted\)$",
    ):
        layer(torch.randn(4, 3, dtype=F64))
    assert all(torch.equal(a, b) for a, b in zip(layer.buffers(), before, strict=True))
    assert layer.num_batches_tracked.shape == (1,)


def test_an_int32_count_at_its_largest_value_is_refused_before_it_wraps() -> None:
    """An int32 count of 2**31 - 1 (narrower than int64) would wrap to -2**31 at the next
    training batch: refused, with any momentum, before the statistics or the count change."""
    layer = nn.BatchNorm1d(2, dtype=F64)
    layer.register_buffer("num_batches_tracked", torch.tensor(2**31 - 1, dtype=torch.int32))
    before = [t.clone() for t in layer.buffers()]
    with pytest.raises(ValueError) as info:
        layer(torch.randn(4, 2, dtype=F64))
    assert str(info.value) == (
        "BatchNorm1d: num_batches_tracked is 2147483647, the largest torch.int32 value: counting "
        "this training batch would wrap it to -2147483648; register a count of a wider dtype, "
        "register_buffer('num_batches_tracked', count.to(torch.int64))"
    )
    assert all(torch.equal(a, b) for a, b in zip(layer.buffers(), before, strict=True))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_backward_reads_a_gradient_from_a_graph_as_a_plain_value(
    training: bool,
) -> None:
    """A gradient that requires grad (from a torch autograd graph) is read by value: the input
    gradient and the parameters' gradients record no graph, and equal torch autograd's."""
    torch.manual_seed(2)
    layer = nn.BatchNorm1d(3, dtype=F64).train(training)
    twin = torch.nn.BatchNorm1d(3, dtype=F64).train(training)
    x = torch.randn(5, 3, dtype=F64)
    layer(x)
    leaf = x.clone().requires_grad_()
    grad = torch.randn(5, 3, dtype=F64)
    twin(leaf).backward(grad)
    source = grad.clone().requires_grad_()
    grad_input = layer.backward(source * 1.0)
    assert layer.weight is not None and layer.bias is not None
    for tensor in (grad_input, layer.weight.grad, layer.bias.grad):
        assert not tensor.requires_grad and tensor.grad_fn is None
    torch.testing.assert_close(grad_input, leaf.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.weight.grad, twin.weight.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.bias.grad, twin.bias.grad, rtol=1e-10, atol=1e-12)


def test_batch_norm_backward_refuses_a_weight_of_another_shape_put_in_after_forward() -> None:
    """A weight whose data was set by hand to shape ``(1,)`` (same dtype and device) after the
    forward would broadcast over the features: backward refuses it by name, before any
    gradient is written."""
    torch.manual_seed(4)
    layer = nn.BatchNorm1d(3, dtype=F64)
    layer(torch.randn(5, 3, dtype=F64))
    assert layer.weight is not None and layer.bias is not None
    layer.weight.data = torch.full((1,), 2.0, dtype=F64)
    with pytest.raises(
        ValueError,
        match=r"^BatchNorm1d: weight has shape \(1,\), torch\.float64 on cpu, expected \(3,\), "
        r"torch\.float64 on cpu like the running statistics$",
    ):
        layer.backward(torch.randn(5, 3, dtype=F64))
    assert not layer.weight.grad.any() and not layer.bias.grad.any()


@pytest.mark.parametrize("name", ["weight", "bias"])
def test_batch_norm_without_affine_refuses_a_parameter_registered_after_its_forward(
    name: str,
) -> None:
    """A layer made with ``affine=False`` whose weight (or bias) is registered after a forward
    would have backward differentiate another function: refused, no gradient written."""
    torch.manual_seed(5)
    layer = nn.BatchNorm1d(3, affine=False, dtype=F64)
    layer(torch.randn(5, 3, dtype=F64))
    parameter = Parameter(torch.ones(3, dtype=F64))
    layer.register_parameter(name, parameter)
    with pytest.raises(
        RuntimeError,
        match=rf"^BatchNorm1d: {name} was set to a Parameter after the last forward, which had "
        r"none; its backward would differentiate another function: run forward again before "
        r"backward$",
    ):
        layer.backward(torch.randn(5, 3, dtype=F64))
    assert parameter.grad is None or not parameter.grad.any()
