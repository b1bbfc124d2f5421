"""Finite-difference check of a module's hand-written backward pass."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from minidl._validate import check_real, check_seed
from minidl.nn.module import Module

__all__ = ["GradcheckError", "gradcheck"]


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` when an analytic gradient disagrees with finite differences."""


def gradcheck(
    module: Module,
    *inputs: Tensor,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
    raise_exception: bool = True,
) -> bool:
    r"""Compare ``module.backward`` with central finite differences, for the input and every parameter.

    The module is reduced to the scalar :math:`s = \langle u, f(x) \rangle` with a fixed random
    :math:`u`; its analytic gradients (``backward(u)`` for the input, the accumulated ``grad`` of
    each parameter) are compared element by element with
    :math:`(s(\theta + \epsilon e_i) - s(\theta - \epsilon e_i)) / 2\epsilon`. A loss module
    (whose ``forward`` takes ``(prediction, target)``) is checked with respect to the prediction,
    its ``backward`` given the scalar :math:`u`.

    Run it in float64: float32 finite differences are too coarse. Parameters' values and
    gradients, and the module's buffers (a batch norm's running statistics, which every forward
    in training mode updates), are restored afterwards, also when the module raises part-way.

    Args:
        module: the module under test.
        *inputs: the forward inputs; the first is the one differentiated.
        eps: the finite-difference step, a finite number > 0.
        atol, rtol: an element passes when ``|analytic - numeric| <= atol + rtol * |numeric|``
            (finite numbers >= 0).
        seed: seed of the random projection ``u``, an integer in ``[-2**63, 2**64 - 1]``.
        raise_exception: raise :class:`GradcheckError` on failure (otherwise return ``False``).

    Returns:
        ``True`` when every gradient agrees.

    Raises:
        GradcheckError: a gradient disagrees (with ``raise_exception``).
        TypeError, ValueError: a bad argument, named in the message, before anything runs.

    Example:
        >>> gradcheck(Linear(3, 2, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64))
        True
    """
    if not isinstance(module, Module):
        raise TypeError(f"gradcheck: expected a minidl Module, got {type(module).__name__}")
    if not inputs:
        raise ValueError("gradcheck: give at least one input tensor")
    first = inputs[0]
    if not isinstance(first, Tensor) or not first.is_floating_point():
        raise TypeError("gradcheck: the first input must be a floating-point tensor")
    if first.dtype != torch.float64:
        raise TypeError(
            f"gradcheck: use float64 inputs and parameters (got {first.dtype}); float32 "
            "finite differences are too coarse to check a gradient"
        )
    eps = check_real("gradcheck", "eps", eps, low=0.0, low_open=True)
    atol = check_real("gradcheck", "atol", atol, low=0.0)
    rtol = check_real("gradcheck", "rtol", rtol, low=0.0)
    check_seed("gradcheck", seed)
    if not isinstance(raise_exception, bool):
        raise TypeError(f"gradcheck: raise_exception must be a bool, got {raise_exception!r}")
    named = list(module.named_parameters())
    parameters = [parameter for _, parameter in named]
    # Values too: a forward that raises part-way through would leave one nudged by eps.
    saved_values = [p.data.clone() for p in parameters]
    saved_grads = [p.grad.clone() for p in parameters]
    buffers = [buffer for _, buffer in module.named_buffers()]
    saved_buffers = [buffer.clone() for buffer in buffers]
    x = first.clone()
    rest = inputs[1:]

    def output(at: Tensor) -> Tensor:
        result: Tensor = module.forward(at, *rest)
        return result

    def scalar(at: Tensor) -> float:
        return float((output(at) * projection).sum())

    generator = torch.Generator(device="cpu").manual_seed(seed)
    try:
        y = output(x)
        projection = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
        for parameter in parameters:
            parameter.grad.zero_()
        output(x)
        analytic = {"input": module.backward(projection).clone()}
        for name, parameter in named:
            analytic[name] = parameter.grad.clone()

        targets: list[tuple[str, Tensor]] = [("input", x)]
        targets += [(name, parameter.data) for name, parameter in named]
        failures = []
        for name, tensor in targets:
            numeric = torch.zeros_like(tensor)
            # Element by element in the tensor's own layout (an input may be a transposed view).
            for index in itertools.product(*(range(size) for size in tensor.shape)):
                original = float(tensor[index])
                tensor[index] = original + eps
                plus = scalar(x)
                tensor[index] = original - eps
                minus = scalar(x)
                tensor[index] = original
                numeric[index] = (plus - minus) / (2 * eps)
            error = (analytic[name] - numeric).abs()
            bad = error > atol + rtol * numeric.abs()
            if bool(bad.any()):
                index = tuple(int(i) for i in bad.nonzero()[0])
                failures.append(
                    f"{name}{list(index)}: analytic {float(analytic[name][index]):.6g}, "
                    f"numeric {float(numeric[index]):.6g}"
                )
    finally:
        for parameter, value, grad in zip(parameters, saved_values, saved_grads, strict=True):
            parameter.data.copy_(value)
            parameter.grad.copy_(grad)
        for buffer, saved in zip(buffers, saved_buffers, strict=True):
            buffer.copy_(saved)
    if failures:
        if raise_exception:
            raise GradcheckError(
                f"gradcheck: {type(module).__name__}.backward disagrees with finite differences "
                f"at " + "; ".join(failures)
            )
        return False
    return True
