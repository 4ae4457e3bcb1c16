"""The base currency, IB's trading day and trading sessions, end to end (the real gateway against the TWS simulator,
the real risk governor as a process), each with its own simulator:

* a CHF-based account's limits hold in CHF (a USD stock valued at the FX market's rate);
* a position carried from yesterday with a large loss does not trip the daily-loss breaker at the open (IB's daily
  P&L restarts at IB's reset; the lifetime ``UnrealizedPnL`` is not today's loss), while a loss after the open does;
* stale market data at night cancels no order (a closed market is never stale); in trading hours it blocks new
  orders and, only when configured, cancels resting DAY orders, never GTC or stop orders.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bus.messages import Instrument
from sim.instruments import DEFAULT_INSTRUMENTS_FILE
from tests.support.waiting import eventually
from tests.support.chain import ORDER_TIMEOUT_S, running_chain, spec

#: The packaged universe with AAPL never trading (its sessions all CLOSED: night, every night) and MSFT always
#: trading (24-hour sessions), so a test does not depend on the hour it runs at.
NEVER = '\n[schedule.never]\ntime_zone = "US/Eastern"\ndays = []\nrth = ""\nextended = ""\novernight = ""\n'
ALWAYS = ('\n[schedule.always]\ntime_zone = "US/Eastern"\ndays = [0, 1, 2, 3, 4, 5, 6]\nrth = "00:00-00:00"\n'
          'extended = "00:00-00:00"\novernight = ""\n')


def night_and_day_universe(tmp: Path) -> Path:
    from importlib import resources

    text = resources.files("sim").joinpath("data", DEFAULT_INSTRUMENTS_FILE).read_text()
    first = text.index('schedule = "us_equity"')  # AAPL's
    text = text[:first] + 'schedule = "never"' + text[first + len('schedule = "us_equity"'):]
    second = text.index('schedule = "us_equity"')  # MSFT's
    text = text[:second] + 'schedule = "always"' + text[second + len('schedule = "us_equity"'):]
    path = tmp / "instruments.toml"
    path.write_text(text + NEVER + ALWAYS)
    return path


def on_tick(price: float, tick: float = 0.01) -> float:
    return round(math.floor(price / tick + 1e-9) * tick, 10)


# -- base currency -------------------------------------------------------------------------------------------------


def test_a_chf_accounts_limits_hold_in_chf(tmp_path: Path) -> None:
    from sim.testing import running_sim

    with running_sim(seed=11, clock="realtime", tick_interval=0.1, base_currency="CHF") as sim:
        extra = "\n[risk.limits]\nmax_order_notional = 100000\n"
        with running_chain(tmp_path, sim, extra=extra) as chain:
            chain.decided(lambda: spec("AAPL", "BUY", 1))
            px = on_tick(chain.mid("AAPL"))
            usd_chf = chain.mid("USD.CHF")  # what IB's ExchangeRate (or the FX quote) says a dollar is in CHF
            at_limit = 100_000 / (px * usd_chf)
            under, over = math.floor(at_limit) - 5, math.ceil(at_limit) + 5
            assert under * px > 100_000  # in dollars it would be over the limit: the limit is in CHF
            approved = chain.check(spec("AAPL", "BUY", under, limit=px))
            assert approved.approved, approved
            rejected = chain.check(spec("AAPL", "BUY", over, limit=px))
            assert rejected.code == "risk.max_notional" and "CHF" in rejected.reason, rejected
            assert "USD/CHF" in rejected.reason  # converted, and says so
            # a CHF stock needs no conversion: NESN (CHF 88) for 1,100 shares is 96,800 CHF
            nesn = Instrument.stock("NESN", currency="CHF")
            chain.decided(lambda: spec(nesn, "BUY", 1))
            nesn_px = on_tick(chain.mid("NESN"), 0.02)
            assert chain.check(spec(nesn, "BUY", math.floor(99_000 / nesn_px), limit=nesn_px)).approved
            assert chain.check(spec(nesn, "BUY", math.ceil(101_000 / nesn_px), limit=nesn_px)).code == \
                "risk.max_notional"


# -- IB's trading day --------------------------------------------------------------------------------------------------


def test_a_carried_losing_position_does_not_trip_the_daily_loss_breaker_at_the_open(tmp_path: Path) -> None:
    from ib_insync import IB, MarketOrder, Stock

    from sim.testing import running_sim

    # Sunday 23:40 New York: AAPL's P&L day resets at 23:55 (IB's schedule for a stock)
    with running_sim(seed=5, start_time="2025-06-02T03:40:00Z", tick_interval=1.0) as sim:
        # yesterday: 100 AAPL bought (in TWS, say), then the price fell 6%: a loss of ~1,140
        ib = IB()
        ib.connect(sim.host, sim.port, clientId=77)
        aapl = Stock("AAPL", "SMART", "USD")
        ib.qualifyContracts(aapl)
        ib.placeOrder(aapl, MarketOrder("BUY", 100))
        sim.wait_for(lambda s: len(s["orders"]) == 1)  # the simulator has it: the next market step fills it
        sim.advance(1.0)
        sim.wait_for(lambda s: any(p["position"] == 100 for p in s["positions"]))
        ib.disconnect()
        low = round(190.0 * 0.94, 2)
        sim.set_price("AAPL", bid=low - 0.01, ask=low + 0.01, last=low)
        sim.advance(30 * 60.0)  # past the reset: a new trading day
        lifetime = sim.state()["account"]["values"]["UnrealizedPnL"]
        assert lifetime < -900
        # the system starts at the open with a daily-loss limit far below yesterday's loss
        with running_chain(tmp_path, sim, extra="\n[risk.limits]\ndaily_loss_limit = 500\n") as chain:
            st = eventually(lambda: ("daily_pnl.all" in (s := chain.risk_state()).breakers
                                     or s.global_state != "ACTIVE") and s, ORDER_TIMEOUT_S,
                            message="the daily-loss breaker looked at the account")
            assert st.global_state == "ACTIVE", st.breakers  # yesterday's loss does not halt today
            assert abs(float(st.breakers["daily_pnl.all"])) < 500  # IB's daily P&L, not the lifetime loss
            sim.advance(2.0)  # market steps, IB's P&L pushes, the account refresh
            st = chain.risk_state()
            assert st.global_state == "ACTIVE" and st.breakers["daily_loss"] == "ok", st.breakers
            # today's own loss still trips it: another 6% down after the open
            lower = round(low * 0.94, 2)
            sim.set_price("AAPL", bid=lower - 0.01, ask=lower + 0.01, last=lower)
            sim.advance(2.0)
            halted = eventually(lambda: (s := chain.risk_state()).global_state == "HALTED" and s, ORDER_TIMEOUT_S,
                                message="today's loss halts trading")
            assert "all" in halted.breakers["daily_loss"]
            assert float(halted.breakers["daily_pnl.all"]) < -500


# -- sessions ---------------------------------------------------------------------------------------------------------


def _night_chain_orders(chain, aapl_gtc_tif: str = "GTC") -> dict[str, object]:
    """Two resting orders in AAPL (closed) and two in MSFT (trading), placed while the data is fresh."""
    chain.sim.advance(1.0)  # quotes for both (the clock stands still afterwards: no more ticks)
    chain.decided(lambda: spec("AAPL", "BUY", 1, strategy="warm"))
    chain.decided(lambda: spec("MSFT", "BUY", 1, strategy="warm"))
    aapl, msft = on_tick(chain.mid("AAPL") * 0.97), on_tick(chain.mid("MSFT") * 0.97)
    orders = {
        "aapl_gtc": spec("AAPL", "BUY", 1, limit=aapl, tif=aapl_gtc_tif),
        "aapl_day": spec("AAPL", "BUY", 2, limit=aapl),
        "msft_day": spec("MSFT", "BUY", 1, limit=msft),
        "msft_gtc": spec("MSFT", "BUY", 2, limit=msft, tif="GTC"),
        "msft_stop": spec("MSFT", "SELL", 3, stop=on_tick(chain.mid("MSFT") * 0.96)),
    }
    for o in orders.values():
        chain.place(o)
    for name, o in orders.items():
        eventually(lambda o=o: chain.working_at_sim(o.order_ref), ORDER_TIMEOUT_S, message=f"{name} working")
    return orders


@pytest.fixture
def night_sim(tmp_path: Path):
    from sim.testing import running_sim

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # the simulator's trading hours cover the wall clock
    with running_sim(seed=3, start_time=now, market_hours="exchange",
                     instruments=str(night_and_day_universe(tmp_path))) as sim:
        yield sim


def test_stale_data_at_night_cancels_no_gtc_order(tmp_path: Path, night_sim) -> None:
    with running_chain(tmp_path / "chain", night_sim, risk="stale_data_s = 3.0") as chain:
        orders = _night_chain_orders(chain)
        # MSFT trades around the clock and gets no tick: it goes stale (the breaker marks it) ...
        eventually(lambda: "MSFT" in chain.risk_state().breakers["stale_data"], ORDER_TIMEOUT_S,
                   message="MSFT marked stale")
        assert chain.check(spec("MSFT", "BUY", 3, limit=orders["msft_day"].limit_price)).code == \
            "risk.stale_market_data"
        # ... AAPL's market is closed: its old price is yesterday's close, not stale data
        assert "AAPL" not in chain.risk_state().breakers["stale_data"]
        late = spec("AAPL", "BUY", 3, limit=orders["aapl_gtc"].limit_price, tif="GTC")
        chain.place(late)  # approved at night on the last price
        eventually(lambda: chain.working_at_sim(late.order_ref), ORDER_TIMEOUT_S, message="the late GTC order works")
        # and nothing was cancelled: not the GTC orders, not the stop, not even the DAY orders (the default)
        for name, o in orders.items():
            assert chain.working_at_sim(o.order_ref), f"{name} was cancelled"


def test_stale_data_in_trading_hours_cancels_resting_day_orders_only_when_configured(tmp_path: Path,
                                                                                      night_sim) -> None:
    risk = "stale_data_s = 3.0\nstale_data_cancels_resting = true"
    with running_chain(tmp_path / "chain", night_sim, risk=risk) as chain:
        orders = _night_chain_orders(chain)
        cancelled = eventually(lambda: (o := chain.sim_order(orders["msft_day"].order_ref))["status"] == "Cancelled"
                               and o, ORDER_TIMEOUT_S, message="MSFT's DAY order cancelled for stale data")
        assert cancelled["orderRef"] == orders["msft_day"].order_ref
        for name in ("msft_gtc", "msft_stop", "aapl_gtc", "aapl_day"):  # GTC, protective, closed market: kept
            assert chain.working_at_sim(orders[name].order_ref), f"{name} was cancelled"
