"""Order truth end to end (issue 12 items 1-3 and 6): whatever IB sends about an order, every view Khazad offers of
it (the order manager's, risk's exposure, the gateway's snapshot, ``khazad orders --json``) says what the simulator's
ground truth says. Real processes: the simulator (``python -m sim``), the proxy, the gateway (the real ib_insync
client), the risk governor and the order manager.

For each code: the simulator sends it (control ``order_notice``, the order itself unchanged, as IB does with 10349,
2109, 399 ...) on a working order; the notice must show in the order's history with its effect, no view may call the
order anything but working, and a later fill is counted exactly once. Then IB's real refusals (110 off-tick, 201,
a TWS precaution), amendments (confirmed by IB's report, refused with 110), and the cause of every cancel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bus.messages import EmergencyCancel, Kill, OrderReply, Rejected
from sdk.views import cancel_cause, ib_notices
from tests.support.waiting import eventually
from tests.truth.support import RESTING_BUY, SETTLE_TIMEOUT_S, SIM_WORKING, Desk, running_desk, spec

#: Every code the issue names, the ones the notes add that the simulator sends, a code that concerns no order at
#: all (327) and one nobody has seen (99999): on a working order none of them may end it.
CODES = (103, 104, 105, 110, 135, 161, 163, 200, 201, 202, 327, 383, 387, 399, 404, 434, 439, 441, 451, 2109, 2137,
         10006, 10089, 10090, 10147, 10148, 10149, 10245, 10311, 10349, 99999)


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    with running_desk(tmp_path_factory.mktemp("truth-notices")) as d:
        yield d


def assert_views_match_ib(desk: Desk, s: Any) -> dict:
    """Every view of order ``s`` equals the simulator's ground truth (waiting for the views that follow the bus)."""
    truth = desk.sim_order(s.order_ref)
    working = truth["status"] in SIM_WORKING
    view = desk.order(s)
    assert (view.status, view.filled, view.is_done) == (truth["status"], truth["filled"], not working), (view, truth)
    assert view.spec.quantity == truth["totalQuantity"] and view.spec.limit_price == truth["lmtPrice"]
    snap = desk.snapshot()
    assert [o.status for o in snap.open_orders if o.order_ref == s.order_ref] == ([truth["status"]] if working else [])
    listed = {o["spec"]["client_order_id"]: o for o in desk.cli_orders("--strategy", s.strategy_id)["orders"]}
    assert (s.client_order_id in listed) == working
    every = {o["spec"]["client_order_id"]: o for o in desk.cli_orders("--all", "--strategy", s.strategy_id)["orders"]}
    assert every[s.client_order_id]["status"] == truth["status"]
    # risk's exposure: what works at IB on each side, and the position
    eventually(lambda: desk.risk_state().working_buy.get("AAPL", 0.0) == desk.sim_working_qty("AAPL", "BUY"),
               SETTLE_TIMEOUT_S, message=lambda: f"risk working buy {desk.risk_state().working_buy} vs IB "
                                                 f"{desk.sim_working_qty('AAPL', 'BUY')}")
    eventually(lambda: desk.risk_state().positions.get("AAPL", 0.0) == desk.sim_position("AAPL"), SETTLE_TIMEOUT_S,
               message=lambda: f"risk position {desk.risk_state().positions} vs IB {desk.sim_position('AAPL')}")
    return truth


@pytest.mark.parametrize("code", CODES)
def test_notice_on_a_working_order_changes_no_view_and_a_later_fill_counts_once(desk: Desk, code: int) -> None:
    s = spec(f"n{code}")
    perm = desk.place_working(s)["permId"]
    desk.sim.call("order_notice", perm_id=perm, code=code)
    view = eventually(lambda: (v := desk.order(s)) and any(h.error_code == code for h in v.history) and v,
                      SETTLE_TIMEOUT_S, message=f"IB {code} in the order's history")
    # a notice is named with its effect in the history, and is not the order's status or its reason
    [notice] = [h for h in ib_notices(view) if h.error_code == code]
    assert notice.reason.startswith(f"IB {code} (") and notice.status == "Submitted", notice
    assert (view.status, view.error_code) == ("Submitted", None), view
    assert desk.sim_order(s.order_ref)["status"] == "Submitted"  # IB: unchanged
    assert_views_match_ib(desk, s)
    desk.sim.call("fill", perm_id=perm, price=RESTING_BUY)
    eventually(lambda: desk.order(s).status == "Filled", SETTLE_TIMEOUT_S, message="the fill")
    truth = assert_views_match_ib(desk, s)
    done = desk.order(s)
    assert done.filled == s.quantity == truth["filled"] and done.avg_fill_price == pytest.approx(RESTING_BUY)
    assert not any("late fill" in h.reason for h in done.history), done.history


@pytest.mark.parametrize("code", [110, 201, 451])
def test_a_refused_order_ends_with_ibs_code_and_reason_in_every_view(desk: Desk, code: int) -> None:
    s = spec(f"r{code}")
    if code == 110:
        # risk refuses an off-tick price before IB now (risk.tick_size): IB's 110 comes from a rule risk's copy of
        # the contract details does not know (the text is IB's)
        desk.sim.call("reject_next_orders", n=1, code=110,
                      reason="The price does not conform to the minimum price variation for this contract.")
    if code == 201:
        desk.sim.call("reject_next_orders", n=1, code=201, reason="insufficient margin (test)")
    if code == 451:
        desk.sim.call("precautions", value_limit=100)
    try:
        view = desk.place(s, until="done")
    finally:
        desk.sim.call("precautions", value_limit=10_000_000)
    assert view.status == "Cancelled" and view.error_code == code and view.reason, view
    truth = desk.sim_order(s.order_ref)
    assert truth["accepted"] is False
    [row] = desk.cli_orders("--all", "--strategy", s.strategy_id)["orders"]
    assert (row["status"], row["error_code"], row["reason"]) == ("Cancelled", code, view.reason)
    assert [o for o in desk.snapshot().open_orders if o.order_ref == s.order_ref] == []
    eventually(lambda: desk.risk_state().working_buy.get("AAPL", 0.0) == desk.sim_working_qty("AAPL", "BUY"),
               SETTLE_TIMEOUT_S, message="risk counts nothing for a refused order")


def test_amendments_count_when_ib_reports_them_and_a_refused_one_leaves_the_old_terms(desk: Desk) -> None:
    desk.sim.call("market_hours", mode="closed")  # the order waits PreSubmitted, as before an open
    s = spec("mod")
    try:
        desk.place(s)
        eventually(lambda: desk.sim_order(s.order_ref)["status"] == "PreSubmitted", SETTLE_TIMEOUT_S)
        reply = desk.modify(s, quantity=2)
        assert isinstance(reply, OrderReply), reply
        # IB's openOrder reported the new quantity: the terms and the pending amendment say so
        assert reply.order.spec.quantity == 2 and reply.order.amendment is None, reply.order
        assert desk.sim_order(s.order_ref)["totalQuantity"] == 2
        # an amendment IB refuses with 110 (risk refuses an off-tick price itself now: the refusal is IB's own,
        # for a rule risk's copy of the contract details does not know)
        desk.sim.call("reject_next_amendments", n=1, code=110)
        refused = desk.modify(s, limit_price=RESTING_BUY - 0.01)
        assert isinstance(refused, Rejected) and refused.code == "amend_rejected" and "110" in refused.reason
        view = desk.order(s)
        assert view.spec.limit_price == RESTING_BUY == desk.sim_order(s.order_ref)["lmtPrice"]
        assert view.amendment is None and view.status == "PreSubmitted"
        # IB's notices in order: 399 (the order waits for the session), then the refusal of the amendment
        assert [h.error_code for h in ib_notices(view)] == [399, 110], view.history
    finally:
        desk.sim.call("market_hours", mode="always")
    desk.sim.call("advance", seconds=0.5)
    eventually(lambda: desk.sim_order(s.order_ref)["status"] == "Submitted", SETTLE_TIMEOUT_S)
    assert_views_match_ib(desk, s)
    # a genuine cancel afterwards is the strategy's cancel, never an "amendment rejected"
    desk.cancel(s, reason="done with it")
    eventually(lambda: desk.order(s).status == "Cancelled", SETTLE_TIMEOUT_S)
    assert desk.order(s).reason == "strategy: done with it"
    assert_views_match_ib(desk, s)


def test_every_cancel_says_why_in_the_order_view_and_khazad_orders(desk: Desk) -> None:
    by_strategy = spec("cs")
    by_ib = spec("ci")
    by_breaker = spec("cb")
    by_kill = spec("ck")
    for s in (by_strategy, by_ib, by_breaker, by_kill):
        desk.place_working(s)
    desk.cancel(by_strategy, reason="stop moved")
    desk.sim.call("cancel", perm_id=desk.sim_order(by_ib.order_ref)["permId"])  # cancelled in TWS: IB's 202
    report = desk.gateway.call(EmergencyCancel(command_id="brk-1", scope="strategy:cb", reason="reject rate",
                                               origin="test"))
    assert report.confirmed, report
    report = desk.gateway.call(Kill(kill_id="k-truth", scope="strategy:ck", reason="operator test", origin="test"))
    assert report.confirmed, report
    expected = {
        by_strategy: ("strategy", None, "strategy: stop moved"),
        by_breaker: ("breaker", None, "breaker brk-1: reject rate"),
        by_kill: ("kill", None, "kill k-truth: operator test"),
    }
    for s, (cause, code, reason) in expected.items():
        view = eventually(lambda s=s: (v := desk.order(s)).status == "Cancelled" and v, SETTLE_TIMEOUT_S)
        assert (cancel_cause(view), view.error_code, view.reason) == (cause, code, reason), view
        [row] = [o for o in desk.cli_orders("--all", "--strategy", s.strategy_id)["orders"]
                 if o["spec"]["client_order_id"] == s.client_order_id]
        assert (row["status"], row["reason"]) == ("Cancelled", reason)
        assert desk.sim_order(s.order_ref)["status"] == "Cancelled"
    view = eventually(lambda: (v := desk.order(by_ib)).error_code == 202 and v, SETTLE_TIMEOUT_S,
                      message=lambda: f"IB's cause of the cancel (view: {desk.order(by_ib)})")
    assert view.status == "Cancelled" and cancel_cause(view) == "ib" and "cancelled in TWS" in view.reason
    [row] = desk.cli_orders("--all", "--strategy", "ci")["orders"]
    assert (row["status"], row["error_code"]) == ("Cancelled", 202) and "cancelled in TWS" in row["reason"]


def test_a_reconnect_clean_up_says_so(desk: Desk) -> None:
    """Last in the module: the simulator forgets every order (a reset), the gateway reconnects and reconciles."""
    s = spec("cr")
    desk.place_working(s)
    desk.sim.call("reset")
    view = eventually(lambda: (v := desk.order(s)).status == "Cancelled" and v, 30.0,
                      message=lambda: f"the clean-up after the reconnect: {desk.order(s)}")
    assert cancel_cause(view) == "reconnect" and "not known to IB" in view.reason, view
    [row] = desk.cli_orders("--all", "--strategy", "cr")["orders"]
    assert row["reason"] == view.reason
