"""Fixtures for the SDK/CLI tests: an in-thread proxy, scripted fake services, a ready test publisher, and the
risk governor's trading states (what a connecting client asks first)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from bus.codec import Stamper
from bus.config import KhazadConfig
from tests.support.clients import OwnerPublisher, security
from tests.support.doubles.services import FakeService, InThreadProxy
from tests.support.doubles.trading_states import TradingStatesDouble


@pytest.fixture
def trading_states(cfg: KhazadConfig) -> Iterator[TradingStatesDouble]:
    """The risk governor's ``GetTradingState`` (everything ACTIVE unless the test sets otherwise)."""
    double = TradingStatesDouble()
    svc = FakeService(cfg.bus.risk, "fake-risk", double, security=security(cfg, "risk")).start()
    yield double
    svc.stop()


@pytest.fixture
def mem_proxy(cfg: KhazadConfig, trading_states: TradingStatesDouble) -> Iterator[InThreadProxy]:
    """The event proxy, in a thread (with the trading states a connecting client asks for)."""
    p = InThreadProxy(cfg).start()
    yield p
    p.stop()


@pytest.fixture
def fakes(cfg: KhazadConfig) -> Iterator[Callable[..., FakeService]]:
    """``fakes("orders", handler)`` starts a fake service on that service's configured endpoint."""
    started: list[FakeService] = []

    def make(service: str, handler: Callable[[Any], Any] | None = None) -> FakeService:
        svc = FakeService(cfg.bus.service_endpoint(service), f"fake-{service}", handler,
                          security=security(cfg, service)).start()  # serving with that actor's key
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.stop()


@pytest.fixture
def test_pub(cfg: KhazadConfig, zctx: zmq.Context, mem_proxy: InThreadProxy) -> Iterator[OwnerPublisher]:
    """A publisher whose handshake with the proxy is done (it plays the order manager / gateway / governor, each
    topic with its owner's key)."""
    pub = OwnerPublisher(zctx, cfg, Stamper("test-pub"))
    pub.wait_ready_sync(cfg.bus.proxy_backend)
    yield pub
    pub.close()
