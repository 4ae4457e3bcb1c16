"""Brackets, OCA groups and transmit=False, as IB runs them (issue 15 item 1, issue 16).

Every scenario runs through ib_insync, ib_async and IBKR's ibapi; prices move
only through the control API (``set_price``, ``fill``) and the manual clock.
AAPL starts at 190.00 / 190.01.
"""

from __future__ import annotations

import pytest

from tests.sim.order_support import (
    CANCEL_LOGS, barrier, bracket, codes_for, last_status, position, server_statuses, the_order, wait_status,
)

AAPL = 265598


@pytest.fixture(autouse=True)
def _cancels_are_expected(clientlog):
    clientlog.allow(*CANCEL_LOGS, r"Error 201")


def _filled_entry(client, sim, ref: str, qty: float = 100):
    parent, tp, sl = bracket(client, "AAPL", "BUY", qty, entry=200.0, take_profit=195.0, stop_loss=180.0, ref=ref)
    wait_status(client, sl, "PreSubmitted", "bracket transmitted")
    sim.advance(0.25)  # the entry (a buy limit above the ask) fills at the next market step
    wait_status(client, parent, "Filled", "entry filled")
    client.wait(lambda: last_status(client, tp) == "Submitted" and last_status(client, sl) == "Submitted",
                what="children working")
    return parent, tp, sl


def test_bracket_take_profit_fill_cancels_the_stop_loss(client, sim):
    parent, tp, sl = _filled_entry(client, sim, "b1")
    sim.set_price("AAPL", bid=196.0, ask=196.01)
    wait_status(client, tp, "Filled", "take-profit filled")
    wait_status(client, sl, "Cancelled", "stop-loss cancelled with its OCA sibling")
    client.wait(lambda: 202 in codes_for(client, sl), what="202 for the stop-loss")
    state = sim.state()
    assert the_order(state, "b1-sl")["status"] == "Cancelled"
    assert position(state, AAPL) == 0
    sim.set_price("AAPL", bid=170.0, ask=170.01)  # through the old stop: nothing may fill any more
    barrier(client)
    assert position(sim.state(), AAPL) == 0


def test_bracket_stop_loss_fill_cancels_the_take_profit(client, sim):
    parent, tp, sl = _filled_entry(client, sim, "b2")
    sim.set_price("AAPL", bid=179.0, ask=179.01)
    wait_status(client, sl, "Filled", "stop-loss filled")
    wait_status(client, tp, "Cancelled", "take-profit cancelled")
    state = sim.state()
    assert the_order(state, "b2-tp")["status"] == "Cancelled"
    assert position(state, AAPL) == 0


def test_bracket_children_wait_for_the_parent_and_protect_its_filled_part(client, sim):
    parent, tp, sl = bracket(client, "AAPL", "BUY", 100, entry=185.0, take_profit=195.0, stop_loss=180.0,
                             ref="b3")
    wait_status(client, sl, "PreSubmitted", "children wait")
    sim.set_price("AAPL", bid=196.0, ask=196.01)  # the take-profit's price, but the parent has not filled
    barrier(client)
    assert server_statuses(client, tp)[-1] == "PreSubmitted"
    assert the_order(sim.state(), "b3-tp")["filled"] == 0
    sim.set_price("AAPL", bid=190.0, ask=190.01)
    sim.fill(the_order(sim.state(), "b3-entry")["permId"], quantity=40, price=185.0)
    client.wait(lambda: last_status(client, tp) == "Submitted", what="children active after a partial fill")
    sim.set_price("AAPL", bid=196.0, ask=196.01)
    client.wait(lambda: sum(f[1] for f in client.fills(tp)) == 40, what="take-profit fills the 40 bought")
    client.wait(lambda: client.quantity(sl) == 60, what="stop-loss reduced by the take-profit's fill")
    state = sim.state()
    assert the_order(state, "b3-tp")["filled"] == 40
    assert the_order(state, "b3-tp")["status"] == "Submitted"
    assert position(state, AAPL) == 0
    sim.fill(the_order(state, "b3-entry")["permId"], price=185.0)  # the rest of the entry
    sim.set_price("AAPL", bid=196.0, ask=196.01)  # a quote update: matching runs
    wait_status(client, tp, "Filled", "take-profit completes with the parent")
    wait_status(client, sl, "Cancelled", "stop-loss reduced to nothing")
    assert position(sim.state(), AAPL) == 0


def test_cancelling_a_partly_filled_parent_keeps_its_children_for_the_filled_part(client, sim):
    parent, tp, sl = bracket(client, "AAPL", "BUY", 100, entry=185.0, take_profit=195.0, stop_loss=180.0,
                             ref="b4")
    wait_status(client, sl, "PreSubmitted")
    sim.fill(the_order(sim.state(), "b4-entry")["permId"], quantity=30, price=185.0)
    client.wait(lambda: last_status(client, sl) == "Submitted", what="children active")
    client.cancel(parent)
    wait_status(client, parent, "Cancelled")
    barrier(client)
    assert [last_status(client, h) for h in (tp, sl)] == ["Submitted", "Submitted"]
    sim.set_price("AAPL", bid=179.0, ask=179.01)
    client.wait(lambda: sum(f[1] for f in client.fills(sl)) == 30, what="the stop protects the 30 bought")
    wait_status(client, tp, "Cancelled", "take-profit reduced away")
    assert position(sim.state(), AAPL) == 0


def test_transmit_false_orders_are_held_and_never_fill(client, sim):
    parent, tp, sl = bracket(client, "AAPL", "BUY", 100, entry=200.0, take_profit=195.0, stop_loss=180.0,
                             ref="held", last_transmits=False)  # nothing ever sends transmit=True
    client.wait(lambda: all(last_status(client, h) == "Inactive" for h in (parent, tp, sl)), what="held")
    sim.advance(2.0)
    sim.set_price("AAPL", bid=179.0, ask=179.01)
    barrier(client)
    state = sim.state()
    for ref in ("held-entry", "held-tp", "held-sl"):
        assert the_order(state, ref)["held"] is True
        assert the_order(state, ref)["filled"] == 0
    assert state["executions"] == []
    assert all(server_statuses(client, h) == ["Inactive"] for h in (parent, tp, sl))


def test_the_last_child_transmits_the_whole_bracket(client, sim):
    parent = client.place("AAPL", "BUY", 100, "LMT", lmt=200.0, order_ref="tx-entry", transmit=False)
    tp = client.place("AAPL", "SELL", 100, "LMT", lmt=195.0, order_ref="tx-tp", transmit=False,
                      parentId=parent.order_id)
    client.wait(lambda: last_status(client, tp) == "Inactive", what="held")
    sim.advance(1.0)
    assert sim.state()["executions"] == []
    sl = client.place("AAPL", "SELL", 100, "STP", aux=180.0, order_ref="tx-sl", transmit=True,
                      parentId=parent.order_id)
    wait_status(client, parent, "Submitted", "parent transmitted by its last child")
    assert server_statuses(client, parent)[:2] == ["Inactive", "PreSubmitted"]
    sim.advance(0.25)
    wait_status(client, parent, "Filled", "entry filled")
    client.wait(lambda: last_status(client, sl) == "Submitted", what="stop-loss working")


def test_a_held_order_transmits_when_sent_again_with_transmit(client, sim):
    h = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, order_ref="resend", transmit=False)
    wait_status(client, h, "Inactive", "held")
    client.resend(h, lmtPrice=150.5, transmit=True)
    wait_status(client, h, "Submitted", "transmitted")
    state = sim.state()
    assert the_order(state, "resend")["lmtPrice"] == 150.5
    assert the_order(state, "resend")["held"] is False


def test_parent_rejected_at_transmission_cancels_its_children(client, sim):
    sim.reject_next_orders(n=1, reason="parent refused")
    parent, tp, sl = bracket(client, "AAPL", "BUY", 100, entry=185.0, take_profit=195.0, stop_loss=180.0,
                             ref="rej")
    client.wait(lambda: all(last_status(client, h) == "Cancelled" for h in (parent, tp, sl)),
                what="the bracket goes with its parent")
    client.wait(lambda: 201 in codes_for(client, parent) and 202 in codes_for(client, tp)
                and 202 in codes_for(client, sl), what="201 for the parent, 202 for its children")
    state = sim.state()
    assert [the_order(state, r)["status"] for r in ("rej-entry", "rej-tp", "rej-sl")] == ["Cancelled"] * 3
    sim.set_price("AAPL", bid=179.0, ask=179.01)
    barrier(client)
    assert sim.state()["executions"] == []


def test_a_child_of_an_unknown_parent_is_refused(client, sim, clientlog):
    clientlog.allow(r"Error 10006")
    orphan = client.place("AAPL", "SELL", 100, "STP", aux=180.0, order_ref="orphan", parentId=999)
    client.wait(lambda: 10006 in codes_for(client, orphan), what="missing parent")
    assert the_order(sim.state(), "orphan")["accepted"] is False


# -- OCA ----------------------------------------------------------------------------------


def _oca_pair(client, sim, oca_type: int, group: str):
    a = client.place("AAPL", "SELL", 100, "LMT", lmt=195.0, order_ref=f"{group}-a", ocaGroup=group,
                     ocaType=oca_type)
    b = client.place("AAPL", "SELL", 100, "LMT", lmt=196.0, order_ref=f"{group}-b", ocaGroup=group,
                     ocaType=oca_type)
    client.wait(lambda: last_status(client, a) == "Submitted" and last_status(client, b) == "Submitted",
                what="OCA members working")
    return a, b


def test_oca_type_1_partial_fill_cancels_the_other_members(client, sim):
    a, b = _oca_pair(client, sim, 1, "o1")
    sim.fill(the_order(sim.state(), "o1-a")["permId"], quantity=40, price=195.0)
    wait_status(client, b, "Cancelled", "type 1 cancels on any fill")
    client.wait(lambda: 202 in codes_for(client, b), what="202 for the OCA member")
    state = sim.state()
    assert the_order(state, "o1-a")["status"] == "Submitted"
    assert the_order(state, "o1-a")["remaining"] == 60


@pytest.mark.parametrize("oca_type", [2, 3])
def test_oca_reduce_types_cut_the_other_members_by_partial_fills(client, sim, oca_type):
    group = f"o{oca_type}"
    a, b = _oca_pair(client, sim, oca_type, group)
    sim.fill(the_order(sim.state(), f"{group}-a")["permId"], quantity=40, price=195.0)
    client.wait(lambda: client.quantity(b) == 60, what="member reduced by the fill")
    assert last_status(client, b) == "Submitted"
    sim.fill(the_order(sim.state(), f"{group}-a")["permId"], price=195.0)
    wait_status(client, b, "Cancelled", "member reduced to nothing")
    state = sim.state()
    assert the_order(state, f"{group}-b")["filled"] == 0
    assert position(state, AAPL) == -100


@pytest.mark.parametrize("oca_type,expected_sold", [(2, 10), (3, 20)])
def test_oca_block_prevents_an_overfill_in_one_market_step(make_client, sim, clientlog, oca_type, expected_sold):
    # both members become marketable in the same step: with block (2) one fills and the other is
    # reduced away first; without block (3) both fill, as IB warns
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    group = f"step{oca_type}"
    for i, lmt in enumerate((195.0, 196.0)):
        client.place("AAPL", "SELL", 10, "LMT", lmt=lmt, order_ref=f"{group}-{i}", ocaGroup=group, ocaType=oca_type)
    sim.wait_for(lambda s: sum(o["status"] == "Submitted" for o in s["orders"].values()) == 2, what="working")
    sim.set_price("AAPL", bid=197.0, ask=197.01)
    state = sim.wait_for(lambda s: all(o["status"] in ("Filled", "Cancelled") for o in s["orders"].values()),
                         what="group settled")
    assert position(state, AAPL) == -expected_sold
