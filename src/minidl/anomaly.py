"""Anomaly detection: stop at the first NaN or infinity, and say which module made it.

Inside ``with detect_anomaly(model, criterion):`` every module of ``model`` and ``criterion``
(children and grandchildren included) checks its forward inputs and outputs and, in the backward
pass, the gradient it receives, the gradient it returns and the gradients it accumulated into its
own parameters. The first non-finite value raises an :class:`AnomalyError` naming the module by
its path in the model (``Sequential[3]: Tanh``), the pass (``forward`` or ``backward``), what was
checked, the first bad index and its value. Modules are wrapped for the duration of the ``with``
block only (their ``forward``, ``backward`` and ``backward_parameters`` are replaced on the
instances and restored on exit), so outside it nothing is checked and nothing costs anything.

``with detect_anomaly():`` with no module switches on a flag that every
:class:`~minidl.nn.Sequential` reads once per ``forward``/``backward`` call: while it is on, a
``Sequential`` checks the output (and the returned gradient) of each of its layers, nested
``Sequential`` layers included (also inside another layer, such as a ``Residual``'s block), and
the path is relative to the outermost ``Sequential`` called.
Losses and other containers are checked only in the first form.

Example:
    >>> model = nn.Sequential(nn.Linear(2, 3), nn.Tanh())
    >>> with detect_anomaly(model):
    ...     model(torch.tensor([[float("nan"), 0.0]]))
    Traceback (most recent call last):
    ...
    minidl.anomaly.AnomalyError: forward input of Sequential: non-finite value nan at index (0, 0) ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from minidl.nn._checks import given_module
from minidl.nn.module import REPLACED, TRIAL, Module, own_method

if TYPE_CHECKING:
    from minidl.nn.sequential import Sequential

__all__ = ["AnomalyError", "detect_anomaly", "enabled"]

#: The methods that the module form replaces on each instance, for the duration of the block;
#: each check is noted in :data:`minidl.nn.module.REPLACED` with its module and what it
#: replaced there (see :func:`checks_only`; a copy or a pickle of the module leaves it out).
_WRAPPED = ("forward", "backward", "backward_parameters")

#: Whether the module-less form is active; :class:`~minidl.nn.Sequential` reads it once per call.
enabled: bool = False

#: In the module-less form, while a layer that holds ``Sequential`` modules runs (a
#: ``Residual``'s block): their paths, by ``id``. The layer calls their ``forward`` and
#: ``backward`` itself, so they would otherwise take themselves for the outermost one.
_paths: dict[int, str] = {}


class AnomalyError(RuntimeError):
    """A non-finite value met while anomaly detection is on.

    Attributes:
        module: the module's path and type, e.g. ``"Sequential[3]: Tanh"``.
        pass_: ``"forward"`` or ``"backward"``.
        what: what held the value, e.g. ``"output"``, ``"returned gradient"``.
        index: the index of the first non-finite element (``()`` for a 0-dim tensor).
        value: that element.
        shape: the shape of the tensor that held it.

    It pickles and copies with its attributes (an error raised in a worker process comes back
    to the parent whole).
    """

    def __init__(
        self, module: str, pass_: str, what: str, index: tuple[int, ...], value: float, shape: Any
    ) -> None:
        self.module = module
        self.pass_ = pass_
        self.what = what
        self.index = index
        self.value = value
        self.shape = tuple(shape)
        super().__init__(
            f"{pass_} {what} of {module}: non-finite value {value} at index {index} "
            f"(shape {self.shape})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # (BaseException's would call __init__ with the message alone)
        arguments = (self.module, self.pass_, self.what, self.index, self.value, self.shape)
        return type(self), arguments, self.__dict__


def may_follow_a_run(error: BaseException) -> bool:
    """Whether ``error``, raised by a module's forward, may come after the module ran (and
    cached its input): an interruption (``KeyboardInterrupt``), or this module's check of the
    output. A module's own refusal of its input comes before it changes anything."""
    return not isinstance(error, Exception) or isinstance(error, AnomalyError)


def check_finite(tensor: object, module: str, pass_: str, what: str) -> None:
    """Raise :class:`AnomalyError` if ``tensor`` is a floating tensor with a NaN or infinity.
    A tensor without values (a meta one) is not read, nor one of another layout (sparse,
    nested), which the modules refuse in their own words."""
    if (
        not isinstance(tensor, Tensor)
        or not tensor.is_floating_point()
        or tensor.layout is not torch.strided
        or tensor.is_nested
        or tensor.is_meta
    ):
        return
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return
    position = (~finite).nonzero()[0]
    index = tuple(int(i) for i in position)
    raise AnomalyError(module, pass_, what, index, float(tensor[index]), tensor.shape)


def _check_each(value: object, module: str, pass_: str, what: str) -> None:
    """:func:`check_finite` of ``value``, or of each tensor of a tuple or list of them (the
    outputs of a forward of several, the gradients of a backward of several inputs), each
    named by its position (``output 1``)."""
    if isinstance(value, tuple | list):
        for position, item in enumerate(value):
            check_finite(item, module, pass_, f"{what} {position}")
    else:
        check_finite(value, module, pass_, what)


def _check_parameters(module: Module, label: str) -> None:
    for name, parameter in module._parameters.items():
        check_finite(parameter.grad, label, "backward", f"gradient of parameter {name!r}")


def _child_path(path: str, name: str) -> str:
    return f"{path}[{name}]" if name.isdigit() else f"{path}.{name}"


def _label(path: str, module: Module, is_root: bool) -> str:
    return type(module).__name__ if is_root else f"{path}: {type(module).__name__}"


def checks_only(module: Module, name: str) -> bool:
    """Whether the method ``name`` set on the instance of ``module`` is the check of a
    :func:`detect_anomaly` block still open (or the checks of nested ones) over the method of
    its class, with no method of one's own beneath: then the module computes as its class does.
    ``False`` for a method set otherwise, under a check or not."""
    method: Any = module.__dict__.get(name)
    return method is not None and own_method(module, method) is None


def _wrap(module: Module, label: str, own: dict[str, Any]) -> None:
    """Set the checks on the instance of ``module`` (named ``label``), in place of its methods
    (of those set on the instance, ``own``, or else its class's)."""
    forward: Callable[..., Any] = module.forward
    backward: Callable[..., Any] = module.backward
    backward_parameters: Callable[[Tensor], None] = module.backward_parameters

    def checked_forward(*inputs: Any, **named: Any) -> Any:
        if TRIAL.get():  # (a container's trial in evaluation mode: its training forward follows)
            return forward(*inputs, **named)
        # (by position or by name, as a module is called: Linear(2, 3)(input=x))
        given = [*((f"input {position}", input) for position, input in enumerate(inputs))]
        given += [(f"input {name!r}", input) for name, input in named.items()]
        for what, input in given:
            check_finite(input, label, "forward", "input" if len(given) == 1 else what)
        output = forward(*inputs, **named)
        _check_each(output, label, "forward", "output")
        return output

    def checked_backward(*gradwrtoutput: Any, **named: Any) -> Any:
        for gradient in (*gradwrtoutput, *named.values()):
            check_finite(gradient, label, "backward", "incoming gradient")
        gradient = backward(*gradwrtoutput, **named)
        _check_each(gradient, label, "backward", "returned gradient")
        _check_parameters(module, label)
        return gradient

    def checked_backward_parameters(grad_output: Tensor) -> None:
        check_finite(grad_output, label, "backward", "incoming gradient")
        backward_parameters(grad_output)
        _check_parameters(module, label)

    # Instance attributes shadow the class's methods, for this module only.
    for name, check in (
        ("forward", checked_forward),
        ("backward", checked_backward),
        ("backward_parameters", checked_backward_parameters),
    ):
        REPLACED[check] = (module, own.get(name))
        module.__dict__[name] = check


@contextmanager
def detect_anomaly(*modules: Module) -> Iterator[None]:
    """Check every forward output and backward gradient for NaN and infinity while active.

    Args:
        *modules: the models (and losses) to watch, every descendant included; with none, every
            :class:`~minidl.nn.Sequential` of the process checks its layers, in every thread
            (and a :func:`~minidl.train.fit` started meanwhile in any thread, or one with an
            ``on_epoch`` between two epochs, runs its step-by-step loop, whose roundings differ
            from its folded step's).

    Blocks may nest, and each restores on exit what it found on entry (the process-wide
    flag, the modules' own methods). It is not thread-safe: blocks that end in another order
    than they began, in two threads that overlap, would restore each other's state (the flag
    left off while a block is still open, or on once all are closed): use it from one thread
    at a time.

    Raises:
        AnomalyError: (inside the block) at the first non-finite value.
        TypeError: an argument that is not a minidl Module.

    Example:
        >>> with detect_anomaly(model, criterion):
        ...     loss = criterion(model(x), y)
        ...     model.backward_parameters(criterion.backward())
    """
    global enabled  # noqa: PLW0603 (a module flag keeps the check in Sequential one read)
    for index, module in enumerate(modules):
        if not isinstance(module, Module):
            got = given_module(module)
            if isinstance(module, list | tuple):
                got = f"a {got}; pass the modules themselves, detect_anomaly(*modules)"
            raise TypeError(f"detect_anomaly: argument {index} must be a minidl Module, got {got}")
    previous_flag = enabled
    saved: list[tuple[Module, dict[str, Any]]] = []
    try:
        if not modules:
            enabled = True
        seen: set[int] = set()
        for root in modules:
            root_name = type(root).__name__
            for path, module in root.named_modules():
                if id(module) in seen:
                    continue
                seen.add(id(module))
                own: dict[str, Any] = {
                    k: module.__dict__[k] for k in _WRAPPED if k in module.__dict__
                }
                saved.append((module, own))
                full_path = (
                    root_name
                    if not path
                    else root_name + "".join(_child_path("", part) for part in path.split("."))
                )
                _wrap(module, _label(full_path, module, is_root=not path), own)
        yield
    finally:
        enabled = previous_flag
        for module, own in reversed(saved):
            for key in _WRAPPED:
                if key in own:
                    module.__dict__[key] = own[key]
                else:
                    module.__dict__.pop(key, None)


# -- the module-less form: called by Sequential while ``enabled`` --------------------------------


@contextmanager
def _inner_paths(module: Module, path: str) -> Iterator[None]:
    """While the block runs, the ``Sequential`` modules inside ``module`` (at ``path``), itself
    included, know their paths (see :data:`_paths`)."""
    from minidl.nn.sequential import Sequential

    added = []
    for name, part in module.named_modules():
        if isinstance(part, Sequential) and id(part) not in _paths:
            parts = name.split(".") if name else []
            _paths[id(part)] = path + "".join(_child_path("", part_name) for part_name in parts)
            added.append(id(part))
    try:
        yield
    finally:
        for key in added:
            del _paths[key]


def sequential_forward(
    sequential: Sequential, input: Tensor, path: str = "", *, cached: bool = False
) -> Tensor:
    """``Sequential.forward`` with every layer's output checked (nested ``Sequential`` too);
    ``cached``: whether its trial left the children's caches (see ``Sequential._note_refusal``)."""
    from minidl.nn.sequential import Sequential

    path = path or _paths.get(id(sequential)) or type(sequential).__name__
    check_finite(input, path, "forward", "input")  # (before any module ran: nothing to undo)
    module = None
    # (each child by its registered name, as the state dict and the model's notes name it: a
    # slice, model[2:], keeps the model's names)
    names = tuple(sequential._modules)
    try:
        for index, module in enumerate(sequential):
            child = _child_path(path, names[index])
            if type(module) is Sequential:
                # (its own forward, which keeps its refusal flag, is not called: this call
                # sets the flag, as Sequential.forward would)
                input = sequential_forward(module, input, child)
                module._refused = None
            else:
                if module._modules:  # e.g. a Residual: its block names itself from here
                    with _inner_paths(module, child):
                        input = module.forward(input)
                else:
                    input = module.forward(input)
                check_finite(input, f"{child}: {type(module).__name__}", "forward", "output")
    except BaseException as error:
        # As Sequential.forward: refused unless the first module refused its input unchanged.
        sequential._note_refusal(module, error, cached=cached)
        raise
    return input


def sequential_backward(
    sequential: Sequential, grad_output: Tensor, path: str = "", *, method: str = "backward"
) -> Tensor:
    """``Sequential.backward`` with every layer's returned and parameter gradients checked (the
    ``method`` called, for the note of a child's refusal)."""
    from minidl.nn.sequential import Sequential

    path = path or _paths.get(id(sequential)) or type(sequential).__name__
    check_finite(grad_output, path, "backward", "incoming gradient")
    names = tuple(sequential._modules)  # (as in sequential_forward)
    # Without the checks, backward_parameters reaches the module it trains first by its own
    # backward_parameters, the modules after it by their backward: a nested Sequential's notes
    # name the method it would have been called by.
    after_first_trained = method == "backward_parameters"  # (until the loop reaches it)
    if after_first_trained and sequential._registrations_seen != Module._registrations:
        sequential._find_first_trained()  # (as Sequential.backward_parameters)
    for index in reversed(range(len(sequential))):
        module = sequential[index]
        child = _child_path(path, names[index])
        if module is sequential._first_trained:
            after_first_trained = False
        try:
            if type(module) is Sequential:
                if module._refused is not None:  # (as its own backward would refuse)
                    module._check_not_refused()
                inner = "backward" if after_first_trained else method
                grad_output = sequential_backward(module, grad_output, child, method=inner)
            elif module._modules:
                with _inner_paths(module, child):
                    grad_output = module.backward(grad_output)
            else:
                grad_output = module.backward(grad_output)
        except Exception as error:  # (noted as without the checks, a nested Sequential's too)
            sequential._note_backward_refusal(method, module, error)
            raise
        if type(module) is not Sequential:
            label = f"{child}: {type(module).__name__}"
            check_finite(grad_output, label, "backward", "returned gradient")
            for name, parameter in module.named_parameters():
                check_finite(parameter.grad, label, "backward", f"gradient of parameter {name!r}")
    return grad_output
