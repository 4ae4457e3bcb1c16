"""Reconciliation of the order ledger against the gateway's snapshot of IB (after a start and every reconnect).

Procedure (``docs/orders.md``, "Recovery"):

1. executions in the snapshot are applied as fills (the journal's UNIQUE ``exec_key`` makes replays harmless);
2. every open order at IB whose orderRef we know is applied as a status report (ids adopted, filled quantity
   caught up, IB's terms adopted; the transition table decides, so a stale snapshot never moves an order
   backwards);
3. every working order of ours that IB does not show, and that nobody is working on right now:
   * it reached IB (acknowledged, or has fills): it finished while we were not looking: Filled if the fills cover
     the quantity, else Cancelled ("no longer open at IB"), reported as missing;
   * it never reached IB (crash between journalling and the gateway's answer): it becomes ``interrupted``. It is
     NOT re-sent behind the strategy's back: the strategy's retry of the same client_order_id resumes it (risk
     check + submit; the gateway's orderRef de-duplication guarantees at most one IB order), or the orphan
     timeout rejects it;
4. open orders at IB with an orderRef we do not know are reported as unknown (external ones too).

:func:`reconcile` is one pass (pure bookkeeping over the ledger); :class:`Reconciler` runs passes when asked (after
a start, a gateway reconnect, lost events, an unknown submission outcome), retrying in the background with backoff
until the gateway answers and is READY.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from loguru import logger

from actors.orders.inflight import InFlight
from actors.orders.ledger import OrderLedger, Publish
from actors.orders.lifecycle import CANCELLED, FILLED
from actors.orders.peers import Peers
from actors.orders.stages import Stage
from bus import topics
from bus.messages import (
    GatewaySnapshot,
    OrderStatusEvent,
    OrderTerms,
    ReconciliationReport,
    parse_order_ref,
    tag_of,
)
from bus.registry import ORDERS
from bus.retry import RequestTimeout

#: Quantities within this of each other are equal (IB reports floats).
QTY_EPSILON = 1e-9
#: Background retry of the gateway snapshot until it answers: first delay, doubling up to the cap (a timer).
RECON_RETRY_INITIAL_S = 0.25
RECON_RETRY_MAX_S = 5.0
#: Journal order-ref of the reconciliation reports.
RECONCILIATION_REF = "<reconciliation>"


@dataclass(slots=True)
class ReconcileResult:
    """What one reconciliation pass found (the report to publish) and which orders it left interrupted."""

    report: ReconciliationReport
    #: orderRefs that became interrupted in this pass (the caller starts their orphan timers)
    interrupted: list[str] = field(default_factory=list)


def reconcile(
    ledger: OrderLedger, snapshot: GatewaySnapshot, *, since_ns: int, busy: set[str] | frozenset[str] = frozenset()
) -> ReconcileResult:
    """Bring ``ledger`` in line with ``snapshot``. Orders changed at or after ``since_ns`` (when the snapshot was
    requested) or in ``busy`` (a request is working on them) are not judged missing: the snapshot may predate
    them."""
    # judged on when each order last changed *before* this pass (replayed fills below touch them too)
    changed_before = {ref: rec.updated_wall_ns for ref, rec in ledger.records.items()}
    replayed = 0
    new_fill_keys: set[str] = set()
    for fill in snapshot.executions:
        result = ledger.apply_fill(msgspec.structs.replace(fill, replayed=True), kind="recon_fill")
        if result in ("new", "correction"):
            replayed += 1
            new_fill_keys.add(fill.exec_key)
    for comm in snapshot.commissions:
        if comm.exec_key in new_fill_keys:
            ledger.apply_commission(comm)

    matched: set[str] = set()
    unknown: list[str] = []
    unknown_ours = 0
    spec_notes: list[str] = []
    for o in snapshot.open_orders:
        rec = ledger.find(o.order_ref) if o.order_ref else None
        if rec is None:
            label = o.order_ref or f"perm:{o.perm_id}"
            unknown.append(label)
            if parse_order_ref(o.order_ref) is not None:
                unknown_ours += 1
                logger.error(
                    "orders: IB has order {} (ib {} perm {}) with our orderRef but no journal entry",
                    o.order_ref,
                    o.ib_order_id,
                    o.perm_id,
                )
            continue
        matched.add(o.order_ref)
        if abs(o.quantity - rec.spec.quantity) > QTY_EPSILON:
            spec_notes.append(f"{o.order_ref}: IB quantity {o.quantity:g}, journal {rec.spec.quantity:g}: IB's adopted")
        ledger.apply_status_event(
            OrderStatusEvent(
                order_ref=o.order_ref,
                strategy_id=rec.strategy_id,
                client_order_id=rec.client_order_id,
                ib_order_id=o.ib_order_id,
                perm_id=o.perm_id,
                status=o.status,
                filled=o.filled,
                remaining=o.remaining,
                avg_fill_price=o.avg_fill_price,
                symbol=o.instrument.symbol,
                terms=OrderTerms(
                    side=o.side,
                    quantity=o.quantity,
                    order_type=o.order_type,
                    limit_price=o.limit_price,
                    stop_price=o.stop_price,
                    tif=o.tif,
                ),
            ),
            kind="recon_status",
        )

    missing: list[str] = []
    interrupted: list[str] = []
    now = time.time_ns()
    for rec in list(ledger.records.values()):
        ref = rec.order_ref
        if rec.is_done or ref in matched or ref in busy or changed_before.get(ref, since_ns) >= since_ns:
            continue
        if rec.stage == Stage.ACKED or rec.filled > 0:
            status = FILLED if rec.filled >= rec.spec.quantity - QTY_EPSILON else CANCELLED
            reason = "reconciled: filled while not observed" if status == FILLED else "reconciled: no longer open at IB"
            outcome = rec.apply_status(status, now, reason=reason)
            rec.move_to(Stage.ACKED)  # it reached IB (it has fills): a no-op for an acknowledged one
            ledger.commit(
                rec,
                "recon_missing",
                flag="missing" if outcome.kind != "impossible" else "impossible",
                detail=reason if outcome.kind != "impossible" else outcome.note,
                change="reconciled",
                publish=outcome.changed,
            )
            missing.append(ref)
            logger.warning(
                "orders: {} not open at IB (stage {}, filled {:g}/{:g}): now {}",
                ref,
                rec.stage,
                rec.filled,
                rec.spec.quantity,
                rec.status,
            )
        elif rec.stage in Stage.UNRESOLVED:
            if rec.move_to(Stage.INTERRUPTED):
                rec.reason = (
                    "interrupted before submission: not at IB; retry the same client_order_id to resume or it expires"
                )
                rec.updated_wall_ns = now
                ledger.commit(rec, "interrupted", detail=rec.reason, change="interrupted")
                logger.warning(
                    "orders: {} was never acknowledged and is not at IB: interrupted (sent before: {})", ref, rec.sent
                )
            interrupted.append(ref)

    for note in spec_notes:
        logger.warning("orders: reconciliation: {}", note)
    detail = (
        f"{len(matched)} open at IB, {replayed} fills replayed, {len(missing)} missing, "
        f"{len(interrupted)} interrupted, {len(unknown)} unknown"
    )
    if spec_notes:
        detail += "; " + "; ".join(spec_notes)
    report = ReconciliationReport(
        actor=ORDERS.name,
        open_orders=len(matched),
        replayed_fills=replayed,
        unknown_orders=unknown,
        missing_orders=missing,
        ok=not missing and unknown_ours == 0,
        detail=detail,
    )
    return ReconcileResult(report=report, interrupted=interrupted)


class Reconciler:
    """Runs reconciliation passes when asked (:meth:`request`), one at a time, retrying with backoff until the
    gateway answers and is READY; sets ``ready`` after the first pass and hands the orders it found interrupted
    to ``on_interrupted`` (the pipeline's orphan timers)."""

    def __init__(
        self,
        ledger: OrderLedger,
        peers: Peers,
        inflight: InFlight,
        *,
        ready: asyncio.Event,
        publish: Publish,
        on_interrupted: Callable[[str], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.ledger = ledger
        self.peers = peers
        self.inflight = inflight
        self.ready = ready
        self._publish = publish
        self._on_interrupted = on_interrupted
        self._on_error = on_error
        self._wanted = asyncio.Event()
        self.passes = 0
        self.last_report: ReconciliationReport | None = None

    def request(self, why: str) -> None:
        """Ask for a pass (coalesced with any already pending)."""
        logger.debug("orders: reconciliation requested: {}", why)
        self._wanted.set()

    async def run(self) -> None:
        """The background loop: the first pass right after the start, then one per request."""
        self._wanted.set()
        delay = RECON_RETRY_INITIAL_S
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                if await self.once():
                    delay = RECON_RETRY_INITIAL_S
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # error policy: log, count, retry later (repeated errors fault the actor)
                logger.opt(exception=exc).error("orders: reconciliation failed: {}", exc)
                self._on_error(exc)
            try:  # retry timer (not synchronisation): a new request (e.g. gateway READY) retries at once
                await asyncio.wait_for(self._wanted.wait(), delay)
            except TimeoutError:
                pass
            self._wanted.set()
            delay = min(delay * 2, RECON_RETRY_MAX_S)

    async def once(self) -> bool:
        """One pass against a fresh snapshot; False when the gateway did not give one (retried later)."""
        since = time.time_ns()
        try:
            snap = await self.peers.snapshot()
        except RequestTimeout:
            logger.warning("orders: gateway snapshot timed out; reconciliation retried in the background")
            return False
        if not isinstance(snap, GatewaySnapshot):
            logger.warning("orders: gateway refused the snapshot: {}", getattr(snap, "reason", tag_of(type(snap))))
            return False
        if snap.connection != "READY":
            logger.info("orders: gateway not READY ({}); reconciliation waits", snap.connection)
            return False
        result = reconcile(self.ledger, snap, since_ns=since, busy=self.inflight.busy())
        for ref in result.interrupted:
            self._on_interrupted(ref)
        self.passes += 1
        report = self.last_report = result.report
        self.ledger.journal_only(
            RECONCILIATION_REF, "reconciliation", msg=report, flag="" if report.ok else "discrepancy"
        )
        self._publish(topics.recon(ORDERS.name), report)
        (logger.info if report.ok else logger.warning)("orders: reconciliation #{}: {}", self.passes, report.detail)
        if not self.ready.is_set():
            self.ready.set()
            logger.info("orders: ready (reconciled with the gateway)")
        return True
