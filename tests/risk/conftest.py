"""Fixtures for the risk governor's tests: a config with per-test risk settings, the fake gateway, the real
risk process, a client and the event recorder. Everything is torn down (sockets linger 0, processes stopped)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from bus import topics
from bus.codec import Stamper
from bus.sync_client import SyncClient
from tests.support.clients import RoutedClient
from tests.support.config import cfg_of, write_config
from tests.support.doubles.risk_gateway import FakeGateway
from tests.support.events import EventRecorder
from tests.support.processes import ActorProcess, start_actor

RISK_MARKER = "risk_config(toml): extra TOML appended to the test's khazad.toml (tests/risk)"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", RISK_MARKER)


@pytest.fixture
def config_path(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """The shared fixture, plus the ``risk_config`` marker's TOML."""
    marker = request.node.get_closest_marker("risk_config")
    return write_config(tmp_path, extra=marker.args[0] if marker else "")


@pytest.fixture
def gateway(config_path: Path, zctx: zmq.Context, proxy: ActorProcess) -> Iterator[FakeGateway]:
    gw = FakeGateway(zctx, cfg_of(config_path)).start()
    gw.wait_bus_ready()
    yield gw
    gw.stop()


@pytest.fixture
def events(config_path: Path, zctx: zmq.Context, gateway: FakeGateway) -> Iterator[EventRecorder]:
    wanted = [topics.RISK_DECISION_PREFIX, topics.TRADING_STATE, topics.EMERGENCY_CANCEL, topics.ALERT_PREFIX]
    rec = EventRecorder(zctx, cfg_of(config_path), wanted, name="test-risk-events")
    yield rec
    rec.close()


@pytest.fixture
def risk(config_path: Path, processes: list[ActorProcess], zctx: zmq.Context, gateway: FakeGateway,
         events: EventRecorder) -> ActorProcess:
    """The real risk governor process, serving, with the fake gateway up (events recorded from before it
    started)."""
    return start_actor("risk", config_path, processes, zctx)


@pytest.fixture
def client(config_path: Path, zctx: zmq.Context) -> Iterator[SyncClient]:
    """Approvals asked with the order manager's key (the only one risk approves for), the rest as an operator."""
    cl = RoutedClient(zctx, cfg_of(config_path), "risk", stamper=Stamper("orders-test"), timeout_s=3.0, retries=0)
    yield cl
    cl.close()
