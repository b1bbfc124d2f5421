"""Probes of the public API with bad inputs: each is refused with a message naming the
function, what was given and what was expected, and leaves every bit of state as it was."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pytest
import torch

from minidl import nn, optim


def test_a_parameter_refuses_data_or_grad_whose_elements_share_memory() -> None:
    # An expanded tensor used to be taken; the optimizer's step then failed part-way, with the
    # parameters before it updated, and load_state_dict likewise.
    first, second = nn.Linear(3, 4), nn.Linear(4, 2)
    params = list(first.parameters()) + list(second.parameters())
    for parameter in params:
        parameter.grad.normal_()
    optimizer = optim.SGD(params, lr=0.1, momentum=0.9)
    before = [(p.data.clone(), p.grad.clone()) for p in params]
    bias = params[3]
    for name in ("data", "grad"):
        with pytest.raises(
            ValueError,
            match=rf"Parameter 'bias': {name} of shape \(2,\) has "
            r"elements that share memory \(strides \(0,\)",
        ):
            setattr(bias, name, torch.zeros(1).expand(2))
    with pytest.raises(ValueError, match=r"Parameter: data of shape \(2, 3\) has elements"):
        nn.Parameter(torch.zeros(1, 3).expand(2, 3))
    optimizer.step()  # (the parameters are as they were: the step runs whole)
    for (data, grad), parameter in zip(before, params, strict=True):
        assert torch.equal(parameter.grad, grad)
        assert not torch.equal(parameter.data, data)
    # A stride of 0 over one element shares nothing; transposed data is its own.
    nn.Parameter(torch.zeros(1).expand(1))
    nn.Parameter(torch.zeros(3, 4).t())


def test_a_parameter_refuses_data_or_grad_whose_elements_overlap_without_a_stride_of_0() -> None:
    # torch.as_strided((4, 2), (1, 1)) puts elements 1 and 2 apart at one location, with no
    # stride of 0: it used to be taken, and an SGD step then moved those locations twice (a
    # gradient of ones gave -0.2 where -0.1 was expected).
    layer = nn.Linear(2, 4, dtype=torch.float64)
    before = [(p.data.clone(), p.grad.clone()) for p in layer.parameters()]
    base = torch.zeros(5, dtype=torch.float64)
    for name in ("data", "grad"):
        with pytest.raises(
            ValueError,
            match=rf"Parameter 'weight': {name} of shape \(4, 2\) has elements that share memory "
            r"\(strides \(1, 1\), as torch.as_strided can make\)",
        ):
            setattr(layer.weight, name, base.as_strided((4, 2), (1, 1)))
    with pytest.raises(ValueError, match=r"Parameter: data of shape \(3, 3\) has elements"):
        nn.Parameter(torch.zeros(9).as_strided((3, 3), (2, 1)))
    for (data, grad), parameter in zip(before, layer.parameters(), strict=True):
        assert torch.equal(parameter.data, data) and torch.equal(parameter.grad, grad)
    # Strides that interleave without meeting are taken (offsets 0, 2, 4, 3, 5, 7, 6, 8, 10),
    # and so are slices and permutations.
    for data in (
        torch.zeros(11).as_strided((3, 3), (3, 2)),
        torch.zeros(6, 8)[::2, 1::3],
        torch.zeros(2, 3, 4).permute(2, 0, 1),
    ):
        parameter = nn.Parameter(data)
        parameter.grad = torch.ones_like(data)
        optim.SGD([parameter], lr=0.1).step()
        assert torch.equal(parameter.data, torch.full(data.shape, -0.1))


def test_a_parameter_refuses_a_grad_that_shares_memory_with_its_data_and_the_reverse() -> None:
    # layer.weight.grad = layer.weight.data used to be taken: the backward then accumulated
    # into the weight while reading it, and its input gradient was computed from the changed
    # weight (PyTorch's, from the weight before the accumulation).
    layer = nn.Linear(3, 3, dtype=torch.float64)
    weight = layer.weight
    before = weight.data.clone(), weight.grad.clone(), weight.data, weight.grad
    # The data itself, its transpose, a tensor over its memory.
    for grad in (weight.data, weight.data.t(), torch.from_numpy(weight.data.numpy())):
        with pytest.raises(
            ValueError,
            match=r"^Parameter 'weight': grad shares memory with data, but a backward "
            r"accumulates into grad while it reads data; expected a tensor of its own "
            r"\(pass grad.clone\(\)\)$",
        ):
            weight.grad = grad
    with pytest.raises(ValueError, match=r"^Parameter 'weight': data shares memory with grad"):
        weight.data = weight.grad
    assert weight.data is before[2] and weight.grad is before[3]
    assert torch.equal(weight.data, before[0]) and torch.equal(weight.grad, before[1])
    # Data that the grad does not fit gets a new grad, of zeros: a view of the old grad is taken.
    old_grad = weight.grad
    weight.data = old_grad.view(-1)[:2]
    assert torch.equal(weight.grad, torch.zeros(2, dtype=torch.float64))
    assert weight.grad.untyped_storage().data_ptr() != old_grad.untyped_storage().data_ptr()


def test_a_parameter_takes_a_grad_and_data_in_two_parts_of_one_buffer_that_do_not_meet() -> None:
    # A value and its gradient laid out in one allocation, side by side, share no memory: a
    # backward that accumulates into the one never reads what it writes through the other.
    # They were refused, as if the grad were over the data, for lying in one storage.
    F64 = torch.float64
    buffer = torch.zeros(2, 3, 4, dtype=F64)
    parameter = nn.Parameter(buffer[0, :2])
    parameter.grad = buffer[1, 1:]
    parameter.grad.fill_(1.0)
    optim.SGD([parameter], lr=0.1).step()
    assert torch.equal(buffer[0, :2], torch.full((2, 4), -0.1, dtype=F64))
    assert torch.equal(buffer[1, 1:], torch.ones(2, 4, dtype=F64))
    assert torch.equal(buffer[0, 2], torch.zeros(4, dtype=F64))
    assert torch.equal(buffer[1, 0], torch.zeros(4, dtype=F64))
    # And the reverse: data put beside the grad it keeps, which it keeps.
    parameter.data = buffer[0, 1:]
    assert parameter.grad.data_ptr() == buffer[1, 1:].data_ptr()
    other = torch.zeros(5, 4, dtype=F64)
    layer = nn.Linear(4, 2, dtype=F64)
    layer.weight.grad = other[:2]
    layer.weight.data = other[3:]
    twin = nn.Linear(4, 2, dtype=F64)
    twin.weight.data.copy_(layer.weight.data)
    twin.bias.data.copy_(layer.bias.data)
    x, g = torch.randn(6, 4, dtype=F64), torch.randn(6, 2, dtype=F64)
    layer(x)
    twin(x)
    assert torch.equal(layer.backward(g), twin.backward(g))
    assert torch.equal(layer.weight.grad, twin.weight.grad)
    # Meta tensors hold no memory: views at one offset of two meta buffers are taken.
    meta = nn.Parameter(torch.empty(8, device="meta")[4:])
    meta.grad = torch.empty(8, device="meta")[4:]
    # Parts whose spans meet are still refused: a grad over part of the data.
    with pytest.raises(ValueError, match=r"grad shares memory with data"):
        layer.weight.grad = other[2:4]
    # Parts that share their last and first element only still meet, either way round.
    buffer = torch.arange(7.0)
    with pytest.raises(ValueError, match=r"grad shares memory with data"):
        nn.Parameter(buffer[:4]).grad = buffer[3:]
    with pytest.raises(ValueError, match=r"grad shares memory with data"):
        nn.Parameter(buffer[3:]).grad = buffer[:4]


def test_a_parameter_without_elements_takes_a_grad_without_elements_of_its_buffer() -> None:
    # A tensor without elements holds no memory, whatever its strides: the columns 0:0 and
    # 1:1 of one (3, 4) buffer, each of shape (3, 0) and strides (4, 1), are taken as data
    # and grad either way round, as PyTorch takes them. (Spans computed from the strides
    # alone, (size - 1) * stride summed, ran over 8 elements for each: they met, and the
    # grad was refused for sharing memory with the data.)
    buffer = torch.zeros(3, 4)
    parameter = nn.Parameter(buffer[:, 0:0])
    parameter.grad = buffer[:, 1:1]
    parameter.data = buffer[:, 2:2]
    assert parameter.shape == parameter.grad.shape == (3, 0)


def test_a_parameter_takes_data_and_grad_in_memory_that_adjoins_without_overlapping() -> None:
    """Two tensors over the two halves of one buffer (torch.from_numpy of each half) have
    storages of their own that meet at one address and share no byte: either is taken as the
    other's grad or data, and a step reads and writes each as its own (the grad's last
    element, just before the data, or the data's last, just before the grad)."""
    for data_first in (True, False):
        memory = np.arange(8, dtype=np.float64)
        first, second = torch.from_numpy(memory[:4]), torch.from_numpy(memory[4:])
        assert first.untyped_storage().data_ptr() + 32 == second.untyped_storage().data_ptr()
        data, grad = (first, second) if data_first else (second, first)
        expected_data, expected_grad = data.clone(), grad.clone()
        parameter = nn.Parameter(data.clone())
        parameter.grad = grad
        parameter.data = data
        assert parameter.data.data_ptr() == data.data_ptr()
        assert parameter.grad.data_ptr() == grad.data_ptr()
        optim.SGD([parameter], lr=0.5).step()
        assert torch.equal(parameter.grad, expected_grad)
        assert torch.equal(parameter.data, expected_data - 0.5 * expected_grad)


@pytest.mark.parametrize("make", [nn.CrossEntropyLoss, nn.NLLLoss, nn.MSELoss])
def test_a_meta_class_index_target_is_refused_like_one_on_another_device(make: type) -> None:
    # A meta target of the last accepted target's dtype and shape used to pass the fast path:
    # the kernel read indices from nowhere (a loss of about -3e25, or 0), on a fresh loss too.
    criterion = make()
    prediction, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    loss = criterion(prediction, target)
    gradient = criterion.backward()
    name = make.__name__
    for fresh in (False, True):
        if fresh:
            criterion = make()
        with pytest.raises(
            ValueError, match=f"^{name}: target is on meta but the prediction is on cpu$"
        ):
            criterion(prediction, target.to("meta"))
    criterion = make()
    criterion(prediction, target)
    with pytest.raises(ValueError):
        criterion(prediction, target.to("meta"))
    assert torch.equal(criterion.backward(), gradient)  # (the last forward's, still)
    assert torch.equal(criterion(prediction, target), loss)
    # A meta target of meta logits holds no values to check: shapes only.
    assert criterion(prediction.to("meta"), target.to("meta")).is_meta


@pytest.mark.parametrize("make", [nn.CrossEntropyLoss, nn.NLLLoss, nn.MSELoss])
def test_class_indices_on_the_cpu_for_a_meta_prediction_are_refused(make: type) -> None:
    """The mirror case: CPU indices of a meta prediction passed the fast path, index 7 of 3
    classes too (a meta kernel reads no index, and takes one on another device), where PyTorch
    and a probability target are refused; the last forward is kept for the backward."""
    criterion = make()
    criterion(torch.zeros(2, 3, device="meta"), torch.tensor([0, 2], device="meta"))
    for target in (torch.tensor([0, 7]), torch.tensor([0, 1])):
        with pytest.raises(
            ValueError, match=f"^{make.__name__}: target is on cpu but the prediction is on meta$"
        ):
            criterion(torch.zeros(2, 3, device="meta"), target)
    gradient = criterion.backward()
    assert gradient.is_meta and gradient.shape == (2, 3)


@pytest.mark.parametrize(
    ("make", "target"),
    [
        (nn.CrossEntropyLoss, torch.full((4, 3), 1 / 3)),
        (nn.BCEWithLogitsLoss, torch.full((4, 3), 0.5)),
        (nn.MSELoss, torch.zeros(4, 3)),
        (nn.L1Loss, torch.zeros(4, 3)),
        (nn.HuberLoss, torch.zeros(4, 3)),
    ],
    ids=["CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss", "L1Loss", "HuberLoss"],
)
def test_a_meta_float_target_of_meta_logits_is_shapes_only(
    make: type, target: torch.Tensor
) -> None:
    """As for class indices: no values to check. CrossEntropyLoss's probability check and
    BCEWithLogitsLoss's range check read them, and failed in the tensor library's words
    ("Tensor.item() cannot be called on meta tensors")."""
    criterion = make()
    loss = criterion(torch.randn(4, 3, device="meta"), target.to("meta"))
    assert loss.is_meta and loss.shape == ()
    gradient = criterion.backward()
    assert gradient.is_meta and gradient.shape == (4, 3)
    # A meta target of CPU logits is refused, as before.
    with pytest.raises(ValueError, match="target is on meta but the prediction is on cpu"):
        make()(torch.randn(4, 3), target.to("meta"))


def test_a_losss_upstream_gradient_must_be_real_and_where_the_gradient_can_take_it() -> None:
    criterion = nn.CrossEntropyLoss()
    criterion(torch.randn(3, 2), torch.tensor([0, 1, 1]))
    gradient = criterion.backward()
    # A complex upstream made the gradient complex; one on another device failed in the tensor
    # library's words, naming no loss.
    with pytest.raises(
        TypeError,
        match=r"^CrossEntropyLoss.backward: the upstream gradient must be a real scalar, got "
        r"dtype torch.complex64$",
    ):
        criterion.backward(torch.tensor(1j))
    with pytest.raises(
        ValueError,
        match=r"^CrossEntropyLoss.backward: the upstream gradient is on meta but the prediction "
        r"is on cpu; expected a scalar on cpu$",
    ):
        criterion.backward(torch.tensor(2.0, device="meta"))
    assert torch.equal(criterion.backward(torch.tensor(2.0, dtype=torch.float64)), 2 * gradient)


SETTINGS = [
    (lambda: nn.Dropout(0.5), "p", 1.0, r"Dropout: p must be in \[0, 1\), got 1.0"),
    (nn.LeakyReLU, "negative_slope", math.inf, "LeakyReLU: negative_slope must be a finite number"),
    (nn.ELU, "alpha", math.nan, r"ELU: alpha must be a finite number, got nan"),
    (nn.GELU, "approximate", "exact", r"GELU: approximate must be 'none' or 'tanh', got 'exact'"),
    (lambda: nn.BatchNorm1d(3), "eps", -1, r"BatchNorm1d: eps must be in \(0, inf\), got -1"),
    (lambda: nn.BatchNorm1d(3), "momentum", 2, r"BatchNorm1d: momentum must be in \[0, 1\]"),
    (nn.HuberLoss, "delta", -1, r"HuberLoss: delta must be in \(0, inf\), got -1"),
    (nn.HuberLoss, "reduction", "bogus", "HuberLoss: reduction must be 'mean' or 'sum'"),
    (nn.L1Loss, "reduction", "bogus", "L1Loss: reduction must be 'mean' or 'sum'"),
    (nn.NLLLoss, "reduction", None, "NLLLoss: reduction must be 'mean' or 'sum', got None"),
    (nn.BCEWithLogitsLoss, "reduction", "bogus", "BCEWithLogitsLoss: reduction must be"),
    (nn.MSELoss, "reduction", "bogus", "MSELoss: reduction must be 'paper', 'mean' or 'sum'"),
    (nn.Softmax, "dim", 0, r"Softmax: dim must be 1 \(or -1\)"),
    (nn.LogSoftmax, "dim", 5, r"LogSoftmax: dim must be 1 \(or -1\)"),
]


@pytest.mark.parametrize(("make", "name", "bad", "message"), SETTINGS)
def test_a_modules_setting_is_checked_when_set_as_by_its_constructor(
    make: type, name: str, bad: object, message: str
) -> None:
    # These were plain attributes: a bad value was taken, then computed with silently (an
    # unknown reduction summed, a negative delta or eps, a negative ELU alpha, a BatchNorm
    # momentum of 2) or failed at the next forward in the tensor library's words.
    module = make()
    good = getattr(module, name)
    with pytest.raises(ValueError, match=f"^{message}"):
        setattr(module, name, bad)
    assert getattr(module, name) == good
    setattr(module, name, good)  # (a good value is taken)
    assert getattr(module, name) == good


def test_a_module_pickled_with_its_setting_as_a_plain_attribute_loads_it() -> None:
    dropout = nn.Dropout(0.25)
    state = dropout.__getstate__()
    state["p"] = state.pop("_p")  # as pickled before the setting existed
    loaded = nn.Dropout.__new__(nn.Dropout)
    loaded.__setstate__(state)
    assert loaded.p == 0.25
    assert repr(loaded) == repr(dropout)


class _QuietELU(nn.ELU):
    """An ELU whose repr shows no alpha."""

    def extra_repr(self) -> str:
        return ""


def test_stacking_tells_activations_apart_by_a_setting_their_repr_hides() -> None:
    # An activation of one's own whose repr shows no setting (SELU's was such, when its alpha
    # could be set): stack_models compares the settings too, now kept by a Setting.
    first = nn.Sequential(nn.Linear(2, 3), _QuietELU(), nn.Linear(3, 2))
    second = nn.Sequential(nn.Linear(2, 3), _QuietELU(), nn.Linear(3, 2))
    second.load_state_dict(first.state_dict())
    second[1].alpha = 2.0
    assert repr(first) == repr(second)
    stacked = nn.stack_models([first, second])
    x = torch.randn(5, 2)
    output = stacked(torch.stack([x, x]))
    torch.testing.assert_close(output[0], first(x))
    torch.testing.assert_close(output[1], second(x))
    assert not torch.equal(output[0], output[1])


@pytest.mark.parametrize("path", [3, None, b"run.ckpt"])
def test_reading_or_loading_a_checkpoint_names_a_path_of_the_wrong_type(path: object) -> None:
    # It failed in os.fspath's words ("expected str, bytes or os.PathLike object, not int"),
    # naming neither function.
    from minidl.checkpoint import CheckpointError, load_checkpoint, read_checkpoint

    kind = type(path).__name__
    with pytest.raises(
        CheckpointError, match=rf"^read_checkpoint: path must be a str or os.PathLike, got {kind}$"
    ):
        read_checkpoint(path)  # type: ignore[arg-type]
    model = nn.mlp([2, 3, 2])
    before = [p.data.clone() for p in model.parameters()]
    with pytest.raises(
        CheckpointError,
        match=r"^load_checkpoint: path must be a str or os.PathLike \(or a Checkpoint from "
        rf"read_checkpoint\), got {kind}$",
    ):
        load_checkpoint(path, model)  # type: ignore[arg-type]
    assert all(torch.equal(p.data, b) for p, b in zip(model.parameters(), before, strict=True))


# -- a subclass that overrides a setting with an attribute or a property of its own ---------------
# forward reads the setting's slot (_p): such a subclass used to fail there with
# "AttributeError: 'Annealed' object has no attribute '_p'" (as it worked before the settings).


class _Annealed(nn.Dropout):
    """``p`` a property: the base rate times a factor."""

    def __init__(self, p: float) -> None:
        self.factor = 1.0
        super().__init__(p)  # (its self.p = p goes to the setter below, as before the settings)

    @property
    def p(self) -> float:
        return self.base * self.factor

    @p.setter
    def p(self, value: float) -> None:
        self.base = value


def test_a_dropout_whose_p_is_a_property_drops_with_the_propertys_value() -> None:
    annealed, plain = _Annealed(0.5), nn.Dropout(0.5)
    assert annealed.base == 0.5
    x, grad = torch.randn(6, 7), torch.randn(6, 7)
    torch.manual_seed(3)
    output = annealed(x)
    torch.manual_seed(3)
    assert torch.equal(output, plain(x))
    assert torch.equal(annealed.backward(grad), plain.backward(grad))
    annealed.factor = 0.0  # p is 0: the identity
    assert annealed.p == 0.0
    assert torch.equal(annealed(x), x)
    assert torch.equal(annealed.backward(grad), grad)


def test_a_read_only_property_over_a_setting_is_refused_by_the_base_constructor_as_before() -> None:
    class Never(nn.Dropout):
        @property
        def p(self) -> float:  # type: ignore[override]
            return 0.0

    with pytest.raises(AttributeError, match=r"property 'p' of '.*Never' object has no setter"):
        Never(0.5)


def test_a_leaky_relu_whose_slope_is_a_class_attribute_computes_with_the_instances() -> None:
    class Fixed(nn.LeakyReLU):
        negative_slope = 0.2

    x, grad = torch.tensor([[-1.0, 2.0, -3.0]]), torch.tensor([[1.0, 1.0, 2.0]])
    # The constructor's value is the instance's, over the class's, as before the settings.
    default, given = Fixed(), Fixed(0.3)
    assert (Fixed.negative_slope, default.negative_slope, given.negative_slope) == (0.2, 0.01, 0.3)
    torch.testing.assert_close(given(x), torch.tensor([[-0.3, 2.0, -0.9]]))
    torch.testing.assert_close(given.backward(grad), torch.tensor([[0.3, 1.0, 0.6]]))
    torch.testing.assert_close(default(x), torch.tensor([[-0.01, 2.0, -0.03]]))
    given.negative_slope = 0.5  # (a plain attribute now: the subclass's)
    torch.testing.assert_close(given(x), torch.tensor([[-0.5, 2.0, -1.5]]))


class _SteepSlope:
    """A mixin (not a module) whose ``negative_slope`` property overrides LeakyReLU's setting."""

    @property
    def negative_slope(self) -> float:
        return 0.3

    @negative_slope.setter
    def negative_slope(self, value: float) -> None:
        self.asked = value


class _SlopeAttribute:
    """A mixin whose ``negative_slope`` is a plain class attribute."""

    negative_slope = 0.2


def test_a_setting_overridden_by_a_mixin_is_read_from_it_as_torch_reads_it() -> None:
    # Only a name defined by the subclass itself was looked at: a mixin's property or
    # attribute (before LeakyReLU in the MRO) left _negative_slope unset, and the first forward
    # failed with "AttributeError: 'Steep' object has no attribute '_negative_slope'".
    class Steep(_SteepSlope, nn.LeakyReLU):
        pass

    class TorchSteep(_SteepSlope, torch.nn.LeakyReLU):
        pass

    class Fixed(_SlopeAttribute, nn.LeakyReLU):
        pass

    class TorchFixed(_SlopeAttribute, torch.nn.LeakyReLU):
        pass

    x = torch.tensor([[-1.0, 2.0, -3.0]], dtype=torch.float64)
    grad = torch.tensor([[1.0, 1.0, 2.0]], dtype=torch.float64)
    for ours, theirs in (
        (Steep(), TorchSteep()),
        (Fixed(0.4), TorchFixed(0.4)),
        (Fixed(), TorchFixed()),
    ):
        assert ours.negative_slope == theirs.negative_slope
        leaf = x.clone().requires_grad_()
        expected = theirs(leaf)
        expected.backward(grad)
        assert torch.equal(ours(x), expected.detach())
        assert leaf.grad is not None and torch.equal(ours.backward(grad), leaf.grad)
    assert Steep().asked == 0.01  # (the constructor's value went to the mixin's setter)


def test_a_setting_given_another_name_in_a_subclass_is_an_alias() -> None:
    # The class body's alias renamed the shared setting (__set_name__ ran again): every
    # LeakyReLU of the process then kept its slope in _slope, and its forward failed with
    # "AttributeError: 'LeakyReLU' object has no attribute '_negative_slope'".
    class Aliased(nn.LeakyReLU):
        slope = nn.LeakyReLU.negative_slope

    x = torch.tensor([[-1.0, 2.0, -3.0]])
    plain = nn.LeakyReLU(0.1)
    assert torch.equal(plain(x), torch.nn.functional.leaky_relu(x, 0.1))
    aliased = Aliased(0.1)
    assert aliased.slope == aliased.negative_slope == 0.1
    aliased.slope = 0.5
    assert aliased.negative_slope == 0.5
    assert torch.equal(aliased(x), torch.nn.functional.leaky_relu(x, 0.5))
    with pytest.raises(ValueError, match=r"^Aliased: negative_slope must be"):
        aliased.slope = float("nan")
    assert aliased.negative_slope == 0.5


def test_a_loss_whose_reduction_is_a_property_reduces_as_it_says() -> None:
    class Summed(nn.L1Loss):
        @property
        def reduction(self) -> Literal["mean", "sum"]:
            return "sum"

        @reduction.setter
        def reduction(self, value: Literal["mean", "sum"]) -> None:
            self.asked = value

    criterion = Summed()
    assert criterion.asked == "mean"
    prediction, target = torch.tensor([[1.0, -2.0], [3.0, 0.5]]), torch.zeros(2, 2)
    assert float(criterion(prediction, target)) == 6.5
    assert torch.equal(criterion.backward(), torch.tensor([[1.0, -1.0], [1.0, 1.0]]))


def test_a_setting_cannot_be_deleted_and_one_never_set_is_named() -> None:
    # del raised "AttributeError: __delete__"; a setting read before it was set named its
    # slot ("'Dropout' object has no attribute '_p'").
    dropout = nn.Dropout(0.25)
    with pytest.raises(AttributeError, match=r"^Dropout\.p cannot be deleted; set another value$"):
        del dropout.p
    assert dropout.p == 0.25
    schedule = optim.StepDecay(optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))
    with pytest.raises(AttributeError, match=r"^StepDecay\.gamma cannot be deleted"):
        del schedule.gamma
    assert schedule.gamma == 0.5
    bare = nn.Dropout.__new__(nn.Dropout)
    with pytest.raises(AttributeError, match=r"^Dropout\.p has no value yet") as error:
        bare.p  # noqa: B018
    assert "_p" not in str(error.value)


def test_a_cross_entropy_subclass_is_named_in_its_reductions_error() -> None:
    # CrossEntropyLoss kept a check of its own, which named CrossEntropyLoss for any subclass.
    class Smoothed(nn.CrossEntropyLoss):
        pass

    with pytest.raises(ValueError, match=r"^Smoothed: reduction must be 'mean' or 'sum', got 'x'"):
        Smoothed("x")  # type: ignore[arg-type]
    criterion = Smoothed()
    with pytest.raises(ValueError, match=r"^Smoothed: reduction must be 'mean' or 'sum', got 1"):
        criterion.reduction = 1  # type: ignore[assignment]
    assert criterion.reduction == "mean"
