"""A small actor for the bus tests, run as a real process: ``python -m tests.support.programs.probe_actor --config <path>``.

It uses real message types, so everything on the wire is the production format. Environment knobs (tests pass
them through ``ActorProcess(env=...)``): ``PROBE_NAME`` (default ``probe``), ``PROBE_SERVICE`` (the bus endpoint
it serves, default ``monitor``, with its own key), ``PROBE_TOPICS`` (comma-separated prefixes, default
``alert.test``: an actor's key may publish there), ``PROBE_INBOX_SIZE`` (the bounded inbox), ``PROBE_STALL_ON_STOP`` (on_stop never returns: the stop budget must
still hold).

Requests:

* ``Kill(kill_id=k)`` -> ``Ack(detail=<executions of k>)``: a side effect counted per id (exactly-once checks);
* ``WaitOrder(timeout_s=t)`` -> ``Ack`` after ``t`` seconds of simulated work (a slow handler);
* ``GetSystemStatus`` -> the handler raises (error policy: ``Rejected(internal)``, counted, exit 70 when repeated);
* ``GetAccount`` -> the handler returns a request type, which is not a reply (a handler bug the service catches);
* ``Resume`` -> releases a consumer stalled by an ``Alert(message="stall")`` event;
* ``GetStatus`` -> ``ServiceStatus`` whose ``detail`` holds the counters below.

Events on its topics are counted; ``Alert(message="stall")`` blocks the consumer until ``Resume`` (so the inbox
fills), ``Alert(message="raise")`` makes ``on_event`` raise.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import Any

from bus import actor as actor_module
from bus.actor import Actor
from bus.config import KhazadConfig
from bus.messages import (
    Ack,
    Alert,
    GetAccount,
    GetStatus,
    GetSystemStatus,
    Kill,
    Ping,
    Resume,
    ServiceStatus,
    WaitOrder,
)
from bus.service import CallContext
from bus.runtime import main


#: How many of the latest executed ids the status detail names (besides every id executed more than once).
RECENT_EXECUTIONS = 32


class ProbeActor(Actor):
    """Test actor: counts what it executes and receives, and misbehaves on request."""

    def __init__(self, cfg: KhazadConfig) -> None:
        super().__init__(cfg, name=os.environ.get("PROBE_NAME", "probe"))
        self.service = os.environ.get("PROBE_SERVICE", "monitor")
        self.topics = tuple(t for t in os.environ.get("PROBE_TOPICS", "alert.test").split(",") if t)
        self.executions: Counter[str] = Counter()
        self.events = 0
        self.event_seqs: dict[str, int] = {}
        self.stall_on_stop = bool(os.environ.get("PROBE_STALL_ON_STOP"))
        self._release = asyncio.Event()

    def health_detail(self) -> dict[str, str]:
        detail = {
            "events": str(self.events),
            "executed_total": str(sum(self.executions.values())),
            "inbox": str(self.inbox.qsize() if self.inbox is not None else 0),
            "inbox_max": str(self.inbox.maxsize if self.inbox is not None else 0),
            "gaps": str(self.subscriber.tracker.gaps if self.subscriber is not None else 0),
            "rejected_frames": str(self.server.rejected_frames if self.server is not None else 0),
            "duplicates": str(self.server.duplicates if self.server is not None else 0),
            "pid": str(os.getpid()),
        }
        # a status detail is bounded (bus.messages.MAX_DETAIL_ENTRIES): every id executed more than once (what the
        # exactly-once checks look for), and the most recent others
        repeated = {k: v for k, v in self.executions.items() if v > 1}
        recent = [k for k in list(self.executions)[-RECENT_EXECUTIONS:] if k not in repeated]
        detail.update({f"executed:{k}": str(v) for k, v in repeated.items()})
        detail.update({f"executed:{k}": str(self.executions[k]) for k in recent})
        return detail

    async def on_request(self, ctx: CallContext, body: Any) -> Any:
        if isinstance(body, Kill):
            self.executions[body.kill_id] += 1
            return Ack(detail=str(self.executions[body.kill_id]))
        if isinstance(body, WaitOrder):
            self.executions[body.client_order_id] += 1
            await asyncio.sleep(body.timeout_s)  # simulated slow work, not synchronisation
            return Ack(detail=str(self.executions[body.client_order_id]))
        if isinstance(body, GetSystemStatus):
            raise RuntimeError("probe: induced handler failure")
        if isinstance(body, GetAccount):
            return Ping()  # a request is not a reply: the service must turn this into Rejected(internal)
        if isinstance(body, Resume):
            self._release.set()
            return Ack(detail="released")
        if isinstance(body, GetStatus):
            return ServiceStatus(actor=self.name, state=self.state.value, detail=self.status_detail())
        return await super().on_request(ctx, body)

    async def on_event(self, topic: str, env: Any) -> None:
        self.events += 1
        body = env.body
        if isinstance(body, Alert) and body.message == "stall":
            self._release.clear()
            await self._release.wait()  # stalled until a Resume request: the inbox fills behind us
        elif isinstance(body, Alert) and body.message == "raise":
            raise RuntimeError("probe: induced event failure")

    async def on_stop(self) -> None:
        if self.stall_on_stop:
            await asyncio.Event().wait()  # never returns: run() must bound on_stop by STOP_TIMEOUT_S


def build(cfg: KhazadConfig) -> ProbeActor:
    size = os.environ.get("PROBE_INBOX_SIZE")
    if size:
        actor_module.INBOX_SIZE = int(size)
    return ProbeActor(cfg)


if __name__ == "__main__":
    raise SystemExit(main(build, "probe"))
