"""The training step of :func:`minidl.train.fit` for a chain of layers, with the biases folded.

A :class:`~minidl.nn.Sequential` of :class:`~minidl.nn.Linear` layers and built-in activations
computes batch-major, as PyTorch's layers do: a layer's input is ``(N, in)`` and its output
``X W^T + b`` one ``addmm``, and backward adds ``G^T X`` to the weight gradient and ``G^T 1``
to the bias gradient, two operations. At the paper's size a step costs what its operations
cost, not their arithmetic. :class:`FoldedStep` trains such a chain features by batch (the
paper's layout: a sample per column, ``y = W x + b`` and ``dL/dW = dL/dy X^T``), with each
bias folded into its layer's matrix:

- every layer's input is a buffer ``A`` of ``(in + 1, N)`` whose last row is ones, and its
  parameters a block ``[W | b]`` of ``(out, in + 1)``; its output is then one product
  ``[W | b] A`` (``(out, N)``), written into the rows of the next layer's input buffer (an
  activation between the two works there in place: see
  :attr:`~minidl.nn.Activation._in_place`);
- backward, with the gradient ``G`` now ``(out, N)``, ``[dW | db] = G A^T`` is one product
  (its last column ``G 1``, the bias gradient: A's row of ones sums over the batch; the
  gradient written, not accumulated: the step starts from zero gradients) and the input
  gradient ``W^T G`` another;
- the activations and the loss are the modules' own operations (element-wise: any layout
  will do). A cross-entropy of class indices takes the last module's ``(C, N)`` output as
  it is (:meth:`~minidl.nn.CrossEntropyLoss._forward_columns`: its softmax down each
  column, its gradient ``(C, N)`` into the last module's backward; PyTorch's CPU softmax
  over a last dimension of fewer classes than a vector of the machine holds works one row
  at a time, 3.3 us for the paper's 100 x 2 in float32 where the columns take 1.2). For the
  other losses the last layer's ``(C, N)`` product is copied into a prediction ``(N, C)``,
  so that the loss takes it contiguous, as from the model (an activation last gives the
  transposed view of its result): computed batch-major instead, ``A^T [W | b]^T`` straight
  into ``(N, C)``, that product took MKL 258 us for ``A`` of 65x1024 and 2 outputs, where
  the product and the copy take 9 us;
- the blocks, their gradients and the optimizer's state in that layout are flat buffers, so
  that the optimizer's own update (``Optimizer._step_buffers``) is one call.

A step issues as many operations as the model's ``forward``, the loss and
``backward_parameters`` with the optimizer's ``zero_grad`` and ``step`` (30 for the paper's
network, where the loop issues 34; one more, the copy of the prediction, for losses other
than a cross-entropy of class indices), cheaper ones (a product without a bias to copy, none
to add up apart), and none of the checks: on the paper's network it took about a fifth less
time (141 against 180 us, alternating in one process), and taking the cross-entropy's
columns as they are a twentieth less again (87 against 92 us a step of ``fit``). It computes
the same function with other roundings: the products sum in another order (the bias inside
the sum), the cross-entropy's softmax of columns may take a vector's ``exp`` and ``log`` where
the loop's of rows takes a scalar's, so a trained parameter agrees with the step-by-step
loop's to about 1e-12 in float64 after a few epochs (``tests/test_folded.py``), in float32 to
its last digits at first and less as training goes on; an optimizer that divides by a
gradient's own size (Adam, AdamW, RMSprop, Adagrad) makes a gradient that cancels to 0 on one
path and to a rounding on the other (L1's sums of signs) lr / eps times larger. :meth:`FoldedStep.load` copies the model's
parameters and the optimizer's state into the blocks, :meth:`FoldedStep.store` copies the
blocks, their gradients and the state back; between the two the model's parameters are stale.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from minidl import anomaly
from minidl.nn.activation_base import Activation
from minidl.nn.bce_with_logits import BCEWithLogitsLoss
from minidl.nn.chain import ChainPlan, runs_in_place
from minidl.nn.clip import _clip_norm
from minidl.nn.cross_entropy import CrossEntropyLoss
from minidl.nn.huber import HuberLoss
from minidl.nn.l1 import L1Loss
from minidl.nn.linear import Linear
from minidl.nn.loss import Loss
from minidl.nn.module import Module
from minidl.nn.mse import MSELoss
from minidl.nn.nll import NLLLoss
from minidl.nn.parameter import Parameter
from minidl.nn.sequential import Sequential
from minidl.optim.adadelta import Adadelta
from minidl.optim.adagrad import Adagrad
from minidl.optim.adam import Adam
from minidl.optim.optimizer import Optimizer
from minidl.optim.rmsprop import RMSprop
from minidl.optim.sgd import SGD

__all__ = ["FoldedStep"]

#: The losses a folded step calls (their forward and _gradient, which __call__ and backward
#: call): those of predictions ``(N, C)``.
_LOSSES = (BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, MSELoss, NLLLoss)


class _Trial(NamedTuple):
    """The data of fit's last trial forward (see :meth:`FoldedStep.note_probed`): weak
    references to ``x`` and ``y``, their version counters (``None`` for inference tensors),
    ``x``'s shape and a copy of ``y[:1]``."""

    x: weakref.ref[Tensor]
    x_version: int | None
    x_shape: torch.Size
    y: weakref.ref[Tensor]
    y_version: int | None
    y_first: Tensor


#: From this many input features on, a batch is copied into the first layer's input as
#: ``rows.copy_(x.t())`` rather than through a transposed view made once (``samples.copy_(x)``):
#: ATen's copy into a transposed destination is the faster below it (3.2 against 6.6 us for
#: 100x2, 145 against 161 us for 1024x128) and the slower from it (547 against 321 us for
#: 1024x256, 2.2 against 1.0 ms for 1024x512; one thread, the AVX2 EPYC).
WIDE_INPUT = 256

#: The dtypes a folded step trains in (16-bit activations compute in float32 and copy).
_DTYPES = (torch.float32, torch.float64)


class _LastLayer(NamedTuple):
    """The operands of the last layer's backward (see :class:`_Batch`): its input ``A``
    ``(in + 1, N)``, its gradient block ``[dW | db]`` and weight ``W``, each with its transposed
    view, and the buffer of its input gradient (``(in, N)``)."""

    inputs: Tensor
    inputs_t: Tensor
    grad_block: Tensor
    grad_block_t: Tensor
    weight: Tensor
    weight_t: Tensor
    input_grad: Tensor | None  # (None for a layer that is the first too: not needed)
    input_grad_t: Tensor | None


class _Batch:
    """The buffers of one batch size ``N`` and the operations of a step on them.

    Each layer's input is ``(in + 1, N)``, its last row ones; a module followed by a layer
    writes its output into that layer's rows above the ones. The last module's output, the
    prediction, is ``(N, C)`` as the loss takes it: the last layer's product is computed
    features by batch as the others (``[W | b] A``, into a ``(C, N)`` buffer) and copied into
    the prediction (computed batch-major, ``A^T [W | b]^T`` straight into ``(N, C)``, MKL took
    258 us for ``A`` of 65x1024 and 2 outputs where this takes 9 us, and 2.6 against 2.4 us at
    the paper's size), and an activation last gives the transposed view of its ``(C, N)``
    result; a cross-entropy of class indices reads the last module's ``(C, N)`` output
    instead (``columns``), into one of the two ``log_probabilities`` (the one the loss does not
    hold: a batch refused or interrupted part-way leaves the loss the last good forward's) and
    its gradient into ``logit_grads``, of that shape too. ``grads[i]`` holds the gradient with
    respect to module ``i``'s input.

    Since every operand is one of these buffers, the forward and the backward are sequences
    of operations that take no arguments (``functools.partial`` of a ``torch`` function: a
    layer's products, an activation's own :meth:`~minidl.nn.Activation._operations`), run one
    after the other with no Python frame of their own, where a loop over the modules unpacked
    each module's operands and called its methods (on the paper's network, B's step of
    ``make bench`` went from 317 to 298 us on the AVX2 EPYC). An activation without such a
    form (one that caches a derivative of its own) runs through its ``_forward`` and
    ``_backward`` (:func:`_forward`, :func:`_backward`), as does an activation last, whose
    backward takes the loss's gradient (a new tensor at every step, but for a cross-entropy of
    class indices); so does the last layer's backward where the loss's gradient is such a
    tensor.
    """

    def __init__(self, step: FoldedStep, size: int) -> None:
        modules, like = step.modules, step.values

        def new(*shape: int) -> Tensor:
            return torch.empty(shape, dtype=like.dtype, device=like.device)

        last = len(modules) - 1
        inputs: dict[int, Tensor] = {}
        for index, module in enumerate(modules):
            if isinstance(module, Linear):
                inputs[index] = new(module.in_features + 1, size)
                inputs[index][-1] = 1
        # (the first layer's input rows (in, N), and transposed, (N, in), as the batch comes:
        # see WIDE_INPUT)
        self.rows = inputs[0][:-1]
        self.samples = self.rows.t() if self.rows.shape[0] < WIDE_INPUT else None
        self.last_is_layer = isinstance(modules[last], Linear)
        slots: list[Tensor | None] = []  # (each module's output)
        rows = 0
        for index, module in enumerate(modules):
            rows = module.out_features if isinstance(module, Linear) else rows
            if index + 1 in inputs:
                slots.append(inputs[index + 1][:-1])
            elif isinstance(module, Linear) and index < last and runs_in_place(modules[index + 1]):
                slots.append(None)  # (the activation's output, below)
            else:
                slots.append(new(rows, size))
        # A layer followed by an activation that runs in place (see Activation._in_place)
        # writes its product into the activation's output, where the activation then works.
        for index in range(last - 1, -1, -1):
            if slots[index] is None:
                slots[index] = slots[index + 1]
        outputs = [tensor for tensor in slots if tensor is not None]
        # (the last layer's (C, N) product, copied into the prediction after the forward)
        self.product: Tensor | None = outputs[last].t() if self.last_is_layer else None
        self.prediction = new(size, rows) if self.last_is_layer else outputs[last].t()
        grads: list[Tensor] = [outputs[0]]  # (none for the first layer: a placeholder)
        grads += [new(outputs[index - 1].shape[0], size) for index in range(1, last + 1)]
        self.grads = grads
        # A cross-entropy of class indices takes the last module's (C, N) output as it is (see
        # CrossEntropyLoss._forward_columns), its log-probabilities and gradient (C, N) too.
        self.columns: Tensor | None = None
        if type(step.criterion) is CrossEntropyLoss:
            self.columns = outputs[last]
            self.log_probabilities = (new(rows, size), new(rows, size))
            self.logit_grads = new(rows, size)
        # The loss's _prediction_shape once it accepted this batch's prediction: while it
        # holds that object, the prediction (this buffer, of a signature that never changes)
        # is one it accepts, and its check is skipped (see Loss._forward_accepted).
        self.accepted: tuple[int, ...] | None = None
        # The gradient with respect to each module's output but the last's: the next one's
        # input gradient.
        grad_outputs = grads[1:]
        caches = step._caches  # (what the activations without operations of their own cache)
        forward: list[Callable[[], object]] = []
        backward: dict[int, tuple[Callable[[], object], ...]] = {}
        for index, module in enumerate(modules):
            if isinstance(module, Linear):
                block = step.blocks[step.layer_of[index]]
                forward.append(
                    functools.partial(torch.mm, block, inputs[index], out=outputs[index])
                )
                continue
            assert isinstance(module, Activation)
            operand, output = outputs[index - 1], outputs[index]
            own = (
                module._operations(operand, output, grad_outputs[index], grads[index])
                if index < last
                else None
            )
            if own is None:
                own = (
                    (functools.partial(_forward, module, operand, output, caches, index),),
                    (
                        functools.partial(
                            _backward, module, grad_outputs[index], grads[index], caches, index
                        ),
                    )
                    if index < last
                    else (),
                )
            forward += own[0]
            backward[index] = own[1]
        # The forward, every module's.
        self.forward = tuple(forward)
        # The last module's backward, called by the step with the loss's gradient: a layer's
        # [dW | db] = G A^T (batch-major, A G into the transposed view of the gradient block,
        # for a gradient (N, C)), then W^T G (G W), into grads[last]; an activation's
        # _backward, into grads[last].
        self.last_activation = None if self.last_is_layer else modules[last]
        self.last_layer: _LastLayer | None = None
        if self.last_is_layer:
            layer = step.layer_of[last]
            block, weight = step.grad_blocks[layer], step.blocks[layer][:, :-1]
            input_grad = grads[last] if last else None
            self.last_layer = _LastLayer(
                inputs[last],
                inputs[last].t(),
                block,
                block.t(),
                weight,
                weight.t(),
                input_grad,
                None if input_grad is None else input_grad.t(),
            )
        # The backward of the modules before the last, last first, and for each operation the
        # last module whose gradient block is not written until it has run: where it raises,
        # the step zeroes the blocks up to that module's (_zero_from), which it has not written
        # (a layer's block product: that layer; its input gradient's: the module before it).
        steps: list[Callable[[], object]] = []
        of: list[int] = []
        for index in range(last - 1, -1, -1):
            if isinstance(modules[index], Linear):
                layer = step.layer_of[index]
                gradient = grad_outputs[index]
                taken: list[Callable[[], object]] = [
                    functools.partial(
                        torch.mm, gradient, inputs[index].t(), out=step.grad_blocks[layer]
                    )
                ]
                of.append(index)
                if index:  # (the first layer's input gradient is not needed)
                    weights_t = step.blocks[layer][:, :-1].t()
                    taken.append(functools.partial(torch.mm, weights_t, gradient, out=grads[index]))
                    of.append(index - 1)
            else:
                taken = list(backward[index])
                of += [index] * len(taken)
            steps += taken
        self.backward = tuple(steps)
        # (a step through the last module's backward first, as two stages: the loss's gradient
        # and the last layer's block product, or the activation's backward; then the layer's
        # input gradient: see FoldedStep.__call__)
        self.backward_of = (last, last - 1, *of)
        # With a cross-entropy of class indices and a layer last, the last layer's products
        # read the loss's gradient buffer too: that backward as operations, the layer's first.
        self.columns_backward: tuple[Callable[[], object], ...] | None = None
        self.columns_backward_of = self.backward_of
        if self.columns is not None and self.last_layer is not None:
            head: list[Callable[[], object]] = [
                functools.partial(
                    torch.mm, self.logit_grads, self.last_layer.inputs_t,
                    out=self.last_layer.grad_block,
                )
            ]  # fmt: skip
            if self.last_layer.input_grad is not None:
                head.append(
                    functools.partial(
                        torch.mm, self.last_layer.weight_t, self.logit_grads,
                        out=self.last_layer.input_grad,
                    )
                )  # fmt: skip
            self.columns_backward = (*head, *steps)
            self.columns_backward_of = (last, last - 1)[: len(head)] + tuple(of)


def _forward(
    module: Activation, input: Tensor, output: Tensor, caches: list[Tensor | None], index: int
) -> None:
    """An activation's ``_forward`` into ``output``, its cache kept in ``caches[index]``."""
    caches[index] = module._forward(input, output)[1]  # type: ignore[call-arg]


def _backward(
    module: Activation,
    grad_output: Tensor,
    grad_input: Tensor,
    caches: list[Tensor | None],
    index: int,
) -> None:
    """An activation's ``_backward`` from ``grad_output`` into ``grad_input``, with the cache
    of its forward."""
    module._backward(grad_output, caches[index], grad_input)  # type: ignore[arg-type, call-arg]


class FoldedStep:
    """One training step of ``model`` under ``criterion`` and ``optimizer``, folded (see the
    module's docstring); made by :meth:`build`, which says whether the three allow it."""

    def __init__(
        self, model: Sequential, criterion: Loss, optimizer: Optimizer, like: Tensor
    ) -> None:
        # Not the model: the step is kept for it in _STEPS, weakly, and must not hold it. The
        # loss and the optimizer weakly: a program may drop them and keep the model (to predict
        # with it), and the step, of no use without them, is then dropped with its buffers.
        forget = _forgetting(weakref.ref(model))
        self._criterion = weakref.ref(criterion, forget)
        self._optimizer = weakref.ref(optimizer, forget)
        self.modules: tuple[Module, ...] = tuple(model)
        self.layers = [module for module in self.modules if isinstance(module, Linear)]
        self.layer_of = {
            index: self.layers.index(module)
            for index, module in enumerate(self.modules)
            if isinstance(module, Linear)
        }
        shapes = [(layer.out_features, layer.in_features + 1) for layer in self.layers]
        sizes = [rows * columns for rows, columns in shapes]
        with torch.inference_mode(False):
            self.values = torch.empty(sum(sizes), dtype=like.dtype, device=like.device)
            self.grads = torch.zeros(sum(sizes), dtype=like.dtype, device=like.device)
            self.state = tuple(torch.zeros_like(self.values) for _ in optimizer.state)
        self.blocks = _blocks(self.values, shapes)
        self.grad_blocks = _blocks(self.grads, shapes)
        self._caches: list[Tensor | None] = [None] * len(self.modules)
        self._batches: dict[int, _Batch] = {}
        #: The largest total 2-norm of the gradients of a step (fit's max_grad_norm, set for
        #: each call), or None: the gradient buffer is scaled down to it before the update.
        self.max_grad_norm: float | None = None
        self._probed: _Trial | None = None  # (see note_probed)
        self._parameters = tuple(optimizer.params)
        # The tensors the parameters hold, and Parameter.replacements when they were last found
        # held still (see _tensors_held).
        self._tensors = tuple(p.data for p in self._parameters) + tuple(
            p.grad for p in self._parameters
        )
        self._replacements = Parameter.replacements
        # (their storages' address ranges, fixed while they are held: see _apart)
        self._memory = _memory(self._tensors)
        # The place of each block entry in the optimizer's flat buffers, which tile its
        # parameters in order (as do its state tensors): load and store are one index_select
        # per buffer, not a copy per parameter.
        places = torch.arange(sum(p.data.numel() for p in self._parameters))
        offsets = dict(zip(self._parameters, _offsets(self._parameters), strict=True))
        with torch.inference_mode(False):
            self._index = torch.empty(sum(sizes), dtype=torch.int64, device=like.device)
            # and the place of each parameter entry in the blocks: the index's inverse (the
            # blocks hold every parameter once), so that store is an index_select too.
            self._inverse = torch.empty_like(self._index)
        for layer, block in zip(self.layers, _blocks(self._index, shapes), strict=True):
            weight, bias = _split(block)
            start = offsets[layer.weight]
            weight.copy_(places[start : start + weight.numel()].view(weight.shape))
            start = offsets[layer.bias]  # type: ignore[index]
            bias.copy_(places[start : start + bias.numel()])
        self._inverse[self._index] = torch.arange(len(self._index), device=like.device)

    @staticmethod
    def build(
        model: Module, criterion: Loss, optimizer: Optimizer, x: Tensor, y: Tensor
    ) -> FoldedStep | None:
        """A folded step for training ``model`` on ``(x, y)``, or ``None`` where the step-by-step
        loop must run: a model that is not exactly a :class:`~minidl.nn.Sequential` starting
        with a :class:`~minidl.nn.Linear`, of layers with biases and built-in activations (as a
        :class:`~minidl.nn.chain.ChainPlan` takes them, no method set on one, no parameter
        shared by two layers); a loss other than the built-in ones of predictions ``(N, C)``
        (:data:`_LOSSES`); an optimizer that does not update exactly the model's parameters, as
        flat buffers, with state tensors of their shape and dtype; a method that fit calls set
        on one of the three or replaced on its class (see :data:`_MODEL_METHODS`); data that is
        not a plain CPU float32 or float64 tensor, or that shares memory with the parameters,
        their gradients or the optimizer's state (see :func:`_apart`); or
        :func:`minidl.detect_anomaly` enabled."""
        if type(model) is not Sequential or type(criterion) not in _LOSSES:
            return None
        if not _plain(x, y):
            return None
        step = FoldedStep.kept(model, criterion, optimizer, x, y)
        if step is not None:
            return step
        if anomaly.enabled or _methods_replaced(model, criterion, optimizer):
            return None
        modules = tuple(model)
        if (
            not modules
            or type(modules[0]) is not Linear
            or not ChainPlan.possible(modules)
            or any(isinstance(m, Linear) and m.bias is None for m in modules)
        ):
            return None
        parameters = list(model.parameters())
        layers = sum(isinstance(module, Linear) for module in modules)
        if len(parameters) != 2 * layers or not _same(parameters, optimizer.params):
            return None  # (a parameter shared by two layers: its gradient is their sum)
        if not _apart(x, y, _memory(t for p in parameters for t in (p.data, p.grad))):
            return None
        if not _apart(x, y, _memory(optimizer.state.values())):
            return None
        first = parameters[0].data
        if any(p.data.dtype is not x.dtype or not p.data.is_cpu for p in parameters):
            return None
        if not _flat(optimizer):
            return None
        step = _STEPS[model] = FoldedStep(model, criterion, optimizer, first)
        return step

    @staticmethod
    def kept(
        model: Module, criterion: Loss, optimizer: Optimizer, x: Tensor, y: Tensor
    ) -> FoldedStep | None:
        """The step that :meth:`build` made for ``model`` in an earlier call, if it still fits
        (the same loss and optimizer, data that :meth:`build` takes, of the step's dtype, and
        :meth:`usable`): a model trained by repeated calls, an epoch or a few at a time, makes
        its buffers once. Nothing is built or changed."""
        step = _STEPS.get(model) if type(model) is Sequential else None
        if (
            step is not None
            and step.criterion is criterion
            and step.optimizer is optimizer
            and _plain(x, y)
            and step.values.dtype is x.dtype
            and step.usable(model)  # type: ignore[arg-type]
            and _apart(x, y, step._memory)
            # (the state's, which may have been replaced since the step was built)
            and _apart(x, y, _memory(optimizer.state.values()))
        ):
            return step
        return None

    @property
    def criterion(self) -> Loss | None:
        """The loss the step was built for (``None`` once it is gone)."""
        return self._criterion()

    @property
    def optimizer(self) -> Optimizer | None:
        """The optimizer the step was built for (``None`` once it is gone)."""
        return self._optimizer()

    @property
    def classes(self) -> int:
        """The width of the model's outputs: its last layer's ``out_features``."""
        return self.layers[-1].out_features

    def probed(self, x: Tensor, y: Tensor) -> bool:
        """Whether ``x`` and ``y`` are the tensors on which :func:`~minidl.train.fit` last ran
        its trial forward for this step (see :meth:`note_probed`), unchanged since where that
        trial looks: neither changed in place by their version counters (an inference tensor
        keeps none, so it is never taken for the same), ``x`` of the same shape and ``y[:1]``
        of the same dtype, shape and values. The counters miss what is written through
        ``.data``, through a NumPy array sharing the memory or by assigning ``.data``, hence
        the last two: the model's and the loss's checks of them would pass again."""
        seen = self._probed
        return (
            seen is not None
            and seen.x() is x
            and seen.y() is y
            and seen.x_version is not None
            and seen.y_version is not None
            and seen.x_version == _version(x)
            and seen.y_version == _version(y)
            and seen.x_shape == x.shape
            and seen.y_first.dtype is y.dtype
            and torch.equal(seen.y_first, y[:1])
        )

    def note_probed(self, x: Tensor, y: Tensor) -> None:
        """Note that the model's and the loss's checks passed on ``x`` and ``y`` (held weakly:
        the step keeps no data alive, but a copy of the first target, which the loss checked)."""
        self._probed = _Trial(
            weakref.ref(x),
            _version(x),
            x.shape,
            weakref.ref(y),
            _version(y),
            y[:1].detach().clone(),
        )

    def usable(self, model: Sequential) -> bool:
        """Whether ``model`` still holds the modules and parameters it held when the step was
        built (code run between epochs may change them), as flat buffers of the optimizer's."""
        criterion, optimizer = self._criterion(), self._optimizer()
        return (
            criterion is not None
            and optimizer is not None
            and not anomaly.enabled
            and not _methods_replaced(model, criterion, optimizer)
            and self._tensors_held()
            and tuple(model) == self.modules
            and ChainPlan.possible(self.modules)
            and _flat(optimizer)
            and _same(optimizer.params, self._parameters)
            and _same(list(model.parameters()), self._parameters)
            and len(optimizer.state) == len(self.state)
            and all(layer.bias is not None for layer in self.layers)
        )

    def _tensors_held(self) -> bool:
        """Whether the parameters still hold the value and gradient tensors they held when the
        step was built. Certain while :attr:`~minidl.nn.Parameter.replacements` has not moved
        since they were last found held; the count is the process's, though (a model built
        in another thread, or by ``on_epoch``, moves it too), so where it moved the tensors
        themselves are compared, as :class:`~minidl.optim.Optimizer` compares its own: another
        model's parameters do not make a fit go on step by step, with other roundings."""
        replacements = Parameter.replacements  # (read first: one made meanwhile moves it again)
        if replacements == self._replacements:
            return True
        tensors, count = self._tensors, len(self._parameters)
        for index, parameter in enumerate(self._parameters):
            if parameter.data is not tensors[index] or parameter.grad is not tensors[count + index]:
                return False
        self._replacements = replacements
        return True

    def load(self) -> None:
        """Copy the model's parameters, their gradients and the optimizer's state into the
        blocks (after :meth:`usable`): :meth:`store` copies all three back, so that a call
        interrupted before its first step leaves the gradients as they were, as the loop
        leaves them (not the zeros of a new step, or the last gradients of an earlier call)."""
        optimizer = self._optimizer()
        assert optimizer is not None  # (usable)
        flat = optimizer._flat_buffers()
        assert flat is not None  # (usable)
        index = self._index
        torch.index_select(flat[0], 0, index, out=self.values)
        torch.index_select(flat[1], 0, index, out=self.grads)
        # (the state tensors as they are now: code between epochs or calls may have replaced
        # one, optimizer.state[name] = ..., which the optimizer's own step then updates: taken
        # as its step takes it, one made in inference mode copied out of it)
        for mine, theirs in zip(self.state, optimizer._taken_state(), strict=True):
            torch.index_select(theirs, 0, index, out=mine)

    def store(self) -> None:
        """Copy the blocks, their gradients and the optimizer's state back to the model's
        parameters and the optimizer, and a cross-entropy's log-probabilities out of the
        step's buffers (which later steps write), as the loop leaves them: its own."""
        optimizer = self._optimizer()
        assert optimizer is not None  # (usable; fit, which calls this, holds it)
        criterion = self._criterion()
        if isinstance(criterion, CrossEntropyLoss):
            criterion._keep_columns()
        flat = optimizer._flat_buffers()
        assert flat is not None  # (usable)
        inverse = self._inverse
        torch.index_select(self.values, 0, inverse, out=flat[0])
        torch.index_select(self.grads, 0, inverse, out=flat[1])
        for mine, theirs in zip(self.state, optimizer.state.values(), strict=True):
            torch.index_select(mine, 0, inverse, out=theirs)

    def _zero_from(self, index: int) -> None:
        """Zero the gradients of the layers at module ``index`` and before it, those that a
        step interrupted in its backward has not written (``index``: the last such module, see
        :attr:`_Batch.backward_of`; the layers after it hold their gradients of the step, as
        the loop's ``backward_parameters`` leaves them, a layer interrupted in its input
        gradient's product among them)."""
        for position, layer in self.layer_of.items():
            if position <= index:
                self.grad_blocks[layer].zero_()

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Train on the batch ``(x, y)`` (``x``: ``(N, in)``); return its loss."""
        batch = self._batches.get(x.shape[0])
        if batch is None:
            if len(self._batches) >= 4:  # (an epoch has two sizes at most)
                self._batches.clear()
            with torch.inference_mode(False):
                batch = self._batches[x.shape[0]] = _Batch(self, x.shape[0])
        samples = batch.samples
        if samples is not None:
            samples.copy_(x)
        else:
            batch.rows.copy_(x.t())
        criterion = self._criterion()
        assert criterion is not None  # (fit, which calls the step, holds it)
        try:
            for operation in batch.forward:
                operation()
            # (the built-in losses' forward and _gradient: what __call__ and backward() call)
            loss: Tensor
            columns = batch.columns is not None and y.dtype is torch.int64
            if columns:
                if criterion._prediction_shape is not batch.accepted:
                    criterion._check_prediction(batch.prediction)
                    batch.accepted = criterion._prediction_shape
                pair = batch.log_probabilities
                held = criterion._log_probabilities  # type: ignore[attr-defined]
                loss = criterion._forward_columns(  # type: ignore[attr-defined]
                    batch.columns, y, pair[held is pair[0]]
                )
            else:
                if batch.product is not None:
                    batch.prediction.copy_(batch.product)
                if criterion._prediction_shape is batch.accepted:
                    loss = criterion._forward_accepted(batch.prediction, y)
                else:
                    loss = criterion.forward(batch.prediction, y)
                    batch.accepted = criterion._prediction_shape
        except BaseException:
            # (a batch's targets refused by the loss, an interrupt: the gradients are zeros, as
            # the loop's zero_grad left them before its forward)
            self.grads.zero_()
            raise
        done = 0  # (the stages of the backward that ran: see _Batch.backward_of)
        of = batch.columns_backward_of
        try:
            operations = batch.columns_backward
            if columns and operations is not None:  # (C, N): every layer's features by batch
                criterion._gradient_columns(batch.logit_grads)  # type: ignore[attr-defined]
            else:  # the last module's backward from a gradient given anew, then the operations
                of = batch.backward_of
                last = batch.last_layer
                if last is None:  # an activation last, through its _backward
                    grad = (
                        criterion._gradient_columns(batch.logit_grads)  # type: ignore[attr-defined]
                        if columns
                        else criterion._gradient().t()
                    )
                    activation, cache = batch.last_activation, self._caches[-1]
                    assert isinstance(activation, Activation) and cache is not None
                    activation._backward(grad, cache, batch.grads[-1])  # type: ignore[call-arg]
                else:  # a layer, under another loss: (N, C), [dW | db]^T = A G, then G W
                    grad = criterion._gradient()
                    torch.mm(last.inputs, grad, out=last.grad_block_t)
                    done = 1
                    if last.input_grad_t is not None:
                        torch.mm(grad, last.weight, out=last.input_grad_t)
                done, operations = 2, batch.backward
            for operation in operations:
                operation()
                done += 1
        except BaseException:
            # (an interrupt in an activation's backward, say: the blocks not yet written hold
            # the last step's gradients, where the loop's zero_grad left zeros)
            self._zero_from(of[done])
            raise
        if self.max_grad_norm is not None:
            # (the blocks' gradients are the parameters' entries in another order: one norm)
            _clip_norm("fit", [self.grads], self.max_grad_norm, 2.0, False)
        optimizer = self._optimizer()
        assert optimizer is not None  # (fit, which calls the step, holds it)
        optimizer._step_buffers(self.values, self.grads, self.state)
        return loss


#: The methods of the model, the loss and the optimizer that fit's loop calls: one set on an
#: instance, or replaced on Sequential, the loss's class or Optimizer (to trace, clip or log,
#: say), is called by the loop, so fit does not fold.
_MODEL_METHODS = ("__call__", "forward", "backward", "backward_parameters")
#: (a loss's forward calls _check_prediction and _forward_accepted, which the folded step
#: passes over: one set or replaced made it train otherwise than the loop, or refuse what
#: the loss's own hook takes)
_LOSS_METHODS = (
    "__call__",
    "forward",
    "backward",
    "_gradient",
    "_check_prediction",
    "_forward_accepted",
)
_OPTIMIZER_METHODS = ("step", "zero_grad", "_update", "_step_buffers")
_ORIGINAL: dict[type, tuple[Any, ...]] = {
    Sequential: tuple(getattr(Sequential, name) for name in _MODEL_METHODS),
    Optimizer: tuple(getattr(Optimizer, name) for name in ("step", "zero_grad")),
    **{loss: tuple(getattr(loss, name) for name in _LOSS_METHODS) for loss in _LOSSES},
}


#: The updates of minidl's optimizers (AdamW's is Adam's), which work entry by entry: the
#: folded step hands them the parameters' entries in the order of its blocks (each layer's
#: ``[W | b]``, row by row), not the flat buffer's. An ``_update`` of one's own may read an
#: entry's place (a rate per layer, scaled over the flat buffer), so fit runs step by step.
_ENTRYWISE_UPDATES = frozenset(klass._update for klass in (SGD, Adam, Adadelta, Adagrad, RMSprop))


def _methods_replaced(model: Module, criterion: Loss, optimizer: Optimizer) -> bool:
    """Whether a method that fit's loop calls was set on the model, the loss or the optimizer,
    or replaced on :class:`~minidl.nn.Sequential`, on the loss's class (or on
    :class:`~minidl.nn.Loss`, whose ``__call__`` and ``backward`` the loop calls) or on
    :class:`~minidl.optim.Optimizer` (whose subclasses must keep the base class's ``step`` and
    ``zero_grad``), or whether the optimizer's update is no built-in one
    (:data:`_ENTRYWISE_UPDATES`) or its buffers' step (``_step_buffers``) not the base
    class's."""
    for instance, names in (
        (model, _MODEL_METHODS),
        (criterion, _LOSS_METHODS),
        (optimizer, _OPTIMIZER_METHODS),
    ):
        if any(name in instance.__dict__ for name in names):
            return True
    loss = type(criterion)
    return (
        tuple(getattr(Sequential, name) for name in _MODEL_METHODS) != _ORIGINAL[Sequential]
        or (type(optimizer).step, type(optimizer).zero_grad) != _ORIGINAL[Optimizer]
        or type(optimizer)._update not in _ENTRYWISE_UPDATES
        or type(optimizer)._step_buffers is not Optimizer._step_buffers
        or tuple(getattr(loss, name) for name in _LOSS_METHODS) != _ORIGINAL.get(loss)
    )


def _flat(optimizer: Optimizer) -> bool:
    """Whether the optimizer's parameters are views of flat buffers (its
    :meth:`~minidl.optim.Optimizer._flat_buffers`) and each of its state tensors has their
    shape, dtype and device, as the optimizer made it, under the names of its ``state_names`` in
    their order (the step reads them by position). Not where finding that out raises (a
    learning rate beyond the range of a dtype the model was cast to, a state of other names
    or a state tensor replaced by one the optimizer refuses, set by ``on_epoch``, say): the
    loop runs, whose ``zero_grad`` or ``step`` raises it, as it does without the fold."""
    try:
        optimizer._check_state_held("step")  # (the names, and tensors replaced by hand)
        flat = optimizer._flat_buffers()
    except (TypeError, ValueError):
        return False
    if flat is None:
        return False
    values = flat[0]
    return all(
        isinstance(tensor, Tensor)
        and tensor.shape == values.shape
        and tensor.dtype is values.dtype
        and tensor.device == values.device
        for tensor in optimizer.state.values()
    )


def _same(parameters: Sequence[Parameter], others: Sequence[Parameter]) -> bool:
    """Whether two sequences hold the same parameter objects, in the same order."""
    return len(parameters) == len(others) and all(
        a is b for a, b in zip(parameters, others, strict=True)
    )


#: The step of each model that fit trained folded, kept while the model, its loss and its
#: optimizer live.
_STEPS: weakref.WeakKeyDictionary[Sequential, FoldedStep] = weakref.WeakKeyDictionary()


def _forgetting(model: weakref.ref[Sequential]) -> Callable[[weakref.ref[Any]], None]:
    """The callback of a step's weak references to its loss and its optimizer: once either is
    gone, the step kept for ``model`` (if it is that step) is dropped from :data:`_STEPS`.
    (It holds neither the step nor the model, which would then hold each other.)"""
    steps = _STEPS  # (not looked up as a global: it may run as the interpreter ends)

    def forget(reference: weakref.ref[Any]) -> None:
        trained = model()
        if trained is None:
            return
        step = steps.get(trained)
        if step is not None and (reference is step._criterion or reference is step._optimizer):
            steps.pop(trained, None)  # (the other's callback may have run meanwhile)

    return forget


def _blocks(flat: Tensor, shapes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """Views of ``flat``, one ``(out, in + 1)`` block per layer, in order."""
    blocks, offset = [], 0
    for rows, columns in shapes:
        blocks.append(flat[offset : offset + rows * columns].view(rows, columns))
        offset += rows * columns
    return blocks


def _plain(x: Tensor, y: Tensor) -> bool:
    """Whether ``x`` and ``y`` are data a folded step takes: plain (not subclassed), strided
    CPU tensors, ``x`` of a dtype it trains in (:data:`_DTYPES`)."""
    return x.dtype in _DTYPES and all(
        type(tensor) is Tensor and tensor.is_cpu and tensor.layout is torch.strided
        for tensor in (x, y)
    )


def _memory(tensors: Iterable[Tensor | None]) -> tuple[tuple[int, int], ...]:
    """The address ranges of the storages of ``tensors`` (each storage once)."""
    spans = set()
    for tensor in tensors:
        if tensor is not None:
            storage = tensor.untyped_storage()
            spans.add((storage.data_ptr(), storage.data_ptr() + storage.nbytes()))
    return tuple(spans)


def _apart(x: Tensor, y: Tensor, memory: tuple[tuple[int, int], ...]) -> bool:
    """Whether the storages of ``x`` and ``y`` lie apart from ``memory`` (:func:`_memory` of
    the parameters and their gradients, or of the optimizer's state). Data over a parameter's
    memory (``x = layer.weight.data``) changes as the model trains, which the step-by-step loop
    reads at each epoch; a folded step trains on copies of the parameters and the state,
    written back at the end (the parameters came out 0.2 apart, 0.03 over the state's)."""
    for low, high in _memory((x, y)):
        if any(low < end and start < high for start, end in memory):
            return False
    return True


def _version(tensor: Tensor) -> int | None:
    """The version counter of ``tensor`` (bumped by every in-place change), or ``None`` for an
    inference tensor, which keeps none."""
    return None if tensor.is_inference() else tensor._version


def _offsets(parameters: Sequence[Parameter]) -> list[int]:
    """Where each parameter starts in a flat buffer that tiles ``parameters`` in order."""
    offsets, offset = [], 0
    for parameter in parameters:
        offsets.append(offset)
        offset += parameter.data.numel()
    return offsets


def _split(block: Tensor) -> tuple[Tensor, Tensor]:
    """The weight ``(out, in)`` and bias ``(out,)`` parts of a block ``(out, in + 1)``."""
    return block[:, :-1], block[:, -1]
