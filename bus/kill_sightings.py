"""When an actor first saw each kill, and the kill lane's de-duplication. Every actor listens to the kill broadcast
(:data:`bus.topics.KILL`) on a subscription of its own (the kill lane: its own socket and reader, so market data and
other events queued on the main subscription never delay it) and records when it first saw each kill (broadcast or
direct request), so "has every actor seen the halt?" can be answered (and benchmarked) from the heartbeats.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

#: Heartbeat ``detail`` keys: ``kill_seen`` = ``<kill_id>@<CLOCK_MONOTONIC ns when this actor first saw it>``,
#: ``kill_sent`` = the sender's ``mono_ns`` stamp on the envelope that carried it (same clock on one host).
#: How many kill envelopes an actor remembers having delivered (far more than can be in flight at once).
DELIVERED_KILLS_KEPT = 256
KILL_SEEN_DETAIL = "kill_seen"
KILL_SENT_DETAIL = "kill_sent"


class KillSightings:
    """The latest kill an actor saw: (kill_id, seen mono_ns, sender's mono_ns), reported in its heartbeat."""

    def __init__(self) -> None:
        self.latest: tuple[str, int, int] | None = None

    def note(self, kill_id: str, sent_mono_ns: int = 0) -> None:
        """Record the first sighting of kill ``kill_id`` (CLOCK_MONOTONIC); a second path for the same kill (the
        request and the broadcast both arrive) keeps the first time."""
        if self.latest is None or self.latest[0] != kill_id:
            self.latest = (kill_id, time.monotonic_ns(), sent_mono_ns)

    def detail(self) -> dict[str, str]:
        """The heartbeat detail entries for the latest kill (none before the first)."""
        if self.latest is None:
            return {}
        kill_id, seen_ns, sent_ns = self.latest
        return {KILL_SEEN_DETAIL: f"{kill_id}@{seen_ns}", KILL_SENT_DETAIL: str(sent_ns)}


class KillDeliveries:
    """Which kill envelopes have reached the actor's ``on_event``. The kill lane and the main subscription both
    carry the kill (the main one keeps it, so a ``control.resume`` published after a kill is never delivered before
    it): each envelope (sender, incarnation, seq) is delivered once, by whichever lane had it first."""

    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[str, int, int], None] = OrderedDict()

    def first(self, env: Any) -> bool:
        """True the first time this envelope is offered, False for the other lane's copy."""
        key = (env.sender, env.incarnation, env.seq)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > DELIVERED_KILLS_KEPT:
            self._seen.popitem(last=False)
        return True
