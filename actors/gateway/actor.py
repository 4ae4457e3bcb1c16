"""The gateway actor: the one process that owns the IB connection.

Serves ``bus.gateway`` (orders with approvals, cancels, kill/resume, status, snapshots, market data) and
publishes everything IB reports (``gw.order.*``, ``fill.*``, ``commission.*``, ``position.*``,
``account.values``, ``md.*``, ``state.connection``, ``state.trading``, ``recon.gateway``, ``alert.gateway``).
See docs/gateway.md for the semantics; the pieces live in small modules next to this one:

* :mod:`.settings` - mode/account validation (config errors exit 78);
* :mod:`.ib` - the only module importing ib_insync/ib_async, with pacing and execution hooks;
* :mod:`.pacing` - one prioritised outbound budget;
* :mod:`.connection` - connection state table and backoff;
* :mod:`.book` - order records and status interpretation;
* :mod:`.cancels` - the verified cancel sweep behind kill / emergency cancel;
* :mod:`.halts` and :mod:`.persist` - the halt latch and the durable state;
* :mod:`.marketdata` - reference-counted subscriptions (and the subscribe/unsubscribe handlers);
* :mod:`.events` - handlers of the library's events (statuses, errors, executions, positions, ticks);
* :mod:`.killswitch` - kill, emergency cancel, cancel scope, resume.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from loguru import logger

from actors.gateway import connection as cs
from actors.gateway.book import TERMINAL, OrderBook
from actors.gateway.cancels import CancelSweeper
from actors.gateway.convert import (
    account_value, commission_event, error_text, exec_key, exec_revision, fill_event, ib_order, parse_since,
    position_of,
)
from actors.gateway.events import IbEventsMixin
from actors.gateway.halts import GLOBAL_SCOPE, HaltLatch
from actors.gateway.ib import IbSession
from actors.gateway.killswitch import KillSwitchMixin
from actors.gateway.marketdata import MarketDataBook, MarketDataMixin
from actors.gateway.pacing import place_order_id
from actors.gateway.persist import PLACED, ExecJournal, GatewayState, StateCorrupt, StateStore, journal_path
from actors.gateway.settings import GatewaySettings, check_accounts, resolve_settings
from bus.actor import Actor
from bus.approval import ApprovalError, ApprovalVerifier, load_approval_key
from bus.config import EXIT_CONFIG, ConfigError, KhazadConfig
from bus.messages import (
    Ack, Alert, AmendOrder, CancelIbOrder, CancelReport, CancelScope, ConnectionStateEvent, EmergencyCancel,
    GatewaySnapshot,
    GatewayStatus, GetSnapshot, GetStatus, Kill, Ping, Pong, PositionEvent, ReconciliationReport, Rejected, Resume,
    SubmitAck, SubmitOrder, SubscribeMarketData, TradingStateEvent, UnsubscribeMarketData, tag_of,
)
from bus.reqrep import CallContext

#: SubmitAck.status for a second SubmitOrder with an orderRef already placed (no second IB order was created).
DUPLICATE_STATUS = "Duplicate"
#: Bound for IB round trips the gateway awaits (contract lookup, executions, open orders).
IB_REQUEST_TIMEOUT_S = 5.0
#: An amendment is acknowledged once it has left for IB. Queued behind IB's message budget it normally goes within
#: a second or two (the order manager gives up sooner and treats the outcome as unknown); this only bounds the wait.
AMEND_TRANSMIT_TIMEOUT_S = 30.0


class GatewayActor(IbEventsMixin, KillSwitchMixin, MarketDataMixin, Actor):
    """The only process that talks to IB (see module docstring and docs/gateway.md)."""

    name = "gateway"
    service = "gateway"
    topics = ("control.kill", "control.resume", "control.emergency_cancel")

    def __init__(self, cfg: KhazadConfig, *, env: Mapping[str, str] | None = None) -> None:
        super().__init__(cfg)
        self.settings: GatewaySettings = resolve_settings(cfg, env)
        self.verifier = ApprovalVerifier(load_approval_key(cfg, None if env is None else dict(env)))
        state_path = cfg.path(cfg.gateway.state_file)
        self.store = StateStore(state_path)
        self.journal = ExecJournal(journal_path(state_path))
        self.state_problem = ""
        try:
            state = self.store.load()
        except StateCorrupt as exc:
            self.state_problem = str(exc)
            state = GatewayState()
        self.latch = HaltLatch.from_state(state)
        self.journal.load()
        self.session = IbSession(self.settings.client_library, pacing_per_s=self.settings.pacing_per_s,
                                 on_execution=self._on_execution, on_commission=self._on_commission,
                                 on_sent=self._on_sent)
        self.book = OrderBook()
        self.md = MarketDataBook()
        self.conn = cs.ConnectionTracker()
        self.sweeper = CancelSweeper(self.session, self.book, client_id=lambda: self.settings.client_id,
                                     ib_status=self._ib_status)
        self.account = self.settings.account
        self.accounts: list[str] = []
        self.last_ib_code: int | None = None
        self._exec_keys: dict[str, str] = {exec_key(i): i for i in self.journal.fills}
        self._exec_info: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._contracts: dict[Any, Any] = {}
        self._placing: dict[str, asyncio.Future[Any]] = {}
        self._commands: OrderedDict[str, asyncio.Future[CancelReport]] = OrderedDict()
        self._disconnected = asyncio.Event()
        self._connect_errors: list[tuple[int, str]] = []
        self._acct_values: dict[tuple[str, str], str] = {}
        self._acct_flush_pending = False
        self._journal_flush_pending = False
        self._positions: dict[int, Any] = {}
        self._portfolio: dict[int, Any] = {}
        self._position_qty: dict[str, float] = {}
        self._replayed = 0
        self._reconcile_task: asyncio.Task[None] | None = None
        self.pacing_violations = 0
        logger.info("gateway: {}", self.settings.describe())

    # =============================================================================================================
    # lifecycle
    # =============================================================================================================

    async def on_start(self) -> None:
        self._disconnected = asyncio.Event()
        ib = self.session.ib
        ib.orderStatusEvent += self._guard(self._on_order_status)
        ib.openOrderEvent += self._guard(self._on_open_order)
        ib.errorEvent += self._guard(self._on_error)
        ib.disconnectedEvent += self._guard(self._on_disconnected)
        ib.positionEvent += self._guard(self._on_position)
        ib.updatePortfolioEvent += self._guard(self._on_portfolio)
        ib.accountValueEvent += self._guard(self._on_account_value)
        ib.pendingTickersEvent += self._guard(self._on_tickers)

    async def on_started(self) -> None:
        if self.state_problem:
            self.latch.latch(GLOBAL_SCOPE, reason=f"state file unreadable: {self.state_problem}", origin=self.name)
            self._quarantine_state_file()
            self._persist()
            self._alert("critical", f"gateway state file unreadable; starting HALTED: {self.state_problem}")
        for scope in self.latch.halted_scopes():
            rec = self.latch.scopes[scope]  # type: ignore[index]
            self.publish("state.trading", TradingStateEvent(scope=scope, state="HALTED", epoch=rec.epoch,
                                                            reason=rec.reason, origin=rec.origin))
            logger.warning("gateway: {} is HALTED since epoch {} ({}); resume is an explicit command", scope,
                           rec.epoch, rec.reason)
        self._publish_connection()

    def background_tasks(self) -> list[Any]:
        return [self._connection_loop()]

    async def on_stop(self) -> None:
        try:
            self.journal.close()
        except OSError as exc:
            logger.error("gateway: could not flush the exec journal: {}", exc)
        if self.conn.state != cs.STOPPED:
            self.conn.move(cs.STOPPED, message="gateway stopping")
            self._publish_connection()
        self.session.disconnect()

    def health_detail(self) -> dict[str, str]:
        return {"connection": self.conn.state, "trading": self.latch.global_state, "epoch": str(self.latch.epoch),
                "mode": self.settings.mode}

    def _guard(self, fn: Callable[..., None]) -> Callable[..., None]:
        """Library event handlers: an exception is logged with context and counted, never raised into the
        library's decoder."""
        def handler(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:
                logger.opt(exception=exc).error("gateway: handler {} failed: {}", fn.__name__, exc)
                self.record_error(exc)
        handler.__name__ = fn.__name__
        return handler

    # =============================================================================================================
    # persistence, alerts, connection state
    # =============================================================================================================

    def _persist(self) -> bool:
        try:
            self.store.save(self.latch.to_state())
            return True
        except OSError as exc:
            logger.critical("gateway: could not persist the halt latch to {}: {}", self.store.path, exc)
            self._alert("critical", f"could not persist the gateway state ({exc}); the latch holds in memory only")
            return False

    def _quarantine_state_file(self) -> None:
        path = self.store.path
        if path.exists():
            target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            try:
                os.replace(path, target)
                logger.error("gateway: moved the unreadable state file to {}", target)
            except OSError as exc:
                logger.error("gateway: could not move the unreadable state file: {}", exc)

    def _alert(self, severity: str, message: str, **detail: str) -> None:
        if self.publisher is None:
            return
        self.publish("alert.gateway", Alert(kind="gateway", severity=severity, message=message, source=self.name,
                                            detail=detail))  # type: ignore[arg-type]

    def _publish_connection(self) -> None:
        if self.publisher is None:
            return
        self.publish("state.connection", ConnectionStateEvent(
            state=self.conn.state, ib_code=self.conn.ib_code, message=self.conn.message, mode=self.settings.mode,
            server_version=self.session.server_version(), accounts=list(self.accounts)))  # type: ignore[arg-type]

    def _set_conn(self, state: str, *, ib_code: int | None = None, message: str = "") -> None:
        changed = self.conn.move(state, ib_code=ib_code, message=message)
        if changed or ib_code is not None:
            log = logger.warning if state in (cs.DISCONNECTED, cs.STOPPED) else logger.info
            log("gateway: connection {}{}{}", state, f" (IB {ib_code})" if ib_code else "",
                f": {message}" if message else "")
            self._publish_connection()

    def _fatal(self, message: str) -> None:
        """A configuration contradiction discovered at run time: stop for good (exit 78, no restart loop)."""
        logger.critical("gateway: configuration error: {}", message)
        self._alert("critical", f"gateway stopped: {message}")
        if self.conn.state != cs.STOPPED:
            self.conn.move(cs.STOPPED, message=message)
            self._publish_connection()
        self.session.disconnect()
        self.stop(EXIT_CONFIG)

    # =============================================================================================================
    # connection loop and reconciliation
    # =============================================================================================================

    async def _connection_loop(self) -> None:
        s = self.settings
        attempt = 0
        while True:
            self._disconnected.clear()
            self._connect_errors.clear()
            self._set_conn(cs.CONNECTING, message=f"{s.host}:{s.port} client id {s.client_id}")
            self._replayed = 0
            try:
                await self.session.connect(s.host, s.port, s.client_id, timeout=s.connect_timeout_s,
                                           account=s.account, check_accounts=lambda a: check_accounts(s, a))
                if not self.session.is_connected():
                    raise ConnectionError("socket closed while synchronising")
            except asyncio.CancelledError:
                raise
            except ConfigError as exc:  # the server contradicts the mode: stop for good, never fall back
                self._fatal(str(exc))
                return
            except Exception as exc:  # refused, reset, timeout, 326: retry with backoff (never another target)
                self.session.disconnect()
                code = self._connect_errors[-1][0] if self._connect_errors else None
                delay = cs.backoff_delay(attempt, s.reconnect_initial_s, s.reconnect_max_s)
                attempt += 1
                why = (f"client id {s.client_id} still in use (IB 326)" if code == cs.CLIENT_ID_IN_USE
                       else error_text(exc))
                self._set_conn(cs.DISCONNECTED, ib_code=code,
                               message=f"connect to {s.host}:{s.port} failed: {why}; retry {attempt} in {delay:.2f}s")
                await asyncio.sleep(delay)  # backoff timer between attempts, not synchronisation
                continue
            try:
                self.accounts = self.session.managed_accounts()
                self.account = check_accounts(s, self.accounts)
            except ConfigError as exc:
                self._fatal(str(exc))
                return
            attempt = 0
            self.conn.connects += 1
            if self.conn.connects > 1:
                self.conn.reconnects += 1
            self._set_conn(cs.CONNECTED, message=f"server version {self.session.server_version()}, "
                                                 f"account {self.account}")
            await self._reconcile("connect" if self.conn.connects == 1 else "reconnect")
            await self._disconnected.wait()
            if self._reconcile_task is not None:
                self._reconcile_task.cancel()

    def _on_disconnected(self) -> None:
        dropped = self.session.sender.clear()
        self.md.detach_all()
        if dropped:
            logger.warning("gateway: {} queued message(s) dropped with the connection", dropped)
        self._disconnected.set()
        if self.conn.state not in (cs.DISCONNECTED, cs.STOPPED, cs.CONNECTING):
            self._set_conn(cs.DISCONNECTED, message="connection to IB closed; reconnecting")

    async def _reconcile(self, reason: str) -> None:
        """Re-synchronise with IB after (re)connecting or a 1101/1102, then open for orders (READY)."""
        try:
            self._set_conn(cs.RECONCILING, message=reason)
        except cs.IllegalTransition:
            return
        t0 = time.monotonic()
        try:
            report = await self._reconcile_body(reason)
        except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
            logger.warning("gateway: reconciliation interrupted: {}", error_text(exc))
            return
        if not self.session.is_connected() or self.conn.state != cs.RECONCILING:
            return
        self.publish("recon.gateway", report)
        logger.info("gateway: reconciled in {:.0f} ms after {}: {} open order(s), {} replayed fill(s), missing {}, "
                    "unknown {}, drift {}", (time.monotonic() - t0) * 1000, reason, report.open_orders,
                    report.replayed_fills, report.missing_orders, report.unknown_orders, report.position_drift)
        if not report.ok:
            self._alert("warning", f"reconciliation after {reason} found differences: {report.detail}")
        self._set_conn(cs.READY, message=f"reconciled after {reason}")

    async def _reconcile_body(self, reason: str) -> ReconciliationReport:
        first_sync = self.conn.connects == 1 and reason == "connect"
        working_before = {r.key for r in self.book.working()}
        positions_before = dict(self._position_qty)
        seen: set[str] = set()
        unknown: list[str] = []
        for trade in self.session.ib.trades():
            rec, created = self.book.attach(trade)
            seen.add(rec.key)
            st = trade.orderStatus
            ev = self.book.observe(rec, status=st.status, filled=float(st.filled or 0.0),
                                   remaining=float(st.remaining or 0.0), avg_fill_price=float(st.avgFillPrice or 0.0),
                                   last_fill_price=float(st.lastFillPrice or 0.0), replayed=True)
            if ev is not None:
                self._publish_status(ev)
            if rec.is_working and rec.key not in working_before and not first_sync:
                unknown.append(rec.key)
        missing: list[str] = []
        for rec in self.book.working():
            # IB lists this client's open orders after a reconnect; another client's orders are not in that list
            if rec.key in working_before and rec.key not in seen and rec.client_id == self.settings.client_id:
                missing.append(rec.key)
                ev = self.book.observe(rec, status="Cancelled", filled=rec.filled, remaining=rec.remaining,
                                       avg_fill_price=rec.avg_fill_price,
                                       reason="not known to IB after reconnect (never reached IB)", replayed=True)
                if ev is not None:
                    self._publish_status(ev)
        # positions as IB has them now (the library requested them while connecting)
        drift: dict[str, float] = {}
        self._positions.clear()
        now_qty: dict[str, float] = {}
        for pos in self.session.ib.positions():
            if self.account and pos.account != self.account:
                continue
            self._positions[int(pos.contract.conId)] = pos
            now_qty[pos.contract.symbol] = now_qty.get(pos.contract.symbol, 0.0) + float(pos.position)
            self.publish(f"position.{pos.contract.symbol}", PositionEvent(position=position_of(pos)))
        if positions_before:
            for sym in set(positions_before) | set(now_qty):
                d = now_qty.get(sym, 0.0) - positions_before.get(sym, 0.0)
                if abs(d) > 1e-9:
                    drift[sym] = d
        self._position_qty = now_qty
        self._flush_account_values()
        await self._restart_market_data()
        for sweep in list((self.latch.pending or {}).values()):
            logger.warning("gateway: finishing the unconfirmed {} sweep {} (scope {}) after {}", sweep.kind,
                           sweep.command_id, sweep.scope, reason)
            result = await self.sweeper.sweep(sweep.scope, use_global=sweep.scope == GLOBAL_SCOPE,
                                              timeout_s=self.settings.kill_verify_timeout_s)
            if result.confirmed:
                self.latch.clear_pending(sweep.command_id)
                self._persist()
            else:
                self._alert("critical", f"kill {sweep.command_id}: {len(result.remaining)} order(s) still working "
                            f"after reconnect", remaining=",".join(result.remaining[:50]))
        open_orders = len(self.book.working())
        detail = (f"{reason}: {open_orders} open, {self._replayed} replayed fill(s)"
                  + (f", missing {len(missing)}" if missing else "") + (f", unknown {len(unknown)}" if unknown else "")
                  + (f", position drift {drift}" if drift else ""))
        return ReconciliationReport(actor=self.name, open_orders=open_orders, replayed_fills=self._replayed,
                                    unknown_orders=unknown, missing_orders=missing, position_drift=drift,
                                    ok=not missing, detail=detail)

    # =============================================================================================================
    # library events
    # =============================================================================================================

















    # =============================================================================================================
    # requests
    # =============================================================================================================

    async def on_request(self, ctx: CallContext, body: Any) -> Any:
        if isinstance(body, SubmitOrder):
            return await self._submit(body)
        if isinstance(body, AmendOrder):
            return await self._amend(body)
        if isinstance(body, CancelIbOrder):
            return self._cancel_order(body)
        if isinstance(body, CancelScope):
            return await self._cancel_scope(body, ctx)
        if isinstance(body, Kill):
            return await self._kill(body)
        if isinstance(body, EmergencyCancel):
            return await self._emergency(body)
        if isinstance(body, Resume):
            return self._resume(body)
        if isinstance(body, GetStatus):
            return self._status()
        if isinstance(body, GetSnapshot):
            return await self._snapshot(body)
        if isinstance(body, SubscribeMarketData):
            return await self._subscribe(body)
        if isinstance(body, UnsubscribeMarketData):
            return self._unsubscribe(body)
        if isinstance(body, Ping):
            return Pong(actor=self.name, state=self.state.value)
        return Rejected(code="unknown_command", reason=f"gateway does not handle {tag_of(type(body))}",
                        request_type=tag_of(type(body)))

    async def on_event(self, topic: str, env: Any) -> None:
        body = env.body
        if isinstance(body, Kill):
            await self._kill(body)
        elif isinstance(body, EmergencyCancel):
            await self._emergency(body)
        elif isinstance(body, Resume):
            self._resume(body)

    def _order_gate(self, strategy_id: str, symbol: str, request_type: str) -> Rejected | None:
        """Connection and halt checks shared by submit and amend."""
        if not self.conn.ready:
            if self.conn.state in (cs.DISCONNECTED, cs.CONNECTING, cs.STOPPED):
                return Rejected(code="disconnected", reason=f"gateway is not connected to IB ({self.conn.state}"
                                f"{', IB ' + str(self.conn.ib_code) if self.conn.ib_code else ''}): order refused",
                                request_type=request_type)
            return Rejected(code="not_ready", reason=f"gateway is {self.conn.state} (reconciling with IB): order "
                            f"refused until READY", request_type=request_type)
        scope = self.latch.blocking_scope(strategy_id, symbol)
        if scope is not None:
            rec = self.latch.scopes[scope]  # type: ignore[index]
            return Rejected(code="halted", reason=f"trading is HALTED for {scope} (epoch {rec.epoch}: {rec.reason}); "
                            f"resume is an explicit command", request_type=request_type)
        return None

    async def _contract(self, inst: Any) -> Any | None:
        contract = self._contracts.get(inst)
        if contract is None:
            contract = await self.session.qualify(self.session.make_contract(inst), IB_REQUEST_TIMEOUT_S)
            if contract is not None:
                self._contracts[inst] = contract
        return contract

    async def _submit(self, req: SubmitOrder) -> Any:
        spec = req.order
        ref = spec.order_ref
        rtype = tag_of(SubmitOrder)
        inflight = self._placing.get(ref)
        if inflight is not None:
            await asyncio.shield(inflight)
        existing = self.book.get(ref)
        if existing is not None:
            logger.warning("gateway: duplicate SubmitOrder for {}: returning the existing order, no new IB order",
                           existing.label())
            return SubmitAck(order_ref=ref, ib_order_id=existing.ib_order_id, perm_id=existing.perm_id,
                             status=DUPLICATE_STATUS)
        if self.journal.has_placed(ref):
            # placed before a gateway restart and no longer listed by IB (e.g. cancelled): never place it twice
            logger.warning("gateway: duplicate SubmitOrder for {}: placed before a restart, not placing again", ref)
            return SubmitAck(order_ref=ref, ib_order_id=0, perm_id=0, status=DUPLICATE_STATUS)
        refused = self._order_gate(spec.strategy_id, spec.instrument.symbol, rtype)
        if refused is not None:
            logger.info("gateway: order {} refused: {} ({})", ref, refused.code, refused.reason)
            return refused
        try:
            self.verifier.verify(req.approval, spec, is_modify=False)
        except ApprovalError as exc:
            logger.warning("gateway: order {} refused: {} ({})", ref, exc.code, exc.reason)
            return Rejected(code=exc.code, reason=exc.reason, request_type=rtype)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._placing[ref] = fut
        try:
            try:
                contract = await self._contract(spec.instrument)
            except (asyncio.TimeoutError, ConnectionError) as exc:
                return Rejected(code="disconnected", reason=f"contract lookup failed: {error_text(exc)}",
                                request_type=rtype)
            if contract is None:
                return Rejected(code="unknown_symbol", reason=f"IB has no security definition for "
                                f"{spec.instrument.symbol} {spec.instrument.sec_type} {spec.instrument.exchange} "
                                f"{spec.instrument.currency} (IB 200)", request_type=rtype)
            refused = self._order_gate(spec.strategy_id, spec.instrument.symbol, rtype)  # state may have changed
            if refused is not None:
                return refused
            self.journal.record(PLACED, ref)  # before IB sees it: at most one IB order per orderRef, restarts too
            try:
                trade = self.session.place(contract, self.session.make_order(spec, self.account))
            except ConnectionError as exc:
                return Rejected(code="disconnected", reason=f"IB connection lost while placing: {exc}",
                                request_type=rtype)
            rec = self.book.add_placed(spec, trade, self.settings.client_id)
            ev = self.book.observe(rec, status="PendingSubmit", filled=0.0, remaining=float(spec.quantity),
                                   avg_fill_price=0.0)
            if ev is not None:
                self._publish_status(ev)
            return SubmitAck(order_ref=ref, ib_order_id=rec.ib_order_id, perm_id=rec.perm_id, status=rec.status)
        finally:
            self._placing.pop(ref, None)
            fut.set_result(None)

    async def _amend(self, req: AmendOrder) -> Any:
        spec = req.order
        ref = spec.order_ref
        rtype = tag_of(AmendOrder)
        rec = self.book.get(ref)
        if rec is None or rec.trade is None:
            return Rejected(code="not_found", reason=f"no order {ref} at this gateway", request_type=rtype)
        if rec.is_done:
            return Rejected(code="bad_request", reason=f"order {ref} is {rec.status}: nothing to amend",
                            request_type=rtype)
        old = rec.spec
        if old is not None and (old.instrument != spec.instrument or old.side != spec.side):
            return Rejected(code="bad_request", reason="an amendment cannot change the instrument or the side",
                            request_type=rtype)
        if old is None and (spec.instrument.symbol != rec.symbol or spec.side != rec.trade.order.action):
            return Rejected(code="bad_request", reason="an amendment cannot change the instrument or the side",
                            request_type=rtype)
        refused = self._order_gate(spec.strategy_id, spec.instrument.symbol, rtype)
        if refused is not None:
            return refused
        try:
            self.verifier.verify(req.approval, spec, is_modify=True)
        except ApprovalError as exc:
            return Rejected(code=exc.code, reason=exc.reason, request_type=rtype)
        trade = rec.trade
        if trade.orderStatus.status in TERMINAL:
            trade.orderStatus.status = rec.status  # the library's local guess after an error; IB lists it working
        self.session.apply_spec(trade.order, spec)
        rec.modify_pending = True
        rec.spec = spec
        try:
            self.session.place(trade.contract, trade.order)
        except ConnectionError as exc:
            return Rejected(code="disconnected", reason=f"IB connection lost while amending: {exc}",
                            request_type=rtype)
        # acknowledge only what has left for IB: an amendment still queued behind the pacer would be lost with this
        # process (a crash, a disconnect) after the strategy had been told it was sent
        sent = self.session.sender.watch_last(lambda msg: place_order_id(msg) == rec.ib_order_id)
        if sent is not None:
            try:
                transmitted = await asyncio.wait_for(asyncio.shield(sent), AMEND_TRANSMIT_TIMEOUT_S)
            except asyncio.TimeoutError:
                return Rejected(code="timeout", request_type=rtype, reason=f"amendment of {ref} still queued "
                                f"behind IB's message budget after {AMEND_TRANSMIT_TIMEOUT_S:g}s; it goes out later")
            if not transmitted:
                if old is not None and rec.spec is spec:  # never reached IB: the order keeps its previous terms
                    rec.spec = old
                    self.session.apply_spec(trade.order, old)
                rec.modify_pending = False
                logger.info("gateway: amendment of {} not transmitted (superseded or disconnected)", rec.label())
                return Rejected(code="not_sent", request_type=rtype, reason=f"amendment of {ref} was not "
                                f"transmitted to IB (a cancel or kill superseded it, or the connection dropped); "
                                f"the order keeps its previous terms")
        logger.info("gateway: amend {} -> qty {:g} lmt {} stp {}", rec.label(), spec.quantity, spec.limit_price,
                    spec.stop_price)
        return SubmitAck(order_ref=ref, ib_order_id=rec.ib_order_id, perm_id=rec.perm_id, status=rec.status)


    def _cancel_order(self, req: CancelIbOrder) -> Any:
        rtype = tag_of(CancelIbOrder)
        rec = self.book.get(req.order_ref)
        if rec is None:
            return Rejected(code="not_found", reason=f"no order {req.order_ref!r} at this gateway", request_type=rtype)
        if rec.is_done:
            return Ack(detail=f"already {rec.status}")
        if not rec.transmitted and self._purge_unsent(rec_only=rec):
            return Ack(detail="cancelled before transmission")
        # an amendment still queued behind the pacer would reach IB after this cancel (cancels go first) and be
        # refused there after the strategy was told it was sent: the cancel supersedes it, drop it
        # (whether or not IB has confirmed an earlier amendment: modify_pending only tracks the latest confirmation)
        dropped = self._purge_unsent(rec_only=rec)
        if dropped:
            rec.modify_pending = False
            logger.info("gateway: queued amendment of {} dropped: the cancel supersedes it", rec.label())
        if not self.session.is_connected():
            return Rejected(code="disconnected", reason="gateway is not connected to IB: cancel not sent",
                            request_type=rtype)
        if not self.sweeper.cancel_one(rec):
            return Rejected(code="bad_request", reason=f"order {rec.label()} belongs to client id {rec.client_id}; "
                            f"only a global cancel (kill) reaches it", request_type=rtype)
        logger.info("gateway: cancel sent for {}{}", rec.label(), f" ({req.reason})" if req.reason else "")
        return Ack(detail="cancel sent" + (" (a queued amendment was dropped)" if dropped else ""))







    def _status(self) -> GatewayStatus:
        return GatewayStatus(
            mode=self.settings.mode, connection=self.conn.state, trading_state=self.latch.global_state,  # type: ignore
            epoch=self.latch.epoch, account=self.account, server_version=self.session.server_version(),
            client_id=self.settings.client_id, open_orders=len(self.book.working()), last_ib_code=self.last_ib_code,
            reconnects=self.conn.reconnects, pacing_queue=self.session.sender.queued, market_data=self.md.counts(),
            halted_scopes=self.latch.halted_scopes())

    async def _snapshot(self, req: GetSnapshot) -> Any:
        rtype = tag_of(GetSnapshot)
        try:
            since = parse_since(req.exec_since)
        except ValueError as exc:
            return Rejected(code="bad_request", reason=str(exc), request_type=rtype)
        if not self.session.is_connected():
            return Rejected(code="disconnected", reason="gateway is not connected to IB", request_type=rtype)
        try:
            fills = await self.session.executions(IB_REQUEST_TIMEOUT_S,
                                                  since=since.strftime("%Y%m%d-%H:%M:%S") if since else "")
        except (asyncio.TimeoutError, ConnectionError) as exc:
            return Rejected(code="disconnected", reason=f"executions request failed: {error_text(exc)}",
                            request_type=rtype)
        executions = []
        commissions = []
        for f in fills:
            t = f.execution.time
            if since is not None and hasattr(t, "timestamp") and t.timestamp() < since.timestamp():
                continue
            executions.append(fill_event(f.contract, f.execution, is_correction=exec_revision(f.execution.execId) > 1,
                                         replayed=False))
            if getattr(f.commissionReport, "execId", ""):
                commissions.append(commission_event(f.commissionReport, order_ref=f.execution.orderRef or "",
                                                    symbol=f.contract.symbol))
        ib = self.session.ib
        positions = [position_of(p, self._portfolio.get(int(p.contract.conId))) for p in ib.positions()
                     if not self.account or p.account == self.account]
        values = [account_value(v) for v in ib.accountValues(self.account)] if self.account else []
        return GatewaySnapshot(open_orders=[ib_order(t, self._ib_status(t)) for t in ib.openTrades()],
                               executions=executions, commissions=commissions, positions=positions,
                               account_values=values, account=self.account,
                               connection=self.conn.state, as_of_wall_ns=time.time_ns())  # type: ignore[arg-type]

    # -- market data -------------------------------------------------------------------------------------------







def build_gateway(cfg: KhazadConfig) -> GatewayActor:
    """Factory for :func:`bus.runtime.main` (a ConfigError here exits 78)."""
    return GatewayActor(cfg)


