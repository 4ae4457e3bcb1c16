"""An actor's lifecycle: its states and their transition table, the exit codes supervisord acts on, and the error
budget that faults an actor whose state is no longer trustworthy (after NautilusTrader's live engines: more than
:data:`MAX_ERRORS` unexpected errors within :data:`ERROR_WINDOW_S`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from enum import StrEnum
from typing import Any

MAX_ERRORS = 20
ERROR_WINDOW_S = 60.0
#: Exit codes: 0 clean stop, 70 (EX_SOFTWARE) faulted -> supervisord restarts, 78 (EX_CONFIG) -> FATAL.
EXIT_OK = 0
EXIT_FAULTED = 70
#: Upper bound for a graceful stop (supervisord's stopwaitsecs is set above this).
STOP_TIMEOUT_S = 1.0


class ActorState(StrEnum):
    """Where an actor is in its life (see :data:`LIFECYCLE` for the moves allowed between them)."""

    CREATED = "CREATED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAULTED = "FAULTED"


#: The lifecycle as an explicit transition table: anything else is a bug and raises.
LIFECYCLE: dict[ActorState, frozenset[ActorState]] = {
    ActorState.CREATED: frozenset({ActorState.STARTING, ActorState.STOPPED}),
    ActorState.STARTING: frozenset({ActorState.RUNNING, ActorState.STOPPING, ActorState.FAULTED}),
    ActorState.RUNNING: frozenset({ActorState.STOPPING, ActorState.FAULTED}),
    ActorState.STOPPING: frozenset({ActorState.STOPPED, ActorState.FAULTED}),
    ActorState.FAULTED: frozenset({ActorState.STOPPING, ActorState.STOPPED}),
    ActorState.STOPPED: frozenset(),
}


class ErrorBudget:
    """The times of the unexpected errors within the last ``window_s`` seconds; more than ``limit`` of them means the
    actor's state is not trustworthy (it faults and exits so supervisord restarts it from its durable state)."""

    def __init__(self, limit: int = MAX_ERRORS, window_s: float = ERROR_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._times: deque[float] = deque()

    def record(self, now: float) -> int:
        """Count one error at monotonic time ``now``; returns how many fall within the window."""
        self._times.append(now)
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        return len(self._times)

    def exceeded(self) -> bool:
        return len(self._times) > self.limit


class StoppedWhileStarting(Exception):
    """stop() arrived before the actor was RUNNING."""


async def unless_stopped(step: Awaitable[Any], stop: asyncio.Event) -> Any:
    """Await one start-up step unless ``stop`` is set first (the step is then cancelled and
    :class:`StoppedWhileStarting` raised)."""
    task = asyncio.ensure_future(step)
    stop_wait = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_wait.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise StoppedWhileStarting
    return task.result()
