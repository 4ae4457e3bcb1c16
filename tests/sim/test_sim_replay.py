"""``python -m sim --replay FILE``: a recorded market drives quotes, trades,
bars and matching; the sample session ships with the simulator."""

from __future__ import annotations

import csv
import subprocess
import sys
from datetime import datetime
from importlib import resources
from pathlib import Path

from sim.testing import running_sim, running_sim_process
from tests.sim.sim_drivers import make_driver
from tests.sim.test_sim_clients import last_status

SAMPLE = str(resources.files("sim").joinpath("data", "sample_replay.csv"))


def recorded(symbol: str) -> list[dict]:
    with open(SAMPLE, newline="") as f:
        return [r for r in csv.DictReader(f) if r["symbol"] == symbol]


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_replay_streams_the_recorded_quotes_in_order_and_fills_at_a_recorded_price():
    rows = recorded("AAPL")
    with running_sim_process(replay=SAMPLE) as proc:
        state = proc.state()
        assert state["time"] == _epoch(rows[0]["time"])  # the clock starts with the recording
        assert state["replay"]["instruments"] == ["AAPL", "MSFT", "SPY"]
        client = make_driver("ib_insync")
        try:
            client.connect(proc.host, proc.port, 1)
            req = client.subscribe("AAPL")
            seen = []
            for row in rows[:6]:
                proc.call("advance", seconds=max(0.0, _epoch(row["time"]) - proc.state()["time"]))
                want = (float(row["bid"]), float(row["ask"]))
                client.wait(lambda want=want: client.quote(req) == want, what=f"quote {row['time']}")
                seen.append(client.quote(req))
            assert seen == [(float(r["bid"]), float(r["ask"])) for r in rows[:6]]
            h = client.place("AAPL", "BUY", 100, order_ref="replay-buy")
            client.wait(lambda: last_status(client, h) == "Submitted", what="Submitted")
            proc.call("advance", seconds=0.25)
            client.wait(lambda: last_status(client, h) == "Filled", what="Filled")
            [fill] = client.fills(h)
            assert fill[2] == float(rows[5]["ask"])  # the recorded ask at that moment
            # the recorded trades are the instrument's trades: bars and volume follow them
            bars = client.ib.reqHistoricalData(client.qualified("AAPL"), "", "300 S", "1 min",
                                               "TRADES", False)
            closes = {int(b.date.timestamp()): b.close for b in bars}
            for row in rows[1:5]:
                assert closes[int(_epoch(row["time"]))] == float(row["last"])
        finally:
            client.disconnect()


def test_replay_of_bars_plays_open_extremes_and_close(tmp_path, make_client):
    path = tmp_path / "bars.csv"
    path.write_text("time,symbol,open,high,low,close,volume\n"
                    "2025-06-03T13:30:00Z,MSFT,462.00,463.50,461.00,463.00,12000\n"
                    "2025-06-03T13:31:00Z,MSFT,463.00,463.20,460.10,460.50,8000\n")
    with running_sim(replay=str(path)) as sim:
        client = make_client("ib_insync")
        client.connect(sim.host, sim.port, 1)
        sim.advance(120.0)
        bars = client.ib.reqHistoricalData(client.qualified("MSFT"), "", "120 S", "1 min",
                                           "TRADES", False)
        assert [(b.open, b.high, b.low, b.close, b.volume) for b in bars] == [
            (462.0, 463.5, 461.0, 463.0, 12000.0), (463.0, 463.2, 460.1, 460.5, 8000.0)]
        assert sim.state()["replay"]["finished"]
        client.disconnect()


def test_replay_runs_at_n_times_the_wall_clock(make_client):
    with running_sim(clock="realtime", replay=SAMPLE, replay_speed=600.0, tick_interval=5.0) as sim:
        start = _epoch(recorded("SPY")[0]["time"])
        # ten minutes of the session pass in about a wall second
        state = sim.wait_for(lambda s: s["time"] - start >= 600.0 and s["replay"]["played"] >= 30,
                             timeout=10.0, what="ten replayed minutes")
        assert state["time"] - start < 600.0 * 10  # not the wall clock's pace
        row = [r for r in recorded("SPY") if _epoch(r["time"]) <= state["time"]][-1]
        assert state["quotes"]["SPY"]["bid"] in {float(r["bid"]) for r in recorded("SPY")}
        assert row


def test_replay_reports_a_bad_file_and_parquet_without_pyarrow(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("when,what\n1,2\n")
    out = subprocess.run([sys.executable, "-m", "sim", "--port", "0", "--replay", str(bad)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "neither ticks" in out.stderr
    try:
        import pyarrow
        import pyarrow.parquet as parquet
    except ImportError:
        pq = tmp_path / "x.parquet"
        pq.write_bytes(b"PAR1")
        out = subprocess.run([sys.executable, "-m", "sim", "--port", "0", "--replay", str(pq)],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 1 and "needs pyarrow" in out.stderr
    else:  # with pyarrow the same columns load from Parquet
        from sim.instruments import InstrumentUniverse
        from sim.replay import load
        rows = list(csv.DictReader(open(SAMPLE, newline="")))[:10]
        pq = tmp_path / "x.parquet"
        parquet.write_table(pyarrow.Table.from_pylist(rows), pq)
        assert len(load(pq, InstrumentUniverse.load())) == 10


def test_sample_replay_is_small_and_one_session():
    rows = list(csv.DictReader(open(SAMPLE, newline="")))
    assert Path(SAMPLE).stat().st_size < 200_000
    days = {r["time"][:10] for r in rows}
    assert days == {"2025-06-03"} and {r["symbol"] for r in rows} == {"AAPL", "MSFT", "SPY"}
