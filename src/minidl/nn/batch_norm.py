"""Batch normalisation of features."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from minidl._memory import out_of_memory
from minidl._scalar import operand
from minidl._setting import Fixed, Setting
from minidl._validate import add_note, check_int, check_real, shown, shown_typed
from minidl.nn._checks import (
    check_cached,
    check_factory_options,
    check_grad_output,
    check_input,
    check_like_parameter,
    check_parameter_attributes,
    check_size,
    check_still_fits,
)
from minidl.nn._gradient_memory import GradientMemory
from minidl.nn.module import TRAINING_IN_TRIAL, Module
from minidl.nn.parameter import Parameter, first_overlap, shares_elements

__all__ = ["BatchNorm1d"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the layer computes in: float32 for a 16-bit dtype, else the dtype itself
    (``torch.promote_types(dtype, torch.float32)`` for floating dtypes, without its op)."""
    return torch.float32 if dtype is torch.float16 or dtype is torch.bfloat16 else dtype


def _as(tensor: Tensor, dtype: torch.dtype) -> Tensor:
    """``tensor.to(dtype)``, without the op (a no-op ``aten::to``) when it has that dtype."""
    return tensor if tensor.dtype is dtype else tensor.to(dtype)


def _batch_mean(tensor: Tensor) -> Tensor:
    """``tensor.mean(dim=0)``, the same bits in less time: on the CPU, ATen's ``mean`` of a
    float32 or float64 tensor is its ``sum`` divided by the number of rows, which it converts
    to the tensor's dtype at every call; so is this, the divisor a cached 0-dim tensor (see
    :mod:`minidl._scalar`): 3.1 against 4.0 us for a ``(100, 25)`` tensor on one thread.
    Elsewhere (16-bit dtypes, which ``mean`` sums in float32; a GPU, which computes it in one
    kernel of its own) ``mean`` itself."""
    divisor = operand(float(tensor.shape[0]), tensor)
    if isinstance(divisor, Tensor):
        return tensor.sum(dim=0).div_(divisor)
    return tensor.mean(dim=0)


def _check_eps(where: str, eps: object) -> float:
    return check_real(where, "eps", eps, low=0.0, low_open=True)


def _check_eps_fits(eps: float, compute: torch.dtype) -> None:
    """Refuse an ``eps`` that ``compute``, the dtype the layer computes in, rounds to 0: a
    feature constant over the batch (a dead unit) would then be divided by 0, its output and
    gradients NaN, where eps is there to keep that denominator from 0."""
    if float(torch.tensor(eps, dtype=torch.float64).to(compute)) != 0.0:
        return
    smallest = torch.finfo(compute).smallest_normal * torch.finfo(compute).eps
    raise ValueError(
        f"BatchNorm1d: eps={shown(eps)} rounds to 0 in {compute}, in which the layer "
        f"computes (its smallest positive value is {smallest:.6g}): a feature constant over a "
        f"batch would be divided by 0; give an eps that {compute} holds (the default, 1e-5)"
    )


def _check_momentum(where: str, momentum: object) -> float | None:
    if momentum is None:  # (PyTorch's cumulative average)
        return None
    return check_real(where, "momentum", momentum, low=0.0, high=1.0)


def _check_num_features(where: str, num_features: object) -> int:
    return check_size(where, "num_features", check_int(where, "num_features", num_features))


def _check_affine(where: str, affine: object) -> bool:
    if not isinstance(affine, bool):
        raise TypeError(f"{where}: affine must be a bool, got {shown(affine)}")
    return affine


def _check_track_running_stats(where: str, track_running_stats: object) -> bool:
    if track_running_stats is not True:
        if track_running_stats is not False:
            raise TypeError(
                f"{where}: track_running_stats must be True or False, got "
                f"{shown(track_running_stats)}"
            )
        raise ValueError(
            f"{where}: track_running_stats=False is not supported: it always keeps running "
            "statistics and normalises with them in evaluation mode (PyTorch's default); leave "
            "it out"
        )
    return True


#: The integer dtypes torch counts in (``add_``, ``<``); it has no such kernels for uint16,
#: uint32 and uint64.
COUNT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _is_count(tracked: Tensor) -> bool:
    """Whether ``tracked`` can be a count of batches: a 0-dim tensor of an integer dtype torch
    counts in."""
    return tracked.shape == () and tracked.dtype in COUNT_DTYPES


class BatchNorm1d(Module):
    r"""Batch normalisation (Ioffe & Szegedy, 2015) of each feature of an ``(N, C)`` batch.

    Training mode normalises with the batch's mean :math:`\mu` and biased variance
    :math:`\sigma^2`, then scales and shifts:

    .. math::
        \hat x = (x - \mu) / \sqrt{\sigma^2 + \epsilon}, \qquad y = \gamma \hat x + \beta

    and updates the running statistics (buffers) as PyTorch does, with the *unbiased* variance:
    :math:`\bar\mu \leftarrow (1 - m)\bar\mu + m\mu`,
    :math:`\bar\sigma^2 \leftarrow (1 - m)\bar\sigma^2 + m\,\sigma^2 N/(N - 1)`.
    With ``momentum=None`` they are PyTorch's cumulative averages of the batches' statistics:
    :math:`m = 1/t` at the :math:`t`-th training batch (``num_batches_tracked`` after it), so
    the first batch replaces the initial values and :math:`\bar\mu` is the mean of the
    :math:`t` batch means (a negative count, set or loaded, is refused there).
    Evaluation mode uses them instead: :math:`\hat x = (x - \bar\mu)/\sqrt{\bar\sigma^2 + \epsilon}`.

    Backward in training mode (the statistics depend on the batch), with
    :math:`\hat g = \gamma g` and :math:`s = 1/\sqrt{\sigma^2 + \epsilon}`:

    .. math::
        \frac{\partial L}{\partial x} = \frac{s}{N}\Big(N \hat g - \sum_n \hat g_n
            - \hat x \sum_n \hat g_n \hat x_n\Big), \qquad
        \frac{\partial L}{\partial \gamma} \mathrel{+}= \sum_n g_n \hat x_n, \qquad
        \frac{\partial L}{\partial \beta} \mathrel{+}= \sum_n g_n

    and in evaluation mode :math:`\partial L/\partial x = \gamma\, s\, g` (with the running
    variance in :math:`s`). Shapes: :math:`x, \hat x, g` and :math:`\partial L/\partial x` are
    ``(N, C)``; :math:`\mu, \sigma^2, s, \gamma, \beta` and every sum over :math:`n` (so the
    gradients of :math:`\gamma` and :math:`\beta`) are ``(C,)``, broadcast over the rows.

    Derivation, feature by feature: in training mode every sample :math:`x_n` enters the
    statistics as well as its own :math:`\hat x_n`. With :math:`\partial\mu/\partial x_n = 1/N`,
    :math:`\partial\sigma^2/\partial x_n = 2(x_n - \mu)/N` and so
    :math:`\partial s/\partial x_n = -\tfrac12 s^3 \cdot 2(x_n - \mu)/N = -s^2 \hat x_n / N`,

    .. math::
        \frac{\partial \hat x_m}{\partial x_n}
            = s\Big(\delta_{mn} - \frac{1}{N} - \frac{\hat x_m \hat x_n}{N}\Big),

    and :math:`\partial L/\partial x_n = \sum_m \hat g_m\, \partial \hat x_m/\partial x_n`
    (:math:`\hat g = \partial L/\partial \hat x = \gamma g`, from :math:`y = \gamma \hat x + \beta`)
    is the formula above. In evaluation mode :math:`\bar\mu` and :math:`\bar\sigma^2` are
    constants: only the :math:`\delta_{mn}` term is left.

    Args:
        num_features: :math:`C`, the number of features, an integer >= 1.
        eps: :math:`\epsilon`, added to the variance, > 0 (default 1e-5); one that the dtype the
            layer computes in (float32 for a 16-bit layer) rounds to 0 is refused by the forward.
        momentum: :math:`m`, the weight of the batch in the running statistics, in ``[0, 1]``
            (default 0.1), or ``None`` for their cumulative average (:math:`m = 1/t`, above).
        affine: learn :math:`\gamma` (``weight``, starting at 1) and :math:`\beta` (``bias``,
            starting at 0); otherwise :math:`\gamma = 1, \beta = 0` (default ``True``). One of
            the two removed afterwards (``layer.register_parameter("bias", None)``, as
            PyTorch's ``layer.bias = None`` does) is left out alone: the other still applies
            and gets its gradient. Set to ``None`` by hand, with the parameter still
            registered (which ``parameters()`` and ``state_dict`` would keep), it is refused.
        track_running_stats: ``True`` (default), what it does: PyTorch's argument; ``False``
            (batch statistics in evaluation mode too) is refused.
        dtype: dtype of the parameters and running statistics (default: torch's default dtype).
        device: their device.

    Shape:
        - Input: ``(N, C)`` (``N >= 2`` in training mode). Output: ``(N, C)``.

    A float16 or bfloat16 layer computes in float32 (the statistics, :math:`\hat x`, the
    output before its rounding, the update of the running statistics, rounded once, and the
    backward's sums over the batch), as PyTorch does: in float16 the squares of deviations
    above 256 overflow, and the variance with them.

    Buffers:
        ``running_mean`` (zeros), ``running_var`` (ones), ``num_batches_tracked`` (int64, the
        number of training batches seen), all in :meth:`state_dict`.

    Example:
        >>> layer = BatchNorm1d(3)
        >>> y = layer(torch.randn(16, 3))
        >>> y.mean(0).abs().max() < 1e-6
        tensor(True)
    """

    #: :math:`C` and whether :math:`\gamma` and :math:`\beta` are learnt: what the layer's
    #: tensors were made from, fixed (setting either raises ``AttributeError``).
    num_features = Fixed(
        _check_num_features,
        "the running statistics, the weight and the bias have that many entries; build a new "
        "BatchNorm1d for another number",
    )
    affine = Fixed(
        _check_affine,
        "it made the layer with or without a weight and a bias; build a new BatchNorm1d with "
        "the other value",
    )
    #: :math:`\epsilon` and :math:`m`; checked when set, as by the constructor.
    eps = Setting(_check_eps)
    momentum = Setting(_check_momentum)
    #: ``True``, as PyTorch's argument: setting ``False`` raises as the constructor does
    #: (PyTorch's layer then stops updating its running statistics in training mode).
    track_running_stats = Setting(_check_track_running_stats, ignored_when_plain=True)
    _track_running_stats = True
    _updates_in_training = True  # (its running statistics)
    #: The eps and compute dtype that the last forward found eps not to round to 0 in.
    _eps_fits: tuple[float, torch.dtype] | None = None
    _optional_buffers = ("num_batches_tracked",)  # (kept where a state dict lacks it)
    _num_features: int
    _affine: bool
    _eps: float
    _momentum: float | None
    weight: Parameter | None
    bias: Parameter | None
    running_mean: Tensor
    running_var: Tensor
    num_batches_tracked: Tensor

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        _check_track_running_stats("BatchNorm1d", track_running_stats)
        device = check_factory_options("BatchNorm1d", dtype, device)
        options = {"dtype": dtype, "device": device}
        try:  # (a size past what a tensor holds failed in torch's words: see Linear)
            running_mean = torch.zeros(num_features, **options)  # type: ignore[arg-type]
            running_var = torch.ones(num_features, **options)  # type: ignore[arg-type]
            weight = torch.ones(num_features, **options) if affine else None  # type: ignore[arg-type]
            bias = torch.zeros(num_features, **options) if affine else None  # type: ignore[arg-type]
        except (RuntimeError, ValueError) as error:
            what = f"the statistics of {num_features} features"
            if out_of_memory(error) is not None:
                add_note(error, f"BatchNorm1d: making {what}")
                raise
            raise ValueError(f"BatchNorm1d: cannot hold {what} ({error})") from None
        if weight is not None and bias is not None:
            self.weight = self.register_parameter("weight", Parameter(weight))
            self.bias = self.register_parameter("bias", Parameter(bias))
        else:  # (either may be registered later)
            self.weight = self.register_parameter("weight", None)
            self.bias = self.register_parameter("bias", None)
        self.register_buffer("running_mean", running_mean)
        self.register_buffer("running_var", running_var)
        self.register_buffer(
            "num_batches_tracked", torch.zeros((), dtype=torch.int64, device=device)
        )
        self._normalized: Tensor | None = None
        self._inv_std: Tensor | None = None
        self._batch_statistics = False
        # The weight and bias tensors and the running mean that the last forward checked and
        # computed with: while they are the same objects, backward's checks (see
        # _check_fits_forward) pass without being run.
        self._fitted: tuple[Tensor | None, Tensor | None, Tensor | None] = (None, None, None)
        # Whether the last forward had a weight and a bias, where _fitted no longer tells it
        # (a copy or an unpickled layer: _fitted is not kept); None before a forward.
        self._fitted_with: tuple[bool, bool] | None = None
        # A gradient given in the memory of weight.grad (expanded over the batch) is copied
        # before the accumulation overwrites it (see minidl.nn._gradient_memory).
        self._gradients = GradientMemory()

    def _check_trains_on(self, x: Tensor) -> float:
        """The refusals of a training forward of ``x`` (the input, in the dtype computed in):
        a single sample, and with ``momentum=None`` a negative count of batches; the count
        (0 for a meta one, which holds no number; not read with a momentum) is returned."""
        if x.shape[0] < 2:
            raise ValueError(
                "BatchNorm1d: training mode needs more than one sample per feature to "
                f"estimate a variance, got an input of shape {tuple(x.shape)}"
            )
        self._check_own_memory()
        return self._counted()

    def _counted(self) -> float:
        """With ``momentum=None``, the count of batches, refused where negative (0 for a meta
        one, which holds no number: any factor gives the meta statistics); 0 with a momentum,
        which does not read it. A count of a narrower integer dtype than int64 (whose largest
        value no run reaches) at its dtype's largest value is refused with any momentum:
        counting one more batch would wrap it (a uint8 count of 255 to 0, and the cumulative
        average of ``momentum=None`` would then start over, without a word)."""
        count = self.num_batches_tracked
        if count.dtype is not torch.int64 and not count.is_meta and count.dtype in COUNT_DTYPES:
            largest = torch.iinfo(count.dtype).max
            if int(count) == largest:
                raise ValueError(
                    f"BatchNorm1d: num_batches_tracked is {largest}, the largest {count.dtype} "
                    "value: counting this training batch would wrap it to "
                    f"{torch.iinfo(count.dtype).min}; register a count of a wider dtype, "
                    "register_buffer('num_batches_tracked', count.to(torch.int64))"
                )
        if self._momentum is not None:
            return 0.0
        counted = 0.0 if count.is_meta else float(count)
        if counted < 0:  # (-1 divided by zero, -2 weighed the average by -1)
            raise ValueError(
                f"BatchNorm1d: num_batches_tracked is {int(count)}, "
                "expected a count of batches >= 0 (with momentum=None the running "
                "statistics are the average over the batches counted)"
            )
        return counted

    def _check_training_state(self) -> None:
        self._check_parameters()  # (a count of another shape, named so first)
        self._check_own_memory()
        self._counted()

    def _check_own_memory(self) -> None:
        """The running statistics, updated in place in training, must each give every element
        its own memory, apart from the other's (put in place with ``register_buffer``: an
        expanded ``running_var`` failed in torch's words once the mean was updated, and one
        buffer registered as both took both updates)."""
        mean, variance = self.running_mean, self.running_var
        for name, statistic in (("running_mean", mean), ("running_var", variance)):
            if shares_elements(statistic):
                raise ValueError(
                    f"BatchNorm1d: {name} has elements that share memory (strides "
                    f"{statistic.stride()}, as expand makes), but training updates it in place; "
                    f"register_buffer({name!r}, tensor.clone())"
                )
        if first_overlap((("running_mean", mean), ("running_var", variance))) is not None:
            raise ValueError(
                "BatchNorm1d: running_mean and running_var share memory, but training updates "
                "each in place; register one of them again as a tensor of its own (.clone())"
            )

    def _trial_state(self) -> object:
        # (with momentum=None, whether the count is negative: refused in training; a count
        # that is no 0-dim integer tensor is refused by the forward's check, by name, and read
        # as _counted reads it: torch's < has no kernel for some dtypes, uint16 or float8)
        count = self.num_batches_tracked
        if self._momentum is not None or not isinstance(count, Tensor) or count.is_meta:
            return None
        return float(count) < 0 if _is_count(count) else None

    def forward(self, input: Tensor) -> Tensor:
        check_input("BatchNorm1d", input, self._num_features)
        self._check_parameters()
        check_like_parameter("BatchNorm1d", input, self.running_mean, owner=self._owner())
        # An input from an autograd graph is read as a plain value (the running statistics
        # would otherwise record the graph, for good).
        dtype = input.dtype
        compute = _compute_dtype(dtype)
        if self._eps_fits != (self._eps, compute):  # (checked once for each eps and dtype)
            _check_eps_fits(self._eps, compute)
            self._eps_fits = (self._eps, compute)
        x = _as(input.detach(), compute)
        if not self.training and TRAINING_IN_TRIAL.get() and id(self) in TRAINING_IN_TRIAL.get():
            # (a container's trial, this layer in training mode outside it: see TRAINING_IN_TRIAL)
            self._check_trains_on(x)
        if self.training:
            batch = x.shape[0]
            counted = self._check_trains_on(x)
            mean = _batch_mean(x)
            centered = x - mean
            variance = _batch_mean(centered.square())
            momentum = self._momentum
            if momentum is None:  # PyTorch's 1 / float(num_batches_tracked), once it counts this
                momentum = 1.0 / (counted + 1.0)
            # m sigma^2 N / (N - 1) with the factor m N / (N - 1) as one number: one op.
            self._update(self.running_mean, mean, momentum, momentum, compute)
            self._update(
                self.running_var, variance, momentum, momentum * batch / (batch - 1), compute
            )
            self.num_batches_tracked.add_(1)
        else:
            centered = x - _as(self.running_mean, compute)
            variance = _as(self.running_var, compute)
        # s = 1 / sqrt(sigma^2 + eps), kept for backward; x_hat = (x - mu) s.
        inv_std = variance.add(operand(self._eps, variance)).rsqrt_()
        normalized = centered.mul_(inv_std)
        # (cached in the layer's dtype, so that the checks of backward compare it as it is)
        self._normalized, self._inv_std = _as(normalized, dtype), inv_std
        self._batch_statistics = self.training
        if self.weight is None or self.bias is None:
            # (without affine; or one of the two removed with register_parameter(name, None): the
            # other still applies)
            weight_or_none = None if self.weight is None else self.weight.data
            bias_or_none = None if self.bias is None else self.bias.data
            self._fitted = (weight_or_none, bias_or_none, self.running_mean)
            if weight_or_none is not None:
                normalized = normalized * _as(weight_or_none, compute)
            elif bias_or_none is not None:
                normalized = normalized + _as(bias_or_none, compute)
            return _as(normalized, dtype)
        weight_data, bias_data = self.weight.data, self.bias.data
        self._fitted = (weight_data, bias_data, self.running_mean)
        weight, bias = _as(weight_data, compute), _as(bias_data, compute)
        return _as(torch.addcmul(bias, normalized, weight), dtype)  # beta + x_hat gamma, fused

    def _update(
        self, running: Tensor, batch: Tensor, momentum: float, weight: float, compute: torch.dtype
    ) -> None:
        """``running <- (1 - m) running + weight batch`` in place; for a 16-bit layer computed
        in float32 and rounded once, as PyTorch does in float16 (rounded after each of the two
        ops, a float16 average with a small momentum drifts: the batch's share is lost to
        rounding; PyTorch's CPU kernel does so in bfloat16, where this one keeps closer to the
        exact average: running_var 8.25 against torch's 6.84, exact 8.20, after 200 steps at
        momentum 0.01 in a review's run)."""
        scale = 1 - momentum
        if running.dtype is compute:
            running.mul_(operand(scale, running)).add_(batch, alpha=weight)
        else:
            running.copy_(running.to(compute).mul_(scale).add_(batch, alpha=weight))

    def _check_parameters(self) -> None:
        """A weight or bias assigned by hand (``weight.data = ...``) must be like the running
        statistics, and the running statistics (put in place with ``register_buffer``) of
        shape ``(num_features,)``, floating point, with one dtype and device, and the count of
        batches a 0-dim integer tensor; checked before anything is updated (a ``running_var`` of another shape failed in torch's words, the
        mean already updated)."""
        mean, variance = self.running_mean, self.running_var
        features = self._num_features
        tracked = self.num_batches_tracked
        for name, buffer in (
            ("running_mean", mean),
            ("running_var", variance),
            ("num_batches_tracked", tracked),
        ):
            if not isinstance(buffer, Tensor):  # (an attribute assigned by hand: bn.x = 3)
                raise TypeError(
                    f"BatchNorm1d: {name} is {shown_typed(buffer)}, expected a torch.Tensor "
                    f"(update the buffer in place, or register_buffer({name!r}, tensor))"
                )
        if not _is_count(tracked):
            dtype = tracked.dtype
            uncounted = dtype not in COUNT_DTYPES and not (
                dtype.is_floating_point or dtype.is_complex or dtype is torch.bool
            )
            raise ValueError(
                f"BatchNorm1d: num_batches_tracked has shape {tuple(tracked.shape)}, "
                f"{dtype}, expected a 0-dim integer tensor (the batches counted)"
                + (f"; torch cannot add to a {dtype} tensor: use torch.int64" if uncounted else "")
            )
        if (
            mean.shape != (features,)
            or variance.shape != (features,)
            or variance.dtype != mean.dtype
            or variance.device != mean.device
            or not mean.is_floating_point()
        ):
            for name, statistic in (("running_mean", mean), ("running_var", variance)):
                if statistic.shape != (features,) or not statistic.is_floating_point():
                    raise ValueError(
                        f"BatchNorm1d: {name} has shape {tuple(statistic.shape)}, "
                        f"{statistic.dtype}, expected a floating-point tensor of shape "
                        f"({features},) (num_features)"
                    )
            raise ValueError(
                f"BatchNorm1d: running_var is {variance.dtype} on {variance.device}, expected "
                f"{mean.dtype} on {mean.device} like running_mean"
            )
        weight, bias = self.weight, self.bias
        registered = self._parameters
        if (
            not (weight is None or weight is registered.get("weight"))
            or not (bias is None or bias is registered.get("bias"))
            or (weight is None and "weight" in registered)
            or (bias is None and "bias" in registered)
        ):
            check_parameter_attributes("BatchNorm1d", self, "weight, bias", "weight, bias")
        statistics = self.running_mean
        for name, parameter in (("weight", weight), ("bias", bias)):
            if parameter is None:
                continue
            data = parameter.data
            if (
                data.shape != statistics.shape
                or data.dtype != statistics.dtype
                or data.device != statistics.device
            ):
                raise ValueError(
                    f"BatchNorm1d: {name} has shape {tuple(data.shape)}, {data.dtype} on "
                    f"{data.device}, expected ({self.num_features},), {statistics.dtype} on "
                    f"{statistics.device} like the running statistics"
                )

    def _owner(self) -> str:
        """What the dtype and device messages call the tensors an input must match."""
        return "running statistics" if self.weight is None else "parameters"

    def backward(self, grad_output: Tensor) -> Tensor:
        normalized = check_cached("BatchNorm1d", self._normalized)
        inv_std = check_cached("BatchNorm1d", self._inv_std)
        self._check_fits_forward()
        # (normalized has the dtype and device of the parameters and running statistics)
        check_grad_output(
            "BatchNorm1d", grad_output, normalized.shape, normalized, owner=self._owner()
        )
        dtype = normalized.dtype
        compute = _compute_dtype(dtype)
        grad_output = _as(grad_output.detach(), compute)  # (as the input: a plain value)
        if self._gradients.holds(grad_output, self):
            # (g gamma and sum g below would read g after dL/dgamma was added into it)
            grad_output = grad_output.clone()
        normalized = _as(normalized, compute)
        # dL/dgamma += sum_n g x_hat, dL/dbeta += sum_n g; g_hat = gamma g = dL/dx_hat.
        grad_normalized = grad_output
        if self.weight is not None:
            self.weight.grad.add_((grad_output * normalized).sum(dim=0))
            grad_normalized = grad_output * _as(self.weight.data, compute)
        if self.bias is not None:
            self.bias.grad.add_(grad_output.sum(dim=0))
        if not self._batch_statistics:
            return _as(grad_normalized * inv_std, dtype)
        # (s / N) (N g - sum g - x_hat sum(g x_hat)) = s (g - mean g - x_hat mean(g x_hat))
        mean_grad = _batch_mean(grad_normalized)
        mean_projection = _batch_mean(grad_normalized * normalized)
        grad_input = (grad_normalized - mean_grad).sub_(normalized * mean_projection)
        return _as(grad_input.mul_(inv_std), dtype)

    def _check_fits_forward(self, parameters_only: bool = False) -> None:
        """Refuse, before anything is written, a layer cast or moved (``.to(...)``) since its
        last forward (the cache no longer fits the running statistics and parameters), and a
        weight or bias put in place since then that is unlike the running statistics."""
        normalized = self._normalized
        if normalized is None:
            return
        weight, bias = self.weight, self.bias
        fitted = self._fitted
        try:
            if (
                (None if weight is None else weight.data) is fitted[0]
                and (None if bias is None else bias.data) is fitted[1]
                and self.running_mean is fitted[2]
            ):
                return  # (what the forward checked and computed with: it fits)
            had = self._forward_had()
            if had is not None:
                for name, parameter, used in (("weight", weight, had[0]), ("bias", bias, had[1])):
                    if (parameter is not None) != used:
                        raise RuntimeError(
                            f"BatchNorm1d: {name} was set to "
                            f"{'None' if parameter is None else 'a Parameter'} after the last "
                            f"forward, which {'had one' if used else 'had none'}; its "
                            "backward would differentiate another function: run forward again "
                            "before backward"
                        )
            check_still_fits("BatchNorm1d", normalized, self.running_mean)
            for parameter in (weight, bias):
                if parameter is not None:
                    check_still_fits("BatchNorm1d", normalized, parameter.data)
        except AttributeError:  # (a number set by hand as weight, bias or running_mean: named)
            self._check_parameters()
            raise
        self._check_parameters()

    def _forward_had(self) -> tuple[bool, bool] | None:
        """Whether the last forward had a weight and a bias (``None`` where no forward ran, or
        in a layer pickled before this was kept)."""
        fitted = self._fitted
        if fitted[2] is None:  # (no forward in this object: a copy's or unpickled layer's)
            return self._fitted_with
        return fitted[0] is not None, fitted[1] is not None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        # (views of the parameters and a buffer: the next backward checks in full instead,
        # knowing which of the two the forward had)
        state["_fitted_with"] = self._forward_had()
        state["_fitted"] = (None, None, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_fitted", (None, None, None))  # (pickled before they existed)
        state.setdefault("_fitted_with", None)
        state.setdefault("_gradients", GradientMemory())
        super().__setstate__(state)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"
        )
