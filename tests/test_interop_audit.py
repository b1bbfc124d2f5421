"""minidl.interop, what an audit found: torch.nn models and minidl layers that converted
without a word into a model that computes or trains otherwise (a batch norm that stopped
tracking its statistics, a forward replaced on the object, a buffer assigned by hand), or that
failed in Python's words (a child or weight set to None) or with a wrong way out (a lazy layer
before its first forward)."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from minidl import nn
from minidl.interop import ConversionError, TorchResidual, from_torch, to_torch

F64 = torch.float64
SUPPORTED = (
    "; supported: Sequential, Linear, ReLU, Tanh, Sigmoid, LeakyReLU, ELU, SELU, GELU, SiLU, "
    "Dropout, BatchNorm1d, Identity, Softmax, LogSoftmax, TorchResidual"
)


def test_a_batch_norm_that_stopped_tracking_its_statistics_is_refused() -> None:
    """``norm.track_running_stats = False`` after construction keeps the buffers: torch's
    training then normalises with the batch and leaves them alone, where minidl's BatchNorm1d
    updates them. It converted without a word, and the running statistics parted at the first
    training forward (and the outputs in evaluation mode after it)."""
    torch.manual_seed(0)
    norm = torch.nn.BatchNorm1d(3, dtype=F64)
    norm.track_running_stats = False
    before = norm.running_mean.clone()
    norm(torch.randn(8, 3, dtype=F64))
    assert torch.equal(norm.running_mean, before)  # what torch does with it
    with pytest.raises(ConversionError) as info:
        from_torch(torch.nn.Sequential(torch.nn.Linear(2, 3, dtype=F64), norm))
    assert str(info.value) == (
        "from_torch: cannot convert the layer at '1' of type "
        "torch.nn.modules.batchnorm.BatchNorm1d (track_running_stats=False)" + SUPPORTED
    )
    norm.track_running_stats = True
    assert isinstance(from_torch(norm), nn.BatchNorm1d)


def test_children_blocks_and_weights_set_to_none_are_refused() -> None:
    """A Sequential child set to None was dropped without a word (torch's forward calls it and
    fails); a TorchResidual's block or a Linear's weight set to None raised AttributeError,
    naming no layer."""
    with_hole = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh())
    with_hole.add_module("2", None)
    with pytest.raises(TypeError):
        with_hole(torch.randn(3, 2))  # torch cannot run it either
    no_block = TorchResidual(torch.nn.Linear(2, 2))
    no_block.block = None
    no_weight = torch.nn.Linear(2, 2)
    no_weight.weight = None
    cases = [
        (
            torch.nn.Sequential(torch.nn.Tanh(), with_hole),
            "from_torch: cannot convert the layer at '1.2', which is None (a child set to None, "
            "which torch's forward cannot call either); remove it or put a layer there",
        ),
        (
            torch.nn.Sequential(no_block),
            "from_torch: cannot convert the layer at '0.block', which is None (a child set to "
            "None, which torch's forward cannot call either); remove it or put a layer there",
        ),
        (
            torch.nn.Sequential(torch.nn.Tanh(), no_weight),
            "from_torch: cannot convert the layer at '1' of type torch.nn.modules.linear.Linear "
            "(weight set to None)" + SUPPORTED,
        ),
    ]
    for model, message in cases:
        with pytest.raises(ConversionError) as info:
            from_torch(model)
        assert str(info.value) == message


def test_a_forward_replaced_on_the_object_is_refused() -> None:
    """``layer.forward = ...`` (a debugging patch, a library wrapping the forward) changes what
    the torch layer computes: it converted into a plain minidl layer, with other outputs."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 3, dtype=F64)
    original = layer.forward

    def doubled(input: torch.Tensor) -> torch.Tensor:
        return 2 * original(input)

    layer.forward = doubled  # type: ignore[method-assign]
    model = torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Sequential(layer))
    with pytest.raises(
        ConversionError,
        match=r"^from_torch: cannot convert the layer at '1\.0' of type "
        r"torch\.nn\.modules\.linear\.Linear \(its forward is replaced on the object by "
        + re.escape(doubled.__qualname__)
        + r", which minidl cannot carry and which may change what it computes; delete it "
        r"\(del layer\.forward\) first\)$",
    ):
        from_torch(model)
    del layer.forward
    x = torch.randn(4, 3, dtype=F64)
    with torch.no_grad():
        assert torch.equal(from_torch(model)(x), model(x))
    # A ScriptModule sets its forward on the object: still refused for its type.
    with warnings.catch_warnings():
        # (torch.jit's deprecation: a DeprecationWarning in 2.13, a FutureWarning from 2.14)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    with pytest.raises(
        ConversionError,
        match=r"^from_torch: cannot convert the model itself, of type "
        r"torch\.jit\._script\.RecursiveScriptModule; supported: ",
    ):
        from_torch(scripted)


@pytest.mark.parametrize(
    ("loaded", "why"),
    [
        (False, "whose sizes are not known yet"),
        (
            True,
            "whose parameters were loaded but whose first forward, which sets its sizes, has "
            "not run",
        ),
    ],
    ids=["uninitialised", "loaded"],
)
def test_a_lazy_layer_before_its_first_forward_is_refused_with_its_way_out(
    loaded: bool, why: str
) -> None:
    """A lazy layer before its first forward was refused for its forward pre-hook, with the
    advice to remove it, which would leave the layer without sizes for good; so was one whose
    parameters a state dict had set (its in_features stays 0, its class LazyLinear, until that
    forward). Named a lazy layer, it converts after one forward."""
    model = torch.nn.Sequential(torch.nn.LazyLinear(4), torch.nn.Tanh(), torch.nn.LazyLinear(2))
    if loaded:
        twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        model.load_state_dict(twin.state_dict())
    with pytest.raises(ConversionError) as info:
        from_torch(model)
    assert str(info.value) == (
        "from_torch: cannot convert the layer at '0' of type torch.nn.modules.linear.LazyLinear "
        f"(a lazy module {why}: run one forward through the model first, which makes it a "
        "torch.nn.Linear)"
    )
    x = torch.randn(5, 3)
    model(x)
    with torch.no_grad():
        assert torch.equal(from_torch(model)(x), model(x))


def test_an_attribute_that_is_not_the_registered_tensor_is_refused_by_to_torch() -> None:
    """``norm.running_mean = tensor`` registers the tensor in torch.nn, not in minidl: the
    layer computes with the attribute and its state_dict holds the registered buffer. to_torch
    copied the registered one, into a twin with other outputs; for a Linear's weight set to a
    new Parameter it copied the attribute, into a twin whose state_dict was not the model's."""
    torch.manual_seed(0)
    norm = nn.BatchNorm1d(3, dtype=F64)
    norm.eval()
    norm.running_mean = torch.full((3,), 2.0, dtype=F64)
    linear = nn.Linear(3, 3, dtype=F64)
    linear.weight = nn.Parameter(torch.zeros(3, 3, dtype=F64))
    unbiased = nn.Linear(3, 3, dtype=F64)
    unbiased.bias = None
    cases = [
        (norm, "the model itself,", "batch_norm.BatchNorm1d", "running_mean", "buffer",
         "state_dict() holds"),
        (nn.Residual(linear), "the layer at 'block'",
         "linear.Linear", "weight", "parameter", "state_dict() and parameters() hold"),
        (unbiased, "the model itself,", "linear.Linear", "bias", "parameter",
         "state_dict() and parameters() hold"),
    ]  # fmt: skip
    for model, where, kind, name, what, holders in cases:
        with pytest.raises(ConversionError) as info:
            to_torch(model)
        assert str(info.value) == (
            f"to_torch: cannot convert {where} of type minidl.nn.{kind} (its attribute {name!r} "
            f"is not its registered {what} {name!r} (assigned by hand, which minidl does not "
            f"register: the layer computes with the attribute, {holders} the registered one); "
            f"copy the values in place, or register the new one with "
            f"register_{what}({name!r}, ...))"
        )
    norm.register_buffer("running_mean", norm.running_mean)
    twin = to_torch(norm)
    x = torch.randn(4, 3, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(norm(x), twin(x), rtol=0, atol=1e-12)
    assert torch.equal(twin.state_dict()["running_mean"], norm.state_dict()["running_mean"])


def test_a_selu_converts_to_torchs_whose_constants_are_fixed_as_its_own() -> None:
    """minidl's SELU is an ELU with a scale, and its alpha was a setting that could be changed,
    where torch.nn.SELU's constants are fixed: to_torch then had to refuse a changed one. Its
    alpha is now fixed too (setting it is refused, see test_nn_mutants), and to_torch gives
    torch.nn.SELU, of the same outputs to the bit, inside a model too."""
    model = nn.Sequential(nn.Linear(2, 2, dtype=F64), nn.Residual(nn.SELU()))
    with pytest.raises(AttributeError, match=r"^SELU: alpha is fixed at 1.6732632423543772 "):
        model[1].block.alpha = 2.0
    twin = to_torch(model)
    assert isinstance(twin[1].block, torch.nn.SELU)
    x = torch.linspace(-3, 3, 26, dtype=F64).reshape(13, 2)
    with torch.no_grad():
        assert torch.equal(to_torch(nn.SELU())(x), torch.nn.SELU()(x))
        assert torch.equal(twin(x), model(x))


def test_a_residual_block_assigned_by_hand_is_refused_by_to_torch() -> None:
    """``residual.block = layer`` registers the layer in torch.nn, not in minidl: the Residual
    computes with the new block while state_dict() and parameters() hold the old one. to_torch
    converted the new one, into a twin whose state_dict was not the model's."""
    torch.manual_seed(0)
    residual = nn.Residual(nn.Linear(3, 3, dtype=F64))
    model = nn.Sequential(nn.Tanh(), residual)
    residual.block = nn.Linear(3, 3, dtype=F64)
    # (a Sequential built now refuses it: its parameters would be trained by nothing)
    with pytest.raises(ValueError, match=r"^Sequential: the Linear in attribute '1\.block' is not"):
        nn.Sequential(nn.Tanh(), residual)
    with pytest.raises(ConversionError) as info:
        to_torch(model)
    assert str(info.value) == (
        "to_torch: cannot convert the layer at '1' of type minidl.nn.residual.Residual (its "
        "attribute 'block' is not its registered module 'block' (assigned by hand, which minidl "
        "does not register: the layer computes with the attribute, state_dict() and "
        "parameters() hold the registered one); register the new one with "
        "register_module('block', ...))"
    )
    residual.register_module("block", residual.block)
    twin = to_torch(residual)
    for name, value in residual.state_dict().items():
        assert torch.equal(twin.state_dict()[name], value), name
    # A type to_torch does not convert is refused for its type, whatever its attributes.

    class Custom(nn.Module):
        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return input

        def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
            return grad_output

    custom = Custom()
    custom.register_module("inner", nn.Tanh())
    custom.inner = nn.ReLU()
    with pytest.raises(ConversionError, match=r"^to_torch: .* of type .*Custom; supported: "):
        to_torch(custom)


def test_a_child_module_registered_by_hand_in_a_layer_is_refused() -> None:
    """A child registered in a layer whose forward does not call it (``linear.extra = ...`` in
    torch.nn, ``register_module`` in minidl) was dropped without a word, with its parameters
    and buffers: the converted model's state_dict lacked them, and a round trip lost them. Its
    parameters and buffers registered by hand were refused already."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(2, 2, dtype=F64)
    linear.extra = torch.nn.BatchNorm1d(2, dtype=F64)
    residual = TorchResidual(torch.nn.Linear(2, 2, dtype=F64))
    residual.extra = torch.nn.Linear(2, 2, dtype=F64)
    x = torch.randn(4, 2, dtype=F64)
    with torch.no_grad():  # (torch's forward does not call them)
        torch.testing.assert_close(
            linear(x), torch.nn.functional.linear(x, linear.weight, linear.bias)
        )
    cases = [
        (torch.nn.Sequential(torch.nn.Tanh(), linear), "the layer at '1'",
         "torch.nn.modules.linear.Linear", "Linear"),
        (residual, "the model itself,", "minidl.interop.TorchResidual", "Residual"),
    ]  # fmt: skip
    for model, where, kind, name in cases:
        with pytest.raises(ConversionError) as info:
            from_torch(model)
        assert str(info.value) == (
            f"from_torch: cannot convert {where} of type {kind} (child modules that minidl's "
            f"{name} has not: ['extra'])"
        )
    mine = nn.Linear(2, 2, dtype=F64)
    mine.register_module("extra", nn.Linear(2, 2, dtype=F64))
    block = nn.Residual(nn.Tanh())
    block.register_module("extra", nn.BatchNorm1d(2, dtype=F64))
    # (named by the class each becomes: a Residual becomes minidl.interop's TorchResidual,
    # not a "torch.nn's Residual", nor the other way round a "minidl's TorchResidual")
    for model, where, kind, counterpart in (
        (nn.Sequential(mine, nn.Tanh()), "the layer at '0'", "linear.Linear", "torch.nn's Linear"),
        (
            nn.Sequential(nn.Linear(2, 2, dtype=F64), block),
            "the layer at '1'",
            "residual.Residual",
            "minidl.interop.TorchResidual",
        ),
    ):
        with pytest.raises(ConversionError) as info:
            to_torch(model)
        assert str(info.value) == (
            f"to_torch: cannot convert {where} of type minidl.nn.{kind} (child modules that "
            f"{counterpart} has not: ['extra'])"
        )
    # A child set to None holds nothing, and a Sequential's children are all converted.
    linear.extra = None
    del residual.extra
    for model in (linear, torch.nn.Sequential(residual, torch.nn.Tanh())):
        back = from_torch(model)
        assert [name for name, _ in back.named_parameters()] == [
            name for name, _ in model.named_parameters()
        ]


def test_torch_residual_refuses_a_block_that_is_not_a_torch_module() -> None:
    """``TorchResidual(minidl_layer)`` was taken: torch kept the block as a plain attribute,
    its forward ran the minidl layer, but parameters() and state_dict() were empty (a torch
    optimizer trained nothing), and from_torch called the block None. ``TorchResidual(None)``
    was taken too, and its forward failed in Python's words."""
    for block, hint in (
        (nn.Linear(2, 2), "Linear (for a minidl block, use minidl.nn.Residual)"),
        (None, "NoneType"),
        (torch.randn(2, 2), "Tensor"),
    ):
        with pytest.raises(TypeError) as info:
            TorchResidual(block)  # type: ignore[arg-type]
        assert str(info.value) == f"TorchResidual: block must be a torch.nn.Module, got {hint}"
    residual = TorchResidual(torch.nn.Linear(2, 2))
    assert [name for name, _ in residual.named_parameters()] == ["block.weight", "block.bias"]


def test_a_layer_that_changes_a_residual_blocks_input_in_place_is_refused() -> None:
    """``TorchResidual(ReLU(inplace=True))`` changes the input that its skip connection adds:
    torch computes ``relu(x) + relu(x)``, and from_torch converted it without a word into
    minidl's ``x + relu(x)`` (found by test_interop_fuzz). Refused, naming the layer, the
    residual and the way out, wherever the layer gets the block's input (past an Identity, a
    Dropout, which returns its input in evaluation mode, and into nested containers); an
    in-place layer after one that makes a new tensor converts, and computes as torch's."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=F64)
    residual = TorchResidual(torch.nn.ReLU(inplace=True))
    assert torch.equal(residual(x.clone()), 2 * x.relu())  # not x + relu(x)
    leaky = torch.nn.LeakyReLU(0.1, inplace=True)
    deep = TorchResidual(
        torch.nn.Sequential(
            torch.nn.Identity(),
            torch.nn.Dropout(0.5),
            torch.nn.Sequential(),
            torch.nn.Sequential(leaky, torch.nn.Linear(3, 3, dtype=F64)),
        )
    )
    cases = [
        (torch.nn.Sequential(torch.nn.Linear(3, 3, dtype=F64), residual), "1.block",
         "torch.nn.modules.activation.ReLU", "the TorchResidual at '1'"),
        (deep, "block.3.0", "torch.nn.modules.activation.LeakyReLU",
         "the TorchResidual (the model)"),
        (torch.nn.Sequential(TorchResidual(torch.nn.Dropout(0.2, inplace=True))), "0.block",
         "torch.nn.modules.dropout.Dropout", "the TorchResidual at '0'"),
        (TorchResidual(TorchResidual(torch.nn.ELU(inplace=True))), "block.block",
         "torch.nn.modules.activation.ELU", "the TorchResidual (the model)"),
    ]  # fmt: skip
    for model, path, kind, owner in cases:
        with pytest.raises(ConversionError) as info:
            from_torch(model)
        assert str(info.value) == (
            f"from_torch: cannot convert the layer at {path!r} of type {kind} (inplace=True at "
            f"the input of the block of {owner}: it changes the input that the skip connection "
            "adds, so that torch.nn computes changed(x) + block(x), where minidl's layers never "
            "change their input (x + block(x)); set its inplace to False)"
        )
    leaky.inplace = False
    assert isinstance(from_torch(deep), nn.Residual)
    # After a layer that makes a new tensor, the input is left alone: converted.
    safe = TorchResidual(
        torch.nn.Sequential(
            torch.nn.Linear(3, 3, dtype=F64),
            torch.nn.ReLU(inplace=True),
            torch.nn.Linear(3, 3, dtype=F64),
        )
    )
    converted = from_torch(torch.nn.Sequential(torch.nn.Tanh(), safe))
    leaf = x.clone().requires_grad_()
    expected = torch.nn.Sequential(torch.nn.Tanh(), safe)(leaf)
    torch.testing.assert_close(converted(x), expected.detach(), rtol=1e-12, atol=1e-12)
    expected.sum().backward()
    assert leaf.grad is not None
    torch.testing.assert_close(
        converted.backward(torch.ones_like(x)), leaf.grad, rtol=1e-12, atol=1e-12
    )


def test_running_statistics_shared_by_two_batch_norms_stay_shared_both_ways() -> None:
    """One tensor registered as a buffer of two batch norms (``b.running_mean =
    a.running_mean``), which both update in place, in torch as in minidl: the conversion made
    a copy for each place without a word, and the running statistics parted at the first
    training forward (found by test_interop_fuzz). Tied again both ways, as tied parameters
    are."""
    torch.manual_seed(0)
    first = torch.nn.BatchNorm1d(3, dtype=F64)
    second = torch.nn.BatchNorm1d(3, momentum=None, dtype=F64)
    second.running_mean = first.running_mean
    second.num_batches_tracked = first.num_batches_tracked
    model = torch.nn.Sequential(first, torch.nn.Linear(3, 3, dtype=F64), second)
    converted = from_torch(model)
    back = to_torch(converted)
    for twin in (converted, back):
        assert twin[0].running_mean is twin[2].running_mean
        assert twin[0].num_batches_tracked is twin[2].num_batches_tracked
        assert twin[0].running_var is not twin[2].running_var
    x = torch.randn(6, 3, dtype=F64)
    for _ in range(3):
        model(x)
        converted(x)
        back(x)
    expected = dict(model.named_buffers(remove_duplicate=False))
    assert expected["0.num_batches_tracked"] == 6  # (each of the two counts each batch)
    for twin in (converted, back):
        for name, buffer in twin.named_buffers(remove_duplicate=False):
            torch.testing.assert_close(buffer, expected[name], rtol=1e-12, atol=1e-12)


def test_torch_residual_refuses_a_block_output_of_another_shape_as_residual_does() -> None:
    """``TorchResidual(Linear(3, 1))`` broadcast its block's ``(N, 1)`` output over the
    ``(N, 3)`` input, where minidl's Residual refuses it: such a model converted both ways and
    then failed at minidl's first forward, or computed in torch what its minidl twin refused.
    TorchResidual refuses it in Residual's words, before adding anything."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=F64)
    for block, got in (
        (torch.nn.Linear(3, 1, dtype=F64), (4, 1)),
        (torch.nn.Sequential(torch.nn.Linear(3, 2, dtype=F64)), (4, 2)),
    ):
        residual = TorchResidual(block)
        with pytest.raises(ValueError) as info:
            residual(x)
        assert str(info.value) == (
            f"TorchResidual: the block's output has shape {got}, expected the input's shape "
            "(4, 3) (as minidl's Residual: the sum would broadcast it)"
        )
        with pytest.raises(ValueError, match=r"^Residual: the block's output has shape"):
            from_torch(residual)(x)
    same = TorchResidual(torch.nn.Linear(3, 3, dtype=F64))
    torch.testing.assert_close(same(x), x + same.block(x), rtol=0, atol=0)


def test_a_layer_whose_tensors_are_of_a_dtype_it_does_not_compute_with_is_refused() -> None:
    """A minidl Linear without its weight failed in "'NoneType' object has no attribute
    'data'"; integer or complex running statistics built an integer torch.nn batch norm, or
    cast the weights to complex; an integer torch bias was cast to float (torch's forward fails
    on it) and a float count of batches truncated (2.7 to 2, where torch's cumulative average
    divides by 3.7); a torch batch norm with no count was called track_running_stats=False.
    Each is refused, naming the layer and the tensor."""

    layer = nn.Linear(3, 2)
    layer.register_parameter("weight", None)
    with pytest.raises(
        ConversionError, match=r"\(its weight is None, removed with register_parameter"
    ):
        to_torch(layer)
    for dtype in (torch.int64, torch.complex64):
        norm = nn.BatchNorm1d(3)
        norm.register_buffer("running_mean", torch.zeros(3, dtype=dtype))
        with pytest.raises(
            ConversionError, match=rf"its running_mean has dtype {dtype}; expected a floating"
        ):
            to_torch(norm)
    twin = torch.nn.Linear(3, 2)
    twin.bias = torch.nn.Parameter(torch.tensor([1, 2]), requires_grad=False)
    with pytest.raises(ConversionError, match=r"its bias has dtype torch\.int64; expected a"):
        from_torch(twin)
    twin_norm = torch.nn.BatchNorm1d(3, momentum=None)
    twin_norm.num_batches_tracked = torch.tensor(2.7)
    with pytest.raises(
        ConversionError, match=r"its num_batches_tracked has dtype torch\.float32; expected int"
    ):
        from_torch(twin_norm)
    twin_norm = torch.nn.BatchNorm1d(3)
    twin_norm.num_batches_tracked = None
    with pytest.raises(ConversionError, match=r"\(its num_batches_tracked is set to None\)$"):
        from_torch(twin_norm)


def test_a_residual_whose_block_returns_no_tensor_says_what_it_returned() -> None:
    """ "the block's output has shape NoneType": a TypeError now, naming the type returned."""

    class Nothing(nn.Module):
        def forward(self, input: torch.Tensor) -> None:  # type: ignore[override]
            return None

    class TorchNothing(torch.nn.Module):
        def forward(self, input: torch.Tensor) -> None:
            return None

    x = torch.ones(2, 3)
    with pytest.raises(
        TypeError,
        match=r"^Residual: the block returned NoneType, expected a tensor of the input's shape "
        r"\(2, 3\)$",
    ):
        nn.Residual(Nothing())(x)
    with pytest.raises(TypeError, match=r"^TorchResidual: the block returned NoneType, expected"):
        TorchResidual(TorchNothing())(x)


def test_to_torch_refuses_a_computing_method_set_on_a_layers_instance() -> None:
    """from_torch refuses a forward set on a torch object; to_torch took a Linear's forward or
    an activation's _backward set on its instance, and the twin computed what the class
    computes (other outputs and gradients, without a word). Refused now, naming the method;
    detect_anomaly's checks, which compute as the class does, are no such method."""
    from types import MethodType

    from minidl.anomaly import detect_anomaly

    model = nn.Sequential(nn.Linear(3, 2, dtype=F64), nn.Tanh())
    layer = model[0]
    layer.forward = MethodType(lambda self, x: 2 * nn.Linear.forward(self, x), layer)  # type: ignore[method-assign]
    with pytest.raises(
        ConversionError,
        match=r"^to_torch: cannot convert the layer at '0' of type minidl\.nn\.linear\.Linear \(its "
        r"forward is set on the instance \('.*<lambda>'\), which the torch\.nn layer would not run",
    ):
        to_torch(model)
    del layer.forward
    tanh = model[1]
    tanh._backward = MethodType(lambda self, *a: 0 * nn.Tanh._backward(self, *a), tanh)  # type: ignore[method-assign]
    with pytest.raises(ConversionError, match=r"at '1' .* \(its _backward is set on the instance"):
        to_torch(model)
    del tanh._backward
    with detect_anomaly(model):
        twin = to_torch(model)
    x = torch.randn(4, 3, dtype=F64)
    assert torch.equal(twin(x), model(x))


def test_to_torch_names_the_users_method_beneath_detect_anomalys_check() -> None:
    """Inside detect_anomaly the refusal of a forward set on the instance named anomaly's
    check ('_wrap.<locals>.checked_forward') and told to ``del layer.forward``, which there
    removes the check and leaves the user's method to come back at the block's end. The user's
    method is named now, to be removed after the block."""
    from minidl.anomaly import detect_anomaly

    layer = nn.Linear(2, 2, dtype=F64)

    def doubled(x: torch.Tensor) -> torch.Tensor:
        return 2 * nn.Linear.forward(layer, x)

    layer.forward = doubled  # type: ignore[method-assign]
    with (
        detect_anomaly(layer),
        pytest.raises(
            ConversionError,
            match=r"\(its forward is set on the instance \('.*doubled'\), which the torch\.nn "
            r"layer would not run: it would compute what Linear computes; remove it "
            r"\(del layer\.forward\) after the detect_anomaly block first\)$",
        ),
    ):
        to_torch(layer)
    with pytest.raises(ConversionError, match=r"\(del layer\.forward\) first\)$"):
        to_torch(layer)
    del layer.forward
    to_torch(layer)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")
@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("name", ["weight", "running_mean"])
def test_from_torch_refuses_a_tensor_that_is_not_dense(layout: str, name: str) -> None:
    """A sparse weight or running statistic set by hand failed in the copy, in torch's words
    ("copy_() between dense and sparse Tensors is not implemented"), the layer unnamed."""
    layer: torch.nn.Module = (
        torch.nn.Linear(2, 2, dtype=F64) if name == "weight" else torch.nn.BatchNorm1d(2)
    )
    dense = getattr(layer, name).detach()
    dense = dense if dense.dim() == 2 else torch.diag(dense + 1)
    sparse = dense.to_sparse() if layout == "coo" else dense.to_sparse_csr()
    if name == "weight":
        layer.weight = torch.nn.Parameter(sparse)
    else:
        layer.running_mean = sparse
    shown = "torch.sparse_coo" if layout == "coo" else "torch.sparse_csr"
    with pytest.raises(
        ConversionError,
        match=rf"^from_torch: cannot convert the model itself, of type torch\.nn\.modules\.\w+"
        rf"\.\w+ \(its {name} is a tensor of layout {re.escape(shown)}; expected a dense one "
        r"\(torch\.strided\)\)$",
    ):
        from_torch(layer)


def test_from_torch_refuses_a_parameters_own_gradient_hooks() -> None:
    """A hook on a torch parameter (register_hook, register_post_accumulate_grad_hook) changes
    its gradient as autograd accumulates it; module hooks were refused, these dropped without a
    word (the twins' gradients 0 against 2.03, 400 against 4)."""
    for register, what in (
        (lambda p: p.register_hook(lambda g: g * 0), r"gradient hook \(register_hook\)"),
        (
            lambda p: p.register_post_accumulate_grad_hook(lambda p: None),
            r"post-accumulate-grad hook \(register_post_accumulate_grad_hook\)",
        ),
    ):
        layer = torch.nn.Linear(3, 2, dtype=F64)
        handle = register(layer.bias)
        with pytest.raises(
            ConversionError,
            match=rf"^from_torch: cannot convert the model itself, of type torch\.nn\.modules\."
            rf"linear\.Linear \(its parameter 'bias' has a {what}, which minidl cannot carry",
        ):
            from_torch(layer)
        handle.remove()
        from_torch(layer)


@pytest.mark.parametrize("value", ["parameter", "tensor", "number"])
def test_to_torch_refuses_a_parameter_registered_as_none_set_again_by_hand(value: str) -> None:
    """Linear(bias=False) (a bias registered as none) given a bias as a plain attribute: its
    forward refuses it, to_torch built a torch Linear with a trained bias (an extra state_dict
    key), or failed in Python's words for a number. Refused now, naming the attribute; a
    batch norm's weight and bias given None so too."""
    given = {
        "parameter": lambda: nn.Parameter(torch.ones(2, dtype=F64)),
        "tensor": lambda: torch.ones(2, dtype=F64),
        "number": lambda: 0.0,
    }[value]
    layer = nn.Linear(3, 2, bias=False, dtype=F64)
    layer.bias = given()  # type: ignore[assignment]
    norm = nn.BatchNorm1d(2, affine=False, dtype=F64)
    norm.bias = given()  # type: ignore[assignment]
    for model, kind in ((layer, "linear.Linear"), (norm, "batch_norm.BatchNorm1d")):
        with pytest.raises(
            ConversionError,
            match=rf"^to_torch: cannot convert the model itself, of type minidl\.nn\.{kind} \(its "
            r"attribute 'bias' holds .* where no bias is registered \(the layer was built "
            r"without one, or given None\)",
        ):
            to_torch(model)
    layer.bias = None  # type: ignore[assignment]
    assert sorted(to_torch(layer).state_dict()) == ["weight"]


def test_a_parameter_removed_then_registered_again_converts_and_other_kinds_are_refused() -> None:
    """A bias removed (built without one, or register_parameter("bias", None)) then registered
    again with register_parameter: to_torch refused the layer, saying to register it, which
    was done; a batch norm's weight so too. A buffer or child registered under the removed
    parameter's name was taken (torch refuses: the attribute exists), and the layer then
    failed in its forward (a buffer) or computed without its bias (a child). Each converts or
    is refused now, and a refused call changes nothing."""
    x = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    for layer in (nn.Linear(2, 3, bias=False, dtype=F64), nn.Linear(2, 3, dtype=F64)):
        layer.register_parameter("bias", None)
        layer.register_parameter("bias", nn.Parameter(torch.arange(3.0, dtype=F64)))
        twin = to_torch(layer)
        assert sorted(twin.state_dict()) == ["bias", "weight"]
        assert torch.equal(twin(x).detach(), layer(x))
    norm = nn.BatchNorm1d(3, dtype=F64)
    norm.register_parameter("weight", None)
    norm.register_parameter("weight", nn.Parameter(torch.full((3,), 2.0, dtype=F64)))
    assert torch.equal(to_torch(norm).weight.detach(), norm.weight.data)  # type: ignore[union-attr]
    for register in (
        lambda layer: layer.register_buffer("bias", torch.ones(3, dtype=F64)),
        lambda layer: layer.register_module("bias", nn.Linear(3, 3, dtype=F64)),
    ):
        layer = nn.Linear(2, 3, bias=False, dtype=F64)
        with pytest.raises(KeyError, match=r"'bias' is already an attribute of Linear"):
            register(layer)
        assert layer.bias is None and sorted(layer.state_dict()) == ["weight"]
        assert sorted(to_torch(layer).state_dict()) == ["weight"]


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: nn.Linear(2, 2, dtype=F64), "_accumulate_bias"),
        (lambda: nn.Linear(2, 2, dtype=F64), "_apply"),
        (nn.GELU, "_output_and_derivative"),
        (lambda: nn.BatchNorm1d(2, dtype=F64), "_update"),
    ],
)
def test_a_method_that_the_computation_calls_set_on_the_instance_is_refused(
    build: object, name: str
) -> None:
    """A method that forward or backward calls (not only forward, backward and an activation's
    formulas) set on the instance: to_torch converted the layer, whose torch twin then
    computed other numbers (a Linear's _apply replaced: outputs apart by 1.9)."""
    layer = build()  # type: ignore[operator]

    def replaced(*args: object, **kwargs: object) -> None:
        return None

    setattr(layer, name, replaced)
    kind = type(layer)
    with pytest.raises(ConversionError) as info:
        to_torch(layer)
    assert str(info.value) == (
        f"to_torch: cannot convert the model itself, of type {kind.__module__}."
        f"{kind.__qualname__} (its {name} is set on the instance ({replaced.__qualname__!r}), "
        "which the "
        f"torch.nn layer would not run: it would compute what {kind.__name__} computes; remove "
        f"it (del layer.{name}) first)"
    )
    delattr(layer, name)
    to_torch(layer)


@pytest.mark.parametrize(
    ("register", "what"),
    [
        (
            torch.nn.modules.module.register_module_forward_hook,
            "forward hook (register_module_forward_hook)",
        ),
        (
            torch.nn.modules.module.register_module_forward_pre_hook,
            "forward pre-hook (register_module_forward_pre_hook)",
        ),
        (
            torch.nn.modules.module.register_module_full_backward_pre_hook,
            "backward pre-hook (register_module_full_backward_pre_hook)",
        ),
        (
            torch.nn.modules.module.register_module_full_backward_hook,
            "backward hook (register_module_full_backward_hook)",
        ),
    ],
)
def test_a_global_hook_of_torch_nn_is_refused(register: object, what: str) -> None:
    """A hook that every torch.nn module runs (registered for all of them): from_torch
    converted the model, which then computed without it (apart by 4.6); a backward hook may
    change the gradients torch computes, which the converted model would not. The model
    converts once the hook is removed."""

    def doubled(*args: object) -> None:
        return None

    handle = register(doubled)  # type: ignore[operator]
    try:
        with pytest.raises(ConversionError) as info:
            from_torch(torch.nn.Linear(2, 2))
    finally:
        handle.remove()
    assert str(info.value) == (
        f"from_torch: torch.nn has a global {what}, {doubled.__qualname__}, which every "
        "torch.nn module runs and minidl cannot carry, and which may change what the model "
        "computes; remove it (the handle that registered it has remove()) first"
    )
    assert isinstance(from_torch(torch.nn.Linear(2, 2)), nn.Linear)


def test_a_minidl_module_given_to_from_torch_is_named_as_minidl_s() -> None:
    """from_torch(a minidl model) said only "got Sequential", as if of torch.nn."""
    with pytest.raises(TypeError) as info:
        from_torch(nn.Sequential(nn.Tanh()))  # type: ignore[arg-type]
    assert str(info.value) == (
        "from_torch: expected a torch.nn.Module, got minidl's Sequential, which is minidl's "
        "already (to_torch converts one into torch.nn)"
    )


def test_a_type_not_converted_is_refused_for_its_type_before_its_hooks_or_tensors() -> None:
    """A layer that neither direction converts was refused for its hooks, its lazy sizes, its
    parametrization or its tensors' dtypes first, with a way out ("remove it first") after
    which it was refused again for its type. Its type is named first now, with what is
    supported; a lazy or parametrized layer of a type converted keeps the refusal that says
    what to do."""
    conv = torch.nn.Conv1d(2, 2, 3)
    conv.register_forward_hook(lambda *args: None)
    weight_normed = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(2, 2, 3))
    for model, kind in (
        (torch.nn.Sequential(torch.nn.Linear(2, 2), conv), "torch.nn.modules.conv.Conv1d"),
        (
            torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LazyConv1d(4, 3)),
            "torch.nn.modules.conv.LazyConv1d",
        ),
        (weight_normed, "torch.nn.utils.parametrize.ParametrizedConv1d"),
    ):
        with pytest.raises(ConversionError, match=rf" of type {re.escape(kind)}; supported: "):
            from_torch(model)
    with pytest.raises(ConversionError, match=r"LazyLinear \(a lazy module whose sizes"):
        from_torch(torch.nn.LazyLinear(3))
    linear_normed = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(2, 2))
    with pytest.raises(ConversionError, match=r"ParametrizedLinear \(a parametrized layer"):
        from_torch(linear_normed)

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_parameter("a", nn.Parameter(torch.zeros(2)))
            self.register_parameter("b", nn.Parameter(torch.zeros(2, dtype=F64)))

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return input

    with pytest.raises(
        ConversionError,
        match=r"^to_torch: cannot convert the layer at '1' of type .*Mixed; supported: ",
    ):
        to_torch(nn.Sequential(nn.Linear(2, 2), Mixed()))


@pytest.mark.parametrize("deleted", ["block", "weight", "running_mean"])
def test_a_layer_whose_attribute_was_deleted_is_refused_as_such(deleted: str) -> None:
    """``del residual.block`` left the block registered and the Residual unable to run (a raw
    "'Residual' object has no attribute 'block'"); to_torch converted it all the same (its
    check skipped a missing child's attribute, as a Sequential's children have none). A
    deleted parameter or buffer was refused as "assigned by hand". Each is refused as deleted
    now, saying how to set it again, and the Residual's forward names what happened; set
    again, both run."""
    linear = nn.Linear(3, 3, dtype=F64)
    layer: nn.Module = {
        "block": nn.Residual(linear),
        "weight": linear,
        "running_mean": nn.BatchNorm1d(3, dtype=F64),
    }[deleted]
    registered = {"block": "module", "weight": "parameter", "running_mean": "buffer"}[deleted]
    getter = {"block": "get_submodule", "weight": "get_parameter"}.get(deleted, "get_buffer")
    delattr(layer, deleted)
    with pytest.raises(ConversionError) as info:
        to_torch(nn.Sequential(layer))
    assert (
        f"(its attribute {deleted!r} was deleted, where its {registered} {deleted!r} is still "
        f"registered (the layer cannot compute without the attribute; "
    ) in str(info.value)
    assert str(info.value).endswith(f"set it again: layer.{deleted} = layer.{getter}('{deleted}'))")
    if deleted == "block":
        with pytest.raises(AttributeError, match=r"^Residual: its attribute 'block' was deleted"):
            layer(torch.randn(2, 3, dtype=F64))
    setattr(layer, deleted, getattr(layer, getter)(deleted))
    torch.testing.assert_close(
        to_torch(layer)(x := torch.randn(2, 3, dtype=F64)), layer(x), rtol=0, atol=1e-12
    )
