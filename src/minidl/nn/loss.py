"""The base class of loss criteria."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, cast

import torch
from torch import Tensor

from minidl._scalar import operand
from minidl._validate import add_note, layout_name, plain_choice, shown
from minidl.nn._checks import STRIDED, check_dense, check_input
from minidl.nn.module import Module, off_graph, own_method

__all__ = ["Loss", "check_mean_or_sum", "check_not_a_loss", "reduction_given", "scaled_sum"]

_Read = TypeVar("_Read")


def check_mean_or_sum(where: str, reduction: object) -> Literal["mean", "sum"]:
    """Check a loss's ``reduction``: ``"mean"`` or ``"sum"``, returned as a plain ``str`` (a
    subclass's own ``__eq__`` is not asked: its value is; ``numpy.str_('sum')`` is ``'sum'``)."""
    given = plain_choice(reduction, ("mean", "sum"))
    if given is not None:
        return cast(Literal["mean", "sum"], given)
    raise ValueError(
        f"{where}: reduction must be 'mean' or 'sum', got {reduction_given(reduction)}"
    )


def reduction_given(reduction: object) -> str:
    """A ``reduction`` refused, as its error names it, with what PyTorch users mean by the
    values minidl's losses do not take: ``'none'`` (a loss per sample), and a tensor (the
    first argument of PyTorch's ``CrossEntropyLoss``, ``NLLLoss`` and ``BCEWithLogitsLoss``
    is ``weight``, where minidl's is ``reduction``)."""
    if isinstance(reduction, Tensor):
        return (
            f"a tensor of shape {tuple(reduction.shape)} (weights, PyTorch's weight argument, "
            "are not supported; give reduction by name)"
        )
    if isinstance(reduction, str) and str.__str__(reduction) == "none":
        return "'none' (a loss per sample is not supported: the loss is one number)"
    return shown(reduction)


def scaled_sum(
    elements: Tensor, scale: float, dim: tuple[int, ...] | None = None, *, divide: bool = False
) -> Tensor:
    """``elements.sum(dim)`` times ``scale`` (divided by it with ``divide``), in the dtype of
    ``elements``.

    A float16 or bfloat16 sum is accumulated in float32 and scaled there, as PyTorch's mean
    reductions do: summed first in float16, a mean of values well inside its range (65504)
    became ``inf`` as soon as their sum was not. Other dtypes take the plain path.
    """
    dtype = elements.dtype
    if dtype is torch.float16 or dtype is torch.bfloat16:
        total = (
            elements.sum(dtype=torch.float32)
            if dim is None
            else elements.sum(dim, dtype=torch.float32)
        )
        factor = operand(scale, total)
        total = total.div_(factor) if divide else total.mul_(factor)
        return total.to(dtype)
    total = elements.sum() if dim is None else elements.sum(dim)
    factor = operand(scale, total)
    return total.div_(factor) if divide else total.mul_(factor)


def check_not_a_loss(where: str, what: str, module: object) -> None:
    """Refuse a loss given as a layer (to a ``Sequential`` or ``Residual``): its forward takes
    the targets too, so the model's forward would fail at it."""
    if isinstance(module, Loss):
        name = type(module).__name__
        raise TypeError(
            f"{where}: {what} is a loss ({name}), whose forward takes the targets too; a loss "
            f"is applied to the model's output, not chained in it: loss = {name}()(model(x), y)"
        )


def _one_value(target: Tensor, prediction: Tensor) -> str:
    """How to mend one value per sample given as ``(N,)`` for a prediction ``(N, 1)``."""
    if prediction.shape[-1] == 1 and target.shape == prediction.shape[:-1]:
        return "; for one value per sample, give the target that shape: target.unsqueeze(-1)"
    return ""


class Loss(Module):
    r"""A criterion :math:`L(z, t)` of a prediction :math:`z` and a target :math:`t`.

    ``forward(prediction, target)`` returns a 0-dim tensor and caches what the gradient needs;
    ``backward()`` returns :math:`\partial L / \partial z`, of the prediction's shape (given a
    scalar upstream gradient, it returns that multiple). A subclass implements ``forward`` and
    :meth:`_gradient`; calling the loss (``criterion(prediction, target)``) runs ``forward`` and
    marks that a forward ran, so that ``backward`` before any forward raises rather than read
    missing caches.

    For R stacked models (see :class:`~minidl.nn.BatchedLinear`) the prediction has shape
    ``(R, N, C)`` and the target a leading ``R`` too; ``forward`` then returns the R losses
    (shape ``(R,)``) and ``backward`` the gradient of their sum, which is each model's own.
    Losses that do so (:class:`~minidl.nn.CrossEntropyLoss`, :class:`~minidl.nn.MSELoss`,
    :class:`~minidl.nn.StackedLoss`) set
    :attr:`stacks`; the others refuse a stacked prediction, as a subclass does unless it sets it.

    Class-index targets of the dtype and shape of the last accepted ones are range-checked by
    the kernel that reads them (``gather``, ``scatter_add``), not by a pass of their own: on the
    CPU an index out of range is a ValueError naming it, and nothing is changed; on a GPU it
    stops the device with an assertion, as PyTorch's losses do.
    """

    #: Whether ``forward`` takes stacked predictions ``(R, N, C)`` (one loss per model).
    stacks: ClassVar[bool] = False
    #: Whether the loss also regresses values (``MSELoss``), where class indices are one-hot
    #: encoded: a refusal of integer targets for a prediction of one column says how to give
    #: values to regress.
    _regresses: ClassVar[bool] = False
    #: Whether the loss takes probabilities of the classes as targets (``CrossEntropyLoss``).
    _takes_probabilities: ClassVar[bool] = False
    #: Whether the prediction's rows are scores of the classes (``CrossEntropyLoss``,
    #: ``NLLLoss``), not values to regress.
    _scores_classes: ClassVar[bool] = False

    if TYPE_CHECKING:
        # The forward of every loss (Module's takes anything), for a type checker: a loss
        # called, criterion(prediction, target), is a Tensor, as Module.__call__ returns what
        # forward does; a subclass implements it at run time.
        def forward(self, prediction: Tensor, target: Tensor) -> Tensor: ...

    else:
        # (for a type checker, Module.__call__: the arguments and result of forward)

        def __call__(self, *input: Any, **kwargs: Any) -> Any:
            output = self.forward(*input, **kwargs)
            self._has_forward = True  # (the built-in losses also set it in forward itself)
            return output

    def __init__(self) -> None:
        super().__init__()
        self._has_forward = False
        # The shape, dtype and device of the last accepted prediction: a prediction like it
        # passes the checks with three comparisons. A new accepted prediction gets a new
        # _prediction_shape object, so subclasses can key their own caches on its identity.
        self._prediction_shape: tuple[int, ...] = ()
        self._prediction_dtype: torch.dtype | None = None
        self._prediction_device: torch.device | None = None

    def _check_prediction(self, prediction: object) -> Tensor:
        """Check a prediction of shape ``(N, C)``, or ``(R, N, C)`` for R stacked models."""
        if (
            type(prediction) is Tensor
            and prediction.dtype is self._prediction_dtype
            and not prediction.is_nested  # (whose shape is not read)
            and prediction.shape == self._prediction_shape
            and prediction.device == self._prediction_device
            and prediction.layout is STRIDED
        ):
            return prediction
        name = type(self).__name__
        if isinstance(prediction, Tensor) and prediction.is_nested:
            check_dense(name, prediction, "prediction")
        if isinstance(prediction, Tensor) and prediction.dim() == 3:
            if not self.stacks:
                raise ValueError(
                    f"{name}: expected a prediction of shape (N, C), got shape "
                    f"{tuple(prediction.shape)}; stacked predictions (R, N, C) are taken by "
                    "CrossEntropyLoss and MSELoss"
                )
            if 0 in prediction.shape:
                raise ValueError(
                    f"{name}: got an empty stack, batch or feature dimension (prediction shape "
                    f"{tuple(prediction.shape)}, expected (R, N, C) with R, N, C >= 1)"
                )
            check_input(name, prediction[0], what="prediction")
        else:
            try:
                prediction = check_input(name, prediction, what="prediction")
            except ValueError as error:
                if isinstance(prediction, Tensor) and prediction.dim() == 1:
                    # (PyTorch's losses take (N,), one value a sample, and its class losses
                    # (C,), one sample's scores)
                    add_note(
                        error,
                        f"{name} takes one sample's scores (C,) as (1, C): prediction.unsqueeze(0)"
                        if self._scores_classes
                        else f"{name} takes one value a sample as (N, 1): prediction.unsqueeze(-1)",
                    )
                raise
        self._prediction_shape = tuple(prediction.shape)
        self._prediction_dtype = prediction.dtype
        self._prediction_device = prediction.device
        return prediction

    def _forward_accepted(self, prediction: Tensor, target: Tensor) -> Tensor:
        """``forward`` for a prediction that :meth:`_check_prediction` has just accepted, or
        one of the signature it accepted last (the same ``_prediction_shape`` object since),
        without checking it again; the target is checked as ``forward`` checks it. A built-in
        loss's ``forward`` is that check followed by this; a subclass that defines only
        ``forward`` gets ``forward`` here."""
        loss: Tensor = self.forward(prediction, target)
        return loss

    def _check_target_values(self, target: Tensor) -> None:
        """Check the values of ``target``, the targets of a whole data set (of the shape a
        batch's target has, with any number of samples), as :meth:`forward` checks a batch's
        (``BCEWithLogitsLoss``'s range, ``CrossEntropyLoss``'s probabilities): what ``fit``
        and ``fit_rounds`` ask before training, where a value refused in a later batch stopped
        the run part-way, the model trained on the batches before it. Nothing by default: a
        loss that takes any values (MSE, L1, Huber), or whose class indices are checked apart
        against the width of the outputs; and nothing for a subclass whose ``forward`` is its
        own (:meth:`_computes_as`), which may take other targets."""

    def _computes_as(self, cls: type[Loss]) -> bool:
        """Whether this loss computes as the built-in ``cls`` does: neither ``forward`` nor
        ``_forward_accepted`` is replaced on its class or set on the instance (but for the
        checks of a :func:`minidl.detect_anomaly` block over the class's own, which compute
        as it does)."""
        kind, own = type(self), vars(self)
        return (
            kind.forward is cls.forward
            and kind._forward_accepted is cls._forward_accepted
            and all(
                name not in own or own_method(self, own[name]) is None
                for name in ("forward", "_forward_accepted")
            )
        )

    def _check_class_indices(self, target: Tensor, prediction: Tensor) -> None:
        """Check a target of class indices: dense, int64, shape ``(N,)`` (``(R, N)``), values in
        ``[0, C)``."""
        name = type(self).__name__
        check_dense(name, target, "target")
        classes = prediction.shape[-1]
        one_hot = "; a one-hot target is given as class indices, target.argmax(-1)" + (
            ", or as probabilities, target.float()" if self._takes_probabilities else ""
        )
        if target.dtype != torch.int64:
            # (a one-hot target of bools or int32 would be told to become int64, then refused
            # for its shape)
            hint = (
                one_hot
                if target.shape == prediction.shape
                and prediction.dim() != 3
                and not target.is_complex()
                and not target.is_floating_point()
                else ""
            )
            raise TypeError(
                f"{name}: class-index targets must have dtype torch.int64, got {target.dtype}"
                + hint
            )
        if target.shape != prediction.shape[:-1]:
            # (PyTorch's K-dimensional form, the classes on dimension 1, reads otherwise)
            stacked = (
                " (a 3-D prediction is (R, N, C), R stacked models' scores, the classes last)"
                if prediction.dim() == 3
                else one_hot
                if target.shape == prediction.shape
                else ""
            )
            raise ValueError(
                f"{name}: class-index target has shape {tuple(target.shape)}, expected "
                f"{tuple(prediction.shape[:-1])} for a prediction of shape "
                f"{tuple(prediction.shape)}{stacked}"
            )
        if target.device != prediction.device:
            raise ValueError(
                f"{name}: target is on {target.device} but the prediction is on {prediction.device}"
            )
        if target.is_meta:  # (and so is the prediction: no values to check)
            return
        low, high = (int(v) for v in torch.aminmax(target))
        if low < 0 or high >= classes:
            bad = low if low < 0 else high
            # (a loss of regression given integer values, one output a sample: say how it reads)
            hint = (
                f"; an integer target is read as class indices, one-hot encoded, by {name}: for "
                "values to regress give a float target of the prediction's shape "
                "(target.float().unsqueeze(-1))"
                if classes == 1 and self._regresses
                else ""
            )
            raise ValueError(
                f"{name}: class index {bad} is out of range for {classes} classes "
                f"(expected values in [0, {classes - 1}]){hint}"
            )

    def _read_class_indices(
        self, target: Tensor, prediction: Tensor, read: Callable[[Tensor], _Read]
    ) -> _Read:
        """``read(target.unsqueeze(-1))``, a kernel that reads the class indices (``gather``,
        ``scatter_add``) and range-checks them as it does; indices unlike the last accepted ones
        get the full check first, and an index the kernel refuses is named by it."""
        # (_check_prediction leaves the prediction's shape in _prediction_shape; a meta target
        # holds no indices, which a kernel on another device would read from nowhere, and a
        # meta prediction's kernels read none: a target on another device is not refused)
        if (
            target.dtype is not torch.int64
            or target.is_nested  # (whose shape is not read)
            or target.shape != self._prediction_shape[:-1]
            or target.is_meta
            or prediction.is_meta
        ):
            self._check_class_indices(target, prediction)
        try:
            return read(target.unsqueeze(-1))
        except RuntimeError:
            self._check_class_indices(target, prediction)
            raise

    def _check_dense_target(
        self, target: Tensor, prediction: Tensor, *, class_indices: bool = False
    ) -> None:
        """Check a target with the prediction's shape, dtype and device; ``class_indices``: the
        loss also takes class indices (the messages then say so). A sparse target is refused
        (MSE, L1 and Huber computed with it; the others failed in the tensor library's words)."""
        name = type(self).__name__
        check_dense(name, target, "target")
        indices_shape = tuple(prediction.shape[:-1])
        if class_indices and tuple(target.shape) == indices_shape:
            raise TypeError(
                f"{name}: a target of shape {indices_shape} holds class indices, which must have "
                f"dtype torch.int64, got {target.dtype} (a floating-point target has the "
                f"prediction's shape {tuple(prediction.shape)}{_one_value(target, prediction)})"
            )
        if target.shape != prediction.shape:
            also = f" (or class indices of shape {indices_shape})" if class_indices else ""
            raise ValueError(
                f"{name}: target has shape {tuple(target.shape)}, expected the prediction's "
                f"shape {tuple(prediction.shape)}{also}{_one_value(target, prediction)}"
            )
        if target.dtype != prediction.dtype:
            raise TypeError(
                f"{name}: target dtype {target.dtype} does not match the prediction's dtype "
                f"{prediction.dtype}"
            )
        if target.device != prediction.device:
            raise ValueError(
                f"{name}: target is on {target.device} but the prediction is on {prediction.device}"
            )

    def backward(self, *gradwrtoutput: Tensor) -> Tensor:
        """Return dL/dprediction, times the upstream scalar gradient if one is given.

        A plain tensor also where the prediction (or the upstream gradient) came from an
        autograd graph: the gradient held that graph, as long as it was kept (the layers read
        it as a plain value; NLLLoss's, made of zeros, held none)."""
        if not gradwrtoutput and self._has_forward:
            return off_graph(self._gradient())
        name = type(self).__name__
        if not self._has_forward:
            hint = ""
            if not getattr(type(self).forward, "__module__", "").startswith("minidl."):
                # (a built-in loss records it in forward itself; one's own only when called)
                hint = (
                    " (a loss of one's own records its forward when it is called, "
                    "criterion(prediction, target), not when its forward method is called "
                    "directly)"
                )
            raise RuntimeError(f"{name}: backward called before forward{hint}")
        if len(gradwrtoutput) != 1:
            raise TypeError(
                f"{name}.backward: expected at most one (scalar) gradient, got {len(gradwrtoutput)}"
            )
        (upstream,) = gradwrtoutput
        if not isinstance(upstream, Tensor):  # (a Python number is a scalar, but no tensor)
            raise TypeError(
                f"{name}.backward: the upstream gradient must be a tensor of one element, got "
                f"{type(upstream).__name__}"
            )
        if upstream.layout is not torch.strided or upstream.is_nested:
            layout = layout_name(upstream)
            raise TypeError(
                f"{name}.backward: the upstream gradient must be a dense tensor of one element, "
                f"got a {layout} tensor"
            )
        if upstream.numel() != 1:
            raise ValueError(
                f"{name}.backward: the upstream gradient must be a scalar, got shape "
                f"{tuple(upstream.shape)}"
            )
        if upstream.is_complex():  # (it would make the gradient complex)
            raise TypeError(
                f"{name}.backward: the upstream gradient must be a real scalar, got dtype "
                f"{upstream.dtype}"
            )
        gradient = self._gradient()
        try:
            scaled = self._times_upstream(gradient, upstream.reshape(()))
        except RuntimeError:
            if upstream.device == gradient.device:
                raise
            where = "cpu" if gradient.is_cpu else f"cpu or {gradient.device}"
            raise ValueError(
                f"{name}.backward: the upstream gradient is on {upstream.device} but the "
                f"prediction is on {gradient.device}; expected a scalar on {where}"
            ) from None
        return off_graph(scaled)

    def _times_upstream(self, gradient: Tensor, upstream: Tensor) -> Tensor:
        """``gradient``, :meth:`_gradient`'s, times the 0-dim ``upstream`` given to
        :meth:`backward`. A loss whose gradient is zero off some entries whatever the upstream
        (:class:`~minidl.nn.NLLLoss`'s, off the targets) keeps those zeros where the upstream
        is infinite or NaN (``0 * inf`` is NaN), as PyTorch's does."""
        return gradient * upstream

    def _gradient(self) -> Tensor:
        """dL/dprediction for the last forward."""
        raise NotImplementedError(
            f"{type(self).__name__}._gradient is not implemented (a subclass of Loss returns "
            "dL/dprediction for the last forward)"
        )
