"""Mutation audit of ``minidl.nn.linear``: behaviours of ``Linear`` that earlier tests missed.

Each test pins a behaviour a user relies on (a value checked against PyTorch autograd in
float64, an exception type and message naming the layer, state left unchanged), chosen because
a hand-made change of the source that altered it passed the rest of the suite.
"""

from __future__ import annotations

import pickle
import re
from typing import Any

import pytest
import torch
from torch import Tensor

from minidl import nn
from minidl.nn import init

F64 = torch.float64


def _autograd(
    x: Tensor, weight: Tensor, bias: Tensor | None, g: Tensor
) -> tuple[Tensor, Tensor, Tensor | None]:
    """dL/dX, dL/dW and dL/db of ``sum(g * (x W^T + b))`` by PyTorch autograd, in float64."""
    x = x.detach().to(F64).requires_grad_(True)
    w = weight.detach().to(F64).requires_grad_(True)
    b = None if bias is None else bias.detach().to(F64).requires_grad_(True)
    y = torch.nn.functional.linear(x, w, b)
    leaves = [x, w] if b is None else [x, w, b]
    grads = torch.autograd.grad((y * g.to(F64)).sum(), leaves)
    return grads[0], grads[1], None if b is None else grads[2]


def _assert_autograds(layer: nn.Linear, x: Tensor, g: Tensor, grad_input: Tensor) -> None:
    """The input gradient returned and the parameter gradients accumulated from zero are
    autograd's for the layer's current parameters, to float64 rounding."""
    assert layer.bias is not None and layer.bias.grad is not None
    assert layer.weight.grad is not None
    expected = _autograd(x, layer.weight.data, layer.bias.data, g)
    torch.testing.assert_close(grad_input, expected[0], rtol=1e-13, atol=0)
    torch.testing.assert_close(layer.weight.grad, expected[1], rtol=1e-13, atol=0)
    torch.testing.assert_close(layer.bias.grad, expected[2], rtol=1e-13, atol=0)


def test_backward_after_a_pickle_round_trip_matches_autograd() -> None:
    """A layer unpickled after its forward (its cached input kept, its views of the
    parameters dropped by ``__getstate__``) computes the input and parameter gradients of
    that forward: G W, G^T X and the batch sum of G, as autograd does."""
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, dtype=F64)
    x = torch.randn(4, 3, dtype=F64)
    layer(x)
    twin = pickle.loads(pickle.dumps(layer))
    g = torch.randn(4, 2, dtype=F64)
    grad_input = twin.backward(g)
    _assert_autograds(twin, x, g, grad_input)


def test_backward_reads_a_weight_replaced_after_the_forward() -> None:
    """A weight of the same shape, dtype and device put in place between forward and backward
    (``weight.data = ...``) is the one the input gradient G W is computed with, as autograd
    computes it for that weight; the parameter gradients are those of the cached input."""
    torch.manual_seed(1)
    layer = nn.Linear(3, 2, dtype=F64)
    x = torch.randn(5, 3, dtype=F64)
    layer(x)
    layer.weight.data = torch.randn(2, 3, dtype=F64)
    g = torch.randn(5, 2, dtype=F64)
    grad_input = layer.backward(g)
    _assert_autograds(layer, x, g, grad_input)


def test_an_input_of_the_old_dtype_after_a_cast_is_refused_by_name() -> None:
    """After ``to(float64)`` and a float64 forward, a float32 input of that shape is refused
    with the layer's TypeError naming both dtypes (not torch's addmm error), and the last good
    forward stays cached: its backward still gives autograd's gradients."""
    torch.manual_seed(2)
    layer = nn.Linear(3, 2)
    layer(torch.randn(4, 3))
    layer.to(F64)
    x = torch.randn(4, 3, dtype=F64)
    layer(x)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "Linear: input dtype torch.float32 does not match the parameters' dtype torch.float64"
        ),
    ):
        layer(torch.randn(4, 3))
    g = torch.randn(4, 2, dtype=F64)
    grad_input = layer.backward(g)
    _assert_autograds(layer, x, g, grad_input)


def test_a_bias_set_by_hand_after_the_forward_is_refused_before_the_weight_gradient() -> None:
    """A plain tensor assigned as ``bias`` between forward and backward is refused by the
    backward with the layer's TypeError naming it (not an AttributeError from reading its
    missing gradient), before the weight gradient is accumulated: it is left as it was."""
    torch.manual_seed(3)
    layer = nn.Linear(3, 2, dtype=F64)
    layer(torch.randn(4, 3, dtype=F64))
    assert layer.weight.grad is not None
    before = layer.weight.grad.clone()
    layer.bias = torch.zeros(2, dtype=F64)  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"^Linear: bias must be a minidl Parameter, got Tensor"):
        layer.backward(torch.randn(4, 2, dtype=F64))
    assert torch.equal(layer.weight.grad, before)


def test_backward_reads_the_cached_input_as_given_when_a_gradient_is_set_over_it() -> None:
    """An input that a gradient is set over between forward and backward (``weight.grad =
    x``, the cached input of the weight's shape) is read as it was given: the weight gradient
    accumulated into it is its old values plus autograd's G^T X, not a product that read X
    while writing it; the bias and input gradients are autograd's."""
    torch.manual_seed(10)
    layer = nn.Linear(3, 2, dtype=F64)
    x = torch.randn(2, 3, dtype=F64)
    given = x.clone()
    layer(x)
    layer.weight.grad = x
    assert layer.weight.grad.data_ptr() == x.data_ptr()
    g = torch.randn(2, 2, dtype=F64)
    grad_input = layer.backward(g)
    assert layer.bias is not None
    dx, dw, db = _autograd(given, layer.weight.data, layer.bias.data, g)
    torch.testing.assert_close(grad_input, dx, rtol=1e-13, atol=0)
    torch.testing.assert_close(layer.weight.grad, given + dw, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(layer.bias.grad, db, rtol=1e-13, atol=0)


@pytest.mark.parametrize("earlier", [False, True], ids=["the last shape", "an earlier shape"])
def test_a_sparse_input_of_a_shape_accepted_before_is_refused_by_name(earlier: bool) -> None:
    """A sparse input of a shape, dtype and device the layer accepted before (the last call's,
    or one of the recent shapes it keeps) is refused with the layer's TypeError, as on a first
    call, and the last good forward stays cached: its backward gives autograd's gradients."""
    torch.manual_seed(11)
    layer = nn.Linear(3, 2, dtype=F64)
    layer(torch.randn(4, 3, dtype=F64))
    x = torch.randn(5, 3, dtype=F64)
    layer(x)
    dense = torch.randn(4 if earlier else 5, 3, dtype=F64)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "Linear: expected a dense input, got a sparse_coo tensor (pass input.to_dense())"
        ),
    ):
        layer(dense.to_sparse())
    g = torch.randn(5, 2, dtype=F64)
    layer.zero_grad()
    grad_input = layer.backward(g)
    assert layer.bias is not None
    dx, dw, db = _autograd(x, layer.weight.data, layer.bias.data, g)
    torch.testing.assert_close(grad_input, dx, rtol=1e-13, atol=0)
    torch.testing.assert_close(layer.weight.grad, dw, rtol=1e-13, atol=0)
    torch.testing.assert_close(layer.bias.grad, db, rtol=1e-13, atol=0)


@pytest.mark.parametrize("step", ["forward", "backward"])
@pytest.mark.parametrize("name", ["weight", "bias"])
def test_a_number_set_as_weight_or_bias_is_named_by_the_next_step(name: str, step: str) -> None:
    """A number set by hand as ``weight`` or ``bias`` after a forward makes the next forward,
    or the backward of that forward, raise the layer's TypeError naming the attribute and what
    it got (not Python's AttributeError about ``.data``); the gradients are left unchanged."""
    torch.manual_seed(12)
    layer = nn.Linear(3, 2)
    layer(torch.randn(4, 3))
    gradients = dict(layer.named_parameters())
    before = {key: p.grad.clone() for key, p in gradients.items()}
    setattr(layer, name, 3)
    with pytest.raises(TypeError, match=rf"^Linear: {name} must be a minidl Parameter, got int \("):
        if step == "forward":
            layer(torch.randn(4, 3))
        else:
            layer.backward(torch.randn(4, 2))
    for key, p in gradients.items():
        assert torch.equal(p.grad, before[key])


@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
def test_a_sparse_gradient_of_the_outputs_shape_is_refused_before_any_gradient_changes(
    method: str,
) -> None:
    """A sparse upstream gradient of the output's shape, dtype and device is refused by
    ``backward`` and ``backward_parameters`` with the layer's TypeError naming its layout (not
    torch's NotImplementedError, nor a silent result), before the weight or bias gradient is
    written: both are left as they were."""
    torch.manual_seed(14)
    layer = nn.Linear(3, 2, dtype=F64)
    layer(torch.randn(4, 3, dtype=F64))
    assert layer.bias is not None
    before = (layer.weight.grad.clone(), layer.bias.grad.clone())
    with pytest.raises(
        TypeError,
        match=re.escape(
            "Linear: expected a dense gradient, got a sparse_coo tensor (pass gradient.to_dense())"
        ),
    ):
        getattr(layer, method)(torch.randn(4, 2, dtype=F64).to_sparse())
    assert torch.equal(layer.weight.grad, before[0])
    assert torch.equal(layer.bias.grad, before[1])


def test_a_linear_too_large_to_hold_does_not_chain_torchs_error() -> None:
    """A size past what a tensor holds is refused as ``ValueError`` whose message already quotes
    torch's words: it is raised ``from None`` so that the traceback does not show torch's
    RuntimeError a second time as its direct cause."""
    with pytest.raises(ValueError, match=r"^Linear: cannot hold a weight of 4 x ") as caught:
        nn.Linear(2**62, 4)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ is True


def test_an_input_in_the_weight_gradients_memory_is_read_as_given_after_zero_grad() -> None:
    """An input given to forward in the memory of ``weight.grad`` (the gradient itself, of the
    input's shape) is cached as a copy: a ``zero_grad()`` between forward and backward, as a
    training step does, zeroes the gradient but not the input that backward reads, so the
    weight gradient is autograd's G^T X of the input as given (not zeros)."""
    torch.manual_seed(11)
    layer = nn.Linear(3, 3, dtype=F64)
    assert layer.weight.grad is not None and layer.bias is not None
    layer.weight.grad.copy_(torch.randn(3, 3, dtype=F64))
    x = layer.weight.grad
    given = x.clone()
    out = layer(x)
    torch.testing.assert_close(
        out, torch.nn.functional.linear(given, layer.weight.data, layer.bias.data)
    )
    layer.zero_grad()
    g = torch.randn(3, 3, dtype=F64)
    grad_input = layer.backward(g)
    dx, dw, db = _autograd(given, layer.weight.data, layer.bias.data, g)
    assert db is not None
    torch.testing.assert_close(grad_input, dx, rtol=1e-13, atol=0)
    torch.testing.assert_close(layer.weight.grad, dw, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(layer.bias.grad, db, rtol=1e-13, atol=0)


@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
def test_a_gradient_given_in_the_weight_gradients_memory_is_read_as_given(method: str) -> None:
    """A gradient of the outputs given to ``backward`` (or to ``backward_parameters`` alone) in
    the memory of ``weight.grad`` (the gradient itself, of the outputs' shape) is read as
    given, though the weight gradient is accumulated over it: G W is autograd's for G as given,
    the weight gradient G's old values plus G^T X, and the bias gradient the sum of G's rows
    (not of the rows the weight's accumulation wrote over them)."""
    torch.manual_seed(12)
    layer = nn.Linear(3, 3, dtype=F64)
    assert layer.weight.grad is not None and layer.bias is not None
    x = torch.randn(3, 3, dtype=F64)
    layer(x)
    layer.weight.grad.copy_(torch.randn(3, 3, dtype=F64))
    g = layer.weight.grad
    given = g.clone()
    dx, dw, db = _autograd(x, layer.weight.data, layer.bias.data, given)
    assert db is not None
    if method == "backward":
        torch.testing.assert_close(layer.backward(g), dx, rtol=1e-13, atol=0)
    else:
        layer.backward_parameters(g)
    torch.testing.assert_close(layer.weight.grad, given + dw, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(layer.bias.grad, db, rtol=1e-13, atol=0)


def test_a_linear_layer_pickled_before_it_remembered_input_shapes_still_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Linear pickled by a version before it kept its recent input shapes (no ``_shapes`` in
    its state) loads into a layer that computes as before, on one batch size, another and the
    first again."""
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, dtype=torch.float64)
    current = nn.Linear.__getstate__

    def without_shapes(self: nn.Linear) -> dict[str, Any]:
        state = current(self)
        del state["_shapes"]
        return state

    monkeypatch.setattr(nn.Linear, "__getstate__", without_shapes)
    data = pickle.dumps(layer)
    monkeypatch.undo()
    restored = pickle.loads(data)
    assert layer.bias is not None
    for batch in (4, 5, 4):
        x = torch.randn(batch, 3, dtype=torch.float64)
        expected = x @ layer.weight.data.t() + layer.bias.data
        torch.testing.assert_close(restored(x), expected, rtol=0, atol=1e-12)


# A third mutation audit of linear.py and init.py (L08, L13, L19, L20, L21, L30, I25).


def _autograd_grads(layer: nn.Linear, x: Tensor, g: Tensor) -> tuple[Tensor, ...]:
    w = layer.weight.data.detach().clone().requires_grad_(True)
    b = layer.bias.data.detach().clone().requires_grad_(True)
    xx = x.detach().clone().requires_grad_(True)
    torch.nn.functional.linear(xx, w, b).backward(g)
    return xx.grad, w.grad, b.grad


def test_linear_cast_after_two_batch_sizes_forgets_the_shapes_of_the_old_dtype() -> None:
    """(mutant L08: ``self._shapes.clear()`` dropped when the parameters are replaced.) A batch
    size seen before a cast is checked afresh after it: its ones for the bias gradient are of
    the new dtype, and the gradients are autograd's in float64."""
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, dtype=torch.float32)
    layer(torch.randn(4, 3))
    layer(torch.randn(5, 3))
    layer.to(F64)
    layer(torch.randn(5, 3, dtype=F64))  # (the new tensors: full checks, this shape remembered)
    x, g = torch.randn(4, 3, dtype=F64), torch.randn(4, 2, dtype=F64)
    layer.zero_grad()
    out = layer(x)
    assert out.dtype == F64
    grad_input = layer.backward(g)
    gx, gw, gb = _autograd_grads(layer, x, g)
    torch.testing.assert_close(grad_input, gx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.weight.grad, gw, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.bias.grad, gb, rtol=1e-12, atol=1e-12)


def test_linear_moved_to_meta_refuses_a_cpu_input_of_the_shape_it_saw_last() -> None:
    """(mutant L30: the remembered device not updated when the parameters are replaced.) After
    ``.to("meta")`` and a meta forward, a CPU input of the same shape is refused by name, as
    one of a new shape is, and the cached input stays the meta one."""
    layer = nn.Linear(3, 2)
    layer(torch.randn(4, 3))
    layer.to("meta")
    meta_input = torch.randn(4, 3, device="meta")
    assert layer(meta_input).device.type == "meta"
    message = (
        "^Linear: input is on cpu but the parameters are on meta; move one of them with "
        r"\.to\(device=\.\.\.\)$"
    )
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(4, 3))
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(6, 3))
    assert layer._input is meta_input


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_16_bit_tensor_refuses_a_normal_beyond_its_own_range(dtype: torch.dtype) -> None:
    """(mutant I25: the reach checked against float32 for every dtype.) float16's largest value
    is 65504: a mean of 1e5 would be drawn as infinities (as torch.nn.init draws them), and is
    refused naming the dtype, the tensor and the generator unchanged. bfloat16 holds 1e5 but not 1e39."""
    mean = 1e5 if dtype == torch.float16 else 1e39
    largest = f"{torch.finfo(dtype).max:.6g}"
    tensor = torch.zeros(3, 2, dtype=dtype)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    twin = torch.nn.init.normal_(
        torch.zeros(3, 2, dtype=dtype), mean, 1.0, torch.Generator().manual_seed(0)
    )
    assert bool(twin.isinf().all())  # (what torch writes)
    with pytest.raises(ValueError) as raised:
        init.normal_(tensor, mean, 1.0, generator)
    assert str(raised.value) == (
        f"init.normal_: N(mean, std^2) with mean={mean!r}, std=1.0 would draw values beyond the "
        f"range of the tensor's dtype {dtype}: its draws, up to |mean| + 9 std in magnitude, "
        f"must be at most {largest}, the largest finite value"
    )
    assert torch.equal(tensor, torch.zeros(3, 2, dtype=dtype))
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("grad_dtype", [torch.float32, F64], ids=str)
def test_linear_cast_between_forward_and_backward_is_refused_by_name_changing_nothing(
    grad_dtype: torch.dtype, bias: bool
) -> None:
    """(mutants L19, L20: the check that the parameters still fit the last forward skipped, or
    its dtype/device comparison dropped.) A layer cast after its forward refuses the backward
    naming the cast, before any gradient is written, whatever the gradient's dtype, with a
    bias or without (L19 lived where no bias changed with the weight)."""
    layer = nn.Linear(3, 2, bias=bias)
    layer(torch.randn(4, 3))
    layer.to(F64)
    layer.weight.grad.fill_(0.5)
    if bias:
        layer.bias.grad.fill_(0.25)
    with pytest.raises(RuntimeError) as raised:
        layer.backward(torch.randn(4, 2, dtype=grad_dtype))
    assert str(raised.value) == (
        "Linear: the parameters are torch.float64 on cpu but the last forward ran in "
        "torch.float32 on cpu: the module was cast or moved (.to(...)) after that forward; run "
        "forward again before backward"
    )
    assert torch.equal(layer.weight.grad, torch.full((2, 3), 0.5, dtype=F64))
    if bias:
        assert torch.equal(layer.bias.grad, torch.full((2,), 0.25, dtype=F64))


def test_linear_bias_set_to_another_dtype_after_forward_is_refused_before_any_gradient() -> None:
    """(mutants L21, L36, L37: the parameters' own check skipped when only the bias changed.) A
    bias of float64 set by hand after a float32 forward is refused by name, and neither
    gradient changes."""
    layer = nn.Linear(3, 2)
    layer(torch.randn(4, 3))
    layer.bias.data = layer.bias.data.double()
    weight_grad, bias_grad = layer.weight.grad.clone(), layer.bias.grad.clone()
    with pytest.raises(
        ValueError,
        match=r"^Linear: bias is torch\.float64 on cpu but weight is torch\.float32 on cpu$",
    ):
        layer.backward(torch.randn(4, 2))
    assert torch.equal(layer.weight.grad, weight_grad)
    assert torch.equal(layer.bias.grad, bias_grad)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype")
def test_linear_refuses_a_nested_input_of_a_batch_size_it_saw_before() -> None:
    """(mutant L13: ``not input.is_nested`` dropped from the check of a remembered shape.) A
    nested input after a dense one of the same size is refused by name, not in the tensor
    library's words about a nested tensor's sizes."""
    layer = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    layer(x)
    nested = torch.nested.nested_tensor([torch.randn(4, 3)])
    nested2 = torch.nested.nested_tensor([torch.randn(3), torch.randn(3)])
    for given in (nested, nested2):
        with pytest.raises(
            TypeError,
            match=r"^Linear: expected a dense input, got a nested tensor \(one of equal sizes is made "
            r"dense by torch\.stack\(input\.unbind\(\)\)\)$",
        ):
            layer(given)
        assert layer._input is x
