"""Different element-wise activations for the models of one stack."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

from minidl import anomaly
from minidl._setting import Fixed
from minidl._validate import COMPUTED, FLOATING, shown
from minidl.nn._checks import (
    check_dense,
    check_runs,
    check_size,
    refuse_registration_in_runs,
)
from minidl.nn.activation_base import Activation
from minidl.nn.module import Module

__all__ = ["StackedActivation"]

#: A module registered, returned as its own class (as by Module.register_module).
_Module = TypeVar("_Module", bound=Module)


def _check_models(where: str, value: object) -> int:
    return check_size(where, "models", value)


class StackedActivation(Module):
    r"""Element-wise activations that differ between the stacked models: model ``r``'s slice
    ``x[r]`` of an input ``(R, ...)`` goes through its own activation :math:`f_r`.

    .. math::
        y_r = f_r(x_r), \qquad \frac{\partial L}{\partial x_r} = \frac{\partial L}{\partial y_r}
        \, f_r'(x_r)

    Consecutive models with the same activation form one run: each run is one call of its
    activation on a slice (a view) of the input. The built-in activations write their results
    into their parts of one output (their hooks take ``out``, see
    :class:`~minidl.nn.Activation`); the results of others (and of a subclass that overrides
    ``forward`` or ``backward``, which is called) are copied there, so forward and
    backward cost at most one copy per run besides the activations'. Made by
    :func:`minidl.nn.stack_models` where the models' activations differ.

    Args:
        runs: ``(activation, models)`` pairs in model order: ``models`` consecutive models use
            ``activation`` (each run's module is used for its models only).

    Shape:
        - Input: ``(R, ...)`` with R the total of the runs' models. Output: the same shape.

    Example:
        >>> layer = StackedActivation([(Tanh(), 2), (ReLU(), 1)])
        >>> layer(torch.full((3, 1), -1.0)).flatten()
        tensor([-0.7616, -0.7616,  0.0000])
    """

    #: The number of models, the runs' total: fixed (setting it raises ``AttributeError``, as
    #: ``BatchedLinear``'s does; set by hand, the models past the runs were left unwritten).
    models = Fixed(
        _check_models,
        "the runs cover that many models; build a new StackedActivation for another number",
    )
    _models: int

    def __init__(self, runs: Sequence[tuple[Activation, int]]) -> None:
        super().__init__()
        bounds = check_runs("StackedActivation", runs, Activation)
        for (activation, _), (start, stop) in zip(runs, bounds, strict=True):
            # Named by the models it covers: the repr reads "(0:2): Tanh()".
            self.register_module(f"{start}:{stop}", activation)
        self._runs: tuple[tuple[Activation, int, int], ...] = tuple(
            (activation, start, stop)
            for (activation, _), (start, stop) in zip(runs, bounds, strict=True)
        )
        self.models = bounds[-1][1]
        self._writes_out = _writes_out(self._runs)
        self._dtype: torch.dtype | None = None  # the last forward's input dtype
        self._shape: tuple[int, ...] | None = None  # and its shape
        # What the last forward was, if a run after the first refused it (see forward).
        self._refused: str | None = None

    def register_module(self, name: str, module: _Module) -> _Module:
        """Register a run's module while the runs are built; a built ``StackedActivation``
        refuses (:func:`~minidl.nn._checks.refuse_registration_in_runs`: an activation
        registered in a run's place would be named, not computed).

        Raises:
            ValueError: called on a built ``StackedActivation``; nothing is changed.
        """
        if getattr(self, "_runs", None) is not None:  # (not __dict__: see Sequential's)
            refuse_registration_in_runs("StackedActivation", name, module)
        return super().register_module(name, module)

    def activation_of(self, index: int) -> Activation:
        """The activation of model ``index``."""
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(
                f"StackedActivation.activation_of: expected an integer index, got {shown(index)}"
            )
        for activation, start, stop in self._runs:
            if start <= index < stop:
                return activation
        raise IndexError(
            f"StackedActivation: index {shown(index)} is out of range for {self.models} models"
        )

    def _check(self, tensor: object, what: str) -> Tensor:
        if not isinstance(tensor, Tensor):
            raise TypeError(
                f"StackedActivation: expected a torch.Tensor as {what.rsplit(maxsplit=1)[-1]}, got "
                f"{type(tensor).__name__}"
            )
        if tensor.is_nested:  # (whose shape is not read)
            check_dense("StackedActivation", tensor, what.rsplit(maxsplit=1)[-1])
        if tensor.dtype not in COMPUTED and self._checks_dtypes_as_activation(what):
            # (named here: the first run's activation would name itself)
            taken = FLOATING.format(what=what.rsplit(maxsplit=1)[-1])
            raise TypeError(f"StackedActivation: expected a {taken}, got dtype {tensor.dtype}")
        if tensor.dim() == 0 or tensor.shape[0] != self.models:
            got = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise ValueError(
                f"StackedActivation: expected {what} with a leading dimension of {self.models} "
                f"models, got {got}"
            )
        return tensor

    def _checks_dtypes_as_activation(self, what: str) -> bool:
        """Whether every run refuses the dtypes :class:`Activation` refuses (a subclass that
        overrides the check of its input or gradient may take others)."""
        method = "_check_input" if what == "an input" else "_check_gradient"
        return all(
            getattr(type(activation), method) is getattr(Activation, method)
            for activation, _, _ in self._runs
        )

    def forward(self, input: Tensor) -> Tensor:
        input = self._check(input, "an input")
        output = torch.empty(input.shape, dtype=input.dtype, device=input.device)
        run = 0
        ran = False  # (whether the run that raised had run: its result refused)
        try:
            try:
                for index, ((activation, start, stop), (writes, _)) in enumerate(
                    zip(self._runs, self._writes_out, strict=True)
                ):
                    run = index  # (the run that raised, for _note_refusal)
                    if writes:
                        activation._forward_out(input[start:stop], output[start:stop])
                    else:
                        result = activation.forward(input[start:stop])
                        ran = True
                        _check_result(index, activation, result, input, "forward")
                        ran = False
                        output[start:stop] = result
            except RuntimeError:
                check_dense("StackedActivation", input)  # (a sparse one found here, not per call)
                # out= refused for an input from an autograd graph:
                # each run makes its own result.
                outputs = []
                for index, (activation, start, stop) in enumerate(self._runs):
                    run = index
                    result = activation.forward(input[start:stop])
                    ran = True
                    _check_result(index, activation, result, input, "forward")
                    ran = False
                    outputs.append(result)
                output = torch.cat(outputs)
        except BaseException as error:
            self._note_refusal(run, error, ran)
            raise
        self._dtype, self._shape, self._refused = input.dtype, tuple(input.shape), None
        return output

    def _refused_cleanly(self) -> bool:
        # (a refusal after a run cached the refused input it notes in _refused: see
        # _note_refusal; one before any run, of the input's shape, say, changed nothing)
        return self._refused is None

    def _note_refusal(self, run: int, error: BaseException, ran: bool = False) -> None:
        """A run's forward raised: unless it was the first run and refused its input (a
        refusing activation changes nothing), the runs before it (and the run itself, where the
        error came after it ran: an interrupt, detect_anomaly's check of its output, or ``ran``,
        its result refused) now hold the caches of the refused input, so backward is refused
        until a forward succeeds (as a Sequential's)."""
        followed = ran or anomaly.may_follow_a_run(error)  # (the run itself cached it too)
        if run > 0 or followed:
            name = type(self._runs[run][0]).__name__
            if not followed:
                cached = "the runs before it"
            else:
                cached = "it and the runs before it" if run > 0 else "it"
            self._refused = (
                f"the forward refused by run {run} ({name}): {cached} had already cached its input"
            )

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._refused is not None:
            raise RuntimeError(
                f"StackedActivation: backward after {self._refused}, so the last good forward "
                "cannot be differentiated; run a forward that succeeds, then backward"
            )
        grad_output = self._check(grad_output, "a gradient")
        if self._shape is None:  # (named here: a run's activation would name itself)
            raise RuntimeError("StackedActivation: backward called before forward")
        if tuple(grad_output.shape) != self._shape:
            # (named here: a run's activation would name the shapes of its slice)
            raise ValueError(
                f"StackedActivation: gradient has shape {tuple(grad_output.shape)}, expected "
                f"{self._shape} (the shape of the last forward's output)"
            )
        if grad_output.dtype is not self._dtype:
            # A gradient of another dtype: each activation promotes it as it does alone.
            return self._concatenated_backward(grad_output)
        grad_input = torch.empty(
            grad_output.shape, dtype=grad_output.dtype, device=grad_output.device
        )
        try:
            for index, ((activation, start, stop), (_, writes)) in enumerate(
                zip(self._runs, self._writes_out, strict=True)
            ):
                if writes:
                    activation._backward_out(grad_output[start:stop], grad_input[start:stop])
                else:
                    result = activation.backward(grad_output[start:stop])
                    _check_result(index, activation, result, grad_output, "backward")
                    grad_input[start:stop] = result
        except RuntimeError:  # (as in forward)
            return self._concatenated_backward(grad_output)
        return grad_input

    def _concatenated_backward(self, grad_output: Tensor) -> Tensor:
        return torch.cat(
            [activation.backward(grad_output[start:stop]) for activation, start, stop in self._runs]
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        # (derived from the runs: made again, for one pickled before it existed, or before it
        # looked at a subclass's forward and backward)
        state["_writes_out"] = _writes_out(state["_runs"])
        state.setdefault("_dtype", None)
        state.setdefault("_shape", None)  # (pickled before it existed: forward again first)
        state.setdefault("_refused", None)  # (pickled before it existed)
        super().__setstate__(state)


def _check_result(
    index: int, activation: Activation, result: object, given: Tensor, method: str
) -> None:
    """Refuse the result of run ``index``'s ``method`` (``forward`` or ``backward``) where it is
    a tensor of another dtype than the one ``given`` it: written into the stack's result, of
    ``given``'s dtype, it would be rounded (or widened), where the model alone computes on in
    that dtype (or is refused by its next layer), and a stack trains each model as alone."""
    if isinstance(result, Tensor) and result.dtype is not given.dtype:
        what, article = ("input", "an") if method == "forward" else ("gradient", "a")
        raise TypeError(
            f"StackedActivation: run {index} ({type(activation).__name__})'s {method} returned "
            f"dtype {result.dtype} for {article} {what} of dtype {given.dtype}; a stack writes every "
            f"run's result into one tensor of the {what}'s dtype, which would change it where "
            f"the model alone would not (give the activation's settings the {what}'s dtype)"
        )


def _takes_out(hook: Callable[..., object]) -> bool:
    return "out" in inspect.signature(hook).parameters


def _writes_out(runs: Sequence[tuple[Activation, int, int]]) -> tuple[tuple[bool, bool], ...]:
    """For each run: whether its activation's forward and backward hooks take ``out``, where
    its class keeps :class:`Activation`'s ``forward`` (and ``backward``), which call them (a
    subclass that overrides one computes otherwise than its hook: it is called instead)."""
    return tuple(
        (
            _takes_out(activation._forward) and type(activation).forward is Activation.forward,
            _takes_out(activation._backward) and type(activation).backward is Activation.backward,
        )
        for activation, _, _ in runs
    )
