"""The one event recorder: everything published on some topic prefixes, recorded from a background thread of the
test; tests wait on it with timeouts (woken by each new event)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import zmq

from bus.codec import Stamper
from bus.config import KhazadConfig
from bus.messages import Heartbeat, OrderStatusEvent
from tests.support.clients import publisher, sync_subscriber

T = TypeVar("T")

#: Default bound of :meth:`EventRecorder.wait_for`.
WAIT_TIMEOUT_S = 15.0
#: The recorder thread's receive timer (lets it notice close()).
POLL_S = 0.05


class EventRecorder:
    """Records ``(topic, sender, body, mono_ns)`` of every event on ``topics`` (prefixes; ``mono_ns`` is the
    publisher's CLOCK_MONOTONIC stamp). The subscription is ready (handshake through the proxy) when the
    constructor returns, so nothing published afterwards is missed."""

    def __init__(self, ctx: zmq.Context, cfg: KhazadConfig, topics: list[str], *, name: str = "test-recorder") -> None:
        self.sub = sync_subscriber(ctx, cfg, topics, name=name)  # the operator's key: it may read everything
        probe = publisher(ctx, cfg, Stamper(f"{name}-probe"))
        try:
            probe.wait_ready_sync(cfg.bus.proxy_backend)
            self.sub.wait_ready(probe)
        finally:
            probe.close()
        self.events: list[tuple[str, str, Any, int]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self.sub.recv(POLL_S)
            if item is None:
                continue
            topic, env = item
            with self._cond:
                self.events.append((topic, env.sender, env.body, env.mono_ns))
                self._cond.notify_all()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sub.close()

    def bodies(self, prefix: str = "", kind: type[T] | None = None, *, sender: str | None = None) -> list[T]:
        """Bodies on topics starting with ``prefix`` (of type ``kind``, from ``sender``), in arrival order."""
        with self._cond:
            return [b for t, s, b, _ in self.events if t.startswith(prefix) and (kind is None or isinstance(b, kind))
                    and (sender is None or s == sender)]

    def senders(self, prefix: str = "", kind: type | None = None) -> list[str]:
        """Who published each of :meth:`bodies`."""
        with self._cond:
            return [s for t, s, b, _ in self.events if t.startswith(prefix) and (kind is None or isinstance(b, kind))]

    def wait_for(self, predicate: Callable[[EventRecorder], T], timeout: float = WAIT_TIMEOUT_S,
                 what: str = "events") -> T:
        """Block until ``predicate(self)`` is truthy (woken by every new event); fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(self)
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last events: "
                                         f"{[(t, type(b).__name__) for t, _, b, _ in self.events[-15:]]}")
                self._cond.wait(left)

    # -- heartbeats ------------------------------------------------------------------------------------------

    def heartbeat_detail(self, actor: str, predicate: Callable[[dict[str, str]], bool],
                         timeout: float = WAIT_TIMEOUT_S) -> dict[str, str]:
        """The detail of the first heartbeat of ``actor`` for which ``predicate(detail)`` holds."""
        def find(rec: EventRecorder) -> dict[str, str] | None:
            return next((b.detail for b in rec.bodies(kind=Heartbeat) if b.actor == actor and predicate(b.detail)),
                        None)
        return self.wait_for(find, timeout, what=f"a heartbeat of {actor} with the expected detail")

    def mark(self) -> int:
        """A position in the recording: :meth:`since` gives what arrived after it."""
        with self._cond:
            return len(self.events)

    def since(self, mark: int, prefix: str = "", kind: type[T] | None = None) -> list[tuple[str, T]]:
        """(sender, body) of the events on ``prefix`` (of type ``kind``) that arrived after ``mark``."""
        with self._cond:
            return [(s, b) for t, s, b, _ in self.events[mark:] if t.startswith(prefix)
                    and (kind is None or isinstance(b, kind))]

    def flush(self, *actors: str, timeout: float = WAIT_TIMEOUT_S) -> None:
        """Wait until everything ``actors`` published before this call has arrived: for each, a heartbeat stamped
        after the call (one publisher's messages arrive in the order it sent them). Record their ``hb.`` topics."""
        now = time.monotonic_ns()

        def beaten(rec: EventRecorder) -> bool:
            fresh = {b.actor for _, _, b, mono in rec.events if isinstance(b, Heartbeat) and mono > now}
            return set(actors) <= fresh
        self.wait_for(beaten, timeout, what=f"heartbeats of {', '.join(actors)} sent after the flush")

    # -- order statuses --------------------------------------------------------------------------------------

    def statuses(self, order_ref: str) -> list[OrderStatusEvent]:
        with self._cond:
            return [b for _, _, b, _ in self.events if isinstance(b, OrderStatusEvent) and b.order_ref == order_ref]

    def status_names(self, order_ref: str) -> list[str]:
        return [e.status for e in self.statuses(order_ref)]

    def wait_status(self, order_ref: str, status: str, timeout: float = WAIT_TIMEOUT_S) -> OrderStatusEvent:
        def find(rec: EventRecorder) -> OrderStatusEvent | None:
            return next((e for e in rec.statuses(order_ref) if e.status == status), None)
        return self.wait_for(find, timeout, what=f"{order_ref} {status} (saw {self.status_names(order_ref)})")
