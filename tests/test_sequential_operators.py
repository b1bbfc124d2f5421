"""``Sequential``'s ``+`` and ``*`` against ``torch.nn.Sequential``'s, and ``+=`` and ``*=`` refused.

The same models are built in both frameworks. ``model + other`` is a new ``Sequential`` of the
module objects themselves, numbered from ``"0"``, in training mode, as PyTorch's; ``model * 1``
and ``1 * model`` too. PyTorch's ``model * 2`` repeats the module objects, which a minidl
``Sequential`` refuses (each place keeps its own cache for backward), saying what to build.
What PyTorch refuses, minidl refuses with the same exception type. ``+=`` and ``*=``, which
change PyTorch's in place, are refused as ``append`` and ``extend`` are, changing nothing.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

import pytest
import torch
import torch.nn as tnn

from minidl import nn
from minidl.interop import to_torch
from tests.helpers import F64


def _pair() -> tuple[tuple[nn.Sequential, nn.Sequential], tuple[tnn.Sequential, tnn.Sequential]]:
    """Two models in minidl, and their ``torch.nn`` twins."""
    torch.manual_seed(0)
    first = nn.Sequential(nn.Linear(2, 3), nn.Tanh()).to(F64)
    second = nn.Sequential(nn.Linear(3, 2), nn.ReLU()).to(F64)
    return (first, second), (to_torch(first), to_torch(second))


def _assert_like(ours: nn.Sequential, theirs: tnn.Sequential) -> None:
    """The same names and modules (by ``repr``) and the same training flag."""
    assert list(ours._modules) == list(theirs._modules)
    assert repr(ours) == repr(theirs)
    assert ours.training == theirs.training


def test_a_sum_is_a_new_sequential_of_the_same_modules_as_in_torch() -> None:
    (first, second), (tfirst, tsecond) = _pair()
    first.eval()
    tfirst.eval()
    parameters = [p.data for p in first.parameters()]
    total, ttotal = first + second, tfirst + tsecond
    _assert_like(total, ttotal)
    assert total.training and ttotal.training  # (a new Sequential; its modules keep their mode)
    assert [m.training for m in total] == [m.training for m in ttotal] == [False, False, True, True]
    assert all(mine is theirs for mine, theirs in zip(total, [*first, *second], strict=True))
    assert all(mine is theirs for mine, theirs in zip(ttotal, [*tfirst, *tsecond], strict=True))
    assert len(first) == len(second) == 2 and list(first._modules) == ["0", "1"]
    x = torch.randn(4, 2, dtype=F64)
    assert torch.equal(total(x), second(first(x)))
    torch.testing.assert_close(total(x), ttotal(x).detach(), rtol=1e-12, atol=1e-12)
    # (the parameters are the same objects, now in the sum's flat buffer; the values are kept)
    assert all(torch.equal(p.data, v) for p, v in zip(first.parameters(), parameters, strict=True))


def test_a_sum_of_slices_is_numbered_from_zero_and_in_order_moves_nothing() -> None:
    (first, second), _ = _pair()
    model = nn.Sequential(*first, *second)
    twin = to_torch(model)
    pointers = [p.data.data_ptr() for p in model.parameters()]
    _assert_like(model[:2] + model[2:], twin[:2] + twin[2:])
    assert [p.data.data_ptr() for p in model.parameters()] == pointers  # (they tile in order)
    _assert_like(model[1:] + model[:1], twin[1:] + twin[:1])


@pytest.mark.parametrize(
    "other",
    [lambda: nn.Linear(2, 2), lambda: [nn.Linear(2, 2)], lambda: 1, lambda: None],
    ids=["a module", "a list", "an int", "None"],
)
def test_a_sum_with_what_is_not_a_sequential_is_refused_as_in_torch(
    other: Callable[[], object],
) -> None:
    (first, _), (tfirst, _) = _pair()
    given = other()
    with pytest.raises(ValueError, match="add operator supports only objects of Sequential"):
        tfirst + (to_torch(given) if isinstance(given, nn.Module) else given)
    with pytest.raises(ValueError, match=r"^Sequential: \+ takes a Sequential, got ") as refused:
        first + given
    assert type(given).__name__ in str(refused.value)
    assert len(first) == 2


def test_a_sum_names_a_pytorch_sequential_and_the_fix_for_one_module() -> None:
    (first, _), (tfirst, _) = _pair()
    with pytest.raises(ValueError) as refused:
        first + tfirst  # type: ignore[operator]
    assert str(refused.value) == (
        "Sequential: + takes a Sequential, got Sequential, a PyTorch module "
        "(minidl.interop.from_torch converts one)"
    )
    with pytest.raises(ValueError) as refused:
        first + nn.Tanh()  # type: ignore[operator]
    assert str(refused.value) == (
        "Sequential: + takes a Sequential, got Tanh; to add one module, build "
        "Sequential(*model, module)"
    )


def test_a_sum_of_a_model_with_itself_is_refused_as_one_module_at_two_places() -> None:
    """PyTorch's ``model + model`` shares the modules; minidl refuses a module at two places of
    one ``Sequential``, as ``Sequential(*model, *model)``, naming ``+`` and the module by its
    path in each model (not by its numbers in the sum, which the caller never sees)."""
    (first, _), _ = _pair()
    with pytest.raises(
        ValueError,
        match=r"^Sequential: model \+ other would put the Linear at '0' of other, the same object "
        r"as the one at '0' of model, at two places; .* model \+ copy\.deepcopy\(other\)$",
    ):
        first + first


def test_a_sum_with_a_module_of_the_model_inside_names_its_paths_and_builds_nothing() -> None:
    """A slice added to its model: the shared module is named by its path in each (``'1'`` in
    both, as their reprs show, where the sum would number it ``'0'`` and ``'2'``); a module
    nested in ``other`` by its dotted path. Neither model changes (its flat buffer included)."""
    (first, second), _ = _pair()
    nested = nn.Sequential(nn.Sequential(nn.Linear(2, 2).to(F64), first[0]))
    data = [parameter.data for parameter in first.parameters()]
    with pytest.raises(
        ValueError,
        match=r"^Sequential: model \+ other would put the Tanh at '1' of other, the same object "
        r"as the one at '1' of model, at two places",
    ):
        first[1:] + first
    with pytest.raises(
        ValueError, match=r"the Linear at '0\.1' of other, the same object as the one at '0' of"
    ):
        first + nested
    assert all(p.data is d for p, d in zip(first.parameters(), data, strict=True))
    assert len(first) == 2 and len(second) == 2


@pytest.mark.parametrize("left", [False, True], ids=["model * 1", "1 * model"])
def test_a_product_by_one_is_a_new_sequential_of_the_same_modules_as_in_torch(left: bool) -> None:
    (first, _), (tfirst, _) = _pair()
    first.eval()
    tfirst.eval()
    ours = 1 * first if left else first * 1
    theirs = 1 * tfirst if left else tfirst * 1
    _assert_like(ours, theirs)
    assert ours is not first and all(m is n for m, n in zip(ours, first, strict=True))
    _assert_like(nn.Sequential() * 3, tnn.Sequential() * 3)
    _assert_like(3 * nn.Sequential(), 3 * tnn.Sequential())


@pytest.mark.parametrize(
    ("factor", "error"),
    [(0, ValueError), (-1, ValueError), (2.0, TypeError), ("2", TypeError), (None, TypeError)],
)
def test_a_bad_factor_is_refused_as_in_torch(factor: object, error: type[Exception]) -> None:
    (first, _), (tfirst, _) = _pair()
    with pytest.raises(error):
        tfirst * factor  # type: ignore[operator]
    with pytest.raises(error, match=r"^Sequential: the factor of model \* factor must be an "):
        first * factor  # type: ignore[operator]
    with pytest.raises(error, match=r"^Sequential: the factor of model \* factor must be an "):
        factor * first  # type: ignore[operator]


def test_a_bool_factor_is_refused() -> None:
    """PyTorch takes ``model * True`` as ``model * 1``; minidl takes no bool as a count."""
    (first, _), _ = _pair()
    with pytest.raises(TypeError, match=r"must be an integer >= 1, got True"):
        first * True


@pytest.mark.parametrize("factor", [2, 3])
def test_a_product_by_more_than_one_is_refused_naming_what_to_build(factor: int) -> None:
    """PyTorch's repeats the module objects (they share one cache in minidl); the message says
    to build new modules, and the model it names builds and runs."""
    (first, _), (tfirst, _) = _pair()
    assert (tfirst * factor)[0] is (tfirst * factor)[2]
    with pytest.raises(ValueError) as refused:
        first * factor
    assert str(refused.value) == (
        f"Sequential: model * {factor} would put each of its 2 modules at several places "
        "(PyTorch's repeats the module objects themselves); a module keeps what its last "
        "forward computed for its backward, so each place needs its own: build the repeats "
        "with new modules, Sequential(*model, *copy.deepcopy(model)) for weights of their own"
    )
    square = nn.Sequential(nn.Linear(2, 2), nn.Tanh()).to(F64)
    repeated = nn.Sequential(*square, *copy.deepcopy(square))
    assert len(repeated) == 4
    x = torch.randn(3, 2, dtype=F64)
    assert torch.equal(repeated(x), square(square(x)))


@pytest.mark.parametrize(
    ("operation", "given", "instead"),
    [
        ("add", "a Sequential to add in place (+=)", "model + other"),
        (
            "mul",
            "2 to repeat it by in place (*=)",
            "Sequential(*model, *copy.deepcopy(model)) for two places with modules of their own",
        ),
    ],
)
def test_in_place_operators_are_refused_and_change_nothing(
    operation: str, given: str, instead: str
) -> None:
    """PyTorch's ``+=`` and ``*=`` change the model in place; minidl's modules are fixed, as
    for ``append`` and ``extend``: refused, the model and the name bound to it unchanged (a
    ``+=`` falling back to ``+`` would rebind the name to a new model, and a parent module
    holding the old one would go on running it)."""
    (first, second), _ = _pair()
    model, layers = first, list(first)
    with pytest.raises(TypeError) as refused:
        if operation == "add":
            model += second
        else:
            model *= 2
    assert str(refused.value) == (
        "Sequential: a Sequential's modules are fixed when it is built (its forward runs them "
        f"in that order, and its parameters are one flat buffer made then), got {given}; build "
        f"a new Sequential with every module in the order data flows through them, {instead}"
    )
    assert model is first and list(model) == layers and list(model._modules) == ["0", "1"]


@pytest.mark.parametrize(
    ("change", "given"),
    [
        (lambda model: model.__iadd__(1), "an int to add in place (+=)"),
        (lambda model: model.__iadd__(nn.Identity()), "an Identity to add in place (+=)"),
        (lambda model: model.append(nn.ELU()), "an ELU to append"),
        (lambda model: model.extend(()), "a tuple to extend it with"),
        (lambda model: model.insert(0, nn.Identity()), "an Identity to insert at 0"),
        (lambda model: model.__setitem__(0, nn.ELU()), "an ELU to put at model[0]"),
        (lambda model: model.append(nn.Tanh()), "a Tanh to append"),
    ],
)
def test_refused_changes_name_what_was_given_with_its_article(
    change: Callable[[nn.Sequential], object], given: str
) -> None:
    """The refusals of the changes in place name what was given after its article ("an int",
    "an Identity", not "a int"), the model unchanged."""
    (first, _), _ = _pair()
    layers = list(first)
    with pytest.raises(TypeError, match=re.escape(f", got {given}; build a new Sequential")):
        change(first)
    assert list(first) == layers
