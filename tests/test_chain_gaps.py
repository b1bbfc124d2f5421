"""Planned chains (minidl.nn.chain) and the gradients' memory (minidl.nn._gradient_memory):
what a fourth mutation audit found untested, each test naming the mutant it kills, and two bugs
it found (fixed). Oracles: the same model driven child by child (which never plans), PyTorch
autograd in float64, and the modules' own messages."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import Tensor

from minidl import nn
from tests.test_chain_plan import _assert_same, _plain_backward, _plain_forward, _planned

F64 = torch.float64

#: (several tests here make CSR tensors, whose support torch calls beta)
pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_a_sparse_input_or_gradient_of_a_sequential_gets_the_childs_error_and_changes_nothing(
    layout: torch.layout,
) -> None:
    """(G03) A Sequential looks for its input and gradient in its gradients' memory first: a
    tensor without storage (whose data_ptr raises RuntimeError) is not held, and the child
    refuses it with its own message, nothing changed. (Caught as AttributeError only, the
    tensor library's RuntimeError "Cannot access data pointer" came out of Sequential.)"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3, dtype=F64), nn.Tanh())
    x = torch.randn(4, 2, dtype=F64)
    sparse = x.to_sparse(layout=layout)
    name = "sparse_coo" if layout is torch.sparse_coo else "sparse_csr"
    with pytest.raises(TypeError, match=re.escape(f"Linear: expected a dense input, got a {name}")):
        model(sparse)
    y = model(x)
    before = [p.grad.clone() for p in model.parameters()]
    for method in ("backward", "backward_parameters"):
        grad = torch.ones_like(y).to_sparse(layout=layout)
        with pytest.raises(
            TypeError, match=re.escape(f"Tanh: expected a dense gradient, got a {name}")
        ):
            getattr(model, method)(grad)
        assert all(torch.equal(p.grad, b) for p, b in zip(model.parameters(), before, strict=True))


def test_a_chain_on_the_meta_device_is_planned_with_buffers_on_that_device() -> None:
    """(C10) A plan's buffers are made on its signature's device: a chain trained on ``meta``
    (shapes only, as a model sized before it is materialized) is planned and stays planned,
    its output, input gradient and parameter gradients on ``meta`` with the children's shapes.
    (Buffers made on the default device: every planned forward failed and ran child by child.)
    On a machine with CUDA the same holds for ``cuda`` (tests/test_cuda.py)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(3, 4, dtype=F64), nn.Tanh(), nn.Linear(4, 4, dtype=F64), nn.ReLU(),
        nn.Linear(4, 2, dtype=F64),
    )  # fmt: skip
    model.to("meta")
    x = torch.empty(5, 3, dtype=F64, device="meta")
    planned = []
    for _ in range(4):
        y = model(x)
        planned.append(model._planned is not None)
        assert y.device.type == "meta" and y.shape == (5, 2) and y.dtype is F64
        grad = model.backward(torch.empty(5, 2, dtype=F64, device="meta"))
        assert grad.device.type == "meta" and grad.shape == (5, 3)
    assert planned == [False, False, True, True]
    assert all(p.grad.device.type == "meta" for p in model.parameters())
    plan = model._planned
    assert plan is not None
    assert all(step.output is None or step.output.device.type == "meta" for step in plan.steps)


def test_a_contiguous_tensor_whose_last_byte_is_a_windows_first_is_held() -> None:
    """(G07) A contiguous tensor over a larger memory that ends one byte into a gradient's
    window (its last element, a byte, the window's first byte) meets the window: held; one
    that ends just before it is not. (Its end taken one byte short, the span of a tensor of
    1-byte elements stopped before the window; the tests' float64 views end 8 bytes in.)"""
    numpy = pytest.importorskip("numpy")
    from minidl.nn._gradient_memory import GradientMemory

    layer = nn.Linear(2, 2, dtype=F64)
    memory = numpy.zeros(32)
    layer.weight.grad = torch.from_numpy(memory[4:8]).view(2, 2)  # (bytes 32 to 64)
    layer.bias.grad = torch.from_numpy(memory[20:22])  # (bytes 160 to 176)
    data = torch.from_numpy(memory).view(torch.uint8)
    assert GradientMemory().holds(data[:33], layer)
    assert not GradientMemory().holds(data[:32], layer)
    assert GradientMemory().holds(data[100:161], layer)
    assert not GradientMemory().holds(data[100:160], layer)


def test_two_gradient_windows_from_one_address_are_both_searched() -> None:
    """The gradients over two storages that start at one address (as
    ``torch.from_numpy`` of a whole array and of its first half makes: 64 and 16 bytes here,
    the case tests/test_parameter_flat_gaps.py trains with SGD) are two windows, and a tensor
    in either is held. (Fixed: ``GradientMemory._find`` kept one window for each start
    address, the one read last, the bias's 16 bytes: the weight's gradient, given as the
    layer's input, was not copied, and the layer's backward accumulated into the memory it
    read, a weight gradient 0.14 away from autograd's.)"""
    numpy = pytest.importorskip("numpy")
    from minidl.nn._gradient_memory import GradientMemory

    torch.manual_seed(0)
    layer = nn.Linear(2, 2, dtype=F64)
    array = numpy.zeros(8)
    layer.weight.grad = torch.from_numpy(array)[4:8].view(2, 2)  # (storage: the whole array)
    layer.bias.grad = torch.from_numpy(array[:2])  # (storage: its first 16 bytes)
    assert (
        layer.weight.grad.untyped_storage().data_ptr()
        == layer.bias.grad.untyped_storage().data_ptr()
    )
    assert GradientMemory().holds(layer.weight.grad, layer)
    assert GradientMemory().holds(layer.bias.grad, layer)
    # The oracle: autograd on a copy of the values given.
    layer.weight.grad.copy_(torch.randn(2, 2, dtype=F64))
    start_weight, start_bias = layer.weight.grad.clone(), layer.bias.grad.clone()
    weight = layer.weight.data.clone().requires_grad_()
    bias = layer.bias.data.clone().requires_grad_()
    x = layer.weight.grad.clone()
    grad = torch.randn(2, 2, dtype=F64)
    y = layer(layer.weight.grad)
    expected = torch.nn.functional.linear(x, weight, bias)
    expected.backward(grad)
    assert torch.allclose(y, expected, rtol=0, atol=1e-12)
    layer.backward(grad)
    assert torch.allclose(layer.weight.grad, start_weight + weight.grad, rtol=0, atol=1e-12)
    assert torch.allclose(layer.bias.grad, start_bias + bias.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_a_sparse_input_of_a_planned_signature_gets_the_childs_error(layout: torch.layout) -> None:
    """(C32) A sparse input of the shape, dtype and device of a plan is not planned: the
    first layer refuses it with its own message, the parameters' gradients unchanged, and the
    plan runs for the next dense input. (Taken by the plan, the product read it as the tensor
    library does and returned the dense result the children refuse to make.)"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, dtype=F64), nn.Tanh(), nn.Linear(4, 2, dtype=F64))
    twin = copy.deepcopy(model)
    x = torch.randn(5, 3, dtype=F64)
    expected = _planned(model, x)
    name = "sparse_coo" if layout is torch.sparse_coo else "sparse_csr"
    with pytest.raises(TypeError, match=re.escape(f"Linear: expected a dense input, got a {name}")):
        model(x.to_sparse(layout=layout))
    _assert_same(model, twin)
    assert torch.equal(model(x), expected) and model._planned is not None


@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_a_sparse_gradient_of_a_planned_chain_gets_the_childs_error_and_changes_nothing(
    layout: torch.layout, method: str
) -> None:
    """(C38) A sparse gradient of the shape, dtype and device of a planned chain's output (one
    that ends with a layer, which takes a gradient of any strides) is not taken by the plan:
    the last layer refuses it with its own message, no gradient changed and the plan kept."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, dtype=F64), nn.Tanh(), nn.Linear(4, 2, dtype=F64))
    twin = copy.deepcopy(model)
    x = torch.randn(5, 3, dtype=F64)
    y = _planned(model, x)
    _plain_forward(twin, x)
    name = "sparse_coo" if layout is torch.sparse_coo else "sparse_csr"
    grad = torch.randn(y.shape, dtype=F64)
    with pytest.raises(
        TypeError, match=re.escape(f"Linear: expected a dense gradient, got a {name}")
    ):
        getattr(model, method)(grad.to_sparse(layout=layout))
    _assert_same(model, twin)
    assert model._planned is not None and len(model._plans) == 1
    assert torch.equal(model.backward(grad), _plain_backward(twin, grad))
    _assert_same(model, twin)


def _traced_tanh_chain() -> tuple[nn.Sequential, Tensor]:
    torch.manual_seed(0)
    tanh = nn.Tanh()
    tanh.note = "an attribute of one's own"  # type: ignore[attr-defined]
    model = nn.Sequential(nn.Linear(2, 5, dtype=F64), tanh, nn.Linear(5, 3, dtype=F64))
    return model, torch.randn(4, 2, dtype=F64)


def _trace_forward(tanh: nn.Module, calls: list[str]) -> None:
    original = type(tanh).forward

    def traced(input: Tensor) -> Tensor:
        calls.append("forward")
        return original(tanh, input)

    tanh.forward = traced  # type: ignore[method-assign]


def test_a_method_set_after_an_attribute_was_deleted_and_a_plan_made_again_is_called() -> None:
    """(C47) An attribute of one's own deleted from a child after planning makes the plans
    stale (the child holds fewer attributes), and the plan made again counts what the child
    holds now: a method set on the child since is then called. (Kept while a child held fewer
    attributes, the old plan counted one more, which the method set made up: not called.)"""
    model, x = _traced_tanh_chain()
    _planned(model, x)
    del model[1].note
    for _ in range(3):  # (stale, dropped, and a plan made again)
        model.backward_parameters(torch.zeros_like(model(x)))
    assert model._planned is not None
    calls: list[str] = []
    _trace_forward(model[1], calls)
    model(x)
    assert calls == ["forward"]


def test_a_method_set_right_after_an_attribute_was_deleted_is_called() -> None:
    """A method set on a child's instance is called (the documented rule of
    minidl.nn.chain._NAMES), though a plan finds it by the number of attributes the child
    holds, which one of the child's own attributes deleted and a method set, with no call
    between, leave as it was: a deletion moves ``Parameter.replacements`` on, and the plan is
    made again. (Fixed: the plan was accepted and the method not called.)"""
    model, x = _traced_tanh_chain()
    _planned(model, x)
    del model[1].note
    calls: list[str] = []
    _trace_forward(model[1], calls)
    model(x)
    assert calls == ["forward"]


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
def test_a_nested_gradient_of_a_planned_chain_gets_the_childs_error_and_changes_nothing(
    method: str,
) -> None:
    """(C40) A nested gradient given to a planned chain goes to the children, whose last layer
    refuses it with its own message, nothing changed and the plan kept. (Asked for its shape
    by the plan, a nested tensor raised the tensor library's RuntimeError instead.)"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, dtype=F64), nn.Tanh(), nn.Linear(4, 2, dtype=F64))
    twin = copy.deepcopy(model)
    x = torch.randn(5, 3, dtype=F64)
    y = _planned(model, x)
    _plain_forward(twin, x)
    nested = torch.nested.nested_tensor([torch.randn(y.shape, dtype=F64)])
    with pytest.raises(
        TypeError, match=re.escape("Linear: expected a dense gradient, got a nested tensor")
    ):
        getattr(model, method)(nested)
    _assert_same(model, twin)
    assert model._planned is not None and len(model._plans) == 1


def test_a_layers_parameter_deleted_and_an_attribute_set_is_refused_as_without_a_plan() -> None:
    """A planned chain whose first layer lost its ``weight`` attribute (``del``) and got an
    attribute of its own, with no call between, refuses the next forward as an unplanned chain
    does, in the layer's words. (Before the fix, the plan's check read the deleted attribute:
    a bare ``KeyError: 'weight'``.)"""
    messages = []
    for plan in (True, False):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(2, 3, dtype=F64), nn.Tanh(), nn.Linear(3, 2, dtype=F64))
        x = torch.randn(4, 2, dtype=F64)
        if plan:
            _planned(model, x)
        del model[0].weight
        model[0].note = 1  # type: ignore[attr-defined]
        with pytest.raises(TypeError, match=r"^Linear: weight must be a minidl Parameter") as info:
            model(x)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_deleting_a_modules_attribute_moves_the_replacement_count_on() -> None:
    """``del module.attribute`` moves ``Parameter.replacements`` on (what plans, the folded
    step and the optimizers compare), and a failed deletion does not."""
    tanh = nn.Tanh()
    tanh.note = 1  # type: ignore[attr-defined]
    before = nn.Parameter.replacements
    del tanh.note  # type: ignore[attr-defined]
    after = nn.Parameter.replacements
    assert after != before
    with pytest.raises(AttributeError):
        del tanh.note  # type: ignore[attr-defined]
    assert nn.Parameter.replacements == after
