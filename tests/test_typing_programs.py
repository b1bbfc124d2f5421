"""The typed programs of ``tests/typing``: what a strictly typed program of one's own sees of
minidl's types.

``make typecheck`` checks them with ``mypy --strict`` (each ``assert_type`` states the type that
mypy must give an expression, each ``# type: ignore[code]`` a mistake that mypy must find).
Here each program runs, with ``assert_type`` checking that the value has the type stated
(``isinstance``, through unions, ``list``, ``dict`` and ``tuple`` items): a type that mypy is
told and that the value does not have (an overload returning ``torch.nn.Sequential`` for a
conversion that returns another module) fails here.
"""

from __future__ import annotations

import collections.abc
import runpy
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
import typing_extensions

from minidl.optim import SGD, Hyperparameter

PROGRAMS = sorted((Path(__file__).resolve().parent / "typing").glob("*.py"))

T = TypeVar("T")


def conforms(value: object, form: object) -> bool:
    """Whether ``value`` has the type ``form`` (a class, ``None``, a union, or ``list``,
    ``dict``, ``tuple`` or ``Iterator`` of such types; an iterator's items are not read, nor
    the type argument of another generic class, ``Hyperparameter[float]``)."""
    if form is Any:
        return True
    if form is None or form is type(None):
        return value is None
    if form is float:  # (an int is a float to a type checker)
        return isinstance(value, int | float) and not isinstance(value, bool)
    origin, arguments = typing.get_origin(form), typing.get_args(form)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, argument) for argument in arguments)
    if origin is None:
        assert isinstance(form, type), f"no check for {form!r}"
        return isinstance(value, form)
    if origin is list:
        return isinstance(value, list) and all(conforms(item, arguments[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            conforms(key, arguments[0]) and conforms(item, arguments[1])
            for key, item in value.items()
        )
    if origin is tuple:
        return (
            isinstance(value, tuple)
            and len(value) == len(arguments)
            and all(
                conforms(item, argument) for item, argument in zip(value, arguments, strict=True)
            )
        )
    if origin is collections.abc.Iterator:
        return isinstance(value, collections.abc.Iterator)
    assert isinstance(origin, type), f"no check for {form!r}"
    return isinstance(value, origin)  # (a class of its own, generic: its argument not checked)


def checked_assert_type(value: T, form: object) -> T:
    assert conforms(value, form), f"{value!r} is not of the type {form!r} that mypy is told"
    return value


def test_conforms() -> None:
    """The check itself: it refuses what does not have the type."""
    tensor = torch.zeros(1)
    assert conforms(tensor, torch.Tensor) and not conforms(tensor, torch.nn.Module)
    assert conforms(None, torch.Tensor | None) and not conforms(1, torch.Tensor | None)
    assert conforms(1, float) and not conforms(True, float) and not conforms("1", float)
    assert conforms([1.0], list[float]) and not conforms([1.0, "a"], list[float])
    assert conforms({"a": tensor}, dict[str, torch.Tensor])
    assert not conforms({"a": 1}, dict[str, torch.Tensor])
    assert conforms((0.9, 0.99), tuple[float, float]) and not conforms((0.9,), tuple[float, float])
    assert conforms(iter([]), collections.abc.Iterator[int]) and not conforms([], typing.Iterator)
    assert conforms(SGD.momentum, Hyperparameter[float]) and not conforms(
        0.9, Hyperparameter[float]
    )


@pytest.mark.parametrize("program", PROGRAMS, ids=[program.stem for program in PROGRAMS])
def test_program(program: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(typing_extensions, "assert_type", checked_assert_type)
    runpy.run_path(str(program), run_name="__main__")


def test_programs_found() -> None:
    assert [program.stem for program in PROGRAMS] == [
        "fit_and_checkpoints",
        "own_module",
        "training_loop",
    ]
