"""minidl.interop under hypothesis: random torch.nn models against PyTorch autograd (float64).

A drawn model is a ``torch.nn.Sequential`` of 1 to 4 blocks, each a ``Linear`` (bias or not), an
activation of every supported kind with random hyper-parameters (``LeakyReLU``'s slope, ``ELU``'s
alpha, ``GELU``'s approximation, ``Softmax``'s and ``LogSoftmax``'s ``dim``, ``Dropout``'s ``p``,
``inplace=True`` at times), a ``BatchNorm1d`` (random ``eps``, ``momentum`` or ``None``,
``affine`` or not, trained running statistics and count), a nested ``Sequential`` (numbered or
named children, empty included) or a ``TorchResidual``; widths and batches from 1; a layer or
container without tensors used again at another place, weights tied between two layers,
running statistics shared by two batch norms, and the modules' modes mixed. Each is checked:

* :func:`from_torch` gives the same output, input gradient and parameter gradients (minidl's
  backward against autograd) over two training or evaluation passes (gradients accumulated),
  and the running statistics updated alike, to 1e-10 relative; it refuses only an in-place
  layer that changes the input of a residual block, and converts the model without it;
* ``to_torch(from_torch(model))`` is the model again: the same layers, settings and modes at
  every place, the same state dict, the same ties, and bit for bit the same outputs and
  gradients (to rounding where the model has in-place layers, whose backward rounds otherwise);
* conversion leaves the model (values, gradients, modes, ties, objects) and torch's global
  random stream alone, and copies: no tensor of the result shares memory with the model's;
* a layer minidl cannot convert, put anywhere in a drawn model, is a ``ConversionError`` that
  names its path, its type and what is supported or why it is refused, and the model is left as
  it was; so is a layer with parameters at a second place (naming both), and, for ``to_torch``,
  a minidl layer that torch.nn has not.

Left out, as minidl deliberately differs (docs/pytorch.md): a batch of one in a training batch
norm (both refuse it, PyTorch after counting it), and running statistics shared by a batch norm
in evaluation mode and a later one in training mode (PyTorch's backward reads them updated).
The examples are the same on every run (the ``default`` profile of conftest.py); about 15 s.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from minidl import nn
from minidl.interop import ConversionError, TorchResidual, from_torch, to_torch
from minidl.nn.module import Module

tnn = torch.nn
F64 = torch.float64
TOL = 1e-10
SUPPORTED_TORCH = (
    "; supported: Sequential, Linear, ReLU, Tanh, Sigmoid, LeakyReLU, ELU, SELU, GELU, SiLU, "
    "Dropout, BatchNorm1d, Identity, Softmax, LogSoftmax, TorchResidual"
)
SUPPORTED_MINIDL = SUPPORTED_TORCH.replace("TorchResidual", "Residual")
WIDTHS = st.integers(1, 6)
_FUZZ = settings(max_examples=200, deadline=None)

# -- drawing torch.nn models ----------------------------------------------------------------------


@dataclass
class Drawn:
    """A drawn model, the width of its input and the size of its batches."""

    model: tnn.Sequential
    width: int
    batch: int

    def __repr__(self) -> str:  # (hypothesis prints it for a failing example)
        return f"Drawn(width={self.width}, batch={self.batch}, model={self.model!r})"


def _activation(draw: st.DrawFn) -> tnn.Module:
    """A supported layer without parameters, with random hyper-parameters."""
    kind = draw(
        st.sampled_from(
            [
                "relu",
                "tanh",
                "sigmoid",
                "selu",
                "silu",
                "identity",
                "leaky",
                "elu",
                "gelu",
                "softmax",
                "log-softmax",
                "dropout",
                "dropout",
            ]
        )
    )
    simple: dict[str, type[tnn.Module]] = {
        "relu": tnn.ReLU,
        "tanh": tnn.Tanh,
        "sigmoid": tnn.Sigmoid,
        "selu": tnn.SELU,
        "silu": tnn.SiLU,
        "identity": tnn.Identity,
    }
    # (which from_torch refuses where it changes the input of a residual block, and does not
    # carry elsewhere)
    inplace = (
        kind in ("relu", "selu", "silu", "leaky", "elu", "dropout") and draw(st.integers(0, 5)) == 0
    )
    if kind in simple:
        return simple[kind](inplace=True) if inplace else simple[kind]()
    if kind == "leaky":
        slope = draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 3.0))
        return tnn.LeakyReLU(slope, inplace=inplace)
    if kind == "elu":
        return tnn.ELU(draw(st.floats(0.01, 3.0)), inplace=inplace)
    if kind == "gelu":
        return tnn.GELU(approximate=draw(st.sampled_from(["none", "tanh"])))
    if kind in ("softmax", "log-softmax"):
        dim = draw(st.sampled_from([1, -1]))
        return tnn.Softmax(dim=dim) if kind == "softmax" else tnn.LogSoftmax(dim=dim)
    return tnn.Dropout(draw(st.sampled_from([0.0, 0.5]) | st.floats(0.0, 0.9)), inplace=inplace)


def _norm(draw: st.DrawFn, width: int) -> tnn.BatchNorm1d:
    """A ``BatchNorm1d`` with random settings, parameters and running statistics (the values
    from torch's global generator, which :func:`models` seeds)."""
    norm = tnn.BatchNorm1d(
        width,
        eps=draw(st.sampled_from([1e-5, 1e-3]) | st.floats(1e-5, 0.5)),
        momentum=draw(st.none() | st.sampled_from([0.0, 0.1, 1.0]) | st.floats(0.0, 1.0)),
        affine=draw(st.booleans()),
        dtype=F64,
    )
    assert norm.running_mean is not None and norm.running_var is not None
    with torch.no_grad():
        if norm.affine:
            norm.weight.uniform_(-2.0, 2.0)
            norm.bias.normal_()
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.2, 3.0)
        norm.num_batches_tracked = torch.tensor(draw(st.integers(0, 20)))
    return norm


_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,4}", fullmatch=True).filter(
    lambda name: not hasattr(tnn.Sequential, name)
)


def _sequence(
    draw: st.DrawFn, width: int, depth: int, shared: list[tnn.Module], low: int = 0
) -> tuple[tnn.Sequential, int]:
    """A ``Sequential`` of ``low`` to 4 blocks, its children numbered or named."""
    count = draw(st.integers(low, 4 if depth == 0 else 3))
    children = []
    for _ in range(count):
        child, width = _block(draw, width, depth + 1, shared)
        children.append(child)
    if depth > 0 and draw(st.booleans()):
        names = draw(st.lists(_NAMES, min_size=count, max_size=count, unique=True))
        return tnn.Sequential(OrderedDict(zip(names, children, strict=True))), width
    return tnn.Sequential(*children), width


def _block(
    draw: st.DrawFn, width: int, depth: int, shared: list[tnn.Module]
) -> tuple[tnn.Module, int]:
    """A layer or container that takes ``width`` features, and the width it gives."""
    kinds = ["linear", "linear", "activation", "activation", "norm"]
    if depth < 3:
        kinds += ["sequential", "residual"]
    kind = draw(st.sampled_from(kinds))
    if kind == "linear":
        out = draw(WIDTHS)
        return tnn.Linear(width, out, bias=draw(st.booleans()), dtype=F64), out
    if kind == "activation":
        if shared and draw(st.integers(0, 3)) == 0:  # the same object at another place
            return draw(st.sampled_from(shared)), width
        layer = _activation(draw)
        shared.append(layer)
        return layer, width
    if kind == "norm":
        return _norm(draw, width), width
    container: tnn.Module
    if kind == "sequential":
        container, out = _sequence(draw, width, depth, shared)
    else:
        block, out = _block(draw, width, depth + 1, shared)
        if out != width:
            block = tnn.Sequential(block, tnn.Linear(out, width, dtype=F64))
        container, out = TorchResidual(block), width
    if out == width and not _holds_tensors(container):  # (may come again at another place)
        shared.append(container)
    return container, out


def _holds_tensors(module: tnn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _tie(draw: st.DrawFn, model: tnn.Module) -> None:
    """Tie up to two pairs of parameters of one shape (a Linear's bias and a batch norm's
    weight, say): the later place gets the earlier one's ``Parameter``; and a buffer of two
    batch norms."""
    for _ in range(draw(st.integers(0, 2))):
        places = [
            (owner, leaf, parameter)
            for owner in model.modules()
            for leaf, parameter in owner._parameters.items()
            if parameter is not None
        ]
        pairs = [
            (i, j)
            for i in range(len(places))
            for j in range(i + 1, len(places))
            if places[i][2].shape == places[j][2].shape and places[i][2] is not places[j][2]
        ]
        if not pairs:
            break
        i, j = draw(st.sampled_from(pairs))
        owner, leaf, _ = places[j]
        setattr(owner, leaf, places[i][2])
    # Running statistics of two batch norms, one tensor (of the same name: a running variance
    # must stay positive), which both update in place.
    norms = [module for module in model.modules() if isinstance(module, tnn.BatchNorm1d)]
    leaf = draw(st.sampled_from(["running_mean", "running_var", "num_batches_tracked"]))
    pairs = [
        (a, b)
        for a in norms
        for b in norms
        if a is not b and getattr(a, leaf).shape == getattr(b, leaf).shape
    ]
    if pairs and draw(st.booleans()):
        first, second = draw(st.sampled_from(pairs))
        setattr(second, leaf, getattr(first, leaf))


@st.composite
def models(draw: st.DrawFn) -> Drawn:
    """A model as the module's docstring says, its values from a drawn seed of torch's global
    generator, and the width and batch size of its inputs."""
    torch.manual_seed(draw(st.integers(0, 2**16)))
    width = draw(WIDTHS)
    model, _ = _sequence(draw, width, 0, [], low=1)
    _tie(draw, model)
    model.train(draw(st.booleans()))
    modules = list(model.modules())
    for index in draw(st.lists(st.integers(0, len(modules) - 1), max_size=3)):
        modules[index].training = not modules[index].training  # this module's mode only
    # (a batch norm in evaluation mode whose running statistics a later one in training mode
    # updates: torch's backward of the first reads the updated ones, see docs/pytorch.md)
    norms = [module for module in modules if isinstance(module, tnn.BatchNorm1d)]
    for index, norm in enumerate(norms):
        for later in norms[index + 1 :]:
            if {id(b) for b in norm.buffers()} & {id(b) for b in later.buffers()}:
                later.training = norm.training
    batch = draw(st.integers(1, 5))
    if batch == 1 and any(isinstance(m, tnn.BatchNorm1d) and m.training for m in modules):
        batch = 2  # (both refuse one sample in a training batch norm)
    return Drawn(model, width, batch)


# -- what to compare ------------------------------------------------------------------------------


def _close(actual: Tensor, expected: Tensor, what: str) -> None:
    """Equal to ``TOL`` relative to ``max(|expected|, 1)`` (a gradient zero in exact arithmetic,
    the bias before a training batch norm's, is rounding noise in both)."""
    expected = expected.detach()
    assert actual.shape == expected.shape, what
    assert actual.dtype == expected.dtype, what
    if expected.numel() == 0:
        return
    scale = max(float(expected.abs().max()), 1.0)
    error = float((actual - expected).abs().max()) / scale
    assert error <= TOL, f"{what}: error {error:.3g}"


def _places(module: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, module)`` of every place of a model, in the order its forward runs them (a
    module used at two places comes twice), with minidl's numbers for a Sequential's children."""
    yield path, module
    for index, (name, child) in enumerate(module._modules.items()):
        key = str(index) if isinstance(module, tnn.Sequential | nn.Sequential) else name
        yield from _places(child, f"{path}.{key}" if path else key)


def _settings(module: Any) -> tuple[object, ...]:
    """What a layer computes with, besides its tensors, in terms common to both frameworks."""
    name = type(module).__name__.replace("TorchResidual", "Residual")
    if name in ("Softmax", "LogSoftmax"):
        return (name, module.dim % 2)  # (1 and -1 alike, on an (N, C) batch)
    fields = {
        "Linear": ("in_features", "out_features"),
        "LeakyReLU": ("negative_slope",),
        "ELU": ("alpha",),
        "GELU": ("approximate",),
        "Dropout": ("p",),
        "BatchNorm1d": ("num_features", "eps", "momentum", "affine"),
    }.get(name, ())
    return (name, module.training, *(getattr(module, field) for field in fields))


def _renumbered(model: tnn.Module, name: str) -> str:
    """A state dict's key of ``model`` with minidl's numbers for a Sequential's children."""
    owner, _, leaf = name.rpartition(".")
    numbered = dict(
        zip((p for p, _ in _named_places(model)), (p for p, _ in _places(model)), strict=True)
    )
    owner = numbered[owner]
    return f"{owner}.{leaf}" if owner else leaf


def _ties(model: Any) -> list[int]:
    """For each place of a parameter, then of a buffer, the index of its first place (tied
    weights, shared running statistics)."""
    first: dict[int, int] = {}
    pattern = []
    places = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    for index, (_, tensor) in enumerate(places):
        pattern.append(first.setdefault(id(tensor), index))
    return pattern


def _tensors(model: Any) -> list[Tensor]:
    """Every value of a model (parameters, then buffers), as tensors."""
    values = [getattr(parameter, "data", parameter) for parameter in model.parameters()]
    return values + list(model.buffers())


@dataclass
class Snapshot:
    """What conversion must leave as it is in a model: values, modes, ties, the objects."""

    state: list[tuple[str, Tensor]]
    modes: list[tuple[str, bool]]
    ties: list[int]
    objects: list[int]
    grads: list[Tensor | None]

    @classmethod
    def of(cls, model: Any) -> Snapshot:
        state = [
            (f"{path}.{name}", getattr(value, "data", value).detach().clone())
            for path, module in _places(model)
            for registry in (module._parameters, module._buffers)
            for name, value in registry.items()
            if value is not None
        ]
        grads = [
            None if parameter.grad is None else parameter.grad.clone()
            for parameter in model.parameters()
        ]
        return cls(
            state=state,
            modes=[(path, module.training) for path, module in _places(model)],
            ties=_ties(model),
            objects=[id(module) for _, module in _places(model)]
            + [id(parameter) for parameter in model.parameters()],
            grads=grads,
        )

    def check(self, model: Any) -> None:
        again = Snapshot.of(model)
        assert [name for name, _ in again.state] == [name for name, _ in self.state]
        for (name, value), (_, before) in zip(again.state, self.state, strict=True):
            assert value.dtype == before.dtype and torch.equal(value, before), name
        assert again.modes == self.modes
        assert again.ties == self.ties
        assert again.objects == self.objects
        for grad, before in zip(again.grads, self.grads, strict=True):
            assert (grad is None) == (before is None)
            assert grad is None or before is None or torch.equal(grad, before)


def _same_layers(converted: Any, model: Any) -> None:
    """The same layer, settings and mode at every place, and the same ties."""
    places = [(path, _settings(module)) for path, module in _places(converted)]
    assert places == [(path, _settings(module)) for path, module in _places(model)]
    assert _ties(converted) == _ties(model)


def _shares_no_memory(converted: Any, model: Any) -> None:
    """No tensor of ``converted`` in the memory of one of ``model``'s: values are copied."""
    theirs = {tensor.untyped_storage().data_ptr() for tensor in _tensors(model)}
    for tensor in _tensors(converted):
        assert tensor.untyped_storage().data_ptr() not in theirs


def _passes(drawn: Drawn, minidl_model: Module, twin: tnn.Module) -> None:
    """Two passes (forward with the same dropout masks, backward of a random upstream gradient)
    through the torch model, its conversion and ``twin``, a torch model that must match it bit
    for bit; gradients accumulate over the two. Compared after each: outputs, input gradients,
    parameter gradients, buffers (the running statistics a training batch norm updates).

    Where autograd refuses the torch model's backward (an in-place layer that changed a tensor
    that the backward of the layer before needs, the output of a Tanh), the gradients of
    ``twin``, equal to it forward and without in-place layers, are the oracle."""
    model = drawn.model
    # (an in-place layer's backward may round otherwise: the twin's gradients are then close)
    exact = not any(getattr(module, "inplace", False) for module in model.modules())
    refused = False  # (by autograd: the torch model's gradients are then left out)
    # (a stream of its own: an input equal to a running mean, drawn from the same seed, lies on
    # the kink of a ReLU after the batch norm, where the two round its 0 apart)
    generator = torch.Generator().manual_seed(2**20 + drawn.batch)
    for step in range(2):
        x = torch.randn(drawn.batch, drawn.width, dtype=F64, generator=generator)
        outputs = []
        for run in (model, twin):
            leaf = x.clone().requires_grad_()
            torch.manual_seed(step)  # the same dropout masks in all three
            outputs.append((run(leaf.clone()), leaf))  # (an in-place first layer changes it)
        torch.manual_seed(step)
        output = minidl_model(x)
        (expected, leaf), (twin_output, twin_leaf) = outputs
        _close(output, expected, f"pass {step}: output")
        assert torch.equal(twin_output, expected)
        upstream = torch.randn(expected.shape, dtype=F64, generator=generator)
        (twin_output * upstream).sum().backward()
        if not refused:
            try:
                (expected * upstream).sum().backward()
            except RuntimeError as error:
                assert not exact and "modified by an inplace operation" in str(error)
                refused = True
        assert twin_leaf.grad is not None
        _close(minidl_model.backward(upstream), twin_leaf.grad, f"pass {step}: input gradient")
        names = [name for name, _ in model.named_parameters()]
        for name, parameter, twin_parameter in zip(
            names, minidl_model.parameters(), twin.parameters(), strict=True
        ):
            assert twin_parameter.grad is not None
            _close(parameter.grad, twin_parameter.grad, f"pass {step}: gradient of {name}")
        if not refused:
            expected_grads = [leaf.grad, *(p.grad for p in model.parameters())]
            for grad, twin_grad in zip(
                expected_grads, [twin_leaf.grad, *(p.grad for p in twin.parameters())], strict=True
            ):
                grad = torch.zeros_like(twin_grad) if grad is None else grad
                if exact:
                    assert torch.equal(twin_grad, grad)
                else:
                    _close(twin_grad, grad, f"pass {step}: the twin's gradient")
        names = [name for name, _ in model.named_buffers()]
        for name, buffer, torch_buffer, twin_buffer in zip(
            names, minidl_model.buffers(), model.buffers(), twin.buffers(), strict=True
        ):
            assert torch.equal(twin_buffer, torch_buffer), name
            if buffer.is_floating_point():
                _close(buffer, torch_buffer, f"pass {step}: {name}")
            else:
                assert buffer.dtype == torch_buffer.dtype and torch.equal(buffer, torch_buffer)


# -- the properties -------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(drawn=models())
def test_from_torch_computes_trains_and_round_trips_as_the_torch_model(drawn: Drawn) -> None:
    """The first three points of the module's docstring, on one drawn model."""
    model = drawn.model
    before = Snapshot.of(model)
    random_state = torch.random.get_rng_state()

    try:
        converted = from_torch(model)
    except ConversionError as error:
        # Only a layer that changes a residual block's input in place, which torch's skip
        # connection then adds; without it the model converts.
        found = re.fullmatch(
            r"from_torch: cannot convert the layer at '([^']*)' of type \S+ \(inplace=True at "
            r"the input of the block of the TorchResidual .*",
            str(error),
        )
        assert found is not None, str(error)
        assert model.get_submodule(found[1]).inplace
        before.check(model)
        for module in model.modules():
            if hasattr(module, "inplace"):
                module.inplace = False
        before = Snapshot.of(model)
        converted = from_torch(model)
    assert torch.equal(torch.random.get_rng_state(), random_state)
    before.check(model)
    assert isinstance(converted, nn.Sequential)
    _same_layers(converted, model)
    _shares_no_memory(converted, model)
    for parameter in converted.parameters():
        assert not parameter.grad.any()

    converted_before = Snapshot.of(converted)
    back = to_torch(converted)
    assert torch.equal(torch.random.get_rng_state(), random_state)
    converted_before.check(converted)
    assert isinstance(back, tnn.Sequential)
    _same_layers(back, model)
    _shares_no_memory(back, converted)
    expected = {_renumbered(model, name): value for name, value in model.state_dict().items()}
    state = back.state_dict()
    assert list(state) == list(expected)
    for name, value in state.items():
        assert value.dtype == expected[name].dtype and torch.equal(value, expected[name]), name
    assert all(parameter.requires_grad for parameter in back.parameters())

    _passes(drawn, converted, back)


# -- what minidl refuses --------------------------------------------------------------------------


class _Tanh(tnn.Tanh):
    """A subclass of a supported layer: it may compute something else."""


def _with_extra_parameter() -> tnn.Module:
    layer = tnn.Tanh()
    layer.register_parameter("extra", tnn.Parameter(torch.zeros(2, dtype=F64)))
    return layer


def _with_hook() -> tnn.Module:
    layer = tnn.Linear(2, 2, dtype=F64)
    layer.register_forward_hook(lambda module, args, output: output * 2)
    return layer


def _with_forward() -> tnn.Module:
    layer = tnn.ReLU()
    layer.forward = torch.tanh  # type: ignore[method-assign]
    return layer


def _mixed_dtypes() -> tnn.Module:
    layer = tnn.Linear(2, 3, dtype=F64)
    layer.bias = tnn.Parameter(torch.zeros(3))
    return layer


def _bad_shape() -> tnn.Module:
    layer = tnn.Linear(2, 3, dtype=F64)
    layer.bias = tnn.Parameter(torch.zeros(1, dtype=F64))
    return layer


def _not_tracking() -> tnn.Module:
    norm = tnn.BatchNorm1d(3, dtype=F64)
    norm.track_running_stats = False
    return norm


def _with_dim(layer: tnn.Softmax | tnn.LogSoftmax, dim: object) -> tnn.Module:
    """A softmax whose ``dim`` is set after it was built (torch 2.14's constructor refuses a
    bool or a float; one set by hand, or unpickled from an older torch, still reaches
    from_torch)."""
    layer.dim = dim  # type: ignore[assignment]
    return layer


def _gelu(approximate: str) -> tnn.Module:
    layer = tnn.GELU()
    layer.approximate = approximate
    return layer


#: Layers that from_torch refuses, each with the end of its message after the type: the
#: supported layers for a type that has none, else the reason in brackets.
BAD_TORCH_LAYERS: dict[str, tuple[Any, str]] = {
    "mish": (tnn.Mish, SUPPORTED_TORCH),
    "hardtanh": (tnn.Hardtanh, SUPPORTED_TORCH),
    "softplus": (tnn.Softplus, SUPPORTED_TORCH),
    "prelu": (lambda: tnn.PReLU(dtype=F64), SUPPORTED_TORCH),
    "layer-norm": (lambda: tnn.LayerNorm(3, dtype=F64), SUPPORTED_TORCH),
    "batch-norm-2d": (lambda: tnn.BatchNorm2d(3, dtype=F64), SUPPORTED_TORCH),
    "conv": (lambda: tnn.Conv1d(1, 1, 1, dtype=F64), SUPPORTED_TORCH),
    "flatten": (tnn.Flatten, SUPPORTED_TORCH),
    "alpha-dropout": (tnn.AlphaDropout, SUPPORTED_TORCH),
    "subclass": (_Tanh, SUPPORTED_TORCH),
    "softmax-dim-0": (
        lambda: tnn.Softmax(dim=0),
        " (dim=0; only dim=1 (or -1) is supported)" + SUPPORTED_TORCH,
    ),
    "softmax-dim-none": (
        tnn.Softmax,
        " (dim=None; only dim=1 (or -1) is supported)" + SUPPORTED_TORCH,
    ),
    "softmax-dim-true": (
        lambda: _with_dim(tnn.Softmax(dim=1), True),
        " (dim=True; only dim=1 (or -1) is supported)" + SUPPORTED_TORCH,
    ),
    "log-softmax-dim-1.0": (
        lambda: _with_dim(tnn.LogSoftmax(dim=1), 1.0),
        " (dim=1.0; only dim=1 (or -1) is supported)" + SUPPORTED_TORCH,
    ),
    "log-softmax-dim-2": (
        lambda: tnn.LogSoftmax(dim=2),
        " (dim=2; only dim=1 (or -1) is supported)" + SUPPORTED_TORCH,
    ),
    "log-softmax-dim--2": (
        lambda: tnn.LogSoftmax(dim=-2),
        " (dim=-2; only dim=1 (or -1) is supported)" + SUPPORTED_TORCH,
    ),
    "leaky-inf": (
        lambda: tnn.LeakyReLU(float("inf")),
        " (LeakyReLU: negative_slope must be a finite number, got inf)",
    ),
    "elu-nan": (lambda: tnn.ELU(math.nan), " (ELU: alpha must be a finite number, got nan)"),
    "dropout-one": (lambda: tnn.Dropout(1.0), " (Dropout: p must be in [0, 1), got 1.0)"),
    "norm-momentum": (
        lambda: tnn.BatchNorm1d(3, momentum=1.5, dtype=F64),
        " (BatchNorm1d: momentum must be",
    ),
    "norm-eps": (lambda: tnn.BatchNorm1d(3, eps=0.0, dtype=F64), " (BatchNorm1d: eps must be"),
    "norm-untracked": (
        lambda: tnn.BatchNorm1d(3, track_running_stats=False, dtype=F64),
        " (track_running_stats=False)" + SUPPORTED_TORCH,
    ),
    "norm-untracked-later": (_not_tracking, " (track_running_stats=False)" + SUPPORTED_TORCH),
    "gelu-exact": (
        lambda: _gelu("exact"),
        " (GELU: approximate must be 'none' or 'tanh', got 'exact')",
    ),
    "extra-parameter": (
        _with_extra_parameter,
        " (parameters or buffers that minidl's Tanh has not: ['extra'])",
    ),
    "hook": (_with_hook, " (it has a forward hook, "),
    "forward": (_with_forward, " (its forward is replaced on the object by "),
    "dtypes": (_mixed_dtypes, " (its tensors have different dtypes: weight torch.float64, "),
    "shape": (_bad_shape, " (its bias has shape (1,), where its sizes give (3,))"),
    "in-place": (
        lambda: tnn.ReLU(inplace=True),
        " (inplace=True at the input of the block of the TorchResidual at ",
    ),
}


def _without_in_place(model: tnn.Module) -> None:
    """``inplace=False`` everywhere in ``model``: where it is drawn, from_torch may refuse it."""
    for module in model.modules():
        if hasattr(module, "inplace"):
            module.inplace = False


def _put(
    draw: st.DrawFn, model: tnn.Sequential, layer: tnn.Module, wraps: tuple[str, ...] = ()
) -> str:
    """Put ``layer`` into a ``Sequential`` of ``model``, at a random index, under a name not
    taken, alone or inside a ``Sequential`` or ``TorchResidual`` of its own (one of ``wraps``),
    which may pass it the residual's input unchanged; its path (torch's names, which
    from_torch's messages give)."""
    # (one at one place: put into one at two, a layer with parameters makes it a module with
    # parameters at two places, refused as that)
    places = [id(module) for _, module in _named_places(model)]
    containers = [
        (path, module)
        for path, module in model.named_modules()
        if isinstance(module, tnn.Sequential) and places.count(id(module)) == 1
    ]
    torch_path, container = draw(st.sampled_from(containers))
    wrap = draw(st.sampled_from(wraps or ("", "sequential", "residual", "passing")))
    placed: tnn.Module = layer
    inner = ""
    if wrap == "sequential":
        placed, inner = tnn.Sequential(tnn.Tanh(), layer), ".1"
    elif wrap == "residual":
        placed, inner = TorchResidual(layer), ".block"
    elif wrap == "passing":  # (each of the three may return its input itself)
        passing = tnn.Sequential(tnn.Dropout(0.3), tnn.Identity(), tnn.Sequential(), layer)
        placed, inner = TorchResidual(passing), ".block.3"
    items = list(container._modules.items())
    index = draw(st.integers(0, len(items)))
    name = "bad"
    items.insert(index, (name, placed))
    container._modules.clear()
    container._modules.update(items)
    return (f"{torch_path}.{name}" if torch_path else name) + inner


@pytest.mark.parametrize("bad", sorted(BAD_TORCH_LAYERS))
@settings(max_examples=10, deadline=None)
@given(drawn=models(), data=st.data())
def test_a_layer_minidl_cannot_convert_is_refused_anywhere_naming_its_path(
    bad: str, drawn: Drawn, data: st.DataObject
) -> None:
    make, ending = BAD_TORCH_LAYERS[bad]
    layer = make()
    model = drawn.model
    _without_in_place(model)
    # (elsewhere it is not carried)
    wraps = ("residual", "passing") if bad == "in-place" else ()
    path = data.draw(st.composite(lambda draw: _put(draw, model, layer, wraps))())
    before = Snapshot.of(model)
    random_state = torch.random.get_rng_state()
    try:
        from_torch(model)
    except ConversionError as error:
        message = str(error)
    else:
        raise AssertionError(f"from_torch took {bad} at {path!r}")
    kind = type(layer)
    start = f"from_torch: cannot convert the layer at {path!r} of type {kind.__module__}."
    start += kind.__qualname__
    assert message.startswith(start + ending), message
    if ending.endswith(SUPPORTED_TORCH):
        assert message.endswith(SUPPORTED_TORCH), message
    before.check(model)
    assert torch.equal(torch.random.get_rng_state(), random_state)


@_FUZZ
@given(drawn=models(), data=st.data())
def test_a_layer_with_parameters_at_two_places_is_refused_naming_both(
    drawn: Drawn, data: st.DataObject
) -> None:
    """A Linear or BatchNorm1d of the model put again at another place: refused at the later of
    the two in forward order, naming the earlier (tied weights convert; one object cannot)."""
    model = drawn.model
    _without_in_place(model)
    with_parameters = [
        module for module in model.modules() if isinstance(module, tnn.Linear | tnn.BatchNorm1d)
    ]
    layer = data.draw(
        st.sampled_from(with_parameters) if with_parameters else st.just(_norm_like())
    )
    if not with_parameters:
        model.append(layer)
    data.draw(st.composite(lambda draw: _put(draw, model, layer))())
    first, second = [path for path, module in _named_places(model) if module is layer][:2]
    before = Snapshot.of(model)
    try:
        from_torch(model)
    except ConversionError as error:
        message = str(error)
    else:
        raise AssertionError("from_torch took one layer at two places")
    assert message == (
        f"from_torch: the layer at {second!r} is the {type(layer).__name__} already at "
        f"{first!r}: one module object used at two places, which minidl cannot express (each "
        "of its modules keeps its own forward's cache for its backward); share its tensors "
        "instead, two modules holding the same Parameter (second.weight = first.weight) or "
        "buffer, which converts, or give each place a copy of its own (copy.deepcopy)"
    )
    before.check(model)


def _norm_like() -> tnn.Module:
    return tnn.BatchNorm1d(2, dtype=F64)


def _named_places(module: tnn.Module, path: str = "") -> Iterator[tuple[str, tnn.Module]]:
    """``(path, module)`` of every place, in torch's names and forward order."""
    yield path, module
    for name, child in module._modules.items():
        assert child is not None
        yield from _named_places(child, f"{path}.{name}" if path else name)


class _Custom(Module):
    """A minidl layer that torch.nn has no counterpart for."""

    def forward(self, input: Tensor) -> Tensor:
        return input

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


class _MinidlTanh(nn.Tanh):
    """A subclass of a supported minidl layer."""


def _minidl_with_buffer() -> Module:
    layer = nn.Tanh()
    layer.register_buffer("extra", torch.zeros(2, dtype=F64))
    return layer


def _minidl_norm_assigned() -> Module:
    norm = nn.BatchNorm1d(3, dtype=F64)
    norm.running_mean = torch.zeros(3, dtype=F64)
    return norm


#: minidl layers that to_torch refuses, with the end of their message after the type.
BAD_MINIDL_LAYERS: dict[str, tuple[Any, str]] = {
    "custom": (_Custom, SUPPORTED_MINIDL),
    "subclass": (_MinidlTanh, SUPPORTED_MINIDL),
    "batched": (
        lambda: nn.BatchedLinear(2, 2, 3, dtype=F64),
        " (a stack of models: convert each, from minidl.nn.unstack_model(stack, index))"
        + SUPPORTED_MINIDL,
    ),
    "extra-buffer": (
        _minidl_with_buffer,
        " (parameters or buffers that torch.nn's Tanh has not: ['extra'])",
    ),
    "assigned-buffer": (
        _minidl_norm_assigned,
        " (its attribute 'running_mean' is not its registered buffer 'running_mean' ",
    ),
}


@pytest.mark.parametrize("bad", sorted(BAD_MINIDL_LAYERS))
@settings(max_examples=30, deadline=None)
@given(
    drawn=models(),
    index=st.integers(0, 10),
    wrap=st.sampled_from(["", "sequential", "residual"]),
)
def test_a_layer_torch_has_not_is_refused_anywhere_naming_its_path(
    bad: str, drawn: Drawn, index: int, wrap: str
) -> None:
    _without_in_place(drawn.model)
    converted = from_torch(drawn.model)
    make, ending = BAD_MINIDL_LAYERS[bad]
    layer = make()
    placed, inner = layer, ""
    if wrap == "sequential":
        placed, inner = nn.Sequential(nn.Tanh(), layer), ".1"
    elif wrap == "residual":
        placed, inner = nn.Residual(layer), ".block"
    children = list(converted.children())
    index %= len(children) + 1
    model = nn.Sequential(*children[:index], placed, *children[index:])
    before = Snapshot.of(model)
    converted_before = Snapshot.of(converted)
    random_state = torch.random.get_rng_state()
    try:
        to_torch(model)
    except ConversionError as error:
        message = str(error)
    else:
        raise AssertionError(f"to_torch took {bad}")
    kind = type(layer)
    path = f"{index}{inner}"
    start = f"to_torch: cannot convert the layer at {path!r} of type {kind.__module__}."
    assert message.startswith(start + kind.__qualname__ + ending), message
    if ending.endswith(SUPPORTED_MINIDL):
        assert message.endswith(SUPPORTED_MINIDL), message
    before.check(model)
    converted_before.check(converted)
    assert torch.equal(torch.random.get_rng_state(), random_state)
