"""The order path's hops (issue 18): the instants of one order, the hops between them, and their arithmetic
(matching bus events to orders, placing the simulator's wall-clock times on this host's CLOCK_MONOTONIC, each hop's
summary against its raw transport floor). Pure functions: the measurement that feeds them is :mod:`bench.order_hops`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.harness import summary_ms

# instants of one order (the keys of its stamps)
PLACE, RISK, IB_RECV, GW_STATUS, OM_UPDATE, STRATEGY_SEEN, REPLY = (
    "place",
    "risk",
    "ib_recv",
    "gw_status",
    "om_update",
    "strategy",
    "reply",
)
SUBMITTED = "Submitted"
PENDING_SUBMIT = "PendingSubmit"
#: detail instants: the gateway's PendingSubmit event (published right after its placeOrder was written to the TWS
#: socket) and the order manager's first PendingSubmit update (it learnt of the placement: the gateway's SubmitAck,
#: or that event if it came first)
GW_PLACED, OM_PLACED = "gw_placed", "om_placed"
#: (bus instant, status) -> the stamp it gives (the first one per order); a risk decision has no status
BUS_INSTANTS: dict[tuple[str, str], str] = {
    (RISK, ""): RISK,
    (GW_STATUS, SUBMITTED): GW_STATUS,
    (OM_UPDATE, SUBMITTED): OM_UPDATE,
    (GW_STATUS, PENDING_SUBMIT): GW_PLACED,
    (OM_UPDATE, PENDING_SUBMIT): OM_PLACED,
}


@dataclass(frozen=True)
class Hop:
    """One hop of the order path: from instant ``start`` to instant ``end``; ``legs`` are its one-way zmq legs by
    payload (keys of the floor's payload sizes); ``tcp`` its legs over the TWS socket; ``baseline`` the baseline hop
    that does the same TCP and simulator work without Khazad ("" if none)."""

    name: str
    start: str
    end: str
    legs: tuple[str, ...] = ()
    tcp: int = 0
    baseline: str = ""


#: The Khazad path, in order; ``total`` is place -> strategy saw Submitted.
KHAZAD_HOPS = (
    Hop("place->risk decided", PLACE, RISK, legs=("place", "check")),
    Hop("risk decided->IB received", RISK, IB_RECV, legs=("decision", "submit"), tcp=1, baseline="place->IB received"),
    Hop("IB received->gateway status", IB_RECV, GW_STATUS, tcp=1, baseline="IB received->Submitted event"),
    Hop("gateway status->OM update", GW_STATUS, OM_UPDATE, legs=("status_event", "status_event")),
    Hop("OM update->strategy", OM_UPDATE, STRATEGY_SEEN, legs=("update", "update")),
)
#: Splits inside the hops above (no floor of their own): where the gateway's placeOrder leaves, and when the order
#: manager learns of it, against the Submitted event.
KHAZAD_DETAIL = (
    Hop("risk decided->gateway placeOrder written", RISK, GW_PLACED),
    Hop("gateway placeOrder written->IB received", GW_PLACED, IB_RECV),
    Hop("gateway placeOrder written->OM PendingSubmit update", GW_PLACED, OM_PLACED),
    Hop("OM PendingSubmit update->OM Submitted update", OM_PLACED, OM_UPDATE),
)
KHAZAD_TOTAL = Hop("total place->Submitted seen", PLACE, STRATEGY_SEEN)
KHAZAD_REPLY = Hop("place->OrderReply", PLACE, REPLY)
DIRECT_HOPS = (
    Hop("place->IB received", PLACE, IB_RECV, tcp=1),
    Hop("IB received->Submitted event", IB_RECV, STRATEGY_SEEN, tcp=1),
)
DIRECT_TOTAL = Hop("total place->Submitted seen", PLACE, STRATEGY_SEEN)


# ---------------------------------------------------------------------------------------------------------------
# pure helpers: matching events to orders and computing hops (tests/bench/test_order_hops.py)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BusStamp:
    """One bus event about one order, reduced to what the hop computation needs."""

    instant: str  # RISK, GW_STATUS or OM_UPDATE
    order_ref: str
    status: str  # "" for a risk decision
    mono_ns: int


def bus_stamp(body: Any, mono_ns: int) -> BusStamp | None:
    """The :class:`BusStamp` of an event body (RiskDecisionEvent, OrderStatusEvent, OrderUpdate); None for others."""
    from bus.messages import OrderStatusEvent, OrderUpdate, RiskDecisionEvent

    if isinstance(body, RiskDecisionEvent):
        return BusStamp(RISK, body.order_ref, "", mono_ns)
    if isinstance(body, OrderStatusEvent):
        return BusStamp(GW_STATUS, body.order_ref, body.status, mono_ns)
    if isinstance(body, OrderUpdate):
        return BusStamp(OM_UPDATE, body.order.spec.order_ref, body.order.status, mono_ns)
    return None


def first_stamps(events: Iterable[BusStamp], refs: Iterable[str]) -> dict[str, dict[str, int]]:
    """For each order of ``refs``: the first risk decision, the first gateway status ``Submitted`` and the first
    order-manager update ``Submitted`` (and the detail instants of :data:`BUS_INSTANTS`), by arrival order (a later
    repeat of the same status is not the hop; other statuses are not stamps)."""
    wanted = set(refs)
    out: dict[str, dict[str, int]] = {ref: {} for ref in wanted}
    for ev in events:
        name = BUS_INSTANTS.get((ev.instant, ev.status))
        if ev.order_ref in wanted and name is not None:
            out[ev.order_ref].setdefault(name, ev.mono_ns)
    return out


def wall_to_mono_ns(wall_s: float, wall_minus_mono_s: float) -> int:
    """A wall-clock time (``time.time()``) on CLOCK_MONOTONIC, given the offset between the two clocks."""
    return int((wall_s - wall_minus_mono_s) * 1e9)


def sim_created(orders: Mapping[str, Mapping[str, Any]], wall_minus_mono_s: float) -> dict[str, int]:
    """orderRef -> when the simulator created the order (its ``createdAt``, its own clock), on CLOCK_MONOTONIC
    before the simulator clock's offset is corrected (:func:`offset_interval`); orders without a creation time are
    left out (never guessed)."""
    out: dict[str, int] = {}
    for o in orders.values():
        created = o.get("createdAt")
        ref = o.get("orderRef")
        if ref and created:
            out[ref] = wall_to_mono_ns(float(created), wall_minus_mono_s)
    return out


def causal_bounds(
    stamps: Mapping[str, Mapping[str, int]], sim_mono: Mapping[str, int], before: str, after: str
) -> list[tuple[int, int]]:
    """The simulator clock's offset (true - simulator, ns) as causality bounds it: an order was created at the
    simulator after instant ``before`` and before instant ``after`` of this host (e.g. the baseline's place and its
    Submitted event), so ``offset`` lies in ``[before - sim, after - sim]`` for every order."""
    return [
        (s[before] - sim_mono[ref], s[after] - sim_mono[ref])
        for ref, s in stamps.items()
        if ref in sim_mono and before in s and after in s
    ]


def offset_interval(bounds: Iterable[tuple[int, int]]) -> tuple[int, int] | None:
    """The intersection of offset intervals ``(low, high)``; None when there are none or they contradict each
    other (then the simulator's timestamps cannot be placed on this host's clock: the split is skipped)."""
    low, high = None, None
    for lo, hi in bounds:
        low = lo if low is None else max(low, lo)
        high = hi if high is None else min(high, hi)
    if low is None or high is None or low > high:
        return None
    return low, high


def hop_samples(stamps: Mapping[str, Mapping[str, int]], hop: Hop) -> list[int]:
    """``end - start`` (ns) of every order that has both instants of ``hop``."""
    return [s[hop.end] - s[hop.start] for s in stamps.values() if hop.start in s and hop.end in s]


def hop_result(stamps: Mapping[str, Mapping[str, int]], hop: Hop) -> dict[str, Any]:
    """The summary of one hop over the orders, with how many orders miss it and how many came out negative (two
    clocks disagreeing: the simulator's wall clock against CLOCK_MONOTONIC)."""
    samples = hop_samples(stamps, hop)
    out: dict[str, Any] = summary_ms(samples)
    out["missing"] = len(stamps) - len(samples)
    out["negative"] = sum(1 for s in samples if s < 0)
    return out


def floor_ms(hop: Hop, one_way_ms: Mapping[str, float]) -> float:
    """The raw zmq transport floor of a hop: the sum of its legs' one-way floors (0 for a hop with no zmq leg)."""
    return sum(one_way_ms[leg] for leg in hop.legs)


def hops_report(
    khazad: Mapping[str, Mapping[str, int]], direct: Mapping[str, Mapping[str, int]], one_way_ms: Mapping[str, float]
) -> dict[str, Any]:
    """The section's JSON: each hop's summary, its legs, the zmq floor, and the baseline hop it compares with."""
    base = {h.name: hop_result(direct, h) for h in (*DIRECT_HOPS, DIRECT_TOTAL)}
    hops: dict[str, Any] = {}
    for h in KHAZAD_HOPS:
        r = hop_result(khazad, h)
        r.update(zmq_legs=len(h.legs), tcp_legs=h.tcp, zmq_floor_ms=floor_ms(h, one_way_ms), baseline=h.baseline)
        if h.baseline:
            r["baseline_p50_ms"] = base[h.baseline]["p50_ms"]
        r["floor_p50_ms"] = r["zmq_floor_ms"] + r.get("baseline_p50_ms", 0.0)
        r["over_floor_p50_ms"] = r["p50_ms"] - r["floor_p50_ms"]
        hops[h.name] = r
    total = hop_result(khazad, KHAZAD_TOTAL)
    total["added_p50_ms"] = total["p50_ms"] - base[DIRECT_TOTAL.name]["p50_ms"]
    total["added_p99_ms"] = total["p99_ms"] - base[DIRECT_TOTAL.name]["p99_ms"]
    detail = {h.name: hop_result(khazad, h) for h in KHAZAD_DETAIL}
    # the order manager still busy with the placement (its SubmitAck) when IB's Submitted event was published
    busy = sum(1 for s in khazad.values() if GW_STATUS in s and OM_PLACED in s and s[GW_STATUS] < s[OM_PLACED])
    return {
        "khazad": hops,
        "khazad_total": total,
        "khazad_reply": hop_result(khazad, KHAZAD_REPLY),
        "khazad_detail": detail,
        "submitted_before_om_placed": busy,
        "ib_insync": base,
    }


def place_ib_recv(
    khazad: dict[str, dict[str, int]],
    direct: dict[str, dict[str, int]],
    sim_mono: Mapping[str, int],
    brackets: list[tuple[int, int]],
) -> dict[str, Any]:
    """Put the simulator's creation times on this host's clock (``IB_RECV`` into each order's stamps), with the
    offset bounded by the control API's brackets and by causality on both paths; the offset's interval in the
    result. Nothing is added when the bounds contradict each other."""
    bounds = [
        *brackets,
        *causal_bounds(khazad, sim_mono, RISK, GW_STATUS),
        *causal_bounds(direct, sim_mono, PLACE, STRATEGY_SEEN),
    ]
    iv = offset_interval(bounds)
    if iv is None:
        return {
            "placed": False,
            "why": "the simulator clock's offset bounds contradict each other: split skipped",
            "bounds": len(bounds),
        }
    offset = (iv[0] + iv[1]) // 2
    for stamps in (khazad, direct):
        for ref, s in stamps.items():
            if ref in sim_mono:
                s[IB_RECV] = sim_mono[ref] + offset
    return {
        "placed": True,
        "offset_ms": offset / 1e6,
        "uncertainty_ms": (iv[1] - iv[0]) / 2e6,
        "bounds": len(bounds),
        "bracket_width_ms": min((hi - lo for lo, hi in brackets), default=0) / 1e6,
    }
