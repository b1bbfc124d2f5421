"""Every bad input raises the right exception, with a message that names the module or function,
what was given and what was expected, and leaves nothing half-changed."""

from __future__ import annotations

import functools
import gc
import inspect
import math
import pickle
import re
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

import minidl
from minidl import nn, optim
from minidl.anomaly import detect_anomaly
from minidl.data import BatchIterator, make_disk_data
from minidl.interop import to_torch
from minidl.nn import GradientDtypeError
from minidl.rounds import fit_rounds
from minidl.train import fit

F64 = torch.float64


@contextmanager
def raises(kind: type[BaseException], *fragments: str) -> Iterator[None]:
    """Expect ``kind`` with every fragment in its message (case-sensitive substrings)."""
    with pytest.raises(kind) as info:
        yield
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the message {message!r}"


def _snapshot(module: nn.Module) -> list[Tensor]:
    return [t.clone() for pair in module.param() for t in pair]


def _assert_unchanged(module: nn.Module, before: list[Tensor]) -> None:
    after = _snapshot(module)
    assert len(after) == len(before)
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))


def _expect_forward_error_keeps_cache(
    module: nn.Module, good: Tensor, bad: Any, kind: type[BaseException], *fragments: str
) -> None:
    """A failing forward neither changes the parameters nor replaces the last good forward's cache."""
    output = module(good)
    upstream = torch.randn_like(output)
    expected_input_grad = module.backward(upstream)
    expected = _snapshot(module)
    module.zero_grad()
    with raises(kind, *fragments):
        module(bad)
    assert torch.equal(module.backward(upstream), expected_input_grad)
    _assert_unchanged(module, expected)


# -- module inputs -------------------------------------------------------------------------------


def test_linear_wrong_feature_count() -> None:
    layer = nn.Linear(2, 25)
    _expect_forward_error_keeps_cache(
        layer,
        torch.randn(4, 2),
        torch.randn(4, 3),
        ValueError,
        "Linear",
        "expected 2 input features",
        "got 3",
    )


@pytest.mark.parametrize("bad", [[[1.0, 2.0]], 1.0, None], ids=["list", "float", "none"])
def test_non_tensor_input(bad: Any) -> None:
    kind = type(bad).__name__
    _expect_forward_error_keeps_cache(
        nn.Linear(2, 3), torch.randn(2, 2), bad, TypeError, "Linear", "torch.Tensor", kind
    )
    _expect_forward_error_keeps_cache(nn.Tanh(), torch.randn(2, 2), bad, TypeError, "Tanh", kind)
    for module in (nn.Identity(), nn.Dropout(0.5), nn.Residual(nn.Linear(2, 2))):
        _expect_forward_error_keeps_cache(
            module,
            torch.randn(2, 2),
            bad,
            TypeError,
            f"{type(module).__name__}: expected a torch.Tensor as input, got {kind}",
        )
    with raises(TypeError, "MSELoss", "torch.Tensor", kind):
        nn.MSELoss()(bad, torch.tensor([0]))
    with raises(TypeError, "CrossEntropyLoss", "target", kind):
        nn.CrossEntropyLoss()(torch.randn(1, 2), bad)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_input(dtype: torch.dtype) -> None:
    bad = torch.ones(2, 2, dtype=dtype)
    _expect_forward_error_keeps_cache(
        nn.Linear(2, 3), torch.randn(2, 2), bad, TypeError, "Linear", "floating-point", str(dtype)
    )
    _expect_forward_error_keeps_cache(
        nn.ReLU(), torch.randn(2, 2), bad, TypeError, "ReLU", "floating-point", str(dtype)
    )
    with raises(TypeError, "CrossEntropyLoss", "floating-point", str(dtype)):
        nn.CrossEntropyLoss()(bad, torch.tensor([0, 1]))


@pytest.mark.parametrize("shape", [(2,), (1, 2, 2), ()], ids=str)
def test_input_of_wrong_rank(shape: tuple[int, ...]) -> None:
    # As the first input of a new layer, after a refused first one, and after a good one.
    for make in (
        lambda: nn.Linear(2, 3),
        lambda: nn.mlp((2, 3, 2)),
        lambda: nn.Residual(nn.Sequential(nn.Linear(2, 2))),
    ):
        for refused_first in (False, True):
            fresh = make()
            if refused_first:
                with raises(ValueError, "Linear", "expected 2 input features"):
                    fresh(torch.ones(4, 5))
            with raises(ValueError, "Linear", "(N, features)", str(shape)):
                fresh(torch.ones(shape))
    _expect_forward_error_keeps_cache(
        nn.Linear(2, 3),
        torch.randn(2, 2),
        torch.ones(shape),
        ValueError,
        "Linear",
        "(N, features)",
        str(shape),
    )


@pytest.mark.parametrize("criterion", [nn.MSELoss(), nn.CrossEntropyLoss()], ids=repr)
@pytest.mark.parametrize("shape", [(2,), (1, 1, 2, 2), ()], ids=str)
def test_prediction_of_wrong_rank(criterion: nn.Loss, shape: tuple[int, ...]) -> None:
    bad = torch.ones(shape, dtype=F64)
    _expect_loss_error_keeps_cache(
        criterion,
        bad,
        torch.zeros(shape, dtype=torch.int64),
        ValueError,
        "(N, features)",
        str(shape),
    )


_BF16 = torch.bfloat16
#: Containers of a layer of bfloat16 parameters whose gradient first goes through a module
#: without parameters, which promotes a gradient of another dtype (float16 to float32).
_PROMOTING_CONTAINERS: dict[str, Callable[[], nn.Module]] = {
    "Sequential(Linear, Tanh)": lambda: nn.Sequential(nn.Linear(4, 4, dtype=_BF16), nn.Tanh()),
    "Sequential(Linear, Residual(Tanh))": lambda: nn.Sequential(
        nn.Linear(4, 4, dtype=_BF16), nn.Residual(nn.Tanh())
    ),
    "Residual(Sequential(Linear, Tanh))": lambda: nn.Residual(
        nn.Sequential(nn.Linear(4, 4, dtype=_BF16), nn.Tanh())
    ),
    "Residual(Sequential(BatchNorm1d, Sigmoid))": lambda: nn.Residual(
        nn.Sequential(nn.BatchNorm1d(4, dtype=_BF16), nn.Sigmoid())
    ),
}


@pytest.mark.parametrize("anomaly", [False, True], ids=["plain", "detect_anomaly"])
@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
@pytest.mark.parametrize("container", list(_PROMOTING_CONTAINERS))
def test_a_gradient_of_another_dtype_is_named_as_the_caller_gave_it(
    container: str, method: str, anomaly: bool
) -> None:
    """A float16 gradient for a bfloat16 model: the Tanh (or a Residual around one) promotes
    it to float32 on its way, and the layer refused float32, a dtype the caller never gave.
    The refusal names float16 and bfloat16 first, in the container's name, then the layer's
    own words; no gradient changes."""
    model = _PROMOTING_CONTAINERS[container]()
    model(torch.randn(3, 4, dtype=_BF16))
    before = _snapshot(model)
    with (
        raises(
            TypeError,
            "Sequential: gradient dtype torch.float16 does not match torch.bfloat16",
            "promoted the gradient to torch.float32",
            "gradient dtype torch.float32 does not match the parameters' dtype torch.bfloat16",
        ),
        minidl.detect_anomaly() if anomaly else nullcontext(),
    ):
        getattr(model, method)(torch.randn(3, 4, dtype=torch.float16))
    _assert_unchanged(model, before)


class _LinearThenTanh(nn.Module):
    """A block of one's own: a bfloat16 Linear, then a Tanh, its backward theirs in turn."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4, dtype=_BF16)
        self.tanh = nn.Tanh()

    def forward(self, input: Tensor) -> Tensor:
        return self.tanh(self.linear(input))

    def backward(self, grad_output: Tensor) -> Tensor:
        return self.linear.backward(self.tanh.backward(grad_output))


@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
def test_a_gradient_of_another_dtype_is_named_once_by_the_innermost_container(method: str) -> None:
    """The refusal the caller sees carries the dtypes it gave and the layer's, is raised from
    the layer's own refusal, keeps the Sequential's note of the place, and is renamed once: a
    Residual around a block of one's own names the caller's float16 itself (no Sequential
    inside does), and one around a Sequential leaves the Sequential's refusal as it is."""
    gradient = torch.randn(3, 4, dtype=torch.float16)
    own = nn.Residual(_LinearThenTanh())
    own(torch.randn(3, 4, dtype=_BF16))
    with pytest.raises(GradientDtypeError) as caught:
        getattr(own, method)(gradient)
    error = caught.value
    assert str(error).startswith(
        "Residual: gradient dtype torch.float16 does not match torch.bfloat16, the dtype of a "
        "module inside (the modules without parameters after it promoted the gradient to "
        "torch.float32 on its way there: Linear: gradient dtype torch.float32"
    )
    assert (error.given, error.expected) == (torch.float16, _BF16)
    assert isinstance(error.__cause__, GradientDtypeError)
    assert error.__cause__.given is torch.float32
    nested = nn.Residual(nn.Sequential(nn.Linear(4, 4, dtype=_BF16), nn.Tanh()))
    nested(torch.randn(3, 4, dtype=_BF16))
    with pytest.raises(GradientDtypeError) as caught:
        getattr(nested, method)(gradient)
    error = caught.value
    assert str(error).startswith("Sequential: gradient dtype torch.float16")
    assert "Residual" not in str(error)
    assert (error.given, error.expected) == (torch.float16, _BF16)
    cause = error.__cause__
    assert isinstance(cause, GradientDtypeError) and cause.given is torch.float32
    assert (
        error.__notes__
        == cause.__notes__
        == [
            f"in Sequential.{method}, at module 0 (Linear), given the gradient returned by the "
            "backward of module 1 (Tanh)"
        ]
    )
    # An input of another dtype is no gradient: the containers leave its refusal a TypeError.
    with pytest.raises(TypeError) as refused:
        nested(torch.randn(3, 4, dtype=torch.float16))
    assert not isinstance(refused.value, GradientDtypeError)


def test_the_refusal_of_a_gradients_dtype_is_public_in_minidl_nn() -> None:
    """GradientDtypeError, which every module with parameters or running statistics raises
    for a gradient of another dtype, and whose ``given`` and ``expected`` dtypes a caller
    reads, is public: ``minidl.nn.GradientDtypeError``, in ``minidl.nn.__all__``, and so named
    by a traceback and a pickle, as torch and numpy name their errors (it lived in the private
    ``minidl.nn._checks`` alone, named so). It is still a TypeError."""
    assert "GradientDtypeError" in nn.__all__
    assert issubclass(nn.GradientDtypeError, TypeError)
    modules = {
        nn.Linear(3, 4): (5, 3),
        nn.BatchedLinear(2, 3, 4): (2, 5, 3),
        nn.BatchNorm1d(3, affine=False): (5, 3),
    }
    for module, shape in modules.items():
        output = module(torch.randn(shape))
        for method in ("backward", "backward_parameters"):
            with pytest.raises(nn.GradientDtypeError) as caught:
                getattr(module, method)(torch.ones_like(output, dtype=F64))
            assert (caught.value.given, caught.value.expected) == (F64, torch.float32)
    (line,) = traceback.format_exception_only(caught.value)
    assert line.startswith(
        "minidl.nn.GradientDtypeError: BatchNorm1d: gradient dtype torch.float64"
    )
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is nn.GradientDtypeError
    assert (copy.given, copy.expected, str(copy)) == (F64, torch.float32, str(caught.value))


def test_a_gradient_promoted_to_the_parameters_dtype_is_still_taken() -> None:
    """The promotion the modules without parameters do is kept: a float32 gradient through
    a float64 Tanh is float64 when it reaches the float64 layer, which takes it (as PyTorch's
    autograd casts it), with the gradients of the float64 gradient (to rounding); one the layer is given
    directly is refused in its own words, naming what it was given."""
    model = nn.Sequential(nn.Linear(4, 4, dtype=F64), nn.Tanh())
    x = torch.randn(3, 4, dtype=F64)
    upstream = torch.randn(3, 4)
    model(x)
    grad_input = model.backward(upstream)
    twin = nn.Sequential(nn.Linear(4, 4, dtype=F64), nn.Tanh())
    twin.load_state_dict(model.state_dict())
    twin(x)
    assert grad_input.dtype == F64 and model[0].weight.grad.dtype == F64
    # (a Tanh's backward of mixed dtypes rounds otherwise in the last bit)
    torch.testing.assert_close(grad_input, twin.backward(upstream.double()), rtol=1e-13, atol=0)
    torch.testing.assert_close(model[0].weight.grad, twin[0].weight.grad, rtol=1e-13, atol=0)
    residual = nn.Residual(nn.Linear(4, 4, dtype=_BF16))
    residual(torch.randn(3, 4, dtype=_BF16))
    with raises(
        TypeError,
        "Linear: gradient dtype torch.float16 does not match the parameters' dtype torch.bfloat16",
    ):
        residual.backward(torch.randn(3, 4, dtype=torch.float16))


def test_empty_batch() -> None:
    with raises(ValueError, "Linear", "empty batch"):
        nn.Linear(2, 3)(torch.ones(0, 2))


@pytest.mark.parametrize("stacked", [False, True], ids=["Linear", "BatchedLinear"])
def test_dtype_or_device_mismatch_with_parameters(stacked: bool) -> None:
    """An input of the right shape but another dtype or device, after a good one of that shape
    (when the checks are the quick ones) and as a layer's first input."""
    shape = (2, 4, 2) if stacked else (4, 2)

    def make() -> nn.Module:
        return nn.BatchedLinear(2, 2, 3) if stacked else nn.Linear(2, 3)

    name = "BatchedLinear" if stacked else "Linear"
    for bad, kind, fragments in (
        (torch.randn(shape, dtype=F64), TypeError, ("torch.float64", "torch.float32")),
        (torch.randn(shape, device="meta"), ValueError, ("input is on meta", "are on cpu")),
    ):
        _expect_forward_error_keeps_cache(make(), torch.randn(shape), bad, kind, name, *fragments)
        with raises(kind, name, *fragments):
            make()(bad)


# -- loss targets --------------------------------------------------------------------------------


def _expect_loss_error_keeps_cache(
    criterion: nn.Loss,
    bad_prediction: Tensor,
    bad_target: Any,
    kind: type[BaseException],
    *fragments: str,
) -> None:
    prediction = torch.randn(3, 3, dtype=F64)
    criterion(prediction, torch.tensor([0, 1, 2]))
    expected = criterion.backward().clone()
    with raises(kind, type(criterion).__name__, *fragments):
        criterion(bad_prediction, bad_target)
    assert torch.equal(criterion.backward(), expected)


LOSSES = [nn.MSELoss(), nn.CrossEntropyLoss()]


@pytest.mark.parametrize(
    "criterion",
    [
        nn.MSELoss(),
        nn.L1Loss(),
        nn.HuberLoss(),
        nn.BCEWithLogitsLoss(),
        nn.NLLLoss(),
        nn.CrossEntropyLoss(),
    ],
    ids=lambda criterion: type(criterion).__name__,
)
@pytest.mark.parametrize("bad", [[0.0, 1.0, 0.0], 1.0, None], ids=["list", "float", "none"])
def test_a_target_that_is_no_tensor_is_refused_by_every_loss(criterion: nn.Loss, bad: Any) -> None:
    """Named by the loss, with the type given, and the last good forward kept for backward."""
    prediction = torch.randn(3, 3, dtype=F64)
    good = (
        torch.tensor([0, 1, 2])
        if isinstance(criterion, nn.NLLLoss | nn.CrossEntropyLoss)
        else torch.rand(3, 3, dtype=F64)
    )
    criterion(prediction, good)
    expected = criterion.backward().clone()
    name = type(criterion).__name__
    with raises(TypeError, f"{name}: expected a torch.Tensor target, got {type(bad).__name__}"):
        criterion(torch.randn(3, 3, dtype=F64), bad)
    assert torch.equal(criterion.backward(), expected)


@pytest.mark.parametrize("criterion", LOSSES, ids=repr)
def test_target_of_wrong_shape(criterion: nn.Loss) -> None:
    prediction = torch.randn(3, 3, dtype=F64)
    _expect_loss_error_keeps_cache(
        criterion, prediction, torch.zeros(3, 2, dtype=F64), ValueError, "(3, 2)", "(3, 3)"
    )
    _expect_loss_error_keeps_cache(
        criterion, prediction, torch.tensor([0, 1, 1, 0]), ValueError, "(4,)", "(3,)"
    )
    _expect_loss_error_keeps_cache(
        criterion, prediction, torch.tensor([[0, 1, 1]]), ValueError, "(1, 3)"
    )


@pytest.mark.parametrize("criterion", [*LOSSES, nn.NLLLoss()], ids=repr)
@pytest.mark.parametrize("bad_index", [-1, 3, 4, 7])
def test_class_index_out_of_range(criterion: nn.Loss, bad_index: int) -> None:
    # 5 samples of 3 classes: an index below the batch size is still out of range.
    _expect_loss_error_keeps_cache(
        criterion,
        torch.randn(5, 3, dtype=F64),
        torch.tensor([0, bad_index, 1, 2, 0]),
        ValueError,
        f"class index {bad_index}",
        "out of range",
        "[0, 2]",
    )


@pytest.mark.parametrize("criterion", LOSSES, ids=repr)
def test_wrong_target_dtype(criterion: nn.Loss) -> None:
    prediction = torch.randn(3, 3, dtype=F64)
    _expect_loss_error_keeps_cache(
        criterion,
        prediction,
        torch.tensor([0, 1, 2], dtype=torch.int32),
        TypeError,
        "torch.int64",
        "torch.int32",
    )
    _expect_loss_error_keeps_cache(
        criterion,
        prediction,
        torch.eye(3, dtype=torch.float32),
        TypeError,
        "torch.float32",
        "torch.float64",
    )
    # Class indices given as floats (a common slip): the message asks for int64, not a shape.
    _expect_loss_error_keeps_cache(
        criterion,
        prediction,
        torch.tensor([0.0, 1.0, 2.0], dtype=F64),
        TypeError,
        "a target of shape (3,) holds class indices",
        "must have dtype torch.int64, got torch.float64",
        "the prediction's shape (3, 3)",
    )


@pytest.mark.parametrize(
    "criterion",
    [nn.L1Loss(), nn.HuberLoss(), nn.BCEWithLogitsLoss()],
    ids=lambda criterion: type(criterion).__name__,
)
def test_losses_without_class_indices_ask_for_the_prediction_shape(criterion: nn.Loss) -> None:
    """Their shape errors do not offer class indices, which they do not take."""
    prediction = torch.zeros(3, 2, dtype=F64)
    for target in (torch.zeros(3, dtype=F64), torch.tensor([0, 1, 1]), torch.zeros(3, 1)):
        with pytest.raises(ValueError) as info:
            criterion(prediction, target)
        message = str(info.value)
        assert message.startswith(f"{type(criterion).__name__}: target has shape")
        assert "expected the prediction's shape (3, 2)" in message
        assert "class indices" not in message


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ([[0.5, 0.4, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], "row sum off by 0.1"),
        ([[1.5, -0.5, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], "minimum of -0.5"),
        ([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], "row sum off by 1"),
    ],
    ids=["sum-0.9", "negative", "sum-2"],
)
def test_probabilities_that_are_not_a_distribution(
    target: list[list[float]], fragment: str
) -> None:
    _expect_loss_error_keeps_cache(
        nn.CrossEntropyLoss(),
        torch.randn(3, 3, dtype=F64),
        torch.tensor(target, dtype=F64),
        ValueError,
        "non-negative with rows summing to 1",
        fragment,
    )


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_probability_rows_must_sum_to_one_within_1e_5(dtype: torch.dtype) -> None:
    """Rows off by 1e-6 pass as rounding; rows off by 1e-4 are refused, in float32 as in
    float64."""
    criterion = nn.CrossEntropyLoss()
    prediction = torch.randn(2, 3, dtype=dtype)

    def target(off: float) -> Tensor:
        return torch.tensor([[0.5, 0.5 + off, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)

    criterion(prediction, target(1e-6))
    _expect_loss_error_keeps_cache(
        criterion,
        prediction,
        target(1e-4),
        ValueError,
        "rows summing to 1",
        "row sum off by 0.0001",
    )
    if dtype == torch.float64:  # fine enough to see the bound itself
        criterion(prediction, target(0.99e-5))
        with raises(ValueError, "rows summing to 1"):
            criterion(prediction, target(1.01e-5))


# -- backward ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [
        nn.Linear(2, 2),
        nn.Sigmoid(),
        nn.Tanh(),
        nn.ReLU(),
        nn.LeakyReLU(),
        nn.ELU(),
        nn.SELU(),
        nn.GELU(),
        nn.GELU("tanh"),
        nn.SiLU(),
        nn.Identity(),
    ],
    ids=repr,
)
def test_backward_before_forward(module: nn.Module) -> None:
    before = _snapshot(module)
    with raises(RuntimeError, type(module).__name__, "backward called before forward"):
        module.backward(torch.ones(1, 2))
    _assert_unchanged(module, before)


@pytest.mark.parametrize("criterion", [nn.MSELoss(), nn.CrossEntropyLoss()], ids=repr)
def test_loss_backward_before_forward(criterion: nn.Loss) -> None:
    with raises(RuntimeError, type(criterion).__name__, "backward called before forward"):
        criterion.backward()


# The activations PyTorch gives an inplace argument, with their other arguments.
_WITH_INPLACE: dict[str, tuple[object, ...]] = {
    "ReLU": (),
    "LeakyReLU": (0.2,),
    "ELU": (0.5,),
    "SELU": (),
    "SiLU": (),
    "Dropout": (0.3,),
}


@pytest.mark.parametrize("name", _WITH_INPLACE)
def test_pytorchs_inplace_argument_false_is_taken_and_true_refused_naming_the_module(
    name: str,
) -> None:
    """``ReLU(inplace=False)`` computes what PyTorch's does; ``inplace=True`` (PyTorch's in-place
    variant) is refused naming the module, not by a bare TypeError naming
    ``Activation.__init__``. (Positional, as PyTorch's second argument where it is one.)"""
    args = _WITH_INPLACE[name]
    x = torch.randn(5, 4, dtype=F64)
    mine = getattr(nn, name)(*args, inplace=False).eval()
    theirs = getattr(torch.nn, name)(*args, inplace=False).eval()
    torch.testing.assert_close(mine(x), theirs(x.clone()), rtol=0, atol=0)
    assert repr(mine) == repr(getattr(nn, name)(*args))
    for call in (
        lambda: getattr(nn, name)(*args, inplace=True),
        *([lambda: getattr(nn, name)(*args, True)] if name != "Dropout" else []),
    ):
        with raises(
            ValueError,
            f"{name}: inplace=True is not supported (minidl's activations and Dropout never "
            "change their input); leave it out, or pass inplace=False",
        ):
            call()
    with raises(TypeError, f"{name}: inplace must be True or False, got 1"):
        getattr(nn, name)(*args, inplace=1)


def test_dropout_given_pytorchs_positional_inplace_says_to_name_it() -> None:
    with raises(
        TypeError,
        "Dropout: generator must be a torch.Generator or None, got bool (PyTorch's second "
        "argument is inplace, minidl's generator: name inplace=)",
    ):
        nn.Dropout(0.5, False)  # type: ignore[arg-type]


_REDUCED_LOSSES = ["CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss", "MSELoss", "L1Loss"]


@pytest.mark.parametrize("name", ["CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss"])
def test_a_loss_given_pytorchs_weight_tensor_first_says_weights_are_not_supported(
    name: str,
) -> None:
    """PyTorch's first argument of these losses is ``weight``, minidl's ``reduction``: a tensor
    given first was refused as a reduction, its values printed, with no word of weights."""
    torch_parameters = inspect.signature(getattr(torch.nn, name)).parameters
    assert next(iter(torch_parameters)) == "weight"
    with raises(
        ValueError,
        f"{name}: reduction must be 'mean' or 'sum', got a tensor of shape (3,) (weights, "
        "PyTorch's weight argument, are not supported; give reduction by name)",
    ):
        getattr(nn, name)(torch.ones(3))


@pytest.mark.parametrize("name", _REDUCED_LOSSES)
def test_a_loss_given_reduction_none_says_a_loss_per_sample_is_not_supported(name: str) -> None:
    getattr(torch.nn, name)(reduction="none")  # (PyTorch's per-sample losses)
    with raises(
        ValueError,
        f"{name}: reduction must be ",
        "got 'none' (a loss per sample is not supported: the loss is one number)",
    ):
        getattr(nn, name)(reduction="none")


def test_huber_loss_given_pytorchs_argument_order_says_to_name_them() -> None:
    """PyTorch's ``HuberLoss(reduction, delta)``, minidl's ``HuberLoss(delta, reduction)``."""
    torch.nn.HuberLoss("sum", 2.0)
    with raises(
        TypeError,
        "HuberLoss: delta, its first argument, must be a number, got 'sum'; PyTorch's HuberLoss "
        "takes reduction first, minidl's delta: give them by name",
    ):
        nn.HuberLoss("sum", 2.0)  # type: ignore[arg-type]
    loss = nn.HuberLoss(reduction="sum", delta=2.0)
    assert (loss.reduction, loss.delta) == ("sum", 2.0)


def test_sequential_backward_before_forward() -> None:
    with raises(RuntimeError, "backward called before forward"):
        nn.mlp((2, 3, 2)).backward(torch.ones(1, 2))


@pytest.mark.parametrize(
    "module",
    [
        nn.Linear(3, 4),
        nn.Tanh(),
        nn.ELU(),
        nn.Sigmoid(),
        nn.ReLU(),
        nn.LeakyReLU(),
        nn.SELU(),
        nn.GELU(),
        nn.GELU("tanh"),
        nn.SiLU(),
        nn.Softmax(),
        nn.LogSoftmax(),
        nn.BatchNorm1d(3),
        nn.Dropout(0.5),
        nn.Identity(),
        nn.Residual(nn.Sequential(nn.Linear(3, 3), nn.Tanh())),
    ],
    ids=repr,
)
def test_grad_output_of_wrong_shape(module: nn.Module) -> None:
    output = module(torch.randn(5, 3))
    before = _snapshot(module)
    with raises(ValueError, type(module).__name__, "(5, 7)", str(tuple(output.shape))):
        module.backward(torch.ones(5, 7))
    with raises(TypeError, type(module).__name__, "torch.Tensor", "list"):
        module.backward([[1.0]])
    _assert_unchanged(module, before)


@pytest.mark.parametrize(
    ("module", "input_shape"),
    [
        (nn.Linear(3, 4), (5, 3)),
        (nn.BatchedLinear(2, 3, 4), (2, 5, 3)),
        (nn.BatchNorm1d(3), (5, 3)),
        (nn.BatchNorm1d(3, affine=False), (5, 3)),
    ],
    ids=["Linear", "BatchedLinear", "BatchNorm1d", "BatchNorm1d-not-affine"],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int64])
def test_grad_output_of_another_dtype_or_device(
    module: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    """A module with parameters (or running statistics) computes in their dtype: a gradient of
    another dtype (or device) is refused before anything is accumulated, whether or not a good
    one came first, and the message names what the gradient must match."""
    name = type(module).__name__
    owner = "parameters" if list(module.parameters()) else "running statistics"
    output = module(torch.randn(input_shape))
    for warm in (False, True):
        if warm:  # the checks of a call like the last one are the quick ones
            module.backward(torch.ones_like(output))
        before = _snapshot(module)
        with raises(TypeError, name, f"gradient dtype {dtype}", f"{owner}' dtype torch.float32"):
            module.backward(torch.ones_like(output, dtype=dtype))
        with raises(TypeError, name, f"gradient dtype {dtype}"):
            module.backward_parameters(torch.ones_like(output, dtype=dtype))
        # (a meta tensor stands for another device on a machine without one)
        with raises(ValueError, name, "gradient is on meta", f"{owner} are on cpu"):
            module.backward(torch.ones_like(output, device="meta"))
        _assert_unchanged(module, before)


@pytest.mark.parametrize("shape", [(2, 0, 3), (2, 5), (3, 5, 3), (2, 5, 4)], ids=str)
def test_batched_linear_input_of_a_wrong_shape(shape: tuple[int, ...]) -> None:
    """An input must be (models, N, in_features) with N >= 1: an empty batch too is refused."""
    layer = nn.BatchedLinear(2, 3, 4, dtype=F64)
    x = torch.randn(2, 5, 3, dtype=F64)
    layer(x)
    before = _snapshot(layer)
    with raises(ValueError, "BatchedLinear", "(2, N, 3) with N >= 1", str(shape)):
        layer(torch.zeros(shape, dtype=F64))
    _assert_unchanged(layer, before)
    layer.backward(torch.ones(2, 5, 4, dtype=F64))  # the last good forward is still cached
    assert torch.equal(layer.weight.grad, torch.ones(2, 4, 5, dtype=F64) @ x)


# Inputs that no module taking a batch (N, 3) accepts: (input, exception, message fragments).
BAD_BATCHES = {
    "list": ([[1.0, 2.0, 3.0]], TypeError, ("torch.Tensor", "list")),
    "int64": (torch.ones(5, 3, dtype=torch.int64), TypeError, ("floating-point", "torch.int64")),
    "1-d": (torch.ones(3), ValueError, ("(N, features)", "(3,)")),
    "3-d": (torch.ones(2, 5, 3), ValueError, ("(N, features)", "(2, 5, 3)")),
    "0-d": (torch.ones(()), ValueError, ("(N, features)", "()")),
    "empty": (torch.ones(0, 3), ValueError, ("empty batch", "(0, 3)")),
}


@pytest.mark.parametrize(
    ("bad", "kind", "fragments"),
    [
        *BAD_BATCHES.values(),
        (torch.ones(5, 2), ValueError, ("expected 3 input features", "got 2")),
    ],
    ids=[*BAD_BATCHES, "features"],
)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_input_of_a_wrong_kind_or_shape(
    bad: Any, kind: type[Exception], fragments: tuple[str, ...], training: bool
) -> None:
    """Refused before the running statistics move, with the last good forward kept."""
    module = nn.BatchNorm1d(3, dtype=F64).train(training)
    output = module(torch.randn(5, 3, dtype=F64))
    upstream = torch.randn_like(output)
    expected_grad = module.backward(upstream)
    module.zero_grad()
    before = {name: tensor.clone() for name, tensor in module.state_dict().items()}
    with raises(kind, "BatchNorm1d", *fragments):
        module(bad.to(F64) if isinstance(bad, Tensor) and bad.is_floating_point() else bad)
    after = module.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[name], before[name]) for name in before)
    assert int(module.num_batches_tracked) == int(training)
    assert torch.equal(module.backward(upstream), expected_grad)


@pytest.mark.parametrize("module", [nn.Softmax(), nn.LogSoftmax()], ids=repr)
@pytest.mark.parametrize(
    ("bad", "kind", "fragments"), list(BAD_BATCHES.values()), ids=list(BAD_BATCHES)
)
def test_softmax_input_of_a_wrong_kind_or_shape(
    module: nn.Module, bad: Any, kind: type[Exception], fragments: tuple[str, ...]
) -> None:
    name = type(module).__name__
    _expect_forward_error_keeps_cache(module, torch.randn(5, 3), bad, kind, name, *fragments)


@pytest.mark.parametrize("criterion", LOSSES, ids=repr)
@pytest.mark.parametrize(
    ("prediction", "target", "kind", "fragments"),
    [
        (
            torch.ones(2, 5, 3, dtype=torch.int64),
            torch.zeros(2, 5, dtype=torch.int64),
            TypeError,
            ("floating-point", "torch.int64"),
        ),
        (
            torch.ones(2, 0, 3, dtype=F64),
            torch.zeros(2, 0, dtype=torch.int64),
            ValueError,
            ("empty", "(2, 0, 3)"),
        ),
        (
            torch.ones(0, 5, 3, dtype=F64),
            torch.zeros(0, 5, dtype=torch.int64),
            ValueError,
            ("empty", "(0, 5, 3)"),
        ),
        (
            torch.ones(2, 5, 3, dtype=F64),
            torch.zeros(2, 6, dtype=torch.int64),
            ValueError,
            ("class-index target has shape (2, 6), expected (2, 5)",),
        ),
        (
            torch.ones(2, 5, 3, dtype=F64),
            torch.tensor([[0, 1, 2, 0, 1], [0, 4, 1, 1, 1]]),
            ValueError,
            ("class index 4 is out of range for 3 classes", "[0, 2]"),
        ),
        (
            torch.ones(2, 5, 3, dtype=F64),
            torch.zeros(2, 5, 4, dtype=F64),
            ValueError,
            ("target has shape (2, 5, 4)", "(2, 5, 3)", "class indices of shape (2, 5)"),
        ),
    ],
    ids=["int64", "empty batch", "empty stack", "indices shape", "index range", "dense shape"],
)
def test_stacked_predictions_are_checked_as_stacks(
    criterion: nn.Loss,
    prediction: Tensor,
    target: Tensor,
    kind: type[Exception],
    fragments: tuple[str, ...],
) -> None:
    """(R, N, C) predictions and (R, N) indices: the messages give the stacked shapes, and a
    class index below N but not below C is out of range."""
    _expect_loss_error_keeps_cache(criterion, prediction, target, kind, *fragments)


@pytest.mark.parametrize(
    ("bad", "got"),
    [([[[1.0, 2.0, 3.0]]], "list"), (torch.ones(2, 5, 3, dtype=torch.int64), "torch.int64")],
    ids=["list", "int64"],
)
def test_batched_linear_input_of_a_wrong_kind(bad: Any, got: str) -> None:
    _expect_forward_error_keeps_cache(
        nn.BatchedLinear(2, 3, 4),
        torch.randn(2, 5, 3),
        bad,
        TypeError,
        "BatchedLinear: expected a floating-point tensor input",
        got,
    )


@pytest.mark.parametrize(
    ("models", "kind"),
    [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError), (None, TypeError)],
)
def test_batched_linear_needs_a_positive_number_of_models(models: Any, kind: type) -> None:
    """A number below 1 is a ValueError, another type (a bool among them) a TypeError, as
    torch.nn.Linear and the other modules' sizes."""
    with raises(kind, "BatchedLinear", "models must be a positive integer", repr(models)):
        nn.BatchedLinear(models, 3, 4)


@pytest.mark.parametrize(
    ("layers", "kind", "fragments"),
    [
        ([], TypeError, ("non-empty sequence of Linear", "got an empty list")),
        # (a generator was used up by the checks and refused as layers of no shape; a single
        # layer raised Python's "'Linear' object is not iterable")
        ((nn.Linear(3, 4) for _ in range(2)), TypeError, ("(a list or tuple), got generator",)),
        (nn.Linear(3, 4), TypeError, ("got the module Linear",)),
        (nn.Sequential(nn.Linear(3, 4)), TypeError, ("got the module Sequential",)),
        (
            [nn.Linear(3, 4), nn.Tanh()],
            TypeError,
            ("non-empty sequence of Linear", "got Tanh at layers[1]"),
        ),
        ([nn.Linear(3, 4), nn.Linear(3, 5)], ValueError, ("same shape", "(3, 4, True)")),
        ([nn.Linear(3, 4), nn.Linear(3, 4, bias=False)], ValueError, ("(3, 4, False)",)),
        ([nn.Linear(3, 4), nn.Linear(3, 4, dtype=F64)], ValueError, ("torch.float64",)),
    ],
    ids=["empty", "generator", "one layer", "sequential", "not Linear", "shape", "bias", "dtype"],
)
def test_batched_linear_stacks_only_alike_linear_layers(
    layers: list[nn.Module], kind: type[Exception], fragments: tuple[str, ...]
) -> None:
    with raises(kind, "BatchedLinear.stack", *fragments):
        nn.BatchedLinear.stack(layers)  # type: ignore[arg-type]


@pytest.mark.parametrize("which", ["bias", "weight"])
def test_stack_models_names_a_layer_resized_by_hand_in_its_own_words(which: str) -> None:
    """A weight or bias resized through ``.data`` was refused as ``BatchedLinear.stack:
    layers[3]: ...``, a function the caller did not call and the model's index taken for the
    layer's; it names the layer and the model, as stack_models' other refusals do."""
    models = [nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)) for _ in range(4)]
    if which == "bias":
        models[3][2].bias.data = torch.zeros(5)
        expected = "layer 2 of models[3]: bias has shape (5,), expected (out_features,) = (2,)"
    else:
        models[1][0].weight.data = torch.zeros(3, 3)
        expected = (
            "layer 0 of models[1]: weight has shape (3, 3), expected (out_features, "
            "in_features) = (3, 2)"
        )
    with pytest.raises(ValueError, match=f"^stack_models: {re.escape(expected)}$"):
        nn.stack_models(models)


def test_batched_linear_of_one_model_is_that_linear() -> None:
    layer = nn.BatchedLinear(1, 3, 4, dtype=F64)
    single = layer.unstack()[0]
    x = torch.randn(1, 5, 3, dtype=F64)
    # A batched product and a plain one may round differently in the last bit (MKL picks its
    # kernels by CPU), so the two are compared to 1e-12, not bit for bit.
    torch.testing.assert_close(layer(x)[0], single(x[0]), rtol=1e-12, atol=1e-12)


def test_batch_norm_takes_pytorchs_track_running_stats_true_and_refuses_false() -> None:
    """PyTorch's fifth argument, ``track_running_stats``: ``True`` (its default) is what minidl's
    ``BatchNorm1d`` does, the same statistics and outputs; ``False`` is refused naming it (a
    bare TypeError named the unexpected keyword, or the positional count)."""
    torch.manual_seed(0)
    x, y = torch.randn(6, 4, dtype=F64), torch.randn(3, 4, dtype=F64)
    mine = nn.BatchNorm1d(4, 1e-5, 0.2, True, True, dtype=F64)
    theirs = torch.nn.BatchNorm1d(4, 1e-5, 0.2, True, True, dtype=F64)
    torch.testing.assert_close(mine(x), theirs(x).detach(), rtol=0, atol=1e-15)
    mine.eval()
    theirs.eval()
    torch.testing.assert_close(mine(y), theirs(y).detach(), rtol=0, atol=1e-15)
    assert nn.BatchNorm1d(4, track_running_stats=True).state_dict().keys() == (
        theirs.state_dict().keys()
    )
    with raises(
        ValueError,
        "BatchNorm1d: track_running_stats=False is not supported: it always keeps running "
        "statistics and normalises with them in evaluation mode",
    ):
        nn.BatchNorm1d(4, track_running_stats=False)
    with raises(TypeError, "BatchNorm1d: track_running_stats must be True or False, got 1"):
        nn.BatchNorm1d(4, track_running_stats=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("affine", "name", "value"),
    [(True, "affine", False), (False, "affine", True), (True, "num_features", 4)],
)
def test_batch_norm_num_features_and_affine_are_fixed_at_construction(
    affine: bool, name: str, value: object
) -> None:
    """Set by hand, ``affine`` described a layer other than the one computing (its ``repr``
    said ``affine=False`` while its weight and bias still applied), and ``to_torch`` built a
    PyTorch layer by it: with ``affine=True`` set on a layer without them, one whose weight and
    bias were never written (uninitialised memory); ``num_features`` failed the next forward
    in the tensor library's words. Setting or deleting either now raises, naming the value
    kept, and leaves the layer, its forward and its conversion as they were."""
    from minidl.interop import to_torch

    torch.manual_seed(0)
    layer = nn.BatchNorm1d(3, affine=affine, dtype=F64)
    if affine:
        layer.weight.data.uniform_(1, 2)  # type: ignore[union-attr]
        layer.bias.data.uniform_(3, 4)  # type: ignore[union-attr]
    x = torch.randn(5, 3, dtype=F64)
    layer.eval()
    expected, shown_before = layer(x), repr(layer)
    kept = {"affine": affine, "num_features": 3}[name]
    with raises(AttributeError, f"BatchNorm1d: {name} is fixed at construction ({kept}), got "):
        setattr(layer, name, value)
    with raises(AttributeError, f"BatchNorm1d.{name} cannot be deleted: it is fixed at "):
        delattr(layer, name)
    assert getattr(layer, name) == kept
    assert repr(layer) == shown_before
    assert torch.equal(layer(x), expected)
    twin = to_torch(nn.Sequential(layer)).eval()
    assert twin[0].affine is affine
    torch.testing.assert_close(twin(x).detach(), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("build", "name", "value"),
    [
        (lambda: nn.Linear(2, 3, dtype=F64), "in_features", "abc"),
        (lambda: nn.Linear(2, 3, dtype=F64), "out_features", 4),
        (lambda: nn.BatchedLinear(2, 2, 3, dtype=F64), "models", 5),
        (lambda: nn.BatchedLinear(2, 2, 3, dtype=F64), "in_features", 3),
        (lambda: nn.BatchedLinear(2, 2, 3, dtype=F64), "out_features", 1),
        (lambda: nn.StackedActivation([(nn.Tanh(), 1), (nn.ReLU(), 1)]), "models", 4),
        (lambda: nn.StackedLoss([(nn.CrossEntropyLoss(), 1), (nn.MSELoss(), 1)]), "models", 4),
    ],
)
def test_the_sizes_of_a_linear_layer_are_fixed_at_construction(
    build: Callable[[], nn.Module], name: str, value: object
) -> None:
    """Set by hand, a layer's sizes described another layer than the one computing: its repr
    said so, its next forward failed in the words of the parameter check ("expected
    (out_features, in_features) = (3, 'abc')"), and a checkpoint recorded an architecture
    that its tensors contradict, which a model built alike could not load. Setting or
    deleting one now raises, naming the value kept, as a batch norm's num_features does, and
    leaves the layer as it was (even the value it had)."""
    layer = build()
    kind = type(layer).__name__
    kept = getattr(layer, name)
    # (a stacked activation or loss: its models past the runs were left unwritten, or ignored)
    x = torch.randn(*((2,) if kind != "Linear" else ()), 4, 2, dtype=F64)
    if kind == "StackedLoss":
        target = torch.zeros(2, 4, dtype=torch.long)
        expected, shown_before = layer(x, target), repr(layer)
        with raises(AttributeError, f"{kind}: {name} is fixed at construction ({kept}), got "):
            setattr(layer, name, value)
        assert getattr(layer, name) == kept and torch.equal(layer(x, target), expected)
        return
    expected, shown_before = layer(x), repr(layer)
    with raises(AttributeError, f"{kind}: {name} is fixed at construction ({kept}), got "):
        setattr(layer, name, value)
    with raises(AttributeError, f"{kind}.{name} cannot be deleted: it is fixed at "):
        delattr(layer, name)
    assert getattr(layer, name) == kept and repr(layer) == shown_before
    assert torch.equal(layer(x), expected)
    restored = pickle.loads(pickle.dumps(layer))
    assert getattr(restored, name) == kept and torch.equal(restored(x), expected)


def test_a_built_stacked_activation_or_loss_refuses_a_module_registered_in_a_runs_place() -> None:
    """A run's module registered again by hand was taken: the repr, the state dict and
    get_submodule named a Sigmoid where the forward computed the Tanh it was built with (a
    StackedLoss's MSE where it computed a cross-entropy). Refused, as a built Sequential
    refuses, nothing changed."""
    stacked = nn.StackedActivation([(nn.Tanh(), 1), (nn.ReLU(), 1)])
    loss = nn.StackedLoss([(nn.CrossEntropyLoss(), 1), (nn.MSELoss(), 1)])
    cases: list[tuple[nn.Module, nn.Module, str]] = [
        (stacked, nn.Sigmoid(), "StackedActivation"),
        (loss, nn.MSELoss(), "StackedLoss"),
    ]
    for module, given, kind in cases:
        shown_before = repr(module)
        with raises(
            ValueError,
            f"{kind}.register_module: a {kind}'s runs are fixed when it is built (its forward "
            f"computes them), got a {type(given).__name__} to register as '0:1'",
        ):
            module.register_module("0:1", given)
        assert repr(module) == shown_before
    assert isinstance(stacked.get_submodule("0:1"), nn.Tanh)


def test_a_subclass_may_set_a_fixed_size_again_to_the_value_kept() -> None:
    """A subclass of Linear that sets in_features itself, before or after its base's
    constructor, to the value the base keeps: refused as a change once the sizes were fixed,
    though nothing changed. Taken; another value is still refused."""

    class Before(nn.Linear):
        def __init__(self, n: int, m: int) -> None:
            nn.Module.__init__(self)
            self.in_features = n
            super().__init__(n, m)

    class After(nn.Linear):
        def __init__(self, n: int, m: int) -> None:
            super().__init__(n, m)
            self.in_features = n

    for kind in (Before, After):
        layer = kind(2, 3)
        assert (layer.in_features, layer(torch.ones(4, 2)).shape) == (2, (4, 3))
        with raises(AttributeError, f"{kind.__name__}: in_features is fixed at construction (2)"):
            layer.in_features = 3
    with raises(AttributeError, "Linear: in_features is fixed at construction (2), got 2.0"):
        nn.Linear(2, 3).in_features = 2.0  # (equal, but no int: a change of type)


@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_input_of_another_dtype_names_what_it_must_match(affine: bool) -> None:
    """A batch norm without parameters compares the input with its running statistics, and
    says so."""
    owner = "parameters" if affine else "running statistics"
    module = nn.BatchNorm1d(3, affine=affine)
    before = {name: tensor.clone() for name, tensor in module.state_dict().items()}
    with raises(TypeError, "BatchNorm1d", "input dtype torch.float64", f"{owner}' dtype"):
        module(torch.randn(5, 3, dtype=torch.float64))
    with raises(ValueError, "BatchNorm1d", "input is on meta", f"{owner} are on cpu"):
        module(torch.randn(5, 3, device="meta"))
    after = module.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[name], before[name]) for name in before)


def test_loss_backward_with_a_non_scalar_upstream() -> None:
    criterion = nn.MSELoss()
    criterion(torch.randn(2, 2), torch.tensor([0, 1]))
    with raises(ValueError, "MSELoss.backward", "scalar", "(2,)"):
        criterion.backward(torch.ones(2))
    # A Python number is a scalar: the refusal asks for a tensor (it said "must be a scalar,
    # got float").
    with pytest.raises(TypeError) as info:
        criterion.backward(2.0)
    assert str(info.value) == (
        "MSELoss.backward: the upstream gradient must be a tensor of one element, got float"
    )


# -- constructors of modules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "kind", "fragments"),
    [
        (lambda: nn.Linear(0, 2), ValueError, ("Linear", "in_features", "positive integer", "0")),
        (lambda: nn.Linear(2, 2.5), TypeError, ("Linear", "out_features", "2.5")),
        (lambda: nn.Linear(2, 2, dtype=torch.int64), TypeError, ("Linear", "torch.int64")),
        (lambda: nn.LeakyReLU(-math.inf), ValueError, ("LeakyReLU", "negative_slope", "-inf")),
        (lambda: nn.ELU(-math.inf), ValueError, ("ELU", "alpha", "finite", "-inf")),
        (lambda: nn.ELU(math.inf), ValueError, ("ELU", "alpha", "inf")),
        (
            lambda: nn.GELU("exact"),
            ValueError,
            ("GELU: approximate must be 'none' or 'tanh', got 'exact'",),
        ),
        (lambda: nn.GELU("Tanh"), ValueError, ("GELU", "approximate", "'Tanh'", "'tanh'")),
        (
            lambda: nn.GELU(None),
            TypeError,
            ("GELU: approximate must be a string, 'none' or 'tanh', got NoneType None",),
        ),
        (lambda: nn.GELU(True), TypeError, ("GELU", "approximate", "bool True")),
        (lambda: nn.MSELoss("avg"), ValueError, ("MSELoss", "reduction", "'avg'", "'paper'")),
        (lambda: nn.Sequential(nn.Tanh(), "relu"), TypeError, ("Sequential", "argument 1", "str")),
        (
            lambda: nn.Linear(2, 2, dtype="float64"),
            TypeError,
            (
                "Linear",
                "dtype must be torch.float16, torch.bfloat16, torch.float32 or",
                "got 'float64'",
            ),
        ),
        (
            lambda: nn.Linear(2, 2, generator=0),
            TypeError,
            ("Linear", "generator must be a torch.Generator or None", "got int"),
        ),
        (
            lambda: nn.Linear(2, 2, device="bogus"),
            ValueError,
            ("Linear", "'bogus' is not a device"),
        ),
        (lambda: nn.Linear(2, 2, bias="no"), TypeError, ("Linear", "bias must be True or False")),
        (
            lambda: nn.BatchNorm1d(2, dtype="float64"),
            TypeError,
            (
                "BatchNorm1d",
                "dtype must be torch.float16, torch.bfloat16, torch.float32 or",
                "got 'float64'",
            ),
        ),
        (lambda: nn.BatchNorm1d(2, device=3.5), ValueError, ("BatchNorm1d", "3.5 is not a device")),
        # A device this machine lacks (no CUDA build, or no 100th GPU): torch's own words follow.
        (
            lambda: nn.Linear(2, 2, device="cuda:99"),
            ValueError,
            ("Linear", "cannot put tensors on device 'cuda:99'"),
        ),
        (
            lambda: nn.BatchNorm1d(2, device="cuda:99"),
            ValueError,
            ("BatchNorm1d", "cannot put tensors on device 'cuda:99'"),
        ),
        (
            lambda: nn.Linear(2, 2, device="hpu"),
            ValueError,
            ("Linear", "cannot put tensors on device 'hpu'"),
        ),
        (
            lambda: nn.BatchedLinear(2, 2, 3, device="cuda:99"),
            ValueError,
            ("BatchedLinear", "cannot put tensors on device 'cuda:99'"),
        ),
        (
            lambda: nn.Softmax(1.0),
            TypeError,
            ("Softmax", "dim must be an int, 1 (or -1)", "float 1.0"),
        ),
        (
            lambda: nn.LogSoftmax(-1.0),
            TypeError,
            ("LogSoftmax", "dim must be an int", "float -1.0"),
        ),
        (lambda: nn.Softmax(True), TypeError, ("Softmax", "dim must be an int", "bool True")),
        (lambda: nn.Softmax("1"), TypeError, ("Softmax", "dim must be an int", "str '1'")),
        (
            lambda: nn.LogSoftmax(None),
            TypeError,
            ("LogSoftmax", "dim must be an int", "NoneType None"),
        ),
        (
            lambda: nn.mlp((2, 3, 2), None),
            TypeError,
            ("mlp", "activations must be an activation name or a sequence of names", "NoneType"),
        ),
        (lambda: nn.mlp((2, 2), "bogus"), ValueError, ("mlp", "unknown activation 'bogus'")),
    ],
)
def test_module_constructor_errors(
    make: Callable[[], Any], kind: type[Exception], fragments: tuple[str, ...]
) -> None:
    with raises(kind, *fragments):
        make()


_FLOAT8 = [torch.float8_e4m3fn, torch.float8_e5m2]
#: Each maker of a layer, a model or data that takes a dtype, and the name its message gives.
_DTYPE_TAKERS: dict[str, tuple[Callable[[torch.dtype], Any], str]] = {
    "Linear": (lambda dtype: nn.Linear(2, 3, dtype=dtype), "Linear: dtype"),
    "BatchedLinear": (lambda dtype: nn.BatchedLinear(2, 2, 3, dtype=dtype), "BatchedLinear: dtype"),
    "BatchNorm1d": (lambda dtype: nn.BatchNorm1d(3, dtype=dtype), "BatchNorm1d: dtype"),
    "mlp": (lambda dtype: nn.mlp([2, 3, 2], dtype=dtype), "Linear: dtype"),
    "to": (lambda dtype: nn.Sequential(nn.Linear(2, 3)).to(dtype), "Sequential.to: dtype"),
    "make_disk_data": (
        lambda dtype: make_disk_data(4, 2, 2, dtype=dtype),
        "make_disk_data: dtype",
    ),
}


@pytest.mark.parametrize("dtype", [*_FLOAT8, torch.int64, torch.complex64], ids=str)
@pytest.mark.parametrize("taker", list(_DTYPE_TAKERS))
def test_unsupported_dtype_is_refused_up_front(taker: str, dtype: torch.dtype) -> None:
    """A float8 dtype is floating point, but PyTorch's CPU kernels lack a layer's random fill,
    sums, tanh, addmv and add_: it failed later in torch's words ("normal_kernel_cpu" not
    implemented for 'Float8_e4m3fn', from Linear's initialisation; BatchNorm1d and ``to`` took
    it and the forward failed). It is refused up front like an integer or complex dtype, naming
    the maker, the dtype and the dtypes taken; a model cast to it is left as it was."""
    make, where = _DTYPE_TAKERS[taker]
    with raises(TypeError, where, f"got {dtype}", "torch.bfloat16, torch.float32"):
        make(dtype)
    with pytest.raises(TypeError) as info:
        make(dtype)
    assert "floating-point" not in str(info.value) and "floating point" not in str(info.value)


@pytest.mark.parametrize("taker", [taker for taker in _DTYPE_TAKERS if taker != "to"])
def test_a_dtype_that_compares_element_by_element_is_refused_as_no_dtype(taker: str) -> None:
    """A numpy array given as the dtype answers == element by element, so that looking it up
    among the four dtypes raises numpy's ValueError ('The truth value of an array with more
    than one element is ambiguous'): check_dtype refuses it first as no torch.dtype, a
    TypeError in the maker's words naming it. (With that check dropped, the lookup alone
    refused every other object as well, and this one in numpy's words. Module.to, which takes
    a positional argument for a device, asks for a torch.dtype itself.)"""
    make, where = _DTYPE_TAKERS[taker]
    with raises(TypeError, where, "got array([1, 2])"):
        make(np.array([1, 2]))  # type: ignore[arg-type]


_FLOAT8_INPUT_TAKERS: dict[str, Callable[[], nn.Module]] = {
    "Tanh": nn.Tanh,
    "ReLU": nn.ReLU,
    "Sigmoid": nn.Sigmoid,
    "Dropout": lambda: nn.Dropout(0.5),
    "Softmax": nn.Softmax,
    "Linear": lambda: nn.Linear(2, 2),
    "BatchNorm1d": lambda: nn.BatchNorm1d(2),
}


@pytest.mark.parametrize("dtype", _FLOAT8, ids=str)
@pytest.mark.parametrize("name", list(_FLOAT8_INPUT_TAKERS))
def test_a_float8_input_or_gradient_is_refused_naming_the_module(
    name: str, dtype: torch.dtype
) -> None:
    """A float8 tensor is floating point, and the per-call checks asked is_floating_point():
    it passed them, and the module failed in torch's words ('"tanh_vml_cpu" not implemented
    for 'Float8_e4m3fn'', no module named). It is refused as an integer one is, naming the
    module, the dtype and the four taken, also after an input of the same shape in float32
    (the checks a repeated shape skips), and so is a float8 gradient given to an activation."""
    module = _FLOAT8_INPUT_TAKERS[name]()
    x = torch.randn(3, 2)
    module(x)
    with raises(TypeError, f"{name}: expected a floating-point input of dtype float16, bfloat16, "):
        module(x.to(dtype))
    with pytest.raises(TypeError, match=f"got dtype {dtype}$"):
        module(x.to(dtype))
    if name in ("Tanh", "ReLU", "Sigmoid", "Dropout"):
        module(x)
        with raises(TypeError, f"{name}: expected a floating-point gradient of dtype float16, "):
            module.backward(x.to(dtype))
    loss = nn.CrossEntropyLoss()
    with raises(TypeError, "CrossEntropyLoss: expected a floating-point prediction of dtype "):
        loss(x.to(dtype), torch.tensor([0, 1, 0]))


@pytest.mark.parametrize("dtype", _FLOAT8, ids=str)
def test_float8_is_what_pytorch_cannot_compute_in(dtype: torch.dtype) -> None:
    """The reason for the refusal above: torch.nn.Linear cannot be made in float8, and a float8
    BatchNorm1d, which torch makes, cannot run a forward."""
    with pytest.raises(NotImplementedError):
        torch.nn.Linear(2, 3, dtype=dtype)
    with pytest.raises(NotImplementedError):
        torch.nn.BatchNorm1d(3, dtype=dtype)(torch.randn(4, 3).to(dtype))


@pytest.mark.parametrize("dtype", _FLOAT8, ids=str)
def test_a_parameter_refuses_float8_data(dtype: torch.dtype) -> None:
    """A Parameter is where a dtype enters a model of one's own, or a layer's weight given its
    values (``weight.data = ...``): float8 data was taken, and an optimizer's step then failed
    in torch's words ("add_stub" not implemented for 'Float8_e4m3fn'). It is refused like an
    integer one, naming the parameter, the dtype and the dtypes taken, the weight left as it
    was."""
    with raises(
        TypeError, "Parameter: data must be", f"got {dtype}", "torch.bfloat16, torch.float32"
    ):
        nn.Parameter(torch.zeros(2).to(dtype))
    layer = nn.Linear(2, 3)
    before = layer.weight.data
    with raises(
        TypeError,
        "Parameter 'weight': data must be",
        f"got {dtype}",
        "torch.bfloat16, torch.float32",
    ):
        layer.weight.data = torch.zeros(3, 2).to(dtype)
    assert layer.weight.data is before


def test_a_parameter_refuses_an_attribute_it_does_not_have() -> None:
    """A Parameter has data, grad and name alone (``__slots__``): another attribute, such as
    PyTorch's ``requires_grad``, is refused naming the parameter, the attribute and the
    attributes there are, and nothing changes."""
    layer = nn.Linear(2, 3)
    before = (layer.weight.data, layer.weight.data.clone(), layer.weight.grad)
    with raises(
        AttributeError,
        "Parameter 'weight' has no attribute 'requires_grad' to set; expected data, grad or name",
    ):
        layer.weight.requires_grad = False  # type: ignore[attr-defined]
    assert layer.weight.data is before[0] and torch.equal(layer.weight.data, before[1])
    assert layer.weight.grad is before[2] and not hasattr(layer.weight, "requires_grad")
    with raises(AttributeError, "Parameter has no attribute 'value' to set"):
        nn.Parameter(torch.zeros(2)).value = torch.ones(2)  # type: ignore[attr-defined]


def test_a_model_is_left_as_it_was_when_to_refuses_float8() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
    before = [p.data.clone() for p in model.parameters()]
    with raises(
        TypeError,
        "Sequential.to: dtype must be torch.float16, torch.bfloat16, torch.float32 or torch.float64 (the dtypes minidl computes in), got torch.float8_e5m2",
    ):
        model.to(torch.float8_e5m2)
    for parameter, value in zip(model.parameters(), before, strict=True):
        assert parameter.data.dtype == parameter.grad.dtype == torch.float32
        assert torch.equal(parameter.data, value)


# -- optimizers ----------------------------------------------------------------------------------


def _params() -> list[nn.Parameter]:
    return list(nn.Linear(2, 2).parameters())


@pytest.mark.parametrize(
    ("lr", "kind"),
    [
        (-1, ValueError),
        (-1e-9, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("0.1", TypeError),
        (True, TypeError),
    ],
)
@pytest.mark.parametrize("make", [optim.SGD, optim.Adadelta], ids=["SGD", "Adadelta"])
def test_bad_learning_rate(
    make: Callable[..., optim.Optimizer], lr: Any, kind: type[Exception]
) -> None:
    name = make.__name__
    with raises(kind, name, "lr", "[0, inf)", repr(lr)):
        make(_params(), lr=lr)
    optimizer = make(_params(), lr=0.5)
    with raises(kind, name, "lr", repr(lr)):
        optimizer.lr = lr
    assert optimizer.lr == 0.5


#: Each numeric hyper-parameter of the optimizers and the schedules, given ``bad`` (``o``: an
#: optimizer, ``p``: parameters), with the name its message gives it.
_NUMERIC_SETTINGS: dict[str, tuple[Callable[[Any, Any, object], Any], str]] = {
    "SGD lr": (lambda p, o, bad: optim.SGD(p, lr=bad), "SGD: lr"),
    "SGD momentum": (lambda p, o, bad: optim.SGD(p, lr=0.1, momentum=bad), "SGD: momentum"),
    "SGD weight_decay": (
        lambda p, o, bad: optim.SGD(p, lr=0.1, weight_decay=bad),
        "SGD: weight_decay",
    ),
    "Adadelta rho": (lambda p, o, bad: optim.Adadelta(p, rho=bad), "Adadelta: rho"),
    "Adadelta eps": (lambda p, o, bad: optim.Adadelta(p, eps=bad), "Adadelta: eps"),
    "Adagrad lr": (lambda p, o, bad: optim.Adagrad(p, lr=bad), "Adagrad: lr"),
    "Adagrad lr_decay": (lambda p, o, bad: optim.Adagrad(p, lr_decay=bad), "Adagrad: lr_decay"),
    "Adagrad initial_accumulator_value": (
        lambda p, o, bad: optim.Adagrad(p, initial_accumulator_value=bad),
        "Adagrad: initial_accumulator_value",
    ),
    "Adam lr": (lambda p, o, bad: optim.Adam(p, lr=bad), "Adam: lr"),
    "Adam betas[1]": (lambda p, o, bad: optim.Adam(p, betas=(0.9, bad)), "Adam: betas[1]"),
    "Adam eps": (lambda p, o, bad: optim.Adam(p, eps=bad), "Adam: eps"),
    "AdamW weight_decay": (
        lambda p, o, bad: optim.AdamW(p, weight_decay=bad),
        "AdamW: weight_decay",
    ),
    "RMSprop alpha": (lambda p, o, bad: optim.RMSprop(p, alpha=bad), "RMSprop: alpha"),
    "RMSprop momentum": (lambda p, o, bad: optim.RMSprop(p, momentum=bad), "RMSprop: momentum"),
    "StepDecay gamma": (lambda p, o, bad: optim.StepDecay(o, gamma=bad), "StepDecay: gamma"),
    "ExponentialDecay gamma": (
        lambda p, o, bad: optim.ExponentialDecay(o, gamma=bad),
        "ExponentialDecay: gamma",
    ),
    "CyclicLR base_lr": (lambda p, o, bad: optim.CyclicLR(o, bad, 0.1, 4), "CyclicLR: base_lr"),
    "CyclicLR max_lr": (lambda p, o, bad: optim.CyclicLR(o, 0.01, bad, 4), "CyclicLR: max_lr"),
    "OneCycle max_lr": (
        lambda p, o, bad: optim.OneCycle(o, max_lr=bad, total_steps=10),
        "OneCycle: max_lr",
    ),
    "OneCycle pct_start": (
        lambda p, o, bad: optim.OneCycle(o, max_lr=1.0, total_steps=10, pct_start=bad),
        "OneCycle: pct_start",
    ),
    "CosineAnnealing eta_min": (
        lambda p, o, bad: optim.CosineAnnealing(o, T_max=5, eta_min=bad),
        "CosineAnnealing: eta_min",
    ),
    "LinearWarmup start_factor": (
        lambda p, o, bad: optim.LinearWarmup(o, warmup_steps=3, start_factor=bad),
        "LinearWarmup: start_factor",
    ),
    "SGD.lr =": (lambda p, o, bad: setattr(o, "lr", bad), "SGD: lr"),
    "SGD.load_state_dict lr": (
        lambda p, o, bad: o.load_state_dict({**o.state_dict(), "lr": bad}),
        "SGD.load_state_dict: lr",
    ),
}


@pytest.mark.parametrize("bad", ["0.1", True, None, torch.tensor(0.1)], ids=repr)
@pytest.mark.parametrize("setting", sorted(_NUMERIC_SETTINGS))
def test_a_number_of_another_type_is_a_type_error(setting: str, bad: object) -> None:
    """A string such as ``"0.1"`` (or a bool, None, a tensor) given as a numeric
    hyper-parameter of an optimizer or a schedule was a ``ValueError``, as if the number were
    out of range; it is the ``TypeError`` of other wrong types (``step_size=2.5``), naming the
    class, the argument, the type and the value, and nothing changes."""
    make, where = _NUMERIC_SETTINGS[setting]
    optimizer = optim.SGD(_params(), lr=0.5)
    with raises(TypeError, f"{where} must be a finite number in ", f"{type(bad).__name__} {bad!r}"):
        make(_params(), optimizer, bad)
    assert optimizer.lr == 0.5 and optimizer.state_dict()["lr"] == 0.5


@pytest.mark.parametrize(
    ("betas", "kind"), [(0.9, TypeError), ("ab", TypeError), ((0.9, 0.99, 0.999), ValueError)]
)
def test_betas_that_are_no_pair_are_a_type_error_and_a_pair_of_three_a_value_error(
    betas: object, kind: type[Exception]
) -> None:
    with raises(kind, "Adam: betas must be a pair of numbers in [0, 1)", repr(betas)):
        optim.Adam(_params(), betas=betas)  # type: ignore[arg-type]


@pytest.mark.parametrize("momentum", [1.0, 1.5, -0.1, math.nan])
def test_bad_momentum(momentum: float) -> None:
    with raises(ValueError, "SGD", "momentum", "[0, 1)", repr(momentum)):
        optim.SGD(_params(), lr=0.1, momentum=momentum)


@pytest.mark.parametrize("rho", [-0.1, 1.01, math.nan])
def test_bad_rho(rho: float) -> None:
    with raises(ValueError, "Adadelta", "rho", "[0, 1]", repr(rho)):
        optim.Adadelta(_params(), rho=rho)


@pytest.mark.parametrize("eps", [0.0, -1e-6, math.inf])
def test_bad_eps(eps: float) -> None:
    with raises(ValueError, "Adadelta", "eps", "(0, inf)", repr(eps)):
        optim.Adadelta(_params(), eps=eps)


def test_bad_parameter_lists() -> None:
    layer = nn.Linear(2, 2)
    with raises(
        ValueError, "SGD", "empty parameter list", "register_module", "self.fc = Linear(...)"
    ):
        optim.SGD([], lr=0.1)
    with raises(TypeError, "SGD", "single Parameter"):
        optim.SGD(layer.weight, lr=0.1)  # type: ignore[arg-type]
    with raises(TypeError, "SGD", "params[1]", "Tensor"):
        optim.SGD([layer.weight, torch.zeros(2)], lr=0.1)  # type: ignore[list-item]
    with raises(ValueError, "SGD", "more than once"):
        optim.SGD([layer.weight, layer.weight], lr=0.1)
    # (named by both places, as two Parameters over one tensor are: docs/pytorch.md says so)
    bias = layer.bias
    assert bias is not None
    with raises(
        ValueError,
        "SGD: a parameter appears more than once in params, at params[1] and params[3]: each "
        "step would update it twice; give it once",
    ):
        optim.SGD([layer.weight, bias, nn.Parameter(torch.ones(2)), bias], lr=0.1)


@pytest.mark.parametrize(
    ("bad", "kind", "fragments"),
    [
        (None, TypeError, ("torch.Tensor", "NoneType", "zero_grad()")),
        ([0.0, 0.0, 0.0], TypeError, ("torch.Tensor", "list")),
        (torch.zeros(3, 2), ValueError, ("shape and device", "(2, 3) on cpu", "(3, 2) on cpu")),
        (torch.zeros(2, 3, dtype=torch.float64), TypeError, ("dtype", "torch.float64")),
        (torch.zeros(2, 3, dtype=torch.int64), TypeError, ("dtype", "torch.int64")),
        (torch.zeros(2, 3, device="meta"), ValueError, ("(2, 3) on meta",)),
    ],
    ids=["None", "list", "shape", "float64", "int64", "device"],
)
def test_parameter_grad_must_fit_data(bad: Any, kind: type[Exception], fragments: str) -> None:
    parameter = nn.Linear(3, 2).weight
    grad, replacements = parameter.grad, nn.Parameter.replacements
    with raises(kind, "Parameter 'weight'", "grad", *fragments):
        parameter.grad = bad
    assert parameter.grad is grad
    assert nn.Parameter.replacements == replacements


def test_parameter_data_assignment() -> None:
    parameter = nn.Parameter(torch.zeros(2, 3), name="w")
    for bad, kind, fragment in (
        (None, TypeError, "NoneType"),
        (torch.ones(3, dtype=torch.int64), TypeError, "torch.int64"),
    ):
        with raises(kind, "Parameter 'w'", "data", fragment):
            parameter.data = bad
    grad = parameter.grad
    parameter.data = torch.ones(2, 3)  # a new value that fits the gradient: the gradient stays
    assert parameter.grad is grad
    parameter.data = torch.ones(4, dtype=torch.float64)  # does not fit: zeros that fit
    assert parameter.grad.shape == (4,) and parameter.grad.dtype == torch.float64
    assert not parameter.grad.any()
    # (a meta tensor stands for another device on a machine without one)
    parameter.data = torch.ones(4, dtype=torch.float64, device="meta")
    assert parameter.grad.device.type == "meta" and parameter.grad.shape == (4,)
    with raises(TypeError, "Parameter", "name", "int"):
        parameter.name = 3  # type: ignore[assignment]


@pytest.mark.parametrize(
    "make",
    [lambda p: optim.SGD(p, lr=0.1, momentum=0.9), lambda p: optim.Adam(p, lr=0.1)],
    ids=["SGD momentum", "Adam"],
)
def test_optimizer_refuses_a_parameter_of_another_size(
    make: Callable[[list[nn.Parameter]], optim.Optimizer],
) -> None:
    """Its state would not fit: the step refuses before anything changes."""
    model = nn.mlp((2, 3, 2))
    optimizer = make(list(model.parameters()))
    list(model.parameters())[1].grad.fill_(1.0)
    optimizer.step()
    state = optimizer.state_dict()["state"]
    list(model.parameters())[1].data = torch.zeros(7)
    values = [p.data.clone() for p in model.parameters()]
    with raises(ValueError, type(optimizer).__name__, "params[1]", "7 values, 3 when"):
        optimizer.step()
    with raises(ValueError, type(optimizer).__name__, "params[1]"):
        optimizer.state_dict()
    assert all(torch.equal(p.data, v) for p, v in zip(model.parameters(), values, strict=True))
    assert all(torch.equal(optimizer.state[k], v) for k, v in state.items())


@pytest.mark.parametrize(
    "make",
    [lambda p: optim.SGD(p, lr=0.1, momentum=0.9), lambda p: optim.Adam(p, lr=0.1)],
    ids=["SGD momentum", "Adam"],
)
@pytest.mark.parametrize("change", ["append", "pop"])
def test_optimizer_refuses_parameters_added_to_or_taken_from_its_list(
    make: Callable[[list[nn.Parameter]], optim.Optimizer], change: str
) -> None:
    """A Parameter appended to ``optimizer.params`` (or one popped from it) after the state
    was made: step, zero_grad and state_dict raised zip's "zip() argument 2 is shorter than
    argument 1", from the message naming a parameter of another size. They name the
    optimizer and both counts, before anything changes."""
    model = nn.mlp((2, 3, 2))
    optimizer = make(list(model.parameters()))
    for parameter in model.parameters():
        parameter.grad.fill_(1.0)
    optimizer.step()
    state = {k: v.clone() for k, v in optimizer.state.items()}
    if change == "append":
        optimizer.params.append(nn.Parameter(torch.ones(4)))
    else:
        optimizer.params.pop()
    values = [p.data.clone() for p in model.parameters()]
    count = 5 if change == "append" else 3
    name = type(optimizer).__name__
    expected = f"{name}: params holds {count} Parameters, 4 when the optimizer was built"
    for method in (optimizer.step, optimizer.zero_grad, optimizer.state_dict):
        with raises(ValueError, expected, "build a new optimizer"):
            method()
    assert all(torch.equal(p.data, v) for p, v in zip(model.parameters(), values, strict=True))
    assert all(p.grad.eq(1.0).all() for p in model.parameters())
    assert all(torch.equal(optimizer.state[k], v) for k, v in state.items())
    assert optimizer.step_count == 1


def test_stateless_optimizer_follows_a_parameter_of_another_size() -> None:
    parameter = nn.Parameter(torch.zeros(3))
    optimizer = optim.SGD([parameter], lr=0.5)
    parameter.data = torch.ones(5)
    parameter.grad.fill_(2.0)
    optimizer.step()
    assert parameter.data.tolist() == [0.0] * 5


# -- schedulers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "kind", "fragments"),
    [
        (
            lambda o: optim.StepDecay(o, step_size=0),
            ValueError,
            ("StepDecay", "step_size", ">= 1", "0"),
        ),
        (lambda o: optim.StepDecay(o, step_size=2.5), TypeError, ("StepDecay", "step_size", "2.5")),
        (
            lambda o: optim.StepDecay(o, gamma=1.5),
            ValueError,
            ("StepDecay", "gamma", "[0, 1]", "1.5"),
        ),
        (lambda o: optim.StepDecay(o, gamma=-0.5), ValueError, ("StepDecay", "gamma", "-0.5")),
        (
            lambda o: optim.CyclicLR(o, 0.1, 0.01, 4),
            ValueError,
            ("CyclicLR", "max_lr", "[0.1, inf)", "0.01"),
        ),
        (lambda o: optim.CyclicLR(o, -0.1, 0.01, 4), ValueError, ("CyclicLR", "base_lr", "-0.1")),
        (lambda o: optim.CyclicLR(o, 0.01, 0.1, 0), ValueError, ("CyclicLR", "step_size_up", "0")),
        (
            lambda o: optim.CyclicLR(o, 0.01, 0.1, 4, step_size_down=0),
            ValueError,
            ("CyclicLR", "step_size_down"),
        ),
        (
            lambda o: optim.CyclicLR(o, 0.01, 0.1, 4, mode="triangle"),
            ValueError,
            ("CyclicLR", "mode", "'triangle'", "'exp_range'"),
        ),
        (
            lambda o: optim.CyclicLR(o, 0.01, 0.1, 4, gamma=0.0),
            ValueError,
            ("CyclicLR", "gamma", "(0, 1]"),
        ),
        (
            lambda o: optim.StepDecay(o.params),
            TypeError,
            ("StepDecay", "minidl Optimizer", "list"),
        ),
    ],
)
def test_scheduler_bad_arguments(
    make: Callable[[Any], Any], kind: type[Exception], fragments: tuple[str, ...]
) -> None:
    optimizer = optim.SGD(_params(), lr=0.5)
    with raises(kind, *fragments):
        make(optimizer)
    assert optimizer.lr == 0.5  # a failed construction does not touch the optimizer


_EVERY_SCHEDULE: dict[str, Callable[[Any], Any]] = {
    "StepDecay": lambda o: optim.StepDecay(o, step_size=2),
    "ExponentialDecay": lambda o: optim.ExponentialDecay(o, gamma=0.9),
    "CyclicLR": lambda o: optim.CyclicLR(o, 0.01, 0.1, 4),
    "OneCycle": lambda o: optim.OneCycle(o, max_lr=1.0, total_steps=10),
    "CosineAnnealing": lambda o: optim.CosineAnnealing(o, T_max=5),
    "CosineAnnealingWarmRestarts": lambda o: optim.CosineAnnealingWarmRestarts(o, T_0=3),
    "LinearWarmup": lambda o: optim.LinearWarmup(o, warmup_steps=3),
    "SequentialSchedule": lambda o: optim.SequentialSchedule(
        o, [optim.LinearWarmup(o, warmup_steps=3), optim.StepDecay(o, step_size=2)], [3]
    ),
}


@pytest.mark.parametrize("name", sorted(_EVERY_SCHEDULE))
@pytest.mark.parametrize(
    ("step", "kind"), [(-1, ValueError), (2.0, TypeError), (True, TypeError), ("2", TypeError)]
)
def test_lr_at_refuses_a_step_that_is_not_an_integer_from_0(
    name: str, step: object, kind: type[Exception]
) -> None:
    """Every schedule's ``lr_at`` names itself, the step and what it takes (it computed a rate
    from a float or a negative step before); a NumPy integer is an integer."""
    schedule = _EVERY_SCHEDULE[name](optim.SGD(_params(), lr=0.5))
    with raises(kind, f"{name}.lr_at: step must be an integer >= 0, got {step!r}"):
        schedule.lr_at(step)
    assert schedule.lr_at(np.int64(3)) == schedule.lr_at(3)


def test_lr_at_of_a_schedule_of_ones_own_is_as_written_or_checked_by_choice() -> None:
    """A schedule written by a user keeps its ``lr_at`` as written (a static one, one with
    another signature); :func:`checks_step` gives it the built-in schedules' check, and a
    subclass of a built-in schedule has the check in its own name."""
    from minidl.optim.lr_scheduler import checks_step

    class Static(optim.LRScheduler):
        def __init__(self, optimizer: optim.Optimizer) -> None:
            super().__init__(optimizer)
            self._start()

        @staticmethod
        def lr_at(epoch: int, scale: float = 1.0) -> float:  # type: ignore[override]
            return scale / (epoch + 1)

    static = Static(optim.SGD(_params(), lr=0.5))
    assert static.step() == 0.5 and static.lr_at(epoch=3, scale=2.0) == 0.5

    class Halving(Static):
        @checks_step
        def lr_at(self, step: int) -> float:
            return float(self.base_lr) / 2**step

    halving = Halving(optim.SGD(_params(), lr=0.5))
    with raises(ValueError, "Halving.lr_at: step must be an integer >= 0, got -2"):
        halving.lr_at(-2)
    assert halving.step() == 0.25

    class Slower(optim.StepDecay):
        pass

    slower = Slower(optim.SGD(_params(), lr=0.5), step_size=2)
    with raises(TypeError, "Slower.lr_at: step must be an integer >= 0, got 1.5"):
        slower.lr_at(1.5)


@pytest.mark.parametrize(
    ("state", "kind", "fragment"),
    [
        ({"last_step": 3}, KeyError, "missing keys ['base_lr']"),
        ({"base_lr": 0.1, "last_step": -1}, ValueError, "last_step"),
        (
            {"base_lr": 0.1, "last_step": 2.0},
            TypeError,
            "last_step must be an integer >= 0, got 2.0",
        ),
        ({"base_lr": -0.1, "last_step": 2}, ValueError, "base_lr must be in [0, inf), got -0.1"),
        # NaN passed the old ">= 0" check and failed in the optimizer, the counters changed.
        ({"base_lr": float("nan"), "last_step": 2}, ValueError, "base_lr must be a finite"),
        ({"base_lr": float("inf"), "last_step": 2}, ValueError, "base_lr must be a finite"),
        ({"base_lr": "0.1", "last_step": 2}, TypeError, "base_lr must be a finite"),
    ],
)
def test_scheduler_load_state_dict_bad_entries(
    state: dict[str, Any], kind: type[Exception], fragment: str
) -> None:
    optimizer = optim.SGD(_params(), lr=0.5)
    scheduler = optim.StepDecay(optimizer, step_size=1)
    scheduler.step()
    before = (scheduler.state_dict(), optimizer.lr)
    with raises(kind, "StepDecay.load_state_dict", fragment):
        scheduler.load_state_dict(state)
    assert (scheduler.state_dict(), optimizer.lr) == before


def _sgd_with_momentum(params: list[nn.Parameter]) -> optim.Optimizer:
    return optim.SGD(params, lr=0.1, momentum=0.9)


def _adam_without_hyperparameters(params: list[nn.Parameter]) -> dict[str, Any]:
    state = optim.Adam(params).state_dict()
    del state["hyperparameters"]  # (as an older state_dict, or one written by hand)
    return state


def _adam_with_an_entry_added(params: list[nn.Parameter]) -> dict[str, Any]:
    """An Adam's state dict with an entry no Adam has: its own settings were named as "other
    settings", to build the Adam with (the ones it had)."""
    state = optim.Adam(params).state_dict()
    state["state"]["max_exp_avg_sq"] = torch.zeros(sum(p.data.numel() for p in params))
    return state


@pytest.mark.parametrize(
    ("make", "source", "expected"),
    [
        (
            lambda p: optim.SGD(p, lr=0.1),
            lambda p: optim.Adam(p).state_dict(),
            "SGD.load_state_dict: state must have the entries [], got ['exp_avg', 'exp_avg_sq'] "
            "(it looks like another optimizer's state: its hyper-parameters ['betas', 'eps', "
            "'weight_decay'] are those of Adam or AdamW; SGD takes ['momentum'])",
        ),
        (
            optim.Adam,
            lambda p: optim.RMSprop(p).state_dict(),
            "Adam.load_state_dict: state must have the entries ['exp_avg', 'exp_avg_sq'], got "
            "['square_avg'] (it looks like another optimizer's state: its hyper-parameters "
            "['alpha', 'centered', 'eps', 'momentum', 'weight_decay'] are those of RMSprop; Adam "
            "takes ['betas', 'eps', 'weight_decay'])",
        ),
        (
            lambda p: optim.SGD(p, lr=0.1),
            lambda p: _sgd_with_momentum(p).state_dict(),
            "SGD.load_state_dict: state must have the entries [], got ['momentum_buffer'] (a "
            "state saved with other settings, momentum=0.9; build this SGD with them)",
        ),
        (
            lambda p: optim.SGD(p, lr=0.1),
            _adam_without_hyperparameters,
            "SGD.load_state_dict: state must have the entries [], got ['exp_avg', 'exp_avg_sq'] "
            "(it looks like another optimizer's state, or one saved with other settings)",
        ),
        (
            optim.Adam,
            _adam_with_an_entry_added,
            "Adam.load_state_dict: state must have the entries ['exp_avg', 'exp_avg_sq'], got "
            "['exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'] (saved with this Adam's own settings, "
            "whose state has no other entries: the state was edited, or put together from "
            "another optimizer's)",
        ),
    ],
    ids=[
        "Adam into SGD",
        "RMSprop into Adam",
        "momentum into plain SGD",
        "no hyper-parameters",
        "an entry added",
    ],
)
def test_another_optimizers_state_is_refused_saying_so(
    make: Callable[[list[nn.Parameter]], optim.Optimizer],
    source: Callable[[list[nn.Parameter]], dict[str, Any]],
    expected: str,
) -> None:
    """Adam's state_dict loaded into an SGD was refused as "state must have the entries [],
    got ['exp_avg', 'exp_avg_sq']" alone; the message says it looks like another optimizer's
    state, and whose (a state_dict records its hyper-parameters, not its class), or one saved
    with other settings; nothing changes."""
    params = _params()
    optimizer = make(params)
    before = optimizer.state_dict()
    with pytest.raises(KeyError) as info:
        optimizer.load_state_dict(source(params))
    assert info.value.args == (expected,)
    after = optimizer.state_dict()
    assert after.keys() == before.keys() and after["hyperparameters"] == before["hyperparameters"]
    assert (after["lr"], after["step_count"], sorted(after["state"])) == (
        before["lr"],
        before["step_count"],
        sorted(before["state"]),
    )


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("SGD", "lr, momentum, weight_decay, nesterov"),
        ("Adam", "lr, betas, eps, weight_decay"),
        ("RMSprop", "lr, alpha, eps, weight_decay, momentum, centered"),
    ],
)
def test_param_groups_and_add_param_group_say_an_optimizer_is_one_group(
    name: str, settings: str
) -> None:
    """``optimizer.param_groups[0]["lr"] = 0.5`` and ``add_param_group`` (``torch.optim``'s) were
    a bare AttributeError; both now name the optimizer and say what to do instead (the
    documented difference: the settings are checked attributes, one optimizer per group).
    ``hasattr`` and ``getattr`` with a default still see no ``param_groups``."""
    torch.manual_seed(0)
    model = nn.mlp((2, 3, 2), "tanh")
    optimizer = getattr(optim, name)(model.parameters(), lr=0.1)
    with raises(
        AttributeError,
        f"{name}.param_groups: a minidl optimizer is one group of parameters (optimizer.params) "
        f"and has no param_groups: read and set its settings ({settings}) as attributes, "
        "optimizer.lr = 0.01, checked as the constructor checks them; build one optimizer for "
        "each group",
    ):
        optimizer.param_groups[0]["lr"] = 0.5
    assert not hasattr(optimizer, "param_groups")
    assert getattr(optimizer, "param_groups", None) is None
    extra = nn.Parameter(torch.zeros(2))
    torch_optimizer = getattr(torch.optim, name)([torch.zeros(2, requires_grad=True)], lr=0.1)
    torch_optimizer.add_param_group({"params": [torch.zeros(2, requires_grad=True)]})
    with raises(
        TypeError,
        f"{name}.add_param_group: parameter groups are not supported (a minidl optimizer is one "
        "group, fixed when it is built), got a dict; build another optimizer for these "
        "parameters",
    ):
        optimizer.add_param_group({"params": [extra]})
    assert optimizer.params == list(model.parameters()) and optimizer.lr == 0.1
    for setting in settings.split(", "):
        getattr(optimizer, setting)  # (each setting named is an attribute)


def test_optimizer_and_scheduler_load_state_dict_need_a_mapping() -> None:
    optimizer = optim.SGD(_params(), lr=0.5)
    scheduler = optim.StepDecay(optimizer, step_size=1)
    for target in (optimizer, scheduler):
        for bad in (5, None, [("lr", 0.1)]):
            with raises(
                TypeError,
                f"{type(target).__name__}.load_state_dict: expected a mapping",
                type(bad).__name__,
            ):
                target.load_state_dict(bad)  # type: ignore[arg-type]


def test_optimizer_load_state_dict_says_a_torch_optim_state_dict_is_not_its_own() -> None:
    """A ``torch.optim`` optimizer's state_dict (``state`` and ``param_groups``) was refused as
    "missing keys ['lr', 'step_count']" alone; the message says whose it looks like."""
    optimizer = optim.SGD(_params(), lr=0.5, momentum=0.9)
    theirs = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, momentum=0.9)
    with raises(
        KeyError,
        "SGD.load_state_dict: missing keys ['lr', 'step_count'] (a PyTorch optimizer's "
        "state_dict, with param_groups: a minidl optimizer loads what a minidl optimizer's "
        "state_dict() returns)",
    ):
        optimizer.load_state_dict(theirs.state_dict())
    assert optimizer.lr == 0.5
    with pytest.raises(KeyError) as info:
        optimizer.load_state_dict({"state": {}})
    assert "torch.optim" not in str(info.value)


# -- state dicts ---------------------------------------------------------------------------------


def _bad_module_states() -> list[
    tuple[Callable[[dict[str, Tensor]], None], type[Exception], tuple[str, ...]]
]:
    def missing(state: dict[str, Tensor]) -> None:
        del state["2.bias"]

    def unexpected(state: dict[str, Tensor]) -> None:
        state["5.weight"] = torch.zeros(2)

    def misshaped(state: dict[str, Tensor]) -> None:
        state["2.weight"] = torch.zeros(3, 2)

    def integer(state: dict[str, Tensor]) -> None:
        state["2.weight"] = torch.zeros(2, 3, dtype=torch.int64)

    def not_a_tensor(state: dict[str, Tensor]) -> None:
        state["0.bias"] = [0.0, 0.0, 0.0]  # type: ignore[assignment]

    def meta(state: dict[str, Tensor]) -> None:  # the last entry: the others would be copied
        state["2.bias"] = state["2.bias"].to("meta")

    def sparse(state: dict[str, Tensor]) -> None:
        state["2.weight"] = state["2.weight"].to_sparse()

    return [
        (missing, KeyError, ("Sequential.load_state_dict", "missing keys ['2.bias']")),
        (unexpected, KeyError, ("Sequential.load_state_dict", "unexpected keys ['5.weight']")),
        (misshaped, ValueError, ("Sequential.load_state_dict", "'2.weight'", "(3, 2)", "(2, 3)")),
        (integer, TypeError, ("Sequential.load_state_dict", "'2.weight'", "torch.int64")),
        (not_a_tensor, TypeError, ("Sequential.load_state_dict", "'0.bias'", "list")),
        (meta, TypeError, ("Sequential.load_state_dict", "'2.bias' is a meta tensor", "dense")),
        (sparse, TypeError, ("Sequential.load_state_dict", "'2.weight' is a sparse_coo tensor")),
    ]


@pytest.mark.parametrize(
    ("corrupt", "kind", "fragments"), _bad_module_states(), ids=lambda v: getattr(v, "__name__", "")
)
def test_module_load_state_dict_bad_entries(
    corrupt: Callable[[dict[str, Tensor]], None], kind: type[Exception], fragments: tuple[str, ...]
) -> None:
    torch.manual_seed(1)
    model = nn.mlp((2, 3, 2))
    before = model.state_dict()
    torch.manual_seed(2)
    state = nn.mlp((2, 3, 2)).state_dict()  # different values: a partial write would show
    corrupt(state)
    with raises(kind, *fragments):
        model.load_state_dict(state)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_module_load_state_dict_needs_a_mapping() -> None:
    model = nn.mlp((2, 3, 2))
    for bad in (5, [("0.weight", torch.zeros(3, 2))]):
        with raises(
            TypeError, "Sequential.load_state_dict: expected a mapping", type(bad).__name__
        ):
            model.load_state_dict(bad)  # type: ignore[arg-type]
    # A model on the meta device takes a meta state (nothing to copy).
    on_meta = nn.mlp((2, 3, 2)).to("meta")
    on_meta.load_state_dict({k: v.to("meta") for k, v in model.state_dict().items()})


def test_module_load_state_dict_non_strict_skips_what_one_side_lacks() -> None:
    # As in PyTorch: the entries both have are loaded, and the keys skipped are returned.
    model = nn.Linear(2, 2)
    state = {**nn.Linear(2, 2).state_dict(), "extra": torch.zeros(1)}
    assert model.load_state_dict(state, strict=False) == ([], ["extra"])
    assert torch.equal(model.weight.data, state["weight"])
    bias = model.bias.data.clone()
    del state["bias"]
    state["weight"] = torch.ones(2, 2)
    skipped = model.load_state_dict(state, strict=False)
    assert skipped.missing_keys == ["bias"] and skipped.unexpected_keys == ["extra"]
    assert torch.equal(model.weight.data, torch.ones(2, 2))
    assert torch.equal(model.bias.data, bias)
    assert model.load_state_dict(model.state_dict()) == ([], [])
    with raises(KeyError, "missing keys ['bias']", "strict=False loads the keys both have"):
        model.load_state_dict(state)
    with raises(TypeError, "Linear.load_state_dict: strict must be True or False, got 'no'"):
        model.load_state_dict(state, strict="no")  # type: ignore[arg-type]


def test_a_trained_trunk_loads_into_a_model_with_a_new_head() -> None:
    trunk = nn.mlp((2, 5, 5, 3))
    model = nn.mlp((2, 5, 5, 4))  # the same layers but the last
    head = {k: v for k, v in trunk.state_dict().items() if not k.startswith("4.")}
    before = model.state_dict()
    assert model.load_state_dict(head, strict=False) == (["4.weight", "4.bias"], [])
    after = model.state_dict()
    for key, value in after.items():
        expected = before[key] if key.startswith("4.") else trunk.state_dict()[key]
        assert torch.equal(value, expected), key


def _optimizer_with_history() -> optim.SGD:
    layer = nn.Linear(2, 2)
    optimizer = optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        layer.weight.grad.normal_()
        optimizer.step()
    return optimizer


def _bad_optimizer_states() -> list[
    tuple[str, Callable[[dict[str, Any]], None], type[Exception], str]
]:
    def drop(key: str) -> Callable[[dict[str, Any]], None]:
        return lambda state: state.pop(key)

    def set_(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
        return lambda state: state.__setitem__(key, value)

    return [
        ("missing-lr", drop("lr"), KeyError, "missing keys ['lr']"),
        ("missing-state", drop("state"), KeyError, "missing keys ['state']"),
        ("negative-lr", set_("lr", -0.1), ValueError, "lr must be in [0, inf), got -0.1"),
        ("bad-step-count", set_("step_count", -3), ValueError, "step_count"),
        (
            "float-step-count",
            set_("step_count", 1.0),
            TypeError,
            "step_count must be an integer >= 0, got 1.0",
        ),
        (
            "wrong-state-name",
            set_("state", {"velocity": torch.zeros(6)}),
            KeyError,
            "['momentum_buffer']",
        ),
        ("misshaped-state", set_("state", {"momentum_buffer": torch.zeros(5)}), ValueError, "(5,)"),
        (
            "integer-state",
            set_("state", {"momentum_buffer": torch.zeros(6, dtype=torch.int64)}),
            TypeError,
            "torch.int64",
        ),
        (
            "meta-state",  # checked before anything is written: lr and step_count were set first
            set_("state", {"momentum_buffer": torch.zeros(6, device="meta")}),
            TypeError,
            "state 'momentum_buffer' is a meta tensor",
        ),
        (
            "bad-momentum",
            set_("hyperparameters", {"momentum": 1.5}),
            ValueError,
            "momentum must be in [0, 1), got 1.5",
        ),
        ("unknown-hyperparameter", set_("hyperparameters", {"rho": 0.9}), KeyError, "['momentum']"),
        *(
            (
                f"hyperparameters-{type(value).__name__}",
                set_("hyperparameters", value),
                TypeError,
                f"hyperparameters must be a mapping of names to values (as state_dict() returns), "
                f"got {type(value).__name__}",
            )
            for value in (5, None, "abc", [])
        ),
        (
            "state-not-a-tensor",
            set_("state", {"momentum_buffer": None}),
            TypeError,
            "state 'momentum_buffer' must be a tensor, got NoneType",
        ),
        (
            "other-shapes",  # the same number of values, in parameters of other shapes
            set_("shapes", [[6]]),
            ValueError,
            "the state was saved for parameters of shapes [(6,)], but this optimizer's "
            "parameters have shapes [(2, 2), (2,)]",
        ),
        ("shapes-not-a-list", set_("shapes", 3), ValueError, "parameters of shapes 3, but"),
    ]


@pytest.mark.parametrize(
    ("corrupt", "kind", "fragment"),
    [case[1:] for case in _bad_optimizer_states()],
    ids=[case[0] for case in _bad_optimizer_states()],
)
def test_optimizer_load_state_dict_bad_entries(
    corrupt: Callable[[dict[str, Any]], None], kind: type[Exception], fragment: str
) -> None:
    optimizer = _optimizer_with_history()
    before = optimizer.state_dict()
    state = _optimizer_with_history().state_dict()
    state["lr"], state["hyperparameters"] = 0.2, {"momentum": 0.5}  # a partial write would show
    corrupt(state)
    with raises(kind, "SGD.load_state_dict: ", fragment):
        optimizer.load_state_dict(state)
    after = optimizer.state_dict()
    assert (after["lr"], after["step_count"], after["hyperparameters"]) == (
        before["lr"],
        before["step_count"],
        before["hyperparameters"],
    )
    assert torch.equal(after["state"]["momentum_buffer"], before["state"]["momentum_buffer"])


# -- builders and data ---------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[2], [], [2, 0, 2], [2, 2.5, 2], [2, -3], [2, True, 2]], ids=str)
def test_mlp_bad_sizes(sizes: list[Any]) -> None:
    with raises(ValueError, "mlp", "sizes", "positive integers", repr(sizes)):
        nn.mlp(sizes)


def test_mlp_bad_sizes_of_numpy_integers_are_written_as_integers() -> None:
    """The sizes were written with their numpy reprs, "[np.int64(2), np.int64(0), ...]"."""
    for sizes in (np.array([2, 0, 2]), [np.int64(2), np.int32(0), 2]):
        with raises(ValueError, "mlp: sizes must be at least two positive integers, got [2, 0, 2]"):
            nn.mlp(sizes)


@pytest.mark.parametrize(
    ("sizes", "activations", "what", "got"),
    [
        (3, "tanh", "sizes", "int"),
        (2, 3, "sizes", "int"),  # mlp(2, 3): the widths as separate arguments
        ({2, 25, 3}, "tanh", "sizes", "an unordered set"),
        ((2, 3, 3, 2), {"relu", "tanh"}, "activations", "an unordered set"),
        ((2, 3, 3, 2), frozenset({"tanh"}), "activations", "an unordered frozenset"),
        ((2, 3, 2), b"tanh", "activations", "bytes"),
        # (a tensor's elements are 0-dim tensors, listed as "[tensor(2), tensor(3), ...]"
        # under "must be at least two positive integers"; bytes were taken as the sizes of
        # their byte values, b"\x02\x03" a Linear(2, 3); a str's characters were listed)
        (torch.tensor([2, 3, 2]), "tanh", "sizes", "a Tensor; pass sizes.tolist()"),
        (torch.tensor([[2, 3]]), "tanh", "sizes", "a Tensor; pass sizes.tolist()"),
        (b"\x02\x03", "tanh", "sizes", "bytes"),
        (bytearray(b"\x02\x03\x02"), "tanh", "sizes", "bytearray"),
        ("232", "tanh", "sizes", "str"),
    ],
    # (named by hand: a set of strings' repr changes from one process to the next)
    ids=[
        "int",
        "two ints",
        "set of sizes",
        "set of names",
        "frozenset of names",
        "bytes",
        "tensor of sizes",
        "2-dim tensor of sizes",
        "bytes of sizes",
        "bytearray of sizes",
        "str of sizes",
    ],
)
def test_mlp_refuses_sizes_and_activations_that_are_no_sequence(
    sizes: Any, activations: Any, what: str, got: str
) -> None:
    """A number of sizes was Python's bare "'int' object is not iterable", without mlp's name;
    a set was taken in its own order (not the one written, and for names not the same from
    one run to the next), and bytes as a sequence of names of its byte values."""
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    with raises(TypeError, f"mlp: {what} must be", f"got {got}"):
        nn.mlp(sizes, activations, generator=generator)
    assert torch.equal(generator.get_state(), state)


def test_mlp_of_two_sizes_is_one_linear_layer() -> None:
    model = nn.mlp((3, 2), "relu")
    assert len(model) == 1 and isinstance(model[0], nn.Linear)
    assert (model[0].in_features, model[0].out_features) == (3, 2)


@pytest.mark.parametrize("activations", ["softmax", ("tanh", "softplus")], ids=str)
def test_mlp_unknown_activation_lists_valid_names(activations: Any) -> None:
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    with raises(
        ValueError,
        "mlp: unknown activation",
        "valid names are elu, gelu, gelutanh, leakyrelu, relu, selu, sigmoid, silu, tanh",
    ):
        nn.mlp((2, 3, 3, 2), activations, generator=generator)
    assert torch.equal(generator.get_state(), state)  # checked before any weight is drawn


def test_activation_by_an_unknown_name() -> None:
    with raises(ValueError, "activation: unknown activation 'softplus'", "valid names are elu"):
        nn.activation("softplus")


@pytest.mark.parametrize("name", [None, 3, b"relu", ["relu"]], ids=repr)
def test_activation_by_a_name_that_is_no_str_is_a_type_error(name: Any) -> None:
    """``activation(None)`` (or an int, bytes, a list of names) raised ValueError ("unknown
    activation None"), where a wrong type is a TypeError, as everywhere else in minidl; mlp
    said the same of such a name among its activations."""
    with raises(
        TypeError,
        f"activation: an activation name must be a str, got {type(name).__name__} {name!r}; "
        "valid names are elu",
    ):
        nn.activation(name)
    with raises(TypeError, f"mlp: an activation name must be a str, got {type(name).__name__}"):
        nn.mlp((2, 3, 3, 2), ("tanh", name))


class _Swish(nn.Activation):
    """An activation of one's own, x * sigmoid(x)."""

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        return input * torch.sigmoid(input), input

    def _backward(self, grad_output: Tensor, input: Tensor) -> Tensor:
        sigmoid = torch.sigmoid(input)
        return grad_output * (sigmoid + input * sigmoid * (1 - sigmoid))


def test_mlp_and_activation_given_an_activation_module_or_class_say_how_to_use_it() -> None:
    """An activation's class or module given in place of its name (``mlp(sizes, nn.Tanh)``, an
    activation of one's own) was refused as ``got type`` or with the module's repr; the
    message now names the class or module, gives a built-in class's name, says that a name
    gives a built-in module's default settings, and how to build the network with an
    activation of one's own (a Sequential; ``activation`` returns the module itself)."""
    own = (
        "(mlp builds minidl's activations by name; for an activation of your own, or other "
        "settings, build the Sequential: Sequential(Linear(2, 8), _Swish(), Linear(8, 2)))"
    )
    start = "mlp: activations must be an activation name or a sequence of names, got "
    with raises(TypeError, start + "the class _Swish " + own):
        nn.mlp((2, 8, 8, 2), _Swish)
    with raises(TypeError, start + "an instance of _Swish " + own):
        nn.mlp((2, 8, 8, 2), _Swish())
    with raises(TypeError, start + "the class Tanh (give its name, 'tanh')"):
        nn.mlp((2, 8, 8, 2), nn.Tanh)
    with raises(
        TypeError,
        start + "an instance of LeakyReLU (mlp builds minidl's activations by name, 'leakyrelu' "
        "builds LeakyReLU with its default settings; for an activation of your own, or other "
        "settings, build the Sequential: Sequential(Linear(2, 8), LeakyReLU(), Linear(8, 2)))",
    ):
        nn.mlp((2, 8, 8, 2), nn.LeakyReLU(0.2))
    with raises(
        TypeError,
        "mlp: an activation name must be a str, got the class _Swish " + own + "; valid names "
        "are elu",
    ):
        nn.mlp((2, 8, 8, 2), ("tanh", _Swish))
    with raises(
        TypeError,
        "mlp: an activation name must be a str, got the class GELU (give its name, 'gelu'); "
        "valid names are elu",
    ):
        nn.mlp((2, 8, 8, 2), ("tanh", nn.GELU))
    with raises(
        TypeError,
        "activation: an activation name must be a str, got the class _Swish (activation builds "
        "minidl's activations by name; use _Swish() itself); valid names are elu",
    ):
        nn.activation(_Swish)
    with raises(
        TypeError,
        "activation: an activation name must be a str, got an instance of ReLU (activation "
        "builds minidl's activations by name, 'relu' builds ReLU with its default settings; use the module "
        "itself); valid names are elu",
    ):
        nn.activation(nn.ReLU())


def test_a_class_of_one_s_own_named_as_a_built_in_one_is_not_taken_for_it() -> None:
    """A class of one's own whose name is a built-in activation's (a ReLU of one's own) is
    refused as one's own, with how to use it: its name would build minidl's ReLU."""

    class ReLU(nn.Activation):
        def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
            return input.clamp_min(0), input

        def _backward(self, grad_output: Tensor, input: Tensor) -> Tensor:
            return grad_output * (input > 0)

    with raises(
        TypeError,
        "mlp: activations must be an activation name or a sequence of names, got the class "
        "ReLU (mlp builds minidl's activations by name; for an activation of your own, or "
        "other settings, build the Sequential: Sequential(Linear(2, 8), ReLU(), Linear(8, 2)))",
    ):
        nn.mlp((2, 8, 8, 2), ReLU)
    with raises(
        TypeError,
        "activation: an activation name must be a str, got an instance of ReLU (activation "
        "builds minidl's activations by name; use the module itself); valid names are elu",
    ):
        nn.activation(ReLU())


@pytest.mark.parametrize(
    ("sizes", "names", "expected"),
    [
        ((2, 3, 3, 2), ("tanh", "relu", "elu"), "expected 2 activation names for 2 hidden layers"),
        ((2, 3, 2), ("tanh", "relu"), "expected 1 activation name for 1 hidden layer"),
        ((2, 2), ("tanh",), "expected 0 activation names for 0 hidden layers"),
    ],
)
def test_mlp_wrong_number_of_activation_names(
    sizes: tuple[int, ...], names: tuple[str, ...], expected: str
) -> None:
    """The counts in the message agree with their nouns (one hidden layer took "1 activation
    names for 1 hidden layers")."""
    with raises(ValueError, f"mlp: {expected}, got {len(names)}"):
        nn.mlp(sizes, names)


@pytest.mark.parametrize(
    ("kwargs", "kind", "fragments"),
    [
        ({"n_train": 1}, ValueError, ("make_disk_data", "n_train", ">= 2", "1")),
        ({"n_train": 0}, ValueError, ("make_disk_data", "n_train", "0")),
        ({"n_validation": 0}, ValueError, ("make_disk_data", "n_validation", ">= 1")),
        ({"n_test": -5}, ValueError, ("make_disk_data", "n_test", "-5")),
        ({"n_test": 2.5}, TypeError, ("make_disk_data", "n_test", "2.5")),
        ({"n_train": True}, TypeError, ("make_disk_data", "n_train", "True")),
        ({"dtype": torch.int64}, TypeError, ("make_disk_data", "dtype", "torch.int64")),
        ({"seed": "0"}, TypeError, ("make_disk_data", "seed", "'0'")),
    ],
)
def test_make_disk_data_bad_arguments(
    kwargs: dict[str, Any], kind: type[Exception], fragments: tuple[str, ...]
) -> None:
    with raises(kind, *fragments):
        make_disk_data(**kwargs)


@pytest.mark.parametrize(
    ("batch_size", "kind"), [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)]
)
def test_batch_iterator_bad_batch_size(batch_size: Any, kind: type[Exception]) -> None:
    with raises(kind, "BatchIterator", "batch_size", repr(batch_size)):
        BatchIterator(torch.zeros(4, 2), torch.zeros(4), batch_size)


def test_batch_iterator_bad_data() -> None:
    with raises(ValueError, "BatchIterator", "x and y", "10 and 9"):
        BatchIterator(torch.zeros(10, 2), torch.zeros(9), 2)
    with raises(TypeError, "BatchIterator", "y", "list"):
        BatchIterator(torch.zeros(2, 2), [0, 1], 2)  # type: ignore[arg-type]
    with raises(ValueError, "BatchIterator", "x", "at least one sample"):
        BatchIterator(torch.zeros(0, 2), torch.zeros(0), 2)
    with raises(TypeError, "BatchIterator", "generator", "torch.Generator", "int"):
        BatchIterator(torch.zeros(2, 2), torch.zeros(2), 2, generator=0)  # type: ignore[arg-type]
    # The meta device stands in for a second device; the shuffle used to fail on it with
    # torch's index_select message, at the first pass.
    with raises(ValueError, "BatchIterator: x and y must be on one device", "cpu and meta"):
        BatchIterator(torch.zeros(2, 2), torch.zeros(2, device="meta"), 2)


@pytest.mark.parametrize(
    ("attribute", "make", "fragment"),
    [
        ("weight", lambda w: w.transpose(-1, -2), "weight has shape"),
        ("bias", lambda b: b[..., :-1], "bias has shape"),
        ("bias", lambda b: b.to(torch.float32), "bias is torch.float32 on cpu but weight is"),
    ],
    ids=["weight transposed", "bias too short", "bias of another dtype"],
)
@pytest.mark.parametrize("stacked", [False, True], ids=["Linear", "BatchedLinear"])
def test_a_parameter_assigned_by_hand_must_fit_the_layer(
    stacked: bool, attribute: str, make: Callable[[Tensor], Tensor], fragment: str
) -> None:
    """``layer.weight.data = ...`` of the wrong shape (a transposed weight is the usual slip) or
    a bias unlike the weight: the next forward names the layer, what it got and what it
    expects, instead of a shape error from deep inside a matrix product; after the right
    tensor is put back, the layer computes what it did before."""
    layer: nn.Module = (
        nn.BatchedLinear(2, 3, 4, dtype=F64) if stacked else nn.Linear(3, 4, dtype=F64)
    )
    x = torch.randn(2, 5, 3, dtype=F64) if stacked else torch.randn(5, 3, dtype=F64)
    expected = layer(x)
    parameter = getattr(layer, attribute)
    good = parameter.data
    parameter.data = make(good)
    name = type(layer).__name__
    with raises(ValueError, f"{name}: {fragment}"):
        layer(x)
    if fragment.endswith("has shape"):
        names = {
            ("weight", False): "(out_features, in_features)",
            ("bias", False): "(out_features,)",
            ("weight", True): "(models, out_features, in_features)",
            ("bias", True): "(models, out_features)",
        }[attribute, stacked]
        expected_text = (
            f"{name}: {attribute} has shape {tuple(parameter.data.shape)}, "
            f"expected {names} = {tuple(good.shape)}"
        )
        with pytest.raises(ValueError) as info:
            layer(x)
        assert str(info.value) == expected_text
    parameter.data = good
    assert torch.equal(layer(x), expected)


@pytest.mark.parametrize("attribute", ["weight", "bias"])
@pytest.mark.parametrize(
    "make", [lambda t: t[:-1], lambda t: t.to(torch.float32)], ids=["shape", "dtype"]
)
def test_batch_norm_parameter_assigned_by_hand_must_fit(
    attribute: str, make: Callable[[Tensor], Tensor]
) -> None:
    """Checked before the running statistics are updated: a failed training forward leaves
    them as they were."""
    layer = nn.BatchNorm1d(3, dtype=F64)
    x = torch.randn(5, 3, dtype=F64)
    parameter = getattr(layer, attribute)
    good = parameter.data
    parameter.data = make(good)
    statistics = [b.clone() for _, b in layer.named_buffers()]
    with raises(ValueError, f"BatchNorm1d: {attribute} has shape", "expected (3,), torch.float64"):
        layer(x)
    assert all(
        torch.equal(a, b)
        for a, b in zip(statistics, [b for _, b in layer.named_buffers()], strict=True)
    )
    parameter.data = good
    layer(x)


@pytest.mark.parametrize(
    ("criterion", "target"),
    [
        (nn.L1Loss(), torch.zeros(2, 4, 3, dtype=F64)),
        (nn.HuberLoss(), torch.zeros(2, 4, 3, dtype=F64)),
        (nn.BCEWithLogitsLoss(), torch.zeros(2, 4, 3, dtype=F64)),
        (nn.NLLLoss(), torch.zeros(2, 4, dtype=torch.int64)),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, nn.Loss) else "",
)
def test_losses_without_stacks_refuse_stacked_predictions(
    criterion: nn.Loss, target: Tensor
) -> None:
    """They reduce over a batch of (N, C): a stack's (R, N, C) would be read as one batch, its
    mean over all R models, each model's gradient R times too small. Refused, in the loss, in
    a StackedLoss and in fit_rounds, with the cache of the last good call kept."""
    assert not criterion.stacks and nn.CrossEntropyLoss.stacks and nn.MSELoss.stacks
    name = type(criterion).__name__
    good = torch.zeros(4, 3, dtype=F64)
    criterion(good, target[0])
    expected = criterion.backward().clone()
    with raises(ValueError, f"{name}: expected a prediction of shape (N, C), got shape (2, 4, 3)"):
        criterion(torch.zeros(2, 4, 3, dtype=F64), target)
    assert torch.equal(criterion.backward(), expected)
    with raises(TypeError, f"StackedLoss: run 1 holds {name}, which does not take stacked"):
        nn.StackedLoss([(nn.MSELoss(), 1), (criterion, 1)])
    models = [nn.mlp((2, 3), generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    with raises(TypeError, f"fit_rounds: criterion {name} does not take stacked predictions"):
        fit_rounds(
            models,
            criterion,
            lambda stack: optim.SGD(stack.parameters(), lr=0.1),
            [(torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64))] * 2,
            epochs=1,
            batch_size=2,
            generators=[torch.Generator(), torch.Generator()],
        )


def test_stacked_loss_interrupted_between_runs_keeps_every_last_good_forward() -> None:
    """A KeyboardInterrupt in the second run's forward (Ctrl-C between two runs) leaves the
    first run's criterion with the last good forward, as a refusal does: its backward gives the
    gradient of that forward, not of the interrupted call's part."""

    class Interrupted(nn.MSELoss):
        interrupt = False

        def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
            if self.interrupt:
                raise KeyboardInterrupt
            return super().forward(prediction, target)

    first, second = nn.MSELoss(), Interrupted()
    stacked = nn.StackedLoss([(first, 1), (second, 1)])
    generator = torch.Generator().manual_seed(0)
    good = torch.randn(2, 4, 3, dtype=F64, generator=generator)
    target = torch.randn(2, 4, 3, dtype=F64, generator=generator)
    stacked(good, target)
    expected = stacked.backward().clone()
    second.interrupt = True
    with pytest.raises(KeyboardInterrupt):
        stacked(good * 7, target)
    second.interrupt = False
    assert torch.equal(stacked.backward(), expected)


def test_sequential_refuses_a_module_at_two_places() -> None:
    """A module keeps its last forward's cache for its backward: one object at two places
    (an activation reused as in ``torch.nn``, even inside a nested block) would give wrong
    gradients without an error. Refused, naming both places; a new object per place is fine."""
    tanh, linear = nn.Tanh(), nn.Linear(3, 3)
    with raises(
        ValueError,
        "Sequential: the Tanh at '3' is the same object as the one at '1'",
        "each place needs its own (e.g. a second Tanh())",
    ):
        nn.Sequential(nn.Linear(2, 3), tanh, nn.Linear(3, 3), tanh)
    with raises(
        ValueError,
        "the Linear at '2' is the same object as the one at '0'",
        "second.register_parameter('weight', first.weight)",
    ):
        nn.Sequential(linear, nn.Tanh(), linear)
    with raises(ValueError, "the Tanh at '1.block.1' is the same object as the one at '0.0'"):
        nn.Sequential(nn.Sequential(tanh), nn.Residual(nn.Sequential(nn.Linear(3, 3), tanh)))
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.Tanh())
    with raises(ValueError, "the Sequential at '1' is the same object as the one at '0'"):
        nn.Sequential(model, model)
    assert len(nn.Sequential(model[:2], model[2:])) == 2  # the same modules, each once


def test_a_layer_at_two_places_is_told_how_to_tie_its_weights() -> None:
    """The refusal of one Linear at two places said weights cannot be shared between places,
    while one Parameter registered in two layers is a tie (docs/pytorch.md's tied weights). The hint
    it gives now, followed, builds the model, whose gradients are autograd's for the tie."""
    torch.manual_seed(0)
    first = nn.Linear(3, 3, dtype=torch.float64)
    with pytest.raises(ValueError) as info:
        nn.Sequential(first, nn.Tanh(), first)
    message = str(info.value)
    assert "cannot be shared" not in message
    hint = message[message.index("second.register_parameter(") : message.rindex(")")]
    second = nn.Linear(3, 3, dtype=torch.float64)
    eval(hint, {"first": first, "second": second})
    model = nn.Sequential(first, nn.Tanh(), second)
    assert model.num_parameters() == 9 + 3 + 3
    x = torch.randn(4, 3, dtype=torch.float64)
    g = torch.randn(4, 3, dtype=torch.float64)
    model(x)
    model.backward(g)
    weight = first.weight.data.clone().requires_grad_(True)
    b1 = first.bias.data.clone().requires_grad_(True)
    b2 = second.bias.data.clone().requires_grad_(True)
    (torch.tanh(x @ weight.T + b1) @ weight.T + b2).backward(g)
    torch.testing.assert_close(first.weight.grad, weight.grad, rtol=1e-10, atol=1e-12)
    assert second.weight is first.weight
    with raises(ValueError, "a second Sequential of new layers", "register_parameter"):
        block = nn.Sequential(nn.Linear(3, 3))
        nn.Sequential(block, nn.Tanh(), block)


def test_stacked_modules_refuse_one_object_in_two_runs() -> None:
    """Each run's forward would overwrite the cache of the other's backward."""
    tanh, loss = nn.Tanh(), nn.MSELoss()
    with raises(ValueError, "StackedActivation: run 2 holds the same Tanh object as run 0"):
        nn.StackedActivation([(tanh, 2), (nn.ReLU(), 1), (tanh, 3)])
    with raises(ValueError, "StackedLoss: run 2 holds the same MSELoss object as run 0"):
        nn.StackedLoss([(loss, 2), (nn.CrossEntropyLoss(), 1), (loss, 3)])


def test_sequential_index_out_of_range() -> None:
    model = nn.mlp((2, 3, 2))
    assert model[-1] is model[2]
    with raises(IndexError, "Sequential", "index 3", "3 modules"):
        model[3]
    for index in ("0", 1.0, True, None):
        with raises(
            TypeError, "Sequential: indices must be integers or slices", type(index).__name__
        ):
            model[index]  # type: ignore[call-overload]


def test_fit_bad_arguments() -> None:
    model = nn.mlp((2, 3, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    before = model.state_dict()
    for epochs in (-1, True, 2.0, "2"):
        kind = ValueError if epochs == -1 else TypeError
        with raises(kind, "fit: epochs must be an integer >= 0, got", repr(epochs)):
            fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=epochs)  # type: ignore[arg-type]
    for start in (-1, 1.0):
        kind = ValueError if start == -1 else TypeError
        with raises(kind, "fit: start_epoch must be an integer >= 0, got", repr(start)):
            fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=2, start_epoch=start)  # type: ignore[arg-type]
    # A sparse set failed at the first batch in torch's words ("Could not run
    # 'aten::as_strided' with arguments from the 'SparseCPU' backend").
    with raises(TypeError, "fit: x must be a dense (strided) tensor, got a sparse_coo tensor"):
        fit(model, nn.CrossEntropyLoss(), optimizer, x.to_sparse(), y, epochs=1)
    with raises(TypeError, "fit: y must be a dense (strided) tensor, got a sparse_coo tensor"):
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y.to_sparse(), epochs=1)
    other = optim.StepDecay(optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1))
    with raises(ValueError, "fit", "scheduler"):
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, scheduler=other)
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)


def test_sizes_may_be_numpy_integers() -> None:
    """Sizes read from numpy arrays are integers (as torch.nn takes them), stored as ints."""
    numpy = pytest.importorskip("numpy")
    layer = nn.Linear(numpy.int64(2), numpy.int32(3))
    assert (layer.in_features, layer.out_features) == (2, 3)
    assert type(layer.in_features) is int
    model = nn.mlp(numpy.array([2, 4, 2]), "tanh")
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [4, 2]
    assert nn.BatchNorm1d(numpy.int64(3)).num_features == 3
    with raises(TypeError, "Linear", "in_features", "positive integer"):
        nn.Linear(numpy.float64(2.0), 3)


# -- gradients of parameter-free modules -----------------------------------------------------------


def _parameter_free_modules() -> list[tuple[str, Callable[[], nn.Module]]]:
    return [
        ("Tanh", nn.Tanh),
        ("Sigmoid", nn.Sigmoid),
        ("ReLU", nn.ReLU),
        ("LeakyReLU", nn.LeakyReLU),
        ("ELU", nn.ELU),
        ("SELU", nn.SELU),
        ("GELU", nn.GELU),
        ("GELU tanh", lambda: nn.GELU("tanh")),
        ("SiLU", nn.SiLU),
        ("Softmax", nn.Softmax),
        ("LogSoftmax", nn.LogSoftmax),
        ("Dropout", lambda: nn.Dropout(0.5)),
    ]


@pytest.mark.parametrize(
    "build",
    [build for _, build in _parameter_free_modules()],
    ids=[n for n, _ in _parameter_free_modules()],
)
def test_a_gradient_that_is_not_floating_point_or_on_another_device_is_named(
    build: Callable[[], nn.Module],
) -> None:
    """An integer gradient was accepted and promoted; one on another device failed with
    torch's message, which names no module. A floating-point gradient of another dtype is
    still promoted (see test_modules)."""
    module = build()
    module(torch.randn(2, 3))
    name = type(module).__name__
    with raises(
        TypeError,
        f"{name}: expected a floating-point gradient of dtype float16, bfloat16, float32 or "
        "float64, got dtype torch.int64",
    ):
        module.backward(torch.ones(2, 3, dtype=torch.int64))
    with raises(ValueError, f"{name}: gradient is on meta but the last forward's output is on cpu"):
        module.backward(torch.ones(2, 3, device="meta"))
    assert module.backward(torch.ones(2, 3, dtype=torch.float64)).dtype == torch.float64


def test_a_stacked_activation_names_a_gradient_on_another_device() -> None:
    stacked = nn.StackedActivation([(nn.Tanh(), 1), (nn.ReLU(), 1)])
    stacked(torch.randn(2, 4, 3))
    with raises(ValueError, "gradient is on meta but the last forward's output is on cpu"):
        stacked.backward(torch.ones(2, 4, 3, device="meta"))


class _ReturnsOutputAlone(nn.Activation):
    """An activation of one's own whose _forward forgot its cache."""

    def _forward(self, input: Tensor) -> Tensor:  # type: ignore[override]
        return input * input

    def _backward(self, grad_output: Tensor, input: Tensor) -> Tensor:
        return 2 * grad_output * input


class _CachesTwoTensors(nn.Activation):
    """An activation of one's own that caches two tensors, as a tuple or stacked."""

    def __init__(self, stacked: bool) -> None:
        super().__init__()
        self.stacked = stacked

    def _forward(self, input: Tensor) -> tuple[Tensor, Any]:  # type: ignore[override]
        t = torch.tanh(input)
        cache = torch.stack([input, t]) if self.stacked else (input, t)
        return input * t, cache

    def _backward(self, grad_output: Tensor, cache: Any) -> Tensor:
        input, t = cache[0], cache[1]
        return grad_output * (t + input * (1 - t * t))


@pytest.mark.parametrize("rows", [2, 3])
def test_an_activation_whose_forward_returns_no_pair_is_refused(rows: int) -> None:
    """The output alone of a batch of 2 was unpacked as (row 0, row 1): the forward returned
    row 0 and cached row 1, silently; of another batch it failed in Python's unpacking."""
    activation = _ReturnsOutputAlone()
    for module in (activation, nn.Sequential(nn.Linear(3, 3), _ReturnsOutputAlone())):
        with raises(
            TypeError,
            "_ReturnsOutputAlone._forward must return the pair (output, cache), got a tensor "
            f"of shape ({rows}, 3)",
        ):
            module(torch.randn(rows, 3))
    with raises(RuntimeError, "_ReturnsOutputAlone: backward called before forward"):
        activation.backward(torch.ones(rows, 3))  # (nothing was cached)


class _Returns(nn.Activation):
    """An activation of one's own whose _forward returns what it is given to return."""

    def __init__(self, result: Callable[[Tensor], Any]) -> None:
        super().__init__()
        self.result = result

    def _forward(self, input: Tensor) -> Any:  # type: ignore[override]
        return self.result(input)

    def _backward(self, grad_output: Tensor, input: Tensor) -> Tensor:
        return 2 * grad_output * input


def _twice(value: object) -> tuple[object, object]:
    """``value`` as the output and as the cache."""
    return value, value


@pytest.mark.parametrize(
    ("result", "kind", "message"),
    [
        (
            lambda x: (x * x, x, x),
            TypeError,
            "_Returns._forward must return the pair (output, cache), got a tuple of 3 items",
        ),
        (
            lambda x: (x * x,),
            TypeError,
            "_Returns._forward must return the pair (output, cache), got a tuple of 1 item;",
        ),
        (
            lambda x: [x * x, x],
            TypeError,
            "_Returns._forward must return the pair (output, cache), got list;",
        ),
        (
            lambda x: ((x * x).tolist(), x),
            TypeError,
            "_Returns._forward must return a tensor as the output, got list",
        ),
        (
            lambda x: ((x * x).tolist(), None),
            TypeError,
            "_Returns._forward must return a tensor as the output, got list",
        ),
        (
            lambda x: _twice((x * x).tolist()),
            TypeError,
            "_Returns._forward must return a tensor as the output, got list",
        ),
    ],
    ids=["three", "one", "list", "output-list", "output-list-no-cache", "output-list-as-cache"],
)
def test_an_activation_whose_forward_returns_something_else_is_refused(
    result: Callable[[Tensor], Any], kind: type[Exception], message: str
) -> None:
    """Named by the activation, with what came back; the last good forward is kept. (An output
    that is no tensor with a tensor as the cache failed in Python's words, 'list' object has no
    attribute 'shape'; given as its own cache, it was taken and returned.)"""
    activation = _Returns(lambda x: (x * x, x))
    good = torch.randn(4, 3)
    activation(good)
    expected = activation.backward(torch.ones(4, 3))
    activation.result = result
    with raises(kind, message):
        activation(torch.randn(4, 3))
    assert torch.equal(activation.backward(torch.ones(4, 3)), expected)


@pytest.mark.parametrize("stacked", [False, True], ids=["tuple", "stacked"])
def test_an_activation_cache_that_is_no_tensor_of_the_outputs_shape_is_refused(
    stacked: bool,
) -> None:
    """Backward checks the gradient against the cache's shape: a tuple failed there with an
    AttributeError ('tuple' object has no attribute 'shape'), a stacked tensor refused the
    right gradient as one of the wrong shape. Both are refused by the forward, by name."""
    kind = ValueError if stacked else TypeError
    for module, shape in (
        (_CachesTwoTensors(stacked), (4, 3)),
        (nn.Sequential(nn.Linear(3, 3), _CachesTwoTensors(stacked)), (4, 3)),
        # (model 1's slice of a stack of 2)
        (nn.StackedActivation([(nn.Tanh(), 1), (_CachesTwoTensors(stacked), 1)]), (1, 4, 3)),
    ):
        got = f"a tensor of shape {(2, *shape)}" if stacked else "a tuple"
        with raises(
            kind,
            f"_CachesTwoTensors._forward returned {got} as the cache",
            f"expected one tensor of the output's shape {shape}",
        ):
            module(torch.randn(2, 4, 3) if len(shape) == 3 else torch.randn(4, 3))


def test_numpy_numbers_are_numbers() -> None:
    """Every constructor takes numpy integers and floats, as ``Linear`` and the optimizers do."""
    np = pytest.importorskip("numpy")
    assert nn.BatchedLinear(np.int64(3), 2, 4).weight.shape[0] == 3
    assert nn.ELU(np.float32(0.5)).alpha == 0.5
    assert nn.LeakyReLU(np.float64(0.25)).negative_slope == 0.25
    assert type(nn.GELU(np.str_("tanh")).approximate) is str  # (a subclass of str, kept plain)
    assert nn.Softmax(np.int64(1)).dim == 1
    stacked = nn.StackedActivation([(nn.Tanh(), np.int64(2)), (nn.ReLU(), 1)])
    assert stacked.models == 3


def test_a_schedule_state_past_its_step_limit_is_refused_by_name() -> None:
    """The refusal names the loading schedule and the step asked for (it was OneCycle's own
    message about another step, from inside a chain), and nothing changes."""
    optimizer = optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    warmup = optim.LinearWarmup(optimizer, warmup_steps=3, interval="batch")
    chain = optim.SequentialSchedule(
        optimizer, [warmup, optim.OneCycle(optimizer, max_lr=1.0, total_steps=5)], milestones=[3]
    )
    before = (chain.state_dict(), optimizer.lr)
    with raises(
        ValueError,
        "SequentialSchedule.load_state_dict: last_step 20 is past this schedule's last step 8",
    ):
        chain.load_state_dict({"base_lr": 0.7, "last_step": 20})
    assert (chain.state_dict(), optimizer.lr) == before
    chain.load_state_dict({"base_lr": 0.7, "last_step": 8})


def test_training_counts_may_be_numpy_integers() -> None:
    """``epochs``, ``start_epoch`` and ``batch_size`` of ``fit`` and ``fit_rounds``, and the
    model of ``predict`` and ``error_rate`` is checked by name."""
    np = pytest.importorskip("numpy")
    from minidl.rounds import fit_rounds
    from minidl.train import error_rate, predict

    torch.manual_seed(0)
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 1, 0])
    model = nn.mlp((2, 3, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    history = fit(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        x,
        y,
        epochs=np.int64(3),
        start_epoch=np.int64(1),
        batch_size=np.int64(2),
    )
    assert len(history.train_loss) == 2
    models = [nn.mlp((2, 3, 2)) for _ in range(2)]
    histories = fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        lambda stack: optim.SGD(stack.parameters(), lr=0.1),
        [(x, y), (x, y)],
        epochs=np.int64(2),
        batch_size=np.int64(3),
        generators=[torch.Generator().manual_seed(seed) for seed in range(2)],
    )
    assert [len(h.train_loss) for h in histories] == [2, 2]
    for function in (predict, error_rate):
        name = function.__name__
        with raises(
            TypeError,
            f"{name}: model must be a minidl Module, got a lambda, which has no backward; a "
            "module of your own computes a function in its forward and its gradient in its backward",
        ):
            function(lambda t: t, x, *([y] if function is error_rate else []))  # type: ignore[operator, arg-type]


def test_sequential_says_how_to_mend_the_usual_wrong_arguments() -> None:
    with raises(
        TypeError,
        "Sequential: argument 1 must be a minidl Module, got the class ReLU; pass an instance, ReLU()",
    ):
        nn.Sequential(nn.Linear(2, 3), nn.ReLU)  # type: ignore[arg-type]
    with raises(
        TypeError,
        "argument 0 must be a minidl Module, got a list; pass the modules themselves, Sequential(*modules)",
    ):
        nn.Sequential([nn.Linear(2, 3)])  # type: ignore[arg-type]
    with raises(TypeError, "got ReLU, a PyTorch module (minidl.interop.from_torch converts one)"):
        nn.Sequential(torch.nn.ReLU())  # type: ignore[arg-type]
    with raises(
        TypeError,
        "argument 0 must be a minidl Module, got an OrderedDict; a minidl Sequential numbers its "
        "modules (it takes no names): pass the modules themselves, Sequential(*modules.values())",
    ):
        nn.Sequential(OrderedDict(fc=nn.Linear(2, 3), act=nn.ReLU()))  # type: ignore[arg-type]
    with raises(TypeError, "argument 0 must be a minidl Module, got int"):
        nn.Sequential(3)  # type: ignore[arg-type]


class _Identity(nn.Module):
    """A module of one's own, whose bound method is given where the module is meant."""

    def forward(self, input: Tensor) -> Tensor:
        return input

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


def test_a_function_given_for_a_module_is_named_with_the_fix() -> None:
    """A function in a module's place (torch.tanh, as a functional network is written) is named
    with the minidl module that computes it; one minidl has no module for, with how to write
    one; a module's bound method, with the module itself; model.parameters given uncalled to
    an optimizer, with the call; PyTorch's loss functions given to fit, with minidl's loss."""
    prefix = "Sequential: argument 1 must be a minidl Module, got "
    cases: list[tuple[object, str]] = [
        (torch.tanh, "the function tanh, which has no backward; minidl.nn.Tanh() computes it"),
        (
            torch.nn.functional.relu,
            "the function relu, which has no backward; minidl.nn.ReLU() computes it",
        ),
        (
            torch.Tensor.sigmoid,
            "the function sigmoid, which has no backward; minidl.nn.Sigmoid() computes it",
        ),
        (
            functools.partial(torch.nn.functional.leaky_relu, negative_slope=0.1),
            "the function leaky_relu, which has no backward; minidl.nn.LeakyReLU() computes it",
        ),
        (
            torch.square,
            "the function square, which has no backward; a module of your own computes a "
            "function in its forward and its gradient in its backward",
        ),
        (_Identity().forward, "the method forward of a _Identity; pass the module itself"),
        (nn.Tanh().backward, "the method backward of a Tanh; pass the module itself"),
    ]
    for given, described in cases:
        with raises(TypeError, prefix + described):
            nn.Sequential(nn.Linear(2, 3), given)  # type: ignore[arg-type]
    with raises(
        TypeError,
        "Residual: block must be a minidl Module, got the function gelu, which has no backward; "
        "minidl.nn.GELU() computes it",
    ):
        nn.Residual(torch.nn.functional.gelu)  # type: ignore[arg-type]
    model = nn.mlp((2, 3, 2))
    with raises(
        TypeError,
        "SGD: params must be an iterable of Parameters (e.g. model.parameters()), got the "
        "method parameters of a Sequential, uncalled; pass .parameters()",
    ):
        optim.SGD(model.parameters, lr=0.1)  # type: ignore[arg-type]
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    before = [p.data.clone() for p in model.parameters()]
    for criterion, described in [
        (
            torch.nn.functional.cross_entropy,
            "the function cross_entropy, which has no backward; minidl.nn.CrossEntropyLoss() "
            "computes it",
        ),
        (
            lambda prediction, target: prediction,
            "a lambda, which has no backward; a loss of your own computes a function in its "
            "forward and its gradient in its backward",
        ),
        (nn.MSELoss().forward, "the method forward of a MSELoss; pass the loss itself"),
    ]:
        with raises(TypeError, f"fit: criterion must be a minidl Loss, got {described}"):
            fit(model, criterion, optim.SGD(model.parameters(), lr=0.1), x, y, epochs=1)  # type: ignore[arg-type]
    assert all(torch.equal(p.data, b) for p, b in zip(model.parameters(), before, strict=True))


@pytest.mark.skipif(not hasattr(Exception, "add_note"), reason="exception notes: Python >= 3.11")
def test_a_refusal_inside_a_sequential_notes_where() -> None:
    """The module's message names its class; a note (shown in the traceback) names its place,
    at every level of nested Sequentials."""
    inner = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(9, 2))
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), inner)
    with pytest.raises(ValueError, match="Linear: expected 9 input features") as info:
        model(torch.randn(4, 2))
    notes = info.value.__notes__  # type: ignore[attr-defined]
    assert notes == [
        "in Sequential, at module 2 (Linear)",
        "in Sequential, at module 2 (Sequential)",
    ]


class _ReturnsNoGradient(nn.Module):
    """A module of one's own whose backward forgot its return."""

    def forward(self, input: Tensor) -> Tensor:
        return 2 * input

    def backward(self, grad_output: Tensor) -> None:
        2 * grad_output


class _ReturnsTwoColumns(nn.Module):
    """A module of one's own whose backward returns a gradient of the wrong shape."""

    def forward(self, input: Tensor) -> Tensor:
        return 2 * input

    def backward(self, grad_output: Tensor) -> Tensor:
        return 2 * grad_output[:, :2]


@pytest.mark.skipif(not hasattr(Exception, "add_note"), reason="exception notes: Python >= 3.11")
@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
def test_a_refusal_inside_a_sequentials_backward_notes_where_and_whose_gradient(
    method: str,
) -> None:
    """A module of one's own whose backward returns no gradient, or one of the wrong shape, is
    refused by the module before it, whose message names only itself: the note names the
    place of the refusal and the module whose backward gave the gradient, at every level."""
    x = torch.randn(4, 3)
    model = nn.Sequential(nn.Linear(3, 3), _ReturnsNoGradient(), nn.Linear(3, 2))
    model(x)
    with pytest.raises(TypeError, match=r"Linear: expected a torch\.Tensor as gradient") as info:
        getattr(model, method)(torch.ones(4, 2))
    assert info.value.__notes__ == [  # type: ignore[attr-defined]
        f"in Sequential.{method}, at module 0 (Linear), given the gradient returned by the "
        "backward of module 1 (_ReturnsNoGradient)"
    ]
    inner = nn.Sequential(nn.Tanh(), _ReturnsTwoColumns())
    model = nn.Sequential(nn.Linear(3, 3), inner, nn.Linear(3, 2))
    model(x)
    with pytest.raises(ValueError, match=r"Tanh: gradient has shape \(4, 2\)") as info:
        getattr(model, method)(torch.ones(4, 2))
    assert info.value.__notes__ == [  # type: ignore[attr-defined]
        "in Sequential.backward, at module 0 (Tanh), given the gradient returned by the "
        "backward of module 1 (_ReturnsTwoColumns)",
        f"in Sequential.{method}, at module 1 (Sequential), given the gradient returned by the "
        "backward of module 2 (Linear)",
    ]
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    model(x)
    with pytest.raises(ValueError, match=r"Tanh: gradient has shape \(4, 2\)") as info:
        getattr(model, method)(torch.ones(4, 2))
    assert info.value.__notes__ == [  # type: ignore[attr-defined]
        f"in Sequential.{method}, at module 1 (Tanh), given the gradient passed to "
        f"Sequential.{method}"
    ]


@pytest.mark.parametrize("loss", [nn.MSELoss, nn.BCEWithLogitsLoss, nn.L1Loss, nn.HuberLoss])
def test_a_regression_target_of_shape_n_says_how_to_mend_it(loss: Callable[[], nn.Loss]) -> None:
    with raises(
        (TypeError, ValueError),
        "for one value per sample, give the target that shape: target.unsqueeze(-1)",
    ):  # type: ignore[arg-type]
        loss()(torch.randn(8, 1), torch.rand(8))


@pytest.mark.skipif(not hasattr(Exception, "add_note"), reason="exception notes: Python >= 3.11")
def test_fit_says_its_check_ran_on_the_first_sample() -> None:
    model = nn.mlp((2, 3, 2))
    x, y = torch.randn(64, 2), torch.randint(0, 2, (64,))
    with pytest.raises(TypeError, match="holds class indices") as info:
        fit(
            model,
            nn.CrossEntropyLoss(),
            optim.SGD(model.parameters(), lr=0.1),
            x,
            y.float(),
            epochs=1,
        )
    assert info.value.__notes__ == [  # type: ignore[attr-defined]
        "fit ran the model and the loss on the first sample, x[:1] and y[:1] (shapes (1, 2) "
        "and (1,)), before training: the shapes above are that sample's"
    ]


def test_an_exception_that_refuses_notes_passes_through_a_sequential_unchanged() -> None:
    """A frozen dataclass exception cannot take a note: it was replaced by FrozenInstanceError,
    and backward was not refused."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class RefusalError(Exception):
        reason: str

    class Refuses(nn.Tanh):
        def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
            if input.shape[0] == 3:
                raise RefusalError("three")
            return super()._forward(input)

    model = nn.Sequential(nn.Linear(2, 2), Refuses())
    model(torch.randn(4, 2))
    with pytest.raises(RefusalError):
        model(torch.randn(3, 2))
    with raises(RuntimeError, "backward after the forward refused by module 1 (Refuses)"):
        model.backward(torch.ones(4, 2))


def test_review_findings_name_the_right_class() -> None:
    """BatchedLinear's arguments were checked by the Linear layers it builds (messages said
    "Linear"); the stacked modules raised ValueError for a non-tensor; load_checkpoint let a
    generator or scheduler of the wrong kind fail as an AttributeError."""
    with raises(TypeError, "BatchedLinear: in_features must be a positive integer, got 2.5"):
        nn.BatchedLinear(3, 2.5, 4)  # type: ignore[arg-type]
    with raises(TypeError, "BatchedLinear: bias must be True or False, got 1"):
        nn.BatchedLinear(3, 2, 4, bias=1)  # type: ignore[arg-type]
    with raises(TypeError, "StackedLoss: expected a torch.Tensor prediction, got str"):
        nn.StackedLoss([(nn.MSELoss(), 1)])("x", torch.zeros(1, 2, 2))  # type: ignore[arg-type]


def test_load_checkpoint_refuses_components_of_the_wrong_kind(tmp_path: Any) -> None:
    from minidl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    model = nn.mlp((2, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(tmp_path / "c", model, optimizer)
    with raises(CheckpointError, "generator must be a torch.Generator, got int"):
        load_checkpoint(tmp_path / "c", model, optimizer, generator=3)  # type: ignore[arg-type]
    with raises(CheckpointError, "scheduler must be a minidl LRScheduler, got str"):
        load_checkpoint(tmp_path / "c", model, optimizer, "step")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("last", "width"), [(nn.Linear(3, 2), 2), (nn.Tanh(), 3)], ids=["Linear", "Tanh"]
)
def test_backward_given_the_loss_says_to_pass_its_gradient(last: nn.Module, width: int) -> None:
    model = nn.Sequential(nn.Linear(2, 3), last)
    criterion = nn.MSELoss()
    loss = criterion(model(torch.randn(4, 2)), torch.randn(4, width))
    before = _snapshot(model)
    with raises(
        ValueError,
        f"{type(last).__name__}: gradient has shape (), expected (4, {width})",
        "criterion.backward(), not the loss",
    ):
        model.backward(loss)
    assert all(torch.equal(a, b) for a, b in zip(_snapshot(model), before, strict=True))


class _Gate(nn.Module):
    """Holds a Parameter as a plain attribute (`self.w = Parameter(...)`), as torch.nn would
    register it; optionally a reference to a registered parameter of another module."""

    def __init__(self, tied: nn.Parameter | None = None) -> None:
        super().__init__()
        self.w = tied if tied is not None else nn.Parameter(torch.ones(2))

    def forward(self, input: Tensor) -> Tensor:
        return input * self.w.data

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output * self.w.data


def test_sequential_refuses_a_parameter_that_is_not_registered() -> None:
    with raises(
        ValueError,
        "Sequential: the Parameter in attribute '1.w' is not registered",
        "self.w = self.register_parameter('w', Parameter(...))",
    ):
        nn.Sequential(nn.Linear(2, 2), _Gate())
    # A reference to a parameter that the model registers elsewhere is not refused.
    first = nn.Linear(2, 2)
    model = nn.Sequential(first, _Gate(tied=first.bias))
    assert list(model.parameters()) == [first.weight, first.bias]


class _Gated(nn.Module):
    """y = a(x) * sigmoid(b(x)), its two layers set as plain attributes (``self.a =
    Linear(...)``, as torch.nn would register them) unless ``register``; ``loss`` (no
    parameters) and ``tied`` (a layer whose parameters the model registers) are kept as
    plain attributes either way."""

    def __init__(self, register: bool, tied: nn.Linear | None = None) -> None:
        super().__init__()
        a, b = nn.Linear(2, 3), nn.Linear(2, 3)
        self.a = self.register_module("a", a) if register else a
        self.b = self.register_module("b", b) if register else b
        self.sigmoid = self.register_module("sigmoid", nn.Sigmoid())
        self.loss = nn.MSELoss()
        self.tied = tied

    def forward(self, input: Tensor) -> Tensor:
        self._linear, self._gate = self.a(input), self.sigmoid(self.b(input))
        return self._linear * self._gate

    def backward(self, grad_output: Tensor) -> Tensor:
        through_a = self.a.backward(grad_output * self._gate)
        return through_a + self.b.backward(self.sigmoid.backward(grad_output * self._linear))


def test_a_layer_set_as_a_plain_attribute_is_refused_by_sequential_and_gradcheck() -> None:
    """A module's layer set as a plain attribute is not registered: the model's parameters(),
    state_dict and to() left its parameters out (trained by nothing, saved nowhere, left in
    float32 by .double()), and Sequential and gradcheck took such a module without a word.
    Both refuse it as they refuse a Parameter so set, naming the attribute and the fix; one
    that holds buffers alone too."""
    fix = "register it: self.a = self.register_module('a', Linear(...))"
    with raises(ValueError, "Sequential: the Linear in attribute '1.a' (and 1 more) is not", fix):
        nn.Sequential(nn.Linear(2, 2), _Gated(register=False))
    with raises(ValueError, "gradcheck: the Linear in attribute 'a' (and 1 more) is not", fix):
        minidl.gradcheck(_Gated(register=False), torch.randn(3, 2, dtype=F64))
    # a layer with buffers alone (a running mean, which state_dict would not save) likewise
    holder = nn.Module()
    holder.centre = _Centre(assign=False)  # type: ignore[attr-defined]
    with raises(ValueError, "Sequential: the _Centre in attribute '1.centre' is not registered"):
        nn.Sequential(nn.Linear(2, 2), holder)
    # Registered, or holding nothing that the model would miss (a loss without parameters, a
    # layer whose parameters the model registers), it is taken.
    first = nn.Linear(2, 2)
    model = nn.Sequential(first, _Gated(register=True, tied=first)).to(F64)
    assert [name for name, _ in model.named_parameters()] == [
        "0.weight",
        "0.bias",
        "1.a.weight",
        "1.a.bias",
        "1.b.weight",
        "1.b.bias",
    ]
    assert minidl.gradcheck(model, torch.randn(3, 2, dtype=F64))
    # The escape the refusal names, for a module kept out of the parameters on purpose.
    held = _Gated(register=True)
    held.teacher = (nn.Linear(2, 2),)
    assert [name for name, _ in nn.Sequential(held).named_parameters()][-1] == "0.b.bias"
    with raises(ValueError, "or, to keep it out of them on purpose, a frozen teacher, hold it"):
        nn.Sequential(_Gated(register=False))


def test_unregistered_layers_are_found_in_every_module_however_it_holds_its_attributes() -> None:
    """Unregistered layers in two modules of a model are all counted, the first one's named;
    a module whose attributes' dict Python has made (``vars``, which CPython 3.11 makes only
    on demand, keeping attributes inline until then) is searched as one that holds them
    inline; a module held as a plain attribute whose one buffer the model registers (a running
    mean shared by two centrings), or a module of one's own that never ran Module.__init__
    (no registry: nothing to miss), is taken."""
    fix = "register it: self.a = self.register_module('a', Linear(...))"
    with raises(ValueError, "Sequential: the Linear in attribute '0.a' (and 3 more) is not", fix):
        nn.Sequential(_Gated(register=False), _Gated(register=False))
    gated = _Gated(register=False)
    assert "a" in vars(gated)
    with raises(ValueError, "Sequential: the Linear in attribute '0.a' (and 1 more) is not", fix):
        nn.Sequential(gated)
    centre, alias = _Centre(assign=False), _Centre(assign=False)
    alias.running_mean = alias.register_buffer("running_mean", centre.running_mean)
    holder = nn.Module()
    holder.centre = holder.register_module("centre", centre)  # type: ignore[attr-defined]
    holder.alias = alias  # type: ignore[attr-defined]
    holder.helper = _NotInitialised()  # type: ignore[attr-defined]
    model = nn.Sequential(nn.Linear(2, 2), holder)
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.centre.running_mean"]


class _Centre(nn.Module):
    """y = x - m, with m a running mean of the inputs seen in training (a buffer), updated by
    assigning the attribute, as in PyTorch (``assign``), or in place."""

    def __init__(self, assign: bool) -> None:
        super().__init__()
        self.assign = assign
        self.running_mean = self.register_buffer("running_mean", torch.zeros(2))

    def forward(self, input: Tensor) -> Tensor:
        output = input - self.running_mean
        if self.training:
            mean = input.mean(0)
            if self.assign:
                self.running_mean = 0.5 * self.running_mean + 0.5 * mean
            else:
                self.running_mean.mul_(0.5).add_(0.5 * mean)
        return output

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


def test_a_buffer_assigned_by_hand_is_refused_by_state_dict_load_state_dict_and_to() -> None:
    """A buffer updated by assigning its attribute (PyTorch's habit, which registers the new
    tensor there) is not the registered one: the module computed with the new tensor while
    state_dict saved the registered zeros (a checkpoint of the initial statistics),
    load_state_dict loaded into them (the module went on with its own), and to() moved them
    and set the attribute back to them (the statistics lost). Each refuses it now, naming the
    module, the attribute and the fix, and changes nothing; a buffer changed in place is
    taken."""
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    saved = nn.Sequential(_Centre(assign=False), nn.Linear(2, 2)).state_dict()
    model = nn.Sequential(_Centre(assign=True), nn.Linear(2, 2))
    model(x)
    seen = model[0].running_mean
    fix = "change the buffer in place (self.running_mean.copy_(...), self.running_mean.mul_(...))"
    for method, call, uses in (
        ("state_dict", model.state_dict, "state_dict would save the registered one"),
        ("load_state_dict", lambda: model.load_state_dict(saved), "would load"),
        ("to", lambda: model.to(F64), "to would move the registered one and set the attribute"),
    ):
        with raises(
            ValueError,
            f"Sequential.{method}: the attribute '0.running_mean' of _Centre is not its "
            "registered buffer 'running_mean' (it was assigned a tensor of shape (2,), "
            "torch.float32",
            uses,
            fix,
        ):
            call()
        assert model[0].running_mean is seen and model[1].weight.data.dtype == torch.float32
    model = nn.Sequential(_Centre(assign=False), nn.Linear(2, 2))
    model(x)
    assert torch.equal(model.state_dict()["0.running_mean"], torch.tensor([1.0, 1.5]))
    model.to(F64)
    assert torch.equal(model[0].running_mean, torch.tensor([1.0, 1.5], dtype=F64))


def test_a_buffer_assigned_by_hand_is_refused_by_the_checkpoint_function_called(
    tmp_path: Any,
) -> None:
    """save_checkpoint, load_checkpoint and architecture refuse such a buffer in their own
    name, as the CheckpointError (a ValueError) that save_checkpoint and load_checkpoint raise
    for bad arguments, before anything is written or loaded; their message named
    Sequential.state_dict, which the user did not call (and, in a fit whose on_epoch saves,
    came after the first epoch's training, with nothing to say what had saved)."""
    from minidl.checkpoint import CheckpointError, architecture, load_checkpoint, save_checkpoint

    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    kept = tmp_path / "kept.safetensors"
    save_checkpoint(kept, nn.Sequential(_Centre(assign=False), nn.Linear(2, 2)))
    model = nn.Sequential(_Centre(assign=True), nn.Linear(2, 2))
    model(x)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    before = _snapshot(model[1])
    refused = (
        "the attribute '0.running_mean' of _Centre is not its registered buffer 'running_mean' "
        "(it was assigned a tensor of shape (2,), torch.float32, which minidl does not register: "
        "the module computes with the attribute, "
    )
    path = tmp_path / "run.safetensors"
    with raises(CheckpointError, f"save_checkpoint: {refused}save_checkpoint would save the"):
        save_checkpoint(path, model, optimizer)
    assert not path.exists()
    with raises(
        CheckpointError,
        f"load_checkpoint: {refused}load_checkpoint would load into",
    ):
        load_checkpoint(kept, model)
    with raises(ValueError, f"architecture: {refused}architecture would record the registered"):
        architecture(model)
    _assert_unchanged(model[1], before)


def test_a_buffers_attribute_set_to_a_number_is_refused_too() -> None:
    """An attribute of a buffer's name set to something else than a tensor (the statistics
    reset by hand to 0.0) is no more the registered buffer than a new tensor: refused, naming
    what it holds."""
    model = nn.Sequential(_Centre(assign=False), nn.Linear(2, 2))
    model[0].running_mean = 0.0
    with raises(
        ValueError,
        "Sequential.state_dict: the attribute '0.running_mean' of _Centre is not its registered "
        "buffer 'running_mean' (it was assigned a float, which minidl does not register",
    ):
        model.state_dict()


class _NotInitialised(nn.Module):
    """A module of one's own whose __init__ forgot super().__init__()."""

    def __init__(self) -> None:
        self.scale = 2.0

    def forward(self, input: Tensor) -> Tensor:
        return input * self.scale

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output * self.scale


def test_a_module_whose_init_did_not_call_module_init_is_named() -> None:
    """Sequential, gradcheck and register_module failed on the missing registries with
    Python's message ("'_NotInitialised' object has no attribute '_modules'"), naming no
    place; they name the module, where it was given and the fix. Nothing is registered."""
    fix = "_NotInitialised.__init__ must call super().__init__() first"
    with raises(AttributeError, "Sequential: argument 1, a _NotInitialised, was not", fix):
        nn.Sequential(nn.Linear(2, 2), _NotInitialised())
    with raises(AttributeError, "gradcheck: the module, a _NotInitialised, was not", fix):
        minidl.gradcheck(_NotInitialised(), torch.randn(3, 2, dtype=F64))
    box = nn.Identity()
    with raises(AttributeError, "Identity.register_module: child 'inner', a _NotInitialised", fix):
        box.register_module("inner", _NotInitialised())
    assert list(box.children()) == []


def test_the_registration_check_leaves_the_modules_attribute_storage_alone() -> None:
    # Asking for a module's __dict__ makes CPython 3.11 keep its attributes in a plain dict
    # from then on, and every forward and backward slower: the check must find parameters
    # without it. (Where attributes always live in a dict, nothing changes either.)
    def has_dict(module: nn.Module) -> bool:
        return any(isinstance(r, dict) and "_parameters" in r for r in gc.get_referents(module))

    layers = [nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2, dtype=torch.float64)]
    before = [has_dict(layer) for layer in layers]
    model = nn.Sequential(layers[0], layers[1])
    minidl.gradcheck(layers[2], torch.randn(4, 3, dtype=torch.float64))
    assert [has_dict(layer) for layer in layers] == before
    assert has_dict(model) == before[0]


@pytest.mark.parametrize(
    "loss", [nn.MSELoss(), nn.CrossEntropyLoss(), nn.BCEWithLogitsLoss()], ids=type
)
def test_a_loss_given_as_a_layer_is_refused_when_the_model_is_built(loss: nn.Loss) -> None:
    """A model's forward failed at it with Python's "forward() missing 1 required positional
    argument: 'target'", which names neither the container nor the fix."""
    name = type(loss).__name__
    with raises(TypeError, "Residual", "the block is a loss", name, "model(x)"):
        nn.Residual(loss)
    with raises(TypeError, "Sequential", "argument 2 is a loss", name, "model(x)"):
        nn.Sequential(nn.Linear(2, 3), nn.Tanh(), loss)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"dtype": torch.int64}, TypeError),
        ({"device": "nowhere"}, ValueError),
        ({"generator": 3}, TypeError),
    ],
)
def test_mlp_names_itself_when_a_layer_refuses_its_options(
    options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error, match=r"^Linear: ") as caught:
        nn.mlp((2, 3, 2), "tanh", **options)
    assert "in mlp, building layer 0 (Linear(2, 3))" in getattr(caught.value, "__notes__", [])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: nn.Linear(2**62, 4),
            r"^Linear: cannot hold a weight of 4 x 4611686018427387904 and its bias \(",
        ),
        (
            lambda: nn.Linear(2**62, 4, bias=False),
            r"^Linear: cannot hold a weight of 4 x 4611686018427387904 \(",
        ),
        (
            lambda: nn.BatchNorm1d(2**61),
            r"^BatchNorm1d: cannot hold the statistics of 2305843009213693952 features \(",
        ),
    ],
)
def test_a_layer_too_large_to_hold_is_refused_by_name_before_any_draw(
    make: Callable[[], object], message: str
) -> None:
    """A Linear or BatchNorm1d of sizes that cannot be held failed in the allocator's words
    ("Storage size calculation overflowed"), naming no layer, as BatchedLinear did not
    (review); no number is drawn from torch's generator."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    with pytest.raises(ValueError, match=message):
        make()
    assert torch.equal(torch.get_rng_state(), before)


def test_a_layer_that_memory_cannot_hold_is_torchs_error_naming_the_layer() -> None:
    """Sizes a tensor holds but memory cannot (400 TB) stay torch's out-of-memory error, which
    minidl's command line reports as such, with a note naming the layer; nothing is drawn."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="can't allocate memory") as caught:
        nn.Linear(10**7, 10**7)
    assert caught.value.__notes__ == ["Linear: making a weight of 10000000 x 10000000 and its bias"]
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("given", [False, True])
def test_mlp_puts_the_generator_back_when_a_later_layer_is_refused(given: bool) -> None:
    """``mlp((2, 25, 2**62, 2))`` drew the first layer's weights before the second was refused,
    moving the generator of a call that changed nothing else (review). It is put back; the
    weights of a network built are the generator's draws, as before."""
    generator = torch.Generator().manual_seed(5) if given else None
    torch.manual_seed(5)
    before = torch.get_rng_state() if generator is None else generator.get_state()
    with pytest.raises(ValueError, match=r"^Linear: cannot hold a weight of ") as caught:
        nn.mlp((2, 25, 2**62, 2), generator=generator)
    assert "in mlp, building layer 1 (Linear(25, 4611686018427387904))" in caught.value.__notes__
    after = torch.get_rng_state() if generator is None else generator.get_state()
    assert torch.equal(after, before)
    built = nn.mlp((2, 25, 2), generator=generator)
    torch.manual_seed(5)
    weight = torch.randn(25, 2, generator=generator and torch.Generator().manual_seed(5))
    assert torch.equal(built[0].weight.data, weight.mul_(math.sqrt(2 / 27)))


def test_a_built_sequential_refuses_a_module_registered_afterwards() -> None:
    """Its forward runs the modules it was built with: a child registered afterwards (or put in
    place of one) would be listed by children() and parameters() but never run. Refused, with
    nothing changed."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
    x = torch.randn(4, 2)
    before = (list(model.children()), list(model.parameters()), model(x))
    for name in ("1", "3", "extra"):
        with raises(
            ValueError,
            "Sequential.register_module: a Sequential's modules are fixed when it is built",
            f"got a ReLU to register as {name!r}",
            "build a new Sequential",
        ):
            model.register_module(name, nn.ReLU())
    assert list(model.children()) == before[0] and list(model.parameters()) == before[1]
    assert torch.equal(model(x), before[2])
    # (a slice is a Sequential built from the model's modules)
    assert list(model[1:].children()) == before[0][1:]


# -- integers too long to write out --------------------------------------------------------------

#: An int of 5001 digits: Python refuses to write one of more than 4300 (repr raises).
HUGE = 10**5000


@pytest.mark.parametrize(
    ("make", "kind", "fragment"),
    [
        (lambda: optim.SGD(nn.Linear(2, 2).parameters(), lr=HUGE), ValueError, "lr must be"),
        (lambda: optim.SGD(nn.Linear(2, 2).parameters(), lr=-HUGE), ValueError, "lr must be"),
        (lambda: nn.Dropout(HUGE), ValueError, "p must be"),
        (lambda: nn.Linear(HUGE, 2), ValueError, "in_features must be at most 2**63 - 1"),
        (lambda: nn.Linear(-HUGE, 2), ValueError, "in_features must be a positive integer"),
        (lambda: nn.Linear(2, 2, dtype=HUGE), TypeError, "dtype must be"),
        (lambda: nn.Linear(2, 2, device=HUGE), ValueError, "is not a device"),
        (lambda: make_disk_data(seed=HUGE), ValueError, "seed must be in"),
        (lambda: make_disk_data(n_train=HUGE), ValueError, "n_train must be at most"),
        (
            lambda: BatchIterator(torch.zeros(4, 2), torch.zeros(4), batch_size=-HUGE),
            ValueError,
            "batch_size must be",
        ),
        # (LeakyReLU's and ELU's checks raised OverflowError, "int too large to convert to
        # float"; the others' messages failed as above)
        (lambda: nn.LeakyReLU(HUGE), ValueError, "LeakyReLU: negative_slope must be"),
        (lambda: nn.LeakyReLU(-HUGE), ValueError, "LeakyReLU: negative_slope must be"),
        (lambda: nn.ELU(HUGE), ValueError, "ELU: alpha must be"),
        (lambda: nn.MSELoss(HUGE), ValueError, "MSELoss: reduction must be"),  # type: ignore[arg-type]
        (lambda: nn.L1Loss(HUGE), ValueError, "L1Loss: reduction must be"),  # type: ignore[arg-type]
        (lambda: nn.GELU(HUGE), TypeError, "GELU: approximate must be"),  # type: ignore[arg-type]
        (lambda: nn.Softmax(HUGE), ValueError, "Softmax: dim must be"),
        (lambda: nn.mlp([2, -HUGE]), ValueError, "mlp: sizes must be at least two positive"),
        (lambda: nn.mlp([2, HUGE]), ValueError, "out_features must be at most 2**63 - 1"),
        (lambda: nn.Linear(2, 2).cuda(HUGE), ValueError, "is not a device"),
        (lambda: nn.Linear(2, 2).to(HUGE), ValueError, "Linear.to: an int"),  # type: ignore[arg-type]
        (
            lambda: nn.clip_grad_norm_(nn.Linear(2, 2).parameters(), -HUGE),
            ValueError,
            "clip_grad_norm_: max_norm must be",
        ),
        (
            lambda: nn.stack_models([nn.Linear(2, 2)], layout=HUGE),  # type: ignore[arg-type]
            ValueError,
            "stack_models: layout must be",
        ),
    ],
)
def test_a_huge_integer_is_named_by_its_number_of_digits(
    make: Callable[[], object], kind: type[BaseException], fragment: str
) -> None:
    # (the message itself failed: "Exceeds the limit (4300 digits) for integer string
    # conversion")
    with raises(kind, fragment, "int of 5001 digits"):
        make()


def test_shown_writes_an_integer_whole_up_to_40_digits() -> None:
    from minidl._validate import shown

    for value in (0, -1, 2**64, 2**132 - 1, 2**132, 10**40 - 1, -(10**40 - 1)):
        assert shown(value) == repr(value)  # 40 digits or fewer: whole
    assert shown(10**40) == "an int of 41 digits"
    assert shown(-(10**40)) == "a negative int of 41 digits"
    assert shown(2**133) == "an int of 41 digits"
    for digits in (41, 100, 4300, 4301, 5001):
        assert shown(10 ** (digits - 1)) == f"an int of {digits} digits"
        assert shown(10**digits - 1) == f"an int of {digits} digits"
    assert shown(True) == "True" and shown(0.5) == "0.5" and shown("x") == "'x'"


def test_shown_writes_a_fraction_of_huge_terms_by_their_digits() -> None:
    # (written whole: 495 characters for Fraction(-10**400); past 4300 digits, the message
    # itself failed in Python's words, "Exceeds the limit (4300 digits)")
    from decimal import Decimal
    from fractions import Fraction

    from minidl._validate import shown

    assert shown(Fraction(-(10**400))) == "Fraction(a negative int of 401 digits, 1)"
    assert shown(Fraction(10**5000)) == "Fraction(an int of 5001 digits, 1)"
    assert shown(Fraction(1, 10**50)) == "Fraction(1, an int of 51 digits)"
    assert (
        shown(Fraction(1, 3)) == "Fraction(1, 3)" and shown(Decimal("1e400")) == "Decimal('1E+400')"
    )
    assert shown(Decimal(10**5000)) == (
        "Decimal('1000000000000000000000000000000... (a Decimal written in 5012 characters)"
    )
    with raises(ValueError, "max_norm", "got Fraction(a negative int of 401 digits, 1)"):
        nn.clip_grad_norm_(nn.Linear(2, 2).parameters(), Fraction(-(10**400)))
    with raises(ValueError, "max_norm", "got Fraction(a negative int of 5001 digits, 1)"):
        nn.clip_grad_norm_(nn.Linear(2, 2).parameters(), Fraction(-(10**5000)))


def test_the_class_index_check_with_a_number_of_classes_refuses_a_negative_index() -> None:
    # Its docstring promises [0, classes); with classes given only the maximum was compared
    # (the callers ran the check without classes first, a second pass over the labels).
    from minidl._validate import check_class_indices

    for labels, bad in (([0, 1, -1], -1), ([-5, 3], -5), ([0, 3], 3)):
        with raises(ValueError, "must hold class indices in [0, 3)", f"got {bad}"):
            check_class_indices("where", "", torch.tensor(labels), 3)
    check_class_indices("where", "", torch.tensor([0, 2, 1], dtype=torch.uint8), 3)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
@pytest.mark.parametrize("labels", ["uint16", "uint32", "uint64", "sparse", "nested"])
def test_labels_torch_takes_no_minimum_of_are_refused_by_error_rate_and_fit(labels: str) -> None:
    """Class indices of uint16, uint32 or uint64, or sparse ones, failed inside the check in
    torch's words (NotImplementedError: "min_all" not implemented for 'UInt32'), from
    error_rate and from fit's validation set, naming neither; nested ones where their shape
    was read ("Internal error: NestedTensorImpl doesn't support sizes")."""
    from minidl.train import error_rate, fit

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
    x, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    if labels in ("sparse", "nested"):
        bad = y.to_sparse() if labels == "sparse" else torch.nested.nested_tensor([y[:3], y[3:]])
        said = "a dense \\(strided\\) tensor, got a " + (
            "sparse_coo" if labels == "sparse" else "nested"
        )
    else:
        bad = y.to(getattr(torch, labels))
        said = f"got torch.{labels}; convert them"
    with pytest.raises(TypeError, match=rf"^error_rate: y must .*{said}"):
        error_rate(model, x, bad)
    before = [p.data.clone() for p in model.parameters()]
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=rf"^fit: validation y must .*{said}"):
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, validation=(x, bad))
    assert all(torch.equal(p.data, b) for p, b in zip(model.parameters(), before, strict=True))
    assert error_rate(model, x, y.to(torch.uint8)) == error_rate(model, x, y)


# torch.nn.Sequential's changes in place, and what minidl's refusal says was given.
_CHANGES: dict[str, tuple[Callable[[Any, Any], object], str]] = {
    "model[1] = module": (lambda m, new: m.__setitem__(1, new), "a Sigmoid to put at model[1]"),
    "model[-1] = module": (lambda m, new: m.__setitem__(-1, new), "a Sigmoid to put at model[-1]"),
    "del model[0]": (lambda m, new: m.__delitem__(0), "del model[0]"),
    "del model[-2]": (lambda m, new: m.__delitem__(-2), "del model[-2]"),
    "del model[1:3]": (lambda m, new: m.__delitem__(slice(1, 3)), "del model[1:3]"),
    "model.append(module)": (lambda m, new: m.append(new), "a Sigmoid to append"),
    "model.extend([module])": (lambda m, new: m.extend([new]), "a list to extend it with"),
    "model.insert(1, module)": (lambda m, new: m.insert(1, new), "a Sigmoid to insert at 1"),
    "model.insert(-1, module)": (lambda m, new: m.insert(-1, new), "a Sigmoid to insert at -1"),
    "model.insert(-4, module)": (lambda m, new: m.insert(-4, new), "a Sigmoid to insert at -4"),
    "model.insert(4, module)": (lambda m, new: m.insert(4, new), "a Sigmoid to insert at 4"),
    "del model[3:1]": (lambda m, new: m.__delitem__(slice(3, 1)), "del model[3:1]"),
    "del model[1:3:1]": (lambda m, new: m.__delitem__(slice(1, 3, 1)), "del model[1:3:1]"),
    "model.pop(-1)": (lambda m, new: m.pop(-1), "pop(-1)"),
    "model.pop(1)": (lambda m, new: m.pop(1), "pop(1)"),
    # (NumPy integers, which PyTorch takes as ints: operator.index)
    "model[np.int64(1)] = module": (
        lambda m, new: m.__setitem__(np.int64(1), new),
        "a Sigmoid to put at model[np.int64(1)]",
    ),
    "del model[np.int64(-2)]": (
        lambda m, new: m.__delitem__(np.int64(-2)),
        "del model[np.int64(-2)]",
    ),
    "model.insert(np.int64(-1), module)": (
        lambda m, new: m.insert(np.int64(-1), new),
        "a Sigmoid to insert at np.int64(-1)",
    ),
    "model.pop(np.int64(1))": (lambda m, new: m.pop(np.int64(1)), "pop(np.int64(1))"),
}


@pytest.mark.parametrize("change", _CHANGES)
def test_a_built_sequential_refuses_the_changes_of_torch_sequential_and_says_how_to_build_it(
    change: str,
) -> None:
    """``torch.nn.Sequential`` changes its modules in place (item assignment and deletion,
    ``append``, ``extend``, ``insert``, ``pop``); a minidl one refuses, as ``register_module``
    does, naming itself (not Python's bare "object does not support item assignment" or
    "has no attribute 'append'"), with nothing changed. The model it says to build holds the
    modules torch's change leaves, in order."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.Tanh())
    twin = torch.nn.Sequential(
        torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2), torch.nn.Tanh()
    )
    x = torch.randn(4, 2)
    before = (list(model.children()), list(model.parameters()), model(x))
    apply, given = _CHANGES[change]
    with pytest.raises(TypeError) as info:
        apply(model, nn.Sigmoid())
    message = str(info.value)
    assert message.startswith("Sequential: a Sequential's modules are fixed when it is built")
    assert f"got {given}; build a new Sequential" in message
    assert list(model.children()) == before[0] and list(model.parameters()) == before[1]
    assert torch.equal(model(x), before[2])
    apply(twin, torch.nn.Sigmoid())
    recipe = message.rsplit(
        "build a new Sequential with every module in the order data flows through them, ", 1
    )[1]
    recipe = recipe.split(", and ", 1)[-1]  # (pop: the module taken, and the model without it)
    built = eval(  # (the message's own code)
        recipe,
        {"Sequential": nn.Sequential},
        {"model": model, "module": nn.Sigmoid(), "modules": [nn.Sigmoid()]},
    )
    assert [type(part).__name__ for part in built] == [type(part).__name__ for part in twin]


_BUILD = "; build a new Sequential with every module in the order data flows through them, "


@pytest.mark.parametrize(
    ("index", "given"),
    [(5, "5"), (-5, "-5"), (1.5, "1.5"), ("1", "'1'"), (10**400, "an int of 401 digits")],
    ids=["5", "-5", "1.5", "'1'", "10**400"],
)
def test_an_insert_that_torch_refuses_names_no_place_to_insert_at(
    index: object, given: str
) -> None:
    """``torch.nn.Sequential.insert`` refuses an index out of ``[-len, len]`` (IndexError) or
    not an int (TypeError); minidl's refusal said to build the model with the module there
    all the same: at an end (``model[:5]``, ``model[:-5]``), or in code that does not run
    (``model[:1.5]``, ``model[:an int of 401 digits]``). It now names no place, as item
    assignment out of range does."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.Tanh())
    twin = torch.nn.Sequential(
        torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2), torch.nn.Tanh()
    )
    with pytest.raises((IndexError, TypeError)):
        twin.insert(index, torch.nn.Sigmoid())  # type: ignore[arg-type]
    layers = list(model)
    with pytest.raises(TypeError) as info:
        model.insert(index, nn.Sigmoid())  # type: ignore[arg-type]
    assert str(info.value).endswith(
        f"got a Sigmoid to insert at {given}{_BUILD}Sequential(*modules)"
    )
    assert list(model) == layers


@pytest.mark.parametrize(
    ("change", "given", "recipe"),
    [
        (
            lambda m: m.insert(-4, nn.Sigmoid()),
            "a Sigmoid to insert at -4",
            "Sequential(module, *model)",
        ),
        (
            lambda m: m.insert(4, nn.Sigmoid()),
            "a Sigmoid to insert at 4",
            "Sequential(*model, module)",
        ),
        (
            lambda m: m.insert(-1, nn.Sigmoid()),
            "a Sigmoid to insert at -1",
            "Sequential(*model[:3], module, *model[3:])",
        ),
        (
            lambda m: m.__setitem__(slice(1, 3), [nn.Sigmoid()]),
            "a list to put at model[1:3]",
            "Sequential(*model[:1], *modules, *model[3:])",
        ),
        (
            lambda m: m.__setitem__(slice(1, 3, 1), nn.Sigmoid()),
            "a Sigmoid to put at model[1:3:1]",
            "Sequential(*model[:1], *modules, *model[3:])",
        ),
        (lambda m: m.__delitem__(slice(None, None, 2)), "del model[::2]", "Sequential(*modules)"),
        (
            lambda m: m.__setitem__(-1, nn.Sigmoid()),
            "a Sigmoid to put at model[-1]",
            "Sequential(*model[:3], module)",
        ),
        (lambda m: m.__delitem__(0), "del model[0]", "Sequential(*model[1:])"),
        (
            lambda m: m.__setitem__(7, nn.Sigmoid()),
            "a Sigmoid to put at model[7]",
            "Sequential(*modules)",
        ),
    ],
    ids=[
        "insert(-4)",
        "insert(4)",
        "insert(-1)",
        "model[1:3] =",
        "model[1:3:1] =",
        "del ::2",
        "model[-1] =",
        "del 0",
        "out of range",
    ],
)
def test_a_refused_change_names_what_was_given_and_the_model_to_build_exactly(
    change: Callable[[Any], object], given: str, recipe: str
) -> None:
    """The words of the refusals where PyTorch's ``Sequential`` is no oracle (it refuses a
    slice assigned) or the model built is the same either way (``model[:0]`` or ``model[:-4]``):
    a negative index in range written as its place, a slice with its step, a slice assigned
    its ``*modules``, no empty part at either end."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.Tanh())
    layers = list(model)
    with pytest.raises(TypeError) as info:
        change(model)
    assert str(info.value).endswith(f"got {given}{_BUILD}{recipe}")
    assert list(model) == layers


@pytest.mark.parametrize(
    ("call", "where"),
    [
        (lambda m: minidl.gradcheck(m, torch.randn(2, 2, dtype=F64)), "gradcheck: expected a"),
        (lambda m: minidl.detect_anomaly(m).__enter__(), "detect_anomaly: argument 0 must be a"),
        (nn.Residual, "Residual: block must be a"),
    ],
    ids=["gradcheck", "detect_anomaly", "Residual"],
)
@pytest.mark.parametrize("own", [False, True], ids=["torch.nn", "own-class"])
def test_a_pytorch_module_is_named_as_one_where_a_minidl_module_is_expected(
    call: Callable[[object], object], where: str, own: bool
) -> None:
    """As Sequential names one: "expected a minidl Module, got Linear" left out that this
    Linear is PyTorch's, minidl having a Linear of its own; a network of one's own class,
    derived from torch.nn.Module, is one too (Sequential named only torch.nn's classes)."""
    module, name = (TorchNet(), "TorchNet") if own else (torch.nn.Linear(2, 3), "Linear")
    with raises(
        TypeError,
        f"{where} minidl Module, got {name}, a PyTorch module (minidl.interop.from_torch "
        "converts one)",
    ):
        call(module)


class TorchNet(torch.nn.Module):
    """A network written for PyTorch, of a class of one's own."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 3)


def test_sequential_names_a_pytorch_network_of_ones_own_class_as_one() -> None:
    with raises(
        TypeError,
        "Sequential: argument 0 must be a minidl Module, got TorchNet, a PyTorch module",
    ):
        nn.Sequential(TorchNet())  # type: ignore[arg-type]


# -- a newcomer's mistakes (a review of what a first program gets wrong) --------------------------


def test_pytorch_objects_given_to_register_are_named_as_pytorchs() -> None:
    """register_parameter said 'expected a Parameter (or None) for 'w', got Parameter' for a
    torch.nn.Parameter, register_module 'expected a Module ..., got Linear' for a torch Linear:
    the names alike, the message contradicted itself. Both name PyTorch's now, with the fix."""

    class Holder(nn.Module):
        pass

    from minidl.interop import to_torch

    holder = Holder()
    with pytest.raises(
        TypeError,
        match=r"^Holder\.register_parameter: expected a minidl Parameter \(or None\) for 'w', got "
        r"torch\.nn\.parameter\.Parameter, a PyTorch tensor or parameter \(.*from_torch",
    ):
        holder.register_parameter("w", torch.nn.Parameter(torch.ones(3)))
    with pytest.raises(
        TypeError,
        match=r"^Holder\.register_module: expected a minidl Module for 'fc', got Linear, a PyTorch "
        r"module \(minidl\.interop\.from_torch converts one\)$",
    ):
        holder.register_module("fc", torch.nn.Linear(2, 3))
    assert not holder._parameters and not holder._modules
    for call in (
        lambda: fit(torch.nn.Linear(2, 2), nn.MSELoss(), None, None, None, epochs=1),  # type: ignore[arg-type]
        lambda: minidl.train.predict(torch.nn.Linear(2, 2), torch.ones(1, 2)),  # type: ignore[arg-type]
        lambda: to_torch(torch.nn.Linear(2, 2)),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError, match=r"got Linear, a PyTorch module \(minidl\.interop"):
            call()


def test_an_optimizer_given_the_pairs_of_param_or_named_parameters_says_what_to_pass() -> None:
    """The course's param() gives (value, gradient) pairs and named_parameters() (name,
    Parameter) pairs: an optimizer given either said 'params[0] must be a minidl Parameter, got
    tuple'."""
    model = nn.mlp((2, 3, 2))
    with pytest.raises(
        TypeError,
        match=r"^SGD: params\[0\] must be a minidl Parameter, got a tuple of two tensors, a "
        r"\(value, gradient\) pair as param\(\) gives \(pass model\.parameters\(\)",
    ):
        optim.SGD(model.param(), lr=0.1)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"^SGD: params\[0\] must be a minidl Parameter, got a tuple \('0\.weight', "
        r"Parameter\), a pair as named_parameters\(\) gives \(pass model\.parameters\(\)\)$",
    ):
        optim.SGD(model.named_parameters(), lr=0.1)  # type: ignore[arg-type]


def test_a_module_whose_init_skips_supers_says_so_wherever_it_is_used() -> None:
    """A module whose __init__ does not call super().__init__(): parameters(), repr, state_dict,
    train, zero_grad and so fit and the optimizers failed with Python's "'MyNet' object has no
    attribute '_parameters'", naming a private attribute. Each says what to do now."""

    class MyNet(nn.Module):
        def __init__(self) -> None:
            self.fc = nn.Linear(2, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(x)

    model = MyNet()
    sgd = optim.SGD(nn.mlp((2, 3)).parameters(), lr=0.1)
    ending = r"\): MyNet\.__init__ must call super\(\)\.__init__\(\) first$"
    for call in (
        lambda: optim.SGD(model.parameters(), lr=0.1),
        lambda: repr(model),
        model.state_dict,
        model.train,
        model.zero_grad,
        lambda: model.to(F64),
        lambda: fit(model, nn.MSELoss(), sgd, torch.ones(4, 2), torch.ones(4, 3), epochs=1),
        # (the traversals refuse at the call: their iterators failed once iterated, in
        # Python's words, "'MyNet' object has no attribute '_parameters'")
        model.named_parameters,
        model.named_buffers,
        model.buffers,
        model.named_modules,
        model.modules,
        model.children,
        model.named_children,
        lambda: model.apply(print),
        lambda: model.get_submodule("fc"),
        lambda: model.get_parameter("fc.weight"),
        lambda: model.get_buffer("x"),
        lambda: detect_anomaly(model).__enter__(),
    ):
        with pytest.raises(
            AttributeError,
            match=r"^MyNet was not initialised as a Module \(it has no _\w+" + ending,
        ):
            call()
    with pytest.raises(
        AttributeError,
        match=r"^to_torch: the model, a MyNet, was not initialised as a Module: MyNet\.__init__",
    ):
        to_torch(model)
    assert not hasattr(model, "_parameters") and not hasattr(model, "training")
    # (a child not initialised, inside a model that is, is named too)
    outer = nn.Residual(nn.Linear(2, 2))
    outer._modules["block"] = model  # (past register_module's own check of it)
    for call in (outer.parameters, outer.train, outer.state_dict, lambda: repr(outer)):
        with pytest.raises(AttributeError, match=r"^MyNet was not initialised as a Module"):
            call()


@pytest.mark.parametrize("how", ["error_rate", "fit"])
def test_the_labels_of_a_one_logit_model_hear_how_its_classes_are_read(how: str) -> None:
    """A binary classifier of one logit (Linear(8, 1) under BCEWithLogitsLoss): error_rate and
    fit's validation refused its 0/1 labels as class indices out of [0, 1) ('the model's
    outputs have 1 columns'), without a word of what such a model's classes are (predict's
    argmax of its one column is class 0 for every sample, as its docstring says now)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 1))
    x = torch.randn(50, 8)
    y = (x[:, 0] > 0).long()
    message = (
        r"y must hold class indices in \[0, 1\) \(the model's outputs have 1 column\), got 1; a "
        r"model of one output a sample \(one logit, as BCEWithLogitsLoss trains\) gives no "
        r"score per class: its classes are \(model\(x\) > 0\)\.long\(\)$"
    )
    with pytest.raises(ValueError, match=rf"^{how}: .*{message}"):
        if how == "error_rate":
            minidl.train.error_rate(model, x, y)
        else:
            fit(model, nn.BCEWithLogitsLoss(), optim.SGD(model.parameters(), lr=0.1), x,
                y[:, None].float(), epochs=1, validation=(x, y))  # fmt: skip
    assert torch.equal(minidl.train.predict(model, x), torch.zeros(50, dtype=torch.int64))


def test_fit_rounds_tells_models_of_one_output_what_it_trains() -> None:
    """fit_rounds' refusal of class indices for models of one output hinted at BCEWithLogitsLoss,
    which fit_rounds itself refuses: it says what fit_rounds trains instead."""
    models = [nn.Sequential(nn.Linear(2, 1)) for _ in range(2)]
    sets = [(torch.randn(10, 2), torch.tensor([0, 1] * 5)) for _ in range(2)]
    before = [parameter.data.clone() for model in models for parameter in model.parameters()]
    with pytest.raises(
        ValueError,
        match=r"^fit_rounds: train_sets\[0\] y must hold class indices in \[0, 1\) \(the "
        r"model's outputs have 1 column\), got 1; fit_rounds trains models of one output per "
        r"class \(CrossEntropyLoss, MSELoss and a StackedLoss of them\): give the last layer "
        r"an output for each class$",
    ):
        minidl.rounds.fit_rounds(models, nn.MSELoss(), lambda m: optim.SGD(m.parameters(), lr=0.1),
                                 sets, epochs=1, batch_size=5,
                                 generators=[torch.Generator() for _ in sets])  # fmt: skip
    after = [parameter.data for model in models for parameter in model.parameters()]
    assert all(map(torch.equal, after, before))


def test_regression_and_one_hot_mistakes_hear_how_a_target_is_read() -> None:
    """An int64 (N,) target to MSELoss over one output a sample was refused as 'class index 4
    is out of range for 1 classes'; a squeezed (N,) prediction as 'expected an input of shape
    (N, features)'; a one-hot target of integers to CrossEntropyLoss as a target of another
    shape. Each says now how the target is read and what to give."""
    torch.manual_seed(0)
    with pytest.raises(
        ValueError,
        match=r"^MSELoss: class index 4 is out of range for 1 classes \(expected values in \[0, "
        r"0\]\); an integer target is read as class indices, one-hot encoded, by MSELoss: for "
        r"values to regress give a float target of the prediction's shape "
        r"\(target\.float\(\)\.unsqueeze\(-1\)\)$",
    ):
        nn.MSELoss()(torch.randn(6, 1), torch.tensor([0, 4, 0, 0, 0, 0]))
    with pytest.raises(
        ValueError, match=r"out of range for 1 classes \(expected values in \[0, 0\]\)$"
    ):
        nn.CrossEntropyLoss()(torch.randn(6, 1), torch.tensor([0, 4, 0, 0, 0, 0]))
    # (with more than one output the indices are classes: no word of regression, whose
    # unsqueeze(-1) would not give the prediction's shape)
    with pytest.raises(
        ValueError,
        match=r"^MSELoss: class index 5 is out of range for 3 classes \(expected "
        r"values in \[0, 2\]\)$",
    ):
        nn.MSELoss()(torch.randn(6, 3), torch.tensor([0, 5, 0, 0, 0, 0]))
    with pytest.raises(
        ValueError, match=r"^MSELoss: expected a prediction of shape \(N, features\)"
    ) as raised:
        nn.MSELoss()(torch.randn(6), torch.randn(6))
    assert raised.value.__notes__ == [
        "MSELoss takes one value a sample as (N, 1): prediction.unsqueeze(-1)"
    ]
    with pytest.raises(ValueError, match=r"^CrossEntropyLoss: expected a prediction") as raised:
        nn.CrossEntropyLoss()(torch.randn(3), torch.tensor(1))  # (one sample's scores)
    assert raised.value.__notes__ == [
        "CrossEntropyLoss takes one sample's scores (C,) as (1, C): prediction.unsqueeze(0)"
    ]
    one_hot = torch.nn.functional.one_hot(torch.tensor([0, 2, 1]), 3)
    ending = r"; a one-hot target is given as class indices, target\.argmax\(-1\)"
    with pytest.raises(ValueError, match=rf"{ending}, or as probabilities, target\.float\(\)$"):
        nn.CrossEntropyLoss()(torch.randn(3, 3), one_hot)
    with pytest.raises(ValueError, match=rf"^NLLLoss: .*{ending}$"):
        nn.NLLLoss()(torch.randn(3, 3).log_softmax(-1), one_hot)
    # A one-hot target of bools or int32 was told to become int64 alone (then refused for its
    # shape); it gets the same hint. A complex one, no class indices at all, does not.
    for dtype in (torch.bool, torch.int32):
        with pytest.raises(
            TypeError,
            match=r"^CrossEntropyLoss: class-index targets must have dtype torch\.int64, got "
            rf"{re.escape(str(dtype))}{ending}, or as probabilities, target\.float\(\)$",
        ):
            nn.CrossEntropyLoss()(torch.randn(3, 3), one_hot.to(dtype))
    with pytest.raises(TypeError, match=r"got torch\.complex64$"):
        nn.CrossEntropyLoss()(torch.randn(3, 3), one_hot.to(torch.complex64))


def test_an_input_given_for_a_setting_is_shown_by_its_shape() -> None:
    """nn.ReLU(x) for nn.ReLU()(x): the refusal of the setting printed the whole tensor (many
    lines for a batch); it shows its shape and dtype now (a small one still as it is)."""
    x = torch.randn(50, 8)
    shape = r"a tensor of shape \(50, 8\), torch\.float32$"
    for build, kind, start in (
        (nn.ReLU, TypeError, "ReLU: inplace must be True or False, got "),
        (nn.Softmax, TypeError, "Softmax: dim must be an int"),
        (
            nn.Dropout,
            TypeError,
            r"Dropout: p must be a finite number in \[0, 1\) \(a float or an int\), got ",
        ),
        (nn.LeakyReLU, TypeError, "LeakyReLU: negative_slope must be"),
        (nn.ELU, TypeError, "ELU: alpha must be"),
    ):
        with pytest.raises(kind, match=rf"^{start}.*{shape}"):
            build(x)
    with pytest.raises(TypeError, match=r"got Tensor tensor\(\[0\.5000, 0\.5000\]\)$"):
        nn.Dropout(torch.tensor([0.5, 0.5]))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["Tanh", "Sigmoid"])
def test_an_activation_of_no_settings_given_arguments_is_refused_naming_it(name: str) -> None:
    """nn.Tanh(x) for nn.Tanh()(x): Python's words named ``Activation.__init__()``, not the
    activation; the refusal names it and, for a tensor, says how a module is called."""
    build = getattr(nn, name)
    with pytest.raises(TypeError) as info:
        build(torch.randn(50, 8))
    assert str(info.value) == (
        f"{name}() takes no arguments, got 1 (Tensor); a module is built, then called on its "
        f"input: {name}()(x)"
    )
    with pytest.raises(TypeError) as info:
        build(3, inplace=True)
    assert str(info.value) == f"{name}() takes no arguments, got 2 (int, inplace=bool)"


def test_an_activation_of_ones_own_takes_its_own_arguments() -> None:
    """A subclass of Activation with settings of its own passes none to the base class."""

    class Scaled(nn.Activation):
        def __init__(self, beta: float) -> None:
            super().__init__()
            self.beta = beta

    assert Scaled(2.0).beta == 2.0


def test_a_python_type_given_to_to_is_named_as_no_dtype() -> None:
    """model.to(float) leaked torch's list of torch.device's signatures (to(bool) and
    to(complex) in a ValueError saying it is no device)."""
    model = nn.mlp((2, 3))
    for kind in (float, int, bool, complex):
        with pytest.raises(
            TypeError,
            match=rf"^Sequential\.to: got Python's {kind.__name__}, which is neither a device nor "
            r"a dtype; a dtype is torch\.float32 or torch\.float64",
        ):
            model.to(kind)  # type: ignore[call-overload]
    assert next(model.parameters()).dtype == torch.float32


def test_fit_names_pytorchs_loss_optimizer_and_schedule_as_pytorchs() -> None:
    """fit said 'criterion must be a minidl Loss, got MSELoss' for torch.nn.MSELoss (and so for
    an optimizer and a schedule): the names alike, the message contradicted itself."""
    model = nn.mlp((2, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 2), torch.randn(4, 2)
    twin = torch.nn.Linear(2, 2)
    theirs = torch.optim.SGD(twin.parameters(), lr=0.1)
    for call, message in (
        (
            lambda: fit(model, torch.nn.MSELoss(), optimizer, x, y, epochs=1),  # type: ignore[arg-type]
            r"criterion must be a minidl Loss, got torch\.nn\.modules\.loss\.MSELoss, PyTorch's: "
            r"give minidl's, minidl\.nn\.MSELoss$",
        ),
        (
            lambda: fit(model, nn.MSELoss(), theirs, x, y, epochs=1),  # type: ignore[arg-type]
            r"optimizer must be a minidl Optimizer, got torch\.optim\.sgd\.SGD, PyTorch's: give "
            r"minidl's, minidl\.optim\.SGD$",
        ),
        (
            lambda: fit(
                model,
                nn.MSELoss(),
                optimizer,
                x,
                y,
                epochs=1,
                scheduler=torch.optim.lr_scheduler.StepLR(theirs, 2),
            ),
            r"scheduler must be a minidl LRScheduler or None, got torch\.optim\.lr_scheduler\."
            r"StepLR, PyTorch's \(minidl's losses are in "
            r"minidl\.nn, its optimizers and schedules in minidl\.optim\)$",
        ),
    ):
        with pytest.raises(TypeError, match=rf"^fit: {message}"):
            call()
    assert optimizer.step_count == 0


def test_naming_a_file_keeps_the_message_of_an_os_error_without_errno() -> None:
    """An OSError of no errno (io.UnsupportedOperation("not writable"), a library's
    OSError("message")) given the file's name printed "[Errno None] None: 'path'", its message
    lost; it keeps its message, the file named in a note."""
    import io

    from minidl._files import naming_file

    for error in (OSError("disk quota exceeded"), io.UnsupportedOperation("not writable")):
        with pytest.raises(OSError) as info, naming_file("runs/a.ckpt"):
            raise error
        assert str(info.value) == str(error) and "[Errno None]" not in str(info.value)
        assert info.value.__notes__ == ["while writing runs/a.ckpt"]
    full = r"^\[Errno 28\] No space left on device: 'runs/a\.ckpt'$"
    with pytest.raises(OSError, match=full), naming_file("runs/a.ckpt"):
        raise OSError(28, "No space left on device")


def test_shown_writes_what_repr_cannot_and_a_list_holding_itself() -> None:
    """A set or dict holding an int of more than 4300 digits failed in Python's ValueError in
    place of the refusal; a list holding itself recursed without end (RecursionError)."""
    loop: list[object] = []
    loop.append(loop)
    for value, got in (
        ({10**5000}, "set (not written: it holds an integer of more than 4300 digits)"),
        ({"d": 10**5000}, "dict (not written: it holds an integer of more than 4300 digits)"),
        (loop, "list [[...]]"),
    ):
        with pytest.raises(TypeError, match=r"^HuberLoss: delta must be a finite number") as info:
            nn.HuberLoss(delta=value)
        assert str(info.value).endswith(f"got {got}")


def test_a_16_bit_update_by_minus_zero_keeps_the_sign_whatever_was_rounded_before() -> None:
    """The cache of rounded factors took -0.0 for 0.0 (equal keys): add_scaled_ by -0.0 (an
    update at rate 0) gave -0.0 + -0.0 the bits of +0.0 once +0.0 had been rounded first."""
    from minidl._scalar import _rounded, add_scaled_

    for dtype in (torch.bfloat16, torch.float16):
        _rounded(0.0, dtype)
        target = torch.tensor([-0.0, 1.0], dtype=dtype)
        expected = target.clone().add_(torch.ones(2, dtype=dtype), alpha=-0.0)
        got = add_scaled_(target.clone(), torch.ones(2, dtype=dtype), -0.0)
        assert torch.equal(got.view(torch.int16), expected.view(torch.int16))


def test_minidl_imports_on_a_torch_without_the_wide_unsigned_dtypes() -> None:
    """torch before 2.3 has no uint16, uint32 or uint64, and the package takes torch 2.1 on:
    importing minidl failed there with a raw AttributeError (a set of them built at import)."""
    from tests.helpers import run_python

    code = (
        "import torch\n"
        "del torch.uint16, torch.uint32, torch.uint64\n"
        "from minidl import nn, optim\n"
        "from minidl.train import fit\n"
        "m = nn.mlp((2, 3, 2))\n"
        "x, y = torch.randn(8, 2), torch.arange(8) % 2\n"
        "fit(m, nn.CrossEntropyLoss(), optim.SGD(m.parameters(), lr=0.1), x, y, epochs=1)\n"
        "print('ok')\n"
    )
    done = run_python(code)
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr
