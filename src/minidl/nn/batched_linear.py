"""R independent fully connected layers applied at once (batched matrix products)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from minidl._setting import Fixed
from minidl._validate import COMPUTED, FLOATING, shown
from minidl.nn._checks import (
    STRIDED,
    check_bool,
    check_cached,
    check_dense,
    check_factory_options,
    check_grad_output,
    check_layer_parameters,
    check_like_parameter,
    check_parameter_attributes,
    check_size,
    check_still_fits,
)
from minidl.nn._gradient_memory import GradientMemory
from minidl.nn._recent import Recent
from minidl.nn.linear import Linear
from minidl.nn.module import Module
from minidl.nn.parameter import Parameter

__all__ = ["BatchedLinear"]

# The answers of _batched_gradient_is_exact, by gradient layout and operand shapes.
_EXACT_BATCHED_GRADIENT: dict[tuple[object, ...], bool] = {}

#: The alignment, in bytes, up to which the check reproduces every operand's address: the
#: largest that a BLAS kernel's choice of code (vector or scalar, peeled or not) looks at.
_ALIGNMENT = 64

#: How many draws of random operands the check compares the two ways on (see
#: :func:`_batched_gradient_is_exact`).
_DRAWS = 32

#: The largest weight-gradient product, in multiply-adds per model (``out * in * batch``), for
#: which the check is made. Beyond it each model's product is long beside its few microseconds
#: of fixed cost, so one batched product saves next to nothing, while the check's 64 products
#: would cost seconds (a 25-model stack of 25 x 25 layers, full batches of 4000 samples: its
#: first backward took 25 times as long); the per-model products are kept there.
_LARGEST_CHECKED = 1 << 18


def _batched_gradient_is_exact(grad: Tensor, batch: int) -> bool:
    r"""Whether one batched product :math:`G_r^T X_r` into a contiguous temporary, then added
    to ``grad``, gives every model r exactly the bits that ``grad.baddbmm_`` gives into
    ``grad`` (which, for a ``grad`` that is not contiguous, ATen computes as one matrix product
    per model), for inputs of ``batch`` samples and gradients that start from zero, as in
    every training step.

    Which code the BLAS library runs for each element, and so the order and fusing of its
    sums, depends on the shapes, on the CPU and on where each matrix sits in memory (its
    address modulo :data:`_ALIGNMENT` bytes), not on the values. On the AMD EPYC CPUs
    measured (MKL; AVX2 and AVX-512), the first elements of a row of the product that starts off a 16-byte boundary come from
    other code than the vectorised body, and the temporary's models sit at other alignments
    than their blocks of ``grad`` (:math:`out \cdot in` elements apart, against the blocks'
    multiples of 64 bytes): for most shapes, a few elements of some models are summed another
    way. Whether two ways of summing give the same bits depends on the values, though: a draw
    of random operands shows such a difference only sometimes (for the ``2 x 70`` gradient of
    two models over 12 samples, in three draws out of four). A check made on one draw said yes
    for that layout, and a stack of two models then trained to other bits than alone.

    So the two ways are compared on :data:`_DRAWS` draws, each model's gradient at the address
    of its block of ``grad`` modulo :data:`_ALIGNMENT` bytes (a buffer as large as ``grad``'s
    extent, at its strides), the product in a new contiguous tensor as the layer's temporary
    is, and the operands :math:`G` and :math:`X` each at every alignment in turn, draw
    :math:`d` at :math:`d` and :math:`7d + 3` elements modulo :data:`_ALIGNMENT` bytes (the
    real ones start anywhere: views of a batch, of a criterion's buffer; 16 of the 256 pairs
    of float32 alignments, each in two draws; 8 of float64's 64, in four). (Operands drawn at
    independent random alignments, and sliced from longer batches, gave the answer's bits in
    every layout tried where it said yes.) The answer, kept for the
    layout, is yes only if every draw gave the same bits. In the shapes tried here (2 to 100
    wide, 8 to 100 samples), a draw showed a difference, where there was one, with a
    probability of 0.37 or more, so that 32 draws miss it with a probability below
    :math:`10^{-6}`. The draws cost 64 products of the layer's size, once per layout, batch
    size and number of threads, made at the first backward of that batch size (an evaluation
    at another batch size costs none); a product of more than :data:`_LARGEST_CHECKED`
    multiply-adds per model is not checked (no: the per-model products, which gain as much).
    """
    models, out_features, in_features = grad.shape
    if out_features * in_features * batch > _LARGEST_CHECKED:
        return False
    size = grad.element_size()
    # (the answer may depend on the threads, which split the products among them)
    key = (
        tuple(grad.shape),
        grad.stride(),
        grad.data_ptr() % _ALIGNMENT,
        batch,
        grad.dtype,
        torch.get_num_threads(),
    )
    exact = _EXACT_BATCHED_GRADIENT.get(key)
    if exact is None:
        exact = _compare_the_two_ways(grad, batch, models, out_features, in_features, size)
        _EXACT_BATCHED_GRADIENT[key] = exact
    return exact


def _compare_the_two_ways(
    grad: Tensor, batch: int, models: int, out_features: int, in_features: int, size: int
) -> bool:
    """The comparison of :func:`_batched_gradient_is_exact` (whose docstring says how)."""
    step = _ALIGNMENT // size  # (elements in one alignment period)
    # (on the gradient's device, the CPU, whatever device torch.set_default_device names)
    generator = torch.Generator(grad.device).manual_seed(0)
    options: dict[str, Any] = {"dtype": grad.dtype, "device": grad.device}
    extent = 1 + sum((n - 1) * s for n, s in zip(grad.shape, grad.stride(), strict=True))
    buffer = torch.zeros(extent + step, **options)
    shift, rest = divmod((grad.data_ptr() - buffer.data_ptr()) % _ALIGNMENT, size)
    if rest:  # (a gradient off its element size's alignment: keep the per-model products)
        return False
    per_model = buffer.as_strided(grad.shape, grad.stride(), shift)
    added = torch.zeros(extent + step, **options).as_strided(grad.shape, grad.stride(), shift)
    product = torch.empty(grad.shape, **options)
    grad_outputs = torch.empty(models * batch * out_features + step, **options)
    inputs = torch.empty(models * batch * in_features + step, **options)
    try:
        for draw in range(_DRAWS):
            start_g, start_x = draw % step, (7 * draw + 3) % step
            grad_output = grad_outputs[start_g : start_g + models * batch * out_features]
            input = inputs[start_x : start_x + models * batch * in_features]
            grad_output.normal_(generator=generator)
            input.normal_(generator=generator)
            grad_output_t = grad_output.view(models, batch, out_features).transpose(1, 2)
            input_3d = input.view(models, batch, in_features)
            per_model.zero_()
            per_model.baddbmm_(grad_output_t, input_3d)
            torch.bmm(grad_output_t, input_3d, out=product)
            added.zero_()
            added.add_(product)
            if not torch.equal(per_model, added):
                return False
    except RuntimeError:  # (a dtype without these kernels: backward will say so)
        return False
    return True


def _check_models(where: str, value: object) -> int:
    return check_size(where, "models", value)


def _check_in_features(where: str, value: object) -> int:
    return check_size(where, "in_features", value)


def _check_out_features(where: str, value: object) -> int:
    return check_size(where, "out_features", value)


def _candidate(grad: Tensor) -> list[bool | None]:
    """The product choice of a batch shape before its first backward: ``[None]`` (to be
    decided, see :func:`_batched_gradient_is_exact`) for a weight gradient on the CPU that is
    not contiguous (a ``layout="model"`` stack's), else ``[False]`` (one product per model)."""
    return [None if not grad.is_contiguous() and grad.device.type == "cpu" else False]


class BatchedLinear(Module):
    r"""``models`` independent :class:`Linear` layers evaluated together: :math:`Y_r = X_r W_r^T + b_r`.

    The leading dimension indexes the model: model :math:`r` sees only its own input
    :math:`X_r` and its own parameters :math:`W_r, b_r`, so training R stacked networks is
    training R networks, with one batched matrix product per layer instead of R. Backward, per
    model, is :class:`Linear`'s, with :math:`G_r = \partial L / \partial Y_r` of shape
    ``(N, out)``:

    .. math::
        \frac{\partial L}{\partial X_r} = G_r W_r, \qquad
        \frac{\partial L}{\partial W_r} \mathrel{+}= G_r^T X_r, \qquad
        \frac{\partial L}{\partial b_r} \mathrel{+}= \textstyle\sum_n (G_r)_{n,:}

    of shapes ``(N, in)``, ``(out, in)`` and ``(out,)``; stacked over the models, the returned
    ``(R, N, in)`` and the accumulated ``(R, out, in)`` and ``(R, out)``.

    The weight gradient is one batched product accumulated into ``weight.grad``. Where that
    tensor is not contiguous (a ``layout="model"`` stack, see :func:`minidl.nn.stack_models`,
    whose models' parameters are blocks of one buffer), ATen would compute it as one product
    per model; on the CPU the layer computes it instead as one batched product into a
    contiguous temporary, then adds it, wherever a check made once per layout and batch size
    (at its first backward) shows, on random operands laid out as the real ones, that this
    gives every model the bits of its own product (:func:`_batched_gradient_is_exact`), so
    that this product does not change a model's numbers from one stack to another (the
    conditions under which a model's numbers are the same in any stack are those of
    :func:`minidl.nn.stack_models`). (Where gradients accumulate over
    several backward calls without ``zero_grad``, the product is added as a whole, which may
    round the sum differently in the last bit from a product accumulated into it.)

    For one model (R = 1) on the CPU, ATen computes a batched product as a plain matrix
    product, for two or more with MKL's batched product, which rounds differently where the
    product is a matrix times a vector: the output of a layer with one output, the input
    gradient of a layer with one input. There the single model's product is computed as the
    first of two equal ones (the operands expanded, no copy; twice the work of that small
    product), so that a stack of one model gets the bits of the same model in a larger stack.
    The weight gradient needs no pair: in a ``layout="model"`` stack it is one plain product
    per model, as alone (or the batched product where it gives the same bits).

    Build one with :meth:`stack` from R :class:`Linear` layers (to start from their weights) and
    take them apart with :meth:`unstack`; :func:`minidl.nn.stack_models` does it for whole
    networks.

    Args:
        models: the number of models R, >= 1.
        in_features, out_features, bias, dtype, device, generator: as for :class:`Linear`; each
            model's weights are drawn as a :class:`Linear`'s would be, one model after the other.

    Shape:
        - Input: ``(R, N, in_features)``.
        - Output: ``(R, N, out_features)``.

    Attributes:
        weight: :class:`Parameter` of shape ``(R, out_features, in_features)``.
        bias: :class:`Parameter` of shape ``(R, out_features)``, or ``None``.

    Example:
        >>> layer = BatchedLinear(5, 2, 25)
        >>> layer(torch.randn(5, 100, 2)).shape
        torch.Size([5, 100, 25])
    """

    #: The sizes the layer's weight and bias were made from, fixed (setting one raises
    #: ``AttributeError``, as :class:`Linear`'s).
    models = Fixed(
        _check_models,
        "the weight and the bias have that many models; build a new BatchedLinear (stack, "
        "unstack) for another number",
    )
    in_features = Fixed(
        _check_in_features,
        "the weight has that many columns; build a new BatchedLinear for another number",
    )
    out_features = Fixed(
        _check_out_features,
        "the weight has that many rows and the bias that many entries; build a new "
        "BatchedLinear for another number",
    )
    _models: int
    _in_features: int
    _out_features: int
    bias: Parameter | None

    def __init__(
        self,
        models: int,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        models = check_size("BatchedLinear", "models", models)
        in_features = check_size("BatchedLinear", "in_features", in_features)
        out_features = check_size("BatchedLinear", "out_features", out_features)
        check_bool("BatchedLinear", "bias", bias)
        check_factory_options("BatchedLinear", dtype, device, generator)
        # The parameters of R Linear layers built one after the other (the same draws), each
        # copied into tensors made first: one layer at a time is kept, and a size that cannot
        # be held fails before any is built.
        try:
            weight = torch.empty(models, out_features, in_features, dtype=dtype, device=device)
            biases = torch.empty(models, out_features, dtype=dtype, device=device) if bias else None
        except (RuntimeError, ValueError) as error:  # (no memory for it; past int64)
            raise ValueError(
                f"BatchedLinear: cannot hold the parameters of {models} "
                f"model{'s' * (models != 1)} of "
                f"{out_features} x {in_features} weights ({error})"
            ) from None
        for index in range(models):
            layer = Linear(
                in_features, out_features, bias, dtype=dtype, device=device, generator=generator
            )
            weight[index] = layer.weight.data
            if biases is not None:
                biases[index] = layer.bias.data  # type: ignore[union-attr]
        self._adopt_tensors(weight, biases, in_features, out_features)

    @classmethod
    def stack(cls, layers: Sequence[Linear]) -> BatchedLinear:
        """A :class:`BatchedLinear` holding copies of the parameters of ``layers``, in order.

        Raises:
            TypeError: ``layers`` is empty, no sequence (a generator, a single layer) or holds
                something other than :class:`Linear` layers; a layer's ``weight`` or ``bias``
                set by hand to what is no Parameter.
            ValueError: the layers differ in shape, bias, dtype or device; a layer's
                ``weight`` or ``bias`` set by hand to a Parameter other than the registered one.
        """
        if isinstance(layers, Module) or not isinstance(layers, Sequence):
            # (a generator would be used up by the checks, a single layer is no list of them)
            got = f"the module {type(layers).__name__}" if isinstance(layers, Module) else None
            raise TypeError(
                "BatchedLinear.stack: expected a non-empty sequence of Linear layers (a list or "
                f"tuple), got {got or type(layers).__name__}"
            )
        if not layers:
            raise TypeError(
                "BatchedLinear.stack: expected a non-empty sequence of Linear layers, got an "
                f"empty {type(layers).__name__}"
            )
        for index, layer in enumerate(layers):
            if not isinstance(layer, Linear):
                raise TypeError(
                    "BatchedLinear.stack: expected a non-empty sequence of Linear layers, got "
                    f"{type(layer).__name__} at layers[{index}]"
                )
        for index, layer in enumerate(layers):
            check_stackable(f"BatchedLinear.stack: layers[{index}]", layer)
        shapes = {
            (layer.in_features, layer.out_features, layer.bias is not None) for layer in layers
        }
        placements = {
            (tensor.dtype, tensor.device)
            for layer in layers
            for tensor in (layer.weight.data, *((layer.bias.data,) if layer.bias else ()))
        }
        if len(shapes) != 1 or len(placements) != 1:
            raise ValueError(
                "BatchedLinear.stack: every layer must have the same shape, bias, dtype and "
                f"device, got {sorted(map(str, shapes))} and {sorted(map(str, placements))}"
            )
        stacked = cls.__new__(cls)
        stacked._adopt(layers)
        return stacked

    def _adopt(self, layers: Sequence[Linear]) -> None:
        """Initialise from copies of the parameters of ``layers`` (the callers ensure their shapes match)."""
        biases = [layer.bias.data for layer in layers if layer.bias is not None]
        self._adopt_tensors(
            torch.stack([layer.weight.data for layer in layers]),
            torch.stack(biases) if biases else None,
            layers[0].in_features,
            layers[0].out_features,
        )

    def _adopt_tensors(
        self, weight: Tensor, bias: Tensor | None, in_features: int, out_features: int
    ) -> None:
        """Initialise with ``weight`` ``(R, out, in)`` and ``bias`` ``(R, out)`` (or ``None``) as
        the parameters' values."""
        Module.__init__(self)
        self.models = weight.shape[0]
        self.in_features = in_features
        self.out_features = out_features
        self.weight = self.register_parameter("weight", Parameter(weight))
        self.bias = self.register_parameter("bias", Parameter(bias)) if bias is not None else None
        self._input: Tensor | None = None
        # An input or gradient given in the memory of weight.grad or bias.grad is copied before
        # the accumulation overwrites it (see minidl.nn._gradient_memory).
        self._gradients = GradientMemory()
        # The last accepted call: (weight, bias, input shape, dtype, device), so that a call
        # like the previous one is checked with a few identity and equality tests.
        self._seen: tuple[object, ...] = (None, None, None, None, None)
        self._weight_t = self.weight.data.transpose(1, 2)
        self._bias_row: Tensor | None = None
        # Whether forward and backward compute a single model's products as the first of a
        # pair (see the class docstring): set with the views above.
        self._pair_forward = False
        self._pair_backward = False
        self._output_shape = torch.Size()
        # The temporary of the weight gradient's batched product, where it is used (see _accept).
        self._product: Tensor | None = None
        # The gradient tensor that it was chosen for, the temporary itself (made once for it),
        # and (output shape, choice) for the last few input shapes accepted with these
        # parameter tensors (see Recent): the choice, a list of one item, says whether the
        # temporary is used, or holds None until the first backward at that shape decides.
        self._grad_seen: Tensor | None = None
        self._temporary: Tensor | None = None
        self._shapes: Recent[tuple[torch.Size, list[bool | None]]] = Recent()
        self._choice: list[bool | None] = [False]  # (the last accepted shape's)

    def unstack(self) -> list[Linear]:
        """R :class:`Linear` layers holding copies of each model's parameters."""
        return [self.model(index) for index in range(self.models)]

    def model(self, index: int) -> Linear:
        """A :class:`Linear` layer holding a copy of model ``index``'s parameters (no random
        number is drawn from torch's generator for it); ``index`` may be negative, as in a list."""
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"BatchedLinear.model: expected an integer index, got {shown(index)}")
        if not -self.models <= index < self.models:
            raise IndexError(
                f"BatchedLinear.model: index {shown(index)} is out of range for {self.models} models"
            )
        weight = self.weight.data[index]
        layer = Linear(
            self.in_features,
            self.out_features,
            self.bias is not None,
            dtype=weight.dtype,
            device=weight.device,
            # (its draws are overwritten; a meta tensor draws nothing)
            generator=torch.Generator(device=weight.device)
            if weight.device.type != "meta"
            else None,
        )
        layer.weight.data.copy_(weight)
        if layer.bias is not None and self.bias is not None:
            layer.bias.data.copy_(self.bias.data[index])
        return layer

    def _accept(self, input: object) -> Tensor:
        """Full checks of an input unlike the last accepted one; remember it if it passes.

        Also (re)makes the views of the parameters that every call uses, when the parameter
        tensors were replaced (``Module.to``, flattening).
        """
        expected = (self.models, self.in_features)
        if not isinstance(input, Tensor) or input.dtype not in COMPUTED:
            got = input.dtype if isinstance(input, Tensor) else type(input).__name__
            raise TypeError(
                f"BatchedLinear: expected a {FLOATING.format(what='tensor input')}, got {got}"
            )
        check_dense("BatchedLinear", input)
        if input.dim() != 3 or (input.shape[0], input.shape[2]) != expected or input.shape[1] == 0:
            raise ValueError(
                f"BatchedLinear: expected an input of shape ({self.models}, N, "
                f"{self.in_features}) with N >= 1, got {tuple(input.shape)}"
            )
        check_parameter_attributes("BatchedLinear", self, "weight, bias")
        weight = self.weight.data
        bias = self.bias.data if self.bias is not None else None
        grad = self.weight.grad
        if weight is not self._seen[0] or bias is not self._seen[1] or grad is not self._grad_seen:
            self._check_layer_parameters(weight, bias)
            self._weight_t = weight.transpose(1, 2)
            single = self.models == 1 and weight.device.type == "cpu"
            self._pair_forward = single and self.out_features == 1
            self._pair_backward = single and self.in_features == 1
            self._bias_row = bias.unsqueeze(1) if bias is not None else None
            self._grad_seen = grad
            self._shapes.clear()
            self._temporary = None
        check_like_parameter("BatchedLinear", input, weight)
        # The output shape, and whether the weight gradient is computed as one batched product
        # into a contiguous temporary rather than one product per model (see the class
        # docstring): a candidate is decided by the first backward at this shape, so that an
        # evaluation at another batch size costs no check.
        self._output_shape, self._choice = self._shapes.get_or_make(
            input.shape,
            lambda: (
                torch.Size((self.models, input.shape[1], self.out_features)),
                _candidate(grad),
            ),
        )
        self._product = self._made_temporary() if self._choice[0] else None
        self._seen = (weight, bias, input.shape, input.dtype, input.device)
        return input

    def _made_temporary(self) -> Tensor:
        """The temporary of the batched weight-gradient product, made on first use: one for
        every batch shape (it has the gradient's). A normal tensor, written in and out of
        inference mode."""
        if self._temporary is None:
            grad = self.weight.grad
            with torch.inference_mode(False):
                self._temporary = torch.empty(grad.shape, dtype=grad.dtype, device=grad.device)
        return self._temporary

    def _decide(self, batch: int) -> Tensor | None:
        """Decide, at the first backward at a batch shape, whether a candidate layout uses the
        batched product (:func:`_batched_gradient_is_exact`, once per layout and batch size)."""
        grad = self._grad_seen
        exact = grad is not None and _batched_gradient_is_exact(grad, batch)
        self._choice[0] = exact
        self._product = self._made_temporary() if exact else None
        return self._product

    def forward(self, input: Tensor) -> Tensor:
        seen = self._seen
        bias = self.bias
        try:
            weight = self.weight.data
        except AttributeError:  # (a number assigned to weight: named)
            check_parameter_attributes("BatchedLinear", self, "weight")
            raise
        if (
            weight is not seen[0]
            or (bias.data if bias is not None else None) is not seen[1]
            or type(input) is not Tensor
            or input.is_nested  # (whose shape is not read)
            or input.shape != seen[2]
            or input.dtype is not seen[3]
            or input.device != seen[4]
            or input.layout is not STRIDED
        ):
            input = self._accept(input)
        if self._gradients.holds(input, self):  # (as Linear's: see its forward)
            input = input.clone()
        self._input = input
        weight_t, bias_row = self._weight_t, self._bias_row
        if self._pair_forward:  # (one model, one output: see the class docstring)
            input, weight_t = input.expand(2, -1, -1), weight_t.expand(2, -1, -1)
            bias_row = None if bias_row is None else bias_row.expand(2, -1, -1)
        if bias_row is None:
            output = torch.bmm(input, weight_t)
        else:
            # b_r + X_r W_r^T for every r as one fused op, each bias (R, 1, out) broadcast over
            # rows.
            output = torch.baddbmm(bias_row, input, weight_t)
        return output[:1] if self._pair_forward else output

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._gradients.holds(grad_output, self):
            # (G_r W_r below would read G after the accumulation wrote over it)
            grad_output = grad_output.clone()
        self.backward_parameters(grad_output)
        if self._pair_backward:  # (one model, one input: see the class docstring)
            pair = torch.bmm(grad_output.expand(2, -1, -1), self.weight.data.expand(2, -1, -1))
            return pair[:1]
        return torch.bmm(grad_output, self.weight.data)  # G_r W_r for every r

    def backward_parameters(self, grad_output: Tensor) -> None:
        """Accumulate the weight and bias gradients only (no :math:`G_r W_r` products)."""
        input = self._input
        if input is None:
            input = check_cached("BatchedLinear", input)
        seen = self._seen
        try:
            if (
                self.weight.data is not seen[0]
                or (None if self.bias is None else self.bias.data) is not seen[1]
            ):
                self._check_fits_forward()
        except AttributeError:  # (a number set by hand as weight or bias: named)
            check_parameter_attributes("BatchedLinear", self, "weight, bias")
            raise
        if (
            type(grad_output) is not Tensor
            or grad_output.is_nested
            or grad_output.shape != self._output_shape
            or grad_output.dtype is not seen[3]
            or grad_output.layout is not STRIDED
            or grad_output.device != seen[4]
        ):
            check_grad_output("BatchedLinear", grad_output, self._output_shape, self.weight.data)
        # Detached: an operand from an autograd graph is read as a plain value, rather than
        # recorded into the gradients for good by the in-place updates.
        grad_output = grad_output.detach()
        gradients = self._gradients
        if gradients.holds(grad_output, self):
            grad_output = grad_output.clone()
        if gradients.holds(input, self):
            input = input.clone()
        grad = self.weight.grad
        if grad is not self._grad_seen:
            # A gradient set by hand since the forward (the weight kept): the choices made for
            # the old one's layout do not hold for it.
            self._grad_seen = grad
            self._shapes.clear()
            self._choice = self._shapes.put(input.shape, (self._output_shape, _candidate(grad)))[1]
            self._product = None
        product = self._product
        if self._choice[0] is None:
            product = self._decide(input.shape[1])
        try:
            # dL/dW_r += G_r^T X_r for every r: accumulated by the batched product itself, or
            # computed into the temporary and added (see the class docstring).
            if product is None:
                self.weight.grad.baddbmm_(grad_output.transpose(1, 2), input.detach())
            else:
                torch.bmm(grad_output.transpose(1, 2), input.detach(), out=product)
                self.weight.grad.add_(product)
        except RuntimeError:  # (nothing is accumulated yet)
            check_still_fits("BatchedLinear", input, self.weight.data)
            raise
        if self.bias is not None:
            # dL/db_r += sum_n G_r[n, :], a sum over the batch (cheaper here than a batched
            # product with ones).
            self.bias.grad.add_(grad_output.sum(dim=1))

    def _check_fits_forward(self, parameters_only: bool = False) -> None:
        """Refuse parameters put in place, cast or moved since the last forward that no longer
        fit it, before anything is written: another dtype or device than the cached input's (a
        cast or a move: the temporary product, which would take the old dtype, is not added
        in), one of another shape, a bias unlike the weight, or a tensor set by hand as the
        weight or bias (its ``grad``, None, would fail after the other gradient changed)."""
        try:
            weight = self.weight.data
            bias = None if self.bias is None else self.bias.data
        except AttributeError:  # (a number set by hand as weight or bias: named)
            check_parameter_attributes("BatchedLinear", self, "weight, bias")
            raise
        input = self._input
        if input is None or (weight is self._seen[0] and bias is self._seen[1]):
            return
        check_parameter_attributes("BatchedLinear", self, "weight, bias")
        check_still_fits("BatchedLinear", input, weight)
        self._check_layer_parameters(weight, bias)

    def _check_layer_parameters(self, weight: Tensor, bias: Tensor | None) -> None:
        """The weight ``(R, out, in)`` and bias ``(R, out)`` fit the layer (see
        :func:`~minidl.nn._checks.check_layer_parameters`)."""
        check_layer_parameters(
            "BatchedLinear",
            weight,
            bias,
            (self.models, self.out_features, self.in_features),
            "models, out_features, in_features",
        )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        # Views of the parameters, not pickled: the next forward makes them again.
        state.update(
            _seen=(None,) * 5,
            _weight_t=None,
            _bias_row=None,
            _product=None,
            _grad_seen=None,
            _temporary=None,
            _choice=[False],
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_product", None)  # (pickled before they existed)
        state.setdefault("_gradients", GradientMemory())
        state.setdefault("_grad_seen", None)
        state.setdefault("_temporary", None)
        state.setdefault("_choice", [False])
        state.setdefault("_pair_forward", False)
        state.setdefault("_pair_backward", False)
        state.setdefault("_shapes", Recent())
        super().__setstate__(state)

    def extra_repr(self) -> str:
        return (
            f"models={self.models}, in_features={self.in_features}, "
            f"out_features={self.out_features}, bias={self.bias is not None}"
        )


def check_stackable(where: str, layer: Linear) -> None:
    """Refuse, in the words of ``where``, a layer whose weight or bias was set by hand (which
    the layer itself refuses at its forward) or whose parameter tensors have other shapes than
    its sizes (which torch.stack refused in its own words)."""
    check_parameter_attributes(where, layer, "weight, bias")
    check_layer_parameters(
        where,
        layer.weight.data,
        None if layer.bias is None else layer.bias.data,
        (layer.out_features, layer.in_features),
        Linear._NAMES,
    )
