"""Behaviours of the core modules (``Module``, ``Linear``, the flat buffers) that hand-made
mutants of ``src/minidl/nn/module.py``, ``linear.py`` and ``flat.py`` changed unseen by the
rest of the suite.

Each test checks what a user relies on against an oracle: PyTorch's autograd or ``torch.nn`` in
float64, the values a module held before a refused call, the exact exception and its message.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch
import torch.nn as tnn

from minidl import nn
from minidl.interop import to_torch
from minidl.nn.flat import flat_buffer
from minidl.nn.linear import SUMMED_BY_PRODUCT
from tests.helpers import F64


def test_flat_buffer_refuses_tensors_of_another_dtype_in_the_same_storage() -> None:
    """Tensors that lie end to end in one storage but have different dtypes (a float16 half and
    a bfloat16 view of the other half) tile no buffer: one 1-D tensor cannot be both."""
    buffer = torch.zeros(4, dtype=torch.float16)
    first, second = buffer[:2], buffer[2:].view(torch.bfloat16)
    assert second.storage_offset() == 2  # (end to end, in elements of either dtype)
    assert flat_buffer([first, second]) is None
    assert flat_buffer([first, buffer[2:]]) is not None  # (the same dtype: one buffer)


def test_flat_buffer_of_tensors_starting_inside_their_storage_is_a_view_of_them() -> None:
    """Tensors that tile a part of a storage that does not start at its first element give the
    1-D view of exactly that part: its values are theirs, and writing to it writes to them."""
    storage = torch.arange(8.0, dtype=torch.float64)
    first, second = storage[2:4], storage[4:7].view(3, 1)
    flat = flat_buffer([first, second])
    assert flat is not None
    assert flat.data_ptr() == first.data_ptr()
    torch.testing.assert_close(flat, torch.tensor([2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64))
    flat.mul_(10)
    torch.testing.assert_close(first, torch.tensor([20.0, 30.0], dtype=torch.float64))
    torch.testing.assert_close(
        second.flatten(), torch.tensor([40.0, 50.0, 60.0], dtype=torch.float64)
    )
    assert storage[[0, 1, 7]].tolist() == [0.0, 1.0, 7.0]  # (outside the part: untouched)


@pytest.mark.parametrize("batch", [SUMMED_BY_PRODUCT, SUMMED_BY_PRODUCT + 1])
def test_linear_accumulates_its_gradients_as_autograd_on_either_side_of_the_product(
    batch: int,
) -> None:
    """Two backward calls after one forward add the weight and bias gradients twice onto what
    they held, as autograd's do, for a batch summed by the product (1024 samples) and one
    summed by ``sum`` (1025): the larger batch's bias gradient is added too, not written."""
    torch.manual_seed(0)
    layer = nn.Linear(3, 4, dtype=F64)
    assert layer.bias is not None
    x, g = torch.randn(batch, 3, dtype=F64), torch.randn(batch, 4, dtype=F64)
    start_w, start_b = torch.randn(4, 3, dtype=F64), torch.randn(4, dtype=F64)
    layer.weight.grad.copy_(start_w)
    layer.bias.grad.copy_(start_b)
    weight = layer.weight.data.clone().requires_grad_()
    bias = layer.bias.data.clone().requires_grad_()
    weight.grad, bias.grad = start_w.clone(), start_b.clone()
    input = x.clone().requires_grad_()
    output = torch.addmm(bias, input, weight.t())
    for _ in range(2):
        torch.autograd.backward(output, g, retain_graph=True)
    layer(x)
    first = layer.backward(g)
    second = layer.backward(g)
    assert weight.grad is not None and bias.grad is not None and input.grad is not None
    torch.testing.assert_close(layer.weight.grad, weight.grad)
    torch.testing.assert_close(layer.bias.grad, bias.grad)
    torch.testing.assert_close(first, input.grad / 2)
    torch.testing.assert_close(second, input.grad / 2)


def test_linear_input_in_its_weight_gradient_survives_a_zero_grad_before_backward() -> None:
    """An input that is the layer's own weight gradient (``layer(layer.weight.grad)``) is read by
    backward with the values it had at the forward, as autograd reads it, even after a
    ``zero_grad()`` between the two zeroed that memory."""
    torch.manual_seed(1)
    layer = nn.Linear(3, 3, dtype=F64)
    assert layer.bias is not None
    layer.weight.grad.copy_(torch.randn(3, 3, dtype=F64))
    x = layer.weight.grad.clone()
    g = torch.randn(3, 3, dtype=F64)
    weight = layer.weight.data.clone().requires_grad_()
    bias = layer.bias.data.clone().requires_grad_()
    torch.autograd.backward(torch.addmm(bias, x, weight.t()), g)
    layer(layer.weight.grad)
    layer.zero_grad()
    layer.backward(g)
    assert weight.grad is not None and bias.grad is not None
    torch.testing.assert_close(layer.weight.grad, weight.grad)
    torch.testing.assert_close(layer.bias.grad, bias.grad)


def test_linear_refuses_an_input_of_another_dtype_in_a_shape_it_saw_before() -> None:
    """An input of another dtype than the parameters', in a shape the layer accepted lately (the
    last one, or an earlier one switched back to), is refused by name, not computed with."""
    layer = nn.Linear(3, 2, dtype=F64)
    assert layer.bias is not None
    message = (
        "Linear: input dtype torch.float32 does not match the parameters' dtype torch.float64; "
        "convert the input or call .to(dtype=...) on the module"
    )
    layer(torch.randn(4, 3, dtype=F64))
    with pytest.raises(TypeError) as last:
        layer(torch.randn(4, 3))
    assert str(last.value) == message
    layer(torch.randn(5, 3, dtype=F64))
    with pytest.raises(TypeError) as earlier:
        layer(torch.randn(4, 3))
    assert str(earlier.value) == message


def test_linear_backward_of_its_own_weight_gradient_uses_the_values_given() -> None:
    """``layer.backward(layer.weight.grad)`` returns the input gradient of the gradient as given
    (autograd's ``G W``), not of what the accumulation wrote over it, and accumulates ``G^T X``
    once."""
    torch.manual_seed(2)
    layer = nn.Linear(3, 3, dtype=F64)
    assert layer.bias is not None
    x = torch.randn(3, 3, dtype=F64)
    layer.weight.grad.copy_(torch.randn(3, 3, dtype=F64))
    g = layer.weight.grad.clone()
    weight = layer.weight.data.clone().requires_grad_()
    bias = layer.bias.data.clone().requires_grad_()
    input = x.clone().requires_grad_()
    weight.grad = g.clone()
    torch.autograd.backward(torch.addmm(bias, input, weight.t()), g)
    layer(x)
    returned = layer.backward(layer.weight.grad)
    assert weight.grad is not None and bias.grad is not None and input.grad is not None
    torch.testing.assert_close(returned, input.grad)
    torch.testing.assert_close(layer.weight.grad, weight.grad)
    torch.testing.assert_close(layer.bias.grad, bias.grad)


def test_linear_refuses_a_gradient_on_another_device_naming_it_and_changes_nothing() -> None:
    """A gradient of the right shape and dtype on another device (``meta`` here, a GPU's
    elsewhere) is refused by name, before any parameter gradient is written."""
    layer = nn.Linear(3, 2, dtype=F64)
    assert layer.bias is not None
    layer(torch.randn(4, 3, dtype=F64))
    layer.weight.grad.fill_(0.5)
    layer.bias.grad.fill_(0.25)
    with pytest.raises(ValueError) as refused:
        layer.backward(torch.randn(4, 2, dtype=F64, device="meta"))
    assert str(refused.value) == "Linear: gradient is on meta but the parameters are on cpu"
    assert torch.equal(layer.weight.grad, torch.full((2, 3), 0.5, dtype=F64))
    assert torch.equal(layer.bias.grad, torch.full((2,), 0.25, dtype=F64))


def test_a_state_dict_taken_in_inference_mode_can_be_changed_outside_it_as_torchs() -> None:
    """The entries of a state dict taken inside ``torch.inference_mode()`` are normal tensors,
    as ``torch.nn``'s are: changed in place outside it, they change and the model does not."""
    torch.manual_seed(3)
    layer = nn.Linear(2, 3, dtype=F64)
    assert layer.bias is not None
    twin = tnn.Linear(2, 3, dtype=F64)
    with torch.inference_mode():
        state = layer.state_dict()
        twin_state = twin.state_dict()
    assert not twin_state["weight"].is_inference()  # (the oracle)
    before = layer.weight.data.clone()
    for name, value in state.items():
        assert not value.is_inference(), name
        value.add_(1.0)
    torch.testing.assert_close(state["weight"], before + 1.0)
    assert torch.equal(layer.weight.data, before)


def test_entries_that_are_views_of_the_models_own_memory_load_their_values_at_the_call() -> None:
    """Entries that are views of the model's own flat buffer (a transposed weight, another
    layer's weight, a row of a weight starting inside it) load the values they held at the
    call, whatever the order of the writes, as loading their copies does."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)).to(F64)
    first, second = model[0], model[1]
    assert isinstance(first, nn.Linear) and isinstance(second, nn.Linear)
    assert first.bias is not None
    state = {
        "0.weight": second.weight.data,
        "0.bias": first.weight.data[1],
        "1.weight": first.weight.data.t(),
        "1.bias": first.bias.data,
    }
    expected = {name: value.clone() for name, value in state.items()}
    assert model.load_state_dict(state) == ([], [])
    for name, value in model.state_dict().items():
        assert torch.equal(value, expected[name]), name


def test_load_state_dict_refuses_a_key_that_is_no_name_leaving_the_module_unchanged() -> None:
    """A key that is not a ``str`` (an index) is refused as such, with its type, not reported
    as an unexpected key, and nothing is loaded (also with ``strict=False``)."""
    torch.manual_seed(5)
    layer = nn.Linear(2, 3, dtype=F64)
    assert layer.bias is not None
    before = layer.state_dict()
    state: dict[Any, torch.Tensor] = {
        name: torch.zeros_like(value) for name, value in before.items()
    }
    state[0] = torch.zeros(1, dtype=F64)
    for strict in (True, False):
        with pytest.raises(TypeError) as refused:
            layer.load_state_dict(state, strict=strict)
        assert (
            str(refused.value)
            == "Linear.load_state_dict: keys must be names (str), got 0 of type int"
        )
        for name, value in layer.state_dict().items():
            assert torch.equal(value, before[name]), name


def test_load_state_dict_refuses_a_meta_entry_before_writing_any_other() -> None:
    """An entry on the meta device holds no values: it is refused by name (``TypeError``)
    before anything is written, so the entries before it are not loaded either."""
    torch.manual_seed(6)
    layer = nn.Linear(2, 3, dtype=F64)
    assert layer.bias is not None
    before = layer.state_dict()
    state = {
        "weight": torch.zeros(3, 2, dtype=F64),
        "bias": torch.zeros(3, dtype=F64, device="meta"),
    }
    with pytest.raises(TypeError) as refused:
        layer.load_state_dict(state)
    assert str(refused.value) == (
        "Linear.load_state_dict: entry 'bias' is a meta tensor; expected a dense tensor that "
        "holds its values"
    )
    for name, value in layer.state_dict().items():
        assert torch.equal(value, before[name]), name


class _TwoParameters(nn.Module):
    """A module of one's own whose parameters are the tensors given (views, kept as they are)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.a = self.register_parameter("a", nn.Parameter(a))
        self.b = self.register_parameter("b", nn.Parameter(b))


def test_parameters_inside_one_storage_swapped_by_a_state_dict_of_themselves_load_both() -> None:
    """Two parameters that are views inside one larger storage (neither at its start), loaded
    from a state dict of each other (a swap), get the values the entries held at the call, as
    loading copies of them does, whatever the order of the writes."""
    base = torch.arange(6.0, dtype=F64)
    module = _TwoParameters(base[1:3], base[3:5])
    assert (module.a.data.storage_offset(), module.b.data.storage_offset()) == (1, 3)
    assert module.load_state_dict({"a": module.b.data, "b": module.a.data}) == ([], [])
    assert module.a.data.tolist() == [3.0, 4.0]
    assert module.b.data.tolist() == [1.0, 2.0]
    assert base.tolist() == [0.0, 3.0, 4.0, 1.0, 2.0, 5.0]


def test_a_bias_registered_again_after_its_removal_converts_to_torch_with_it() -> None:
    """``register_parameter("bias", None)`` then a new bias registered: the layer has a bias
    again, and ``to_torch`` converts it with that bias (not as one set by hand where none is
    registered), computing as the minidl layer does."""
    torch.manual_seed(7)
    layer = nn.Linear(2, 3, dtype=F64)
    assert layer.bias is not None
    layer.register_parameter("bias", None)
    layer.register_parameter("bias", nn.Parameter(torch.arange(3.0, dtype=F64)))
    twin = to_torch(layer)
    assert isinstance(twin, tnn.Linear) and twin.bias is not None
    assert twin.bias.tolist() == [0.0, 1.0, 2.0]
    x = torch.randn(4, 2, dtype=F64)
    torch.testing.assert_close(twin(x).detach(), layer(x))


def test_a_linear_pickled_before_its_shape_cache_existed_loads_and_computes() -> None:
    """The state of a ``Linear`` pickled by an earlier minidl, without the cache of recent
    shapes (``_shapes``) nor the gradient memory, loads (``__setstate__``, as pickle calls it)
    into a layer that computes forward and backward as the original."""
    torch.manual_seed(8)
    layer = nn.Linear(3, 2, dtype=F64)
    assert layer.bias is not None
    state = pickle.loads(pickle.dumps(layer.__getstate__()))
    del state["_shapes"], state["_gradients"]
    loaded = nn.Linear.__new__(nn.Linear)
    loaded.__setstate__(state)
    x, g = torch.randn(4, 3, dtype=F64), torch.randn(4, 2, dtype=F64)
    torch.testing.assert_close(loaded(x), layer(x))
    torch.testing.assert_close(loaded.backward(g), layer.backward(g))
    assert loaded.weight is not layer.weight
    torch.testing.assert_close(loaded.weight.grad, layer.weight.grad)
    assert loaded.bias is not None
    torch.testing.assert_close(loaded.bias.grad, g.sum(0))
