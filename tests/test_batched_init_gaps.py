"""Mutation gaps in ``minidl.nn.batched_linear`` and ``minidl.nn.init``: behaviours that the
other test files left unchecked (each test named after what a user relies on), every refusal
checked by its exact type and message, with the tensor and the generator left unchanged."""

from __future__ import annotations

import warnings

import pytest
import torch

from minidl import nn
from minidl.nn import batched_linear, init
from minidl.nn.batched_linear import BatchedLinear, _batched_gradient_is_exact

F64 = torch.float64

NORMAL_F32 = (
    "would draw values beyond the range of the tensor's dtype torch.float32: its draws, up to "
    "|mean| + 9 std in magnitude, must be at most 3.40282e+38, the largest finite value"
)


def test_a_large_negative_mean_whose_draws_reach_past_the_dtype_is_refused() -> None:
    """A normal distribution's reach is |mean| + 9 std: a mean of -3e38 with a std of 1e37
    reaches -3.9e38, past float32's -3.4e38 (some draws would be -inf), so it is refused like
    its mirror image +3e38, the tensor and the generator unchanged (mean + 9 std, -2.1e38,
    would pass it)."""
    for mean in (-3e38, 3e38):
        tensor = torch.randn(4, 3)
        before = tensor.clone()
        generator = torch.Generator().manual_seed(3)
        state = generator.get_state()
        with pytest.raises(ValueError) as raised:
            init.normal_(tensor, mean, 1e37, generator)
        assert str(raised.value) == (
            f"init.normal_: N(mean, std^2) with mean={mean!r}, std=1e+37 " + NORMAL_F32
        )
        assert torch.equal(tensor, before)
        assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("scheme", [init.xavier_uniform_, init.xavier_normal_])
def test_xavier_refuses_a_negative_gain_in_its_name(scheme: object) -> None:
    """A negative gain is refused by both Xavier schemes as a gain outside [0, inf), not by the
    tensor library's own words about a uniform distribution's reversed bounds, and nothing is
    drawn or written."""
    tensor = torch.randn(4, 3)
    before = tensor.clone()
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    name = scheme.__name__  # type: ignore[attr-defined]
    with pytest.raises(ValueError) as raised:
        scheme(tensor, gain=-0.5, generator=generator)  # type: ignore[operator]
    assert str(raised.value) == f"init.{name}: gain must be in [0, inf), got -0.5"
    assert torch.equal(tensor, before)
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("shape", [(0, 0), (0, 0, 3)], ids=str)
@pytest.mark.parametrize(
    "scheme",
    [init.xavier_uniform_, init.xavier_normal_, init.kaiming_uniform_, init.kaiming_normal_],
)
def test_a_weight_with_no_fan_at_all_is_left_alone(shape: tuple[int, ...], scheme: object) -> None:
    """A zero-element weight whose fan_in and fan_out are both 0 (shape (0, 0)) is returned as
    it is, nothing drawn, as one of shape (0, 3) is: its std, 1 / sqrt(fan_in + fan_out) for
    Xavier, is never computed (a ZeroDivisionError otherwise)."""
    tensor = torch.empty(shape)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert scheme(tensor, generator=generator) is tensor  # type: ignore[operator]
    assert tensor.shape == shape
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize(
    ("mean", "error", "message"),
    [
        (True, TypeError, "mean must be a finite number in (-inf, inf) (a float or an int), "
         "got bool True"),
        ("1", TypeError, "mean must be a finite number in (-inf, inf) (a float or an int), "
         "got str '1'"),
        (float("inf"), ValueError, "mean must be a finite number in (-inf, inf), got inf"),
        (float("nan"), ValueError, "mean must be a finite number in (-inf, inf), got nan"),
    ],
    ids=["bool", "str", "inf", "nan"],
)  # fmt: skip
def test_normal_refuses_a_mean_that_is_no_finite_number(
    mean: object, error: type[Exception], message: str
) -> None:
    """normal_'s mean is checked as its std is: a bool or a string (which float() would
    take) and a non-finite value are refused naming the mean, nothing drawn or written."""
    tensor = torch.randn(4, 3)
    before = tensor.clone()
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    with pytest.raises(error) as raised:
        init.normal_(tensor, mean, 1.0, generator)  # type: ignore[arg-type]
    assert str(raised.value) == f"init.normal_: {message}"
    assert torch.equal(tensor, before)
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("mode", ["fan_avg", "FAN_IN", "fan_in "])
@pytest.mark.parametrize("scheme", [init.kaiming_uniform_, init.kaiming_normal_])
def test_kaiming_takes_only_fan_in_and_fan_out(mode: str, scheme: object) -> None:
    """Only the two modes PyTorch takes are accepted: Keras' 'fan_avg', another case or a
    stray space are refused in the scheme's name, nothing drawn or written."""
    tensor = torch.randn(4, 3)
    before = tensor.clone()
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    name = scheme.__name__  # type: ignore[attr-defined]
    with pytest.raises(ValueError) as raised:
        scheme(tensor, mode=mode, generator=generator)  # type: ignore[operator]
    assert str(raised.value) == (f"init.{name}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    assert torch.equal(tensor, before)
    assert torch.equal(generator.get_state(), state)


def test_model_takes_every_index_in_range_and_refuses_a_bool() -> None:
    """model(i) copies model i's weight and bias for every i in [-R, R) (-R is model 0),
    refuses R and -R - 1 as out of range and a bool (an int to Python) as no index, the
    layer's parameters unchanged."""
    layer = nn.BatchedLinear(
        3, 2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    assert layer.bias is not None
    weight, bias = layer.weight.data.clone(), layer.bias.data.clone()
    for index in range(-3, 3):
        part = layer.model(index)
        assert part.bias is not None
        assert torch.equal(part.weight.data, weight[index])
        assert torch.equal(part.bias.data, bias[index])
        assert part.weight.data.data_ptr() != layer.weight.data.data_ptr()
    for index in (3, -4):
        with pytest.raises(IndexError) as raised:
            layer.model(index)
        assert str(raised.value) == (
            f"BatchedLinear.model: index {index} is out of range for 3 models"
        )
    for index in (True, False):
        with pytest.raises(TypeError) as refused:
            layer.model(index)
        assert str(refused.value) == f"BatchedLinear.model: expected an integer index, got {index}"
    assert torch.equal(layer.weight.data, weight) and torch.equal(layer.bias.data, bias)


def test_a_stack_without_bias_unstacks_to_layers_without_bias() -> None:
    """A BatchedLinear built with bias=False gives Linear layers without bias, each holding its
    model's weight."""
    layer = nn.BatchedLinear(2, 3, 2, bias=False, generator=torch.Generator().manual_seed(1))
    parts = layer.unstack()
    assert len(parts) == 2
    for index, part in enumerate(parts):
        assert part.bias is None
        assert torch.equal(part.weight.data, layer.weight.data[index])


def test_the_models_are_drawn_from_the_given_generator_as_linear_layers_in_turn() -> None:
    """BatchedLinear(R, ...) with a generator holds the weights and biases of R Linear layers
    built one after the other from that generator, and leaves torch's global generator alone."""
    state = torch.get_rng_state()
    layer = nn.BatchedLinear(3, 4, 2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    generator = torch.Generator().manual_seed(7)
    twins = [nn.Linear(4, 2, generator=generator) for _ in range(3)]
    assert layer.bias is not None
    for index, twin in enumerate(twins):
        assert twin.bias is not None
        assert torch.equal(layer.weight.data[index], twin.weight.data)
        assert torch.equal(layer.bias.data[index], twin.bias.data)


def test_sizes_whose_storage_overflows_are_refused_naming_the_layer() -> None:
    """Sizes each within int64 whose product is not (2**62 models of 4 x 4 weights) are
    refused as parameters the layer cannot hold, in its name, before any model is drawn, and
    torch's global generator is left alone."""
    state = torch.get_rng_state()
    with pytest.raises(ValueError) as raised:
        nn.BatchedLinear(2**62, 4, 4)
    assert str(raised.value).startswith(
        f"BatchedLinear: cannot hold the parameters of {2**62} models of 4 x 4 weights ("
    )
    assert torch.equal(torch.get_rng_state(), state)


def _oracle(
    layer: nn.BatchedLinear, x: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dL/dX, dL/dW, dL/db) of sum(Y * G) by PyTorch autograd in float64, for Y = X W^T + b."""
    assert layer.bias is not None
    weight = layer.weight.data.clone().requires_grad_()
    bias = layer.bias.data.clone().requires_grad_()
    x = x.clone().requires_grad_()
    ((torch.bmm(x, weight.transpose(1, 2)) + bias.unsqueeze(1)) * g).sum().backward()  # type: ignore[no-untyped-call]
    assert x.grad is not None and weight.grad is not None and bias.grad is not None
    return x.grad, weight.grad, bias.grad


def _square_layer() -> nn.BatchedLinear:
    """Two 3 x 3 models, float64, with gradients that start from known non-zero values."""
    layer = nn.BatchedLinear(
        2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    assert layer.bias is not None
    generator = torch.Generator().manual_seed(5)
    layer.weight.grad.copy_(torch.randn(2, 3, 3, dtype=torch.float64, generator=generator))
    layer.bias.grad.copy_(torch.randn(2, 3, dtype=torch.float64, generator=generator))
    return layer


def test_an_input_in_the_weight_gradients_memory_is_read_as_it_was_at_forward() -> None:
    """An input that is weight.grad itself (R, N, in) = (2, 3, 3) is the value it had at the
    forward for the weight gradient dL/dW += G^T X, as autograd says, although the accumulation
    writes over that memory."""
    layer = _square_layer()
    x = layer.weight.grad
    g = torch.randn(2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    grad_w0 = layer.weight.grad.clone()
    assert layer.bias is not None
    grad_b0 = layer.bias.grad.clone()
    d_x, d_w, d_b = _oracle(layer, x.clone(), g)
    layer(x)
    torch.testing.assert_close(layer.backward(g), d_x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.weight.grad, grad_w0 + d_w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.bias.grad, grad_b0 + d_b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("parameters_only", [False, True], ids=["backward", "backward_parameters"])
def test_a_gradient_in_the_parameter_gradients_memory_is_read_as_it_was_given(
    parameters_only: bool,
) -> None:
    """A grad_output that is weight.grad itself (R, N, out) = (2, 3, 3) gives the input gradient
    G W and the accumulated gradients of the G given, as autograd says (the accumulation into
    weight.grad writes over G before G W and the bias sum read it), through backward and
    through backward_parameters."""
    layer = _square_layer()
    x = torch.randn(2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    g = layer.weight.grad
    grad_w0 = layer.weight.grad.clone()
    assert layer.bias is not None
    grad_b0 = layer.bias.grad.clone()
    d_x, d_w, d_b = _oracle(layer, x, g.clone())
    layer(x)
    if parameters_only:
        layer.backward_parameters(g)
    else:
        torch.testing.assert_close(layer.backward(g), d_x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.weight.grad, grad_w0 + d_w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.bias.grad, grad_b0 + d_b, rtol=1e-12, atol=1e-12)


def test_an_input_in_the_gradients_memory_zeroed_before_backward_keeps_its_forward_value() -> None:
    """An input that is weight.grad, zeroed by zero_grad between the forward and the backward
    (gradients reset in the middle of a step), still counts with the value it had at the
    forward: dL/dW = G^T X of that X, as autograd says (the cached input is a copy)."""
    layer = _square_layer()
    x = layer.weight.grad
    g = torch.randn(2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    d_x, d_w, d_b = _oracle(layer, x.clone(), g)
    layer(x)
    layer.zero_grad()
    assert not bool(x.any())  # (the input's memory was zeroed)
    torch.testing.assert_close(layer.backward(g), d_x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.weight.grad, d_w, rtol=1e-12, atol=1e-12)
    assert layer.bias is not None
    torch.testing.assert_close(layer.bias.grad, d_b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("uniform_", lambda t: init.uniform_(t, -1.0, 1.0, torch.Generator().manual_seed(0))),
        ("zeros_", init.zeros_),
        ("constant_", lambda t: init.constant_(t, 2.0)),
    ],
    ids=["uniform", "zeros", "constant"],
)
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_a_nested_tensor_is_refused_as_not_dense(name: str, call: object) -> None:
    """A nested tensor (whose layout reads as strided) is refused as no dense tensor, naming
    the function, and its values are left as they were."""
    nested = torch.nested.nested_tensor([torch.ones(2, 3), torch.ones(4, 3)])
    with pytest.raises(TypeError) as raised:
        call(nested)  # type: ignore[operator]
    assert str(raised.value) == (
        f"init.{name}: expected a Parameter or a dense floating-point tensor, got a nested tensor"
    )
    assert all(bool((part == 1).all()) for part in nested.unbind())


def test_an_input_of_four_dimensions_is_refused_in_the_layers_words() -> None:
    """An input (R, N, in, k) whose first and third sizes are the layer's R and in is no
    (R, N, in) input: refused naming the layer, the expected shape and the one given."""
    layer = nn.BatchedLinear(2, 3, 4)
    with pytest.raises(ValueError) as raised:
        layer(torch.randn(2, 5, 3, 7))
    assert str(raised.value) == (
        "BatchedLinear: expected an input of shape (2, N, 3) with N >= 1, got (2, 5, 3, 7)"
    )


def _nested(input: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():  # (torch's prototype warning about strided nested tensors)
        warnings.simplefilter("ignore", UserWarning)
        return torch.nested.nested_tensor(list(input.unbind()))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda x: x.to_sparse(),
            "BatchedLinear: expected a dense input, got a sparse_coo tensor "
            "(pass input.to_dense())",
        ),
        (
            lambda x: x.to_mkldnn(),
            "BatchedLinear: expected a dense input, got a _mkldnn tensor (pass input.to_dense())",
        ),
        (
            _nested,
            "BatchedLinear: expected a dense input, got a nested tensor (one of equal sizes is "
            "made dense by torch.stack(input.unbind()))",
        ),
    ],
    ids=["sparse", "mkldnn", "nested"],
)
def test_a_batched_linear_refuses_an_input_that_is_not_dense_in_its_name(
    make: object, message: str
) -> None:
    """A sparse, MKL-DNN or nested input of the right shape and dtype is refused by the layer
    in its own words, naming the layout and the way to a dense one (the tensor library would
    otherwise fail part-way in a matrix product with a list of its backends, or with an
    internal error about a nested tensor's sizes), and the layer is left as it was: its
    parameters and gradients unchanged, and a dense input of the same shape is then taken."""
    torch.manual_seed(0)
    layer = nn.BatchedLinear(2, 3, 4)
    dense = torch.randn(2, 5, 3)
    weight, bias = layer.weight.data.clone(), layer.bias.data.clone()  # type: ignore[union-attr]
    with pytest.raises(TypeError) as raised:
        layer(make(dense))  # type: ignore[operator]
    assert str(raised.value) == message
    assert torch.equal(layer.weight.data, weight)
    assert torch.equal(layer.bias.data, bias)  # type: ignore[union-attr]
    assert not layer.weight.grad.any() and not layer.bias.grad.any()  # type: ignore[union-attr]
    expected = torch.baddbmm(bias.unsqueeze(1), dense, weight.transpose(1, 2))
    assert torch.equal(layer(dense), expected)


def test_a_model_layout_stack_cast_after_forward_refuses_backward_before_any_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``layout="model"`` stack whose weight gradient goes through the batched product's
    temporary (float32, made at forward), cast to float64 between forward and backward, is
    refused by backward_parameters in the layer's own words, naming both dtypes, before
    anything is written: the float32 temporary is not added into the new float64 gradients
    (which the tensor library would do without a word, type promotion accepting it)."""
    # (the batched product taken wherever it is used: whether it gives the per-model bits is
    # the CPU's, and so is whether a layer uses it unforced)
    monkeypatch.setattr(batched_linear, "_EXACT_BATCHED_GRADIENT", {})
    monkeypatch.setattr(batched_linear, "_compare_the_two_ways", lambda *args: True)
    torch.manual_seed(0)
    stack = nn.stack_models([nn.mlp((2, 25, 25, 2), "tanh") for _ in range(4)], layout="model")
    x = torch.randn(4, 100, 2)
    stack.backward(torch.randn_like(stack(x)))  # (the first backward decides the temporary)
    layers = [
        layer
        for layer in stack
        if isinstance(layer, nn.BatchedLinear) and layer._product is not None
    ]
    assert layers
    layer = layers[0]
    input = torch.randn(4, 100, layer.in_features)
    grad_output = torch.randn_like(layer(input))
    stack.to(torch.float64)
    for parameter in stack.parameters():
        parameter.grad.zero_()
    with pytest.raises(RuntimeError) as raised:
        layer.backward_parameters(grad_output)
    assert str(raised.value) == (
        "BatchedLinear: the parameters are torch.float64 on cpu but the last forward ran in "
        "torch.float32 on cpu: the module was cast or moved (.to(...)) after that forward; "
        "run forward again before backward"
    )
    assert all(not parameter.grad.any() for parameter in stack.parameters())
    assert all(parameter.grad.dtype == torch.float64 for parameter in stack.parameters())


def _layers(stack: nn.Sequential) -> list[BatchedLinear]:
    return [layer for layer in stack if isinstance(layer, BatchedLinear)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_the_check_says_yes_where_each_element_is_a_single_product(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    """With one sample, every element of G_r^T X_r is a single product g * x, rounded once
    whichever way it is computed, so the two ways cannot differ on any CPU: the check must say
    yes, and a model-layout stack trained on one sample then uses the batched product (a check
    whose draws were compared wrongly, e.g. accumulating one draw into the next, said no and
    gave up the batched product everywhere)."""
    monkeypatch.setattr(batched_linear, "_EXACT_BATCHED_GRADIENT", {})
    torch.manual_seed(0)
    stack = nn.stack_models(
        [nn.mlp((3, 4, 2), "tanh", dtype=dtype) for _ in range(3)], layout="model"
    )
    layers = _layers(stack)
    assert not layers[0].weight.grad.is_contiguous()  # (blocks of one buffer)
    assert _batched_gradient_is_exact(layers[0].weight.grad, 1) is True
    stack(torch.randn(3, 1, 3, dtype=dtype))
    stack.backward(torch.randn(3, 1, 2, dtype=dtype))
    assert all(layer._choice == [True] for layer in layers)
    assert all(layer._product is not None for layer in layers)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_stack_of_one_model_has_the_bits_of_that_model_in_a_larger_stack(
    dtype: torch.dtype,
) -> None:
    """A layer with one output (forward a matrix times a vector) and one with one input (its
    input gradient so) give a single model the bits of the same model stacked with others (the
    CPU's batched product of two or more models rounds such products otherwise than the plain
    product ATen uses for one)."""
    generator = torch.Generator().manual_seed(7)
    for in_features, out_features in ((300, 1), (1, 300)):
        layers = [
            nn.Linear(in_features, out_features, dtype=dtype, generator=generator) for _ in range(3)
        ]
        x = torch.randn(3, 64, in_features, dtype=dtype, generator=generator)
        g = torch.randn(3, 64, out_features, dtype=dtype, generator=generator)
        alone, stacked = BatchedLinear.stack(layers[:1]), BatchedLinear.stack(layers)
        assert torch.equal(alone(x[:1]), stacked(x)[:1])
        assert torch.equal(alone.backward(g[:1]), stacked.backward(g)[:1])


def test_each_batch_size_keeps_its_own_choice_of_product(monkeypatch: pytest.MonkeyPatch) -> None:
    """The choice of the weight-gradient product is made per batch size: where the check said
    yes for one size and no for another, alternating between them takes the batched product's
    temporary only at the first (a forward at the second that kept the first's temporary
    computed its gradients the way the check refused), and the gradients are the per-model
    products' either way (values checked against bmm in float64)."""
    monkeypatch.setattr(
        batched_linear, "_batched_gradient_is_exact", lambda grad, batch: batch == 5
    )
    torch.manual_seed(2)
    stack = nn.stack_models(
        [nn.mlp((3, 4, 2), "tanh", dtype=torch.float64) for _ in range(3)], layout="model"
    )
    layer = _layers(stack)[-1]
    for batch in (5, 6, 5, 6, 6):
        x = torch.randn(3, batch, 3, dtype=torch.float64)
        g = torch.randn(3, batch, 2, dtype=torch.float64)
        stack(x)
        for parameter in stack.parameters():
            parameter.grad.zero_()
        if batch == 6:
            assert layer._product is None
        stack.backward(g)
        assert (layer._product is not None) == (batch == 5)
        assert layer._input is not None
        expected = torch.bmm(g.transpose(1, 2), layer._input)
        assert torch.allclose(layer.weight.grad, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: [nn.Linear(2, 3), nn.Linear(3, 3)],
            "['(2, 3, True)', '(3, 3, True)'] and [\"(torch.float32, device(type='cpu'))\"]",
        ),
        (
            lambda: [nn.Linear(2, 3), nn.Linear(2, 3, bias=False)],
            "['(2, 3, False)', '(2, 3, True)'] and [\"(torch.float32, device(type='cpu'))\"]",
        ),
        (
            lambda: [nn.Linear(2, 3, dtype=torch.float64), nn.Linear(2, 3)],
            "['(2, 3, True)'] and [\"(torch.float32, device(type='cpu'))\", "
            "\"(torch.float64, device(type='cpu'))\"]",
        ),
    ],
    ids=["in-features", "bias", "dtype"],
)
def test_stack_refuses_layers_that_differ_naming_what_it_got(make: object, message: str) -> None:
    """Layers of other sizes, bias or dtype are refused by stack in its own words, listing the
    (in, out, bias) and (dtype, device) it got."""
    with pytest.raises(ValueError) as raised:
        BatchedLinear.stack(make())  # type: ignore[operator]
    assert str(raised.value) == (
        "BatchedLinear.stack: every layer must have the same shape, bias, dtype and device, got "
        + message
    )


# -- a third pass ---------------------------------------------------------------------------


def _bmm_autograd(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dL/dX, dL/dW, dL/db) of sum(Y * G) by PyTorch autograd in float64, Y = X W^T + b."""
    weight = weight.clone().requires_grad_()
    bias = bias.clone().requires_grad_()
    x = x.clone().requires_grad_()
    ((torch.bmm(x, weight.transpose(1, 2)) + bias.unsqueeze(1)) * g).sum().backward()  # type: ignore[no-untyped-call]
    assert x.grad is not None and weight.grad is not None and bias.grad is not None
    return x.grad, weight.grad, bias.grad


def test_backward_reads_the_cached_input_as_given_when_a_gradient_is_set_over_it() -> None:
    """An input that the weight gradient is set over between forward and backward
    (``weight.grad = x``, the cached input of the weight's shape (R, out, in)) is read as it
    was given: the weight gradient accumulated into it is its old values plus autograd's
    G_r^T X_r, not a product that read X while writing over it; the bias and input gradients
    are autograd's."""
    generator = torch.Generator().manual_seed(10)
    layer = nn.BatchedLinear(2, 3, 4, dtype=F64, generator=generator)
    assert layer.bias is not None
    x = torch.randn(2, 4, 3, dtype=F64, generator=generator)
    given = x.clone()
    layer(x)
    layer.weight.grad = x
    assert layer.weight.grad.data_ptr() == x.data_ptr()
    g = torch.randn(2, 4, 4, dtype=F64, generator=generator)
    dx, dw, db = _bmm_autograd(given, layer.weight.data, layer.bias.data, g)
    torch.testing.assert_close(layer.backward(g), dx, rtol=1e-13, atol=0)
    torch.testing.assert_close(layer.weight.grad, given + dw, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(layer.bias.grad, db, rtol=1e-13, atol=0)


def test_float64_tensors_set_by_hand_after_a_float32_step_train_in_float64(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``layout="model"`` stack's layer (its weight gradient not contiguous: it goes through
    the batched product's temporary), trained a step in float32, then given float64 weight and
    bias tensors by hand (``weight.data = ...``; the new gradients made to fit, laid out as the
    weight, the weight's not contiguous either), gives
    the float64 step autograd's gradients: the temporary is made again for the new gradient
    (a kept float32 one made backward fail)."""
    # (the batched product taken wherever it is used: whether it gives the per-model bits is
    # the CPU's, and so is whether a layer uses it unforced)
    monkeypatch.setattr(batched_linear, "_EXACT_BATCHED_GRADIENT", {})
    monkeypatch.setattr(batched_linear, "_compare_the_two_ways", lambda *args: True)
    generator = torch.Generator().manual_seed(16)
    torch.manual_seed(16)
    stack = nn.stack_models([nn.mlp((3, 2)) for _ in range(2)], layout="model")
    (layer,) = (module for module in stack if isinstance(module, BatchedLinear))
    assert layer.bias is not None
    assert not layer.weight.grad.is_contiguous()  # (blocks of one buffer)
    stack(torch.randn(2, 5, 3, generator=generator))
    stack.backward(torch.randn(2, 5, 2, generator=generator))
    assert layer._product is not None and layer._product.dtype == torch.float32
    # (a weight laid out (R, in, out) and read transposed: its new gradient is made like it)
    layer.weight.data = torch.randn(2, 3, 2, dtype=F64, generator=generator).transpose(1, 2)
    layer.bias.data = torch.randn(2, 2, dtype=F64, generator=generator)
    assert not layer.weight.grad.is_contiguous() and layer.weight.grad.dtype == F64
    x = torch.randn(2, 5, 3, dtype=F64, generator=generator)
    g = torch.randn(2, 5, 2, dtype=F64, generator=generator)
    dx, dw, db = _bmm_autograd(x, layer.weight.data, layer.bias.data, g)
    layer(x)
    torch.testing.assert_close(layer.backward(g), dx, rtol=1e-13, atol=0)
    torch.testing.assert_close(layer.weight.grad, dw, rtol=1e-13, atol=0)
    torch.testing.assert_close(layer.bias.grad, db, rtol=1e-13, atol=0)
    assert layer._product is not None and layer._product.dtype == F64


@pytest.mark.parametrize(
    ("mean", "std"),
    [(3.4028235e38, 1.0), (-3.4028235e38, 1.0), (3.4028234663852886e38, 1e30)],
    ids=["above the largest", "below the lowest", "the largest with std 1e30"],
)
def test_a_normal_whose_reach_rounds_to_float32s_largest_value_is_drawn(
    mean: float, std: float
) -> None:
    """A normal distribution whose reach |mean| + 9 std lies past float32's largest finite
    value but rounds to it in float32 (less than half an ulp beyond) draws finite values, so it
    is not refused: the tensor gets torch's own draws from the same generator, bit for bit, all
    finite (the mean rounds to the largest value and the draws are it)."""
    tensor = torch.empty(64)
    init.normal_(tensor, mean, std, torch.Generator().manual_seed(17))
    expected = torch.empty(64).normal_(mean, std, generator=torch.Generator().manual_seed(17))
    assert torch.equal(tensor, expected)
    assert bool(tensor.isfinite().all())
    assert bool((tensor.abs() == torch.finfo(torch.float32).max).all())


@pytest.mark.parametrize("fill", [init.ones_, init.zeros_], ids=["ones_", "zeros_"])
def test_ones_and_zeros_fill_a_torch_leaf_and_refuse_an_integer_tensor_by_name(
    fill: object,
) -> None:
    """ones_ and zeros_ fill a tensor that requires grad (a leaf of an autograd graph, such as
    PyTorch's own parameters) outside the graph, as PyTorch's nn.init does (autograd refuses an
    in-place fill of such a leaf itself), and refuse an integer tensor in their own name with a
    TypeError, the tensor unchanged."""
    name = fill.__name__  # type: ignore[attr-defined]
    value = 1.0 if name == "ones_" else 0.0
    leaf = torch.full((2, 3), 7.0, dtype=F64, requires_grad=True)
    assert fill(leaf) is leaf  # type: ignore[operator]
    assert torch.equal(leaf.detach(), torch.full((2, 3), value, dtype=F64))
    assert leaf.requires_grad and leaf.is_leaf and leaf.grad_fn is None
    integers = torch.full((2, 3), 7)
    with pytest.raises(TypeError) as raised:
        fill(integers)  # type: ignore[operator]
    assert str(raised.value) == (
        f"init.{name}: expected a Parameter or a floating-point tensor, got a tensor of torch.int64"
    )
    assert torch.equal(integers, torch.full((2, 3), 7))


def _set_by_hand(layers: list[nn.Linear]) -> None:
    layers[1].weight = torch.zeros(2, 3)  # type: ignore[assignment]


def _reshaped(layers: list[nn.Linear]) -> None:
    for layer in layers:
        layer.weight.data = torch.zeros(2, 4)


@pytest.mark.parametrize(
    ("spoil", "error", "message"),
    [
        (
            _set_by_hand,
            TypeError,
            "BatchedLinear.stack: layers[1]: weight must be a minidl Parameter, got Tensor (an "
            "attribute set by hand is not registered: parameters() and the optimizers would keep "
            "the old one); set its values in place with weight.data.copy_(...), or register a "
            "new one with register_parameter('weight', Parameter(...))",
        ),
        (
            _reshaped,
            ValueError,
            "BatchedLinear.stack: layers[0]: weight has shape (2, 4), expected (out_features, "
            "in_features) = (2, 3)",
        ),
    ],
    ids=["a tensor set by hand", "every weight of another shape"],
)
def test_stack_refuses_a_layer_whose_weight_does_not_fit_it_naming_the_layer(
    spoil: object, error: type[Exception], message: str
) -> None:
    """A Linear layer whose weight was set by hand to a plain tensor, or layers all given
    weights of another shape than their sizes (alike, so that the layers do not differ), are
    refused by stack with the exception and message naming the layer, rather than stacked into
    a BatchedLinear whose weight does not fit its sizes or holds an unregistered tensor."""
    generator = torch.Generator().manual_seed(19)
    layers = [nn.Linear(3, 2, generator=generator) for _ in range(2)]
    spoil(layers)  # type: ignore[operator]
    with pytest.raises(error) as raised:
        BatchedLinear.stack(layers)
    assert type(raised.value) is error
    assert str(raised.value) == message


def _model_laid_out_gradient(shift: int) -> torch.Tensor:
    """A zero (2, 10, 7) float64 weight gradient laid out by model (each model's block 128
    elements long, as a ``layout="model"`` stack's), ``shift`` elements into its buffer."""
    buffer = torch.zeros(2 * 128 + 8, dtype=F64)
    return buffer.as_strided((2, 10, 7), (128, 7, 1), shift)


@pytest.mark.parametrize("when", ["before the forward", "after the forward"])
def test_a_weight_gradient_set_by_hand_has_the_product_its_own_layout_takes(
    monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """The choice of the weight-gradient product is made for the gradient's layout: a gradient
    set by hand (the weight kept, the batch shape too), before the next forward or between it
    and its backward, is checked for its own layout, not given the choice made for the one
    before (a check that says yes at offset 0 and no one element in: the new gradient was
    computed by the batched product the check refused for it); its values are the per-model
    products' (against bmm in float64) and the choice is asked once per layout."""
    asked: list[int] = []

    def exact_at_offset_0(grad: torch.Tensor, batch: int) -> bool:
        asked.append(grad.storage_offset())
        return grad.storage_offset() == 0

    monkeypatch.setattr(batched_linear, "_batched_gradient_is_exact", exact_at_offset_0)
    generator = torch.Generator().manual_seed(18)
    layer = BatchedLinear(2, 7, 10, bias=False, dtype=F64, generator=generator)
    x = torch.randn(2, 16, 7, dtype=F64, generator=generator)
    g = torch.randn(2, 16, 10, dtype=F64, generator=generator)
    layer.weight.grad = _model_laid_out_gradient(0)
    layer(x)
    layer.backward_parameters(g)
    assert layer._product is not None
    if when == "before the forward":
        layer.weight.grad = _model_laid_out_gradient(1)
        layer(x)
    else:
        layer(x)
        layer.weight.grad = _model_laid_out_gradient(1)
    layer.backward_parameters(g)
    assert layer._product is None
    assert asked == [0, 1]
    expected = torch.bmm(g.transpose(1, 2), x)
    torch.testing.assert_close(layer.weight.grad, expected, rtol=1e-13, atol=0)
    layer(x)
    layer.backward_parameters(g)
    assert layer._product is None and asked == [0, 1]
