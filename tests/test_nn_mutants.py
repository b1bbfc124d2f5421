"""Tests that kill the mutants of ``minidl.nn`` that survived a mutation audit.

Each test states the behaviour it pins down against an oracle: PyTorch autograd in float64,
the documented formula, or the documented error (type and the words of its message).
"""

from __future__ import annotations

import copy
import math
import pickle
import re

import pytest
import torch
import torch.nn.functional as F

from minidl import nn
from minidl._validate import shown
from minidl.experiments.faithful import PublishedSELU
from minidl.interop import to_torch
from minidl.nn.selu import SELU_ALPHA, SELU_SCALE
from tests.helpers import F64, assert_close

# -- activations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", [(2, 1, 3), (2, 4, 1), (2, 1, 1)], ids=["one-row", "one-feature", "one-element"]
)
def test_stacked_activation_refuses_a_gradient_that_only_broadcasts(shape: tuple[int, ...]) -> None:
    """Each run writes its gradient into its part of one output (``_backward_out``): a gradient
    that broadcasts against the cached output, but is not of its shape, is named, not broadcast
    into a result of the gradient's shape."""
    stacked = nn.StackedActivation([(nn.Tanh(), 1), (nn.ReLU(), 1)])
    stacked(torch.randn(2, 4, 3, dtype=F64))
    with pytest.raises(
        ValueError,
        match=rf"^StackedActivation: gradient has shape {re.escape(str(shape))}, expected "
        r"\(2, 4, 3\) \(the shape of the last forward's output\)$",
    ):
        stacked.backward(torch.randn(shape, dtype=F64))


def test_stacked_activation_names_a_gradient_of_the_wrong_shape_in_its_own_shapes() -> None:
    """A gradient of the wrong shape was refused by the first run's activation, in the shapes
    of its slice ("Tanh: gradient has shape (2, 4, 6), expected (2, 4, 5)"), a tensor the
    caller never gave; it is named by the StackedActivation, in the shapes given."""
    stacked = nn.StackedActivation([(nn.Tanh(), 2), (nn.GELU(), 1)])
    stacked(torch.randn(3, 4, 5, dtype=F64))
    with pytest.raises(
        ValueError,
        match=r"^StackedActivation: gradient has shape \(3, 4, 6\), expected \(3, 4, 5\)",
    ):
        stacked.backward(torch.randn(3, 4, 6, dtype=F64))


@pytest.mark.parametrize(
    ("slope", "kind"),
    [
        (math.inf, ValueError),
        (-math.inf, ValueError),
        (math.nan, ValueError),
        (True, TypeError),
        (False, TypeError),
        ("0.2", TypeError),
        (None, TypeError),
    ],
)
def test_leaky_relu_refuses_a_slope_that_is_not_a_finite_number(
    slope: object, kind: type[Exception]
) -> None:
    """A number out of range is a ValueError, anything else (a bool too) a TypeError."""
    with pytest.raises(kind, match="LeakyReLU: negative_slope must be a finite number"):
        nn.LeakyReLU(slope)  # type: ignore[arg-type]
    layer = nn.LeakyReLU(0.2)
    with pytest.raises(kind, match="LeakyReLU: negative_slope must be a finite number"):
        layer.negative_slope = slope  # type: ignore[assignment]
    assert layer.negative_slope == 0.2


@pytest.mark.parametrize(
    ("alpha", "kind", "shown"),
    [
        (math.inf, ValueError, ", got inf"),
        (math.nan, ValueError, ", got nan"),
        (True, TypeError, " (a float or an int), got bool True"),
        ("1.0", TypeError, " (a float or an int), got str '1.0'"),
    ],
)
def test_elu_refuses_an_alpha_that_is_not_a_finite_number(
    alpha: object, kind: type[Exception], shown: str
) -> None:
    """A number out of range is a ValueError, anything else (a bool too) a TypeError, from
    ELU's constructor and from setting ``alpha`` (the value is kept)."""
    message = f"ELU: alpha must be a finite number{shown}"
    with pytest.raises(kind) as info:
        nn.ELU(alpha=alpha)  # type: ignore[arg-type]
    assert str(info.value) == message
    layer = nn.ELU(0.5)
    with pytest.raises(kind) as info:
        layer.alpha = alpha  # type: ignore[assignment]
    assert str(info.value) == message
    assert layer.alpha == 0.5


@pytest.mark.parametrize("alpha", [2.0, 1, SELU_ALPHA, math.nan, "1.0"])
def test_selu_refuses_any_alpha_its_constants_are_fixed(alpha: object) -> None:
    """SELU's alpha was ELU's setting: ``selu.alpha = 2.0`` was taken, and the SELU computed
    2.0 lambda (e^x - 1) for x < 0 while its repr still read ``SELU()`` (torch.nn.SELU takes no
    alpha; its constants are fixed). Setting it, to any value (the constant too), or deleting
    it raises an AttributeError that names SELU, the value given and the constant; the module
    computes as torch.nn.SELU before and after (float64, to the bit), and its constructor takes
    no alpha (Python's TypeError names SELU)."""
    x = torch.linspace(-5, 5, 41, dtype=F64)
    selu = nn.SELU()
    with pytest.raises(AttributeError) as info:
        selu.alpha = alpha  # type: ignore[assignment]
    assert str(info.value) == (
        f"SELU: alpha is fixed at 1.6732632423543772 (the self-normalising constant, as "
        f"PyTorch's SELU's), got {alpha!r}; use ELU(alpha) for another alpha"
    )
    with pytest.raises(AttributeError, match=r"^SELU.alpha cannot be deleted: it is fixed at "):
        del selu.alpha
    assert selu.alpha == SELU_ALPHA
    assert repr(selu) == "SELU()"
    assert torch.equal(selu(x), F.selu(x))
    with pytest.raises(TypeError, match=r"SELU.__init__\(\) got an unexpected keyword argument"):
        nn.SELU(alpha=2.0)  # type: ignore[call-arg]


def test_a_selu_pickled_with_its_alpha_loads_only_with_the_constant() -> None:
    """A SELU pickled when its alpha was a setting holds it in ``_alpha`` (before that, in
    ``alpha``): the constant loads as a SELU of fixed constants; another alpha, which a SELU
    cannot compute with, is refused by name."""
    x = torch.linspace(-5, 5, 41, dtype=F64)
    for name in ("_alpha", "alpha"):
        state = nn.SELU().__getstate__()
        state[name] = SELU_ALPHA
        loaded = nn.SELU.__new__(nn.SELU)
        loaded.__setstate__(state)
        assert "_alpha" not in vars(loaded) and "alpha" not in vars(loaded)
        assert torch.equal(loaded(x), F.selu(x))
        state = nn.SELU().__getstate__()
        state[name] = 2.0
        with pytest.raises(ValueError) as info:
            nn.SELU.__new__(nn.SELU).__setstate__(state)
        assert str(info.value) == (
            "SELU: cannot load a SELU pickled with alpha 2.0: its alpha is fixed at "
            "1.6732632423543772; load it as an ELU(alpha) instead"
        )
    assert torch.equal(pickle.loads(pickle.dumps(nn.SELU()))(x), F.selu(x))


@pytest.mark.parametrize("scale", [2.0, 1, SELU_SCALE, math.nan, "1.0"])
def test_selu_refuses_any_scale_its_constants_are_fixed(scale: object) -> None:
    """``selu.scale = 2.0`` made a plain attribute that the computation ignored (it reads the
    constant), as alpha's refusal did not: setting it, to any value (the constant too), or
    deleting it raises an AttributeError that names SELU, the value given and the constant;
    ``scale`` reads lambda, and the module computes as torch.nn.SELU before and after (float64,
    to the bit), its repr, state_dict, copies and PyTorch twin unchanged."""
    x = torch.linspace(-5, 5, 41, dtype=F64)
    selu = nn.SELU()
    with pytest.raises(AttributeError) as info:
        selu.scale = scale  # type: ignore[misc]
    assert str(info.value) == (
        f"SELU: scale is fixed at 1.0507009873554805 (the self-normalising constant, as "
        f"PyTorch's SELU's), got {scale!r}; for another scale, multiply the output of an ELU"
    )
    with pytest.raises(AttributeError, match=r"^SELU.scale cannot be deleted: it is fixed at "):
        del selu.scale
    assert selu.scale == SELU_SCALE and "scale" not in vars(selu)
    assert repr(selu) == "SELU()" and selu.state_dict() == {}
    assert torch.equal(selu(x), F.selu(x))
    for copied in (copy.deepcopy(selu), pickle.loads(pickle.dumps(selu))):
        assert copied.scale == SELU_SCALE and torch.equal(copied(x), F.selu(x))
    assert isinstance(to_torch(selu), torch.nn.SELU)


def test_a_selu_pickled_with_a_scale_loads_with_the_constant() -> None:
    """A SELU pickled before its scale was fixed holds the constant in ``_scale`` and, where
    one was set by hand, a plain ``scale`` that it never computed with: it loads as a SELU of
    fixed constants, the plain attribute dropped (it would have been refused as set), with a
    warning naming it (see test_earlier_pickles). A subclass computing with a scale of its own
    (the experiments' PublishedSELU, 0.5) reads it as its ``scale``, refuses to set it naming
    it, and keeps it through a pickle."""
    x = torch.linspace(-5, 5, 41, dtype=F64)
    state = nn.SELU().__getstate__()
    state["_scale"], state["scale"] = SELU_SCALE, 2.0
    loaded = nn.SELU.__new__(nn.SELU)
    with pytest.warns(UserWarning, match=r"^SELU: scale=2.0, pickled by an earlier minidl "):
        loaded.__setstate__(state)
    assert "_scale" not in vars(loaded) and "scale" not in vars(loaded)
    assert loaded.scale == SELU_SCALE and torch.equal(loaded(x), F.selu(x))
    published = PublishedSELU()
    assert published.scale == 0.5
    with pytest.raises(AttributeError) as info:
        published.scale = 1.0  # type: ignore[misc]
    assert str(info.value) == (
        "PublishedSELU: scale is fixed at 0.5, got 1.0; for another scale, multiply the output "
        "of an ELU"
    )
    copied = pickle.loads(pickle.dumps(published))
    assert copied.scale == 0.5 and torch.equal(copied(x), published(x))
    assert_close(copied(x), 0.5 / SELU_SCALE * F.selu(x))


IN_PLACE_TWINS = ["ReLU", "LeakyReLU", "ELU", "SELU", "SiLU", "Dropout"]


@pytest.mark.parametrize("name", IN_PLACE_TWINS)
def test_inplace_set_true_is_refused_as_the_constructor_refuses_it(name: str) -> None:
    """``module.inplace = True`` made a plain attribute that the computation ignored, where it
    makes torch.nn's twin change its input in place (the oracle, below): it is refused as the
    constructor refuses ``inplace=True``, naming the module, and the module left as it was;
    ``inplace`` reads False, as the twin's default, ``False`` is taken, and the module still
    computes as its twin of ``inplace=False`` (float64), its input unchanged."""
    module, twin = getattr(nn, name)(), getattr(torch.nn, name)()
    x = torch.linspace(-3, 3, 13, dtype=F64)
    twin.inplace = True
    given = x.clone()
    twin.eval()(given)
    assert not torch.equal(given, x) or name == "Dropout"  # (in evaluation mode, the input)
    if name == "Dropout":
        twin.train()(given)
        assert not torch.equal(given, x)
    assert module.inplace is False
    with pytest.raises(ValueError) as info:
        module.inplace = True
    assert str(info.value) == (
        f"{name}: inplace=True is not supported (minidl's activations and Dropout never change "
        "their input); leave it out, or pass inplace=False"
    )
    with pytest.raises(TypeError, match=rf"^{name}: inplace must be True or False, got 'yes'$"):
        module.inplace = "yes"  # type: ignore[assignment]
    module.inplace = False
    assert module.inplace is False and "inplace" not in vars(module)
    expected = getattr(torch.nn, name)().eval()(x.clone())
    given = x.clone()
    assert_close(module.eval()(given), expected)
    assert torch.equal(given, x)


def test_batch_norm_refuses_track_running_stats_set_false_as_its_constructor_does() -> None:
    """``layer.track_running_stats = False`` made a plain attribute that the computation
    ignored, where it makes torch.nn.BatchNorm1d stop updating its running statistics in
    training mode (the oracle, below): it is refused as the constructor refuses it, naming
    BatchNorm1d, and the layer left as it was; True is taken, and the layer updates its
    statistics as the twin of the default does (float64)."""
    x = torch.randn(8, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    twin = torch.nn.BatchNorm1d(3, dtype=F64)
    twin.track_running_stats = False
    twin(x)
    assert torch.equal(twin.running_mean, torch.zeros(3, dtype=F64))
    layer = nn.BatchNorm1d(3, dtype=F64)
    assert layer.track_running_stats is True
    with pytest.raises(ValueError) as info:
        layer.track_running_stats = False
    assert str(info.value) == (
        "BatchNorm1d: track_running_stats=False is not supported: it always keeps running "
        "statistics and normalises with them in evaluation mode (PyTorch's default); leave it "
        "out"
    )
    with pytest.raises(TypeError, match=r"^BatchNorm1d: track_running_stats must be True or "):
        layer.track_running_stats = 1  # type: ignore[assignment]
    layer.track_running_stats = True
    assert "track_running_stats" not in vars(layer)
    default = torch.nn.BatchNorm1d(3, dtype=F64)
    assert_close(layer(x), default(x).detach())
    assert_close(layer.running_mean, default.running_mean)
    assert_close(layer.running_var, default.running_var)


UNSUPPORTED: list[tuple[str, str, object, str]] = [
    ("CrossEntropyLoss", "weight", [1.0, 2.0, 3.0], "every class weighs the same"),
    (
        "CrossEntropyLoss",
        "ignore_index",
        1,
        "every target is a class in [0, C): leave out the samples to skip",
    ),
    (
        "CrossEntropyLoss",
        "label_smoothing",
        0.1,
        "give the smoothed probabilities as the target: (1 - s) one_hot(y) + s / C",
    ),
    ("NLLLoss", "weight", [1.0, 2.0, 3.0], "every class weighs the same"),
    (
        "NLLLoss",
        "ignore_index",
        1,
        "every target is a class in [0, C): leave out the samples to skip",
    ),
    ("BCEWithLogitsLoss", "weight", [1.0, 2.0, 3.0], "every element weighs the same"),
    ("BCEWithLogitsLoss", "pos_weight", [1.0, 2.0, 3.0], "positive targets weigh as negative ones"),
]


@pytest.mark.parametrize(
    ("name", "attribute", "value", "hint"),
    UNSUPPORTED,
    ids=[f"{case[0]}.{case[1]}" for case in UNSUPPORTED],
)
def test_a_loss_refuses_pytorchs_options_it_has_not(
    name: str, attribute: str, value: object, hint: str
) -> None:
    """Setting an option of torch.nn's twin that minidl's loss has not made a plain attribute
    that the computation ignored, where the twin computes with it (the oracle: its loss
    changes): it is refused with an AttributeError naming the loss, the option, the value and
    what to do instead, the loss left as it was (computing as the twin without the option,
    float64); reading it raises AttributeError, as for an attribute the loss has not."""
    prediction = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    if name == "BCEWithLogitsLoss":
        target = torch.tensor([[0.0, 1.0, 1.0]] * 4, dtype=F64)
    elif name == "NLLLoss":
        prediction = prediction.log_softmax(1)
        target = torch.tensor([0, 1, 2, 1])
    else:
        target = torch.tensor([0, 1, 2, 1])
    given = torch.tensor(value, dtype=F64) if isinstance(value, list) else value
    twin = getattr(torch.nn, name)()
    expected = twin(prediction, target)
    setattr(twin, attribute, given)
    assert not torch.equal(twin(prediction, target), expected)
    loss = getattr(nn, name)()
    with pytest.raises(AttributeError) as info:
        setattr(loss, attribute, given)
    assert str(info.value) == (
        f"{name}: {attribute} cannot be set (got {shown(given)}): PyTorch's {attribute} is not "
        f"supported ({hint})"
    )
    assert attribute not in vars(loss) and not hasattr(loss, attribute)
    with pytest.raises(AttributeError, match=rf"^{name} has no {attribute}: PyTorch's "):
        getattr(loss, attribute)
    assert_close(loss(prediction, target), expected)


class _Abs(nn.Activation):
    """``|x|``, its hooks writing into ``out`` when given: ``torch.abs`` has a float8 kernel,
    where ``tanh``, ``clamp_min`` and ``mul`` have none."""

    def _forward(
        self, input: torch.Tensor, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.abs(input, out=out), input

    def _backward(
        self, grad_output: torch.Tensor, input: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        return torch.mul(grad_output, input.sign(), out=out)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2], ids=str)
def test_a_stacked_activation_refuses_a_float8_input_that_its_hook_would_take(
    dtype: torch.dtype,
) -> None:
    """A StackedActivation runs an activation whose hook takes ``out`` through its
    ``_forward_out``, whose per-call check is the forward's: a float8 input is refused naming
    the dtype and the four taken, as the activation alone does, also where the hook's
    operation has a float8 kernel (``torch.abs``); the stack names itself. (With the dtype
    dropped from the run's check, asked as ``is_floating_point()``, or joined by ``and``, the
    stack returned ``|x|`` in float8; a built-in activation's hook fails in torch's words
    there, and the stack's fall-back to each forward refused it anyway.)"""
    x = torch.randn(2, 3, 4)
    stacked = nn.StackedActivation([(_Abs(), 2)])
    assert torch.equal(stacked(x), x.abs())  # (the oracle: |x|, written through out=)
    message = (
        r": expected a floating-point input of dtype float16, bfloat16, float32 or "
        rf"float64, got dtype {dtype}$"
    )
    for module, name in ((_Abs(), "_Abs"), (stacked, "StackedActivation")):
        with pytest.raises(TypeError, match=f"^{name}{message}"):
            module(x.to(dtype))
    with pytest.raises(TypeError, match="^_Abs" + message):
        stacked._runs[0][0](x.to(dtype))  # (the run's own check, which the stack's names)


# -- losses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [nn.MSELoss, nn.NLLLoss], ids=["mse", "nll"])
@pytest.mark.parametrize("rows", [1, 3])
def test_class_indices_fewer_than_the_rows_are_refused(make: type[nn.Loss], rows: int) -> None:
    """``gather`` and ``scatter_add`` take an index with fewer rows than the prediction (they
    read or write those rows only): the shape is checked before them, also on the second call
    of a loss that accepted a full-length target."""
    criterion = make()
    prediction = torch.randn(4, 3, dtype=F64).log_softmax(1)
    criterion(prediction, torch.tensor([0, 1, 2, 0]))  # accepted: the fast path is primed
    with pytest.raises(
        ValueError, match=rf"class-index target has shape \({rows},\), expected \(4,\)"
    ):
        criterion(prediction, torch.zeros(rows, dtype=torch.int64))


def test_stacked_class_indices_fewer_than_the_rows_are_refused() -> None:
    criterion = nn.MSELoss()
    prediction = torch.randn(2, 4, 3, dtype=F64)
    criterion(prediction, torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(
        ValueError, match=r"class-index target has shape \(2, 2\), expected \(2, 4\)"
    ):
        criterion(prediction, torch.zeros(2, 2, dtype=torch.int64))


def test_a_target_of_pytorchs_k_dimensional_form_hears_of_the_stacked_reading() -> None:
    """PyTorch reads (N, C, d) with the classes on dimension 1; minidl (R, N, C), R stacked
    models. A target of PyTorch's form that does not fit is refused, and the message now says
    how a 3-D prediction is read (docs/pytorch.md gives the reshape)."""
    with pytest.raises(
        ValueError,
        match=r"^CrossEntropyLoss: class-index target has shape \(2, 4\), expected \(2, 3\) for a "
        r"prediction of shape \(2, 3, 4\) \(a 3-D prediction is \(R, N, C\), R stacked models' "
        r"scores, the classes last\)$",
    ):
        nn.CrossEntropyLoss()(torch.randn(2, 3, 4, dtype=F64), torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"expected \(3,\) for a prediction of shape \(3, 4\)$"):
        nn.CrossEntropyLoss()(torch.randn(3, 4, dtype=F64), torch.zeros(4, dtype=torch.int64))


def test_loss_backward_refuses_two_upstream_gradients() -> None:
    criterion = nn.CrossEntropyLoss()
    criterion(torch.randn(3, 2, dtype=F64), torch.tensor([0, 1, 1]))
    one = torch.tensor(1.0, dtype=F64)
    with pytest.raises(TypeError, match=r"expected at most one \(scalar\) gradient, got 2"):
        criterion.backward(one, one)


def test_mse_class_indices_of_a_new_batch_size_dtype_after_another() -> None:
    """The -1 column that MSELoss scatters into the prediction is made again for a new shape
    (a larger batch) and dtype; each call equals PyTorch's ``mse_loss`` against one-hot rows."""
    criterion = nn.MSELoss("sum")
    for rows, dtype in ((2, F64), (5, F64), (5, torch.float32), (2, F64)):
        prediction = torch.randn(rows, 3, dtype=dtype)
        target = torch.randint(0, 3, (rows,))
        z = prediction.double().requires_grad_()
        expected = F.mse_loss(z, F.one_hot(target, 3).double(), reduction="sum")
        expected.backward()
        loss = criterion(prediction, target)
        assert loss.dtype == dtype
        rtol = 1e-12 if dtype == F64 else 1e-6
        assert_close(loss.double(), expected.detach(), rtol=rtol)
        assert_close(criterion.backward().double(), z.grad, rtol=rtol)


@pytest.mark.parametrize("negative", [-1e-3, -1e-8])
def test_cross_entropy_refuses_any_negative_probability(negative: float) -> None:
    """Non-negative means >= 0 (a row of [1 - e, e] with e < 0 still sums to 1)."""
    target = torch.tensor([[1.0 - negative, negative], [0.0, 1.0]], dtype=F64)
    with pytest.raises(ValueError, match=f"got a minimum of {negative:g}"):
        nn.CrossEntropyLoss()(torch.randn(2, 2, dtype=F64), target)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, F64])
@pytest.mark.parametrize("shape", [(1, 4), (3, 1), (4,)], ids=["one-row", "one-column", "1-D"])
def test_log_softmax_refuses_a_gradient_that_only_broadcasts(
    dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    """A 16-bit forward keeps its probabilities in float32; its backward checks the gradient's
    shape as the others do, rather than broadcast it against them."""
    layer = nn.LogSoftmax(dim=1)
    layer(torch.randn(3, 4).to(dtype))
    with pytest.raises(ValueError, match=r"LogSoftmax: gradient has shape .* expected \(3, 4\)"):
        layer.backward(torch.randn(shape).to(dtype))


# -- dropout --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("p", [0.021, 0.043, 0.3])
def test_dropout_scales_with_the_bits_of_pytorchs_dropout(p: float, dtype: torch.dtype) -> None:
    """The kept elements are divided by 1 - p (as PyTorch's dropout divides its mask), not
    multiplied by 1 / (1 - p), which rounds differently at these p in float32."""
    x = torch.randn(64, 33, dtype=dtype)
    torch.manual_seed(5)
    expected = F.dropout(x, p, training=True)
    torch.manual_seed(5)
    layer = nn.Dropout(p)
    assert torch.equal(layer(x), expected)
    upstream = torch.randn(64, 33, dtype=dtype)
    leaf = x.clone().requires_grad_()
    torch.manual_seed(5)
    (F.dropout(leaf, p, training=True) * upstream).sum().backward()
    assert leaf.grad is not None
    assert torch.equal(layer.backward(upstream), leaf.grad)


@pytest.mark.parametrize("generator", [42, "cpu", torch.device("cpu")], ids=str)
def test_dropout_refuses_a_generator_that_is_not_one(generator: object) -> None:
    with pytest.raises(TypeError, match=r"Dropout: generator must be a torch\.Generator or None"):
        nn.Dropout(0.5, generator=generator)  # type: ignore[arg-type]


@pytest.mark.parametrize("p", [0.0, 0.5])
def test_dropout_identity_backward_checks_the_last_forwards_shape(p: float) -> None:
    """Where dropout is the identity (evaluation mode, or p = 0), backward checks the gradient
    against the shape of the last forward, not of the first one."""
    layer = nn.Dropout(p).eval()
    layer(torch.randn(2, 3))
    layer(torch.randn(4, 5))
    gradient = torch.randn(4, 5)
    assert layer.backward(gradient) is gradient
    with pytest.raises(
        ValueError, match=r"Dropout: gradient has shape \(2, 3\), expected \(4, 5\)"
    ):
        layer.backward(torch.randn(2, 3))


@pytest.mark.parametrize(("p", "train"), [(0.0, True), (0.5, False)])
def test_dropout_identity_backward_refuses_a_gradient_on_another_device(
    p: float, train: bool
) -> None:
    """The identity's backward checks the gradient's device as the training mode's does."""
    layer = nn.Dropout(p).train(train)
    layer(torch.randn(2, 3))
    with pytest.raises(
        ValueError, match=r"Dropout: gradient is on meta but the last forward's output is on cpu"
    ):
        layer.backward(torch.randn(2, 3, device="meta"))
    restored = pickle.loads(pickle.dumps(layer))
    with pytest.raises(ValueError, match="gradient is on meta"):
        restored.backward(torch.randn(2, 3, device="meta"))


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2], ids=str)
@pytest.mark.parametrize(("p", "train"), [(0.0, True), (0.5, False)])
def test_dropout_identity_backward_refuses_a_float8_gradient(
    p: float, train: bool, dtype: torch.dtype
) -> None:
    """Where dropout is the identity (evaluation mode, or p = 0), backward refuses a float8
    gradient naming Dropout, the dtype and the four taken, as in training mode. (Asked as
    ``is_floating_point()``, which float8 passes, the check let it through to the promotion,
    which failed in torch's words: 'Promotion for Float8 Types is not supported'.)"""
    layer = nn.Dropout(p).train(train)
    layer(torch.randn(2, 3))
    with pytest.raises(
        TypeError,
        match=r"^Dropout: expected a floating-point gradient of dtype float16, bfloat16, float32 "
        rf"or float64, got dtype {dtype}$",
    ):
        layer.backward(torch.randn(2, 3).to(dtype))


# -- mlp, batch norm, sequential ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["leaky_relu", "Leaky-ReLU", "LEAKY_RELU"])
def test_activation_names_ignore_case_underscores_and_hyphens(name: str) -> None:
    assert type(nn.activation(name)) is nn.LeakyReLU
    model = nn.mlp((2, 3, 1), name)
    assert type(model[1]) is nn.LeakyReLU
    model = nn.mlp((2, 3, 3, 1), [name, "tanh"])
    assert type(model[1]) is nn.LeakyReLU


def test_batch_norm_backward_after_its_weight_was_cast_by_hand_is_refused() -> None:
    """A weight assigned by hand between forward and backward (another dtype) no longer fits
    what the forward cached: backward says so and accumulates nothing."""
    layer = nn.BatchNorm1d(3)
    layer(torch.randn(4, 3))
    layer.weight.data = layer.weight.data.double()
    message = "BatchNorm1d: the parameters are torch.float64 on cpu but the last forward ran"
    with pytest.raises(RuntimeError, match=message):
        layer.backward(torch.randn(4, 3))
    assert layer.weight.grad.count_nonzero() == 0 and layer.bias.grad.count_nonzero() == 0


def test_sequential_flattens_gradients_that_do_not_tile_one_buffer() -> None:
    """Values that already tile one buffer are not enough: a Sequential built on modules whose
    gradients do not (one replaced by hand) makes both flat, values and gradients unchanged."""
    from minidl.nn.flat import flat_buffer

    first = nn.Sequential(nn.Linear(2, 3, dtype=F64), nn.Linear(3, 2, dtype=F64))
    first[0].weight.grad = torch.full((3, 2), 0.5, dtype=F64)
    values = [p.data.clone() for p in first.parameters()]
    grads = [p.grad.clone() for p in first.parameters()]
    assert flat_buffer([p.data for p in first.parameters()]) is not None
    assert flat_buffer([p.grad for p in first.parameters()]) is None
    model = nn.Sequential(first[0], first[1])
    assert flat_buffer([p.data for p in model.parameters()]) is not None
    assert flat_buffer([p.grad for p in model.parameters()]) is not None
    for parameter, value, grad in zip(model.parameters(), values, grads, strict=True):
        assert torch.equal(parameter.data, value) and torch.equal(parameter.grad, grad)


# -- module ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_zero_grad_zeroes_a_gradient_that_is_not_finite(bad: float) -> None:
    """``zero_grad`` sets the gradients to 0; multiplying them by 0 would leave NaN where a
    gradient overflowed (inf * 0)."""
    model = nn.mlp((2, 3, 1), dtype=F64)
    for parameter in model.parameters():
        parameter.grad.fill_(bad)
    model.zero_grad()
    for parameter in model.parameters():
        assert torch.equal(parameter.grad, torch.zeros_like(parameter.grad))


def test_load_state_dict_refuses_a_counter_of_another_dtype() -> None:
    """A buffer that is not floating point (``num_batches_tracked``) takes an entry of its
    dtype only; the module is left unchanged."""
    layer = nn.BatchNorm1d(2)
    state = layer.state_dict()
    state["num_batches_tracked"] = torch.tensor(3.0)
    state["running_mean"] = torch.ones(2)
    with pytest.raises(
        TypeError,
        match=r"entry 'num_batches_tracked' must be a tensor of dtype torch.int64, got torch.float32",
    ):
        layer.load_state_dict(state)
    assert int(layer.num_batches_tracked) == 0
    assert torch.equal(layer.running_mean, torch.zeros(2))


# -- stacks ---------------------------------------------------------------------------------------


def test_an_unstacked_model_shares_no_activation_with_the_stack() -> None:
    """The unstacked model runs between the stack's forward and backward: the stack's input
    gradient is the one it gives without that run (its activation keeps its own cache)."""
    torch.manual_seed(0)
    stacked = nn.stack_models([nn.mlp((2, 3, 2), "tanh", dtype=F64) for _ in range(2)])
    x = torch.randn(2, 5, 2, dtype=F64)
    grad_output = torch.randn(2, 5, 2, dtype=F64)
    stacked(x)
    expected = stacked.backward(grad_output)
    stacked.zero_grad()
    stacked(x)
    single = nn.unstack_model(stacked, 0)
    assert all(a is not b for a in single for b in stacked)
    single(torch.randn(7, 2, dtype=F64))  # in between
    assert torch.equal(stacked.backward(grad_output), expected)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2], ids=str)
def test_a_batched_linear_refuses_a_float8_input_naming_the_four_dtypes(dtype: torch.dtype) -> None:
    """A float8 input, as the first and after a float32 input of the same shape, is refused as
    an input minidl computes in no dtype of, naming BatchedLinear, the four dtypes taken and the
    one given, as Linear refuses it. (Asked as ``is_floating_point()``, which float8 passes, it
    reached the comparison with the parameters' dtype, which named float32 alone.)"""
    x = torch.randn(2, 3, 4)
    message = (
        r"^BatchedLinear: expected a floating-point tensor input of dtype float16, bfloat16, "
        rf"float32 or float64, got {dtype}$"
    )
    with pytest.raises(TypeError, match=message):
        nn.BatchedLinear(2, 4, 5)(x.to(dtype))
    layer = nn.BatchedLinear(2, 4, 5)
    layer(x)
    with pytest.raises(TypeError, match=message):
        layer(x.to(dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, F64])
def test_model_layout_blocks_start_on_64_byte_boundaries_in_every_dtype(dtype: torch.dtype) -> None:
    """Each model's block (13 values here) is padded to a multiple of MODEL_ALIGNMENT (64)
    bytes, counted in the dtype's own element size."""
    from minidl.nn.stack import MODEL_ALIGNMENT

    models = [nn.mlp((2, 3, 1), dtype=dtype) for _ in range(3)]
    stacked = nn.stack_models(models, layout="model")
    weight = stacked[0].weight.data
    block_bytes = weight.stride(0) * weight.element_size()
    assert block_bytes % MODEL_ALIGNMENT == 0
    assert block_bytes < 13 * weight.element_size() + MODEL_ALIGNMENT  # (no more than needed)
    for index in range(3):
        assert nn.flat_model_parameters(stacked, index).data.data_ptr() % MODEL_ALIGNMENT == 0


# -- found by a second mutation audit of the core layers -----------------------------------------


@pytest.mark.parametrize("switch", ["eval", "train"])
def test_batch_norm_differentiates_the_forward_it_ran_whatever_the_mode_now(switch: str) -> None:
    """The mode switched between forward and backward: the backward is that of the forward
    that ran (batch statistics in training, running ones in evaluation), against autograd of
    the same forward (read from the mode at backward, a training forward got the evaluation
    gradient, off by 1.09, with no error)."""
    torch.manual_seed(0)
    x, g = torch.randn(5, 3, dtype=F64), torch.randn(5, 3, dtype=F64)
    bn = nn.BatchNorm1d(3, dtype=F64)
    bn.running_mean.copy_(torch.tensor([0.5, -0.2, 0.1], dtype=F64))
    bn.running_var.copy_(torch.tensor([2.0, 0.5, 1.5], dtype=F64))
    training = switch == "eval"  # (the mode of the forward; then switched to the other)
    bn.train(training)
    running = (bn.running_mean.clone(), bn.running_var.clone())
    bn(x)
    bn.train(not training)
    grad_input = bn.backward(g)
    xr = x.clone().requires_grad_()
    F.batch_norm(xr, *running, training=training).backward(g)
    assert_close(grad_input, xr.grad, 1e-12)


def test_batch_norm_checks_eps_again_in_a_new_dtype_and_on_every_refused_call() -> None:
    """eps 1e-300 fits float64 but rounds to 0 in float32: after a cast the forward is refused
    (checked once per eps alone, it returned NaN); eps 1e-50 is refused on the second call as
    on the first (remembered before the check, the second call returned NaN)."""
    x = torch.tensor([[0.0, -1.0], [0.0, 1.0]], dtype=F64)
    bn = nn.BatchNorm1d(2, eps=1e-300, dtype=F64)
    bn(x)
    bn.float()
    with pytest.raises(ValueError, match=r"^BatchNorm1d: eps=1e-300 rounds to 0 in torch\.float32"):
        bn(x.float())
    small = nn.BatchNorm1d(2, eps=1e-50)
    for _ in range(2):
        with pytest.raises(
            ValueError, match=r"^BatchNorm1d: eps=1e-50 rounds to 0 in torch\.float32"
        ):
            small(x.float())


class _Picky(nn.Module):
    """A module of one's own that refuses a batch of 4 but takes any other."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.shape[0] == 4:
            raise ValueError("_Picky: no batches of 4")
        return input

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output


def test_a_forward_refused_after_a_trial_ran_later_modules_refuses_the_backward() -> None:
    """A Sequential's trial on the first sample ran the Linear after a module of one's own,
    which then refused the batch: the backward is refused naming that module, and no gradient
    changes (with the trial's caches taken as clean, the backward ran into the BatchNorm1d's
    gradients and failed in the Linear's words)."""
    torch.manual_seed(0)
    linear, bn = nn.Linear(3, 3), nn.BatchNorm1d(3)
    model = nn.Sequential(_Picky(), linear, bn)
    model(torch.randn(3, 3))
    model.backward(torch.ones(3, 3))
    linear.weight.data = linear.weight.data.clone()  # (a new tensor: the trial runs again)
    with pytest.raises(ValueError, match="no batches of 4"):
        model(torch.randn(4, 3))
    grads = [p.grad.clone() for p in model.parameters()]
    with pytest.raises(
        RuntimeError,
        match=r"^Sequential: backward after the forward refused by module 0 \(_Picky\)",
    ):
        model.backward(torch.ones(3, 3))
    assert all(torch.equal(p.grad, q) for p, q in zip(model.parameters(), grads, strict=True))


class _DropThenLinear(nn.Module):
    """A block of one's own (no Sequential, which tries its input itself): Dropout, Linear."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.drop = self.register_module("drop", nn.Dropout(0.5, generator=generator))
        self.linear = self.register_module("linear", nn.Linear(3, 3))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(input))

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return self.drop.backward(self.linear.backward(grad_output))


def test_a_residuals_trial_runs_for_every_new_input_shape() -> None:
    """After a good forward, an input of a new shape that the block's Linear refuses: the
    Residual's trial runs again and the refusal draws no random number of the block's Dropout
    (tried for a first shape only, the refused forward advanced the generator)."""
    generator = torch.Generator().manual_seed(0)
    residual = nn.Residual(_DropThenLinear(generator))
    residual(torch.randn(4, 3))
    state = generator.get_state()
    with pytest.raises(ValueError, match=r"^Linear: expected 3 input features, got 5"):
        residual(torch.randn(4, 5))
    assert torch.equal(generator.get_state(), state)


def test_log_softmax_of_a_float32_forward_after_a_16_bit_one_gives_a_float32_gradient() -> None:
    """The 16-bit forward's state is cleared by a float32 forward: a float16 gradient then
    gives a float32 input gradient, autograd's (left set, it was rounded to float16)."""
    torch.manual_seed(0)
    module = nn.LogSoftmax()
    module(torch.randn(2, 3, dtype=torch.float16))
    x = torch.randn(2, 3)
    module(x)
    g = torch.randn(2, 3, dtype=torch.float16)
    grad_input = module.backward(g)
    xr = x.clone().requires_grad_()
    torch.log_softmax(xr, 1).backward(g.float())
    assert grad_input.dtype is torch.float32
    assert_close(grad_input, xr.grad, 1e-6)


def test_two_overlapping_parameters_are_named_in_the_order_of_their_memory() -> None:
    """The refusal names first the parameter whose memory comes first (its advice, to register
    one Parameter at the first name as the second, depends on it)."""
    first, second = nn.Linear(2, 2), nn.Linear(2, 2)
    memory = torch.zeros(8)
    first.weight.data = memory[0:4].view(2, 2)
    second.weight.data = memory[2:6].view(2, 2)
    with pytest.raises(ValueError, match=r"^Sequential: parameters '0\.weight' and '1\.weight' "):
        nn.Sequential(first, second)
    with pytest.raises(ValueError, match=r"^Sequential: parameters '0\.weight' and '1\.weight' "):
        nn.Sequential(second, first)


def test_a_parameter_of_one_element_with_stride_0_is_taken() -> None:
    """One element repeated by stride 0 shares no memory between elements: taken, and updated
    in place."""
    parameter = nn.Parameter(torch.zeros(()).expand(1))
    assert parameter.data.stride() == (0,)
    parameter.data.add_(1.0)
    assert parameter.data.tolist() == [1.0]


@pytest.mark.parametrize("batch", [1024, 1025])
def test_linears_bias_gradient_is_a_product_up_to_1024_samples_and_a_sum_above(batch: int) -> None:
    """Up to ``SUMMED_BY_PRODUCT`` (1024) samples the bias gradient is ``G^T 1`` (one
    ``addmv``), above it ``G.sum(0)``: the bits of each (they differ in float32)."""
    from minidl.nn.linear import SUMMED_BY_PRODUCT

    assert SUMMED_BY_PRODUCT == 1024
    torch.manual_seed(0)
    layer = nn.Linear(3, 4)
    x, g = torch.randn(batch, 3), torch.randn(batch, 4)
    layer(x)
    layer.backward(g)
    expected = (
        torch.zeros(4).addmv_(g.t(), torch.ones(batch))
        if batch <= 1024
        else torch.zeros(4).add_(g.t().sum(1))
    )
    assert torch.equal(layer.bias.grad, expected)
