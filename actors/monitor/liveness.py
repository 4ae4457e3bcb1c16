"""Who is alive: the monitor's view of every actor's heartbeats, goodbyes, deaths, restarts and memory.

:class:`LivenessWatch` feeds each ``hb.<actor>`` into a :class:`~bus.heartbeat.LivenessTracker` and turns its
transitions into alerts and audit rows, once per transition (see :mod:`actors.monitor.actor`).
"""

from __future__ import annotations

import os
from typing import Any

from loguru import logger

from actors.monitor import audit as A
from actors.monitor.metrics import MonitorMetrics
from actors.monitor.reporting import AlertDesk
from bus.heartbeat import LivenessTracker, PeerLiveness
from bus.messages import DEGRADED_STATE, LEFT_STATE, MAX_ACTORS, Heartbeat

#: An expected actor that has not reported this long after the monitor started is alerted (once).
STARTUP_GRACE_S = 20.0
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_rss(pid: int) -> int | None:
    """Resident set size of a local process in bytes (None when it is not readable/not here)."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def shown_state(peer: PeerLiveness) -> str:
    """LEFT (said goodbye), DEAD (went silent), DEGRADED (alive, its service saturated), else its own."""
    if peer.left:
        return LEFT_STATE
    if not peer.alive:
        return "DEAD"
    return DEGRADED_STATE if peer.detail.get("saturated") else peer.state


class LivenessWatch:
    """Heartbeats in, liveness alerts out: deaths, returns, restarts, goodbyes, never-seen actors, and RSS.

    ``tracker`` is public and replaceable (tests drive it with their own clock).
    """

    def __init__(self, tracker: LivenessTracker, expected: list[str], desk: AlertDesk, metrics: MonitorMetrics) -> None:
        self.tracker = tracker
        self.expected = expected
        self.desk = desk
        self.metrics = metrics
        self.rss: dict[str, int] = {}
        self._never_seen_alerted: set[str] = set()

    def names(self) -> list[str]:
        """The expected actors first (in their configured order), then every other peer seen, sorted."""
        names = list(self.expected)
        names += sorted(n for n in self.tracker.peers if n not in names)
        return names

    def beat(self, name: str, env: Any, hb: Heartbeat) -> bool:
        """Record a heartbeat (not a goodbye); True when the peer (re)appeared or restarted (its state may be new)."""
        before = self.tracker.peers.get(name)
        restarted = before is not None and before.alive and before.incarnation != env.incarnation
        old_pid = before.pid if before is not None else 0
        revived = self.tracker.beat(
            name, interval_s=hb.interval_s, state=hb.state, pid=hb.pid, incarnation=env.incarnation, detail=hb.detail
        )
        if revived is not None:
            if revived.deaths:
                self.desk.audit(
                    A.ACTOR_BACK,
                    source=name,
                    summary=f"{name} is back (pid {hb.pid})",
                    detail={"pid": hb.pid, "deaths": revived.deaths},
                )
                self.desk.raise_alert(
                    "actor_back", "info", f"{name} is back (pid {hb.pid})", actor=name, pid=str(hb.pid)
                )
            else:
                logger.info("monitor: {} reporting (pid {})", name, hb.pid)
                self.prune()
                if name in self._never_seen_alerted:
                    self.desk.raise_alert("actor_back", "info", f"{name} is reporting now (pid {hb.pid})", actor=name)
            return True
        if restarted:
            self.desk.audit(
                A.ACTOR_BACK,
                source=name,
                summary=f"{name} restarted (pid {old_pid} -> {hb.pid})",
                detail={"old_pid": old_pid, "pid": hb.pid},
            )
            self.desk.raise_alert(
                "actor_restarted",
                "warning",
                f"{name} restarted (pid {old_pid} -> {hb.pid})",
                actor=name,
                pid=str(hb.pid),
            )
            return True
        return False

    def goodbye(self, name: str, env: Any, hb: Heartbeat) -> None:
        """A clean exit: shown as LEFT, audited, no alert (an expected actor that left still counts as down)."""
        peer = self.tracker.peers.get(name)
        if peer is not None and peer.left and peer.incarnation == env.incarnation:
            return  # the same goodbye again
        self.tracker.leave(name, pid=hb.pid, incarnation=env.incarnation, detail=hb.detail)
        expected = name in self.expected
        logger.info(
            "monitor: {} left (pid {}, stopped cleanly){}",
            name,
            hb.pid,
            ": expected, now not running" if expected else "",
        )
        self.desk.audit(
            A.ACTOR_LEFT,
            source=name,
            summary=f"{name} stopped cleanly (pid {hb.pid})",
            detail={"pid": hb.pid, "expected": expected},
        )
        self.prune()

    def prune(self) -> None:
        """Keep the tracker within what a status reply can show: forget the peers not expected that went away
        longest ago (left or dead first)."""
        extra = len(self.tracker.peers) - MAX_ACTORS
        if extra <= 0:
            return
        others = [p for n, p in self.tracker.peers.items() if n not in self.expected]
        others.sort(key=lambda p: (p.alive, p.last_beat))
        for peer in others[:extra]:
            self.tracker.forget(peer.name)
            self.rss.pop(peer.name, None)

    def sweep(self, now: float, started_mono: float) -> None:
        """Declare dead who missed their beats, alert never-seen actors, refresh the gauges."""
        for peer in self.tracker.sweep():
            self.desk.count("deaths")
            self.metrics.deaths.labels(actor=peer.name).inc()
            self.desk.audit(
                A.ACTOR_DEAD,
                source=peer.name,
                summary=f"{peer.name} missed {self.tracker.liveness} heartbeats (pid {peer.pid})",
                detail={"pid": peer.pid, "deaths": peer.deaths},
            )
            self.desk.raise_alert(
                "actor_dead",
                "critical",
                f"{peer.name} is not responding (pid {peer.pid}, no heartbeat "
                f"for {self.tracker.age(peer.name) or 0:.1f}s)",
                actor=peer.name,
                pid=str(peer.pid),
            )
        if now - started_mono > STARTUP_GRACE_S:
            for name in self.expected:
                if name not in self.tracker.peers and name not in self._never_seen_alerted:
                    self._never_seen_alerted.add(name)
                    self.desk.audit(A.ACTOR_DEAD, source=name, summary=f"{name} never reported")
                    self.desk.raise_alert(
                        "actor_missing",
                        "critical",
                        f"{name} has not reported since the monitor started {STARTUP_GRACE_S:.0f}s ago",
                        actor=name,
                    )

    def refresh_gauges(self) -> None:
        """Per-actor up and heartbeat-age gauges (after the sweep, so a death shows at once)."""
        for name in self.names():
            seen = self.tracker.peers.get(name)
            self.metrics.actor_up.labels(actor=name).set(1 if seen is not None and seen.alive else 0)
            self.metrics.deaths.labels(actor=name)  # a zero series from the start (dashboards, increase())
            if seen is not None:
                self.metrics.heartbeat_age.labels(actor=name).set(self.tracker.age(name) or 0.0)

    def refresh_rss(self) -> None:
        for name, peer in list(self.tracker.peers.items()):
            rss = process_rss(peer.pid) if peer.alive else None
            if rss is None:
                self.rss.pop(name, None)
                continue
            self.rss[name] = rss
            self.metrics.rss.labels(actor=name).set(rss)
