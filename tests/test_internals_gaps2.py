"""Mutation review of minidl._setting, minidl._interrupts, minidl.nn.parameter and
minidl.nn.flat, then of minidl._frozen, _extras and _scalar: tests that kill the hand-made bugs the suite let through (each checks a value,
an exception's type and message, or state left as it was, against an exact oracle)."""

from __future__ import annotations

import _thread
import copy
import errno
import importlib
import os
import pickle
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from minidl import _files, nn
from minidl.nn.flat import flat_buffer, flatten_parameters

_NUMBERS = (signal.SIGINT, signal.SIGTERM)


@pytest.fixture(autouse=True)
def _signals_as_before() -> Iterator[None]:
    """The handlers and the mask as they were before each test, whatever it did."""
    before = {number: signal.getsignal(number) for number in _NUMBERS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    for number, handler in before.items():
        signal.signal(number, handler)


# -- minidl._setting --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (8, "tensor([0., 0., 0., 0., 0., 0., 0., 0.])"),
        (9, "a tensor of shape (9,) and dtype torch.float32"),
    ],
)
def test_a_dropped_tensor_is_named_whole_up_to_8_elements_then_by_its_shape(
    size: int, shown: str
) -> None:
    """A plain ``inplace`` pickled as a tensor (which the check refuses), dropped as the
    module is copied: the warning writes a tensor of 8 elements whole (its repr on one
    line), one of 9 by its shape and dtype."""
    import copy

    relu = nn.ReLU()
    relu.__dict__["inplace"] = torch.zeros(size)  # (a plain attribute, as an earlier version)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        copied = copy.deepcopy(relu)
    assert [str(w.message) for w in caught] == [
        f"ReLU: inplace={shown}, pickled by an earlier minidl version that ignored it, is "
        "dropped (setting it now raises): the ReLU computes as it did, as with inplace=False"
    ]
    assert copied.inplace is False


# -- minidl.nn.parameter ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int64, torch.float8_e4m3fn], ids=["int64", "float8"])
def test_a_parameter_refuses_data_of_a_dtype_minidl_does_not_compute_in(dtype: torch.dtype) -> None:
    """Data of int64 (no floating point) or float8 (no optimizer steps it) is refused with a
    TypeError naming the parameter, the dtypes taken and the one given; a parameter given it
    as new data keeps its data and grad."""
    taken = (
        r"torch\.float16, torch\.bfloat16, torch\.float32 or torch\.float64 \(the dtypes minidl "
        r"computes in\)"
    )
    with pytest.raises(
        TypeError, match=rf"^Parameter 'w': data must be a tensor of {taken}, got {dtype}$"
    ):
        nn.Parameter(torch.zeros(3).to(dtype), name="w")
    parameter = nn.Parameter(torch.ones(3))
    data, grad = parameter.data, parameter.grad
    with pytest.raises(TypeError, match=rf"^Parameter: data must be a tensor of {taken}, got "):
        parameter.data = torch.zeros(3).to(dtype)
    assert parameter.data is data and parameter.grad is grad


def test_a_parameter_refuses_a_grad_of_another_dtype_and_keeps_its_grad() -> None:
    """A float64 grad for float32 data is refused with a TypeError naming both dtypes (not
    taken, to be cast at every accumulation, or fail in an optimizer's step); the grad kept is
    the one before."""
    parameter = nn.Parameter(torch.ones(3), name="w")
    grad = parameter.grad
    with pytest.raises(
        TypeError,
        match=r"^Parameter 'w': grad must have the dtype of data \(torch\.float32\), got "
        r"torch\.float64$",
    ):
        parameter.grad = torch.zeros(3, dtype=torch.float64)
    assert parameter.grad is grad


def test_a_parameter_refuses_a_grad_of_another_shape_on_its_device() -> None:
    """A grad of shape (2,) for data of shape (3,), on the same device, is refused with a
    ValueError naming both shapes and devices; the grad kept is the one before."""
    parameter = nn.Parameter(torch.ones(3), name="w")
    grad = parameter.grad
    with pytest.raises(
        ValueError,
        match=r"^Parameter 'w': grad must have the shape and device of data \(\(3,\) on cpu\), "
        r"got \(2,\) on cpu$",
    ):
        parameter.grad = torch.zeros(2)
    assert parameter.grad is grad


def test_a_parameter_takes_data_whose_one_element_dimension_has_stride_0() -> None:
    """A dimension of size 1 with stride 0 (as ``as_strided`` or ``expand`` of a size-1
    dimension makes) puts no two elements at one location: the data is taken as it is, and
    an optimizer's in-place update writes each element once."""
    data = torch.arange(3.0).as_strided((1, 3), (0, 1))
    parameter = nn.Parameter(data)
    assert parameter.data.stride() == (0, 1)
    parameter.data.add_(1.0)
    assert parameter.data.tolist() == [[1.0, 2.0, 3.0]]


def test_a_parameter_takes_data_and_grad_side_by_side_in_one_buffer() -> None:
    """Data and grad as two parts of one buffer that meet but do not overlap (``[0:3]`` and
    ``[3:6]``) share no element: both are taken; overlapping by one element, refused."""
    buffer = torch.zeros(6)
    parameter = nn.Parameter(buffer[0:3])
    parameter.grad = buffer[3:6]
    assert parameter.grad.data_ptr() == buffer[3:].data_ptr()
    with pytest.raises(ValueError, match=r"^Parameter: grad shares memory with data, "):
        parameter.grad = buffer[2:5]


def test_a_meta_parameter_is_taken_with_a_meta_grad() -> None:
    """A meta tensor holds no memory: as data it is taken (its grad zeros on meta, which
    shares nothing with it), and data of a parameter moved to meta gets a meta grad."""
    parameter = nn.Parameter(torch.zeros(3, device="meta"))
    assert parameter.grad.device.type == "meta" and parameter.grad.shape == (3,)
    moved = nn.Parameter(torch.zeros(3))
    moved.data = torch.zeros(3, device="meta")
    assert moved.grad.device.type == "meta"


def test_first_overlap_names_the_two_in_the_order_given_and_not_parts_side_by_side() -> None:
    """``first_overlap``: two parts of one buffer side by side meet nowhere (``None``);
    overlapping ones are named in the order they were given, whatever their addresses;
    tensors on meta (no memory) and without elements overlap nothing."""
    from minidl.nn.parameter import first_overlap

    buffer = torch.zeros(10)
    assert first_overlap([("a", buffer[0:3]), ("b", buffer[3:6]), ("c", buffer[6:])]) is None
    assert first_overlap([("b", buffer[2:6]), ("a", buffer[0:3])]) == ("b", "a")
    assert first_overlap([("a", buffer[0:3]), ("b", buffer[2:6])]) == ("a", "b")
    meta = torch.zeros(4, device="meta")
    assert first_overlap([("m", meta[0:2]), ("n", meta[1:3]), ("e", buffer[1:1])]) is None


def test_shares_elements_only_where_two_elements_meet() -> None:
    """``shares_elements``: an expanded dimension of size > 1 and strides that meet
    (``as_strided((2, 2), (1, 1))``) share; a stride 0 on a size-1 dimension, a tensor
    without elements (an expanded empty one) and a meta tensor (no memory) do not."""
    from minidl.nn.parameter import shares_elements

    assert shares_elements(torch.zeros(1).expand(3))
    assert shares_elements(torch.zeros(4).as_strided((2, 2), (1, 1)))
    assert not shares_elements(torch.zeros(3).as_strided((1, 3), (0, 1)))
    assert not shares_elements(torch.zeros(1, 0).expand(3, 0))
    assert not shares_elements(torch.zeros(1, device="meta").expand(3))
    assert not shares_elements(torch.zeros(4, 3).t()[1:])


def test_a_parameter_keeps_its_tensors_detached_from_autograd() -> None:
    """Data and grad given with ``requires_grad`` (a leaf of PyTorch's autograd) are kept
    detached: minidl computes its own gradients, and an in-place update of a leaf that
    requires grad would raise."""
    parameter = nn.Parameter(torch.zeros(3, requires_grad=True))
    parameter.grad = torch.zeros(3, requires_grad=True)
    assert not parameter.data.requires_grad and not parameter.grad.requires_grad
    parameter.data.add_(1.0)
    assert parameter.data.tolist() == [1.0, 1.0, 1.0]


# -- minidl._interrupts -----------------------------------------------------------------------


def test_holding_delivers_every_signal_another_thread_took_meanwhile() -> None:
    """SIGINT then SIGTERM sent to the process while the main thread holds them (blocked
    there, so another thread takes them and the holder only notes them): at the end both are
    sent again to the main thread and each reaches its own handler once."""
    import os
    import threading
    import time

    from minidl._interrupts import holding_interrupts

    handled: list[int] = []
    for number in _NUMBERS:
        signal.signal(number, lambda got, frame: handled.append(got))
    release = threading.Event()
    other = threading.Thread(target=release.wait, args=(5.0,))  # (unblocked: it takes them)
    other.start()
    try:
        with holding_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and handled == []:
                time.sleep(0.01)  # (the noting handler runs here, in the main thread)
            assert handled == []
    finally:
        release.set()
        other.join()
    assert sorted(handled) == sorted(_NUMBERS)


def test_a_signal_noted_before_a_pause_reaches_its_handler_as_the_pause_begins() -> None:
    """A SIGTERM noted by ``deferring_interrupts`` (one signal waits for the step), then
    ``Deferred.paused``: its handler gets it as the pause begins, once, not lost."""
    from minidl._interrupts import deferring_interrupts

    calls: list[int] = []
    signal.signal(signal.SIGTERM, lambda got, frame: calls.append(got))
    with deferring_interrupts() as deferred:
        signal.raise_signal(signal.SIGTERM)
        assert calls == [] and deferred.noted == [signal.SIGTERM]
        with deferred.paused():
            assert calls == [signal.SIGTERM]
    assert calls == [signal.SIGTERM]


# -- minidl.nn.flat ---------------------------------------------------------------------------


def test_flat_buffer_of_no_tensors_is_none() -> None:
    """``flat_buffer([])``: no tensors tile no buffer, ``None`` (as for tensors that do not
    tile one), rather than an IndexError."""
    from minidl.nn.flat import flat_buffer

    assert flat_buffer([]) is None


def test_a_compact_storage_view_of_a_slice_pickles_only_that_part() -> None:
    """``storage_view(big[10:13], compact=True)``: written as a view of a copy of the three
    elements it reaches, and loaded as a tensor of those values over a storage of three
    elements (12 bytes), not the 100 of ``big``; without ``compact``, the whole storage."""
    import pickle

    from minidl.nn.flat import storage_view

    big = torch.arange(100.0)
    compact = pickle.loads(pickle.dumps(storage_view(big[10:13], compact=True))).tensor()
    assert compact.tolist() == [10.0, 11.0, 12.0]
    assert compact.untyped_storage().nbytes() == 3 * 4
    whole = pickle.loads(pickle.dumps(storage_view(big[10:13]))).tensor()
    assert whole.tolist() == [10.0, 11.0, 12.0]
    assert whole.untyped_storage().nbytes() == 100 * 4


def test_moving_a_flat_model_to_its_own_dtype_keeps_its_memory_and_another_keeps_it_flat() -> None:
    """``Sequential.to(float32)`` of a float32 model moves nothing: every parameter keeps its
    tensors (same addresses); ``.to(float64)`` makes new ones that still tile one buffer of
    values and one of gradients, with the values cast exactly."""
    from minidl.nn.flat import flat_buffer

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    parameters = list(model.parameters())
    before = [(p.data.data_ptr(), p.grad.data_ptr()) for p in parameters]
    values = [p.data.clone() for p in parameters]
    model.to(torch.float32)
    assert [(p.data.data_ptr(), p.grad.data_ptr()) for p in parameters] == before
    model.to(torch.float64)
    assert flat_buffer([p.data for p in parameters]) is not None
    assert flat_buffer([p.grad for p in parameters]) is not None
    for parameter, value in zip(parameters, values, strict=True):
        assert parameter.dtype == torch.float64
        assert torch.equal(parameter.data, value.double())


def test_flat_buffer_refuses_tensors_of_two_storages_whose_offsets_follow() -> None:
    """Two tensors whose storage offsets follow on (0 to 3, then 3 to 6) but in two storages
    tile no buffer: ``None``, not a view of the first storage past its end."""
    from minidl.nn.flat import flat_buffer

    first, second = torch.zeros(3), torch.ones(6)[3:]
    assert second.storage_offset() == 3
    assert flat_buffer([first, second]) is None


class _PartlyCast(nn.Module):
    """A float64 flat Sequential and a float32 parameter of its own."""

    def __init__(self) -> None:
        super().__init__()
        layers = nn.Sequential(
            nn.Linear(2, 3, dtype=torch.float64), nn.Linear(3, 1, dtype=torch.float64)
        )
        self.layers = self.register_module("layers", layers)
        self.scale = self.register_parameter("scale", nn.Parameter(torch.ones(1)))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input


def test_a_cast_keeps_the_memory_of_a_flat_part_already_of_that_dtype() -> None:
    """``to(float64)`` of a module whose Sequential is float64 already and whose own
    parameter is float32: the Sequential's parameters keep their memory (the run already in
    place is not copied), the float32 one is cast exactly."""
    torch.manual_seed(0)
    module = _PartlyCast()
    kept = [(p.data.data_ptr(), p.grad.data_ptr()) for p in module.layers.parameters()]
    module.to(torch.float64)
    assert [(p.data.data_ptr(), p.grad.data_ptr()) for p in module.layers.parameters()] == kept
    assert module.scale.dtype == torch.float64 and module.scale.data.tolist() == [1.0]


def test_parameters_on_two_devices_are_left_as_they_are_by_flatten_parameters() -> None:
    """Parameters of one dtype on two devices (cpu and meta) cannot share one buffer: nothing
    is flattened and None is returned, each parameter keeping its own tensors."""
    from minidl.nn import Parameter
    from minidl.nn.flat import flatten_parameters

    on_cpu = Parameter(torch.arange(3.0))
    on_meta = Parameter(torch.empty(2, device="meta"))
    tensors = [(p.data, p.grad) for p in (on_cpu, on_meta)]
    assert flatten_parameters([on_cpu, on_meta]) is None
    for parameter, (data, grad) in zip((on_cpu, on_meta), tensors, strict=True):
        assert parameter.data is data and parameter.grad is grad
    assert torch.equal(on_cpu.data, torch.arange(3.0))
    assert on_meta.device.type == "meta"


class _Holder(nn.Module):
    """A module of one's own keeping a plain tensor attribute (a cache, a constant)."""

    def __init__(self, kept: Tensor | tuple[Tensor, ...]) -> None:
        super().__init__()
        self.kept = kept

    def forward(self, x: Tensor) -> Tensor:
        return x


# -- minidl.nn.parameter ----------------------------------------------------------------------


def test_new_data_of_another_dtype_replaces_the_grad_by_zeros_of_that_dtype() -> None:
    """Data of the same shape and device but another dtype (float32 to float64): the grad,
    which no longer fits it, becomes float64 zeros (not the float32 grad kept, which a backward
    or an optimizer's step would then mix with float64 data); new data that fits the grad
    (same shape, dtype and device) keeps it."""
    parameter = nn.Parameter(torch.ones(3), name="w")
    parameter.grad = torch.full((3,), 2.0)
    parameter.data = torch.full((3,), 5.0)  # (fits: the grad is kept)
    assert torch.equal(parameter.grad, torch.full((3,), 2.0))
    parameter.data = torch.full((3,), 5.0, dtype=torch.float64)
    assert parameter.data.dtype == torch.float64
    assert parameter.grad.dtype == torch.float64
    assert torch.equal(parameter.grad, torch.zeros(3, dtype=torch.float64))


# -- minidl.nn.flat ---------------------------------------------------------------------------


def test_a_module_keeping_another_modules_weight_shares_it_again_once_loaded() -> None:
    """A module whose plain attribute is the whole weight of a Linear pickled with it (one
    written compactly, the other as a parameter): loaded, the attribute is again a view of the
    loaded weight's memory (one storage written once), so writing one shows in the other."""
    linear = nn.Linear(2, 2)
    holder = _Holder(linear.weight.data)
    linear2, holder2 = pickle.loads(pickle.dumps([linear, holder]))
    assert torch.equal(holder2.kept, linear.weight.data)
    assert holder2.kept.data_ptr() == linear2.weight.data.data_ptr()
    linear2.weight.data.fill_(7.0)
    assert torch.equal(holder2.kept, torch.full((2, 2), 7.0))


def test_a_view_of_a_parameter_as_another_dtype_is_loaded_with_its_dtype() -> None:
    """A module keeping ``weight.data.view(torch.int32)`` of a Linear pickled with it (one
    storage, two dtypes): loaded, the attribute is int32 with the same bits, not a float32
    view of the weight's storage."""
    linear = nn.Linear(2, 2)
    holder = _Holder(linear.weight.data.view(torch.int32))
    _, holder2 = pickle.loads(pickle.dumps([linear, holder]))
    assert holder2.kept.dtype == torch.int32
    assert torch.equal(holder2.kept, linear.weight.data.view(torch.int32))


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_two_tensors_at_one_address_of_two_sizes_are_loaded_each_whole(how: str) -> None:
    """Two tensors over the same memory from one address, of 4 and of 8 elements (two storages
    of two sizes, as ``torch.from_numpy`` of an array and of a slice of it makes), kept by one
    module: each comes back with all its values, not the second one taken as a view of the
    first's 4 elements (refused as out of bounds)."""
    array = np.arange(8, dtype=np.float32)
    holder = _Holder((torch.from_numpy(array[:4]), torch.from_numpy(array)))
    loaded = pickle.loads(pickle.dumps(holder)) if how == "pickle" else copy.deepcopy(holder)
    first, second = loaded.kept
    assert torch.equal(first, torch.arange(4.0))
    assert torch.equal(second, torch.arange(8.0))


# -- minidl._frozen ---------------------------------------------------------------------------


def test_a_deep_copy_of_a_frozen_tree_keeps_shared_parts_shared_as_for_plain_values() -> None:
    """``copy.deepcopy`` of a structure that holds a frozen tree and one of its lists gives one
    plain list for both places, as it does for plain dicts and lists (its memo): a change to
    the copy shows in both places, as it would in a copy of the plain tree."""
    from minidl._frozen import frozen

    plain: dict[str, Any] = {"lr": [0.1, 0.01], "training": {"history": [[1.0]]}}
    tree = frozen(plain, "read-only")
    for value in (plain, tree):
        pair = copy.deepcopy([value, value["lr"], value["training"]])
        assert pair[1] is pair[0]["lr"] and pair[2] is pair[0]["training"]
        assert type(pair[1]) is list and type(pair[2]) is dict
        assert pair[0] == plain and pair[0] is not value


# -- minidl._extras ---------------------------------------------------------------------------


def _import_failing_with(monkeypatch: pytest.MonkeyPatch, error: ImportError) -> list[str]:
    """Make ``importlib.import_module`` raise ``error``; returns the names it was asked for."""
    asked: list[str] = []

    def import_module(name: str) -> None:
        asked.append(name)
        raise error

    monkeypatch.setattr(importlib, "import_module", import_module)
    return asked


def test_require_says_what_to_install_in_one_error_without_the_import_error_chained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A missing package gives one ModuleNotFoundError naming the package, the extra and the
    pip command, with Python's own ``No module named`` error neither its cause nor shown as
    its context (the traceback is the one line, not "During handling ... another")."""
    from minidl import _extras

    asked = _import_failing_with(
        monkeypatch, ModuleNotFoundError("No module named 'safetensors'", name="safetensors")
    )
    with pytest.raises(ModuleNotFoundError) as raised:
        _extras.require("safetensors", "saving a checkpoint needs it")
    assert asked == ["safetensors"]
    assert str(raised.value) == (
        "saving a checkpoint needs it, and the safetensors package is not installed; install "
        "minidl's checkpoint extra: pip install 'minidl[checkpoint]' (or pip install "
        "safetensors)"
    )
    assert raised.value.name == "safetensors"
    assert raised.value.__cause__ is None and raised.value.__suppress_context__ is True


def test_require_refuses_a_package_that_is_no_extra_before_importing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``require`` of a package that no extra installs (``numpy``) raises the documented
    KeyError, without importing anything: it cannot say what to install."""
    from minidl import _extras

    asked = _import_failing_with(monkeypatch, ModuleNotFoundError("x", name="numpy"))
    with pytest.raises(KeyError, match=r"^'numpy'$"):
        _extras.require("numpy", "a figure needs it")
    assert asked == []


# -- minidl._scalar ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_add_scaled_of_a_float32_or_float64_tensor_has_the_bits_of_add(dtype: torch.dtype) -> None:
    """Outside float16 and bfloat16, ``add_scaled_`` is ``add_`` itself: every element has the
    bits of ``target.add_(other, alpha=alpha)`` (PyTorch's optimizers' update), for lengths
    that fill the vectorised body and its scalar tail, and the target is the tensor returned."""
    from minidl._scalar import add_scaled_

    generator = torch.Generator().manual_seed(0)
    for size in (1, 7, 33, 1000):
        for alpha in (0.1, -1e-3, 1 / 3):
            target = torch.randn(size, generator=generator, dtype=dtype)
            other = torch.randn(size, generator=generator, dtype=dtype)
            expected = target.clone().add_(other, alpha=alpha)
            assert add_scaled_(target, other, alpha) is target
            assert torch.equal(target, expected), (size, alpha)


# -- nn/parameter.py, nn/flat.py (a second pass) ------------------------------------------


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_a_parameter_refuses_a_nested_tensor_without_a_to_dense_hint() -> None:
    """A nested tensor is refused as data with a TypeError that names its layout and ends
    there: no ``(pass data.to_dense())`` hint, which a nested tensor of ragged parts cannot
    follow."""
    given = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])
    with pytest.raises(
        TypeError, match=r"^Parameter 'w': data is a nested tensor; expected a dense tensor$"
    ):
        nn.Parameter(given, name="w")


@pytest.mark.parametrize("attribute", ["data", "grad"])
def test_a_parameter_refuses_a_tensor_expanded_to_two_elements(attribute: str) -> None:
    """``torch.zeros(1).expand(2)``: two elements at one location (stride 0 on a dimension of
    size 2, the smallest that shares) are refused as ``data`` or ``grad`` with a ValueError
    naming the parameter, the shape and strides and the way out; its tensors are kept."""
    parameter = nn.Parameter(torch.ones(2), name="w")
    data, grad = parameter.data, parameter.grad
    with pytest.raises(
        ValueError,
        match=rf"^Parameter 'w': {attribute} of shape \(2,\) has elements that share memory "
        r"\(strides \(0,\), as an expanded tensor has\), but it is updated in place; expected "
        rf"a tensor whose elements each have their own memory \(pass {attribute}\.clone\(\)\)$",
    ):
        setattr(parameter, attribute, torch.zeros(1).expand(2))
    assert parameter.data is data and parameter.grad is grad


def test_zero_grad_zeroes_the_grad_in_place() -> None:
    """``zero_grad`` writes zeros into the grad it has (the same tensor, at the same address,
    so a flat gradient buffer it is a view of is zeroed too), and counts no replacement."""
    buffer = torch.full((5,), 3.0)
    parameter = nn.Parameter(torch.ones(2))
    parameter.grad = buffer[1:3]
    grad, count = parameter.grad, nn.Parameter.replacements
    parameter.zero_grad()
    assert parameter.grad is grad
    assert nn.Parameter.replacements == count
    assert buffer.tolist() == [3.0, 0.0, 0.0, 3.0, 3.0]


def test_flatten_parameters_inside_inference_mode_makes_normal_views_of_the_buffers() -> None:
    """Flattened inside ``torch.inference_mode()``, the buffers are normal tensors and every
    value and gradient a view of them (at its offset), with the values kept: not inference
    tensors that the parameter copies, which would leave the buffers shared with nothing."""
    first, second = nn.Parameter(torch.ones(2)), nn.Parameter(torch.full((3,), 2.0))
    second.grad = torch.full((3,), 5.0)
    with torch.inference_mode():
        flat = flatten_parameters([first, second])
    assert flat is not None
    values, grads = flat
    assert not values.is_inference() and not grads.is_inference()
    assert values.tolist() == [1.0, 1.0, 2.0, 2.0, 2.0]
    assert grads.tolist() == [0.0, 0.0, 5.0, 5.0, 5.0]
    assert first.data.data_ptr() == values.data_ptr()
    assert second.data.data_ptr() == values[2:].data_ptr()
    assert second.grad.data_ptr() == grads[2:].data_ptr()
    values.mul_(2.0)
    assert second.data.tolist() == [4.0, 4.0, 4.0]


def test_a_flat_model_loaded_inside_inference_mode_is_flat_and_normal() -> None:
    """A flat Sequential unpickled inside ``torch.inference_mode()``: its values and gradients
    come back views of one normal buffer each (not inference tensors each copied apart), with
    the values it was pickled with."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    written = pickle.dumps(model)
    with torch.inference_mode():
        loaded = pickle.loads(written)
    parameters = list(loaded.parameters())
    assert not any(p.data.is_inference() or p.grad.is_inference() for p in parameters)
    assert flat_buffer([p.data for p in parameters]) is not None
    assert flat_buffer([p.grad for p in parameters]) is not None
    for got, expected in zip(parameters, model.parameters(), strict=True):
        assert torch.equal(got.data, expected.data)


# -- _setting.py, _interrupts.py, _files.py (a second pass) --------------------------------


def test_a_setting_aliased_in_a_subclass_keeps_its_name_for_the_class_that_made_it() -> None:
    """``slope = LeakyReLU.negative_slope`` in a subclass reads and sets the same value as
    ``negative_slope``; a LeakyReLU made afterwards still computes with its slope and its
    refusal names ``negative_slope`` (renamed, the setting kept every LeakyReLU's value under
    the alias's slot, and the forward, which reads ``_negative_slope``, failed)."""

    class Aliased(nn.LeakyReLU):
        slope = nn.LeakyReLU.negative_slope

    aliased = Aliased(0.5)
    assert aliased.slope == 0.5 == aliased.negative_slope
    aliased.slope = 0.25
    assert aliased.negative_slope == 0.25
    plain = nn.LeakyReLU(0.1)
    assert plain.negative_slope == 0.1
    x = torch.tensor([-2.0, 3.0], dtype=torch.float64)
    assert torch.equal(plain(x), torch.tensor([-0.2, 3.0], dtype=torch.float64))
    assert torch.equal(aliased(x), torch.tensor([-0.5, 3.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^LeakyReLU: negative_slope "):
        plain.negative_slope = float("nan")
    assert plain.negative_slope == 0.1


def test_a_setting_read_before_it_is_set_raises_without_the_slots_error_as_context() -> None:
    """The AttributeError for a setting not set yet names the setting, and is raised alone
    (``from None``): the traceback does not show the slot's own AttributeError (``'Dropout'
    object has no attribute '_p'``) as the error it was raised while handling."""
    bare = nn.Dropout.__new__(nn.Dropout)
    with pytest.raises(AttributeError) as info:
        bare.p  # noqa: B018
    assert str(info.value) == "Dropout.p has no value yet: Dropout's constructor sets it"
    assert info.value.__suppress_context__ and info.value.__cause__ is None


def test_a_fixed_setting_refused_names_the_value_kept_the_value_given_and_what_to_do() -> None:
    """Setting or deleting ``BatchNorm1d.num_features`` raises AttributeError whose whole
    message names the value kept, the value given and the hint (build a new layer); the layer
    keeps its value. The same value set again (as a subclass's constructor may) is taken."""
    layer = nn.BatchNorm1d(3)
    hint = (
        "the running statistics, the weight and the bias have that many entries; build a new "
        "BatchNorm1d for another number"
    )
    with pytest.raises(AttributeError) as info:
        layer.num_features = 4
    assert (
        str(info.value) == f"BatchNorm1d: num_features is fixed at construction (3), got 4; {hint}"
    )
    with pytest.raises(AttributeError) as info:
        del layer.num_features
    assert str(info.value) == (
        f"BatchNorm1d.num_features cannot be deleted: it is fixed at construction; {hint}"
    )
    layer.num_features = 3
    assert layer.num_features == 3 and type(layer.num_features) is int


def test_a_dropped_tensor_of_two_rows_is_named_on_one_line() -> None:
    """A plain ``inplace`` pickled as a 2 x 4 tensor (8 elements: written whole), dropped as
    the module is copied: its repr's two rows are written on one line, one space between
    them, so that the warning is one line."""
    import copy
    import warnings

    relu = nn.ReLU()
    relu.__dict__["inplace"] = torch.zeros(2, 4)  # (a plain attribute, as an earlier version)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        copied = copy.deepcopy(relu)
    assert [str(w.message) for w in caught] == [
        "ReLU: inplace=tensor([[0., 0., 0., 0.], [0., 0., 0., 0.]]), pickled by an earlier "
        "minidl version that ignored it, is dropped (setting it now raises): the ReLU computes "
        "as it did, as with inplace=False"
    ]
    assert copied.inplace is False


# -- minidl._interrupts -----------------------------------------------------------------------


class _TerminatedError(Exception):
    pass


def test_the_first_interrupt_as_the_handlers_are_put_back_is_the_one_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two interrupts as the handlers are put back (a Ctrl-C, then a SIGTERM as the attempt
    after it runs): every handler is back, and the first, the Ctrl-C, is raised (not replaced
    by the one that came while it waited)."""
    from minidl import _interrupts

    put_back = signal.signal
    raising: list[BaseException] = [KeyboardInterrupt(), _TerminatedError()]

    def interrupted(number: int, handler: Any) -> Any:
        previous = put_back(number, handler)
        if raising:
            raise raising.pop(0)
        return previous

    handlers: dict[int, Any] = {
        signal.SIGINT: signal.default_int_handler,
        signal.SIGTERM: signal.SIG_DFL,
    }
    monkeypatch.setattr(signal, "signal", interrupted)
    with pytest.raises(BaseException) as info:
        _interrupts._put_back(handlers)
    monkeypatch.undo()
    assert type(info.value) is KeyboardInterrupt, repr(info.value)
    assert raising == []
    assert {number: signal.getsignal(number) for number in _NUMBERS} == handlers


def test_handlers_that_could_not_be_put_back_in_a_delivery_are_put_back_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A delivery whose putting back fails at every attempt (no interrupt: an OSError) raises
    it, with the handler that notes the signals still in place (the signal is noted again);
    the deferral goes on, and at its end the handlers there were before, not the one that
    notes, are put back, and the signal reaches its own handler once."""
    from minidl._interrupts import deferring_interrupts

    handled: list[int] = []
    signal.signal(signal.SIGTERM, lambda number, frame: handled.append(number))
    before: dict[int, Any] = {number: signal.getsignal(number) for number in _NUMBERS}
    replace = signal.signal
    failing = [True]

    def refused(number: int, handler: Any) -> Any:
        if failing[0] and handler is before[number]:
            raise OSError("refused")
        return replace(number, handler)

    with deferring_interrupts() as deferred:
        signal.raise_signal(signal.SIGTERM)
        monkeypatch.setattr(signal, "signal", refused)
        with pytest.raises(OSError, match=r"^refused$"):
            deferred.deliver()
        failing[0] = False
        monkeypatch.undo()
        assert handled == []
    assert handled == [signal.SIGTERM]
    assert {number: signal.getsignal(number) for number in _NUMBERS} == before


def test_a_delivery_as_a_pause_begins_leaves_the_signals_going_to_their_handlers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second signal as a pause puts the handlers back (a SIGTERM handled just then, with a
    SIGINT noted before) hands both over at once; the pause then runs with the signals going
    to their own handlers as they come, not noted again until it ends."""
    from minidl import _interrupts

    handled: list[int] = []
    for number in _NUMBERS:
        signal.signal(number, lambda got, frame: handled.append(got))
    before: dict[int, Any] = {number: signal.getsignal(number) for number in _NUMBERS}
    replace = signal.signal
    sent: list[int] = []

    def interrupted(number: int, handler: Any) -> Any:
        previous = replace(number, handler)
        if number == signal.SIGINT and handler is before[number] and not sent:
            # (SIGINT's handler back, SIGTERM's not yet: a SIGTERM handled just then)
            sent.append(signal.SIGTERM)
            noting = signal.getsignal(signal.SIGTERM)
            assert callable(noting)
            noting(signal.SIGTERM, None)
        return previous

    with _interrupts.deferring_interrupts() as deferred:
        signal.raise_signal(signal.SIGINT)
        assert handled == []
        monkeypatch.setattr(signal, "signal", interrupted)
        with deferred.paused():
            monkeypatch.undo()
            assert sorted(handled) == sorted(_NUMBERS)
            signal.raise_signal(signal.SIGINT)
            assert sorted(handled) == sorted([*_NUMBERS, signal.SIGINT])
    assert sent == [signal.SIGTERM]
    assert sorted(handled) == sorted([*_NUMBERS, signal.SIGINT])


def test_a_pause_of_a_deferral_not_active_defers_nothing_after_it() -> None:
    """``deferring_interrupts(active=False)`` defers nothing, before, during and after a pause
    of its Deferred: Ctrl-C raises KeyboardInterrupt at once after the pause, and SIGTERM keeps
    its handler, after the deferral too (set to the handler that notes, it was never put
    back)."""
    from minidl._interrupts import deferring_interrupts

    handled: list[int] = []
    signal.signal(signal.SIGTERM, lambda number, frame: handled.append(number))
    before = {number: signal.getsignal(number) for number in _NUMBERS}
    with deferring_interrupts(active=False) as deferred:
        with deferred.paused():
            pass
        assert {number: signal.getsignal(number) for number in _NUMBERS} == before
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
        assert handled == [signal.SIGTERM]
    assert {number: signal.getsignal(number) for number in _NUMBERS} == before


def test_a_dropped_setting_loaded_where_minidl_code_is_the_threads_first_frame_still_warns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``pickle.loads`` run as the whole of a low-level thread (``_thread.start_new_thread``:
    the module's ``__setstate__`` is then the thread's first Python frame, with no caller):
    the plain ``inplace`` that the check refuses is dropped with its warning, not lost to an
    error raised in looking for a caller outside minidl that does not exist."""
    relu = nn.ReLU()
    relu.__dict__["inplace"] = torch.zeros(2)  # (a plain attribute, as an earlier version)
    blob = pickle.dumps(relu)
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _thread.start_new_thread(pickle.loads, (blob,))
        deadline = time.monotonic() + 10
        while not caught and not unraisable and time.monotonic() < deadline:
            time.sleep(0.01)
    assert [repr(hook.exc_value) for hook in unraisable] == []
    assert [str(w.message) for w in caught] == [
        "ReLU: inplace=tensor([0., 0.]), pickled by an earlier minidl version that ignored it, "
        "is dropped (setting it now raises): the ReLU computes as it did, as with inplace=False"
    ]


class _Place(os.PathLike[str]):
    """A path object of the caller's own: ``os.fspath`` gives its path; its ``str`` (the
    default ``repr``) is no path."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return self.path


def test_naming_file_names_a_path_like_object_by_its_path() -> None:
    """A write error that names no file, inside ``naming_file`` given a path-like object of
    the caller's own (``os.PathLike``, which minidl's savers take): the error names its path
    (``os.fspath``), not the object's ``str``."""
    with pytest.raises(OSError) as info, _files.naming_file(_Place("runs/a.ckpt")):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == "runs/a.ckpt"
    assert str(info.value) == "[Errno 28] No space left on device: 'runs/a.ckpt'"
