"""The order manager's journal and updates as its tests check them (several modules share these): raw rows, the
journal's own consistency, and the statuses a strategy sees on ``order.<strategy>``."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from bus.config import KhazadConfig
from bus.messages import OrderUpdate
from bus.pubsub import SyncSubscriber
from tests.support.waiting import eventually


def journal_rows(cfg: KhazadConfig, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(Path(cfg.path(cfg.orders.journal)))
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def assert_journal_consistent(cfg: KhazadConfig) -> None:
    """Every order row agrees with its own event log: one original request, the last status journalled is the
    row's status, and the fills recorded add up to no more than the row's filled quantity. Read in one
    transaction: the order manager keeps writing (a late Filled), and WAL gives a reader one consistent snapshot."""
    db = sqlite3.connect(Path(cfg.path(cfg.orders.journal)), isolation_level=None)
    try:
        db.execute("BEGIN")
        orders = db.execute("SELECT order_ref, status, filled FROM orders").fetchall()
        assert orders, "empty journal"
        for ref, status, filled in orders:
            requests = db.execute("SELECT COUNT(*) FROM events WHERE order_ref = ? AND kind = 'request' "
                                  "AND flag = ''", (ref,)).fetchall()
            assert requests == [(1,)], (ref, requests)
            last = db.execute("SELECT status FROM events WHERE order_ref = ? AND status != '' "
                              "ORDER BY id DESC LIMIT 1", (ref,)).fetchall()
            assert last == [(status,)], (ref, status, last)
            ((fills,),) = db.execute("SELECT COALESCE(SUM(quantity), 0) FROM fills WHERE order_ref = ?",
                                     (ref,)).fetchall()
            assert fills <= filled + 1e-9, (ref, fills, filled)
        db.execute("COMMIT")
    finally:
        db.close()


def statuses_seen(sub: SyncSubscriber, until: str, timeout: float = 10.0,
                  seen: list[str] | None = None) -> list[str]:
    """Order statuses on ``order.s1`` in arrival order (consecutive repeats collapsed) until ``until``, appended
    to ``seen`` when given."""
    seen = [] if seen is None else seen

    def more() -> bool:
        msg = sub.recv(0.05)
        if msg is not None and isinstance(msg[1].body, OrderUpdate):
            st = msg[1].body.order.status
            if not seen or seen[-1] != st:
                seen.append(st)
        return bool(seen) and seen[-1] == until

    eventually(more, timeout, message=lambda: f"statuses up to {until}, saw {seen}")
    return seen
