"""Conversion between minidl models and ``torch.nn`` models.

This is the one module of minidl allowed to import ``torch.nn``: it builds ``torch.nn`` modules
from minidl ones and back, copying parameters and buffers. Nothing else in the framework depends
on it, and it plays no part in minidl's own forward and backward passes.

:func:`to_torch` returns a ``torch.nn`` model with the same outputs (and, through autograd, the
same gradients) as the minidl model; :func:`from_torch` does the reverse. Both keep dtypes,
devices and the training mode of every module (a model may mix modes), and a round trip is
lossless in them (the gradients accumulated are not carried: torch's ``.grad`` starts as
``None``, minidl's as zeros). Converted layers:

=========================  ==========================================
minidl                     torch.nn
=========================  ==========================================
``Linear`` (bias or not)   ``Linear``
``ReLU``, ``Tanh``,        ``ReLU``, ``Tanh``, ``Sigmoid``,
``Sigmoid``, ``SELU``      ``SELU``
``LeakyReLU(a)``           ``LeakyReLU(negative_slope=a)``
``ELU(alpha)``             ``ELU(alpha)``
``GELU(approximate)``      ``GELU(approximate)`` (``'none'`` or ``'tanh'``)
``SiLU``                   ``SiLU``
``Sequential`` (nested)    ``Sequential``
``Dropout(p)``             ``Dropout(p)``
``BatchNorm1d``            ``BatchNorm1d`` (with running statistics)
``Identity``               ``Identity``
``Softmax(1)``             ``Softmax(dim=1)``
``LogSoftmax(1)``          ``LogSoftmax(dim=1)``
``Residual(block)``        :class:`TorchResidual` (defined here)
=========================  ==========================================

A minidl ``Dropout`` with its own generator becomes a ``torch.nn.Dropout``, which draws from
torch's global generator. What :func:`from_torch` does not carry over, as minidl has no such
thing: the names of a ``Sequential``'s children (minidl numbers them, so ``state_dict`` keys
become ``'0.weight'``, ...), ``requires_grad`` (a frozen PyTorch layer becomes an ordinary minidl
one: give the optimizer only the parameters to train) and ``inplace=True`` (minidl's activations
never change their input; a layer that would change the input of a ``TorchResidual``'s block,
which its skip connection adds, is refused).

Example:
    >>> model = nn.Sequential(nn.Linear(2, 25), nn.Tanh(), nn.Linear(25, 2))
    >>> twin = to_torch(model)              # a torch.nn.Sequential
    >>> back = from_torch(twin)             # a minidl Sequential, equal parameters
"""

from __future__ import annotations

import inspect
import numbers
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import overload

import torch
from torch import Tensor
from torch import nn as tnn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.utils import parametrize

from minidl import nn
from minidl._validate import shown
from minidl.nn._checks import given_module
from minidl.nn.batch_norm import COUNT_DTYPES
from minidl.nn.module import Module, check_initialised, own_method
from minidl.nn.parameter import first_overlap

__all__ = ["ConversionError", "TorchResidual", "from_torch", "to_torch"]

#: A generator for the throw-away initial values of the minidl layers whose values are then
#: copied, so that :func:`from_torch` never consumes torch's global random stream (:func:`to_torch`
#: builds its layers on the meta device, with no initial values at all).
_SCRATCH_SEED = 0


class ConversionError(TypeError):
    """A layer that has no counterpart in the other framework."""


class TorchResidual(tnn.Module):
    """``y = x + block(x)`` as a ``torch.nn.Module``: the counterpart of minidl's ``Residual``.

    Args:
        block: the ``torch.nn.Module`` inside the skip connection.

    Raises:
        TypeError: ``block`` is not a ``torch.nn.Module`` (a minidl module, which torch would
            keep as a plain attribute: not among the parameters, nor in the state dict).
        ValueError: (at a forward) the block's output has another shape than the input, which
            the sum would broadcast and minidl's ``Residual`` refuses.
    """

    def __init__(self, block: tnn.Module) -> None:
        super().__init__()
        if not isinstance(block, tnn.Module):
            minidl = (
                " (for a minidl block, use minidl.nn.Residual)" if isinstance(block, Module) else ""
            )
            raise TypeError(
                f"TorchResidual: block must be a torch.nn.Module, got {type(block).__name__}{minidl}"
            )
        self.block = block

    def forward(self, input: Tensor) -> Tensor:
        """``input + block(input)``, the block's output of the input's shape."""
        output: Tensor = self.block(input)
        if not isinstance(output, Tensor):
            raise TypeError(
                f"TorchResidual: the block returned {type(output).__name__}, expected a tensor of "
                f"the input's shape {tuple(input.shape)}"
            )
        if output.shape != input.shape:
            raise ValueError(
                f"TorchResidual: the block's output has shape {tuple(output.shape)}, expected the "
                f"input's shape {tuple(input.shape)} (as minidl's Residual: the sum would "
                "broadcast it)"
            )
        return input + output


def _path_name(path: str) -> str:
    """Where a layer is: ``"the layer at '1.0'"``, or ``"the model itself,"``."""
    return f"the layer at {path!r}" if path else "the model itself,"


def _copy_parameter(name: str, target: Tensor, source: Tensor) -> None:
    """Copy ``source`` into ``target``, the converted layer's tensor ``name``; refused (a
    ``ValueError``, which :func:`_building` names) where the shapes differ: a tensor assigned
    by hand that the layer's sizes do not give (a bias of shape ``(1,)``, which would broadcast)."""
    if source.shape != target.shape:
        raise ValueError(
            f"its {name} has shape {tuple(source.shape)}, where its sizes give "
            f"{tuple(target.shape)}"
        )
    with torch.no_grad():
        target.copy_(source.detach())


def _count(target: Tensor, source: Tensor) -> Tensor:
    """The converted layer's count of batches: a copy of ``source`` in its own dtype (an
    int32 count stays int32, where a copy into ``target``, the new layer's int64 count, cast
    it), or copied into ``target`` where minidl's ``BatchNorm1d`` counts in no such dtype
    (uint16, say); refused, as :func:`_copy_parameter` refuses, where its shape is not 0-dim."""
    if source.dtype not in COUNT_DTYPES or source.shape != target.shape:
        _copy_parameter("num_batches_tracked", target, source)  # (copied, or refused)
        return target
    return source.detach().to(device=target.device, copy=True)


@contextmanager
def _building(where: str, path: str, kind: type) -> Iterator[None]:
    """Turn a constructor's refusal of a layer's settings (``ValueError`` or ``TypeError``, e.g.
    ``torch.nn.LeakyReLU(float("inf"))``, which minidl's ``LeakyReLU`` refuses) into a
    :class:`ConversionError` that names the layer's path and type."""
    try:
        yield
    except ConversionError:
        raise
    except (ValueError, TypeError) as error:
        raise _refused(where, path, kind, str(error)) from error


def _refused(where: str, path: str, kind: type, why: str) -> ConversionError:
    """``"from_torch: cannot convert the layer at '0' of type torch.nn...Linear (why)"``."""
    return ConversionError(
        f"{where}: cannot convert {_path_name(path)} of type "
        f"{kind.__module__}.{kind.__qualname__} ({why})"
    )


#: The tensors of the layers converted that hold floating-point values.
_FLOATING_TENSORS = frozenset({"weight", "bias", "running_mean", "running_var"})


def _check_tensors(where: str, path: str, kind: type, tensors: dict[str, Tensor]) -> None:
    """Refuse a layer whose own parameters and buffers (``tensors``) are not of one floating
    dtype and one device (a bias assigned in another dtype, say): the converted layer holds
    them in one, so the copy would cast them, or fail half-way (out of a meta tensor). And one
    of a dtype the layer does not compute with: a weight, bias or running statistic that is
    not floating point (the copy cast an integer bias; torch's forward fails on it), a count
    of batches that is not an integer (2.7 became 2, where torch's cumulative average divides
    by 3.7). And one that is not dense (a sparse weight set by hand, which the copy failed on
    in torch's words, the layer unnamed)."""
    for name, tensor in tensors.items():
        if tensor.layout is not torch.strided:
            raise _refused(
                where,
                path,
                kind,
                f"its {name} is a tensor of layout {tensor.layout}; expected a dense one "
                "(torch.strided)",
            )
        if name == "num_batches_tracked":
            if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype is torch.bool:
                raise _refused(
                    where, path, kind, f"its {name} has dtype {tensor.dtype}; expected integers"
                )
        elif name in _FLOATING_TENSORS and not tensor.is_floating_point():
            raise _refused(
                where,
                path,
                kind,
                f"its {name} has dtype {tensor.dtype}; expected a floating-point dtype",
            )
    dtypes = {name: tensor.dtype for name, tensor in tensors.items() if tensor.is_floating_point()}
    devices = {name: tensor.device for name, tensor in tensors.items()}
    for what, found in (("dtypes", dtypes), ("devices", devices)):
        if len(set(found.values())) > 1:
            listed = ", ".join(f"{name} {value}" for name, value in found.items())
            raise _refused(
                where, path, kind, f"its tensors have different {what}: {listed}; expected one"
            )


def _check_carried(
    where: str,
    path: str,
    kind: type,
    names: Iterable[str],
    carried: Iterable[str],
    counterpart: type,
    what: str = "parameters or buffers",
) -> None:
    """Refuse a layer with parameters or buffers (``names``) that its converted counterpart
    has not (``carried``): a tensor registered by hand would be dropped without a word, and
    the state dicts of the two models would no longer match. The same for child modules
    (``what``): a child registered by hand in a layer would be dropped with its tensors.
    ``counterpart`` is the class it is converted to, named in the message (``torch.nn's
    Linear``, ``minidl.interop.TorchResidual``)."""
    kept = set(carried)
    dropped = [name for name in names if name not in kept]
    if dropped:
        module, name = counterpart.__module__, counterpart.__qualname__
        named = (
            f"torch.nn's {name}"
            if module.startswith("torch.nn.")
            else f"minidl's {name}"
            if module.startswith("minidl.nn.")
            else f"{module}.{name}"
        )
        raise _refused(where, path, kind, f"{what} that {named} has not: {dropped}")


@overload
def to_torch(model: nn.Sequential) -> tnn.Sequential: ...


@overload
def to_torch(model: nn.Linear) -> tnn.Linear: ...


@overload
def to_torch(model: Module) -> tnn.Module: ...


def to_torch(model: Module) -> tnn.Module:
    """Build the ``torch.nn`` equivalent of a minidl model, with copied parameters and buffers.

    Args:
        model: a minidl :class:`~minidl.nn.Module` built from the layers listed in the module
            docstring (for a :class:`~minidl.nn.Sequential`, a ``torch.nn.Sequential`` comes back,
            and for a :class:`~minidl.nn.Linear` a ``torch.nn.Linear``, as a type checker is told).

    Returns:
        A new ``torch.nn.Module`` with the same dtype, device, training mode and outputs.

    Raises:
        ConversionError: a layer has no ``torch.nn`` counterpart, a method of its class set
            on the instance (``forward``, or one it calls), parameters, buffers or
            child modules that its counterpart has not (registered by hand), an attribute of a
            parameter's, buffer's or child's name that holds another object
            (``norm.running_mean = tensor``, which minidl does not register), tensors of
            several dtypes or devices, or a tensor of a shape its sizes do not give; the message
            gives its path (e.g. ``'2.block.0'``) and type.
        TypeError: ``model`` is not a minidl :class:`~minidl.nn.Module`.
    """
    if not isinstance(model, Module):
        raise TypeError(f"to_torch: expected a minidl Module, got {given_module(model)}")
    check_initialised("to_torch", "the model", model)  # (the modules inside were, to be held)
    # Normal tensors, even when called inside torch.inference_mode(): autograd refuses to save
    # inference tensors for backward, and the torch model is made to be trained.
    with torch.inference_mode(False):
        twin = _to_torch(model, "")
        _refuse_untied_sharing(
            "to_torch",
            [("parameter", name, p.data) for name, p in model.named_parameters()]
            + [("buffer", name, b) for name, b in model.named_buffers()],
        )
        _tie_torch(model, twin)
        return twin


def _to_torch(module: Module, path: str) -> tnn.Module:
    kind = type(module)
    # Another type is refused for its type, before anything else: a refusal of its tensors or
    # attributes would ask for a change that cannot make it convertible.
    if kind not in _CONVERTED_MINIDL:
        raise _unsupported_minidl(path, kind)
    _check_attributes(module, path)
    _check_own_methods(module, path)
    own = {name: parameter.data for name, parameter in module._parameters.items()}
    own.update(module._buffers)
    _check_tensors("to_torch", path, kind, own)
    with _building("to_torch", path, kind):
        result = _torch_layer(module, path)
    carried = {name for name, _ in result.named_parameters(recurse=False)}
    carried.update(name for name, _ in result.named_buffers(recurse=False))
    _check_carried("to_torch", path, kind, own, carried, type(result))
    # (a Sequential's and a Residual's children are converted under their names)
    _check_carried(
        "to_torch", path, kind, module._modules, result._modules, type(result), "child modules"
    )
    # This module's mode only: its children keep theirs (e.g. a batch norm frozen in evaluation
    # mode inside a model that trains), which a recursive train() would overwrite.
    result.training = module.training
    return result


def _methods(kind: type) -> tuple[str, ...]:
    """The names of the functions that the class ``kind`` (or a base) defines, but the special
    ``__...__`` ones: what a layer computes with, ``forward`` and ``backward`` and the methods
    they call (a ``Linear``'s ``_accumulate_bias``, an ELU's ``_output_and_derivative``, a
    batch norm's ``_update``)."""
    return tuple(
        name
        for name in dir(kind)
        if not (name.startswith("__") and name.endswith("__"))
        and inspect.isfunction(inspect.getattr_static(kind, name))
    )


def _check_own_methods(module: Module, path: str) -> None:
    """Refuse a layer with a method of its class set on its instance (``layer.forward = ...``,
    or one that ``forward`` or ``backward`` calls), which its torch counterpart would not run
    (but the checks of :func:`minidl.detect_anomaly`, which compute as the class does). Looked
    up without asking for the instance's ``__dict__``, which slows its attribute reads on
    CPython 3.11."""
    kind = type(module)
    for name in _methods(kind):
        method = getattr(module, name, None)
        own = getattr(kind, name, None)
        if method is None or (
            getattr(method, "__func__", None) is own and getattr(method, "__self__", None) is module
        ):
            continue  # (the class's own, bound to this layer: another layer's is refused)
        user = own_method(module, method)
        if user is None:  # (detect_anomaly's checks alone)
            continue
        # (beneath detect_anomaly's checks, the user's method is named, and removed after the
        # block: del inside it removes the check, and the block's end puts the method back)
        when = "" if user is method else " after the detect_anomaly block"
        named = repr(getattr(user, "__qualname__", user))
        bound = getattr(user, "__self__", module)
        if bound is not module:  # (a method of another object: another layer's forward)
            named += f" of another {type(bound).__name__}"
        raise _refused(
            "to_torch",
            path,
            kind,
            f"its {name} is set on the instance ({named}), "
            f"which the torch.nn layer would not run: it would compute what {kind.__name__} "
            f"computes; remove it (del layer.{name}){when} first",
        )


def _check_attributes(module: Module, path: str) -> None:
    """Refuse a layer whose attribute named after one of its parameters, buffers or children
    holds another object (``norm.running_mean = tensor`` or ``residual.block = layer``, which
    ``torch.nn`` registers and minidl does not): the layer computes with the attribute while
    ``state_dict()`` and ``parameters()`` hold the registered one, so the converted layer
    would match one of the two and not the other. (A ``Sequential``'s children have no
    attributes.)"""
    # A parameter registered as none (Linear(bias=False)) set again as a plain attribute: the
    # layer computes without it (its forward refuses it), a torch layer would train it.
    for name in sorted(getattr(module, "_removed_parameters", ())):
        attribute = getattr(module, name, None)
        if attribute is not None:
            raise _refused(
                "to_torch",
                path,
                type(module),
                f"its attribute {name!r} holds {shown(attribute)} where no {name} is "
                f"registered (the layer was built without one, or given None): the layer "
                f"computes without it; register it with register_parameter({name!r}, ...), or "
                "remove the attribute",
            )
    absent = object()
    for what, registry, holders, way_out in (
        ("parameter", module._parameters, "state_dict() and parameters() hold", True),
        ("buffer", module._buffers, "state_dict() holds", True),
        ("module", module._modules, "state_dict() and parameters() hold", False),
    ):
        for name, registered in registry.items():
            attribute = getattr(module, name, absent)
            if attribute is registered:
                continue
            if attribute is absent:
                # Deleted (del layer.weight, del residual.block): registering a parameter or a
                # buffer sets the attribute, and a Residual sets its block's; a child module
                # registered alone has none (a Sequential's, one registered by hand: refused
                # below as a child that torch's layer has not).
                if what == "module" and not (type(module) is nn.Residual and name == "block"):
                    continue
                getter = {"parameter": "get_parameter", "buffer": "get_buffer"}.get(
                    what, "get_submodule"
                )
                raise _refused(
                    "to_torch",
                    path,
                    type(module),
                    f"its attribute {name!r} was deleted, where its {what} {name!r} is still "
                    f"registered (the layer cannot compute without the attribute; "
                    f"{holders} the registered one); set it again: layer.{name} = "
                    f"layer.{getter}({name!r})",
                )
            copy = "copy the values in place, or " if way_out else ""
            raise _refused(
                "to_torch",
                path,
                type(module),
                f"its attribute {name!r} is not its registered {what} {name!r} (assigned by "
                f"hand, which minidl does not register: the layer computes with the attribute, "
                f"{holders} the registered one); {copy}register the new one with "
                f"register_{what}({name!r}, ...)",
            )


def _torch_layer(module: Module, path: str) -> tnn.Module:
    """``module`` as a ``torch.nn`` module, its children converted by :func:`_to_torch`."""
    kind = type(module)
    result: tnn.Module
    if kind is nn.Sequential:
        # Under their names: a slice of a Sequential keeps its model's ('2', '3', ...), as in
        # torch.nn, so that the state dicts' keys (and the ties, found by name) are the same.
        result = tnn.Sequential(
            OrderedDict(
                (name, _to_torch(child, f"{path}.{name}" if path else name))
                for name, child in module.named_children()
            )
        )
    elif kind is nn.Linear:
        assert isinstance(module, nn.Linear)
        if module.weight is None:  # (minidl's forward refuses it too)
            raise ValueError("its weight is None, removed with register_parameter('weight', None)")
        weight = module.weight.data
        # Built on the meta device, then given uninitialised memory: torch.nn.Linear's own
        # initialisation would draw from torch's global generator (of the CPU or of the device).
        linear = tnn.Linear(
            module.in_features,
            module.out_features,
            bias=module.bias is not None,
            dtype=weight.dtype,
            device="meta",
        ).to_empty(device=weight.device)
        _copy_parameter("weight", linear.weight, weight)
        if module.bias is not None:
            _copy_parameter("bias", linear.bias, module.bias.data)
        result = linear
    elif kind is nn.BatchNorm1d:
        assert isinstance(module, nn.BatchNorm1d)
        mean = module.running_mean
        # As Linear, though its initial values are constants: every value is copied below.
        norm = tnn.BatchNorm1d(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            dtype=mean.dtype,
            device="meta",
        ).to_empty(device=mean.device)
        if module.affine:
            # (one of the two removed with register_parameter(name, None): removed here too,
            # where it was left as uninitialised memory)
            for name, parameter in (("weight", module.weight), ("bias", module.bias)):
                if parameter is None:
                    norm.register_parameter(name, None)
                else:
                    _copy_parameter(name, getattr(norm, name), parameter.data)
        for name, buffer in module._buffers.items():
            if name in norm._buffers:  # (another, registered by hand, is refused by the caller)
                target = getattr(norm, name)
                if name == "num_batches_tracked":
                    norm.register_buffer(name, _count(target, buffer))
                else:
                    _copy_parameter(name, target, buffer)
        result = norm
    elif kind is nn.Residual:
        assert isinstance(module, nn.Residual)
        block = module._modules.get("block")
        if block is None:  # (deleted, or set to None: minidl's forward fails on it too)
            raise ValueError("its block was removed")
        result = TorchResidual(_to_torch(block, f"{path}.block" if path else "block"))
    elif kind is nn.LeakyReLU:
        assert isinstance(module, nn.LeakyReLU)
        result = tnn.LeakyReLU(module.negative_slope)
    elif kind is nn.ELU:
        assert isinstance(module, nn.ELU)
        result = tnn.ELU(module.alpha)
    elif kind is nn.GELU:
        assert isinstance(module, nn.GELU)
        result = tnn.GELU(approximate=module.approximate)
    elif kind is nn.Dropout:
        assert isinstance(module, nn.Dropout)
        result = tnn.Dropout(module.p)
    elif kind is nn.SELU:
        result = tnn.SELU()  # (the constants of both are fixed)
    elif kind is nn.Softmax:
        result = tnn.Softmax(dim=1)
    elif kind is nn.LogSoftmax:
        result = tnn.LogSoftmax(dim=1)
    elif kind in _SIMPLE_TO_TORCH:
        result = _SIMPLE_TO_TORCH[kind]()
    else:
        raise _unsupported_minidl(path, kind)
    return result


def _unsupported_minidl(path: str, kind: type) -> ConversionError:
    """The refusal of a minidl module of a type that :func:`to_torch` does not convert."""
    hint = (
        " (a stack of models: convert each, from minidl.nn.unstack_model(stack, index))"
        if kind in (nn.BatchedLinear, nn.StackedActivation)
        else ""
    )
    return ConversionError(
        f"to_torch: cannot convert {_path_name(path)} of type "
        f"{kind.__module__}.{kind.__qualname__}{hint}; supported: "
        f"{', '.join(_SUPPORTED_MINIDL)}"
    )


@overload
def from_torch(model: tnn.Sequential) -> nn.Sequential: ...


@overload
def from_torch(model: tnn.Linear) -> nn.Linear: ...


@overload
def from_torch(model: tnn.Module) -> Module: ...


def from_torch(model: tnn.Module) -> Module:
    """Build the minidl equivalent of a ``torch.nn`` model, with copied parameters and buffers.

    Args:
        model: a ``torch.nn.Module`` built from the layers listed in the module docstring
            (``Softmax`` and ``LogSoftmax`` with ``dim=1`` or ``-1``; ``BatchNorm1d`` with
            running statistics that it tracks, ``track_running_stats`` left ``True``).

    Returns:
        A new minidl :class:`~minidl.nn.Module` with the same dtype, device, training mode and
        outputs (a :class:`~minidl.nn.Sequential` for a ``torch.nn.Sequential``, a
        :class:`~minidl.nn.Linear` for a ``torch.nn.Linear``, as a type checker is told).

    Raises:
        ConversionError: a layer has no minidl counterpart (or uses an unsupported option),
            has hooks (forward, forward pre-, backward or backward pre-hooks, which may change
            what it computes; the old ``torch.nn.utils.weight_norm`` is one) or
            parametrizations, a ``forward`` replaced on the object, parameters, buffers or
            child modules that its counterpart has not (registered by hand: a child of a
            ``Linear``, say, which its forward does not call, would be dropped with its
            tensors), tensors of several dtypes or devices, or a tensor of a shape its sizes do
            not give, is a lazy layer not yet initialised, is ``None`` (a child, block or
            weight set to ``None``), or has ``inplace=True`` where it gets the input of a
            ``TorchResidual``'s block (which the skip connection adds); the message gives its
            path (e.g. ``'1.0'``) and type. So too while ``torch.nn`` holds a hook that every
            module runs (``register_module_forward_hook`` and the like).
        TypeError: ``model`` is not a ``torch.nn.Module``.
    """
    if not isinstance(model, tnn.Module):
        if isinstance(model, Module):
            raise TypeError(
                f"from_torch: expected a torch.nn.Module, got minidl's {type(model).__name__}, "
                "which is minidl's already (to_torch converts one into torch.nn)"
            )
        if isinstance(model, type):  # (torch.nn.Linear, uncalled)
            raise TypeError(
                f"from_torch: expected a torch.nn.Module, got the class {model.__module__}."
                f"{model.__qualname__}; pass an instance, built with its arguments"
            )
        raise TypeError(f"from_torch: expected a torch.nn.Module, got {type(model).__name__}")
    _check_no_global_hooks()
    converted: dict[str, Module] = {}
    result = _from_torch(model, "", {}, converted)
    # (after the conversion's own refusals: a layer of a type not converted, a lazy one whose
    # parameters hold no memory yet, is refused for that first; the conversion copied)
    _refuse_untied_sharing(
        "from_torch",
        [("parameter", name, p.detach()) for name, p in model.named_parameters()]
        + [("buffer", name, b.detach()) for name, b in model.named_buffers()],
    )
    _tie_minidl(model, result, converted)
    return result


def _refuse_untied_sharing(where: str, named: list[tuple[str, str, Tensor]]) -> None:
    """Refuse two tensors of ``named``, ``(kind, name, tensor)`` (the model's parameters and
    buffers, each once), over one memory: two Parameters (``b.weight =
    nn.Parameter(a.weight.data)``), or two batch norms' running statistics (``b.running_mean =
    a.running_mean.view(3)``). Each would be copied into a tensor of its own, which the layers
    then update apart where the model updates one memory (one tensor at two places is tied:
    see :func:`_tie_minidl` and :func:`_tie_torch`), as minidl's Sequential refuses two
    Parameters over one memory."""
    kinds = {name: kind for kind, name, _ in named}
    pair = first_overlap((name, tensor) for _, name, tensor in named)
    if pair is None:
        return
    first, second = pair
    if kinds[first] == kinds[second] == "parameter":
        raise ConversionError(
            f"{where}: parameters {first!r} and {second!r} are two Parameters over one "
            "tensor's memory, which a conversion would copy apart (untying them); tie them as "
            f"one Parameter ({second.rpartition('.')[2]} set to the Parameter at {first!r}), "
            "which converts tied, or give each its own tensor (.clone())"
        )
    raise ConversionError(
        f"{where}: the {kinds[first]} {first!r} and the {kinds[second]} {second!r} are two "
        "tensors over one memory, which a conversion would copy apart (the layers then "
        "updating copies of their own); register one tensor at both places, which converts "
        "tied, or give each its own (.clone())"
    )


def _ties(names: Iterator[tuple[str, object]]) -> Iterator[tuple[str, str]]:
    """``(name, first name)`` of each parameter or buffer met again under another name (tied
    weights, shared running statistics)."""
    first: dict[int, str] = {}
    for name, parameter in names:
        if id(parameter) in first:
            yield name, first[id(parameter)]
        else:
            first[id(parameter)] = name


def _tie_torch(model: Module, twin: tnn.Module) -> None:
    """Tie in ``twin`` the parameters tied in ``model`` (one Parameter in two modules), and the
    buffers (one tensor, the running statistics of two batch norms, which both update in
    place): the conversion made one for each place."""
    for name, first in _ties(model.named_parameters(remove_duplicate=False)):
        owner, _, leaf = name.rpartition(".")
        setattr(twin.get_submodule(owner), leaf, twin.get_parameter(first))
    for name, first in _ties(model.named_buffers(remove_duplicate=False)):
        owner, _, leaf = name.rpartition(".")
        setattr(twin.get_submodule(owner), leaf, twin.get_buffer(first))


def _tie_minidl(model: tnn.Module, result: Module, converted: dict[str, Module]) -> None:
    """Tie in ``result`` the parameters and buffers tied in ``model`` (as :func:`_tie_torch`),
    then make the parameters of each outermost ``Sequential`` (``result``, or one inside a
    ``Residual``) one flat buffer again (the tied copies left holes in it). ``converted`` maps
    the path of each module of ``model`` to its conversion: the names of ``result`` are
    others where ``model`` names its children (``'fc'``) or is a slice (``'2'``, ...)."""
    tied = False
    for name, first in _ties(model.named_parameters(remove_duplicate=False)):
        owner, _, leaf = name.rpartition(".")
        first_owner, _, first_leaf = first.rpartition(".")
        parameter = converted[first_owner]._parameters[first_leaf]
        converted[owner].register_parameter(leaf, parameter)
        tied = True
    for name, first in _ties(model.named_buffers(remove_duplicate=False)):
        owner, _, leaf = name.rpartition(".")
        first_owner, _, first_leaf = first.rpartition(".")
        converted[owner].register_buffer(leaf, converted[first_owner]._buffers[first_leaf])
    if tied:
        _flatten_outermost(result)


def _flatten_outermost(module: Module) -> None:
    """Flatten ``module`` if a ``Sequential``, else each outermost ``Sequential`` below it (an
    inner one is part of its outer one's buffer: flattening it on its own would split that)."""
    if isinstance(module, nn.Sequential):
        module._flatten()
        return
    for child in module.children():
        _flatten_outermost(child)


def _unsupported(path: str, module: tnn.Module, why: str = "") -> ConversionError:
    kind = type(module)
    detail = f" ({why})" if why else ""
    return ConversionError(
        f"from_torch: cannot convert {_path_name(path)} of type "
        f"{kind.__module__}.{kind.__qualname__}{detail}; supported: "
        f"{', '.join(_SUPPORTED_TORCH)}"
    )


def _from_torch(
    module: tnn.Module, path: str, trained: dict[int, str], converted: dict[str, Module]
) -> Module:
    """``module`` converted; ``trained`` maps the modules with parameters converted so far to
    their paths (a torch model may use one module at several places, which minidl cannot), and
    ``converted`` maps the path of each module converted to its conversion."""
    kind = type(module)
    # With parameters or buffers (BatchNorm1d(affine=False)'s running statistics): two
    # converted copies would train or track apart.
    if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
        if id(module) in trained:
            raise ConversionError(
                f"from_torch: {_path_name(path)} is the {kind.__qualname__} already at "
                f"{trained[id(module)]!r}: one module object used at two places, which minidl "
                "cannot express (each of its modules keeps its own forward's cache for its "
                "backward); share its tensors instead, two modules holding the same Parameter "
                "(second.weight = first.weight) or buffer, which converts, or give each place a "
                "copy of its own (copy.deepcopy)"
            )
        trained[id(module)] = path
    # A type not converted is refused for its type first (a refusal of its hooks or its lazy
    # sizes would ask for a change that cannot make it convertible); a lazy module that becomes
    # a converted type, and a parametrized one of a converted type, are refused for that below.
    becomes = (
        getattr(module, "cls_to_become", None) if isinstance(module, LazyModuleMixin) else None
    )
    if not (
        kind in _CONVERTED_TORCH
        or becomes in _CONVERTED_TORCH
        or (parametrize.is_parametrized(module) and kind.__mro__[1] in _CONVERTED_TORCH)
    ):
        raise _unsupported(path, module)
    _check_not_lazy(module, path)
    _check_no_hooks(module, path)
    # (Only on the types converted: a torch.jit.ScriptModule sets its forward on the object,
    # and is refused for its type.)
    if kind in _CONVERTED_TORCH and "forward" in vars(module):
        forward = vars(module)["forward"]
        name = getattr(forward, "__qualname__", type(forward).__qualname__)
        raise _refused(
            "from_torch",
            path,
            kind,
            f"its forward is replaced on the object by {name}, which minidl cannot carry and "
            "which may change what it computes; delete it (del layer.forward) first",
        )
    own: dict[str, Tensor] = {
        name: tensor for name, tensor in module._parameters.items() if tensor is not None
    }
    own.update((name, tensor) for name, tensor in module._buffers.items() if tensor is not None)
    _check_tensors("from_torch", path, kind, own)
    # A constructor that refuses a setting (torch.nn.LeakyReLU(inf): minidl's slope is finite)
    # names the layer (its children are named at theirs).
    with _building("from_torch", path, kind):
        result = _minidl_layer(module, path, trained, converted)
    _check_carried(
        "from_torch", path, kind, own, {*result._parameters, *result._buffers}, type(result)
    )
    # (a Sequential's children are all converted, renumbered; a child set to None holds nothing)
    if kind is not tnn.Sequential:
        children = [name for name, child in module._modules.items() if child is not None]
        _check_carried(
            "from_torch", path, kind, children, result._modules, type(result), "child modules"
        )
    result.training = module.training  # this module's mode only, as in _to_torch
    converted[path] = result
    return result


def _check_not_lazy(module: tnn.Module, path: str) -> None:
    """Refuse a lazy module (``torch.nn.LazyLinear``) whose first forward has not run: that
    forward sets its sizes and its class, with a forward pre-hook that must not be removed
    (the way out that :func:`_check_no_hooks` would give). A state dict loaded into it sets
    its parameters but neither its sizes (``in_features`` stays 0) nor its class."""
    if isinstance(module, LazyModuleMixin):
        becomes = getattr(module, "cls_to_become", None)
        then = f", which makes it a torch.nn.{becomes.__name__}" if becomes is not None else ""
        what = (
            "whose sizes are not known yet"
            if module.has_uninitialized_params()
            else "whose parameters were loaded but whose first forward, which sets its sizes, "
            "has not run"
        )
        raise _refused(
            "from_torch",
            path,
            type(module),
            f"a lazy module {what}: run one forward through the model first{then}",
        )


def _check_no_hooks(module: tnn.Module, path: str) -> None:
    """Refuse a module with hooks: they may change its input, output or gradients (the hook
    of ``torch.nn.utils.weight_norm`` computes the weight), and minidl's modules have none, so
    the converted model would compute something else."""
    registries = (
        ("forward pre-hook", module._forward_pre_hooks),
        ("forward hook", module._forward_hooks),
        ("backward pre-hook", module._backward_pre_hooks),
        ("backward hook", module._backward_hooks),
    )
    for what, hooks in registries:
        for hook in hooks.values():
            name = getattr(hook, "__qualname__", type(hook).__qualname__)
            # Those of torch.nn.utils have their own remover, which keeps the values computed.
            way_out = next(
                (
                    remover
                    for kind, remover in _HOOK_REMOVERS.items()
                    if any(base.__qualname__ == kind for base in type(hook).__mro__)
                ),
                "the handle that registered it has remove()",
            )
            raise _refused(
                "from_torch",
                path,
                type(module),
                f"it has a {what}, {name}, which minidl cannot carry and which may change what "
                f"it computes; remove it ({way_out}) first",
            )
    # A parameter's own hooks change its gradient as torch accumulates it (register_hook,
    # register_post_accumulate_grad_hook), which minidl's layer would not.
    for name, parameter in module.named_parameters(recurse=False):
        tensor_hooks: tuple[tuple[str, object], ...] = (
            ("gradient hook (register_hook)", parameter._backward_hooks),
            (
                "post-accumulate-grad hook (register_post_accumulate_grad_hook)",
                getattr(parameter, "_post_accumulate_grad_hooks", None),
            ),
        )
        for hook_kind, held in tensor_hooks:
            if held:
                raise _refused(
                    "from_torch",
                    path,
                    type(module),
                    f"its parameter {name!r} has a {hook_kind}, which minidl cannot carry and which "
                    "may change its gradient; remove it (the handle that registered it has "
                    "remove()) first",
                )


#: torch.nn's registries of the hooks that every module runs, and how each is registered.
_GLOBAL_HOOKS = (
    ("_global_forward_pre_hooks", "forward pre-hook (register_module_forward_pre_hook)"),
    ("_global_forward_hooks", "forward hook (register_module_forward_hook)"),
    ("_global_backward_pre_hooks", "backward pre-hook (register_module_full_backward_pre_hook)"),
    ("_global_backward_hooks", "backward hook (register_module_full_backward_hook)"),
)


def _check_no_global_hooks() -> None:
    """Refuse to convert while torch.nn holds a hook that every module runs (registered by
    ``torch.nn.modules.module.register_module_forward_hook`` and the like): the torch model
    computes with it, which the converted one would not (as for a module's own hooks, see
    :func:`_check_no_hooks`)."""
    from torch.nn.modules import module as registries

    for attribute, what in _GLOBAL_HOOKS:
        for hook in getattr(registries, attribute, {}).values():
            name = getattr(hook, "__qualname__", type(hook).__qualname__)
            raise ConversionError(
                f"from_torch: torch.nn has a global {what}, {name}, which every torch.nn module "
                "runs and minidl cannot carry, and which may change what the model computes; "
                "remove it (the handle that registered it has remove()) first"
            )


#: The hooks that torch.nn.utils registers, by class, and what removes each of them.
_HOOK_REMOVERS = {
    "WeightNorm": "torch.nn.utils.remove_weight_norm(layer)",
    "SpectralNorm": "torch.nn.utils.remove_spectral_norm(layer)",
    "BasePruningMethod": "torch.nn.utils.prune.remove(layer, name)",
}


def _minidl_layer(
    module: tnn.Module, path: str, trained: dict[int, str], converted: dict[str, Module]
) -> Module:
    """``module`` as a minidl module, its children converted by :func:`_from_torch`."""
    kind = type(module)
    scratch: torch.Generator | None = torch.Generator().manual_seed(_SCRATCH_SEED)
    result: Module
    if kind is tnn.Sequential:
        # Every place, as torch's forward runs them: named_children() would skip a module
        # used twice (an activation object reused is common); each place gets its own.
        # (A child set to None is refused, as torch's forward would fail calling it.)
        children = [
            _from_torch(_not_none(child, where), where, trained, converted)
            for name, child in module._modules.items()
            for where in [f"{path}.{name}" if path else name]
        ]
        result = nn.Sequential(*children)
    elif kind is tnn.Linear:
        assert isinstance(module, tnn.Linear)
        weight = module.weight
        if weight is None:  # (torch's forward fails on it too)
            raise _unsupported(path, module, "weight set to None")
        if weight.device.type == "meta":
            scratch = None  # (no generator there, and nothing drawn: meta tensors hold no values)
        elif weight.device.type != "cpu":
            scratch = torch.Generator(device=weight.device).manual_seed(_SCRATCH_SEED)
        linear = nn.Linear(
            module.in_features,
            module.out_features,
            bias=module.bias is not None,
            dtype=weight.dtype,
            device=weight.device,
            generator=scratch,
        )
        _copy_parameter("weight", linear.weight.data, weight)
        if module.bias is not None and linear.bias is not None:
            _copy_parameter("bias", linear.bias.data, module.bias)
        result = linear
    elif kind is tnn.BatchNorm1d:
        assert isinstance(module, tnn.BatchNorm1d)
        running_mean, running_var = module.running_mean, module.running_var
        if not module.track_running_stats:  # (also set after construction, buffers kept:
            # torch's training then leaves them as they are, where minidl's updates them)
            raise _unsupported(path, module, "track_running_stats=False")
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            if getattr(module, name) is None:
                raise _refused("from_torch", path, kind, f"its {name} is set to None")
        assert running_mean is not None and running_var is not None
        norm = nn.BatchNorm1d(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            dtype=running_mean.dtype,
            device=running_mean.device,
        )
        if module.affine:
            # (one of the two set to None, as torch allows: removed here too)
            for name in ("weight", "bias"):
                parameter = getattr(module, name)
                if parameter is None:
                    norm.register_parameter(name, None)
                else:
                    _copy_parameter(name, getattr(norm, name).data, parameter)
        _copy_parameter("running_mean", norm.running_mean, running_mean)
        _copy_parameter("running_var", norm.running_var, running_var)
        count = module.num_batches_tracked
        assert count is not None  # (refused above)
        norm.register_buffer("num_batches_tracked", _count(norm.num_batches_tracked, count))
        result = norm
    elif kind is TorchResidual:
        assert isinstance(module, TorchResidual)
        where = f"{path}.block" if path else "block"
        block = _not_none(module._modules.get("block"), where)
        _check_input_kept(block, where, path)
        result = nn.Residual(_from_torch(block, where, trained, converted))
    elif kind is tnn.LeakyReLU:
        assert isinstance(module, tnn.LeakyReLU)
        result = nn.LeakyReLU(module.negative_slope)
    elif kind is tnn.ELU:
        assert isinstance(module, tnn.ELU)
        result = nn.ELU(module.alpha)
    elif kind is tnn.GELU:
        assert isinstance(module, tnn.GELU)
        # (an approximate set after construction, which torch.nn.GELU does not check, is
        # refused by GELU's constructor, naming it)
        result = nn.GELU(approximate=module.approximate)
    elif kind is tnn.Dropout:
        assert isinstance(module, tnn.Dropout)
        result = nn.Dropout(module.p)
    elif kind in (tnn.Softmax, tnn.LogSoftmax):
        assert isinstance(module, tnn.Softmax | tnn.LogSoftmax)
        dim = module.dim
        # (True and 1.0 equal 1, and torch's forward refuses them: not an int)
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim not in (1, -1):
            raise _unsupported(path, module, f"dim={dim!r}; only dim=1 (or -1) is supported")
        result = nn.Softmax(dim=1) if kind is tnn.Softmax else nn.LogSoftmax(dim=1)
    elif kind in _SIMPLE_FROM_TORCH:
        result = _SIMPLE_FROM_TORCH[kind]()
    elif parametrize.is_parametrized(module):
        raise _unsupported(
            path,
            module,
            "a parametrized layer: torch.nn.utils.parametrize.remove_parametrizations(layer, "
            "name) first, which keeps the values it computes",
        )
    else:
        raise _unsupported(path, module)
    return result


def _check_input_kept(block: tnn.Module, where: str, residual: str) -> None:
    """Refuse a ``TorchResidual`` whose block may change its input in place (a
    ``ReLU(inplace=True)`` first in it): torch's skip connection then adds the changed input,
    ``relu(x) + relu(x)`` for that block alone, where minidl's layers never change their input
    and its ``Residual`` computes ``x + relu(x)``. (Elsewhere ``inplace=True`` changes nothing
    that the model computes, and is not carried over.)"""
    found = _in_place_at_input(block, where)
    if found is None:
        return
    path, layer = found
    owner = f"the TorchResidual at {residual!r}" if residual else "the TorchResidual (the model)"
    raise _refused(
        "from_torch",
        path,
        type(layer),
        f"inplace=True at the input of the block of {owner}: it changes the input that the "
        "skip connection adds, so that torch.nn computes changed(x) + block(x), where minidl's "
        "layers never change their input (x + block(x)); set its inplace to False",
    )


def _in_place_at_input(module: tnn.Module, path: str) -> tuple[str, tnn.Module] | None:
    """The first layer (its path and itself) that may change in place the tensor given to
    ``module``: one with ``inplace=True``, reached from ``module`` through the first children of
    ``Sequential``s and the blocks of ``TorchResidual``s, past the layers that may return their
    input itself (:func:`_may_return_its_input`); ``None`` where there is none."""
    if getattr(module, "inplace", False):
        return path, module
    kind = type(module)
    if kind is TorchResidual:
        block = module._modules.get("block")
        return None if block is None else _in_place_at_input(block, f"{path}.block")
    if kind is tnn.Sequential:
        for name, child in module._modules.items():
            if child is None:  # (refused, naming it, when it is converted)
                return None
            found = _in_place_at_input(child, f"{path}.{name}")
            if found is not None or not _may_return_its_input(child):
                return found
    return None


def _may_return_its_input(module: tnn.Module) -> bool:
    """Whether ``module`` may return the tensor it is given, itself: an ``Identity``, a
    ``Dropout`` (in evaluation mode or with ``p = 0``, whatever the mode it has now: it may
    change), a ``Sequential`` of such layers only (an empty one too)."""
    kind = type(module)
    if kind is tnn.Identity or kind is tnn.Dropout:
        return True
    return kind is tnn.Sequential and all(
        child is not None and _may_return_its_input(child) for child in module._modules.values()
    )


def _not_none(child: tnn.Module | None, path: str) -> tnn.Module:
    """``child``, the module at ``path``; refused where it is ``None`` (set so by hand), which
    torch's forward would call and fail on, and which minidl has no place for."""
    if child is None:
        raise ConversionError(
            f"from_torch: cannot convert {_path_name(path)}, which is None (a child set to None, "
            "which torch's forward cannot call either); remove it or put a layer there"
        )
    return child


_SIMPLE_TO_TORCH: dict[type[Module], type[tnn.Module]] = {
    nn.ReLU: tnn.ReLU,
    nn.Tanh: tnn.Tanh,
    nn.Sigmoid: tnn.Sigmoid,
    nn.SiLU: tnn.SiLU,
    nn.Identity: tnn.Identity,
}
_SIMPLE_FROM_TORCH: dict[type[tnn.Module], type[Module]] = {
    tnn.SELU: nn.SELU,
    **{torch_kind: minidl_kind for minidl_kind, torch_kind in _SIMPLE_TO_TORCH.items()},
}
#: The minidl types that :func:`to_torch` converts, and the torch.nn types that
#: :func:`from_torch` converts.
_CONVERTED_MINIDL = frozenset(
    {
        nn.Sequential,
        nn.Linear,
        nn.BatchNorm1d,
        nn.Residual,
        nn.LeakyReLU,
        nn.ELU,
        nn.GELU,
        nn.Dropout,
        nn.SELU,
        nn.Softmax,
        nn.LogSoftmax,
        *_SIMPLE_TO_TORCH,
    }
)
_CONVERTED_TORCH = frozenset(
    {
        tnn.Sequential,
        tnn.Linear,
        tnn.BatchNorm1d,
        TorchResidual,
        tnn.LeakyReLU,
        tnn.ELU,
        tnn.GELU,
        tnn.Dropout,
        tnn.Softmax,
        tnn.LogSoftmax,
        *_SIMPLE_FROM_TORCH,
    }
)
_SUPPORTED_MINIDL = (
    "Sequential",
    "Linear",
    "ReLU",
    "Tanh",
    "Sigmoid",
    "LeakyReLU",
    "ELU",
    "SELU",
    "GELU",
    "SiLU",
    "Dropout",
    "BatchNorm1d",
    "Identity",
    "Softmax",
    "LogSoftmax",
    "Residual",
)
_SUPPORTED_TORCH = (*_SUPPORTED_MINIDL[:-1], "TorchResidual")
