"""A researcher's own modules, written as docs/tutorial.md says, used with everything minidl offers.

Four modules of one's own, each with its backward derived in its docstring: an activation with a
learned parameter (``Swish``, a 0-dim ``beta``), a layer with two parameter tensors
(``GainLinear``, a weight and a per-feature gain), a container of one's own holding a minidl
``Linear`` and an activation (``SkipBlock``) and a module with a buffer that behaves otherwise in
training and evaluation (``Center``, a running mean). Each is checked against PyTorch autograd in
float64 and by :func:`minidl.gradcheck`; then a network of them is trained by ``fit`` with
optimizers, a schedule and clipping against a twin in autograd and ``torch.optim`` (1e-10), is
saved, loaded, resumed, copied, pickled, cast, watched by ``detect_anomaly``, run in inference
mode and trained data-parallel on two processes; and what the framework cannot do with such a
module (``to_torch``, ``fit_rounds``) is refused with a message that says what to do.

The contract these tests keep true: ``forward`` caches what ``backward`` needs; ``backward``
returns dL/dinput and *adds* dL/dparameter to each registered ``Parameter``'s ``grad``;
``param()`` is derived from the registered parameters (an override of one's own is refused);
parameters, children and buffers are registered, not set as plain attributes.
"""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import minidl
from minidl import gradcheck, nn, optim
from minidl.anomaly import AnomalyError
from minidl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minidl.distributed import DataParallel, Launch, ProcessGroup
from minidl.interop import ConversionError, to_torch
from minidl.rounds import PerModel, fit_rounds
from minidl.train import fit
from tests.helpers import free_port

F64 = torch.float64
TOL = 1e-10


# -- the modules of one's own ---------------------------------------------------------------------


class Swish(nn.Module):
    r"""Swish :math:`y = x \sigma(\beta x)` with a learned scalar :math:`\beta` (a 0-dim parameter).

    With :math:`s = \sigma(\beta x)` and :math:`\sigma' = s (1 - s)`:
    :math:`dy/dx = s + \beta x s (1 - s)` and :math:`dy/d\beta = x^2 s (1 - s)`, so
    ``dL/dx = g * dy/dx`` and ``dL/dbeta += sum(g * dy/dbeta)`` over every element.
    """

    def __init__(self, beta: float = 1.0, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.beta = self.register_parameter("beta", nn.Parameter(torch.tensor(beta, dtype=dtype)))
        self._input: Tensor | None = None
        self._sigmoid: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        sigmoid = torch.sigmoid(self.beta.data * input)
        self._input, self._sigmoid = input, sigmoid
        return input * sigmoid

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._input is None or self._sigmoid is None:
            raise RuntimeError("Swish: backward called before forward")
        x, s = self._input, self._sigmoid
        slope = s * (1 - s)
        grad_input = grad_output * (s + self.beta.data * x * slope)
        self.beta.grad.add_((grad_output * x * x * slope).sum())  # accumulate
        return grad_input


class GainLinear(nn.Module):
    r""":math:`y = (x W^T) \odot a`: a linear map without bias and a learned gain per output.

    With :math:`h = x W^T` and :math:`\hat g = g \odot a`: ``dL/dx = ĝ W``,
    ``dL/dW += ĝ^T x`` and ``dL/da += sum over n of g ⊙ h``. Shapes: x ``(N, in)``, W
    ``(out, in)``, a ``(out,)``, y ``(N, out)``.
    """

    def __init__(self, in_features: int, out_features: int, dtype: torch.dtype | None = None):
        super().__init__()
        weight = torch.randn(out_features, in_features, dtype=dtype) / in_features**0.5
        self.weight = self.register_parameter("weight", nn.Parameter(weight))
        gain = torch.linspace(0.5, 1.5, out_features, dtype=dtype)
        self.gain = self.register_parameter("gain", nn.Parameter(gain))
        self._input: Tensor | None = None
        self._hidden: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        hidden = input @ self.weight.data.t()
        self._input, self._hidden = input, hidden
        return hidden * self.gain.data

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._input is None or self._hidden is None:
            raise RuntimeError("GainLinear: backward called before forward")
        scaled = grad_output * self.gain.data
        grad_input = scaled @ self.weight.data  # (read before the accumulations)
        self.weight.grad.add_(scaled.t() @ self._input)
        self.gain.grad.add_((grad_output * self._hidden).sum(0))
        return grad_input


class SkipBlock(nn.Module):
    """A container of one's own: ``y = x + act(linear(x))``, whose backward is
    ``g + linear.backward(act.backward(g))`` (its children accumulate their gradients)."""

    def __init__(self, features: int, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.linear = self.register_module("linear", nn.Linear(features, features))
        self.act = self.register_module("act", nn.Tanh() if activation is None else activation)

    def forward(self, input: Tensor) -> Tensor:
        return input + self.act(self.linear(input))

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output + self.linear.backward(self.act.backward(grad_output))


class Center(nn.Module):
    r"""Subtract a mean per feature: the batch's in training (and update the buffer
    ``running_mean``, :math:`\bar\mu \leftarrow (1 - m)\bar\mu + m\mu`), ``running_mean`` in
    evaluation.

    Backward in training mode, where every row enters the mean:
    ``dL/dx[k] = g[k] - (1/N) sum over n of g[n]``; in evaluation mode ``dL/dx = g``.
    """

    def __init__(self, features: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.running_mean = self.register_buffer("running_mean", torch.zeros(features))
        self._centred: bool | None = None  # whether the last forward used the batch's mean

    def forward(self, input: Tensor) -> Tensor:
        self._centred = self.training
        if not self.training:
            return input - self.running_mean
        mean = input.mean(0)
        self.running_mean.mul_(1 - self.momentum).add_(mean, alpha=self.momentum)  # in place
        return input - mean

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._centred is None:
            raise RuntimeError("Center: backward called before forward")
        return grad_output - grad_output.mean(0) if self._centred else grad_output.clone()


def network(seed: int = 0, dtype: torch.dtype = F64) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(2, 6),
        Swish(0.5),
        GainLinear(6, 6),
        SkipBlock(6, Swish(1.5)),
        Center(6),
        nn.Linear(6, 2),
    ).to(dtype)


def twin_forward(values: list[Tensor], x: Tensor, running_mean: Tensor, training: bool) -> Tensor:
    """``network``'s forward in autograd, from its parameters in ``parameters()``'s order;
    updates ``running_mean`` in training mode, as ``Center`` does."""
    w0, b0, beta1, w2, gain2, w3, b3, beta3, w5, b5 = values
    h = x @ w0.t() + b0
    h = h * torch.sigmoid(beta1 * h)
    h = (h @ w2.t()) * gain2
    r = h @ w3.t() + b3
    h = h + r * torch.sigmoid(beta3 * r)
    if training:
        mean = h.mean(0)
        running_mean.mul_(0.9).add_(mean.detach(), alpha=0.1)
        h = h - mean
    else:
        h = h - running_mean
    return h @ w5.t() + b5


def disk(samples: int = 48, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 2, dtype=F64, generator=generator)
    return x, (x.norm(dim=1) > 1).long()


def relative(got: Tensor, expected: Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max().clamp(min=1e-300))


# -- each module against autograd ---------------------------------------------------------------

MODULES = {
    "swish": (lambda: Swish(0.7, dtype=F64), lambda v, x: x * torch.sigmoid(v[0] * x)),
    "gain-linear": (lambda: GainLinear(4, 3, dtype=F64), lambda v, x: (x @ v[0].t()) * v[1]),
    "skip-block": (
        lambda: SkipBlock(4).to(F64),
        lambda v, x: x + torch.tanh(x @ v[0].t() + v[1]),
    ),
    "center": (lambda: Center(4), lambda v, x: x - x.mean(0)),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_each_module_is_autograds_and_passes_gradcheck(name: str) -> None:
    """Forward, the input gradient and the parameter gradients equal autograd's (1e-10); two
    backward passes accumulate twice the gradients; gradcheck passes."""
    make, reference = MODULES[name]
    module = make()
    x = torch.randn(5, 4, dtype=F64)
    g = torch.randn_like(module(x))
    assert gradcheck(module, x)
    module.zero_grad()
    y = module(x)
    grad_input = module.backward(g)
    once = [p.grad.clone() for p in module.parameters()]
    assert torch.equal(module.backward(g), grad_input)
    values = [p.data.clone().requires_grad_(True) for p in module.parameters()]
    x_ref = x.clone().requires_grad_(True)
    y_ref = reference(values, x_ref)
    y_ref.backward(g)
    assert relative(y, y_ref.detach()) <= TOL
    assert x_ref.grad is not None and relative(grad_input, x_ref.grad) <= TOL
    for parameter, single, value in zip(module.parameters(), once, values, strict=True):
        assert value.grad is not None and relative(single, value.grad) <= TOL
        assert relative(parameter.grad, 2 * value.grad) <= TOL


def test_center_keeps_a_running_mean_and_evaluates_with_it() -> None:
    center = Center(3)
    x = torch.randn(8, 3)
    center(x)
    assert torch.allclose(center.running_mean, 0.1 * x.mean(0), rtol=1e-6, atol=0)
    center.eval()
    assert torch.equal(center(x), x - center.running_mean)
    assert torch.equal(center.backward(torch.ones(8, 3)), torch.ones(8, 3))
    assert list(center.state_dict()) == ["running_mean"] and not list(center.parameters())


# -- the network, trained as autograd and torch.optim train its twin ----------------------------

OPTIMIZERS = {
    "sgd-momentum": (
        lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        None,
    ),
    "adam-step-decay": (
        lambda p: optim.Adam(p, lr=0.01),
        lambda p: torch.optim.Adam(p, lr=0.01),
        (2, 0.5),
    ),
    "adadelta": (
        lambda p: optim.Adadelta(p, lr=1.0),
        lambda p: torch.optim.Adadelta(p, lr=1.0),
        None,
    ),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fit_trains_the_network_as_autograd_trains_its_twin(name: str) -> None:
    """fit (its batches, the optimizer, a step decay, max_grad_norm) against a loop over the
    same batches in autograd with torch.optim, StepLR and torch's clip_grad_norm_: the
    parameters, the buffer and the evaluation outputs agree to 1e-10 after 4 epochs."""
    make_optimizer, make_torch_optimizer, decay = OPTIMIZERS[name]
    x, y = disk()
    model = network()
    values = [p.data.clone().requires_grad_(True) for p in model.parameters()]
    running_mean = torch.zeros(6, dtype=F64)
    optimizer = make_optimizer(model.parameters())
    scheduler = optim.StepDecay(optimizer, step_size=decay[0], gamma=decay[1]) if decay else None
    fit(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        x,
        y,
        epochs=4,
        batch_size=10,
        scheduler=scheduler,
        max_grad_norm=0.2,
        generator=torch.Generator().manual_seed(3),
    )
    torch_optimizer = make_torch_optimizer(values)
    torch_scheduler = (
        torch.optim.lr_scheduler.StepLR(torch_optimizer, decay[0], decay[1]) if decay else None
    )
    generator = torch.Generator().manual_seed(3)
    clipped = 0
    for _ in range(4):
        order = torch.randperm(len(x), generator=generator)
        for batch in order.split(10):
            torch_optimizer.zero_grad()
            logits = twin_forward(values, x[batch], running_mean, training=True)
            torch.nn.functional.cross_entropy(logits, y[batch]).backward()
            clipped += float(torch.nn.utils.clip_grad_norm_(values, 0.2)) > 0.2
            torch_optimizer.step()
        if torch_scheduler is not None:
            torch_scheduler.step()
    assert clipped > 0  # (the clipping acts)
    for parameter, value in zip(model.parameters(), values, strict=True):
        assert relative(parameter.data, value.detach()) <= TOL
    assert relative(model[4].running_mean, running_mean) <= TOL
    model.eval()
    with torch.no_grad():
        assert relative(model(x), twin_forward(values, x, running_mean, training=False)) <= TOL


def test_a_loop_of_ones_own_in_inference_mode_gives_the_same_gradients() -> None:
    """model.backward and backward_parameters, inside torch.inference_mode() or not, give the
    same gradients (the network's first module with parameters is a built-in Linear, whose
    input gradient backward_parameters skips)."""
    x, y = disk()
    model, criterion = network(), nn.CrossEntropyLoss()
    grads = []
    for inference, method in [
        (False, "backward"),
        (True, "backward"),
        (True, "backward_parameters"),
    ]:
        model.zero_grad()
        with torch.inference_mode(inference):
            criterion(model(x), y)
            getattr(model, method)(criterion.backward())
        grads.append([p.grad.clone() for p in model.parameters()])
    for other in grads[1:]:
        for first, second in zip(grads[0], other, strict=True):
            assert torch.equal(first, second)


# -- state: state dicts, checkpoints, copies, casts ---------------------------------------------


def test_checkpoint_resume_copy_pickle_and_cast(tmp_path: Path) -> None:
    """A run stopped at epoch 2, saved and resumed into a fresh network ends with the bits of an
    uninterrupted one (the buffer and the 0-dim parameter included); state_dict holds the
    parameters and the buffer; deepcopy and pickle of a network between its forward and its
    backward give its gradients; ``.to(float32)`` casts the parameters and the buffer."""
    x, y = disk()

    def run(model: nn.Sequential) -> tuple[optim.Adam, optim.StepDecay]:
        optimizer = optim.Adam(model.parameters(), lr=0.01)
        return optimizer, optim.StepDecay(optimizer, step_size=1, gamma=0.7)

    whole = network()
    optimizer, scheduler = run(whole)
    fit(
        whole,
        nn.CrossEntropyLoss(),
        optimizer,
        x,
        y,
        epochs=4,
        batch_size=10,
        scheduler=scheduler,
        generator=torch.Generator().manual_seed(1),
    )
    first = network()
    optimizer, scheduler = run(first)
    generator = torch.Generator().manual_seed(1)
    history = fit(
        first,
        nn.CrossEntropyLoss(),
        optimizer,
        x,
        y,
        epochs=2,
        batch_size=10,
        scheduler=scheduler,
        generator=generator,
    )
    path = tmp_path / "run.ckpt"
    save_checkpoint(
        path, first, optimizer, scheduler, epoch=2, history=history, generator=generator
    )
    resumed = network(seed=5)
    optimizer, scheduler = run(resumed)
    generator = torch.Generator()
    state = load_checkpoint(path, resumed, optimizer, scheduler, generator=generator)
    fit(
        resumed,
        nn.CrossEntropyLoss(),
        optimizer,
        x,
        y,
        epochs=4,
        batch_size=10,
        scheduler=scheduler,
        generator=generator,
        start_epoch=state.epoch,
        history=state.history,
    )
    assert list(whole.state_dict()) == [
        "0.weight",
        "0.bias",
        "1.beta",
        "2.weight",
        "2.gain",
        "3.linear.weight",
        "3.linear.bias",
        "3.act.beta",
        "4.running_mean",
        "5.weight",
        "5.bias",
    ]
    for (key, expected), got in zip(
        whole.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(got, expected), key
    loaded = network(seed=6)
    loaded.load_state_dict(whole.state_dict())
    assert torch.equal(loaded.eval()(x), whole.eval()(x))

    whole.train()
    criterion = nn.CrossEntropyLoss()
    criterion(whole(x), y)
    copies = [copy.deepcopy(whole), pickle.loads(pickle.dumps(whole))]
    whole.zero_grad()
    grad_input = whole.backward(criterion.backward())
    for other in copies:
        other.zero_grad()
        assert torch.equal(other.backward(criterion.backward()), grad_input)
        for mine, theirs in zip(whole.parameters(), other.parameters(), strict=True):
            assert torch.equal(theirs.grad, mine.grad)
        before = [p.data.clone() for p in other.parameters()]
        optim.SGD(other.parameters(), lr=0.1).step()  # (its optimizer moves every parameter)
        for parameter, value in zip(other.parameters(), before, strict=True):
            expected = value - 0.1 * parameter.grad
            assert torch.allclose(parameter.data, expected, rtol=1e-15, atol=1e-15)
            assert not torch.equal(parameter.data, value)

    single = copy.deepcopy(whole).to(torch.float32)
    assert {p.dtype for p in single.parameters()} == {torch.float32}
    assert single[4].running_mean.dtype == torch.float32
    assert single(x.float()).dtype == torch.float32


# -- anomaly detection, interop, stacking: named refusals ----------------------------------------


def test_detect_anomaly_names_a_module_of_ones_own() -> None:
    model = network()
    model[2].gain.data[3] = float("nan")
    x, _ = disk()
    with pytest.raises(AnomalyError) as caught, minidl.detect_anomaly(model):
        model(x)
    assert caught.value.module == "Sequential[2]: GainLinear"
    assert caught.value.pass_ == "forward" and caught.value.what == "output"


def test_to_torch_names_the_module_it_cannot_convert() -> None:
    with pytest.raises(ConversionError, match=r"to_torch: cannot convert the layer at '1' of type"):
        to_torch(network())


def _stackable(seed: int, activation: nn.Module) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 6), activation, nn.Linear(6, 2)).to(F64)


class FixedSwish(nn.Activation):
    """Swish with a fixed beta, stateless: ``y = x sigmoid(beta x)``; caches the input."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = beta

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        return input * torch.sigmoid(self.beta * input), input

    def _backward(self, grad_output: Tensor, input: Tensor) -> Tensor:
        s = torch.sigmoid(self.beta * input)
        return grad_output * (s + self.beta * input * s * (1 - s))

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


class LearnedSlope(nn.Activation):
    """PReLU-like: ``y = max(x, 0) + a min(x, 0)`` with a learned a, kept in a parameter."""

    def __init__(self, slope: float) -> None:
        super().__init__()
        self.slope = self.register_parameter("slope", nn.Parameter(torch.tensor([slope])))

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        return input.clamp(min=0) + self.slope.data * input.clamp(max=0), input

    def _backward(self, grad_output: Tensor, input: Tensor) -> Tensor:
        self.slope.grad.add_((grad_output * input.clamp(max=0)).sum().reshape(1))
        return torch.where(input > 0, grad_output, grad_output * self.slope.data)


class CountingTanh(nn.Activation):
    """tanh that counts its training forwards in a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        if self.training:
            self.calls.add_(1)
        output = torch.tanh(input)
        return output, output

    def _backward(self, grad_output: Tensor, output: Tensor) -> Tensor:
        return grad_output * (1 - output * output)


def test_fit_rounds_stacks_a_stateless_activation_of_ones_own() -> None:
    """Two models with FixedSwish of other betas train in one stack as each alone (1e-12)."""
    x, y = disk()
    models = [_stackable(seed, FixedSwish(beta)) for seed, beta in enumerate((0.5, 2.0))]
    twins = [copy.deepcopy(model) for model in models]
    fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        PerModel(lambda r, p: optim.SGD(p, lr=0.1)),
        [(x, y)] * 2,
        epochs=2,
        batch_size=8,
        generators=[torch.Generator().manual_seed(r) for r in range(2)],
    )
    for seed, (model, twin) in enumerate(zip(models, twins, strict=True)):
        fit(
            twin,
            nn.CrossEntropyLoss(),
            optim.SGD(twin.parameters(), lr=0.1),
            x,
            y,
            epochs=2,
            batch_size=8,
            generator=torch.Generator().manual_seed(seed),
        )
        for stacked, alone in zip(model.parameters(), twin.parameters(), strict=True):
            assert relative(stacked.data, alone.data) <= 1e-12


def _one_epoch_of_rounds(models: list[nn.Sequential]) -> None:
    """fit_rounds of ``models`` for one epoch of the disk data, SGD at 0.1 each."""
    x, y = disk()
    fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        PerModel(lambda r, p: optim.SGD(p, lr=0.1)),
        [(x, y)] * 2,
        epochs=1,
        generators=[torch.Generator().manual_seed(r) for r in range(len(models))],
    )


@pytest.mark.parametrize("slopes", [(0.1, 0.1), (0.1, 0.3)])
def test_fit_rounds_refuses_an_activation_with_a_parameter(slopes: tuple[float, float]) -> None:
    """An Activation of one's own with a parameter was stacked as copies whose slope no
    optimizer trained (after one epoch the models were 0.03 away from fit's); it is refused,
    naming the layer, the parameter and fit, before anything changes; so is one with a
    buffer."""
    models = [_stackable(seed, LearnedSlope(slope)) for seed, slope in enumerate(slopes)]
    before = [[p.data.clone() for p in model.parameters()] for model in models]
    with pytest.raises(TypeError) as caught:
        _one_epoch_of_rounds(models)
    assert str(caught.value) == (
        "fit_rounds: stack_models: cannot stack layer 1 of models[0] (LearnedSlope): it holds "
        "parameter 'slope', and a stack trains the parameters of its Linear layers alone (it "
        "runs copies of the activations, whose state would be shared by the models and not "
        "written back); train this model with fit, or make the activation stateless"
    )
    for model, values in zip(models, before, strict=True):
        assert all(torch.equal(p.data, v) for p, v in zip(model.parameters(), values, strict=True))
    with pytest.raises(TypeError, match=r"\(LearnedSlope\): it holds parameter 'slope'"):
        nn.stack_models(models)
    counting = [_stackable(seed, CountingTanh()) for seed in range(2)]
    with pytest.raises(TypeError, match=r"\(CountingTanh\): it holds buffer 'calls', and"):
        nn.stack_models(counting)


def test_fit_rounds_refuses_a_module_of_ones_own_and_says_to_use_fit() -> None:
    models = [_stackable(seed, Swish(1.0, dtype=F64)) for seed in range(2)]
    with pytest.raises(TypeError) as caught:
        _one_epoch_of_rounds(models)
    assert str(caught.value) == (
        "fit_rounds: stack_models: cannot stack layer 1 (Swish); only Linear layers and "
        "element-wise activations (subclasses of Activation without parameters or buffers) "
        "can be stacked: train this model with fit"
    )


# -- what a module of one's own gets wrong, and is told --------------------------------------------


class CourseLinear(nn.Module):
    """A linear map written as the course's modules were: its tensors kept in attributes and
    returned by an override of param(), nothing registered (its backward is right)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.weight = torch.randn(features, features, dtype=F64)
        self.grad_weight = torch.zeros_like(self.weight)
        self._input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return input @ self.weight.t()

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        self.grad_weight.add_(grad_output.t() @ self._input)
        return grad_output @ self.weight

    def param(self) -> list[tuple[Tensor, Tensor]]:
        return [(self.weight, self.grad_weight)]


class WrongCourseLinear(CourseLinear):
    """The same with a wrong weight gradient (transposed), which gradcheck must see."""

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        self.grad_weight.add_((grad_output.t() @ self._input).t())
        return grad_output @ self.weight


PARAM_MESSAGE = (
    r"{where}: WrongCourseLinear\.param{at} is overridden and returns item 0, a pair of a tensor "
    r"of shape \(4, 4\), torch\.float64 and a tensor of shape \(4, 4\), torch\.float64, not the "
    r"\(value, grad\) pair of a registered parameter: minidl never calls an override of "
    r"param\(\) .* remove WrongCourseLinear\.param \(the inherited one returns the registered "
    r"pairs\)"
)


def test_an_override_of_param_is_refused_not_ignored(tmp_path: Path) -> None:
    """A module whose param() returns tensors of its own passed gradcheck (its wrong weight
    gradient unchecked: gradcheck read the registered parameters, none) and went into a
    Sequential whose param() and optimizer left it out; gradcheck, Sequential, fit and
    save_checkpoint now refuse it, naming the override."""
    x = torch.randn(5, 4, dtype=F64)
    with pytest.raises(ValueError, match=PARAM_MESSAGE.format(where="gradcheck", at="")):
        gradcheck(WrongCourseLinear(4), x)
    with pytest.raises(
        ValueError,
        match=PARAM_MESSAGE.format(where="Sequential", at=r" \(the module at '1'\)"),
    ):
        nn.Sequential(nn.Linear(4, 4, dtype=F64), WrongCourseLinear(4))
    model = SkipBlock(4).to(F64)
    model.register_module("extra", WrongCourseLinear(4))
    at = r" \(the module at 'extra'\)"
    with pytest.raises(ValueError, match=PARAM_MESSAGE.format(where="fit", at=at)):
        fit(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.1), x, x, epochs=1)
    with pytest.raises(CheckpointError, match=PARAM_MESSAGE.format(where="save_checkpoint", at=at)):
        save_checkpoint(tmp_path / "c.ckpt", model)
    assert not os.listdir(tmp_path)
    # An override that returns the registered pairs (a subset, another order) is kept.

    class Reordered(GainLinear):
        def param(self) -> list[tuple[Tensor, Tensor]]:
            return [(self.gain.data, self.gain.grad), (self.weight.data, self.weight.grad)]

    assert gradcheck(Reordered(4, 4, dtype=F64), x)
    # (refused as a module that breaks the contract, not reported as a gradient that disagrees)
    with pytest.raises(ValueError, match=r"^gradcheck: WrongCourseLinear\.param"):
        gradcheck(WrongCourseLinear(4), x, raise_exception=False)


class TwoPairsCourseLinear(CourseLinear):
    """The course's linear map whose param() returns its pair twice."""

    def param(self) -> list[tuple[Tensor, Tensor]]:
        return [(self.weight, self.grad_weight), (self.weight, self.grad_weight)]


class TensorCourseLinear(CourseLinear):
    """The course's linear map whose param() returns its weight alone, not a list of pairs."""

    def param(self) -> Tensor:  # type: ignore[override]
        return self.weight


def test_an_override_of_param_is_named_once_per_module_and_says_what_it_returned() -> None:
    """The refusal names the first module whose param() is overridden, counts the other
    modules so written ('and 1 more' for two, each returning two pairs of its own), and says
    what an override returning no list returned."""
    pair = r"a pair of a tensor of shape \(2, 2\), torch\.float64 and a tensor of shape \(2, 2\), "
    with pytest.raises(
        ValueError,
        match=r"^Sequential: TwoPairsCourseLinear\.param \(the module at '0'\) \(and 1 more\) "
        r"is overridden and returns item 0, " + pair + r"torch\.float64, not the \(value, grad\)",
    ):
        nn.Sequential(TwoPairsCourseLinear(2), nn.Tanh(), TwoPairsCourseLinear(2))
    with pytest.raises(
        ValueError,
        match=r"^Sequential: TensorCourseLinear\.param \(the module at '1'\) is overridden and "
        r"returns a Tensor, not a list of pairs, not the \(value, grad\) pair",
    ):
        nn.Sequential(nn.Tanh(), TensorCourseLinear(2))


class Unregistered(nn.Module):
    """A container of one's own that sets its head as a plain attribute (as PyTorch's modules
    may) or its weight as a plain Parameter: neither is registered."""

    def __init__(self, head_as: str) -> None:
        super().__init__()
        self.body = self.register_module("body", nn.Linear(4, 4, dtype=F64))
        if head_as == "module":
            self.head: Any = nn.Linear(4, 2, dtype=F64)
        else:
            self.head = nn.Parameter(torch.randn(2, 4, dtype=F64))
        self._hidden: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self._hidden = self.body(input)
        if isinstance(self.head, nn.Module):
            return self.head(self._hidden)
        return self._hidden @ self.head.data.t()

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._hidden is not None
        if isinstance(self.head, nn.Module):
            return self.body.backward(self.head.backward(grad_output))
        self.head.grad.add_(grad_output.t() @ self._hidden)
        return self.body.backward(grad_output @ self.head.data)


@pytest.mark.parametrize("head_as", ["module", "parameter"])
def test_fit_and_checkpoints_refuse_what_a_module_does_not_register(
    head_as: str, tmp_path: Path
) -> None:
    """fit trained such a model without its head (the optimizer built on parameters() never
    saw it) and save_checkpoint saved it without the head, both silently; they refuse it now,
    as Sequential and gradcheck did, before anything changes."""
    model = Unregistered(head_as)
    x, t = torch.randn(8, 4, dtype=F64), torch.randn(8, 2, dtype=F64)
    head = [
        p.data.clone()
        for p in ([model.head] if head_as == "parameter" else model.head.parameters())
    ]
    body = [p.data.clone() for p in model.parameters()]
    message = (
        r"the Linear in attribute 'head' is not registered, so an optimizer on parameters\(\) "
        r"would not train its parameters"
        if head_as == "module"
        else r"the Parameter in attribute 'head' is not registered, so an optimizer on "
        r"parameters\(\) would not train it"
    )
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="^fit: " + message):
        fit(model, nn.MSELoss(), optimizer, x, t, epochs=1)
    with pytest.raises(CheckpointError, match="^save_checkpoint: " + message):
        save_checkpoint(tmp_path / "c.ckpt", model)
    assert not os.listdir(tmp_path)
    registered = SkipBlock(4).to(F64)
    save_checkpoint(tmp_path / "c.ckpt", registered)
    with pytest.raises(CheckpointError, match="^load_checkpoint: .*" + message):
        load_checkpoint(tmp_path / "c.ckpt", model)
    now = [p.data for p in ([model.head] if head_as == "parameter" else model.head.parameters())]
    assert all(torch.equal(a, b) for a, b in zip(now, head, strict=True))
    assert all(torch.equal(p.data, b) for p, b in zip(model.parameters(), body, strict=True))


# -- data-parallel on two processes --------------------------------------------------------------


class Chain(nn.Module):
    """A Sequential of one's own: its children registered as "0", "1", ...; forward calls them
    in order, backward in reverse. It keeps no flat buffer, so its gradients go through a
    temporary flat copy in data-parallel training."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = [self.register_module(str(i), layer) for i, layer in enumerate(layers)]

    def forward(self, input: Tensor) -> Tensor:
        for layer in self.layers:
            input = layer(input)
        return input

    def backward(self, grad_output: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            grad_output = layer.backward(grad_output)
        return grad_output


def _parallel_run(group: ProcessGroup | None) -> dict[str, Any]:
    """The network without Center (whose batch mean would be each shard's, as a batch norm's
    statistics are) in a container of one's own, from rank-dependent initial weights."""
    x, y = disk(samples=40)
    torch.manual_seed(0 if group is None else group.rank)  # (the broadcast must fix this)
    model = Chain(
        nn.Linear(2, 6), Swish(0.5), GainLinear(6, 6), SkipBlock(6, Swish(1.5)), nn.Linear(6, 2)
    ).to(F64)
    optimizer = optim.Adam(model.parameters(), lr=0.05)
    parallel = DataParallel(model, group) if group is not None else None
    history = fit(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        x,
        y,
        epochs=3,
        batch_size=8,
        max_grad_norm=0.5,
        generator=torch.Generator().manual_seed(0),
        parallel=parallel,
    )
    if parallel is not None:
        parallel.check_in_sync()
    values = torch.cat([p.data.reshape(-1) for p in model.parameters()])
    return {"values": values, "loss": history.train_loss}


def _parallel_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    with ProcessGroup(Launch(rank, 2, rank), timeout=120.0) as group:
        torch.save(_parallel_run(group), Path(out) / f"rank{rank}.pt")


def test_data_parallel_on_two_ranks_trains_modules_of_ones_own_as_one_process(
    tmp_path: Path,
) -> None:
    torch.multiprocessing.spawn(_parallel_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    alone = _parallel_run(None)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    assert torch.equal(ranks[0]["values"], ranks[1]["values"])
    assert relative(ranks[0]["values"], alone["values"]) <= 1e-12
    assert ranks[0]["loss"] == pytest.approx(alone["loss"], rel=1e-12)


def test_a_module_without_forward_or_backward_says_which_it_lacks() -> None:
    """A module of one's own that defines no ``forward`` (or no ``backward``) raises
    NotImplementedError naming its class and the method, as PyTorch's Module does for forward,
    its parameter untouched."""

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = self.register_parameter("gain", nn.Parameter(torch.ones(3)))

    class ForwardOnly(Scale):
        def forward(self, input: Tensor) -> Tensor:
            return input * self.gain.data

    x = torch.randn(2, 3)
    for module in (Scale(), ForwardOnly()):
        if isinstance(module, ForwardOnly):
            module(x)
        else:
            with pytest.raises(NotImplementedError, match=r"^Scale\.forward is not implemented$"):
                module(x)
        with pytest.raises(
            NotImplementedError, match=rf"^{type(module).__name__}\.backward is not implemented$"
        ):
            module.backward(torch.ones(2, 3))
        assert torch.equal(module.gain.data, torch.ones(3))
        assert torch.equal(module.gain.grad, torch.zeros(3))
    with pytest.raises(NotImplementedError, match=r'missing the required "forward" function'):
        torch.nn.Module()(x)


def test_an_activation_or_loss_without_its_hooks_says_which_it_lacks() -> None:
    """An Activation of one's own without ``_forward`` or ``_backward``, and a Loss without
    ``_gradient``, raise NotImplementedError naming the class, the hook and what it returns
    (it was raised without a message), the last good forward kept."""

    class NoForward(nn.Activation):
        pass

    class NoBackward(nn.Activation):
        def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
            return 2 * input, input

    class NoGradient(nn.Loss):
        def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
            self.difference = prediction - target
            return self.difference.square().sum()

    x = torch.randn(2, 3)
    with pytest.raises(
        NotImplementedError,
        match=r"^NoForward\._forward is not implemented \(a subclass of Activation returns "
        r"\(output, cache\) from it\)$",
    ):
        NoForward()(x)
    activation = NoBackward()
    assert torch.equal(activation(x), 2 * x)
    for _ in range(2):  # (the cache kept: refused alike again)
        with pytest.raises(
            NotImplementedError,
            match=r"^NoBackward\._backward is not implemented \(a subclass of Activation returns "
            r"dL/dinput from the upstream gradient and the cache\)$",
        ):
            activation.backward(torch.ones(2, 3))
    loss = NoGradient()
    loss(x, torch.zeros(2, 3))
    with pytest.raises(
        NotImplementedError,
        match=r"^NoGradient\._gradient is not implemented \(a subclass of Loss returns "
        r"dL/dprediction for the last forward\)$",
    ):
        loss.backward()
    assert torch.equal(loss.difference, x)


class _FrozenNorm(nn.Module):
    """A batch norm kept in evaluation mode by its own ``train`` (PyTorch's usual pattern for
    a frozen batch norm): its running statistics never move."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.norm = self.register_module("norm", nn.BatchNorm1d(features))

    def train(self, mode: bool = True) -> _FrozenNorm:
        super().train(mode)
        self.norm.training = False
        return self

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.norm(input)

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return self.norm.backward(grad_output)


def test_train_calls_a_childs_own_train_as_pytorch_does() -> None:
    """``train`` set ``training`` on every module below, so a child's own ``train`` ran only
    when called on that child: inside a model, ``model.train()`` (and fit, which calls it) put
    a frozen batch norm in training mode, and fit moved its running statistics. Each child's
    ``train(mode)`` is called now, as PyTorch's ``Module.train`` does."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), _FrozenNorm(3), nn.Tanh(), nn.Linear(3, 2))
    twin = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    twin[1].train = lambda mode=True: torch.nn.Module.train(twin[1], False)  # type: ignore[method-assign]
    for mode in (True, False, True):
        model.train(mode)
        twin.train(mode)
        assert [m.training for m in model.modules()] == [mode, mode, mode, False, mode, mode]
        assert twin[1].training is False
    statistics = [b.clone() for b in model[1].norm.buffers()]
    x, y = torch.randn(20, 2), torch.randint(2, (20,))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=2, batch_size=5)
    assert all(torch.equal(a, b) for a, b in zip(model[1].norm.buffers(), statistics, strict=True))
    assert model[1].norm.training is False and model.training is True


class _Listed(nn.Module):
    """Hidden layers in a list (minidl has no ModuleList), a layer in a dict and parameters in
    a list, none registered; the output layer registered."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = [nn.Linear(2, 3), nn.Linear(3, 3)]
        self.named = {"extra": nn.Linear(3, 3)}
        self.out = self.register_module("out", nn.Linear(3, 2))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            input = layer(input)
        return self.out(self.named["extra"](input))

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        grad = self.named["extra"].backward(self.out.backward(grad_output))
        for layer in reversed(self.hidden):
            grad = layer.backward(grad)
        return grad


def test_layers_and_parameters_held_in_a_list_or_a_dict_are_refused() -> None:
    """A module's layers in a list (a ModuleList's place) or a dict were not looked for: fit
    trained the registered output layer alone for three epochs and left the hidden ones as
    they were, without a word; Sequential took the module, save_checkpoint saved the output
    layer only. Such a module is refused now, naming the item, where a tuple still keeps a
    layer out on purpose."""
    from minidl.nn.module import unregistered_modules, unregistered_parameters

    torch.manual_seed(0)
    model = _Listed()
    x, y = torch.randn(10, 2), torch.randint(2, (10,))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    refusal = (
        r"the Linear in attribute 'hidden\[0\]' \(and 2 more\) is not registered, so an "
        r"optimizer on parameters\(\) would not train its parameters, .*; register each module "
        r"of self\.hidden \(self\.register_module\(f'hidden\{i\}', module\): minidl has no "
        r"ModuleList; a Sequential of them registers them as its children\), or, to keep them "
        r"out on purpose, hold them in a tuple$"
    )
    with pytest.raises(ValueError, match=r"^fit: " + refusal):
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=3)
    with pytest.raises(ValueError, match=r"^Sequential: .*'0\.hidden\[0\]' \(and 2 more\)"):
        nn.Sequential(model)
    assert [path for path, _ in unregistered_modules(model)] == [
        "hidden[0]",
        "hidden[1]",
        "named['extra']",
    ]
    model.weights = [nn.Parameter(torch.zeros(2))]  # type: ignore[attr-defined]
    assert unregistered_parameters(model) == ["weights[0]"]
    model.hidden = tuple(model.hidden)  # type: ignore[assignment]
    model.named = (model.named["extra"],)  # type: ignore[assignment]
    model.weights = ()  # type: ignore[attr-defined]
    assert unregistered_modules(model) == [] and unregistered_parameters(model) == []


def test_fit_names_the_loss_whose_gradient_the_model_refuses() -> None:
    """A loss of one's own whose gradient has another shape than its prediction was refused by
    the model's last layer, "Linear: gradient has shape (8,)", with nothing to say that the
    loss made it. fit notes where the gradient came from, with both shapes."""

    class SummedRows(nn.Loss):
        def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
            self.difference = prediction - target.unsqueeze(1).to(prediction.dtype)
            return (self.difference**2).mean()

        def _gradient(self) -> Tensor:  # (wrong: the rows summed, shape (N,))
            return (2 * self.difference / self.difference.numel()).sum(1)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
    x = torch.randn(16, 2)
    y = (x[:, 0] > 0).long()
    with pytest.raises(ValueError, match=r"^Linear: gradient has shape \(8,\)") as info:
        fit(model, SummedRows(), optim.SGD(model.parameters(), lr=0.1), x, y, epochs=1,
            batch_size=8)  # fmt: skip
    assert info.value.__notes__[-1] == (
        "fit gave the model's backward the loss's gradient, SummedRows.backward(): a gradient "
        "of shape (8,), torch.float32, for a prediction of shape (8, 2), torch.float32"
    )
