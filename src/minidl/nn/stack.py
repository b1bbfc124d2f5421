"""Stacking R networks of one architecture into one network that trains them all at once."""

from __future__ import annotations

import copy
import numbers
from collections.abc import Sequence
from types import MethodType
from typing import Literal, TypeVar

import torch

from minidl import anomaly
from minidl._setting import Setting
from minidl._validate import shown
from minidl.nn._cached_derivative import CachedDerivative
from minidl.nn.activation_base import Activation
from minidl.nn.batched_linear import BatchedLinear, check_stackable
from minidl.nn.flat import storage_key
from minidl.nn.linear import Linear
from minidl.nn.module import Module
from minidl.nn.parameter import Parameter
from minidl.nn.sequential import Sequential
from minidl.nn.stacked_activation import StackedActivation

__all__ = ["flat_model_parameters", "model_parameters", "stack_models", "unstack_model"]

#: Each model's block of a ``layout="model"`` stack starts on a multiple of this many bytes.
MODEL_ALIGNMENT = 64


def stack_models(
    models: Sequence[Sequential], *, layout: Literal["layer", "model"] = "layer"
) -> Sequential:
    """One :class:`Sequential` that runs R networks of the same architecture side by side.

    Layer ``i`` of the result is a :class:`BatchedLinear` stacking the ``i``-th :class:`Linear`
    of every model (copies of their parameter values; the stack's gradients start at zero, as
    a new model's do), or the models' shared element-wise activation,
    or, where the models' activations differ, a :class:`StackedActivation` applying each
    model's own.
    The stacked network takes ``(R, N, features)`` and returns ``(R, N, outputs)``; with a loss
    given ``(R, N, C)`` predictions, one training step of the stack is one step of each model.

    Modes: every module of the stack has the ``training`` flag of the modules it stacks, as
    :func:`copy.deepcopy` keeps them, so that :func:`unstack_model` gives each model back in
    its modes: the stack has the models' own, each :class:`BatchedLinear` that of the
    :class:`Linear` layers it stacks, and each activation its own, also where the models'
    activations differ only in their modes (a :class:`StackedActivation` then holds each
    model's, and has their mode where they share one, else the models'). The models' own modes,
    and those of the Linear layers at one position, must be alike: a stacked module has one
    mode for all its models.

    Where the parameters live (``layout``):

    - ``"layer"``: as in any :class:`Sequential`, each stacked parameter is one contiguous tensor
      ``(R, ...)`` and together they tile one flat buffer, so one optimizer over the whole stack
      runs its update once over that buffer.
    - ``"model"``: model ``r``'s parameters, all layers, form one contiguous block of the buffer,
      and the blocks are padded to a multiple of :data:`MODEL_ALIGNMENT` bytes (a stacked weight
      is then a view with the block size as its stride over models). A model's parameters then
      sit at the same memory alignment whatever the number of models in the stack and its
      position among them, which the products' kernels need to give it the same bits (they
      may round differently at another alignment; see below). Consecutive models' blocks are
      one flat :class:`Parameter` (:func:`flat_model_parameters`), which an optimizer of those
      models alone updates with one run of its update. A move or cast of the stack
      (``.to(...)``) lays it out by layer: stack models that already have the dtype and device
      wanted.

    When a model trains to the same bits in any stack: with ``layout="model"``, on the CPU with
    one intra-op thread, a model gets the same bits whatever its neighbours, their number (one
    included) and its position, where its activations also sit at the same alignment in every
    stack. A model's slice of an activation (a batch of inputs, each layer's output, the
    gradients flowing back) starts ``N * w`` elements after the previous model's, for a batch
    of N samples and a width w, and BLAS kernels choose their code by the alignment of each
    matrix (MKL computes the first elements of a row that starts off a 16-byte boundary with
    other code than the vectorised body). So ``N * w`` times the element size must be a
    multiple of 64 bytes (the alignment of a new CPU tensor) for every batch size N that
    occurs (the last, smaller batch of an epoch and a validation set included) and every width
    w of the network (its inputs, hidden layers and outputs). On the AMD EPYC CPUs measured
    (MKL; AVX2, and AVX-512 on a Zen 5), a multiple of 16 bytes suffices: in float32, ``N * w``
    a multiple of 4, as for the paper's batches of 100 and its 1000 validation points. Otherwise the products of a model
    at some positions differ in the last bits (a 2-25-25-25-2 network trained in batches of 25
    ended with other bits than alone at positions 1 to 3 of stacks of two to five models; in
    batches of 20 or 100, with the same bits at every position).

    Args:
        models: R >= 1 :class:`Sequential` networks of :class:`Linear` layers and activations,
            with the same layer sizes and an activation at the same positions.
        layout: ``"layer"`` (the default) or ``"model"``.

    Raises:
        ValueError: no model, or models without a Linear layer; the models differ in
            architecture (the message names the first layer that differs) or in the mode
            (``training``) of the models themselves or of the Linear layers at one position;
            a model ties one Parameter to two places, or
            holds parameters of more than one dtype or device (its forward refuses them); an
            unknown layout; a Linear whose ``weight`` or ``bias`` is a Parameter set by hand
            rather than the one registered (a TypeError where it is no Parameter), which the
            layer itself refuses.
        TypeError: a single model rather than a sequence of them, or anything else that is no
            sequence (a generator, a set, a tensor); a model that is not a :class:`Sequential`;
            a layer that cannot be stacked (only Linear and element-wise activations can, an
            activation of one's own with parameters or buffers not, whose copies in the stack
            would share them and leave them untrained); a
            model or a Linear layer of a subclass that overrides how its base class computes
            (``forward``, ``backward``, ...): the stack would compute as the base class; a
            method set on the instance of a model, of a Linear layer (``forward``,
            ``backward``, ``backward_parameters``, ``_apply``, ``_accumulate``,
            ``_accumulate_bias``) or of an activation (``forward``, ``backward``,
            ``backward_parameters``; its ``_forward`` and ``_backward`` are kept in the stack),
            which the stack would leave out; not the checks that :func:`minidl.detect_anomaly`
            sets there over the class's methods (the stack runs without them).
    """
    stacked = _stack_models(models, layout, modes=True)
    if not any(isinstance(layer, BatchedLinear) for layer in stacked):
        # (such a stack holds no stacked layer: unstack_model refused it as not made by
        # stack_models)
        raise ValueError(
            "stack_models: the models hold no Linear layer (models[0]'s modules: "
            f"{', '.join(type(layer).__name__ for layer in models[0]) or 'none'}); stack_models "
            "stacks networks of Linear layers and activations"
        )
    return stacked


def _stack_models(
    models: Sequence[Sequential], layout: Literal["layer", "model"], *, modes: bool
) -> Sequential:
    """:func:`stack_models`; with ``modes=False``, for a caller that puts the stack in training
    mode at once (:func:`minidl.rounds.fit_rounds`, as :func:`~minidl.train.fit` takes a model
    in any mode), the models' modes are neither checked nor kept: the stack is in training mode
    but for the activations, which keep theirs (one run for activations that differ in their
    modes alone)."""
    if layout not in ("layer", "model"):
        raise ValueError(f"stack_models: layout must be 'layer' or 'model', got {shown(layout)}")
    if isinstance(models, Module):
        raise TypeError(
            f"stack_models: expected a sequence of models, got a single {type(models).__name__}"
        )
    if not isinstance(models, Sequence) or isinstance(models, str | bytes):
        raise TypeError(
            "stack_models: expected a sequence (list or tuple) of Sequential models, got "
            f"{type(models).__name__}"
        )
    if not models:
        raise ValueError("stack_models: expected at least one model")
    first = models[0]
    for index, model in enumerate(models):
        if not isinstance(model, Sequential):
            raise TypeError(
                f"stack_models: models[{index}] must be a Sequential, got {type(model).__name__}"
            )
        if len(model) != len(first):
            raise ValueError(
                f"stack_models: models[{index}] has {len(model)} layers, models[0] has {len(first)}"
            )
        if modes and model.training != first.training:
            raise ValueError(
                f"stack_models: models[0] is in {_mode(first)} and models[{index}] in "
                f"{_mode(model)} (their own modes, not their layers'); a stack has one mode for "
                "all its models: put the models in the same mode (train() or eval())"
            )
        _refuse_overridden(
            f"models[{index}]",
            model,
            Sequential,
            _SEQUENTIAL_METHODS,
            "a stack runs its layers as Sequential does, not as the model would; stack plain "
            "Sequential models",
        )
        _refuse_set_on_instance(
            f"models[{index}]",
            model,
            _INSTANCE_METHODS,
            "a stack runs its layers as Sequential does, not with the model's own methods; "
            "train this model with fit or a loop of one's own instead (a subclass of "
            "Sequential that overrides them is refused too)",
        )
        places: dict[int, str] = {}
        kind: tuple[str, torch.dtype, torch.device] | None = None
        for name, parameter in model.named_parameters(remove_duplicate=False):
            # (one dtype and device a model, as its forward needs: a stack made them its first
            # parameter's, a float64 layer trained in float32, a bias cast to its weight's)
            value = parameter.data
            if kind is None:
                kind = (name, value.dtype, value.device)
            elif (value.dtype, value.device) != kind[1:]:
                raise ValueError(
                    f"stack_models: models[{index}]'s parameter {name!r} is {value.dtype} on "
                    f"{value.device}, its {kind[0]!r} {kind[1]} on {kind[2]}: a model's "
                    "parameters must share one dtype and device (call .to() on the model)"
                )
            if id(parameter) in places:
                raise ValueError(
                    f"stack_models: models[{index}] ties {name!r} to {places[id(parameter)]!r} "
                    "(one Parameter at two places), which a stack would train as two"
                )
            places[id(parameter)] = name
    layers: list[Module] = []
    for position, reference in enumerate(first):
        column = [model[position] for model in models]
        if isinstance(reference, Linear):
            linears = [layer for layer in column if isinstance(layer, Linear)]
            if len(linears) != len(column):
                raise ValueError(f"stack_models: layer {position} is not a Linear in every model")
            for index, layer in enumerate(linears):
                _refuse_overridden(
                    f"layer {position} of models[{index}]",
                    layer,
                    Linear,
                    _LINEAR_METHODS,
                    "a stack computes every model's layer as Linear does (BatchedLinear), not "
                    "as the model would; stack Linear layers of a class that keeps Linear's "
                    "computation",
                )
                _refuse_set_on_instance(
                    f"layer {position} of models[{index}]",
                    layer,
                    _LINEAR_INSTANCE_METHODS,
                    "a stack computes every model's layer as Linear does (BatchedLinear), not "
                    "with the layer's own methods; train this model with fit or a loop of one's "
                    "own instead (a subclass of Linear that overrides them is refused too)",
                )
                # (checked here too, in this function's words: BatchedLinear.stack's named a
                # layer of its own list, by the model's index)
                check_stackable(f"stack_models: layer {position} of models[{index}]", layer)
            _check_same_linear(position, linears)
            if modes:
                for index, layer in enumerate(linears):
                    if layer.training != linears[0].training:
                        raise ValueError(
                            f"stack_models: layer {position} is in {_mode(linears[0])} in "
                            f"models[0] and in {_mode(layer)} in models[{index}]; a stacked "
                            "Linear (BatchedLinear) has one mode for all its models: put these "
                            "layers in the same mode (train() or eval())"
                        )
            batched = BatchedLinear.stack(linears)
            batched.training = linears[0].training if modes else True
            layers.append(batched)
        elif isinstance(reference, Activation):
            if not all(isinstance(layer, Activation) for layer in column):
                raise ValueError(
                    f"stack_models: layer {position} is not an activation in every model"
                )
            for index, activation in enumerate(column):
                _refuse_state(f"layer {position} of models[{index}]", activation)
                _refuse_set_on_instance(
                    f"layer {position} of models[{index}]",
                    activation,
                    _INSTANCE_METHODS,
                    "a stack runs a copy of each model's activation, through the hooks "
                    "_forward and _backward where its class computes with them, so the forward, "
                    "backward and backward_parameters set on its instance are left out (or "
                    "called on the copy); override them in a subclass, or set _forward or "
                    "_backward on the instance instead (a stack keeps them), or train this "
                    "model with fit or a loop of one's own",
                )
            activations = [layer for layer in column if isinstance(layer, Activation)]
            runs = _activation_runs(activations, modes)
            if len(runs) == 1:
                layers.append(_uncached_copy(reference))
            else:
                stacked_activation = StackedActivation(runs)
                shared = {layer.training for layer in activations}
                stacked_activation.training = (
                    shared.pop() if len(shared) == 1 else first.training if modes else True
                )
                layers.append(stacked_activation)
        else:
            raise TypeError(
                f"stack_models: cannot stack layer {position} ({type(reference).__name__}); only "
                "Linear layers and element-wise activations (subclasses of Activation without "
                "parameters or buffers) can be stacked: train this model with fit"
            )
    stacked = Sequential(*layers)
    stacked.training = first.training if modes else True
    if layout == "model":
        _lay_out_by_model(list(stacked.parameters()), len(models))
    return stacked


#: The methods through which a :class:`Sequential` and a :class:`Linear` compute: a subclass
#: that overrides one computes otherwise than the stack, which runs Sequential's and
#: BatchedLinear's.
_SEQUENTIAL_METHODS = ("__call__", "forward", "backward", "backward_parameters")
_LINEAR_METHODS = (*_SEQUENTIAL_METHODS, "_apply", "_accumulate", "_accumulate_bias")

#: Those of them that a model's or a layer's instance may hold (Python looks ``__call__`` up on
#: the class): one set there computes otherwise than the stack too. So does one set on an
#: activation's instance, which the stack's copy of it holds but bypasses where it calls the
#: hooks ``_forward`` and ``_backward`` (those set on the instance are kept and called). The checks that :func:`minidl.detect_anomaly` sets on the
#: instances it watches, over the class's methods, are not methods of one's own.
_INSTANCE_METHODS = tuple(name for name in _SEQUENTIAL_METHODS if name != "__call__")
_LINEAR_INSTANCE_METHODS = tuple(name for name in _LINEAR_METHODS if name != "__call__")


def _refuse_overridden(
    what: str, module: Module, base: type[Module], names: Sequence[str], why: str
) -> None:
    """Raise a ``TypeError`` naming ``what`` if the class of ``module`` defines one of
    ``names`` otherwise than ``base``."""
    for name in names:
        if getattr(type(module), name) is not getattr(base, name):
            raise TypeError(
                f"stack_models: {what} is a {type(module).__name__}, whose class overrides "
                f"{base.__name__}.{name}: {why}"
            )


def _refuse_set_on_instance(what: str, module: Module, names: Sequence[str], why: str) -> None:
    """Raise a ``TypeError`` naming ``what`` if one of ``names`` is set on the instance of
    ``module``, but for :func:`minidl.detect_anomaly`'s checks of its class's methods."""
    for name in names:
        method = getattr(module, name)
        if (
            isinstance(method, MethodType)
            and method.__self__ is module
            and method.__func__ is getattr(type(module), name)
        ):
            # (its class's, found without asking for the instance's __dict__: on CPython 3.11
            # every later attribute read of a module whose __dict__ was asked for is slower)
            continue
        if name in vars(module) and not anomaly.checks_only(module, name):
            raise TypeError(
                f"stack_models: {what} ({type(module).__name__}) has {name} set on its "
                f"instance: {why}"
            )


def _check_same_linear(position: int, column: Sequence[Linear]) -> None:
    """The ``Linear`` layers at ``position`` must agree in shape, bias, dtype and device."""

    def description(layer: Linear) -> str:
        data = layer.weight.data
        return f"{layer!r} of {data.dtype} on {data.device}"

    first = description(column[0])
    for index, layer in enumerate(column[1:], start=1):
        if description(layer) != first:
            raise ValueError(
                f"stack_models: layer {position} differs between models[0] and "
                f"models[{index}]: {first} against {description(layer)}"
            )


def _refuse_state(where: str, activation: Module) -> None:
    """Refuse an activation of one's own with parameters or buffers (a learned slope, a running
    statistic): a stack runs copies of the models' activations, one per run of equal ones, and
    trains, saves and copies back the parameters of its :class:`BatchedLinear` layers alone, so
    such a state would be shared by the models of a run and left behind in the copy."""
    state = [f"parameter {name!r}" for name, _ in activation.named_parameters()] + [
        f"buffer {name!r}" for name, _ in activation.named_buffers()
    ]
    if state:
        raise TypeError(
            f"stack_models: cannot stack {where} ({type(activation).__name__}): it holds "
            f"{', '.join(state)}, and a stack trains the parameters of its Linear layers alone "
            "(it runs copies of the activations, whose state would be shared by the models and "
            "not written back); train this model with fit, or make the activation stateless"
        )


def _mode(module: Module) -> str:
    return "training mode" if module.training else "evaluation mode"


def _modes(module: Module) -> list[bool]:
    """The ``training`` flags of ``module`` and its descendants."""
    return [descendant.training for descendant in module.modules()]


def _activation_runs(column: Sequence[Activation], modes: bool) -> list[tuple[Activation, int]]:
    """Copies of the activations of consecutive models, one per run of equal activations (and,
    with ``modes``, of the same modes, theirs and their descendants')."""
    runs: list[tuple[Activation, int]] = []
    for layer in column:
        if (
            runs
            and _same_activation(layer, runs[-1][0])
            and (not modes or _modes(layer) == _modes(runs[-1][0]))
        ):
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((_uncached_copy(layer), 1))
    return runs


def _same_activation(a: Activation, b: Activation) -> bool:
    """Whether ``a`` and ``b`` compute the same function: the same class, ``repr``, public
    settings and private attributes, tensors among them, but the caches of the last forward
    that the built-in activations keep (an activation of one's own may keep a setting that its
    ``repr`` does not show, in a public or a private attribute, a tensor too: one taken for a
    cache of its own that differs makes two runs of one function, the safe way to err)."""
    if type(a) is not type(b) or repr(a) != repr(b):
        return False
    settings_a, settings_b = _public_settings(a), _public_settings(b)
    if settings_a.keys() != settings_b.keys():
        return False
    if not all(_equal(value, settings_b[name]) for name, value in settings_a.items()):
        return False
    # (one that only one of them has: they differ; at worst two runs of one function)
    private_a, private_b = _private_values(a), _private_values(b)
    return all(
        _equal(private_a.get(name, _MISSING), private_b.get(name, _MISSING))
        for name in private_a.keys() | private_b.keys()
    )


#: A private attribute that one activation lacks.
_MISSING = object()


def _equal(value: object, other: object) -> bool:
    if isinstance(value, torch.Tensor) or isinstance(other, torch.Tensor):
        if value is other:
            return True
        if not (
            isinstance(value, torch.Tensor)
            and isinstance(other, torch.Tensor)
            and not (value.is_meta or value.is_nested or other.is_nested)  # (values unread)
            and (value.dtype, value.device, value.layout)
            == (other.dtype, other.device, other.layout)
            and value.shape == other.shape
        ):
            return False
        try:
            return bool(torch.equal(value, other))
        except (RuntimeError, NotImplementedError):  # (values torch does not compare)
            return False
    try:
        return bool(value == other)
    except Exception:  # (a value whose comparison is not a truth value)
        return value is other


def _private_values(activation: Activation) -> dict[str, object]:
    """The private instance attributes of ``activation``, but its module registries and what
    the built-in activations keep from their last forward."""
    return {
        name: value
        for name, value in vars(activation).items()
        if name.startswith("_") and name not in _NOT_PRIVATE_SETTINGS
    }


#: Private instance attributes that are no setting: a module's registries, the modules that
#: share them through ``copy.copy`` (see :meth:`~minidl.nn.Module.__copy__`), and the dtype that
#: an activation computed in float32 for (``_narrow``, with its cache, from its last forward).
_NOT_PRIVATE_SETTINGS = (
    "_parameters",
    "_modules",
    "_buffers",
    "_shallow_copies",
    "_cache",
    "_narrow",
)


def _public_settings(activation: Activation) -> dict[str, object]:
    settings = {
        name: value
        for name, value in vars(activation).items()
        if not name.startswith("_") and name not in _NOT_SETTINGS
    }
    # Those kept by a Setting of the class (ELU's alpha, LeakyReLU's negative_slope), whose
    # value lives in a private attribute.
    for klass in type(activation).__mro__:
        for name, value in vars(klass).items():
            if isinstance(value, Setting) and name not in settings:
                settings[name] = getattr(activation, name)
    return settings


#: Public instance attributes that are no setting: the mode, and the methods that
#: :func:`minidl.detect_anomaly` sets on the modules it watches.
_NOT_SETTINGS = ("training", "forward", "backward", "backward_parameters")


def _lay_out_by_model(parameters: Sequence[Parameter], models: int) -> None:
    """Move the stacked ``parameters`` (each ``(R, ...)``) into one new buffer where each model's
    parameters are one block, padded to :data:`MODEL_ALIGNMENT` bytes (values and gradients)."""
    if not parameters:
        return
    first = parameters[0].data
    block = _model_block_size(parameters)
    with torch.inference_mode(False):  # normal tensors: updated in place anywhere
        values = torch.zeros(models * block, dtype=first.dtype, device=first.device)
        grads = torch.zeros_like(values)
    offset = 0
    for parameter in parameters:
        shape = parameter.data.shape
        strides = (block, *parameter.data[0].contiguous().stride())
        value = values.as_strided(shape, strides, offset)
        grad = grads.as_strided(shape, strides, offset)
        value.copy_(parameter.data)
        grad.copy_(parameter.grad)
        parameter.data, parameter.grad = value, grad
        offset += parameter.data[0].numel()


def _model_block_size(parameters: Sequence[Parameter]) -> int:
    """Elements of one model's block: its parameters, padded to :data:`MODEL_ALIGNMENT` bytes."""
    per_model = sum(parameter.data[0].numel() for parameter in parameters)
    step = max(MODEL_ALIGNMENT // parameters[0].data.element_size(), 1)
    return -(-per_model // step) * step


def flat_model_parameters(stacked: Sequential, index: int | slice) -> Parameter:
    """The parameters of model ``index`` (or of the models of a slice) of a network made by
    ``stack_models(..., layout="model")``, as one flat :class:`Parameter`, in place.

    Its ``data`` and ``grad`` are 1-D views of the models' blocks of the stack (their padding
    included), so an element-wise optimizer built on it updates those models with one run of its
    update.
    The padding is zero, its gradient too, and it stays zero under every element-wise optimizer
    whose update of a zero value with a zero gradient is zero (all of minidl's). It stays valid
    while the stack's tensors are not replaced (``stacked.to(...)`` replaces them).

    Args:
        stacked: a network made by ``stack_models(..., layout="model")``.
        index: a model index in ``[0, R)``, or a non-empty slice of models with step 1.

    Raises:
        TypeError, ValueError: ``stacked`` is not a network made by :func:`stack_models`
            (ValueError: or not with the ``"model"`` layout).
        TypeError: ``index`` is neither an integer nor a slice.
        IndexError: ``index`` is out of range, or the slice is empty or has a step.
    """
    models = _stacked_models(stacked)
    start, stop = _model_range("flat_model_parameters", index, models)
    parameters = list(stacked.parameters())
    block = _model_block_size(parameters) if parameters else 0
    base = parameters[0].data.storage_offset() if parameters else 0
    offset = base
    for parameter in parameters:
        for tensor in (parameter.data, parameter.grad):
            if tensor.stride(0) != block or tensor.storage_offset() != offset:
                raise ValueError(
                    "flat_model_parameters: the stack does not have the 'model' layout (build "
                    "it with stack_models(models, layout='model'))"
                )
            if storage_key(tensor) != storage_key(
                parameters[0].grad if tensor is parameter.grad else parameters[0].data
            ):
                raise ValueError("flat_model_parameters: the stack's parameters are not one buffer")
        offset += parameter.data[0].numel()
    size = (stop - start) * block
    first = parameters[0]
    flat = Parameter(
        first.data.as_strided((size,), (1,), base + start * block),
        name=f"models[{start}:{stop}]",
    )
    flat.grad = first.grad.as_strided((size,), (1,), base + start * block)
    return flat


def _stacked_models(stacked: Sequential, where: str = "flat_model_parameters") -> int:
    if not isinstance(stacked, Sequential):
        raise TypeError(
            f"{where}: expected a stack made by stack_models, got {type(stacked).__name__}"
        )
    layers = [layer for layer in stacked if isinstance(layer, BatchedLinear)]
    if not layers:
        raise ValueError(
            f"{where}: the network has no stacked layer (BatchedLinear); make it with stack_models"
        )
    return layers[0].models


def _model_range(
    where: str, index: int | slice, models: int, *, slices: bool = True
) -> tuple[int, int]:
    """``(start, stop)`` of a model index or slice, checked against ``models`` (``slices``:
    whether the caller takes slices, for the message that refuses another type)."""
    if isinstance(index, bool) or not isinstance(index, numbers.Integral | slice):
        kind = "an integer index or a slice" if slices else "an integer index"
        raise TypeError(f"{where}: expected {kind}, got {shown(index)}")
    if isinstance(index, slice):
        try:
            start, stop, step = index.indices(models)
        except TypeError:  # (a bound that is not an integer nor None)
            raise TypeError(
                f"{where}: expected a slice of integers or None, got {_slice_text(index)}"
            ) from None
        except ValueError:  # (a step of zero: refused as any other step below)
            start = stop = step = 0
        if step != 1 or start >= stop:
            raise IndexError(
                f"{where}: expected a non-empty slice of step 1 within {models} models, got "
                f"{_slice_text(index)}"
            )
        return start, stop
    if not 0 <= index < models:
        raise IndexError(f"{where}: index {shown(index)} is out of range for {models} models")
    return int(index), int(index) + 1


def _slice_text(index: slice) -> str:
    """``str(index)`` (``slice(0, 4, 2)``), its integers written by :func:`shown`."""
    return f"slice({shown(index.start)}, {shown(index.stop)}, {shown(index.step)})"


def model_parameters(stacked: Sequential, index: int | slice) -> list[Parameter]:
    """The parameters of model ``index`` (or of the models of a slice) of a network made by
    :func:`stack_models`, in place.

    Each returned :class:`Parameter` has ``data`` and ``grad`` that are views of the stack's
    (``layer.weight.data[index]``, ...), so an optimizer built on them updates those models
    alone, inside the stack: R such optimizers give the R models their own learning rates,
    hyper-parameters and schedules; with slices, each group of models shares one. They stay
    valid while the stack's tensors are not replaced (``stacked.to(...)`` replaces them).

    Args:
        stacked: a network made by :func:`stack_models`.
        index: a model index in ``[0, R)`` (views without the model dimension), or a slice of
            models with step 1 (views that keep it).

    Raises:
        TypeError, ValueError: ``stacked`` is not a network made by :func:`stack_models`.
        TypeError: ``index`` is neither an integer nor a slice.
        IndexError: ``index`` is out of range, or the slice is empty or has a step.
    """
    _model_range("model_parameters", index, _stacked_models(stacked, "model_parameters"))
    parameters = []
    for position, layer in enumerate(stacked):
        if not isinstance(layer, BatchedLinear):
            continue
        _model_range("model_parameters", index, layer.models)
        for name, stacked_parameter in (("weight", layer.weight), ("bias", layer.bias)):
            if stacked_parameter is None:
                continue
            parameter = Parameter(stacked_parameter.data[index], name=f"[{position}].{name}")
            parameter.grad = stacked_parameter.grad[index]
            parameters.append(parameter)
    return parameters


_ModuleT = TypeVar("_ModuleT", bound=Module)


def _uncached_copy(module: _ModuleT) -> _ModuleT:
    """A deep copy of ``module``; of an activation, without what its last forward cached (as
    a new one holds nothing), which in a stack covers every model (``(R, N, features)``: a
    model unstacked carried the others' activations, and its ``backward`` before a forward
    failed on their shape rather than as called before a forward), and in a model one model's
    (a stack carried it, the same way)."""
    copied = copy.deepcopy(module)
    if isinstance(copied, Activation):
        copied._cache = None
        if isinstance(copied, CachedDerivative):  # (the dtype the cache was made for)
            copied._narrow = None
    return copied


def unstack_model(stacked: Sequential, index: int) -> Sequential:
    """Model ``index`` of a network made by :func:`stack_models`, as a plain :class:`Sequential`
    holding copies of its parameter values (its gradients start at zero), in the stack's modes:
    the model has the stack's own ``training`` flag, each :class:`Linear` that of its
    :class:`BatchedLinear`, each activation its own (in a :class:`StackedActivation`, the
    model's), so that a model stacked and unstacked has the modes it had.

    Raises:
        TypeError, ValueError: ``stacked`` is not a network made by :func:`stack_models`.
        TypeError: ``index`` is a slice (one model at a time; :func:`model_parameters` takes
            slices), or not an integer.
        IndexError: ``index`` is not a model index in ``[0, R)``.
    """
    models = _stacked_models(stacked, "unstack_model")
    if isinstance(index, slice):
        raise TypeError(
            f"unstack_model: expected the index of one model, got {index}; unstack the models "
            "of a slice one by one"
        )
    _model_range("unstack_model", index, models, slices=False)
    layers: list[Module] = []
    for layer in stacked:
        if isinstance(layer, BatchedLinear):
            linear = layer.model(index)
            linear.training = layer.training
            layers.append(linear)
        elif isinstance(layer, StackedActivation):
            layers.append(_uncached_copy(layer.activation_of(index)))
        else:
            layers.append(_uncached_copy(layer))
    model = Sequential(*layers)
    model.training = stacked.training
    return model
