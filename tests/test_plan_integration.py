"""Planned chains (``minidl.nn.chain``) inside the rest of the library, against twins that never
plan.

The oracle is the same model with planning switched off (``_plannable = False`` on a copy made
before the first forward, on every ``Sequential`` in it): everything observable must be the
same bits, whatever drives the model (``fit`` with schedules, validation and callbacks,
checkpoints saved with a plan active and resumed in the same or a fresh model, ``fit_rounds``,
an experiment's round, ``from_torch``/``to_torch``, hand-written loops that mix shapes, modes,
optimizers and gradient accumulation, chains nested next to a Dropout, a BatchNorm1d or inside
a Residual). Each test also counts the planned backwards it ran (``ChainPlan.backward``), so
that it cannot pass on the child-by-child path alone.

``fit`` runs the step-by-step loop here (``tests.helpers.unfolded``), whose calls plan: its
folded step (``minidl.folded``) calls no ``Sequential`` and has tests of its own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor

import minidl
from minidl import nn, optim
from minidl.checkpoint import load_checkpoint, save_checkpoint
from minidl.interop import from_torch, to_torch
from minidl.nn.chain import ChainPlan
from minidl.rounds import fit_rounds
from minidl.train import EpochRecord, History, error_rate, fit, predict
from tests.helpers import unfolded

F64 = torch.float64


@pytest.fixture
def planned_backwards(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """A one-element list counting the calls of ``ChainPlan.backward`` during the test."""
    count = [0]
    backward = ChainPlan.backward

    def counted(plan: ChainPlan, grad_output: Tensor, with_input: bool) -> Tensor | None:
        count[0] += 1
        return backward(plan, grad_output, with_input)

    monkeypatch.setattr(ChainPlan, "backward", counted)
    yield count


@pytest.fixture(autouse=True)
def _step_by_step() -> Iterator[None]:
    with unfolded():
        yield


def _never_planning(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``Sequential`` modules (itself and those inside) never plan."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, nn.Sequential):
            module._plannable = False
    return twin


def _assert_same_parameters(planned: nn.Module, plain: nn.Module) -> None:
    for p, q in zip(planned.parameters(), plain.parameters(), strict=True):
        assert torch.equal(p.data, q.data)
        assert torch.equal(p.grad, q.grad)


def _network(seed: int, activation: Callable[[], nn.Module] = nn.Tanh) -> nn.Sequential:
    """The paper's 2-25-25-25-2 network in float64."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(2, 25, dtype=F64),
        activation(),
        nn.Linear(25, 25, dtype=F64),
        activation(),
        nn.Linear(25, 25, dtype=F64),
        activation(),
        nn.Linear(25, 2, dtype=F64),
    )


def _data(samples: int, seed: int, features: int = 2) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, dtype=F64, generator=generator)
    return x, (x[:, 0] * x[:, -1] > 0).long()


# -- fit --------------------------------------------------------------------------------------------

Build = Callable[[nn.Module], tuple[optim.Optimizer, optim.LRScheduler | None]]

RUNS: dict[str, tuple[Build, bool]] = {
    "SGD momentum, weight decay, OneCycle per batch": (
        lambda m: (
            sgd := optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3),
            optim.OneCycle(sgd, max_lr=0.5, total_steps=4 * 7),
        ),
        False,
    ),
    "Adam, StepDecay per epoch": (
        lambda m: (adam := optim.Adam(m.parameters(), lr=0.01), optim.StepDecay(adam, 1, 0.5)),
        False,
    ),
    "Adadelta, drop_last": (lambda m: (optim.Adadelta(m.parameters()), None), True),
    "RMSprop centered with momentum, CyclicLR per batch": (
        lambda m: (
            rms := optim.RMSprop(m.parameters(), lr=0.01, momentum=0.5, centered=True),
            optim.CyclicLR(rms, 0.001, 0.01, 3),
        ),
        False,
    ),
}


@pytest.mark.parametrize("run", list(RUNS))
def test_fit_is_the_never_planning_fit(run: str, planned_backwards: list[int]) -> None:
    """103 samples in batches of 16: six batches of one signature, then one of 7 (two
    signatures alternate, each epoch); the validation set, predict, error_rate and a forward of
    another shape run between the epochs, in evaluation mode and outside it."""
    build, drop_last = RUNS[run]
    planned = _network(seed=1)
    plain = _never_planning(planned)
    x, y = _data(103, seed=2)
    x_validation, y_validation = _data(37, seed=3)
    results = []
    for model in (planned, plain):
        optimizer, scheduler = build(model)
        seen: list[tuple[EpochRecord, Tensor, float, Tensor]] = []

        def on_epoch(record: EpochRecord, model: nn.Module = model, seen: list = seen) -> None:
            seen.append(
                (record, predict(model, x_validation[:9]), error_rate(model, x, y), model(x[:5]))
            )

        history = fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=4,
            batch_size=16,
            scheduler=scheduler,
            validation=(x_validation, y_validation),
            generator=torch.Generator().manual_seed(4),
            drop_last=drop_last,
            on_epoch=on_epoch,
        )
        results.append((history, seen, optimizer.state_dict()))
    (history, seen, state), (plain_history, plain_seen, plain_state) = results
    assert history == plain_history
    for (record, classes, error, output), (record2, classes2, error2, output2) in zip(
        seen, plain_seen, strict=True
    ):
        assert record == record2 and error == error2
        assert torch.equal(classes, classes2) and torch.equal(output, output2)
    tensors, plain_tensors = state.pop("state"), plain_state.pop("state")
    assert state == plain_state and tensors.keys() == plain_tensors.keys()
    for name, value in tensors.items():
        assert torch.equal(value, plain_tensors[name]), name
    _assert_same_parameters(planned, plain)
    assert planned_backwards[0] >= 4 * 5  # every full batch from an epoch's second on


# -- checkpoints ------------------------------------------------------------------------------------


def _steps(
    model: nn.Module, optimizer: optim.Optimizer, batches: list[tuple[Tensor, Tensor]]
) -> list[Tensor]:
    criterion = nn.CrossEntropyLoss()
    losses = []
    for x, y in batches:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        model.backward_parameters(criterion.backward())
        optimizer.step()
        losses.append(loss)
    return losses


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_a_checkpoint_saved_with_a_plan_active_resumes_bit_for_bit(
    kind: str, tmp_path: Path, planned_backwards: list[int]
) -> None:
    """Saved mid-epoch after the plan of the full batches ran; resumed in the same model (after
    it trained on), in a fresh one and in a fresh one that never plans: the losses and the
    parameters of the uninterrupted run, planned or not."""

    def optimizer_of(model: nn.Module) -> optim.Optimizer:
        if kind == "sgd":
            return optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        return optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)

    sizes = [8, 8, 8, 3, 8, 8, 8, 3, 8, 8]
    batches = [_data(n, seed=10 + i) for i, n in enumerate(sizes)]
    base = _network(seed=5)
    uninterrupted, plain = copy.deepcopy(base), _never_planning(base)
    expected = _steps(uninterrupted, optimizer_of(uninterrupted), batches)
    assert _steps(plain, optimizer_of(plain), batches) == expected  # (exact: float equality)
    _assert_same_parameters(uninterrupted, plain)
    before = planned_backwards[0]
    model = copy.deepcopy(base)
    optimizer = optimizer_of(model)
    losses = _steps(model, optimizer, batches[:3])
    assert model._planned is not None
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, model, optimizer)
    _steps(model, optimizer, batches[3:6])  # trained on, then put back
    for target in ("same", "fresh", "fresh, never planning"):
        if target == "same":
            resumed, resumed_optimizer = model, optimizer
        else:
            resumed = _network(seed=99)
            resumed._plannable = target == "fresh"
            resumed_optimizer = optimizer_of(resumed)
        load_checkpoint(path, resumed, resumed_optimizer)
        assert losses + _steps(resumed, resumed_optimizer, batches[3:]) == expected
        _assert_same_parameters(resumed, uninterrupted)
    assert planned_backwards[0] - before >= 10


def test_fit_resumed_from_a_checkpoint_is_the_uninterrupted_never_planning_fit(
    tmp_path: Path, planned_backwards: list[int]
) -> None:
    x, y = _data(103, seed=6)
    validation = _data(20, seed=7)

    def run(
        model: nn.Module, start: int, stop: int, history: History | None = None, load: bool = False
    ) -> History:
        sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        schedule = optim.StepDecay(sgd, 1, 0.7)
        generator = torch.Generator().manual_seed(8)
        if load:
            state = load_checkpoint(
                tmp_path / "run.ckpt", model, sgd, schedule, generator=generator
            )
            start, history = state.epoch, state.history
        result = fit(
            model,
            nn.CrossEntropyLoss(),
            sgd,
            x,
            y,
            epochs=stop,
            start_epoch=start,
            history=history,
            batch_size=16,
            scheduler=schedule,
            validation=validation,
            generator=generator,
        )
        if stop == 2:
            save_checkpoint(
                tmp_path / "run.ckpt",
                model,
                sgd,
                schedule,
                epoch=2,
                history=result,
                generator=generator,
            )
        return result

    base = _network(seed=9)
    plain = _never_planning(base)
    expected = run(plain, 0, 4)
    interrupted = copy.deepcopy(base)
    run(interrupted, 0, 2)
    assert interrupted._planned is not None or len(interrupted._plans) > 0
    fresh = _network(seed=10)
    assert run(fresh, 0, 4, load=True) == expected
    _assert_same_parameters(fresh, plain)
    assert planned_backwards[0] > 0


# -- loops that mix what the library offers ---------------------------------------------------------


def test_a_loop_mixing_shapes_modes_optimizers_and_accumulation_is_the_never_planning_one(
    planned_backwards: list[int],
) -> None:
    """Two optimizers on parts of the model (one with weight decay), gradients accumulated over
    two batches (zero_grad skipped), steps inside inference mode and under detect_anomaly,
    evaluation-mode calls and calls of other shapes between the steps."""
    planned = _network(seed=11, activation=nn.ReLU)
    plain = _never_planning(planned)
    script = (
        ["train"] * 3
        + ["accumulate", "train", "other shape", "train", "train", "inference", "inference"]
        + ["anomaly", "train", "eval", "accumulate", "accumulate", "train", "predict", "train"]
        + ["train", "input gradient", "train"]
    )
    optimizers = {}
    for model in (planned, plain):
        parameters = list(model.parameters())
        optimizers[id(model)] = (
            optim.SGD(parameters[:2], lr=0.1, momentum=0.9, weight_decay=1e-2),
            optim.Adam(parameters[2:], lr=0.01),
        )
    criteria = {id(planned): nn.CrossEntropyLoss(), id(plain): nn.CrossEntropyLoss()}
    for step, what in enumerate(script):
        x, y = _data(1 if step == 7 else 8, seed=100 + step)
        other, _ = _data(5, seed=200 + step)
        outputs = []
        for model in (planned, plain):
            criterion, results = criteria[id(model)], []
            if what in ("train", "accumulate", "inference", "anomaly", "input gradient"):
                if what != "accumulate":
                    for optimizer in optimizers[id(model)]:
                        optimizer.zero_grad()
                with (
                    torch.inference_mode()
                    if what == "inference"
                    else minidl.detect_anomaly()
                    if what == "anomaly"
                    else torch.no_grad()
                ):
                    results.append(criterion(model(x), y))
                    if what == "input gradient":
                        results.append(model.backward(criterion.backward()))
                    else:
                        model.backward_parameters(criterion.backward())
                    if what != "accumulate":
                        for optimizer in optimizers[id(model)]:
                            optimizer.step()
            elif what == "other shape":
                results += [model(other), model(x)]
            elif what == "eval":
                model.eval()
                results.append(model(x))
                model.train()
            else:
                results += [predict(model, x), torch.tensor(error_rate(model, x, y))]
            outputs.append(results)
        for a, b in zip(*outputs, strict=True):
            assert torch.equal(a, b)
        _assert_same_parameters(planned, plain)
    assert planned_backwards[0] >= 5


def _nested() -> nn.Module:
    torch.manual_seed(13)
    return nn.Sequential(
        nn.Sequential(nn.Linear(2, 6, dtype=F64), nn.Tanh(), nn.Linear(6, 6, dtype=F64)),
        nn.BatchNorm1d(6, dtype=F64),
        nn.Dropout(0.3, generator=torch.Generator().manual_seed(14)),
        nn.Residual(
            nn.Sequential(nn.Linear(6, 6, dtype=F64), nn.ELU(), nn.Linear(6, 6, dtype=F64))
        ),
        nn.Sequential(nn.ReLU(), nn.Linear(6, 2, dtype=F64)),
    )


def test_chains_next_to_a_dropout_a_batch_norm_and_in_a_residual_train_as_never_planned(
    planned_backwards: list[int],
) -> None:
    """The outer chain is not planned; the chains inside it are."""
    planned = _nested()
    assert not planned._plannable
    plain = _never_planning(planned)
    x, y = _data(103, seed=15)
    validation = _data(30, seed=16)
    histories = [
        fit(
            model,
            nn.CrossEntropyLoss(),
            optim.Adam(model.parameters(), lr=0.01),
            x,
            y,
            epochs=3,
            batch_size=16,
            validation=validation,
            generator=torch.Generator().manual_seed(17),
        )
        for model in (planned, plain)
    ]
    assert histories[0] == histories[1]
    _assert_same_parameters(planned, plain)
    for (name, a), (_, b) in zip(planned.named_buffers(), plain.named_buffers(), strict=True):
        assert torch.equal(a, b), name
    # A forward under detect_anomaly (child by child), its backward outside it, and the reverse.
    for model in (planned, plain):
        with minidl.detect_anomaly():
            model(x[:16])
        model._grad = model.backward(torch.ones(16, 2, dtype=F64))
        model(x[:16])
        with minidl.detect_anomaly():
            model._grad2 = model.backward(torch.ones(16, 2, dtype=F64))
    assert torch.equal(planned._grad, plain._grad) and torch.equal(planned._grad2, plain._grad2)
    _assert_same_parameters(planned, plain)
    assert planned_backwards[0] >= 3 * 2 * 5


# -- rounds, experiments, interop -------------------------------------------------------------------


def test_fit_rounds_between_planned_fits_is_the_never_planning_run(
    planned_backwards: list[int],
) -> None:
    """Models trained with fit (planned), then together by fit_rounds (a stack, not planned,
    whose parameters are copied back into theirs), then with fit again (their plans reused)."""
    bases = [_network(seed=20 + r) for r in range(2)]
    sets = [_data(53, seed=30 + r) for r in range(2)]
    validation = [_data(20, seed=40 + r) for r in range(2)]
    runs = []
    for models in ([copy.deepcopy(m) for m in bases], [_never_planning(m) for m in bases]):
        histories: list[object] = []
        for model, (x, y) in zip(models, sets, strict=True):
            sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            histories.append(
                fit(
                    model,
                    nn.CrossEntropyLoss(),
                    sgd,
                    x,
                    y,
                    epochs=2,
                    batch_size=8,
                    generator=torch.Generator().manual_seed(1),
                )
            )
        histories += fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda stack: optim.Adam(stack.parameters(), lr=0.01),
            sets,
            epochs=2,
            batch_size=8,
            generators=[torch.Generator().manual_seed(5 + r) for r in range(2)],
            validation_sets=validation,
        )
        for model, (x, y), pair in zip(models, sets, validation, strict=True):
            sgd = optim.SGD(model.parameters(), lr=0.1)
            histories.append(
                fit(
                    model,
                    nn.CrossEntropyLoss(),
                    sgd,
                    x,
                    y,
                    epochs=2,
                    batch_size=8,
                    generator=torch.Generator().manual_seed(9),
                    validation=pair,
                )
            )
        runs.append((models, histories))
    (planned, histories), (plain, plain_histories) = runs
    assert repr(histories) == repr(plain_histories)  # (nan for the epochs without validation)
    for a, b in zip(planned, plain, strict=True):
        _assert_same_parameters(a, b)
    assert planned_backwards[0] >= 2 * 2 * 2 * 4


def test_an_experiments_round_is_the_never_planning_round(
    monkeypatch: pytest.MonkeyPatch, planned_backwards: list[int]
) -> None:
    from minidl.experiments import training
    from minidl.experiments.config import TABLE_I
    from minidl.experiments.seeds import round_seeds

    experiment = TABLE_I[1]  # Tanh
    seeds = round_seeds(0, 0)
    planned = training.train_round(experiment, seeds, epochs=2)
    assert planned_backwards[0] > 0
    build = training.build_network

    def never_planning(experiment: object, generator: torch.Generator) -> nn.Sequential:
        model = build(experiment, generator)  # type: ignore[arg-type]
        model._plannable = False
        return model

    monkeypatch.setattr(training, "build_network", never_planning)
    count = planned_backwards[0]
    plain = training.train_round(experiment, seeds, epochs=2)
    assert planned_backwards[0] == count
    for name in ("test_error", "train_error", "validation_curve", "train_loss", "lr_curve"):
        assert getattr(planned, name) == getattr(plain, name), name
    _assert_same_parameters(planned.model, plain.model)


def test_from_torch_models_train_and_to_torch_copies_as_never_planned(
    planned_backwards: list[int],
) -> None:
    torch.manual_seed(50)
    twin = torch.nn.Sequential(
        torch.nn.Linear(4, 9),
        torch.nn.Tanh(),
        torch.nn.Linear(9, 9, bias=False),
        torch.nn.ELU(),
        torch.nn.Linear(9, 3),
    ).double()
    planned = from_torch(twin)
    assert isinstance(planned, nn.Sequential) and planned._plannable
    plain = _never_planning(planned)
    sizes = [8, 8, 8, 3, 8, 8, 8, 8]
    batches = [
        (x.repeat(1, 2), y % 3) for x, y in (_data(n, seed=60 + i) for i, n in enumerate(sizes))
    ]
    optimizers = [optim.RMSprop(m.parameters(), lr=0.01) for m in (planned, plain)]
    for step, batch in enumerate(batches):
        losses = [_steps(m, o, [batch]) for m, o in zip((planned, plain), optimizers, strict=True)]
        assert losses[0] == losses[1]
        if step % 3 == 2:  # mid-training, between a planned step and the next
            copies = [to_torch(m) for m in (planned, plain)]
            for p, q in zip(copies[0].parameters(), copies[1].parameters(), strict=True):
                assert torch.equal(p, q)
            with torch.no_grad():
                assert torch.equal(copies[0](batch[0]), copies[1](batch[0]))
    _assert_same_parameters(planned, plain)
    assert planned_backwards[0] >= 4
