"""The packages of minidl's extras, and the one error that names the extra to install.

minidl depends on torch alone. A few features need a package more, which an extra of the
``minidl`` distribution installs:

========================  ===============  ==========================================
package                   extra            needed by
========================  ===============  ==========================================
``matplotlib``            ``reproduce``    the figures of ``minidl reproduce``
``tqdm``                  ``reproduce``    its progress bar (not with ``--quiet``)
``safetensors``           ``checkpoint``   saving and reading a checkpoint
========================  ===============  ==========================================

They are imported where they are used, so that ``import minidl`` and what needs none of them
work without them; what needs one calls :func:`require` before any work (before a run trains
or writes a file), so that it fails at once, leaving nothing behind, with one line that says
what to install rather than Python's bare ``No module named ...`` from deep inside the run.
"""

from __future__ import annotations

import importlib

__all__ = ["EXTRAS", "require"]

#: The extra of the ``minidl`` distribution that installs each optional package.
EXTRAS = {"matplotlib": "reproduce", "tqdm": "reproduce", "safetensors": "checkpoint"}


def require(package: str, why: str, *, module: str | None = None) -> None:
    """Import ``module`` (default: ``package``, one of :data:`EXTRAS`); when it cannot be
    imported, raise a :class:`ModuleNotFoundError` (``name``: ``package``) whose message is
    ``why`` (where, and what needs the package) followed by what to install::

        {why}, and the {package} package is not installed; install minidl's {extra} extra:
        pip install 'minidl[{extra}]' (or pip install {package})

    A package that is installed but fails to import (for want of a package it needs itself)
    raises its own error, which names what is missing.

    Raises:
        KeyError: ``package`` is not one of :data:`EXTRAS`.
    """
    extra = EXTRAS[package]
    try:
        importlib.import_module(package if module is None else module)
    except ImportError as error:
        missing = error.name or ""
        if missing != package and not missing.startswith(f"{package}."):
            raise
        raise ModuleNotFoundError(
            f"{why}, and the {package} package is not installed; install minidl's {extra} "
            f"extra: pip install 'minidl[{extra}]' (or pip install {package})",
            name=package,
        ) from None
