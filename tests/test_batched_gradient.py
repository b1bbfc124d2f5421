"""The weight gradient of a ``layout="model"`` stack: one batched product into a temporary where
a check shows it gives every model the bits of its own product, one product per model elsewhere.

The oracle of the bits is ``baddbmm_`` into the stack's own (non-contiguous) gradient, which
ATen computes as one matrix product per model; of the values, PyTorch autograd in float64.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from minidl import nn
from minidl.nn import batched_linear
from minidl.nn.batched_linear import BatchedLinear, _batched_gradient_is_exact

F64 = torch.float64


def _stack(sizes: tuple[int, ...], models: int, dtype: torch.dtype, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.stack_models(
        [nn.mlp(sizes, "tanh", dtype=dtype) for _ in range(models)], layout="model"
    )


def _layers(stack: nn.Sequential) -> list[BatchedLinear]:
    return [layer for layer in stack if isinstance(layer, BatchedLinear)]


def _per_model_gradients(
    stack: nn.Sequential, x: torch.Tensor, grad: torch.Tensor
) -> list[torch.Tensor]:
    """The weight gradients of ``stack`` for (x, grad) with one product per model: baddbmm_
    into a copy of each gradient at its real strides and offset (so not contiguous)."""
    stack(x)
    grads = []
    layers = _layers(stack)
    stored = {id(layer): (layer._product, layer._choice) for layer in layers}
    try:
        for layer in layers:
            layer._product, layer._choice = None, [False]  # the per-model path
        for parameter in stack.parameters():
            parameter.grad.zero_()
        stack.backward(grad)
        grads = [layer.weight.grad.clone() for layer in layers]
    finally:
        for layer in layers:
            layer._product, layer._choice = stored[id(layer)]
    return grads


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize(
    ("sizes", "models", "batch"),
    [
        ((2, 25, 25, 25, 2), 20, 100),
        ((2, 25, 25, 25, 2), 1, 100),
        ((2, 100, 70, 2), 2, 12),
        ((2, 100, 70, 2), 3, 12),
        ((3, 7, 1), 5, 9),
        ((4, 6, 5), 3, 1),
    ],
)
def test_weight_gradients_are_the_per_model_products_bit_for_bit(
    dtype: torch.dtype, sizes: tuple[int, ...], models: int, batch: int
) -> None:
    """On 8 draws of inputs and upstream gradients other than the check's: the check's yes
    holds for the layout, not only for its own draws. (For the 2 x 70 layer of two models
    over 12 samples, one draw had said yes where 3 draws in 4 show a difference here.)"""
    stack = _stack(sizes, models, dtype, seed=models)
    generator = torch.Generator().manual_seed(batch)
    for _ in range(8):
        x = torch.randn(models, batch, sizes[0], dtype=dtype, generator=generator)
        grad = torch.randn(models, batch, sizes[-1], dtype=dtype, generator=generator)
        expected = _per_model_gradients(stack, x, grad)
        stack(x)
        for parameter in stack.parameters():
            parameter.grad.zero_()
        stack.backward(grad)
        for layer, want in zip(_layers(stack), expected, strict=True):
            assert torch.equal(layer.weight.grad, want)
            # The batched product is used exactly where the check says it gives these bits.
            uses_product = layer._product is not None
            exact = models > 1 and _batched_gradient_is_exact(layer.weight.grad, batch)
            assert uses_product == exact


def test_the_paper_stack_uses_the_batched_product_where_the_check_allows_it() -> None:
    """(Whether it does depends on the CPU and the BLAS library; where it does not, the
    per-model products are kept, with the same bits.)"""
    stack = _stack((2, 25, 25, 25, 2), 20, torch.float32, seed=0)
    stack(torch.randn(20, 100, 2))
    assert all(layer._choice == [None] for layer in _layers(stack))  # (decided by backward)
    stack.backward(torch.randn(20, 100, 2))
    for layer in _layers(stack):
        grad = layer.weight.grad
        assert not grad.is_contiguous()
        assert (layer._product is not None) == _batched_gradient_is_exact(grad, 100)
        if layer._product is not None:
            assert layer._product.is_contiguous() and layer._product.shape == grad.shape


def test_the_check_compares_the_two_ways_and_keeps_its_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batched_linear, "_EXACT_BATCHED_GRADIENT", {})
    stack = _stack((3, 4, 2), 3, F64, seed=1)
    grad = _layers(stack)[0].weight.grad
    calls = []
    real_bmm = torch.bmm

    def counting_bmm(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return real_bmm(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "bmm", counting_bmm)
    first = _batched_gradient_is_exact(grad, 6)
    # (every draw where the two ways agree; up to the first that differs otherwise)
    checked = len(calls)
    assert checked == batched_linear._DRAWS if first else 1 <= checked <= batched_linear._DRAWS
    assert _batched_gradient_is_exact(grad, 6) is first and len(calls) == checked  # kept
    _batched_gradient_is_exact(grad, 7)  # another batch size: checked again
    assert len(calls) > checked


def test_large_products_keep_the_per_model_products_without_a_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Beyond _LARGEST_CHECKED multiply-adds per model the check is not made (its 64 products
    would cost more than the batched product saves): the per-model products, the bits of each
    model alone. At the limit itself it is made."""
    monkeypatch.setattr(batched_linear, "_EXACT_BATCHED_GRADIENT", {})
    monkeypatch.setattr(batched_linear, "_LARGEST_CHECKED", 5 * 4 * 10)
    stack = _stack((4, 5, 4), 3, torch.float32, seed=4)
    first, second = _layers(stack)
    for batch in (11, 10):
        x, grad = torch.randn(3, batch, 4), torch.randn(3, batch, 4)
        expected = _per_model_gradients(stack, x, grad)
        stack(x)
        for parameter in stack.parameters():
            parameter.grad.zero_()
        stack.backward(grad)
        for layer, want in zip((first, second), expected, strict=True):
            assert torch.equal(layer.weight.grad, want)
        checked = {key[3] for key in batched_linear._EXACT_BATCHED_GRADIENT}
        assert checked == ({10} if batch == 10 else set())
    assert first._choice != [None] and second._choice != [None]  # (decided, either way)


def test_the_answer_is_kept_per_number_of_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batched_linear, "_EXACT_BATCHED_GRADIENT", {})
    grad = _layers(_stack((3, 4, 2), 3, F64, seed=1))[0].weight.grad
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _batched_gradient_is_exact(grad, 6)
        torch.set_num_threads(2)
        _batched_gradient_is_exact(grad, 6)
    finally:
        torch.set_num_threads(threads)
    assert sorted(key[-1] for key in batched_linear._EXACT_BATCHED_GRADIENT) == [1, 2]


def test_the_check_leaves_the_global_random_state_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batched_linear, "_EXACT_BATCHED_GRADIENT", {})
    """The check runs at the first backward of a batch size (not at forward), with its own
    generator."""
    stack = _stack((2, 5, 2), 4, torch.float32, seed=2)
    x = torch.randn(4, 10, 2)
    grad = torch.randn(4, 10, 2)
    state = torch.get_rng_state()
    stack(x)
    stack.backward(grad)
    assert batched_linear._EXACT_BATCHED_GRADIENT  # (it ran)
    assert torch.equal(torch.get_rng_state(), state)


def test_where_the_check_fails_the_per_model_products_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batched_linear, "_batched_gradient_is_exact", lambda grad, batch: False)
    stack = _stack((2, 5, 2), 4, F64, seed=3)
    stack(torch.randn(4, 10, 2, dtype=F64))
    stack.backward(torch.randn(4, 10, 2, dtype=F64))  # (which decides)
    assert all(layer._choice == [False] for layer in _layers(stack))
    assert all(layer._product is None for layer in _layers(stack))


@pytest.mark.parametrize("exact", [True, False])
def test_gradients_accumulate_as_autograd_says_either_way(
    monkeypatch: pytest.MonkeyPatch, exact: bool
) -> None:
    """Two backward calls without zeroing in between (the temporary is added, not written),
    against autograd in float64."""
    monkeypatch.setattr(batched_linear, "_batched_gradient_is_exact", lambda grad, batch: exact)
    models = 3
    torch.manual_seed(4)
    singles = [nn.mlp((3, 6, 2), "tanh", dtype=F64) for _ in range(models)]
    stack = nn.stack_models(singles, layout="model")
    generator = torch.Generator().manual_seed(5)
    xs = [torch.randn(models, 8, 3, dtype=F64, generator=generator) for _ in range(2)]
    grads = [torch.randn(models, 8, 2, dtype=F64, generator=generator) for _ in range(2)]
    for x, grad in zip(xs, grads, strict=True):
        stack(x)
        stack.backward(grad)
    assert all((layer._product is not None) == exact for layer in _layers(stack))
    for r, single in enumerate(singles):
        weights = [
            torch.tensor(p.data.tolist(), dtype=F64, requires_grad=True)
            for p in single.parameters()
        ]
        for x, grad in zip(xs, grads, strict=True):
            h = torch.tanh(x[r] @ weights[0].T + weights[1])
            (h @ weights[2].T + weights[3]).backward(grad[r])
        stacked_grads = [p.grad[r] for p in stack.parameters()]
        for got, w in zip(stacked_grads, weights, strict=True):
            assert w.grad is not None
            torch.testing.assert_close(got, w.grad, rtol=1e-12, atol=1e-12)


def test_a_stack_moved_after_a_step_chooses_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The choice is kept per input shape for the parameter tensors it was made for: a stack
    moved with ``.to(...)`` (laid out by layer, its gradients contiguous) after a step at the
    same batch shape uses no temporary, and a move to another device works (a kept CPU
    temporary took meta operands)."""
    monkeypatch.setattr(batched_linear, "_batched_gradient_is_exact", lambda grad, batch: True)
    stack = _stack((3, 4, 2), 3, torch.float32, seed=7)
    x, grad = torch.randn(3, 5, 3), torch.randn(3, 5, 2)
    stack(x)
    stack.backward(grad)
    assert all(layer._product is not None for layer in _layers(stack))
    stack.to("meta")
    stack(x.to("meta"))
    stack.backward(grad.to("meta"))
    for layer in _layers(stack):
        assert layer._product is None
        assert layer.weight.grad.device.type == "meta"


def test_copies_and_old_pickles_make_their_own_temporary() -> None:
    stack = _stack((2, 5, 2), 3, torch.float32, seed=6)
    x = torch.randn(3, 10, 2)
    grad = torch.randn(3, 10, 2)
    stack(x)
    stack.backward(grad)
    for copied in (copy.deepcopy(stack), pickle.loads(pickle.dumps(stack))):
        layers = _layers(copied)
        assert all(layer._product is None for layer in layers)  # made again by the next call
        for p in copied.parameters():
            p.grad.zero_()
        for p in stack.parameters():
            p.grad.zero_()
        copied(x)
        copied.backward(grad)
        stack(x)
        stack.backward(grad)
        for p, q in zip(copied.parameters(), stack.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad)
        if any(layer._product is not None for layer in _layers(stack)):
            assert all(
                a._product is not None and a._product.data_ptr() != b._product.data_ptr()
                for a, b in zip(layers, _layers(stack), strict=True)
                if b._product is not None
            )
    # A layer pickled before the temporary existed.
    layer = _layers(stack)[0]
    state = layer.__getstate__()
    del state["_product"]
    old = BatchedLinear.__new__(BatchedLinear)
    old.__setstate__(state)
    old(x)
    old.backward(torch.randn(3, 10, 5))


def test_a_dtype_without_the_kernels_keeps_the_per_model_products(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batched_linear, "_EXACT_BATCHED_GRADIENT", {})
    stack = _stack((2, 5, 2), 3, torch.float32, seed=7)

    def refused(*args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("not implemented for this dtype")

    monkeypatch.setattr(torch, "bmm", refused)
    assert not _batched_gradient_is_exact(_layers(stack)[0].weight.grad, 4)
