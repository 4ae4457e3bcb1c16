"""Unit tests of the hops section's own logic (bench/order_hops.py): matching bus events to orders, placing the
simulator's timestamps on this host's clock, the hop arithmetic and the table rows. No system is started and
nothing is timed: every timestamp is given."""

from __future__ import annotations

import math

from bench.hops_model import (
    GW_PLACED,
    GW_STATUS,
    IB_RECV,
    KHAZAD_HOPS,
    OM_PLACED,
    OM_UPDATE,
    PLACE,
    RISK,
    STRATEGY_SEEN,
    BusStamp,
    Hop,
    bus_stamp,
    causal_bounds,
    first_stamps,
    hop_result,
    hops_report,
    offset_interval,
    place_ib_recv,
    sim_created,
)
from bench.report import Row, table_rows
from bus.messages import Instrument, OrderSpec, OrderStatusEvent, OrderUpdate, OrderView, RiskDecisionEvent

MS = 1_000_000


def _spec(coid: str) -> OrderSpec:
    return OrderSpec(
        strategy_id="bench",
        client_order_id=coid,
        instrument=Instrument(symbol="AAPL"),
        side="BUY",
        quantity=1,
        order_type="LMT",
        limit_price=100.0,
    )


def test_bus_stamp_of_real_messages_keeps_ref_status_and_stamp() -> None:
    spec = _spec("r1-h0")
    ref = spec.order_ref
    risk = bus_stamp(RiskDecisionEvent(order_ref=ref, approved=True, code="ok"), 10)
    gw = bus_stamp(OrderStatusEvent(order_ref=ref, status="Submitted"), 20)
    om = bus_stamp(OrderUpdate(order=OrderView(spec=spec, status="PreSubmitted")), 30)
    assert risk == BusStamp(RISK, "bench/r1-h0", "", 10)
    assert gw == BusStamp(GW_STATUS, "bench/r1-h0", "Submitted", 20)
    assert om == BusStamp(OM_UPDATE, "bench/r1-h0", "PreSubmitted", 30)
    assert bus_stamp(object(), 40) is None


def test_first_stamps_presubmitted_and_repeats_ignored_first_of_each_wins() -> None:
    events = [
        BusStamp(RISK, "bench/a", "", 100),
        BusStamp(GW_STATUS, "bench/a", "PendingSubmit", 150),
        BusStamp(GW_STATUS, "bench/a", "PreSubmitted", 180),
        BusStamp(GW_STATUS, "bench/a", "Submitted", 200),
        BusStamp(OM_UPDATE, "bench/a", "PreSubmitted", 250),
        BusStamp(OM_UPDATE, "bench/a", "Submitted", 300),
        BusStamp(GW_STATUS, "bench/a", "Submitted", 400),  # a repeat (e.g. an openOrder after the status)
        BusStamp(OM_UPDATE, "bench/a", "Submitted", 500),
        BusStamp(RISK, "bench/a", "", 600),
    ]
    assert first_stamps(events, ["bench/a"]) == {"bench/a": {RISK: 100, GW_PLACED: 150, GW_STATUS: 200, OM_UPDATE: 300}}


def test_first_stamps_other_orders_not_matched_missing_ones_empty() -> None:
    events = [
        BusStamp(RISK, "bench/other", "", 1),
        BusStamp(GW_STATUS, "bench/b", "Submitted", 2),
        BusStamp(OM_UPDATE, "bench/warmup", "Submitted", 3),
    ]
    out = first_stamps(events, ["bench/b", "bench/c"])
    assert out == {"bench/b": {GW_STATUS: 2}, "bench/c": {}}


def test_hop_result_orders_missing_an_instant_counted_not_sampled() -> None:
    stamps = {"a": {PLACE: 0, RISK: 2 * MS}, "b": {PLACE: 0, RISK: 4 * MS}, "c": {PLACE: 0}, "d": {RISK: 1}}
    r = hop_result(stamps, Hop("x", PLACE, RISK))
    assert r["n"] == 2 and r["missing"] == 2 and r["negative"] == 0
    assert r["max_ms"] == 4.0 and r["mean_ms"] == 3.0


def test_hop_result_end_before_start_counted_negative() -> None:
    r = hop_result({"a": {PLACE: 5 * MS, IB_RECV: 3 * MS}, "b": {PLACE: 0, IB_RECV: MS}}, Hop("x", PLACE, IB_RECV))
    assert r["negative"] == 1 and r["n"] == 2


def test_offset_interval_intersects_bounds() -> None:
    assert offset_interval([(0, 10), (3, 12), (-5, 8)]) == (3, 8)


def test_offset_interval_contradicting_or_no_bounds_none() -> None:
    assert offset_interval([(0, 2), (3, 5)]) is None
    assert offset_interval([]) is None


def test_place_ib_recv_corrects_the_simulator_clock_by_the_bounded_offset() -> None:
    # the simulator's clock lags this host's by 9 ms: its creation times, taken at face value, come before the place
    lag = 9 * MS
    orders = {
        "1": {"orderRef": "bench/a", "createdAt": (0.5 * MS - lag) / 1e9},
        "2": {"orderRef": "direct/a", "createdAt": (10.4 * MS - lag) / 1e9},
        "3": {"orderRef": "nobody/x", "createdAt": 0},
    }
    sim_mono = sim_created(orders, 0.0)
    assert set(sim_mono) == {"bench/a", "direct/a"}  # no creation time: left out, not guessed
    khazad = {"bench/a": {PLACE: -2 * MS, RISK: 0, GW_STATUS: MS, STRATEGY_SEEN: 3 * MS}}
    direct = {"direct/a": {PLACE: 10 * MS, STRATEGY_SEEN: 10 * MS + 8 * MS // 10}}
    info = place_ib_recv(khazad, direct, sim_mono, [])
    assert info["placed"]
    # the offset lies in [place - sim, seen - sim] of each order; the true 9 ms is inside, the middle is used
    assert math.isclose(info["offset_ms"], 9.0) and math.isclose(info["uncertainty_ms"], 0.4)
    assert khazad["bench/a"][IB_RECV] == MS // 2  # between the risk decision (0) and the gateway's status (1 ms)
    assert direct["direct/a"][PLACE] < direct["direct/a"][IB_RECV] < direct["direct/a"][STRATEGY_SEEN]


def test_place_ib_recv_contradicting_bounds_skip_the_split() -> None:
    sim_mono = {"direct/a": 0, "direct/b": 0}
    # a: the offset is in [0, 1 ms]; b: in [5, 6 ms]: no offset fits both
    direct = {"direct/a": {PLACE: 0, STRATEGY_SEEN: MS}, "direct/b": {PLACE: 5 * MS, STRATEGY_SEEN: 6 * MS}}
    info = place_ib_recv({}, direct, sim_mono, [])
    assert not info["placed"]
    assert all(IB_RECV not in s for s in direct.values())


def test_causal_bounds_only_orders_with_both_instants() -> None:
    stamps = {"a": {RISK: 10, GW_STATUS: 30}, "b": {RISK: 10}, "c": {RISK: 1, GW_STATUS: 2}}
    assert causal_bounds(stamps, {"a": 5, "b": 5}, RISK, GW_STATUS) == [(5, 25)]


def _orders() -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    k = {
        f"bench/{i}": {
            PLACE: 0,
            RISK: 2 * MS,
            IB_RECV: 5 * MS,
            GW_STATUS: 6 * MS,
            OM_UPDATE: 8 * MS,
            STRATEGY_SEEN: 9 * MS,
        }
        for i in range(3)
    }
    d = {f"direct/{i}": {PLACE: 0, IB_RECV: MS // 2, STRATEGY_SEEN: MS} for i in range(3)}
    return k, d


def test_hops_report_floor_is_zmq_legs_plus_the_baselines_split() -> None:
    k, d = _orders()
    one_way = {"place": 0.05, "check": 0.06, "decision": 0.07, "submit": 0.08, "status_event": 0.01, "update": 0.02}
    r = hops_report(k, d, one_way)
    hops = r["khazad"]
    assert list(hops) == [h.name for h in KHAZAD_HOPS]
    first = hops["place->risk decided"]
    assert first["p50_ms"] == 2.0 and math.isclose(first["zmq_floor_ms"], 0.11)
    assert math.isclose(first["over_floor_p50_ms"], 2.0 - 0.11)
    to_ib = hops["risk decided->IB received"]
    assert to_ib["p50_ms"] == 3.0 and to_ib["baseline_p50_ms"] == 0.5
    assert math.isclose(to_ib["floor_p50_ms"], 0.07 + 0.08 + 0.5)
    assert hops["IB received->gateway status"]["floor_p50_ms"] == 0.5  # no zmq leg: the baseline's own split
    assert math.isclose(hops["gateway status->OM update"]["zmq_floor_ms"], 0.02)  # two legs through the proxy
    assert r["khazad_total"]["p50_ms"] == 9.0 and r["khazad_total"]["added_p50_ms"] == 8.0
    assert r["ib_insync"]["place->IB received"]["p50_ms"] == 0.5


def _rows(k: dict[str, dict[str, int]], d: dict[str, dict[str, int]]) -> list[Row]:
    r = hops_report(k, d, dict.fromkeys(("place", "check", "decision", "submit", "status_event", "update"), 0.05))
    r.update(orders=3, sim_clock={"placed": True, "offset_ms": 9.4, "uncertainty_ms": 0.4})
    return table_rows({"sections": ["hops"], "hops": r})


def test_hops_rows_total_added_over_1ms_missed() -> None:
    k, d = _orders()
    rows = _rows(k, d)
    total = [row for row in rows if row[1].startswith("total")]
    assert len(total) == 1 and "MISSED" in total[0][-1] and total[0][5] == "added <= 1 ms"
    assert all(row[5] == "-" for row in rows if not row[1].startswith("total"))
    assert sum(1 for row in rows if row[1].startswith(tuple(h.name for h in KHAZAD_HOPS))) == len(KHAZAD_HOPS)


def test_hops_rows_total_added_under_1ms_met() -> None:
    k, d = _orders()
    for s in k.values():
        s[STRATEGY_SEEN] = int(1.5 * MS)
    total = [row for row in _rows(k, d) if row[1].startswith("total")]
    assert "met" in total[0][-1]


def test_hops_report_counts_submitted_before_the_order_manager_knew_of_the_placement() -> None:
    k, d = _orders()  # the gateway's Submitted is published at 6 ms
    k["bench/0"].update({GW_PLACED: 4 * MS, OM_PLACED: 7 * MS})  # the order manager was still busy with the ack
    k["bench/1"].update({GW_PLACED: 4 * MS, OM_PLACED: 5 * MS})  # it knew of the placement before
    k["bench/2"].update({GW_PLACED: 4 * MS, OM_PLACED: 8 * MS})  # busy
    r = hops_report(k, d, dict.fromkeys(("place", "check", "decision", "submit", "status_event", "update"), 0.0))
    assert r["submitted_before_om_placed"] == 2
    detail = r["khazad_detail"]["gateway placeOrder written->OM PendingSubmit update"]
    assert detail["n"] == 3 and detail["max_ms"] == 4.0 and detail["missing"] == 0
    assert r["khazad_detail"]["gateway placeOrder written->IB received"]["p50_ms"] == 1.0
