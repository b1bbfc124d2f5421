"""Losses' behaviours that a third round of hand-made mutants of ``loss.py`` and
``cross_entropy.py`` showed untested: each test fails with one of those changes applied (a
refusal's type and exact message, the state a refusal leaves, or a value against PyTorch's)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from minidl import nn

F64 = torch.float64


class _AgreesWithAll(str):
    """A ``str`` whose ``==`` says yes to anything (its characters are ``'avg'``)."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


@pytest.mark.parametrize(
    ("make", "choices"),
    [(nn.CrossEntropyLoss, "'mean' or 'sum'"), (nn.MSELoss, "'paper', 'mean' or 'sum'")],
)
def test_a_refused_reduction_is_named_by_its_value_not_by_its_eq(
    make: Callable[..., nn.Loss], choices: str
) -> None:
    """A reduction is told ``'none'`` (a loss per sample) by its characters: a ``str`` whose
    ``==`` agrees with anything is named as what it holds, and a numpy array of strings, whose
    ``==`` gives no one bool, is named too rather than failing in numpy's "truth value of an
    array is ambiguous"."""
    name = make.__name__
    with pytest.raises(ValueError) as caught:
        make(reduction=_AgreesWithAll("avg"))
    assert str(caught.value) == f"{name}: reduction must be {choices}, got 'avg'"
    with pytest.raises(ValueError) as caught:
        make(reduction=np.array(["none", "none"]))
    assert str(caught.value) == (
        f"{name}: reduction must be {choices}, got array(['none', 'none'], dtype='<U4')"
    )


def test_a_float_target_of_the_batch_shape_for_many_classes_gets_no_unsqueeze_hint() -> None:
    """A float target ``(N,)`` for logits ``(N, C)`` with C > 1 is told that class indices are
    int64 and that a float target has the logits' shape; the hint "target.unsqueeze(-1)" is for
    one value per sample (C = 1), and here would lead to another refusal."""
    logits = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(TypeError) as caught:
        nn.CrossEntropyLoss()(logits, torch.rand(4, dtype=torch.float64))
    assert str(caught.value) == (
        "CrossEntropyLoss: a target of shape (4,) holds class indices, which must have dtype "
        "torch.int64, got torch.float64 (a floating-point target has the prediction's shape "
        "(4, 3))"
    )
    with pytest.raises(TypeError) as caught:
        nn.MSELoss()(logits, torch.rand(4, dtype=torch.float64))
    assert str(caught.value) == (
        "MSELoss: a target of shape (4,) holds class indices, which must have dtype "
        "torch.int64, got torch.float64 (a floating-point target has the prediction's shape "
        "(4, 3))"
    )


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("layout", ["sparse_coo", "sparse_csr"])
@pytest.mark.parametrize("criterion", [nn.CrossEntropyLoss(), nn.MSELoss("mean")], ids=repr)
def test_a_sparse_prediction_like_the_last_dense_one_is_refused_and_changes_nothing(
    criterion: nn.Loss, layout: str
) -> None:
    """A sparse prediction of the shape, dtype and device of the last accepted dense one is
    refused by name as the first would be (not by the tensor library's "Could not run
    'aten::_log_softmax' ... 'SparseCPU' backend"), and backward still gives the last good
    forward's gradient, PyTorch's in float64."""
    name = type(criterion).__name__
    torch.manual_seed(0)
    prediction = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    if isinstance(criterion, nn.CrossEntropyLoss):
        target = torch.tensor([0, 2, 1, 2])
        expected = torch.nn.functional.cross_entropy(prediction, target)
    else:
        target = torch.randn(4, 3, dtype=torch.float64)
        expected = torch.nn.functional.mse_loss(prediction, target)
    (expected_gradient,) = torch.autograd.grad(expected, prediction)
    plain = prediction.detach()
    torch.testing.assert_close(criterion(plain, target), expected.detach(), rtol=0, atol=1e-15)
    sparse = plain.to_sparse() if layout == "sparse_coo" else plain.to_sparse_csr()
    with pytest.raises(TypeError) as caught:
        criterion(sparse, target)
    assert str(caught.value) == (
        f"{name}: expected a dense prediction, got a {layout} tensor (pass prediction.to_dense())"
    )
    torch.testing.assert_close(criterion.backward(), expected_gradient, rtol=0, atol=1e-15)


def test_a_class_index_below_and_one_above_the_range_names_the_negative_one() -> None:
    """Class indices both below 0 and at C or above: the refusal names the lowest, as the
    check reads the minimum first, and nothing of the last good forward is changed."""
    criterion = nn.CrossEntropyLoss()
    logits = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 2, 1])
    (expected,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, target), logits)
    criterion(logits.detach(), target)
    with pytest.raises(ValueError) as caught:
        criterion(logits.detach(), torch.tensor([-1, 5, 0]))
    assert str(caught.value) == (
        "CrossEntropyLoss: class index -1 is out of range for 3 classes (expected values in [0, 2])"
    )
    torch.testing.assert_close(criterion.backward(), expected, rtol=0, atol=1e-15)


def test_fit_leaves_the_targets_to_a_cross_entropy_given_a_forward_of_its_own() -> None:
    """A CrossEntropyLoss whose instance holds a forward of its user's (set on it, its class's
    ``_forward_accepted`` left as it was) may take rows that do not sum to 1, here normalised
    first: fit does not refuse them before training, and trains as the built-in loss does on
    the normalised rows."""
    from minidl import optim
    from minidl.train import fit

    criterion = nn.CrossEntropyLoss()
    built_in = criterion.forward

    def normalised(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return built_in(prediction, target / target.sum(-1, keepdim=True))

    criterion.forward = normalised  # type: ignore[method-assign]
    torch.manual_seed(6)
    x, weights = torch.randn(8, 2), torch.rand(8, 3) + 0.5
    model, twin = nn.mlp((2, 3)), nn.mlp((2, 3))
    twin.load_state_dict(model.state_dict())
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(7)
    fit(model, criterion, optimizer, x, weights, epochs=1, batch_size=4)
    assert optimizer.step_count == 2
    torch.manual_seed(7)
    expected = optim.SGD(twin.parameters(), lr=0.1)
    normalised_rows = weights / weights.sum(-1, keepdim=True)
    fit(twin, nn.CrossEntropyLoss(), expected, x, normalised_rows, epochs=1, batch_size=4)
    for got, want in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(got.data, want.data)


@pytest.mark.parametrize("shape", [(3,), (2, 2), (1, 4)])
def test_cross_entropy_columns_refuse_a_target_of_another_shape_and_change_nothing(
    shape: tuple[int, ...],
) -> None:
    """The columns forward (``minidl.folded``'s) refuses class indices of another shape than
    ``(N,)`` in ``forward``'s words, also ones whose gather would run (``(2, 2)``, ``(1, 4)``
    or fewer samples, a buffer resized): backward then gives the last good forward's gradient,
    PyTorch's in float64, and the next forward its loss."""
    torch.manual_seed(3)
    logits = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    good = torch.tensor([0, 1, 2, 1])
    expected_loss = torch.nn.functional.cross_entropy(logits, good)
    (expected,) = torch.autograd.grad(expected_loss, logits)
    plain = logits.detach()
    bad = torch.zeros(shape, dtype=torch.int64)
    with pytest.raises(ValueError) as refused:
        nn.CrossEntropyLoss()(plain, bad)
    criterion = nn.CrossEntropyLoss()
    criterion._check_prediction(plain)
    buffer = torch.empty(3, 4, dtype=torch.float64)
    criterion._forward_columns(plain.t().contiguous(), good, buffer)
    with pytest.raises(ValueError) as caught:
        criterion._forward_columns(plain.t().contiguous(), bad, torch.empty(3, 4, dtype=F64))
    assert str(caught.value) == str(refused.value)
    torch.testing.assert_close(criterion.backward(), expected, rtol=1e-12, atol=1e-15)
    loss = criterion._forward_columns(plain.t().contiguous(), good, torch.empty(3, 4, dtype=F64))
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-12, atol=1e-15)
