"""The audit trail: every control event (kills, halts, resumes, emergency cancels, risk rejections, reconnects,
actor deaths, FATAL programs, position drift) as one row in SQLite (WAL), written before anything else is done
with the event, and readable by tools while the monitor runs. The ``alerts`` table keeps every alert of any
severity with the routes it was handed to (the daily report lists them)."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bus.files import private_sqlite
from bus.messages import Alert

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    wall_ns  INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    source   TEXT    NOT NULL DEFAULT '',
    scope    TEXT    NOT NULL DEFAULT '',
    summary  TEXT    NOT NULL DEFAULT '',
    detail   TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_wall ON audit (wall_ns);
CREATE INDEX IF NOT EXISTS audit_kind ON audit (kind, wall_ns);
CREATE TABLE IF NOT EXISTS alerts (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    wall_ns  INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    severity TEXT    NOT NULL,
    source   TEXT    NOT NULL DEFAULT '',
    message  TEXT    NOT NULL DEFAULT '',
    detail   TEXT    NOT NULL DEFAULT '{}',
    routes   TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS alerts_wall ON alerts (wall_ns);
"""

#: Kinds of audit rows (the ``kind`` column).
KILL = "kill"
RESUME = "resume"
EMERGENCY_CANCEL = "emergency_cancel"
TRADING_STATE = "trading_state"
RISK_REJECT = "risk_reject"
CONNECTION = "connection"
ACTOR_DEAD = "actor_dead"
ACTOR_BACK = "actor_back"
ACTOR_LEFT = "actor_left"
ALERT = "alert"
RECONCILIATION = "reconciliation"


@dataclass(frozen=True)
class AuditRow:
    id: int
    wall_ns: int
    kind: str
    source: str
    scope: str
    summary: str
    detail: dict[str, Any]


class AuditLog:
    """Append-only audit table in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        private_sqlite(self.path)  # private: it names accounts, strategies and operators (also when older)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def record(
        self,
        kind: str,
        *,
        source: str = "",
        scope: str = "",
        summary: str = "",
        detail: dict[str, Any] | None = None,
        wall_ns: int | None = None,
    ) -> int:
        cur = self._db.execute(
            "INSERT INTO audit (wall_ns, kind, source, scope, summary, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (
                wall_ns or time.time_ns(),
                kind,
                source,
                scope,
                summary,
                json.dumps(detail or {}, sort_keys=True, default=str),
            ),
        )
        if cur.lastrowid is None:  # an INSERT always sets it
            raise sqlite3.DatabaseError("audit: INSERT gave no row id")
        return cur.lastrowid

    def record_alert(self, alert: Alert, routes: list[str] | None = None) -> int:
        cur = self._db.execute(
            "INSERT INTO alerts (wall_ns, kind, severity, source, message, detail, routes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                alert.wall_ns or time.time_ns(),
                alert.kind,
                alert.severity,
                alert.source,
                alert.message,
                json.dumps(dict(alert.detail), sort_keys=True),
                ",".join(routes or []),
            ),
        )
        return int(cur.lastrowid or 0)

    def recent(self, limit: int = 50, kind: str | None = None) -> list[AuditRow]:
        """Newest first."""
        if kind is None:
            rows = self._db.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        else:
            rows = self._db.execute(
                "SELECT * FROM audit WHERE kind = ? ORDER BY id DESC LIMIT ?", (kind, limit)
            ).fetchall()
        return [AuditRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return int(self._db.execute("SELECT COUNT(*) FROM audit").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM audit WHERE kind = ?", (kind,)).fetchone()[0])

    def close(self) -> None:
        self._db.close()


def read_audit(path: str | Path, limit: int = 50) -> list[AuditRow]:
    """Read the newest rows of an audit file (read-only; safe while the monitor writes)."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    finally:
        db.close()
    return [AuditRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]
