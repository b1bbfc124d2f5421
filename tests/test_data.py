"""The disk data set (labels, balance, normalisation, seeding) and the mini-batch iterator."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from minidl.data import BatchIterator, Split, disk_labels, make_disk_data
from tests.helpers import CudaLikeGenerator

F64 = torch.float64


def _inside_disk(raw: torch.Tensor) -> torch.Tensor:
    # The paper: label 1 inside the disk of centre (0.5, 0.5) and radius 1 / sqrt(2 pi).
    return (((raw[:, 0] - 0.5) ** 2 + (raw[:, 1] - 0.5) ** 2) < 1 / (2 * math.pi)).long()


def test_points_are_uniform_in_the_unit_square_and_labelled_by_the_disk() -> None:
    data = make_disk_data(seed=3, dtype=F64)
    for split in (data.train, data.validation, data.test):
        assert len(split) == 1000
        assert split.raw.shape == split.x.shape == (1000, 2)
        assert split.y.dtype == torch.int64 and split.y.shape == (1000,)
        assert float(split.raw.min()) >= 0.0 and float(split.raw.max()) <= 1.0
        assert torch.equal(split.y, _inside_disk(split.raw))
        # Balanced on average (area 1/2): 1000 draws give 0.5 +- 0.016.
        assert 0.44 < float(split.y.double().mean()) < 0.56
    # Uniform: mean 1/2 and variance 1/12 per coordinate, within ~5 standard errors.
    raw = torch.cat([data.train.raw, data.validation.raw, data.test.raw])
    assert torch.allclose(raw.mean(dim=0), torch.full((2,), 0.5, dtype=F64), atol=0.03)
    assert torch.allclose(raw.var(dim=0), torch.full((2,), 1 / 12, dtype=F64), atol=0.008)


def test_training_set_is_normalised_with_its_own_statistics() -> None:
    data = make_disk_data(n_train=500, seed=1, dtype=F64)
    x = data.train.x
    assert torch.allclose(x.mean(dim=0), torch.zeros(2, dtype=F64), atol=1e-12)
    assert torch.allclose(x.std(dim=0), torch.ones(2, dtype=F64), atol=1e-12)
    assert torch.allclose(data.mean, data.train.raw.mean(dim=0), rtol=1e-15, atol=0)
    assert torch.allclose(data.std, data.train.raw.std(dim=0), rtol=1e-15, atol=0)


def test_validation_and_test_use_the_training_statistics() -> None:
    data = make_disk_data(n_train=200, n_validation=300, n_test=400, seed=2, dtype=F64)
    mean, std = data.train.raw.mean(dim=0), data.train.raw.std(dim=0)
    for split in (data.validation, data.test):
        assert torch.allclose(split.x, (split.raw - mean) / std, rtol=1e-14, atol=1e-14)
        # ... not their own: their own mean would be exactly 0.
        assert float(split.x.mean(dim=0).abs().max()) > 1e-6
    assert len(data.validation) == 300 and len(data.test) == 400
    assert torch.allclose(data.normalize(data.test.raw), data.test.x, rtol=1e-14, atol=1e-14)


def test_same_seed_same_data_and_different_seed_different_data() -> None:
    first, second, other = (make_disk_data(n_train=50, seed=s) for s in (7, 7, 8))
    for a, b, c in zip(
        (first.train, first.validation, first.test),
        (second.train, second.validation, second.test),
        (other.train, other.validation, other.test),
        strict=True,
    ):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.raw, b.raw)
        assert not torch.equal(a.raw, c.raw)
    # The seed is the data set's own: torch's global generator is neither used nor disturbed.
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    make_disk_data(seed=1)
    assert torch.equal(torch.rand(1), expected)


def test_the_sets_are_the_seeded_generators_draws_train_validation_test() -> None:
    """The documented order: float64 draws of one generator seeded with ``seed``, the training
    set's first, then the validation set's, then the test set's."""
    data = make_disk_data(n_train=5, n_validation=3, n_test=4, seed=11)
    generator = torch.Generator().manual_seed(11)
    for split, n in ((data.train, 5), (data.validation, 3), (data.test, 4)):
        expected = torch.rand(n, 2, dtype=torch.float64, generator=generator)
        assert torch.equal(split.raw, expected)
        assert torch.equal(split.y, disk_labels(expected))


def test_data_sets_compare_by_value() -> None:
    """``==`` raised "Boolean value of Tensor with more than one value is ambiguous" for two
    distinct data sets (the dataclass compared the tensors with ==)."""
    import copy

    data = make_disk_data(seed=0)
    same = copy.deepcopy(data)
    assert data == same and data.train == same.train and hash(data) == hash(same)
    assert {data, same} == {data}
    assert data != make_disk_data(seed=1) and data.train != data.test
    assert data != make_disk_data(seed=0, dtype=torch.float64)  # (the same values, rounded)
    assert data not in ("data", data.train)  # other types compare unequal
    nan = copy.deepcopy(data)
    nan.train.x[0, 0] = float("nan")
    assert nan != copy.deepcopy(nan)  # NaN equals nothing, as in torch.equal


def test_float32_and_float64_give_the_same_points() -> None:
    single, double = make_disk_data(seed=4), make_disk_data(seed=4, dtype=F64)
    assert single.train.x.dtype == torch.float32 and double.train.x.dtype == F64
    for a, b in zip(
        (single.train, single.validation, single.test),
        (double.train, double.validation, double.test),
        strict=True,
    ):
        assert torch.equal(a.raw, b.raw)
        assert torch.equal(a.y, b.y)
        assert torch.equal(a.x, b.x.float())


# -- BatchIterator -------------------------------------------------------------------------------


def _dataset(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    # x[i] = (i, -i) and y[i] = i: a batch's pairs show whether x and y stay together.
    index = torch.arange(n)
    return torch.stack([index, -index], dim=1).double(), index


@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (10, 5), (1, 1), (7, 1), (100, 100)])
def test_every_sample_once_per_pass_in_pairs(n: int, batch_size: int) -> None:
    x, y = _dataset(n)
    batches = BatchIterator(x, y, batch_size, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        seen_x, seen_y = zip(*batches, strict=True)
        assert len(seen_y) == len(batches) == math.ceil(n / batch_size)
        all_y = torch.cat(seen_y)
        assert torch.equal(all_y.sort().values, y)
        assert torch.equal(torch.cat(seen_x)[:, 0].long(), all_y)
        assert torch.equal(torch.cat(seen_x)[:, 1].long(), -all_y)


def test_reshuffles_every_pass() -> None:
    x, y = _dataset(50)
    batches = BatchIterator(x, y, 10, generator=torch.Generator().manual_seed(0))
    orders = [torch.cat([b for _, b in batches]) for _ in range(3)]
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    assert not torch.equal(orders[0], y)


def test_seeded_generator_is_reproducible() -> None:
    x, y = _dataset(30)
    runs = []
    for _ in range(2):
        batches = BatchIterator(x, y, 7, generator=torch.Generator().manual_seed(5))
        runs.append([torch.cat([b for _, b in batches]) for _ in range(3)])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
    other = BatchIterator(x, y, 7, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(torch.cat([b for _, b in other]), runs[0][0])
    # Without a generator, torch's global one: torch.manual_seed fixes it.
    torch.manual_seed(3)
    first = torch.cat([b for _, b in BatchIterator(x, y, 7)])
    torch.manual_seed(3)
    assert torch.equal(torch.cat([b for _, b in BatchIterator(x, y, 7)]), first)


def test_last_batch_is_smaller() -> None:
    x, y = _dataset(10)
    sizes = [len(b) for _, b in BatchIterator(x, y, 3)]
    assert sizes == [3, 3, 3, 1]


def test_batch_larger_than_the_set_gives_one_batch() -> None:
    x, y = _dataset(10)
    batches = list(BatchIterator(x, y, 64))
    assert len(batches) == 1 and len(BatchIterator(x, y, 64)) == 1
    assert torch.equal(batches[0][1].sort().values, y)


@pytest.mark.parametrize("batch_size", [2**63, 10**23])
def test_a_batch_size_beyond_64_bits_gives_one_batch(batch_size: int) -> None:
    """It failed at the first pass with "Overflow when unpacking long long" (torch.split's),
    a message naming neither BatchIterator nor batch_size; it is a batch size beyond the set
    as any other, one batch of every sample, the same as batch_size=len(x)."""
    x, y = _dataset(10)
    batches = list(BatchIterator(x, y, batch_size, generator=torch.Generator().manual_seed(3)))
    expected = list(BatchIterator(x, y, 10, generator=torch.Generator().manual_seed(3)))
    assert len(batches) == len(expected) == 1 == len(BatchIterator(x, y, batch_size))
    assert torch.equal(batches[0][0], expected[0][0])
    assert torch.equal(batches[0][1], expected[0][1])
    assert not list(BatchIterator(x, y, batch_size, drop_last=True))


@pytest.mark.parametrize(
    ("n", "batch_size"),
    [(10, 10**400), (10, 2**1100), (2**53 + 1, 2**52), (2**60 + 1, 2**58), (2**62 + 3, 2**61)],
)
@pytest.mark.parametrize("drop_last", [False, True])
def test_len_is_the_number_of_batches_a_pass_yields(
    n: int, batch_size: int, drop_last: bool
) -> None:
    """len() was math.ceil(n / batch_size), a float quotient: 0 for 10 samples in batches of
    10**400 (the pass yields one), 2 for 2**53 + 1 samples in batches of 2**52 (it yields 3).
    The oracle is integer arithmetic and the pass itself (the large sets are one sample
    expanded, with no memory behind them)."""
    x = torch.zeros(1, 1).expand(n, 1)
    y = torch.zeros(1, dtype=torch.int64).expand(n)
    batches = BatchIterator(x, y, batch_size, shuffle=False, drop_last=drop_last)
    expected = n // batch_size if drop_last else -(-n // batch_size)
    assert len(batches) == expected == sum(1 for _ in batches)


@pytest.mark.parametrize(
    ("n", "batch_size", "expected"), [(10, 3, [3, 3, 3]), (9, 3, [3, 3, 3]), (2, 3, [])]
)
def test_drop_last(n: int, batch_size: int, expected: list[int]) -> None:
    x, y = _dataset(n)
    batches = BatchIterator(x, y, batch_size, drop_last=True)
    assert [len(b) for _, b in batches] == expected
    for x_batch, y_batch in batches:  # the inputs are cut as the targets, in pairs
        assert torch.equal(x_batch[:, 0].long(), y_batch)
    assert len(batches) == len(expected)
    # The dropped samples differ between passes: every sample is still seen over many passes.
    if expected:
        seen = torch.cat([b for _ in range(30) for _, b in batches]).unique()
        assert torch.equal(seen, y)


def test_no_shuffle_keeps_the_order() -> None:
    x, y = _dataset(10)
    batches = list(BatchIterator(x, y, 4, shuffle=False))
    assert torch.equal(torch.cat([b for _, b in batches]), y)
    assert torch.equal(torch.cat([a for a, _ in batches]), x)


def test_shuffling_does_not_change_the_data() -> None:
    x, y = _dataset(10)
    x_before, y_before = x.clone(), y.clone()
    for _ in BatchIterator(x, y, 3):
        pass
    assert torch.equal(x, x_before) and torch.equal(y, y_before)


@pytest.mark.parametrize("seed", [True, False, 1.0, "1", None])
def test_seed_must_be_an_int(seed: object) -> None:
    """``seed`` must be an int: a bool (an int subclass) is refused like a float, a string or
    None, with a TypeError naming the function, ``seed`` and the value."""
    with pytest.raises(TypeError) as error:
        make_disk_data(seed=seed)  # type: ignore[arg-type]
    assert str(error.value) == f"make_disk_data: seed must be an int, got {seed!r}"


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1, 10**30])
def test_seed_out_of_the_generators_range_is_named(seed: int) -> None:
    """A seed torch's generator cannot take used to fail in torch's own words ("Overflow when
    unpacking long long"), without the function's name or the range."""
    with pytest.raises(ValueError) as error:
        make_disk_data(seed=seed)
    assert str(error.value) == (
        "make_disk_data: seed must be in [-2**63, 2**64 - 1] (torch.Generator.manual_seed's "
        f"range), got {seed!r}"
    )


def test_the_ends_of_the_seed_range_are_taken() -> None:
    """A negative seed s is torch's seed 2**64 + s."""
    top = make_disk_data(5, 1, 1, seed=2**64 - 1)
    assert torch.equal(make_disk_data(5, 1, 1, seed=-1).train.raw, top.train.raw)
    make_disk_data(5, 1, 1, seed=-(2**63))


@pytest.mark.parametrize(
    ("device", "kind", "message"),
    [
        ("nonsense", ValueError, r"^make_disk_data: cannot put tensors on device 'nonsense': "),
        ("hpu", ValueError, r"^make_disk_data: cannot put tensors on device 'hpu': "),
        (1.5, TypeError, r"^make_disk_data: device must be a torch\.device, a device name or "),
        (True, TypeError, r"^make_disk_data: device must be .* got bool$"),
    ],
)
def test_bad_device_is_named(device: object, kind: type[Exception], message: str) -> None:
    with pytest.raises(kind, match=message):
        make_disk_data(seed=0, device=device)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_without_cuda_is_named() -> None:
    with pytest.raises(ValueError, match=r"^make_disk_data: cannot put tensors on device 'cuda'"):
        make_disk_data(seed=0, device="cuda")


@pytest.mark.parametrize(
    ("points", "kind", "message"),
    [
        (torch.rand(3), ValueError, r"must have shape \(N, 2\), got shape \(3,\)"),
        (torch.rand(3, 3), ValueError, r"must have shape \(N, 2\), got shape \(3, 3\)"),
        (torch.rand(2, 3, 2), ValueError, r"must have shape \(N, 2\), got shape \(2, 3, 2\)"),
        (
            torch.ones(3, 2, dtype=torch.int64),
            TypeError,
            r"must be a floating-point .* got a torch\.int64 tensor$",
        ),
        ([[0.5, 0.5]], TypeError, r"must be a floating-point tensor of shape \(N, 2\), got list$"),
    ],
    ids=["1-dim", "3-columns", "3-dim", "integer", "list"],
)
def test_disk_labels_refuses_what_is_not_points(
    points: object, kind: type[Exception], message: str
) -> None:
    """Raw torch broadcasting errors used to come out, without the function's name; integer
    points were silently compared with a centre truncated to (0, 0)."""
    with pytest.raises(kind, match="^disk_labels: points " + message):
        disk_labels(points)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_disk_labels_of_float8_points_are_those_of_their_values(dtype: torch.dtype) -> None:
    """torch has no isfinite of float8: its NotImplementedError came out, without the
    function's name; the points are read in float64 first, as normalize reads them."""
    points = torch.tensor([[0.5, 0.5], [0.0, 0.0], [0.75, 0.25]]).to(dtype)
    assert torch.equal(disk_labels(points), disk_labels(points.to(torch.float64)))
    assert disk_labels(points).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match=r"^disk_labels: points must be finite, got \[nan, "):
        disk_labels(torch.tensor([[math.nan, 0.5]]).to(dtype))


def _split(**fields: object) -> Split:
    base: dict[str, object] = {
        "x": torch.zeros(3, 2),
        "y": torch.zeros(3, dtype=torch.int64),
        "raw": torch.zeros(3, 2, dtype=torch.float64),
    }
    return Split(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "kind", "message"),
    [
        ({"x": 1}, TypeError, r"x must be a floating-point tensor of shape \(N, 2\), got int 1$"),
        (
            {"raw": torch.zeros(3, 2, dtype=torch.int64)},
            TypeError,
            r"raw must be a floating-point tensor .* got a torch\.int64 tensor of shape \(3, 2\)$",
        ),
        ({"x": torch.zeros(3, 3)}, ValueError, r"x must have shape \(N, 2\), got shape \(3, 3\)$"),
        ({"y": "a"}, TypeError, r"y must be an int64 tensor of labels, got str 'a'$"),
        (
            {"y": torch.zeros(3)},
            TypeError,
            r"y must be an int64 tensor of labels, got a torch\.float32",
        ),
        (
            {"y": torch.zeros(4, dtype=torch.int64)},
            ValueError,
            r"x, y and raw must hold as many points.*\(3, 2\), \(4,\)",
        ),
        (
            {"raw": torch.zeros(2, 2)},
            ValueError,
            r"x, y and raw must hold as many points.* and \(2, 2\)$",
        ),
        (
            {"y": torch.zeros(3, dtype=torch.int32)},
            TypeError,
            r"y must be an int64 tensor of labels, got a torch\.int32 tensor of shape \(3,\)$",
        ),
        (
            {"y": torch.zeros(3, dtype=torch.int64, device="meta")},
            ValueError,
            "x, y and raw must be on one device, got cpu, meta and cpu$",
        ),
    ],
)
def test_a_split_built_by_hand_holds_what_make_disk_data_makes(
    fields: dict[str, object], kind: type[Exception], message: str
) -> None:
    """Split and DiskData, public, checked nothing: Split(x=1, y="a", raw=None) was taken and
    failed later in Python's words (len of an int)."""
    with pytest.raises(kind, match="^Split: " + message):
        _split(**fields)
    data = make_disk_data(4, 4, 4)
    assert len(_split()) == 3 and dataclasses.replace(data.train) == data.train
    with pytest.raises(TypeError, match=r"^DiskData: validation must be a Split, got int 1$"):
        dataclasses.replace(data, validation=1)
    with pytest.raises(
        TypeError,
        match=r"^DiskData: std must be a floating-point tensor of shape \(2,\) \(one value per "
        r"coordinate\), got a torch\.float32 tensor of shape \(3,\)$",
    ):
        dataclasses.replace(data, std=torch.ones(3))


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
def test_a_split_refuses_a_nested_tensor_by_name() -> None:
    """Its shape, read by the check, failed in torch's "Internal error" (review)."""
    with pytest.raises(TypeError, match=r"^Split: x must be a dense \(strided\) tensor, got a nes"):
        _split(x=torch.nested.nested_tensor([torch.zeros(2)] * 3))


@pytest.mark.parametrize("argument", ["shuffle", "drop_last"])
@pytest.mark.parametrize("value", ["no", 0, 1, None, 1.0])
def test_batch_iterator_flags_must_be_bools(argument: str, value: object) -> None:
    """``shuffle="no"`` used to shuffle and ``drop_last="no"`` to drop (both are true)."""
    x, y = _dataset(5)
    with pytest.raises(TypeError) as error:
        BatchIterator(x, y, 2, **{argument: value})  # type: ignore[arg-type]
    assert str(error.value) == f"BatchIterator: {argument} must be a bool, got {value!r}"


@pytest.mark.parametrize(
    ("change", "kind", "message"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1, got 0"),
        ({"batch_size": 2.0}, TypeError, "batch_size must be an integer >= 1, got 2.0"),
        ({"batch_size": True}, TypeError, "batch_size must be an integer >= 1, got True"),
        ({"generator": 0}, TypeError, "generator must be a torch.Generator or None, got int"),
        ({"x": [1.0, 2.0]}, TypeError, "x must be a torch.Tensor, got list"),
        ({"y": torch.arange(4)}, ValueError, "x and y must hold as many samples, got 5 and 4"),
        ({"x": torch.zeros(0, 2)}, ValueError, "x must hold at least one sample, got shape (0, 2)"),
    ],
)
def test_batch_iterator_names_its_other_bad_arguments(
    change: dict[str, object], kind: type[Exception], message: str
) -> None:
    x, y = _dataset(5)
    arguments: dict[str, object] = {"x": x, "y": y, "batch_size": 2, **change}
    with pytest.raises(kind) as error:
        BatchIterator(**arguments)  # type: ignore[arg-type]
    assert str(error.value) == "BatchIterator: " + message


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize(
    ("resized", "rows", "message"),
    [
        ("x", 3, "x and y must hold as many samples, got 3 and 5"),
        ("y", 3, "x and y must hold as many samples, got 5 and 3"),
        ("x", 0, r"x must hold at least one sample, got shape \(0, 2\)"),
    ],
)
def test_a_set_resized_in_place_between_passes_is_refused_at_the_next(
    shuffle: bool, resized: str, rows: int, message: str
) -> None:
    """x or y resized in place after the iterator was made: a shuffled pass gave batches of
    3 inputs with 3 of the 5 targets (or failed in index_select), an ordered one failed with
    torch's "split_with_sizes expects split_sizes to sum exactly to ..."; an emptied set gave
    no batch. The next pass refuses it as the constructor would have."""
    x, y = torch.zeros(5, 2), torch.arange(5)
    batches = BatchIterator(x, y, 2, shuffle=shuffle)
    assert sum(len(b) for _, b in batches) == 5
    tensor = x if resized == "x" else y
    tensor.resize_(rows, *tensor.shape[1:])
    with pytest.raises(ValueError, match=rf"^BatchIterator: {message}$"):
        next(iter(batches))


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
@pytest.mark.parametrize("layout", ["sparse_coo", "sparse_csr", "nested"])
@pytest.mark.parametrize("sparse", ["x", "y"])
def test_batch_iterator_refuses_sparse_data_when_made(layout: str, sparse: str) -> None:
    """A sparse x or y was taken, then the first pass failed in torch's words ("Could not run
    'aten::as_strided' with arguments from the 'SparseCPU' backend", "Sparse CSR tensors do
    not have strides"): the batches are slices, which torch does not make of one. A nested
    one failed in its words too ("Internal error: NestedTensorImpl doesn't support sizes")."""
    x, y = torch.zeros(6, 2), torch.zeros(6, 1)
    data = {"x": x, "y": y}
    if layout == "nested":
        data[sparse] = torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)])
    else:
        data[sparse] = x.to_sparse() if layout == "sparse_coo" else x.to_sparse_csr()
    with pytest.raises(
        TypeError,
        match=rf"^BatchIterator: {sparse} must be a dense \(strided\) tensor, got a {layout} "
        "tensor$",
    ):
        BatchIterator(data["x"], data["y"], 2)


def test_batch_iterator_data_are_read_only_and_its_generator_is_checked_when_set_again() -> None:
    """``x``, ``y`` and ``generator`` used to take any value, which failed at the next pass with
    a raw torch error (or, for an ``x`` of another length, gave batches of mismatched pairs)."""
    x, y = _dataset(5)
    generator = torch.Generator().manual_seed(1)
    batches = BatchIterator(x, y, 2, generator=generator)
    for name, value in (("x", torch.zeros(4, 2)), ("y", [0, 1, 0, 1, 0])):
        with pytest.raises(AttributeError):
            setattr(batches, name, value)
    for value, kind, message in (
        (0, TypeError, "generator must be a torch.Generator or None, got int"),
        (
            CudaLikeGenerator(),
            ValueError,
            "generator must be a CPU torch.Generator (the shuffles are drawn on the CPU, then "
            "moved to the data's device), got a generator on cuda:0",
        ),
    ):
        with pytest.raises(kind) as error:
            batches.generator = value  # type: ignore[assignment]
        assert str(error.value) == "BatchIterator: " + message
    assert batches.x is x and batches.y is y and batches.generator is generator
    other = torch.Generator().manual_seed(2)
    batches.generator = other
    assert batches.generator is other
    assert [int(i) for _, yb in batches for i in yb] == torch.randperm(
        5, generator=torch.Generator().manual_seed(2)
    ).tolist()
    batches.generator = None
    assert batches.generator is None and len(list(batches)) == 3


def test_batch_iterator_refuses_a_generator_that_is_not_on_the_cpu() -> None:
    """A CUDA generator used to be taken, and to fail at the first pass (randperm draws on the
    CPU)."""
    x, y = _dataset(5)
    with pytest.raises(ValueError, match=r"^BatchIterator: generator must be a CPU .* on cuda:0$"):
        BatchIterator(x, y, 2, generator=CudaLikeGenerator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_iterator_refuses_a_cuda_generator() -> None:
    x, y = _dataset(5)
    with pytest.raises(ValueError, match=r"^BatchIterator: generator must be a CPU .* on cuda"):
        BatchIterator(x, y, 2, generator=torch.Generator(device="cuda"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_normalize_gives_the_stored_inputs_in_every_dtype(dtype: torch.dtype) -> None:
    """In bfloat16 it used to compute with the statistics rounded to bfloat16 (up to 0.0088 from
    the stored inputs)."""
    data = make_disk_data(300, 200, 200, seed=4, dtype=dtype)
    for split in (data.train, data.validation, data.test):
        normalized = data.normalize(split.raw)
        assert normalized.dtype == dtype
        assert torch.equal(normalized, split.x)
        # Points of another floating dtype are normalised alike.
        assert torch.equal(
            data.normalize(split.raw.float()), data.normalize(split.raw.float().double())
        )


@pytest.mark.parametrize(
    ("points", "kind", "message"),
    [
        ([[0.5, 0.5]], TypeError, "must be a floating-point tensor of shape (N, 2), got list"),
        (
            torch.zeros(3, 2, dtype=torch.int64),
            TypeError,
            "must be a floating-point tensor of shape (N, 2), got a torch.int64 tensor",
        ),
        (torch.zeros(3), ValueError, "must have shape (N, 2), got shape (3,)"),
        (torch.zeros(3, 3), ValueError, "must have shape (N, 2), got shape (3, 3)"),
    ],
    ids=["list", "integer", "1-dim", "3-columns"],
)
def test_normalize_refuses_what_is_not_points(
    points: object, kind: type[Exception], message: str
) -> None:
    """A list used to give an AttributeError."""
    data = make_disk_data(20, 5, 5, seed=0)
    with pytest.raises(kind) as error:
        data.normalize(points)  # type: ignore[arg-type]
    assert str(error.value) == "DiskData.normalize: points " + message


def test_an_iterator_pickled_with_plain_attributes_still_iterates() -> None:
    """x, y and generator were plain attributes (they are checked properties now): an iterator
    pickled then lost them on loading; setting x or y says why it cannot be done."""
    x, y = torch.arange(10.0).reshape(10, 1), torch.arange(10)
    fresh = BatchIterator(x, y, 4, generator=torch.Generator().manual_seed(3))
    old = BatchIterator.__new__(BatchIterator)
    old.__setstate__(
        {
            "x": x,
            "y": y,
            "generator": torch.Generator().manual_seed(3),
            "_batch_size": 4,
            "_shuffle": True,
            "_drop_last": False,
        }
    )
    assert [b.tolist() for _, b in old] == [b.tolist() for _, b in fresh]
    with pytest.raises(AttributeError, match=r"^BatchIterator: x is read-only .* make a new"):
        fresh.x = x
    with pytest.raises(AttributeError, match=r"^BatchIterator: y is read-only"):
        fresh.y = y


def test_make_disk_data_refuses_the_meta_device() -> None:
    """Taken, it gave a data set without values: normalize and == failed in torch's words."""
    with pytest.raises(
        ValueError, match=r"^make_disk_data: cannot put tensors on device 'meta': a meta tensor"
    ):
        make_disk_data(device="meta")


def test_batch_iterator_names_the_class_of_a_generator_of_another_library() -> None:
    """``got Generator`` read as if a generator had been refused for being one."""
    import numpy as np

    with pytest.raises(
        TypeError,
        match=r"^BatchIterator: generator must be a torch\.Generator or None, got "
        r"numpy\.random\._generator\.Generator$",
    ):
        BatchIterator(torch.zeros(4, 2), torch.zeros(4), 2, generator=np.random.default_rng())
