"""Instruments by IB contract id, end to end: the real gateway (ib_insync) against the TWS simulator, the real risk
governor, order manager and portfolio as processes, strategies through the SDK.

Issue 13's cases: an ES order without a multiplier checked on its true notional, two ES expiries as separate
positions, limits and tick streams, EUR.CHF and EUR.USD separate and converted, a contradicting multiplier
(``risk.contract_mismatch``), an off-tick price rejected before IB with the valid prices, an option order end to end.
The CHF account, the carried loser at the open and stale data at night have their own simulators
(``test_system_sessions.py``)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import pytest

from bus.messages import GetPositions, Instrument, PositionsReply
from sdk import OrderRejected
from tests.support.waiting import eventually
from tests.support.chain import ORDER_TIMEOUT_S, Chain, running_chain, spec

ESH7, ESM7 = 551601503, 551601532

LIMITS = """
[risk.limits]
max_position = 10000000
[risk.strategies.es-pos]
max_position = 2
[risk.strategies.fx]
max_order_quantity = 1000000
max_order_notional = 100000
max_position = 10000000
[risk.strategies.opt]
max_order_notional = 50000
"""


@pytest.fixture(scope="module")
def usd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """One chain for the module: a USD account on a real-time simulator, every actor."""
    from sim.testing import running_sim

    with running_sim(seed=11, clock="realtime", tick_interval=0.1) as sim:
        with running_chain(tmp_path_factory.mktemp("instruments"), sim, extra=LIMITS,
                           actors=("gateway", "risk", "orders", "portfolio")) as chain:
            yield chain


def on_tick(price: float, tick: float = 0.01) -> float:
    """``price`` moved onto the grid (down)."""
    return round(math.floor(price / tick + 1e-9) * tick, 10)


def money_in(reason: str, label: str = "notional") -> float:
    m = re.search(rf"{label} ([\d,]+\.\d\d)", reason)
    assert m, reason
    return float(m.group(1).replace(",", ""))


def quote(ticks: Any) -> Any:
    """The first tick with both sides."""
    return eventually(lambda: (t := ticks.get(0.2)) is not None and t.bid and t.ask and t, ORDER_TIMEOUT_S,
                      message="a two-sided tick")


# -- futures -------------------------------------------------------------------------------------------------------


def test_es_order_without_a_multiplier_is_rejected_on_its_true_notional(usd: Chain) -> None:
    es = Instrument.future("ES", "202703")  # no multiplier: IB's 50 applies
    px = on_tick(usd.mid("ESH7"), 0.25)
    d = usd.decided(lambda: spec(es, "BUY", 100, limit=px, strategy="es-big"))
    # 100 x ~5,240 x 50 = ~26M against max_order_notional 1M (without the multiplier: 524k, approved)
    assert d.code == "risk.max_notional", d
    assert money_in(d.reason) == pytest.approx(100 * px * 50) and "multiplier 50" in d.reason
    one = usd.check(spec(es, "BUY", 1, limit=px, strategy="es-big"))
    assert one.approved, one  # one contract (~262k) is within every limit


def test_two_es_expiries_are_separate_tick_streams(usd: Chain) -> None:
    june, march = usd.client("es-june"), usd.client("es-march")
    june.subscribe_market_data(Instrument.future("ES", "202706"))  # the June stream first
    march_ticks = march.ticks(Instrument.future("ES", "202703"))
    ack = march.subscribe_market_data(Instrument.future("ES", "202703"))
    assert (ack.con_id, ack.symbol) == (ESH7, "ESH7")
    got = [quote(march_ticks) for _ in range(5)]
    assert {t.con_id for t in got} == {ESH7} and {t.symbol for t in got} == {"ESH7"}
    # and the prices are March's, not June's (the simulator walks them apart: ~5,240 vs ~5,270)
    march_mid, june_mid = usd.mid("ESH7"), usd.mid("ESM7")
    assert all(abs((t.bid + t.ask) / 2 - march_mid) < abs((t.bid + t.ask) / 2 - june_mid) for t in got[-1:])
    assert march.last_ticks["ESH7"].con_id == ESH7 and june.last_ticks.get("ESH7") is None


def test_two_es_expiries_are_separate_positions_and_limits(usd: Chain) -> None:
    march, june = Instrument.future("ES", "202703"), Instrument.future("ES", "202706")
    usd.decided(lambda: spec(march, "BUY", 1, strategy="es-warm"))
    usd.decided(lambda: spec(june, "BUY", 1, strategy="es-warm"))
    usd.place(spec(march, "BUY", 2, strategy="es-pos"))
    eventually(lambda: usd.position("ESH7") == 2, ORDER_TIMEOUT_S, message="bought 2 ESH7")
    eventually(lambda: usd.risk_state().positions.get("ESH7") == 2, ORDER_TIMEOUT_S, message="risk sees 2 ESH7")
    # es-pos may hold 2 contracts per contract: June is another contract
    assert usd.check(spec(june, "BUY", 1, strategy="es-pos")).approved
    more_march = usd.check(spec(march, "BUY", 1, strategy="es-pos"))
    assert more_march.code == "risk.max_position" and "ESH7" in more_march.reason
    st = usd.risk_state()
    assert st.positions.get("ESH7") == 2 and st.positions.get("ESM7", 0) == 0
    positions = usd.service("portfolio").call(GetPositions(strategy_id="es-pos"))
    assert isinstance(positions, PositionsReply)
    assert {(p.instrument.con_id, p.quantity) for p in positions.positions} == {(ESH7, 2)}


def test_a_contradicting_multiplier_or_currency_is_a_contract_mismatch(usd: Chain) -> None:
    wrong = Instrument(symbol="ES", sec_type="FUT", exchange="CME", last_trade_date="202703", multiplier="5")
    d = usd.check(spec(wrong, "BUY", 1, limit=5000.0))
    assert d.code == "risk.contract_mismatch" and "multiplier 5" in d.reason and "50" in d.reason, d
    nesn = usd.check(spec(Instrument(symbol="NESN"), "BUY", 1, limit=88.0))  # NESN trades in CHF, not USD
    assert nesn.code == "risk.contract_mismatch" and "CHF" in nesn.reason, nesn
    ambiguous = usd.check(spec(Instrument(symbol="ES", sec_type="FUT", exchange="CME"), "BUY", 1, limit=5000.0))
    assert ambiguous.code == "risk.ambiguous_contract" and "ESH7" in ambiguous.reason and "ESM7" in ambiguous.reason


# -- FX --------------------------------------------------------------------------------------------------------------


def test_eur_chf_and_eur_usd_are_separate_and_converted_into_the_base_currency(usd: Chain) -> None:
    eurusd, eurchf = Instrument.forex("EUR", "USD"), Instrument.forex("EUR", "CHF")
    tick = 0.00005
    usd.decided(lambda: spec(eurusd, "BUY", 1000, strategy="fx"))
    usd.decided(lambda: spec(eurchf, "BUY", 1000, strategy="fx"))
    # each pair is collared against its own price: EUR.CHF near 0.94 and EUR.USD near 1.08 both pass
    chf_px, usd_px = on_tick(usd.mid("EUR.CHF"), tick), on_tick(usd.mid("EUR.USD"), tick)
    assert 0.9 < chf_px < 1.0 < usd_px
    assert usd.check(spec(eurusd, "BUY", 20_000, limit=usd_px, strategy="fx")).approved
    assert usd.check(spec(eurchf, "BUY", 20_000, limit=chf_px, strategy="fx")).approved
    # 100,000 EUR.CHF: 94,000 CHF is ~106,000 USD (CHF -> USD at 1 / USD.CHF): over the 100,000 USD limit
    big = usd.check(spec(eurchf, "BUY", 100_000, limit=chf_px, strategy="fx"))
    assert big.code == "risk.max_notional", big
    want = 100_000 * chf_px / usd.mid("USD.CHF")
    assert money_in(big.reason) == pytest.approx(want, rel=0.005) and "CHF/USD" in big.reason
    # 90,000 EUR.CHF: ~95,600 USD, within it; the same 90,000 in EUR.USD (~97,000 USD) as well
    assert usd.check(spec(eurchf, "BUY", 90_000, limit=chf_px, strategy="fx")).approved
    eur_big = usd.check(spec(eurusd, "BUY", 100_000, limit=usd_px, strategy="fx"))
    assert eur_big.code == "risk.max_notional" and money_in(eur_big.reason) == pytest.approx(100_000 * usd_px)


# -- prices ----------------------------------------------------------------------------------------------------------


def test_an_off_tick_price_is_rejected_before_ib_with_the_valid_prices(usd: Chain) -> None:
    c = usd.client("tick")
    ticks = c.ticks("AAPL")
    c.subscribe_market_data("AAPL")
    t = quote(ticks)
    base = on_tick(t.bid * 0.99, 0.01)
    off = base + 0.0000001
    with pytest.raises(OrderRejected) as exc:
        c.place_limit_order("AAPL", "BUY", 1, off)
    assert exc.value.code == "risk.tick_size"
    assert f"{base:.2f} and {base + 0.01:.2f}" in exc.value.reason
    view = exc.value.order
    assert view is not None and view.status == "RiskRejected"
    assert usd.sim_order(view.spec.order_ref) is None  # never reached IB
    # asked for: rounded to the grid on the passive side (a buy down) and placed
    placed = c.place_limit_order("AAPL", "BUY", 1, base + 0.006, round_to_tick=True)
    eventually(lambda: usd.working_at_sim(placed.spec.order_ref), ORDER_TIMEOUT_S, message="placed at IB")
    assert usd.sim_order(placed.spec.order_ref)["lmtPrice"] == pytest.approx(base)
    c.cancel_order(placed.spec.client_order_id)
    assert c.wait_for_order(placed.spec.client_order_id, "done", timeout=ORDER_TIMEOUT_S).status == "Cancelled"



def test_fractional_quantities_pass_only_where_the_contract_allows_them(usd: Chain) -> None:
    # IB's contract details: AAPL trades in 0.0001 share steps (fractional shares), TSLA in whole shares
    usd.decided(lambda: spec("TSLA", "BUY", 1, strategy="frac"))
    usd.decided(lambda: spec("AAPL", "BUY", 1, strategy="frac"))
    tsla = usd.check(spec("TSLA", "BUY", 0.5, limit=on_tick(usd.mid("TSLA")), strategy="frac"))
    assert tsla.code == "risk.size_increment" and "fractional" in tsla.reason, tsla
    assert usd.check(spec("AAPL", "BUY", 0.5, limit=on_tick(usd.mid("AAPL")), strategy="frac")).approved
    odd = usd.check(spec("AAPL", "BUY", 0.00005, limit=on_tick(usd.mid("AAPL")), strategy="frac"))
    assert odd.code == "risk.size_increment", odd


# -- options ---------------------------------------------------------------------------------------------------------


def test_an_option_order_end_to_end(usd: Chain) -> None:
    universe = usd.sim.server.universe
    sim_opt = next(i for i in universe.instruments
                   if i.sec_type == "OPT" and i.symbol == "AAPL" and i.strike == 190 and i.right == "C")
    opt = Instrument.option("AAPL", sim_opt.last_trade_date, 190, "C")
    c = usd.client("opt")
    info = c.qualify(opt)
    assert (info.con_id, info.multiplier, info.display) == (sim_opt.con_id, 100.0,
                                                            f"AAPL {sim_opt.last_trade_date} 190 C")
    ticks = c.ticks(opt)
    c.subscribe_market_data(opt)
    t = quote(ticks)
    assert t.con_id == sim_opt.con_id and t.symbol == info.display
    # risk values it with IB's multiplier of 100: 200 contracts are far beyond opt's 50,000 limit
    with pytest.raises(OrderRejected) as exc:
        c.place_limit_order(opt, "BUY", 200, t.ask)
    assert exc.value.code == "risk.max_notional" and "multiplier 100" in exc.value.reason
    assert money_in(exc.value.reason) == pytest.approx(200 * t.ask * 100)
    bought = c.place_limit_order(opt, "BUY", 2, t.ask)
    done = c.wait_for_order(bought.spec.client_order_id, "done", timeout=ORDER_TIMEOUT_S)
    assert done.status == "Filled" and done.filled == 2
    eventually(lambda: any(p.instrument.con_id == sim_opt.con_id and p.quantity == 2
                           for p in c.get_positions(c.strategy_id)), ORDER_TIMEOUT_S, message="portfolio position")
    eventually(lambda: usd.risk_state().positions.get(info.display) == 2, ORDER_TIMEOUT_S, message="risk position")
    resting = c.place_limit_order(opt, "BUY", 1, on_tick(t.bid * 0.97, 0.01))
    assert c.wait_for_order(resting.spec.client_order_id, "live", timeout=ORDER_TIMEOUT_S).is_live
    c.cancel_order(resting.spec.client_order_id)
    assert c.wait_for_order(resting.spec.client_order_id, "done", timeout=ORDER_TIMEOUT_S).status == "Cancelled"
