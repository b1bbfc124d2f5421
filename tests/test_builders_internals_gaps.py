"""Tests that kill the mutants of ``nn.mlp``/``nn.activation`` and of the internals
``GradientMemory``, ``Recent``, ``CachedDerivative`` and ``Unsupported`` that survived a
second mutation audit.

Each test pins down a behaviour a user relies on against an oracle: the documented error (its
type and exact words), the generator left as it was after a refusal, PyTorch autograd in
float64, or PyTorch's own rounding of 16-bit activations.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from minidl import nn
from tests.helpers import F64, assert_close

# -- mlp: what it refuses, in its words --------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "activations", "got"),
    [
        (torch.tensor(3), "tanh", "sizes must be a sequence of layer widths, e.g. (2, 25, 2), "
         "got a 0-dim Tensor"),
        (np.array(3), "tanh", "sizes must be a sequence of layer widths, e.g. (2, 25, 2), "
         "got a 0-dim ndarray"),
        ((2, 3, 2), np.array("relu"), "activations must be an activation name or a sequence "
         "of names, got a 0-dim ndarray"),
        ((2, 3, 2), torch.tensor(1), "activations must be an activation name or a sequence "
         "of names, got a 0-dim Tensor"),
    ],
    ids=["0-dim tensor of sizes", "0-dim array of sizes", "0-dim array of a name",
         "0-dim tensor as names"],
)  # fmt: skip
def test_mlp_refuses_a_0_dim_tensor_or_array_as_one_number_with_no_tolist_hint(
    sizes: Any, activations: Any, got: str
) -> None:
    """A 0-dim tensor or array is one number (or one string), not a sequence: refused as a
    TypeError naming it as 0-dim, and without the hint "pass sizes.tolist()" that a tensor of
    sizes gets (a 0-dim tensor's ``tolist()`` is one int, which mlp refuses again); a 0-dim
    array's ``__iter__`` raises numpy's own words, without mlp's name."""
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    with pytest.raises(TypeError) as caught:
        nn.mlp(sizes, activations, generator=generator)
    assert str(caught.value) == "mlp: " + got
    assert torch.equal(generator.get_state(), state)


def test_mlp_writes_numpy_sizes_as_ints_in_the_note_of_a_layer_refused() -> None:
    """Sizes given as numpy integers are taken as the ints they are: a later layer that cannot
    be held is refused in Linear's words with mlp's note naming it with plain integers (not
    ``Linear(np.int64(25), ...)``), and a network built from them has int widths."""
    sizes = [np.int64(2), np.int64(25), np.int64(2**62), np.int64(2)]
    with pytest.raises(ValueError, match=r"^Linear: cannot hold a weight of ") as caught:
        nn.mlp(sizes)
    assert getattr(caught.value, "__notes__", None) == [
        "in mlp, building layer 1 (Linear(25, 4611686018427387904))"
    ]
    assert "np." not in str(caught.value)
    built = nn.mlp([np.int64(2), np.int32(3), np.int64(1)])
    layers = [built[0], built[2]]
    assert all(isinstance(layer, nn.Linear) for layer in layers)
    widths = [(layer.in_features, layer.out_features) for layer in layers]  # type: ignore[attr-defined]
    assert widths == [(2, 3), (3, 1)]
    assert all(type(width) is int for pair in widths for width in pair)
    assert repr(built[0]) == "Linear(in_features=2, out_features=3, bias=True)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a CUDA device")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda")], ids=str)
def test_mlp_on_a_cuda_device_that_is_not_there_is_linears_refusal_naming_mlp(
    device: Any,
) -> None:
    """Without CUDA, ``mlp(..., device="cuda")`` is refused as ``Linear`` refuses the device
    (a ValueError naming it), with mlp's note; torch's ``AssertionError`` ("Torch not compiled
    with CUDA enabled"), raised while mlp notes the generator's state to put back, is not what
    the caller sees. The CPU generator is not moved."""
    torch.manual_seed(3)
    before = torch.get_rng_state()
    with pytest.raises(ValueError, match=r"^Linear: cannot put tensors on device ") as caught:
        nn.mlp((2, 3, 2), device=device)
    assert getattr(caught.value, "__notes__", None) == ["in mlp, building layer 0 (Linear(2, 3))"]
    assert torch.equal(torch.get_rng_state(), before)


def test_mlp_of_no_hidden_layer_still_refuses_an_unknown_activation_name() -> None:
    """``mlp((2, 3), "softmax")`` has no hidden layer to use the name, but a misspelt name is
    a mistake all the same (the network built would change as soon as a hidden layer is
    added): refused as for a deeper network, listing the valid names, before any draw."""
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    with pytest.raises(ValueError) as caught:
        nn.mlp((2, 3), "softmax", generator=generator)
    assert str(caught.value) == (
        "mlp: unknown activation 'softmax'; valid names are elu, gelu, gelutanh, leakyrelu, "
        "relu, selu, sigmoid, silu, tanh"
    )
    assert torch.equal(generator.get_state(), state)
    assert len(nn.mlp((2, 3), "Leaky-ReLU")) == 1  # (a valid name, in any spelling, is taken)


# -- CachedDerivative: 16-bit inputs computed in float32 and rounded once -----------------------

_CACHED: dict[str, Any] = {
    "ELU": nn.ELU,
    "GELU": nn.GELU,
    "GELU tanh": functools.partial(nn.GELU, approximate="tanh"),
    "SiLU": nn.SiLU,
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", list(_CACHED))
def test_a_16_bit_cached_derivative_activation_is_its_float32_result_rounded_once(
    name: str, dtype: torch.dtype
) -> None:
    """ELU, GELU and SiLU compute a float16 or bfloat16 input in float32 and round the output
    once; the backward multiplies the 16-bit gradient by the derivative kept in float32 and
    rounds the product once: bit for bit the float32 module's output and gradient (of the
    same rounded values) rounded to the 16-bit dtype, through forward/backward and through a
    StackedActivation (which has the activation write into its output). Computed in 16 bits,
    or with the derivative rounded to 16 bits before the product, some elements differ."""
    generator = torch.Generator().manual_seed(7)
    x = (3 * torch.randn(4, 64, 32, generator=generator)).to(dtype)
    upstream = torch.randn(4, 64, 32, generator=generator).to(dtype)
    wide = _CACHED[name]()
    expected_output = wide(x.float()).to(dtype)
    expected_grad = wide.backward(upstream.float()).to(dtype)
    module = _CACHED[name]()
    output = module(x)
    grad = module.backward(upstream)
    assert output.dtype == grad.dtype == dtype
    assert torch.equal(output, expected_output)
    assert torch.equal(grad, expected_grad)
    stacked = nn.StackedActivation([(_CACHED[name](), 2), (nn.Tanh(), 1), (_CACHED[name](), 1)])
    stacked_output = stacked(x)
    stacked_grad = stacked.backward(upstream)
    assert stacked_output.dtype == stacked_grad.dtype == dtype
    for model in (0, 1, 3):
        assert torch.equal(stacked_output[model], expected_output[model]), model
        assert torch.equal(stacked_grad[model], expected_grad[model]), model


def test_a_forward_refused_by_elus_alpha_leaves_the_16_bit_backward_of_the_last_one() -> None:
    """A forward that ELU refuses where it computes (an alpha set beyond float32's range, for a
    float32 input) leaves the module as the last forward left it: the backward of a float16
    gradient after a float16 forward is still the float16 one, rounded once, bit for bit as
    without the refused call (not promoted to a float32 gradient)."""
    generator = torch.Generator().manual_seed(8)
    x = (3 * torch.randn(16, 8, generator=generator)).half()
    upstream = torch.randn(16, 8, generator=generator).half()
    module = nn.ELU()
    module(x)
    module.alpha = 1e300
    with pytest.raises(ValueError, match=r"^ELU: alpha=1e\+300 is beyond the range of the dtype"):
        module(x.float())
    grad = module.backward(upstream)
    fresh = nn.ELU()
    fresh(x)
    assert grad.dtype == torch.float16
    assert torch.equal(grad, fresh.backward(upstream))


# -- GradientMemory: a tensor without storage ----------------------------------------------------


@pytest.mark.parametrize("kind", ["Linear", "Sequential"])
def test_a_sparse_input_or_gradient_is_the_modules_refusal_not_a_data_pointer_error(
    kind: str,
) -> None:
    """A sparse tensor has no storage to look for among the gradients' memory: the search
    says it is not there, and the module refuses it in its own words (a TypeError naming the
    layout and ``to_dense()``), not torch's RuntimeError "Cannot access data pointer"."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2) if kind == "Linear" else nn.Sequential(nn.Linear(3, 2), nn.Tanh())
    with pytest.raises(TypeError) as caught:
        model(torch.eye(3).to_sparse())
    assert str(caught.value) == (
        "Linear: expected a dense input, got a sparse_coo tensor (pass input.to_dense())"
    )
    model(torch.randn(2, 3))
    with pytest.raises(TypeError) as caught:
        model.backward(torch.eye(2).to_sparse())
    refuser = "Linear" if kind == "Linear" else "Tanh"
    assert str(caught.value) == (
        f"{refuser}: expected a dense gradient, got a sparse_coo tensor (pass gradient.to_dense())"
    )


# -- Unsupported: PyTorch's default, and what is not it -------------------------------------------

_SMOOTHING_HINT = "give the smoothed probabilities as the target: (1 - s) one_hot(y) + s / C"


@pytest.mark.parametrize(
    ("value", "shown"),
    [(False, "False"), (torch.tensor(0.0), "tensor(0.)")],
    ids=["bool", "tensor"],
)
def test_a_bool_or_tensor_equal_to_the_default_is_no_number_given_as_the_default(
    value: object, shown: str
) -> None:
    """``CrossEntropyLoss(label_smoothing=False)`` or ``label_smoothing=torch.tensor(0.0)``
    compare equal to PyTorch's default 0.0 but are no number PyTorch takes as it: refused as an
    option not supported, not told that it is PyTorch's default to leave out."""
    with pytest.raises(TypeError) as caught:
        nn.CrossEntropyLoss(label_smoothing=value)  # type: ignore[call-arg]
    assert str(caught.value) == (
        f"CrossEntropyLoss: got label_smoothing={shown}, but PyTorch's label_smoothing is not "
        f"supported ({_SMOOTHING_HINT})"
    )


def _loaded_with(name: str, value: object) -> list[str]:
    """The warnings of loading a CrossEntropyLoss whose pickled state holds the plain
    attribute ``name`` (as an earlier minidl version kept it), and check it is dropped."""
    state = nn.CrossEntropyLoss().__getstate__()
    state[name] = value
    loaded = nn.CrossEntropyLoss.__new__(nn.CrossEntropyLoss)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded.__setstate__(state)
    assert name not in vars(loaded)
    logits, target = torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 3, 1])
    assert torch.equal(loaded(logits, target), nn.CrossEntropyLoss()(logits, target))
    return [str(warning.message) for warning in caught]


def test_a_pickled_option_is_dropped_silently_only_where_it_is_pytorchs_default() -> None:
    """An earlier version's plain ``label_smoothing``/``weight``/``ignore_index`` is dropped on
    loading; silently where it held PyTorch's default (``0``, ``0.0``, ``None``, ``-100``),
    which the loss computes anyway, and with a warning where it held anything else, ``False``
    included (a bool is not the number 0)."""
    assert _loaded_with("label_smoothing", 0) == []
    assert _loaded_with("label_smoothing", 0.0) == []
    assert _loaded_with("weight", None) == []
    assert _loaded_with("ignore_index", -100) == []
    assert _loaded_with("label_smoothing", False) == [
        "CrossEntropyLoss: label_smoothing=False, pickled by an earlier minidl version that "
        "ignored it, is dropped (setting it now raises): the CrossEntropyLoss computes as it "
        f"did, without it ({_SMOOTHING_HINT})"
    ]
    assert len(_loaded_with("ignore_index", 3)) == 1


def test_a_pickled_numpy_default_is_dropped_as_the_constructor_names_it() -> None:
    """A NumPy number equal to PyTorch's default (``numpy.float64(0.0)``, ``numpy.int64(-100)``)
    is the default on loading too, as the constructor calls it (it warned before, where only
    ``int`` and ``float`` counted); one equal to another option's default is not. A tensor
    equal to the default is no number there either."""
    for name, value in (("label_smoothing", np.float64(0.0)), ("ignore_index", np.int64(-100))):
        assert _loaded_with(name, value) == []
        with pytest.raises(TypeError, match="PyTorch's default"):
            nn.CrossEntropyLoss(**{name: value})
    assert len(_loaded_with("label_smoothing", np.int64(-100))) == 1
    assert len(_loaded_with("label_smoothing", torch.tensor(0.0))) == 1


def test_mlp_notes_itself_on_a_layer_that_memory_cannot_hold() -> None:
    """A layer that memory cannot hold (400 TB) stays torch's out-of-memory RuntimeError, with
    mlp's note naming the layer, and nothing drawn from torch's generator."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="can't allocate memory") as caught:
        nn.mlp((10**7, 10**7))
    notes = getattr(caught.value, "__notes__", [])
    assert "in mlp, building layer 0 (Linear(10000000, 10000000))" in notes
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("name", ["gelutanh", "GELU-tanh", "gelu_tanh"])
def test_the_name_gelutanh_builds_gelu_of_the_tanh_approximation(name: str) -> None:
    """``activation("gelutanh")`` (any spelling) is ``GELU(approximate="tanh")``: its output
    and gradient are PyTorch's tanh-approximated GELU's (float64 autograd), not exact GELU's."""
    generator = torch.Generator().manual_seed(4)
    x = 3 * torch.randn(8, 5, dtype=torch.float64, generator=generator)
    upstream = torch.randn(8, 5, dtype=torch.float64, generator=generator)
    module = nn.activation(name)
    leaf = x.clone().requires_grad_()
    expected = torch.nn.functional.gelu(leaf, approximate="tanh")
    expected.backward(upstream)  # type: ignore[no-untyped-call]
    assert leaf.grad is not None
    torch.testing.assert_close(module(x), expected.detach(), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(module.backward(upstream), leaf.grad, rtol=1e-14, atol=1e-14)
    assert repr(module) == "GELU(approximate='tanh')"


#: (loss, option, hint) for every option of PyTorch's losses that minidl's refuses.
OPTIONS = [
    ("CrossEntropyLoss", "weight", "every class weighs the same"),
    (
        "CrossEntropyLoss",
        "ignore_index",
        "every target is a class in [0, C): leave out the samples to skip",
    ),
    (
        "CrossEntropyLoss",
        "label_smoothing",
        "give the smoothed probabilities as the target: (1 - s) one_hot(y) + s / C",
    ),
    ("NLLLoss", "weight", "every class weighs the same"),
    ("NLLLoss", "ignore_index", "every target is a class in [0, C): leave out the samples to skip"),
    ("BCEWithLogitsLoss", "weight", "every element weighs the same"),
    ("BCEWithLogitsLoss", "pos_weight", "positive targets weigh as negative ones"),
]
IDS = [f"{name}.{option}" for name, option, _ in OPTIONS]


def _batch(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A float64 prediction and a target for the loss ``name``."""
    prediction = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    if name == "BCEWithLogitsLoss":
        return prediction, torch.tensor([[0.0, 1.0, 1.0]] * 4, dtype=F64)
    if name == "NLLLoss":
        prediction = prediction.log_softmax(1)
    return prediction, torch.tensor([0, 1, 2, 1])


@pytest.mark.parametrize(("name", "option", "hint"), OPTIONS, ids=IDS)
def test_reading_a_refused_option_names_it_and_says_what_to_do_instead(
    name: str, option: str, hint: str
) -> None:
    """Reading an option that minidl's loss has not raises AttributeError (as for any
    attribute it has not: ``getattr`` with a default gives the default) in words that name the
    loss and the option and end with the hint, what to do instead; the loss computes as
    PyTorch's without the option."""
    loss = getattr(nn, name)()
    with pytest.raises(AttributeError) as caught:
        getattr(loss, option)
    assert str(caught.value) == (
        f"{name} has no {option}: PyTorch's {option} is not supported ({hint})"
    )
    assert getattr(loss, option, "absent") == "absent"
    prediction, target = _batch(name)
    assert_close(loss(prediction, target), getattr(torch.nn, name)()(prediction, target))


@pytest.mark.parametrize(("name", "option", "hint"), OPTIONS, ids=IDS)
def test_deleting_a_refused_option_is_an_attribute_error_naming_it(
    name: str, option: str, hint: str
) -> None:
    """``del loss.option`` (``delattr``) of an option the loss has not raises AttributeError,
    Python's type for an attribute that is not there, naming the loss and the option; the
    option stays refused (reading it raises the error of an option the loss has not) and the
    loss computes as PyTorch's without it."""
    loss = getattr(nn, name)()
    with pytest.raises(AttributeError) as caught:
        delattr(loss, option)
    assert str(caught.value) == f"{name} has no {option} to delete"
    assert option not in vars(loss)
    with pytest.raises(AttributeError) as read:
        getattr(loss, option)
    assert (
        str(read.value) == f"{name} has no {option}: PyTorch's {option} is not supported ({hint})"
    )
    assert not hasattr(loss, option)
    prediction, target = _batch(name)
    assert_close(loss(prediction, target), getattr(torch.nn, name)()(prediction, target))


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("0.1", "'0.1'"),
        ("", "''"),
        (torch.full((1000,), 0.5, dtype=F64), "a tensor of shape (1000,), torch.float64"),
        (10**5000, "an int of 5001 digits"),
    ],
    ids=["str", "empty str", "tensor of 1000 elements", "int of 5001 digits"],
)
def test_setting_a_refused_option_writes_the_value_given_as_other_messages_do(
    value: object, written: str
) -> None:
    """Setting ``label_smoothing`` to a value whose ``str`` would mislead or bury the message
    (a text, which unquoted reads as the number, an empty one as nothing; a tensor of 1000
    elements; an int of 5001 digits, whose ``str`` Python refuses to write) is refused with
    the value written as minidl's other messages write it: a text quoted, a large tensor by
    its shape and dtype, a long int by its number of digits. The loss is left as it was,
    computing as PyTorch's without label smoothing."""
    loss = nn.CrossEntropyLoss()
    with pytest.raises(AttributeError) as caught:
        loss.label_smoothing = value
    assert str(caught.value) == (
        f"CrossEntropyLoss: label_smoothing cannot be set (got {written}): PyTorch's "
        "label_smoothing is not supported (give the smoothed probabilities as the target: "
        "(1 - s) one_hot(y) + s / C)"
    )
    assert "label_smoothing" not in vars(loss)
    prediction, target = _batch("CrossEntropyLoss")
    assert_close(loss(prediction, target), torch.nn.CrossEntropyLoss()(prediction, target))


@pytest.mark.parametrize("device", [3.5, object()], ids=["float", "object"])
def test_mlp_given_a_device_of_no_device_type_is_linears_refusal_naming_mlp(
    device: object,
) -> None:
    """A device that ``torch.device`` refuses with a TypeError (a float, any object) is refused
    by the first Linear in its own words, with mlp's note naming the layer, and nothing is
    drawn: the generator that mlp puts back on a refusal is not looked up on a device torch
    cannot even name (torch's TypeError escaped, naming neither mlp nor Linear)."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    with pytest.raises(ValueError, match=r"^Linear: .* is not a device") as caught:
        nn.mlp((2, 3, 2), "tanh", device=device)  # type: ignore[arg-type]
    assert getattr(caught.value, "__notes__", None) == ["in mlp, building layer 0 (Linear(2, 3))"]
    assert torch.equal(torch.get_rng_state(), before)
