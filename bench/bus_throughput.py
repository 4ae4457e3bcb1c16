"""Bus throughput: events/s through the proxy with msgspec envelopes, one and four publishers, and market-data
fan-out to 1, 4 and 8 strategy processes; baseline: raw pyzmq PUB/SUB through a bare libzmq XSUB/XPUB proxy with
the same payload bytes, measured in the same run.

* **Khazad**: ``python -m bus.proxy``; publisher processes call :meth:`bus.pubsub.Publisher.publish` (stamp +
  msgspec encode per event); subscriber processes use the asyncio :class:`bus.pubsub.Subscriber` that actors and
  the SDK use (decode + per-sender sequence check per event).
* **raw pyzmq**: ``zmq.proxy(XSUB, XPUB)`` in its own process; publishers send the pre-encoded envelope bytes of
  the same tick; subscribers ``recv_multipart`` without decoding.

Publishers blast (after a ready handshake); a subscriber's rate is delivered / (last arrival - first arrival).
With several subscribers the figure is the aggregate: all deliveries / (last arrival anywhere - first arrival
anywhere). Same high-water marks on both sides; events dropped at a high-water mark are reported (the bus numbers
them, so Khazad's loss is exact; raw loss = expected - delivered).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench.harness import READY_TIMEOUT_S, Child, free_ports
from bus import topics

#: (label, publishers, subscribers)
CASES = (("1 pub -> 1 sub", 1, 1), ("4 pub -> 1 sub", 4, 1), ("md fan-out -> 4 strategies", 1, 4),
         ("md fan-out -> 8 strategies", 1, 8))
HWM = 100_000
RESULT_TIMEOUT_S = 120.0


class _Proxy:
    def __init__(self, tmp: Path, raw: bool) -> None:
        self.raw = raw
        if raw:
            front, back = free_ports(2)
            self.frontend, self.backend = f"tcp://127.0.0.1:{front}", f"tcp://127.0.0.1:{back}"
            self.child: Any = Child("raw-proxy", "--frontend", self.frontend, "--backend", self.backend,
                                    "--hwm", str(HWM))
            self.child.expect("ready")
            self.proc = None
            self.config: Path | None = None
        else:
            import zmq

            from tests.support.clients import sync_subscriber
            from tests.support.config import cfg_of, write_config
            from tests.support.processes import ActorProcess

            tmp.mkdir(parents=True, exist_ok=True)
            path = write_config(tmp)
            self.config = path
            cfg = cfg_of(path)
            self.frontend, self.backend = cfg.bus.proxy_frontend, cfg.bus.proxy_backend
            self.proc = ActorProcess("bus.proxy", path, name="proxy", env={"KHAZAD__LOGGING__LEVEL": "WARNING"})
            self.proc.start()
            ctx = zmq.Context()
            sub = sync_subscriber(ctx, cfg, [topics.heartbeat("proxy")], name="bench-proxy-ready")
            try:
                if sub.recv(READY_TIMEOUT_S) is None:
                    raise TimeoutError(f"bus proxy did not come up:\n{self.proc.log()}")
            finally:
                sub.close()
                ctx.destroy(linger=0)
            self.child = None

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
        if self.proc is not None:
            self.proc.stop()


def run_case(tmp: Path, events: int, publishers: int, subscribers: int, raw: bool) -> dict[str, Any]:
    proxy = _Proxy(tmp, raw)
    subs: list[Child] = []
    pubs: list[Child] = []
    flag = ["--raw"] if raw else []
    ends = ["--frontend", proxy.frontend, "--backend", proxy.backend, "--hwm", str(HWM)]
    if proxy.config is not None:  # the Khazad proxy on the authenticated bus: each child with its key
        ends += ["--config", str(proxy.config)]
    per = events // publishers
    try:
        subs = [Child("subscriber", *ends, "--name", f"s{i}", "--count", str(per * publishers), *flag)
                for i in range(subscribers)]
        for s in subs:
            s.expect("ready", READY_TIMEOUT_S)
        pubs = [Child("publisher", *ends, "--name", f"p{i}", "--count", str(per), *flag) for i in range(publishers)]
        for p in pubs:
            p.expect("ready", READY_TIMEOUT_S)
        for p in pubs:
            p.tell("go")
        published = [p.result(RESULT_TIMEOUT_S) for p in pubs]
        got = [s.result(RESULT_TIMEOUT_S) for s in subs]
    finally:
        for c in pubs + subs:
            c.stop()
        proxy.stop()
    delivered = sum(g["delivered"] for g in got)
    first = min(g["first"] for g in got if g["delivered"])
    last = max(g["last"] for g in got if g["delivered"])
    per_sub = [g["delivered"] / (g["last"] - g["first"]) if g["delivered"] > 1 and g["last"] > g["first"] else 0.0
               for g in got]
    expected = per * publishers * subscribers
    return {"publishers": publishers, "subscribers": subscribers, "expected": expected, "delivered": delivered,
            "lost": expected - delivered, "missed_by_seq": sum(g["missed"] or 0 for g in got) if not raw else None,
            "events_per_s": delivered / (last - first) if last > first else 0.0,
            "slowest_subscriber_per_s": min(per_sub), "publish_per_s": sum(
                p["published"] / p["publish_s"] for p in published if p["publish_s"] > 0)}


def run_bus(tmp: Path, *, quick: bool, log: Any = print) -> dict[str, Any]:
    from bench.roles import bench_tick
    from bus.codec import Stamper, event_codec

    events = 50_000 if quick else 200_000
    repeat = 1 if quick else 2
    payload = len(event_codec().encode(Stamper("p0").stamp(bench_tick(), key=topics.market_data("AAPL"))))
    out: dict[str, Any] = {"events_per_case": events, "payload_bytes": payload, "repeat": repeat, "cases": {}}
    for label, pubs, subs in CASES:
        row: dict[str, Any] = {}
        for raw in (False, True):
            runs = [run_case(tmp, events, pubs, subs, raw) for _ in range(repeat)]
            row["raw" if raw else "khazad"] = max(runs, key=lambda r: r["events_per_s"]) | {"runs": len(runs)}
        k, r = row["khazad"]["events_per_s"], row["raw"]["events_per_s"]
        row["pct_of_raw"] = 100.0 * k / r if r else float("nan")
        out["cases"][label] = row
        log(f"  bus {label:<28} khazad {k:>10,.0f}/s  raw {r:>10,.0f}/s  {row['pct_of_raw']:5.1f}%  "
            f"(lost khazad {row['khazad']['lost']}, raw {row['raw']['lost']})")
        sys.stdout.flush()
    return out
