"""The training loop shared by the command line, the experiments and the examples."""

from __future__ import annotations

import contextlib
import math
import numbers
import types
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor

from minidl import anomaly
from minidl._interrupts import Deferred, deferring_interrupts
from minidl._validate import (
    add_note,
    check_class_indices,
    check_cpu_generator,
    check_int,
    check_labelled,
    check_like,
    check_real,
    check_samples,
    check_strided,
    describe_pair,
    refuse_meta,
    shown,
)
from minidl.data import BatchIterator, short_last_batch
from minidl.folded import FoldedStep
from minidl.nn._checks import given_function, given_module
from minidl.nn.batch_norm import BatchNorm1d
from minidl.nn.clip import clip_grad_norm_
from minidl.nn.loss import Loss
from minidl.nn.module import Module, check_registered
from minidl.nn.residual import Residual
from minidl.nn.sequential import Sequential
from minidl.optim.lr_scheduler import LRScheduler
from minidl.optim.optimizer import Optimizer, check_step_count

__all__ = ["EpochRecord", "History", "Parallel", "error_rate", "eval_mode", "fit", "predict"]

#: The class of the model given to :func:`eval_mode`, which its block gets back.
_Model = TypeVar("_Model", bound=Module)


class _Batches(Iterable[tuple[Tensor, Tensor]], Sized, Protocol):
    """Sized batches of ``(x, y)``."""


class Parallel(Protocol):
    """What :func:`fit` calls to train data-parallel across processes; implemented by
    :class:`minidl.distributed.DataParallel` (see there)."""

    def shard(self, batches: BatchIterator) -> _Batches:
        """This process's part of every batch of ``batches``."""
        ...

    def synchronize(self, loss: Tensor) -> Tensor:
        """After ``backward``: make the gradients the global batch's; return this part's loss."""
        ...

    def reduce_loss(self, total: Tensor) -> Tensor:
        """Sum an epoch's loss over the processes."""
        ...


def _same_numbers(first: Iterable[object], second: Iterable[object]) -> bool:
    """Whether two sequences hold equal items, a NaN equal to a NaN (the validation error of
    every epoch of a run without a validation set, a diverged loss): two identical runs then
    record equal histories."""
    first, second = list(first), list(second)
    return len(first) == len(second) and all(
        a == b
        or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
        for a, b in zip(first, second, strict=True)
    )


@dataclass(frozen=True, eq=False)
class EpochRecord:
    """What one epoch produced: mean training loss, learning rate at its start, and errors in %
    (``validation_error`` is ``nan`` without a validation set).

    ``train_loss`` is the mean of the epoch's batch losses, each batch counting once (a smaller
    last batch as much as a full one, as in a loop that averages its batches' losses). Two
    records are equal when their fields are, a NaN equal to a NaN.
    """

    epoch: int
    train_loss: float
    lr: float
    validation_error: float

    def _fields(self) -> tuple[object, ...]:
        return (self.epoch, self.train_loss, self.lr, self.validation_error)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, EpochRecord)
        return _same_numbers(self._fields(), other._fields())

    def __hash__(self) -> int:
        # (every NaN hashed alike, as they compare equal: Python hashes a NaN by its identity)
        return hash(
            tuple(
                "nan" if isinstance(value, float) and math.isnan(value) else value
                for value in self._fields()
            )
        )


@dataclass
class History:
    """Per-epoch curves of a run (``lr`` is the learning rate at the start of each epoch;
    ``batch_lr`` the rate used by every batch, for per-batch schedules). Two histories are
    equal when their curves are, a NaN equal to a NaN (a run without a validation set records
    one each epoch): two identical runs, or a history and its checkpoint's, compare equal."""

    train_loss: list[float] = field(default_factory=list)
    validation_error: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    batch_lr: list[float] = field(default_factory=list)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, History)
        return all(
            _same_numbers(getattr(self, name), getattr(other, name))
            for name in ("train_loss", "validation_error", "lr", "batch_lr")
        )

    __hash__ = None  # type: ignore[assignment]  # (its curves change)

    def append(self, record: EpochRecord) -> None:
        """Add the epoch of ``record`` to the curves (``batch_lr`` is not touched).

        Raises:
            TypeError: ``record`` is not an :class:`EpochRecord` (nothing is added).
        """
        if not isinstance(record, EpochRecord):
            raise TypeError(f"History.append: expected an EpochRecord, got {type(record).__name__}")
        self.train_loss.append(record.train_loss)
        self.validation_error.append(record.validation_error)
        self.lr.append(record.lr)


def predict(model: Module, x: Tensor, batch_size: int = 4096) -> Tensor:
    """Predicted classes (argmax of the outputs) for ``x``, in evaluation mode.

    A sample whose outputs hold a NaN (a diverged model's) has no class: its prediction is -1,
    which no error rate counts as right (argmax would name the NaN's class, or class 0 for a
    row of NaNs). The training mode of every module is restored afterwards (see
    :func:`eval_mode`).

    Raises:
        ValueError: ``x`` holds no sample, or the model's outputs for a batch of ``n`` samples
            are not scores ``(n, C)`` (or ``(n, ..., C)``, whose last dimension is taken for
            the classes).

    Outputs of one column (one logit a sample, as ``BCEWithLogitsLoss`` trains) are one
    class's scores: every prediction is class 0. Such a model's classes are
    ``(model(x) > 0).long()``.
    """
    _check_model("predict", model)
    batch_size = check_int("predict", "batch_size", batch_size)
    if not isinstance(x, Tensor):
        raise TypeError(f"predict: x must be a torch.Tensor, got {type(x).__name__}")
    check_strided("predict", "x", x)
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"predict: x must hold at least one sample, got shape {tuple(x.shape)}")
    return _predict("predict", model, x, batch_size)[0]


def _check_first_step(where: str, optimizer: Optimizer, what: str) -> None:
    """What ``optimizer``'s first step would refuse, asked before training (``where`` names the
    function, ``what`` the optimizer): its parameters' layout, a rate or setting beyond the
    dtype the model was cast to, Adam's first step size, and a step count set by hand to no
    integer >= 0 (which Adam and Adagrad read, and a checkpoint of the run could not save)."""
    try:
        optimizer._check_next_step()
    except (TypeError, ValueError) as error:
        add_note(error, f"{where} asked the optimizer before training, as its first step would")
        raise
    check_step_count(where, f"{what}'s step_count (the number of steps done)", optimizer.step_count)


def given_component(value: object) -> str:
    """What was given in place of a minidl loss, optimizer or schedule: its type's name, and
    for PyTorch's (whose names minidl's share: ``MSELoss``, ``SGD``), that it is PyTorch's; a
    class given for its instance (``nn.CrossEntropyLoss``), as such."""
    if isinstance(value, type):
        return f"the class {value.__name__}; pass an instance, built with its arguments"
    kind = type(value)
    if not kind.__module__.startswith("torch."):
        return kind.__name__
    import minidl.nn
    import minidl.optim

    for package in (minidl.nn, minidl.optim):
        if kind.__name__ in package.__all__:
            return (
                f"{kind.__module__}.{kind.__qualname__}, PyTorch's: give minidl's, "
                f"{package.__name__}.{kind.__name__}"
            )
    return (
        f"{kind.__module__}.{kind.__qualname__}, PyTorch's (minidl's losses are in minidl.nn, "
        "its optimizers and schedules in minidl.optim)"
    )


def _check_model(where: str, model: object) -> None:
    if not isinstance(model, Module):
        raise TypeError(f"{where}: model must be a minidl Module, got {given_module(model)}")


def _predict(
    where: str, model: Module, x: Tensor, batch_size: int = 4096, *, scores: bool = False
) -> tuple[Tensor, int]:
    """The predicted classes for ``x`` and the number of classes (the outputs' last width).

    Raises:
        ValueError: (naming ``where``) the model's output for a batch of ``n`` samples is not
            scores ``(n, ..., C)`` (``(n, C)`` with ``scores``): a 1-D output would give one
            argmax over the samples, and one of other rows predictions that are not the
            samples' (which an error rate would compare with the class indices by
            broadcasting).
    """
    with eval_mode(model):
        if x.shape[0] <= batch_size:  # one batch: no slice of x, no concatenation
            output = _check_scores(where, model(x), x.shape[0], scores)
            return _classes(output), int(output.shape[-1])
        outputs = []
        for start in range(0, x.shape[0], batch_size):
            batch = x[start : start + batch_size]
            outputs.append(_check_scores(where, model(batch), batch.shape[0], scores))
    return torch.cat([_classes(output) for output in outputs]), int(outputs[0].shape[-1])


def _check_scores(where: str, output: object, rows: int, scores: bool) -> Tensor:
    """``output``, the model's for ``rows`` samples, once checked to be class scores: a tensor
    ``(rows, ..., C)``, or ``(rows, C)`` with ``scores``, ``C >= 1`` (no argmax is taken of
    none: torch's IndexError)."""
    if (
        isinstance(output, Tensor)
        and (output.dim() == 2 or (output.dim() > 2 and not scores))
        and output.shape[0] == rows
        and output.shape[-1] >= 1
    ):
        return output
    expected = "(N, C)" if scores else "(N, C) or (N, ..., C)"
    got = f"shape {tuple(output.shape)}" if isinstance(output, Tensor) else type(output).__name__
    raise ValueError(
        f"{where}: the model's outputs must be class scores {expected} for N = {rows} samples, "
        f"got {got}"
    )


def _classes(output: Tensor) -> Tensor:
    """The class of each row of scores ``output`` (``(..., C)``): its argmax, or -1 (no class)
    for a row holding a NaN."""
    return output.argmax(dim=-1).masked_fill_(output.isnan().any(dim=-1), -1)


def eval_mode(model: _Model) -> contextlib.AbstractContextManager[_Model]:
    """Put ``model`` in evaluation mode for the block, then give every module back its own mode.

    ``model.train(was_training)`` would put every module in the model's mode, so that a module
    kept in evaluation mode inside a training model (a frozen batch norm) would train again. A
    module that overrides ``train`` gets its mode back through that method, as ``eval()`` took
    it away (what the override does beside the flag is undone too).

    Example:
        >>> with eval_mode(model):
        ...     logits = model(x)

    Raises:
        TypeError: ``model`` is not a minidl Module (when called, before the block).
    """
    _check_model("eval_mode", model)
    return _eval_mode(model)


@contextlib.contextmanager
def _eval_mode(model: _Model) -> Iterator[_Model]:
    """:func:`eval_mode` of a checked ``model``."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    except BaseException as error:
        failed = _give_modes_back(modes)
        if failed is not None:
            add_note(error, f"giving the modules their modes back then failed: {failed!r}")
        raise
    failed = _give_modes_back(modes)
    if failed is not None:
        raise failed


def _give_modes_back(modes: list[tuple[Module, bool]]) -> BaseException | None:
    """Give each module its mode, parents first (the order of ``modules()``): a module whose
    ``train`` is its own, which may do more than set the flag (as ``eval()`` ran it), by that
    method, which sets its descendants' modes too, each set again after it; the others by their
    flag. Every module is given its mode; the first error of an override is returned."""
    failed: BaseException | None = None
    for module, training in modes:
        # (the bound method tells an override, of the class or the instance, without asking
        # for the instance's __dict__, which slows every later attribute read on CPython 3.11)
        if getattr(module.train, "__func__", None) is Module.train:
            module.training = training
            continue
        try:
            module.train(training)
        except Exception as error:
            failed = failed or error
            module.training = training
    return failed


def error_rate(model: Module, x: Tensor, y: Tensor) -> float:
    """Classification error of ``model`` on ``(x, y)``, in percent (``y``: class indices, ``(N,)``).

    Raises:
        TypeError: ``y`` is not of an integer dtype.
        ValueError: a class index is negative, or not below the model's number of classes (the
            width of its outputs), or ``x`` and ``y`` do not hold as many samples, or the
            model's outputs for ``N`` samples are not scores ``(N, C)`` (see :func:`predict`),
            or ``x`` or ``y`` is on the meta device (no values).
    """
    _check_model("error_rate", model)
    check_labelled("error_rate", "", x, y)
    if x.is_meta or y.is_meta:
        refuse_meta("error_rate", "x or y is", ": there are no errors to count")
    check_class_indices("error_rate", "", y)
    predicted, classes = _predict("error_rate", model, x, scores=True)
    check_class_indices("error_rate", "", y, classes)
    return _error_rate(predicted, y)


def _error_rate(predicted: Tensor, y: Tensor) -> float:
    """The error in percent of the predicted classes against the checked class indices ``y``."""
    return 100.0 * float((predicted != y).sum()) / y.shape[0]


def _check_step_limit(where: str, scheduler: LRScheduler, epochs: int, batches: int) -> None:
    """Refuse, before training, ``epochs`` of ``batches`` batches that would step ``scheduler``
    past its :attr:`~minidl.optim.LRScheduler.step_limit` (which would raise at the end of the
    run, the training done but the epoch not recorded)."""
    # (a last_step set by hand to no integer >= 0 failed at the first step, after a batch)
    check_int(
        where,
        f"the {type(scheduler).__name__}'s last_step (the steps done)",
        scheduler.last_step,
        low=0,
    )
    limit = scheduler.step_limit
    if limit is None:
        return
    per_batch = scheduler.interval == "batch"
    calls = epochs * batches if per_batch else epochs
    if scheduler.last_step + calls > limit:
        unit = (
            f"{shown(epochs)} epochs of {batches} batches"
            if per_batch
            else f"{shown(epochs)} epochs"
        )
        raise ValueError(
            f"{where}: the scheduler {type(scheduler).__name__} has rates up to step "
            f"{shown(limit)} and is at step {shown(scheduler.last_step)}, but {unit} would step it "
            f"{shown(calls)} times (to step {shown(scheduler.last_step + calls)}); build it for "
            "the whole training (e.g. OneCycle's "
            f"total_steps = epochs * batches per epoch)"
        )


def _check_rates(
    where: str,
    scheduler: LRScheduler,
    optimizer: Optimizer,
    start_epoch: int,
    epochs: int,
    batches: int,
) -> None:
    """Refuse, before training, a run from ``start_epoch`` to ``epochs`` (of ``batches``
    batches) in which ``scheduler`` would step to a rate that the optimizer refuses (beyond the
    largest finite value of its parameters' dtype: ``CyclicLR``'s ``max_lr`` of 1e39 for a
    float32 model, reached after ``step_size_up`` batches): its step would raise part-way, the
    model trained on the batches before. Looked for step by step only where the schedule's
    :attr:`~minidl.optim.LRScheduler.rate_bound` is beyond it (a schedule without one, or one
    changed by ``on_epoch``, raises at that step, which ``fit`` names)."""
    bound = scheduler.rate_bound
    largest = torch.finfo(optimizer.params[0].data.dtype).max
    if bound is None or bound <= largest:
        return
    per_batch = scheduler.interval == "batch"
    calls = (epochs - start_epoch) * batches if per_batch else epochs - start_epoch
    for call in range(calls):
        step = scheduler.last_step + 1 + call
        epoch, batch = divmod(call, batches) if per_batch else (call, batches - 1)
        when = (
            f"after batch {batch + 1} of {batches} of epoch {start_epoch + epoch}"
            if per_batch
            else f"at the end of epoch {start_epoch + epoch}"
        )
        try:
            rate = scheduler._rate("step", step)  # (refused if it cannot be computed, or is NaN)
        except ValueError as error:
            add_note(error, f"{where} looked before training at the step {when}, which would raise")
            raise
        if rate > largest:
            raise ValueError(
                f"{where}: the {type(scheduler).__name__} would step to the rate {rate!r} at its "
                f"step {shown(step)}, {when}, beyond the range of the parameters' dtype "
                f"{optimizer.params[0].data.dtype} (largest finite value {largest:.6g}), which "
                f"the {type(optimizer).__name__} refuses ({scheduler!r}); give the schedule "
                "rates within it, or train fewer epochs"
            )


def _stops(value: object, where: str = "fit") -> bool:
    """Whether an ``on_epoch`` return value asks ``where`` (``fit`` or ``fit_rounds``) to stop:
    a bool, a numpy bool or a one-element bool tensor (the result of a comparison of metrics)
    that is true; anything else but ``None`` is refused, rather than taken for "go on" unseen."""
    if isinstance(value, bool):
        return value
    if isinstance(value, Tensor) and value.dtype == torch.bool and value.numel() == 1:
        return bool(value)
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):
        return bool(value)
    got = (
        f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
        if isinstance(value, Tensor)
        else type(value).__name__
    )
    raise TypeError(
        f"{where}: on_epoch must return None or a bool (True stops the training after its "
        f"epoch; a tensor of one bool too), got {got}"
    )


def _refuse_batch_norm(model: Module, what: str, hint: str) -> None:
    """Raise, naming ``what`` and ``hint``, if ``model`` holds a :class:`BatchNorm1d` (which
    cannot train on a batch of one sample)."""
    for path, module in model.named_modules():
        if isinstance(module, BatchNorm1d):
            raise ValueError(
                f"fit: {what}, on which "
                f"{f'the BatchNorm1d {path!r}' if path else 'the BatchNorm1d model'} cannot "
                f"estimate a variance in training mode; {hint}"
            )


def _check_split(world_size: object, samples: int, batch_size: int, drop_last: bool) -> None:
    """Refuse, in fit's name, batches that the ``world_size`` processes cannot split: a world
    size that does not divide ``batch_size``, a last batch of fewer samples than processes
    (:class:`~minidl.distributed.ShardedBatches` refuses them too, in its own name, which
    told nothing of fit's arguments)."""
    if not isinstance(world_size, int) or world_size < 2:
        return
    if batch_size % world_size:
        raise ValueError(
            f"fit: batch_size {shown(batch_size)} is not divisible by the world size "
            f"{world_size} of parallel; every process takes 1/{world_size} of each batch, so "
            f"choose a batch_size that is a multiple of {world_size}"
        )
    last = short_last_batch(samples, batch_size, world_size, drop_last)
    if last:
        raise ValueError(
            f"fit: every epoch would end with a batch of {last} sample{'s' * (last > 1)} "
            f"({samples} samples, batches of {shown(batch_size)}), fewer than the "
            f"{world_size} processes of parallel, which take one sample each at least; pass "
            "drop_last=True or choose another batch_size"
        )


def _check_shards(
    model: Module, world_size: object, samples: int, batch_size: int, smallest: int
) -> None:
    """Refuse, before training, data-parallel batches whose shards would give some rank's
    batch norm a batch of one sample (each rank normalises over its own shard). Batches that
    the processes cannot split (a world size that does not divide ``batch_size``, a last batch
    with fewer samples than processes) are refused before, by :func:`_check_split`."""
    if not isinstance(world_size, int) or world_size < 2 or batch_size % world_size:
        return
    if smallest < world_size or smallest // world_size != 1:
        return
    if samples < 2 * world_size:
        # (then every batch size gives some process 1 sample; drop_last leaves no batch)
        what = (
            f"the training set holds {samples} samples, fewer than 2 for each of the "
            f"{world_size} processes"
        )
        hint = (
            "no batch_size or drop_last can change that: train on at least "
            f"{2 * world_size} samples"
        )
    elif batch_size // world_size == 1:
        what = (
            f"every rank's shard of a batch would hold 1 sample (batches of {batch_size} split "
            f"over {world_size} processes)"
        )
        hint = f"choose a batch_size >= {2 * world_size} (2 samples per process)"
    else:
        what = (
            f"every epoch would end with a batch of {smallest} samples ({samples} samples, "
            f"batches of {batch_size}), of which some of the {world_size} processes would take "
            "1 sample"
        )
        hint = "pass drop_last=True or choose another batch_size"
    _refuse_batch_norm(model, what, hint)


def fit(
    model: Module,
    criterion: Loss,
    optimizer: Optimizer,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    batch_size: int = 100,
    scheduler: LRScheduler | None = None,
    validation: tuple[Tensor, Tensor] | None = None,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    start_epoch: int = 0,
    history: History | None = None,
    on_epoch: Callable[[EpochRecord], object] | None = None,
    parallel: Parallel | None = None,
    max_grad_norm: float | None = None,
) -> History:
    r"""Train ``model`` with mini-batch gradient descent and return its :class:`History`.

    Each epoch shuffles ``(x, y)`` with ``generator`` and, for every batch :math:`B`, runs
    ``optimizer.zero_grad()``, ``forward``, the loss :math:`L_B`, ``criterion.backward()``
    (:math:`\partial L_B/\partial z`, the gradient of the batch's loss, a mean over it with
    the default reductions) into ``model.backward_parameters`` (every parameter's
    :math:`\partial L_B/\partial w`; the data need no gradient; ``model.backward`` where the
    model's class overrides ``backward`` alone, or a ``backward`` set on the instance of the
    model, or of the first layer with parameters, would be skipped by it), the clipping of the
    gradients to ``max_grad_norm`` if given, and ``optimizer.step()``; a scheduler is stepped
    after every batch or every epoch, as its ``interval`` says. After each epoch the
    validation error (if a validation set is given) is measured in evaluation mode (see
    :func:`eval_mode`) and ``on_epoch`` is called.
    The model is put in training mode first (``model.train()``) and left in it. The steps and
    the validation run inside ``torch.inference_mode()`` (minidl needs no autograd); ``on_epoch``
    is called outside it, so what it computes or keeps is an ordinary tensor.

    A :class:`~minidl.nn.Sequential` of :class:`~minidl.nn.Linear` layers with biases and
    built-in activations (the paper's networks, any :func:`~minidl.nn.mlp`), trained with a
    built-in loss and a built-in optimizer (or a subclass keeping its update) of exactly its
    parameters on CPU float32 or float64 data, takes its steps folded
    (:class:`minidl.folded.FoldedStep`): the same computation, features by batch with each
    bias inside its layer's matrix product, in fewer and cheaper operations.
    Its products round otherwise, so the parameters it trains agree with the loop's above to
    rounding (about 1e-12 in float64 after a few epochs, more as a float32 run goes on; where
    a gradient cancels to 0 on one path and to a rounding on the other, L1's sums of signs, an
    optimizer that divides by the gradient's own size, Adam, AdamW, RMSprop or Adagrad, makes
    the rounding lr / eps times larger: 1.4e-8 with Adagrad's eps of 1e-10 at lr 0.1), not
    bit for bit; the loop itself runs where a method it calls was set on the model, the loss
    or the optimizer (or replaced on their base classes), under
    :func:`minidl.detect_anomaly`, and with ``parallel``. During a folded epoch the model's
    parameters, gradients and the optimizer's state are stale: they are brought up to date
    before the validation and ``on_epoch``, at the end and on an error (an interrupted fit
    leaves the steps it finished). The modules' forward caches then hold what last ran the
    model, not the last batch: the last validation pass (as the loop leaves them), a call
    made by ``on_epoch`` or, without either, the trial forward on ``x[:1]`` described under
    Raises (or, where a call on the same tensors skipped it, what ran the model before the
    call); the loss's hold the last batch's forward, as the loop leaves them.

    A Ctrl-C (``SIGINT``) or a ``SIGTERM`` whose handler is Python's waits for the step it
    comes in to end, the optimizer's update whole, and is raised before the next step (or as
    ``fit`` ends) by that handler: an update cut short left the optimizer's state a step
    ahead of the parameters. A second signal meanwhile is raised at once (a step that hangs,
    or takes long, is cut by pressing Ctrl-C again, where Python next checks for signals: a
    long torch operation ends first, as without the wait). ``on_epoch`` is interrupted as the
    signal comes. Not with ``parallel``, whose step may wait for a process that is gone.

    Args:
        model: the network.
        criterion: the loss; it receives the model's output and the targets ``y``.
        optimizer: built on ``model.parameters()``.
        x, y: training inputs and targets, on one device that holds values (not the meta
            device).
        epochs: the epoch to stop at (training runs epochs ``start_epoch .. epochs - 1``).
        batch_size: samples per batch.
        scheduler: an optional learning-rate schedule on ``optimizer``.
        validation: an optional ``(x, y)`` evaluated after each epoch: inputs like ``x`` and
            class indices ``(N,)`` of an integer dtype, checked before training starts (the
            indices against the width of the model's outputs).
        generator: the generator of the shuffles (default: torch's global one), a CPU one
            (the orders are drawn on the CPU, then moved to the data's device).
        drop_last: skip the last batch of every epoch when it is smaller than ``batch_size``
            (a model with a :class:`~minidl.nn.BatchNorm1d` cannot train on a batch of one
            sample: such a run is refused unless the batch is dropped, and a training set of
            one sample with it). The recorded loss is then the mean over the full batches.
        start_epoch: the first epoch to run (when resuming: give the interrupted run's other
            arguments again, ``batch_size``, ``drop_last``, ``validation`` and
            ``max_grad_norm``, which a checkpoint does not hold unless kept in its ``extra``).
        history: a history to extend (when resuming, the one saved with ``start_epoch``: a
            history holding more epochs than a ``start_epoch`` above 0 is refused, as its later
            epochs would be recorded twice; with ``start_epoch`` 0 the epochs are appended):
            lists of numbers, ``train_loss``, ``validation_error`` and ``lr`` of one length
            (its epochs; else refused).
        on_epoch: called with the :class:`EpochRecord` of each epoch; if it returns ``True``
            (or a true numpy bool or one-element bool tensor), training stops after that epoch
            (early stopping: the history ends with it). Other return values than ``None`` and
            bools are refused (a TypeError after the epoch, which stays recorded). A
            ``validation`` set it changes in place is checked again after it, as before
            training (an item added to or taken out of a list, an x unlike the training x, or
            labels that are no class indices below the outputs' width are refused, the epoch
            recorded); ``x`` and ``y`` keep their shapes, dtypes and devices (a set resized in
            place, whose epochs would hold other counts of batches, is refused): change their
            values in place.
        parallel: data-parallel training (a :class:`minidl.distributed.DataParallel`): each
            process trains on its shard of every batch, the gradients are made the global
            batch's after every ``backward``, and the recorded loss is the global one (the
            validation error is computed by every process on the whole set, not sharded). Its
            world size must divide ``batch_size``, and the last batch hold a sample for every
            process (both refused before training). A batch norm normalises over each
            process's shard, so a run that would give a process a shard of one sample is
            refused, as a batch of one is without it. It must be built on ``model``, and the
            loss must be a mean over the samples (a ``reduction='sum'`` is refused: the
            shards' weights would not give its gradient).
        max_grad_norm: clip every step's gradients to this total 2-norm before the
            optimizer's step, as :func:`minidl.nn.clip_grad_norm_` does with the optimizer's
            parameters (a finite number ``> 0``, where ``clip_grad_norm_`` takes ``inf`` too,
            which clips nothing; ``None``, the default, clips nothing). With
            ``parallel``, the global batch's gradients are clipped, the same on every process.

    Returns:
        ``history`` (a new :class:`History` without one) with a record per epoch run.

    Raises:
        TypeError, ValueError: a bad argument, named in the message; every argument is checked
            before anything changes (the model, the optimizer, the scheduler, the history and
            the generators are then as they were), what the optimizer's first step would refuse
            included (a rate beyond the range of a dtype the model was cast to since the
            optimizer was built, a ``step_count`` set by hand to no integer >= 0). Before
            training, ``model`` and ``criterion``
            run once on the first sample in evaluation mode (and, where that is refused, on
            the first batch: a module of one's own that takes no single sample passes there;
            a refusal of both is the sample's), so that their own checks of ``x``
            and ``y`` apply and class indices in ``y`` (and in ``validation``) are checked
            against the width of the model's outputs (for ``y``, the last width of outputs
            ``(N, L, C)`` too, which a loss that stacks reads as stacked scores; only for a
            built-in loss:
            a loss's own ``forward`` may take integers that are no class indices, and checks
            them itself; a folded fit given the same ``x`` and
            ``y`` tensors as its last call, unchanged since, does not run that trial again:
            they passed it, on the model it found unchanged; the class indices are checked on
            every call, as a write through ``.data`` or NumPy leaves no trace on a tensor).
            Then every target in ``y`` is checked as the loss checks a batch's (the range of
            ``BCEWithLogitsLoss``'s, the probability rows of ``CrossEntropyLoss``'s; a loss
            whose ``forward`` is a subclass's own is left to check its batches). That trial
            forward changes no parameter, gradient, optimizer state, batch-norm
            statistic or generator, but it does replace what the modules and the loss keep
            from their last forward for ``backward`` (their forward caches): after a refused
            fit they hold that trial on ``x[:1]`` and ``y[:1]`` (training's first forward
            replaces them again), or, where the trial was not run again (above), what the last
            call left them. A scheduler that the run would step past its ``step_limit``
            (a ``OneCycle`` built for fewer batches) is refused too, and one that it would step
            to a rate the optimizer refuses (``CyclicLR``'s ``max_lr`` beyond the parameters'
            dtype, reached after ``step_size_up`` batches), where its ``rate_bound`` says there
            may be one: the message names the schedule, the step, the epoch, the batch and the
            rate. A schedule without a ``rate_bound`` (or changed by ``on_epoch``) raises at
            that step, part-way, with a note naming the epoch and the batch.
    """
    for name, value, kind in (
        ("model", model, Module),
        ("criterion", criterion, Loss),
        ("optimizer", optimizer, Optimizer),
    ):
        if not isinstance(value, kind):
            if name == "model":
                given = given_module(value)
            elif name == "criterion":
                given = given_function(value, "loss") or given_component(value)
            else:
                given = given_component(value)
            raise TypeError(f"fit: {name} must be a minidl {kind.__name__}, got {given}")
    if set(map(id, model.parameters())).isdisjoint(map(id, optimizer.params)):
        raise ValueError("fit: the optimizer updates none of the model's parameters")
    check_samples("fit", x, y)
    if x.is_meta:  # (y is on x's device)
        refuse_meta(
            "fit",
            "x and y are",
            "; fit trains on values (its losses and errors are numbers): put them on a device "
            "that holds them, as the model's parameters",
        )
    batch_size = check_int("fit", "batch_size", batch_size)
    if validation is not None and (
        not isinstance(validation, tuple | list) or len(validation) != 2
    ):
        raise TypeError(
            f"fit: validation must be an (x, y) pair of tensors, got {describe_pair(validation)}"
        )
    epochs = check_int("fit", "epochs", epochs, low=0)
    if scheduler is not None and not isinstance(scheduler, LRScheduler):
        raise TypeError(
            f"fit: scheduler must be a minidl LRScheduler or None, got {given_component(scheduler)}"
        )
    if scheduler is not None and scheduler.optimizer is not optimizer:
        raise ValueError("fit: the scheduler must schedule the optimizer given to fit")
    if scheduler is not None and scheduler.superseded_by is not None:
        raise ValueError(
            f"fit: the optimizer is scheduled by the {scheduler.superseded_by} built on it after "
            f"the {type(scheduler).__name__} given; pass that one (two schedules would "
            "overwrite each other's rates: a SequentialSchedule runs them one after the other)"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"fit: generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    if generator is not None:
        check_cpu_generator("fit", "generator", generator)
    if on_epoch is not None and not callable(on_epoch):
        raise TypeError(f"fit: on_epoch must be callable or None, got {type(on_epoch).__name__}")
    start_epoch = check_int("fit", "start_epoch", start_epoch, low=0)
    if start_epoch > epochs:
        raise ValueError(f"fit: start_epoch {shown(start_epoch)} is past epochs {shown(epochs)}")
    if not isinstance(drop_last, bool):
        raise TypeError(f"fit: drop_last must be a bool, got {shown(drop_last)}")
    if max_grad_norm is not None:
        max_grad_norm = check_real("fit", "max_grad_norm", max_grad_norm, low=0.0, low_open=True)
    samples = int(x.shape[0])
    if samples == 1:
        # (no batch_size or drop_last gives a batch of 2 samples out of 1)
        _refuse_batch_norm(
            model,
            "the training set holds 1 sample",
            "no batch_size or drop_last can change that: train on at least 2 samples",
        )
    if drop_last and samples < batch_size:
        raise ValueError(
            f"fit: with drop_last, batches of {shown(batch_size)} leave no batch of the {samples} "
            "samples; choose a batch_size <= the number of samples"
        )
    smallest = batch_size if drop_last else samples % batch_size or batch_size
    if smallest == 1:
        # (with batches of 1, every batch is one sample: drop_last cannot help)
        _refuse_batch_norm(
            model,
            *(
                ("every batch would hold 1 sample (batch_size 1)", "choose a batch_size >= 2")
                if batch_size == 1
                else (
                    f"every epoch would end with a batch of 1 sample ({samples} samples, "
                    f"batches of {batch_size})",
                    "pass drop_last=True or choose another batch_size",
                )
            ),
        )
    if parallel is not None and not all(
        callable(getattr(parallel, method, None))
        for method in ("shard", "synchronize", "reduce_loss")
    ):
        raise TypeError(
            "fit: parallel must be a minidl.distributed.DataParallel (with shard, synchronize "
            f"and reduce_loss), got {type(parallel).__name__}"
        )
    if parallel is not None:
        if getattr(parallel, "model", model) is not model:
            raise ValueError(
                "fit: parallel must synchronize the model given to fit (DataParallel(model, "
                "group)), got one built on another model, whose gradients it would average "
                "while this model's stayed each process's own"
            )
        if getattr(criterion, "reduction", None) == "sum":
            raise ValueError(
                f"fit: data-parallel training needs a loss that is a mean over the samples "
                f"(each process's gradient is weighted by its share of the batch), got "
                f"{criterion!r}, whose gradient would then be neither the batch's sum nor its "
                "mean; use reduction='mean' (with a learning rate scaled by the batch size)"
            )
        world_size = getattr(parallel, "world_size", 1)
        _check_split(world_size, samples, batch_size, drop_last)
        _check_shards(model, world_size, samples, batch_size, smallest)
    if history is not None and not isinstance(history, History):
        raise TypeError(f"fit: history must be a History, got {type(history).__name__}")
    if history is not None:
        _check_history("fit", history)
    recorded = len(history.train_loss) if history is not None else 0
    if 0 < start_epoch < recorded:
        # (start_epoch 0 appends: a history extended by calls of a few epochs each)
        raise ValueError(
            f"fit: history holds {recorded} epochs, past start_epoch {start_epoch}: resuming "
            f"there would record epochs {start_epoch} to {recorded - 1} a second time; pass "
            f"the history saved with epoch {start_epoch} (load_checkpoint's state.history), "
            f"or start_epoch={recorded}"
        )
    # What the optimizer's first step would refuse, once the model was put in training mode, a
    # shuffle drawn and a forward and backward run: its parameters' layout (a dtype or device
    # mixed, a parameter resized, a rate or setting beyond the dtype the model was cast to
    # since: the same refusal in the same words; the state is not moved yet), and a
    # step count set by hand to no integer >= 0, which Adam and Adagrad read (SGD's is not read,
    # but a checkpoint of the run could not be saved with it).
    _check_first_step("fit", optimizer, f"the {type(optimizer).__name__}")
    # The folded step kept from an earlier call, if it still fits (nothing is built yet).
    kept = (
        FoldedStep.kept(model, criterion, optimizer, x, y)
        if parallel is None and epochs > start_epoch
        else None
    )
    # (a parameter or child set as a plain attribute would not be trained, a param() of one's
    # own not read; checked on every call, also where a folded step is kept: one set since
    # the last call would otherwise pass, where a first call refuses it)
    check_registered("fit", model)
    # (what a module's training forward refuses whatever its input, its state, before the
    # first order is drawn: a batch norm's negative count, which its trial in evaluation mode
    # below passes)
    for part in model.modules():  # (in evaluation mode too: fit trains every module)
        if type(part)._updates_in_training:
            part._check_training_state()
    # The width of the outputs (None: they are not class scores (N, C)), and what they are;
    # the classes the loss reads integer targets against (None: not known).
    width: int | None
    classes: int | None
    probed = kept if kept is not None and kept.probed(x, y) else None
    if probed is not None:
        # (the trial below passed on these very tensors, unchanged since where it looks, for
        # this step's model, loss and optimizer, found unchanged too)
        width, outputs = probed.classes, "(1, C)"
        classes = width
    else:
        # One forward of the first sample and its loss, in evaluation mode (which changes no
        # parameter, statistic or generator; only the forward caches then hold this trial),
        # so that the model's and the loss's own checks of x and y fail before the first step
        # (which would have changed batch-norm statistics), and class indices are checked
        # against the width of the outputs.
        # Where the first sample is refused, the first batch runs too (in evaluation mode
        # still): a module of one's own that takes no single sample passes there; one that the
        # batch fails too stops the call with the sample's refusal.
        with eval_mode(model), torch.inference_mode():
            refusal: Exception | None = None
            try:
                probe = _trial(criterion, model, x[:1], y[:1])
            except Exception as error:
                refusal = error
            size = min(batch_size, len(x))
            if refusal is not None and size > 1:
                try:
                    probe = _trial(criterion, model, x[:size], y[:size])
                    refusal = None
                except Exception:
                    pass  # (refused by the batch too: the sample's refusal, as documented)
            if refusal is not None:
                # (an anomaly too: a value of the trial in evaluation mode, a running statistic
                # that training's forward does not read, is none of a training batch's)
                if isinstance(refusal, TypeError | ValueError | anomaly.AnomalyError):
                    _note_trial(refusal, "sample", x[:1], y[:1])
                raise refusal
        scores = isinstance(probe, Tensor) and probe.dim() == 2
        width = int(probe.shape[1]) if scores else None
        outputs = str((1, *probe.shape[1:])) if isinstance(probe, Tensor) else type(probe).__name__
        # (outputs (N, L, C), a tagger's, say: a loss that stacks reads them as stacked scores,
        # its classes the last width, and refuses a label out of range in the batch that holds
        # it, after the steps before)
        stacked = isinstance(probe, Tensor) and probe.dim() == 3 and criterion.stacks
        classes = int(probe.shape[-1]) if stacked else width
    # (on a probed y too: what was written through .data or NumPy moved no version counter)
    _check_targets(criterion, y, classes, "", "before training")
    if validation is not None:
        # Checked before training, so that a bad set does not fail after the first epoch.
        x_validation, y_validation = check_labelled("fit", "validation ", *validation)
        check_like("fit", "validation x", x_validation, x, "the training x")
        check_class_indices("fit", "validation ", y_validation)
        if width is None:
            raise ValueError(
                "fit: a validation set needs a model whose outputs are class scores (N, C), "
                f"got {outputs} for one sample"
            )
        check_class_indices("fit", "validation ", y_validation, width)
    history = History() if history is None else history
    batches = BatchIterator(x, y, batch_size, generator=generator, drop_last=drop_last)
    batch_count = len(batches)  # (per epoch; fixed for the run: see _check_set_unchanged)
    training_kinds = (_kind(x), _kind(y))
    if scheduler is not None:
        _check_step_limit("fit", scheduler, epochs - start_epoch, batch_count)
        _check_rates("fit", scheduler, optimizer, start_epoch, epochs, batch_count)
    steps: _Batches = batches if parallel is None else parallel.shard(batches)
    model.train()
    if kept is not None and not kept.usable(model):  # type: ignore[arg-type]
        # (a train() of one's own, set on a module, changed what the kept step holds: as a
        # first call decides after model.train(), a step is built anew, or none)
        kept = None
    folded = (
        kept
        if kept is not None
        else FoldedStep.build(model, criterion, optimizer, x, y)
        if parallel is None and epochs > start_epoch
        else None
    )
    if folded is not None and folded is not probed:
        folded.note_probed(x, y)  # (the checks above passed on them; noted already if probed)
    loaded = False  # whether the folded step holds the model's parameters (they are stale)
    # A Ctrl-C or SIGTERM waits for the step it comes in to end (the optimizer's update, half
    # done, left the state of the next step with the parameters of the last), and is raised
    # between two steps; not in data-parallel training, whose step may wait for ever in a
    # collective for a process that is gone.
    with deferring_interrupts(active=parallel is None) as deferred, torch.inference_mode():
        try:
            for epoch in range(start_epoch, epochs):
                if folded is not None and not loaded:
                    # (build checked it; after on_epoch, whatever that changed is checked)
                    if epoch == start_epoch or folded.usable(model):  # type: ignore[arg-type]
                        folded.load()
                        # (set at every load: a fit that on_epoch ran on this model, which
                        # keeps one step, set its own)
                        folded.max_grad_norm = max_grad_norm
                        loaded = True
                    else:  # (changed by on_epoch: the step-by-step loop from now on)
                        folded = None
                epoch_lr = optimizer.lr
                # (read once an epoch, for the batches' steps and the epoch's alike: on_epoch
                # may set it between epochs)
                per_batch = scheduler is not None and scheduler.interval == "batch"
                losses = _train_epoch(
                    model,
                    criterion,
                    optimizer,
                    steps,
                    scheduler,
                    history,
                    parallel,
                    folded,
                    max_grad_norm,
                    epoch,
                    per_batch,
                    deferred,
                )
                # One float64 sum per epoch, cheaper than a mixed-dtype addition per batch.
                total_loss = (
                    torch.stack(losses).sum(dtype=torch.float64)
                    if losses
                    else torch.zeros((), dtype=torch.float64, device=x.device)
                )
                if parallel is not None:
                    total_loss = parallel.reduce_loss(total_loss)
                if scheduler is not None and not per_batch:
                    try:
                        scheduler.step()
                    except ValueError as error:
                        add_note(
                            error,
                            f"fit stepped the schedule at the end of epoch {epoch}: the model "
                            "was trained on the whole epoch, which is not recorded",
                        )
                        raise
                if loaded and (validation is not None or on_epoch is not None):
                    assert folded is not None
                    folded.store()  # (the model's parameters are read, or may be changed)
                    loaded = on_epoch is None
                validation_error = (
                    _error_rate(
                        _predict("fit", model, validation[0], scores=True)[0], validation[1]
                    )
                    if validation is not None
                    else float("nan")
                )
                record = EpochRecord(
                    epoch=epoch,
                    train_loss=float(total_loss) / batch_count,
                    lr=epoch_lr,
                    validation_error=validation_error,
                )
                history.append(record)
                if on_epoch is not None:
                    # (the caller's code, as outside fit: interrupted as it comes)
                    with torch.inference_mode(False), deferred.paused():
                        stop = on_epoch(record)
                    if stop is not None and _stops(stop):
                        break
                    _check_set_unchanged(x, y, training_kinds)
                    # (its values too, as before training: a label made out of range failed
                    # part-way through the next epoch, its steps taken)
                    _check_targets(
                        criterion, y, classes, "training (changed by on_epoch) ", "after on_epoch"
                    )
                    if validation is not None:
                        # The validation set as on_epoch left it, checked as before training:
                        # labels made no class indices below the width were counted as wrong,
                        # silently, and a set resized failed in torch's words.
                        changed = "validation (changed by on_epoch) "
                        if len(validation) != 2:  # (a list's items added or taken out)
                            raise TypeError(
                                "fit: on_epoch changed validation to "
                                f"{describe_pair(validation)}; it must stay an (x, y) pair of "
                                "tensors"
                            )
                        x_changed, _ = check_labelled("fit", changed, *validation)
                        check_like("fit", f"{changed}x", x_changed, x, "the training x")
                        check_class_indices("fit", changed, validation[1], width)
        finally:
            if loaded:
                assert folded is not None
                folded.store()
    return history


def _kind(tensor: Tensor) -> tuple[tuple[int, ...], torch.dtype, torch.device]:
    """A tensor's shape, dtype and device."""
    return tuple(tensor.shape), tensor.dtype, tensor.device


def _check_targets(criterion: Loss, y: Tensor, classes: int | None, what: str, when: str) -> None:
    """Check every training target as the loss checks a batch's (the trial reads the first
    only): class indices in ``[0, classes)`` (``classes``: the last width of the model's
    outputs, scores (N, C) or, for a loss that stacks, (N, L, C); ``None`` where they are
    neither), or the target values the loss takes; ``what`` names ``y`` in a refusal, ``when``
    the moment in its note. One refused in a later batch stopped the run part-way, the model
    trained."""
    if not y.is_floating_point() and classes is not None and not _forward_of_its_own(criterion):
        check_class_indices("fit", what, y)  # (a negative index named so)
        check_class_indices("fit", what, y, classes)
    elif y.is_floating_point():
        try:
            criterion._check_target_values(y)
        except ValueError as error:
            add_note(error, f"fit checked every target of y {when}")
            raise


def _check_set_unchanged(
    x: Tensor, y: Tensor, kinds: tuple[tuple[Any, ...], tuple[Any, ...]]
) -> None:
    """Refuse a training set that ``on_epoch`` resized or gave another dtype or device in place
    (``resize_``, ``set_``): the run's batches per epoch, by which its losses are averaged and
    its schedule counted, are fixed before training (the epoch's loss came out 2/5 of the
    true one), as :func:`~minidl.rounds.fit_rounds` refuses it."""
    for name, tensor, (shape, dtype, device) in zip(("x", "y"), (x, y), kinds, strict=True):
        if _kind(tensor) != (shape, dtype, device):
            raise ValueError(
                f"fit: on_epoch changed {name} to shape {tuple(tensor.shape)}, "
                f"{str(tensor.dtype).removeprefix('torch.')} on {tensor.device}, from {shape}, "
                f"{str(dtype).removeprefix('torch.')} on {device}; the training set keeps its "
                "shape, dtype and device through a run (change its values in place)"
            )


def _forward_of_its_own(criterion: Loss) -> bool:
    """Whether ``criterion`` computes otherwise than minidl's losses: a subclass of
    :class:`~minidl.nn.Loss` with a ``forward`` of its own, or of a built-in loss replacing
    its ``forward`` (see :meth:`~minidl.nn.Loss._computes_as`). Its integer targets may be no
    class indices (a hinge loss's -1 and +1): it checks them itself."""
    kind = type(criterion)
    base: type[Loss] = next(
        k for k in kind.__mro__ if issubclass(k, Loss) and k.__module__.startswith("minidl.")
    )
    return base is Loss or not criterion._computes_as(base)


#: The curves of a :class:`History` holding one entry per epoch (``batch_lr`` holds one per
#: batch of a per-batch schedule, none otherwise).
_EPOCH_CURVES = ("train_loss", "validation_error", "lr")


def history_fault(history: History) -> tuple[type[Exception], str] | None:
    """What makes ``history`` one that :func:`fit` could not extend as one it recorded, as the
    kind of error and its words (from ``history``), or ``None``: a curve that is no list of
    numbers (``TypeError``; one that is no list failed at the end of the first epoch, once it
    had trained; an element that is no number, at the saving of a checkpoint of the run), or
    per-epoch curves of unequal lengths (``ValueError``; whose epochs are not those of the run:
    which of them says how many epochs it holds?). :func:`fit` and
    :func:`minidl.checkpoint.save_checkpoint` refuse such a history in their own words."""
    for name in (*_EPOCH_CURVES, "batch_lr"):
        values = getattr(history, name)
        if not isinstance(values, list):
            return (
                TypeError,
                f"history.{name} must be a list of numbers, got {type(values).__name__}",
            )
        if set(map(type, values)) <= {float, int}:
            continue  # (the common case, found in C: seven times as fast as the loop below, which
            # fit ran on every call extending a long history; a bool or a subclass goes through it)
        for index, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, float | int):
                # (a NumPy number named as such: "a list of numbers, got np.float32(1.0)" read
                # as a contradiction)
                hint = (
                    "; convert it with float()"
                    if isinstance(value, numbers.Real) and not isinstance(value, bool)
                    else ""
                )
                return TypeError, (
                    f"history.{name} must be a list of numbers, Python floats or ints, got "
                    f"{shown(value)} ({type(value).__name__}) at index {index}{hint}"
                )
    lengths = [len(getattr(history, name)) for name in _EPOCH_CURVES]
    if len(set(lengths)) > 1:
        return ValueError, (
            "history must hold as many epochs in train_loss, validation_error and lr (one entry "
            f"per epoch each), got {lengths[0]}, {lengths[1]} and {lengths[2]}"
        )
    return None


def _check_history(where: str, history: History) -> None:
    """Refuse a history that :func:`fit` could not extend (:func:`history_fault`).

    Raises:
        TypeError: a curve that is no list, or an element that is no int or float.
        ValueError: ``train_loss``, ``validation_error`` and ``lr`` of unequal lengths.
    """
    fault = history_fault(history)
    if fault is not None:
        kind, words = fault
        if kind is ValueError:
            words += "; pass the history of the run (load_checkpoint's state.history), or none"
        raise kind(f"{where}: {words}")


def _trial(criterion: Loss, model: Module, x: Tensor, y: Tensor) -> Any:
    """The model's output on ``x``, once the loss has taken it with ``y`` (fit's trial)."""
    probe = model(x)
    _check_loss_value(criterion, criterion(probe, y), probe)
    return probe


def _note_trial(error: BaseException, what: str, x: Tensor, y: Tensor) -> None:
    """Say that ``error`` came from fit's trial on the first ``what`` (sample, batch), ``x``
    and ``y``."""
    rows = f"x[:{len(x)}] and y[:{len(x)}]"
    add_note(
        error,
        f"fit ran the model and the loss on the first {what}, {rows} (shapes {tuple(x.shape)} "
        f"and {tuple(y.shape)}), before training: the shapes above are that {what}'s",
    )


def _check_loss_value(criterion: Loss, value: object, prediction: object) -> None:
    """Refuse what a loss of one's own returned for fit's trial sample unless it is one number,
    a 0-dim floating-point tensor (a Python number or a loss per sample was summed, stacked or
    refused by the epoch's total only after training on it); a loss that takes stacked
    predictions (:attr:`~minidl.nn.Loss.stacks`) may return one per model, of shape ``(R,)``,
    for a ``prediction`` of R stacked models ``(R, N, C)`` (not for one of shape ``(N, C)``: a
    subclass of :class:`~minidl.nn.MSELoss` that returns a loss per sample inherits
    ``stacks``)."""
    if isinstance(value, Tensor) and value.is_floating_point():
        if value.dim() == 0:
            return
        if (
            criterion.stacks
            and isinstance(prediction, Tensor)
            and prediction.dim() == 3
            and value.shape == prediction.shape[:1]
        ):
            return
    if isinstance(value, Tensor):
        got = f"a tensor of shape {tuple(value.shape)}, {value.dtype}"
    else:
        got = f"a {type(value).__name__}"
    stacked = ""
    if criterion.stacks:
        given = (
            f"shape {tuple(prediction.shape)}"
            if isinstance(prediction, Tensor)
            else f"a {type(prediction).__name__}"
        )
        stacked = (
            ", or, for a prediction of R stacked models (R, N, C), one per model, of shape "
            f"(R,) (the model's prediction: {given})"
        )
    raise (ValueError if isinstance(value, Tensor) else TypeError)(
        f"fit: the loss {type(criterion).__name__} returned {got}; expected one number, a "
        "0-dim floating-point tensor (the batch's loss, whose gradient backward() returns)"
        f"{stacked}"
    )


def _set_on_instance(module: Module, name: str) -> bool:
    """Whether the method ``name`` of ``module`` was set on the instance (what the attribute
    gives is not the class's function bound to it), but not as the checks of
    :func:`minidl.detect_anomaly` alone (:func:`minidl.anomaly.checks_only`). (Not first
    ``name in module.__dict__``: asking for it makes CPython keep the attributes in a plain
    dict, and every later read slower.)"""
    method = getattr(module, name)
    return not (
        isinstance(method, types.MethodType)
        and method.__self__ is module
        and method.__func__ is getattr(type(module), name)
    ) and not anomaly.checks_only(module, name)


def _calls_backward(model: Module) -> bool:
    """Whether fit's step calls the model's ``backward`` rather than its
    ``backward_parameters``: its class says so (:attr:`Module._skips_own_backward`), or
    ``backward_parameters`` would reach a module (the model, or the first trained one of a
    :class:`~minidl.nn.Sequential`, down through Sequentials and the blocks of
    :class:`~minidl.nn.Residual`) whose ``backward`` was set on
    its instance, and whose class's own ``backward_parameters`` (a Linear's) would not call it.
    ``backward`` calls it, as it calls every module's, the input gradient it returns dropped.
    (Set on a child that ``backward_parameters`` reaches through ``backward``, it is called
    already.)"""
    if type(model)._skips_own_backward:
        return True
    module: Module | None = model
    while module is not None:
        if _set_on_instance(module, "backward_parameters"):
            return False  # (called: what it does is the instance's)
        if (
            _set_on_instance(module, "backward")
            and type(module).backward_parameters is not Module.backward_parameters
        ):
            return True
        if (
            isinstance(module, Residual)
            and type(module).backward_parameters is Residual.backward_parameters
        ):
            block = module.block
            if type(block)._skips_own_backward:
                return False  # (Residual calls its backward)
            module = block  # (whose backward_parameters Residual's calls)
            continue
        if (
            not isinstance(module, Sequential)
            or type(module).backward_parameters is not Sequential.backward_parameters
        ):
            return False
        trained = [child for child in module if next(child.parameters(), None) is not None]
        first = trained[0] if trained else (module[len(module) - 1] if len(module) else None)
        if first is None or type(first)._skips_own_backward:
            return False  # (Sequential calls its backward)
        module = first
    return False


def _note_loss_gradient(
    error: BaseException, criterion: Loss, gradient: object, prediction: object
) -> None:
    """Note, on a refusal of the model's backward, where its gradient came from: the loss's
    ``backward`` (a loss of one's own whose gradient has another shape than its prediction
    was otherwise blamed on the model's last layer, "Linear: gradient has shape (8,)")."""
    if isinstance(gradient, Tensor) and isinstance(prediction, Tensor):
        given = f"a gradient of shape {tuple(gradient.shape)}, {gradient.dtype}"
        made = f"a prediction of shape {tuple(prediction.shape)}, {prediction.dtype}"
    else:
        given, made = type(gradient).__name__, type(prediction).__name__
    add_note(
        error,
        f"fit gave the model's backward the loss's gradient, {type(criterion).__name__}"
        f".backward(): {given}, for {made}",
    )


def _train_epoch(
    model: Module,
    criterion: Loss,
    optimizer: Optimizer,
    steps: _Batches,
    scheduler: LRScheduler | None,
    history: History,
    parallel: Parallel | None,
    folded: FoldedStep | None,
    max_grad_norm: float | None = None,
    epoch: int = 0,
    per_batch: bool = False,
    deferred: Deferred | None = None,
) -> list[Tensor]:
    """One epoch (``epoch``, for a message) of :func:`fit`'s steps, stepping ``scheduler``
    after each batch if ``per_batch``; the loss of each batch. The interrupts that
    ``deferred`` noted are raised before each step (see :func:`fit`)."""
    calls_backward = folded is None and _calls_backward(model)  # (once an epoch)
    losses: list[Tensor] = []
    for x_batch, y_batch in steps:
        if deferred is not None and deferred.noted:  # (the last step, and its schedule, done)
            deferred.deliver()
        if folded is not None:
            loss = folded(x_batch, y_batch)
        else:
            optimizer.zero_grad()
            prediction = model(x_batch)
            loss = criterion(prediction, y_batch)
            gradient = criterion.backward()
            try:
                if calls_backward:
                    model.backward(gradient)
                else:
                    model.backward_parameters(gradient)
            except (TypeError, ValueError) as error:
                _note_loss_gradient(error, criterion, gradient, prediction)
                raise
            if parallel is not None:
                loss = parallel.synchronize(loss)
            if max_grad_norm is not None:
                clip_grad_norm_(optimizer.params, max_grad_norm)
            optimizer.step()
        losses.append(loss)
        if per_batch:
            assert scheduler is not None
            # Recorded after the step, so that a failing batch leaves the history as is.
            history.batch_lr.append(optimizer.lr)
            try:
                scheduler.step()
            except ValueError as error:
                add_note(
                    error,
                    f"fit stepped the schedule after batch {len(losses)} of epoch {epoch}: the "
                    "model was trained on the batches up to this one, whose rates are in "
                    "history.batch_lr; the epoch is not recorded",
                )
                raise
    return losses
