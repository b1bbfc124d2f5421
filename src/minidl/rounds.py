"""Training R independent models of one architecture at once ("batched rounds").

The paper reports every configuration as the mean over 5 rounds, each a separately initialised
network trained on its own data in its own order. :func:`fit_rounds` trains the R networks of
such a configuration together: it stacks them (:func:`minidl.nn.stack_models`), so each layer is
one batched matrix product over a leading model dimension, and every element-wise operation,
optimizer update included, covers the R models in one tensor operation. The result is the same
as calling :func:`minidl.train.fit` on each model in turn (to rounding: batched and single matrix
products may sum in a different order), for a fraction of the time on small networks.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeGuard

import torch
from torch import Tensor

from minidl import anomaly
from minidl._interrupts import deferring_interrupts, holding_interrupts
from minidl._validate import (
    add_note,
    check_class_indices,
    check_cpu_generator,
    check_int,
    check_labelled,
    check_like,
    check_real,
    check_strided,
    describe_pair,
    refuse_meta,
    shown,
)
from minidl.nn._stack_clip import StackClip
from minidl.nn.batched_linear import BatchedLinear
from minidl.nn.flat import flat_buffer
from minidl.nn.linear import Linear
from minidl.nn.loss import Loss
from minidl.nn.module import Module
from minidl.nn.parameter import Parameter
from minidl.nn.sequential import Sequential
from minidl.nn.stack import (
    _stack_models,
    _stacked_models,
    flat_model_parameters,
    model_parameters,
)
from minidl.nn.stacked_loss import StackedLoss
from minidl.optim.lr_scheduler import LRScheduler
from minidl.optim.optimizer import Optimizer
from minidl.train import (
    EpochRecord,
    History,
    _check_first_step,
    _check_rates,
    _check_step_limit,
    _classes,
    _stops,
    eval_mode,
)

__all__ = ["PerModel", "fit_rounds", "stacked_error_rates"]


@dataclass(frozen=True)
class PerModel:
    """Optimizers per model, for :func:`fit_rounds`: ``factory(g, parameters)`` builds the
    optimizer of model ``g`` on its parameters (views into the stack, see
    :func:`minidl.nn.model_parameters`).

    Each model then has its own learning rate, hyper-parameters and schedule, e.g. a learning
    rate sweep trained at once::

        rates = [0.3, 0.1, 0.03, 0.01]
        fit_rounds(models, criterion, PerModel(lambda r, p: SGD(p, lr=rates[r])), ...)

    With ``group`` = k, consecutive models share an optimizer: ``factory(g, parameters)`` gets
    the parameters of models ``g k`` to ``g k + k - 1`` (with a leading dimension k), e.g. the
    rounds of several experiments, each experiment with its own settings.

    One optimizer over the whole stack (a plain factory) updates all the models in one operation;
    each optimizer of a ``PerModel`` costs one operation per parameter tensor and step.

    With ``flat=True``, the models are stacked with ``layout="model"`` (see
    :func:`minidl.nn.stack_models`) and ``factory(g, parameters)`` gets a list holding one flat
    :class:`Parameter` over the group's models, all layers (:func:`minidl.nn.flat_model_parameters`):
    each optimizer is then one operation per step, and, with one intra-op thread, a model trains
    to the same bits whatever the other models in the stack and their number (one included),
    where a model's slice of every activation, a batch size times a layer width in bytes, is a
    multiple of 64 bytes (of 16 on this CPU: in float32, every batch size, the last one and a
    validation set's included, times every width a multiple of 4); see
    :func:`minidl.nn.stack_models` for why. It suits element-wise optimizers (all of minidl's),
    not per-layer settings.
    """

    factory: Callable[[int, list[Parameter]], Optimizer]
    group: int = 1
    flat: bool = False


def stacked_error_rates(model: Sequential, x: Tensor, y: Tensor) -> list[float]:
    """Classification error (%) of each of the R stacked models on its own ``x[r]``, ``y[r]``.

    Args:
        model: a network made by :func:`minidl.nn.stack_models`.
        x: inputs ``(R, N, features)``.
        y: class indices ``(R, N)``, of an integer dtype and below the number of classes (the
            width of the model's outputs).

    Raises:
        TypeError: ``model`` is not a :class:`Sequential`, ``x`` or ``y`` not a dense tensor.
        ValueError: ``model`` holds no stacked layer (:class:`BatchedLinear`): it was not made
            by :func:`minidl.nn.stack_models`; ``x`` and ``y`` of other shapes than above (of
            another number R of models than the stack's, or no sample), or on two devices, or
            on the meta device (no values).
    """
    models = _stacked_models(model, "stacked_error_rates")
    for name, tensor, dims in (("x", x, 3), ("y", y, 2)):
        if not isinstance(tensor, Tensor):
            raise TypeError(
                f"stacked_error_rates: {name} must be a torch.Tensor, got {type(tensor).__name__}"
            )
        check_strided("stacked_error_rates", name, tensor)
        if tensor.dim() != dims:
            expected = "inputs (R, N, features)" if name == "x" else "class indices (R, N)"
            raise ValueError(
                f"stacked_error_rates: {name} must hold {expected}, got shape {tuple(tensor.shape)}"
            )
    if x.shape[:2] != y.shape:
        raise ValueError(
            f"stacked_error_rates: x of shape {tuple(x.shape)} and y of shape {tuple(y.shape)} "
            "must hold as many models and samples"
        )
    # (refused by the first stacked layer, in its words)
    if x.shape[0] != models:
        raise ValueError(
            f"stacked_error_rates: x of shape {tuple(x.shape)} holds the inputs of "
            f"{x.shape[0]} models, the stack {models}"
        )
    if x.shape[1] == 0:  # (as error_rate)
        raise ValueError(
            f"stacked_error_rates: the sets are empty, got x of shape {tuple(x.shape)} and y of "
            f"shape {tuple(y.shape)}; expected at least one sample"
        )
    if x.device != y.device:  # (as error_rate: before the forward, not in torch's words after it)
        raise ValueError(
            f"stacked_error_rates: x and y must be on one device, got {x.device} and {y.device}"
        )
    if x.is_meta:  # (as error_rate)
        refuse_meta("stacked_error_rates", "x and y are", ": there are no errors to count")
    check_class_indices("stacked_error_rates", "", y)
    with eval_mode(model):
        output = model(x)
    check_class_indices("stacked_error_rates", "", y, int(output.shape[-1]))
    return _error_rates(output, y)


def _error_rates(output: Tensor, y: Tensor) -> list[float]:
    """Each model's error (%) from the stacked outputs ``(R, N, C)`` and checked indices ``y``
    (a sample whose outputs hold a NaN counts as wrong).

    With two classes the right samples are counted by :func:`_two_class_right`, the same
    count as comparing :func:`~minidl.train._classes` with ``y`` in fewer operations, none
    reducing over the classes (on the 1 000 validation points of a stack of 15 to 25 models, a
    quarter to two fifths of the time: see docs/speed.md)."""
    samples = y.shape[1]
    if output.shape[-1] == 2:
        right = _two_class_right(output, y).tolist()
        return [100.0 * (samples - int(count)) / samples for count in right]
    wrong = (_classes(output) != y).sum(dim=1)
    return [100.0 * int(count) / samples for count in wrong.tolist()]


def _two_class_right(output: Tensor, y: Tensor) -> Tensor:
    r"""Each model's rightly classified samples, ``(R,)``, from two-class scores ``(R, N, 2)``
    and indices ``y`` ``(R, N)`` of 0 and 1.

    The argmax of :math:`(s_0, s_1)` is 1 where :math:`s_1 > s_0` and 0 where
    :math:`s_0 \ge s_1` (the first of equal scores, as ``argmax`` takes it); a row holding a
    NaN meets neither comparison, so it is right for no class, as
    :func:`~minidl.train._classes` gives it no class (-1)."""
    first, second = output.unbind(-1)
    return torch.where(y == 1, second > first, first >= second).sum(dim=1)


def fit_rounds(
    models: Sequence[Sequential],
    criterion: Loss,
    make_optimizer: Callable[[Sequential], Optimizer] | PerModel,
    train_sets: Sequence[tuple[Tensor, Tensor]],
    *,
    epochs: int,
    batch_size: int = 100,
    generators: Sequence[torch.Generator],
    make_scheduler: Callable[[Optimizer], LRScheduler | None] | None = None,
    validation_sets: Sequence[tuple[Tensor, Tensor]] | None = None,
    on_epoch: Callable[[int, list[EpochRecord]], object] | None = None,
    max_grad_norm: float | None = None,
) -> list[History]:
    """Train R models of one architecture at once; model ``r`` ends as :func:`~minidl.train.fit`
    would leave it when trained alone on ``train_sets[r]`` shuffled by ``generators[r]``.

    Every argument is checked before anything changes, every training set's targets too (as
    the model's loss checks a batch's: see :func:`~minidl.train.fit`). Each model is then put
    in training mode (``model.train()``, as :func:`~minidl.train.fit` does) and left in it; the
    models are stacked (gradients included), trained together and their trained parameters,
    and their gradients (as :func:`~minidl.train.fit` leaves them: the last batch's, or, for a
    parameter that no optimizer holds, accumulated over the batches onto the model's own;
    untouched when no batch ran), are copied back into ``models`` (in place) when training
    ends, also when it stops with an exception (from a step or from ``on_epoch``), so that each
    model holds its parameters of that moment. Each epoch draws one permutation per model from
    its generator (as :class:`~minidl.data.BatchIterator` does), so each model sees its own
    data in its own order.
    The optimizer and the optional scheduler are built on the stack by the two factories; as all
    of minidl's optimizers are element-wise, this is one optimizer per model with the same
    hyper-parameters and schedule. Wrapped in :class:`PerModel`, the optimizer factory is called
    once per model instead, and the scheduler factory once per optimizer, so that each model
    has its own learning rate, hyper-parameters and schedule.

    Args:
        models: R distinct :class:`Sequential` networks of the same architecture (Linear and
            activations); a model given twice, or two models that share a parameter, are
            refused (each round would train the other's parameters).
        criterion: the loss; it receives ``(R, B, C)`` predictions and returns R losses.
        make_optimizer: builds the optimizer on the stacked network, e.g.
            ``lambda stack: SGD(stack.parameters(), lr=0.01)``; or a :class:`PerModel`.
        train_sets: R pairs ``(x, y)`` with the same number of samples, alike in shape, dtype
            and device; ``y`` holds class indices ``(N,)`` or target rows ``(N, C)``, as the
            criterion takes them.
        epochs: epochs to train.
        batch_size: samples per batch.
        generators: R generators of the shuffles, a distinct object per model.
        make_scheduler: builds an optional schedule on the optimizer (it may return ``None``).
        validation_sets: R optional pairs ``(x, y)`` evaluated after each epoch, ``y`` class
            indices ``(N,)`` of an integer dtype, all of one size; they are checked before
            training starts (the indices against the width of the stack's outputs, from one
            forward pass of the first sample of each set in evaluation mode).
        on_epoch: called after each epoch with the epoch and the R :class:`EpochRecord`,
            outside ``torch.inference_mode()`` (in which the steps run; a Ctrl-C or SIGTERM
            there waits for the step to end, every model's update, as in
            :func:`~minidl.train.fit`, where on_epoch is interrupted as the signal comes).
            ``models`` get the trained parameters only when training ends, so they are not
            updated yet here, and a change made to their parameters here is refused after it
            (the copy at the end would overwrite it, where ``fit`` trains on from it); the
            sets are read again after it where their version counters
            moved, or a tensor was put in place of one, as :func:`~minidl.train.fit` reads its
            data each epoch (changed in place or replaced, they train the next epoch; resized,
            cast, added or taken out, or replaced by something other than a pair of tensors,
            they are refused;
            validation labels that are no class indices below the outputs' width are refused;
            written through a NumPy array or .data, they move no counter and are not read
            again). As
            with :func:`~minidl.train.fit`, if it returns ``True`` (or a true numpy bool or
            one-element bool tensor), training stops after that epoch, for all the models (the
            histories end with it); other return values than ``None`` and bools are refused (a
            TypeError after the epoch: the models keep its training, while the histories,
            which only the return value holds, are lost with the error).
        max_grad_norm: clip every step's gradients to this total 2-norm before the optimizers'
            steps, each model by its own norm, as :func:`~minidl.train.fit` given it clips a
            model trained alone (a finite number ``> 0``; ``None``, the default, clips nothing).
            Model ``r``'s norm is that of the gradients its optimizer holds, as fit's is of
            ``optimizer.params``: those of its parameters that the optimizer leaves out are
            neither counted nor scaled; the parameters outside the stack that an optimizer of
            one model holds (``PerModel`` with ``group=1``) are counted and scaled with that
            model's, and an optimizer of several models (a plain factory, or a larger
            ``group``) that holds one, or two optimizers that hold one parameter, are refused
            (its gradient belongs to no one model). A
            NaN or infinite norm gives that model the coefficient of the formula (NaN, or 0),
            as in :func:`~minidl.nn.clip_grad_norm_`, and leaves the others as they are. It
            costs a few batched operations per step, whatever the number of models.

    Returns:
        The R histories, as :func:`~minidl.train.fit` would return them.

    Raises:
        TypeError, ValueError: a bad argument, named in the message, before anything changes
            (the models and the generators are then as they were). As in
            :func:`~minidl.train.fit`, the stack and the criterion first run once on the first
            sample of every training set, in evaluation mode, so that sets the models or the
            criterion do not take fail here, and class indices are checked against the width
            of the outputs. An optimizer that updates none of the parameters it was built for,
            one returned for two groups, a schedule of another optimizer, a schedule that the
            run would step past its ``step_limit`` and, with ``max_grad_norm``, an optimizer of
            several models holding a parameter outside the stack, or two optimizers holding one
            parameter, are refused too, as is a criterion that does not return one loss per
            model (shape ``(R,)``; a total would be recorded as each model's loss).
        TypeError: (before anything changes) a model that :func:`minidl.nn.stack_models`
            refuses as computing otherwise than the stack: a model or a Linear layer of a
            subclass that overrides how its base class computes, or a method set on the
            instance of a model or of one of its layers (its ``forward``, ``backward``, ...;
            an activation's ``_forward`` and ``_backward`` are kept), which
            :func:`~minidl.train.fit` calls and the stack would leave out: train such a model
            with :func:`~minidl.train.fit`. The checks that :func:`minidl.detect_anomaly` sets
            on the models it watches are no such method: the stack runs in their place, watched
            where one of them is.
        AnomalyError: inside a :func:`minidl.detect_anomaly` block watching one of ``models``,
            at the first NaN or infinity of the stack (whose first index is the model's).
    """
    _check_sequence("models", models)
    _check_sequence("train_sets", train_sets)
    _check_sequence("generators", generators)
    if validation_sets is not None:
        _check_sequence("validation_sets", validation_sets)
    rounds = len(models)
    if rounds == 0:
        raise ValueError("fit_rounds: expected at least one model")
    _check_models(models)
    if not isinstance(criterion, Loss):
        raise TypeError(
            f"fit_rounds: criterion must be a minidl Loss, got {type(criterion).__name__}"
        )
    if not criterion.stacks:
        raise TypeError(
            f"fit_rounds: criterion {type(criterion).__name__} does not take stacked predictions "
            "(R, N, C); CrossEntropyLoss, MSELoss and a StackedLoss of them do"
        )
    if isinstance(criterion, StackedLoss) and criterion.models != rounds:
        raise ValueError(
            f"fit_rounds: criterion is a StackedLoss of {criterion.models} models, for "
            f"{rounds} models; its runs must cover the {rounds} models"
        )
    for name, sets in (("train_sets", train_sets), ("validation_sets", validation_sets)):
        if isinstance(sets, tuple) and len(sets) == 2 and all(isinstance(t, Tensor) for t in sets):
            # (one pair where a list of pairs belongs: with one model, counted as 2 sets)
            raise TypeError(
                f"fit_rounds: {name} must be a list of (x, y) pairs, one per model, got one "
                "(x, y) pair of tensors (for one model: [(x, y)])"
            )
    for name, sequence in (("train_sets", train_sets), ("generators", generators)):
        if len(sequence) != rounds:
            raise ValueError(
                f"fit_rounds: expected {rounds} {name}, one per model, got {len(sequence)}"
            )
    if validation_sets is not None and len(validation_sets) != rounds:
        raise ValueError(
            f"fit_rounds: expected {rounds} validation_sets, one per model, got {len(validation_sets)}"
        )
    for index, generator in enumerate(generators):
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"fit_rounds: generators[{index}] must be a torch.Generator, got "
                f"{type(generator).__name__}"
            )
        check_cpu_generator("fit_rounds", f"generators[{index}]", generator)
    twice = _given_twice(generators)
    if twice is not None:
        # The models would draw their orders in turns from one stream: each order would
        # depend on the others and on their number, unlike fit's.
        raise ValueError(
            f"fit_rounds: generators[{twice[1]}] is generators[{twice[0]}] (one generator given "
            "twice); each model needs a generator of its own, e.g. "
            "[torch.Generator().manual_seed(seed) for seed in seeds]"
        )
    epochs = check_int("fit_rounds", "epochs", epochs, low=0)
    batch_size = check_int("fit_rounds", "batch_size", batch_size)
    if max_grad_norm is not None:
        max_grad_norm = check_real(
            "fit_rounds", "max_grad_norm", max_grad_norm, low=0.0, low_open=True
        )
    if not isinstance(make_optimizer, PerModel) and not callable(make_optimizer):
        raise TypeError(
            "fit_rounds: make_optimizer must be a callable that builds an optimizer on the stack, "
            f"or a PerModel, got {type(make_optimizer).__name__}"
        )
    if isinstance(make_optimizer, PerModel) and not callable(make_optimizer.factory):
        raise TypeError(
            "fit_rounds: PerModel.factory must be a callable (index, parameters) -> Optimizer, "
            f"got {type(make_optimizer.factory).__name__}"
        )
    for name, function in (("make_scheduler", make_scheduler), ("on_epoch", on_epoch)):
        if function is not None and not callable(function):
            raise TypeError(
                f"fit_rounds: {name} must be callable or None, got {type(function).__name__}"
            )
    _check_sets(train_sets, validation_sets)

    flat = False
    if isinstance(make_optimizer, PerModel):
        flat, group = make_optimizer.flat, make_optimizer.group
        if not isinstance(flat, bool):
            raise TypeError(f"fit_rounds: PerModel.flat must be a bool, got {shown(flat)}")
        group = check_int("fit_rounds", "PerModel.group", group)
        if rounds % group:
            raise ValueError(
                f"fit_rounds: PerModel.group must be a divisor of the number of models "
                f"({rounds}), got {shown(group)}"
            )
    try:
        # (the models in any mode, as fit takes a model: they are put in training mode below)
        stacked = _stack_models(models, "model" if flat else "layer", modes=False)
    except (TypeError, ValueError) as error:  # models of other architectures
        raise type(error)(f"fit_rounds: {error}") from error
    if not any(isinstance(layer, BatchedLinear) for layer in stacked):
        # (the optimizers' own refusal, of no parameters, or an internal function's, of no
        # stacked layer, said otherwise)
        raise ValueError(
            f"fit_rounds: the models hold no Linear layer (each a Sequential of "
            f"{len(stacked)} module{'' if len(stacked) == 1 else 's'}, none a Linear), so "
            "there is nothing to train; fit_rounds trains networks of Linear layers and "
            "activations"
        )
    # The stack starts with the models' gradients, as fit does with a model's: a gradient that
    # no optimizer zeroes accumulates onto them.
    _copy_gradients_in(stacked, models)
    classes = _check_fit(stacked, criterion, train_sets)
    _check_target_values(criterion, train_sets)
    if validation_sets is not None:
        # (after the training sets were run: a training x the models do not take is named as
        # such, not as the validation x that differs from it)
        for index, (x, y) in enumerate(validation_sets):
            name = f"validation_sets[{index}] x"
            check_like("fit_rounds", name, x, train_sets[0][0], "the training x")
            check_class_indices(
                "fit_rounds",
                f"validation_sets[{index}] ",
                y,
                classes,
                one_output_hint=_ONE_OUTPUT_HINT,
            )
    samples = int(train_sets[0][0].shape[0])
    # A batch size beyond the samples is one batch of them all (torch.split takes no size
    # beyond 64 bits).
    batch_size = min(batch_size, max(samples, 1))
    batches_per_epoch = -(-samples // batch_size)
    if isinstance(make_optimizer, PerModel):
        given = [
            _group_parameters(stacked, start, group, flat) for start in range(0, rounds, group)
        ]
        optimizers = [
            make_optimizer.factory(index, parameters) for index, parameters in enumerate(given)
        ]
        for index, optimizer in enumerate(optimizers):
            if not isinstance(optimizer, Optimizer):
                raise TypeError(
                    f"fit_rounds: the PerModel factory returned {type(optimizer).__name__} for "
                    f"optimizer {index}, expected a minidl Optimizer"
                )
            _check_optimizer(
                optimizer,
                given[index],
                optimizers[:index],
                f"optimizer {index}",
                "build it on the parameters given to the PerModel factory",
            )
        # Where the stack's gradients are one flat buffer, zero them in one operation; but
        # only where that zeroes what the optimizers' zero_grad would, as fit's does: each
        # optimizer holds exactly the parameters it was given (a gradient that no optimizer
        # zeroes accumulates over the batches in fit, and one outside the stack is zeroed),
        # and its zero_grad is Optimizer's (one of a subclass's, or set on the optimizer, may
        # do otherwise, e.g. zero every other batch to accumulate two batches per step).
        zero_grad: Callable[[], object]
        if not all(
            {id(p) for p in optimizer.params} == {id(p) for p in parameters}
            and type(optimizer).zero_grad is Optimizer.zero_grad
            and "zero_grad" not in vars(optimizer)
            for optimizer, parameters in zip(optimizers, given, strict=True)
        ):
            zero_grad = functools.partial(_zero_grads, optimizers)
        elif flat:
            zero_grad = flat_model_parameters(stacked, slice(0, rounds)).grad.zero_
        else:
            flat_grads = flat_buffer([parameter.grad for parameter in stacked.parameters()])
            zero_grad = flat_grads.zero_ if flat_grads is not None else stacked.zero_grad
    else:
        group, given = rounds, [list(stacked.parameters())]
        optimizers = [make_optimizer(stacked)]
        if not isinstance(optimizers[0], Optimizer):
            raise TypeError(
                f"fit_rounds: make_optimizer returned {type(optimizers[0]).__name__}, expected a "
                "minidl Optimizer"
            )
        _check_optimizer(
            optimizers[0],
            given[0],
            [],
            "the optimizer",
            "build it on the parameters of the stack it is given (stack.parameters())",
        )
        zero_grad = optimizers[0].zero_grad
    schedulers = [
        make_scheduler(optimizer) if make_scheduler is not None else None
        for optimizer in optimizers
    ]
    for index, (scheduler, optimizer) in enumerate(zip(schedulers, optimizers, strict=True)):
        if scheduler is None:
            continue
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(
                f"fit_rounds: make_scheduler returned {type(scheduler).__name__}, expected a "
                "minidl LRScheduler or None"
            )
        if scheduler.optimizer is not optimizer:
            raise ValueError(
                f"fit_rounds: make_scheduler returned a {type(scheduler).__name__} for optimizer "
                f"{index} that schedules another optimizer; build it on the optimizer it is given"
            )
        if scheduler.superseded_by is not None:
            raise ValueError(
                f"fit_rounds: make_scheduler returned a {type(scheduler).__name__} for optimizer "
                f"{index}, on which a {scheduler.superseded_by} was built after it; return the "
                "schedule built last (a SequentialSchedule runs several one after the other)"
            )
        _check_step_limit("fit_rounds", scheduler, epochs, batches_per_epoch)
        _check_rates("fit_rounds", scheduler, optimizer, 0, epochs, batches_per_epoch)
    # What each optimizer's first step would refuse (at its schedule's first rate), as fit asks:
    # refused there, the models before it had stepped and every gradient was overwritten.
    for index, optimizer in enumerate(optimizers):
        name = type(optimizer).__name__
        what = (
            f"optimizer {index} ({name})" if isinstance(make_optimizer, PerModel) else f"the {name}"
        )
        _check_first_step("fit_rounds", optimizer, what)
    # Each model's gradients clipped to their own norm (those its optimizer holds, as fit's).
    clip = (
        StackClip(
            stacked,
            max_grad_norm,
            [
                (
                    f"optimizer {index}"
                    if isinstance(make_optimizer, PerModel)
                    else "the optimizer",
                    index * group,
                    (index + 1) * group,
                    parameters,
                    optimizer.params,
                )
                for index, (parameters, optimizer) in enumerate(zip(given, optimizers, strict=True))
            ],
            flat=flat,
            where="fit_rounds",
        )
        if max_grad_norm is not None
        else None
    )
    # The index of the optimizer (and schedule) of each model.
    owner = [index * len(optimizers) // rounds for index in range(rounds)]

    x_all = torch.stack([x for x, _ in train_sets])
    y_all = torch.stack([y for _, y in train_sets])
    # The targets may be class indices (R, N) or rows (R, N, C) such as MSE's.
    x_flat = x_all.reshape(rounds * samples, *x_all.shape[2:])
    y_flat = y_all.reshape(rounds * samples, *y_all.shape[2:])
    model_offsets = torch.arange(rounds, device=x_all.device).repeat_interleave(samples) * samples
    stacked_as = _signature(train_sets)  # (read again after on_epoch where it moved)
    train_dtypes = _dtypes(train_sets)
    if validation_sets is not None:
        x_val = torch.stack([x for x, _ in validation_sets])
        y_val = torch.stack([y for _, y in validation_sets])
        validation_as = _signature(validation_sets)
        # (each set's own: the stack takes labels of several integer dtypes in one)
        validation_dtypes = _dtypes(validation_sets)
    histories = [History() for _ in range(rounds)]
    for model in models:
        model.train()
    stacked.train()
    models_as = _parameters_signature(models)  # (on_epoch must leave them: see there)
    # The models get the stack's parameters also when a step or on_epoch raises (as fit leaves
    # a model where it stopped); the copy comes after inference mode is left. The gradients
    # are copied once a batch has begun (before, the stack's zeros are no gradient of fit's).
    stepped = [False]
    # A Ctrl-C or SIGTERM waits for the step it comes in to end (every model's update, not
    # some of them) and is raised before the next one, as in fit.
    # (outermost: the copy back runs deferred too, no gap between the two for a second one)
    with (
        deferring_interrupts() as deferred,
        _copied_back(stacked, models, stepped),
        torch.inference_mode(),
        _watched(stacked, models),
    ):
        for epoch in range(epochs):
            epoch_lrs = [optimizers[owner[index]].lr for index in range(rounds)]
            # Each schedule's interval, read once an epoch (on_epoch may set it between
            # epochs, as in fit), and the history and optimizer of each model whose schedule
            # steps per batch (whose rate each batch records), found once an epoch.
            batch_wise = [s is not None and s.interval == "batch" for s in schedulers]
            per_batch: list[LRScheduler] = []
            per_epoch: list[LRScheduler] = []
            for scheduler, wise in zip(schedulers, batch_wise, strict=True):
                if scheduler is not None:
                    (per_batch if wise else per_epoch).append(scheduler)
            batch_lrs = [
                (history, optimizers[owner[index]])
                for index, history in enumerate(histories)
                if batch_wise[owner[index]]
            ]
            order = torch.cat(
                [torch.randperm(samples, generator=generator) for generator in generators]
            ).to(x_all.device)
            # Row r * samples + i of the flattened sets is sample i of model r.
            order.add_(model_offsets)
            x_epoch = x_flat.index_select(0, order).view(x_all.shape)
            y_epoch = y_flat.index_select(0, order).view(y_all.shape)
            total_loss = torch.zeros(rounds, dtype=torch.float64, device=x_all.device)
            stepped[0] = True  # (once per epoch, not per batch)
            for x_batch, y_batch in zip(
                torch.split(x_epoch, batch_size, dim=1),
                torch.split(y_epoch, batch_size, dim=1),
                strict=True,
            ):
                if deferred.noted:  # (the last step, and its schedules, done)
                    deferred.deliver()
                for history, optimizer in batch_lrs:
                    history.batch_lr.append(optimizer.lr)
                zero_grad()
                loss = criterion(stacked(x_batch), y_batch)
                stacked.backward_parameters(criterion.backward())
                if clip is not None:
                    clip()
                for optimizer in optimizers:
                    optimizer.step()
                total_loss.add_(loss)
                for scheduler in per_batch:
                    scheduler.step()
            for scheduler in per_epoch:
                scheduler.step()
            if validation_sets is not None:
                with eval_mode(stacked):
                    errors = _error_rates(stacked(x_val), y_val)
            else:
                errors = [float("nan")] * rounds
            records = [
                EpochRecord(
                    epoch=epoch,
                    train_loss=loss_sum / batches_per_epoch,
                    lr=epoch_lr,
                    validation_error=error,
                )
                for loss_sum, error, epoch_lr in zip(
                    total_loss.tolist(), errors, epoch_lrs, strict=True
                )
            ]
            for history, record in zip(histories, records, strict=True):
                history.append(record)
            if on_epoch is not None:
                # (the caller's code, as outside: interrupted as the signal comes)
                with torch.inference_mode(False), deferred.paused():
                    stop = on_epoch(epoch, records)
                # (the models are the copies' destination: a change made to them here would
                # be overwritten when training ends, also where on_epoch stops it)
                _check_models_kept(models, models_as)
                if stop is not None and _stops(stop, "fit_rounds"):
                    break
                # (the sets as on_epoch left them, as fit's batches read them each epoch)
                stacked_as = _stack_again(
                    "train_sets",
                    train_sets,
                    x_all,
                    y_all,
                    stacked_as,
                    train_dtypes,
                    classes,
                    criterion,
                )
                if validation_sets is not None:
                    validation_as = _stack_again(
                        "validation_sets",
                        validation_sets,
                        x_val,
                        y_val,
                        validation_as,
                        validation_dtypes,
                        classes,
                    )
    return histories


#: What :func:`_signature` keeps of each tensor of the sets: a weak reference to it, its version
#: counter and its address.
_Seen = tuple[tuple["weakref.ref[Tensor]", int, int], ...]


def _signature(sets: Sequence[tuple[Tensor, Tensor]]) -> _Seen | None:
    """A weak reference to each tensor of ``sets`` (pairs of tensors), its version counter and
    its address, which a change in place (``x.add_(noise)``, ``x.resize_(...)``) or of
    ``.data`` moves; ``None`` where one keeps no counter (an inference tensor). A tensor put in
    place of another is told by the reference: it may have the other's address and counter."""
    try:
        return tuple(
            (weakref.ref(tensor), tensor._version, tensor.data_ptr())
            for pair in sets
            for tensor in pair
        )
    except RuntimeError:  # ("Inference tensors do not track version counter")
        return None


def _unchanged(sets: Sequence[object], seen: _Seen | None) -> bool:
    """Whether ``sets`` are the pairs of tensors that :func:`_signature` gave ``seen`` for, with
    the same counters and addresses."""
    if seen is None or len(seen) != 2 * len(sets):
        return False
    tensors: list[object] = []
    for pair in sets:
        if not _pair_of_tensors(pair):
            return False
        tensors += pair
    try:
        return all(
            reference() is tensor
            and isinstance(tensor, Tensor)
            and tensor._version == version
            and tensor.data_ptr() == address
            for (reference, version, address), tensor in zip(seen, tensors, strict=True)
        )
    except RuntimeError:  # (an inference tensor put in place of one)
        return False


def _kind(tensor: Tensor) -> str:
    """A set's tensor as a refusal names it: ``(40, 2), torch.float64 on cpu`` (and its layout
    where it is not strided)."""
    layout = "" if tensor.layout is torch.strided else f", {tensor.layout}"
    return f"{tuple(tensor.shape)}, {tensor.dtype} on {tensor.device}{layout}"


def _dtypes(sets: Sequence[tuple[Tensor, Tensor]]) -> tuple[tuple[torch.dtype, torch.dtype], ...]:
    """The dtypes of each pair ``(x, y)`` of ``sets``."""
    return tuple((x.dtype, y.dtype) for x, y in sets)


def _parameters_signature(
    models: Sequence[Sequential],
) -> list[tuple[tuple[Tensor, int], ...] | None]:
    """For each model, its parameter tensors and their version counters, which a change in
    place or of ``.data`` moves; ``None`` for a model whose tensors keep no counter (inference
    tensors)."""
    signatures: list[tuple[tuple[Tensor, int], ...] | None] = []
    for model in models:
        try:
            signatures.append(tuple((p.data, p.data._version) for p in model.parameters()))
        except RuntimeError:  # ("Inference tensors do not track version counter")
            signatures.append(None)
    return signatures


def _check_models_kept(
    models: Sequence[Sequential], signatures: list[tuple[tuple[Tensor, int], ...] | None]
) -> None:
    """Refuse a change that on_epoch made to a model's parameters (in place, or a tensor or
    Parameter put in place): the models get the stack's parameters when training ends, so
    that it would be overwritten, silently, where :func:`~minidl.train.fit` trains on from it."""
    for index, (now, before) in enumerate(
        zip(_parameters_signature(models), signatures, strict=True)
    ):
        if before is None or now is None:
            continue
        if len(now) != len(before) or any(
            a[0] is not b[0] or a[1] != b[1] for a, b in zip(now, before, strict=True)
        ):
            raise ValueError(
                f"fit_rounds: on_epoch changed the parameters of models[{index}]; fit_rounds "
                "trains the models as one stack of copies and copies its parameters into them "
                "when training ends, which would overwrite the change: change the models "
                "before or after fit_rounds (or train them one by one with fit)"
            )


def _stack_again(
    name: str,
    sets: Sequence[tuple[Tensor, Tensor]],
    x_all: Tensor,
    y_all: Tensor,
    signature: _Seen | None,
    dtypes: tuple[tuple[torch.dtype, torch.dtype], ...],
    classes: int | None = None,
    criterion: Loss | None = None,
) -> _Seen | None:
    """Copy ``sets`` into their stacks ``x_all`` and ``y_all`` again where on_epoch may have
    changed them in place or put other tensors in place of them (see :func:`_unchanged`:
    ``signature`` is the :func:`_signature` they had when last stacked), and return their
    signature; refuse a set resized, or given another dtype than its own (``dtypes``),
    meanwhile, an entry that is no longer a pair of tensors, (with ``classes``) labels that
    are no class indices below it (with two classes, the count of right samples took any
    label but 1 for class 0), and (with ``criterion``, for training sets) floating-point
    targets its loss refuses: one found by the loss in a later batch stopped the run
    part-way, every model trained on the batches before it, as before training (see
    :func:`_check_target_values`). Nothing is copied until every set passed. (Written through
    .data or a NumPy array sharing its memory, a set moves no counter, and is not read
    again.)"""
    if len(sets) != x_all.shape[0]:  # (a set added to the list, or taken out of it)
        raise ValueError(
            f"fit_rounds: on_epoch changed {name} to {len(sets)} sets, from {x_all.shape[0]} "
            "(one per model); the sets keep their number through a run"
        )
    if _unchanged(sets, signature):
        return signature
    for index, pair in enumerate(sets):
        if not _pair_of_tensors(pair):
            raise TypeError(
                f"fit_rounds: on_epoch put {describe_pair(pair)} in {name}[{index}]; it must "
                "stay an (x, y) pair of tensors"
            )
        kinds = zip(("x", "y"), pair, (x_all, y_all), dtypes[index], strict=True)
        for what, tensor, stacked, dtype in kinds:
            if (
                tensor.shape != stacked.shape[1:]
                or tensor.dtype != dtype
                or tensor.device != stacked.device
                or tensor.layout is not torch.strided
            ):
                # (another device, the meta device or a sparse layout failed in torch's words)
                raise ValueError(
                    f"fit_rounds: {name}[{index}] {what} was changed by on_epoch to "
                    f"{_kind(tensor)}, from {tuple(stacked.shape[1:])}, {dtype} on "
                    f"{stacked.device}; the sets keep their shapes, dtypes and devices through a "
                    "run (change their values in place)"
                )
        # (a training set's floating-point targets are its loss's to check, below)
        if classes is not None and (criterion is None or not pair[1].is_floating_point()):
            check_class_indices(
                "fit_rounds",
                f"{name}[{index}] (changed by on_epoch) ",
                pair[1],
                classes,
                one_output_hint=_ONE_OUTPUT_HINT,
            )
    if criterion is not None:
        _check_target_values(criterion, sets, changed=True)
    torch.stack([x for x, _ in sets], out=x_all)
    torch.stack([y for _, y in sets], out=y_all)
    return _signature(sets)


def _check_sequence(name: str, value: object) -> None:
    """Refuse what is not a list or tuple (e.g. a single model, or an iterator)."""
    if isinstance(value, Module | Tensor | str) or not isinstance(value, Sequence):
        raise TypeError(
            f"fit_rounds: {name} must be a list or tuple, one per model, got {type(value).__name__}"
        )


def _given_twice(items: Sequence[object]) -> tuple[int, int] | None:
    """``(first, second)``: the indices of the first object that ``items`` holds twice, or
    ``None``."""
    seen: dict[int, int] = {}
    for index, item in enumerate(items):
        if id(item) in seen:
            return seen[id(item)], index
        seen[id(item)] = index
    return None


def _check_models(models: Sequence[Sequential]) -> None:
    """Refuse what is not a Sequential, a model given twice and models that share a parameter:
    the stack would train each round apart and copy both back into one parameter."""
    twice = _given_twice(models)
    if twice is not None and all(isinstance(model, Sequential) for model in models[: twice[1]]):
        raise ValueError(
            f"fit_rounds: models[{twice[1]}] is models[{twice[0]}] (one object given twice); "
            "each round needs a model of its own"
        )
    owners: dict[int, tuple[int, str]] = {}
    for index, model in enumerate(models):
        if not isinstance(model, Sequential):
            raise TypeError(
                f"fit_rounds: models[{index}] must be a minidl Sequential, got "
                f"{type(model).__name__}"
            )
        for name, parameter in model.named_parameters():
            owner = owners.setdefault(id(parameter), (index, name))
            if owner[0] != index:
                raise ValueError(
                    f"fit_rounds: models[{index}] shares its parameter {name!r} with "
                    f"models[{owner[0]}] ({owner[1]!r}); each round needs parameters of its own"
                )


def _check_sets(
    train_sets: Sequence[tuple[Tensor, Tensor]],
    validation_sets: Sequence[tuple[Tensor, Tensor]] | None,
) -> None:
    """Refuse training and validation sets that cannot be stacked or that a stack cannot take,
    before anything is trained (a bad validation set would otherwise fail after an epoch). A
    validation x is compared with the training x later, once the models took the training
    sets."""
    for index, pair in enumerate(train_sets):
        if not (_pair_of_tensors(pair) and all(tensor.dim() >= 1 for tensor in pair)):
            raise TypeError(
                f"fit_rounds: train_sets[{index}] must be an (x, y) pair of tensors, got "
                f"{describe_pair(pair)}"
            )
        # (a sparse or nested set failed in torch's words, at the stack or at its first slice)
        check_strided("fit_rounds", f"train_sets[{index}] x", pair[0])
        check_strided("fit_rounds", f"train_sets[{index}] y", pair[1])
        if pair[0].shape[0] != pair[1].shape[0]:
            raise ValueError(
                f"fit_rounds: train_sets[{index}] holds {pair[0].shape[0]} inputs and "
                f"{pair[1].shape[0]} targets"
            )
    sizes = {int(x.shape[0]) for x, _ in train_sets}
    if len(sizes) != 1:
        raise ValueError(
            f"fit_rounds: every training set must have as many samples, got {sorted(sizes)}"
        )
    if sizes == {0}:
        raise ValueError("fit_rounds: the training sets are empty")
    if any(tensor.is_meta for pair in train_sets for tensor in pair):
        refuse_meta(
            "fit_rounds",
            "the training sets are",
            "; fit_rounds trains on values (its losses and errors are numbers)",
        )
    x_first, y_first = train_sets[0]
    for index, (x, y) in enumerate(train_sets[1:], start=1):
        check_like("fit_rounds", f"train_sets[{index}] x", x, x_first, "train_sets[0]'s x")
        check_like("fit_rounds", f"train_sets[{index}] y", y, y_first, "train_sets[0]'s y")
    for index, pair in enumerate(validation_sets or ()):
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise TypeError(
                f"fit_rounds: validation_sets[{index}] must be an (x, y) pair of tensors, got "
                f"{describe_pair(pair)}"
            )
        name = f"validation_sets[{index}]"
        _, y = check_labelled("fit_rounds", name + " ", *pair, set_name=name)
        check_class_indices("fit_rounds", name + " ", y)
    if validation_sets is not None:
        sizes = {int(x.shape[0]) for x, _ in validation_sets}
        if len(sizes) != 1:
            raise ValueError(
                f"fit_rounds: every validation set must have as many samples, got {sorted(sizes)}"
            )


def _pair_of_tensors(pair: object) -> TypeGuard[tuple[Tensor, Tensor] | list[Tensor]]:
    """Whether ``pair`` is an ``(x, y)`` pair of tensors (a tuple or a list)."""
    return (
        isinstance(pair, tuple | list)
        and len(pair) == 2
        and all(isinstance(tensor, Tensor) for tensor in pair)
    )


def _check_fit(
    stacked: Sequential, criterion: Loss, train_sets: Sequence[tuple[Tensor, Tensor]]
) -> int | None:
    """Run the stack and the criterion once on the first sample of every training set, in
    evaluation mode (which changes nothing), so that a set the models or the criterion do not
    take fails before training, as in :func:`~minidl.train.fit`; check class indices against the
    width of the outputs, and return it (``None`` when the outputs are not class scores)."""
    x_probe = torch.stack([x[:1] for x, _ in train_sets])
    y_probe = torch.stack([y[:1] for _, y in train_sets])
    probe: object = None
    try:
        with eval_mode(stacked), torch.inference_mode():
            probe = stacked(x_probe)
            losses = criterion(probe, y_probe)
    except (TypeError, ValueError) as error:
        if (
            isinstance(probe, Tensor)
            and probe.dim() == 3
            and all(y.dim() == 1 and not y.is_floating_point() for _, y in train_sets)
        ):
            # The models took the sets and the loss refused sets of class indices: one out of
            # range (a first sample's) is named with its set, as one of a later sample is below
            # (the loss named neither the set nor the sample). Targets of another shape or
            # dtype are the loss's to refuse (an MSE's integer one-hot targets).
            _check_class_indices(train_sets, int(probe.shape[-1]))
        refusal = type(error)(f"fit_rounds: the training sets do not fit: {error}")
        x_first, y_first = train_sets[0]
        add_note(
            refusal,
            f"fit_rounds ran the stacked models and the loss on the first sample of every "
            f"training set, stacked (x of shape {tuple(x_probe.shape)} and y of shape "
            f"{tuple(y_probe.shape)}: one sample per model), before training: the shapes above "
            f"are those; each set's first sample, x[:1] and y[:1], has shapes "
            f"{tuple(x_first[:1].shape)} and {tuple(y_first[:1].shape)}",
        )
        try:
            raise refusal from error
        finally:
            # (the frame in the refusal's traceback would hold it: a cycle that kept the
            # stack, the models and the sets until the cyclic collector ran)
            del refusal
    rounds = len(train_sets)
    if not isinstance(losses, Tensor) or tuple(losses.shape) != (rounds,):
        # (a total over the models would be recorded as each model's loss)
        got = (
            f"a loss of shape {tuple(losses.shape)}"
            if isinstance(losses, Tensor)
            else type(losses).__name__
        )
        raise ValueError(
            f"fit_rounds: criterion {type(criterion).__name__} returned {got} for stacked "
            f"predictions of shape {tuple(probe.shape)}, expected one loss per model, of shape "
            f"({rounds},)"
        )
    if not isinstance(probe, Tensor) or probe.dim() != 3:
        return None
    classes = int(probe.shape[-1])
    _check_class_indices(train_sets, classes)
    return classes


#: fit_rounds' hint for class indices refused for models of one output: it does not train
#: BCEWithLogitsLoss, with which such a model is a binary classifier.
_ONE_OUTPUT_HINT = (
    "fit_rounds trains models of one output per class (CrossEntropyLoss, MSELoss and a "
    "StackedLoss of them): give the last layer an output for each class"
)


def _check_class_indices(train_sets: Sequence[tuple[Tensor, Tensor]], classes: int) -> None:
    """Refuse a training set whose integer targets are not class indices in ``[0, classes)``,
    naming the set."""
    for index, (_, y) in enumerate(train_sets):
        if not y.is_floating_point():
            what = f"train_sets[{index}] "
            check_class_indices("fit_rounds", what, y)
            check_class_indices("fit_rounds", what, y, classes, one_output_hint=_ONE_OUTPUT_HINT)


def _check_target_values(
    criterion: Loss, train_sets: Sequence[tuple[Tensor, Tensor]], *, changed: bool = False
) -> None:
    """Check every target of every training set as its model's loss checks a batch's (the
    trial of :func:`_check_fit` read each set's first sample only): one refused in a later
    batch stopped the run part-way, every model trained on the batches before it. ``changed``:
    the sets as on_epoch left them, checked before the next epoch."""
    for index, (_, y) in enumerate(train_sets):
        if not y.is_floating_point():
            continue
        loss = criterion._criterion_of(index) if isinstance(criterion, StackedLoss) else criterion
        try:
            loss._check_target_values(y)
        except ValueError as error:
            what = f"train_sets[{index}]" + (" (changed by on_epoch)" if changed else "")
            refusal = ValueError(f"fit_rounds: the targets of {what}: {error}")
            when = "after on_epoch" if changed else "before training"
            add_note(refusal, f"fit_rounds checked every target of each training set {when}")
            try:
                raise refusal from error
            finally:
                del refusal  # (see _check_fit)


def _check_optimizer(
    optimizer: Optimizer, given: list[Parameter], earlier: list[Optimizer], what: str, hint: str
) -> None:
    """Refuse an optimizer that updates none of the parameters it was built for (the models
    would not train), or one returned twice (it would step twice per batch)."""
    if any(optimizer is other for other in earlier):
        raise ValueError(
            f"fit_rounds: the PerModel factory returned the same optimizer for {what} as for an "
            "earlier one; each group of models needs its own"
        )
    if not {id(p) for p in given} & {id(p) for p in optimizer.params}:
        raise ValueError(
            f"fit_rounds: {what} updates none of the parameters it was built for; {hint}"
        )


def _group_parameters(stacked: Sequential, start: int, group: int, flat: bool) -> list[Parameter]:
    """The parameters of models ``start`` to ``start + group - 1``, for their optimizer."""
    index = start if group == 1 else slice(start, start + group)
    if flat:
        return [flat_model_parameters(stacked, index)]
    return model_parameters(stacked, index)


@contextlib.contextmanager
def _watched(stacked: Sequential, models: Sequence[Sequential]) -> Iterator[None]:
    """Watch ``stacked`` for NaN and infinity (:func:`minidl.detect_anomaly`) where a block of
    it watches one of ``models``: the stack runs in their place, without their checks. An
    :class:`~minidl.anomaly.AnomalyError` then names the stack's module, and the first index of
    the bad value is the model's."""
    if not any(  # (the model, or any module of it: detect_anomaly(models[0][0]))
        anomaly.checks_only(module, "forward") for model in models for module in model.modules()
    ):
        yield
        return
    try:
        with anomaly.detect_anomaly(stacked):
            yield
    except anomaly.AnomalyError as error:
        add_note(
            error,
            "fit_rounds trained the models watched as one stack (Sequential): the first index "
            "of a value is its model's",
        )
        raise


@contextlib.contextmanager
def _copied_back(
    stacked: Sequential, models: Sequence[Sequential], stepped: list[bool]
) -> Iterator[None]:
    """Copy the stack's parameters into ``models`` when the block ends, however it ends, and
    their gradients if ``stepped[0]`` was set (a batch began), with Ctrl-C and SIGTERM held
    back meanwhile (a second one, in the copy, left some models trained and the rest as they
    were)."""
    try:
        yield
    finally:
        with holding_interrupts():
            _copy_back(stacked, models, gradients=stepped[0])


def _zero_grads(optimizers: Sequence[Optimizer]) -> None:
    """Zero the gradients of every optimizer's parameters (and only those), in turn."""
    for optimizer in optimizers:
        optimizer.zero_grad()


def _stacked_linears(
    stacked: Sequential, models: Sequence[Sequential]
) -> Iterator[tuple[BatchedLinear, int, Linear]]:
    """Each model's ``Linear`` layers, with the stack's layer that holds them and the model's
    index in it."""
    for position, layer in enumerate(stacked):
        if not isinstance(layer, BatchedLinear):
            continue
        for index, model in enumerate(models):
            linear = model[position]
            assert isinstance(linear, Linear)
            yield layer, index, linear


def _copy_gradients_in(stacked: Sequential, models: Sequence[Sequential]) -> None:
    """Copy each model's gradients into its part of the stack (whose gradients start at zero)."""
    for layer, index, linear in _stacked_linears(stacked, models):
        layer.weight.grad[index].copy_(linear.weight.grad)
        if linear.bias is not None and layer.bias is not None:
            layer.bias.grad[index].copy_(linear.bias.grad)


def _copy_back(stacked: Sequential, models: Sequence[Sequential], *, gradients: bool) -> None:
    """Copy each stacked model's parameters (and ``gradients``: their gradients, as the last
    batch left them) into the corresponding original model."""
    for layer, index, target in _stacked_linears(stacked, models):
        target.weight.data.copy_(layer.weight.data[index])
        if gradients:
            target.weight.grad.copy_(layer.weight.grad[index])
        if target.bias is not None and layer.bias is not None:
            target.bias.data.copy_(layer.bias.data[index])
            if gradients:
                target.bias.grad.copy_(layer.bias.grad[index])
