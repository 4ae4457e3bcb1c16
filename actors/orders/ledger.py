"""The order manager's ledger: every order it manages, journalled and published at every change.

:class:`OrderLedger` holds the orders in memory (working orders plus recently finished ones; older ones are read
back from the journal on demand), applies the gateway's status events and fills through the lifecycle rules, and
for every change writes the journal (event rows + order row in one transaction, :meth:`OrderLedger.writing`)
*before* publishing ``order.<strategy>`` and waking the requests waiting on that order (``WaitOrder``).

An order reported by IB (a status or a fill) moves to stage ``acked`` here: IB has it, whatever our pipeline
thought. Every other stage change is the pipeline's (:mod:`~actors.orders.pipeline`) or reconciliation's.

IB's notices about an order (:class:`~bus.messages.OrderNoticeEvent`) go into its history without changing its
status or reason; an ``amend_rejected`` one ends the pending amendment (the terms IB reported stand), an
``unknown`` one asks for a reconciliation (``on_unknown``). Terms IB reports (``OrderStatusEvent.terms``) become
the order's spec.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from loguru import logger

from actors.orders.journal import Journal
from actors.orders.lifecycle import INACTIVE, OUR_REJECTIONS, PENDING_SUBMIT, ManagedOrder, StatusOutcome
from actors.orders.stages import Stage
from bus import topics
from bus.messages import (
    IB_ACK_STATUSES,
    CommissionEvent,
    FillEvent,
    OrderGroup,
    OrderNoticeEvent,
    OrderSpec,
    OrderStatusEvent,
    OrderUpdate,
    parse_order_ref,
)

#: Finished orders stay in memory this long after their last change (then the journal answers for them).
RETAIN_DONE_S = 3600.0
#: Order-ref used in the journal for events that belong to no order we know.
EXTERNAL_REF = "<external>"

Publish = Callable[[str, Any], None]
Predicate = Callable[[ManagedOrder], bool]


class OrderWrite:
    """The journal events of one atomic change of one order (see :meth:`OrderLedger.writing`), and the update to
    publish once it is committed. Each event carries the order's status and stage as they are when it is added."""

    def __init__(self, journal: Journal, order: ManagedOrder) -> None:
        self._journal = journal
        self.order = order
        #: (change, implied) to publish after the commit; None publishes nothing
        self.update: tuple[str, bool] | None = None

    def event(self, kind: str, *, flag: str = "", detail: str = "", msg: Any = None) -> None:
        o = self.order
        self._journal.append_event(o.order_ref, kind, status=o.status, stage=o.stage, flag=flag, detail=detail, msg=msg)

    def publish(self, change: str, *, implied: bool = False) -> None:
        """Publish ``OrderUpdate(change)`` after the commit (``implied``: a PendingSubmit step first)."""
        self.update = (change, implied)


class OrderLedger:
    """Orders by orderRef, the journal behind them, and the waiters on them (one owner: the actor's loop)."""

    def __init__(self, journal: Journal, publish: Publish, *, on_unknown: Callable[[str], None] | None = None) -> None:
        self.journal = journal
        self._publish = publish
        self._on_unknown = on_unknown
        self.records: dict[str, ManagedOrder] = {}
        self._waiters: dict[str, list[tuple[Predicate, asyncio.Future[None]]]] = {}
        self.impossible = 0
        self.external_events = 0
        self.duplicate_fills = 0

    # -- lookup --------------------------------------------------------------------------------------------------

    def rebuild(self, now_ns: int | None = None) -> int:
        """Load every working order and the recently finished ones from the journal (after a start)."""
        now = now_ns or time.time_ns()
        for rec in self.journal.load_active(now - int(RETAIN_DONE_S * 1e9)):
            self.records[rec.order_ref] = rec
        return len(self.records)

    def find(self, order_ref: str) -> ManagedOrder | None:
        rec = self.records.get(order_ref)
        if rec is None:
            rec = self.journal.load_order(order_ref)
            if rec is not None:
                self.records[order_ref] = rec
        return rec

    def working(self, *, strategy_id: str | None = None, symbol: str | None = None) -> list[ManagedOrder]:
        return [
            r
            for r in self.records.values()
            if r.is_working
            and (strategy_id is None or r.strategy_id == strategy_id)
            and (symbol is None or r.spec.instrument.symbol == symbol)
        ]

    def prune(self, now_ns: int | None = None, keep: set[str] | frozenset[str] = frozenset()) -> int:
        """Forget finished orders not touched for :data:`RETAIN_DONE_S` (the journal still has them)."""
        cutoff = (now_ns or time.time_ns()) - int(RETAIN_DONE_S * 1e9)
        old = [
            ref
            for ref, r in self.records.items()
            if r.is_done and r.updated_wall_ns < cutoff and ref not in keep and ref not in self._waiters
        ]
        for ref in old:
            del self.records[ref]
        return len(old)

    # -- changes -------------------------------------------------------------------------------------------------

    def create(self, spec: OrderSpec, request: Any, now_ns: int | None = None) -> ManagedOrder:
        """Journal a new order as Received, before anything else. Not fsynced here: the commit survives a process
        crash, and the fsync that matters comes with ``submitting`` (before the order can exist at IB) or with the
        rejection (before the strategy hears of it): an OS crash before either loses an unacknowledged request."""
        now = now_ns or time.time_ns()
        rec = ManagedOrder(spec=spec, created_wall_ns=now, updated_wall_ns=now)
        rec.add_history(rec.status, now, "request journalled")
        self.records[rec.order_ref] = rec
        try:
            self.commit(rec, "request", msg=request, change="received")
        except Exception:
            del self.records[rec.order_ref]
            raise
        return rec

    def create_group(self, group: OrderGroup, request: Any, now_ns: int | None = None) -> list[ManagedOrder]:
        """Journal an order group as one unit: the group and every member as Received, in one transaction (a crash
        leaves all of them or none). Then each member's update is published."""
        now = now_ns or time.time_ns()
        recs = [ManagedOrder(spec=spec, created_wall_ns=now, updated_wall_ns=now) for spec in group.orders]
        with self.journal.transaction(durable=False):
            self.journal.save_group(group, now)
            for rec in recs:
                rec.add_history(rec.status, now, f"request journalled (group {group.key})")
                self.journal.append_event(
                    rec.order_ref, "request", status=rec.status, stage=rec.stage, detail=group.key, msg=request
                )
                self.journal.save_order(rec)
        for rec in recs:
            self.records[rec.order_ref] = rec
            self._publish(
                topics.order(rec.strategy_id), OrderUpdate(order=rec.view(with_history=False), change="received")
            )
            self._notify(rec)
        return recs

    @contextmanager
    def writing(self, order: ManagedOrder, *, durable: bool = False) -> Iterator[OrderWrite]:
        """One atomic change of ``order``: the events added inside the block, then the order row, in one
        transaction (one commit, and one fsync when ``durable``); after the commit, the update is published (if
        asked) and waiters are woken. Nothing is published when the block or the commit fails."""
        write = OrderWrite(self.journal, order)
        with self.journal.transaction(durable=durable):
            yield write
            self.journal.save_order(order)
        if write.update is not None:
            change, implied = write.update
            topic = topics.order(order.strategy_id)
            view = order.view(with_history=False)
            if implied:
                self._publish(
                    topic,
                    OrderUpdate(
                        order=msgspec.structs.replace(
                            view, status=PENDING_SUBMIT, is_live=False, is_done=False, reason="implied"
                        ),
                        change=change,
                    ),
                )
            self._publish(topic, OrderUpdate(order=view, change=change))
        self._notify(order)

    def commit(
        self,
        rec: ManagedOrder,
        kind: str,
        *,
        durable: bool = False,
        flag: str = "",
        detail: str = "",
        msg: Any = None,
        change: str = "status",
        publish: bool = True,
        implied: bool = False,
    ) -> None:
        """Journal one change of ``rec`` (one event + order row, atomically), then publish it and wake waiters."""
        with self.writing(rec, durable=durable) as write:
            write.event(kind, flag=flag, detail=detail, msg=msg)
            if publish:
                write.publish(change, implied=implied)

    def journal_only(
        self,
        order_ref: str,
        kind: str,
        *,
        durable: bool = False,
        flag: str = "",
        detail: str = "",
        msg: Any = None,
        status: str = "",
    ) -> None:
        """Journal a request or reply that did not change the order (duplicates, refused modifications...)."""
        with self.journal.transaction(durable=durable):
            self.journal.append_event(order_ref, kind, status=status, flag=flag, detail=detail, msg=msg)

    def apply_status_event(self, ev: OrderStatusEvent, *, kind: str = "status") -> StatusOutcome | None:
        """Apply one ``OrderStatusEvent`` (from ``gw.order.*`` or a snapshot); None when the order is not ours."""
        rec = self.find(ev.order_ref) if ev.order_ref else None
        if rec is None:
            self._external(ev, kind)
            return None
        now = time.time_ns()
        outcome = rec.apply_status(
            ev.status,
            now,
            filled=ev.filled,
            avg_fill_price=ev.avg_fill_price,
            ib_order_id=ev.ib_order_id,
            perm_id=ev.perm_id,
            reason=ev.reason,
            error_code=ev.error_code,
            correction=ev.correction,
        )
        terms_changed = False
        if ev.terms is not None:
            terms_changed = rec.adopt_terms(ev.terms, now)
        if rec.is_done:
            rec.amendment = None  # a done order has nothing pending at IB
        stage_changed = rec.move_to(Stage.ACKED)  # IB has it: whatever our pipeline thought, it reached IB
        flag = ""
        if outcome.kind == "correction":
            flag = "correction"
            logger.warning("orders: {} (ib {} perm {}): {}", rec.order_ref, rec.ib_order_id, rec.perm_id, outcome.note)
        elif outcome.kind == "impossible":
            self.impossible += 1
            flag = "impossible"
            log = logger.critical if outcome.previous == "RiskRejected" else logger.error
            log("orders: {} (ib {} perm {}): {}", rec.order_ref, rec.ib_order_id, rec.perm_id, outcome.note)
        elif outcome.kind == "transition":
            # IB acknowledging an order it accepted (PreSubmitted, Submitted; nothing filled, no error) at DEBUG:
            # one INFO line per order on the hot path, the pipeline's "submitted" (the journal has every step)
            quiet = rec.status in IB_ACK_STATUSES and not rec.filled and not ev.reason and not ev.error_code
            (logger.debug if quiet else logger.info)(
                "orders: {} {} -> {} filled {:g}/{:g} (ib {} perm {}){}",
                rec.order_ref,
                outcome.previous,
                rec.status,
                rec.filled,
                rec.spec.quantity,
                rec.ib_order_id,
                rec.perm_id,
                f" [{ev.error_code}] {ev.reason}" if ev.reason or ev.error_code else "",
            )
        if outcome.changed or stage_changed or flag or terms_changed:
            self.commit(
                rec,
                kind,
                flag=flag,
                detail=outcome.note,
                msg=ev,
                publish=outcome.changed or terms_changed,
                change="impossible" if flag == "impossible" else ("status" if outcome.changed else "modified"),
                implied=outcome.implied,
            )
        else:
            self.journal_only(rec.order_ref, kind, status=ev.status, flag="repeat", msg=ev)
        return outcome

    def apply_notice(self, ev: OrderNoticeEvent) -> None:
        """IB's error or notice about an order (see the module docstring): journalled, in the order's history, and
        published; the status changes only through status events."""
        rec = self.find(ev.order_ref) if ev.order_ref else None
        if rec is None:
            self.journal_only(ev.order_ref or EXTERNAL_REF, "external_notice", flag=ev.effect, msg=ev)
            return
        now = time.time_ns()
        text = f"IB {ev.code} ({ev.effect}): {ev.message}"
        if ev.effect == "amend_rejected":
            rec.amendment = None
            rec.amendment_refused = f"IB {ev.code}: {ev.message}"
            if ev.terms is not None:
                rec.adopt_terms(ev.terms, now, note="terms IB reports after refusing the amendment")
        if ev.effect == "rejected":
            # the status event that comes with it carries the code and reason into the history
            self.journal_only(rec.order_ref, "notice", flag=ev.effect, msg=ev, status=rec.status)
        else:
            rec.add_history(rec.status, now, text, ev.code)
            self.commit(rec, "notice", flag=ev.effect, detail=text, msg=ev, change="notice")
        (logger.warning if ev.effect in ("unknown", "amend_rejected") else logger.info)(
            "orders: {} (ib {} perm {}) {}", rec.order_ref, rec.ib_order_id, rec.perm_id, text
        )
        if ev.effect == "unknown" and self._on_unknown is not None:
            self._on_unknown(f"IB {ev.code} on {rec.order_ref}")

    def apply_fill(self, fill: FillEvent, *, kind: str = "fill") -> str:
        """Apply one execution (journal de-duplicates by exec_key); returns new | duplicate | correction | stale."""
        rec = self.find(fill.order_ref) if fill.order_ref else None
        now = time.time_ns()
        if rec is None:
            with self.journal.transaction(durable=False):
                result = self.journal.record_fill(fill, wall_ns=now)
                if result in ("new", "correction"):
                    self.journal.append_event(fill.order_ref or EXTERNAL_REF, "external_fill", msg=fill)
            if result in ("new", "correction"):
                self.external_events += 1
                logger.warning(
                    "orders: fill {} for unknown orderRef {!r} ({} {:g} {} @ {:g}) journalled as external",
                    fill.exec_id,
                    fill.order_ref,
                    fill.side,
                    fill.quantity,
                    fill.instrument.symbol,
                    fill.price,
                )
            return result
        with self.journal.transaction(durable=False):
            result = self.journal.record_fill(fill, wall_ns=now)
            if result in ("new", "correction"):
                outcome = rec.apply_fill(fill, now)
                rec.move_to(Stage.ACKED)  # a fill: IB has it
                flag = "late_fill" if outcome.late_after_cancel else ""
                if rec.status in OUR_REJECTIONS:
                    flag = "fill_on_rejected"
                    logger.critical("orders: {} {}", rec.order_ref, outcome.note)
                self.journal.append_event(
                    rec.order_ref,
                    kind if result == "new" else "fill_correction",
                    status=rec.status,
                    stage=rec.stage,
                    flag=flag,
                    detail=outcome.note,
                    msg=fill,
                    wall_ns=now,
                )
                self.journal.save_order(rec)
            else:
                self.journal.append_event(rec.order_ref, kind, status=rec.status, flag=result, msg=fill, wall_ns=now)
        if result in ("new", "correction"):
            logger.info(
                "orders: {} fill {} {} {:g} @ {:g} -> filled {:g}/{:g} avg {:g} ({}{})",
                rec.order_ref,
                fill.exec_id,
                fill.side,
                fill.quantity,
                fill.price,
                rec.filled,
                rec.spec.quantity,
                rec.avg_fill_price,
                result,
                ", replayed" if fill.replayed else "",
            )
            self._publish(topics.order(rec.strategy_id), OrderUpdate(order=rec.view(with_history=False), change="fill"))
            self._notify(rec)
        else:
            self.duplicate_fills += 1
            logger.debug("orders: {} fill {} ignored ({})", rec.order_ref, fill.exec_id, result)
        return result

    def apply_commission(self, ev: CommissionEvent) -> None:
        with self.journal.transaction(durable=False):
            known = self.journal.record_commission(ev.exec_key, ev.commission, ev.currency)
            self.journal.append_event(
                ev.order_ref or EXTERNAL_REF, "commission", flag="" if known else "unknown_exec", msg=ev
            )

    def _external(self, ev: OrderStatusEvent, kind: str) -> None:
        self.external_events += 1
        ours = parse_order_ref(ev.order_ref) is not None
        (logger.warning if ours else logger.info)(
            "orders: status {} for {} orderRef {!r} (ib {} perm {}) journalled as external",
            ev.status,
            "unknown Khazad" if ours else "non-Khazad",
            ev.order_ref,
            ev.ib_order_id,
            ev.perm_id,
        )
        self.journal_only(
            ev.order_ref or EXTERNAL_REF,
            f"external_{kind}",
            status=ev.status,
            flag="unknown_khazad_order" if ours else "external",
            msg=ev,
        )

    # -- waiting -------------------------------------------------------------------------------------------------

    async def wait_for(self, rec: ManagedOrder, predicate: Predicate, timeout_s: float) -> bool:
        """Wait (event-driven) until ``predicate(rec)`` holds or ``timeout_s`` passes; True if it holds."""
        if predicate(rec):
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.setdefault(rec.order_ref, []).append(entry)
        try:
            await asyncio.wait_for(fut, timeout_s)
            return True
        except TimeoutError:
            return predicate(rec)
        finally:
            waiting = self._waiters.get(rec.order_ref)
            if waiting is not None:
                if entry in waiting:
                    waiting.remove(entry)
                if not waiting:
                    del self._waiters[rec.order_ref]

    def _notify(self, rec: ManagedOrder) -> None:
        for predicate, fut in self._waiters.get(rec.order_ref, ()):
            if not fut.done() and predicate(rec):
                fut.set_result(None)


def settled_live(rec: ManagedOrder) -> bool:
    """``WaitOrder(until="live")``: IB has it working, or it never will (done or Inactive)."""
    return rec.is_live or rec.is_done or rec.status == INACTIVE


def settled_done(rec: ManagedOrder) -> bool:
    return rec.is_done
