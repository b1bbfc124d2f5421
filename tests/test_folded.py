"""``fit``'s folded training step (:mod:`minidl.folded`) against the step-by-step loop.

The oracle is the loop that ``fit`` documents, run by ``fit`` itself with the folded step
turned off (``FoldedStep.build`` made to decline), whose modules, losses and optimizers the
rest of the suite checks against PyTorch: in float64 every parameter, gradient, optimizer
state, learning rate and recorded loss agrees to about 1e-12 after several epochs, over the
activations, losses, optimizers, schedules, batch sizes and chains the step takes. Then what
the folded step must leave as the loop leaves it (the model at every ``on_epoch``, after an
interruption, after two calls), and every case where ``fit`` must not fold.
"""

from __future__ import annotations

import contextlib
import copy
import types
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
import torch
from torch import Tensor

import minidl
from minidl import nn, optim
from minidl.folded import WIDE_INPUT, FoldedStep
from minidl.train import History, fit
from tests.helpers import unfolded

F64 = torch.float64


def _data(
    samples: int = 50, features: int = 3, classes: int = 3, seed: int = 0
) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=generator, dtype=F64)
    y = torch.randint(0, classes, (samples,), generator=generator)
    return x, y


def _model(sizes: tuple[int, ...] = (3, 6, 5, 3), activation: str = "tanh") -> nn.Sequential:
    return nn.mlp(sizes, activation, dtype=F64, generator=torch.Generator().manual_seed(1))


def _close(a: Tensor, b: Tensor, tolerance: float = 1e-12) -> None:
    scale = max(1.0, float(b.abs().max()) if b.numel() else 1.0)
    error = float((a - b).abs().max()) if a.numel() else 0.0
    assert error <= tolerance * scale, f"differs by {error:g} (scale {scale:g})"


def _same_training(
    folded: tuple[nn.Module, optim.Optimizer, History],
    plain: tuple[nn.Module, optim.Optimizer, History],
    tolerance: float = 1e-12,
) -> None:
    (model, optimizer, history), (model_p, optimizer_p, history_p) = folded, plain
    for p, q in zip(model.parameters(), model_p.parameters(), strict=True):
        _close(p.data, q.data, tolerance)
        _close(p.grad, q.grad, tolerance)
    assert optimizer.state.keys() == optimizer_p.state.keys()
    for name in optimizer.state:
        _close(optimizer.state[name], optimizer_p.state[name], tolerance)
    assert optimizer.step_count == optimizer_p.step_count
    assert optimizer.lr == optimizer_p.lr
    assert history.lr == history_p.lr and history.batch_lr == history_p.batch_lr
    assert len(history.train_loss) == len(history_p.train_loss)
    for a, b in zip(history.train_loss, history_p.train_loss, strict=True):
        assert abs(a - b) <= tolerance * max(1.0, abs(b)), (a, b)


def _train_both(
    make: Callable[[], tuple[nn.Module, nn.Loss, optim.Optimizer, Any]],
    x: Tensor,
    y: Tensor,
    folds: bool = True,
    **options: Any,
) -> tuple[tuple[nn.Module, optim.Optimizer, History], tuple[nn.Module, optim.Optimizer, History]]:
    """``fit`` run folded (its folded step must run, unless ``folds`` is false: a test of a
    case it declines) and step by step, each from ``make()``."""
    runs = []
    for fold in (True, False):
        model, criterion, optimizer, scheduler = make()
        generator = torch.Generator().manual_seed(5)
        context = _folding(folds) if fold else _path(fold)
        with context:
            history = fit(
                model,
                criterion,
                optimizer,
                x,
                y,
                scheduler=scheduler,
                generator=generator,
                **options,
            )
        runs.append((model, optimizer, history))
    return runs[0], runs[1]


@contextlib.contextmanager
def _folding(runs: bool = True) -> Iterator[None]:
    """``fit`` as it runs, whose folded step must run in the block (a comparison with the loop
    would still pass if ``fit`` stopped folding), or must not (``runs`` false: a case it
    declines)."""
    calls = [0]
    original = FoldedStep.__call__

    def counting(self: FoldedStep, x: Tensor, y: Tensor) -> Tensor:
        calls[0] += 1
        return original(self, x, y)

    with mock.patch.object(FoldedStep, "__call__", counting):
        yield
    assert (calls[0] > 0) == runs, f"fit ran its folded step {calls[0]} times"


def _path(fold: bool) -> contextlib.AbstractContextManager[object]:
    """The folded step (``fold``), or the step-by-step loop."""
    return contextlib.nullcontext() if fold else unfolded()


def _stopped_both_ways(
    error: type[BaseException],
    x: Tensor,
    y: Tensor,
    criterion: nn.Loss | None = None,
    before: Callable[[], None] = lambda: None,
    scheduler: Callable[[optim.Optimizer], Any] | None = None,
    **options: Any,
) -> dict[bool, tuple[nn.Module, optim.Optimizer, History]]:
    """``fit`` stopped by ``error``, folded (``True``) and step by step (``False``): momentum
    SGD on :func:`_model`, batches of 10 in a seeded order, ``before`` called before each run
    and ``scheduler`` built on its optimizer; the two runs must leave the same training."""
    runs = {}
    for fold in (True, False):
        before()
        model = _model()
        optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.9)
        with _path(fold), pytest.raises(error):
            fit(
                model,
                nn.CrossEntropyLoss() if criterion is None else criterion,
                optimizer,
                x,
                y,
                batch_size=10,
                scheduler=None if scheduler is None else scheduler(optimizer),
                generator=torch.Generator().manual_seed(0),
                **options,
            )
        runs[fold] = (model, optimizer, History())
    _same_training(runs[True], runs[False])
    return runs


def _fit(
    model: nn.Module, optimizer: optim.Optimizer, x: Tensor, y: Tensor, **options: Any
) -> History:
    """``fit`` under cross-entropy."""
    return fit(model, nn.CrossEntropyLoss(), optimizer, x, y, **options)


def _count_folded_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = FoldedStep.__call__

    def counting(self: FoldedStep, x: Tensor, y: Tensor) -> Tensor:
        calls[0] += 1
        return original(self, x, y)

    monkeypatch.setattr(FoldedStep, "__call__", counting)
    return calls


def _record_builds(monkeypatch: pytest.MonkeyPatch) -> list[FoldedStep | None]:
    """What each ``FoldedStep.build`` returns from now on (``None``: fit ran the loop)."""
    build = FoldedStep.build
    built: list[FoldedStep | None] = []

    def recorded(*arguments: Any) -> FoldedStep | None:
        built.append(build(*arguments))
        return built[-1]

    monkeypatch.setattr(FoldedStep, "build", staticmethod(recorded))
    return built


# -- the same training as the step-by-step loop ------------------------------------------------


@pytest.mark.parametrize(
    "activation",
    ["tanh", "sigmoid", "relu", "leaky_relu", "elu", "selu", "gelu", "gelu_tanh", "silu"],
)
@pytest.mark.parametrize("batch_size", [1, 7, 50])
def test_activations_and_batch_sizes(activation: str, batch_size: int) -> None:
    """Every planned activation, batches of 1, an uneven last batch (50 = 7 * 7 + 1) and one
    batch of everything: cross-entropy, SGD with momentum, 3 epochs."""
    x, y = _data()

    def make() -> tuple[nn.Module, nn.Loss, optim.Optimizer, Any]:
        model = _model(activation=activation)
        optimizer = optim.SGD(model.parameters(), 0.02, momentum=0.5)
        return model, nn.CrossEntropyLoss(), optimizer, None

    _same_training(*_train_both(make, x, y, epochs=3, batch_size=batch_size))


@pytest.mark.parametrize("features", [WIDE_INPUT - 1, WIDE_INPUT])
def test_a_wide_input_is_copied_into_the_first_layer_either_way(features: int) -> None:
    """Below WIDE_INPUT features a batch goes into the first layer's input through a
    transposed view made once, from it on as ``rows.copy_(x.t())`` (the faster copy there:
    1024x512 took 2.2 ms against 1.0 ms): either way the folded step trains as the loop,
    batches of 1 and an uneven last one included, and the copy it makes is the one its width
    calls for."""
    x, y = _data(samples=20, features=features)

    def make() -> tuple[nn.Module, nn.Loss, optim.Optimizer, Any]:
        model = _model(sizes=(features, 4, 3))
        return model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.05), None

    for batch_size in (1, 7):
        _same_training(*_train_both(make, x, y, epochs=2, batch_size=batch_size))
    model, criterion, optimizer, _ = make()
    step = FoldedStep.build(model, criterion, optimizer, x, y)
    assert step is not None
    step(x[:7], y[:7])
    (batch,) = step._batches.values()
    assert (batch.samples is None) == (features >= WIDE_INPUT)
    assert torch.equal(batch.rows, x[:7].t())


def _loss_target(name: str, y: Tensor, classes: int) -> tuple[nn.Loss, Tensor]:
    onehot = torch.nn.functional.one_hot(y, classes).to(F64)
    return {
        "cross_entropy": (nn.CrossEntropyLoss(), y),
        "cross_entropy_sum": (nn.CrossEntropyLoss(reduction="sum"), y),
        "cross_entropy_probabilities": (nn.CrossEntropyLoss(), onehot * 0.8 + 0.2 / classes),
        "mse_paper": (nn.MSELoss(), onehot),
        "mse_mean": (nn.MSELoss(reduction="mean"), onehot),
        "mse_sum": (nn.MSELoss(reduction="sum"), onehot),
        "nll": (nn.NLLLoss(), y),
        "l1": (nn.L1Loss(), onehot),
        "huber": (nn.HuberLoss(delta=0.5), onehot),
        "bce_with_logits": (nn.BCEWithLogitsLoss(), onehot),
    }[name]


@pytest.mark.parametrize(
    "loss",
    [
        "cross_entropy",
        "cross_entropy_sum",
        "cross_entropy_probabilities",
        "mse_paper",
        "mse_mean",
        "mse_sum",
        "nll",
        "l1",
        "huber",
        "bce_with_logits",
    ],
)
def test_losses(loss: str) -> None:
    """Every built-in loss that takes ``(N, C)`` predictions, with the targets it takes."""
    x, y = _data()

    def make() -> tuple[nn.Module, nn.Loss, optim.Optimizer, Any]:
        model = _model()
        criterion, _ = _loss_target(loss, y, 3)
        return model, criterion, optim.SGD(model.parameters(), 0.005), None

    target = _loss_target(loss, y, 3)[1]
    _same_training(*_train_both(make, x, target, epochs=3, batch_size=8))


_OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], optim.Optimizer]] = {
    "sgd": lambda p: optim.SGD(p, 0.1),
    "sgd_momentum": lambda p: optim.SGD(p, 0.1, momentum=0.9),
    "sgd_nesterov_decay": lambda p: optim.SGD(
        p, 0.1, momentum=0.9, nesterov=True, weight_decay=1e-2
    ),
    "adadelta": lambda p: optim.Adadelta(p, lr=1.0),
    "adam": lambda p: optim.Adam(p, lr=1e-2),
    "adamw": lambda p: optim.AdamW(p, lr=1e-2),
    "rmsprop": lambda p: optim.RMSprop(p, lr=1e-2, momentum=0.5),
    "adagrad": lambda p: optim.Adagrad(p, lr=1e-2, lr_decay=1e-3),
}


@pytest.mark.parametrize("name", sorted(_OPTIMIZERS))
def test_optimizers(name: str) -> None:
    """Every optimizer: its update runs on the folded buffers, and its state comes back."""
    x, y = _data()

    def make() -> tuple[nn.Module, nn.Loss, optim.Optimizer, Any]:
        model = _model()
        return model, nn.CrossEntropyLoss(), _OPTIMIZERS[name](list(model.parameters())), None

    _same_training(*_train_both(make, x, y, epochs=4, batch_size=10))


@pytest.mark.parametrize("name", ["sgd", "adam", "adagrad"])
def test_a_gradient_cancelled_on_one_path_only_is_magnified_by_an_adaptive_step(
    name: str,
) -> None:
    """L1's gradients, sums of signs / (N C), cancel to 0 in a batch: the folded step's bias
    gradient is 0.0 there, the loop's 1.4e-17 (its sum runs in another order). SGD adds lr
    times that; Adagrad (eps 1e-10) and Adam (eps 1e-8) divide by the gradient's own size, so
    their parameters part by about lr * 1e-17 / eps: 1.4e-8 and 1.4e-11 after an epoch, the
    bound fit's docstring gives, not the 1e-12 of the other cases."""
    data = minidl.data.make_disk_data(103, 17, 5, seed=1, dtype=F64)
    x, y = data.train.x, torch.nn.functional.one_hot(data.train.y, 2).to(F64)
    optimizers = {
        "sgd": (lambda p: optim.SGD(p, 0.1), 1e-15),
        "adam": (lambda p: optim.Adam(p, 0.1), 0.1 * 1e-16 / 1e-8),
        "adagrad": (lambda p: optim.Adagrad(p, 0.1), 0.1 * 1e-16 / 1e-10),
    }
    build, bound = optimizers[name]

    def make() -> tuple[nn.Module, nn.Loss, optim.Optimizer, Any]:
        model = nn.mlp((2, 8, 2), "tanh", dtype=F64, generator=torch.Generator().manual_seed(0))
        return model, nn.L1Loss(), build(list(model.parameters())), None

    (folded, _, _), (plain, _, _) = _train_both(make, x, y, epochs=1, batch_size=10)
    for p, q in zip(folded.parameters(), plain.parameters(), strict=True):
        _close(p.data, q.data, bound)


@pytest.mark.parametrize("interval", ["batch", "epoch"])
def test_schedules(interval: str) -> None:
    """A per-batch cyclical schedule (its rates recorded per batch) and a per-epoch step decay."""
    x, y = _data()

    def make() -> tuple[nn.Module, nn.Loss, optim.Optimizer, Any]:
        model = _model()
        optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.5)
        scheduler = (
            optim.CyclicLR(optimizer, base_lr=0.01, max_lr=0.2, step_size_up=3)
            if interval == "batch"
            else optim.StepDecay(optimizer, step_size=2, gamma=0.5)
        )
        return model, nn.CrossEntropyLoss(), optimizer, scheduler

    folded, plain = _train_both(make, x, y, epochs=5, batch_size=16)
    _same_training(folded, plain)
    assert len(folded[2].batch_lr) == (20 if interval == "batch" else 0)


@pytest.mark.filterwarnings("error")  # (an output buffer resized by a product: a mistake)
@pytest.mark.parametrize(
    "modules",
    [
        "linear",
        "linear_linear",
        "activation_last",
        "two_activations",
        "mixed",
        "bottleneck",
    ],
)
def test_chains(modules: str) -> None:
    """A lone layer (in a Sequential), two layers in a row, an activation last (its output
    the prediction), two activations in a row, mixed activations, and a first layer narrower
    than its input; no warning (an output buffer of the wrong shape, resized by a product)."""

    def build() -> nn.Sequential:
        torch.manual_seed(3)
        layers = {
            "linear": lambda: [nn.Linear(3, 3)],
            "linear_linear": lambda: [nn.Linear(3, 4), nn.Linear(4, 3)],
            "activation_last": lambda: [nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3), nn.Sigmoid()],
            "two_activations": lambda: [nn.Linear(3, 5), nn.ReLU(), nn.Tanh(), nn.Linear(5, 3)],
            "mixed": lambda: [
                nn.Linear(3, 5),
                nn.ELU(0.5),
                nn.Linear(5, 4),
                nn.LeakyReLU(0.2),
                nn.Linear(4, 3),
            ],
            "bottleneck": lambda: [nn.Linear(3, 1), nn.Tanh(), nn.Linear(1, 3)],
        }[modules]()
        return nn.Sequential(*layers).to(dtype=F64)

    x, y = _data()
    target = torch.nn.functional.one_hot(y, 3).to(F64)

    def make() -> tuple[nn.Module, nn.Loss, optim.Optimizer, Any]:
        model = build()
        return model, nn.MSELoss(), optim.SGD(model.parameters(), 0.1, momentum=0.9), None

    _same_training(*_train_both(make, x, target, epochs=3, batch_size=9))


def test_drop_last_and_validation() -> None:
    """``drop_last`` and a validation set: the validation error of every epoch is the loop's
    (measured on the model's parameters, brought back before it)."""
    x, y = _data(samples=60)
    x_val, y_val = _data(samples=40, seed=9)

    def make() -> tuple[nn.Module, nn.Loss, optim.Optimizer, Any]:
        model = _model()
        return model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.2), None

    folded, plain = _train_both(
        make, x, y, epochs=4, batch_size=16, drop_last=True, validation=(x_val, y_val)
    )
    _same_training(folded, plain)
    assert folded[2].validation_error == plain[2].validation_error


def test_float32_agrees_to_its_precision() -> None:
    """In float32 the roundings differ (the bias inside the product's sum): the paper's network
    after 5 epochs agrees to about a thousandth, not bit for bit."""
    data = minidl.data.make_disk_data(seed=0)

    def make() -> tuple[nn.Module, nn.Loss, optim.Optimizer, Any]:
        torch.manual_seed(0)
        model = nn.mlp((2, 25, 25, 25, 2), "tanh")
        return model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1, momentum=0.9), None

    folded, plain = _train_both(make, data.train.x, data.train.y, epochs=5)
    _same_training(folded, plain, tolerance=1e-3)


def test_same_numbers_twice() -> None:
    """A seed fixes everything: two runs give the same bits."""
    x, y = _data()
    results = []
    for _ in range(2):
        model = _model()
        optimizer = optim.Adam(model.parameters(), lr=1e-2)
        _fit(
            model,
            optimizer,
            x,
            y,
            epochs=3,
            batch_size=7,
            generator=torch.Generator().manual_seed(2),
        )
        results.append(
            [p.data.clone() for p in model.parameters()] + list(optimizer.state.values())
        )
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_fit_folds_when_it_can(monkeypatch: pytest.MonkeyPatch) -> None:
    """The paper's setting trains through the folded step: one call per batch."""
    calls = _count_folded_calls(monkeypatch)
    x, y = _data()
    model = _model()
    _fit(
        model,
        optim.SGD(model.parameters(), 0.1),
        x,
        y,
        epochs=2,
        batch_size=10,
    )
    assert calls[0] == 10


# -- what the folded step leaves as the loop leaves it -----------------------------------------

_Run = tuple[nn.Module, optim.Optimizer, History]


def _fit_with_on_epoch(
    on_epoch_for: Callable[[nn.Module, optim.Optimizer, bool], Callable[[Any], None]],
    optimizer_for: Callable[[nn.Module], optim.Optimizer],
) -> tuple[_Run, _Run]:
    """3 epochs of cross-entropy under ``on_epoch_for(model, optimizer, folded)``, folded and
    step by step."""
    x, y = _data()
    runs = {}
    for fold in (True, False):
        model = _model()
        optimizer = optimizer_for(model)
        with _path(fold):
            history = _fit(
                model,
                optimizer,
                x,
                y,
                epochs=3,
                batch_size=10,
                generator=torch.Generator().manual_seed(0),
                on_epoch=on_epoch_for(model, optimizer, fold),
            )
        runs[fold] = (model, optimizer, history)
    return runs[True], runs[False]


def test_on_epoch_sees_and_changes_the_model() -> None:
    """``on_epoch`` reads the model's parameters and the optimizer's state as they are after
    its epoch, and what it changes in place (parameters, state, learning rate) is what the next
    epoch trains from."""
    seen: dict[bool, list[list[Tensor]]] = {True: [], False: []}

    def on_epoch_for(
        model: nn.Module, optimizer: optim.Optimizer, fold: bool
    ) -> Callable[[Any], None]:
        def on_epoch(record: Any) -> None:
            seen[fold].append([p.data.clone() for p in model.parameters()])
            seen[fold][-1] += [p.grad.clone() for p in model.parameters()]
            seen[fold][-1] += [optimizer.state["momentum_buffer"].clone()]
            first = next(iter(model.parameters()))
            first.data.mul_(0.5)
            optimizer.state["momentum_buffer"].mul_(0.25)
            optimizer.lr = optimizer.lr * 0.9

        return on_epoch

    _same_training(
        *_fit_with_on_epoch(on_epoch_for, lambda m: optim.SGD(m.parameters(), 0.1, momentum=0.9))
    )
    assert len(seen[True]) == 3
    for a, b in zip(seen[True], seen[False], strict=True):
        for tensor, expected in zip(a, b, strict=True):
            _close(tensor, expected)


def test_a_fit_run_by_on_epoch_leaves_the_outer_fits_clipping() -> None:
    """``on_epoch`` trains the same model one epoch on other data, without clipping, through
    a second ``fit`` (which takes the step kept for the model and set its own
    ``max_grad_norm``): the outer fit's later epochs clip to its own ``max_grad_norm``, as
    the loop's do, instead of running unclipped."""
    x, y = _data()
    x_other, y_other = _data(seed=4)
    runs = {}
    for fold in (True, False):
        model = _model()
        criterion = nn.CrossEntropyLoss()
        optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.9)

        def on_epoch(
            record: Any,
            model: nn.Module = model,
            criterion: nn.Loss = criterion,
            optimizer: optim.Optimizer = optimizer,
        ) -> None:
            if record.epoch == 0:
                generator = torch.Generator().manual_seed(3)
                fit(model, criterion, optimizer, x_other, y_other, epochs=1, generator=generator)

        with _path(fold):
            history = fit(
                model,
                criterion,
                optimizer,
                x,
                y,
                epochs=3,
                batch_size=10,
                generator=torch.Generator().manual_seed(0),
                max_grad_norm=0.01,
                on_epoch=on_epoch,
            )
        runs[fold] = (model, optimizer, history)
    _same_training(runs[True], runs[False])
    assert runs[True][1].step_count == 3 * 5 + 1


def test_a_state_tensor_replaced_is_the_one_trained() -> None:
    """A state tensor of the optimizer replaced (``optimizer.state[name] = ...``, a momentum
    reset), by ``on_epoch`` or between two calls: the loop's ``step`` updates the new tensor,
    so the folded step loads it and stores into it, not into the one it saw first."""

    def on_epoch_for(_: nn.Module, optimizer: optim.Optimizer, __: bool) -> Callable[[Any], None]:
        def on_epoch(record: Any) -> None:
            optimizer.state["momentum_buffer"] = torch.zeros_like(
                optimizer.state["momentum_buffer"]
            )

        return on_epoch

    folded, plain = _fit_with_on_epoch(
        on_epoch_for, lambda m: optim.SGD(m.parameters(), 0.1, momentum=0.9)
    )
    _same_training(folded, plain)
    x, y = _data()
    runs = {}
    for fold in (True, False):
        model = _model()
        optimizer = optim.Adam(model.parameters(), lr=1e-2)
        with _path(fold):
            for epochs in (1, 2):
                if epochs == 2:
                    optimizer.state = {k: v * 0.5 for k, v in optimizer.state.items()}
                history = _fit(
                    model,
                    optimizer,
                    x,
                    y,
                    epochs=epochs,
                    start_epoch=epochs - 1,
                    batch_size=10,
                    generator=torch.Generator().manual_seed(epochs),
                )
        runs[fold] = (model, optimizer, history)
    _same_training(runs[True], runs[False])


def test_on_epoch_replacing_a_parameter_tensor_goes_on_step_by_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A parameter's tensor replaced by ``on_epoch`` (``weight.data = ...``): the step no
    longer holds the model's tensors, so the next epochs run the loop, on the new tensor."""
    calls = _count_folded_calls(monkeypatch)

    def on_epoch_for(model: nn.Module, *_: object) -> Callable[[Any], None]:
        def on_epoch(record: Any) -> None:
            if record.epoch == 0:
                layer = model[0]
                layer.weight.data = layer.weight.data * 2

        return on_epoch

    _same_training(*_fit_with_on_epoch(on_epoch_for, lambda m: optim.SGD(m.parameters(), 0.1)))
    assert calls[0] == 5  # the first epoch only


def test_a_parameter_registered_anew_by_on_epoch_goes_on_step_by_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``on_epoch`` registers a new weight (made before ``fit``) on a layer (the optimizer keeps
    the old one): the step no longer holds the model's parameters, so the loop runs, as it would
    have."""
    calls = _count_folded_calls(monkeypatch)

    def on_epoch_for(model: nn.Module, *_: object) -> Callable[[Any], None]:
        # (made before fit: making a Parameter counts as a replacement of a tensor, which the
        # step also sees; registering one made earlier replaces none)
        spare = nn.Parameter(model[2].weight.data * 0.5)

        def on_epoch(record: Any) -> None:
            if record.epoch == 0:
                model[2].register_parameter("weight", spare)

        return on_epoch

    _same_training(*_fit_with_on_epoch(on_epoch_for, lambda m: optim.SGD(m.parameters(), 0.1)))
    assert calls[0] == 5


def test_on_epoch_copying_the_model_stays_folded(monkeypatch: pytest.MonkeyPatch) -> None:
    """``on_epoch`` keeps a deep copy of the model (the best one so far, say): the copy's new
    parameters replace none of the model's tensors, so every epoch runs folded, to the bits of
    the same fit without the copies. (They moved the process's count of replacements, and the
    fit went on step by step after the first epoch.)"""
    calls = _count_folded_calls(monkeypatch)
    x, y = _data()
    runs, copies = [], []
    for keeping in (True, False):
        model = _model()
        optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.9)

        def keep(record: Any, model: nn.Module = model) -> None:
            copies.append(copy.deepcopy(model))

        generator = torch.Generator().manual_seed(0)
        on_epoch = keep if keeping else None
        _fit(
            model, optimizer, x, y, epochs=3, batch_size=10, generator=generator, on_epoch=on_epoch
        )
        runs.append([p.data for p in model.parameters()] + list(optimizer.state.values()))
    assert len(copies) == 3
    assert calls[0] == 2 * 3 * 5
    for tensor, expected in zip(*runs, strict=True):
        assert torch.equal(tensor, expected)


def test_on_epoch_removing_a_bias_goes_on_step_by_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """``on_epoch`` removes a layer's bias (``register_parameter("bias", None)``; its
    parameter stays in the optimizer): the layer computes without it from then on, so the loop
    runs, as it would."""
    calls = _count_folded_calls(monkeypatch)

    def on_epoch_for(model: nn.Module, *_: object) -> Callable[[Any], None]:
        def on_epoch(record: Any) -> None:
            if record.epoch == 0:
                model[2].register_parameter("bias", None)

        return on_epoch

    folded, plain = _fit_with_on_epoch(on_epoch_for, lambda m: optim.SGD(m.parameters(), 0.1))
    _same_training(folded, plain)
    assert calls[0] == 5


def _emptied(state: dict[str, Tensor]) -> Any:
    return {}


def _reordered(state: dict[str, Tensor]) -> Any:
    return dict(reversed(state.items()))


def _no_dict(state: dict[str, Tensor]) -> Any:
    return None


@pytest.mark.parametrize(
    ("change", "held"),
    [
        (_emptied, "holds ()"),
        (_reordered, "holds ('exp_avg_sq', 'exp_avg')"),
        (_no_dict, "is a NoneType, not a dict"),
    ],
)
def test_on_epoch_changing_the_optimizer_state_raises_as_the_loop(
    change: Callable[[dict[str, Tensor]], Any], held: str
) -> None:
    """``on_epoch`` sets the optimizer's state to ``{}``, to its tensors in the other order
    (which the folded step, reading them by position, trained with swapped), or to ``None``:
    the next epoch runs the loop, whose update refuses it, naming the optimizer, what the state
    holds and the names expected, as the loop does; the model holds the first epoch's steps,
    the same on both paths."""
    errors, values = {}, {}
    for fold in (True, False):
        model = _model()
        optimizer = optim.Adam(model.parameters(), 0.01)

        def on_epoch(record: Any, optimizer: optim.Optimizer = optimizer) -> None:
            optimizer.state = change(optimizer.state)

        with _path(fold), pytest.raises(ValueError) as error:
            fit(model, nn.CrossEntropyLoss(), optimizer, *_data(), epochs=2, on_epoch=on_epoch)
        errors[fold] = str(error.value)
        values[fold] = [p.data.clone() for p in model.parameters()]
    assert errors[True] == errors[False]
    assert errors[True].startswith(
        f"Adam.step: state {held}, expected ('exp_avg', 'exp_avg_sq') (one flat tensor each"
    )
    for folded, looped in zip(values[True], values[False], strict=True):
        _close(folded, looped)


def test_interrupted_fit_leaves_the_steps_done() -> None:
    """An error in the middle of an epoch (a schedule that raises at its 7th step): the model,
    its gradients and the optimizer hold the 7 steps done, as the loop leaves them."""

    class Failing(optim.StepDecay):
        interval = "batch"

        def step(self) -> None:
            if self.last_step == 6:
                raise KeyboardInterrupt
            super().step()

    runs = _stopped_both_ways(
        KeyboardInterrupt,
        *_data(),
        epochs=3,
        scheduler=lambda optimizer: Failing(optimizer, step_size=100),
    )
    assert runs[True][1].step_count == 7


@pytest.mark.parametrize("loss", ["bce_with_logits", "cross_entropy_probabilities"])
def test_targets_refused_mid_epoch_leave_zero_gradients(
    loss: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose targets the loss refuses (one sample's, written by ``on_epoch`` after the
    first epoch: fit checks every target before training): the loop's ``zero_grad`` ran before
    that forward, so the gradients are zeros and the parameters those of the steps done; the
    folded step leaves the same."""
    # (fit refuses targets that on_epoch spoiled before the next epoch: that check is left out
    # here, so that the loss refuses a batch part-way, as it refuses targets changed otherwise,
    # by another thread or through memory written from elsewhere)
    monkeypatch.setattr(minidl.train, "_check_targets", _checked_before_training_only())
    x, y = _data()
    criterion, target = _loss_target(loss, y, 3)
    target = target.clone()
    good = float(target[40, 0])

    def spoil(record: object) -> None:
        target[40, 0] = 2.0  # (outside [0, 1]; a row of probabilities summing to more than 1)

    runs = _stopped_both_ways(
        ValueError,
        x,
        target,
        criterion,
        before=lambda: target.__setitem__((40, 0), good),
        epochs=2,
        on_epoch=spoil,
    )
    assert runs[True][1].step_count > 5  # (the first epoch's 5 steps, and more)
    assert all(not p.grad.any() for p in runs[True][0].parameters())


def _checked_before_training_only() -> Callable[..., None]:
    """fit's check of every training target, run before training only (not after on_epoch)."""
    original = minidl.train._check_targets

    def check(criterion: nn.Loss, y: Tensor, width: int | None, what: str, when: str) -> None:
        if when == "before training":
            original(criterion, y, width, what, when)

    return check


def _count_prediction_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = nn.Loss._check_prediction

    def counting(self: nn.Loss, prediction: object) -> Tensor:
        calls[0] += 1
        return original(self, prediction)

    monkeypatch.setattr(nn.Loss, "_check_prediction", counting)
    # (a _check_prediction replaced declines the fold, which would not return what a hook of
    # one's own returns: the counting one, which returns the check's, taken for the original)
    for loss in minidl.folded._LOSSES:
        monkeypatch.setitem(
            minidl.folded._ORIGINAL,
            loss,
            tuple(getattr(loss, name) for name in minidl.folded._LOSS_METHODS),
        )
    return calls


@pytest.mark.parametrize(
    "loss",
    [
        "cross_entropy",
        "cross_entropy_probabilities",
        "mse_paper",
        "nll",
        "l1",
        "huber",
        "bce_with_logits",
    ],
)
def test_the_loss_checks_a_batch_prediction_once_while_it_keeps_it(
    loss: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folded step hands the loss its prediction buffer of a batch size; the loss checks
    it the first time (and again after it accepted another prediction: an epoch's smaller last
    batch), then trusts it while it holds what it accepted. The training is the loop's."""
    x, y = _data()
    criterion, target = _loss_target(loss, y, 3)
    calls = _count_prediction_checks(monkeypatch)

    def make() -> tuple[nn.Module, nn.Loss, optim.Optimizer, None]:
        model = _model()
        return model, criterion, optim.SGD(model.parameters(), 0.1), None

    _same_training(*_train_both(make, x, target, epochs=3, batch_size=10))
    calls[0] = 0
    model, _, optimizer, _ = make()
    fit(model, criterion, optimizer, x, target, epochs=3, batch_size=10)
    assert calls[0] == 2  # (fit's trial on x[:1], then the first batch of 10)
    calls[0] = 0
    # (the same data: no trial; batches of 20, 20 and 10, each size checked again after the other)
    fit(model, criterion, optimizer, x, target, epochs=3, batch_size=20)
    assert calls[0] == 3 * 2


def test_the_loss_used_between_epochs_checks_the_next_batch_again() -> None:
    """``on_epoch`` calling the loss on another prediction, and changing its reduction: the
    next folded step checks its prediction again and computes with the new reduction, as the
    loop does."""
    x, y = _data()
    runs = {}
    for fold in (True, False):
        model = _model()
        criterion = nn.CrossEntropyLoss()
        optimizer = optim.SGD(model.parameters(), 0.1)

        def on_epoch(record: Any, criterion: nn.CrossEntropyLoss = criterion) -> None:
            criterion(torch.zeros(4, 3, dtype=F64), torch.zeros(4, dtype=torch.int64))
            if record.epoch == 1:
                criterion.reduction = "sum"

        with _path(fold):
            history = fit(
                model,
                criterion,
                optimizer,
                x,
                y,
                epochs=4,
                batch_size=10,
                generator=torch.Generator().manual_seed(0),
                on_epoch=on_epoch,
            )
        runs[fold] = (model, optimizer, history)
    _same_training(runs[True], runs[False])
    losses = runs[True][2].train_loss
    assert losses[2] > 5 * losses[1]  # (a sum over batches of 10 from epoch 2 on)


def test_a_loss_that_defines_only_forward_checks_every_prediction() -> None:
    """``Loss._forward_accepted`` (a built-in loss's ``forward`` after its check of the
    prediction) is ``forward`` itself for a subclass that defines only ``forward``."""

    class Halved(nn.Loss):
        def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
            self._check_prediction(prediction)
            return (prediction - target).abs().sum() / 2

    with pytest.raises(ValueError, match="Halved"):
        Halved()._forward_accepted(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
    loss = Halved()._forward_accepted(torch.ones(2, 3), torch.zeros(2, 3))
    assert float(loss) == 3.0


def test_interrupted_forward_leaves_zero_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupt (not an ``Exception``) in an activation's forward, in the 4th batch: the
    loop's ``zero_grad`` ran before it, so the gradients are zeros and the parameters those of
    the 3 steps done; the folded step (which runs) leaves the same. (Tanh._forward replaced on
    the class, as this test did, made fit decline the folded step: both runs were the loop's.
    torch's tanh is counted instead, on batches only: the trial's one sample is not.)"""
    calls = [0]

    def counted(original: Callable[..., Tensor]) -> Callable[..., Tensor]:
        def tanh(input: Tensor, *arguments: Any, **options: Any) -> Tensor:
            if input.numel() > 6:  # (a batch, not the trial's sample of width 6 or 5)
                calls[0] += 1
                if calls[0] == 2 * 3 + 1:  # (3 steps: 2 tanh each)
                    raise KeyboardInterrupt
            return original(input, *arguments, **options)

        return tanh

    for name in ("tanh", "tanh_"):
        monkeypatch.setattr(torch.Tensor, name, counted(getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch, "tanh", counted(torch.tanh))
    built = _record_builds(monkeypatch)

    def reset() -> None:
        calls[0] = 0

    runs = _stopped_both_ways(KeyboardInterrupt, *_data(), before=reset, epochs=2)
    assert built and built[0] is not None  # (the folded run folded)
    assert runs[True][1].step_count == runs[False][1].step_count == 3
    assert all(not p.grad.any() for p in runs[True][0].parameters())


def _interrupting_tanh_backward(monkeypatch: pytest.MonkeyPatch, at: int) -> list[int]:
    """Make the ``at``-th Tanh backward raise KeyboardInterrupt (its fused multiply-add
    ``1 - y^2``, ``torch.addcmul`` of a 0-dim 1, the first of its two operations, which the
    loop's ``Tanh._backward`` and the folded step's :meth:`Tanh._operations` both call); the
    count, to reset. A class method replaced (``Tanh._backward``) would make fit decline the
    folded step, which runs Tanh's own."""
    calls = [0]
    original = torch.addcmul

    def addcmul(input: Tensor, *arguments: Any, **options: Any) -> Tensor:
        if isinstance(input, Tensor) and input.dim() == 0:
            calls[0] += 1
            if calls[0] == at:
                raise KeyboardInterrupt
        return original(input, *arguments, **options)

    monkeypatch.setattr(torch, "addcmul", addcmul)
    return calls


@pytest.mark.parametrize("tanh", [1, 2])
def test_interrupted_backward_leaves_the_loops_gradients(
    tanh: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt in the 4th step's backward, in its ``tanh``-th Tanh backward (1: the one
    after the second layer, 2: after the first): the loop's ``zero_grad`` left zeros in the
    gradients its ``backward_parameters`` had not reached (the layers before that Tanh), the
    last layer's (and with 2 the second's) hold the step's; the folded step (which runs) leaves the same, not the 3rd step's gradients in the layers it had
    not reached. (Tanh._backward replaced on the class, as this test did, made fit decline the
    folded step: both runs were the loop's.)"""
    calls = _interrupting_tanh_backward(monkeypatch, at=2 * 3 + tanh)  # (3 steps: 2 tanh each)
    built = _record_builds(monkeypatch)

    def reset() -> None:
        calls[0] = 0

    runs = _stopped_both_ways(KeyboardInterrupt, *_data(), before=reset, epochs=2)
    assert built and built[0] is not None  # (the folded run folded)
    assert runs[True][1].step_count == 3
    grads = [p.grad for p in runs[True][0].parameters()]
    assert [bool(g.any()) for g in grads] == [False] * (6 - 2 * tanh) + [True] * (2 * tanh)


def test_two_calls_are_one_longer_run() -> None:
    """Two calls of ``fit`` (the second resuming with ``start_epoch``) train as one."""
    x, y = _data()
    model, reference = _model(), _model()
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    optimizer_r = optim.Adam(reference.parameters(), lr=1e-2)
    generator, generator_r = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    criterion = nn.CrossEntropyLoss()
    history = fit(model, criterion, optimizer, x, y, epochs=2, batch_size=8, generator=generator)
    fit(
        model,
        criterion,
        optimizer,
        x,
        y,
        epochs=4,
        batch_size=8,
        generator=generator,
        start_epoch=2,
        history=history,
    )
    with unfolded():
        history_r = _fit(
            reference,
            optimizer_r,
            x,
            y,
            epochs=4,
            batch_size=8,
            generator=generator_r,
        )
    _same_training((model, optimizer, history), (reference, optimizer_r, history_r))


@pytest.mark.parametrize("other", ["loss", "optimizer"])
def test_a_second_call_with_another_loss_or_optimizer_trains_with_it(other: str) -> None:
    """A second call with another loss, or another optimizer, over the same model: the step
    made by the first call (for its loss and optimizer) is not the one the second trains with."""
    x, y = _data()
    runs = {}
    for fold in (True, False):
        model = _model()
        criterion = nn.CrossEntropyLoss()
        optimizer: optim.Optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.9)
        with _path(fold):
            fit(
                model,
                criterion,
                optimizer,
                x,
                y,
                epochs=1,
                batch_size=10,
                generator=torch.Generator().manual_seed(0),
            )
            if other == "loss":
                criterion = nn.CrossEntropyLoss(reduction="sum")
            else:
                optimizer = optim.Adam(model.parameters(), lr=1e-2)
            history = fit(
                model,
                criterion,
                optimizer,
                x,
                y,
                epochs=2,
                batch_size=10,
                generator=torch.Generator().manual_seed(1),
            )
        runs[fold] = (model, optimizer, history)
    _same_training(runs[True], runs[False])


@pytest.mark.parametrize("change", ["optimizer_step", "child_forward", "anomaly"])
def test_a_second_call_after_a_method_set_or_anomaly_mode_runs_the_loop(
    monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """After a first call trained folded, a method set on the optimizer or on a child (to
    record, say), or :func:`minidl.detect_anomaly` enabled: the second call (same model, loss
    and optimizer) must not reuse the step made by the first; the loop runs, and calls the
    method on every batch."""
    calls = _count_folded_calls(monkeypatch)
    x, y = _data()
    model = _model()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), 0.1)
    options: dict[str, Any] = {"batch_size": 10, "generator": torch.Generator().manual_seed(0)}
    fit(model, criterion, optimizer, x, y, epochs=1, **options)
    assert calls[0] == 5
    counted = [0]
    owner, name = (optimizer, "step") if change == "optimizer_step" else (model[1], "forward")
    original = getattr(owner, name)

    def counting(*args: Any) -> Any:
        counted[0] += 1
        return original(*args)

    with minidl.detect_anomaly() if change == "anomaly" else contextlib.nullcontext():
        if change != "anomaly":
            setattr(owner, name, counting)
        fit(model, criterion, optimizer, x, y, epochs=2, start_epoch=1, **options)
    assert calls[0] == 5
    # (the child's forward also on fit's trial of the first sample)
    assert counted[0] == {"optimizer_step": 5, "child_forward": 6, "anomaly": 0}[change]


def test_no_epoch_to_train_leaves_the_optimizer_alone() -> None:
    """``epochs == start_epoch`` after the model was cast: the loop trains nothing, so the
    optimizer is left as it is (its state not yet moved to the parameters' new dtype, which its
    next step does); finding out whether to fold (the optimizer's layout) must not move it."""
    x, y = _data()
    model = _model()
    optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.9)
    fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=10)
    state = optimizer.state["momentum_buffer"]
    model.to(dtype=torch.float32)
    history = fit(model, nn.CrossEntropyLoss(), optimizer, x.float(), y, epochs=1, start_epoch=1)
    assert len(history.train_loss) == 0
    assert optimizer.state["momentum_buffer"] is state
    assert state.dtype == F64


def test_model_changed_between_calls_is_trained_from_its_new_values() -> None:
    """Parameters and state changed in place between two calls (a checkpoint loaded, say) are
    what the second call trains from."""
    x, y = _data()
    runs = {}
    for fold in (True, False):
        model = _model()
        optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.9)
        with _path(fold):
            _fit(
                model,
                optimizer,
                x,
                y,
                epochs=1,
                batch_size=10,
                generator=torch.Generator().manual_seed(0),
            )
            with torch.no_grad():
                model.load_state_dict({k: v * 0.5 for k, v in model.state_dict().items()})
            optimizer.state["momentum_buffer"].zero_()
            history = _fit(
                model,
                optimizer,
                x,
                y,
                epochs=2,
                batch_size=10,
                generator=torch.Generator().manual_seed(1),
            )
        runs[fold] = (model, optimizer, history)
    _same_training(runs[True], runs[False])


# -- where fit does not fold ---------------------------------------------------------------------


def _declines(model: nn.Module, criterion: nn.Loss | None = None, **kwargs: Any) -> None:
    x = kwargs.pop("x", _data()[0])
    y = kwargs.pop("y", _data()[1])
    optimizer = kwargs.pop("optimizer", None) or optim.SGD(model.parameters(), 0.1)
    assert FoldedStep.build(model, criterion or nn.CrossEntropyLoss(), optimizer, x, y) is None


def test_declines_other_models() -> None:
    """Modules the step does not compute, layers without a bias (one with another parameter in
    its place), an activation first, no module
    at all, a subclass of Sequential or of a layer, and a method set on a child."""
    torch.manual_seed(0)
    _declines(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).to(dtype=F64))
    _declines(nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 3)).to(dtype=F64))
    _declines(nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 3)).to(dtype=F64))
    extra = nn.Linear(3, 4, bias=False)  # (as many parameters as two layers with biases)
    extra.register_parameter("scale", nn.Parameter(torch.ones(4)))
    _declines(nn.Sequential(extra, nn.Tanh(), nn.Linear(4, 3)).to(dtype=F64))
    _declines(nn.Sequential(nn.Tanh(), nn.Linear(3, 3)).to(dtype=F64))
    _declines(nn.Sequential(), optimizer=optim.SGD(_model().parameters(), 0.1))
    _declines(nn.Sequential(nn.Linear(3, 3), nn.Softmax()).to(dtype=F64))

    class Mine(nn.Sequential):
        pass

    _declines(Mine(nn.Linear(3, 3)).to(dtype=F64))

    class MyLinear(nn.Linear):
        pass

    _declines(nn.Sequential(MyLinear(3, 3)).to(dtype=F64))
    traced = _model()
    traced[1].forward = traced[1].forward  # type: ignore[method-assign]
    _declines(traced)
    assert (
        FoldedStep.build(
            _model(), nn.CrossEntropyLoss(), optim.SGD(_model().parameters(), 0.1), *_data()
        )
        is None
    )


class _Subclass(Tensor):
    pass


def test_declines_other_losses_optimizers_and_data() -> None:
    """A loss of one's own, an optimizer over part of the model (or over more), 16-bit or
    integer data, data of a subclass of Tensor, sparse or not on the CPU (or a model not on
    it), and :func:`minidl.detect_anomaly`; a model that it takes, built twice, gives the same
    step (its buffers made once)."""

    class MyLoss(nn.MSELoss):
        pass

    model = _model()
    x, y = _data()
    _declines(model, MyLoss(), y=torch.nn.functional.one_hot(y, 3).to(F64))
    _declines(model, optimizer=optim.SGD(list(model.parameters())[:2], 0.1))
    extra = nn.Parameter(torch.zeros(2, dtype=F64))
    _declines(model, optimizer=optim.SGD([*model.parameters(), extra], 0.1))
    _declines(model, x=x.as_subclass(_Subclass))
    _declines(model, y=y.as_subclass(_Subclass))
    _declines(model, x=x.to_sparse())
    _declines(model, x=x.to("meta"))  # (not on the CPU: data, or the model, below)
    on_meta = _model().to(device="meta")
    _declines(on_meta, x=x.to("meta"), y=y.to("meta"))
    _declines(on_meta)
    half = _model().to(dtype=torch.bfloat16)
    _declines(half, x=x.to(torch.bfloat16))
    _declines(model, x=x.float())
    with minidl.detect_anomaly():
        _declines(model)
    criterion, optimizer = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1)
    step = FoldedStep.build(model, criterion, optimizer, x, y)
    assert step is not None
    assert FoldedStep.build(model, criterion, optimizer, x, y) is step


@pytest.mark.parametrize(
    "memory",
    ["weight", "weight's gradient", "target over a bias", "optimizer's state", "later weight"],
)
def test_data_over_the_parameters_memory_trains_as_the_loop(memory: str) -> None:
    """Data lying in the memory of a parameter or of its gradient, or of the optimizer's state,
    changes as the model trains, which the step-by-step loop reads at each epoch; the folded
    step trained on copies of the parameters and the state, written back at the end, and its
    parameters came out 0.2 apart from the loop's (0.03 over a velocity). The last layer's
    weight reached through NumPy is a storage of its own that starts part-way into the
    parameters' buffer: the step must see it overlap them anywhere, not at their first byte
    alone (0.63 apart when it did not).
    It declines such data, a step kept from an earlier call too; the two runs agree to 1e-12
    (the products' last bits may depend on where the loop's copies of the data lie)."""

    def run(fold: bool) -> tuple[list[Tensor], list[float]]:
        model = nn.mlp((3, 3, 3), "tanh", dtype=F64, generator=torch.Generator().manual_seed(1))
        criterion = nn.MSELoss() if memory == "target over a bias" else nn.CrossEntropyLoss()
        optimizer = optim.SGD(model.parameters(), 0.5, momentum=0.9)
        x = model[0].weight.data
        y = torch.tensor([0, 1, 2])
        if memory == "optimizer's state":
            velocity = optimizer.state["momentum_buffer"]
            velocity.copy_(torch.linspace(-1, 1, len(velocity), dtype=F64))
            x = velocity[:9].view(3, 3)
        elif memory == "weight's gradient":
            x = model[0].weight.grad
        elif memory == "later weight":
            x = torch.from_numpy(model[2].weight.data.numpy())
        elif memory == "target over a bias":
            x = torch.eye(3, dtype=F64)
            y = model[2].bias.data.expand(3, 3)
        # A first call on copies, folded: the step kept from it declines the data too.
        x_apart, y_apart = x.clone(), y.clone()
        fit(model, criterion, optimizer, x_apart, y_apart, epochs=1, batch_size=3)
        assert FoldedStep.kept(model, criterion, optimizer, x_apart, y_apart) is not None
        assert FoldedStep.kept(model, criterion, optimizer, x, y) is None
        assert FoldedStep.build(model, criterion, optimizer, x, y) is None
        with contextlib.nullcontext() if fold else unfolded():
            history = fit(
                model,
                criterion,
                optimizer,
                x,
                y,
                epochs=3,
                batch_size=1,
                generator=torch.Generator().manual_seed(0),
            )
        return [p.data.clone() for p in model.parameters()], history.train_loss

    folded, loop = run(True), run(False)
    for a, b in zip(folded[0], loop[0], strict=True):
        _close(a, b)
    assert folded[1] == pytest.approx(loop[1], rel=1e-12, abs=0)


@pytest.mark.parametrize("change", ["weight replaced", "bias taken out"])
def test_a_kept_step_is_checked_after_the_models_own_train(change: str) -> None:
    """A ``train`` of one's own set on a layer, which fit calls before training, changing what
    a step kept from an earlier call holds: the step is checked after it, and the call trains
    as a first call on a copy of the model (no step kept) does, which decides whether to fold
    after ``model.train()``. (The kept step was checked before: a raw AssertionError in
    folded.py for a weight replaced, and a bias taken out still trained, the outputs 0.03
    apart from the loop's.)"""
    model = nn.mlp((2, 3, 2), "tanh", dtype=F64, generator=torch.Generator().manual_seed(0))
    optimizer = optim.SGD(list(model.parameters()), lr=0.1)
    x = torch.randn(8, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    criterion = nn.CrossEntropyLoss()
    fit(model, criterion, optimizer, x, y, epochs=1, batch_size=4)
    assert FoldedStep.kept(model, criterion, optimizer, x, y) is not None
    twin, twin_optimizer = copy.deepcopy((model, optimizer))
    for network in (model, twin):
        layer = network[2] if change == "bias taken out" else network[0]
        own_train = type(layer).train

        def train(self: nn.Linear, mode: bool = True, own: Any = own_train) -> nn.Linear:
            if mode and change == "weight replaced":
                self.weight.data = self.weight.data.clone()
            elif mode and self.bias is not None:
                self.register_parameter("bias", None)
            return own(self, mode)  # type: ignore[no-any-return]

        layer.train = types.MethodType(train, layer)  # type: ignore[method-assign]
    for network, updater in ((model, optimizer), (twin, twin_optimizer)):
        fit(
            network, criterion, updater, x, y, epochs=2, batch_size=4,
            generator=torch.Generator().manual_seed(2),
        )  # fmt: skip
    assert len(list(model.parameters())) == len(list(twin.parameters()))
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a.data, b.data)


def test_declines_parameters_that_are_not_one_flat_buffer() -> None:
    """A weight's tensor replaced by a copy (the parameters no longer tile one buffer): the
    loop's optimizer updates each parameter on its own, which an update that is not element by
    element (here the gradient divided by its norm) tells from one update of everything; fit
    runs the loop."""

    class Normalized(optim.SGD):
        def _update(self, value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
            super()._update(value, grad / grad.norm(), state)

    x, y = _data()

    def make() -> tuple[nn.Module, nn.Loss, optim.Optimizer, Any]:
        model = _model()
        layer = model[2]
        assert isinstance(layer, nn.Linear)
        layer.weight.data = layer.weight.data.clone()
        return model, nn.CrossEntropyLoss(), Normalized(model.parameters(), 0.1), None

    model, _, optimizer, _ = make()
    _declines(model, optimizer=optimizer)
    _same_training(*_train_both(make, x, y, folds=False, epochs=2, batch_size=10), tolerance=0.0)


def test_declines_an_update_set_on_the_optimizer() -> None:
    """``_update`` set on the optimizer (to record the gradients, say): the loop's ``step``
    calls it on the parameters' flat buffer, in their order, so fit runs the loop, and the
    update sees what it sees there."""
    x, y = _data()
    seen: dict[bool, list[Tensor]] = {}

    def make() -> tuple[nn.Module, nn.Loss, optim.Optimizer, Any]:
        model = _model()
        optimizer = optim.SGD(model.parameters(), 0.1)
        original = optimizer._update
        grads = seen.setdefault(len(seen) == 0, [])

        def recording(value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
            grads.append(grad.clone())
            original(value, grad, state)

        optimizer._update = recording  # type: ignore[method-assign]
        return model, nn.CrossEntropyLoss(), optimizer, None

    _same_training(*_train_both(make, x, y, folds=False, epochs=1, batch_size=10), tolerance=0.0)
    assert len(seen[True]) == 5
    for a, b in zip(seen[True], seen[False], strict=True):
        assert torch.equal(a, b)


def test_data_parallel_does_not_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    """``parallel``: the loop runs (its gradients are synchronised after every backward)."""
    calls = _count_folded_calls(monkeypatch)

    class One:
        world_size = 1

        def __init__(self, model: nn.Module) -> None:
            self.model = model

        def shard(self, batches: Any) -> Any:
            return batches

        def synchronize(self, loss: Tensor) -> Tensor:
            return loss

        def reduce_loss(self, total: Tensor) -> Tensor:
            return total

    x, y = _data()
    model = _model()
    _fit(
        model,
        optim.SGD(model.parameters(), 0.1),
        x,
        y,
        epochs=1,
        batch_size=10,
        parallel=One(model),
    )
    assert calls[0] == 0


def test_deep_copy_of_a_trained_model_trains_alike() -> None:
    """The folded step's buffers are not the model's: a deep copy trains as the original."""
    x, y = _data()
    model = _model()
    optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.9)
    _fit(
        model,
        optimizer,
        x,
        y,
        epochs=1,
        batch_size=10,
        generator=torch.Generator().manual_seed(0),
    )
    twin, twin_optimizer = copy.deepcopy((model, optimizer))
    for m, o in ((model, optimizer), (twin, twin_optimizer)):
        _fit(
            m,
            o,
            x,
            y,
            epochs=2,
            batch_size=10,
            generator=torch.Generator().manual_seed(1),
        )
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p.data, q.data)


def test_declines_methods_set_or_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """A method that fit's loop calls, set on the model, the loss or the optimizer (to record
    or clip, say) or replaced on their base classes: fit calls it, as it documents."""
    x, y = _data()
    for owner, name in (
        ("model", "backward_parameters"),
        ("criterion", "backward"),
        ("optimizer", "step"),
        ("optimizer", "zero_grad"),
    ):
        model = _model()
        objects: dict[str, Any] = {
            "model": model,
            "criterion": nn.CrossEntropyLoss(),
            "optimizer": optim.SGD(model.parameters(), 0.1),
        }
        calls = [0]
        original = getattr(objects[owner], name)

        def counted(*args: Any, original: Any = original, calls: list[int] = calls) -> Any:
            calls[0] += 1
            return original(*args)

        setattr(objects[owner], name, counted)
        assert (
            FoldedStep.build(objects["model"], objects["criterion"], objects["optimizer"], x, y)
            is None
        )
        fit(
            objects["model"],
            objects["criterion"],
            objects["optimizer"],
            x,
            y,
            epochs=1,
            batch_size=10,
        )
        assert calls[0] == 5, (owner, name)

    class Clipping(optim.SGD):
        def step(self) -> None:
            for parameter in self.params:
                parameter.grad.clamp_(-0.01, 0.01)
            super().step()

    model = _model()
    _declines(model, optimizer=Clipping(model.parameters(), 0.1))
    model = _model()
    forward = nn.Sequential.forward
    monkeypatch.setattr(nn.Sequential, "forward", forward)  # (the same, set again)
    assert (
        FoldedStep.build(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1), x, y)
        is not None
    )

    def traced(self: nn.Sequential, input: Tensor) -> Tensor:
        return forward(self, input)

    monkeypatch.setattr(nn.Sequential, "forward", traced)
    assert (
        FoldedStep.build(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1), x, y)
        is None
    )


@pytest.mark.parametrize("owner", [nn.CrossEntropyLoss, nn.Loss])
@pytest.mark.parametrize("name", ["__call__", "backward"])
def test_declines_a_loss_method_replaced_on_its_class(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str
) -> None:
    """``__call__`` or ``backward`` replaced on the loss's class or on ``Loss`` (a gradient
    scaled, say): the loop calls it on every batch, so ``fit`` does not fold, and trains as
    the loop does."""
    original = getattr(owner, name)
    calls = [0]

    def replaced(self: nn.Loss, *args: Any) -> Any:
        calls[0] += 1
        result = original(self, *args)
        return result * 0.5 if name == "backward" else result

    monkeypatch.setattr(owner, name, replaced)
    x, y = _data()

    def make() -> tuple[nn.Module, nn.Loss, optim.Optimizer, Any]:
        model = _model()
        return model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1), None

    _declines(_model())
    calls[0] = 0
    folded, plain = _train_both(make, x, y, folds=False, epochs=2, batch_size=10)
    assert calls[0] == 2 * (1 + 10 if name == "__call__" else 10)
    _same_training(folded, plain, tolerance=0.0)


@pytest.mark.parametrize("where", ["instance", "class"])
@pytest.mark.parametrize("name", ["_forward_accepted", "_check_prediction"])
def test_declines_a_loss_whose_forward_hooks_were_set_or_replaced(
    monkeypatch: pytest.MonkeyPatch, name: str, where: str
) -> None:
    """A loss's forward calls ``_check_prediction`` and ``_forward_accepted``, which the folded
    step passes over: one set on the loss (labels remapped, a prediction scaled) or replaced on
    its class was folded all the same, and trained otherwise than the loop (or refused labels
    that the loss's own hook takes). Review."""
    original = getattr(nn.CrossEntropyLoss, name)

    def hooked(self: nn.Loss, *args: Any) -> Any:
        if name == "_forward_accepted":  # (the labels shifted by one class)
            logits, target = args
            return original(self, logits, (target + 1) % 3)
        return original(self, *args) * 2.0  # (the prediction doubled)

    def make() -> tuple[nn.Module, nn.Loss, optim.Optimizer, Any]:
        model = _model()
        criterion = nn.CrossEntropyLoss()
        if where == "instance":
            setattr(criterion, name, hooked.__get__(criterion))
        return model, criterion, optim.SGD(model.parameters(), 0.1), None

    if where == "class":
        monkeypatch.setattr(nn.CrossEntropyLoss, name, hooked)
    x, y = _data()
    model, criterion, optimizer, _ = make()
    assert FoldedStep.build(model, criterion, optimizer, x, y) is None
    folded, plain = _train_both(make, x, y, folds=False, epochs=2, batch_size=10)
    _same_training(folded, plain, tolerance=0.0)
    # (the hook is what trains: without it, other numbers)
    monkeypatch.undo()
    model = _model()
    history = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1), x, y,
                  epochs=2, batch_size=10, generator=torch.Generator().manual_seed(5))  # fmt: skip
    assert history.train_loss != plain[2].train_loss


def test_a_model_cast_between_calls_is_trained_in_its_new_dtype() -> None:
    """``model.to(float32)`` between two calls (a new optimizer on it): the second call trains
    in float32, as the loop does."""
    x, y = _data()
    runs = {}
    for fold in (True, False):
        model = _model()
        with _path(fold):
            _fit(
                model,
                optim.SGD(model.parameters(), 0.1),
                x,
                y,
                epochs=1,
                batch_size=10,
                generator=torch.Generator().manual_seed(0),
            )
            model.to(dtype=torch.float32)
            optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.5)
            history = _fit(
                model,
                optimizer,
                x.float(),
                y,
                epochs=2,
                batch_size=10,
                generator=torch.Generator().manual_seed(1),
            )
        runs[fold] = (model, optimizer, history)
    assert all(p.dtype == torch.float32 for p in runs[True][0].parameters())
    _same_training(runs[True], runs[False], tolerance=1e-5)


def test_an_optimizer_refusing_its_cast_parameters_raises_as_the_loop() -> None:
    """A learning rate beyond the range of the dtype the model was cast to: the loop's first
    ``zero_grad`` refuses it, after the epoch's shuffle drew from the generator; the folded
    step must not refuse it earlier (``build`` declines), so the generator is left alike."""
    x, y = _data()
    states = {}
    for fold in (True, False):
        model = _model()
        optimizer = optim.SGD(model.parameters(), 1e300)
        model.to(dtype=torch.float32)
        generator = torch.Generator().manual_seed(0)
        with (
            _path(fold),
            pytest.raises(ValueError, match="beyond the range"),
        ):
            _fit(
                model,
                optimizer,
                x.float(),
                y,
                epochs=2,
                batch_size=10,
                generator=generator,
            )
        states[fold] = generator.get_state()
    assert torch.equal(states[True], states[False])


def test_declines_a_parameter_shared_by_two_layers() -> None:
    """A weight tied between two layers: its gradient is the sum of the two layers' (the loop
    accumulates both into it), so the folded step, one block per layer, would train two
    copies. ``fit`` runs the loop, and trains as it does."""
    x, y = _data(features=4, classes=4)

    def tied() -> nn.Sequential:
        torch.manual_seed(0)
        first, second = nn.Linear(4, 4, dtype=F64), nn.Linear(4, 4, dtype=F64)
        second.register_parameter("weight", first.weight)
        return nn.Sequential(first, nn.Tanh(), second)

    model = tied()
    _declines(model, x=x, y=y)
    runs = {}
    for fold in (True, False):
        model = tied()
        optimizer = optim.SGD(model.parameters(), 0.1)
        with _path(fold):
            history = _fit(
                model,
                optimizer,
                x,
                y,
                epochs=2,
                batch_size=8,
                generator=torch.Generator().manual_seed(0),
            )
        runs[fold] = (model, optimizer, history)
    _same_training(runs[True], runs[False], tolerance=0.0)


# -- the trial forward, skipped on data it passed ----------------------------------------------


def _count_trials(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count fit's trial forwards (the only use of eval_mode in a fit without validation)."""
    import minidl.train

    trials = [0]
    original = minidl.train.eval_mode

    def counting(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
        trials[0] += 1
        return original(model)

    monkeypatch.setattr(minidl.train, "eval_mode", counting)
    return trials


def test_the_trial_forward_runs_again_only_on_other_or_changed_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A folded fit called again on the same ``x`` and ``y`` tensors skips the trial forward
    (they passed on a model found unchanged); new tensors, tensors changed in place (their
    version counters), inference tensors (which keep no version) and a new step run it."""
    trials = _count_trials(monkeypatch)
    x, y = _data()
    model = _model()
    criterion, optimizer = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1)

    def run(x: Tensor, y: Tensor, optimizer: optim.Optimizer = optimizer) -> int:
        before = trials[0]
        fit(model, criterion, optimizer, x, y, epochs=1, batch_size=8)
        return trials[0] - before

    assert run(x, y) == 1
    assert run(x, y) == 0
    assert run(x, y) == 0
    y[3] = y[3]  # (an in-place write: the version counter moves)
    assert run(x, y) == 1
    assert run(x, y) == 0
    x.mul_(1.0)
    assert run(x, y) == 1
    assert run(x.clone(), y) == 1
    assert run(x, y.clone()) == 1
    with torch.inference_mode():
        x_inference = x.clone()
    assert run(x_inference, y) == 1
    assert run(x_inference, y) == 1
    assert run(x, y) == 1  # (another x since the last call)
    assert run(x, y, optim.SGD(model.parameters(), 0.1)) == 1  # (a new step)
    with unfolded():
        assert run(x, y) == 1
        assert run(x, y) == 1


def test_targets_changed_in_place_are_checked_before_training() -> None:
    """Probability targets whose first row is made invalid in place between two calls: the
    second call's trial forward runs again and refuses them before any step (rather than the
    loss refusing the batch that holds that row in the middle of the epoch)."""
    x, _ = _data(samples=40)
    y = torch.full((40, 3), 1 / 3, dtype=F64)
    model = _model()
    criterion, optimizer = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1)
    generator = torch.Generator().manual_seed(0)
    fit(model, criterion, optimizer, x, y, epochs=1, batch_size=8, generator=generator)
    before = [p.data.clone() for p in model.parameters()]
    y[0, 0] = 2.0
    with pytest.raises(ValueError, match="rows summing") as raised:
        fit(model, criterion, optimizer, x, y, epochs=1, batch_size=8, generator=generator)
    assert any("x[:1] and y[:1]" in note for note in raised.value.__notes__)
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.data, q)


def test_the_step_holds_its_data_weakly() -> None:
    """The step notes the tensors of its trial forward by weak reference: the data of a model
    that lives on are freed."""
    import gc
    import weakref

    x, y = _data()
    model = _model()
    _fit(model, optim.SGD(model.parameters(), 0.1), x, y, epochs=1)
    model(torch.zeros(2, 3, dtype=F64))  # (the trial forward's caches: views of x)
    references = weakref.ref(x), weakref.ref(y)
    del x, y
    gc.collect()
    assert references[0]() is None and references[1]() is None


def _write_3_in_place(x: Tensor, y: Tensor) -> None:
    y[37] = 3  # (moves y's version counter)


def _write_7_through_data(x: Tensor, y: Tensor) -> None:
    y.data[37] = 7


def _write_7_through_numpy(x: Tensor, y: Tensor) -> None:
    y.numpy()[37] = 7


def _write_a_negative_index_through_data(x: Tensor, y: Tensor) -> None:
    y.data[37] = -1


def _assign_four_features(x: Tensor, y: Tensor) -> None:
    x.data = torch.randn(40, 4, dtype=F64)


def _assign_targets_of_two_columns(x: Tensor, y: Tensor) -> None:
    y.data = torch.zeros(40, 2, dtype=torch.int64)


def _assign_float_targets(x: Tensor, y: Tensor) -> None:
    y.data = y.data.double()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_write_3_in_place, r"^fit: y must hold class indices in \[0, 3\)"),
        (_write_7_through_data, r"^fit: y must hold class indices in \[0, 3\)"),
        (_write_7_through_numpy, r"^fit: y must hold class indices in \[0, 3\)"),
        (_write_a_negative_index_through_data, r"^fit: y must hold class indices >= 0"),
        (_assign_four_features, r"^Linear: expected 3 input features, got 4"),
        (_assign_targets_of_two_columns, r"^CrossEntropyLoss: class-index target has shape"),
        (
            _assign_float_targets,
            r"^CrossEntropyLoss: a target of shape \(1,\) holds class indices, which must have "
            r"dtype torch\.int64, got torch\.float64",
        ),
    ],
)
def test_data_changed_past_the_version_counters_is_checked_before_training(
    change: Callable[[Tensor, Tensor], None], message: str
) -> None:
    """Data changed in place between two calls, or past the version counters (what is written
    through ``.data`` or a NumPy array sharing the memory, or a ``.data`` assigned, moves
    none): fit called again on the same tensors still checks the class indices and runs the
    trial forward on what changed, and refuses before any step (the parameters and the
    generator as they were), as the version before the skip did. Class indices assigned a
    float64 ``.data`` (``torch.equal`` finds the first target the same across dtypes) are
    refused for their dtype (a TypeError), not read as probabilities."""
    x, y = _data(samples=40)
    model = _model()
    criterion, optimizer = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1)
    generator = torch.Generator().manual_seed(0)
    fit(model, criterion, optimizer, x, y, epochs=1, batch_size=8, generator=generator)
    before = [p.data.clone() for p in model.parameters()]
    state = generator.get_state()
    change(x, y)
    kind = TypeError if change is _assign_float_targets else ValueError
    with pytest.raises(kind, match=message):
        fit(model, criterion, optimizer, x, y, epochs=1, batch_size=8, generator=generator)
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.data, q)
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize(
    ("criterion", "message"),
    [(nn.BCEWithLogitsLoss(), "must lie in"), (nn.CrossEntropyLoss(), "rows summing")],
)
def test_a_first_target_written_through_data_is_checked_before_training(
    criterion: nn.Loss, message: str
) -> None:
    """Probability targets whose first row is made invalid through ``.data`` (no version
    counter moves) between two calls: the loss refuses them in the trial forward, before any
    step, not on the batch that holds that row in the middle of an epoch."""
    x, _ = _data(samples=40)
    y = torch.full((40, 3), 1 / 3, dtype=F64)
    model = _model()
    optimizer = optim.SGD(model.parameters(), 0.1)
    fit(model, criterion, optimizer, x, y, epochs=1, batch_size=8)
    before = [p.data.clone() for p in model.parameters()]
    y.data[0, 0] = 2.0
    with pytest.raises(ValueError, match=message) as raised:
        fit(model, criterion, optimizer, x, y, epochs=1, batch_size=8)
    assert any("x[:1] and y[:1]" in note for note in raised.value.__notes__)
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.data, q)


def test_the_kept_step_declines_the_data_build_declines(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second call on targets of a Tensor subclass (data that ``build`` declines): the step
    kept from the first call is not used either, so the loop trains, with its bits."""

    class Targets(Tensor):
        pass

    calls = _count_folded_calls(monkeypatch)
    x, y = _data()
    runs = {}
    for fold in (True, False):
        model = _model()
        criterion, optimizer = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1)
        generator = torch.Generator().manual_seed(0)
        options: dict[str, Any] = {"epochs": 1, "batch_size": 10, "generator": generator}
        fit(model, criterion, optimizer, x, y, **options)
        with _path(fold):
            history = fit(model, criterion, optimizer, x, y.as_subclass(Targets), **options)
        runs[fold] = (model, optimizer, history)
    assert calls[0] == 10  # (the first calls' epochs only)
    _same_training(runs[True], runs[False], tolerance=0.0)


def _float32_state(optimizer: optim.Optimizer) -> None:
    for name in optimizer.state:
        optimizer.state[name] = optimizer.state[name].float()


def _longer_state(optimizer: optim.Optimizer) -> None:
    for name in optimizer.state:
        optimizer.state[name] = torch.cat([optimizer.state[name], torch.zeros(5, dtype=F64)])


@pytest.mark.parametrize(
    ("replace", "shown"),
    [
        (_float32_state, "a torch.float32 tensor of shape (77,) on cpu"),
        (_longer_state, "a torch.float64 tensor of shape (82,) on cpu"),
    ],
)
@pytest.mark.parametrize(
    "make",
    [
        lambda m: optim.SGD(m.parameters(), 0.1, momentum=0.9),
        lambda m: optim.Adam(m.parameters(), 1e-2),
        lambda m: optim.Adadelta(m.parameters()),
    ],
    ids=["momentum", "adam", "adadelta"],
)
def test_a_state_tensor_replaced_by_another_dtype_or_size_is_refused_before_training(
    replace: Callable[[optim.Optimizer], None],
    shown: str,
    make: Callable[[nn.Module], optim.Optimizer],
) -> None:
    """A state tensor replaced, between two calls, by one of another dtype (float32 under
    float64 parameters, which the loop's step updated in float32 and no checkpoint could load)
    or size (which Adam's step refused part-way, its other state tensor updated): fit refuses
    it before training, on either path, naming the optimizer, the state and what it expects,
    and the model and the state are as the first call left them."""
    x, y = _data()
    errors = {}
    for fold in (True, False):
        model = _model()
        optimizer = make(model)
        generator = torch.Generator().manual_seed(0)
        criterion = nn.CrossEntropyLoss()  # (one for both calls: the step is kept)
        options: dict[str, Any] = {"epochs": 1, "batch_size": 10, "generator": generator}
        history = fit(model, criterion, optimizer, x, y, **options)
        replace(optimizer)
        values = [p.data.clone() for p in model.parameters()]
        state = {name: tensor.clone() for name, tensor in optimizer.state.items()}
        with _path(fold), pytest.raises(ValueError) as error:
            fit(model, criterion, optimizer, x, y, history=history, **options)
        errors[fold] = str(error.value)
        assert all(torch.equal(p.data, v) for p, v in zip(model.parameters(), values, strict=True))
        assert all(torch.equal(optimizer.state[name], t) for name, t in state.items())
        assert len(history.train_loss) == 1
    assert errors[True] == errors[False]
    name = type(optimizer).__name__
    first = next(iter(optimizer.state))
    assert errors[True] == (
        f"{name}.step: state {first!r} is {shown}, expected a contiguous torch.float64 tensor "
        "of shape (77,) on cpu (one entry per parameter scalar, of the parameters' dtype and "
        "device)"
    )


def test_unfolded_runs_the_loop_for_a_model_with_a_kept_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The oracle: inside ``unfolded()`` fit runs the loop, also for a model whose step an
    earlier folded call kept (fit looks for that one before ``build``)."""
    calls = _count_folded_calls(monkeypatch)
    x, y = _data()
    model = _model()
    criterion, optimizer = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1)
    fit(model, criterion, optimizer, x, y, epochs=1, batch_size=10)
    assert calls[0] == 5
    with unfolded():
        fit(model, criterion, optimizer, x, y, epochs=1, batch_size=10)
    assert calls[0] == 5


def _count_columns(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = nn.CrossEntropyLoss._forward_columns

    def counting(self: nn.CrossEntropyLoss, *arguments: Tensor) -> Tensor:
        calls[0] += 1
        return original(self, *arguments)

    monkeypatch.setattr(nn.CrossEntropyLoss, "_forward_columns", counting)
    return calls


@pytest.mark.parametrize("classes", [1, 3, 20])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("modules", ["linear", "activation_last", "layers", "wide_batch"])
def test_cross_entropy_of_class_indices_takes_the_last_modules_columns(
    classes: int, reduction: Any, modules: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cross-entropy of class indices reads the last module's ``(C, N)`` output as it is
    (``CrossEntropyLoss._forward_columns``, no copy into ``(N, C)``), its gradient ``(C, N)``
    going straight into the last module's backward: the loop's training to 1e-12 in float64,
    for a lone layer (the first and the last), an activation last, 20 classes (whose softmax
    sums in another order) and one class, a sum and a mean, and batches of more than 1024
    (a sum, not a dot product); every step took that path."""
    samples, batch_size = (2100, 1050) if modules == "wide_batch" else (50, 8)
    x, y = _data(samples=samples, classes=classes)
    calls = _count_columns(monkeypatch)

    def make() -> tuple[nn.Module, nn.Loss, optim.Optimizer, Any]:
        torch.manual_seed(4)
        layers = {
            "linear": lambda: [nn.Linear(3, classes)],
            "activation_last": lambda: [
                nn.Linear(3, 5),
                nn.Tanh(),
                nn.Linear(5, classes),
                nn.ELU(),
            ],
            "layers": lambda: [
                nn.Linear(3, 6),
                nn.Tanh(),
                nn.Linear(6, 5),
                nn.ReLU(),
                nn.Linear(5, classes),
            ],
            "wide_batch": lambda: [nn.Linear(3, 6), nn.Sigmoid(), nn.Linear(6, classes)],
        }[modules]()
        model = nn.Sequential(*layers).to(dtype=F64)
        optimizer = optim.SGD(model.parameters(), 0.05, momentum=0.9)
        return model, nn.CrossEntropyLoss(reduction=reduction), optimizer, None

    folded, plain = _train_both(make, x, y, epochs=3, batch_size=batch_size)
    _same_training(folded, plain)
    assert calls[0] == 3 * -(-samples // batch_size)


def test_cross_entropy_of_probabilities_copies_the_prediction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Probability targets go the batch-major way (the prediction copied, the loss's own
    forward), in the same step as class indices of another call."""
    x, y = _data()
    calls = _count_columns(monkeypatch)
    probabilities = torch.nn.functional.one_hot(y, 3).to(F64) * 0.7 + 0.1
    model = _model()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), 0.05)
    plain_model = copy.deepcopy(model)
    plain_optimizer = optim.SGD(plain_model.parameters(), 0.05)
    for target in (probabilities, y, probabilities):
        for trained, loss, stepper, context in (
            (model, criterion, optimizer, _folding()),
            (plain_model, nn.CrossEntropyLoss(), plain_optimizer, unfolded()),
        ):
            with context:
                fit(
                    trained,
                    loss,
                    stepper,
                    x,
                    target,
                    epochs=1,
                    batch_size=8,
                    generator=torch.Generator().manual_seed(0),
                )
    assert calls[0] == 7  # (the class indices' batches only)
    for p, q in zip(model.parameters(), plain_model.parameters(), strict=True):
        _close(p.data, q.data)


@pytest.mark.parametrize(
    "loss",
    [
        "cross_entropy",
        "cross_entropy_sum",
        "cross_entropy_probabilities",
        "mse_paper",
        "nll",
        "l1",
        "huber",
        "bce_with_logits",
    ],
)
def test_the_loss_after_a_folded_fit_gives_the_last_batchs_gradient(loss: str) -> None:
    """After fit, the loss's ``backward()`` is the gradient of the last batch, as the loop
    leaves it: ``(N, C)``, contiguous, and its own: a gradient taken then, and a shallow copy
    of the loss, stay as they were while the same model, loss and optimizer train on (the kept
    step writes its buffers again), where the loss's own ``backward()`` moves on. (The binary
    cross-entropy kept the step's prediction buffer, so that its copy moved on too.)"""
    x, y = _data()
    results = {}
    for fold in (True, False):
        model = _model()
        criterion, target = _loss_target(loss, y, 3)
        optimizer = optim.SGD(model.parameters(), 0.05)
        with _folding(fold) if fold else unfolded():
            fit(
                model,
                criterion,
                optimizer,
                x,
                target,
                epochs=2,
                batch_size=8,
                generator=torch.Generator().manual_seed(0),
            )
            first = criterion.backward()
            kept = copy.copy(criterion)
            fit(
                model,
                criterion,
                optimizer,
                x,
                target,
                epochs=1,
                batch_size=8,
                generator=torch.Generator().manual_seed(1),
            )
        results[fold] = (first.clone(), first, kept.backward(), criterion.backward())
    for folded, plain in zip(results[True], results[False], strict=True):
        assert folded.shape == (2, 3) and folded.is_contiguous()
        _close(folded, plain)
    before, first, kept, last = results[True]
    assert torch.equal(first, before) and torch.equal(kept, before)
    assert not torch.equal(last, before)


def test_a_batch_refused_by_the_binary_cross_entropy_leaves_it_the_last_good_gradient() -> None:
    """A target out of ``[0, 1]`` refused by the binary cross-entropy in the second epoch:
    its ``backward()`` is then the last good batch's gradient on both paths (the folded step's
    refused batch had been written into the prediction buffer the loss kept)."""
    x, y = _data()
    results = {}
    for fold in (True, False):
        model = _model()
        criterion, target = _loss_target("bce_with_logits", y, 3)
        optimizer = optim.SGD(model.parameters(), 0.05)

        def spoil(record: Any, target: Tensor = target) -> None:
            target[40, 0] = 2.0

        with _path(fold), pytest.raises(ValueError, match=r"targets must lie in \[0, 1\]"):
            fit(
                model,
                criterion,
                optimizer,
                x,
                target,
                epochs=2,
                batch_size=10,
                on_epoch=spoil,
                generator=torch.Generator().manual_seed(0),
            )
        results[fold] = (criterion.backward(), optimizer.step_count)
    assert results[True][1] == results[False][1] < 10  # (refused in the second epoch)
    _close(results[True][0], results[False][0])


def _refused_both_ways(
    error: type[BaseException], spoil: Callable[[nn.CrossEntropyLoss], Any], **options: Any
) -> dict[bool, tuple[str, Tensor, nn.Module, int]]:
    """``fit`` under cross-entropy stopped by ``error`` (``spoil(criterion)`` run before each
    run: it arranges the failure), folded and step by step: for each, the message, the loss's
    ``backward()`` after, the model and the step count."""
    x = _data()[0]
    runs = {}
    for fold in (True, False):
        model = _model()
        criterion = nn.CrossEntropyLoss()
        optimizer = optim.SGD(model.parameters(), 0.1, momentum=0.9)
        with _path(fold), pytest.raises(error) as raised:
            fit(
                model,
                criterion,
                optimizer,
                x,
                spoil(criterion),
                batch_size=10,
                generator=torch.Generator().manual_seed(0),
                **options,
            )
        runs[fold] = (str(raised.value), criterion.backward(), model, optimizer.step_count)
    (message, gradient, model, steps), (message_p, gradient_p, model_p, steps_p) = (
        runs[True],
        runs[False],
    )
    assert message == message_p and steps == steps_p
    _close(gradient, gradient_p)
    for p, q in zip(model.parameters(), model_p.parameters(), strict=True):
        _close(p.data, q.data)
        _close(p.grad, q.grad)
    return runs


def test_class_indices_refused_mid_epoch_by_the_columns_as_by_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A class index out of range written by ``on_epoch`` after the first epoch: the columns'
    gather refuses it in the loop's words, the gradients zeros, the steps done and the loss's
    ``backward()`` (the last good batch's) the loop's."""
    # (fit refuses targets that on_epoch spoiled before the next epoch: that check is left out
    # here, so that the loss refuses a batch part-way, as it refuses targets changed otherwise,
    # by another thread or through memory written from elsewhere)
    monkeypatch.setattr(minidl.train, "_check_targets", _checked_before_training_only())
    target = _data()[1].clone()

    def spoil(criterion: nn.CrossEntropyLoss) -> Tensor:
        target[40] = 1
        return target

    runs = _refused_both_ways(
        ValueError, spoil, epochs=2, on_epoch=lambda record: target.__setitem__(40, 3)
    )
    assert "out of range" in runs[True][0] and runs[True][3] > 5
    assert all(not p.grad.any() for p in runs[True][2].parameters())


def test_an_interrupt_in_the_columns_leaves_the_loss_as_the_loop() -> None:
    """A KeyboardInterrupt from the 8th ``gather`` (after its batch's log-probabilities are
    written): the parameters, gradients and the loss's ``backward()`` the loop's."""
    original = torch.gather
    calls = [0]

    def gather(*arguments: Any, **options: Any) -> Tensor:
        calls[0] += 1
        if calls[0] == 8:
            raise KeyboardInterrupt
        return original(*arguments, **options)

    def spoil(criterion: nn.CrossEntropyLoss) -> Tensor:
        calls[0] = 0
        return _data()[1]

    with mock.patch.object(torch, "gather", gather):
        _refused_both_ways(KeyboardInterrupt, spoil, epochs=2)


def test_a_refused_call_that_skips_the_trial_leaves_the_loss_as_the_last_call() -> None:
    """A call refused (a validation set of another width) on the same, unchanged tensors as
    the last folded call, which does not run the trial forward again: the loss keeps what the
    last call left it (its last batch's gradient), as fit documents; with the trial run (other
    tensors), the trial's sample's."""
    x, y = _data()
    model, criterion = _model(), nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), 0.05)
    options: dict[str, Any] = {"epochs": 1, "batch_size": 8}
    fit(model, criterion, optimizer, x, y, generator=torch.Generator().manual_seed(0), **options)
    last = criterion.backward()
    bad = (x[:5, :2], y[:5])
    with pytest.raises(ValueError, match="validation x must hold samples like the training x"):
        fit(model, criterion, optimizer, x, y, validation=bad, **options)
    assert torch.equal(criterion.backward(), last)
    with pytest.raises(ValueError, match="validation x must hold samples like the training x"):
        fit(model, criterion, optimizer, x.clone(), y, validation=bad, **options)
    assert criterion.backward().shape == (1, 3)


@pytest.mark.parametrize("what", ["parameter", "module"])
def test_a_kept_step_refuses_what_was_set_unregistered_since_as_a_first_call_does(
    what: str,
) -> None:
    """A fit whose folded step was kept from an earlier call skipped the check of plain
    attributes: a Parameter (or a layer) set on a module since was accepted, and left out of
    the training, where a first call, or the step-by-step loop, refuses it."""
    x, y = _data()
    model = _model()
    optimizer = optim.SGD(model.parameters(), 0.1)
    _fit(model, optimizer, x, y, epochs=1, batch_size=10)
    assert FoldedStep.kept(model, nn.CrossEntropyLoss(), optimizer, x, y) is None  # (its loss)
    criterion = nn.CrossEntropyLoss()
    fit(model, criterion, optimizer, x, y, epochs=1, batch_size=10)
    assert FoldedStep.kept(model, criterion, optimizer, x, y) is not None
    if what == "parameter":
        model[0].extra = nn.Parameter(torch.ones(3, dtype=F64))
        expected = r"^fit: the Parameter in attribute '0\.extra' is not registered"
    else:
        model[2].extra = nn.Linear(2, 2)
        expected = r"^fit: the Linear in attribute '2\.extra' is not registered"
    before = [p.data.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=expected):
        fit(model, criterion, optimizer, x, y, epochs=1, batch_size=10)
    assert all(torch.equal(p.data, b) for p, b in zip(model.parameters(), before, strict=True))


class _LayerwiseSGD(optim.SGD):
    """SGD with a rate per parameter, laid over the flat buffer in the parameters' order."""

    def __init__(self, params: Any, lr: float, scales: list[float]) -> None:
        params = list(params)
        super().__init__(params, lr)
        self.scale = torch.cat(
            [
                torch.full((p.data.numel(),), k, dtype=p.data.dtype)
                for p, k in zip(params, scales, strict=True)
            ]
        )

    def _update(self, value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
        value.add_(grad * self.scale, alpha=-self.lr)


class _KeptSGD(optim.SGD):
    """A subclass that keeps SGD's update (a default of its own only)."""

    def __init__(self, params: Any) -> None:
        super().__init__(params, lr=0.1, momentum=0.5)


def test_an_optimizer_of_ones_own_update_trains_step_by_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The folded step handed a subclass's own ``_update`` the entries in its blocks' order
    ([W | b] row by row), not the flat buffer's: an update reading an entry's place (a rate per
    layer, the biases frozen) moved the biases. Such an update runs step by step now; a
    subclass keeping a built-in update still folds."""
    calls = _count_folded_calls(monkeypatch)
    x, y = _data()
    model = _model((3, 4, 3))
    biases = [model[0].bias.data.clone(), model[2].bias.data.clone()]
    optimizer = _LayerwiseSGD(model.parameters(), 0.1, scales=[1.0, 0.0, 1.0, 0.0])
    _fit(model, optimizer, x, y, epochs=2, batch_size=10)
    assert calls[0] == 0
    assert torch.equal(model[0].bias.data, biases[0]) and torch.equal(model[2].bias.data, biases[1])
    model = _model((3, 4, 3))
    _fit(model, _KeptSGD(model.parameters()), x, y, epochs=2, batch_size=10)
    assert calls[0] == 10


def test_an_optimizer_whose_instance_holds_its_own_step_buffers_trains_step_by_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``_step_buffers`` set on the optimizer's instance was called by the folded step with the
    entries in its blocks' order; it runs step by step now, as for one set on the class."""
    calls = _count_folded_calls(monkeypatch)
    x, y = _data()
    model = _model((3, 4, 3))
    optimizer = optim.SGD(model.parameters(), 0.1)
    optimizer._step_buffers = lambda *args: None  # type: ignore[method-assign]
    _fit(model, optimizer, x, y, epochs=1, batch_size=10)
    assert calls[0] == 0


def _seeded() -> torch.Generator:
    return torch.Generator().manual_seed(0)


class _HalvingSGD(optim.SGD):
    """SGD whose ``_step_buffers`` (the flat buffers' update) halves the values after
    stepping, and counts its calls: an update of one's own on the class."""

    calls = 0

    def _step_buffers(self, *args: Any) -> None:
        type(self).calls += 1
        super()._step_buffers(*args)
        args[0].mul_(0.5)


def test_an_optimizer_whose_class_overrides_its_step_buffers_trains_step_by_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A subclass's own ``_step_buffers`` (an override on the class, not the instance) runs
    step by step too, as the loop's ``step`` does, which does not call it: folded, the
    override was called with the entries in the blocks' order and trained otherwise."""
    calls = _count_folded_calls(monkeypatch)
    x, y = _data()
    model = _model((3, 4, 3))
    _HalvingSGD.calls = 0
    order = {"epochs": 1, "batch_size": 10}
    _fit(model, _HalvingSGD(model.parameters(), 0.1), x, y, generator=_seeded(), **order)
    assert (calls[0], _HalvingSGD.calls) == (0, 0)
    twin = _model((3, 4, 3))
    with unfolded():
        _fit(twin, _HalvingSGD(twin.parameters(), 0.1), x, y, generator=_seeded(), **order)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p.data, q.data)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "elu"])
def test_a_step_runs_its_modules_as_torch_operations_on_fixed_operands(activation: str) -> None:
    """A step's forward and backward of the modules (the last layer's backward included,
    under a cross-entropy of class indices) are ``torch`` functions with their operands fixed
    (``functools.partial``, called with no arguments): the layers' products and the
    activations' own operations (``_operations``: Tanh, Sigmoid, ReLU), with no Python
    function of minidl between them. An activation without such a form (ELU, which caches a
    derivative of its own) runs through its ``_forward`` and ``_backward``. All train as the
    loop does (``test_activations_and_batch_sizes``)."""
    import functools

    x, y = _data()
    model = _model(activation=activation)
    criterion, optimizer = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1)
    fit(model, criterion, optimizer, x, y, epochs=1)
    step = minidl.folded._STEPS[model]  # (kept while the loss and the optimizer live)
    (batch,) = step._batches.values()  # (one batch of the 50 samples)
    operations = [*batch.forward, *(batch.columns_backward or ())]
    assert all(isinstance(operation, functools.partial) for operation in operations)
    functions = {operation.func for operation in operations}
    own = {
        "tanh": ({torch.Tensor.tanh_}, {torch.addcmul, torch.mul}),
        "sigmoid": (
            {torch.neg, torch.Tensor.exp_, torch.Tensor.add_, torch.Tensor.reciprocal_},
            {torch.mul, torch.addcmul},
        ),
        "relu": ({torch.clamp_min}, {torch.sign, torch.mul}),
        "elu": ({minidl.folded._forward}, {minidl.folded._backward}),
    }[activation]
    assert functions == {torch.mm, *own[0], *own[1]}
    # (3 layers and 2 activations; backward: 2 products a layer but the first, 1 there)
    per_forward = 4 if activation == "sigmoid" else 1
    per_backward = 1 if activation == "elu" else 2
    assert len(batch.forward) == 3 + 2 * per_forward
    assert len(operations) - len(batch.forward) == 2 * 2 + 1 + 2 * per_backward


def _stopped_in_the_second_product(
    monkeypatch: pytest.MonkeyPatch, products: set[tuple[tuple[int, ...], ...]], loss: str
) -> dict[bool, tuple[nn.Module, optim.Optimizer, History]]:
    """:func:`_stopped_both_ways` by a KeyboardInterrupt in the 2nd matrix product (``mm`` or
    ``addmm``) of one of ``products``' pairs of operand shapes, in one epoch under a
    cross-entropy of class indices or MSE; the folded run folded."""
    calls = [0]

    def counted(original: Callable[..., Tensor], operands: slice) -> Callable[..., Tensor]:
        def product(*args: Any, **options: Any) -> Tensor:
            a, b = args[operands]
            if (tuple(a.shape), tuple(b.shape)) in products:
                calls[0] += 1
                if calls[0] == 2:
                    raise KeyboardInterrupt
            return original(*args, **options)

        return product

    monkeypatch.setattr(torch, "mm", counted(torch.mm, slice(0, 2)))
    monkeypatch.setattr(torch.Tensor, "mm", counted(torch.Tensor.mm, slice(0, 2)))
    monkeypatch.setattr(torch, "addmm", counted(torch.addmm, slice(1, 3)))
    built = _record_builds(monkeypatch)

    def reset() -> None:
        calls[0] = 0

    x, y = _data()
    criterion, target = _loss_target(
        "cross_entropy" if loss == "cross_entropy" else "mse_mean", y, 3
    )
    runs = _stopped_both_ways(KeyboardInterrupt, x, target, criterion, before=reset, epochs=1)
    assert built and built[0] is not None  # (the folded run folded)
    assert calls[0] == 2
    return runs


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_interrupted_weight_gradient_leaves_the_layers_gradients_zero(
    loss: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt in the middle layer's weight-gradient product (folded ``G [A; 1]^T``, which
    writes the weight's and the bias's; the loop's ``addmm`` into the weight's), in the 2nd
    step: that layer's gradients and those before it are zero, as the loop leaves them (the
    folded step zeroed the layers before the interrupted one only, and the middle layer kept
    the 1st step's gradient); the last layer's are the 2nd step's."""
    # (the middle layer 6 -> 5 over batches of 10: (5, 10) x (10, 7) folded, with the row
    # of ones; (5, 10) x (10, 6) in the loop)
    products = {((5, 10), (10, 7)), ((5, 10), (10, 6))}
    runs = _stopped_in_the_second_product(monkeypatch, products, loss)
    for fold in (True, False):
        written = [bool(p.grad.any()) for p in runs[fold][0].parameters()]
        assert written == [False] * 4 + [True] * 2, fold


@pytest.mark.parametrize(
    ("where", "loss"),
    [("middle", "cross_entropy"), ("last", "cross_entropy"), ("last", "mse"), ("middle", "mse")],
)
def test_interrupted_input_gradient_leaves_the_layers_own_gradient(
    where: str, loss: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt in a layer's input-gradient product (``W^T G``; ``G W`` batch-major), in the
    2nd step: that layer's own gradient, written by its first product, is left as the loop's
    ``backward_parameters`` leaves it (the loop accumulates a layer's parameter gradients before
    its input gradient), the layers before it zero; for the middle layer of 6 -> 5 and the
    last of 5 -> 3, under a cross-entropy of class indices (its columns) and under MSE (the
    last layer's backward batch-major)."""
    inner, outer = (6, 5) if where == "middle" else (5, 3)
    # (the folded step's W^T G reads (in, out) x (out, N); the loop's G W (N, out) x (out, in))
    products = {((inner, outer), (outer, 10)), ((10, outer), (outer, inner))}
    runs = _stopped_in_the_second_product(monkeypatch, products, loss)
    written = [bool(p.grad.any()) for p in runs[True][0].parameters()]
    assert written == (
        [False, False, True, True, True, True] if where == "middle" else [False] * 4 + [True] * 2
    )
