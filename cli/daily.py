"""The data of one trading day, read (read-only) from the run directory's durable state:

* the portfolio's store (``portfolio.store``): the day's executions with commissions and corrections, each
  strategy's books (the day's openings plus its executions: realized P&L, position at the close) and the samples
  of net liquidation, P&L and exposure taken every ``portfolio.sample_interval_s``;
* the order journal (``orders.journal``): orders rejected that day (by risk, the gateway or IB) with their reason;
* the monitor's audit file (``monitor.audit_db``): every alert of the day and the control events (kills, halts,
  resumes, trading-state changes, emergency cancels).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.portfolio.books import Ledger, display_name, usable
from actors.portfolio.store import BookStore, Sample, StoredFill
from bus.config import KhazadConfig
from bus.messages import strategy_of
from bus.tradingday import TradingDay

#: Statuses of an order that never worked at IB (ours) or that IB refused.
REJECTED_STATUSES = ("RiskRejected", "GatewayRejected", "Inactive")
#: IB error codes on a cancelled order that are notices, not a refusal (202: cancelled as asked; 161/10147/10148:
#: cancel races; 10349: TIF preset; 399: a warning).
NOT_REJECTIONS = (202, 161, 399, 10147, 10148, 10349)
#: Audit kinds the report lists as control events.
CONTROL_KINDS = ("kill", "resume", "emergency_cancel", "trading_state")


@dataclass
class StrategyDay:
    """One strategy's day: realized today (net of commissions), commissions, executions, open positions at the
    close, unrealized at the last sample."""

    strategy: str
    realized: float = 0.0
    commissions: float = 0.0
    fills: int = 0
    positions: dict[str, float] = field(default_factory=dict)
    unrealized: float | None = None

    @property
    def total(self) -> float:
        return self.realized + (self.unrealized or 0.0)


@dataclass
class Rejection:
    wall_ns: int
    strategy: str
    order: str
    symbol: str
    status: str
    code: str
    reason: str


@dataclass
class AlertRow:
    wall_ns: int
    severity: str
    kind: str
    source: str
    message: str


@dataclass
class ControlRow:
    wall_ns: int
    kind: str
    source: str
    scope: str
    summary: str


@dataclass
class DayData:
    """Everything the report shows about one trading day (see module docstring)."""

    day: str
    start_s: float
    end_s: float
    zone: str
    strategies: list[StrategyDay] = field(default_factory=list)
    fills: list[StoredFill] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    alerts: list[AlertRow] = field(default_factory=list)
    controls: list[ControlRow] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def rejections_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rejections:
            out[r.code] = out.get(r.code, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def _ro(path: Path) -> sqlite3.Connection | None:
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.execute("PRAGMA busy_timeout = 5000")
    return db


def reason_code(status: str, reason: str, error_code: int | None) -> str:
    """``risk.max_order_quantity`` from ``risk.max_order_quantity: ...``; ``IB 201`` for IB's refusals."""
    if status == "Inactive" or (error_code and status not in ("RiskRejected", "GatewayRejected")):
        return f"IB {error_code}" if error_code else "IB (no code)"
    head = reason.split(":", 1)[0].strip()
    return head if head and " " not in head else (status if not error_code else f"IB {error_code}")


def _books(store: BookStore, day: str, samples: list[Sample]) -> list[StrategyDay]:
    fills = store.day_fills(day)
    ledger = Ledger()
    ledger.start_day(store.openings(day), fills, store.commissions_of([f.exec_key for f in fills]))
    last = samples[-1].strategies if samples else {}
    commissions: dict[str, float] = {}
    for key, f in ledger.fills.items():
        report = ledger.commissions.get(key)
        if report is not None:
            who = strategy_of(f.order_ref, f.strategy_id)
            commissions[who] = commissions.get(who, 0.0) + (usable(report.commission) or 0.0)
    out = []
    for strategy in sorted(ledger.books):
        books = ledger.books[strategy]
        sd = StrategyDay(strategy)
        for book in books.values():
            sd.realized += book.realized_today
            sd.fills += book.fills
            if book.quantity:
                sd.positions[display_name(book.instrument)] = book.quantity
        sd.commissions = commissions.get(strategy, 0.0)
        if strategy in last:
            sd.unrealized = last[strategy].get("pnl", 0.0) - last[strategy].get("realized", 0.0)
        if sd.fills or sd.positions or sd.realized:
            out.append(sd)
    return out


def load_day(cfg: KhazadConfig, day: str) -> DayData:
    days = TradingDay.from_spec(cfg.portfolio.trading_day)
    start_s, end_s = days.bounds(day)
    data = DayData(day=day, start_s=start_s, end_s=end_s, zone=str(days.tz))
    lo, hi = int(start_s * 1e9), int(end_s * 1e9)
    store_path = cfg.path(cfg.portfolio.store)
    if store_path.exists():
        store = BookStore(store_path, readonly=True)
        try:
            data.samples = store.samples(day)
            data.fills = store.query_fills(days=(day, day))
            data.strategies = _books(store, day, data.samples)
        finally:
            store.close()
    else:
        data.missing.append(f"portfolio store {store_path}")
    journal = _ro(cfg.path(cfg.orders.journal))
    if journal is None:
        data.missing.append(f"order journal {cfg.path(cfg.orders.journal)}")
    else:
        try:
            rows = journal.execute(
                "SELECT updated_wall_ns, strategy_id, client_order_id, symbol, status, reason, error_code FROM orders "
                f"WHERE created_wall_ns >= ? AND created_wall_ns < ? AND (status IN ({','.join('?' * 3)}) OR "
                f"(error_code IS NOT NULL AND error_code NOT IN ({','.join('?' * len(NOT_REJECTIONS))}) "
                "AND filled = 0)) ORDER BY updated_wall_ns",
                (lo, hi, *REJECTED_STATUSES, *NOT_REJECTIONS),
            ).fetchall()
        finally:
            journal.close()
        data.rejections = [
            Rejection(w, s, c, sym, st, reason_code(st, reason or "", code), reason or "")
            for w, s, c, sym, st, reason, code in rows
        ]
    audit = _ro(cfg.path(cfg.monitor.audit_db))
    if audit is None:
        data.missing.append(f"audit file {cfg.path(cfg.monitor.audit_db)}")
    else:
        try:
            data.alerts = [
                AlertRow(*r)
                for r in audit.execute(
                    "SELECT wall_ns, severity, kind, source, message FROM alerts WHERE wall_ns >= ? AND wall_ns < ? "
                    "ORDER BY wall_ns",
                    (lo, hi),
                ).fetchall()
            ]
            data.controls = [
                ControlRow(*r)
                for r in audit.execute(
                    f"SELECT wall_ns, kind, source, scope, summary FROM audit WHERE wall_ns >= ? AND wall_ns < ? "
                    f"AND kind IN ({','.join('?' * len(CONTROL_KINDS))}) ORDER BY wall_ns",
                    (lo, hi, *CONTROL_KINDS),
                ).fetchall()
            ]
        except sqlite3.OperationalError as exc:  # an audit file from before the alerts table
            data.missing.append(f"audit alerts ({exc})")
        finally:
            audit.close()
    return data


def as_json(data: DayData) -> dict[str, Any]:
    """The day's figures as plain data (``khazad report --json``, tests)."""
    return json.loads(
        json.dumps(
            {
                "day": data.day,
                "strategies": [vars(s) | {"total": s.total} for s in data.strategies],
                "fills": len(data.fills),
                "samples": len(data.samples),
                "rejections_by_reason": data.rejections_by_reason(),
                "alerts": len(data.alerts),
                "controls": [vars(c) for c in data.controls],
                "missing": data.missing,
            },
            default=str,
        )
    )
