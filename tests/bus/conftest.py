"""Fixtures for the bus tests: the probe actor as a real process, clients, and a proxy with custom settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus import topics
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import GetStatus, ServiceStatus
from bus.pubsub import SyncSubscriber
from bus.reqrep import SyncClient
from tests.helpers import ActorProcess, cfg_of, eventually, wait_serving

PROBE_MODULE = "tests.bus.probe_actor"
#: The bus endpoint the probe serves by default (no real monitor runs in these tests).
PROBE_SERVICE = "monitor"


def start_proxy(config_path: Path, processes: list[ActorProcess], zctx: zmq.Context, *,
                env: dict[str, str] | None = None, name: str = "proxy") -> ActorProcess:
    """A bus proxy process, returned once a subscriber sees its heartbeat through it."""
    proc = ActorProcess("bus.proxy", config_path, name=name, env=env).start()
    processes.append(proc)
    cfg = cfg_of(config_path)
    sub = SyncSubscriber(zctx, cfg.bus.proxy_backend, [topics.heartbeat("proxy")], name="test-proxy-ready")
    try:
        eventually(lambda: sub.recv(0.05), 15, message=lambda: f"proxy heartbeat; log:\n{proc.log()}")
    finally:
        sub.close()
    return proc


@pytest.fixture
def start_probe(proxy: ActorProcess, probe_factory: Callable[..., ActorProcess]) -> Callable[..., ActorProcess]:
    """Start the probe actor (tests/bus/probe_actor.py) behind the default proxy; see probe_factory."""
    return probe_factory


@pytest.fixture
def probe_factory(config_path: Path, processes: list[ActorProcess], zctx: zmq.Context,
                  cfg: KhazadConfig) -> Callable[..., ActorProcess]:
    """Start the probe actor as a process (a proxy must be running) and wait until it answers Ping.
    ``env`` adds PROBE_* / KHAZAD__* variables."""

    def start(*, name: str = "probe", service: str = PROBE_SERVICE, wait: bool = True,
              env: dict[str, str] | None = None) -> ActorProcess:
        proc = ActorProcess(PROBE_MODULE, config_path, name=name,
                            env={"PROBE_NAME": name, "PROBE_SERVICE": service, **(env or {})}).start()
        processes.append(proc)
        if wait:
            wait_serving(zctx, cfg.bus.service_endpoint(service), proc)
        return proc

    return start


@pytest.fixture
def sync_client(zctx: zmq.Context) -> Iterator[Callable[..., SyncClient]]:
    """Blocking clients, closed at teardown."""
    made: list[SyncClient] = []

    def make(endpoint: str, *, timeout_s: float = 2.0, retries: int = 2, name: str = "test-client") -> SyncClient:
        cl = SyncClient(zctx, endpoint, service=name, stamper=Stamper(name), timeout_s=timeout_s, retries=retries)
        made.append(cl)
        return cl

    yield make
    for cl in made:
        cl.close()


def probe_status(zctx: zmq.Context, endpoint: str) -> dict[str, str]:
    """The probe's counters (GetStatus detail)."""
    cl = SyncClient(zctx, endpoint, service="status", stamper=Stamper("test-status"), timeout_s=2.0, retries=2)
    try:
        reply: Any = cl.call(GetStatus())
    finally:
        cl.close()
    assert isinstance(reply, ServiceStatus), reply
    return reply.detail
