"""When an actor first saw each kill. Every actor with a subscription also listens to the kill broadcast
(:data:`bus.topics.KILL`) and records when it first saw each kill (broadcast or direct request), so "has every actor
seen the halt?" can be answered (and benchmarked) from the heartbeats.
"""

from __future__ import annotations

import time

#: Heartbeat ``detail`` keys: ``kill_seen`` = ``<kill_id>@<CLOCK_MONOTONIC ns when this actor first saw it>``,
#: ``kill_sent`` = the sender's ``mono_ns`` stamp on the envelope that carried it (same clock on one host).
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
