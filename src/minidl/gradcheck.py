"""Finite-difference check of a module's hand-written backward pass."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor

from minidl._validate import check_real, check_seed, layout_name, shown
from minidl.nn._checks import given_module
from minidl.nn.loss import Loss
from minidl.nn.module import Module, check_initialised, check_registered, referred
from minidl.nn.parameter import Parameter
from minidl.nn.stacked_loss import StackedLoss

__all__ = ["GradcheckError", "gradcheck"]

#: Added to ``seed`` (modulo 2**64) to seed the projection's generator. Seeded with ``seed``
#: itself, the projection was the very tensor that ``torch.manual_seed(seed)`` then
#: ``torch.randn`` draw, the input of a check whose output has the input's shape: a square
#: layer's weight gradient u^T x was then symmetric, and a transposed one passed.
_PROJECTION_SEED_OFFSET = 0x9E3779B97F4A7C15


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
    :math:`\langle u, f(\theta + \epsilon e_i) - f(\theta - \epsilon e_i) \rangle / 2\epsilon`
    (the outputs' differences taken before they are projected, so that the rounding of a sum of
    large outputs does not swamp them; and over the step ``eps`` actually takes at each value,
    as it rounds there). A loss module
    (whose ``forward`` takes ``(prediction, target)``) is checked with respect to the prediction,
    its ``backward`` given the scalar :math:`u`. A module that overrides
    ``backward_parameters`` (what training runs for a network's first layers) has the parameter
    gradients it accumulates compared in the same way; a subclass that overrides ``backward``
    alone below one that overrides it (a :class:`~minidl.nn.Linear` whose backward scales its
    gradient) has its ``backward`` checked only, which training runs in its place.

    The module contract is checked first, each broken part reported alone (finite
    differences would then mean nothing): ``forward`` must be deterministic (give the same
    output twice and draw from no random generator: a dropout in training mode does, put it in
    evaluation mode); ``backward`` must return a tensor of the input's shape, dtype and device
    (one of another shape would be broadcast), and leave its argument (as
    ``backward_parameters`` must) and the input of its forward as they were (in a network they
    are what the modules after and before it returned, which a Tanh before it caches); a second
    forward and ``backward`` on the same input and upstream gradient must return the same input
    gradient (a backward that draws random numbers, or reads a count of its calls, has no
    gradient to check); and the second ``backward`` (and a second ``backward_parameters``,
    where the module overrides it) must add to the parameters' gradients (accumulate), not
    overwrite them.

    Every forward is given a copy of the first input, so that a module that works in place
    on its input (``input.mul_(2)``) is checked as the function of the input it computes. The
    first forward and ``backward`` are given another input (the first input's rows in reverse
    order, scaled by 0.9) and the parameters scaled by 0.9, so that a backward reading the
    input of an earlier forward, or keeping what its first call computed (a derivative, a copy
    of the weights), is caught.

    A disagreement at a point within ``eps`` of a kink of the function (a ReLU's 0), where the
    one-sided differences :math:`(s(\theta + \epsilon e_i) - s(\theta)) / \epsilon` and
    :math:`(s(\theta) - s(\theta - \epsilon e_i)) / \epsilon` disagree too and the analytic
    gradient is one of them (the slope on the side that does not cross the kink), is reported
    with them: the central difference is then their mean, no derivative; check away from the
    kink. (A smooth function's one-sided differences part too, by ``eps`` times its second
    derivative, but a wrong gradient there is neither of them.)

    Run it in float64: float32 finite differences are too coarse. Parameters' values and
    gradients, the module's buffers (a batch norm's running statistics, which every forward
    in training mode updates) and the random generators' states (torch's, a dropout's) are
    restored afterwards, also when the module raises part-way. The forward caches are not:
    after it, the module (and each module inside it) holds what gradcheck's last forward
    cached, so that a ``backward`` called then differentiates that forward, not one made
    before gradcheck: call it between training steps, not between a forward and its backward.

    Args:
        module: the module under test.
        *inputs: the forward inputs; the first is the one differentiated.
        eps: the finite-difference step, a finite number > 0.
        atol, rtol: an element passes when ``|analytic - numeric| <= atol + rtol * |numeric|``
            (finite numbers >= 0); NaN in either never passes.
        seed: chooses the random projection ``u``, an integer in ``[-2**63, 2**64 - 1]``
            (its generator is seeded from ``seed``, not with it: an input drawn after
            ``torch.manual_seed(seed)`` is no projection, whose symmetric ``u^T x`` would hide
            a square layer's transposed weight gradient).
        raise_exception: raise :class:`GradcheckError` on failure (otherwise return ``False``).

    Returns:
        ``True`` when every gradient agrees.

    Raises:
        GradcheckError: a gradient disagrees, the forward or the backward is random, the
            backward returns no tensor like the input, writes over its argument or its
            forward's input, or does not accumulate (with ``raise_exception``).
        TypeError, ValueError: a bad argument, named in the message, before anything runs
            (a NaN or infinite value in an input, a parameter or a floating-point buffer, a
            batch norm's running statistics, is one); a forward that
            returns no floating-point tensor (a tuple, an integer tensor), a TypeError; an
            ``eps`` below the resolution of a value (``x + eps`` rounds back to ``x``), a
            ValueError naming the element.

    Example:
        >>> gradcheck(nn.Linear(3, 2, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64))
        True
    """
    if not isinstance(module, Module):
        raise TypeError(f"gradcheck: expected a minidl Module, got {given_module(module)}")
    check_initialised("gradcheck", "the module", module)
    if not inputs:
        raise ValueError("gradcheck: give at least one input tensor")
    first = inputs[0]
    if (
        isinstance(first, tuple | list)
        and first
        and all(isinstance(item, Tensor) for item in first)
        and len(inputs) == 1
    ):
        raise TypeError(
            f"gradcheck: got the inputs as a {type(first).__name__}; pass them as arguments, "
            "gradcheck(module, *inputs) (not as one tuple, as PyTorch's autograd gradcheck takes them)"
        )
    if not isinstance(first, Tensor) or not first.is_floating_point():
        got = first.dtype if isinstance(first, Tensor) else type(first).__name__
        raise TypeError(f"gradcheck: the first input must be a floating-point tensor, got {got}")
    if first.dtype != torch.float64:
        raise TypeError(
            f"gradcheck: use float64 inputs and parameters (got {first.dtype}); "
            f"{_short(first.dtype)} finite differences are too coarse to check a gradient"
        )
    eps = check_real("gradcheck", "eps", eps, low=0.0, low_open=True)
    atol = check_real("gradcheck", "atol", atol, low=0.0)
    rtol = check_real("gradcheck", "rtol", rtol, low=0.0)
    seed = check_seed("gradcheck", seed)
    if not isinstance(raise_exception, bool):
        raise TypeError(f"gradcheck: raise_exception must be a bool, got {shown(raise_exception)}")
    # (an unregistered parameter's gradient would go unchecked: a wrong one would pass)
    check_registered("gradcheck", module)
    named = list(module.named_parameters())
    for name, parameter in named:
        if parameter.data.dtype != torch.float64:
            raise TypeError(
                f"gradcheck: use float64 inputs and parameters (parameter {name!r} is "
                f"{parameter.data.dtype}: call .to(torch.float64) on the module); "
                f"{_short(parameter.data.dtype)} finite differences are too coarse to check a "
                "gradient"
            )
    # (finite differences through a non-finite value are NaN: the module would be blamed)
    _check_finite("the first input", first)
    for position, other in enumerate(inputs[1:], start=1):  # (a loss's targets, say)
        if isinstance(other, Tensor) and other.is_floating_point():
            _check_finite(f"input {position}", other)
    for name, parameter in named:
        _check_finite(f"parameter {name!r}", parameter.data)
    for name, buffer in module.named_buffers():
        if isinstance(buffer, Tensor) and buffer.is_floating_point():
            _check_finite(f"buffer {name!r}", buffer)
    parameters = [parameter for _, parameter in named]
    # Values too: a forward that raises part-way through would leave one nudged by eps.
    saved_values = [p.data.clone() for p in parameters]
    saved_grads = [p.grad.clone() for p in parameters]
    buffers = list(module.named_buffers())
    saved_buffers = [buffer.clone() for _, buffer in buffers]
    # (detached: an input from an autograd graph, or one requiring its gradient as
    # the inputs of PyTorch's autograd gradcheck do, is a value here)
    x = first.detach().clone()
    rest = tuple(t.detach() if isinstance(t, Tensor) else t for t in inputs[1:])

    given: list[Tensor] = []  # (the copy the last forward was given)

    def output(at: Tensor) -> Tensor:
        # (a call: a loss notes that a forward ran; on a copy, which a forward that works in
        # place may change, the function of x that finite differences take stays one)
        given[:] = [at.clone()]
        # (the other inputs copied too: a forward that works in place on its target, say,
        # gets the caller's values at every call and leaves the caller's tensor as it is)
        others = (t.clone() if isinstance(t, Tensor) else t for t in rest)
        result: Tensor = module(given[0], *others)
        return result

    def _projected(difference: Tensor) -> float:
        return float((difference * projection).sum())

    generator = torch.Generator(device="cpu").manual_seed((seed + _PROJECTION_SEED_OFFSET) % 2**64)
    restore_random = _saved_random_states(module, x.device)
    try:
        # A forward on another input first (x's rows in reverse order, scaled by 0.9; a 0-dim
        # x flips as itself) with the parameters scaled by 0.9: a backward that reads the input
        # or the weights its first forward cached (at the first call only) is then wrong, where
        # forwards on x alone, with the parameters as they are, would all have cached them;
        other = 0.9 * x.flip(0)
        for parameter in parameters:
            parameter.data.mul_(0.9)
        warm_up = output(other)
        if (  # (what the checks below refuse is refused there, by name)
            isinstance(warm_up, Tensor)
            and warm_up.dtype == torch.float64
            and not (isinstance(module, Loss) and warm_up.dim() != 0)
        ):
            # and its backward: one that keeps what its first call computed (a derivative, a
            # copy of the weights) is then wrong at the checked call. (The gradients it adds
            # are zeroed before that call.)
            module.backward(torch.ones_like(warm_up))
        for parameter, value in zip(parameters, saved_values, strict=True):
            parameter.data.copy_(value)
        result: object = output(x)
        if not isinstance(result, Tensor) or not result.is_floating_point():
            kind = f"a tensor of {result.dtype}" if isinstance(result, Tensor) else None
            raise TypeError(
                f"gradcheck: {type(module).__name__}.forward returned "
                f"{kind or type(result).__name__}, expected a floating-point tensor: gradcheck "
                "checks a module of one output"
            )
        if result.dtype != torch.float64:
            raise TypeError(
                f"gradcheck: {type(module).__name__}.forward returned a tensor of "
                f"{result.dtype} for float64 inputs and parameters; {_short(result.dtype)} "
                "finite differences are too coarse to check a gradient: compute the output in "
                "float64"
            )
        y = result.clone()  # (a module may write each output into one buffer)
        if isinstance(module, Loss) and y.dim() != 0:
            where = type(module).__name__
            if x.dim() >= 3 and y.shape == x.shape[:1]:  # (R, N, ...) predictions: (R,) losses
                # (a StackedLoss takes stacked predictions alone: each run's own loss is checked)
                name = "the loss of model r's run" if isinstance(module, StackedLoss) else "loss"
                raise ValueError(
                    f"gradcheck: {where} returned one loss per stacked model (shape "
                    f"{tuple(y.shape)}), and a loss's backward takes a scalar upstream "
                    f"gradient; check one model's loss: gradcheck({name}, prediction[r], "
                    "target[r])"
                )
            # (a loss of one's own that returns, say, shape (1,) or a loss per sample)
            raise ValueError(
                f"gradcheck: {where} returned a loss of shape {tuple(y.shape)}, expected one "
                "number (a 0-dim tensor): a loss's backward takes a scalar upstream gradient"
            )
        projection = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
        for parameter in parameters:
            parameter.grad.zero_()
        # (the forward before the one whose backward is checked on another input too: a
        # backward that reads the input of the forward before its own is then wrong)
        output(other)
        states = _random_states(module, x.device)
        again = output(x)
        after = _random_states(module, x.device)
        # (a generator made or dropped by the forward counts as a draw too)
        drew = len(after) != len(states) or any(
            not torch.equal(old, new) for old, new in zip(states, after, strict=True)
        )
        # Broken contracts, each reported alone: finite differences would then mean nothing.
        contract = _nondeterminism(module, y, again, drew)
        # (on copies: a backward that writes over its argument, or over the input its forward
        # cached, would change what a network's other modules read; see _changed)
        forwarded = given[0].clone()
        upstream = projection.clone()
        returned = module.backward(upstream)
        contract = (
            contract
            or _misshapen(returned, x)
            or _changed("its argument (the upstream gradient)", upstream, projection)
            or _changed("the input of its forward", given[0], forwarded)
        )
        analytic: dict[str, Tensor] = {}
        if contract is None:
            analytic["input"] = returned.clone()
        for name, parameter in named:
            analytic[name] = parameter.grad.clone()
        if contract is None:
            # A second backward must add to the gradients (the Module contract), not overwrite.
            output(x)
            upstream = projection.clone()
            again_returned = module.backward(upstream)
            contract = (
                _changed("its argument (the upstream gradient)", upstream, projection)
                or _unrepeated(again_returned, analytic["input"])
                or _overwritten(named, analytic)
            )
        # What fit runs for a network's first layers, where a module overrides it: checked
        # against finite differences as backward is (after the forward of the check above).
        # Not for a subclass that overrides backward alone below a class that overrides it:
        # fit and the containers run its backward there (see Module._skips_own_backward).
        only_parameters: dict[str, Tensor] = {}
        if (
            contract is None
            and named
            and (
                type(module).backward_parameters is not Module.backward_parameters
                or "backward_parameters" in vars(module)  # (set on the instance)
            )
            and not type(module)._skips_own_backward
        ):
            for parameter in parameters:
                parameter.grad.zero_()
            upstream = projection.clone()
            module.backward_parameters(upstream)
            only_parameters = {name: parameter.grad.clone() for name, parameter in named}
            # It must add to the gradients too, as backward does (the Module contract).
            output(x)
            module.backward_parameters(projection.clone())
            contract = _changed(
                "its argument (the upstream gradient)", upstream, projection, "backward_parameters"
            ) or _overwritten(named, only_parameters, "backward_parameters")

        targets: list[tuple[str, Tensor]] = [("input", x)]
        targets += [(name, parameter.data) for name, parameter in named]
        failures: list[str] = []
        parameter_failures: list[str] = []
        # (the unperturbed output, for the one-sided differences that tell a kink)
        center = output(x).clone() if contract is None else None
        for name, tensor in targets if contract is None else ():
            numeric = torch.zeros_like(tensor)
            ahead, behind = torch.zeros_like(tensor), torch.zeros_like(tensor)
            # Element by element in the tensor's own layout (an input may be a transposed view).
            for index in itertools.product(*(range(size) for size in tensor.shape)):
                original = float(tensor[index])
                tensor[index] = original + eps
                up = float(tensor[index]) - original  # (the step taken: eps as it rounds there)
                plus = output(x).clone()
                tensor[index] = original - eps
                down = original - float(tensor[index])
                minus = output(x).clone()
                tensor[index] = original
                if up <= 0.0 or down <= 0.0:
                    side = "+" if up <= 0.0 else "-"
                    raise ValueError(
                        f"gradcheck: eps {eps:g} is below the resolution of {name}"
                        f"{list(index)} = {original:.6g} ({original:.6g} {side} eps rounds back "
                        "to it): give a larger eps, or check at values of smaller magnitude"
                    )
                # The outputs' differences first, then projected: the projection's sum of large
                # outputs would round away a difference of their last bits.
                assert center is not None
                numeric[index] = _projected(plus - minus) / (up + down)
                ahead[index] = _projected(plus - center) / up
                behind[index] = _projected(center - minus) / down
            failures += _disagreement(name, analytic[name], numeric, atol, rtol, (ahead, behind))
            if name in only_parameters:
                parameter_failures += _disagreement(
                    name, only_parameters[name], numeric, atol, rtol, (ahead, behind)
                )
    finally:
        for parameter, value, grad in zip(parameters, saved_values, saved_grads, strict=True):
            parameter.data.copy_(value)
            parameter.grad.copy_(grad)
        # (by name: a forward that registers a new tensor under a buffer's name, as a
        # running statistic rebound, gets the one it had back, with its values)
        held = dict(module.named_buffers())
        for (name, buffer), saved in zip(buffers, saved_buffers, strict=True):
            buffer.copy_(saved)
            if held.get(name) is not buffer:
                owner, _, leaf = name.rpartition(".")
                module.get_submodule(owner).register_buffer(leaf, buffer)
        restore_random()
    if contract is not None or failures or parameter_failures:
        if raise_exception:
            where = type(module).__name__
            texts = [contract] if contract is not None else []
            if failures:
                texts.append("backward disagrees with finite differences at " + "; ".join(failures))
            if parameter_failures:
                texts.append(
                    "backward_parameters disagrees with finite differences at "
                    + "; ".join(parameter_failures)
                )
            raise GradcheckError("gradcheck: " + "; ".join(f"{where}.{t}" for t in texts))
        return False
    return True


def _short(dtype: torch.dtype) -> str:
    """``dtype``'s name without ``torch.`` (``float16``), for a sentence."""
    return str(dtype).removeprefix("torch.")


def _check_finite(what: str, tensor: Tensor) -> None:
    """Refuse a NaN or infinite element of ``tensor``, naming the first; and a tensor without
    values to take finite differences of (a meta one) or of another layout (sparse, nested)."""
    if tensor.layout != torch.strided or tensor.is_nested:
        layout = layout_name(tensor)
        raise TypeError(
            f"gradcheck: {what} is a {layout} tensor; finite differences are taken of a dense one"
        )
    if tensor.is_meta:
        raise ValueError(
            f"gradcheck: {what} is on the meta device, which holds no values to take finite "
            "differences of"
        )
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        index = tuple(int(i) for i in (~finite).nonzero()[0])
        raise ValueError(
            f"gradcheck: {what} has a non-finite value ({float(tensor[index])} at index "
            f"{index}); finite differences need finite values"
        )


def _random_states(module: Module, device: torch.device) -> list[Tensor]:
    """The states of the random generators a forward may draw from: torch's global one (and
    the input's CUDA device's), and those the module and its children hold (a Dropout's)."""
    states = [torch.random.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states + [held.get_state() for held in _held_generators(module)]


def _held_generators(module: Module) -> list[torch.Generator]:
    """The generators that ``module`` and its children hold (a Dropout's)."""
    # (found without asking for the modules' __dict__, as check_registered does: see referred)
    return [
        held
        for part in module.modules()
        for held in referred(part)
        if isinstance(held, torch.Generator)
    ]


def _saved_random_states(module: Module, device: torch.device) -> Callable[[], None]:
    """Save the states of the generators a forward may draw from (see :func:`_random_states`)
    and return what sets them back: a module that draws (a dropout in training mode, which
    gradcheck refuses as not deterministic) left them advanced by gradcheck's forwards."""
    global_state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    held = [(generator, generator.get_state()) for generator in _held_generators(module)]

    def restore() -> None:
        torch.random.set_rng_state(global_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)
        for generator, state in held:
            generator.set_state(state)

    return restore


def _nondeterminism(module: Module, first: Tensor, second: Tensor, drew: bool) -> str | None:
    """What is wrong when two forward calls on the same input differ (a dropout in training
    mode), or the second drew from a random generator (``drew``; a dropout of a tiny input
    may draw the same mask twice): finite differences of a random function mean nothing."""
    advice = (
        "so finite differences cannot check its backward (put a module that draws random "
        "numbers, such as Dropout, in evaluation mode with .eval())"
    )
    # Equal values (an infinity in both calls too) and NaN in both agree: a deterministic
    # forward may return them (a log at 0), and their difference would be NaN.
    differ = (first != second) & ~(first.isnan() & second.isnan())
    difference = 0.0
    if bool(differ.any()):
        finite = first[first.isfinite()]
        scale = max(float(finite.abs().max()) if finite.numel() else 0.0, 1.0)
        difference = float((first - second)[differ].abs().max())
        if difference <= 1e-10 * scale:
            difference = 0.0
    if difference:
        return (
            f"forward is not deterministic: two calls on the same input differ by up to "
            f"{difference:.6g}, {advice}"
        )
    if drew:
        return (
            "forward is not deterministic: a call drew from a random generator (torch's "
            f"global one, or one the module holds), {advice}"
        )
    return None


def _disagreement(
    name: str,
    analytic: Tensor,
    numeric: Tensor,
    atol: float,
    rtol: float,
    sides: tuple[Tensor, Tensor],
) -> list[str]:
    """The first element where ``analytic`` is not within ``atol + rtol * |numeric|`` of
    ``numeric``, described (an empty list when every element agrees). Where its one-sided
    differences (``sides``: forward, backward) disagree in the same way, and ``analytic`` agrees
    with one of them, the function has a kink within ``eps`` of the point (a ReLU's 0), where
    the central difference is the mean of two slopes and no derivative: the description says
    so. (A smooth function's one-sided differences part by ``eps`` times its second derivative,
    beyond ``atol`` where that is above about 10: a wrong gradient there agrees with neither.)"""
    # Written so that NaN (in either) is a mismatch, as in PyTorch's autograd gradcheck;
    # equal infinities (whose difference is NaN) agree.
    close = ((analytic - numeric).abs() <= atol + rtol * numeric.abs()) | (analytic == numeric)
    if bool(close.all()):
        return []
    index = tuple(int(i) for i in (~close).nonzero()[0])
    value = float(analytic[index])
    text = f"{name}{list(index)}: analytic {value:.6g}, numeric {float(numeric[index]):.6g}"
    forward, backward = (float(side[index]) for side in sides)
    if abs(forward - backward) > atol + rtol * max(abs(forward), abs(backward)) and any(
        abs(value - side) <= atol + rtol * abs(side) for side in (forward, backward)
    ):
        text += (
            f" (one-sided differences {forward:.6g} and {backward:.6g}: the function has a "
            "kink within eps of this point, where finite differences take no derivative, "
            "check at a point away from it)"
        )
    return [text]


def _misshapen(returned: object, x: Tensor) -> str | None:
    """What is wrong when ``backward`` did not return a tensor like the input: its gradient has
    the input's shape, dtype and device (one of another shape would be broadcast)."""
    expected = f"a tensor of the input's shape {tuple(x.shape)}, {x.dtype}, on {x.device}"
    if not isinstance(returned, Tensor):
        got = "None" if returned is None else f"a {type(returned).__name__}"
        return f"backward returned {got}, expected the input gradient: {expected}"
    if returned.shape == x.shape and returned.dtype == x.dtype and returned.device == x.device:
        return None
    return (
        f"backward returned an input gradient of shape {tuple(returned.shape)}, "
        f"{returned.dtype}, on {returned.device}; expected {expected}"
    )


def _changed(what: str, tensor: Tensor, before: Tensor, method: str = "backward") -> str | None:
    """What is wrong when ``method`` (``backward`` or ``backward_parameters``) wrote over
    ``what`` (``tensor``, which held ``before``): in a network, its upstream gradient is what
    the module after it returned, and the input of its forward what the module before it
    returned, which that module may have cached for its own backward (a Tanh or Sigmoid caches
    its output): its gradient would then be computed from the values written."""
    if tensor.shape != before.shape:
        change = f"its shape from {tuple(before.shape)} to {tuple(tensor.shape)}"
    else:
        same = (tensor == before) | (tensor.isnan() & before.isnan())
        if bool(same.all()):
            return None
        index = tuple(int(i) for i in (~same).nonzero()[0])
        change = f"at {list(index)}: {float(before[index]):.6g}, then {float(tensor[index]):.6g}"
    return (
        f"{method} changed {what} in place ({change}); leave it as it was, and compute into "
        "new tensors (a * b, not a.mul_(b)): in a network another module reads it"
    )


def _unrepeated(second: object, first: Tensor) -> str | None:
    """What is wrong when a second forward and ``backward``, on the same input and upstream
    gradient, returned another input gradient than the first (``first``): a backward that
    draws random numbers or reads what an earlier call changed (a count, a cache) has no
    gradient that finite differences could check."""
    if not isinstance(second, Tensor) or second.shape != first.shape:
        got = "None" if second is None else f"a {type(second).__name__}"
        if isinstance(second, Tensor):
            got = f"a tensor of shape {tuple(second.shape)}"
        difference = f"{got}, where the first returned one of shape {tuple(first.shape)}"
    else:
        finite = first[first.isfinite()]
        scale = float(finite.abs().max()) if finite.numel() else 0.0
        agree = ((second - first).abs() <= 1e-8 * scale) | (second == first)
        bad = ~(agree | (second.isnan() & first.isnan()))
        if not bool(bad.any()):
            return None
        index = tuple(int(i) for i in bad.nonzero()[0])
        difference = (
            f"input[{', '.join(map(str, index))}] {float(second[index]):.6g}, where the first "
            f"returned {float(first[index]):.6g}"
        )
    return (
        "backward is not deterministic: a second forward and backward on the same input and "
        f"upstream gradient returned {difference} (a backward that draws random numbers, or "
        "that reads what an earlier call changed, such as a count of calls or a cache it wrote "
        "over)"
    )


def _largest_finite(gradient: Tensor) -> float:
    """The largest absolute finite value of ``gradient`` (0 if it has none)."""
    finite = gradient[gradient.isfinite()]
    return float(finite.abs().max()) if finite.numel() else 0.0


def _overwritten(
    named: list[tuple[str, Parameter]], analytic: dict[str, Tensor], method: str = "backward"
) -> str | None:
    """What is wrong when a second ``method`` call (``backward`` or ``backward_parameters``)
    did not double a parameter's gradient: it must accumulate into ``grad`` (add to it), not
    overwrite it."""
    # Relative to the gradient's own largest value; to a millionth of the largest of all
    # gradients where its own is smaller: one that is zero but for rounding (a bias before a
    # batch norm) may come out of two passes as other rounding. (Relative to the largest of
    # all alone, a gradient overwritten beside one 1e8 times larger passed.)
    sizes = {name: _largest_finite(gradient) for name, gradient in analytic.items()}
    largest = max(sizes.values(), default=0.0)
    for name, parameter in named:
        expected = 2 * analytic[name]
        if not expected.numel():
            continue
        grad = parameter.grad
        tolerance = 1e-8 * max(sizes[name], 1e-6 * largest)
        # NaN after the second backward alone is a mismatch; NaN after both is left to the
        # comparison with finite differences, which reports the NaN gradient itself.
        agree = ((grad - expected).abs() <= tolerance) | (grad == expected)
        bad = ~(agree | (grad.isnan() & expected.isnan()))
        if bool(bad.any()):
            index = tuple(int(i) for i in bad.nonzero()[0])
            return (
                f"{method} does not accumulate into the gradient of {name!r}: after a second "
                f"{method}, {name}.grad{list(index)} is {float(parameter.grad[index]):.6g}, "
                f"expected twice the first one, {float(expected[index]):.6g} (add to grad, do "
                "not overwrite it)"
            )
    return None
