"""A ``Sequential``'s planned forward and backward (``minidl.nn.chain``) against the same calls
child by child.

The oracle is the module contract itself: ``model(x)`` is ``model[k](...model[0](x))`` and
``model.backward(g)`` is each child's ``backward`` from the last, so a twin of the model driven
child by child (which never plans) must give the same bits: outputs, input gradients, parameter
gradients and parameters, step after step, for every chain a plan is made for, and whatever is
done to the model between the calls (other shapes, a child called on its own, parameters
replaced, methods set on an instance, inference mode, copies). Each test also checks that the
plan ran, so that it cannot pass on the child-by-child path alone.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import pickle
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

import minidl
from minidl import nn, optim
from minidl.data import BatchIterator
from tests.helpers import PLANNED_ACTIVATION_MAKERS

F32, F64 = torch.float32, torch.float64

ACTIVATIONS = PLANNED_ACTIVATION_MAKERS


def _chain(layout: str, widths: list[int], dtype: torch.dtype, seed: int) -> nn.Sequential:
    """A Sequential from ``layout``: ``L`` a Linear with bias, ``l`` one without, any other
    letter the activation of ACTIVATIONS whose name starts with it (``S`` Sigmoid, ``s``
    SELU, ``E`` ELU, ``K`` LeakyReLU, ``G`` GELU, ``g`` GELU tanh), or ``W`` SiLU (swish);
    ``widths`` the features before and after each Linear."""
    torch.manual_seed(seed)
    letters = {"T": "Tanh", "S": "Sigmoid", "R": "ReLU", "K": "LeakyReLU", "E": "ELU", "s": "SELU"}
    letters.update({"G": "GELU", "g": "GELU tanh", "W": "SiLU"})
    modules: list[nn.Module] = []
    sizes = itertools.pairwise(widths)
    for letter in layout:
        if letter in "Ll":
            fan_in, fan_out = next(sizes)
            modules.append(nn.Linear(fan_in, fan_out, bias=letter == "L", dtype=dtype))
        else:
            modules.append(ACTIVATIONS[letters[letter]]())
    return nn.Sequential(*modules)


def _plain_forward(model: nn.Sequential, x: Tensor) -> Tensor:
    for module in model:
        x = module(x)
    return x


def _plain_backward(model: nn.Sequential, grad: Tensor) -> Tensor:
    for module in reversed(list(model)):
        grad = module.backward(grad)
    return grad


def _planned(model: nn.Sequential, x: Tensor) -> Tensor:
    """Run ``model`` on ``x`` until it runs a plan, and return the output: the second forward
    makes it, if the first was followed by a backward (here of zeros, which leaves every
    parameter gradient as it was, bit for bit); the third runs it."""
    for _ in range(3):
        y = model(x)
        if model._planned is None:
            model.backward_parameters(torch.zeros_like(y))
    assert model._planned is not None
    return y


def _count_plans_made(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gets a 1 for every ChainPlan made from now on (undone after the test)."""
    made: list[int] = []
    original = minidl.nn.chain.ChainPlan.__init__

    def counted(self: minidl.nn.chain.ChainPlan, *args: object) -> None:
        made.append(1)
        original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(minidl.nn.chain.ChainPlan, "__init__", counted)
    return made


def _assert_same(planned: nn.Module, plain: nn.Module) -> None:
    for p, q in zip(planned.parameters(), plain.parameters(), strict=True):
        assert torch.equal(p.data, q.data)
        assert torch.equal(p.grad, q.grad)


CHAINS = [
    ("LTLTLTL", [2, 25, 25, 25, 2]),  # the paper's network
    ("LSLRL", [3, 7, 7, 4]),
    ("LKLELs", [5, 1, 6, 6]),
    ("LGLgLWL", [4, 6, 1, 5, 3]),
    ("WLG", [6, 3]),  # (an activation first and last)
    ("lTlTl", [4, 4, 4, 4]),  # no biases, every width alike (the buffers alternate)
    ("LL", [3, 5, 2]),  # two layers in a row: the first's output is the second's cache
    ("LLTL", [4, 4, 4, 4]),  # the same, beside a layer of the same shape before an activation
    ("LLL", [2, 3, 3, 1]),  # three in a row of one shape: each output is a buffer of its own
    ("TLT", [6, 3]),  # an activation first and last
    ("LTSLRE", [4, 5, 3]),  # activations after activations (those do not run in place)
    ("L", [4, 3]),
    ("E", []),
]


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize(("layout", "widths"), CHAINS)
def test_planned_training_is_the_child_by_child_training_bit_for_bit(
    layout: str, widths: list[int], dtype: torch.dtype
) -> None:
    planned = _chain(layout, widths, dtype, seed=0)
    plain = copy.deepcopy(planned)
    features = widths[0] if widths else 5
    trained = bool(list(planned.parameters()))
    sgd = optim.SGD(planned.parameters(), lr=0.1, momentum=0.9) if trained else None
    twin_sgd = optim.SGD(plain.parameters(), lr=0.1, momentum=0.9) if trained else None
    generator = torch.Generator().manual_seed(1)
    # Batch sizes that switch between signatures, with runs of the same one (planned from its
    # second call on), a batch of one sample among them.
    batches = [8, 8, 8, 3, 8, 8, 1, 1, 1, 8, 3, 3, 8]
    planned_calls = planned_backwards = 0
    for step, batch in enumerate(batches):
        x = torch.randn(batch, features, dtype=dtype, generator=generator)
        y = planned(x)
        planned_calls += planned._planned is not None
        assert torch.equal(y, _plain_forward(plain, x))
        grad = torch.randn(y.shape, dtype=dtype, generator=generator)
        plan = planned._planned
        planned_backwards += plan is not None and plan.takes(grad)  # (its backward runs)
        if step % 3 == 2:  # the data's gradient left out, as fit does
            planned.backward_parameters(grad)
            _plain_backward(plain, grad)
        else:
            assert torch.equal(planned.backward(grad), _plain_backward(plain, grad))
        _assert_same(planned, plain)
        if sgd is not None and twin_sgd is not None:
            sgd.step()
            twin_sgd.step()
            sgd.zero_grad()
            twin_sgd.zero_grad()
        _assert_same(planned, plain)
    assert planned_calls >= 6 and planned_backwards == planned_calls


@pytest.mark.parametrize("layout", ["LTLELSLKLR", "LGLgLWL"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_planned_16_bit_chains_are_the_child_by_child_bits(dtype: torch.dtype, layout: str) -> None:
    widths = [3, 6, 6, 5, 5, 4][: layout.count("L") + 1]
    planned = _chain(layout, widths, dtype, seed=2)
    plain = copy.deepcopy(planned)
    x = torch.randn(7, 3).to(dtype)
    for _ in range(3):
        y = planned(x)
        assert torch.equal(y, _plain_forward(plain, x))
        grad = torch.randn(y.shape).to(dtype)
        assert torch.equal(planned.backward(grad), _plain_backward(plain, grad))
    assert planned._planned is not None
    _assert_same(planned, plain)


def test_outputs_and_input_gradients_are_new_tensors_on_every_call() -> None:
    model = _chain("LTLTL", [2, 5, 5, 3], F64, seed=3)
    x1, x2 = torch.randn(4, 2, dtype=F64), torch.randn(4, 2, dtype=F64)
    y1 = _planned(model, x1)
    kept = y1.clone()
    grad1 = model.backward(torch.ones_like(y1))
    kept_grad = grad1.clone()
    y2 = model(x2)
    model.backward(torch.ones_like(y2))
    assert torch.equal(y1, kept) and torch.equal(grad1, kept_grad)
    assert not torch.equal(y1, y2)


def test_a_child_called_on_its_own_between_forward_and_backward_is_honoured() -> None:
    """The child's cache then belongs to its own call: backward runs child by child, as it
    would without a plan (here it mixes the caches, as the contract says it does)."""
    planned = _chain("LTLTL", [2, 5, 5, 3], F64, seed=4)
    plain = copy.deepcopy(planned)
    x, other = torch.randn(4, 2, dtype=F64), torch.randn(4, 5, dtype=F64)
    _planned(planned, x)
    _plain_forward(plain, x)
    planned[2](other)
    plain[2](other)
    grad = torch.randn(4, 3, dtype=F64)
    assert torch.equal(planned.backward(grad), _plain_backward(plain, grad))
    _assert_same(planned, plain)


def test_an_activation_called_on_its_own_between_forward_and_backward_is_honoured() -> None:
    """Its cache is then its own call's (the backward runs child by child and mixes the
    caches, as without a plan)."""
    planned = _chain("LTLKL", [2, 5, 5, 3], F64, seed=25)
    plain = copy.deepcopy(planned)
    x, other = torch.randn(4, 2, dtype=F64), torch.randn(4, 5, dtype=F64)
    _planned(planned, x)
    _plain_forward(plain, x)
    for index in (1, 3):
        planned[index](other * index)
        plain[index](other * index)
        grad = torch.randn(4, 3, dtype=F64)
        assert torch.equal(planned.backward(grad), _plain_backward(plain, grad))
        _assert_same(planned, plain)


def test_a_gradient_on_another_device_or_parameters_cast_after_forward_get_the_childs_error() -> (
    None
):
    planned = _chain("LTL", [2, 5, 3], F64, seed=26)
    plain = copy.deepcopy(planned)
    x = torch.randn(4, 2, dtype=F64)
    _planned(planned, x)
    _plain_forward(plain, x)
    errors = []
    for model, backward in (
        (planned, planned.backward),
        (plain, lambda g: _plain_backward(plain, g)),
    ):
        with pytest.raises(ValueError) as on_meta:
            backward(torch.randn(4, 3, dtype=F64, device="meta"))
        model[2].weight.data = model[2].weight.data.float()  # (a tensor replaced, not moved)
        with pytest.raises(RuntimeError) as cast:
            backward(torch.randn(4, 3, dtype=F64))
        errors.append((str(on_meta.value), str(cast.value)))
    assert errors[0] == errors[1] and "Linear: gradient is on meta" in errors[0][0]
    _assert_same(planned, plain)


def test_a_child_called_on_another_shape_gives_the_childs_own_error() -> None:
    model = _chain("LTL", [2, 5, 3], F64, seed=5)
    x = torch.randn(4, 2, dtype=F64)
    _planned(model, x)
    model[0](torch.randn(9, 2, dtype=F64))  # the Tanh now holds a (4, 5) cache, Linear 0 (9, 2)
    with pytest.raises(ValueError, match="Linear") as planned_error:
        model.backward(torch.randn(4, 3, dtype=F64))
    twin = _chain("LTL", [2, 5, 3], F64, seed=5)
    _plain_forward(twin, x)
    twin[0](torch.randn(9, 2, dtype=F64))
    with pytest.raises(ValueError, match="Linear") as plain_error:
        _plain_backward(twin, torch.randn(4, 3, dtype=F64))
    assert str(planned_error.value) == str(plain_error.value)


def test_a_bad_gradient_gets_the_childs_error_and_changes_nothing() -> None:
    """Nor does it drop the plans: the children refuse it without the plan trying it (one of
    another dtype or device that the plan tried was refused by the tensor library part-way,
    which drops every plan made, as for a gradient from an autograd graph), and the plan's
    backward runs for the next good gradient."""
    model = _chain("LTL", [2, 5, 3], F64, seed=6)
    plain = copy.deepcopy(model)
    x = torch.randn(4, 2, dtype=F64)
    _planned(model, x)
    _plain_forward(plain, x)
    before = [p.grad.clone() for p in model.parameters()]
    for method in ("backward", "backward_parameters"):
        for bad, error in (
            (torch.randn(4, 2, dtype=F64), ValueError),
            (torch.randn(4, 3, dtype=F32), TypeError),
            (torch.randn(4, 3, dtype=F64, device="meta"), ValueError),
            ("grad", TypeError),
        ):
            with pytest.raises(error, match="Linear"):
                getattr(model, method)(bad)
            assert all(
                torch.equal(p.grad, b) for p, b in zip(model.parameters(), before, strict=True)
            )
            assert model._planned is not None and len(model._plans) == 1
    grad = torch.randn(4, 3, dtype=F64)
    plan = model._planned
    assert plan is not None and plan.takes(grad)  # (its backward runs)
    assert torch.equal(model.backward(grad), _plain_backward(plain, grad))
    _assert_same(model, plain)


def test_parameters_replaced_after_planning_are_used() -> None:
    planned = _chain("LTLSL", [3, 4, 4, 2], F32, seed=7)
    x = torch.randn(5, 3)
    _planned(planned, x)
    planned.double()  # new parameter tensors: the plan's signature no longer fits
    plain = copy.deepcopy(planned)
    x64 = x.double()
    for _ in range(3):
        y = planned(x64)
        assert torch.equal(y, _plain_forward(plain, x64))
        grad = torch.ones_like(y)
        assert torch.equal(planned.backward(grad), _plain_backward(plain, grad))
    assert planned._planned is not None
    _assert_same(planned, plain)
    # Values loaded in place (the same tensors) are read by the plan.
    planned.load_state_dict({k: v * 2 for k, v in planned.state_dict().items()})
    plain.load_state_dict({k: v * 2 for k, v in plain.state_dict().items()})
    assert torch.equal(planned(x64), _plain_forward(plain, x64))


@pytest.mark.parametrize("plan", [True, False])
def test_a_parameter_of_another_shape_put_in_between_forward_and_backward_is_refused(
    plan: bool,
) -> None:
    """A layer given another layer's parameter (weights tied) after its forward: the gradient
    products no longer fit it, planned or not. Refused before that layer writes anything; its
    gradient (a view of the optimizer's buffer) keeps its shape, and the gradients beside it in
    that buffer are not written over. (The layer after it, which ran first, has accumulated its
    own, as before any refusal in the middle of a chain.)"""
    model = _chain("LTLTL", [2, 5, 5, 3], F64, seed=3)
    model._plannable = plan
    x = torch.randn(4, 2, dtype=F64)
    if plan:
        _planned(model, x)
    model.zero_grad()
    model(x)
    model[2].register_parameter("weight", model[0].weight)  # (5, 2) where (5, 5) fits
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Linear: weight has shape (5, 2), expected (out_features, in_features) = (5, 5)"
        ),
    ):
        model.backward(torch.randn(4, 3, dtype=F64))
    assert model[0].weight.grad.shape == (5, 2)
    for p in (model[0].weight, model[0].bias, model[2].bias):
        assert not p.grad.any()


def test_parameter_tensors_assigned_after_planning_are_used() -> None:
    """A new tensor of the same shape and dtype (the plan's signature still fits)."""
    planned = _chain("LTLTL", [3, 4, 4, 2], F64, seed=16)
    plain = copy.deepcopy(planned)
    x = torch.randn(5, 3, dtype=F64)
    _planned(planned, x)
    _plain_forward(plain, x)
    for model in (planned, plain):
        torch.manual_seed(17)
        model[2].weight.data = torch.randn(4, 4, dtype=F64)
        model[4].bias.data = torch.randn(2, dtype=F64)
    for _ in range(3):
        y = planned(x)
        assert torch.equal(y, _plain_forward(plain, x))
        assert torch.equal(planned.backward(y), _plain_backward(plain, y))
    assert planned._planned is not None
    _assert_same(planned, plain)


def test_a_method_set_on_a_child_after_planning_is_called() -> None:
    model = _chain("LTL", [2, 5, 3], F64, seed=8)
    x = torch.randn(4, 2, dtype=F64)
    expected = _planned(model, x)
    calls: list[str] = []
    tanh = model[1]
    original = type(tanh).forward

    def traced(input: Tensor) -> Tensor:
        calls.append("forward")
        return original(tanh, input)

    tanh.forward = traced  # type: ignore[method-assign]
    assert torch.equal(model(x), expected) and calls == ["forward"]
    model(x)
    assert calls == ["forward", "forward"] and model._planned is None

    def traced_backward(grad: Tensor) -> Tensor:
        calls.append("backward")
        return type(tanh).backward(tanh, grad)

    del tanh.forward
    _planned(model, x)
    tanh.backward = traced_backward  # type: ignore[method-assign]
    model.backward(torch.ones(4, 3, dtype=F64))
    assert calls[-1] == "backward"


def test_a_hook_set_on_a_child_is_called_by_its_methods_in_training_and_in_fit() -> None:
    """A researcher's changed gradient, set on one child's instance: the Tanh's ``_backward``
    (the derivative halved, a hook of two arguments as the tutorial writes them) or the
    layer's ``_accumulate_bias`` (its bias gradient doubled); likewise every other hook a plan
    computes through: the Tanh's ``_forward`` (its output halved), the layer's ``_apply`` (its
    product halved) and ``_accumulate`` (its weight gradient doubled). A plan called the Tanh's hook
    itself with an ``out`` it does not take (a TypeError out of ``model.backward`` once a plan
    was made), and fit's folded step that one too, and the layer's not at all (trained
    otherwise than its loop); the chain now runs child by child, each method calling the hook
    as it does alone, and fit runs its loop: the results are a twin's driven by hand, bit for
    bit."""
    x = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([0, 1, 2, 0, 1, 2])

    def halved(grad_output: Tensor, output: Tensor) -> Tensor:
        return grad_output * (1 - output * output) * 0.5

    def set_hook(model: nn.Sequential, which: str) -> None:
        tanh, layer = model[1], model[2]
        if which == "_backward":
            tanh._backward = halved  # type: ignore[method-assign]
        elif which == "_forward":
            forward = tanh._forward

            def halved_output(input: Tensor) -> tuple[Tensor, Tensor]:
                output, cache = forward(input)
                return 0.5 * output, cache

            tanh._forward = halved_output  # type: ignore[method-assign]
        elif which == "_apply":
            apply = layer._apply

            def halved_product(input: Tensor) -> Tensor:
                return 0.5 * apply(input)

            layer._apply = halved_product  # type: ignore[method-assign]
        elif which == "_accumulate":
            accumulate = layer._accumulate

            def doubled_weight(grad_output_t: Tensor, input: Tensor) -> None:
                accumulate(2 * grad_output_t, input)

            layer._accumulate = doubled_weight  # type: ignore[method-assign]
        else:
            original = layer._accumulate_bias

            def doubled(grad_output_t: Tensor) -> None:
                original(2 * grad_output_t)

            layer._accumulate_bias = doubled  # type: ignore[method-assign]

    for which in ("_backward", "_accumulate_bias", "_forward", "_apply", "_accumulate"):
        model, twin = _chain("LTL", [2, 5, 3], F64, seed=4), _chain("LTL", [2, 5, 3], F64, seed=4)
        set_hook(model, which)
        set_hook(twin, which)
        criterion = nn.CrossEntropyLoss()
        for _ in range(4):
            model.zero_grad()
            twin.zero_grad()
            criterion(model(x), target)
            grad = model.backward(criterion.backward())
            criterion(_plain_forward(twin, x), target)
            assert torch.equal(grad, _plain_backward(twin, criterion.backward()))
            for mine, theirs in zip(model.parameters(), twin.parameters(), strict=True):
                assert torch.equal(mine.grad, theirs.grad)
        assert model._planned is None and len(model._plans) == 0
        # fit's steps: those of its loop (the twin's, which runs child by child), not folded
        optimizer = optim.SGD(model.parameters(), lr=0.1)
        twin_optimizer = optim.SGD(twin.parameters(), lr=0.1)
        generator = torch.Generator().manual_seed(5)
        minidl.train.fit(
            model, criterion, optimizer, x, target, epochs=2, batch_size=4, generator=generator
        )
        generator.manual_seed(5)
        for _ in range(2):
            for x_batch, y_batch in BatchIterator(x, target, 4, generator=generator):
                twin_optimizer.zero_grad()
                criterion(twin(x_batch), y_batch)
                twin.backward_parameters(criterion.backward())
                twin_optimizer.step()
        for mine, theirs in zip(model.parameters(), twin.parameters(), strict=True):
            assert torch.equal(mine.data, theirs.data)


#: The hooks through which a plan computes, each on its planned class.
PLAN_HOOKS = [
    (nn.Tanh, "_forward"),
    (nn.Tanh, "_backward"),
    (nn.Linear, "_apply"),
    (nn.Linear, "_accumulate"),
]


@pytest.mark.parametrize(("kind", "name"), [*PLAN_HOOKS, (nn.Linear, "_accumulate_bias")])
def test_a_hook_replaced_on_a_class_before_training_is_called(
    monkeypatch: pytest.MonkeyPatch, kind: type[nn.Module], name: str
) -> None:
    """A tracer that wraps a planned class's hook, through which a plan computes itself: the
    chain runs child by child, each method calling the hook (but a Linear's ``_accumulate``,
    which only a plan calls), and no plan is made; the results are a twin's driven child by
    child, bit for bit."""
    calls: list[int] = []
    original = getattr(kind, name)

    def traced(self: nn.Module, *arguments: Any, **options: Any) -> Any:
        calls.append(1)
        return original(self, *arguments, **options)

    model = _chain("LTLTL", [2, 5, 5, 3], F64, seed=21)
    twin = copy.deepcopy(model)
    x = torch.randn(4, 2, dtype=F64)
    monkeypatch.setattr(kind, name, traced)
    for _ in range(4):
        y = model(x)
        model.backward_parameters(torch.ones_like(y))
    assert len(model._plans) == 0
    # (two Tanh, three Linear, 4 steps; a Linear's _accumulate only a plan calls)
    assert len(calls) == (8 if kind is nn.Tanh else 0 if name == "_accumulate" else 12)
    monkeypatch.undo()
    for _ in range(4):
        y = _plain_forward(twin, x)
        _plain_backward(twin, torch.ones_like(y))
    _assert_same(model, twin)


def test_inputs_from_an_autograd_graph_are_not_planned() -> None:
    """They run child by child, whose operations record the graph: the result of recorded
    operations is never planned; a leaf whose operations are recorded (which a plan cannot
    tell without an operation) gets one plan, made once, which it never runs."""
    model = _chain("LTL", [2, 5, 3], F64, seed=9)
    plain = copy.deepcopy(model)  # (made first: a new Parameter anywhere delays planning)
    leaf = torch.randn(4, 2, dtype=F64, requires_grad=True)
    for x in (leaf * 2, leaf):
        for _ in range(3):
            y = model(x)
            assert y.requires_grad and model._planned is None
            assert torch.equal(y, _plain_forward(plain, x.detach()))
            model.backward_parameters(torch.zeros(4, 3, dtype=F64))  # (trained)
        assert len(model._plans) == (x is leaf)
    plan = model._plans.values()[0]
    for _ in range(4):
        model(leaf)
        model.backward_parameters(torch.zeros(4, 3, dtype=F64))
    assert model._plans.values() == [plan] and model._planned is None
    _planned(model, leaf.detach())  # the plan runs for plain values of the same signature
    y = model(leaf)
    assert y.requires_grad and model._planned is None
    assert torch.equal(y, _plain_forward(plain, leaf.detach()))


@pytest.mark.parametrize(("layout", "widths"), [("LTL", [2, 5, 3]), ("LTLR", [2, 5, 3])])
def test_a_gradient_from_an_autograd_graph_is_read_as_a_plain_value(
    layout: str, widths: list[int]
) -> None:
    """As the children read it (a layer last, or an activation last, whose first write is
    refused)."""
    planned = _chain(layout, widths, F64, seed=18)
    plain = copy.deepcopy(planned)
    x = torch.randn(4, 2, dtype=F64)
    y = _planned(planned, x)
    _plain_forward(plain, x)
    grad = torch.randn(y.shape, dtype=F64, requires_grad=True) * 2  # (from a graph)
    assert torch.equal(planned.backward(grad), _plain_backward(plain, grad).detach())
    planned.backward_parameters(grad)
    _plain_backward(plain, grad)
    _assert_same(planned, plain)
    # Given to the children without trying the plan, which stays (a write into a buffer
    # refused part-way drops every plan made).
    assert planned._planned is not None and len(planned._plans) == 1


@pytest.mark.parametrize("how", ["given under no_grad", "set after the forward"])
@pytest.mark.parametrize(("layout", "widths"), [("LTLTL", [2, 5, 5, 3]), ("LL", [2, 4, 3])])
def test_an_input_that_requires_grad_at_backward_is_read_as_a_plain_value(
    how: str, layout: str, widths: list[int]
) -> None:
    """A leaf that requires grad given under ``torch.no_grad()`` (where the plan's forward
    runs), or an input that ``requires_grad_()`` after its forward: the first layer's product
    refused it (``addmm(): functions with out=...``) after the layers after it had accumulated
    their gradients, on every backward; the layer reads it as a plain value."""
    planned = _chain(layout, widths, F64, seed=29)
    plain = copy.deepcopy(planned)
    x = torch.randn(4, 2, dtype=F64)
    _planned(planned, x)
    _plain_forward(plain, x)
    for step in range(2):
        x = torch.randn(4, 2, dtype=F64, requires_grad=how == "given under no_grad")
        with torch.no_grad():
            y = planned(x)
            assert torch.equal(y, _plain_forward(plain, x))
        assert planned._planned is not None  # (the plan's forward ran)
        if how == "set after the forward":
            x.requires_grad_()
        grad = torch.randn(y.shape, dtype=F64)
        if step == 0:
            got, expected = planned.backward(grad), _plain_backward(plain, grad)
            assert torch.equal(got, expected) and not got.requires_grad
        else:
            planned.backward_parameters(grad)
            _plain_backward(plain, grad)
        _assert_same(planned, plain)
    assert len(planned._plans) == 1


@pytest.mark.parametrize("planned_inside", [True, False])
def test_plans_made_inside_inference_mode_train_outside_it_and_the_reverse(
    planned_inside: bool,
) -> None:
    planned = _chain("LTLTL", [2, 5, 5, 3], F32, seed=10)
    plain = copy.deepcopy(planned)
    x = torch.randn(6, 2)
    for step in range(6):
        inside = (step < 3) == planned_inside
        with torch.inference_mode(inside):
            y = planned(x)
            z = _plain_forward(plain, x)
            # Made in the mode of the call, as a child's output is.
            assert y.is_inference() == z.is_inference() == inside
            assert torch.equal(y, z)
            grad = torch.ones_like(y)
            g = planned.backward(grad)
            assert g.is_inference() == inside
            assert torch.equal(g, _plain_backward(plain, grad))
            # Planned from the second call on, its buffers written in either mode.
            assert (planned._planned is not None) == (step >= 2)
        y.add_(1) if not inside else None  # an output made outside is a normal tensor
    assert planned._planned is not None
    _assert_same(planned, plain)


def test_a_copy_made_between_forward_and_backward_runs_the_same_backward() -> None:
    model = _chain("LTLKL", [3, 6, 6, 2], F64, seed=11)
    x = torch.randn(5, 3, dtype=F64)
    _planned(model, x)
    grad = torch.randn(5, 2, dtype=F64)
    for copied in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert torch.equal(copied.backward(grad), model.backward(grad))
        _assert_same(copied, model)
        model.zero_grad()
        # The copy plans for itself, with buffers of its own.
        assert torch.equal(_planned(copied, x), model(x))
        assert copied._planned is not None and copied._planned is not model._planned


def test_a_slice_and_its_model_share_children_and_plan_apart() -> None:
    planned = _chain("LTLTL", [2, 5, 5, 3], F64, seed=12)
    plain = copy.deepcopy(planned)
    head, plain_head = planned[:3], plain[:3]
    x = torch.randn(4, 2, dtype=F64)
    for _ in range(3):
        y = planned(x)
        h = head(x)
        assert torch.equal(y, _plain_forward(plain, x))
        assert torch.equal(h, _plain_forward(plain_head, x))
        # The children now hold the slice's caches: the model's backward runs child by child.
        assert torch.equal(
            head.backward(torch.ones_like(h)), _plain_backward(plain_head, h * 0 + 1)
        )
        assert torch.equal(planned.backward(torch.ones_like(y)), _plain_backward(plain, y * 0 + 1))
    assert planned._planned is not None and head._planned is not None
    _assert_same(planned, plain)


def test_an_interrupted_planned_forward_refuses_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _chain("LTLTL", [2, 5, 5, 3], F64, seed=13)
    x = torch.randn(4, 2, dtype=F64)
    _planned(model, x)
    original = nn.Tanh._forward
    calls = []

    def interrupted(
        self: nn.Tanh, input: Tensor, out: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, input, out)

    # (on the plan's steps: a plan calls the hooks as defined, not one replaced on the class)
    plan = model._planned
    assert plan is not None
    for step in plan.steps:
        if isinstance(step.module, nn.Tanh):
            monkeypatch.setattr(step, "forward_function", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model(x)
    assert len(calls) == 2
    with pytest.raises(RuntimeError, match=r"stopped at module 3 \(Tanh\) by KeyboardInterrupt"):
        model.backward(torch.ones(4, 3, dtype=F64))
    monkeypatch.undo()
    model(x)  # a forward that succeeds makes backward possible again
    model.backward(torch.ones(4, 3, dtype=F64))


def test_anomaly_detection_checks_a_planned_model() -> None:
    model = _chain("LTL", [2, 5, 3], F64, seed=14)
    x = torch.randn(4, 2, dtype=F64)
    _planned(model, x)
    bad = x.clone()
    bad[1, 0] = float("nan")
    with minidl.detect_anomaly(), pytest.raises(minidl.AnomalyError):
        model(bad)
    with minidl.detect_anomaly():
        model(x)
        assert model._planned is None


def test_only_a_trained_signature_seen_twice_in_a_row_is_planned() -> None:
    """A shape seen once between others (an epoch's last batch), or only evaluated (a
    validation or test set, however large and often), runs child by child and keeps no
    buffers."""
    model = _chain("LTL", [2, 5, 3], F32, seed=15)

    def step(batch: int) -> None:
        y = model(torch.randn(batch, 2))
        model.backward_parameters(torch.ones_like(y))

    for batch in (10, 4, 10, 7, 10, 4):
        step(batch)
    for _ in range(5):
        model(torch.randn(1000, 2))  # evaluated only
    assert len(model._plans) == 0
    step(10)
    assert len(model._plans) == 0
    step(10)  # made after this forward
    assert len(model._plans) == 1 and model._planned is None
    step(10)  # run
    assert model._planned is not None
    for _ in range(5):
        model(torch.randn(1000, 2))
    assert len(model._plans) == 1
    # A trained shape seen again after another one, even one only evaluated: not in a row.
    step(4)
    model(torch.randn(1000, 2))
    step(4)
    assert len(model._plans) == 1
    step(4)
    assert len(model._plans) == 2


def test_an_input_that_is_no_tensor_gets_the_first_layers_error() -> None:
    """Planned or not, as child by child (a chain that plans looks up the input's signature)."""
    model = _chain("LTL", [2, 5, 3], F64, seed=31)
    for _ in range(2):
        with pytest.raises(
            TypeError,
            match=r"^Linear: expected a torch\.Tensor as input, got list\n"
            r"in Sequential, at module 0 \(Linear\)$",
        ):
            model([[1.0, 2.0]])  # type: ignore[arg-type]
        _planned(model, torch.randn(4, 2, dtype=F64))


def test_chains_with_other_modules_are_not_planned() -> None:
    class MyTanh(nn.Tanh):
        pass

    for model in (
        nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.5), nn.Linear(3, 2)),
        nn.Sequential(nn.Linear(2, 3), MyTanh(), nn.Linear(3, 2)),
        nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.Tanh(), nn.Linear(3, 2))),
        nn.Sequential(),
    ):
        assert not model._plannable


def test_plans_for_replaced_parameters_are_dropped() -> None:
    """Their buffers are of the old dtype or device: a model moved, or whose tensors were
    replaced, keeps no plan made before."""
    model = _chain("LTL", [2, 5, 3], F32, seed=19)
    _planned(model, torch.randn(4, 2))
    _planned(model, torch.randn(6, 2))
    assert len(model._plans) == 2
    model.double()
    assert len(model._plans) == 0 and model._planned is None
    _planned(model, torch.randn(4, 2, dtype=F64))
    _planned(model, torch.randn(6, 2, dtype=F64))
    model[0].weight.data = torch.randn(5, 2, dtype=F64)  # (no move: found at the next plan)
    _planned(model, torch.randn(7, 2, dtype=F64))
    assert len(model._plans) == 1


@pytest.mark.parametrize("outer", ["Sequential", "Residual"])
@pytest.mark.parametrize("how", ["double", "to dtype", "to tensor"])
def test_a_chain_moved_with_the_module_around_it_keeps_no_plan(outer: str, how: str) -> None:
    """A chain moved or cast by its parent's ``.to()`` (which moves the tensors of every
    module inside it at once) drops its plans as one moved itself does: they held buffers of
    the old dtype (up to 4 of them, one per batch size) for good where only evaluation
    follows, the last one as ``_planned``. It trains on with the bits of the never-planning twin."""
    inner = _chain("LTL", [3, 5, 3], F32, seed=23)
    model: nn.Module = (
        nn.Sequential(inner, nn.BatchNorm1d(3)) if outer == "Sequential" else nn.Residual(inner)
    )
    for batch in (4, 6):
        _planned(inner, torch.randn(batch, 3))
    assert len(inner._plans) == 2 and inner._planned is not None
    if how == "double":
        model.double()
    elif how == "to dtype":
        model.to(F64)
    else:
        model.to(torch.zeros(1, dtype=F64))
    assert len(inner._plans) == 0 and inner._planned is None
    model.to("cpu")  # (a move that changes nothing: the plans made since are kept)
    plain = copy.deepcopy(inner)
    generator = torch.Generator().manual_seed(24)
    for step in range(5):
        x = torch.randn(4, 3, dtype=F64, generator=generator)
        assert torch.equal(inner(x), _plain_forward(plain, x))
        grad = torch.randn(4, 3, dtype=F64, generator=generator)
        assert torch.equal(inner.backward(grad), _plain_backward(plain, grad))
        _assert_same(inner, plain)
        assert (inner._planned is not None) == (step >= 2)
    model.to("cpu")
    assert len(inner._plans) == 1


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize(("layout", "widths"), [("TL", [64, 8]), ("KLE", [48, 8]), ("TT", [])])
def test_a_chain_that_starts_with_an_activation_keeps_the_layout_of_its_input(
    layout: str, widths: list[int], dtype: torch.dtype
) -> None:
    """An element-wise output has its input's memory layout (a transposed one for a transposed
    input), and the next layer's products round according to it: written into a contiguous
    buffer, a weight gradient differed in its last bits, and the output and input gradient
    of a chain of activations had other strides."""
    planned = _chain(layout, widths, dtype, seed=20)
    plain = copy.deepcopy(planned)
    features = widths[0] if widths else 7
    generator = torch.Generator().manual_seed(21)
    for _ in range(4):
        x = torch.randn(features, 200, dtype=dtype, generator=generator).t()
        y, z = planned(x), _plain_forward(plain, x)
        assert torch.equal(y, z) and y.stride() == z.stride()
        grad = torch.randn(y.shape, dtype=dtype, generator=generator)
        got, expected = planned.backward(grad), _plain_backward(plain, grad)
        assert torch.equal(got, expected) and got.stride() == expected.stride()
        _assert_same(planned, plain)
    assert planned._planned is not None


@pytest.mark.parametrize("dtype", [F64, torch.float16])
@pytest.mark.parametrize(("layout", "widths"), [("LE", [3, 4]), ("L", [3, 4]), ("LTLR", [3, 4, 2])])
def test_a_gradient_from_an_autograd_graph_gets_what_the_children_return(
    layout: str, widths: list[int], dtype: torch.dtype
) -> None:
    """The children's own results, whether they join the graph or not: a 16-bit ELU last
    returned an input gradient in the graph, which the plan wrote into its buffer, and the
    next layer's product into a buffer was refused (``addmm(): functions with out=...``)."""
    planned = _chain(layout, widths, dtype, seed=19)
    plain = copy.deepcopy(planned)
    x = torch.randn(5, 3).to(dtype)
    y = _planned(planned, x)
    _plain_forward(plain, x)
    grad = (torch.randn(y.shape, requires_grad=True) * 2).to(dtype)
    got, expected = planned.backward(grad), _plain_backward(plain, grad)
    assert torch.equal(got, expected) and got.requires_grad == expected.requires_grad
    planned.backward_parameters(grad)
    _plain_backward(plain, grad)
    _assert_same(planned, plain)
    # The plan runs on for plain gradients.
    grad = torch.randn(y.shape).to(dtype)
    assert torch.equal(planned.backward(grad), _plain_backward(plain, grad))
    assert not planned.backward(grad).requires_grad
    _plain_backward(plain, grad)
    _assert_same(planned, plain)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("activation", ["R", "K", "S", "E", "T"])
def test_a_transposed_gradient_into_an_activation_last_gives_the_childrens_bits(
    activation: str, dtype: torch.dtype
) -> None:
    """The activation's input gradient takes the gradient's layout, and the layer before reads
    it (its weight gradient differed in its last bits when it was written into a contiguous
    buffer)."""
    planned = _chain("L" + activation, [64, 48], dtype, seed=22)
    plain = copy.deepcopy(planned)
    x = torch.randn(200, 64, dtype=dtype)
    y = _planned(planned, x)
    _plain_forward(plain, x)
    grad = torch.randn(48, 200, dtype=dtype).t()
    assert torch.equal(planned.backward(grad), _plain_backward(plain, grad))
    _assert_same(planned, plain)
    planned.backward_parameters(grad)
    _plain_backward(plain, grad)
    _assert_same(planned, plain)
    grad = torch.randn(y.shape, dtype=dtype)  # contiguous: the plan's own backward
    assert torch.equal(planned.backward(grad), _plain_backward(plain, grad))
    _assert_same(planned, plain)


def test_a_parameter_set_as_a_plain_attribute_after_planning_is_refused() -> None:
    """Tied by hand as an attribute (``torch.nn``'s way, which registers it there), a layer's
    weight would be used while ``parameters()`` and ``state_dict`` keep the registered one (the
    tie lost on saving): the next forward refuses it, planned or not, naming
    ``register_parameter``."""
    for plan in (True, False):
        model = _chain("LTLTL", [3, 4, 4, 2], F64, seed=23)
        model._plannable = plan
        x = torch.randn(5, 3, dtype=F64)
        if plan:
            _planned(model, x)
        else:
            _plain_forward(model, x)
        model[2].weight = nn.Linear(4, 4, dtype=F64).weight
        with pytest.raises(
            ValueError,
            match=r"^Linear: weight is a Parameter that is not registered .*"
            r"register_parameter\('weight', \.\.\.\)\nin Sequential, at module 2 \(Linear\)$",
        ):
            model(x)


def test_a_parameter_put_in_place_of_a_layers_after_planning_is_used() -> None:
    """An existing Parameter (a weight tied to another layer's) registered in a layer's place
    replaces no tensor: the plan computed with the layer's view of the weight it had. (One
    set as a plain attribute is refused: the test above.)"""
    planned = _chain("LTLTL", [3, 4, 4, 2], F64, seed=23)
    plain = copy.deepcopy(planned)
    donors = [nn.Linear(4, 4, dtype=F64) for _ in range(2)]
    donors[1].load_state_dict(donors[0].state_dict())
    narrow = nn.Linear(4, 1, dtype=F64)
    x = torch.randn(5, 3, dtype=F64)
    _planned(planned, x)
    _plain_forward(plain, x)
    for model, donor in ((planned, donors[0]), (plain, donors[1])):
        for name in ("weight", "bias"):
            model[2].register_parameter(name, getattr(donor, name))
    for _ in range(3):
        y = planned(x)
        assert torch.equal(y, _plain_forward(plain, x))
        assert torch.equal(planned.backward(y), _plain_backward(plain, y))
    assert planned._planned is not None
    _assert_same(planned, plain)
    # One of another shape is refused by the layer, not broadcast (made before the plan: no
    # tensor is replaced in between, and the plan's product broadcast it over the rows).
    planned[2].register_parameter("bias", narrow.bias)
    with pytest.raises(ValueError, match="Linear"):
        planned(x)


@pytest.mark.parametrize("between", ["layer", "model"])
def test_a_layers_own_parameter_registered_back_after_another_is_used(between: str) -> None:
    """A layer given another existing Parameter (weights averaged apart, say), called with it
    on another shape, then given its own back: the plan, which finds the layer holding its
    Parameter again, computes with that Parameter's tensor, as the children one by one do.
    (It computed with the other Parameter's, the view the layer had made of it last: 2.99
    apart, and the backward with its own, for every later step.)"""
    planned = _chain("LTLTL", [3, 4, 4, 2], F64, seed=29)
    plain = copy.deepcopy(planned)
    x = torch.randn(8, 3, dtype=F64)
    # (made before the plan: a Parameter made since replaces a tensor, which drops it)
    others = [nn.Parameter(torch.ones(4, 3, dtype=F64)) for _ in range(2)]
    _planned(planned, x)
    for model, other in zip((planned, plain), others, strict=True):
        layer = model[0]
        own = layer.weight
        layer.register_parameter("weight", other)
        (layer if between == "layer" else model)(x[:2])
        layer.register_parameter("weight", own)
    for _ in range(3):
        y = planned(x)
        assert planned._planned is not None
        assert torch.equal(y, _plain_forward(plain, x))
        assert torch.equal(planned.backward(y), _plain_backward(plain, y))
        _assert_same(planned, plain)


@pytest.mark.parametrize(("kind", "name"), PLAN_HOOKS)
def test_a_hook_replaced_on_a_class_after_planning_is_not_called_by_the_plan(
    monkeypatch: pytest.MonkeyPatch, kind: type[nn.Module], name: str
) -> None:
    """A tracer with a hook's own arguments (no ``out``) set on a planned class once a plan is
    made: the plan keeps calling the hooks as defined (ChainPlan.possible's docstring says so),
    with the results of the children one by one, bit for bit; a chain planned afterwards runs
    child by child and calls it. (The plan called the tracer with its ``out`` too: a raw
    TypeError part-way through the backward, the last layer's gradients written, on every
    step.)"""
    calls: list[nn.Module] = []  # (the children called)
    original = getattr(kind, name)
    parameters = list(inspect.signature(original).parameters)[1:]
    if "out" in parameters:
        parameters.remove("out")

    def traced(self: nn.Module, *arguments: Any) -> Any:
        assert len(arguments) == len(parameters), "called with the plan's out"
        calls.append(self)
        return original(self, *arguments)

    planned = _chain("LTLTL", [2, 5, 5, 3], F64, seed=21)
    plain = copy.deepcopy(planned)
    x = torch.randn(4, 2, dtype=F64)
    _planned(planned, x)
    _plain_forward(plain, x)
    planned.zero_grad()
    monkeypatch.setattr(kind, name, traced)
    for _ in range(3):
        y = planned(x)
        assert torch.equal(y, _plain_forward(plain, x))
        assert torch.equal(planned.backward(y), _plain_backward(plain, y))
        _assert_same(planned, plain)
    assert planned._planned is not None
    assert not [child for child in calls if any(child is own for own in planned)]
    other = _chain("LTLTL", [2, 5, 5, 3], F64, seed=21)
    for _ in range(3):
        other.backward(other(x))
    assert other._planned is None and len(other._plans) == 0
    assert calls or name == "_accumulate"  # (which only a plan calls)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(6, 2, dtype=F64) @ torch.eye(2, dtype=F64, requires_grad=True),
        lambda: torch.randn(6, 2, dtype=F64).as_subclass(_Tensor),
    ],
    ids=["graph", "subclass"],
)
def test_inputs_no_plan_accepts_make_no_plan(
    make: Callable[[], Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan was made for every other such input (every one, of a subclass), its buffers
    allocated, and the next forward tried it: a forward of the paper's network took twice as
    long as child by child. (Each is followed by a backward, as in training: only a trained
    signature is planned.)"""
    made = _count_plans_made(monkeypatch)
    model = _chain("LTL", [2, 5, 3], F64, seed=24)
    twin = copy.deepcopy(model)
    for _ in range(8):
        x = make()
        y = model(x)
        assert torch.equal(y, _plain_forward(twin, x))
        model.backward_parameters(torch.ones(y.shape, dtype=F64))
    assert made == [] and len(model._plans) == 0
    # A plain input is planned as before, and such inputs run child by child beside it, without
    # trying the plan (whose first write into a buffer refuses an input from a graph, at a cost).
    plain_input = torch.randn(6, 2, dtype=F64)
    _planned(model, plain_input)
    tries: list[int] = []
    planned_forward = nn.Sequential._planned_forward

    def counted(
        self: nn.Sequential, plan: minidl.nn.chain.ChainPlan, input: Tensor
    ) -> Tensor | None:
        tries.append(1)
        return planned_forward(self, plan, input)

    monkeypatch.setattr(nn.Sequential, "_planned_forward", counted)
    x = make()
    assert torch.equal(model(x), _plain_forward(twin, x)) and model._planned is None
    assert tries == []
    assert model(plain_input) is not None and model._planned is not None
    assert len(made) == 1 and tries == [1]


class _Tensor(Tensor):
    """A subclass of Tensor, as some libraries make."""


def test_an_input_of_the_plans_shape_and_another_dtype_or_device_keeps_the_plans() -> None:
    """It gets the child's error without trying the plan (whose failure would drop every plan
    made), and changes nothing: refused by the first layer, it leaves the last forward's
    backward to run (a plan tried on it left it as the first layer's cached input)."""
    planned = _chain("LTL", [2, 5, 3], F64, seed=27)
    plain = copy.deepcopy(planned)
    x = torch.randn(4, 2, dtype=F64)
    _planned(planned, x)
    _plain_forward(plain, x)
    for bad, error in ((x.float(), TypeError), (x.to("meta"), ValueError)):
        with pytest.raises(error) as planned_error:
            planned(bad)
        with pytest.raises(error) as plain_error:
            _plain_forward(plain, bad)
        assert str(planned_error.value) == str(plain_error.value)
        assert len(planned._plans) == 1
        grad = torch.randn(4, 3, dtype=F64)
        assert torch.equal(planned.backward(grad), _plain_backward(plain, grad))
        _assert_same(planned, plain)
        assert torch.equal(planned(x), _plain_forward(plain, x)) and planned._planned is not None


def test_parameter_tensors_replaced_on_every_step_make_no_plan_on_every_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gradients clipped by assignment (``p.grad = p.grad.clamp(...)``), or any Parameter made
    in the step, replace tensors: a plan made at one call was stale at the next, so every step
    ran child by child and made a new plan (all its buffers) too, about 1.8 times the time of
    a step of the paper's network without plans. A signature is planned when seen twice in a
    row with no tensor replaced in between."""
    made = _count_plans_made(monkeypatch)
    planned = _chain("LTLTL", [2, 5, 5, 3], F64, seed=28)
    plain = copy.deepcopy(planned)
    x = torch.randn(6, 2, dtype=F64)
    for _ in range(8):
        y = planned(x)
        assert torch.equal(y, _plain_forward(plain, x))
        assert torch.equal(planned.backward(y), _plain_backward(plain, y))
        for model in (planned, plain):
            for parameter in model.parameters():
                parameter.grad = parameter.grad.clamp(-1, 1)
        _assert_same(planned, plain)
    assert made == []
    # Without replacements, planned again from the second call on.
    _planned(planned, x)
    assert len(made) == 1


@pytest.mark.parametrize(
    ("layout", "dtype"),
    [("LTL", F64), ("LTLR", F64), ("LTLT", F64), ("LTLE", torch.float16), ("LTLE", torch.bfloat16)],
)
def test_a_leaf_gradient_whose_operations_are_recorded_gets_what_the_children_return(
    layout: str, dtype: torch.dtype
) -> None:
    """A plan cannot tell such a leaf from a plain value without an operation: a write into a
    buffer is refused before any parameter gradient is written (by the last activation, or by
    the first layer's product after a 16-bit ELU wrote the graph's result into a buffer), and
    the children take it."""
    planned = _chain(layout, [3, 5, 2], dtype, seed=20)
    plain = copy.deepcopy(planned)
    x = torch.randn(5, 3).to(dtype)
    y = _planned(planned, x)
    _plain_forward(plain, x)
    grad = torch.randn(y.shape, requires_grad=True).to(dtype).detach().requires_grad_()
    got, expected = planned.backward(grad), _plain_backward(plain, grad)
    assert torch.equal(got, expected) and got.requires_grad == expected.requires_grad
    planned.backward_parameters(grad)
    _plain_backward(plain, grad)
    _assert_same(planned, plain)
    assert torch.equal(_planned(planned, x), _plain_forward(plain, x))
    # The plan that declined it was dropped: its buffers may be in the graph (a 16-bit ELU's
    # input gradient), and kept, it declined every gradient after. The one made again takes the
    # next plain gradient.
    grad = torch.randn(y.shape).to(dtype)
    assert torch.equal(planned.backward(grad), _plain_backward(plain, grad))
    assert planned._planned is not None  # (its backward ran)
    _assert_same(planned, plain)


def test_a_method_replaced_on_a_class_before_training_is_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tracer or profiler that wraps a class's forward: the chain runs child by child."""
    calls: list[int] = []
    original = nn.Tanh.forward

    def traced(self: nn.Tanh, input: Tensor) -> Tensor:
        calls.append(1)
        return original(self, input)

    monkeypatch.setattr(nn.Tanh, "forward", traced)
    model = _chain("LTLTL", [2, 5, 5, 3], F64, seed=21)
    x = torch.randn(4, 2, dtype=F64)
    for _ in range(4):
        y = model(x)
        model.backward_parameters(torch.ones_like(y))
    assert len(calls) == 8 and len(model._plans) == 0
    monkeypatch.undo()
    _planned(model, x)
