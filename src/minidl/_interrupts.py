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

__all__ = ["HELD_SIGNALS", "holding_interrupts"]

#: The signals :func:`holding_interrupts` holds back.
HELD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})

#: A signal handler as ``signal.signal`` returns it.
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@contextlib.contextmanager
def holding_interrupts() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back meanwhile; deliver those that came at the end.

    In the main thread, each of :data:`HELD_SIGNALS` is blocked (where ``pthread_sigmask``
    exists) and its handler replaced by one that notes it. On leaving, the handlers are put
    back, those noted are sent again to this thread while still blocked, and setting the mask
    back delivers them all together, each to its own handler (``KeyboardInterrupt`` for SIGINT
    as a rule), whatever one of them raises: Python runs the others as soon as it can. Raised
    one by one after the mask, a first that raised would skip the rest, as would a
    ``KeyboardInterrupt`` while the handlers are put back. Where signals cannot be blocked (as
    on Windows) those noted are raised again once the handlers are back.

    Outside the main thread it does nothing (no handler runs there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    handlers: list[tuple[int, _Handler]] = []  # (each signal's handler before, as it is replaced)
    mask: set[int | signal.Signals] | None = None
    try:
        for number in sorted(HELD_SIGNALS):
            handlers.append((number, signal.signal(number, lambda got, frame: held.append(got))))
        if hasattr(signal, "pthread_sigmask"):
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
        yield
    finally:
        try:
            _put_back(handlers)
        finally:
            if mask is None:  # (nothing blocked: each is raised at once)
                for taken in dict.fromkeys(held):
                    signal.raise_signal(taken)
            else:
                # Those that another thread took are sent again to this thread, where they
                # wait, blocked, with those that came to it.
                try:
                    for taken in dict.fromkeys(held):
                        signal.pthread_kill(threading.get_ident(), taken)
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _put_back(handlers: list[tuple[int, _Handler]]) -> None:
    """Set each signal's handler back, every one even where one set back raises at once (a
    signal taken meanwhile, by a handler that raises: ``KeyboardInterrupt``): the others would
    keep :func:`holding_interrupts`'s, which notes them and raises nothing, for good."""
    if not handlers:
        return
    (number, handler), rest = handlers[0], handlers[1:]
    try:
        signal.signal(number, signal.SIG_DFL if handler is None else handler)
    finally:
        _put_back(rest)
