"""The strategies' books: each strategy's position per contract (IB conId), split into what it carried into the
day and what it traded since, and its daily P&L the way IB computes it. Durable, so a strategy's carried positions
keep their owner across days and restarts.

**Days are IB's.** A contract's day starts at IB's P&L reset for it (:class:`bus.sessions.PnLReset`: per instrument
by default, or one configured ``"HH:MM Zone"``), never at the host's midnight. When a contract's reset passes, what
each strategy traded in it becomes carried. An execution older than the contract's last reset (a replay after a
restart) goes straight to carried.

**Daily P&L per strategy** (base currency), IB's formula split by owner::

    carried x (price now - price at the reset) x multiplier x rate       the carried part
    + (day quantity x price now x multiplier + day net amount traded) x rate - day commissions

The carried part's price move is IB's: from the position's daily P&L (reqPnLSingle, ``D``) less what the day's
trades of every owner contributed (``T``), per unit of the account's carried position (``Q0``):
``(D - T) / Q0``. Until IB has reported a position's daily P&L, its carried part counts zero.

**Durable record** (``risk.books_file``, JSON, written atomically when something changed): every strategy's
positions with their day, and the execution ids already applied (a snapshot after a restart replays the day's
executions: they are not counted twice).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from loguru import logger

from actors.risk.trading_state import write_json_atomic
from bus.messages import ContractInfo, FillEvent
from bus.registry import EXTERNAL_STRATEGY
from bus.sessions import PnLReset

FILE_VERSION = 1
#: How many applied execution ids the record keeps (far more than a day holds).
APPLIED_MEMORY = 50_000
EPSILON = 1e-9
#: IB's execution time format in fill events (UTC).
EXEC_TIME_FORMAT = "%Y%m%d-%H:%M:%S"

InfoOf = Callable[[int], "ContractInfo | None"]
PriceOf = Callable[[int], "float | None"]
RateOf = Callable[[str], "float | None"]


@dataclass(slots=True)
class DayPosition:
    """One owner's position in one contract: carried into the day plus traded since its reset."""

    con_id: int
    symbol: str = ""
    currency: str = "USD"
    multiplier: float = 1.0
    carried: float = 0.0
    #: the reset (epoch seconds) the day fields belong to
    day_start: float = 0.0
    day_qty: float = 0.0
    #: the day's net amount traded in the contract's currency (sells positive, buys negative, x multiplier)
    day_cash: float = 0.0
    #: the day's commissions by currency
    day_fees: dict[str, float] = field(default_factory=dict)

    @property
    def quantity(self) -> float:
        return self.carried + self.day_qty

    def roll(self, reset: float) -> bool:
        """A new day for this contract: today's trades become carried. True if anything moved."""
        if reset <= self.day_start:
            return False
        self.carried += self.day_qty
        self.day_qty = self.day_cash = 0.0
        self.day_fees = {}
        self.day_start = reset
        return True


@dataclass(frozen=True, slots=True)
class AppliedFill:
    owner: str
    con_id: int
    signed_qty: float
    price: float
    today: bool


def exec_epoch(exec_time: str) -> float | None:
    try:
        return datetime.strptime(exec_time, EXEC_TIME_FORMAT).replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return None


def owner_of(ev: FillEvent) -> str:
    from bus.messages import strategy_of

    return strategy_of(ev.order_ref, ev.strategy_id)


class StrategyDayBook:
    """Positions and daily P&L per owner (a strategy, or :data:`EXTERNAL_STRATEGY`) and contract."""

    def __init__(self, reset: PnLReset, info_of: InfoOf, path: Path | None = None) -> None:
        self.reset = reset
        self.info_of = info_of
        self.path = path
        self.positions: dict[str, dict[int, DayPosition]] = {}
        self.applied: OrderedDict[str, AppliedFill] = OrderedDict()
        self.dirty = False

    # -- days ------------------------------------------------------------------------------------------------

    def last_reset(self, con_id: int, now: float) -> float:
        return self.reset.last_reset(self.info_of(con_id), now)

    def roll(self, now: float) -> None:
        """Roll every contract whose IB day has started since (today's trades become carried)."""
        for by_con in self.positions.values():
            for pos in by_con.values():
                if pos.roll(self.last_reset(pos.con_id, now)):
                    self.dirty = True

    def _position(self, owner: str, ev: FillEvent, now: float) -> DayPosition:
        con_id = ev.instrument.con_id
        pos = self.positions.setdefault(owner, {}).get(con_id)
        if pos is None:
            info = self.info_of(con_id)
            pos = self.positions[owner][con_id] = DayPosition(
                con_id=con_id,
                symbol=ev.instrument.display,
                currency=ev.instrument.currency,
                multiplier=info.multiplier if info is not None else _multiplier(ev.instrument.multiplier),
                day_start=self.last_reset(con_id, now),
            )
        else:
            pos.roll(self.last_reset(con_id, now))
        return pos

    # -- executions ------------------------------------------------------------------------------------------

    def on_fill(self, ev: FillEvent, now: float) -> bool:
        """Apply one execution (a correction replaces the one it corrects; a repeat changes nothing)."""
        signed = ev.quantity if ev.side == "BUY" else -ev.quantity
        owner = owner_of(ev)
        prev = self.applied.get(ev.exec_key)
        if prev is not None:
            if not ev.is_correction or (prev.signed_qty == signed and prev.price == ev.price):
                return False
            self._book(prev.owner, prev.con_id, -prev.signed_qty, prev.price, prev.today)
        pos = self._position(owner, ev, now)
        at = exec_epoch(ev.exec_time)
        today = at is None or at >= pos.day_start
        self._book(owner, pos.con_id, signed, ev.price, today)
        self.applied[ev.exec_key] = AppliedFill(owner, pos.con_id, signed, ev.price, today)
        while len(self.applied) > APPLIED_MEMORY:
            self.applied.popitem(last=False)
        self.dirty = True
        return True

    def _book(self, owner: str, con_id: int, signed: float, price: float, today: bool) -> None:
        pos = self.positions.setdefault(owner, {}).setdefault(con_id, DayPosition(con_id=con_id))
        if today:
            pos.day_qty += signed
            pos.day_cash -= signed * price * pos.multiplier
        else:
            pos.carried += signed

    def on_commission(self, exec_key: str, amount: float, currency: str) -> str:
        """Charge a commission to the execution's owner (today's fees of its contract); the owner, or ""."""
        applied = self.applied.get(exec_key)
        if applied is None or not math.isfinite(amount):
            return ""
        pos = self.positions.get(applied.owner, {}).get(applied.con_id)
        if pos is None or not applied.today:
            return applied.owner
        ccy = currency or pos.currency
        pos.day_fees[ccy] = pos.day_fees.get(ccy, 0.0) + amount
        self.dirty = True
        return applied.owner

    def owner(self, exec_key: str) -> str:
        applied = self.applied.get(exec_key)
        return applied.owner if applied is not None else ""

    # -- queries -----------------------------------------------------------------------------------------------

    def position(self, owner: str, con_id: int) -> float:
        pos = self.positions.get(owner, {}).get(con_id)
        return pos.quantity if pos is not None else 0.0

    def held(self, owner: str) -> Iterable[DayPosition]:
        return self.positions.get(owner, {}).values()

    def owners(self) -> set[str]:
        return {o for o, by_con in self.positions.items() if by_con}

    def strategies(self) -> set[str]:
        return {o for o in self.owners() if o and o != EXTERNAL_STRATEGY}

    def day_trades(self, pos: DayPosition, price_of: PriceOf, rate_of: RateOf) -> float:
        """The day's trades of one position marked to the market, commissions off (base currency)."""
        total = 0.0
        rate = rate_of(pos.currency)
        if rate is not None and (abs(pos.day_qty) > EPSILON or pos.day_cash):
            price = price_of(pos.con_id)
            if price is not None or abs(pos.day_qty) <= EPSILON:
                total += (pos.day_qty * (price or 0.0) * pos.multiplier + pos.day_cash) * rate
        for ccy, fee in pos.day_fees.items():
            fee_rate = rate_of(ccy)
            total -= fee * (fee_rate if fee_rate is not None else (rate or 1.0))
        return total

    def carried_move(
        self, con_id: int, account_qty: float, ib_daily: float | None, price_of: PriceOf, rate_of: RateOf
    ) -> float | None:
        """The day's move per carried unit of ``con_id`` (base currency), from IB's daily P&L of the position."""
        if ib_daily is None:
            return None
        day_qty = 0.0
        trades = 0.0
        for by_con in self.positions.values():
            pos = by_con.get(con_id)
            if pos is not None:
                day_qty += pos.day_qty
                trades += self.day_trades(pos, price_of, rate_of)
        carried_acct = account_qty - day_qty
        if abs(carried_acct) <= EPSILON:
            return None
        return (ib_daily - trades) / carried_acct

    def daily_pnl(
        self,
        owner: str,
        price_of: PriceOf,
        rate_of: RateOf,
        carried_move_of: Callable[[int], float | None],
    ) -> float:
        """One owner's P&L since each contract's IB reset (see module docstring), base currency."""
        total = 0.0
        for pos in self.held(owner):
            total += self.day_trades(pos, price_of, rate_of)
            if abs(pos.carried) > EPSILON:
                move = carried_move_of(pos.con_id)
                if move is not None:
                    total += pos.carried * move
        return total

    # -- durable record ----------------------------------------------------------------------------------------

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        data = {
            "version": FILE_VERSION,
            "positions": {
                owner: {str(c): asdict(p) for c, p in by_con.items() if abs(p.quantity) > EPSILON or p.day_cash}
                for owner, by_con in self.positions.items()
            },
            "applied": {k: asdict(v) for k, v in self.applied.items()},
        }
        try:
            write_json_atomic(self.path, data)
            self.dirty = False
        except OSError as exc:
            logger.error("risk: cannot write the strategies' books to {}: {}", self.path, exc)

    def load(self) -> None:
        """Read the durable record; an unreadable one is kept aside and the books start empty (the account's
        book, from IB, still holds every position)."""
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != FILE_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            positions = {
                owner: {int(c): DayPosition(**p) for c, p in by_con.items()}
                for owner, by_con in data.get("positions", {}).items()
            }
            applied = OrderedDict((k, AppliedFill(**v)) for k, v in data.get("applied", {}).items())
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            bad = self.path.with_name(f"{self.path.name}.corrupt")
            logger.critical(
                "risk: strategies' books {} unreadable ({}); kept as {}, starting empty", self.path, exc, bad
            )
            try:
                self.path.replace(bad)
            except OSError:
                pass
            return
        self.positions = positions
        self.applied = applied
        held = sum(1 for by_con in positions.values() for p in by_con.values() if abs(p.quantity) > EPSILON)
        logger.info("risk: strategies' books restored from {}: {} position(s)", self.path, held)


def _multiplier(text: str) -> float:
    try:
        value = float(text) if text else 1.0
    except ValueError:
        return 1.0
    return value if math.isfinite(value) and value > 0 else 1.0
