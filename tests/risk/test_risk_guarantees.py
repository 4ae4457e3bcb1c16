"""Risk's safety guarantees in process (issue 12 item 7): the trading-state file is durable before a change is
announced (fsync of the full content before the rename, the folder after), and a HALT survives a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.risk.trading_state import HALTED, Authority, TradingStates, write_json_atomic
from tests.fsync_spy import assert_atomic_durable_write, spy_on_disk


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = (tmp_path / "state" / "risk.json").resolve()
    p.parent.mkdir(parents=True)
    return p


def test_write_json_atomic_fsyncs_the_full_content_before_the_rename_and_the_folder_after(path: Path,
                                                                                         monkeypatch) -> None:
    # mutation caught: trading_state.write_json_atomic without `os.fsync(fd)` before os.replace
    path.write_text("{}")
    seen = spy_on_disk(monkeypatch)
    write_json_atomic(path, {"version": 1, "epoch": 7, "scopes": {}, "padding": "x" * 2000})
    assert_atomic_durable_write(seen, path)
    assert [p.name for p in path.parent.iterdir()] == ["risk.json"]


def test_a_halt_is_durable_before_set_returns(path: Path, monkeypatch) -> None:
    ts = TradingStates.load(path)
    ts.persist()
    seen = spy_on_disk(monkeypatch)
    change = ts.set("all", HALTED, reason="kill k1", origin="cli", authority=Authority.OPERATOR)
    assert change is not None and change.persisted
    assert_atomic_durable_write(seen, path)
    again = TradingStates.load(path)
    assert again.get("all").state == HALTED and again.epoch == 1 and again.get("all").reason == "kill k1"


# -- the pre-trade checks: each verdict exactly (code and reason), and each limit's edge --------------------------

from dataclasses import replace  # noqa: E402

import msgspec  # noqa: E402

from actors.risk import checks as ck  # noqa: E402
from actors.risk.checks import EPSILON, BookView, RiskView, evaluate  # noqa: E402
from bus.config import RiskLimits  # noqa: E402
from tests.risk.orders import order  # noqa: E402

LIMITS = RiskLimits(max_order_quantity=1000, max_order_notional=50_000, price_collar_pct=5, max_position=2000,
                    max_gross_exposure=300_000, max_orders_per_second=5, duplicate_window_s=1,
                    restricted_symbols=["GME"], min_buying_power_ratio=2.0)
VIEW = RiskView(ref_price=100.0, tick_age_s=0.1, buying_power=1_000_000.0, restricted=frozenset({"GME"}))


def R(**kw: object) -> RiskView:  # noqa: N802
    return replace(VIEW, **kw)


VERDICTS = [
    (order("BUY", 10), R(ready=False), "risk.not_ready", "no account/position snapshot from the gateway yet"),
    (order("BUY", 10), R(state="HALTED", state_scopes=("all", "strategy:alpha")), "risk.halted",
     "trading is HALTED for all, strategy:alpha"),
    (order("BUY", 10), R(state="HALTED"), "risk.halted", "trading is HALTED for all"),
    (order("BUY", 10), R(disabled_reason="3 fills in 1s"), "risk.strategy_disabled",
     "strategy alpha is disabled (3 fills in 1s); EnableStrategy to re-enable"),
    (order("BUY", 10, symbol="gme"), VIEW, "risk.restricted", "gme is a restricted symbol"),
    (order("BUY", 10), R(unknown_symbol_reason="no such contract"), "risk.unknown_symbol", "AAPL: no such contract"),
    (order("BUY", 10), R(ref_price=None, tick_age_s=None), "risk.no_market_data",
     "no market data for AAPL: cannot collar or value the order"),
    (order("BUY", 10), R(tick_age_s=None), "risk.no_market_data",
     "no market data for AAPL: cannot collar or value the order"),
    (order("BUY", 10, limit=100.0), R(ref_price=None), "risk.no_market_data",
     "no market data for AAPL: cannot collar or value the order"),
    (order("BUY", 10), R(tick_age_s=31.25), "risk.stale_market_data",
     "market data for AAPL is 31.2s old (risk.stale_data_s = 30)"),
    (order("BUY", 1001, limit=10.0), VIEW, "risk.max_quantity", "quantity 1001 > max_order_quantity 1000"),
    (order("BUY", 501), VIEW, "risk.max_notional", "notional 50,100.00 > max_order_notional 50,000.00"),
    (order("BUY", 10, limit=106.0), VIEW, "risk.price_collar",
     "limit price 106 is 6.00% from the market 100 (price_collar_pct 5)"),
    (order("BUY", 10, stop=80.0), VIEW, "risk.price_collar",
     "stop price 80 is 20.00% from the market 100 (price_collar_pct 5)"),
    (order("BUY", 10, limit=101.0, stop=90.0), VIEW, "risk.price_collar",
     "stop price 90 is 10.00% from the market 100 (price_collar_pct 5)"),
    (order("BUY", 10), R(state="REDUCING", reducing_scopes=("strategy:alpha",),
                         strategy=BookView(position=5, working_buy=1, working_sell=2)), "risk.reducing",
     "strategy:alpha is REDUCING and this order does not reduce the strategy exposure (position 5, working buy 1 / "
     "sell 2)"),
    (order("BUY", 10), R(state="REDUCING", reducing_scopes=("all",), account=BookView(position=-5)), "risk.reducing",
     "all is REDUCING and this order does not reduce the account exposure (position -5, working buy 0 / sell 0)"),
    (order("BUY", 10), R(duplicate_of="alpha/c0"), "risk.duplicate", "same order as alpha/c0 within 1s"),
    (order("BUY", 10), R(rate_tokens=0.5), "risk.order_rate", "strategy alpha exceeds max_orders_per_second 5"),
    (order("BUY", 10), R(strategy=BookView(position=1995)), "risk.max_position",
     "strategy position in AAPL could reach 2005 (position 1995 + working + this order) > max_position 2000"),
    (order("SELL", 10), R(account=BookView(position=-1500, working_sell=495)), "risk.max_position",
     "account position in AAPL could reach -2005 (position -1500 + working + this order) > max_position 2000"),
    (order("BUY", 10), R(strategy=BookView(gross_exposure=299_500)), "risk.max_gross_exposure",
     "strategy gross exposure would be 300,500.00 (positions + working orders + this order) > max_gross_exposure "
     "300,000.00"),
    (order("BUY", 10), R(account=BookView(gross_exposure=299_500)), "risk.max_gross_exposure",
     "account gross exposure would be 300,500.00 (positions + working orders + this order) > max_gross_exposure "
     "300,000.00"),
    (order("BUY", 10), R(buying_power=None), "risk.buying_power",
     "the account reports no BuyingPower/AvailableFunds yet"),
    (order("BUY", 10), R(buying_power=10_000.0, working_notional=4_500.0), "risk.buying_power",
     "needs 2,000.00 of buying power (notional x min_buying_power_ratio 2), 1,000.00 available after working orders"),
    # closing risk stays possible: an order that reduces a book skips its position, exposure and buying power
    (order("SELL", 10), R(strategy=BookView(position=100), account=BookView(position=-1995)), "risk.max_position",
     "account position in AAPL could reach -2005 (position -1995 + working + this order) > max_position 2000"),
    (order("SELL", 10), R(strategy=BookView(position=100), account=BookView(gross_exposure=299_500)),
     "risk.max_gross_exposure", "account gross exposure would be 300,500.00 (positions + working orders + this "
                                "order) > max_gross_exposure 300,000.00"),
    (order("SELL", 10), R(account=BookView(position=3000, working_sell=5990)), "risk.max_position",
     "account position in AAPL could reach -3000 (position 3000 + working + this order) > max_position 2000"),
]


@pytest.mark.parametrize("o,view,code,reason", VERDICTS, ids=[f"{c[2]}-{i}" for i, c in enumerate(VERDICTS)])
def test_each_rejection_has_its_code_and_exact_reason(o, view, code, reason) -> None:
    v = evaluate(o, view, LIMITS, LIMITS)
    assert (v.code, v.reason) == (code, reason)
    assert not v.approved


@pytest.mark.parametrize("o,view", [
    (order("BUY", 10), R(buying_power=10_000.0, working_notional=4_000.0)),  # needs exactly what is available
    (order("SELL", 10), R(account=BookView(position=50), buying_power=0.0)),  # reduces the account: no BP needed
    (order("BUY", 10), R(strategy=BookView(position=-50), account=BookView(position=-50),
                         state="REDUCING", reducing_scopes=("strategy:alpha", "all"))),
    (order("SELL", 10), R(strategy=BookView(position=10))),  # reduces to flat exactly
])
def test_orders_at_or_inside_the_limits_are_approved(o, view) -> None:
    v = evaluate(o, view, LIMITS, LIMITS)
    assert (v.code, v.reason, v.approved) == ("ok", "approved", True)


def edge(value: float) -> float:
    """A limit whose tolerance ends exactly at ``value`` (limit + EPSILON == value, checked)."""
    limit = value - EPSILON
    assert limit + EPSILON == value
    return limit


def test_every_limit_admits_its_value_plus_the_tolerance_and_nothing_beyond() -> None:
    o = order("BUY", 10)
    lim = msgspec.structs.replace(LIMITS, max_order_quantity=edge(10.0), max_order_notional=edge(1000.0),
                  price_collar_pct=edge(5.0), max_position=edge(110.0), max_gross_exposure=edge(1500.0))
    view = R(strategy=BookView(position=100.0, gross_exposure=500.0), account=BookView(position=100.0,
                                                                                       gross_exposure=500.0),
             buying_power=2000.0 + EPSILON, working_notional=0.0)
    assert ck.check_quantity(o, view, lim, lim) is None
    assert ck.check_notional(o, view, lim, lim) is None
    assert ck.check_collar(order("BUY", 10, limit=105.0), view, lim, lim) is None
    assert ck.check_position(o, view, lim, lim) is None
    assert ck.check_gross(o, view, lim, lim) is None
    assert ck.check_buying_power(o, replace(view, buying_power=2000.0 - EPSILON), LIMITS, LIMITS) is None
    assert evaluate(o, view, lim, lim).approved
    bigger = order("BUY", 10.001)
    assert ck.check_quantity(bigger, view, lim, lim).code == "risk.max_quantity"
    assert ck.check_notional(bigger, view, lim, lim).code == "risk.max_notional"
    assert ck.check_collar(order("BUY", 10, limit=105.01), view, lim, lim).code == "risk.price_collar"
    assert ck.check_position(bigger, view, lim, lim).code == "risk.max_position"
    assert ck.check_gross(bigger, view, lim, lim).code == "risk.max_gross_exposure"
    assert ck.check_buying_power(bigger, replace(view, buying_power=2000.0), LIMITS, LIMITS).code == "risk.buying_power"


def test_the_checks_without_a_market_price_value_a_market_order_at_nothing() -> None:
    o = order("BUY", 10)
    no_price = R(ref_price=None, strategy=BookView(gross_exposure=LIMITS.max_gross_exposure - 0.5),
                 buying_power=0.5)
    assert ck.check_gross(o, no_price, LIMITS, LIMITS) is None
    assert ck.check_buying_power(o, no_price, LIMITS, LIMITS) is None
    assert ck.check_notional(o, no_price, LIMITS, LIMITS) is None and ck.check_collar(o, no_price, LIMITS, LIMITS) \
        is None
    assert ck.order_notional(o, None) is None and ck.order_notional(order("BUY", 10, stop=90.0), None) == 900.0
    assert ck.order_notional(order("BUY", 2, limit=5.0, multiplier="50"), 1.0) == 500.0
    assert ck.multiplier(order("BUY", 1, multiplier="x")) == 1.0 and ck.multiplier(order("BUY", 1, multiplier="-5")) \
        == 1.0 and ck.multiplier(order("BUY", 1, multiplier="100")) == 100.0
    no_ratio = msgspec.structs.replace(LIMITS, min_buying_power_ratio=0.0)
    assert ck.check_buying_power(o, R(buying_power=None), no_ratio, no_ratio) is None


def test_the_early_checks_are_those_that_need_no_market_data() -> None:
    names = [c.__name__ for c in ck.EARLY_CHECKS]
    assert names == ["check_ready", "check_state", "check_disabled", "check_restricted", "check_quantity"]
    assert [c.__name__ for c in ck.CHECKS] == [
        "check_ready", "check_state", "check_disabled", "check_restricted", "check_market_data", "check_quantity",
        "check_notional", "check_collar", "check_reducing", "check_duplicate", "check_rate", "check_position",
        "check_gross", "check_buying_power"]
    v = evaluate(order("BUY", 10), R(ref_price=None, tick_age_s=None), LIMITS, LIMITS, checks=ck.EARLY_CHECKS)
    assert v == ck.OK and v.reason == "approved"
