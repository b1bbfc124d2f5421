"""The internal helpers (minidl._validate, minidl._setting, minidl.nn._checks, minidl._scalar)
as a third mutation audit found them untested: each test fails on a small change of theirs
that the area's tests let through."""

from __future__ import annotations

import math
import re
import warnings
from decimal import Decimal
from fractions import Fraction

import pytest
import torch

from minidl import nn
from minidl._validate import (
    check_class_indices,
    check_copyable,
    check_int,
    check_labelled,
    check_like,
    check_real,
    check_samples,
    describe_pair,
    plain_choice,
    shown,
    shown_path,
    shown_typed,
)
from minidl.nn import _checks
from minidl.nn.parameter import Parameter

# -- shown / shown_path ------------------------------------------------------------------------


def test_shown_writes_a_tensor_of_twenty_elements_whole() -> None:
    x = torch.arange(20.0)
    assert shown(x) == repr(x)
    assert shown(torch.zeros(21)) == "a tensor of shape (21,), torch.float32"


def test_shown_quotes_a_text_of_100_characters_whole_and_a_longer_by_its_first_40() -> None:
    assert shown("a" * 100) == repr("a" * 100)
    text = "0123456789" * 10 + "x"
    assert shown(text) == "'0123456789012345678901234567890123456789'... (a str of 101 characters)"


def test_shown_writes_a_list_or_tuple_holding_itself_as_repr_does() -> None:
    inner: list[object] = [1]
    inner.append(inner)
    assert shown(inner) == repr(inner) == "[1, [...]]"
    holder: tuple[list[object]] = ([],)
    holder[0].append(holder)
    assert shown(holder) == repr(holder) == "([(...)],)"


def test_shown_writes_twenty_items_whole_and_a_list_of_one_as_a_list() -> None:
    assert shown(list(range(20))) == repr(list(range(20)))
    assert shown(tuple(range(20))) == repr(tuple(range(20)))
    assert shown(list(range(21))) == repr(list(range(20)))[:-1] + ", ... (21 items)]"
    assert shown([5]) == "[5]"
    assert shown((5,)) == "(5,)"


def test_shown_writes_a_fraction_of_terms_past_40_digits_by_their_digits() -> None:
    assert shown(Fraction(10**45, 1)) == "Fraction(an int of 46 digits, 1)"
    assert shown(Fraction(-(10**45), 7)) == "Fraction(a negative int of 46 digits, 7)"


def test_shown_writes_a_number_whose_repr_is_100_characters_whole() -> None:
    value = Decimal("1" * 89)
    assert len(repr(value)) == 100
    assert shown(value) == repr(value)
    longer = Decimal("1" * 90)
    assert shown(longer) == repr(longer)[:40] + "... (a Decimal written in 101 characters)"


def test_shown_counts_the_digits_of_a_power_of_ten_and_writes_40_digits_whole() -> None:
    assert shown(10**50) == "an int of 51 digits"
    assert shown(10**40) == "an int of 41 digits"
    assert shown(-(10**60)) == "a negative int of 61 digits"
    assert (2**132).bit_length() == 133 and len(str(2**132)) == 40
    assert shown(2**132) == repr(2**132)
    assert shown(-(2**132)) == repr(-(2**132))


def test_shown_typed_names_the_type_but_not_of_a_tensor_written_by_its_shape() -> None:
    assert shown_typed("a") == "str 'a'"
    assert shown_typed(torch.zeros(50, 8)) == "a tensor of shape (50, 8), torch.float32"


def test_shown_path_names_a_path_of_path_max_characters_whole_and_quotes_white_space() -> None:
    assert shown_path("a" * 4096) == "a" * 4096
    assert shown_path("a" * 4097) == shown("a" * 4097)
    assert shown_path(" a") == "' a'"
    assert shown_path("a ") == "'a '"
    assert shown_path("runs/a.ckpt") == "runs/a.ckpt"


def test_plain_choice_gives_a_plain_str_and_asks_no_subclass_eq() -> None:
    class Loose(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    given = plain_choice(Loose("epoch"), ("epoch", "batch"))
    assert type(given) is str and given == "epoch"
    assert plain_choice(Loose("nope"), ("epoch", "batch")) is None


# -- check_real / check_int ---------------------------------------------------------------------


def test_check_real_refuses_a_value_at_an_open_lower_bound() -> None:
    with pytest.raises(ValueError, match=re.escape("f: x must be in (0, inf), got 0.0")):
        check_real("f", "x", 0.0, low=0.0, low_open=True)
    assert check_real("f", "x", 0.0, low=0.0) == 0.0


def test_check_real_refuses_a_bool_as_no_number() -> None:
    message = "f: x must be a finite number in (-inf, inf) (a float or an int), got bool True"
    with pytest.raises(TypeError, match=re.escape(message)):
        check_real("f", "x", True)


def test_check_real_writes_an_unbounded_side_open() -> None:
    with pytest.raises(
        ValueError, match=re.escape("f: x must be a finite number in (-inf, 1], got nan")
    ):
        check_real("f", "x", math.nan, high=1.0)
    with pytest.raises(ValueError, match=re.escape("f: x must be in [0, inf), got -1")):
        check_real("f", "x", -1, low=0.0)


def test_check_real_names_the_other_setting_a_bound_is() -> None:
    message = "CyclicLR: max_lr must be in [0.1, inf) (at least base_lr), got 0.01"
    with pytest.raises(ValueError, match=re.escape(message)):
        check_real("CyclicLR", "max_lr", 0.01, low=0.1, bound="at least base_lr")


def test_check_real_refuses_a_string_by_type() -> None:
    with pytest.raises(TypeError, match=re.escape("got str '0.1'")):
        check_real("f", "x", "0.1")


def test_check_int_takes_its_lower_bound() -> None:
    assert check_int("f", "n", 1) == 1
    assert check_int("f", "n", 0, low=0) == 0
    with pytest.raises(ValueError, match=re.escape("f: n must be an integer >= 1, got 0")):
        check_int("f", "n", 0)


# -- tensor checks --------------------------------------------------------------------------------


def test_check_copyable_names_a_meta_value_as_meta() -> None:
    message = "f: w is a meta tensor; expected a dense tensor that holds its values"
    with pytest.raises(TypeError, match=re.escape(message)):
        check_copyable("f", "w", torch.zeros(2, device="meta"), torch.zeros(2))


def test_check_samples_refuses_x_and_y_on_two_devices() -> None:
    message = "f: x and y must be on one device, got cpu and meta"
    with pytest.raises(ValueError, match=re.escape(message)):
        check_samples("f", torch.zeros(2, 1), torch.zeros(2, device="meta"))


def test_check_class_indices_refuses_bool_labels_by_dtype() -> None:
    message = "f: y must hold class indices of an integer dtype, got torch.bool"
    with pytest.raises(TypeError, match=re.escape(message)):
        check_class_indices("f", "", torch.tensor([True, False]))


def test_check_class_indices_reads_no_values_of_a_meta_y() -> None:
    y = torch.zeros(3, dtype=torch.long, device="meta")
    assert check_class_indices("f", "", y) is None
    assert check_class_indices("f", "", y, 2) is None


def test_check_class_indices_refuses_minus_one_without_classes() -> None:
    with pytest.raises(ValueError, match=re.escape("f: y must hold class indices >= 0, got -1")):
        check_class_indices("f", "", torch.tensor([0, -1]))
    check_class_indices("f", "", torch.tensor([0, 5]))


def test_check_class_indices_refuses_the_number_of_classes_and_names_the_lowest_below_0() -> None:
    message = "f: y must hold class indices in [0, 3) (the model's outputs have 3 columns), got 3"
    with pytest.raises(ValueError, match=re.escape(message) + "$"):
        check_class_indices("f", "", torch.tensor([0, 3]), 3)
    check_class_indices("f", "", torch.tensor([0, 2]), 3)
    with pytest.raises(ValueError, match=r"have 3 columns\), got -2$"):
        check_class_indices("f", "", torch.tensor([-2, 5]), 3)


def test_check_class_indices_of_one_output_says_one_column_and_hints() -> None:
    message = (
        "f: y must hold class indices in [0, 1) (the model's outputs have 1 column), got 1; hint"
    )
    with pytest.raises(ValueError, match=re.escape(message) + "$"):
        check_class_indices("f", "", torch.tensor([0, 1]), 1, one_output_hint="hint")


def test_check_labelled_names_an_empty_set_by_its_set_name() -> None:
    x, y = torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^fit: the data is empty, got x of shape \(0, 2\)"):
        check_labelled("fit", "", x, y, set_name="the data")
    with pytest.raises(ValueError, match=r"^fit: the validation set is empty"):
        check_labelled("fit", "validation ", x, y)


def test_check_labelled_refuses_x_and_y_on_two_devices() -> None:
    message = "fit: validation x and y must be on one device, got cpu and meta"
    with pytest.raises(ValueError, match=re.escape(message)):
        check_labelled(
            "fit", "validation ", torch.zeros(2, 3), torch.zeros(2, dtype=torch.long, device="meta")
        )


def test_check_like_takes_another_number_of_samples() -> None:
    check_like("f", "x_val", torch.zeros(5, 3), torch.zeros(2, 3), "x")
    with pytest.raises(
        ValueError, match=re.escape("f: x_val must hold samples like x, of shape (N, 3)")
    ):
        check_like("f", "x_val", torch.zeros(5, 4), torch.zeros(2, 3), "x")


def test_describe_pair_counts_items_in_words() -> None:
    assert describe_pair((1,)) == "a tuple of 1 item"
    assert describe_pair([1, 2, 3]) == "a list of 3 items"
    assert describe_pair(()) == "a tuple of 0 items"


# -- minidl._setting ----------------------------------------------------------------------------


def test_a_setting_aliased_in_a_subclass_keeps_its_name_and_slot() -> None:
    class Sub(nn.LeakyReLU):
        slope = nn.LeakyReLU.negative_slope

    assert nn.LeakyReLU.negative_slope.slot == "_negative_slope"
    layer = Sub(0.25)
    layer.slope = 0.5
    assert (layer.negative_slope, layer._negative_slope) == (0.5, 0.5)
    x = torch.tensor([[-2.0, 3.0]], dtype=torch.float64)
    assert torch.equal(nn.LeakyReLU(0.1)(x), torch.nn.functional.leaky_relu(x, 0.1))


def test_an_inplace_true_pickled_by_an_earlier_version_is_dropped_with_a_warning() -> None:
    layer = nn.ReLU()
    with pytest.warns(UserWarning, match=r"^ReLU: inplace=True, pickled by an earlier"):
        nn.ReLU.inplace.set_pickled(layer, True)
    assert layer.inplace is False


def test_a_fixed_setting_set_again_to_an_equal_value_of_another_type_is_refused() -> None:
    layer = nn.BatchNorm1d(3)
    with pytest.raises(
        AttributeError,
        match=re.escape("BatchNorm1d: affine is fixed at construction (True), got 1; "),
    ):
        layer.affine = 1
    assert layer.affine is True and type(layer._affine) is bool
    layer.affine = True  # (the value kept, set again: nothing changes)


def test_a_fixed_setting_whose_slot_a_subclass_gives_a_class_value_is_set_by_the_constructor() -> (
    None
):
    class Sub(nn.BatchNorm1d):
        _affine = False

    layer = Sub(3)
    assert layer.affine is True and "_affine" in vars(layer)


def test_warn_dropped_writes_a_tensor_of_eight_elements_whole() -> None:
    from minidl._setting import warn_dropped

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_dropped(nn.ReLU(), "inplace", torch.zeros(8), "as with inplace=False")
        warn_dropped(nn.ReLU(), "inplace", torch.zeros(9), "as with inplace=False")
    assert "inplace=tensor([0., 0., 0., 0., 0., 0., 0., 0.]), pickled" in str(caught[0].message)
    assert "inplace=a tensor of shape (9,) and dtype torch.float32, pickled" in str(
        caught[1].message
    )


# -- minidl._scalar -----------------------------------------------------------------------------


def _signbit(t: torch.Tensor) -> torch.Tensor:
    return torch.signbit(t)


def test_operand_keeps_the_sign_of_zero() -> None:
    from minidl._scalar import operand

    x = torch.ones(3)
    operand(0.0, x)  # (a cache keyed by value would give -0.0 this one)
    assert torch.signbit(x.mul(operand(-0.0, x))).all()
    operand(-0.0, x)
    assert not torch.signbit(x.mul(operand(0.0, x))).any()


def test_cpu_operand_and_tensor_operand_key_zero_by_its_sign() -> None:
    from minidl._scalar import cpu_operand, tensor_operand

    for dtype in (torch.float32, torch.float64):
        cpu_operand(0.0, dtype)
        assert torch.signbit(cpu_operand(-0.0, dtype))
        assert not torch.signbit(cpu_operand(0.0, dtype))
    like = torch.ones(2, dtype=torch.float16)
    tensor_operand(0.0, like)
    assert torch.signbit(tensor_operand(-0.0, like))
    assert not torch.signbit(tensor_operand(0.0, like))


def test_scaled_keeps_the_sign_of_a_zero_factor_in_sixteen_bits() -> None:
    from minidl._scalar import scaled

    for dtype in (torch.float16, torch.bfloat16):
        x = torch.ones(4, dtype=dtype)
        scaled(x, 0.0)
        assert torch.signbit(scaled(x, -0.0)).all()
        assert torch.equal(scaled(x, -0.0), x * -0.0)


def _oracle_add(target: torch.Tensor, other: torch.Tensor, alpha: float) -> torch.Tensor:
    """The vectorised body's bits: alpha rounded to the dtype, the sum in float32, rounded once."""
    a = float(torch.tensor(alpha, dtype=target.dtype))
    return (target.float() + a * other.float()).to(target.dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_add_scaled_and_scaled_round_alpha_to_the_dtype(dtype: torch.dtype) -> None:
    from minidl._scalar import add_scaled, add_scaled_, scaled

    g = torch.Generator().manual_seed(0)
    target = torch.randn(1000, generator=g).to(dtype)
    other = torch.randn(1000, generator=g).to(dtype)
    alpha = 0.1001
    expected = _oracle_add(target, other, alpha)
    assert torch.equal(add_scaled(target, other, alpha), expected)
    assert torch.equal(add_scaled_(target.clone(), other, alpha), expected)
    rounded = float(torch.tensor(alpha, dtype=dtype))
    assert torch.equal(scaled(other, alpha), (other.float() * rounded).to(dtype))


def test_operand_made_under_a_meta_default_device_is_on_the_cpu() -> None:
    from minidl._scalar import operand

    x = torch.ones(3)
    with torch.device("meta"):
        made = operand(0.318309886, x)
    assert isinstance(made, torch.Tensor) and made.device.type == "cpu"
    assert torch.equal(x.mul(made), x * 0.318309886)


def test_tensor_operand_made_in_inference_mode_is_a_normal_tensor() -> None:
    from minidl._scalar import tensor_operand

    like = torch.ones(2, dtype=torch.bfloat16)
    with torch.inference_mode():
        made = tensor_operand(0.7071, like)
    assert not made.is_inference()


# -- minidl.nn._checks --------------------------------------------------------------------------


def test_check_input_names_no_features_and_an_empty_batch() -> None:
    with pytest.raises(ValueError, match=re.escape("f: got no features (input shape (2, 0))")):
        _checks.check_input("f", torch.zeros(2, 0))
    with pytest.raises(ValueError, match=re.escape("f: got an empty batch (input shape (0, 0))")):
        _checks.check_input("f", torch.zeros(0, 0))
    with pytest.raises(ValueError, match=re.escape("f: got an empty batch (input shape (0, 3))")):
        _checks.check_input("f", torch.zeros(0, 3))


def test_a_gradient_of_another_dtype_than_the_parameters_is_a_gradient_dtype_error() -> None:
    with pytest.raises(_checks.GradientDtypeError) as caught:
        _checks.check_like_parameter(
            "L", torch.zeros(2, dtype=torch.float64), torch.zeros(2), "gradient"
        )
    assert (caught.value.given, caught.value.expected) == (torch.float64, torch.float32)


def test_check_layer_parameters_names_a_bias_of_a_matrix_weight_as_a_1_tuple() -> None:
    message = "L: bias has shape (2,), expected (out_features,) = (3,)"
    with pytest.raises(ValueError, match=re.escape(message)):
        _checks.check_layer_parameters(
            "L", torch.zeros(3, 2), torch.zeros(2), (3, 2), "out_features, in_features"
        )


def test_check_layer_parameters_refuses_a_bias_on_another_device() -> None:
    message = "L: bias is torch.float32 on meta but weight is torch.float32 on cpu"
    with pytest.raises(ValueError, match=re.escape(message)):
        _checks.check_layer_parameters(
            "L", torch.zeros(3, 2), torch.zeros(3, device="meta"), (3, 2), "out, in"
        )


class _Layer:
    def __init__(self, **parameters: object) -> None:
        self._parameters = dict(parameters)


def test_check_parameter_attributes_refuses_a_bias_set_to_none_by_hand() -> None:
    weight, bias = Parameter(torch.zeros(2)), Parameter(torch.zeros(2))
    layer = _Layer(weight=weight, bias=bias)
    layer.weight, layer.bias = weight, None  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"^L: bias is None, but a bias is still registered"):
        _checks.check_parameter_attributes("L", layer, "weight, bias")
    del layer._parameters["bias"]
    _checks.check_parameter_attributes("L", layer, "weight, bias")


def test_check_parameter_attributes_refuses_a_parameter_that_is_not_registered() -> None:
    layer = _Layer(weight=Parameter(torch.zeros(2)))
    layer.weight = Parameter(torch.zeros(2))  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"^L: weight is a Parameter that is not registered"):
        _checks.check_parameter_attributes("L", layer, "weight", "")


def test_check_parameter_attributes_names_a_required_none_still_registered_by_its_type() -> None:
    layer = _Layer(weight=Parameter(torch.zeros(2)))
    layer.weight = None  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match=r"^L: weight must be a minidl Parameter, got NoneType"):
        _checks.check_parameter_attributes("L", layer, "weight", "")


def test_check_runs_refuses_one_module_twice_and_a_count_below_one() -> None:
    loss = nn.MSELoss()
    with pytest.raises(ValueError, match=r"^S: run 1 holds the same MSELoss object as run 0"):
        _checks.check_runs("S", [(loss, 1), (loss, 1)], nn.Loss)
    with pytest.raises(
        ValueError, match=re.escape("S: run 0 must cover a positive number of models, got 0")
    ):
        _checks.check_runs("S", [(loss, 0)], nn.Loss)
    with pytest.raises(
        TypeError, match=re.escape("S: run 0 must cover a positive number of models, got '2'")
    ):
        _checks.check_runs("S", [(loss, "2")], nn.Loss)
    assert _checks.check_runs("S", [(loss, 2), (nn.MSELoss(), 1)], nn.Loss) == [(0, 2), (2, 3)]


def test_check_grad_like_refuses_a_gradient_on_another_device() -> None:
    message = "f: gradient is on meta but the last forward's output is on cpu"
    with pytest.raises(ValueError, match=re.escape(message)):
        _checks.check_grad_like("f", torch.zeros(2, device="meta"), torch.zeros(2))


def test_refuse_given_gradient_dtype_names_the_callers_dtype_when_it_was_promoted() -> None:
    inner = _checks.gradient_dtype_error("inner", torch.float32, torch.float16)
    # the caller gave float16, promoted to float32 on the way: raised in the caller's name
    with pytest.raises(
        _checks.GradientDtypeError,
        match=r"^Seq: gradient dtype torch.float16 does not match torch.float16",
    ) as caught:
        _checks.refuse_given_gradient_dtype("Seq", inner, torch.zeros(2, dtype=torch.float16))
    assert caught.value.given is torch.float16 and caught.value.__cause__ is inner
    # the caller's own dtype: nothing to add
    assert _checks.refuse_given_gradient_dtype("Seq", inner, torch.zeros(2)) is None


def test_given_function_names_a_lambda() -> None:
    assert _checks.given_function(lambda x: x).startswith("a lambda, which has no backward")


def test_a_class_of_a_package_named_like_torch_is_no_pytorch_module() -> None:
    class Net:
        def parameters(self) -> list[object]:
            return []

    Net.__module__ = "torchlike.models"
    assert not _checks.is_pytorch_module(Net())


def test_given_parameter_names_a_pair_of_one_tensor_by_its_type() -> None:
    assert _checks.given_parameter((torch.zeros(1), 3)) == "tuple"
    assert _checks.given_parameter((torch.zeros(1), torch.zeros(1))).startswith(
        "a tuple of two tensors"
    )
