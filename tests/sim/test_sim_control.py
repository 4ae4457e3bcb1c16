"""The control API over HTTP, the ``python -m sim`` CLI and the test helpers."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time

import pytest

from sim.__main__ import main
from sim.control import ControlError, control_request
from sim.testing import running_sim, running_sim_process
from tests.sim.sim_drivers import RawClient

#: The CLI must exit within this many seconds of SIGTERM (brief: 2 s).
SIGTERM_EXIT_SECONDS = 2.0


def test_http_state_and_commands(sim):
    port = sim.control_port
    state = control_request(port, "state")
    assert state["account"]["account"] == "DU1234567"
    assert state["time"] == 1748872800.0
    result = control_request(port, "advance", {"seconds": 1.5})
    assert result["time"] == 1748872801.5
    assert control_request(port, "set_price", {"symbol": "MSFT", "bid": 400.0, "ask": 400.02})["bid"] == 400.0
    with pytest.raises(ControlError, match="unknown command"):
        control_request(port, "explode")
    with pytest.raises(ControlError, match="seconds"):
        control_request(port, "advance", {"secs": 1})
    with pytest.raises(ControlError, match="market_hours"):
        control_request(port, "market_hours", {"mode": "sometimes"})
    commands = control_request(port, "commands")
    for name in ("state", "drop_connections", "refuse_connections", "connectivity",
                 "reject_next_orders", "ack_delay", "drop_acks", "sticky_presubmitted",
                 "correct_execution", "pacing_limit", "set_price", "fill", "advance",
                 "market_hours", "reset"):
        assert name in commands


def test_http_rejects_bad_requests(sim):
    def raw(method: str, path: str, body: bytes = b"") -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", sim.control_port, timeout=5)
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        out = resp.status, json.loads(resp.read())
        conn.close()
        return out

    assert raw("POST", "/v1/advance", b"not json")[0] == 400
    assert raw("POST", "/v1/advance", b"[1, 2]")[0] == 400
    assert raw("GET", "/v1/advance")[0] == 405
    assert raw("GET", "/nowhere")[0] == 404
    status, body = raw("GET", "/v1/state")
    assert status == 200 and body["ok"] is True


def test_reset_starts_over(sim):
    raw = RawClient(sim.host, sim.port)
    raw.handshake(1)
    sim.advance(5)
    sim.reject_next_orders(2)
    sim.reset()
    raw.wait_closed()
    state = sim.state()
    assert state["orders"] == {} and state["clients"] == []
    assert state["faults"]["pending_rejections"] == 0
    assert state["steps"] == 0


def test_wait_for_wakes_on_server_side_changes(sim):
    def later() -> None:
        raw = RawClient(sim.host, sim.port)
        raw.handshake(42)
        raw.close()

    t = threading.Thread(target=later)
    t.start()
    state = sim.wait_for(lambda s: any(c["clientId"] == 42 for c in s["clients"] + s["closed_clients"]),
                         timeout=5, what="client 42")
    t.join()
    assert state
    with pytest.raises(TimeoutError):
        sim.wait_for(lambda s: False, timeout=0.2, what="never")


def test_chf_account_reports_in_its_base_currency(make_client):
    with running_sim(base_currency="CHF", account="DU7654321", starting_cash=500_000.0) as sim:
        client = make_client("ib_insync")
        client.connect(sim.host, sim.port, 1)
        values = client.account_values()
        assert client.accounts() == ["DU7654321"]
        assert values[("NetLiquidation", "CHF")] == "500000.00"
        h = client.place("AAPL", "BUY", 100, order_ref="usd-stock")
        client.wait(lambda: client.statuses(h)[-1:] == ["Submitted"])
        sim.advance(0.25)
        client.wait(lambda: client.statuses(h)[-1:] == ["Filled"] and client.commissions(h))
        state = sim.state()
        price = client.fills(h)[0][2]
        assert state["account"]["cash"] == {"CHF": 500_000.0, "USD": pytest.approx(-100 * price - 1.0)}
        truth = state["account"]["values"]["TotalCashValue"]
        usdchf = state["quotes"]["USD.CHF"]
        rate = (usdchf["bid"] + usdchf["ask"]) / 2  # the FX market's rate, as IB's moves
        assert truth == pytest.approx(500_000.0 + (-100 * price - 1.0) * rate)
        client.wait(lambda: client.account_values().get(("TotalCashValue", "CHF")) == f"{truth:.2f}",
                    what="converted cash")
        assert ("CashBalance", "USD") in client.account_values()
        client.disconnect()


def test_python_m_sim_runs_standalone_and_stops_on_sigterm():
    with running_sim_process(seed=7, currency="CHF") as proc:
        assert proc.port and proc.control_port
        raw = RawClient("127.0.0.1", proc.port)
        msgs = raw.handshake(1)
        assert ["15", "1", "DU1234567"] in msgs
        assert proc.call("advance", seconds=1.0)["time"] == 1748872801.0
        assert proc.state()["account"]["base_currency"] == "CHF"
        raw.close()
        # the CLI front-end of the control API
        out = subprocess.run([sys.executable, "-m", "sim", "ctl", "--control-port", str(proc.control_port),
                              "advance", "seconds=2"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["result"]["time"] == 1748872803.0
        bad = subprocess.run([sys.executable, "-m", "sim", "ctl", "--control-port", str(proc.control_port),
                              "fill", "perm_id=12345"], capture_output=True, text=True, timeout=30)
        assert bad.returncode == 1
        assert json.loads(bad.stdout)["ok"] is False
        started = time.monotonic()
        code = proc.stop()
        assert code == 0
        assert time.monotonic() - started < SIGTERM_EXIT_SECONDS
    assert "sim listening on 127.0.0.1:" in proc.stderr


def test_main_rejects_bad_arguments(capsys):
    assert main(["--account", "U123", "--port", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["--clock", "sundial"])
    assert main(["ctl", "--control-port", "1", "state"]) == 1  # nothing listens on port 1
    assert '"ok": false' in capsys.readouterr().out
