"""Python numbers as cached 0-dim operands (minidl._scalar.operand): the same bits as the number
itself, and no conversion per call in the modules and optimizers that use them."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl._scalar import _zero_dim, add_scaled_, cpu_operand, operand, scaled, tensor_operand
from minidl.nn.flat import flat_buffer

F32, F64 = torch.float32, torch.float64

#: Operations as minidl writes them, each with the number and with its operand.
OPERATIONS: dict[str, Callable[[Tensor, float | Tensor], Tensor]] = {
    "mul": torch.mul,
    "div": torch.div,
    "add": torch.add,
    "sub": torch.sub,
    "rsub": torch.rsub,
    "le": torch.le,
    "mul_": lambda x, v: x.clone().mul_(v),
    "div_": lambda x, v: x.clone().div_(v),
    "add_": lambda x, v: x.clone().add_(v),
}


def _bits(tensor: Tensor) -> Tensor:
    """The tensor's bit patterns (NaNs of one pattern compare equal, -0.0 differs from 0.0)."""
    if tensor.dtype == torch.bool:
        return tensor
    return tensor.view(torch.int32 if tensor.dtype == F32 else torch.int64)


def _numbers(generator: torch.Generator) -> list[float]:
    """Numbers of many magnitudes and both signs, most not representable in float32, and the
    special ones: integers, infinities, NaN, the ends of float32's range."""
    drawn = torch.randn(200, generator=generator, dtype=F64) * torch.exp2(
        torch.randint(-60, 60, (200,), generator=generator).double()
    )
    special = [1, -3, 2**40 + 1, 0.1, 1 / 3, 1e-45, 3.4e38, 3.5e38, -math.inf, math.inf, math.nan]
    return [*drawn.tolist(), *special]


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(OPERATIONS))
def test_an_operand_gives_the_bits_of_the_number(name: str, dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    operation = OPERATIONS[name]
    x = torch.randn(64, generator=generator, dtype=F64).mul_(1e3).to(dtype)
    x[:4] = torch.tensor([0.0, -0.0, math.inf, math.nan], dtype=dtype)
    for value in _numbers(generator):
        number_form = operation(x, value)
        operand_form = operation(x, operand(value, x))
        assert operand_form.dtype == number_form.dtype
        assert torch.equal(_bits(operand_form), _bits(number_form)), (name, value)
        # A number exactly representable in the dtype, compared as equal by `le`.
        representable = float(x[5])
        assert torch.equal(
            _bits(operation(x, operand(representable, x))), _bits(operation(x, representable))
        )


def test_an_operand_is_a_cached_normal_0_dim_tensor_of_the_dtype() -> None:
    x32, x64 = torch.zeros(2, dtype=F32), torch.zeros(2, dtype=F64)
    with torch.inference_mode():
        made_inside = operand(0.123, x32)
    assert isinstance(made_inside, Tensor)
    assert not made_inside.is_inference()  # usable outside inference mode too
    assert made_inside.dim() == 0 and made_inside.dtype == F32
    assert operand(0.123, x32) is made_inside
    other = operand(0.123, x64)
    assert isinstance(other, Tensor) and other.dtype == F64 and float(other) == 0.123


def test_the_constants_of_one_call_are_each_made_once() -> None:
    """An optimizer's or a module's constants come in turn at every call (Adam's betas, eps,
    one less beta, in both dtypes): each is kept, not only the last one asked for, so that
    the next call finds them all."""
    likes = (torch.zeros(2, dtype=F32), torch.zeros(2, dtype=F64))
    constants = (0.9, 0.999, 0.1, 1e-3, 1e-8, 0.3125)
    first = [operand(value, like) for like in likes for value in constants]
    again = [operand(value, like) for like in likes for value in constants]
    assert all(a is b for a, b in zip(again, first, strict=True))
    assert [(float(t), t.dtype) for t in again if isinstance(t, Tensor)] == [
        (float(torch.tensor(value, dtype=like.dtype)), like.dtype)
        for like in likes
        for value in constants
    ]


@pytest.mark.parametrize("value", [0.0, -0.0, 0])
def test_zero_stays_a_number_with_its_sign(value: float) -> None:
    result = operand(value, torch.ones(2))
    assert not isinstance(result, Tensor)
    assert math.copysign(1.0, result) == math.copysign(1.0, value)


@pytest.mark.parametrize(
    "like",
    [
        torch.ones(2, dtype=torch.float16),
        torch.ones(2, dtype=torch.bfloat16),
        torch.ones(2, device="meta"),
    ],
    ids=["float16", "bfloat16", "meta device"],
)
def test_other_dtypes_and_devices_get_the_number_itself(like: Tensor) -> None:
    """float16 and bfloat16 compute with the number in float32, which a 0-dim tensor of their
    dtype would round first; other devices are left as they are."""
    result = operand(0.3, like)
    # (not `operand(...) == 0.3` alone: a 0-dim float16 tensor compares equal to 0.3, the
    # number rounded to float16 as the comparison computes, and passed with the tensor cached)
    assert type(result) is float and result == 0.3


# -- the modules and optimizers convert no number per call ---------------------------------------


def _conversions(call: Callable[[], object]) -> list[str]:
    """The operations of one ``call`` (after two warm-ups) that convert a tensor's dtype."""
    from torch.profiler import profile

    call()
    call()
    with profile() as recorded:
        call()
    found = []
    for event in recorded.events():
        if event.name == "aten::_to_copy":
            # Named by the outermost operation around it (the one minidl called).
            outer = event
            while outer.cpu_parent is not None and outer.cpu_parent.name.startswith("aten::"):
                outer = outer.cpu_parent
            found.append(outer.name)
    return found


MODULES: dict[str, Callable[[torch.dtype], nn.Module]] = {
    "ELU": lambda dtype: nn.ELU(0.7),
    "SELU": lambda dtype: nn.SELU(),
    "LeakyReLU": lambda dtype: nn.LeakyReLU(0.1),
    "Sigmoid": lambda dtype: nn.Sigmoid(),
    "GELU": lambda dtype: nn.GELU(),
    "GELU tanh": lambda dtype: nn.GELU("tanh"),
    "SiLU": lambda dtype: nn.SiLU(),
    "Dropout": lambda dtype: nn.Dropout(0.3),
}

LOSSES: dict[str, tuple[Callable[[], nn.Loss], str]] = {
    "MSELoss": (nn.MSELoss, "dense"),
    "MSELoss, class indices": (nn.MSELoss, "indices"),
    "L1Loss": (nn.L1Loss, "dense"),
    "HuberLoss": (lambda: nn.HuberLoss(delta=0.7), "dense"),
    "BCEWithLogitsLoss": (nn.BCEWithLogitsLoss, "probabilities"),
    "NLLLoss": (nn.NLLLoss, "indices"),
    "CrossEntropyLoss": (nn.CrossEntropyLoss, "indices"),
}

OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], optim.Optimizer]] = {
    "SGD with momentum": lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
    "SGD, Nesterov, weight decay": lambda p: optim.SGD(
        p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01
    ),
    "Adadelta": optim.Adadelta,
    "Adagrad": lambda p: optim.Adagrad(p, lr=0.1),
    "Adam": lambda p: optim.Adam(p, lr=0.01),
    "AdamW": lambda p: optim.AdamW(p, lr=0.01),
    "RMSprop, centered, momentum": lambda p: optim.RMSprop(p, lr=0.01, centered=True, momentum=0.5),
}


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(MODULES))
def test_activations_convert_no_number(name: str, dtype: torch.dtype) -> None:
    module = MODULES[name](dtype)
    x = torch.randn(20, 6, dtype=dtype)
    gradient = torch.randn(20, 6, dtype=dtype)

    def call() -> None:
        module(x)
        module.backward(gradient)

    assert _conversions(call) == []


#: The losses that also take stacked predictions (R, N, C).
STACKABLE = ("MSELoss", "MSELoss, class indices", "CrossEntropyLoss")


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize(
    ("name", "stacked"),
    [(name, False) for name in LOSSES] + [(name, True) for name in STACKABLE],
    ids=str,
)
def test_losses_convert_no_number(name: str, stacked: bool, dtype: torch.dtype) -> None:
    make, kind = LOSSES[name]
    shape = (3, 20, 4) if stacked else (20, 4)
    prediction = torch.randn(shape, dtype=dtype)
    if kind == "indices":
        target = torch.randint(0, 4, shape[:-1])
    elif kind == "probabilities":
        target = torch.rand(shape, dtype=dtype)
    else:
        target = torch.randn(shape, dtype=dtype)
    criterion = make()

    def call() -> None:
        criterion(prediction, target)
        criterion.backward()

    assert _conversions(call) == []


#: The numbers that change from step to step, left as numbers (float32 converts them; float64
#: takes Python's floats as they are): Adam's bias correction, AdamW's decay factor 1 - lr wd.
CHANGING = {"Adam": ["aten::div_"], "AdamW": ["aten::mul_", "aten::div_"]}


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_steps_convert_no_constant(name: str, dtype: torch.dtype) -> None:
    model = nn.mlp((3, 5, 2), dtype=dtype)
    for parameter in model.parameters():
        parameter.grad.normal_()
    optimizer = OPTIMIZERS[name](list(model.parameters()))
    expected = CHANGING.get(name, []) if dtype == F32 else []
    assert _conversions(optimizer.step) == expected


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_batch_norm_converts_no_number(dtype: torch.dtype) -> None:
    """BatchNorm1d's own numbers are operands, the number of rows of its four means over the
    batch too (``Tensor.mean`` converted it inside ATen at every call: a sum and a division by
    a cached 0-dim tensor give its bits without that)."""
    module = nn.BatchNorm1d(6, dtype=dtype)
    x = torch.randn(20, 6, dtype=dtype)
    gradient = torch.randn(20, 6, dtype=dtype)

    def call() -> None:
        module(x)
        module.backward(gradient)

    assert _conversions(call) == []


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("flat", [True, False], ids=["flat buffer", "parameter by parameter"])
def test_clip_grad_norm_converts_no_number(flat: bool, dtype: torch.dtype) -> None:
    """clip_grad_norm_'s max_norm and the 1e-6 added to the norm are operands (it converted
    both at every call in float32, in ``total + 1e-6`` and ``max_norm / ...``), for gradients
    in a Sequential's flat buffer and for those of two layers apart."""
    layers = [nn.Linear(3, 5, dtype=dtype), nn.Linear(5, 2, dtype=dtype)]
    model = nn.Sequential(*layers) if flat else None
    parameters = [parameter for layer in layers for parameter in layer.parameters()]
    assert (model is not None) == (flat_buffer([p.grad for p in parameters]) is not None)
    for parameter in parameters:
        parameter.grad.normal_()

    def call() -> None:
        nn.clip_grad_norm_(parameters, 0.5)

    assert _conversions(call) == []


def test_an_operand_first_made_under_another_default_device_is_on_the_cpu() -> None:
    """The cache outlives the context it was filled in: a momentum first used inside
    ``torch.device("meta")`` (or after ``torch.set_default_device``) must still be a CPU
    tensor, or every later CPU step would multiply by a meta tensor, which does nothing."""
    _zero_dim.cache_clear()
    runs = []
    for first_in_meta in (True, False):
        parameter = nn.Parameter(torch.ones(3, dtype=torch.float64))
        optimizer = optim.SGD([parameter], lr=0.1, momentum=0.7)
        for step in range(3):
            parameter.grad.fill_(1.0)
            with torch.device("meta") if first_in_meta and step == 0 else contextlib.nullcontext():
                optimizer.step()
        runs.append(optimizer.state["momentum_buffer"].clone())
    like = torch.ones(1, dtype=torch.float64)
    with torch.device("meta"):
        assert operand(0.7, like).device.type == "cpu"  # type: ignore[union-attr]
    assert torch.equal(runs[0], runs[1])
    torch.testing.assert_close(
        runs[0], torch.full((3,), 0.1 * (1 + 0.7 + 0.49), dtype=torch.float64)
    )


def test_a_tensor_operand_is_the_cached_operand_or_a_new_0_dim_tensor() -> None:
    """For operations that take tensors only (``lerp``'s ``end``): the cached operand where
    :func:`operand` gives one, else a 0-dim tensor of the dtype (float16, or zero)."""
    x32 = torch.ones(3)
    assert tensor_operand(0.7, x32) is operand(0.7, x32)
    half = tensor_operand(0.7, x32.half())
    assert (
        half.dtype == torch.float16
        and half.dim() == 0
        and float(half) == float(torch.tensor(0.7).half())
    )
    zero = tensor_operand(-0.0, torch.ones(2, dtype=F64))
    assert zero.dtype == F64 and math.copysign(1.0, float(zero)) == -1.0


@pytest.mark.parametrize(
    "like",
    [
        torch.ones(2, dtype=torch.float16),
        torch.ones(2, dtype=torch.bfloat16),
        torch.ones(2, device="meta"),
    ],
    ids=["float16", "bfloat16", "meta"],
)
def test_a_tensor_operand_off_the_cached_cpu_dtypes_is_made_once(like: Tensor) -> None:
    # It was a new torch.full at every call: at every ELU forward on a GPU.
    with torch.inference_mode():  # (first asked for inside it: still a normal tensor)
        first = tensor_operand(0.37, like)
    assert not first.is_inference()
    assert tensor_operand(0.37, like) is first
    assert (first.dtype, first.device, first.dim()) == (like.dtype, like.device, 0)
    negative, positive = tensor_operand(-0.0, like), tensor_operand(0.0, like)
    assert negative is not positive and tensor_operand(-0.0, like) is negative
    if like.device.type == "cpu":
        assert float(first) == float(torch.tensor(0.37).to(like.dtype))
        assert math.copysign(1.0, float(negative)) == -1.0
        assert math.copysign(1.0, float(positive)) == 1.0


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize(
    "module", [nn.ELU, lambda: nn.ELU(2.5), nn.SELU], ids=["elu", "a2.5", "selu"]
)
def test_elu_derivative_is_the_two_sided_formula_bit_for_bit(
    dtype: torch.dtype, module: Callable[[], nn.ELU]
) -> None:
    """ELU's cached derivative, one ``lerp`` of its two sides on the indicator, is exactly
    ``scale`` at x > 0 and ``scale * alpha * e^x`` at x <= 0, as the products and sum
    ``scale * alpha * e^min(x, 0) * (1 - p) + scale * p`` it replaced gave."""
    layer = module()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, generator=generator, dtype=dtype) * 8
    x = torch.cat([x, torch.tensor([0.0, -0.0, -1e4, 1e4, math.inf, -math.inf], dtype=dtype)])
    layer(x)
    gradient = layer.backward(torch.ones_like(x))
    scaled_alpha = torch.tensor(layer._scale * layer._alpha, dtype=dtype)
    indicator = x.clamp_min(0).sign()
    expected = (
        x.clamp_max(0)
        .exp()
        .mul_(scaled_alpha)
        .mul_(1 - indicator)
        .add_(indicator, alpha=layer._scale)
    )
    assert torch.equal(_bits(gradient), _bits(expected))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_operand_is_operands_cached_tensor(dtype: torch.dtype) -> None:
    """The operand of an operation that takes tensors only (Tanh's addcmul) is the one tensor
    that operand gives for a CPU tensor of that dtype, a normal tensor inside inference mode."""
    like = torch.ones(3, dtype=dtype)
    with torch.inference_mode():
        one = cpu_operand(1.0, dtype)
    assert one is operand(1.0, like)
    assert one.dtype == dtype and one.dim() == 0 and not one.is_inference()
    assert one.item() == 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_operand_keeps_the_sign_of_zero(dtype: torch.dtype) -> None:
    # Cached by value, -0.0 came back as the +0.0 asked for first (0.0 == -0.0).
    positive, negative = cpu_operand(0.0, dtype), cpu_operand(-0.0, dtype)
    assert math.copysign(1.0, positive.item()) == 1.0
    assert math.copysign(1.0, negative.item()) == -1.0
    assert cpu_operand(-0.0, dtype) is negative  # (cached too)
    assert negative.dtype == dtype and negative.is_cpu and not negative.is_inference()
    x = torch.tensor([0.0, -0.0], dtype=dtype)
    for operand_ in (positive, negative):  # the bits of the number itself, as operand's
        assert torch.equal(_bits(x * operand_), _bits(x * operand_.item()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, F32, F64], ids=str)
def test_scaled_takes_the_factor_as_add_scaled_takes_it(dtype: torch.dtype) -> None:
    """``scaled(x, a)`` is ``x * a`` rounded once, with ``a`` rounded to a 16-bit dtype first
    (as ``add_scaled_``'s ``alpha``, which SGD's velocity takes its rate as): Nesterov's step
    ``lr g + mu v`` scales ``g`` by the rate of ``v = mu v + lr g``. With ``a`` in float32
    (as ``x.mul(a)`` takes it) some elements differ; float32 and float64 get ``x.mul(a)``."""
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0)).to(dtype)
    for factor in (0.1, -0.3, 1.0, 0.7):
        if dtype in (torch.float16, torch.bfloat16):
            rounded = float(torch.tensor(factor, dtype=dtype))
            expected = (x.float() * rounded).to(dtype)
            assert torch.equal(scaled(x, factor), expected), factor
            as_velocity = add_scaled_(torch.zeros_like(x), x, factor)
            assert torch.equal(scaled(x, factor), as_velocity), factor
            if factor != 1.0:
                assert not torch.equal(expected, x.mul(factor)), factor
        else:
            assert torch.equal(_bits(scaled(x, factor)), _bits(x.mul(factor))), factor
