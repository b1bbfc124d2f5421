"""``Module``'s registration, traversal, ``repr`` and pickling against ``torch.nn.Module``.

Buffers are detached from any autograd graph; the register methods refuse the names PyTorch's
refuse (and a few more: minidl does not intercept attribute assignment), before changing
anything; a module registered at several places is listed once, as in PyTorch; ``repr`` shows
``extra_repr`` with the children; and a pickled module takes along only the part of a cached
input's storage that it uses.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn as tnn

from minidl import nn
from minidl.nn.flat import flat_buffer
from minidl.nn.module import Module
from minidl.nn.parameter import Parameter
from tests.helpers import F64

# -- register_buffer: no autograd graph --------------------------------------------------------


@pytest.mark.parametrize("leaf", [False, True], ids=["from a graph", "a leaf recorded"])
def test_a_buffer_from_an_autograd_graph_is_detached(leaf: bool) -> None:
    norm = nn.BatchNorm1d(2)
    source = torch.zeros(2, requires_grad=True)
    tensor = source if leaf else source * 1.0
    registered = norm.register_buffer("running_mean", tensor)
    assert registered is norm.running_mean is norm._buffers["running_mean"]
    assert registered.grad_fn is None and not registered.requires_grad
    assert registered.data_ptr() == tensor.data_ptr()  # (detached: the same memory)
    norm(torch.randn(5, 2))  # updates the running statistics in place
    assert norm.running_mean.grad_fn is None
    assert not torch.equal(norm.running_mean, torch.zeros(2))
    copied = copy.deepcopy(norm)
    assert torch.equal(copied.running_mean, norm.running_mean)
    assert pickle.loads(pickle.dumps(norm)).running_mean.grad_fn is None


def test_a_plain_buffer_is_registered_as_it_is() -> None:
    module = nn.Module()
    tensor = torch.zeros(3)
    assert module.register_buffer("counts", tensor) is tensor


# -- register_*: the names refused, and nothing changed ----------------------------------------


class _Custom(nn.Module):
    """A module of a user's, with a parameter, a buffer and a child."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = self.register_parameter("weight", nn.Parameter(torch.ones(2)))
        self.register_buffer("count", torch.zeros(1))
        self.register_module("child", nn.Tanh())
        self.hidden = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.data


def _snapshot(module: nn.Module) -> tuple[object, ...]:
    return (
        dict(module._parameters),
        dict(module._buffers),
        dict(module._modules),
        module.training,
        module.weight,
        module.count,
        module.forward,
        [p.name for p in module.parameters()],
    )


def _register(kind: str) -> Callable[[nn.Module, object], object]:
    values: dict[str, Callable[[], object]] = {
        "parameter": lambda: nn.Parameter(torch.zeros(2)),
        "buffer": lambda: torch.zeros(2),
        "module": nn.ReLU,
    }

    def register(module: nn.Module, name: object) -> object:
        method = getattr(module, f"register_{kind}")
        return method(name, values[kind]())

    return register


KINDS = ["parameter", "buffer", "module"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("name", "error", "words"),
    [
        (3, TypeError, ["must be a str", "int"]),
        ("", KeyError, ["non-empty", "'.'"]),
        ("a.b", KeyError, ["'a.b'", "without '.'"]),
        ("training", KeyError, ["'training'", "attribute"]),
        ("forward", KeyError, ["'forward'", "method"]),
        ("hidden", KeyError, ["'hidden'", "attribute"]),
        ("_parameters", KeyError, ["'_parameters'", "attribute"]),
    ],
)
def test_a_bad_name_is_refused_and_changes_nothing(
    kind: str, name: object, error: type[Exception], words: list[str]
) -> None:
    module = _Custom()
    before = _snapshot(module)
    with pytest.raises(error) as caught:
        _register(kind)(module, name)
    message = str(caught.value)
    for word in ["_Custom", f"register_{kind}", *words]:
        assert word in message, (word, message)
    assert _snapshot(module) == before
    assert module(torch.ones(2)).tolist() == [1.0, 1.0]  # still callable


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("name", "other"), [("weight", "parameter"), ("count", "buffer"), ("child", "module")]
)
def test_a_name_of_another_kind_is_refused(kind: str, name: str, other: str) -> None:
    module = _Custom()
    before = _snapshot(module)
    if kind == other:  # the same kind: replaced
        _register(kind)(module, name)
        assert (
            {"parameter": module._parameters, "buffer": module._buffers, "module": module._modules}[
                kind
            ][name]
            is not before[KINDS.index(kind)][name]  # type: ignore[index]
        )
        return
    with pytest.raises(KeyError, match=f"_Custom.register_{kind}: '{name}' is already a {other}"):
        _register(kind)(module, name)
    assert _snapshot(module) == before
    assert list(module.state_dict()) == ["weight", "count"]


def test_torch_refuses_the_same_names() -> None:
    """The oracle: PyTorch's register methods refuse these names with these exceptions."""
    module = tnn.BatchNorm1d(2)
    cases: list[tuple[object, type[Exception]]] = [
        (3, TypeError),
        ("", KeyError),
        ("a.b", KeyError),
        ("training", KeyError),
        ("forward", KeyError),
    ]
    for name, error in cases:
        with pytest.raises(error):
            module.register_buffer(name, torch.zeros(2))  # type: ignore[arg-type]
        with pytest.raises(error):
            module.register_parameter(name, tnn.Parameter(torch.zeros(2)))  # type: ignore[arg-type]
        with pytest.raises(error):
            module.add_module(name, tnn.ReLU())  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        module.register_buffer("weight", torch.zeros(2))
    with pytest.raises(KeyError):
        module.register_parameter("running_mean", tnn.Parameter(torch.zeros(2)))


def test_a_parameter_with_a_bad_name_and_value_is_not_left_registered() -> None:
    module = nn.Module()
    parameter = nn.Parameter(torch.zeros(2))
    with pytest.raises(TypeError, match="parameter name must be a str"):
        module.register_parameter(3, parameter)  # type: ignore[arg-type]
    assert module._parameters == {} and list(module.parameters()) == []
    assert parameter.name == ""
    with pytest.raises(TypeError, match=r"expected a minidl Parameter \(or None\) for 'w'"):
        module.register_parameter("w", torch.zeros(2))  # type: ignore[arg-type]
    assert module._parameters == {}


def test_a_parameter_keeps_the_name_it_was_first_given() -> None:
    """A ``Parameter`` without a name is named at its first registration; registered again (a
    weight tied into a second layer) or given a name when made, it keeps that name, which its
    messages show."""
    first, second = nn.Linear(2, 2), nn.Linear(2, 2)
    assert first.weight.name == "weight"
    holder = nn.Module()
    holder.register_parameter("tied", first.weight)
    second.register_parameter("weight", first.weight)
    assert first.weight.name == "weight"
    gain = holder.register_parameter("scale", nn.Parameter(torch.ones(2), name="gain"))
    assert gain.name == "gain" and repr(gain).startswith("Parameter 'gain'")
    fresh = nn.Parameter(torch.ones(2))
    holder.register_parameter("shift", fresh)
    nn.Module().register_parameter("other", fresh)
    assert fresh.name == "shift"


def test_an_attribute_holding_the_object_itself_may_be_registered() -> None:
    """``self.block = block`` then ``register_module("block", block)`` (as Residual does)."""
    module = nn.Module()
    child = nn.Tanh()
    module.child = child  # type: ignore[attr-defined]
    assert module.register_module("child", child) is child
    parameter = nn.Parameter(torch.zeros(2))
    module.w = parameter  # type: ignore[attr-defined]
    assert module.register_parameter("w", parameter) is parameter
    assert list(module.parameters()) == [parameter]
    with pytest.raises(KeyError, match="'w' is already a parameter"):
        module.register_module("w", nn.Tanh())


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_a_module_cannot_be_its_own_descendant(depth: int) -> None:
    root = nn.Module()
    parent = root
    for _ in range(depth):
        child = nn.Module()
        parent.register_module("inner", child)
        parent = child
    with pytest.raises(ValueError, match="register_module: cannot register") as caught:
        parent.register_module("loop", root)
    assert ("itself" in str(caught.value)) == (depth == 0)
    assert "loop" not in parent._modules
    assert len(list(root.modules())) == depth + 1
    repr(root)


class _Early(nn.Module):
    def __init__(self, kind: str) -> None:
        _register(kind)(self, "x")
        super().__init__()


@pytest.mark.parametrize("kind", KINDS)
def test_registering_before_init_names_the_missing_call(kind: str) -> None:
    with pytest.raises(
        AttributeError,
        match=rf"_Early.register_{kind}: cannot assign a {kind} "
        r"before Module.__init__\(\) call",
    ):
        _Early(kind)


def test_the_built_in_modules_register_as_before() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Residual(nn.Linear(3, 3)))
    assert [name for name, _ in model.named_parameters()] == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "2.block.weight",
        "2.block.bias",
    ]
    linear = model[0]
    linear.weight = linear.register_parameter("weight", nn.Parameter(torch.zeros(3, 2)))
    norm = model[1]
    norm.register_buffer("running_mean", torch.ones(3))
    assert torch.equal(model.state_dict()["1.running_mean"], torch.ones(3))


# -- shared modules are listed once --------------------------------------------------------------


def _pair(shared_twice_in_one: bool) -> tuple[nn.Module, tnn.Module]:
    """The same structure in minidl and torch: a BatchNorm1d registered at two places."""
    ours, theirs = nn.Module(), tnn.Module()
    norm, tnorm = nn.BatchNorm1d(2), tnn.BatchNorm1d(2)
    if shared_twice_in_one:
        ours.register_module("a", norm)
        ours.register_module("b", norm)
        theirs.add_module("a", tnorm)
        theirs.add_module("b", tnorm)
    else:
        for module, child, leaf in ((ours, nn.Module(), norm), (theirs, tnn.Module(), tnorm)):
            other = type(child)()
            if isinstance(module, nn.Module):
                child.register_module("n", leaf)
                other.register_module("n", leaf)
                module.register_module("a", child)
                module.register_module("b", other)
            else:
                child.add_module("n", leaf)
                other.add_module("n", leaf)
                module.add_module("a", child)
                module.add_module("b", other)
    return ours, theirs


@pytest.mark.parametrize("twice_in_one", [True, False], ids=["two names", "two parents"])
def test_a_shared_module_is_listed_as_in_torch(twice_in_one: bool) -> None:
    ours, theirs = _pair(twice_in_one)
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_modules(remove_duplicate=False)] == [
        n for n, _ in theirs.named_modules(remove_duplicate=False)
    ]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert len(list(ours.children())) == len(list(theirs.children()))
    assert len(list(ours.modules())) == len(list(theirs.modules()))
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert [n for n, _ in ours.named_buffers(remove_duplicate=False)] == [
        n for n, _ in theirs.named_buffers(remove_duplicate=False)
    ]
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert len(list(ours.buffers())) == 3
    calls: list[str] = []
    tcalls: list[str] = []
    ours.apply(lambda m: calls.append(type(m).__name__))
    theirs.apply(lambda m: tcalls.append(type(m).__name__))
    assert calls == tcalls


@pytest.mark.parametrize("twice_in_one", [True, False], ids=["two names", "two parents"])
def test_parameters_are_those_of_named_parameters(twice_in_one: bool) -> None:
    """``parameters()`` (which walks the model without making names) gives the parameters of
    ``named_parameters()``, in order: a module registered at two places and a parameter tied
    between two modules come once, as in PyTorch."""
    ours, theirs = _pair(twice_in_one)
    tied, ttied = nn.Linear(2, 2), tnn.Linear(2, 2)  # (its bias: the norm's weight)
    tied.bias = tied.register_parameter("bias", next(p for _, p in ours.named_parameters()))
    ttied.bias = next(theirs.parameters())
    ours.register_module("c", tied)
    theirs.add_module("c", ttied)
    assert [id(p) for p in ours.parameters()] == [id(p) for _, p in ours.named_parameters()]
    assert [tuple(p.shape) for p in ours.parameters()] == [
        tuple(p.shape) for p in theirs.parameters()
    ]


@pytest.mark.parametrize("twice_in_one", [True, False], ids=["two names", "two parents"])
def test_named_parameters_and_buffers_take_torchs_arguments_in_its_order(
    twice_in_one: bool,
) -> None:
    """``named_parameters(prefix, recurse, remove_duplicate)`` and ``named_buffers`` of the
    same signature, by position as PyTorch takes them: the names of PyTorch's, on a module
    with its own parameter and buffer, each registered under two names, and a child at two
    places (the second positional argument was ``remove_duplicate``: ``("", False)`` listed
    the children's tied parameters again where PyTorch leaves the children out). Flags that
    are not bools are refused in the module's name."""
    ours, theirs = _pair(twice_in_one)
    weight, tweight = Parameter(torch.ones(2)), tnn.Parameter(torch.ones(2))
    count, tcount = torch.zeros(1), torch.zeros(1)
    for name in ("w", "v"):
        ours.register_parameter(name, weight)
        theirs.register_parameter(name, tweight)
        ours.register_buffer(name + "_count", count)
        theirs.register_buffer(name + "_count", tcount)
    for prefix in ("", "m"):
        for recurse in (True, False):
            for remove_duplicate in (True, False):
                arguments = (prefix, recurse, remove_duplicate)
                for method in ("named_parameters", "named_buffers"):
                    got = [n for n, _ in getattr(ours, method)(*arguments)]
                    expected = [n for n, _ in getattr(theirs, method)(*arguments)]
                    assert got == expected, (method, arguments)
                    keywords = {"recurse": recurse, "remove_duplicate": remove_duplicate}
                    assert [n for n, _ in getattr(ours, method)(prefix, **keywords)] == got
    assert [n for n, _ in ours.named_parameters("", False)] == ["w"]
    for recurse in (True, False):  # (and parameters(recurse), buffers(recurse), as PyTorch's)
        assert [p.numel() for p in ours.parameters(recurse)] == [
            p.numel() for p in theirs.parameters(recurse)
        ]
        assert len(list(ours.buffers(recurse))) == len(list(theirs.buffers(recurse)))
    assert [id(p) for p in ours.parameters(recurse=False)] == [id(weight)]
    assert [id(b) for b in ours.buffers(recurse=False)] == [id(ours.w_count)]
    for method in ("named_parameters", "named_buffers"):
        for flag in ("recurse", "remove_duplicate"):
            with pytest.raises(
                TypeError, match=rf"^Module\.{method}: {flag} must be True or False, got 0$"
            ):
                next(getattr(ours, method)(**{flag: 0}))
    for method in ("parameters", "buffers"):
        with pytest.raises(TypeError, match=rf"^Module\.{method}: recurse must be True or False"):
            getattr(ours, method)(recurse=None)


def _twins() -> tuple[nn.Sequential, tnn.Sequential]:
    """A minidl model with parameters and buffers, and its torch.nn twin (the same values)."""
    from minidl.interop import to_torch

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))
    twin = to_torch(model)
    assert isinstance(twin, tnn.Sequential)
    return model, twin


def test_traversals_are_iterators_as_in_torch() -> None:
    """``parameters()``, ``buffers()``, ``children()`` and ``modules()`` are iterators, as
    PyTorch's generators are, so that its idioms work: ``next(model.parameters())`` (a list was
    refused: "'list' object is not an iterator"), ``sum(p.numel() for p in ...)``,
    ``list(model.children())``; each gives what the torch.nn twin's gives, in its order."""
    model, twin = _twins()
    for method in ("parameters", "buffers", "children", "modules"):
        ours, theirs = getattr(model, method)(), getattr(twin, method)()
        assert iter(ours) is ours, method  # (an iterator, not a list)
        first, tfirst = next(ours), next(theirs)
        if method in ("parameters", "buffers"):
            value = first.data if isinstance(first, Parameter) else first
            torch.testing.assert_close(value, tfirst.detach(), rtol=0, atol=0)
        else:
            assert type(first).__name__ == type(tfirst).__name__
        rest, trest = list(ours), list(theirs)  # (the others, after the first)
        assert len(rest) == len(trest), method
    assert next(model.parameters()) is model[0].weight
    assert next(model.parameters()).data.dtype == next(twin.parameters()).dtype
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in twin.parameters()) == model.num_parameters()
    assert [type(c).__name__ for c in model.children()] == [
        type(c).__name__ for c in twin.children()
    ]
    assert next(model.buffers(recurse=False), None) is None
    assert next(twin.buffers(recurse=False), None) is None
    assert [id(p) for p in model.parameters()] == [id(p) for _, p in model.named_parameters()]


def test_named_modules_takes_torchs_arguments_in_its_order() -> None:
    """``named_modules(memo, prefix, remove_duplicate)``, as PyTorch's: a ``memo`` given by
    position (refused before: "prefix must be a str, got set") leaves out the modules in it,
    with what is reached only through them, and gets the modules that come added to it; a
    ``str`` first (a prefix written for the old order) is refused, naming ``prefix=``."""
    model, twin = _twins()
    pairs = list(zip(model.modules(), twin.modules(), strict=True))
    for prefix in ("", "m"):
        for remove_duplicate in (True, False):
            memo: set[Module] = set()
            tmemo: set[tnn.Module] = set()
            got = [n for n, _ in model.named_modules(memo, prefix, remove_duplicate)]
            expected = [n for n, _ in twin.named_modules(tmemo, prefix, remove_duplicate)]
            assert got == expected
            assert [ours in memo for ours, _ in pairs] == [theirs in tmemo for _, theirs in pairs]
            # A memo that holds a child leaves it out.
            memo, tmemo = {model[1]}, {twin[1]}
            got = [n for n, _ in model.named_modules(memo, prefix, remove_duplicate)]
            expected = [n for n, _ in twin.named_modules(tmemo, prefix, remove_duplicate)]
            assert got == expected and len(memo) == len(tmemo)
            assert [n for n, _ in model.named_modules(prefix=prefix)] == [
                n for n, _ in twin.named_modules(prefix=prefix)
            ]
    with pytest.raises(
        TypeError,
        match=r"^Sequential\.named_modules: memo must be a set of modules or None, got 'm'; the "
        r"prefix is the second argument, as in PyTorch: named_modules\(prefix=\.\.\.\)$",
    ):
        model.named_modules("m")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^Sequential\.named_modules: remove_duplicate must be"):
        model.named_modules(remove_duplicate=0)  # type: ignore[arg-type]


def test_a_subclass_named_parameters_is_what_parameters_gives() -> None:
    """A subclass that overrides ``named_parameters`` (to leave out a frozen part, say): its
    ``parameters()``, which optimizers are built on, follows the override, as PyTorch's does."""

    def visible(named: Iterator[tuple[str, object]]) -> Iterator[tuple[str, object]]:
        return ((name, p) for name, p in named if not name.startswith("body."))

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = self.register_module("body", nn.Linear(3, 4))
            self.out = self.register_module("out", nn.Linear(4, 2))

        def named_parameters(  # type: ignore[override]
            self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
        ) -> Iterator[tuple[str, object]]:
            return visible(super().named_parameters(prefix, recurse, remove_duplicate))

    class TorchHead(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.out = tnn.Linear(3, 4), tnn.Linear(4, 2)

        def named_parameters(  # type: ignore[override]
            self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
        ) -> Iterator[tuple[str, object]]:
            return visible(super().named_parameters(prefix, recurse, remove_duplicate))

    head = Head()
    assert [id(p) for p in head.parameters()] == [id(head.out.weight), id(head.out.bias)]
    assert len(list(head.parameters())) == len(list(TorchHead().parameters()))


def test_apply_calls_a_child_registered_twice_once() -> None:
    ours, _ = _pair(True)
    norms: list[nn.Module] = []
    ours.apply(lambda m: norms.append(m) if isinstance(m, nn.BatchNorm1d) else None)
    assert len(norms) == 1


def test_the_order_is_unchanged_without_sharing() -> None:
    model = nn.Sequential(
        nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Residual(nn.Sequential(nn.Linear(3, 3), nn.Tanh()))
    )
    names = [
        "",
        "0",
        "1",
        "2",
        "2.block",
        "2.block.0",
        "2.block.1",
    ]
    assert [n for n, _ in model.named_modules()] == names
    assert [n for n, _ in model.named_modules(remove_duplicate=False)] == names
    assert [n for n, _ in model.named_buffers()] == [
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    ]
    assert [n for n, _ in model.named_buffers("m")][:2] == [
        "m.1.running_mean",
        "m.1.running_var",
    ]
    assert [n for n, _ in model.named_children()] == ["0", "1", "2"]
    visited: list[str] = []
    model.apply(lambda m: visited.append(type(m).__name__))
    assert visited == [
        "Linear",
        "BatchNorm1d",
        "Linear",
        "Tanh",
        "Sequential",
        "Residual",
        "Sequential",
    ]


def test_a_shared_module_is_moved_and_put_in_mode_once() -> None:
    ours, _ = _pair(True)
    ours.to(F64).eval()
    assert [b.dtype for b in ours.buffers()] == [F64, F64, torch.int64]
    assert not ours._modules["a"].training


def test_sequential_still_refuses_a_module_shared_inside_a_layer() -> None:
    """Sequential looks at every place (a shared module's second forward would overwrite the
    cache its first backward needs)."""
    ours, _ = _pair(True)
    with pytest.raises(ValueError, match=r"the BatchNorm1d at '0.b' is the same object as"):
        nn.Sequential(ours)


# -- repr ------------------------------------------------------------------------------------------


class _WithExtra(nn.Module):
    def __init__(self, lines: str, children: int) -> None:
        super().__init__()
        self.lines = lines
        for index in range(children):
            self.register_module(str(index), nn.Linear(2, 3))

    def extra_repr(self) -> str:
        return self.lines


class _TorchWithExtra(tnn.Module):
    def __init__(self, lines: str, children: int) -> None:
        super().__init__()
        self.lines = lines
        for index in range(children):
            self.add_module(str(index), tnn.Linear(2, 3))

    def extra_repr(self) -> str:
        return self.lines


@pytest.mark.parametrize("lines", ["", "size=3", "size=3\nscale=2.0"])
@pytest.mark.parametrize("children", [0, 1, 2])
def test_repr_is_torchs(lines: str, children: int) -> None:
    assert repr(_WithExtra(lines, children)).replace("_WithExtra", "X") == repr(
        _TorchWithExtra(lines, children)
    ).replace("_TorchWithExtra", "X")
    nested = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.Tanh(), nn.Linear(3, 1)))
    theirs = tnn.Sequential(tnn.Linear(2, 3), tnn.Sequential(tnn.Tanh(), tnn.Linear(3, 1)))
    assert repr(nested) == repr(theirs)


# -- pickling: a cached slice takes its rows along, not its storage ------------------------------


def test_a_cached_slice_is_pickled_compactly() -> None:
    torch.manual_seed(0)
    data = torch.randn(100_000, 100)  # 40 MB
    model = nn.Sequential(nn.Linear(100, 8), nn.Tanh(), nn.Linear(8, 2))
    batch = data[64:96]
    output = model(batch)
    size = len(pickle.dumps(model))
    assert size < 200_000, size  # (the 32 rows are 12.8 kB; the data set 40 MB)
    copied = copy.deepcopy(model)
    grad = torch.randn_like(output)
    expected = model.backward(grad)
    assert torch.equal(copied.backward(grad), expected)
    for ours, theirs in zip(copied.parameters(), model.parameters(), strict=True):
        assert torch.equal(ours.grad, theirs.grad)
    loaded = pickle.loads(pickle.dumps(model))
    assert torch.equal(loaded.backward(grad), expected)
    assert torch.equal(loaded[0]._input, batch)


def test_views_of_one_cached_part_stay_views_of_one_copy() -> None:
    """Two kept tensors over the same part of a storage come back sharing memory."""
    module = nn.Module()
    data = torch.arange(1000.0)
    part = data[10:20]
    module.a = part  # type: ignore[attr-defined]
    module.b = (part.view(2, 5), 3)  # type: ignore[attr-defined]
    loaded = pickle.loads(pickle.dumps(module))
    assert torch.equal(loaded.a, part) and torch.equal(loaded.b[0], part.view(2, 5))
    assert loaded.a.untyped_storage().nbytes() == 10 * 4
    assert loaded.b[0].data_ptr() == loaded.a.data_ptr()


def test_kept_slices_of_two_parts_of_one_storage_come_back_with_their_own_values() -> None:
    """Two kept tensors over different parts of one storage (two slices of a data set): each
    is written as a copy of its own part, and comes back with its values, not as a view of
    the other's copy."""
    module = nn.Module()
    data = torch.arange(1000.0)
    module.a = data[10:20]  # type: ignore[attr-defined]
    module.b = (data[500:506].view(2, 3), data[990:])  # type: ignore[attr-defined]
    copies: list[Any] = [pickle.loads(pickle.dumps(module)), copy.deepcopy(module)]
    for loaded in copies:
        assert torch.equal(loaded.a, data[10:20])
        assert torch.equal(loaded.b[0], data[500:506].view(2, 3))
        assert torch.equal(loaded.b[1], data[990:])
        assert loaded.a.untyped_storage().nbytes() == 10 * 4


def test_kept_views_of_one_part_in_two_dtypes_come_back_each_in_its_own() -> None:
    """A kept tensor and a view of the same elements in another dtype of the same size (its
    bits as int32): each comes back with its dtype and bits, not the second as a float32 view
    of the first's copy of the part."""
    module = nn.Module()
    data = torch.linspace(-1.0, 1.0, 1000)
    part = data[10:20]
    module.a = part  # type: ignore[attr-defined]
    module.bits = part.view(torch.int32)  # type: ignore[attr-defined]
    copies: list[Any] = [pickle.loads(pickle.dumps(module)), copy.deepcopy(module)]
    for loaded in copies:
        assert loaded.a.dtype == torch.float32 and loaded.bits.dtype == torch.int32
        assert torch.equal(loaded.a, part) and torch.equal(loaded.bits, part.view(torch.int32))


def test_a_cache_that_views_the_parameters_stays_a_view() -> None:
    module = nn.Linear(3, 2)
    module.view = module.weight.data[:, :1]  # type: ignore[attr-defined]
    loaded = copy.deepcopy(module)
    assert loaded.view.untyped_storage().data_ptr() == (  # type: ignore[attr-defined]
        loaded.weight.data.untyped_storage().data_ptr()
    )


def test_a_move_keeps_each_flat_part_of_a_module_flat() -> None:
    """A module of one's own with a parameter of its own and two Sequentials: the move took
    the Sequentials' parameters out of their flat buffers (their optimizer steps then ran
    parameter by parameter). Each part is moved as one buffer now, and the values are kept."""

    class Net(Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = self.register_parameter("scale", Parameter(torch.ones(2)))
            self.body = self.register_module("body", nn.mlp((2, 3, 2)))
            self.head = self.register_module("head", nn.mlp((2, 4, 2)))
            # (a part of two parameters: one Linear)
            self.tail = self.register_module("tail", nn.Sequential(nn.Linear(2, 2)))

    net = Net()
    assert flat_buffer([p.grad for p in net.tail.parameters()]) is not None
    before = [parameter.data.clone() for parameter in net.parameters()]
    net.double()
    for part in (net.body, net.head, net.tail):
        assert flat_buffer([p.data for p in part.parameters()]) is not None
        assert flat_buffer([p.grad for p in part.parameters()]) is not None
    assert flat_buffer([p.data for p in net.parameters()]) is None  # three buffers and a scale
    for parameter, value in zip(net.parameters(), before, strict=True):
        assert parameter.data.dtype == torch.float64 == parameter.grad.dtype
        assert torch.equal(parameter.data, value.double())


def test_a_state_dict_with_every_name_of_a_shared_tensor_loads() -> None:
    """PyTorch's state_dict (and minidl's before shared modules were listed once) gives a tied
    parameter or a shared module's buffers under every name: load_state_dict called the other
    names unexpected. They are accepted, and the first name's entry is loaded."""

    class Twice(Module):
        def __init__(self, first: Module, second: Module) -> None:
            super().__init__()
            self.register_module("a", first)
            self.register_module("b", second)

    shared = nn.BatchNorm1d(3)
    model = Twice(shared, shared)
    twin = tnn.Module()
    twin.a = twin.b = tnn.BatchNorm1d(3)  # type: ignore[assignment]
    twin.a.running_mean.fill_(0.25)
    assert "b.running_mean" in twin.state_dict()
    model.load_state_dict(twin.state_dict())
    assert torch.equal(shared.running_mean, torch.full((3,), 0.25))
    assert list(model.state_dict()) == [k for k in twin.state_dict() if k.startswith("a.")]

    first, second = nn.Linear(3, 3), nn.Linear(3, 3)
    second.register_parameter("weight", first.weight)
    tied = Twice(first, second)
    torch_first, torch_second = tnn.Linear(3, 3), tnn.Linear(3, 3)
    torch_second.weight = torch_first.weight
    torch_tied = tnn.Module()
    torch_tied.a, torch_tied.b = torch_first, torch_second  # type: ignore[assignment]
    tied.load_state_dict(torch_tied.state_dict())
    assert torch.equal(first.weight.data, torch_first.weight.detach())
    assert torch.equal(second.bias.data, torch_second.bias.detach())  # type: ignore[union-attr]
    with pytest.raises(KeyError, match=r"unexpected keys \['c.weight'\]"):
        tied.load_state_dict({**torch_tied.state_dict(), "c.weight": torch.zeros(3, 3)})


def test_an_entry_under_another_name_of_a_shared_tensor_is_checked_and_loaded() -> None:
    """The other names were skipped unchecked: different values were dropped without a word,
    and a dict holding only them loaded nothing."""

    class Twice(Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = self.register_module("a", nn.Linear(2, 2))
            self.register_module("b", self.a)

    model = Twice()
    sevens = {"b.weight": torch.full((2, 2), 7.0), "b.bias": torch.full((2,), 7.0)}
    model.load_state_dict(sevens)  # strict: the other names stand for the first ones
    assert torch.equal(model.a.weight.data, torch.full((2, 2), 7.0))
    both = {**model.state_dict(), "b.weight": torch.zeros(2, 2)}
    before = model.a.weight.data.clone()
    with pytest.raises(
        ValueError,
        match=r"^Twice\.load_state_dict: entries 'a\.weight' and 'b\.weight' name one tensor .* "
        r"hold different values",
    ):
        model.load_state_dict(both)
    assert torch.equal(model.a.weight.data, before)
    equal = {**model.state_dict(), "b.weight": before.clone(), "b.bias": model.a.bias.data.clone()}
    assert model.load_state_dict(equal) == ([], [])


def test_missing_keys_come_in_the_state_dicts_order_as_in_torch() -> None:
    """``load_state_dict`` listed every parameter before every buffer: a batch norm's missing
    running mean came after a later layer's missing weight, in the list returned and in the
    error, where PyTorch keeps ``state_dict``'s order (module by module)."""
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    twin = tnn.Sequential(tnn.Linear(3, 4), tnn.BatchNorm1d(4), tnn.ReLU(), tnn.Linear(4, 2))
    gone = ("1.running_mean", "3.weight", "1.running_var", "0.bias")
    state = {k: v for k, v in model.state_dict().items() if k not in gone}
    torch_state = {k: v for k, v in twin.state_dict().items() if k not in gone}
    state["extra"] = torch_state["extra"] = torch.zeros(1)
    expected = twin.load_state_dict(torch_state, strict=False)
    assert expected.missing_keys == [
        "0.bias",
        "1.running_mean",
        "1.running_var",
        "3.weight",
    ]
    assert model.load_state_dict(state, strict=False) == (
        expected.missing_keys,
        expected.unexpected_keys,
    )
    with pytest.raises(KeyError) as refused:
        model.load_state_dict(state)
    assert f"missing keys {expected.missing_keys}" in str(refused.value)
    assert f"expected exactly {list(model.state_dict())}" in str(refused.value)


def test_unexpected_keys_come_in_torchs_order() -> None:
    """PyTorch lists the unexpected keys module by module (in ``named_modules`` order), each at
    the deepest module its path reaches, and in the state dict's order within a module;
    ``load_state_dict`` listed them in the state dict's order alone (``'1.0.extra'`` before
    ``'extra'`` here), in the list returned and in the error."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    twin = tnn.Sequential(tnn.Linear(2, 2), tnn.Sequential(tnn.Linear(2, 2), tnn.BatchNorm1d(2)))
    extra = ["1.1.extra", "1.0.extra", "0.extra.deeper", "1.0", "extra", "1.extra", "5.weight"]
    extra += ["0", "0.x"]  # (a child's name alone: an unexpected key of the module above it)
    state = {**{name: torch.zeros(1) for name in extra}, **model.state_dict()}
    torch_state = {**{name: torch.zeros(1) for name in extra}, **twin.state_dict()}
    expected = twin.load_state_dict(torch_state, strict=False).unexpected_keys
    assert expected == [
        "extra",
        "5.weight",
        "0",
        "0.extra.deeper",
        "0.x",
        "1.0",
        "1.extra",
        "1.0.extra",
        "1.1.extra",
    ]
    assert model.load_state_dict(state, strict=False) == ([], expected)
    with pytest.raises(KeyError) as refused:
        model.load_state_dict(state)
    assert f"unexpected keys {expected}" in str(refused.value)


def test_an_extra_state_key_comes_first_at_its_module_as_in_torch() -> None:
    """PyTorch lists a module's ``_extra_state`` key (unexpected where the module keeps no
    extra state, as minidl's modules keep none) before that module's other unexpected keys,
    whatever the state dict's order (it checks that key apart, before the others); the state
    dict's order alone put ``'1._extra_state'`` after ``'1.extra'``. A key of that name at a
    path that reaches no module (``'5._extra_state'``) stays in the state dict's order."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    twin = tnn.Sequential(tnn.Linear(2, 2), tnn.Sequential(tnn.Linear(2, 2), tnn.BatchNorm1d(2)))
    extra = ["extra", "1.extra", "1._extra_state", "5._extra_state", "_extra_state"]
    extra += ["1.1.x", "1.1._extra_state", "0._extra_state.x", "0._extra_state"]
    state = {**{name: torch.zeros(1) for name in extra}, **model.state_dict()}
    torch_state = {**{name: torch.zeros(1) for name in extra}, **twin.state_dict()}
    expected = twin.load_state_dict(torch_state, strict=False).unexpected_keys
    assert expected == [
        "_extra_state",
        "extra",
        "5._extra_state",
        "0._extra_state",
        "0._extra_state.x",
        "1._extra_state",
        "1.extra",
        "1.1._extra_state",
        "1.1.x",
    ]
    assert model.load_state_dict(state, strict=False) == ([], expected)
    with pytest.raises(KeyError) as refused:
        model.load_state_dict(state)
    assert f"unexpected keys {expected}" in str(refused.value)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (torch.zeros(3, 3), ValueError, r"entry '2\.weight' has shape \(3, 3\), expected \(2, 2\)"),
        (torch.zeros(2, 2, dtype=torch.int64), TypeError, r"entry '2\.weight' must be a floating"),
        ([[0.0, 0.0], [0.0, 0.0]], TypeError, r"entry '2\.weight' must be a floating.*got list"),
    ],
)
def test_a_bad_entry_under_another_name_of_a_tied_tensor_is_named_as_given(
    value: object, error: type[Exception], message: str
) -> None:
    """An entry given only under a tied parameter's second name was refused under the first
    name, one the state dict did not hold."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    model[2].register_parameter("weight", model[0].weight)
    state = {"0.bias": torch.ones(2), "2.weight": value, "2.bias": torch.ones(2)}
    before = model.state_dict()
    with pytest.raises(error, match=r"^Sequential\.load_state_dict: " + message):
        model.load_state_dict(state)  # type: ignore[arg-type]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


# -- PyTorch's constructor arguments -----------------------------------------------------------


def test_identity_takes_any_arguments_and_uses_none_as_torchs() -> None:
    """``torch.nn.Identity(*args, **kwargs)`` ignores its arguments, so that it stands for a layer
    built with the same ones (``Identity(64)`` for ``BatchNorm1d(64)``); minidl's refused them
    with Python's bare TypeError."""
    x = torch.randn(3, 4, dtype=F64)
    mine, theirs = nn.Identity(4, eps=1e-3), tnn.Identity(4, eps=1e-3)
    assert mine(x) is x and theirs(x) is x
    assert mine.backward(x) is x
    assert repr(mine) == repr(theirs) == "Identity()"
    assert list(mine.parameters()) == [] and mine.state_dict() == theirs.state_dict() == {}


@pytest.mark.parametrize(
    ("kind", "value", "words"),
    [
        (
            "parameter",
            torch.zeros(2),
            ["expected a minidl Parameter (or None) for 'extra'", "got torch.Tensor, a PyTorch"],
        ),
        ("buffer", [0.0, 0.0], ["expected a torch.Tensor for 'extra'", "got list"]),
        ("module", torch.zeros(2), ["expected a minidl Module for 'extra'", "got Tensor"]),
    ],
)
def test_a_value_of_another_kind_is_refused_and_changes_nothing(
    kind: str, value: object, words: list[str]
) -> None:
    """A good name with a value that is no Parameter, tensor or Module is refused by type, as
    PyTorch's register methods refuse it (the oracle), naming the module, the method, the name
    and what was given, and nothing is registered."""
    module = _Custom()
    before = _snapshot(module)
    with pytest.raises(TypeError) as caught:
        getattr(module, f"register_{kind}")("extra", value)
    message = str(caught.value)
    for word in [f"_Custom.register_{kind}:", *words]:
        assert word in message, (word, message)
    assert _snapshot(module) == before
    assert not hasattr(module, "extra")
    torch_method = {"parameter": "register_parameter", "buffer": "register_buffer"}
    with pytest.raises(TypeError):
        getattr(tnn.Linear(2, 2), torch_method.get(kind, "add_module"))("extra", value)


@pytest.mark.parametrize(("name", "what"), [("forward", "a method"), ("training", "an attribute")])
def test_a_name_of_a_method_or_attribute_is_refused_in_words(name: str, what: str) -> None:
    """The refusal read "is already a attribute of Linear"."""
    layer = nn.Linear(2, 2)
    with pytest.raises(KeyError) as info:
        layer.register_buffer(name, torch.zeros(2))
    assert str(info.value) == repr(
        f"Linear.register_buffer: {name!r} is already {what} of Linear (a buffer there would "
        "hide it, or be hidden); expected another name"
    )
