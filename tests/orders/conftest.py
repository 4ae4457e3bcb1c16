"""Fixtures for the order manager tests: a config with short order timeouts, the chain doubles, a strategy's
client and order-update subscriber, and the order manager process itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from bus import topics
from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.pubsub import SyncSubscriber
from bus.sync_client import SyncClient
from tests.support.clients import publisher, sync_client, sync_subscriber
from tests.support.config import ORDERS_EXTRA, write_config
from tests.support.doubles.order_peers import ChainDoubles
from tests.support.processes import ActorProcess, wait_serving


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path, extra=ORDERS_EXTRA)


@pytest.fixture
def doubles(cfg: KhazadConfig, proxy: ActorProcess) -> Iterator[ChainDoubles]:
    d = ChainDoubles(cfg).start()
    yield d
    d.stop()


@pytest.fixture
def start_orders(config_path: Path, processes: list[ActorProcess], zctx: zmq.Context,
                 cfg: KhazadConfig) -> Callable[..., ActorProcess]:
    """Start (or restart) the real order manager process; returns once it answers Ping."""

    def start(env: dict[str, str] | None = None) -> ActorProcess:
        p = ActorProcess("actors.orders", config_path, name="orders", env=env).start()
        processes.append(p)
        wait_serving(zctx, cfg.bus.orders, p)
        return p

    return start


@pytest.fixture
def strategy(zctx: zmq.Context, cfg: KhazadConfig) -> Iterator[SyncClient]:
    """A strategy's request client to the order manager (generous timeout, no retries unless a test asks): the
    key of strategy ``s1``."""
    cl = sync_client(zctx, cfg, "orders", key="s1", stamper=Stamper("strategy-s1"), timeout_s=10.0,
                    retries=0)
    yield cl
    cl.close()


@pytest.fixture
def updates(zctx: zmq.Context, cfg: KhazadConfig, proxy: ActorProcess) -> Iterator[SyncSubscriber]:
    """A ready subscriber to ``order.s1`` (what the strategy sees)."""
    sub = sync_subscriber(zctx, cfg, [topics.order("s1")], key="s1", name="test-strategy")
    pub = publisher(zctx, cfg, Stamper("test-probe"), key="s1")
    try:
        pub.wait_ready_sync(cfg.bus.proxy_backend)
        sub.wait_ready(pub)
    finally:
        pub.close()
    yield sub
    sub.close()
