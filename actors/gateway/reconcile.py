"""Reconciliation after a (re)connect or IB's 1101/1102: bring the gateway's view back to IB's before READY; and
:class:`OrderResync`, IB asked again about orders when a notice left their state in doubt.

Reconciliation, in order: IB lists every client's working orders (reqAllOpenOrders: other client ids' and orders
typed into TWS come back as ``external``); every trade the library synchronised is attached to its record and its
status published (replayed); an order of this client that worked before the gap and IB no longer lists is
reported Cancelled (cause ``reconnect``); another client's order IB no longer lists is forgotten (its outcome is
not reported to this client); positions are republished with their drift; account values are flushed; market-data
streams are requested again, and IB's daily P&L; kills whose sweep was never confirmed are finished. The result is one
:class:`~bus.messages.ReconciliationReport`.
"""

from __future__ import annotations

import asyncio

from loguru import logger

from actors.gateway.account import AccountFeed
from actors.gateway.cancels import RECONNECT_CAUSE
from actors.gateway.connection import ConnectionTracker
from actors.gateway.convert import error_text
from actors.gateway.executions import ExecutionFeed
from actors.gateway.ib import IB_REQUEST_TIMEOUT_S, IbSession
from actors.gateway.killswitch import KillSwitch
from actors.gateway.marketdata import MarketDataFeed
from actors.gateway.ordertable import GATEWAY, IB, IbOrderTable
from actors.gateway.outbox import Outbox
from actors.gateway.pnl import PnLFeed
from bus.messages import ReconciliationReport

#: Statuses the client library sets on its own (a cancel it sent), never IB's report.
LOCAL_STATUSES = frozenset({"PendingCancel"})


class Reconciler:
    """Builds the reconciliation (see module docstring); the connection supervisor decides when it runs."""

    def __init__(
        self,
        *,
        session: IbSession,
        table: IbOrderTable,
        conn: ConnectionTracker,
        account: AccountFeed,
        executions: ExecutionFeed,
        market_data: MarketDataFeed,
        pnl: PnLFeed,
        killswitch: KillSwitch,
        outbox: Outbox,
        client_id: int,
        source: str,
    ) -> None:
        self.session = session
        self.table = table
        self.conn = conn
        self.account = account
        self.executions = executions
        self.market_data = market_data
        self.pnl = pnl
        self.killswitch = killswitch
        self.outbox = outbox
        self.client_id = client_id
        self.source = source

    def connecting(self) -> None:
        """A connect attempt begins: count the executions replayed from here on."""
        self.executions.replayed = 0

    async def reconcile(self, reason: str) -> ReconciliationReport:
        first_sync = self.conn.connects == 1 and reason == "connect"
        working_before = {r.key for r in self.table.working()}
        seen: set[str] = set()
        unknown: list[str] = []
        # every client's working orders, as IB lists them (the session's hooks publish their statuses)
        listed_trades = await self.session.all_open_orders(IB_REQUEST_TIMEOUT_S)
        listed = {id(t) for t in listed_trades}
        trades = self.session.trades()
        known = {id(t) for t in trades}
        for trade in trades + [t for t in listed_trades if id(t) not in known]:
            rec, _ = self.table.attach(trade)
            seen.add(rec.key)
            st = trade.orderStatus
            status = self.session.ib_status(trade) if id(trade) in listed else st.status
            if status in LOCAL_STATUSES and rec.status:
                status = rec.status  # the library's own guess (a cancel it sent), not IB's
            self.outbox.maybe_order_status(
                self.table.observe(
                    rec,
                    status=status,
                    filled=float(st.filled or 0.0),
                    remaining=float(st.remaining or 0.0),
                    avg_fill_price=float(st.avgFillPrice or 0.0),
                    last_fill_price=float(st.lastFillPrice or 0.0),
                    replayed=True,
                    source=IB,
                )
            )
            if rec.is_working and rec.key not in working_before and not first_sync:
                unknown.append(rec.key)
        missing: list[str] = []
        for rec in self.table.working():
            if rec.key in working_before and rec.key not in seen:
                if rec.client_id == self.client_id and rec.is_khazad:
                    # IB lists this client's open and completed orders after a reconnect: it never had this one
                    missing.append(rec.key)
                    self.outbox.maybe_order_status(
                        self.table.observe(
                            rec,
                            status="Cancelled",
                            filled=rec.filled,
                            remaining=rec.remaining,
                            avg_fill_price=rec.avg_fill_price,
                            reason=RECONNECT_CAUSE,
                            replayed=True,
                            source=GATEWAY,
                        )
                    )
                else:
                    # another client's (or a TWS) order IB no longer lists: it ended, and IB does not tell this
                    # client how; forgotten rather than guessed (risk's snapshot no longer lists it either)
                    logger.info("gateway: {} is no longer listed by IB: forgotten", rec.label())
                    self.table.remove(rec)
        drift = self.account.resync_positions()
        self.account.flush_account_values()
        await self.market_data.restart()
        self.pnl.restart()
        await self.killswitch.finish_pending(reason)
        open_orders = len(self.table.working())
        replayed = self.executions.replayed
        detail = (
            f"{reason}: {open_orders} open, {replayed} replayed fill(s)"
            + (f", missing {len(missing)}" if missing else "")
            + (f", unknown {len(unknown)}" if unknown else "")
            + (f", position drift {drift}" if drift else "")
        )
        return ReconciliationReport(
            actor=self.source,
            open_orders=open_orders,
            replayed_fills=replayed,
            unknown_orders=unknown,
            missing_orders=missing,
            position_drift=drift,
            ok=not missing,
            detail=detail,
        )


class OrderResync:
    """Asks IB again about orders (open orders of this and every client, completed orders, executions) when a
    notice left an order's state in doubt (``unknown``) or IB contradicted a done record. Requests made while one
    runs are coalesced into one more pass. IB's answers reach the gateway through the session's hooks (statuses,
    terms, executions de-duplicated by execId); the completed orders are applied here."""

    def __init__(self, *, session: IbSession, table: IbOrderTable, outbox: Outbox) -> None:
        self.session = session
        self.table = table
        self.outbox = outbox
        self.passes = 0
        self._wanted = False
        self._task: asyncio.Task[None] | None = None

    def request(self, why: str) -> None:
        logger.info("gateway: asking IB again about its orders: {}", why)
        self._wanted = True
        if self._task is None or self._task.done():
            try:
                self._task = asyncio.get_running_loop().create_task(self._run(), name="gateway.order-resync")
            except RuntimeError:  # no loop (unit tests of the translator): nothing to ask
                self._wanted = False

    async def _run(self) -> None:
        while self._wanted:
            self._wanted = False
            if not self.session.is_connected():
                return  # the reconnect's reconciliation covers it
            try:
                await self.once()
            except (TimeoutError, ConnectionError, OSError) as exc:
                logger.warning("gateway: order resync failed: {}", error_text(exc))
                return

    async def once(self) -> None:
        _, completed = await self.session.refresh_orders(IB_REQUEST_TIMEOUT_S)
        for trade in completed:
            rec = self.table.find(trade)
            if rec is None:
                continue
            order = trade.order
            filled = float(getattr(order, "filledQuantity", 0.0) or 0.0)
            filled = filled if filled < 1e300 else rec.filled
            self.outbox.maybe_order_status(
                self.table.observe(
                    rec,
                    status=trade.orderStatus.status,
                    filled=max(filled, rec.filled),
                    remaining=max(0.0, float(order.totalQuantity or 0.0) - max(filled, rec.filled)),
                    avg_fill_price=rec.avg_fill_price,
                    replayed=True,
                    source=IB,
                )
            )
        await self.session.executions(IB_REQUEST_TIMEOUT_S)  # missed fills come through the execution hook
        self.passes += 1
