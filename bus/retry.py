"""The caller's side of a request's time budget: per-attempt timeout, retries with backoff, the request id a retry
reuses, the wall-clock deadline stamped on every attempt, and :class:`RequestTimeout` when the budget runs out.

Both DEALER clients (:mod:`bus.async_client`, :mod:`bus.sync_client`) follow this policy; the service side
(:mod:`bus.service`) reads the stamped deadline with :data:`DEADLINE_ALLOWANCE_S` of clock slack.
"""

from __future__ import annotations

import time
import uuid

#: Default per-attempt timeout and retries (config: bus.request_timeout_s / bus.request_retries).
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_RETRIES = 2
#: Backoff between attempts: base * 2**attempt, capped. Small: the timeout already spaced the attempts.
BACKOFF_BASE_S = 0.05
BACKOFF_MAX_S = 0.5
#: Clock allowance for request deadlines (wall clocks of two hosts differ by a little even with NTP).
DEADLINE_ALLOWANCE_S = 0.25


class RequestTimeout(Exception):
    """No reply within the bound (service dead, stopped or overloaded)."""

    def __init__(self, service: str, request_type: str, attempts: int, elapsed_s: float) -> None:
        super().__init__(f"{service}: no reply to {request_type} after {attempts} attempt(s) in {elapsed_s:.2f}s")
        self.service = service
        self.request_type = request_type
        self.attempts = attempts
        self.elapsed_s = elapsed_s


def new_request_id() -> str:
    return uuid.uuid4().hex


def backoff_s(attempt: int) -> float:
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * (2**attempt))


def call_deadline_ns(timeout_s: float, attempts: int) -> int:
    """Wall-clock time after which the caller has given up (every attempt and backoff included)."""
    bound = timeout_s * attempts + sum(backoff_s(a) for a in range(attempts - 1))
    return time.time_ns() + int(bound * 1e9)
