"""Order entry: strategy SDK place -> ``Submitted`` seen by the strategy, through the order manager, the risk
governor, the gateway, ib_insync and the simulator; baseline: the same order placed with ib_insync directly
against the same simulator, in the same run.

Open-loop load: orders are sent at the target rate whatever the replies do (each order is its own task); each
order's place -> Submitted is measured with CLOCK_MONOTONIC. Both paths place the same resting limit order (BUY 1
AAPL far below the market: it works and never fills). Between steps every working order is cancelled (a
``reqGlobalCancel`` from the baseline's connection) and the next step starts from an empty book.

Rates above 50 msg/s exceed what IB accepts: for this benchmark only the gateway's pacing is raised
(``gateway.pacing_per_s = 10000``), the simulator's pacing limit is off and ib_insync's own throttle is off in the
baseline (``ib.client.MaxRequests = 0``). The figures measure Khazad's own overhead, not IB's budget.

**Max sustained rate**: the highest rate of the ladder (x1.5 steps from 100/s) at which the achieved rate
(Submitted seen / time from the first send to the last Submitted) is at least :data:`SUSTAIN_FRACTION` of the
offered rate, every order reached Submitted (no rejection, no timeout), and p99 stays under
:data:`SUSTAIN_P99_MS` (a queue that builds up makes p99 grow with the run length; this bounds it).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from bus.messages import BUSY_CODE
from bench.harness import (FAR_LIMIT, SIM_POLL_S, SYMBOL, CpuMeter, System, open_loop, summary_ms,
                           wait_until)

STRATEGY = "bench"
#: Ladder of offered rates (orders/s); 100 and 1000 are always measured for both paths.
LADDER = (100, 150, 225, 340, 500, 750, 1000, 1500, 2250, 3400, 5000)
REQUIRED_RATES = (100, 1000)
#: Below the ladder's first step (a system that cannot sustain 100/s): rates tried downwards until one passes.
LOW_LADDER = (67, 45, 30, 20, 10)
LOW_RATE_MIN_ORDERS = 100
SUSTAIN_FRACTION = 0.95
SUSTAIN_P99_MS = 50.0
#: After the last send, how long the orders still in flight may take before they count as lost.
DRAIN_TIMEOUT_S = 30.0
CLEANUP_TIMEOUT_S = 90.0
#: While orders keep arriving at the simulator during a cleanup, another global cancel after this long.
CLEANUP_RECANCEL_S = 2.0
SEQUENTIAL_WARMUP = 20
DIRECT_CLIENT_ID = 99


def sustained(step: dict[str, Any]) -> bool:
    return (step["achieved_per_s"] >= SUSTAIN_FRACTION * step["rate"] and step["failed"] == 0
            and step.get("errors_then_submitted", 0) == 0 and step["lost"] == 0
            and step["submitted"]["p99_ms"] <= SUSTAIN_P99_MS)


def _step_result(rate: float, n: int, offered_s: float, sent: dict[str, int], done: dict[str, int],
                 failed: dict[str, str], replied: dict[str, int] | None = None,
                 busy: set[str] | None = None) -> dict[str, Any]:
    lat = [done[k] - sent[k] for k in done if k in sent]
    first = min(sent.values()) if sent else 0
    last = max(done.values()) if done else first
    achieved = len(done) / ((last - first) / 1e9) if done and last > first else 0.0
    # an SDK error (e.g. a reply timeout) does not mean the order did not go through: those that still reached
    # Submitted are counted as such (and as errors seen by the strategy)
    errors_then_submitted = sum(1 for k in failed if k in done)
    out = {"rate": rate, "orders": n, "offered_s": round(offered_s, 3), "achieved_per_s": round(achieved, 1),
           "submitted": summary_ms(lat), "failed": len(failed) - errors_then_submitted,
           "errors_then_submitted": errors_then_submitted, "lost": n - len(done) - (len(failed) - errors_then_submitted),
           "failures": sorted(set(failed.values()))[:5]}
    if busy is not None:
        # refused for load (typed ``busy``, answered at once: overload is refused, not queued); among ``failed``
        out["busy"] = len(busy)
    if replied is not None:
        out["reply"] = summary_ms([replied[k] - sent[k] for k in replied if k in sent])
    out["sustained"] = sustained(out)
    return out


class KhazadPath:
    """The strategy side: an AsyncKhazadClient placing orders and watching ``order.bench``."""

    name = "khazad"

    def __init__(self, system: System) -> None:
        self.system = system
        self.client: Any = None
        self._watch: dict[str, int] = {}
        self._done: dict[str, int] = {}

    async def start(self) -> None:
        from sdk import AsyncKhazadClient

        self.client = await AsyncKhazadClient(STRATEGY, config=self.system.cfg, name="strategy.bench").start()
        self.client.on_order_update(self._on_update)

    def _on_update(self, update: Any) -> None:
        if update.order.status == "Submitted":
            coid = update.order.spec.client_order_id
            if coid in self._watch and coid not in self._done:
                self._done[coid] = time.monotonic_ns()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    def _spec(self, coid: str) -> Any:
        from bus.messages import Instrument, OrderSpec

        return OrderSpec(strategy_id=STRATEGY, client_order_id=coid, instrument=Instrument(symbol=SYMBOL),
                         side="BUY", quantity=1, order_type="LMT", limit_price=FAR_LIMIT)

    async def step(self, rate: float, n: int) -> dict[str, Any]:
        run = uuid.uuid4().hex[:8]
        sent: dict[str, int] = {}
        replied: dict[str, int] = {}
        failed: dict[str, str] = {}
        busy: set[str] = set()
        refused_at: dict[str, int] = {}
        self._watch, self._done = sent, {}
        client = self.client

        async def place(i: int) -> None:
            coid = f"{run}-{i}"
            spec = self._spec(coid)
            sent[coid] = time.monotonic_ns()
            try:
                await client.place_order(spec)
                replied[coid] = time.monotonic_ns()
            except Exception as exc:  # a rejection or a timeout is a result of the step, not a crash
                failed[coid] = f"{type(exc).__name__}: {exc}"[:200]
                if getattr(exc, "code", "") == BUSY_CODE:
                    busy.add(coid)
                    refused_at[coid] = time.monotonic_ns()

        cpu = CpuMeter({k: v for k, v in self.system.pids().items()}, "strategy")
        cpu.start()
        offered = await open_loop(rate, n, place)
        await _drain(lambda: len(self._done) + len(failed) >= n, lambda: len(self._done))
        out = _step_result(rate, n, offered, sent, dict(self._done), failed, replied, busy)
        out["cpu_ms_per_order"] = cpu.per_order_ms(n)
        # how long a refused order waited for its ``busy``: refused at once, or queued and then refused?
        out["busy_reply"] = summary_ms([refused_at[k] - sent[k] for k in refused_at if k in sent])
        out["risk_state_after"] = await self.restore_risk_state()
        return out

    async def restore_risk_state(self) -> str:
        """The governor's global state after a step. An overload can trip its disconnect breaker (the gateway's
        heartbeat late by more than ``heartbeat_liveness`` beats): that is reported with the step, and the state is
        set back to ACTIVE (an operator resume) so the next step measures the path again, not the breaker."""
        from cli.resume import send_resume
        from bus.messages import GetRiskState

        def ask() -> str:
            import zmq

            from bus.codec import Stamper
            from tests.support.clients import sync_client

            ctx = zmq.Context()
            cl = sync_client(ctx, self.system.cfg, "risk", stamper=Stamper("bench-risk"), timeout_s=5.0, retries=1)
            try:
                return cl.call(GetRiskState()).global_state
            finally:
                cl.close()
                ctx.destroy(linger=0)

        state = await asyncio.to_thread(ask)
        if state != "ACTIVE":
            await asyncio.to_thread(send_resume, self.system.cfg, reason="bench: after an overload step")
        return state

    async def sequential(self, n: int) -> dict[str, Any]:
        """One order in flight: place -> OrderReply (the three hops) and place -> Submitted."""
        run = uuid.uuid4().hex[:8]
        sent: dict[str, int] = {}
        self._watch, self._done = sent, {}
        replies: list[int] = []
        submitted: list[int] = []
        for i in range(SEQUENTIAL_WARMUP + n):
            coid = f"{run}-s{i}"
            t0 = time.monotonic_ns()
            sent[coid] = t0
            await self.client.place_order(self._spec(coid))
            t1 = time.monotonic_ns()
            await wait_until(lambda: coid in self._done, f"order {coid} Submitted", DRAIN_TIMEOUT_S)
            if i >= SEQUENTIAL_WARMUP:
                replies.append(t1 - t0)
                submitted.append(self._done[coid] - t0)
        return {"reply": summary_ms(replies), "submitted": summary_ms(submitted)}


class DirectPath:
    """The baseline: ib_insync in this process, its own client id, its throttle off, against the same simulator."""

    name = "ib_insync"

    def __init__(self, system: System) -> None:
        self.system = system
        self.ib: Any = None
        self.contract: Any = None
        self._watch: dict[str, int] = {}
        self._done: dict[str, int] = {}

    async def start(self) -> None:
        import ib_insync

        self.ib = ib_insync.IB()
        await self.ib.connectAsync("127.0.0.1", self.system.sim.port, clientId=DIRECT_CLIENT_ID, timeout=20)
        self.ib.client.MaxRequests = 0  # the library's 45/s throttle off, as in the gateway (see module doc)
        self.contract = ib_insync.Stock(SYMBOL, "SMART", "USD")
        await self.ib.qualifyContractsAsync(self.contract)
        self.ib.orderStatusEvent += self._on_status

    def _on_status(self, trade: Any) -> None:
        if trade.orderStatus.status == "Submitted":
            ref = trade.order.orderRef
            if ref in self._watch and ref not in self._done:
                self._done[ref] = time.monotonic_ns()

    async def close(self) -> None:
        if self.ib is not None:
            self.ib.disconnect()

    def place(self, ref: str) -> None:
        import ib_insync

        self.ib.placeOrder(self.contract, ib_insync.LimitOrder("BUY", 1, FAR_LIMIT, orderRef=ref, tif="DAY"))

    async def step(self, rate: float, n: int) -> dict[str, Any]:
        run = uuid.uuid4().hex[:8]
        sent: dict[str, int] = {}
        self._watch, self._done = sent, {}

        def send(i: int) -> None:
            ref = f"direct/{run}-{i}"
            sent[ref] = time.monotonic_ns()
            self.place(ref)

        cpu = CpuMeter({"sim": self.system.pids()["sim"]}, "ib_insync")
        cpu.start()
        offered = await open_loop(rate, n, send)
        await _drain(lambda: len(self._done) >= n, lambda: len(self._done))
        out = _step_result(rate, n, offered, sent, dict(self._done), {})
        out["cpu_ms_per_order"] = cpu.per_order_ms(n)
        return out

    async def sequential(self, n: int) -> dict[str, Any]:
        run = uuid.uuid4().hex[:8]
        sent: dict[str, int] = {}
        self._watch, self._done = sent, {}
        samples: list[int] = []
        for i in range(SEQUENTIAL_WARMUP + n):
            ref = f"direct/{run}-s{i}"
            t0 = sent[ref] = time.monotonic_ns()
            self.place(ref)
            await wait_until(lambda: ref in self._done, f"direct order {ref} Submitted", DRAIN_TIMEOUT_S)
            if i >= SEQUENTIAL_WARMUP:
                samples.append(self._done[ref] - t0)
        return {"submitted": summary_ms(samples)}

    async def working_at_ib(self, prefix: str = "") -> int:
        """Orders still working at the simulator, every client's (``reqAllOpenOrders`` over the TWS protocol: the
        simulator's own answer, and cheaper for it than its control API's full state)."""
        trades = await asyncio.wait_for(self.ib.reqAllOpenOrdersAsync(), CLEANUP_TIMEOUT_S)
        return sum(1 for t in trades if t.order.orderRef.startswith(prefix)
                   and t.orderStatus.status not in ("Cancelled", "ApiCancelled", "Filled", "Inactive"))

    async def cancel_everything(self) -> None:
        """reqGlobalCancel (every client's orders at the simulator), then wait for an empty book everywhere."""
        self.ib.reqGlobalCancel()
        await asyncio.sleep(SIM_POLL_S)  # let the first cancel land before counting (cleanup, not measured)
        await cleanup_wait(self.system, self)


async def _drain(finished: Any, progress: Any) -> None:
    """Wait for the in-flight orders of a step; give up after DRAIN_TIMEOUT_S without progress."""
    last, last_change = progress(), time.monotonic()
    while not finished():
        await asyncio.sleep(0.01)  # bounded wait for other processes' replies (progress-based timeout below)
        now = progress()
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > DRAIN_TIMEOUT_S:
            return


#: Anything a cleanup could not clear (reported in the results: it is a finding, not a benchmark error).
CLEANUP_ISSUES: list[dict[str, Any]] = []


async def cleanup_wait(system: System, direct: DirectPath) -> None:
    """Until nothing works at the simulator and the order manager has no working or in-flight order: global
    cancels (repeated while orders keep arriving: after an overload the order manager still places requests the
    strategy already gave up on), and a kill + resume for what a global cancel leaves (sticky orders). What does
    not clear within CLEANUP_TIMEOUT_S is recorded in CLEANUP_ISSUES (with the order manager's view) and the run
    goes on; so are orders that reached the simulator after their step ended."""
    import zmq.asyncio

    from bus.codec import Stamper
    from cli.kill import send_kill
    from cli.resume import send_resume
    from bus.messages import GetStatus
    from bus.async_client import AsyncClient
    from bus.retry import RequestTimeout

    ctx = zmq.asyncio.Context()
    from tests.support.clients import security, server_key

    sec = security(system.cfg)  # the operator's key (the bus is authenticated)
    cl = AsyncClient(ctx, system.cfg.bus.orders, service="orders", stamper=Stamper("bench-cleanup"), timeout_s=5.0,
                     retries=0, security=sec, server_key=server_key(sec, "orders"))
    detail: dict[str, str] = {}
    start = time.monotonic()
    last_cancel = start
    killed = False
    late = 0
    try:
        while True:
            at_sim = await direct.working_at_ib()
            idle = True
            if "orders" in system.procs:
                try:
                    st = await cl.call(GetStatus())
                    detail = dict(st.detail)
                    idle = st.detail.get("working") == "0" and st.detail.get("inflight") == "0"
                except RequestTimeout:
                    idle = False
            if at_sim == 0 and idle:
                break
            now = time.monotonic()
            if now - start > CLEANUP_TIMEOUT_S:
                CLEANUP_ISSUES.append({"what": "not clean after the cleanup bound", "working_at_sim": at_sim,
                                       "orders_detail": detail})
                break
            if at_sim and now - last_cancel > CLEANUP_RECANCEL_S:
                if now - start > CLEANUP_TIMEOUT_S / 3 and not killed:  # global cancels do not clear them: sticky
                    kill = await asyncio.to_thread(send_kill, system.cfg, reason="bench cleanup")
                    await asyncio.to_thread(send_resume, system.cfg, reason="bench cleanup done")
                    CLEANUP_ISSUES.append({"what": "left working after global cancels, cleared with a kill",
                                           "working_at_sim": at_sim, "kill_exit": kill.exit_code})
                    killed = True
                else:
                    late += at_sim
                    direct.ib.reqGlobalCancel()
                last_cancel = time.monotonic()
            await asyncio.sleep(SIM_POLL_S)  # bounded poll of other processes' state (cleanup, not measured)
    finally:
        cl.close()
        ctx.destroy(linger=0)
    if late:
        CLEANUP_ISSUES.append({"what": "orders reached the simulator after a global cancel (placed late)",
                               "count_upper_bound": late})


def orders_for(rate: float, quick: bool) -> int:
    """Orders of one step: ``seconds`` of load; the reported rates (REQUIRED_RATES) get at least ``minimum`` for a
    meaningful p99.9, ladder steps below 100/s at least LOW_RATE_MIN_ORDERS."""
    seconds, minimum = (2.0, 200) if quick else (5.0, 1000)
    return max(minimum if rate in REQUIRED_RATES else LOW_RATE_MIN_ORDERS, int(rate * seconds))


async def run_order_entry(system: System, *, quick: bool, log: Any = print) -> dict[str, Any]:
    khazad, direct = KhazadPath(system), DirectPath(system)
    CLEANUP_ISSUES.clear()
    await direct.start()
    await khazad.start()
    out: dict[str, Any] = {"criterion": {"achieved_fraction": SUSTAIN_FRACTION, "p99_ms_max": SUSTAIN_P99_MS,
                                         "no_failures": True}, "ladder": list(LADDER)}
    try:
        steps: dict[str, dict[int, dict[str, Any]]] = {"khazad": {}, "ib_insync": {}}
        for path in (khazad, direct):
            mine = steps[path.name]
            for rate in LADDER:
                res = await path.step(rate, orders_for(rate, quick))
                await direct.cancel_everything()
                mine[rate] = res
                log(f"  order entry {path.name:<9} {rate:>5}/s: achieved {res['achieved_per_s']:>7.1f}/s  p50 "
                    f"{res['submitted']['p50_ms']:.2f} ms  p99 {res['submitted']['p99_ms']:.2f} ms  failed "
                    f"{res['failed']} (busy {res.get('busy', 0)}) lost {res['lost']}  "
                    f"{'ok' if res['sustained'] else 'NOT sustained'}"
                    + (f"  e.g. {res['failures'][0]}" if res["failures"] else ""))
                if not res["sustained"]:  # past its maximum: only the required rates are still measured
                    for req in REQUIRED_RATES:
                        if req > rate and req not in mine:
                            mine[req] = await path.step(req, orders_for(req, quick))
                            await direct.cancel_everything()
                            log(f"  order entry {path.name:<9} {req:>5}/s: achieved "
                                f"{mine[req]['achieved_per_s']:>7.1f}/s  p99 {mine[req]['submitted']['p99_ms']:.2f} ms"
                                f"  failed {mine[req]['failed']} (busy {mine[req].get('busy', 0)}, answered in p99 "
                                f"{mine[req].get('busy_reply', {}).get('p99_ms', float('nan')):.2f} ms) lost {mine[req]['lost']}")
                    break
            if not any(s["sustained"] for s in mine.values()):
                for rate in LOW_LADDER:  # not even 100/s: find the rate it does sustain
                    mine[rate] = res = await path.step(rate, orders_for(rate, quick))
                    await direct.cancel_everything()
                    log(f"  order entry {path.name:<9} {rate:>5}/s: achieved {res['achieved_per_s']:>7.1f}/s  p50 "
                        f"{res['submitted']['p50_ms']:.2f} ms  p99 {res['submitted']['p99_ms']:.2f} ms  "
                        f"{'ok' if res['sustained'] else 'NOT sustained'}")
                    if res["sustained"]:
                        break
        k_max = max((r for r, s in steps["khazad"].items() if s["sustained"]), default=None)
        d_max = max((r for r, s in steps["ib_insync"].items() if s["sustained"]), default=None)
        if k_max is not None and k_max not in steps["ib_insync"]:
            steps["ib_insync"][k_max] = await direct.step(k_max, orders_for(k_max, quick))
            await direct.cancel_everything()
        out["khazad"] = {str(r): s for r, s in sorted(steps["khazad"].items())}
        out["ib_insync"] = {str(r): s for r, s in sorted(steps["ib_insync"].items())}
        out["max_sustained"] = {"khazad": k_max, "ib_insync": d_max}
        n_seq = 100 if quick else 300
        out["sequential"] = {"orders": n_seq, "khazad": await khazad.sequential(n_seq),
                             "ib_insync": await direct.sequential(n_seq)}
        await direct.cancel_everything()
        out["cleanup_issues"] = list(CLEANUP_ISSUES)
    finally:
        await khazad.close()
        await direct.close()
    return out


__all__ = ["run_order_entry", "KhazadPath", "DirectPath", "cleanup_wait", "sustained", "LADDER"]
