"""What IB accepts: the checks a placeOrder goes through, with IB's codes and texts.

Three layers, in IB's order:

1. ``check_terms``: the order's own terms against the contract (TWS refuses
   these before anything reaches IB: unsupported order type or TIF, missing
   prices, off-tick prices, fractional sizes, unknown algos...).
2. ``check_precautions``: TWS's Precautionary Settings (presets), checked
   when the order is transmitted: Size Limit (383), Total Value Limit (451),
   Percentage (163).
3. ``price_cap_breach``: IBKR's own check of a limit price too far through
   the market; the order is accepted, then cancelled with error 202.

A refusal in layers 1 and 2 means the order was never accepted: the client
gets the error only, no order status, and the order never shows up in
completed orders.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .instruments import Instrument
from .market import Quote
from .matching import (
    ADAPTIVE, ADAPTIVE_PRIORITIES, LIMIT_TYPES, ORDER_TYPE_TOKENS, STOP_TYPES, SUPPORTED_ORDER_TYPES,
    TOUCH_TYPES, TRAILING_TYPES,
)
from .order_requests import PlaceOrder
from .orders import SimOrder

TIFS = ("DAY", "GTC", "IOC", "FOK", "OPG", "GTD")
#: TIFs listed by name in contract details' orderTypes (the others are always accepted).
LISTED_TIFS = frozenset({"OPG", "GTD"})
#: Order types an OPG (at-the-open) TIF can carry: market- and limit-on-open.
OPG_TYPES = frozenset({"MKT", "LMT"})
#: Order types whose outsideRth flag IB ignores for stocks (error 2109): they only trade in the regular session.
RTH_ONLY_TYPES = frozenset({"MKT", "MOC", "LOC", "MIT", "TRAIL"})
#: IB's price check allows options twice the stocks' distance through the market (20 % vs 10 %).
OPTION_PRICE_CAP_FACTOR = 2
PRESET_SUFFIX = "Restriction is specified in Precautionary Settings of Global Configuration/Presets."


@dataclass(frozen=True)
class Refusal:
    """An order IB will not take: the error code, its text, and the JSON reason (201 only)."""

    code: int
    message: str
    reject_json: str = ""


@dataclass(frozen=True)
class Precautions:
    """The precautionary checks (see docs/simulator.md, "Precautionary checks").

    ``price_cap_pct``: IBKR's own check, a limit more than this many percent
    through the NBBO (a buy above the ask, a sell below the bid) is cancelled
    with error 202; IB documents 10 % for stocks.  The others are TWS presets;
    0 switches one off.  ``value_limit`` is in USD.
    """

    price_cap_pct: float = 10.0
    percentage: float = 0.0
    size_limit: float = 0.0
    value_limit: float = 10_000_000.0

    def __post_init__(self) -> None:
        for name in ("price_cap_pct", "percentage", "size_limit", "value_limit"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")


def _rejected(text: str) -> Refusal:
    return Refusal(201, f"Order rejected - reason:{text}",
                   json.dumps({"reason": text, "source": "khazad-sim"}, sort_keys=True))


def parse_good_till(text: str, default_tz: str) -> float:
    """goodTillDate (``YYYYMMDD HH:MM:SS [zone]`` or ``YYYYMMDD-HH:MM:SS`` in UTC) to epoch seconds."""
    text = text.strip()
    if not text:
        raise ValueError("empty goodTillDate")
    if len(text) >= 17 and text[8] == "-":
        return datetime.strptime(text[:17], "%Y%m%d-%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    parts = text.split()
    stamp = " ".join(parts[:2])
    zone = parts[2] if len(parts) > 2 else default_tz
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {zone!r}") from None
    return datetime.strptime(stamp, "%Y%m%d %H:%M:%S").replace(tzinfo=tz).timestamp()


def _off_tick(price: float, tick: float) -> bool:
    return abs(price / tick - round(price / tick)) > 1e-6


def _check_type_and_tif(req: PlaceOrder, inst: Instrument) -> Refusal | None:
    listed = set(inst.order_type_list.split(","))
    kind = req.order_type
    if kind not in SUPPORTED_ORDER_TYPES:
        return Refusal(387, "Unsupported order type for this exchange and security type. "
                            f"(simulator supports {', '.join(SUPPORTED_ORDER_TYPES)})")
    if ORDER_TYPE_TOKENS[kind] not in listed:
        return Refusal(387, "Unsupported order type for this exchange and security type.")
    if req.tif not in TIFS:
        return _rejected(f"Invalid time in force {req.tif[:10]}")
    if req.tif in LISTED_TIFS and req.tif not in listed:
        return _rejected(f"Time in force {req.tif} is not supported for this contract")
    if kind in ("MOC", "LOC") and req.tif != "DAY":
        return Refusal(113, "The Tif option should be set to DAY for MOC and LOC orders.")
    if req.tif == "OPG" and kind not in OPG_TYPES:
        return Refusal(111, "The TIF (Tif type) and the order type are incompatible.")
    if req.tif == "GTD":
        try:
            parse_good_till(req.good_till_date, inst.schedule.time_zone)
        except ValueError:
            return Refusal(334, "Invalid Good Till Date order")
    return None


def _check_prices(req: PlaceOrder, inst: Instrument) -> Refusal | None:
    kind = req.order_type
    if kind in LIMIT_TYPES and req.lmt_price is None:
        return _rejected("Limit price is missing")
    if kind in (STOP_TYPES - TRAILING_TYPES) | TOUCH_TYPES and req.aux_price is None:
        return _rejected("Stop price is missing" if kind in STOP_TYPES else "Trigger price is missing")
    if kind in TRAILING_TYPES:
        if req.aux_price is None and req.trailing_percent is None:
            return Refusal(158, "You must specify an offset amount or a percent offset value.")
        if req.trailing_percent is not None and not 0 < req.trailing_percent < 100:
            return Refusal(159, "The percent offset value must be between 0% and 100%.")
        if kind == "TRAIL LIMIT" and req.lmt_price_offset is None:
            return _rejected("Limit price offset is missing")
    to_check = []
    if kind in LIMIT_TYPES:
        to_check.append(req.lmt_price)
    if kind in (STOP_TYPES - TRAILING_TYPES) | TOUCH_TYPES:
        to_check.append(req.aux_price)
    if kind in TRAILING_TYPES:
        to_check.append(req.trail_stop_price)
    for price in to_check:
        if price is not None and _off_tick(price, inst.min_tick):
            return Refusal(110, "The price does not conform to the minimum price variation for this contract.")
    return None


def _check_algo(req: PlaceOrder, inst: Instrument) -> Refusal | None:
    if not req.algo_strategy:
        return None
    if req.algo_strategy != ADAPTIVE:
        return Refusal(439, "Order processing failed. Algorithm definition not found.")
    if "ALGO" not in inst.order_type_list.split(","):
        return Refusal(442, "Specified algorithm is not allowed for this order.")
    if req.order_type not in ("LMT", "MKT"):
        return Refusal(442, "Specified algorithm is not allowed for this order.")
    unknown = sorted(set(req.algo) - {"adaptivePriority"})
    if unknown:
        return Refusal(443, "Order processing failed. Unknown algo attribute.")
    priority = req.algo.get("adaptivePriority", "Normal")
    if priority not in ADAPTIVE_PRIORITIES:
        return Refusal(441, f"Algo attributes validation failed: adaptivePriority must be one of "
                            f"{', '.join(ADAPTIVE_PRIORITIES)}, not {priority[:20]!r}")
    return None


def check_terms(req: PlaceOrder, inst: Instrument, account_id: str) -> Refusal | None:
    """The order's own terms against the contract (layer 1)."""
    refusal = _check_type_and_tif(req, inst)
    if refusal is not None:
        return refusal
    if req.action not in ("BUY", "SELL", "SSHORT"):
        return _rejected(f"Invalid action {req.action[:10]!r}")
    if not math.isfinite(req.total_quantity) or any(
            p is not None and not math.isfinite(p)
            for p in (req.lmt_price, req.aux_price, req.trail_stop_price, req.trailing_percent)):
        return _rejected("Quantity and prices must be finite numbers")
    if req.total_quantity == 0:
        return Refusal(434, "The order size cannot be zero.")
    if req.total_quantity < 0:
        return _rejected("The order size must be positive")
    if not req.total_quantity.is_integer() and not inst.fractional:
        return Refusal(10245, "This financial instrument does not support fractional shares trading")
    if req.account and req.account != account_id:
        return _rejected(f"Invalid account code {req.account}")
    if req.conditions:
        return _rejected("Order conditions are not supported by the Khazad simulator")
    return _check_prices(req, inst) or _check_algo(req, inst)


def reference_price(order_type: str, is_buy: bool, lmt_price: float | None, aux_price: float | None,
                    quote: Quote) -> float:
    """The price TWS values an order at: its limit, else its stop, else the touch."""
    if order_type in LIMIT_TYPES and lmt_price:
        return lmt_price
    if order_type in ("STP", "MIT") and aux_price:
        return aux_price
    return quote.ask if is_buy else quote.bid


def check_precautions(req: SimOrder, order_id: int, inst: Instrument, quote: Quote,
                      rules: Precautions, usd_per_unit: float) -> Refusal | None:
    """TWS's Precautionary Settings (layer 2) for an order about to be transmitted.

    ``usd_per_unit`` converts the contract's currency to USD.
    """
    who = f'The following order "ID:{order_id}"'
    if rules.size_limit and req.total_quantity > rules.size_limit:
        return Refusal(383, f"{who} size exceeds the Size Limit of {rules.size_limit:g}. {PRESET_SUFFIX}")
    price = reference_price(req.order_type, req.action == "BUY", req.lmt_price, req.aux_price, quote)
    value = abs(req.total_quantity) * price * inst.mult * usd_per_unit
    if rules.value_limit and value > rules.value_limit:
        return Refusal(451, f"{who} value estimate of {value:,.0f} USD exceeds the Total Value Limit of "
                            f"{rules.value_limit:,.0f} USD. {PRESET_SUFFIX}")
    if rules.percentage and req.order_type in LIMIT_TYPES and req.lmt_price is not None:
        market = quote.ask if req.action == "BUY" else quote.bid
        if market > 0 and abs(req.lmt_price - market) / market * 100 > rules.percentage:
            return Refusal(163, f"{who} price exceeds the Percentage constraint of {rules.percentage:g}%. "
                                f"{PRESET_SUFFIX}")
    return None


def price_cap_breach(is_buy: bool, lmt_price: float | None, quote: Quote, rules: Precautions,
                     sec_type: str = "STK") -> str | None:
    """IBKR's price check (layer 3): the 202 text when a limit is too far through the market.

    IB documents 10 % for stocks and 20 % for options: options get ``OPTION_PRICE_CAP_FACTOR`` times the cap.
    """
    if not rules.price_cap_pct or lmt_price is None:
        return None
    pct = rules.price_cap_pct * (OPTION_PRICE_CAP_FACTOR if sec_type == "OPT" else 1)
    market = quote.ask if is_buy else quote.bid
    cap = market * (1 + pct / 100) if is_buy else market * (1 - pct / 100)
    through = lmt_price > cap if is_buy else lmt_price < cap
    if not through:
        return None
    return ("Order Canceled - reason:In accordance with our regulatory obligations as a broker, we cannot "
            f"accept your order at the limit price {lmt_price:g} you selected because it is too far through "
            "the market. Please submit your order using a limit price that is closer to the current market "
            f"price {market:g}.")


def outside_rth_ignored(req: PlaceOrder, inst: Instrument) -> bool:
    """IB ignores outsideRth (and says so with 2109) for stock orders that only trade in the regular session."""
    return req.outside_rth and inst.sec_type == "STK" and (req.order_type in RTH_ONLY_TYPES or req.tif == "OPG")
