"""Risk's safety guarantees in process (issue 12 item 7): the trading-state file is durable before a change is
announced (fsync of the full content before the rename, the folder after), and a HALT survives a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.risk.trading_state import HALTED, Authority, TradingStates, write_json_atomic
from tests.support.fsync_spy import assert_atomic_durable_write, spy_on_disk


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
from bus.messages import ContractInfo, Instrument, PriceIncrement  # noqa: E402
from tests.support.builders import order_for  # noqa: E402

order = order_for("alpha")

LIMITS = RiskLimits(max_order_quantity=1000, max_order_notional=50_000, price_collar_pct=5, max_position=2000,
                    max_gross_exposure=300_000, max_orders_per_second=5, duplicate_window_s=1,
                    restricted_symbols=["GME"], min_buying_power_ratio=2.0)
AAPL_INFO = ContractInfo(instrument=Instrument(symbol="AAPL", con_id=265598, local_symbol="AAPL"), min_tick=0.01)
ES_INFO = ContractInfo(instrument=Instrument(symbol="ES", sec_type="FUT", exchange="CME", con_id=551601503,
                                             last_trade_date="20270319", multiplier="50", local_symbol="ESH7"),
                       multiplier=50.0, min_tick=0.25)
VIEW = RiskView(ref_price=100.0, tick_age_s=0.1, buying_power=1_000_000.0, restricted=frozenset({"GME"}),
                contract=AAPL_INFO, fx_rate=1.0, base_currency="USD")


def R(**kw: object) -> RiskView:  # noqa: N802
    return replace(VIEW, **kw)


VERDICTS = [
    (order("BUY", 10), R(ready=False), "risk.not_ready", "no account/position snapshot from the gateway yet"),
    (order("BUY", 10), R(state="HALTED", state_scopes=("all", "strategy:alpha")), "risk.halted",
     "trading is HALTED for all, strategy:alpha"),
    (order("BUY", 10), R(state="HALTED"), "risk.halted", "trading is HALTED for all"),
    (order("BUY", 10), R(disabled_reason="3 fills in 1s"), "risk.strategy_disabled",
     "strategy alpha is disabled (3 fills in 1s); EnableStrategy to re-enable"),
    (order("BUY", 10, symbol="gme"), VIEW, "risk.restricted", "GME is a restricted symbol"),
    (order("BUY", 10), R(names=frozenset({"GME"})), "risk.restricted", "GME is a restricted symbol"),
    (order("BUY", 10), R(contract=None, contract_refusal=("unknown_symbol", "no such contract")),
     "risk.unknown_symbol", "AAPL: no such contract"),
    (order("BUY", 10), R(contract=None, contract_refusal=("contract_mismatch", "multiplier 5 vs 50")),
     "risk.contract_mismatch", "AAPL: multiplier 5 vs 50"),
    (order("BUY", 10), R(contract=None, contract_refusal=("ambiguous_contract", "ESH7, ESM7")),
     "risk.ambiguous_contract", "AAPL: ESH7, ESM7"),
    (order("BUY", 10), R(contract=None, contract_refusal=("disconnected", "IB is away")), "risk.not_qualified",
     "AAPL: IB is away"),
    (order("BUY", 10), R(contract=None), "risk.not_qualified",
     "AAPL: the gateway has not qualified the instrument with IB (no answer)"),
    (order("BUY", 0.5), VIEW, "risk.size_increment",
     "quantity 0.5 is not a multiple of AAPL's size increment 1 (fractional quantities are not allowed); valid: 1"),
    (order("BUY", 10, limit=100.005), VIEW, "risk.tick_size",
     "limit price 100.005 is not on AAPL's price grid (increment 0.01 at this price): nearest valid prices 100.00 "
     "and 100.01 (or send round_to_tick)"),
    (order("BUY", 10, limit=100.0, stop=99.999), VIEW, "risk.tick_size",
     "stop price 99.999 is not on AAPL's price grid (increment 0.01 at this price): nearest valid prices 99.99 "
     "and 100.00 (or send round_to_tick)"),
    (order("BUY", 10), R(fx_rate=None), "risk.no_fx_rate",
     "no exchange rate USD -> USD: IB's account values report none and no FX quote is available; the order cannot "
     "be valued"),
    (order("BUY", 10), R(fx_rate=None, base_currency=""), "risk.no_fx_rate",
     "no exchange rate USD -> base currency (unknown yet): IB's account values report none and no FX quote is "
     "available; the order cannot be valued"),
    (order("BUY", 10), R(ref_price=None, tick_age_s=None), "risk.no_market_data",
     "no market data for AAPL: cannot collar or value the order"),
    (order("BUY", 10), R(tick_age_s=None), "risk.no_market_data",
     "no market data for AAPL: cannot collar or value the order"),
    (order("BUY", 10, limit=100.0), R(ref_price=None), "risk.no_market_data",
     "no market data for AAPL: cannot collar or value the order"),
    (order("BUY", 10), R(tick_age_s=31.25), "risk.stale_market_data",
     "market data for AAPL is 31.2s old during its trading hours (risk.stale_data_s = 30)"),
    (order("BUY", 10), R(tick_age_s=12.5, stale_data_s=12.25), "risk.stale_market_data",
     "market data for AAPL is 12.5s old during its trading hours (risk.stale_data_s = 12.25)"),
    (order("BUY", 1001, limit=10.0), VIEW, "risk.max_quantity", "quantity 1001 > max_order_quantity 1000"),
    (order("BUY", 501), VIEW, "risk.max_notional",
     "notional 50,100.00 USD (501 x 100 USD x multiplier 1) > max_order_notional 50,000.00 USD"),
    (order("BUY", 2, symbol="ES", sec_type="FUT", limit=5000.0), R(contract=ES_INFO, ref_price=5000.0),
     "risk.max_notional", "notional 500,000.00 USD (2 x 5000 USD x multiplier 50) > max_order_notional 50,000.00 USD"),
    (order("BUY", 300), R(fx_rate=2.0, base_currency="CHF"), "risk.max_notional",
     "notional 60,000.00 CHF (300 x 100 USD x multiplier 1 x USD/CHF 2) > max_order_notional 50,000.00 CHF"),
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
     "strategy gross exposure would be 300,500.00 USD (positions + working orders + this order) > "
     "max_gross_exposure 300,000.00 USD"),
    (order("BUY", 10), R(account=BookView(gross_exposure=299_500)), "risk.max_gross_exposure",
     "account gross exposure would be 300,500.00 USD (positions + working orders + this order) > "
     "max_gross_exposure 300,000.00 USD"),
    (order("BUY", 10), R(buying_power=None), "risk.buying_power",
     "the account reports no BuyingPower/AvailableFunds yet"),
    (order("BUY", 10), R(buying_power=10_000.0, working_notional=4_500.0), "risk.buying_power",
     "needs 2,000.00 USD of buying power (notional x min_buying_power_ratio 2), 1,000.00 USD available after working "
     "orders"),
    # closing risk stays possible: an order that reduces a book skips its position, exposure and buying power
    (order("SELL", 10), R(strategy=BookView(position=100), account=BookView(position=-1995)), "risk.max_position",
     "account position in AAPL could reach -2005 (position -1995 + working + this order) > max_position 2000"),
    (order("SELL", 10), R(strategy=BookView(position=100), account=BookView(gross_exposure=299_500)),
     "risk.max_gross_exposure", "account gross exposure would be 300,500.00 USD (positions + working orders + "
                                "this order) > max_gross_exposure 300,000.00 USD"),
    (order("SELL", 10), R(account=BookView(position=3000, working_sell=5990)), "risk.max_position",
     "account position in AAPL could reach -3000 (position 3000 + working + this order) > max_position 2000"),
]


NESN_CHF = ContractInfo(instrument=Instrument(symbol="NESN", exchange="EBS", currency="CHF", con_id=1234567,
                                              local_symbol="NESN"), min_tick=0.01)
#: a market rule: 0.0001 below one dollar, 0.01 from one dollar up
PENNY = ContractInfo(instrument=Instrument(symbol="PNY", con_id=7654321, local_symbol="PNY"), min_tick=0.0001,
                     price_increments=[PriceIncrement(low_edge=0.0, increment=0.0001),
                                       PriceIncrement(low_edge=1.0, increment=0.01)])

VERDICTS += [
    # the contract's own name (IB's local symbol) and currency, not what the order said
    (order("BUY", 1, symbol="ES", sec_type="FUT"), R(contract=ES_INFO, ref_price=None), "risk.no_market_data",
     "no market data for ESH7: cannot collar or value the order"),
    (order("BUY", 1, symbol="ES", sec_type="FUT"), R(contract=ES_INFO, tick_age_s=40.0), "risk.stale_market_data",
     "market data for ESH7 is 40.0s old during its trading hours (risk.stale_data_s = 30)"),
    (order("BUY", 1), R(contract=NESN_CHF, fx_rate=None), "risk.no_fx_rate",
     "no exchange rate CHF -> USD: IB's account values report none and no FX quote is available; the order cannot "
     "be valued"),
    (order("BUY", 1, symbol="ES", sec_type="FUT", limit=100.0), R(contract=ES_INFO, strategy=BookView(position=2000)),
     "risk.max_position", "strategy position in ESH7 could reach 2001 (position 2000 + working + this order) > "
     "max_position 2000"),
    # amounts without a base currency yet carry no currency
    (order("BUY", 10), R(base_currency="", strategy=BookView(gross_exposure=299_500)), "risk.max_gross_exposure",
     "strategy gross exposure would be 300,500.00 (positions + working orders + this order) > max_gross_exposure "
     "300,000.00"),
    # the increment at the order's price (IB's market rule), with that increment's decimals
    (order("BUY", 10, symbol="PNY", limit=1.005), R(contract=PENNY, ref_price=1.0), "risk.tick_size",
     "limit price 1.005 is not on PNY's price grid (increment 0.01 at this price): nearest valid prices 1.00 and "
     "1.01 (or send round_to_tick)"),
    (order("BUY", 10, symbol="PNY", limit=0.00005), R(contract=PENNY, ref_price=1.0), "risk.tick_size",
     "limit price 5e-05 is not on PNY's price grid (increment 0.0001 at this price): nearest valid prices 0.0000 "
     "and 0.0001 (or send round_to_tick)"),
]

VERDICTS += [
    # IB's delayed data (risk.delayed_data): limit orders only, or nothing
    (order("BUY", 10), R(delayed_data=True), "risk.delayed_data",
     "market data for AAPL is delayed: only limit orders (collared on the delayed price) are allowed, not MKT "
     "(risk.delayed_data = limit_only)"),
    (order("BUY", 10, stop=99.0), R(delayed_data=True), "risk.delayed_data",
     "market data for AAPL is delayed: only limit orders (collared on the delayed price) are allowed, not STP "
     "(risk.delayed_data = limit_only)"),
    (order("BUY", 10, symbol="ES", sec_type="FUT", limit=100.0), R(contract=ES_INFO, delayed_data=True,
                                                                   delayed_policy="block"),
     "risk.delayed_data", "market data for ESH7 is delayed (risk.delayed_data = block)"),
    # IB's what-if margin preview (risk.margin): fail closed
    (order("BUY", 10), R(margin_checked=True, margin_problem="timed out"), "risk.margin",
     "no margin preview from IB: timed out (fail closed)"),
    (order("BUY", 10), R(margin_checked=True), "risk.margin",
     "IB's what-if: excess liquidity after the trade unknown < risk.margin_floor 0.00 USD"),
    (order("BUY", 10), R(margin_checked=True, margin_excess_after=999.5, margin_floor=1000.0), "risk.margin",
     "IB's what-if: excess liquidity after the trade 999.50 USD < risk.margin_floor 1,000.00 USD"),
]


def test_delayed_data_and_the_margin_preview_admit_what_their_policy_allows() -> None:
    assert evaluate(order("BUY", 10, limit=100.0), R(delayed_data=True), LIMITS, LIMITS).approved  # limit_only
    assert evaluate(order("BUY", 10), R(delayed_data=True, delayed_policy="allow"), LIMITS, LIMITS).approved
    assert evaluate(order("BUY", 10), R(delayed_data=False, delayed_policy="block"), LIMITS, LIMITS).approved
    assert evaluate(order("BUY", 10), R(margin_checked=False, margin_problem="x"), LIMITS, LIMITS).approved
    edge_margin = R(margin_checked=True, margin_excess_after=1000.0 - EPSILON, margin_floor=1000.0)
    assert evaluate(order("BUY", 10), edge_margin, LIMITS, LIMITS).approved  # the floor within its tolerance
    assert ck.check_margin(order("BUY", 10), R(margin_checked=True, margin_excess_after=0.0), LIMITS, LIMITS) is None


def test_the_checks_name_what_the_order_said_when_ib_has_not_described_the_contract() -> None:
    es = order("BUY", 1, symbol="ES", sec_type="FUT")
    bare = R(contract=None, ref_price=None, fx_rate=None, strategy=BookView(position=2000))
    assert ck.check_market_data(es, bare, LIMITS, LIMITS).reason == \
        "no market data for ES: cannot collar or value the order"
    assert ck.check_fx(es, bare, LIMITS, LIMITS).reason.startswith("no exchange rate USD -> USD:")
    assert ck.check_position(es, bare, LIMITS, LIMITS).reason.startswith("strategy position in ES could reach 2001")
    delayed = ck.check_delayed_data(es, replace(bare, delayed_data=True, delayed_policy="block"), LIMITS, LIMITS)
    assert delayed.reason == "market data for ES is delayed (risk.delayed_data = block)"


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
    assert ck.order_notional(o, no_price) is None and ck.order_notional(order("BUY", 10, stop=90.0), no_price) == 900.0
    assert ck.order_notional(order("BUY", 10, limit=95.0, stop=90.0), no_price) == 950.0  # the limit first
    assert ck.order_notional(o, VIEW) == 1000.0  # a market order at the market
    es = order("BUY", 2, symbol="ES", sec_type="FUT", limit=5.0)
    assert ck.order_notional(es, R(contract=ES_INFO)) == 500.0  # IB's multiplier, not the order's
    assert ck.order_notional(es, R(contract=ES_INFO, fx_rate=0.5)) == 250.0  # into the base currency
    assert ck.order_notional(es, R(contract=None)) is None and ck.order_notional(es, R(fx_rate=None)) is None
    assert ck.trade_price(order("BUY", 1, limit=100.004, stop=None), VIEW) == 100.004  # not rounded unless asked
    no_ratio = msgspec.structs.replace(LIMITS, min_buying_power_ratio=0.0)
    assert ck.check_buying_power(o, R(buying_power=None), no_ratio, no_ratio) is None


def test_old_market_data_outside_trading_hours_is_not_stale() -> None:
    assert ck.check_market_data(order("BUY", 10), R(tick_age_s=3600.0, in_session=False), LIMITS, LIMITS) is None
    assert ck.check_market_data(order("BUY", 10), R(tick_age_s=30.0), LIMITS, LIMITS) is None  # at the limit
    v = ck.check_market_data(order("BUY", 10), R(tick_age_s=None, in_session=False), LIMITS, LIMITS)
    assert v is not None and v.code == "risk.no_market_data"


def test_the_early_checks_are_those_that_need_no_market_data() -> None:
    names = [c.__name__ for c in ck.EARLY_CHECKS]
    assert names == ["check_ready", "check_state", "check_disabled", "check_restricted", "check_quantity"]
    assert [c.__name__ for c in ck.CHECKS] == [
        "check_ready", "check_state", "check_disabled", "check_restricted", "check_quantity", "check_contract",
        "check_size", "check_order_type", "check_tick", "check_market_data", "check_delayed_data", "check_fx", "check_notional",
        "check_collar", "check_reducing", "check_duplicate", "check_rate", "check_position", "check_gross",
        "check_buying_power", "check_margin"]
    v = evaluate(order("BUY", 10), R(ref_price=None, tick_age_s=None, contract=None), LIMITS, LIMITS,
                 checks=ck.EARLY_CHECKS)
    assert v == ck.OK and v.reason == "approved"


# -- exposure: the numbers the limits are checked against, exactly (per IB conId, in the base currency) --------

import math  # noqa: E402

from actors.risk.daybook import StrategyDayBook  # noqa: E402
from actors.risk.exposure import (  # noqa: E402
    CANCEL_CONFIRM_CODES, ExposureBook, StatusOutcome, StatusResult, WorkingOrder, is_rejection, multiplier_of,
    order_price,
)
from bus.messages import (  # noqa: E402
    CommissionEvent, FillEvent, IbOrder, OrderSpec, OrderStatusEvent, OrderTerms, Position,
)
from bus.sessions import PnLReset  # noqa: E402

AAPL_ID, ES_ID, NESN_ID = AAPL_INFO.instrument.con_id, ES_INFO.instrument.con_id, 1234567
NQ_ID, CL_ID, ZN_ID = 7001, 7002, 7003  # contracts without IB's details in these tests
AAPL, ES = AAPL_INFO.instrument, ES_INFO.instrument
NESN_INFO = ContractInfo(instrument=Instrument(symbol="NESN", exchange="EBS", currency="CHF", con_id=NESN_ID,
                                               local_symbol="NESN"), min_tick=0.01)
NESN = NESN_INFO.instrument
NQ = Instrument(symbol="NQ", sec_type="FUT", con_id=NQ_ID, multiplier="20", local_symbol="NQH7")
CL = Instrument(symbol="CL", sec_type="FUT", con_id=CL_ID, multiplier="1000", currency="EUR")
INFOS = {AAPL_ID: AAPL_INFO, ES_ID: ES_INFO, NESN_ID: NESN_INFO}
NOW = 1_750_000_000.0


class Prices:
    """A :class:`actors.risk.exposure.Valuer`: market prices by conId, rates by currency (USD at par)."""

    def __init__(self, prices: dict[int, float] | None = None, rates: dict[str, float] | None = None) -> None:
        self.prices = prices or {}
        self.rates = {"USD": 1.0, **(rates or {})}

    def price(self, con_id: int) -> float | None:
        return self.prices.get(con_id)

    def rate(self, currency: str) -> float | None:
        return self.rates.get(currency)


def new_book() -> ExposureBook:
    return ExposureBook(StrategyDayBook(PnLReset("17:00 US/Eastern"), INFOS.get), INFOS.get)


def xfill(key: str, side: str, qty: float, price: float, *, ref: str = "alpha/c1", inst: Instrument = ES,
          correction: bool = False) -> FillEvent:
    return FillEvent(exec_id=key + (".02" if correction else ".01"), exec_key=key, order_ref=ref,
                     strategy_id=ref.split("/")[0] if "/" in ref else "", instrument=inst,
                     side=side, quantity=qty, price=price, is_correction=correction)  # type: ignore[arg-type]


def xstatus(ref: str, st: str, *, filled: float = 0.0, remaining: float = 0.0, code: int | None = None,
            con_id: int = AAPL_ID, symbol: str = "AAPL", perm_id: int = 0,
            terms: OrderTerms | None = None) -> OrderStatusEvent:
    return OrderStatusEvent(order_ref=ref, status=st, filled=filled, remaining=remaining, error_code=code,
                            symbol=symbol, con_id=con_id, perm_id=perm_id, terms=terms)


def spec(strategy: str, coid: str, inst: Instrument, side: str, qty: float, *, limit: float | None = None,
         stop: float | None = None, tif: str = "DAY") -> OrderSpec:
    kind = "STP LMT" if limit is not None and stop is not None else "LMT" if limit is not None else \
        "STP" if stop is not None else "MKT"
    return OrderSpec(strategy_id=strategy, client_order_id=coid, instrument=inst, side=side,  # type: ignore[arg-type]
                     quantity=qty, order_type=kind, limit_price=limit, stop_price=stop, tif=tif)  # type: ignore


def pend(book: ExposureBook, o: OrderSpec, info: ContractInfo, expires: float = 100.0) -> None:
    book.add_pending(o, info, price=order_price(o), expires_mono=expires)


@pytest.mark.parametrize("multiplier,expected", [
    ("", 1.0), ("50", 50.0), ("0.5", 0.5), ("0", 1.0), ("-5", 1.0), ("x", 1.0), ("nan", 1.0), ("inf", 1.0),
])
def test_multiplier_of(multiplier: str, expected: float) -> None:
    assert multiplier_of(Instrument(symbol="X", multiplier=multiplier)) == expected


def test_what_counts_as_a_rejection() -> None:
    for st in ("Cancelled", "ApiCancelled", "Inactive"):
        assert is_rejection(xstatus("a/1", st, code=201))
        assert not is_rejection(xstatus("a/1", st))
        for code in sorted(CANCEL_CONFIRM_CODES):
            assert not is_rejection(xstatus("a/1", st, code=code))
    assert is_rejection(xstatus("a/1", "GatewayRejected"))
    assert not is_rejection(xstatus("a/1", "Submitted", code=201)) and not is_rejection(xstatus("a/1", "Filled",
                                                                                               code=201))
    assert CANCEL_CONFIRM_CODES == {202, 10147, 10148, 161}


def test_an_orders_price_is_its_limit_else_its_stop_else_none() -> None:
    assert order_price(spec("a", "1", AAPL, "BUY", 1, limit=2.0, stop=3.0)) == 2.0
    assert order_price(spec("a", "1", AAPL, "BUY", 1, stop=3.0)) == 3.0
    assert order_price(spec("a", "1", AAPL, "BUY", 1)) is None


def test_a_working_orders_remaining_and_what_stale_data_may_cancel() -> None:
    def w(order_type: str, tif: str = "DAY", quantity: float = 5.0, filled: float = 0.0) -> WorkingOrder:
        return WorkingOrder(order_ref="a/1", strategy="a", con_id=1, symbol="X", side="BUY", quantity=quantity,
                            filled=filled, price=None, multiplier=1.0, currency="USD", pending=False, tif=tif,
                            order_type=order_type)

    assert w("LMT", quantity=5.0, filled=2.0).remaining == 3.0 and w("LMT", quantity=5.0, filled=6.0).remaining == 0
    assert [w(t).protective for t in ("STP", "STP LMT", "", "LMT", "MKT")] == [True, True, True, False, False]
    assert w("LMT").resting_day_order and w("MKT").resting_day_order
    assert not w("LMT", tif="GTC").resting_day_order and not w("STP").resting_day_order
    assert not w("").resting_day_order


def test_fills_move_both_books_and_a_correction_replaces_exactly() -> None:
    book = new_book()
    assert book.on_fill(xfill("e1", "BUY", 2, 5000.0), NOW) is True
    assert book.position(ES_ID) == 2 and book.position(ES_ID, "alpha") == 2
    pos = book.account[ES_ID]
    assert (pos.multiplier, pos.currency, pos.symbol, pos.display) == (50.0, "USD", "ES", "ESH7")
    assert book.on_fill(xfill("e1", "BUY", 2, 5000.0), NOW) is False  # the same execution again
    assert book.on_fill(xfill("e1", "BUY", 2, 5000.0, correction=True), NOW) is False  # a correction changing nothing
    assert book.on_fill(xfill("e1", "BUY", 3, 5010.0, correction=True), NOW) is True
    assert book.position(ES_ID) == 3 and book.position(ES_ID, "alpha") == 3
    assert book.on_fill(xfill("e2", "SELL", 1, 5020.0, ref="beta/c1"), NOW, account_too=False) is True
    assert book.position(ES_ID) == 3 and book.position(ES_ID, "beta") == -1  # IB's positions already hold it
    assert book.fill_strategy("e2") == "beta" and book.fill_strategy("nope") == ""
    assert book.on_fill(xfill("e3", "SELL", 1, 5020.0, ref="manual"), NOW) is True  # not ours: the external owner
    assert book.position(ES_ID) == 2 and book.fill_strategy("e3") == "external"
    assert book.strategies() == {"alpha", "beta"}
    assert book.on_fill(xfill("e3", "SELL", 2, 5020.0, ref="manual", correction=True), NOW) is True
    assert book.position(ES_ID) == 1  # the corrected execution replaced in the account too
    assert book.position(AAPL_ID) == 0.0 and book.position(AAPL_ID, "alpha") == 0.0
    # a contract without IB's details: the instrument's multiplier and currency
    assert book.on_fill(xfill("e4", "SELL", 1, 70.0, inst=CL), NOW) is True
    cl = book.account[CL_ID]
    assert (cl.qty, cl.multiplier, cl.currency, cl.display) == (-1.0, 1000.0, "EUR", "CL")
    book.on_position(Position(account="DU1", instrument=ES, quantity=7, avg_cost=250_000.0, market_price=5001.0))
    p = book.account[ES_ID]
    assert (p.qty, p.market_price, p.avg_cost, p.multiplier, p.display) == (7, 5001.0, 250_000.0, 50.0, "ESH7")
    assert book.position(ES_ID, "alpha") == 3  # IB's position is the account's, never a strategy's
    book.load_positions([Position(account="DU1", instrument=NQ, quantity=-1, avg_cost=1.0)])
    assert list(book.account) == [NQ_ID] and book.account[NQ_ID].multiplier == 20.0
    # IB's details of the contract over what an instrument says (no multiplier, another currency)
    es_bare = Instrument(symbol="ES", sec_type="FUT", con_id=ES_ID, currency="EUR")
    book.on_position(Position(account="DU1", instrument=es_bare, quantity=2, avg_cost=1.0))
    es_pos = book.account[ES_ID]
    assert (es_pos.multiplier, es_pos.currency, es_pos.symbol, es_pos.display) == (50.0, "USD", "ES", "ES")
    book.load_positions([])
    assert book.on_fill(xfill("e9", "BUY", 1, 5000.0, inst=es_bare), NOW) is True
    assert (book.account[ES_ID].multiplier, book.account[ES_ID].currency) == (50.0, "USD")
    book.load_positions([])
    assert book.account == {}


def test_commissions_go_to_the_executions_owner() -> None:
    book = new_book()
    book.on_fill(xfill("e1", "BUY", 1, 10.0), NOW)
    ev = CommissionEvent(exec_id="e1.01", exec_key="e1", order_ref="alpha/c1", commission=2.25, currency="USD")
    assert book.on_commission(ev) == "alpha"
    assert book.on_commission(CommissionEvent(exec_id="e9.01", exec_key="e9", order_ref="beta/x", commission=1.0,
                                              currency="USD")) == ""
    assert book.days.positions["alpha"][ES_ID].day_fees == {"USD": 2.25}
    book.on_fill(xfill("e2", "BUY", 1, 10.0, inst=NESN), NOW)  # a CHF contract charged in USD
    book.on_commission(CommissionEvent(exec_id="e2.01", exec_key="e2", order_ref="alpha/c1", commission=1.5,
                                       currency="USD"))
    assert book.days.positions["alpha"][NESN_ID].day_fees == {"USD": 1.5}


def test_positions_are_valued_at_the_market_else_ibs_mark_else_cost_per_unit() -> None:
    book = new_book()
    book.on_position(Position(account="DU1", instrument=ES, quantity=-2, avg_cost=0.0, market_price=4990.0))
    book.on_position(Position(account="DU1", instrument=NQ, quantity=1, avg_cost=300_000.0, market_price=0.0))
    book.on_position(Position(account="DU1", instrument=CL, quantity=1, avg_cost=0.0, market_price=None))
    book.on_position(Position(account="DU1", instrument=Instrument(symbol="ZN", con_id=ZN_ID), quantity=0,
                              avg_cost=5.0, market_price=None))
    book.on_position(Position(account="DU1", instrument=NESN, quantity=-10, avg_cost=0.0, market_price=100.0))
    v = Prices({ES_ID: 5000.0}, {"CHF": 1.25})
    assert book.value_price(ES_ID, v) == 5000.0  # the market first
    assert book.value_price(ES_ID, Prices()) == 4990.0  # then IB's mark
    assert book.value_price(NQ_ID, v) == 15_000.0  # then IB's cost per unit (avg cost / multiplier)
    assert book.value_price(CL_ID, v) == 0.0 and book.value_price(424242, v) == 0.0
    # gross: |qty| x price x multiplier x rate, flat positions left out; a currency without a rate at par (EUR)
    assert book.gross(v) == 2 * 5000.0 * 50 + 1 * 15_000.0 * 20 + 10 * 100.0 * 1.25
    book.on_position(Position(account="DU1", instrument=CL, quantity=1, avg_cost=70_000.0, market_price=None))
    assert book.gross(v) == 2 * 5000.0 * 50 + 1 * 15_000.0 * 20 + 1 * 70.0 * 1000 + 10 * 100.0 * 1.25
    book.on_position(Position(account="DU1", instrument=ES, quantity=1e-10, avg_cost=0.0, market_price=4990.0))
    assert book.gross(v) == 1 * 15_000.0 * 20 + 1 * 70.0 * 1000 + 10 * 100.0 * 1.25  # float dust is flat
    # a strategy's gross: its own positions (the day book), with IB's multiplier and the contract's rate
    book.on_fill(xfill("e1", "BUY", 2, 4900.0), NOW, account_too=False)
    book.on_fill(xfill("e2", "SELL", 3, 90.0, inst=NESN), NOW, account_too=False)
    book.on_fill(xfill("e3", "BUY", 1, 1.0, ref="beta/x"), NOW, account_too=False)
    assert book.gross(v, "alpha") == 2 * 5000.0 * 50 + 3 * 100.0 * 1.25
    assert book.gross(v, "beta") == 5000.0 * 50 and book.gross(v, "nobody") == 0.0
    book.on_fill(xfill("e4", "SELL", 1, 1.0, ref="beta/x"), NOW, account_too=False)
    assert book.gross(v, "beta") == 0.0
    pend(book, spec("beta", "w", ES, "BUY", 1, limit=5000.0), ES_INFO)
    pend(book, spec("alpha", "w", ES, "BUY", 2, limit=5000.0), ES_INFO)
    assert book.gross(v, "beta") == 5000.0 * 50  # beta's working order, not alpha's
    assert book.gross(v, "alpha", exclude="alpha/w") == 2 * 5000.0 * 50 + 3 * 100.0 * 1.25
    assert book.gross(v, exclude="beta/w") == book.gross(v) - 5000.0 * 50


def test_a_mark_or_a_cost_below_one_is_still_a_price() -> None:
    book = new_book()
    book.on_position(Position(account="DU1", instrument=Instrument(symbol="P", con_id=11), quantity=100,
                              avg_cost=0.0, market_price=0.5))
    book.on_position(Position(account="DU1", instrument=Instrument(symbol="C", con_id=12), quantity=100,
                              avg_cost=0.25, market_price=None))
    assert book.value_price(11, Prices()) == 0.5 and book.value_price(12, Prices()) == 0.25


def test_working_orders_count_at_their_price_or_the_market_with_ibs_multiplier_and_rate() -> None:
    book = new_book()
    v = Prices({ES_ID: 5000.0, NESN_ID: 60.0}, {"CHF": 1.25})
    es = spec("alpha", "l1", ES, "BUY", 2, limit=4900.0)
    mkt = spec("beta", "m1", ES, "SELL", 3)
    pend(book, es, ES_INFO, 10.0)
    pend(book, mkt, ES_INFO, 10.0)
    assert book.working_notional(v) == 2 * 4900.0 * 50 + 3 * 5000.0 * 50
    assert book.working_notional(v, "alpha") == 2 * 4900.0 * 50
    assert book.working_notional(v, "beta") == 3 * 5000.0 * 50
    assert book.working_notional(v, exclude="alpha/l1") == 3 * 5000.0 * 50
    assert book.working_notional(v, "beta", exclude="beta/m1") == 0.0
    assert book.working_notional(v, "alpha", exclude="beta/m1") == 2 * 4900.0 * 50  # not alpha's order
    assert book.working_notional(v, exclude="nope") == 2 * 4900.0 * 50 + 3 * 5000.0 * 50
    assert book.working_qty(ES_ID) == (2.0, 3.0) and book.working_qty(ES_ID, "alpha") == (2.0, 0.0)
    assert book.working_qty(ES_ID, exclude="alpha/l1") == (0.0, 3.0) and book.working_qty(AAPL_ID) == (0.0, 0.0)
    assert book.working_qty(ES_ID, exclude="beta/m1") == (2.0, 0.0)
    assert book.working_qty(ES_ID, "alpha", exclude="beta/m1") == (2.0, 0.0)
    assert book.working_qty(AAPL_ID, exclude="alpha/l1") == (0.0, 0.0)  # another contract's order
    assert book.working_con_ids() == {ES_ID} and book.gross(v) == book.working_notional(v)
    assert [w.order_ref for w in book.working_in(ES_ID)] == ["alpha/l1", "beta/m1"] and book.working_in(1) == []
    w = book.working["alpha/l1"]
    assert (w.strategy, w.con_id, w.symbol, w.side, w.multiplier, w.currency, w.pending, w.expires_mono, w.tif,
            w.order_type) == ("alpha", ES_ID, "ES", "BUY", 50.0, "USD", True, 10.0, "DAY", "LMT")
    # the contract's currency: priced orders and market orders in CHF, valued at the CHF rate
    pend(book, spec("gamma", "n1", NESN, "BUY", 10, limit=50.0), NESN_INFO)
    pend(book, spec("gamma", "n2", NESN, "SELL", 4), NESN_INFO)
    assert book.working_notional(v, "gamma") == 10 * 50.0 * 1.25 + 4 * 60.0 * 1.25
    assert book.working_notional(v, "gamma", exclude="gamma/n1") == 4 * 60.0 * 1.25
    assert book.working_notional(v, "gamma", exclude="gamma/n2") == 10 * 50.0 * 1.25
    assert book.working_notional(Prices({NESN_ID: 60.0}), "gamma") == 10 * 50.0 + 4 * 60.0  # no CHF rate: at par
    assert book.working_notional(Prices({}, {"CHF": 1.25}), "gamma") == 10 * 50.0 * 1.25  # no market: at nothing
    # an order IB reports filled in part counts for what remains
    r = book.on_status(xstatus("alpha/l1", "Submitted", filled=1.5, remaining=0.5, con_id=ES_ID, symbol="ES"))
    assert r == StatusResult(StatusOutcome.KNOWN, "alpha", ES_ID, False)
    assert book.working_notional(v, "alpha") == 0.5 * 4900.0 * 50 and book.working_qty(ES_ID, "alpha") == (0.5, 0.0)
    w = book.working["alpha/l1"]
    assert (w.pending, w.expires_mono, w.quantity, w.filled, w.remaining) == (False, math.inf, 2.0, 1.5, 0.5)
    # a modification keeps what was filled and the confirmed order's clock
    book.add_pending(msgspec.structs.replace(es, quantity=1.0, limit_price=4950.0), ES_INFO, price=4950.0,
                     expires_mono=20.0)
    w = book.working["alpha/l1"]
    assert (w.quantity, w.filled, w.price, w.pending, w.expires_mono) == (1.5, 1.5, 4950.0, False, math.inf)
    book.add_pending(msgspec.structs.replace(es, quantity=3.0), ES_INFO, price=4950.0, expires_mono=20.0)
    assert (book.working["alpha/l1"].quantity, book.working_qty(ES_ID, "alpha")) == (3.0, (1.5, 0.0))
    book.add_pending(msgspec.structs.replace(mkt, quantity=2.0), ES_INFO, price=None, expires_mono=50.0)
    assert book.working["beta/m1"].expires_mono == 50.0  # still pending: the new approval's clock
    assert book.expire_pending(49.0) == [] and book.expire_pending(50.0) == ["beta/m1"]
    assert book.expire_pending(100.0) == ["gamma/n1", "gamma/n2"] and book.expire_pending(1e9) == []
    assert book.working_con_ids() == {ES_ID} and book.working_qty(ES_ID) == (1.5, 0.0)


def test_status_events_track_unknown_working_orders_done_ones_and_first_rejections() -> None:
    book = new_book()
    assert book.on_status(xstatus("alpha/x", "Cancelled")) == StatusResult(StatusOutcome.IGNORED, "alpha", AAPL_ID)
    assert book.on_status(xstatus("alpha/y", "Submitted", con_id=0)) == StatusResult(StatusOutcome.IGNORED, "alpha",
                                                                                     0)
    assert book.working == {}
    r = book.on_status(xstatus("manual", "Submitted", remaining=30.0))
    assert r == StatusResult(StatusOutcome.UNKNOWN_WORKING, "", AAPL_ID, False)
    w = book.working["manual"]
    assert (w.side, w.quantity, w.filled, w.price, w.multiplier, w.currency, w.pending, w.symbol) == (
        None, 30.0, 0.0, None, 1.0, "USD", False, "AAPL")
    assert book.working_qty(AAPL_ID) == (30.0, 30.0)  # side unknown: counted on both
    r = book.on_status(xstatus("manual", "PreSubmitted"))
    assert r.outcome is StatusOutcome.KNOWN and book.working["manual"].quantity == 30.0  # remaining 0 keeps it
    assert book.working_qty(AAPL_ID) == (30.0, 30.0)
    # an unknown order's contract: IB's details, else an account position's, else 1 in USD
    book.on_status(xstatus("other/es", "Submitted", remaining=1.0, con_id=ES_ID, symbol="ES"))
    assert (book.working["other/es"].multiplier, book.working["other/es"].strategy) == (50.0, "other")
    book.on_position(Position(account="DU1", instrument=CL, quantity=1, avg_cost=1.0))
    book.on_status(xstatus("x/cl", "Submitted", remaining=1.0, con_id=CL_ID, symbol="CL"))
    assert (book.working["x/cl"].multiplier, book.working["x/cl"].currency) == (1000.0, "EUR")
    book.on_status(xstatus("x/zz", "Submitted", remaining=1.0, con_id=999, symbol="ZZ"))
    assert (book.working["x/zz"].multiplier, book.working["x/zz"].currency) == (1.0, "USD")
    pend(book, spec("alpha", "r", AAPL, "BUY", 5), AAPL_INFO, 99.0)
    first = book.on_status(xstatus("alpha/r", "Inactive", code=201, remaining=5.0))
    assert first == StatusResult(StatusOutcome.KNOWN, "alpha", AAPL_ID, True)
    again = book.on_status(xstatus("alpha/r", "Cancelled", code=201))
    assert again == StatusResult(StatusOutcome.DONE, "alpha", AAPL_ID, False)  # counted once
    assert "alpha/r" not in book.working
    pend(book, spec("alpha", "q", AAPL, "BUY", 5), AAPL_INFO, 99.0)
    assert book.on_status(xstatus("alpha/q", "Cancelled", code=201)) == StatusResult(StatusOutcome.DONE, "alpha",
                                                                                     AAPL_ID, True)
    pend(book, spec("alpha", "k", AAPL, "BUY", 5), AAPL_INFO, 99.0)
    assert book.on_status(xstatus("alpha/k", "Cancelled", code=202)).rejected is False  # a cancel: not a rejection
    assert book.working_qty(AAPL_ID, "alpha") == (0.0, 0.0)


def test_open_orders_from_ib_replace_the_working_set() -> None:
    book = new_book()
    pend(book, spec("alpha", "p", AAPL, "BUY", 5, limit=10.0), AAPL_INFO, 50.0)
    pend(book, spec("alpha", "old", AAPL, "BUY", 5), AAPL_INFO, 5.0)
    book.on_status(xstatus("alpha/gone", "Submitted", remaining=4.0))
    ib = [IbOrder(ib_order_id=1, perm_id=11, client_id=7, order_ref="alpha/s", instrument=ES, side="SELL",
                  quantity=4, order_type="STP", stop_price=4000.0, tif="GTC", status="Submitted", filled=1.0,
                  remaining=3.0),
          IbOrder(ib_order_id=2, perm_id=12, client_id=0, order_ref="", instrument=AAPL, side="BUY", quantity=7,
                  order_type="LMT", limit_price=9.0, status="PreSubmitted"),
          IbOrder(ib_order_id=3, perm_id=13, client_id=7, order_ref="alpha/f", instrument=AAPL, side="BUY",
                  quantity=7, order_type="MKT", status="Filled", filled=7.0),
          IbOrder(ib_order_id=4, perm_id=14, client_id=3, order_ref="beta/n", instrument=NQ, side="BUY",
                  quantity=2, order_type="LMT", limit_price=100.0, stop_price=90.0, status="Submitted",
                  remaining=2.0)]
    book.load_open_orders(ib, now=10.0)
    assert sorted(book.working) == ["alpha/p", "alpha/s", "beta/n", "perm:12"]  # without a ref: by its permId
    s = book.working["alpha/s"]
    assert [w.order_ref for w in book.working_in(ES_ID)] == ["alpha/s"]
    assert (s.strategy, s.con_id, s.symbol, s.side, s.quantity, s.filled, s.price, s.multiplier, s.currency,
            s.pending, s.tif, s.order_type) == ("alpha", ES_ID, "ES", "SELL", 4.0, 1.0, 4000.0, 50.0, "USD", False,
                                                "GTC", "STP")
    m = book.working["perm:12"]
    assert (m.strategy, m.quantity, m.filled, m.price, m.side) == ("", 7.0, 0.0, 9.0, "BUY")
    n = book.working["beta/n"]
    assert (n.multiplier, n.price, n.quantity) == (20.0, 100.0, 2.0)  # the instrument's multiplier; the limit
    assert book.working_qty(ES_ID) == (0.0, 3.0) and book.working_qty(AAPL_ID) == (12.0, 0.0)
    assert book.working_notional(Prices()) == 3 * 4000.0 * 50 + 5 * 10.0 + 7 * 9.0 + 2 * 100.0 * 20
    # IB's details of the contract over what the listed order's instrument says
    bare = Instrument(symbol="ES", sec_type="FUT", con_id=ES_ID, currency="EUR")
    book.load_open_orders([IbOrder(ib_order_id=9, perm_id=19, client_id=0, order_ref="", instrument=bare, side="BUY",
                                   quantity=1, order_type="LMT", limit_price=4000.0, status="Submitted")], now=10.0)
    assert (book.working["perm:19"].multiplier, book.working["perm:19"].currency) == (50.0, "USD")


def test_ibs_open_orders_count_what_ib_says_is_left() -> None:
    book = new_book()
    ib = [IbOrder(ib_order_id=1, perm_id=11, client_id=7, order_ref="alpha/cut", instrument=AAPL, side="BUY",
                  quantity=10, order_type="LMT", limit_price=1.0, status="Submitted", filled=1.0, remaining=3.0),
          IbOrder(ib_order_id=2, perm_id=12, client_id=7, order_ref="alpha/new", instrument=AAPL, side="BUY",
                  quantity=10, order_type="LMT", limit_price=1.0, status="Submitted", remaining=7.0),
          IbOrder(ib_order_id=3, perm_id=13, client_id=7, order_ref="alpha/echo", instrument=AAPL, side="BUY",
                  quantity=10, order_type="LMT", limit_price=1.0, status="PreSubmitted")]
    book.load_open_orders(ib, now=0.0)
    assert {k: (w.quantity, w.remaining) for k, w in book.working.items()} == {
        "alpha/cut": (4.0, 3.0), "alpha/new": (7.0, 7.0), "alpha/echo": (10.0, 10.0)}
    assert book.working_qty(AAPL_ID) == (20.0, 0.0)


def test_status_figures_below_one_share_still_move_a_working_order() -> None:
    book = new_book()
    r = book.on_status(xstatus("beta/x", "PreSubmitted", filled=0.0, remaining=0.0))
    w = book.working["beta/x"]
    assert r.outcome is StatusOutcome.UNKNOWN_WORKING and (w.order_ref, w.strategy, w.quantity, w.filled,
                                                           w.pending) == ("beta/x", "beta", 0.0, 0.0, False)
    book.on_status(xstatus("beta/x", "Submitted", filled=0.5, remaining=0.0))
    assert (book.working["beta/x"].quantity, book.working["beta/x"].filled) == (0.5, 0.5)
    book.on_status(xstatus("beta/y", "Submitted", remaining=0.5))
    assert book.working["beta/y"].quantity == 0.5 and book.working_qty(AAPL_ID) == (0.5, 0.5)


def test_an_order_seen_first_at_ib_is_keyed_by_its_perm_id_and_counted_with_ibs_terms() -> None:
    book = new_book()
    ev = xstatus("", "Submitted", perm_id=55, remaining=5.0,
                 terms=OrderTerms(side="SELL", quantity=5.0, order_type="STP", stop_price=9.0, tif="GTC"))
    r = book.on_status(ev)
    w = book.working["perm:55"]
    assert r == StatusResult(StatusOutcome.UNKNOWN_WORKING, "", AAPL_ID, False)
    assert (w.order_ref, w.side, w.price, w.pending, w.tif, w.order_type) == ("perm:55", "SELL", 9.0, False, "GTC",
                                                                              "STP")
    assert book.working_qty(AAPL_ID) == (0.0, 5.0) and book.working_notional(Prices()) == 45.0
    odd = xstatus("", "Submitted", perm_id=56, remaining=1.0,
                  terms=OrderTerms(side="", quantity=1.0, order_type="LMT", limit_price=8.0))
    book.on_status(odd)
    assert (book.working["perm:56"].side, book.working["perm:56"].price) == (None, 8.0)  # no side: both sides
    book.on_status(xstatus("", "Submitted", perm_id=57, remaining=2.0, con_id=ES_ID, symbol="ES",
                           terms=OrderTerms(side="BUY", quantity=2.0, order_type="MKT")))
    assert book.working["perm:57"].side == "BUY" and book.working_qty(ES_ID) == (2.0, 0.0)
    assert book.working_con_ids() == {AAPL_ID, ES_ID}  # orders nobody here placed count
    book.on_status(xstatus("", "Cancelled", perm_id=57, con_id=ES_ID, symbol="ES"))
    book.on_status(xstatus("", "Submitted", perm_id=55, remaining=5.0,
                           terms=OrderTerms(side="SELL", quantity=5.0, limit_price=9.5, stop_price=9.0)))
    w = book.working["perm:55"]
    assert (w.price, w.tif, w.order_type) == (9.5, "GTC", "STP")  # IB's new price; what it did not restate stays
    assert book.working_notional(Prices()) == 5 * 9.5 + 8.0
    book.on_status(xstatus("", "Cancelled", perm_id=55))
    assert "perm:55" not in book.working and book.working_qty(AAPL_ID) == (1.0, 1.0)
    # an order of ours whose amendment IB confirmed: IB's terms replace the approved ones
    pend(book, spec("alpha", "a", AAPL, "BUY", 5, limit=10.0), AAPL_INFO)
    book.on_status(xstatus("alpha/a", "Submitted", remaining=5.0,
                           terms=OrderTerms(side="BUY", quantity=5.0, order_type="LMT", limit_price=11.0, tif="GTC")))
    a = book.working["alpha/a"]
    assert (a.price, a.tif, a.side) == (11.0, "GTC", "BUY")


def test_strategies_and_contract_names() -> None:
    book = new_book()
    book.on_fill(xfill("e1", "BUY", 1, 1.0, ref="alpha/a", inst=Instrument(symbol="ES", con_id=ES_ID)), NOW)
    book.on_fill(xfill("e2", "BUY", 1, 1.0, ref="manual"), NOW)
    pend(book, spec("beta", "b", AAPL, "BUY", 1), AAPL_INFO)
    book.on_status(xstatus("hand", "Submitted", remaining=1.0, con_id=31, symbol="XYZ"))
    assert book.strategies() == {"alpha", "beta"}  # the external owner and an order without one left out
    book.on_position(Position(account="DU1", instrument=NQ, quantity=1, avg_cost=1.0))
    assert [book.display(c) for c in (ES_ID, NQ_ID, 31, 32)] == ["ESH7", "NQH7", "XYZ (conId 31)", "conId 32"]


# -- trading states: every change exactly, the file exactly, recovery exactly ------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import stat  # noqa: E402

from actors.risk.trading_state import (  # noqa: E402
    ACTIVE, RECOVERY_CAUSE, RECOVERY_ORIGIN, REDUCING, Change, PersistError, ScopeState, TransitionRefused,
)

OP, BRK, LIFT = Authority.OPERATOR, Authority.BREAKER, Authority.LIFT


def same(a: ScopeState | None, b: ScopeState | None) -> bool:
    """Equal but for wall_ns (set from the clock), recursively through ``prior``."""
    if a is None or b is None:
        return a is b
    return (a.state, a.reason, a.origin, a.epoch) == (b.state, b.reason, b.origin, b.epoch) and same(a.prior, b.prior)


def test_changes_carry_scope_old_new_epoch_and_what_a_breaker_covered(path: Path) -> None:
    ts = TradingStates.load(path)
    assert ts.load_error == "" and ts.epoch == 0
    c1 = ts.set("all", REDUCING, reason="op says so", origin="cli", authority=OP)
    assert isinstance(c1, Change) and (c1.scope, c1.persisted) == ("all", True)
    assert same(c1.old, ScopeState(state=ACTIVE)) and same(c1.new, ScopeState(state=REDUCING, reason="op says so",
                                                                               origin="cli", epoch=1))
    assert c1.new.wall_ns > 0 and c1.new.prior is None
    c2 = ts.set("all", HALTED, reason="loss", origin="breaker.loss", authority=BRK)
    assert same(c2.old, c1.new) and same(c2.new, ScopeState(state=HALTED, reason="loss", origin="breaker.loss",
                                                            epoch=2, prior=c1.new))
    assert ts.set("all", HALTED, reason="loss again", origin="breaker.loss", authority=BRK) is None  # no change
    with pytest.raises(TransitionRefused, match="^breaker may not move all from HALTED to REDUCING$"):
        ts.set("all", REDUCING, reason="r", origin="breaker.x", authority=BRK)
    with pytest.raises(TransitionRefused, match="^all HALTED was set by breaker.loss, not by breaker.other$"):
        ts.set("all", ACTIVE, reason="r", origin="breaker.other", authority=LIFT)
    lifted = ts.set("all", ACTIVE, reason="ignored", origin="breaker.loss", authority=LIFT)
    assert same(lifted.new, ScopeState(state=REDUCING, reason="op says so", origin="cli", epoch=3))  # restored
    assert ts.get("all").state == REDUCING and ts.epoch == 3
    with pytest.raises(TransitionRefused, match="^all REDUCING was set by cli, not by breaker.loss$"):
        ts.set("all", ACTIVE, reason="r", origin="breaker.loss", authority=LIFT)
    again = ts.set("all", REDUCING, reason="op again", origin="cli", authority=OP)  # an operator may repeat a state
    assert again is not None and again.new.epoch == 4 and again.new.prior is None
    assert ts.set("all", ACTIVE, reason="done", origin="cli", authority=OP).new.epoch == 5
    assert ts.set("all", ACTIVE, reason="done", origin="cli", authority=OP) is None and "all" not in ts.scopes
    assert ts.set("symbol:X", ACTIVE, reason="r", origin="breaker.y", authority=LIFT) is None  # nothing to lift
    with pytest.raises(TransitionRefused, match="^unknown trading state 'PAUSED'$"):
        ts.set("all", "PAUSED", reason="r", origin="cli", authority=OP)
    unset = TradingStates(None)
    unset.scopes["all"] = ScopeState(state=HALTED, epoch=1)
    with pytest.raises(TransitionRefused, match="was set by an operator, not by breaker.z"):
        unset.set("all", ACTIVE, reason="r", origin="breaker.z", authority=LIFT)
    brk = TradingStates(None)
    first = brk.set("strategy:a", HALTED, reason="b", origin="breaker.b", authority=BRK)
    assert first.new.prior is None  # nothing covered: ACTIVE is not remembered
    assert brk.set("strategy:a", ACTIVE, reason="x", origin="breaker.b", authority=LIFT).new.state == ACTIVE
    long = brk.set("all", HALTED, reason="r" * 600, origin="cli", authority=OP)
    assert len(long.new.reason) == 500


def test_a_breaker_lift_may_only_restore_a_less_severe_state(path: Path) -> None:
    ts = TradingStates(None)
    ts.scopes["all"] = ScopeState(state=REDUCING, origin="breaker.b", epoch=1,
                                  prior=ScopeState(state=HALTED, reason="op halt", origin="cli", epoch=0))
    with pytest.raises(TransitionRefused, match="^breaker.b may not lift all from REDUCING to HALTED$"):
        ts.set("all", ACTIVE, reason="r", origin="breaker.b", authority=LIFT)


def test_the_file_is_exactly_the_table_and_private(path: Path) -> None:
    ts = TradingStates.load(path)
    ts.set("all", REDUCING, reason="r1", origin="cli", authority=OP)
    ts.set("all", HALTED, reason="r2", origin="breaker.b", authority=BRK)
    ts.disable("alpha", "too many fills")
    text = path.read_text()
    assert text == json.dumps(ts.to_json(), indent=1, sort_keys=True)
    data = json.loads(text)
    assert data["version"] == 1 and data["epoch"] == 2 and data["disabled"] == {"alpha": "too many fills"}
    entry = data["scopes"]["all"]
    assert sorted(entry) == ["cause", "epoch", "kill_id", "origin", "prior", "reason", "state", "wall_ns"]
    assert (entry["state"], entry["reason"], entry["origin"], entry["epoch"]) == ("HALTED", "r2", "breaker.b", 2)
    assert entry["prior"]["state"] == "REDUCING" and entry["prior"]["prior"] is None and entry["wall_ns"] > 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    back = TradingStates.load(path)
    assert back.scopes == ts.scopes and back.epoch == 2 and back.disabled == ts.disabled and back.load_error == ""
    minimal = ScopeState.from_json({"state": "REDUCING", "epoch": 3})
    assert minimal == ScopeState(state=REDUCING, reason="", origin="", epoch=3, wall_ns=0, prior=None, cause="",
                                 kill_id="")
    with pytest.raises(ValueError, match="^unknown state 'NOPE'$"):
        ScopeState.from_json({"state": "NOPE", "epoch": 1})
    deep = path.parent / "a" / "b" / "risk.json"
    write_json_atomic(deep, {"k": 1})
    assert json.loads(deep.read_text()) == {"k": 1}


def test_an_unreadable_or_corrupt_file_starts_halted_and_is_kept_aside(path: Path) -> None:
    path.write_text(json.dumps({"version": 9, "epoch": 4, "scopes": {}}))
    ts = TradingStates.load(path)
    assert ts.load_error.startswith(f"state file {path} is corrupt (version 9, expected 1); kept as risk.json.corrupt-")
    rec = ts.get("all")
    assert (rec.state, rec.origin, rec.epoch) == (HALTED, RECOVERY_ORIGIN, 1) and rec.wall_ns > 0
    assert rec.reason == f"recovery: {ts.load_error}"[:500]
    kept = [p for p in path.parent.iterdir() if p.name.startswith("risk.json.corrupt-")]
    assert len(kept) == 1 and json.loads(kept[0].read_text())["version"] == 9
    assert TradingStates.load(path).get("all").state == HALTED  # the HALT was written: it survives a restart
    path.write_text(json.dumps({"version": 1, "epoch": 6, "scopes": {"all": {"state": "REDUCING", "epoch": 6}}}))
    fine = TradingStates.load(path)
    assert fine.epoch == 6 and fine.disabled == {} and fine.get("all").state == REDUCING and fine.load_error == ""
    folder = path.parent / "folder.json"
    folder.mkdir()
    odd = TradingStates.load(folder)
    assert odd.load_error.startswith(f"state file {folder} unreadable: ") and odd.get("all").state == HALTED
    assert odd.epoch == 1


def test_a_write_that_fails_keeps_escalations_and_refuses_anything_less_restrictive(path: Path) -> None:
    ts = TradingStates.load(path)
    ts.set("all", REDUCING, reason="r", origin="cli", authority=OP)
    ts.path = path.parent / "missing-dir-file" / "x" / "risk.json"
    blocker = path.parent / "missing-dir-file"
    blocker.write_text("a file where a folder must be")  # every write under it fails
    halted = ts.set("all", HALTED, reason="h", origin="breaker.b", authority=BRK)
    assert halted is not None and (halted.scope, halted.persisted, halted.new.state) == ("all", False, HALTED)
    assert ts.get("all").state == HALTED and ts.epoch == 2 and same(halted.old, ScopeState(
        state=REDUCING, reason="r", origin="cli", epoch=1))
    with pytest.raises(PersistError, match="^cannot write .*risk.json: "):
        ts.set("all", REDUCING, reason="back", origin="cli", authority=OP)
    assert ts.get("all").state == HALTED and ts.epoch == 2  # never less restricted than what was on disk
    with pytest.raises(PersistError):
        ts.set("all", ACTIVE, reason="off", origin="cli", authority=OP)
    assert ts.get("all").state == HALTED and "all" in ts.scopes
    with pytest.raises(PersistError):
        ts.set("all", ACTIVE, reason="lift", origin="breaker.b", authority=LIFT)
    assert ts.get("all").state == HALTED
    assert ts.disable("alpha", "x" * 600) is True and len(ts.disabled["alpha"]) == 500  # applied, not persisted
    assert ts.disable("alpha", "again") is False
    with pytest.raises(PersistError):
        ts.enable("alpha")
    assert ts.disabled["alpha"] == "x" * 500  # re-enabling must be durable: kept disabled
    assert ts.enable("beta") is False


def test_the_most_severe_state_governs_an_order() -> None:
    ts = TradingStates(None)
    ts.set("symbol:AAPL", REDUCING, reason="r", origin="cli", authority=OP)
    assert ts.effective("alpha", "AAPL") == (REDUCING, ["symbol:AAPL"])
    ts.set("strategy:alpha", HALTED, reason="r", origin="cli", authority=OP)
    ts.set("all", REDUCING, reason="r", origin="cli", authority=OP)
    assert ts.effective("alpha", "AAPL") == (HALTED, ["symbol:AAPL", "strategy:alpha", "all"])  # as set
    assert ts.effective("alpha", "aapl") == (HALTED, ["symbol:AAPL", "strategy:alpha", "all"])  # any case
    assert ts.effective("beta", "MSFT") == (REDUCING, ["all"])
    assert set(ts.non_active()) == {"all", "strategy:alpha", "symbol:AAPL"}
    ts.set("all", ACTIVE, reason="r", origin="cli", authority=OP)
    assert ts.effective("beta", "MSFT") == (ACTIVE, []) and "all" not in ts.non_active()
    # one contract (IB's conId): only orders in that contract, never an order whose contract is not known
    ts.set("conid:551601503", HALTED, reason="r", origin="cli", authority=OP)
    assert ts.effective("beta", "ES", 551601503) == (HALTED, ["conid:551601503"])
    assert ts.effective("beta", "ES", 551601532) == (ACTIVE, []) and ts.effective("beta", "ES") == (ACTIVE, [])
    ts.set("conid:1", HALTED, reason="r", origin="cli", authority=OP)
    assert ts.effective("beta", "ES") == (ACTIVE, [])  # an order whose contract is not known: no conid: scope
    ts.set("symbol:ES", REDUCING, reason="r", origin="cli", authority=OP)
    assert ts.effective("beta", "ES", 551601532) == (REDUCING, ["symbol:ES"])
    assert ts.effective("beta", "ES", 551601503) == (HALTED, ["conid:551601503", "symbol:ES"])


def test_a_state_keeps_its_cause_and_kill_and_a_lift_restores_the_covered_ones(path: Path) -> None:
    ts = TradingStates.load(path)
    plain = ts.set("all", REDUCING, reason="r", origin="cli", authority=OP)
    assert (plain.new.cause, plain.new.kill_id) == ("", "")
    ts.set("all", HALTED, reason="kill k9", origin="cli", authority=OP, cause="kill", kill_id="k9")
    ts.set("all", ACTIVE, reason="resume", origin="cli", authority=OP)
    ts.set("all", HALTED, reason="kill k9", origin="cli", authority=OP, cause="kill", kill_id="k9")
    brk = ts.set("all", HALTED, reason="loss", origin="breaker.loss", authority=BRK, cause="breaker")
    assert brk is None  # HALTED already
    ts.set("symbol:X", REDUCING, reason="op", origin="cli", authority=OP, cause="operator", kill_id="")
    over = ts.set("symbol:X", HALTED, reason="loss", origin="breaker.loss", authority=BRK, cause="breaker")
    assert (over.new.cause, over.new.prior.cause) == ("breaker", "operator")
    back = ts.set("symbol:X", ACTIVE, reason="x", origin="breaker.loss", authority=LIFT)
    assert (back.new.state, back.new.cause, back.new.kill_id, back.new.reason, back.new.origin) == (
        REDUCING, "operator", "", "op", "cli")
    again = TradingStates.load(path)
    assert (again.get("all").cause, again.get("all").kill_id) == ("kill", "k9")
    assert again.get("symbol:X").cause == "operator"
    deep = ScopeState(state=HALTED, epoch=3, cause="breaker", kill_id="",
                      prior=ScopeState(state=REDUCING, epoch=2, cause="kill", kill_id="k1"))
    assert ScopeState.from_json(json.loads(json.dumps(deep.to_json()))) == deep
    ts.scopes["symbol:Y"] = ScopeState(state=HALTED, origin="breaker.z", epoch=9, cause="breaker",
                                       prior=ScopeState(state=REDUCING, origin="cli", epoch=8, cause="kill",
                                                        kill_id="k8", prior=ScopeState(state=REDUCING, epoch=7)))
    lifted = ts.set("symbol:Y", ACTIVE, reason="x", origin="breaker.z", authority=LIFT)
    assert (lifted.new.state, lifted.new.cause, lifted.new.kill_id, lifted.new.prior) == (
        REDUCING, "kill", "k8", ScopeState(state=REDUCING, epoch=7))


def test_a_recovered_state_says_so_and_bad_numbers_are_named(path: Path) -> None:
    path.write_text("{not json")
    ts = TradingStates.load(path)
    assert ts.get("all").cause == RECOVERY_CAUSE and ts.epoch == 1
    path.write_text(json.dumps({"version": 1, "epoch": 3, "scopes": {"all": {"state": "HALTED", "epoch": [1]}}}))
    bad = TradingStates.load(path)
    assert "expected a number, got list" in bad.load_error and bad.epoch == 4  # the file's epoch, then one more
