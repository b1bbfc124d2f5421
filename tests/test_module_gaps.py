"""Tests that kill the mutants of ``minidl.nn.module`` (the Module base class) that survived a
second mutation audit.

Each test pins down a behaviour a user relies on, against an oracle: PyTorch's ``torch.nn``
where minidl follows it, the documented order of the names, or the documented error (its type
and the words of its message), with the module left as it was after a refusal.
"""

from __future__ import annotations

import copy
import pickle
import re
from collections.abc import Iterator

import pytest
import torch
import torch.nn as tnn
from torch import Tensor

from minidl import nn
from minidl.interop import TorchResidual, to_torch
from minidl.nn.module import Module
from minidl.nn.parameter import Parameter
from tests.helpers import F64


def _removed_bias() -> nn.Linear:
    """A Linear whose bias was removed with ``register_parameter("bias", None)``."""
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, dtype=F64)
    layer.register_parameter("bias", None)
    return layer


@pytest.mark.parametrize("kind", ["buffer", "module"])
def test_a_removed_parameters_name_is_refused_to_a_buffer_or_module(kind: str) -> None:
    """After ``register_parameter("bias", None)`` only a parameter may take the name again (as
    torch's "attribute 'bias' already exists" for a buffer or a module): the layer's own code
    reads ``bias`` as its parameter. The refusal changes nothing: ``bias`` stays ``None`` and
    no buffer or child is registered."""
    layer = _removed_bias()
    theirs = tnn.Linear(3, 2, bias=False)
    with pytest.raises(KeyError, match="attribute 'bias' already exists"):
        if kind == "buffer":
            theirs.register_buffer("bias", torch.zeros(2))
        else:
            theirs.add_module("bias", tnn.Identity())
    with pytest.raises(
        KeyError,
        match=rf"^\"Linear.register_{kind}: 'bias' is already an attribute of Linear \(a {kind} "
        r"there would hide it, or be hidden\); expected another name\"$",
    ):
        if kind == "buffer":
            layer.register_buffer("bias", torch.zeros(2, dtype=F64))
        else:
            layer.register_module("bias", nn.ReLU())
    assert layer.bias is None
    assert list(layer.named_buffers()) == []
    assert list(layer.named_children()) == []
    assert list(layer.state_dict()) == ["weight"]


class _Aliased(Module):
    """A module with a child and its own ``named_parameters``, which also gives the child's
    weight under a name that is no module's path (``"alias.weight"``)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = self.register_parameter("scale", Parameter(torch.ones(1, dtype=F64)))
        self.inner = self.register_module("inner", nn.Linear(2, 2, bias=False, dtype=F64))
        self.extra = Parameter(torch.zeros(3, dtype=F64))

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        yield from super().named_parameters(prefix, recurse, remove_duplicate)
        yield "alias.extra", self.extra


def test_a_name_that_is_no_modules_path_comes_last_in_the_state_dict() -> None:
    """A subclass's own ``named_parameters`` may give a name whose path is no module's: its
    entry keeps its place at the end of the state dict, after the children's (the documented
    order; sorting it with the root module's entries put it before the child's weight)."""
    module = _Aliased()
    assert list(module.state_dict()) == ["scale", "inner.weight", "alias.extra"]
    assert list(module.state_dict(keep_vars=True)) == ["scale", "inner.weight", "alias.extra"]


class _Holder(Module):
    """A module with a ``block`` attribute of its own (set before registering it)."""

    block: Module


def test_register_module_sets_no_attribute_and_replaces_only_the_one_holding_the_child() -> None:
    """``register_module`` registers, it does not set an attribute (unlike
    ``register_parameter``): a child registered under a name no attribute holds is reached by
    ``get_submodule``, and reading it as an attribute fails as before. Re-registered, the
    attribute that held the previous child follows (``self.block = block``)."""
    torch.manual_seed(0)
    parent = _Holder()
    first, second = nn.Linear(2, 2, dtype=F64), nn.Linear(2, 2, dtype=F64)
    assert parent.register_module("fc", first) is first
    assert "fc" not in vars(parent)
    assert parent.get_submodule("fc") is first
    assert parent.register_module("fc", second) is second
    assert "fc" not in vars(parent)
    assert parent.get_submodule("fc") is second
    third: Module = nn.Tanh()
    fourth: Module = nn.ReLU()
    parent.block = third
    parent.register_module("block", third)
    parent.register_module("block", fourth)
    assert parent.block is fourth
    assert [name for name, _ in parent.named_children()] == ["fc", "block"]


def _tied() -> nn.Sequential:
    """A Sequential whose last Linear's weight is the first's (a tied parameter)."""
    torch.manual_seed(0)
    first, last = nn.Linear(3, 2, dtype=F64), nn.Linear(3, 2, dtype=F64)
    last.register_parameter("weight", first.weight)
    return nn.Sequential(first, nn.ReLU(), last)


@pytest.mark.parametrize("wrong", ["0.weight", "2.weight"])
def test_a_tied_entry_of_the_same_size_but_another_shape_is_refused_by_its_shape(
    wrong: str,
) -> None:
    """Both names of a tied weight given, one of them transposed (same number of elements, other
    shape): refused by its shape, naming that entry, as an entry given alone is, and the model
    is left as it was."""
    model = _tied()
    before = model.state_dict()
    state = {**model.state_dict(), "2.weight": model.state_dict()["0.weight"].clone()}
    state[wrong] = state[wrong].T.contiguous()
    with pytest.raises(
        ValueError,
        match=rf"^Sequential\.load_state_dict: entry '{wrong}' has shape \(3, 2\), expected "
        r"\(2, 3\)$",
    ):
        model.load_state_dict(state)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_two_unexpected_keys_are_listed_in_torchs_order() -> None:
    """Two unexpected keys (the fewest that have an order) are listed as PyTorch lists them,
    module by module, not in the state dict's order."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2, dtype=F64))
    twin = tnn.Sequential(tnn.Linear(2, 2, dtype=F64))
    extra = {"0.foo": torch.zeros(1, dtype=F64), "foo": torch.zeros(1, dtype=F64)}
    expected = twin.load_state_dict({**extra, **twin.state_dict()}, strict=False)
    assert expected.unexpected_keys == ["foo", "0.foo"]
    assert model.load_state_dict({**extra, **model.state_dict()}, strict=False) == (
        [],
        ["foo", "0.foo"],
    )
    with pytest.raises(KeyError, match=r"unexpected keys \['foo', '0\.foo'\]"):
        model.load_state_dict({**extra, **model.state_dict()})


class _Wrap(Module):
    """A container of one's own: the identity until a child ``"inner"`` is registered in it,
    then that child."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        inner = self._modules.get("inner")
        return input if inner is None else inner(input)

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        inner = self._modules.get("inner")
        return grad_output if inner is None else inner.backward(grad_output)


def test_a_child_registered_inside_a_built_sequential_is_trained_by_backward_parameters() -> None:
    """A Sequential finds which of its children is the first with parameters (for
    ``backward_parameters``) again when a module is registered anywhere: a Linear registered in
    a child that had none, after a backward, gets its gradient (PyTorch autograd in float64),
    where a stale search skipped it and left its gradient zero."""
    torch.manual_seed(0)
    wrap, inner, last = _Wrap(), nn.Linear(2, 2, dtype=F64), nn.Linear(2, 2, dtype=F64)
    assert inner.bias is not None and last.bias is not None
    model = nn.Sequential(wrap, nn.Tanh(), last)
    x, grad = torch.randn(4, 2, dtype=F64), torch.randn(4, 2, dtype=F64)
    model(x)
    model.backward_parameters(grad)
    wrap.register_module("inner", inner)
    model.zero_grad()
    model(x)
    model.backward_parameters(grad)
    w, b = (inner.weight.data.clone().requires_grad_(), inner.bias.data.clone().requires_grad_())
    out = torch.tanh(x @ w.T + b) @ last.weight.data.T + last.bias.data
    torch.autograd.backward(out, grad)
    torch.testing.assert_close(inner.weight.grad, w.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(inner.bias.grad, b.grad, rtol=0, atol=1e-12)


class _FrozenNorm(nn.BatchNorm1d):
    """A batch norm kept in evaluation mode by its own ``train`` (frozen statistics)."""

    def train(self, mode: bool = True) -> _FrozenNorm:
        return super().train(False)


class _TorchFrozenNorm(tnn.BatchNorm1d):
    """PyTorch's twin of :class:`_FrozenNorm`."""

    def train(self, mode: bool = True) -> _TorchFrozenNorm:
        return super().train(False)


def test_train_runs_the_train_of_each_child_that_overrides_it() -> None:
    """``model.train()`` calls each child's ``train(mode)``, as PyTorch's does, so that a batch
    norm kept frozen by its own ``train`` stays in evaluation mode inside a model, and its
    running statistics are not updated by a forward."""
    torch.manual_seed(0)
    mine = nn.Sequential(nn.Linear(3, 3, dtype=F64), _FrozenNorm(3, dtype=F64))
    theirs = tnn.Sequential(tnn.Linear(3, 3, dtype=F64), _TorchFrozenNorm(3, dtype=F64))
    assert mine.train() is mine
    theirs.train()
    assert [m.training for m in mine.modules()] == [m.training for m in theirs.modules()]
    assert [m.training for m in mine.modules()] == [True, True, False]
    mine(torch.randn(5, 3, dtype=F64))
    norm = mine[1]
    assert isinstance(norm, _FrozenNorm)
    assert torch.equal(norm.running_mean, torch.zeros(3, dtype=F64))
    assert int(norm.num_batches_tracked) == 0


def test_a_shallow_copy_given_registries_of_its_own_no_longer_follows_the_original() -> None:
    """A shallow copy follows the original's registrations only while it shares its registries:
    one re-initialised (``Module.__init__``, registries of its own) keeps its attribute when
    the original registers a new buffer under that name."""
    original = Module()
    old, new = torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)
    original.register_buffer("stat", old)
    shallow = copy.copy(original)
    follower = copy.copy(original)
    Module.__init__(shallow)
    original.register_buffer("stat", new)
    assert vars(follower)["stat"] is new
    assert vars(shallow)["stat"] is old
    assert list(shallow.named_buffers()) == []
    assert original.get_buffer("stat") is new


@pytest.mark.parametrize("remove_duplicate", [True, False])
@pytest.mark.parametrize("kind", [list, frozenset])
def test_a_memo_that_is_no_set_is_refused_when_called(
    kind: type[list[object]] | type[frozenset[object]], remove_duplicate: bool
) -> None:
    """``named_modules``'s ``memo`` must be a set (or ``None``), as documented: a list or a
    frozenset of modules is refused by a ``TypeError`` naming the method and what was given,
    at the call, before any walk (PyTorch fails later, in the walk, with "'list' object has
    no attribute 'add'", or walks on with ``remove_duplicate=False``). The memo is left as it
    was given."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    twin = tnn.Sequential(tnn.Linear(2, 2), tnn.ReLU())
    with pytest.raises(AttributeError, match="object has no attribute 'add'"):
        list(twin.named_modules([twin[1]]))  # type: ignore[arg-type]
    memo = kind([model[1]])
    shown = re.escape("[ReLU()]" if kind is list else "frozenset({ReLU()})")
    with pytest.raises(
        TypeError,
        match=rf"^Sequential\.named_modules: memo must be a set of modules or None, got {shown}$",
    ):
        model.named_modules(memo, "", remove_duplicate)  # type: ignore[arg-type]
    assert list(memo) == [model[1]]


@pytest.mark.parametrize(
    ("method", "kind", "label", "what", "own"),
    [
        ("get_parameter", "parameter", "an nn.Parameter", "an attribute (Tensor)", "parameters"),
        ("get_submodule", "module", "an nn.Module", "an attribute (Tensor)", "children"),
        (
            "get_buffer",
            "buffer",
            "a buffer",
            "a tensor not registered (register_buffer)",
            "buffers",
        ),
    ],
)
def test_a_plain_tensor_attribute_is_named_for_what_the_lookup_wanted(
    method: str, kind: str, label: str, what: str, own: str
) -> None:
    """A plain tensor set as an attribute (not registered) is refused by each lookup as
    PyTorch's is ("`plain` is not an nn.Parameter"), saying what it is: only where a buffer was
    wanted is the hint to register it as one (``register_buffer``) the right one; to
    ``get_parameter`` and ``get_submodule`` it is an attribute holding a tensor (a parameter
    is made with ``Parameter``, a module is no tensor). The model is left as it was."""
    twin = tnn.Sequential(tnn.Linear(2, 2))
    twin[0].plain = torch.zeros(2)
    with pytest.raises(AttributeError, match=rf"^`plain` is not {label}$"):
        getattr(twin, method)("0.plain")
    model = nn.Sequential(nn.Linear(2, 2))
    plain = torch.zeros(2)
    model[0].plain = plain  # type: ignore[attr-defined]
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    has = {"parameters": "'weight', 'bias'", "children": "none", "buffers": "none"}[own]
    message = (
        f"Sequential.{method}: '0.plain' names no {kind}: `plain` is not {label}: it is {what} "
        f"of Linear (the Linear at '0', whose {own} are: {has})"
    )
    with pytest.raises(AttributeError, match=f"^{re.escape(message)}$"):
        getattr(model, method)("0.plain")
    assert model[0].plain is plain  # type: ignore[attr-defined]
    assert list(model.named_buffers()) == []
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[name], before[name]) for name in before)


def test_to_the_meta_device_of_a_model_already_there_changes_nothing() -> None:
    """A model built on the meta device (``device="meta"``) may be sent there again, as
    PyTorch's: the refusal of a move out of the meta device (which holds no values) is not made
    for a move to it."""
    layer = nn.Linear(2, 3, device="meta")
    theirs = torch.nn.Linear(2, 3, device="meta")
    assert theirs.to("meta") is theirs
    weight = layer.weight
    assert layer.to("meta") is layer
    assert layer.weight is weight and layer.weight.data.is_meta
    with pytest.raises(ValueError, match="on the meta device, which holds no values to copy"):
        layer.to("cpu")


def test_a_batch_norm_on_its_own_loads_a_state_dict_without_its_count() -> None:
    """A batch norm that is the model itself (not inside a container: its keys have no path)
    takes a state dict without ``num_batches_tracked`` with ``strict``, keeping its own count,
    as PyTorch fills one in for such a dict; any other key missing is still refused."""
    torch.manual_seed(0)
    twin = torch.nn.BatchNorm1d(3)
    twin(torch.randn(6, 3))
    entries = {k: v for k, v in twin.state_dict().items() if k != "num_batches_tracked"}
    assert twin.load_state_dict(entries) == ([], [])  # (PyTorch fills the count in)
    norm = nn.BatchNorm1d(3)
    norm(torch.randn(4, 3))
    assert norm.load_state_dict(entries) == ([], [])
    assert twin.running_mean is not None and twin.running_var is not None
    assert torch.equal(norm.running_mean, twin.running_mean)
    assert torch.equal(norm.running_var, twin.running_var)
    assert norm.num_batches_tracked.item() == 1
    del entries["running_var"]
    with pytest.raises(KeyError, match=r"missing keys \['running_var'\], unexpected keys \[\]"):
        norm.load_state_dict(entries)


class _GradientView(Module):
    """A module that keeps a view of its parameter's gradient as a plain attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.w = self.register_parameter("w", Parameter(torch.ones(3)))
        self.seen = self.w.grad[1:]


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_kept_view_of_a_gradient_stays_a_view_of_the_copys_gradient(how: str) -> None:
    """A tensor kept between calls that views a parameter's gradient comes back, in a deep copy
    or a pickle, as a view of the copy's gradient (as it viewed the original's), not as a
    compact copy of its own: a change of the copy's gradient is seen through it, and the
    original's is left alone."""
    module = _GradientView()
    copied = copy.deepcopy(module) if how == "deepcopy" else pickle.loads(pickle.dumps(module))
    copied.w.grad.copy_(torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(copied.seen, torch.tensor([2.0, 3.0]))
    assert torch.equal(module.seen, torch.zeros(2))
    assert torch.equal(module.w.grad, torch.zeros(3))


def test_a_model_moved_inside_inference_mode_trains_outside_it() -> None:
    """``to(...)`` called inside ``torch.inference_mode()`` makes normal tensors, as PyTorch's
    does not (its parameters become inference tensors): the moved parameters and buffers are
    updated in place outside it, by a training forward (a batch norm's running statistics) and
    by a gradient step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    with torch.inference_mode():
        model.to(F64)
    tensors = [p.data for p in model.parameters()] + list(model.buffers())
    assert not any(t.is_inference() for t in tensors)
    assert not any(p.grad.is_inference() for p in model.parameters())
    x = torch.randn(4, 2, dtype=F64)
    output = model(x)
    model.backward(torch.ones_like(output))
    norm = model[1]
    assert isinstance(norm, nn.BatchNorm1d)
    assert norm.num_batches_tracked.item() == 1
    for parameter in model.parameters():
        parameter.data.sub_(0.1 * parameter.grad)


class _ScaledCrossEntropy(nn.CrossEntropyLoss):
    """A loss of the user's whose own ``__init__`` takes ``weight``, a name that
    ``CrossEntropyLoss`` refuses as PyTorch's unsupported argument."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.scale = weight

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.scale * super().forward(input, target)


def test_a_subclass_with_its_own_init_takes_a_refused_argument_of_its_parent() -> None:
    """minidl's constructor refuses PyTorch's ``weight`` of ``CrossEntropyLoss`` by name, but
    a subclass whose own ``__init__`` declares ``weight`` keeps it, given by keyword: its
    constructor is the user's, not minidl's, and it computes with the value."""
    with pytest.raises(TypeError, match=r"^CrossEntropyLoss: got weight=tensor"):
        nn.CrossEntropyLoss(weight=torch.ones(3))  # type: ignore[call-arg]
    loss = _ScaledCrossEntropy(weight=2.0)
    assert loss.scale == 2.0
    torch.manual_seed(0)
    logits = torch.randn(4, 3, dtype=F64)
    target = torch.tensor([0, 2, 1, 2])
    expected = 2.0 * torch.nn.functional.cross_entropy(logits, target)
    assert torch.allclose(loss(logits, target), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("flag", [True, False])
def test_cuda_refuses_a_bool_as_a_device_index_and_changes_nothing(flag: bool) -> None:
    """``cuda(True)`` is no device index (a bool is refused where an index is taken): refused
    by type, naming the module and what was given, before any move (not read as ``cuda:1``
    or ``cuda:0`` and refused later as a device that is not there, or moved there)."""
    torch.manual_seed(0)
    model = nn.Linear(2, 3, dtype=F64)
    before = [p.data for p in model.parameters()]
    values = [p.data.clone() for p in model.parameters()]
    with pytest.raises(
        TypeError,
        match=rf"^Linear\.cuda: device must be an index, a str or a torch\.device, got {flag}$",
    ):
        model.cuda(flag)
    assert all(p.data is b for p, b in zip(model.parameters(), before, strict=True))
    assert all(torch.equal(p.data, v) for p, v in zip(model.parameters(), values, strict=True))


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_a_nested_buffer_is_refused_without_the_hint_it_cannot_take() -> None:
    """A nested tensor given to ``register_buffer`` is refused by type, naming the module, the
    name and the layout, with no hint to ``to_dense()`` (which a sparse tensor is given, and
    which a nested tensor, of rows of several lengths, cannot take); nothing is registered."""
    module = nn.Module()
    nested = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])
    with pytest.raises(TypeError) as caught:
        module.register_buffer("b", nested)
    message = "Module.register_buffer: expected a dense tensor for 'b', got a nested tensor"
    assert str(caught.value) == message
    assert module._buffers == {} and "b" not in vars(module)
    with pytest.raises(TypeError, match=r"got a sparse_coo tensor \(pass tensor\.to_dense\(\)\)$"):
        module.register_buffer("b", torch.eye(2).to_sparse())


# -- shallow copies and registration (a review against torch.nn, 2026-12-07) ----------------------


class _Box(nn.Module):
    """A module of one's own in the documented pattern: its child kept in an attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.a = self.register_module("a", nn.Linear(2, 2, dtype=torch.float64))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.a(input)


def test_a_child_registered_again_through_a_shallow_copy_is_the_originals_too() -> None:
    """``copy.copy`` shares the registry of children: a child registered again through the copy
    was in the original's parameters() (and so its optimizer's and state_dict), while the
    original's attribute, which its forward reads, still held the old child (a module of one's
    own then computed with one layer and trained another, without a word; a Residual refused
    as if its block had been set by hand). PyTorch's shallow copy, ``copy.copy(t).block = new``,
    gives both the new child; so does minidl's now, through either copy."""
    torch.manual_seed(0)
    x = torch.randn(3, 2, dtype=torch.float64)
    for first_is_copy in (True, False):
        box = _Box()
        copied = copy.copy(box)
        new = nn.Linear(2, 2, dtype=torch.float64)
        (copied if first_is_copy else box).register_module("a", new)
        for module in (box, copied):
            assert module.a is new
            assert [p for p in module.parameters()] == [new.weight, new.bias]
            assert torch.equal(module(x), new(x))
    residual = nn.Residual(nn.Linear(2, 2, dtype=torch.float64))
    copied_residual = copy.copy(residual)
    block = nn.Linear(2, 2, dtype=torch.float64)
    copied_residual.register_module("block", block)
    twin = TorchResidual(torch.nn.Linear(2, 2, dtype=torch.float64))
    copy.copy(twin).block = to_torch(block)
    assert torch.equal(residual(x), x + block(x))
    torch.testing.assert_close(residual(x), twin(x), rtol=1e-15, atol=0.0)


def test_a_parameter_removed_through_one_shallow_copy_may_be_registered_through_the_other() -> None:
    """``register_parameter("bias", None)`` on one of two shallow copies set the attribute of
    both to None but noted the removal on the one called only: registering a bias again through
    the other was refused ("'bias' is already an attribute of Linear"), where PyTorch takes it.
    Now either copy registers it again, and both compute with it."""
    torch.manual_seed(0)
    x = torch.randn(3, 2, dtype=torch.float64)
    layer = nn.Linear(2, 3, dtype=torch.float64)
    copied = copy.copy(layer)
    layer.register_parameter("bias", None)
    assert copied.bias is None and [p.name for p in copied.parameters()] == ["weight"]
    bias = nn.Parameter(torch.arange(3, dtype=torch.float64))
    copied.register_parameter("bias", bias)
    for module in (layer, copied):
        assert module.bias is bias
        torch.testing.assert_close(
            module(x), x @ module.weight.data.T + bias.data, rtol=1e-15, atol=0.0
        )
    # (and removed again through the copy, registered again through the original)
    copied.register_parameter("bias", None)
    layer.register_parameter("bias", nn.Parameter(torch.zeros(3, dtype=torch.float64)))
    assert copied.bias is layer.bias and copied.bias is not None


# -- a third pass of mutation testing over module.py (2026-12-07) --------------------------------


class _Scale(Module):
    """``x * w`` once a parameter ``w`` is registered; the identity before."""

    def forward(self, x: Tensor) -> Tensor:
        self._x = x
        w = self._parameters.get("w")
        return x if w is None else x * w.data

    def backward(self, grad: Tensor) -> Tensor:
        w = self._parameters.get("w")
        if w is None:
            return grad
        w.grad += (grad * self._x).sum(0)
        return grad * w.data


def test_a_parameter_registered_in_a_child_of_a_built_sequential_is_trained_by_backward_parameters() -> (
    None
):
    """m03: ``register_parameter`` counts as a registration, so that a Sequential that found
    which child is its first with parameters (for ``backward_parameters``) looks again: the
    parameter registered later in its first child gets its gradient (autograd in float64)."""
    torch.manual_seed(0)
    scale, last = _Scale(), nn.Linear(2, 2, dtype=F64)
    model = nn.Sequential(scale, nn.Tanh(), last)
    x, grad = torch.randn(4, 2, dtype=F64), torch.randn(4, 2, dtype=F64)
    model(x)
    model.backward_parameters(grad)
    before = Module._registrations
    scale.register_parameter("w", Parameter(torch.tensor([0.5, -1.5], dtype=F64)))
    assert Module._registrations != before
    model.zero_grad()
    model(x)
    model.backward_parameters(grad)
    w = scale.w.data.clone().requires_grad_()
    out = torch.tanh(x * w) @ last.weight.data.T + last.bias.data
    torch.autograd.backward(out, grad)
    torch.testing.assert_close(scale.w.grad, w.grad, rtol=0, atol=1e-12)


def test_a_bias_removed_then_registered_again_converts_to_torch() -> None:
    """m04: a parameter registered again after ``register_parameter(name, None)`` is no longer
    noted as removed: ``to_torch`` converts the layer with its bias (PyTorch's output, float64)
    where it refused it as an attribute set by hand."""
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, dtype=F64)
    layer.register_parameter("bias", None)
    bias = layer.register_parameter("bias", Parameter(torch.tensor([0.25, -2.0], dtype=F64)))
    converted = to_torch(layer)
    x = torch.randn(4, 3, dtype=F64)
    torch.testing.assert_close(
        converted(x), x @ layer.weight.data.T + bias.data, rtol=0, atol=1e-14
    )
    torch.testing.assert_close(converted(x), layer(x), rtol=0, atol=0)


@pytest.mark.parametrize("flag", [1, 0, "yes", None])
def test_zero_grad_refuses_a_set_to_none_that_is_no_bool_and_keeps_the_gradients(
    flag: object,
) -> None:
    """m38: ``zero_grad(set_to_none=...)`` takes ``False`` alone (True is refused as unsupported):
    any other value (``1``, ``0``, a str, ``None``) is refused as no bool, naming it, and the
    gradients are left as they were (not zeroed)."""
    layer = nn.Linear(2, 2, dtype=F64)
    layer.weight.grad.fill_(3.0)
    layer.bias.grad.fill_(-1.0)
    with pytest.raises(
        TypeError, match=rf"^Linear\.zero_grad: set_to_none must be True or False, got {flag!r}$"
    ):
        layer.zero_grad(flag)  # type: ignore[arg-type]
    assert torch.equal(layer.weight.grad, torch.full((2, 2), 3.0, dtype=F64))
    assert torch.equal(layer.bias.grad, torch.full((2,), -1.0, dtype=F64))


class _Uninitialised(Module):
    """A module whose ``__init__`` forgot ``super().__init__()`` but set ``training``."""

    def __init__(self) -> None:
        self.training = True


def test_train_on_a_module_not_initialised_is_refused_and_leaves_its_mode() -> None:
    """m39: ``train(False)`` on a module whose ``__init__`` did not call ``super().__init__()``
    is refused, naming the fix, before its ``training`` is set: the mode is left as it was."""
    bad = _Uninitialised()
    with pytest.raises(
        AttributeError,
        match=r"^_Uninitialised was not initialised as a Module \(it has no _modules\): "
        r"_Uninitialised\.__init__ must call super\(\)\.__init__\(\) first$",
    ):
        bad.train(False)
    assert bad.training is True
    with pytest.raises(AttributeError, match=r"^_Uninitialised was not initialised"):
        bad.eval()
    assert bad.training is True


def test_a_state_dict_taken_inside_inference_mode_can_be_changed_outside_it() -> None:
    """m43: the copies of ``state_dict()`` taken inside ``torch.inference_mode()`` are no
    inference tensors (as PyTorch's are not): changed in place outside it, as PyTorch's can be,
    where an inference tensor refuses ("Inplace update to inference tensor outside
    InferenceMode")."""
    torch.manual_seed(0)
    layer, twin = nn.Linear(3, 2, dtype=F64), tnn.Linear(3, 2, dtype=F64)
    norm = nn.BatchNorm1d(2, dtype=F64)
    model = nn.Sequential(layer, norm)
    with torch.inference_mode():
        ours = model.state_dict()
        theirs = twin.state_dict()
    assert not any(t.is_inference() for t in theirs.values())
    assert not any(t.is_inference() for t in ours.values())
    for tensor in ours.values():
        tensor.add_(1)  # (refused for an inference tensor)
    torch.testing.assert_close(ours["0.weight"], layer.weight.data + 1, rtol=0, atol=0)


class _OptionalNamedParameter(Module):
    """A module whose class declares ``scale`` an optional buffer but registers it as a
    parameter: only a buffer of that name may be left out of a state dict."""

    _optional_buffers = ("scale",)

    def __init__(self) -> None:
        super().__init__()
        self.register_parameter("scale", Parameter(torch.ones(2, dtype=F64)))


def test_an_optional_buffers_name_held_by_a_parameter_is_still_required() -> None:
    """m50: ``_optional_buffers`` lets a state dict leave out a *registered buffer* of that name;
    a parameter of the name stays required with ``strict``, refused naming it, nothing loaded."""
    module = _OptionalNamedParameter()
    with pytest.raises(
        KeyError,
        match=r"_OptionalNamedParameter\.load_state_dict: missing keys \['scale'\], unexpected "
        r"keys \[\]; expected exactly \['scale'\]",
    ):
        module.load_state_dict({})
    assert torch.equal(module.scale.data, torch.ones(2, dtype=F64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.int32])
def test_an_entry_of_another_dtype_for_an_integer_buffer_is_refused_and_nothing_is_loaded(
    dtype: torch.dtype,
) -> None:
    """m52: a buffer that is not floating point (a batch norm's ``num_batches_tracked``, int64)
    takes an entry of its own dtype only, as documented: another (a float, an int32) is refused
    naming the entry, both dtypes, and nothing is loaded (the other entries neither)."""
    norm = nn.BatchNorm1d(2, dtype=F64)
    state = norm.state_dict()
    state["weight"] = torch.full((2,), 7.0, dtype=F64)
    state["num_batches_tracked"] = torch.tensor(5, dtype=dtype)
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    with pytest.raises(
        TypeError,
        match=rf"^BatchNorm1d\.load_state_dict: entry 'num_batches_tracked' must be a tensor of "
        rf"dtype torch\.int64, got {dtype}$",
    ):
        norm.load_state_dict(state)
    after = norm.state_dict()
    assert all(torch.equal(after[k], v) and after[k].dtype == v.dtype for k, v in before.items())


def test_entries_that_are_the_modules_own_tensors_load_their_values_at_the_call() -> None:
    """m54: each entry is loaded with its value at the call, even one that is the module's own
    tensor: two layers' weights given swapped come swapped (the first write does not change
    what the second reads), as documented."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2, dtype=F64), nn.Linear(2, 2, dtype=F64))
    first, second = model[0], model[1]
    w0, w1 = first.weight.data.clone(), second.weight.data.clone()
    b0, b1 = first.bias.data.clone(), second.bias.data.clone()
    state = {
        "0.weight": second.weight.data, "0.bias": second.bias.data,
        "1.weight": first.weight.data, "1.bias": first.bias.data,
    }  # fmt: skip
    model.load_state_dict(state)
    for got, expected in (
        (first.weight, w1),
        (first.bias, b1),
        (second.weight, w0),
        (second.bias, b0),
    ):
        assert torch.equal(got.data, expected)


def test_to_refuses_non_blocking_given_twice_and_changes_nothing() -> None:
    """m56: ``to(dtype, True, non_blocking=True)`` gives ``non_blocking`` twice (PyTorch's
    positional form and the keyword): refused naming both, the module left in its dtype."""
    layer = nn.Linear(2, 2, dtype=torch.float32)
    weight = layer.weight.data
    with pytest.raises(
        TypeError,
        match=r"^Linear\.to: got non_blocking twice, True after the dtype and non_blocking=True; "
        r"give one of them$",
    ):
        layer.to(torch.float64, True, non_blocking=True)  # type: ignore[call-overload]
    assert layer.weight.data is weight and weight.dtype == torch.float32


def test_to_a_tensor_takes_its_dtype_as_torch_does() -> None:
    """m58: ``model.to(x)`` takes the tensor's device and dtype, as PyTorch's ``Module.to``:
    a float32 layer moved to a float64 tensor is float64 (parameters, gradients, buffers)."""
    model = nn.Sequential(
        nn.Linear(2, 2, dtype=torch.float32), nn.BatchNorm1d(2, dtype=torch.float32)
    )
    twin = tnn.Sequential(tnn.Linear(2, 2), tnn.BatchNorm1d(2))
    like = torch.zeros(1, dtype=F64)
    assert model.to(like) is model
    twin.to(like)
    assert (
        [p.dtype for p in model.parameters()] == [p.dtype for p in twin.parameters()] == [F64] * 4
    )
    assert all(p.grad.dtype == F64 for p in model.parameters())
    assert [b.dtype for b in model.buffers()] == [b.dtype for b in twin.buffers()]


def test_cuda_names_an_index_of_thousands_of_digits_by_its_number_of_digits() -> None:
    """m59: ``cuda(index)`` with an index past 64 bits is refused by ``to`` as no device; one
    of thousands of digits is named by its number of digits (Python refuses to write it whole:
    "Exceeds the limit (4300 digits)"), and nothing moves."""
    layer = nn.Linear(2, 2, dtype=F64)
    weight = layer.weight.data
    with pytest.raises(
        ValueError, match=r"^Linear\.to: 'cuda:an int of 5001 digits' is not a device"
    ):
        layer.cuda(10**5000)
    assert layer.weight.data is weight
