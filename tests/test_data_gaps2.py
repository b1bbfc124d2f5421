"""Data behaviour that a fourth mutation audit of ``minidl.data`` found untested: each test
fails on a small change to the source (named in its docstring) that the rest of the suite let
through; and a bug it found (fixed): DiskData took a sparse or nested mean or std."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

import minidl.data
from minidl.data import BatchIterator, DiskData, Split, make_disk_data

F64 = torch.float64


def _batches(batches: BatchIterator) -> list[list[int]]:
    return [b.tolist() for _, b in batches]


@pytest.mark.parametrize(
    ("name", "bad", "kind", "message"),
    [
        ("batch_size", 0, ValueError, r"batch_size must be an integer >= 1, got 0$"),
        ("batch_size", 2.5, TypeError, r"batch_size must be an integer >= 1, got 2\.5$"),
        ("shuffle", "no", TypeError, r"shuffle must be a bool, got 'no'$"),
        ("drop_last", 1, TypeError, r"drop_last must be a bool, got 1$"),
        ("generator", 0, TypeError, r"generator must be a torch\.Generator or None, got int$"),
    ],
)
def test_a_refused_setting_leaves_the_iterator_as_it_was(
    name: str, bad: object, kind: type[Exception], message: str
) -> None:
    """A value refused by a setter between passes is not kept: the setting read back is the
    one before, and the next pass is the one it would have been (the oracle: an iterator that
    was never given the bad value). (With the value stored before it was checked, a refused
    ``batch_size=0`` stayed, and the next pass failed in torch's words; a refused
    ``shuffle="no"`` or ``drop_last=1`` stayed as a truthy non-bool.)"""
    x, y = torch.arange(10.0).reshape(10, 1), torch.arange(10)
    generator = torch.Generator().manual_seed(4)
    batches = BatchIterator(x, y, 3, shuffle=False, generator=generator, drop_last=False)
    before = getattr(batches, name)
    with pytest.raises(kind, match=rf"^BatchIterator: {message}"):
        setattr(batches, name, bad)
    after = getattr(batches, name)
    assert after is before or (type(after) is type(before) and after == before)
    assert len(batches) == 4
    assert _batches(batches) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_a_numpy_batch_size_is_kept_as_an_int() -> None:
    """``batch_size`` is read back as the Python ``int`` checked (a NumPy integer is taken as
    one, as the sizes of make_disk_data are): the setter stores what ``check_int`` returns.
    (Storing the value given, ``batch_size`` was an ``np.int64`` and ``len()`` computed in
    NumPy's integers.)"""
    x, y = torch.arange(10.0).reshape(10, 1), torch.arange(10)
    batches = BatchIterator(x, y, np.int64(4), shuffle=False)
    assert type(batches.batch_size) is int and batches.batch_size == 4
    batches.batch_size = np.int32(3)
    assert type(batches.batch_size) is int and batches.batch_size == 3
    assert _batches(batches) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


@pytest.mark.parametrize("drop_last", [False, True])
def test_unshuffled_batches_are_views_of_the_data_set(drop_last: bool) -> None:
    """As documented, with ``shuffle=False`` nothing is copied: each batch is a view of ``x``
    and ``y`` (as slicing them gives), and writing into one writes into the data set, with
    ``drop_last`` too. (With the cut of ``drop_last`` or the split made of copies, the writes
    were lost.)"""
    x, y = torch.arange(10.0).reshape(5, 2), torch.arange(5)
    batches = BatchIterator(x, y, 2, shuffle=False, drop_last=drop_last)
    pairs = list(batches)
    assert len(pairs) == (2 if drop_last else 3)
    for index, (x_batch, y_batch) in enumerate(pairs):
        assert x_batch.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
        assert y_batch.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()
        assert torch.equal(x_batch, x[2 * index : 2 * index + 2])
        x_batch.fill_(-1.0)
        y_batch.fill_(-1)
    written = 4 if drop_last else 5
    assert torch.equal(x[:written], torch.full((written, 2), -1.0))
    assert torch.equal(y[:written], torch.full((written,), -1))
    if drop_last:  # (the dropped sample is not written)
        assert x[4].tolist() == [8.0, 9.0] and int(y[4]) == 4


def test_shuffled_batches_are_views_of_one_copy_that_leaves_the_data_set_alone() -> None:
    """With ``shuffle=True`` a pass gathers one shuffled copy and its batches are views of it:
    writing into a batch changes neither ``x`` nor ``y``, nor the other batches of the pass."""
    x, y = torch.arange(10.0).reshape(5, 2), torch.arange(5)
    x_before, y_before = x.clone(), y.clone()
    pairs = list(BatchIterator(x, y, 2, generator=torch.Generator().manual_seed(0)))
    storages = {b.untyped_storage().data_ptr() for b, _ in pairs}
    assert len(storages) == 1 and x.untyped_storage().data_ptr() not in storages
    pairs[0][0].fill_(-1.0)
    pairs[0][1].fill_(-1)
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert all((b >= 0).all() for _, b in pairs[1:])


@pytest.mark.parametrize(
    ("replaced", "shown"),
    [("test", "test.x float64 on cpu"), ("train", "train.x float64 on cpu")],
)
def test_a_data_set_refuses_a_set_whose_points_are_of_another_dtype(
    replaced: str, shown: str
) -> None:
    """Every set's points are compared with the statistics, the test set's and the training
    set's too: a test set (or training set) of float64 points beside float32 statistics is
    refused, naming it (with the test set's entry reading the validation set's points, or the
    training set's the test set's, it was taken and normalize(test.raw) was not test.x)."""
    data = make_disk_data(4, 2, 3, seed=0)
    split = getattr(data, replaced)
    cast = dataclasses.replace(split, x=split.x.to(F64))
    with pytest.raises(
        ValueError,
        match=r"^DiskData: the sets' points, mean and std must be of one dtype on one device .*"
        + shown.replace(".", r"\."),
    ):
        dataclasses.replace(data, **{replaced: cast})


def test_a_data_set_refuses_a_std_of_another_dtype_than_its_mean() -> None:
    """``std`` is compared with the rest, not read as ``mean`` a second time: a float64 ``std``
    beside float32 points and mean is refused, naming it (the mutant compared ``mean`` twice
    and took it)."""
    data = make_disk_data(4, 2, 2, seed=0)
    with pytest.raises(
        ValueError,
        match=r"^DiskData: the sets' points, mean and std must be of one dtype .* mean float32 "
        r"on cpu, std float64 on cpu$",
    ):
        dataclasses.replace(data, std=data.std.to(F64))


def test_normalize_uses_float64_statistics_of_raw_points_given_in_float32() -> None:
    """``normalize`` computes with the float64 mean and sample standard deviation of
    ``train.raw``, as documented, whatever ``raw``'s dtype: a data set built by hand with
    float32 raw points normalises as the float64 oracle does (computed in float32, the
    statistics differed in the last bits, and so did the result)."""
    generator = torch.Generator().manual_seed(0)
    raw64 = torch.rand(50, 2, dtype=F64, generator=generator)
    raw32 = raw64.float()
    oracle_mean, oracle_std = raw32.double().mean(dim=0), raw32.double().std(dim=0)
    x = ((raw32.double() - oracle_mean) / oracle_std).to(F64)
    y = minidl.data.disk_labels(raw32)
    train = Split(x=x, y=y, raw=raw32)
    data = DiskData(train, train, train, oracle_mean, oracle_std)
    points = torch.rand(20, 2, dtype=F64, generator=generator)
    expected = (points - oracle_mean) / oracle_std
    assert torch.equal(data.normalize(points), expected)
    # (the float32 statistics are another number: the test can tell them apart)
    assert not torch.equal(raw32.mean(dim=0).double(), oracle_mean) or not torch.equal(
        raw32.std(dim=0).double(), oracle_std
    )


def test_python_memory_error_while_making_the_sets_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``MemoryError`` (Python's, from an allocation outside torch's allocator) while the sets
    are made is refused as torch's is: a ValueError naming the function, the three sizes and
    Python's words, without the error chained (with only RuntimeError caught, the bare
    MemoryError came out)."""

    def refused(*args: object, **kwargs: object) -> None:
        raise MemoryError("no room")

    monkeypatch.setattr(minidl.data, "_normalized", refused)
    with pytest.raises(ValueError) as info:
        make_disk_data(10, 3, 4)
    assert str(info.value) == "make_disk_data: cannot hold 10 + 3 + 4 samples (MemoryError no room)"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_make_disk_data_takes_a_torch_device_and_names_the_type_of_what_is_no_device() -> None:
    """``device`` may be a ``torch.device`` (the documented first kind): ``torch.device("cpu")``
    gives the data set of ``device=None`` (refused as no device name with ``torch.device`` left
    out of the types taken); what is no device is named by its type."""
    data = make_disk_data(4, 2, 2, seed=1, device=torch.device("cpu"))
    assert data == make_disk_data(4, 2, 2, seed=1)
    assert data.train.x.device == torch.device("cpu")
    with pytest.raises(
        TypeError,
        match=r"^make_disk_data: device must be a torch\.device, a device name or None, got "
        r"list$",
    ):
        make_disk_data(4, 2, 2, device=["cpu"])  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
@pytest.mark.parametrize("name", ["mean", "std"])
@pytest.mark.parametrize("layout", ["sparse_coo", "nested"])
def test_a_data_set_refuses_sparse_or_nested_statistics_by_name(name: str, layout: str) -> None:
    """DiskData refuses a sparse or nested mean or std in Split's (check_strided's) words.
    (Fixed: a nested one failed with torch's "Internal error: NestedTensorImpl doesn't support
    sizes", and a sparse one of shape (2,) was taken, after which == failed in torch's words.)"""
    data = make_disk_data(4, 2, 2, seed=0)
    dense = getattr(data, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = dense.to_sparse() if layout == "sparse_coo" else torch.nested.nested_tensor([dense])
    with pytest.raises(
        TypeError, match=rf"^DiskData: {name} must be a dense \(strided\) tensor, got a {layout}"
    ):
        dataclasses.replace(data, **{name: bad})
