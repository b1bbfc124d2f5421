"""Stacking R networks of one architecture into one network that trains them all at once."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from minidl.nn.activation import Activation
from minidl.nn.batched_linear import BatchedLinear
from minidl.nn.linear import Linear
from minidl.nn.module import Module
from minidl.nn.parameter import Parameter
from minidl.nn.sequential import Sequential

__all__ = ["model_parameters", "stack_models", "unstack_model"]


def stack_models(models: Sequence[Sequential]) -> Sequential:
    """One :class:`Sequential` that runs R networks of the same architecture side by side.

    Layer ``i`` of the result is a :class:`BatchedLinear` stacking the ``i``-th :class:`Linear`
    of every model (copies of their parameters), or the models' shared element-wise activation.
    The stacked network takes ``(R, N, features)`` and returns ``(R, N, outputs)``; with a loss
    given ``(R, N, C)`` predictions, one training step of the stack is one step of each model.

    Args:
        models: R >= 1 :class:`Sequential` networks of :class:`Linear` layers and activations,
            with the same layer types, sizes and activation settings.

    Raises:
        ValueError: the models differ in architecture (the message names the first layer that
            differs).
        TypeError: a layer that cannot be stacked (only Linear and element-wise activations can).
    """
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
    layers: list[Module] = []
    for position, reference in enumerate(first):
        column = [model[position] for model in models]
        if isinstance(reference, Linear):
            if not all(isinstance(layer, Linear) for layer in column):
                raise ValueError(f"stack_models: layer {position} is not a Linear in every model")
            layers.append(
                BatchedLinear.stack([layer for layer in column if isinstance(layer, Linear)])
            )
        elif isinstance(reference, Activation):
            if any(
                repr(layer) != repr(reference) or type(layer) is not type(reference)
                for layer in column
            ):
                raise ValueError(
                    f"stack_models: layer {position} differs between models "
                    f"({sorted({repr(layer) for layer in column})})"
                )
            layers.append(copy.deepcopy(reference))
        else:
            raise TypeError(
                f"stack_models: cannot stack layer {position} ({type(reference).__name__}); only "
                "Linear layers and element-wise activations can be stacked"
            )
    return Sequential(*layers)


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
        IndexError: ``index`` is out of range, or the slice is empty or has a step.
    """
    parameters = []
    for position, layer in enumerate(stacked):
        if not isinstance(layer, BatchedLinear):
            continue
        models = layer.models
        if isinstance(index, slice):
            start, stop, step = index.indices(models)
            if step != 1 or start >= stop:
                raise IndexError(
                    f"model_parameters: expected a non-empty slice of step 1 within {models} "
                    f"models, got {index}"
                )
        elif not 0 <= index < models:
            raise IndexError(f"model_parameters: index {index} is out of range for {models} models")
        for name, stacked_parameter in (("weight", layer.weight), ("bias", layer.bias)):
            if stacked_parameter is None:
                continue
            parameter = Parameter(stacked_parameter.data[index], name=f"[{position}].{name}")
            parameter.grad = stacked_parameter.grad[index]
            parameters.append(parameter)
    return parameters


def unstack_model(stacked: Sequential, index: int) -> Sequential:
    """Model ``index`` of a network made by :func:`stack_models`, as a plain :class:`Sequential`
    holding copies of its parameters."""
    layers: list[Module] = []
    for layer in stacked:
        if isinstance(layer, BatchedLinear):
            if not 0 <= index < layer.models:
                raise IndexError(
                    f"unstack_model: index {index} is out of range for {layer.models} models"
                )
            layers.append(layer.unstack()[index])
        else:
            layers.append(copy.deepcopy(layer))
    return Sequential(*layers)
