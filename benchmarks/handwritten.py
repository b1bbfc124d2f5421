"""A training step written by hand, without modules: the reference that workloads A and B report.

:class:`HandwrittenStep` is one SGD step of a network of ``Linear`` layers with ``Tanh`` between
them and a softmax cross-entropy at the end, written as the fewest tensor operations we know for
it, with the techniques that minidl's modules do without (each module returns a new tensor and
keeps the batch-major layout of ``torch.nn``):

- features by batch: each activation is ``(features + 1, N)``, its last row all ones, so that a
  layer is one ``mm`` with ``[W | b]`` (``out x (in + 1)``), and its weight and bias gradients
  one ``mm`` too;
- every buffer (activations, gradients, temporaries) allocated once and written with ``out=`` or
  in place, and every transposed view made once;
- the gradients written, not accumulated, so no ``zero_grad``; the parameters and gradients two
  flat buffers, so the SGD update is one ``add_``.

Its step is 30 operations where a loop over minidl's modules issues 35; ``fit`` computes this
way too (``minidl/folded.py``: features by batch, the biases folded), in one operation fewer,
29 (a cross-entropy of class indices reads the last layer's ``(C, N)`` product as this step
does, and a narrow batch is copied through a transposed view made once, where this step
transposes it first),
with the modules' own activations and loss and the optimizer's own update. This step is not
part of minidl: it trains the paper's network only, and its outputs are buffers that the next
step overwrites. The test suite checks it against minidl's step in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from minidl import nn as mnn


class HandwrittenStep:
    """One SGD step (learning rate ``lr``, batches of ``batch`` samples) of a copy of ``model``.

    Args:
        model: a ``Sequential`` of ``Linear`` layers with a ``Tanh`` between each two; its
            parameters are copied (``model`` is not changed).
        lr: the learning rate.
        batch: the batch size of every step.

    Call :meth:`step` inside ``torch.inference_mode()``; the buffers are inference tensors.
    """

    def __init__(self, model: mnn.Sequential, lr: float, batch: int) -> None:
        layers = [module for module in model if isinstance(module, mnn.Linear)]
        expected = [mnn.Tanh if index % 2 else mnn.Linear for index in range(2 * len(layers) - 1)]
        if [type(module) for module in model] != expected or any(
            layer.bias is None for layer in layers
        ):
            raise ValueError(
                "HandwrittenStep: expected Linear layers with biases and a Tanh between each two, "
                f"got {model!r}"
            )
        self.lr, self.batch = lr, batch
        first = layers[0].weight.data
        dtype, device = first.dtype, first.device
        with torch.inference_mode():
            sizes = [layer.out_features * (layer.in_features + 1) for layer in layers]
            self.values = torch.empty(sum(sizes), dtype=dtype, device=device)
            self.grads = torch.empty(sum(sizes), dtype=dtype, device=device)
            self.weights: list[Tensor] = []  # [W | b] of each layer, views of `values`
            self.weight_grads: list[Tensor] = []
            offset = 0
            for layer, size in zip(layers, sizes, strict=True):
                shape = (layer.out_features, layer.in_features + 1)
                weight = self.values[offset : offset + size].view(shape)
                weight[:, :-1] = layer.weight.data
                weight[:, -1] = layer.bias.data  # type: ignore[union-attr]
                self.weights.append(weight)
                self.weight_grads.append(self.grads[offset : offset + size].view(shape))
                offset += size
            # The input of each layer, (in + 1, N) with a last row of ones; its features (the
            # rows above, contiguous) and its transpose, as views made once.
            self.inputs = [
                torch.ones(layer.in_features + 1, batch, dtype=dtype, device=device)
                for layer in layers
            ]
            self.features = [buffer[:-1] for buffer in self.inputs]
            self.inputs_t = [buffer.t() for buffer in self.inputs]
            # W without its bias column, transposed: the products of the input gradients.
            self.weights_in_t = [weight[:, :-1].t() for weight in self.weights]
            self.input_grads = [
                torch.empty(layer.in_features, batch, dtype=dtype, device=device)
                for layer in layers
            ]
            self.products = [
                torch.empty(layer.in_features, batch, dtype=dtype, device=device)
                for layer in layers
            ]
            classes = layers[-1].out_features
            self.logits = torch.empty(classes, batch, dtype=dtype, device=device)
            self.log_probabilities = torch.empty(classes, batch, dtype=dtype, device=device)
            self.logit_grads = torch.empty(classes, batch, dtype=dtype, device=device)
            self.picked = torch.empty(1, batch, dtype=dtype, device=device)
            self.picked_vector = self.picked.view(-1)
            self.minus_one_over_n = torch.full((1, batch), -1.0 / batch, dtype=dtype, device=device)
            self.minus_one_over_n_vector = self.minus_one_over_n.view(-1)
            self.batch_size = torch.tensor(float(batch), dtype=dtype, device=device)

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        """Train on ``x`` ``(N, in)`` and class indices ``y`` ``(N,)``; return the batch's loss."""
        if x.shape[0] != self.batch:
            raise ValueError(f"HandwrittenStep: expected {self.batch} samples, got {x.shape[0]}")
        weights, features, inputs = self.weights, self.features, self.inputs
        last = len(weights) - 1
        features[0].copy_(x.t())
        target = y.view(1, -1)
        # Forward: the hidden layers write their tanh into the next layer's input rows.
        for index in range(last):
            output = features[index + 1]
            torch.mm(weights[index], inputs[index], out=output)
            output.tanh_()
        torch.mm(weights[last], inputs[last], out=self.logits)
        # The loss: -1/N sum_n log p(y_n | x_n), the picked log-probabilities dotted with -1/N.
        torch.log_softmax(self.logits, 0, out=self.log_probabilities)
        torch.gather(self.log_probabilities, 0, target, out=self.picked)
        loss = torch.dot(self.picked_vector, self.minus_one_over_n_vector)
        # Backward: dL/dz = (p - onehot(y)) / N, then each layer from the last.
        grad = torch.exp(self.log_probabilities, out=self.logit_grads)
        grad.div_(self.batch_size).scatter_add_(0, target, self.minus_one_over_n)
        for index in range(last, -1, -1):
            torch.mm(grad, self.inputs_t[index], out=self.weight_grads[index])
            if index == 0:
                break
            input_grad, output = self.input_grads[index], features[index]
            torch.mm(self.weights_in_t[index], grad, out=input_grad)
            # tanh' = 1 - y^2: g - (g y) y, in place.
            product = torch.mul(input_grad, output, out=self.products[index])
            grad = input_grad.addcmul_(product, output, value=-1)
        self.values.add_(self.grads, alpha=-self.lr)
        return loss

    def parameters(self) -> list[tuple[Tensor, Tensor]]:
        """``(weight, bias)`` of each layer, as views (for comparing with a minidl model)."""
        return [(weight[:, :-1], weight[:, -1]) for weight in self.weights]
