"""minidl: a mini deep-learning framework with explicit, hand-derived backpropagation.

Built from PyTorch tensor operations alone (none of PyTorch's ``nn`` or ``autograd`` modules):
every module computes its own backward pass.

>>> import minidl
>>> from minidl import nn, optim
>>> model = nn.Sequential(nn.Linear(2, 25), nn.Tanh(), nn.Linear(25, 2))

The names of ``__all__`` are imported at their first use (``minidl.nn``, ``from minidl import
nn``, ``minidl.AnomalyError``; PEP 562), and with them torch: ``import minidl`` alone imports
neither, so that the command line (:mod:`minidl.cli`, a module of this package) starts before
torch does, and a Ctrl-C while torch is imported, a second or so, ends it with its one line
rather than a traceback; ``minidl --help`` and ``minidl --version`` import no torch at all.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from minidl import anomaly as anomaly
    from minidl import checkpoint as checkpoint
    from minidl import data, nn, optim
    from minidl import interop as interop
    from minidl import rounds as rounds
    from minidl import train as train
    from minidl.anomaly import AnomalyError, detect_anomaly
    from minidl.gradcheck import GradcheckError, gradcheck

__version__ = "0.1.0"

__all__ = [
    "AnomalyError",
    "GradcheckError",
    "__version__",
    "data",
    "detect_anomaly",
    "gradcheck",
    "nn",
    "optim",
]

#: The submodules imported at their first use as names of the package (``anomaly`` too, which
#: ``import minidl`` imported when it imported every name; and those the docs name by their
#: dotted path, ``minidl.train.fit``, which ``from minidl import *`` leaves alone; not
#: ``distributed``, which a torch built without ``torch.distributed`` cannot import, so that
#: ``dir()``, ``hasattr`` and ``help(minidl)`` hold there).
_SUBMODULES = frozenset(
    {"anomaly", "checkpoint", "data", "interop", "nn", "optim", "rounds", "train"}
)

#: The module that defines each other name of ``__all__``, imported at its first use.
_DEFINED_IN = {
    "AnomalyError": "minidl.anomaly",
    "GradcheckError": "minidl.gradcheck",
    "detect_anomaly": "minidl.anomaly",
    "gradcheck": "minidl.gradcheck",
}


def __getattr__(name: str) -> Any:
    """``name`` of :data:`_SUBMODULES` or :data:`_DEFINED_IN`, imported (and kept, so that it
    is looked up here once); any other name is missing, as from a module without
    ``__getattr__``."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")  # (which sets it here)
    where = _DEFINED_IN.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})


class _Package(types.ModuleType):
    """This package's class: ``minidl.gradcheck`` stays the function :func:`gradcheck` once
    its module, ``minidl.gradcheck``, is imported. The import system sets each submodule
    imported on its package under its name, and would set that module in the function's place
    (``from minidl.gradcheck import GradcheckError`` first, then ``minidl.gradcheck(...)``:
    'module' object is not callable); imported with the package, the function came after it."""

    def __setattr__(self, name: str, value: object) -> None:
        if (
            isinstance(value, types.ModuleType)
            and _DEFINED_IN.get(name) == value.__name__
            and hasattr(value, name)
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
