"""Every hyper-parameter that minidl and PyTorch name alike has PyTorch's default, but for the
deliberate differences that docs/pytorch.md lists; a default changed by mistake fails here."""

from __future__ import annotations

import inspect

import pytest
import torch

from minidl import nn, optim

PAIRS: list[tuple[type, type]] = [
    (nn.Linear, torch.nn.Linear),
    (nn.BatchNorm1d, torch.nn.BatchNorm1d),
    (nn.Dropout, torch.nn.Dropout),
    (nn.ELU, torch.nn.ELU),
    (nn.LeakyReLU, torch.nn.LeakyReLU),
    (nn.GELU, torch.nn.GELU),
    (nn.Softmax, torch.nn.Softmax),
    (nn.LogSoftmax, torch.nn.LogSoftmax),
    (nn.MSELoss, torch.nn.MSELoss),
    (nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss),
    (nn.NLLLoss, torch.nn.NLLLoss),
    (nn.L1Loss, torch.nn.L1Loss),
    (nn.HuberLoss, torch.nn.HuberLoss),
    (nn.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss),
    (optim.SGD, torch.optim.SGD),
    (optim.Adam, torch.optim.Adam),
    (optim.AdamW, torch.optim.AdamW),
    (optim.RMSprop, torch.optim.RMSprop),
    (optim.Adagrad, torch.optim.Adagrad),
    (optim.Adadelta, torch.optim.Adadelta),
]

# (class, argument): (minidl's default, PyTorch's), each in docs/pytorch.md's table.
DELIBERATE: dict[tuple[str, str], tuple[object, object]] = {
    ("MSELoss", "reduction"): ("paper", "mean"),
    ("Softmax", "dim"): (1, None),
    ("LogSoftmax", "dim"): (1, None),
    ("SGD", "lr"): (inspect.Parameter.empty, 1e-3),
}

# Defaults that the tests of each module compare with PyTorch's computations, named here so
# that a pair losing one of them (a renamed argument) fails too.
EXPECTED_SHARED = {
    "Linear": {"bias"},
    "BatchNorm1d": {"eps", "momentum", "affine"},
    "Dropout": {"p"},
    "ELU": {"alpha"},
    "LeakyReLU": {"negative_slope"},
    "GELU": {"approximate"},
    "HuberLoss": {"delta", "reduction"},
    "Adam": {"lr", "betas", "eps", "weight_decay"},
    "AdamW": {"lr", "betas", "eps", "weight_decay"},
    "RMSprop": {"lr", "alpha", "eps", "weight_decay", "momentum", "centered"},
    "Adagrad": {"lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"},
    "Adadelta": {"lr", "rho", "eps"},
    "SGD": {"momentum", "weight_decay", "nesterov"},
}


def _defaults(cls: type) -> dict[str, object]:
    return {
        name: parameter.default
        for name, parameter in inspect.signature(cls).parameters.items()
        if name not in ("params", "device", "dtype", "generator")
    }


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=lambda cls: cls.__name__)
def test_defaults_are_pytorchs_but_for_the_documented_differences(ours: type, theirs: type) -> None:
    mine, torchs = _defaults(ours), _defaults(theirs)
    name = ours.__name__
    shared = set(mine) & set(torchs)
    assert EXPECTED_SHARED.get(name, set()) <= {
        argument for argument in shared if mine[argument] is not inspect.Parameter.empty
    }
    for argument in sorted(shared):
        expected = DELIBERATE.get((name, argument))
        if expected is not None:
            assert (mine[argument], torchs[argument]) == expected, (name, argument)
        else:
            assert mine[argument] == torchs[argument], (name, argument)


def test_every_deliberate_difference_is_in_the_docs() -> None:
    from pathlib import Path

    table = (Path(__file__).parent.parent / "docs" / "pytorch.md").read_text()
    table = table[table.index("## What is deliberately different") :]
    for name, argument in DELIBERATE:
        rows = [line for line in table.splitlines() if line.startswith("|") and name in line]
        assert any(argument in row for row in rows), (name, argument)
