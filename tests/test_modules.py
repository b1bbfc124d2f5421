"""Every module against PyTorch autograd in float64, and the Module contract around it."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minidl import nn, optim
from minidl.nn.flat import flat_buffer, flatten_parameters
from tests.helpers import F64, assert_close, helper_test_op, torch_twin

# -- the modules ---------------------------------------------------------------------------------

ACTIVATION_FACTORIES: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leakyrelu-0": lambda: nn.LeakyReLU(0.0),
    "leakyrelu-0.01": nn.LeakyReLU,
    "leakyrelu-0.3": lambda: nn.LeakyReLU(0.3),
    "leakyrelu-2": lambda: nn.LeakyReLU(2.0),
    # (negative slopes and alphas, 0 too, as PyTorch takes them: |x| is LeakyReLU(-1))
    "leakyrelu--0.5": lambda: nn.LeakyReLU(-0.5),
    "leakyrelu--1": lambda: nn.LeakyReLU(-1),
    "elu-0": lambda: nn.ELU(0.0),
    "elu--1.5": lambda: nn.ELU(-1.5),
    "elu-0.1": lambda: nn.ELU(0.1),
    "elu-1": nn.ELU,
    "elu-2.5": lambda: nn.ELU(2.5),
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "gelu-tanh": lambda: nn.GELU("tanh"),
    "silu": nn.SiLU,
}

#: (batch, in_features, out_features): batch 1, width 1 and ordinary shapes.
SHAPES = [(1, 1, 1), (1, 4, 3), (6, 1, 5), (5, 3, 1), (17, 8, 6)]


def _input(batch: int, features: int) -> torch.Tensor:
    # Scaled so that the activations see both signs and their saturating ranges.
    return 3 * torch.randn(batch, features, dtype=F64)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_linear_matches_torch(shape: tuple[int, int, int], bias: bool) -> None:
    batch, n_in, n_out = shape
    helper_test_op(nn.Linear(n_in, n_out, bias=bias, dtype=F64), _input(batch, n_in))


@pytest.mark.parametrize("name", list(ACTIVATION_FACTORIES))
@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (7, 1), (9, 6)], ids=str)
def test_activation_matches_torch(name: str, shape: tuple[int, int]) -> None:
    helper_test_op(ACTIVATION_FACTORIES[name](), _input(*shape))


@pytest.mark.parametrize("name", list(ACTIVATION_FACTORIES))
def test_activation_keeps_any_shape(name: str) -> None:
    activation = ACTIVATION_FACTORIES[name]()
    x = torch.randn(2, 3, 4, dtype=F64)
    x_torch = x.clone().requires_grad_(True)
    upstream = torch.randn(2, 3, 4, dtype=F64)
    expected = torch_twin(activation)(x_torch)
    (expected * upstream).sum().backward()
    assert_close(activation(x), expected)
    assert x_torch.grad is not None
    assert_close(activation.backward(upstream), x_torch.grad)


@pytest.mark.parametrize("name", list(ACTIVATION_FACTORIES))
@pytest.mark.parametrize("shape", [(1, 1), (4, 3)], ids=str)
def test_sequential_stack_of_each_activation(name: str, shape: tuple[int, int]) -> None:
    batch, width = shape
    factory = ACTIVATION_FACTORIES[name]
    model = nn.Sequential(
        nn.Linear(2, width, dtype=F64),
        factory(),
        nn.Linear(width, width, dtype=F64),
        factory(),
        nn.Linear(width, 3, bias=False, dtype=F64),
        factory(),
        nn.Linear(3, 2, dtype=F64),
    )
    helper_test_op(model, _input(batch, 2))


def test_sequential_of_every_activation_at_once() -> None:
    layers: list[nn.Module] = [nn.Linear(3, 5, dtype=F64)]
    for factory in ACTIVATION_FACTORIES.values():
        layers += [factory(), nn.Linear(5, 5, dtype=F64)]
    helper_test_op(nn.Sequential(*layers), torch.randn(4, 3, dtype=F64))


def test_nested_sequential() -> None:
    inner = nn.Sequential(nn.Linear(3, 4, dtype=F64), nn.ELU())
    model = nn.Sequential(inner, nn.Tanh(), nn.Linear(4, 2, dtype=F64))
    helper_test_op(model, torch.randn(5, 3, dtype=F64))


LOSSES: dict[str, Callable[[], nn.Loss]] = {
    "mse-paper": nn.MSELoss,
    "mse-mean": lambda: nn.MSELoss("mean"),
    "mse-sum": lambda: nn.MSELoss("sum"),
    "cross-entropy": nn.CrossEntropyLoss,
}


def _targets(kind: str, batch: int, classes: int) -> torch.Tensor:
    if kind == "indices":
        return torch.randint(classes, (batch,))
    if kind == "one-hot":
        return torch.eye(classes, dtype=F64)[torch.randint(classes, (batch,))]
    if kind == "probabilities":
        return torch.rand(batch, classes, dtype=F64).softmax(dim=1)
    return torch.randn(batch, classes, dtype=F64)  # "real", regression targets


@pytest.mark.parametrize("activation", sorted(nn.ACTIVATIONS))
@pytest.mark.parametrize(
    ("loss", "target_kind"),
    [
        ("mse-paper", "indices"),
        ("mse-paper", "real"),
        ("mse-mean", "one-hot"),
        ("mse-sum", "indices"),
        ("cross-entropy", "indices"),
        ("cross-entropy", "probabilities"),
    ],
)
@pytest.mark.parametrize("batch", [1, 11])
def test_mlp_with_loss_matches_torch(
    activation: str, loss: str, target_kind: str, batch: int
) -> None:
    model = nn.mlp((2, 6, 5, 3), activation, dtype=F64)
    helper_test_op(
        model, torch.randn(batch, 2, dtype=F64), LOSSES[loss](), _targets(target_kind, batch, 3)
    )


@settings(max_examples=25, deadline=None)
@given(
    widths=st.lists(st.integers(1, 7), min_size=1, max_size=4),
    batch=st.integers(1, 9),
    activation=st.sampled_from(sorted(nn.ACTIVATIONS)),
    loss=st.sampled_from(sorted(LOSSES)),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_mlps_match_torch(
    widths: list[int], batch: int, activation: str, loss: str, seed: int
) -> None:
    torch.manual_seed(seed)
    model = nn.mlp([*widths, 3], activation, dtype=F64)
    target_kind = "indices" if loss == "cross-entropy" or seed % 2 else "real"
    helper_test_op(model, _input(batch, widths[0]), LOSSES[loss](), _targets(target_kind, batch, 3))


# -- accumulation and param() --------------------------------------------------------------------


ACCUMULATING: list[tuple[str, Callable[[], nn.Module], tuple[int, ...], tuple[int, ...]]] = [
    ("linear", lambda: nn.Linear(3, 2, dtype=F64), (5, 3), (5, 2)),
    ("sequential", lambda: nn.mlp((3, 4, 2), "tanh", dtype=F64), (5, 3), (5, 2)),
    ("batched-linear", lambda: nn.BatchedLinear(2, 3, 4, dtype=F64), (2, 5, 3), (2, 5, 4)),
    ("batch-norm", lambda: nn.BatchNorm1d(3, dtype=F64), (5, 3), (5, 3)),
    (
        "residual",
        lambda: nn.Residual(nn.Sequential(nn.Linear(3, 3, dtype=F64), nn.Tanh())),
        (5, 3),
        (5, 3),
    ),
]


@pytest.mark.parametrize("backward", ["backward", "backward_parameters"])
@pytest.mark.parametrize(
    ("make", "input_shape", "output_shape"),
    [case[1:] for case in ACCUMULATING],
    ids=[case[0] for case in ACCUMULATING],
)
def test_backward_accumulates(
    make: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
    backward: str,
) -> None:
    """Every parameter gradient is added to, not overwritten: two backward passes give twice
    one, and zero_grad clears them."""
    model = make()
    x, upstream = torch.randn(input_shape, dtype=F64), torch.randn(output_shape, dtype=F64)
    model(x)
    first_input_grad = getattr(model, backward)(upstream)
    once = [grad.clone() for _, grad in model.param()]
    assert once and all(bool(grad.abs().sum() > 0) for grad in once)
    second_input_grad = getattr(model, backward)(upstream)
    if backward == "backward":
        assert torch.equal(first_input_grad, second_input_grad)
    for (_, grad), single in zip(model.param(), once, strict=True):
        assert_close(grad, 2 * single, 1e-15)
    model.zero_grad()
    assert all(bool((grad == 0).all()) for _, grad in model.param())


def test_linear_param_pairs() -> None:
    layer = nn.Linear(3, 5)
    pairs = layer.param()
    assert len(pairs) == 2
    (weight, grad_weight), (bias, grad_bias) = pairs
    assert weight is layer.weight.data and grad_weight is layer.weight.grad
    assert bias is not None and layer.bias is not None
    assert bias is layer.bias.data and grad_bias is layer.bias.grad
    assert weight.shape == grad_weight.shape == (5, 3)
    assert bias.shape == grad_bias.shape == (5,)
    assert [p.data for p in layer.parameters()] == [weight, bias]
    assert len(nn.Linear(3, 5, bias=False).param()) == 1


@pytest.mark.parametrize("name", list(ACTIVATION_FACTORIES))
def test_activations_have_no_parameters(name: str) -> None:
    module = ACTIVATION_FACTORIES[name]()
    assert module.param() == [] and list(module.parameters()) == []


def test_sequential_param_concatenates_children_in_order() -> None:
    children = [nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 1)]
    model = nn.Sequential(*children)
    expected = [pair for child in children for pair in child.param()]
    got = model.param()
    assert len(got) == len(expected) == 5
    for (value, grad), (child_value, child_grad) in zip(got, expected, strict=True):
        assert value is child_value and grad is child_grad
        assert value.shape == grad.shape
    assert [p.data for p in model.parameters()] == [value for value, _ in got]
    assert [p for child in children for p in child.parameters()] == list(model.parameters())
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "4.weight", "4.bias"]


@pytest.mark.parametrize("factory", [lambda: nn.Linear(3, 2), nn.Tanh, lambda: nn.mlp((3, 4, 2))])
def test_call_is_forward(factory: Callable[[], nn.Module]) -> None:
    module = factory()
    x = torch.randn(4, 3)
    assert torch.equal(module(x), module.forward(x))


def test_zero_grad_clears_every_parameter() -> None:
    model = nn.mlp((2, 3, 2))
    model(torch.randn(4, 2))
    model.backward(torch.ones(4, 2))
    assert any(bool(p.grad.abs().sum() > 0) for p in model.parameters())
    model[0].zero_grad()
    assert bool((model[0].weight.grad == 0).all())
    assert bool(model[2].weight.grad.abs().sum() > 0)
    model.zero_grad()
    assert all(bool((p.grad == 0).all()) for p in model.parameters())


def test_train_eval_reach_every_child() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), nn.Linear(2, 2))
    modules = [module for _, module in model.named_modules()]
    assert len(modules) == 5
    assert all(module.training for module in modules)
    assert model.eval() is model
    assert not any(module.training for module in modules)
    assert model.train() is model
    assert all(module.training for module in modules)
    model.train(False)
    assert not any(module.training for module in modules)


def test_modules_are_named_modules_without_the_paths() -> None:
    inner = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    model = nn.Sequential(inner, nn.Residual(nn.Sequential(nn.Linear(2, 2))), nn.Linear(2, 2))
    named = list(model.named_modules())
    assert [path for path, _ in named] == ["", "0", "0.0", "0.1", "1", "1.block", "1.block.0", "2"]
    assert [id(module) for module in model.modules()] == [id(module) for _, module in named]
    lone = nn.Tanh()
    assert list(lone.modules()) == [lone]


def test_buffers_and_named_children_as_in_pytorch() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Sequential(nn.BatchNorm1d(3)))
    assert list(model.buffers()) == [buffer for _, buffer in model.named_buffers()]
    assert len(list(model.buffers())) == 6  # two norms' running mean, variance and count
    assert [(name, child) for name, child in model.named_children()] == [
        ("0", model[0]),
        ("1", model[1]),
        ("2", model[2]),
    ]
    twin = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    assert [name for name, _ in twin.named_children()] == ["0", "1"]  # the same names


def test_apply_calls_every_module_children_first() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), nn.Linear(2, 2))
    seen: list[nn.Module] = []
    assert model.apply(seen.append) is model
    assert seen == [model[0][0], model[0][1], model[0], model[1], model]
    twin = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.nn.Linear(2, 2))
    order: list[torch.nn.Module] = []
    twin.apply(order.append)
    assert [type(m).__name__ for m in order] == ["Linear", "Sequential", "Linear", "Sequential"]

    def init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            module.weight.data.fill_(0.5)

    model.apply(init)
    assert all(float(p.data.min()) == 0.5 for p in model.parameters() if p.data.dim() == 2)
    with pytest.raises(TypeError, match=r"Sequential\.apply: fn must be callable, got 3"):
        model.apply(3)  # type: ignore[arg-type]


def test_state_dict_round_trip() -> None:
    torch.manual_seed(1)
    source = nn.mlp((2, 5, 3), "elu")
    torch.manual_seed(2)
    target = nn.mlp((2, 5, 3), "elu")
    x = torch.randn(6, 2)
    assert not torch.equal(source(x), target(x))
    state = source.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    target.load_state_dict(state)
    assert torch.equal(source(x), target(x))
    # The state dict is a copy: changing it changes neither model.
    state["0.weight"].add_(1.0)
    assert torch.equal(source(x), target(x))
    # Loading writes in place: the Parameter objects and the flat buffer survive.
    assert flat_buffer([p.data for p in target.parameters()]) is not None


def test_repr_is_readable() -> None:
    assert repr(nn.Linear(2, 25)) == "Linear(in_features=2, out_features=25, bias=True)"
    assert repr(nn.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"
    assert repr(nn.ELU(2.0)) == "ELU(alpha=2.0)"
    assert repr(nn.Tanh()) == "Tanh()"
    assert repr(nn.MSELoss("mean")) == "MSELoss(reduction='mean')"
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Sequential(nn.Linear(3, 1)))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(in_features=2, out_features=3, bias=True)\n"
        "  (1): ReLU()\n"
        "  (2): Sequential(\n"
        "    (0): Linear(in_features=3, out_features=1, bias=True)\n"
        "  )\n"
        ")"
    )


# -- initialisation ------------------------------------------------------------------------------


def _moments(values: torch.Tensor) -> tuple[float, float, float]:
    """Mean, variance and kurtosis (4th standardised moment) of a sample."""
    values = values.double().reshape(-1)
    mean = float(values.mean())
    variance = float(values.var())
    kurtosis = float(((values - mean) ** 4).mean()) / variance**2
    return mean, variance, kurtosis


def test_linear_weight_init_is_glorot_normal() -> None:
    # 300 x 700 distinguishes 2/(in+out) = 2e-3 from 1/in, 1/out, 2/in, 2/out.
    layer = nn.Linear(700, 300)
    mean, variance, kurtosis = _moments(layer.weight.data)
    expected = 2.0 / (700 + 300)
    assert abs(mean) < 5 * math.sqrt(expected / layer.weight.numel())
    assert abs(variance / expected - 1) < 0.02  # the sample's relative spread is ~0.3%
    assert abs(kurtosis - 3) < 0.1  # normal (3), not uniform (1.8)


def test_linear_bias_init_is_standard_normal() -> None:
    layer = nn.Linear(1, 200_000)
    assert layer.bias is not None
    mean, variance, kurtosis = _moments(layer.bias.data)
    assert abs(mean) < 0.015
    assert abs(variance - 1) < 0.02
    assert abs(kurtosis - 3) < 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("in_features", "out_features"), [(1, 1), (2, 25), (25, 2), (700, 300)])
def test_linear_init_draws_the_papers_values(
    in_features: int, out_features: int, dtype: torch.dtype
) -> None:
    """The exact values, not only their statistics: the weight is ``randn(out, in)`` times
    ``sqrt(2 / (in + out))`` (Xavier normal, the paper's), then the bias ``randn(out)``, both
    from the generator given, in that order."""
    layer = nn.Linear(
        in_features, out_features, dtype=dtype, generator=torch.Generator().manual_seed(11)
    )
    generator = torch.Generator().manual_seed(11)
    weight = torch.randn(out_features, in_features, dtype=dtype, generator=generator)
    bias = torch.randn(out_features, dtype=dtype, generator=generator)
    assert torch.equal(layer.weight.data, weight * math.sqrt(2.0 / (in_features + out_features)))
    assert layer.bias is not None and torch.equal(layer.bias.data, bias)


def test_linear_init_is_seeded() -> None:
    torch.manual_seed(123)
    first = nn.mlp((2, 25, 25, 2)).state_dict()
    torch.manual_seed(123)
    second = nn.mlp((2, 25, 25, 2)).state_dict()
    torch.manual_seed(124)
    third = nn.mlp((2, 25, 25, 2)).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not any(torch.equal(first[k], third[k]) for k in first)
    generated = [
        nn.Linear(3, 4, generator=torch.Generator().manual_seed(7)).state_dict() for _ in range(2)
    ]
    assert all(torch.equal(generated[0][k], generated[1][k]) for k in generated[0])


# -- dtype, device, flat buffer, .to -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_output_dtype_and_device(dtype: torch.dtype) -> None:
    model = nn.mlp((2, 4, 2), "selu", dtype=dtype)
    assert all(p.dtype == dtype and p.grad.dtype == dtype for p in model.parameters())
    x = torch.randn(3, 2, dtype=dtype)
    output = model(x)
    assert output.dtype == dtype and output.device == x.device
    loss = nn.CrossEntropyLoss()(output, torch.tensor([0, 1, 1]))
    assert loss.dtype == dtype and loss.shape == ()
    grad = model.backward(torch.ones_like(output))
    assert grad.dtype == dtype and grad.shape == x.shape


def test_default_dtype_is_torchs(float64_default: None) -> None:
    assert nn.Linear(2, 2).weight.dtype == F64


def test_sequential_parameters_stay_flat_views_through_optimizer_steps() -> None:
    model = nn.mlp((2, 4, 3, 2), "tanh", dtype=F64)
    parameters = list(model.parameters())
    children_parameters = [model[0].weight, model[0].bias, model[2].weight]
    values = flat_buffer([p.data for p in parameters])
    grads = flat_buffer([p.grad for p in parameters])
    assert values is not None and grads is not None
    optimizer = optim.SGD(parameters, lr=0.1, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    before = values.clone()
    for _ in range(3):
        optimizer.zero_grad()
        criterion(model(torch.randn(5, 2, dtype=F64)), torch.randint(2, (5,)))
        model.backward(criterion.backward())
        optimizer.step()
    assert not torch.equal(before, values)
    after = list(model.parameters())
    assert all(a is b for a, b in zip(after, parameters, strict=True))
    assert children_parameters == [model[0].weight, model[0].bias, model[2].weight]
    # Still views of the same buffers: the children see the optimizer's updates.
    assert flat_buffer([p.data for p in after]) is not None
    assert parameters[0].data.untyped_storage().data_ptr() == values.untyped_storage().data_ptr()
    assert parameters[0].grad.untyped_storage().data_ptr() == grads.untyped_storage().data_ptr()
    assert torch.equal(values[: parameters[0].numel()], parameters[0].data.reshape(-1))


def _storage_and_offset(tensor: torch.Tensor) -> tuple[int, int]:
    return tensor.untyped_storage().data_ptr(), tensor.storage_offset()


@pytest.mark.parametrize(
    "part", [slice(0, 3), slice(2, None), slice(None, -1), slice(None, None, 2)], ids=str
)
def test_a_slice_of_a_sequential_shares_its_modules_and_moves_nothing(part: slice) -> None:
    """``model[a:b]`` (with a step too) is a Sequential of the same module objects, computing
    their composition, with every parameter left where it was: the model stays one flat buffer
    and an optimizer built on it before the slice trains both, bit for bit as without a slice."""
    model = nn.mlp((2, 4, 3, 2), "tanh", dtype=F64, generator=torch.Generator().manual_seed(0))
    twin = nn.mlp((2, 4, 3, 2), "tanh", dtype=F64, generator=torch.Generator().manual_seed(0))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    twin_optimizer = optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    places = [_storage_and_offset(t) for p in model.parameters() for t in (p.data, p.grad)]
    sliced = model[part]
    assert isinstance(sliced, nn.Sequential)
    assert list(sliced) == list(model)[part]
    assert all(a is b for a, b in zip(sliced, list(model)[part], strict=True))
    assert [_storage_and_offset(t) for p in model.parameters() for t in (p.data, p.grad)] == places
    first = sliced[0]
    assert isinstance(first, nn.Linear)  # every slice here starts with one
    x = torch.randn(5, first.in_features, dtype=F64)
    expected = x
    for module in list(model)[part]:
        expected = module.forward(expected)
    assert torch.equal(sliced(x), expected)
    criterion = nn.CrossEntropyLoss()
    for step in range(3):
        x, y = torch.randn(5, 2, dtype=F64), torch.tensor([0, 1, 1, 0, step % 2])
        for net, opt in ((model, optimizer), (twin, twin_optimizer)):
            opt.zero_grad()
            criterion(net(x), y)
            net.backward(criterion.backward())
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a.data, b.data)
    assert flat_buffer([p.data for p in model.parameters()]) is not None
    # The slice holds the model's own Parameter objects, so it sees the trained values.
    assert next(sliced.parameters()) is first.weight
    assert sliced.training and not model.eval()[part].training


def test_a_sequential_of_another_ones_consecutive_modules_keeps_its_buffer() -> None:
    """Parameters that already tile one buffer are not copied: ``Sequential(*model[1:])`` and a
    Sequential holding a whole model stay views of the model's buffer; modules that do not
    tile one are flattened into a new one, as before."""
    model = nn.mlp((2, 4, 3, 2), "tanh", dtype=F64)
    values = flat_buffer([p.data for p in model.parameters()])
    assert values is not None
    pointer = values.untyped_storage().data_ptr()
    for built in (nn.Sequential(*list(model)[1:]), nn.Sequential(model, nn.Tanh())):
        built_values = flat_buffer([p.data for p in built.parameters()])
        built_grads = flat_buffer([p.grad for p in built.parameters()])
        assert built_values is not None and built_grads is not None
        assert built_values.untyped_storage().data_ptr() == pointer
    assert flat_buffer([p.data for p in model.parameters()]) is not None
    apart = nn.Sequential(model[0], model[4])
    assert flat_buffer([p.data for p in apart.parameters()]) is not None
    assert next(apart.parameters()).data.untyped_storage().data_ptr() != pointer


def test_views_that_are_not_contiguous_do_not_count_as_one_flat_buffer() -> None:
    """A transposed view covers the right span of a buffer, but not in the parameter's element
    order: an optimizer updates it parameter by parameter, pairing every value with its own
    gradient, and gives the plain tensor update."""
    buffer = torch.arange(12.0, dtype=F64)
    transposed, rest = buffer[:6].view(2, 3).t(), buffer[6:]
    assert flat_buffer([transposed, rest]) is None
    assert flat_buffer([buffer[:6].view(3, 2), rest]) is not None
    weight, bias = nn.Parameter(transposed), nn.Parameter(rest)
    grads = torch.randn(12, dtype=F64)
    weight.grad, bias.grad = grads[:6].view(3, 2), grads[6:]
    expected = [transposed - 0.5 * weight.grad, rest - 0.5 * bias.grad]
    optim.SGD([weight, bias], lr=0.5).step()
    assert torch.equal(weight.data, expected[0]) and torch.equal(bias.data, expected[1])


@pytest.mark.parametrize("replaced", ["weight", "bias"])
@pytest.mark.parametrize("batched", [False, True], ids=["Linear", "BatchedLinear"])
def test_a_replaced_parameter_tensor_is_used_from_the_next_call(
    batched: bool, replaced: str
) -> None:
    """Layers keep views of their parameters between calls; assigning a new tensor to one
    parameter's ``data`` (the other one unchanged) is seen by the next forward and backward."""
    torch.manual_seed(5)
    layer: nn.Module = (
        nn.BatchedLinear(2, 3, 4, dtype=F64) if batched else nn.Linear(3, 4, dtype=F64)
    )
    x = torch.randn((2, 5, 3) if batched else (5, 3), dtype=F64)
    layer(x)  # a first call like the next one: the quick path follows
    parameter = getattr(layer, replaced)
    parameter.data = torch.randn_like(parameter.data)
    weight, bias = layer.weight.data, layer.bias.data
    expected = x @ weight.transpose(-1, -2) + bias.unsqueeze(-2)
    assert_close(layer(x), expected, 1e-14)
    upstream = torch.randn_like(expected)
    layer.zero_grad()
    grad_input = layer.backward(upstream)
    assert_close(grad_input, upstream @ weight, 1e-14)
    assert_close(layer.weight.grad, upstream.transpose(-1, -2) @ x, 1e-14)
    assert_close(layer.bias.grad, upstream.sum(dim=-2), 1e-14)


def test_parameters_of_mixed_dtypes_are_not_flattened() -> None:
    """One buffer holds one dtype: parameters of two dtypes are left as they are (no silent
    promotion), and flatten_parameters says so with None."""
    float32, float64 = nn.Linear(2, 3), nn.Linear(3, 2, dtype=F64)
    parameters = [*float32.parameters(), *float64.parameters()]
    values = [p.data for p in parameters]
    assert flatten_parameters(parameters) is None
    assert all(p.data is v for p, v in zip(parameters, values, strict=True))
    assert [p.data.dtype for p in parameters] == [torch.float32] * 2 + [F64] * 2


def test_parameters_flattened_inside_inference_mode_are_updated_outside_it() -> None:
    """flatten_parameters makes normal buffers even inside torch.inference_mode(): the values
    and gradients, still equal, can be changed in place outside it (an optimizer's step)."""
    layers = [nn.Linear(2, 3, dtype=F64), nn.Linear(3, 2, dtype=F64)]
    parameters = [p for layer in layers for p in layer.parameters()]
    for parameter in parameters:
        parameter.grad.normal_()
    values, grads = [p.data.clone() for p in parameters], [p.grad.clone() for p in parameters]
    with torch.inference_mode():
        flat = flatten_parameters(parameters)
    assert flat is not None
    for buffer in (*flat, *(p.data for p in parameters), *(p.grad for p in parameters)):
        assert not buffer.is_inference()
    for parameter, value, grad in zip(parameters, values, grads, strict=True):
        assert torch.equal(parameter.data, value) and torch.equal(parameter.grad, grad)
    optim.SGD(parameters, lr=0.5).step()
    for parameter, value, grad in zip(parameters, values, grads, strict=True):
        assert torch.equal(parameter.data, value - 0.5 * grad)


def test_to_float64_keeps_results_and_identity() -> None:
    model = nn.mlp((2, 5, 4, 2), "elu", dtype=torch.float32)
    parameters = list(model.parameters())
    reference = torch_twin(model).to(F64)  # float32 -> float64 is exact
    x = torch.randn(7, 2, dtype=F64)
    assert model.to(dtype=F64) is model
    assert list(model.parameters()) == parameters
    assert all(p.dtype == F64 and p.grad.dtype == F64 for p in parameters)
    assert flat_buffer([p.data for p in parameters]) is not None
    with torch.no_grad():
        expected = reference(x)
    assert_close(model(x), expected, 1e-12)
    helper_test_op(model, x)
    model.to(dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in parameters)
    assert_close(model(x.float()), expected.float(), 1e-6)


def test_to_keeps_an_optimizer_working() -> None:
    model = nn.mlp((2, 3, 2), "tanh", dtype=torch.float32)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    criterion = nn.MSELoss()
    x, y = torch.randn(4, 2), torch.randint(2, (4,))
    criterion(model(x), y)
    model.backward(criterion.backward())
    optimizer.step()
    model.to(dtype=F64)
    before = [p.data.clone() for p in model.parameters()]
    optimizer.zero_grad()
    criterion(model(x.double()), y)
    model.backward(criterion.backward())
    grads = [p.grad.clone() for p in model.parameters()]
    velocity = optimizer.state_dict()["state"]["momentum_buffer"]
    optimizer.step()
    assert optimizer.state_dict()["state"]["momentum_buffer"].dtype == F64
    # v <- 0.5 v + lr g ; w <- w - v, with v carried over from the float32 step.
    offset = 0
    for parameter, old, grad in zip(model.parameters(), before, grads, strict=True):
        size = parameter.numel()
        v = 0.5 * velocity[offset : offset + size].double().view_as(old) + 0.1 * grad
        assert_close(parameter.data, old - v, 1e-12)
        offset += size


# -- stability -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory", [nn.Sigmoid, nn.Tanh, nn.ELU, nn.SELU, nn.GELU, lambda: nn.GELU("tanh"), nn.SiLU]
)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_saturating_activations_are_finite_at_extremes(
    factory: Callable[[], nn.Module], dtype: torch.dtype
) -> None:
    activation = factory()
    x = torch.tensor([[-1000.0, -100.0, -89.0, 0.5, 89.0, 100.0, 1000.0]], dtype=dtype)
    output = activation(x)
    grad = activation.backward(torch.ones_like(x))
    assert bool(torch.isfinite(output).all()) and bool(torch.isfinite(grad).all())
    x64 = x.double().requires_grad_(True)
    expected = torch_twin(activation)(x64)
    expected.sum().backward()
    assert x64.grad is not None
    rtol = 1e-6 if dtype == torch.float32 else 1e-12
    assert_close(output, expected.to(dtype), rtol)
    assert_close(grad, x64.grad.to(dtype), rtol)


@pytest.mark.parametrize(
    "name",
    ["sigmoid", "tanh", "relu", "leakyrelu-0.01", "elu-1", "selu", "gelu", "gelu-tanh", "silu"],
)
def test_activations_give_an_element_the_same_bits_wherever_it_sits(name: str) -> None:
    """float32, forward and backward: each model's slice of a stack (R, N, 25) alone gives the
    bits it gets in the stack, at every position; the batched rounds' "same bits in any stack"
    rests on it. (torch.sigmoid computes the last elements of a tensor with scalar code that
    rounds differently, so a Sigmoid built on it failed here.)"""
    factory = ACTIVATION_FACTORIES[name]
    generator = torch.Generator().manual_seed(0)
    for models, batch in [(3, 100), (5, 7), (20, 100), (25, 1000)]:
        x = 3 * torch.randn(models, batch, 25, generator=generator)
        grad = torch.randn(models, batch, 25, generator=generator)
        stacked = factory()
        output, grad_input = stacked(x), stacked.backward(grad)
        for r in range(models):
            alone = factory()
            assert torch.equal(alone(x[r : r + 1].clone())[0], output[r]), (models, batch, r)
            assert torch.equal(alone.backward(grad[r : r + 1].clone())[0], grad_input[r])


def test_sigmoid_is_the_logistic_function_to_the_last_bits() -> None:
    """1 / (1 + e^-x) to a few units in the last place: in float32 within 2 eps of the float64
    value, in float64 within 4 eps of torch.sigmoid (each about 1 ulp off); the exact limits at
    the extremes (no NaN where e^-x overflows), NaN for NaN."""
    generator = torch.Generator().manual_seed(1)
    for dtype, ulps in ((torch.float32, 2), (F64, 4)):
        x = 10 * torch.randn(100_000, generator=generator, dtype=dtype)
        ours, reference = nn.Sigmoid()(x).double(), torch.sigmoid(x.double())
        assert bool((reference > 0).all())
        relative = float(((ours - reference).abs() / reference).max())
        assert relative <= ulps * torch.finfo(dtype).eps, relative
        extremes = torch.tensor([-1000.0, -0.0, 0.0, 1000.0, math.inf, -math.inf], dtype=dtype)
        assert nn.Sigmoid()(extremes).tolist() == [0.0, 0.5, 0.5, 1.0, 1.0, 0.0]
        assert math.isnan(nn.Sigmoid()(torch.tensor([math.nan], dtype=dtype)).item())


PIECEWISE = ["relu", "leakyrelu-0", "leakyrelu-0.01", "leakyrelu-2", "elu-0.1", "elu-1", "selu"]


@pytest.mark.parametrize("name", PIECEWISE)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_piecewise_activations_are_exact_on_each_side_and_at_the_kink(
    name: str, dtype: torch.dtype
) -> None:
    """Built from float operations (no boolean masks), the piecewise activations still give
    torch's outputs bit for bit where torch's formula is one rounding (x > 0, the kink, +-inf),
    a derivative of exactly 1 (or SELU's scale) for x > 0, and NaN for NaN."""
    activation = ACTIVATION_FACTORIES[name]()
    x = torch.tensor(
        [[-math.inf, -1e30, -3.0, -1e-30, -0.0, 0.0, 1e-30, 0.7, 3.0, 1e30, math.inf]], dtype=dtype
    )
    output = activation(x)
    grad = activation.backward(torch.ones_like(x))
    twin = torch_twin(activation)
    x_torch = x.clone().requires_grad_(True)
    expected = twin(x_torch)
    expected.sum().backward()
    assert x_torch.grad is not None
    positive = x > 0
    assert torch.equal(output[positive], expected.detach()[positive])
    scale = nn.selu.SELU_SCALE if name == "selu" else 1.0
    assert bool((grad[positive] == scale).all())
    rtol = 1e-6 if dtype == torch.float32 else 1e-15
    torch.testing.assert_close(output, expected.detach(), rtol=rtol, atol=0, equal_nan=True)
    # ELU's derivative y + alpha (from the cached output) loses a few bits to cancellation
    # where torch's alpha * exp(x) does not: at x = -3, about 20 ulp.
    torch.testing.assert_close(grad, x_torch.grad, rtol=1e3 * rtol, atol=0)
    if name.startswith("leakyrelu"):  # the cached slope is exactly 1 or the negative slope
        slope = torch.tensor(activation.negative_slope, dtype=dtype).item()
        assert set(grad[~positive].tolist()) == {slope}
    nan = activation(torch.tensor([[math.nan]], dtype=dtype))
    assert bool(nan.isnan().all())


def test_relu_gradient_at_a_nan_is_zero() -> None:
    """ReLU passes a NaN forward and, as its docstring says, gives it a zero gradient (where
    PyTorch's passes the upstream gradient through)."""
    module = nn.ReLU()
    x = torch.tensor([[float("nan"), -1.0, 2.0]], dtype=F64)
    output = module(x)
    assert output[0, 0].isnan() and output[0, 1:].tolist() == [0.0, 2.0]
    assert module.backward(torch.full_like(x, 3.0)).tolist() == [[0.0, 0.0, 3.0]]


@pytest.mark.parametrize("name", list(ACTIVATION_FACTORIES))
def test_activation_backward_promotes_a_gradient_of_another_dtype(name: str) -> None:
    """A float64 gradient through a float32 activation gives float64, as torch's promotion
    would (the in-place fast paths must not truncate it)."""
    activation = ACTIVATION_FACTORIES[name]()
    x = 3 * torch.randn(4, 5)
    activation(x)
    upstream = torch.randn(4, 5, dtype=F64)
    grad = activation.backward(upstream)
    assert grad.dtype == F64
    x_torch = x.double().requires_grad_(True)
    torch_twin(activation)(x_torch).backward(upstream)
    assert x_torch.grad is not None
    # Against float64 autograd: as close as the float32 forward's cache allows.
    torch.testing.assert_close(grad, x_torch.grad, rtol=1e-6, atol=1e-6)
    # Not truncated: the upstream gradient times the derivative the float32 cache gives (a
    # float64 gradient of ones is exact in float32 too), to float64's rounding; a gradient
    # rounded to float32 on the way would be 1e-8 off.
    derivative = activation.backward(torch.ones(4, 5, dtype=F64))
    torch.testing.assert_close(grad, upstream * derivative, rtol=1e-10, atol=1e-14)


# -- tied weights, modes and moves ----------------------------------------------------------------


def test_a_parameter_tied_between_two_layers_counts_once_and_trains_as_torch() -> None:
    """A Parameter registered in two layers (tied weights) comes once from ``parameters()``
    (under its first name, as in torch.nn): counted once, one slot of the flat buffer, accepted
    by an optimizer, and trained as torch.nn trains the same tie."""
    torch.manual_seed(0)
    first, second = nn.Linear(3, 3, dtype=F64), nn.Linear(3, 3, dtype=F64)
    second.register_parameter("weight", first.weight)
    model = nn.Sequential(first, nn.Tanh(), second)
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.bias"]
    everywhere = [name for name, _ in model.named_parameters(remove_duplicate=False)]
    assert everywhere == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert model.num_parameters() == 15
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.bias"]
    assert flat_buffer([p.data for p in model.parameters()]) is not None
    twin = torch_twin(model)
    twin[2].weight = twin[0].weight
    assert sum(p.numel() for p in twin.parameters()) == 15
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.5)
    criterion = nn.CrossEntropyLoss()
    for _ in range(5):
        x, target = torch.randn(4, 3, dtype=F64), torch.randint(0, 3, (4,))
        optimizer.zero_grad()
        criterion(model(x), target)
        model.backward(criterion.backward())
        optimizer.step()
        twin_optimizer.zero_grad()
        torch.nn.functional.cross_entropy(twin(x), target).backward()
        twin_optimizer.step()
    assert_close(first.weight.data, twin[0].weight.detach())
    assert second.weight.data is first.weight.data
    assert_close(second.bias.data, twin[2].bias.detach())  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", ["no", 0, 1, None])
def test_train_takes_a_bool(mode: object) -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    with pytest.raises(TypeError, match=r"Sequential\.train: mode must be True or False, got"):
        model.train(mode)  # type: ignore[arg-type]
    assert all(module.training for _, module in model.named_modules())


def test_to_takes_a_dtype_as_its_first_argument() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    assert model.to(F64) is model
    assert {p.data.dtype for p in model.parameters()} == {F64}
    assert model[1].running_mean.dtype == F64  # type: ignore[union-attr]
    assert flat_buffer([p.data for p in model.parameters()]) is not None
    with pytest.raises(TypeError, match=r"Sequential\.to: got two dtypes, torch\.float32 and"):
        model.to(torch.float32, torch.float16)
    assert {p.data.dtype for p in model.parameters()} == {F64}


def test_moving_part_of_a_model_keeps_or_restores_one_flat_buffer() -> None:
    """A move of a part that changes nothing does nothing (it used to copy the part out of the
    model's buffer, for good); after a real move of a part, moving the model makes it one buffer
    again, so that an optimizer's step is one operation again."""
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
    values = [p.data for p in model.parameters()]
    model[0].to(dtype=torch.float32)
    model[0].to("cpu")
    assert all(p.data is v for p, v in zip(model.parameters(), values, strict=True))
    model[2].to(dtype=F64)
    assert flat_buffer([p.data for p in model.parameters()]) is None
    model.to(dtype=F64)
    assert flat_buffer([p.data for p in model.parameters()]) is not None
    assert flat_buffer([p.grad for p in model.parameters()]) is not None
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    optimizer.step()
    assert optimizer._flat is not None


def test_a_move_that_changes_nothing_keeps_every_layout() -> None:
    """A ``layout="model"`` stack (padded blocks, one per model) and a parent model whose slice
    with a step is moved: a move to where they already are changes nothing, so the stack's
    per-model optimizers and the parent's one-operation step go on working."""
    torch.manual_seed(0)
    models = [nn.mlp((3, 5, 2), "tanh", dtype=F64) for _ in range(2)]
    stack = nn.stack_models(models, layout="model")
    optimizer = optim.SGD([nn.flat_model_parameters(stack, 0)], lr=0.1)
    values = [p.data for p in stack.parameters()]
    stack.to(F64)
    stack.to("cpu", F64)
    assert all(p.data is v for p, v in zip(stack.parameters(), values, strict=True))
    before = stack[0].weight.data.clone()  # type: ignore[union-attr]
    criterion = nn.CrossEntropyLoss()
    criterion(stack(torch.randn(2, 6, 3, dtype=F64)), torch.randint(0, 2, (2, 6)))
    stack.backward(criterion.backward())
    optimizer.step()
    assert not torch.equal(stack[0].weight.data[0], before[0])  # type: ignore[union-attr]
    assert torch.equal(stack[0].weight.data[1], before[1])  # type: ignore[union-attr]
    parent = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 3))
    parent[::2].to(torch.float32)
    assert flat_buffer([p.data for p in parent.parameters()]) is not None


class _WithBuffer(nn.Module):
    """A module of one's own: a flat Sequential, a parameter of its own and a float32 buffer."""

    def __init__(self) -> None:
        super().__init__()
        layers = nn.Sequential(nn.Linear(2, 3, dtype=F64), nn.Linear(3, 1, dtype=F64))
        self.layers = self.register_module("layers", layers)
        self.scale = self.register_parameter("scale", nn.Parameter(torch.ones(1, dtype=F64)))
        self.count = self.register_buffer("count", torch.zeros(2))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input


def test_a_move_of_the_buffers_alone_keeps_the_parameters_memory() -> None:
    """Cast to the dtype its parameters already have, a module whose float32 buffer is cast
    keeps its parameters' values and gradients where they are (the same tensors, as
    ``torch.nn.Module.to`` keeps them): the flat Sequential inside was copied into new memory,
    and a module's parameter of its own too where the parameters tiled one buffer."""
    module = _WithBuffer()
    values = [(p.data, p.grad) for p in module.parameters()]
    module.to(F64)
    assert module.count.dtype is F64
    for parameter, (value, grad) in zip(module.parameters(), values, strict=True):
        assert parameter.data is value and parameter.grad is grad
    assert flat_buffer([p.data for p in module.layers.parameters()]) is not None
    alone = nn.Linear(2, 3, dtype=F64)
    alone.register_buffer("count", torch.zeros(2))
    weight = alone.weight.data
    alone.to(F64)
    assert alone.weight.data is weight and alone.count.dtype is F64
    module.to(torch.float32)  # (a cast of the parameters moves them, each run kept flat)
    assert {p.data.dtype for p in module.parameters()} == {torch.float32}
    assert flat_buffer([p.data for p in module.layers.parameters()]) is not None


def test_stack_models_refuses_tied_parameters() -> None:
    first, second = nn.Linear(3, 3), nn.Linear(3, 3)
    second.register_parameter("weight", first.weight)
    tied = nn.Sequential(first, nn.Tanh(), second)
    with pytest.raises(ValueError, match=r"stack_models: models\[1\] ties '2\.weight' to '0\.w"):
        nn.stack_models([nn.mlp((3, 3, 3), "tanh"), tied])


def test_pytorch_shorthands_for_to() -> None:
    """``float()``, ``double()``, ``half()``, ``bfloat16()``, ``cpu()`` and ``cuda()`` are
    ``to(...)``, as in PyTorch."""
    model = nn.mlp((2, 3, 2), "tanh")
    assert model.double() is model and all(
        p.data.dtype == torch.float64 for p in model.parameters()
    )
    assert model.half() is model and all(p.data.dtype == torch.float16 for p in model.parameters())
    assert model.bfloat16() is model
    assert all(p.data.dtype == torch.bfloat16 for p in model.parameters())
    assert model.float() is model and all(p.data.dtype == torch.float32 for p in model.parameters())
    assert model.cpu() is model and all(p.data.device.type == "cpu" for p in model.parameters())
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"cuda:0 is not available"):
            model.cuda(0)
    with pytest.raises(TypeError, match=r"Sequential\.cuda: device must be an index"):
        model.cuda(1.5)  # type: ignore[arg-type]


def test_a_module_called_takes_its_forwards_arguments_by_name() -> None:
    """A module called passes its arguments to ``forward`` by position or by name, as a type
    checker reads the call (the arguments of the class's ``forward``) and as torch.nn's
    modules do: ``Linear(input=x)``, a Sequential, a built-in loss and a loss of one's own
    called by name give the positional call's values, and backward follows (``Module.__call__``
    and ``Loss.__call__`` took positions only: 'got an unexpected keyword argument')."""

    class Halved(nn.Loss):
        def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            self._difference = prediction - target
            return self._difference.square().sum() / 2

        def backward(self, gradwrtoutput: torch.Tensor | None = None) -> torch.Tensor:
            return self._difference.clone()

    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=F64)
    target = torch.randn(4, 2, dtype=F64)
    for module in (nn.Linear(3, 2).double(), nn.Sequential(nn.Linear(3, 2), nn.Tanh()).double()):
        expected, expected_gradient = module(x), module.backward(target).clone()
        assert torch.equal(module(input=x), expected)
        assert torch.equal(module.backward(target), expected_gradient)
    prediction = x[:, :2]
    for loss, gradient in (
        (nn.MSELoss(), 2 * (prediction - target) / len(prediction)),
        (Halved(), prediction - target),
    ):
        expected = loss(prediction, target)
        assert torch.equal(loss(prediction=prediction, target=target), expected)
        assert torch.equal(loss(prediction, target=target), expected)
        torch.testing.assert_close(loss.backward(), gradient, rtol=1e-15, atol=0)


@pytest.mark.parametrize("batch", [1025, 4096, 100_000])
@pytest.mark.parametrize("path", ["layer", "planned chain"])
def test_linear_bias_gradient_of_a_large_float32_batch_keeps_its_digits(
    batch: int, path: str
) -> None:
    """Above ``SUMMED_BY_PRODUCT`` samples the bias gradient is the batch's ``sum`` added in
    (PyTorch's reduction, autograd's bias gradient): the matrix-vector product with ones added
    the rows in a few running sums, 1.7e-6 off (relative) at 4096 samples in float32 and
    7.9e-6 at a million, where autograd's stays within 3e-7. Through a layer alone and
    through a planned ``Sequential`` (whose calls are the layer's own)."""
    from minidl.nn.linear import SUMMED_BY_PRODUCT

    assert batch > SUMMED_BY_PRODUCT
    torch.manual_seed(0)
    x, grad = torch.randn(batch, 3), torch.rand(batch, 2) + 0.5
    layer = nn.Linear(3, 2)
    model = nn.Sequential(layer, nn.Tanh()) if path == "planned chain" else layer
    calls = 3 if path == "planned chain" else 1  # (a chain plans its calls by its third)
    for _ in range(calls):
        layer.bias.grad.zero_()  # type: ignore[union-attr]
        output = model(x)
        model.backward(grad)
    # (the layer's output gradient: through Tanh, g (1 - y^2), each rounded in float32 within
    # an epsilon or two, well below the tolerance)
    through = grad.double() if path == "layer" else grad.double() * (1 - output.double() ** 2)
    exact = through.sum(0)
    torch.testing.assert_close(layer.bias.grad.double(), exact, rtol=1e-6, atol=0)  # type: ignore[union-attr]


def test_a_buffer_shared_by_two_modules_stays_shared_when_moved() -> None:
    """Running statistics registered in two batch norms (as from_torch keeps them, "which
    both update") were moved once for each by ``.to()``: after ``.double()`` each held its own
    tensor, updated apart, and state_dict listed both. One moved tensor is shared now."""
    first, second = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    second.running_mean = second.register_buffer("running_mean", first.running_mean)
    model = nn.Sequential(first, second)
    keys = list(model.state_dict())
    model.double()
    assert first.running_mean is second.running_mean
    assert first.running_mean.dtype == torch.float64
    assert list(model.state_dict()) == keys
    model(torch.randn(8, 3, dtype=F64))
    assert first.running_mean is second.running_mean
