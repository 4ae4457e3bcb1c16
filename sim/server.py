"""The asyncio TCP server speaking the TWS API to real IB clients.

The protocol flow per connection lives in ``sim.connections``; the
connection faults (drops, refusals, connectivity notices) in
``sim.link_faults``.

``SimServer`` owns the clock, the broker (all trading state) and the
sessions, implements ``BrokerListener`` to turn broker events into messages
for the right client, and offers the fault actions the control API exposes.
Everything runs on one event loop; nothing here blocks.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import replace
from typing import Callable

from loguru import logger

from . import outgoing as out
from .account import MarginPreview
from .broker import SimBroker
from .clock import Scheduler, SimClock, parse_start
from .config import SimConfig
from . import data_handlers, misc_handlers, pnl_handlers, reference_handlers  # noqa: F401  (register handlers)
from .connections import CLOSE_TIMEOUT, ConnectionHandler
from .data_handlers import filter_ticks, send_extra_ticks, send_tick_by_tick
from .entitlements import Entitlements
from .delivery import OrderDelivery
from .handlers import push_account_updates
from .instruments import Instrument, InstrumentUniverse
from .link_faults import LinkFaults
from .messages import DELAYED_TICK
from .order_requests import PlaceOrder
from .orders import Execution, SimOrder
from .pacing import HistoricalPacing
from .pnl import ResetClock
from .replay import Replayer
from .replay import load as load_replay
from .session import ClientSession
from .trace import ProtocolTrace
from .validation import Precautions

#: The request log keeps this many most recent entries (seq keeps counting).
REQUEST_LOG_MAX = 100_000
#: Sessions remembered after they close (for the state snapshot).
CLOSED_SESSIONS_KEPT = 50


class SimServer:
    """A TWS/IB Gateway look-alike (see module docstring)."""

    def __init__(self, config: SimConfig, *, trace: ProtocolTrace | None = None) -> None:
        self.config = config
        start = parse_start(config.start_time) if config.clock == "manual" else time.time()
        self.universe = InstrumentUniverse.load(config.instruments, as_of=start)
        self.replayer: Replayer | None = None
        if config.replay:
            # a recording sets the clock: it starts at the first record
            records = load_replay(config.replay, self.universe)
            start = records[0].time
            self.universe = InstrumentUniverse.load(config.instruments, as_of=start)
            records = [replace(r, inst=self.universe.by_con_id[r.inst.con_id]) for r in records]
            self.replayer = Replayer(self, records)
        # a realtime clock without a recording is the wall clock itself (SimClock reads it as it starts): the start
        # read above came before the instruments were loaded, and as a start it put every time the simulator
        # reports (completedAt, createdAt, execution times) 6-10 ms behind the host's clock
        clock_start = start if (config.clock == "manual" or self.replayer is not None) else None
        self.clock = SimClock(config.clock, clock_start, speed=config.replay_speed)
        self.scheduler = Scheduler(self.clock)
        self._own_trace = trace is None and bool(config.trace)
        self.trace = trace if trace is not None else (ProtocolTrace(config.trace) if config.trace else None)
        self.pacing_limit = config.pacing_limit
        self.history_pacing = HistoricalPacing(config.history_pacing)
        self.entitlements = Entitlements(config.market_data)
        #: sim time of the last P&L push (reqPnL updates at most once a second)
        self.pnl_pushed_at = float("-inf")
        self.broker = SimBroker(
            universe=self.universe,
            clock=self.clock,
            scheduler=self.scheduler,
            seed=config.seed,
            tick_interval=config.tick_interval,
            account_id=config.account,
            base_currency=config.base_currency,
            starting_cash=config.starting_cash,
            market_hours=config.market_hours,
            listener=self,
            reset_clock=ResetClock(config.pnl_reset),
            precautions=Precautions(
                price_cap_pct=config.price_cap_pct,
                percentage=config.precaution_pct,
                size_limit=config.size_limit,
                value_limit=config.value_limit,
            ),
            latency=config.latency,
            tif_preset=config.tif_preset,
        )
        self.delivery = OrderDelivery(self, self.broker.latency)
        self.sessions: dict[int, ClientSession] = {}
        self.by_client_id: dict[int, ClientSession] = {}
        self.closed_sessions: deque[dict] = deque(maxlen=CLOSED_SESSIONS_KEPT)
        self.request_log: deque[dict] = deque(maxlen=REQUEST_LOG_MAX)
        self._mkt_index: dict[int, dict[tuple[int, int], ClientSession]] = {}
        self._listener: asyncio.base_events.Server | None = None
        self._control = None
        self._change_callbacks: list[Callable[[], None]] = []
        self.port = config.port
        self.control_port: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = False
        # collaborators: the API connections and the connection faults (each sees the server through a protocol)
        self.connections = ConnectionHandler(self)
        self.link = LinkFaults(self)

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.broker.start()
        if self.replayer is not None:
            self.replayer.start()
        self.scheduler.start()
        await self.listen()
        if self.config.control_port is not None:
            from .control import ControlHTTPServer

            self._control = ControlHTTPServer(self, self.config.control_host, self.config.control_port)
            self.control_port = await self._control.start()
        self.started = True
        logger.info(
            "sim listening on {}:{} (control {}) clock={} market_hours={} latency={} seed={} account={} {}",
            self.config.host,
            self.port,
            f"{self.config.control_host}:{self.control_port}" if self.control_port else "off",
            self.config.clock,
            self.broker.market_hours,
            self.broker.latency.profile,
            self.config.seed,
            self.config.account,
            self.config.base_currency,
        )

    async def listen(self) -> None:
        """Open the API port (the configured one; port 0 picks a free one, kept from then on)."""
        self._listener = await asyncio.start_server(
            self.connections.handle, self.config.host, self.port, reuse_address=True
        )
        self.port = self._listener.sockets[0].getsockname()[1]

    @property
    def listening(self) -> bool:
        """Is the API port accepting connections?"""
        return self._listener is not None

    async def unlisten(self) -> None:
        """Close the API port (clients get ECONNREFUSED)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def stop(self) -> None:
        """Close the listener, every connection and the control API."""
        self.broker.stop()
        await self.unlisten()
        self.link.cancel()
        for session in list(self.sessions.values()):
            session.close("server stopping")
        tasks = list(self.connections.tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
            for t in pending:
                t.cancel()
        if self._control is not None:
            await self._control.stop()
            self._control = None
        await self.scheduler.stop()
        if self.trace is not None:
            if self._own_trace:
                self.trace.close()
            else:
                self.trace.flush()
        self.started = False
        logger.info("sim stopped")

    # -- change notification (wait_for support) ------------------------------

    def add_change_callback(self, cb: Callable[[], None]) -> None:
        self._change_callbacks.append(cb)

    def remove_change_callback(self, cb: Callable[[], None]) -> None:
        if cb in self._change_callbacks:
            self._change_callbacks.remove(cb)

    def notify(self) -> None:
        for cb in list(self._change_callbacks):
            try:
                cb()
            except Exception:  # pragma: no cover - a test callback failing
                logger.exception("sim change callback failed")

    # -- connections -----------------------------------------------------------

    def session_closed(self, session: ClientSession, reason: str) -> None:
        self.sessions.pop(session.conn_id, None)
        if session.client_id is not None and self.by_client_id.get(session.client_id) is session:
            del self.by_client_id[session.client_id]
        for req_id in list(session.mkt_data):
            self.unindex_mkt_data(session, req_id)
        snap = session.snapshot()
        snap["closeReason"] = reason
        self.closed_sessions.append(snap)
        if self.trace is not None:
            self.trace.event(self.clock.now(), session.conn_id, "disconnect", reason)
        logger.info("sim connection {} closed: {}", session.label, reason)

    # -- market data index -------------------------------------------------------

    def index_mkt_data(self, session: ClientSession, req_id: int, inst: Instrument) -> None:
        self._mkt_index.setdefault(inst.con_id, {})[(session.conn_id, req_id)] = session

    def unindex_mkt_data(self, session: ClientSession, req_id: int) -> None:
        sub = session.mkt_data.get(req_id)
        if sub is not None:
            self._mkt_index.get(sub.instrument.con_id, {}).pop((session.conn_id, req_id), None)

    def send_ticks(self, session: ClientSession, req_id: int, data_type: int, changes: list) -> None:
        delayed = data_type in (3, 4)
        for tick_type, price, size in changes:
            tt = DELAYED_TICK.get(tick_type, tick_type) if delayed else tick_type
            if price is None:
                session.send(out.tick_size(req_id, tt, size))
            else:
                session.send(out.tick_price(req_id, tt, price, size or 0.0))

    # -- BrokerListener ------------------------------------------------------------

    def order_update(self, order: SimOrder, kind: str) -> None:
        self.delivery.order_update(order, kind)

    def order_error(
        self,
        client_id: int,
        order_id: int,
        code: int,
        message: str,
        reject_json: str = "",
        order: SimOrder | None = None,
    ) -> None:
        self.delivery.order_error(client_id, order_id, code, message, reject_json, order)

    def execution_report(self, order: SimOrder, execution: Execution, correction: bool = False) -> None:
        self.delivery.execution_report(order, execution, correction)

    def what_if_result(self, client_id: int, req: PlaceOrder, inst: Instrument, preview: MarginPreview) -> None:
        self.delivery.what_if_result(client_id, req, inst, preview)

    def binds_manual_orders(self) -> bool:
        return self.delivery.binds_manual_orders()

    def market_ticks(self, inst: Instrument, changes: list) -> None:
        if not changes or self.broker.faults.connectivity_lost:
            return
        send_tick_by_tick(self, inst, changes)
        subs = self._mkt_index.get(inst.con_id)
        if not subs:
            return
        for (conn_id, req_id), session in list(subs.items()):
            sub = session.mkt_data.get(req_id)
            if sub is not None:
                self.send_ticks(session, req_id, sub.data_type, filter_ticks(sub, changes))
                send_extra_ticks(self, session, req_id, sub, changes)

    def market_step_done(self) -> None:
        now = self.clock.now()
        pnl_handlers.pnl_step(self, now)
        if self.broker.faults.connectivity_lost:
            return
        data_handlers.push_bars(self, now)

    def account_changed(self, con_ids: set[int] | None) -> None:
        push_account_updates(self, con_ids)
        for session in list(self.sessions.values()):
            if session.ready:
                pnl_handlers.push_pnl(self, session)

    def account_changed_after(self, order: SimOrder, con_ids: set[int]) -> None:
        self.delivery.after_order_messages(order, lambda: self.account_changed(con_ids))

    # -- fault actions ---------------------------------------------------------------

    def drop_connections(self, reason: str = "daily restart") -> int:
        return self.link.drop_connections(reason)

    async def refuse_connections(self, seconds: float | None = None) -> None:
        """Stop listening (clients get ECONNREFUSED) for ``seconds`` of sim time."""
        await self.link.refuse_connections(seconds)

    async def accept_connections(self) -> None:
        await self.link.accept_connections()

    def broadcast_code(self, code: int, message: str | None = None) -> None:
        """Send a connectivity notice to every client and apply its effect."""
        self.link.broadcast_code(code, message)

    def connectivity(
        self, codes: list[int] | None = None, interval: float = 1.0, lost_for: float | None = None, restore: int = 1102
    ) -> list[int]:
        """Emit a 1100/1101/1102 style sequence on the simulated clock."""
        return self.link.connectivity(codes, interval, lost_for, restore)

    # -- ground truth --------------------------------------------------------------------

    def snapshot(self, log_since: int = 0) -> dict:
        """Everything the control API's ``state`` returns (JSON-ready)."""
        snap = self.broker.snapshot()
        snap.update(
            {
                "time": self.clock.now(),
                "clock": self.clock.mode,
                "seed": self.config.seed,
                "port": self.port,
                "control_port": self.control_port,
                "clients": [s.snapshot() for s in sorted(self.sessions.values(), key=lambda s: s.conn_id)],
                "closed_clients": list(self.closed_sessions),
                "request_log": [e for e in self.request_log if e["seq"] > log_since],
                "pacing_limit": self.pacing_limit,
                "history_pacing": self.history_pacing.snapshot(),
                "market_data": self.entitlements.snapshot(),
                "replay": self.replayer.snapshot() if self.replayer is not None else None,
            }
        )
        positions = snap["account"]["positions"]
        snap["positions"] = positions
        snap["account_values"] = snap["account"]["values"]
        return snap
