"""An actor's clients to other actors' services: one :class:`~bus.async_client.AsyncClient` per (service, timeout,
retries), created on first use from the bus config and closed with the actor."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import zmq.asyncio

from bus.async_client import AsyncClient
from bus.codec import Stamper
from bus.config import BusConfig

if TYPE_CHECKING:
    from bus.security import Security


class ServiceClients:
    """The cached clients one actor holds to other services, by bus endpoint name. ``server_key`` gives a service's
    CURVE public key (None without CURVE); it is read only when a client is first made."""

    def __init__(self, bus: BusConfig, stamper: Stamper, server_key: Callable[[str], bytes | None]) -> None:
        self.bus = bus
        self.stamper = stamper
        self._server_key = server_key
        self._clients: dict[str, AsyncClient] = {}

    def get(
        self,
        ctx: zmq.asyncio.Context | None,
        security: Security | None,
        service: str,
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
    ) -> AsyncClient:
        """The client for ``service`` with these settings (None: the bus config's defaults), made on first use."""
        key = f"{service}:{timeout_s}:{retries}"
        cl = self._clients.get(key)
        if cl is None:
            assert ctx is not None
            cl = AsyncClient(
                ctx,
                self.bus.service_endpoint(service),
                service=service,
                stamper=self.stamper,
                timeout_s=self.bus.request_timeout_s if timeout_s is None else timeout_s,
                retries=self.bus.request_retries if retries is None else retries,
                security=security,
                server_key=self._server_key(service),
            )
            self._clients[key] = cl
        return cl

    def close(self) -> None:
        for cl in self._clients.values():
            cl.close()
