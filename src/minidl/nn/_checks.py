"""Input checks shared by the modules: each raises with a message naming the module, what was
given and what was expected. They are plain attribute comparisons, cheap enough for every call."""

from __future__ import annotations

import functools
import numbers
import types
from collections.abc import Mapping, Sequence
from typing import NoReturn

import torch
from torch import Tensor

from minidl._validate import (
    COMPUTED,
    FLOATING,
    add_note,
    check_dtype,
    check_tensor_size,
    layout_name,
    shown,
    unavailable,
)
from minidl.nn.parameter import Parameter

__all__ = [
    "STRIDED",
    "GradientDtypeError",
    "check_bool",
    "check_cached",
    "check_dense",
    "check_factory_options",
    "check_grad_like",
    "check_grad_output",
    "check_in_dtype_range",
    "check_in_place_setting",
    "check_input",
    "check_layer_parameters",
    "check_like_parameter",
    "check_not_in_place",
    "check_parameter_attributes",
    "check_runs",
    "check_size",
    "check_still_fits",
    "given_function",
    "given_module",
    "gradient_dtype_error",
    "is_pytorch_module",
    "refuse_given_gradient_dtype",
    "refuse_set_to_none",
]


#: The layout of a dense tensor, for the checks made on every call (a name imported into the
#: module that reads it is cheaper to read than ``torch.strided``).
STRIDED = torch.strided

#: The largest finite float16, the smallest largest value of the floating dtypes computed in:
#: a setting within it needs no check against the input's dtype (see check_in_dtype_range).
FLOAT16_LARGEST = 65504.0


def check_bool(where: str, name: str, value: object) -> bool:
    """Check a flag: ``True`` or ``False`` (not a truthy string or number)."""
    if not isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be True or False, got {shown(value)}")
    return value


#: The modules and losses that compute a function of PyTorch's, by the function's name: what a
#: message suggests for ``Sequential(Linear(2, 3), torch.tanh)``.
_MODULE_OF_FUNCTION = {
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "relu": "ReLU",
    "leaky_relu": "LeakyReLU",
    "elu": "ELU",
    "selu": "SELU",
    "gelu": "GELU",
    "silu": "SiLU",
    "softmax": "Softmax",
    "log_softmax": "LogSoftmax",
    "dropout": "Dropout",
    "linear": "Linear",
    "cross_entropy": "CrossEntropyLoss",
    "nll_loss": "NLLLoss",
    "mse_loss": "MSELoss",
    "l1_loss": "L1Loss",
    "huber_loss": "HuberLoss",
    "binary_cross_entropy_with_logits": "BCEWithLogitsLoss",
}

#: The types of functions and methods, Python's and PyTorch's (``torch.tanh`` is a builtin).
_FUNCTIONS = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.MethodDescriptorType,
    functools.partial,
)


def given_module(value: object) -> str:
    """What was given in place of a minidl module, for a message: its type's name, and for a
    PyTorch module (whose names minidl's share: ``Linear``), a class or a function, what it
    is and the fix."""
    kind = type(value)
    if is_pytorch_module(value):
        return f"{kind.__name__}, a PyTorch module (minidl.interop.from_torch converts one)"
    if isinstance(value, type):
        if _module_class(value):
            return f"the class {value.__name__}; pass an instance, {value.__name__}()"
        if callable(getattr(value, "parameters", None)) and _derives_from_torch(value):
            return (
                f"the class {value.__module__}.{value.__qualname__}, a PyTorch module's class "
                "(minidl.nn has its own modules; minidl.interop.from_torch converts a PyTorch "
                "module)"
            )
        return f"the class {value.__name__}"
    return given_function(value) or kind.__name__


def _module_class(kind: type) -> bool:
    """Whether ``kind`` is minidl's ``Module`` or a subclass (not imported here: module.py
    imports this file)."""
    return any(
        base.__name__ == "Module" and base.__module__ == "minidl.nn.module" for base in kind.__mro__
    )


def given_function(value: object, own: str = "module") -> str | None:
    """A function or method given in place of a module (or, with ``own="loss"``, a loss), and
    the fix: the module that computes it (``torch.tanh``: ``Tanh()``), the module whose method
    it is, or one of your own; ``None`` for a value that is no function."""
    if not isinstance(value, _FUNCTIONS):
        return None
    function = value.func if isinstance(value, functools.partial) else value
    name = getattr(function, "__name__", None)
    owner = getattr(function, "__self__", None)
    if isinstance(name, str) and _module_class(type(owner)):
        # (a bound method of a module, model.forward: the module itself was meant)
        return f"the method {name} of a {type(owner).__name__}; pass the {own} itself"
    what = "a lambda" if name == "<lambda>" else f"the function {name}"
    module = _MODULE_OF_FUNCTION.get(name) if isinstance(name, str) else None
    if module is not None:
        return f"{what}, which has no backward; minidl.nn.{module}() computes it"
    return (
        f"{what}, which has no backward; a {own} of your own computes a function in its "
        "forward and its gradient in its backward"
    )


def given_parameter(value: object) -> str:
    """What was given in place of a minidl :class:`~minidl.nn.Parameter`, for a message: its
    type's name and the usual fix (parameter groups, PyTorch's tensors and parameters, the
    pairs that ``param()`` and ``named_parameters()`` give)."""
    kind = type(value)
    if isinstance(value, Mapping):
        return (
            f"a {kind.__name__}: parameter groups are not supported (a minidl optimizer is one "
            "group; build one optimizer for each group's parameters)"
        )
    if kind is Tensor:  # (whose module is "torch")
        return (
            "torch.Tensor, a PyTorch tensor (minidl.nn.Parameter(tensor) holds one as a "
            "Parameter; minidl modules give theirs with .parameters())"
        )
    if kind.__module__.startswith("torch.") and isinstance(value, Tensor):
        return (
            f"{kind.__module__}.{kind.__qualname__}, a PyTorch tensor or parameter (minidl "
            "modules give their Parameters with .parameters(); minidl.interop.from_torch "
            "converts a PyTorch model)"
        )
    if isinstance(value, tuple | list) and len(value) == 2:
        first, second = value
        if isinstance(first, Tensor) and isinstance(second, Tensor):
            return (
                f"a {kind.__name__} of two tensors, a (value, gradient) pair as param() gives "
                "(pass model.parameters(), the Parameters that hold them)"
            )
        if isinstance(first, str) and isinstance(second, Parameter):
            return (
                f"a {kind.__name__} ({first!r}, Parameter), a pair as named_parameters() gives "
                "(pass model.parameters())"
            )
    return given_module(value)


def is_pytorch_module(value: object) -> bool:
    """Whether ``value`` is a PyTorch module: of PyTorch's own module classes, or of a class of
    one's own derived from one (a network written for PyTorch), told by the modules its
    classes come from, without importing PyTorch's module package."""
    return callable(getattr(value, "parameters", None)) and _derives_from_torch(type(value))


def _derives_from_torch(kind: type) -> bool:
    """Whether ``kind`` or a class it derives from comes from a module of PyTorch's."""
    return any(base.__module__.startswith("torch.") for base in kind.__mro__)


def check_not_in_place(where: str, inplace: object) -> None:
    """Check the ``inplace`` argument of the modules that PyTorch gives one (``ReLU``,
    ``LeakyReLU``, ``ELU``, ``SELU``, ``SiLU``, ``Dropout``): ``False``, what minidl's modules
    do (they never change their input); ``True`` is refused."""
    if check_bool(where, "inplace", inplace):
        raise ValueError(
            f"{where}: inplace=True is not supported (minidl's activations and Dropout never "
            "change their input); leave it out, or pass inplace=False"
        )


def check_in_place_setting(where: str, inplace: object) -> bool:
    """Check ``inplace`` set after construction (the :class:`~minidl._setting.Setting` of
    those modules, whose class gives ``_inplace = False``), as the constructor checks it:
    ``False`` is kept, ``True`` refused (PyTorch's module then changes its input in place; a
    plain attribute that minidl's ignored would compute otherwise without a word)."""
    check_not_in_place(where, inplace)
    return False


def refuse_set_to_none(where: str, set_to_none: object) -> None:
    """Refuse the ``set_to_none`` of a ``zero_grad`` (called only when it is not ``False``):
    PyTorch's ``zero_grad(set_to_none=True)`` leaves ``grad`` ``None``, but a minidl gradient
    always exists, a view of the model's flat buffer, and is zeroed in place."""
    check_bool(where, "set_to_none", set_to_none)
    raise ValueError(
        f"{where}: set_to_none=True is not supported (a minidl gradient is never None: it is "
        "one tensor for the whole run, a view of the flat gradient buffer in a Sequential, and "
        "is zeroed in place); leave it out, or pass set_to_none=False"
    )


def check_factory_options(
    where: str, dtype: object, device: torch.device | str | None, generator: object = None
) -> torch.device | None:
    """Check the ``dtype``, ``device`` and ``generator`` a layer makes its tensors with, before
    it draws anything (a device name torch does not know, or one this machine lacks, such as
    ``"cuda"`` without a GPU, is refused); return the device (``None`` if not given)."""
    if dtype is not None:
        check_dtype(where, dtype)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"{where}: generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    if device is None:
        return None
    try:
        place = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"{where}: {shown(device)} is not a device ({error})") from None
    reason = unavailable(place)
    if reason is not None:
        raise ValueError(f"{where}: cannot put tensors on device {shown(device)}: {reason}")
    return place


def check_in_dtype_range(where: str, name: str, value: float, dtype: torch.dtype) -> None:
    """Refuse a setting (``LeakyReLU``'s ``negative_slope``) beyond the largest finite value of
    ``dtype``, the one the module computes in, before anything is computed: it would fail to
    convert in torch's words, or turn finite outputs into NaN (``0 * inf``). Callers ask only
    for a value beyond :data:`FLOAT16_LARGEST`, so that the check costs one comparison."""
    largest = torch.finfo(dtype).max
    if not abs(value) <= largest:
        raise ValueError(
            f"{where}: {name}={value:g} is beyond the range of the dtype it computes in, "
            f"{dtype} (largest finite value {largest:.6g}); give a smaller {name}, or inputs "
            "of a wider dtype"
        )


def check_size(where: str, name: str, value: object) -> int:
    """Return a layer's size ``value`` (a feature or model count) as an ``int`` after checking
    that it is a positive integer (a numpy integer is one; a bool is not) that a tensor
    dimension can have: ``TypeError`` for another type (as PyTorch's ``Linear`` and
    :func:`~minidl._validate.check_int` refuse one), ``ValueError`` for a value below 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be a positive integer, got {shown(value)}")
    if int(value) < 1:
        raise ValueError(f"{where}: {name} must be a positive integer, got {shown(value)}")
    check_tensor_size(where, name, int(value))
    return int(value)


def check_dense(where: str, tensor: Tensor, what: str = "input") -> None:
    """Refuse a sparse (or other non-strided) or nested ``tensor``, the ``what`` of a module
    (its input or gradient): the tensor library refuses some of the operations that follow,
    part-way, and a strided nested tensor's shape is not read (torch's "Internal error:
    NestedTensorImpl doesn't support sizes")."""
    if tensor.layout is not STRIDED or tensor.is_nested:
        hint = (
            f"one of equal sizes is made dense by torch.stack({what}.unbind())"
            if tensor.is_nested  # (strided or jagged; to_dense is not theirs)
            else f"pass {what}.to_dense()"
        )
        raise TypeError(
            f"{where}: expected a dense {what}, got a {layout_name(tensor)} tensor ({hint})"
        ) from None  # (raised where an operation refused it too: that error says less)


def check_input(
    where: str, input: object, features: int | None = None, *, what: str = "input"
) -> Tensor:
    """Check that ``input`` is a dense floating tensor of shape ``(N, features)`` with
    ``N >= 1`` and at least one feature; the messages call it ``what`` (a loss's
    ``"prediction"``)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor as {what}, got {type(input).__name__}")
    if input.dtype not in COMPUTED:
        raise TypeError(
            f"{where}: expected a {FLOATING.format(what=what)}, got dtype {input.dtype}"
        )
    # (a sparse input's products run, but its backward is refused by the tensor library)
    check_dense(where, input, what)
    if input.dim() != 2:
        article = "an" if what[:1] in "aeiou" else "a"
        raise ValueError(
            f"{where}: expected {article} {what} of shape (N, features), got shape "
            f"{tuple(input.shape)}"
        )
    if features is not None and input.shape[1] != features:
        raise ValueError(
            f"{where}: expected {features} {what} features, got {input.shape[1]} "
            f"({what} shape {tuple(input.shape)})"
        )
    if input.shape[0] == 0 or input.shape[1] == 0:
        # (no features: a loss or a softmax would divide by zero or reduce over nothing)
        empty = "an empty batch" if input.shape[0] == 0 else "no features"
        raise ValueError(f"{where}: got {empty} ({what} shape {tuple(input.shape)})")
    return input


class GradientDtypeError(TypeError):
    """A module with parameters (:class:`~minidl.nn.Linear`, :class:`~minidl.nn.BatchNorm1d`,
    ...) refused, in ``backward`` or ``backward_parameters``, a gradient of another dtype than
    its parameters': PyTorch's autograd would cast it, minidl asks the caller to convert it.
    A :class:`TypeError`, as minidl's other refusals of a dtype are.

    Attributes:
        given: the gradient's dtype.
        expected: the parameters' dtype.

    The modules without parameters promote a gradient of another dtype (a float16 one through
    a bfloat16 ``Tanh`` becomes float32), so the one that reaches a layer inside a container
    may not be the one its caller gave: a :class:`~minidl.nn.Sequential` or a
    :class:`~minidl.nn.Residual` then raises one that names, as ``given``, the dtype its caller
    gave, from the layer's own (its ``__cause__``, whose ``given`` is the promoted dtype).

    Example:
        >>> layer = Linear(3, 2)
        >>> output = layer(torch.randn(4, 3))
        >>> try:
        ...     layer.backward(torch.ones(4, 2, dtype=torch.float64))
        ... except GradientDtypeError as error:
        ...     print(error.given, error.expected)
        torch.float64 torch.float32
    """

    # Defined here with the checks that raise it; public as minidl.nn.GradientDtypeError, the
    # name a traceback and a pickle give it.
    __module__ = "minidl.nn"

    given: torch.dtype | None = None
    expected: torch.dtype | None = None


def gradient_dtype_error(
    message: str, given: torch.dtype, expected: torch.dtype, notes: Sequence[str] = ()
) -> GradientDtypeError:
    """A :class:`GradientDtypeError` with ``message``, ``given``, ``expected`` and ``notes``,
    made here so that the frame that raises it holds it in no local variable (the traceback
    would hold that frame, which would hold it: a cycle that keeps every frame the refusal
    went through, the model's among them, until the cyclic collector runs)."""
    error = GradientDtypeError(message)
    error.given, error.expected = given, expected
    for note in notes:
        add_note(error, note)
    return error


def refuse_given_gradient_dtype(where: str, error: BaseException, grad_output: Tensor) -> None:
    """Raise, from ``error``, the refusal of ``grad_output``'s dtype in ``where``'s name when a
    module with parameters inside ``where`` refused ``error.given``, a dtype that the modules
    without parameters after it promoted the caller's gradient to, with ``error``'s notes;
    return when ``error`` is no such refusal, or already names the caller's dtype (a
    container's ``except`` calls it, then re-raises ``error``)."""
    if not isinstance(error, GradientDtypeError) or error.given is grad_output.dtype:
        return
    raise gradient_dtype_error(
        f"{where}: gradient dtype {grad_output.dtype} does not match {error.expected}, the "
        "dtype of a module inside (the modules without parameters after it promoted the "
        f"gradient to {error.given} on its way there: {error}); convert the gradient",
        grad_output.dtype,
        error.expected,  # type: ignore[arg-type]
        getattr(error, "__notes__", ()),
    ) from error


def check_like_parameter(
    where: str,
    input: Tensor,
    parameter: Tensor,
    what: str = "input",
    owner: str = "parameters",
) -> None:
    """Check that ``input`` (or another tensor, ``what``) has the dtype and device of
    ``parameter``, one of the module's ``owner`` (a plural: "parameters", "running
    statistics"); the messages of an input say how to mend it."""
    hint = what == "input"
    if input.dtype != parameter.dtype:
        message = (
            f"{where}: {what} dtype {input.dtype} does not match the {owner}' dtype "
            f"{parameter.dtype}"
            + ("; convert the input or call .to(dtype=...) on the module" * hint)
        )
        if what == "gradient":
            raise gradient_dtype_error(message, input.dtype, parameter.dtype)
        raise TypeError(message)
    if input.device != parameter.device:
        raise ValueError(
            f"{where}: {what} is on {input.device} but the {owner} are on {parameter.device}"
            + ("; move one of them with .to(device=...)" * hint)
        )


def check_layer_parameters(
    where: str, weight: Tensor, bias: Tensor | None, shape: tuple[int, ...], names: str
) -> None:
    """A layer's weight of ``shape`` (its dimensions called ``names``), and a bias of the
    weight's shape without its last dimension, dtype and device: parameter tensors assigned by
    hand (``weight.data = ...``) must fit the layer."""
    if tuple(weight.shape) != shape:
        raise ValueError(
            f"{where}: weight has shape {tuple(weight.shape)}, expected ({names}) = {shape}"
        )
    if bias is None:
        return
    if tuple(bias.shape) != shape[:-1]:
        bias_names = names.rsplit(", ", 1)[0] + ("," if len(shape) == 2 else "")
        raise ValueError(
            f"{where}: bias has shape {tuple(bias.shape)}, expected ({bias_names}) = {shape[:-1]}"
        )
    if bias.dtype != weight.dtype or bias.device != weight.device:
        raise ValueError(
            f"{where}: bias is {bias.dtype} on {bias.device} but weight is {weight.dtype} on "
            f"{weight.device}"
        )


def check_parameter_attributes(
    where: str, module: object, names: str, optional: str = "bias"
) -> None:
    """Refuse a layer's parameter attribute (``weight``, ``bias``: ``names``, separated by
    commas) that holds no :class:`Parameter` (those of ``optional`` may be ``None``: no bias, as
    in PyTorch, where none is registered under the name), or one that is not the Parameter
    registered under its name: a tensor, a number,
    ``None`` or another Parameter assigned by hand, with which the layer would compute while
    ``parameters()``, the optimizers and ``state_dict`` keep the registered one. (Read with ``getattr``: asking for a module's ``__dict__`` would make CPython
    keep its attributes in a slower dict.)"""
    registry = getattr(module, "_parameters", None)
    for name in names.split(", "):
        value = getattr(module, name, None)
        if isinstance(value, Parameter):
            if registry is None or registry.get(name) is value:
                continue
            raise ValueError(
                f"{where}: {name} is a Parameter that is not registered (set by hand as an "
                "attribute: the layer would compute with it while parameters(), the optimizers "
                f"and state_dict keep the registered one); set its values in place with "
                f"{name}.data.copy_(...), or register it with register_parameter({name!r}, ...)"
            )
        if value is None and name in optional.split(", "):
            if registry is None or name not in registry:
                continue
            raise ValueError(
                f"{where}: {name} is None, but a {name} is still registered (set to None by "
                f"hand: the layer would compute without it while parameters(), the optimizers "
                f"and state_dict keep it); remove it with register_parameter({name!r}, None)"
            )
        if value is None and registry is not None and name not in registry:
            raise TypeError(
                f"{where}: {name} is None (removed with register_parameter({name!r}, None)), "
                f"but the layer computes with one; register one with "
                f"register_parameter({name!r}, Parameter(...))"
            )
        raise TypeError(
            f"{where}: {name} must be a minidl Parameter, got {type(value).__name__} (an "
            f"attribute set by hand is not registered: parameters() and the optimizers would "
            f"keep the old one); set its values in place with {name}.data.copy_(...), or "
            f"register a new one with register_parameter({name!r}, Parameter(...))"
        ) from None  # (raised where reading the attribute failed too: that error says less)


def check_still_fits(where: str, cached: Tensor, parameter: Tensor) -> None:
    """After an operation of ``backward`` failed: if the module's ``parameter`` no longer has
    the dtype and device of a tensor its last forward ``cached``, the module was cast or moved
    (``.to(...)``) in between; say so rather than let the tensor library's message stand."""
    if cached.dtype != parameter.dtype or cached.device != parameter.device:
        raise RuntimeError(
            f"{where}: the parameters are {parameter.dtype} on {parameter.device} but the last "
            f"forward ran in {cached.dtype} on {cached.device}: the module was cast or moved "
            "(.to(...)) after that forward; run forward again before backward"
        )


def check_cached(where: str, cached: Tensor | None) -> Tensor:
    """Check that ``forward`` ran (and cached a tensor) before ``backward``."""
    if cached is None:
        raise RuntimeError(f"{where}: backward called before forward")
    return cached


def check_grad_output(
    where: str,
    grad_output: object,
    shape: torch.Size,
    like: Tensor | None = None,
    owner: str = "parameters",
) -> Tensor:
    """Check that ``grad_output`` is a dense tensor of the shape of the last forward's output
    and, for a module with parameters (``like``, one of them, or of another of its ``owner``),
    of their dtype and device."""
    if not isinstance(grad_output, Tensor):
        raise TypeError(
            f"{where}: expected a torch.Tensor as gradient, got {type(grad_output).__name__}"
        )
    # (a sparse gradient's products run, but not all: a half-accumulated parameter gradient)
    check_dense(where, grad_output, "gradient")
    if grad_output.shape != shape:
        # A 0-dim gradient for a bigger output is most likely the loss value itself.
        hint = (
            "; backward takes the gradient of the loss with respect to the output, "
            "criterion.backward(), not the loss"
            if grad_output.dim() == 0 and len(shape) > 0
            else ""
        )
        raise ValueError(
            f"{where}: gradient has shape {tuple(grad_output.shape)}, expected {tuple(shape)} "
            f"(the shape of the last forward's output){hint}"
        )
    if like is not None:
        check_like_parameter(where, grad_output, like, "gradient", owner)
    return grad_output


def check_runs(
    where: str, runs: Sequence[tuple[object, object]], kind: type
) -> list[tuple[int, int]]:
    """Check the ``(module, models)`` runs of a stacked module (a list or tuple of at least
    one pair; each a ``kind`` covering a positive number of models) and return each run's
    ``(start, stop)`` models."""
    pair = f"({kind.__name__.lower()}, models)"
    if not isinstance(runs, list | tuple):
        raise TypeError(
            f"{where}: runs must be a list or tuple of {pair} pairs, got {type(runs).__name__}"
        )
    if not runs:
        raise ValueError(f"{where}: expected at least one {pair} run")
    bounds = []
    start = 0
    runs_of: dict[int, int] = {}  # id of each run's module -> the run
    for index, run in enumerate(runs):
        if not isinstance(run, list | tuple) or len(run) != 2:
            got = (
                f"a {type(run).__name__} of {len(run)} item{'' if len(run) == 1 else 's'}"
                if isinstance(run, list | tuple)
                else type(run).__name__
            )
            raise TypeError(f"{where}: run {index} must be a {pair} pair, got {got}")
        module, models = run
        if not isinstance(module, kind):
            raise TypeError(
                f"{where}: run {index} must hold a minidl {kind.__name__}, got "
                f"{type(module).__name__}"
            )
        if id(module) in runs_of:
            raise ValueError(
                f"{where}: run {index} holds the same {type(module).__name__} object as run "
                f"{runs_of[id(module)]}; each run needs its own (a module keeps its last "
                "forward's cache for its backward)"
            )
        runs_of[id(module)] = index
        if isinstance(models, bool) or not isinstance(models, numbers.Integral) or models < 1:
            # (a count of another type, a bool among them, is a TypeError, as check_int's)
            integer = isinstance(models, numbers.Integral) and not isinstance(models, bool)
            raise (ValueError if integer else TypeError)(
                f"{where}: run {index} must cover a positive number of models, got {shown(models)}"
            )
        bounds.append((start, start + int(models)))
        start += int(models)
    return bounds


def check_grad_like(where: str, grad_output: object, output: Tensor) -> Tensor:
    """For a module without parameters: check that ``grad_output`` is a floating-point tensor
    of the shape and on the device of ``output`` (the last forward's output, or a tensor cached
    with it). Its dtype may differ: the backward promotes it, as torch's operations do."""
    check_grad_output(where, grad_output, output.shape)
    assert isinstance(grad_output, Tensor)
    if grad_output.dtype not in COMPUTED:
        raise TypeError(
            f"{where}: expected a {FLOATING.format(what='gradient')}, got dtype {grad_output.dtype}"
        )
    if grad_output.device != output.device:
        raise ValueError(
            f"{where}: gradient is on {grad_output.device} but the last forward's output is on "
            f"{output.device}"
        )
    return grad_output


def refuse_registration_in_runs(kind: str, name: str, module: object) -> NoReturn:
    """Refuse a module registered on a built ``kind`` (a ``StackedActivation`` or
    ``StackedLoss``), whose forward reads the runs it was built with: a module registered in a
    run's place would be named by its ``repr`` and state dict, and not computed."""
    raise ValueError(
        f"{kind}.register_module: a {kind}'s runs are fixed when it is built (its forward "
        f"computes them), got a {type(module).__name__} to register as {name!r}; build a new "
        f"{kind} with the runs wanted"
    )
