"""The portfolio actor: account summary, positions and per-strategy P&L, kept current from the gateway's events.

Inputs (all pushed by the gateway, nothing is polled for the live view):

* ``fill.*`` / ``commission.*``  -> the :class:`~actors.portfolio.books.Ledger` (de-duplicated by exec_key,
  corrections replace) and the per-strategy books;
* ``position.*``                 -> IB's positions (quantity, average cost): the account-level truth;
* ``account.values``             -> net liquidation, cash, buying power, base currency;
* ``md.*``                       -> marks (mid, else last) per contract (IB conId) for market value and
  unrealized P&L;
* ``state.connection``           -> a reconciliation as soon as the gateway is READY again.

Books: every execution and commission report is stored (:class:`~actors.portfolio.store.BookStore`,
``portfolio.store``) before it is booked; the books of each strategy carry over trading days and restarts
(:class:`~actors.portfolio.keeper.BookKeeper`). Every ``portfolio.sample_interval_s`` equity and exposure are
sampled into the store (the daily report's curves); at the end of the trading day the books roll.

Reconciliation: at start, every ``portfolio.reconcile_interval_s``, after each READY and after a day roll, the
actor fetches the gateway's :class:`~bus.messages.GatewaySnapshot`, applies what it missed (executions,
commissions, positions, account values) and compares IB's positions with the books: every strategy's (external
included) opening positions plus the day's executions (:mod:`~actors.portfolio.positions_check`). While it starts,
holdings at IB that nothing carried into the day explains are adopted into ``external``'s books once two
consecutive snapshots agree (the *baseline*). After that any difference is drift; drift seen in two consecutive
comparisons is reported once per change as an ``Alert`` on ``alert.portfolio`` and a ``ReconciliationReport`` on
``recon.portfolio`` naming each strategy's books in the drifting instruments (every reconciliation publishes a
report; ``ok`` says whether it matched).

Outputs: ``GetAccount`` -> ``AccountReply``, ``GetPositions(strategy_id?)`` -> ``PositionsReply`` and a
``portfolio.snapshot`` on every change, coalesced to at most one per :data:`SNAPSHOT_MIN_INTERVAL_S`.

Collaborators: :class:`~actors.portfolio.valuation.Valuation` holds what IB says (account, values, positions) and
the marks; :class:`~actors.portfolio.snapshot.SnapshotBuilder` turns it and the books into snapshots and samples;
:class:`~actors.portfolio.mark_feed.MarkSubscriptions` asks the gateway for the marks.

Units: a position's market value and unrealized P&L are in the contract's currency (IB's convention), with IB's
multiplier; the snapshot's totals (unrealized P&L, per-strategy P&L) are in the account's base currency, each
contract's amount converted with IB's ``ExchangeRate`` of its currency (at par until IB reports the rate).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from loguru import logger

from actors.portfolio.books import EXTERNAL, QTY_EPSILON, Ledger, instrument_key
from actors.portfolio.drift import DriftReporter
from actors.portfolio.keeper import BookKeeper
from actors.portfolio.mark_feed import MarkSubscriptions, held_contracts
from actors.portfolio.positions_check import PositionCheck, carried_keys, expected_positions
from actors.portfolio.snapshot import SnapshotBuilder
from actors.portfolio.store import BookStore
from actors.portfolio.valuation import Valuation, mark_of
from bus import messages as m
from bus import registry, topics
from bus.actor import Actor
from bus.config import KhazadConfig
from bus.dispatch import Handler
from bus.messages import (
    AccountReply,
    AccountValue,
    AccountValuesEvent,
    CommissionEvent,
    ConnectionStateEvent,
    FillEvent,
    GatewaySnapshot,
    GetAccount,
    GetPositions,
    GetSnapshot,
    PortfolioSnapshot,
    Position,
    PositionEvent,
    PositionsReply,
    ReconciliationReport,
    Rejected,
    TickEvent,
)
from bus.retry import RequestTimeout
from bus.service import CallContext
from bus.tradingday import TradingDay

#: Coalescing window of ``portfolio.snapshot``: at most one publication per window.
SNAPSHOT_MIN_INTERVAL_S = 0.2
#: Until the first snapshot succeeds (gateway not up yet), retry this often (also woken by a READY event).
RECONCILE_RETRY_S = 1.0
#: A drift (or a baseline candidate) is confirmed by a second comparison this much later.
CONFIRM_DELAY_S = 1.0
#: Per-attempt bound and retries for the gateway's GetSnapshot.
SNAPSHOT_TIMEOUT_S = 5.0
SNAPSHOT_RETRIES = 1
#: The day-roll check runs at least this often (a clock jump must not postpone a roll by hours).
DAY_CHECK_MAX_S = 60.0
#: Bound for a market-data subscription request.
MD_TIMEOUT_S = 2.0
#: What the portfolio publishes besides its heartbeat (every topic from bus/topics.py).
SNAPSHOT_TOPIC = topics.PORTFOLIO_SNAPSHOT
RECON_TOPIC = topics.recon(registry.PORTFOLIO.name)
ALERT_TOPIC = topics.alert(registry.PORTFOLIO.name)


class PortfolioActor(Actor):
    """Account, positions and per-strategy P&L from the gateway's events; reconciled against its snapshots."""

    name = "portfolio"
    service = "portfolio"
    topics = (
        topics.FILL_PREFIX,
        topics.COMMISSION_PREFIX,
        topics.POSITION_PREFIX,
        topics.ACCOUNT_VALUES,
        topics.MARKET_DATA_PREFIX,
        topics.CONNECTION_STATE,
    )
    #: The portfolio answers account and position queries only; orders, risk, control and market data are other
    #: actors' requests (``unknown_command``).
    refused_requests = frozenset(
        {
            m.PlaceOrder,
            m.ModifyOrder,
            m.CancelOrder,
            m.CancelAllOrders,
            m.GetOrder,
            m.ListOrders,
            m.WaitOrder,
            m.CheckOrder,
            m.SetTradingState,
            m.EnableStrategy,
            m.GetRiskState,
            m.GetTradingState,
            m.SubmitOrder,
            m.AmendOrder,
            m.CancelIbOrder,
            m.CancelScope,
            m.Kill,
            m.Resume,
            m.EmergencyCancel,
            m.GetSnapshot,
            m.SubscribeMarketData,
            m.UnsubscribeMarketData,
            m.QualifyInstrument,
            m.GetSystemStatus,
            *m.DATA_REQUESTS,  # the data plane's requests: the gateway answers them
            m.PlaceGroup,
            m.CancelGroup,
            m.GetGroup,
            m.CheckGroup,
            m.SubmitGroup,
        }
    )

    def __init__(self, cfg: KhazadConfig, *, name: str | None = None) -> None:
        super().__init__(cfg, name=name)
        self.books = BookKeeper(
            BookStore(cfg.path(cfg.portfolio.store)), TradingDay.from_spec(cfg.portfolio.trading_day)
        )
        #: IB's account, positions and the marks (what IB says, valued)
        self.valuation = Valuation()
        self.snapshots = SnapshotBuilder(self.valuation, self.books)
        self.connection = ""
        self.reconciled = False
        self.reconciliations = 0
        self.check = PositionCheck(cfg.portfolio.drift_tolerance)
        self.drift = DriftReporter(self.name, lambda alert: self.publish(ALERT_TOPIC, alert))
        self.mark_feed = MarkSubscriptions(self.name)
        #: event counter, and when each position / the account values last changed by an event: a snapshot that
        #: was in flight meanwhile is older than those events and must not overwrite them
        self._updates = 0
        self._position_touched: dict[str, int] = {}
        self._values_touched = 0
        self._dirty: asyncio.Event | None = None
        self._reconcile_now: asyncio.Event | None = None
        self.last_change_wall_ns = 0

    # -- lifecycle --------------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        self._dirty = asyncio.Event()
        self._reconcile_now = asyncio.Event()

    async def on_stop(self) -> None:
        await super().on_stop()
        self.books.close()

    def background_tasks(self) -> list[Any]:
        return [self._publish_loop(), self._reconcile_loop(), self._clock_loop()]

    @property
    def ledger(self) -> Ledger:
        """The current trading day's ledger (books from the day's openings plus its executions)."""
        return self.books.ledger

    @property
    def confirmed_drift(self) -> dict[str, float]:
        return self.check.confirmed_drift

    def health_detail(self) -> dict[str, str]:
        return {
            "reconciled": "yes" if self.reconciled else "no",
            "positions": str(len(self.valuation.ib_positions)),
            "fills": str(len(self.ledger.fills)),
            "drift": str(len(self.confirmed_drift)),
            "day": self.books.day,
        }

    # -- events -----------------------------------------------------------------------------------------------

    async def on_event(self, topic: str, env: Any) -> None:
        body = env.body
        if isinstance(body, FillEvent):
            self._on_fill(body)
        elif isinstance(body, CommissionEvent):
            if self.books.add_commission(body):
                self._changed()
        elif isinstance(body, PositionEvent):
            self._on_position(body.position)
        elif isinstance(body, AccountValuesEvent):
            self._on_account_values(body.account, body.values, replace=False)
        elif isinstance(body, TickEvent):
            self._on_tick(body)
        elif isinstance(body, ConnectionStateEvent):
            previous, self.connection = self.connection, body.state
            if body.state == "READY" and previous != "READY":
                logger.info("portfolio: gateway READY, reconciling")
                self.mark_feed.forget()  # a restarted gateway forgot our market-data subscriptions
                self._trigger_reconcile()

    def _on_fill(self, fill: FillEvent) -> None:
        kind, strategy = self.books.add_fill(fill)
        if kind == "duplicate" or kind == "stale":
            logger.debug("portfolio: {} execution {} ({}) ignored", kind, fill.exec_id, fill.order_ref)
            return
        logger.info(
            "portfolio: {} fill {} {} {:g} {} @ {:g} orderRef={} permId={} strategy={}",
            kind,
            fill.exec_id,
            fill.side,
            fill.quantity,
            fill.instrument.symbol,
            fill.price,
            fill.order_ref,
            fill.perm_id,
            strategy,
        )
        self._changed()

    def _on_position(self, pos: Position) -> None:
        self._updates += 1
        self._position_touched[instrument_key(pos.instrument)] = self._updates
        if self.valuation.set_position(pos):
            self._changed()

    def _on_account_values(self, account: str, values: list[AccountValue], *, replace: bool) -> None:
        if not replace:
            self._updates += 1
            self._values_touched = self._updates
        self.valuation.set_values(account, values, replace=replace)
        self._changed()

    def _on_tick(self, tick: TickEvent) -> None:
        mark = mark_of(tick)
        if mark is None or not tick.con_id:
            return
        self.valuation.marks[tick.con_id] = mark
        if self.valuation.holds(tick.con_id, self.ledger):  # a mark of something not held changes no snapshot
            self._changed()

    def _changed(self) -> None:
        self.last_change_wall_ns = time.time_ns()
        if self._dirty is not None:
            self._dirty.set()

    def _on_gap(self, sender: str, topic: str, expected: int, received: int) -> None:
        super()._on_gap(sender, topic, expected, received)
        if sender == registry.GATEWAY.name:
            # lost fills/positions/account values (e.g. the proxy restarted): don't wait for the periodic
            # reconciliation, the gateway's snapshot has what was missed
            logger.info("portfolio: {} gateway message(s) lost on {}: reconciling now", received - expected, topic)
            self._trigger_reconcile()

    def _trigger_reconcile(self) -> None:
        if self._reconcile_now is not None:
            self._reconcile_now.set()

    # -- valuation --------------------------------------------------------------------------------------------

    def strategy_positions(self, strategy: str) -> list[Position]:
        return self.snapshots.strategy_positions(strategy)

    def snapshot(self) -> PortfolioSnapshot:
        return self.snapshots.snapshot(
            reconciled=self.reconciled, as_of_wall_ns=self.last_change_wall_ns or time.time_ns()
        )

    # -- requests ---------------------------------------------------------------------------------------------

    def request_handlers(self) -> Mapping[type, Handler]:
        return {**super().request_handlers(), GetAccount: self._on_get_account, GetPositions: self._on_get_positions}

    async def _on_get_account(self, ctx: CallContext, body: GetAccount) -> AccountReply:
        return AccountReply(snapshot=self.snapshot())

    async def _on_get_positions(self, ctx: CallContext, body: GetPositions) -> PositionsReply:
        if body.strategy_id is None:
            return PositionsReply(positions=self.snapshot().positions)
        return PositionsReply(positions=self.strategy_positions(body.strategy_id))

    # -- reconciliation ---------------------------------------------------------------------------------------

    async def _publish_loop(self) -> None:
        assert self._dirty is not None
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            self.publish(SNAPSHOT_TOPIC, self.snapshot())
            await asyncio.sleep(SNAPSHOT_MIN_INTERVAL_S)  # coalescing window (rate limit), not synchronisation

    async def _clock_loop(self) -> None:
        """Rolls the books when the trading day ends and samples equity and exposure into the store."""
        interval = self.cfg.portfolio.sample_interval_s
        next_sample = time.time()
        while True:
            now = time.time()
            try:
                if self.books.roll_if_due(now):
                    self._changed()
                    self._trigger_reconcile()  # the new day starts reconciled with IB
                if now >= next_sample:
                    next_sample = now + interval
                    self.sample()
            except Exception as exc:  # error policy: log, count, go on (the books in memory stay right)
                logger.opt(exception=exc).error("portfolio: day roll or sample failed: {}", exc)
                self.record_error(exc)
            wait = min(next_sample, self.books.next_roll()) - time.time()
            await asyncio.sleep(max(0.01, min(wait, DAY_CHECK_MAX_S)))  # a timer, not synchronisation

    def sample(self) -> None:
        """One sample of net liquidation, P&L and exposure (account and per strategy) into the store."""
        self.snapshots.sample(self.snapshot())

    async def _reconcile_loop(self) -> None:
        assert self._reconcile_now is not None
        while True:
            delay = self.cfg.portfolio.reconcile_interval_s
            try:
                if await self.reconcile():
                    if self.check.settling:
                        delay = CONFIRM_DELAY_S  # confirm a candidate with a second comparison
                else:
                    delay = RECONCILE_RETRY_S
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # error policy: log, count, try again on the next round
                logger.opt(exception=exc).error("portfolio: reconciliation failed: {}", exc)
                self.record_error(exc)
                delay = RECONCILE_RETRY_S
            try:
                # periodic timer, cut short by a READY event
                await asyncio.wait_for(self._reconcile_now.wait(), timeout=delay)
            except TimeoutError:
                pass
            self._reconcile_now.clear()

    async def reconcile(self) -> bool:
        """One reconciliation against the gateway's snapshot; False when the gateway could not answer."""
        known_before = set(self.ledger.fills)
        asked_at = self._updates
        try:
            reply = await self.client("gateway", timeout_s=SNAPSHOT_TIMEOUT_S, retries=SNAPSHOT_RETRIES).call(
                GetSnapshot()
            )
        except RequestTimeout as exc:
            logger.warning("portfolio: gateway snapshot unavailable: {}", exc)
            return False
        if isinstance(reply, Rejected):
            logger.info("portfolio: gateway refused the snapshot ({}: {})", reply.code, reply.reason)
            return False
        if not isinstance(reply, GatewaySnapshot):
            logger.warning("portfolio: unexpected reply to GetSnapshot: {}", type(reply).__name__)
            return False
        report = self.apply_snapshot(reply, known_before, asked_at)
        self.publish(RECON_TOPIC, report)
        await self._subscribe_market_data()
        return True

    def apply_snapshot(
        self, snap: GatewaySnapshot, known_before: set[str] | None = None, asked_at: int | None = None
    ) -> ReconciliationReport:
        """Apply a gateway snapshot and compare positions (see module docstring); returns the report.
        ``known_before``: the executions held when the snapshot was asked for; ``asked_at``: the event counter
        then (positions and account values changed by events since are newer than the snapshot and kept)."""
        known_before = set(self.ledger.fills) if known_before is None else known_before
        asked_at = self._updates if asked_at is None else asked_at
        if snap.account:
            self.valuation.account = snap.account
        if snap.account_values and self._values_touched <= asked_at:
            self._on_account_values(snap.account, snap.account_values, replace=True)
        replayed = 0
        for fill in snap.executions:
            kind, _ = self.books.add_fill(fill)
            if kind in ("new", "correction", "late"):
                replayed += 1
                if self.reconciled:  # after the first seeding, every recovered execution is news worth a line
                    logger.info(
                        "portfolio: recovered execution {} {} {:g} {} @ {:g} orderRef={} permId={} from the snapshot",
                        fill.exec_id,
                        fill.side,
                        fill.quantity,
                        fill.instrument.symbol,
                        fill.price,
                        fill.order_ref,
                        fill.perm_id,
                    )
        if not self.reconciled:
            logger.info(
                "portfolio: seeded from the gateway: {} execution(s), {} position(s), account {}",
                len(snap.executions),
                len(snap.positions),
                snap.account or "?",
            )
        for report in snap.commissions:
            self.books.add_commission(report)
        positions = {instrument_key(p.instrument): p for p in snap.positions if abs(p.quantity) >= QTY_EPSILON}
        for key, touched in self._position_touched.items():
            if touched > asked_at:  # an event newer than the snapshot wins (a flat one removes)
                positions.pop(key, None)
                if key in self.valuation.ib_positions:
                    positions[key] = self.valuation.ib_positions[key]
        self.valuation.ib_positions = positions
        self.reconciled = True
        self.reconciliations += 1
        self._changed()
        # what the books held at the day's start plus the executions IB had at that moment (a fill that arrived on
        # the bus while the snapshot was in flight is not in IB's positions yet: leave it out of this comparison)
        in_view = known_before | {f.exec_key for f in snap.executions}
        ib = {k: p.quantity for k, p in self.valuation.ib_positions.items()}
        outcome = self.check.compare(ib, expected_positions(self.ledger, in_view), carried_keys(self.ledger))
        if outcome.adopt:
            self.books.adopt_holdings(outcome.adopt, self.valuation.ib_positions)
        if outcome.baseline:
            return ReconciliationReport(
                actor=self.name, replayed_fills=replayed, ok=True, detail="baseline " + outcome.baseline
            )
        return self.drift.report(outcome, replayed, self.valuation.ib_positions, self.ledger.books)

    async def _subscribe_market_data(self) -> None:
        """Ask the gateway for marks of everything held (idempotent; repeated after a gateway restart)."""
        gateway = self.client("gateway", timeout_s=MD_TIMEOUT_S, retries=0)
        await self.mark_feed.subscribe(held_contracts(self.valuation, self.ledger), gateway.call)


__all__ = ["EXTERNAL", "PortfolioActor"]
