"""A bus subscription inside a benchmark process: the operator's key (the bus is authenticated), a reader task that
hands every event to :meth:`BusWatch.on_event`, and a clean close. The kill section watches heartbeats with it
(:class:`bench.kill_switch.HeartbeatWatch`), the hops section an order's events (:class:`bench.order_hops.BusTap`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.harness import System


class BusWatch:
    """Subscribes ``topics`` through the proxy with the operator's key; every event goes to :meth:`on_event`."""

    def __init__(self, system: System, topics: list[str], name: str) -> None:
        self.system = system
        self.topics = topics
        self.name = name
        self._task: asyncio.Task[None] | None = None
        self._ctx: Any = None
        self._sub: Any = None
        self._pub: Any = None

    def on_event(self, topic: str, env: Any) -> None:
        """One event (override)."""

    async def start(self) -> None:
        import zmq.asyncio

        from bus.codec import Stamper
        from bus.pubsub import Publisher, Subscriber
        from tests.support.clients import security, server_key

        bus = self.system.cfg.bus
        sec = security(self.system.cfg)
        key = server_key(sec, "proxy")
        self._ctx = zmq.asyncio.Context()
        self._pub = Publisher(self._ctx, bus.proxy_frontend, Stamper(self.name), security=sec, server_key=key)
        await self._pub.wait_ready(bus.proxy_backend)
        self._sub = Subscriber(self._ctx, bus.proxy_backend, self.topics, name=self.name, security=sec,
                               server_key=key)
        await self._sub.wait_ready(self._pub)

        async def read() -> None:
            while True:
                topic, env = await self._sub.recv()
                self.on_event(topic, env)

        self._task = asyncio.create_task(read())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for part in (self._sub, self._pub):
            if part is not None:
                part.close()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
