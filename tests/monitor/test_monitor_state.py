"""The monitor's state machine, driven in-process (one class; its publisher is a recorder and its clock a
variable): liveness transitions alert once, control events are audited, counters, status and metrics text."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from actors.monitor.connection import NOT_READY_ALERT_S
from actors.monitor.actor import MonitorActor
from actors.monitor.audit import read_audit
from actors.monitor.liveness import STARTUP_GRACE_S
from bus import topics
from bus.heartbeat import LivenessTracker
from bus.messages import (
    Alert,
    ConnectionStateEvent,
    EmergencyCancel,
    FillEvent,
    GapReport,
    Heartbeat,
    Instrument,
    Kill,
    OrderStatusEvent,
    Resume,
    RiskDecisionEvent,
    TradingStateEvent,
)
from tests.support.builders import fill
from tests.support.config import cfg_of, write_config
from tests.support.doubles.publisher import PublishedLog


class Env:
    """What on_event reads from an envelope."""

    def __init__(self, body: Any, sender: str = "test", incarnation: int = 1) -> None:
        self.body = body
        self.sender = sender
        self.incarnation = incarnation
        self.seq = 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def monitor(tmp_path: Path):
    cfg = cfg_of(write_config(tmp_path))
    m = MonitorActor(cfg)
    m.publisher = PublishedLog()  # type: ignore[assignment]
    clock = Clock()
    m.liveness.tracker = LivenessTracker(cfg.bus.heartbeat_liveness, clock=clock)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(m.on_start())
    m.clock = clock  # type: ignore[attr-defined]
    m.loop = loop  # type: ignore[attr-defined]
    yield m
    loop.run_until_complete(m.on_stop())
    loop.close()


def feed(m: MonitorActor, body: Any, sender: str = "test", topic: str = "x", incarnation: int = 1) -> None:
    m.loop.run_until_complete(m.on_event(topic, Env(body, sender, incarnation)))


def beat(m: MonitorActor, name: str, pid: int = 100, incarnation: int = 1, detail: dict[str, str] | None = None) -> None:
    feed(m, Heartbeat(actor=name, pid=pid, interval_s=0.5, detail=detail or {}), sender=name,
         topic=topics.heartbeat(name), incarnation=incarnation)


def kinds(m: MonitorActor) -> list[str]:
    return [a.kind for a in m.publisher.alerts()]


def test_dead_actor_is_alerted_once_and_its_return_once(monitor):
    beat(monitor, "orders")
    monitor.sweep()
    monitor.clock.now += 1.0
    beat(monitor, "orders")
    monitor.clock.now += 1.6  # 3 beats of 0.5 s missed
    monitor.sweep()
    monitor.clock.now += 5
    monitor.sweep()
    assert kinds(monitor) == ["actor_dead"]
    dead = monitor.publisher.alerts()[0]
    assert dead.severity == "critical" and dead.detail["actor"] == "orders"
    health = {a.name: a for a in monitor.status().actors}
    assert not health["orders"].alive and health["orders"].state == "DEAD"
    beat(monitor, "orders", pid=101, incarnation=2)
    beat(monitor, "orders", pid=101, incarnation=2)
    assert kinds(monitor) == ["actor_dead", "actor_back"]
    assert [r.kind for r in monitor.audit.recent()] == ["actor_back", "alert", "actor_dead"]
    assert monitor.counters["deaths"] == 1


def test_fast_restart_between_sweeps_is_reported(monitor):
    beat(monitor, "risk", pid=10, incarnation=1)
    beat(monitor, "risk", pid=11, incarnation=2)
    assert kinds(monitor) == ["actor_restarted"]
    assert "pid 10 -> 11" in monitor.publisher.alerts()[0].message


def test_expected_actor_that_never_reports_is_alerted_once(monitor):
    monitor.started_mono -= STARTUP_GRACE_S + 1
    for name in monitor.expected:
        if name != "gateway":
            beat(monitor, name)
    monitor.sweep()
    monitor.sweep()
    assert kinds(monitor) == ["actor_missing"]
    assert {a.name: a.state for a in monitor.status().actors}["gateway"] == "NOT SEEN"


def test_control_events_are_audited_once(monitor):
    kill = Kill(kill_id="k-1", reason="fat finger", origin="ops@desk")
    feed(monitor, kill, sender="cli-1")
    feed(monitor, kill, sender="gateway")  # the same kill relayed: one row
    feed(monitor, EmergencyCancel(command_id="ec-1", reason="reject storm", origin="risk"), sender="risk")
    feed(monitor, Resume(reason="all clear", origin="ops@desk"), sender="cli-1")
    rows = read_audit(monitor.audit.path)
    assert [r.kind for r in reversed(rows)] == ["kill", "emergency_cancel", "resume"]
    assert rows[-1].detail["kill_id"] == "k-1" and rows[-1].source == "ops@desk" and rows[-1].summary == "fat finger"
    assert monitor.counters["kills"] == 1


def test_trading_state_changes_are_audited_and_older_epochs_ignored(monitor):
    feed(monitor, TradingStateEvent(scope="all", state="ACTIVE", epoch=1), sender="gateway")
    feed(monitor, TradingStateEvent(scope="all", state="HALTED", epoch=2, reason="kill"), sender="gateway")
    feed(monitor, TradingStateEvent(scope="all", state="ACTIVE", epoch=1), sender="gateway")  # stale
    feed(monitor, TradingStateEvent(scope="strategy:alpha", state="REDUCING", epoch=3), sender="risk")
    status = monitor.status()
    assert status.trading_state == "HALTED" and status.epoch == 3
    assert status.trading_states == {"gateway:all": "HALTED", "risk:strategy:alpha": "REDUCING"}
    assert kinds(monitor) == ["trading_halted", "trading_reducing"]
    assert [r.summary for r in reversed(monitor.audit.recent(kind="trading_state"))] == [
        "? -> ACTIVE", "ACTIVE -> HALTED: kill", "? -> REDUCING"]


def test_gateway_latch_is_read_from_its_heartbeats_and_the_epoch_is_the_authoritys(monitor):
    beat(monitor, "gateway", detail={"halted": "", "epoch": "0"})
    assert monitor.status().trading_states == {"gateway:all": "ACTIVE"}
    beat(monitor, "gateway", detail={"halted": "all,strategy:alpha", "epoch": "7"})
    feed(monitor, TradingStateEvent(scope="all", state="HALTED", epoch=3, cause="kill", kill_id="k1"), sender="risk")
    status = monitor.status()
    assert status.trading_states == {"gateway:all": "HALTED", "gateway:strategy:alpha": "HALTED", "risk:all": "HALTED"}
    assert status.trading_state == "HALTED" and status.epoch == 3  # the latch's own counter (7) is not the epoch
    beat(monitor, "gateway", detail={"halted": "", "epoch": "8"})
    feed(monitor, TradingStateEvent(scope="all", state="ACTIVE", epoch=4, cause="resume"), sender="risk")
    status = monitor.status()
    assert status.trading_states == {"gateway:all": "ACTIVE", "gateway:strategy:alpha": "ACTIVE", "risk:all": "ACTIVE"}
    assert status.trading_state == "ACTIVE" and status.epoch == 4


def test_connection_loss_and_return_are_alerted_and_audited(monitor):
    # not connected yet at start-up is not a loss; losing a READY link is
    for state in ("DISCONNECTED", "CONNECTING", "READY", "DISCONNECTED", "CONNECTING", "READY"):
        feed(monitor, ConnectionStateEvent(state=state, ib_code=1100 if state == "DISCONNECTED" else None))
    assert kinds(monitor) == ["gateway_disconnected", "gateway_reconnected"]
    assert monitor.counters["reconnects"] == 1
    assert len(monitor.audit.recent(kind="connection")) == 6
    assert monitor.status().connection == "READY"


def test_gateway_not_ready_for_long_is_alerted_once(monitor):
    feed(monitor, ConnectionStateEvent(state="CONNECTING", message="127.0.0.1:4002 refused"))
    now = monitor.connection.not_ready_since + NOT_READY_ALERT_S + 1
    monitor.sweep(now)
    monitor.sweep(now + 10)

    def gateway_alerts() -> list[Alert]:
        return [a for a in monitor.publisher.alerts() if a.kind.startswith("gateway")]
    assert [a.kind for a in gateway_alerts()] == ["gateway_not_ready"]
    assert "CONNECTING: 127.0.0.1:4002 refused" in gateway_alerts()[0].message
    feed(monitor, ConnectionStateEvent(state="READY"))
    monitor.sweep(now + 100)
    assert [a.kind for a in gateway_alerts()] == ["gateway_not_ready"]


def test_rejects_gaps_and_fills_are_counted(monitor):
    feed(monitor, RiskDecisionEvent(order_ref="alpha/1", approved=False, code="risk.max_order_quantity"))
    feed(monitor, RiskDecisionEvent(order_ref="alpha/2", approved=True, code="ok"))
    rejected = OrderStatusEvent(order_ref="alpha/3", status="Inactive", error_code=201, is_done=False)
    feed(monitor, rejected)
    feed(monitor, rejected)  # same order again: one reject
    feed(monitor, OrderStatusEvent(order_ref="alpha/4", status="Cancelled", error_code=202, is_done=True))
    for _ in range(3):
        feed(monitor, GapReport(subscriber="orders", publisher="gateway", topic=topics.fill("AAPL"), expected=5,
                                received=8, missed=3))
    f = fill(1, "BUY", 10, 100.0)
    feed(monitor, f)
    feed(monitor, f)  # replay: counted once
    s = monitor.status()
    assert s.rejects == 2 and s.gaps == 3
    assert s.counters["missed"] == 9 and s.counters["fills"] == 1
    assert [x.exec_id for x in s.recent_fills] == [f.exec_id]
    assert kinds(monitor) == ["bus_gap"]  # rate-limited per (publisher, topic)
    assert monitor.audit.recent(kind="risk_reject")[0].detail["code"] == "risk.max_order_quantity"


def test_metrics_text_has_the_system_state(monitor):
    beat(monitor, "gateway", detail={"halted": "all", "epoch": "2"})  # the gateway's latch
    feed(monitor, ConnectionStateEvent(state="READY"))
    feed(monitor, TradingStateEvent(scope="all", state="HALTED", epoch=4, cause="kill"), sender="risk")
    feed(monitor, FillEvent(exec_id="e1", exec_key="e1", order_ref="alpha/9", instrument=Instrument(symbol="AAPL"),
                            side="BUY", quantity=1, price=1.0))
    monitor.sweep()
    text = monitor.metrics.text()
    assert 'khazad_actor_up{actor="gateway"} 1.0' in text
    assert 'khazad_actor_up{actor="orders"} 0.0' in text
    assert 'khazad_gateway_connection_state{khazad_gateway_connection_state="READY"} 1.0' in text
    assert 'khazad_trading_state{scope="all",source="gateway",state="HALTED"} 1.0' in text
    assert 'khazad_trading_state{scope="all",source="risk",state="HALTED"} 1.0' in text
    assert 'khazad_fills_total{strategy="alpha"} 1.0' in text
    assert "khazad_trading_epoch 4.0" in text


def test_critical_alert_runs_the_operator_hook_with_the_alert_json(tmp_path):
    out = tmp_path / "hooked.jsonl"
    cfg = cfg_of(_with_monitor(tmp_path, f"alert_command = \"cat >> '{out}'; echo >> '{out}'\""))
    m = MonitorActor(cfg)
    m.publisher = PublishedLog()  # type: ignore[assignment]

    async def run() -> None:
        await m.on_start()
        m.raise_alert("something", "warning", "not hooked")
        m.raise_alert("actor_dead", "critical", "orders is not responding", actor="orders")
        assert m.router.drain(10)
        await m.on_stop()

    asyncio.run(run())
    (line,) = out.read_text().splitlines()
    payload = json.loads(line)
    assert payload["kind"] == "actor_dead" and payload["severity"] == "critical"
    assert payload["detail"] == {"actor": "orders"}


def _with_monitor(tmp_path: Path, line: str) -> Path:
    """write_config with one more line in its [monitor] table."""
    path = write_config(tmp_path)
    text = path.read_text().replace("[monitor]\n", f"[monitor]\n{line}\n")
    path.write_text(text)
    return path


def test_own_sequence_gap_is_reported_not_a_crash(monitor) -> None:
    # the monitor's subscriber calls the base Actor._on_gap(sender, topic, expected, received) when the monitor
    # itself misses messages (e.g. the proxy restarted): it must publish a GapReport, not die on a signature clash
    monitor._on_gap("gateway", topics.heartbeat("gateway"), 3, 7)
    gaps = [b for t, b in monitor.publisher.sent if isinstance(b, GapReport)]
    assert len(gaps) == 1 and gaps[0].missed == 4 and gaps[0].publisher == "gateway"
