"""Fixtures for the gateway tests: a simulator (in a thread, real socket), a config pointing the gateway at it,
the gateway as a real process, a request client and an event recorder on the bus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from bus import topics
from tests.support.config import cfg_of, gateway_extra, write_config
from tests.support.events import EventRecorder
from tests.support.gateway_harness import GatewayHarness
from tests.support.processes import ActorProcess


@pytest.fixture
def sim_overrides() -> dict:
    """SimConfig overrides for ``sim`` (override the fixture, or parametrize it, per test)."""
    return {}


@pytest.fixture
def gateway_overrides() -> dict:
    """``[gateway]`` overrides for the test config (override or parametrize per test)."""
    return {}


@pytest.fixture
def sim(sim_overrides: dict) -> Iterator:
    from sim.testing import running_sim

    with running_sim(**{"seed": 7, **sim_overrides}) as handle:
        yield handle


@pytest.fixture
def config_path(tmp_path: Path, sim, gateway_overrides: dict) -> Path:
    """Overrides the root fixture: the gateway talks to this test's simulator."""
    return write_config(tmp_path, extra=gateway_extra(sim.port, **gateway_overrides))


@pytest.fixture
def recorder(proxy, config_path: Path, zctx: zmq.Context) -> Iterator[EventRecorder]:
    rec = EventRecorder(zctx, cfg_of(config_path), [
        topics.GW_ORDER_PREFIX, topics.FILL_PREFIX, topics.COMMISSION_PREFIX, topics.STATE_PREFIX, topics.RECON_PREFIX,
        topics.ALERT_PREFIX, topics.POSITION_PREFIX, topics.ACCOUNT_VALUES, topics.MARKET_DATA_PREFIX,
        topics.heartbeat("gateway"), topics.INSTRUMENT_PREFIX, topics.PNL_PREFIX])
    try:
        yield rec
    finally:
        rec.close()


@pytest.fixture
def gateway(proxy, recorder: EventRecorder, config_path: Path, processes: list[ActorProcess],
            zctx: zmq.Context, sim) -> Iterator[GatewayHarness]:
    """A READY gateway process connected to ``sim``."""
    harness = GatewayHarness(zctx, config_path, processes, sim, recorder)
    harness.start()
    harness.wait_ready()
    try:
        yield harness
    finally:
        harness.close()
