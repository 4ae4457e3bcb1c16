"""Orders and executions: the simulator's records of them.

State is global and keyed by permId (like IB's): a client that reconnects
with the same clientId finds its orders and fills again, and order ids keep
increasing per clientId across sessions.  How orders trade is in
``sim.matching``; parent/child and OCA groups in ``sim.groups``; what is
accepted in ``sim.validation``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .instruments import Instrument
from .requests import ContractSpec

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
    #: False while held in TWS (placed with transmit=False): reported Inactive, never fills
    transmitted: bool = True
    #: False for an order refused before acceptance (ground truth only: never reported as an order)
    accepted: bool = True
    #: placed by hand in TWS (control ``manual_order``); orderId 0 until bound to client 0
    manual: bool = False
    trailing_percent: float | None = None
    #: a trailing stop's current stop price
    trail_stop: float | None = None
    lmt_price_offset: float | None = None
    algo_strategy: str = ""
    algo_params: dict = field(default_factory=dict)
    good_till_date: str = ""
    #: quantity when placed (OCA reductions are proportional to it)
    original_quantity: float = 0.0
    #: an auction (MOC/LOC at the close, OPG at the open) runs at this sim time
    auction_at: float | None = None
    #: a cancel is on its way to the exchange (latency profile)
    cancel_requested: bool = False
    #: market steps an adaptive order has been worked
    worked_steps: int = 0
    #: notices (code, text) IB sends once the order is accepted (10349, 2109, 399)
    pending_notices: list = field(default_factory=list)
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
    def held(self) -> bool:
        """Kept in TWS, not transmitted (transmit=False): open but not working."""
        return not self.transmitted and self.status == "Inactive"

    @property
    def is_open(self) -> bool:
        """Listed by reqOpenOrders and cancellable: working or held."""
        return self.is_working or self.held

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
            "ocaGroup": self.oca_group, "ocaType": self.oca_type, "triggered": self.triggered,
            "transmitted": self.transmitted, "held": self.held, "accepted": self.accepted,
            "manual": self.manual, "trailStopPrice": self.trail_stop,
            "trailingPercent": self.trailing_percent, "lmtPriceOffset": self.lmt_price_offset,
            "algoStrategy": self.algo_strategy, "algoParams": dict(self.algo_params),
            "goodTillDate": self.good_till_date, "whyHeld": self.why_held,
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
