"""Oracle audit: the checks the testing rule asks for that the rest of the suite left out.

* Every module and loss not already run over random shapes with a batch of 1 (Softmax,
  LogSoftmax, Identity, Residual, BatchNorm1d in both modes, Dropout, BatchedLinear,
  StackedActivation, BCEWithLogits, NLL, L1, Huber, and the stacked (R, N, C) forms of
  CrossEntropyLoss, MSELoss and StackedLoss) against PyTorch autograd in float64 (forward,
  input gradient, every parameter gradient, relative error 1e-10), and against central finite
  differences (``minidl.gradcheck``, or a numeric gradient where gradcheck cannot reduce the
  output, as for stacked losses), at a relative tolerance of 1e-6 (float64 central
  differences are accurate to about 1e-9; gradcheck's default 1e-3 passed a backward 0.09%
  off).
* Optimizers whose learning rate changes between steps (a schedule) against ``torch.optim``
  given the same rates, minidl schedules driving an optimizer against the torch pair, and
  option combinations the other files leave out, over 60 steps at 1e-10.
* Schedules at the edges of their arguments against ``torch.optim.lr_scheduler``.

Shapes are drawn from seeded generators when the module is collected, so every run tests the
same cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from minidl import nn, optim
from minidl.gradcheck import gradcheck
from tests.helpers import F64, TOL, assert_close

Reference = Callable[[Tensor, dict[str, Tensor]], Tensor]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int, scale: float = 1.0) -> Tensor:
    return scale * torch.randn(*shape, dtype=F64, generator=_generator(seed))


def _away_from_zero(x: Tensor) -> Tensor:
    """Away from the kinks of the piecewise functions, where finite differences straddle them."""
    return x + 0.1 * torch.sign(x)


def _shapes(seed: int, count: int = 4, min_batch: int = 1) -> list[tuple[int, int]]:
    """``(N, C)`` shapes: the smallest batch first (with one feature, then several), then
    random ones."""
    generator = _generator(seed)
    shapes = [(min_batch, 1), (min_batch, int(torch.randint(2, 8, (), generator=generator)))]
    while len(shapes) < count:
        batch = int(torch.randint(min_batch, 10, (), generator=generator))
        features = int(torch.randint(1, 8, (), generator=generator))
        shapes.append((batch, features))
    return shapes


def _check_module(
    module: nn.Module, reference: Reference, x: Tensor, *, rtol: float = TOL
) -> Tensor:
    """Forward, input gradient and every parameter gradient of ``module`` against autograd of
    ``reference`` (given the input and leaf copies of the parameters, by name). Returns the
    upstream gradient used."""
    leaves = {name: p.data.clone().requires_grad_(True) for name, p in module.named_parameters()}
    x_leaf = x.clone().requires_grad_(True)
    expected = reference(x_leaf, leaves)
    upstream = _randn(*expected.shape, seed=99)
    (expected * upstream).sum().backward()
    module.zero_grad()
    output = module(x)
    assert output.dtype == F64
    assert_close(output, expected.detach(), rtol, "forward")
    grad_input = module.backward(upstream)
    assert x_leaf.grad is not None
    assert_close(grad_input, x_leaf.grad, rtol, "input gradient")
    assert len(leaves) == len(list(module.parameters()))
    for name, parameter in module.named_parameters():
        grad = leaves[name].grad
        assert grad is not None, name
        assert_close(parameter.grad, grad, rtol, f"gradient of {name}")
    return upstream


def _numeric_gradient(function: Callable[[Tensor], float], x: Tensor, eps: float = 1e-6) -> Tensor:
    """Central differences of a scalar function, element by element."""
    numeric = torch.zeros_like(x)
    flat, out = x.view(-1), numeric.view(-1)
    for index in range(flat.numel()):
        original = float(flat[index])
        flat[index] = original + eps
        plus = function(x)
        flat[index] = original - eps
        minus = function(x)
        flat[index] = original
        out[index] = (plus - minus) / (2 * eps)
    return numeric


# -- layers over random shapes, batch 1 included ------------------------------------------------


@pytest.mark.parametrize("shape", _shapes(1), ids=str)
@pytest.mark.parametrize("layer", ["softmax", "log_softmax"])
def test_softmax_layers_random_shapes(layer: str, shape: tuple[int, int]) -> None:
    module: nn.Module = nn.Softmax() if layer == "softmax" else nn.LogSoftmax()
    function = F.softmax if layer == "softmax" else F.log_softmax
    x = _randn(*shape, seed=2, scale=3.0)
    _check_module(module, lambda x, _: function(x, dim=1), x)
    assert gradcheck(module, x, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("shape", _shapes(3), ids=str)
def test_identity_random_shapes(shape: tuple[int, int]) -> None:
    x = _randn(*shape, seed=4)
    _check_module(nn.Identity(), lambda x, _: x * 1, x)
    assert gradcheck(nn.Identity(), x, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("shape", _shapes(5), ids=str)
def test_residual_random_shapes(shape: tuple[int, int]) -> None:
    batch, features = shape
    torch.manual_seed(batch * 10 + features)
    module = nn.Residual(nn.Sequential(nn.Linear(features, features, dtype=F64), nn.Tanh()))

    def reference(x: Tensor, p: dict[str, Tensor]) -> Tensor:
        return x + torch.tanh(F.linear(x, p["block.0.weight"], p["block.0.bias"]))

    x = _randn(*shape, seed=6)
    _check_module(module, reference, x)
    assert gradcheck(module, x, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("shape", _shapes(7, min_batch=2), ids=str)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_batch_norm_training_random_shapes(affine: bool, shape: tuple[int, int]) -> None:
    """Training mode from the smallest batch it takes (2): output, gradients and both running
    statistics (the unbiased variance, N/(N-1) = 2 at N = 2) as torch's."""
    features = shape[1]
    module = nn.BatchNorm1d(features, eps=1e-4, momentum=0.3, affine=affine, dtype=F64)
    if module.weight is not None and module.bias is not None:
        module.weight.data.copy_(_randn(features, seed=8))
        module.bias.data.copy_(_randn(features, seed=9))
    module.running_mean.copy_(_randn(features, seed=10))
    module.running_var.copy_(_randn(features, seed=11).abs() + 0.5)
    running_mean, running_var = module.running_mean.clone(), module.running_var.clone()

    def reference(x: Tensor, p: dict[str, Tensor]) -> Tensor:
        return F.batch_norm(
            x,
            running_mean,
            running_var,
            p.get("weight"),
            p.get("bias"),
            training=True,
            momentum=0.3,
            eps=1e-4,
        )

    x = _randn(*shape, seed=12, scale=2.0) + 1.0
    _check_module(module, reference, x)
    assert_close(module.running_mean, running_mean, TOL, "running mean")
    assert_close(module.running_var, running_var, TOL, "running variance")
    module.momentum = 0.0  # gradcheck runs many forwards: keep the statistics still
    assert gradcheck(module, x, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("shape", _shapes(13), ids=str)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_batch_norm_evaluation_random_shapes(affine: bool, shape: tuple[int, int]) -> None:
    """Evaluation mode, batch 1 included: the running statistics, not the batch's."""
    features = shape[1]
    module = nn.BatchNorm1d(features, eps=1e-3, affine=affine, dtype=F64).eval()
    if module.weight is not None and module.bias is not None:
        module.weight.data.copy_(_randn(features, seed=14))
        module.bias.data.copy_(_randn(features, seed=15))
    module.running_mean.copy_(_randn(features, seed=16))
    module.running_var.copy_(_randn(features, seed=17).abs() + 0.5)
    running_mean, running_var = module.running_mean.clone(), module.running_var.clone()

    def reference(x: Tensor, p: dict[str, Tensor]) -> Tensor:
        return F.batch_norm(
            x, running_mean, running_var, p.get("weight"), p.get("bias"), training=False, eps=1e-3
        )

    x = _randn(*shape, seed=18, scale=2.0)
    _check_module(module, reference, x)
    assert torch.equal(module.running_mean, running_mean)
    assert torch.equal(module.running_var, running_var)
    assert gradcheck(module, x, atol=1e-8, rtol=1e-6)


class _SameMaskDropout(nn.Module):
    """Dropout whose generator is reseeded before every forward: the same mask each time, so
    that finite differences see the function that backward differentiates."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.generator = torch.Generator()
        self.dropout = nn.Dropout(p, generator=self.generator)

    def forward(self, input: Tensor) -> Tensor:
        self.generator.manual_seed(21)
        output: Tensor = self.dropout.forward(input)
        return output

    def backward(self, grad_output: Tensor) -> Tensor:
        grad: Tensor = self.dropout.backward(grad_output)
        return grad


@pytest.mark.parametrize("shape", _shapes(19), ids=str)
@pytest.mark.parametrize("p", [0.2, 0.7])
def test_dropout_random_shapes(p: float, shape: tuple[int, int]) -> None:
    """Training mode: torch's mask after the same seed, its gradient, finite differences; the
    mask really drops (at least one zero and one kept element over the cases' sizes)."""
    x = _randn(*shape, seed=20)
    module = nn.Dropout(p)

    def reference(x: Tensor, _: dict[str, Tensor]) -> Tensor:
        torch.manual_seed(22)
        return F.dropout(x, p, training=True)

    leaf = x.clone().requires_grad_(True)
    expected = reference(leaf, {})
    upstream = _randn(*shape, seed=23)
    (expected * upstream).sum().backward()
    torch.manual_seed(22)
    output = module(x)
    assert torch.equal(output, expected.detach())
    assert leaf.grad is not None
    assert torch.equal(module.backward(upstream), leaf.grad)
    assert gradcheck(_SameMaskDropout(p), x, atol=1e-8, rtol=1e-6)
    kept = _SameMaskDropout(p)(torch.ones(40, 10, dtype=F64))
    assert set(kept.unique().tolist()) == {0.0, 1 / (1 - p)}


@pytest.mark.parametrize("shape", _shapes(24), ids=str)
def test_dropout_evaluation_is_the_identity(shape: tuple[int, int]) -> None:
    module = nn.Dropout(0.5).eval()
    _check_module(module, lambda x, _: x * 1, _randn(*shape, seed=25))


def _stacked_shapes(seed: int) -> list[tuple[int, int, int, int]]:
    """``(R, N, in, out)``: one model and a batch of 1 first, then random ones."""
    generator = _generator(seed)
    shapes = [(1, 1, 1, 1), (3, 1, 4, 2)]
    for _ in range(2):
        r, n, i, o = (int(v) for v in torch.randint(1, 7, (4,), generator=generator))
        shapes.append((r, n, i, o))
    return shapes


@pytest.mark.parametrize("shape", _stacked_shapes(26), ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_batched_linear_random_shapes(bias: bool, shape: tuple[int, int, int, int]) -> None:
    models, batch, n_in, n_out = shape
    torch.manual_seed(sum(shape))
    module = nn.BatchedLinear(models, n_in, n_out, bias=bias, dtype=F64)

    def reference(x: Tensor, p: dict[str, Tensor]) -> Tensor:
        out = torch.bmm(x, p["weight"].transpose(1, 2))
        return out + p["bias"].unsqueeze(1) if bias else out

    x = _randn(models, batch, n_in, seed=27)
    _check_module(module, reference, x)
    assert gradcheck(module, x, atol=1e-8, rtol=1e-6)
    # Model r is Linear r: the unstacked layers give each model's slice.
    for r, layer in enumerate(module.unstack()):
        assert_close(layer(x[r]), module(x)[r], TOL, f"model {r}")


STACKED_ACTIVATIONS: list[tuple[Callable[[], nn.Activation], Callable[[Tensor], Tensor]]] = [
    (nn.Tanh, torch.tanh),
    (nn.Sigmoid, torch.sigmoid),
    (nn.ReLU, torch.relu),
    (lambda: nn.LeakyReLU(0.2), lambda t: F.leaky_relu(t, 0.2)),
    (lambda: nn.ELU(0.5), lambda t: F.elu(t, 0.5)),
    (nn.SELU, F.selu),
    (nn.GELU, F.gelu),
    (lambda: nn.GELU("tanh"), lambda t: F.gelu(t, approximate="tanh")),
    (nn.SiLU, F.silu),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch", [1, 4])
def test_stacked_activation_random_runs(batch: int, seed: int) -> None:
    """Every activation in one stack, in a random order; over the seeds each one runs on 1, 2
    and 3 models."""
    generator = _generator(seed)
    order = torch.randperm(len(STACKED_ACTIVATIONS), generator=generator).tolist()
    runs, functions = [], []
    for index in order:
        make, function = STACKED_ACTIVATIONS[index]
        models = 1 + (index + seed) % 3
        runs.append((make(), models))
        functions += [function] * models
    layer = nn.StackedActivation(runs)

    def reference(x: Tensor, _: dict[str, Tensor]) -> Tensor:
        return torch.stack([function(x[r]) for r, function in enumerate(functions)])

    x = _away_from_zero(_randn(len(functions), batch, 3, seed=seed, scale=2.0))
    _check_module(layer, reference, x)
    assert gradcheck(layer, x, atol=1e-8, rtol=1e-6)


GRADCHECKED: dict[str, Callable[[int], nn.Module]] = {
    "linear": lambda features: nn.Linear(features, 3, dtype=F64),
    "linear-no-bias": lambda features: nn.Linear(features, 2, bias=False, dtype=F64),
    "sigmoid": lambda _: nn.Sigmoid(),
    "tanh": lambda _: nn.Tanh(),
    "relu": lambda _: nn.ReLU(),
    "leakyrelu": lambda _: nn.LeakyReLU(0.3),
    "elu": lambda _: nn.ELU(0.7),
    "selu": lambda _: nn.SELU(),
    "gelu": lambda _: nn.GELU(),
    "gelu-tanh": lambda _: nn.GELU("tanh"),
    "silu": lambda _: nn.SiLU(),
    "mlp": lambda features: nn.mlp((features, 4, 2), ("elu",), dtype=F64),
}


@pytest.mark.parametrize("shape", _shapes(28, count=3), ids=str)
@pytest.mark.parametrize("name", list(GRADCHECKED))
def test_finite_differences_with_a_batch_of_one(name: str, shape: tuple[int, int]) -> None:
    """test_gradcheck.py checks these at a batch of 4: here batch 1 too, and other widths."""
    torch.manual_seed(shape[1])
    module = GRADCHECKED[name](shape[1])
    x = _away_from_zero(_randn(*shape, seed=29))
    assert gradcheck(module, x, atol=1e-8, rtol=1e-6)


# -- losses over random shapes, batch 1 included ------------------------------------------------


def _check_loss(
    criterion: nn.Loss,
    reference: Callable[[Tensor, Tensor], Tensor],
    prediction: Tensor,
    target: Tensor,
) -> None:
    leaf = prediction.clone().requires_grad_(True)
    expected = reference(leaf, target)
    expected.backward()
    loss = criterion(prediction, target)
    assert loss.shape == () and loss.dtype == F64
    assert_close(loss, expected.detach(), TOL, "loss")
    assert leaf.grad is not None
    assert_close(criterion.backward(), leaf.grad, TOL, "gradient")
    upstream = torch.tensor(-1.75, dtype=F64)
    assert_close(criterion.backward(upstream), -1.75 * leaf.grad, TOL, "scaled gradient")


LOSS_SHAPES = _shapes(30, count=5)


@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bce_with_logits_random_shapes(reduction: str, shape: tuple[int, int]) -> None:
    logits = _randn(*shape, seed=31, scale=3.0)
    target = torch.rand(*shape, dtype=F64, generator=_generator(32))
    target[0, 0] = 1.0  # a hard label among soft ones
    criterion = nn.BCEWithLogitsLoss(reduction)  # type: ignore[arg-type]
    _check_loss(
        criterion,
        lambda z, t: F.binary_cross_entropy_with_logits(z, t, reduction=reduction),
        logits,
        target,
    )
    assert gradcheck(criterion, logits, target, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nll_random_shapes(reduction: str, shape: tuple[int, int]) -> None:
    batch, classes = shape
    log_probabilities = F.log_softmax(_randn(*shape, seed=33, scale=2.0), dim=1)
    target = torch.randint(classes, (batch,), generator=_generator(34))
    criterion = nn.NLLLoss(reduction)  # type: ignore[arg-type]
    _check_loss(
        criterion, lambda z, t: F.nll_loss(z, t, reduction=reduction), log_probabilities, target
    )
    assert gradcheck(criterion, log_probabilities, target, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_l1_random_shapes(reduction: str, shape: tuple[int, int]) -> None:
    prediction = _randn(*shape, seed=35)
    target = prediction - _away_from_zero(_randn(*shape, seed=36))  # |z - t| >= 0.1
    criterion = nn.L1Loss(reduction)  # type: ignore[arg-type]
    _check_loss(criterion, lambda z, t: F.l1_loss(z, t, reduction=reduction), prediction, target)
    assert gradcheck(criterion, prediction, target, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=str)
@pytest.mark.parametrize("delta", [0.25, 1.0, 3.0])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_huber_random_shapes(reduction: str, delta: float, shape: tuple[int, int]) -> None:
    """Both branches in every case but the 1x1 one: errors below and above ``delta``."""
    prediction = _randn(*shape, seed=37, scale=2.0)
    difference = _randn(*shape, seed=38, scale=2.0 * delta)
    difference.view(-1)[0] = 0.5 * delta  # quadratic
    if difference.numel() > 1:
        difference.view(-1)[1] = -1.5 * delta  # linear
    target = prediction - difference
    criterion = nn.HuberLoss(delta, reduction)  # type: ignore[arg-type]
    _check_loss(
        criterion,
        lambda z, t: F.huber_loss(z, t, reduction=reduction, delta=delta),
        prediction,
        target,
    )
    # Finite differences away from the switch at |z - t| = delta.
    assert bool(((difference.abs() - delta).abs() > 1e-3).all())
    assert gradcheck(criterion, prediction, target, atol=1e-8, rtol=1e-6)


# -- stacked losses (R, N, C) --------------------------------------------------------------------

STACKED_LOSS_SHAPES = [(1, 1, 2), (3, 1, 4), (2, 5, 1), (4, 3, 3), (2, 7, 5)]


def _stacked_target(kind: str, shape: tuple[int, int, int], seed: int) -> Tensor:
    models, batch, classes = shape
    generator = _generator(seed)
    if kind == "indices":
        return torch.randint(classes, (models, batch), generator=generator)
    if kind == "probabilities":
        return torch.rand(*shape, dtype=F64, generator=generator).softmax(dim=-1)
    return torch.randn(*shape, dtype=F64, generator=generator)


def _torch_single_loss(criterion: nn.Loss, z: Tensor, t: Tensor) -> Tensor:
    """The PyTorch value of one model's loss, ``z`` of shape (N, C)."""
    batch, classes = z.shape
    if isinstance(criterion, nn.CrossEntropyLoss):
        return F.cross_entropy(z, t)
    assert isinstance(criterion, nn.MSELoss)
    dense = t if t.is_floating_point() else F.one_hot(t, classes).to(z.dtype)
    if criterion.reduction == "paper":
        return F.mse_loss(z, dense, reduction="sum") / batch
    return F.mse_loss(z, dense, reduction=criterion.reduction)


STACKED_LOSS_CASES: dict[str, tuple[Callable[[], nn.Loss], str]] = {
    "ce-indices": (nn.CrossEntropyLoss, "indices"),
    "ce-probabilities": (nn.CrossEntropyLoss, "probabilities"),
    "mse-paper-indices": (nn.MSELoss, "indices"),
    "mse-paper-dense": (nn.MSELoss, "dense"),
    "mse-mean-dense": (lambda: nn.MSELoss("mean"), "dense"),
    "mse-sum-indices": (lambda: nn.MSELoss("sum"), "indices"),
}


@pytest.mark.parametrize("shape", STACKED_LOSS_SHAPES, ids=str)
@pytest.mark.parametrize("case", list(STACKED_LOSS_CASES))
def test_stacked_losses_match_torch_per_model(case: str, shape: tuple[int, int, int]) -> None:
    """R models at once: loss r is model r's own loss, the gradient that of the sum of the
    losses (autograd and finite differences), R != N included so that no axis is confused."""
    make, kind = STACKED_LOSS_CASES[case]
    criterion = make()
    prediction = _randn(*shape, seed=40, scale=2.0)
    target = _stacked_target(kind, shape, seed=41)
    leaf = prediction.clone().requires_grad_(True)
    expected = torch.stack(
        [_torch_single_loss(criterion, leaf[r], target[r]) for r in range(shape[0])]
    )
    expected.sum().backward()
    losses = criterion(prediction, target)
    assert losses.shape == (shape[0],)
    assert_close(losses, expected.detach(), TOL, "losses")
    gradient = criterion.backward()
    assert leaf.grad is not None
    assert_close(gradient, leaf.grad, TOL, "gradient")

    def total(x: Tensor) -> float:
        return float(make()(x, target).sum())

    numeric = _numeric_gradient(total, prediction.clone())
    torch.testing.assert_close(gradient, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=str)
@pytest.mark.parametrize("case", list(STACKED_LOSS_CASES))
def test_single_model_losses_finite_differences(case: str, shape: tuple[int, int]) -> None:
    """CrossEntropyLoss and MSELoss of one model (N, C), batch 1 included, against finite
    differences (test_gradcheck.py checks them at a batch of 4 only)."""
    make, kind = STACKED_LOSS_CASES[case]
    prediction = _randn(*shape, seed=44, scale=2.0)
    target = _stacked_target(kind, (1, *shape), seed=45)[0]
    assert gradcheck(make(), prediction, target, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("batch", [1, 4])
def test_stacked_loss_values_match_torch(batch: int) -> None:
    """StackedLoss with a different loss per run: each model's loss and gradient at 1e-10."""
    makers = [nn.MSELoss, nn.CrossEntropyLoss, lambda: nn.MSELoss("sum")]
    counts = [2, 1, 2]
    criteria = [make() for make in makers]
    stacked = nn.StackedLoss(list(zip(criteria, counts, strict=True)))
    owners = [c for c, count in zip(criteria, counts, strict=True) for _ in range(count)]
    shape = (len(owners), batch, 3)
    prediction = _randn(*shape, seed=42)
    target = _stacked_target("indices", shape, seed=43)
    leaf = prediction.clone().requires_grad_(True)
    expected = torch.stack(
        [_torch_single_loss(owner, leaf[r], target[r]) for r, owner in enumerate(owners)]
    )
    expected.sum().backward()
    assert_close(stacked(prediction, target), expected.detach(), TOL, "losses")
    assert leaf.grad is not None
    assert_close(stacked.backward(), leaf.grad, TOL, "gradient")


# -- optimizers: learning rates that change, options left out elsewhere ---------------------------

STEPS = 60
MakeOptimizer = Callable[[Iterable[nn.Parameter]], optim.Optimizer]
MakeTorchOptimizer = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


def _model() -> nn.Sequential:
    torch.manual_seed(5)
    return nn.Sequential(
        nn.Linear(3, 5, dtype=F64), nn.Tanh(), nn.Linear(5, 3, dtype=F64, bias=False)
    )


def _torch_forward(parameters: list[torch.nn.Parameter], x: Tensor) -> Tensor:
    return F.linear(torch.tanh(F.linear(x, parameters[0], parameters[1])), parameters[2])


def _batch(step: int) -> tuple[Tensor, Tensor]:
    generator = _generator(1000 + step)
    size = 1 if step % 7 == 3 else int(torch.randint(2, 9, (), generator=generator))
    x = torch.randn(size, 3, dtype=F64, generator=generator)
    return x, torch.randint(3, (size,), generator=generator)


def _train_both(
    optimizer: optim.Optimizer,
    model: nn.Sequential,
    torch_optimizer: torch.optim.Optimizer,
    twin: list[torch.nn.Parameter],
    before_step: Callable[[int], None],
    after_step: Callable[[int], None],
    rtol: float,
) -> None:
    criterion = nn.CrossEntropyLoss()
    for step in range(STEPS):
        before_step(step)
        x, y = _batch(step)
        optimizer.zero_grad()
        criterion(model(x), y)
        model.backward(criterion.backward())
        optimizer.step()
        torch_optimizer.zero_grad()
        F.cross_entropy(_torch_forward(twin, x), y).backward()
        torch_optimizer.step()
        after_step(step)
        for index, (parameter, expected) in enumerate(zip(model.parameters(), twin, strict=True)):
            assert_close(parameter.data, expected.detach(), rtol, f"step {step}, parameter {index}")


#: Optimizers whose update reads the learning rate of the step (not SGD with momentum, whose
#: velocity keeps the old rates' steps by design: see test_sgd_*_velocity_* below).
VARIABLE_LR_CASES: dict[str, tuple[MakeOptimizer, MakeTorchOptimizer]] = {
    "sgd": (lambda p: optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd-weight-decay": (
        lambda p: optim.SGD(p, lr=0.1, weight_decay=0.05),
        lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=0.05),
    ),
    "adam": (
        lambda p: optim.Adam(p, lr=0.02, weight_decay=0.01),
        lambda p: torch.optim.Adam(p, lr=0.02, weight_decay=0.01),
    ),
    "adamw": (
        lambda p: optim.AdamW(p, lr=0.02, weight_decay=0.3),
        lambda p: torch.optim.AdamW(p, lr=0.02, weight_decay=0.3),
    ),
    "rmsprop": (lambda p: optim.RMSprop(p, lr=0.01), lambda p: torch.optim.RMSprop(p, lr=0.01)),
    "rmsprop-momentum-centered": (
        lambda p: optim.RMSprop(p, lr=0.01, momentum=0.7, centered=True, weight_decay=0.02),
        lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.7, centered=True, weight_decay=0.02),
    ),
    "adagrad": (
        lambda p: optim.Adagrad(p, lr=0.1, lr_decay=0.05, initial_accumulator_value=0.1),
        lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.05, initial_accumulator_value=0.1),
    ),
    "adadelta": (
        lambda p: optim.Adadelta(p, lr=1.0, rho=0.8),
        lambda p: torch.optim.Adadelta(p, lr=1.0, rho=0.8),
    ),
}


@pytest.mark.parametrize("case", list(VARIABLE_LR_CASES))
def test_optimizers_follow_a_learning_rate_that_changes_every_step(case: str) -> None:
    """The rate set between steps (as a schedule sets it) is the one the next update uses, as
    ``torch.optim`` uses ``param_groups[0]["lr"]``."""
    make, make_torch = VARIABLE_LR_CASES[case]
    model = _model()
    twin = [torch.nn.Parameter(p.data.clone()) for p in model.parameters()]
    optimizer, torch_optimizer = make(model.parameters()), make_torch(twin)
    base = optimizer.lr

    def set_rate(step: int) -> None:
        rate = base * (1.0 + 0.9 * math.sin(1.3 * step))
        optimizer.lr = rate
        torch_optimizer.param_groups[0]["lr"] = rate

    _train_both(optimizer, model, torch_optimizer, twin, set_rate, lambda _: None, TOL)
    assert optimizer.step_count == STEPS


SELECTIONS: dict[str, Callable[[list[int]], list[int]]] = {
    "reversed": lambda indices: indices[::-1],
    "every-other": lambda indices: indices[::2],
    "middle": lambda indices: indices[1:3],
}


@pytest.mark.parametrize("selection", list(SELECTIONS))
@pytest.mark.parametrize(
    "case", ["sgd", "adam", "rmsprop-momentum-centered", "adagrad", "adadelta"]
)
def test_optimizer_of_part_of_a_flat_model_matches_torch(case: str, selection: str) -> None:
    """An optimizer given some of a Sequential's parameters (views of one flat buffer), or all
    of them in another order, updates those and only those as torch.optim does."""
    make, make_torch = VARIABLE_LR_CASES[case]
    model = _model()
    parameters = list(model.parameters())
    twin = [torch.nn.Parameter(p.data.clone()) for p in parameters]
    chosen = SELECTIONS[selection](list(range(len(parameters))))
    optimizer = make([parameters[i] for i in chosen])
    torch_optimizer = make_torch([twin[i] for i in chosen])
    start = [p.data.clone() for p in parameters]
    _train_both(optimizer, model, torch_optimizer, twin, lambda _: None, lambda _: None, TOL)
    for index, (parameter, before) in enumerate(zip(parameters, start, strict=True)):
        assert torch.equal(parameter.data, before) == (index not in chosen), index


SCHEDULE_PAIRS: dict[
    str,
    tuple[
        Callable[[optim.Optimizer], optim.LRScheduler],
        Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler],
    ],
] = {
    "cosine-restarts": (
        lambda o: optim.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=1e-3),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            o, T_0=5, T_mult=2, eta_min=1e-3
        ),
    ),
    "one-cycle": (
        lambda o: optim.OneCycle(o, max_lr=0.05, total_steps=STEPS),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=0.05, total_steps=STEPS, cycle_momentum=False
        ),
    ),
    "step": (
        lambda o: optim.StepDecay(o, step_size=7, gamma=0.6),
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.6),
    ),
}


@pytest.mark.parametrize("schedule", list(SCHEDULE_PAIRS))
@pytest.mark.parametrize("case", ["adam", "rmsprop-momentum-centered", "adagrad", "adadelta"])
def test_scheduled_optimizers_match_torch(case: str, schedule: str) -> None:
    """A minidl schedule driving a minidl optimizer, stepped once per batch, against the torch
    schedule driving the torch optimizer: the parameters, step after step."""
    make, make_torch = VARIABLE_LR_CASES[case]
    make_schedule, make_torch_schedule = SCHEDULE_PAIRS[schedule]
    model = _model()
    twin = [torch.nn.Parameter(p.data.clone()) for p in model.parameters()]
    optimizer, torch_optimizer = make(model.parameters()), make_torch(twin)
    scheduler = make_schedule(optimizer)
    torch_scheduler = make_torch_schedule(torch_optimizer)

    def step_both(step: int) -> None:
        expected = torch_optimizer.param_groups[0]["lr"]
        assert math.isclose(optimizer.lr, expected, rel_tol=1e-12, abs_tol=1e-17), step
        if step < STEPS - 1:  # OneCycle takes total_steps - 1 steps after the first batch
            scheduler.step()
            torch_scheduler.step()

    _train_both(optimizer, model, torch_optimizer, twin, lambda _: None, step_both, TOL)


@pytest.mark.parametrize("nesterov", [False, True], ids=["momentum", "nesterov"])
def test_sgd_velocity_with_a_changing_rate_is_the_papers(nesterov: bool) -> None:
    """SGD with momentum (and weight decay) under a changing rate follows its docstring's
    formulas: v = mu v + lr (g + wd w); w -= v, or w -= mu v + lr (g + wd w) with Nesterov."""
    model = _model()
    optimizer = optim.SGD(
        model.parameters(), lr=0.1, momentum=0.8, weight_decay=0.03, nesterov=nesterov
    )
    weights = [p.data.clone() for p in model.parameters()]
    velocities = [torch.zeros_like(w) for w in weights]
    criterion = nn.CrossEntropyLoss()
    for step in range(STEPS):
        rate = 0.1 * (1.0 + 0.9 * math.sin(1.3 * step))
        optimizer.lr = rate
        x, y = _batch(step)
        optimizer.zero_grad()
        criterion(model(x), y)
        model.backward(criterion.backward())
        grads = [p.grad.clone() for p in model.parameters()]
        optimizer.step()
        for index, grad in enumerate(grads):
            grad = grad + 0.03 * weights[index]
            velocities[index] = 0.8 * velocities[index] + rate * grad
            update = 0.8 * velocities[index] + rate * grad if nesterov else velocities[index]
            weights[index] = weights[index] - update
        for index, (parameter, expected) in enumerate(
            zip(model.parameters(), weights, strict=True)
        ):
            assert_close(parameter.data, expected, TOL, f"step {step}, parameter {index}")


#: Options and edges that the trajectory tests of test_optim*.py leave out.
EDGE_CASES: dict[str, tuple[MakeOptimizer, MakeTorchOptimizer]] = {
    "adam-beta1-0": (
        lambda p: optim.Adam(p, lr=0.01, betas=(0.0, 0.9)),
        lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.0, 0.9)),
    ),
    "adam-eps-1e-3": (
        lambda p: optim.Adam(p, lr=0.01, eps=1e-3),
        lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-3),
    ),
    "adamw-wd-0": (
        lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.0),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.0),
    ),
    "rmsprop-alpha-0.5-weight-decay": (
        lambda p: optim.RMSprop(p, lr=0.01, alpha=0.5, weight_decay=0.1),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.5, weight_decay=0.1),
    ),
    "rmsprop-momentum-weight-decay": (
        lambda p: optim.RMSprop(p, lr=0.005, momentum=0.9, weight_decay=0.01, eps=1e-4),
        lambda p: torch.optim.RMSprop(p, lr=0.005, momentum=0.9, weight_decay=0.01, eps=1e-4),
    ),
    "adagrad-lr-decay": (
        lambda p: optim.Adagrad(p, lr=0.3, lr_decay=0.1),
        lambda p: torch.optim.Adagrad(p, lr=0.3, lr_decay=0.1),
    ),
    "adagrad-weight-decay": (
        lambda p: optim.Adagrad(p, lr=0.1, weight_decay=0.2),
        lambda p: torch.optim.Adagrad(p, lr=0.1, weight_decay=0.2),
    ),
    "adadelta-rho-1": (
        lambda p: optim.Adadelta(p, lr=0.1, rho=1.0),
        lambda p: torch.optim.Adadelta(p, lr=0.1, rho=1.0),
    ),
    "adadelta-rho-0.99-eps-1e-3": (
        lambda p: optim.Adadelta(p, lr=0.5, rho=0.99, eps=1e-3),
        lambda p: torch.optim.Adadelta(p, lr=0.5, rho=0.99, eps=1e-3),
    ),
    "sgd-nesterov-0.99": (
        lambda p: optim.SGD(p, lr=0.01, momentum=0.99, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.99, nesterov=True),
    ),
    "sgd-lr-0": (
        lambda p: optim.SGD(p, lr=0.0, momentum=0.5, weight_decay=0.1),
        lambda p: torch.optim.SGD(p, lr=0.0, momentum=0.5, weight_decay=0.1),
    ),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_optimizer_options_match_torch(case: str) -> None:
    make, make_torch = EDGE_CASES[case]
    model = _model()
    twin = [torch.nn.Parameter(p.data.clone()) for p in model.parameters()]
    start = [p.data.clone() for p in model.parameters()]
    optimizer, torch_optimizer = make(model.parameters()), make_torch(twin)
    _train_both(optimizer, model, torch_optimizer, twin, lambda _: None, lambda _: None, TOL)
    moved = any(not torch.equal(p.data, s) for p, s in zip(model.parameters(), start, strict=True))
    assert moved == (case != "sgd-lr-0")


# -- schedules at the edges of their arguments ---------------------------------------------------

EDGE_SCHEDULES: dict[
    str,
    tuple[
        Callable[[optim.Optimizer], optim.LRScheduler],
        Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler],
        int,
    ],
] = {
    "step-gamma-0": (
        lambda o: optim.StepDecay(o, step_size=4, gamma=0.0),
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.0),
        30,
    ),
    "step-size-1-gamma-1": (
        lambda o: optim.StepDecay(o, step_size=1, gamma=1.0),
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=1.0),
        30,
    ),
    "exponential-gamma-1": (
        lambda o: optim.ExponentialDecay(o, gamma=1.0),
        lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=1.0),
        30,
    ),
    "cosine-T-1": (
        lambda o: optim.CosineAnnealing(o, T_max=1, eta_min=0.02),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=1, eta_min=0.02),
        40,
    ),
    "restarts-T0-1-mult-3": (
        lambda o: optim.CosineAnnealingWarmRestarts(o, T_0=1, T_mult=3, eta_min=0.01),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            o, T_0=1, T_mult=3, eta_min=0.01
        ),
        130,
    ),
    "restarts-T0-2": (
        lambda o: optim.CosineAnnealingWarmRestarts(o, T_0=2),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=2),
        40,
    ),
    "warmup-default-factor": (
        lambda o: optim.LinearWarmup(o, warmup_steps=25),
        lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=25),
        60,
    ),
    "warmup-one-step-factor-1": (
        lambda o: optim.LinearWarmup(o, warmup_steps=1, start_factor=1.0),
        lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=1.0, total_iters=1),
        20,
    ),
    "cyclic-triangular2-uneven": (
        lambda o: optim.CyclicLR(o, 0.0, 0.2, step_size_up=2, mode="triangular2", step_size_down=5),
        lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, 0.0, 0.2, step_size_up=2, step_size_down=5, mode="triangular2", cycle_momentum=False
        ),
        80,
    ),
    "one-cycle-linear-half": (
        lambda o: optim.OneCycle(
            o,
            max_lr=0.3,
            total_steps=40,
            pct_start=0.5,
            anneal_strategy="linear",
            div_factor=3.0,
            final_div_factor=7.0,
        ),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o,
            max_lr=0.3,
            total_steps=40,
            pct_start=0.5,
            anneal_strategy="linear",
            div_factor=3.0,
            final_div_factor=7.0,
            cycle_momentum=False,
        ),
        39,
    ),
}


@pytest.mark.parametrize("case", list(EDGE_SCHEDULES))
def test_schedule_edges_match_torch(case: str) -> None:
    make, make_torch, steps = EDGE_SCHEDULES[case]
    optimizer = optim.SGD([nn.Parameter(torch.zeros(2, dtype=F64))], lr=0.1)
    torch_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2, dtype=F64))], lr=0.1)
    schedule, torch_schedule = make(optimizer), make_torch(torch_optimizer)
    for step in range(steps + 1):
        expected = torch_optimizer.param_groups[0]["lr"]
        assert math.isclose(optimizer.lr, expected, rel_tol=1e-12, abs_tol=1e-15), (
            f"{case}, step {step}: {optimizer.lr} != {expected}"
        )
        assert math.isclose(schedule.lr_at(step), expected, rel_tol=1e-12, abs_tol=1e-15)
        if step < steps:
            schedule.step()
            torch_optimizer.step()
            torch_schedule.step()


# -- a forward refused part-way through a Sequential ----------------------------------------------


def test_a_forward_refused_part_way_refuses_backward_until_a_forward_succeeds() -> None:
    """A single module keeps its last good forward when refused (test_errors.py). A Sequential
    refused part-way cannot (the modules before the refusing one cached the refused input), so
    its backward is refused, clearly and before any gradient changes, rather than mix the
    caches of two inputs; a forward that succeeds makes it work again. The same for a Residual
    whose block's output is refused, and for a Sequential refused inside a Residual."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(3, 4, dtype=F64), nn.BatchNorm1d(4, dtype=F64), nn.Linear(4, 2, dtype=F64)
    )
    x, upstream = _randn(5, 3, seed=50), _randn(5, 2, seed=51)
    model(x)
    expected = model.backward(upstream)
    expected_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x)
    with pytest.raises(ValueError, match="BatchNorm1d: training mode needs more than one"):
        model(_randn(1, 3, seed=52))  # Linear 0 accepts it, BatchNorm1d refuses it
    for backward in (model.backward, model.backward_parameters):
        with pytest.raises(
            RuntimeError,
            match=r"Sequential: backward after the forward refused "
            r"by module 1 \(BatchNorm1d\)",
        ):
            backward(upstream)
        assert all(not p.grad.any() for p in model.parameters())
    # A refusal by the first module changes nothing: it does not block backward on its own...
    model.eval()
    model(x)
    with pytest.raises(ValueError, match="Linear: expected 3 input features"):
        model(_randn(5, 4, seed=53))
    model.backward(upstream)
    model.zero_grad()
    model.train()
    # ...nor lift the block of an earlier refusal part-way.
    with pytest.raises(ValueError, match=r"^BatchNorm1d: training mode needs more than one"):
        model(_randn(1, 3, seed=52))
    with pytest.raises(ValueError, match=r"^Linear: expected 3 input features, got 4"):
        model(_randn(5, 4, seed=53))
    with pytest.raises(RuntimeError, match="Sequential: backward after"):
        model.backward(upstream)
    model(x)  # the same batch as before: the same gradients as before
    assert torch.equal(model.backward(upstream), expected)
    for parameter, grad in zip(model.parameters(), expected_grads, strict=True):
        assert torch.equal(parameter.grad, grad)

    # A Residual whose block's output has another shape than the input: the block ran.
    class FirstThree(nn.Module):
        """The first three features (a block whose output does not always fit)."""

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            self._width = input.shape[1]
            return input[:, :3]

        def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(grad_output, (0, self._width - 3))

    residual = nn.Residual(FirstThree())
    residual(x)
    with pytest.raises(ValueError, match="Residual: the block's output has shape"):
        residual(_randn(5, 4, seed=53))
    with pytest.raises(RuntimeError, match="Residual: backward after a forward refused"):
        residual.backward(_randn(5, 3, seed=54))
    residual(x)
    assert residual.backward(upstream_3 := _randn(5, 3, seed=54)).equal(2 * upstream_3)
    # A Sequential refused inside a Residual, inside a Sequential.
    outer = nn.Sequential(
        nn.Residual(nn.Sequential(nn.Linear(3, 3, dtype=F64), nn.BatchNorm1d(3, dtype=F64)))
    )
    outer(x)
    with pytest.raises(ValueError, match="BatchNorm1d"):
        outer(_randn(1, 3, seed=52))
    with pytest.raises(
        RuntimeError,
        match="Sequential: backward after the forward refused by "
        r"module 0 \(Residual\)",
    ):
        outer.backward(_randn(5, 3, seed=54))
    outer(x)
    outer.backward(_randn(5, 3, seed=54))
