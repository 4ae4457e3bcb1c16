"""Who gets served: a service's in-flight limits, per caller and in total, and its saturation.

Every request a service starts holds one unit of two limits: its caller's own, and the service's shared pool.
Long waits (``WaitOrder``: answered from order events, they hold nothing while they wait but a future) have their
own pools, so a thousand of them never take a slot another caller needs. A request over a limit is refused at
once with ``Rejected(busy)``: never queued (the receive loop never blocks, so one caller cannot stall the others)
and never silently dropped. Status probes and the commands that make things safer (kills, cancels) are admitted
past a full shared pool, never past their caller's own limit.

A caller is the authenticated identity (the CURVE key's User-Id) when the bus has one, else the connection (its
ROUTER routing id): what a message claims about its sender never decides whose limit it counts against.

The service reports itself saturated (:meth:`Admission.saturation`) while a pool or a caller is at its limit, and
for :data:`SATURATION_HOLD_S` after a refusal: heartbeats carry it, the monitor shows the actor DEGRADED.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

#: Defaults (config: bus.max_inflight, bus.max_inflight_per_caller, bus.max_waits, bus.max_waits_per_caller).
DEFAULT_MAX_INFLIGHT = 1000
DEFAULT_MAX_INFLIGHT_PER_CALLER = 256
DEFAULT_MAX_WAITS = 4096
DEFAULT_MAX_WAITS_PER_CALLER = 256
#: Default of ``orders.max_placements_in_flight``: new orders beyond this many placements in flight are refused
#: ``busy``. Each placement waits behind the others for the governor and the gateway, so this bounds the queueing an
#: order meets at the order manager to this many placements at the chain's maximum rate (32 / ~200 per s, ~160 ms
#: on the 2-core build VM), never seconds; a lower bound queues less but refuses bursts a strategy may send.
DEFAULT_MAX_PLACEMENTS_IN_FLIGHT = 32
#: A service counts as saturated this long after it last refused a request for load.
SATURATION_HOLD_S = 2.0

#: How a request is admitted: a normal request, one admitted past a full shared pool, a long wait.
NORMAL, PRIORITY, WAIT = "normal", "priority", "wait"


@dataclass(frozen=True, slots=True)
class Limits:
    """The four limits of one service."""

    inflight: int = DEFAULT_MAX_INFLIGHT
    inflight_per_caller: int = DEFAULT_MAX_INFLIGHT_PER_CALLER
    waits: int = DEFAULT_MAX_WAITS
    waits_per_caller: int = DEFAULT_MAX_WAITS_PER_CALLER


class Admission:
    """In-flight counts by caller and in total (one owner: the service's loop)."""

    def __init__(self, limits: Limits = Limits(), clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self.inflight = 0
        self.waits = 0
        self._inflight_by: dict[bytes, int] = {}
        self._waits_by: dict[bytes, int] = {}
        #: the name each caller last gave (its envelope's sender), for the saturation report
        self._names: dict[bytes, str] = {}
        self.refused = 0
        self._last_refusal = float("-inf")
        self._last_refusal_why = ""

    def refusal(self, caller: bytes, kind: str) -> str | None:
        """Why a request of ``kind`` from ``caller`` cannot start now, or None."""
        lim = self.limits
        if kind == WAIT:
            if self._waits_by.get(caller, 0) >= lim.waits_per_caller:
                return f"caller at its limit of {lim.waits_per_caller} waiting requests"
            if self.waits >= lim.waits:
                return f"service at its limit of {lim.waits} waiting requests"
            return None
        if self._inflight_by.get(caller, 0) >= lim.inflight_per_caller:
            return f"caller at its limit of {lim.inflight_per_caller} requests in flight"
        if kind == NORMAL and self.inflight >= lim.inflight:
            return f"service at its limit of {lim.inflight} requests in flight"
        return None

    def start(self, caller: bytes, kind: str, name: str) -> None:
        counts = self._waits_by if kind == WAIT else self._inflight_by
        counts[caller] = counts.get(caller, 0) + 1
        if kind == WAIT:
            self.waits += 1
        else:
            self.inflight += 1
        self._names[caller] = name

    def finish(self, caller: bytes, kind: str) -> None:
        counts = self._waits_by if kind == WAIT else self._inflight_by
        left = counts.get(caller, 0) - 1
        if left > 0:
            counts[caller] = left
        else:
            counts.pop(caller, None)
            if caller not in self._inflight_by and caller not in self._waits_by:
                self._names.pop(caller, None)
        if kind == WAIT:
            self.waits -= 1
        else:
            self.inflight -= 1

    def refused_now(self, caller: bytes, why: str, name: str) -> None:
        self.refused += 1
        self._last_refusal = self.clock()
        self._last_refusal_why = f"{name or '?'}: {why}"

    def saturation(self) -> str:
        """Why the service is saturated now ("" when it is not)."""
        lim = self.limits
        if self.inflight >= lim.inflight:
            return f"{self.inflight} requests in flight (limit {lim.inflight})"
        if self.waits >= lim.waits:
            return f"{self.waits} waiting requests (limit {lim.waits})"
        for counts, limit, what in (
            (self._inflight_by, lim.inflight_per_caller, "requests in flight"),
            (self._waits_by, lim.waits_per_caller, "waiting requests"),
        ):
            for caller, n in counts.items():
                if n >= limit:
                    return f"{self._names.get(caller, '?')} at its limit of {limit} {what}"
        if self.clock() - self._last_refusal < SATURATION_HOLD_S:
            return f"refusing for load ({self._last_refusal_why})"
        return ""

    def detail(self) -> dict[str, str]:
        """Facts for the heartbeat and status ``detail`` (``saturated`` only while it is)."""
        lim = self.limits
        out = {
            "requests": f"{self.inflight}/{lim.inflight}",
            "waits": f"{self.waits}/{lim.waits}",
            "busy": str(self.refused),
        }
        why = self.saturation()
        if why:
            out["saturated"] = why
        return out
