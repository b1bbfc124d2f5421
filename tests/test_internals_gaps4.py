"""The modules' checks (minidl.nn._checks) and argument validation (minidl._validate): what a
fourth mutation audit found untested, each test failing on its mutant (named in its
docstring)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from minidl import nn
from minidl.nn import _checks

# -- C01: check_in_dtype_range compares with the largest value of the dtype computed in ---------


@pytest.mark.parametrize(
    "make, oracle",
    [
        (lambda: nn.LeakyReLU(1e5), lambda x: F.leaky_relu(x, 1e5)),
        (lambda: nn.ELU(alpha=1e5), lambda x: F.elu(x, alpha=1e5)),
    ],
    ids=["LeakyReLU", "ELU"],
)
def test_a_setting_past_float16s_largest_value_computes_in_float32_as_pytorch(
    make: Callable[[], nn.Module], oracle: Callable[[Tensor], Tensor]
) -> None:
    """C01 (largest = FLOAT16_LARGEST): a slope or alpha of 1e5, past float16's 65504 but far
    within float32's range, is taken for a float32 input, and computes PyTorch's values and
    derivatives (autograd in float64 as the oracle)."""
    x = torch.tensor([[-1.5, -0.25, 0.5, 3.0]], dtype=torch.float64)
    module = make()
    output = module(x.float())
    grad = torch.tensor([[0.5, -1.0, 2.0, 1.0]])
    grad_input = module.backward(grad)
    reference = x.clone().requires_grad_(True)
    expected = oracle(reference)
    expected.backward(grad.double())
    torch.testing.assert_close(output.double(), expected.detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(grad_input.double(), reference.grad, rtol=1e-6, atol=0)


def test_check_in_dtype_range_names_the_largest_value_of_the_dtype_given() -> None:
    """C01: the bound is the dtype's own (float32's 3.40282e+38), not float16's."""
    _checks.check_in_dtype_range("L", "negative_slope", 1e5, torch.float32)
    _checks.check_in_dtype_range("L", "negative_slope", -3e38, torch.float32)
    message = (
        "L: negative_slope=1e+39 is beyond the range of the dtype it computes in, torch.float32 "
        "(largest finite value 3.40282e+38); give a smaller negative_slope, or inputs of a wider "
        "dtype"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        _checks.check_in_dtype_range("L", "negative_slope", 1e39, torch.float32)


# -- C02: a jagged nested tensor (layout torch.jagged) is named nested, with the nested hint -----


@pytest.mark.parametrize("module", [nn.Linear(3, 2), nn.Tanh()], ids=["Linear", "Tanh"])
def test_a_jagged_nested_input_gets_the_nested_hint_not_to_dense(module: nn.Module) -> None:
    """C02 (hint chosen by ``tensor.layout is STRIDED``): a jagged nested tensor's layout is
    torch.jagged, not strided, but it is nested: its hint is torch.stack(...unbind()), which a
    nested tensor takes, not .to_dense(), which it lacks."""
    nested = torch.nested.nested_tensor([torch.ones(3), torch.ones(2)], layout=torch.jagged)
    assert nested.layout is torch.jagged
    name = type(module).__name__
    message = (
        f"{name}: expected a dense input, got a nested tensor (one of equal sizes is made dense "
        "by torch.stack(input.unbind()))"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        module(nested)


# -- C05: check_runs adds each run's models to the start of the next ------------------------------


def test_check_runs_gives_consecutive_bounds_for_three_runs() -> None:
    """C05 (``start = int(models)`` for ``start += int(models)``): with two runs the bounds
    agree by chance; the third run starts after the first two."""
    runs = [(nn.MSELoss(), 2), (nn.MSELoss(), 3), (nn.MSELoss(), 4)]
    assert _checks.check_runs("S", runs, nn.Loss) == [(0, 2), (2, 5), (5, 9)]


def test_a_stacked_activation_of_three_runs_computes_each_models_activation() -> None:
    """C05, through StackedActivation: models 5..8 use ReLU (the oracle: each run's torch
    function on its rows), and the submodules are named by the models they cover."""
    runs = [(nn.Tanh(), 2), (nn.Sigmoid(), 3), (nn.ReLU(), 4)]
    layer = nn.StackedActivation(runs)
    x = torch.linspace(-2.0, 2.0, 9 * 2, dtype=torch.float64).reshape(9, 2)
    expected = torch.cat([torch.tanh(x[:2]), torch.sigmoid(x[2:5]), torch.relu(x[5:])])
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=0)
    assert [name for name, _ in layer.named_children()] == ["0:2", "2:5", "5:9"]


# -- C06, C07: check_runs's words for a NumPy count and for a run of no items ---------------------


@pytest.mark.parametrize("count", [0, -2], ids=["zero", "negative"])
def test_check_runs_refuses_a_numpy_count_below_one_as_a_value(count: int) -> None:
    """C06 (``integer = isinstance(models, int) ...``): a NumPy integer is an integer, as
    check_int and check_size take it: a count of it below 1 is a ValueError, not a TypeError."""
    numpy = pytest.importorskip("numpy")
    models = numpy.int64(count)
    message = f"S: run 0 must cover a positive number of models, got {models!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        _checks.check_runs("S", [(nn.MSELoss(), models)], nn.Loss)
    assert _checks.check_runs("S", [(nn.MSELoss(), numpy.int64(3))], nn.Loss) == [(0, 3)]


@pytest.mark.parametrize(
    "run, got",
    [
        ((), "a tuple of 0 items"),
        ([nn.MSELoss()], "a list of 1 item"),
        ((1, 2, 3), "a tuple of 3 items"),
    ],
    ids=["empty", "one", "three"],
)
def test_check_runs_counts_the_items_of_a_run_that_is_no_pair_in_words(run, got: str) -> None:
    """C07 (``'' if len(run) <= 1``): a run of 0 items is "0 items", of 1 "1 item"."""
    message = f"S: run 0 must be a (loss, models) pair, got {got}"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        _checks.check_runs("S", [run], nn.Loss)


# -- C13, C35: check_factory_options ---------------------------------------------------------


def test_check_factory_options_returns_the_device_as_a_torch_device() -> None:
    """C13 (returns the ``device`` given, a str): the docstring's "return the device"."""
    place = _checks.check_factory_options("L", None, "cpu")
    assert isinstance(place, torch.device) and place == torch.device("cpu")
    assert _checks.check_factory_options("L", torch.float64, None) is None


def test_an_empty_device_name_is_refused_not_taken_as_no_device() -> None:
    """C35 (``if not device: return None``: "" taken as no device, the default): "" names no
    device, and torch refuses it; the layer says so as a ValueError in its own words."""
    device, reason = "", "Device string must not be empty"
    message = f"Linear: {device!r} is not a device ({reason}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        nn.Linear(2, 3, device=device)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"^{re.escape('BatchNorm1d: ' + message[8:])}"):
        nn.BatchNorm1d(3, device=device)  # type: ignore[arg-type]


# -- _validate.py ---------------------------------------------------------------------------------


def test_shown_writes_a_tuple_subclass_as_its_repr() -> None:
    """V01 (``isinstance(value, tuple | list)`` for ``type(value) in (tuple, list)``): a
    torch.Size or a namedtuple is written as repr writes it, with its type's name."""
    from collections import namedtuple

    from minidl._validate import shown

    assert shown(torch.Size([2, 3])) == "torch.Size([2, 3])"
    Pair = namedtuple("Pair", "low high")
    assert shown(Pair(1, 2)) == "Pair(low=1, high=2)"


def test_check_real_returns_a_plain_float_for_a_float_subclass() -> None:
    """V04 (``isinstance(value, float)`` for ``type(value) is float``): a NumPy float64 (a
    float subclass) comes back as a Python float, as the docstring says."""
    numpy = pytest.importorskip("numpy")
    from minidl._validate import check_real

    result = check_real("f", "x", numpy.float64(0.25), low=0)
    assert type(result) is float and result == 0.25


@pytest.mark.parametrize("classes", [None, 3], ids=["no classes", "three classes"])
def test_check_class_indices_takes_an_empty_y_without_reading_values(classes: int | None) -> None:
    """V05 (the ``numel() == 0`` shortcut dropped): an empty y has no minimum, and holds no
    wrong label; torch's "min(): Expected reduction dim" must not escape."""
    from minidl._validate import check_class_indices

    check_class_indices("f", "", torch.zeros(0, dtype=torch.long), classes)


def test_unavailable_gives_the_first_sentence_of_torchs_reason() -> None:
    """V07 (torch's whole first line given): "mps" on this build fails with a message of some
    7 000 characters; only its first sentence, without its period, is given."""
    from minidl._validate import unavailable

    try:
        torch.empty(0, device="mps")
    except (RuntimeError, AssertionError, ImportError) as error:
        text = str(error)
    else:
        pytest.skip("this machine makes tensors on mps")
    reason = unavailable(torch.device("mps"))
    assert reason is not None and text.strip().startswith(reason)
    assert "\n" not in reason and ". " not in reason and not reason.endswith(".")
    message = f"Linear: cannot put tensors on device 'mps': {reason}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        nn.Linear(2, 3, device="mps")


@pytest.mark.parametrize("owner", ["module", "optimizer"])
def test_zero_grad_refuses_a_set_to_none_that_is_no_bool_by_type(owner: str) -> None:
    """C14 (refuse_set_to_none's check_bool dropped): ``set_to_none="yes"`` is a TypeError
    that names the value, as every flag's; ``True`` the ValueError of an unsupported setting;
    the gradients are left as they were."""
    from minidl import optim

    layer = nn.Linear(2, 3)
    layer(torch.ones(1, 2))
    layer.backward(torch.ones(1, 3))
    before = [p.grad.clone() for p in layer.parameters()]
    target = layer if owner == "module" else optim.SGD(layer.parameters(), lr=0.1)
    name = type(target).__name__
    with pytest.raises(
        TypeError, match=f"^{name}.zero_grad: set_to_none must be True or False, got 'yes'$"
    ):
        target.zero_grad(set_to_none="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"^{name}.zero_grad: set_to_none=True is not supported"):
        target.zero_grad(set_to_none=True)  # type: ignore[arg-type]
    for parameter, grad in zip(layer.parameters(), before, strict=True):
        assert torch.equal(parameter.grad, grad)


def test_given_parameter_names_a_named_parameters_pair_only_for_a_name() -> None:
    """C20 (the name's ``isinstance(first, str)`` dropped): a pair of a number and a
    Parameter is no pair of named_parameters()."""
    weight = nn.Linear(2, 2).weight
    assert _checks.given_parameter((3, weight)) == "tuple"
    assert _checks.given_parameter(["w", weight]).startswith(
        "a list ('w', Parameter), a pair as named_parameters() gives"
    )


def test_check_parameter_attributes_takes_none_only_for_a_whole_optional_name() -> None:
    """C29 (``name in optional``: a substring of "bias"): a parameter "b" that is None and
    not registered is refused, though "b" is part of "bias"."""

    class Layer:
        def __init__(self) -> None:
            self._parameters: dict[str, object] = {}
            self.b = None

    message = "L: b is None (removed with register_parameter('b', None)), but the layer computes"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}"):
        _checks.check_parameter_attributes("L", Layer(), "b", "bias")


def test_check_copyable_names_a_nested_meta_tensor_as_nested() -> None:
    """V12 (``"meta" if value.is_meta``): a jagged nested tensor on the meta device is named
    by what makes it uncopyable first, its nesting (a dense meta tensor is named meta)."""
    from minidl._validate import check_copyable

    nested = torch.nested.nested_tensor(
        [torch.ones(2), torch.ones(3)], layout=torch.jagged, device="meta"
    )
    assert nested.is_meta and nested.is_nested
    message = "f: v is a nested tensor; expected a dense tensor that holds its values"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        check_copyable("f", "v", nested, torch.zeros(2))
    with pytest.raises(TypeError, match=r"^f: v is a meta tensor; expected a dense tensor"):
        check_copyable("f", "v", torch.zeros(2, device="meta"), torch.zeros(2))


# -- C18: check_dense raises its refusal alone (from None) -------------------------------------


def test_a_sparse_input_to_a_training_dropout_is_refused_without_torchs_error() -> None:
    """C18 (``from None`` dropped): a sparse input to a Dropout in training, found when
    torch's ``bernoulli_`` refuses it (a NotImplementedError naming the dispatcher's
    backends), is named by one TypeError, torch's error not shown as its context; the
    refused forward caches nothing (backward still finds no forward)."""
    dropout = nn.Dropout(0.5)
    assert dropout.training
    message = "Dropout: expected a dense input, got a sparse_coo tensor (pass input.to_dense())"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$") as raised:
        dropout(torch.eye(2).to_sparse())
    assert raised.value.__cause__ is None and raised.value.__suppress_context__ is True
    with pytest.raises(RuntimeError, match=r"^Dropout: backward called before forward$"):
        dropout.backward(torch.ones(2, 2))


# -- C23: a class is named as a PyTorch module's only when it has parameters() --------------


def test_the_tensor_class_given_for_a_module_is_not_called_a_pytorch_modules_class() -> None:
    """C23 (``callable(getattr(value, "parameters", None))`` dropped): ``torch.Tensor`` (the
    class, which derives from ``torch._C.TensorBase``) given for a module is named as the class
    it is, not as a PyTorch module's class to convert; ``torch.nn.Linear`` still is."""
    with pytest.raises(
        TypeError, match=r"^Sequential: argument 0 must be a minidl Module, got the class Tensor$"
    ):
        nn.Sequential(torch.Tensor)  # type: ignore[arg-type]
    message = (
        "Sequential: argument 0 must be a minidl Module, got the class "
        "torch.nn.modules.linear.Linear, a PyTorch module's class (minidl.nn has its own "
        "modules; minidl.interop.from_torch converts a PyTorch module)"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        nn.Sequential(torch.nn.Linear)  # type: ignore[arg-type]


# -- C28: check_input refuses the dtype before the layout, as the other modules do ------------


@pytest.mark.parametrize(
    "make", [lambda: nn.Linear(2, 2), lambda: nn.Dropout(0.5)], ids=["Linear", "Dropout"]
)
def test_a_sparse_integer_input_is_refused_for_its_dtype_first(
    make: Callable[[], nn.Module],
) -> None:
    """C28 (check_dense before the dtype check): a sparse int64 input is refused for its
    dtype by Linear (through check_input) as by Dropout (its own checks), the same words; the
    layer's parameters are left as they were."""
    module = make()
    before = [p.data.clone() for p in module.parameters()]
    name = type(module).__name__
    message = (
        f"{name}: expected a floating-point input of dtype float16, bfloat16, float32 or "
        "float64, got dtype torch.int64"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        module(torch.eye(2, dtype=torch.long).to_sparse())
    for parameter, value in zip(module.parameters(), before, strict=True):
        assert torch.equal(parameter.data, value)


# -- C30: the hint for a 0-dim gradient (the loss itself) is given for a 1-dim output too ---


@pytest.mark.parametrize("make", [nn.Tanh, nn.Identity], ids=["Tanh", "Identity"])
def test_a_0_dim_gradient_for_a_1_dim_output_gets_the_loss_hint(
    make: type[nn.Module],
) -> None:
    """C30 (``len(shape) > 1``): a module run on a 1-dim input (an activation takes any
    shape) and given a 0-dim gradient, most likely the loss value, is told to pass the
    loss's gradient; a 1-dim gradient of the wrong length is not."""
    module = make()
    name = make.__name__
    x = torch.tensor([-1.5, 0.25, 2.0], dtype=torch.float64)
    module(x)
    message = (
        f"{name}: gradient has shape (), expected (3,) (the shape of the last forward's "
        "output); backward takes the gradient of the loss with respect to the output, "
        "criterion.backward(), not the loss"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        module.backward(torch.tensor(1.0, dtype=torch.float64))
    message = (
        f"{name}: gradient has shape (2,), expected (3,) (the shape of the last forward's output)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        module.backward(torch.ones(2, dtype=torch.float64))
    # the refusals left the forward's cache: the backward of the right gradient is autograd's
    g = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    leaf = x.clone().requires_grad_(True)
    (torch.tanh(leaf) if name == "Tanh" else leaf).backward(g)
    torch.testing.assert_close(module.backward(g), leaf.grad, rtol=1e-12, atol=1e-12)


# -- V09: a long text is quoted from its characters, not through a subclass's slicing --------


def test_shown_quotes_a_long_str_subclass_by_its_characters_not_its_own_slicing() -> None:
    """V09 (``repr(value[:LONGEST_SHOWN])``): a long ``str`` subclass whose ``__getitem__`` and
    ``__repr__`` are its own (one that refuses slicing, say) is quoted by its first 40
    characters as a plain text, its own methods not asked: the message is still written."""
    from minidl._validate import check_real, shown

    class Masked(str):
        def __getitem__(self, key: object) -> str:
            raise TypeError("Masked refuses slicing")

        def __repr__(self) -> str:
            return "Masked(...)"

    text = Masked("a" * 60 + "b" * 140)
    expected = f"{'a' * 40!r}... (a Masked of 200 characters)"
    assert shown(text) == expected
    message = (
        f"f: x must be a finite number in (-inf, inf) (a float or an int), got Masked {expected}"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        check_real("f", "x", text)
