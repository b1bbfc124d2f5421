"""minidl.nn.parameter and minidl.nn.flat as a mutation audit found them untested (each test
checks a value, an exception's type and message, or state left as it was, against an exact
oracle), and the flat buffer of two storages at one address."""

from __future__ import annotations

import pytest
import torch

from minidl import nn


def test_a_parameter_refuses_a_name_that_is_not_a_str_and_keeps_its_name() -> None:
    """P01: ``name`` must be a str (it is shown in messages with ``!r``): an int is refused
    with a TypeError naming its type, at construction and on assignment, and the name kept is
    the one before."""
    with pytest.raises(TypeError, match=r"^Parameter: name must be a str, got int$"):
        nn.Parameter(torch.zeros(2), name=3)  # type: ignore[arg-type]
    parameter = nn.Parameter(torch.zeros(2), name="w")
    with pytest.raises(TypeError, match=r"^Parameter: name must be a str, got NoneType$"):
        parameter.name = None  # type: ignore[assignment]
    assert parameter.name == "w"
    assert repr(parameter) == "Parameter 'w'(shape=(2,), dtype=torch.float32)"


def test_a_parameter_refuses_a_grad_of_its_shape_on_another_device_and_keeps_its_grad() -> None:
    """P14: a grad of the right shape and dtype on another device (meta, for data on cpu) is
    refused with a ValueError naming both shapes and devices (an accumulation into it would
    fail, or do nothing); the grad kept is the one before, unchanged."""
    parameter = nn.Parameter(torch.ones(3), name="w")
    grad = parameter.grad
    grad.fill_(2.0)
    with pytest.raises(
        ValueError,
        match=r"^Parameter 'w': grad must have the shape and device of data \(\(3,\) on cpu\), "
        r"got \(3,\) on meta$",
    ):
        parameter.grad = torch.zeros(3, device="meta")
    assert parameter.grad is grad and torch.equal(grad, torch.full((3,), 2.0))


def test_elements_that_meet_far_apart_in_element_order_are_found() -> None:
    """P40: ``as_strided((3, 2), (1, 2))`` of 5 elements has offsets 0, 2, 1, 3, 2, 4: the
    elements (0, 1) and (2, 0) meet at offset 2, though not next to each other in element
    order. ``shares_elements`` says so, and a parameter refuses it as data and as grad,
    keeping what it had; the oracle is the offsets listed in full."""
    from minidl.nn.parameter import shares_elements

    tensor = torch.zeros(5).as_strided((3, 2), (1, 2))
    offsets = [i * 1 + j * 2 for i in range(3) for j in range(2)]
    assert len(set(offsets)) < len(offsets)  # (the oracle: two elements at one offset)
    assert shares_elements(tensor)
    parameter = nn.Parameter(torch.ones(3, 2), name="w")
    data, grad = parameter.data, parameter.grad
    for attribute in ("data", "grad"):
        with pytest.raises(
            ValueError,
            match=rf"^Parameter 'w': {attribute} of shape \(3, 2\) has elements that share "
            r"memory \(strides \(1, 2\), as torch.as_strided can make\), but it is updated in "
            rf"place; expected a tensor whose elements each have their own memory \(pass "
            rf"{attribute}.clone\(\)\)$",
        ):
            setattr(parameter, attribute, torch.zeros(5).as_strided((3, 2), (1, 2)))
        assert parameter.data is data and parameter.grad is grad
    # (strides that interleave without meeting are taken: offsets 0, 2, 4, 1, 3, 5)
    assert not shares_elements(torch.zeros(6).as_strided((3, 2), (2, 1)).t())


def test_first_overlap_of_parts_given_out_of_address_order_is_none() -> None:
    """P45: three parts of one buffer side by side, given last part first, overlap nowhere:
    ``None`` (the spans are compared in address order, not in the order given); parts that do
    overlap, given out of order among others, are still named in the order given."""
    from minidl.nn.parameter import first_overlap

    buffer = torch.zeros(9)
    assert first_overlap([("c", buffer[6:]), ("b", buffer[3:6]), ("a", buffer[0:3])]) is None
    assert first_overlap([("c", buffer[6:]), ("b", buffer[2:6]), ("a", buffer[0:3])]) == ("b", "a")


def test_flat_buffer_refuses_parts_with_a_gap_or_out_of_order() -> None:
    """F04: ``buffer[0:2]`` then ``buffer[3:5]`` leave element 2 out (a write to the flat
    buffer would write it too), and ``buffer[2:4]`` then ``buffer[0:2]`` are out of order:
    neither tiles a buffer (``None``); ``buffer[0:2]`` then ``buffer[2:5]`` do."""
    from minidl.nn.flat import flat_buffer

    buffer = torch.arange(6.0)
    assert flat_buffer([buffer[0:2], buffer[3:5]]) is None
    assert flat_buffer([buffer[2:4], buffer[0:2]]) is None
    flat = flat_buffer([buffer[0:2], buffer[2:5]])
    assert flat is not None and flat.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert flat.data_ptr() == buffer.data_ptr()


def test_flat_buffer_refuses_a_transposed_part_whose_elements_are_out_of_order() -> None:
    """F02: ``buffer[:4].view(2, 2).t()`` covers elements 0 to 3 of its storage but in the
    order 0, 2, 1, 3: with ``buffer[4:6]`` after it, it tiles no buffer in order (a flat
    update would pair element (0, 1) of it with flat element 1, which is its (1, 0))."""
    from minidl.nn.flat import flat_buffer

    buffer = torch.arange(6.0)
    transposed = buffer[:4].view(2, 2).t()
    assert transposed.storage_offset() == 0 and transposed.numel() == 4
    assert flat_buffer([transposed, buffer[4:6]]) is None
    assert flat_buffer([transposed]) is None


def _three_in_one_buffer() -> list[nn.Parameter]:
    """Three float32 parameters tiling one buffer of values and one of gradients."""
    values, grads = torch.arange(10.0), -torch.arange(10.0)
    shapes = [(2, 2), (3,), (3,)]
    parameters, offset = [], 0
    for shape in shapes:
        size = torch.Size(shape).numel()
        parameter = nn.Parameter(values[offset : offset + size].view(shape))
        parameter.grad = grads[offset : offset + size].view(shape)
        parameters.append(parameter)
        offset += size
    return parameters


def test_moving_a_run_of_three_parameters_keeps_all_three_in_one_buffer() -> None:
    """F13: three consecutive parameters whose values (and gradients) tile one buffer are one
    run: cast to float64 by ``moved_keeping_runs``, all three values view one new buffer (and
    all three gradients another), in order, each equal to the cast of what it was."""
    from minidl.nn.flat import flat_buffer, moved_keeping_runs

    parameters = _three_in_one_buffer()
    moved = moved_keeping_runs(parameters, None, torch.float64)
    values = [value for value, _ in moved]
    grads = [grad for _, grad in moved]
    flat_values, flat_grads = flat_buffer(values), flat_buffer(grads)
    assert flat_values is not None and flat_grads is not None
    assert torch.equal(flat_values, torch.arange(10.0, dtype=torch.float64))
    assert torch.equal(flat_grads, -torch.arange(10.0, dtype=torch.float64))
    for parameter, (value, grad) in zip(parameters, moved, strict=True):
        assert value.dtype == grad.dtype == torch.float64
        assert torch.equal(value, parameter.data.double())
        assert torch.equal(grad, parameter.grad.double())


def test_moving_one_transposed_parameter_keeps_its_strides_as_tensor_to_does() -> None:
    """F15: a parameter alone in its run (a transposed weight of its own) is moved by
    ``Tensor.to``, which keeps its strides: cast to float64 its value and gradient have the
    strides ``Tensor.to`` gives (the oracle), not those of a contiguous copy."""
    from minidl.nn.flat import moved_keeping_runs

    data = torch.arange(12.0).view(3, 4).t()
    parameter = nn.Parameter(data)
    parameter.grad = -torch.arange(12.0).view(3, 4).t()
    [(value, grad)] = moved_keeping_runs([parameter], None, torch.float64)
    oracle = data.to(torch.float64)
    assert oracle.stride() == (1, 4)  # (Tensor.to keeps a transposed layout)
    assert value.stride() == oracle.stride() and grad.stride() == oracle.stride()
    assert torch.equal(value, oracle) and torch.equal(grad, -oracle)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")
@pytest.mark.parametrize("layout", ["sparse_coo", "sparse_csr"])
def test_a_parameter_refuses_a_sparse_grad_with_the_to_dense_hint_and_keeps_its_grad(
    layout: str,
) -> None:
    """P19: a sparse grad of the shape, dtype and device of the data is refused by type (an
    accumulation, an optimizer's step or ``zero_grad`` would fail on it part-way), naming its
    layout and the ``to_dense()`` that makes it fit; the grad kept is the one before."""
    parameter = nn.Parameter(torch.ones(2, 2), name="w")
    grad = parameter.grad
    grad.fill_(3.0)
    dense = torch.eye(2)
    sparse = dense.to_sparse() if layout == "sparse_coo" else dense.to_sparse_csr()
    with pytest.raises(
        TypeError,
        match=rf"^Parameter 'w': grad is a {layout} tensor; expected a dense tensor "
        r"\(pass grad.to_dense\(\)\)$",
    ):
        parameter.grad = sparse
    assert parameter.grad is grad and torch.equal(grad, torch.full((2, 2), 3.0))


def test_moving_a_run_inside_inference_mode_gives_normal_tensors_still_in_one_buffer() -> None:
    """F16: ``moved_keeping_runs`` called inside ``torch.inference_mode()`` (a model moved
    there) gives normal tensors, which can be updated in place outside it and are put in place
    as they are (an inference tensor would be copied out one by one, the run no longer
    flat): the three values still view one buffer, equal to the casts."""
    from minidl.nn.flat import flat_buffer, moved_keeping_runs

    parameters = _three_in_one_buffer()
    with torch.inference_mode():
        moved = moved_keeping_runs(parameters, None, torch.float64)
    for parameter, (value, grad) in zip(parameters, moved, strict=True):
        assert not value.is_inference() and not grad.is_inference()
        assert torch.equal(value, parameter.data.double())
    assert flat_buffer([value for value, _ in moved]) is not None
    for parameter, (value, grad) in zip(parameters, moved, strict=True):
        parameter.data, parameter.grad = value, grad
    assert flat_buffer([p.data for p in parameters]) is not None
    assert flat_buffer([p.grad for p in parameters]) is not None


def test_a_storage_view_made_inside_inference_mode_is_a_normal_view_of_the_tensor() -> None:
    """F27: ``storage_view(t).tensor()`` is a view of ``t``'s memory, made inside
    ``torch.inference_mode()`` or not (a deep copy or pickle taken there): a normal tensor,
    which an in-place update outside inference mode writes through to ``t``."""
    from minidl.nn.flat import storage_view

    buffer = torch.arange(6.0)
    with torch.inference_mode():
        view = storage_view(buffer[2:5]).tensor()
    assert not view.is_inference()
    assert view.data_ptr() == buffer[2:].data_ptr() and view.tolist() == [2.0, 3.0, 4.0]
    view.add_(10.0)
    assert buffer.tolist() == [0.0, 1.0, 12.0, 13.0, 14.0, 5.0]


def _two_storages_at_one_address() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.from_numpy`` of the first half of an array and of all of it, then its second
    half: two storages (of 16 and 32 bytes) from one address, the second tensor's offset (4)
    following on the first's end; and the array's tensor."""
    import numpy as np

    array = np.arange(8, dtype=np.float32)
    first, whole = torch.from_numpy(array[:4]), torch.from_numpy(array)
    return first, whole[4:], whole


def test_flat_buffer_of_two_storages_at_one_address_is_none() -> None:
    """Two storages at one address are two storages: the first tensor's holds 4 elements, the
    second's 8, so they tile no buffer (``flat_buffer`` took them for one and returned
    ``first.as_strided((8,), (1,), 0)``, out of the first storage's bounds)."""
    from minidl.nn.flat import flat_buffer

    first, second, _ = _two_storages_at_one_address()
    assert first.untyped_storage().data_ptr() == second.untyped_storage().data_ptr()
    assert first.untyped_storage().nbytes() != second.untyped_storage().nbytes()
    assert flat_buffer([first, second]) is None


def test_sgd_steps_parameters_over_two_storages_at_one_address_as_torch_does() -> None:
    """Two parameters (and their grads) made by ``torch.from_numpy`` of half an array and of
    all of it, side by side, share no memory and are taken; ``optim.SGD.step`` steps them as
    ``torch.optim.SGD`` does (it raised RuntimeError, ``setStorage: ... out of bounds for
    storage of size 16``, from ``flat_buffer``)."""
    import numpy as np

    from minidl import optim

    first, second, values = _two_storages_at_one_address()
    grad_array = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], dtype=np.float32)
    grad_first, grad_whole = torch.from_numpy(grad_array[:4]), torch.from_numpy(grad_array)
    p, q = nn.Parameter(first), nn.Parameter(second)
    p.grad, q.grad = grad_first, grad_whole[4:]
    expected = torch.arange(8.0).requires_grad_()
    expected.grad = torch.arange(1.0, 9.0)
    torch.optim.SGD([expected], lr=0.5).step()
    optim.SGD([p, q], lr=0.5).step()
    assert torch.equal(values, expected.detach())


def test_data_and_grad_made_in_inference_mode_are_copied_out_and_step_outside_it() -> None:
    """P49: a tensor made inside ``torch.inference_mode()`` and given as data or grad (outside
    it) is copied out of it: the parameter's tensors are normal, an in-place update of them
    outside inference mode works (PyTorch refuses it on an inference tensor), and the tensors
    given are left as they were."""
    from minidl import optim

    with torch.inference_mode():
        data, grad = torch.ones(3), torch.full((3,), 2.0)
    parameter = nn.Parameter(data)
    parameter.grad = grad
    assert not parameter.data.is_inference() and not parameter.grad.is_inference()
    optim.SGD([parameter], lr=0.5).step()
    assert torch.equal(parameter.data, torch.zeros(3))
    parameter.zero_grad()
    assert torch.equal(parameter.grad, torch.zeros(3))
    assert torch.equal(data, torch.ones(3)) and torch.equal(grad, torch.full((3,), 2.0))


def test_flat_buffer_refuses_empty_tensors_of_two_devices() -> None:
    """Tensors tile a buffer only on one device: an empty cpu tensor and an empty meta
    tensor (both storages at address 0, of 0 bytes) tile none, ``None``; two empty cpu
    tensors of one storage tile its empty buffer."""
    from minidl.nn.flat import flat_buffer

    assert flat_buffer([torch.empty(0), torch.empty(0, device="meta")]) is None
    assert flat_buffer([torch.empty(0, device="meta"), torch.empty(0)]) is None
    buffer = torch.empty(0)
    flat = flat_buffer([buffer[0:0], buffer[0:0]])
    assert flat is not None and flat.shape == (0,) and flat.device == torch.device("cpu")
