"""``minidl._interrupts.holding_interrupts``: Ctrl-C and SIGTERM held back over a few steps that
must be done all or not at all, and delivered at the end, to the handlers there were before.

The signals are real ones (``signal.raise_signal`` sends one to the calling thread, as Ctrl-C
or ``kill`` would to the process), so the tests see what an interrupt does between two
bytecodes; each sets the handlers and the mask back as they were, whatever the outcome.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

from minidl import _interrupts
from minidl._interrupts import HELD_SIGNALS, holding_interrupts

_NUMBERS = (signal.SIGINT, signal.SIGTERM)


@pytest.fixture(autouse=True)
def _as_before() -> Iterator[None]:
    """The handlers and the mask as they were before each test, whatever it did."""
    before = {number: signal.getsignal(number) for number in _NUMBERS}
    mask = (
        signal.pthread_sigmask(signal.SIG_BLOCK, []) if hasattr(signal, "pthread_sigmask") else None
    )
    yield
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    for number, handler in before.items():
        signal.signal(number, handler)


class _TerminatedError(Exception):
    pass


def _terminate(number: int, frame: Any) -> None:
    raise _TerminatedError


@pytest.mark.parametrize("number", _NUMBERS, ids=["SIGINT", "SIGTERM"])
def test_a_signal_that_comes_meanwhile_is_raised_once_the_steps_are_done(number: int) -> None:
    """Each held signal, sent to this thread meanwhile, is raised at the end, to its own
    handler (KeyboardInterrupt for SIGINT, the command line's exception for SIGTERM), and only
    once: the steps after it ran, and the handlers and the mask are as before."""
    signal.signal(signal.SIGTERM, _terminate)
    before = {got: signal.getsignal(got) for got in _NUMBERS}
    mask = (
        signal.pthread_sigmask(signal.SIG_BLOCK, []) if hasattr(signal, "pthread_sigmask") else None
    )
    steps: list[str] = []
    expected = KeyboardInterrupt if number == signal.SIGINT else _TerminatedError
    with pytest.raises(expected), holding_interrupts():
        steps.append("before")
        signal.raise_signal(number)
        steps.append("after")
    assert steps == ["before", "after"]
    assert {got: signal.getsignal(got) for got in _NUMBERS} == before
    if mask is not None:
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask


def test_both_signals_that_came_reach_their_handlers() -> None:
    """SIGINT and SIGTERM, both sent meanwhile (twice each), each reach their handler once."""
    handled: list[int] = []
    for number in _NUMBERS:
        signal.signal(number, lambda got, frame: handled.append(got))
    with holding_interrupts():
        for number in (*_NUMBERS, *_NUMBERS):
            signal.raise_signal(number)
        assert handled == []
    assert sorted(handled) == sorted(_NUMBERS)


def test_where_no_signal_came_nothing_is_raised_and_all_is_as_before() -> None:
    handler = signal.signal(signal.SIGTERM, _terminate)
    assert frozenset(_NUMBERS) == HELD_SIGNALS
    before = {got: signal.getsignal(got) for got in _NUMBERS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with holding_interrupts():
        assert signal.getsignal(signal.SIGTERM) is not _terminate
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) >= HELD_SIGNALS
    assert {got: signal.getsignal(got) for got in _NUMBERS} == before
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask
    signal.signal(signal.SIGTERM, handler)


def test_without_pthread_sigmask_a_signal_is_noted_and_raised_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where signals cannot be blocked (Windows), the handler that notes them holds them back
    alone: the signal is raised once the handlers are back."""
    monkeypatch.delattr(signal, "pthread_sigmask")
    steps: list[str] = []
    with pytest.raises(KeyboardInterrupt), holding_interrupts():
        signal.raise_signal(signal.SIGINT)
        steps.append("after")
    assert steps == ["after"]
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_pthread_sigmask_every_signal_noted_reaches_its_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where signals cannot be blocked, those noted are raised one after the other at the end:
    a first whose handler raised (Ctrl-C's KeyboardInterrupt) skipped the rest, and a SIGTERM
    noted after it was lost. Each now reaches its handler; the last one's exception propagates,
    the first's as its context."""
    monkeypatch.delattr(signal, "pthread_sigmask")
    signal.signal(signal.SIGTERM, _terminate)
    with pytest.raises(BaseException) as info, holding_interrupts():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
    assert type(info.value) is _TerminatedError, repr(info.value)
    assert isinstance(info.value.__context__, KeyboardInterrupt)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is _terminate


def test_without_pthread_sigmask_a_signal_noted_twice_reaches_its_handler_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where signals cannot be blocked, a signal that came twice meanwhile is raised once at
    the end, as a blocked one is delivered once (a pending signal is not counted)."""
    monkeypatch.delattr(signal, "pthread_sigmask")
    calls: list[int] = []
    signal.signal(signal.SIGTERM, lambda number, frame: calls.append(number))
    with holding_interrupts():
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
        assert calls == []
    assert calls == [signal.SIGTERM]


def test_outside_the_main_thread_it_changes_nothing() -> None:
    """No handler runs in another thread, and ``signal.signal`` may not be called there: the
    holding is a no-op, and the steps run."""
    ran: list[BaseException | str] = []

    def steps() -> None:
        try:
            with holding_interrupts():
                ran.append("ran")
        except BaseException as error:  # (reported in the main thread)
            ran.append(error)

    thread = threading.Thread(target=steps)
    thread.start()
    thread.join()
    assert ran == ["ran"]


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="needs pthread_sigmask")
def test_every_handler_and_the_mask_are_put_back_where_one_put_back_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A signal handled just as the handlers were put back (SIGINT's, put back first, raising
    KeyboardInterrupt at once) skipped the rest: SIGTERM kept the handler that notes it and
    raises nothing, for good, and both stayed blocked in the main thread. Each is now put back whatever the one before raises."""
    numbers = (signal.SIGINT, signal.SIGTERM)
    before = {number: signal.getsignal(number) for number in numbers}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    put_back = signal.signal
    raised: list[int] = []

    def raising_once_put_back(number: int, handler: Any) -> Any:
        previous = put_back(number, handler)
        if handler is before.get(number) and not raised:  # (the first one put back)
            raised.append(number)
            raise KeyboardInterrupt
        return previous

    monkeypatch.setattr(signal, "signal", raising_once_put_back)
    with pytest.raises(KeyboardInterrupt), holding_interrupts():
        pass
    monkeypatch.undo()
    assert raised == [signal.SIGINT]
    assert {number: signal.getsignal(number) for number in numbers} == before
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="needs pthread_sigmask")
@pytest.mark.parametrize("interrupted", ["put back", "mask set back"])
def test_a_signal_another_thread_took_is_raised_whatever_the_end_raises(
    monkeypatch: pytest.MonkeyPatch, interrupted: str
) -> None:
    """A signal that another thread took meanwhile (noted by the handler there was meanwhile)
    reaches its own handler at the end even where the end raises first: a KeyboardInterrupt as the handlers are put back (a SIGINT handled just then), or the handler
    of a signal blocked meanwhile in the main thread, run as the mask is set back. Raised one by
    one after the mask, it was skipped then: a SIGTERM lost where it should end the process."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    handled: list[int] = []

    # Taken by another thread: SIGTERM where the put back raises, SIGINT where SIGTERM, blocked
    # in the main thread, raises as the mask is set back.
    taken, expected = (
        (signal.SIGTERM, KeyboardInterrupt)
        if interrupted == "put back"
        else (signal.SIGINT, _TerminatedError)
    )
    signal.signal(signal.SIGINT, lambda number, frame: handled.append(number))
    signal.signal(
        signal.SIGTERM,
        (lambda number, frame: handled.append(number)) if interrupted == "put back" else _terminate,
    )
    if interrupted == "put back":
        put_back = _interrupts._put_back

        def put_back_then_interrupted(handlers: Any) -> None:
            put_back(handlers)
            raise KeyboardInterrupt

        monkeypatch.setattr(_interrupts, "_put_back", put_back_then_interrupted)
    with pytest.raises(expected), holding_interrupts():
        signal.getsignal(taken)(taken, None)  # (as another thread's would, meanwhile)
        if interrupted == "mask set back":
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # (blocked: waits)
    monkeypatch.undo()
    assert handled == [taken]
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="needs pthread_sigmask")
def test_an_interrupt_as_the_handlers_are_replaced_leaves_every_handler_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGTERM handled just as SIGINT's handler had been replaced (its handler, as minidl's
    command line's, raising) left SIGINT with the handler that notes it, for good: the handler
    to put back was known only once the replacement had returned. Every handler and the mask
    are now as before, and the interrupt is raised."""
    numbers = (signal.SIGINT, signal.SIGTERM)
    signal.signal(signal.SIGTERM, _terminate)
    before = {number: signal.getsignal(number) for number in numbers}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    replace = signal.signal
    sent: list[int] = []
    steps: list[str] = []

    def replaced_then_terminated(number: int, handler: Any) -> Any:
        previous = replace(number, handler)
        if number == signal.SIGINT and handler is not before[number] and not sent:
            sent.append(signal.SIGTERM)
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # (as Python would, just then)
        return previous

    monkeypatch.setattr(signal, "signal", replaced_then_terminated)
    with pytest.raises(_TerminatedError), holding_interrupts():
        steps.append("ran")
    monkeypatch.undo()
    assert sent == [signal.SIGTERM]
    assert steps == []
    assert {number: signal.getsignal(number) for number in numbers} == before
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="needs pthread_sigmask")
@pytest.mark.parametrize("number", _NUMBERS, ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_as_any_call_of_the_holding_begins_is_raised_and_all_is_put_back(
    number: int,
) -> None:
    """Python runs a signal's handler as a function call begins, among other points. A signal
    taken by another thread (the main thread blocks it) and handled as each call of
    :mod:`minidl._interrupts` begins, in turn, is raised, at once or at the end, and every
    handler and the mask are as before. One handled as a handler was put back by a call of its
    own (SIGINT's handler back, the call for SIGTERM's beginning) left SIGTERM with the handler
    that notes it, for good: a SIGTERM then did nothing."""
    numbers = (signal.SIGINT, signal.SIGTERM)
    signal.signal(signal.SIGTERM, _terminate)
    before = {got: signal.getsignal(got) for got in numbers}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    expected = KeyboardInterrupt if number == signal.SIGINT else _TerminatedError
    tracer = sys.gettrace()
    calls: list[int] = []  # (the calls begun so far, in this run of the holding)

    def handled_at(which: int | None) -> Any:
        def trace(frame: FrameType, event: str, arg: Any) -> None:
            if event == "call" and frame.f_code.co_filename == _interrupts.__file__:
                calls.append(len(calls))
                if len(calls) - 1 == which:
                    signal.getsignal(number)(number, frame)  # (as Python would, just then)

        return trace

    sys.settrace(handled_at(None))
    with holding_interrupts():
        pass
    sys.settrace(tracer)
    count = len(calls)
    assert count >= 3  # (the start, the end, the handlers put back)
    for which in range(count):
        calls.clear()
        sys.settrace(handled_at(which))
        try:
            with pytest.raises(expected), holding_interrupts():
                pass
        finally:
            sys.settrace(tracer)
        assert {got: signal.getsignal(got) for got in numbers} == before, which
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask, which


def test_a_failure_at_every_attempt_to_put_a_handler_back_is_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The handlers are put back again after an interrupt; a failure that comes back at every
    attempt (no signal's) is raised after a bounded number of them, not tried for ever."""
    attempts: list[int] = []

    def refused(number: int, handler: Any) -> Any:
        attempts.append(number)
        raise OSError("refused")

    monkeypatch.setattr(signal, "signal", refused)
    with pytest.raises(OSError, match="refused"):
        _interrupts._put_back({signal.SIGINT: signal.default_int_handler})
    monkeypatch.undo()
    assert 1 < len(attempts) <= 100


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="needs pthread_sigmask")
def test_a_handler_python_did_not_set_is_left_in_place_and_its_signal_only_blocked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``signal.getsignal`` gives ``None`` for a handler that Python did not set (one a
    program embedding Python set in C before the interpreter started). Replaced, it could not
    be put back: it became SIG_DFL, and SIGTERM then ended the process at once. It is now left
    as it is, and the signal only blocked meanwhile."""
    getsignal = signal.getsignal
    monkeypatch.setattr(
        signal,
        "getsignal",
        lambda number: None if number == signal.SIGTERM else getsignal(number),
    )
    replaced: list[int] = []
    replace = signal.signal

    def noted_replace(number: int, handler: Any) -> Any:
        replaced.append(number)
        return replace(number, handler)

    monkeypatch.setattr(signal, "signal", noted_replace)
    with holding_interrupts():
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) >= HELD_SIGNALS
    assert replaced == [signal.SIGINT, signal.SIGINT]  # (replaced, then put back)
