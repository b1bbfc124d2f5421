"""Losses' and activations' behaviours (HuberLoss, BCEWithLogitsLoss, NLLLoss, Softmax,
LogSoftmax, GELU, SiLU) that hand-made mutants of their sources showed untested: each test
fails with one of those changes applied, against PyTorch in float64, exact expected values or
the documented refusal."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minidl import nn, optim
from minidl.train import fit

F64 = torch.float64
BF16 = torch.bfloat16


def test_huber_in_bfloat16_rounds_each_element_once_from_float32() -> None:
    """A bfloat16 loss computes the difference in float32 (as a float16 one does): with
    ``z = 1 + 2^-7`` and ``t = -2^-9`` the difference 1.009765625 is no bfloat16 (rounded, it
    is 1.0078125), and half its square rounds to 0.51171875, PyTorch's float64 loss rounded
    once; from the rounded difference it was 0.5078125."""
    prediction = torch.tensor([[1 + 2**-7]], dtype=BF16)
    target = torch.tensor([[-(2**-9)]], dtype=BF16)
    expected = F.huber_loss(prediction.double(), target.double(), delta=2.0, reduction="sum")
    got = nn.HuberLoss(delta=2.0, reduction="sum")(prediction, target)
    assert got.dtype is BF16
    assert float(got) == 0.51171875 == float(expected.to(BF16))


def test_huber_pickled_before_it_kept_its_forwards_delta_gives_that_deltas_gradient() -> None:
    """A HuberLoss pickled after a forward by a version without ``_forward_delta`` loads with
    the delta it had as the forward's: backward gives that loss's gradient, clamp(d, -delta,
    delta) / D, not an AttributeError."""
    loss = nn.HuberLoss(delta=0.5)
    prediction = torch.tensor([[0.25, 2.0], [-3.0, 0.0]], dtype=F64)
    loss(prediction, torch.zeros(2, 2, dtype=F64))
    state = pickle.loads(pickle.dumps(loss)).__dict__.copy()
    del state["_forward_delta"]
    old = nn.HuberLoss.__new__(nn.HuberLoss)
    old.__setstate__(state)
    expected = torch.tensor([[0.25, 0.5], [-0.5, 0.0]], dtype=F64) / 4
    assert torch.equal(old.backward(), expected)


@pytest.mark.parametrize("kind", [nn.Softmax, nn.LogSoftmax], ids=lambda kind: kind.__name__)
def test_softmax_dim_takes_a_numpy_integer(kind: type[nn.Softmax] | type[nn.LogSoftmax]) -> None:
    """``dim`` is any integral number, as PyTorch's is (a NumPy integer read from an array or
    a config), kept as 1: ``dim=np.int64(-1)`` makes the module that ``dim=1`` makes, with its
    repr, and computes PyTorch's softmax."""
    module = kind(dim=np.int64(-1))
    assert module.dim == 1 and type(module.dim) is int
    assert repr(module) == f"{kind.__name__}(dim=1)"
    x = torch.tensor([[0.5, -1.0, 2.0]], dtype=F64)
    oracle = torch.log_softmax if kind is nn.LogSoftmax else torch.softmax
    torch.testing.assert_close(module(x), oracle(x, dim=1), rtol=1e-15, atol=0.0)


def test_huber_pickled_before_it_kept_any_dtype_returns_its_differences_dtype() -> None:
    """A HuberLoss pickled by a version that kept neither the forward's dtype nor the
    prediction's (only the difference, of the prediction's dtype then) returns its gradient in
    the difference's dtype, float64 here, not the default dtype."""
    criterion = nn.HuberLoss(delta=0.5)
    prediction = torch.tensor([[0.25, 2.0], [-3.0, 0.125]], dtype=F64)
    criterion(prediction, torch.zeros(2, 2, dtype=F64))
    expected = criterion.backward()
    state = criterion.__getstate__()
    del state["_forward_dtype"]
    state.pop("_prediction_dtype", None)
    old = nn.HuberLoss.__new__(nn.HuberLoss)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    got = old.backward()
    assert got.dtype is F64
    assert torch.equal(got, expected)
    assert torch.equal(expected, torch.tensor([[0.25, 0.5], [-0.5, 0.125]], dtype=F64) / 4)


def test_log_softmax_pickled_before_it_kept_a_16_bit_dtype_gives_its_gradient() -> None:
    """A LogSoftmax pickled after a float64 forward by a version without ``_narrow`` loads and
    backward gives PyTorch's float64 gradient, ``g - p sum(g)``, not an AttributeError."""
    module = nn.LogSoftmax(dim=1)
    x = torch.tensor([[0.5, -1.0, 2.0], [0.0, 3.0, -2.0]], dtype=F64)
    module(x)
    state = module.__getstate__()
    del state["_narrow"]
    old = nn.LogSoftmax.__new__(nn.LogSoftmax)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    grad = torch.tensor([[1.0, -2.0, 0.5], [0.25, 0.0, 1.5]], dtype=F64)
    leaf = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(torch.log_softmax(leaf, dim=1), leaf, grad)
    got = old.backward(grad)
    assert got.dtype is F64
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-15)


def test_bce_with_logits_refusal_names_the_lowest_then_the_highest_target() -> None:
    """A target outside [0, 1] is refused with the interval of its values, lowest first, so
    that the message says where they lie."""
    criterion = nn.BCEWithLogitsLoss()
    target = torch.tensor([[0.5, 2.0], [-0.25, 1.0]], dtype=F64)
    with pytest.raises(ValueError) as caught:
        criterion(torch.zeros(2, 2, dtype=F64), target)
    assert str(caught.value) == (
        "BCEWithLogitsLoss: targets must lie in [0, 1], got values in [-0.25, 2]"
    )


def test_fit_refuses_a_bce_target_out_of_range_in_a_later_batch_before_training() -> None:
    """fit checks every target of y as BCEWithLogitsLoss checks a batch's, before the first
    step: a target of 2 in the last batch is refused with the loss's message, and the model is
    left as it was (checked per batch, the first three batches had trained it)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 1))
    before = [parameter.data.clone() for parameter in model.parameters()]
    x = torch.randn(40, 3)
    y = torch.full((40, 1), 0.5)
    y[35, 0] = 2.0
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"^BCEWithLogitsLoss: targets must lie in \[0, 1\], "):
        fit(model, nn.BCEWithLogitsLoss(), optimizer, x, y, epochs=1, batch_size=10)
    after = [parameter.data for parameter in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))


class _HalvedTargets(nn.BCEWithLogitsLoss):
    """A BCE of one's own that takes targets in [0, 2] and halves them."""

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(prediction, target / 2)


def test_fit_leaves_the_targets_to_a_bce_that_computes_its_own_loss() -> None:
    """A subclass of BCEWithLogitsLoss with a forward of its own decides which targets it
    takes (here [0, 2], halved): fit does not refuse its targets of 2 by the built-in loss's
    range, and trains as the built-in loss does on the halved targets."""
    torch.manual_seed(1)
    x, y = torch.randn(8, 3), torch.rand(8, 1) * 2
    y[0, 0] = 2.0
    model, twin = nn.Sequential(nn.Linear(3, 1)), nn.Sequential(nn.Linear(3, 1))
    twin.load_state_dict(model.state_dict())
    optimizer, expected = (
        optim.SGD(model.parameters(), lr=0.1),
        optim.SGD(twin.parameters(), lr=0.1),
    )
    torch.manual_seed(2)
    fit(model, _HalvedTargets(), optimizer, x, y, epochs=1, batch_size=4)
    torch.manual_seed(2)
    fit(twin, nn.BCEWithLogitsLoss(), expected, x, y / 2, epochs=1, batch_size=4)
    assert optimizer.step_count == expected.step_count == 2
    for got, want in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(got.data, want.data)
