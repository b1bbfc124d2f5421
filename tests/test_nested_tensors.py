"""Nested tensors, sparse ones and meta ones where values or a shape are read.

A strided nested tensor has the strided layout that the modules' checks of a sparse tensor
let through, and reading its shape fails in torch's "Internal error: NestedTensorImpl doesn't
support sizes. Please file an issue." (or an operation fails on its backend): each place is
now refused by name before its shape is read.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from minidl import detect_anomaly, nn
from minidl.data import disk_labels, make_disk_data
from minidl.gradcheck import gradcheck

warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors")


def nested(tensor: Tensor) -> Tensor:
    """``tensor``'s rows as a (strided) nested tensor."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.nested.nested_tensor(list(tensor.unbind()))


MODULES: list[Callable[[], nn.Module]] = [
    lambda: nn.Linear(3, 3),
    nn.Tanh,
    nn.ReLU,
    nn.Sigmoid,
    nn.ELU,
    nn.SELU,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.Softmax,
    nn.LogSoftmax,
    nn.Identity,
    lambda: nn.BatchNorm1d(3),
    lambda: nn.Dropout(0.5),
    lambda: nn.Residual(nn.Linear(3, 3)),
    lambda: nn.Sequential(nn.Linear(3, 3), nn.Tanh()),
    lambda: nn.Sequential(nn.Tanh(), nn.Linear(3, 3)),
    lambda: nn.BatchedLinear(2, 3, 3),
]


def _input(module: nn.Module) -> Tensor:
    return torch.randn(2, 4, 3) if isinstance(module, nn.BatchedLinear) else torch.randn(4, 3)


@pytest.mark.parametrize("make", MODULES)
@pytest.mark.parametrize("plans", [False, True], ids=["first call", "after three steps"])
def test_a_module_refuses_a_nested_input_and_gradient_by_name(
    make: Callable[[], nn.Module], plans: bool
) -> None:
    """(After three steps a Sequential's plan has run: a plan made at the second call and
    not yet run was not asked whether it takes the input, which the Sequential checked.)"""
    module = make()
    x = _input(module)
    if plans:  # (a Sequential plans its calls by then)
        for _ in range(3):
            module.backward(torch.ones_like(module(x)))
        if isinstance(module, nn.Sequential):
            assert module._planned is not None
    name = type(module[0] if isinstance(module, nn.Sequential) else module).__name__
    if isinstance(module, nn.Residual):
        name = "Linear"
    with pytest.raises(TypeError, match=rf"^{name}: expected a dense input, got a nested tensor"):
        module(nested(x))
    output = module(x)
    gradient = nested(torch.ones_like(output))
    with pytest.raises(TypeError, match=r"expected a dense gradient, got a nested tensor"):
        module.backward(gradient)


@pytest.mark.parametrize(
    "make", [nn.MSELoss, nn.L1Loss, nn.HuberLoss, nn.BCEWithLogitsLoss, nn.CrossEntropyLoss]
)
def test_a_loss_refuses_a_nested_prediction_target_or_upstream_gradient(
    make: Callable[[], nn.Loss],
) -> None:
    criterion = make()
    name = type(criterion).__name__
    prediction = torch.randn(4, 3)
    indices = isinstance(criterion, nn.CrossEntropyLoss)
    target = torch.tensor([0, 1, 2, 0]) if indices else torch.rand(4, 3)
    with pytest.raises(TypeError, match=rf"^{name}: expected a dense prediction, got a nested"):
        criterion(nested(prediction), target)
    bad_target = torch.nested.nested_tensor([target[:2], target[2:]]) if indices else nested(target)
    with pytest.raises(TypeError, match=rf"^{name}: expected a dense target, got a nested"):
        criterion(prediction, bad_target)
    criterion(prediction, target)
    with pytest.raises(
        TypeError,
        match=rf"^{name}\.backward: the upstream gradient must be a dense tensor of one "
        "element, got a nested tensor",
    ):
        criterion.backward(torch.nested.nested_tensor([torch.tensor(1.0)]))
    with pytest.raises(TypeError, match="got a sparse_coo tensor"):
        criterion.backward(torch.ones(1).to_sparse())


def test_parameters_buffers_and_state_dicts_refuse_a_nested_tensor_by_name() -> None:
    values = nested(torch.ones(3, 2))
    with pytest.raises(TypeError, match=r"^Parameter: data is a nested tensor"):
        nn.Parameter(values)
    parameter = nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(TypeError, match=r"^Parameter: grad is a nested tensor"):
        parameter.grad = values
    with pytest.raises(TypeError, match=r"^Parameter: data is a nested tensor"):
        parameter.data = values
    layer = nn.Linear(2, 3)
    before = {name: tensor.clone() for name, tensor in layer.state_dict().items()}
    with pytest.raises(
        TypeError, match=r"^Linear\.register_buffer: expected a dense tensor for 'nb', got a nested"
    ):
        layer.register_buffer("nb", values)
    with pytest.raises(
        TypeError, match=r"^Linear\.load_state_dict: entry 'weight' is a nested tensor"
    ):
        layer.load_state_dict({"weight": values, "bias": torch.ones(3)})
    assert list(layer.state_dict()) == ["weight", "bias"]
    assert all(torch.equal(layer.state_dict()[name], before[name]) for name in before)


def test_detect_anomaly_leaves_a_refusal_to_the_module_and_reads_no_meta_values() -> None:
    """The block's check of the input ran before the module's own, and failed on a sparse or
    nested input in torch's words (and on a meta one, which works outside the block)."""
    layer = nn.Linear(2, 3)
    x = torch.rand(4, 2)
    with detect_anomaly(layer):
        with pytest.raises(TypeError, match=r"^Linear: expected a dense input, got a sparse_coo"):
            layer(x.to_sparse())
        with pytest.raises(TypeError, match=r"^Linear: expected a dense input, got a nested"):
            layer(nested(x))
    meta = nn.Sequential(nn.Linear(2, 3), nn.Tanh()).to("meta")
    with detect_anomaly(meta):
        output = meta(torch.empty(4, 2, device="meta"))
        meta.backward(torch.empty(4, 3, device="meta"))
    assert output.is_meta and output.shape == (4, 3)


def test_gradcheck_refuses_a_sparse_nested_or_meta_first_input_or_parameter() -> None:
    x = torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"^gradcheck: the first input is a sparse_coo tensor"):
        gradcheck(nn.Tanh(), x.to_sparse())
    with pytest.raises(TypeError, match=r"^gradcheck: the first input is a nested tensor"):
        gradcheck(nn.Tanh(), nested(x))
    with pytest.raises(ValueError, match=r"^gradcheck: the first input is on the meta device"):
        gradcheck(nn.Tanh(), x.to("meta"))
    with pytest.raises(ValueError, match=r"^gradcheck: parameter 'weight' is on the meta device"):
        gradcheck(nn.Linear(3, 2, dtype=torch.float64, device="meta"), x)


def test_disk_points_of_another_layout_or_without_values_are_refused_by_name() -> None:
    data = make_disk_data(10, 3, 3)
    points = torch.rand(4, 2)
    for bad, layout in [(points.to_sparse(), "sparse_coo"), (nested(points), "nested")]:
        with pytest.raises(TypeError, match=rf"^DiskData\.normalize: points .* got a {layout}"):
            data.normalize(bad)
        with pytest.raises(TypeError, match=rf"^disk_labels: points .* got a {layout}"):
            disk_labels(bad)
    with pytest.raises(ValueError, match=r"^DiskData\.normalize: points are on the meta device"):
        data.normalize(points.to("meta"))
    labels = disk_labels(points.to("meta"))
    assert labels.is_meta and labels.shape == (4,) and labels.dtype == torch.int64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_disk_labels_of_narrow_points_are_those_of_the_same_points_in_float64(
    dtype: torch.dtype,
) -> None:
    """The distance was computed in the points' own dtype: 1 490 of a million bfloat16 points
    (170 in float16) near the circle fell on the wrong side."""
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(200_000, 2, generator=generator).to(dtype)
    assert torch.equal(disk_labels(points), disk_labels(points.double()))
    point = torch.tensor([[0.7656, 0.2021]], dtype=torch.bfloat16)  # (outside, just)
    assert disk_labels(point).tolist() == [0]


def test_stacks_losses_optimizers_and_predict_refuse_a_nested_tensor_by_name() -> None:
    """Paths the first change missed: a loss that had run before (its fast path read the
    shape), a stacked prediction, StackedActivation and StackedLoss, an optimizer's state
    dict, predict, and a buffer attribute assigned by hand."""
    from minidl import optim
    from minidl.train import predict

    criterion = nn.MSELoss()
    prediction, target = torch.randn(4, 3), torch.randn(4, 3)
    criterion(prediction, target)
    with pytest.raises(TypeError, match=r"^MSELoss: expected a dense prediction, got a nested"):
        criterion(nested(prediction), target)
    with pytest.raises(TypeError, match=r"^MSELoss: expected a dense prediction, got a nested"):
        nn.MSELoss()(nested(torch.randn(2, 4, 3)), torch.randn(2, 4, 3))
    stacked = nn.StackedActivation([(nn.Tanh(), 2), (nn.ReLU(), 1)])
    with pytest.raises(
        TypeError, match=r"^StackedActivation: expected a dense input, got a nested"
    ):
        stacked(nested(torch.randn(3, 4, 5)))
    stacked(torch.randn(3, 4, 5))
    with pytest.raises(TypeError, match=r"^StackedActivation: expected a dense gradient, got a"):
        stacked.backward(nested(torch.randn(3, 4, 5)))
    losses = nn.StackedLoss([(nn.MSELoss(), 3)])
    with pytest.raises(TypeError, match=r"^StackedLoss: expected a dense prediction, got a nested"):
        losses(nested(torch.randn(3, 4, 2)), torch.randn(3, 4, 2))
    with pytest.raises(TypeError, match=r"^StackedLoss: expected a dense target, got a nested"):
        losses(torch.randn(3, 4, 2), nested(torch.randn(3, 4, 2)))
    layer = nn.Linear(2, 4)
    optimizer = optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    layer(torch.randn(3, 2))
    layer.backward(torch.ones(3, 4))
    optimizer.step()
    state = optimizer.state_dict()
    state["state"] = {name: nested(torch.zeros(2, 6)) for name in state["state"]}
    with pytest.raises(
        TypeError, match=r"^SGD\.load_state_dict: state 'momentum_buffer' is a nested tensor"
    ):
        optimizer.load_state_dict(state)
    with pytest.raises(TypeError, match=r"^predict: x must be a dense \(strided\) tensor, got a"):
        predict(layer, nested(torch.randn(3, 2)))
    norm = nn.BatchNorm1d(3)
    object.__setattr__(norm, "running_mean", nested(torch.randn(2, 3)))
    with pytest.raises(ValueError, match=r"assigned a nested tensor of torch\.float32"):
        norm.state_dict()
