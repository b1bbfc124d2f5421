"""minidl.experiments' config.py, figures.py and welch.py as a second mutation audit found them
untested: each test fails on a small change that the existing tests let through (its id in the
docstring)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from minidl.experiments import config
from minidl.experiments.config import (
    TABLE_II,
    Protocol,
)
from minidl.experiments.welch import critical_t, regularized_beta

# -- config.py ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["n_train", "n_validation", "n_test"])
def test_a_protocol_takes_a_set_of_exactly_2_to_the_59_minus_1_points(name: str) -> None:
    """C06: the bound is inclusive (make_disk_data's limit), 2**59 - 1 taken, 2**59 refused."""
    most = 2**59 - 1
    protocol = Protocol(**{name: most})
    assert getattr(protocol, name) == most
    with pytest.raises(
        ValueError, match=rf"^Protocol: {name} must be at most 2\*\*59 - 1, got {most + 1}: "
    ):
        Protocol(**{name: most + 1})


def test_a_row_has_one_activation_for_each_hidden_layer_of_its_own_protocol() -> None:
    """C20: the count of activations is the protocol's hidden layers (len(sizes) - 2), not 3."""
    two_hidden = Protocol(sizes=(2, 10, 10, 2))
    row = dataclasses.replace(TABLE_II[0], protocol=two_hidden, activations=("tanh", "relu"))
    assert row.activations == ("tanh", "relu")
    with pytest.raises(
        ValueError,
        match=r"^Experiment: II / SGD, momentum 0 has 3 activations, expected one for each of "
        r"the protocol's 2 hidden layers$",
    ):
        dataclasses.replace(TABLE_II[0], protocol=two_hidden)


def test_a_row_whose_paper_is_no_paper_result_is_refused() -> None:
    """C24: the paper's numbers given as a plain tuple are refused in the row's name."""
    with pytest.raises(
        TypeError, match=r"^Experiment: paper must be PaperResult or None, got \(5\.2, 1\.6\)$"
    ):
        dataclasses.replace(TABLE_II[0], paper=(5.2, 1.6))


def test_the_published_adadelta_row_takes_its_own_decay_rate_and_epsilon() -> None:
    """C28: "adadelta-published" is an ADADELTA: it may set adadelta_rho / adadelta_eps (only
    the other optimizers' rows must keep the choices' values)."""
    (published,) = [row for row in TABLE_II if row.optimizer == "adadelta-published"]
    row = dataclasses.replace(published, adadelta_rho=0.5, adadelta_eps=1e-4)
    assert (row.adadelta_rho, row.adadelta_eps) == (0.5, 1e-4)


def test_an_adadelta_epsilon_is_checked_in_the_protocols_own_dtype() -> None:
    """C29: 1e-50 is a float64 (taken on a float64 protocol) but rounds to 0 in float32 and is
    refused there; 1e-8 is a float32 but rounds to 0 in float16, refused on a float16 protocol."""
    (adadelta,) = [row for row in TABLE_II if row.label == "ADADELTA"]
    double = dataclasses.replace(adadelta, protocol=Protocol(dtype="float64"), adadelta_eps=1e-50)
    assert double.adadelta_eps == 1e-50
    with pytest.raises(
        ValueError,
        match=r"^Experiment: adadelta_eps 1e-50 rounds to 0 in the protocol's dtype float32",
    ):
        dataclasses.replace(adadelta, adadelta_eps=1e-50)
    with pytest.raises(
        ValueError,
        match=r"^Experiment: adadelta_eps 1e-08 rounds to 0 in the protocol's dtype float16",
    ):
        dataclasses.replace(adadelta, protocol=Protocol(dtype="float16"), adadelta_eps=1e-8)


def test_experiments_for_tables_refuses_a_table_number_given_as_an_int() -> None:
    """C40: refused in its own name (the mutant failed with str's AttributeError)."""
    with pytest.raises(TypeError, match=r"^experiments_for_tables: tables must be a str, got int$"):
        config.experiments_for_tables(2)  # type: ignore[arg-type]


# -- welch.py -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("degrees", "level"),
    [(1.0, 0.05), (4.0, 0.05), (8.0, 0.01), (30.0, 0.2), (3.5, 0.5), (8.0, 0.9)],
)
def test_a_critical_value_is_the_first_float_whose_p_value_is_at_most_the_level(
    degrees: float, level: float
) -> None:
    """W18: the bisection returns its upper end, a t whose two-sided p-value is <= level (the
    float just below it has a p-value above the level): returning the lower end gave a
    critical value one float short, whose p-value exceeds the level."""
    t = critical_t(degrees, level)

    def above(t: float) -> bool:
        """Whether P(|T| >= t) > level (against 1 - level, on the complement P(|T| < t),
        where that one keeps the digits: a level near 1 and a small t)."""
        share = t * t / (degrees + t * t)
        if level <= 0.5 or share >= 0.5:
            return regularized_beta(degrees / (degrees + t * t), degrees / 2, 0.5) > level
        return regularized_beta(share, 0.5, degrees / 2) < 1.0 - level

    assert not above(t)
    assert above(math.nextafter(t, 0.0))


def test_a_row_whose_protocol_is_no_protocol_is_refused_in_its_name() -> None:
    """C42: not only None: a protocol given as its dtype's name is refused as a TypeError in
    the row's name (the mutant failed with str's AttributeError on .sizes)."""
    with pytest.raises(TypeError, match=r"^Experiment: protocol must be Protocol, got 'float64'$"):
        dataclasses.replace(TABLE_II[0], protocol="float64")


# -- figures.py ---------------------------------------------------------------------------------


def test_an_error_axis_with_one_fixed_tick_in_view_labels_evenly_spaced_ones() -> None:
    """F05: between 15% and 30% only 20 of the ticks 0 and 1, 2, 5 x 10^k lies in view; as
    _error_axes says, evenly spaced ticks are labelled instead (at least two in view)."""
    pytest.importorskip("matplotlib")
    from minidl.experiments import figures

    plt = figures._pyplot()
    with figures._figure(plt) as (_, axes):
        figures._error_axes(axes, "t", 1000)
        axes.set_ylim(15, 30)
        ticks = axes.yaxis.get_major_locator()()
        assert sum(15 <= tick <= 30 for tick in ticks) >= 2
