"""The gateway as the risk governor sees it (``FakeGateway``), for the governor's process-level tests and the risk
benchmark (the end-to-end tests use the real gateway and the simulator): a ROUTER on ``bus.gateway`` in a thread
answering GetSnapshot, SubscribeMarketData and EmergencyCancel, and a publisher named ``gateway`` for the events
(and heartbeats) the real gateway would publish.

It is a double of one peer only; the governor under test is the real process over real sockets.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable
from typing import Any

import zmq

from bus import sockets, topics
from bus.codec import Stamper, reply_codec, request_codec
from bus.messages import (
    AccountValue,
    Ack,
    CancelIbOrder,
    CancelReport,
    ContractInfo,
    EmergencyCancel,
    GatewaySnapshot,
    GatewayStatus,
    GetSnapshot,
    GetStatus,
    Instrument,
    InstrumentReply,
    Kill,
    MarketDataAck,
    Ping,
    Pong,
    QualifyInstrument,
    Rejected,
    SubscribeMarketData,
    TickEvent,
)
from bus.pubsub import Publisher
from tests.support.clients import security, server_key

POLL_MS = 20  # the double's loop timer (lets it notice stop())

#: conIds of the symbols the tests use (IB's where the simulator has them); any other symbol gets a stable one
CON_IDS = {"AAPL": 265598, "MSFT": 272093, "SPY": 756733, "IBM": 8314, "GME": 36285627}


def con_id_of(symbol: str) -> int:
    return CON_IDS.get(symbol.upper()) or 10_000_000 + zlib.crc32(symbol.upper().encode()) % 10_000_000


def instrument(symbol: str) -> Instrument:
    """The canonical (qualified) US stock ``symbol`` as the real gateway would publish it."""
    return Instrument(symbol=symbol.upper(), con_id=con_id_of(symbol), local_symbol=symbol.upper())


def contract_info(symbol: str) -> ContractInfo:
    """IB's details of a US stock: 0.01 tick, whole shares, no trading hours (the session is unknown)."""
    return ContractInfo(instrument=instrument(symbol), min_tick=0.01)


def tick_for(symbol: str = "AAPL", price: float = 100.0, spread: float = 0.02) -> TickEvent:
    return TickEvent(symbol=symbol.upper(), con_id=con_id_of(symbol), bid=price - spread / 2, ask=price + spread / 2,
                     last=price)


DEFAULT_ACCOUNT = [
    AccountValue(key="NetLiquidation", value="1000000.00", currency="USD"),
    AccountValue(key="BuyingPower", value="4000000.00", currency="USD"),
    AccountValue(key="AvailableFunds", value="1000000.00", currency="USD"),
    AccountValue(key="RealizedPnL", value="0.00", currency="BASE"),
    AccountValue(key="UnrealizedPnL", value="0.00", currency="BASE"),
]


class FakeGateway:
    """Answers the governor's gateway requests; records what it was sent. ``answer`` can be switched off to play
    a gateway that is down (requests go unanswered)."""

    def __init__(self, ctx: zmq.Context, cfg: Any, *, snapshot: GatewaySnapshot | None = None,
                 unknown_symbols: frozenset[str] = frozenset()) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.snapshot = snapshot or GatewaySnapshot(open_orders=[], executions=[], positions=[],
                                                    account_values=list(DEFAULT_ACCOUNT), account="DU1234567")
        self.unknown_symbols = unknown_symbols
        self.answer = threading.Event()
        self.answer.set()
        self.received: list[Any] = []
        self.cancels: list[EmergencyCancel] = []
        self.order_cancels: list[CancelIbOrder] = []
        self.md_requests: list[str] = []
        self.on_request: Callable[[Any], Any] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stamper = Stamper("gateway")
        # it stands in for the gateway: its key, as server and as publisher
        self.security = security(cfg, "gateway")
        self.publisher = Publisher(ctx, cfg.bus.proxy_frontend, self.stamper, security=self.security,
                                   server_key=server_key(self.security, "proxy"))

    # -- events (call from the test thread) ------------------------------------------------------------------

    def wait_bus_ready(self) -> None:
        self.publisher.wait_ready_sync(self.cfg.bus.proxy_backend)

    def publish(self, topic: str, body: Any) -> None:
        self.publisher.publish(topic, body)

    def publish_tick(self, tick: TickEvent) -> None:
        """A tick on its contract's topic (``md.<conId>``)."""
        self.publisher.publish(topics.market_data(tick.con_id), tick)

    # -- service ---------------------------------------------------------------------------------------------------

    def start(self) -> "FakeGateway":
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="fake-gateway", daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("fake gateway did not bind")
        return self

    def _serve(self, ready: threading.Event) -> None:
        sock = sockets.configure(self.ctx.socket(zmq.ROUTER))
        if self.security is not None:
            self.security.start_authenticator(self.ctx)
        sockets.bind(sock, self.cfg.bus.gateway, security=self.security)
        ready.set()
        req, rep = request_codec(), reply_codec()
        stamper = Stamper("gateway")
        try:
            while not self._stop.is_set():
                if not sock.poll(POLL_MS):
                    continue
                ident, frame = sock.recv_multipart()
                env = req.decode(frame)
                with self._lock:
                    self.received.append(env.body)
                if not self.answer.is_set():
                    continue
                reply = self._reply(env.body)
                if reply is not None:
                    sock.send_multipart([ident, rep.encode(stamper.stamp(reply, request_id=env.request_id))])
        finally:
            sock.close(0)
            if self.security is not None:
                self.security.stop_authenticator()

    def _reply(self, body: Any) -> Any:
        if self.on_request is not None:
            custom = self.on_request(body)
            if custom is not None:
                return custom
        if isinstance(body, GetSnapshot):
            return self.snapshot
        if isinstance(body, (SubscribeMarketData, QualifyInstrument)):
            symbol = body.instrument.symbol
            if isinstance(body, SubscribeMarketData):
                with self._lock:
                    self.md_requests.append(symbol)
            if symbol in self.unknown_symbols:
                return Rejected(code="unknown_symbol", reason=f"no security definition for {symbol}")
            info = contract_info(symbol)
            if body.instrument.multiplier and float(body.instrument.multiplier) != info.multiplier:
                return Rejected(code="contract_mismatch", reason=f"multiplier {body.instrument.multiplier} "
                                f"contradicts IB's multiplier {info.multiplier:g} for {info.display}")
            if isinstance(body, QualifyInstrument):
                return InstrumentReply(info=info)
            return MarketDataAck(symbol=info.display, con_id=info.con_id, subscribers=1, info=info)
        if isinstance(body, CancelIbOrder):
            with self._lock:
                self.order_cancels.append(body)
            return Ack(detail="cancel sent")
        if isinstance(body, (EmergencyCancel, Kill)):
            cid = body.command_id if isinstance(body, EmergencyCancel) else body.kill_id
            if isinstance(body, EmergencyCancel):
                with self._lock:
                    self.cancels.append(body)
            return CancelReport(command_id=cid, scope=body.scope, trading_state="ACTIVE", epoch=1, cancelled=0,
                                remaining=0, confirmed=True, detail="fake gateway")
        if isinstance(body, Ping):
            return Pong(actor="gateway")
        if isinstance(body, GetStatus):
            return GatewayStatus(mode="sim", connection=self.snapshot.connection, trading_state="ACTIVE", epoch=0)
        return Rejected(code="unknown_command", reason="fake gateway")

    def count(self, kind: type) -> int:
        with self._lock:
            return sum(isinstance(b, kind) for b in self.received)

    def cancels_for(self, scope: str) -> list[EmergencyCancel]:
        with self._lock:
            return [c for c in self.cancels if c.scope == scope]

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.publisher.close()
