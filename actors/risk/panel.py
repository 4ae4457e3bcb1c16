"""The breaker panel: feeds the circuit breakers of :mod:`actors.risk.breakers` (pure rules) with what the
governor sees, and carries out the actions they return: trading-state changes (through the
:class:`~actors.risk.state_keeper.TradingStateKeeper`), emergency cancels (through the
:class:`~actors.risk.cancels.EmergencyCanceller`), disabled strategies, and an alert for each.

Inputs: the gateway's connection state, heartbeat silence (confirmed by a direct probe first), each snapshot's
connection, fills (repeated-execution throttle), decisions and downstream rejections (reject rate), and a periodic
sweep (stale market data on contracts with working orders during their trading hours, daily loss from IB's daily
P&L, the strategies' day roll at IB's reset).
"""

from __future__ import annotations

import asyncio
import functools
import time

from loguru import logger

from actors.risk.breakers import (
    ORIGIN_DAILY_LOSS,
    ORIGIN_DISCONNECT,
    ORIGIN_FILL_THROTTLE,
    ORIGIN_REJECT_RATE,
    UP_STATE,
    Action,
    Cancel,
    CancelOrders,
    DailyLossBreaker,
    Disable,
    DisconnectBreaker,
    Escalate,
    Lift,
    Stale,
    StaleDataBreaker,
    fill_throttle_actions,
    reject_rate_actions,
)
from actors.risk.cancels import CancelRecord, EmergencyCanceller
from actors.risk.fx import FxRates
from actors.risk.limits import LimitTable
from actors.risk.mirror import GatewayMirror
from actors.risk.ports import AlertSender
from actors.risk.quotes import MarketDataFeed
from actors.risk.state_keeper import TradingStateKeeper
from actors.risk.throttles import RejectRateTracker, SlidingCount
from actors.risk.trading_state import ACTIVE, GLOBAL, Authority, PersistError, strategy_scope
from bus.config import RiskConfig
from bus.messages import Ack, EnableStrategy, Rejected, tag_of
from bus.registry import EXTERNAL_STRATEGY
from bus.sessions import Session, open_since, session_of

#: strategy-scope states that EnableStrategy lifts (set by risk's own breakers, never by an operator)
STRATEGY_BREAKER_ORIGINS = frozenset({ORIGIN_DAILY_LOSS, ORIGIN_REJECT_RATE, ORIGIN_FILL_THROTTLE})


class BreakerPanel:
    """The circuit breakers and their actions (see module docstring)."""

    def __init__(
        self,
        risk: RiskConfig,
        limits: LimitTable,
        states: TradingStateKeeper,
        canceller: EmergencyCanceller,
        alerts: AlertSender,
        quotes: MarketDataFeed,
        fx: FxRates,
        gateway: GatewayMirror,
    ) -> None:
        self._risk = risk
        self._limits = limits
        self._states = states
        self._canceller = canceller
        self._alerts = alerts
        self._quotes = quotes
        self._fx = fx
        self._gateway = gateway
        self.daily_loss = DailyLossBreaker()
        self.stale = StaleDataBreaker(risk.stale_data_cancels_resting)
        self.disconnect = DisconnectBreaker(risk.on_disconnect, risk.cancel_on_disconnect, risk.resume_after_reconnect)
        self.fill_counts = SlidingCount()
        self.reject_rates = RejectRateTracker()
        #: after a reconnect, market data gets ``stale_data_s`` to flow again before the stale breaker looks
        self.stale_grace_until = 0.0
        #: a probe of the gateway in flight (heartbeats went silent: is it the gateway, or the bus, or us?)
        self._probing: asyncio.Task[None] | None = None
        if states.state_of(GLOBAL).origin == ORIGIN_DISCONNECT:
            # restarted while the disconnect breaker held the global state: re-arm it, so the next READY
            # snapshot cancels what was left working and lifts it (nothing else ever would)
            self.disconnect.down = self.disconnect.seen_ready = True
            self.disconnect.down_reason = "restored from the persisted state at start"

    @property
    def gateway_down(self) -> bool:
        """The disconnect breaker is tripped (the gateway lost IB, or went silent)."""
        return self.disconnect.down

    # -- inputs --------------------------------------------------------------------------------------------------

    def on_connection(self, state: str, message: str = "") -> bool:
        """The gateway's ``state.connection``; True when it is READY again after a disconnect (resynchronise)."""
        logger.info("risk: gateway connection {}{}", state, f" ({message})" if message else "")
        was_down = self.disconnect.down
        self.execute(self.disconnect.on_connection(state, message))
        if state == UP_STATE and was_down:
            self.stale_grace_until = time.monotonic() + self._risk.stale_data_s
            return True
        return False

    def on_snapshot_connection(self, state: str) -> None:
        """The connection state a snapshot reports (a READY one lifts a tripped disconnect breaker)."""
        self.execute(self.disconnect.on_connection(state))

    def on_fresh_tick(self, con_id: int) -> None:
        self.stale.on_fresh_tick(con_id)

    def on_strategy_fill(self, strategy: str, now: float) -> None:
        """One live fill of ``strategy``: the repeated-execution throttle."""
        limits = self._limits.for_strategy(strategy)
        count = self.fill_counts.add(strategy, now, limits.fill_window_s)
        actions = fill_throttle_actions(
            strategy, count, max_fills=limits.max_fills_per_window, window_s=limits.fill_window_s
        )
        if actions:
            self.fill_counts.reset(strategy)
            self.execute(actions)

    def count_decision(self, strategy: str, rejected: bool) -> None:
        """One of the governor's own decisions, for the reject-rate breaker."""
        self.record_reject_rate(strategy, order=True, rejected=rejected)

    def record_reject_rate(self, strategy: str, *, order: bool, rejected: bool) -> None:
        now = time.monotonic()
        rr = self.reject_rates.record(strategy, now, self._risk.reject_rate_window_s, order=order, rejected=rejected)
        actions = reject_rate_actions(
            strategy, rr, min_orders=self._risk.reject_rate_min_orders, max_rate=self._risk.reject_rate_max
        )
        if actions:
            self.reject_rates.reset(strategy)
            self.execute(actions)

    def sweep(self, now: float) -> None:
        """The periodic look: the strategies' day roll (IB's reset), stale market data, gateway silence, daily
        loss; the strategies' books are written when they changed."""
        wall = time.time()
        days = self._gateway.book.days
        days.roll(wall)
        # while the gateway is down no tick can arrive: that is the disconnect breaker's business, not staleness
        quiet_ok = self.disconnect.down or now < self.stale_grace_until
        actions: list[Action] = [] if quiet_ok else self._stale_actions(now, wall)
        silent = self._gateway.silence(now)
        if silent is not None and not self.disconnect.down and (self._probing is None or self._probing.done()):
            # silence may be the bus (proxy restarting) or this process (stopped, starved), not the gateway:
            # ask the gateway directly before tripping
            self._probing = asyncio.create_task(self._probe(silent))
        if self._gateway.ready:
            actions += self._daily_loss_actions()
        self.execute(actions)
        days.save()

    def _stale_actions(self, now: float, wall: float) -> list[Action]:
        """Contracts with working orders and no tick for ``stale_data_s`` of their trading hours. A closed market
        is never stale, and the time before the session opened does not count."""
        book = self._gateway.book
        ages: dict[int, float] = {}
        for con_id, age in self._quotes.stale_ages(book.working_con_ids(), now).items():
            info = self._quotes.info(con_id)
            if info is not None:
                if session_of(info, wall) is Session.CLOSED:
                    self.stale.on_fresh_tick(con_id)  # a new quiet spell starts with the next session
                    continue
                since = open_since(info, wall)
                if since is not None:
                    age = min(age, since)
            ages[con_id] = age
        resting = {c: [w.order_ref for w in book.working_in(c) if w.resting_day_order] for c in ages}
        names = {c: book.display(c) for c in ages}
        return self.stale.evaluate(ages, self._risk.stale_data_s, resting=resting, names=names)

    async def _probe(self, silent_s: float) -> None:
        state = await self._gateway.probe()
        if state == UP_STATE:
            logger.info(
                "risk: no gateway heartbeat for {:.1f}s but it answers READY: the bus or this process "
                "stalled, not the gateway",
                silent_s,
            )
            return
        self.execute(
            self.disconnect.went_down(
                f"gateway heartbeats stopped {silent_s:.1f}s ago and a direct probe found it {state}"
            )
        )

    def strategy_pnl(self, owner: str) -> float:
        """One strategy's daily P&L since IB's reset (base currency: :mod:`actors.risk.daybook`)."""
        book = self._gateway.book
        price_of = functools.partial(book.value_price, valuer=self._fx)
        rate_of = self._fx.rate

        def carried_move(con_id: int) -> float | None:
            ib_daily = self._gateway.ib_daily(con_id)
            return book.days.carried_move(con_id, book.position(con_id), ib_daily, price_of, rate_of)

        return book.days.daily_pnl(owner, price_of, rate_of, carried_move)

    def account_pnl(self) -> float:
        """IB's daily P&L of the account (reqPnL); until IB reports it, the sum of every owner's."""
        ib = self._gateway.account_pnl
        if ib is not None and ib.daily_pnl is not None:
            return ib.daily_pnl
        return sum(self.strategy_pnl(o) for o in self._gateway.book.days.owners())

    def _daily_loss_actions(self) -> list[Action]:
        book = self._gateway.book
        actions = self.daily_loss.evaluate(GLOBAL, self.account_pnl(), self._limits.account.daily_loss_limit)
        for sid in sorted(book.strategies() - {EXTERNAL_STRATEGY}):
            actions += self.daily_loss.evaluate(
                strategy_scope(sid), self.strategy_pnl(sid), self._limits.for_strategy(sid).daily_loss_limit
            )
        return actions

    # -- operator ------------------------------------------------------------------------------------------------

    def enable_strategy(self, req: EnableStrategy, sender: str) -> Ack | Rejected:
        """Re-enable a strategy: clear its throttle windows and lift a state one of risk's own breakers set on it
        (an operator's state stays until an explicit Resume)."""
        sid = req.strategy_id
        try:
            was_disabled = self._states.enable(sid)
        except PersistError as exc:
            return Rejected(
                code="persist_failed",
                reason=f"strategy {sid} stays disabled: {exc}",
                request_type=tag_of(EnableStrategy),
            )
        self.fill_counts.reset(sid)
        self.reject_rates.reset(sid)
        scope = strategy_scope(sid)
        current = self._states.state_of(scope)
        lifted = False
        if current.state != ACTIVE and current.origin in STRATEGY_BREAKER_ORIGINS:
            try:
                lifted = (
                    self._states.apply(
                        scope,
                        ACTIVE,
                        f"re-enabled: {req.reason}",
                        req.origin or sender,
                        Authority.OPERATOR,
                        cause="operator",
                    )
                    is not None
                )
            except PersistError as exc:
                return Rejected(
                    code="persist_failed",
                    reason=f"{scope} stays {current.state}: {exc}",
                    request_type=tag_of(EnableStrategy),
                )
        logger.warning(
            "risk: strategy {} re-enabled by {} ({}): was disabled={}, breaker state lifted={}",
            sid,
            req.origin or sender,
            req.reason,
            was_disabled,
            lifted,
        )
        remaining = self._states.state_of(scope)
        detail = f"strategy {sid} enabled" if (was_disabled or lifted) else f"strategy {sid} was not disabled"
        if remaining.state != ACTIVE:
            detail += f"; {scope} is still {remaining.state} (set by {remaining.origin}): Resume it explicitly"
        return Ack(detail=detail)

    # -- actions -------------------------------------------------------------------------------------------------

    def execute(self, actions: list[Action]) -> None:
        """Carry out breaker actions in order. A Lift that follows a Cancel of the same scope waits for the gateway
        to acknowledge that cancel: lifting first would let new orders in that the cancel then sweeps away."""
        cancels: dict[str, asyncio.Task[CancelRecord]] = {}
        for a in actions:
            if isinstance(a, Escalate):
                try:
                    change = self._states.apply(
                        a.scope, a.state, a.reason, a.origin, Authority.BREAKER, cause="breaker"
                    )
                except PersistError:  # escalations are applied even unpersisted; cannot happen, but never crash
                    change = None
                if change is not None:
                    self._alerts.send(
                        a.origin.replace("risk.", "breaker_"),
                        "critical",
                        f"{a.scope} -> {a.state}: {a.reason}",
                        scope=a.scope,
                        origin=a.origin,
                    )
            elif isinstance(a, Lift):
                pending = cancels.get(a.scope)
                if pending is None:
                    self._states.lift(a.scope, a.reason, a.origin)
                else:
                    pending.add_done_callback(functools.partial(self._lift_after_cancel, lift=a))
            elif isinstance(a, Cancel):
                cancels[a.scope] = self._canceller.send(a.scope, a.reason)
            elif isinstance(a, Stale):
                logger.warning("risk: stale market data: {}; new orders in it are rejected", a.reason)
                self._alerts.send("breaker_stale_data", "warning", a.reason, con_id=str(a.con_id))
            elif isinstance(a, CancelOrders):
                self._canceller.cancel_orders(a.order_refs, a.reason)
            elif isinstance(a, Disable):
                if self._states.disable(a.strategy_id, a.reason):
                    logger.critical("risk: strategy {} DISABLED: {}", a.strategy_id, a.reason)
                    self._alerts.send(
                        "breaker_fill_throttle",
                        "critical",
                        f"strategy {a.strategy_id} disabled: {a.reason}",
                        strategy=a.strategy_id,
                    )

    def _lift_after_cancel(self, task: asyncio.Task[CancelRecord], *, lift: Lift) -> None:
        if task.cancelled() or task.exception() is not None or task.result().report is None:
            logger.critical("risk: {} stays restricted: its emergency cancel was not acknowledged", lift.scope)
            self._alerts.send(
                "breaker_lift",
                "critical",
                f"{lift.scope} not lifted ({lift.origin}): the emergency "
                f"cancel was not acknowledged by the gateway; Resume by hand once working orders are "
                f"checked",
            )
            return
        self._states.lift(lift.scope, lift.reason, lift.origin)

    # -- status --------------------------------------------------------------------------------------------------

    def describe(self) -> dict[str, str]:
        """The breakers' state for ``GetRiskState``."""
        return {
            "connection": self.disconnect.connection or "unknown",
            "disconnect": "tripped: " + self.disconnect.down_reason if self.disconnect.down else "ok",
            "daily_loss": ",".join(sorted(self.daily_loss.breached)) or "ok",
            "stale_data": ",".join(self._gateway.book.display(c) for c in sorted(self.stale.tripped)) or "ok",
        }

    def describe_pnl(self) -> dict[str, str]:
        """The last P&L the daily-loss breaker saw, per scope."""
        return {f"daily_pnl.{scope}": f"{pnl:.2f}" for scope, pnl in sorted(self.daily_loss.last_pnl.items())}

    def close(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
