"""Replay a recorded market: ``python -m sim --replay FILE [--replay-speed N]``.

The file drives the quotes and trades of the instruments it names, in
recorded time: the simulator's clock starts at the first record and runs
at ``N`` times the wall clock (or moves with ``advance`` on the manual
clock); every record becomes the instrument's top of book (and a trade
print when it has a last price), clients see it as ticks, bars and
history, and working orders match against it as they would against the
walk.  Instruments the file does not name keep their seeded walk.  When
the file ends the replayed instruments stay at their last quote.

Formats (CSV with a header row; Parquet with the same columns when pyarrow
is installed):

* ticks: ``time,symbol,bid,ask[,bid_size,ask_size][,last,last_size]``;
  bid/ask or last may be empty on a row;
* bars: ``time,symbol,open,high,low,close[,volume]`` (a bar's time is its
  start); each bar plays as open, high, low (or low, high when the close
  is below the open) and close across its span, with a one-tick spread.

``time`` is ISO-8601 (``2025-06-03T13:30:00Z``; no zone means UTC) or
epoch seconds; ``symbol`` a local symbol (``AAPL``, ``ESZ7``, ``EUR.USD``)
or a symbol of the universe.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from loguru import logger

from .instruments import Instrument, InstrumentUniverse
from .data_host import DataHost


TICK_COLUMNS = {"time", "symbol", "bid", "ask"}
TRADE_COLUMNS = {"time", "symbol", "last"}
BAR_COLUMNS = {"time", "symbol", "open", "high", "low", "close"}
#: Bar span when the file has a single bar per symbol.
DEFAULT_BAR_SECONDS = 60.0
#: The four points a bar plays, as fractions of its span.
BAR_POINTS = (0.0, 0.25, 0.5, 0.999)


class ReplayError(ValueError):
    """The replay file cannot be read (with the line that is wrong)."""


@dataclass(frozen=True)
class Record:
    """One top-of-book / trade update of one instrument."""

    time: float
    inst: Instrument
    bid: float | None = None
    ask: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None
    last: float | None = None
    last_size: float | None = None


def _time(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _num(row: dict, key: str) -> float | None:
    value = row.get(key)
    if value is None or str(value).strip() == "":
        return None
    return float(value)


def _rows(path: Path) -> Iterable[dict]:
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ReplayError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        table = pq.read_table(path)
        yield from table.to_pylist()
        return
    with path.open(newline="") as f:
        yield from csv.DictReader(f)


def load(path: str | Path, universe: InstrumentUniverse) -> list[Record]:
    """Every record of the file, in time order (stable for equal times)."""
    path = Path(path)
    if not path.exists():
        raise ReplayError(f"replay file {path} not found")
    records: list[Record] = []
    bars: list[tuple[float, Instrument, dict]] = []
    columns: set[str] | None = None
    for n, row in enumerate(_rows(path), start=2):
        if columns is None:
            columns = {k.strip() for k in row}
            if not (BAR_COLUMNS <= columns or TICK_COLUMNS <= columns or TRADE_COLUMNS <= columns):
                raise ReplayError(f"{path}: columns {sorted(columns)} are neither ticks "
                                  f"(time,symbol,bid,ask[,last]) nor bars (time,symbol,open,high,low,close)")
        row = {k.strip(): v for k, v in row.items()}
        try:
            t = _time(str(row["time"]))
            inst = universe.by_symbol(str(row["symbol"]).strip())
            if BAR_COLUMNS <= columns:
                bars.append((t, inst, row))
                continue
            records.append(Record(t, inst, _num(row, "bid"), _num(row, "ask"),
                                  _num(row, "bid_size"), _num(row, "ask_size"),
                                  _num(row, "last"), _num(row, "last_size")))
        except (KeyError, ValueError) as exc:
            raise ReplayError(f"{path} line {n}: {exc}") from None
    records.extend(_expand_bars(bars))
    records.sort(key=lambda r: r.time)
    if not records:
        raise ReplayError(f"{path} holds no records")
    return records


def _expand_bars(bars: list[tuple[float, Instrument, dict]]) -> list[Record]:
    """Each bar as four quotes with trades: open, extremes, close."""
    by_inst: dict[int, list[tuple[float, Instrument, dict]]] = {}
    for b in bars:
        by_inst.setdefault(b[1].con_id, []).append(b)
    out: list[Record] = []
    for rows in by_inst.values():
        rows.sort(key=lambda b: b[0])
        for i, (t, inst, row) in enumerate(rows):
            span = rows[i + 1][0] - t if i + 1 < len(rows) else (
                t - rows[i - 1][0] if i else DEFAULT_BAR_SECONDS)
            o, h, low, c = (float(row[k]) for k in ("open", "high", "low", "close"))
            volume = _num(row, "volume") or 0.0
            path = (o, h, low, c) if c >= o else (o, low, h, c)
            tick = inst.spread_ticks * inst.min_tick
            for frac, price in zip(BAR_POINTS, path):
                out.append(Record(t + frac * span, inst, inst.round_price(price - tick / 2),
                                  inst.round_price(price - tick / 2) + tick, None, None,
                                  price, volume / 4 if volume else None))
    return out


class Replayer:
    """Plays the records on the server's clock (see module docstring)."""

    def __init__(self, server: DataHost, records: list[Record]) -> None:
        self.server = server
        self.records = records
        self.position = 0
        self.finished = False

    @property
    def start_time(self) -> float:
        return self.records[0].time

    def instruments(self) -> list[Instrument]:
        seen: dict[int, Instrument] = {}
        for r in self.records:
            seen.setdefault(r.inst.con_id, r.inst)
        return list(seen.values())

    def start(self) -> None:
        """Freeze the replayed instruments' walks and schedule the first record."""
        market = self.server.broker.market
        first: dict[int, Record] = {}
        for r in self.records:
            if r.bid is not None or r.last is not None:
                first.setdefault(r.inst.con_id, r)
        for con_id, r in first.items():
            mid = (r.bid + r.ask) / 2 if r.bid is not None and r.ask is not None else r.last
            market.replay(r.inst, mid)
        self.position = 0
        self.finished = False
        self._schedule()
        logger.info("sim replay of {} records ({}) from {}", len(self.records),
                    ", ".join(i.local_symbol for i in self.instruments()),
                    datetime.fromtimestamp(self.start_time, timezone.utc).isoformat())

    def _schedule(self) -> None:
        if self.position >= len(self.records):
            self.finished = True
            logger.info("sim replay finished: the replayed instruments stay at their last quote")
            return
        self.server.scheduler.call_at(self.records[self.position].time, self._play)

    def _play(self) -> None:
        server = self.server
        now = server.clock.now()
        touched: dict[int, Instrument] = {}
        while self.position < len(self.records) and self.records[self.position].time <= now:
            r = self.records[self.position]
            self.position += 1
            changes = server.broker.market.replay_update(
                r.inst, now, r.bid, r.ask, r.bid_size, r.ask_size, r.last, r.last_size)
            server.market_ticks(r.inst, changes)
            touched[r.inst.con_id] = r.inst
        if not server.broker.faults.connectivity_lost:
            for inst in touched.values():
                server.broker.match(inst)
        server.notify()
        self._schedule()

    def snapshot(self) -> dict:
        return {"records": len(self.records), "played": self.position,
                "finished": self.finished,
                "instruments": [i.local_symbol for i in self.instruments()]}
