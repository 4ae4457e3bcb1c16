"""The portfolio actor's state, driven in-process (one class; its publisher is a recorder, nothing else is faked):
account summary, valuation, per-strategy queries, snapshot reconciliation, baseline and drift alerts."""

from __future__ import annotations

import pytest

from actors.portfolio.actor import PortfolioActor
from bus import topics
from bus.messages import (
    AccountValue,
    AccountValuesEvent,
    Alert,
    GatewaySnapshot,
    Instrument,
    PortfolioSnapshot,
    PositionEvent,
    ReconciliationReport,
    TickEvent,
)
from tests.support.builders import AAPL, MSFT, account_values, commission, fill, position
from tests.support.doubles.publisher import PublishedLog


@pytest.fixture
def actor(cfg) -> PortfolioActor:
    a = PortfolioActor(cfg)
    a.publisher = PublishedLog()  # type: ignore[assignment]
    return a


def snap(positions, executions=(), commissions=(), values=None) -> GatewaySnapshot:
    return GatewaySnapshot(open_orders=[], executions=list(executions), commissions=list(commissions),
                           positions=list(positions), account_values=values or account_values(1e6, 9e5, 4e6),
                           account="DU1234567")


def test_account_summary_comes_from_ib_account_values(actor):
    actor._on_account_values("DU1234567", account_values(1_000_123.45, 998_000.0, 4_000_000.0), replace=False)
    s = actor.snapshot()
    assert (s.account, s.currency) == ("DU1234567", "USD")
    assert (s.net_liquidation, s.total_cash, s.buying_power) == (1_000_123.45, 998_000.0, 4_000_000.0)


def test_positions_are_valued_at_the_mid(actor):
    actor._on_position(position(100, 150.0))
    actor._on_tick(TickEvent(symbol="AAPL", con_id=AAPL.con_id, bid=151.0, ask=151.2, last=149.0))
    (p,) = actor.snapshot().positions
    assert p.market_price == pytest.approx(151.1)
    assert p.market_value == pytest.approx(15_110.0)
    assert p.unrealized_pnl == pytest.approx(110.0)
    assert actor.snapshot().unrealized_pnl == pytest.approx(110.0)
    actor._on_position(position(0, 0.0))
    assert actor.snapshot().positions == []


def test_strategy_positions_and_pnl_are_per_strategy(actor):
    actor._on_fill(fill(1, "BUY", 100, 10.0, strategy="alpha"))
    actor._on_fill(fill(2, "SELL", 40, 11.0, strategy="alpha"))
    actor._on_fill(fill(3, "BUY", 10, 20.0, inst=MSFT, strategy="beta"))
    actor.ledger.add_commission(commission(2, 1.0))
    actor._on_tick(TickEvent(symbol="AAPL", con_id=AAPL.con_id, last=12.0))
    actor._on_tick(TickEvent(symbol="MSFT", con_id=MSFT.con_id, last=19.0))
    (alpha,) = actor.strategy_positions("alpha")
    assert alpha.quantity == 60 and alpha.avg_cost == pytest.approx(10.0)
    assert alpha.realized_pnl == pytest.approx(40.0 - 1.0)
    assert alpha.unrealized_pnl == pytest.approx(120.0)
    s = actor.snapshot()
    assert s.strategy_realized == {"alpha": pytest.approx(39.0), "beta": 0.0}
    assert s.strategy_pnl == {"alpha": pytest.approx(159.0), "beta": pytest.approx(-10.0)}
    assert actor.strategy_positions("nobody") == []


def test_snapshot_recovers_missed_fills_without_double_counting(actor):
    actor._on_fill(fill(1, "BUY", 100, 10.0))
    report = actor.apply_snapshot(snap([position(150, 10.0)], executions=[fill(1, "BUY", 100, 10.0),
                                                                          fill(2, "BUY", 50, 10.0)]))
    assert report.replayed_fills == 1
    assert actor.ledger.books["alpha"]["con:265598"].quantity == 150
    assert actor.reconciled and actor.snapshot().reconciled


def test_drift_is_alerted_once_after_two_comparisons_and_its_end_once(actor):
    executions = [fill(1, "BUY", 100, 10.0)]
    # IB held 30 before today's executions: the baseline, fixed once two snapshots agree
    for _ in range(2):
        assert actor.apply_snapshot(snap([position(130, 10.0)], executions)).ok
    # adopted into external's books (held before the books began), alpha keeps its own
    assert actor.ledger.books["external"]["con:265598"].quantity == 30.0
    assert actor.ledger.books["alpha"]["con:265598"].quantity == 100.0
    assert actor.apply_snapshot(snap([position(130, 10.0)], executions)).ok
    # a position change at IB that no execution explains (e.g. a corporate action, a trade from another system)
    first = actor.apply_snapshot(snap([position(125, 10.0)], executions))
    assert first.ok and not actor.publisher.of(Alert)  # one sighting is not enough (a position update may lag)
    second = actor.apply_snapshot(snap([position(125, 10.0)], executions))
    assert not second.ok and second.position_drift == {"AAPL": -5.0}
    assert second.strategy_positions == {"alpha": {"AAPL": 100.0}, "external": {"AAPL": 30.0}}
    for _ in range(3):
        actor.apply_snapshot(snap([position(125, 10.0)], executions))
    alerts = actor.publisher.of(Alert)
    assert [(a.kind, a.severity) for a in alerts] == [("portfolio_drift", "critical")]
    assert alerts[0].detail == {"AAPL": "-5", "books.alpha": "AAPL 100", "books.external": "AAPL 30"}
    for _ in range(2):
        actor.apply_snapshot(snap([position(125, 10.0)], executions + [fill(2, "SELL", 5, 10.0, ref="tws")]))
    assert [a.kind for a in actor.publisher.of(Alert)] == ["portfolio_drift", "portfolio_drift_resolved"]


def test_fill_arriving_while_the_snapshot_was_taken_is_not_drift(actor):
    executions = [fill(1, "BUY", 100, 10.0)]
    for _ in range(2):
        actor.apply_snapshot(snap([position(100, 10.0)], executions))
    known = set(actor.ledger.fills)
    actor._on_fill(fill(2, "BUY", 10, 10.0))  # on the bus, after IB's answer was assembled
    for _ in range(2):
        assert actor.apply_snapshot(snap([position(100, 10.0)], executions), known).ok


def test_events_update_state_and_mark_a_snapshot_due(actor, cfg):
    import asyncio

    async def run() -> PortfolioSnapshot:
        await actor.on_start()
        env = type("Env", (), {})()
        env.body = PositionEvent(position=position(10, 100.0))
        await actor.on_event(topics.position("AAPL"), env)
        env.body = AccountValuesEvent(account="DU1234567", values=account_values(2e6, 1e6, 8e6))
        await actor.on_event(topics.ACCOUNT_VALUES, env)
        assert actor._dirty.is_set()
        return actor.snapshot()

    s = asyncio.run(run())
    assert s.net_liquidation == 2e6 and s.positions[0].quantity == 10
    assert not actor.publisher.of(ReconciliationReport)


def test_events_newer_than_an_in_flight_snapshot_are_kept(actor):
    asked_at = actor._updates
    known = set(actor.ledger.fills)
    # while the snapshot request is in flight, IB reports a new position and new account values
    actor._on_position(position(50, 11.0, inst=MSFT))
    actor._on_account_values("DU1234567", account_values(2e6, 1.5e6, 8e6), replace=False)
    actor.apply_snapshot(snap([position(10, 10.0)], values=account_values(1e6, 9e5, 4e6)), known, asked_at)
    s = actor.snapshot()
    assert {p.instrument.symbol: p.quantity for p in s.positions} == {"AAPL": 10, "MSFT": 50}
    assert s.net_liquidation == 2e6


def test_lost_gateway_messages_trigger_an_immediate_reconciliation(actor):
    import asyncio

    actor._reconcile_now = asyncio.Event()
    actor._on_gap("proxy", topics.heartbeat("proxy"), 1, 3)  # not the gateway: nothing of the books was lost
    assert not actor._reconcile_now.is_set()
    actor._on_gap("gateway", topics.fill("AAPL"), 4, 9)  # fills lost (e.g. the proxy restarted): don't wait 30 s
    assert actor._reconcile_now.is_set()


ESH7 = Instrument(symbol="ES", sec_type="FUT", exchange="CME", last_trade_date="20270319", multiplier="50",
                  con_id=551601503, local_symbol="ESH7")
ESM7 = Instrument(symbol="ES", sec_type="FUT", exchange="CME", last_trade_date="20270618", multiplier="50",
                  con_id=551601532, local_symbol="ESM7")
NESN = Instrument(symbol="NESN", currency="CHF", con_id=39622943, local_symbol="NESN")


def test_two_es_expiries_are_two_positions_each_with_its_own_mark(actor):
    actor._on_position(position(2, 5240.0 * 50, inst=ESH7))
    actor._on_position(position(-1, 5270.0 * 50, inst=ESM7))
    actor._on_tick(TickEvent(symbol="ESH7", con_id=ESH7.con_id, bid=5250.0, ask=5250.5))
    actor._on_tick(TickEvent(symbol="ESM7", con_id=ESM7.con_id, bid=5260.0, ask=5260.5))
    by_name = {p.instrument.display: p for p in actor.snapshot().positions}
    assert set(by_name) == {"ESH7", "ESM7"}
    assert by_name["ESH7"].market_price == pytest.approx(5250.25)
    assert by_name["ESH7"].unrealized_pnl == pytest.approx(2 * (5250.25 - 5240.0) * 50)
    assert by_name["ESM7"].market_price == pytest.approx(5260.25)
    assert by_name["ESM7"].unrealized_pnl == pytest.approx(-1 * (5260.25 - 5270.0) * 50)


def test_totals_are_in_the_base_currency_at_ibs_exchange_rates(actor):
    actor._on_account_values("DU1234567", [
        AccountValue(key="NetLiquidation", value="1000000.00", currency="USD"),
        AccountValue(key="ExchangeRate", value="1.130000", currency="CHF"),
    ], replace=False)
    actor._on_position(position(100, 88.0, inst=NESN))  # CHF
    actor._on_position(position(10, 190.0))  # USD
    actor._on_tick(TickEvent(symbol="NESN", con_id=NESN.con_id, bid=89.98, ask=90.02))
    actor._on_tick(TickEvent(symbol="AAPL", con_id=AAPL.con_id, bid=191.0, ask=191.0))
    s = actor.snapshot()
    nesn = next(p for p in s.positions if p.instrument.con_id == NESN.con_id)
    assert nesn.unrealized_pnl == pytest.approx(200.0)  # in CHF, the contract's currency
    assert s.unrealized_pnl == pytest.approx(200.0 * 1.13 + 10.0)  # in USD
