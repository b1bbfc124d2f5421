"""``Module.get_submodule``, ``get_parameter`` and ``get_buffer`` against ``torch.nn.Module``'s.

The same structure is built in both (nested containers, a child registered under two names, a
parameter and a buffer of the module's own): every path that the traversals give leads to the
object itself in both, and every path that PyTorch refuses, minidl refuses with the same
exception type and PyTorch's words, naming the method, the path and the module.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as tnn

from minidl import nn
from minidl.nn.module import Module
from minidl.nn.parameter import Parameter

METHODS = ("get_submodule", "get_parameter", "get_buffer")


def _pair() -> tuple[Module, tnn.Module]:
    """One structure in minidl and in PyTorch: a module with a parameter and a buffer of its
    own, a nested ``Sequential`` (with a batch norm), and a ``Linear`` registered as ``head``
    and again as ``alias``."""
    ours, theirs = Module(), tnn.Module()
    ours.register_parameter("scale", Parameter(torch.ones(2)))
    theirs.register_parameter("scale", tnn.Parameter(torch.ones(2)))
    ours.register_buffer("count", torch.zeros(1))
    theirs.register_buffer("count", torch.zeros(1))
    ours.register_module(
        "body",
        nn.Sequential(
            nn.Linear(2, 3), nn.Tanh(), nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
        ),
    )
    theirs.add_module(
        "body",
        tnn.Sequential(
            tnn.Linear(2, 3), tnn.Tanh(), tnn.Sequential(tnn.Linear(3, 2), tnn.BatchNorm1d(2))
        ),
    )
    head, thead = nn.Linear(2, 2), tnn.Linear(2, 2)
    for name in ("head", "alias"):
        ours.register_module(name, head)
        theirs.add_module(name, thead)
    return ours, theirs


def test_every_path_leads_to_the_object_itself_as_in_torch() -> None:
    ours, theirs = _pair()
    modules = list(ours.named_modules(remove_duplicate=False))
    assert [path for path, _ in modules] == [
        path for path, _ in theirs.named_modules(remove_duplicate=False)
    ]
    for path, module in modules:
        assert ours.get_submodule(path) is module
        assert type(ours.get_submodule(path)).__name__ == type(theirs.get_submodule(path)).__name__
    assert ours.get_submodule("") is ours
    assert ours.get_submodule("alias") is ours.get_submodule("head")
    parameters = list(ours.named_parameters(remove_duplicate=False))
    assert [name for name, _ in parameters] == [
        name for name, _ in theirs.named_parameters(remove_duplicate=False)
    ]
    for name, parameter in parameters:
        assert ours.get_parameter(name) is parameter
        assert ours.get_parameter(name).data.shape == theirs.get_parameter(name).shape
    buffers = list(ours.named_buffers(remove_duplicate=False))
    assert [name for name, _ in buffers] == [
        name for name, _ in theirs.named_buffers(remove_duplicate=False)
    ]
    for name, buffer in buffers:
        assert ours.get_buffer(name) is buffer
        assert ours.get_buffer(name).shape == theirs.get_buffer(name).shape
    # From a module inside, the paths are relative to it, as in PyTorch.
    body = ours.get_submodule("body")
    assert body.get_buffer("2.1.running_var") is ours.get_buffer("body.2.1.running_var")
    assert body.get_parameter("0.bias") is ours.get_parameter("body.0.bias")


# Paths that PyTorch refuses (or takes) for some of the three methods: not found, through or at
# an attribute of another kind (a parameter, a buffer, a child, a method, a flag), empty names.
TARGETS = [
    "",
    "scale",
    "count",
    "body",
    "body.0",
    "body.2.1",
    "head",
    "body.foo",
    "body.0.foo",
    "foo.0",
    "body.0.weight",
    "body.0.weight.foo",
    "body.2.1.running_mean",
    "body.2.1.num_batches_tracked",
    "body.1.forward",
    "training",
    "body.0.training",
    "body.0.in_features",
    "_modules",
    "body..0",
    "body.",
    ".body",
    ".scale",
    "alias.bias",
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("target", TARGETS)
def test_a_path_is_taken_or_refused_as_in_torch(method: str, target: str) -> None:
    """PyTorch's answer is the oracle: the same object's place where it finds one, and where it
    raises, an AttributeError whose message holds PyTorch's ("Linear has no attribute `foo`",
    "`weight` is not an nn.Module") and names the method, the path and the module reached."""
    ours, theirs = _pair()
    try:
        expected = getattr(theirs, method)(target)
    except AttributeError as error:
        with pytest.raises(AttributeError) as refused:
            getattr(ours, method)(target)
        message = str(refused.value)
        assert str(error) in message
        assert message.startswith(f"Module.{method}: {target!r} names no ")
        return
    # The object at PyTorch's answer's place (its first name) is minidl's answer.
    walk = {
        "get_submodule": "named_modules",
        "get_parameter": "named_parameters",
        "get_buffer": "named_buffers",
    }[method]
    place = next(
        name for name, value in getattr(theirs, walk)(remove_duplicate=False) if value is expected
    )
    assert getattr(ours, method)(target) is dict(getattr(ours, walk)(remove_duplicate=False))[place]


@pytest.mark.parametrize(
    ("method", "target", "message"),
    [
        (
            "get_submodule",
            "body.0.foo",
            "Module.get_submodule: 'body.0.foo' names no module: Linear has no attribute `foo` "
            "(the Linear at 'body.0', whose children are: none)",
        ),
        (
            "get_parameter",
            "body.2.1.running_mean",
            "Module.get_parameter: 'body.2.1.running_mean' names no parameter: `running_mean` is "
            "not an nn.Parameter: it is a buffer of BatchNorm1d (the BatchNorm1d at 'body.2.1', "
            "whose parameters are: 'weight', 'bias')",
        ),
        (
            "get_buffer",
            "body.0",
            "Module.get_buffer: 'body.0' names no buffer: `0` is not a buffer: it is a child "
            "module of Sequential (the Sequential at 'body', whose buffers are: none)",
        ),
        (
            "get_submodule",
            "foo.0",
            "Module.get_submodule: 'foo.0' names no module: Module has no attribute `foo` (this "
            "Module, whose children are: 'body', 'head', 'alias')",
        ),
    ],
)
def test_a_refusal_names_where_the_path_stops_and_what_is_there(
    method: str, target: str, message: str
) -> None:
    ours, _ = _pair()
    with pytest.raises(AttributeError) as refused:
        getattr(ours, method)(target)
    assert str(refused.value) == message


def test_what_is_set_as_a_plain_attribute_is_not_found_and_said_to_be_unregistered() -> None:
    """minidl does not register what is assigned as an attribute (PyTorch does): such a module,
    parameter or tensor is in no traversal or state dict, and not found either, with the
    register method named; a registered parameter or buffer whose attribute was set to another
    object since is found as registered (what ``parameters()`` and ``state_dict()`` see)."""
    ours, _ = _pair()
    ours.extra = nn.Linear(2, 2)  # type: ignore[attr-defined]
    ours.loose = Parameter(torch.zeros(2))  # type: ignore[attr-defined]
    ours.table = torch.zeros(2)  # type: ignore[attr-defined]
    for method, target, words in [
        ("get_submodule", "extra", "it is a Linear not registered (register_module) of Module"),
        ("get_submodule", "extra.weight", "it is a Linear not registered (register_module)"),
        ("get_parameter", "loose", "it is a Parameter not registered (register_parameter)"),
        ("get_buffer", "table", "it is a tensor not registered (register_buffer)"),
    ]:
        with pytest.raises(AttributeError, match=rf"^Module\.{method}: {target!r} names no"):
            getattr(ours, method)(target)
        with pytest.raises(AttributeError) as refused:
            getattr(ours, method)(target)
        assert words in str(refused.value)
    linear = ours.get_submodule("head")
    registered = linear.weight
    linear.weight = Parameter(torch.zeros(2, 2))  # type: ignore[assignment]
    assert ours.get_parameter("head.weight") is registered is next(linear.parameters())
    norm = ours.get_submodule("body.2.1")
    registered_buffer = norm.running_mean
    norm.running_mean = torch.ones(2)  # type: ignore[assignment]
    assert ours.get_buffer("body.2.1.running_mean") is registered_buffer
    assert dict(ours.named_buffers())["body.2.1.running_mean"] is registered_buffer


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("target", [0, None, ["body"], b"body"])
def test_a_target_that_is_not_a_str_is_refused(method: str, target: object) -> None:
    ours, _ = _pair()
    with pytest.raises(TypeError, match=rf"^Module\.{method}: target must be a str"):
        getattr(ours, method)(target)
