"""Holding Ctrl-C and SIGTERM back over a few steps that must be done all or not at all.

A ``KeyboardInterrupt`` (Ctrl-C, or ``SIGINT`` from ``kill``) is raised between any two
bytecodes of the main thread, and so is the exception that minidl's command line raises for
``SIGTERM``. A few steps must not be cut in two by one:

- a file descriptor just opened, and not yet owned by a file object, would stay open for good
  (:mod:`minidl.checkpoint`'s temporary file);
- the files of a run moved into its folder one by one would be left half new and half old
  (:func:`minidl.experiments.runner.reproduce`);
- worker processes started, or being stopped, would outlive the pool that no longer knows
  them (:mod:`minidl.experiments.pool`).

Inside :func:`holding_interrupts` both signals are held back: blocked in the calling thread
(``pthread_sigmask``; processes started meanwhile inherit them blocked) and, where another
thread takes one, noted by a handler that raises nothing. At the end each is delivered, in the
calling thread, to the handler that was there before: the interrupt is raised once the steps
are done, never lost. Hold them only over steps that end soon: a Ctrl-C waits for them.

Signal handlers run in the main thread alone, so in any other thread nothing can be raised
by them, and :func:`holding_interrupts` does nothing there.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["HELD_SIGNALS", "Deferred", "deferring_interrupts", "holding_interrupts"]

#: The signals :func:`holding_interrupts` holds back.
HELD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})

#: A signal handler as ``signal.signal`` returns it.
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@contextlib.contextmanager
def holding_interrupts() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back meanwhile; deliver those that came at the end.

    In the main thread, each of :data:`HELD_SIGNALS` is blocked (where ``pthread_sigmask``
    exists) and its handler replaced by one that notes it (unless it is a handler that Python
    did not set, which could not be put back). On leaving, the handlers are put
    back, those noted are sent again to this thread while still blocked, and setting the mask
    back delivers them all together, each to its own handler (``KeyboardInterrupt`` for SIGINT
    as a rule), whatever one of them raises: Python runs the others as soon as it can. Raised
    one by one after the mask, a first that raised would skip the rest, as would a
    ``KeyboardInterrupt`` while the handlers are put back. Where signals cannot be blocked (as
    on Windows) those noted are raised again once the handlers are back, each whatever the one
    before it raised.

    Outside the main thread it does nothing (no handler runs there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    # The handlers and the mask as they are, read before any is changed: an interrupt raised as
    # they are changed still finds every one to put back. (Taken from what each replacement
    # returned, a handler replaced just before a SIGTERM's handler raised was never known, and
    # SIGINT kept the one that notes it, for good: Ctrl-C did nothing any more.)
    # A handler that Python did not set (``None``: one a program embedding Python set in C) is
    # not replaced, as it could not be put back: its signal is only blocked.
    handlers: dict[int, _Handler] = {
        number: handler
        for number in sorted(HELD_SIGNALS)
        if (handler := signal.getsignal(number)) is not None
    }
    blocking = hasattr(signal, "pthread_sigmask")
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, []) if blocking else set()
    try:
        for number in handlers:
            signal.signal(number, lambda got, frame: held.append(got))
        if blocking:
            signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
        yield
    finally:
        try:
            _put_back(handlers)
        finally:
            if not blocking:  # (nothing blocked: each is raised at once)
                _raise_each(list(dict.fromkeys(held)))
            else:
                # Those that another thread took are sent again to this thread, where they
                # wait, blocked, with those that came to it.
                try:
                    for taken in dict.fromkeys(held):
                        signal.pthread_kill(threading.get_ident(), taken)
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class Deferred:
    """The signals of :data:`HELD_SIGNALS` noted while :func:`deferring_interrupts` defers
    them, and the handlers they go to when :meth:`deliver` hands them over."""

    def __init__(self, *, active: bool = True) -> None:
        self._active = active  # (not outside the main thread, where no handler runs)
        self._handlers: dict[int, _Handler] = {}
        self.noted: list[int] = []

    def _note(self, number: int, frame: FrameType | None) -> None:
        self.noted.append(number)
        if len(self.noted) > 1:
            # (a second signal while a step runs: the user insists, and a step that hangs or
            # takes long is cut, as by a signal not deferred)
            self.deliver()

    def _defer(self) -> None:
        """Note the signals whose handlers are Python's, taken as they are now: a handler
        that ran, or the caller's code run :meth:`paused`, may have set others (a first
        Ctrl-C's handler that sets Python's default for the second), which are then the ones
        put back; a signal given the default action or ignored meanwhile is deferred no
        more."""
        if not self._active:
            return
        for number in sorted(HELD_SIGNALS):
            handler = signal.getsignal(number)
            if handler == self._note:
                continue
            if callable(handler):
                self._handlers[number] = handler
            else:
                self._handlers.pop(number, None)
        for deferred in self._handlers:
            signal.signal(deferred, self._note)

    def deliver(self) -> None:
        """Hand the signals noted so far to their handlers (``KeyboardInterrupt`` raised here,
        as a rule), then defer again. Called where the work may stop: one list read where none
        was noted."""
        if self.noted:
            taken, self.noted = self.noted, []  # (one noted meanwhile goes to the new list)
            try:
                _put_back(self._handlers)
            finally:
                try:
                    # (each as often as it came: a handler of one's own that raises nothing is
                    # called once a signal, as without the deferral)
                    _raise_each(taken)
                finally:
                    self._defer()  # (a handler of one's own that raised nothing: deferred again)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Meanwhile the signals go to their handlers as they come (code of the caller's, which
        may wait long, runs inside): those noted before are handed over first."""
        active, self._active = self._active, False  # (a signal meanwhile: not deferred again)
        try:
            try:
                _put_back(self._handlers)
            finally:
                # (after the handlers are back: one noted as they were put back goes too)
                taken, self.noted = self.noted, []
                _raise_each(taken)
            yield
        finally:
            self._active = active  # (never in a thread other than the main one)
            self._defer()


@contextlib.contextmanager
def deferring_interrupts(*, active: bool = True) -> Iterator[Deferred]:
    """Note SIGINT and SIGTERM meanwhile rather than handle them; hand them over where the
    :class:`Deferred` yielded is told to (:meth:`Deferred.deliver`), and at the end.

    For work of many short steps each of which must be done whole (a training step: the
    optimizer's update writes its state, then the parameters): an interrupt waits for the step
    it comes in to end, then is raised between two steps, by the handler that was there
    before. A second signal while one waits is handed over at once, with the first: a step
    that hangs, or takes long, is cut by pressing Ctrl-C again. Unlike
    :func:`holding_interrupts`, nothing is blocked, and the handlers are set once for the
    whole work (a step pays one list read). Only a signal whose handler is a Python function
    is deferred: the default action (``SIGTERM``'s, which ends the process at once, as
    torchrun's ranks keep it), an ignored signal and a handler that Python did not set are left
    as they are. Outside the main thread, or not ``active``, it defers nothing (the
    :class:`Deferred` yielded notes nothing, and its :meth:`~Deferred.paused` changes nothing)."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield Deferred(active=False)
        return
    deferred = Deferred()
    try:
        deferred._defer()
        yield deferred
    finally:
        # (first: a signal as the handlers are put back must not defer them again, for good)
        deferred._active = False
        try:
            _put_back(deferred._handlers)
        finally:
            taken, deferred.noted = deferred.noted, []
            _raise_each(taken)


def _put_back(handlers: dict[int, _Handler]) -> None:
    """Set each signal's handler back, every one even where one set back raises (a signal
    taken meanwhile by another thread, handled at once by the handler just put back:
    ``KeyboardInterrupt``): the others would keep :func:`holding_interrupts`'s, which notes
    them and raises nothing, for good. What was raised is raised again once all are back.

    One loop in one ``try``, taken again from the start after an interrupt: an interrupt is
    raised between any two bytecodes, and where each was put back by a call of its own (a call
    in a ``finally``), one raised as that call began, before its ``try``, skipped the rest.
    A failure that comes back at every attempt (no interrupt: it does not come from a signal)
    ends the attempts after a hundred, and is raised."""
    interrupt: BaseException | None = None
    for _ in range(100):
        try:
            for number, handler in handlers.items():
                signal.signal(number, handler)
            break
        except BaseException as error:
            interrupt = error if interrupt is None else interrupt
    if interrupt is not None:
        try:
            raise interrupt
        finally:
            # (this frame, in the interrupt's traceback, would hold it: a cycle that kept every
            # frame the interrupt went through, and what they hold, until the cyclic collector)
            del interrupt


def _raise_each(numbers: list[int]) -> None:
    """Raise each signal of ``numbers`` in this thread, in order, every one even where the
    handler of one raises (the next is raised in its ``finally``, and what the last handler
    raised propagates, the earlier ones as its context): in a loop, a first
    ``KeyboardInterrupt`` would skip a ``SIGTERM`` noted after it."""
    if numbers:
        try:
            signal.raise_signal(numbers[0])
        finally:
            _raise_each(numbers[1:])
