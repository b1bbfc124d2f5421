"""minidl.train outside fit's epoch loop (predict, error_rate, eval_mode, History, EpochRecord and
their helpers), as a second mutation audit found it untested. Each test checks a value against
an oracle (torch's argmax, exact fractions), the exact refusal, or the modes after the block, and
fails on a mutant of the source that the rest of the suite let pass."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from torch import Tensor

from minidl import nn
from minidl.train import (
    EpochRecord,
    History,
    error_rate,
    eval_mode,
    given_component,
    history_fault,
    predict,
)

F64 = torch.float64


class _Fixed(nn.Module):
    """A model whose outputs are given scores, whatever its input (a row of scores a sample)."""

    def __init__(self, scores: Tensor) -> None:
        super().__init__()
        self.scores = scores

    def forward(self, input: Tensor) -> Tensor:
        return self.scores[: input.shape[0]]

    def backward(self, grad_output: Tensor) -> Tensor:
        raise AssertionError("not trained")


# --- EpochRecord and History equality ------------------------------------------------------


def test_records_and_histories_leave_a_comparison_with_another_class_to_it() -> None:
    """``__eq__`` with another class returns NotImplemented (Python then asks the other side):
    ``mock.ANY`` matches a record or a history, as in ``assert_called_with``; ``False`` would
    refuse it."""
    record = EpochRecord(epoch=0, train_loss=1.0, lr=0.1, validation_error=float("nan"))
    assert record == mock.ANY
    assert History(train_loss=[1.0]) == mock.ANY
    assert EpochRecord.__eq__(record, 1.0) is NotImplemented
    assert History.__eq__(History(), []) is NotImplemented


def test_a_record_of_a_subclass_is_not_equal_to_a_record_of_the_same_numbers() -> None:
    """Equality asks for the same class (as a dataclass's): a subclass's record is no
    EpochRecord's equal, whatever its numbers."""

    class Tagged(EpochRecord):
        pass

    plain = EpochRecord(epoch=1, train_loss=1.0, lr=0.1, validation_error=2.0)
    tagged = Tagged(epoch=1, train_loss=1.0, lr=0.1, validation_error=2.0)
    assert plain == EpochRecord(epoch=1, train_loss=1.0, lr=0.1, validation_error=2.0)
    assert plain != tagged and tagged != plain


def test_a_nan_is_not_equal_to_a_non_float_and_the_comparison_does_not_raise() -> None:
    """A NaN equals a NaN only: against a string (or any non-float) a curve differs, the
    comparison returning False (math.isnan of a str raised TypeError)."""
    assert History(train_loss=[float("nan")]) != History(train_loss=["nan"])  # type: ignore[list-item]
    nan = EpochRecord(epoch=0, train_loss=float("nan"), lr=0.1, validation_error=0.0)
    text = EpochRecord(epoch=0, train_loss="x", lr=0.1, validation_error=0.0)  # type: ignore[arg-type]
    assert nan != text


def test_records_of_other_epochs_or_rates_differ() -> None:
    base = dict(epoch=0, train_loss=1.0, lr=0.1, validation_error=float("nan"))
    record = EpochRecord(**base)  # type: ignore[arg-type]
    assert record != EpochRecord(**{**base, "epoch": 1})  # type: ignore[arg-type]
    assert record != EpochRecord(**{**base, "lr": 0.2})  # type: ignore[arg-type]


def test_histories_differing_in_one_curve_differ() -> None:
    full = dict(train_loss=[1.0], validation_error=[float("nan")], lr=[0.1], batch_lr=[0.1, 0.05])
    assert History(**full) == History(**{k: list(v) for k, v in full.items()})
    for name in full:
        other = {k: list(v) for k, v in full.items()}
        other[name] = [*other[name][:-1], 7.0]
        assert History(**full) != History(**other), name


def test_append_adds_each_field_to_its_curve_and_leaves_batch_lr() -> None:
    history = History(batch_lr=[0.5])
    history.append(EpochRecord(epoch=0, train_loss=1.0, lr=0.1, validation_error=20.0))
    history.append(EpochRecord(epoch=1, train_loss=0.5, lr=0.05, validation_error=float("nan")))
    assert history == History(
        train_loss=[1.0, 0.5], validation_error=[20.0, float("nan")], lr=[0.1, 0.05], batch_lr=[0.5]
    )


def test_append_refuses_no_record_by_its_type_and_adds_nothing() -> None:
    history = History(train_loss=[1.0], validation_error=[2.0], lr=[0.1])
    with pytest.raises(TypeError, match=r"^History\.append: expected an EpochRecord, got dict$"):
        history.append({"epoch": 0, "train_loss": 1.0})  # type: ignore[arg-type]
    assert history == History(train_loss=[1.0], validation_error=[2.0], lr=[0.1])


# --- predict --------------------------------------------------------------------------------


def test_predict_refuses_a_scalar_and_an_empty_x_by_their_shapes() -> None:
    model = nn.Linear(2, 3)
    with pytest.raises(
        ValueError, match=r"^predict: x must hold at least one sample, got shape \(\)$"
    ):
        predict(model, torch.tensor(1.0))
    with pytest.raises(
        ValueError, match=r"^predict: x must hold at least one sample, got shape \(0, 2\)$"
    ):
        predict(model, torch.zeros(0, 2))
    assert model.training


@pytest.mark.parametrize(
    ("batch_size", "kind", "words"),
    [
        (0, ValueError, "got 0"),
        (-1, ValueError, "got -1"),
        (True, TypeError, "got True"),
        (2.0, TypeError, "got 2.0"),
    ],
)
def test_predict_refuses_a_batch_size_that_is_no_positive_integer(
    batch_size: object, kind: type, words: str
) -> None:
    model = nn.Linear(2, 3)
    with pytest.raises(kind, match=rf"^predict: batch_size must be an integer >= 1, {words}$"):
        predict(model, torch.zeros(4, 2), batch_size=batch_size)  # type: ignore[arg-type]
    assert model.training


def test_predict_refuses_x_that_is_no_tensor_by_its_type() -> None:
    with pytest.raises(TypeError, match=r"^predict: x must be a torch\.Tensor, got list$"):
        predict(nn.Linear(2, 3), [[0.0, 1.0]])  # type: ignore[arg-type]


def test_predict_runs_the_model_in_evaluation_mode_and_gives_it_back() -> None:
    """Dropout of p=0.9 in evaluation mode is the identity: the prediction is the argmax of the
    layer's scores; in training mode most of them would be zeroed."""
    torch.manual_seed(0)
    linear = nn.Linear(8, 5, dtype=F64)
    model = nn.Sequential(linear, nn.Dropout(0.9))
    x = torch.randn(64, 8, dtype=F64)
    expected = linear(x).argmax(dim=1)
    assert torch.equal(predict(model, x), expected)
    assert torch.equal(predict(model, x, batch_size=7), expected)
    assert all(module.training for module in model.modules())


def test_a_row_holding_one_nan_among_numbers_is_no_class() -> None:
    """A single NaN in a row (not every score NaN) makes the sample's class -1; an infinite
    score is a number, its row's argmax."""
    inf, nan = float("inf"), float("nan")
    scores = torch.tensor([[0.0, nan, 1.0], [inf, 0.0, 1.0], [0.0, 1.0, -inf], [2.0, 1.0, 0.0]])
    model = _Fixed(scores)
    assert predict(model, torch.zeros(4, 1)).tolist() == [-1, 0, 1, 0]


def test_predict_refuses_scores_of_no_class_and_outputs_that_are_no_tensor() -> None:
    with pytest.raises(
        ValueError,
        match=r"^predict: the model's outputs must be class scores \(N, C\) or \(N, \.\.\., C\) "
        r"for N = 3 samples, got shape \(3, 0\)$",
    ):
        predict(_Fixed(torch.zeros(3, 0)), torch.zeros(3, 1))

    class Pair(nn.Module):
        def forward(self, input: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
            return input, input

        def backward(self, grad_output: Tensor) -> Tensor:
            return grad_output

    with pytest.raises(
        ValueError,
        match=r"^error_rate: the model's outputs must be class scores \(N, C\) for N = 2 "
        r"samples, got tuple$",
    ):
        error_rate(Pair(), torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64))


# --- eval_mode ------------------------------------------------------------------------------


def test_eval_mode_refuses_no_module_when_called_before_any_block() -> None:
    with pytest.raises(TypeError, match=r"^eval_mode: model must be a minidl Module, got int$"):
        eval_mode(3)  # type: ignore[type-var]


def test_eval_mode_gives_the_modes_back_after_a_keyboard_interrupt() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    model[1].eval()
    with pytest.raises(KeyboardInterrupt), eval_mode(model):
        assert not any(module.training for module in model.modules())
        raise KeyboardInterrupt
    assert [module.training for module in model.modules()] == [True, True, False]


class _Counting(nn.Module):
    """A module whose ``train`` override records every call."""

    def __init__(self, calls: list[bool]) -> None:
        super().__init__()
        self.calls = calls

    def train(self, mode: bool = True) -> _Counting:
        self.calls.append(mode)
        return super().train(mode)

    def forward(self, input: Tensor) -> Tensor:
        return input

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


def test_eval_mode_calls_an_override_once_on_the_way_in_and_once_on_the_way_out() -> None:
    """Modules of ``Module.train`` get their flag back, not a call of ``train`` (which would call
    every descendant's override again with the parent's mode)."""
    calls: list[bool] = []
    model = nn.Sequential(nn.Sequential(_Counting(calls)), nn.Linear(2, 2))
    with eval_mode(model):
        assert calls == [False]
    assert calls == [False, True]
    assert all(module.training for module in model.modules())


class _Parent(nn.Sequential):
    """A container whose ``train`` override sets its children's modes (as Module.train does)."""

    def train(self, mode: bool = True) -> _Parent:
        return super().train(mode)


def test_a_child_kept_in_evaluation_mode_under_an_overriding_parent_stays_there() -> None:
    """Parents are given their modes first, then children: a frozen child under a parent whose
    ``train`` sets every child's mode is not left training."""
    model = _Parent(nn.Linear(2, 2), nn.Dropout(0.5))
    model[1].eval()
    with eval_mode(model):
        pass
    assert [module.training for module in model.modules()] == [True, True, False]


# --- error_rate -----------------------------------------------------------------------------


def test_error_rate_is_the_exact_percentage_in_double_precision() -> None:
    """One error in three samples is 100/3 % as Python computes it (not a float32 rate, nor an
    integer percentage)."""
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert error_rate(_Fixed(scores), torch.zeros(3, 1), torch.tensor([0, 1, 1])) == 100.0 / 3
    scores = torch.eye(7)
    assert (
        error_rate(_Fixed(scores), torch.zeros(7, 1), torch.tensor([0, 1, 2, 3, 4, 5, 0]))
        == 100.0 / 7
    )


def test_error_rate_refuses_a_class_beyond_the_scores_width_below_the_sample_count() -> None:
    """Classes are the width of the outputs (2 here), not the number of samples (5)."""
    model = _Fixed(torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"^error_rate: ") as raised:
        error_rate(model, torch.zeros(5, 1), torch.tensor([0, 1, 2, 0, 1]))
    assert "2" in str(raised.value)
    assert model.training


def test_error_rate_refuses_a_negative_index_before_running_the_model() -> None:
    calls: list[int] = []

    class Spy(_Fixed):
        def forward(self, input: Tensor) -> Tensor:
            calls.append(1)
            return super().forward(input)

    with pytest.raises(ValueError, match=r"^error_rate: .*-1"):
        error_rate(Spy(torch.zeros(3, 2)), torch.zeros(3, 1), torch.tensor([0, -1, 1]))
    assert calls == []


# --- given_component and history_fault ------------------------------------------------------


def test_given_component_names_pytorchs_optimizer_and_loss_by_minidls_package() -> None:
    sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    assert given_component(sgd) == (
        "torch.optim.sgd.SGD, PyTorch's: give minidl's, minidl.optim.SGD"
    )
    assert given_component(torch.nn.MSELoss()) == (
        "torch.nn.modules.loss.MSELoss, PyTorch's: give minidl's, minidl.nn.MSELoss"
    )
    assert given_component(nn.MSELoss) == (
        "the class MSELoss; pass an instance, built with its arguments"
    )
    assert given_component(torch.tensor(1.0)) == "Tensor"


def test_history_fault_refuses_a_bool_and_names_its_index_without_a_float_hint() -> None:
    history = History(train_loss=[1.0, True], validation_error=[1.0, 2.0], lr=[0.1, 0.1])  # type: ignore[list-item]
    assert history_fault(history) == (
        TypeError,
        "history.train_loss must be a list of numbers, Python floats or ints, got True (bool) at index 1",
    )


def test_history_fault_refuses_unequal_curves_even_where_two_agree() -> None:
    assert history_fault(History(train_loss=[1.0], validation_error=[1.0, 2.0], lr=[0.1, 0.2])) == (
        ValueError,
        "history must hold as many epochs in train_loss, validation_error and lr (one entry per "
        "epoch each), got 1, 2 and 2",
    )
    assert history_fault(History(train_loss=[1.0], validation_error=[1.0], lr=[])) == (
        ValueError,
        "history must hold as many epochs in train_loss, validation_error and lr (one entry per "
        "epoch each), got 1, 1 and 0",
    )


def test_history_fault_checks_batch_lr_too() -> None:
    assert history_fault(History(batch_lr=[0.1, "a"])) == (  # type: ignore[list-item]
        TypeError,
        "history.batch_lr must be a list of numbers, Python floats or ints, got 'a' (str) at index 1",
    )


def test_predict_and_error_rate_refuse_no_module_in_their_own_names() -> None:
    x, y = torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(TypeError, match=r"^predict: model must be a minidl Module, got int$"):
        predict(3, x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^error_rate: model must be a minidl Module, got int$"):
        error_rate(3, x, y)  # type: ignore[arg-type]
