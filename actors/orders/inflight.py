"""What the order manager is doing to which order right now: placements in flight and per-order locks.

A placement runs as one task per orderRef (a duplicate request joins it instead of starting another); a cancel or
a modification holds the order's lock while it talks to the gateway. Reconciliation and housekeeping leave busy
orders alone: the snapshot may predate what the request is doing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Container, Coroutine
from typing import Any

from bus.messages import OrderView


class InFlight:
    """Placement tasks and per-order locks by orderRef (one owner: the actor's loop)."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[OrderView]] = {}
        #: an order group's placement, under each member's orderRef (a cancel of a member waits for it)
        self._group_tasks: dict[str, asyncio.Task[Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def __len__(self) -> int:
        """The number of placements in flight."""
        return len(self._tasks)

    def start(self, order_ref: str, steps: Coroutine[Any, Any, OrderView]) -> asyncio.Task[OrderView]:
        """Run ``steps`` as the placement of ``order_ref``; it leaves the registry when it finishes."""
        task = asyncio.create_task(steps, name=f"orders.place.{order_ref}")
        self._tasks[order_ref] = task
        task.add_done_callback(functools.partial(self._finished, order_ref))
        return task

    def _finished(self, order_ref: str, task: asyncio.Task[OrderView]) -> None:
        if self._tasks.get(order_ref) is task:  # a later placement of the same order may have replaced it
            del self._tasks[order_ref]

    def register_group(self, order_refs: list[str], task: asyncio.Task[Any]) -> None:
        """``task`` is the placement of an order group whose members are ``order_refs``."""
        for ref in order_refs:
            self._group_tasks[ref] = task
        task.add_done_callback(functools.partial(self._group_finished, tuple(order_refs)))

    def _group_finished(self, order_refs: tuple[str, ...], task: asyncio.Task[Any]) -> None:
        for ref in order_refs:
            if self._group_tasks.get(ref) is task:
                del self._group_tasks[ref]

    def group_placement(self, order_ref: str) -> asyncio.Task[Any] | None:
        """The placement of the group ``order_ref`` belongs to, if one is in flight."""
        return self._group_tasks.get(order_ref)

    def placement(self, order_ref: str) -> asyncio.Task[OrderView] | None:
        """The placement of ``order_ref`` in flight, if any."""
        return self._tasks.get(order_ref)

    def lock(self, order_ref: str) -> asyncio.Lock:
        """The lock a cancel or modification of ``order_ref`` holds while it talks to the gateway."""
        lock = self._locks.get(order_ref)
        if lock is None:
            lock = self._locks[order_ref] = asyncio.Lock()
        return lock

    def busy(self) -> set[str]:
        """Every orderRef a request is working on (placing, cancelling or modifying)."""
        locked = {ref for ref, lock in self._locks.items() if lock.locked()}
        return set(self._tasks) | set(self._group_tasks) | locked

    def forget_idle_locks(self, known: Container[str]) -> None:
        """Drop the locks of orders nobody holds and that left memory (housekeeping)."""
        for ref in [r for r, lock in self._locks.items() if not lock.locked() and r not in known]:
            del self._locks[ref]
