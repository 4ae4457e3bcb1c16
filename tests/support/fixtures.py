"""The fixtures every test package shares (imported by ``tests/conftest.py``): a fresh event loop per test, a zmq
context, a config on free ports, the process list that stops every process at teardown, and the bus proxy."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from bus.config import KhazadConfig
from tests.support.config import cfg_of, write_config
from tests.support.processes import ActorProcess, start_proxy


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
def cfg(config_path: Path) -> KhazadConfig:
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
    return start_proxy(config_path, processes, zctx)
