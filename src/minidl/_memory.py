"""Telling an allocation that failed for want of memory from other errors, and saying why.

torch's CPU allocator raises a ``RuntimeError`` whose words begin with where its check failed,
``[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory:
you tried to allocate 1600000000000 bytes. Error code 12 (Cannot allocate memory)``; a GPU's,
``torch.OutOfMemoryError`` (a ``RuntimeError`` too); Python, ``MemoryError``. A message of
minidl's gives the reason in one line, without the place in torch's C++ sources.

This module imports no torch (the command line asks it before torch may be imported).
"""

from __future__ import annotations

import re
import sys

__all__ = ["out_of_memory"]

#: The words of torch's CPU allocator when it cannot have the memory asked for.
_CPU_WORDS = ("can't allocate memory", "not enough memory")
#: Where torch's check failed and what it checked (``err == 0.``, ``data.``), before the
#: allocator's words.
_ENFORCE_PREFIX = re.compile(r"^\[enforce fail at [^\]]*\][^.]*\.\s*")


def out_of_memory(error: BaseException) -> str | None:
    """Why memory could not be had, where ``error`` says so, in one line: torch's allocator's
    words (on the CPU without the ``[enforce fail at ...]`` prefix; a GPU's
    ``OutOfMemoryError``) or ``MemoryError`` and Python's words; ``None`` for any other error.
    """
    if isinstance(error, MemoryError):
        return f"{type(error).__name__} {error}".strip()
    if not isinstance(error, RuntimeError):
        return None
    torch = sys.modules.get("torch")
    gpu = getattr(torch, "OutOfMemoryError", None)
    text = str(error).split("\n", 1)[0]
    if (isinstance(gpu, type) and isinstance(error, gpu)) or any(
        words in text for words in _CPU_WORDS
    ):
        return _ENFORCE_PREFIX.sub("", text)
    return None
