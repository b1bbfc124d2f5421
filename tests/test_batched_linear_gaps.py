"""BatchedLinear (minidl.nn.batched_linear): what a second mutation audit found untested (the
weight-gradient check's cache key, its reproduction of the gradient's alignment, its limit, the
quick paths' refusals of sparse and nested tensors, a gradient set by hand), each test naming
its mutant, and a bug it found (fixed): the check's and the temporary's tensors made on the
default device rather than the gradient's."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor

from minidl import nn
from minidl.nn import batched_linear
from minidl.nn.batched_linear import BatchedLinear, _batched_gradient_is_exact

F64 = torch.float64


def _stack(
    sizes: tuple[int, ...],
    models: int,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    device: str | None = None,
) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.stack_models(
        [nn.mlp(sizes, "tanh", dtype=dtype, device=device) for _ in range(models)],
        layout="model",
    )


def _layers(stack: nn.Sequential) -> list[BatchedLinear]:
    return [layer for layer in stack if isinstance(layer, BatchedLinear)]


def _recording_compare(
    monkeypatch: pytest.MonkeyPatch, answer: bool = True
) -> list[tuple[object, ...]]:
    calls: list[tuple[object, ...]] = []

    def compare(grad: Tensor, batch: int, *rest: object) -> bool:
        calls.append((tuple(grad.shape), grad.stride(), grad.dtype, batch))
        return answer

    monkeypatch.setattr(batched_linear, "_EXACT_BATCHED_GRADIENT", {})
    monkeypatch.setattr(batched_linear, "_compare_the_two_ways", compare)
    return calls


def test_beyond_the_limit_the_answer_is_no_and_the_layer_uses_no_temporary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(mutant 2) A product larger than _LARGEST_CHECKED is answered "no" without a check,
    and the layer keeps the per-model products (no temporary), whatever the check would say."""
    calls = _recording_compare(monkeypatch, answer=True)
    monkeypatch.setattr(batched_linear, "_LARGEST_CHECKED", 5 * 4 * 10)
    stack = _stack((4, 5, 4), 3, seed=4)
    first = _layers(stack)[0]
    assert _batched_gradient_is_exact(first.weight.grad, 11) is False
    assert _batched_gradient_is_exact(first.weight.grad, 10) is True  # (the limit itself)
    assert [c[3] for c in calls] == [10]
    stack(torch.randn(3, 11, 4))
    stack.backward(torch.randn(3, 11, 4))
    assert first._choice == [False] and first._product is None


def test_the_answer_is_kept_apart_for_other_strides_and_dtypes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(mutants 3, 5) Two gradients of one shape, address modulo the alignment and batch, but
    other strides or another dtype, are each checked: the answer of one does not hold for the
    other."""
    calls = _recording_compare(monkeypatch)
    base = torch.zeros(4096)
    a = base.as_strided((2, 3, 4), (12, 4, 1))
    b = base.as_strided((2, 3, 4), (20, 4, 1))
    base64 = torch.zeros(4096, dtype=F64)
    c = base64.as_strided((2, 3, 4), (12, 4, 1))
    assert a.data_ptr() % 64 == b.data_ptr() % 64 == c.data_ptr() % 64
    for grad in (a, b, c, a, b, c):
        assert _batched_gradient_is_exact(grad, 5) is True
    assert calls == [
        ((2, 3, 4), (12, 4, 1), torch.float32, 5),
        ((2, 3, 4), (20, 4, 1), torch.float32, 5),
        ((2, 3, 4), (12, 4, 1), F64, 5),
    ]


def test_the_check_reproduces_the_gradient_alignment_and_varies_the_operands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(mutants 8, 9, 67) The per-model products are accumulated, and the temporary added, at
    the address of the real gradient modulo _ALIGNMENT; the operands of the draws start at
    every alignment in turn (16 float32 alignments for G and for X)."""
    monkeypatch.setattr(batched_linear, "_EXACT_BATCHED_GRADIENT", {})
    base = torch.zeros(4096)
    grad = base[3:].as_strided((2, 3, 4), (20, 4, 1))  # 12 bytes past a 64-byte boundary
    assert grad.data_ptr() % 64 == 12 + base.data_ptr() % 64
    seen: dict[str, set[int]] = {"baddbmm": set(), "add": set(), "g": set(), "x": set()}
    real_baddbmm, real_add, real_bmm = torch.Tensor.baddbmm_, torch.Tensor.add_, torch.bmm

    def baddbmm_(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        seen["baddbmm"].add(self.data_ptr() % 64)
        return real_baddbmm(self, *args, **kwargs)

    def add_(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        seen["add"].add(self.data_ptr() % 64)
        return real_add(self, *args, **kwargs)

    def bmm(g: Tensor, x: Tensor, **kwargs: Any) -> Tensor:
        seen["g"].add(g.data_ptr() % 64)
        seen["x"].add(x.data_ptr() % 64)
        return real_bmm(g, x, **kwargs)

    monkeypatch.setattr(torch.Tensor, "baddbmm_", baddbmm_)
    monkeypatch.setattr(torch.Tensor, "add_", add_)
    monkeypatch.setattr(torch, "bmm", bmm)
    monkeypatch.setattr(batched_linear, "_DRAWS", 32)
    answer = batched_linear._compare_the_two_ways(grad, 5, 2, 3, 4, 4)
    monkeypatch.undo()
    assert seen["baddbmm"] == {grad.data_ptr() % 64}
    assert seen["add"] == {grad.data_ptr() % 64}
    if answer:  # (all 32 draws ran)
        assert len(seen["g"]) == 16 and len(seen["x"]) == 16


def test_a_model_layout_stack_on_the_meta_device_makes_no_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(mutant 15) Only a CPU gradient is a candidate for the batched product: on another
    device (meta here) the per-model products are kept, with no check and no temporary."""
    calls = _recording_compare(monkeypatch)
    monkeypatch.setattr(batched_linear, "_batched_gradient_is_exact", lambda grad, batch: True)
    stack = _stack((3, 4, 2), 3, device="meta")
    layer = _layers(stack)[0]
    assert not layer.weight.grad.is_contiguous()
    stack(torch.randn(3, 5, 3, device="meta"))
    stack.backward(torch.randn(3, 5, 2, device="meta"))
    assert all(each._choice == [False] and each._product is None for each in _layers(stack))
    assert calls == []


def test_a_size_that_cannot_be_held_names_the_weight_as_out_x_in() -> None:
    """(mutant 17) The message names the weights as ``out x in`` (as Linear's), told apart on
    a layer that is not square."""
    with pytest.raises(
        ValueError,
        match=rf"^BatchedLinear: cannot hold the parameters of {2**62} models of 5 x 3 weights \(",
    ):
        BatchedLinear(2**62, 3, 5)
    with pytest.raises(
        ValueError, match=r"^BatchedLinear: cannot hold the parameters of 1 model of "
    ):
        BatchedLinear(1, 2**62, 5)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_a_sparse_or_nested_input_after_a_dense_one_of_that_shape_is_refused() -> None:
    """(mutants 43, 44) The quick path of a call like the last one still refuses a sparse input
    of the same shape and a nested one, in the layer's words."""
    torch.manual_seed(0)
    layer = BatchedLinear(2, 3, 4)
    x = torch.randn(2, 5, 3)
    layer(x)
    with pytest.raises(
        TypeError,
        match=r"^BatchedLinear: expected a dense input, got a sparse_coo tensor "
        r"\(pass input\.to_dense\(\)\)$",
    ):
        layer(x.to_sparse())
    layer(x)
    with pytest.raises(
        TypeError, match=r"^BatchedLinear: expected a dense input, got a nested tensor "
    ):
        layer(torch.nested.nested_tensor([x[0], x[1]]))
    assert layer._input is x


def test_a_sparse_gradient_of_the_output_shape_is_refused_before_any_accumulation() -> None:
    """(mutant 49) A sparse gradient of the right shape is refused in the layer's words, and
    neither gradient has changed."""
    torch.manual_seed(0)
    layer = BatchedLinear(2, 3, 4)
    layer(torch.randn(2, 5, 3))
    with pytest.raises(
        TypeError,
        match=r"^BatchedLinear: expected a dense gradient, got a sparse_coo tensor "
        r"\(pass gradient\.to_dense\(\)\)$",
    ):
        layer.backward(torch.randn(2, 5, 4).to_sparse())
    assert torch.count_nonzero(layer.weight.grad) == 0
    assert torch.count_nonzero(layer.bias.grad) == 0


@pytest.mark.parametrize("exact", [True, False])
def test_a_gradient_from_an_autograd_graph_is_read_as_a_value(
    monkeypatch: pytest.MonkeyPatch, exact: bool
) -> None:
    """(mutant 50) A gradient that requires grad (from a graph) is read as a plain value:
    the accumulated gradients are no part of any graph, and equal autograd's (float64)."""
    monkeypatch.setattr(batched_linear, "_batched_gradient_is_exact", lambda grad, batch: exact)
    stack = _stack((3, 2), 2, dtype=F64, seed=1)
    layer = _layers(stack)[0]
    x = torch.randn(2, 4, 3, dtype=F64)
    g = torch.randn(2, 4, 2, dtype=F64, requires_grad=True) * 1.0
    stack(x)
    stack.backward(g)
    for p in (layer.weight, layer.bias):
        assert not p.grad.requires_grad and p.grad.grad_fn is None
    w = layer.weight.data.clone().requires_grad_(True)
    b = layer.bias.data.clone().requires_grad_(True)
    torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2)).backward(g.detach())
    torch.testing.assert_close(layer.weight.grad, w.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.bias.grad, b.grad, rtol=1e-12, atol=1e-12)


def _autograd_weight_gradients(layer: BatchedLinear, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    w = layer.weight.data.clone().requires_grad_(True)
    b = layer.bias.data.clone().requires_grad_(True)
    torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2)).backward(g)
    return w.grad, b.grad


def test_a_gradient_set_by_hand_between_forward_and_backward_is_chosen_for_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(mutants 53, 54, 55) A weight gradient assigned between forward and backward gets its
    own choice at every batch shape: a contiguous one none of the old temporary (at this
    shape and at another shape decided before), a non-contiguous one a check of its own."""
    monkeypatch.setattr(batched_linear, "_batched_gradient_is_exact", lambda grad, batch: True)
    stack = _stack((3, 2), 3, dtype=F64, seed=2)
    layer = _layers(stack)[0]
    xs = {n: torch.randn(3, n, 3, dtype=F64) for n in (5, 6)}
    gs = {n: torch.randn(3, n, 2, dtype=F64) for n in (5, 6)}
    for n in (6, 5):
        stack(xs[n])
        stack.backward(gs[n])
        assert layer._product is not None
    layer.weight.grad = torch.zeros(3, 2, 3, dtype=F64)  # contiguous: no candidate
    layer.bias.grad = torch.zeros(3, 2, dtype=F64)
    for n in (5, 6):
        if n == 6:
            stack(xs[n])
        stack.backward(gs[n])
        assert layer._choice == [False] and layer._product is None
    # (the batch of 5: its forward ran before the gradient was set)
    want = [_autograd_weight_gradients(layer, xs[n], gs[n]) for n in (5, 6)]
    torch.testing.assert_close(layer.weight.grad, want[0][0] + want[1][0], rtol=1e-12, atol=1e-12)
    stack(xs[5])
    layer.weight.grad = torch.zeros(3, 3, 2, dtype=F64).transpose(1, 2)  # a candidate again
    stack.backward(gs[5])
    assert layer._choice == [True] and layer._product is not None
    torch.testing.assert_close(layer.weight.grad, want[0][0], rtol=1e-12, atol=1e-12)


def test_the_temporary_is_made_on_the_cpu_under_a_meta_default_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The temporary of a CPU layout="model" layer whose check says yes is made on the
    gradient's device, whatever a ``torch.device`` context (or ``torch.set_default_device``)
    names, and the gradients are autograd's, as tests/test_internals_gaps3.py asks of other
    operands. (Fixed: made on the default device, meta here, the backward failed in torch's
    words.)"""
    monkeypatch.setattr(batched_linear, "_batched_gradient_is_exact", lambda grad, batch: True)
    stack = _stack((3, 2), 3, dtype=F64, seed=8)
    layer = _layers(stack)[0]
    x, g = torch.randn(3, 5, 3, dtype=F64), torch.randn(3, 5, 2, dtype=F64)
    with torch.device("meta"):
        stack(x)
        stack.backward(g)
    assert layer._product is not None and layer._product.device.type == "cpu"
    w, b = _autograd_weight_gradients(layer, x, g)
    torch.testing.assert_close(layer.weight.grad, w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.bias.grad, b, rtol=1e-12, atol=1e-12)


def test_the_check_answers_alike_under_a_meta_default_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check's draws and buffers are made on the gradient's device (the CPU), so under a
    meta default device it answers as outside it. (Fixed: made on the default device, it
    failed there and answered no, which the cache then kept for the layout.)"""
    stack = _stack((3, 2), 3, dtype=F64, seed=8)
    grad = _layers(stack)[0].weight.grad
    monkeypatch.setattr(batched_linear, "_EXACT_BATCHED_GRADIENT", {})
    outside = batched_linear._compare_the_two_ways(grad, 5, 3, 2, 3, 8)
    assert outside is True  # (a draw's bits differ in few layouts; this one is the same)
    with torch.device("meta"):
        assert _batched_gradient_is_exact(grad, 5) is outside
    assert list(batched_linear._EXACT_BATCHED_GRADIENT.values()) == [outside]


def test_a_shallow_copy_after_a_forward_computes_as_the_original() -> None:
    """(mutant 62) ``copy.copy`` of a layer that has run a forward shares its parameters
    (as PyTorch's shallow copy) but not the views of them that a forward uses (not kept,
    as in a pickle): its first call makes them again, so its output and input gradient are
    autograd's (float64), and its gradients accumulate into the shared ones. (With the last
    call's record kept, the copy took the call for one like the last and read a view that it
    did not have: torch's ``bmm()`` TypeError.)"""
    torch.manual_seed(0)
    layer = BatchedLinear(2, 3, 4, dtype=F64)
    x = torch.randn(2, 5, 3, dtype=F64)
    g = torch.randn(2, 5, 4, dtype=F64)
    assert layer.bias is not None
    expected_output = layer(x)
    shallow = copy.copy(layer)
    assert shallow.weight is layer.weight and shallow.bias is layer.bias
    w = layer.weight.data.clone().requires_grad_(True)
    b = layer.bias.data.clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    reference = torch.baddbmm(b.unsqueeze(1), xr, w.transpose(1, 2))
    reference.backward(g)
    output = shallow(x)
    assert torch.equal(output, expected_output)
    torch.testing.assert_close(output, reference.detach(), rtol=1e-12, atol=1e-12)
    grad_x = shallow.backward(g)
    torch.testing.assert_close(grad_x, xr.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.weight.grad, w.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.bias.grad, b.grad, rtol=1e-12, atol=1e-12)
    # (and the original still computes as before)
    assert torch.equal(layer(x), expected_output)


@pytest.mark.parametrize("bias", [True, False])
def test_the_repr_names_the_sizes_and_whether_there_is_a_bias(bias: bool) -> None:
    """(mutant 64) As ``Linear``'s, with the number of models first: ``bias=`` says whether
    the layer has one."""
    layer = BatchedLinear(2, 3, 4, bias=bias)
    assert (layer.bias is not None) is bias
    assert repr(layer) == f"BatchedLinear(models=2, in_features=3, out_features=4, bias={bias})"
    assert layer.extra_repr() == f"models=2, in_features=3, out_features=4, bias={bias}"
