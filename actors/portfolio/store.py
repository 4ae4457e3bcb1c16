"""The portfolio's durable store: every execution (all strategies, external ones included), commission reports,
the per-strategy books carried from day to day, adjustments, and intraday samples of equity and exposure.

SQLite in WAL mode (``portfolio.store``, default ``state/portfolio.sqlite``, mode 0600), one writer (the portfolio's
event loop); tools (``khazad fills``, ``khazad report``) open it read-only while the portfolio runs.

Tables:

* ``fills``       - one row per execution, keyed by ``exec_key`` (execId without its correction suffix): a replay is
  a duplicate, a correction replaces the row (``revisions`` counts them, ``first_exec_id`` keeps the original);
  ``seq`` is the arrival order the books apply them in (a correction keeps its place); ``day`` the trading day of
  the execution time; ``booked`` is 0 for executions of days before the store began (their effect is in the
  positions adopted then);
* ``commissions`` - IB's latest commission report per ``exec_key`` (it may arrive before its execution);
* ``checkpoints`` / ``openings`` - the books at the start of a trading day (a checkpoint with no openings is an empty
  day start); a late or corrected execution of an earlier day drops the later checkpoints, which are rebuilt;
* ``adjustments`` - positions booked without an execution (holdings adopted from IB), applied at their day's start;
* ``samples``     - net liquidation, P&L and exposure over time (the daily report's curves);
* ``meta``        - the current trading day and the first one.

Crash consistency: each execution or report is one transaction, written before the books change in memory; on
start the books are rebuilt from the checkpoint and the day's rows in ``seq`` order, exactly as they were built
live, and the gateway's snapshot replays whatever never reached the store.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from actors.portfolio.books import Book, Ledger, instrument_key
from bus.messages import CommissionEvent, FillEvent, Instrument, strategy_of

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000
#: The store holds the operator's trades: readable by its owner only.
FILE_MODE = 0o600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fills (
    exec_key      TEXT PRIMARY KEY,
    exec_id       TEXT NOT NULL,
    first_exec_id TEXT NOT NULL,
    revisions     INTEGER NOT NULL DEFAULT 1,
    seq           INTEGER NOT NULL UNIQUE,
    day           TEXT NOT NULL,
    exec_ns       INTEGER NOT NULL,
    strategy      TEXT NOT NULL,
    order_ref     TEXT NOT NULL,
    symbol        TEXT NOT NULL,
    side          TEXT NOT NULL,
    quantity      REAL NOT NULL,
    price         REAL NOT NULL,
    booked        INTEGER NOT NULL DEFAULT 1,
    wall_ns       INTEGER NOT NULL,
    payload       BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS fills_day ON fills (day, seq);
CREATE INDEX IF NOT EXISTS fills_time ON fills (exec_ns);
CREATE TABLE IF NOT EXISTS commissions (
    exec_key   TEXT PRIMARY KEY,
    exec_id    TEXT NOT NULL,
    commission REAL,
    currency   TEXT NOT NULL DEFAULT '',
    realized   REAL,
    payload    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (day TEXT PRIMARY KEY, wall_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS openings (
    day            TEXT NOT NULL,
    strategy       TEXT NOT NULL,
    inst_key       TEXT NOT NULL,
    instrument     BLOB NOT NULL,
    quantity       REAL NOT NULL,
    avg_price      REAL NOT NULL,
    realized_gross REAL NOT NULL,
    commissions    REAL NOT NULL,
    PRIMARY KEY (day, strategy, inst_key)
);
CREATE TABLE IF NOT EXISTS adjustments (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    day        TEXT NOT NULL,
    strategy   TEXT NOT NULL,
    instrument BLOB NOT NULL,
    quantity   REAL NOT NULL,
    price      REAL NOT NULL,
    reason     TEXT NOT NULL DEFAULT '',
    wall_ns    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    wall_ns         INTEGER PRIMARY KEY,
    day             TEXT NOT NULL,
    net_liquidation REAL,
    realized        REAL NOT NULL,
    unrealized      REAL NOT NULL,
    gross_exposure  REAL NOT NULL,
    net_exposure    REAL NOT NULL,
    strategies      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS samples_day ON samples (day, wall_ns);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_enc = msgspec.msgpack.Encoder()
_fill_dec = msgspec.msgpack.Decoder(FillEvent)
_comm_dec = msgspec.msgpack.Decoder(CommissionEvent)
_inst_dec = msgspec.msgpack.Decoder(Instrument)


class StoreError(Exception):
    """The store cannot be opened, read or written."""


@dataclass(frozen=True, slots=True)
class StoredFill:
    """One execution as stored: the latest revision and what the export shows about it."""

    fill: FillEvent
    day: str
    exec_ns: int
    strategy: str
    revisions: int
    first_exec_id: str
    booked: bool
    commission: float | None
    commission_currency: str
    realized_pnl: float | None

    @property
    def corrected(self) -> bool:
        return self.revisions > 1


@dataclass(frozen=True, slots=True)
class Sample:
    """Equity and exposure at one instant (per strategy: day P&L, realized today, gross exposure)."""

    wall_ns: int
    day: str
    net_liquidation: float | None
    realized: float
    unrealized: float
    gross_exposure: float
    net_exposure: float
    strategies: dict[str, dict[str, float]]


def apply_adjustment(
    books: dict[str, dict[str, Book]], strategy: str, inst: Instrument, qty: float, price: float
) -> None:
    """Book a position without an execution (an adoption) at ``price`` into ``books``."""
    book = books.setdefault(strategy, {}).setdefault(instrument_key(inst), Book(inst))
    book.apply("BUY" if qty > 0 else "SELL", abs(qty), price)
    book.fills -= 1  # not an execution


class BookStore:
    """The SQLite file (see module docstring). Not thread-safe: one owner."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        try:
            if readonly:
                if not self.path.exists():
                    raise StoreError(f"{self.path}: no portfolio store here (has the portfolio run?)")
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
                self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():  # create it private before SQLite writes anything into it
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, FILE_MODE))
            os.chmod(self.path, FILE_MODE)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if str(self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower() != "wal":
                raise StoreError(f"{self.path}: could not switch to WAL mode")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise StoreError(f"{self.path}: store schema {version}, this version reads {SCHEMA_VERSION}")
            for suffix in ("-wal", "-shm"):
                side = Path(f"{self.path}{suffix}")
                if side.exists():
                    os.chmod(side, FILE_MODE)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    # -- meta -----------------------------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = ?", (key, value, value)
        )

    @property
    def genesis(self) -> str | None:
        """The first trading day the store kept books for."""
        return self.meta("genesis_day")

    # -- executions -----------------------------------------------------------------------------------------------

    def record_fill(self, fill: FillEvent, day: str, exec_ns: int) -> tuple[str, str | None]:
        """Store one execution: (``new`` | ``duplicate`` | ``correction`` | ``stale``, the day of the revision it
        replaced or None)."""
        held = self._db.execute("SELECT exec_id, day FROM fills WHERE exec_key = ?", (fill.exec_key,)).fetchone()
        now = time.time_ns()
        strategy = strategy_of(fill.order_ref, fill.strategy_id)
        if held is None:
            genesis = self.genesis
            booked = 1 if genesis is None or day >= genesis else 0
            seq = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM fills").fetchone()[0])
            self._db.execute(
                "INSERT INTO fills (exec_key, exec_id, first_exec_id, seq, day, exec_ns, strategy, order_ref, symbol, "
                "side, quantity, price, booked, wall_ns, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    fill.exec_key,
                    fill.exec_id,
                    fill.exec_id,
                    seq,
                    day,
                    exec_ns,
                    strategy,
                    fill.order_ref,
                    fill.instrument.symbol,
                    fill.side,
                    fill.quantity,
                    fill.price,
                    booked,
                    now,
                    _enc.encode(fill),
                ),
            )
            return "new", None
        old_id, old_day = held
        if old_id == fill.exec_id:
            return "duplicate", None
        if fill.exec_id < old_id:
            return "stale", None
        self._db.execute(
            "UPDATE fills SET exec_id = ?, revisions = revisions + 1, day = ?, exec_ns = ?, strategy = ?, "
            "order_ref = ?, side = ?, quantity = ?, price = ?, payload = ? WHERE exec_key = ?",
            (
                fill.exec_id,
                day,
                exec_ns,
                strategy,
                fill.order_ref,
                fill.side,
                fill.quantity,
                fill.price,
                _enc.encode(fill),
                fill.exec_key,
            ),
        )
        return "correction", str(old_day)

    def record_commission(self, report: CommissionEvent) -> tuple[bool, str | None]:
        """Store a commission report (the latest revision wins): (changed, the day of its execution if known)."""
        held = self._db.execute(
            "SELECT exec_id, commission FROM commissions WHERE exec_key = ?", (report.exec_key,)
        ).fetchone()
        if held is not None and (
            report.exec_id < held[0] or (report.exec_id == held[0] and held[1] == report.commission)
        ):
            return False, None
        self._db.execute(
            "INSERT INTO commissions (exec_key, exec_id, commission, currency, realized, payload) "
            "VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(exec_key) DO UPDATE SET exec_id = excluded.exec_id, commission = excluded.commission, "
            "currency = excluded.currency, realized = excluded.realized, payload = excluded.payload",
            (
                report.exec_key,
                report.exec_id,
                report.commission,
                report.currency,
                report.realized_pnl,
                _enc.encode(report),
            ),
        )
        row = self._db.execute("SELECT day FROM fills WHERE exec_key = ?", (report.exec_key,)).fetchone()
        return True, None if row is None else str(row[0])

    def day_fills(self, day: str) -> list[FillEvent]:
        """The booked executions of ``day`` in arrival order."""
        rows = self._db.execute("SELECT payload FROM fills WHERE day = ? AND booked = 1 ORDER BY seq", (day,))
        return [_fill_dec.decode(r[0]) for r in rows.fetchall()]

    def commissions_of(self, exec_keys: list[str]) -> list[CommissionEvent]:
        out = []
        for i in range(0, len(exec_keys), 500):
            chunk = exec_keys[i : i + 500]
            rows = self._db.execute(
                f"SELECT payload FROM commissions WHERE exec_key IN ({','.join('?' * len(chunk))})", chunk
            )
            out += [_comm_dec.decode(r[0]) for r in rows.fetchall()]
        return out

    def query_fills(
        self,
        *,
        days: tuple[str, str] | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        strategy: str | None = None,
    ) -> list[StoredFill]:
        """Executions with their commission, oldest first (by execution time)."""
        clauses: list[str] = []
        args: list[object] = []
        if days is not None:
            clauses.append("f.day BETWEEN ? AND ?")
            args += list(days)
        if since_ns is not None:
            clauses.append("f.exec_ns >= ?")
            args.append(since_ns)
        if until_ns is not None:
            clauses.append("f.exec_ns < ?")
            args.append(until_ns)
        if strategy is not None:
            clauses.append("f.strategy = ?")
            args.append(strategy)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._db.execute(
            "SELECT f.payload, f.day, f.exec_ns, f.strategy, f.revisions, f.first_exec_id, f.booked, c.commission, "
            f"c.currency, c.realized FROM fills f LEFT JOIN commissions c ON c.exec_key = f.exec_key {where} "
            "ORDER BY f.exec_ns, f.seq",
            args,
        ).fetchall()
        return [
            StoredFill(_fill_dec.decode(r[0]), r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8] or "", r[9])
            for r in rows
        ]

    # -- books ----------------------------------------------------------------------------------------------------

    def start(self, today: str) -> None:
        """First use of a new store: ``today`` is its first trading day (an empty checkpoint)."""
        if self.genesis is None:
            self.set_meta("genesis_day", today)
            self.save_checkpoint(today, {})

    def save_checkpoint(self, day: str, books: dict[str, dict[str, Book]]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM openings WHERE day = ?", (day,))
            self._db.execute("INSERT OR REPLACE INTO checkpoints (day, wall_ns) VALUES (?, ?)", (day, time.time_ns()))
            for strategy, per in books.items():
                for key, b in per.items():
                    self._db.execute(
                        "INSERT INTO openings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            day,
                            strategy,
                            key,
                            _enc.encode(b.instrument),
                            b.quantity,
                            b.avg_price,
                            b.realized_gross,
                            b.commissions,
                        ),
                    )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def drop_checkpoints_after(self, day: str) -> None:
        """A late or corrected execution of ``day``: every later day's opening is no longer right."""
        self._db.execute("DELETE FROM openings WHERE day > ?", (day,))
        self._db.execute("DELETE FROM checkpoints WHERE day > ?", (day,))

    def _checkpoint(self, day: str) -> dict[str, dict[str, Book]]:
        books: dict[str, dict[str, Book]] = {}
        for strategy, inst, qty, avg, gross, comm in self._db.execute(
            "SELECT strategy, instrument, quantity, avg_price, realized_gross, commissions FROM openings WHERE day = ?",
            (day,),
        ):
            instrument = _inst_dec.decode(inst)
            book = Book(instrument, quantity=qty, avg_price=avg, realized_gross=gross, commissions=comm)
            book.day_realized_start = book.realized
            # keyed by today's instrument_key (one helper decides what identifies a contract)
            books.setdefault(strategy, {})[instrument_key(instrument)] = book
        return books

    def add_adjustment(self, day: str, strategy: str, inst: Instrument, qty: float, price: float, reason: str) -> None:
        self._db.execute(
            "INSERT INTO adjustments (day, strategy, instrument, quantity, price, reason, wall_ns) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (day, strategy, _enc.encode(inst), qty, price, reason, time.time_ns()),
        )

    def _adjustments(self, day: str) -> list[tuple[str, Instrument, float, float]]:
        rows = self._db.execute(
            "SELECT strategy, instrument, quantity, price FROM adjustments WHERE day = ? ORDER BY id", (day,)
        )
        return [(s, _inst_dec.decode(i), q, p) for s, i, q, p in rows.fetchall()]

    def openings(self, day: str) -> dict[str, dict[str, Book]]:
        """The books at the start of ``day``: its checkpoint, or the latest earlier checkpoint rolled forward
        through the executions (and adjustments) of the days in between."""
        row = self._db.execute("SELECT MAX(day) FROM checkpoints WHERE day <= ?", (day,)).fetchone()
        start = row[0] if row and row[0] else None
        if start == day:
            return self._checkpoint(day)
        books = self._checkpoint(start) if start else {}
        between = self._db.execute(
            "SELECT day FROM fills WHERE booked = 1 AND day >= ? AND day < ? UNION "
            "SELECT day FROM adjustments WHERE day > ? AND day <= ? ORDER BY day",
            (start or "", day, start or "", day),
        ).fetchall()
        for (d,) in between:
            if d != start:  # the checkpoint's own day has its adjustments in it
                for strategy, inst, qty, price in self._adjustments(d):
                    apply_adjustment(books, strategy, inst, qty, price)
            if d < day:
                fills = self.day_fills(d)
                ledger = Ledger()
                ledger.start_day(books, fills, self.commissions_of([f.exec_key for f in fills]))
                books = ledger.closing()
        return books

    # -- samples --------------------------------------------------------------------------------------------------

    def record_sample(self, s: Sample) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                s.wall_ns,
                s.day,
                s.net_liquidation,
                s.realized,
                s.unrealized,
                s.gross_exposure,
                s.net_exposure,
                json.dumps(s.strategies, sort_keys=True),
            ),
        )

    def samples(self, day: str) -> list[Sample]:
        rows = self._db.execute("SELECT * FROM samples WHERE day = ? ORDER BY wall_ns", (day,)).fetchall()
        return [Sample(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7])) for r in rows]

    def table_counts(self) -> dict[str, Any]:
        return {
            t: self._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("fills", "commissions", "checkpoints", "adjustments", "samples")
        }
