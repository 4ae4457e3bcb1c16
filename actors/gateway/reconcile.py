"""Reconciliation after a (re)connect or IB's 1101/1102: bring the gateway's view back to IB's before READY.

In order: every trade the library synchronised is attached to its record and its status published (replayed);
an order of this client that worked before the gap and IB no longer lists is reported Cancelled ("never reached
IB"); positions are republished with their drift; account values are flushed; market-data streams are requested
again; kills whose sweep was never confirmed are finished. The result is one
:class:`~bus.messages.ReconciliationReport`.
"""

from __future__ import annotations

from actors.gateway.account import AccountFeed
from actors.gateway.connection import ConnectionTracker
from actors.gateway.executions import ExecutionFeed
from actors.gateway.ib import IbSession
from actors.gateway.killswitch import KillSwitch
from actors.gateway.marketdata import MarketDataFeed
from actors.gateway.ordertable import IbOrderTable
from actors.gateway.outbox import Outbox
from bus.messages import ReconciliationReport


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
        for trade in self.session.trades():
            rec, _ = self.table.attach(trade)
            seen.add(rec.key)
            st = trade.orderStatus
            self.outbox.maybe_order_status(
                self.table.observe(
                    rec,
                    status=st.status,
                    filled=float(st.filled or 0.0),
                    remaining=float(st.remaining or 0.0),
                    avg_fill_price=float(st.avgFillPrice or 0.0),
                    last_fill_price=float(st.lastFillPrice or 0.0),
                    replayed=True,
                )
            )
            if rec.is_working and rec.key not in working_before and not first_sync:
                unknown.append(rec.key)
        missing: list[str] = []
        for rec in self.table.working():
            # IB lists this client's open orders after a reconnect; another client's orders are not in that list
            if rec.key in working_before and rec.key not in seen and rec.client_id == self.client_id:
                missing.append(rec.key)
                self.outbox.maybe_order_status(
                    self.table.observe(
                        rec,
                        status="Cancelled",
                        filled=rec.filled,
                        remaining=rec.remaining,
                        avg_fill_price=rec.avg_fill_price,
                        reason="not known to IB after reconnect (never reached IB)",
                        replayed=True,
                    )
                )
        drift = self.account.resync_positions()
        self.account.flush_account_values()
        await self.market_data.restart()
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
