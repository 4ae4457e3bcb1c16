"""Order entry: what lets an order, an amendment or a cancel through to IB, and what each acknowledgement means.

An order or an amendment passes :meth:`OrderEntry.gate` (the connection is READY; no HALTED scope covers it) and
the risk governor's approval (:class:`~bus.approval.ApprovalVerifier`), then goes to IB through the pacer:

* ``SubmitOrder``: at most one IB order per orderRef, across restarts too (the exec journal records the orderRef
  before IB sees it); a duplicate answers :data:`~bus.messages.DUPLICATE_STATUS` with the existing ids, but only
  to an approval the gateway verified as the governor's signature over exactly that order (anything else is
  refused first: nobody learns about an order without a genuine approval for it). The order's
  record is filed *before* the placeOrder is handed to the pacer, so the pacer's "sent" finds it (``transmitted``).
  The order goes to IB with IB's qualified contract (its conId): an instrument that contradicts IB's contract
  (multiplier, currency) is refused ``contract_mismatch`` here too, whatever the approval says; a ``round_to_tick``
  order goes with its prices rounded to the contract's grid (:func:`bus.contracts.rounded_order`, as risk checked
  them), and so do its amendments;
* ``AmendOrder``: acknowledged (:data:`~bus.messages.AMENDMENT_SENT`) only once the amendment has left for IB
  (queued behind the pacer it would be lost with this process after the strategy was told it was sent). "Sent" is
  all it says: the record's terms change when IB's openOrder reports the new ones, and an ``amend_rejected``
  notice leaves the previous ones standing (:mod:`actors.gateway.events`);
* ``CancelIbOrder``: never checked against the halts; an order whose placeOrder is still queued (IB never got it)
  is dropped instead of cancelled, and a queued amendment of an order IB has is superseded by the cancel, which is
  sent. The cancel's cause (the strategy's request) is kept for the Cancelled status IB reports.
"""

from __future__ import annotations

import asyncio

from loguru import logger

from actors.gateway import connection as cs
from actors.gateway import libtypes as lib
from actors.gateway.cancels import CancelSweeper, UnsentOrders, strategy_cause
from actors.gateway.contracts import ContractCache, Qualified
from actors.gateway.convert import error_text
from actors.gateway.halts import HaltLatch
from actors.gateway.ib import IbSession
from actors.gateway.ordertable import GATEWAY, TERMINAL, IbOrderRecord, IbOrderTable
from actors.gateway.outbox import Outbox
from actors.gateway.pacing import place_order_id
from actors.gateway.persist import PLACED, ExecJournal
from bus.approval import ApprovalError, ApprovalVerifier
from bus.contracts import rounded_order
from bus.messages import (
    AMENDMENT_SENT,
    DUPLICATE_STATUS,
    Ack,
    AmendOrder,
    CancelIbOrder,
    OrderSpec,
    Rejected,
    SubmitAck,
    SubmitOrder,
    tag_of,
)

#: An amendment is acknowledged once it has left for IB. Queued behind IB's message budget it normally goes within
#: a second or two (the order manager gives up sooner and treats the outcome as unknown); this only bounds the wait.
AMEND_TRANSMIT_TIMEOUT_S = 30.0


class OrderEntry:
    """SubmitOrder, AmendOrder and CancelIbOrder (see module docstring)."""

    def __init__(
        self,
        *,
        session: IbSession,
        table: IbOrderTable,
        contracts: ContractCache,
        latch: HaltLatch,
        conn: cs.ConnectionTracker,
        verifier: ApprovalVerifier,
        journal: ExecJournal,
        sweeper: CancelSweeper,
        unsent: UnsentOrders,
        outbox: Outbox,
        client_id: int,
    ) -> None:
        self.session = session
        self.table = table
        self.contracts = contracts
        self.latch = latch
        self.conn = conn
        self.verifier = verifier
        self.journal = journal
        self.sweeper = sweeper
        self.unsent = unsent
        self.outbox = outbox
        self.client_id = client_id
        #: orderRef -> a SubmitOrder in flight for it (a duplicate waits for it, then answers Duplicate)
        self._placing: dict[str, asyncio.Future[None]] = {}

    def gate(self, strategy_id: str, symbol: str, request_type: str, con_id: int = 0) -> Rejected | None:
        """Connection and halt checks shared by submit and amend."""
        conn = self.conn
        if not conn.ready:
            if conn.state in (cs.DISCONNECTED, cs.CONNECTING, cs.STOPPED):
                return Rejected(
                    code="disconnected",
                    reason=f"gateway is not connected to IB ({conn.state}"
                    f"{', IB ' + str(conn.ib_code) if conn.ib_code else ''}): order refused",
                    request_type=request_type,
                )
            return Rejected(
                code="not_ready",
                reason=f"gateway is {conn.state} (reconciling with IB): order refused until READY",
                request_type=request_type,
            )
        scope = self.latch.blocking_scope(strategy_id, symbol, con_id)
        if scope is not None:
            rec = self.latch.scopes[scope]
            return Rejected(
                code="halted",
                reason=f"trading is HALTED for {scope} (epoch {rec.epoch}: {rec.reason}); "
                f"resume is an explicit command",
                request_type=request_type,
            )
        return None

    async def submit(self, req: SubmitOrder) -> SubmitAck | Rejected:
        spec = req.order
        ref = spec.order_ref
        rtype = tag_of(SubmitOrder)
        # the approval must be the governor's signature over exactly this order before anything else is said about
        # the order, "Duplicate" included (its expiry and single use are checked before a placement, below)
        try:
            self.verifier.verify_genuine(req.approval, spec, is_modify=False)
        except ApprovalError as exc:
            logger.warning("gateway: order {} refused: {} ({})", ref, exc.code, exc.reason)
            return Rejected(code=exc.code, reason=exc.reason, request_type=rtype)
        if spec.group_id or spec.parent_id or spec.oca_type:
            # a member alone could work without its parent or its OCA siblings: groups go through SubmitGroup
            return Rejected(
                code="bad_request",
                reason=f"{ref} is a member of group {spec.group_id!r}: use SubmitGroup",
                request_type=rtype,
            )
        inflight = self._placing.get(ref)
        if inflight is not None:
            await asyncio.shield(inflight)
        existing = self.table.get(ref)
        if existing is not None:
            logger.warning(
                "gateway: duplicate SubmitOrder for {}: returning the existing order, no new IB order", existing.label()
            )
            return SubmitAck(
                order_ref=ref, ib_order_id=existing.ib_order_id, perm_id=existing.perm_id, status=DUPLICATE_STATUS
            )
        if self.journal.has_placed(ref):
            # placed before a gateway restart and no longer listed by IB (e.g. cancelled): never place it twice
            logger.warning("gateway: duplicate SubmitOrder for {}: placed before a restart, not placing again", ref)
            return SubmitAck(order_ref=ref, ib_order_id=0, perm_id=0, status=DUPLICATE_STATUS)
        refused = self.gate(spec.strategy_id, spec.instrument.symbol, rtype)
        if refused is not None:
            logger.info("gateway: order {} refused: {} ({})", ref, refused.code, refused.reason)
            return refused
        try:
            self.verifier.verify(req.approval, spec, is_modify=False)
        except ApprovalError as exc:
            logger.warning("gateway: order {} refused: {} ({})", ref, exc.code, exc.reason)
            return Rejected(code=exc.code, reason=exc.reason, request_type=rtype)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._placing[ref] = fut
        try:
            return await self._place(req)
        finally:
            self._placing.pop(ref, None)
            fut.set_result(None)

    async def _place(self, req: SubmitOrder) -> SubmitAck | Rejected:
        spec = req.order
        ref = spec.order_ref
        rtype = tag_of(SubmitOrder)
        try:
            found = await self.contracts.resolve(spec.instrument)
        except (TimeoutError, ConnectionError) as exc:
            return Rejected(
                code="disconnected", reason=f"contract lookup failed: {error_text(exc)}", request_type=rtype
            )
        if not isinstance(found, Qualified):
            logger.warning("gateway: order {} refused: {} ({})", ref, found.code, found.reason)
            return Rejected(code=found.code, reason=found.reason, request_type=rtype)
        ib_symbol = found.info.instrument.symbol
        refused = self.gate(spec.strategy_id, ib_symbol, rtype, found.con_id)  # state may have changed
        if refused is not None:
            return refused
        limit, stop = rounded_order(spec, found.info)
        self.journal.record(PLACED, ref)  # before IB sees it: at most one IB order per orderRef, restarts too
        order = self.session.make_order(spec, self.conn.account, limit=limit, stop=stop)
        order.orderId = self.session.next_order_id()
        # filed before the placeOrder reaches the pacer: the pacer may send it at once, and its "sent" must find
        # the record (a cancel of an order IB has is sent to IB, never answered "cancelled before transmission")
        rec = self.table.add_placed(spec, order.orderId, self.client_id, symbol=ib_symbol, con_id=found.con_id)
        try:
            rec.trade = self.session.place(found.contract, order)
        except ConnectionError as exc:
            self.table.remove(rec)
            return Rejected(code="disconnected", reason=f"IB connection lost while placing: {exc}", request_type=rtype)
        self.outbox.maybe_order_status(
            self.table.observe(
                rec,
                status="PendingSubmit",
                filled=0.0,
                remaining=float(spec.quantity),
                avg_fill_price=0.0,
                source=GATEWAY,
            )
        )
        return SubmitAck(order_ref=ref, ib_order_id=rec.ib_order_id, perm_id=rec.perm_id, status=rec.status)

    async def amend(self, req: AmendOrder) -> SubmitAck | Rejected:
        spec = req.order
        ref = spec.order_ref
        rtype = tag_of(AmendOrder)
        rec = self.table.get(ref)
        if rec is None or rec.trade is None:
            return Rejected(code="not_found", reason=f"no order {ref} at this gateway", request_type=rtype)
        if rec.is_done:
            return Rejected(
                code="bad_request", reason=f"order {ref} is {rec.status}: nothing to amend", request_type=rtype
            )
        old = rec.spec
        if old is not None and (old.instrument != spec.instrument or old.side != spec.side):
            return Rejected(
                code="bad_request", reason="an amendment cannot change the instrument or the side", request_type=rtype
            )
        if old is None and (spec.instrument.symbol != rec.symbol or spec.side != rec.trade.order.action):
            return Rejected(
                code="bad_request", reason="an amendment cannot change the instrument or the side", request_type=rtype
            )
        refused = self.gate(spec.strategy_id, rec.symbol or spec.instrument.symbol, rtype, rec.con_id)
        if refused is not None:
            return refused
        try:
            self.verifier.verify(req.approval, spec, is_modify=True)
        except ApprovalError as exc:
            return Rejected(code=exc.code, reason=exc.reason, request_type=rtype)
        trade = rec.trade
        prices = self._prices(spec, rec.con_id, rtype)
        if isinstance(prices, Rejected):
            return prices
        if trade.orderStatus.status in TERMINAL:
            trade.orderStatus.status = rec.status  # a local guess of the library's; IB reports the order working
        self.session.apply_spec(trade.order, spec, limit=prices[0], stop=prices[1])
        # the record keeps IB's terms (rec.spec) until IB reports the new ones
        rec.modify_pending = True
        rec.amendment = spec
        try:
            self.session.place(trade.contract, trade.order)
        except ConnectionError as exc:
            self._amendment_lost(rec, spec)
            return Rejected(code="disconnected", reason=f"IB connection lost while amending: {exc}", request_type=rtype)
        # acknowledge only what has left for IB: an amendment still queued behind the pacer would be lost with this
        # process (a crash, a disconnect) after the strategy had been told it was sent
        sent = self.session.sender.watch_last(lambda msg: place_order_id(msg) == rec.ib_order_id)
        if sent is not None:
            try:
                transmitted = await asyncio.wait_for(asyncio.shield(sent), AMEND_TRANSMIT_TIMEOUT_S)
            except TimeoutError:
                return Rejected(
                    code="timeout",
                    request_type=rtype,
                    reason=f"amendment of {ref} still queued "
                    f"behind IB's message budget after {AMEND_TRANSMIT_TIMEOUT_S:g}s; it goes out later",
                )
            if not transmitted:
                self._amendment_lost(rec, spec)  # never reached IB: the order keeps its previous terms
                logger.info("gateway: amendment of {} not transmitted (superseded or disconnected)", rec.label())
                return Rejected(
                    code="not_sent",
                    request_type=rtype,
                    reason=f"amendment of {ref} was not "
                    f"transmitted to IB (a cancel or kill superseded it, or the connection dropped); "
                    f"the order keeps its previous terms",
                )
        logger.info(
            "gateway: amendment of {} sent -> qty {:g} lmt {} stp {} (IB's answer follows)",
            rec.label(),
            spec.quantity,
            spec.limit_price,
            spec.stop_price,
        )
        return SubmitAck(order_ref=ref, ib_order_id=rec.ib_order_id, perm_id=rec.perm_id, status=AMENDMENT_SENT)

    def _amendment_lost(self, rec: IbOrderRecord, spec: OrderSpec) -> None:
        """An amendment that never reached IB: if it is still the pending one, IB's terms stand (also on the
        library's Order, so the next amendment starts from them)."""
        if rec.amendment is spec:
            rec.amendment = None
            rec.modify_pending = False
            if rec.trade is not None and rec.spec is not None:
                before = self._prices(rec.spec, rec.con_id, tag_of(AmendOrder))
                if not isinstance(before, Rejected):
                    self.session.apply_spec(rec.trade.order, rec.spec, limit=before[0], stop=before[1])

    def apply_terms(self, order: lib.Order, spec: OrderSpec) -> None:
        """Put ``spec``'s terms on a library Order (IB's terms back after a refused amendment), with its prices
        rounded to the contract's grid when the order asks for it."""
        found = self.contracts.cached(spec.instrument)
        limit, stop = rounded_order(spec, found.info) if found is not None else (spec.limit_price, spec.stop_price)
        self.session.apply_spec(order, spec, limit=limit, stop=stop)

    def _prices(self, spec: OrderSpec, con_id: int, request_type: str) -> tuple[float | None, float | None] | Rejected:
        """(limit, stop) for IB: rounded to the contract's grid when the order asks for it."""
        if not spec.round_to_tick:
            return spec.limit_price, spec.stop_price
        known = self.contracts.known(con_id)
        if known is None:
            return Rejected(
                code="not_ready",
                reason=f"no contract details for conId {con_id}: cannot round {spec.order_ref} to its tick",
                request_type=request_type,
            )
        return rounded_order(spec, known.info)

    def cancel(self, req: CancelIbOrder) -> Ack | Rejected:
        rtype = tag_of(CancelIbOrder)
        rec = self.table.get(req.order_ref)
        if rec is None:
            return Rejected(code="not_found", reason=f"no order {req.order_ref!r} at this gateway", request_type=rtype)
        if rec.is_done:
            return Ack(detail=f"already {rec.status}")
        cause = strategy_cause(req.reason)
        if not rec.transmitted and self.unsent.drop(only=rec, cause=cause):
            return Ack(detail="cancelled before transmission")  # its placeOrder was still queued: IB never had it
        # an amendment still queued behind the pacer would reach IB after this cancel (cancels go first) and be
        # refused there after the strategy was told it was sent: the cancel supersedes it, drop it (the amendment's
        # own request is answered not_sent and the order keeps IB's terms)
        dropped = self.unsent.drop(only=rec)
        if dropped:
            logger.info("gateway: queued amendment of {} dropped: the cancel supersedes it", rec.label())
        if not self.session.is_connected():
            return Rejected(
                code="disconnected", reason="gateway is not connected to IB: cancel not sent", request_type=rtype
            )
        if not self.sweeper.cancel_one(rec, cause):
            return Rejected(
                code="bad_request",
                reason=f"order {rec.label()} belongs to client id {rec.client_id}; "
                f"only a global cancel (kill) reaches it",
                request_type=rtype,
            )
        logger.info("gateway: cancel sent for {}{}", rec.label(), f" ({req.reason})" if req.reason else "")
        return Ack(detail="cancel sent" + (" (a queued amendment was dropped)" if dropped else ""))
