"""How each order type trades against the simulated top of book.

Matching runs on every market step (and at once after ``set_price``):

* MKT takes the touch (ask for buys, bid for sells); LMT fills when the touch
  is at or through the limit, at the touch;
* STP / STP LMT trigger when the touch (or last) reaches the stop, then act
  as MKT / LMT;
* TRAIL / TRAIL LIMIT keep a stop ``auxPrice`` (or ``trailingPercent``) away
  from the best price seen since placement (bid for sells, ask for buys) and
  trigger like a stop; TRAIL LIMIT then works a limit ``lmtPriceOffset``
  beyond the stop;
* MIT / LIT trigger when the market touches ``auxPrice`` from the other side
  (a buy when the ask falls to it, a sell when the bid rises to it), then act
  as MKT / LMT;
* MOC / LOC and the OPG time in force do not trade continuously: they run in
  the closing (opening) auction, at the touch, LOC/LMT only within the limit;
* an Adaptive algo order is worked between the quotes: Urgent takes the
  touch, Normal gets the midpoint after one market step, Patient after
  ``PATIENT_STEPS``; never beyond its limit.
"""

from __future__ import annotations

import math

from .market import Quote
from .orders import SimOrder

#: Order types the simulator trades, and their names in contract details' orderTypes.
ORDER_TYPE_TOKENS = {
    "MKT": "MKT", "LMT": "LMT", "STP": "STP", "STP LMT": "STPLMT", "TRAIL": "TRAIL",
    "TRAIL LIMIT": "TRAILLMT", "MIT": "MIT", "LIT": "LIT", "MOC": "MOC", "LOC": "LOC",
}
SUPPORTED_ORDER_TYPES = tuple(ORDER_TYPE_TOKENS)
#: Types that carry a limit price from placement on (TRAIL LIMIT derives one at its trigger).
LIMIT_TYPES = frozenset({"LMT", "STP LMT", "LIT", "LOC"})
TRAILING_TYPES = frozenset({"TRAIL", "TRAIL LIMIT"})
STOP_TYPES = frozenset({"STP", "STP LMT"}) | TRAILING_TYPES
TOUCH_TYPES = frozenset({"MIT", "LIT"})
AUCTION_TYPES = frozenset({"MOC", "LOC"})
#: Types that become market orders once triggered (or at once).
MARKET_LIKE = frozenset({"MKT", "STP", "TRAIL", "MIT", "MOC"})
ADAPTIVE = "Adaptive"
ADAPTIVE_PRIORITIES = ("Urgent", "Normal", "Patient")
#: Market steps an Adaptive order is worked before it takes the midpoint.
ADAPTIVE_STEPS = {"Urgent": 0, "Normal": 1, "Patient": 4}
PRICE_EPSILON = 1e-12


def touch_for(order: SimOrder, quote: Quote) -> tuple[float, float]:
    """(price, displayed size) on the side this order trades against."""
    return (quote.ask, quote.ask_size) if order.is_buy else (quote.bid, quote.bid_size)


def _round_tick(price: float, tick: float, up: bool) -> float:
    steps = price / tick
    steps = math.ceil(steps - 1e-9) if up else math.floor(steps + 1e-9)
    return round(steps * tick, 10)


def trail_candidate(order: SimOrder, quote: Quote) -> float:
    """Where the trailing stop would sit given this quote (sell: below the bid; buy: above the ask)."""
    tick = order.instrument.min_tick
    ref = quote.bid if not order.is_buy else quote.ask
    if order.trailing_percent is not None:
        offset = ref * order.trailing_percent / 100.0
    else:
        offset = order.aux_price or 0.0
    if order.is_buy:
        return _round_tick(ref + offset, tick, up=True)
    return _round_tick(ref - offset, tick, up=False)


def update_trail(order: SimOrder, quote: Quote) -> None:
    """Ratchet a trailing stop toward the market (never away from it)."""
    candidate = trail_candidate(order, quote)
    if order.trail_stop is None:
        order.trail_stop = candidate
    elif order.is_buy:
        order.trail_stop = min(order.trail_stop, candidate)
    else:
        order.trail_stop = max(order.trail_stop, candidate)


def stop_price(order: SimOrder) -> float | None:
    return order.trail_stop if order.order_type in TRAILING_TYPES else order.aux_price


def stop_reached(order: SimOrder, quote: Quote) -> bool:
    """Buy stops trigger when the ask (or last) reaches the stop; sells on the bid (or last)."""
    stop = stop_price(order)
    if stop is None:
        return False
    last = quote.last
    if order.is_buy:
        return quote.ask >= stop - PRICE_EPSILON or (last is not None and last >= stop - PRICE_EPSILON)
    return quote.bid <= stop + PRICE_EPSILON or (last is not None and last <= stop + PRICE_EPSILON)


def touched(order: SimOrder, quote: Quote) -> bool:
    """MIT/LIT: a buy triggers when the market falls to the trigger, a sell when it rises to it."""
    trigger = order.aux_price
    if trigger is None:
        return False
    last = quote.last
    if order.is_buy:
        return quote.ask <= trigger + PRICE_EPSILON or (last is not None and last <= trigger + PRICE_EPSILON)
    return quote.bid >= trigger - PRICE_EPSILON or (last is not None and last >= trigger - PRICE_EPSILON)


def _trigger(order: SimOrder, quote: Quote) -> bool:
    """Advance a conditional order's trigger state; True once it may trade."""
    kind = order.order_type
    if order.triggered or kind not in STOP_TYPES | TOUCH_TYPES:
        return True
    if kind in TRAILING_TYPES:
        update_trail(order, quote)
    hit = touched(order, quote) if kind in TOUCH_TYPES else stop_reached(order, quote)
    if not hit:
        return False
    order.triggered = True
    if kind == "TRAIL LIMIT" and order.trail_stop is not None:
        offset = order.lmt_price_offset or 0.0
        order.lmt_price = order.trail_stop + offset if order.is_buy else order.trail_stop - offset
    return True


def within_limit(order: SimOrder, price: float) -> bool:
    limit = order.lmt_price
    if limit is None:
        return False
    return price <= limit + PRICE_EPSILON if order.is_buy else price >= limit - PRICE_EPSILON


def _limit_applies(order: SimOrder) -> bool:
    return order.order_type in LIMIT_TYPES or order.order_type == "TRAIL LIMIT"


def adaptive_price(order: SimOrder, quote: Quote) -> float | None:
    """The price an Adaptive order gets now, or None while it is still being worked."""
    priority = order.algo_params.get("adaptivePriority", "Normal")
    touch, _ = touch_for(order, quote)
    if priority == "Urgent":
        return touch
    if order.worked_steps < ADAPTIVE_STEPS.get(priority, 1):
        return None
    tick = order.instrument.min_tick
    # the midpoint, rounded toward the touch: never better than the middle of the spread
    return _round_tick(quote.mid, tick, up=order.is_buy)


def is_auction_order(order: SimOrder) -> bool:
    return order.order_type in AUCTION_TYPES or order.tif == "OPG"


def executable_price(order: SimOrder, quote: Quote) -> float | None:
    """The price this order would trade at now in continuous trading, or None."""
    if is_auction_order(order):
        return None
    if not _trigger(order, quote):
        return None
    if order.algo_strategy == ADAPTIVE:
        price = adaptive_price(order, quote)
    else:
        price, _ = touch_for(order, quote)
    if price is None:
        return None
    if order.order_type in MARKET_LIKE:
        return price
    if not _limit_applies(order):
        return None
    return price if within_limit(order, price) else None


def auction_price(order: SimOrder, quote: Quote) -> float | None:
    """The price in an opening/closing auction (the touch), or None when the limit excludes it."""
    price, _ = touch_for(order, quote)
    if order.order_type in ("MOC", "MKT"):
        return price
    return price if within_limit(order, price) else None
