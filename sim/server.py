"""The asyncio TCP server speaking the TWS API to real IB clients.

Protocol flow per connection (see ``sim.protocol``): ``API\\0`` + version
range -> the server's two-field handshake (sent alone: ibapi decodes only the
first message of its first read) -> startApi -> managedAccounts,
nextValidId and the farm-OK notices -> requests.

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
from .clock import Scheduler, SimClock, Timer, parse_start
from .config import SimConfig
from . import data_handlers, misc_handlers, pnl_handlers, reference_handlers  # noqa: F401  (register handlers)
from .data_handlers import filter_ticks, send_extra_ticks, send_tick_by_tick
from .entitlements import Entitlements
from .delivery import OrderDelivery
from .handlers import HANDLERS, UNSUPPORTED_REQ_ID_POSITION, handle_unsupported, push_account_updates
from .instruments import Instrument, InstrumentUniverse
from .messages import DELAYED_TICK, ErrorCode, In, in_name
from .order_requests import PlaceOrder
from .orders import Execution, SimOrder
from .pacing import HistoricalPacing
from .pnl import ResetClock
from .replay import Replayer
from .replay import load as load_replay
from .protocol import (
    FieldReader, ProtocolError, build_server_handshake, negotiate_version,
    parse_client_handshake, split_fields,
)
from .session import LINGER_SECONDS, READ_CHUNK, ClientSession
from .trace import ProtocolTrace
from .validation import Precautions

#: The request log keeps this many most recent entries (seq keeps counting).
REQUEST_LOG_MAX = 100_000
#: Sessions remembered after they close (for the state snapshot).
CLOSED_SESSIONS_KEPT = 50
#: How long stop() waits for connections to finish closing.
CLOSE_TIMEOUT = 1.0

FARM_NOTICES = (
    (ErrorCode.MARKET_DATA_FARM_OK, "Market data farm connection is OK:usfarm"),
    (ErrorCode.HMDS_FARM_OK, "HMDS data farm connection is OK:ushmds"),
    (ErrorCode.SEC_DEF_FARM_OK, "Sec-def data farm connection is OK:secdefnj"),
)
CONNECTIVITY_MESSAGES = {
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    1300: "TWS socket port has been reset and this connection is being dropped. Please reconnect on the new port",
    2103: "Market data farm connection is broken:usfarm",
    2104: "Market data farm connection is OK:usfarm",
    2105: "HMDS data farm connection is broken:ushmds",
    2106: "HMDS data farm connection is OK:ushmds",
    2110: "Connectivity between Trader Workstation and server is broken. It will be restored automatically.",
}
CLIENT_ID_IN_USE_MSG = "Unable to connect as the client id is already in use. Retry with a unique client id."


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
        self.clock = SimClock(config.clock, start, speed=config.replay_speed)
        self.scheduler = Scheduler(self.clock)
        self._own_trace = trace is None and bool(config.trace)
        self.trace = trace if trace is not None else (
            ProtocolTrace(config.trace) if config.trace else None)
        self.pacing_limit = config.pacing_limit
        self.history_pacing = HistoricalPacing(config.history_pacing)
        self.entitlements = Entitlements(config.market_data)
        #: sim time of the last P&L push (reqPnL updates at most once a second)
        self.pnl_pushed_at = float("-inf")
        self.broker = SimBroker(
            universe=self.universe, clock=self.clock, scheduler=self.scheduler,
            seed=config.seed, tick_interval=config.tick_interval, account_id=config.account,
            base_currency=config.base_currency, starting_cash=config.starting_cash,
            market_hours=config.market_hours, listener=self,
            reset_clock=ResetClock(config.pnl_reset),
            precautions=Precautions(price_cap_pct=config.price_cap_pct, percentage=config.precaution_pct,
                                    size_limit=config.size_limit, value_limit=config.value_limit),
            latency=config.latency, tif_preset=config.tif_preset)
        self.delivery = OrderDelivery(self, self.broker.latency)
        self.sessions: dict[int, ClientSession] = {}
        self.by_client_id: dict[int, ClientSession] = {}
        self.closed_sessions: deque[dict] = deque(maxlen=CLOSED_SESSIONS_KEPT)
        self.request_log: deque[dict] = deque(maxlen=REQUEST_LOG_MAX)
        self._request_seq = 0
        self._conn_seq = 0
        self._mkt_index: dict[int, dict[tuple[int, int], ClientSession]] = {}
        self._listener: asyncio.base_events.Server | None = None
        self._control = None
        self._change_callbacks: list[Callable[[], None]] = []
        self._conn_tasks: set[asyncio.Task] = set()
        self._refuse_timer: Timer | None = None
        self.port = config.port
        self.control_port: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = False

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.broker.start()
        if self.replayer is not None:
            self.replayer.start()
        self.scheduler.start()
        await self._listen()
        if self.config.control_port is not None:
            from .control import ControlHTTPServer
            self._control = ControlHTTPServer(self, self.config.control_host,
                                              self.config.control_port)
            self.control_port = await self._control.start()
        self.started = True
        logger.info("sim listening on {}:{} (control {}) clock={} market_hours={} latency={} seed={} account={} {}",
                    self.config.host, self.port,
                    f"{self.config.control_host}:{self.control_port}" if self.control_port else "off",
                    self.config.clock, self.broker.market_hours, self.broker.latency.profile,
                    self.config.seed, self.config.account, self.config.base_currency)

    async def _listen(self) -> None:
        self._listener = await asyncio.start_server(
            self._handle_connection, self.config.host, self.port, reuse_address=True)
        self.port = self._listener.sockets[0].getsockname()[1]

    @property
    def listening(self) -> bool:
        """Is the API port accepting connections?"""
        return self._listener is not None

    async def _unlisten(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def stop(self) -> None:
        """Close the listener, every connection and the control API."""
        self.broker.stop()
        await self._unlisten()
        if self._refuse_timer is not None:
            self._refuse_timer.cancel()
        for session in list(self.sessions.values()):
            session.close("server stopping")
        tasks = list(self._conn_tasks)
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

    async def _handle_connection(self, reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conn_tasks.add(task)
        self._conn_seq += 1
        session = ClientSession(self, self._conn_seq, reader, writer)
        self.sessions[session.conn_id] = session
        if self.trace is not None:
            self.trace.event(self.clock.now(), session.conn_id, "connect")
        logger.info("sim connection c{} opened", session.conn_id)
        try:
            while session.state != "closed":
                try:
                    data = await reader.read(READ_CHUNK)
                except (ConnectionError, OSError):
                    session.close("connection reset")
                    break
                if not data:
                    session.close("peer closed")
                    break
                session.counters.bytes_in += len(data)
                try:
                    for payload in session.decoder.feed(data):
                        if session.state == "closed":
                            break
                        self._handle_payload(session, payload)
                except ProtocolError as exc:
                    self._reject_garbage(session, str(exc))
                except Exception as exc:  # a bug of ours: tell the client, drop it
                    logger.exception("sim error processing a request from {}", session.label)
                    session.send(out.error(-1, ErrorCode.ERROR_PROCESSING_REQUEST,
                                           f"Error processing request: {exc}", session.version or 176))
                    session.close(f"internal error: {exc}", linger=True)
                self.notify()
        except asyncio.CancelledError:
            session.close("server stopping")
            raise
        finally:
            session.close(session.close_reason or "closed")
            if session.lingering:
                await self._linger(reader)
                writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
            except (asyncio.TimeoutError, ConnectionError, OSError, asyncio.CancelledError):
                pass
            if task is not None:
                self._conn_tasks.discard(task)
            self.notify()

    @staticmethod
    async def _linger(reader: asyncio.StreamReader) -> None:
        """Discard the client's input until it closes (or LINGER_SECONDS)."""
        async def drain() -> None:
            while await reader.read(READ_CHUNK):
                pass
        try:
            await asyncio.wait_for(drain(), LINGER_SECONDS)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass

    def _reject_garbage(self, session: ClientSession, why: str) -> None:
        logger.warning("sim {} sent garbage ({}); dropping it", session.label, why)
        if self.trace is not None:
            self.trace.event(self.clock.now(), session.conn_id, "garbage", why)
        if session.state in ("ready", "await_start_api"):
            session.send(out.error(-1, ErrorCode.ERROR_READING_REQUEST,
                                   f"Error reading request: {why}", session.version))
        session.close(f"garbage: {why}", linger=True)

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

    def _handle_payload(self, session: ClientSession, payload: bytes) -> None:
        now = self.clock.now()
        if session.state == "handshake":
            lo, hi, options = parse_client_handshake(payload)
            if self.trace is not None:
                self.trace.incoming(now, session.conn_id, "handshake", [f"v{lo}..{hi}", options])
            version = negotiate_version(lo, hi, self.config.max_server_version)
            if version is None:
                logger.warning("sim {} offers v{}..{}: no common version", session.label, lo, hi)
                session.close(f"unsupported client versions v{lo}..{hi}")
                return
            session.version = version
            session.state = "await_start_api"
            conn_time = out.connection_time(now)
            if self.trace is not None:
                self.trace.outgoing(now, session.conn_id, "handshake", [version, conn_time])
            session.send_raw(build_server_handshake(version, conn_time))
            return
        fields = split_fields(payload)
        try:
            msg_id = int(fields[0])
        except (ValueError, IndexError):
            raise ProtocolError(f"bad message id {fields[0][:20] if fields else ''!r}") from None
        name = in_name(msg_id)
        session.counters.messages_in += 1
        session.counters.by_name_in[name] = session.counters.by_name_in.get(name, 0) + 1
        self._log_request(session, msg_id, name, fields)
        if self.trace is not None:
            self.trace.incoming(now, session.conn_id, name, fields[1:])
        rate = session.over_pacing_limit(self.pacing_limit)
        if rate is not None:
            logger.warning("sim {} exceeded {} messages/s; pacing violation", session.label,
                           self.pacing_limit)
            session.send(out.error(-1, ErrorCode.PACING,
                                   f"Max rate of messages per second has been exceeded:max={self.pacing_limit} rec={rate} (1)",
                                   session.version))
            session.close("pacing violation", linger=True)
            return
        reader = FieldReader(fields, 1)
        if session.state == "await_start_api":
            if msg_id != In.START_API:
                raise ProtocolError(f"expected startApi, got {name}")
            self._start_api(session, reader)
            return
        if msg_id == In.START_API:
            raise ProtocolError("startApi sent twice")
        handler = HANDLERS.get(msg_id)
        if handler is not None:
            handler(self, session, reader)
        elif msg_id in UNSUPPORTED_REQ_ID_POSITION or msg_id in In._value2member_map_:
            handle_unsupported(self, session, msg_id, reader)
        else:
            raise ProtocolError(f"unknown message id {msg_id}")

    def _log_request(self, session: ClientSession, msg_id: int, name: str, fields: list[str]) -> None:
        self._request_seq += 1
        order_id = None
        try:
            if msg_id == In.PLACE_ORDER:
                order_id = int(fields[1])
            elif msg_id == In.CANCEL_ORDER:
                order_id = int(fields[2])
        except (ValueError, IndexError):
            order_id = None
        self.request_log.append({
            "seq": self._request_seq, "clientId": session.client_id, "conn": session.conn_id,
            "name": name, "orderId": order_id, "time": self.clock.now()})

    def _start_api(self, session: ClientSession, r: FieldReader) -> None:
        r.skip(1)  # version
        client_id = r.int()
        r.opt_str()  # optional capabilities
        other = self.by_client_id.get(client_id)
        if other is not None and other.state == "ready":
            logger.warning("sim c{} asked for client id {} which is in use", session.conn_id, client_id)
            session.send(out.error(-1, ErrorCode.CLIENT_ID_IN_USE, CLIENT_ID_IN_USE_MSG, session.version))
            session.close("client id in use", linger=True)
            return
        session.client_id = client_id
        session.state = "ready"
        self.by_client_id[client_id] = session
        if self.request_log and self.request_log[-1]["conn"] == session.conn_id:
            self.request_log[-1]["clientId"] = client_id
        logger.info("sim {} started API (server version {})", session.label, session.version)
        session.send(out.managed_accounts(self.config.account))
        session.send(out.next_valid_id(self.broker.next_valid_id(client_id)))
        for code, text in FARM_NOTICES:
            session.send(out.error(-1, code, text, session.version))

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

    def order_error(self, client_id: int, order_id: int, code: int, message: str,
                    reject_json: str = "", order: SimOrder | None = None) -> None:
        self.delivery.order_error(client_id, order_id, code, message, reject_json, order)

    def execution_report(self, order: SimOrder, execution: Execution,
                         correction: bool = False) -> None:
        self.delivery.execution_report(order, execution, correction)

    def what_if_result(self, client_id: int, req: PlaceOrder, inst: Instrument,
                       preview: MarginPreview) -> None:
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
        sessions = list(self.sessions.values())
        for s in sessions:
            s.close(reason)
        logger.info("sim dropped {} connection(s): {}", len(sessions), reason)
        return len(sessions)

    async def refuse_connections(self, seconds: float | None = None) -> None:
        """Stop listening (clients get ECONNREFUSED) for ``seconds`` of sim time."""
        self.broker.faults.refusing = True
        await self._unlisten()
        if self._refuse_timer is not None:
            self._refuse_timer.cancel()
            self._refuse_timer = None
        if seconds is not None:
            self._refuse_timer = self.scheduler.call_later(
                seconds, lambda: asyncio.ensure_future(self.accept_connections()))
        logger.info("sim refusing connections{}", f" for {seconds}s" if seconds else "")

    async def accept_connections(self) -> None:
        if self._refuse_timer is not None:
            self._refuse_timer.cancel()
            self._refuse_timer = None
        if self._listener is None:
            await self._listen()
        self.broker.faults.refusing = False
        logger.info("sim accepting connections again on port {}", self.port)
        self.notify()

    def broadcast_code(self, code: int, message: str | None = None) -> None:
        """Send a connectivity notice to every client and apply its effect."""
        text = message or CONNECTIVITY_MESSAGES.get(code, f"Simulated notice {code}")
        faults = self.broker.faults
        if code == 1100:
            faults.connectivity_lost = True
        elif code in (1101, 1102):
            faults.connectivity_lost = False
        for s in list(self.sessions.values()):
            if s.ready:
                s.send(out.error(-1, code, text, s.version))
                if code == 1101:
                    # "data lost": market and account subscriptions must be re-requested
                    for req_id in list(s.mkt_data):
                        self.unindex_mkt_data(s, req_id)
                    s.clear_market_subscriptions()
                    s.account_updates = False
                    s.multi_subs.clear()
        logger.info("sim broadcast {} {}", code, text)
        self.notify()

    def connectivity(self, codes: list[int] | None = None, interval: float = 1.0,
                     lost_for: float | None = None, restore: int = 1102) -> list[int]:
        """Emit a 1100/1101/1102 style sequence on the simulated clock."""
        if codes is None:
            codes = [1100] + ([restore] if lost_for is not None else [])
            delays = [0.0] + ([lost_for] if lost_for is not None else [])
        else:
            delays = [i * interval for i in range(len(codes))]
        for code, delay in zip(codes, delays):
            if delay <= 0:
                self.broadcast_code(int(code))
            else:
                self.scheduler.call_later(delay, self.broadcast_code, int(code))
        return [int(c) for c in codes]

    # -- ground truth --------------------------------------------------------------------

    def snapshot(self, log_since: int = 0) -> dict:
        """Everything the control API's ``state`` returns (JSON-ready)."""
        snap = self.broker.snapshot()
        snap.update({
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
        })
        positions = snap["account"]["positions"]
        snap["positions"] = positions
        snap["account_values"] = snap["account"]["values"]
        return snap
