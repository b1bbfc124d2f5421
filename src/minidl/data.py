"""The paper's disk data set, and shuffled mini-batches.

Points are drawn uniformly in :math:`[0, 1]^2`; a point's label is 1 when it lies inside the
disk of centre :math:`(0.5, 0.5)` and radius :math:`1/\\sqrt{2\\pi}` (area 1/2, so the classes are
balanced on average), 0 otherwise. The train, validation and test sets come from one seeded
generator and are normalised with the training set's per-feature mean and standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from minidl._memory import out_of_memory
from minidl._validate import (
    check_cpu_generator,
    check_dtype,
    check_int,
    check_samples,
    check_seed,
    check_strided,
    check_tensor_size,
    shown,
    shown_typed,
    unavailable,
)

__all__ = [
    "DISK_CENTER",
    "DISK_RADIUS",
    "BatchIterator",
    "DiskData",
    "Split",
    "disk_labels",
    "make_disk_data",
]

#: The centre of the disk, in the unnormalised coordinates of the points.
DISK_CENTER = (0.5, 0.5)
#: The radius of the disk, :math:`1/\sqrt{2\pi}`: the disk covers half of the unit square.
DISK_RADIUS = 1.0 / math.sqrt(2.0 * math.pi)


def disk_labels(points: Tensor) -> Tensor:
    """Class of each point of ``points`` (shape ``(N, 2)``, unnormalised): 1 inside the disk, else 0.

    The squared distance to the centre is computed in float64 whatever the points' dtype (in
    their own, a 16-bit point near the circle could fall on the wrong side: 1 490 of a million
    bfloat16 points did, against the float64 labels of the same points).

    Raises:
        TypeError: ``points`` is not a floating-point tensor, or is sparse or nested.
        ValueError: its shape is not ``(N, 2)``, or a point is NaN or infinite.
    """
    if not isinstance(points, Tensor) or not points.is_floating_point():
        got = f"a {points.dtype} tensor" if isinstance(points, Tensor) else type(points).__name__
        raise TypeError(
            f"disk_labels: points must be a floating-point tensor of shape (N, 2), got {got}"
        )
    check_strided("disk_labels", "points", points)
    if points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(
            f"disk_labels: points must have shape (N, 2), got shape {tuple(points.shape)}"
        )
    points = points.to(torch.float64)  # (first: torch has no isfinite of float8)
    finite = torch.isfinite(points).all(dim=1)
    if not points.is_meta and not bool(finite.all()):
        row = int((~finite).nonzero()[0, 0])
        raise ValueError(
            f"disk_labels: points must be finite, got {points[row].tolist()} at row {row} "
            "(a point that is NaN or infinite is inside no disk, nor outside it)"
        )
    center = torch.tensor(DISK_CENTER, dtype=torch.float64, device=points.device)
    inside = (points - center).square().sum(dim=1) < DISK_RADIUS**2
    return inside.to(torch.int64)


def _same_tensors(first: tuple[object, ...], second: tuple[object, ...]) -> bool:
    """Whether two records' fields are equal: tensors of the same dtype, device, shape and
    values (NaN equal to nothing, as ``torch.equal`` has it), other fields by ``==``."""
    for a, b in zip(first, second, strict=True):
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            if (a.dtype, a.device, a.shape) != (b.dtype, b.device, b.shape) or not torch.equal(
                a, b
            ):
                return False
        elif a != b:
            return False
    return True


def _signature(fields: tuple[object, ...]) -> int:
    """A hash of records whose fields :func:`_same_tensors` compares: the tensors' dtypes,
    devices and shapes, the other fields' own hashes."""
    return hash(
        tuple((t.dtype, t.device, tuple(t.shape)) if isinstance(t, Tensor) else t for t in fields)
    )


def _given(value: object) -> str:
    """A field given to :class:`Split` or :class:`DiskData`, as their refusals name it: a
    tensor by its dtype and shape, anything else by its type and value."""
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return shown_typed(value)


@dataclass(frozen=True, eq=False)
class Split:
    """One set of the data: normalised inputs ``x`` ``(N, 2)``, labels ``y`` (int64, ``(N,)``),
    and the points before normalisation ``raw`` ``(N, 2)``.

    Two splits are equal when their tensors are: the same dtype, device, shape and values.

    Raises:
        TypeError: (built by hand) ``x`` or ``raw`` is not a floating-point tensor, or ``y``
            not an int64 one; or one is sparse or nested.
        ValueError: their shapes are not ``(N, 2)``, ``(N,)`` and ``(N, 2)`` of one ``N``, or
            they are on different devices, or on the meta device (no values).
    """

    x: Tensor
    y: Tensor
    raw: Tensor

    def __post_init__(self) -> None:
        # (built by hand, a Split of other things failed later in Python's words: len(split)
        # of an int; it holds what make_disk_data makes)
        x, y, raw = self.x, self.y, self.raw
        for name, points in (("x", x), ("raw", raw)):
            if not isinstance(points, Tensor) or not points.is_floating_point():
                raise TypeError(
                    f"Split: {name} must be a floating-point tensor of shape (N, 2), got "
                    f"{_given(points)}"
                )
            check_strided("Split", name, points)
            if points.dim() != 2 or points.shape[1] != 2:
                raise ValueError(
                    f"Split: {name} must have shape (N, 2), got shape {tuple(points.shape)}"
                )
        if not isinstance(y, Tensor) or y.dtype is not torch.int64:
            # (int64, as the losses take class indices: int32 labels were taken, then refused
            # by the loss in its own words)
            raise TypeError(f"Split: y must be an int64 tensor of labels, got {_given(y)}")
        check_strided("Split", "y", y)
        if y.dim() != 1:
            raise ValueError(
                f"Split: y must hold one label per point, of shape (N,), got shape {tuple(y.shape)}"
            )
        if y.shape != (x.shape[0],) or raw.shape != x.shape:
            raise ValueError(
                f"Split: x, y and raw must hold as many points, (N, 2), (N,) and (N, 2), got "
                f"shapes {tuple(x.shape)}, {tuple(y.shape)} and {tuple(raw.shape)}"
            )
        if not x.device == y.device == raw.device:
            raise ValueError(
                f"Split: x, y and raw must be on one device, got {x.device}, {y.device} and "
                f"{raw.device}"
            )
        if x.is_meta:
            # (as make_disk_data refuses it: comparing two such splits failed in torch's words)
            raise ValueError(
                "Split: x, y and raw are on the meta device, which holds shapes and no values, "
                "and a data set is its values"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return _same_tensors((self.x, self.y, self.raw), (other.x, other.y, other.raw))

    def __hash__(self) -> int:
        return _signature((self.x, self.y, self.raw))


@dataclass(frozen=True, eq=False)
class DiskData:
    """Train, validation and test sets, and the training statistics used to normalise them.

    Two data sets are equal when their splits and statistics are (see :class:`Split`).

    Raises:
        TypeError: (built by hand) a set that is not a :class:`Split`, or a ``mean`` or
            ``std`` that is not a floating-point tensor of shape ``(2,)``.
        ValueError: (built by hand) the sets' ``x``, ``mean`` and ``std`` are not of one dtype
            on one device.
    """

    train: Split
    validation: Split
    test: Split
    mean: Tensor
    std: Tensor

    def __post_init__(self) -> None:
        # (built by hand, checked as Split is: what make_disk_data makes)
        for name in ("train", "validation", "test"):
            split = getattr(self, name)
            if not isinstance(split, Split):
                raise TypeError(f"DiskData: {name} must be a Split, got {_given(split)}")
        for name in ("mean", "std"):
            statistic = getattr(self, name)
            if isinstance(statistic, Tensor):  # (a nested tensor has no shape to read)
                check_strided("DiskData", name, statistic)
            if (
                not isinstance(statistic, Tensor)
                or not statistic.is_floating_point()
                or statistic.shape != (2,)
            ):
                raise TypeError(
                    f"DiskData: {name} must be a floating-point tensor of shape (2,) (one value "
                    f"per coordinate), got {_given(statistic)}"
                )
        # (normalize gives points in the mean's dtype and on its device, which are the sets'
        # in what make_disk_data makes: normalize(split.raw) is split.x)
        kinds = {
            name: (tensor.dtype, tensor.device)
            for name, tensor in (
                ("train.x", self.train.x),
                ("validation.x", self.validation.x),
                ("test.x", self.test.x),
                ("mean", self.mean),
                ("std", self.std),
            )
        }
        if len(set(kinds.values())) != 1:
            shown_kinds = ", ".join(
                f"{name} {str(dtype).removeprefix('torch.')} on {device}"
                for name, (dtype, device) in kinds.items()
            )
            raise ValueError(
                "DiskData: the sets' points, mean and std must be of one dtype on one device "
                f"(normalize gives points in the mean's), got {shown_kinds}"
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DiskData):
            return NotImplemented
        return _same_tensors(self._fields(), other._fields())

    def __hash__(self) -> int:
        return _signature(self._fields())

    def _fields(self) -> tuple[object, ...]:
        return (self.train, self.validation, self.test, self.mean, self.std)

    def normalize(self, points: Tensor) -> Tensor:
        """Normalise raw points with the training statistics (e.g. for a decision-boundary grid).

        As :func:`make_disk_data` normalises the sets: in float64, with the float64 mean and
        sample standard deviation of the training set's raw points (``train.raw``), then cast
        to the dtype of ``mean`` and put on its device; so ``normalize(split.raw)`` is
        ``split.x`` in every dtype (``mean`` and ``std``, rounded to that dtype, would not give
        it in a 16-bit one).

        Raises:
            TypeError: ``points`` is not a floating-point tensor, or is sparse or nested.
            ValueError: its shape is not ``(N, 2)``, or it is on the meta device (no values).
        """
        if not isinstance(points, Tensor) or not points.is_floating_point():
            got = (
                f"a {points.dtype} tensor" if isinstance(points, Tensor) else type(points).__name__
            )
            raise TypeError(
                "DiskData.normalize: points must be a floating-point tensor of shape (N, 2), "
                f"got {got}"
            )
        check_strided("DiskData.normalize", "points", points)
        if points.is_meta:
            raise ValueError(
                "DiskData.normalize: points are on the meta device, which holds no values to "
                "normalise"
            )
        if points.dim() != 2 or points.shape[1] != 2:
            raise ValueError(
                "DiskData.normalize: points must have shape (N, 2), got shape "
                f"{tuple(points.shape)}"
            )
        raw = self.train.raw.to(device="cpu", dtype=torch.float64)
        return _normalized(
            points.to(device="cpu", dtype=torch.float64),
            raw.mean(dim=0),
            raw.std(dim=0),
            self.mean.dtype,
            self.mean.device,
        )


def _normalized(
    points: Tensor, mean: Tensor, std: Tensor, dtype: torch.dtype, device: torch.device | None
) -> Tensor:
    """``(points - mean) / std`` in float64 (the CPU statistics of the raw training points),
    then cast to ``dtype`` on ``device``: how every set of the data is normalised."""
    return ((points - mean) / std).to(dtype=dtype, device=device)


def make_disk_data(
    n_train: int = 1000,
    n_validation: int = 1000,
    n_test: int = 1000,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> DiskData:
    """Draw the paper's data set from ``seed``.

    Points are drawn in float64 on the CPU from a generator seeded with ``seed`` (train, then
    validation, then test), so the same seed gives the same points whatever ``dtype`` and
    ``device``; they are then normalised with the training set's mean and sample standard
    deviation and cast.

    Args:
        n_train, n_validation, n_test: set sizes, integers >= 1 (>= 2 for the training set,
            whose standard deviation is needed).
        seed: seed of the generator, an integer in ``[-2**63, 2**64 - 1]`` (what
            ``torch.Generator.manual_seed`` takes; a negative seed s is the seed 2**64 + s).
        dtype: floating dtype of the inputs (labels are int64).
        device: where the tensors live (a ``torch.device``, a name such as ``"cuda:0"``, or
            ``None`` for the CPU).

    Example:
        >>> data = make_disk_data(seed=0)
        >>> data.train.x.shape, data.train.y.dtype
        (torch.Size([1000, 2]), torch.int64)
    """
    sizes = {"n_train": n_train, "n_validation": n_validation, "n_test": n_test}
    for name, n in sizes.items():
        check_int("make_disk_data", name, n, low=2 if name == "n_train" else 1)
        # (before check_tensor_size, whose limit, 2**63 - 1, lies past this one)
        if n > _MOST_POINTS:  # (torch's count of their bytes overflowed, in its words)
            raise ValueError(
                f"make_disk_data: {name} must be at most 2**59 - 1, got {shown(n)}: the set's "
                "points, (n, 2) float64, would pass the largest tensor, 2**63 - 1 bytes"
            )
        check_tensor_size("make_disk_data", name, n)
    check_dtype("make_disk_data", dtype)
    seed = check_seed("make_disk_data", seed)
    device = _check_device("make_disk_data", device)
    generator = torch.Generator().manual_seed(seed)
    try:
        raws = [
            torch.rand(n, 2, dtype=torch.float64, generator=generator)
            for n in (n_train, n_validation, n_test)
        ]
        mean = raws[0].mean(dim=0)
        std = raws[0].std(dim=0)
        splits = [
            Split(
                x=_normalized(raw, mean, std, dtype, device),
                y=disk_labels(raw).to(device=device),
                raw=raw.to(device=device),
            )
            for raw in raws
        ]
        return DiskData(
            train=splits[0],
            validation=splits[1],
            test=splits[2],
            mean=mean.to(dtype=dtype, device=device),
            std=std.to(dtype=dtype, device=device),
        )
    except (MemoryError, RuntimeError) as error:
        # (any of the sets' tensors, drawn, normalised, labelled or moved: the points alone
        # may fit where their copies do not)
        reason = out_of_memory(error)
        if reason is None:
            raise
        raise ValueError(
            f"make_disk_data: cannot hold {n_train} + {n_validation} + {n_test} samples ({reason})"
        ) from None


#: The most points of a set of :func:`make_disk_data`: ``(n, 2)`` float64, 16 bytes a point,
#: of at most ``2**63 - 1`` bytes, the most that torch counts.
_MOST_POINTS = (2**63 - 1) // 16


def _check_device(where: str, device: object) -> torch.device | None:
    """``device`` as a ``torch.device`` (``None`` kept), after checking that tensors can be made
    there (a name torch does not know, or a CUDA device on a machine without one, is refused)."""
    if device is None:
        return None
    if isinstance(device, bool) or not isinstance(device, torch.device | str | int):
        raise TypeError(
            f"{where}: device must be a torch.device, a device name or None, got "
            f"{type(device).__name__}"
        )
    try:
        place = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(
            f"{where}: cannot put tensors on device {shown(device)}: {error}"
        ) from None
    reason = unavailable(place)
    if reason is None and place.type == "meta":
        reason = "a meta tensor holds a shape and no values, and a data set is its values"
    if reason is not None:
        raise ValueError(f"{where}: cannot put tensors on device {shown(device)}: {reason}")
    return place


def _check_flag(name: str, flag: object) -> bool:
    """A ``BatchIterator`` flag: a bool (a string such as "no" would be true: refused rather
    than taken for True)."""
    if not isinstance(flag, bool):
        raise TypeError(f"BatchIterator: {name} must be a bool, got {shown(flag)}")
    return flag


def _check_generator(generator: object) -> torch.Generator | None:
    """A ``BatchIterator`` generator: ``None`` or a CPU ``torch.Generator`` (``randperm`` draws
    the orders on the CPU; a CUDA generator would fail at the first pass)."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        kind = type(generator)
        given = (
            kind.__name__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        raise TypeError(f"BatchIterator: generator must be a torch.Generator or None, got {given}")
    check_cpu_generator("BatchIterator", "generator", generator)
    return generator


def short_last_batch(samples: int, batch_size: int, shares: int, drop_last: bool) -> int:
    """The size of an epoch's last batch of ``samples`` in batches of ``batch_size`` where it
    holds fewer samples than the ``shares`` it is split into (data-parallel processes, each of
    which takes one at least), else 0 (a last batch as large as the others, one that
    ``drop_last`` drops, or one large enough)."""
    last = samples % batch_size if samples > batch_size else samples
    return last if last and last < shares and not drop_last else 0


class BatchIterator:
    """Mini-batches of ``(x, y)``, in a new random order on every pass.

    Each pass draws one permutation from ``generator`` and gathers the whole set once
    (``index_select``); the batches are then views (slices) of the shuffled copy, so writing
    into one changes only that pass's copy. With ``shuffle=False`` nothing is copied: the
    batches are views of ``x`` and ``y`` themselves (as slicing them would give), and writing
    into one writes into the data set. The last batch is smaller when ``batch_size`` does not
    divide the set size (unless ``drop_last``); a ``batch_size`` larger than the set gives one
    batch holding the whole set. ``batch_size``, ``shuffle``, ``drop_last`` and ``generator``
    may be set again between passes, with the constructor's checks; ``x`` and ``y`` are
    read-only (they are checked as a pair, so one of them alone could not be replaced by a set
    of another size: make a new iterator for another set), and checked again at the start of
    each pass (a tensor resized in place in between is refused as it would be when given).

    Args:
        x: inputs, shape ``(N, ...)``.
        y: targets, shape ``(N, ...)``.
        batch_size: samples per batch, an integer >= 1.
        shuffle: draw a new order each pass (default ``True``); otherwise keep the given order.
        generator: the generator of the shuffles (default: torch's global one).
        drop_last: skip a last, incomplete batch.

    Raises:
        TypeError: ``x`` or ``y`` is not a tensor, ``batch_size`` not an integer, ``shuffle`` or
            ``drop_last`` not a bool, ``generator`` not a ``torch.Generator`` or ``None``.
        ValueError: an empty set, ``x`` and ``y`` of other lengths or devices, ``batch_size`` < 1,
            a ``generator`` that is not on the CPU (the orders are drawn there).

    Example:
        >>> for x_batch, y_batch in BatchIterator(data.train.x, data.train.y, batch_size=100):
        ...     pass  # 10 batches: x_batch (100, 2), y_batch (100,)
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> None:
        check_samples("BatchIterator", x, y)
        # Each setter checks its value (in this order: batch_size, generator, shuffle, drop_last);
        # a bad one raises before the object exists.
        self._x = x
        self._y = y
        self.batch_size = batch_size
        self.generator = generator
        self.shuffle = shuffle
        self.drop_last = drop_last

    @property
    def x(self) -> Tensor:
        """The inputs, ``(N, ...)`` (read-only: make a new iterator for another set)."""
        return self._x

    @x.setter
    def x(self, value: Tensor) -> None:
        self._refuse_data("x")

    @property
    def y(self) -> Tensor:
        """The targets, ``(N, ...)`` (read-only: make a new iterator for another set)."""
        return self._y

    @y.setter
    def y(self, value: Tensor) -> None:
        self._refuse_data("y")

    def _refuse_data(self, name: str) -> None:
        kind = type(self).__name__
        raise AttributeError(
            f"{kind}: {name} is read-only (x and y are checked as a pair, of one length and "
            f"device); make a new {kind}(x, y, ...) for other data"
        )

    def __setstate__(self, state: dict[str, object]) -> None:
        """Unpickle, also an iterator pickled when its data and settings were plain attributes
        (``x``, ``y``, ``batch_size``, ... rather than ``_x``, ``_y``, ``_batch_size``, ...)."""
        for name in ("x", "y", "batch_size", "shuffle", "generator", "drop_last"):
            if name in state:
                state["_" + name] = state.pop(name)
        self.__dict__.update(state)

    @property
    def generator(self) -> torch.Generator | None:
        """The generator of the shuffles (``None``: torch's global one), a CPU generator."""
        return self._generator

    @generator.setter
    def generator(self, value: torch.Generator | None) -> None:
        self._generator = _check_generator(value)

    @property
    def batch_size(self) -> int:
        """Samples per batch, an integer >= 1."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._batch_size = check_int("BatchIterator", "batch_size", value)

    @property
    def shuffle(self) -> bool:
        """Whether each pass draws a new order."""
        return self._shuffle

    @shuffle.setter
    def shuffle(self, value: bool) -> None:
        self._shuffle = _check_flag("shuffle", value)

    @property
    def drop_last(self) -> bool:
        """Whether a last, incomplete batch is skipped."""
        return self._drop_last

    @drop_last.setter
    def drop_last(self, value: bool) -> None:
        self._drop_last = _check_flag("drop_last", value)

    def __len__(self) -> int:
        """The number of batches a pass yields: ``ceil(N / batch_size)``, or
        ``floor(N / batch_size)`` with ``drop_last`` (in integers: a float quotient would round
        it, e.g. to 0 for a batch size of ``10**400``, to 2 for ``2**53 + 1`` samples in batches
        of ``2**52``)."""
        full, rest = divmod(int(self._x.shape[0]), self.batch_size)
        return full + 1 if rest and not self.drop_last else full

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # Checked again at each pass: x or y resized in place since (x.resize_(...)) would
        # give shuffled batches that drop or repeat targets, or torch's error at the split.
        x, y = check_samples("BatchIterator", self._x, self._y)
        n = int(x.shape[0])
        if self.shuffle:
            order = torch.randperm(n, generator=self._generator)
            if not x.is_cpu:  # (drawn on the CPU; .to(x.device) would return it unchanged)
                order = order.to(x.device)
            x, y = x.index_select(0, order), y.index_select(0, order)
        size = self.batch_size
        full, rest = divmod(n, size)
        if self.drop_last and rest:
            if not full:  # no full batch: no batch at all
                return
            x, y = x[: n - rest], y[: n - rest]
            rest = 0
        # One split per tensor gives every batch as a view (split_with_sizes: the views of
        # torch.split, at about two thirds of its cost); a batch size beyond the samples is one
        # batch of them all.
        sizes = [size] * full + [rest] if rest else [size] * full
        yield from zip(x.split_with_sizes(sizes), y.split_with_sizes(sizes), strict=True)
