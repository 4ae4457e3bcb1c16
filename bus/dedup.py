"""A service's de-duplication state: the calls running by (sender, request id), and the replies it remembers.

A retried request that is still running joins the running one; one that already finished gets the remembered
reply (see :mod:`bus.reqrep`). Both are bounded by bytes, and the bytes counted are everything an entry holds:
its key (the caller's ``sender`` and ``request_id`` are the caller's choice, and an unbounded ``sender`` once
pinned 300 MB here), its reply, and a fixed allowance for the Python objects around them. A reply is remembered
only as long as a retry of it can come: until its caller's deadline has passed (plus the clock allowance), at
least :data:`DEDUP_MIN_TTL_S`, at most :data:`DEDUP_TTL_S` (requests without a deadline).
"""

from __future__ import annotations

import time
from collections import OrderedDict

#: How many finished replies a service remembers at most, and for how long without a caller's deadline.
DEDUP_CAPACITY = 50_000
DEDUP_TTL_S = 600.0
#: A reply is remembered at least this long (a retry a little after the caller's own deadline still de-duplicates).
DEDUP_MIN_TTL_S = 5.0
#: Byte budget of the remembered replies, keys and allowance included: a flood of requests costs at most this.
DEDUP_MAX_BYTES = 4 * 1024 * 1024
#: What one entry costs beyond its strings (key tuple, value tuple, bytes and str headers, the ordered dict's node):
#: measured with sys.getsizeof on CPython 3.11, rounded up.
ENTRY_OVERHEAD_BYTES = 400
#: Clock allowance on the caller's deadline (as bus.reqrep.DEADLINE_ALLOWANCE_S).
DEADLINE_ALLOWANCE_S = 0.25

Key = tuple[str, str]


def entry_bytes(key: Key, reply: bytes = b"") -> int:
    """What remembering ``reply`` under ``key`` costs."""
    return len(key[0]) + len(key[1]) + len(reply) + ENTRY_OVERHEAD_BYTES


class ReplyCache:
    """Finished replies by key (bounded by count, bytes and age, oldest out first) and running calls by key (the
    routing ids waiting for each; bounded by the service's in-flight limits, their key bytes are counted too)."""

    def __init__(
        self,
        capacity: int = DEDUP_CAPACITY,
        ttl_s: float = DEDUP_TTL_S,
        max_bytes: int = DEDUP_MAX_BYTES,
        min_ttl_s: float = DEDUP_MIN_TTL_S,
    ) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.min_ttl_s = min(min_ttl_s, ttl_s)
        self.max_bytes = max_bytes
        #: bytes of the remembered replies (``done``)
        self.bytes = 0
        #: bytes of the keys of running calls (``inflight``)
        self.inflight_bytes = 0
        self.done: OrderedDict[Key, tuple[float, bytes]] = OrderedDict()
        self.inflight: dict[Key, list[bytes]] = {}

    # -- running calls -------------------------------------------------------------------------------------------

    def start(self, key: Key, identity: bytes) -> None:
        self.inflight[key] = [identity]
        self.inflight_bytes += entry_bytes(key)

    def join(self, key: Key, identity: bytes) -> bool:
        """True when ``key`` is running (``identity`` then waits for its reply too, once)."""
        waiting = self.inflight.get(key)
        if waiting is None:
            return False
        if identity not in waiting:
            waiting.append(identity)
        return True

    def finish(self, key: Key) -> list[bytes]:
        """The routing ids waiting for ``key``'s reply (the call is no longer running)."""
        waiting = self.inflight.pop(key, None)
        if waiting is None:
            return []
        self.inflight_bytes -= entry_bytes(key)
        return waiting

    # -- finished calls ------------------------------------------------------------------------------------------

    def cached(self, key: Key) -> bytes | None:
        hit = self.done.get(key)
        if hit is None:
            return None
        if time.monotonic() > hit[0]:
            del self.done[key]
            self.bytes -= entry_bytes(key, hit[1])
            return None
        return hit[1]

    def remember(self, key: Key, reply: bytes, *, deadline_wall_ns: int = 0) -> None:
        now = time.monotonic()
        if deadline_wall_ns:
            left = (deadline_wall_ns - time.time_ns()) / 1e9 + DEADLINE_ALLOWANCE_S
            ttl = min(self.ttl_s, max(self.min_ttl_s, left))
        else:
            ttl = self.ttl_s
        old = self.done.pop(key, None)
        if old is not None:
            self.bytes -= entry_bytes(key, old[1])
        self.done[key] = (now + ttl, reply)
        self.bytes += entry_bytes(key, reply)
        self.evict(now)

    def evict(self, now: float | None = None) -> None:
        """Drop, oldest first, what expired and whatever exceeds the count or byte budget (the newest stays)."""
        now = time.monotonic() if now is None else now
        while self.done:
            first_key, (expires, first_reply) = next(iter(self.done.items()))
            if (
                now <= expires
                and len(self.done) <= self.capacity
                and (self.bytes <= self.max_bytes or len(self.done) == 1)
            ):
                break
            self.done.popitem(last=False)
            self.bytes -= entry_bytes(first_key, first_reply)
