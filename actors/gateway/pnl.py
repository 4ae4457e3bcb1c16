"""IB's own daily P&L: reqPnL for the account, reqPnLSingle for every contract the account holds.

IB computes the daily P&L itself (``position now x price now - position at reset x price at reset + net amount
traded``, in the base currency) and restarts it at its own reset time, per instrument. That is what the risk
governor's daily-loss breaker needs: the lifetime ``UnrealizedPnL`` of the account values makes a position carried
from yesterday look like today's loss. Updates are published as they come (``pnl.account``, ``pnl.<conId>``); the
last values go into every snapshot. The library forgets its subscriptions with the connection: :meth:`PnLFeed.restart`
asks for all of them again once the gateway is reconciled.
"""

from __future__ import annotations

from loguru import logger

from actors.gateway import libtypes as lib
from actors.gateway.connection import ConnectionTracker
from actors.gateway.ib import IbSession, num
from actors.gateway.outbox import Outbox
from bus.messages import AccountPnLEvent, PositionPnLEvent


class PnLFeed:
    """The account's and the positions' daily P&L subscriptions and their last values."""

    def __init__(self, session: IbSession, conn: ConnectionTracker, outbox: Outbox) -> None:
        self.session = session
        self.conn = conn
        self.outbox = outbox
        self.account: AccountPnLEvent | None = None
        self.positions: dict[int, PositionPnLEvent] = {}
        #: contracts whose P&L is followed (every contract the account held since start)
        self.followed: set[int] = set()
        self._subscribed: set[int] = set()
        self._account_subscribed = False

    def _ready(self) -> bool:
        return bool(self.conn.account) and self.session.is_connected()

    def follow(self, con_id: int) -> None:
        """Follow the daily P&L of a contract the account holds (or is about to)."""
        if con_id <= 0:
            return
        self.followed.add(con_id)
        if con_id not in self._subscribed and self._account_subscribed and self._ready():
            self._subscribe_single(con_id)

    def _subscribe_single(self, con_id: int) -> None:
        try:
            self.session.req_pnl_single(self.conn.account, con_id)
            self._subscribed.add(con_id)
        except ConnectionError as exc:
            logger.warning("gateway: reqPnLSingle {} not sent: {}", con_id, exc)

    def restart(self) -> None:
        """(Re)subscribe everything: after a connect, once the account is known."""
        if not self._ready():
            return
        try:
            self.session.req_pnl(self.conn.account)
            self._account_subscribed = True
        except ConnectionError as exc:
            logger.warning("gateway: reqPnL not sent: {}", exc)
            return
        for con_id in sorted(self.followed - self._subscribed):
            self._subscribe_single(con_id)

    def on_disconnected(self) -> None:
        self._subscribed.clear()
        self._account_subscribed = False

    def on_pnl(self, pnl: lib.PnL) -> None:
        if self.conn.account and pnl.account != self.conn.account:
            return
        ev = AccountPnLEvent(
            account=pnl.account,
            daily_pnl=num(pnl.dailyPnL),
            unrealized_pnl=num(pnl.unrealizedPnL),
            realized_pnl=num(pnl.realizedPnL),
        )
        if ev != self.account:
            self.account = ev
            self.outbox.account_pnl(ev)

    def on_pnl_single(self, pnl: lib.PnLSingle) -> None:
        if (self.conn.account and pnl.account != self.conn.account) or int(pnl.conId) <= 0:
            return
        ev = PositionPnLEvent(
            account=pnl.account,
            con_id=int(pnl.conId),
            position=float(num(pnl.position) or 0.0),
            daily_pnl=num(pnl.dailyPnL),
            unrealized_pnl=num(pnl.unrealizedPnL),
            realized_pnl=num(pnl.realizedPnL),
            value=num(pnl.value),
        )
        if ev != self.positions.get(ev.con_id):
            self.positions[ev.con_id] = ev
            self.outbox.position_pnl(ev)
