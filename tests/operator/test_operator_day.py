"""An operator's day with the whole system as an operator runs it (run_all.py: supervisord, every actor, the TWS
simulator) and two strategies on the SDK: per-strategy books across a portfolio restart, an execution correction
and a day roll; drift against IB reported per strategy; ``khazad fills`` in every format compared with what the
simulator executed; ``khazad report`` rendered in headless Chromium; the Grafana dashboard's queries against the
monitor's metrics. One system start is shared; the tests run in file order (the day roll and the drift are last).

The trading day is made to end ROLL_AFTER_S after the config is written ("HH:MM:SS UTC"), so the roll happens
during this module; ground truth is the simulator's own state."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bus import topics
from bus.messages import (
    AccountReply,
    Alert,
    GetAccount,
    GetPositions,
    PositionsReply,
    ReconciliationReport,
)
from cli import charts
from cli.report_html import CHART_SLOTS, PAGE_WIDTH_PX
from launch.xmlrpc import process_infos
from sdk import KhazadClient, OrderRejected
from tests.support.clients import sync_subscriber
from tests.support.config import REPO
from tests.support.operator_day import (
    khazad,
    metric_names,
    non_white_fraction,
    pixels_near,
    screenshot,
)
from tests.support.sinks import HttpSink
from tests.support.system import System, running_system
from tests.support.waiting import eventually

ROLL_AFTER_S = 150.0
CONVERGE_S = 45.0
ORDER_TIMEOUT_S = 20.0
pytestmark = pytest.mark.timeout(300)
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "khazad.json"

STATE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def hooks() -> Iterator[HttpSink]:
    sink = HttpSink()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, hooks: HttpSink) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("operator")
    roll = (datetime.now(UTC) + timedelta(seconds=ROLL_AFTER_S)).strftime("%H:%M:%S")
    STATE["roll_spec"] = f"{roll} UTC"
    extra = f"""
[strategy]
enabled = false

[portfolio]
reconcile_interval_s = 1.0
sample_interval_s = 0.5
trading_day = "{roll} UTC"

[[monitor.alert_routes]]
kind = "webhook"
name = "ops"
url = "{hooks.url('/ops')}"
"""
    with running_system(tmp, extra=extra) as s:
        yield s


def snapshot(system: System):
    reply = system.call("portfolio", GetAccount())
    assert isinstance(reply, AccountReply), reply
    return reply.snapshot


def books(system: System, strategy: str) -> dict[str, tuple[float, float, float]]:
    reply = system.call("portfolio", GetPositions(strategy_id=strategy))
    assert isinstance(reply, PositionsReply), reply
    return {p.instrument.symbol: (p.quantity, round(p.avg_cost, 6), round(p.realized_pnl or 0.0, 6))
            for p in reply.positions}


def market(c: KhazadClient, symbol: str, side: str, qty: float):
    def place():
        try:
            return c.place_market_order(symbol, side, qty)
        except OrderRejected as exc:  # risk has not seen the gateway's first snapshot yet (just after start)
            if exc.code != "risk.not_ready":
                raise
            return None
    placed = eventually(place, CONVERGE_S, message="risk ready to approve")
    done = c.wait_for_order(placed.spec.client_order_id, "done", timeout=ORDER_TIMEOUT_S)
    assert done.status == "Filled", [h.status for h in done.history]
    return done


def live_executions(system: System) -> list[dict[str, Any]]:
    return [e for e in system.sim()["executions"] if not e["supersededBy"]]


# ---------------------------------------------------------------------------------------------------------------


def test_two_strategies_trade_and_the_portfolio_books_each(system):
    with KhazadClient("alpha", config=system.cfg) as a, KhazadClient("beta", config=system.cfg) as b:
        market(a, "AAPL", "BUY", 10)
        market(a, "AAPL", "SELL", 4)
        market(b, "MSFT", "BUY", 5)

    def booked():
        alpha, beta = books(system, "alpha"), books(system, "beta")
        return alpha.get("AAPL", (0,))[0] == 6 and beta.get("MSFT", (0,))[0] == 5 and (alpha, beta)
    alpha, beta = eventually(booked, CONVERGE_S, message="both strategies' books at the portfolio")
    STATE["day1"] = snapshot(system).trading_day
    assert STATE["day1"]
    buy = next(e for e in live_executions(system) if e["orderRef"].startswith("alpha/") and e["side"] == "BOT")
    assert alpha["AAPL"][1] == pytest.approx(buy["price"])  # average cost = the buy's price
    STATE["before_restart"] = {"alpha": alpha, "beta": beta}


def test_a_portfolio_restart_keeps_every_strategys_books(system):
    pid = process_infos(system.rpc)["portfolio"]["pid"]
    os.kill(pid, signal.SIGKILL)

    def restarted():
        info = process_infos(system.rpc)["portfolio"]
        return info["statename"] == "RUNNING" and info["pid"] != pid

    eventually(restarted, CONVERGE_S, message="supervisord restarted the portfolio")
    eventually(lambda: snapshot(system).reconciled, CONVERGE_S, message="restarted portfolio reconciled")
    after = {s: books(system, s) for s in ("alpha", "beta")}
    assert after == STATE["before_restart"]
    assert snapshot(system).trading_day == STATE["day1"]


def test_a_correction_replaces_the_execution_everywhere(system):
    buy = next(e for e in live_executions(system) if e["orderRef"].startswith("alpha/") and e["side"] == "BOT")
    new_price = round(buy["price"] - 1.25, 2)
    corrected = system.sim_call("correct_execution", exec_id=buy["execId"], price=new_price)
    STATE["corrected"] = (buy["execId"], corrected["execId"] if isinstance(corrected, dict) else None, new_price)
    eventually(lambda: books(system, "alpha").get("AAPL", (0, 0))[1] == pytest.approx(new_price), CONVERGE_S,
               message="alpha's average cost follows the corrected price")
    assert books(system, "alpha")["AAPL"][0] == 6


def _sim_fills(system: System, strategy: str | None = None) -> set[tuple]:
    return {(e["execId"], "BUY" if e["side"] == "BOT" else "SELL", e["shares"], round(e["price"], 4), e["orderRef"])
            for e in live_executions(system) if strategy is None or e["orderRef"].startswith(f"{strategy}/")}


def _rows(rows: list[dict[str, Any]]) -> set[tuple]:
    return {(r["exec_id"], r["side"], float(r["quantity"]), round(float(r["price"]), 4), r["order_ref"])
            for r in rows}


def test_fills_export_in_every_format_is_what_the_simulator_executed(system, tmp_path):
    expected = _sim_fills(system)
    assert len(expected) == 3

    def exported():
        out = khazad(system.config_path, "fills", "--format", "json")
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        return _rows(rows) == expected and all(r["commission"] is not None for r in rows) and rows
    rows = eventually(exported, CONVERGE_S, message="JSON export equal to the simulator's executions")
    first_id, _, new_price = STATE["corrected"]
    (fixed,) = [r for r in rows if r["first_exec_id"] == first_id]
    assert fixed["corrected"] is True and fixed["exec_id"] != first_id and fixed["price"] == pytest.approx(new_price)
    assert sum(r["corrected"] for r in rows) == 1
    assert {r["strategy"] for r in rows} == {"alpha", "beta"}

    out = khazad(system.config_path, "fills", "--format", "csv", "--strategy", "alpha")
    assert out.returncode == 0, out.stderr
    csv_rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert _rows(csv_rows) == _sim_fills(system, "alpha")
    assert {r["corrected"] for r in csv_rows} == {"True", "False"}

    import pyarrow.parquet as pq

    target = tmp_path / "fills.parquet"
    out = khazad(system.config_path, "fills", "--format", "parquet", "--output", str(target),
                 "--since", STATE["day1"])
    assert out.returncode == 0, out.stderr
    table = pq.read_table(target)
    assert _rows(table.to_pylist()) == expected
    assert str(table.schema.field("quantity").type) == "double" and str(table.schema.field("corrected").type) == "bool"

    # without pyarrow: a clear error naming the extra
    shadow = tmp_path / "shadow"
    (shadow / "pyarrow").mkdir(parents=True)
    (shadow / "pyarrow" / "__init__.py").write_text("raise ImportError('pyarrow is not installed here')\n")
    env = dict(os.environ, PYTHONPATH=str(shadow))
    out = khazad(system.config_path, "fills", "--format", "parquet", "--output", str(tmp_path / "x.parquet"),
                 env=env)
    assert out.returncode == 5 and "khazad[parquet]" in out.stderr


def test_rejections_and_a_kill_are_recorded(system):
    with KhazadClient("alpha", config=system.cfg) as a:
        with pytest.raises(OrderRejected) as risk:
            a.place_market_order("AAPL", "BUY", 20_000)  # over risk.limits.max_order_quantity
        assert risk.value.code.startswith("risk.")
        STATE["risk_code"] = risk.value.code
        system.sim_call("reject_next_orders", n=1, code=201)
        placed = a.place_market_order("AAPL", "BUY", 1)
        done = a.wait_for_order(placed.spec.client_order_id, "done", timeout=ORDER_TIMEOUT_S)
        assert done.status in ("Inactive", "Cancelled", "GatewayRejected"), done.status
    out = khazad(system.config_path, "kill", "--reason", "operator test: end of day")
    assert out.returncode == 0, out.stdout + out.stderr
    eventually(lambda: system.status().trading_state == "HALTED", CONVERGE_S, message="halted after the kill")


def test_alerts_reach_the_configured_route(system, hooks):
    posted = eventually(lambda: [p for p in hooks.rec.posts("/ops") if p["kind"] == "kill"], CONVERGE_S,
                        message="the kill's alert on the webhook route")
    assert posted[0]["severity"] == "warning" and "operator test" in posted[0]["message"]


def test_the_report_renders_every_chart_in_headless_chromium(system, tmp_path):
    page = tmp_path / "report.html"

    def rendered():
        out = khazad(system.config_path, "report", "--day", STATE["day1"], "--output", str(page), "--json")
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        # wait until the kill's audit rows and a few samples after the trades are in
        return doc["samples"] >= 4 and any(c["kind"] == "kill" for c in doc["controls"]) and doc
    doc = eventually(rendered, CONVERGE_S, message="a report with the kill and samples")
    assert {s["strategy"] for s in doc["strategies"]} >= {"alpha", "beta"}
    assert doc["fills"] == 3
    assert STATE["risk_code"] in doc["rejections_by_reason"] and "IB 201" in doc["rejections_by_reason"]
    text = page.read_text()
    for needle in ("P&amp;L per strategy", "alpha", "beta", STATE["risk_code"], "IB 201", "kill", "corrected",
                   "data:image/png;base64,"):
        assert needle in text, needle
    assert text.count("data:image/png;base64,") == 4

    png = tmp_path / "shot.png"
    height = max(top for _, _, top in CHART_SLOTS) + charts.CHART_PX[1] + 16
    screenshot(page, png, PAGE_WIDTH_PX, height, tmp_path / "chromium-profile")
    from PIL import Image

    shot = Image.open(png).convert("RGB")
    assert shot.size == (PAGE_WIDTH_PX, height)
    colours = {
        "equity": [charts.EQUITY_COLOUR],
        "pnl": [charts.strategy_colour(0), charts.strategy_colour(1)],
        "exposure": [charts.GROSS_COLOUR],
        "rejections": [charts.REJECT_COLOUR],
    }
    found = {}
    for name, left, top in CHART_SLOTS:
        region = shot.crop((left, top, left + charts.CHART_PX[0], top + charts.CHART_PX[1]))
        assert non_white_fraction(region) > 0.02, f"{name} chart region is blank"
        found[name] = {c: pixels_near(region, c) for c in sum(colours.values(), [])}
        for colour in colours[name]:
            assert found[name][colour] >= 80, (name, colour, found[name])
    # each plotted colour sits in its own chart (the page's layout is what the test thinks it is)
    assert found["rejections"][charts.EQUITY_COLOUR] < 20 and found["equity"][charts.REJECT_COLOUR] < 20
    if os.environ.get("KHAZAD_REPORT_SCREENSHOT"):  # docs/running.md's picture comes from here
        import shutil

        shutil.copy(png, os.environ["KHAZAD_REPORT_SCREENSHOT"])


def test_the_grafana_dashboard_queries_only_exported_metrics(system):
    import urllib.request

    scrape = urllib.request.urlopen(f"http://127.0.0.1:{system.cfg.monitor.metrics_port}/metrics",
                                    timeout=5).read().decode()
    exported = {line.split("{")[0].split(" ")[0] for line in scrape.splitlines() if line and not line.startswith("#")}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    used = set().union(*(metric_names(e) for e in exprs))
    assert used and used <= exported, sorted(used - exported)
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("actors up", "ib connection", "trading state", "order", "rejections", "latenc", "gap", "p&l"):
        assert topic in titles, topic


def test_a_day_roll_keeps_carried_positions_with_their_owner(system):
    before = {s: books(system, s) for s in ("alpha", "beta")}
    day2 = eventually(lambda: snapshot(system).trading_day != STATE["day1"] and snapshot(system).trading_day,
                      ROLL_AFTER_S + CONVERGE_S, message="the trading day rolled")
    assert day2 > STATE["day1"]
    after = {s: books(system, s) for s in ("alpha", "beta")}
    assert after == before  # quantity, average cost and (lifetime) realized, each with its strategy
    snap = snapshot(system)
    assert snap.strategy_realized.get("alpha", 0.0) == 0.0  # nothing realized yet on the new day
    out = khazad(system.config_path, "fills", "--format", "json")
    assert out.returncode == 0 and json.loads(out.stdout) == []  # today's: none yet
    out = khazad(system.config_path, "fills", "--format", "json", "--since", STATE["day1"])
    assert len(json.loads(out.stdout)) == 3


def test_drift_against_ib_is_reported_per_strategy(system):
    import zmq

    ctx = zmq.Context()
    sub = sync_subscriber(ctx, system.cfg, [topics.alert("portfolio"), topics.recon("portfolio")],
                         name="test-drift")
    try:
        system.sim_call("reset")  # the account starts over at IB: positions no execution explains are gone

        def drift():
            got = sub.recv(0.5)
            return got is not None and isinstance(got[1].body, Alert) and got[1].body.kind == "portfolio_drift" and \
                got[1].body
        alert = eventually(drift, CONVERGE_S * 2, message="portfolio_drift alert")
        assert alert.detail["AAPL"] == "-6" and alert.detail["MSFT"] == "-5"
        assert alert.detail["books.alpha"] == "AAPL 6" and alert.detail["books.beta"] == "MSFT 5"

        def report():
            got = sub.recv(0.5)
            return got is not None and isinstance(got[1].body, ReconciliationReport) and not got[1].body.ok and \
                got[1].body
        rep = eventually(report, CONVERGE_S, message="a failed reconciliation report")
        assert rep.strategy_positions == {"alpha": {"AAPL": 6.0}, "beta": {"MSFT": 5.0}}
        assert rep.position_drift == {"AAPL": -6.0, "MSFT": -5.0}
    finally:
        sub.close()
        ctx.destroy(linger=0)
