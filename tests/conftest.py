"""Fixtures shared by every test package: zmq contexts, configs on free ports, actor processes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from bus import topics
from tests.helpers import ActorProcess, cfg_of, eventually, write_config


@pytest.fixture(autouse=True)
def main_thread_event_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh current event loop for every test. Libraries with a sync API (ib_insync's ``IB.connect``) use
    ``get_event_loop()``, which fails after an earlier test's ``asyncio.run()`` cleared the current loop."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    if not loop.is_closed():
        loop.close()


@pytest.fixture
def zctx() -> Iterator[zmq.Context]:
    """A zmq context for the test; every socket left open is closed with linger 0 at teardown."""
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """A khazad.toml on free ports with its run dir under tmp_path."""
    return write_config(tmp_path)


@pytest.fixture
def cfg(config_path: Path):
    return cfg_of(config_path)


@pytest.fixture
def processes() -> Iterator[list[ActorProcess]]:
    """Collects started processes and stops (then kills) all of them at teardown."""
    procs: list[ActorProcess] = []
    yield procs
    for p in reversed(procs):
        p.stop()


@pytest.fixture
def proxy(config_path: Path, processes: list[ActorProcess], zctx: zmq.Context) -> ActorProcess:
    """A running bus proxy process (ready once a subscriber sees its heartbeat)."""
    from bus.pubsub import SyncSubscriber

    p = ActorProcess("bus.proxy", config_path, name="proxy").start()
    processes.append(p)
    cfg = cfg_of(config_path)
    sub = SyncSubscriber(zctx, cfg.bus.proxy_backend, [topics.heartbeat("proxy")], name="test-proxy-ready")
    try:
        eventually(lambda: sub.recv(0.05), 15, message=lambda: f"proxy heartbeat; log:\n{p.log()}")
    finally:
        sub.close()
    return p
