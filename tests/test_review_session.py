"""Review of the changes since c16d60e: the refusal flags of Sequential and Residual under
anomaly detection and interrupts, the optimizers' hyper-parameters on load_state_dict,
gradcheck's contract checks on non-finite outputs and RunSettings' integers; PyTorch autograd
is the oracle of the gradients."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

import minidl
from minidl import nn, optim
from minidl.experiments.runner import RunSettings
from minidl.gradcheck import GradcheckError, gradcheck
from minidl.interop import to_torch
from minidl.optim.optimizer import Optimizer
from minidl.train import fit

F64 = torch.float64


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3, dtype=F64), nn.Tanh(), nn.Linear(3, 2, dtype=F64))


def _autograd_grads(model: nn.Sequential, x: Tensor, upstream: Tensor) -> list[Tensor]:
    """The parameter gradients of ``upstream . model(x)`` by PyTorch autograd."""
    torch_model = to_torch(model)
    (torch_model(x) * upstream).sum().backward()
    return [p.grad for p in torch_model.parameters()]


def _grads(model: nn.Module) -> list[Tensor]:
    return [p.grad.clone() for p in model.parameters()]


# -- Sequential's refusal flag under detect_anomaly ----------------------------------------------


def test_a_forward_that_succeeds_under_detect_anomaly_lifts_a_refusal() -> None:
    """Under ``detect_anomaly()`` a stopped forward refuses backward; a forward that then
    succeeds (still under it) must make backward possible again, as outside it."""
    model = _model()
    x, upstream = torch.randn(4, 2, dtype=F64), torch.randn(4, 2, dtype=F64)
    with minidl.detect_anomaly():
        with pytest.raises(minidl.anomaly.AnomalyError):
            model(torch.tensor([[float("nan"), 0.0]], dtype=F64))
        model(x)
        model.zero_grad()
        model.backward(upstream)
    for grad, expected in zip(_grads(model), _autograd_grads(model, x, upstream), strict=True):
        torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def _nested() -> nn.Sequential:
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Identity(), nn.Linear(2, 3, dtype=F64), nn.Tanh())
    return nn.Sequential(inner, nn.Linear(3, 2, dtype=F64))


def test_a_nested_sequential_refusal_is_lifted_by_a_forward_under_detect_anomaly() -> None:
    """A nested Sequential's own forward is not called under ``detect_anomaly()``: its flag must
    still follow the forwards, or a later backward outside the block raises for a forward that
    succeeded."""
    model = _nested()
    x, upstream = torch.randn(4, 2, dtype=F64), torch.randn(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="Linear: expected 2 input features"):
        model(torch.randn(4, 5, dtype=F64))  # Identity accepts it, the Linear refuses it
    with minidl.detect_anomaly():
        model(x)
    model.zero_grad()
    model.backward(upstream)
    for grad, expected in zip(_grads(model), _autograd_grads(model, x, upstream), strict=True):
        torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_a_nested_sequential_refused_on_its_own_refuses_backward_under_detect_anomaly() -> None:
    """Outside ``detect_anomaly()`` the outer backward reaches the refused inner one, which
    raises; under it the same backward must raise too rather than mix two inputs' caches."""
    model = _nested()
    x, upstream = torch.randn(4, 2, dtype=F64), torch.randn(4, 2, dtype=F64)
    model(x)
    with pytest.raises(ValueError, match=r"^Linear: expected 2 input features, got 5"):
        model[0](torch.randn(4, 5, dtype=F64))
    with pytest.raises(RuntimeError, match="Sequential: backward after"):
        model.backward(upstream)
    with minidl.detect_anomaly(), pytest.raises(RuntimeError, match="Sequential: backward after"):
        model.backward(upstream)


def test_a_first_module_stopped_by_detect_anomaly_on_its_output_refuses_backward() -> None:
    """``detect_anomaly(model)`` checks each module's output after it ran: the first Linear
    has then cached the refused input, and backward must not mix it with the last good
    forward's gradient."""
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
    x, upstream = torch.randn(4, 2), torch.randn(4, 2)
    model(x)
    with minidl.detect_anomaly(model), pytest.raises(minidl.anomaly.AnomalyError):
        model(torch.full((4, 2), 3e38))  # finite, but the first Linear's output is not
    model.zero_grad()
    with pytest.raises(RuntimeError, match=r"Sequential: backward after .*AnomalyError"):
        model.backward(upstream)
    assert all(not p.grad.any() for p in model.parameters())
    model(x)
    model.backward(upstream)  # a forward that succeeds lifts it


class _Interrupted(nn.Module):
    """Caches its input, then is interrupted (a Ctrl-C between two lines of its forward)."""

    def __init__(self) -> None:
        super().__init__()
        self._input: Tensor | None = None
        self.interrupt = False

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        if self.interrupt:
            raise KeyboardInterrupt
        return input * 2

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output * 2


def test_a_first_module_interrupted_refuses_backward_until_a_forward_succeeds() -> None:
    first = _Interrupted()
    model = nn.Sequential(first, nn.Linear(2, 2))
    x = torch.randn(3, 2)
    model(x)
    first.interrupt = True
    with pytest.raises(KeyboardInterrupt):
        model(torch.randn(3, 2))
    with pytest.raises(RuntimeError, match=r"module 0 \(_Interrupted\) by KeyboardInterrupt"):
        model.backward(torch.ones(3, 2))
    first.interrupt = False
    model(x)
    model.backward(torch.ones(3, 2))


def test_a_residual_whose_leaf_block_is_stopped_by_detect_anomaly_refuses_backward() -> None:
    torch.manual_seed(0)
    residual = nn.Residual(nn.Linear(2, 2))
    x, upstream = torch.randn(4, 2), torch.randn(4, 2)
    residual(x)
    with minidl.detect_anomaly(residual), pytest.raises(minidl.anomaly.AnomalyError):
        residual(torch.full((4, 2), 3e38))
    residual.zero_grad()
    with pytest.raises(RuntimeError, match="Residual: backward after"):
        residual.backward(upstream)


# -- optimizers: load_state_dict ------------------------------------------------------------------


def test_sgd_state_whose_hyperparameters_need_other_state_tensors_changes_nothing() -> None:
    """A state dict whose hyper-parameters (momentum 0) need no momentum buffer while its state
    holds one was refused only after lr, step_count and the buffer had been overwritten."""
    model = _model()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad.normal_()
    optimizer.step()
    before = optimizer.state_dict()
    tampered = {
        "lr": 0.5,
        "step_count": 7,
        "hyperparameters": {"momentum": 0.0},
        "state": {"momentum_buffer": torch.full_like(before["state"]["momentum_buffer"], 3.0)},
    }
    with pytest.raises(ValueError, match=r"SGD\.load_state_dict: .*momentum=0\.0.*state tensors"):
        optimizer.load_state_dict(tampered)
    after = optimizer.state_dict()
    assert (after["lr"], after["step_count"], after["hyperparameters"]) == (
        before["lr"],
        before["step_count"],
        before["hyperparameters"],
    )
    assert torch.equal(after["state"]["momentum_buffer"], before["state"]["momentum_buffer"])


class _PlainAttributeOptimizer(Optimizer):
    """A subclass written as minidl's own were before Hyperparameter: a plain attribute."""

    def __init__(self, params: Any, lr: float, scale: float = 1.0) -> None:
        self.scale = scale
        super().__init__(params, lr)

    def _validate_hyperparameters(self, **hyperparameters: Any) -> dict[str, Any]:
        return {"scale": float(hyperparameters["scale"])}

    def hyperparameters(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def _update(self, value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
        value.add_(grad, alpha=-self.lr * self.scale)


def test_a_subclass_with_plain_attribute_hyperparameters_loads_them_back() -> None:
    model = _model()
    saved = _PlainAttributeOptimizer(model.parameters(), lr=0.1, scale=0.25).state_dict()
    optimizer = _PlainAttributeOptimizer(model.parameters(), lr=0.1, scale=0.75)
    optimizer.load_state_dict(saved)
    assert optimizer.scale == 0.25
    assert optimizer.hyperparameters() == {"scale": 0.25}


# -- gradcheck's contract checks -------------------------------------------------------------------


class _Log(nn.Module):
    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return input.log()

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output / self._input


@pytest.mark.parametrize("value", [0.0, -1.0], ids=["minus-infinity", "nan"])
def test_gradcheck_does_not_call_a_non_finite_output_random(value: float) -> None:
    """log(0) = -inf and log(-1) = nan on both calls: the forward is deterministic."""
    x = torch.tensor([[value, 1.0, 2.0]], dtype=F64)
    try:
        gradcheck(_Log(), x)
    except GradcheckError as error:
        assert "not deterministic" not in str(error)


def test_gradcheck_still_reports_a_random_forward() -> None:
    dropout = nn.Dropout(0.5)
    with pytest.raises(GradcheckError, match="forward is not deterministic"):
        gradcheck(dropout, torch.randn(4, 6, dtype=F64))


# -- RunSettings ----------------------------------------------------------------------------------


def test_run_settings_keep_numpy_integers_as_plain_ints() -> None:
    """Accepted as integers, numpy integers must not reach results.json, whose writing (after
    the training) would fail on them."""
    settings = RunSettings(
        rounds=np.int64(2),
        base_seed=0,
        tables="1",
        quick=False,
        epochs_override=np.int64(3),
        command="minidl reproduce",
        jobs=np.int64(1),
    )
    values = [settings.rounds, settings.epochs_override, settings.jobs]
    assert all(type(value) is int for value in values)
    json.dumps(values)


def test_fit_under_detect_anomaly_trains_after_a_run_it_stopped() -> None:
    """``with detect_anomaly(): fit(...)`` stopped by a NaN in the data, then run again on clean
    data (still under it), must train: every backward raised, for good, before."""
    model = _model()
    x = torch.randn(8, 2, dtype=F64)
    y = torch.randint(0, 2, (8,))
    bad = x.clone()
    bad[0, 0] = float("nan")
    criterion = nn.CrossEntropyLoss()
    with minidl.detect_anomaly():
        with pytest.raises(minidl.anomaly.AnomalyError):
            fit(model, criterion, optim.SGD(model.parameters(), lr=0.1), bad, y, epochs=1)
        history = fit(
            model, criterion, optim.SGD(model.parameters(), lr=0.1), x, y, epochs=1, batch_size=4
        )
    assert len(history.train_loss) == 1


@pytest.mark.parametrize("drop_last", [False, True])
def test_fit_with_batches_of_one_and_a_batch_norm_does_not_advise_drop_last(
    drop_last: bool,
) -> None:
    """With ``batch_size=1`` every batch is one sample: ``drop_last=True`` cannot help (and may
    already be given), so the message must not advise it."""
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    x, y = torch.randn(10, 2), torch.randint(0, 2, (10,))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"BatchNorm1d '1'.*batch_size >= 2") as error:
        fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=1,
            batch_size=1,
            drop_last=drop_last,
        )
    assert "drop_last" not in str(error.value)


def test_published_adadelta_names_itself_in_its_hyperparameter_errors() -> None:
    """A subclass's errors name it (the project's rule), and load_state_dict's say so."""
    from minidl.experiments.faithful import PublishedAdadelta

    model = _model()
    optimizer = PublishedAdadelta(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"^PublishedAdadelta: rho must be in \[0, 1\], got 2"):
        PublishedAdadelta(model.parameters(), rho=2.0)
    with pytest.raises(ValueError, match=r"^PublishedAdadelta: rho must be in \[0, 1\], got 2"):
        optimizer.rho = 2.0
    saved = optimizer.state_dict()
    saved["hyperparameters"] = {"rho": 1.5, "eps": 1e-6}
    with pytest.raises(ValueError, match=r"^PublishedAdadelta\.load_state_dict: rho must be"):
        optimizer.load_state_dict(saved)
    assert optimizer.rho == 0.9
