"""Keep freed memory in the process (glibc's ``mallopt``), for the command line's long runs.

PyTorch's CPU tensors come from ``malloc``. With glibc's defaults, a block of 128 KiB or more
is mapped fresh from the system and unmapped when freed, and free memory at the top of the
heap is given back above a threshold; so a training loop whose tensors are that large (a
stack of ``minidl reproduce``, 15 to 25 models, holds up to 25 x 1000 x 25 floats, 2.5 MB, in
every validation layer) page-faults on every step: about a third of the time of a row of
Table I stacked alone (its 5 rounds, 500 KB a layer).
:func:`keep_freed_memory` raises both thresholds, so that freed blocks are reused instead.

It changes the whole process, for good (glibc cannot say what the thresholds were), so the
library never calls it on its own in training: ``minidl reproduce`` does (its process and its
workers are its own), through :func:`minidl.experiments.runner.reproduce`, which a program that
calls it runs in its own process too. A program that trains stacks of models can
call it, or set the same thresholds before Python starts with glibc's environment variables
``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456``. Elsewhere than on glibc
(macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

# glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Blocks below this come from the heap, whose freed memory is reused (glibc's maximum, 32 MiB).
MMAP_THRESHOLD = 32 * 2**20
#: Free memory at the top of the heap is given back to the system beyond this.
TRIM_THRESHOLD = 256 * 2**20


def keep_freed_memory() -> bool:
    """Make glibc reuse freed blocks up to 32 MiB and keep up to 256 MiB of free heap.

    Returns:
        Whether the settings were applied (``False`` where the C library is not glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
