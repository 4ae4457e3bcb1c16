"""The one wait helper: :func:`eventually` (and :func:`eventually_async` for coroutines), plus a bounded
``asyncio.run`` for async test bodies.

Tests wait on conditions with a bound, never sleep a fixed time and hope: a passing wait returns at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: Default bound for eventually(): generous for a loaded 2-core CI machine; a passing wait returns at once.
EVENTUALLY_TIMEOUT_S = 10.0
#: Longest poll interval (so a slow condition does not burn the CPU the system under test needs).
MAX_INTERVAL_S = 0.05
#: Bound for a whole async test body run with :func:`run_bounded` (each wait inside is bounded more tightly).
ASYNC_BODY_TIMEOUT_S = 30.0


def _message(message: str | Callable[[], str]) -> str:
    return message() if callable(message) else message


def eventually(predicate: Callable[[], T], timeout: float = EVENTUALLY_TIMEOUT_S, interval: float = 0.005,
               message: str | Callable[[], str] = "condition not met") -> T:
    """Wait until ``predicate()`` returns something truthy, and return it; fail the test after ``timeout``.

    This polls a condition with a bounded wait; it never sleeps a fixed time and hopes. The interval doubles up
    to :data:`MAX_INTERVAL_S`.
    """
    deadline = time.monotonic() + timeout
    wait = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"eventually(): {_message(message)} within {timeout:.1f}s")
        wait.wait(interval)
        interval = min(interval * 2, MAX_INTERVAL_S)


async def eventually_async(predicate: Callable[[], T], timeout: float = EVENTUALLY_TIMEOUT_S,
                           message: str | Callable[[], str] = "condition not met") -> T:
    """:func:`eventually` inside a coroutine: yields to the event loop between polls (so the client under test
    keeps reading) and fails after ``timeout``."""

    async def poll() -> T:
        while True:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(0.005)  # polling a condition inside a bounded wait_for, not a fixed delay

    try:
        return await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"eventually_async(): {_message(message)} within {timeout:.1f}s") from None


def run_bounded(coro: Coroutine[Any, Any, T], timeout: float = ASYNC_BODY_TIMEOUT_S) -> T:
    """``asyncio.run`` of an async test body, bounded as a whole."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
