"""The gateway's table of IB orders: one record per order IB told us about, and the interpretation of its statuses.

A record is found by orderRef (``<strategy>/<client_order_id>`` for Khazad's orders), by permId, or by
(clientId, orderId). The library's Trade objects are replaced on every reconnect; the records survive and are
re-attached, so the gateway can tell a status change that happened during a gap from one it already published.

Interpretation (:func:`interpret`): ``PreSubmitted`` and ``Submitted`` are LIVE (an order waiting for the open
or a trigger is working, not failed); ``Filled``/``Cancelled``/``ApiCancelled`` are done.

A record's status changes only on IB's own messages (orderStatus, openOrder, completedOrder: ``source=IB``) or on
the gateway's own decisions about an order IB never had or refused (``source=GATEWAY``: PendingSubmit at placement,
a rejection, a cancel before transmission, a reconnect's clean-up). A done order stays done, except ``Filled``
after ``Cancelled`` (a fill that raced a cancel wins), and except when IB reports it working after the gateway
had decided it was done: then IB's status is adopted (published with ``correction=True``). A live report that
contradicts a done status IB itself gave is not published; either way the table asks for a reconciliation with
IB (``on_contradiction``), so a record held as done never swallows IB's later report silently.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger

from actors.gateway.convert import attribution
from actors.gateway.libtypes import Trade
from bus.messages import (
    MAX_TEXT_LENGTH,
    OrderSpec,
    OrderStatusEvent,
    OrderTerms,
    aux_price,
    clip,
    is_done_status,
    is_live_status,
    scope_matches,
)

#: Statuses in which an order can no longer trade (as IB reports them).
TERMINAL = frozenset({"Filled", "Cancelled", "ApiCancelled"})
CANCELLED = frozenset({"Cancelled", "ApiCancelled"})
#: ib_async reports IB's order warnings as this pseudo status; the order is still live at IB.
VALIDATION_ERROR = "ValidationError"
#: Errors that arrive without a status change are attached to the next status event if it comes this soon.
ERROR_ATTACH_WINDOW_S = 2.0
#: Who decided a status: IB (its orderStatus/openOrder/completedOrder) or the gateway itself (see module docstring).
IB = "ib"
GATEWAY = "gateway"
#: Prices within this are equal (IB echoes floats).
PRICE_EPSILON = 1e-9


def terms_of_spec(spec: OrderSpec) -> OrderTerms:
    """The terms an OrderSpec asks IB for (to compare with what IB reports)."""
    return OrderTerms(
        side=spec.side,
        quantity=float(spec.quantity),
        order_type=spec.order_type,
        limit_price=spec.limit_price,
        stop_price=aux_price(spec),
        tif=spec.tif,
    )


def _same_price(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= PRICE_EPSILON


def same_terms(a: OrderTerms | None, b: OrderTerms | None) -> bool:
    """Equal terms as far as an amendment can change them (quantity, type, prices; TIF when both name one)."""
    if a is None or b is None:
        return a is None and b is None
    return (
        abs(a.quantity - b.quantity) <= PRICE_EPSILON
        and a.order_type == b.order_type
        and _same_price(a.limit_price, b.limit_price)
        and _same_price(a.stop_price, b.stop_price)
        and (not a.tif or not b.tif or a.tif == b.tif)
    )


def interpret(status: str) -> tuple[bool, bool]:
    """(is_live, is_done) of an IB status."""
    return is_live_status(status), is_done_status(status)


@dataclass
class IbOrderRecord:
    """What the gateway knows about one order at IB (the library's live Trade, IB's last status, what was
    published)."""

    order_ref: str
    strategy_id: str
    client_order_id: str
    #: IB's contract symbol (``ES`` for ESH7) and conId: what ``symbol:`` and ``conid:`` scopes match
    symbol: str
    con_id: int = 0
    ib_order_id: int = 0
    client_id: int = 0
    perm_id: int = 0
    spec: OrderSpec | None = None
    trade: Trade | None = None
    status: str = "PendingSubmit"
    filled: float = 0.0
    remaining: float = 0.0
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    #: (status, filled, remaining, error code) of the last published event: a repeat is not published again
    published: tuple[str, float, float, int | None] | None = None
    #: an amendment was sent (``amendment``) and IB has neither reported its terms nor refused it; cleared by IB's
    #: report (openOrder with the new terms), an ``amend_rejected`` notice, or the order ending
    modify_pending: bool = False
    amendment: OrderSpec | None = None
    #: the placeOrder of this order left for IB (the pacer's ``on_sent``): IB has (or will have) the order
    transmitted: bool = False
    #: IB has reported the order (orderStatus or openOrder): it is no longer a placement in flight
    acknowledged: bool = False
    #: a cancel was sent and IB has not reported the order done (cleared by a ``cancel_refused`` notice)
    cancel_pending: bool = False
    #: why the gateway cancelled it ("strategy: ...", "kill <id>: ...", "breaker <id>: ...", "reconnect: ...")
    cancel_cause: str = ""
    cancel_sent_mono: float = 0.0
    done_mono: float | None = None
    #: who decided the done status (:data:`IB` or :data:`GATEWAY`)
    final_source: str = ""
    pending_error: tuple[int, str, float] | None = None
    #: IB's terms from its last openOrder, and the terms last published (or the spec's at placement)
    ib_terms: OrderTerms | None = None
    published_terms: OrderTerms | None = None
    history: list[str] = field(default_factory=list)
    #: the key this record is filed under in ``IbOrderTable.by_key`` (a key changes when a permId arrives)
    indexed_key: str = ""

    @property
    def key(self) -> str:
        if self.order_ref:
            return self.order_ref
        if self.perm_id:
            return f"perm:{self.perm_id}"
        return f"id:{self.client_id}:{self.ib_order_id}"

    @property
    def is_done(self) -> bool:
        return self.status in TERMINAL

    @property
    def is_working(self) -> bool:
        return not self.is_done

    @property
    def is_khazad(self) -> bool:
        return bool(self.client_order_id)

    def in_scope(self, scope: str) -> bool:
        return scope_matches(scope, self.strategy_id, self.symbol, self.con_id)

    def label(self) -> str:
        return f"{self.key} (orderId {self.ib_order_id}, permId {self.perm_id})"


class ChangeSignal:
    """Wakes every waiter when the table changes (event-driven waits for the kill sweep)."""

    def __init__(self) -> None:
        self.version = 0
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        self.version += 1
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    async def wait(self, timeout: float) -> bool:
        """Wait for the next change; False on timeout."""
        if timeout <= 0:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.discard(fut)


class IbOrderTable:
    """The gateway's records of IB orders, by orderRef, permId and (clientId, orderId)."""

    def __init__(self) -> None:
        self.by_key: dict[str, IbOrderRecord] = {}
        self.by_perm: dict[int, IbOrderRecord] = {}
        self.by_id: dict[tuple[int, int], IbOrderRecord] = {}
        self.changed = ChangeSignal()
        #: called with a description when IB contradicts a done record (the gateway reconciles with IB)
        self.on_contradiction: Callable[[str], None] | None = None

    def __len__(self) -> int:
        return len(self.by_key)

    def records(self) -> list[IbOrderRecord]:
        return list(self.by_key.values())

    def working(self, scope: str = "all") -> list[IbOrderRecord]:
        return [r for r in self.by_key.values() if r.is_working and r.in_scope(scope)]

    def get(self, order_ref: str) -> IbOrderRecord | None:
        return self.by_key.get(order_ref)

    def _index(self, rec: IbOrderRecord) -> None:
        key = rec.key
        if rec.indexed_key and rec.indexed_key != key and self.by_key.get(rec.indexed_key) is rec:
            del self.by_key[rec.indexed_key]  # O(1): a scan of every record here made each order O(table size)
        self.by_key[key] = rec
        rec.indexed_key = key
        if rec.perm_id:
            self.by_perm[rec.perm_id] = rec
        if rec.ib_order_id:
            self.by_id[(rec.client_id, rec.ib_order_id)] = rec

    def add_placed(
        self, spec: OrderSpec, order_id: int, client_id: int, *, symbol: str = "", con_id: int = 0
    ) -> IbOrderRecord:
        """File the record of an order about to be sent (before the pacer can transmit it, so ``mark_transmitted``
        finds it); the library's Trade is attached once it exists. ``symbol`` and ``con_id``: IB's contract the
        order is placed with (what ``symbol:`` and ``conid:`` scopes match)."""
        rec = IbOrderRecord(
            order_ref=spec.order_ref,
            strategy_id=spec.strategy_id,
            client_order_id=spec.client_order_id,
            symbol=symbol or spec.instrument.symbol,
            con_id=con_id,
            ib_order_id=int(order_id),
            client_id=client_id,
            spec=spec,
            remaining=float(spec.quantity),
            published_terms=terms_of_spec(spec),
        )
        self._index(rec)
        return rec

    def remove(self, rec: IbOrderRecord) -> None:
        """Forget a record whose order was never sent (placeOrder failed)."""
        if self.by_key.get(rec.indexed_key) is rec:
            del self.by_key[rec.indexed_key]
        if rec.perm_id and self.by_perm.get(rec.perm_id) is rec:
            del self.by_perm[rec.perm_id]
        if self.by_id.get((rec.client_id, rec.ib_order_id)) is rec:
            del self.by_id[(rec.client_id, rec.ib_order_id)]

    def find(self, trade: Trade) -> IbOrderRecord | None:
        order = trade.order
        perm = int(getattr(order, "permId", 0) or 0)
        if perm and perm in self.by_perm:
            return self.by_perm[perm]
        oid = int(getattr(order, "orderId", 0) or 0)
        if oid:
            rec = self.by_id.get((int(getattr(order, "clientId", 0) or 0), oid))
            if rec is not None:
                return rec
        ref = getattr(order, "orderRef", "") or ""
        return self.by_key.get(ref) if ref else None

    def find_by_order_id(self, client_id: int, order_id: int) -> IbOrderRecord | None:
        return self.by_id.get((client_id, order_id))

    def mark_transmitted(self, client_id: int, order_id: int) -> None:
        """A placeOrder for this order left for IB (the pacer's ``on_sent``)."""
        rec = self.by_id.get((client_id, order_id))
        if rec is not None:
            rec.transmitted = True

    def attach(self, trade: Trade) -> tuple[IbOrderRecord, bool]:
        """The record for ``trade`` (created if new), with ids and the live Trade object refreshed."""
        rec = self.find(trade)
        created = rec is None
        order = trade.order
        if rec is None:
            ref = getattr(order, "orderRef", "") or ""
            strategy, coid = attribution(ref)
            rec = IbOrderRecord(
                order_ref=ref,
                strategy_id=strategy,
                client_order_id=coid,
                symbol=getattr(trade.contract, "symbol", "") or "",
                con_id=int(getattr(trade.contract, "conId", 0) or 0),
                remaining=float(getattr(order, "totalQuantity", 0.0) or 0.0),
                status="",
            )
        rec.trade = trade
        rec.ib_order_id = int(getattr(order, "orderId", 0) or 0) or rec.ib_order_id
        rec.client_id = int(getattr(order, "clientId", 0) or 0) or rec.client_id
        rec.perm_id = int(getattr(order, "permId", 0) or 0) or rec.perm_id
        if not rec.symbol:
            rec.symbol = getattr(trade.contract, "symbol", "") or ""
        if not rec.con_id:
            rec.con_id = int(getattr(trade.contract, "conId", 0) or 0)
        self._index(rec)
        return rec, created

    def observe(
        self,
        rec: IbOrderRecord,
        *,
        status: str,
        filled: float,
        remaining: float,
        avg_fill_price: float,
        last_fill_price: float = 0.0,
        error_code: int | None = None,
        reason: str = "",
        replayed: bool = False,
        force: bool = False,
        source: str = IB,
        terms: OrderTerms | None = None,
    ) -> OrderStatusEvent | None:
        """Apply one report (``source``: :data:`IB` or :data:`GATEWAY`, see the module docstring); the event to
        publish, or None when nothing changed (or IB's own final status is contradicted)."""
        now = time.monotonic()
        if status == VALIDATION_ERROR:  # ib_async: a warning on a live order; keep IB's last real status
            status = rec.status or "Submitted"
        correction = False
        if rec.is_done and status != rec.status and not (status == "Filled" and rec.status in CANCELLED):
            if source != IB or is_done_status(status):
                return None
            what = f"IB reports {rec.label()} {status} after it was {rec.status} ({rec.final_source or '?'})"
            if self.on_contradiction is not None:
                self.on_contradiction(what)
            if rec.final_source != GATEWAY:
                logger.warning("gateway: {}: not published; reconciling with IB", what)
                return None
            logger.warning("gateway: {}: IB's status replaces the gateway's decision", what)
            correction = True
        if error_code is None and rec.pending_error is not None and not rec.cancel_cause:
            code, why, at = rec.pending_error
            if now - at <= ERROR_ATTACH_WINDOW_S and status in CANCELLED:
                error_code, reason = code, reason or why
        terms_changed = terms is not None and not same_terms(terms, rec.published_terms)
        key = (status, round(filled, 9), round(remaining, 9), error_code)
        if key == rec.published and not force and not terms_changed and not correction:
            return None
        if status in CANCELLED:
            rec.pending_error = None
        was_done = rec.is_done
        rec.status = status
        rec.filled = filled
        rec.remaining = remaining
        rec.avg_fill_price = avg_fill_price
        rec.last_fill_price = last_fill_price
        rec.published = key
        rec.history.append(status)
        if terms_changed:
            rec.published_terms = terms
        if rec.is_done and not was_done:
            rec.done_mono = now
            rec.final_source = source
            rec.modify_pending = False
            rec.amendment = None
            rec.cancel_pending = False
        elif not rec.is_done:
            rec.final_source = ""
            rec.done_mono = None if correction else rec.done_mono
        self.changed.notify()
        is_live, is_done = interpret(status)
        return OrderStatusEvent(
            order_ref=rec.order_ref,
            strategy_id=rec.strategy_id,
            client_order_id=rec.client_order_id,
            ib_order_id=rec.ib_order_id,
            perm_id=rec.perm_id,
            status=status,
            filled=filled,
            remaining=remaining,
            avg_fill_price=avg_fill_price,
            last_fill_price=last_fill_price,
            is_live=is_live,
            is_done=is_done,
            error_code=error_code,
            reason=clip(reason, MAX_TEXT_LENGTH),  # IB's text: it must fit what subscribers accept
            symbol=rec.symbol,
            con_id=rec.con_id,
            replayed=replayed,
            terms=terms if terms_changed else None,
            correction=correction,
        )
