"""Gaps found by mutation testing of ``minidl.nn.chain`` and the planning in ``Sequential``.

Each test drives a chain until its plan runs (checked, so that it cannot pass on the
child-by-child path alone) and compares it, bit for bit, with the same calls made child by
child on a twin that never plans, or checks the module contract itself (outputs are new
tensors; a method or hook set on a child's instance is honoured; state left after a refusal).
"""

from __future__ import annotations

import copy
import gc
import weakref
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import minidl
from minidl import nn, optim
from minidl.data import BatchIterator
from minidl.nn.activation_base import Operations
from tests.test_chain_plan import _chain as _chain_of
from tests.test_chain_plan import _plain_backward, _plain_forward, _planned

F64 = torch.float64


def _chain(layout: str, widths: list[int], seed: int) -> nn.Sequential:
    """test_chain_plan's chain of ``layout``, in float64."""
    return _chain_of(layout, widths, F64, seed)


def _assert_same(planned: nn.Module, plain: nn.Module) -> None:
    for p, q in zip(planned.parameters(), plain.parameters(), strict=True):
        assert torch.equal(p.data, q.data)
        assert torch.equal(p.grad, q.grad)


@pytest.mark.parametrize("layout", ["LT", "LTLR", "LS", "LW"])
def test_a_planned_chain_ending_with_an_activation_returns_a_new_output_on_every_call(
    layout: str,
) -> None:
    """``y1 = model(x1); y2 = model(x2)`` leaves ``y1`` as it was: the activation last runs in
    place over the last layer's output, which must then be a new tensor on every call, not a
    buffer of the plan that the next call writes over. The backward of the second call is
    the children's, bit for bit."""
    widths = [3, 5, 4][: layout.count("L") + 1]
    planned = _chain(layout, widths, seed=1)
    plain = copy.deepcopy(planned)
    x1, x2 = torch.randn(6, 3, dtype=F64), torch.randn(6, 3, dtype=F64)
    y1 = _planned(planned, x1)
    kept = y1.clone()
    y2 = planned(x2)
    assert planned._planned is not None
    assert torch.equal(y1, kept)
    assert y2.data_ptr() != y1.data_ptr()
    assert torch.equal(y2, _plain_forward(plain, x2))
    grad = torch.randn(y2.shape, dtype=F64)
    assert torch.equal(planned.backward(grad), _plain_backward(plain, grad))
    assert torch.equal(y1, kept)


def test_a_backward_parameters_set_on_the_first_layers_instance_is_called() -> None:
    """A researcher's changed gradient set on the first layer's instance before training
    (``layer.backward_parameters = ...``, the method ``Sequential.backward_parameters`` calls
    on that layer): no plan may skip it. Every call reaches it, and the gradients are those
    of a twin driven by hand, bit for bit."""
    model = _chain("LTL", [2, 5, 3], seed=2)
    twin = copy.deepcopy(model)
    calls: list[int] = []

    def doubled(layer: nn.Linear) -> None:
        original = layer.backward_parameters

        def traced(grad_output: Tensor) -> None:
            calls.append(1)
            original(2 * grad_output)

        layer.backward_parameters = traced  # type: ignore[method-assign]

    layer = model[0]
    assert isinstance(layer, nn.Linear)
    doubled(layer)
    x = torch.randn(4, 2, dtype=F64)
    for step in range(5):
        grad = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(step))
        y = model(x)
        assert torch.equal(y, _plain_forward(twin, x))
        model.backward_parameters(grad)
        gradient = twin[1].backward(twin[2].backward(grad))
        twin[0].backward_parameters(2 * gradient)
        _assert_same(model, twin)
    assert len(calls) == 5


def test_an_operations_hook_set_on_an_activations_instance_is_not_called_by_fit() -> None:
    """An activation's ``_operations`` set on its instance (a researcher's hook that changes
    the gradient): only ``fit``'s folded step calls it, and set on an instance it is called by
    nothing; fit trains step by step, as a twin trained by hand, bit for bit."""

    def set_hook(model: nn.Sequential, calls: list[int]) -> None:
        tanh = model[1]
        assert isinstance(tanh, nn.Tanh)
        original = tanh._operations

        def halved(
            input: Tensor, output: Tensor, grad_output: Tensor, grad_input: Tensor
        ) -> Operations | None:
            calls.append(1)
            return original(input, output, 0.5 * grad_output, grad_input)

        tanh._operations = halved  # type: ignore[method-assign]

    generator = torch.Generator().manual_seed(3)
    x = torch.randn(16, 2, dtype=F64, generator=generator)
    target = torch.randint(0, 3, (16,), generator=generator)
    model, twin = _chain("LTLTL", [2, 5, 5, 3], seed=4), _chain("LTLTL", [2, 5, 5, 3], seed=4)
    calls: list[int] = []
    set_hook(model, calls)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    twin_optimizer = optim.SGD(twin.parameters(), lr=0.1)
    minidl.train.fit(
        model,
        criterion,
        optimizer,
        x,
        target,
        epochs=3,
        batch_size=4,
        generator=torch.Generator().manual_seed(5),
    )
    generator = torch.Generator().manual_seed(5)
    for _ in range(3):
        for x_batch, y_batch in BatchIterator(x, target, 4, generator=generator):
            twin_optimizer.zero_grad()
            criterion(_plain_forward(twin, x_batch), y_batch)
            _plain_backward(twin, criterion.backward())
            twin_optimizer.step()
    assert calls == []
    for mine, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(mine.data, theirs.data)


def test_an_input_resized_after_a_planned_forward_fails_as_the_children_fail() -> None:
    """The caller's input resized in place between the planned forward and backward (the
    first layer's cache, which no plan check reads): the first layer's product fails after
    the layers after it accumulated their gradients, as child by child, with the same error
    and the same gradients left; not a second accumulation of theirs by a fall back to the
    children once the plan had written gradients."""
    planned = _chain("LTL", [2, 5, 3], seed=6)
    plain = copy.deepcopy(planned)
    _planned(planned, torch.randn(4, 2, dtype=F64))
    errors = []
    runs: list[tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = [
        (planned, planned.backward),
        (lambda x: _plain_forward(plain, x), lambda g: _plain_backward(plain, g)),
    ]
    for forward, backward in runs:
        x = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(7))
        forward(x)
        x.resize_(3, 2)
        with pytest.raises(RuntimeError) as error:
            backward(torch.ones(4, 3, dtype=F64))
        errors.append(str(error.value))
    assert planned._planned is not None  # (the plan's forward ran)
    assert errors[0] == errors[1]
    _assert_same(planned, plain)


@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_declined_gradient_from_an_autograd_graph_is_not_kept_alive_by_the_model(
    method: str, dtype: torch.dtype
) -> None:
    """A leaf gradient whose operations are recorded, given to a planned 16-bit chain with an
    ELU last: the ELU's gradient (in the graph) was written into a buffer of the plan before
    the layer's product refused it, and the children took it. The model must not keep the
    caller's graph (and its tensors) alive through that buffer once the caller drops it: the
    plan is dropped, and the results are the children's, bit for bit."""
    planned = nn.Sequential(nn.Linear(3, 4, dtype=dtype), nn.ELU(0.7))
    plain = copy.deepcopy(planned)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(8)).to(dtype)
    y = _planned(planned, x)
    _plain_forward(plain, x)
    grad = torch.randn(y.shape).to(dtype).requires_grad_()
    alive = weakref.ref(grad)
    getattr(planned, method)(grad)
    _plain_backward(plain, grad.detach())
    _assert_same(planned, plain)
    del grad
    gc.collect()
    assert alive() is None
    # A plain gradient after it is the children's too.
    y = _planned(planned, x)
    assert torch.equal(y, _plain_forward(plain, x))
    grad = torch.randn(y.shape).to(dtype)
    assert torch.equal(planned.backward(grad), _plain_backward(plain, grad))
    _assert_same(planned, plain)


class _Doubled(nn.Linear):
    """A layer of one's own: a Linear whose output is doubled (and its gradient with it)."""

    def forward(self, input: Tensor) -> Tensor:
        return 2 * super().forward(input)

    def backward(self, grad_output: Tensor) -> Tensor:
        return super().backward(2 * grad_output)

    def backward_parameters(self, grad_output: Tensor) -> None:
        super().backward_parameters(2 * grad_output)


def test_a_subclass_of_linear_in_a_chain_trains_child_by_child() -> None:
    """A ``Sequential`` holding a subclass of ``Linear`` (which may compute otherwise, as this
    one does) is never planned: trained on one signature again and again, it runs the
    subclass's own methods, its outputs, input gradients and parameter gradients those of a
    twin driven child by child, bit for bit."""
    torch.manual_seed(0)
    model = nn.Sequential(_Doubled(3, 4, dtype=F64), nn.Tanh(), nn.Linear(4, 2, dtype=F64))
    twin = copy.deepcopy(model)
    x = torch.randn(5, 3, dtype=F64)
    for step in range(4):
        grad = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(step))
        y = model(x)
        assert model._planned is None
        assert torch.equal(y, _plain_forward(twin, x))
        assert torch.equal(model.backward(grad), _plain_backward(twin, grad))
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad)
