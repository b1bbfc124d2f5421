"""``minidl.experiments.welch`` and ``minidl.anomaly``: behaviours that changed code passed
every other test of (a second round of mutation testing). Each test names what it pins: the
documented result or refusal, against an exact value, a closed form or the original words.
"""

from __future__ import annotations

import contextlib
import math
import sys

import numpy as np
import pytest
import torch
from torch import Tensor

from minidl import nn
from minidl.anomaly import AnomalyError, detect_anomaly
from minidl.experiments.welch import Welch, critical_t, regularized_beta, welch
from tests.helpers import OneColumnGradient

# Both forms: modules given (wrapped) and none (the Sequential flag).
FORMS = [pytest.param(True, id="wrapped"), pytest.param(False, id="flag")]

# -- Welch's test -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mean_1", "mean_2", "expected"),
    [(2.0, 2.0, Welch(0.0, 0.0, math.inf, 1.0)), (1.0, 2.0, Welch(-1.0, 0.0, math.inf, 0.0))],
)
def test_two_sides_without_spread_have_infinite_degrees_and_a_p_value_of_0_or_1(
    mean_1: float, mean_2: float, expected: Welch
) -> None:
    """With both s.d. 0 the test is exact: infinite degrees of freedom, and p-value 1 for no
    difference, 0 for any other, below as above (a negative difference is one too)."""
    assert welch(mean_1, 0.0, 5, mean_2, 0.0, 7) == expected


def test_counts_given_as_numpy_integers_give_a_test_of_python_floats() -> None:
    """A numpy count (as a DataFrame's) is taken as the int it is: every field of the test is a
    Python float, the same as for int counts (numpy's float64 crept into the degrees of
    freedom and the p-value, and into the report's text as ``np.float64(...)``)."""
    expected = welch(1.0, 1.0, 5, 0.0, 2.0, 7)
    test = welch(1.0, 1.0, np.int64(5), 0.0, 2.0, np.int32(7))
    assert test == expected
    assert repr(test) == repr(expected)
    fields = (test.difference, test.standard_error, test.degrees_of_freedom, test.p_value)
    assert all(type(value) is float for value in fields)


@pytest.mark.parametrize("a", [1e3, 1e5, 1e6])
def test_the_incomplete_beta_of_equal_shapes_at_one_half_is_one_half(a: float) -> None:
    """I_{1/2}(a, a) = 1/2 exactly (Beta(a, a) is symmetric about 1/2), to the documented
    precision for shapes up to a million (about 1e-9): the continued fraction needs hundreds
    of terms there, and cut short it was off by 4e-7 at a = 1000, by 3e-4 at a million."""
    assert regularized_beta(0.5, a, a) == pytest.approx(0.5, abs=1e-9)


@pytest.mark.parametrize("a", [0.1, 0.5, 2.5, 10.0])
def test_the_incomplete_beta_of_small_equal_shapes_keeps_its_last_digits(a: float) -> None:
    """For shapes up to about 100 the incomplete beta is good to about 1e-14: I_{1/2}(a, a) =
    1/2 to within 5e-15 for these (the fraction stops once a step changes it by no more than
    1e-16; stopped on one of the two factors of a step alone, it was off by 2e-14 to 4e-14)."""
    assert abs(regularized_beta(0.5, a, a) - 0.5) <= 5e-15


@pytest.mark.parametrize("level", [1e-303, 1e-305])
def test_a_critical_value_past_2_to_the_500_is_the_closed_form_of_2_degrees(level: float) -> None:
    """Past 2^500, nu / (nu + t^2) is computed from sqrt(nu) / t (t^2 overflows past 2^512):
    with 2 degrees of freedom t = sqrt(2) c / sqrt(1 - c^2), c = 1 - level, and 1 - c^2 =
    level (2 - level) (3.2e151 at 1e-303, 3.2e152 at 1e-305). (The tests of one
    degree, whose square root is itself, could not tell sqrt(nu) from nu.)"""
    c = 1.0 - level
    expected = math.sqrt(2) * c / math.sqrt(level * (2.0 - level))
    assert expected > 2.0**500
    assert critical_t(2, level) == pytest.approx(expected, rel=1e-13)


def test_the_limit_of_the_critical_value_grows_with_the_degrees_of_freedom() -> None:
    """The search stops at sqrt(nu / m), m the smallest normal float, not at 1 degree's limit:
    with 2 degrees a critical value of 8.2e153 (past 1 degree's 6.7e153, within its own
    9.5e153) is found, to its closed form; with half a degree one of 5.5e153 (past its own
    4.7e153, within 1 degree's) is refused, naming its own limit."""
    minimum = sys.float_info.min
    assert math.sqrt(1 / minimum) < 8.16e153 < math.sqrt(2 / minimum)
    level = 1.5e-308  # (t = sqrt(2) c / sqrt(1 - c^2) = 1 / sqrt(level), to rounding)
    assert critical_t(2, level) == pytest.approx(1 / math.sqrt(level), rel=1e-13)
    # (2 P(T > 5.5e153) for half a degree: the tail C t^(-1/2), by scipy's isf)
    with pytest.raises(
        ValueError,
        match=r"^critical_t: the critical value of 0\.5 degrees of freedom at level "
        r"8\.6\d*e-78 lies past 4\.74e\+153, where nu / \(nu \+ t\^2\) is no normal float",
    ):
        critical_t(0.5, 8.648662140643867e-78)


# -- anomaly detection --------------------------------------------------------------------------


@pytest.mark.parametrize("wrapped", FORMS)
def test_a_complex_input_is_left_to_the_modules_own_refusal(wrapped: bool) -> None:
    """Only floating tensors are read: a complex input, NaN or not, is refused by the Linear in
    its own words (its dtype), as without the block, not reported as the model's non-finite
    input."""
    model = nn.Sequential(nn.Linear(2, 3))
    x = torch.tensor([[complex(math.nan, 0.0), 1j]])
    with (
        pytest.raises(TypeError, match=r"^Linear: expected a floating-point input of dtype "),
        detect_anomaly(*([model] if wrapped else [])),
    ):
        model(x)


class _Doubling(nn.Sequential):
    """A Sequential of one's own: its forward doubles the chain's output, its backward the
    gradient it is given."""

    def forward(self, input: Tensor) -> Tensor:
        return super().forward(input) * 2

    def backward(self, grad_output: Tensor) -> Tensor:
        return super().backward(grad_output * 2)


def test_a_subclass_of_sequential_inside_the_model_runs_its_own_forward() -> None:
    """``detect_anomaly()`` runs the layers of a nested ``Sequential`` itself, but only of one
    whose type is ``Sequential``: a subclass's own forward (here doubling) still runs, and the
    output and the gradients are those computed without the block."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), _Doubling(nn.Tanh()))
    x = torch.randn(3, 2)
    expected_output = model(x)
    expected_gradient = model.backward(torch.ones(3, 2))
    with detect_anomaly():
        output = model(x)
        gradient = model.backward(torch.ones(3, 2))
    assert torch.equal(output, expected_output)
    assert torch.equal(gradient, expected_gradient)


@pytest.mark.parametrize("wrapped", FORMS)
def test_a_layer_inside_a_subclass_of_sequential_is_named_by_its_path(wrapped: bool) -> None:
    """The layers of a ``Sequential`` subclass, which runs its own forward, are named from
    the outermost ``Sequential`` as any nested one's: ``Sequential[1][0]`` (the module-less
    form gave ``Sequential[1].[0]``, as if the subclass had a child named by an empty name)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), _Doubling(nn.Linear(2, 2), nn.Tanh()))
    model[1][0].bias.data[1] = math.nan  # type: ignore[index]
    with pytest.raises(AnomalyError) as info, detect_anomaly(*([model] if wrapped else [])):
        model(torch.randn(3, 2))
    assert (info.value.module, info.value.pass_, info.value.what, info.value.index) == (
        "Sequential[1][0]: Linear",
        "forward",
        "output",
        (0, 1),
    )


class _Interrupted(nn.Module):
    """A module whose forward is interrupted (as by Ctrl-C)."""

    def forward(self, input: Tensor) -> Tensor:
        raise KeyboardInterrupt

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


@pytest.mark.parametrize("block", [False, True])
def test_a_forward_interrupted_under_detect_anomaly_refuses_the_backward(block: bool) -> None:
    """A ``KeyboardInterrupt`` in the second layer comes after the first cached the interrupted
    input: backward is refused until a forward succeeds, naming the module and the
    interruption, inside ``detect_anomaly()`` as without it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), _Interrupted())
    with pytest.raises(KeyboardInterrupt), detect_anomaly() if block else contextlib.nullcontext():
        model(torch.randn(3, 2))
    with pytest.raises(
        RuntimeError,
        match=r"^Sequential: backward after a forward stopped at module 1 \(_Interrupted\) by "
        r"KeyboardInterrupt: the modules that ran had already cached its input",
    ):
        model.backward(torch.ones(3, 2))


class _NoLargeTrainingBatch(nn.Module):
    """The identity, which refuses a batch of more than 2 samples in training mode only."""

    def forward(self, input: Tensor) -> Tensor:
        if self.training and input.shape[0] > 2:
            raise ValueError("_NoLargeTrainingBatch: at most 2 samples in training")
        return input.clone()

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output.clone()


@pytest.mark.parametrize("block", [False, True])
def test_a_first_layer_refusing_after_the_trial_ran_refuses_the_backward(block: bool) -> None:
    """A new signature runs the chain's trial (in evaluation mode, for the batch norm), which
    ran every layer and left their caches; the first layer then refuses the training batch.
    Its refusal changed nothing, but the caches are the trial's: backward is refused until a
    forward succeeds, inside ``detect_anomaly()`` as without it (differentiating the trial's
    caches ran a backward of the refused batch, or failed on its shape)."""
    torch.manual_seed(0)
    model = nn.Sequential(_NoLargeTrainingBatch(), nn.BatchNorm1d(3))
    model(torch.randn(2, 3))
    model.backward(torch.ones(2, 3))
    nn.Linear(1, 1)  # (a registration: the next forward's trial runs again)
    with (
        pytest.raises(ValueError, match=r"^_NoLargeTrainingBatch: at most 2 samples"),
        detect_anomaly() if block else contextlib.nullcontext(),
    ):
        model(torch.randn(4, 3))
    for shape in ((2, 3), (4, 3)):
        with pytest.raises(
            RuntimeError,
            match=r"^Sequential: backward after the forward refused by module 0 "
            r"\(_NoLargeTrainingBatch\)",
        ):
            model.backward(torch.ones(shape))


@pytest.mark.parametrize("wrapped", FORMS)
@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
def test_backward_names_a_layer_of_a_nested_sequential_by_its_full_path(
    wrapped: bool, method: str
) -> None:
    """A bad parameter gradient in a nested ``Sequential``'s layer is named from the outermost
    one, ``Sequential[2][0]``, in backward as in forward (the nested one's own backward named
    it ``Sequential[0]``, as if it were the outermost)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(3, 4), nn.Tanh(), nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Linear(4, 2)
    )
    output = model(torch.randn(4, 3))
    with detect_anomaly(*([model] if wrapped else [])):
        model[2][0].bias.grad[1] = math.nan  # type: ignore[index]
        with pytest.raises(AnomalyError) as info:
            getattr(model, method)(torch.ones_like(output))
    assert (info.value.module, info.value.pass_, info.value.what, info.value.index) == (
        "Sequential[2][0]: Linear",
        "backward",
        "gradient of parameter 'bias'",
        (1,),
    )


@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
@pytest.mark.parametrize("inner_first", [True, False], ids=["inner-first", "inner-after"])
def test_a_refusal_inside_a_nested_sequential_has_the_same_notes_inside_the_block(
    method: str, inner_first: bool
) -> None:
    """Inside ``detect_anomaly()`` (no modules given), a refusal in a nested ``Sequential`` lost
    the outer ``Sequential``'s note and had the inner note name ``backward`` for
    ``backward_parameters``: the notes must be those given without the block, the inner one
    naming the method the nested ``Sequential`` is reached by (``backward_parameters`` where it
    holds the first parameters, ``backward`` after them)."""
    torch.manual_seed(0)
    if inner_first:
        model = nn.Sequential(nn.Sequential(nn.Linear(3, 4), OneColumnGradient()), nn.Tanh())
    else:
        model = nn.Sequential(
            nn.Linear(3, 4), nn.Sequential(nn.Tanh(), OneColumnGradient()), nn.Tanh()
        )
    x = torch.randn(5, 3)
    notes = []
    for block in (False, True):
        model(x)
        with (
            detect_anomaly() if block else contextlib.nullcontext(),
            pytest.raises(ValueError, match=r"gradient has shape \(5, 1\)") as raised,
        ):
            getattr(model, method)(torch.ones(5, 4))
        notes.append(raised.value.__notes__)
    inner = method if inner_first else "backward"
    first = "Linear" if inner_first else "Tanh"
    place = 0 if inner_first else 1
    assert notes[0] == [
        f"in Sequential.{inner}, at module 0 ({first}), given the gradient returned by the "
        "backward of module 1 (OneColumnGradient)",
        f"in Sequential.{method}, at module {place} (Sequential), given the gradient returned "
        f"by the backward of module {place + 1} (Tanh)",
    ]
    assert notes[1] == notes[0]
