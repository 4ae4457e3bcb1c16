"""``khazad top`` rendering: one frame of known data against a stored text snapshot, and the degraded frame when
services do not answer. (The dashboard against the running system is in tests/system.)

To accept an intended change of the layout: ``KHAZAD_UPDATE_SNAPSHOTS=1 pytest tests/monitor/test_top_render.py``
and review the diff of ``snapshots/top_once.txt``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bus import registry
from bus.messages import (
    ActorHealth,
    Alert,
    FillEvent,
    Instrument,
    OrderSpec,
    OrderView,
    PortfolioSnapshot,
    Position,
    SystemStatusReply,
)
from cli.top_data import Dashboard
from cli.top_render import render_text

SNAPSHOT = Path(__file__).parent / "snapshots" / "top_once.txt"
NOW = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
AAPL = Instrument(symbol="AAPL", con_id=265598)
MSFT = Instrument(symbol="MSFT", con_id=272093)


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def sample() -> Dashboard:
    actors = [ActorHealth(name=n, alive=True, state="RUNNING", pid=4100 + i, last_beat_age_s=0.1 * i,
                          detail={"rss_mb": f"{31 + i}.5"})
              for i, n in enumerate(registry.ACTOR_NAMES)]
    actors.append(ActorHealth(name="strategy.example", alive=False, state="DEAD", pid=4200, last_beat_age_s=4.2))
    fills = [FillEvent(exec_id=f"e{i}", exec_key=f"e{i}", order_ref=f"example/c{i}", instrument=AAPL,
                       side="BUY" if i % 2 else "SELL", quantity=10, price=190.0 + i / 100,
                       exec_time=f"20251231 23:59:{50 - i:02d}") for i in range(3)]
    alerts = [Alert(kind="actor_dead", severity="critical", message="strategy.example is not responding (pid 4200)",
                    source="monitor", wall_ns=int((NOW - 4) * 1e9)),
              Alert(kind="trading_halted", severity="warning", message="gateway: trading HALTED for strategy:beta",
                    source="monitor", wall_ns=int((NOW - 60) * 1e9))]
    status = SystemStatusReply(actors=actors, connection="READY", trading_state="ACTIVE", epoch=3, alerts=alerts,
                               gaps=0, rejects=2, recent_fills=fills)
    account = PortfolioSnapshot(
        account="DU1234567", currency="USD", net_liquidation=1_000_412.5, total_cash=981_000.0,
        buying_power=3_950_000.0, realized_pnl=-12.5, unrealized_pnl=425.0,
        positions=[Position(account="DU1234567", instrument=AAPL, quantity=100, avg_cost=189.5, market_price=190.2,
                            market_value=19_020.0, unrealized_pnl=70.0),
                   Position(account="DU1234567", instrument=MSFT, quantity=-20, avg_cost=420.0, market_price=402.25,
                            market_value=-8_045.0, unrealized_pnl=355.0)],
        strategy_pnl={"example": 57.5, "beta": 355.0}, strategy_realized={"example": -12.5, "beta": 0.0},
        reconciled=True)
    spec = OrderSpec(strategy_id="example", client_order_id="c7", instrument=AAPL, side="BUY", quantity=10,
                     order_type="LMT", limit_price=189.95)
    orders = [OrderView(spec=spec, status="Submitted", is_live=True)]
    return Dashboard(mode="sim", status=status, account=account, orders=orders, now_wall=NOW)


def test_dashboard_frame_matches_the_snapshot():
    text = render_text(sample(), width=120)
    if os.environ.get("KHAZAD_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text)
    assert text == SNAPSHOT.read_text(), "dashboard layout changed (see module docstring to accept it)"
    assert all(len(line) <= 120 for line in text.splitlines())


def test_dashboard_shows_what_is_unreachable_instead_of_failing():
    data = Dashboard(mode="paper", now_wall=NOW, errors={"monitor": "not answering", "portfolio": "not answering",
                                                          "orders": "not answering"})
    text = render_text(data)
    assert "monitor not answering" in text and "portfolio not answering" in text
    assert "order manager not answering" in text
    assert "unreachable: monitor (not answering), orders (not answering), portfolio (not answering)" in text
    assert "KHAZAD  paper mode" in text
