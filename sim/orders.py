"""Orders, executions and the matching rules.

State is global and keyed by permId (like IB's): a client that reconnects
with the same clientId finds its orders and fills again, and order ids keep
increasing per clientId across sessions.

Matching happens against the simulated top of book on every market step:

* MKT takes the touch (ask for buys, bid for sells);
* LMT fills when the touch is at or through the limit, at the touch;
* STP triggers when the touch reaches the stop, then behaves as MKT;
* STP LMT triggers likewise, then behaves as LMT at ``lmtPrice``;
* a fill takes at most the size displayed at the touch, so orders larger
  than the quote fill partially over several steps (the displayed size is
  shared by all orders on the same side in permId order);
* IOC orders get one matching opportunity, FOK one all-or-nothing attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .instruments import Instrument
from .market import Quote
from .requests import ContractSpec

SUPPORTED_ORDER_TYPES = ("MKT", "LMT", "STP", "STP LMT")
SUPPORTED_TIFS = ("DAY", "GTC", "IOC", "FOK")
#: IB statuses in which an order can still fill.
WORKING_STATUSES = ("PreSubmitted", "Submitted", "PendingCancel")
DONE_STATUSES = ("Filled", "Cancelled", "ApiCancelled", "Inactive")
#: Quantities below this are treated as fully filled (float noise).
FILL_EPSILON = 1e-9


@dataclass
class SimOrder:
    """One order as the simulator's ground truth sees it."""

    perm_id: int
    client_id: int
    order_id: int
    instrument: Instrument
    contract: ContractSpec
    action: str
    total_quantity: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    outside_rth: bool
    order_ref: str
    account: str
    parent_id: int = 0
    oca_group: str = ""
    oca_type: int = 0
    status: str = "PreSubmitted"
    filled: float = 0.0
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    triggered: bool = False
    why_held: str = ""
    created_at: float = 0.0
    completed_at: float | None = None
    completed_status: str = ""
    expires_at: float | None = None
    matched_once: bool = False
    # fault flags fixed at placement
    sticky: bool = False
    drop_acks: bool = False
    release_at: float = 0.0
    pending_messages: list = field(default_factory=list)
    release_timer: object | None = None
    acked_fill: bool = False
    last_sent_status: str = ""

    @property
    def remaining(self) -> float:
        rem = self.total_quantity - self.filled
        return 0.0 if rem < FILL_EPSILON else rem

    @property
    def is_working(self) -> bool:
        return self.status in WORKING_STATUSES

    @property
    def is_buy(self) -> bool:
        return self.action == "BUY"

    @property
    def side(self) -> str:
        """BUY or SELL (SSHORT sells)."""
        return "BUY" if self.action == "BUY" else "SELL"

    def snapshot(self) -> dict:
        inst = self.instrument
        return {
            "permId": self.perm_id, "orderId": self.order_id, "clientId": self.client_id,
            "orderRef": self.order_ref, "status": self.status, "filled": self.filled,
            "remaining": self.remaining, "avgFillPrice": self.avg_fill_price,
            "lastFillPrice": self.last_fill_price,
            "symbol": inst.symbol, "localSymbol": inst.local_symbol, "conId": inst.con_id,
            "secType": inst.sec_type, "action": self.action,
            "totalQuantity": self.total_quantity, "orderType": self.order_type,
            "lmtPrice": self.lmt_price, "auxPrice": self.aux_price, "tif": self.tif,
            "outsideRth": self.outside_rth, "parentId": self.parent_id,
            "ocaGroup": self.oca_group, "triggered": self.triggered,
            "sticky": self.sticky, "createdAt": self.created_at,
            "completedAt": self.completed_at,
        }


@dataclass
class Execution:
    """One fill (or a correction of one: same base id, next suffix)."""

    exec_id: str
    perm_id: int
    order_id: int
    client_id: int
    instrument: Instrument
    side: str  # BOT / SLD
    shares: float
    price: float
    time: float
    cum_qty: float
    avg_price: float
    order_ref: str
    account: str
    commission: float
    commission_currency: str
    realized_pnl: float | None
    liquidity: int = 2  # 1 added, 2 removed liquidity
    superseded_by: str | None = None
    corrects: str | None = None

    def snapshot(self) -> dict:
        return {
            "execId": self.exec_id, "permId": self.perm_id, "orderId": self.order_id,
            "clientId": self.client_id, "orderRef": self.order_ref,
            "symbol": self.instrument.symbol, "conId": self.instrument.con_id,
            "side": self.side, "shares": self.shares, "price": self.price,
            "time": self.time, "cumQty": self.cum_qty, "avgPrice": self.avg_price,
            "commission": self.commission, "commissionCurrency": self.commission_currency,
            "realizedPnL": self.realized_pnl, "supersededBy": self.superseded_by,
            "corrects": self.corrects,
        }


def touch_for(order: SimOrder, quote: Quote) -> tuple[float, float]:
    """(price, displayed size) on the side this order trades against."""
    return (quote.ask, quote.ask_size) if order.is_buy else (quote.bid, quote.bid_size)


def stop_triggered(order: SimOrder, quote: Quote) -> bool:
    """Buy stops trigger when the ask (or last) reaches the stop; sells on the bid."""
    stop = order.aux_price
    if stop is None:
        return False
    if order.is_buy:
        return quote.ask >= stop or (quote.last is not None and quote.last >= stop)
    return quote.bid <= stop or (quote.last is not None and quote.last <= stop)


def executable_price(order: SimOrder, quote: Quote) -> float | None:
    """The price this order would trade at now, or None if it cannot trade."""
    price, _ = touch_for(order, quote)
    kind = order.order_type
    if kind in ("STP", "STP LMT") and not order.triggered:
        if not stop_triggered(order, quote):
            return None
        order.triggered = True
    if kind in ("MKT", "STP"):
        return price
    limit = order.lmt_price
    if limit is None:
        return None
    if order.is_buy:
        return price if price <= limit + 1e-12 else None
    return price if price >= limit - 1e-12 else None
