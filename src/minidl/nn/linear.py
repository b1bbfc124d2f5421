"""Fully connected layer."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from minidl._memory import out_of_memory
from minidl._setting import Fixed
from minidl._validate import add_note
from minidl.nn._checks import (
    STRIDED,
    check_bool,
    check_cached,
    check_factory_options,
    check_grad_output,
    check_input,
    check_layer_parameters,
    check_like_parameter,
    check_parameter_attributes,
    check_size,
    check_still_fits,
)
from minidl.nn._gradient_memory import GradientMemory
from minidl.nn._recent import Recent
from minidl.nn.module import Module
from minidl.nn.parameter import Parameter

__all__ = ["Linear"]

_NO_SHAPE = (-1,)

#: The largest batch whose bias gradient is one matrix-vector product with ones (``addmv_``).
#: The product adds the batch's rows one after the other in a few running sums, whose rounding
#: errors grow with N: in float32 the sum of 4096 rows was 1.7e-6 off (relative) and of a
#: million 7.9e-6, where ``sum`` (PyTorch's reduction by blocks, autograd's bias gradient) stays
#: within 2.6e-7 and 2.8e-9; a larger batch's is summed so and added (an operation more, on a
#: batch whose products cost far more than one). As the losses' dot products
#: (``minidl.nn.cross_entropy.DOT_PRODUCT_ROWS``).
SUMMED_BY_PRODUCT = 1024


def _check_in_features(where: str, value: object) -> int:
    return check_size(where, "in_features", value)


def _check_out_features(where: str, value: object) -> int:
    return check_size(where, "out_features", value)


class Linear(Module):
    r"""Fully connected layer :math:`y = x W^T + b`.

    Initialisation follows the paper (Xavier/Glorot normal):
    :math:`W_{ij} \sim \mathcal{N}(0, \frac{2}{n_{in} + n_{out}})` and :math:`b_i \sim \mathcal{N}(0, 1)`,
    drawn from torch's default generator (or ``generator``), so ``torch.manual_seed`` fixes them.

    Backward, for a batch :math:`X` of shape ``(N, in)`` and :math:`G = \partial L / \partial Y`
    of shape ``(N, out)`` (from :math:`Y_{nj} = \sum_i X_{ni} W_{ji} + b_j`):

    .. math::
        \frac{\partial L}{\partial X} = G W, \qquad
        \frac{\partial L}{\partial W} \mathrel{+}= G^T X, \qquad
        \frac{\partial L}{\partial b} \mathrel{+}= \textstyle\sum_{n} G_{n,:}

    of shapes ``(N, in)``, ``(out, in)`` and ``(out,)``: the input gradient is returned, the
    parameter gradients are added to ``weight.grad`` and ``bias.grad``. Each follows from
    :math:`\partial Y_{nj}/\partial X_{ni} = W_{ji}`, :math:`\partial Y_{nj}/\partial W_{ji} = X_{ni}`
    and :math:`\partial Y_{nj}/\partial b_j = 1` by summing :math:`G_{nj}` times them over the
    outputs that the variable reaches: :math:`\sum_j G_{nj} W_{ji}` for :math:`X_{ni}` (one
    sample's outputs), :math:`\sum_n G_{nj} X_{ni}` and :math:`\sum_n G_{nj}` for
    :math:`W_{ji}` and :math:`b_j` (every sample's: a sum over the batch, not a mean).

    The paper (Section II-B) writes a sample as a column, :math:`y = Wx + b`, so its batch
    :math:`X` is this :math:`X^T` and its :math:`\partial L/\partial y` this :math:`G^T`: its
    weight gradient :math:`\frac{\partial L}{\partial y} X^T` is this :math:`G^T X`, its bias
    gradient (the sum of the columns of :math:`\partial L/\partial y`) this sum of the rows of
    :math:`G`, and its :math:`\partial L/\partial x = \frac{\partial L}{\partial y} W`, which
    takes a sample's gradient as a row, this :math:`G W`. :mod:`minidl.folded` computes in the
    paper's layout.

    Args:
        in_features: size of each input sample (``n_in``).
        out_features: size of each output sample (``n_out``).
        bias: learn an additive bias (default ``True``).
        dtype: dtype of the parameters (default: torch's default dtype).
        device: device of the parameters.
        generator: the random generator for the initialisation (default: torch's global one).

    Shape:
        - Input: ``(N, in_features)``.
        - Output: ``(N, out_features)``.

    Attributes:
        weight: :class:`Parameter` of shape ``(out_features, in_features)``.
        bias: :class:`Parameter` of shape ``(out_features,)``, or ``None``.

    Example:
        >>> layer = Linear(2, 25)
        >>> layer(torch.randn(100, 2)).shape
        torch.Size([100, 25])
    """

    #: The sizes the layer's weight and bias were made from, fixed (setting either raises
    #: ``AttributeError``: the layer went on computing with its tensors, its ``repr`` and a
    #: checkpoint's architecture describing another layer).
    in_features = Fixed(
        _check_in_features,
        "the weight has that many columns; build a new Linear for another number",
    )
    out_features = Fixed(
        _check_out_features,
        "the weight has that many rows and the bias that many entries; build a new Linear for "
        "another number",
    )
    _in_features: int
    _out_features: int
    bias: Parameter | None

    #: The names of the weight's dimensions, in the errors about its shape.
    _NAMES = "out_features, in_features"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        in_features = check_size("Linear", "in_features", in_features)
        out_features = check_size("Linear", "out_features", out_features)
        check_bool("Linear", "bias", bias)
        device = check_factory_options("Linear", dtype, device, generator)
        self.in_features = in_features
        self.out_features = out_features
        std = math.sqrt(2.0 / (in_features + out_features))
        # Made first, then drawn (torch.randn's own two steps, the same draws): a size past
        # what a tensor holds is refused by name (it failed in torch's words), and memory that
        # cannot be had is torch's error with a note naming the layer, before any draw from
        # the generator.
        try:
            weight = torch.empty(out_features, in_features, dtype=dtype, device=device)
            b = torch.empty(out_features, dtype=dtype, device=device) if bias else None
        except (RuntimeError, ValueError) as error:
            what = f"a weight of {out_features} x {in_features}{' and its bias' if bias else ''}"
            if out_of_memory(error) is not None:
                add_note(error, f"Linear: making {what}")
                raise
            raise ValueError(f"Linear: cannot hold {what} ({error})") from None
        weight.normal_(generator=generator)
        self.weight = self.register_parameter("weight", Parameter(weight.mul_(std)))
        if b is not None:
            self.bias = self.register_parameter("bias", Parameter(b.normal_(generator=generator)))
        else:
            self.bias = self.register_parameter("bias", None)  # (one may be registered later)
        self._input: Tensor | None = None
        # Per-layer memory of the last accepted input, so that a call like the previous one is
        # checked with a few identity and equality tests, and views and constants reused from
        # step to step (one fewer op each per call). All of it is rebuilt when the parameter
        # tensors are replaced (Module.to, flattening) or the input's shape changes.
        self._weight_seen: Tensor | None = None
        self._bias_seen: Tensor | None = None
        self._weight_t = self.weight.data.t()
        self._dtype = self.weight.data.dtype
        self._device = self.weight.data.device
        # No tensor has the shape (-1,): the first input gets the full checks, even a 0-dim one.
        self._input_shape: tuple[int, ...] = _NO_SHAPE
        self._output_shape: tuple[int, ...] = ()
        self._ones: Tensor | None = torch.ones(0)
        # (input shape, output shape, ones) of the last few input shapes accepted with these
        # parameter tensors, so that switching back to one (from the last, smaller batch of an
        # epoch, or from an evaluation on another batch size) needs no checks or new tensor.
        self._shapes: Recent[tuple[tuple[int, ...], tuple[int, ...], Tensor | None]] = Recent()
        # An input given in the memory of weight.grad or bias.grad is copied as it is cached (a
        # zero_grad() before the backward would zero it), a gradient before the accumulation
        # overwrites it (see minidl.nn._gradient_memory).
        self._gradients = GradientMemory()

    def _accept(self, input: object, weight: Tensor, bias: Tensor | None) -> Tensor:
        """Full checks of an input unlike the last accepted one, or of parameter tensors that
        were replaced; remember them if they pass."""
        if weight is not self._weight_seen or bias is not self._bias_seen:
            check_parameter_attributes("Linear", self, "weight, bias")
            check_layer_parameters(
                "Linear", weight, bias, (self.out_features, self.in_features), self._NAMES
            )
            # (the input checked before the new tensors are remembered: a refused forward left
            # them remembered, and the backward of the last good forward, cast since, then
            # failed in the tensor library's words instead of naming the cast)
            checked = check_input("Linear", input, self.in_features)
            check_like_parameter("Linear", checked, weight)
            self._weight_seen, self._bias_seen, self._weight_t = weight, bias, weight.t()
            self._dtype, self._device = weight.dtype, weight.device
            self._input_shape = _NO_SHAPE
            self._shapes.clear()
            return self._remember(checked, weight)
        if (
            type(input) is Tensor
            and input.dtype is self._dtype
            and input.device == self._device
            and input.layout is STRIDED
            and not input.is_nested
        ):
            # A shape accepted lately (with these parameters: same dtype and device) passes.
            known = self._shapes.get(input.shape)
            if known is not None:
                self._input_shape, self._output_shape, self._ones = known
                return input
        checked = check_input("Linear", input, self.in_features)
        check_like_parameter("Linear", checked, weight)
        return self._remember(checked, weight)

    def _remember(self, checked: Tensor, weight: Tensor) -> Tensor:
        """Remember the shape of ``checked``, an input accepted with ``weight``, and return it."""
        if checked.shape != self._input_shape:
            batch = checked.shape[0]
            # Ones for the bias gradient, a sum over the batch done as a matrix-vector product
            # (None above SUMMED_BY_PRODUCT samples: see _accumulate_bias).
            ones = (
                torch.ones(batch, dtype=weight.dtype, device=weight.device)
                if batch <= SUMMED_BY_PRODUCT
                else None
            )
            shape = tuple(checked.shape)
            self._input_shape, self._output_shape, self._ones = self._shapes.put(
                shape, (shape, (batch, self.out_features), ones)
            )
        return checked

    def forward(self, input: Tensor) -> Tensor:
        try:
            weight = self.weight.data
            bias = self.bias.data if self.bias is not None else None
        except AttributeError:  # (a number assigned to weight or bias: named)
            check_parameter_attributes("Linear", self, "weight, bias")
            raise
        if (
            weight is not self._weight_seen
            or bias is not self._bias_seen
            or type(input) is not Tensor
            or input.is_nested  # (whose shape is not read)
            or input.dtype is not self._dtype
            or input.shape != self._input_shape
            or input.device != self._device
            or input.layout is not STRIDED
        ):
            input = self._accept(input, weight, bias)
        if self._gradients.holds(input, self):
            # (cached as a copy: a zero_grad() before backward would zero what it reads; as a
            # Sequential copies such an input, the planned layers read the copy)
            input = input.clone()
        return self._apply(input)

    def _apply(self, input: Tensor, out: Tensor | None = None) -> Tensor:
        """The output for an accepted input (cached for backward), a new tensor or ``out``."""
        self._input = input
        bias = self.bias
        if bias is None:
            return torch.mm(input, self._weight_t, out=out)
        # b + X W^T as one fused op (addmm), the bias broadcast over the rows.
        return torch.addmm(bias.data, input, self._weight_t, out=out)

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._gradients.holds(grad_output, self):
            # (G W below would read G after the accumulation wrote over it)
            grad_output = grad_output.clone()
        self.backward_parameters(grad_output)
        return grad_output.mm(self.weight.data)

    def backward_parameters(self, grad_output: Tensor) -> None:
        """Accumulate the weight and bias gradients only (no :math:`G W` product)."""
        input = self._input
        if input is None:
            input = check_cached("Linear", input)
        shape = self._output_shape
        if (
            type(grad_output) is not Tensor
            or grad_output.is_nested
            or grad_output.shape != shape
            or grad_output.dtype is not self._dtype
            or grad_output.layout is not STRIDED
        ):
            check_grad_output("Linear", grad_output, torch.Size(shape), self.weight.data)
        try:
            if (
                self.weight.data is not self._weight_seen
                or (None if self.bias is None else self.bias.data) is not self._bias_seen
            ):
                self._check_fits_forward()
        except AttributeError:  # (a number set by hand as weight or bias: named)
            check_parameter_attributes("Linear", self, "weight, bias")
            raise
        gradients = self._gradients
        if gradients.holds(grad_output, self):
            grad_output = grad_output.clone()
        if gradients.holds(input, self):
            input = input.clone()
        grad_output_t = grad_output.t()
        weight_grad = self.weight.grad
        try:
            # dL/dW += G^T X, accumulated by the product itself (addmm: no temporary). With
            # out= rather than in place (addmm_): autograd refuses out= for an operand from an
            # autograd graph, where addmm_ would record the gradient into that graph for good.
            torch.addmm(weight_grad, grad_output_t, input, out=weight_grad)
        except RuntimeError:
            # Nothing is accumulated yet. A gradient on another device is found here rather
            # than by a comparison on every call (a layer cast or moved since its forward was
            # refused above).
            check_grad_output("Linear", grad_output, torch.Size(shape), self.weight.data)
            # Operands from an autograd graph: minidl reads them as plain values.
            grad_output_t, input = grad_output_t.detach(), input.detach()
            torch.addmm(weight_grad, grad_output_t, input, out=weight_grad)
        self._accumulate_bias(grad_output_t)

    def _check_fits_forward(self, parameters_only: bool = False) -> None:
        """Refuse parameters put in place, cast or moved since the last forward that no longer
        fit it, before anything is written: another dtype or device than the cached input's (a
        cast or a move), one of another shape (the products would not fit its gradient, and
        ``out=`` would resize that gradient, a view of the optimizer's buffer, over the next
        one), or a bias unlike the weight."""
        try:
            weight = self.weight.data
            bias = None if self.bias is None else self.bias.data
        except AttributeError:  # (a number set by hand as weight or bias: named)
            check_parameter_attributes("Linear", self, "weight, bias")
            raise
        input = self._input
        if input is None or (weight is self._weight_seen and bias is self._bias_seen):
            return
        check_parameter_attributes("Linear", self, "weight, bias")
        check_still_fits("Linear", input, weight)
        check_layer_parameters(
            "Linear", weight, bias, (self.out_features, self.in_features), self._NAMES
        )

    def _accumulate(self, grad_output_t: Tensor, input: Tensor) -> None:
        """:meth:`backward_parameters` for a gradient (given transposed, ``(out, N)``) and an
        ``input`` known to fit (a :class:`~minidl.nn.chain.ChainPlan`'s)."""
        weight_grad = self.weight.grad
        torch.addmm(weight_grad, grad_output_t, input, out=weight_grad)
        self._accumulate_bias(grad_output_t)

    def _accumulate_bias(self, grad_output_t: Tensor) -> None:
        bias = self.bias
        if bias is not None:
            ones = self._ones
            if ones is not None:
                # dL/db += sum_n G[n, :], the sum over the batch as the matrix-vector product
                # G^T 1 (ones of length N): one op that accumulates in place.
                bias.grad.addmv_(grad_output_t, ones)
            else:
                # (a larger batch: see SUMMED_BY_PRODUCT)
                bias.grad.add_(grad_output_t.sum(1))

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        # Views of the parameters, not pickled: the next forward makes them again.
        state.update(_weight_seen=None, _bias_seen=None, _weight_t=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_shapes", Recent())  # (pickled before it existed)
        state.setdefault("_gradients", GradientMemory())  # (likewise)
        super().__setstate__(state)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )
