"""Models and optimizers through pickle and ``copy.deepcopy``.

A flat model's parameters are views of one buffer. Pickled as they are, each view would take
the whole buffer along (and come back holding a copy of it); an optimizer's views of the layout
would too, and its count of parameter replacements means nothing in another process. So each
tensor goes as a compact copy, a ``Sequential`` makes its parameters one buffer again when it is
loaded, and an optimizer finds its layout again at its next step.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from minidl import nn, optim
from minidl.nn.flat import flat_buffer
from tests.helpers import F64


def _flat(model: nn.Module) -> bool:
    parameters = model.parameters()
    return (
        flat_buffer([p.data for p in parameters]) is not None
        and flat_buffer([p.grad for p in parameters]) is not None
    )


def _step(model: nn.Module, optimizer: optim.Optimizer, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 2, dtype=F64, generator=generator)
    target = torch.randint(0, 2, (8,), generator=generator)
    criterion = nn.CrossEntropyLoss()
    optimizer.zero_grad()
    criterion(model(x), target)
    model.backward(criterion.backward())
    optimizer.step()


def _trained() -> tuple[nn.Sequential, optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.mlp((2, 64, 64, 2), "relu", dtype=F64)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _step(model, optimizer, 0)
    return model, optimizer


@pytest.mark.parametrize("copier", ["pickle", "deepcopy"])
def test_a_model_and_its_optimizer_go_on_training_as_the_original(copier: str) -> None:
    """The copies train on, bit for bit as the original does, from one flat buffer; the
    original is left as it was."""
    model, optimizer = _trained()
    if copier == "pickle":
        copied_model, copied_optimizer = pickle.loads(pickle.dumps((model, optimizer)))
    else:
        copied_model, copied_optimizer = copy.deepcopy((model, optimizer))
    assert _flat(copied_model)
    for seed in (1, 2, 3):
        _step(model, optimizer, seed)
        _step(copied_model, copied_optimizer, seed)
    assert copied_optimizer._flat is not None  # the one-operation update, found again
    for mine, theirs in zip(model.parameters(), copied_model.parameters(), strict=True):
        assert torch.equal(mine.data, theirs.data)
        assert mine.data.untyped_storage().data_ptr() != theirs.data.untyped_storage().data_ptr()
    for name, state in optimizer.state.items():
        assert torch.equal(state, copied_optimizer.state[name])


def test_an_optimizer_loaded_in_another_process_updates_its_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An optimizer remembers the count of parameter replacements at which it last found its
    layout. Loaded where the count happens to have that value (another process), it used to
    skip the search and update (and zero) the copy of the buffer its pickled views held."""
    model, optimizer = _trained()
    seen = optimizer._replacements_seen
    copied_model, copied_optimizer = pickle.loads(pickle.dumps((model, optimizer)))
    monkeypatch.setattr(nn.Parameter, "replacements", seen)
    before = [p.data.clone() for p in copied_model.parameters()]
    _step(copied_model, copied_optimizer, 1)
    _step(model, optimizer, 1)
    for old, new, expected in zip(
        before, copied_model.parameters(), model.parameters(), strict=True
    ):
        assert not torch.equal(old, new.data)
        assert torch.equal(new.data, expected.data)


def test_a_pickled_model_holds_its_parameters_once() -> None:
    """Values and gradients once each (plus small caches), not the whole buffer per parameter;
    a layer copied out of a flat model takes its own parameters only."""
    model, _ = _trained()
    parameter_bytes = 8 * model.num_parameters()
    assert len(pickle.dumps(model)) < 2.5 * parameter_bytes
    layer = model[2]
    assert isinstance(layer, nn.Linear)
    copied = copy.deepcopy(layer)
    for parameter in copied.parameters():
        assert parameter.data.untyped_storage().nbytes() == 8 * parameter.numel()
    x = torch.randn(3, 64, dtype=F64)
    assert torch.equal(copied(x), layer(x))
    assert len(pickle.dumps(layer)) < 2.5 * 8 * layer.num_parameters() + 4096


def test_a_pickled_model_keeps_its_buffers_and_modes() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Dropout(0.5), nn.Linear(3, 2))
    model(torch.randn(6, 2))
    model[2].eval()
    copied = pickle.loads(pickle.dumps(model))
    assert [m.training for m in copied] == [True, True, False, True]
    for (name, mine), (_, theirs) in zip(
        model.state_dict().items(), copied.state_dict().items(), strict=True
    ):
        assert torch.equal(mine, theirs), name
    assert copied[1].running_mean is copied[1]._buffers["running_mean"]
    copied.eval()
    model.eval()
    x = torch.randn(4, 2)
    assert torch.equal(copied(x), model(x))
