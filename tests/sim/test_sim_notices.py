"""IB's order notices, sent as IB sends them (issue 12 item 5).

10349 (TIF preset), 2109 (outsideRth ignored), 399 (order waits for its
session), 161/10148 (cancel of a non-cancellable order), 110 without an
order status, 202 with the Cancelled status, 103 (duplicate order id), and
the control command ``order_notice`` (any code, order unchanged), over HTTP.
"""

from __future__ import annotations

import pytest

from sim.control import control_request
from sim.testing import running_sim
from tests.sim.order_support import (
    CANCEL_LOGS, barrier, codes_for, last_status, saw_no_order_status, the_order, wait_status,
)
from sim.bench import raw_place_order
from tests.sim.sim_drivers import RawClient

AAPL = 265598
NOTICES = (*CANCEL_LOGS, r"Error (103|110|161|399|2109|10148|10349|10147)", r"Warning (110|399|2109)")


def arrived(sim, request: str, n: int) -> None:
    """Wait until the simulator has read ``n`` requests of this name (before moving its clock)."""
    sim.wait_for(lambda s: sum(e["name"] == request for e in s["request_log"]) >= n, what=f"{n} {request}")


@pytest.fixture(autouse=True)
def _notices_are_expected(clientlog):
    clientlog.allow(*NOTICES)


def test_tif_preset_notice_10349_and_the_order_still_works(client, sim):
    sim.tif_preset("DAY")
    preset = client.place("AAPL", "BUY", 100, "LMT", lmt=200.0, tif="", order_ref="no-tif")
    explicit = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, tif="GTC", order_ref="gtc")
    client.wait(lambda: 10349 in codes_for(client, preset), what="10349")
    assert "Order TIF was set to DAY based on order preset" in \
        [e.message for e in client.errors() if e.code == 10349][0]
    sim.advance(0.25)
    client.wait(lambda: len(client.fills(preset)) == 1, what="the order works and fills")
    state = sim.state()
    assert the_order(state, "no-tif")["status"] == "Filled"
    assert the_order(state, "no-tif")["tif"] == "DAY"
    assert 10349 not in codes_for(client, explicit)


def test_no_tif_preset_by_default(make_client, sim):
    client = make_client("ibapi")
    client.connect(sim.host, sim.port, 1)
    h = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, tif="", order_ref="no-tif")
    wait_status(client, h, "Submitted")
    barrier(client)
    assert codes_for(client, h) == []


def test_outside_rth_ignored_on_a_market_order_with_2109(client, sim):
    h = client.place("AAPL", "BUY", 100, "MKT", outside_rth=True, order_ref="mkt-orth")
    client.wait(lambda: 2109 in codes_for(client, h), what="2109")
    sim.advance(0.25)
    wait_status(client, h, "Filled")
    assert the_order(sim.state(), "mkt-orth")["outsideRth"] is False


def test_order_waiting_for_the_open_gets_399_and_trades_at_the_open(make_client, clientlog):
    with running_sim(market_hours="exchange", start_time="2025-06-02T13:29:00+00:00", tick_interval=1.0) as sim:
        client = make_client("ib_insync")
        client.connect(sim.host, sim.port, 1)
        h = client.place("AAPL", "BUY", 100, order_ref="pre-open")
        client.wait(lambda: 399 in codes_for(client, h), what="399")
        [text] = [e.message for e in client.errors() if e.code == 399]
        assert "will not be placed at the exchange until 2025-06-02 09:30:00 US/Eastern" in text
        assert last_status(client, h) == "PreSubmitted"
        sim.advance(61)
        wait_status(client, h, "Filled")


def test_cancel_of_a_filled_or_cancelled_order_gets_10148(client, sim):
    filled = client.place("AAPL", "BUY", 100, "LMT", lmt=200.0, order_ref="filled")
    cancelled = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, order_ref="cancelled")
    wait_status(client, cancelled, "Submitted")
    sim.advance(0.25)
    wait_status(client, filled, "Filled")
    client.cancel(cancelled)
    wait_status(client, cancelled, "Cancelled")
    client.wait(lambda: 202 in codes_for(client, cancelled), what="202 with the Cancelled status")
    client.cancel(filled)
    client.cancel(cancelled)
    client.wait(lambda: 10148 in codes_for(client, filled) and codes_for(client, cancelled).count(202) == 1
                and 10148 in codes_for(client, cancelled), what="10148 twice")
    texts = [e.message for e in client.errors() if e.code == 10148]
    assert any("state: Filled" in t for t in texts) and any("state: Cancelled" in t for t in texts)
    assert the_order(sim.state(), "filled")["status"] == "Filled"


def test_a_second_cancel_while_the_first_travels_gets_161(make_client):
    with running_sim(latency="ib", seed=3) as sim:
        client = make_client("ibapi")
        client.connect(sim.host, sim.port, 1)
        h = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, order_ref="twice")
        arrived(sim, "placeOrder", 1)
        sim.advance(1.0)
        wait_status(client, h, "Submitted")
        client.cancel(h)
        client.cancel(h)
        arrived(sim, "cancelOrder", 2)
        sim.advance(1.0)
        client.wait(lambda: 161 in codes_for(client, h) and last_status(client, h) == "Cancelled", what="161")
        assert "not in a cancellable state" in [e.message for e in client.errors() if e.code == 161][0]


def test_cancel_of_a_refused_order_gets_161(make_client, sim):
    client = make_client("ibapi")
    client.connect(sim.host, sim.port, 1)
    h = client.place("AAPL", "BUY", 100, "LMT", lmt=150.003, order_ref="refused")
    client.wait(lambda: 110 in codes_for(client, h), what="110")
    client.cancel(h)
    client.wait(lambda: 161 in codes_for(client, h), what="161")


def test_off_tick_price_gets_110_without_an_order_status(client, sim):
    h = client.place("AAPL", "BUY", 100, "LMT", lmt=150.003, order_ref="off-tick")
    client.wait(lambda: 110 in codes_for(client, h), what="110")
    barrier(client)
    assert saw_no_order_status(client, h)
    assert the_order(sim.state(), "off-tick")["accepted"] is False


def test_duplicate_order_id_gets_103_and_leaves_the_first_order_alone(sim):
    raw = RawClient(sim.host, sim.port)
    raw.handshake(5)
    raw.send(*raw_place_order(7, AAPL, "AAPL", "BUY", 100, "LMT", 150.0, "first"))
    raw.recv_until(lambda m: m[0] == "3" and m[2] == "Submitted")
    raw.send(*raw_place_order(6, AAPL, "AAPL", "BUY", 100, "LMT", 151.0, "lower-id"))
    got = raw.recv_until(lambda m: m[0] == "4" and m[3] == "103")
    assert got[-1][2] == "6"
    assert not [m for m in got if m[0] == "3" and m[1] == "6"]  # no order status for the refused id
    assert the_order(sim.state(), "first")["status"] == "Submitted"
    raw.close()


def test_order_notice_over_http_sends_any_code_and_changes_nothing(client, sim):
    h = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, order_ref="noticed")
    wait_status(client, h, "Submitted")
    perm = the_order(sim.state(), "noticed")["permId"]
    before = the_order(sim.state(), "noticed")
    result = control_request(sim.control_port, "order_notice",
                             {"perm_id": perm, "code": 10349, "message": "Order TIF was set to DAY based on order preset."})
    assert result["orderId"] == h.order_id and result["code"] == 10349
    client.wait(lambda: 10349 in codes_for(client, h), what="the notice")
    control_request(sim.control_port, "order_notice", {"perm_id": perm, "code": 404})  # IB's text by default
    client.wait(lambda: 404 in codes_for(client, h), what="404")
    assert "locate the shares" in [e.message for e in client.errors() if e.code == 404][0]
    assert the_order(sim.state(), "noticed") == before  # ground truth untouched
    sim.advance(0.25)
    sim.set_price("AAPL", bid=149.0, ask=149.01)
    client.wait(lambda: len(client.fills(h)) == 1 and last_status(client, h) == "Filled",
                what="the order still fills")


def test_order_notice_for_an_unknown_perm_id_is_a_404(sim):
    from sim.control import ControlError
    with pytest.raises(ControlError, match="no order with permId"):
        control_request(sim.control_port, "order_notice", {"perm_id": 42, "code": 202})
