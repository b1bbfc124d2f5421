"""minidl.interop, what mutation testing found untested: refusals that a changed check let
through (a count of batches that is complex or on another device, a truthy ``inplace`` at a
residual block's input; the global backward hooks of torch.nn are in test_interop_audit's
test of the global hooks), and refusals that must name the
right layer and its way out (a StackedActivation, a None child before an in-place layer, a
Residual's block taken out of its registry). Each test fails on a mutant of the source that
the rest of the suite let pass."""

from __future__ import annotations

import pytest
import torch

from minidl import nn
from minidl.interop import ConversionError, TorchResidual, from_torch, to_torch

F64 = torch.float64


def test_from_torch_refuses_a_complex_count_of_batches() -> None:
    """A batch norm's ``num_batches_tracked`` must hold integers: a complex count would be cast
    (its imaginary part dropped) into minidl's integer buffer without a word."""
    layer = torch.nn.BatchNorm1d(3, dtype=F64)
    layer.num_batches_tracked = torch.tensor(2 + 1j)
    with pytest.raises(ConversionError) as info:
        from_torch(torch.nn.Sequential(torch.nn.Tanh(), layer))
    assert str(info.value) == (
        "from_torch: cannot convert the layer at '1' of type "
        "torch.nn.modules.batchnorm.BatchNorm1d (its num_batches_tracked has dtype "
        "torch.complex64; expected integers)"
    )


def test_to_torch_refuses_a_stacked_activation_with_the_way_out() -> None:
    """A ``StackedActivation`` (the activations of a stack of models) has no torch.nn
    counterpart: the refusal says to convert each model of the stack, as for a
    ``BatchedLinear``."""
    stack = nn.Sequential(nn.Tanh(), nn.StackedActivation([(nn.ReLU(), 2), (nn.Tanh(), 1)]))
    with pytest.raises(ConversionError) as info:
        to_torch(stack)
    assert str(info.value).startswith(
        "to_torch: cannot convert the layer at '1' of type "
        "minidl.nn.stacked_activation.StackedActivation (a stack of models: convert each, from "
        "minidl.nn.unstack_model(stack, index)); supported: Sequential, Linear,"
    )


def test_a_none_child_before_an_in_place_layer_in_a_residual_block_is_named() -> None:
    """In a TorchResidual's block, a child set to None comes first: it is what torch's forward
    fails on, so it is the one named (the in-place layer after it gets no input of the
    block's)."""
    block = torch.nn.Sequential()
    block.add_module("0", None)
    block.add_module("1", torch.nn.ReLU(inplace=True))
    with pytest.raises(ConversionError) as info:
        from_torch(TorchResidual(block))
    assert str(info.value) == (
        "from_torch: cannot convert the layer at 'block.0', which is None (a child set to None, "
        "which torch's forward cannot call either); remove it or put a layer there"
    )


def test_a_truthy_inplace_at_a_residual_blocks_input_is_refused() -> None:
    """torch.nn's activations test ``inplace`` for truth: ``ReLU(inplace=1)`` changes the input
    that the skip connection adds (torch computes ``2 relu(x)``), so it is refused as
    ``inplace=True`` is."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=F64)
    residual = TorchResidual(torch.nn.ReLU(inplace=1))  # type: ignore[arg-type]
    assert torch.equal(residual(x.clone()), 2 * x.relu())
    with pytest.raises(
        ConversionError,
        match=r"^from_torch: cannot convert the layer at 'block' "
        r"of type torch\.nn\.modules\.activation\.ReLU \(inplace=True at the input",
    ):
        from_torch(residual)


def test_from_torch_refuses_a_count_of_batches_on_another_device() -> None:
    """The count of batches is one of a batch norm's tensors too: on another device than the
    running statistics (the meta device here) it is refused with them named, not met by
    torch's error copying out of it, the layer unnamed."""
    norm = torch.nn.BatchNorm1d(2, affine=False, dtype=F64)
    norm.num_batches_tracked = torch.tensor(3, device="meta")
    with pytest.raises(ConversionError) as info:
        from_torch(torch.nn.Sequential(torch.nn.Tanh(), norm))
    assert str(info.value) == (
        "from_torch: cannot convert the layer at '1' of type "
        "torch.nn.modules.batchnorm.BatchNorm1d (its tensors have different devices: "
        "running_mean cpu, running_var cpu, num_batches_tracked meta; expected one)"
    )


def test_to_torch_refuses_a_residual_whose_block_is_no_longer_registered() -> None:
    """A Residual whose block was taken out of its registry (``_modules``) has nothing to
    convert: refused as such, naming the Residual, not as a layer of type ``NoneType`` at
    ``'1.block'``."""
    residual = nn.Residual(nn.Tanh())
    del residual._modules["block"]
    with pytest.raises(ConversionError) as info:
        to_torch(nn.Sequential(nn.Tanh(), residual))
    assert str(info.value) == (
        "to_torch: cannot convert the layer at '1' of type minidl.nn.residual.Residual "
        "(its block was removed)"
    )


def test_torch_residual_refuses_an_output_of_another_shape_with_as_many_values() -> None:
    """A block that returns the input's values in another shape (``(3,)`` for a ``(1, 3)``
    input) is refused as minidl's Residual refuses it: the sum would broadcast to ``(1, 3)``
    and hide the change of shape, though the number of values is the same."""
    x = torch.arange(3, dtype=F64).reshape(1, 3)
    residual = TorchResidual(torch.nn.Flatten(0, -1))
    with pytest.raises(ValueError) as info:
        residual(x)
    assert str(info.value) == (
        "TorchResidual: the block's output has shape (3,), expected the input's shape (1, 3) "
        "(as minidl's Residual: the sum would broadcast it)"
    )


@pytest.mark.parametrize(
    ("layer", "fragment"),
    [
        (
            torch.nn.LeakyReLU("a"),  # type: ignore[arg-type]
            "LeakyReLU: negative_slope must be a finite number (a float or an int), got str 'a'",
        ),
        (
            torch.nn.ELU("a"),  # type: ignore[arg-type]
            "ELU: alpha must be a finite number (a float or an int), got str 'a'",
        ),
    ],
    ids=["leakyrelu", "elu"],
)
def test_a_setting_minidl_refuses_with_a_type_error_is_named_with_its_path(
    layer: torch.nn.Module, fragment: str
) -> None:
    """A torch.nn layer whose setting minidl's constructor refuses with a ``TypeError`` (a slope
    that is a string) is a ConversionError naming its path and type, as for a ``ValueError``:
    not the constructor's bare error, which names neither (ConversionError being a TypeError,
    its type alone would not tell)."""
    kind = type(layer)
    with pytest.raises(ConversionError) as info:
        from_torch(torch.nn.Sequential(torch.nn.Tanh(), layer))
    assert str(info.value) == (
        f"from_torch: cannot convert the layer at '1' of type {kind.__module__}."
        f"{kind.__qualname__} ({fragment})"
    )
    assert type(info.value.__cause__) is TypeError


def test_an_in_place_layer_after_a_computing_sequential_in_a_residual_block_converts() -> None:
    """In a TorchResidual's block, a ``ReLU(inplace=True)`` after a nested ``Sequential`` that
    computes (a Linear in it) changes that Sequential's output, not the block's input: the
    skip connection adds ``x`` unchanged, so the model converts and computes
    ``x + relu(linear(x))`` as torch does. (Only a nested Sequential of layers that may return
    their input, Identity or Dropout, passes the input on to it.)"""
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=F64)
    linear = torch.nn.Linear(3, 3, dtype=F64)
    block = torch.nn.Sequential(torch.nn.Sequential(linear), torch.nn.ReLU(inplace=True))
    residual = TorchResidual(block)
    expected = residual(x.clone()).detach()
    torch.testing.assert_close(expected, x + linear(x).relu().detach(), rtol=0, atol=0)
    converted = from_torch(residual)
    torch.testing.assert_close(converted(x), expected, rtol=0, atol=0)


def test_an_integer_tensor_registered_by_hand_is_refused_as_one_the_other_side_has_not() -> None:
    """An integer buffer registered by hand (a step counter) next to a layer's floating-point
    weight: the refusal says that the counterpart has no such buffer (its way out: remove it),
    both ways. The dtypes compared are the floating-point ones only (a batch norm's integer
    count of batches is no mix of dtypes), so it must not be refused as tensors of different
    dtypes, which would ask to cast a counter into floating point."""
    layer = torch.nn.Linear(3, 2, dtype=F64)
    layer.register_buffer("steps", torch.tensor(7))
    with pytest.raises(ConversionError) as info:
        from_torch(torch.nn.Sequential(torch.nn.Tanh(), layer))
    assert str(info.value) == (
        "from_torch: cannot convert the layer at '1' of type torch.nn.modules.linear.Linear "
        "(parameters or buffers that minidl's Linear has not: ['steps'])"
    )
    assert int(layer.get_buffer("steps")) == 7 and layer.weight.dtype is F64

    linear = nn.Linear(3, 2, dtype=F64)
    linear.register_buffer("steps", torch.tensor(7))
    with pytest.raises(ConversionError) as info:
        to_torch(nn.Sequential(nn.Tanh(), linear))
    assert str(info.value) == (
        "to_torch: cannot convert the layer at '1' of type minidl.nn.linear.Linear "
        "(parameters or buffers that torch.nn's Linear has not: ['steps'])"
    )


@pytest.mark.parametrize("hook", ["gradient", "post-accumulate-grad"])
def test_a_gradient_hook_on_a_parameter_inside_a_model_names_its_layer(hook: str) -> None:
    """A hook on the weight of a Linear inside a Sequential is refused at that Linear (path
    ``'1'``, its parameter ``'weight'``), where the user removes it; not at the Sequential,
    which has no parameter of its own. Once removed, the model converts with the values."""
    layer = torch.nn.Linear(3, 2, dtype=F64)
    if hook == "gradient":
        handle = layer.weight.register_hook(lambda g: g * 0)  # type: ignore[no-untyped-call]
        what = "gradient hook (register_hook)"
    else:
        handle = layer.weight.register_post_accumulate_grad_hook(lambda p: None)  # type: ignore[no-untyped-call]
        what = "post-accumulate-grad hook (register_post_accumulate_grad_hook)"
    model = torch.nn.Sequential(torch.nn.Tanh(), layer)
    with pytest.raises(ConversionError) as info:
        from_torch(model)
    assert str(info.value) == (
        "from_torch: cannot convert the layer at '1' of type torch.nn.modules.linear.Linear "
        f"(its parameter 'weight' has a {what}, which minidl cannot carry and which may change "
        "its gradient; remove it (the handle that registered it has remove()) first)"
    )
    handle.remove()
    converted = from_torch(model)
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(converted(x), model(x).detach(), rtol=0, atol=0)


def test_an_in_place_layer_alone_in_a_residual_blocks_sequential_is_refused() -> None:
    """``TorchResidual(Sequential(ReLU(inplace=True)))``: a block that is a Sequential of one
    in-place layer changes the input that the skip connection adds, as the bare layer does
    (torch computes ``relu(x) + relu(x)``, minidl's Residual would compute ``x + relu(x)``).
    Refused, naming the layer inside the Sequential; with ``inplace`` set to False it converts
    and computes as torch's."""
    relu = torch.nn.ReLU(inplace=True)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 3, dtype=F64), TorchResidual(torch.nn.Sequential(relu))
    )
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    hidden = model[0](x).detach()
    assert torch.equal(model(x).detach(), 2 * hidden.relu())  # not hidden + relu(hidden)
    with pytest.raises(ConversionError) as info:
        from_torch(model)
    assert str(info.value) == (
        "from_torch: cannot convert the layer at '1.block.0' of type "
        "torch.nn.modules.activation.ReLU (inplace=True at the input of the block of the "
        "TorchResidual at '1': it changes the input that the skip connection adds, so that "
        "torch.nn computes changed(x) + block(x), where minidl's layers never change their "
        "input (x + block(x)); set its inplace to False)"
    )
    relu.inplace = False
    converted = from_torch(model)
    torch.testing.assert_close(converted(x), hidden + hidden.relu(), rtol=0, atol=0)


# -- a review against PyTorch (2026-12-07) --------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8, torch.int64])
def test_a_count_of_batches_keeps_its_dtype_both_ways(dtype: torch.dtype) -> None:
    """The module's docstring: both conversions keep dtypes. A BatchNorm1d's count of another
    integer dtype than int64 became int64 in to_torch's layer and in from_torch's (copied into
    the new layer's own count); now it is the same dtype, value and device on both sides, its
    own tensor (not the other's), and the two layers count on alike (momentum=None)."""
    torch.manual_seed(0)
    layer = nn.BatchNorm1d(3, momentum=None, dtype=torch.float64)
    count = torch.tensor(7, dtype=dtype)
    layer.register_buffer("num_batches_tracked", count)
    twin = to_torch(layer)
    assert twin.num_batches_tracked.dtype is dtype
    assert int(twin.num_batches_tracked) == 7
    assert twin.num_batches_tracked.data_ptr() != count.data_ptr()
    back = from_torch(twin)
    assert back.num_batches_tracked.dtype is dtype and int(back.num_batches_tracked) == 7
    assert back.num_batches_tracked.data_ptr() != twin.num_batches_tracked.data_ptr()
    for shift in range(3):
        x = torch.randn(4, 3, dtype=torch.float64) + shift
        layer(x)
        twin(x)
    assert layer.num_batches_tracked.dtype is twin.num_batches_tracked.dtype is dtype
    assert int(layer.num_batches_tracked) == int(twin.num_batches_tracked) == 10
    torch.testing.assert_close(layer.running_mean, twin.running_mean, rtol=1e-14, atol=0.0)
    torch.testing.assert_close(layer.running_var, twin.running_var, rtol=1e-14, atol=0.0)


def test_a_count_of_a_dtype_minidl_does_not_count_in_is_copied_into_int64() -> None:
    """A torch count of uint16 (which torch's add_ has no kernel for, and minidl's BatchNorm1d
    refuses) is copied into the converted layer's int64 count, as before; one of another shape
    is refused, naming the layer."""
    twin = torch.nn.BatchNorm1d(2)
    twin.num_batches_tracked = torch.tensor(5, dtype=torch.uint16)
    layer = from_torch(twin)
    assert layer.num_batches_tracked.dtype is torch.int64 and int(layer.num_batches_tracked) == 5
    twin.num_batches_tracked = torch.tensor([5, 6], dtype=torch.int32)
    with pytest.raises(ConversionError, match=r"num_batches_tracked has shape \(2,\)"):
        from_torch(twin)


def test_from_torch_given_a_class_says_to_build_an_instance() -> None:
    """``from_torch(torch.nn.Linear)`` said "got type"; now it names the class and the fix."""
    with pytest.raises(TypeError) as info:
        from_torch(torch.nn.Linear)  # type: ignore[arg-type]
    assert str(info.value) == (
        "from_torch: expected a torch.nn.Module, got the class torch.nn.modules.linear.Linear; "
        "pass an instance, built with its arguments"
    )


# -- a third pass of mutation testing over interop.py (2026-12-07) -------------------------------


def test_from_torch_refuses_a_boolean_count_of_batches() -> None:
    """(m14) A bool ``num_batches_tracked`` is not a count: it must be refused, not cast to 1."""
    layer = torch.nn.BatchNorm1d(3, dtype=F64)
    layer.num_batches_tracked = torch.tensor(True)
    before = layer.num_batches_tracked.clone()
    with pytest.raises(ConversionError) as info:
        from_torch(torch.nn.Sequential(torch.nn.Tanh(), layer))
    assert str(info.value) == (
        "from_torch: cannot convert the layer at '1' of type "
        "torch.nn.modules.batchnorm.BatchNorm1d (its num_batches_tracked has dtype "
        "torch.bool; expected integers)"
    )
    assert torch.equal(layer.num_batches_tracked, before)
    assert layer.num_batches_tracked.dtype is torch.bool


def test_from_torch_refuses_a_buffer_registered_by_hand_with_an_underscore_name() -> None:
    """(m20) Every tensor the counterpart has not is refused, whatever its name: a private
    ``_extra`` buffer would be dropped without a word."""
    layer = torch.nn.Linear(2, 3, dtype=F64)
    layer.register_buffer("_extra", torch.zeros(3, dtype=F64))
    with pytest.raises(ConversionError) as info:
        from_torch(torch.nn.Sequential(layer))
    assert str(info.value) == (
        "from_torch: cannot convert the layer at '0' of type torch.nn.modules.linear.Linear "
        "(parameters or buffers that minidl's Linear has not: ['_extra'])"
    )


def test_to_torch_refuses_a_model_not_initialised_as_a_module() -> None:
    """(m22) A model whose __init__ never ran is refused by to_torch, naming it, before any
    traversal fails on a missing registry."""
    model = nn.ReLU.__new__(nn.ReLU)
    with pytest.raises(
        AttributeError,
        match=r"^to_torch: the model, a ReLU, was not initialised as a Module: "
        r"ReLU\.__init__ must call super\(\)\.__init__\(\) first$",
    ):
        to_torch(model)


def test_to_torch_inside_inference_mode_gives_a_trainable_torch_model() -> None:
    """(m24) Called inside torch.inference_mode(), to_torch still builds normal tensors: the
    torch model trains outside it, its gradients those of autograd on an independent copy."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, dtype=F64), nn.Tanh(), nn.Linear(4, 2, dtype=F64))
    with torch.inference_mode():
        twin = to_torch(model)
    for p in twin.parameters():
        assert not p.is_inference()
        assert p.requires_grad
    for b in twin.buffers():
        assert not b.is_inference()
    x = torch.randn(5, 3, dtype=F64)
    out = twin(x)
    out.sum().backward()
    # oracle: a plain torch model built from the same values outside inference mode
    ref = torch.nn.Sequential(
        torch.nn.Linear(3, 4, dtype=F64), torch.nn.Tanh(), torch.nn.Linear(4, 2, dtype=F64)
    )
    ref.load_state_dict(twin.state_dict())
    ref(x).sum().backward()
    for (name, p), q in zip(twin.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-12, msg=name)


def test_a_parameter_tied_at_three_places_stays_tied_both_ways() -> None:
    """(m49, killed before only by the hypothesis fuzz test) One Parameter at three places
    converts to one Parameter at the same three places, in both directions."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(2, 2, dtype=F64) for _ in range(3)]
    for layer in layers[1:]:
        layer.weight = layers[0].weight
    model = torch.nn.Sequential(layers[0], torch.nn.Tanh(), layers[1], torch.nn.Tanh(), layers[2])
    back = from_torch(model)
    assert back[0].weight is back[2].weight is back[4].weight
    assert torch.equal(back[0].weight.data, layers[0].weight.detach())
    twin = to_torch(back)
    assert twin[0].weight is twin[2].weight is twin[4].weight
    assert len(list(twin.parameters())) == len(list(model.parameters())) == 4
    x = torch.randn(4, 2, dtype=F64)
    torch.testing.assert_close(twin(x), model(x), rtol=0, atol=0)
