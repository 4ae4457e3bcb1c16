"""Order path hop by hop (issue 18: "explain the remaining gap hop by hop"): where an order's place -> Submitted
time goes, one order in flight, through the real system.

For each order (the order-entry section's BUY 1 AAPL LMT far below the market) six instants, all on this host's
CLOCK_MONOTONIC, observed from outside the actors (no actor code is instrumented):

* ``place``: the strategy calls ``AsyncKhazadClient.place_order`` (``time.monotonic_ns()`` just before);
* ``risk``: the risk governor's ``RiskDecisionEvent`` on ``risk.decision.<strategy>`` (its envelope ``mono_ns``,
  stamped when the governor publishes it, just before it replies to the order manager);
* ``ib_recv``: the simulator creates the order (its ``createdAt``: ``time.time()`` when it handles the
  placeOrder message, converted from the wall clock with an offset measured right before the conversion);
* ``gw_status``: the gateway's ``OrderStatusEvent`` with status ``Submitted`` on ``gw.order.<strategy>``
  (envelope ``mono_ns``);
* ``om_update``: the order manager's ``OrderUpdate`` with status ``Submitted`` on ``order.<strategy>`` (envelope
  ``mono_ns``);
* ``strategy``: the SDK's order-update callback sees that update (``time.monotonic_ns()``); ``reply``: the
  ``OrderReply`` returned by ``place_order``.

The bus events are read by a Subscriber in this process with the operator's key (as the kill section's
:class:`~bench.kill_switch.HeartbeatWatch` does). Baseline in the same run: ib_insync placing directly against the
same simulator, one order in flight: place -> simulator created -> ib_insync's ``Submitted`` status event.

Transport floor per hop: raw pyzmq DEALER/ROUTER round trips (a ``bare-echo`` child, request and reply of one
payload size, the real envelope's byte size) give the one-way floor of that payload as half the round trip; a hop
is the sum of its one-way zmq legs (an event through the bus proxy is two legs). The TCP legs to and from the
simulator are not zmq: the baseline's own split (ib_insync + the simulator, no Khazad) is their floor.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.harness import FAR_LIMIT, SYMBOL, Child, System, free_ports, summary_ms, wait_until
from bus import topics

STRATEGY = "bench"
#: Orders before the measured ones (connections, caches, the journal's first pages).
WARMUP = 20
QUICK_ORDERS = 100
FULL_ORDERS = 300
#: One order's bound from place to Submitted seen (a stuck order fails the section rather than hanging it).
ORDER_TIMEOUT_S = 30.0
#: After the last order, how long the bus tap may take to deliver the last events.
TAP_DRAIN_TIMEOUT_S = 10.0
#: Raw pyzmq round trips per payload size for the transport floor (after FLOOR_WARMUP).
FLOOR_ROUND_TRIPS = 1000
FLOOR_WARMUP = 200
#: Control-API reads of the simulator's clock, before and after the orders (the narrowest bracket bounds it best).
CLOCK_BRACKETS = 5

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


# ---------------------------------------------------------------------------------------------------------------
# the measurement
# ---------------------------------------------------------------------------------------------------------------


class BusTap:
    """A bus Subscriber in this process (the operator's key) on a strategy's risk decisions, gateway order events
    and order-manager updates; keeps each event as a :class:`BusStamp`, and the encoded size of the first event of
    each kind (the transport floor's payloads)."""

    def __init__(self, system: System, strategy: str) -> None:
        self.system = system
        self.strategy = strategy
        self.stamps: list[BusStamp] = []
        self._submitted: set[str] = set()
        self.sizes: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._ctx: Any = None
        self._sub: Any = None
        self._pub: Any = None

    async def start(self) -> None:
        import zmq.asyncio

        from bus.codec import Stamper, event_codec
        from bus.pubsub import Publisher, Subscriber
        from tests.support.clients import security, server_key

        bus = self.system.cfg.bus
        sec = security(self.system.cfg)
        key = server_key(sec, "proxy")
        self._ctx = zmq.asyncio.Context()
        self._pub = Publisher(self._ctx, bus.proxy_frontend, Stamper("bench-hops"), security=sec, server_key=key)
        await self._pub.wait_ready(bus.proxy_backend)
        wanted = [topics.risk_decision(self.strategy), topics.gw_order(self.strategy), topics.order(self.strategy)]
        self._sub = Subscriber(self._ctx, bus.proxy_backend, wanted, name="bench-hops", security=sec, server_key=key)
        await self._sub.wait_ready(self._pub)
        codec = event_codec()
        sizes = {RISK: "decision_event", GW_STATUS: "status_event", OM_UPDATE: "update"}  # their first Submitted

        async def read() -> None:
            while True:
                _topic, env = await self._sub.recv()
                st = bus_stamp(env.body, env.mono_ns)
                if st is None:
                    continue
                self.stamps.append(st)
                if st.instant == OM_UPDATE and st.status == SUBMITTED:
                    self._submitted.add(st.order_ref)
                if st.status == SUBMITTED or st.instant == RISK:
                    self.sizes.setdefault(sizes[st.instant], len(codec.encode(env)))

        self._task = asyncio.create_task(read())

    def saw_update(self, order_ref: str) -> bool:
        """Whether the order manager's ``Submitted`` update of ``order_ref`` has reached the tap."""
        return order_ref in self._submitted

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for part in (self._sub, self._pub):
            if part is not None:
                part.close()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)


class HopsStrategy:
    """The strategy side: an AsyncKhazadClient placing one order at a time, stamping place, reply and the
    ``Submitted`` update it sees."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.client: Any = None
        self.seen: dict[str, int] = {}
        self._waiting: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        from sdk import AsyncKhazadClient

        self.client = await AsyncKhazadClient(STRATEGY, config=self.system.cfg, name="strategy.bench-hops").start()
        self.client.on_order_update(self._on_update)

    def _on_update(self, update: Any) -> None:
        if update.order.status != SUBMITTED:
            return
        ref = update.order.spec.order_ref
        if ref not in self.seen:
            self.seen[ref] = time.monotonic_ns()
            fut = self._waiting.pop(ref, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def run(self, run: str, n: int) -> dict[str, dict[str, int]]:
        """``n`` orders one after another (each placed once the previous one's reply and Submitted were seen):
        orderRef -> {place, reply, strategy}."""
        from bus.messages import Instrument, OrderSpec

        out: dict[str, dict[str, int]] = {}
        loop = asyncio.get_running_loop()
        for i in range(n):
            spec = OrderSpec(
                strategy_id=STRATEGY,
                client_order_id=f"{run}-h{i}",
                instrument=Instrument(symbol=SYMBOL),
                side="BUY",
                quantity=1,
                order_type="LMT",
                limit_price=FAR_LIMIT,
            )
            ref = spec.order_ref
            fut: asyncio.Future[None] = loop.create_future()
            self._waiting[ref] = fut
            t0 = time.monotonic_ns()
            await self.client.place_order(spec)
            t1 = time.monotonic_ns()
            if ref not in self.seen:
                await asyncio.wait_for(fut, ORDER_TIMEOUT_S)
            out[ref] = {PLACE: t0, REPLY: t1, STRATEGY_SEEN: self.seen[ref]}
        return out

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


async def _direct_run(direct: Any, run: str, n: int) -> dict[str, dict[str, int]]:
    """The baseline: ib_insync places ``n`` orders one after another: orderRef -> {place, strategy (its Submitted
    status event)}."""
    seen: dict[str, int] = {}
    waiting: dict[str, asyncio.Future[None]] = {}

    def on_status(trade: Any) -> None:
        ref = trade.order.orderRef
        if trade.orderStatus.status == SUBMITTED and ref not in seen:
            seen[ref] = time.monotonic_ns()
            fut = waiting.pop(ref, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    direct.ib.orderStatusEvent += on_status
    loop = asyncio.get_running_loop()
    out: dict[str, dict[str, int]] = {}
    try:
        for i in range(n):
            ref = f"direct/{run}-h{i}"
            fut: asyncio.Future[None] = loop.create_future()
            waiting[ref] = fut
            t0 = time.monotonic_ns()
            direct.place(ref)
            if ref not in seen:
                await asyncio.wait_for(fut, ORDER_TIMEOUT_S)
            out[ref] = {PLACE: t0, STRATEGY_SEEN: seen[ref]}
    finally:
        direct.ib.orderStatusEvent -= on_status
    return out


def transport_floor(sizes: Mapping[str, int], n: int = FLOOR_ROUND_TRIPS) -> dict[str, Any]:
    """Raw pyzmq one-way floor per payload size: a DEALER -> ``bare-echo`` ROUTER child -> DEALER round trip with
    request and reply of that size, p50 / 2 (and p99 / 2). {payload: {bytes, one_way_p50_ms, one_way_p99_ms}}."""
    import zmq

    out: dict[str, Any] = {}
    by_size: dict[int, dict[str, float]] = {}
    for name, size in sizes.items():
        if size in by_size:
            out[name] = {"bytes": size, **by_size[size]}
            continue
        (port,) = free_ports(1)
        ep = f"tcp://127.0.0.1:{port}"
        child = Child("bare-echo", "--endpoint", ep, "--reply-bytes", str(size))
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            child.expect("ready")
            sock.connect(ep)
            payload = b"p" * size
            samples: list[int] = []
            for i in range(FLOOR_WARMUP + n):
                t0 = time.monotonic_ns()
                sock.send(payload)
                if not sock.poll(10_000):
                    raise TimeoutError("bare echo did not answer")
                sock.recv()
                if i >= FLOOR_WARMUP:
                    samples.append(time.monotonic_ns() - t0)
        finally:
            sock.close(0)
            ctx.term()
            child.stop()
        rt = summary_ms(samples)
        by_size[size] = {"one_way_p50_ms": rt["p50_ms"] / 2, "one_way_p99_ms": rt["p99_ms"] / 2}
        out[name] = {"bytes": size, **by_size[size]}
    return out


def _wall_minus_mono_now() -> float:
    """time.time() - time.monotonic() now, from the pair read closest together (as the harness does at start)."""
    best: tuple[float, float] | None = None
    for _ in range(5):
        m0 = time.monotonic()
        w = time.time()
        m1 = time.monotonic()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, w - (m0 + m1) / 2)
    assert best is not None
    return best[1]


def sim_clock_brackets(system: System, wall_minus_mono_s: float, tries: int = CLOCK_BRACKETS) -> list[tuple[int, int]]:
    """Offset bounds of the simulator's clock from its control API: its ``state`` reports the simulator's ``time``,
    read between this host's send and receive, so the offset lies in ``[sent - time, received - time]``. (The
    simulator's realtime clock lags the wall clock by how long its start-up took between two reads of it.)"""
    from bench.harness import NO_LOG
    from sim.control import control_request

    out = []
    for _ in range(tries):
        m0 = time.monotonic_ns()
        st = control_request(system.sim.control_port, "state", {"log_since": NO_LOG}, timeout=ORDER_TIMEOUT_S)
        m1 = time.monotonic_ns()
        sim_t = wall_to_mono_ns(float(st["time"]), wall_minus_mono_s)
        out.append((m0 - sim_t, m1 - sim_t))
    return out


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


async def run_hops(system: System, *, quick: bool, log: Any = print) -> dict[str, Any]:
    """The section: the Khazad path and the baseline, one order in flight each, then the transport floor."""
    from bench.bare_chain import payload_sizes
    from bench.order_entry import DirectPath

    n = QUICK_ORDERS if quick else FULL_ORDERS
    run = uuid.uuid4().hex[:8]
    wmm = _wall_minus_mono_now()
    brackets = await asyncio.to_thread(sim_clock_brackets, system, wmm)
    tap, strategy, direct = BusTap(system, STRATEGY), HopsStrategy(system), DirectPath(system)
    await direct.start()
    await tap.start()
    await strategy.start()
    try:
        k_all = await strategy.run(run, WARMUP + n)
        refs = list(k_all)[WARMUP:]
        try:  # the tap's copy of the last update (a missing one is reported as missing, not waited for forever)
            await wait_until(lambda: tap.saw_update(refs[-1]), "the bus tap's last update", TAP_DRAIN_TIMEOUT_S)
        except TimeoutError:
            pass
        d_all = await _direct_run(direct, run, WARMUP + n)
        d_refs = list(d_all)[WARMUP:]
        orders = await asyncio.to_thread(system.sim_orders)
        brackets += await asyncio.to_thread(sim_clock_brackets, system, wmm)
        await direct.cancel_everything()
    finally:
        await strategy.close()
        await tap.close()
        await direct.close()
    drift_us = (_wall_minus_mono_now() - wmm) * 1e6
    bus = first_stamps(tap.stamps, refs)
    khazad = {ref: {**k_all[ref], **bus[ref]} for ref in refs}
    baseline = {ref: dict(d_all[ref]) for ref in d_refs}
    sim_clock = place_ib_recv(khazad, baseline, sim_created(orders, wmm), brackets)
    sim_clock.update(
        source="createdAt (the simulator's clock when it handles placeOrder)",
        wall_minus_mono_drift_us=round(drift_us, 1),
    )
    sizes = {k: v for k, v in payload_sizes().items() if k in ("place", "check", "decision", "submit")}
    sizes.update({k: v for k, v in tap.sizes.items() if k in ("status_event", "update")})
    floor = await asyncio.to_thread(transport_floor, sizes)
    out = hops_report(khazad, baseline, {k: v["one_way_p50_ms"] for k, v in floor.items()})
    out.update(orders=n, warmup=WARMUP, floor=floor, sim_clock=sim_clock)
    if sim_clock["placed"]:
        log(
            f"  simulator clock offset {sim_clock['offset_ms']:.3f} ms +- {sim_clock['uncertainty_ms']:.3f} ms "
            f"({sim_clock['bounds']} bounds)"
        )
    else:
        log(f"  {sim_clock['why']}")
    for name, r in out["khazad"].items():
        log(
            f"  {name:<30} p50 {r['p50_ms']:7.3f} ms  p99 {r['p99_ms']:7.3f} ms  (floor {r['floor_p50_ms']:.3f} ms"
            f"{', ' + str(r['missing']) + ' missing' if r['missing'] else ''})"
        )
    t = out["khazad_total"]
    log(
        f"  {'total':<30} p50 {t['p50_ms']:7.3f} ms  p99 {t['p99_ms']:7.3f} ms  (added vs ib_insync p50 "
        f"{t['added_p50_ms']:+.3f} ms)"
    )
    return out


__all__ = [
    "run_hops",
    "first_stamps",
    "hop_samples",
    "hop_result",
    "hops_report",
    "sim_created",
    "offset_interval",
    "causal_bounds",
    "place_ib_recv",
    "BusStamp",
    "Hop",
]
