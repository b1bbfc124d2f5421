"""Losses' behaviours that hand-made mutants of their sources showed untested: each test
fails with one of those changes applied (a value, a refusal's type and message, or the state
a refusal leaves), against PyTorch's loss or exact expected values. The tests after
``_AgreesWithAll`` come from a later round over ``loss.py`` and ``cross_entropy.py``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from minidl import nn

F64 = torch.float64


@pytest.mark.parametrize("criterion", [nn.L1Loss(), nn.MSELoss("mean")], ids=repr)
def test_a_bfloat16_mean_is_summed_in_float32_and_rounded_once(criterion: nn.Loss) -> None:
    """257 errors of 1 in bfloat16: summed in bfloat16 the total is 256 (257 is not a
    bfloat16), and 256 / 257 rounds to 0.99609375; PyTorch's mean, summed in float32, is 1."""
    prediction = torch.ones(1, 257, dtype=torch.bfloat16)
    target = torch.zeros(1, 257, dtype=torch.bfloat16)
    expected = F.l1_loss(prediction, target)
    assert float(expected) == 1.0
    got = criterion(prediction, target)
    assert got.dtype is torch.bfloat16
    assert torch.equal(got, expected)


def test_a_target_of_another_shape_for_one_output_gets_no_unsqueeze_hint() -> None:
    """The hint "give the target that shape: target.unsqueeze(-1)" is for one value per sample,
    ``(N,)`` for a prediction ``(N, 1)``; a target of another batch size is told its shape
    only (the hint would lead to another refusal)."""
    with pytest.raises(ValueError) as caught:
        nn.L1Loss()(torch.zeros(4, 1), torch.zeros(3))
    assert str(caught.value) == (
        "L1Loss: target has shape (3,), expected the prediction's shape (4, 1)"
    )
    with pytest.raises(ValueError) as caught:
        nn.L1Loss()(torch.zeros(4, 1), torch.zeros(4))
    assert str(caught.value) == (
        "L1Loss: target has shape (4,), expected the prediction's shape (4, 1); for one value "
        "per sample, give the target that shape: target.unsqueeze(-1)"
    )


def test_backward_refuses_an_empty_upstream_gradient_as_not_a_scalar() -> None:
    """An upstream gradient of no element is no scalar: a ValueError giving its shape, not the
    tensor library's reshape error."""
    criterion = nn.MSELoss()
    criterion(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError) as caught:
        criterion.backward(torch.ones(0))
    assert str(caught.value) == (
        "MSELoss.backward: the upstream gradient must be a scalar, got shape (0,)"
    )


def test_huber_backward_uses_the_delta_set_before_its_forward() -> None:
    """delta set between the constructor and forward is the forward's: the gradient is clamped
    at it, as autograd's of PyTorch's huber_loss with that delta."""
    prediction = torch.tensor([[0.2, -3.0, 0.7, 2.0]], dtype=F64)
    target = torch.zeros(1, 4, dtype=F64)
    criterion = nn.HuberLoss(reduction="sum")
    criterion.delta = 0.5
    loss = criterion(prediction, target)
    leaf = prediction.clone().requires_grad_()
    expected = F.huber_loss(leaf, target, reduction="sum", delta=0.5)
    (expected_gradient,) = torch.autograd.grad(expected, leaf)
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-15, atol=0.0)
    torch.testing.assert_close(criterion.backward(), expected_gradient, rtol=1e-15, atol=0.0)


def test_huber_delta_past_float16_but_inside_float32_clamps_an_infinite_difference() -> None:
    """A float32 delta of 1e5 (past float16's 65504, inside float32's range) still bounds the
    gradient: an infinite difference's gradient is delta, not inf."""
    criterion = nn.HuberLoss(delta=1e5, reduction="sum")
    criterion(torch.tensor([[float("inf"), 3e5, -2.0]]), torch.zeros(1, 3))
    assert torch.equal(criterion.backward(), torch.tensor([[1e5, 1e5, -2.0]]))


class _TwoPartError(ValueError):
    """A loss's own error, whose constructor takes two arguments."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__(first + second)


class _RefusingLoss(nn.Loss):
    stacks = True

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise _TwoPartError("refused ", "by its own loss")


def test_stacked_loss_passes_a_runs_own_error_subclass_through_unchanged() -> None:
    """Only plain TypeError and ValueError are re-raised named within the whole; a subclass of
    them raised by a run's loss reaches the caller as it was raised (its class and message)."""
    criterion = nn.StackedLoss([(_RefusingLoss(), 1)])
    with pytest.raises(_TwoPartError) as caught:
        criterion(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))
    assert str(caught.value) == "refused by its own loss"


@pytest.mark.parametrize(
    ("layer", "function", "shape", "scale", "seed", "atol"),
    [
        (nn.LogSoftmax, torch.log_softmax, (4, 50), 100.0, 3, 1e-5),
        (nn.Softmax, torch.softmax, (3, 5), 1.0, 8, 1e-6),
    ],
)
def test_a_16_bit_gradient_through_a_float32_softmax_is_read_in_float32(
    layer: type[nn.Softmax] | type[nn.LogSoftmax],
    function: Callable[[Tensor, int], Tensor],
    shape: tuple[int, int],
    scale: float,
    seed: int,
    atol: float,
) -> None:
    """A float16 gradient through a float32 forward (Softmax, LogSoftmax) gives float32 (the
    promoted dtype; LogSoftmax's row sum taken in it): autograd's values in float64 to float32
    rounding, not a result rounded to float16."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=generator)
    upstream = (torch.randn(*shape, generator=generator) * scale).half()
    module = layer()
    module(x)
    got = module.backward(upstream)
    assert got.dtype is torch.float32
    leaf = x.to(F64).requires_grad_()
    (expected,) = torch.autograd.grad(function(leaf, 1), leaf, upstream.to(F64))
    torch.testing.assert_close(got.to(F64), expected, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("layer", [nn.Softmax, nn.LogSoftmax])
def test_softmax_dim_refuses_a_bool(layer: type[nn.Softmax] | type[nn.LogSoftmax]) -> None:
    """True == 1, but a bool is no dimension: a TypeError naming what was given."""
    with pytest.raises(TypeError) as caught:
        layer(True)
    assert str(caught.value) == (
        f"{layer.__name__}: dim must be an int, 1 (or -1), the feature dimension of an (N, C) "
        "input, got bool True"
    )


def test_cross_entropy_refuses_a_float64_row_off_one_by_5e_5() -> None:
    """In float64 a probability row is accepted within 1e-5 of 1 (for a few classes); off by
    5e-5 it is refused, with the amount."""
    target = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 5e-5]], dtype=F64)
    with pytest.raises(ValueError) as caught:
        nn.CrossEntropyLoss()(torch.zeros(2, 3, dtype=F64), target)
    assert str(caught.value) == (
        "CrossEntropyLoss: a probability target must be non-negative with rows summing to 1 "
        "(got a minimum of 0 and a row sum off by 5e-05); pass class indices as int64 instead"
    )


class _NormalisedCrossEntropy(nn.CrossEntropyLoss):
    """Cross-entropy of unnormalised non-negative weights, made rows of probabilities first."""

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(prediction, target / target.sum(-1, keepdim=True))


def test_fit_leaves_the_targets_to_a_cross_entropy_whose_forward_is_its_own() -> None:
    """A CrossEntropyLoss subclass with a forward of its own may take rows that do not sum to 1
    (here normalised first): fit does not refuse them before training, and trains every batch;
    the built-in loss refuses the same targets before the first step."""
    from minidl import optim
    from minidl.train import fit

    torch.manual_seed(6)
    x, weights = torch.randn(8, 2), torch.rand(8, 3) + 0.5
    model = nn.mlp((2, 3))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    fit(model, _NormalisedCrossEntropy(), optimizer, x, weights, epochs=1, batch_size=4)
    assert optimizer.step_count == 2
    refused = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"^CrossEntropyLoss: a probability target must be"):
        fit(model, nn.CrossEntropyLoss(), refused, x, weights, epochs=1, batch_size=4)
    assert refused.step_count == 0


def test_log_softmax_float16_forward_and_bfloat16_gradient_give_float32() -> None:
    """float16 with bfloat16 promotes to float32, as torch promotes them: the gradient through
    a float16 forward of a bfloat16 upstream is float32."""
    layer = nn.LogSoftmax()
    layer(torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float16))
    got = layer.backward(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.bfloat16))
    assert got.dtype is torch.float32


def test_a_cross_entropy_pickled_before_its_divisor_was_kept_gives_the_mean_gradient() -> None:
    """A state pickled after a probability-target forward, before the divisor of the last
    forward was kept (no ``_divisor_used``), loads to a backward of that forward's mean: the
    gradient divided by N, PyTorch's."""
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(4, 3, dtype=F64, generator=generator)
    target = torch.softmax(torch.randn(4, 3, dtype=F64, generator=generator), 1)
    criterion = nn.CrossEntropyLoss()
    criterion(logits, target)
    state = criterion.__getstate__()
    del state["_divisor_used"]
    loaded = nn.CrossEntropyLoss.__new__(nn.CrossEntropyLoss)
    loaded.__setstate__(state)
    leaf = logits.clone().requires_grad_()
    (expected,) = torch.autograd.grad(F.cross_entropy(leaf, target), leaf)
    torch.testing.assert_close(loaded.backward(), expected, rtol=1e-14, atol=1e-16)


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


# -- a third pass over the losses ---------------------------------------------------------------


@pytest.mark.parametrize("make", [nn.MSELoss, nn.NLLLoss, nn.CrossEntropyLoss])
def test_class_indices_on_the_meta_device_are_refused_for_a_cpu_prediction(
    make: type[nn.Loss],
) -> None:
    """Class indices on the meta device hold no values: for a CPU prediction they are a
    ValueError naming both devices, before and after a forward of that shape (read by the
    kernel, the loss was computed from whatever memory it found)."""
    criterion = make()
    prediction = torch.zeros(2, 3)
    expected = f"{make.__name__}: target is on meta but the prediction is on cpu"
    with pytest.raises(ValueError) as caught:
        criterion(prediction, torch.tensor([0, 1], device="meta"))
    assert str(caught.value) == expected
    criterion(prediction, torch.tensor([0, 1]))
    with pytest.raises(ValueError) as caught:
        criterion(prediction, torch.tensor([0, 1], device="meta"))
    assert str(caught.value) == expected


def test_a_floating_target_of_the_predictions_shape_gets_no_one_hot_hint_from_nll() -> None:
    """NLLLoss given a float target of the prediction's shape (probabilities, say) is asked
    for int64 class indices only: the one-hot hint is for integer or bool targets, which are
    one-hot rows, and a float row need not be one."""
    with pytest.raises(TypeError) as caught:
        nn.NLLLoss()(torch.zeros(3, 3), torch.full((3, 3), 1.0 / 3))
    assert str(caught.value) == (
        "NLLLoss: class-index targets must have dtype torch.int64, got torch.float32"
    )


def test_a_stacked_int32_one_hot_target_gets_no_one_hot_hint() -> None:
    """For stacked logits ``(R, N, C)`` an int32 target of their shape is asked for int64
    only, not told to take ``argmax(-1)`` as for a 2-D prediction."""
    one_hot = F.one_hot(torch.tensor([[0, 2], [1, 1]]), 3).to(torch.int32)
    with pytest.raises(TypeError) as caught:
        nn.CrossEntropyLoss()(torch.zeros(2, 2, 3), one_hot)
    assert str(caught.value) == (
        "CrossEntropyLoss: class-index targets must have dtype torch.int64, got torch.int32"
    )


def test_the_values_of_an_empty_data_sets_binary_targets_pass() -> None:
    """``BCEWithLogitsLoss._check_target_values`` takes a data set's targets of any number of
    samples, as cross-entropy's does: none, ``(0, C)``, has no value to refuse (its range is
    not asked of an empty tensor, which ``aminmax`` refuses); one of 1.5 is still refused."""
    criterion = nn.BCEWithLogitsLoss()
    criterion._check_target_values(torch.zeros(0, 3))
    with pytest.raises(ValueError) as caught:
        criterion._check_target_values(torch.tensor([[0.0, 1.5]]))
    assert (
        str(caught.value) == "BCEWithLogitsLoss: targets must lie in [0, 1], got values in [0, 1.5]"
    )


@pytest.mark.parametrize(
    ("prediction", "target", "expected"),
    [
        (
            torch.zeros(2, 3),
            torch.tensor(1),
            "MSELoss: target has shape (), expected the prediction's shape (2, 3) (or class "
            "indices of shape (2,))",
        ),
        (
            torch.zeros(2, 2, 3),
            torch.tensor([0, 1], dtype=torch.int32),
            "MSELoss: target has shape (2,), expected the prediction's shape (2, 2, 3) (or class "
            "indices of shape (2, 2))",
        ),
    ],
    ids=["0-dim", "stacked-1-dim"],
)
def test_an_mse_integer_target_of_too_few_dimensions_is_told_both_shapes(
    prediction: torch.Tensor, target: torch.Tensor, expected: str
) -> None:
    """An integer target with neither the prediction's dimensions nor one fewer is no class
    indices of any shape: a ValueError giving the prediction's shape and that of class
    indices (not a refusal of its dtype or of it as class indices)."""
    with pytest.raises(ValueError) as caught:
        nn.MSELoss()(prediction, target)
    assert str(caught.value) == expected


@pytest.mark.parametrize(
    ("dtype", "value", "delta"), [(torch.float32, 2e19, 3e19), (F64, 1.5e154, 1e155)]
)
def test_huber_halves_a_large_difference_before_it_squares_it(
    dtype: torch.dtype, value: float, delta: float
) -> None:
    """A difference below delta whose square overflows the dtype while half of it does not
    (float32 past about 1.84e19) has PyTorch's finite loss, 0.5 * d * d (squared first, it
    was inf), and the gradient d / N."""
    prediction = torch.tensor([[value, 1.0]], dtype=dtype)
    target = torch.zeros(1, 2, dtype=dtype)
    criterion = nn.HuberLoss(delta=delta)
    loss = criterion(prediction, target)
    reference = prediction.clone().requires_grad_(True)
    expected = F.huber_loss(reference, target, delta=delta)
    expected.backward()
    assert torch.isfinite(loss)
    assert torch.equal(loss, expected.detach())
    assert reference.grad is not None
    assert torch.equal(criterion.backward(), reference.grad)


def test_a_float16_mean_of_a_small_batch_is_summed_in_float32_and_rounded_once() -> None:
    """Float16 logits of a few rows (a batch a dot product would sum in other dtypes): the
    mean loss is the float64 mean of the float16 log-probabilities picked, rounded once to
    float16, for 20 seeded batches of 3 rows (whose -1/3 float16 cannot hold exactly)."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = torch.randn(3, 5, generator=generator).half()
        target = torch.randint(0, 5, (3,), generator=generator)
        loss = nn.CrossEntropyLoss()(logits, target)
        picked = logits.log_softmax(-1).gather(-1, target.unsqueeze(-1)).double()
        assert torch.equal(loss, (-picked.sum() / 3).half()), (logits, target)


def test_a_16_bit_huber_loss_rounds_each_element_before_the_sum() -> None:
    """A float16 or bfloat16 Huber loss (a mean and a sum) rounds each element, computed in
    float32 from the 16-bit inputs, to the 16-bit dtype before the sum, which is exact and
    rounded once: as PyTorch's float16 loss is, bit for bit. Summing the float32 elements
    unrounded differs in the last bit for some of these 100 seeded batches a case."""
    generator = torch.Generator().manual_seed(0)
    for dtype in (torch.float16, torch.bfloat16):
        for reduction in ("mean", "sum"):
            for _ in range(100):
                prediction = torch.randn(16, 8, generator=generator).to(dtype)
                target = torch.randn(16, 8, generator=generator).to(dtype)
                got = nn.HuberLoss(delta=0.75, reduction=reduction)(prediction, target)
                elements = F.huber_loss(
                    prediction.float(), target.float(), delta=0.75, reduction="none"
                )
                total = elements.to(dtype).double().sum()
                expected = (total / 128 if reduction == "mean" else total).to(dtype)
                assert got.dtype is dtype
                assert torch.equal(got, expected), (dtype, reduction, got, expected)
                if dtype is torch.float16:
                    assert torch.equal(
                        got, F.huber_loss(prediction, target, delta=0.75, reduction=reduction)
                    )


def test_bce_with_logits_of_large_logits_keeps_its_two_nonnegative_terms_exact() -> None:
    """Logits of millions with targets near 0 or 1: the float32 loss, summed, is the float64
    loss of the same inputs rounded to float32 (3500034.5); computed as ``max(z, 0) - z t``
    the difference of two near-equal products lost two units (3500036.5)."""
    logits = torch.tensor([[1e8, -3e7, 5e6]])
    target = torch.tensor([[1 - 2**-24, 2**-20, 0.3]])
    got = nn.BCEWithLogitsLoss(reduction="sum")(logits, target)
    expected = F.binary_cross_entropy_with_logits(logits.double(), target.double(), reduction="sum")
    assert got.dtype is torch.float32
    assert torch.equal(got, expected.float())


# A mutation audit of the losses (L13, L27 of loss.py, H01 of huber.py).


@pytest.mark.parametrize("criterion", [nn.MSELoss(), nn.CrossEntropyLoss()], ids=repr)
def test_a_0_dim_prediction_gets_no_unsqueeze_note(criterion: nn.Loss) -> None:
    """(L13: the note for a 1-D prediction given to a 0-dim one too.) A 0-dim prediction is
    refused for its shape alone: "prediction.unsqueeze(-1)" (or "(0)") would make it (1,),
    refused again; only a 1-D one, (N,) or (C,), is told how to mend it."""
    with pytest.raises(ValueError, match=r"got shape \(\)$") as caught:
        criterion(torch.tensor(1.0), torch.tensor(1.0))
    assert getattr(caught.value, "__notes__", []) == []
    with pytest.raises(ValueError, match=r"got shape \(3,\)") as caught:
        criterion(torch.zeros(3), torch.zeros(3))
    assert len(caught.value.__notes__) == 1


@pytest.mark.parametrize(
    "make",
    [nn.MSELoss, nn.CrossEntropyLoss, nn.NLLLoss, nn.HuberLoss, nn.BCEWithLogitsLoss],
    ids=lambda make: make.__name__,
)
def test_a_complex_upstream_gradient_is_refused_and_the_forward_kept(make: type[nn.Loss]) -> None:
    """(L27: the refusal of a complex upstream removed: the gradient came back complex.) The
    refusal leaves the forward's caches: backward with a real upstream still gives its
    gradient, as PyTorch's."""
    criterion = make()
    torch.manual_seed(0)
    prediction = torch.randn(3, 2, dtype=F64)
    target = (
        torch.tensor([0, 1, 1])
        if make in (nn.CrossEntropyLoss, nn.NLLLoss)
        else torch.rand(3, 2, dtype=F64)
    )
    criterion(prediction, target)
    name = make.__name__
    for upstream in (torch.tensor(2.0 + 0j), torch.tensor([[1j]], dtype=torch.complex128)):
        with pytest.raises(
            TypeError,
            match=rf"^{name}\.backward: the upstream gradient must be a real scalar, got dtype "
            rf"{upstream.dtype}$",
        ):
            criterion.backward(upstream)
    leaf = prediction.clone().requires_grad_()
    oracle = {
        nn.MSELoss: lambda z: F.mse_loss(z, target, reduction="sum") / 3,
        nn.CrossEntropyLoss: lambda z: F.cross_entropy(z, target),
        nn.NLLLoss: lambda z: F.nll_loss(z, target),
        nn.HuberLoss: lambda z: F.huber_loss(z, target),
        nn.BCEWithLogitsLoss: lambda z: F.binary_cross_entropy_with_logits(z, target),
    }[make]
    oracle(leaf).backward(torch.tensor(2.0, dtype=F64))
    got = criterion.backward(torch.tensor(2.0, dtype=F64))
    assert got.dtype == F64
    torch.testing.assert_close(got, leaf.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("delta", [0.0, 0, -0.0], ids=repr)
def test_a_huber_delta_of_zero_is_refused_and_the_delta_kept(delta: float) -> None:
    """(H01: delta's bound closed, 0 accepted: a loss identically 0, whose gradient is 0.)
    PyTorch's huber_loss requires delta > 0 too; refused when set, delta stays as it was."""
    with pytest.raises(ValueError) as caught:
        nn.HuberLoss(delta=delta)
    assert str(caught.value) == f"HuberLoss: delta must be in (0, inf), got {delta!r}"
    criterion = nn.HuberLoss(delta=2.0)
    with pytest.raises(ValueError) as caught:
        criterion.delta = delta
    assert str(caught.value) == f"HuberLoss: delta must be in (0, inf), got {delta!r}"
    assert criterion.delta == 2.0
    prediction, target = torch.tensor([[0.5, 3.0]], dtype=F64), torch.zeros(1, 2, dtype=F64)
    expected = F.huber_loss(prediction, target, delta=2.0)
    assert torch.equal(criterion(prediction, target), expected)
