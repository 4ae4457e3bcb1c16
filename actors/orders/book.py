"""The order book of the order manager: every order it tracks, journalled and published at every change.

:class:`OrderBook` owns the in-memory records (working orders plus recently finished ones; older ones are read
back from the journal on demand), applies the gateway's status events and fills through the lifecycle rules, and
for every change writes the journal (event row + order row in one transaction) *before* publishing
``order.<strategy>`` and waking the requests waiting on that order (``WaitOrder``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec
from loguru import logger

from actors.orders.journal import Journal
from actors.orders.lifecycle import (
    INACTIVE, PENDING_SUBMIT, OrderRecord, Stage, StatusOutcome,
)
from bus.messages import (
    CommissionEvent, FillEvent, OrderSpec, OrderStatusEvent, OrderUpdate, parse_order_ref,
)

#: Finished orders stay in memory this long after their last change (then the journal answers for them).
RETAIN_DONE_S = 3600.0
#: Order-ref used in the journal for events that belong to no order we know.
EXTERNAL_REF = "<external>"

Publish = Callable[[str, Any], None]
Predicate = Callable[[OrderRecord], bool]


def order_topic(strategy_id: str) -> str:
    return f"order.{strategy_id}"


class OrderBook:
    """Orders by orderRef, the journal behind them, and the waiters on them (one owner: the actor's loop)."""

    def __init__(self, journal: Journal, publish: Publish) -> None:
        self.journal = journal
        self._publish = publish
        self.records: dict[str, OrderRecord] = {}
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

    def find(self, order_ref: str) -> OrderRecord | None:
        rec = self.records.get(order_ref)
        if rec is None:
            rec = self.journal.load_order(order_ref)
            if rec is not None:
                self.records[order_ref] = rec
        return rec

    def working(self, *, strategy_id: str | None = None, symbol: str | None = None) -> list[OrderRecord]:
        return [r for r in self.records.values() if r.is_working
                and (strategy_id is None or r.strategy_id == strategy_id)
                and (symbol is None or r.spec.instrument.symbol == symbol)]

    def prune(self, now_ns: int | None = None, keep: set[str] | frozenset[str] = frozenset()) -> int:
        """Forget finished orders not touched for :data:`RETAIN_DONE_S` (the journal still has them)."""
        cutoff = (now_ns or time.time_ns()) - int(RETAIN_DONE_S * 1e9)
        old = [ref for ref, r in self.records.items()
               if r.is_done and r.updated_wall_ns < cutoff and ref not in keep and ref not in self._waiters]
        for ref in old:
            del self.records[ref]
        return len(old)

    # -- changes -------------------------------------------------------------------------------------------------

    def create(self, spec: OrderSpec, request: Any, now_ns: int | None = None) -> OrderRecord:
        """Journal a new order as Received, before anything else. Not fsynced here: the commit survives a process
        crash, and the fsync that matters comes with ``submitting`` (before the order can exist at IB) or with the
        rejection (before the strategy hears of it): an OS crash before either loses an unacknowledged request."""
        now = now_ns or time.time_ns()
        rec = OrderRecord(spec=spec, created_wall_ns=now, updated_wall_ns=now)
        rec.add_history(rec.status, now, "request journalled")
        self.records[rec.order_ref] = rec
        try:
            self.commit(rec, "request", msg=request, change="received")
        except Exception:
            del self.records[rec.order_ref]
            raise
        return rec

    def commit(self, rec: OrderRecord, kind: str, *, durable: bool = False, flag: str = "", detail: str = "",
               msg: Any = None, change: str = "status", publish: bool = True,
               implied: bool = False, before: tuple[tuple[str, dict[str, Any]], ...] = ()) -> None:
        """Journal one change of ``rec`` (event + order row, atomically), then publish it and wake waiters.
        ``before``: earlier events of the same order, (kind, append_event keyword arguments), written in the same
        transaction (one commit, and one fsync when durable, instead of several)."""
        with self.journal.transaction(durable=durable):
            for prior_kind, prior in before:
                self.journal.append_event(rec.order_ref, prior_kind, **prior)
            self.journal.append_event(rec.order_ref, kind, status=rec.status, flag=flag, detail=detail, msg=msg)
            self.journal.save_order(rec)
        if publish:
            topic = order_topic(rec.strategy_id)
            view = rec.view(with_history=False)
            if implied:
                self._publish(topic, OrderUpdate(order=msgspec.structs.replace(
                    view, status=PENDING_SUBMIT, is_live=False, is_done=False, reason="implied"), change=change))
            self._publish(topic, OrderUpdate(order=view, change=change))
        self._notify(rec)

    def journal_only(self, order_ref: str, kind: str, *, durable: bool = False, flag: str = "", detail: str = "",
                     msg: Any = None, status: str = "") -> None:
        """Journal a request or reply that did not change the order (duplicates, refused modifications...)."""
        with self.journal.transaction(durable=durable):
            self.journal.append_event(order_ref, kind, status=status, flag=flag, detail=detail, msg=msg)

    def set_stage(self, rec: OrderRecord, stage: str) -> None:
        rec.stage = stage
        if stage in (Stage.SUBMITTING, Stage.UNKNOWN, Stage.ACKED):
            rec.sent = True

    def apply_status_event(self, ev: OrderStatusEvent, *, kind: str = "status") -> StatusOutcome | None:
        """Apply one ``OrderStatusEvent`` (from ``gw.order.*`` or a snapshot); None when the order is not ours."""
        rec = self.find(ev.order_ref) if ev.order_ref else None
        if rec is None:
            self._external(ev, kind)
            return None
        now = time.time_ns()
        outcome = rec.apply_status(ev.status, now, filled=ev.filled, avg_fill_price=ev.avg_fill_price,
                                   ib_order_id=ev.ib_order_id, perm_id=ev.perm_id, reason=ev.reason,
                                   error_code=ev.error_code)
        stage_changed = rec.stage != Stage.ACKED
        if stage_changed:
            self.set_stage(rec, Stage.ACKED)  # IB has it: whatever our pipeline thought, it reached IB
        flag = ""
        if outcome.kind == "impossible":
            self.impossible += 1
            flag = "impossible"
            log = logger.critical if outcome.previous == "RiskRejected" else logger.error
            log("orders: {} (ib {} perm {}): {}", rec.order_ref, rec.ib_order_id, rec.perm_id, outcome.note)
        elif outcome.kind == "transition":
            logger.info("orders: {} {} -> {} filled {:g}/{:g} (ib {} perm {}){}", rec.order_ref, outcome.previous,
                        rec.status, rec.filled, rec.spec.quantity, rec.ib_order_id, rec.perm_id,
                        f" [{ev.error_code}] {ev.reason}" if ev.reason or ev.error_code else "")
        if outcome.changed or stage_changed or flag:
            self.commit(rec, kind, flag=flag, detail=outcome.note, msg=ev, publish=outcome.changed,
                        change="impossible" if flag else "status", implied=outcome.implied)
        else:
            self.journal_only(rec.order_ref, kind, status=ev.status, flag="repeat", msg=ev)
        return outcome

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
                logger.warning("orders: fill {} for unknown orderRef {!r} ({} {:g} {} @ {:g}) journalled as external",
                               fill.exec_id, fill.order_ref, fill.side, fill.quantity, fill.instrument.symbol,
                               fill.price)
            return result
        with self.journal.transaction(durable=False):
            result = self.journal.record_fill(fill, wall_ns=now)
            if result in ("new", "correction"):
                outcome = rec.apply_fill(fill, now)
                if rec.stage != Stage.ACKED:
                    self.set_stage(rec, Stage.ACKED)
                flag = "late_fill" if outcome.late_after_cancel else ""
                if rec.status in ("RiskRejected", "GatewayRejected"):
                    flag = "fill_on_rejected"
                    logger.critical("orders: {} {}", rec.order_ref, outcome.note)
                self.journal.append_event(rec.order_ref, kind if result == "new" else "fill_correction",
                                          status=rec.status, flag=flag, detail=outcome.note, msg=fill, wall_ns=now)
                self.journal.save_order(rec)
            else:
                self.journal.append_event(rec.order_ref, kind, status=rec.status, flag=result, msg=fill,
                                          wall_ns=now)
        if result in ("new", "correction"):
            logger.info("orders: {} fill {} {} {:g} @ {:g} -> filled {:g}/{:g} avg {:g} ({}{})", rec.order_ref,
                        fill.exec_id, fill.side, fill.quantity, fill.price, rec.filled, rec.spec.quantity,
                        rec.avg_fill_price, result, ", replayed" if fill.replayed else "")
            self._publish(order_topic(rec.strategy_id), OrderUpdate(order=rec.view(with_history=False),
                                                                    change="fill"))
            self._notify(rec)
        else:
            self.duplicate_fills += 1
            logger.debug("orders: {} fill {} ignored ({})", rec.order_ref, fill.exec_id, result)
        return result

    def apply_commission(self, ev: CommissionEvent) -> None:
        with self.journal.transaction(durable=False):
            known = self.journal.record_commission(ev.exec_key, ev.commission, ev.currency)
            self.journal.append_event(ev.order_ref or EXTERNAL_REF, "commission",
                                      flag="" if known else "unknown_exec", msg=ev)

    def _external(self, ev: OrderStatusEvent, kind: str) -> None:
        self.external_events += 1
        ours = parse_order_ref(ev.order_ref) is not None
        (logger.warning if ours else logger.info)(
            "orders: status {} for {} orderRef {!r} (ib {} perm {}) journalled as external", ev.status,
            "unknown Khazad" if ours else "non-Khazad", ev.order_ref, ev.ib_order_id, ev.perm_id)
        self.journal_only(ev.order_ref or EXTERNAL_REF, f"external_{kind}", status=ev.status,
                          flag="unknown_khazad_order" if ours else "external", msg=ev)

    # -- waiting -------------------------------------------------------------------------------------------------

    async def wait_for(self, rec: OrderRecord, predicate: Predicate, timeout_s: float) -> bool:
        """Wait (event-driven) until ``predicate(rec)`` holds or ``timeout_s`` passes; True if it holds."""
        if predicate(rec):
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.setdefault(rec.order_ref, []).append(entry)
        try:
            await asyncio.wait_for(fut, timeout_s)
            return True
        except asyncio.TimeoutError:
            return predicate(rec)
        finally:
            waiting = self._waiters.get(rec.order_ref)
            if waiting is not None:
                if entry in waiting:
                    waiting.remove(entry)
                if not waiting:
                    del self._waiters[rec.order_ref]

    def _notify(self, rec: OrderRecord) -> None:
        for predicate, fut in self._waiters.get(rec.order_ref, ()):
            if not fut.done() and predicate(rec):
                fut.set_result(None)


def settled_live(rec: OrderRecord) -> bool:
    """``WaitOrder(until="live")``: IB has it working, or it never will (done or Inactive)."""
    return rec.is_live or rec.is_done or rec.status == INACTIVE


def settled_done(rec: OrderRecord) -> bool:
    return rec.is_done
