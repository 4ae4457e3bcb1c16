"""The instrument universe, loaded from a TOML data file.

``InstrumentUniverse`` answers contract look-ups the way IB does for
reqContractDetails/qualifyContracts: every field the client filled in must
match; an empty field matches anything.  Trading hours come from named
schedules so the same data serves contract details and the ``exchange``
market-hours mode.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

from .options import OptionChainSpec, build_chain
from .requests import ContractSpec

DEFAULT_INSTRUMENTS_FILE = "instruments.toml"
#: Option chains are dated from the manual clock's default start unless the
#: server passes its own start time (Monday 2025-06-02 10:00 New York).
DEFAULT_AS_OF = datetime(2025, 6, 2, 14, 0, tzinfo=timezone.utc).timestamp()
#: Days of trading hours listed in contractDetails (IB lists about a week).
TRADING_HOURS_DAYS = 7
#: Exchanges IB lists as valid for US stocks routed through SMART.
US_STOCK_EXCHANGES = "SMART,AMEX,NYSE,CBOE,PHLX,ISE,CHX,ARCA,ISLAND,DRCTEDGE,BEX,BATS,EDGEA,BYX,IEX,LTSE,NASDAQ,PEARL,MEMX,IBKRATS,OVERNIGHT"
#: Exchanges IB lists for US equity options routed through SMART.
US_OPTION_EXCHANGES = "SMART,AMEX,CBOE,PHLX,PSE,ISE,BOX,BATS,NASDAQOM,CBOE2,NASDAQBX,MIAX,GEMINI,EDGX,MERCURY,PEARL,EMERALD,MEMX,IBUSOPT"
#: Option rights as clients may spell them.
RIGHTS = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}
#: Strikes closer than this are the same strike.
STRIKE_EPSILON = 1e-6
#: minSize and sizeIncrement of instruments that trade fractional shares (IB: 0.0001).
FRACTIONAL_SIZE_INCREMENT = 0.0001
#: suggestedSizeIncrement by security type (round lots of stocks; FX lots).
SUGGESTED_SIZE_INCREMENT = {"STK": 100.0, "CASH": 25000.0}
#: IB market rules the universe uses (id -> [(lowEdge, increment)]), answered
#: by reqMarketRule; contract details list the rule of each contract's tick.
MARKET_RULES: dict[int, list[tuple[float, float]]] = {
    26: [(0.0, 0.01)],
    32: [(0.0, 0.25)],
    239: [(0.0, 0.00005)],
    1108: [(0.0, 0.02)],
}
DEFAULT_MARKET_RULE = 26
ORDER_TYPES = {
    "STK": "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,DEACTDIS,DEACTEOD,GAT,GTC,GTD,GTT,HID,IOC,LIT,LMT,LOC,MIT,MKT,MOC,MTL,NONALGO,OCA,OPG,PAON,POSTONLY,RELSTK,SCALE,SCALERST,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF",
    "FUT": "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,DEACTDIS,DEACTEOD,GAT,GTC,GTD,GTT,HID,ICE,IOC,LIT,LMT,MIT,MKT,MTL,NONALGO,OCA,SCALE,SCALERST,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF",
    "OPT": "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,DEACTDIS,DEACTEOD,GAT,GTC,GTD,GTT,HID,IOC,LIT,LMT,MIT,MKT,MTL,NONALGO,OCA,PAON,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF",
    "CASH": "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,DEACTDIS,DEACTEOD,GAT,GTC,GTD,GTT,IOC,LIT,LMT,MIT,MKT,NONALGO,OCA,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF",
}


def _parse_window(text: str) -> tuple[time, time] | None:
    if not text:
        return None
    start, end = text.split("-")
    h1, m1 = (int(x) for x in start.split(":"))
    h2, m2 = (int(x) for x in end.split(":"))
    return time(h1, m1), time(h2, m2)


@dataclass(frozen=True)
class Schedule:
    """Weekly exchange hours in the exchange's time zone.

    A window whose close is not after its open (e.g. ``17:00-16:00``) starts
    on the evening before the trading day it belongs to.
    """

    name: str
    time_zone: str
    days: tuple[int, ...]
    rth: tuple[time, time] | None
    extended: tuple[time, time] | None
    overnight: tuple[time, time] | None

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def _window(self, kind: str) -> tuple[time, time] | None:
        return {"rth": self.rth, "extended": self.extended,
                "overnight": self.overnight}[kind]

    def session(self, day: date, kind: str) -> tuple[datetime, datetime] | None:
        """(start, end) of the ``kind`` session of trading day ``day``."""
        window = self._window(kind)
        if window is None or day.weekday() not in self.days:
            return None
        open_t, close_t = window
        tz = self.tz
        end = datetime.combine(day, close_t, tz)
        start_day = day - timedelta(days=1) if close_t <= open_t else day
        start = datetime.combine(start_day, open_t, tz)
        return start, end

    def is_open(self, ts: float, kind: str) -> bool:
        """Is epoch time ``ts`` inside a ``kind`` session?"""
        local = datetime.fromtimestamp(ts, self.tz)
        for day in (local.date(), local.date() + timedelta(days=1)):
            s = self.session(day, kind)
            if s and s[0] <= local < s[1]:
                return True
        return False

    def next_close(self, ts: float, kind: str = "rth") -> float | None:
        """Epoch time of the end of the session containing ``ts`` (if open)."""
        local = datetime.fromtimestamp(ts, self.tz)
        for day in (local.date(), local.date() + timedelta(days=1)):
            s = self.session(day, kind)
            if s and s[0] <= local < s[1]:
                return s[1].timestamp()
        return None

    def session_end_after(self, ts: float, kind: str) -> float | None:
        """End of the session containing ``ts``, else of the next one."""
        local = datetime.fromtimestamp(ts, self.tz)
        for offset in range(0, 9):
            s = self.session(local.date() + timedelta(days=offset), kind)
            if s and s[1] > local:
                return s[1].timestamp()
        return None

    def hours_string(self, ts: float, kind: str) -> str:
        """IB's ``YYYYMMDD:HHMM-YYYYMMDD:HHMM;YYYYMMDD:CLOSED;...`` format."""
        today = datetime.fromtimestamp(ts, self.tz).date()
        parts = []
        for offset in range(TRADING_HOURS_DAYS):
            day = today + timedelta(days=offset)
            s = self.session(day, kind)
            if s is None:
                parts.append(f"{day:%Y%m%d}:CLOSED")
            else:
                parts.append(f"{s[0]:%Y%m%d:%H%M}-{s[1]:%Y%m%d:%H%M}")
        return ";".join(parts)


@dataclass(frozen=True)
class CommissionModel:
    """Commission for one security type (IB fixed-pricing style)."""

    per_unit: float = 0.0
    minimum: float = 0.0
    max_pct: float = 0.0
    bps: float = 0.0

    def commission(self, quantity: float, price: float, multiplier: float) -> float:
        value = abs(quantity) * price * multiplier
        fee = abs(quantity) * self.per_unit + value * self.bps / 10_000
        fee = max(fee, self.minimum)
        if self.max_pct:
            fee = min(fee, value * self.max_pct)
        return round(fee, 2)


@dataclass(frozen=True)
class Instrument:
    """One tradable contract with its static data and walk parameters."""

    symbol: str
    sec_type: str
    con_id: int
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str
    min_tick: float
    long_name: str
    price: float
    volatility: float
    schedule: Schedule
    spread_ticks: int = 1
    lot: int = 100
    multiplier: str = ""
    last_trade_date: str = ""
    last_trade_time: str = ""
    industry: str = ""
    category: str = ""
    subcategory: str = ""
    stock_type: str = "COMMON"
    under_con_id: int = 0
    under_symbol: str = ""
    under_sec_type: str = ""
    margin: float = 0.25
    margin_per_contract: bool = False
    isin: str = ""
    #: options: strike and right ("C" or "P")
    strike: float = 0.0
    right: str = ""
    #: options: annual risk-free rate used to price them from the underlying
    rate: float = 0.0
    #: contract details size rules (None: the default of the security type)
    min_size: float | None = None
    size_increment: float | None = None
    suggested_size_increment: float | None = None
    #: fractional quantities accepted (IB's fractional-share trading)
    fractional: bool = False
    #: contract details' orderTypes; empty: the default list of the security type
    order_types: str = ""

    @property
    def mult(self) -> float:
        """Numeric contract multiplier (1 when none)."""
        return float(self.multiplier) if self.multiplier else 1.0

    @property
    def order_type_list(self) -> str:
        """The orderTypes contract details list (order types, TIFs and attributes accepted)."""
        return self.order_types or ORDER_TYPES.get(self.sec_type, "LMT,MKT,STP,STPLMT")

    @property
    def contract_month(self) -> str:
        return self.last_trade_date[:6] if self.last_trade_date else ""

    @property
    def valid_exchanges(self) -> str:
        if self.sec_type == "STK" and self.currency == "USD":
            return US_STOCK_EXCHANGES
        if self.sec_type == "OPT":
            return US_OPTION_EXCHANGES
        if self.sec_type == "STK":
            return f"SMART,{self.primary_exchange}"
        return self.exchange

    @property
    def listing_exchange(self) -> str:
        """Where positions and executions say the contract trades."""
        return self.primary_exchange or self.exchange

    @property
    def strike_text(self) -> str:
        """The strike as contract messages carry it ("0" for non-options)."""
        return format_strike(self.strike)

    @property
    def size_rules(self) -> tuple[float, float, float]:
        """(minSize, sizeIncrement, suggestedSizeIncrement) of contract details."""
        default_suggested = SUGGESTED_SIZE_INCREMENT.get(self.sec_type, 1.0)
        step = FRACTIONAL_SIZE_INCREMENT if self.fractional else 1.0
        return (step if self.min_size is None else self.min_size,
                step if self.size_increment is None else self.size_increment,
                default_suggested if self.suggested_size_increment is None
                else self.suggested_size_increment)

    @property
    def market_rule_id(self) -> int:
        """IB's market rule id for this contract's price increments."""
        return market_rule_for(self.min_tick)

    @property
    def price_decimals(self) -> int:
        """Decimals of the tick size (0.25 -> 2, 0.00005 -> 5)."""
        cached = self.__dict__.get("_price_decimals")
        if cached is None:
            cached = len(f"{self.min_tick:.10f}".rstrip("0").split(".")[1])
            object.__setattr__(self, "_price_decimals", cached)
        return cached

    def round_price(self, price: float) -> float:
        """Nearest price on the tick grid (as a clean decimal float)."""
        return round(round(price / self.min_tick) * self.min_tick, self.price_decimals)

    def expired(self, now: float) -> bool:
        """Has this dated contract passed its last trading day (exchange time)?"""
        if not self.last_trade_date:
            return False
        today = datetime.fromtimestamp(now, self.schedule.tz).strftime("%Y%m%d")
        return self.last_trade_date[:8] < today

    def matches(self, q: ContractSpec) -> bool:
        """IB-style matching: every non-empty query field must agree."""
        if q.con_id:
            return q.con_id == self.con_id and (not q.sec_type or q.sec_type == self.sec_type)
        if q.sec_id_type and q.sec_id:
            if q.sec_id_type.upper() != "ISIN" or q.sec_id.upper() != self.isin:
                return False
        elif not q.symbol and not q.local_symbol:
            return False
        if q.symbol and q.symbol.upper() != self.symbol:
            return False
        if q.local_symbol and _norm_local(q.local_symbol) != _norm_local(self.local_symbol):
            return False
        if q.sec_type and q.sec_type != self.sec_type:
            return False
        if q.currency and q.currency.upper() != self.currency:
            return False
        if q.exchange and q.exchange.upper() not in self.valid_exchanges.split(","):
            return False
        if q.primary_exchange and q.primary_exchange.upper() not in (
                self.primary_exchange, self.exchange):
            return False
        if q.last_trade_date and not (
                self.last_trade_date.startswith(q.last_trade_date.split()[0])):
            return False
        if q.trading_class and q.trading_class != self.trading_class:
            return False
        if q.strike and abs(q.strike - self.strike) > STRIKE_EPSILON:
            return False
        if q.right and q.right.upper() not in ("", "?") and \
                RIGHTS.get(q.right.upper(), "?") != self.right:
            return False
        if q.multiplier:
            try:
                if float(q.multiplier) != self.mult:
                    return False
            except ValueError:
                return False
        return True


def format_strike(strike: float) -> str:
    """Strike as IB writes it in contract messages: ``190`` or ``187.5``; ``0`` if none."""
    if not strike:
        return "0"
    return f"{strike:.4f}".rstrip("0").rstrip(".")


def market_rule_for(min_tick: float) -> int:
    """Market rule id of a constant tick size (see MARKET_RULES)."""
    for rule_id, increments in MARKET_RULES.items():
        if len(increments) == 1 and abs(increments[0][1] - min_tick) < 1e-12:
            return rule_id
    return DEFAULT_MARKET_RULE


def _norm_local(s: str) -> str:
    return s.replace(" ", "").upper()


@dataclass
class InstrumentUniverse:
    """All instruments plus the commission models and FX rates of the file."""

    instruments: list[Instrument]
    commissions: dict[str, CommissionModel]
    fx_rates: dict[str, float]
    source: str = ""
    #: option chains: underlying conId -> the chain's definition
    chains: dict[int, OptionChainSpec] = field(default_factory=dict)
    by_con_id: dict[int, Instrument] = field(init=False)

    def __post_init__(self) -> None:
        self.by_con_id = {i.con_id: i for i in self.instruments}

    @classmethod
    def load(cls, path: str | Path | None = None, as_of: float | None = None) -> "InstrumentUniverse":
        """Load ``path``, or the packaged ``sim/data/instruments.toml``.

        ``as_of`` (epoch seconds, default: the manual clock's default start)
        dates the option chains: their expiries are the next monthly
        expiries after that day.
        """
        if path is None:
            text = resources.files("sim").joinpath("data", DEFAULT_INSTRUMENTS_FILE).read_text()
            source = "package:sim/data/instruments.toml"
        else:
            text = Path(path).read_text()
            source = str(path)
        return cls.from_toml(text, source, as_of)

    @classmethod
    def from_toml(cls, text: str, source: str = "<string>",
                  as_of: float | None = None) -> "InstrumentUniverse":
        data = tomllib.loads(text)
        schedules = {
            name: Schedule(
                name=name, time_zone=s["time_zone"], days=tuple(s.get("days", range(5))),
                rth=_parse_window(s.get("rth", "")),
                extended=_parse_window(s.get("extended", "")),
                overnight=_parse_window(s.get("overnight", "")))
            for name, s in data.get("schedule", {}).items()}
        instruments = []
        for raw in data.get("instrument", []):
            raw = dict(raw)
            schedule_name = raw.pop("schedule")
            if schedule_name not in schedules:
                raise ValueError(f"instrument {raw.get('symbol')}: unknown schedule "
                                 f"{schedule_name!r} in {source}")
            raw["sec_type"] = raw["sec_type"].upper()
            try:
                instruments.append(Instrument(schedule=schedules[schedule_name], **raw))
            except TypeError as exc:
                raise ValueError(f"instrument {raw.get('symbol')} in {source}: {exc}") from None
        chains: dict[int, OptionChainSpec] = {}
        when = as_of if as_of is not None else DEFAULT_AS_OF
        for raw in data.get("option_chain", []):
            spec = OptionChainSpec.from_toml(raw, source)
            underlying = [i for i in instruments if i.symbol == spec.underlying
                          and i.sec_type == "STK"]
            if len(underlying) != 1:
                raise ValueError(f"option chain of {spec.underlying!r}: no single stock "
                                 f"of that symbol in {source}")
            if spec.schedule not in schedules:
                raise ValueError(f"option chain of {spec.underlying!r}: unknown schedule "
                                 f"{spec.schedule!r} in {source}")
            chains[underlying[0].con_id] = spec
            instruments.extend(build_chain(spec, underlying[0], schedules[spec.schedule], when, Instrument))
        commissions = {k: CommissionModel(**v) for k, v in data.get("commission", {}).items()}
        fx = {k.upper(): float(v) for k, v in data.get("fx_rates", {"USD": 1.0}).items()}
        seen: set[int] = set()
        for inst in instruments:
            if inst.con_id in seen:
                raise ValueError(f"duplicate conId {inst.con_id} in {source}")
            seen.add(inst.con_id)
            if inst.currency not in fx:
                raise ValueError(f"no fx rate for {inst.currency} ({inst.symbol}) in {source}")
        return cls(instruments, commissions, fx, source, chains)

    def find(self, query: ContractSpec) -> list[Instrument]:
        """Every instrument matching ``query`` (IB returns all of them)."""
        return [i for i in self.instruments if i.matches(query)]

    def resolve(self, query: ContractSpec, now: float) -> list[Instrument]:
        """``find`` plus IB's continuous futures: a CONTFUT query means the
        front month (the nearest future of that symbol not yet expired)."""
        if query.sec_type != "CONTFUT":
            return self.find(query)
        if query.con_id:
            inst = self.by_con_id.get(query.con_id)
            return [inst] if inst is not None and inst.sec_type == "FUT" else []
        fut = replace(query, sec_type="FUT", last_trade_date="", local_symbol="")
        live = [i for i in self.find(fut) if not i.expired(now)]
        if not live:
            return []
        groups: dict[tuple[str, str, str], list[Instrument]] = {}
        for inst in live:
            groups.setdefault((inst.symbol, inst.exchange, inst.currency), []).append(inst)
        return [min(group, key=lambda i: i.last_trade_date) for _, group in sorted(groups.items())]

    def options_of(self, underlying: Instrument) -> list[Instrument]:
        """Every option on ``underlying`` (in universe order)."""
        return [i for i in self.instruments
                if i.sec_type == "OPT" and i.under_con_id == underlying.con_id]

    def by_symbol(self, symbol: str) -> Instrument:
        """Look up by symbol or local symbol (control API convenience)."""
        key = symbol.upper()
        for i in self.instruments:
            if i.local_symbol.upper() == key or i.local_symbol.replace(".", "").upper() == key:
                return i
        for i in self.instruments:
            if i.symbol == key:
                return i
        raise KeyError(f"unknown symbol {symbol!r}")

    def commission_model(self, sec_type: str) -> CommissionModel:
        return self.commissions.get(sec_type, CommissionModel())

    def convert(self, amount: float, from_ccy: str, to_ccy: str) -> float:
        """Convert with the file's static rates."""
        if from_ccy == to_ccy:
            return amount
        return amount * self.fx_rates[from_ccy] / self.fx_rates[to_ccy]
