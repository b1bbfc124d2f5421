"""``tests.helpers.free_port``, with which the process-group tests choose their rendezvous port:
ports below the kernel's ephemeral range, apart for each pytest-xdist worker, never one held."""

from __future__ import annotations

import itertools
import socket

import pytest

from tests import helpers


def test_ports_given_in_turn_differ_and_can_be_listened_on() -> None:
    ports = [helpers.free_port() for _ in range(5)]
    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", port))
            listener.listen()


@pytest.mark.parametrize(("worker", "first"), [("gw0", 20000), ("gw1", 21000), ("gw12", 22000)])
def test_each_worker_has_its_thousand_ports_below_the_ephemeral_range(
    monkeypatch: pytest.MonkeyPatch, worker: str, first: int
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setattr(helpers, "_next_port", itertools.count(999))
    assert [helpers.free_port() for _ in range(3)] == [first + 999, first, first + 1]


def test_without_xdist_the_first_workers_ports_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.setattr(helpers, "_next_port", itertools.count(7))
    assert helpers.free_port() == 20007


def test_a_port_something_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    start = helpers.free_port() - 23000
    while not helpers.port_is_free(
        23000 + (start + 1) % 1000
    ):  # (one free now, and the one after it)
        start = helpers.free_port() - 23000
    with socket.socket() as held:
        held.bind(("127.0.0.1", 23000 + start))
        held.listen()
        monkeypatch.setattr(helpers, "_next_port", itertools.count(start))
        assert helpers.free_port() == 23000 + (start + 1) % 1000


def test_no_port_free_in_the_workers_range_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def taken(self: socket.socket, address: object) -> None:
        raise OSError(98, "Address already in use")

    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setattr(socket.socket, "bind", taken)
    with pytest.raises(RuntimeError, match=r"^free_port: no port free in 21000\.\.21999$"):
        helpers.free_port()
