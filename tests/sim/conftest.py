"""Fixtures for the simulator suite: a simulator per test, client drivers
for the three IB libraries, and a guard that fails any test whose client
logged a decoding problem."""

from __future__ import annotations

import threading

import pytest

from sim.testing import running_sim
from tests.sim.sim_drivers import CLIENTS, ClientLog, Driver, attach_client_log, make_driver


@pytest.fixture
def sim():
    """A fresh simulator (manual clock, seed 1, USD account) per test."""
    with running_sim() as handle:
        yield handle


@pytest.fixture(autouse=True)
def clientlog():
    """Fails the test if a client library logged an unexpected error."""
    log = ClientLog()
    detach = attach_client_log(log)
    try:
        yield log
    finally:
        detach()
    bad = log.unexpected()
    assert not bad, "client libraries logged errors:\n" + "\n".join(bad)


@pytest.fixture(autouse=True)
def no_leaked_sim_threads():
    """Every simulator a test starts is stopped (its thread joined) by the end."""
    yield
    leaked = [t.name for t in threading.enumerate() if t.name == "sim-server" and t.is_alive()]
    assert not leaked, f"simulator threads still running: {leaked}"


@pytest.fixture
def make_client():
    """Factory: ``make_client("ib_insync")``; all drivers disconnect at teardown."""
    drivers: list[Driver] = []

    def make(name: str) -> Driver:
        d = make_driver(name)
        drivers.append(d)
        return d

    yield make
    for d in drivers:
        d.disconnect()
    problems = [p for d in drivers for p in d.problems()]
    assert not problems, "client decoding problems:\n" + "\n".join(problems)


@pytest.fixture(params=CLIENTS)
def client_name(request) -> str:
    return request.param


@pytest.fixture
def client(client_name, make_client, sim) -> Driver:
    """A connected client (clientId 1) of each library in turn."""
    d = make_client(client_name)
    d.connect(sim.host, sim.port, 1)
    return d
