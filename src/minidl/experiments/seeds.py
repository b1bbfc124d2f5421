"""The seeds of each round, derived from one base seed."""

from __future__ import annotations

import hashlib
import numbers
from dataclasses import dataclass

from minidl._validate import check_int, shown

__all__ = ["RoundSeeds", "derive_seed", "round_seeds"]


def derive_seed(base_seed: int, round_index: int, stream: str) -> int:
    """A seed in ``[0, 2**63)`` that depends only on ``(base_seed, round_index, stream)``.

    It is the first 63 bits of ``sha256("minidl-reproduce/<base>/<round>/<stream>")`` (the
    first 8 bytes of the digest read as a big-endian integer, shifted right by one bit), with
    the numbers in decimal, so it is the same on every machine and Python version, and
    different streams (data, weights, shuffles) and rounds are unrelated.

    Example:
        >>> derive_seed(0, 1, "data") == derive_seed(0, 1, "data") != derive_seed(0, 2, "data")
        True
    """
    for name, value in (("base_seed", base_seed), ("round_index", round_index)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"derive_seed: {name} must be an int, got {shown(value)}")
    # (a NumPy integer as the int it is: its text, which the digest reads, is the same)
    base_seed, round_index = int(base_seed), int(round_index)
    if not isinstance(stream, str):
        raise TypeError(f"derive_seed: stream must be a str, got {shown(stream)}")
    digest = hashlib.sha256(f"minidl-reproduce/{base_seed}/{round_index}/{stream}".encode())
    return int.from_bytes(digest.digest()[:8], "big") >> 1


@dataclass(frozen=True)
class RoundSeeds:
    """The seeds of one round: data set, initial weights and the shuffles of training."""

    round: int
    data: int
    init: int
    shuffle: int


def round_seeds(base_seed: int, round_index: int, *, new_data: bool = True) -> RoundSeeds:
    """The seeds of round ``round_index`` (from 0) of a run with ``base_seed``.

    They depend on the round, not on the row, so round r of every row sees the same data, the
    same initial weights (for rows with the same network) and the same shuffles: rows are
    paired. With ``new_data=False`` every round uses round 0's data set.

    Example:
        >>> round_seeds(0, 0).data == round_seeds(0, 3, new_data=False).data
        True
    """
    if isinstance(base_seed, bool) or not isinstance(base_seed, numbers.Integral):
        raise TypeError(f"round_seeds: base_seed must be an int, got {shown(base_seed)}")
    round_index = check_int("round_seeds", "round_index", round_index, low=0)
    if not isinstance(new_data, bool):  # ("no" was taken as True)
        raise TypeError(f"round_seeds: new_data must be a bool, got {shown(new_data)}")
    return RoundSeeds(
        round=round_index,
        data=derive_seed(base_seed, round_index if new_data else 0, "data"),
        init=derive_seed(base_seed, round_index, "init"),
        shuffle=derive_seed(base_seed, round_index, "shuffle"),
    )
