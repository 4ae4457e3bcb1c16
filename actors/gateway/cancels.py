"""Cancel every working order in a scope, and verify against IB's own list until nothing works.

IB is known not to cancel some ``PreSubmitted`` orders on reqGlobalCancel, so a kill never trusts the global
cancel alone:

1. scope ``all`` sends reqGlobalCancel (one message, every client's orders); a narrower scope cancels its
   orders one by one;
2. it asks IB for every open order (reqAllOpenOrders). The request travels the same socket after the cancels,
   so the answer reflects them; orders IB still lists as working are cancelled one by one (orders of another
   client id cannot be cancelled by id from this connection: a further global cancel covers them when the
   scope is ``all``);
3. it waits, on status events and never on a fixed sleep, until those orders are done, the book has been quiet
   for :data:`QUIET_S`, or the deadline passes, and goes back to 2.

It stops when IB lists nothing working in the scope (``confirmed``) or at the deadline (``remaining`` lists what
is still working).

:class:`SweepRegistry` runs at most one sweep per command id and scope: a kill, the risk governor's emergency cancel
sent in reaction to it (it carries the kill's id), the bus copies of both and a restart's unfinished sweep all share
it. A confirmation that predates a caller's ``not_before`` (a kill joining a sweep that began before its latch) is
extended by one more verification, never replaced by a second global cancel; a sweep that ended unconfirmed is not
shared (the next command for its id sweeps again). :class:`UnsentOrders` drops placeOrders
still queued behind the pacer (a kill must not let them out after its cancels).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from loguru import logger

from actors.gateway import libtypes as lib
from actors.gateway.halts import GLOBAL_SCOPE
from actors.gateway.ordertable import CANCELLED, GATEWAY, TERMINAL, IbOrderRecord, IbOrderTable
from actors.gateway.outbox import Outbox
from actors.gateway.pacing import PacedSender, Priority, place_order_id

#: A round ends when the table saw no status change for this long (orders IB will not report on, e.g. another
#: client's, must not hold the sweep until the deadline).
QUIET_S = 0.25
#: Re-send a cancel for an order still listed as working only after this long (IB may be slow to confirm).
CANCEL_RESEND_S = 1.0
#: Bound for one reqAllOpenOrders round trip.
LIST_TIMEOUT_S = 5.0
#: How many sweeps (command id, scope) are remembered: a late copy of a command joins its finished sweep.
SWEEP_MEMORY = 10_000
#: The cause of a cleanup after a reconnect: an order of ours that IB no longer knows.
RECONNECT_CAUSE = "reconnect: not known to IB after reconnect (never reached IB)"


# -- why an order was cancelled: the ``reason`` of its Cancelled status ("<cause>: <detail>") --------------------


def strategy_cause(reason: str) -> str:
    """The strategy's own request (through the order manager)."""
    return f"strategy: {reason or 'cancel requested'}"


def kill_cause(kill_id: str, reason: str) -> str:
    return f"kill {kill_id}: {reason}"


def breaker_cause(command_id: str, reason: str) -> str:
    """The risk governor's emergency cancel (a breaker)."""
    return f"breaker {command_id}: {reason}"


def scope_cause(scope: str, reason: str) -> str:
    """A CancelScope (the order manager or risk cancelling a scope without halting)."""
    return f"cancel scope {scope}: {reason or 'requested'}"


def stamp_cause(rec: IbOrderRecord, cause: str) -> None:
    """Remember why the gateway cancels ``rec`` (the first cause wins; a done order keeps its own)."""
    if cause and not rec.cancel_cause and not rec.is_done:
        rec.cancel_cause = cause


class CancelSession(Protocol):
    """What a sweep needs of the IB session (:class:`~actors.gateway.ib.IbSession`)."""

    def cancel(self, order: lib.Order) -> None: ...

    def global_cancel(self) -> None: ...

    async def all_open_orders(self, timeout: float) -> list[lib.Trade]: ...

    def ib_status(self, trade: lib.Trade) -> str: ...


@dataclass
class SweepResult:
    """The outcome of one sweep (counts, what still works, and when IB's list last confirmed it)."""

    scope: str
    cancelled: int = 0
    remaining: list[str] = field(default_factory=list)
    confirmed: bool = False
    elapsed_ms: float = 0.0
    rounds: int = 0
    individual_cancels: int = 0
    global_cancels: int = 0
    detail: str = ""
    #: monotonic time at which the confirming open-order list was requested (0.0 while unconfirmed)
    verified_mono: float = 0.0


#: ``keep(record)``: an order a sweep spares (see :func:`actors.gateway.protective.protective_keeper`)
Keep = Callable[[IbOrderRecord], bool]


class CancelSweeper:
    """Runs sweeps against a session (``global_cancel``, ``cancel``, ``all_open_orders``) and the order table."""

    def __init__(self, session: CancelSession, table: IbOrderTable, *, client_id: int) -> None:
        self.session = session
        self.table = table
        self.client_id = client_id
        #: called when other clients' orders left IB's list during a sweep: IB sends this client no status for
        #: them, so the gateway asks for the completed orders (their real outcome)
        self.on_vanished: Callable[[str], None] | None = None

    def cancel_one(self, rec: IbOrderRecord, cause: str = "") -> bool:
        """Send a cancel for one of this client's orders; False if it is not ours to cancel by id."""
        if rec.trade is None or rec.client_id != self.client_id:
            return False
        stamp_cause(rec, cause)
        rec.cancel_sent_mono = time.monotonic()
        rec.cancel_pending = True
        self.session.cancel(rec.trade.order)
        return True

    async def _settle(self, pending: list[IbOrderRecord], round_start: float, deadline: float) -> None:
        """Wait for every pending order to be done (a change seen this round), a quiet table, or the deadline."""

        def settled() -> bool:
            return all(r.is_done and (r.done_mono or 0.0) >= round_start for r in pending)

        while not settled():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if not await self.table.changed.wait(min(QUIET_S, left)):
                return

    def _recancel(self, working: list[IbOrderRecord], result: SweepResult, use_global: bool, cause: str) -> None:
        """Cancel again what is still working: ours by id (not more often than CANCEL_RESEND_S), other
        clients' through one more global cancel when the scope allows it."""
        need_global = False
        for rec in working:
            stamp_cause(rec, cause)
            if rec.client_id == self.client_id and rec.trade is not None:
                if time.monotonic() - rec.cancel_sent_mono >= CANCEL_RESEND_S:
                    self.cancel_one(rec, cause)
                    result.individual_cancels += 1
            else:
                need_global = True
        if need_global and use_global:
            self.session.global_cancel()
            result.global_cancels += 1

    async def sweep(
        self, scope: str, *, use_global: bool, timeout_s: float, cause: str = "", keep: Keep | None = None
    ) -> SweepResult:
        """Cancel (globally or one by one), then verify against IB's list until nothing works or the deadline.
        ``cause`` is why (the reason of every Cancelled status it brings). ``keep``: orders the sweep spares (a
        kill --keep-protective: never with a global cancel, which would take them too)."""
        start = time.monotonic()
        deadline = start + timeout_s
        result = SweepResult(scope=scope)
        use_global = use_global and keep is None
        targets: dict[str, IbOrderRecord] = {r.key: r for r in self.table.working(scope) if keep is None or not keep(r)}
        for rec in targets.values():
            stamp_cause(rec, cause)
            if use_global:
                rec.cancel_pending = True
        if use_global:
            self.session.global_cancel()
            result.global_cancels += 1
        else:
            for rec in list(targets.values()):
                if self.cancel_one(rec, cause):
                    result.individual_cancels += 1
            await self._settle(list(targets.values()), start, deadline)
        return await self._verify(result, targets, start, deadline, use_global, cause, keep)

    async def reverify(
        self, previous: SweepResult, *, use_global: bool, timeout_s: float, cause: str = "", keep: Keep | None = None
    ) -> SweepResult:
        """One more verification of a finished sweep (no new global cancel unless IB still lists other clients'
        orders as working): its counts carry on from ``previous``."""
        start = time.monotonic()
        result = SweepResult(
            scope=previous.scope,
            cancelled=previous.cancelled,
            rounds=previous.rounds,
            individual_cancels=previous.individual_cancels,
            global_cancels=previous.global_cancels,
        )
        use_global = use_global and keep is None
        targets = {r.key: r for r in self.table.working(previous.scope) if keep is None or not keep(r)}
        result = await self._verify(result, targets, start, start + timeout_s, use_global, cause, keep)
        result.elapsed_ms += previous.elapsed_ms
        return result

    async def _verify(
        self,
        result: SweepResult,
        targets: dict[str, IbOrderRecord],
        start: float,
        deadline: float,
        use_global: bool,
        cause: str,
        keep: Keep | None = None,
    ) -> SweepResult:
        scope = result.scope
        already_cancelled = result.cancelled
        vanished_external: set[str] = set()
        listed_before: dict[str, IbOrderRecord] = {}
        last_listed: set[str] | None = None
        while True:
            result.rounds += 1
            round_start = time.monotonic()
            try:
                listed = await self.session.all_open_orders(max(0.1, min(LIST_TIMEOUT_S, deadline - round_start)))
            except TimeoutError:
                # a slow list (a thousand open orders on a loaded host) is not a reason to give up while the
                # deadline allows: re-cancel what we know is working and ask again
                result.detail = f"open-order list timed out after {LIST_TIMEOUT_S:g}s (round {result.rounds})"
                result.remaining = sorted(r.key for r in targets.values() if r.is_working)
                if time.monotonic() >= deadline:
                    break
                self._recancel([r for r in targets.values() if r.is_working], result, use_global, cause)
                continue
            except (ConnectionError, OSError) as exc:
                result.detail = f"could not list open orders: {exc!r}"
                result.remaining = sorted(r.key for r in targets.values() if r.is_working)
                break
            working: list[IbOrderRecord] = []
            listed_now: dict[str, IbOrderRecord] = {}
            for trade in listed:
                rec, _ = self.table.attach(trade)
                listed_now[rec.key] = rec
                if self.session.ib_status(trade) in TERMINAL or not rec.in_scope(scope):
                    continue
                if keep is not None and keep(rec):
                    continue  # spared: a stop protecting an open position (kill --keep-protective)
                working.append(rec)
                targets.setdefault(rec.key, rec)
            for key, rec in listed_before.items():
                if key not in listed_now and rec.client_id != self.client_id and not rec.is_done:
                    vanished_external.add(key)  # another client's order: IB sends us no status, it left the list
            listed_before = {r.key: r for r in working}
            last_listed = set(listed_now)
            result.remaining = sorted(r.key for r in working)
            if not working:
                result.confirmed = True
                result.verified_mono = round_start
                break
            if time.monotonic() >= deadline:
                break
            self._recancel(working, result, use_global, cause)
            await self._settle(working, round_start, deadline)
        if last_listed is not None:
            # other clients' orders this sweep targeted that IB no longer lists (no status comes to this client)
            vanished_external |= {
                key
                for key, rec in targets.items()
                if rec.client_id != self.client_id and not rec.is_done and key not in last_listed
            }
        if vanished_external and self.on_vanished is not None:
            self.on_vanished(f"{len(vanished_external)} other client's order(s) left IB's list during a sweep")
        result.cancelled = (
            already_cancelled
            + len(vanished_external)
            + sum(1 for r in targets.values() if r.status in CANCELLED and (r.done_mono or 0.0) >= start)
        )
        result.elapsed_ms = (time.monotonic() - start) * 1000.0
        logger.info(
            "gateway: cancel sweep {} done in {:.0f} ms: cancelled {}, remaining {}, confirmed {} "
            "({} rounds, {} individual cancels, {} global){}",
            scope,
            result.elapsed_ms,
            result.cancelled,
            len(result.remaining),
            result.confirmed,
            result.rounds,
            result.individual_cancels,
            result.global_cancels,
            f" [{result.detail}]" if result.detail else "",
        )
        return result


@dataclass
class _Run:
    """One registered sweep: the task producing its (latest) result."""

    task: asyncio.Task[SweepResult]


class SweepRegistry:
    """At most one sweep per (command id, scope) at a time, and none again once one has confirmed: see the module
    docstring. ``sweeps_started`` counts the sweeps begun (each with its own first cancel), ``sweeps_joined`` the
    commands that shared one already registered."""

    def __init__(self, sweeper: CancelSweeper, *, timeout_s: float) -> None:
        self.sweeper = sweeper
        self.timeout_s = timeout_s
        self._runs: OrderedDict[tuple[str, str], _Run] = OrderedDict()
        self.sweeps_started = 0
        self.sweeps_joined = 0

    async def run(
        self, command_id: str, scope: str, *, not_before: float = 0.0, cause: str = "", keep: Keep | None = None
    ) -> SweepResult:
        """The sweep of ``command_id`` in ``scope``: shared with the one registered for it, or started now (also
        when the registered one ended unconfirmed or failed: a retry cancels again). Its confirmation must come
        from an open-order list requested at or after ``not_before`` (monotonic). ``cause``: why (see
        :func:`kill_cause`), kept for the Cancelled statuses of the orders it cancels."""
        key = (command_id, scope)
        use_global = scope == GLOBAL_SCOPE
        entry = self._runs.get(key)
        if entry is None or _ended_unconfirmed(entry.task):
            self.sweeps_started += 1
            entry = _Run(
                self._task(
                    self.sweeper.sweep(scope, use_global=use_global, timeout_s=self.timeout_s, cause=cause, keep=keep)
                )
            )
            self._runs[key] = entry
            self._runs.move_to_end(key)
            while len(self._runs) > SWEEP_MEMORY:
                self._runs.popitem(last=False)
        else:
            self.sweeps_joined += 1
            logger.info("gateway: {} joins the cancel sweep already registered for it (scope {})", command_id, scope)
        while True:
            task = entry.task
            result = await asyncio.shield(task)
            if not (result.confirmed and result.verified_mono < not_before):
                return result
            if entry.task is task:  # confirmed before this caller's latch: verify once more, shared
                logger.info("gateway: the sweep for {} was confirmed before its latch: verifying again", command_id)
                entry.task = self._task(
                    self.sweeper.reverify(
                        result, use_global=use_global, timeout_s=self.timeout_s, cause=cause, keep=keep
                    )
                )

    @staticmethod
    def _task(work: Awaitable[SweepResult]) -> asyncio.Task[SweepResult]:
        task = asyncio.ensure_future(work)
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)  # retrieved by the waiters
        return task


def _ended_unconfirmed(task: asyncio.Task[SweepResult]) -> bool:
    """A finished sweep that did not confirm (or failed): nothing to share, the next command sweeps again."""
    if not task.done():
        return False
    if task.cancelled() or task.exception() is not None:
        return True
    return not task.result().confirmed


class UnsentOrders:
    """Drops placeOrders still queued behind the pacer and reports the orders that never reached IB as
    cancelled (an amendment of a live order is dropped silently: the order itself is cancelled by the sweep)."""

    def __init__(self, sender: PacedSender, table: IbOrderTable, outbox: Outbox, *, client_id: int) -> None:
        self.sender = sender
        self.table = table
        self.outbox = outbox
        self.client_id = client_id

    def drop(self, scope: str | None = None, *, only: IbOrderRecord | None = None, cause: str = "") -> int:
        """Drop the queued placeOrders of ``only``, or of every order in ``scope`` (None: every order); returns how
        many messages were dropped. An order whose own placeOrder never left is reported Cancelled, with ``cause``
        (IB never had it)."""
        cid = self.client_id

        def matches(msg: str) -> bool:
            oid = place_order_id(msg)
            if oid is None:
                return False
            rec = self.table.find_by_order_id(cid, oid)
            if only is not None:
                return rec is only
            return rec is None or scope is None or rec.in_scope(scope)

        purged = self.sender.purge(matches, Priority.ORDER)
        for msg in purged:
            oid = place_order_id(msg)
            rec = self.table.find_by_order_id(cid, oid) if oid is not None else None
            if rec is None or rec.transmitted:
                continue  # an amendment of a live order: the order itself is cancelled by the sweep
            if rec.trade is not None:
                rec.trade.orderStatus.status = "Cancelled"
            why = "cancelled before it was transmitted to IB"
            self.outbox.maybe_order_status(
                self.table.observe(
                    rec,
                    status="Cancelled",
                    filled=0.0,
                    remaining=rec.remaining,
                    avg_fill_price=0.0,
                    reason=f"{cause} ({why})" if cause else why,
                    source=GATEWAY,
                )
            )
        return len(purged)
