"""The operator CLI (``khazad kill|resume|status|orders|positions|account``) against scripted fake services.

The kill tests run the real entry point in a separate process (``python -m cli``), as an operator would."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bus import topics
from bus.messages import (
    AccountReply,
    Ack,
    ActorHealth,
    Alert,
    CancelReport,
    GatewayStatus,
    GetPositions,
    GetStatus,
    GetSystemStatus,
    Instrument,
    Kill,
    ListOrders,
    OrderListReply,
    OrderView,
    PortfolioSnapshot,
    Position,
    PositionsReply,
    Rejected,
    Resume,
    ServiceStatus,
    StatusChange,
    SystemStatusReply,
)
from cli.main import build_parser, main
from tests.support.builders import order
from tests.support.clients import publisher, sync_subscriber
from tests.support.config import REPO

COMMANDS = ["kill", "resume", "status", "orders", "positions", "account"]
#: Bound for one CLI subprocess (it has its own timeouts well inside this).
CLI_TIMEOUT_S = 30.0


def khazad(config: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cli", "--config", str(config), *args], capture_output=True,
                          text=True, timeout=CLI_TIMEOUT_S, cwd=REPO)
    return proc, time.monotonic() - start


def cancel_report(kill: Kill, *, remaining: int = 0, refs: tuple[str, ...] = ()) -> CancelReport:
    return CancelReport(command_id=kill.kill_id, scope=kill.scope, trading_state="HALTED", epoch=7, cancelled=3,
                        remaining=remaining, remaining_order_refs=list(refs), elapsed_ms=12.5,
                        confirmed=remaining == 0)


# ---------------------------------------------------------------------------------------------------------------
# help and argument handling
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command_exits_zero(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: khazad {command}" in out and "--json" in out


def test_top_level_help_lists_every_command_and_keeps_sim(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS + ["sim"]:
        assert command in out
    assert build_parser().parse_args(["sim", "--port", "1"]).sim_args == ["--port", "1"]


def test_kill_requires_a_reason(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["kill"])
    assert info.value.code == 2 and "--reason" in capsys.readouterr().err


def test_kill_with_malformed_scope_is_not_sent(config_path, fakes, capsys) -> None:
    gw = fakes("gateway", lambda body: None)
    code = main(["--config", str(config_path), "kill", "--scope", "everything", "--reason", "x"])
    assert code == 4
    assert "KILL NOT SENT" in capsys.readouterr().err
    assert gw.requests == []


def test_bad_config_exits_78_and_says_the_kill_was_not_sent(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway]\nport = 'x'\n")
    assert main(["--config", str(bad), "kill", "--reason", "x"]) == 78
    err = capsys.readouterr().err
    assert "gateway.port" in err and "KILL NOT SENT" in err


# ---------------------------------------------------------------------------------------------------------------
# kill
# ---------------------------------------------------------------------------------------------------------------


def test_kill_with_gateway_unreachable_exits_2_in_bounded_time(config_path, fakes, proxy) -> None:
    risk = fakes("risk", lambda body: Ack(detail="halted"))
    proc, elapsed = khazad(config_path, "kill", "--reason", "test: gateway down", "--timeout", "0.5",
                           "--retries", "1")
    assert proc.returncode == 2, proc.stderr
    assert "KILL NOT CONFIRMED" in proc.stderr and "gateway did not answer" in proc.stderr
    assert elapsed < 10.0
    (kill,) = risk.of_type(Kill)  # the policy side still got it
    assert kill.reason == "test: gateway down" and kill.origin.startswith("cli@")


def test_kill_with_everything_down_still_exits_in_bounded_time(config_path) -> None:
    proc, elapsed = khazad(config_path, "kill", "--reason", "all down", "--timeout", "0.3", "--retries", "0",
                           "--json")
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)
    assert doc["confirmed"] is False and doc["gateway"]["status"] == "unreachable"
    assert doc["risk"]["status"] == "unreachable" and doc["bus"]["status"] == "unconfirmed"
    assert elapsed < 10.0


def test_kill_confirmed_by_gateway_exits_0_reaches_risk_and_the_bus(config_path, cfg, fakes, proxy, zctx) -> None:
    gw = fakes("gateway", lambda body: cancel_report(body) if isinstance(body, Kill) else None)
    risk = fakes("risk", lambda body: Ack(detail="halted"))
    watcher = sync_subscriber(zctx, cfg, [topics.KILL], name="kill-watch")
    try:
        from bus.codec import Stamper

        pub = publisher(zctx, cfg, Stamper("kill-watch-pub"))
        watcher.wait_ready(pub)
        pub.close()
        proc, _ = khazad(config_path, "kill", "--scope", "strategy:s1", "--reason", "runaway s1", "--json")
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        msg = watcher.recv(5)
    finally:
        watcher.close()
    (sent,) = gw.of_type(Kill)
    assert sent.scope == "strategy:s1" and sent.reason == "runaway s1" and sent.origin.startswith("cli@")
    assert [k.kill_id for k in risk.of_type(Kill)] == [sent.kill_id]
    assert msg is not None and isinstance(msg[1].body, Kill) and msg[1].body.kill_id == sent.kill_id
    assert doc["confirmed"] is True and doc["exit_code"] == 0
    assert doc["command"]["kill_id"] == sent.kill_id
    assert doc["gateway"]["status"] == "confirmed" and doc["gateway"]["reply"]["remaining"] == 0
    assert doc["risk"]["ok"] is True and doc["bus"]["status"] == "broadcast"
    assert doc["warnings"] == []


def test_kill_with_orders_remaining_exits_3_and_names_them(config_path, fakes, proxy, capsys) -> None:
    fakes("gateway", lambda body: cancel_report(body, remaining=2, refs=("s1/a", "s1/b")))
    fakes("risk", lambda body: Ack())
    code = main(["--config", str(config_path), "kill", "--reason", "x"])
    captured = capsys.readouterr()
    assert code == 3
    assert "KILL NOT CONFIRMED" in captured.err and "s1/a" in captured.err and "REMAINING 2" in captured.err


def test_kill_refused_by_gateway_exits_4(config_path, fakes, proxy, capsys) -> None:
    fakes("gateway", lambda body: Rejected(code="unauthorized", reason="anonymous may not send kill"))
    fakes("risk", lambda body: Ack())
    assert main(["--config", str(config_path), "kill", "--reason", "x"]) == 4
    assert "refused" in capsys.readouterr().err


def test_kill_confirmed_but_risk_down_exits_0_with_a_warning(config_path, fakes, proxy, capsys) -> None:
    fakes("gateway", cancel_report)
    assert main(["--config", str(config_path), "kill", "--reason", "x", "--timeout", "1"]) == 0
    captured = capsys.readouterr()
    assert "KILL CONFIRMED" in captured.out
    assert "warning: risk governor did not acknowledge" in captured.err


# ---------------------------------------------------------------------------------------------------------------
# resume
# ---------------------------------------------------------------------------------------------------------------


def test_resume_acknowledged_by_gateway_and_risk_exits_0(config_path, cfg, fakes, proxy, capsys) -> None:
    gw = fakes("gateway", lambda body: Ack(detail="ACTIVE"))
    risk = fakes("risk", lambda body: Ack(detail="ACTIVE"))
    assert main(["--config", str(config_path), "resume", "--scope", "symbol:AAPL", "--reason", "fixed",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["resumed"] is True and doc["bus"]["status"] == "broadcast"
    for svc in (gw, risk):
        (r,) = svc.of_type(Resume)
        assert r.scope == "symbol:AAPL" and r.reason == "fixed"


def test_resume_with_risk_unreachable_exits_2(config_path, fakes, proxy, capsys) -> None:
    fakes("gateway", lambda body: Ack())
    assert main(["--config", str(config_path), "resume", "--reason", "x", "--timeout", "0.3"]) == 2
    assert "RESUME NOT CONFIRMED" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------------------------


def test_status_from_monitor_renders_table_and_json(config_path, fakes, capsys) -> None:
    reply = SystemStatusReply(actors=[ActorHealth(name="gateway", alive=True, state="RUNNING", pid=42,
                                                  last_beat_age_s=0.1),
                                      ActorHealth(name="risk", alive=False, state="RUNNING", last_beat_age_s=9.0)],
                              connection="READY", trading_state="HALTED", epoch=3,
                              alerts=[Alert(kind="actor_dead", severity="critical", message="risk is dead")])
    mon = fakes("monitor", lambda body: reply)
    assert main(["--config", str(config_path), "status"]) == 1  # risk is dead
    out = capsys.readouterr().out
    assert "HALTED" in out and "READY" in out and "gateway" in out and "risk is dead" in out
    assert main(["--config", str(config_path), "status", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["source"] == "monitor" and doc["healthy"] is False and doc["trading_state"] == "HALTED"
    assert [a["name"] for a in doc["actors"]] == ["gateway", "risk"]
    assert len(mon.of_type(GetSystemStatus)) == 2


def test_status_falls_back_to_services_when_monitor_is_down(config_path, fakes, proxy, capsys) -> None:
    fakes("gateway", lambda body: GatewayStatus(mode="sim", connection="READY", trading_state="ACTIVE", epoch=1,
                                                open_orders=2) if isinstance(body, GetStatus) else None)
    fakes("orders", lambda body: ServiceStatus(actor="orders", state="RUNNING", detail={"working": "2"}))
    code = main(["--config", str(config_path), "status", "--json", "--timeout", "0.5"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    assert doc["source"] == "direct" and doc["connection"] == "READY" and doc["trading_state"] == "ACTIVE"
    assert sorted(doc["unreachable"]) == ["monitor", "portfolio", "risk"]
    alive = {a["name"]: a["alive"] for a in doc["actors"]}
    assert alive == {"proxy": True, "gateway": True, "risk": False, "orders": True, "portfolio": False,
                     "monitor": False}


# ---------------------------------------------------------------------------------------------------------------
# orders / positions / account
# ---------------------------------------------------------------------------------------------------------------


def _order(coid: str, status: str) -> OrderView:
    return OrderView(spec=order(coid=coid, limit=100.0), status=status, is_live=True, remaining=10, ib_order_id=5, perm_id=99,
                     history=[StatusChange(status="Received", wall_ns=1), StatusChange(status=status, wall_ns=2)],
                     created_wall_ns=time.time_ns())


def test_orders_lists_with_filters_as_table_and_json(config_path, fakes, capsys) -> None:
    om = fakes("orders", lambda body: OrderListReply(orders=[_order("s1-abc", "Submitted")]))
    assert main(["--config", str(config_path), "orders"]) == 0
    out = capsys.readouterr().out
    assert "s1-abc" in out and "Submitted" in out and "AAPL" in out
    assert main(["--config", str(config_path), "orders", "--all", "--strategy", "s1", "--symbol", "AAPL",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["filter"] == "all" and doc["orders"][0]["spec"]["client_order_id"] == "s1-abc"
    assert doc["orders"][0]["history"][-1]["status"] == "Submitted"
    first, second = om.of_type(ListOrders)
    assert (first.filter, first.strategy_id, first.symbol) == ("open", None, None)
    assert (second.filter, second.strategy_id, second.symbol) == ("all", "s1", "AAPL")


def test_orders_with_order_manager_down_exits_2(config_path, capsys) -> None:
    assert main(["--config", str(config_path), "orders", "--timeout", "0.2"]) == 2
    assert "orders unreachable" in capsys.readouterr().err


def test_positions_and_account_from_portfolio(config_path, fakes, capsys) -> None:
    pos = Position(account="DU1234567", instrument=Instrument(symbol="AAPL"), quantity=-10, avg_cost=101.25,
                   market_price=100.0, unrealized_pnl=12.5)

    def portfolio(body: Any) -> Any:
        if isinstance(body, GetPositions):
            return PositionsReply(positions=[pos])
        return AccountReply(snapshot=PortfolioSnapshot(account="DU1234567", currency="USD", net_liquidation=1e6,
                                                       positions=[pos], strategy_pnl={"s1": 12.5}))

    fakes("portfolio", portfolio)
    assert main(["--config", str(config_path), "positions", "--strategy", "s1"]) == 0
    out = capsys.readouterr().out
    assert "AAPL" in out and "-10" in out
    assert main(["--config", str(config_path), "positions", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["positions"][0]["quantity"] == -10
    assert main(["--config", str(config_path), "account"]) == 0
    out = capsys.readouterr().out
    assert "DU1234567" in out and "1,000,000.00" in out and "s1" in out
    assert main(["--config", str(config_path), "account", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["account"]["net_liquidation"] == 1e6


def test_positions_refused_exits_4(config_path, fakes, capsys) -> None:
    fakes("portfolio", lambda body: Rejected(code="not_ready", reason="portfolio reconciling"))
    assert main(["--config", str(config_path), "positions"]) == 4
    assert "not_ready" in capsys.readouterr().err
