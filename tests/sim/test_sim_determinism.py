"""Same seed + same requests => byte-identical protocol traces."""

from __future__ import annotations

from pathlib import Path

from sim.testing import running_sim
from tests.sim.sim_drivers import make_driver


def run_scenario(seed: int, trace: Path, client_name: str = "ib_insync") -> str:
    """A scripted session; each step waits for its answer before the clock moves."""
    with running_sim(seed=seed, trace=str(trace)) as sim:
        client = make_driver(client_name)
        client.connect(sim.host, sim.port, 1)
        try:
            assert client.qualify("AAPL")
            req = client.subscribe("AAPL")
            client.wait(lambda: client.tick_count(req) > 0)
            sim.advance(2.0)
            quote = sim.state()["quotes"]["AAPL"]
            client.wait(lambda: client.quote(req) == (quote["bid"], quote["ask"]))
            mkt = client.place("AAPL", "BUY", 300, order_ref="det-mkt")
            lmt = client.place("AAPL", "SELL", 100, "LMT", lmt=250.0, order_ref="det-lmt")
            client.wait(lambda: client.statuses(lmt)[-1:] == ["Submitted"]
                        and client.statuses(mkt)[-1:] == ["Submitted"])
            sim.advance(1.0)
            client.wait(lambda: client.statuses(mkt)[-1:] == ["Filled"] and client.commissions(mkt))
            client.modify(lmt, lmt=249.0)
            client.wait(lambda: client.modification_acked(lmt))
            client.cancel(lmt)
            client.wait(lambda: client.statuses(lmt)[-1:] == ["Cancelled"])
            bars = client.history("MSFT", "1 D", "5 mins")
            assert bars
            client.unsubscribe(req)
            sim.wait_for(lambda s: not s["clients"][0]["mktDataSubscriptions"])
            sim.advance(1.0)
        finally:
            client.disconnect()
        sim.wait_for(lambda s: not s["clients"])
    return trace.read_text()


def test_same_seed_gives_byte_identical_traces(tmp_path, clientlog):
    clientlog.allow(r"Error 202")
    first = run_scenario(7, tmp_path / "a.trace")
    second = run_scenario(7, tmp_path / "b.trace")
    assert first == second
    lines = first.splitlines()
    assert len(lines) > 100
    assert any(" < c1 placeOrder |" in line for line in lines)
    assert any(" > c1 execDetails |" in line for line in lines)
    assert any(" > c1 tickPrice |" in line for line in lines)
    # no ephemeral ports and no wall-clock dates in the trace
    assert "2026" not in first and "127.0.0.1" not in first


def test_different_seed_gives_different_market(tmp_path, clientlog):
    clientlog.allow(r"Error 202")
    a = run_scenario(7, tmp_path / "a.trace")
    b = run_scenario(8, tmp_path / "b.trace")
    ticks_a = [line for line in a.splitlines() if "tickPrice" in line]
    ticks_b = [line for line in b.splitlines() if "tickPrice" in line]
    assert ticks_a != ticks_b


def test_ibapi_session_is_deterministic_too(tmp_path):
    first = run_scenario(3, tmp_path / "a.trace", "ibapi")
    second = run_scenario(3, tmp_path / "b.trace", "ibapi")
    assert first == second
