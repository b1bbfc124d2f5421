"""A residual connection around a block."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from minidl import anomaly
from minidl.nn._checks import (
    STRIDED,
    check_dense,
    check_grad_output,
    given_module,
    refuse_given_gradient_dtype,
)
from minidl.nn._gradient_memory import GradientMemory
from minidl.nn.loss import check_not_a_loss
from minidl.nn.module import TRAINING_IN_TRIAL, Module, trial_key, updating_parts

__all__ = ["Residual"]


class Residual(Module):
    r"""A skip connection :math:`y = x + f(x)` around a block :math:`f`.

    Backward: :math:`\partial L/\partial x = g + J_f^T g`, i.e. ``grad_output +
    block.backward(grad_output)`` (the block accumulates its parameters' gradients). The block's
    output must have the input's shape.

    Args:
        block: the module :math:`f`, registered as the child ``"block"``.

    Shape:
        - Input: any shape the block takes (``(N, features)`` for a block that starts with a
          :class:`Linear`; any shape, a 0-dim one too, for an element-wise block).
        - Output: the input's shape, which the block's output must have too.

    Example:
        >>> layer = Residual(Sequential(Linear(8, 8), Tanh()))
        >>> layer(torch.randn(4, 8)).shape
        torch.Size([4, 8])
    """

    def __init__(self, block: Module) -> None:
        super().__init__()
        if not isinstance(block, Module):
            raise TypeError(f"Residual: block must be a minidl Module, got {given_module(block)}")
        check_not_a_loss("Residual", "the block", block)
        self.block = block
        self.register_module("block", block)
        self._shape: tuple[int, ...] | None = None
        # What the last forward was, if it was stopped after the block ran (see forward).
        self._refused: str | None = None
        # An input or gradient given in the memory of the block's parameter gradients is
        # copied before the block's backward writes over it (see minidl.nn._gradient_memory):
        # the skip's g is read after it, and a block of one's own may read its cached input
        # after one of its layers wrote a gradient (a built-in layer copies what lies in its
        # own gradients, not in another layer's).
        self._gradients = GradientMemory()
        # What the last trial was made for (see _try).
        self._tried: tuple[object, ...] | None = None
        # The block's modules that change their state in training mode, and when found.
        self._updaters: tuple[int, tuple[Module, ...]] = (-1, ())

    def forward(self, input: Tensor) -> Tensor:
        if not isinstance(input, Tensor):
            raise TypeError(
                f"Residual: expected a torch.Tensor as input, got {type(input).__name__}"
            )
        self._check_block()
        if self._gradients.holds(input, self):
            input = input.clone()
        tried_now = False  # (whether a trial ran the block here: its caches are the trial's)
        # (a nested input's shape is not read: the block refuses it)
        updaters = self._updaters
        if updaters[0] != Module._registrations:
            updaters = self._updaters = updating_parts(self.block)
        if updaters[1] and not input.is_nested and input.dim() and input.shape[0]:
            tried = trial_key(updaters[1], input)
            if tried is not None and tried != self._tried:
                if input.layout is not STRIDED:  # (the trial's input[:1] fails on a sparse one)
                    check_dense("Residual", input)
                tried_now = self._try(input)
                self._tried = tried
        try:
            output: Tensor = self.block.forward(input)
        except BaseException as error:
            # Interrupted, or stopped by detect_anomaly's check of its output: the block may
            # hold the caches of this input already; or this forward's trial ran the block,
            # which holds the trial's; or the block refused after some of its modules ran on
            # this input (a container of one's own: see Module._refused_cleanly). (A module
            # that refused its input changed nothing.)
            if anomaly.may_follow_a_run(error):
                self._refused = f"a forward stopped in its block by {type(error).__name__}"
            elif tried_now:
                self._refused = "a forward refused by its block (after a trial of it)"
            elif not self.block._refused_cleanly():
                self._refused = "a forward refused by its block after some of its modules ran"
            raise
        if not isinstance(output, Tensor) or output.shape != input.shape:
            # The block ran: it now holds the caches of this input, not of the last good one.
            self._refused = "a forward refused for its block's output shape"
            raise _shape_error(output, input)
        self._shape = tuple(input.shape)
        self._refused = None
        return input + output

    def __getattr__(self, name: str) -> Any:
        # (only where the attribute is missing: a block deleted by hand, del residual.block)
        if name == "block" and "block" in self.__dict__.get("_modules", {}):
            raise AttributeError(
                "Residual: its attribute 'block' was deleted (its registered block remains in "
                "its modules, which state_dict() and parameters() read); set it again with "
                "residual.block = residual.get_submodule('block'), or build a new Residual"
            )
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def _try(self, input: Tensor) -> bool:
        """Where the block holds a module that changes its state in training mode (a batch
        norm, a dropout: :attr:`Module._updates_in_training`), run it in evaluation mode on
        ``input``'s first sample first (and on the whole batch, where the sample is refused or
        gives an output of another shape), so that a block refused for its output's shape is
        refused before their statistics count the batch or their generator draws, as a
        :class:`~minidl.nn.Sequential` does for its children. Once for each signature of the
        input, set of parameters and modes of those modules (see
        :func:`~minidl.nn.module.trial_key`). Whether the block ran (it then holds the trial's
        caches) is returned."""
        parts = list(self.block.modules())
        if not any(type(part)._updates_in_training and part.training for part in parts):
            return False
        modes = [(part, part.training) for part in parts]
        # (the parts in training mode make its refusals in the trial: see TRAINING_IN_TRIAL)
        training = TRAINING_IN_TRIAL.set(frozenset(id(part) for part, was in modes if was))
        try:
            for part, _ in modes:
                part.training = False
            sample = input[:1]
            try:
                output = self.block.forward(sample)
                fits = isinstance(output, Tensor) and output.shape == sample.shape
            except Exception:
                if input.shape[0] <= 1:
                    raise
                fits = False
            if not fits and input.shape[0] > 1:
                output = self.block.forward(input)
                fits = isinstance(output, Tensor) and output.shape == input.shape
            if not fits:
                # The block ran: it holds the trial's caches now.
                self._refused = "a forward refused for its block's output shape"
                raise _shape_error(output, input)
        except Exception:
            # Refused in the trial (a batch norm's refusal of training mode: see
            # TRAINING_IN_TRIAL): a block of modules of one's own may have run some of them on
            # the refused input, whose caches its backward would read; a single module that
            # refuses its input changes nothing, and a Sequential notes where it was refused
            # itself (see Module._refused_cleanly).
            if not self.block._refused_cleanly() and self._refused is None:
                self._refused = "a forward refused in a trial of its block"
            raise
        finally:
            TRAINING_IN_TRIAL.reset(training)
            for part, was in modes:
                part.training = was
        return True

    def _refused_cleanly(self) -> bool:
        # (its own refusals after its block ran it notes in _refused: see forward and _try)
        return self._refused is None and self.block._refused_cleanly()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(_tried=None, _updaters=(-1, ()))  # (made again where it is loaded)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_tried", None)  # (pickled before it existed)
        state.setdefault("_updaters", (-1, ()))  # (likewise)
        state.setdefault("_refused", None)  # (pickled before it existed)
        state.setdefault("_gradients", GradientMemory())  # (likewise)
        super().__setstate__(state)

    def _check_block(self) -> None:
        """Refuse a ``block`` attribute that is not the registered block: a module set by hand
        (``residual.block = Linear(4, 4)``, as in PyTorch, whose ``__setattr__`` registers it)
        would be run and trained while ``parameters()``, the optimizers and ``state_dict``
        keep the registered one, which never moved."""
        block = self.block
        if block is not self._modules.get("block"):
            raise ValueError(
                f"Residual: its attribute 'block' ({given_module(block)}) is not its "
                "registered block (set by hand: it would be run and trained while parameters(), "
                "the optimizers and state_dict keep the registered one); register it with "
                "residual.register_module('block', module), which replaces both"
            )

    def backward(self, grad_output: Tensor) -> Tensor:
        self._check_backward(grad_output)
        self._check_block()
        if self._gradients.holds(grad_output, self):
            # (the skip's g, added below, would be read after the block wrote over it)
            grad_output = grad_output.clone()
        try:
            grad_block: Tensor = self.block.backward(grad_output)
        except Exception as error:
            refuse_given_gradient_dtype("Residual", error, grad_output)
            raise
        return grad_output + grad_block

    def backward_parameters(self, grad_output: Tensor) -> None:
        """The block's parameter gradients only: the skip path has no parameters, and the
        block's see the same upstream gradient :math:`g`."""
        self._check_backward(grad_output)
        self._check_block()
        try:
            if type(self.block)._skips_own_backward:
                self.block.backward(grad_output)  # (see Module._skips_own_backward)
            else:
                self.block.backward_parameters(grad_output)
        except Exception as error:
            refuse_given_gradient_dtype("Residual", error, grad_output)
            raise

    def _check_fits_forward(self, parameters_only: bool = False) -> None:
        """The block's check (see :meth:`Module._check_fits_forward`): the skip path holds no
        parameters."""
        self.block._check_fits_forward(parameters_only)

    def _check_backward(self, grad_output: Tensor) -> None:
        if self._shape is None:
            raise RuntimeError("Residual: backward called before forward")
        if self._refused is not None:
            raise RuntimeError(
                f"Residual: backward after {self._refused}: the block had already cached its "
                "input, so the last good forward cannot be differentiated; run a forward that "
                "succeeds, then backward"
            )
        check_grad_output("Residual", grad_output, torch.Size(self._shape))


def _shape_error(output: object, input: Tensor) -> ValueError | TypeError:
    """The refusal of a block's ``output`` that has not ``input``'s shape (a ``TypeError`` for
    one that is no tensor)."""
    if not isinstance(output, Tensor):
        return TypeError(
            f"Residual: the block returned {type(output).__name__}, expected a tensor of the "
            f"input's shape {tuple(input.shape)}"
        )
    return ValueError(
        f"Residual: the block's output has shape {tuple(output.shape)}, expected the input's "
        f"shape {tuple(input.shape)}"
    )
