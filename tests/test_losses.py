"""Losses against PyTorch in float64 (through the shared oracle helper), their conventions and
their numerical stability."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import pytest
import torch
import torch.nn.functional as F

import minidl
from minidl import nn
from tests.helpers import F64, assert_close, helper_test_op

SHAPES = [(1, 1), (1, 2), (5, 1), (8, 3), (33, 10)]


def _indices(batch: int, classes: int) -> torch.Tensor:
    return torch.randint(classes, (batch,))


@pytest.mark.parametrize("reduction", ["paper", "mean", "sum"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_mse_dense_target(reduction: str, shape: tuple[int, int]) -> None:
    prediction, target = torch.randn(*shape, dtype=F64), torch.randn(*shape, dtype=F64)
    helper_test_op(None, prediction, nn.MSELoss(reduction), target)


@pytest.mark.parametrize("reduction", ["paper", "mean", "sum"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_mse_class_index_target_is_one_hot(reduction: str, shape: tuple[int, int]) -> None:
    prediction = torch.randn(*shape, dtype=F64)
    helper_test_op(None, prediction, nn.MSELoss(reduction), _indices(*shape))
    one_hot = F.one_hot(_indices(*shape), shape[1]).to(F64)
    indices = one_hot.argmax(dim=1)
    assert torch.equal(
        nn.MSELoss(reduction)(prediction, indices), nn.MSELoss(reduction)(prediction, one_hot)
    )


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
@pytest.mark.parametrize("stacked", [False, True], ids=["(N, C)", "(R, N, C)"])
def test_mse_class_indices_give_the_bits_of_one_hot_targets(
    dtype: torch.dtype, stacked: bool
) -> None:
    """Loss and gradient, call after call (the quick path once the shape is known), are the
    bits of the same loss given one-hot targets; signed zeros and large values included."""
    generator = torch.Generator().manual_seed(0)
    shape = (3, 7, 4) if stacked else (7, 4)
    by_index, by_one_hot = nn.MSELoss(), nn.MSELoss()
    for call in range(4):
        prediction = torch.randn(*shape, generator=generator, dtype=dtype) * 10.0**call
        prediction[..., 0, :2] = torch.tensor([-0.0, 0.0], dtype=dtype)
        indices = torch.randint(0, shape[-1], shape[:-1], generator=generator)
        one_hot = F.one_hot(indices, shape[-1]).to(dtype)
        assert torch.equal(by_index(prediction, indices), by_one_hot(prediction, one_hot))
        index_gradient, one_hot_gradient = by_index.backward(), by_one_hot.backward()
        assert torch.equal(index_gradient, one_hot_gradient)
        assert torch.equal(index_gradient.signbit(), one_hot_gradient.signbit())


def test_mse_paper_reduction_is_sum_over_outputs_mean_over_samples() -> None:
    prediction = torch.tensor([[0.5, -1.0], [2.0, 0.0], [1.0, 1.0]], dtype=F64)
    target = torch.tensor([1, 0, 1])
    criterion = nn.MSELoss()
    assert criterion.reduction == "paper"
    # squared errors: (0.25 + 4) + (1 + 0) + (1 + 0) = 6.25, over N = 3
    assert float(criterion(prediction, target)) == pytest.approx(6.25 / 3, rel=1e-15)
    one_hot = torch.tensor([[0, 1], [1, 0], [0, 1]], dtype=F64)
    assert_close(criterion.backward(), 2 * (prediction - one_hot) / 3, 1e-15)
    # "mean" also divides by the C = 2 outputs: half the paper's gradient.
    mean = nn.MSELoss("mean")
    mean(prediction, target)
    assert_close(mean.backward(), criterion.backward() / 2, 1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cross_entropy_class_indices(shape: tuple[int, int], reduction: Any) -> None:
    prediction = 4 * torch.randn(*shape, dtype=F64)
    helper_test_op(None, prediction, nn.CrossEntropyLoss(reduction), _indices(*shape))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", ["one-hot", "probabilities"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cross_entropy_probability_targets(
    kind: str, shape: tuple[int, int], reduction: Any
) -> None:
    batch, classes = shape
    if kind == "one-hot":
        target = F.one_hot(_indices(batch, classes), classes).to(F64)
    else:
        target = torch.rand(batch, classes, dtype=F64).softmax(dim=1)
    prediction = 4 * torch.randn(*shape, dtype=F64)
    helper_test_op(None, prediction, nn.CrossEntropyLoss(reduction), target)


def test_cross_entropy_reduction_set_between_calls_and_refused_when_bad() -> None:
    prediction, indices = torch.randn(5, 3, dtype=F64), _indices(5, 3)
    probabilities = torch.rand(5, 3, dtype=F64).softmax(dim=1)
    criterion = nn.CrossEntropyLoss()
    assert repr(criterion) == "CrossEntropyLoss(reduction='mean')"
    for target in (indices, probabilities):
        mean = criterion(prediction, target)
        mean_grad = criterion.backward()
        criterion.reduction = "sum"
        assert_close(criterion.backward(), mean_grad, 1e-15)  # the last forward's reduction
        assert_close(criterion(prediction, target), 5 * mean, 1e-14)
        assert_close(criterion.backward(), 5 * mean_grad, 1e-14)
        criterion.reduction = "mean"
        assert_close(criterion(prediction, target), mean, 1e-15)
    with pytest.raises(ValueError, match=r"^CrossEntropyLoss: reduction must be 'mean' or 'sum'"):
        nn.CrossEntropyLoss("none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"got \['sum'\]$"):
        criterion.reduction = ["sum"]  # type: ignore[assignment]
    assert criterion.reduction == "mean"


def test_stacked_cross_entropy_sum_is_each_models_sum() -> None:
    prediction, target = torch.randn(3, 4, 5, dtype=F64), torch.randint(0, 5, (3, 4))
    stacked, alone = nn.CrossEntropyLoss("sum"), nn.CrossEntropyLoss("sum")
    losses = stacked(prediction, target)
    grad = stacked.backward()
    for model in range(3):
        assert_close(losses[model], alone(prediction[model], target[model]), 1e-14)
        assert_close(grad[model], alone.backward(), 1e-14)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_a_16_bit_stacked_probability_gradient_is_each_models_alone(dtype: torch.dtype) -> None:
    """The gradient p / N - t / N of probability targets subtracted t / N by a 16-bit add_ with
    an alpha, which rounds the product to the dtype first over a tensor's last elements only:
    the stack's (R, N, C) gradient (fit_rounds') differed from each model's alone (fit's) in
    the last bit of 18 elements of 2100. Now the same bits, as for class indices; within a
    few epsilons of autograd's in float64 (on the rounded logits and targets)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 100, 7, generator=generator).to(dtype)
    target = torch.randn(3, 100, 7, generator=generator).softmax(-1).to(dtype)
    stacked, alone = nn.CrossEntropyLoss(), nn.CrossEntropyLoss()
    losses = stacked(logits, target)
    grad = stacked.backward()
    assert grad.dtype == dtype
    for model in range(3):
        assert torch.equal(losses[model], alone(logits[model], target[model]))
        assert torch.equal(grad[model], alone.backward())
        leaf = logits[model].double().requires_grad_()
        F.cross_entropy(leaf, target[model].double()).backward()
        assert leaf.grad is not None
        assert_close(grad[model].double(), leaf.grad, rtol=2 * torch.finfo(dtype).eps)


def test_cross_entropy_one_hot_equals_class_indices() -> None:
    prediction = torch.randn(6, 4, dtype=F64)
    indices = _indices(6, 4)
    criterion = nn.CrossEntropyLoss()
    loss_indices = criterion(prediction, indices)
    grad_indices = criterion.backward()
    loss_one_hot = criterion(prediction, F.one_hot(indices, 4).to(F64))
    assert_close(loss_one_hot, loss_indices, 1e-15)
    assert_close(criterion.backward(), grad_indices, 1e-15)


@pytest.mark.parametrize("criterion", [nn.MSELoss(), nn.CrossEntropyLoss()], ids=repr)
def test_loss_backward_scales_by_an_upstream_scalar(criterion: nn.Loss) -> None:
    """The upstream gradient is one number, however it is shaped ((), (1,), (1, 1, 1)): the
    gradient keeps the prediction's shape."""
    prediction = torch.randn(4, 3, dtype=F64)
    criterion(prediction, _indices(4, 3))
    grad = criterion.backward()
    for shape in ((), (1,), (1, 1, 1)):
        scaled = criterion.backward(torch.full(shape, 2.5, dtype=F64))
        assert scaled.shape == prediction.shape
        assert_close(scaled, 2.5 * grad, 1e-15)
    assert torch.equal(criterion.backward(), grad)  # backward does not consume the cache


@pytest.mark.parametrize("upstream", [math.inf, -math.inf, math.nan, 0.0, 2.5])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nll_keeps_its_zeros_off_the_targets_whatever_the_upstream(
    upstream: float, reduction: Literal["mean", "sum"]
) -> None:
    """NLLLoss's gradient is zero off the targets: an infinite or NaN upstream gradient made
    all of those NaN (``0 * inf``), where autograd's are zeros; on the targets, autograd's."""
    z = torch.log_softmax(torch.randn(5, 3, dtype=F64), 1)
    y = torch.tensor([0, 2, 2, 1, 0])
    criterion = nn.NLLLoss(reduction)
    criterion(z, y)
    got = criterion.backward(torch.tensor(upstream, dtype=F64))
    leaf = z.clone().requires_grad_()
    F.nll_loss(leaf, y, reduction=reduction).backward(torch.tensor(upstream, dtype=F64))
    assert leaf.grad is not None
    torch.testing.assert_close(got, leaf.grad, rtol=1e-15, atol=0.0, equal_nan=True)
    assert not got[torch.arange(3) != y[:, None]].any()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cross_entropy_is_stable_at_huge_logits(dtype: torch.dtype) -> None:
    logits = torch.tensor(
        [[1e4, -1e4], [-1e4, 1e4], [1e4, 1e4 - 1.0], [-1e4, -1e4], [0.0, 1e4], [1e4, 0.0]],
        dtype=dtype,
    )
    target = torch.tensor([0, 0, 1, 1, 1, 1])
    criterion = nn.CrossEntropyLoss()
    loss = criterion(logits, target)
    grad = criterion.backward()
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all())
    # The float64 oracle: every value here is exact in float32, so only rounding differs.
    oracle = logits.double().requires_grad_(True)
    expected = F.cross_entropy(oracle, target)
    expected.backward()
    assert oracle.grad is not None
    rtol = 1e-6 if dtype == torch.float32 else 1e-12
    assert_close(loss, expected.to(dtype), rtol)
    assert_close(grad, oracle.grad.to(dtype), rtol)
    # Correct, not just finite: row 1 costs 2e4, rows 3/4 cost log(1 + e) and log 2.
    assert float(loss) == pytest.approx(
        (2e4 + (1 + torch.tensor(1.0).exp()).log().item() + torch.tensor(2.0).log().item() + 1e4)
        / 6,
        rel=1e-6,
    )


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cross_entropy_probability_targets_stable_at_huge_logits(dtype: torch.dtype) -> None:
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=dtype)
    target = torch.tensor([[0.5, 0.25, 0.25], [0.0, 0.5, 0.5]], dtype=dtype)
    criterion = nn.CrossEntropyLoss()
    loss = criterion(logits, target)
    grad = criterion.backward()
    oracle = logits.double().requires_grad_(True)
    expected = F.cross_entropy(oracle, target.double())
    expected.backward()
    assert oracle.grad is not None
    rtol = 1e-6 if dtype == torch.float32 else 1e-12
    assert_close(loss, expected.to(dtype), rtol)
    assert_close(grad, oracle.grad.to(dtype), rtol)


def test_cross_entropy_accepts_logits_from_an_autograd_graph() -> None:
    logits = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 2, 1, 1, 0])
    criterion = nn.CrossEntropyLoss()
    loss = criterion(logits * 2, target)
    reference = torch.nn.functional.cross_entropy(logits * 2, target)
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-12)
    (oracle,) = torch.autograd.grad(reference, logits)
    torch.testing.assert_close(criterion.backward() * 2, oracle, rtol=1e-10, atol=1e-12)
    # Stacked logits (R, N, C) from a graph: one loss per model.
    stacked = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[0, 2, 1, 1, 0], [1, 1, 2, 0, 2]])
    losses = criterion(stacked * 2, targets)
    for r in range(2):
        expected = torch.nn.functional.cross_entropy(stacked[r] * 2, targets[r])
        assert float(losses[r].detach()) == pytest.approx(float(expected.detach()), rel=1e-12)


def test_a_loss_of_ones_own_differentiates_as_the_tutorial_writes_it() -> None:
    """A subclass implements ``forward`` and ``_gradient`` (docs/tutorial.md): the call marks
    that a forward ran (only the built-in losses did), and backward before it still raises."""

    class MeanAbsolute(nn.Loss):
        def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            self._difference = prediction - target
            return self._difference.abs().mean()

        def _gradient(self) -> torch.Tensor:
            return self._difference.sign() / self._difference.numel()

    criterion = MeanAbsolute()
    with pytest.raises(RuntimeError, match="MeanAbsolute: backward called before forward"):
        criterion.backward()
    # Its forward method called directly, as the course's contract writes a forward pass, does
    # not record it: the refusal says so, rather than that no forward ran.
    criterion.forward(torch.zeros(2, 2), torch.ones(2, 2))
    with pytest.raises(RuntimeError) as refused:
        criterion.backward()
    assert str(refused.value) == (
        "MeanAbsolute: backward called before forward (a loss of one's own records its forward "
        "when it is called, criterion(prediction, target), not when its forward method is "
        "called directly)"
    )
    with pytest.raises(RuntimeError) as built_in:  # (a built-in loss records it in forward)
        nn.MSELoss().backward()
    assert str(built_in.value) == "MSELoss: backward called before forward"
    prediction = torch.randn(4, 2, dtype=torch.float64)
    target = torch.randn(4, 2, dtype=torch.float64)
    loss = criterion(prediction, target)
    reference = prediction.clone().requires_grad_(True)
    torch.nn.functional.l1_loss(reference, target).backward()
    torch.testing.assert_close(loss, torch.nn.functional.l1_loss(prediction, target))
    torch.testing.assert_close(criterion.backward(), reference.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        criterion.backward(torch.tensor(3.0, dtype=torch.float64)),
        3 * reference.grad,
        rtol=1e-12,
        atol=1e-12,
    )  # type: ignore[operator]


def test_gradcheck_and_stacked_loss_take_a_loss_of_ones_own() -> None:
    """They ran ``forward`` directly, so a loss written as the tutorial says (which the call
    marks as having run) could not run backward there."""

    class Squared(nn.Loss):
        stacks = True

        def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            self._difference = prediction - target
            return self._difference.square().sum(dim=(-2, -1))

        def _gradient(self) -> torch.Tensor:
            return 2 * self._difference

    generator = torch.Generator().manual_seed(0)
    prediction = torch.randn(2, 3, 2, dtype=torch.float64, generator=generator)
    target = torch.randn(2, 3, 2, dtype=torch.float64, generator=generator)
    assert minidl.gradcheck(Squared(), prediction[0], target[0])
    stacked = nn.StackedLoss([(Squared(), 1), (nn.MSELoss(), 1)])
    stacked(prediction, target)
    grad = stacked.backward()
    torch.testing.assert_close(grad[0], 2 * (prediction[0] - target[0]), rtol=1e-15, atol=0)
    # (MSELoss's "paper" reduction: 2 (z - t) / N, N = 3)
    torch.testing.assert_close(grad[1], 2 * (prediction[1] - target[1]) / 3, rtol=1e-15, atol=0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_probability_rows_accepted_off_one_match_torch(reduction: Any) -> None:
    # Rows are accepted within 1e-5 of summing to 1; the gradient p * sum(t) - t must then use
    # the row's own sum, as PyTorch's does.
    prediction = 4 * torch.randn(6, 4, dtype=F64)
    target = torch.rand(6, 4, dtype=F64).softmax(dim=1)
    target[::2] *= 1 + 5e-6
    target[1::2] *= 1 - 5e-6
    helper_test_op(None, prediction, nn.CrossEntropyLoss(reduction), target)


@pytest.mark.parametrize(
    ("dtype", "within", "beyond"),
    [
        # float16: within 1e-3 of summing to 1 (its rounding of the row's entries)
        (torch.float16, 0.4995, 0.495),
        # bfloat16: within its epsilon, 2**-7
        (torch.bfloat16, 0.49609375, 0.490234375),
    ],
)
def test_cross_entropy_takes_16_bit_probability_rows_within_their_rounding_only(
    dtype: torch.dtype, within: float, beyond: float
) -> None:
    """16-bit probability rows are taken within their dtype's rounding of 1 (float16 1e-3,
    bfloat16 2**-7) and refused beyond it: no test held the tolerance (a mutant of 1e-2 took a
    float16 row off by 0.005; review)."""
    logits = torch.zeros(2, 2, dtype=dtype)
    taken = torch.tensor([[0.5, within], [0.0, 1.0]], dtype=dtype)
    assert torch.isfinite(nn.CrossEntropyLoss()(logits, taken))
    refused = torch.tensor([[0.5, beyond], [0.0, 1.0]], dtype=dtype)
    with pytest.raises(
        ValueError,
        match=r"^CrossEntropyLoss: a probability target must be non-negative with rows summing "
        r"to 1 ",
    ):
        nn.CrossEntropyLoss()(logits, refused)


def test_a_cross_entropy_pickled_before_its_reduction_existed_takes_the_mean() -> None:
    """A CrossEntropyLoss pickled before it had a reduction (the mean, the only one then)
    loads as the mean: no test held the default (a mutant loading it as a sum, N times the
    loss, passed; review)."""
    import pickle

    state = dict(nn.CrossEntropyLoss().__dict__)
    del state["_reduction"]
    earlier = nn.CrossEntropyLoss.__new__(nn.CrossEntropyLoss)
    earlier.__setstate__(pickle.loads(pickle.dumps(state)))
    assert earlier.reduction == "mean"
    logits, target = torch.randn(4, 2, dtype=F64), torch.tensor([0, 1, 0, 1])
    assert torch.equal(earlier(logits, target), nn.CrossEntropyLoss()(logits, target))


def test_cross_entropy_takes_torch_softmax_rows_of_a_million_classes() -> None:
    """float32 rows of ``torch.softmax`` over 10**6 classes sum to 1 only within about 2e-4
    (the rounding grows about as sqrt(C)); they are accepted, within 2 sqrt(C) epsilons
    (2.4e-4 here; 1e-5 refused them), with PyTorch's loss and gradient, while a row off by
    3e-4 is still refused."""
    generator = torch.Generator().manual_seed(0)
    classes = 10**6
    logits = 3 * torch.randn(2, classes, generator=generator)
    target = torch.softmax(3 * torch.randn(2, classes, generator=generator), dim=-1)
    criterion = nn.CrossEntropyLoss()
    loss = criterion(logits, target)
    grad = criterion.backward()
    leaf = logits.to(F64).requires_grad_(True)
    expected = F.cross_entropy(leaf, target.to(F64))
    expected.backward()
    assert leaf.grad is not None
    torch.testing.assert_close(loss.to(F64), expected.detach(), rtol=1e-5, atol=0)
    # (float32 log-softmax over 10**6 classes, minidl's as torch.softmax's, is off by up to
    # 1.8e-4 relatively: the gradient's largest entries, about 1e-2, by up to 2e-6)
    torch.testing.assert_close(grad.to(F64), leaf.grad, rtol=0, atol=4e-6)
    uniform = torch.full((1, classes), 1.0 / classes)
    uniform[0, 0] += 1e-4
    criterion(logits[:1], uniform)
    uniform[0, 0] += 2e-4
    with pytest.raises(ValueError, match=r"row sum off by 0\.0003"):
        criterion(logits[:1], uniform)


def test_bce_with_logits_reads_a_target_from_an_autograd_graph_without_a_warning() -> None:
    """float() of its minimum and maximum warned "Converting a tensor with requires_grad=True
    to a scalar"; the loss reads such a target as a plain value, as every minidl loss does."""
    import warnings

    logits = torch.randn(4, 3, dtype=F64)
    target = torch.rand(4, 3, dtype=F64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = nn.BCEWithLogitsLoss()(logits, target)
    expected = F.binary_cross_entropy_with_logits(logits, target.detach())
    assert_close(loss, expected)


@pytest.mark.parametrize(
    ("make", "target"),
    [
        (nn.HuberLoss, lambda dtype: torch.randn(4, 3, dtype=dtype)),
        (nn.L1Loss, lambda dtype: torch.randn(4, 3, dtype=dtype)),
        (nn.MSELoss, lambda dtype: torch.randn(4, 3, dtype=dtype)),
        (nn.BCEWithLogitsLoss, lambda dtype: torch.rand(4, 3, dtype=dtype)),
        (nn.CrossEntropyLoss, lambda dtype: torch.tensor([0, 2, 1, 1])),
        (nn.NLLLoss, lambda dtype: torch.tensor([0, 2, 1, 1])),
    ],
    ids=["HuberLoss", "L1Loss", "MSELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "NLLLoss"],
)
@pytest.mark.parametrize(
    ("dtype", "refused"), [(F64, torch.float32), (torch.float16, F64)], ids=["f64-f32", "f16-f64"]
)
def test_a_refused_prediction_of_another_dtype_leaves_the_gradients_dtype(
    make: Any, target: Any, dtype: torch.dtype, refused: torch.dtype
) -> None:
    """A prediction of another dtype refused for its target (of the wrong shape) left
    HuberLoss's backward returning the last forward's gradient cast to that dtype: its own
    record of the forward's dtype was the base class's record of the last prediction checked."""
    criterion = make()
    prediction = torch.randn(4, 3, dtype=dtype)
    criterion(prediction, target(dtype))
    expected = criterion.backward()
    with pytest.raises(ValueError, match="target has shape"):
        criterion(torch.randn(4, 3, dtype=refused), target(refused)[:2])
    got = criterion.backward()
    assert got.dtype is dtype
    assert torch.equal(got, expected)


def test_huber_pickled_before_its_forward_dtype_had_its_own_name() -> None:
    """A HuberLoss pickled when the forward's dtype was kept as ``_prediction_dtype`` returns
    its gradient in that dtype."""
    import pickle

    criterion = nn.HuberLoss()
    criterion(torch.randn(4, 3, dtype=torch.float16), torch.randn(4, 3, dtype=torch.float16))
    expected = criterion.backward()
    state = criterion.__getstate__()
    state["_prediction_dtype"] = state.pop("_forward_dtype")
    old = nn.HuberLoss.__new__(nn.HuberLoss)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    got = old.backward()
    assert got.dtype is torch.float16
    assert torch.equal(got, expected)


def test_cross_entropy_reads_an_autograd_probability_target_without_a_warning() -> None:
    """Its check that the rows are distributions read float() of a tensor requiring grad, which
    warned "Converting a tensor with requires_grad=True to a scalar" (an error under -W error),
    as BCEWithLogitsLoss's range check did."""
    import warnings

    logits = torch.randn(4, 3, dtype=F64)
    target = torch.rand(4, 3, dtype=F64).softmax(dim=1).requires_grad_(True)
    criterion = nn.CrossEntropyLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = criterion(logits, target)
    reference = logits.clone().requires_grad_(True)
    expected = F.cross_entropy(reference, target.detach())
    expected.backward()
    assert_close(loss.detach(), expected.detach())
    assert_close(criterion.backward().detach(), reference.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", ["class indices", "probabilities"])
def test_cross_entropy_first_called_under_another_default_device(
    dtype: torch.dtype, kind: str
) -> None:
    """The batch size a 16-bit loss divides its gradient by is kept for later calls: made first
    inside ``torch.device("meta")`` (or after ``torch.set_default_device``), it was a meta
    tensor, and dividing a CPU gradient by it did nothing (every gradient N times too large),
    inside the context and after it."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=generator).to(dtype)
    target = (
        torch.tensor([0, 3, 1, 1, 2])
        if kind == "class indices"
        else torch.rand(5, 4, generator=generator, dtype=F64).softmax(dim=1).to(dtype)
    )
    expected_criterion = nn.CrossEntropyLoss()
    expected_criterion(logits, target)
    expected = expected_criterion.backward()
    criterion = nn.CrossEntropyLoss()
    with torch.device("meta"):
        criterion(logits, target)
    assert torch.equal(criterion.backward(), expected)
    criterion(logits, target)  # (outside the context, with the constants kept)
    assert torch.equal(criterion.backward(), expected)
    # The oracle: autograd in float64 on the same (rounded) values.
    leaf = logits.double().requires_grad_()
    wide_target = target.double() if target.is_floating_point() else target
    F.cross_entropy(leaf, wide_target).backward()
    assert leaf.grad is not None
    torch.testing.assert_close(expected.double(), leaf.grad, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize(
    ("build", "argument", "message"),
    [
        (lambda: nn.CrossEntropyLoss(weight=torch.ones(3)), "weight", "but PyTorch's weight is "
         r"not supported \(every class weighs the same\)$"),
        (lambda: nn.CrossEntropyLoss(label_smoothing=0.1), "label_smoothing", "but PyTorch's "
         r"label_smoothing is not supported \(give the smoothed probabilities as the target"),
        (lambda: nn.CrossEntropyLoss(ignore_index=-100), "ignore_index", "PyTorch's default, "
         r"which is what CrossEntropyLoss computes \(every target .*\): leave the argument out$"),
        (lambda: nn.NLLLoss(weight=torch.ones(2)), "weight", "but PyTorch's weight is not"),
        (lambda: nn.BCEWithLogitsLoss(pos_weight=torch.ones(3)), "pos_weight", "but PyTorch's "
         r"pos_weight is not supported \(positive targets weigh as negative ones\)$"),
        (lambda: nn.BCEWithLogitsLoss(weight=None), "weight", "PyTorch's default"),
    ],
)  # fmt: skip
def test_pytorchs_loss_options_given_to_the_constructor_are_refused_with_the_hint(
    build: Callable[[], object], argument: str, message: str
) -> None:
    """Ported code passes them by name: Python's TypeError ("unexpected keyword argument")
    said nothing of what to do, where setting the attribute gives the hint."""
    with pytest.raises(TypeError, match=rf"^[A-Za-z]+Loss: got {argument}=.*, {message}"):
        build()


def test_huber_loss_with_a_delta_past_the_dtype_computes_its_gradient() -> None:
    """A delta past float32's range clamps nothing; torch refused to convert it as the clamp's
    bound, so the backward failed in its words after a forward that worked (PyTorch's
    huber_loss computes it)."""
    prediction = torch.tensor([[1.0, -3.0], [2.5, 0.5]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0], [1.0, 4.0]])
    loss = nn.HuberLoss(delta=1e39)
    value = loss(prediction.detach(), target)
    expected = torch.nn.functional.huber_loss(prediction, target, delta=1e39)
    expected.backward()
    assert torch.equal(value, expected.detach())
    assert torch.equal(loss.backward(), prediction.grad)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (7, 2), (100, 10), (13, 40), (1030, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cross_entropy_columns_give_forwards_loss_and_gradient(
    shape: tuple[int, int], reduction: Any, dtype: torch.dtype
) -> None:
    """``_forward_columns`` (logits features by batch, ``(C, N)``, as :mod:`minidl.folded`
    gives them) computes ``forward``'s loss of the transposed logits, its gradient (from
    ``backward`` too, ``(N, C)`` and contiguous, as after ``forward``) ``(C, N)``, and against
    PyTorch's in float64; a batch of more than 1024 rows (a sum, not a dot product) too. Equal
    to rounding: PyTorch's softmax down the columns takes a vector's exp and log where the row
    one may take a scalar's."""
    n, c = shape
    generator = torch.Generator().manual_seed(n * 100 + c)
    logits = torch.randn(n, c, generator=generator, dtype=dtype) * 3
    target = torch.randint(0, c, (n,), generator=generator)
    plain = nn.CrossEntropyLoss(reduction=reduction)
    loss = plain(logits, target)
    gradient = plain.backward()
    columns = nn.CrossEntropyLoss(reduction=reduction)
    columns._check_prediction(logits)
    buffer = torch.empty(c, n, dtype=dtype)
    out = torch.empty(c, n, dtype=dtype)
    loss_c = columns._forward_columns(logits.t().contiguous(), target, buffer)
    gradient_c = columns._gradient_columns(out)
    assert gradient_c is out
    again = columns.backward()
    assert again.shape == (n, c) and again.is_contiguous()
    assert torch.equal(again, gradient_c.t())
    tolerance = 1e-12 if dtype is F64 else 1e-5
    assert_close(loss_c, loss, rtol=tolerance)
    assert_close(gradient_c.t(), gradient, rtol=tolerance)
    if dtype is F64:
        reference = logits.clone().requires_grad_()
        expected = F.cross_entropy(reference, target, reduction=reduction)
        expected.backward()
        assert_close(loss_c, expected.detach(), rtol=1e-10)
        assert_close(gradient_c.t(), reference.grad, rtol=1e-10)


def test_cross_entropy_columns_refuse_targets_as_forward_does() -> None:
    """A target out of range, of another dtype or shape: ``forward``'s refusal, in its words."""
    logits = torch.randn(4, 3)
    for target, kind in (
        (torch.tensor([0, 1, 3, 2]), ValueError),
        (torch.tensor([0, 1, -1, 2]), ValueError),
        (torch.zeros(5).long(), ValueError),
        (torch.tensor([0, 1, 1, 2], dtype=torch.int32), TypeError),
    ):
        with pytest.raises(kind) as plain:
            nn.CrossEntropyLoss()(logits, target)
        criterion = nn.CrossEntropyLoss()
        criterion._check_prediction(logits)
        with pytest.raises(kind) as columns:
            criterion._forward_columns(logits.t().contiguous(), target, torch.empty(3, 4))
        assert str(columns.value) == str(plain.value)


def test_cross_entropy_columns_pickled_and_reduction_set_between_calls() -> None:
    """The state of a columns forward pickles (its backward gives the same gradient after), a
    cross-entropy pickled before it existed loads, and a reduction set between two columns
    forwards is the second one's (its -1/N made again)."""
    import pickle

    logits = torch.randn(6, 3, dtype=F64)
    target = torch.tensor([0, 2, 1, 1, 0, 2])
    criterion = nn.CrossEntropyLoss()
    criterion._check_prediction(logits)
    criterion._forward_columns(logits.t().contiguous(), target, torch.empty(3, 6, dtype=F64))
    gradient = criterion.backward()
    copied = pickle.loads(pickle.dumps(criterion))
    assert torch.equal(copied.backward(), gradient)
    state = criterion.__getstate__() if hasattr(criterion, "__getstate__") else vars(criterion)
    state = dict(state)
    del state["_columns"], state["_rows"]
    old = nn.CrossEntropyLoss.__new__(nn.CrossEntropyLoss)
    old.__setstate__(state)
    assert old._columns is False and old._rows is None
    criterion.reduction = "sum"
    loss = criterion._forward_columns(logits.t().contiguous(), target, torch.empty(3, 6, dtype=F64))
    assert_close(loss, F.cross_entropy(logits, target, reduction="sum"), rtol=1e-12)
    assert_close(
        criterion._gradient_columns(torch.empty(3, 6, dtype=F64)).t(),
        torch.softmax(logits, -1) - F.one_hot(target, 3),
        rtol=1e-12,
    )


def test_cross_entropy_columns_refused_leave_the_last_good_forwards_gradient() -> None:
    """A columns forward refused (an index out of range) after a good one of another batch
    size, and of the other reduction's constants: ``backward()`` still gives the good one's
    gradient, of its shape, as after a refused ``forward``."""
    good_logits = torch.randn(4, 3, dtype=F64)
    good_target = torch.tensor([0, 2, 1, 1])
    plain = nn.CrossEntropyLoss()
    plain(good_logits, good_target)
    expected = plain.backward()
    criterion = nn.CrossEntropyLoss()
    criterion._check_prediction(good_logits)
    good = torch.empty(3, 4, dtype=F64)
    criterion._forward_columns(good_logits.t().contiguous(), good_target, good)
    bad_logits = torch.randn(3, 3, dtype=F64)
    criterion.reduction = "sum"
    criterion._check_prediction(bad_logits)
    with pytest.raises(ValueError, match="out of range"):
        criterion._forward_columns(
            bad_logits.t().contiguous(), torch.tensor([0, 3, 1]), torch.empty(3, 3, dtype=F64)
        )
    assert torch.equal(criterion.backward(), expected)


def test_bce_with_logits_pickled_when_it_kept_the_logits_loads() -> None:
    """A binary cross-entropy pickled when forward kept the logits (now their sigma) loads,
    and its backward gives the gradient of that forward."""
    import pickle

    logits = torch.randn(4, 3, dtype=F64)
    target = torch.rand(4, 3, dtype=F64)
    criterion = nn.BCEWithLogitsLoss()
    criterion(logits, target)
    expected = criterion.backward()
    criterion._probabilities = logits  # (pickled as a cache, as the logits were)
    state = dict(
        criterion.__getstate__() if hasattr(criterion, "__getstate__") else vars(criterion)
    )
    state["_logits"] = state.pop("_probabilities")
    assert not isinstance(state["_logits"], torch.Tensor)  # (a pickled cache's form)
    old = nn.BCEWithLogitsLoss.__new__(nn.BCEWithLogitsLoss)
    old.__setstate__(state)
    assert torch.equal(old.backward(), expected)
    assert torch.equal(pickle.loads(pickle.dumps(old)).backward(), expected)


def test_mse_takes_its_reduction_as_a_plain_str() -> None:
    """MSELoss kept a numpy.str_ (its repr np.str_('sum')) and asked a str subclass's own
    __eq__, taking one that equals everything and failing in forward (KeyError); the other
    losses compare and keep the plain str."""
    import numpy as np

    class _Loud(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    assert repr(nn.MSELoss(reduction=np.str_("sum"))) == "MSELoss(reduction='sum')"
    with pytest.raises(ValueError, match=r"^MSELoss: reduction must be 'paper', 'mean' or 'sum'"):
        nn.MSELoss(reduction=_Loud("none"))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_huber_beyond_the_dtypes_range_gives_an_infinite_difference_an_infinite_gradient(
    reduction: str,
) -> None:
    """A delta past float32's largest value, in float32: an infinite difference's gradient is
    delta rounded to float32, infinite (as autograd gives it), not float32's largest value; a
    finite difference's is the difference itself."""
    prediction = torch.tensor([[float("inf"), 1.0]])
    target = torch.tensor([[0.0, 0.0]])
    loss = nn.HuberLoss(delta=1e39, reduction=reduction)  # type: ignore[arg-type]
    loss(prediction, target)
    leaf = prediction.clone().requires_grad_()
    torch.nn.functional.huber_loss(leaf, target, reduction=reduction, delta=1e39).backward()
    assert leaf.grad is not None
    assert torch.equal(loss.backward(), leaf.grad)
