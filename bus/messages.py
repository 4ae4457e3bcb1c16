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

import hashlib
import math
import re
from collections.abc import Mapping
from typing import Annotated, Generic, Literal, TypeVar

import msgspec
from msgspec import Meta

from bus.registry import EXTERNAL_STRATEGY

SCHEMA_VERSION = 1

# ---------------------------------------------------------------------------------------------------------------
# Size bounds, in one place. Every string, list and dict on the wire has a maximum length, chosen from the largest
# legitimate value; every socket has a maximum message size (ZMQ_MAXMSGSIZE, ``bus/sockets.py``) that the largest
# valid message of its channel fits (``tests/security/test_sec_schema.py`` builds those and checks). A frame over
# its socket's limit is refused by libzmq before it is read into memory (the connection is dropped); a field over
# its bound is a ``Rejected(bad_request)`` naming the field. Producers that could exceed a list bound page
# (ListOrders) or clip with a flag (GatewaySnapshot.truncated) instead of sending a message nobody can read.
# ---------------------------------------------------------------------------------------------------------------

#: Ids: uuid4 hex request, kill and command ids (32), client order ids (<= 64), approval ids (24 hex).
MAX_ID_LENGTH = 64
#: Names: actors (<= 9), ``strategy.<id>`` (41), alert kinds, subscribers. Strategy ids are shorter (32).
MAX_NAME_LENGTH = 64
MAX_STRATEGY_ID_LENGTH = 32
#: The envelope's ``sender``: a name, or the CLI's ``cli-<host[:24]>-<6 hex>`` (35); room for a custom client name.
MAX_SENDER_LENGTH = 128
#: One word a machine reads: statuses (``PendingSubmit``), reply and risk codes (``risk.max_notional``),
#: currencies, exchanges, accounts, modes, IB timestamps (``20240102 10:11:12 US/Eastern``), change kinds.
MAX_WORD_LENGTH = 64
#: orderRefs (ours: ``<strategy 32>/<client order id 64>`` = 97; an order placed outside Khazad carries what its
#: owner wrote), IB execution ids (``0000e0d5.6543c3a1.01.01``), topics, account-value keys.
MAX_REF_LENGTH = 256
#: Text for humans written by programs: reasons, messages, details (IB's longest error texts are a few hundred
#: characters; an exception's text).
MAX_TEXT_LENGTH = 2000
#: Text an operator or a strategy types (kill, resume, cancel reasons): printable, see :data:`Reason`.
MAX_REASON_LENGTH = 500
#: Small maps of facts (heartbeat and status ``detail``, alert detail): entries, key and value lengths. Producers
#: fit what they send with :func:`bounded_detail` (a status reply holds one per actor: they must stay small).
MAX_DETAIL_ENTRIES = 64
MAX_DETAIL_KEY_LENGTH = 128
MAX_DETAIL_VALUE_LENGTH = 512
#: A heartbeat's ``detail`` carries state others act on (the gateway's halt latch: every latched scope, up to 40
#: characters each), so its values may be long enough for 1,500 scopes and are never clipped below that; fewer
#: entries keep a heartbeat small (2 MiB at most).
MAX_HEARTBEAT_DETAIL_ENTRIES = 32
MAX_HEARTBEAT_VALUE_LENGTH = 64 * 1024
#: Maps and lists keyed by scope, symbol, strategy, account or orderRef (risk state, P&L by strategy, position
#: drift, halted scopes, refs in a report): entries.
MAX_KEYED_ENTRIES = 4096
#: A map of maps (strategy -> instrument in a drift report): entries at each level.
MAX_NESTED_ENTRIES = 100
#: Orders in one OrderListReply: ListOrders pages beyond it (``offset``, ``more``).
MAX_ORDERS_PER_REPLY = 1000
#: Steps of one order's history (the first ``HISTORY_HEAD`` and the latest; ``actors/orders/lifecycle.py`` clips).
MAX_HISTORY = 256
#: One GatewaySnapshot: IB's open orders, the executions asked for (and their commissions), positions, account
#: values. IB's account limits on open orders are far below; a day's executions beyond it are clipped (oldest
#: first, ``truncated``). Positions and account values: a large multi-currency account has a few hundred.
MAX_SNAPSHOT_ORDERS = 10_000
MAX_SNAPSHOT_EXECUTIONS = 10_000
MAX_POSITIONS = 2_000
MAX_ACCOUNT_VALUES = 2_000
#: IB's contract details in one GatewaySnapshot: one per distinct contract among positions, open orders and
#: executions (beyond it the snapshot is clipped and a reader qualifies the rest with QualifyInstrument).
MAX_SNAPSHOT_CONTRACTS = 1_000
#: A status reply's actors (every expected actor and every peer heard from; the monitor keeps the latest) and
#: its alerts and fills (the monitor sends 20 of each).
MAX_ACTORS = 512
MAX_RECENT = 100

#: Socket limits (ZMQ_MAXMSGSIZE) by what a socket receives, each above the largest valid message of its channel
#: (measured by tests/security/test_sec_schema.py, every field at its bound): requests 1.3 KB (an order with its
#: approval), so a service never reads more than 16 KiB per frame; events 4.7 MB (account values); replies
#: 49 MB (a gateway snapshot with 1,000 contracts' details; a system status reply 28 MB), below the 50 MB frame
#: tests/security sends at every socket type. Realistic messages are far smaller (short strings).
MAX_REQUEST_BYTES = 16 * 1024
MAX_EVENT_BYTES = 8 * 1024 * 1024
MAX_REPLY_BYTES = 48 * 1024 * 1024
#: What a subscription (XPUB's input) or anything else may be: a topic with its flag.
MAX_CONTROL_BYTES = 4 * 1024

# ---------------------------------------------------------------------------------------------------------------
# Constrained scalar types (validated on decode)
# ---------------------------------------------------------------------------------------------------------------

#: Largest quantity we accept in one order; IB's own limits are far below, this only bounds garbage.
MAX_QUANTITY = 1e9
#: Largest price we accept; catches overflow-style garbage, not fat fingers (that is the risk governor's job).
MAX_PRICE = 1e9

Name = Annotated[str, Meta(min_length=1, max_length=MAX_NAME_LENGTH, pattern=r"^[A-Za-z0-9_.\-]+$")]
StrategyId = Annotated[str, Meta(min_length=1, max_length=MAX_STRATEGY_ID_LENGTH, pattern=r"^[A-Za-z0-9_\-]+$")]
ClientOrderId = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Id = Annotated[str, Meta(max_length=MAX_ID_LENGTH)]
#: An id a command carries (kill, emergency cancel, approval): it ends up in reasons, logs and audit rows, so it is
#: a plain token (uuid hex, ``risk-<hex>``, ``k-1``), never free text.
ID_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
RequiredId = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
Word = Annotated[str, Meta(max_length=MAX_WORD_LENGTH)]
Ref = Annotated[str, Meta(max_length=MAX_REF_LENGTH)]
Text = Annotated[str, Meta(max_length=MAX_TEXT_LENGTH)]
#: Characters that must never reach a terminal or a log from the wire: C0 and C1 controls (ANSI escapes, newlines
#: that forge log lines, bells), DEL, Unicode line/paragraph separators and bidirectional overrides.
CONTROL_CHARS = "\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
#: Text a person types (kill and resume reasons...): printable, and not blank.
REASON_PATTERN = rf"^[^{CONTROL_CHARS}]*[^\s{CONTROL_CHARS}][^{CONTROL_CHARS}]*\Z"
#: The same, where empty is allowed (an optional cancel reason).
OPTIONAL_REASON_PATTERN = rf"^[^{CONTROL_CHARS}]*\Z"
Reason = Annotated[str, Meta(min_length=1, max_length=MAX_REASON_LENGTH, pattern=REASON_PATTERN)]
OptionalReason = Annotated[str, Meta(max_length=MAX_REASON_LENGTH, pattern=OPTIONAL_REASON_PATTERN)]
#: A small map of facts (``detail``).
Detail = Annotated[
    dict[
        Annotated[str, Meta(max_length=MAX_DETAIL_KEY_LENGTH)], Annotated[str, Meta(max_length=MAX_DETAIL_VALUE_LENGTH)]
    ],
    Meta(max_length=MAX_DETAIL_ENTRIES),
]
#: A heartbeat's ``detail`` (longer values: see MAX_HEARTBEAT_VALUE_LENGTH).
HeartbeatDetail = Annotated[
    dict[
        Annotated[str, Meta(max_length=MAX_DETAIL_KEY_LENGTH)],
        Annotated[str, Meta(max_length=MAX_HEARTBEAT_VALUE_LENGTH)],
    ],
    Meta(max_length=MAX_HEARTBEAT_DETAIL_ENTRIES),
]


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (the last one an ellipsis) when longer: what a producer sends must fit
    the bound the receiver checks, or nobody can read it."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def bounded_detail(
    detail: Mapping[str, object],
    *,
    entries: int = MAX_DETAIL_ENTRIES,
    value_length: int = MAX_DETAIL_VALUE_LENGTH,
) -> dict[str, str]:
    """A ``detail`` map that fits its bounds (by default a status or alert ``detail``; a heartbeat's passes its own):
    the first ``entries`` entries, keys and values clipped (a clipped value ends with an ellipsis)."""
    out: dict[str, str] = {}
    for key, value in detail.items():
        if len(out) >= entries:
            break
        out[clip(str(key), MAX_DETAIL_KEY_LENGTH)] = clip(str(value), value_length)
    return out


def heartbeat_detail(detail: Mapping[str, object]) -> dict[str, str]:
    """A heartbeat's ``detail`` within its bounds (see :data:`MAX_HEARTBEAT_VALUE_LENGTH`)."""
    return bounded_detail(detail, entries=MAX_HEARTBEAT_DETAIL_ENTRIES, value_length=MAX_HEARTBEAT_VALUE_LENGTH)


#: Letters, digits, ``_ . - /`` and inner spaces (IB's ``BRK B``); never blank, never leading/trailing whitespace
#: (`` AAPL`` must not pass a restricted-symbol check as a different string than ``AAPL``).
SYMBOL_PATTERN = r"^[A-Za-z0-9_.\-/]([A-Za-z0-9_.\-/ ]*[A-Za-z0-9_.\-/])?$"
SYMBOL_MAX_LENGTH = 32
Symbol = Annotated[str, Meta(min_length=1, max_length=SYMBOL_MAX_LENGTH, pattern=SYMBOL_PATTERN)]
Quantity = Annotated[float, Meta(gt=0, le=MAX_QUANTITY)]
Price = Annotated[float, Meta(gt=0, le=MAX_PRICE)]
NonNegative = Annotated[float, Meta(ge=0)]
#: ``all`` | ``strategy:<id>`` | ``symbol:<symbol>`` (every contract of that symbol: ``symbol:ES`` covers ESH7 and
#: ESM7) | ``conid:<IB conId>`` (one contract). The symbol part follows SYMBOL_PATTERN (inner spaces allowed:
#: ``symbol:BRK B``).
SCOPE_PATTERN = (
    r"^(all|strategy:[A-Za-z0-9_\-]{1,32}|symbol:[A-Za-z0-9_.\-/]([A-Za-z0-9_.\-/ ]{0,30}[A-Za-z0-9_.\-/])?"
    r"|conid:[1-9][0-9]{0,11})$"
)
Scope = Annotated[str, Meta(max_length=MAX_WORD_LENGTH, pattern=SCOPE_PATTERN)]

Side = Literal["BUY", "SELL"]
OrderType = Literal["MKT", "LMT", "STP", "STP LMT", "TRAIL", "TRAIL LIMIT", "MOC", "LOC", "MIT", "LIT"]
TimeInForce = Literal["DAY", "GTC", "IOC", "OPG", "GTD"]
SecType = Literal["STK", "FUT", "CASH", "IND", "OPT"]
AdaptivePriority = Literal["", "Urgent", "Normal", "Patient"]
#: IB's goodTillDate: ``YYYYMMDD HH:MM:SS`` and an optional time zone (``US/Eastern``, ``UTC``)
GOOD_TILL_PATTERN = r"^(\d{8} \d{2}:\d{2}:\d{2}( [A-Za-z_/+\-]{1,30})?)?$"
GroupMemberId = Annotated[str, Meta(max_length=MAX_ID_LENGTH, pattern=r"^[A-Za-z0-9_.:\-]*$")]
#: An option's right: call, put, or "" for anything that is not an option.
Right = Literal["", "C", "P"]
#: Short free text inside value objects (local symbols, exchanges, time zones, names).
ShortText = Annotated[str, Meta(max_length=64)]
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
#: IB acknowledging an order it accepted (after PendingSubmit; nothing filled, no error): the hot path of every
#: order. Actors log these steps at DEBUG (the journal keeps each one), so an order costs at most one INFO line per
#: actor until something happens to it (issue 18: loguru was 5-10 % of each actor's time at 100 orders/s).
IB_ACK_STATUSES = frozenset({"PreSubmitted", "Submitted"})
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
#: ``Heartbeat.state`` of a process that is going away cleanly (its last beat: a goodbye), and how the monitor and
#: ``khazad status`` show it from then on: it left, it did not die (no ``actor_dead`` alert).
LEFT_STATE = "LEFT"
#: How the monitor and ``khazad status`` show a live actor whose service is saturated (its heartbeat's ``detail``
#: carries ``saturated``): it answers, but some callers get ``Rejected(busy)``.
DEGRADED_STATE = "DEGRADED"
#: ``Rejected.code`` of a request refused for load (the caller's own in-flight limit or the service's): retry later.
BUSY_CODE = "busy"


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


_REASON_RE = re.compile(REASON_PATTERN)
_OPTIONAL_REASON_RE = re.compile(OPTIONAL_REASON_PATTERN)


def _check_reason(name: str, value: str, *, required: bool = True) -> None:
    """A typed reason: printable (no control characters: they would reach logs and terminals raw), at most
    MAX_REASON_LENGTH characters, and (when required) not blank."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > MAX_REASON_LENGTH:
        raise ValueError(f"{name} is longer than {MAX_REASON_LENGTH} characters")
    if required and not value.strip():
        raise ValueError(f"{name} must not be blank")
    if not (_REASON_RE if required else _OPTIONAL_REASON_RE).match(value):
        raise ValueError(f"{name} must not contain control characters (escape sequences, line breaks)")


def _check_scope(value: str) -> None:
    if not isinstance(value, str) or not _SCOPE_RE.match(value):
        raise ValueError(f"scope {value!r} is not 'all', 'strategy:<id>', 'symbol:<symbol>' or 'conid:<conId>'")


GLOBAL_SCOPE = "all"


def strategy_scope(strategy_id: str) -> str:
    return f"strategy:{strategy_id}"


def symbol_scope(symbol: str) -> str:
    """Every contract of ``symbol`` (IB's contract symbol: ``ES`` for ESH7 and ESM7, ``AAPL`` for its options)."""
    return f"symbol:{symbol}"


def conid_scope(con_id: int) -> str:
    """One contract, by IB's conId."""
    return f"conid:{con_id}"


def scope_matches(scope: str, strategy_id: str, symbol: str, con_id: int = 0) -> bool:
    """Does ``scope`` cover an order of ``strategy_id`` in the contract ``con_id`` of ``symbol``? ``symbol`` is
    compared case-insensitively; a ``conid:`` scope never covers an order whose contract is not known (0)."""
    if scope == GLOBAL_SCOPE:
        return True
    kind, _, value = scope.partition(":")
    if kind == "strategy":
        return value == strategy_id
    if kind == "symbol":
        return value.upper() == (symbol or "").upper()
    if kind == "conid":
        return bool(con_id) and value == str(con_id)
    return False


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
    """What to trade. ``con_id`` 0 means "let the gateway qualify it".

    A strategy may say less than IB (symbol and type, an expiry month, no multiplier): the gateway qualifies the
    instrument against IB's contract details and every actor then keys it by IB's conId. It may never say
    something different: a multiplier or currency that contradicts IB's is refused (``contract_mismatch``).
    The canonical instrument the gateway publishes (:class:`ContractInfo`) carries IB's conId, local symbol,
    trading class and multiplier. The helpers :meth:`stock`, :meth:`future`, :meth:`forex` and :meth:`option`
    build the usual kinds."""

    symbol: Symbol
    sec_type: SecType = "STK"
    exchange: Annotated[str, Meta(max_length=16)] = "SMART"
    currency: Annotated[str, Meta(min_length=3, max_length=3)] = "USD"
    last_trade_date: Annotated[str, Meta(max_length=16)] = ""
    multiplier: Annotated[str, Meta(max_length=16)] = ""
    con_id: Annotated[int, Meta(ge=0)] = 0
    #: options: strike price and right (``C``/``P``)
    strike: Annotated[float, Meta(ge=0, le=MAX_PRICE)] = 0.0
    right: Right = ""
    #: IB's local symbol (``ESH7``, ``EUR.CHF``, ``AAPL  250620C00190000``) and trading class, once qualified
    local_symbol: Annotated[str, Meta(max_length=32)] = ""
    trading_class: Annotated[str, Meta(max_length=32)] = ""

    def __post_init__(self) -> None:
        _check_symbol("symbol", self.symbol)
        _check_finite("strike", self.strike)

    # -- the usual kinds -----------------------------------------------------------------------------------------

    @classmethod
    def stock(cls, symbol: str, *, currency: str = "USD", exchange: str = "SMART") -> Instrument:
        """A stock routed through ``exchange`` (SMART by default): ``Instrument.stock("NESN", currency="CHF")``."""
        return cls(symbol=symbol, sec_type="STK", exchange=exchange, currency=currency)

    @classmethod
    def future(cls, symbol: str, expiry: str, *, exchange: str = "CME", currency: str = "USD") -> Instrument:
        """A future by its expiry (``YYYYMM`` contract month or ``YYYYMMDD``): ``Instrument.future("ES",
        "202703")``. The multiplier comes from IB; give one only to have it checked against IB's."""
        return cls(symbol=symbol, sec_type="FUT", exchange=exchange, currency=currency, last_trade_date=expiry)

    @classmethod
    def forex(cls, base: str, quote: str, *, exchange: str = "IDEALPRO") -> Instrument:
        """A currency pair, IB style: ``Instrument.forex("EUR", "CHF")`` is EUR.CHF (EUR priced in CHF)."""
        return cls(symbol=base, sec_type="CASH", exchange=exchange, currency=quote)

    @classmethod
    def option(
        cls,
        symbol: str,
        expiry: str,
        strike: float,
        right: str,
        *,
        exchange: str = "SMART",
        currency: str = "USD",
        multiplier: str = "",
    ) -> Instrument:
        """An option on ``symbol``: ``Instrument.option("AAPL", "20250620", 190, "C")`` (right ``C``/``CALL``,
        ``P``/``PUT``)."""
        r = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}.get(str(right).upper())
        if r is None:
            raise ValueError(f"option right must be C, CALL, P or PUT, got {right!r}")
        return cls(
            symbol=symbol,
            sec_type="OPT",
            exchange=exchange,
            currency=currency,
            last_trade_date=expiry,
            strike=float(strike),
            right=r,  # type: ignore[arg-type]
            multiplier=multiplier,
        )

    @property
    def display(self) -> str:
        """What a human calls the contract: ``AAPL``, ``ESH7``, ``EUR.CHF``, ``AAPL 20250620 190 C``."""
        if self.sec_type == "OPT":
            return f"{self.symbol} {self.last_trade_date} {self.strike:g} {self.right}"
        if self.local_symbol:
            return self.local_symbol
        if self.sec_type == "CASH":
            return f"{self.symbol}.{self.currency}"
        if self.last_trade_date:
            return f"{self.symbol} {self.last_trade_date}"
        return self.symbol


class PriceIncrement(Plain, frozen=True, kw_only=True):
    """One step of IB's market rule: from ``low_edge`` up, prices move by ``increment``."""

    low_edge: Annotated[float, Meta(ge=0)]
    increment: Annotated[float, Meta(gt=0)]


class ContractInfo(Plain, frozen=True, kw_only=True):
    """IB's contract details of one qualified instrument, as the gateway caches and publishes them
    (``instrument.<conId>``, ``InstrumentReply``, ``MarketDataAck.info``). ``instrument`` is the canonical
    instrument (IB's conId, symbol, currency, multiplier, local symbol, trading class); the rest is what risk needs
    to check prices, sizes and sessions. See :mod:`bus.contracts` and :mod:`bus.sessions` for their use."""

    instrument: Instrument
    #: IB's multiplier as a number (1 when IB gives none: stocks, FX)
    multiplier: Annotated[float, Meta(gt=0)] = 1.0
    min_tick: Annotated[float, Meta(ge=0)] = 0.0
    #: IB's market rule for the contract's price increments (empty: ``min_tick`` everywhere)
    price_increments: Annotated[list[PriceIncrement], Meta(max_length=64)] = []
    min_size: Annotated[float, Meta(ge=0)] = 0.0
    #: 0 when IB gives none (then whole units)
    size_increment: Annotated[float, Meta(ge=0)] = 0.0
    #: IB's ``tradingHours``/``liquidHours`` (``YYYYMMDD:HHMM-YYYYMMDD:HHMM;YYYYMMDD:CLOSED;...``) and time zone
    trading_hours: Annotated[str, Meta(max_length=2048)] = ""
    liquid_hours: Annotated[str, Meta(max_length=2048)] = ""
    time_zone: ShortText = ""
    long_name: Annotated[str, Meta(max_length=128)] = ""
    primary_exchange: ShortText = ""
    under_con_id: Annotated[int, Meta(ge=0)] = 0
    #: IB's ``orderTypes`` as far as Khazad's orders go: the order types, TIFs and attributes of
    #: :data:`IB_CHECKED_TOKENS` the contract accepts (``LMT,MKT,STP,STPLMT,TRAIL,...``; IB's full list is longer and
    #: a snapshot carries a thousand of these); empty when IB gave none: nothing is checked against it
    order_types: Annotated[str, Meta(max_length=96)] = ""

    @property
    def con_id(self) -> int:
        return self.instrument.con_id

    @property
    def display(self) -> str:
        return self.instrument.display


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
    #: an off-tick limit or stop price is rejected (``risk.tick_size``) unless this is set: then the gateway rounds
    #: it to the contract's price grid on the passive side (a buy down, a sell up; stops away from the market)
    #: and risk checks the rounded price
    round_to_tick: bool = False
    # -- protective order types and order groups (issue 16); see check_order_terms ----------------------------
    #: TRAIL / TRAIL LIMIT: the stop trails the market by an amount (IB's ``auxPrice``) or a percent
    trailing_amount: Price | None = None
    trailing_percent: Annotated[float, Meta(gt=0, le=100)] | None = None
    #: TRAIL / TRAIL LIMIT: the first stop price (IB's ``trailStopPrice``; none: IB starts from the market)
    trail_stop_price: Price | None = None
    #: TRAIL LIMIT: the limit is the stop minus (sells) / plus (buys) this offset (IB's ``lmtPriceOffset``)
    limit_offset: Annotated[float, Meta(ge=0, le=MAX_PRICE)] | None = None
    #: GTD: when the order expires, IB's ``goodTillDate`` (``YYYYMMDD HH:MM:SS [zone]``)
    good_till: Annotated[str, Meta(max_length=40, pattern=GOOD_TILL_PATTERN)] = ""
    #: IB's Adaptive algo on MKT/LMT orders with this priority ("" = no algo)
    adaptive_priority: AdaptivePriority = ""
    #: the order group this order belongs to (:class:`OrderGroup`), "" for a single order
    group_id: GroupMemberId = ""
    #: a bracket child: its parent's client_order_id (IB's ``parentId``); it works only once the parent fills
    parent_id: GroupMemberId = ""
    #: an OCA member: IB's ``ocaType`` (1 cancel the others on a fill, 2/3 reduce them); the group at IB is
    #: ``<strategy>/<group_id>``
    oca_type: Annotated[int, Meta(ge=0, le=3)] = 0

    def __post_init__(self) -> None:
        _check_positive("quantity", self.quantity, MAX_QUANTITY)
        _check_positive("limit_price", self.limit_price, MAX_PRICE)
        _check_positive("stop_price", self.stop_price, MAX_PRICE)
        _check_positive("trailing_amount", self.trailing_amount, MAX_PRICE)
        _check_positive("trail_stop_price", self.trail_stop_price, MAX_PRICE)
        problem = order_terms_problem(self)
        if problem:
            raise ValueError(problem)

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

    approval_id: RequiredId
    order_digest: Annotated[str, Meta(min_length=1, max_length=128)]
    issued_wall_ns: int
    expires_wall_ns: int
    signature: Annotated[str, Meta(min_length=1, max_length=256)]


class AccountValue(Plain, frozen=True, kw_only=True):
    key: Ref
    value: Text
    currency: Word = ""


class Position(Plain, frozen=True, kw_only=True):
    account: Word
    instrument: Instrument
    quantity: float
    avg_cost: float
    market_price: float | None = None
    market_value: float | None = None
    unrealized_pnl: float | None = None
    realized_pnl: float | None = None


class StatusChange(Plain, frozen=True, kw_only=True):
    """One step in an order's life, as journalled by the order manager."""

    status: Word
    wall_ns: int
    filled: float = 0.0
    remaining: float = 0.0
    reason: Text = ""
    error_code: int | None = None


class OrderView(Plain, frozen=True, kw_only=True):
    """The order manager's view of one order: its spec, where it is, and how it got there."""

    spec: OrderSpec
    status: Word
    filled: float = 0.0
    remaining: float = 0.0
    avg_fill_price: float = 0.0
    ib_order_id: int = 0
    perm_id: int = 0
    is_live: bool = False
    is_done: bool = False
    reason: Text = ""
    error_code: int | None = None
    history: Annotated[list[StatusChange], Meta(max_length=MAX_HISTORY)] = []
    created_wall_ns: int = 0
    updated_wall_ns: int = 0
    #: terms sent to IB in an amendment that IB has neither confirmed (its openOrder) nor rejected yet; ``spec``
    #: holds the terms IB last reported
    amendment: OrderSpec | None = None


class OrderTerms(Plain, frozen=True, kw_only=True):
    """An order's terms as IB's last openOrder reported them (what an amendment can change, and the side)."""

    side: Word = ""
    quantity: float
    order_type: Word = ""
    limit_price: float | None = None
    stop_price: float | None = None
    tif: Word = ""


class IbOrder(Plain, frozen=True, kw_only=True):
    """An order as the gateway sees it at IB (for snapshots and reconciliation)."""

    ib_order_id: int
    perm_id: int
    client_id: int
    order_ref: Ref
    instrument: Instrument
    side: Side
    quantity: float
    order_type: Word
    limit_price: float | None = None
    stop_price: float | None = None
    tif: Word = "DAY"
    status: Word
    filled: float = 0.0
    remaining: float = 0.0
    avg_fill_price: float = 0.0
    #: a bracket child: IB's ``parentId`` (the parent's orderId at the same client id); an OCA member:
    #: :func:`oca_key` of IB's ``ocaGroup`` (0: none). Groups are recovered from IB after a restart; numbers, not
    #: names, because a snapshot carries ten thousand of these
    parent_id: Annotated[int, Meta(ge=0)] = 0
    oca_key: Annotated[int, Meta(ge=0)] = 0


class ActorHealth(Plain, frozen=True, kw_only=True):
    name: Annotated[str, Meta(max_length=MAX_SENDER_LENGTH)]
    alive: bool
    state: Word = ""
    pid: int = 0
    last_beat_age_s: float | None = None
    detail: Detail = {}
    #: False for a peer the monitor does not expect (a strategy): its clean exit (LEFT) is no failure
    expected: bool = True


# ---------------------------------------------------------------------------------------------------------------
# Events (pub/sub)
# ---------------------------------------------------------------------------------------------------------------


class Heartbeat(Base, frozen=True, kw_only=True):
    """``hb.<actor>``: I am alive. ``state`` is the actor's lifecycle state (:data:`LEFT_STATE` in the last beat of a
    clean exit: a goodbye); ``detail`` small health facts (``saturated`` when its service refuses for load)."""

    actor: Name
    state: Word = "RUNNING"
    pid: int = 0
    interval_s: float = 0.5
    detail: HeartbeatDetail = {}


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

    order_ref: Ref
    strategy_id: Word = ""
    client_order_id: Id = ""
    ib_order_id: int = 0
    perm_id: int = 0
    status: Word
    filled: float = 0.0
    remaining: float = 0.0
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    is_live: bool = False
    is_done: bool = False
    error_code: int | None = None
    reason: Text = ""
    symbol: Word = ""
    #: IB's conId of the order's contract (0 when the gateway does not know it yet)
    con_id: Annotated[int, Meta(ge=0)] = 0
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

    order_ref: Ref
    strategy_id: Word = ""
    client_order_id: Id = ""
    ib_order_id: int = 0
    perm_id: int = 0
    symbol: Word = ""
    code: int
    message: Text = ""
    effect: NoticeEffect
    status: Word = ""
    terms: OrderTerms | None = None


class FillEvent(Base, frozen=True, kw_only=True):
    """``fill.<conId>``: one execution (``instrument`` is IB's contract, with its conId and multiplier). ``exec_key``
    is the execId without its correction suffix, so a corrected
    execution (``.01`` -> ``.02``) replaces the earlier one instead of adding to it."""

    exec_id: Ref
    exec_key: Ref
    order_ref: Ref
    strategy_id: Word = ""
    client_order_id: Id = ""
    ib_order_id: int = 0
    perm_id: int = 0
    instrument: Instrument
    side: Side
    quantity: float
    price: float
    cum_quantity: float = 0.0
    avg_price: float = 0.0
    exec_time: Word = ""
    account: Word = ""
    is_correction: bool = False
    replayed: bool = False


class CommissionEvent(Base, frozen=True, kw_only=True):
    """``commission.<conId>``: IB's commission report for one execution."""

    exec_id: Ref
    exec_key: Ref
    order_ref: Ref = ""
    symbol: Word = ""
    con_id: Annotated[int, Meta(ge=0)] = 0
    commission: float
    currency: Word = ""
    realized_pnl: float | None = None


class OrderUpdate(Base, frozen=True, kw_only=True):
    """``order.<strategy>``: the order manager's view after each change (what strategies consume)."""

    order: OrderView
    change: Word = "status"


#: Symbol as it travels in high-rate events the gateway alone publishes (the proxy's ACL keeps others off
#: ``md.*``): a length check only; the full pattern costs ~0.8 us per tick at every subscriber.
EventSymbol = Annotated[str, Meta(min_length=1, max_length=SYMBOL_MAX_LENGTH)]


class TickEvent(Base, frozen=True, kw_only=True):
    """``md.<conId>``: top of book and last trade of one contract. ``symbol`` is its readable name (``AAPL``,
    ``ESH7``, ``EUR.CHF``, ``AAPL 20250620 190 C``: :attr:`Instrument.display`), ``con_id`` its key."""

    symbol: EventSymbol
    con_id: int = 0
    bid: float | None = None
    ask: float | None = None
    last: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None
    last_size: float | None = None
    ib_time: Word = ""
    #: IB's delayed data (market data type 3: the account has no real-time subscription for the contract)
    delayed: bool = False


class PositionEvent(Base, frozen=True, kw_only=True):
    """``position.<conId>``: the gateway's position for one contract, as IB reports it."""

    position: Position


class InstrumentEvent(Base, frozen=True, kw_only=True):
    """``instrument.<conId>``: the gateway qualified an instrument (first time per conId and connection): IB's
    contract details, for every actor's cache."""

    info: ContractInfo


class AccountPnLEvent(Base, frozen=True, kw_only=True):
    """``pnl.account``: IB's own daily P&L of the account (reqPnL), in the base currency. ``daily_pnl`` restarts
    at IB's reset (not the host's midnight); ``unrealized_pnl`` covers positions since they were opened."""

    account: Word = ""
    daily_pnl: float | None = None
    unrealized_pnl: float | None = None
    realized_pnl: float | None = None


class PositionPnLEvent(Base, frozen=True, kw_only=True):
    """``pnl.<conId>``: IB's daily P&L of the account's position in one contract (reqPnLSingle), base currency."""

    account: Word = ""
    con_id: Annotated[int, Meta(gt=0)]
    position: float = 0.0
    daily_pnl: float | None = None
    unrealized_pnl: float | None = None
    realized_pnl: float | None = None
    value: float | None = None


class AccountValuesEvent(Base, frozen=True, kw_only=True):
    """``account.values``: account values (NetLiquidation, TotalCashValue, ...) as IB reports them."""

    account: Word
    values: Annotated[list[AccountValue], Meta(max_length=MAX_ACCOUNT_VALUES)]


class ConnectionStateEvent(Base, frozen=True, kw_only=True):
    """``state.connection``: the gateway's link to IB. Orders are accepted only in READY."""

    state: ConnectionStateName
    ib_code: int | None = None
    message: Text = ""
    mode: Word = ""
    server_version: int = 0
    accounts: Annotated[list[Word], Meta(max_length=MAX_KEYED_ENTRIES)] = []


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
    reason: Text = ""
    origin: Ref = ""
    cause: TradingCause | None = None
    kill_id: Id = ""

    def __post_init__(self) -> None:
        _check_scope(self.scope)


class Kill(Base, frozen=True, kw_only=True):
    """Kill switch: halt (scope ``all``) or halt one scope, then cancel every working order in it. Also a request."""

    kill_id: RequiredId
    scope: Scope = "all"
    reason: Reason
    origin: Ref = ""
    #: keep the stop orders (STP, STP LMT, TRAIL, TRAIL LIMIT) that protect an open position at IB: a stop on the
    #: side that closes it (``khazad kill --keep-protective``); everything else is cancelled as usual
    keep_protective: bool = False

    def __post_init__(self) -> None:
        _check_reason("reason", self.reason)
        _check_scope(self.scope)


class Resume(Base, frozen=True, kw_only=True):
    """Explicit return to ACTIVE after a kill or a breaker. Also a request."""

    scope: Scope = "all"
    reason: Reason
    origin: Ref = ""

    def __post_init__(self) -> None:
        _check_reason("reason", self.reason)
        _check_scope(self.scope)


class EmergencyCancel(Base, frozen=True, kw_only=True):
    """Cancel every working order in ``scope`` without halting (the risk governor's breaker action)."""

    command_id: RequiredId
    scope: Scope = "all"
    reason: Reason
    origin: Ref = ""
    #: as :attr:`Kill.keep_protective` (a kill's own emergency cancel carries the kill's choice)
    keep_protective: bool = False

    def __post_init__(self) -> None:
        _check_reason("reason", self.reason)
        _check_scope(self.scope)


class RiskDecisionEvent(Base, frozen=True, kw_only=True):
    """``risk.decision.<strategy>``: every pre-trade decision, for audit and monitoring."""

    order_ref: Ref
    approved: bool
    code: Word
    reason: Text = ""
    check_ns: int = 0


class Alert(Base, frozen=True, kw_only=True):
    """``alert.<kind>``: something a human should look at."""

    kind: Name
    severity: AlertSeverity = "warning"
    message: Text
    source: Annotated[str, Meta(max_length=MAX_SENDER_LENGTH)] = ""
    detail: Detail = {}
    #: when it was raised (UTC ns); 0 = unknown (the monitor fills it from the envelope)
    wall_ns: int = 0


class ReconciliationReport(Base, frozen=True, kw_only=True):
    """``recon.<actor>``: what a reconciliation against IB found and did."""

    actor: Word
    open_orders: int = 0
    replayed_fills: int = 0
    unknown_orders: Annotated[list[Ref], Meta(max_length=MAX_KEYED_ENTRIES)] = []
    missing_orders: Annotated[list[Ref], Meta(max_length=MAX_KEYED_ENTRIES)] = []
    position_drift: Annotated[dict[Ref, float], Meta(max_length=MAX_KEYED_ENTRIES)] = {}
    #: for the instruments in ``position_drift``: strategy -> instrument -> what its books hold (the portfolio)
    strategy_positions: Annotated[
        dict[Word, Annotated[dict[Ref, float], Meta(max_length=MAX_NESTED_ENTRIES)]],
        Meta(max_length=MAX_NESTED_ENTRIES),
    ] = {}
    ok: bool = True
    detail: Text = ""


class PortfolioSnapshot(Base, frozen=True, kw_only=True):
    """``portfolio.snapshot``: the portfolio actor's account summary and positions, per-strategy P&L."""

    account: Word = ""
    currency: Word = ""
    net_liquidation: float | None = None
    total_cash: float | None = None
    buying_power: float | None = None
    realized_pnl: float = 0.0
    unrealized_pnl: float = 0.0
    positions: Annotated[list[Position], Meta(max_length=MAX_POSITIONS)] = []
    #: per strategy: today's realized P&L plus the unrealized P&L of its open positions (against average cost)
    strategy_pnl: Annotated[dict[Word, float], Meta(max_length=MAX_KEYED_ENTRIES)] = {}
    #: per strategy: realized P&L of the current trading day (net of commissions)
    strategy_realized: Annotated[dict[Word, float], Meta(max_length=MAX_KEYED_ENTRIES)] = {}
    #: True once the portfolio has applied a gateway snapshot (before that it only knows what it heard)
    reconciled: bool = False
    as_of_wall_ns: int = 0
    #: the trading day the books are in (``YYYY-MM-DD``, ``portfolio.trading_day``)
    trading_day: Word = ""


class GapReport(Base, frozen=True, kw_only=True):
    """``bus.gap``: a subscriber saw a sequence gap from a sender on a topic (messages were dropped)."""

    subscriber: Annotated[str, Meta(max_length=MAX_SENDER_LENGTH)]
    publisher: Annotated[str, Meta(max_length=MAX_SENDER_LENGTH)]
    topic: Ref
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
    reason: OptionalReason = ""

    def __post_init__(self) -> None:
        _check_reason("reason", self.reason, required=False)


class CancelAllOrders(Base, frozen=True, kw_only=True):
    """Order manager: cancel every working order of ``strategy_id`` (optionally one symbol)."""

    strategy_id: StrategyId
    symbol: Symbol | None = None
    reason: OptionalReason = ""

    def __post_init__(self) -> None:
        _check_reason("reason", self.reason, required=False)
        _check_symbol("symbol", self.symbol)


class GetOrder(Base, frozen=True, kw_only=True):
    strategy_id: StrategyId
    client_order_id: ClientOrderId


class ListOrders(Base, frozen=True, kw_only=True):
    """Order manager: the orders matching, oldest first, one page at a time (``offset``; the reply says ``more``)."""

    strategy_id: StrategyId | None = None
    symbol: Symbol | None = None
    filter: Literal["open", "today", "all"] = "open"
    offset: Annotated[int, Meta(ge=0)] = 0
    limit: Annotated[int, Meta(ge=1, le=MAX_ORDERS_PER_REPLY)] = MAX_ORDERS_PER_REPLY

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
    reason: Reason
    origin: Ref = ""

    def __post_init__(self) -> None:
        _check_reason("reason", self.reason)
        _check_scope(self.scope)


class EnableStrategy(Base, frozen=True, kw_only=True):
    """Re-enable a strategy disabled by the repeated-execution throttle or a breaker."""

    strategy_id: StrategyId
    reason: Reason
    origin: Ref = ""

    def __post_init__(self) -> None:
        _check_reason("reason", self.reason)


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

    order_ref: Ref
    reason: OptionalReason = ""

    def __post_init__(self) -> None:
        _check_reason("reason", self.reason, required=False)


class CancelScope(Base, frozen=True, kw_only=True):
    """Gateway: cancel every working order in ``scope`` (no halt)."""

    scope: Scope = "all"
    reason: OptionalReason = ""

    def __post_init__(self) -> None:
        _check_reason("reason", self.reason, required=False)
        _check_scope(self.scope)


class GetSnapshot(Base, frozen=True, kw_only=True):
    """Gateway: open orders, executions (since ``exec_since`` if given, IB time ``YYYYMMDD HH:MM:SS``), positions,
    account values."""

    exec_since: Word = ""


class SubscribeMarketData(Base, frozen=True, kw_only=True):
    """Gateway: stream ``md.<conId>`` for the instrument (qualified first; the ack carries IB's details)."""

    instrument: Instrument
    subscriber: Name


class UnsubscribeMarketData(Base, frozen=True, kw_only=True):
    """Gateway: ``subscriber`` leaves the stream of ``con_id`` (when given), else of every contract whose symbol or
    local symbol is ``symbol``."""

    symbol: Symbol
    subscriber: Name
    con_id: Annotated[int, Meta(ge=0)] = 0

    def __post_init__(self) -> None:
        _check_symbol("symbol", self.symbol)


class QualifyInstrument(Base, frozen=True, kw_only=True):
    """Gateway: qualify an instrument against IB's contract details. Answer: :class:`InstrumentReply`, or
    ``Rejected`` with ``unknown_symbol`` (IB has no such contract), ``ambiguous_contract`` (it says too little:
    several contracts match, listed in the reason), ``contract_mismatch`` (it contradicts IB: multiplier or
    currency), ``disconnected``."""

    instrument: Instrument


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
    actor: Annotated[str, Meta(max_length=MAX_SENDER_LENGTH)]
    state: Word = "RUNNING"


class Ack(Base, frozen=True, kw_only=True):
    detail: Text = ""


class Rejected(Base, frozen=True, kw_only=True):
    """The typed error/rejection reply. ``code`` is machine-readable (``bad_request``, ``unknown_command``,
    ``halted``, ``disconnected``, ``not_ready``, ``not_found``, ``unauthorized``, ``internal``, ``busy`` (refused for
    load: retry later), ``expired``, ``orders.id_conflict``, ``risk.<check>``...);
    ``reason`` is for humans."""

    code: Word
    reason: Text
    request_type: Word = ""


class OrderReply(Base, frozen=True, kw_only=True):
    order: OrderView
    duplicate: bool = False


class OrderListReply(Base, frozen=True, kw_only=True):
    orders: Annotated[list[OrderView], Meta(max_length=MAX_ORDERS_PER_REPLY)]
    #: True when more orders match than this reply holds (ListOrders: ask again with ``offset``)
    more: bool = False


class RiskDecision(Base, frozen=True, kw_only=True):
    approved: bool
    code: Word
    reason: Text = ""
    approval: Approval | None = None
    trading_state: TradingState = "ACTIVE"


class RiskStateReply(Base, frozen=True, kw_only=True):
    global_state: TradingState
    epoch: int
    strategy_states: Annotated[dict[Word, TradingState], Meta(max_length=MAX_KEYED_ENTRIES)] = {}
    disabled_strategies: Annotated[list[Word], Meta(max_length=MAX_KEYED_ENTRIES)] = []
    limits: Annotated[dict[Ref, Text], Meta(max_length=MAX_KEYED_ENTRIES)] = {}
    breakers: Annotated[dict[Ref, Text], Meta(max_length=MAX_KEYED_ENTRIES)] = {}
    #: every scope that is not ACTIVE (``all``, ``strategy:<id>``, ``symbol:<symbol>``) with its state
    scope_states: Annotated[dict[Word, TradingState], Meta(max_length=MAX_KEYED_ENTRIES)] = {}
    #: False until the governor has its first gateway snapshot (it rejects with ``risk.not_ready`` until then)
    ready: bool = False
    #: the account exposure the checks use, per contract (its readable name, e.g. ``ESH7``): position, and
    #: quantity still working on each side (approved orders count from their approval on)
    positions: Annotated[dict[Word, float], Meta(max_length=MAX_KEYED_ENTRIES)] = {}
    working_buy: Annotated[dict[Word, float], Meta(max_length=MAX_KEYED_ENTRIES)] = {}
    working_sell: Annotated[dict[Word, float], Meta(max_length=MAX_KEYED_ENTRIES)] = {}


class TradingStateReply(Base, frozen=True, kw_only=True):
    """Reply to :class:`GetTradingState`. ``epoch`` is the governor's epoch when it answered (every change up to it
    is reflected here); ``scopes`` holds every scope that is not ACTIVE, each as the change that set it (its state,
    epoch, reason, cause and origin); a scope not listed is ACTIVE. ``global_state`` is the ``all`` scope's."""

    epoch: int
    global_state: TradingState
    scopes: Annotated[list[TradingStateEvent], Meta(max_length=MAX_KEYED_ENTRIES)] = []


class SubmitAck(Base, frozen=True, kw_only=True):
    order_ref: Ref
    ib_order_id: int
    perm_id: int = 0
    status: Word = "PendingSubmit"


class CancelReport(Base, frozen=True, kw_only=True):
    """Reply to Kill / EmergencyCancel / CancelScope: what was cancelled and whether anything is still working."""

    command_id: Id
    scope: Scope
    trading_state: TradingState
    epoch: int
    cancelled: int
    remaining: int
    remaining_order_refs: Annotated[list[Ref], Meta(max_length=MAX_KEYED_ENTRIES)] = []
    elapsed_ms: float = 0.0
    confirmed: bool = False
    detail: Text = ""

    def __post_init__(self) -> None:
        _check_scope(self.scope)


class GatewayStatus(Base, frozen=True, kw_only=True):
    mode: Word
    connection: ConnectionStateName
    trading_state: TradingState
    epoch: int
    account: Word = ""
    server_version: int = 0
    client_id: int = 0
    open_orders: int = 0
    last_ib_code: int | None = None
    reconnects: int = 0
    pacing_queue: int = 0
    market_data: Annotated[dict[Word, int], Meta(max_length=MAX_KEYED_ENTRIES)] = {}
    #: every latched scope (``all``, ``strategy:<id>``, ``symbol:<sym>``); ``trading_state`` is the global one
    halted_scopes: Annotated[list[Word], Meta(max_length=MAX_KEYED_ENTRIES)] = []


class GatewaySnapshot(Base, frozen=True, kw_only=True):
    open_orders: Annotated[list[IbOrder], Meta(max_length=MAX_SNAPSHOT_ORDERS)]
    executions: Annotated[list[FillEvent], Meta(max_length=MAX_SNAPSHOT_EXECUTIONS)]
    commissions: Annotated[list[CommissionEvent], Meta(max_length=MAX_SNAPSHOT_EXECUTIONS)] = []
    positions: Annotated[list[Position], Meta(max_length=MAX_POSITIONS)]
    account_values: Annotated[list[AccountValue], Meta(max_length=MAX_ACCOUNT_VALUES)]
    account: Word = ""
    connection: ConnectionStateName = "READY"
    as_of_wall_ns: int = 0
    #: True when IB reported more executions than a snapshot holds (the oldest were left out)
    truncated: bool = False
    #: IB's daily P&L of the account and of each position (reqPnL / reqPnLSingle), when IB has reported them
    pnl: AccountPnLEvent | None = None
    position_pnl: Annotated[list[PositionPnLEvent], Meta(max_length=MAX_POSITIONS)] = []
    #: IB's contract details of every contract in the snapshot the gateway has qualified
    contracts: Annotated[list[ContractInfo], Meta(max_length=MAX_SNAPSHOT_CONTRACTS)] = []


class MarketDataAck(Base, frozen=True, kw_only=True):
    """``symbol`` is the contract's readable name, ``con_id`` its key (``md.<con_id>``)."""

    symbol: Word
    con_id: int = 0
    subscribers: int = 0
    #: IB's contract details (None when the subscription waits for the connection)
    info: ContractInfo | None = None


class InstrumentReply(Base, frozen=True, kw_only=True):
    """The answer to :class:`QualifyInstrument`."""

    info: ContractInfo


class AccountReply(Base, frozen=True, kw_only=True):
    snapshot: PortfolioSnapshot


class PositionsReply(Base, frozen=True, kw_only=True):
    positions: Annotated[list[Position], Meta(max_length=MAX_POSITIONS)]


class SystemStatusReply(Base, frozen=True, kw_only=True):
    actors: Annotated[list[ActorHealth], Meta(max_length=MAX_ACTORS)]
    connection: Word = ""
    trading_state: Word = ""
    epoch: int = 0
    alerts: Annotated[list[Alert], Meta(max_length=MAX_RECENT)] = []
    gaps: int = 0
    rejects: int = 0
    #: latest executions seen on the bus, newest first (dashboards)
    recent_fills: Annotated[list[FillEvent], Meta(max_length=MAX_RECENT)] = []
    #: trading state per ``<origin>:<scope>`` (gateway kill latch, risk policy, per-strategy scopes)
    trading_states: Annotated[dict[Ref, Word], Meta(max_length=MAX_KEYED_ENTRIES)] = {}
    #: counters the monitor keeps (orders, fills, rejects by source, gaps, missed messages, deaths, ...)
    counters: Annotated[dict[Ref, float], Meta(max_length=MAX_KEYED_ENTRIES)] = {}


class ServiceStatus(Base, frozen=True, kw_only=True):
    """Generic status reply for actors without a richer one."""

    actor: Annotated[str, Meta(max_length=MAX_SENDER_LENGTH)]
    state: Word
    detail: Detail = {}


# ---------------------------------------------------------------------------------------------------------------
# Data plane (issue 17): history, real-time bars, contract details and search, IB's what-if preview, daily P&L.
# Every request here is answered by the gateway (the one place that asks IB for data); see docs/sdk.md.
# ---------------------------------------------------------------------------------------------------------------

#: Bars in one HistoricalBarsReply (a year of 1-minute RTH bars is ~98,000).
MAX_BARS = 100_000
#: Contracts in one ContractDetailsReply / ContractSearchReply.
MAX_CONTRACTS = 1000
#: IB's whatToShow values for historical bars (docs/simulator.md lists what each contract type offers).
WhatToShow = Literal[
    "TRADES",
    "MIDPOINT",
    "BID",
    "ASK",
    "BID_ASK",
    "ADJUSTED_LAST",
    "HISTORICAL_VOLATILITY",
    "OPTION_IMPLIED_VOLATILITY",
]
#: IB's whatToShow values for real-time (5-second) bars.
RealTimeWhat = Literal["TRADES", "MIDPOINT", "BID", "ASK"]
#: The status of every refused-for-pacing answer (:class:`PacingRefused`).
PACING_CODE = "pacing"


class Bar(Plain, frozen=True, kw_only=True):
    """One bar as IB gives it. ``time`` is the bar's start: ISO 8601 in UTC (``2026-12-07T14:30:00+00:00``) for
    intraday bars, the date (``2026-12-07``) for daily and longer ones. ``wap`` and ``count`` only where IB gives
    them (TRADES); None otherwise. ``volume`` is -1 where IB has none (MIDPOINT, BID, ASK, FX)."""

    time: Word
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    wap: float | None = None
    count: int | None = None


class GetHistoricalBars(Base, frozen=True, kw_only=True):
    """Gateway: IB's historical bars (reqHistoricalData) of an instrument. ``end`` "" is now, else IB's
    ``YYYYMMDD HH:MM:SS`` (UTC with a ``-`` separator: ``YYYYMMDD-HH:MM:SS``); ``duration`` and ``bar_size`` are
    IB's strings (``"1 D"``, ``"5 mins"``). Answer: :class:`HistoricalBarsReply`, :class:`PacingRefused` (IB's
    pacing would be broken: ask again after ``retry_after_s``), or ``Rejected`` (IB's refusal, ``history``, with
    IB's code and text; the contract's refusals)."""

    instrument: Instrument
    end: Word = ""
    duration: Word = "1 D"
    bar_size: Word = "5 mins"
    what_to_show: WhatToShow = "TRADES"
    use_rth: bool = True


class SubscribeBars(Base, frozen=True, kw_only=True):
    """Gateway: real-time bars of ``bar_size`` (a multiple of 5 seconds: ``"5 secs"``, ``"1 min"``, ``"5 mins"``)
    on ``bars.<conId>.<what>.<seconds>``, aggregated by the gateway from IB's 5-second bars (one IB subscription per
    contract, whatToShow and useRTH, shared by every subscriber and bar size)."""

    instrument: Instrument
    bar_size: Word = "5 secs"
    what_to_show: RealTimeWhat = "TRADES"
    use_rth: bool = False
    subscriber: Name


class UnsubscribeBars(Base, frozen=True, kw_only=True):
    """Gateway: ``subscriber`` leaves a bar stream (the last one leaving cancels IB's subscription)."""

    con_id: Annotated[int, Meta(gt=0)]
    bar_size: Word = "5 secs"
    what_to_show: RealTimeWhat = "TRADES"
    use_rth: bool = False
    subscriber: Name


class GetContractDetails(Base, frozen=True, kw_only=True):
    """Gateway: IB's contract details of every contract the instrument matches (all expiries of ``ES`` FUT CME)."""

    instrument: Instrument


class SearchContracts(Base, frozen=True, kw_only=True):
    """Gateway: IB's symbol search (reqMatchingSymbols): contracts whose symbol or name starts with ``pattern``."""

    pattern: Annotated[str, Meta(min_length=1, max_length=64)]


class WhatIfOrder(Base, frozen=True, kw_only=True):
    """Gateway: IB's preview of an order (placeOrder with whatIf): commission and margin; nothing is placed."""

    order: OrderSpec


class GetDailyPnl(Base, frozen=True, kw_only=True):
    """Gateway: IB's daily P&L of the account and of each position (reqPnL / reqPnLSingle), as last reported."""


class BarEvent(Base, frozen=True, kw_only=True):
    """``bars.<conId>.<what>.<seconds>``: one completed real-time bar of one contract."""

    symbol: EventSymbol
    con_id: int
    bar_seconds: Annotated[int, Meta(gt=0)]
    what_to_show: Word
    bar: Bar


class HistoricalBarsReply(Base, frozen=True, kw_only=True):
    """The answer to :class:`GetHistoricalBars`; ``cached`` when the gateway served it without asking IB."""

    symbol: Word
    con_id: int
    bars: Annotated[list[Bar], Meta(max_length=MAX_BARS)]
    cached: bool = False


class PacingRefused(Base, frozen=True, kw_only=True):
    """A data request the gateway will not send now, because IB's pacing rules would be broken (or this caller
    already has too many waiting): ask again after ``retry_after_s``. ``code`` is always ``pacing``."""

    code: Word = PACING_CODE
    reason: Text
    retry_after_s: Annotated[float, Meta(ge=0)]
    request_type: Word = ""


class BarsAck(Base, frozen=True, kw_only=True):
    """The answer to :class:`SubscribeBars` / :class:`UnsubscribeBars`: the stream's topic and subscriber count."""

    symbol: Word
    con_id: int
    topic: Ref
    bar_seconds: int
    subscribers: int = 0


class ContractDetailsReply(Base, frozen=True, kw_only=True):
    contracts: Annotated[list[ContractInfo], Meta(max_length=MAX_CONTRACTS)]


class ContractSearchReply(Base, frozen=True, kw_only=True):
    """Instruments IB matched (conId, symbol, sec type, currency, primary exchange); types Khazad does not trade
    (bonds, warrants ...) are left out."""

    instruments: Annotated[list[Instrument], Meta(max_length=MAX_CONTRACTS)]


class WhatIfReply(Base, frozen=True, kw_only=True):
    """IB's preview of an order (its whatIf OrderState), in the account's base currency. None where IB gave no
    value. ``excess_liquidity_after`` is equity with loan after minus maintenance margin after."""

    commission: float | None = None
    min_commission: float | None = None
    max_commission: float | None = None
    commission_currency: Word = ""
    init_margin_before: float | None = None
    init_margin_change: float | None = None
    init_margin_after: float | None = None
    maint_margin_before: float | None = None
    maint_margin_change: float | None = None
    maint_margin_after: float | None = None
    equity_with_loan_before: float | None = None
    equity_with_loan_change: float | None = None
    equity_with_loan_after: float | None = None
    warning: Text = ""

    @property
    def excess_liquidity_after(self) -> float | None:
        if self.equity_with_loan_after is None or self.maint_margin_after is None:
            return None
        return self.equity_with_loan_after - self.maint_margin_after


class DailyPnlReply(Base, frozen=True, kw_only=True):
    account: AccountPnLEvent | None = None
    positions: Annotated[list[PositionPnLEvent], Meta(max_length=MAX_POSITIONS)] = []


DataEvent = BarEvent
DataRequest = (
    GetHistoricalBars
    | SubscribeBars
    | UnsubscribeBars
    | GetContractDetails
    | SearchContracts
    | WhatIfOrder
    | GetDailyPnl
)
#: the data plane's requests: the gateway answers them, every other service refuses them
DATA_REQUESTS: frozenset[type] = frozenset(
    {GetHistoricalBars, SubscribeBars, UnsubscribeBars, GetContractDetails, SearchContracts, WhatIfOrder, GetDailyPnl}
)
DataReply = (
    HistoricalBarsReply
    | PacingRefused
    | BarsAck
    | ContractDetailsReply
    | ContractSearchReply
    | WhatIfReply
    | DailyPnlReply
)


# ---------------------------------------------------------------------------------------------------------------
# Protective orders and order groups (issue 16): order type rules, OrderGroup, GroupView and the group requests.
# Kept in one block (other issues add theirs elsewhere in this module).
# ---------------------------------------------------------------------------------------------------------------

#: Order types that need a limit price, and the ones that need a stop/trigger price (IB's ``auxPrice``).
LIMIT_ORDER_TYPES = frozenset({"LMT", "STP LMT", "LOC", "LIT"})
TRIGGER_ORDER_TYPES = frozenset({"STP", "STP LMT", "MIT", "LIT"})
TRAILING_ORDER_TYPES = frozenset({"TRAIL", "TRAIL LIMIT"})
#: Orders that protect a position by closing it at a worse price (a kill with ``keep_protective`` keeps them).
STOP_ORDER_TYPES = frozenset({"STP", "STP LMT", "TRAIL", "TRAIL LIMIT"})
AUCTION_ORDER_TYPES = frozenset({"MOC", "LOC"})
#: IB's OPG (at the open) takes market and limit orders only; Adaptive works MKT and LMT orders only.
OPG_ORDER_TYPES = frozenset({"MKT", "LMT"})
ADAPTIVE_ORDER_TYPES = frozenset({"MKT", "LMT"})
#: How IB's contract details (``orderTypes``) name each order type; TIFs and attributes listed there too.
IB_ORDER_TYPE_TOKENS = {
    "MKT": "MKT",
    "LMT": "LMT",
    "STP": "STP",
    "STP LMT": "STPLMT",
    "TRAIL": "TRAIL",
    "TRAIL LIMIT": "TRAILLMT",
    "MOC": "MOC",
    "LOC": "LOC",
    "MIT": "MIT",
    "LIT": "LIT",
}
IB_LISTED_TIFS = frozenset({"OPG", "GTD"})
IB_ALGO_TOKEN = "ALGO"
IB_OCA_TOKEN = "OCA"
#: ``OrderGroup.kind``
GroupKind = Literal["bracket", "oca"]
#: The most orders one group may hold (a bracket is 2-3; an OCA group a handful of alternatives).
MAX_GROUP_MEMBERS = 8


def order_terms_problem(spec: OrderSpec) -> str:
    """Why ``spec``'s type, prices, TIF and algo do not go together ("" when they do): IB's rules for each type."""
    t = spec.order_type
    if t in LIMIT_ORDER_TYPES and spec.limit_price is None:
        return f"{t} order needs limit_price"
    if t not in LIMIT_ORDER_TYPES and spec.limit_price is not None:
        return f"{t} order must not carry limit_price"
    if t in TRIGGER_ORDER_TYPES and spec.stop_price is None:
        return f"{t} order needs stop_price (its trigger)"
    if t not in TRIGGER_ORDER_TYPES and spec.stop_price is not None:
        return f"{t} order must not carry stop_price"
    trailing = t in TRAILING_ORDER_TYPES
    if trailing and (spec.trailing_amount is None) == (spec.trailing_percent is None):
        return f"{t} order needs exactly one of trailing_amount and trailing_percent"
    if not trailing and (spec.trailing_amount, spec.trailing_percent, spec.trail_stop_price) != (None, None, None):
        return f"{t} order must not carry trailing_amount, trailing_percent or trail_stop_price"
    if (t == "TRAIL LIMIT") != (spec.limit_offset is not None):
        return "limit_offset goes with TRAIL LIMIT orders (and they need it)"
    if (spec.tif == "GTD") != bool(spec.good_till):
        return "good_till goes with tif GTD (and GTD needs it)"
    if spec.tif == "OPG" and t not in OPG_ORDER_TYPES:
        return f"tif OPG takes MKT or LMT orders, not {t}"
    if t in AUCTION_ORDER_TYPES and spec.tif != "DAY":
        return f"{t} orders are DAY orders (the closing auction), not {spec.tif}"
    if spec.adaptive_priority and t not in ADAPTIVE_ORDER_TYPES:
        return f"Adaptive works MKT and LMT orders, not {t}"
    if spec.parent_id and spec.parent_id == spec.client_order_id:
        return "an order cannot be its own parent"
    if (spec.parent_id or spec.oca_type) and not spec.group_id:
        return "parent_id and oca_type belong to members of an order group (group_id)"
    return ""


def aux_price(spec: OrderSpec) -> float | None:
    """What IB carries in the order's ``auxPrice`` (and reports back as its stop price): the trailing amount of a
    trailing order, else the stop/trigger price."""
    return spec.trailing_amount if spec.order_type in TRAILING_ORDER_TYPES else spec.stop_price


#: The entries of IB's ``orderTypes`` Khazad checks orders against (:attr:`ContractInfo.order_types` keeps these).
IB_CHECKED_TOKENS = frozenset(IB_ORDER_TYPE_TOKENS.values()) | IB_LISTED_TIFS | {IB_ALGO_TOKEN, IB_OCA_TOKEN}


def checked_order_types(ib_order_types: str) -> str:
    """IB's ``orderTypes`` list reduced to :data:`IB_CHECKED_TOKENS`, in IB's order."""
    return ",".join(t for t in (x.strip() for x in ib_order_types.split(",")) if t in IB_CHECKED_TOKENS)


def oca_key(oca_group: str) -> int:
    """A stable 63-bit number for IB's ``ocaGroup`` name (0 for none): members of one OCA group share it."""
    if not oca_group:
        return 0
    return int.from_bytes(hashlib.blake2b(oca_group.encode(), digest_size=8).digest(), "big") >> 1 or 1


def ib_order_tokens(spec: OrderSpec) -> list[str]:
    """The ``orderTypes`` entries of IB's contract details this order needs (its type, a listed TIF, the algo, OCA)."""
    tokens = [IB_ORDER_TYPE_TOKENS[spec.order_type]]
    if spec.tif in IB_LISTED_TIFS:
        tokens.append(spec.tif)
    if spec.adaptive_priority:
        tokens.append(IB_ALGO_TOKEN)
    if spec.oca_type:
        tokens.append(IB_OCA_TOKEN)
    return tokens


def oca_group_name(strategy_id: str, group_id: str) -> str:
    """IB's ``ocaGroup`` of an OCA order group: ``<strategy>/<group_id>`` (per client at IB; unique per strategy)."""
    return order_ref_for(strategy_id, group_id)


class OrderGroup(Plain, frozen=True, kw_only=True):
    """Orders approved, placed and cancelled as one unit. ``bracket``: ``orders[0]`` is the entry and every other
    member a child (its ``parent_id`` the entry's client_order_id, the other side, the entry's quantity and
    instrument): the children work once the entry fills and cancel each other (IB links them). ``oca``: every
    member carries ``oca_type`` (IB's ocaType: 1 a fill cancels the others, 2 and 3 reduce them). Every member's
    ``group_id`` is the group's; each member is also an ordinary order (orderRef ``<strategy>/<client_order_id>``)."""

    strategy_id: StrategyId
    group_id: ClientOrderId
    kind: GroupKind
    orders: Annotated[list[OrderSpec], Meta(min_length=2, max_length=MAX_GROUP_MEMBERS)]
    oca_type: Annotated[int, Meta(ge=1, le=3)] = 1

    def __post_init__(self) -> None:
        problem = group_problem(self)
        if problem:
            raise ValueError(problem)

    @property
    def key(self) -> str:
        """``<strategy>/<group_id>``: the group's identity (and IB's ocaGroup of an OCA group)."""
        return oca_group_name(self.strategy_id, self.group_id)

    @property
    def refs(self) -> list[str]:
        return [o.order_ref for o in self.orders]


def group_problem(group: OrderGroup) -> str:
    """Why the members do not make a group of its kind ("" when they do)."""
    if not 2 <= len(group.orders) <= MAX_GROUP_MEMBERS:
        return f"a group holds 2 to {MAX_GROUP_MEMBERS} orders, got {len(group.orders)}"
    ids = [o.client_order_id for o in group.orders]
    if len(set(ids)) != len(ids):
        return "client_order_ids repeat within the group"
    for o in group.orders:
        if o.strategy_id != group.strategy_id:
            return f"{o.order_ref}: every member belongs to strategy {group.strategy_id}"
        if o.group_id != group.group_id:
            return f"{o.order_ref}: group_id {o.group_id!r} is not the group's {group.group_id!r}"
    if group.kind == "oca":
        for o in group.orders:
            if o.parent_id or o.oca_type != group.oca_type:
                return f"{o.order_ref}: an OCA member has oca_type {group.oca_type} and no parent"
        return ""
    entry, children = group.orders[0], group.orders[1:]
    if len(group.orders) > 3:
        return "a bracket is an entry and one or two children (take-profit, stop-loss)"
    if entry.parent_id or entry.oca_type:
        return f"{entry.order_ref}: the bracket's entry has no parent and no oca_type"
    for c in children:
        if c.parent_id != entry.client_order_id or c.oca_type:
            return f"{c.order_ref}: a bracket child's parent_id is the entry's client_order_id (no oca_type)"
        if c.side == entry.side:
            return f"{c.order_ref}: a bracket child closes the entry (side {entry.side} -> the other side)"
        if c.quantity != entry.quantity or c.instrument != entry.instrument:
            return f"{c.order_ref}: a bracket child has the entry's quantity and instrument"
    return ""


GroupStatus = Literal["working", "done", "rejected", "cancelled", "partial"]


class GroupView(Plain, frozen=True, kw_only=True):
    """An order group as the order manager sees it: every member's order view, in the group's order, and a
    summary ``status``: ``rejected`` (refused as a whole: no member reached IB), ``working`` (a member may still
    trade), ``done`` (every member finished, one filled), ``cancelled`` (every member finished, none filled)."""

    strategy_id: StrategyId
    group_id: ClientOrderId
    kind: GroupKind
    oca_type: int = 0
    status: GroupStatus
    orders: Annotated[list[OrderView], Meta(max_length=MAX_GROUP_MEMBERS)]
    reason: Text = ""
    created_wall_ns: int = 0


class PlaceGroup(Base, frozen=True, kw_only=True):
    """Order manager: place an order group (journalled as one unit, approved by risk as one unit). Answer:
    :class:`GroupReply` (``duplicate`` for a group already placed with the same terms), ``Rejected``."""

    group: OrderGroup


class CancelGroup(Base, frozen=True, kw_only=True):
    """Order manager: cancel every working member of a group (IB cancels a bracket's children with its entry)."""

    strategy_id: StrategyId
    group_id: ClientOrderId
    reason: OptionalReason = ""

    def __post_init__(self) -> None:
        _check_reason("reason", self.reason, required=False)


class GetGroup(Base, frozen=True, kw_only=True):
    strategy_id: StrategyId
    group_id: ClientOrderId


class CheckGroup(Base, frozen=True, kw_only=True):
    """Risk governor: approve every member of a group or none, counting the group's worst case."""

    group: OrderGroup


class SubmitGroup(Base, frozen=True, kw_only=True):
    """Gateway: place a group at IB (parentId, ocaGroup; nothing transmits before the last member). One approval
    per member, in the group's order, each the governor's signature over that member."""

    group: OrderGroup
    approvals: Annotated[list[Approval], Meta(max_length=MAX_GROUP_MEMBERS)]


class GroupReply(Base, frozen=True, kw_only=True):
    group: GroupView
    duplicate: bool = False


class GroupDecision(Base, frozen=True, kw_only=True):
    """Reply to :class:`CheckGroup`: ``approved`` with one approval per member, or refused as a whole: ``code`` and
    ``reason`` of the first member that failed (``order_ref``)."""

    approved: bool
    code: Word
    reason: Text = ""
    order_ref: Ref = ""
    approvals: Annotated[list[Approval], Meta(max_length=MAX_GROUP_MEMBERS)] = []
    trading_state: TradingState = "ACTIVE"


class GroupSubmitAck(Base, frozen=True, kw_only=True):
    """Reply to :class:`SubmitGroup`: one acknowledgement per member, in the group's order."""

    acks: Annotated[list[SubmitAck], Meta(max_length=MAX_GROUP_MEMBERS)]


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
    | InstrumentEvent
    | AccountPnLEvent
    | PositionPnLEvent
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
    | DataEvent
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
    | QualifyInstrument
    | GetAccount
    | GetPositions
    | GetSystemStatus
    | DataRequest
    | PlaceGroup
    | CancelGroup
    | GetGroup
    | CheckGroup
    | SubmitGroup
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
    | InstrumentReply
    | AccountReply
    | PositionsReply
    | SystemStatusReply
    | ServiceStatus
    | DataReply
    | GroupReply
    | GroupDecision
    | GroupSubmitAck
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
    sender: Annotated[str, Meta(max_length=MAX_SENDER_LENGTH)]
    incarnation: int
    seq: int
    mono_ns: int
    wall_ns: int
    request_id: Id = ""
    deadline_wall_ns: int = 0
    body: B


def tag_of(msg_type: type[msgspec.Struct]) -> str:
    """The wire tag of a message class (``PlaceOrder`` -> ``place_order``); "" for an untagged (Plain) struct."""
    tag = msg_type.__struct_config__.tag
    return tag if isinstance(tag, str) else ""
