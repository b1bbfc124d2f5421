"""``backward_parameters``: the parameter gradients of ``backward``, without the input gradient."""

from __future__ import annotations

import contextlib
import copy
import types
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.anomaly import detect_anomaly
from minidl.data import BatchIterator
from minidl.interop import to_torch
from minidl.train import fit
from tests.helpers import F64, assert_close


class _Spy(nn.Module):
    """The identity, counting its backward calls."""

    def __init__(self) -> None:
        super().__init__()
        self.backward_calls = 0

    def forward(self, input: Tensor) -> Tensor:
        return input

    def backward(self, grad_output: Tensor) -> Tensor:
        self.backward_calls += 1
        return grad_output


NETWORKS: dict[str, Callable[[], nn.Module]] = {
    "linear": lambda: nn.Linear(3, 4, dtype=F64),
    "linear-no-bias": lambda: nn.Linear(3, 4, bias=False, dtype=F64),
    "batched-linear": lambda: nn.BatchedLinear(3, 3, 4, dtype=F64),
    "mlp": lambda: nn.mlp((3, 5, 5, 4), "tanh", dtype=F64),
    "leading-activation": lambda: nn.Sequential(
        nn.Sigmoid(), nn.Linear(3, 5, dtype=F64), nn.ReLU(), nn.Linear(5, 4, dtype=F64)
    ),
    "nested": lambda: nn.Sequential(
        nn.Sequential(nn.ELU(), nn.Linear(3, 5, dtype=F64)),
        nn.Tanh(),
        nn.Linear(5, 4, dtype=F64),
    ),
    "residual": lambda: nn.Sequential(
        nn.Linear(3, 4, dtype=F64), nn.Residual(nn.Sequential(nn.Linear(4, 4, dtype=F64)))
    ),
    "leading-residual": lambda: nn.Sequential(
        nn.Residual(nn.Sequential(nn.Linear(3, 3, dtype=F64), nn.Tanh())),
        nn.Linear(3, 4, dtype=F64),
    ),
    "gelu-silu": lambda: nn.Sequential(
        nn.GELU(), nn.Linear(3, 5, dtype=F64), nn.SiLU(), nn.Linear(5, 4, dtype=F64)
    ),
}


def _input(network: nn.Module, batch: int) -> Tensor:
    if isinstance(network, nn.BatchedLinear):
        return torch.randn(network.models, batch, 3, dtype=F64)
    return torch.randn(batch, 3, dtype=F64)


def _gradients(network: nn.Module) -> list[Tensor]:
    return [parameter.grad.clone() for parameter in network.parameters()]


@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_same_parameter_gradients_as_backward_and_autograd(name: str, batch: int) -> None:
    torch.manual_seed(batch)
    network = NETWORKS[name]()
    x = _input(network, batch)
    upstream = torch.randn(network(x).shape, dtype=F64)
    network.zero_grad()
    network(x)
    network.backward(upstream)
    expected = _gradients(network)
    network.zero_grad()
    network(x)
    assert network.backward_parameters(upstream) is None
    got = _gradients(network)
    # The same operations on the same numbers: equal bit for bit.
    for one, other in zip(expected, got, strict=True):
        assert torch.equal(one, other)
    # And the gradients autograd gives for the same network (a torch copy of every parameter).
    leaves = [parameter.data.clone().requires_grad_(True) for parameter in network.parameters()]
    torch.autograd.backward(_torch_forward(network, x, leaves), upstream)
    for leaf, gradient in zip(leaves, got, strict=True):
        assert leaf.grad is not None
        assert_close(gradient, leaf.grad)


def _torch_forward(module: nn.Module, x: Tensor, leaves: list[Tensor]) -> Tensor:
    """The network's forward with torch ops on ``leaves`` (its parameters, in order)."""
    queue = list(leaves)

    def run(module: nn.Module, x: Tensor) -> Tensor:
        if isinstance(module, nn.Sequential):
            for child in module:
                x = run(child, x)
            return x
        if isinstance(module, nn.Residual):
            return x + run(module.block, x)
        if isinstance(module, nn.Linear | nn.BatchedLinear):
            weight = queue.pop(0)
            bias = queue.pop(0) if module.bias is not None else None
            if isinstance(module, nn.BatchedLinear):
                out = torch.bmm(x, weight.transpose(1, 2))
                return out if bias is None else out + bias.unsqueeze(1)
            out = x @ weight.t()
            return out if bias is None else out + bias
        functions: dict[type, Callable[[Tensor], Tensor]] = {
            nn.Sigmoid: torch.sigmoid,
            nn.Tanh: torch.tanh,
            nn.ReLU: torch.relu,
            nn.ELU: lambda t: torch.where(t > 0, t, torch.expm1(t)),
            nn.GELU: lambda t: t * (1 + torch.erf(t / 2**0.5)) / 2,
            nn.SiLU: lambda t: t * torch.sigmoid(t),
        }
        return functions[type(module)](x)

    output = run(module, x)
    assert not queue
    return output


def test_sequential_skips_the_modules_in_front_of_the_first_with_parameters() -> None:
    front, middle, back = _Spy(), _Spy(), _Spy()
    network = nn.Sequential(front, nn.Linear(2, 3), middle, nn.Linear(3, 1), back)
    network(torch.randn(4, 2))
    network.backward_parameters(torch.ones(4, 1))
    assert (front.backward_calls, middle.backward_calls, back.backward_calls) == (0, 1, 1)
    network.backward(torch.ones(4, 1))
    assert (front.backward_calls, middle.backward_calls, back.backward_calls) == (1, 2, 2)


def test_sequential_without_parameters_still_checks_the_gradient() -> None:
    spy = _Spy()
    network = nn.Sequential(spy, nn.Tanh())
    network(torch.randn(4, 2))
    network.backward_parameters(torch.ones(4, 2))
    assert spy.backward_calls == 0
    with pytest.raises(ValueError, match=r"Tanh: .*shape"):
        network.backward_parameters(torch.ones(4, 3))
    nn.Sequential().backward_parameters(torch.ones(1))  # nothing to do


def test_a_custom_module_falls_back_to_its_backward() -> None:
    spy = _Spy()
    spy(torch.ones(2))
    assert spy.backward_parameters(torch.ones(2)) is None
    assert spy.backward_calls == 1


def test_under_detect_anomaly_every_module_runs() -> None:
    spy = _Spy()
    network = nn.Sequential(spy, nn.Linear(2, 1))
    network(torch.randn(3, 2))
    with detect_anomaly():
        network.backward_parameters(torch.ones(3, 1))
    assert spy.backward_calls == 1


@pytest.mark.parametrize(
    ("name", "checker"),
    [("linear", "Linear"), ("batched-linear", "BatchedLinear"), ("mlp", "Linear")],
)
def test_errors_are_backwards_and_change_nothing(name: str, checker: str) -> None:
    network = NETWORKS[name]()
    with pytest.raises(RuntimeError) as before:
        network.backward_parameters(torch.ones(2, 4, dtype=F64))
    assert str(before.value) == f"{checker}: backward called before forward"
    x = _input(network, 2)
    output = network(x)
    network.backward(torch.ones_like(output))
    wrong = torch.ones(*output.shape[:-1], output.shape[-1] + 1, dtype=F64)
    gradients = _gradients(network)
    with pytest.raises(ValueError) as info:
        network.backward_parameters(wrong)
    with pytest.raises(ValueError) as reference:
        network.backward(wrong)
    assert str(info.value) == str(reference.value)
    assert str(info.value).startswith(f"{checker}: ")
    assert str(tuple(wrong.shape)) in str(info.value)
    for one, other in zip(gradients, _gradients(network), strict=True):
        assert torch.equal(one, other)


def test_residual_checks_like_its_backward() -> None:
    layer = nn.Residual(nn.Sequential(nn.Linear(3, 3, dtype=F64), nn.Tanh()))
    with pytest.raises(RuntimeError, match=r"^Residual: backward called before forward$"):
        layer.backward_parameters(torch.ones(2, 3, dtype=F64))
    layer(torch.randn(2, 3, dtype=F64))
    with pytest.raises(ValueError) as info:
        layer.backward_parameters(torch.ones(2, 4, dtype=F64))
    with pytest.raises(ValueError) as reference:
        layer.backward(torch.ones(2, 4, dtype=F64))
    assert str(info.value) == str(reference.value)
    assert str(info.value).startswith("Residual: ")
    assert all(torch.count_nonzero(p.grad) == 0 for p in layer.parameters())


class _LazyScale(nn.Module):
    """``x * w`` with ``w`` registered at the first forward (a lazy module: no parameter when
    the ``Sequential`` around it is built)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "w" not in self._parameters:
            self.w = self.register_parameter(
                "w", nn.Parameter(torch.linspace(0.5, 2.0, x.shape[1], dtype=x.dtype))
            )
        self.x = x
        return x * self.w.data

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        self.w.grad += (grad_output * self.x).sum(0)
        return grad_output * self.w.data


def test_backward_parameters_reaches_a_parameter_registered_after_the_build() -> None:
    """A child that gets its first parameter after the ``Sequential`` was built (a lazy
    module) is where ``backward_parameters`` stops, as for one built with it: it skipped the
    child, whose gradient stayed zero (``fit`` never trained it), while ``backward`` gave
    autograd's."""
    torch.manual_seed(0)
    model = nn.Sequential(_LazyScale(), nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    grad = torch.randn(5, 2, dtype=torch.float64)
    for _ in range(2):  # (the second time with the parameter there from the start of the call)
        model(x)
        model.zero_grad()
        model.backward_parameters(grad)
        got = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        model.backward(grad)
        expected = [p.grad.clone() for p in model.parameters()]
        assert len(got) == len(expected) == 5
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    # Autograd's gradient of the lazy weight.
    w = model[0].w.data.clone().requires_grad_(True)
    twin = to_torch(model[1:])
    (twin(x * w) * grad).sum().backward()
    torch.testing.assert_close(got[0], w.grad, rtol=1e-12, atol=1e-12)


class _ClippedLinear(nn.Linear):
    """A Linear whose backward clips the gradient it is given to [-0.01, 0.01]: it overrides
    backward alone, inheriting Linear's backward_parameters."""

    def backward(self, grad_output: Tensor) -> Tensor:
        return super().backward(grad_output.clamp(-0.01, 0.01))


class _CountingSequential(nn.Sequential):
    """A Sequential whose backward counts its calls."""

    calls = 0

    def backward(self, grad_output: Tensor) -> Tensor:
        self.calls += 1
        return super().backward(grad_output)


def _train_by_backward(
    model: nn.Module,
    criterion: nn.Loss,
    optimizer: optim.Optimizer,
    x: Tensor,
    target: Tensor,
    generator: torch.Generator,
) -> None:
    """Two epochs of batches of 4 in a loop of ``model.backward``: what fit must equal."""
    for _ in range(2):
        for x_batch, y_batch in BatchIterator(x, target, 4, generator=generator):
            optimizer.zero_grad()
            criterion(model(x_batch), y_batch)
            model.backward(criterion.backward())
            optimizer.step()


def test_a_subclass_that_overrides_backward_alone_has_it_run_by_backward_parameters() -> None:
    """A Linear whose backward clips its gradient, first in a network, or the block of a
    Residual: backward_parameters ran Linear's, unclipped, so fit (which calls it) trained
    otherwise than a loop of model.backward; and fit never called a Sequential subclass's
    own backward. The subclass's backward runs now, and the parameter gradients are
    backward's, bit for bit; fit equals the loop of backward."""
    x = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    grad = torch.randn(6, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    for make in (
        lambda: nn.Sequential(_ClippedLinear(3, 5), nn.Tanh(), nn.Linear(5, 4)),
        lambda: nn.Sequential(nn.Residual(_ClippedLinear(3, 3)), nn.Tanh(), nn.Linear(3, 4)),
    ):
        torch.manual_seed(2)
        model = make().to(F64)
        model(x)
        model.backward(grad)
        by_backward = [parameter.grad.clone() for parameter in model.parameters()]
        model.zero_grad()
        model(x)
        model.backward_parameters(grad)
        for got, expected in zip(model.parameters(), by_backward, strict=True):
            assert torch.equal(got.grad, expected)
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    trained = []
    for by_fit in (True, False):
        torch.manual_seed(3)
        model = _CountingSequential(_ClippedLinear(3, 5), nn.Tanh(), nn.Linear(5, 4)).to(F64)
        criterion, optimizer = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.5)
        generator = torch.Generator().manual_seed(4)
        if by_fit:
            fit(model, criterion, optimizer, x, target, epochs=2, batch_size=4, generator=generator)
        else:
            _train_by_backward(model, criterion, optimizer, x, target, generator)
        assert model.calls == 4
        trained.append([parameter.data for parameter in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*trained, strict=True))


class _RecordingLinear(nn.Linear):
    """A Linear that overrides backward_parameters alone, counting its calls."""

    calls = 0

    def backward_parameters(self, grad_output: Tensor) -> None:
        self.calls += 1
        super().backward_parameters(grad_output)


class _ClippedRecordingLinear(_ClippedLinear):
    """A clipped Linear (backward overridden) whose subclass overrides backward_parameters
    too, clipping as backward does and counting its calls: it is the one to run."""

    calls = 0

    def backward_parameters(self, grad_output: Tensor) -> None:
        self.calls += 1
        super().backward_parameters(grad_output.clamp(-0.01, 0.01))


class _RecordingSequential(nn.Sequential):
    """A Sequential that overrides backward_parameters alone, counting its calls."""

    parameter_calls = 0

    def backward_parameters(self, grad_output: Tensor) -> None:
        self.parameter_calls += 1
        super().backward_parameters(grad_output)


class _CountingRecordingSequential(_CountingSequential):
    """A Sequential whose backward counts its calls, and whose subclass overrides
    backward_parameters, counting its own."""

    parameter_calls = 0

    def backward_parameters(self, grad_output: Tensor) -> None:
        self.parameter_calls += 1
        super().backward_parameters(grad_output)


def test_a_subclass_that_overrides_backward_parameters_has_it_run() -> None:
    """Where the class nearest in the MRO overrides backward_parameters (a Linear's subclass,
    or the subclass of a Linear whose backward clips), the containers and fit call it, not
    backward: first in a network, as a Residual's block, and a Sequential subclass's in fit's
    loop (the base class's backward, which fit would call instead, does not call it); the
    gradients are those of the subclass's backward_parameters (for the clipped one, its
    backward's)."""
    x = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    grad = torch.randn(6, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    for kind in (_RecordingLinear, _ClippedRecordingLinear):
        for residual in (False, True):
            torch.manual_seed(2)
            layer = kind(3, 3)
            first = nn.Residual(layer) if residual else layer
            model = nn.Sequential(first, nn.Tanh(), nn.Linear(3, 4)).to(F64)
            model(x)
            model.backward(grad)
            by_backward = [parameter.grad.clone() for parameter in model.parameters()]
            model.zero_grad()
            model(x)
            layer.calls = 0
            model.backward_parameters(grad)
            assert layer.calls == 1
            for got, expected in zip(model.parameters(), by_backward, strict=True):
                assert torch.equal(got.grad, expected)
    # fit calls a Sequential subclass's backward_parameters (the nearest override), also below
    # a class that overrides backward alone; Sequential's own backward does not call it
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    for sequential in (_RecordingSequential, _CountingRecordingSequential):
        torch.manual_seed(3)
        model = sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).to(F64)
        optimizer = optim.SGD(model.parameters(), lr=0.5)
        fit(model, nn.CrossEntropyLoss(), optimizer, x, target, epochs=2, batch_size=4)
        assert model.parameter_calls == 4


def _clip_on_instance(layer: nn.Module, calls: list[int], bound: bool = False) -> None:
    """Set on the instance of ``layer`` a backward that clips its gradient and counts calls: a
    function, or (``bound``) a function of one's own bound to the layer by MethodType."""
    backward = type(layer).backward

    def clipped(grad_output: Tensor) -> Tensor:
        calls.append(1)
        return backward(layer, grad_output.clamp(-0.01, 0.01))

    def clipped_method(self: nn.Module, grad_output: Tensor) -> Tensor:
        return clipped(grad_output)

    if bound:
        layer.backward = types.MethodType(clipped_method, layer)  # type: ignore[method-assign]
    else:
        layer.backward = clipped  # type: ignore[method-assign]


def _count_backward_parameters_on_instance(model: nn.Module, calls: list[int]) -> None:
    """Set on the instance of ``model`` its backward_parameters, counting calls."""
    own = model.backward_parameters

    def counted(grad_output: Tensor) -> None:
        calls.append(1)
        own(grad_output)

    model.backward_parameters = counted  # type: ignore[method-assign]


@pytest.mark.parametrize(
    "case", ["another layer's methods", "backward_parameters on the model", "a subclass's"]
)
def test_fit_calls_what_the_model_s_own_backward_or_backward_parameters_calls(case: str) -> None:
    """fit trains as a loop that calls what the model's instance and class say, bit for bit:
    a first Linear given the bound forward and backward of another Linear over its parameters
    (copy.copy) has that backward called, through model.backward (backward_parameters would
    have run the Linear's own, without the cache the other's forward made); a
    backward_parameters set on the model's instance is called, once a step; and a Sequential
    subclass that overrides backward_parameters has it called (the nearest override), a
    backward set on its first Linear's instance notwithstanding."""
    x = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    trained, counts = [], []
    for by_fit in (True, False):
        torch.manual_seed(3)
        layers = (nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4))
        model = (_RecordingSequential if case == "a subclass's" else nn.Sequential)(*layers)
        model.to(F64)
        calls: list[int] = []
        step: Callable[[Tensor], object] = model.backward
        if case == "another layer's methods":
            other = copy.copy(model[0])
            model[0].forward = other.forward  # type: ignore[method-assign]
            model[0].backward = other.backward  # type: ignore[method-assign]
        elif case == "backward_parameters on the model":
            _count_backward_parameters_on_instance(model, calls)
            step = model.backward_parameters
        else:
            _clip_on_instance(model[0], calls)
            step = model.backward_parameters
        criterion, optimizer = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.5)
        generator = torch.Generator().manual_seed(4)
        if by_fit:
            fit(model, criterion, optimizer, x, target, epochs=2, batch_size=4, generator=generator)
        else:
            for _ in range(2):
                for x_batch, y_batch in BatchIterator(x, target, 4, generator=generator):
                    optimizer.zero_grad()
                    criterion(model(x_batch), y_batch)
                    step(criterion.backward())
                    optimizer.step()
        counts.append((len(calls), getattr(model, "parameter_calls", None)))
        trained.append([parameter.data for parameter in model.parameters()])
    expected = {
        "another layer's methods": (0, None),
        "backward_parameters on the model": (4, None),
        "a subclass's": (0, 4),
    }[case]
    assert counts == [expected, expected]
    assert all(torch.equal(a, b) for a, b in zip(*trained, strict=True))


@pytest.mark.parametrize(
    "where",
    [
        "first Linear",
        "the model",
        "a bare Linear",
        "inside a Sequential",
        "under detect_anomaly",
        "after an activation",
        "bound by MethodType",
        "in a Residual's block",
        "a Residual's block",
    ],
)
def test_fit_calls_a_backward_set_on_an_instance_that_backward_parameters_skips(
    where: str,
) -> None:
    """A backward set on the instance of a Linear (not a subclass) first in the network, or
    on the model itself (behind an activation, which backward_parameters skips; bound by
    MethodType): fit called backward_parameters, whose Linear (or Sequential) class method
    never calls it, and trained unclipped. fit looks once an epoch and calls backward
    then: it trains as a loop of model.backward, bit for bit, the instance's backward called
    once a step."""
    x = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    trained, counts = [], []
    for by_fit in (True, False):
        torch.manual_seed(3)
        model: nn.Module
        if where == "a bare Linear":
            model = nn.Linear(3, 4, dtype=F64)
            patched = model
        elif where == "inside a Sequential":
            model = nn.Sequential(nn.Sequential(nn.Linear(3, 5), nn.Tanh()), nn.Linear(5, 4)).to(
                F64
            )
            patched = model[0][0]
        elif where == "in a Residual's block":
            # (fit used to look down Sequentials only: Residual's backward_parameters reached
            # the Linear's, and the instance's backward was never called)
            block = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
            model = nn.Sequential(nn.Residual(block), nn.Linear(3, 4)).to(F64)
            patched = block[0]
        elif where == "a Residual's block":
            model = nn.Sequential(nn.Residual(nn.Linear(3, 3)), nn.Linear(3, 4)).to(F64)
            patched = model[0].block
        elif where == "after an activation":
            model = nn.Sequential(nn.Tanh(), nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).to(F64)
            patched = model[1]
        else:
            model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).to(F64)
            patched = model if where == "the model" else model[0]
        calls: list[int] = []
        _clip_on_instance(patched, calls, bound=where == "bound by MethodType")
        criterion, optimizer = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.5)
        generator = torch.Generator().manual_seed(4)
        if by_fit:
            anomaly = where == "under detect_anomaly"
            with detect_anomaly(model, criterion) if anomaly else contextlib.nullcontext():
                fit(
                    model,
                    criterion,
                    optimizer,
                    x,
                    target,
                    epochs=2,
                    batch_size=4,
                    generator=generator,
                )
        else:
            _train_by_backward(model, criterion, optimizer, x, target, generator)
        counts.append(len(calls))
        trained.append([parameter.data for parameter in model.parameters()])
    assert counts == [4, 4]
    assert all(torch.equal(a, b) for a, b in zip(*trained, strict=True))
