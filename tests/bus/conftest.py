"""Fixtures for the bus tests: the probe actor as a real process (tests/support/programs/probe_actor.py) and
blocking clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.sync_client import SyncClient
from tests.support.processes import ActorProcess, wait_serving
from tests.support.programs import PROBE_ACTOR, PROBE_SERVICE, probe_client


@pytest.fixture
def start_probe(proxy: ActorProcess, probe_factory: Callable[..., ActorProcess]) -> Callable[..., ActorProcess]:
    """Start the probe actor behind the default proxy; see probe_factory."""
    return probe_factory


@pytest.fixture
def probe_factory(config_path: Path, processes: list[ActorProcess], zctx: zmq.Context,
                  cfg: KhazadConfig) -> Callable[..., ActorProcess]:
    """Start the probe actor as a process (a proxy must be running) and wait until it answers Ping.
    ``env`` adds PROBE_* / KHAZAD__* variables."""

    def start(*, name: str = "probe", service: str = PROBE_SERVICE, wait: bool = True,
              env: dict[str, str] | None = None) -> ActorProcess:
        proc = ActorProcess(PROBE_ACTOR, config_path, name=name,
                            env={"PROBE_NAME": name, "PROBE_SERVICE": service, **(env or {})}).start()
        processes.append(proc)
        if wait:
            wait_serving(zctx, cfg.bus.service_endpoint(service), proc, server=name)  # it serves with its own key
        return proc

    return start


@pytest.fixture
def sync_client(zctx: zmq.Context) -> Iterator[Callable[..., SyncClient]]:
    """Blocking operator clients of the probe, closed at teardown."""
    made: list[SyncClient] = []

    def make(endpoint: str, *, timeout_s: float = 2.0, retries: int = 2, name: str = "test-client") -> SyncClient:
        cl = probe_client(zctx, endpoint, stamper=Stamper(name), timeout_s=timeout_s, retries=retries)
        made.append(cl)
        return cl

    yield make
    for cl in made:
        cl.close()
