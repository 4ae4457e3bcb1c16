"""Simulated time: a clock and a scheduler of timed callbacks.

Two modes share one interface:

* ``manual``: time stands still until someone calls ``advance(seconds)``;
  every callback due in that span runs in (time, insertion) order with the
  clock set to its due time.  Tests use this: no wall-clock waits, and the
  same inputs give the same outputs.
* ``realtime``: the clock follows the wall clock from ``start`` (by default
  now) at ``speed`` times its pace (``--replay-speed``), and a background
  task runs callbacks when they fall due.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from loguru import logger

#: Default start of the manual clock: Monday 2025-06-02 10:00 New York, so
#: ``exchange`` market hours are open unless a test moves the clock.
DEFAULT_MANUAL_START = "2025-06-02T14:00:00+00:00"
#: Callbacks the realtime driver runs before it lets other tasks in.
MAX_CALLBACKS_PER_RUN = 200
#: Upper bound on callbacks one advance() may run, to stop runaway loops.
MAX_CALLBACKS_PER_ADVANCE = 50_000_000


def parse_start(text: str) -> float:
    """ISO-8601 text to epoch seconds (naive text is UTC)."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


class SimClock:
    """The simulator's notion of now, as epoch seconds."""

    def __init__(self, mode: str = "manual", start: float | None = None,
                 speed: float = 1.0) -> None:
        if mode not in ("manual", "realtime"):
            raise ValueError(f"clock must be 'manual' or 'realtime', not {mode!r}")
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.mode = mode
        self.speed = speed
        self._wall0 = time.time()
        if start is None:
            start = self._wall0 if mode == "realtime" else parse_start(DEFAULT_MANUAL_START)
        self._now = start

    @property
    def manual(self) -> bool:
        return self.mode == "manual"

    def now(self) -> float:
        if self.manual:
            return self._now
        return self._now + (time.time() - self._wall0) * self.speed

    def set(self, ts: float) -> None:
        """Manual mode only: jump to ``ts`` (never backwards)."""
        if not self.manual:
            raise RuntimeError("the realtime clock cannot be set")
        if ts > self._now:
            self._now = ts

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now(), timezone.utc)


@dataclass(order=True)
class Timer:
    """A scheduled callback; cancel() makes it a no-op."""

    when: float
    seq: int
    callback: Callable[..., Any] = field(compare=False)
    args: tuple = field(compare=False, default=())
    cancelled: bool = field(compare=False, default=False)

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """Timed callbacks on simulated time (see module docstring)."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self._heap: list[Timer] = []
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Timer:
        timer = Timer(when, next(self._seq), callback, args)
        heapq.heappush(self._heap, timer)
        if self._wake is not None and self._heap[0] is timer:
            self._wake.set()
        return timer

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        return self.call_at(self.clock.now() + max(0.0, delay), callback, *args)

    def pending(self) -> int:
        return sum(1 for t in self._heap if not t.cancelled)

    def clear(self) -> None:
        for t in self._heap:
            t.cancel()
        self._heap.clear()

    def _run(self, timer: Timer) -> None:
        try:
            timer.callback(*timer.args)
        except Exception:
            logger.exception("sim timer callback {} failed", getattr(timer.callback, "__name__", timer.callback))

    def run_due(self, limit: int | None = None) -> int:
        """Run the callbacks due now (at most ``limit``); returns how many ran."""
        now = self.clock.now()
        ran = 0
        while self._heap and self._heap[0].when <= now and (limit is None or ran < limit):
            timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                self._run(timer)
                ran += 1
        return ran

    def advance(self, seconds: float) -> int:
        """Manual clock: move forward ``seconds``, running what falls due."""
        if not self.clock.manual:
            raise RuntimeError("advance() needs the manual clock")
        if seconds < 0:
            raise ValueError("cannot advance by a negative amount")
        target = self.clock.now() + seconds
        ran = 0
        while self._heap and self._heap[0].when <= target:
            timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            self.clock.set(timer.when)
            self._run(timer)
            ran += 1
            if ran > MAX_CALLBACKS_PER_ADVANCE:
                raise RuntimeError("advance() ran too many callbacks")
        self.clock.set(target)
        return ran

    # -- realtime driver ---------------------------------------------------

    def start(self) -> None:
        """Realtime clock: start the task that fires due callbacks."""
        if self.clock.manual or self._task is not None:
            return
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._drive(), name="sim-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._wake = None

    async def _drive(self) -> None:
        assert self._wake is not None
        while True:
            # bounded: a clock running faster than the work (a fast replay) must not
            # starve socket I/O or a stop request
            self.run_due(MAX_CALLBACKS_PER_RUN)
            while self._heap and self._heap[0].cancelled:
                heapq.heappop(self._heap)
            self._wake.clear()
            if self._heap:
                delay = self._heap[0].when - self.clock.now()
                if delay <= 0:
                    # Yield so socket I/O keeps flowing under a heavy timer load.
                    await asyncio.sleep(0)
                    continue
                try:
                    await asyncio.wait_for(self._wake.wait(), delay / self.clock.speed)
                except asyncio.TimeoutError:
                    pass
            else:
                await self._wake.wait()
