"""Kill switch: ``khazad kill`` from another process -> the simulator's last ``Cancelled``, with N working orders
(10% of them sticky PreSubmitted: they ignore reqGlobalCancel, IB's known gap), while a strategy process floods
market-data subscribe/unsubscribe requests; and the time until every actor has seen the halt.

* Orders are placed through the real chain (SDK -> order manager -> risk -> gateway -> simulator) as resting
  limit orders far below the market, then ``python -m cli kill --json`` runs as a separate process.
* **kill -> last Cancelled**: from the kill command's send time (the earliest ``mono_ns`` stamp of the CLI's
  envelopes that reached an actor) to the latest ``completedAt`` of the batch in the simulator's ground truth
  (its realtime clock is the wall clock, converted to CLOCK_MONOTONIC). The CLI's own wall time (process start,
  imports and the gateway's confirmation included) is reported separately.
* **halt seen**: every actor records when it first saw the kill (the direct request or the ``control.kill``
  broadcast; ``kill_seen``/``kill_sent`` in its heartbeat detail, see ``bus/actor.py``); per actor and the max
  over actors, from the same send time.
* **baseline** (the simulator's own cancel floor): the same N orders (same sticky share) placed by ib_insync
  directly; then ``reqGlobalCancel()`` plus ``cancelOrder`` for each sticky order (known to the baseline), at once.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

from bench.bus_watch import BusWatch
from bench.harness import ACTORS, FAR_LIMIT, REPO, SIM_POLL_S, Child, System, percentile, summary_ms, wait_until
from bench.order_entry import CLEANUP_ISSUES, DirectPath, KhazadPath, cleanup_wait
from bus import topics

STICKY_FRACTION = 0.1
#: Orders the kill's set-up places at once: below the order manager's ``orders.max_placements_in_flight`` (32), as a
#: strategy that respects it does (beyond it the order manager refuses ``busy``, it does not queue).
PLACE_CONCURRENCY = 16
HALT_SEEN_TIMEOUT_S = 10.0
CLI_TIMEOUT_S = 120.0
#: Further kills (in-process send_kill) when one was not confirmed, as an operator would re-run it.
EXTRA_KILLS = 3


def _sticky(n: int) -> int:
    return max(1, int(n * STICKY_FRACTION))


class HeartbeatWatch(BusWatch):
    """Latest heartbeat detail of every actor (a bus Subscriber on ``hb.`` in this process)."""

    def __init__(self, system: System) -> None:
        super().__init__(system, [topics.HEARTBEAT_PREFIX], "bench-hb")
        self.latest: dict[str, dict[str, str]] = {}

    def on_event(self, topic: str, env: Any) -> None:
        from bus.messages import Heartbeat

        if isinstance(env.body, Heartbeat):
            self.latest[env.body.actor] = env.body.detail

    def seen(self, kill_id: str) -> dict[str, tuple[int, int]] | None:
        """{actor: (seen_ns, sent_ns)} once every actor reports ``kill_id``, else None."""
        out = {}
        for actor in ACTORS:
            if actor not in self.system.procs:
                continue
            d = self.latest.get(actor, {})
            seen = d.get("kill_seen", "")
            if not seen.startswith(kill_id + "@"):
                return None
            out[actor] = (int(seen.rsplit("@", 1)[1]), int(d.get("kill_sent", "0") or 0))
        return out


def _last_cancel(system: System, prefix: str) -> tuple[int | None, int, int]:
    """(latest completedAt of the batch on CLOCK_MONOTONIC, orders of the batch, still working)."""
    orders = [o for o in system.sim_orders().values() if o["orderRef"].startswith(prefix)]
    working = sum(1 for o in orders if o["status"] not in ("Cancelled", "ApiCancelled", "Filled", "Inactive"))
    done = [o["completedAt"] for o in orders if o.get("completedAt") is not None and o["status"] == "Cancelled"]
    return (system.wall_to_mono_ns(max(done)) if done else None), len(orders), working


async def _working_is(direct: DirectPath, prefix: str, n: int) -> bool:
    return await direct.working_at_ib(prefix) == n


async def _khazad_kill(system: System, khazad: KhazadPath, direct: DirectPath, hb: HeartbeatWatch,
                       n: int) -> dict[str, Any]:
    from cli.kill import send_kill
    from cli.resume import send_resume

    run = uuid.uuid4().hex[:8]
    sticky = _sticky(n)
    await asyncio.to_thread(system.sim.call, "sticky_presubmitted", n=sticky)
    sem = asyncio.Semaphore(PLACE_CONCURRENCY)

    async def place(i: int) -> None:
        async with sem:
            await khazad.client.place_order(khazad._spec(f"{run}-k{i}"))

    await asyncio.gather(*(place(i) for i in range(n)))
    prefix = f"bench/{run}-"
    await wait_until(lambda: _working_is(direct, prefix, n), f"{n} orders working at the simulator",
                     interval=SIM_POLL_S)
    t_spawn = time.monotonic_ns()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "--config", str(system.config_path), "kill", "--reason", "bench", "--json",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT_S)
    t_exit = time.monotonic_ns()
    doc = json.loads(out.decode() or "{}")
    kill_id = doc.get("command", {}).get("kill_id", "")
    seen = await wait_until(lambda: hb.seen(kill_id), "every actor reporting the kill", HALT_SEEN_TIMEOUT_S)
    sent = min(s for _, s in seen.values() if s > 0)
    last_mono, total, working = await asyncio.to_thread(_last_cancel, system, prefix)
    extra_kills: list[str] = []
    while working and len(extra_kills) < EXTRA_KILLS:  # what an operator does when a kill is not confirmed
        again = await asyncio.to_thread(send_kill, system.cfg, reason="bench: kill not confirmed, again")
        extra_kills.append(f"exit {again.exit_code}: {again.gateway.detail}"[:300])
        _, _, working_now = await asyncio.to_thread(_last_cancel, system, prefix)
        if working_now == 0:
            break
    resumed = await asyncio.to_thread(send_resume, system.cfg, reason="bench: next kill")
    gw = doc.get("gateway", {}).get("reply") or {}
    return {"orders": n, "sticky": sticky, "cli_exit": proc.returncode, "confirmed": doc.get("confirmed", False),
            "cli_wall_ms": (t_exit - t_spawn) / 1e6, "cli_elapsed_ms": doc.get("elapsed_s", 0.0) * 1000,
            "spawn_to_send_ms": (sent - t_spawn) / 1e6,
            "to_last_cancel_ms": (last_mono - sent) / 1e6 if last_mono is not None else None,
            "gateway_elapsed_ms": gw.get("elapsed_ms"), "cancelled": gw.get("cancelled"),
            # the CLI dials every leg at once and sends each when its connection is up (cli.kill): how long that took
            "gateway_connect_ms": doc.get("gateway", {}).get("connect_ms"),
            "risk_connect_ms": doc.get("risk", {}).get("connect_ms"),
            "working_after": working, "orders_at_sim": total,
            "halt_seen_ms": {actor: (s - sent) / 1e6 for actor, (s, _) in seen.items()},
            "resumed": resumed.exit_code == 0, "extra_kills": extra_kills,
            "gateway_detail": doc.get("gateway", {}).get("detail", "")[:300], "stderr": err.decode()[-300:] if proc.returncode else ""}


async def _direct_kill(system: System, direct: DirectPath, n: int) -> dict[str, Any]:
    import ib_insync

    run = uuid.uuid4().hex[:8]
    sticky = _sticky(n)
    await asyncio.to_thread(system.sim.call, "sticky_presubmitted", n=sticky)
    prefix = f"direct/{run}-"
    trades = [direct.ib.placeOrder(direct.contract, ib_insync.LimitOrder("BUY", 1, FAR_LIMIT, orderRef=f"{prefix}{i}"))
              for i in range(n)]
    await wait_until(lambda: _working_is(direct, prefix, n), f"{n} direct orders working at the simulator",
                     interval=SIM_POLL_S)
    t0 = time.monotonic_ns()
    direct.ib.reqGlobalCancel()
    for trade in trades[:sticky]:  # the first `sticky` orders after the fault call are the sticky ones
        direct.ib.cancelOrder(trade.order)
    await wait_until(lambda: all(t.orderStatus.status == "Cancelled" for t in trades), "direct cancels", 60)
    t_seen = time.monotonic_ns()
    last_mono, total, working = await asyncio.to_thread(_last_cancel, system, prefix)
    return {"orders": n, "sticky": sticky, "to_last_cancel_ms": (last_mono - t0) / 1e6 if last_mono else None,
            "client_saw_all_ms": (t_seen - t0) / 1e6, "working_after": working}


#: At least this many kills per run (``--quick`` too), so that the halt-seen p99 is a p99 of something (issue 18).
MIN_KILLS = 20


async def run_kill(system: System, *, quick: bool, log: Any = print,
                   sizes: tuple[int, ...] = (10, 100, 1000)) -> dict[str, Any]:
    repeats = {n: (3 if n <= 10 else 2 if n <= 100 else 1) if quick else (10 if n <= 10 else 5 if n <= 100 else 3)
               for n in sizes}
    short = MIN_KILLS - sum(repeats.values())
    if short > 0 and sizes:  # the halt-seen p99 needs enough kills: the smallest (cheapest) size makes them up
        repeats[min(sizes)] += short
    flood = Child("md-flood", "--config", str(system.config_path))
    khazad, direct, hb = KhazadPath(system), DirectPath(system), HeartbeatWatch(system)
    CLEANUP_ISSUES.clear()
    out: dict[str, Any] = {"sticky_fraction": STICKY_FRACTION, "repeats": {str(k): v for k, v in repeats.items()}}
    try:
        flood.expect("ready")
        await direct.start()
        await khazad.start()
        await hb.start()
        kills: list[dict[str, Any]] = []
        base: list[dict[str, Any]] = []
        for n in sizes:
            for _ in range(repeats[n]):
                k = await _khazad_kill(system, khazad, direct, hb, n)
                kills.append(k)
                log(f"  kill {n:>5} orders: kill->last Cancelled {k['to_last_cancel_ms']} ms, CLI wall "
                    f"{k['cli_wall_ms']:.0f} ms, halt seen max {max(k['halt_seen_ms'].values()):.2f} ms "
                    f"({', '.join(f'{a} {v:.2f}' for a, v in k['halt_seen_ms'].items())}), working after "
                    f"{k['working_after']}, exit {k['cli_exit']}")
                await cleanup_wait(system, direct)
            for _ in range(max(1, repeats[n] // 2)):
                b = await _direct_kill(system, direct, n)
                base.append(b)
                log(f"  kill {n:>5} orders, ib_insync direct: last Cancelled {b['to_last_cancel_ms']} ms")
                await cleanup_wait(system, direct)
        flood.tell("stop")
        out["flood"] = flood.result()
        out["runs"] = kills
        out["baseline_runs"] = base
        out["by_size"] = {}
        for n in sizes:
            ks = [k for k in kills if k["orders"] == n]
            bs = [b for b in base if b["orders"] == n]
            out["by_size"][str(n)] = {
                "khazad_to_last_cancel": summary_ms([k["to_last_cancel_ms"] * 1e6 for k in ks
                                                     if k["to_last_cancel_ms"] is not None]),
                "baseline_to_last_cancel": summary_ms([b["to_last_cancel_ms"] * 1e6 for b in bs
                                                       if b["to_last_cancel_ms"] is not None]),
                "cli_wall": summary_ms([k["cli_wall_ms"] * 1e6 for k in ks]),
                "working_after": sum(k["working_after"] for k in ks), "all_confirmed": all(k["confirmed"] for k in ks),
                "unconfirmed": sum(1 for k in ks if not k["confirmed"]), "kills": len(ks),
            }
        per_actor = {a: [k["halt_seen_ms"][a] for k in kills if a in k["halt_seen_ms"]] for a in ACTORS}
        out["halt_seen"] = {a: summary_ms([v * 1e6 for v in vals]) for a, vals in per_actor.items() if vals}
        out["halt_seen"]["all_actors"] = summary_ms([max(k["halt_seen_ms"].values()) * 1e6 for k in kills])
        out["cli_connect"] = {leg: summary_ms([k[f"{leg}_connect_ms"] * 1e6 for k in kills
                                               if k.get(f"{leg}_connect_ms") is not None])
                              for leg in ("gateway", "risk")}
        out["cleanup_issues"] = list(CLEANUP_ISSUES)
        out["halt_seen_p99_ms"] = percentile([max(k["halt_seen_ms"].values()) for k in kills], 0.99)
    finally:
        flood.stop()
        await hb.close()
        await khazad.close()
        await direct.close()
    return out
