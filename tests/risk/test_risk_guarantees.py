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
from tests.support.builders import order_for  # noqa: E402

order = order_for("alpha")

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
    assert ck.multiplier(order("BUY", 1, multiplier="0.5")) == 0.5 and ck.multiplier(order("BUY", 1, multiplier="0")) \
        == 1.0
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


# -- exposure: the numbers the limits are checked against, exactly ---------------------------------------------

import math  # noqa: E402

from actors.risk.exposure import (  # noqa: E402
    CANCEL_CONFIRM_CODES, ExposureBook, Lot, StatusOutcome, StatusResult, is_rejection, multiplier_of,
)
from bus.messages import (  # noqa: E402
    CommissionEvent, FillEvent, IbOrder, Instrument, OrderSpec, OrderStatusEvent, Position,
)


def xfill(key: str, side: str, qty: float, price: float, *, ref: str = "alpha/c1", symbol: str = "ES",
          multiplier: str = "50", correction: bool = False) -> FillEvent:
    return FillEvent(exec_id=key + (".02" if correction else ".01"), exec_key=key, order_ref=ref,
                     strategy_id=ref.split("/")[0] if "/" in ref else "", instrument=Instrument(
                         symbol=symbol, sec_type="FUT", multiplier=multiplier),
                     side=side, quantity=qty, price=price, is_correction=correction)  # type: ignore[arg-type]


def xstatus(ref: str, st: str, *, filled: float = 0.0, remaining: float = 0.0, code: int | None = None,
            symbol: str = "AAPL") -> OrderStatusEvent:
    return OrderStatusEvent(order_ref=ref, status=st, filled=filled, remaining=remaining, error_code=code,
                            symbol=symbol)


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


def test_a_lot_books_average_cost_realized_pnl_flips_and_flat_exactly() -> None:
    lot = Lot(multiplier=50.0)
    lot.apply(2, 100.0)
    lot.apply(2, 110.0)
    assert (lot.qty, lot.avg_price, lot.realized) == (4, 105.0, 0.0)
    lot.apply(-1, 120.0)
    assert (lot.qty, lot.avg_price, lot.realized) == (3, 105.0, 15.0 * 50)
    lot.apply(-5, 90.0)  # closes 3 at a loss, opens 2 short at 90
    assert (lot.qty, lot.avg_price, lot.realized) == (-2, 90.0, 750.0 - 3 * 15.0 * 50)
    assert lot.unrealized(80.0) == -2 * (80.0 - 90.0) * 50 and lot.unrealized(None) == 0.0
    lot.apply(2, 85.0)
    assert (lot.qty, lot.avg_price, lot.realized) == (0.0, 0.0, 750.0 - 2250.0 + 2 * 5.0 * 50)
    assert lot.unrealized(1.0) == 0.0
    short = Lot()
    short.apply(-3, 10.0)
    short.apply(-1, 14.0)
    assert (short.qty, short.avg_price) == (-4, 11.0)


def test_fills_move_both_books_and_a_correction_replaces_exactly() -> None:
    book = ExposureBook()
    assert book.on_fill(xfill("e1", "BUY", 2, 5000.0)) is True
    assert book.position("ES") == 2 and book.position("ES", "alpha") == 2 and book.account["ES"].multiplier == 50.0
    assert book.on_fill(xfill("e1", "BUY", 2, 5000.0)) is False  # the same execution again
    assert book.on_fill(xfill("e1", "BUY", 2, 5000.0, correction=True)) is False  # a "correction" changing nothing
    assert book.on_fill(xfill("e1", "BUY", 3, 5010.0, correction=True)) is True
    assert book.position("ES") == 3 and book.lots[("alpha", "ES")].avg_price == 5010.0
    assert book.on_fill(xfill("e2", "SELL", 1, 5020.0, ref="beta/c1"), account_too=False) is True
    assert book.position("ES") == 3 and book.position("ES", "beta") == -1  # IB's positions already hold it
    assert book.fill_strategy("e2") == "beta" and book.fill_strategy("nope") == ""
    assert book.on_fill(xfill("e3", "SELL", 1, 5020.0, ref="manual")) is True  # not ours: account only
    assert book.position("ES") == 2 and ("", "ES") not in book.lots and book.strategies() == {"alpha", "beta"}
    assert book.position("NQ") == 0.0 and book.position("NQ", "alpha") == 0.0
    book.on_position(Position(account="DU1", instrument=Instrument(symbol="ES", multiplier="50"), quantity=7, avg_cost=250_000.0,
                              market_price=5001.0))
    assert (book.position("ES"), book.account["ES"].market_price, book.account["ES"].avg_cost) == (7, 5001.0,
                                                                                                    250_000.0)
    book.load_positions([])
    assert book.account == {}


def test_commissions_count_once_per_execution_and_only_finite_ones() -> None:
    book = ExposureBook()
    book.on_fill(xfill("e1", "BUY", 1, 10.0))
    ev = CommissionEvent(exec_id="e1.01", exec_key="e1", order_ref="alpha/c1", commission=2.25, currency="USD")
    assert book.on_commission(ev) is True and book.on_commission(ev) is False
    assert book.on_commission(CommissionEvent(exec_id="e9.01", exec_key="e9", order_ref="beta/x",
                                              commission=float("nan"), currency="USD")) is False
    assert book.on_commission(CommissionEvent(exec_id="e8.01", exec_key="e8", order_ref="beta/x", commission=1.5,
                                              currency="USD")) is True
    assert book.on_commission(CommissionEvent(exec_id="e7.01", exec_key="e7", order_ref="manual", commission=9.0,
                                              currency="USD")) is True
    assert book.commissions == {"alpha": 2.25, "beta": 1.5}


def test_positions_are_valued_at_the_market_else_ibs_mark_else_cost_else_the_lots() -> None:
    book = ExposureBook()
    prices = {"ES": 5000.0}
    book.on_position(Position(account="DU1", instrument=Instrument(symbol="ES", multiplier="50"), quantity=-2, avg_cost=0.0,
                              market_price=4990.0))
    book.on_position(Position(account="DU1", instrument=Instrument(symbol="NQ", multiplier="20"), quantity=1, avg_cost=300_000.0,
                              market_price=0.0))
    book.on_position(Position(account="DU1", instrument=Instrument(symbol="CL", multiplier="1000"), quantity=1, avg_cost=0.0,
                              market_price=None))
    book.on_position(Position(account="DU1", instrument=Instrument(symbol="ZN"), quantity=0, avg_cost=0.0, market_price=None))
    book.on_fill(xfill("e1", "BUY", 1, 70.0, symbol="CL", multiplier="1000"), account_too=False)
    book.on_fill(xfill("e2", "BUY", 1, 1.0, symbol="GC", multiplier="100", ref="beta/g"), account_too=False)
    value = lambda s: prices.get(s)  # noqa: E731
    assert book._value_price("ES", value) == 5000.0  # the market first
    assert book._value_price("ES", lambda s: None) == 4990.0  # then IB's mark
    assert book._value_price("NQ", value) == 15_000.0  # then IB's cost per unit (avg cost / multiplier)
    assert book._value_price("CL", value) == 70.0  # then a strategy's average price
    assert book._value_price("ZZ", value) == 0.0
    # gross: |qty| x price x multiplier, positions that are flat left out
    assert book.gross(value) == 2 * 5000.0 * 50 + 1 * 15_000.0 * 20 + 1 * 70.0 * 1000
    assert book.gross(value, "alpha") == 70.0 * 1000 and book.gross(value, "beta") == 1.0 * 100
    assert book.gross(value, "nobody") == 0.0


def test_working_orders_count_at_their_price_or_the_market_with_their_multiplier() -> None:
    book = ExposureBook()
    prices = {"ES": 5000.0}
    value = lambda s: prices.get(s)  # noqa: E731
    es = OrderSpec(strategy_id="alpha", client_order_id="l1", instrument=Instrument(symbol="ES", sec_type="FUT",
                                                                                    multiplier="50"),
                   side="BUY", quantity=2, order_type="LMT", limit_price=4900.0)
    mkt = OrderSpec(strategy_id="beta", client_order_id="m1", instrument=Instrument(symbol="ES", sec_type="FUT",
                                                                                    multiplier="50"),
                    side="SELL", quantity=3, order_type="MKT")
    book.add_pending(es, expires_mono=10.0)
    book.add_pending(mkt, expires_mono=10.0)
    assert book.working_notional(value) == 2 * 4900.0 * 50 + 3 * 5000.0 * 50
    assert book.working_notional(value, "alpha") == 2 * 4900.0 * 50
    assert book.working_notional(value, "beta") == 3 * 5000.0 * 50
    assert book.working_notional(value, exclude="alpha/l1") == 3 * 5000.0 * 50
    assert book.working_notional(value, "beta", exclude="beta/m1") == 0.0
    assert book.working_notional(value, "alpha", exclude="beta/m1") == 2 * 4900.0 * 50  # not alpha's order
    assert book.working_qty("ES") == (2.0, 3.0) and book.working_qty("ES", "alpha") == (2.0, 0.0)
    assert book.working_qty("ES", exclude="alpha/l1") == (0.0, 3.0) and book.working_qty("NQ") == (0.0, 0.0)
    assert book.working_qty("ES", "alpha", exclude="beta/m1") == (2.0, 0.0)
    assert book.working_symbols() == {"ES"}
    assert book.gross(value) == book.working_notional(value)
    # an order IB reports filled in part counts for what remains
    r = book.on_status(OrderStatusEvent(order_ref="alpha/l1", status="Submitted", filled=1.5, remaining=0.5,
                                        symbol="ES"))
    assert r == StatusResult(StatusOutcome.KNOWN, "alpha", "ES", False)
    assert book.working_notional(value, "alpha") == 0.5 * 4900.0 * 50 and book.working_qty("ES", "alpha") == (0.5,
                                                                                                               0.0)
    w = book.working["alpha/l1"]
    assert (w.pending, w.expires_mono, w.quantity, w.filled, w.remaining) == (False, math.inf, 2.0, 1.5, 0.5)
    # a modification keeps what was filled and the confirmed order's clock
    book.add_pending(msgspec.structs.replace(es, quantity=1.0, limit_price=4950.0), expires_mono=20.0)
    w = book.working["alpha/l1"]
    assert (w.quantity, w.filled, w.price, w.pending, w.expires_mono) == (1.5, 1.5, 4950.0, False, math.inf)
    assert book.expire_pending(10.0) == ["beta/m1"] and book.expire_pending(100.0) == []
    assert book.working_notional(value) == 0.0 and book.working_symbols() == set()


def test_status_events_track_unknown_working_orders_done_ones_and_first_rejections() -> None:
    book = ExposureBook()
    assert book.on_status(xstatus("alpha/x", "Cancelled")) == StatusResult(StatusOutcome.IGNORED, "alpha", "AAPL")
    assert book.on_status(xstatus("alpha/y", "Submitted", symbol="")) == StatusResult(StatusOutcome.IGNORED, "alpha",
                                                                                      "")
    r = book.on_status(xstatus("manual", "Submitted", remaining=30.0))
    assert r == StatusResult(StatusOutcome.UNKNOWN_WORKING, "", "AAPL", False)
    w = book.working["manual"]
    assert (w.side, w.quantity, w.filled, w.price, w.multiplier, w.pending) == (None, 30.0, 0.0, None, 1.0, False)
    assert book.working_qty("AAPL") == (30.0, 30.0)  # side unknown: counted on both
    r = book.on_status(xstatus("manual", "PreSubmitted"))
    assert r.outcome is StatusOutcome.KNOWN and book.working["manual"].quantity == 30.0  # remaining 0 keeps it
    book.add_pending(OrderSpec(strategy_id="alpha", client_order_id="r", instrument=Instrument(symbol="AAPL"),
                               side="BUY", quantity=5), expires_mono=99.0)
    first = book.on_status(xstatus("alpha/r", "Inactive", code=201, remaining=5.0))
    assert first == StatusResult(StatusOutcome.KNOWN, "alpha", "AAPL", True)
    again = book.on_status(xstatus("alpha/r", "Cancelled", code=201))
    assert again == StatusResult(StatusOutcome.DONE, "alpha", "AAPL", False)  # counted once
    assert "alpha/r" not in book.working


def test_open_orders_from_ib_replace_the_working_set() -> None:
    book = ExposureBook()
    book.add_pending(OrderSpec(strategy_id="alpha", client_order_id="p", instrument=Instrument(symbol="AAPL"),
                               side="BUY", quantity=5, order_type="LMT", limit_price=10.0), expires_mono=50.0)
    book.add_pending(OrderSpec(strategy_id="alpha", client_order_id="old", instrument=Instrument(symbol="AAPL"),
                               side="BUY", quantity=5), expires_mono=5.0)
    book.on_status(xstatus("alpha/gone", "Submitted", remaining=4.0))
    ib = [IbOrder(ib_order_id=1, perm_id=11, client_id=7, order_ref="alpha/s", instrument=Instrument(
        symbol="ES", multiplier="50"), side="SELL", quantity=4, order_type="STP", stop_price=4000.0,
        status="Submitted", filled=1.0, remaining=3.0),
          IbOrder(ib_order_id=2, perm_id=12, client_id=0, order_ref="", instrument=Instrument(symbol="AAPL"),
                  side="BUY", quantity=7, order_type="LMT", limit_price=9.0, status="PreSubmitted"),
          IbOrder(ib_order_id=3, perm_id=13, client_id=7, order_ref="alpha/f", instrument=Instrument(symbol="AAPL"),
                  side="BUY", quantity=7, order_type="MKT", status="Filled", filled=7.0)]
    book.load_open_orders(ib, now=10.0)
    assert sorted(book.working) == ["alpha/p", "alpha/s", "perm:12"]  # an order without a ref: by its permId
    s = book.working["alpha/s"]
    assert (s.strategy, s.symbol, s.side, s.quantity, s.filled, s.price, s.multiplier, s.pending) == (
        "alpha", "ES", "SELL", 4.0, 1.0, 4000.0, 50.0, False)
    m = book.working["perm:12"]
    assert (m.strategy, m.quantity, m.filled, m.price) == ("", 7.0, 0.0, 9.0)
    assert book.working_qty("ES") == (0.0, 3.0) and book.working_qty("AAPL") == (12.0, 0.0)
    assert book.working_notional(lambda s: None) == 3 * 4000.0 * 50 + 5 * 10.0 + 7 * 9.0


def test_pnl_per_strategy_and_the_day_roll() -> None:
    book = ExposureBook()
    book.on_fill(xfill("e1", "BUY", 2, 100.0, symbol="ES", multiplier="50"))
    book.on_fill(xfill("e2", "SELL", 1, 110.0, symbol="ES", multiplier="50"))
    book.on_fill(xfill("e3", "BUY", 1, 10.0, symbol="NQ", multiplier="20", ref="beta/b"))
    book.on_commission(CommissionEvent(exec_id="e1.01", exec_key="e1", order_ref="alpha/c1", commission=4.0,
                                       currency="USD"))
    prices = {"ES": 120.0, "NQ": 5.0}
    value = lambda s: prices.get(s)  # noqa: E731
    assert book.strategy_pnl("alpha", value) == 1 * 10.0 * 50 + 1 * 20.0 * 50 - 4.0
    assert book.strategy_pnl("beta", value) == -5.0 * 20
    assert book.total_pnl(value) == 1500.0 - 4.0 - 100.0
    book.roll_day(value)
    assert book.commissions == {} and book.lots[("alpha", "ES")].realized == 0.0
    assert book.lots[("alpha", "ES")].avg_price == 120.0 and book.strategy_pnl("alpha", value) == 0.0
    flat = book.lots[("beta", "NQ")]
    book.on_fill(xfill("e4", "SELL", 1, 5.0, symbol="NQ", multiplier="20", ref="beta/b"))
    book.roll_day(lambda s: None)
    assert flat.qty == 0.0 and flat.avg_price == 0.0 and book.lots[("alpha", "ES")].avg_price == 120.0


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
    assert ts.effective("alpha", "AAPL") == (HALTED, ["all", "strategy:alpha", "symbol:AAPL"])
    assert ts.effective("beta", "MSFT") == (REDUCING, ["all"])
    assert set(ts.non_active()) == {"all", "strategy:alpha", "symbol:AAPL"}
    ts.set("all", ACTIVE, reason="r", origin="cli", authority=OP)
    assert ts.effective("beta", "MSFT") == (ACTIVE, []) and "all" not in ts.non_active()


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


def test_status_figures_below_one_share_still_move_a_working_order() -> None:
    book = ExposureBook()
    r = book.on_status(xstatus("beta/x", "PreSubmitted", filled=0.0, remaining=0.0))
    w = book.working["beta/x"]
    assert r.outcome is StatusOutcome.UNKNOWN_WORKING and (w.order_ref, w.strategy, w.quantity, w.filled,
                                                           w.pending) == ("beta/x", "beta", 0.0, 0.0, False)
    book.on_status(xstatus("beta/x", "Submitted", filled=0.5, remaining=0.0))
    assert (book.working["beta/x"].quantity, book.working["beta/x"].filled) == (0.5, 0.5)
    book.on_status(xstatus("beta/y", "Submitted", remaining=0.5))
    assert book.working["beta/y"].quantity == 0.5


def test_ibs_open_orders_count_what_ib_says_is_left() -> None:
    book = ExposureBook()
    ib = [IbOrder(ib_order_id=3, perm_id=13, client_id=7, order_ref="alpha/f", instrument=Instrument(symbol="AAPL"),
                  side="BUY", quantity=7, order_type="MKT", status="Filled", filled=7.0),
          IbOrder(ib_order_id=1, perm_id=11, client_id=7, order_ref="alpha/cut", instrument=Instrument(symbol="AAPL"),
                  side="BUY", quantity=10, order_type="LMT", limit_price=1.0, status="Submitted", filled=1.0,
                  remaining=3.0),
          IbOrder(ib_order_id=2, perm_id=12, client_id=7, order_ref="alpha/new", instrument=Instrument(symbol="AAPL"),
                  side="BUY", quantity=10, order_type="LMT", limit_price=1.0, status="Submitted", remaining=7.0)]
    book.load_open_orders(ib, now=0.0)
    assert {k: (w.order_ref, w.quantity) for k, w in book.working.items()} == {
        "alpha/cut": ("alpha/cut", 4.0), "alpha/new": ("alpha/new", 7.0)}


def test_fills_belong_to_their_strategy_and_commissions_add_up() -> None:
    book = ExposureBook()
    book.on_fill(FillEvent(exec_id="a.01", exec_key="a", order_ref="beta/x", strategy_id="",
                           instrument=Instrument(symbol="AAPL"), side="BUY", quantity=1, price=2.0))
    book.on_fill(FillEvent(exec_id="b.01", exec_key="b", order_ref="x/y", strategy_id="alpha",
                           instrument=Instrument(symbol="AAPL"), side="BUY", quantity=1, price=2.0))
    assert book.position("AAPL", "beta") == 1 and book.position("AAPL", "alpha") == 1
    assert book.position("AAPL", "x") == 0.0
    for key, amount in (("a", 1.0), ("z", 0.25)):
        book.on_commission(CommissionEvent(exec_id=key + ".01", exec_key=key, order_ref="beta/x",
                                           commission=amount, currency="USD"))
    assert book.commissions == {"beta": 1.25}
    assert book.strategies() == {"alpha", "beta"}
    book.on_commission(CommissionEvent(exec_id="c.01", exec_key="c", order_ref="gamma/q", commission=2.0,
                                       currency="USD"))
    assert book.strategies() == {"alpha", "beta", "gamma"}  # a strategy with only a commission counts too
    assert book.strategy_pnl("gamma", lambda s: 2.0) == -2.0
    book.on_status(xstatus("manual", "Submitted", remaining=5.0))
    assert "" not in book.strategies()


def test_remembered_executions_and_commissions_forget_the_oldest_first(monkeypatch) -> None:
    import actors.risk.exposure as ex

    monkeypatch.setattr(ex, "FILL_MEMORY", 2)
    book = ExposureBook()
    for key in ("e1", "e2", "e3"):
        book.on_fill(xfill(key, "BUY", 1, 10.0, symbol="AAPL", multiplier=""))
    assert book.on_fill(xfill("e3", "BUY", 1, 10.0, symbol="AAPL", multiplier="")) is False  # remembered
    assert book.on_fill(xfill("e2", "BUY", 1, 10.0, symbol="AAPL", multiplier="")) is False
    for key in ("e1", "e2", "e3"):
        book.on_commission(CommissionEvent(exec_id=key + ".01", exec_key=key, order_ref="alpha/c1", commission=1.0,
                                           currency="USD"))
    assert book.on_commission(CommissionEvent(exec_id="e3.01", exec_key="e3", order_ref="alpha/c1", commission=1.0,
                                              currency="USD")) is False
    assert book.on_commission(CommissionEvent(exec_id="e2.01", exec_key="e2", order_ref="alpha/c1", commission=1.0,
                                              currency="USD")) is False


def test_gross_of_one_strategy_sums_its_lots_and_leaves_out_the_excluded_order() -> None:
    book = ExposureBook()
    book.on_fill(xfill("e1", "BUY", 2, 10.0, symbol="AAPL", multiplier=""))
    book.on_fill(xfill("e2", "SELL", 3, 20.0, symbol="MSFT", multiplier=""))
    prices = {"AAPL": 10.0, "MSFT": 20.0}
    value = lambda s: prices.get(s)  # noqa: E731
    book.add_pending(OrderSpec(strategy_id="alpha", client_order_id="w", instrument=Instrument(symbol="AAPL"),
                               side="BUY", quantity=5, order_type="LMT", limit_price=9.0), expires_mono=9.0)
    book.add_pending(OrderSpec(strategy_id="beta", client_order_id="v", instrument=Instrument(symbol="AAPL"),
                               side="BUY", quantity=1, order_type="LMT", limit_price=9.0), expires_mono=9.0)
    assert book.gross(value, "alpha") == 2 * 10.0 + 3 * 20.0 + 5 * 9.0
    assert book.gross(value, "alpha", exclude="alpha/w") == 2 * 10.0 + 3 * 20.0
    assert book.working_symbols() == {"AAPL"}
    ext = ExposureBook()
    ext.on_status(xstatus("manual", "Submitted", remaining=3.0, symbol="SPY"))
    assert ext.working_symbols() == {"SPY"}


def test_a_mark_or_a_cost_below_one_is_still_a_price() -> None:
    book = ExposureBook()
    book.on_position(Position(account="DU1", instrument=Instrument(symbol="P"), quantity=100, avg_cost=0.0,
                              market_price=0.5))
    book.on_position(Position(account="DU1", instrument=Instrument(symbol="C"), quantity=100, avg_cost=0.25,
                              market_price=None))
    assert book._value_price("P", lambda s: None) == 0.5 and book._value_price("C", lambda s: None) == 0.25


def test_an_order_seen_first_at_ib_is_keyed_by_its_perm_id_and_counted_with_ibs_terms() -> None:
    from bus.messages import OrderTerms

    book = ExposureBook()
    ev = OrderStatusEvent(order_ref="", perm_id=55, status="Submitted", remaining=5.0, symbol="AAPL",
                          terms=OrderTerms(side="SELL", quantity=5.0, order_type="STP", stop_price=9.0))
    r = book.on_status(ev)
    w = book.working["perm:55"]
    assert r.outcome is StatusOutcome.UNKNOWN_WORKING and (w.order_ref, w.side, w.price, w.pending) == (
        "perm:55", "SELL", 9.0, False)
    assert book.working_qty("AAPL") == (0.0, 5.0) and book.working_notional(lambda s: None) == 45.0
    odd = OrderStatusEvent(order_ref="", perm_id=56, status="Submitted", remaining=1.0, symbol="AAPL",
                           terms=OrderTerms(side="", quantity=1.0, order_type="LMT", limit_price=8.0))
    book.on_status(odd)
    assert (book.working["perm:56"].side, book.working["perm:56"].price) == (None, 8.0)  # no side: both sides
    book.on_status(OrderStatusEvent(order_ref="", perm_id=55, status="Submitted", remaining=5.0, symbol="AAPL",
                                    terms=OrderTerms(side="SELL", quantity=5.0, order_type="LMT", limit_price=9.5,
                                                     stop_price=9.0)))
    assert book.working["perm:55"].price == 9.5  # IB confirmed new terms: the limit counts
    book.on_status(OrderStatusEvent(order_ref="", perm_id=55, status="Cancelled", symbol="AAPL"))
    assert "perm:55" not in book.working


def test_fractional_lots_book_direction_and_realized_pnl() -> None:
    lot = Lot()
    lot.apply(0.5, 10.0)
    lot.apply(0.25, 13.0)
    assert (lot.qty, lot.avg_price) == (0.75, 11.0)
    lot.apply(-0.5, 15.0)
    assert (lot.qty, lot.realized) == (0.25, 0.5 * 4.0)
    short = Lot()
    short.apply(-0.5, 10.0)
    short.apply(0.25, 8.0)
    assert (short.qty, short.realized, short.avg_price) == (-0.25, 0.5, 10.0)
