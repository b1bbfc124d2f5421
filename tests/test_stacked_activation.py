"""StackedActivation: each stacked model through its own activation, checked against autograd."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import pytest
import torch

from minidl import nn
from minidl.data import make_disk_data
from tests.helpers import assert_rounds_train_as_alone

DTYPE = torch.float64


def _reference(name: str, x: torch.Tensor) -> torch.Tensor:
    functions = {
        "tanh": torch.tanh,
        "relu": torch.relu,
        "sigmoid": torch.sigmoid,
        "elu": torch.nn.functional.elu,
        "selu": torch.nn.functional.selu,
        "gelu": torch.nn.functional.gelu,
        "gelutanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
        "silu": torch.nn.functional.silu,
    }
    return functions[name](x)


@pytest.mark.parametrize("batch", [1, 7])
def test_forward_and_backward_match_autograd(batch: int) -> None:
    torch.manual_seed(batch)
    names = ["tanh", "tanh", "relu", "elu", "elu", "elu", "selu", "sigmoid"]
    names += ["gelu", "gelu", "gelutanh", "silu", "silu"]
    runs = [(nn.activation("tanh"), 2), (nn.ReLU(), 1), (nn.ELU(), 3), (nn.SELU(), 1)]
    runs += [(nn.Sigmoid(), 1), (nn.GELU(), 2), (nn.GELU("tanh"), 1), (nn.SiLU(), 2)]
    layer = nn.StackedActivation(runs)
    x = torch.randn(len(names), batch, 5, dtype=DTYPE, requires_grad=True)
    grad = torch.randn(len(names), batch, 5, dtype=DTYPE)
    reference = torch.stack([_reference(name, x[r]) for r, name in enumerate(names)])
    reference.backward(grad)
    out = layer(x.detach())
    torch.testing.assert_close(out, reference.detach(), rtol=1e-12, atol=1e-12)
    assert x.grad is not None
    torch.testing.assert_close(layer.backward(grad), x.grad, rtol=1e-12, atol=1e-12)
    assert layer.models == 13 and isinstance(layer.activation_of(5), nn.ELU)
    assert "(0:2): Tanh()" in repr(layer) and "(7:8): Sigmoid()" in repr(layer)
    assert "(10:11): GELU(approximate='tanh')" in repr(layer) and "(11:13): SiLU()" in repr(layer)


def test_bad_runs_and_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="expected at least one"):
        nn.StackedActivation([])
    with pytest.raises(TypeError, match="run 1 must hold a minidl Activation, got Linear"):
        nn.StackedActivation([(nn.Tanh(), 1), (nn.Linear(2, 2), 1)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="run 0 must cover a positive number of models, got 0"):
        nn.StackedActivation([(nn.Tanh(), 0)])
    # (a count that is no integer is of the wrong type, as check_int refuses one)
    for count in (True, 2.0, "2", None):
        with pytest.raises(TypeError, match="run 0 must cover a positive number of models, got"):
            nn.StackedActivation([(nn.Tanh(), count)])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="run 0 must cover a positive number of models, got"):
            nn.StackedLoss([(nn.CrossEntropyLoss(), count)])  # type: ignore[list-item]
    layer = nn.StackedActivation([(nn.Tanh(), 2), (nn.ReLU(), 1)])
    with pytest.raises(ValueError, match="leading dimension of 3 models, got \\(2, 4\\)"):
        layer(torch.randn(2, 4))
    with pytest.raises(ValueError, match="leading dimension of 3 models, got \\(\\)"):
        layer(torch.tensor(1.0))
    with pytest.raises(
        TypeError, match=r"StackedActivation: expected a torch\.Tensor as gradient, got str"
    ):
        layer.backward("grad")  # type: ignore[arg-type]
    with pytest.raises(IndexError, match="index 3 is out of range for 3 models"):
        layer.activation_of(3)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64], ids=str)
def test_an_input_or_gradient_of_a_dtype_no_activation_takes_is_refused_by_the_stack(
    dtype: torch.dtype,
) -> None:
    """The refusal names the stack (it named the first run's activation, which the caller
    did not call), the dtype given and the four taken; the last good forward stays the one
    backward differentiates."""
    layer = nn.StackedActivation([(nn.ReLU(), 2), (nn.Tanh(), 1)])
    x = torch.randn(3, 4, 5, dtype=DTYPE)
    grad = torch.randn(3, 4, 5, dtype=DTYPE)
    layer(x)
    taken = "of dtype float16, bfloat16, float32 or float64"
    with pytest.raises(
        TypeError,
        match=rf"^StackedActivation: expected a floating-point input {taken}, got dtype {dtype}$",
    ):
        layer(x.to(dtype))
    with pytest.raises(
        TypeError,
        match=rf"^StackedActivation: expected a floating-point gradient {taken}, got dtype {dtype}$",
    ):
        layer.backward(grad.to(dtype))
    expected = torch.cat([(x[:2] > 0) * grad[:2], (1 - x[2:].tanh() ** 2) * grad[2:]])
    torch.testing.assert_close(layer.backward(grad), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["StackedActivation", "StackedLoss"])
def test_runs_that_are_not_a_list_of_pairs_are_refused_naming_what_was_given(kind: str) -> None:
    # They were unpacked unchecked: "'Tanh' object is not iterable", "not enough values to
    # unpack", or a generator read up by the check and a module left without its runs.
    build = getattr(nn, kind)
    make = nn.Tanh if kind == "StackedActivation" else nn.MSELoss
    pair = "(activation, models)" if kind == "StackedActivation" else "(loss, models)"
    for runs, got in (
        (make(), type(make()).__name__),
        ((run for run in [(make(), 2)]), "generator"),
        ({(make(), 1)}, "set"),
    ):
        with pytest.raises(
            TypeError,
            match=rf"^{kind}: runs must be a list or tuple of \{pair[:-1]}\) pairs, got {got}$",
        ):
            build(runs)
    for run, got in (
        (make(), type(make()).__name__),
        ((make(),), "a tuple of 1 item"),
        ([make(), 1, 2], "a list of 3 items"),
    ):
        with pytest.raises(
            TypeError, match=rf"^{kind}: run 1 must be a \{pair[:-1]}\) pair, got {got}$"
        ):
            build([(make(), 1), run])
    layer = build([[make(), 2]])  # a pair as a list is a pair
    assert layer.models == 2


def test_models_with_different_activations_stack_and_train_as_alone() -> None:
    """stack_models makes one StackedActivation per position where the activations differ
    (consecutive equal ones in one run); fit_rounds then trains each model as fit would."""
    names = [("tanh", "tanh"), ("tanh", "relu"), ("elu", "relu"), ("elu", "relu")]
    datasets = [make_disk_data(80, 30, 10, seed=60 + r, dtype=DTYPE) for r in range(4)]
    models = []
    for r, pair in enumerate(names):
        torch.manual_seed(r)
        models.append(nn.mlp((2, 6, 5, 2), list(pair), dtype=DTYPE))
    stacked = nn.stack_models(models)
    first, second = stacked[1], stacked[3]
    assert isinstance(first, nn.StackedActivation) and isinstance(second, nn.StackedActivation)
    assert [type(m).__name__ for m in (first.activation_of(r) for r in range(4))] == [
        "Tanh", "Tanh", "ELU", "ELU"
    ]  # fmt: skip
    assert "(0:1): Tanh()" in repr(second) and "(1:4): ReLU()" in repr(second)
    assert isinstance(nn.unstack_model(stacked, 2)[3], nn.ReLU)
    assert_rounds_train_as_alone(models, [(d.train.x, d.train.y) for d in datasets])


@pytest.mark.parametrize(
    "make",
    [
        lambda r: nn.LeakyReLU(0.01 if r < 2 else 0.5),
        lambda r: nn.ELU(1.0 if r < 2 else 0.3),
        lambda r: nn.GELU("none" if r < 2 else "tanh"),
    ],
    ids=["LeakyReLU", "ELU", "GELU"],
)
def test_activations_of_one_type_with_other_settings_stack_apart(
    make: Callable[[int], nn.Activation],
) -> None:
    """Activations of one type but another slope or alpha are different functions: each model
    of the stack keeps its own, forward and backward."""
    torch.manual_seed(3)
    models = [nn.Sequential(nn.Linear(2, 4, dtype=DTYPE), make(r)) for r in range(3)]
    stacked = nn.stack_models(models)
    layer = stacked[1]
    assert isinstance(layer, nn.StackedActivation)
    assert [repr(layer.activation_of(r)) for r in range(3)] == [repr(make(r)) for r in range(3)]
    x = 3 * torch.randn(3, 5, 2, dtype=DTYPE)
    grad = torch.randn(3, 5, 4, dtype=DTYPE)
    out = stacked(x)
    grad_input = stacked.backward(grad)
    # (to 1e-12, not bit for bit: the stack's batched products may round differently in the
    # last bit from a plain Linear's on some CPUs; another slope or alpha differs by far more)
    for r, model in enumerate(models):
        torch.testing.assert_close(out[r], model(x[r]), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad_input[r], model.backward(grad[r]), rtol=1e-12, atol=1e-12)


# -- StackedLoss ----------------------------------------------------------------------------------


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns (so that -0.0 and 0.0 differ, and NaNs compare)."""
    return tensor.view({torch.float32: torch.int32, torch.float64: torch.int64}[tensor.dtype])


_ALL_ACTIVATIONS: list[Callable[[], nn.Activation]] = [
    nn.Tanh,
    nn.Sigmoid,
    nn.ReLU,
    lambda: nn.LeakyReLU(0.1),
    nn.ELU,
    nn.SELU,
    nn.GELU,
    lambda: nn.GELU("tanh"),
    nn.SiLU,
]


@pytest.mark.parametrize("dtype", [torch.float32, DTYPE])
def test_each_run_gets_the_bits_of_its_activation_alone(dtype: torch.dtype) -> None:
    """The built-in activations write their runs into one output (no concatenation): forward
    and backward give each run the bits its activation gives alone, -0.0, infinities and NaN
    included."""
    runs = [(make(), 2) for make in _ALL_ACTIVATIONS]
    layer = nn.StackedActivation(runs)
    assert layer._writes_out == ((True, True),) * len(runs)
    generator = torch.Generator().manual_seed(0)
    models = 2 * len(_ALL_ACTIVATIONS)
    x = 3 * torch.randn(models, 7, 5, dtype=dtype, generator=generator)
    x[:, 0, :4] = torch.tensor([-0.0, float("inf"), -float("inf"), float("nan")], dtype=dtype)
    grad = torch.randn(models, 7, 5, dtype=dtype, generator=generator)
    output = layer(x)
    grad_input = layer.backward(grad)
    for index, make in enumerate(_ALL_ACTIVATIONS):
        alone = make()
        part = slice(2 * index, 2 * index + 2)
        assert torch.equal(_bits(output[part]), _bits(alone(x[part].clone())))
        assert torch.equal(_bits(grad_input[part]), _bits(alone.backward(grad[part].clone())))


class _OwnTanh(nn.Activation):
    """An activation of a user's, with hooks that take no ``out``."""

    def _forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = torch.tanh(input)
        return output, output

    def _backward(self, grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return grad_output * (1 - output * output)


class _ShiftedReLU(nn.ReLU):
    """A built-in activation whose forward hook a subclass replaced (without ``out``)."""

    def _forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = torch.relu(input - 1)
        return output, output


class _HalvedTanhGradient(nn.Tanh):
    """A built-in activation whose backward hook a subclass replaced (without ``out``)."""

    def _backward(self, grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return grad_output * (1 - output * output) / 2


def test_activations_whose_hooks_take_no_out_are_copied_into_place() -> None:
    layer = nn.StackedActivation(
        [(nn.Sigmoid(), 1), (_OwnTanh(), 2), (_ShiftedReLU(), 1), (_HalvedTanhGradient(), 1)]
    )
    assert layer._writes_out == ((True, True), (False, False), (False, True), (True, False))
    x = torch.randn(5, 3, 2, dtype=DTYPE)
    grad = torch.randn(5, 3, 2, dtype=DTYPE)
    output = layer(x)
    grad_input = layer.backward(grad)
    torch.testing.assert_close(output[1:3], torch.tanh(x[1:3]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(output[3], torch.relu(x[3] - 1), rtol=1e-12, atol=1e-12)
    y = torch.tanh(x[1:3])
    torch.testing.assert_close(grad_input[1:3], grad[1:3] * (1 - y * y), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        grad_input[3], grad[3] * (x[3] > 1).to(DTYPE), rtol=1e-12, atol=1e-12
    )
    y = torch.tanh(x[4])
    torch.testing.assert_close(output[4], y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_input[4], grad[4] * (1 - y * y) / 2, rtol=1e-12, atol=1e-12)


def test_inputs_from_an_autograd_graph_and_gradients_of_another_dtype() -> None:
    """out= is refused for an operand from an autograd graph, and for a result of a wider
    dtype than the output: each run then makes its own result, as PyTorch would."""
    layer = nn.StackedActivation([(nn.Tanh(), 2), (nn.ELU(), 1)])
    x = torch.randn(3, 4, dtype=DTYPE, requires_grad=True)
    output = layer(x)
    expected = torch.cat([torch.tanh(x[:2]), torch.nn.functional.elu(x[2:])])
    torch.testing.assert_close(output, expected, rtol=1e-12, atol=1e-12)
    plain = nn.StackedActivation([(nn.Tanh(), 2), (nn.ELU(), 1)])
    plain(torch.randn(3, 4))  # float32 caches
    wide = plain.backward(torch.randn(3, 4, dtype=DTYPE))  # written into a float64 output
    assert wide.dtype == DTYPE
    narrow_layer = nn.StackedActivation([(nn.Tanh(), 2), (nn.ELU(), 1)])
    narrow_layer(torch.randn(3, 4, dtype=DTYPE))
    narrow = narrow_layer.backward(torch.randn(3, 4))  # tanh's result is float64: concatenated
    assert narrow.shape == (3, 4) and narrow.dtype == DTYPE


def test_a_stacked_activation_pickled_before_the_out_hooks_loads() -> None:
    layer = nn.StackedActivation([(nn.Tanh(), 1), (_OwnTanh(), 1)])
    state = layer.__getstate__()
    del state["_writes_out"]
    old = nn.StackedActivation.__new__(nn.StackedActivation)
    old.__setstate__(state)
    assert old._writes_out == ((True, True), (False, False))
    x = torch.randn(2, 3)
    assert torch.equal(old(x), layer(x))


def test_stacked_loss_gives_each_models_loss_and_gradient() -> None:
    torch.manual_seed(3)
    criteria = [nn.MSELoss(), nn.MSELoss(reduction="mean"), nn.CrossEntropyLoss()]
    stacked = nn.StackedLoss([(criteria[0], 2), (criteria[1], 1), (criteria[2], 2)])
    prediction = torch.randn(5, 6, 3, dtype=DTYPE, requires_grad=True)
    target = torch.randint(0, 3, (5, 6))
    losses = stacked(prediction.detach(), target)
    gradient = stacked.backward()
    owners = [0, 0, 1, 2, 2]
    for r, owner in enumerate(owners):
        single = copy.deepcopy(criteria[owner])
        assert float(losses[r]) == pytest.approx(float(single(prediction[r].detach(), target[r])))
        torch.testing.assert_close(gradient[r], single.backward(), rtol=1e-12, atol=1e-12)
    # Each loss is PyTorch's formula's, and the gradient that of the sum of the losses
    # (autograd on those formulas).
    each = [
        torch.nn.functional.cross_entropy(prediction[r], target[r])
        if owners[r] == 2
        else (
            (prediction[r] - torch.nn.functional.one_hot(target[r], 3)).pow(2).sum(-1).mean()
            if owners[r] == 0
            else (prediction[r] - torch.nn.functional.one_hot(target[r], 3)).pow(2).mean()
        )
        for r in range(5)
    ]
    torch.testing.assert_close(losses, torch.stack(each).detach(), rtol=1e-12, atol=0)
    reference = sum(each)
    assert isinstance(reference, torch.Tensor)
    reference.backward()
    assert prediction.grad is not None
    torch.testing.assert_close(gradient, prediction.grad, rtol=1e-12, atol=1e-12)
    assert "(2:3): MSELoss(reduction='mean')" in repr(stacked)


def test_stacked_loss_refuses_bad_runs_and_inputs() -> None:
    with pytest.raises(ValueError, match="expected at least one"):
        nn.StackedLoss([])
    with pytest.raises(TypeError, match="run 0 must hold a minidl Loss, got Tanh"):
        nn.StackedLoss([(nn.Tanh(), 1)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="run 1 must cover a positive number of models, got -1"):
        nn.StackedLoss([(nn.MSELoss(), 1), (nn.MSELoss(), -1)])
    criterion = nn.StackedLoss([(nn.MSELoss(), 2)])
    with pytest.raises(
        ValueError,
        match=r"^StackedLoss: expected a stacked prediction \(R, N, C\) of R = 2 models, got "
        r"\(3, 4, 2\)$",
    ):
        criterion(torch.randn(3, 4, 2), torch.randint(0, 2, (3, 4)))
    # Two models' predictions without a class dimension (it used to fail inside torch.cat).
    for loss in (nn.MSELoss(), nn.CrossEntropyLoss()):
        with pytest.raises(
            ValueError, match=r"prediction \(R, N, C\) of R = 2 models, got \(2, 4\)"
        ):
            nn.StackedLoss([(loss, 1), (type(loss)(), 1)])(torch.zeros(2, 4), torch.zeros(2, 4))
    # (2,): one target per model, not a stacked target; its leading dimension is R's (the
    # message said a leading dimension of 2 was expected, for a target of (2,))
    for shape in ((4,), (2,)):
        with pytest.raises(
            ValueError,
            match=r"^StackedLoss: expected a stacked target \(R, N\) or \(R, N, C\) of R = 2 "
            rf"models, got \({shape[0]},\)$",
        ):
            criterion(torch.randn(2, 4, 2), torch.randint(0, 2, shape))
    with pytest.raises(
        ValueError,
        match=r"^StackedLoss: expected a stacked target with a leading dimension of 2 models, "
        r"got \(3, 4\)$",
    ):
        criterion(torch.randn(2, 4, 2), torch.randint(0, 2, (3, 4)))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        nn.StackedLoss([(nn.MSELoss(), 2)]).backward()
    with pytest.raises(TypeError, match="run 1 must hold a single loss, got StackedLoss"):
        nn.StackedLoss([(nn.MSELoss(), 1), (nn.StackedLoss([(nn.MSELoss(), 1)]), 1)])


def test_stacked_loss_forward_called_directly_gives_its_gradient() -> None:
    """``forward`` itself (not only a call of the loss) records that a backward may follow, as
    the built-in losses' forward does."""
    criterion = nn.StackedLoss([(nn.MSELoss(), 1), (nn.CrossEntropyLoss(), 1)])
    prediction = torch.randn(2, 3, 2, dtype=DTYPE)
    target = torch.tensor([[0, 1, 1], [1, 0, 1]])
    criterion.forward(prediction, target)
    expected = torch.cat(
        [
            _single_gradient(nn.MSELoss(), prediction[:1], target[:1]),
            _single_gradient(nn.CrossEntropyLoss(), prediction[1:], target[1:]),
        ]
    )
    torch.testing.assert_close(criterion.backward(), expected, rtol=0, atol=0)


def _single_gradient(loss: nn.Loss, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    loss(prediction, target)
    return loss.backward()


def test_stacked_loss_keeps_its_last_forward_after_one_that_failed() -> None:
    """When a later run refuses its slice, the earlier runs have already taken theirs: every
    criterion gets back its last good forward, so that the stacked loss still differentiates
    the last good batch (not a mix of it and the refused one), as a single loss does."""
    criterion = nn.StackedLoss([(nn.CrossEntropyLoss(), 1), (nn.MSELoss(), 1)])
    logits = torch.randn(2, 3, 2, dtype=DTYPE)
    target = torch.tensor([[0, 1, 0], [1, 1, 0]])
    expected_loss = criterion(logits, target)
    expected = criterion.backward()
    with pytest.raises(ValueError, match="MSELoss"):
        criterion(torch.randn(2, 3, 2, dtype=DTYPE), torch.tensor([[1, 0, 1], [0, 5, 0]]))
    assert torch.equal(criterion.backward(), expected)
    with pytest.raises(
        TypeError, match=r"CrossEntropyLoss: class-index targets must have dtype torch\.int64"
    ):
        criterion(torch.randn(2, 3, 2, dtype=DTYPE), target.int())
    assert torch.equal(criterion.backward(), expected)
    assert torch.equal(criterion(logits, target), expected_loss)


@pytest.mark.parametrize(
    ("attribute", "as_tensor"), [("k", False), ("_k", False), ("k", True), ("_k", True)]
)
def test_activations_of_ones_own_with_other_settings_are_kept_apart(
    attribute: str, as_tensor: bool
) -> None:
    """Two activations of one class whose repr does not show their setting (the tutorial's way
    of writing one), kept in a public attribute or in a private one that no public attribute
    shows: they were taken as equal, and the stack gave every model the first one's (the
    second model's outputs off by 0.6). A private tensor too, which was taken for a cache
    and not compared (fit_rounds trained the second model with the first one's k)."""

    class ScaledTanh(nn.Activation):
        def __init__(self, k: float) -> None:
            super().__init__()
            setattr(self, attribute, torch.tensor(k, dtype=torch.float64) if as_tensor else k)

        def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.tanh(getattr(self, attribute) * x)
            return y, y

        def _backward(self, g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return g * getattr(self, attribute) * (1 - y * y)

    torch.manual_seed(0)
    models = [
        nn.Sequential(nn.Linear(2, 3, dtype=torch.float64), ScaledTanh(k)) for k in (1.0, 5.0, 5.0)
    ]
    x = torch.randn(3, 4, 2, dtype=torch.float64)
    stacked = nn.stack_models(models)
    output = stacked(x)
    grad = torch.randn_like(output)
    grad_input = stacked.backward(grad)
    for index, model in enumerate(models):
        torch.testing.assert_close(output[index], model(x[index]), rtol=0, atol=1e-12)
        torch.testing.assert_close(
            grad_input[index], model.backward(grad[index]), rtol=0, atol=1e-12
        )
    activation = stacked[1]
    assert isinstance(activation, nn.StackedActivation)
    assert [stop - start for _, start, stop in activation._runs] == [1, 2]


def test_activations_of_ones_own_with_other_private_settings_shown_in_repr_are_kept_apart() -> None:
    """A setting kept in a private attribute (not compared as a public setting) but shown by
    ``extra_repr``: the repr tells the two activations apart, and each model keeps its own."""

    class ScaledTanh(nn.Activation):
        def __init__(self, k: float) -> None:
            super().__init__()
            self._k = k

        def extra_repr(self) -> str:
            return f"k={self._k}"

        def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.tanh(self._k * x)
            return y, y

        def _backward(self, g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return g * self._k * (1 - y * y)

    torch.manual_seed(0)
    models = [
        nn.Sequential(nn.Linear(2, 3, dtype=torch.float64), ScaledTanh(k)) for k in (1.0, 5.0)
    ]
    x = torch.randn(2, 4, 2, dtype=torch.float64)
    output = nn.stack_models(models)(x)
    for index, model in enumerate(models):
        torch.testing.assert_close(output[index], model(x[index]), rtol=0, atol=1e-12)


def test_the_stack_shares_no_activation_with_the_models() -> None:
    """A model run alone between the stack's forward and backward leaves the stack's gradients
    as autograd gives them (the stack's activation is a copy, with its own saved output)."""
    torch.manual_seed(0)
    models = [nn.mlp((2, 3, 2), "tanh", dtype=torch.float64) for _ in range(2)]
    stacked = nn.stack_models(models)
    x = torch.randn(2, 5, 2, dtype=torch.float64)
    grad_output = torch.randn(2, 5, 2, dtype=torch.float64)
    stacked(x)
    models[0](torch.randn(7, 2, dtype=torch.float64))  # model 0 alone, in between
    grad_input = stacked.backward(grad_output)

    leaves = [p.data.clone().requires_grad_() for p in stacked.parameters()]
    w1, b1, w2, b2 = leaves
    x_leaf = x.clone().requires_grad_()
    hidden = torch.tanh(torch.baddbmm(b1.unsqueeze(1), x_leaf, w1.transpose(1, 2)))
    output = torch.baddbmm(b2.unsqueeze(1), hidden, w2.transpose(1, 2))
    output.backward(grad_output)
    torch.testing.assert_close(grad_input, x_leaf.grad, rtol=1e-10, atol=1e-12)
    for parameter, leaf in zip(stacked.parameters(), leaves, strict=True):
        torch.testing.assert_close(parameter.grad, leaf.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activations", [("tanh", "tanh"), ("tanh", "elu")], ids=["one", "two"])
def test_a_model_unstacked_keeps_no_cache_of_the_stacks_forward(
    activations: tuple[str, str],
) -> None:
    """An activation unstacked (the stack's own, or its model's in a StackedActivation) was a
    deep copy with its last forward's cache, which covers every model: the model carried the
    others' activations ((3, 5, 3) here; a 25-model stack's validation pass made a pickle of
    2.5 MB out of one of 3.6 kB), and its backward before a forward failed on their shape. It
    holds none now, as a model built so: backward is refused as called before a forward."""
    torch.manual_seed(0)
    kinds = {"tanh": nn.Tanh, "elu": nn.ELU}
    models = [
        nn.Sequential(nn.Linear(2, 3, dtype=DTYPE), kinds[name]())
        for name in (activations[0], activations[1], activations[1])
    ]
    stacked = nn.stack_models(models)
    stacked(torch.randn(3, 5, 2, dtype=DTYPE))
    for index in range(3):
        unstacked = nn.unstack_model(stacked, index)
        assert unstacked[1]._cache is None
        assert len(pickle.dumps(unstacked)) < len(pickle.dumps(stacked))
        with pytest.raises(RuntimeError, match=r"^(Tanh|ELU): backward called before forward$"):
            unstacked[1].backward(torch.ones(5, 3, dtype=DTYPE))
        x = torch.randn(4, 2, dtype=DTYPE)
        torch.testing.assert_close(unstacked(x), models[index](x), rtol=0, atol=1e-12)


def test_model_parameters_of_something_that_is_no_stack_is_refused() -> None:
    """It returned [] for any index of a network without a stacked layer, and a raw TypeError
    for a module that is no Sequential."""
    with pytest.raises(ValueError, match="model_parameters: the network has no stacked layer"):
        nn.model_parameters(nn.Sequential(nn.Linear(2, 3)), 99)
    with pytest.raises(
        TypeError, match="model_parameters: expected a stack made by stack_models, got Linear"
    ):
        nn.model_parameters(nn.Linear(2, 3), 0)  # type: ignore[arg-type]
    stacked = nn.stack_models([nn.mlp((2, 3, 2), "tanh") for _ in range(2)])
    with pytest.raises(IndexError, match="index 2 is out of range for 2 models"):
        nn.model_parameters(stacked, 2)
    assert len(nn.model_parameters(stacked, 1)) == 4


def test_stacking_inside_detect_anomaly_merges_equal_activations() -> None:
    """The checks detect_anomaly sets on watched modules are instance attributes, not settings:
    equal activations stay one run inside the block too."""
    from minidl import detect_anomaly

    models = [nn.mlp((2, 3, 2), "tanh") for _ in range(2)]
    with detect_anomaly(*models):
        stacked = nn.stack_models(models)
    assert isinstance(stacked[1], nn.Tanh)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_activations_run_before_stacking_in_any_dtype_are_still_one(dtype: torch.dtype) -> None:
    """What an activation keeps from its last forward (its cache; the dtype that a float16
    input was computed in float32 for) is no setting: equal activations stay one run."""
    torch.manual_seed(0)
    models = [nn.mlp((2, 3, 2), ("elu",)) for _ in range(3)]
    models[1][1](torch.randn(4, 3, dtype=dtype))
    assert type(nn.stack_models(models)[1]) is nn.ELU


def test_an_activation_copied_by_copy_copy_is_still_one_with_its_equals() -> None:
    """The set of modules that share their registries through copy.copy is no setting: an
    activation shallow-copied (or the copy) stays one run with equal ones (it made a run of
    its own, the stack computing it apart)."""
    models = [nn.mlp((2, 3, 2), "tanh") for _ in range(3)]
    copy.copy(models[1][1])
    models[2] = nn.Sequential(models[2][0], copy.copy(models[2][1]), models[2][2])
    assert type(nn.stack_models(models)[1]) is nn.Tanh


class _DoubledTanh(nn.Tanh):
    """A built-in activation whose subclass overrides forward and backward (its hooks, which
    take ``out``, are Tanh's): its output, and so its gradient, are doubled."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input) * 2.0

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return super().backward(grad_output * 2.0)


def test_a_subclass_that_overrides_forward_and_backward_is_called_in_its_run() -> None:
    """A run wrote the hooks' results into place, past a subclass's own forward and backward:
    the model of _DoubledTanh got plain tanh in the stack (its outputs off by up to 1), though
    the same model stacked beside models of its own activation alone got its own."""
    torch.manual_seed(0)
    models = [
        nn.Sequential(nn.Linear(2, 3, dtype=DTYPE), activation)
        for activation in (_DoubledTanh(), nn.ReLU(), _DoubledTanh())
    ]
    layer = nn.StackedActivation([(_DoubledTanh(), 1), (nn.ReLU(), 1), (_DoubledTanh(), 1)])
    assert layer._writes_out == ((False, False), (True, True), (False, False))
    stacked = nn.stack_models(models)
    x = torch.randn(3, 4, 2, dtype=DTYPE)
    for network in (stacked, pickle.loads(pickle.dumps(stacked))):
        output = network(x)
        grad = torch.randn_like(output)
        grad_input = network.backward(grad)
        for index, model in enumerate(models):
            torch.testing.assert_close(output[index], model(x[index]), rtol=0, atol=1e-15)
            torch.testing.assert_close(
                grad_input[index], model.backward(grad[index]), rtol=0, atol=1e-15
            )


def test_a_forward_refused_after_the_first_run_refuses_the_backward_until_one_succeeds() -> None:
    """The runs before the refusing one had cached the refused input: the next backward mixed
    it with the last good forward's caches (model 0's gradient from the refused input, in
    float32 for a float16 forward) with no error. It is refused now, as a Sequential's is; a
    refusal by the first run changes nothing, and a forward that succeeds ends it."""
    elu = nn.ELU()
    stacked = nn.StackedActivation([(nn.Tanh(), 1), (elu, 1)])
    x = torch.tensor([[[-1.0, 2.0]], [[-0.5, 0.25]]], dtype=torch.float16)
    grad = torch.tensor([[[0.3, 0.7]], [[0.2, 0.1]]], dtype=torch.float16)
    stacked(x)
    expected = stacked.backward(grad)
    elu.alpha = 1e39
    with pytest.raises(ValueError, match=r"^ELU: alpha=1e\+39 is beyond the range"):
        stacked(torch.tensor([[[3.0, 4.0]], [[-1.0, -2.0]]]))
    with pytest.raises(
        RuntimeError,
        match=r"^StackedActivation: backward after the forward refused by run 1 \(ELU\): the "
        "runs before it had already cached its input",
    ):
        stacked.backward(grad)
    elu.alpha = 1.0
    stacked(x)
    assert torch.equal(stacked.backward(grad), expected)
    # The first run refusing: nothing changed, the last good forward's backward stands.
    first = nn.ELU()
    stacked = nn.StackedActivation([(first, 1), (nn.Tanh(), 1)])
    stacked(x)
    expected = stacked.backward(grad)
    first.alpha = 1e39
    with pytest.raises(ValueError, match=r"^ELU: alpha=1e\+39 is beyond the range"):
        stacked(torch.tensor([[[-3.0, 4.0]], [[-1.0, -2.0]]]))
    assert torch.equal(stacked.backward(grad), expected)


@pytest.mark.parametrize("activations", [("tanh", "tanh"), ("tanh", "elu")], ids=["one", "two"])
def test_a_stack_keeps_no_cache_of_its_models_forward(activations: tuple[str, str]) -> None:
    """The other way round: stack_models deep-copied each model's activation with what the
    model's last forward cached, so that the stack held a stale copy of one model's activations
    and its backward before a forward was refused on that model's shape ("gradient has shape
    (1, 4, 3), expected (4, 3) (the shape of the last forward's output)"). It holds none, as
    a stack built from fresh models: backward is refused as called before a forward."""
    torch.manual_seed(0)
    kinds = {"tanh": nn.Tanh, "elu": nn.ELU}
    models = [
        nn.Sequential(nn.Linear(2, 3, dtype=DTYPE), kinds[name]())
        for name in (activations[0], activations[1])
    ]
    for model in models:
        model(torch.randn(4, 2, dtype=DTYPE))
    stacked = nn.stack_models(models)
    activation = stacked[1]
    assert (
        all(activation.activation_of(index)._cache is None for index in range(2))
        if isinstance(activation, nn.StackedActivation)
        else activation._cache is None
    )
    with pytest.raises(RuntimeError, match=r"backward called before forward$"):
        activation.backward(torch.ones(2, 4, 3, dtype=DTYPE))


@pytest.mark.parametrize("modules", [(nn.Tanh,), ()], ids=["an activation", "nothing"])
def test_models_of_no_linear_layer_are_not_stacked(modules: tuple[type[nn.Module], ...]) -> None:
    """Models without a Linear layer were stacked into a network that unstack_model then refused
    as not made by stack_models; stack_models refuses them, naming what they hold."""
    models = [nn.Sequential(*(kind() for kind in modules)) for _ in range(2)]
    held = "Tanh" if modules else "none"
    with pytest.raises(
        ValueError,
        match=rf"^stack_models: the models hold no Linear layer \(models\[0\]'s modules: {held}\); "
        "stack_models stacks networks of Linear layers and activations$",
    ):
        nn.stack_models(models)


def test_refusals_of_a_stacked_activation_or_loss_name_the_stacked_module_and_whole_shapes() -> (
    None
):
    """A backward before any forward was refused by the first run's activation in its own name
    ("Tanh: backward called before forward"); a target that a run's loss refuses was refused
    in that loss's name with the shapes of its slice, (2, 4, 3) for a target of (3, 4, 3). Each
    is named as the stacked module's now, the whole shapes given and the run's own words
    kept; the run's criterion keeps its last good forward."""
    layer = nn.StackedActivation([(nn.Tanh(), 2), (nn.ReLU(), 1)])
    with pytest.raises(RuntimeError, match=r"^StackedActivation: backward called before forward$"):
        layer.backward(torch.ones(3, 4, 2))
    mse = nn.MSELoss()
    criterion = nn.StackedLoss([(mse, 2), (nn.CrossEntropyLoss(), 1)])
    prediction = torch.zeros(3, 4, 2)
    criterion(prediction, torch.ones(3, 4, dtype=torch.int64))
    good = mse.backward().clone()
    with pytest.raises(
        ValueError,
        match=r"^StackedLoss: run 0 \(MSELoss, models 0:2\) refused its slices of the "
        r"prediction \(3, 4, 2\) \(float32\) and the target \(3, 4, 3\) \(float32\): "
        r"MSELoss: target has shape \(2, 4, 3\), expected the prediction's shape \(2, 4, 2\)",
    ):
        criterion(prediction, torch.zeros(3, 4, 3))
    with pytest.raises(  # (MSE takes any floating target of the prediction's shape)
        ValueError,
        match=r"^StackedLoss: run 1 \(CrossEntropyLoss, models 2:3\) refused its slices of "
        r"the prediction \(3, 4, 2\) \(float32\) and the target \(3, 4, 2\) \(float32\): "
        "CrossEntropyLoss: a probability target",
    ):
        criterion(prediction, torch.ones(3, 4, 2))
    assert torch.equal(mse.backward(), good)
    with pytest.raises(  # (the prediction refused: both named, neither blamed)
        TypeError,
        match=r"^StackedLoss: run 0 \(MSELoss, models 0:2\) refused its slices of the "
        r"prediction \(3, 4, 2\) \(int64\) and the target \(3, 4, 2\) \(float32\): MSELoss: ",
    ):
        criterion(prediction.long(), torch.ones(3, 4, 2))


def test_a_residual_around_a_stacked_activation_that_refused_its_input_takes_the_backward() -> None:
    """A StackedActivation that refuses an input before any run (its leading dimension) changes
    nothing: the Residual holding it took it for a container that may have run some of its
    modules, and refused the backward of the last good forward."""
    layer = nn.StackedActivation([(nn.Tanh(), 2), (nn.ReLU(), 1)])
    residual = nn.Residual(layer)
    x = torch.randn(3, 4, 2, dtype=DTYPE)
    residual(x)
    expected = residual.backward(torch.ones(3, 4, 2, dtype=DTYPE))
    with pytest.raises(ValueError, match="leading dimension of 3 models"):
        residual(torch.randn(2, 4, 2, dtype=DTYPE))
    assert layer._refused_cleanly()
    assert torch.equal(residual.backward(torch.ones(3, 4, 2, dtype=DTYPE)), expected)
