"""CrossEntropyLoss behaviours that hand-made mutants of ``nn/cross_entropy.py`` and
``nn/loss.py`` showed untested: each test fails with one of those changes applied (a value
against PyTorch's autograd in float64, a refusal's type and message, or the state a refusal
leaves)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.testing import assert_close

from minidl import nn

F64 = torch.float64


def oracle(logits: Tensor, target: Tensor, reduction: str = "mean") -> tuple[Tensor, Tensor]:
    """PyTorch's loss and its autograd gradient, computed in float64."""
    leaf = logits.detach().to(F64).requires_grad_()
    wanted = target.to(F64) if target.is_floating_point() else target
    loss = F.cross_entropy(leaf, wanted, reduction=reduction)
    (gradient,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), gradient


def draw(shape: tuple[int, ...], seed: int, dtype: torch.dtype = F64) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_a_meta_target_for_cpu_logits_is_refused_and_leaves_the_last_forward() -> None:
    """A target on another device (the meta device stands for one) is refused by name, even of
    the dtype and shape of the last accepted one: the gather would read indices from nowhere
    and return a CPU loss. The last good forward's gradient is still backward's."""
    logits = draw((2, 3), 0)
    target = torch.tensor([0, 2])
    criterion = nn.CrossEntropyLoss()
    criterion(logits, target)
    for _ in range(2):
        with pytest.raises(ValueError) as caught:
            criterion(logits, target.to("meta"))
        assert str(caught.value) == (
            "CrossEntropyLoss: target is on meta but the prediction is on cpu"
        )
    assert_close(criterion.backward(), oracle(logits, target)[1], rtol=1e-14, atol=0.0)


def test_meta_logits_with_a_cpu_target_are_refused_on_every_call() -> None:
    """Logits on the meta device with class indices on the CPU are refused by name, on the
    first call and on a second of the same signature: a meta gather reads no index, so it took
    any target (an index out of range too) and returned a meta loss."""
    criterion = nn.CrossEntropyLoss()
    logits = torch.zeros(2, 3, device="meta")
    for target in (torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([0, 7])):
        with pytest.raises(ValueError) as caught:
            criterion(logits, target)
        assert str(caught.value) == (
            "CrossEntropyLoss: target is on cpu but the prediction is on meta"
        )


def test_forward_called_directly_is_recorded_for_backward() -> None:
    """A built-in loss records its forward in ``forward`` itself (the Loss docstring): its
    ``forward`` method called directly, not through ``__call__``, is followed by a backward
    that gives that forward's gradient rather than "backward called before forward"."""
    logits = draw((4, 3), 1)
    target = torch.tensor([0, 2, 1, 1])
    criterion = nn.CrossEntropyLoss()
    loss = criterion.forward(logits, target)
    expected_loss, expected_gradient = oracle(logits, target)
    assert_close(loss, expected_loss, rtol=1e-14, atol=0.0)
    assert_close(criterion.backward(), expected_gradient, rtol=1e-14, atol=0.0)


def test_logits_of_one_shape_in_two_dtypes_each_get_their_own_constants() -> None:
    """Logits of one shape in float32, then float64, then float32 again: each call's loss and
    gradient are PyTorch's in the logits' dtype (the constants made for a shape are kept per
    dtype: those of float32 given to float64 logits failed in the dot product)."""
    target = torch.tensor([0, 2, 1])
    criterion = nn.CrossEntropyLoss()
    for dtype in (torch.float32, F64, torch.float32):
        logits = draw((3, 4), 2, dtype)
        loss = criterion(logits, target)
        gradient = criterion.backward()
        expected_loss, expected_gradient = oracle(logits, target)
        assert loss.dtype is dtype and gradient.dtype is dtype
        tolerance = 1e-14 if dtype is F64 else 1e-6
        assert_close(loss, expected_loss.to(dtype), rtol=tolerance, atol=0.0)
        assert_close(gradient, expected_gradient.to(dtype), rtol=tolerance, atol=tolerance)


def test_logits_of_one_shape_on_two_devices_each_get_their_own_constants() -> None:
    """Logits of one shape on the meta device (shapes only), then on the CPU: the CPU call's
    loss and gradient are PyTorch's (the meta constants given to CPU logits failed)."""
    target = torch.tensor([1, 0])
    criterion = nn.CrossEntropyLoss()
    meta = criterion(torch.zeros(2, 3, dtype=F64, device="meta"), target.to("meta"))
    assert meta.is_meta and meta.shape == ()
    logits = draw((2, 3), 3)
    loss = criterion(logits, target)
    expected_loss, expected_gradient = oracle(logits, target)
    assert_close(loss, expected_loss, rtol=1e-14, atol=0.0)
    assert_close(criterion.backward(), expected_gradient, rtol=1e-14, atol=0.0)


def test_columns_refuse_meta_logits_with_a_cpu_target_as_forward_does() -> None:
    """The columns forward (for minidl.folded) refuses meta logits with a CPU target in
    ``forward``'s words, after a forward of that signature was accepted (whose checks it
    skips)."""
    logits = torch.zeros(4, 3, device="meta")
    target = torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError) as plain:
        nn.CrossEntropyLoss()(logits, target)
    criterion = nn.CrossEntropyLoss()
    criterion._check_prediction(logits)
    with pytest.raises(ValueError) as columns:
        criterion._forward_columns(logits.t(), target, torch.empty(3, 4, device="meta"))
    assert str(columns.value) == str(plain.value)
    assert str(plain.value) == "CrossEntropyLoss: target is on cpu but the prediction is on meta"


def test_keep_columns_makes_backward_independent_of_the_callers_buffer() -> None:
    """After ``_keep_columns``, the caller's buffer of log-probabilities may be overwritten
    (folded's next batch): backward still gives the columns forward's gradient, autograd's."""
    logits = draw((5, 3), 4)
    target = torch.tensor([2, 0, 1, 1, 0])
    criterion = nn.CrossEntropyLoss()
    criterion._check_prediction(logits)
    buffer = torch.empty(3, 5, dtype=F64)
    loss = criterion._forward_columns(logits.t().contiguous(), target, buffer)
    criterion._keep_columns()
    buffer.fill_(float("nan"))
    expected_loss, expected_gradient = oracle(logits, target)
    assert_close(loss, expected_loss, rtol=1e-14, atol=0.0)
    assert_close(criterion.backward(), expected_gradient, rtol=1e-14, atol=1e-16)


def test_a_bfloat16_gradient_divides_by_the_batch_size_in_float32() -> None:
    """257 samples of bfloat16 logits: the gradient's p / N divides by 257 in float32 (257 is
    no bfloat16: it rounds to 256), so each entry off the targets is autograd's float64
    0.5 / 257 rounded once to bfloat16, not 0.5 / 256."""
    logits = torch.zeros(257, 2, dtype=torch.bfloat16)
    target = torch.zeros(257, dtype=torch.int64)
    criterion = nn.CrossEntropyLoss()
    criterion(logits, target)
    gradient = criterion.backward()
    _, expected = oracle(logits, target)
    assert gradient.dtype is torch.bfloat16
    assert torch.equal(gradient[:, 1], expected[:, 1].to(torch.bfloat16))
    assert float(expected[0, 1].to(torch.bfloat16)) != 2.0**-9


def test_a_probability_row_off_by_exactly_the_many_class_tolerance_is_taken() -> None:
    """Float32 rows of 4096 classes may sum to 1 within 2 sqrt(C) epsilons, here exactly
    2 * 64 * 2**-23 = 2**-16 (more than 1e-5): a row off by exactly that is taken (with
    PyTorch's loss and gradient), one off by a little more is refused, naming the sum."""
    classes = 4096
    target = torch.full((1, classes), 2.0**-12)
    target[0, 0] += 2.0**-16
    assert float(target.sum()) - 1 == 2.0**-16
    logits = draw((1, classes), 5, torch.float32)
    criterion = nn.CrossEntropyLoss()
    loss = criterion(logits, target)
    expected_loss, expected_gradient = oracle(logits, target)
    assert_close(loss, expected_loss.float(), rtol=1e-6, atol=0.0)
    assert_close(criterion.backward(), expected_gradient.float(), rtol=1e-5, atol=1e-9)
    target[0, 0] += 2.0**-20
    with pytest.raises(ValueError) as caught:
        criterion(logits, target)
    assert str(caught.value) == (
        "CrossEntropyLoss: a probability target must be non-negative with rows summing to 1 "
        f"(got a minimum of {2.0**-12:g} and a row sum off by {2.0**-16 + 2.0**-20:g}); pass "
        "class indices as int64 instead"
    )


def test_a_probability_gradient_scales_p_by_the_rows_own_sum() -> None:
    """dL/dz = (p sum_c t_c - t) / N: a float64 row summing to 1 + 8e-6 (inside the 1e-5
    tolerance) gets autograd's gradient to 1e-15, not (p - t) / N, 8e-6 p / N away."""
    logits = draw((3, 4), 6)
    target = torch.softmax(draw((3, 4), 7), -1) * (1 + 8e-6)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    loss = criterion(logits, target)
    expected_loss, expected_gradient = oracle(logits, target, "sum")
    assert_close(loss, expected_loss, rtol=1e-14, atol=0.0)
    assert_close(criterion.backward(), expected_gradient, rtol=0.0, atol=1e-15)


def test_a_nan_in_a_probability_target_is_refused() -> None:
    """A NaN probability is neither non-negative nor part of a row summing to 1: refused with
    the minimum and row sum it has (NaN compares false either way round)."""
    target = torch.tensor([[float("nan"), 0.5, 0.5], [0.0, 1.0, 0.0]])
    with pytest.raises(ValueError) as caught:
        nn.CrossEntropyLoss()(torch.zeros(2, 3), target)
    assert str(caught.value) == (
        "CrossEntropyLoss: a probability target must be non-negative with rows summing to 1 "
        "(got a minimum of nan and a row sum off by nan); pass class indices as int64 instead"
    )


def test_a_float16_gradient_of_65520_samples_divides_by_a_finite_batch_size() -> None:
    """65520 samples of float16 logits: N is inf in float16 (past 65504), so the gradient's
    p / N divides in float32: autograd's float64 0.5 / 65520 rounded to float16, not 0."""
    logits = torch.zeros(65520, 2, dtype=torch.float16)
    target = torch.zeros(65520, dtype=torch.int64)
    criterion = nn.CrossEntropyLoss()
    criterion(logits, target)
    gradient = criterion.backward()
    _, expected = oracle(logits, target)
    assert gradient.dtype is torch.float16
    assert float(expected[0, 1].to(torch.float16)) > 0
    assert torch.equal(gradient[:, 1], expected[:, 1].to(torch.float16))


def test_the_values_of_an_empty_data_sets_probabilities_pass() -> None:
    """``_check_target_values`` takes a data set's targets of any number of samples: none
    (0, C) has no value to refuse (its minimum is not asked of an empty tensor)."""
    nn.CrossEntropyLoss()._check_target_values(torch.zeros(0, 3))
