"""Finite-difference check of a module's hand-written backward pass."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

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
    gradients are restored afterwards.

    Args:
        module: the module under test.
        *inputs: the forward inputs; the first is the one differentiated.
        eps: the finite-difference step.
        atol, rtol: an element passes when ``|analytic - numeric| <= atol + rtol * |numeric|``.
        seed: seed of the random projection ``u``.
        raise_exception: raise :class:`GradcheckError` on failure (otherwise return ``False``).

    Returns:
        ``True`` when every gradient agrees.

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
    named = list(module.named_parameters())
    parameters = [parameter for _, parameter in named]
    saved_grads = [p.grad.clone() for p in parameters]
    x = first.clone()
    rest = inputs[1:]

    def output(at: Tensor) -> Tensor:
        result: Tensor = module.forward(at, *rest)
        return result

    generator = torch.Generator(device="cpu").manual_seed(seed)
    y = output(x)
    projection = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)

    def scalar(at: Tensor) -> float:
        return float((output(at) * projection).sum())

    try:
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
        for parameter, grad in zip(parameters, saved_grads, strict=True):
            parameter.grad.copy_(grad)
    if failures:
        if raise_exception:
            raise GradcheckError(
                f"gradcheck: {type(module).__name__}.backward disagrees with finite differences "
                f"at " + "; ".join(failures)
            )
        return False
    return True
