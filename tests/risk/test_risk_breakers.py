"""Unit tests of the throttles and circuit breakers (pure, clock injected)."""

from __future__ import annotations

from actors.risk.breakers import (
    Cancel,
    CancelOrders,
    DailyLossBreaker,
    Disable,
    DisconnectBreaker,
    Escalate,
    Lift,
    Stale,
    StaleDataBreaker,
    fill_throttle_actions,
    reject_rate_actions,
)
from actors.risk.throttles import (
    DuplicateDetector,
    OrderRateLimiter,
    RejectRate,
    RejectRateTracker,
    SlidingCount,
)
from tests.support.builders import order_for

#: the risk tests' orders belong to strategy "alpha" unless a test says otherwise
order = order_for("alpha")


def test_order_rate_token_bucket_allows_a_burst_then_the_rate():
    r = OrderRateLimiter()
    for _ in range(5):
        assert r.allows("a", 5, 0.0)
        r.take("a", 5, 0.0)
    assert not r.allows("a", 5, 0.0)
    assert r.allows("b", 5, 0.0)  # per strategy
    assert not r.allows("a", 5, 0.19) and r.allows("a", 5, 0.2)


def test_fractional_order_rate():
    r = OrderRateLimiter()
    r.take("a", 0.5, 0.0)
    assert not r.allows("a", 0.5, 1.9) and r.allows("a", 0.5, 2.0)


def test_sliding_count_forgets_old_events():
    c = SlidingCount()
    assert [c.add("a", t, 1.0) for t in (0.0, 0.5, 0.9)] == [1, 2, 3]
    assert c.count("a", 1.6, 1.0) == 1
    c.reset("a")
    assert c.count("a", 1.6, 1.0) == 0


def test_duplicate_same_terms_other_id_within_window():
    d = DuplicateDetector()
    first = order("BUY", 10, limit=5.0, coid="d1")
    d.record(first, 1.0, now=0.0)
    assert d.duplicate_of(order("BUY", 10, limit=5.0, coid="d2"), 1.0, now=0.5) == first.order_ref
    assert d.duplicate_of(order("BUY", 10, limit=5.0, coid="d1"), 1.0, now=0.5) is None  # same order re-checked
    assert d.duplicate_of(order("BUY", 11, limit=5.0, coid="d3"), 1.0, now=0.5) is None
    assert d.duplicate_of(order("BUY", 10, limit=5.0, coid="d4", strategy="beta"), 1.0, now=0.5) is None
    assert d.duplicate_of(order("BUY", 10, limit=5.0, coid="d5"), 1.0, now=1.01) is None
    assert d.duplicate_of(order("BUY", 10, limit=5.0, coid="d6"), 0.0, now=0.1) is None  # window 0: disabled


def test_reject_rate_counts_orders_and_rejections_in_the_window():
    t = RejectRateTracker()
    for i in range(3):
        t.record("a", float(i), 60.0, order=True, rejected=False)
    rr = t.record("a", 3.0, 60.0, order=True, rejected=True)
    assert rr == RejectRate(orders=4, rejects=1)
    rr = t.record("a", 4.0, 60.0, order=False, rejected=True)  # approved order rejected downstream
    assert rr == RejectRate(orders=4, rejects=2) and rr.rate == 0.5
    assert t.rate("a", 62.5, 60.0) == RejectRate(orders=1, rejects=1)  # only t=3 and t=4 are left


def test_reject_rate_breaker_needs_enough_orders():
    assert reject_rate_actions("a", RejectRate(3, 3), min_orders=4, max_rate=0.5) == []
    acts = reject_rate_actions("a", RejectRate(4, 2), min_orders=4, max_rate=0.5)
    assert [type(a) for a in acts] == [Escalate, Cancel]
    assert acts[0].scope == "strategy:a" and acts[0].state == "HALTED" and acts[1].scope == "strategy:a"


def test_fill_throttle_disables_and_cancels_the_strategy():
    assert fill_throttle_actions("a", 2, max_fills=3, window_s=1) == []
    acts = fill_throttle_actions("a", 3, max_fills=3, window_s=1)
    assert isinstance(acts[0], Disable) and acts[0].strategy_id == "a"
    assert isinstance(acts[1], Cancel) and acts[1].scope == "strategy:a"


def test_daily_loss_trips_once_per_episode():
    b = DailyLossBreaker()
    assert b.evaluate("all", -999.0, 1000.0) == []
    acts = b.evaluate("all", -1000.0, 1000.0)
    assert [type(a) for a in acts] == [Escalate, Cancel] and acts[0].state == "HALTED" and acts[1].scope == "all"
    assert b.evaluate("all", -1500.0, 1000.0) == []
    assert b.evaluate("all", -10.0, 1000.0) == []  # recovered: re-armed
    assert len(b.evaluate("all", -2000.0, 1000.0)) == 2
    assert b.evaluate("strategy:x", None, 1.0) == []


def test_stale_data_blocks_a_contract_once_until_a_fresh_tick_and_cancels_nothing_by_default():
    b = StaleDataBreaker()
    assert b.evaluate({265598: 1.0, 272093: 0.0}, 2.0) == []
    acts = b.evaluate({265598: 2.5}, 2.0, resting={265598: ["a/1"]}, names={265598: "AAPL"})
    assert acts == [Stale(265598, acts[0].reason)] and "AAPL" in acts[0].reason
    assert b.evaluate({265598: 3.0}, 2.0) == []
    b.on_fresh_tick(265598)
    assert [type(a) for a in b.evaluate({265598: 2.5}, 2.0, resting={265598: ["a/1"]})] == [Stale]


def test_stale_data_cancels_resting_day_orders_only_when_configured():
    b = StaleDataBreaker(cancel_resting=True)
    acts = b.evaluate({265598: 2.5, 551601503: 9.0}, 2.0, resting={265598: ["a/2", "a/1"], 551601503: []})
    assert [type(a) for a in acts] == [Stale, CancelOrders, Stale]
    assert acts[1].order_refs == ("a/1", "a/2")


def test_disconnect_reducing_then_cancel_and_lift_on_ready():
    b = DisconnectBreaker("reducing", True, True)
    assert b.on_connection("CONNECTED") == []
    assert b.on_connection("READY") == []  # first READY: nothing was lost yet
    acts = b.on_connection("DISCONNECTED", "1100")
    assert acts == [Escalate("all", "REDUCING", acts[0].reason, "risk.disconnect")]
    assert b.on_connection("DISCONNECTED") == []  # once
    assert b.on_connection("CONNECTING") == [] and b.on_connection("RECONCILING") == []
    acts = b.on_connection("READY")
    assert [type(a) for a in acts] == [Cancel, Lift] and acts[0].scope == "all"
    assert b.on_connection("READY") == []


def test_disconnect_before_first_ready_is_start_up_not_a_breach():
    b = DisconnectBreaker("reducing", True, True)
    assert b.on_connection("DISCONNECTED", "starting") == []
    assert b.went_down("gateway silent") == []
    assert b.on_connection("CONNECTING") == [] and b.on_connection("READY") == []  # no cancel of resting orders
    assert b.on_connection("DISCONNECTED", "1100")[0].state == "REDUCING"


def test_disconnect_options():
    halt = DisconnectBreaker("halted", False, False)
    halt.came_back()  # a READY link first
    assert halt.went_down("hb")[0].state == "HALTED"
    assert halt.came_back() == []
    none = DisconnectBreaker("none", True, True)
    none.came_back()
    assert none.went_down("x") == []
    assert [type(a) for a in none.came_back()] == [Cancel]
