"""The gateway qualifies every instrument against IB's contract details (the real gateway process, ib_insync, the
TWS simulator): IB's conId, multiplier, tick, sizes, hours; refusals for what IB does not know, what says too little
and what contradicts IB; market data, fills and positions on topics keyed by conId; prices rounded to the grid only
when the order asks for it; IB's own daily P&L (reqPnL / reqPnLSingle) published and in the snapshot."""

from __future__ import annotations

from msgspec.structs import replace

from bus import topics
from bus.messages import (
    AccountPnLEvent,
    GatewaySnapshot,
    GetSnapshot,
    Instrument,
    InstrumentEvent,
    InstrumentReply,
    MarketDataAck,
    PositionPnLEvent,
    QualifyInstrument,
    Rejected,
    SubmitAck,
    SubscribeMarketData,
    TickEvent,
)
from tests.support.builders import order
from tests.support.gateway_harness import AAPL_CON_ID
from tests.support.sim_state import requests_named, sim_order

ESH7, ESM7, ESZ7 = 551601503, 551601532, 551601561


def qualify(gateway, inst: Instrument):
    return gateway.call(QualifyInstrument(instrument=inst))


def ticks_on(recorder, con_id: int) -> list[TickEvent]:
    with recorder._cond:
        return [b for t, _, b, _ in recorder.events if t == topics.market_data(con_id) and isinstance(b, TickEvent)]


def test_qualify_gives_ibs_contract_details_and_publishes_them(gateway, recorder) -> None:
    reply = qualify(gateway, Instrument.future("ES", "202703"))
    assert isinstance(reply, InstrumentReply), reply
    info = reply.info
    assert (info.con_id, info.display, info.multiplier, info.min_tick) == (ESH7, "ESH7", 50.0, 0.25)
    assert info.instrument.multiplier == "50" and info.instrument.trading_class == "ES"
    assert info.time_zone == "US/Central" and info.trading_hours and info.size_increment == 1
    assert [(p.low_edge, p.increment) for p in info.price_increments] == [(0.0, 0.25)]  # IB's market rule
    event = recorder.wait_for(lambda r: [b for b in r.bodies(topics.instrument(ESH7), InstrumentEvent)],
                              what="instrument.<conId>")[0]
    assert event.info == info
    aapl = qualify(gateway, Instrument.stock("AAPL")).info
    assert (aapl.con_id, aapl.multiplier, aapl.min_size, aapl.size_increment) == (AAPL_CON_ID, 1.0, 0.0001, 0.0001)
    chf = qualify(gateway, Instrument.forex("EUR", "CHF")).info
    assert (chf.display, chf.instrument.currency, chf.con_id) == ("EUR.CHF", "CHF", 12087817)


def test_qualify_refuses_what_ib_does_not_know_says_too_little_or_contradicts(gateway) -> None:
    unknown = qualify(gateway, Instrument.stock("NOPE"))
    assert isinstance(unknown, Rejected) and unknown.code == "unknown_symbol"
    ambiguous = qualify(gateway, Instrument(symbol="ES", sec_type="FUT", exchange="CME"))
    assert isinstance(ambiguous, Rejected) and ambiguous.code == "ambiguous_contract"
    assert all(s in ambiguous.reason for s in ("ESH7", "ESM7", "ESZ7"))
    multiplier = qualify(gateway, Instrument(symbol="ES", sec_type="FUT", exchange="CME", last_trade_date="202703",
                                             multiplier="5"))
    assert isinstance(multiplier, Rejected) and multiplier.code == "contract_mismatch"
    assert "multiplier 5" in multiplier.reason and "50" in multiplier.reason
    currency = qualify(gateway, Instrument(symbol="NESN"))  # USD by default; IB has it in CHF
    assert isinstance(currency, Rejected) and currency.code == "contract_mismatch" and "CHF" in currency.reason
    by_con_id = qualify(gateway, Instrument(symbol="ES", sec_type="FUT", con_id=ESM7, currency="EUR"))
    assert isinstance(by_con_id, Rejected) and by_con_id.code == "contract_mismatch"
    # saying less than IB is fine: the multiplier IB has, or none
    assert isinstance(qualify(gateway, Instrument(symbol="ES", sec_type="FUT", exchange="CME",
                                                  last_trade_date="202703", multiplier="50")), InstrumentReply)


def test_an_option_qualifies_with_strike_right_and_ibs_multiplier(gateway, sim) -> None:
    sim_opt = next(i for i in sim.server.universe.instruments
                   if i.sec_type == "OPT" and i.symbol == "SPY" and i.strike == 530 and i.right == "P")
    info = qualify(gateway, Instrument.option("SPY", sim_opt.last_trade_date, 530, "PUT")).info
    assert (info.con_id, info.multiplier, info.instrument.strike, info.instrument.right) == \
        (sim_opt.con_id, 100.0, 530.0, "P")
    assert info.display == f"SPY {sim_opt.last_trade_date} 530 P" and info.under_con_id == 756733


def test_two_es_expiries_stream_on_their_own_topics(gateway, recorder, sim) -> None:
    seen = max((r["seq"] for r in sim.state()["request_log"]), default=0)  # the log is bounded: count by seq
    june = gateway.call(SubscribeMarketData(instrument=Instrument.future("ES", "202706"), subscriber="a"))
    march = gateway.call(SubscribeMarketData(instrument=Instrument.future("ES", "202703"), subscriber="b"))
    assert isinstance(june, MarketDataAck) and isinstance(march, MarketDataAck)
    assert (june.con_id, june.symbol, march.con_id, march.symbol) == (ESM7, "ESM7", ESH7, "ESH7")
    assert march.info is not None and march.info.multiplier == 50
    # the ack can overtake IB's receipt of the request: the clock moves once IB holds both subscriptions (ticks
    # are made only when it moves), else the streams would wait for a tick that never comes (a CI flake)
    sim.wait_for(lambda s: sum(r["seq"] > seen for r in requests_named(s, "reqMktData")) >= 2,
                 what="both subscriptions at IB")
    sim.advance(2.0)
    recorder.wait_for(lambda r: len(ticks_on(r, ESH7)) >= 2 and len(ticks_on(r, ESM7)) >= 2, what="both streams")
    assert {(t.con_id, t.symbol) for t in ticks_on(recorder, ESH7)} == {(ESH7, "ESH7")}
    assert {(t.con_id, t.symbol) for t in ticks_on(recorder, ESM7)} == {(ESM7, "ESM7")}
    assert gateway.status().market_data == {"ESH7": 1, "ESM7": 1}


def test_submit_refuses_a_contradicting_instrument_even_with_an_approval(gateway, sim) -> None:
    wrong = replace(order(coid="mm1", symbol="ES", sec_type="FUT", order_type="LMT", limit=5000.0),
                    instrument=Instrument(symbol="ES", sec_type="FUT", exchange="CME", last_trade_date="202703",
                                          multiplier="5"))
    refused = gateway.submit(wrong)
    assert isinstance(refused, Rejected) and refused.code == "contract_mismatch", refused
    assert sim_order(sim.state(), wrong.order_ref) is None


def test_round_to_tick_places_the_price_rounded_on_the_passive_side(gateway, sim) -> None:
    buy = replace(order(coid="rt-buy", order_type="LMT", limit=100.006), round_to_tick=True)
    sell = replace(order(coid="rt-sell", side="SELL", order_type="LMT", limit=250.001), round_to_tick=True)
    for spec in (buy, sell):
        assert isinstance(gateway.submit(spec), SubmitAck)
    state = sim.wait_for(lambda s: all(sim_order(s, o.order_ref) for o in (buy, sell)), what="both orders at IB")
    assert sim_order(state, buy.order_ref)["lmtPrice"] == 100.0  # a buy rounds down
    assert sim_order(state, sell.order_ref)["lmtPrice"] == 250.01  # a sell rounds up


def test_ibs_daily_pnl_is_published_and_in_the_snapshot(gateway, recorder, sim) -> None:
    spec = order(coid="pnl1", qty=10)
    assert isinstance(gateway.submit(spec), SubmitAck)
    # the ack may come before the order has left the gateway's pacer: move time only once IB holds it
    sim.wait_for(lambda s: sim_order(s, spec.order_ref), what="the order at IB")
    sim.advance(1.0)
    recorder.wait_for(lambda r: r.bodies(topics.position(AAPL_CON_ID)), what="the position")
    sim.advance(3.0)
    account = recorder.wait_for(lambda r: r.bodies(topics.ACCOUNT_PNL, AccountPnLEvent), what="pnl.account")[-1]
    single = recorder.wait_for(lambda r: [b for b in r.bodies(topics.position_pnl(AAPL_CON_ID), PositionPnLEvent)
                                          if b.position == 10], what="pnl.<conId>")[-1]
    assert account.daily_pnl is not None and single.daily_pnl is not None and single.con_id == AAPL_CON_ID
    snap = gateway.call(GetSnapshot())
    assert isinstance(snap, GatewaySnapshot)
    assert snap.pnl is not None and snap.pnl.daily_pnl is not None
    assert AAPL_CON_ID in {p.con_id for p in snap.position_pnl}
    assert AAPL_CON_ID in {c.con_id for c in snap.contracts}  # details of every contract in the snapshot
