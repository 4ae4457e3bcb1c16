"""Fault scenarios and market-hours behaviour, driven through the control API.

Negative facts ("no acknowledgement arrived yet") are checked with a round
trip on the same connection as a barrier: TCP keeps order, so once the
answer to a later request is in, anything sent before it would be too.
"""

from __future__ import annotations

import json
import socket

import pytest

from sim.testing import running_sim
from tests.sim.sim_drivers import CLIENTS, RawClient

AAPL = 265598


def last_status(client, h) -> str:
    s = client.statuses(h)
    return s[-1] if s else ""


def local(client, *statuses: str) -> list[str]:
    """Prefix PendingSubmit for libraries that set it themselves."""
    return (["PendingSubmit"] if "PendingSubmit" in client.local_statuses else []) + list(statuses)


def barrier(client) -> None:
    """A completed round trip: everything the server sent earlier has arrived."""
    assert client.qualify("SPY") == 756733


def the_order(state: dict, ref: str) -> dict:
    [o] = [o for o in state["orders"].values() if o["orderRef"] == ref]
    return o


# -- connections --------------------------------------------------------------------


def test_drop_connections_then_reconnect_sees_fills_from_the_gap(make_client, sim, clientlog):
    clientlog.allow(r"Peer closed connection", r"Error 1100")
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    h = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, order_ref="gap")
    client.wait(lambda: last_status(client, h) == "Submitted")
    assert sim.drop_connections()["dropped"] == 1
    client.wait(lambda: not client.is_connected(), what="disconnect noticed")
    perm = the_order(sim.state(), "gap")["permId"]
    fill = sim.fill(perm)  # the order fills while the client is away
    client.connect(sim.host, sim.port, 1)
    assert (fill["execId"], perm, "gap") in client.executions()
    assert all(o[2] != "gap" for o in client.open_orders())
    assert client.positions()[AAPL][0] == 100


def test_refuse_connections_until_accepted_or_time_passes(sim):
    sim.refuse_connections()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((sim.host, sim.port), timeout=2).close()
    assert sim.state()["faults"]["refusing_connections"] is True
    sim.accept_connections()
    raw = RawClient(sim.host, sim.port)
    raw.handshake(1)
    raw.close()
    sim.refuse_connections(seconds=30)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((sim.host, sim.port), timeout=2).close()
    sim.advance(30)
    sim.wait_for(lambda s: not s["faults"]["refusing_connections"], what="listening again")
    raw = RawClient(sim.host, sim.port)
    raw.handshake(1)
    raw.close()


def test_daily_restart_drops_clients_and_refuses_for_a_while(make_client, sim, clientlog):
    clientlog.allow(r"Peer closed connection", r"API connection failed", r"Make sure API port")
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 3)
    sim.daily_restart(seconds=60)
    client.wait(lambda: not client.is_connected(), what="dropped")
    with pytest.raises(ConnectionRefusedError):
        client.connect(sim.host, sim.port, 3, timeout=1.0)
    sim.advance(60)
    sim.wait_for(lambda s: not s["faults"]["refusing_connections"], what="restart over")
    client.connect(sim.host, sim.port, 3)
    assert client.is_connected()


@pytest.mark.parametrize("restore", [1102, 1101])
def test_connectivity_loss_pauses_data_and_restore_reaches_every_client(restore, make_client, sim,
                                                                       clientlog):
    clientlog.allow(r"Error 110[0-2]")
    insync, ibapi = make_client("ib_insync"), make_client("ibapi")
    insync.connect(sim.host, sim.port, 1)
    ibapi.connect(sim.host, sim.port, 2)
    reqs = {d: d.subscribe("AAPL") for d in (insync, ibapi)}
    for d, r in reqs.items():
        d.wait(lambda d=d, r=r: d.tick_count(r) > 0, what="ticks")
    sim.connectivity(lost_for=5.0, restore=restore)
    for d in (insync, ibapi):
        d.wait(lambda d=d: any(e.code == 1100 for e in d.errors()), what="1100")
    counts = {d: d.tick_count(r) for d, r in reqs.items()}
    sim.advance(4.0)  # connectivity still lost: no market data
    for d in (insync, ibapi):
        barrier(d)
        assert d.tick_count(reqs[d]) == counts[d]
    sim.advance(1.0)  # restored
    for d in (insync, ibapi):
        d.wait(lambda d=d: any(e.code == restore for e in d.errors()), what=str(restore))
        codes = [e.code for e in d.errors() if e.code in (1100, 1101, 1102)]
        assert codes == [1100, restore]
    sim.advance(2.0)
    for d in (insync, ibapi):
        barrier(d)
    state = sim.state()
    subscribed = [c["mktDataSubscriptions"] for c in state["clients"]]
    if restore == 1102:  # data maintained: the subscriptions stream again
        assert all(subscribed)
        for d in (insync, ibapi):
            d.wait(lambda d=d: d.tick_count(reqs[d]) > counts[d], what="ticks again")
    else:  # data lost: clients must resubscribe
        assert subscribed == [{}, {}]


def test_connectivity_custom_code_sequence(make_client, sim, clientlog):
    clientlog.allow(r"Error 1100", r"Error 1102")
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    sim.connectivity(codes=[1100, 2103, 2104, 1102], interval=1.0)
    sim.advance(3.0)
    client.wait(lambda: any(e.code == 1102 for e in client.errors()), what="sequence")
    assert [e.code for e in client.errors() if e.req_id == -1 and e.code >= 1100][-4:] == \
        [1100, 2103, 2104, 1102]


# -- order faults -----------------------------------------------------------------------


@pytest.mark.parametrize("name", CLIENTS)
def test_reject_next_order_with_201_and_json_reason(name, make_client, sim, clientlog):
    clientlog.allow(r"Error 201")
    client = make_client(name)
    client.connect(sim.host, sim.port, 1)
    sim.reject_next_orders(1, code=201, reason={"reason": "risk limit breached", "limit": 5})
    h = client.place("AAPL", "BUY", 100, order_ref="rejected")
    client.wait(lambda: any(e.code == 201 for e in client.errors()), what="201")
    err = [e for e in client.errors() if e.code == 201][0]
    assert err.req_id == h.order_id
    assert "risk limit breached" in err.message
    assert json.loads(client.advanced_error(h)) == {"reason": "risk limit breached", "limit": 5}
    if name in ("ib_insync", "ib_async"):
        assert last_status(client, h) == "Cancelled"
    assert the_order(sim.state(), "rejected")["status"] == "Inactive"
    ok = client.place("AAPL", "BUY", 100, order_ref="accepted")
    client.wait(lambda: last_status(client, ok) == "Submitted", what="next order accepted")


@pytest.mark.parametrize("name", CLIENTS)
def test_ack_delay_holds_order_messages_until_the_clock_moves(name, make_client, sim):
    client = make_client(name)
    client.connect(sim.host, sim.port, 1)
    sim.ack_delay(2.0)
    h = client.place("AAPL", "BUY", 100, order_ref="slow")
    sim.wait_for(lambda s: any(o["orderRef"] == "slow" for o in s["orders"].values()))
    barrier(client)
    assert client.statuses(h) == local(client)  # nothing from the server yet
    sim.advance(1.0)  # the order works (and fills) at the exchange meanwhile
    assert the_order(sim.state(), "slow")["status"] == "Filled"
    barrier(client)
    assert client.statuses(h) == local(client)
    sim.advance(1.0)  # the delay is over: every held message arrives, in order
    client.wait(lambda: last_status(client, h) == "Filled", what="released messages")
    assert client.statuses(h) == local(client, "PreSubmitted", "Submitted", "Filled")


@pytest.mark.parametrize("name", CLIENTS)
def test_drop_acks_order_still_works_and_fills(name, make_client, sim):
    client = make_client(name)
    client.connect(sim.host, sim.port, 1)
    sim.drop_acks(1)
    h = client.place("AAPL", "BUY", 100, order_ref="mute")
    sim.wait_for(lambda s: any(o["orderRef"] == "mute" and o["status"] == "Submitted"
                               for o in s["orders"].values()))
    barrier(client)
    assert client.statuses(h) == local(client)
    sim.advance(0.25)
    client.wait(lambda: last_status(client, h) == "Filled", what="fill despite lost acks")
    assert client.statuses(h) == local(client, "Filled")
    assert len(client.fills(h)) == 1


@pytest.mark.parametrize("name", CLIENTS)
def test_sticky_presubmitted_survives_global_cancel(name, make_client, sim, clientlog):
    clientlog.allow(r"Error 202")
    client = make_client(name)
    client.connect(sim.host, sim.port, 1)
    sim.sticky_presubmitted(n=1)
    sticky = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, order_ref="sticky")
    normal = client.place("AAPL", "BUY", 100, "LMT", lmt=151.0, order_ref="normal")
    client.wait(lambda: last_status(client, normal) == "Submitted", what="normal Submitted")
    assert last_status(client, sticky) == "PreSubmitted"
    sim.advance(1.0)
    assert the_order(sim.state(), "sticky")["status"] == "PreSubmitted"
    client.global_cancel()
    client.wait(lambda: last_status(client, normal) == "Cancelled", what="global cancel")
    barrier(client)
    state = sim.state()
    assert the_order(state, "sticky")["status"] == "PreSubmitted"  # the kill switch must verify
    assert the_order(state, "normal")["status"] == "Cancelled"
    client.cancel(sticky)
    client.wait(lambda: last_status(client, sticky) == "Cancelled", what="individual cancel")
    assert the_order(sim.state(), "sticky")["status"] == "Cancelled"


@pytest.mark.parametrize("name", CLIENTS)
def test_execution_correction_resends_with_next_suffix(name, make_client, sim):
    client = make_client(name)
    client.connect(sim.host, sim.port, 1)
    h = client.place("AAPL", "BUY", 100, order_ref="corr")
    client.wait(lambda: last_status(client, h) == "Submitted")
    sim.advance(0.25)
    client.wait(lambda: last_status(client, h) == "Filled" and client.commissions(h))
    [(exec_id, _, price, _, _)] = client.fills(h)
    assert exec_id.endswith(".01")
    corrected = sim.correct_execution("last", price=price + 0.05)
    assert corrected["execId"] == exec_id[:-3] + ".02"
    client.wait(lambda: len(client.fills(h)) == 2, what="corrected execDetails")
    new_id, shares, new_price, _, ref = client.fills(h)[1]
    assert (new_id, shares, new_price, ref) == (corrected["execId"], 100, pytest.approx(price + 0.05), "corr")
    state = sim.state()
    old = [e for e in state["executions"] if e["execId"] == exec_id][0]
    assert old["supersededBy"] == new_id
    # the account is rebooked from the corrected fill
    assert state["account"]["cash"]["USD"] == pytest.approx(1_000_000 - 100 * (price + 0.05) - 1.0)
    assert state["positions"][0]["avgCost"] == pytest.approx(price + 0.05 + 0.01)
    assert (new_id, state["orders"][str(old["permId"])]["permId"], "corr") in client.executions()


def test_pacing_violation_gets_error_100_and_disconnect(make_client, sim, clientlog):
    healthy = make_client("ib_insync")
    healthy.connect(sim.host, sim.port, 1)
    raw = RawClient(sim.host, sim.port)
    raw.handshake(9)
    for _ in range(60):
        raw.send(49, 1)  # reqCurrentTime, unthrottled
    got = raw.wait_closed()
    errors = [m for m in got if m[0] == "4"]
    assert errors and errors[-1][3] == "100"
    assert "max=50" in errors[-1][4]
    state = sim.state()
    assert any(c["closeReason"] == "pacing violation" and c["clientId"] == 9
               for c in state["closed_clients"])
    # ib_insync throttles itself to 45/s, so it never trips the limit
    for _ in range(60):
        healthy.ib.reqCurrentTime()
    assert healthy.is_connected()


def test_pacing_limit_command_lowers_the_threshold(make_client, sim, clientlog):
    clientlog.allow(r"Error 100", r"Peer closed connection")
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    sim.pacing_limit(5)
    for _ in range(8):
        client.ib.client.reqCurrentTime()
    client.wait(lambda: not client.is_connected(), what="paced out")
    assert any(e.code == 100 for e in client.errors())
    sim.pacing_limit(0)  # disabled
    raw = RawClient(sim.host, sim.port)
    raw.handshake(2)
    for _ in range(200):
        raw.send(49, 1)
    raw.recv_until(lambda m: m[0] == "49" and sum(1 for x in raw.messages if x[0] == "49") == 200)
    assert not raw.closed
    raw.close()


# -- market hours -------------------------------------------------------------------------


def test_closed_market_orders_rest_presubmitted_until_open(make_client, clientlog):
    with running_sim(market_hours="closed") as sim:
        client = make_client("ib_insync")
        client.connect(sim.host, sim.port, 1)
        h = client.place("AAPL", "BUY", 100, order_ref="closed")
        client.wait(lambda: last_status(client, h) == "PreSubmitted")
        sim.advance(5.0)
        barrier(client)
        assert the_order(sim.state(), "closed")["status"] == "PreSubmitted"
        assert client.statuses(h) == ["PendingSubmit", "PreSubmitted"]
        sim.market_hours("always")
        client.wait(lambda: last_status(client, h) == "Submitted", what="released at open")
        sim.advance(0.25)
        client.wait(lambda: last_status(client, h) == "Filled")
        client.disconnect()


def test_exchange_hours_open_at_0930_new_york(make_client):
    # 09:29 in New York on a Monday; one market step per second
    with running_sim(market_hours="exchange", start_time="2025-06-02T13:29:00+00:00",
                     tick_interval=1.0) as sim:
        client = make_client("ib_insync")
        client.connect(sim.host, sim.port, 1)
        h = client.place("AAPL", "BUY", 100, order_ref="preopen")
        ext = client.place("AAPL", "BUY", 100, "LMT", lmt=200.0, outside_rth=True, order_ref="ext")
        client.wait(lambda: last_status(client, h) == "PreSubmitted"
                    and last_status(client, ext) == "Submitted", what="pre-market")
        sim.advance(1)  # 09:29:01: extended hours trade, the regular order waits
        client.wait(lambda: last_status(client, ext) == "Filled", what="outside-RTH fill")
        assert last_status(client, h) == "PreSubmitted"
        sim.advance(60)
        client.wait(lambda: last_status(client, h) == "Filled", what="filled after the open")
        opened = [e for e in sim.state()["executions"] if e["orderRef"] == "preopen"][0]
        assert opened["time"] >= 1748871000  # 09:30 New York
        client.disconnect()


def test_day_order_expires_at_the_close(make_client, clientlog):
    clientlog.allow(r"Error 202")
    with running_sim(market_hours="exchange", start_time="2025-06-02T19:59:00+00:00",
                     tick_interval=1.0) as sim:
        client = make_client("ib_async")
        client.connect(sim.host, sim.port, 1)
        day = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, order_ref="day")
        gtc = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, tif="GTC", order_ref="gtc")
        client.wait(lambda: last_status(client, gtc) == "Submitted")
        sim.advance(61)  # past 16:00 New York
        client.wait(lambda: last_status(client, day) == "Cancelled", what="DAY expiry")
        assert the_order(sim.state(), "gtc")["status"] == "Submitted"
        client.disconnect()


def test_overnight_session_trades_only_outside_rth_orders(make_client):
    with running_sim(market_hours="overnight") as sim:
        client = make_client("ibapi")
        client.connect(sim.host, sim.port, 1)
        regular = client.place("AAPL", "BUY", 100, "LMT", lmt=200.0, order_ref="rth-only")
        night = client.place("AAPL", "BUY", 100, "LMT", lmt=200.0, outside_rth=True,
                             order_ref="overnight")
        client.wait(lambda: last_status(client, night) == "Submitted")
        sim.advance(0.5)
        client.wait(lambda: last_status(client, night) == "Filled")
        barrier(client)
        assert last_status(client, regular) == "PreSubmitted"
        client.disconnect()


# -- matching ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CLIENTS)
def test_stop_orders_trigger_when_price_is_set_through_them(name, make_client, sim):
    client = make_client(name)
    client.connect(sim.host, sim.port, 1)
    stop = client.place("AAPL", "SELL", 100, "STP", aux=185.0, order_ref="stop")
    stop_lmt = client.place("AAPL", "SELL", 100, "STP LMT", lmt=184.0, aux=186.0,
                            order_ref="stoplimit")
    client.wait(lambda: last_status(client, stop_lmt) == "Submitted")
    sim.advance(1.0)
    assert [the_order(sim.state(), r)["status"] for r in ("stop", "stoplimit")] == \
        ["Submitted", "Submitted"]
    sim.set_price("AAPL", bid=184.9, ask=184.91)
    client.wait(lambda: last_status(client, stop) == "Filled"
                and last_status(client, stop_lmt) == "Filled", what="stops triggered")
    assert client.fills(stop)[0][2] == 184.9
    assert client.fills(stop_lmt)[0][2] == 184.9


def test_ioc_limit_that_cannot_fill_is_cancelled(make_client, sim, clientlog):
    clientlog.allow(r"Error 202")
    client = make_client("ib_async")
    client.connect(sim.host, sim.port, 1)
    h = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, tif="IOC", order_ref="ioc")
    client.wait(lambda: last_status(client, h) == "Submitted")
    sim.advance(0.25)
    client.wait(lambda: last_status(client, h) == "Cancelled", what="IOC cancelled")
    assert not client.fills(h)


def test_fill_command_forces_partial_then_full_fill(make_client, sim):
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    h = client.place("AAPL", "BUY", 100, "LMT", lmt=150.0, order_ref="forced")
    client.wait(lambda: last_status(client, h) == "Submitted")
    perm = the_order(sim.state(), "forced")["permId"]
    sim.fill(perm, quantity=40, price=150.0)
    client.wait(lambda: len(client.fills(h)) == 1)
    assert client.fills(h)[0][1:3] == (40, 150.0)
    assert last_status(client, h) == "Submitted"
    sim.fill(perm)
    client.wait(lambda: last_status(client, h) == "Filled")
    assert sum(f[1] for f in client.fills(h)) == 100


def test_validation_errors_match_ib_codes(make_client, sim, clientlog):
    clientlog.allow(r"Error 387", r"Error 201", r"Canceled order")
    client = make_client("ib_insync")
    client.connect(sim.host, sim.port, 1)
    rel = client.place("AAPL", "BUY", 100, "REL", aux=0.01, order_ref="rel")
    off_tick = client.place("AAPL", "BUY", 100, "LMT", lmt=150.003, order_ref="offtick")
    too_big = client.place("AAPL", "BUY", 25_000, order_ref="margin")  # 4.75M: under the value limit, over margin
    client.wait(lambda: all(last_status(client, h) == "Cancelled" for h in (rel, too_big))
                and any(e.code == 110 for e in client.errors()), what="rejections")
    codes = {e.req_id: e.code for e in client.errors()}
    assert codes[rel.order_id] == 387
    assert codes[off_tick.order_id] == 110
    assert codes[too_big.order_id] == 201
    assert "EQUITY WITH LOAN" in [e.message for e in client.errors() if e.code == 201][0]
    barrier(client)
    # IB answers an off-tick price with 110 alone, no order status: ib_insync (110 is a warning) keeps waiting
    assert client.statuses(off_tick) == ["PendingSubmit"]
    state = sim.state()
    assert the_order(state, "margin")["status"] == "Inactive"
    assert not the_order(state, "margin")["accepted"]
    assert state["executions"] == []


def test_duplicate_order_id_and_unknown_cancel_errors(sim):
    raw = RawClient(sim.host, sim.port)
    messages = raw.handshake(5)
    next_id = int([m for m in messages if m[0] == "9"][0][2])
    assert next_id == 1
    raw.send(4, 1, 777, "")  # cancel an order that does not exist
    got = raw.recv_until(lambda m: m[0] == "4" and m[3] == "10147")
    assert got[-1][2] == "777"
    raw.close()


def test_request_log_keeps_arrival_order(sim):
    raw = RawClient(sim.host, sim.port)
    raw.handshake(4)
    contract = [0, "AAPL", "STK", "", 0.0, "", "", "SMART", "", "USD", "", ""]
    raw.send(1, 11, 100, *contract, 0, "", 0, 0, "")  # reqMktData
    raw.send(4, 1, 42, "")                              # cancelOrder 42 (unknown)
    raw.send(58, 1)                                     # reqGlobalCancel
    raw.send(2, 2, 100)                                 # cancelMktData
    raw.recv_until(lambda m: m[0] == "4" and m[3] == "10147")
    state = sim.wait_for(lambda s: len(s["request_log"]) >= 5)
    log = [(e["name"], e["orderId"]) for e in state["request_log"] if e["clientId"] == 4]
    assert log == [("startApi", None), ("reqMktData", None), ("cancelOrder", 42), ("reqGlobalCancel", None),
                   ("cancelMktData", None)]
    seqs = [e["seq"] for e in state["request_log"]]
    assert seqs == sorted(seqs)
    raw.close()


def test_sticky_fraction_is_deterministic_per_seed():
    from sim.bench import raw_place_order

    def sticky_refs(seed: int) -> list[str]:
        with running_sim(seed=seed) as sim:
            raw = RawClient(sim.host, sim.port)
            raw.handshake(1)
            sim.sticky_presubmitted(fraction=0.5)
            for i in range(1, 21):
                raw.send(*raw_place_order(i, AAPL, "AAPL", "BUY", 1, "LMT", 150.0, f"f{i}"))
            state = sim.wait_for(lambda s: len(s["orders"]) == 20, what="20 orders")
            raw.close()
            return sorted(o["orderRef"] for o in state["orders"].values() if o["sticky"])

    first, again, other = sticky_refs(4), sticky_refs(4), sticky_refs(5)
    assert first == again
    assert 0 < len(first) < 20
    assert first != other


def test_reset_while_refusing_listens_again(sim):
    sim.refuse_connections()
    sim.reset()
    raw = RawClient(sim.host, sim.port)
    raw.handshake(1)
    raw.close()
    assert sim.state()["faults"]["refusing_connections"] is False
