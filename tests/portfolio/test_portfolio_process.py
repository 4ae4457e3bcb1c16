"""The portfolio actor as a real process on a real proxy: events in over ZeroMQ, answers and snapshots out.

The gateway's side is a scripted ROUTER in the test (the portfolio is the one class under test here; the whole
system with the real gateway and simulator is in tests/system)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from bus import sockets, topics
from bus.codec import Stamper, reply_codec, request_codec
from bus.messages import (
    AccountReply,
    AccountValuesEvent,
    Alert,
    ConnectionStateEvent,
    GatewaySnapshot,
    GetAccount,
    GetPositions,
    GetSnapshot,
    MarketDataAck,
    Ping,
    Pong,
    PortfolioSnapshot,
    PositionEvent,
    PositionsReply,
    Rejected,
    SubscribeMarketData,
    TickEvent,
)
from bus.sync_client import SyncClient
from tests.support.builders import AAPL, account_values, commission, fill, position
from tests.support.clients import publisher, serving_security, sync_client, sync_subscriber
from tests.support.config import cfg_of, write_config
from tests.support.processes import ActorProcess, wait_serving
from tests.support.waiting import eventually


class ScriptedGateway(threading.Thread):
    """Answers the portfolio's gateway calls from ``self.snapshot`` (swap it to change what IB 'holds')."""

    def __init__(self, endpoint: str, cfg: Any = None) -> None:
        super().__init__(name="scripted-gateway", daemon=True)
        self.endpoint = endpoint
        self.cfg = cfg
        self.snapshot = GatewaySnapshot(open_orders=[], executions=[], positions=[], account_values=[])
        self.calls: list[str] = []
        self.bound = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sec = serving_security(ctx, self.cfg, "gateway") if self.cfg is not None else None  # the gateway's key
        sockets.bind(sock, self.endpoint, security=sec)
        self.bound.set()
        req, rep, stamper = request_codec(), reply_codec(), Stamper("gateway")
        try:
            while not self.stop.is_set():
                if not sock.poll(50):
                    continue
                ident, frame = sock.recv_multipart()
                env = req.decode(frame)
                body = env.body
                self.calls.append(type(body).__name__)
                if isinstance(body, GetSnapshot):
                    answer = self.snapshot
                elif isinstance(body, SubscribeMarketData):
                    answer = MarketDataAck(symbol=body.instrument.symbol, subscribers=1)
                elif isinstance(body, Ping):
                    answer = Pong(actor="gateway")
                else:
                    answer = Rejected(code="unknown_command", reason="scripted gateway")
                sock.send_multipart([ident, rep.encode(stamper.stamp(answer, request_id=env.request_id))])
        finally:
            sock.close(0)
            if sec is not None:
                sec.stop_authenticator()
            ctx.term()


@pytest.fixture
def system(tmp_path, zctx, processes) -> Iterator[tuple]:
    path = write_config(tmp_path, extra="[portfolio]\nreconcile_interval_s = 0.5\n")
    cfg = cfg_of(path)
    gw = ScriptedGateway(cfg.bus.gateway, cfg)
    gw.snapshot = GatewaySnapshot(open_orders=[], executions=[fill(1, "BUY", 100, 10.0)],
                                  positions=[position(100, 10.0)], account_values=account_values(1e6, 9e5, 4e6),
                                  account="DU1234567")
    gw.start()
    assert gw.bound.wait(5)
    proxy = ActorProcess("bus.proxy", path, name="proxy").start()
    processes.append(proxy)
    portfolio = ActorProcess("actors.portfolio", path, name="portfolio").start()
    processes.append(portfolio)
    wait_serving(zctx, cfg.bus.portfolio, portfolio)
    pub = publisher(zctx, cfg, Stamper("gateway"), key="gateway")
    pub.wait_ready_sync(cfg.bus.proxy_backend)
    client = sync_client(zctx, cfg, "portfolio", timeout_s=2.0)
    yield cfg, gw, pub, client, portfolio
    client.close()
    pub.close()
    gw.stop.set()
    gw.join(5)


def account(client: SyncClient) -> PortfolioSnapshot:
    reply = client.call(GetAccount())
    assert isinstance(reply, AccountReply)
    return reply.snapshot


def test_portfolio_seeds_from_the_gateway_and_follows_its_events(system, zctx):
    cfg, gw, pub, client, proc = system
    eventually(lambda: account(client).reconciled, message="first reconciliation")
    s = account(client)
    assert (s.net_liquidation, s.total_cash, s.buying_power, s.currency) == (1e6, 9e5, 4e6, "USD")
    assert [(p.instrument.symbol, p.quantity) for p in s.positions] == [("AAPL", 100)]
    assert "SubscribeMarketData" in gw.calls  # marks for what is held

    sub = sync_subscriber(zctx, cfg, [topics.PORTFOLIO_SNAPSHOT], name="test-snap")
    sub.wait_ready(pub)
    pub.publish(topics.fill("AAPL"), fill(2, "SELL", 40, 12.0))
    pub.publish(topics.fill("AAPL"), fill(2, "SELL", 40, 12.0, replayed=True))  # duplicate: ignored
    pub.publish(topics.commission("AAPL"), commission(2, 1.0, realized=79.0))
    pub.publish(topics.position("AAPL"), PositionEvent(position=position(60, 10.0)))
    pub.publish(topics.market_data("AAPL"), TickEvent(symbol="AAPL", con_id=AAPL.con_id, bid=12.9, ask=13.1))
    pub.publish(topics.ACCOUNT_VALUES,
                AccountValuesEvent(account="DU1234567", values=account_values(1.1e6, 9.5e5, 4.4e6)))

    def settled():
        got = sub.recv(0.2)
        return got is not None and got[1].body.net_liquidation == 1.1e6 and got[1].body.positions and \
            got[1].body.positions[0].market_price == 13.0 and got[1].body
    snapshot = eventually(settled, message="a published snapshot with every change")
    assert snapshot.positions[0].quantity == 60
    assert snapshot.strategy_realized == {"alpha": pytest.approx(80.0 - 1.0)}
    assert snapshot.realized_pnl == pytest.approx(79.0)
    reply = client.call(GetPositions(strategy_id="alpha"))
    assert isinstance(reply, PositionsReply)
    assert [(p.quantity, p.realized_pnl) for p in reply.positions] == [(60, pytest.approx(79.0))]
    sub.close()
    assert proc.alive()


def test_drift_against_ib_is_alerted_on_the_bus(system, zctx):
    cfg, gw, pub, client, proc = system
    sub = sync_subscriber(zctx, cfg, [topics.alert("portfolio"), topics.recon("portfolio")],
                         name="test-drift")
    sub.wait_ready(pub)

    def baseline_fixed():
        got = sub.recv(0.2)
        return got is not None and got[1].body.detail.endswith("fixed") and got
    eventually(baseline_fixed, message="baseline fixed by two agreeing reconciliations")
    # IB now holds 7 more than any execution explains
    gw.snapshot = GatewaySnapshot(open_orders=[], executions=[fill(1, "BUY", 100, 10.0)],
                                  positions=[position(107, 10.0)], account_values=account_values(1e6, 9e5, 4e6),
                                  account="DU1234567")
    pub.publish(topics.CONNECTION_STATE, ConnectionStateEvent(state="DISCONNECTED"))
    pub.publish(topics.CONNECTION_STATE, ConnectionStateEvent(state="READY"))  # reconnect: reconcile at once

    def drift_alert():
        got = sub.recv(0.2)
        return got is not None and isinstance(got[1].body, Alert) and got[1].body
    alert = eventually(drift_alert, message="drift alert")
    assert alert.kind == "portfolio_drift" and alert.detail == {"AAPL": "7", "books.alpha": "AAPL 100"}
    sub.close()
