"""Equity options: chain definitions, contracts and Black-Scholes pricing.

A ``[[option_chain]]`` table of the instrument file turns into OPT
instruments (expiry x strike x right, multiplier 100).  Their expiries are
the next monthly expiries (third Fridays) after the simulator's start day,
so a chain never lies in the past whatever the clock; conIds are a stable
hash of (underlying, expiry, strike, right).

Prices follow the underlying: the market values every option with
Black-Scholes from the underlying's walk (volatility = the underlying's
annualised volatility, the chain's risk-free rate, no dividends), so
quotes, marks, model greeks (tick 13) and calculateImpliedVolatility /
calculateOptionPrice agree with each other.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any, Callable, Protocol, TypeVar

#: Seconds in a (calendar) year, for time to expiry.
YEAR_SECONDS = 365.0 * 86400
#: conIds of generated options: OPTION_CON_ID_BASE + hash % OPTION_CON_ID_SPAN.
OPTION_CON_ID_BASE = 700_000_000
OPTION_CON_ID_SPAN = 100_000_000
#: Options expire at the close (16:00 New York) of their expiry day.
EXPIRY_TIME = time(16, 0)
#: Implied volatility search bounds and tolerance.
IV_LOW, IV_HIGH, IV_TOLERANCE = 1e-4, 5.0, 1e-7


class Zoned(Protocol):
    """A schedule's time zone (``sim.instruments.Schedule``)."""

    @property
    def time_zone(self) -> str: ...

    @property
    def tz(self) -> tzinfo: ...


class OptionTerms(Protocol):
    """What the option maths reads of a contract (``sim.instruments.Instrument``).

    A protocol, not the class: ``instruments`` imports this module to build
    its chains, so this module never imports ``instruments``.
    """

    @property
    def symbol(self) -> str: ...
    @property
    def con_id(self) -> int: ...
    @property
    def sec_type(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def long_name(self) -> str: ...
    @property
    def price(self) -> float: ...
    @property
    def volatility(self) -> float: ...
    @property
    def strike(self) -> float: ...
    @property
    def right(self) -> str: ...
    @property
    def rate(self) -> float: ...
    @property
    def last_trade_date(self) -> str: ...
    @property
    def schedule(self) -> Zoned: ...


Contract = TypeVar("Contract", bound=OptionTerms)


@dataclass(frozen=True)
class OptionChainSpec:
    """One ``[[option_chain]]`` table."""

    underlying: str
    expiries: int
    strikes: tuple[float, ...]
    multiplier: str = "100"
    rate: float = 0.04
    min_tick: float = 0.01
    schedule: str = "us_option"
    exchanges: tuple[str, ...] = ("SMART", "CBOE")
    margin: float = 0.2

    @classmethod
    def from_toml(cls, raw: dict, source: str) -> "OptionChainSpec":
        try:
            spec = cls(underlying=str(raw["underlying"]).upper(), expiries=int(raw["expiries"]),
                       strikes=tuple(float(k) for k in raw["strikes"]),
                       multiplier=str(raw.get("multiplier", "100")),
                       rate=float(raw.get("rate", 0.04)),
                       min_tick=float(raw.get("min_tick", 0.01)),
                       schedule=str(raw.get("schedule", "us_option")),
                       exchanges=tuple(raw.get("exchanges", ("SMART", "CBOE"))),
                       margin=float(raw.get("margin", 0.2)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad [[option_chain]] in {source}: {exc!r}") from None
        if spec.expiries <= 0 or not spec.strikes:
            raise ValueError(f"[[option_chain]] of {spec.underlying} in {source} needs "
                             "expiries > 0 and some strikes")
        return spec


def third_friday(year: int, month: int) -> date:
    first = date(year, month, 1)
    offset = (4 - first.weekday()) % 7  # Friday = 4
    return first + timedelta(days=offset + 14)


def monthly_expiries(as_of: date, n: int) -> list[date]:
    """The next ``n`` third Fridays strictly after ``as_of``."""
    out: list[date] = []
    year, month = as_of.year, as_of.month
    while len(out) < n:
        d = third_friday(year, month)
        if d > as_of:
            out.append(d)
        month += 1
        if month > 12:
            year, month = year + 1, 1
    return out


def occ_symbol(root: str, expiry: date, right: str, strike: float) -> str:
    """OCC-style local symbol: ``AAPL  250620C00190000``."""
    return f"{root:<6}{expiry:%y%m%d}{right}{int(round(strike * 1000)):08d}"


def option_con_id(under_con_id: int, expiry: str, strike: float, right: str) -> int:
    key = f"{under_con_id}:{expiry}:{strike:.4f}:{right}".encode()
    return OPTION_CON_ID_BASE + zlib.crc32(key) % OPTION_CON_ID_SPAN


def build_chain(spec: OptionChainSpec, underlying: OptionTerms, schedule: Zoned, as_of: float,
                make: Callable[..., Contract]) -> list[Contract]:
    """The OPT contracts of one chain, expiries dated from ``as_of``; ``make`` builds one (the Instrument class)."""
    today = datetime.fromtimestamp(as_of, schedule.tz).date()
    out: list[Any] = []
    for expiry in monthly_expiries(today, spec.expiries):
        exp = f"{expiry:%Y%m%d}"
        for strike in spec.strikes:
            for right in ("C", "P"):
                out.append(make(
                    symbol=underlying.symbol, sec_type="OPT",
                    con_id=option_con_id(underlying.con_id, exp, strike, right),
                    exchange="SMART", primary_exchange="", currency=underlying.currency,
                    local_symbol=occ_symbol(underlying.symbol, expiry, right, strike),
                    trading_class=underlying.symbol, min_tick=spec.min_tick,
                    long_name=underlying.long_name, price=0.0,
                    volatility=underlying.volatility, schedule=schedule, spread_ticks=1,
                    lot=1, multiplier=spec.multiplier, last_trade_date=exp,
                    last_trade_time="16:00:00", under_con_id=underlying.con_id,
                    under_symbol=underlying.symbol, under_sec_type=underlying.sec_type,
                    margin=spec.margin, strike=strike, right=right, rate=spec.rate,
                    stock_type=""))
    # the static start price of the walk: the option's value at the start
    return [replace(o, price=theoretical_price(o, underlying.price, as_of)) for o in out]


# -- Black-Scholes ---------------------------------------------------------------------


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


_EXPIRY_CACHE: dict[tuple[str, str], float] = {}


def expiry_epoch(inst: OptionTerms) -> float:
    key = (inst.last_trade_date[:8], inst.schedule.time_zone)
    found = _EXPIRY_CACHE.get(key)
    if found is None:
        d = datetime.strptime(key[0], "%Y%m%d")
        found = _EXPIRY_CACHE[key] = datetime.combine(d.date(), EXPIRY_TIME,
                                                      inst.schedule.tz).timestamp()
    return found


def years_to_expiry(inst: OptionTerms, now: float) -> float:
    return max(0.0, (expiry_epoch(inst) - now) / YEAR_SECONDS)


@dataclass(frozen=True)
class Greeks:
    """Black-Scholes value and sensitivities of one option (per share)."""

    price: float
    delta: float
    gamma: float
    vega: float
    theta: float


def black_scholes(right: str, spot: float, strike: float, t: float, rate: float,
                  vol: float) -> Greeks:
    """European option value and greeks; vega per 1 vol point, theta per day."""
    intrinsic = max(0.0, spot - strike) if right == "C" else max(0.0, strike - spot)
    if t <= 0 or vol <= 0 or spot <= 0:
        delta = (1.0 if spot > strike else 0.0) if right == "C" else (-1.0 if spot < strike else 0.0)
        return Greeks(intrinsic, delta, 0.0, 0.0, 0.0)
    sq = vol * math.sqrt(t)
    d1 = (math.log(spot / strike) + (rate + 0.5 * vol * vol) * t) / sq
    d2 = d1 - sq
    disc = math.exp(-rate * t)
    if right == "C":
        price = spot * _norm_cdf(d1) - strike * disc * _norm_cdf(d2)
        delta = _norm_cdf(d1)
        theta = -spot * _norm_pdf(d1) * vol / (2 * math.sqrt(t)) - rate * strike * disc * _norm_cdf(d2)
    else:
        price = strike * disc * _norm_cdf(-d2) - spot * _norm_cdf(-d1)
        delta = _norm_cdf(d1) - 1.0
        theta = -spot * _norm_pdf(d1) * vol / (2 * math.sqrt(t)) + rate * strike * disc * _norm_cdf(-d2)
    gamma = _norm_pdf(d1) / (spot * sq)
    vega = spot * _norm_pdf(d1) * math.sqrt(t) / 100.0
    return Greeks(max(price, intrinsic if right == "C" else 0.0), delta, gamma, vega, theta / 365.0)


def theoretical(inst: OptionTerms, spot: float, now: float, vol: float | None = None) -> Greeks:
    return black_scholes(inst.right, spot, inst.strike, years_to_expiry(inst, now), inst.rate,
                         inst.volatility if vol is None else vol)


def theoretical_price(inst: OptionTerms, spot: float, now: float) -> float:
    return theoretical(inst, spot, now).price


def implied_volatility(inst: OptionTerms, option_price: float, spot: float,
                       now: float) -> float | None:
    """The volatility at which Black-Scholes gives ``option_price`` (bisection)."""
    t = years_to_expiry(inst, now)
    if t <= 0 or option_price <= 0 or spot <= 0:
        return None
    lo, hi = IV_LOW, IV_HIGH
    f_lo = black_scholes(inst.right, spot, inst.strike, t, inst.rate, lo).price - option_price
    f_hi = black_scholes(inst.right, spot, inst.strike, t, inst.rate, hi).price - option_price
    if f_lo > 0 or f_hi < 0:
        return None
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        f_mid = black_scholes(inst.right, spot, inst.strike, t, inst.rate, mid).price - option_price
        if abs(f_mid) < IV_TOLERANCE or hi - lo < IV_TOLERANCE:
            return mid
        if f_mid < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
