"""What the governor knows of the gateway: its working orders, positions and account values (the exposure book
and the account), IB's daily P&L of the account and of each position, whether the first snapshot has arrived
(``ready``), which incarnation of the gateway is running, when it last sent a heartbeat and what its halt latch
holds (from the heartbeat's :data:`~bus.messages.GATEWAY_LATCH_DETAIL`; :meth:`GatewayMirror.on_heartbeat` reports
each change once).

Reconciliation: the governor asks for a :class:`~bus.messages.GatewaySnapshot` at start and again whenever it may
have missed something (the gateway restarted, a sequence gap on its topics, an unknown working order, a
reconnect); requests made while one is pending collapse into one. Until the gateway can give one (not up yet,
not READY) it asks again every :data:`SNAPSHOT_RETRY_S`. Each applied snapshot is passed to the listener the actor
registers (market data for the open orders, the disconnect breaker).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from actors.risk.account import AccountState
from actors.risk.contracts import ContractBook
from actors.risk.exposure import ExposureBook, StatusResult
from actors.risk.ports import GatewayLink
from bus.messages import (
    AccountPnLEvent,
    FillEvent,
    GatewaySnapshot,
    GatewayStatus,
    GetSnapshot,
    GetStatus,
    Heartbeat,
    OrderStatusEvent,
    PositionPnLEvent,
    latched_scopes,
    scope_matches,
)

SNAPSHOT_TIMEOUT_S = 5.0
#: retry interval while the gateway cannot give a snapshot (not up yet, or not READY)
SNAPSHOT_RETRY_S = 1.0
#: bound for the direct probe of a gateway whose heartbeats went silent
GATEWAY_PROBE_TIMEOUT_S = 1.0
#: what :meth:`GatewayMirror.probe` reports when the gateway does not answer
NO_ANSWER = "no answer"

SnapshotListener = Callable[[GatewaySnapshot], None]


@dataclass(frozen=True, slots=True)
class LatchChange:
    """The gateway's halt latch changed: scopes it latched and released since the last heartbeat that said. The
    first heartbeat seen is ``first`` (what it released before is not known: the caller compares with its own)."""

    latched: frozenset[str]
    released: frozenset[str]
    first: bool
    scopes: frozenset[str]


class GatewayMirror:
    """The gateway as the governor sees it (see module docstring)."""

    def __init__(
        self,
        gateway: GatewayLink,
        book: ExposureBook,
        contracts: ContractBook,
        *,
        beat_interval_s: float,
        liveness: int,
    ) -> None:
        self._gateway = gateway
        self.book = book
        self.contracts = contracts
        self.account = AccountState()
        #: IB's daily P&L of the account (reqPnL) and of each position (reqPnLSingle), as last reported
        self.account_pnl: AccountPnLEvent | None = None
        self.position_pnl: dict[int, PositionPnLEvent] = {}
        #: False until the first snapshot is applied: every order is rejected ``risk.not_ready`` until then
        self.ready = False
        self.snapshots = 0
        self.incarnation = 0
        self.last_beat: float | None = None
        #: the gateway's latched scopes as its last heartbeat said (None: no heartbeat said yet)
        self.latch: frozenset[str] | None = None
        self.beat_interval = beat_interval_s
        self._liveness = liveness
        # set: a snapshot is wanted (the first one from the start)
        self._resync = asyncio.Event()
        self._resync.set()
        self._listener: SnapshotListener | None = None

    def on_snapshot(self, listener: SnapshotListener) -> None:
        """Call ``listener`` after each snapshot is applied."""
        self._listener = listener

    # -- events from the gateway ---------------------------------------------------------------------------------

    def note_incarnation(self, incarnation: int) -> bool:
        """Track the gateway process; True when it restarted (its market-data streams and our view of its orders
        died with it). The first incarnation seen is not a restart."""
        if incarnation == self.incarnation:
            return False
        restarted = self.incarnation != 0
        if restarted:
            logger.warning(
                "risk: gateway restarted (incarnation {} -> {}): resynchronising", self.incarnation, incarnation
            )
            self.request_resync("gateway restarted")
        self.incarnation = incarnation
        return restarted

    def on_heartbeat(self, hb: Heartbeat, now: float) -> LatchChange | None:
        """Note the beat; the change of the gateway's halt latch it shows, if any. Only changes count: a heartbeat
        repeats the latch it had when it was sent, which may be older than a resume the governor has already
        applied, so a latch that did not change is never acted on again."""
        self.last_beat = now
        self.beat_interval = hb.interval_s or self.beat_interval
        seen = latched_scopes(hb.detail)
        if seen is None or seen == self.latch:
            return None
        before, self.latch = self.latch, seen
        if before is None:
            return LatchChange(latched=seen, released=frozenset(), first=True, scopes=seen)
        return LatchChange(latched=seen - before, released=before - seen, first=False, scopes=seen)

    def on_order_status(self, ev: OrderStatusEvent) -> StatusResult:
        return self.book.on_status(ev)

    def on_pnl(self, ev: AccountPnLEvent | PositionPnLEvent) -> None:
        if isinstance(ev, AccountPnLEvent):
            self.account_pnl = ev
        else:
            self.position_pnl[ev.con_id] = ev

    def ib_daily(self, con_id: int) -> float | None:
        ev = self.position_pnl.get(con_id)
        return ev.daily_pnl if ev is not None else None

    def on_fill(self, ev: FillEvent) -> str | None:
        """Apply a fill; the strategy whose fill rate it counts towards, or None for a duplicate, a replay, a
        correction or an order Khazad did not place."""
        if not self.book.on_fill(ev, time.time()):
            return None
        strategy = self.book.fill_strategy(ev.exec_key)
        if not strategy or ev.replayed or ev.is_correction:
            return None
        return strategy

    def expire_pending(self, now: float) -> None:
        for ref in self.book.expire_pending(now):
            logger.info("risk: approval for {} never reached the gateway; no longer counted as working", ref)

    def working_in_scope(self, scope: str) -> list[str]:
        """Order refs of the working orders a scope covers (``all``, ``strategy:<id>``, ``symbol:<sym>``,
        ``conid:<id>``)."""
        return [w.order_ref for w in self.book.working.values() if scope_matches(scope, w.strategy, w.symbol, w.con_id)]

    # -- liveness ------------------------------------------------------------------------------------------------

    def silence(self, now: float) -> float | None:
        """Seconds since the gateway's last heartbeat once more than its liveness allowance have passed, else
        None (also before the first heartbeat)."""
        if self.last_beat is None:
            return None
        silent = now - self.last_beat
        return silent if silent > self._liveness * self.beat_interval else None

    async def probe(self) -> str:
        """Ask the gateway directly for its connection state (heartbeats went silent: is it the gateway, the bus
        or this process?). A READY answer counts as a heartbeat."""
        reply = await self._gateway.call_once(GetStatus(), GATEWAY_PROBE_TIMEOUT_S)
        if not isinstance(reply, GatewayStatus):
            return NO_ANSWER
        if reply.connection == "READY":
            self.last_beat = time.monotonic()
        return reply.connection

    # -- snapshots -----------------------------------------------------------------------------------------------

    def request_resync(self, why: str) -> None:
        if not self._resync.is_set():
            logger.info("risk: resync requested: {}", why)
            self._resync.set()

    async def run_snapshots(self) -> None:
        """Background task: fetch and apply a snapshot whenever one is requested."""
        while True:
            await self._resync.wait()
            self._resync.clear()
            while True:
                snap = await self._fetch_snapshot()
                if snap is not None:
                    self.apply_snapshot(snap)
                    break
                await asyncio.sleep(SNAPSHOT_RETRY_S)  # retry timer while the gateway is not up/READY

    async def _fetch_snapshot(self) -> GatewaySnapshot | None:
        reply = await self._gateway.call_once(GetSnapshot(), SNAPSHOT_TIMEOUT_S)
        if reply is None:
            logger.log("WARNING" if self.ready else "INFO", "risk: gateway snapshot: no answer, retrying")
            return None
        if isinstance(reply, GatewaySnapshot):
            return reply
        logger.warning("risk: gateway snapshot refused: {}", reply)
        return None

    def apply_snapshot(self, snap: GatewaySnapshot) -> None:
        now = time.monotonic()
        for info in snap.contracts:
            self.contracts.learn(info)
        self.account.replace(snap.account_values, snap.account)
        if snap.pnl is not None:
            self.account_pnl = snap.pnl
        self.position_pnl.update({p.con_id: p for p in snap.position_pnl})
        self.book.load_positions(snap.positions)
        self.book.load_open_orders(snap.open_orders, now)
        wall = time.time()
        new_fills = sum(self.book.on_fill(f, wall, account_too=False) for f in snap.executions)
        for c in snap.commissions:
            self.book.on_commission(c)
        first = not self.ready
        self.ready = True
        self.snapshots += 1
        logger.info(
            "risk: gateway snapshot applied: {} open order(s), {} position(s), {} new execution(s), connection {}{}",
            len(snap.open_orders),
            len(snap.positions),
            new_fills,
            snap.connection,
            "; accepting orders" if first else "",
        )
        if self._listener is not None:
            self._listener(snap)
