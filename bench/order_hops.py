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
from collections.abc import Mapping
from typing import Any

from bench.bare_chain import raw_round_trips
from bench.bus_watch import BusWatch
from bench.harness import FAR_LIMIT, SYMBOL, Child, System, free_ports, summary_ms, wait_until
from bench.hops_model import (
    GW_STATUS,
    OM_UPDATE,
    PLACE,
    REPLY,
    RISK,
    STRATEGY_SEEN,
    SUBMITTED,
    BusStamp,
    bus_stamp,
    first_stamps,
    hops_report,
    place_ib_recv,
    sim_created,
    wall_to_mono_ns,
)
from bus import topics
from bus.codec import event_codec

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
#: the bus instant -> the name of its payload size in the transport floor
TAP_SIZES = {RISK: "decision_event", GW_STATUS: "status_event", OM_UPDATE: "update"}

# ---------------------------------------------------------------------------------------------------------------
# the measurement
# ---------------------------------------------------------------------------------------------------------------


class BusTap(BusWatch):
    """A bus Subscriber in this process (the operator's key) on a strategy's risk decisions, gateway order events
    and order-manager updates; keeps each event as a :class:`BusStamp`, and the encoded size of the first event of
    each kind (the transport floor's payloads)."""

    def __init__(self, system: System, strategy: str) -> None:
        super().__init__(
            system, [topics.risk_decision(strategy), topics.gw_order(strategy), topics.order(strategy)], "bench-hops"
        )
        self.strategy = strategy
        self.stamps: list[BusStamp] = []
        self._submitted: set[str] = set()
        self.sizes: dict[str, int] = {}
        self._codec = event_codec()

    def on_event(self, topic: str, env: Any) -> None:
        st = bus_stamp(env.body, env.mono_ns)
        if st is None:
            return
        self.stamps.append(st)
        if st.instant == OM_UPDATE and st.status == SUBMITTED:
            self._submitted.add(st.order_ref)
        if st.status == SUBMITTED or st.instant == RISK:  # the first Submitted of each kind: the floor's payloads
            self.sizes.setdefault(TAP_SIZES[st.instant], len(self._codec.encode(env)))

    def saw_update(self, order_ref: str) -> bool:
        """Whether the order manager's ``Submitted`` update of ``order_ref`` has reached the tap."""
        return order_ref in self._submitted


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
    out: dict[str, Any] = {}
    by_size: dict[int, dict[str, float]] = {}
    for name, size in sizes.items():
        if size in by_size:
            out[name] = {"bytes": size, **by_size[size]}
            continue
        (port,) = free_ports(1)
        ep = f"tcp://127.0.0.1:{port}"
        child = Child("bare-echo", "--endpoint", ep, "--reply-bytes", str(size))
        try:
            child.expect("ready")
            samples = raw_round_trips(ep, b"p" * size, n, FLOOR_WARMUP, "bare echo")
        finally:
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


__all__ = ["run_hops"]
