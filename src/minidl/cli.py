"""The ``minidl`` command line: ``minidl train``, ``minidl reproduce``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import itertools
import math
import os
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, overload

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

__all__ = ["main"]

DTYPES = ("float32", "float64")
LOSSES = ("cross-entropy", "mse")
OPTIMIZERS = ("sgd", "adadelta")
SCHEDULERS = ("none", "step", "clr")
#: The epochs between two checkpoints of ``minidl train`` without ``--checkpoint-every``.
CHECKPOINT_EVERY = 10
#: The rounds per row of ``minidl reproduce`` without ``--rounds`` (nor ``--quick``).
ROUNDS = 5
#: The magnitude from which :func:`_readable` writes a number in scientific notation.
READABLE_BELOW = 1e6
#: :data:`minidl._validate.LONGEST_TEXT`, here where a usage error needs it without importing
#: torch (see :func:`_shown`).
_LONGEST_TEXT = 100

#: The most unrecognized arguments that a usage error names.
_MOST_UNRECOGNIZED = 10

_N = TypeVar("_N")


class _Terminated(KeyboardInterrupt):
    """``SIGTERM`` (``kill``, systemd, a CI timeout, a batch scheduler), raised by :func:`main`
    as an interrupt: the run stops as on Ctrl-C, through the same clean-up (workers stopped,
    staging folders and temporary files removed), with the shells' status for it, 128 + 15."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Meanwhile, ``SIGTERM`` raises :class:`_Terminated` in this process (in the main thread).
    The previous handler (and ``sys.unraisablehook``) is restored afterwards.

    A ``SIGTERM`` that comes while one is handled (the clean-up runs) is ignored: it would cut
    the clean-up short. An interrupt raised where Python drops exceptions (a weak reference's
    callback, a ``__del__``, which a garbage collection may run at any moment), ``SIGTERM``'s or
    Ctrl-C's ``KeyboardInterrupt``, is sent again as its signal once the hook has returned (see
    :func:`_send_once_out_of`), so that it is raised elsewhere: ``SIGTERM`` is sent once, then ``SIGKILL``, by those who send it, and a Ctrl-C lost so would
    let the run go on to its end. A process forked meanwhile (``minidl reproduce``'s workers)
    inherits the handler: there it ends the process, as ``SIGTERM`` does by default.

    A ``SIGTERM`` that the process ignores when it starts (``trap '' TERM`` in the shell that
    started it, ``nohup``-like wrappers) stays ignored, as Python leaves an ignored ``SIGINT``.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # (signal handlers belong to the main thread)
        return
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        yield  # (ignored by whoever started the process, `trap '' TERM`: it stays so)
        return
    owner = os.getpid()

    def terminate(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # a forked child: end as by default
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        elif not isinstance(sys.exc_info()[1], _Terminated):
            raise _Terminated

    unraisable = sys.unraisablehook
    main = threading.get_ident()

    def send_again(dropped: sys.UnraisableHookArgs) -> None:
        if isinstance(dropped.exc_value, KeyboardInterrupt) and os.getpid() == owner:
            number = signal.SIGTERM if isinstance(dropped.exc_value, _Terminated) else signal.SIGINT
            # (the hook Python called: this one, or another library's around it)
            hooks = {send_again.__code__, getattr(sys.unraisablehook, "__code__", None)}
            again = threading.Thread(
                target=_send_once_out_of,
                args=(hooks - {None}, main, owner, number),
                name="minidl-send-again",
                daemon=True,
            )
            again.start()
        else:
            unraisable(dropped)

    previous = signal.signal(signal.SIGTERM, terminate)
    sys.unraisablehook = send_again
    try:
        yield
    finally:
        # (kept ignored once the run's stop line is out: see _stop_line)
        ignored = signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        signal.signal(signal.SIGTERM, signal.SIG_IGN if ignored else previous)
        sys.unraisablehook = unraisable


#: The most seconds :func:`_send_once_out_of` waits for the hook to return.
_HOOK_SECONDS = 10.0


def _send_once_out_of(hooks: set[object], thread: int, process: int, number: int) -> None:
    """Send signal ``number`` to ``process`` once the thread ``thread`` runs none of the
    functions whose code objects are ``hooks`` (the unraisable hook that dropped an interrupt),
    :data:`_HOOK_SECONDS` at most; run in a thread of its own.

    Sent while the hook still runs, the signal's exception would be raised in it, where Python
    drops it again (to its default hook, which prints it: this one is not called again), and
    the run would go on to its end. A fixed delay (10 ms) was not enough: a loaded machine may
    take the main thread off its core for longer before the hook returns, and another library's
    hook around this one may run on after it.
    """
    deadline = time.monotonic() + _HOOK_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.005)
        frame = sys._current_frames().get(thread)
        while frame is not None and frame.f_code not in hooks:
            frame = frame.f_back
        if frame is None:  # (out of the hook, or the thread has ended)
            break
        del frame
    os.kill(process, number)


class _OutputNotWrittenError(Exception):
    """The help, the version or a usage that the standard output did not take, raised by
    :meth:`_ArgumentParser._print_message` with the write's ``OSError`` (``error``)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` that takes a value beginning with ``-`` and a number,
    ``inf`` or ``nan`` (``--lr -1e-3``, ``--lr -inf``, ``--hidden -3,4``) as the option's value,
    for its type to judge, as argparse takes ``-1`` and ``-0.5``: it took the others for an
    unknown option and refused the flag as given none ("argument --lr: expected one
    argument"). No option of minidl's begins so; its subcommands' parsers are of this class
    too (``add_subparsers`` makes them of the parser's class), and so is the parser of
    ``examples/digits.py``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(?:\.?\d|inf|nan)", flags=re.IGNORECASE)
        self._given: list[str] = []  # (the arguments being parsed, for error)

    @overload
    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: None = None
    ) -> tuple[argparse.Namespace, list[str]]: ...
    @overload
    def parse_known_args(
        self, args: Iterable[str] | None, namespace: _N
    ) -> tuple[_N, list[str]]: ...
    @overload
    def parse_known_args(self, *, namespace: _N) -> tuple[_N, list[str]]: ...

    def parse_known_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> Any:
        """As argparse parses, the arguments kept for :meth:`error` (a subcommand's parser is
        given its own)."""
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._given, namespace)

    @overload
    def parse_args(
        self, args: Iterable[str] | None = None, namespace: None = None
    ) -> argparse.Namespace: ...
    @overload
    def parse_args(self, args: Iterable[str] | None, namespace: _N) -> _N: ...
    @overload
    def parse_args(self, *, namespace: _N) -> _N: ...

    def parse_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> Any:
        """As argparse parses, but unrecognized arguments are named up to
        :data:`_MOST_UNRECOGNIZED` (then how many more): argparse named them all, a message
        as long as the command line (a megabyte for a hundred thousand words)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            named = " ".join(extras[:_MOST_UNRECOGNIZED])
            more = len(extras) - _MOST_UNRECOGNIZED
            self.error(f"unrecognized arguments: {named}" + (f" (and {more} more)" * (more > 0)))
        return parsed

    def error(self, message: str) -> NoReturn:
        """argparse's usage error, where an argument of more than 100 characters that it quotes
        whole (an unknown option or argument, an invalid choice, an ignored explicit argument:
        ``--quiet=TEXT``) is quoted by its start and length, as :func:`_shown` quotes one, and
        one with a character that is not printable (a newline, a byte that is no UTF-8), which
        it writes as it is in places, is quoted as ``repr`` quotes it: the error is one line."""
        parts = {part for given in self._given for part in _quotable(given)}
        for text in sorted(parts, key=len, reverse=True):
            if len(text) > _LONGEST_TEXT:
                message = message.replace(repr(text), _shown(text)).replace(text, _shown(text))
            elif not text.isprintable():
                message = message.replace(text, repr(text))
        super().error(message)

    def print_usage(self, file: SupportsWrite[str] | None = None) -> None:
        """As argparse prints the usage, to the standard error by default (argparse's default
        is the standard output), and nowhere where it was closed (``2>&-``): argparse's
        fall-back to the standard output wrote a usage error's usage into the results' file."""
        file = sys.stderr if file is None else file
        if file is not None:
            super().print_usage(file)

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        """As argparse prints the help, the version or a usage, but flushed, and a failure to
        write the standard output raised (:class:`_OutputNotWrittenError`), for :func:`main` to
        say (and no other ``OSError``, a broken torch's, for one of the output): argparse passed
        over it, and ``minidl --help > /dev/full`` exited 0 having written nothing. A failure to
        write the standard error (a usage error's) is passed over still: nothing can be said
        there, and the usage error's status, 2, says it.

        argparse gives the help and the version ``sys.stdout``, which is ``None`` where the
        standard output was closed (``minidl --help >&-``): that is the output not written
        (``EBADF``) too, where argparse wrote the help to the standard error with status 0."""
        if not message:
            return
        if file is None and sys.stdout is None and sys.stderr is not None:
            closed = OSError(errno.EBADF, os.strerror(errno.EBADF))
            raise _OutputNotWrittenError(closed)
        file = sys.stderr if file is None else file
        if file is None:  # (no standard stream at all: pythonw)
            return
        try:
            file.write(message)
            flush = getattr(file, "flush", None)
            if flush is not None:
                flush()
        except OSError as error:
            if file is not sys.stderr:
                raise _OutputNotWrittenError(error) from error


def _quotable(given: str) -> tuple[str, ...]:
    """The texts of an argument that argparse may quote in an error: the argument, its value
    after ``=`` (``--quiet=TEXT``), and, for one of a single ``-``, what follows its first
    letters (``-hTEXT``: ``-h`` and the value ``TEXT``, or the flags ``-h -T`` and ``EXT``)."""
    if given[:1] == "-" and given[1:2] != "-":
        return given, given.partition("=")[2], given[2:], given[3:]
    return given, given.partition("=")[2]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help, written as it would be typed (``25,25,25``);
    none for a flag, an option without a default, or a help that already states it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if default is None or isinstance(default, bool) or "default" in text:
            return text
        if isinstance(default, tuple):
            return f"{text} (default: {','.join(str(part) for part in default)})"
        return super()._get_help_string(action)


def _int(text: str, expected: str, given: str | None = None) -> int:
    """``int(text)``, or the flag's error ``expected ..., got ...`` (``given``: the text it
    quotes, ``text`` by default). An integer of more digits than Python converts from text
    (4300: ``int`` raises a ``ValueError`` of its own, as for text that is no integer) is named
    by its number of digits, as :func:`minidl._validate.shown` names a huge integer in a
    message, rather than taken for no integer and quoted whole."""
    try:
        return int(text)
    except ValueError:
        literal = re.fullmatch(r"\s*([+-]?)(\d+(?:_\d+)*)\s*", text, flags=re.ASCII)
        if literal is None:  # (no integer)
            quoted = text if given is None else given
            raise argparse.ArgumentTypeError(f"expected {expected}, got {_shown(quoted)}") from None
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    digits = literal[2].replace("_", "").lstrip("0") or "0"
    if not limit or len(digits) <= limit:  # (Python counted the leading zeros)
        return int(literal[1] + digits)
    magnitude = 10 ** (len(digits) - 1)  # (an int of as many digits, named as shown does)
    raise argparse.ArgumentTypeError(
        f"expected {expected}, got {_shown(-magnitude if literal[1] == '-' else magnitude)} "
        f"(more than Python converts from text: {limit})"
    )


def _readable(value: float, form: str) -> str:
    """``value`` in the format ``form`` (``.6f``) below :data:`READABLE_BELOW` in magnitude,
    in ``.4g`` from it on (a diverged run's loss, ``6.244e+30``, where ``.6f`` writes 31
    digits and 6 decimals) and for ``inf``, ``-inf`` and ``nan``, which it writes so."""
    if math.isfinite(value) and abs(value) < READABLE_BELOW:
        return format(value, form)
    return format(value, ".4g")


def _integer(text: str) -> int:
    return _int(text, "an integer")


def _positive_int(text: str) -> int:
    value = _int(text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {_shown(value)}")
    return value


def _threads(text: str) -> int:
    """A positive number of threads, at most the machine's CPUs (a pool of many thousands
    makes torch's thread library fail, or the process crash)."""
    value = _positive_int(text)
    cpus = os.cpu_count() or 1
    if value > cpus:
        raise argparse.ArgumentTypeError(
            f"expected at most this machine's {cpus} CPUs, got {_shown(value)}"
        )
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {_shown(value)}")
    return value


def _shown(value: object) -> str:
    """:func:`minidl._validate.shown` (imported when a message needs it, as this module imports
    the rest of minidl, and with it torch, where a command uses it: see :func:`main`)."""
    _import_torch()  # (held: see there)
    from minidl._validate import shown

    return shown(value)


def _shown_path(path: str) -> str:
    """:func:`minidl._validate.shown_path`, imported as :func:`_shown` imports ``shown``."""
    _import_torch()  # (held: see there)
    from minidl._validate import shown_path

    return shown_path(path)


def _positive_seconds(text: str) -> float:
    _import_torch()  # (held: see there)
    from minidl.distributed import MAX_TIMEOUT

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds > 0, got {_shown(text)}"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {_shown(text)}")
    if value > MAX_TIMEOUT:  # (inf too)
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds <= {MAX_TIMEOUT:g} (about 31 years: torch's timeouts "
            f"overflow beyond 9.2e9), got {_shown(text)}"
        )
    return value


def _number(
    expected: str,
    *,
    low: float,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = True,
) -> Callable[[str], float]:
    """An argparse type for a flag passed on to an optimizer or to ``fit``: a number in
    ``[low, high)`` (``(low, ...`` with ``low_open``, ``..., high]`` without ``high_open``) by
    their own rule
    (:func:`minidl._validate.check_real`), checked where the flag is read, so that the error
    names the flag (``expected`` describes the range)."""

    def parse(text: str) -> float:
        _import_torch()  # (held: see there)
        from minidl._validate import check_real

        try:
            return check_real(
                "", "", float(text), low=low, high=high, low_open=low_open, high_open=high_open
            )
        except ValueError:  # (not a number, NaN, an infinity or out of the range)
            raise argparse.ArgumentTypeError(f"expected {expected}, got {_shown(text)}") from None

    return parse


def _seed(text: str) -> int:
    _import_torch()  # (held: see there)
    from minidl._validate import SEED_RANGE

    low, high = SEED_RANGE
    value = _int(text, f"an integer in [{low}, {high}]")
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(
            f"expected an integer in [{low}, {high}] (a 64-bit seed, as torch's generators "
            f"take: a negative s is 2**64 + s), got {_shown(value)}"
        )
    return value


def _sizes(text: str) -> tuple[int, ...]:
    expected = "comma-separated positive integers such as 25,25,25"
    sizes = tuple(_int(part, expected, text) for part in text.split(","))
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected positive widths, got {_shown(text)}")
    return sizes


def _activation_names(text: str) -> tuple[str, ...]:
    _import_torch()  # (held: see there)
    from minidl.nn.builders import ACTIVATIONS, _normalised

    # Case, "_" and "-" ignored, as nn.activation does: leaky_relu and GELU-tanh are the keys
    # leakyrelu and gelutanh (which the checkpoint's settings keep).
    names = tuple(part.strip() for part in text.split(","))
    keys = tuple(_normalised(name) for name in names)
    for name, key in zip(names, keys, strict=True):
        if key not in ACTIVATIONS:
            raise argparse.ArgumentTypeError(
                f"unknown activation {_shown(name)}; valid names are "
                f"{', '.join(sorted(ACTIVATIONS))}"
            )
    return keys


def _add_train_parser(subparsers: argparse._SubParsersAction[_ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the paper's network once and print its train and test errors",
        description=(
            "Generate the paper's disk data set, build the 2-25-25-25-2 network, train it while "
            "logging the loss per epoch, and print the final train and test errors. With no "
            "argument it runs Table I's Tanh row: cross-entropy, SGD, lr 1e-2, 400 epochs, "
            "batches of 100."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--activation",
        type=_activation_names,
        default=("tanh",),
        help="hidden activation: sigmoid, tanh, relu, leakyrelu, elu, selu, gelu, gelutanh (GELU's "
        "tanh approximation) or silu, case, '_' and '-' ignored; or one per hidden layer, "
        "comma-separated (e.g. relu,tanh,relu)",
    )
    parser.add_argument("--loss", choices=LOSSES, default="cross-entropy", help="loss criterion")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="optimizer")
    parser.add_argument(
        "--lr",
        type=_number("a finite number in [0, inf)", low=0),
        default=1e-2,
        help="learning rate, a finite number >= 0",
    )
    parser.add_argument(
        "--momentum",
        type=_number("a number in [0, 1)", low=0, high=1),
        default=0.0,
        help="SGD momentum, in [0, 1)",
    )
    parser.add_argument(
        "--rho",
        type=_number("a number in [0, 1]", low=0, high=1, high_open=False),
        default=None,
        help="ADADELTA's decay rate of its running averages, in [0, 1] (default 0.9; with "
        "--optimizer adadelta only)",
    )
    parser.add_argument(
        "--eps",
        type=_number("a finite number in (0, inf)", low=0, low_open=True),
        default=None,
        help="ADADELTA's epsilon, added inside its square roots, > 0 (default 1e-6; with "
        "--optimizer adadelta only)",
    )
    parser.add_argument(
        "--max-grad-norm",
        type=_number("a finite number in (0, inf)", low=0, low_open=True),
        default=None,
        metavar="NORM",
        help="clip every step's gradients to this total 2-norm (default: no clipping)",
    )
    parser.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default="none",
        help="learning-rate schedule: step (halve every 10 epochs) or clr (triangular cyclical, "
        "between lr/10 and lr, 2 epochs up and 2 down)",
    )
    parser.add_argument("--epochs", type=_non_negative_int, default=400, help="training epochs")
    parser.add_argument("--batch-size", type=_positive_int, default=100, help="samples per batch")
    parser.add_argument(
        "--hidden", type=_sizes, default=(25, 25, 25), help="hidden layer widths, comma-separated"
    )
    parser.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="seed of data, weights and shuffling (each drawn from a seed of its own derived "
        "from it, as reproduce's round 0 of the same seed), an integer in [-2**63, 2**64 - 1] "
        "(a negative s is 2**64 + s, as for torch's generators: reproduce's round 0 of "
        "--seed 2**64 + s)",
    )
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="floating-point type")
    parser.add_argument(
        "--threads",
        type=_threads,
        default=1,
        metavar="N",
        help="torch's intra-op threads while training (default 1: the paper's network is so "
        "small that more threads only add synchronisation, which makes a step ten times slower "
        "and more when other processes share the cores; raise it for wide --hidden layers), at "
        "most the machine's CPUs. "
        "Not a setting of the run: a resumed run may take another",
    )
    parser.add_argument(
        "--log-every",
        type=_positive_int,
        default=None,
        metavar="N",
        help="print the loss, validation error and learning rate every N epochs, and at the "
        "last; not with --quiet (default: 1)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final errors")
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        default=None,
        help="save the whole training state to PATH every --checkpoint-every epochs and at the "
        "end (atomically: a crash leaves the previous checkpoint intact); needs safetensors: "
        "pip install 'minidl[checkpoint]'",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=None,  # (CHECKPOINT_EVERY, once it is known that a checkpoint is written)
        metavar="N",
        help=f"epochs between checkpoints (default: {CHECKPOINT_EVERY}), with --checkpoint or "
        "--resume",
    )
    parser.add_argument(
        "--resume",
        metavar="PATH",
        default=None,
        help="continue the run saved in PATH (same settings; --epochs may grow); it gives the "
        "numbers of an uninterrupted run launched alike (as many processes; with another number, "
        "or with or without torchrun, it goes on to rounding). Unless --checkpoint names another "
        "file, checkpoints keep going to PATH",
    )
    parser.add_argument(
        "--detect-anomaly",
        action="store_true",
        help="check every forward output and backward gradient and stop at the first NaN or "
        "infinity, naming the module (slower)",
    )
    parser.add_argument(
        "--dist-timeout",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="under torchrun only: how long a rank waits for the others before stopping with an "
        "error that names the ranks that died or hung (default: $MINIDL_DIST_TIMEOUT, else 60)",
    )
    parser.set_defaults(run=_run_train_launched)


def _add_reproduce_parser(
    subparsers: argparse._SubParsersAction[_ArgumentParser],
) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="re-run the paper's experiments (Tables I-III, Figures 1-3) and write a report",
        description=(
            "Re-run every experiment of the paper and write report.md, results.json and the "
            "figures into the --out folder (default results/). Needs matplotlib and, for the "
            "progress bar, tqdm: pip install 'minidl[reproduce]'."
        ),
        formatter_class=_HelpFormatter,
    )
    length = parser.add_mutually_exclusive_group()
    # --rounds defaults to ROUNDS in _run_reproduce: a default of None lets argparse refuse a
    # --rounds given with --quick even when it equals the default.
    length.add_argument(
        "--rounds",
        type=_positive_int,
        default=None,
        help=f"rounds per row (default: {ROUNDS})",
    )
    parser.add_argument(
        "--tables",
        default="1,2,3",
        help="which tables to run, comma-separated from 1,2,3 (or I,II,III)",
    )
    parser.add_argument("--out", default="results", help="output folder")
    parser.add_argument(
        "--seed",
        type=_integer,
        default=0,
        help="base seed of every round, any integer (each round's seeds are derived from it by "
        "SHA-256)",
    )
    length.add_argument(
        "--quick",
        action="store_true",
        help="1 round of 5 epochs per row: a smoke test of the pipeline (not with --rounds)",
    )
    parser.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="worker processes training rows side by side (default: the CPUs available); "
        "the numbers are the same for any value",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    parser.set_defaults(run=_run_reproduce)


def _version() -> str:
    """The installed distribution's version (its metadata: what ``pip`` installed), or, where
    none is installed (the source folder on ``sys.path``), :data:`minidl.__version__`."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("minidl")
    except PackageNotFoundError:
        import minidl

        return minidl.__version__


def build_parser() -> argparse.ArgumentParser:
    """The ``minidl`` argument parser."""
    parser = _ArgumentParser(
        prog="minidl",
        description="minidl: a mini deep-learning framework with hand-derived backpropagation.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train_parser(subparsers)
    _add_reproduce_parser(subparsers)
    return parser


def _check_eps_fits(eps: float | None, dtype_name: str) -> None:
    """Refuse an ``--eps`` beyond the range of ``--dtype``, or that it rounds to 0 (Adadelta
    would refuse it in its own words, naming no flag)."""
    if eps is None:
        return
    import torch

    from minidl.optim.adadelta import eps_refusal

    refusal = eps_refusal("--eps", eps, getattr(torch, dtype_name), f"--dtype {dtype_name}")
    if refusal is not None:
        raise ValueError(refusal)


def _run_train(args: argparse.Namespace) -> int:
    """:func:`_train` on ``--threads`` intra-op threads, torch's global generator and thread
    count put back afterwards as the caller had them. The run seeds the generator (its initial
    weights are drawn from it, and its checkpoints record it, so that a resumed run's are the
    uninterrupted run's bit for bit); without the putting back, main() called from a program,
    refused or not, left it reseeded."""
    import torch

    callers = torch.get_rng_state()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(args.threads)
        return _train(args)
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(callers)


def _train(args: argparse.Namespace) -> int:
    import torch

    from minidl._files import say
    from minidl.anomaly import AnomalyError, detect_anomaly
    from minidl.data import make_disk_data
    from minidl.experiments.seeds import round_seeds
    from minidl.nn import CrossEntropyLoss, MSELoss, mlp
    from minidl.nn.loss import Loss
    from minidl.optim import SGD, Adadelta, CyclicLR, StepDecay
    from minidl.optim.lr_scheduler import LRScheduler
    from minidl.optim.optimizer import Optimizer
    from minidl.train import EpochRecord, History, error_rate, fit

    if args.checkpoint_every is not None and args.checkpoint is None and args.resume is None:
        raise ValueError(
            f"--checkpoint-every {_shown(args.checkpoint_every)} applies with --checkpoint PATH or "
            "--resume PATH only (without them no checkpoint is written)"
        )
    if args.log_every is not None and args.quiet:  # (ignored, it would seem in force)
        raise ValueError(
            f"--log-every {_shown(args.log_every)} prints every N epochs and --quiet prints "
            "nothing but the final errors: give one of them"
        )
    log_every = 1 if args.log_every is None else args.log_every
    quiet = args.quiet or getattr(args, "silent_rank", False)  # (torchrun's ranks but rank 0)
    checkpoint_every = CHECKPOINT_EVERY if args.checkpoint_every is None else args.checkpoint_every
    dtype = getattr(torch, args.dtype)
    largest = torch.finfo(dtype).max
    if args.lr > largest:  # (the optimizer would refuse it in its own words)
        raise ValueError(
            f"--lr {_shown(args.lr)} is beyond the range of --dtype {args.dtype} (largest finite "
            f"value {largest:g})"
        )
    _check_eps_fits(args.eps, args.dtype)
    hidden = args.hidden
    activations = args.activation
    if len(activations) == 1:
        activations = activations * len(hidden)
    elif len(activations) != len(hidden):
        raise ValueError(
            f"--activation gives {len(activations)} names for {len(hidden)} hidden "
            f"layer{'s' * (len(hidden) != 1)}; "
            "give one name, or one per hidden layer"
        )
    _check_network_fits(hidden, args.dtype)
    # One seed a stream, derived from --seed as `minidl reproduce` derives its rounds' (round
    # 0's): seeded alike, the data's float64 draws and the weights' float32 draws read the same
    # outputs of the generator, so the first layer's weights were a function of the first
    # training points.
    seeds = round_seeds(args.seed % 2**64, 0)  # (-1 is 2**64 - 1, as for torch's generators)
    data = make_disk_data(seed=seeds.data, dtype=dtype)
    # (torch's global generator, which the checkpoints record: put back as the caller had it
    # once the run ends, see _run_train)
    torch.manual_seed(seeds.init)
    model = mlp((2, *hidden, 2), activations, dtype=dtype)
    # Under torchrun (see _run_train_launched): rank 0 alone prints and writes checkpoints.
    group = getattr(args, "process_group", None)
    rank = 0 if group is None else group.rank
    if group is not None:
        _check_batches_split(args.batch_size, len(data.train), group.world_size)
    criterion: Loss = CrossEntropyLoss() if args.loss == "cross-entropy" else MSELoss()
    optimizer: Optimizer
    adadelta = {"rho": args.rho, "eps": args.eps}
    if args.optimizer == "sgd":
        for name, value in adadelta.items():
            if value is not None:
                raise ValueError(f"--{name} applies to --optimizer adadelta only")
        optimizer = SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    else:
        if args.momentum:
            raise ValueError("--momentum applies to --optimizer sgd only")
        given = {name: value for name, value in adadelta.items() if value is not None}
        optimizer = Adadelta(model.parameters(), lr=args.lr, **given)
    scheduler: LRScheduler | None = None
    if args.scheduler == "step":
        scheduler = StepDecay(optimizer, step_size=10, gamma=0.5)
    elif args.scheduler == "clr":
        batches_per_epoch = -(-len(data.train) // args.batch_size)
        scheduler = CyclicLR(
            optimizer, base_lr=args.lr / 10, max_lr=args.lr, step_size_up=2 * batches_per_epoch
        )

    width = len(str(args.epochs))

    def log(record: EpochRecord) -> None:
        if quiet or ((record.epoch + 1) % log_every and record.epoch + 1 != args.epochs):
            return
        say(
            f"epoch {record.epoch + 1:>{width}}/{args.epochs}  "
            f"loss {_readable(record.train_loss, '.6f')}  "
            f"validation error {record.validation_error:6.2f}%  lr {record.lr:.3g}"
        )

    generator = torch.Generator().manual_seed(seeds.shuffle)
    history = History()
    start_epoch = 0
    settings = _train_settings(args)
    if args.checkpoint is not None or args.resume is not None:
        from minidl.checkpoint import _require_safetensors

        flag = "--checkpoint" if args.checkpoint is not None else "--resume"
        checkpoint_or_resumed = args.checkpoint if args.checkpoint is not None else args.resume
        try:  # (before training: a run would otherwise fail at its first save)
            _require_safetensors(f"{flag} {_shown_path(checkpoint_or_resumed)}")
        except ModuleNotFoundError as error:
            raise ValueError(str(error)) from None
    if args.resume is not None:
        from minidl.checkpoint import CheckpointError, load_checkpoint, read_checkpoint

        try:
            checkpoint = read_checkpoint(args.resume)
        except CheckpointError as error:  # named by its flag, as the errors below
            reason = str(error).removeprefix(f"read_checkpoint: checkpoint {args.resume!r}: ")
            raise CheckpointError(f"--resume {_shown_path(args.resume)}: {reason}") from None
        resumed = checkpoint.training  # (a new copy of the history and extra at each read)
        saved_settings = resumed.extra.get("settings")
        _check_resume_settings(args.resume, saved_settings, settings)
        saved_epochs = len(resumed.history.train_loss)
        if saved_epochs > resumed.epoch:
            # (read_checkpoint refuses it past epoch 0 already; at epoch 0, save_checkpoint takes
            # a history of another run, which this one's first save would refuse, once trained)
            raise ValueError(
                f"--resume {_shown_path(args.resume)}: the checkpoint's history holds "
                f"{saved_epochs} epochs, past its epoch {_shown(resumed.epoch)}: a "
                "run resumed from it would record its epochs after another run's, and its first "
                "checkpoint would be refused"
            )
        _check_resume_hyperparameters(
            args.resume,
            checkpoint.header.get("optimizer"),
            optimizer,
            args.lr if scheduler is None else None,
        )
        try:
            state = load_checkpoint(checkpoint, model, optimizer, scheduler, generator=generator)
        except CheckpointError as error:
            # One line naming the file (the model reprs and the Python hints that follow the
            # first line are for a program's author).
            reason = str(error).split("\n", 1)[0].removeprefix("load_checkpoint: ")
            if not isinstance(saved_settings, dict):
                reason = (
                    f"{reason.rstrip('.')}; this checkpoint was not written by minidl train (it "
                    "holds none of its settings)"
                )
            raise CheckpointError(f"--resume {_shown_path(args.resume)}: {reason}") from None
        if state.epoch > args.epochs:
            raise ValueError(
                f"--resume {_shown_path(args.resume)}: the checkpoint is at epoch "
                f"{_shown(state.epoch)}, past --epochs {_shown(args.epochs)}"
            )
        history, start_epoch = state.history, state.epoch
    checkpoint_path = args.checkpoint if args.checkpoint is not None else args.resume
    if checkpoint_path is not None:
        flag = "--checkpoint" if args.checkpoint is not None else "--resume"
        # (a finished run resumed into its own file saves nothing: evaluated where the file
        # lies on storage that takes none, it was refused)
        saves_any = start_epoch < args.epochs or checkpoint_path != args.resume
        _check_checkpoint_path(flag, checkpoint_path, writes=rank == 0 and saves_any)
    # Printed once every argument is checked: a refused run prints its error alone.
    if not quiet:
        say(f"model: {model}".replace("\n", "\n       "))
        say(
            f"loss: {criterion}   optimizer: {optimizer}"
            + (f"   scheduler: {scheduler}" if scheduler else "")
            + f"   dtype: {args.dtype}"
        )
        if args.resume is not None:
            say(f"resumed from {_shown_path(args.resume)} at epoch {start_epoch}")
    saves: list[int] = []  # the epochs of the saves this run has started

    def save(done: int) -> None:
        from minidl.checkpoint import save_checkpoint

        saves.append(done)
        save_checkpoint(
            checkpoint_path,
            model,
            optimizer,
            scheduler,
            epoch=done,
            history=history,
            generator=generator,
            extra={"settings": settings},
        )

    def on_epoch(record: EpochRecord) -> None:
        log(record)
        done = record.epoch + 1
        if (
            checkpoint_path is not None
            and rank == 0
            and (done % checkpoint_every == 0 or done == args.epochs)
        ):
            save(done)

    parallel = None
    if group is not None:
        from minidl.distributed import DataParallel

        parallel = DataParallel(model, group)  # every rank starts from rank 0's parameters
    watch = detect_anomaly(model, criterion) if args.detect_anomaly else contextlib.nullcontext()
    start = time.perf_counter()
    try:
        with watch:
            fit(
                model,
                criterion,
                optimizer,
                data.train.x,
                data.train.y,
                epochs=args.epochs,
                batch_size=args.batch_size,
                scheduler=scheduler,
                validation=(data.validation.x, data.validation.y),
                generator=generator,
                start_epoch=start_epoch,
                history=history,
                on_epoch=on_epoch,
                parallel=parallel,
                max_grad_norm=args.max_grad_norm,
            )
        # No epoch ran (--epochs 0, or a finished run resumed): the end's checkpoint is still
        # written, unless it is the resumed file itself, which already holds this state.
        if (
            checkpoint_path is not None
            and rank == 0
            and start_epoch == args.epochs
            and checkpoint_path != args.resume
        ):
            save(args.epochs)
        elapsed = time.perf_counter() - start
        if parallel is not None:
            parallel.check_in_sync()
        train_error = error_rate(model, data.train.x, data.train.y)
        test_error = error_rate(model, data.test.x, data.test.y)
    except AnomalyError as error:
        # (each rank checks its own shards: one other than 0 names itself, as its errors do)
        _to_stderr(f"minidl train: {f'rank {rank}: ' if rank else ''}anomaly detected: {error}")
        return 1
    except KeyboardInterrupt as interrupt:
        how, status = _stopped_by(interrupt)
        if rank == 0:
            saved = checkpoint_path if saves else None
            _stop_line(_interrupted(saved, args.resume, checkpoint_path, how), status)
        return status
    if rank == 0:
        say(f"final train error: {train_error:.2f}%")
        say(f"final test error: {test_error:.2f}%")
        diverged = next(
            (epoch for epoch, loss in enumerate(history.train_loss) if not math.isfinite(loss)),
            None,
        )
        if diverged is not None:
            loss = history.train_loss[diverged]
            hint = "try a smaller --lr, or --detect-anomaly to see where it started"
            # (an infinite loss may come from finite outputs, which still classify)
            if math.isnan(loss):
                hint = f"a model whose outputs are NaN errs on every sample ({hint})"
            _to_stderr(
                f"minidl train: warning: the training diverged (the loss was {loss} at epoch "
                f"{diverged + 1}); {hint}"
            )
    if not quiet:
        say(f"training time: {elapsed:.2f} s")
    return 0


def _check_batches_split(batch_size: int, samples: int, world_size: int) -> None:
    """Under torchrun, refuse a ``--batch-size`` that the ``world_size`` processes cannot split
    (see :class:`minidl.distributed.ShardedBatches`) before anything is printed, by its flag:
    every rank would refuse it in ``fit``, after rank 0 had printed the model."""
    if batch_size % world_size:
        raise ValueError(
            f"--batch-size {_shown(batch_size)} is not divisible by the {world_size} processes of "
            f"the launch (WORLD_SIZE); each takes 1/{world_size} of every batch: choose a "
            f"multiple of {world_size}"
        )
    from minidl.data import short_last_batch

    last = short_last_batch(samples, batch_size, world_size, drop_last=False)
    if last:
        raise ValueError(
            f"--batch-size {_shown(batch_size)} ends every epoch with a batch of {last} of the "
            f"{samples} training samples, fewer than the {world_size} processes of the launch "
            "(WORLD_SIZE), which take one sample each at least: choose another --batch-size"
        )


def _check_network_fits(hidden: tuple[int, ...], dtype: str) -> None:
    """Refuse ``--hidden`` widths whose parameters and their gradients alone (what the network
    holds once made: every :class:`~minidl.nn.Parameter` has its ``grad``) take more bytes
    than the machine has memory: torch's allocator fails, or the system ends the process as
    it fills the memory (with no message), or, for widths beyond 64 bits, torch's argument
    parsing fails (with a C++ stack in the message). ``dtype``: ``--dtype``."""
    import torch

    sizes = (2, *hidden, 2)
    count = sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(sizes))
    size = 2 * count * torch.empty((), dtype=getattr(torch, dtype)).element_size()
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):  # (not on this system)
        return
    if memory > 0 and size > memory:
        raise ValueError(
            f"--hidden {_as_typed(hidden)}: the network's {_shown(count)} parameters and their "
            f"gradients take {_shown(size)} bytes "
            f"({dtype}), more than this machine's memory ({memory} bytes)"
        )


def _check_checkpoint_path(flag: str, path: str, *, writes: bool) -> None:
    """Refuse, before training, a checkpoint path that cannot be written: empty, a folder (or
    ending in a separator, or in ``.`` or ``..``), and, on the process that ``writes`` it (rank
    0 alone, which may be on another machine than the other ranks, whose file system is not
    read), a loop of symbolic links, in a missing folder (for a symbolic link, its target's),
    a device, FIFO or socket (which a save would replace with a file), or in a folder where no
    file can be made, which is tried by making and removing a temporary file there."""
    from minidl._files import check_folder_takes_files, is_link_loop, special_file_kind
    from minidl._validate import LONGEST_PATH

    if (
        not path
        or path.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep))
        or os.path.basename(path) in (os.curdir, os.pardir)  # ("new/." would write "new")
    ):
        quoted = repr(path) if len(path) <= LONGEST_PATH else _shown(path)
        raise ValueError(f"{flag} {quoted}: expected a file path in an existing folder")
    if not writes:
        return
    if is_link_loop(path):  # (realpath gives it back: the save would replace the link)
        raise ValueError(
            f"{flag} {_shown_path(path)}: expected a file path, got a loop of symbolic links"
        )
    # A symbolic link: the save writes its target, whose folder is the one to check.
    real = os.path.realpath(path)
    folder = os.path.dirname(real)
    hint = "; give --checkpoint PATH to save elsewhere" if flag == "--resume" else ""
    try:
        os.stat(folder)
    except PermissionError as error:  # (a folder above it not searchable: it may well exist)
        raise ValueError(
            f"{flag} {_shown_path(path)}: cannot write into the folder {_shown_path(folder)} "
            f"({error.strerror or error})" + hint
        ) from None
    except (OSError, ValueError):
        pass  # (missing: refused just below)
    if not os.path.isdir(folder) or os.path.isdir(path):
        linked = f" (it links to {_shown_path(real)})" if os.path.islink(path) else ""
        raise ValueError(
            f"{flag} {_shown_path(path)}: expected a file path in an existing folder{linked}"
        )
    kind = special_file_kind(path)
    if kind is not None:  # (each save would replace it with a regular file)
        raise ValueError(f"{flag} {_shown_path(path)}: expected a file path, got a {kind}")
    name = os.path.basename(real)
    try:
        longest = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # (not on this system)
        longest = None
    if longest is not None and len(os.fsencode(name)) > longest:
        raise ValueError(
            f"{flag} {_shown_path(path)}: the file name is {len(os.fsencode(name))} bytes long, "
            f"longer than its folder takes ({longest})"
        )
    try:
        check_folder_takes_files(folder)
    except OSError as error:
        raise ValueError(
            f"{flag} {_shown_path(path)}: cannot write into the folder {_shown_path(folder)} "
            f"({error.strerror or error})" + hint
        ) from None
    if flag == "--checkpoint":
        from minidl.checkpoint import _foreign_file_size

        size = _foreign_file_size(path)
        if size is not None:  # (a mistyped path: the first save would replace the file)
            raise ValueError(
                f"{flag} {_shown_path(path)}: a file of {size} bytes is there that is no "
                "minidl checkpoint, and a save would replace it; give another path, or remove "
                "the file"
            )


def _interrupt_behind(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or ``SIGTERM`` (a :class:`KeyboardInterrupt`) that ``error`` was raised from
    or while handling (its ``__cause__`` and its ``__context__``, and theirs), if any: an
    error raised from another while the interrupt was handled has it as its context only."""
    seen: set[int] = set()  # (causes set by hand can loop)
    links: list[BaseException] = [error]
    while links:
        link = links.pop()
        if isinstance(link, KeyboardInterrupt):
            return link
        if id(link) in seen:
            continue
        seen.add(id(link))
        links.extend(behind for behind in (link.__context__, link.__cause__) if behind is not None)
    return None


def _stopped_by(interrupt: KeyboardInterrupt) -> tuple[str, int]:
    """How a run was stopped, in the words of its one line, and the exit status that a shell
    gives a command its signal ended (128 + the signal's number): ``interrupted`` and 130 for
    Ctrl-C (``SIGINT``), ``terminated`` and 143 for ``SIGTERM`` (:class:`_Terminated`)."""
    if isinstance(interrupt, _Terminated):
        return "terminated", 128 + signal.SIGTERM
    return "interrupted", 128 + signal.SIGINT


def _interrupted(
    saved: str | None, resumed: str | None, checkpoint: str | None, how: str = "interrupted"
) -> str:
    """The one line printed when ``minidl train`` is interrupted (Ctrl-C) or terminated
    (``SIGTERM``; ``how`` says which): where the last checkpoint is, read from the disk
    (``saved``: the checkpoint path once this run has started a save, whose file is the
    previous or the new one; else the ``resumed`` file)."""
    from minidl.checkpoint import CheckpointError, read_checkpoint

    for path in (saved, resumed):
        if path is None or not os.path.exists(path):
            continue
        try:
            epoch = read_checkpoint(path).training.epoch
        except CheckpointError:
            continue
        # The path as every message names it; in the command to continue with, as a shell
        # takes it (quoted where it holds a space or another character the shell would read),
        # unless that would split the line (a newline: then as the message names it).
        command = shlex.quote(path) if path.isprintable() else _shown_path(path)
        # (a path starting with '-' given as --resume's own argument: the parser would read
        # it as an option, "expected one argument")
        flag = "--resume=" if path.startswith("-") else "--resume "
        return (
            f"minidl train: {how}; the last checkpoint is {_shown_path(path)} (epoch {epoch}); "
            f"continue with the same options and {flag}{command}"
        )
    if checkpoint is None:
        return f"minidl train: {how}; no checkpoint (--checkpoint PATH saves one)"
    return f"minidl train: {how}; no checkpoint was written to {_shown_path(checkpoint)} yet"


#: The settings of `minidl train` that a resumed run must share with the saved one.
_RESUME_SETTINGS = (
    "activation",
    "loss",
    "optimizer",
    "lr",
    "momentum",
    "max_grad_norm",
    "scheduler",
    "batch_size",
    "hidden",
    "seed",
    "dtype",
    # (a run under it takes its steps unfolded, which round otherwise: see fit)
    "detect_anomaly",
)


#: How `minidl train` seeds the data, the weights and the shuffles, recorded in its
#: checkpoints' settings: from a seed each, derived from --seed (``round_seeds(seed, 0)``).
#: A checkpoint without it was written by a version that seeded all three with --seed itself.
_SEEDS = "derived"


def _train_settings(args: argparse.Namespace) -> dict[str, object]:
    settings: dict[str, object] = {
        name: list(value) if isinstance(value, tuple) else value
        for name in _RESUME_SETTINGS
        for value in [getattr(args, name)]
    }
    settings["seeds"] = _SEEDS
    return settings


#: Settings whose default is ``None`` (a checkpoint written before they existed ran without).
_OPTIONAL_SETTINGS = {"max_grad_norm": "none (no clipping)"}

#: Settings that a checkpoint written before they were recorded ran at their default (a run
#: with ``--detect-anomaly`` resumed from one cannot be told from one without: taken as off).
_UNRECORDED_DEFAULTS: dict[str, object] = {"detect_anomaly": False}


def _as_typed(value: object, name: str = "") -> str:
    """A setting as it is given on the command line (``25,25,25``, ``tanh``); a list whose
    text is of more than 100 characters (``--hidden`` of a thousand layers) as :func:`_shown`
    shows a long text, by its start and length."""
    if value is None:
        return _OPTIONAL_SETTINGS.get(name, "(not recorded)")
    if isinstance(value, bool):  # (a flag without a value: --detect-anomaly)
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return _typed_item(",".join(_typed_item(item) for item in value))
    return _typed_item(value)


def _typed_item(value: object) -> str:
    """A number or name as :func:`_as_typed` writes it: as typed, but an integer of many digits
    and a text of more than 100 characters (a checkpoint's, written by another program)
    as :func:`_shown` shows them (``an int of 5001 digits``, a text by its start and length)."""
    from minidl._validate import LONGEST_TEXT

    if isinstance(value, int) or (isinstance(value, str) and len(value) > LONGEST_TEXT):
        return _shown(value)
    return str(value)


def _meaning(settings: dict[str, object], name: str) -> object:
    """A setting as the network it builds reads it: ``--activation tanh`` is ``tanh`` for every
    hidden layer, so ``tanh,tanh,tanh`` is the same setting (and with another ``--hidden``,
    only ``--hidden`` differs); ``--seed -1`` is ``--seed 2**64 - 1``."""
    value = settings.get(name, _UNRECORDED_DEFAULTS.get(name))
    # (by equality, not a set: a checkpoint's list may hold lists, which no set takes)
    if name == "activation" and isinstance(value, list) and value[:1] * len(value) == value:
        return value[:1]
    if name == "seed" and type(value) is int:
        return value % 2**64  # (-1 is 2**64 - 1: see --seed)
    return value


def _check_resume_settings(path: str, saved: object, settings: dict[str, object]) -> None:
    """Refuse to resume a run saved with other settings (its numbers would differ)."""
    if not isinstance(saved, dict):
        return
    if "seeds" in settings and saved.get("seeds") != settings["seeds"]:
        raise ValueError(
            f"--resume {_shown_path(path)}: the checkpoint was made by an earlier minidl train, "
            "which seeded the data, the initial weights and the shuffles with --seed itself, "
            "where this version derives a seed for each from it (see --seed in minidl train "
            "--help): the resumed run would train on other data than the run it resumes"
        )
    differences = [
        f"--{name.replace('_', '-')} "
        f"{_as_typed(saved.get(name, _UNRECORDED_DEFAULTS.get(name)), name)} in the "
        f"checkpoint, {_as_typed(value, name)} now"
        for name, value in settings.items()
        if name != "seeds" and _meaning(saved, name) != _meaning(settings, name)
    ]
    if differences:
        why = ""
        if _meaning(saved, "detect_anomaly") != _meaning(settings, "detect_anomaly"):
            why = (
                " (a run under --detect-anomaly takes its steps in fit's loop, not folded: "
                "they round otherwise, and the resumed run would not give the numbers of the "
                "uninterrupted one)"
            )
        raise ValueError(
            f"--resume {_shown_path(path)}: the checkpoint was made with other settings: "
            + "; ".join(differences)
            + why
        )


#: The flag of `minidl train` that sets each optimizer hyper-parameter (the others keep their
#: defaults).
_HYPERPARAMETER_FLAGS = {"momentum": "--momentum", "rho": "--rho", "eps": "--eps"}


def _check_resume_hyperparameters(
    path: str, saved: object, optimizer: object, lr: float | None
) -> None:
    """Refuse to resume a checkpoint whose optimizer hyper-parameters differ from the ones this
    command line builds (set in a program of one's own between steps, say): loading would
    silently replace them, and the run would train and record other settings than its flags
    say. ``lr`` is the constant learning rate of a run without a scheduler (``None`` with
    one, whose rate changes), checked too. Another optimizer class is left to
    :func:`~minidl.checkpoint.load_checkpoint`."""
    from minidl.optim.optimizer import Optimizer

    if not isinstance(saved, dict) or not isinstance(optimizer, Optimizer):
        return
    name = type(optimizer).__name__
    hyperparameters = saved.get("hyperparameters")
    if saved.get("class") != name or not isinstance(hyperparameters, dict):
        return
    defaults = dict(optimizer.optional_hyperparameters)

    def typed(value: object) -> object:  # (as JSON keeps it: a tuple comes back a list)
        return list(value) if isinstance(value, tuple) else value

    ours = {key: typed(value) for key, value in {**defaults, **optimizer.hyperparameters()}.items()}
    theirs = {key: typed(value) for key, value in {**defaults, **hyperparameters}.items()}
    differences = []
    if lr is not None and saved.get("lr") != lr:
        differences.append(
            f"lr {_as_typed(saved.get('lr'))} in the checkpoint's {name}, --lr {lr} now"
        )
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) == theirs.get(key):
            continue
        flag = _HYPERPARAMETER_FLAGS.get(key)
        now = (
            f"{flag} {_as_typed(ours.get(key))} now"
            if flag is not None
            else f"{_as_typed(ours.get(key))} now (minidl train has no flag for it)"
        )
        differences.append(f"{key} {_as_typed(theirs.get(key))} in the checkpoint's {name}, {now}")
    if differences:
        raise ValueError(
            f"--resume {_shown_path(path)}: the checkpoint's optimizer has other settings than "
            "these flags "
            "(changed during the run that saved it?): " + "; ".join(differences)
        )


def _run_train_launched(args: argparse.Namespace) -> int:
    """``minidl train``, alone or as one rank of a ``torchrun`` launch.

    Under torchrun (``WORLD_SIZE`` set), join the process group (gloo on CPU), train
    data-parallel (each rank takes 1/N of every batch, see :mod:`minidl.distributed`) and leave
    the group. A rank that dies or hangs stops the others, within ``--dist-timeout``, with an
    error that names it (exit code 1). Alone, a ``--dist-timeout`` is refused, as the flags
    that apply with another flag only are.
    """
    from minidl.distributed import (
        DistributedError,
        ProcessGroup,
        launch_from_env,
        timeout_from_env,
    )

    launch = launch_from_env()
    if launch is None:
        if args.dist_timeout is not None:  # (ignored, it would let one think it is in force)
            raise ValueError(
                f"--dist-timeout {args.dist_timeout:g} applies under torchrun only (WORLD_SIZE "
                "is not set: this run is a single process, with no rank to wait for)"
            )
        return _run_train(args)
    timeout = args.dist_timeout if args.dist_timeout is not None else timeout_from_env()
    joined = False  # (until then, an error of the group's arguments is main's to report)
    try:
        # (an error leaves the with block: the group publishes it, and the other ranks, whose
        # next collective fails, quote it)
        with ProcessGroup(launch, device=getattr(args, "device", "cpu"), timeout=timeout) as group:
            joined = True
            args.process_group = group
            # (ranks other than 0 print nothing: not args.quiet, which the user's flags are
            # checked against)
            args.silent_rank = group.rank != 0
            return _run_train(args)
    except (ValueError, TypeError, KeyError) as error:
        if not joined or launch.rank == 0:
            raise  # reported by main
        _to_stderr(f"minidl train: rank {launch.rank}: error: {error}")
        return 2
    except DistributedError as error:
        _to_stderr(f"minidl train: error: {error}")
        # After a failed collective the communication threads can hold up the interpreter's exit
        # for seconds; nothing is left to clean up (the group is closed), so leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def _run_reproduce(args: argparse.Namespace) -> int:
    from concurrent.futures.process import BrokenProcessPool

    from minidl.experiments.runner import run_from_cli

    if args.rounds is None:
        args.rounds = ROUNDS
    try:
        return run_from_cli(args)
    except BrokenProcessPool as error:  # a worker killed (the out-of-memory killer): no traceback
        _to_stderr(f"minidl reproduce: error: {error}")
        return 1


def _out_of_memory(error: BaseException) -> str | None:
    """Why memory could not be had, where ``error`` says so, in one line (see
    :func:`minidl._memory.out_of_memory`), or ``None``.

    ``--hidden`` widths whose parameters and gradients fit in the machine's memory (see
    :func:`_check_network_fits`) may still take more than this process can have: the
    optimizer's state, the activations of a batch, a memory limit (``ulimit -v``)."""
    from minidl._memory import out_of_memory

    return out_of_memory(error)


def _file_error(error: OSError) -> str:
    """What a command's line says of ``error``, raised by the file system during the run:
    ``run.ckpt: No space left on device``, the file first (two for a rename), as ``cp`` and
    ``mv`` say it; the standard output in words (see :func:`minidl._files.say`)."""
    from minidl._files import STANDARD_OUTPUT

    names = [name for name in (error.filename, error.filename2) if isinstance(name, str)]
    # (a note says where the earlier run's files went, if they could not be put back)
    notes = "".join(f"; {note}" for note in getattr(error, "__notes__", ()))
    if not names or error.strerror is None:
        return str(error) + notes
    if names == [STANDARD_OUTPUT]:
        return f"cannot write to the standard output ({error.strerror}){notes}"
    return f"{' -> '.join(_shown_path(name) for name in names)}: {error.strerror}{notes}"


def _holding_interrupts() -> contextlib.AbstractContextManager[None]:
    """:func:`minidl._interrupts.holding_interrupts` (imported here, as it imports no torch)."""
    from minidl._interrupts import holding_interrupts

    return holding_interrupts()


def _import_torch() -> None:
    """Import torch, if it is not yet, with Ctrl-C and ``SIGTERM`` held back until it is done
    (a second or so; see :mod:`minidl._interrupts`).

    The exception of a signal raised inside the initialisation of one of the compiled modules
    that torch imports (numpy's, torch's own) left them half made: the run went on with the
    Ctrl-C lost (caught on the way), stopped on an ``ImportError`` of numpy's (``cannot load
    module more than once per process``) with its traceback, or aborted. Held, the interrupt is
    raised once torch is imported, and the command stops with its one line."""
    if "torch" not in sys.modules:
        with _holding_interrupts():
            import torch  # noqa: F401


def _to_stderr(text: str) -> None:
    """Print ``text`` to the standard error, or nowhere where it was closed (``2>&-``:
    ``sys.stderr`` is ``None``, and ``print(file=None)`` writes to the standard output, which
    may be the results' file)."""
    if sys.stderr is not None:
        print(text, file=sys.stderr)


def _output_gone() -> int:
    """Where the reader of the output went away (``minidl train | head -1``): the status, 1,
    of a command stopped quietly, with the rest of the output (and Python's flush at exit)
    sent nowhere."""
    with contextlib.suppress(OSError, ValueError):  # (a stdout that is no file: nothing to do)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1


#: Whether the run's one stop line was printed (by :func:`_stop_line`), and whether this is
#: the process's command (:func:`main` called without arguments, as the ``minidl`` script
#: calls it), which then ignores the signals that would stop it again.
_STOP = {"printed": False, "command": False, "status": 0}


def _stop_line(line: str, status: int) -> None:
    """Print the one line of a run stopped by Ctrl-C or ``SIGTERM``. A second signal after it
    neither prints a second line (:func:`_report_stop`) nor, in the ``minidl`` command, stops
    the clean-up or the interpreter's exit with a traceback: both are ignored from here on, the
    process about to exit with the status of the first."""
    if _STOP["command"] and threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
    _STOP.update(printed=True, status=status)
    _to_stderr(line)


def _report_stop(name: str, interrupt: KeyboardInterrupt) -> int:
    """Print the one line of a run that ``interrupt`` stopped, ``minidl train: interrupted``
    (``name``: ``minidl train``, or ``minidl`` before the command is known), unless a line was
    printed already (a second Ctrl-C during the clean-up after it: the first's status then),
    and return the shell's status for its signal (see :func:`_stopped_by`)."""
    if _STOP["printed"]:
        return int(_STOP["status"])
    how, status = _stopped_by(interrupt)
    _stop_line(f"{name}: {how}", status)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit code.

    A Ctrl-C ends it with one line and the status 130 (``SIGTERM``, during the command: 143)
    from the parsing of the arguments on, torch's import included: the package imports torch
    at the first use of its modules (see :mod:`minidl`), here, as a flag's type or the command
    first uses one, with the interrupt held back until it is imported (see
    :func:`_import_torch`)."""
    _STOP.update(printed=False, command=argv is None, status=0)
    # A character the output's encoding lacks (a path, under PYTHONIOENCODING=ascii or a C
    # locale) is printed escaped, as on stderr, rather than failing the command.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        with contextlib.suppress(ValueError, OSError):
            reconfigure(errors="backslashreplace")
    try:
        parser = build_parser()
        args = parser.parse_args(argv)  # (a flag's type may import torch: --lr, --activation)
        if args.command is None:
            # The usage and one line on stderr, as for any other usage error (exit status 2).
            parser.print_usage(sys.stderr)
            _to_stderr(f"{parser.prog}: error: give a command (minidl --help lists them)")
            return 2
        # Under torchrun, SIGTERM is how the launcher stops the ranks when one fails: it keeps
        # its default (a rank that raised would wait in a collective for the one that is gone).
        launched = args.command == "train" and "WORLD_SIZE" in os.environ
        if sys.stdout is None and (args.command == "train" or not args.quiet):
            # (closed, >&-: the final errors, or reproduce's summary, would go nowhere and the
            # command exit 0; refused before the work, as the help is)
            _to_stderr(
                f"minidl {args.command}: error: cannot write to the standard output "
                f"({os.strerror(errno.EBADF)})"
            )
            return 1
    except KeyboardInterrupt as interrupt:
        return _report_stop("minidl", interrupt)
    except _OutputNotWrittenError as failed:  # (the help or the version: see _print_message)
        if isinstance(failed.error, BrokenPipeError):  # (its reader went away: see below)
            return _output_gone()
        with contextlib.suppress(OSError):
            _to_stderr(
                f"minidl: error: cannot write to the standard output ({failed.error.strerror})"
            )
        return 1
    except ImportError as error:  # (an interrupt behind it, as after the command: see below)
        stopped = _interrupt_behind(error)
        if stopped is None:
            raise
        return _report_stop("minidl", stopped)
    try:
        with contextlib.nullcontext() if launched else _sigterm_as_interrupt():
            _import_torch()
            return int(args.run(args))
    except (ValueError, TypeError, KeyError) as error:
        _to_stderr(f"minidl {args.command}: error: {error}")
        return 2
    except BrokenPipeError:
        return _output_gone()
    except OSError as error:  # the file system, during the run (a checkpoint's folder removed)
        _to_stderr(f"minidl {args.command}: error: {_file_error(error)}")
        return 1
    except (MemoryError, RuntimeError) as error:
        reason = _out_of_memory(error)
        if reason is None:
            raise
        hint = "; a smaller --hidden or --batch-size takes less" if args.command == "train" else ""
        _to_stderr(f"minidl {args.command}: error: out of memory: {reason}{hint}")
        return 1
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM: the shell's status, no traceback
        return _report_stop(f"minidl {args.command}", interrupt)
    except ImportError as error:
        # A module imported late (torch, matplotlib's pyplot at the first figure) whose
        # initialisation an interrupt stopped: pybind11 and the like raise
        # ImportError('initialization failed') from it. The run stopped as on Ctrl-C or
        # SIGTERM, its clean-up done.
        stopped = _interrupt_behind(error)
        if stopped is None:
            raise
        return _report_stop(f"minidl {args.command}", stopped)
