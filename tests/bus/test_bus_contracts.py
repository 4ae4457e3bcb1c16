"""Unit tests of what IB's contract details say (bus/contracts.py, bus/sessions.py) and of the instrument value
objects (helpers, readable names, scopes): the price grid with the nearest valid prices, passive rounding, size
rules, trading hours in both of IB's formats, IB's P&L reset per instrument or at one configured time."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from bus.config import ConfigError, load_config
from bus.contracts import grid_neighbours, notional, passive_price, rounded_order, size_problem
from bus.messages import ContractInfo, Instrument, OrderSpec, PriceIncrement, scope_matches
from bus.sessions import PnLReset, Session, TradingHours, open_since, session_of

NY, CHI = ZoneInfo("US/Eastern"), ZoneInfo("US/Central")
AAPL = ContractInfo(instrument=Instrument(symbol="AAPL", con_id=265598, local_symbol="AAPL"), min_tick=0.01,
                    time_zone="US/Eastern",
                    trading_hours="20250602:0400-20250602:2000;20250603:0400-20250603:2000;20250607:CLOSED")
ES = ContractInfo(instrument=Instrument(symbol="ES", sec_type="FUT", exchange="CME", con_id=551601503,
                                        last_trade_date="20270319", multiplier="50", local_symbol="ESH7"),
                  multiplier=50.0, min_tick=0.25, time_zone="US/Central",
                  trading_hours="20250601:1700-20250602:1600;20250602:1700-20250603:1600")
#: a market rule with two levels: below 1 in steps of 0.0001, from 1 in steps of 0.01
PENNY = ContractInfo(instrument=Instrument(symbol="X", con_id=7), min_tick=0.0001,
                     price_increments=[PriceIncrement(low_edge=0.0, increment=0.0001),
                                       PriceIncrement(low_edge=1.0, increment=0.01)])


def at(zone: ZoneInfo, *args: int) -> float:
    return datetime(*args, tzinfo=zone).timestamp()


def test_instrument_helpers_build_what_ib_needs_and_read_back_a_readable_name() -> None:
    es = Instrument.future("ES", "202703")
    assert (es.sec_type, es.exchange, es.last_trade_date, es.multiplier) == ("FUT", "CME", "202703", "")
    fx = Instrument.forex("EUR", "CHF")
    assert (fx.symbol, fx.currency, fx.sec_type, fx.display) == ("EUR", "CHF", "CASH", "EUR.CHF")
    opt = Instrument.option("AAPL", "20250620", 190, "call")
    assert (opt.strike, opt.right, opt.display) == (190.0, "C", "AAPL 20250620 190 C")
    assert Instrument.stock("NESN", currency="CHF").currency == "CHF"
    assert ES.display == "ESH7" and Instrument(symbol="ES", sec_type="FUT", last_trade_date="202706").display == \
        "ES 202706"
    with pytest.raises(ValueError):
        Instrument.option("AAPL", "20250620", 190, "X")


def test_scopes_cover_every_contract_of_a_symbol_or_one_contract() -> None:
    assert scope_matches("symbol:es", "s1", "ES", 551601503) and scope_matches("symbol:ES", "s1", "ES", 551601532)
    assert scope_matches("conid:551601503", "s1", "ES", 551601503)
    assert not scope_matches("conid:551601503", "s1", "ES", 551601532)
    assert not scope_matches("conid:551601503", "s1", "ES", 0)  # an unknown contract is never covered by a conId
    from bus.messages import Kill

    Kill(kill_id="k", scope="conid:551601503", reason="r")
    with pytest.raises(ValueError):
        Kill(kill_id="k", scope="conid:ES", reason="r")


def test_price_grid_gives_the_nearest_valid_prices_around_an_off_tick_price() -> None:
    assert grid_neighbours(AAPL, 190.0000001) == (190.0, 190.01)
    assert grid_neighbours(AAPL, 190.01) is None and grid_neighbours(AAPL, 0.1 + 0.2) is None  # float noise
    assert grid_neighbours(ES, 5000.1) == (5000.0, 5000.25)
    assert grid_neighbours(PENNY, 0.12345) == (0.1234, 0.1235)  # below 1: 0.0001
    assert grid_neighbours(PENNY, 1.2345) == (1.23, 1.24)  # from 1: 0.01


def test_rounding_is_passive_and_only_when_asked() -> None:
    assert passive_price(AAPL, 190.006, "BUY", "limit") == 190.0 and passive_price(AAPL, 190.001, "SELL", "limit") \
        == 190.01
    assert passive_price(ES, 5000.1, "BUY", "stop") == 5000.25 and passive_price(ES, 5000.1, "SELL", "stop") == 5000.0
    spec = OrderSpec(strategy_id="s", client_order_id="c", instrument=AAPL.instrument, side="BUY", quantity=1,
                     order_type="LMT", limit_price=190.006)
    assert rounded_order(spec, AAPL) == (190.006, None)
    from msgspec.structs import replace

    assert rounded_order(replace(spec, round_to_tick=True), AAPL) == (190.0, None)


def test_size_rules_follow_the_contracts_increment_and_minimum() -> None:
    whole = AAPL
    fractional = ContractInfo(instrument=AAPL.instrument, min_size=0.0001, size_increment=0.0001)
    assert "fractional" in (size_problem(whole, 0.5) or "") and size_problem(whole, 3) is None
    assert size_problem(fractional, 0.5) is None and size_problem(fractional, 0.00005) is not None
    lots = ContractInfo(instrument=AAPL.instrument, min_size=100, size_increment=100)
    assert size_problem(lots, 200.0) is None and "size increment 100" in (size_problem(lots, 150) or "")
    minimum = ContractInfo(instrument=AAPL.instrument, min_size=25_000, size_increment=1)
    assert "minimum size 25000" in (size_problem(minimum, 100) or "")
    assert notional(ES, 2, 5000.0) == 500_000


def test_trading_hours_in_both_of_ibs_formats() -> None:
    assert session_of(ES, at(CHI, 2025, 6, 2, 10, 0)) is Session.OPEN
    assert session_of(ES, at(CHI, 2025, 6, 2, 16, 30)) is Session.CLOSED  # the daily break
    assert session_of(ES, at(CHI, 2025, 6, 2, 17, 0)) is Session.OPEN  # the evening session
    assert session_of(ES, at(CHI, 2026, 1, 5, 10, 0)) is Session.UNKNOWN  # beyond what the details list
    assert session_of(AAPL, at(NY, 2025, 6, 7, 12, 0)) is Session.CLOSED  # Saturday
    assert open_since(AAPL, at(NY, 2025, 6, 2, 9, 30)) == 5.5 * 3600 and open_since(AAPL, at(NY, 2025, 6, 2, 3, 0)) \
        is None
    old = TradingHours.parse("20250602:0930-1600,1700-0200;20250603:CLOSED", "US/Eastern")
    assert old.status(at(NY, 2025, 6, 2, 23, 0)) is Session.OPEN and old.status(at(NY, 2025, 6, 2, 16, 30)) is \
        Session.CLOSED
    assert TradingHours.parse("", "US/Eastern").status(0) is Session.UNKNOWN


def test_pnl_resets_per_instrument_as_ib_does_or_at_one_time() -> None:
    ib = PnLReset()
    monday_noon = at(NY, 2025, 6, 2, 12, 0)
    assert datetime.fromtimestamp(ib.last_reset(AAPL, monday_noon), NY).strftime("%a %H:%M") == "Sun 23:55"
    assert datetime.fromtimestamp(ib.last_reset(ES, monday_noon), CHI).strftime("%a %H:%M") == "Sun 17:00"
    fixed = PnLReset("17:00 US/Eastern")
    assert datetime.fromtimestamp(fixed.last_reset(ES, monday_noon), NY).strftime("%a %H:%M") == "Sun 17:00"
    with pytest.raises(ValueError):
        PnLReset("5pm")


def test_a_bad_pnl_reset_is_a_config_error_naming_the_key(tmp_path) -> None:
    path = tmp_path / "khazad.toml"
    path.write_text('[risk]\npnl_reset = "noon Mars/Olympus"\n')
    with pytest.raises(ConfigError, match="risk.pnl_reset"):
        load_config(path, env={})
