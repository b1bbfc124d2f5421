"""Data behaviour that a mutation audit of ``minidl.data`` found no test for: each test here
fails on a small change to the source (named in its docstring) that the rest of the suite let
through."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from minidl.data import DISK_RADIUS, Split, disk_labels, make_disk_data

F64 = torch.float64


def test_a_point_on_the_circle_is_outside_the_disk() -> None:
    """The label is 1 strictly inside the disk: a float64 point whose squared distance to the
    centre is exactly the squared radius is labelled 0. (With ``<=`` for ``<`` it was 1.)"""
    point = torch.tensor([[0.25162207700913486, 0.8121912081763982]], dtype=F64)
    squared = (point - torch.tensor([0.5, 0.5], dtype=F64)).square().sum(dim=1)
    assert squared.item() == DISK_RADIUS**2  # (on the circle, to the last bit)
    assert disk_labels(point).tolist() == [0]
    # Its neighbours one ulp closer to the centre and one farther are 1 and 0.
    inside = point.clone()
    inside[0, 1] = math.nextafter(inside[0, 1].item(), 0.5)
    outside = point.clone()
    outside[0, 1] = math.nextafter(outside[0, 1].item(), 1.0)
    assert disk_labels(torch.cat([inside, outside])).tolist() == [1, 0]


def test_a_training_set_of_one_sample_is_refused() -> None:
    """The training set's sample standard deviation needs 2 points: ``n_train=1`` is refused
    by name (the other sets may hold 1). (Without the bound of 2, one point gave a NaN
    standard deviation and every normalised input NaN.)"""
    with pytest.raises(
        ValueError, match=r"^make_disk_data: n_train must be an integer >= 2, got 1$"
    ):
        make_disk_data(1, 1, 1)
    data = make_disk_data(2, 1, 1)
    assert torch.isfinite(data.train.x).all() and len(data.validation) == len(data.test) == 1


def test_splits_and_data_sets_of_other_dtypes_but_equal_values_differ() -> None:
    """Equality asks for the same dtypes, as documented, not only equal values: inputs cast
    exactly to float64 make another split (``torch.equal`` alone calls
    them equal). (Without the dtype in the comparison, such splits and data sets were equal.)
    Labels are int64 alone: a Split refuses others."""
    data = make_disk_data(4, 2, 2)
    split = data.train
    other = dataclasses.replace(split, x=split.x.to(F64))
    assert torch.equal(other.x, split.x) and torch.equal(other.y, split.y)
    assert other != split

    def cast(part: Split) -> Split:
        return dataclasses.replace(part, x=part.x.to(F64))

    cast_data = dataclasses.replace(
        data,
        train=other,
        validation=cast(data.validation),
        test=cast(data.test),
        mean=data.mean.to(F64),
        std=data.std.to(F64),
    )
    assert cast_data != data
    # (a data set of points and statistics of two dtypes is refused: normalize(split.raw)
    # would not be split.x)
    with pytest.raises(ValueError, match=r"^DiskData: the sets' points, mean and std must be"):
        dataclasses.replace(data, mean=data.mean.to(F64))


@pytest.mark.parametrize("name", ["n_train", "n_validation", "n_test"])
def test_a_set_size_beyond_a_tensor_size_is_refused_by_name(name: str) -> None:
    """A size past 2**63 - 1, which no tensor dimension holds, is refused naming the argument
    (without the check torch's overflow error came out of ``torch.rand``, or the message
    named no argument), and the limit of a set's size, 2**59 - 1, below it."""
    sizes = {"n_train": 2, "n_validation": 1, "n_test": 1, name: 2**63}
    with pytest.raises(
        ValueError,
        match=rf"^make_disk_data: {name} must be at most 2\*\*59 - 1, got 9223372036854775808: ",
    ):
        make_disk_data(**sizes)


@pytest.mark.parametrize("name", ["n_train", "n_validation", "n_test"])
@pytest.mark.parametrize("size", [2**59, 2**62, 2**63, 2**70])
def test_a_set_size_whose_points_pass_the_largest_tensor_is_refused_by_name(
    name: str, size: int
) -> None:
    """From 2**59 points on, the bytes of a set's (n, 2) float64 points pass 2**63 - 1, and
    torch's count of them overflowed ("Storage size calculation overflowed with sizes=...", a
    RuntimeError naming no argument). Past a tensor's largest size too, the limit named is
    this one (it was "at most 2**63 - 1 (the largest tensor size)" from 2**63 on)."""
    sizes = {"n_train": 2, "n_validation": 1, "n_test": 1, name: size}
    with pytest.raises(
        ValueError,
        match=rf"^make_disk_data: {name} must be at most 2\*\*59 - 1, got {size}: the set's "
        r"points, \(n, 2\) float64, would pass the largest tensor, 2\*\*63 - 1 bytes$",
    ):
        make_disk_data(**sizes)


def test_splits_and_data_sets_built_by_hand_hold_what_make_disk_data_makes() -> None:
    """A Split of meta tensors was taken (comparing it then failed in torch's words), a DiskData
    whose mean is of another dtype or device than its sets' points too (normalize(split.raw)
    was then no longer split.x, as documented), and a y of shape (N, 1) was refused as sets of
    unequal lengths. Each is refused by name."""
    data = make_disk_data(4, 2, 2)
    meta = torch.zeros(3, 2, device="meta")
    with pytest.raises(ValueError, match=r"^Split: x, y and raw are on the meta device"):
        Split(meta, torch.zeros(3, dtype=torch.long, device="meta"), meta)
    with pytest.raises(
        ValueError,
        match=r"^DiskData: the sets' points, mean and std must be of one dtype on one device "
        r"\(normalize gives points in the mean's\), got train\.x float32 on cpu, validation\.x "
        r"float32 on cpu, test\.x float32 on cpu, mean float64 on cpu, std float32 on cpu$",
    ):
        dataclasses.replace(data, mean=data.mean.double())
    with pytest.raises(ValueError, match=r"mean float32 on meta"):
        dataclasses.replace(data, mean=torch.zeros(2, device="meta"))
    with pytest.raises(
        ValueError,
        match=r"^Split: y must hold one label per point, of shape \(N,\), got shape "
        r"\(3, 1\)$",
    ):
        Split(torch.zeros(3, 2), torch.zeros(3, 1, dtype=torch.long), torch.zeros(3, 2))
