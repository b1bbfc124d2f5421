"""Data behaviour that a second mutation audit of ``minidl.data`` found untested: each test here
fails on a small change to the source (named in its docstring) that the rest of the suite let
through. The CUDA test runs only where CUDA is (no GPU was lent when it was written)."""

from __future__ import annotations

import copy
import dataclasses
from unittest import mock

import pytest
import torch

from minidl.data import BatchIterator, Split, disk_labels, make_disk_data, short_last_batch

F64 = torch.float64


def test_disk_labels_refuses_points_of_one_column() -> None:
    """Points of one column were broadcast against the centre's two coordinates into labels
    (with the shape checked as ``shape[1] > 2``); they are refused by name."""
    with pytest.raises(
        ValueError, match=r"^disk_labels: points must have shape \(N, 2\), got shape \(3, 1\)$"
    ):
        disk_labels(torch.rand(3, 1))


def _split(**fields: object) -> Split:
    base: dict[str, object] = {
        "x": torch.zeros(3, 2),
        "y": torch.zeros(3, dtype=torch.int64),
        "raw": torch.zeros(3, 2, dtype=F64),
    }
    return Split(**{**base, **fields})  # type: ignore[arg-type]


def test_a_split_refuses_sparse_labels_and_raw_points_on_another_device() -> None:
    """A sparse ``y`` was taken (its density was not checked), and so was ``raw`` on another
    device than ``x`` and ``y`` (the device check compared ``x`` and ``y`` alone)."""
    with pytest.raises(
        TypeError, match=r"^Split: y must be a dense \(strided\) tensor, got a sparse_coo tensor$"
    ):
        _split(y=torch.zeros(3, dtype=torch.int64).to_sparse())
    with pytest.raises(
        ValueError, match=r"^Split: x, y and raw must be on one device, got cpu, cpu and meta$"
    ):
        _split(raw=torch.zeros(3, 2, dtype=F64, device="meta"))


def test_splits_and_data_sets_differ_where_any_of_their_tensors_does() -> None:
    """Equal is every tensor equal, as documented: splits that differ in ``y`` alone or in
    ``raw`` alone, and data sets that differ in their validation set, test set or ``std`` alone,
    are unequal (each was left out of the comparison by a mutant, which called them equal)."""
    data = make_disk_data(6, 4, 4, seed=0)
    split = data.train
    assert dataclasses.replace(split) == split
    assert dataclasses.replace(split, y=1 - split.y) != split
    assert dataclasses.replace(split, raw=split.raw + 0.25) != split
    assert dataclasses.replace(data) == data
    assert dataclasses.replace(data, validation=data.test, test=data.validation) != data
    assert dataclasses.replace(data, test=data.validation) != data
    assert dataclasses.replace(data, validation=data.test) != data
    assert dataclasses.replace(data, std=data.std * 2) != data
    assert dataclasses.replace(data, mean=data.mean + 1) != data


def test_comparing_with_another_type_leaves_the_answer_to_it() -> None:
    """``==`` with an object of another type returns ``NotImplemented``, so Python asks the
    other object: ``mock.ANY`` equals a split and a data set (``assert_called_with(data=ANY)``
    relies on it); returning False made them unequal."""
    data = make_disk_data(4, 2, 2, seed=0)
    assert data.train == mock.ANY and data == mock.ANY
    assert data.train.__eq__(1) is NotImplemented and data.__eq__(1) is NotImplemented


def test_a_data_set_refuses_a_test_set_that_is_no_split_and_integer_statistics() -> None:
    """Each set is checked, the test set too (unchecked, it failed with an AttributeError at
    ``test.x``), and an integer ``mean`` is refused as not floating point (without that check,
    it was refused as of another dtype than the points, a ValueError)."""
    data = make_disk_data(4, 2, 2, seed=0)
    with pytest.raises(TypeError, match=r"^DiskData: test must be a Split, got int 1$"):
        dataclasses.replace(data, test=1)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"^DiskData: mean must be a floating-point tensor of shape \(2,\) \(one value per "
        r"coordinate\), got a torch\.int64 tensor of shape \(2,\)$",
    ):
        dataclasses.replace(data, mean=torch.zeros(2, dtype=torch.int64))


def test_splits_and_data_sets_are_frozen() -> None:
    """Their hash is that of their fields: a field set again would change it (a split lost in
    a set); the dataclasses are frozen, setting a field raises ``FrozenInstanceError``."""
    data = make_disk_data(4, 2, 2, seed=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.train.x = data.train.x.clone()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.mean = data.mean.clone()  # type: ignore[misc]


def test_normalize_refuses_points_of_one_column() -> None:
    """Points of one column were broadcast against the two statistics into (N, 2) inputs (with
    the shape checked as ``shape[1] > 2``); they are refused by name."""
    data = make_disk_data(4, 2, 2, seed=0)
    with pytest.raises(
        ValueError,
        match=r"^DiskData\.normalize: points must have shape \(N, 2\), got shape \(3, 1\)$",
    ):
        data.normalize(torch.rand(3, 1))


def test_a_set_too_large_for_memory_is_refused_by_name_with_every_size() -> None:
    """2**59 - 1 points, the most a set may have, pass the size check (at 2**59 - 1 they were
    refused as past the limit with ``>=``) and torch's allocator fails: the failure is refused
    in the function's name, with the three sizes and the allocator's reason, not torch's
    RuntimeError (which it was with only MemoryError caught), and without torch's error
    chained to it."""
    with pytest.raises(
        ValueError,
        match=r"^make_disk_data: cannot hold 576460752303423487 \+ 1 \+ 1 samples \(\S",
    ) as error:
        make_disk_data(2**59 - 1, 1, 1)
    assert error.value.__cause__ is None and error.value.__suppress_context__


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_index_without_an_accelerator_is_refused_as_a_device() -> None:
    """An int is a device index (torch's ``torch.device(0)``): without an accelerator it is
    refused as a device that holds no tensors here, a ValueError naming it, not as a value of
    the wrong type."""
    with pytest.raises(ValueError, match=r"^make_disk_data: cannot put tensors on device 0: \S"):
        make_disk_data(4, 2, 2, device=0)  # type: ignore[arg-type]


def test_a_device_index_past_64_bits_is_refused_by_name() -> None:
    """torch's ``torch.device(2**70)`` raises a ValueError ("Overflow when unpacking long
    long") of its own: it is refused in the function's name, naming the device (with only
    RuntimeError caught, torch's message came out)."""
    with pytest.raises(
        ValueError,
        match=r"^make_disk_data: cannot put tensors on device 1180591620717411303424: Overflow",
    ):
        make_disk_data(4, 2, 2, device=2**70)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("samples", "batch_size", "shares", "drop_last", "expected"),
    [
        (10, 4, 4, False, 2),  # a last batch of 2 for 4 shares
        (10, 4, 2, False, 0),  # a last batch of 2 for 2 shares: one sample each
        (10, 4, 4, True, 0),  # dropped
        (3, 3, 4, False, 3),  # one batch, the whole set, of 3 for 4 shares
        (3, 8, 4, False, 3),  # one batch of 3, a batch size past the set
        (8, 4, 4, False, 0),  # every batch full
    ],
)
def test_short_last_batch_is_the_last_batch_when_smaller_than_the_shares(
    samples: int, batch_size: int, shares: int, drop_last: bool, expected: int
) -> None:
    """The documented size of a last batch holding fewer samples than the shares, else 0 (the
    oracle: the sizes of the last batch a BatchIterator yields). A mutant took a last batch of
    as many samples as shares for too small (``<=``), ignored ``drop_last``, or took a set of
    exactly one batch for a last batch of 0 samples."""
    batches = BatchIterator(
        torch.zeros(samples, 1), torch.zeros(samples), batch_size, drop_last=drop_last
    )
    sizes = [len(b) for _, b in batches]
    last = sizes[-1] if sizes else 0
    assert expected == (last if last < shares else 0)
    assert short_last_batch(samples, batch_size, shares, drop_last) == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_data_sets_compare_normalise_and_shuffle_there() -> None:
    """(Not run without CUDA.) A CUDA data set compares unequal to the same one on the CPU
    (not torch's error of two devices), normalises CPU points onto its own device, and its
    iterator moves the CPU-drawn order to the data's device before gathering."""
    cpu = make_disk_data(6, 2, 2, seed=0)
    cuda = make_disk_data(6, 2, 2, seed=0, device="cuda")
    assert cuda != cpu and cuda.train != cpu.train
    normalized = cuda.normalize(cpu.train.raw)
    assert normalized.device == cuda.mean.device and torch.equal(normalized, cuda.train.x)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    batches = BatchIterator(
        cuda.train.x, cuda.train.y, 6, generator=torch.Generator().manual_seed(1)
    )
    ((x_batch, y_batch),) = list(batches)
    assert torch.equal(x_batch.cpu(), cpu.train.x[order])
    assert torch.equal(y_batch.cpu(), cpu.train.y[order])


# -- a third pass of mutation testing over data.py (2026-12-07) ----------------------------------


def test_a_data_set_holding_a_nan_is_unequal_to_one_sharing_its_splits() -> None:
    """NaN equals nothing, as in ``torch.equal``, also where two data sets hold the very same
    split object: equality is by value, not by identity. (With ``a is not b and a != b`` for the
    non-tensor fields, a data set sharing its NaN split with another was equal to it.)"""
    data = copy.deepcopy(make_disk_data(4, 2, 2, seed=0))
    data.train.x[0, 0] = float("nan")
    shared = dataclasses.replace(data)  # the same Split objects
    assert shared.train is data.train
    assert data.train != data.train  # (torch.equal's NaN, through Split.__eq__)
    assert shared != data
    # A data set without a NaN is equal to one sharing its splits.
    clean = make_disk_data(4, 2, 2, seed=0)
    assert dataclasses.replace(clean) == clean


def test_a_split_refuses_sparse_raw_points_by_name() -> None:
    """``raw`` is checked dense as ``x`` is, and named: a sparse ``raw`` was taken (with the
    density check reading ``x`` for both points) and failed later in torch's words."""
    raw = torch.zeros(3, 2, dtype=F64).to_sparse()
    with pytest.raises(
        TypeError, match=r"^Split: raw must be a dense \(strided\) tensor, got a sparse_coo tensor$"
    ):
        _split(raw=raw)


def test_a_split_refuses_a_label_that_is_no_vector_by_its_shape() -> None:
    """A 0-dim ``y`` (one label, not a vector of them) is refused as not of shape (N,), naming
    its shape, not as sets of unequal lengths (with ``y.dim() > 1`` for ``!= 1``)."""
    with pytest.raises(
        ValueError,
        match=r"^Split: y must hold one label per point, of shape \(N,\), got shape \(\)$",
    ):
        Split(torch.zeros(1, 2), torch.tensor(0), torch.zeros(1, 2, dtype=F64))


@pytest.mark.parametrize("name", ["train", "validation", "test"])
def test_a_data_set_refuses_a_set_that_is_none(name: str) -> None:
    """Each of the three sets is checked, the training set too, and None is no Split: a
    ``train=None`` (when the loop checked the validation and test sets only), or any set None
    (when None was let through as "no set"), failed with an AttributeError at ``.x``."""
    data = make_disk_data(4, 2, 2, seed=0)
    with pytest.raises(TypeError, match=rf"^DiskData: {name} must be a Split, got NoneType None$"):
        dataclasses.replace(data, **{name: None})


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_normalize_reads_float8_points_in_float64(dtype: torch.dtype) -> None:
    """Points are read in float64 before the statistics are subtracted, as documented: float8
    points (floating point, so taken) give the normalised float64 copies of their values. (Moved
    to the CPU without the cast to float64, they failed in torch's "Promotion for Float8 Types
    is not supported".)"""
    data = make_disk_data(10, 3, 3, seed=0)
    points = torch.tensor([[0.5, 0.25], [0.75, 1.0], [0.0, 0.125]]).to(dtype)
    normalized = data.normalize(points)
    assert normalized.dtype == data.mean.dtype
    assert torch.equal(normalized, data.normalize(points.to(F64)))
    raw = data.train.raw
    oracle = ((points.to(F64) - raw.mean(dim=0)) / raw.std(dim=0)).to(data.mean.dtype)
    assert torch.equal(normalized, oracle)


def test_the_defaults_are_the_papers_sets_of_1000_from_seed_0() -> None:
    """``make_disk_data()`` is the documented defaults: sets of 1000 points from seed 0, in
    float32 on the CPU; the oracle is the seeded generator's own float64 draws. (With another
    default seed, the data set of no arguments was another draw.)"""
    data = make_disk_data()
    assert data == make_disk_data(1000, 1000, 1000, seed=0, dtype=torch.float32, device=None)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(data.train.raw, torch.rand(1000, 2, dtype=F64, generator=generator))
    assert data != make_disk_data(seed=1)
    assert data.train.x.dtype == torch.float32 and data.train.x.device == torch.device("cpu")


def test_batch_iterator_checks_its_arguments_in_the_documented_order() -> None:
    """Of several bad arguments the first refused is ``batch_size``, then ``generator``, then
    ``shuffle``, then ``drop_last`` (the constructor's order, also the setters'). (With the
    setters run in the reverse order, a bad ``drop_last`` was named before a bad
    ``batch_size``.)"""
    x, y = torch.zeros(4, 2), torch.zeros(4)
    with pytest.raises(ValueError, match=r"^BatchIterator: batch_size must be an integer >= 1"):
        BatchIterator(x, y, 0, generator=1, shuffle="no", drop_last="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^BatchIterator: generator must be a torch\.Generator"):
        BatchIterator(x, y, 2, generator=1, shuffle="no", drop_last="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^BatchIterator: shuffle must be a bool, got 'no'$"):
        BatchIterator(x, y, 2, shuffle="no", drop_last="no")  # type: ignore[arg-type]


def test_a_subclass_names_itself_when_its_data_are_set() -> None:
    """The read-only refusal names the iterator's own class, so a subclass's names the subclass
    and the constructor to call (with the class name written in, it named BatchIterator)."""

    class Batches(BatchIterator):
        pass

    x, y = torch.zeros(4, 2), torch.zeros(4)
    batches = Batches(x, y, 2)
    with pytest.raises(
        AttributeError,
        match=r"^Batches: y is read-only \(x and y are checked as a pair, of one length and "
        r"device\); make a new Batches\(x, y, \.\.\.\) for other data$",
    ):
        batches.y = y
    assert batches.y is y and batches.x is x


def test_an_iterator_loaded_from_plain_attributes_keeps_later_settings_when_pickled_again() -> None:
    """Loading renames the plain attributes of an old pickle (``batch_size``, ...) rather than
    copying them: left in the instance's dictionary beside the new ones, a stale ``batch_size``
    came back over the one set since at the next pickling round trip (4 where 3 was set)."""
    import pickle

    x, y = torch.arange(10.0).reshape(10, 1), torch.arange(10)
    old = BatchIterator.__new__(BatchIterator)
    old.__setstate__(
        {"x": x, "y": y, "batch_size": 4, "shuffle": False, "generator": None, "drop_last": True}
    )
    assert sorted(vars(old)) == ["_batch_size", "_drop_last", "_generator", "_shuffle", "_x", "_y"]
    old.batch_size, old.drop_last = 3, False
    again = pickle.loads(pickle.dumps(old))
    assert (again.batch_size, again.drop_last, again.shuffle) == (3, False, False)
    assert [b.tolist() for _, b in again] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


class _TaggedBatches(BatchIterator):
    """A subclass with an attribute of its own (module-level, to be pickled)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, tag: str) -> None:
        super().__init__(x, y, batch_size, shuffle=False)
        self.tag = tag


def test_unpickling_keeps_every_attribute_of_a_subclass() -> None:
    """Loading restores the whole state, not only the iterator's own underscored attributes: a
    subclass's attribute (``tag``) came back missing (an AttributeError) when the state was
    filtered to names starting with ``_``."""
    import pickle

    x, y = torch.arange(5.0).reshape(5, 1), torch.arange(5)
    again = pickle.loads(pickle.dumps(_TaggedBatches(x, y, 2, "run-1")))
    assert again.tag == "run-1" and again.batch_size == 2 and not again.shuffle
    assert [b.tolist() for _, b in again] == [[0, 1], [2, 3], [4]]
