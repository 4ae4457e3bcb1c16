"""One working order as the exposure book counts it (:mod:`actors.risk.exposure`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bus.messages import STOP_ORDER_TYPES, IbOrder

#: order types that protect a position (never cancelled for stale market data)
PROTECTIVE_TYPES = STOP_ORDER_TYPES

#: The one-cancels-all set of a bracket's children: ``bracket:<client id>:<entry's IB orderId>`` as IB links them
#: (the snapshot), ``bracket:<entry orderRef>`` from the approval until IB has reported them
BRACKET_PREFIX = "bracket:"
#: An OCA group's set: ``oca:<oca_key of IB's ocaGroup>`` (the same from the approval and from IB)
OCA_PREFIX = "oca:"


def oca_set(o: IbOrder) -> str:
    """The one-cancels-all set an open IB order belongs to ("" for none)."""
    if o.oca_key:
        return f"{OCA_PREFIX}{o.oca_key}"
    if o.parent_id:
        return f"{BRACKET_PREFIX}{o.client_id}:{o.parent_id}"
    return ""


@dataclass(slots=True)
class WorkingOrder:
    """One order that may still trade."""

    order_ref: str
    strategy: str
    con_id: int
    #: IB's contract symbol (``symbol:`` scopes)
    symbol: str
    #: None when the side is not known yet (first seen through a status event): counted on both sides
    side: str | None
    quantity: float
    filled: float
    price: float | None
    multiplier: float
    currency: str
    pending: bool
    expires_mono: float = math.inf
    rejected: bool = False
    tif: str = ""
    order_type: str = ""
    #: the one-cancels-all set it belongs to: an OCA group (IB's ocaGroup) or a bracket's children
    #: (``bracket:<entry ref>``); only its largest member counts (``counted``), the worst case of the set
    oca: str = ""
    #: a bracket child: it closes what its entry opens, so it adds no notional (its quantity counts, as above)
    child: bool = False
    counted: bool = True
    #: what ranks an unpriced (market) member of a one-cancels-all set: the market price when risk approved it
    #: (None: not known, e.g. rebuilt from IB's snapshot; such a member then leads its set, see rank_value)
    rank_price: float | None = None

    @property
    def rank_value(self) -> float:
        """The member's worst case for choosing its set's leader: remaining x price x multiplier. A market order
        is valued at the market price risk saw; one whose price is not known at all ranks above every priced
        member (it fills first, at whatever the market is), never as worth 0."""
        price = self.price if self.price is not None else self.rank_price
        return math.inf if price is None else self.remaining * price * self.multiplier

    @property
    def remaining(self) -> float:
        return max(0.0, self.quantity - self.filled)

    @property
    def protective(self) -> bool:
        """A stop (protects a position) or an order of unknown type: never cancelled for stale data."""
        return self.order_type in PROTECTIVE_TYPES or not self.order_type

    @property
    def resting_day_order(self) -> bool:
        """What the stale-data breaker may cancel when configured to: a known DAY limit or market order."""
        return self.tif == "DAY" and not self.protective
