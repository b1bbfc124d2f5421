"""A Ctrl-C or SIGTERM during ``fit`` waits for the training step it comes in to end.

Raised inside the optimizer's update, the interrupt left a step half done: Adam's moments of
step k + 1 written, the parameters and ``step_count`` those of step k (found 9 times in 120
runs interrupted at random moments). ``fit`` now notes the signal and raises it before the
next step, by the handler that was there (see ``minidl._interrupts.deferring_interrupts``).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.train import EpochRecord, fit

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals")

F64 = torch.float64


class Signalling(optim.SGD):
    """SGD with momentum that sends its process ``number`` as its update ``at`` begins."""

    def __init__(self, *args: Any, at: int, number: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at, self.number, self.updates = at, number, 0

    def _update(self, value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
        self.updates += 1
        if self.updates == self.at:
            os.kill(os.getpid(), self.number)
        super()._update(value, grad, state)


def _build(
    bias: bool, at: int = 0, number: int = signal.SIGINT
) -> tuple[nn.Sequential, Signalling]:
    """A network (with biases: fit folds its steps; without: step by step) and its optimizer,
    whose update ``at`` (0: none) sends signal ``number``."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 5, bias=bias, dtype=F64), nn.Tanh(), nn.Linear(5, 3, bias=bias, dtype=F64)
    )
    return model, Signalling(model.parameters(), lr=0.1, momentum=0.9, at=at, number=number)


def _train(model: nn.Sequential, optimizer: optim.Optimizer, epochs: int, **kwargs: Any) -> None:
    """Train on 12 samples in batches of 4: 3 steps an epoch."""
    x = torch.randn(12, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (12,), generator=torch.Generator().manual_seed(2))
    fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=epochs, batch_size=4,
        generator=torch.Generator().manual_seed(3), **kwargs)  # fmt: skip


def _same(first: tuple[nn.Sequential, optim.Optimizer], second: tuple[nn.Sequential, Any]) -> bool:
    """Whether two models and their optimizers hold the same numbers."""
    (model, optimizer), (other, other_optimizer) = first, second
    return (
        optimizer.step_count == other_optimizer.step_count
        and all(
            torch.equal(a.data, b.data)
            for a, b in zip(model.parameters(), other.parameters(), strict=True)
        )
        and all(
            torch.equal(a, b)
            for a, b in zip(optimizer.state.values(), other_optimizer.state.values(), strict=True)
        )
    )


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("bias", [True, False], ids=["folded", "step by step"])
def test_an_interrupt_in_the_update_is_raised_after_the_step(bias: bool, number: int) -> None:
    """A signal sent as the third update begins (the last of the first epoch): the step ends,
    the epoch ends, and the signal's handler raises before the next step; the model and the
    momentum are those of three whole steps (the update was skipped before, the step count
    left at 2). SIGTERM goes to a handler that raises, as the command line's does."""

    class TerminatedError(Exception):
        pass

    def terminate(signum: int, frame: object) -> None:
        raise TerminatedError

    reference = _build(bias)
    _train(*reference, epochs=1)
    interrupted = _build(bias, at=3, number=number)
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with pytest.raises(KeyboardInterrupt if number == signal.SIGINT else TerminatedError):
            _train(*interrupted, epochs=2)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert interrupted[1].step_count == 3
    assert _same(reference, interrupted)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_on_epoch_is_interrupted_as_the_signal_comes() -> None:
    """on_epoch, the caller's code, which may wait long, is not deferred: a Ctrl-C in it is
    raised there, at once."""
    model, optimizer = _build(True)
    reached: list[str] = []

    def waiting(record: EpochRecord) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # (the handler raises in the call, or as it returns)
        reached.append("after")

    with pytest.raises(KeyboardInterrupt):
        _train(model, optimizer, epochs=2, on_epoch=waiting)
    assert reached == []
    assert optimizer.step_count == 3


def test_an_interrupt_before_the_end_is_raised_at_the_end() -> None:
    """A signal in the last step of the call is raised as fit ends, the model trained and
    stored (the folded step copies its blocks back first)."""
    reference = _build(True)
    _train(*reference, epochs=1)
    interrupted = _build(True, at=3)
    with pytest.raises(KeyboardInterrupt):
        _train(*interrupted, epochs=1)
    assert _same(reference, interrupted)


class _Sending(optim.SGD):
    """SGD that sends its process SIGINT as its ``at``-th update begins (updates counted
    across every instance since ``_Sending.updates`` was set to 0)."""

    updates = 0
    at = 0

    def _update(self, value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
        type(self).updates += 1
        if type(self).updates == type(self).at:
            os.kill(os.getpid(), signal.SIGINT)
        super()._update(value, grad, state)


def _rounds(models: list[nn.Sequential], at: int, epochs: int) -> None:
    """Train three models at once by fit_rounds, each with its own optimizer (3 steps an
    epoch), the signal sent at update ``at`` (0: none)."""
    from minidl.rounds import PerModel, fit_rounds

    x = torch.randn(12, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (12,), generator=torch.Generator().manual_seed(2))
    _Sending.updates, _Sending.at = 0, at
    generators = [torch.Generator().manual_seed(10 + r) for r in range(len(models))]
    per_model = PerModel(lambda r, parameters: _Sending(parameters, lr=0.1, momentum=0.9))
    try:
        fit_rounds(models, nn.CrossEntropyLoss(), per_model, [(x, y)] * len(models),
                   epochs=epochs, batch_size=4, generators=generators)  # fmt: skip
    finally:
        _Sending.at = 0


def _models() -> list[nn.Sequential]:
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(nn.mlp((2, 4, 3), "tanh", dtype=F64))
    return models


def test_an_interrupt_in_fit_rounds_waits_for_every_models_update() -> None:
    """fit_rounds steps each model's optimizer in turn, and each updates its parameters one
    by one (4 here): SIGINT sent as the second model's second parameter's update of the third
    step begins left the first model stepped three times, the second part-way and the third
    twice. Now every model has its three steps, copied back."""
    reference, interrupted = _models(), _models()
    _rounds(reference, 0, epochs=1)
    with pytest.raises(KeyboardInterrupt):
        _rounds(interrupted, 2 * 12 + 4 + 2, epochs=2)
    for model, other in zip(reference, interrupted, strict=True):
        for a, b in zip(model.parameters(), other.parameters(), strict=True):
            assert torch.equal(a.data, b.data)


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_fit_rounds_copies_the_models_back_with_interrupts_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The copy of the stack back into the models runs with SIGINT and SIGTERM held (a second
    Ctrl-C in it left some models trained and the rest as they were)."""
    import minidl.rounds

    masks: list[set[int]] = []
    copy_back = minidl.rounds._copy_back

    def recording(*args: Any, **kwargs: Any) -> None:
        masks.append(set(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
        copy_back(*args, **kwargs)

    monkeypatch.setattr(minidl.rounds, "_copy_back", recording)
    _rounds(_models(), 0, epochs=1)
    assert len(masks) == 1
    assert {signal.SIGINT, signal.SIGTERM} <= masks[0]


class _Recording(optim.SGD):
    """SGD that records the handlers of SIGINT and SIGTERM as each update begins."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[object, object]] = []

    def _update(self, value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
        self.seen.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))
        super()._update(value, grad, state)


def test_only_python_handlers_are_deferred_and_every_handler_is_put_back() -> None:
    """Inside a step SIGINT's handler (Python's) notes it, SIGTERM's default action is left as
    it is (it ends the process at once, as torchrun's ranks keep it); on_epoch runs with the
    handlers as they were, and fit leaves them so."""
    model, _ = _build(True)
    optimizer = _Recording(model.parameters(), lr=0.1)
    in_on_epoch: list[object] = []
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        _train(
            model,
            optimizer,
            epochs=1,
            on_epoch=lambda record: in_on_epoch.append(signal.getsignal(signal.SIGINT)),
        )
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert optimizer.seen
    for on_int, on_term in optimizer.seen:
        assert on_int is not signal.default_int_handler
        assert on_term == signal.SIG_DFL
    assert in_on_epoch == [signal.default_int_handler]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class _Twice(optim.SGD):
    """SGD whose update ``at`` sends SIGINT twice before it updates anything."""

    def __init__(self, *args: Any, at: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at, self.updates = at, 0

    def _update(self, value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
        self.updates += 1
        if self.updates == self.at:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # (the second's handler raises here at the latest)
        super()._update(value, grad, state)


def test_a_second_ctrl_c_cuts_the_step() -> None:
    """A step that hangs or takes long is cut by pressing Ctrl-C again: the second signal is
    handed over at once, in the step (the first waits for the step to end)."""
    model, _ = _build(False)
    optimizer = _Twice(model.parameters(), lr=0.1, at=2)
    with pytest.raises(KeyboardInterrupt):
        _train(model, optimizer, epochs=1)
    assert optimizer.step_count == 1  # (the second step, cut in its update)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_handler_that_sets_another_keeps_it() -> None:
    """A first Ctrl-C's handler of one's own that stops gracefully and sets Python's default
    for a second one: the default is what fit leaves (the handler taken at the start was put
    back, and the second Ctrl-C went to the graceful one again)."""
    calls: list[int] = []

    def graceful(signum: int, frame: object) -> None:
        calls.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    model, optimizer = _build(True, at=2)
    previous = signal.signal(signal.SIGINT, graceful)
    try:
        _train(model, optimizer, epochs=1)
        after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert calls == [signal.SIGINT]
    assert after is signal.default_int_handler
    assert optimizer.step_count == 3  # (handled, raising nothing: the training went on)


def test_each_signal_reaches_a_handler_of_ones_own() -> None:
    """Two Ctrl-Cs in one step went to a handler that raises nothing as one call (the repeat
    was dropped): it is called once a signal, as without the deferral."""
    calls: list[int] = []
    model, _ = _build(False)
    optimizer = _Twice(model.parameters(), lr=0.1, at=2)
    previous = signal.signal(signal.SIGINT, lambda number, frame: calls.append(number))
    try:
        _train(model, optimizer, epochs=1)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert calls == [signal.SIGINT, signal.SIGINT]
    assert optimizer.step_count == 3


def test_a_signal_as_the_handlers_are_put_back_loses_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGTERM noted, then a Ctrl-C as its delivery puts the handlers back (raised there by
    Python's handler): the SIGTERM is raised too, the Ctrl-C's as its context (it was lost)."""
    import minidl._interrupts as interrupts

    class TerminatedError(Exception):
        pass

    def terminate(number: int, frame: object) -> None:
        raise TerminatedError

    put_back = interrupts._put_back
    sent: list[bool] = []

    def interrupted(handlers: Any) -> None:
        put_back(handlers)
        if not sent and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # (raised here at the latest)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with (
            pytest.raises(TerminatedError) as info,
            interrupts.deferring_interrupts() as deferred,
        ):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            assert deferred.noted == [signal.SIGTERM]
            monkeypatch.setattr(interrupts, "_put_back", interrupted)
            deferred.deliver()
    finally:
        monkeypatch.setattr(interrupts, "_put_back", put_back)
        signal.signal(signal.SIGTERM, previous)
    assert sent == [True]
    assert isinstance(info.value.__context__, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_fit_rounds_copies_back_while_interrupts_are_deferred(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The copy back into the models begins while the deferral still notes the signals (it was
    the outer block: between the deferral's end and the copy's hold, a second Ctrl-C left every
    model untrained)."""
    import minidl.rounds

    seen: list[object] = []
    holding = minidl.rounds.holding_interrupts

    def recording() -> Any:
        seen.append(signal.getsignal(signal.SIGINT))
        return holding()

    monkeypatch.setattr(minidl.rounds, "holding_interrupts", recording)
    _rounds(_models(), 0, epochs=1)
    assert len(seen) == 1
    assert seen[0] is not signal.default_int_handler
