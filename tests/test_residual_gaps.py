"""Residual behaviours that mutation testing of ``minidl/nn/residual.py`` found untested: each
test fails for a small change of the source (a bound, a dropped check, a refusal noted) that
the rest of the suite let pass. Values are checked against PyTorch autograd in float64,
refusals by type and message with the state left as it was."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor

from minidl import nn

F64 = torch.float64


class _SquareRefusingLargeInTraining(nn.Module):
    """An element-wise block of one's own, ``x * x``, that changes its state in training mode
    (as a batch norm does) and refuses values above 10 in training mode only, before it
    caches anything: its evaluation-mode trial takes what its training forward refuses."""

    _updates_in_training = True

    def forward(self, x: Tensor) -> Tensor:
        if self.training and bool(x.abs().max() > 10):
            raise ValueError("_SquareRefusingLargeInTraining: values above 10 in training")
        self.x = x
        return x * x

    def backward(self, grad_output: Tensor) -> Tensor:
        return 2 * self.x * grad_output


def test_a_0_dim_input_through_a_dropout_block_is_taken_and_differentiated() -> None:
    """A 0-dim input (documented as taken by an element-wise block) around a dropout, which
    the Residual otherwise tries first: no trial is made for it (it has no batch), the output
    is ``x + dropout(x)`` with the twin dropout's draw, and the input gradient ``g + mask*g``."""
    x = torch.tensor(1.5, dtype=F64)
    residual = nn.Residual(nn.Dropout(0.5, generator=torch.Generator().manual_seed(3)))
    twin = nn.Dropout(0.5, generator=torch.Generator().manual_seed(3))
    expected = x + twin(x)
    output = residual(x)
    assert output.shape == () and torch.equal(output, expected)
    g = torch.tensor(2.0, dtype=F64)
    assert torch.equal(residual.backward(g), g + twin.backward(g))


def test_a_block_refused_in_training_after_its_trial_refuses_the_backward() -> None:
    """The trial (evaluation mode, run again for an input of a new signature, one sample) ran
    the block on it and it fit; the training forward was then refused by the block itself: the block holds the trial's caches, not the
    last good forward's, so the backward that follows is refused, naming why, and changes
    nothing; a good forward then differentiates as before."""
    residual = nn.Residual(_SquareRefusingLargeInTraining())
    good = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64)
    residual(good)
    with pytest.raises(ValueError, match=r"^_SquareRefusingLargeInTraining: values above 10"):
        residual(torch.tensor([[30.0, 4.0]], dtype=F64))  # (a new signature: one sample)
    with pytest.raises(
        RuntimeError,
        match=r"^Residual: backward after a forward refused by its block \(after a trial of "
        r"it\): the block had already cached its input",
    ):
        residual.backward(torch.ones(2, 2, dtype=F64))
    residual(good)
    assert torch.equal(residual.backward(torch.ones(2, 2, dtype=F64)), 1 + 2 * good)


class _FirstThree(nn.Module):
    """A block of one's own that keeps the first three features: the input's shape for three
    features, another one for more (after it cached its input)."""

    def forward(self, x: Tensor) -> Tensor:
        self.width = x.shape[1]
        return x[:, :3] * 2

    def backward(self, grad_output: Tensor) -> Tensor:
        result = grad_output.new_zeros(grad_output.shape[0], self.width)
        result[:, :3] = 2 * grad_output
        return result


def test_a_forward_refused_for_the_blocks_output_shape_refuses_the_backward() -> None:
    """Without a trial (no batch norm or dropout), a block that ran on the refused input and
    returned another shape now holds that input's caches: the backward that follows is
    refused in the Residual's words (not torch's broadcast error, nor a gradient of the
    refused input), until a forward succeeds."""
    residual = nn.Residual(_FirstThree())
    x = torch.arange(12, dtype=F64).reshape(4, 3)
    assert torch.equal(residual(x), 3 * x)
    with pytest.raises(
        ValueError,
        match=r"^Residual: the block's output has shape \(4, 3\), expected the input's shape "
        r"\(4, 5\)$",
    ):
        residual(torch.ones(4, 5, dtype=F64))
    with pytest.raises(
        RuntimeError,
        match=r"^Residual: backward after a forward refused for its block's output shape: the "
        r"block had already cached its input",
    ):
        residual.backward(torch.ones(4, 3, dtype=F64))
    residual(x)
    assert torch.equal(
        residual.backward(torch.ones(4, 3, dtype=F64)), torch.full((4, 3), 3.0, dtype=F64)
    )


def test_a_missing_attribute_other_than_block_is_named_as_python_does() -> None:
    """Only a deleted ``block`` gets the Residual's own hint; any other missing attribute is
    Python's AttributeError naming it (``hasattr`` and ``getattr`` with a default rely on it),
    the block still in place."""
    residual = nn.Residual(nn.Identity())
    with pytest.raises(AttributeError, match=r"^'Residual' object has no attribute 'weight'$"):
        residual.weight  # noqa: B018
    assert getattr(residual, "weight", None) is None
    del residual.block
    with pytest.raises(AttributeError, match=r"^Residual: its attribute 'block' was deleted"):
        residual.block  # noqa: B018


def _close(actual: Tensor, expected: Tensor, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    expected = expected.detach()
    scale = max(float(expected.abs().max()), 1e-300)
    error = float((actual - expected).abs().max()) / scale
    assert error <= 1e-10, f"{what}: relative error {error:.3g}"


@pytest.mark.parametrize("batch", [2, 3])
def test_a_batch_norm_block_trains_on_a_batch_of_two_as_torch(batch: int) -> None:
    """A batch of two (or three) samples in training mode: the trial's first sample is refused
    by the batch norm in training mode, so the whole batch is tried, and taken. Forward, input
    and parameter gradients and running statistics as ``x + BatchNorm1d(x)`` in torch.nn
    (autograd, float64)."""
    torch.manual_seed(5)
    x = torch.randn(batch, 3, dtype=F64)
    g = torch.randn(batch, 3, dtype=F64)
    norm = nn.BatchNorm1d(3, dtype=F64)
    reference = torch.nn.BatchNorm1d(3, dtype=F64)
    assert norm.weight is not None and norm.bias is not None
    with torch.no_grad():
        reference.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
        reference.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        norm.weight.data.copy_(reference.weight)
        norm.bias.data.copy_(reference.bias)
    residual = nn.Residual(norm)
    leaf = x.clone().requires_grad_()
    expected = leaf + reference(leaf)
    (expected * g).sum().backward()
    _close(residual(x), expected, "forward")
    assert leaf.grad is not None and reference.weight.grad is not None
    assert reference.bias.grad is not None
    assert reference.running_mean is not None and reference.running_var is not None
    _close(residual.backward(g), leaf.grad, "input gradient")
    _close(norm.weight.grad, reference.weight.grad, "weight gradient")
    _close(norm.bias.grad, reference.bias.grad, "bias gradient")
    _close(norm.running_mean, reference.running_mean, "running mean")
    _close(norm.running_var, reference.running_var, "running variance")
    assert int(norm.num_batches_tracked) == 1


class _DropThenTakeTwo(nn.Module):
    """A block of one's own holding a dropout, that keeps the first two features: another
    width for a wider input (as a container of one's own, it may have run some modules)."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = self.register_module("drop", nn.Dropout(0.5))

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(x)[:, :2]

    def backward(self, grad_output: Tensor) -> Tensor:
        raise AssertionError("not reached: the backward is refused")


def test_a_trial_refused_for_the_output_shape_names_that_refusal_in_the_backward() -> None:
    """A block of one's own refused in the trial for its output's shape: the backward after it
    is refused naming the output shape (what the trial found), not a refusal inside the block."""
    residual = nn.Residual(_DropThenTakeTwo())
    residual(torch.randn(4, 2))  # (two features: the shape kept)
    with pytest.raises(ValueError, match=r"^Residual: the block's output has shape \(4, 2\)"):
        residual(torch.randn(4, 3))
    with pytest.raises(
        RuntimeError,
        match=r"^Residual: backward after a forward refused for its block's output shape: ",
    ):
        residual.backward(torch.ones(4, 2))


def test_after_a_trial_a_batch_norm_put_in_evaluation_mode_takes_one_sample() -> None:
    """The trial makes the batch norm, in training mode outside it, refuse in evaluation mode
    what it refuses in training mode (one sample); once the trial is over, the batch norm put
    in evaluation mode takes one sample, as ``x + BatchNorm1d(x)`` of torch.nn in eval does."""
    torch.manual_seed(6)
    norm = nn.BatchNorm1d(3, dtype=F64)
    reference = torch.nn.BatchNorm1d(3, dtype=F64)
    residual = nn.Residual(norm)
    x = torch.randn(4, 3, dtype=F64)
    _close(residual(x), x + reference(x), "training forward")
    residual.eval()
    reference.eval()
    one = torch.randn(1, 3, dtype=F64)
    _close(residual(one), one + reference(one), "evaluation forward of one sample")
    _close(norm(one), reference(one), "the batch norm alone")


@pytest.mark.parametrize("name", ["_refused", "_tried", "_updaters"])
def test_a_residual_pickled_before_an_attribute_existed_loads_and_runs(name: str) -> None:
    """A Residual (around a batch norm, which its trial concerns) pickled after a forward by a
    version without the attribute (its note of a refused forward, its trial's key, the parts it
    tries) loads with it made again: its backward, before and after a new forward, gives the
    input and parameter gradients of the Residual itself, bit for bit."""
    torch.manual_seed(0)
    module = nn.Residual(nn.Sequential(nn.Linear(4, 4, dtype=F64), nn.BatchNorm1d(4, dtype=F64)))
    x = torch.randn(5, 4, dtype=F64)
    module(x)
    state = module.__getstate__()
    del state[name]
    old = type(module).__new__(type(module))
    old.__setstate__(state)
    grad = torch.randn(5, 4, dtype=F64)
    for again in (False, True):
        if again:
            assert torch.equal(old(x), module(x))
        module.zero_grad()
        old.zero_grad()
        assert torch.equal(old.backward(grad), module.backward(grad))
        for got, expected in zip(old.parameters(), module.parameters(), strict=True):
            assert got.grad is not None and expected.grad is not None
            assert torch.equal(got.grad, expected.grad)


class _CachesThenInterrupted(nn.Module):
    """An element-wise block of one's own, ``3 * x``, that caches its input and is then
    interrupted (Ctrl-C) for an input above 100."""

    def forward(self, x: Tensor) -> Tensor:
        self.x = x
        if bool(x.abs().max() > 100):
            raise KeyboardInterrupt
        return 3 * x

    def backward(self, grad_output: Tensor) -> Tensor:
        return 3 * grad_output * torch.ones_like(self.x)


def test_a_forward_interrupted_in_the_block_refuses_the_backward() -> None:
    """A KeyboardInterrupt in the block after it cached the interrupted input: the backward
    that follows is refused, naming the interruption, until a forward succeeds."""
    residual = nn.Residual(_CachesThenInterrupted())
    x = torch.ones(2, 2, dtype=F64)
    residual(x)
    with pytest.raises(KeyboardInterrupt):
        residual(torch.full((3, 2), 1000.0, dtype=F64))
    with pytest.raises(
        RuntimeError,
        match=r"^Residual: backward after a forward stopped in its block by KeyboardInterrupt: ",
    ):
        residual.backward(torch.ones(2, 2, dtype=F64))
    residual(x)
    assert torch.equal(
        residual.backward(torch.ones(2, 2, dtype=F64)), torch.full((2, 2), 4.0, dtype=F64)
    )


@pytest.mark.parametrize("part", ["batch norm", "dropout"])
def test_a_block_of_another_width_is_refused_again_before_the_state_changes(part: str) -> None:
    """A trial that refused the block's output shape is not recorded as made: the same input
    given again is tried again, and refused again before the batch norm counts the batch or
    the dropout's generator draws."""
    generator = torch.Generator().manual_seed(2)
    inner = nn.BatchNorm1d(4) if part == "batch norm" else nn.Dropout(0.5, generator=generator)
    residual = nn.Residual(nn.Sequential(inner, nn.Linear(4, 3)))
    buffers = [buffer.clone() for buffer in residual.buffers()]
    state = generator.get_state()
    x = torch.randn(6, 4)
    for _ in range(2):
        with pytest.raises(
            ValueError, match=r"^Residual: the block's output has shape \(6, 3\), expected"
        ):
            residual(x)
        assert all(map(torch.equal, residual.buffers(), buffers))
        assert torch.equal(generator.get_state(), state)


class _PairBlock(nn.Module):
    """A block of one's own with a dropout (so the Residual tries it first) that takes no
    single sample, refused with a RuntimeError (not a ValueError): ``x - mean(x)`` over the
    batch."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = self.register_module("drop", nn.Dropout(0.0))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] < 2:
            raise RuntimeError("_PairBlock: needs two samples or more")
        return self.drop(x - x.mean(0))

    def backward(self, grad_output: Tensor) -> Tensor:
        g = self.drop.backward(grad_output)
        return g - g.mean(0)


def test_a_block_that_takes_no_single_sample_is_tried_on_the_batch_and_taken() -> None:
    """The trial's first sample is refused by the block (whatever the error's type): the whole
    batch is tried then, and taken; output and input gradient as autograd's."""
    residual = nn.Residual(_PairBlock())
    torch.manual_seed(8)
    x = torch.randn(4, 3, dtype=F64)
    g = torch.randn(4, 3, dtype=F64)
    leaf = x.clone().requires_grad_()
    expected = leaf + (leaf - leaf.mean(0))
    (grad,) = torch.autograd.grad(expected, leaf, g)
    _close(residual(x), expected, "forward")
    _close(residual.backward(g), grad, "input gradient")


def test_a_block_that_returns_a_tuple_is_refused_naming_what_it_returned() -> None:
    """A block that returns no tensor (a tuple here, not only None) is refused with a TypeError
    naming the type it returned and the shape expected."""
    residual = nn.Residual(_TupleBlock())
    with pytest.raises(
        TypeError,
        match=r"^Residual: the block returned tuple, expected a tensor of the input's shape "
        r"\(2, 3\)$",
    ):
        residual(torch.ones(2, 3))


class _TupleBlock(nn.Module):
    """A block of one's own that returns a pair (as some torch modules do)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, x

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


class _LinearCheckedDrop(nn.Module):
    """A block of one's own: a layer, a check of its own raising a RuntimeError (not a
    ValueError) after the layer ran, then a dropout (so the Residual tries it first)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = self.register_module("a", nn.Linear(3, 3, dtype=F64))
        self.drop = self.register_module("drop", nn.Dropout(0.0))

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.a(x)
        if bool(hidden.abs().max() > 1e3):
            raise RuntimeError("_LinearCheckedDrop: hidden values above 1e3")
        return self.drop(hidden)

    def backward(self, grad_output: Tensor) -> Tensor:
        return self.a.backward(self.drop.backward(grad_output))


def test_a_trial_refused_by_any_error_after_a_module_ran_refuses_the_backward() -> None:
    """The block of one's own refused in the trial with a RuntimeError after its layer ran on
    the refused input: the backward that follows is refused, whatever the error's type, with
    the parameter gradients left as they were."""
    residual = nn.Residual(_LinearCheckedDrop())
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    residual(x)
    with pytest.raises(RuntimeError, match=r"^_LinearCheckedDrop: hidden values above 1e3"):
        residual(torch.full((1, 3), 1e6, dtype=F64))  # (a new signature, one sample: tried)
    with pytest.raises(
        RuntimeError, match=r"^Residual: backward after a forward refused in a trial of its block"
    ):
        residual.backward(torch.ones(4, 3, dtype=F64))
    assert all(p.grad is None or not p.grad.any() for p in residual.parameters())


class _Chain(nn.Module):
    """A block of one's own that runs its registered modules one after another (no
    :class:`~minidl.nn.Sequential`, which would try its children itself)."""

    def __init__(self, *parts: nn.Module) -> None:
        super().__init__()
        for index, part in enumerate(parts):
            self.register_module(f"p{index}", part)

    def forward(self, x: Tensor) -> Tensor:
        for part in self._modules.values():
            x = part(x)
        return x

    def backward(self, grad_output: Tensor) -> Tensor:
        for part in reversed(list(self._modules.values())):
            grad_output = part.backward(grad_output)
        return grad_output


def test_a_batch_norm_registered_in_the_block_after_a_forward_is_tried_first() -> None:
    """A batch norm registered in a block of one's own after the Residual ran it is found:
    a block of another width is refused for its output shape before the batch norm counts the
    batch (its running statistics and count keep their values)."""
    torch.manual_seed(0)
    chain = _Chain(nn.Linear(4, 4))
    residual = nn.Residual(chain)
    x = torch.randn(6, 4)
    assert residual(x).shape == (6, 4)
    chain.register_module("p0", nn.BatchNorm1d(4))
    chain.register_module("p1", nn.Linear(4, 3))
    buffers = [buffer.clone() for buffer in residual.buffers()]
    with pytest.raises(
        ValueError,
        match=r"^Residual: the block's output has shape \(6, 3\), expected the input's shape "
        r"\(6, 4\)$",
    ):
        residual(x)
    assert len(buffers) == 3
    assert all(map(torch.equal, residual.buffers(), buffers))


def _residual_first_network() -> tuple[nn.Sequential, nn.BatchNorm1d]:
    """A network whose first module is a residual block of a batch norm without parameters
    (before the block's first layer with parameters), then a Linear; and that batch norm."""
    torch.manual_seed(0)
    norm = nn.BatchNorm1d(3, affine=False, dtype=torch.float64)
    block = nn.Sequential(norm, nn.Linear(3, 3, dtype=torch.float64))
    model = nn.Sequential(nn.Residual(block), nn.Tanh(), nn.Linear(3, 2, dtype=torch.float64))
    return model, norm


def test_backward_parameters_checks_only_what_it_runs_in_a_first_residual_block() -> None:
    """backward_parameters runs no backward below the first layer with parameters, inside a
    residual block as in a Sequential: a batch norm there whose running mean was replaced by
    a float32 one after the forward (which its own backward refuses) is not checked (the
    residual's check of its block before the backward was the full one), and the parameter
    gradients are those of a twin whose batch norm was left as it was, bit for bit. backward,
    which runs it, refuses."""
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grad = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    model, norm = _residual_first_network()
    twin, _ = _residual_first_network()
    model(x)
    twin(x)
    norm.running_mean = norm.running_mean.float()
    model.backward_parameters(grad)
    twin.backward_parameters(grad)
    for got, expected in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(got.grad, expected.grad)
    model.zero_grad()
    with pytest.raises(RuntimeError, match=r"^BatchNorm1d: the parameters are torch\.float32"):
        model.backward(grad)


class _ScaledSequential(nn.Sequential):
    """A Sequential whose backward_parameters, overridden alone, counts its calls and halves
    the gradient it is given (its backward, Sequential's, does neither)."""

    calls = 0

    def backward_parameters(self, grad_output: Tensor) -> None:
        self.calls += 1
        super().backward_parameters(grad_output * 0.5)


def test_a_residual_runs_its_blocks_own_backward_parameters() -> None:
    """A residual block whose block overrides backward_parameters alone (a Sequential
    subclass): the residual's backward_parameters calls it, once, as a Sequential calls a
    module's, so the parameter gradients are those of the block's backward_parameters given
    the same gradient directly (halved here), not those of Sequential's backward."""
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grad = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    block = _ScaledSequential(nn.Linear(3, 3, dtype=torch.float64), nn.Tanh())
    residual = nn.Residual(block)
    twin = copy.deepcopy(block)
    residual(x)
    twin(x)
    residual.backward_parameters(grad)
    assert block.calls == 1
    twin.backward_parameters(grad)
    for got, expected in zip(block.parameters(), twin.parameters(), strict=True):
        assert torch.equal(got.grad, expected.grad)
    unscaled = copy.deepcopy(twin)
    unscaled.zero_grad()
    unscaled(x)
    nn.Sequential.backward(unscaled, grad)
    assert not torch.equal(next(unscaled.parameters()).grad, next(block.parameters()).grad)


# A third mutation audit of residual.py and one of dropout.py (R03, R05, R07, R09, R14, R19, R21,
# R37, R38, R40, D04).


class _ScaledByLayer(nn.Module):
    """A block of one's own, ``a(x) + x * x``, that caches its input and reads it in
    its backward after its layer wrote its parameter gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.a = self.register_module("a", nn.Linear(4, 4, dtype=F64))

    def forward(self, x: Tensor) -> Tensor:
        self.x = x
        return self.a(x) + x * x

    def backward(self, grad_output: Tensor) -> Tensor:
        through = self.a.backward(grad_output)  # (writes a's gradients)
        return through + 2 * self.x * grad_output  # (reads the cached input after it)


def _reference(x: Tensor, g: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, ...]:
    leaf = x.clone().requires_grad_()
    w = weight.detach().clone().requires_grad_()
    b = bias.detach().clone().requires_grad_()
    output = leaf + torch.nn.functional.linear(leaf, w, b) + leaf * leaf
    output.backward(g)
    assert leaf.grad is not None and w.grad is not None and b.grad is not None
    return output.detach(), leaf.grad, w.grad, b.grad


def test_an_input_lying_in_the_blocks_gradients_is_copied_before_the_block_caches_it() -> None:
    """The input is the block's layer's weight gradient (a 4 x 4 tensor), which that layer's
    backward overwrites: the Residual copies it before its block of one's own caches it, so
    the input gradient and the parameter gradients are autograd's for the values given (the
    weight gradient accumulated onto what it held)."""
    torch.manual_seed(0)
    block = _ScaledByLayer()
    residual = nn.Residual(block)
    residual(torch.randn(4, 4, dtype=F64))
    residual.backward(torch.randn(4, 4, dtype=F64))  # (the gradients exist now)
    held = block.a.weight.grad
    assert held is not None
    before_w, before_b = held.clone(), block.a.bias.grad.clone()
    x = held.clone()
    g = torch.randn(4, 4, dtype=F64)
    output, grad_x, grad_w, grad_b = _reference(x, g, block.a.weight.data, block.a.bias.data)
    assert torch.allclose(residual(held), output, rtol=1e-12, atol=0)
    assert torch.allclose(residual.backward(g), grad_x, rtol=1e-10, atol=1e-12)
    assert torch.allclose(block.a.weight.grad, before_w + grad_w, rtol=1e-10, atol=1e-12)
    assert torch.allclose(block.a.bias.grad, before_b + grad_b, rtol=1e-10, atol=1e-12)


def test_a_gradient_lying_in_the_blocks_gradients_is_copied_before_the_skip_reads_it() -> None:
    """The upstream gradient given to backward is the block's weight gradient: the skip's
    ``g``, added after the block's backward wrote over that gradient, is the value given, as
    in autograd (``g + g W``, and ``W.grad`` accumulated with ``g^T x``)."""
    torch.manual_seed(1)
    layer = nn.Linear(4, 4, dtype=F64)
    residual = nn.Residual(layer)
    x = torch.randn(4, 4, dtype=F64)
    residual(x)
    residual.backward(torch.randn(4, 4, dtype=F64))
    held = layer.weight.grad
    assert held is not None
    before_w, before_b = held.clone(), layer.bias.grad.clone()
    g = held.clone()
    leaf = x.clone().requires_grad_()
    w = layer.weight.data.clone().requires_grad_()
    b = layer.bias.data.clone().requires_grad_()
    (leaf + torch.nn.functional.linear(leaf, w, b)).backward(g)
    assert leaf.grad is not None and w.grad is not None and b.grad is not None
    residual(x)
    assert torch.allclose(residual.backward(held), leaf.grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(layer.weight.grad, before_w + w.grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(layer.bias.grad, before_b + b.grad, rtol=1e-10, atol=1e-12)


class _CountedRefusingEmptyInTraining(nn.Module):
    """An element-wise block of one's own, ``2 * x``, that changes its state in training mode
    (so the Residual tries it first), counts its forwards, and refuses an empty batch in
    training mode only, before it caches anything."""

    _updates_in_training = True

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        self.shapes.append(tuple(x.shape))
        if self.training and x.numel() == 0:
            raise ValueError("_CountedRefusingEmptyInTraining: an empty batch in training")
        self.x = x
        return 2 * x

    def backward(self, grad_output: Tensor) -> Tensor:
        return 2 * grad_output


def test_the_block_is_tried_once_for_each_signature_of_the_input() -> None:
    """The trial (evaluation mode, the first sample) is made once for each signature of the
    input (see ``trial_key``): a second forward of the same signature runs the block once, a
    new signature tries it again; the outputs are ``3 x``."""
    block = _CountedRefusingEmptyInTraining()
    residual = nn.Residual(block)
    x = torch.randn(5, 3, dtype=F64)
    assert torch.equal(residual(x), 3 * x)
    assert block.calls == 2  # (the trial, then the forward)
    assert block.shapes == [(1, 3), (5, 3)]  # (the trial on the first sample alone)
    assert torch.equal(residual(x + 1), 3 * (x + 1))
    assert block.calls == 3
    wider = torch.randn(5, 4, dtype=F64)
    assert torch.equal(residual(wider), 3 * wider)
    assert block.calls == 5
    assert block.shapes[3:] == [(1, 4), (5, 4)]


def test_an_empty_batch_is_not_tried_and_its_refusal_keeps_the_last_backward() -> None:
    """An empty batch has no first sample to try: the block is not tried, and refuses it in
    training mode before caching anything (a clean refusal), so the backward of the last good
    forward is still taken, ``3 g``."""
    block = _CountedRefusingEmptyInTraining()
    residual = nn.Residual(block)
    x = torch.randn(4, 3, dtype=F64)
    residual(x)
    calls = block.calls
    with pytest.raises(ValueError, match=r"^_CountedRefusingEmptyInTraining: an empty batch"):
        residual(torch.empty(0, 3, dtype=F64))
    assert block.calls == calls + 1  # (no trial)
    g = torch.randn(4, 3, dtype=F64)
    assert torch.equal(residual.backward(g), 3 * g)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("layout", ["sparse_coo", "sparse_csr"])
def test_a_sparse_input_to_a_block_it_tries_is_refused_by_the_residual(layout: str) -> None:
    """A sparse input, where the Residual would try its dropout block on the first sample (a
    new signature: its first forward), is refused in the Residual's words before the trial
    (not in the dropout's, nor torch's), its generator untouched; a dense one is taken after,
    with the dropout's draw from the same generator state."""
    generator = torch.Generator().manual_seed(4)
    residual = nn.Residual(nn.Dropout(0.5, generator=generator))
    state = generator.get_state()
    dense = torch.randn(4, 3, dtype=F64)
    sparse = dense.to_sparse() if layout == "sparse_coo" else dense.to_sparse_csr()
    with pytest.raises(
        TypeError,
        match=rf"^Residual: expected a dense input, got a {layout} tensor \(pass "
        r"input\.to_dense\(\)\)$",
    ):
        residual(sparse)
    assert torch.equal(generator.get_state(), state)
    twin = nn.Dropout(0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(residual(dense), dense + twin(dense))


class _Unsqueezed(nn.Module):
    """A block of one's own that returns ``2 x`` with a leading dimension of one added: as
    many elements as the input, another shape (which broadcasts with it)."""

    def forward(self, x: Tensor) -> Tensor:
        return (2 * x).unsqueeze(0)

    def backward(self, grad_output: Tensor) -> Tensor:
        raise AssertionError("not reached: the backward is refused")


def test_a_block_output_of_as_many_elements_but_another_shape_is_refused() -> None:
    """A block whose output has the input's number of elements in another shape, (1, 4, 3)
    for (4, 3), which ``x + f(x)`` would broadcast silently, is refused naming both shapes,
    and the backward after it is refused."""
    residual = nn.Residual(_Unsqueezed())
    with pytest.raises(
        ValueError,
        match=r"^Residual: the block's output has shape \(1, 4, 3\), expected the input's "
        r"shape \(4, 3\)$",
    ):
        residual(torch.ones(4, 3, dtype=F64))
    with pytest.raises(RuntimeError, match=r"^Residual: backward (called before forward|after)"):
        residual.backward(torch.ones(4, 3, dtype=F64))


class _CountedFirstTwo(nn.Module):
    """A block of one's own that changes its state in training mode (so the Residual tries it
    first), counts its forwards and keeps the first two features: another width for three."""

    _updates_in_training = True

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.modes.append(self.training)
        return x[:, :2]

    def backward(self, grad_output: Tensor) -> Tensor:
        raise AssertionError("not reached: the backward is refused")


def test_a_one_sample_batch_of_another_width_is_refused_after_one_trial_run() -> None:
    """For a batch of one sample, the trial's sample is the whole batch: a block that gives
    another shape for it is refused after that one run (in evaluation mode), not run again
    on the same batch, nor in training mode."""
    block = _CountedFirstTwo()
    residual = nn.Residual(block)
    with pytest.raises(
        ValueError,
        match=r"^Residual: the block's output has shape \(1, 2\), expected the input's shape "
        r"\(1, 3\)$",
    ):
        residual(torch.ones(1, 3, dtype=F64))
    assert block.modes == [False]
    assert block.training


@pytest.mark.parametrize("generator", [5, 0, 1.5])
def test_a_number_given_as_generator_is_refused_without_the_inplace_hint(
    generator: object,
) -> None:
    """Only a bool (PyTorch's second argument, ``inplace``) gets the hint naming ``inplace=``;
    another number given as the generator is refused naming its type alone, as set later on
    a module, which keeps its generator."""
    name = type(generator).__name__
    message = rf"^Dropout: generator must be a torch\.Generator or None, got {name}$"
    with pytest.raises(TypeError, match=message):
        nn.Dropout(0.5, generator)  # type: ignore[arg-type]
    own = torch.Generator().manual_seed(1)
    layer = nn.Dropout(0.5, generator=own)
    with pytest.raises(TypeError, match=message):
        layer.generator = generator  # type: ignore[assignment]
    assert layer.generator is own


class _LinearThenTanh(nn.Module):
    """A block of one's own (no Sequential, which rewords a promoted gradient's refusal
    itself): a bfloat16 layer, then a tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.a = self.register_module("a", nn.Linear(3, 3, dtype=torch.bfloat16))
        self.t = self.register_module("t", nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        return self.t(self.a(x))

    def backward(self, grad_output: Tensor) -> Tensor:
        return self.a.backward(self.t.backward(grad_output))


@pytest.mark.parametrize("call", ["backward", "backward_parameters"])
def test_a_gradient_promoted_inside_the_block_is_refused_naming_the_callers_dtype(
    call: str,
) -> None:
    """A float16 gradient, promoted by the block's tanh (whose forward was bfloat16) to
    float32 on its way to the bfloat16 layer, which refuses it: the refusal names the dtype
    the caller gave, float16, and the layer's, bfloat16 (not float32, which the caller never
    gave), and no parameter gradient is written."""
    residual = nn.Residual(_LinearThenTanh())
    residual(torch.randn(4, 3, dtype=torch.bfloat16))
    with pytest.raises(
        TypeError,
        match=r"^Residual: gradient dtype torch\.float16 does not match torch\.bfloat16, the "
        r"dtype of a module inside \(the modules without parameters after it promoted the "
        r"gradient to torch\.float32 on its way there: ",
    ):
        getattr(residual, call)(torch.ones(4, 3, dtype=torch.float16))
    assert all(p.grad is None or not p.grad.any() for p in residual.parameters())
