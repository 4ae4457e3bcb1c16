"""Fixtures for the risk governor's tests: a config with per-test risk settings, the fake gateway, the real
risk process, a client and an event recorder. Everything is torn down (sockets linger 0, processes stopped)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus import topics
from bus.codec import Stamper
from bus.messages import TickEvent
from bus.pubsub import SyncSubscriber
from bus.reqrep import SyncClient
from tests.helpers import ActorProcess, cfg_of, eventually, wait_serving, write_config
from tests.risk.fake_gateway import FakeGateway

RISK_MARKER = "risk_config(toml): extra TOML appended to the test's khazad.toml (tests/risk)"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", RISK_MARKER)


@pytest.fixture
def config_path(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """The shared fixture, plus the ``risk_config`` marker's TOML."""
    marker = request.node.get_closest_marker("risk_config")
    return write_config(tmp_path, extra=marker.args[0] if marker else "")


class EventLog:
    """Records events from the bus in a background thread; tests wait on it with eventually()."""

    def __init__(self, ctx: zmq.Context, backend: str, topics: list[str]) -> None:
        self.sub = SyncSubscriber(ctx, backend, topics, name="test-risk-events")
        self.events: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, publisher: Any) -> "EventLog":
        self.sub.wait_ready(publisher)
        self._thread = threading.Thread(target=self._run, daemon=True, name="test-risk-events")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            got = self.sub.recv(0.05)
            if got is not None:
                with self._lock:
                    self.events.append((got[0], got[1].body))

    def of(self, kind: type, topic_prefix: str = "") -> list[Any]:
        with self._lock:
            return [b for t, b in self.events if isinstance(b, kind) and t.startswith(topic_prefix)]

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self.sub.close()


@pytest.fixture
def gateway(config_path: Path, zctx: zmq.Context, proxy: ActorProcess) -> Iterator[FakeGateway]:
    gw = FakeGateway(zctx, cfg_of(config_path)).start()
    gw.wait_bus_ready()
    yield gw
    gw.stop()


@pytest.fixture
def events(config_path: Path, zctx: zmq.Context, gateway: FakeGateway) -> Iterator[EventLog]:
    cfg = cfg_of(config_path)
    wanted = [topics.RISK_DECISION_PREFIX, topics.TRADING_STATE, topics.EMERGENCY_CANCEL, topics.ALERT_PREFIX]
    log = EventLog(zctx, cfg.bus.proxy_backend, wanted).start(gateway.publisher)
    yield log
    log.stop()


def start_risk(config_path: Path, processes: list[ActorProcess], zctx: zmq.Context) -> ActorProcess:
    proc = ActorProcess("actors.risk", config_path, name="risk").start()
    processes.append(proc)
    wait_serving(zctx, cfg_of(config_path).bus.risk, proc)
    return proc


@pytest.fixture
def risk(config_path: Path, processes: list[ActorProcess], zctx: zmq.Context, gateway: FakeGateway,
         events: EventLog) -> ActorProcess:
    """The real risk governor process, serving, with the fake gateway up (events recorded from before it
    started)."""
    return start_risk(config_path, processes, zctx)


@pytest.fixture
def client(config_path: Path, zctx: zmq.Context) -> Iterator[SyncClient]:
    cl = SyncClient(zctx, cfg_of(config_path).bus.risk, service="risk", stamper=Stamper("orders-test"),
                    timeout_s=3.0, retries=0)
    yield cl
    cl.close()


def tick(symbol: str = "AAPL", price: float = 100.0, spread: float = 0.02) -> TickEvent:
    return TickEvent(symbol=symbol, bid=price - spread / 2, ask=price + spread / 2, last=price)


def wait_ready(client: SyncClient) -> None:
    """Until the governor has applied the gateway snapshot."""
    from bus.messages import GetRiskState

    eventually(lambda: client.call(GetRiskState()).ready, message="risk governor never became ready")
