"""Interop with torch.nn (minidl.interop): what a fourth mutation audit found untested (integer
running variances and weights, each running statistic set to None, spectral norm's remover, a
forward set on the instance whatever its name), and two bugs it found (fixed): a forward bound
to another layer was taken for the class's own, and buffers over one memory were copied apart."""

from __future__ import annotations

import pytest
import torch

from minidl import nn
from minidl.interop import ConversionError, from_torch, to_torch

F64 = torch.float64


def test_running_statistics_over_one_memory_as_two_tensors_are_refused() -> None:
    """Two batch norms whose running means are two tensor objects over one memory
    (``second.running_mean = first.running_mean.view(3)``): torch updates the one memory from
    both layers, and the conversion would copy each into a buffer of its own, so it is refused
    as two Parameters over one memory are, naming both, and torch's model is left as it was.
    (Fixed: copied apart without a word, the statistics parted at the first training forward.)
    One tensor at both places still converts, tied."""
    first = torch.nn.BatchNorm1d(3, dtype=F64)
    second = torch.nn.BatchNorm1d(3, dtype=F64)
    second.running_mean = first.running_mean.view(3)
    model = torch.nn.Sequential(first, torch.nn.Linear(3, 3, dtype=F64), second)
    with pytest.raises(
        ConversionError,
        match=r"^from_torch: the buffer '0\.running_mean' and the buffer '2\.running_mean' are "
        r"two tensors over one memory, which a conversion would copy apart",
    ):
        from_torch(model)
    assert second.running_mean.data_ptr() == first.running_mean.data_ptr()
    second.running_mean = first.running_mean
    converted = from_torch(model)
    assert converted[2].running_mean is converted[0].running_mean


def test_to_torch_running_statistics_over_one_memory_are_refused() -> None:
    """The same in minidl (``register_buffer`` of a view of another batch norm's running
    variance): refused by ``to_torch``, naming both. (Fixed: each torch layer got a copy of its
    own, which parted at the first training forward where minidl's layers update one
    memory.)"""
    first = nn.BatchNorm1d(3, dtype=F64)
    second = nn.BatchNorm1d(3, dtype=F64)
    second.register_buffer("running_var", first.running_var[:])
    with pytest.raises(
        ConversionError,
        match=r"^to_torch: the buffer '0\.running_var' and the buffer '2\.running_var' are two "
        r"tensors over one memory, which a conversion would copy apart",
    ):
        to_torch(nn.Sequential(first, nn.Linear(3, 3, dtype=F64), second))


def test_a_spectral_norm_hook_is_refused_with_its_own_remover() -> None:
    """``torch.nn.utils.spectral_norm`` registers a forward pre-hook (``SpectralNorm``) that
    computes the weight: its way out is ``remove_spectral_norm``, which keeps the values it
    computes, not a handle's ``remove()`` nor ``remove_weight_norm``."""
    layer = torch.nn.utils.spectral_norm(torch.nn.Linear(2, 3, dtype=F64))
    with pytest.raises(ConversionError) as info:
        from_torch(torch.nn.Sequential(torch.nn.Tanh(), layer))
    assert str(info.value) == (
        "from_torch: cannot convert the layer at '1' of type torch.nn.modules.linear.Linear "
        "(it has a forward pre-hook, SpectralNorm, which minidl cannot carry and which may "
        "change what it computes; remove it (torch.nn.utils.remove_spectral_norm(layer)) first)"
    )


def test_an_integer_running_variance_is_refused_both_ways() -> None:
    """A running variance must be floating point, as the running mean: an integer one
    (assigned by hand) would be cast by the copy without a word (and torch's forward fails on
    it), so it is refused, naming it, and the model is left as it was."""
    layer = torch.nn.BatchNorm1d(3, dtype=F64)
    layer.running_var = torch.tensor([1, 2, 3])
    with pytest.raises(ConversionError) as info:
        from_torch(torch.nn.Sequential(torch.nn.Tanh(), layer))
    assert str(info.value) == (
        "from_torch: cannot convert the layer at '1' of type "
        "torch.nn.modules.batchnorm.BatchNorm1d (its running_var has dtype torch.int64; "
        "expected a floating-point dtype)"
    )
    assert layer.running_var.dtype is torch.int64
    assert torch.equal(layer.running_var, torch.tensor([1, 2, 3]))
    norm = nn.BatchNorm1d(3, dtype=F64)
    norm.register_buffer("running_var", torch.tensor([1, 2, 3]))
    with pytest.raises(ConversionError) as info:
        to_torch(nn.Sequential(nn.Tanh(), norm))
    assert str(info.value) == (
        "to_torch: cannot convert the layer at '1' of type minidl.nn.batch_norm.BatchNorm1d "
        "(its running_var has dtype torch.int64; expected a floating-point dtype)"
    )
    assert norm.running_var.dtype is torch.int64
    assert torch.equal(norm.running_var, torch.tensor([1, 2, 3]))


def test_an_integer_weight_is_refused_naming_it() -> None:
    """A weight must be floating point (as the bias, see test_interop_gaps): an integer one
    (a frozen ``Parameter`` assigned by hand) is refused, naming it and its dtype, before a
    minidl layer is built in that dtype."""
    layer = torch.nn.Linear(2, 3, dtype=F64)
    layer.weight = torch.nn.Parameter(torch.ones(3, 2, dtype=torch.int64), requires_grad=False)
    with pytest.raises(ConversionError) as info:
        from_torch(torch.nn.Sequential(torch.nn.Tanh(), layer))
    assert str(info.value) == (
        "from_torch: cannot convert the layer at '1' of type torch.nn.modules.linear.Linear "
        "(its weight has dtype torch.int64; expected a floating-point dtype)"
    )
    norm = torch.nn.BatchNorm1d(3, dtype=F64)
    norm.weight = torch.nn.Parameter(torch.ones(3, dtype=torch.int64), requires_grad=False)
    with pytest.raises(ConversionError) as info:
        from_torch(norm)
    assert str(info.value) == (
        "from_torch: cannot convert the model itself, of type "
        "torch.nn.modules.batchnorm.BatchNorm1d (its weight has dtype torch.int64; expected a "
        "floating-point dtype)"
    )


@pytest.mark.parametrize("name", ["running_mean", "running_var", "num_batches_tracked"])
def test_each_running_statistic_set_to_none_is_refused_naming_it(name: str) -> None:
    """A batch norm that tracks running statistics, one of them set to ``None`` by hand
    (torch's forward then fails or stops tracking): refused naming that one, each of the
    three, not an ``AssertionError`` or ``AttributeError`` from the conversion."""
    layer = torch.nn.BatchNorm1d(3, dtype=F64)
    setattr(layer, name, None)
    with pytest.raises(ConversionError) as info:
        from_torch(torch.nn.Sequential(torch.nn.Tanh(), layer))
    assert str(info.value) == (
        "from_torch: cannot convert the layer at '1' of type "
        f"torch.nn.modules.batchnorm.BatchNorm1d (its {name} is set to None)"
    )


def test_a_forward_set_on_the_instance_is_refused_whatever_its_name() -> None:
    """A ``forward`` set on a layer's instance is refused even where the function set is
    itself named ``forward``: what tells it from the class's own method is the function, not
    its name."""
    layer = nn.Linear(2, 3, dtype=F64)

    def forward(input: torch.Tensor) -> torch.Tensor:
        return 2 * nn.Linear.forward(layer, input)

    layer.forward = forward
    with pytest.raises(ConversionError) as info:
        to_torch(nn.Sequential(nn.Tanh(), layer))
    assert str(info.value) == (
        "to_torch: cannot convert the layer at '1' of type minidl.nn.linear.Linear (its forward "
        "is set on the instance ('test_a_forward_set_on_the_instance_is_refused_whatever_its_name"
        ".<locals>.forward'), which the torch.nn layer would not run: it would compute what "
        "Linear computes; remove it (del layer.forward) first)"
    )
    del layer.forward
    assert isinstance(to_torch(nn.Sequential(nn.Tanh(), layer))[1], torch.nn.Linear)


def test_a_forward_of_another_layer_set_on_the_instance_is_refused() -> None:
    """``layer.forward = other.forward``, the bound method of another ``Linear``, is refused
    as any other forward set on the instance. (Fixed: its function is ``Linear.forward``, so it
    was taken for the class's own, and the minidl layer computed with ``other``'s weight where
    the torch layer got ``layer``'s.)"""
    layer = nn.Linear(2, 3, dtype=F64)
    other = nn.Linear(2, 3, dtype=F64)
    layer.forward = other.forward  # type: ignore[method-assign]
    with pytest.raises(
        ConversionError,
        match=r"^to_torch: cannot convert the model itself, of type minidl\.nn\.linear\.Linear "
        r"\(its forward is set on the instance \('Linear\.forward' of another Linear\)",
    ):
        to_torch(layer)
