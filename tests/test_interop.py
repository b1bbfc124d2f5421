"""minidl.interop: to_torch and from_torch give models with the same outputs (1e-12, float64)
and the same gradients (minidl backward vs torch autograd), keep dtype, device and mode, round
trips are lossless on every parameter and buffer, and unsupported layers are named in errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.nn.utils import prune

from minidl import nn
from minidl.interop import ConversionError, TorchResidual, from_torch, to_torch
from minidl.nn.flat import flat_buffer

F64 = torch.float64
TOL = 1e-12


def _close(actual: Tensor, expected: Tensor, what: str, tol: float = TOL) -> None:
    expected = expected.detach()
    assert actual.shape == expected.shape, what
    # Relative to max(|expected|, 1): a gradient that is exactly zero in exact arithmetic (the
    # bias before a batch norm) is rounding noise in both frameworks.
    scale = max(float(expected.abs().max()), 1.0)
    error = float((actual - expected).abs().max()) / scale
    assert error <= tol, f"{what}: error {error:.3g}"


def _minidl_model(dtype: torch.dtype = F64) -> nn.Sequential:
    """Every convertible minidl layer, a nested Sequential and a Residual included."""
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Linear(5, 8, dtype=dtype),
        nn.BatchNorm1d(8, eps=1e-3, momentum=0.3, dtype=dtype),
        nn.LeakyReLU(0.2),
        nn.Sequential(nn.Linear(8, 8, bias=False, dtype=dtype), nn.ELU(0.7), nn.Identity()),
        nn.Residual(nn.Sequential(nn.Linear(8, 8, dtype=dtype), nn.Tanh())),
        nn.Dropout(0.25),
        nn.SELU(),
        nn.Linear(8, 6, dtype=dtype),
        nn.BatchNorm1d(6, affine=False, dtype=dtype),
        nn.Sigmoid(),
        nn.GELU(approximate="tanh"),
        nn.Linear(6, 4, dtype=dtype),
        nn.ReLU(),
        nn.SiLU(),
        nn.GELU(),
        nn.Softmax(dim=1),
        nn.Linear(4, 3, dtype=dtype),
        nn.LogSoftmax(dim=1),
    )


def _torch_model(dtype: torch.dtype = F64) -> torch.nn.Sequential:
    """Every convertible torch.nn layer, nested, with non-default options."""
    torch.manual_seed(3)
    tnn = torch.nn
    model = tnn.Sequential(
        tnn.Linear(5, 8, dtype=dtype),
        tnn.BatchNorm1d(8, eps=1e-4, momentum=0.2, dtype=dtype),
        tnn.ELU(alpha=1.3),
        tnn.Sequential(
            tnn.Linear(8, 8, bias=False, dtype=dtype),
            tnn.LeakyReLU(negative_slope=0.05),
            tnn.Sequential(tnn.Dropout(0.1), tnn.Identity()),
        ),
        TorchResidual(tnn.Sequential(tnn.Linear(8, 8, dtype=dtype), tnn.SELU())),
        tnn.BatchNorm1d(8, affine=False, momentum=0.5, dtype=dtype),
        tnn.Tanh(),
        tnn.GELU(approximate="tanh"),
        tnn.Linear(8, 4, dtype=dtype),
        tnn.Sigmoid(),
        tnn.SiLU(),
        tnn.Softmax(dim=1),
        tnn.Linear(4, 4, dtype=dtype),
        tnn.ReLU(),
        tnn.GELU(),
        tnn.Linear(4, 3, dtype=dtype),
        tnn.LogSoftmax(dim=1),
    )
    with torch.no_grad():  # non-trivial batch-norm parameters and statistics
        for module in model.modules():
            if isinstance(module, tnn.BatchNorm1d):
                if module.affine:
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.normal_()
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked = torch.tensor(7)
    return model


def _input(rows: int = 9, seed: int = 5) -> Tensor:
    return torch.randn(rows, 5, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _compare(minidl_model: nn.Module, torch_model: torch.nn.Module, training: bool) -> None:
    """Outputs, input gradient and every parameter gradient, minidl backward vs torch autograd,
    then the buffers after the forward (the running statistics in training mode)."""
    minidl_model.train(training)
    torch_model.train(training)
    x = _input()
    x_leaf = x.clone().requires_grad_()
    torch.manual_seed(9)  # the same dropout masks in both
    expected = torch_model(x_leaf)
    torch.manual_seed(9)
    minidl_model.zero_grad()
    output = minidl_model(x)
    _close(output, expected, "output")
    upstream = torch.randn(expected.shape, dtype=F64, generator=torch.Generator().manual_seed(1))
    (expected * upstream).sum().backward()
    assert x_leaf.grad is not None
    _close(minidl_model.backward(upstream), x_leaf.grad, "input gradient")
    torch_parameters = dict(torch_model.named_parameters())
    minidl_parameters = dict(minidl_model.named_parameters())
    assert minidl_parameters.keys() == torch_parameters.keys()
    for name, parameter in minidl_parameters.items():
        grad = torch_parameters[name].grad
        assert grad is not None, name
        _close(parameter.grad, grad, f"gradient of {name}")
    torch_buffers = dict(torch_model.named_buffers())
    for name, buffer in minidl_model.named_buffers():
        if buffer.is_floating_point():
            _close(buffer, torch_buffers[name], f"buffer {name}")
        else:
            assert torch.equal(buffer, torch_buffers[name]), name


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_to_torch_gives_the_same_outputs_and_gradients(training: bool) -> None:
    model = _minidl_model()
    twin = to_torch(model)
    assert isinstance(twin, torch.nn.Sequential)
    for name, value in model.state_dict().items():
        assert torch.equal(twin.state_dict()[name], value), name
    _compare(model, twin, training)


def test_state_dict_keys_come_in_pytorchs_order() -> None:
    """Module by module, each one's parameters before its buffers, as ``torch.nn`` gives them
    (code that walks two state dicts side by side pairs the same entries)."""
    model = nn.Sequential(
        nn.Linear(2, 3),
        nn.BatchNorm1d(3),
        nn.Tanh(),
        nn.Residual(nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 3))),
        nn.Linear(3, 2),
    )
    assert list(model.state_dict()) == list(to_torch(model).state_dict())
    assert list(from_torch(to_torch(model)).state_dict()) == list(model.state_dict())


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_from_torch_gives_the_same_outputs_and_gradients(training: bool) -> None:
    original = _torch_model()
    model = from_torch(original)
    assert isinstance(model, nn.Sequential)
    for name, value in original.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    _compare(model, original, training)


def test_a_torch_module_used_at_several_places_is_converted_at_each() -> None:
    """torch runs a module object as often as it appears (an activation reused is common);
    named_children() lists it once. Each place becomes its own minidl module, with the same
    outputs and gradients; a module with parameters at two places (shared weights) is refused,
    naming both places."""
    generator = torch.Generator().manual_seed(0)
    tanh, relu = torch.nn.Tanh(), torch.nn.ReLU()
    layers = [torch.nn.Linear(5, 5), tanh, torch.nn.Linear(5, 5), relu, torch.nn.Linear(5, 5)]
    original = torch.nn.Sequential(*layers, tanh, torch.nn.Sequential(relu, torch.nn.Linear(5, 2)))
    original = original.to(F64)
    for parameter in original.parameters():
        parameter.data.normal_(generator=generator)
    model = from_torch(original)
    assert [type(m).__name__ for m in model][:6] == [
        "Linear",
        "Tanh",
        "Linear",
        "ReLU",
        "Linear",
        "Tanh",
    ]
    assert len({id(m) for _, m in model.named_modules()}) == len(list(model.named_modules()))
    _compare(model, original, training=True)
    shared = torch.nn.Linear(2, 2)
    with pytest.raises(
        ConversionError,
        match=r"^from_torch: the layer at '2\.0' is the Linear already at '0': one module object "
        r"used at two places, .*; share its tensors instead, two modules holding the same "
        r"Parameter \(second\.weight = first\.weight\) or buffer, which converts",
    ):
        from_torch(torch.nn.Sequential(shared, torch.nn.Tanh(), torch.nn.Sequential(shared)))
    # Buffers alone (it was split into two BatchNorm1d tracking their statistics apart).
    statistics = torch.nn.BatchNorm1d(3, affine=False)
    with pytest.raises(
        ConversionError,
        match=r"^from_torch: the layer at '3' is the BatchNorm1d already at '1': one module "
        r"object used at two places",
    ):
        from_torch(
            torch.nn.Sequential(
                torch.nn.Linear(3, 3), statistics, torch.nn.Linear(3, 3), statistics
            )
        )


def test_layer_options_survive_conversion() -> None:
    model = from_torch(_torch_model())
    assert isinstance(model, nn.Sequential)
    norm, elu, inner = model[1], model[2], model[3]
    assert isinstance(norm, nn.BatchNorm1d)
    assert (norm.eps, norm.momentum, norm.affine) == (1e-4, 0.2, True)
    assert isinstance(elu, nn.ELU) and elu.alpha == 1.3
    assert isinstance(inner, nn.Sequential)
    leaky = inner[1]
    assert isinstance(leaky, nn.LeakyReLU) and leaky.negative_slope == 0.05
    back = to_torch(model)
    assert isinstance(back, torch.nn.Sequential)
    torch_norm = back[5]
    assert isinstance(torch_norm, torch.nn.BatchNorm1d)
    assert (torch_norm.affine, torch_norm.momentum) == (False, 0.5)
    torch_dropout = back[3][2][0]
    assert isinstance(torch_dropout, torch.nn.Dropout) and torch_dropout.p == 0.1
    softmax = from_torch(torch.nn.LogSoftmax(dim=-1))
    assert isinstance(softmax, nn.LogSoftmax) and softmax.dim == 1


def test_round_trips_are_lossless() -> None:
    model = _minidl_model()
    model(_input())  # move the running statistics away from their initial values
    model.eval()
    again = from_torch(to_torch(model))
    assert again.training is False
    assert all(not module.training for _, module in again.named_modules())
    state, state_again = model.state_dict(), again.state_dict()
    assert state.keys() == state_again.keys()
    for name, value in state.items():
        assert torch.equal(state_again[name], value), name
        assert state_again[name].dtype == value.dtype, name
    assert repr(again) == repr(model)

    original = _torch_model()
    twice = to_torch(from_torch(original))
    torch_state, torch_state_twice = original.state_dict(), twice.state_dict()
    assert torch_state.keys() == torch_state_twice.keys()
    for name, value in torch_state.items():
        assert torch.equal(torch_state_twice[name], value), name
    assert repr(twice) == repr(original)


def test_every_module_keeps_its_own_mode() -> None:
    """A batch norm frozen in evaluation mode inside a model that trains (a common way to
    fine-tune) stays frozen: a recursive train() at the top used to put every module in the
    model's mode. Both ways, nested modules included, with the outputs to match."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(3, 4, dtype=F64),
        nn.BatchNorm1d(4, dtype=F64),
        nn.Residual(nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 4, dtype=F64))),
        nn.Tanh(),
    )
    model.train()
    model[1].eval()
    model[2].block[0].eval()
    model[1].running_mean.data.uniform_()  # not the batch's statistics: a wrong mode shows
    modes = [module.training for _, module in model.named_modules()]
    twin = to_torch(model)
    assert [module.training for module in twin.modules()] == modes
    back = from_torch(twin)
    assert [module.training for _, module in back.named_modules()] == modes
    x = torch.randn(5, 3, dtype=F64)
    with torch.no_grad():
        expected = twin(x)
    assert torch.allclose(model(x), expected, rtol=0, atol=1e-12)
    assert torch.allclose(back(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_are_kept(dtype: torch.dtype) -> None:
    model = _minidl_model(dtype)
    twin = to_torch(model)
    assert {p.dtype for p in twin.parameters()} == {dtype}
    assert {p.device for p in twin.parameters()} == {torch.device("cpu")}
    back = from_torch(_torch_model(dtype))
    assert {p.dtype for p in back.parameters()} == {dtype}
    assert (
        {b.dtype for b in back.buffers() if b.is_floating_point()} == {dtype}
        if hasattr(back, "buffers")
        else True
    )
    assert {b.dtype for _, b in back.named_buffers() if b.is_floating_point()} == {dtype}
    back.eval()
    assert back(_input().to(dtype)).dtype == dtype


def test_converting_does_not_touch_the_global_random_stream() -> None:
    original = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    from_torch(original)
    assert torch.equal(torch.rand(3), expected)


# Every layer that to_torch builds, each alone (a Linear's torch.nn init used to draw from the
# global generator) and all of them together.
TO_TORCH_LAYERS = {
    "linear": lambda: nn.Linear(3, 3),
    "linear-no-bias": lambda: nn.Linear(3, 3, bias=False),
    "batchnorm": lambda: nn.BatchNorm1d(3),
    "batchnorm-not-affine": lambda: nn.BatchNorm1d(3, affine=False),
    "residual": lambda: nn.Residual(nn.Sequential(nn.Linear(3, 3), nn.Tanh())),
    "leakyrelu": lambda: nn.LeakyReLU(0.1),
    "elu": lambda: nn.ELU(0.5),
    "dropout": lambda: nn.Dropout(0.5),
    "softmax": lambda: nn.Softmax(dim=1),
    "logsoftmax": lambda: nn.LogSoftmax(dim=1),
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "gelu-tanh": lambda: nn.GELU("tanh"),
    "silu": nn.SiLU,
    "identity": nn.Identity,
    "mlp": lambda: nn.mlp((2, 3, 2), "tanh"),
    "every-layer": _minidl_model,
}


@pytest.mark.parametrize("make", list(TO_TORCH_LAYERS.values()), ids=list(TO_TORCH_LAYERS))
def test_to_torch_does_not_touch_the_global_random_stream(make: Callable[[], nn.Module]) -> None:
    """to_torch copies every value: torch.nn's initialisation of the layers it builds must not
    consume torch's global random stream (a run converted mid-way would draw other numbers)."""
    model = make()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    twin = to_torch(model)
    assert torch.equal(torch.rand(3), expected)
    for name, value in model.state_dict().items():
        assert torch.equal(twin.state_dict()[name], value), name


def test_a_converted_model_trains_like_the_original() -> None:
    """Flat parameters: the converted minidl Sequential works with the optimizers."""
    from minidl import optim

    original = _torch_model()
    model = from_torch(original)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch_optimizer = torch.optim.SGD(original.parameters(), lr=0.1, momentum=0.9)
    for step in range(3):
        x = _input(seed=step)
        torch.manual_seed(step)
        optimizer.zero_grad()
        output = model(x)
        model.backward(torch.ones_like(output))
        optimizer.step()
        torch.manual_seed(step)
        torch_optimizer.zero_grad()
        original(x).sum().backward()
        torch_optimizer.step()
    for name, parameter in model.named_parameters():
        _close(parameter.data, dict(original.named_parameters())[name], name)


def test_a_cumulative_batch_norm_converts_both_ways_and_goes_on_averaging() -> None:
    """``BatchNorm1d(momentum=None)`` (refused by from_torch before): converted after three
    batches, each way and back, it keeps ``momentum=None`` and its statistics and batch count
    bit for bit, and its next batch is weighted 1/4 on both sides."""
    torch_norm = torch.nn.BatchNorm1d(5, momentum=None, dtype=torch.float64)
    for step in range(3):
        torch_norm(_input(seed=step) + step)
    norm = from_torch(torch_norm)
    assert isinstance(norm, nn.BatchNorm1d) and norm.momentum is None
    back = to_torch(norm)
    assert isinstance(back, torch.nn.BatchNorm1d) and back.momentum is None
    for name, value in torch_norm.state_dict().items():
        assert torch.equal(norm.state_dict()[name], value), name
        assert torch.equal(back.state_dict()[name], value), name
    x = _input(seed=9) * 3
    before = norm.running_mean.clone()
    for module in (torch_norm, norm, back):
        module(x)
    assert int(norm.num_batches_tracked) == 4
    _close(norm.running_mean, (3 * before + x.mean(0)) / 4, "the mean of four batch means")
    for module in (torch_norm, back):
        _close(norm.running_mean, module.running_mean, "running mean")
        _close(norm.running_var, module.running_var, "running var")


class _Custom(nn.Module):
    def forward(self, input: Tensor) -> Tensor:
        return input

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


def test_unsupported_layers_are_named_with_their_path() -> None:
    torch_model = torch.nn.Sequential(
        torch.nn.Linear(3, 3), torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Conv1d(1, 1, 1))
    )
    with pytest.raises(ConversionError, match=r"from_torch: .* at '1\.1' of type .*Conv1d"):
        from_torch(torch_model)
    with pytest.raises(ConversionError, match=r"at '0' of type .*Softmax \(dim=0"):
        from_torch(torch.nn.Sequential(torch.nn.Softmax(dim=0)))
    with pytest.raises(ConversionError, match=r"track_running_stats=False"):
        from_torch(torch.nn.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(ConversionError, match=r"cannot convert the model itself, of type .*Mish"):
        from_torch(torch.nn.Mish())
    stack = nn.stack_models([nn.mlp((2, 3, 2)) for _ in range(2)])
    with pytest.raises(
        ConversionError,
        match=r"to_torch: cannot convert the layer at '0' of type .*BatchedLinear \(a stack of "
        r"models: convert each, from minidl\.nn\.unstack_model\(stack, index\)\)",
    ):
        to_torch(stack)
    to_torch(nn.unstack_model(stack, 1))
    model = nn.Sequential(nn.Linear(2, 2), nn.Residual(nn.Sequential(nn.Tanh(), _Custom())))
    with pytest.raises(ConversionError, match=r"to_torch: .* at '1\.block\.1' of type .*_Custom"):
        to_torch(model)
    with pytest.raises(TypeError, match="to_torch: expected a minidl Module"):
        to_torch(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"from_torch: expected a torch\.nn\.Module"):
        from_torch(nn.Linear(2, 2))  # type: ignore[arg-type]


def _gelu_set_to(approximate: object) -> torch.nn.GELU:
    """A ``torch.nn.GELU`` whose ``approximate`` was set after construction, which torch does
    not check (its functional refuses it at the first forward)."""
    layer = torch.nn.GELU()
    layer.approximate = approximate  # type: ignore[assignment]
    return layer


@pytest.mark.parametrize(
    ("layer", "fragment"),
    [
        (
            torch.nn.LeakyReLU(float("inf")),
            "LeakyReLU: negative_slope must be a finite number, got inf",
        ),
        (torch.nn.ELU(float("nan")), "ELU: alpha must be a finite number, got nan"),
        (torch.nn.Dropout(1.0), "Dropout: p must be in [0, 1), got 1.0"),
        (torch.nn.BatchNorm1d(3, momentum=1.5), "BatchNorm1d: momentum"),
        (_gelu_set_to("exact"), "GELU: approximate must be 'none' or 'tanh', got 'exact'"),
    ],
    ids=["leakyrelu", "elu", "dropout", "batchnorm", "gelu"],
)
def test_settings_that_minidl_refuses_are_named_with_their_path(
    layer: torch.nn.Module, fragment: str
) -> None:
    """A torch.nn layer whose settings minidl's constructor refuses (a negative slope, ELU's
    alpha <= 0, p = 1) is a ConversionError naming its path and type, with minidl's reason; it
    used to be the constructor's plain ValueError, with neither."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Sequential(torch.nn.Tanh(), layer))
    kind = type(layer)
    with pytest.raises(ConversionError) as info:
        from_torch(model)
    message = str(info.value)
    assert message.startswith(
        f"from_torch: cannot convert the layer at '1.1' of type {kind.__module__}."
        f"{kind.__qualname__} ("
    ), message
    assert fragment in message, message
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(ConversionError, match=r"^from_torch: cannot convert the model itself, of"):
        from_torch(layer)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_converting_cuda_models_does_not_touch_the_device_random_stream() -> None:
    model = _minidl_model().to(device=torch.device("cuda"))
    state = torch.cuda.get_rng_state()
    twin = to_torch(model)
    from_torch(twin)
    assert torch.equal(torch.cuda.get_rng_state(), state)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_models_stay_on_their_device() -> None:
    cuda = torch.device("cuda")
    model = _minidl_model().to(device=cuda)
    twin = to_torch(model)
    assert {p.device.type for p in twin.parameters()} == {"cuda"}
    back = from_torch(twin)
    assert {p.device.type for p in back.parameters()} == {"cuda"}
    assert {b.device.type for _, b in back.named_buffers()} == {"cuda"}
    back.eval()
    twin.eval()
    x = _input().to(cuda)
    _close(back(x), twin(x), "output on the device")


def test_tied_parameters_stay_tied_both_ways() -> None:
    """A Parameter in two modules (tied weights, also inside a Residual) is one torch Parameter
    in the twin (the same count, outputs and gradients), and a torch model's tied weights come
    back as one minidl Parameter, in one flat buffer."""
    torch.manual_seed(0)
    first, second = nn.Linear(4, 4, dtype=torch.float64), nn.Linear(4, 4, dtype=torch.float64)
    second.register_parameter("weight", first.weight)
    model = nn.Sequential(first, nn.Tanh(), nn.Residual(nn.Sequential(second, nn.Tanh())))
    twin = to_torch(model)
    assert twin[2].block[0].weight is twin[0].weight
    assert sum(p.numel() for p in twin.parameters()) == model.num_parameters() == 24
    x, target = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0])
    criterion = nn.CrossEntropyLoss()
    criterion(model(x), target)
    model.backward(criterion.backward())
    torch.nn.functional.cross_entropy(twin(x), target).backward()
    for mine, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-12, atol=1e-14)
    back = from_torch(twin)
    assert back[2].block[0].weight is back[0].weight  # type: ignore[union-attr]
    assert list(back.state_dict()) == list(model.state_dict())
    assert flat_buffer([p.data for p in back.parameters()]) is not None
    assert torch.equal(back(x), model(x))
    # Tied inside the block of a Residual that is the model itself: the block's Sequential was
    # left with a hole in its buffer (its copy of the tied weight), so not flat.
    residual = nn.Residual(nn.Sequential(first, nn.Tanh(), second))
    again = from_torch(to_torch(residual))
    assert again.block[2].weight is again.block[0].weight  # type: ignore[index]
    assert flat_buffer([p.data for p in again.parameters()]) is not None
    assert flat_buffer([p.grad for p in again.parameters()]) is not None
    assert again.num_parameters() == 4 * 4 + 4 + 4
    assert torch.equal(again(x), residual(x))


def test_meta_models_convert_both_ways() -> None:
    """A model on the meta device (shapes without values, to plan memory say) keeps its device
    through both conversions; ``from_torch`` asked for a generator on it, which meta has not."""
    linear = from_torch(torch.nn.Linear(2, 3, device="meta"))
    assert isinstance(linear, nn.Linear) and linear.weight.data.device.type == "meta"
    model = nn.mlp((2, 4, 2), "tanh", device="meta")
    back = from_torch(to_torch(model))
    assert repr(back) == repr(model)
    assert all(p.data.device.type == "meta" for p in back.parameters())
    assert [p.data.shape for p in back.parameters()] == [p.data.shape for p in model.parameters()]


def _hooked(kind: str) -> torch.nn.Module:
    """A Linear(3, 3) with one hook of ``kind``, each of which changes what it computes."""
    layer = torch.nn.Linear(3, 3)
    if kind == "forward":
        layer.register_forward_hook(lambda module, inputs, output: 2 * output)
    elif kind == "forward-pre":
        layer.register_forward_pre_hook(lambda module, inputs: (3 * inputs[0],))
    elif kind == "backward":
        layer.register_full_backward_hook(lambda module, grad_in, grad_out: (0 * grad_in[0],))
    elif kind == "backward-pre":
        layer.register_full_backward_pre_hook(lambda module, grad_out: (0 * grad_out[0],))
    elif kind == "prune":  # a forward pre-hook computes weight from weight_orig and a mask
        prune.l1_unstructured(layer, "weight", 0.5)
    else:  # the old weight_norm: a forward pre-hook computes weight from weight_g and weight_v
        with pytest.warns(FutureWarning):
            torch.nn.utils.weight_norm(layer)
    return layer


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("forward", "a forward hook, _hooked.<locals>.<lambda>,"),
        ("forward-pre", "a forward pre-hook, _hooked.<locals>.<lambda>,"),
        ("backward", "a backward hook, _hooked.<locals>.<lambda>,"),
        ("backward-pre", "a backward pre-hook, _hooked.<locals>.<lambda>,"),
        ("weight-norm", "a forward pre-hook, WeightNorm,"),
        ("prune", "a forward pre-hook, L1Unstructured,"),
    ],
)
def test_torch_modules_with_hooks_are_refused(kind: str, fragment: str) -> None:
    """minidl's modules have no hooks: a hooked torch module used to convert without its hook,
    into a model with other outputs (a forward hook doubling them, the old weight_norm's
    weight) or other gradients, without a word."""
    model = torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Sequential(_hooked(kind)))
    with pytest.raises(ConversionError) as info:
        from_torch(model)
    message = str(info.value)
    assert message.startswith(
        "from_torch: cannot convert the layer at '1.0' of type torch.nn.modules.linear.Linear "
        f"(it has {fragment} which minidl cannot carry"
    ), message
    way_out = {
        "weight-norm": "torch.nn.utils.remove_weight_norm(layer)",
        "prune": "torch.nn.utils.prune.remove(layer, name)",
    }.get(kind, "the handle that registered it has remove()")
    assert message.endswith(f"; remove it ({way_out}) first)"), message
    outer = torch.nn.Sequential(torch.nn.Linear(3, 3))
    handle = outer.register_forward_hook(lambda module, inputs, output: output + 1)
    with pytest.raises(
        ConversionError,
        match=r"^from_torch: cannot convert the model itself, of type .*Sequential \(it has a "
        r"forward hook",
    ):
        from_torch(outer)
    handle.remove()
    assert isinstance(from_torch(outer), nn.Sequential)


def test_parametrized_torch_layers_are_refused_with_a_way_out() -> None:
    layer = torch.nn.utils.parametrizations.orthogonal(torch.nn.Linear(3, 3))
    model = torch.nn.Sequential(torch.nn.Tanh(), layer)
    with pytest.raises(
        ConversionError,
        match=r"^from_torch: cannot convert the layer at '1' of type .*ParametrizedLinear \(a "
        r"parametrized layer: torch\.nn\.utils\.parametrize\.remove_parametrizations\(layer, "
        r"name\) first",
    ):
        from_torch(model)
    x = torch.randn(4, 3)
    expected = model(x).detach()
    torch.nn.utils.parametrize.remove_parametrizations(layer, "weight")
    torch.testing.assert_close(from_torch(model)(x), expected, rtol=0, atol=0)


def _with_tensor(module: torch.nn.Module, kind: str, name: str) -> torch.nn.Module:
    if kind == "parameter":
        module.register_parameter(name, torch.nn.Parameter(torch.ones(3)))
    else:
        module.register_buffer(name, torch.ones(3), persistent=kind == "buffer")
    return module


@pytest.mark.parametrize("kind", ["parameter", "buffer", "non-persistent buffer"])
def test_tensors_that_the_other_side_has_not_are_refused(kind: str) -> None:
    """A parameter or buffer registered by hand on a layer (or on a Sequential) has no place in
    the converted layer: it used to be dropped without a word, so that the round trip lost it
    and the state dicts of the two models no longer matched."""
    cases = [
        (_with_tensor(torch.nn.Linear(3, 3), kind, "mask"), "the model itself,", "linear.Linear"),
        (
            _with_tensor(torch.nn.BatchNorm1d(3), kind, "mask"),
            "the model itself,",
            "batchnorm.BatchNorm1d",
        ),
        (
            torch.nn.Sequential(
                torch.nn.Linear(3, 3), _with_tensor(torch.nn.Sequential(), kind, "mask")
            ),
            "the layer at '1'",
            "container.Sequential",
        ),
    ]
    for model, where, name in cases:
        with pytest.raises(ConversionError) as info:
            from_torch(model)
        assert str(info.value) == (
            f"from_torch: cannot convert {where} of type torch.nn.modules.{name} (parameters or "
            f"buffers that minidl's {name.split('.')[1]} has not: ['mask'])"
        )
    linear = nn.Linear(3, 3)
    if kind == "parameter":
        linear.register_parameter("scale", nn.Parameter(torch.ones(3)))
    else:
        linear.register_buffer("scale", torch.ones(3))
    tanh = nn.Tanh()
    tanh.register_buffer("scale", torch.ones(3))
    # (a batch norm's buffer raised AttributeError, naming no layer: its buffers were copied
    # by name into the torch layer's)
    norm = nn.BatchNorm1d(3)
    if kind == "parameter":
        norm.register_parameter("scale", nn.Parameter(torch.ones(3)))
    else:
        norm.register_buffer("scale", torch.ones(3))
    for model, where, name in [
        (linear, "the model itself,", "linear.Linear"),
        (nn.Sequential(nn.Linear(3, 3), tanh), "the layer at '1'", "tanh.Tanh"),
        (nn.Sequential(nn.Linear(3, 3), norm), "the layer at '1'", "batch_norm.BatchNorm1d"),
    ]:
        with pytest.raises(ConversionError) as info:
            to_torch(model)
        assert str(info.value) == (
            f"to_torch: cannot convert {where} of type minidl.nn.{name} (parameters or buffers "
            f"that torch.nn's {name.split('.')[1]} has not: ['scale'])"
        )


def test_a_layer_whose_tensors_differ_in_dtype_or_device_is_refused() -> None:
    """A layer converts into one dtype and one device: a bias in another dtype used to be cast
    without a word (its dtype lost in the round trip), a bias on the meta device to raise
    NotImplementedError from inside the copy, naming no layer."""
    mixed = torch.nn.Linear(3, 3)
    mixed.bias = torch.nn.Parameter(torch.zeros(3, dtype=F64))
    with pytest.raises(
        ConversionError,
        match=r"^from_torch: cannot convert the layer at '1' of type .*Linear \(its tensors have "
        r"different dtypes: weight torch\.float32, bias torch\.float64; expected one\)$",
    ):
        from_torch(torch.nn.Sequential(torch.nn.Tanh(), mixed))
    norm = torch.nn.BatchNorm1d(3)
    norm.register_buffer("running_var", torch.ones(3, dtype=F64))
    with pytest.raises(ConversionError, match=r"different dtypes: .*running_var torch\.float64"):
        from_torch(norm)
    meta = torch.nn.Linear(3, 3)
    meta.bias = torch.nn.Parameter(torch.zeros(3, device="meta"))
    with pytest.raises(
        ConversionError,
        match=r"^from_torch: cannot convert the model itself, of type .*Linear \(its tensors "
        r"have different devices: weight cpu, bias meta; expected one\)$",
    ):
        from_torch(meta)
    linear = nn.Linear(3, 3)
    assert linear.bias is not None
    linear.bias.data = torch.zeros(3, dtype=F64)
    with pytest.raises(
        ConversionError,
        match=r"^to_torch: cannot convert the layer at '0' of type minidl\.nn\.linear\.Linear "
        r"\(its tensors have different dtypes: weight torch\.float32, bias torch\.float64; "
        r"expected one\)$",
    ):
        to_torch(nn.Sequential(linear))


def test_a_tensor_whose_shape_the_layer_sizes_do_not_give_is_refused() -> None:
    """A weight, bias or statistic assigned by hand in a shape the layer's sizes do not give
    used to fail inside the copy with the tensor library's RuntimeError, naming no layer, or,
    for a bias or running variance of shape (1,), to be broadcast without a word (the round
    trip then changed the state dict's shapes)."""
    wide = torch.nn.Linear(3, 4)
    wide.weight = torch.nn.Parameter(torch.randn(5, 3))
    short = torch.nn.Linear(3, 4)
    short.bias = torch.nn.Parameter(torch.randn(1))  # torch broadcasts it in its forward
    norm = torch.nn.BatchNorm1d(3)
    norm.register_buffer("running_var", torch.ones(1))
    counter = torch.nn.BatchNorm1d(3)
    counter.register_buffer("num_batches_tracked", torch.tensor([7]))
    for model, path, kind, fragment in [
        (torch.nn.Sequential(torch.nn.Tanh(), wide), "the layer at '1'", "linear.Linear",
         "its weight has shape (5, 3), where its sizes give (4, 3)"),
        (short, "the model itself,", "linear.Linear", "its bias has shape (1,), where its sizes "
         "give (4,)"),
        (norm, "the model itself,", "batchnorm.BatchNorm1d", "its running_var has shape (1,), "
         "where its sizes give (3,)"),
        (counter, "the model itself,", "batchnorm.BatchNorm1d", "its num_batches_tracked has "
         "shape (1,), where its sizes give ()"),
    ]:  # fmt: skip
        with pytest.raises(ConversionError) as info:
            from_torch(model)
        assert str(info.value) == (
            f"from_torch: cannot convert {path} of type torch.nn.modules.{kind} ({fragment})"
        )
    linear = nn.Linear(3, 4)
    linear.weight.data = torch.randn(5, 3)
    with pytest.raises(
        ConversionError,
        match=r"^to_torch: cannot convert the layer at '1' of type minidl\.nn\.linear\.Linear "
        r"\(its weight has shape \(5, 3\), where its sizes give \(4, 3\)\)$",
    ):
        to_torch(nn.Sequential(nn.Tanh(), linear))


def test_a_slice_keeps_its_names_in_torch() -> None:
    """A slice of a Sequential keeps its model's names ('2', '3', ...), in minidl as in
    torch.nn; to_torch numbered the twin's children from 0, so that the two state dicts had
    other keys (neither loaded the other's) and the ties, found by name, raised an
    AttributeError (or tied the wrong layers)."""
    torch.manual_seed(0)
    first, second = nn.Linear(3, 3, dtype=F64), nn.Linear(3, 3, dtype=F64)
    second.register_parameter("weight", first.weight)
    model = nn.Sequential(
        nn.Linear(3, 3, dtype=F64), first, nn.Tanh(), second, nn.Linear(3, 2, dtype=F64)
    )
    part = model[1:5]
    twin = to_torch(part)
    assert isinstance(twin, torch.nn.Sequential)
    assert [name for name, _ in twin.named_children()] == ["1", "2", "3", "4"]
    assert twin.get_submodule("3").weight is twin.get_submodule("1").weight
    assert list(twin.state_dict()) == ["1.weight", "1.bias", "3.weight", "3.bias", "4.weight",
                                       "4.bias"]  # fmt: skip
    for name, value in part.state_dict().items():
        assert torch.equal(twin.state_dict()[name], value), name
    twin.load_state_dict(part.state_dict(), strict=False)  # ('3.weight' is given once, as '1.')
    part.load_state_dict(twin.state_dict())
    x = torch.randn(4, 3, dtype=F64)
    with torch.no_grad():
        assert torch.equal(part(x), twin(x))
    assert [name for name, _ in to_torch(model[::2]).named_children()] == ["0", "2", "4"]


def test_tied_weights_of_named_torch_children_stay_tied() -> None:
    """from_torch numbers a Sequential's children, so its names are not the torch model's when
    those are named ('fc', 'out') or a slice's ('1', '3'): the ties, found by the torch names
    in the minidl model, raised a bare KeyError ('inner.fc2')."""
    from collections import OrderedDict

    torch.manual_seed(0)
    first, second = torch.nn.Linear(3, 3, dtype=F64), torch.nn.Linear(3, 3, dtype=F64)
    second.weight = first.weight
    named = torch.nn.Sequential(
        OrderedDict(
            fc=first,
            act=torch.nn.Tanh(),
            inner=torch.nn.Sequential(OrderedDict(fc2=second)),
            out=torch.nn.Linear(3, 2, dtype=F64),
        )
    )
    whole = torch.nn.Sequential(torch.nn.Linear(3, 3, dtype=F64), *named)
    for original in (named, whole[1:]):
        model = from_torch(original)
        assert isinstance(model, nn.Sequential)
        inner = model[2]
        assert isinstance(inner, nn.Sequential)
        assert inner[0].weight is model[0].weight  # type: ignore[union-attr]
        assert model.num_parameters() == sum(p.numel() for p in original.parameters()) == 23
        assert flat_buffer([p.data for p in model.parameters()]) is not None
        x = torch.randn(4, 3, dtype=F64)
        with torch.no_grad():
            assert torch.equal(model(x), original(x))


def _every_layer(width: int, bias: bool, dtype: torch.dtype, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(3, width, bias=bias, dtype=dtype)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(width, momentum=0.3, affine=bias, dtype=dtype))
    layers += [
        nn.ELU(0.6),
        nn.Residual(nn.Sequential(nn.Linear(width, width, bias=bias, dtype=dtype), nn.SELU())),
        nn.LeakyReLU(1.5),
        nn.Sequential(nn.Dropout(0.4), nn.Identity(), nn.Sigmoid()),
        nn.GELU(),
        nn.SiLU(),
        nn.GELU("tanh"),
        nn.Linear(width, 2, bias=bias, dtype=dtype),
        nn.Tanh(),
        nn.ReLU(),
        nn.Softmax(1),
        nn.LogSoftmax(1),
    ]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("direction", ["to_torch", "from_torch"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_random_shapes_and_batches_of_one(direction: str, bias: bool, dtype: torch.dtype) -> None:
    """Every convertible layer, in both dtypes, with and without biases, in both modes, on
    widths 1 to 6 and batches of 1 (evaluation mode, as batch norm's training needs 2) to 7:
    outputs to 1e-12 (float64) or 1e-5 (float32) and gradients to 1e-10 or 1e-4, minidl
    backward against autograd, then the state dicts loaded both ways."""
    generator = torch.Generator().manual_seed(7)
    output_tol, grad_tol = (1e-12, 1e-10) if dtype == F64 else (1e-5, 1e-4)
    for width, rows, training in [(1, 2, True), (4, 1, False), (6, 7, True), (5, 3, False)]:
        torch.manual_seed(width)
        model = _every_layer(width, bias, dtype, batch_norm=rows > 1 or not training)
        for _, buffer in model.named_buffers():
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5, generator=generator)
            else:
                buffer.fill_(3)
        twin = to_torch(model)
        if direction == "from_torch":
            model = from_torch(twin)
        converted = twin.state_dict()
        for name, value in model.state_dict().items():
            assert torch.equal(converted[name], value) and converted[name].dtype == value.dtype
        model.train(training)
        twin.train(training)
        x = torch.randn(rows, 3, dtype=dtype, generator=generator)
        x_leaf = x.clone().requires_grad_()
        torch.manual_seed(1)  # the same dropout masks in both
        expected = twin(x_leaf)
        torch.manual_seed(1)
        _close(model(x), expected, "output", output_tol)
        upstream = torch.randn(expected.shape, dtype=dtype, generator=generator)
        (expected * upstream).sum().backward()
        assert x_leaf.grad is not None
        _close(model.backward(upstream), x_leaf.grad, "input gradient", grad_tol)
        theirs = dict(twin.named_parameters())
        for name, parameter in model.named_parameters():
            grad = theirs[name].grad
            assert grad is not None, name
            _close(parameter.grad, grad, f"gradient of {name}", grad_tol)
        state = model.state_dict()
        assert state.keys() == twin.state_dict().keys()
        twin.load_state_dict(state)
        model.load_state_dict(twin.state_dict())
        for name, value in twin.state_dict().items():
            assert torch.equal(model.state_dict()[name], value), name


@pytest.mark.parametrize("direction", ["to_torch", "from_torch"])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_training_after_conversion_follows_torch_optim(direction: str, name: str) -> None:
    """60 steps of minidl's SGD (momentum, constant rate: the two conventions agree) or Adam
    against torch.optim's on the converted model, dropout and batch norm training: parameters
    and running statistics to 1e-12. (No bias before the batch norm: its gradient is rounding
    noise, which Adam's normalised step turns into steps of the full rate, apart.)"""
    from minidl import optim

    torch.manual_seed(4)
    original = torch.nn.Sequential(
        torch.nn.Linear(3, 8, bias=False),
        torch.nn.BatchNorm1d(8),
        torch.nn.Tanh(),
        torch.nn.Dropout(0.2),
        TorchResidual(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ELU(0.5))),
        torch.nn.Linear(8, 3),
    ).to(F64)
    if direction == "from_torch":
        model, twin = from_torch(original), original
    else:
        model = from_torch(original)
        twin = to_torch(model)
    if name == "sgd":
        optimizer: optim.Optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        torch_optimizer: torch.optim.Optimizer = torch.optim.SGD(
            twin.parameters(), lr=0.05, momentum=0.9
        )
    else:
        optimizer = optim.Adam(model.parameters(), lr=1e-2)
        torch_optimizer = torch.optim.Adam(twin.parameters(), lr=1e-2)
    criterion = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    for step in range(60):
        x = torch.randn(16, 3, dtype=F64, generator=generator)
        target = torch.randint(0, 3, (16,), generator=generator)
        torch.manual_seed(step)
        optimizer.zero_grad()
        criterion(model(x), target)
        model.backward(criterion.backward())
        optimizer.step()
        torch.manual_seed(step)
        torch_optimizer.zero_grad()
        torch.nn.functional.cross_entropy(twin(x), target).backward()
        torch_optimizer.step()
    theirs = twin.state_dict()
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            _close(value, theirs[key], key)
        else:
            assert torch.equal(value, theirs[key]), key


@pytest.mark.parametrize("dropped", ["weight", "bias"])
def test_a_batch_norm_without_its_weight_or_bias_converts_both_ways(dropped: str) -> None:
    """torch's ``norm.bias = None`` (what ``bias=False`` gives) or ``weight = None`` was refused
    by from_torch, and minidl's ``register_parameter(name, None)`` gave to_torch a layer with
    both, the one left out uninitialised memory: each now converts into the other's layer
    without it, computing the same."""
    torch.manual_seed(0)
    source = torch.nn.BatchNorm1d(3, dtype=torch.float64)
    with torch.no_grad():
        source.weight.uniform_(0.5, 1.5)
        source.bias.uniform_(-1.0, 1.0)
    setattr(source, dropped, None)
    model = from_torch(source)
    assert getattr(model, dropped) is None
    assert [name for name, _ in model.named_parameters()] == [
        "bias" if dropped == "weight" else "weight"
    ]
    x = torch.randn(6, 3, dtype=torch.float64)
    torch.testing.assert_close(model(x), source(x).detach(), rtol=1e-12, atol=1e-12)
    back = to_torch(model)
    assert getattr(back, dropped) is None
    kept = "bias" if dropped == "weight" else "weight"
    assert torch.equal(getattr(back, kept).detach(), getattr(source, kept).detach())
    torch.testing.assert_close(back(x).detach(), model(x), rtol=1e-12, atol=1e-12)


def test_two_torch_parameters_over_one_tensor_are_refused_as_untied() -> None:
    """Two torch Parameters over one tensor's memory (``b.weight = nn.Parameter(a.weight.data)``)
    were converted into two minidl Parameters, untied where torch updates one memory (a change
    of the one did not reach the other); minidl's Sequential refuses them so. A tie made as one
    Parameter converts tied."""
    first, second = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    second.weight = torch.nn.Parameter(first.weight.data)
    with pytest.raises(ConversionError) as error:
        from_torch(torch.nn.Sequential(first, torch.nn.ReLU(), second))
    assert str(error.value) == (
        "from_torch: parameters '0.weight' and '2.weight' are two Parameters over one tensor's "
        "memory, which a conversion would copy apart (untying them); tie them as one Parameter "
        "(weight set to the Parameter at '0.weight'), which converts tied, or give each its own "
        "tensor (.clone())"
    )
    second.weight = first.weight
    converted = from_torch(torch.nn.Sequential(first, torch.nn.ReLU(), second))
    assert converted[2].weight is converted[0].weight
