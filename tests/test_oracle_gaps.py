"""Oracle checks that the other files (test_oracle_audit.py and those it names) still left out.

* Centered RMSprop when the gradient barely varies: its moving variance
  :math:`s - \\bar g^2` is >= 0 in exact arithmetic but rounds below zero, and the square root
  of it made the parameters NaN (as PyTorch's do); it is clamped at 0.
* Every combination of each optimizer's options against ``torch.optim`` over 80 steps, with
  steps whose gradient is exactly zero and gradients from 1e-6 to 1e3.
* BatchNorm1d over many steps: batch sizes that change, training and evaluation interleaved,
  momentum 0 and 1, a feature constant over a batch; the running statistics as torch's.
* Stacked networks (``stack_models``, both layouts) on non-contiguous ``(R, N, in)`` inputs and
  gradients (transposed, stepped, expanded), one model and a batch of 1 included, against each
  model's autograd; backward twice accumulates.
* Stacked CrossEntropyLoss with ``reduction="sum"`` against torch per model, and StackedLoss
  against finite differences.
* Softmax, LogSoftmax, ReLU and LeakyReLU at logits of +-1e4 in float32 and float64 against the
  float64 autograd oracle.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from minidl import nn, optim
from tests.helpers import F64, TOL, assert_close

# -- centered RMSprop with a (nearly) constant gradient ------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "alpha", "momentum"),
    [(F64, 0.0, 0.0), (F64, 0.5, 0.0), (F64, 0.5, 0.6), (torch.float32, 0.9, 0.0)],
    ids=["f64-alpha0", "f64-alpha0.5", "f64-alpha0.5-momentum", "f32-alpha0.9"],
)
def test_centered_rmsprop_stays_finite_under_a_constant_gradient(
    dtype: torch.dtype, alpha: float, momentum: float
) -> None:
    """The same gradient every step: s_t - g_t^2 = (1 - a^t) a^t g^2 >= 0, whose rounding
    went negative (NaN from the first step at alpha = 0, after 51 steps at alpha = 0.5, after
    132 in float32 at alpha = 0.9). Every parameter stays finite, and where torch.optim's
    stay finite (its variance did not round below zero) minidl's follow them.

    At alpha = 0, s = g g rounded and g_bar = g, and s - g_bar^2 by one addcmul is the rounding
    error of g g (negative for about half the elements) where ATen's kernel fuses the multiply
    and the subtraction (AVX2, AVX-512), but exactly 0 where it does not (its default kernels):
    torch.optim's parameters then stay finite, and so the case checks minidl against them only."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(1000, dtype=dtype, generator=generator)
    grad = torch.randn(1000, dtype=dtype, generator=generator)
    parameter, twin = nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    settings = {"lr": 0.01, "alpha": alpha, "momentum": momentum, "centered": True}
    optimizer = optim.RMSprop([parameter], **settings)  # type: ignore[arg-type]
    torch_optimizer = torch.optim.RMSprop([twin], **settings)  # type: ignore[arg-type]
    rtol = 1e-10 if dtype == F64 else 1e-5
    for step in range(160):
        parameter.grad.copy_(grad)
        twin.grad = grad.clone()
        optimizer.step()
        torch_optimizer.step()
        assert bool(parameter.data.isfinite().all()), f"step {step}"
        kept = twin.data.isfinite()
        assert_close(parameter.data[kept], twin.data[kept].detach(), rtol, f"step {step}")
    # (the case does reach torch's NaN, but at alpha = 0 where addcmul is not fused)
    unfused = bool((grad * grad).addcmul(grad, grad, value=-1).eq(0).all())
    assert bool(twin.data.isfinite().all()) == (alpha == 0.0 and unfused)


# -- every combination of each optimizer's options -------------------------------------------------

OPTION_GRIDS: dict[str, dict[str, list[Any]]] = {
    "SGD": {
        "lr": [0.05],
        "momentum": [0.0, 0.5, 0.9],
        "weight_decay": [0.0, 0.1],
        "nesterov": [False, True],
    },
    "Adam": {
        "lr": [0.01],
        "betas": [(0.0, 0.5), (0.9, 0.999)],
        "eps": [1e-8, 1e-2],
        "weight_decay": [0.0, 0.1],
    },
    "AdamW": {
        "lr": [0.01],
        "betas": [(0.0, 0.5), (0.9, 0.999)],
        "eps": [1e-8, 1e-2],
        "weight_decay": [0.0, 0.1],
    },
    "RMSprop": {
        "lr": [0.01],
        "alpha": [0.0, 0.5, 0.99],
        "eps": [1e-8, 1e-2],
        "weight_decay": [0.0, 0.1],
        "momentum": [0.0, 0.7],
        "centered": [False, True],
    },
    "Adagrad": {
        "lr": [0.1],
        "lr_decay": [0.0, 0.1],
        "weight_decay": [0.0, 0.1],
        "initial_accumulator_value": [0.0, 0.5],
        "eps": [1e-10, 1e-3],
    },
    "Adadelta": {"lr": [1.0, 0.3], "rho": [0.0, 0.5, 0.9, 1.0], "eps": [1e-6, 1e-2]},
}


def _option_cases() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for name, grid in OPTION_GRIDS.items():
        for values in itertools.product(*grid.values()):
            options = dict(zip(grid, values, strict=True))
            if options.get("nesterov") and not options["momentum"]:
                continue  # (refused by both)
            # alpha = 0 centered: the variance is 0 but rounds either way, and where it rounds
            # below 0 torch's parameters are NaN (see the test above).
            if options.get("centered") and options["alpha"] == 0.0:
                continue
            cases.append((name, options))
    return cases


OPTION_CASES = _option_cases()


def _gradient(value: Tensor, step: int) -> Tensor:
    """A gradient that depends on the parameters (so a wrong update changes later gradients),
    over many magnitudes (1e-6 to 1e3 across the elements), exactly zero every 11th step."""
    if step % 11 == 5:
        return torch.zeros_like(value)
    magnitudes = torch.logspace(-6, 3, value.numel(), dtype=value.dtype).view_as(value)
    return magnitudes * torch.sin(3.0 * value + 0.7 * step)


@pytest.mark.parametrize(
    ("name", "options"),
    OPTION_CASES,
    ids=[
        f"{n}-" + "-".join(f"{k}={v}" for k, v in o.items() if k != "lr") for n, o in OPTION_CASES
    ],
)
def test_every_option_combination_matches_torch_optim(name: str, options: dict[str, Any]) -> None:
    generator = torch.Generator().manual_seed(len(name))
    starts = [torch.randn(3, 4, dtype=F64, generator=generator), torch.randn(5, dtype=F64)]
    parameters = [nn.Parameter(start.clone()) for start in starts]
    twins = [torch.nn.Parameter(start.clone()) for start in starts]
    make: Callable[..., optim.Optimizer] = getattr(optim, name)
    make_torch: Callable[..., torch.optim.Optimizer] = getattr(torch.optim, name)
    optimizer, torch_optimizer = make(parameters, **options), make_torch(twins, **options)
    for step in range(80):
        for parameter, twin in zip(parameters, twins, strict=True):
            grad = _gradient(twin.detach(), step)
            parameter.grad.copy_(grad)
            twin.grad = grad.clone()
        optimizer.step()
        torch_optimizer.step()
        for index, (parameter, twin) in enumerate(zip(parameters, twins, strict=True)):
            assert_close(parameter.data, twin.detach(), TOL, f"step {step}, parameter {index}")


# -- BatchNorm1d over many steps -------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.0, 0.3, 1.0])
def test_batch_norm_over_many_steps_matches_torch(momentum: float) -> None:
    """40 steps: batch sizes 2 to 6, every 7th step in evaluation mode, a feature constant over
    the batch every 9th step; output, input and parameter gradients, running statistics and
    the count of batches as torch.nn.BatchNorm1d's.

    At N = 2 the input gradient is the difference of two nearly equal terms (the normalised
    input is +-sqrt(v / (v + eps))): both minidl's and torch's are off from the exact value by
    up to 1e-8 relative, so there it is compared with the float64 oracle at 1e-7."""
    module = nn.BatchNorm1d(3, eps=1e-4, momentum=momentum, dtype=F64)
    twin = torch.nn.BatchNorm1d(3, eps=1e-4, momentum=momentum, dtype=F64)
    generator = torch.Generator().manual_seed(7)
    assert module.weight is not None and module.bias is not None
    module.weight.data.copy_(torch.randn(3, dtype=F64, generator=generator))
    module.bias.data.copy_(torch.randn(3, dtype=F64, generator=generator))
    twin.load_state_dict(module.state_dict())
    for step in range(40):
        batch = 2 + step % 5
        x = 3.0 * torch.randn(batch, 3, dtype=F64, generator=generator) + 1.0
        if step % 9 == 4:
            x[:, 1] = 2.5
        training = step % 7 != 6
        module.train(training)
        twin.train(training)
        upstream = torch.randn(batch, 3, dtype=F64, generator=generator)
        module.zero_grad()
        twin.zero_grad()
        output = module(x)
        grad_input = module.backward(upstream)
        leaf = x.clone().requires_grad_(True)
        expected = twin(leaf)
        expected.backward(upstream)
        what = f"step {step}"
        assert_close(output, expected.detach(), TOL, f"{what}: output")
        assert leaf.grad is not None
        rtol = 1e-7 if training and batch == 2 else TOL
        assert_close(grad_input, leaf.grad, rtol, f"{what}: input gradient")
        assert twin.weight.grad is not None and twin.bias.grad is not None
        assert_close(module.weight.grad, twin.weight.grad, TOL, f"{what}: weight gradient")
        assert_close(module.bias.grad, twin.bias.grad, TOL, f"{what}: bias gradient")
        running_mean, running_var = twin.running_mean, twin.running_var
        assert running_mean is not None and running_var is not None
        assert_close(module.running_mean, running_mean, TOL, f"{what}: running mean")
        assert_close(module.running_var, running_var, TOL, f"{what}: running variance")
        assert int(module.num_batches_tracked) == int(twin.num_batches_tracked)  # type: ignore[arg-type]


# -- stacked networks on non-contiguous inputs -----------------------------------------------------

TORCH_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "elu": F.elu,
    "selu": F.selu,
    "leakyrelu": lambda t: F.leaky_relu(t, 0.01),
    "gelu": F.gelu,
    "gelutanh": lambda t: F.gelu(t, approximate="tanh"),
    "silu": F.silu,
}
MODEL_ACTIVATIONS = [("tanh", "relu"), ("elu", "elu"), ("sigmoid", "selu")]
MODEL_ACTIVATIONS += [("gelu",), ("gelutanh",), ("silu",)]


def _stacked_views(models: int, batch: int, features: int, seed: int) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, dtype=F64, generator=generator)

    return {
        "transposed": randn(models, features, batch).transpose(1, 2),
        "stepped": randn(models, 2 * batch, 3 * features)[:, ::2, ::3],
        "expanded": randn(models, 1, features).expand(models, batch, features),
        "models-last": randn(batch, features, models).permute(2, 0, 1),
    }


@pytest.mark.parametrize("layout", ["layer", "model"])
@pytest.mark.parametrize(("models", "batch"), [(1, 1), (3, 1), (3, 4), (6, 2)], ids=str)
@pytest.mark.parametrize("view", list(_stacked_views(1, 1, 1, 0)))
def test_stacked_networks_on_views_match_each_models_autograd(
    view: str, models: int, batch: int, layout: str
) -> None:
    torch.manual_seed(models * 10 + batch)
    activations = MODEL_ACTIVATIONS[:models]
    networks = [nn.mlp((3, 4, 2), list(names[:1]), dtype=F64) for names in activations]
    stack = nn.stack_models(networks, layout=layout)  # type: ignore[arg-type]
    x = _stacked_views(models, batch, 3, seed=1)[view]
    upstream = _stacked_views(models, batch, 2, seed=2)[view]
    assert batch == 1 or not x.is_contiguous()
    output = stack(x)
    grad_input = stack.backward(upstream)
    once = [p.grad.clone() for p in stack.parameters()]
    assert torch.equal(stack.backward(upstream), grad_input)  # a second backward...
    for parameter, grad in zip(stack.parameters(), once, strict=True):
        assert_close(parameter.grad, 2 * grad, 1e-15, "accumulated")  # ...accumulates
    for r, names in enumerate(activations):
        leaves = [p.data.clone().requires_grad_(True) for p in networks[r].parameters()]
        leaf = x[r].clone().requires_grad_(True)
        hidden = TORCH_ACTIVATIONS[names[0]](F.linear(leaf, leaves[0], leaves[1]))
        expected = F.linear(hidden, leaves[2], leaves[3])
        expected.backward(upstream[r])
        assert_close(output[r], expected.detach(), TOL, f"model {r}: output")
        assert leaf.grad is not None
        assert_close(grad_input[r], leaf.grad, TOL, f"model {r}: input gradient")
        for index, (parameter, reference) in enumerate(
            zip(nn.model_parameters(stack, r), leaves, strict=True)
        ):
            assert reference.grad is not None
            assert_close(parameter.grad, 2 * reference.grad, TOL, f"model {r}, parameter {index}")


# -- stacked losses: the sum reduction, finite differences -----------------------------------------


@pytest.mark.parametrize("target_kind", ["indices", "probabilities"])
@pytest.mark.parametrize("shape", [(1, 1, 2), (3, 1, 4), (2, 5, 3)], ids=str)
def test_stacked_cross_entropy_sum_matches_torch_per_model(
    shape: tuple[int, int, int], target_kind: str
) -> None:
    generator = torch.Generator().manual_seed(sum(shape))
    models, batch, classes = shape
    prediction = 3.0 * torch.randn(*shape, dtype=F64, generator=generator)
    if target_kind == "indices":
        target = torch.randint(classes, (models, batch), generator=generator)
    else:
        target = torch.rand(*shape, dtype=F64, generator=generator).softmax(dim=-1)
    leaf = prediction.clone().requires_grad_(True)
    expected = torch.stack(
        [F.cross_entropy(leaf[r], target[r], reduction="sum") for r in range(models)]
    )
    expected.sum().backward()
    criterion = nn.CrossEntropyLoss("sum")
    assert_close(criterion(prediction, target), expected.detach(), TOL, "losses")
    assert leaf.grad is not None
    assert_close(criterion.backward(), leaf.grad, TOL, "gradient")


def test_stacked_loss_matches_finite_differences() -> None:
    """StackedLoss (gradcheck refuses it): the gradient of the sum of its R losses against
    central differences, with a different loss and reduction per run and a batch of 1."""

    def make() -> nn.StackedLoss:
        return nn.StackedLoss(
            [(nn.MSELoss(), 1), (nn.CrossEntropyLoss("sum"), 2), (nn.MSELoss("mean"), 1)]
        )

    generator = torch.Generator().manual_seed(3)
    for batch in (1, 3):
        prediction = torch.randn(4, batch, 3, dtype=F64, generator=generator)
        target = torch.randint(3, (4, batch), generator=generator)
        criterion = make()
        criterion(prediction, target)
        gradient = criterion.backward()
        numeric = torch.zeros_like(prediction)
        flat, out = prediction.view(-1), numeric.view(-1)
        for index in range(flat.numel()):
            original = float(flat[index])
            flat[index] = original + 1e-6
            plus = float(make()(prediction, target).sum())
            flat[index] = original - 1e-6
            minus = float(make()(prediction, target).sum())
            flat[index] = original
            out[index] = (plus - minus) / 2e-6
        torch.testing.assert_close(gradient, numeric, rtol=1e-6, atol=1e-8)


# -- extreme logits --------------------------------------------------------------------------------

EXTREME_MODULES: dict[str, tuple[Callable[[], nn.Module], Callable[[Tensor], Tensor]]] = {
    "Softmax": (nn.Softmax, lambda t: F.softmax(t, dim=1)),
    "LogSoftmax": (nn.LogSoftmax, lambda t: F.log_softmax(t, dim=1)),
    "ReLU": (nn.ReLU, torch.relu),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.2), lambda t: F.leaky_relu(t, 0.2)),
    "GELU": (nn.GELU, F.gelu),
    "GELU tanh": (lambda: nn.GELU("tanh"), lambda t: F.gelu(t, approximate="tanh")),
    "SiLU": (nn.SiLU, F.silu),
}


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
@pytest.mark.parametrize("name", list(EXTREME_MODULES))
def test_modules_at_extreme_logits_match_the_float64_oracle(name: str, dtype: torch.dtype) -> None:
    """Rows of +-1e4 and +-1e3 (exp overflows far below), ties at the maximum, a row of one
    huge value among small ones, and the column-major layout of the same values."""
    make, function = EXTREME_MODULES[name]
    rows = torch.tensor(
        [
            [-1e4, -1e3, -100.0, -30.0, 0.0, 30.0, 100.0, 1e3, 1e4],
            [1e4, 1e4, -1e4, -1e4, 5.0, -5.0, 0.0, 0.0, 20.0],
            [1e3, 1e3 - 1.0, 1e3 - 40.0, -1e3, 0.5, 0.25, -0.5, 2.0, 1e3 - 1e-2],
        ],
        dtype=dtype,
    )
    upstream = torch.randn(rows.shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    rtol = TOL if dtype == F64 else 1e-6
    for x in (rows, rows.t().contiguous().t()):
        module = make()
        output = module(x)
        grad = module.backward(upstream)
        leaf = x.double().requires_grad_(True)
        expected = function(leaf)
        expected.backward(upstream.double())
        assert output.dtype == dtype and grad.dtype == dtype
        assert leaf.grad is not None
        assert_close(output, expected.detach().to(dtype), rtol, "output")
        assert_close(grad, leaf.grad.to(dtype), rtol, "gradient")
