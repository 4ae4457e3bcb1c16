"""The risk governor actor: pre-trade checks with signed approvals, trading states, circuit breakers.

Requests (``bus.risk``): ``CheckOrder`` -> ``RiskDecision``; ``SetTradingState`` -> ``Ack``/``Rejected``;
``EnableStrategy`` -> ``Ack``; ``GetRiskState`` -> ``RiskStateReply``; ``Kill`` -> ``CancelReport`` (halts the
scope here and forwards an ``EmergencyCancel`` to the gateway); ``Resume`` -> ``Ack``; ``Ping``/``GetStatus``;
anything else -> ``Rejected(unknown_command)``.

Events consumed: ``md.`` (reference prices, staleness), ``fill.``/``commission.`` (strategy books, P&L, the
repeated-execution throttle), ``position.``/``account.values`` (IB's positions and account values),
``gw.order.`` (working orders, rejections), ``state.connection`` and ``hb.gateway`` (disconnect breaker),
``control.kill``/``control.resume`` (operators), ``state.trading`` (the gateway's kill latch, mirrored).

Fail closed: until the first gateway snapshot (open orders, positions, account values) every order is rejected
with ``risk.not_ready``; without a usable tick for the symbol an order is rejected; and an order manager that gets
no answer from the governor in time rejects the order itself. Cancels never pass through here, so they always work.

Concurrency: requests run concurrently, but a check's only await (waiting for a first tick) comes before the
checks; from building the view to recording the approval nothing yields, so two orders checked at the same time
always see each other's exposure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import OrderedDict, deque
from typing import Any

from loguru import logger

from actors.risk import codes
from actors.risk.account import AccountState
from actors.risk.breakers import (
    ORIGIN_DAILY_LOSS, ORIGIN_DISCONNECT, ORIGIN_FILL_THROTTLE, ORIGIN_GATEWAY, ORIGIN_REJECT_RATE, Action, Cancel,
    DailyLossBreaker, Disable, DisconnectBreaker, Escalate, Lift, StaleDataBreaker, fill_throttle_actions,
    reject_rate_actions,
)
from actors.risk.cancels import ATTEMPT_MARGIN_S, EmergencyCanceller
from actors.risk.checks import EARLY_CHECKS, BookView, RiskView, Verdict, evaluate
from actors.risk.exposure import ExposureBook, StatusOutcome
from actors.risk.limits import LimitTable
from actors.risk.market import MarketBook
from actors.risk.throttles import DuplicateDetector, OrderRateLimiter, RejectRateTracker, SlidingCount
from actors.risk.trading_state import (
    ACTIVE, GLOBAL, HALTED, REDUCING, Authority, Change, PersistError, TradingStates, TransitionRefused,
)
from bus.actor import Actor
from bus.approval import load_approval_key, sign
from bus.config import KhazadConfig
from bus.messages import (
    Ack, AccountValuesEvent, Alert, CancelReport, CheckOrder, CommissionEvent, ConnectionStateEvent, EnableStrategy,
    FillEvent, GatewaySnapshot, GatewayStatus, GetRiskState, GetSnapshot, GetStatus, Heartbeat, Instrument, Kill, MarketDataAck,
    OrderStatusEvent, PositionEvent, Rejected, Resume, RiskDecision, RiskDecisionEvent, RiskStateReply,
    SetTradingState, SubscribeMarketData, TickEvent, TradingStateEvent, tag_of,
)
from bus.reqrep import AsyncClient, CallContext, RequestTimeout

GATEWAY = "gateway"
#: name under which the governor subscribes to market data at the gateway
MD_SUBSCRIBER = "risk"
#: periodic sweep: pending approvals, stale data, daily loss, gateway liveness, day roll (a timer)
SWEEP_INTERVAL_S = 0.25
SNAPSHOT_TIMEOUT_S = 5.0
#: bound for the direct probe of a gateway whose heartbeats went silent
GATEWAY_PROBE_TIMEOUT_S = 1.0
#: retry interval while the gateway cannot give a snapshot (not up yet, or not READY)
SNAPSHOT_RETRY_S = 1.0
#: how long a direct Kill waits for the gateway's acknowledgement of the forwarded cancel before answering
KILL_REPLY_WAIT_S = 1.5
#: do not ask the gateway again for a symbol's market data more often than this
MD_RETRY_S = 5.0
#: gateway rejections of SubscribeMarketData that mean "no such instrument"
UNKNOWN_SYMBOL_REPLY_CODES = frozenset({"unknown_symbol", "unknown_contract", "not_found", "bad_request",
                                        "ambiguous_contract", "no_contract", "contract_not_found"})
#: strategy-scope states that EnableStrategy lifts (set by risk's own breakers, never by an operator)
STRATEGY_BREAKER_ORIGINS = frozenset({ORIGIN_DAILY_LOSS, ORIGIN_REJECT_RATE, ORIGIN_FILL_THROTTLE})
KILL_MEMORY = 1000
LATENCY_SAMPLES = 10_000
#: the heartbeat reports check latency percentiles over the last this many checks
HEALTH_LATENCY_SAMPLES = 1000


class RiskGovernor(Actor):
    """The risk governor (see module docstring)."""

    name = "risk"
    service = "risk"
    topics = ("md.", "fill.", "commission.", "position.", "account.values", "gw.order.", "state.connection",
              "state.trading", "control.kill", "control.resume", "hb.gateway")

    def __init__(self, cfg: KhazadConfig, *, name: str | None = None) -> None:
        super().__init__(cfg, name=name)
        self.risk = cfg.risk
        self.key = load_approval_key(cfg)  # ConfigError -> exit 78 (bus.runtime)
        self.limits = LimitTable(cfg.risk)
        self.states = TradingStates.load(cfg.path(cfg.risk.state_file))
        self.market = MarketBook()
        self.account = AccountState()
        self.book = ExposureBook()
        self.rate = OrderRateLimiter()
        self.fill_counts = SlidingCount()
        self.duplicates = DuplicateDetector()
        self.reject_rates = RejectRateTracker()
        self.daily_loss = DailyLossBreaker()
        self.stale = StaleDataBreaker()
        self.disconnect = DisconnectBreaker(cfg.risk.on_disconnect, cfg.risk.cancel_on_disconnect,
                                            cfg.risk.resume_after_reconnect)
        if self.states.get(GLOBAL).origin == ORIGIN_DISCONNECT:
            # restarted while the disconnect breaker held the global state: re-arm it, so the next READY
            # snapshot cancels what was left working and lifts it (nothing else ever would)
            self.disconnect.down = self.disconnect.seen_ready = True
            self.disconnect.down_reason = "restored from the persisted state at start"
        #: a probe of the gateway in flight (heartbeats went silent: is it the gateway, or the bus, or us?)
        self._probing: asyncio.Task[None] | None = None
        self.ready = False
        self.snapshots = 0
        self.gateway_incarnation = 0
        self.gateway_last_beat: float | None = None
        self.gateway_beat_interval = cfg.bus.heartbeat_interval_s
        self.md_requested: dict[str, float] = {}
        self.md_instruments: dict[str, Instrument] = {}
        self.md_unknown: dict[str, str] = {}
        self.md_watch_since: dict[str, float] = {}
        #: after a reconnect, market data gets ``stale_data_s`` to flow again before the stale breaker looks
        self.stale_grace_until = 0.0
        self.kills_seen: OrderedDict[str, None] = OrderedDict()
        self.day = dt.date.today()
        self.approved = 0
        self.rejected = 0
        self.check_ns: deque[int] = deque(maxlen=LATENCY_SAMPLES)
        self._resync: asyncio.Event | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self.canceller: EmergencyCanceller | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        self._resync = asyncio.Event()
        self._resync.set()
        self.canceller = EmergencyCanceller(
            self.publish, self._oneshot_gateway_client,
            attempt_timeout_s=self.cfg.gateway.kill_verify_timeout_s + ATTEMPT_MARGIN_S)

    async def on_started(self) -> None:
        # announce the persisted restrictions: a restarted governor is HALTED again before anyone asks (an ACTIVE
        # start is not announced: it must not read as a resume to a strategy while the gateway may still be halted)
        for scope, st in self.states.non_active().items():
            self.publish("state.trading", TradingStateEvent(scope=scope, state=st.state, epoch=st.epoch,  # type: ignore[arg-type]
                                                            reason=st.reason or "risk governor restarted",
                                                            origin=st.origin or "risk"))
        if self.states.load_error:
            self._alert("risk_state", "critical", f"risk governor started HALTED: {self.states.load_error}")
        logger.info("risk: started; global {} (epoch {}), {} scope(s) not ACTIVE, {} strategy(ies) disabled",
                    self.states.get(GLOBAL).state, self.states.epoch, len(self.states.non_active()),
                    len(self.states.disabled))

    async def on_stop(self) -> None:
        if self.canceller is not None:
            self.canceller.cancel_all_tasks()
        for t in list(self._bg):
            t.cancel()
        if self._probing is not None:
            self._probing.cancel()

    def background_tasks(self) -> list[Any]:
        return [self._snapshot_loop(), self._sweep_loop()]

    def health_detail(self) -> dict[str, str]:
        detail = {"ready": str(self.ready).lower(), "state": self.states.get(GLOBAL).state,
                  "epoch": str(self.states.epoch), "approved": str(self.approved), "rejected": str(self.rejected),
                  "working": str(len(self.book.working))}
        recent = sorted(list(self.check_ns)[-HEALTH_LATENCY_SAMPLES:])
        if recent:
            detail["check_p50_us"] = f"{recent[len(recent) // 2] / 1e3:.0f}"
            detail["check_p99_us"] = f"{recent[min(len(recent) - 1, int(len(recent) * 0.99))] / 1e3:.0f}"
        return detail

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def _oneshot_gateway_client(self) -> AsyncClient:
        """A fresh gateway client whose socket the caller closes after one attempt (no stale backlog)."""
        assert self.ctx is not None
        return AsyncClient(self.ctx, self.cfg.bus.gateway, service=GATEWAY, stamper=self.stamper,
                           timeout_s=SNAPSHOT_TIMEOUT_S, retries=0, security=self.security,
                           server_key=self._server_key(GATEWAY))

    def _alert(self, kind: str, severity: str, message: str, **detail: str) -> None:
        self.publish(f"alert.{kind}", Alert(kind=kind, severity=severity, message=message[:2000], source=self.name,
                                            detail=detail))

    # -- requests ------------------------------------------------------------------------------------------------

    async def on_request(self, ctx: CallContext, body: Any) -> Any:
        if isinstance(body, CheckOrder):
            return await self.check_order(body)
        if isinstance(body, SetTradingState):
            return self._operator_set(body.scope, body.state, body.reason, body.origin or ctx.sender)
        if isinstance(body, Kill):
            return await self._kill(body, direct=True, sender=ctx.sender)
        if isinstance(body, Resume):
            return self._operator_set(body.scope, ACTIVE, body.reason, body.origin or ctx.sender)
        if isinstance(body, EnableStrategy):
            return self._enable_strategy(body, ctx.sender)
        if isinstance(body, GetRiskState):
            return self._risk_state()
        return await super().on_request(ctx, body)

    async def check_order(self, req: CheckOrder) -> RiskDecision:
        """Run the pre-trade checks on one order; sign an approval bound to it if they pass."""
        t0 = time.perf_counter_ns()
        order = req.order
        sid, sym = order.strategy_id, order.instrument.symbol
        limits = self.limits.for_strategy(sid)
        verdict = evaluate(order, self._early_view(order), limits, self.limits.account, EARLY_CHECKS)
        if verdict.approved:
            age = self.market.age(sym, time.monotonic())
            if age is None:
                await self._wait_market_data(order.instrument)
            elif age > self.risk.stale_data_s:
                self._request_market_data(order.instrument)  # the stream may have died: ask again, do not wait
        approval = None
        if verdict.approved:
            # from here to the end nothing awaits: the view and the reservation are one atomic step
            now = time.monotonic()
            view = self._view(order, now)
            verdict = evaluate(order, view, limits, self.limits.account)
            if verdict.approved:
                approval = sign(self.key, order, ttl_s=self.risk.approval_ttl_s, is_modify=req.is_modify)
                self.rate.take(sid, limits.max_orders_per_second, now)
                if not req.is_modify:
                    self.duplicates.record(order, limits.duplicate_window_s, now)
                self.book.add_pending(order, expires_mono=now + self.risk.pending_order_ttl_s)
        state, _ = self.states.effective(sid, sym)
        elapsed = time.perf_counter_ns() - t0
        self.check_ns.append(elapsed)
        self._after_decision(order.order_ref, sid, verdict, elapsed, req.is_modify, order)
        return RiskDecision(approved=verdict.approved, code=verdict.code, reason=verdict.reason, approval=approval,
                            trading_state=state)  # type: ignore[arg-type]

    def _after_decision(self, order_ref: str, sid: str, verdict: Verdict, elapsed_ns: int, is_modify: bool,
                        order: Any) -> None:
        what = "modify" if is_modify else "order"
        if verdict.approved:
            self.approved += 1
            logger.info("risk: APPROVED {} {} {} {:g} {} {}{} ({:.0f}us)", what, order_ref, order.side,
                        order.quantity, order.instrument.symbol, order.order_type,
                        f" @{order.limit_price:g}" if order.limit_price is not None else "", elapsed_ns / 1e3)
        else:
            self.rejected += 1
            logger.info("risk: REJECTED {} {} {}: {} ({:.0f}us)", what, order_ref, verdict.code, verdict.reason,
                        elapsed_ns / 1e3)
        self.publish(f"risk.decision.{sid}", RiskDecisionEvent(order_ref=order_ref, approved=verdict.approved,
                                                               code=verdict.code, reason=verdict.reason,
                                                               check_ns=elapsed_ns))
        if verdict.code not in codes.NOT_COUNTED_FOR_REJECT_RATE:
            self._record_reject_rate(sid, order=True, rejected=not verdict.approved)

    def _early_view(self, order: Any) -> RiskView:
        state, scopes = self.states.effective(order.strategy_id, order.instrument.symbol)
        return RiskView(ready=self.ready, state=state, state_scopes=tuple(scopes),
                        disabled_reason=self.states.disabled.get(order.strategy_id),
                        restricted=self.limits.restricted(order.strategy_id))

    def _view(self, order: Any, now: float) -> RiskView:
        sid, sym, ref = order.strategy_id, order.instrument.symbol, order.order_ref
        limits = self.limits.for_strategy(sid)
        state, scopes = self.states.effective(sid, sym)
        price_of = self.market.reference
        book = self.book
        s_buy, s_sell = book.working_qty(sym, sid, exclude=ref)
        a_buy, a_sell = book.working_qty(sym, None, exclude=ref)
        return RiskView(
            ready=self.ready, state=state, state_scopes=tuple(scopes),
            reducing_scopes=tuple(s for s in scopes if self.states.get(s).state == REDUCING),
            disabled_reason=self.states.disabled.get(sid), restricted=self.limits.restricted(sid),
            ref_price=self.market.reference(sym), tick_age_s=self.market.age(sym, now),
            unknown_symbol_reason=self.md_unknown.get(sym) if self.market.reference(sym) is None else None,
            stale_data_s=self.risk.stale_data_s,
            strategy=BookView(position=book.position(sym, sid), working_buy=s_buy, working_sell=s_sell,
                              gross_exposure=book.gross(price_of, sid, exclude=ref)),
            account=BookView(position=book.position(sym), working_buy=a_buy, working_sell=a_sell,
                             gross_exposure=book.gross(price_of, None, exclude=ref)),
            buying_power=self.account.buying_power,
            working_notional=book.working_notional(price_of, None, exclude=ref),
            rate_tokens=self.rate.tokens(sid, limits.max_orders_per_second, now),
            duplicate_of=self.duplicates.duplicate_of(order, limits.duplicate_window_s, now),
        )

    # -- market data ---------------------------------------------------------------------------------------------

    def _request_market_data(self, instrument: Instrument) -> None:
        """Ask the gateway (once per MD_RETRY_S) to stream the symbol; the answer arrives in the background."""
        sym = instrument.symbol
        now = time.monotonic()
        self.md_instruments[sym] = instrument
        last = self.md_requested.get(sym)
        if last is not None and now - last < MD_RETRY_S:
            return
        self.md_requested[sym] = now
        self._spawn(self._subscribe_market_data(instrument), f"risk.md.{sym}")

    async def _subscribe_market_data(self, instrument: Instrument) -> None:
        sym = instrument.symbol
        try:
            reply = await self.client(GATEWAY, timeout_s=max(self.risk.market_data_wait_s, 1.0), retries=0).call(
                SubscribeMarketData(instrument=instrument, subscriber=MD_SUBSCRIBER))
        except RequestTimeout:
            logger.warning("risk: gateway did not answer SubscribeMarketData({})", sym)
            self.md_requested.pop(sym, None)
            return
        if isinstance(reply, MarketDataAck):
            self.md_unknown.pop(sym, None)
            logger.debug("risk: market data for {} subscribed (con_id {})", sym, reply.con_id)
        elif isinstance(reply, Rejected):
            logger.warning("risk: gateway refused market data for {}: {} {}", sym, reply.code, reply.reason)
            if reply.code in UNKNOWN_SYMBOL_REPLY_CODES:
                self.md_unknown[sym] = f"gateway: {reply.reason or reply.code}"
            else:
                self.md_requested.pop(sym, None)
            self.market.wake(sym)

    async def _wait_market_data(self, instrument: Instrument) -> None:
        sym = instrument.symbol
        if sym in self.md_unknown and time.monotonic() - self.md_requested.get(sym, 0.0) < MD_RETRY_S:
            return
        self._request_market_data(instrument)
        await self.market.wait_first_tick(sym, self.risk.market_data_wait_s)

    # -- events --------------------------------------------------------------------------------------------------

    async def on_event(self, topic: str, env: Any) -> None:
        body = env.body
        now = time.monotonic()
        if env.sender == GATEWAY and env.incarnation != self.gateway_incarnation:
            if self.gateway_incarnation:
                logger.warning("risk: gateway restarted (incarnation {} -> {}): resynchronising",
                               self.gateway_incarnation, env.incarnation)
                self.md_requested.clear()
                self._request_resync("gateway restarted")
                for instrument in list(self.md_instruments.values()):  # its market data streams died with it
                    self._request_market_data(instrument)
            self.gateway_incarnation = env.incarnation
        if isinstance(body, TickEvent):
            if self.market.on_tick(body, now):
                self.stale.on_fresh_tick(body.symbol)
        elif isinstance(body, OrderStatusEvent):
            self._on_order_status(body)
        elif isinstance(body, FillEvent):
            self._on_fill(body, now)
        elif isinstance(body, CommissionEvent):
            self.book.on_commission(body)
        elif isinstance(body, PositionEvent):
            self.book.on_position(body.position)
        elif isinstance(body, AccountValuesEvent):
            self.account.update(body.values, body.account)
        elif isinstance(body, ConnectionStateEvent):
            self._on_connection(body)
        elif isinstance(body, Heartbeat):
            if body.actor == GATEWAY:
                self.gateway_last_beat = now
                self.gateway_beat_interval = body.interval_s or self.gateway_beat_interval
                if self.disconnect.down:
                    # the breaker tripped on silence (or was restored at start): a gateway that never lost IB
                    # sends no new READY, so ask for its snapshot; a READY one lifts the breaker
                    self._request_resync("gateway heartbeats while the disconnect breaker is tripped")
        elif isinstance(body, Kill):
            await self._kill(body, direct=False, sender=env.sender)
        elif isinstance(body, Resume):
            try:
                self._operator_set(body.scope, ACTIVE, body.reason, body.origin or env.sender)
            except Exception as exc:  # noqa: BLE001 - logged; a bus resume has no caller to answer
                logger.error("risk: resume from the bus failed: {}", exc)
        elif isinstance(body, TradingStateEvent):
            if env.sender == GATEWAY:
                self._mirror_gateway_state(body)

    def _on_order_status(self, ev: OrderStatusEvent) -> None:
        res = self.book.on_status(ev)
        if res.rejected and res.strategy:
            logger.info("risk: {} rejected downstream ({} {}): counts towards the reject rate", ev.order_ref,
                        ev.status, ev.error_code)
            self._record_reject_rate(res.strategy, order=False, rejected=True)
        if res.outcome is StatusOutcome.UNKNOWN_WORKING:
            logger.warning("risk: working order {} ({}) was not known here: counted on both sides, resynchronising",
                           ev.order_ref, ev.symbol)
            self._request_resync(f"unknown working order {ev.order_ref}")
            try:
                self._request_market_data(Instrument(symbol=ev.symbol))
            except (ValueError, TypeError):
                pass

    def _on_fill(self, ev: FillEvent, now: float) -> None:
        if not self.book.on_fill(ev):
            return
        strategy = self.book.fill_strategy(ev.exec_key)
        if not strategy or ev.replayed or ev.is_correction:
            return
        limits = self.limits.for_strategy(strategy)
        count = self.fill_counts.add(strategy, now, limits.fill_window_s)
        actions = fill_throttle_actions(strategy, count, max_fills=limits.max_fills_per_window,
                                        window_s=limits.fill_window_s)
        if actions:
            self.fill_counts.reset(strategy)
            self._execute(actions)

    def _on_connection(self, ev: ConnectionStateEvent) -> None:
        logger.info("risk: gateway connection {}{}", ev.state, f" ({ev.message})" if ev.message else "")
        was_down = self.disconnect.down
        self._execute(self.disconnect.on_connection(ev.state, ev.message))
        if ev.state == "READY" and was_down:
            self.stale_grace_until = time.monotonic() + self.risk.stale_data_s
            self._request_resync("gateway READY after a disconnect")

    def _mirror_gateway_state(self, ev: TradingStateEvent) -> None:
        """The gateway's kill latch: refuse here too while it is HALTED; lift only what it set."""
        try:
            if ev.state == ACTIVE:
                self._set_state(ev.scope, ACTIVE, ev.reason, ORIGIN_GATEWAY, Authority.LIFT)
            else:
                self._set_state(ev.scope, ev.state, f"gateway: {ev.reason}", ORIGIN_GATEWAY, Authority.BREAKER)
        except PersistError as exc:
            logger.error("risk: could not persist the gateway's {} {}: {}", ev.scope, ev.state, exc)

    def _on_gap(self, sender: str, topic: str, expected: int, received: int) -> None:
        super()._on_gap(sender, topic, expected, received)
        if sender == GATEWAY:
            self._request_resync(f"missed {received - expected} gateway message(s) on {topic}")

    # -- snapshot ------------------------------------------------------------------------------------------------

    def _request_resync(self, why: str) -> None:
        if self._resync is not None and not self._resync.is_set():
            logger.info("risk: resync requested: {}", why)
            self._resync.set()

    async def _snapshot_loop(self) -> None:
        assert self._resync is not None
        while True:
            await self._resync.wait()
            self._resync.clear()
            while True:
                snap = await self._fetch_snapshot()
                if snap is not None:
                    self._apply_snapshot(snap)
                    break
                await asyncio.sleep(SNAPSHOT_RETRY_S)  # retry timer while the gateway is not up/READY

    async def _fetch_snapshot(self) -> GatewaySnapshot | None:
        client = self._oneshot_gateway_client()
        try:
            reply = await client.call(GetSnapshot(), timeout_s=SNAPSHOT_TIMEOUT_S, retries=0)
        except RequestTimeout:
            logger.log("WARNING" if self.ready else "INFO", "risk: gateway snapshot: no answer, retrying")
            return None
        finally:
            client.close()
        if isinstance(reply, GatewaySnapshot):
            return reply
        logger.warning("risk: gateway snapshot refused: {}", reply)
        return None

    def _apply_snapshot(self, snap: GatewaySnapshot) -> None:
        now = time.monotonic()
        self.account.replace(snap.account_values, snap.account)
        self.book.load_positions(snap.positions)
        self.book.load_open_orders(snap.open_orders, now)
        new_fills = sum(self.book.on_fill(f, account_too=False) for f in snap.executions)
        for c in snap.commissions:
            self.book.on_commission(c)
        for o in snap.open_orders:
            self._request_market_data(o.instrument)
        first = not self.ready
        self.ready = True
        self.snapshots += 1
        logger.info("risk: gateway snapshot applied: {} open order(s), {} position(s), {} new execution(s), "
                    "connection {}{}", len(snap.open_orders), len(snap.positions), new_fills, snap.connection,
                    "; accepting orders" if first else "")
        self._execute(self.disconnect.on_connection(snap.connection))

    # -- periodic sweep ------------------------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)  # periodic timer
            try:
                self.sweep(time.monotonic())
            except Exception as exc:  # error policy: log, count, keep sweeping
                logger.opt(exception=exc).error("risk: sweep failed: {}", exc)
                self.record_error(exc)

    def sweep(self, now: float) -> None:
        for ref in self.book.expire_pending(now):
            logger.info("risk: approval for {} never reached the gateway; no longer counted as working", ref)
        today = dt.date.today()
        if today != self.day:
            logger.info("risk: new trading day {}: daily P&L and loss breakers restart", today)
            self.day = today
            self.book.roll_day(self.market.reference)
            self.daily_loss.breached.clear()
        # stale market data on symbols with working orders
        ages: dict[str, float | None] = {}
        working = self.book.working_symbols()
        for sym in working:
            age = self.market.age(sym, now)
            if age is None:
                age = now - self.md_watch_since.setdefault(sym, now)
            ages[sym] = age
        for sym in list(self.md_watch_since):
            if sym not in working:
                del self.md_watch_since[sym]
        # while the gateway is down no tick can arrive: that is the disconnect breaker's business, not staleness
        quiet_ok = self.disconnect.down or now < self.stale_grace_until
        actions: list[Action] = [] if quiet_ok else self.stale.evaluate(ages, self.risk.stale_data_s)
        # gateway process silent (its heartbeats stopped)
        if (self.gateway_last_beat is not None and not self.disconnect.down
                and now - self.gateway_last_beat > self.cfg.bus.heartbeat_liveness * self.gateway_beat_interval
                and (self._probing is None or self._probing.done())):
            # silence may be the bus (proxy restarting) or this process (stopped, starved), not the gateway:
            # ask the gateway directly before tripping
            self._probing = asyncio.create_task(self._probe_gateway(now - self.gateway_last_beat))
        if self.ready:
            actions += self._daily_loss_actions()
        self._execute(actions)

    async def _probe_gateway(self, silent_s: float) -> None:
        client = self._oneshot_gateway_client()
        try:
            reply = await client.call(GetStatus(), timeout_s=GATEWAY_PROBE_TIMEOUT_S, retries=0)
        except RequestTimeout:
            reply = None
        finally:
            client.close()
        if isinstance(reply, GatewayStatus) and reply.connection == "READY":
            logger.info("risk: no gateway heartbeat for {:.1f}s but it answers READY: the bus or this process "
                        "stalled, not the gateway", silent_s)
            self.gateway_last_beat = time.monotonic()
            return
        state = reply.connection if isinstance(reply, GatewayStatus) else "no answer"
        self._execute(self.disconnect.went_down(
            f"gateway heartbeats stopped {silent_s:.1f}s ago and a direct probe found it {state}"))

    def _daily_loss_actions(self) -> list[Action]:
        price_of = self.market.reference
        pnl = self.account.daily_pnl
        if pnl is None:
            pnl = self.book.total_pnl(price_of)
        actions = self.daily_loss.evaluate(GLOBAL, pnl, self.limits.account.daily_loss_limit)
        for sid in sorted(self.book.strategies()):
            actions += self.daily_loss.evaluate(f"strategy:{sid}", self.book.strategy_pnl(sid, price_of),
                                                self.limits.for_strategy(sid).daily_loss_limit)
        return actions

    def _record_reject_rate(self, strategy: str, *, order: bool, rejected: bool) -> None:
        now = time.monotonic()
        rr = self.reject_rates.record(strategy, now, self.risk.reject_rate_window_s, order=order, rejected=rejected)
        actions = reject_rate_actions(strategy, rr, min_orders=self.risk.reject_rate_min_orders,
                                      max_rate=self.risk.reject_rate_max)
        if actions:
            self.reject_rates.reset(strategy)
            self._execute(actions)

    # -- actions and trading state -------------------------------------------------------------------------------

    def _execute(self, actions: list[Action]) -> None:
        """Carry out breaker actions in order. A Lift that follows a Cancel of the same scope waits for the gateway
        to acknowledge that cancel: lifting first would let new orders in that the cancel then sweeps away."""
        cancels: dict[str, asyncio.Task[Any]] = {}
        for a in actions:
            if isinstance(a, Escalate):
                try:
                    change = self._set_state(a.scope, a.state, a.reason, a.origin, Authority.BREAKER)
                except PersistError:  # escalations are applied even unpersisted; cannot happen, but never crash
                    change = None
                if change is not None:
                    self._alert(a.origin.replace("risk.", "breaker_"), "critical",
                                f"{a.scope} -> {a.state}: {a.reason}", scope=a.scope, origin=a.origin)
            elif isinstance(a, Lift):
                pending = cancels.get(a.scope)
                if pending is None:
                    self._lift(a)
                else:
                    pending.add_done_callback(lambda t, a=a: self._lift_after_cancel(t, a))
            elif isinstance(a, Cancel):
                assert self.canceller is not None
                cancels[a.scope] = self.canceller.send(a.scope, a.reason)
            elif isinstance(a, Disable):
                if self.states.disable(a.strategy_id, a.reason):
                    logger.critical("risk: strategy {} DISABLED: {}", a.strategy_id, a.reason)
                    self._alert("breaker_fill_throttle", "critical",
                                f"strategy {a.strategy_id} disabled: {a.reason}", strategy=a.strategy_id)

    def _lift(self, a: Lift) -> None:
        try:
            self._set_state(a.scope, ACTIVE, a.reason, a.origin, Authority.LIFT)
        except PersistError as exc:
            logger.error("risk: could not lift {} ({}): {}", a.scope, a.origin, exc)

    def _lift_after_cancel(self, task: asyncio.Task[Any], a: Lift) -> None:
        if task.cancelled() or task.exception() is not None or task.result().report is None:
            logger.critical("risk: {} stays restricted: its emergency cancel was not acknowledged", a.scope)
            self._alert("breaker_lift", "critical", f"{a.scope} not lifted ({a.origin}): the emergency cancel was "
                        f"not acknowledged by the gateway; Resume by hand once working orders are checked")
            return
        self._lift(a)

    def _set_state(self, scope: str, state: str, reason: str, origin: str, authority: Authority) -> Change | None:
        """Change one scope's state (persisted first) and announce it; None when refused or unchanged."""
        try:
            change = self.states.set(scope, state, reason=reason, origin=origin, authority=authority)
        except TransitionRefused as exc:
            logger.info("risk: {} -> {} by {} not applied: {}", scope, state, origin, exc)
            return None
        if change is None:
            return None
        new = change.new
        log = logger.warning if new.state != ACTIVE else logger.info
        log("risk: trading state {} {} -> {} (epoch {}, by {}): {}", scope, change.old.state, new.state, new.epoch,
            origin, new.reason or reason)
        self.publish("state.trading", TradingStateEvent(scope=scope, state=new.state, epoch=new.epoch,  # type: ignore[arg-type]
                                                        reason=(new.reason or reason)[:500], origin=origin))
        return change

    def _operator_set(self, scope: str, state: str, reason: str, origin: str) -> Ack | Rejected:
        try:
            change = self._set_state(scope, state, reason, origin, Authority.OPERATOR)
        except PersistError as exc:
            return Rejected(code="persist_failed", reason=f"{scope} stays {self.states.get(scope).state}: {exc}",
                            request_type="set_trading_state")
        current = self.states.get(scope)
        if change is not None and not change.persisted:
            return Ack(detail=f"{scope} {current.state} (epoch {self.states.epoch}) NOT persisted")
        return Ack(detail=f"{scope} {current.state} (epoch {self.states.epoch})")

    async def _kill(self, kill: Kill, *, direct: bool, sender: str) -> CancelReport | None:
        t0 = time.monotonic()
        if kill.kill_id not in self.kills_seen:
            self.kills_seen[kill.kill_id] = None
            while len(self.kills_seen) > KILL_MEMORY:
                self.kills_seen.popitem(last=False)
            logger.critical("risk: KILL {} scope={} from {}: {}", kill.kill_id, kill.scope, kill.origin or sender,
                            kill.reason)
            self._set_state(kill.scope, HALTED, f"kill {kill.kill_id}: {kill.reason}", kill.origin or sender,
                            Authority.OPERATOR)
        if not direct:
            return None  # the bus copy: the operator's tooling sent the Kill to the gateway itself
        assert self.canceller is not None
        task = self.canceller.send(kill.scope, f"kill {kill.kill_id}: {kill.reason}",
                                   command_id=kill.kill_id)  # the kill's id: the gateway runs one sweep for both
        done, _ = await asyncio.wait({task}, timeout=KILL_REPLY_WAIT_S)
        state = self.states.get(kill.scope).state
        report = (task.result().report if done and not task.cancelled() and task.exception() is None
                  else None)
        elapsed_ms = (time.monotonic() - t0) * 1000
        if report is not None:
            return CancelReport(command_id=kill.kill_id, scope=kill.scope, trading_state=state,  # type: ignore[arg-type]
                                epoch=self.states.epoch, cancelled=report.cancelled, remaining=report.remaining,
                                remaining_order_refs=report.remaining_order_refs, elapsed_ms=elapsed_ms,
                                confirmed=report.confirmed, detail=f"halted by risk; gateway: {report.detail}")
        working = [w.order_ref for w in self.book.working.values() if _in_scope(kill.scope, w.strategy, w.symbol)]
        return CancelReport(command_id=kill.kill_id, scope=kill.scope, trading_state=state,  # type: ignore[arg-type]
                            epoch=self.states.epoch, cancelled=0, remaining=len(working),
                            remaining_order_refs=working[:100], elapsed_ms=elapsed_ms, confirmed=False,
                            detail="halted by risk; the gateway has not acknowledged the emergency cancel yet "
                                   "(still retrying)")

    def _enable_strategy(self, req: EnableStrategy, sender: str) -> Ack | Rejected:
        sid = req.strategy_id
        try:
            was_disabled = self.states.enable(sid)
        except PersistError as exc:
            return Rejected(code="persist_failed", reason=f"strategy {sid} stays disabled: {exc}",
                            request_type=tag_of(EnableStrategy))
        self.fill_counts.reset(sid)
        self.reject_rates.reset(sid)
        scope = f"strategy:{sid}"
        current = self.states.get(scope)
        lifted = False
        if current.state != ACTIVE and current.origin in STRATEGY_BREAKER_ORIGINS:
            try:
                lifted = self._set_state(scope, ACTIVE, f"re-enabled: {req.reason}", req.origin or sender,
                                         Authority.OPERATOR) is not None
            except PersistError as exc:
                return Rejected(code="persist_failed", reason=f"{scope} stays {current.state}: {exc}",
                                request_type=tag_of(EnableStrategy))
        logger.warning("risk: strategy {} re-enabled by {} ({}): was disabled={}, breaker state lifted={}", sid,
                       req.origin or sender, req.reason, was_disabled, lifted)
        remaining = self.states.get(scope)
        detail = f"strategy {sid} enabled" if (was_disabled or lifted) else f"strategy {sid} was not disabled"
        if remaining.state != ACTIVE:
            detail += f"; {scope} is still {remaining.state} (set by {remaining.origin}): Resume it explicitly"
        return Ack(detail=detail)

    def _risk_state(self) -> RiskStateReply:
        glob = self.states.get(GLOBAL)
        breakers = {
            "connection": self.disconnect.connection or "unknown",
            "disconnect": "tripped: " + self.disconnect.down_reason if self.disconnect.down else "ok",
            "daily_loss": ",".join(sorted(self.daily_loss.breached)) or "ok",
            "stale_data": ",".join(sorted(self.stale.tripped)) or "ok",
            "snapshots": str(self.snapshots),
            "working_orders": str(len(self.book.working)),
        }
        for scope, pnl in sorted(self.daily_loss.last_pnl.items()):
            breakers[f"pnl.{scope}"] = f"{pnl:.2f}"
        assert self.canceller is not None
        for rec in list(self.canceller.history)[-10:]:
            breakers[f"cancel.{rec.command.command_id}"] = rec.describe()
        strategy_states = {k.split(":", 1)[1]: v.state for k, v in self.states.non_active().items()
                           if k.startswith("strategy:")}
        symbols = sorted(set(self.book.account) | self.book.working_symbols())
        sides = {sym: self.book.working_qty(sym) for sym in symbols}
        return RiskStateReply(global_state=glob.state, epoch=self.states.epoch,  # type: ignore[arg-type]
                              positions={sym: self.book.position(sym) for sym in symbols},
                              working_buy={sym: b for sym, (b, _) in sides.items() if b},
                              working_sell={sym: s for sym, (_, s) in sides.items() if s},
                              strategy_states=strategy_states,  # type: ignore[arg-type]
                              disabled_strategies=sorted(self.states.disabled), limits=self.limits.describe(),
                              breakers=breakers, ready=self.ready,
                              scope_states={k: v.state for k, v in self.states.non_active().items()})  # type: ignore[misc]


def _in_scope(scope: str, strategy: str, symbol: str) -> bool:
    if scope == GLOBAL:
        return True
    kind, _, value = scope.partition(":")
    return (kind == "strategy" and value == strategy) or (kind == "symbol" and value == symbol)
