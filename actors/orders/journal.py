"""The order journal: SQLite in WAL mode (stdlib ``sqlite3``), one writer (the order manager's event loop).

Three tables (schema in ``docs/orders.md``):

* ``orders``  - the current view of every order, one row per (strategy_id, client_order_id), rewritten in the same
  transaction as the event that changed it, so the row and the event log never disagree;
* ``events``  - append-only: every request, risk decision, gateway reply, status report, fill, impossible
  transition, reconciliation action, with the message itself (msgpack) as payload; an event that changed the
  order carries the order's status and pipeline stage after it;
* ``fills``   - one row per execution, ``exec_key`` UNIQUE: a replayed fill cannot be counted twice, a correction
  replaces the row it corrects.

Durability: a transaction opened with ``durable=True`` commits with ``synchronous=FULL`` (fsync of the WAL): used
for everything that precedes an acknowledgement to a strategy. Other writes (status events, fills) commit with
``synchronous=NORMAL``: they survive a process crash (SIGKILL) and are re-derived from the gateway's snapshot
after an OS crash. A FULL commit costs ~0.15 ms here, so writes stay on the loop instead of a thread hop.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from actors.orders.lifecycle import FillRecord, ManagedOrder
from bus.files import private_sqlite
from bus.messages import FillEvent, OrderGroup, OrderSpec, StatusChange

#: 2: ``events.stage`` (the order's pipeline stage after an event that changed it; '' for the others)
SCHEMA_VERSION = 2
#: journals written by an older version, and the statements that bring them to :data:`SCHEMA_VERSION`
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE events ADD COLUMN stage TEXT NOT NULL DEFAULT ''",),
}
#: How long SQLite waits for a lock held by another connection (only tools reading the journal hold one).
BUSY_TIMEOUT_MS = 5000
#: ``PRAGMA synchronous`` values (SQLite's numbering): NORMAL syncs the WAL at checkpoints only, FULL at every commit.
SYNCHRONOUS_NORMAL = 1
SYNCHRONOUS_FULL = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_ref        TEXT PRIMARY KEY,
    strategy_id      TEXT NOT NULL,
    client_order_id  TEXT NOT NULL,
    symbol           TEXT NOT NULL,
    spec             BLOB NOT NULL,
    status           TEXT NOT NULL,
    stage            TEXT NOT NULL,
    sent             INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    done             INTEGER NOT NULL DEFAULT 0,
    status_filled    REAL NOT NULL DEFAULT 0,
    status_avg       REAL NOT NULL DEFAULT 0,
    filled           REAL NOT NULL DEFAULT 0,
    avg_fill_price   REAL NOT NULL DEFAULT 0,
    ib_order_id      INTEGER NOT NULL DEFAULT 0,
    perm_id          INTEGER NOT NULL DEFAULT 0,
    reason           TEXT NOT NULL DEFAULT '',
    error_code       INTEGER,
    history          BLOB NOT NULL,
    created_wall_ns  INTEGER NOT NULL,
    updated_wall_ns  INTEGER NOT NULL,
    UNIQUE (strategy_id, client_order_id)
);
CREATE INDEX IF NOT EXISTS orders_working ON orders (done, updated_wall_ns);
CREATE INDEX IF NOT EXISTS orders_created ON orders (created_wall_ns);
CREATE TABLE IF NOT EXISTS events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    wall_ns    INTEGER NOT NULL,
    order_ref  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT '',
    stage      TEXT NOT NULL DEFAULT '',
    flag       TEXT NOT NULL DEFAULT '',
    detail     TEXT NOT NULL DEFAULT '',
    msg_type   TEXT NOT NULL DEFAULT '',
    payload    BLOB
);
CREATE INDEX IF NOT EXISTS events_order ON events (order_ref, id);
CREATE TABLE IF NOT EXISTS fills (
    exec_key     TEXT NOT NULL UNIQUE,
    exec_id      TEXT NOT NULL,
    order_ref    TEXT NOT NULL,
    symbol       TEXT NOT NULL,
    side         TEXT NOT NULL,
    quantity     REAL NOT NULL,
    price        REAL NOT NULL,
    exec_time    TEXT NOT NULL DEFAULT '',
    replayed     INTEGER NOT NULL DEFAULT 0,
    commission   REAL,
    currency     TEXT NOT NULL DEFAULT '',
    wall_ns      INTEGER NOT NULL,
    payload      BLOB
);
CREATE INDEX IF NOT EXISTS fills_order ON fills (order_ref);
CREATE TABLE IF NOT EXISTS groups (
    group_key        TEXT PRIMARY KEY,
    strategy_id      TEXT NOT NULL,
    group_id         TEXT NOT NULL,
    kind             TEXT NOT NULL,
    created_wall_ns  INTEGER NOT NULL,
    payload          BLOB NOT NULL
);
"""

_ORDER_COLUMNS = (
    "order_ref",
    "strategy_id",
    "client_order_id",
    "symbol",
    "spec",
    "status",
    "stage",
    "sent",
    "cancel_requested",
    "done",
    "status_filled",
    "status_avg",
    "filled",
    "avg_fill_price",
    "ib_order_id",
    "perm_id",
    "reason",
    "error_code",
    "history",
    "created_wall_ns",
    "updated_wall_ns",
)
_UPSERT = (
    f"INSERT INTO orders ({', '.join(_ORDER_COLUMNS)}) VALUES ({', '.join('?' * len(_ORDER_COLUMNS))}) "
    f"ON CONFLICT(order_ref) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _ORDER_COLUMNS if c != "order_ref")
)

_encoder = msgspec.msgpack.Encoder()
_spec_decoder = msgspec.msgpack.Decoder(OrderSpec)
_history_decoder = msgspec.msgpack.Decoder(list[StatusChange])
_group_decoder = msgspec.msgpack.Decoder(OrderGroup)


class JournalError(Exception):
    """The journal cannot be opened or written (the order manager must not acknowledge anything then)."""


@dataclass(frozen=True, slots=True)
class EventRow:
    """One row of the append-only event log (tests and tools read these)."""

    id: int
    wall_ns: int
    order_ref: str
    kind: str
    status: str
    stage: str
    flag: str
    detail: str
    msg_type: str
    payload: bytes | None

    def message(self) -> Any:
        """The journalled message as plain data (dicts/lists), or None."""
        return msgspec.msgpack.decode(self.payload) if self.payload else None


def encode_message(msg: Any) -> bytes:
    return _encoder.encode(msg)


class Journal:
    """The order manager's SQLite journal. Not thread-safe: one owner (the actor's event loop)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            private_sqlite(self.path)  # orders and fills of every strategy: the operator's eyes only
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(f"{self.path}: could not switch to WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._synchronous = "NORMAL"
            self._db.executescript(_SCHEMA)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version in _MIGRATIONS:
                self._migrate(version)
            elif version != SCHEMA_VERSION:
                raise JournalError(f"{self.path}: journal schema {version}, this version reads {SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:  # OSError: the private file could not be made (a folder, no access)
            raise JournalError(f"{self.path}: {exc}") from exc
        self._in_tx = False
        self.commits = 0
        #: commits made with ``synchronous`` FULL or stronger *in effect* (read from the connection inside the
        #: transaction, not the flag the caller passed)
        self.durable_commits = 0

    def _migrate(self, version: int) -> None:
        """Bring an older journal to :data:`SCHEMA_VERSION` in one transaction (all or nothing)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            while version != SCHEMA_VERSION:
                for statement in _MIGRATIONS[version]:
                    self._db.execute(statement)
                version += 1
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- transactions --------------------------------------------------------------------------------------------

    @contextmanager
    def transaction(self, *, durable: bool) -> Iterator[None]:
        """One atomic unit of journal writes. ``durable`` commits with fsync (before an acknowledgement)."""
        if self._in_tx:
            raise JournalError("nested journal transaction")
        sync = "FULL" if durable else "NORMAL"
        if sync != self._synchronous:
            self._db.execute(f"PRAGMA synchronous = {sync}")
            self._synchronous = sync
        self._db.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            level = self.synchronous()
            self._db.execute("COMMIT")
            self.commits += 1
            self.durable_commits += level >= SYNCHRONOUS_FULL
        finally:
            self._in_tx = False

    def synchronous(self) -> int:
        """The connection's ``PRAGMA synchronous`` now (inside a transaction: what its COMMIT will do)."""
        return int(self._db.execute("PRAGMA synchronous").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    # -- writes --------------------------------------------------------------------------------------------------

    def append_event(
        self,
        order_ref: str,
        kind: str,
        *,
        status: str = "",
        stage: str = "",
        flag: str = "",
        detail: str = "",
        msg: Any = None,
        wall_ns: int | None = None,
    ) -> int:
        msg_type = ""
        payload = None
        if msg is not None:
            struct_cfg = getattr(type(msg), "__struct_config__", None)
            tag = struct_cfg.tag if struct_cfg is not None else None
            msg_type = tag if isinstance(tag, str) else type(msg).__name__
            payload = encode_message(msg)
        cur = self._db.execute(
            "INSERT INTO events (wall_ns, order_ref, kind, status, stage, flag, detail, msg_type, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (wall_ns or time.time_ns(), order_ref, kind, status, stage, flag, detail, msg_type, payload),
        )
        return int(cur.lastrowid or 0)

    def save_order(self, rec: ManagedOrder) -> None:
        s = rec.spec
        self._db.execute(
            _UPSERT,
            (
                rec.order_ref,
                s.strategy_id,
                s.client_order_id,
                s.instrument.symbol,
                _encoder.encode(s),
                rec.status,
                rec.stage,
                int(rec.sent),
                int(rec.cancel_requested),
                int(rec.is_done),
                rec.status_filled,
                rec.status_avg,
                rec.filled,
                rec.avg_fill_price,
                rec.ib_order_id,
                rec.perm_id,
                rec.reason,
                rec.error_code,
                _encoder.encode(rec.history),
                rec.created_wall_ns,
                rec.updated_wall_ns,
            ),
        )

    def record_fill(self, fill: FillEvent, *, wall_ns: int | None = None) -> str:
        """Insert one execution, de-duplicated by ``exec_key``: returns new | duplicate | correction | stale."""
        now = wall_ns or time.time_ns()
        symbol = fill.instrument.symbol
        cur = self._db.execute(
            "INSERT INTO fills (exec_key, exec_id, order_ref, symbol, side, quantity, price, exec_time, replayed, "
            "wall_ns, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(exec_key) DO NOTHING",
            (
                fill.exec_key,
                fill.exec_id,
                fill.order_ref,
                symbol,
                fill.side,
                fill.quantity,
                fill.price,
                fill.exec_time,
                int(fill.replayed),
                now,
                encode_message(fill),
            ),
        )
        if cur.rowcount == 1:
            return "new"
        (old_id,) = self._db.execute("SELECT exec_id FROM fills WHERE exec_key = ?", (fill.exec_key,)).fetchone()
        if old_id == fill.exec_id:
            return "duplicate"
        if fill.exec_id < old_id:
            return "stale"
        self._db.execute(
            "UPDATE fills SET exec_id = ?, quantity = ?, price = ?, exec_time = ?, wall_ns = ?, "
            "payload = ? WHERE exec_key = ?",
            (fill.exec_id, fill.quantity, fill.price, fill.exec_time, now, encode_message(fill), fill.exec_key),
        )
        return "correction"

    def record_commission(self, exec_key: str, commission: float, currency: str) -> bool:
        cur = self._db.execute(
            "UPDATE fills SET commission = ?, currency = ? WHERE exec_key = ?", (commission, currency, exec_key)
        )
        return cur.rowcount == 1

    # -- reads ---------------------------------------------------------------------------------------------------

    def _record(self, row: sqlite3.Row | tuple[Any, ...]) -> ManagedOrder:
        d = dict(zip(_ORDER_COLUMNS, row, strict=True))
        rec = ManagedOrder(
            spec=_spec_decoder.decode(d["spec"]),
            status=d["status"],
            stage=d["stage"],
            sent=bool(d["sent"]),
            cancel_requested=bool(d["cancel_requested"]),
            status_filled=d["status_filled"],
            status_avg=d["status_avg"],
            ib_order_id=d["ib_order_id"],
            perm_id=d["perm_id"],
            reason=d["reason"],
            error_code=d["error_code"],
            history=_history_decoder.decode(d["history"]),
            created_wall_ns=d["created_wall_ns"],
            updated_wall_ns=d["updated_wall_ns"],
        )
        for exec_key, exec_id, qty, price in self._db.execute(
            "SELECT exec_key, exec_id, quantity, price FROM fills WHERE order_ref = ?", (rec.order_ref,)
        ):
            rec.fills[exec_key] = FillRecord(exec_id, qty, price)
        return rec

    def _select(self, where: str = "", args: tuple[Any, ...] = (), tail: str = "") -> list[ManagedOrder]:
        sql = f"SELECT {', '.join(_ORDER_COLUMNS)} FROM orders {('WHERE ' + where) if where else ''} {tail}"
        return [self._record(r) for r in self._db.execute(sql, args).fetchall()]

    def load_order(self, order_ref: str) -> ManagedOrder | None:
        recs = self._select("order_ref = ?", (order_ref,))
        return recs[0] if recs else None

    def load_active(self, updated_since_ns: int) -> list[ManagedOrder]:
        """Every working order, plus finished ones updated since ``updated_since_ns`` (the rebuild after a start)."""
        return self._select("done = 0 OR updated_wall_ns >= ?", (updated_since_ns,), "ORDER BY created_wall_ns")

    def query_orders(
        self,
        *,
        strategy_id: str | None = None,
        strategy_ids: Collection[str] | None = None,
        symbol: str | None = None,
        created_since_ns: int = 0,
        working_only: bool = False,
        limit: int = 10_000,
        offset: int = 0,
    ) -> list[ManagedOrder]:
        """Matching orders, newest first: at most ``limit`` after skipping the ``offset`` newest; ``strategy_ids``
        (when given) is the set the caller may see."""
        clauses: list[str] = []
        args: list[Any] = []
        if strategy_id is not None:
            clauses.append("strategy_id = ?")
            args.append(strategy_id)
        if strategy_ids is not None:
            if not strategy_ids:
                return []
            ids = sorted(strategy_ids)
            clauses.append(f"strategy_id IN ({', '.join('?' for _ in ids)})")
            args.extend(ids)
        if symbol is not None:
            clauses.append("symbol = ?")
            args.append(symbol)
        if working_only:
            clauses.append("done = 0")
        elif created_since_ns:
            clauses.append("(created_wall_ns >= ? OR done = 0)")
            args.append(created_since_ns)
        return self._select(
            " AND ".join(clauses), tuple(args), f"ORDER BY created_wall_ns DESC LIMIT {int(limit)} OFFSET {int(offset)}"
        )

    # -- order groups (journalled with their members' requests, in one transaction: see OrderLedger.create_group)

    def save_group(self, group: OrderGroup, created_wall_ns: int) -> None:
        self._db.execute(
            "INSERT INTO groups (group_key, strategy_id, group_id, kind, created_wall_ns, payload) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (group.key, group.strategy_id, group.group_id, group.kind, created_wall_ns, _encoder.encode(group)),
        )

    def load_group(self, group_key: str) -> tuple[OrderGroup, int] | None:
        """The group and when it was journalled, or None."""
        row = self._db.execute(
            "SELECT payload, created_wall_ns FROM groups WHERE group_key = ?", (group_key,)
        ).fetchone()
        return (_group_decoder.decode(row[0]), int(row[1])) if row else None

    def events(self, order_ref: str | None = None) -> list[EventRow]:
        sql = "SELECT id, wall_ns, order_ref, kind, status, stage, flag, detail, msg_type, payload FROM events"
        rows = (
            self._db.execute(sql + " WHERE order_ref = ? ORDER BY id", (order_ref,))
            if order_ref is not None
            else self._db.execute(sql + " ORDER BY id")
        )
        return [EventRow(*r) for r in rows.fetchall()]

    def fill_rows(self, order_ref: str | None = None) -> list[dict[str, Any]]:
        cols = ("exec_key", "exec_id", "order_ref", "symbol", "side", "quantity", "price", "replayed", "commission")
        sql = f"SELECT {', '.join(cols)} FROM fills"
        rows = (
            self._db.execute(sql + " WHERE order_ref = ?", (order_ref,))
            if order_ref is not None
            else self._db.execute(sql)
        )
        return [dict(zip(cols, r, strict=True)) for r in rows.fetchall()]

    def count_orders(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM orders").fetchone()[0])
