"""Heartbeats (Paranoid Pirate, ported to pub/sub): every process publishes ``hb.<name>`` every interval, and
:class:`LivenessTracker` declares a peer dead after ``liveness`` missed beats, alive again on its next beat.

A process that stops cleanly says goodbye: a last beat in state :data:`~bus.messages.LEFT_STATE`. The tracker then
marks it *left* (:meth:`LivenessTracker.leave`): not alive, and never declared dead for the beats it no longer
sends. Only a peer that goes silent without a goodbye is dead."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Defaults (config: bus.heartbeat_interval_s, bus.heartbeat_liveness).
HEARTBEAT_INTERVAL_S = 0.5
HEARTBEAT_LIVENESS = 3
#: How long a process that stops cleanly gives its goodbye (the LEFT beat) to leave for the proxy when it closes
#: its publisher (without it, the monitor sees a death: the safe side).
GOODBYE_LINGER_MS = 500


@dataclass
class PeerLiveness:
    name: str
    interval_s: float
    last_beat: float
    alive: bool = True
    state: str = ""
    pid: int = 0
    incarnation: int = 0
    beats: int = 0
    deaths: int = 0
    #: it said goodbye (a clean exit): not alive, not dead
    left: bool = False
    detail: dict[str, str] = field(default_factory=dict)


class LivenessTracker:
    """Tracks peers from their heartbeats. ``beat()`` on every heartbeat, ``sweep()`` periodically.

    A peer is dead when no beat arrived for ``liveness * its own interval``. Both return the peers whose
    alive/dead state changed, so the caller can raise an alert exactly once per transition.
    """

    def __init__(self, liveness: int = HEARTBEAT_LIVENESS, clock: Callable[[], float] = time.monotonic) -> None:
        self.liveness = liveness
        self.clock = clock
        self.peers: dict[str, PeerLiveness] = {}

    def beat(
        self,
        name: str,
        *,
        interval_s: float,
        state: str = "",
        pid: int = 0,
        incarnation: int = 0,
        detail: dict[str, str] | None = None,
    ) -> PeerLiveness | None:
        """Record a beat; returns the peer if it just came (back) to life."""
        if not (math.isfinite(interval_s) and interval_s > 0):
            interval_s = HEARTBEAT_INTERVAL_S  # a NaN/0 interval would make the peer immortal (never > NaN * n)
        now = self.clock()
        peer = self.peers.get(name)
        revived = None
        if peer is None:
            peer = self.peers[name] = PeerLiveness(name=name, interval_s=interval_s, last_beat=now)
            revived = peer
        elif not peer.alive:
            peer.alive = True
            peer.left = False
            revived = peer
        peer.last_beat = now
        peer.interval_s = interval_s
        peer.state = state
        peer.pid = pid
        peer.incarnation = incarnation
        peer.beats += 1
        if detail is not None:
            peer.detail = dict(detail)
        return revived

    def leave(
        self, name: str, *, pid: int = 0, incarnation: int = 0, detail: dict[str, str] | None = None
    ) -> PeerLiveness:
        """A goodbye: the peer stopped cleanly. Returns it (created if it was never seen)."""
        now = self.clock()
        peer = self.peers.get(name)
        if peer is None:
            peer = self.peers[name] = PeerLiveness(name=name, interval_s=HEARTBEAT_INTERVAL_S, last_beat=now)
        peer.alive = False
        peer.left = True
        peer.last_beat = now
        peer.pid = pid
        peer.incarnation = incarnation
        if detail is not None:
            peer.detail = dict(detail)
        return peer

    def forget(self, name: str) -> None:
        self.peers.pop(name, None)

    def sweep(self) -> list[PeerLiveness]:
        """Mark peers dead that missed ``liveness`` beats; returns the newly dead."""
        now = self.clock()
        died = []
        for peer in self.peers.values():
            if peer.alive and now - peer.last_beat > peer.interval_s * self.liveness:
                peer.alive = False
                peer.deaths += 1
                died.append(peer)
        return died

    def age(self, name: str) -> float | None:
        peer = self.peers.get(name)
        return None if peer is None else self.clock() - peer.last_beat

    def is_alive(self, name: str) -> bool:
        peer = self.peers.get(name)
        return bool(peer and peer.alive)
