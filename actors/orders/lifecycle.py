"""The order lifecycle: an explicit transition table over IB's statuses plus Khazad's own, and one order's state.

Pure logic, no I/O: :class:`ManagedOrder` applies status events and fills and says what happened
(:class:`StatusOutcome`, :class:`FillOutcome`); the ledger journals and publishes that. The order's stage in our own
pipeline has its own table (:mod:`~actors.orders.stages`): :meth:`ManagedOrder.move_to` is the only way to change it.

Rules (see ``docs/orders.md``):

* a status event whose transition is in :data:`TRANSITIONS` is applied; a repeated status only updates quantities;
* an impossible transition is never silently dropped: the outcome says ``impossible`` (the ledger logs and journals
  it with a flag) and the order keeps its best-known state. The best-known state is the current one, except when
  the current state is our own rejection (RiskRejected/GatewayRejected) and IB reports the order: IB is the
  authority on what is at IB, so its status is adopted;
* the filled quantity never goes backwards (status events can arrive repeated or out of order);
* fills are keyed by ``exec_key`` (execId without its correction suffix): a replay is a duplicate, a correction
  (newer execId, same key) replaces the earlier fill; a fill after Cancelled is applied and noted;
* a status the gateway marks as a ``correction`` (IB reports an order working after the gateway had itself decided
  it was done: a rejection, a cancel before transmission, a reconnect's clean-up) is adopted outside the table:
  IB is the authority on what is at IB;
* the order's terms (``spec``) are the ones IB last reported (:meth:`ManagedOrder.adopt_terms`); an amendment sent
  and not yet answered is ``amendment``; IB's refusal leaves the reported terms standing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from actors.orders.stages import IllegalStageChange, Stage, check_stage_change
from bus.messages import (
    DONE_STATUSES,
    IB_STATUSES,
    KHAZAD_STATUSES,
    LIMIT_ORDER_TYPES,
    LIVE_STATUSES,
    MAX_HISTORY,
    TRAILING_ORDER_TYPES,
    FillEvent,
    OrderSpec,
    OrderTerms,
    OrderView,
    StatusChange,
    aux_price,
)

RECEIVED = "Received"
RISK_REJECTED = "RiskRejected"
GATEWAY_REJECTED = "GatewayRejected"
PENDING_SUBMIT = "PendingSubmit"
PRE_SUBMITTED = "PreSubmitted"
SUBMITTED = "Submitted"
API_PENDING = "ApiPending"
PENDING_CANCEL = "PendingCancel"
API_CANCELLED = "ApiCancelled"
CANCELLED = "Cancelled"
FILLED = "Filled"
INACTIVE = "Inactive"

ALL_STATUSES = frozenset(IB_STATUSES) | frozenset(KHAZAD_STATUSES)
OUR_REJECTIONS = frozenset({RISK_REJECTED, GATEWAY_REJECTED})
CANCELLED_STATUSES = frozenset({CANCELLED, API_CANCELLED})

#: Every legal transition ``from -> {to}``. Anything else is impossible (logged, journalled with a flag, kept).
#: Nothing ever transitions *into* Received. Received may go to any IB status: the gateway's events can overtake
#: its reply to SubmitOrder. Cancelled -> Filled is the cancel race lost (IB filled the rest before the cancel).
TRANSITIONS: dict[str, frozenset[str]] = {
    RECEIVED: frozenset(IB_STATUSES) | OUR_REJECTIONS,
    RISK_REJECTED: frozenset(),
    GATEWAY_REJECTED: frozenset(),
    # our rejections from PendingSubmit: a submission whose outcome was unknown (no reply, not found at IB) that
    # is refused when resumed, or never resumed (orphan timeout); IB's own report wins if it comes after all
    PENDING_SUBMIT: frozenset(
        {
            API_PENDING,
            PRE_SUBMITTED,
            SUBMITTED,
            PENDING_CANCEL,
            API_CANCELLED,
            CANCELLED,
            FILLED,
            INACTIVE,
            RISK_REJECTED,
            GATEWAY_REJECTED,
        }
    ),
    API_PENDING: frozenset(
        {PENDING_SUBMIT, PRE_SUBMITTED, SUBMITTED, PENDING_CANCEL, API_CANCELLED, CANCELLED, FILLED, INACTIVE}
    ),
    PRE_SUBMITTED: frozenset({SUBMITTED, PENDING_CANCEL, API_CANCELLED, CANCELLED, FILLED, INACTIVE}),
    SUBMITTED: frozenset({PENDING_CANCEL, API_CANCELLED, CANCELLED, FILLED, INACTIVE}),
    # a cancel IB refused leaves the order working again
    PENDING_CANCEL: frozenset({PRE_SUBMITTED, SUBMITTED, API_CANCELLED, CANCELLED, FILLED, INACTIVE}),
    API_CANCELLED: frozenset({CANCELLED, FILLED}),
    CANCELLED: frozenset({FILLED}),
    FILLED: frozenset(),
    # IB may reactivate an inactive order (e.g. after a margin or permission problem is fixed)
    INACTIVE: frozenset({PRE_SUBMITTED, SUBMITTED, PENDING_CANCEL, API_CANCELLED, CANCELLED, FILLED}),
}

#: Quantities and prices within this are equal (IB echoes floats).
TERMS_EPSILON = 1e-9


def _same_price(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= TERMS_EPSILON


def _same_terms(spec: OrderSpec, terms: OrderTerms) -> bool:
    return (
        abs(spec.quantity - terms.quantity) <= TERMS_EPSILON
        and spec.order_type == terms.order_type
        and (spec.order_type not in LIMIT_ORDER_TYPES or _same_price(spec.limit_price, terms.limit_price))
        and _same_price(aux_price(spec), terms.stop_price)
    )


#: History is capped (bus.messages.MAX_HISTORY: what an OrderView may carry) so a long-lived order with thousands
#: of partial fills stays small; the journal keeps all. The first HISTORY_HEAD steps are always kept.
HISTORY_HEAD = 16


def is_legal(current: str, new: str) -> bool:
    """True when ``current -> new`` is in the transition table."""
    return new in TRANSITIONS.get(current, frozenset())


@dataclass(slots=True)
class FillRecord:
    """One execution of an order (the latest version of it, after corrections)."""

    exec_id: str
    quantity: float
    price: float


@dataclass(frozen=True, slots=True)
class StatusOutcome:
    """What applying one status report did. ``kind``: transition | repeat | impossible."""

    kind: str
    changed: bool
    previous: str
    implied: bool = False
    adopted: bool = False
    note: str = ""


@dataclass(frozen=True, slots=True)
class FillOutcome:
    """What applying one fill did. ``kind``: new | correction | duplicate | stale."""

    kind: str
    changed: bool
    late_after_cancel: bool = False
    note: str = ""


@dataclass(slots=True)
class ManagedOrder:
    """One order as the order manager manages it: its spec, IB's status, our pipeline stage, fills and history
    (mutable; the journal row mirrors it after every change). The stage changes only through :meth:`move_to`."""

    spec: OrderSpec
    status: str = RECEIVED
    stage: str = Stage.RECEIVED
    #: SubmitOrder was sent at least once (so the order may be at IB even if no reply came)
    sent: bool = False
    cancel_requested: bool = False
    status_filled: float = 0.0
    status_avg: float = 0.0
    ib_order_id: int = 0
    perm_id: int = 0
    reason: str = ""
    error_code: int | None = None
    history: list[StatusChange] = field(default_factory=list)
    created_wall_ns: int = 0
    updated_wall_ns: int = 0
    fills: dict[str, FillRecord] = field(default_factory=dict)
    #: terms sent to IB in an amendment, neither confirmed nor refused yet (not journalled: after a restart the
    #: reconciliation adopts IB's terms)
    amendment: OrderSpec | None = None
    #: IB's refusal of the last amendment ("IB <code>: <text>"), until the next one is sent
    amendment_refused: str = ""

    def __setattr__(self, name: str, value: Any) -> None:
        # the stage is set once by __init__ (a new order, or one read back from the journal); after that only
        # move_to() changes it, through the stage table: a direct write is refused so no bypass can creep back
        if name == "stage" and hasattr(self, "stage"):
            raise IllegalStageChange(f"{self.spec.order_ref}: the stage changes only through move_to()")
        object.__setattr__(self, name, value)

    # -- derived -------------------------------------------------------------------------------------------------

    @property
    def order_ref(self) -> str:
        return self.spec.order_ref

    @property
    def strategy_id(self) -> str:
        return self.spec.strategy_id

    @property
    def client_order_id(self) -> str:
        return self.spec.client_order_id

    @property
    def fills_quantity(self) -> float:
        return sum(f.quantity for f in self.fills.values())

    @property
    def filled(self) -> float:
        return max(self.status_filled, self.fills_quantity)

    @property
    def avg_fill_price(self) -> float:
        qty = self.fills_quantity
        if qty > 0 and qty >= self.status_filled:
            return sum(f.quantity * f.price for f in self.fills.values()) / qty
        return self.status_avg

    @property
    def remaining(self) -> float:
        return max(0.0, self.spec.quantity - self.filled)

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES

    @property
    def is_done(self) -> bool:
        return self.status in DONE_STATUSES

    @property
    def is_working(self) -> bool:
        return not self.is_done

    def view(self, *, with_history: bool = True) -> OrderView:
        return OrderView(
            spec=self.spec,
            status=self.status,
            filled=self.filled,
            remaining=self.remaining,
            avg_fill_price=self.avg_fill_price,
            ib_order_id=self.ib_order_id,
            perm_id=self.perm_id,
            is_live=self.is_live,
            is_done=self.is_done,
            reason=self.reason,
            error_code=self.error_code,
            history=list(self.history) if with_history else [],
            created_wall_ns=self.created_wall_ns,
            updated_wall_ns=self.updated_wall_ns,
            amendment=self.amendment,
        )

    # -- changes -------------------------------------------------------------------------------------------------

    def move_to(self, stage: str) -> bool:
        """Move to pipeline stage ``stage`` through the stage table (:data:`~actors.orders.stages.STAGE_TRANSITIONS`;
        an illegal change raises :class:`~actors.orders.stages.IllegalStageChange` and changes nothing). Staying in
        the same stage is no change (False). Entering a stage at which SubmitOrder has been sent marks the order
        ``sent``: it may be at IB from then on."""
        if stage == self.stage:
            return False
        check_stage_change(self.order_ref, self.stage, stage)
        object.__setattr__(self, "stage", stage)
        if stage in Stage.SENT:
            self.sent = True
        return True

    def add_history(self, status: str, now_ns: int, reason: str = "", error_code: int | None = None) -> None:
        """Record one step (status with the quantities as they are now) in the order's history."""
        self.history.append(
            StatusChange(
                status=status,
                wall_ns=now_ns,
                filled=self.filled,
                remaining=self.remaining,
                reason=reason,
                error_code=error_code,
            )
        )
        if len(self.history) > MAX_HISTORY:
            # keep how it started and how it is going; the journal has every step
            del self.history[HISTORY_HEAD : len(self.history) - (MAX_HISTORY - HISTORY_HEAD)]
        self.updated_wall_ns = now_ns

    def set_status(self, status: str, now_ns: int, *, reason: str = "", error_code: int | None = None) -> StatusOutcome:
        """A transition decided by the order manager itself (risk decision, gateway reply, local cancel, orphan)."""
        return self.apply_status(status, now_ns, reason=reason, error_code=error_code, local=True)

    def apply_status(
        self,
        status: str,
        now_ns: int,
        *,
        filled: float | None = None,
        avg_fill_price: float = 0.0,
        ib_order_id: int = 0,
        perm_id: int = 0,
        reason: str = "",
        error_code: int | None = None,
        local: bool = False,
        correction: bool = False,
    ) -> StatusOutcome:
        """Apply one status report (from IB through the gateway or a snapshot; ``local`` for our own pipeline's
        decisions, which never imply an IB PendingSubmit; ``correction``: IB contradicts a final status the gateway
        had decided itself, see the module docstring)."""
        previous = self.status
        ids_changed = False
        if ib_order_id and ib_order_id != self.ib_order_id:
            self.ib_order_id, ids_changed = ib_order_id, True
        if perm_id and perm_id != self.perm_id:
            self.perm_id, ids_changed = perm_id, True
        progressed = False
        if filled is not None and filled > self.status_filled:  # filled never goes backwards
            self.status_filled = filled
            if avg_fill_price > 0:
                self.status_avg = avg_fill_price
            progressed = True
        if status == previous:
            # same status again: quantities may have moved, or IB attached an error/warning to the live order
            noted = bool(reason or error_code) and (reason, error_code) != (self.reason, self.error_code)
            if noted:
                self.reason, self.error_code = reason, error_code
            if progressed or noted:
                self.add_history(status, now_ns, reason or "fill progress", error_code)
            elif ids_changed:
                self.updated_wall_ns = now_ns
            return StatusOutcome("repeat", progressed or ids_changed or noted, previous)
        if status in ALL_STATUSES and is_legal(previous, status):
            implied = False
            if not local and previous == RECEIVED and status in IB_STATUSES and status != PENDING_SUBMIT:
                # every order IB reports went through PendingSubmit; its own event was overtaken or never sent
                self.add_history(PENDING_SUBMIT, now_ns, f"implied: IB reported {status} first")
                implied = True
            self.status = status
            self.reason = reason
            self.error_code = error_code
            self.add_history(status, now_ns, reason, error_code)
            return StatusOutcome("transition", True, previous, implied=implied)
        if correction and status in IB_STATUSES and previous in DONE_STATUSES:
            note = f"IB reports {status} for an order the gateway had marked {previous}: adopting IB's status"
            self.status = status
            self.reason = note
            self.error_code = error_code
            self.add_history(status, now_ns, note, error_code)
            return StatusOutcome("correction", True, previous, adopted=True, note=note)
        if previous in OUR_REJECTIONS and status in IB_STATUSES:
            note = f"IB reports {status} for an order we marked {previous}: adopting IB's status"
            self.status = status
            self.reason = note
            self.error_code = error_code
            self.add_history(status, now_ns, note, error_code)
            return StatusOutcome("impossible", True, previous, adopted=True, note=note)
        note = f"impossible transition {previous} -> {status}: keeping {previous}"
        if progressed:
            self.add_history(previous, now_ns, f"{note} (fill progress applied)")
        elif ids_changed:
            self.updated_wall_ns = now_ns
        return StatusOutcome("impossible", progressed or ids_changed, previous, note=note)

    def adopt_terms(self, terms: OrderTerms, now_ns: int, note: str = "") -> bool:
        """IB reports the order's terms: they become the spec (quantity, limit, stop); an amendment with exactly
        these terms is confirmed. True when the spec changed."""
        pending = self.amendment
        if pending is not None and _same_terms(pending, terms):
            self.amendment = None
        changes: dict[str, Any] = {}
        if abs(terms.quantity - self.spec.quantity) > TERMS_EPSILON and terms.quantity > 0:
            changes["quantity"] = terms.quantity
        if terms.order_type == self.spec.order_type:  # prices only mean the same thing for the same type
            # a TRAIL LIMIT gets its limit at the trigger, from the stop: not a term of ours
            if self.spec.order_type in LIMIT_ORDER_TYPES and not _same_price(terms.limit_price, self.spec.limit_price):
                changes["limit_price"] = terms.limit_price
            if not _same_price(terms.stop_price, aux_price(self.spec)):
                # IB's auxPrice: a trailing order's trailing amount (a percent one has none), else the stop
                trailing = self.spec.order_type in TRAILING_ORDER_TYPES
                if not trailing or self.spec.trailing_amount is not None:
                    changes["trailing_amount" if trailing else "stop_price"] = terms.stop_price
        if not changes:
            return False
        try:
            self.spec = msgspec.structs.replace(self.spec, **changes)
        except ValueError as exc:  # terms our spec cannot express: kept as they were, noted
            self.add_history(self.status, now_ns, f"IB reports terms {changes} that cannot be adopted: {exc}")
            return True
        what = ", ".join(f"{k}={v:g}" for k, v in changes.items() if v is not None)
        self.add_history(self.status, now_ns, note or f"terms reported by IB: {what}")
        return True

    def apply_fill(self, fill: FillEvent, now_ns: int) -> FillOutcome:
        """Apply one execution; idempotent by ``exec_key`` (see module docstring)."""
        old = self.fills.get(fill.exec_key)
        if old is not None and old.exec_id == fill.exec_id:
            return FillOutcome("duplicate", False)
        if old is not None and fill.exec_id < old.exec_id:
            return FillOutcome("stale", False, note=f"older version {fill.exec_id} of {old.exec_id} ignored")
        kind = "new" if old is None else "correction"
        self.fills[fill.exec_key] = FillRecord(fill.exec_id, fill.quantity, fill.price)
        if fill.ib_order_id and not self.ib_order_id:
            self.ib_order_id = fill.ib_order_id
        if fill.perm_id and not self.perm_id:
            self.perm_id = fill.perm_id
        late = self.status in CANCELLED_STATUSES
        if late:
            note = f"late fill after cancel: {fill.quantity:g} @ {fill.price:g}"
        elif self.status in OUR_REJECTIONS:
            note = f"fill for an order marked {self.status}: {fill.quantity:g} @ {fill.price:g}"
        elif kind == "correction":
            note = f"fill corrected: {fill.exec_id} {fill.quantity:g} @ {fill.price:g}"
        else:
            note = f"fill {fill.quantity:g} @ {fill.price:g}"
        self.add_history(self.status, now_ns, note)
        return FillOutcome(kind, True, late_after_cancel=late, note=note)


#: The former name, kept while tests/chaos/test_chaos_invariants.py still imports it (the gateway's own record
#: class had the same name); new code says ManagedOrder.
OrderRecord = ManagedOrder
