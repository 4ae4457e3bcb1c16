"""Unit tests of the pure pre-trade checks: each rejects with its code, each passes within its limit, REDUCING
admission, per-strategy overrides, and properties (hypothesis) of the position and collar checks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.risk import codes
from actors.risk.checks import BookView, RiskView, evaluate, order_notional, reduces
from actors.risk.limits import LimitTable, merge_limits
from bus.config import RiskConfig, RiskLimits, StrategyLimits
from bus.messages import ContractInfo, Instrument
from tests.support.builders import order_for

#: the risk tests' orders belong to strategy "alpha" unless a test says otherwise
order = order_for("alpha")

LIMITS = RiskLimits(max_order_quantity=1000, max_order_notional=50_000, price_collar_pct=5, max_position=2000,
                    max_gross_exposure=300_000, max_orders_per_second=5, duplicate_window_s=1,
                    restricted_symbols=["GME"], min_buying_power_ratio=1.0)
AAPL = ContractInfo(instrument=Instrument(symbol="AAPL", con_id=265598, local_symbol="AAPL"), min_tick=0.01)
ES_MARCH = ContractInfo(instrument=Instrument(symbol="ES", sec_type="FUT", exchange="CME", con_id=551601503,
                                              last_trade_date="20270319", multiplier="50", local_symbol="ESH7"),
                        multiplier=50.0, min_tick=0.25)
VIEW = RiskView(ref_price=100.0, tick_age_s=0.1, buying_power=1_000_000.0, restricted=frozenset({"GME"}),
                contract=AAPL, fx_rate=1.0, base_currency="USD")


def verdict(o, view=VIEW, limits=LIMITS, account=LIMITS):
    return evaluate(o, view, limits, account)


def _replace(v: RiskView, **changes) -> RiskView:
    from dataclasses import replace

    return replace(v, **changes)


def test_order_within_every_limit_is_approved():
    assert verdict(order("BUY", 100, limit=100.0)).code == codes.APPROVED


@pytest.mark.parametrize("o, v, code", [
    (order("BUY", 10), _replace(VIEW, ready=False), codes.NOT_READY),
    (order("BUY", 10), _replace(VIEW, state="HALTED", state_scopes=("all",)), codes.HALTED),
    (order("BUY", 10), _replace(VIEW, disabled_reason="3 fills in 1s"), codes.STRATEGY_DISABLED),
    (order("BUY", 10, symbol="GME"), VIEW, codes.RESTRICTED),
    (order("BUY", 10, symbol="gme"), VIEW, codes.RESTRICTED),
    (order("BUY", 10), _replace(VIEW, contract=None, contract_refusal=("unknown_symbol", "no such contract")),
     codes.UNKNOWN_SYMBOL),
    (order("BUY", 10), _replace(VIEW, contract=None, contract_refusal=("contract_mismatch", "multiplier 5 vs 50")),
     codes.CONTRACT_MISMATCH),
    (order("BUY", 10), _replace(VIEW, contract=None, contract_refusal=("ambiguous_contract", "ESH7, ESM7")),
     codes.AMBIGUOUS_CONTRACT),
    (order("BUY", 10), _replace(VIEW, contract=None), codes.NOT_QUALIFIED),
    (order("BUY", 10), _replace(VIEW, contract=None, contract_refusal=("disconnected", "IB is away")),
     codes.NOT_QUALIFIED),
    (order("BUY", 0.5), VIEW, codes.SIZE_INCREMENT),
    (order("BUY", 10, limit=100.005), VIEW, codes.TICK_SIZE),
    (order("BUY", 10, stop=99.999), VIEW, codes.TICK_SIZE),
    (order("BUY", 10), _replace(VIEW, fx_rate=None), codes.NO_FX_RATE),
    (order("BUY", 10), _replace(VIEW, ref_price=None, tick_age_s=None), codes.NO_MARKET_DATA),
    (order("BUY", 10), _replace(VIEW, tick_age_s=31.0), codes.STALE_MARKET_DATA),
    (order("BUY", 1001, limit=10.0), VIEW, codes.MAX_QUANTITY),
    (order("BUY", 501), VIEW, codes.MAX_NOTIONAL),
    (order("BUY", 10, limit=106.0), VIEW, codes.PRICE_COLLAR),
    (order("SELL", 10, limit=94.0), VIEW, codes.PRICE_COLLAR),
    (order("BUY", 10, stop=80.0), VIEW, codes.PRICE_COLLAR),
    (order("BUY", 10), _replace(VIEW, state="REDUCING", reducing_scopes=("all",)), codes.REDUCING),
    (order("BUY", 10), _replace(VIEW, duplicate_of="alpha/c0"), codes.DUPLICATE),
    (order("BUY", 10), _replace(VIEW, rate_tokens=0.5), codes.ORDER_RATE),
    (order("BUY", 10), _replace(VIEW, strategy=BookView(position=1995)), codes.MAX_POSITION),
    (order("BUY", 10), _replace(VIEW, account=BookView(position=1500, working_buy=495)), codes.MAX_POSITION),
    (order("BUY", 10), _replace(VIEW, strategy=BookView(gross_exposure=299_500)), codes.MAX_GROSS_EXPOSURE),
    (order("BUY", 10), _replace(VIEW, account=BookView(gross_exposure=299_500)), codes.MAX_GROSS_EXPOSURE),
    (order("BUY", 10), _replace(VIEW, buying_power=999.0), codes.BUYING_POWER),
    (order("BUY", 10), _replace(VIEW, buying_power=50_000.0, working_notional=49_500.0), codes.BUYING_POWER),
    (order("BUY", 10), _replace(VIEW, buying_power=None), codes.BUYING_POWER),
], ids=lambda x: x if isinstance(x, str) else "")
def test_each_check_rejects_with_its_code(o, v, code):
    result = verdict(o, v)
    assert result.code == code, result
    assert result.reason and not result.approved


@pytest.mark.parametrize("o, v", [
    (order("BUY", 1000, limit=50.0), _replace(VIEW, ref_price=50.0)),  # quantity at the limit
    (order("BUY", 500), VIEW),  # notional exactly 50_000
    (order("BUY", 10, limit=105.0), VIEW),  # collar edge
    (order("SELL", 10, limit=95.0), VIEW),
    (order("BUY", 10), _replace(VIEW, tick_age_s=30.0)),  # stale edge
    (order("BUY", 10), _replace(VIEW, strategy=BookView(position=1990))),  # position edge
    (order("BUY", 10), _replace(VIEW, account=BookView(gross_exposure=299_000))),  # gross edge
    (order("BUY", 10), _replace(VIEW, buying_power=1000.0)),  # buying power edge
    (order("BUY", 10), _replace(VIEW, rate_tokens=1.0)),
], ids=["quantity", "notional", "collar-up", "collar-down", "stale", "position", "gross", "buying-power", "rate"])
def test_each_check_passes_at_its_limit(o, v):
    assert verdict(o, v).approved


def test_order_type_the_contract_does_not_list_is_refused_naming_every_missing_entry():
    listed = ContractInfo(instrument=ES_MARCH.instrument, multiplier=50.0, min_tick=0.25, order_types="MKT,STP")
    result = verdict(order("BUY", 1, symbol="ES", sec_type="FUT", limit=5000.0, tif="OPG"),
                     _replace(VIEW, contract=listed, ref_price=5000.0))
    assert (result.code, result.reason) == (codes.ORDER_TYPE,
                                            "ESH7 does not take LMT, OPG (IB's orderTypes for the contract)")


def test_order_types_the_contract_lists_are_approved():
    listed = ContractInfo(instrument=AAPL.instrument, min_tick=0.01, order_types="LMT,MKT,STP,OPG")
    assert verdict(order("BUY", 10, limit=100.0, tif="OPG"), _replace(VIEW, contract=listed)).code == codes.APPROVED
    assert verdict(order("BUY", 10, stop=99.0), _replace(VIEW, contract=listed)).code == codes.APPROVED


def test_reducing_admits_a_reducing_order_and_refuses_a_flip_or_an_opening_order():
    long_100 = _replace(VIEW, state="REDUCING", reducing_scopes=("all",), account=BookView(position=100))
    assert verdict(order("SELL", 50), long_100).approved
    assert verdict(order("SELL", 100), long_100).approved  # to flat is reducing
    flip = verdict(order("SELL", 101), long_100)
    assert flip.code == codes.REDUCING
    assert verdict(order("BUY", 1), long_100).code == codes.REDUCING
    short = _replace(long_100, account=BookView(position=-100))
    assert verdict(order("BUY", 100), short).approved
    assert verdict(order("BUY", 150), short).code == codes.REDUCING
    flat = _replace(long_100, account=BookView(position=0))
    assert verdict(order("SELL", 1), flat).code == codes.REDUCING


def test_reducing_counts_working_orders_on_the_same_side():
    v = _replace(VIEW, state="REDUCING", reducing_scopes=("all",), account=BookView(position=100, working_sell=80))
    assert verdict(order("SELL", 20), v).approved
    assert verdict(order("SELL", 21), v).code == codes.REDUCING  # with the working sells it would flip


def test_strategy_reducing_uses_the_strategy_book():
    v = _replace(VIEW, state="REDUCING", reducing_scopes=("strategy:alpha",), strategy=BookView(position=-50),
                 account=BookView(position=1000))
    assert verdict(order("BUY", 50), v).approved  # reduces alpha's short although the account is long
    assert verdict(order("SELL", 1), v).code == codes.REDUCING


def test_reducing_order_passes_position_exposure_and_buying_power_when_already_over_the_limits():
    over = _replace(VIEW, account=BookView(position=5000, gross_exposure=900_000),
                    strategy=BookView(position=5000, gross_exposure=900_000), buying_power=0.0)
    assert verdict(order("SELL", 100), over).approved
    assert verdict(order("BUY", 1), over).code == codes.MAX_POSITION


def test_flip_beyond_the_position_limit_is_refused():
    v = _replace(VIEW, strategy=BookView(position=100))
    assert verdict(order("SELL", 100), v).approved
    assert verdict(order("SELL", 1000, limit=20.0), _replace(v, ref_price=20.0)).approved  # -900 within 2000
    assert verdict(order("SELL", 1000, limit=20.0),
                   _replace(v, ref_price=20.0, strategy=BookView(position=-1500))).code == codes.MAX_POSITION


def test_ibs_multiplier_counts_in_notional_when_the_order_gives_none():
    fut = order("BUY", 2, limit=5000.0, symbol="ES", sec_type="FUT")  # no multiplier: IB's 50 applies
    es = _replace(VIEW, ref_price=5000.0, contract=ES_MARCH)
    assert order_notional(fut, es) == 500_000
    rejected = verdict(fut, es)
    assert rejected.code == codes.MAX_NOTIONAL and "multiplier 50" in rejected.reason


def test_notional_is_converted_into_the_base_currency():
    eurchf = ContractInfo(instrument=Instrument(symbol="EUR", sec_type="CASH", exchange="IDEALPRO", currency="CHF",
                                                con_id=12087817, local_symbol="EUR.CHF"), min_tick=0.00005)
    o = order("BUY", 40_000, limit=0.94, symbol="EUR", sec_type="CASH")
    v = _replace(VIEW, ref_price=0.94, contract=eurchf, fx_rate=1.13, base_currency="USD")
    assert order_notional(o, v) == pytest.approx(40_000 * 0.94 * 1.13)  # CHF x CHF/USD
    fx_limits = merge_limits(LIMITS, StrategyLimits(max_order_quantity=100_000, max_position=1e6, max_gross_exposure=1e9))
    approved = verdict(o, v, fx_limits, fx_limits)  # 42,488 USD within 50,000 USD
    assert approved.approved, approved
    big = order("BUY", 50_000, limit=0.94, symbol="EUR", sec_type="CASH")  # 53,110 USD
    rejected = verdict(big, v, fx_limits, fx_limits)
    assert rejected.code == codes.MAX_NOTIONAL and "CHF/USD" in rejected.reason


def test_market_order_notional_uses_the_reference_price():
    assert order_notional(order("BUY", 10), _replace(VIEW, ref_price=123.0)) == 1230.0
    assert order_notional(order("BUY", 10), _replace(VIEW, ref_price=None)) is None


def test_off_tick_price_is_rejected_with_the_nearest_valid_prices_unless_rounding_is_asked():
    rejected = verdict(order("BUY", 10, limit=100.0000001))
    assert rejected.code == codes.TICK_SIZE
    assert "100.00 and 100.01" in rejected.reason
    es = _replace(VIEW, ref_price=5000.0, contract=ES_MARCH)
    es_off = verdict(order("SELL", 1, limit=5000.1, symbol="ES", sec_type="FUT"), es)
    assert es_off.code == codes.TICK_SIZE and "5000.00 and 5000.25" in es_off.reason
    from msgspec.structs import replace
    rounded = replace(order("BUY", 10, limit=100.0000001), round_to_tick=True)
    assert verdict(rounded).approved


def test_closed_market_does_not_make_old_data_stale():
    assert verdict(order("BUY", 10), _replace(VIEW, tick_age_s=3600.0, in_session=False)).approved
    assert verdict(order("BUY", 10), _replace(VIEW, tick_age_s=3600.0)).code == codes.STALE_MARKET_DATA


def test_per_strategy_overrides_apply_to_that_strategy_only():
    risk = RiskConfig(limits=LIMITS, strategies={
        "beta": StrategyLimits(max_order_quantity=5, price_collar_pct=1.0, restricted_symbols=["TSLA"])})
    table = LimitTable(risk)
    beta, alpha = table.for_strategy("beta"), table.for_strategy("alpha")
    assert alpha is LIMITS
    assert beta.max_order_quantity == 5 and beta.max_order_notional == 50_000
    assert verdict(order("BUY", 6, strategy="beta"), limits=beta).code == codes.MAX_QUANTITY
    assert verdict(order("BUY", 6, strategy="alpha"), limits=alpha).approved
    assert verdict(order("BUY", 1, limit=101.5, strategy="beta"), limits=beta).code == codes.PRICE_COLLAR
    # a strategy's restricted list adds to the global one, never replaces it
    assert table.restricted("beta") == frozenset({"GME", "TSLA"})
    assert table.restricted("alpha") == frozenset({"GME"})
    assert "strategies.beta.max_order_quantity" in table.describe()


def test_account_limits_bind_even_when_a_strategy_limit_is_higher():
    strat = merge_limits(LIMITS, StrategyLimits(max_position=10_000))
    v = _replace(VIEW, strategy=BookView(position=0), account=BookView(position=1995))
    result = evaluate(order("BUY", 10), v, strat, LIMITS)
    assert result.code == codes.MAX_POSITION and "account" in result.reason


def test_buying_power_check_can_be_disabled_per_strategy():
    no_bp = merge_limits(LIMITS, StrategyLimits(min_buying_power_ratio=0))
    assert evaluate(order("BUY", 10), _replace(VIEW, buying_power=None), no_bp, LIMITS).approved


positions = st.floats(min_value=-5000, max_value=5000, allow_nan=False).map(lambda x: round(x))
quantities = st.integers(min_value=1, max_value=1000)


@settings(max_examples=300, deadline=None)
@given(pos=positions, wbuy=st.integers(0, 3000), wsell=st.integers(0, 3000), qty=quantities,
       side=st.sampled_from(["BUY", "SELL"]))
def test_property_an_approved_order_never_takes_the_worst_case_position_further_beyond_the_limit(
        pos, wbuy, wsell, qty, side):
    book = BookView(position=pos, working_buy=wbuy, working_sell=wsell)
    v = _replace(VIEW, ref_price=1.0, strategy=book, account=book)
    o = order(side, qty, limit=1.0)
    if not evaluate(o, v, LIMITS, LIMITS).approved:
        return
    worst = pos + wbuy + qty if side == "BUY" else pos - wsell - qty
    assert abs(worst) <= LIMITS.max_position or reduces(book, o)


@settings(max_examples=300, deadline=None)
@given(pos=positions, wbuy=st.integers(0, 3000), wsell=st.integers(0, 3000), qty=quantities,
       side=st.sampled_from(["BUY", "SELL"]))
def test_property_reducing_never_admits_an_order_that_can_flip_or_grow_the_position(pos, wbuy, wsell, qty, side):
    book = BookView(position=pos, working_buy=wbuy, working_sell=wsell)
    v = _replace(VIEW, ref_price=1.0, state="REDUCING", reducing_scopes=("all",), account=book)
    o = order(side, qty, limit=1.0)
    if evaluate(o, v, LIMITS, LIMITS).code == codes.REDUCING:
        return
    # admitted: it must move towards zero and, with the same-side working orders, never cross it
    if side == "SELL":
        assert pos > 0 and pos - wsell - qty >= 0
    else:
        assert pos < 0 and pos + wbuy + qty <= 0


@settings(max_examples=200, deadline=None)
@given(ref=st.floats(min_value=0.01, max_value=10_000), off=st.floats(min_value=-0.5, max_value=0.5))
def test_property_collar_admits_exactly_the_prices_within_the_band(ref, off):
    price = round(ref * (1 + off), 6)
    if price <= 0:
        return
    no_grid = ContractInfo(instrument=AAPL.instrument, min_tick=0.0)  # the collar alone, not the tick grid
    v = _replace(VIEW, ref_price=ref, buying_power=1e12, contract=no_grid)
    lim = merge_limits(LIMITS, StrategyLimits(max_order_notional=1e12, max_gross_exposure=1e12))
    result = evaluate(order("BUY", 1, limit=price), v, lim, lim)
    inside = abs(price - ref) / ref * 100 <= LIMITS.price_collar_pct + 1e-9
    assert (result.code != codes.PRICE_COLLAR) == inside
