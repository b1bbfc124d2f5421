"""Behaviour of ``minidl.experiments.batched``, ``seeds`` and ``faithful`` that a second
mutation audit found untested.

Each test checks a value a user relies on against an oracle computed apart from the code under
test: the seeds against the documented sha256 recipe, the records that ``on_epoch`` receives
against the histories kept in the results, and ``PublishedAdadelta`` against a transcription of
the published step written with fresh tensors.
"""

from __future__ import annotations

import hashlib

import pytest

from minidl.experiments.batched import train_rows_batched
from minidl.experiments.config import (
    TABLE_I,
    TABLE_III,
    Experiment,
    experiments_for_tables,
    stack_key,
)
from minidl.experiments.faithful import PublishedELU, PublishedSELU
from minidl.experiments.seeds import derive_seed, round_seeds
from minidl.train import EpochRecord


def _documented_seed(base_seed: int, round_index: int, stream: str) -> int:
    """The seed recipe of ``derive_seed``'s docstring, written out again."""
    text = f"minidl-reproduce/{base_seed}/{round_index}/{stream}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def test_round_seeds_names_its_round_and_keeps_its_own_shuffles_with_one_data_set() -> None:
    """A round's seeds carry the round's index, and with ``new_data=False`` only the data seed
    is round 0's: each round keeps its own initial weights and shuffles (the documented
    protocol: the same data, other weights and orders), each the documented sha256 seed."""
    for new_data in (True, False):
        for index in range(4):
            seeds = round_seeds(7, index, new_data=new_data)
            assert seeds.round == index
            assert seeds.data == _documented_seed(7, index if new_data else 0, "data")
            assert seeds.init == _documented_seed(7, index, "init")
            assert seeds.shuffle == _documented_seed(7, index, "shuffle")
    kept = [round_seeds(7, index, new_data=False) for index in range(4)]
    assert len({seeds.shuffle for seeds in kept}) == 4
    assert len({seeds.init for seeds in kept}) == 4


class _HexInt(int):
    """An int whose text is not its decimal (as a user's int subclass may print)."""

    def __str__(self) -> str:
        return hex(self)

    __repr__ = __str__
    __format__ = int.__format__


def test_derive_seed_reads_an_int_subclass_as_its_decimal_value() -> None:
    """The seed depends only on the numbers "in decimal": an int subclass whose own text is
    another (here hexadecimal) gives the seed of the plain int, in derive_seed and round_seeds
    alike, not the digest of its text."""
    base, index = _HexInt(26), _HexInt(11)
    assert f"{base}" == "0x1a"  # (its text would change the digest)
    assert derive_seed(base, index, "data") == _documented_seed(26, 11, "data")
    assert round_seeds(base, index) == round_seeds(26, 11)


def test_batched_on_epoch_receives_each_models_own_record() -> None:
    """Two rows of one stack, 2 rounds, 2 epochs: ``on_epoch`` receives, for row k and round r,
    that model's own record (its training loss, learning rate and validation error), the one
    kept in the row's results, not another model's of the same epoch."""
    rows = (TABLE_I[1], TABLE_I[2])
    assert stack_key(rows[0]) == stack_key(rows[1])
    seen: dict[tuple[str, int, int], EpochRecord] = {}

    def on_epoch(experiment: Experiment, index: int, record: EpochRecord) -> None:
        seen[(experiment.label, index, record.epoch)] = record

    results = train_rows_batched(rows, 2, 0, epochs=2, on_epoch=on_epoch)
    assert len(seen) == 8
    losses = set()
    for row, result in zip(rows, results, strict=True):
        for index, round_result in enumerate(result.rounds):
            for epoch in range(2):
                record = seen[(row.label, index, epoch)]
                assert record.train_loss == round_result.train_loss[epoch]
                assert record.lr == round_result.lr_curve[epoch]
                assert record.validation_error == round_result.validation_curve[epoch]
                losses.add(record.train_loss)
    assert len(losses) == 8  # (the models' records differ, so a mix-up shows)


def test_published_activations_say_in_their_repr_that_they_are_the_fault() -> None:
    """A printed network shows which activations are the published faults and their constant
    (an ELU with SELU's alpha, a SELU of scale 0.5), as a correct ELU shows its alpha."""
    assert repr(PublishedELU()) == "PublishedELU(alpha=SELU_ALPHA (published fault))"
    assert repr(PublishedSELU()) == "PublishedSELU(scale=0.5 (published fault))"


def test_rows_of_different_stacks_are_refused_naming_every_row_and_training_nothing() -> None:
    """Rows of two stacks are refused before anything trains, with a message that names every
    row given (the second, the one that does not fit, included), not only the first."""
    rows = [TABLE_III[0], experiments_for_tables("2")[0]]
    calls: list[int] = []
    with pytest.raises(ValueError) as info:
        train_rows_batched(rows, 1, 0, epochs=1, on_epoch=lambda *args: calls.append(1))
    assert str(info.value) == (
        "train_rows_batched: the rows must differ only in activations, loss, optimizer and "
        f"schedule (one stack_key), got {rows[0].key!r}, {rows[1].key!r}"
    )
    assert calls == []
