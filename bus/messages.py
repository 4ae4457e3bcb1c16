"""Every message that crosses the Khazad bus, in one module.

Wire format: msgpack via msgspec. Every frame on the wire is an :class:`Envelope` whose ``body`` is one member
of a tagged union, one union per channel:

* :data:`Event`   - pub/sub through the proxy (topic frame + envelope frame);
* :data:`Request` - DEALER -> ROUTER service calls;
* :data:`Reply`   - ROUTER -> DEALER answers (always a reply struct or :class:`Rejected`).

Validation is part of decoding: constraints (``Meta``) and ``__post_init__`` checks run when a frame is decoded,
so a NaN quantity, a negative price or an empty symbol never reaches an actor's handler; the sender gets a
:class:`Rejected` with the reason instead. ``__post_init__`` also runs on construction, so an SDK user gets the
same error locally before anything is sent.

Structs are ``frozen=True, kw_only=True``; tags are snake_case names in the ``type`` field. Adding an optional
field with a default is a compatible change; anything else bumps :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Generic, Literal, TypeVar

import msgspec
from msgspec import Meta

from bus.registry import EXTERNAL_STRATEGY

SCHEMA_VERSION = 1

# ---------------------------------------------------------------------------------------------------------------
# Constrained scalar types (validated on decode)
# ---------------------------------------------------------------------------------------------------------------

#: Largest quantity we accept in one order; IB's own limits are far below, this only bounds garbage.
MAX_QUANTITY = 1e9
#: Largest price we accept; catches overflow-style garbage, not fat fingers (that is the risk governor's job).
MAX_PRICE = 1e9

Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
StrategyId = Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_\-]+$")]
ClientOrderId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
#: Letters, digits, ``_ . - /`` and inner spaces (IB's ``BRK B``); never blank, never leading/trailing whitespace
#: (`` AAPL`` must not pass a restricted-symbol check as a different string than ``AAPL``).
SYMBOL_PATTERN = r"^[A-Za-z0-9_.\-/]([A-Za-z0-9_.\-/ ]*[A-Za-z0-9_.\-/])?$"
SYMBOL_MAX_LENGTH = 32
Symbol = Annotated[str, Meta(min_length=1, max_length=SYMBOL_MAX_LENGTH, pattern=SYMBOL_PATTERN)]
Quantity = Annotated[float, Meta(gt=0, le=MAX_QUANTITY)]
Price = Annotated[float, Meta(gt=0, le=MAX_PRICE)]
NonNegative = Annotated[float, Meta(ge=0)]
#: ``all`` | ``strategy:<id>`` | ``symbol:<symbol>``
#: the symbol part follows SYMBOL_PATTERN (inner spaces allowed: ``symbol:BRK B``)
SCOPE_PATTERN = (
    r"^(all|strategy:[A-Za-z0-9_\-]{1,32}|symbol:[A-Za-z0-9_.\-/]([A-Za-z0-9_.\-/ ]{0,30}[A-Za-z0-9_.\-/])?)$"
)
Scope = Annotated[str, Meta(pattern=SCOPE_PATTERN)]

Side = Literal["BUY", "SELL"]
OrderType = Literal["MKT", "LMT", "STP", "STP LMT"]
TimeInForce = Literal["DAY", "GTC", "IOC"]
SecType = Literal["STK", "FUT", "CASH", "IND", "OPT"]
TradingState = Literal["ACTIVE", "REDUCING", "HALTED"]
AlertSeverity = Literal["info", "warning", "critical"]
#: What changed a trading state (``TradingStateEvent.cause``): an operator's kill, resume or SetTradingState, a
#: risk breaker (tripping or lifting), the gateway's halt latch mirrored by the governor, or the governor's recovery
#: at start (its state file was unreadable: it starts HALTED).
TradingCause = Literal["kill", "resume", "operator", "breaker", "gateway_latch", "recovery"]
ConnectionStateName = Literal["CONNECTING", "CONNECTED", "RECONCILING", "READY", "DISCONNECTED", "STOPPED"]

#: IB order statuses (as ib_insync reports them) plus Khazad's own pre-IB states.
IB_STATUSES = (
    "PendingSubmit",
    "PreSubmitted",
    "Submitted",
    "ApiPending",
    "PendingCancel",
    "ApiCancelled",
    "Cancelled",
    "Filled",
    "Inactive",
)
KHAZAD_STATUSES = ("Received", "RiskRejected", "GatewayRejected")
#: PreSubmitted is a LIVE order (waiting for a trigger or the open), never a failure.
LIVE_STATUSES = frozenset({"PreSubmitted", "Submitted", "PendingCancel"})
#: PendingSubmit/ApiPending/Received: sent or about to be sent, not yet confirmed live; they count as working.
WORKING_STATUSES = frozenset(
    {"Received", "PendingSubmit", "ApiPending", "PreSubmitted", "Submitted", "PendingCancel", "Inactive"}
)
DONE_STATUSES = frozenset({"Filled", "Cancelled", "ApiCancelled", "RiskRejected", "GatewayRejected"})
#: ``SubmitAck.status`` of the gateway's answer to a second SubmitOrder for an orderRef it already placed (no
#: second IB order was created).
DUPLICATE_STATUS = "Duplicate"
#: ``SubmitAck.status`` of the gateway's answer to an AmendOrder: the amendment has left for IB. It says nothing
#: about IB's answer: the new terms hold once IB reports them (``OrderStatusEvent.terms``), and an
#: ``OrderNoticeEvent`` with effect ``amend_rejected`` means the previous terms stand.
AMENDMENT_SENT = "sent"
#: What an IB error or notice about an order does to it (the gateway's table, ``actors/gateway/notices.py``):
#: ``info`` nothing (logged and published); ``rejected`` final, with the code and reason; ``cancel_refused`` the
#: cancel failed, the order is whatever IB says; ``amend_rejected`` the previous terms stand; ``unknown`` nothing,
#: and the gateway asks IB again (open and completed orders, executions).
NoticeEffect = Literal["info", "rejected", "cancel_refused", "amend_rejected", "unknown"]


def is_live_status(status: str) -> bool:
    """True when IB has the order working (PreSubmitted counts: it is waiting, not failed)."""
    return status in LIVE_STATUSES


def is_done_status(status: str) -> bool:
    """True when the order can no longer fill (Inactive is not done: IB may still work it)."""
    return status in DONE_STATUSES


# Construction-time checks (``__post_init__``): msgspec validates types and ``Meta`` constraints only when decoding,
# so the checks a local caller must not get past are repeated here, each naming its field.
_SYMBOL_RE = re.compile(SYMBOL_PATTERN)
_SCOPE_RE = re.compile(SCOPE_PATTERN)


def _check_finite(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_symbol(name: str, value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} must not be blank")
    if len(value) > SYMBOL_MAX_LENGTH or not _SYMBOL_RE.match(value):
        raise ValueError(
            f"{name} {value!r} is not a symbol (letters, digits, _ . - / and inner spaces, "
            f"at most {SYMBOL_MAX_LENGTH} characters)"
        )


def _check_scope(value: str) -> None:
    if not isinstance(value, str) or not _SCOPE_RE.match(value):
        raise ValueError(f"scope {value!r} is not 'all', 'strategy:<id>' or 'symbol:<symbol>'")


def _check_positive(name: str, value: float | None, limit: float) -> None:
    _check_finite(name, value)
    if value is not None and not (0 < value <= limit):
        raise ValueError(f"{name} must be > 0 and <= {limit:g}, got {value!r}")


class Base(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field="type",
    tag=lambda name: re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower(),
):
    """Base of every bus message: frozen, keyword-only, tagged by its snake_case class name."""


class Plain(msgspec.Struct, frozen=True, kw_only=True):
    """Base of value objects nested inside messages (no tag)."""


# ---------------------------------------------------------------------------------------------------------------
# Value objects
# ---------------------------------------------------------------------------------------------------------------


class Instrument(Plain, frozen=True, kw_only=True):
    """What to trade. ``con_id`` 0 means "let the gateway qualify it"."""

    symbol: Symbol
    sec_type: SecType = "STK"
    exchange: Annotated[str, Meta(max_length=16)] = "SMART"
    currency: Annotated[str, Meta(min_length=3, max_length=3)] = "USD"
    last_trade_date: Annotated[str, Meta(max_length=16)] = ""
    multiplier: Annotated[str, Meta(max_length=16)] = ""
    con_id: Annotated[int, Meta(ge=0)] = 0

    def __post_init__(self) -> None:
        _check_symbol("symbol", self.symbol)


class OrderSpec(Plain, frozen=True, kw_only=True):
    """One order as a strategy intends it. Identity is (strategy_id, client_order_id); IB's orderRef carries both."""

    strategy_id: StrategyId
    client_order_id: ClientOrderId
    instrument: Instrument
    side: Side
    quantity: Quantity
    order_type: OrderType = "MKT"
    limit_price: Price | None = None
    stop_price: Price | None = None
    tif: TimeInForce = "DAY"
    outside_rth: bool = False

    def __post_init__(self) -> None:
        _check_positive("quantity", self.quantity, MAX_QUANTITY)
        _check_positive("limit_price", self.limit_price, MAX_PRICE)
        _check_positive("stop_price", self.stop_price, MAX_PRICE)
        needs_limit = self.order_type in ("LMT", "STP LMT")
        needs_stop = self.order_type in ("STP", "STP LMT")
        if needs_limit and self.limit_price is None:
            raise ValueError(f"{self.order_type} order needs limit_price")
        if not needs_limit and self.limit_price is not None:
            raise ValueError(f"{self.order_type} order must not carry limit_price")
        if needs_stop and self.stop_price is None:
            raise ValueError(f"{self.order_type} order needs stop_price")
        if not needs_stop and self.stop_price is not None:
            raise ValueError(f"{self.order_type} order must not carry stop_price")

    @property
    def order_ref(self) -> str:
        return order_ref_for(self.strategy_id, self.client_order_id)

    @property
    def signed_quantity(self) -> float:
        return self.quantity if self.side == "BUY" else -self.quantity


ORDER_REF_SEPARATOR = "/"


def order_ref_for(strategy_id: str, client_order_id: str) -> str:
    """IB ``orderRef`` for one of our orders: ``<strategy>/<client_order_id>`` (both patterns exclude ``/``)."""
    return f"{strategy_id}{ORDER_REF_SEPARATOR}{client_order_id}"


def parse_order_ref(order_ref: str) -> tuple[str, str] | None:
    """(strategy_id, client_order_id) from an orderRef, or None for orders Khazad did not place."""
    strategy, sep, coid = (order_ref or "").partition(ORDER_REF_SEPARATOR)
    if not sep or not strategy or not coid:
        return None
    return strategy, coid


def order_key(order_ref: str, perm_id: int) -> str:
    """The key of an order in books that also hold orders Khazad did not place: its orderRef, or ``perm:<permId>``
    for an order without one (typed into TWS by hand, or placed by another program)."""
    return order_ref or f"perm:{perm_id}"


def strategy_of(order_ref: str, strategy_id: str = "") -> str:
    """The strategy an order or execution belongs to: ``strategy_id`` when given, else the one named in its
    orderRef, else :data:`bus.registry.EXTERNAL_STRATEGY` (an order Khazad did not place)."""
    if strategy_id:
        return strategy_id
    parsed = parse_order_ref(order_ref)
    return parsed[0] if parsed else EXTERNAL_STRATEGY


class Approval(Plain, frozen=True, kw_only=True):
    """The risk governor's signature over exactly one order (see ``actors/risk/approval.py``)."""

    approval_id: Annotated[str, Meta(min_length=1, max_length=64)]
    order_digest: Annotated[str, Meta(min_length=1, max_length=128)]
    issued_wall_ns: int
    expires_wall_ns: int
    signature: Annotated[str, Meta(min_length=1, max_length=256)]


class AccountValue(Plain, frozen=True, kw_only=True):
    key: str
    value: str
    currency: str = ""


class Position(Plain, frozen=True, kw_only=True):
    account: str
    instrument: Instrument
    quantity: float
    avg_cost: float
    market_price: float | None = None
    market_value: float | None = None
    unrealized_pnl: float | None = None
    realized_pnl: float | None = None


class StatusChange(Plain, frozen=True, kw_only=True):
    """One step in an order's life, as journalled by the order manager."""

    status: str
    wall_ns: int
    filled: float = 0.0
    remaining: float = 0.0
    reason: str = ""
    error_code: int | None = None


class OrderView(Plain, frozen=True, kw_only=True):
    """The order manager's view of one order: its spec, where it is, and how it got there."""

    spec: OrderSpec
    status: str
    filled: float = 0.0
    remaining: float = 0.0
    avg_fill_price: float = 0.0
    ib_order_id: int = 0
    perm_id: int = 0
    is_live: bool = False
    is_done: bool = False
    reason: str = ""
    error_code: int | None = None
    history: list[StatusChange] = []
    created_wall_ns: int = 0
    updated_wall_ns: int = 0
    #: terms sent to IB in an amendment that IB has neither confirmed (its openOrder) nor rejected yet; ``spec``
    #: holds the terms IB last reported
    amendment: OrderSpec | None = None


class OrderTerms(Plain, frozen=True, kw_only=True):
    """An order's terms as IB's last openOrder reported them (what an amendment can change, and the side)."""

    side: str = ""
    quantity: float
    order_type: str = ""
    limit_price: float | None = None
    stop_price: float | None = None
    tif: str = ""


class IbOrder(Plain, frozen=True, kw_only=True):
    """An order as the gateway sees it at IB (for snapshots and reconciliation)."""

    ib_order_id: int
    perm_id: int
    client_id: int
    order_ref: str
    instrument: Instrument
    side: Side
    quantity: float
    order_type: str
    limit_price: float | None = None
    stop_price: float | None = None
    tif: str = "DAY"
    status: str
    filled: float = 0.0
    remaining: float = 0.0
    avg_fill_price: float = 0.0


class ActorHealth(Plain, frozen=True, kw_only=True):
    name: str
    alive: bool
    state: str = ""
    pid: int = 0
    last_beat_age_s: float | None = None
    detail: dict[str, str] = {}


# ---------------------------------------------------------------------------------------------------------------
# Events (pub/sub)
# ---------------------------------------------------------------------------------------------------------------


class Heartbeat(Base, frozen=True, kw_only=True):
    """``hb.<actor>``: I am alive. ``state`` is the actor's lifecycle state; ``detail`` small health facts."""

    actor: Name
    state: str = "RUNNING"
    pid: int = 0
    interval_s: float = 0.5
    detail: dict[str, str] = {}


#: ``detail`` key of the gateway's heartbeat holding its halt latch: the latched scopes, sorted, comma-separated
#: ("" when nothing is latched). The gateway publishes no trading state (the risk governor is the one authority);
#: the governor mirrors the latch from this, and the monitor shows it.
GATEWAY_LATCH_DETAIL = "halted"


def latch_detail(scopes: list[str]) -> str:
    """The :data:`GATEWAY_LATCH_DETAIL` value for these latched scopes."""
    return ",".join(sorted(scopes))


def latched_scopes(detail: dict[str, str]) -> frozenset[str] | None:
    """The gateway's latched scopes from its heartbeat ``detail``; None when the heartbeat does not say."""
    value = detail.get(GATEWAY_LATCH_DETAIL)
    if value is None:
        return None
    return frozenset(s for s in value.split(",") if s)


class OrderStatusEvent(Base, frozen=True, kw_only=True):
    """``gw.order.<strategy>``: one order status transition exactly as ib_insync reported it, interpreted."""

    order_ref: str
    strategy_id: str = ""
    client_order_id: str = ""
    ib_order_id: int = 0
    perm_id: int = 0
    status: str
    filled: float = 0.0
    remaining: float = 0.0
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    is_live: bool = False
    is_done: bool = False
    error_code: int | None = None
    reason: str = ""
    symbol: str = ""
    #: True when the gateway learned this status while re-synchronising (after a reconnect or a restart)
    replayed: bool = False
    #: IB's terms when its openOrder reported new ones (an amendment IB confirmed, an OCA reduction, an order first
    #: seen at IB); None when they did not change
    terms: OrderTerms | None = None
    #: True when IB reports this order in a state that contradicts a final status the gateway had decided itself
    #: (a rejection, a cancel before transmission, a reconnect's clean-up): IB's status replaces it
    correction: bool = False


class OrderNoticeEvent(Base, frozen=True, kw_only=True):
    """``gw.order.<strategy>``: an IB error or notice about one order (``code``, IB's ``message``) and its ``effect``
    (:data:`NoticeEffect`). ``status`` is the order's status after it (IB's; a notice changes it only when its effect
    is ``rejected``, and then an :class:`OrderStatusEvent` says so too). ``terms``: the terms that stand after an
    ``amend_rejected`` (IB's last report)."""

    order_ref: str
    strategy_id: str = ""
    client_order_id: str = ""
    ib_order_id: int = 0
    perm_id: int = 0
    symbol: str = ""
    code: int
    message: str = ""
    effect: NoticeEffect
    status: str = ""
    terms: OrderTerms | None = None


class FillEvent(Base, frozen=True, kw_only=True):
    """``fill.<symbol>``: one execution. ``exec_key`` is the execId without its correction suffix, so a corrected
    execution (``.01`` -> ``.02``) replaces the earlier one instead of adding to it."""

    exec_id: str
    exec_key: str
    order_ref: str
    strategy_id: str = ""
    client_order_id: str = ""
    ib_order_id: int = 0
    perm_id: int = 0
    instrument: Instrument
    side: Side
    quantity: float
    price: float
    cum_quantity: float = 0.0
    avg_price: float = 0.0
    exec_time: str = ""
    account: str = ""
    is_correction: bool = False
    replayed: bool = False


class CommissionEvent(Base, frozen=True, kw_only=True):
    """``commission.<symbol>``: IB's commission report for one execution."""

    exec_id: str
    exec_key: str
    order_ref: str = ""
    symbol: str = ""
    commission: float
    currency: str = ""
    realized_pnl: float | None = None


class OrderUpdate(Base, frozen=True, kw_only=True):
    """``order.<strategy>``: the order manager's view after each change (what strategies consume)."""

    order: OrderView
    change: str = "status"


#: Symbol as it travels in high-rate events the gateway alone publishes (the proxy's ACL keeps others off
#: ``md.*``): a length check only; the full pattern costs ~0.8 us per tick at every subscriber.
EventSymbol = Annotated[str, Meta(min_length=1, max_length=SYMBOL_MAX_LENGTH)]


class TickEvent(Base, frozen=True, kw_only=True):
    """``md.<symbol>``: top of book and last trade."""

    symbol: EventSymbol
    con_id: int = 0
    bid: float | None = None
    ask: float | None = None
    last: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None
    last_size: float | None = None
    ib_time: str = ""


class PositionEvent(Base, frozen=True, kw_only=True):
    """``position.<symbol>``: the gateway's position for one contract, as IB reports it."""

    position: Position


class AccountValuesEvent(Base, frozen=True, kw_only=True):
    """``account.values``: account values (NetLiquidation, TotalCashValue, ...) as IB reports them."""

    account: str
    values: list[AccountValue]


class ConnectionStateEvent(Base, frozen=True, kw_only=True):
    """``state.connection``: the gateway's link to IB. Orders are accepted only in READY."""

    state: ConnectionStateName
    ib_code: int | None = None
    message: str = ""
    mode: str = ""
    server_version: int = 0
    accounts: list[str] = []


class TradingStateEvent(Base, frozen=True, kw_only=True):
    """``state.trading``: one trading-state change of one scope (``all``, ``strategy:<id>``, ``symbol:<symbol>``).

    Published by the risk governor only (the one authority for trading states), once per change, with the epoch of
    that change (one sequence, persisted, so it keeps increasing across restarts; a restarted governor announces
    the restrictions it holds again with their own epochs). ``cause`` says what made the change and ``origin`` who:
    the operator's name for ``kill``/``resume``/``operator`` (``kill_id`` names the kill), the breaker's name for
    ``breaker``, ``gateway`` for ``gateway_latch``, ``risk.recovery`` for ``recovery``."""

    scope: Scope
    state: TradingState
    epoch: int
    reason: str = ""
    origin: str = ""
    cause: TradingCause | None = None
    kill_id: str = ""

    def __post_init__(self) -> None:
        _check_scope(self.scope)


class Kill(Base, frozen=True, kw_only=True):
    """Kill switch: halt (scope ``all``) or halt one scope, then cancel every working order in it. Also a request."""

    kill_id: Annotated[str, Meta(min_length=1, max_length=64)]
    scope: Scope = "all"
    reason: Annotated[str, Meta(min_length=1, max_length=500)]
    origin: str = ""

    def __post_init__(self) -> None:
        _check_scope(self.scope)


class Resume(Base, frozen=True, kw_only=True):
    """Explicit return to ACTIVE after a kill or a breaker. Also a request."""

    scope: Scope = "all"
    reason: Annotated[str, Meta(min_length=1, max_length=500)]
    origin: str = ""

    def __post_init__(self) -> None:
        _check_scope(self.scope)


class EmergencyCancel(Base, frozen=True, kw_only=True):
    """Cancel every working order in ``scope`` without halting (the risk governor's breaker action)."""

    command_id: Annotated[str, Meta(min_length=1, max_length=64)]
    scope: Scope = "all"
    reason: Annotated[str, Meta(min_length=1, max_length=500)]
    origin: str = ""

    def __post_init__(self) -> None:
        _check_scope(self.scope)


class RiskDecisionEvent(Base, frozen=True, kw_only=True):
    """``risk.decision.<strategy>``: every pre-trade decision, for audit and monitoring."""

    order_ref: str
    approved: bool
    code: str
    reason: str = ""
    check_ns: int = 0


class Alert(Base, frozen=True, kw_only=True):
    """``alert.<kind>``: something a human should look at."""

    kind: Name
    severity: AlertSeverity = "warning"
    message: str
    source: str = ""
    detail: dict[str, str] = {}
    #: when it was raised (UTC ns); 0 = unknown (the monitor fills it from the envelope)
    wall_ns: int = 0


class ReconciliationReport(Base, frozen=True, kw_only=True):
    """``recon.<actor>``: what a reconciliation against IB found and did."""

    actor: str
    open_orders: int = 0
    replayed_fills: int = 0
    unknown_orders: list[str] = []
    missing_orders: list[str] = []
    position_drift: dict[str, float] = {}
    #: for the instruments in ``position_drift``: strategy -> instrument -> what its books hold (the portfolio)
    strategy_positions: dict[str, dict[str, float]] = {}
    ok: bool = True
    detail: str = ""


class PortfolioSnapshot(Base, frozen=True, kw_only=True):
    """``portfolio.snapshot``: the portfolio actor's account summary and positions, per-strategy P&L."""

    account: str = ""
    currency: str = ""
    net_liquidation: float | None = None
    total_cash: float | None = None
    buying_power: float | None = None
    realized_pnl: float = 0.0
    unrealized_pnl: float = 0.0
    positions: list[Position] = []
    #: per strategy: today's realized P&L plus the unrealized P&L of its open positions (against average cost)
    strategy_pnl: dict[str, float] = {}
    #: per strategy: realized P&L of the current trading day (net of commissions)
    strategy_realized: dict[str, float] = {}
    #: True once the portfolio has applied a gateway snapshot (before that it only knows what it heard)
    reconciled: bool = False
    as_of_wall_ns: int = 0
    #: the trading day the books are in (``YYYY-MM-DD``, ``portfolio.trading_day``)
    trading_day: str = ""


class GapReport(Base, frozen=True, kw_only=True):
    """``bus.gap``: a subscriber saw a sequence gap from a sender on a topic (messages were dropped)."""

    subscriber: str
    publisher: str
    topic: str
    expected: int
    received: int
    missed: int


# ---------------------------------------------------------------------------------------------------------------
# Requests (service calls). A service answers the ones it owns and rejects the rest with ``unknown_command``.
# ---------------------------------------------------------------------------------------------------------------


class Ping(Base, frozen=True, kw_only=True):
    """Liveness/readiness probe every service answers with :class:`Pong`."""


class GetStatus(Base, frozen=True, kw_only=True):
    """Ask a service for its status (each answers with its own status reply)."""


# -- order manager (strategies call these) ------------------------------------------------------------------------


class PlaceOrder(Base, frozen=True, kw_only=True):
    order: OrderSpec


class ModifyOrder(Base, frozen=True, kw_only=True):
    strategy_id: StrategyId
    client_order_id: ClientOrderId
    quantity: Quantity | None = None
    limit_price: Price | None = None
    stop_price: Price | None = None

    def __post_init__(self) -> None:
        _check_positive("quantity", self.quantity, MAX_QUANTITY)
        _check_positive("limit_price", self.limit_price, MAX_PRICE)
        _check_positive("stop_price", self.stop_price, MAX_PRICE)
        if self.quantity is None and self.limit_price is None and self.stop_price is None:
            raise ValueError("modify needs at least one of quantity, limit_price, stop_price")


class CancelOrder(Base, frozen=True, kw_only=True):
    strategy_id: StrategyId
    client_order_id: ClientOrderId
    reason: str = ""


class CancelAllOrders(Base, frozen=True, kw_only=True):
    """Order manager: cancel every working order of ``strategy_id`` (optionally one symbol)."""

    strategy_id: StrategyId
    symbol: Symbol | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        _check_symbol("symbol", self.symbol)


class GetOrder(Base, frozen=True, kw_only=True):
    strategy_id: StrategyId
    client_order_id: ClientOrderId


class ListOrders(Base, frozen=True, kw_only=True):
    strategy_id: StrategyId | None = None
    symbol: Symbol | None = None
    filter: Literal["open", "today", "all"] = "open"

    def __post_init__(self) -> None:
        _check_symbol("symbol", self.symbol)


class WaitOrder(Base, frozen=True, kw_only=True):
    """Order manager: answer when the order is live (or done), or when ``timeout_s`` expires, with its history."""

    strategy_id: StrategyId
    client_order_id: ClientOrderId
    until: Literal["live", "done"] = "live"
    timeout_s: Annotated[float, Meta(gt=0, le=300)] = 10.0


# -- risk governor ----------------------------------------------------------------------------------------------


class CheckOrder(Base, frozen=True, kw_only=True):
    """Risk governor: approve or reject one order (new, or ``is_modify`` for a modification)."""

    order: OrderSpec
    is_modify: bool = False


class SetTradingState(Base, frozen=True, kw_only=True):
    scope: Scope = "all"
    state: TradingState
    reason: Annotated[str, Meta(min_length=1, max_length=500)]
    origin: str = ""

    def __post_init__(self) -> None:
        _check_scope(self.scope)


class EnableStrategy(Base, frozen=True, kw_only=True):
    """Re-enable a strategy disabled by the repeated-execution throttle or a breaker."""

    strategy_id: StrategyId
    reason: Annotated[str, Meta(min_length=1, max_length=500)]
    origin: str = ""


class GetRiskState(Base, frozen=True, kw_only=True):
    pass


class GetTradingState(Base, frozen=True, kw_only=True):
    """Ask the risk governor (the trading states' one authority) for every scope's state: what a strategy asks
    when it connects, so that it knows about a halt before its first order. Any role may ask."""


# -- gateway ----------------------------------------------------------------------------------------------------


class SubmitOrder(Base, frozen=True, kw_only=True):
    """Gateway: place one order at IB. Refused unless ``approval`` is the governor's signature over ``order``."""

    order: OrderSpec
    approval: Approval


class AmendOrder(Base, frozen=True, kw_only=True):
    """Gateway: modify a working order (same IB orderId) to ``order``; needs an approval over the new spec."""

    order: OrderSpec
    approval: Approval


class CancelIbOrder(Base, frozen=True, kw_only=True):
    """Gateway: cancel one order by its orderRef (cancels always pass, even when HALTED)."""

    order_ref: str
    reason: str = ""


class CancelScope(Base, frozen=True, kw_only=True):
    """Gateway: cancel every working order in ``scope`` (no halt)."""

    scope: Scope = "all"
    reason: str = ""

    def __post_init__(self) -> None:
        _check_scope(self.scope)


class GetSnapshot(Base, frozen=True, kw_only=True):
    """Gateway: open orders, executions (since ``exec_since`` if given, IB time ``YYYYMMDD HH:MM:SS``), positions,
    account values."""

    exec_since: str = ""


class SubscribeMarketData(Base, frozen=True, kw_only=True):
    instrument: Instrument
    subscriber: Name


class UnsubscribeMarketData(Base, frozen=True, kw_only=True):
    symbol: Symbol
    subscriber: Name

    def __post_init__(self) -> None:
        _check_symbol("symbol", self.symbol)


# -- portfolio / monitor ----------------------------------------------------------------------------------------


class GetAccount(Base, frozen=True, kw_only=True):
    pass


class GetPositions(Base, frozen=True, kw_only=True):
    strategy_id: StrategyId | None = None


class GetSystemStatus(Base, frozen=True, kw_only=True):
    pass


# ---------------------------------------------------------------------------------------------------------------
# Replies
# ---------------------------------------------------------------------------------------------------------------


class Pong(Base, frozen=True, kw_only=True):
    actor: str
    state: str = "RUNNING"


class Ack(Base, frozen=True, kw_only=True):
    detail: str = ""


class Rejected(Base, frozen=True, kw_only=True):
    """The typed error/rejection reply. ``code`` is machine-readable (``bad_request``, ``unknown_command``,
    ``halted``, ``disconnected``, ``not_ready``, ``not_found``, ``unauthorized``, ``internal``, ``risk.<check>``...);
    ``reason`` is for humans."""

    code: str
    reason: str
    request_type: str = ""


class OrderReply(Base, frozen=True, kw_only=True):
    order: OrderView
    duplicate: bool = False


class OrderListReply(Base, frozen=True, kw_only=True):
    orders: list[OrderView]


class RiskDecision(Base, frozen=True, kw_only=True):
    approved: bool
    code: str
    reason: str = ""
    approval: Approval | None = None
    trading_state: TradingState = "ACTIVE"


class RiskStateReply(Base, frozen=True, kw_only=True):
    global_state: TradingState
    epoch: int
    strategy_states: dict[str, TradingState] = {}
    disabled_strategies: list[str] = []
    limits: dict[str, str] = {}
    breakers: dict[str, str] = {}
    #: every scope that is not ACTIVE (``all``, ``strategy:<id>``, ``symbol:<symbol>``) with its state
    scope_states: dict[str, TradingState] = {}
    #: False until the governor has its first gateway snapshot (it rejects with ``risk.not_ready`` until then)
    ready: bool = False
    #: the account exposure the checks use, per symbol: position, and quantity still working on each side
    #: (approved orders count from their approval on)
    positions: dict[str, float] = {}
    working_buy: dict[str, float] = {}
    working_sell: dict[str, float] = {}


class TradingStateReply(Base, frozen=True, kw_only=True):
    """Reply to :class:`GetTradingState`. ``epoch`` is the governor's epoch when it answered (every change up to it
    is reflected here); ``scopes`` holds every scope that is not ACTIVE, each as the change that set it (its state,
    epoch, reason, cause and origin); a scope not listed is ACTIVE. ``global_state`` is the ``all`` scope's."""

    epoch: int
    global_state: TradingState
    scopes: list[TradingStateEvent] = []


class SubmitAck(Base, frozen=True, kw_only=True):
    order_ref: str
    ib_order_id: int
    perm_id: int = 0
    status: str = "PendingSubmit"


class CancelReport(Base, frozen=True, kw_only=True):
    """Reply to Kill / EmergencyCancel / CancelScope: what was cancelled and whether anything is still working."""

    command_id: str
    scope: Scope
    trading_state: TradingState
    epoch: int
    cancelled: int
    remaining: int
    remaining_order_refs: list[str] = []
    elapsed_ms: float = 0.0
    confirmed: bool = False
    detail: str = ""

    def __post_init__(self) -> None:
        _check_scope(self.scope)


class GatewayStatus(Base, frozen=True, kw_only=True):
    mode: str
    connection: ConnectionStateName
    trading_state: TradingState
    epoch: int
    account: str = ""
    server_version: int = 0
    client_id: int = 0
    open_orders: int = 0
    last_ib_code: int | None = None
    reconnects: int = 0
    pacing_queue: int = 0
    market_data: dict[str, int] = {}
    #: every latched scope (``all``, ``strategy:<id>``, ``symbol:<sym>``); ``trading_state`` is the global one
    halted_scopes: list[str] = []


class GatewaySnapshot(Base, frozen=True, kw_only=True):
    open_orders: list[IbOrder]
    executions: list[FillEvent]
    commissions: list[CommissionEvent] = []
    positions: list[Position]
    account_values: list[AccountValue]
    account: str = ""
    connection: ConnectionStateName = "READY"
    as_of_wall_ns: int = 0


class MarketDataAck(Base, frozen=True, kw_only=True):
    symbol: str
    con_id: int = 0
    subscribers: int = 0


class AccountReply(Base, frozen=True, kw_only=True):
    snapshot: PortfolioSnapshot


class PositionsReply(Base, frozen=True, kw_only=True):
    positions: list[Position]


class SystemStatusReply(Base, frozen=True, kw_only=True):
    actors: list[ActorHealth]
    connection: str = ""
    trading_state: str = ""
    epoch: int = 0
    alerts: list[Alert] = []
    gaps: int = 0
    rejects: int = 0
    #: latest executions seen on the bus, newest first (dashboards)
    recent_fills: list[FillEvent] = []
    #: trading state per ``<origin>:<scope>`` (gateway kill latch, risk policy, per-strategy scopes)
    trading_states: dict[str, str] = {}
    #: counters the monitor keeps (orders, fills, rejects by source, gaps, missed messages, deaths, ...)
    counters: dict[str, float] = {}


class ServiceStatus(Base, frozen=True, kw_only=True):
    """Generic status reply for actors without a richer one."""

    actor: str
    state: str
    detail: dict[str, str] = {}


# ---------------------------------------------------------------------------------------------------------------
# Channel unions and the envelope
# ---------------------------------------------------------------------------------------------------------------

Event = (
    Heartbeat
    | OrderStatusEvent
    | OrderNoticeEvent
    | FillEvent
    | CommissionEvent
    | OrderUpdate
    | TickEvent
    | PositionEvent
    | AccountValuesEvent
    | ConnectionStateEvent
    | TradingStateEvent
    | Kill
    | Resume
    | EmergencyCancel
    | RiskDecisionEvent
    | Alert
    | ReconciliationReport
    | PortfolioSnapshot
    | GapReport
)

Request = (
    Ping
    | GetStatus
    | PlaceOrder
    | ModifyOrder
    | CancelOrder
    | CancelAllOrders
    | GetOrder
    | ListOrders
    | WaitOrder
    | CheckOrder
    | SetTradingState
    | EnableStrategy
    | GetRiskState
    | GetTradingState
    | SubmitOrder
    | AmendOrder
    | CancelIbOrder
    | CancelScope
    | Kill
    | Resume
    | EmergencyCancel
    | GetSnapshot
    | SubscribeMarketData
    | UnsubscribeMarketData
    | GetAccount
    | GetPositions
    | GetSystemStatus
)

Reply = (
    Pong
    | Ack
    | Rejected
    | OrderReply
    | OrderListReply
    | RiskDecision
    | RiskStateReply
    | TradingStateReply
    | SubmitAck
    | CancelReport
    | GatewayStatus
    | GatewaySnapshot
    | MarketDataAck
    | AccountReply
    | PositionsReply
    | SystemStatusReply
    | ServiceStatus
)

B = TypeVar("B")


class Envelope(msgspec.Struct, Generic[B], frozen=True, kw_only=True):
    """What travels on every socket. ``seq`` is per sender and per topic on the event bus (so a subscriber to a
    topic prefix can detect gaps exactly) and per sender on request sockets. ``incarnation`` changes when the sender
    restarts, so a reset sequence is a restart, not a gap. ``mono_ns`` is CLOCK_MONOTONIC (comparable between
    processes on one host: used for latency), ``wall_ns`` is UTC wall time. ``deadline_wall_ns`` (requests only,
    0 = none) is when the caller stops waiting: a service does not start an order-creating request after it (a
    strategy that timed out must not find its order placed later behind its back); see ``bus/reqrep.py``."""

    v: int = SCHEMA_VERSION
    sender: str
    incarnation: int
    seq: int
    mono_ns: int
    wall_ns: int
    request_id: str = ""
    deadline_wall_ns: int = 0
    body: B


def tag_of(msg_type: type[msgspec.Struct]) -> str:
    """The wire tag of a message class (``PlaceOrder`` -> ``place_order``); "" for an untagged (Plain) struct."""
    tag = msg_type.__struct_config__.tag
    return tag if isinstance(tag, str) else ""
