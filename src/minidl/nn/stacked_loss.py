"""Different losses for the models of one stack."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import Tensor

from minidl._setting import Fixed
from minidl.nn._checks import (
    check_dense,
    check_runs,
    check_size,
    refuse_registration_in_runs,
)
from minidl.nn.loss import Loss
from minidl.nn.module import Module

__all__ = ["StackedLoss"]

#: A module registered, returned as its own class (as by Module.register_module).
_Module = TypeVar("_Module", bound=Module)


def _check_models(where: str, value: object) -> int:
    return check_size(where, "models", value)


class StackedLoss(Loss):
    r"""Losses that differ between stacked models: model ``r``'s prediction ``z[r]`` and target
    ``t[r]`` go to its own criterion :math:`L_r`.

    .. math::
        \text{forward} = (L_1(z_1, t_1), \dots, L_R(z_R, t_R)), \qquad
        \frac{\partial \sum_r L_r}{\partial z_r} = \frac{\partial L_r}{\partial z_r}

    Consecutive models with the same loss form one run: each run is one call of its loss on a
    slice (a view) of the prediction and the target, and the runs' results are concatenated.

    Args:
        runs: ``(loss, models)`` pairs in model order: ``models`` consecutive models use ``loss``
            (each run's module is used for its models only).

    Shape:
        - Prediction: ``(R, N, C)`` with R the total of the runs' models; target: ``(R, ...)``
          as each run's loss takes it.
        - Output: ``(R,)``, each model's loss.

    Example:
        >>> criterion = StackedLoss([(MSELoss(), 1), (CrossEntropyLoss(), 1)])
        >>> criterion(torch.zeros(2, 1, 2), torch.tensor([[1], [1]])).shape
        torch.Size([2])
    """

    stacks = True

    #: The number of models, the runs' total: fixed (setting it raises ``AttributeError``, as
    #: ``BatchedLinear``'s does; set by hand, the models past the runs were left unwritten).
    models = Fixed(
        _check_models, "the runs cover that many models; build a new StackedLoss for another number"
    )
    _models: int

    def __init__(self, runs: Sequence[tuple[Loss, int]]) -> None:
        super().__init__()
        bounds = check_runs("StackedLoss", runs, Loss)
        for index, ((criterion, _), (start, stop)) in enumerate(zip(runs, bounds, strict=True)):
            if isinstance(criterion, StackedLoss):
                raise TypeError(
                    f"StackedLoss: run {index} must hold a single loss, got StackedLoss"
                )
            if not criterion.stacks:
                raise TypeError(
                    f"StackedLoss: run {index} holds {type(criterion).__name__}, which does not "
                    "take stacked predictions (R, N, C); CrossEntropyLoss and MSELoss do"
                )
            # Named by the models it covers: the repr reads "(0:5): MSELoss(...)".
            self.register_module(f"{start}:{stop}", criterion)
        self._runs: tuple[tuple[Loss, int, int], ...] = tuple(
            (criterion, start, stop)
            for (criterion, _), (start, stop) in zip(runs, bounds, strict=True)
        )
        self.models = bounds[-1][1]

    def register_module(self, name: str, module: _Module) -> _Module:
        """Register a run's module while the runs are built; a built ``StackedLoss``
        refuses (:func:`~minidl.nn._checks.refuse_registration_in_runs`: a loss
        registered in a run's place would be named, not computed).

        Raises:
            ValueError: called on a built ``StackedLoss``; nothing is changed.
        """
        if getattr(self, "_runs", None) is not None:  # (not __dict__: see Sequential's)
            refuse_registration_in_runs("StackedLoss", name, module)
        return super().register_module(name, module)

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        for tensor, what in ((prediction, "prediction"), (target, "target")):
            if not isinstance(tensor, Tensor):
                raise TypeError(
                    f"StackedLoss: expected a torch.Tensor {what}, got {type(tensor).__name__}"
                )
            check_dense("StackedLoss", tensor, what)  # (a nested one's shape is not read)
        if prediction.dim() != 3 or prediction.shape[0] != self.models:
            raise ValueError(
                f"StackedLoss: expected a stacked prediction (R, N, C) of R = {self.models} "
                f"models, got {tuple(prediction.shape)}"
            )
        if target.dim() < 2:  # (its leading dimension may well be R: the samples' is missing)
            raise ValueError(
                f"StackedLoss: expected a stacked target (R, N) or (R, N, C) of R = "
                f"{self.models} models, got {tuple(target.shape)}"
            )
        if target.shape[0] != self.models:
            raise ValueError(
                f"StackedLoss: expected a stacked target with a leading dimension of "
                f"{self.models} models, got {tuple(target.shape)}"
            )
        # A run that refuses its part, or an interrupt (Ctrl-C) between two runs, leaves every
        # criterion with its last good forward.
        saved = [dict(criterion.__dict__) for criterion, _, _ in self._runs]
        try:
            losses = torch.cat(
                [self._run_forward(index, prediction, target) for index in range(len(self._runs))]
            )
        except BaseException:
            for (criterion, _, _), state in zip(self._runs, saved, strict=True):
                criterion.__dict__.clear()
                criterion.__dict__.update(state)
            raise
        self._has_forward = True
        return losses

    def _run_forward(self, index: int, prediction: Tensor, target: Tensor) -> Tensor:
        """Run ``index``'s loss of its slice; a slice it refuses is named within the whole
        (the run's own message gives the slice's shapes, which the caller did not pass)."""
        criterion, start, stop = self._runs[index]
        try:
            return criterion(prediction[start:stop], target[start:stop])
        except (TypeError, ValueError) as error:
            if type(error) not in (TypeError, ValueError):
                raise

            def named(tensor: Tensor) -> str:
                return f"{tuple(tensor.shape)} ({str(tensor.dtype).removeprefix('torch.')})"

            raise type(error)(
                f"StackedLoss: run {index} ({type(criterion).__name__}, models {start}:{stop}) "
                f"refused its slices of the prediction {named(prediction)} and the target "
                f"{named(target)}: {error}"
            ) from error

    def _gradient(self) -> Tensor:
        return torch.cat([criterion.backward() for criterion, _, _ in self._runs])

    def _criterion_of(self, model: int) -> Loss:
        """The loss of model ``model`` (``0 <= model < models``)."""
        return next(criterion for criterion, start, stop in self._runs if start <= model < stop)
