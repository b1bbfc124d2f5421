"""Gradient clipping: behaviours that the other clipping tests left unchecked.

Each test pins a behaviour a user relies on, against an oracle: PyTorch's own
``clip_grad_norm_`` on the same float16 gradients (bit for bit), the formula computed
independently, the exact message and type of a refusal (with every gradient left as it was),
and :func:`minidl.nn.clip_grad_norm_` on each model alone for a stack's :class:`StackClip`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import pytest
import torch

from minidl import nn

HALF = torch.float16
#: How a stack is laid out (stack_models' layout).
Layout = Literal["layer", "model"]


def _half_parameter(seed: int, size: int = 7) -> nn.Parameter:
    """A float16 parameter whose gradient is random, of a random scale in [1e-4, 1e2]."""
    generator = torch.Generator().manual_seed(seed)
    parameter = nn.Parameter(torch.zeros(size, dtype=HALF))
    scale = 10.0 ** float(torch.empty(()).uniform_(-4, 2, generator=generator))
    parameter.grad.copy_((torch.randn(size, generator=generator) * scale).to(HALF))
    return parameter


@pytest.mark.parametrize("limit", [0.3, 1.0, 20.0])
def test_float16_gradients_are_clipped_with_pytorchs_bits(limit: float) -> None:
    """float16 gradients of norms from 1e-4 to 1e3 (1 / (norm + 1e-6) finite in float16):
    the norm and every clipped gradient are PyTorch's bit for bit, the coefficient computed in
    float16 as PyTorch computes it, and clamped to 1, so that gradients within max_norm keep
    their bits (a coefficient in float32, or an unclamped one, differs)."""
    unchanged = 0
    for seed in range(40):
        parameter = _half_parameter(seed)
        before = parameter.grad.clone()
        twin = torch.nn.Parameter(parameter.data.clone())
        twin.grad = parameter.grad.clone()
        norm = nn.clip_grad_norm_(parameter, limit)
        expected = torch.nn.utils.clip_grad_norm_([twin], limit)
        assert norm.dtype == HALF
        assert torch.equal(norm, expected)
        assert torch.equal(parameter.grad, twin.grad)
        if float(norm) <= limit:
            assert torch.equal(parameter.grad, before)
            unchanged += 1
    assert 0 < unchanged < 40  # (both sides of max_norm)


@pytest.mark.parametrize("value", [1e-7, 1e-6, 4e-6])
def test_tiny_float16_gradients_within_max_norm_keep_their_bits(value: float) -> None:
    """A float16 norm below 1.5e-5 (1 / (norm + 1e-6) overflows float16) and within max_norm:
    the coefficient, computed in float32, is clamped to 1 and the gradients keep their bits, as
    PyTorch leaves them."""
    for limit in (1e-4, 1.0, 1e4):
        parameter = nn.Parameter(torch.zeros(3, dtype=HALF))
        parameter.grad.fill_(value)
        twin = torch.nn.Parameter(parameter.data.clone())
        twin.grad = parameter.grad.clone()
        nn.clip_grad_norm_(parameter, limit)
        torch.nn.utils.clip_grad_norm_([twin], limit)
        assert torch.equal(parameter.grad, torch.full((3,), value, dtype=HALF))
        assert torch.equal(parameter.grad, twin.grad)


@pytest.mark.parametrize("limit", [1e-6, 2e-6, 4e-6])
def test_tiny_float16_gradients_are_scaled_by_the_formula(limit: float) -> None:
    """A float16 norm below 1.5e-5 above max_norm: every gradient times max_norm / (norm +
    1e-6), the formula's coefficient (computed in float32, rounded to float16), to float16's
    precision (its subnormals); PyTorch's float16 coefficient overflowed there and left them unclipped."""
    parameter = nn.Parameter(torch.zeros(4, dtype=HALF))
    parameter.grad.copy_(torch.tensor([2e-6, -4e-6, 6e-6, 0.0]).to(HALF))
    given = parameter.grad.double()
    norm = nn.clip_grad_norm_(parameter, limit)
    coefficient = limit / (float(norm) + 1e-6)
    assert coefficient < 1.0
    # (float16's subnormals here are 6e-8 apart: half of that off at most)
    torch.testing.assert_close(parameter.grad.double(), given * coefficient, rtol=0, atol=3e-8)


def test_short_float16_gradients_are_measured_as_pytorch_measures_them() -> None:
    """One float16 parameter of at most 4096 entries, of orders 2, 1, 3 and 0.5: the total norm
    is PyTorch's bit for bit (one reduction in float16, as PyTorch's), and so is every clipped
    gradient; a norm taken in float32 and rounded once differs for some (a 2955-entry gradient of
    norm 3719.0 is 3720 in PyTorch, 3718 so)."""
    for seed in range(40):
        generator = torch.Generator().manual_seed(seed)
        size = int(torch.randint(1, 4097, (1,), generator=generator))
        values = torch.randn(size, generator=generator)
        values *= 10.0 ** float(torch.empty(()).uniform_(-3, 2, generator=generator))
        values = values.to(HALF)
        for order in (2.0, 1.0, 3.0, 0.5):
            parameter = nn.Parameter(torch.zeros(size, dtype=HALF))
            parameter.grad.copy_(values)
            twin = torch.nn.Parameter(parameter.data.clone())
            twin.grad = values.clone()
            norm = nn.clip_grad_norm_(parameter, 1.0, order)
            expected = torch.nn.utils.clip_grad_norm_([twin], 1.0, order)
            assert torch.equal(norm, expected), (seed, order)
            assert torch.equal(parameter.grad, twin.grad)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_norm": -(10**400)}, "max_norm"),
        ({"max_norm": 1.0, "norm_type": -(10**400)}, "norm_type"),
    ],
    ids=["max_norm", "norm_type"],
)
def test_a_negative_number_beyond_the_floats_is_refused(
    kwargs: dict[str, object], name: str
) -> None:
    """-10**400 is below every float, not beyond them as 10**400 is (taken as infinity): as
    max_norm, norm_type or clip_value it is refused as a negative number, naming its size, and
    no gradient changes."""
    layer = nn.Linear(3, 2)
    for parameter in layer.parameters():
        parameter.grad.normal_()
    before = [parameter.grad.clone() for parameter in layer.parameters()]
    expected = {
        "max_norm": "a number in [0, inf] (a float or an int)",
        "norm_type": "a number in (0, inf] (a float or an int, or the string 'inf')",
    }[name]
    with pytest.raises(ValueError) as raised:
        nn.clip_grad_norm_(layer.parameters(), **kwargs)  # type: ignore[arg-type]
    assert str(raised.value) == (
        f"clip_grad_norm_: {name} must be {expected}, got a negative int of 401 digits"
    )
    with pytest.raises(ValueError) as raised:
        nn.clip_grad_value_(layer.parameters(), -(10**400))
    assert str(raised.value) == (
        "clip_grad_value_: clip_value must be a number in [0, inf] (a float or an int), got a "
        "negative int of 401 digits"
    )
    for parameter, grad in zip(layer.parameters(), before, strict=True):
        assert torch.equal(parameter.grad, grad)


def _stack_and_twins(
    sizes: tuple[int, ...], models: int, seed: int, dtype: torch.dtype = torch.float64
) -> tuple[list[nn.Sequential], list[nn.Sequential]]:
    """R random MLPs of ``sizes`` and their copies, whose gradients are random, each model's of
    another scale (1e-3 to 1e3: some clipped, some not)."""
    import copy

    torch.manual_seed(seed)
    alone = [nn.mlp(sizes, "tanh", dtype=dtype) for _ in range(models)]
    twins = [copy.deepcopy(model) for model in alone]
    generator = torch.Generator().manual_seed(seed)
    for index, twin in enumerate(twins):
        scale = 10.0 ** (6.0 * index / max(models - 1, 1) - 3.0)
        for parameter in twin.parameters():
            values = torch.randn(parameter.grad.shape, generator=generator, dtype=torch.float64)
            parameter.grad.copy_(values * scale)
    return alone, twins


def _stack_clip(
    twins: list[nn.Sequential],
    alone: list[nn.Sequential],
    layout: Layout,
    limit: float,
    unheld: int | None = None,
) -> nn.Sequential:
    """The models of ``alone`` stacked (laid out by ``layout``), each model's gradients set to
    its twin's, each held by an optimizer of its own (but model ``unheld``'s, which holds none
    of the parameters it was given), clipped by :class:`StackClip`."""
    from minidl.nn._stack_clip import StackClip

    stack = nn.stack_models(alone, layout=layout)
    flat = layout == "model"
    holders = []
    for index, twin in enumerate(twins):
        own = nn.model_parameters(stack, index)
        for parameter, source in zip(own, twin.parameters(), strict=True):
            parameter.grad.copy_(source.grad)
        given = [nn.flat_model_parameters(stack, slice(index, index + 1))] if flat else own
        held = given if index != unheld else []
        holders.append((f"optimizer {index}", index, index + 1, given, held))
    StackClip(stack, limit, holders, flat=flat, where="test")()
    return stack


@pytest.mark.parametrize("layout", ["layer", "model"])
@pytest.mark.parametrize("sizes", [(64, 64, 1), (32, 128, 1), (8, 1024, 1), (2, 4095, 1)], ids=str)
def test_stack_models_of_4096_gradients_a_layer_are_clipped_as_each_alone(
    sizes: tuple[int, ...], layout: Layout
) -> None:
    """Models whose largest layer holds exactly 4096 gradients (a multiple of the rows of 4096
    entries in which a long gradient is measured; laid out by model, a block of 4096 and more),
    float64: each model's gradients, clipped in the stack, are clip_grad_norm_'s of the model
    alone, to 1e-13."""
    alone, twins = _stack_and_twins(sizes, 3, seed=sum(sizes))
    stack = _stack_clip(twins, alone, layout, 1.0)
    for index, twin in enumerate(twins):
        nn.clip_grad_norm_(twin.parameters(), 1.0)
        for parameter, expected in zip(
            nn.model_parameters(stack, index), twin.parameters(), strict=True
        ):
            torch.testing.assert_close(parameter.grad, expected.grad, rtol=1e-13, atol=0)


@pytest.mark.parametrize("sizes", [(64, 64, 1), (2, 4095, 1), (40, 300, 2)], ids=str)
def test_stack_models_laid_out_by_model_are_clipped_to_the_bits_of_each_alone(
    sizes: tuple[int, ...],
) -> None:
    """float32 models of more than 4096 gradients each, laid out by model: each model's block
    is measured as clip_grad_norm_ measures the model's own flat buffer (rows of 4096, the rest,
    the norm of their norms), so its clipped gradients are those of the model alone, bit for
    bit (one reduction over the block rounds otherwise)."""
    alone, twins = _stack_and_twins(sizes, 3, seed=sum(sizes), dtype=torch.float32)
    for twin in twins:
        for parameter in twin.parameters():
            parameter.grad.add_(0.5)  # (a mean away from 0: a long sum's rounding shows)
    stack = _stack_clip(twins, alone, "model", 1.0)
    for index, twin in enumerate(twins):
        nn.clip_grad_norm_(twin.parameters(), 1.0)
        for parameter, expected in zip(
            nn.model_parameters(stack, index), twin.parameters(), strict=True
        ):
            assert torch.equal(parameter.grad, expected.grad)


@pytest.mark.parametrize("layout", ["layer", "model"])
def test_a_model_whose_optimizer_holds_none_of_its_gradients_is_left_as_it_is(
    layout: Layout,
) -> None:
    """A stack whose model 1's optimizer holds none of the parameters it was given (laid out by
    model too, where the one flat parameter is each model's): model 1's gradients keep their
    bits, neither counted nor scaled, and models 0 and 2 are clipped as clip_grad_norm_ clips
    each alone, to 1e-13."""
    alone, twins = _stack_and_twins((3, 5, 2), 3, seed=4)
    for twin in twins:
        for parameter in twin.parameters():
            parameter.grad.mul_(1e3)  # (every model's norm above max_norm)
    stack = _stack_clip(twins, alone, layout, 0.5, unheld=1)
    for index, twin in enumerate(twins):
        if index != 1:
            assert float(nn.clip_grad_norm_(twin.parameters(), 0.5)) > 0.5  # (clipped)
        for parameter, expected in zip(
            nn.model_parameters(stack, index), twin.parameters(), strict=True
        ):
            torch.testing.assert_close(parameter.grad, expected.grad, rtol=1e-13, atol=0)
    assert float(torch.cat([p.grad.flatten() for p in twins[1].parameters()]).norm()) > 0.5


@pytest.mark.parametrize("layout", ["layer", "model"])
def test_float16_stack_models_are_clipped_to_the_bits_of_each_alone(layout: Layout) -> None:
    """float16 models of gradients of norms about 1e-3, 1 and 1e3 against a max_norm of 1:
    each model's gradients, clipped in the stack, are clip_grad_norm_'s of the model alone bit
    for bit; the one within max_norm keeps its bits (its coefficient clamped to 1)."""
    alone, twins = _stack_and_twins((3, 6, 2), 3, seed=5, dtype=HALF)
    before = [[parameter.grad.clone() for parameter in twin.parameters()] for twin in twins]
    stack = _stack_clip(twins, alone, layout, 1.0)
    for index, twin in enumerate(twins):
        norm = nn.clip_grad_norm_(twin.parameters(), 1.0)
        assert (float(norm) < 1.0) == (index == 0)
        for parameter, expected, given in zip(
            nn.model_parameters(stack, index), twin.parameters(), before[index], strict=True
        ):
            assert torch.equal(parameter.grad, expected.grad)
            if index == 0:
                assert torch.equal(parameter.grad, given)


@pytest.mark.parametrize("clip", [nn.clip_grad_norm_, nn.clip_grad_value_])
def test_a_name_and_parameter_pair_as_a_list_is_refused_with_the_fix(
    clip: Callable[..., object],
) -> None:
    """A ``[name, Parameter]`` pair given as a list (named_parameters() turned into lists, as
    JSON-like code does) is named as the pair it is, with the fix, as a tuple pair is; no
    gradient changes."""
    model = nn.mlp((2, 3, 2))
    for parameter in model.parameters():
        parameter.grad.normal_()
    before = [parameter.grad.clone() for parameter in model.parameters()]
    name = clip.__name__
    pairs = [[key, parameter] for key, parameter in model.named_parameters()]
    with pytest.raises(TypeError) as raised:
        clip(pairs, 1e-3)
    assert str(raised.value) == (
        f"{name}: expected Parameters, got list at position 0, a pair as named_parameters() "
        "gives (pass model.parameters())"
    )
    for parameter, grad in zip(model.parameters(), before, strict=True):
        assert torch.equal(parameter.grad, grad)


@pytest.mark.parametrize(
    "pair",
    [
        ("weight", torch.zeros(2)),
        ("weight", "bias"),
        (torch.zeros(2), 1.0),
        (torch.zeros(2), None),
        # (enumerate(model.parameters())'s: no named_parameters() fix)
        (0, nn.Parameter(torch.zeros(2))),
    ],
    ids=["name-tensor", "name-name", "tensor-number", "tensor-none", "index-parameter"],
)
@pytest.mark.parametrize("clip", [nn.clip_grad_norm_, nn.clip_grad_value_])
def test_a_pair_of_another_kind_is_named_without_a_wrong_fix(
    clip: Callable[..., object], pair: tuple[object, object]
) -> None:
    """A pair that is neither (name, Parameter), as named_parameters() gives, nor (value,
    gradient) tensors, as param() gives, is named as the tuple it is, with no fix that does not
    apply; no gradient changes."""
    model = nn.mlp((2, 3, 2))
    for parameter in model.parameters():
        parameter.grad.normal_()
    before = [parameter.grad.clone() for parameter in model.parameters()]
    name = clip.__name__
    with pytest.raises(TypeError) as raised:
        clip([*model.parameters(), pair], 1e-3)
    assert str(raised.value) == f"{name}: expected Parameters, got tuple at position 4"
    for parameter, grad in zip(model.parameters(), before, strict=True):
        assert torch.equal(parameter.grad, grad)


def test_a_numpy_bool_flag_is_refused_naming_numpys_type() -> None:
    """error_if_nonfinite=np.True_ is refused as no bool, its type named with its module
    (NumPy calls it ``bool`` too: "must be a bool, got bool" would contradict itself), and no
    gradient changes."""
    import numpy as np

    layer = nn.Linear(3, 2)
    for parameter in layer.parameters():
        parameter.grad.normal_()
    before = [parameter.grad.clone() for parameter in layer.parameters()]
    with pytest.raises(TypeError) as raised:
        nn.clip_grad_norm_(layer.parameters(), 1e-3, error_if_nonfinite=np.True_)  # type: ignore[arg-type]
    assert str(raised.value) == (
        "clip_grad_norm_: error_if_nonfinite must be a bool, got numpy.bool np.True_"
    )
    for parameter, grad in zip(layer.parameters(), before, strict=True):
        assert torch.equal(parameter.grad, grad)


@pytest.mark.parametrize("seed", [0, 7])
def test_a_long_float16_gradient_is_measured_to_its_correctly_rounded_norm(seed: int) -> None:
    """A float16 gradient of more than 4096 entries (measured as rows of 4096, the norm of their
    norms) has its norm taken in float32 and rounded once to float16: the float64 norm of its
    values rounded to float16, bit for bit, in float16 (rounding each row's norm to float16 first
    is a unit in the last place off for these seeds)."""
    generator = torch.Generator().manual_seed(seed)
    parameter = nn.Parameter(torch.zeros(3 * 4096 + 5, dtype=torch.float16))
    values = torch.rand(parameter.grad.shape, generator=generator, dtype=torch.float64) + 0.5
    parameter.grad.copy_(values.to(torch.float16))
    exact = torch.linalg.vector_norm(parameter.grad.double()).to(torch.float16)
    total = nn.clip_grad_norm_(parameter, math.inf)
    assert total.dtype == torch.float16
    assert torch.equal(total, exact)
