"""Who sees which orders, as at IB (issue 15 item 4).

* An order refused before acceptance (387, 110, 201, a TWS precaution) is
  not an order at IB: it never comes back from reqCompletedOrders (ib_insync
  would list it as a phantom open trade on every later connection).
* Client id 0 gets the openOrder/orderStatus messages of every client's
  orders, live.
* reqAutoOpenOrders(True) (client 0 only, else error 327) binds orders typed
  into TWS by hand: they get an order id of client 0.  Unbound they show in
  reqAllOpenOrders with orderId 0; client 0's reqOpenOrders binds them.
"""

from __future__ import annotations

import pytest

from tests.sim.order_support import CANCEL_LOGS, barrier, codes_for, last_status, the_order, wait_status
from tests.sim.sim_drivers import CLIENTS


def test_refused_orders_never_come_back_as_completed_orders(client, sim, clientlog):
    clientlog.allow(*CANCEL_LOGS, r"Error 387", r"Error 110", r"Error 201", r"Error 451")
    done = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, order_ref="done")
    wait_status(client, done, "Submitted")
    client.cancel(done)
    wait_status(client, done, "Cancelled")
    refused = [
        client.place("AAPL", "BUY", 100, "REL", aux=0.01, order_ref="unsupported"),        # 387
        client.place("AAPL", "BUY", 100, "LMT", lmt=150.003, order_ref="off-tick"),       # 110
        client.place("AAPL", "BUY", 25_000, order_ref="margin"),                          # 201
        client.place("AAPL", "BUY", 60_000, "LMT", lmt=190.0, order_ref="too-valuable"),  # 451
    ]
    client.wait(lambda: all(codes_for(client, h) for h in refused), what="every refusal")
    assert [codes_for(client, h)[0] for h in refused] == [387, 110, 201, 451]
    state = sim.state()
    refused_perms = {the_order(state, r)["permId"] for r in ("unsupported", "off-tick", "margin", "too-valuable")}
    assert all(not state["orders"][str(p)]["accepted"] for p in refused_perms)
    completed = client.completed_orders()
    assert (the_order(state, "done")["permId"], "Cancelled") in completed
    assert not refused_perms & {perm for perm, _ in completed}
    assert not refused_perms & {perm for _, perm, _, _ in client.open_orders()}


def test_a_reconnecting_ib_insync_lists_no_phantom_open_trades(make_client, sim, clientlog):
    clientlog.allow(*CANCEL_LOGS, r"Error 201")
    first = make_client("ib_insync")
    first.connect(sim.host, sim.port, 3)
    h = first.place("AAPL", "BUY", 25_000, order_ref="margin")
    first.wait(lambda: 201 in codes_for(first, h), what="201")
    first.disconnect()
    again = make_client("ib_insync")
    again.connect(sim.host, sim.port, 3)  # connect() requests open and completed orders
    assert again.ib.openTrades() == []


@pytest.mark.parametrize("watcher_name", CLIENTS)
def test_client_zero_gets_live_updates_of_every_clients_orders(watcher_name, make_client, sim, clientlog):
    clientlog.allow(*CANCEL_LOGS)
    watcher = make_client(watcher_name)
    watcher.connect(sim.host, sim.port, 0)
    trader = make_client("ib_insync")
    trader.connect(sim.host, sim.port, 5)
    resting = trader.place("AAPL", "BUY", 100, "LMT", lmt=150.0, order_ref="resting")
    filled = trader.place("AAPL", "BUY", 100, "LMT", lmt=200.0, order_ref="filled")
    watcher.wait(lambda: watcher.known_orders().get((5, resting.order_id)) == "Submitted"
                 and watcher.known_orders().get((5, filled.order_id)) == "Submitted",
                 what="client 0 sees another client's orders working")
    sim.advance(0.25)
    watcher.wait(lambda: watcher.known_orders().get((5, filled.order_id)) == "Filled",
                 what="client 0 sees the fill")
    trader.cancel(resting)
    watcher.wait(lambda: watcher.known_orders().get((5, resting.order_id)) == "Cancelled",
                 what="client 0 sees the cancel")
    assert 202 not in [e.code for e in watcher.errors()]  # errors stay with the owner


def test_another_nonzero_client_sees_only_its_own_orders(make_client, sim):
    other = make_client("ib_insync")
    other.connect(sim.host, sim.port, 6)
    trader = make_client("ib_insync")
    trader.connect(sim.host, sim.port, 5)
    h = trader.place("AAPL", "BUY", 100, "LMT", lmt=150.0, order_ref="mine")
    wait_status(trader, h, "Submitted")
    barrier(other)
    assert other.known_orders() == {}


@pytest.mark.parametrize("name", CLIENTS)
def test_auto_open_orders_bind_a_manual_tws_order_to_client_zero(name, make_client, sim, clientlog):
    clientlog.allow(*CANCEL_LOGS)
    zero = make_client(name)
    zero.connect(sim.host, sim.port, 0)
    zero.auto_open_orders(True)  # ib_insync and ib_async already ask for it when connecting as client 0
    barrier(zero)
    manual = sim.manual_order("AAPL", "BUY", 100, "LMT", lmt_price=150.0, order_ref="by-hand")
    order_id = manual["orderId"]
    assert order_id == sim.state()["next_order_ids"]["0"] - 1 > 0
    assert manual["manual"] is True and manual["clientId"] == 0
    zero.wait(lambda: zero.known_orders().get((0, order_id)) == "Submitted", what="bound manual order")
    zero.cancel_order_id(order_id)
    state = sim.wait_for(lambda s: the_order(s, "by-hand")["status"] == "Cancelled", what="cancelled by client 0")
    assert the_order(state, "by-hand")["orderId"] == order_id


def test_unbound_manual_orders_show_order_id_zero_until_client_zero_binds_them(make_client, sim):
    manual = sim.manual_order("AAPL", "SELL", 100, "LMT", lmt_price=250.0, order_ref="by-hand")
    assert manual["orderId"] == 0
    viewer = make_client("ibapi")
    viewer.connect(sim.host, sim.port, 7)
    [(order_id, client_id, perm, ref, status)] = viewer.all_open_orders()
    assert (order_id, client_id, perm, ref, status) == (0, 0, manual["permId"], "by-hand", "Submitted")
    assert viewer.known_orders().get((0, 0)) == "Submitted"
    zero = make_client("ibapi")
    zero.connect(sim.host, sim.port, 0)
    bound = zero.open_orders()  # client 0's reqOpenOrders binds manual orders
    assert [(perm, ref) for _, perm, ref, _ in bound] == [(manual["permId"], "by-hand")]
    assert bound[0][0] > 0
    assert the_order(sim.state(), "by-hand")["orderId"] == bound[0][0]


@pytest.mark.parametrize("name", ["ib_insync", "ibapi"])
def test_auto_open_orders_from_a_nonzero_client_gets_327(name, make_client, sim, clientlog):
    clientlog.allow(r"Error 327")
    client = make_client(name)
    client.connect(sim.host, sim.port, 8)
    client.auto_open_orders(True)
    client.wait(lambda: 327 in [e.code for e in client.errors()], what="327")
    sim.manual_order("AAPL", "BUY", 100, "LMT", lmt_price=150.0, order_ref="by-hand")
    barrier(client)
    assert client.known_orders() == {}
    assert the_order(sim.state(), "by-hand")["orderId"] == 0
