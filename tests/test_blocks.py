"""The building blocks (Dropout, BatchNorm1d, Identity, Softmax, LogSoftmax, Residual and the
losses BCEWithLogits, NLL, L1, Huber) against PyTorch autograd in float64 and finite differences,
plus their argument checks and the buffer mechanism of Module."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from minidl import nn, optim
from minidl.gradcheck import gradcheck

F64 = torch.float64
TOL = 1e-10


def _close(actual: Tensor, expected: Tensor, rtol: float = TOL, what: str = "") -> None:
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    expected = expected.detach()
    scale = max(float(expected.abs().max()), float(actual.abs().max()), 1e-300)
    error = float((actual - expected).abs().max()) / scale
    assert error <= rtol, f"{what}: relative error {error:.3g}"


def _x(*shape: int, seed: int = 1, scale: float = 1.0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=F64, generator=generator) * scale


def _check_against_torch(
    module: nn.Module,
    reference: Callable[[Tensor, dict[str, Tensor]], Tensor],
    x: Tensor,
) -> None:
    """Forward, input gradient and parameter gradients of ``module`` vs autograd of ``reference``
    (which gets the input and leaf copies of the parameters)."""
    parameters = {name: p.data.clone().requires_grad_() for name, p in module.named_parameters()}
    x_leaf = x.clone().requires_grad_()
    expected = reference(x_leaf, parameters)
    upstream = _x(*expected.shape, seed=7)
    (expected * upstream).sum().backward()
    module.zero_grad()
    output = module(x)
    _close(output, expected, what="forward")
    grad_input = module.backward(upstream)
    assert x_leaf.grad is not None
    _close(grad_input, x_leaf.grad, what="input gradient")
    for name, parameter in module.named_parameters():
        grad = parameters[name].grad
        assert grad is not None
        _close(parameter.grad, grad, what=f"gradient of {name}")


# -- layers ---------------------------------------------------------------------------------------


def test_identity_forward_backward_and_gradcheck() -> None:
    _check_against_torch(nn.Identity(), lambda x, _: x.clone(), _x(4, 3))
    assert gradcheck(nn.Identity(), _x(3, 2))


@pytest.mark.parametrize("layer", ["softmax", "log_softmax"])
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_softmax_layers_match_torch_and_are_stable(layer: str, scale: float) -> None:
    module = nn.Softmax(dim=1) if layer == "softmax" else nn.LogSoftmax(dim=-1)
    function = F.softmax if layer == "softmax" else F.log_softmax
    x = _x(5, 4, scale=scale)
    _check_against_torch(module, lambda x, _: function(x, dim=1), x)
    if scale == 1.0:
        assert gradcheck(module, x)
    # Stable at extreme logits even in float32.
    assert bool(torch.isfinite(module(x.float() * 10)).all())


def test_softmax_rejects_other_dims() -> None:
    with pytest.raises(ValueError, match=r"Softmax: dim must be 1.*got 0"):
        nn.Softmax(dim=0)
    with pytest.raises(ValueError, match=r"LogSoftmax: dim must be 1.*got 2"):
        nn.LogSoftmax(dim=2)


@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("p", [0.0, 0.3, 0.9])
def test_dropout_train_mode_matches_torch_with_the_same_seed(p: float, dtype: torch.dtype) -> None:
    x = _x(6, 5).to(dtype)
    torch.manual_seed(11)
    expected_output = F.dropout(x, p, training=True)
    torch.manual_seed(11)
    module = nn.Dropout(p)
    output = module(x)
    assert torch.equal(output, expected_output)
    upstream = _x(6, 5, seed=3).to(dtype)
    x_leaf = x.clone().requires_grad_()
    torch.manual_seed(11)
    (F.dropout(x_leaf, p, training=True) * upstream).sum().backward()
    assert x_leaf.grad is not None
    assert torch.equal(module.backward(upstream), x_leaf.grad)


def test_dropout_backward_reuses_the_forward_mask_and_eval_is_identity() -> None:
    generator = torch.Generator().manual_seed(5)
    module = nn.Dropout(0.5, generator=generator)
    x = torch.ones(8, 8, dtype=F64)
    output = module(x)
    grad = module.backward(torch.ones_like(x))
    assert torch.equal(grad, output)  # the same mask, same scale 1 / (1 - p)
    assert set(output.unique().tolist()) <= {0.0, 2.0}
    # The generator, not the global stream, decides the mask.
    again = nn.Dropout(0.5, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(123)
    assert torch.equal(again(x), output)
    module.eval()
    assert torch.equal(module(x), x)
    assert torch.equal(module.backward(x * 3), x * 3)


@pytest.mark.parametrize(
    ("p", "kind"),
    [(-0.1, ValueError), (1.0, ValueError), (float("nan"), ValueError), ("0.5", TypeError)],
)
def test_dropout_validates_p(p: object, kind: type[Exception]) -> None:
    with pytest.raises(kind, match=r"Dropout: p must be"):
        nn.Dropout(p)  # type: ignore[arg-type]


def test_dropout_of_zero_draws_no_random_numbers() -> None:
    """Dropout(0) in training is the identity and leaves the random streams where they were,
    as torch's dropout does, so adding it to a network changes nothing downstream."""
    x = _x(6, 5)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(nn.Dropout(0.0)(x), x)
    assert torch.equal(torch.rand(3), expected)
    generator = torch.Generator().manual_seed(7)
    state = generator.get_state()
    assert torch.equal(nn.Dropout(0.0, generator=generator)(x), x)
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("p", [0.0, 0.5])
def test_dropout_backward_refuses_a_gradient_of_another_shape(p: float, training: bool) -> None:
    """In training and in evaluation (where the gradient would otherwise pass through as it
    is), a gradient that is not the output's shape is refused."""
    module = nn.Dropout(p).train(training)
    module(_x(6, 5))
    for bad in (torch.ones(6, 1, dtype=F64), torch.ones(5, dtype=F64)):
        with pytest.raises(ValueError, match=r"Dropout: gradient has shape .* expected \(6, 5\)"):
            module.backward(bad)


@pytest.mark.parametrize(("p", "training"), [(0.5, True), (0.5, False), (0.0, True)])
def test_dropout_backward_refuses_a_non_floating_gradient_in_every_mode(
    p: float, training: bool
) -> None:
    """Training mode refused an integer gradient, but evaluation mode and p = 0 passed it on
    as it was (an int64 input gradient); each refuses it now, and a float gradient passes."""
    module = nn.Dropout(p).train(training)
    x = _x(4, 3)
    output = module(x)
    for bad in (torch.ones(4, 3, dtype=torch.int64), torch.ones(4, 3, dtype=torch.bool)):
        with pytest.raises(
            TypeError,
            match=r"Dropout: expected a floating-point gradient of dtype float16, bfloat16, "
            r"float32 or float64, got",
        ):
            module.backward(bad)
    upstream = _x(4, 3, seed=2)
    expected = upstream * (output / x) if training and p else upstream
    _close(module.backward(upstream), expected, what="input gradient")


@pytest.mark.parametrize("training", [True, False])
def test_dropout_generator_set_to_a_bad_value_is_refused_and_changes_nothing(
    training: bool,
) -> None:
    """``generator`` was a plain attribute: set to a non-generator between calls, the next
    training forward failed in torch's words (``bernoulli_() received an invalid combination
    of arguments``) after recording the new input's shape, so that after an evaluation-mode
    forward the backward accepted a gradient of that failed forward's shape. It is checked
    when set now, as by the constructor, and a good generator set later is used."""
    generator = torch.Generator().manual_seed(5)
    module = nn.Dropout(0.5, generator=generator).train(training)
    x = _x(4, 3)
    module(x)
    upstream = _x(4, 3, seed=2)
    expected = module.backward(upstream)
    for bad in (5, "cpu", torch.device("cpu")):
        with pytest.raises(
            TypeError, match=r"Dropout: generator must be a torch.Generator or None, got"
        ):
            module.generator = bad  # type: ignore[assignment]
        assert module.generator is generator
        with pytest.raises(ValueError, match=r"Dropout: gradient has shape \(2, 2\)"):
            module.backward(torch.ones(2, 2, dtype=F64))
        assert torch.equal(module.backward(upstream), expected)
    module.train()
    module.generator = torch.Generator().manual_seed(9)
    mask = torch.empty(4, 3, dtype=F64).bernoulli_(0.5, generator=torch.Generator().manual_seed(9))
    assert torch.equal(module(x), x * mask / 0.5)


def test_dropout_draw_that_fails_leaves_the_last_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    """A training forward whose draw fails (as from a generator on another device than the
    input) recorded the new input's shape first: after an evaluation-mode forward, backward
    then passed on a gradient of the failed forward's shape."""
    module = nn.Dropout(0.5).eval()
    module(_x(4, 3))
    module.train()

    def fail(*args: object, **kwargs: object) -> Tensor:
        raise RuntimeError("Expected a 'cuda' device type for generator but found 'cpu'")

    monkeypatch.setattr(torch.Tensor, "bernoulli_", fail)
    with pytest.raises(RuntimeError, match="device type for generator"):
        module(_x(2, 2))
    monkeypatch.undo()
    with pytest.raises(
        ValueError, match=r"Dropout: gradient has shape \(2, 2\), expected \(4, 3\)"
    ):
        module.backward(torch.ones(2, 2, dtype=F64))
    upstream = _x(4, 3, seed=2)
    assert torch.equal(module.backward(upstream), upstream)  # the evaluation forward's


def test_dropout_backward_before_forward() -> None:
    with pytest.raises(RuntimeError, match="Dropout: backward called before forward"):
        nn.Dropout(0.1).backward(torch.ones(2, 2))


def _torch_batch_norm(module: nn.BatchNorm1d) -> torch.nn.BatchNorm1d:
    return torch.nn.BatchNorm1d(
        module.num_features,
        eps=module.eps,
        momentum=module.momentum,
        affine=module.affine,
        dtype=F64,
    )


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_batch_norm_train_and_eval_match_torch(affine: bool, momentum: float) -> None:
    module = nn.BatchNorm1d(4, eps=1e-3, momentum=momentum, affine=affine, dtype=F64)
    if affine:
        assert module.weight is not None and module.bias is not None
        module.weight.data.copy_(_x(4, seed=2))
        module.bias.data.copy_(_x(4, seed=3))
    twin = _torch_batch_norm(module)
    if affine:
        with torch.no_grad():
            twin.weight.copy_(module.weight.data)  # type: ignore[union-attr]
            twin.bias.copy_(module.bias.data)  # type: ignore[union-attr]
    for step in range(3):  # three training batches: the running statistics accumulate
        x = _x(7, 4, seed=10 + step, scale=3.0) + 2.0

        def reference(x: Tensor, parameters: dict[str, Tensor]) -> Tensor:
            return F.batch_norm(
                x,
                twin.running_mean,
                twin.running_var,
                parameters.get("weight"),
                parameters.get("bias"),
                training=True,
                momentum=momentum,
                eps=1e-3,
            )

        _check_against_torch(module, reference, x)
        twin.num_batches_tracked.add_(1)  # type: ignore[union-attr, operator]
        _close(module.running_mean, twin.running_mean, what="running mean")  # type: ignore[arg-type]
        _close(module.running_var, twin.running_var, what="running var")  # type: ignore[arg-type]
    assert int(module.num_batches_tracked) == 3
    module.eval()
    twin.eval()

    def evaluation(x: Tensor, parameters: dict[str, Tensor]) -> Tensor:
        return F.batch_norm(
            x,
            twin.running_mean,
            twin.running_var,
            parameters.get("weight"),
            parameters.get("bias"),
            training=False,
            eps=1e-3,
        )

    _check_against_torch(module, evaluation, _x(5, 4, seed=20))


def test_batch_norm_tracks_torch_over_changing_batches_modes_and_settings() -> None:
    """Forty steps against torch.nn.BatchNorm1d in float64: batch sizes that change from step
    to step (2 and odd ones in training, 1 in evaluation), train/eval switches, momentum
    (0 and 1 included) and eps set between steps; output, input and parameter gradients,
    running statistics and the batch count agree at every step."""
    rng = torch.Generator().manual_seed(12)

    def pick(options: list[float]) -> float:
        return options[int(torch.randint(len(options), (), generator=rng))]

    module = nn.BatchNorm1d(3, dtype=F64)
    twin = torch.nn.BatchNorm1d(3, dtype=F64)
    assert module.weight is not None and module.bias is not None
    module.weight.data.copy_(_x(3, seed=30))
    module.bias.data.copy_(_x(3, seed=31))
    with torch.no_grad():
        twin.weight.copy_(module.weight.data)
        twin.bias.copy_(module.bias.data)
    for step in range(40):
        if step % 7 == 3:
            module.momentum = twin.momentum = pick([0.0, 0.05, 0.5, 1.0])
        if step % 11 == 5:
            module.eps = twin.eps = pick([1e-5, 0.1, 2.0])
        if step % 5 == 4:
            training = not module.training
            module.train(training)
            twin.train(training)
        batch = int(pick([2.0, 3.0, 5.0, 9.0] if module.training else [1.0, 2.0, 7.0]))
        x = _x(batch, 3, seed=100 + step, scale=pick([0.1, 1.0, 10.0])) + pick([0.0, 4.0])
        leaf = x.clone().requires_grad_()
        expected = twin(leaf)
        upstream = _x(batch, 3, seed=200 + step)
        (expected * upstream).sum().backward()
        module.zero_grad()
        _close(module(x), expected, what=f"step {step}: forward")
        grad_input = module.backward(upstream)
        assert leaf.grad is not None and twin.weight.grad is not None
        if module.training:
            # (with two samples the input gradient cancels to eps's size: compared on the
            # scale of g gamma / sigma, the size of its terms)
            terms = upstream.abs().max() * twin.weight.detach().abs().max() / x.std(0).min()
            error = float((grad_input - leaf.grad).abs().max())
            assert error <= 1e-12 * float(terms), f"step {step}: input gradient"
        else:
            _close(grad_input, leaf.grad, what=f"step {step}: input gradient")
        _close(module.weight.grad, twin.weight.grad, what=f"step {step}: weight gradient")
        _close(module.bias.grad, twin.bias.grad, what=f"step {step}: bias gradient")  # type: ignore[arg-type]
        twin.weight.grad = twin.bias.grad = None
        _close(module.running_mean, twin.running_mean, what=f"step {step}: running mean")  # type: ignore[arg-type]
        _close(module.running_var, twin.running_var, what=f"step {step}: running var")  # type: ignore[arg-type]
        assert int(module.num_batches_tracked) == int(twin.num_batches_tracked)  # type: ignore[arg-type]


def test_batch_norm_momentum_none_is_pytorchs_cumulative_average() -> None:
    """``momentum=None`` (refused before): the running statistics are the cumulative averages
    of the batches' statistics, the t-th training batch weighted 1/t, as
    ``torch.nn.BatchNorm1d(momentum=None)``. Sixty steps in float64 of batches of changing
    sizes, with evaluation steps (which count no batch) and a numeric momentum for a while
    (whose batches count, so the average resumes at their number): forward, gradients, running
    statistics and the batch count agree at every step; the statistics to 1e-12, and the
    running mean after the first batch is that batch's mean, bit for bit."""
    module = nn.BatchNorm1d(3, momentum=None, dtype=F64)
    twin = torch.nn.BatchNorm1d(3, momentum=None, dtype=F64)
    assert module.momentum is None and "momentum=None" in repr(module)
    first = _x(6, 3, seed=300, scale=2.0) + 1.0
    module(first), twin(first)
    assert torch.equal(module.running_mean, first.mean(0))
    for step in range(60):
        if step == 20:
            module.momentum = twin.momentum = 0.3
        if step == 30:
            module.momentum = twin.momentum = None
        training = step % 9 != 4
        module.train(training), twin.train(training)
        batch = 2 + step % 5
        x = _x(batch, 3, seed=400 + step, scale=1.0 + step % 3) + step % 4
        leaf = x.clone().requires_grad_()
        expected = twin(leaf)
        upstream = _x(batch, 3, seed=500 + step)
        (expected * upstream).sum().backward()
        module.zero_grad()
        _close(module(x), expected, rtol=1e-12, what=f"step {step}: forward")
        grad_input = module.backward(upstream)
        assert leaf.grad is not None and twin.weight.grad is not None
        assert module.weight is not None and module.bias is not None
        terms = upstream.abs().max() / x.std(0).min()
        assert float((grad_input - leaf.grad).abs().max()) <= 1e-12 * float(terms), step
        _close(module.weight.grad, twin.weight.grad, what=f"step {step}: weight gradient")
        twin.weight.grad = twin.bias.grad = None
        for mine, theirs in (
            (module.running_mean, twin.running_mean),
            (module.running_var, twin.running_var),
        ):
            _close(mine, theirs, rtol=1e-12, what=f"step {step}: running statistics")  # type: ignore[arg-type]
        assert int(module.num_batches_tracked) == int(twin.num_batches_tracked)  # type: ignore[arg-type]
    assert int(module.num_batches_tracked) == 1 + 60 - 7


def test_batch_norm_momentum_none_resumes_from_its_state_dict() -> None:
    """A cumulative average goes on from a ``state_dict``: the batch count loaded with the
    statistics weights the next batch 1/(t + 1), so a layer loaded after four batches takes
    a fifth as the layer that saw them (and as PyTorch's loaded with the same state), bit for
    bit; the count left out, it would weight it 1 and forget the four."""
    module = nn.BatchNorm1d(3, momentum=None, dtype=F64)
    for step in range(4):
        module(_x(5, 3, seed=600 + step) + step)
    state = module.state_dict()
    assert set(state) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    loaded = nn.BatchNorm1d(3, momentum=None, dtype=F64)
    loaded.load_state_dict(state)
    twin = torch.nn.BatchNorm1d(3, momentum=None, dtype=F64)
    twin.load_state_dict(state)
    x = _x(5, 3, seed=700, scale=3.0) - 2.0
    module(x), loaded(x), twin(x)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(loaded, name), getattr(module, name)), name
        _close(getattr(loaded, name).double(), getattr(twin, name).double(), rtol=1e-12)
    fifth = (state["running_mean"] * 4 + x.mean(0)) / 5
    _close(module.running_mean, fifth, rtol=1e-15, what="the mean of five batch means")


@pytest.mark.parametrize(
    "dtype", [torch.float32, F64, torch.float16, torch.bfloat16], ids=lambda d: str(d)[6:]
)
def test_batch_norm_means_are_tensor_means_to_the_bit(dtype: torch.dtype) -> None:
    """BatchNorm1d's means over the batch (a sum and a division by the number of rows on the
    CPU, where ``Tensor.mean`` converts that number at every call) have the bits of
    ``mean(dim=0)``: batches of 2 to 4099 rows (the reductions' vectorised bodies and their
    tails), values from 1e-30 to 1e30 times a common offset, contiguous or transposed."""
    from minidl.nn.batch_norm import _batch_mean

    generator = torch.Generator().manual_seed(11)
    for rows in (2, 3, 7, 16, 17, 31, 100, 1000, 4099):
        for columns in (1, 5, 25, 33):
            for scale in (1e-30, 1.0, 3.7, 1e30):
                wide = torch.randn(rows, columns, dtype=F64, generator=generator) * scale
                x = (wide + torch.randn(columns, dtype=F64, generator=generator)).to(dtype)
                for tensor in (x, x.t().contiguous().t()):
                    expected = tensor.mean(dim=0)
                    mean = _batch_mean(tensor)
                    assert mean.dtype == expected.dtype
                    assert torch.equal(mean.view(torch.uint8), expected.view(torch.uint8)), (
                        rows,
                        columns,
                        scale,
                    )


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradcheck(training: bool) -> None:
    module = nn.BatchNorm1d(3, dtype=F64)
    assert module.weight is not None and module.bias is not None
    module.weight.data.copy_(_x(3, seed=4))
    module.bias.data.copy_(_x(3, seed=5))
    module.running_var.fill_(2.0)
    module.train(training)
    # gradcheck runs many forwards: momentum 0 keeps the running statistics fixed meanwhile.
    module.momentum = 0.0
    assert gradcheck(module, _x(5, 3, seed=6))


@pytest.mark.parametrize("batch", [1, 2, 6])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dropped", ["weight", "bias"])
def test_batch_norm_with_one_affine_parameter_set_to_none(
    dropped: str, training: bool, batch: int
) -> None:
    """``layer.register_parameter("bias", None)`` (or ``weight``), as ``torch.nn.BatchNorm1d``
    allows, leaves out that parameter only: the other one still scales or shifts, and gets its
    gradient (the weight was dropped too), and it is no longer a parameter (a ``bias = None``
    set by hand left it in ``parameters()`` and ``state_dict``; it is refused). Against
    ``F.batch_norm`` with the same ``None`` in float64."""
    if training and batch == 1:
        batch = 3  # (training needs two samples)
    module = nn.BatchNorm1d(4, momentum=0.3, dtype=F64)
    assert module.weight is not None and module.bias is not None
    module.weight.data.copy_(_x(4, seed=40) + 1.5)
    module.bias.data.copy_(_x(4, seed=41))
    module.running_var.fill_(2.5)
    module.train(training)
    kept = module.bias if dropped == "weight" else module.weight
    assert kept is not None
    by_hand = copy.deepcopy(module)
    setattr(by_hand, dropped, None)
    with pytest.raises(
        ValueError,
        match=rf"^BatchNorm1d: {dropped} is None, but a {dropped} is still registered .*; remove "
        rf"it with register_parameter\('{dropped}', None\)$",
    ):
        by_hand(_x(3, 4, seed=42))
    assert module.register_parameter(dropped, None) is None
    assert getattr(module, dropped) is None
    assert [name for name, _ in module.named_parameters()] == [
        "bias" if dropped == "weight" else "weight"
    ]
    assert dropped not in module.state_dict()
    leaf_kept = kept.data.clone().requires_grad_()
    running_mean, running_var = module.running_mean.clone(), module.running_var.clone()
    x = _x(batch, 4, seed=42, scale=2.0) + 1.0
    leaf = x.clone().requires_grad_()
    expected = F.batch_norm(
        leaf,
        running_mean,
        running_var,
        None if dropped == "weight" else leaf_kept,
        leaf_kept if dropped == "weight" else None,
        training=training,
        momentum=0.3,
        eps=module.eps,
    )
    upstream = _x(batch, 4, seed=43)
    (expected * upstream).sum().backward()
    _close(module(x), expected, what="forward")
    _close(module.running_mean, running_mean, what="running mean")
    _close(module.running_var, running_var, what="running var")
    assert leaf.grad is not None and leaf_kept.grad is not None
    _close(module.backward(upstream), leaf.grad, what="input gradient")
    _close(kept.grad, leaf_kept.grad, what="gradient of the kept parameter")


@pytest.mark.parametrize("change", ["set to None", "registered again"])
def test_batch_norm_refuses_a_backward_after_a_parameter_came_or_went(change: str) -> None:
    """The backward of a forward with a bias, after ``register_parameter("bias", None)`` (or
    the reverse), would differentiate another function than the forward computed: refused, no
    gradient changed."""
    module = nn.BatchNorm1d(3, dtype=F64)
    bias = module.bias
    assert bias is not None
    if change == "registered again":
        module.register_parameter("bias", None)
    module(_x(5, 3, seed=50))
    if change == "set to None":
        module.register_parameter("bias", None)
    else:
        module.register_parameter("bias", bias)
    before = [p.grad.clone() for p in module.parameters()]
    had = "had one" if change == "set to None" else "had none"
    now = "None" if change == "set to None" else "a Parameter"
    with pytest.raises(
        RuntimeError,
        match=f"^BatchNorm1d: bias was set to {now} after the last forward, which {had}; ",
    ):
        module.backward(_x(5, 3, seed=51))
    assert all(torch.equal(p.grad, g) for p, g in zip(module.parameters(), before, strict=True))


def test_batch_norm_buffers_in_state_dict_and_to() -> None:
    module = nn.Sequential(nn.Linear(3, 4, dtype=F64), nn.BatchNorm1d(4, dtype=F64))
    module(_x(6, 3))
    state = module.state_dict()
    assert set(state) == {
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    }
    assert state["1.num_batches_tracked"].dtype == torch.int64
    norm = module[1]
    assert isinstance(norm, nn.BatchNorm1d)
    assert torch.equal(state["1.running_mean"], norm.running_mean)
    assert state["1.running_mean"] is not norm.running_mean  # a copy
    fresh = nn.Sequential(nn.Linear(3, 4, dtype=F64), nn.BatchNorm1d(4, dtype=F64))
    fresh.load_state_dict(state)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key
    # A bad buffer entry is refused and nothing changes.
    bad = dict(state)
    bad["1.num_batches_tracked"] = torch.tensor(1.0)
    before = fresh.state_dict()
    with pytest.raises(TypeError, match=r"num_batches_tracked.*torch.int64"):
        fresh.load_state_dict(bad)
    bad["1.num_batches_tracked"] = state["1.num_batches_tracked"]
    bad["1.running_var"] = torch.ones(5, dtype=F64)
    with pytest.raises(ValueError, match=r"running_var.*shape \(5,\)"):
        fresh.load_state_dict(bad)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, before[key]), key
    fresh.to(dtype=torch.float32)
    fresh_norm = fresh[1]
    assert isinstance(fresh_norm, nn.BatchNorm1d)
    assert fresh_norm.running_mean.dtype == torch.float32
    assert fresh_norm._buffers["running_var"] is fresh_norm.running_var
    assert fresh_norm.num_batches_tracked.dtype == torch.int64
    fresh.eval()
    assert fresh(_x(2, 3).float()).dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_features": 0}, ValueError, "num_features must be an integer >= 1"),
        ({"num_features": 2, "eps": 0.0}, ValueError, "eps must be in"),
        ({"num_features": 2, "momentum": 1.5}, ValueError, "momentum must be in"),
        ({"num_features": 2, "affine": 1}, TypeError, "affine must be a bool"),
        (
            {"num_features": 2, "dtype": torch.int64},
            TypeError,
            "dtype must be torch.float16, torch.bfloat16",
        ),
    ],
)
def test_batch_norm_validates_arguments(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"BatchNorm1d: {message}"):
        nn.BatchNorm1d(**kwargs)  # type: ignore[arg-type]


def test_batch_norm_needs_two_samples_in_training() -> None:
    module = nn.BatchNorm1d(3, dtype=F64)
    with pytest.raises(ValueError, match=r"BatchNorm1d: training mode needs more than one"):
        module(_x(1, 3))
    assert int(module.num_batches_tracked) == 0
    assert torch.equal(module.running_mean, torch.zeros(3, dtype=F64))
    module.eval()
    assert module(_x(1, 3)).shape == (1, 3)


def test_residual_matches_torch_and_gradchecks() -> None:
    torch.manual_seed(3)
    block = nn.Sequential(nn.Linear(4, 4, dtype=F64), nn.Tanh(), nn.Linear(4, 4, dtype=F64))
    module = nn.Residual(block)

    def reference(x: Tensor, parameters: dict[str, Tensor]) -> Tensor:
        hidden = torch.tanh(F.linear(x, parameters["block.0.weight"], parameters["block.0.bias"]))
        return x + F.linear(hidden, parameters["block.2.weight"], parameters["block.2.bias"])

    _check_against_torch(module, reference, _x(5, 4))
    assert gradcheck(module, _x(3, 4))
    assert next(name for name, _ in module.named_parameters()) == "block.0.weight"


def test_residual_checks_block_and_shapes() -> None:
    with pytest.raises(TypeError, match="Residual: block must be a minidl Module"):
        nn.Residual(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    module = nn.Residual(nn.Linear(3, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"Residual: the block's output has shape \(4, 2\)"):
        module(_x(4, 3))
    with pytest.raises(RuntimeError, match="Residual: backward called before forward"):
        nn.Residual(nn.Identity()).backward(_x(2, 2))


# -- losses ---------------------------------------------------------------------------------------


def _check_loss(
    criterion: nn.Loss,
    reference: Callable[[Tensor, Tensor], Tensor],
    prediction: Tensor,
    target: Tensor,
) -> None:
    leaf = prediction.clone().requires_grad_()
    expected = reference(leaf, target)
    expected.backward()
    loss = criterion(prediction, target)
    assert loss.dim() == 0
    _close(loss, expected, what="loss")
    assert leaf.grad is not None
    _close(criterion.backward(), leaf.grad, what="gradient")
    _close(criterion.backward(torch.tensor(3.0, dtype=F64)), 3 * leaf.grad, what="scaled gradient")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("scale", [1.0, 1e4])
@pytest.mark.parametrize("labels", ["soft", "hard"])
def test_bce_with_logits_matches_torch_and_is_stable(
    reduction: str, scale: float, labels: str
) -> None:
    logits = _x(6, 3, scale=scale)
    target = torch.rand(6, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    if labels == "hard":  # exactly 0 and 1, the bounds of the accepted range
        target = target.round()
        assert set(target.unique().tolist()) == {0.0, 1.0}
    _check_loss(
        nn.BCEWithLogitsLoss(reduction),  # type: ignore[arg-type]
        lambda z, t: F.binary_cross_entropy_with_logits(z, t, reduction=reduction),
        logits,
        target,
    )
    if scale == 1.0:
        assert gradcheck(nn.BCEWithLogitsLoss(), logits, target)


def test_bce_with_logits_checks_targets() -> None:
    for bad in (2.0, 1.0 + 1e-12, -1e-12, math.nan):
        with pytest.raises(ValueError, match=r"BCEWithLogitsLoss: targets must lie in \[0, 1\]"):
            nn.BCEWithLogitsLoss()(_x(2, 2), torch.full((2, 2), bad, dtype=F64))
    target = torch.zeros(2, 2, dtype=F64)
    target[1, 0] = math.nan  # one NaN among valid targets
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 1\], got values in \[nan"):
        nn.BCEWithLogitsLoss()(_x(2, 2), target)
    with pytest.raises(ValueError, match="BCEWithLogitsLoss: target has shape"):
        nn.BCEWithLogitsLoss()(_x(2, 2), torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        nn.BCEWithLogitsLoss("none")  # type: ignore[arg-type]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nll_matches_torch_and_composes_to_cross_entropy(reduction: str) -> None:
    log_probabilities = F.log_softmax(_x(7, 4), dim=1)
    target = torch.tensor([0, 3, 1, 1, 2, 0, 3])
    _check_loss(
        nn.NLLLoss(reduction),  # type: ignore[arg-type]
        lambda z, t: F.nll_loss(z, t, reduction=reduction),
        log_probabilities,
        target,
    )
    assert gradcheck(nn.NLLLoss(reduction), log_probabilities, target)  # type: ignore[arg-type]
    # LogSoftmax + NLLLoss = CrossEntropyLoss, gradient included.
    logits = _x(7, 4, seed=9)
    layer, nll, cross_entropy = nn.LogSoftmax(), nn.NLLLoss(), nn.CrossEntropyLoss()
    _close(nll(layer(logits), target), cross_entropy(logits, target), what="loss")
    _close(layer.backward(nll.backward()), cross_entropy.backward(), what="gradient")


def test_nll_checks_targets() -> None:
    with pytest.raises(ValueError, match="NLLLoss: class index 5 is out of range"):
        nn.NLLLoss()(_x(2, 3), torch.tensor([0, 5]))
    with pytest.raises(TypeError, match="NLLLoss: class-index targets must have dtype"):
        nn.NLLLoss()(_x(2, 3), torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_l1_matches_torch_including_the_subgradient_at_zero(reduction: str) -> None:
    prediction = _x(5, 3)
    target = _x(5, 3, seed=2)
    target[0] = prediction[0]  # |d| = 0: torch's sign gives 0
    _check_loss(
        nn.L1Loss(reduction),  # type: ignore[arg-type]
        lambda z, t: F.l1_loss(z, t, reduction=reduction),
        prediction,
        target,
    )
    criterion = nn.L1Loss(reduction)  # type: ignore[arg-type]
    criterion(prediction, target)
    assert torch.equal(criterion.backward()[0], torch.zeros(3, dtype=F64))
    assert gradcheck(nn.L1Loss(), _x(4, 2), _x(4, 2, seed=3))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("delta", [1.0, 0.3, 2.5])
def test_huber_matches_torch(reduction: str, delta: float) -> None:
    prediction = _x(6, 4, scale=2.0)
    target = _x(6, 4, seed=2)
    _check_loss(
        nn.HuberLoss(delta, reduction),  # type: ignore[arg-type]
        lambda z, t: F.huber_loss(z, t, reduction=reduction, delta=delta),
        prediction,
        target,
    )
    assert gradcheck(nn.HuberLoss(delta), _x(4, 2, scale=2.0), _x(4, 2, seed=3))


def test_huber_delta_set_between_forward_and_backward_keeps_the_forwards_gradient() -> None:
    """backward read delta when it ran: set between forward and backward (a schedule of
    delta, say), the gradient was not that of the loss forward returned, while a reduction set
    in between is the forward's (as p, eps and negative_slope are in the other modules)."""
    prediction = _x(6, 4, scale=2.0)
    target = _x(6, 4, seed=2)
    criterion = nn.HuberLoss(1.0, "sum")
    criterion(prediction, target)
    criterion.delta = 0.25
    criterion.reduction = "mean"
    leaf = prediction.clone().requires_grad_()
    F.huber_loss(leaf, target, reduction="sum", delta=1.0).backward()
    assert leaf.grad is not None
    _close(criterion.backward(), leaf.grad, what="gradient")
    # The next forward takes the new settings.
    leaf.grad = None
    _close(
        criterion(prediction, target),
        F.huber_loss(leaf, target, reduction="mean", delta=0.25),
        what="loss",
    )
    F.huber_loss(leaf, target, reduction="mean", delta=0.25).backward()
    _close(criterion.backward(), leaf.grad, what="gradient")


def test_huber_and_l1_validate_arguments() -> None:
    with pytest.raises(ValueError, match=r"HuberLoss: delta must be in \(0, inf\), got 0"):
        nn.HuberLoss(0.0)
    with pytest.raises(ValueError, match="HuberLoss: reduction must be"):
        nn.HuberLoss(1.0, "paper")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="L1Loss: reduction must be"):
        nn.L1Loss("none")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="L1Loss: target dtype"):
        nn.L1Loss()(_x(2, 2), torch.zeros(2, 2))


@pytest.mark.parametrize(
    "criterion", [nn.BCEWithLogitsLoss(), nn.NLLLoss(), nn.L1Loss(), nn.HuberLoss()]
)
def test_losses_refuse_backward_before_forward(criterion: nn.Loss) -> None:
    with pytest.raises(RuntimeError, match="backward called before forward"):
        type(criterion)().backward()


@pytest.mark.parametrize(
    "make",
    [nn.Identity, lambda: nn.Dropout(0.5).eval(), lambda: nn.Dropout(0.0), lambda: nn.Dropout(0.5)],
    ids=["Identity", "Dropout-eval", "Dropout-p0", "Dropout-training"],
)
@pytest.mark.parametrize(
    ("forward_dtype", "grad_dtype"),
    [
        (torch.float32, torch.float16),
        (torch.float16, torch.float32),
        (torch.float64, torch.bfloat16),
        (torch.bfloat16, torch.float16),
        (torch.float32, torch.float64),
    ],
    ids=str,
)
def test_identity_layers_promote_a_gradient_of_another_dtype(
    make: Callable[[], nn.Module], forward_dtype: torch.dtype, grad_dtype: torch.dtype
) -> None:
    """As Tanh's backward (and every module's without parameters) promotes it: Identity, and
    Dropout in evaluation mode or with p = 0, returned a gradient of another dtype as it came
    (a float16 one through a float32 Dropout came back float16 in evaluation mode, float32 in
    training mode), so that the dtype depended on the mode and on which layer stood there. The
    values are the gradient's (times the mask in training mode), and one of the forward's
    dtype is returned itself, as before."""
    module = make()
    x = _x(6, 5, seed=4).to(forward_dtype)
    grad = _x(6, 5, seed=5).to(grad_dtype)
    tanh = nn.Tanh()
    tanh(x)
    expected_dtype = tanh.backward(grad).dtype
    assert expected_dtype == torch.promote_types(forward_dtype, grad_dtype)
    output = module(x)
    result = module.backward(grad)
    assert result.dtype == expected_dtype
    drops = isinstance(module, nn.Dropout) and module.training and module.p > 0
    mask = (output != 0).to(expected_dtype) / (0.5 if drops else 1.0)
    assert torch.equal(result, grad.to(expected_dtype) * mask)
    same = grad.to(forward_dtype)
    assert (module.backward(same) is same) == (not drops)


_F8 = torch.float8_e4m3fn


@pytest.mark.parametrize(
    ("forward_dtype", "grad_dtype"),
    [(torch.float32, _F8), (_F8, torch.float32), (_F8, torch.float8_e5m2), (torch.int64, _F8)],
    ids=str,
)
def test_identity_refuses_a_gradient_that_has_no_common_dtype_with_the_forwards(
    forward_dtype: torch.dtype, grad_dtype: torch.dtype
) -> None:
    """Identity passes any input on, float8 too, and promotes a gradient of another dtype; a
    float8 one and another dtype have none in common (torch.promote_types raises), so such a
    gradient is refused naming Identity and both dtypes, as an activation names a float8
    gradient. (It failed in torch's words, 'Promotion for Float8 Types is not supported', a
    RuntimeError naming no module.) A gradient of the forward's float8 dtype is returned
    itself, as any of the forward's dtype."""
    with pytest.raises(RuntimeError, match="Promotion for Float8 Types is not supported"):
        torch.promote_types(grad_dtype, forward_dtype)
    module = nn.Identity()
    x = _x(6, 5, seed=4).to(forward_dtype)
    assert module(x) is x
    with pytest.raises(
        TypeError,
        match=rf"^Identity: gradient dtype {grad_dtype} has no common dtype with the last "
        rf"forward's input dtype {forward_dtype} \(torch promotes no float8 dtype with "
        r"another\); convert the gradient$",
    ):
        module.backward(_x(6, 5, seed=5).to(grad_dtype))
    same = _x(6, 5, seed=5).to(forward_dtype)
    assert module.backward(same) is same


@pytest.mark.parametrize("grad_dtype", [torch.int64, torch.bool, torch.complex64], ids=str)
def test_identity_refuses_a_gradient_that_is_not_floating_for_a_floating_forward(
    grad_dtype: torch.dtype,
) -> None:
    """After a float32 forward, an integer, bool or complex gradient was converted or passed on
    (a Sequential ending in Identity took an int64 gradient that the same model ending in an
    evaluation-mode Dropout, or a Tanh, refused): refused by name. After an integer forward,
    which Identity takes as PyTorch's does, any gradient is passed on as before."""
    x = _x(4, 3, seed=1).float()
    for tail in (nn.Identity(), nn.Dropout().eval()):
        model = nn.Sequential(nn.Linear(3, 3), tail)
        model(x)
        with pytest.raises(TypeError, match=r"floating-point gradient.*got dtype"):
            model.backward(torch.ones(4, 3, dtype=grad_dtype))
    identity = nn.Identity()
    identity(x)
    with pytest.raises(
        TypeError,
        match=rf"^Identity: expected a floating-point gradient for the last forward's "
        rf"torch.float32 input, got dtype {grad_dtype}$",
    ):
        identity.backward(torch.ones(4, 3, dtype=grad_dtype))
    identity(torch.ones(4, 3, dtype=torch.int64))
    gradient = torch.ones(4, 3, dtype=grad_dtype)
    assert identity.backward(gradient).dtype == torch.promote_types(grad_dtype, torch.int64)


@pytest.mark.parametrize("layer", ["softmax", "log_softmax"])
@pytest.mark.parametrize(
    ("forward_dtype", "grad_dtype"),
    [
        (torch.float32, torch.float16),
        (torch.float64, torch.bfloat16),
        (torch.float16, torch.bfloat16),
        (torch.bfloat16, torch.float16),
        (torch.float16, torch.float32),
    ],
    ids=str,
)
def test_softmax_layers_promote_a_gradient_of_another_dtype(
    layer: str, forward_dtype: torch.dtype, grad_dtype: torch.dtype
) -> None:
    """The input gradient has the dtype torch's promotion gives, as the activations' does, and
    that precision: a 16-bit gradient through a float32 or float64 Softmax came back in 16 bits,
    float16 with bfloat16 in the gradient's dtype, and LogSoftmax, though float32, summed a
    float16 gradient in float16 (2e-4 off; a bfloat16 one through float64, 8e-3)."""
    module = nn.Softmax() if layer == "softmax" else nn.LogSoftmax()
    x = _x(6, 5, seed=4, scale=3.0).to(forward_dtype)
    grad = _x(6, 5, seed=5).to(grad_dtype)
    module(x)
    result = module.backward(grad)
    expected_dtype = torch.promote_types(forward_dtype, grad_dtype)
    assert result.dtype == expected_dtype
    # Oracle: autograd in float64 from the forward's (rounded) input and the gradient's values;
    # the result is as close as the forward's dtype allows (its cached output's rounding).
    leaf = x.double().requires_grad_()
    function = F.softmax if layer == "softmax" else F.log_softmax
    function(leaf, dim=1).backward(grad.double())
    assert leaf.grad is not None
    forward_eps = torch.finfo(forward_dtype).eps
    _close(result.double(), leaf.grad, rtol=4 * forward_eps, what="input gradient")


def _refusing_chain(case: str) -> tuple[nn.Sequential, list[torch.Tensor], torch.Generator]:
    """A chain whose batch norm or dropout (of its own generator) comes before a module that
    refuses a batch of 8 samples of 3 features, with what it holds."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    norm = nn.BatchNorm1d(4)
    if case == "a layer cast since":
        model = nn.Sequential(nn.Linear(3, 4), norm, nn.Tanh(), nn.Linear(4, 2))
        model[3].to(torch.float64)
    elif case == "a layer of another width":
        model = nn.Sequential(nn.Linear(3, 4), norm, nn.Tanh(), nn.Linear(5, 2))
    elif case == "after a dropout":
        model = nn.Sequential(
            nn.Linear(3, 4), nn.Dropout(0.5, generator=generator), nn.Linear(5, 2)
        )
    else:  # "a residual block of another width", its batch norm inside
        model = nn.Sequential(nn.Residual(nn.Sequential(nn.Linear(3, 4), norm)), nn.Tanh())
    return model, [buffer.clone() for buffer in norm.buffers()], generator


@pytest.mark.parametrize(
    "case",
    [
        "a layer cast since",
        "a layer of another width",
        "after a dropout",
        "a residual block of another width",
    ],
)
def test_a_chain_refused_after_a_batch_norm_or_dropout_leaves_them_as_they_were(
    case: str,
) -> None:
    """A module that refused its input after a batch norm or a dropout had run (a layer cast
    to float64 since, one of another width) left the batch norm's running statistics counting
    the refused batch, and the dropout's generator advanced. A chain holding such a module runs
    its children on the first sample in evaluation mode first, once a signature: the refusal
    comes before anything changes, and the chain trains as before once mended."""
    model, statistics, generator = _refusing_chain(case)
    state = generator.get_state()
    x = torch.randn(8, 3)
    with pytest.raises((TypeError, ValueError)):
        model(x)
    norm = next(m for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.Dropout))
    if isinstance(norm, nn.BatchNorm1d):
        assert all(torch.equal(a, b) for a, b in zip(norm.buffers(), statistics, strict=True))
    assert torch.equal(generator.get_state(), state)
    with pytest.raises(RuntimeError, match="backward after the forward refused"):
        model.backward(torch.ones(8, 2))


class _Counting(nn.Module):
    """An identity of one's own that records the mode of each of its forwards."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return input * 1.0

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output * 1.0


def test_a_chains_trial_runs_once_a_signature_and_changes_no_number() -> None:
    """The trial in evaluation mode runs once for each input signature and set of parameter
    tensors (a module of one's own sees one forward more then, in evaluation mode), and the
    training it precedes gives the numbers of the same steps run without it."""

    torch.manual_seed(0)
    counting = _Counting()
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), counting, nn.Linear(4, 2))
    reference = copy.deepcopy(model)
    x = torch.randn(8, 3)
    for _ in range(3):
        model(x)
        model.backward(torch.ones(8, 2))
    model(x[:5])  # (a smaller batch: the same signature)
    assert counting.modes == [False, True, True, True, True]
    # (the same steps child by child, which no trial precedes)
    for batch in (x, x, x, x[:5]):
        output = batch
        for child in reference:
            output = child.forward(output)
        if batch is x:
            grad = torch.ones(8, 2)
            for child in reversed(list(reference)):
                grad = child.backward(grad)
    for ours, theirs in zip(
        model.state_dict().values(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs)
    model[0].weight.data = model[0].weight.data.clone()  # (another tensor: tried again)
    model(x)
    assert counting.modes[5:] == [False, True]


@pytest.mark.parametrize("container", ["Sequential", "Residual"])
@pytest.mark.parametrize("how", ["the part", "the container"])
def test_a_batch_norm_put_back_in_training_mode_is_tried_again(container: str, how: str) -> None:
    """A batch norm frozen (``bn.eval()``) and unfrozen later, or a container in evaluation
    mode around a batch norm in training mode: the trial was remembered for the input's
    signature alone, made (or passed over) while the batch norm was in evaluation mode, and
    a refused forward after ``bn.train()`` left its running statistics counting the batch."""
    torch.manual_seed(0)
    norm = nn.BatchNorm1d(3)
    model: nn.Module
    if container == "Sequential":
        model = nn.Sequential(norm, nn.Linear(4, 2))  # (refuses 3 features, after the norm)
    else:
        model = nn.Residual(nn.Sequential(norm, nn.Linear(3, 2)))  # (refused: shape (4, 2))
    statistics = [tensor.clone() for tensor in norm.buffers()]
    x = torch.randn(4, 3)
    if how == "the part":
        norm.eval()
        with pytest.raises(ValueError):
            model(x)
        norm.train()
    else:
        model.eval()
        norm.train()
    with pytest.raises(ValueError):
        model(x)
    assert all(torch.equal(a, b) for a, b in zip(norm.buffers(), statistics, strict=True))


def test_a_trial_is_made_again_only_where_a_parts_mode_changed() -> None:
    """The modes of the modules that need a trial are part of what it is made for: a batch norm
    put in training mode makes one (none while it is in evaluation mode), as it was tried
    before none; the chain's other modules' modes are not looked at."""

    counting = _Counting()
    norm = nn.BatchNorm1d(3)
    model = nn.Sequential(norm, counting)
    x = torch.randn(4, 3)
    norm.eval()
    model(x)  # (no module that needs one in training mode: no trial)
    counting.eval()
    model(x)
    counting.train()
    norm.train()
    model(x)  # (the batch norm in training mode: a trial)
    counting.eval()
    model(x)  # (the counting module's mode: no trial)
    norm.eval()
    model(x)
    norm.train()
    model(x)  # (as tried before: no trial)
    assert counting.modes == [True, False, False, True, False, False, False]


class _Centre(nn.Module):
    """A module of one's own that takes no single sample (it centres the batch)."""

    def __init__(self, fewest: int = 2) -> None:
        super().__init__()
        self.fewest = fewest
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        if x.shape[0] < self.fewest:
            raise ValueError(f"_Centre: needs 2 samples at least, got shape {tuple(x.shape)}")
        return x - x.mean(0)

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output - grad_output.mean(0)


def test_a_chain_with_a_dropout_takes_a_module_that_needs_several_samples() -> None:
    """The trial on the first sample (see the test above) refused a batch that every child
    takes: a module that needs two samples failed on the one, and the real batch never ran.
    The trial runs the whole batch then, in evaluation mode still; the same chain without
    the dropout always took it."""
    torch.manual_seed(0)
    layers = (nn.Linear(3, 4), nn.Linear(4, 2))
    x = torch.randn(8, 3)
    outputs = []
    for fewest in (2, 1):  # the module; a twin that takes one sample, its batches alike
        generator = torch.Generator().manual_seed(3)
        centre = _Centre(fewest)
        first, last = copy.deepcopy(layers)
        model = nn.Sequential(first, nn.Dropout(0.25, generator=generator), centre, last)
        outputs.append((model(x), generator.get_state(), centre.calls))
    (output, state, calls), (expected, expected_state, expected_calls) = outputs
    assert output.shape == (8, 2) and torch.equal(output, expected)
    assert torch.equal(state, expected_state)  # (the trials drew nothing)
    assert calls == [(1, 4), (8, 4), (8, 4)]  # the sample, the batch, the real forward
    assert expected_calls == [(1, 4), (8, 4)]


def test_a_chain_refused_by_its_trial_names_the_shapes_given() -> None:
    """The trial on the first sample gave the sample's shape, (1, 3), in the message of a
    refusal of the batch the caller gave, (8, 3); the chain without a batch norm named
    (8, 3)."""
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(5, 2))
    before = [buffer.clone() for buffer in model[0].buffers()]
    with pytest.raises(
        ValueError, match=r"^Linear: expected 5 input features, got 3 \(input shape \(8, 3\)\)"
    ):
        model(torch.randn(8, 3))
    assert all(map(torch.equal, model[0].buffers(), before))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("running_var", torch.ones(4), r"running_var has shape \(4,\), torch\.float32, expected "
         r"a floating-point tensor of shape \(3,\) \(num_features\)"),
        ("running_mean", torch.zeros(4), r"running_mean has shape \(4,\)"),
        ("running_var", torch.ones(3, dtype=torch.float64), r"running_var is torch\.float64 on "
         r"cpu, expected torch\.float32 on cpu like running_mean"),
        ("running_mean", torch.zeros(3, dtype=torch.int64), r"running_mean has shape \(3,\), "
         r"torch\.int64, expected a floating-point tensor"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("affine", [False, True])
def test_batch_norm_checks_running_statistics_registered_by_hand(
    name: str, value: torch.Tensor, message: str, affine: bool
) -> None:
    """Statistics put in place with ``register_buffer`` were not checked: a ``running_var``
    of another shape failed in torch's words with the mean already updated, a float64 one in
    a float32 layer was taken, and a mean of another shape was named as the weight's fault."""
    norm = nn.BatchNorm1d(3, affine=affine)
    norm.register_buffer(name, value)
    before = [buffer.clone() for buffer in norm.buffers()]
    with pytest.raises(ValueError, match=rf"^BatchNorm1d: {message}"):
        norm(torch.randn(5, 3))
    assert all(map(torch.equal, norm.buffers(), before))


@pytest.mark.parametrize("shared", ["expanded", "one buffer as both"])
def test_batch_norm_refuses_statistics_that_share_memory_before_updating_them(
    shared: str,
) -> None:
    """A ``running_var`` registered as an expanded tensor failed in torch's words ("more than
    one element of the written-to tensor refers to a single memory location") with the mean
    already updated and the count not; the mean registered as the variance too took both
    updates. Refused by name in training before any update (in ``fit``'s check too); the
    evaluation forward, which only reads them, takes them."""
    norm = nn.BatchNorm1d(3, dtype=F64)
    if shared == "expanded":
        norm.register_buffer("running_var", torch.ones(1, dtype=F64).expand(3))
        message = (
            r"running_var has elements that share memory \(strides \(0,\), as expand makes\), "
            r"but training updates it in place; register_buffer\('running_var', tensor\.clone\(\)\)"
        )
    else:
        norm.register_buffer("running_var", norm.running_mean)
        message = (
            r"running_mean and running_var share memory, but training updates each in place; "
            r"register one of them again as a tensor of its own \(\.clone\(\)\)"
        )
    before = [buffer.clone() for buffer in norm.buffers()]
    x = torch.randn(4, 3, dtype=F64)
    with pytest.raises(ValueError, match=rf"^BatchNorm1d: {message}$"):
        norm(x)
    with pytest.raises(ValueError, match=rf"^BatchNorm1d: {message}$"):
        norm._check_training_state()
    assert all(map(torch.equal, norm.buffers(), before))
    norm.eval()
    variance = norm.running_var.expand(4, 3)
    expected = (x - norm.running_mean) / torch.sqrt(variance + norm.eps)
    assert torch.allclose(norm(x), expected, rtol=1e-12, atol=0)


def test_a_residual_refuses_a_block_set_by_hand_until_it_is_registered() -> None:
    """``residual.block = Linear(4, 4)`` (PyTorch's way, whose ``__setattr__`` registers it):
    the Residual ran and trained the new block while ``parameters()``, the optimizers and
    ``state_dict`` kept the old one, which never moved. Refused by name in forward, backward and
    backward_parameters, the registered block untouched; ``register_module`` takes it."""
    torch.manual_seed(0)
    residual = nn.Residual(nn.Linear(4, 4, dtype=F64))
    x = torch.randn(8, 4, dtype=F64)
    residual(x)
    registered = [p.data.clone() for p in residual.parameters()]
    residual.block = nn.Linear(4, 4, dtype=F64)
    refusal = (
        r"^Residual: its attribute 'block' \(Linear\) is not its registered block \(set by "
        r"hand: it would be run and trained while parameters\(\), the optimizers and "
        r"state_dict keep the registered one\); register it with "
        r"residual\.register_module\('block', module\), which replaces both$"
    )
    for call in (residual, residual.backward, residual.backward_parameters):
        with pytest.raises(ValueError, match=refusal):
            call(torch.ones(8, 4, dtype=F64))
    assert all(p.grad is None or not p.grad.any() for p in residual.parameters())
    assert all(map(torch.equal, (p.data for p in residual.parameters()), registered))
    residual.register_module("block", residual.block)
    assert list(residual.parameters()) == list(residual.block.parameters())
    assert torch.equal(residual(x), x + residual.block(x))


@pytest.mark.parametrize("part", ["batch norm", "dropout"])
def test_a_residual_refuses_its_blocks_shape_before_the_state_changes(part: str) -> None:
    """On its own (a Sequential runs its trial), a Residual whose block changes the width
    refused only after the block ran: the batch norm had counted the batch, the dropout's
    generator drawn."""
    generator = torch.Generator().manual_seed(2)
    inner = nn.BatchNorm1d(4) if part == "batch norm" else nn.Dropout(0.5, generator=generator)
    residual = nn.Residual(nn.Sequential(inner, nn.Linear(4, 3)))
    buffers = [buffer.clone() for buffer in residual.buffers()]
    state = generator.get_state()
    with pytest.raises(
        ValueError,
        match=r"^Residual: the block's output has shape \(6, 3\), expected the input's shape "
        r"\(6, 4\)$",
    ):
        residual(torch.randn(6, 4))
    assert all(map(torch.equal, residual.buffers(), buffers))
    assert torch.equal(generator.get_state(), state)
    assert inner.training and residual.training
    # A block that keeps the shape trains as before, its state moved by the real batch only.
    fitting = nn.Residual(nn.Sequential(copy.deepcopy(inner), nn.Linear(4, 4)))
    twin = copy.deepcopy(fitting)
    x = torch.randn(6, 4)
    assert torch.equal(fitting(x), x + twin.block(x))
    assert all(map(torch.equal, fitting.buffers(), twin.buffers()))


def test_a_linear_layer_loses_its_bias_by_register_parameter_none() -> None:
    """``layer.bias = None`` by hand computed without the bias while ``parameters()``, the
    optimizers and ``state_dict`` kept it (weight decay moved it); it is refused, naming
    ``register_parameter("bias", None)``, which removes it, in a Sequential too."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3, dtype=F64), nn.Tanh(), nn.Linear(3, 2, dtype=F64))
    by_hand = copy.deepcopy(model)
    by_hand[0].bias = None
    x = _x(5, 2, seed=60)
    with pytest.raises(
        ValueError, match=r"^Linear: bias is None, but a bias is still registered"
    ) as info:
        by_hand(x)
    assert "in Sequential, at module 0 (Linear)" in info.value.__notes__  # type: ignore[attr-defined]
    layer = model[0]
    assert isinstance(layer, nn.Linear)
    layer.register_parameter("bias", None)
    assert layer.bias is None and "bias=False" in repr(layer)
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "2.weight", "2.bias"]
    assert "0.bias" not in model.state_dict()
    twin = nn.Sequential(
        nn.Linear(2, 3, bias=False, dtype=F64), nn.Tanh(), nn.Linear(3, 2, dtype=F64)
    )
    twin.load_state_dict(model.state_dict())
    optimizer = optim.SGD(model.parameters(), lr=0.1, weight_decay=0.5)
    twin_optimizer = optim.SGD(twin.parameters(), lr=0.1, weight_decay=0.5)
    for net, opt in ((model, optimizer), (twin, twin_optimizer)):
        opt.zero_grad()
        net.backward(net(x))
        opt.step()
    for parameter, expected in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(parameter.data, expected.data)
    # A bias registered again is a parameter again.
    layer.register_parameter("bias", nn.Parameter(torch.zeros(3, dtype=F64)))
    assert "0.bias" in model.state_dict()


class _TakeTwo(nn.Module):
    """A block of one's own that keeps the first two features (another width)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.x = x
        return x[:, :2]

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        result = torch.zeros_like(self.x)
        result[:, :2] = grad_output
        return result


def test_a_residual_refused_by_its_trial_refuses_the_backward_that_follows() -> None:
    """The trial ran the block (its caches are the trial's), but the refusal left the Residual
    taking a backward, which failed in torch's words."""
    residual = nn.Residual(nn.Sequential(nn.Dropout(0.5), _TakeTwo()))
    residual(torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"^Residual: the block's output has shape \(4, 2\)"):
        residual(torch.randn(4, 3))
    with pytest.raises(
        RuntimeError,
        match=r"^Residual: backward after a forward refused for its block's output shape",
    ):
        residual.backward(torch.ones(4, 2))


def test_a_subclass_keeps_its_own_argument_of_a_name_pytorch_has() -> None:
    """PyTorch's ``label_smoothing`` is refused by minidl's constructor with a hint; a
    subclass whose own ``__init__`` takes the name was refused too, before it ran."""

    class Smoothed(nn.CrossEntropyLoss):
        def __init__(self, label_smoothing: float = 0.0) -> None:
            super().__init__()
            self.smoothing = label_smoothing

    assert Smoothed(label_smoothing=0.1).smoothing == 0.1
    with pytest.raises(TypeError, match=r"^CrossEntropyLoss: got label_smoothing=0\.1, but"):
        nn.CrossEntropyLoss(label_smoothing=0.1)  # type: ignore[call-arg]


def test_register_parameter_takes_over_only_a_parameter_removed() -> None:
    """A parameter may come back where ``register_parameter(name, None)`` removed one, not
    over any attribute that holds None (a plain attribute, a module's own state), which
    PyTorch refuses too."""
    module = nn.Module()
    module.cache = None
    with pytest.raises(KeyError, match=r"'cache' is already an attribute of Module"):
        module.register_parameter("cache", nn.Parameter(torch.zeros(1)))
    chain = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(KeyError, match=r"'_tried' is already an attribute"):
        chain.register_parameter("_tried", nn.Parameter(torch.zeros(1)))
    layer = nn.Linear(2, 3)
    bias = layer.bias
    assert bias is not None
    layer.register_parameter("bias", None)
    assert layer.register_parameter("bias", bias) is bias
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    layer.register_parameter("weight", None)
    with pytest.raises(
        TypeError,
        match=r"^Linear: weight is None \(removed with register_parameter\('weight', None\)\), "
        r"but the layer computes with one",
    ):
        layer(torch.randn(4, 2))


def test_a_chain_refused_by_its_trial_raises_one_error() -> None:
    """The refusal of the whole batch was raised while handling the sample's: two chained
    tracebacks for one bad input."""
    with pytest.raises(ValueError) as info:
        nn.Sequential(nn.BatchNorm1d(4), nn.Linear(5, 2))(torch.randn(8, 4))
    assert info.value.__context__ is None


def test_batch_norm_checks_its_count_of_batches() -> None:
    norm = nn.BatchNorm1d(3, momentum=None)
    norm.register_buffer("num_batches_tracked", torch.tensor([0, 0]))
    before = [buffer.clone() for buffer in norm.buffers()]
    with pytest.raises(
        ValueError,
        match=r"^BatchNorm1d: num_batches_tracked has shape \(2,\), torch\.int64, expected a "
        r"0-dim integer tensor",
    ):
        norm(torch.randn(5, 3))
    assert all(map(torch.equal, norm.buffers(), before))


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("num_batches_tracked", 3, "int 3"),
        ("running_mean", [0.0, 0.0, 0.0], r"list \[0\.0, 0\.0, 0\.0\]"),
        ("running_var", None, "NoneType None"),
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_names_a_buffer_assigned_a_non_tensor(
    name: str, value: object, shown: str, training: bool
) -> None:
    """``norm.num_batches_tracked = 3`` (PyTorch refuses the assignment itself) failed in the
    forward with a bare AttributeError of int; refused by name, in either mode, before anything
    changes; backward, which reads the last forward's caches, refuses only a running mean
    unlike the one that forward computed with."""
    norm = nn.BatchNorm1d(3, momentum=None).train(training)
    norm(torch.randn(5, 3))
    before = [buffer.clone() for buffer in norm.buffers()]
    setattr(norm, name, value)
    message = rf"^BatchNorm1d: {name} is {shown}, expected a torch\.Tensor \(update the buffer"
    with pytest.raises(TypeError, match=message):
        norm(torch.randn(5, 3))
    assert all(map(torch.equal, norm.buffers(), before))
    if name == "running_mean":
        with pytest.raises(TypeError, match=message):
            norm.backward(torch.ones(5, 3))
        assert norm.weight is not None and norm.weight.grad is not None
        assert not norm.weight.grad.any()
    else:
        norm.backward(torch.ones(5, 3))


@pytest.mark.parametrize("count", [-1, -2, -(2**40)])
def test_a_cumulative_batch_norm_refuses_a_negative_count_of_batches(count: int) -> None:
    """With momentum=None the count weighs the average: -1 divided by zero, -2 doubled the old
    statistics and subtracted the batch's; refused before anything is updated. A layer with a
    momentum does not read the count (it counts on from it, as PyTorch's does)."""
    norm = nn.BatchNorm1d(3, momentum=None)
    norm.num_batches_tracked.fill_(count)
    before = [buffer.clone() for buffer in norm.buffers()]
    with pytest.raises(
        ValueError,
        match=rf"^BatchNorm1d: num_batches_tracked is {count}, expected a count of batches >= 0",
    ):
        norm(torch.randn(5, 3))
    assert all(map(torch.equal, norm.buffers(), before))
    norm.eval()  # (evaluation reads the statistics alone)
    norm(torch.randn(5, 3))
    counting = nn.BatchNorm1d(3, momentum=0.1)
    counting.num_batches_tracked.fill_(count)
    counting(torch.randn(5, 3))
    assert int(counting.num_batches_tracked) == count + 1


@pytest.mark.parametrize("container", ["Sequential", "Residual"])
@pytest.mark.parametrize("refusal", ["one sample", "negative count"])
def test_a_training_refusal_of_a_later_batch_norm_leaves_the_earlier_modules_as_they_were(
    container: str, refusal: str
) -> None:
    """A batch norm's refusals of training mode alone (a batch of one sample; with
    momentum=None, a negative count of batches) came after the modules before it in the chain
    had run: an earlier batch norm's statistics counted the batch, a dropout's generator drew.
    The container's trial in evaluation mode makes them too now, before anything changes, also
    once the trial of the input's signature ran (a last batch of one sample; a count set
    since)."""
    generator = torch.Generator().manual_seed(0)
    first, last = nn.BatchNorm1d(3, dtype=F64), nn.BatchNorm1d(3, momentum=None, dtype=F64)
    chain = nn.Sequential(nn.Dropout(0.5, generator=generator), first, last)
    model = chain if container == "Sequential" else nn.Residual(chain)
    model(_x(4, 3, seed=1))  # (trains; the trial of this signature ran)
    if refusal == "negative count":
        last.num_batches_tracked.fill_(-1)
        x, message = _x(4, 3, seed=2), r"num_batches_tracked is -1, expected a count"
    else:
        x, message = _x(1, 3, seed=2), r"training mode needs more than one sample"
    state = generator.get_state()
    before = [buffer.clone() for buffer in chain.buffers()]
    with pytest.raises(ValueError, match=rf"^BatchNorm1d: {message}"):
        model(x)
    assert torch.equal(generator.get_state(), state)
    assert all(map(torch.equal, chain.buffers(), before))
    last.num_batches_tracked.fill_(1)
    model(_x(4, 3, seed=3))  # (trains again)
    assert int(first.num_batches_tracked) == 2 and int(last.num_batches_tracked) == 2


@pytest.mark.parametrize("mode", ["training", "evaluation"])
def test_fit_refuses_a_negative_count_before_it_draws_or_counts(mode: str) -> None:
    """fit's trial runs in evaluation mode, which reads no count: a later batch norm's
    negative count (momentum=None) was refused in the first training forward, after fit had
    drawn the epoch's order from the generator. Refused before, nothing changed; a count put
    right trains."""
    from minidl.train import fit

    torch.manual_seed(0)
    x = _x(40, 2, seed=1)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(
        nn.Linear(2, 4, dtype=F64), nn.BatchNorm1d(4, dtype=F64), nn.Tanh(),
        nn.Linear(4, 4, dtype=F64), nn.BatchNorm1d(4, momentum=None, dtype=F64),
        nn.Linear(4, 2, dtype=F64),
    )  # fmt: skip
    last = model[4]
    assert isinstance(last, nn.BatchNorm1d)
    last.num_batches_tracked.fill_(-2)
    if mode == "evaluation":  # (fit trains every module: the mode it is given is no matter)
        model.eval()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    state = generator.get_state()
    before = [tensor.clone() for tensor in model.state_dict().values()]
    with pytest.raises(ValueError, match=r"^BatchNorm1d: num_batches_tracked is -2, expected"):
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=10,
            generator=generator)  # fmt: skip
    assert torch.equal(generator.get_state(), state)
    assert all(map(torch.equal, model.state_dict().values(), before))
    last.num_batches_tracked.fill_(0)
    fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=10,
        generator=generator)  # fmt: skip
    assert int(last.num_batches_tracked) == 4


class _LinearThenNorm(nn.Module):
    """A block of one's own: a layer, then a batch norm (not a Sequential)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = self.register_module("lin", nn.Linear(3, 3, dtype=F64))
        self.bn = self.register_module("bn", nn.BatchNorm1d(3, dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.lin(x))

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return self.lin.backward(self.bn.backward(grad_output))


def test_a_residual_refuses_the_backward_after_its_blocks_trial_refused_midway() -> None:
    """A block of one's own whose batch norm refuses one sample in the trial: its layer had
    run on the refused input, and the backward that followed took its gradients from it,
    silently (the refusal came in the forward before the trial made it). Refused until a
    forward succeeds; a block of one module that refuses changes nothing and is not."""
    model = nn.Residual(_LinearThenNorm())
    model.eval()
    model(_x(1, 3, seed=1))
    model.train()
    with pytest.raises(ValueError, match=r"^BatchNorm1d: training mode needs more than one"):
        model(_x(1, 3, seed=2))
    with pytest.raises(RuntimeError, match=r"^Residual: backward after a forward refused in a "):
        model.backward(torch.ones(1, 3, dtype=F64))
    model(_x(4, 3, seed=3))
    model.backward(torch.ones(4, 3, dtype=F64))


class _TwoLayersChecked(nn.Module):
    """A block of one's own with a check of its own between its two layers."""

    def __init__(self) -> None:
        super().__init__()
        self.a = self.register_module("a", nn.Linear(3, 3, dtype=F64))
        self.b = self.register_module("b", nn.Linear(3, 3, dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.a(x)
        if hidden.abs().max() > 1e3:
            raise ValueError("_TwoLayersChecked: hidden values above 1e3")
        return self.b(hidden)

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return self.a.backward(self.b.backward(grad_output))


@pytest.mark.parametrize("mode", ["training", "evaluation"])
def test_a_residual_refuses_the_backward_after_its_block_refused_after_a_module_ran(
    mode: str,
) -> None:
    """A block of one's own that refuses an input after its first layer ran on it, with no
    trial (no batch norm or dropout): the backward after it took the first layer's weight
    gradient from the refused input (1e6 times the good one), silently; a Sequential holding
    the block refused it. Refused until a forward succeeds, which then differentiates as a
    copy that never saw the refused input."""
    model = nn.Residual(_TwoLayersChecked())
    if mode == "evaluation":
        model.eval()
    x = _x(4, 3, seed=1)
    model(x)
    twin = copy.deepcopy(model)
    with pytest.raises(ValueError, match="hidden values above 1e3"):
        model(x * 1e6)
    with pytest.raises(
        RuntimeError,
        match=r"^Residual: backward after a forward refused by its block after some of its "
        r"modules ran: ",
    ):
        model.backward(torch.ones(4, 3, dtype=F64))
    model(x)
    twin(x)
    assert torch.equal(model.backward(torch.ones(4, 3, dtype=F64)), twin.backward(
        torch.ones(4, 3, dtype=F64)))  # fmt: skip
    assert all(map(torch.equal, (p.grad for p in model.parameters()),
                   (p.grad for p in twin.parameters())))  # fmt: skip


def test_a_layer_built_without_a_bias_may_register_one_later() -> None:
    layer = nn.Linear(3, 2, bias=False)
    bias = nn.Parameter(torch.ones(2))
    assert layer.register_parameter("bias", bias) is bias
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    norm = nn.BatchNorm1d(3, affine=False)
    norm.register_parameter("weight", nn.Parameter(torch.ones(3)))
    assert [name for name, _ in norm.named_parameters()] == ["weight"]


def test_a_residual_whose_block_refuses_its_input_takes_the_backward_after() -> None:
    """A block that refused an input before changing anything leaves the last good forward's
    caches: the backward after it runs (the trial's refusal marked the Residual refused)."""
    residual = nn.Residual(nn.BatchNorm1d(3))
    x = torch.randn(4, 3)
    residual(x)
    with pytest.raises(ValueError, match=r"^BatchNorm1d: expected 3 input features, got 5"):
        residual(torch.randn(4, 5))
    assert residual.backward(torch.ones(4, 3)).shape == (4, 3)


@pytest.mark.parametrize(
    "container",
    [
        "Sequential",
        "Residual",
        "Residual of a Sequential",
        "Residual of a Residual",
        "Sequential of a Residual",
    ],
)
def test_a_forward_refused_by_the_first_module_in_a_trial_leaves_the_last_good_one(
    container: str,
) -> None:
    """A new signature (here a registration since) runs the trial in evaluation mode, which
    replaced the batch norm's caches with the trial's; the forward was then refused by that
    first module itself, and a backward of the refused batch's shape ran on the trial's
    caches, accumulating their gradients without an error. The batch norm now refuses a
    single sample in the trial itself, before anything is cached (see
    test_a_training_refusal_of_a_later_batch_norm_leaves_the_earlier_modules_as_they_were):
    as for any first module that refuses its input, the last good forward stays, and its
    backward runs; a gradient of the refused batch's shape is refused."""
    model: nn.Module = {
        "Sequential": lambda: nn.Sequential(nn.BatchNorm1d(3), nn.Tanh()),
        "Residual": lambda: nn.Residual(nn.BatchNorm1d(3)),
        # (a Sequential block notes its own refusal: none by its first module)
        "Residual of a Sequential": lambda: nn.Residual(
            nn.Sequential(nn.BatchNorm1d(3), nn.Tanh())
        ),
        # (nor a Residual of such a block: see Module._refused_cleanly)
        "Residual of a Residual": lambda: nn.Residual(nn.Residual(nn.BatchNorm1d(3))),
        "Sequential of a Residual": lambda: nn.Sequential(
            nn.Residual(nn.BatchNorm1d(3)), nn.Tanh()
        ),
    }[container]()
    model(torch.randn(4, 3))
    model.backward(torch.ones(4, 3))
    alone = copy.deepcopy(model)
    nn.Linear(1, 1)  # (a registration: the next forward's trial runs again)
    with pytest.raises(ValueError, match="more than one sample"):
        model(torch.randn(1, 3))
    grads = [p.grad.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"gradient has shape \(1, 3\), expected \(4, 3\)"):
        model.backward(torch.ones(1, 3))
    assert all(map(torch.equal, (p.grad for p in model.parameters()), grads))
    assert torch.equal(model.backward(torch.ones(4, 3)), alone.backward(torch.ones(4, 3)))
    assert all(
        map(torch.equal, (p.grad for p in model.parameters()), (p.grad for p in alone.parameters()))
    )
    model(torch.randn(4, 3))
    model.backward(torch.ones(4, 3))


def test_a_state_dict_without_num_batches_tracked_loads_and_keeps_the_count() -> None:
    """PyTorch fills in a batch norm's num_batches_tracked where a state dict lacks it (those
    of PyTorch before 0.4.1, and plain dicts made by hand), keeping the module's count; minidl
    refused it as a missing key, with strict. Any other key missing is still refused."""
    twin = torch.nn.BatchNorm1d(3)
    twin(torch.randn(6, 3))
    entries = {k: v for k, v in twin.state_dict().items() if k != "num_batches_tracked"}
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    model(torch.randn(4, 3))
    model(torch.randn(4, 3))
    given = {f"1.{name}": value for name, value in entries.items()}
    given.update({"0.weight": torch.ones(3, 3), "0.bias": torch.zeros(3)})
    assert model.load_state_dict(given) == ([], [])
    norm = model[1]
    assert isinstance(norm, nn.BatchNorm1d)
    assert torch.equal(norm.running_mean, twin.running_mean)
    assert norm.num_batches_tracked.item() == 2
    del given["1.running_var"]
    with pytest.raises(KeyError, match=r"missing keys \['1\.running_var'\]"):
        model.load_state_dict(given)
    assert torch.equal(norm.running_mean, twin.running_mean)


@pytest.mark.parametrize(("dtype", "eps"), [(torch.float32, 1e-300), (torch.float16, 1e-46)])
def test_a_batch_norm_refuses_an_eps_its_dtype_rounds_to_0(dtype: torch.dtype, eps: float) -> None:
    """An eps that the dtype the layer computes in (float32 for a float16 layer) rounds to 0:
    a constant feature was divided by 0, its outputs and gradients NaN. Refused at the forward,
    naming eps and the dtype, before the running statistics count the batch; an eps that the
    dtype holds, however small, is taken."""
    layer = nn.BatchNorm1d(2, eps=eps).to(dtype=dtype)
    x = torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]], dtype=dtype)
    statistics = [tensor.clone() for tensor in layer.buffers()]
    with pytest.raises(ValueError, match=r"^BatchNorm1d: eps=.* rounds to 0 in torch\.float"):
        layer(x)
    assert all(torch.equal(a, b) for a, b in zip(layer.buffers(), statistics, strict=True))
    smallest = torch.finfo(torch.float64 if dtype is torch.float64 else torch.float32)
    layer.eps = smallest.smallest_normal * smallest.eps  # (the smallest it holds)
    assert bool(layer(x).isfinite().all())


def test_a_residual_block_registered_anew_is_the_one_that_runs() -> None:
    """register_module("block", new) replaced the registry's child, not the attribute that the
    Residual's forward and backward read: the old block ran, while parameters(), state_dict
    and an optimizer held the new one (and a Sequential of it called the block unregistered).
    The attribute follows the registry now."""
    residual = nn.Residual(nn.Linear(3, 3, dtype=torch.float64))
    new = nn.Linear(3, 3, dtype=torch.float64)
    residual.register_module("block", new)
    assert residual.block is new and list(residual.parameters()) == list(new.parameters())
    x = torch.randn(2, 3, dtype=torch.float64)
    assert torch.equal(residual(x), x + new(x))
    residual.backward(torch.ones(2, 3, dtype=torch.float64))
    assert bool(new.weight.grad.abs().sum() > 0)
    nn.Sequential(residual)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_tanh_backward_of_a_16_bit_output_into_a_wider_gradient_keeps_its_precision(
    dtype: torch.dtype,
) -> None:
    """With a float32 gradient, y^2 of a 16-bit output was squared in the output's dtype (8 or
    11 bits) before the promotion: 2.2% off for bfloat16, where Sigmoid and ELU promote
    first. 1 - y^2 is now that of the exact y, rounded once in float32."""
    tanh = nn.Tanh()
    output = tanh(torch.linspace(-3, 3, 101).to(dtype))
    got = tanh.backward(torch.ones(101, dtype=torch.float32))
    expected = (1 - output.double() ** 2).float()
    assert got.dtype is torch.float32
    assert float(((got - expected).abs() / expected.abs().clamp_min(1e-30)).max()) < 1e-6
