"""IB's historical pacing rules as the gateway keeps them (unit tests of the pure rule keeper; the simulator test in
test_gateway_data.py shows IB never sees a violation)."""

from __future__ import annotations

from actors.gateway.history_pacing import WINDOW_MARGIN_S, HistoryKey, HistoryPacing


def key(n: int = 0, what: str = "TRADES", con_id: int = 265598) -> HistoryKey:
    return HistoryKey(
        con_id=con_id, exchange="SMART", end=f"e{n}", duration="1 D", bar_size="1 min", what_to_show=what, use_rth=True
    )


def test_identical_request_waits_fifteen_seconds_plus_margin() -> None:
    p = HistoryPacing()
    p.record(key(), 100.0)
    assert p.next_allowed(key(), 101.0) == 100.0 + 15.0 + WINDOW_MARGIN_S
    assert p.next_allowed(key(1), 101.0) == 101.0  # a different request may go


def test_sixth_request_for_one_contract_within_two_seconds_waits() -> None:
    p = HistoryPacing()
    for i in range(5):
        assert p.next_allowed(key(i), 100.0 + i * 0.1) == 100.0 + i * 0.1
        p.record(key(i), 100.0 + i * 0.1)
    assert p.next_allowed(key(5), 100.5) == 100.0 + 2.0 + WINDOW_MARGIN_S
    assert p.next_allowed(key(5, con_id=1), 100.5) == 100.5  # another contract may go
    assert p.next_allowed(key(5, what="MIDPOINT"), 100.5) == 100.5  # so may another whatToShow


def test_bid_ask_counts_twice() -> None:
    p = HistoryPacing()
    for i in range(2):
        p.record(key(i, what="BID_ASK"), 100.0)
    assert p.next_allowed(key(2, what="BID_ASK"), 100.0) == 100.0 + 2.0 + WINDOW_MARGIN_S  # 4 + 2 > 5
    assert p.in_window(100.0) == 4


def test_sixty_first_request_in_ten_minutes_waits_for_the_oldest_to_leave() -> None:
    p = HistoryPacing()
    for i in range(60):
        p.record(key(i, con_id=i), 10.0 * i)  # 60 contracts, one every 10 s: only the ten-minute rule applies
    assert p.next_allowed(key(99, con_id=999), 595.0) == 0.0 + 600.0 + WINDOW_MARGIN_S
    assert p.next_allowed(key(99, con_id=999), 595.0, ahead=1) == 10.0 + 600.0 + WINDOW_MARGIN_S
