"""Write the pickles of tests/data/ that test_earlier_pickles loads: modules pickled by minidl as
of commit 20ee7a9, the last before ``inplace``, ``track_running_stats``, SELU's ``scale`` and the
losses' PyTorch options (``weight``, ``ignore_index``, ...) were refused when set. Then each was
a plain attribute that a user could set and that the computation ignored. Run with that version::

    git worktree add /tmp/minidl-20ee7a9 20ee7a9
    PYTHONPATH=/tmp/minidl-20ee7a9/src .venv/bin/python tests/data/make_pickles_20ee7a9.py

It writes ``modules_20ee7a9.pickle`` (pickle protocol 4): two sets of modules whose plain
attributes hold the values that they compute with anyway (``taken``) or other values, which they
ignored (``ignored``), with what each computed on the same inputs, each set pickled apart (the
bytes of its pickle), to be loaded on its own; and ``model_20ee7a9.pt``
(``torch.save``): a network, its loss and an SGD optimizer with plain attributes of the second
kind, with the output, loss and gradients of a step and the parameters after it (the modules
are pickled as built, before the forward whose results are kept: deep copies, without caches);
and ``checkpoint_20ee7a9.pickle``: a ``Checkpoint`` as ``read_checkpoint`` read it (a frozen
dataclass then, pickled by its fields), with its model's parameters.
"""

from __future__ import annotations

import copy
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from minidl import nn, optim
from minidl.checkpoint import read_checkpoint, save_checkpoint

HERE = Path(__file__).resolve().parent
F64 = torch.float64


def _modules(ignored: bool) -> dict[str, Any]:
    """One module of each class concerned, its plain attributes set (before: ignored)."""
    modules: dict[str, Any] = {
        "ReLU": nn.ReLU(),
        "LeakyReLU": nn.LeakyReLU(0.2),
        "ELU": nn.ELU(0.5),
        "SELU": nn.SELU(),
        "SiLU": nn.SiLU(),
        "Dropout": nn.Dropout(0.25),
        "BatchNorm1d": nn.BatchNorm1d(3, dtype=F64),
        "CrossEntropyLoss": nn.CrossEntropyLoss(),
        "NLLLoss": nn.NLLLoss(),
        "BCEWithLogitsLoss": nn.BCEWithLogitsLoss(),
    }
    for name in ("ReLU", "LeakyReLU", "ELU", "SELU", "SiLU", "Dropout"):
        modules[name].inplace = ignored
    modules["SELU"].scale = 2.0 if ignored else 1.0507009873554805
    modules["BatchNorm1d"].track_running_stats = not ignored
    weight = torch.tensor([1.0, 2.0, 3.0], dtype=F64) if ignored else None
    ce, nll, bce = (modules[n] for n in ("CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss"))
    ce.weight, ce.ignore_index, ce.label_smoothing = weight, 1 if ignored else -100, 0.1 * ignored
    nll.weight, nll.ignore_index = weight, 0 if ignored else -100
    bce.weight = torch.tensor([2.0], dtype=F64) if ignored else None
    bce.pos_weight = torch.tensor([3.0], dtype=F64) if ignored else None
    return modules


def _computed(modules: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """What each module computed: the output (the loss) and the input gradient, on the inputs
    of :func:`inputs`; BatchNorm1d's running mean after, Dropout's with the seed 0. As lists of
    floats (``tolist``): a tensor pickled alone takes a kilobyte."""
    x, target, probabilities = inputs()
    computed = {}
    for name, module in modules.items():
        if name == "CrossEntropyLoss":
            out = module(x, target)
        elif name == "NLLLoss":
            out = module(torch.log_softmax(x, dim=1), target)
        elif name == "BCEWithLogitsLoss":
            out = module(x, probabilities)
        else:
            torch.manual_seed(0)
            out = module(x)
        grad = module.backward() if name.endswith("Loss") else module.backward(torch.ones_like(x))
        computed[name] = (out.tolist(), grad.tolist())
    computed["BatchNorm1d"] += (modules["BatchNorm1d"].running_mean.tolist(),)
    return computed


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inputs (kept in the pickle too): a batch of 4 x 3, its classes and probabilities."""
    x = torch.linspace(-2.0, 2.5, 12, dtype=F64).reshape(4, 3)
    return x, torch.tensor([0, 2, 1, 2]), torch.linspace(0.0, 1.0, 12, dtype=F64).reshape(4, 3)


def main() -> None:
    x, target, probabilities = inputs()
    pickled: dict[str, Any] = {"inputs": (x.tolist(), target.tolist(), probabilities.tolist())}
    for kind in ("taken", "ignored"):
        modules = _modules(kind == "ignored")
        unused = copy.deepcopy(modules)  # (pickled without the caches of a forward)
        computed = _computed(modules)
        pickled[kind] = pickle.dumps({"modules": unused, "computed": computed}, protocol=4)
    (HERE / "modules_20ee7a9.pickle").write_bytes(pickle.dumps(pickled, protocol=4))

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(3, 4, dtype=F64), nn.BatchNorm1d(4, dtype=F64), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(4, 3, dtype=F64),
    )  # fmt: skip
    model[1].track_running_stats = False
    model[2].inplace = True
    model[3].inplace = True
    loss = nn.CrossEntropyLoss()
    loss.label_smoothing = 0.1
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    saved: dict[str, Any] = dict(
        zip(("model", "loss", "optimizer"), copy.deepcopy((model, loss, optimizer)), strict=True)
    )  # (saved without the caches of a forward)
    torch.manual_seed(1)
    output = model(x)
    value = loss(output, target)
    model.backward(loss.backward())
    gradients = [p.grad.tolist() for p in model.parameters()]
    optimizer.step()
    saved |= {
        "output": output.tolist(),
        "loss_value": value.item(),
        "gradients": gradients,
        "parameters": [p.data.tolist() for p in model.parameters()],
    }
    torch.save(saved, HERE / "model_20ee7a9.pt")

    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(2, 1, dtype=F64))
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(Path(folder) / "layer.ckpt", layer, epoch=3)
        checkpoint = read_checkpoint(Path(folder) / "layer.ckpt")
    weights = [p.data.tolist() for p in layer.parameters()]
    pickled_checkpoint = {"checkpoint": checkpoint, "parameters": weights}
    (HERE / "checkpoint_20ee7a9.pickle").write_bytes(pickle.dumps(pickled_checkpoint, protocol=4))


if __name__ == "__main__":
    main()
